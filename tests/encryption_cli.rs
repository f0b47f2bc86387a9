//! Encryption at rest through the real binary: an encrypted backup (files, manifests, no
//! plaintext anywhere in the tree) → `check` without a key → `check --read-data` without, with
//! the wrong and with the right identity → `restore` refused without a key, done with it (same
//! documents) → `check --test-restore` → `catalog rebuild` finds the `.jsonl.zst.age` files.

mod backup_support;

use std::path::{Path, PathBuf};
use std::process::Output;

use age::secrecy::ExposeSecret;
use backup_support::*;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tcb_backup::archive::encrypt::{Identities, AGE_MAGIC};
use tcb_backup::archive::SnapshotLines;

const BIN: &str = env!("CARGO_BIN_EXE_tcb-backup");

async fn run(config: &Path, args: &[&str]) -> Output {
    tokio::process::Command::new(BIN)
        .arg("--config")
        .arg(config)
        .args(args)
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .output()
        .await
        .expect("run binary")
}

fn describe(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn sorted(mut docs: Vec<Value>) -> Vec<Value> {
    docs.sort_by(|a, b| a["_id"].as_str().cmp(&b["_id"].as_str()));
    docs
}

/// Writes a fresh identity file (mode 0600) and returns its path and public key.
fn new_identity(dir: &Path, name: &str) -> (PathBuf, String) {
    let id = age::x25519::Identity::generate();
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!(
            "# created by the test\n# public key: {}\n{}\n",
            id.to_public(),
            id.to_string().expose_secret()
        ),
    )
    .unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    (path, id.to_public().to_string())
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_backup_check_and_restore_through_the_cli() {
    let apps = test_apps("crypt", 1, 1);
    let emu = start(emulator_config(&apps, 2, 60)).await;
    let env = apps[0].envs[0].clone();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &emu.base_url(), &apps, 2);
    let (identity, public) = new_identity(dir.path(), "backup-identity.txt");
    let (wrong, _) = new_identity(dir.path(), "other-identity.txt");
    // The backup machine's config: recipients only, no identity.
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!("\n[encryption]\nrecipients = [\"{public}\"]\n"));
    std::fs::write(&config, &text).unwrap();
    let root = dir.path().join("snapshots");
    let out = run(&config, &["config", "check"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("encryption:  age, to {public}")),
        "{}",
        describe(&out)
    );

    let out = run(&config, &["backup"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let manifests = manifests(&root);
    assert_eq!(manifests.len(), 2);
    assert_no_temp_files(&root);
    let ids = Identities::load(&identity).unwrap();
    for (path, m) in &manifests {
        let data = m.data_path(path);
        assert!(m.data_file.ends_with(".jsonl.zst.age"), "{}", m.data_file);
        let enc = m.encryption.as_ref().expect("manifest records encryption");
        assert_eq!(
            (enc.format.as_str(), enc.recipients.clone()),
            ("age", vec![public.clone()])
        );
        let stored = std::fs::read(&data).unwrap();
        assert!(stored.starts_with(AGE_MAGIC));
        assert_eq!(m.sha256_stored, hex::encode(Sha256::digest(&stored)));
        assert_eq!(m.bytes_stored, stored.len() as u64);
        // The content decrypts to the collection, and its raw sha256 is the manifest's.
        let lines: Vec<Vec<u8>> = SnapshotLines::open_snapshot(&data, m, Some(&ids))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let mut raw = lines.join(&b'\n');
        raw.push(b'\n');
        assert_eq!(m.sha256_raw, hex::encode(Sha256::digest(&raw)));
        let docs: Vec<Value> = lines
            .iter()
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect();
        assert_eq!(
            sorted(docs),
            sorted(emu.control().documents(&env, &m.collection).unwrap())
        );
        // No document id appears in clear anywhere in the stored file.
        let some_id = emu.control().documents(&env, &m.collection).unwrap()[0]["_id"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(!contains(&stored, some_id.as_bytes()));
    }
    // Nothing but encrypted data files and manifests in the tree.
    for f in walk(&root) {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name.ends_with(".jsonl.zst.age") || name.ends_with(".manifest.json"),
            "{name}"
        );
    }
    let (id, collection) = {
        let m = &manifests[0].1;
        (
            format!("{}/{}/{}", m.env, m.collection, m.export_job_id),
            m.collection.clone(),
        )
    };

    // The cheap check needs no key.
    let out = run(&config, &["check"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    // Reading the data does, and says so.
    let out = run(&config, &["check", "--read-data"]).await;
    assert_ne!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(describe(&out).contains("--identity"), "{}", describe(&out));
    // The wrong key, in a file others can read: refused, with a warning about the mode.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&wrong, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let wrong_arg = wrong.to_str().unwrap();
    let out = run(&config, &["check", "--read-data", "--identity", wrong_arg]).await;
    assert_ne!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        describe(&out).contains("holds none of the keys"),
        "{}",
        describe(&out)
    );
    #[cfg(unix)]
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("accessible by other users"),
        "{}",
        describe(&out)
    );
    let out = run(&config, &["restore", &id, "--identity", wrong_arg]).await;
    assert_ne!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        describe(&out).contains("holds none of the keys"),
        "{}",
        describe(&out)
    );
    let identity_arg = identity.to_str().unwrap();
    let out = run(
        &config,
        &["check", "--read-data", "--identity", identity_arg],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));

    // Restore: refused without a key, before anything is submitted.
    let out = run(&config, &["restore", &id]).await;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        describe(&out).contains("is encrypted"),
        "{}",
        describe(&out)
    );
    let out = run(
        &config,
        &["restore", &id, "--identity", identity_arg, "--dry-run"],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("decrypt: age"),
        "{}",
        describe(&out)
    );
    // The restore machine's config names the identity file.
    text.push_str(&format!("identity_file = \"{}\"\n", identity.display()));
    std::fs::write(&config, &text).unwrap();
    let out = run(
        &config,
        &["restore", &id, "--to-collection", "restored_plain"],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(
        sorted(emu.control().documents(&env, "restored_plain").unwrap()),
        sorted(emu.control().documents(&env, &collection).unwrap())
    );
    // No plaintext was left anywhere under the working directory by the restore.
    for f in walk(dir.path()) {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            !name.ends_with(".jsonl") && !name.ends_with(".json.tmp"),
            "{name}"
        );
    }
    emu.control()
        .drop_collection(&env, "restored_plain")
        .unwrap();

    let out = run(
        &config,
        &["check", "--read-data", "--test-restore", "--sample", "5"],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("test restore of"));

    // The catalog can be rebuilt from the encrypted tree alone.
    let out = run(&config, &["--json", "catalog", "rebuild"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let rebuilt: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(rebuilt["entries"], 2, "{rebuilt}");
    let out = run(&config, &["--json", "snapshots"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(listed.contains(&id), "{listed}");

    // The secret key is nowhere but in its own file: not in the state store (restore jobs keep
    // the identity file's path only), the snapshots, or the config.
    let key_text = std::fs::read_to_string(&identity).unwrap();
    let secret = key_text
        .lines()
        .find(|l| l.starts_with("AGE-SECRET-KEY-1"))
        .unwrap();
    for f in walk(dir.path()) {
        if f == identity {
            continue;
        }
        let bytes = std::fs::read(&f).unwrap_or_default();
        assert!(
            !contains(&bytes, secret.as_bytes()) && !contains(&bytes, &secret.as_bytes()[16..48]),
            "the secret key leaked into {}",
            f.display()
        );
    }
    emu.shutdown().await;
}

/// A backup killed (abort, no destructors, no flush) while the encrypted file is being written
/// leaves only ciphertext behind, and the next run removes it and stores a complete snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_mid_write_leaves_no_plaintext_and_resumes() {
    let apps = test_apps("crashcrypt", 1, 1);
    let emu = start(emulator_config(&apps, 1, 6000)).await;
    let env = apps[0].envs[0].clone();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &emu.base_url(), &apps, 1);
    let (identity, public) = new_identity(dir.path(), "backup-identity.txt");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "\n[encryption]\nrecipients = [\"{public}\"]\nidentity_file = \"{}\"\n",
        identity.display()
    ));
    std::fs::write(&config, &text).unwrap();
    let root = dir.path().join("snapshots");

    let out = tokio::process::Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .arg("backup")
        .env("RUST_LOG", "warn")
        .env("TCB_BACKUP_FAULTPOINT", "download.mid_stream:10")
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    assert_ne!(out.status.code(), Some(0), "{}", describe(&out));
    let temps: Vec<PathBuf> = walk(&root)
        .into_iter()
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(".tmp-")
        })
        .collect();
    assert_eq!(temps.len(), 1, "the crash left the temp file: {temps:?}");
    let collection = emu.control().collections(&env).unwrap()[0].clone();
    let docs = emu.control().documents(&env, &collection).unwrap();
    let bytes = std::fs::read(&temps[0]).unwrap();
    // How much reached the file before the abort depends on the download's chunk sizes (the
    // writer buffers 128 KiB): whatever did is ciphertext. (The unit test
    // `no_plaintext_ever_reaches_the_disk` watches the temp file deterministically.)
    assert!(
        bytes.is_empty() || bytes.starts_with(AGE_MAGIC),
        "the temp file starts with {:?}",
        &bytes[..bytes.len().min(24)]
    );
    for d in docs.iter().take(50) {
        assert!(!contains(&bytes, d["_id"].as_str().unwrap().as_bytes()));
    }

    let out = run(&config, &["backup"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_no_temp_files(&root);
    let all = manifests(&root);
    assert_eq!(all.len(), 1);
    let (path, m) = &all[0];
    let ids = Identities::load(&identity).unwrap();
    let restored: Vec<Value> = SnapshotLines::open_snapshot(&m.data_path(path), m, Some(&ids))
        .unwrap()
        .map(|l| serde_json::from_slice(&l.unwrap()).unwrap())
        .collect();
    assert_eq!(sorted(restored), sorted(docs));
    let out = run(&config, &["check", "--read-data"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    emu.shutdown().await;
}
