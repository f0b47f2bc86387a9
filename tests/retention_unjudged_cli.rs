//! Through the real binary: a check that could not judge a snapshot must not get it deleted.
//!
//! The audit's reproduction (issue 6): a plain snapshot, then an encrypted one, `check
//! --read-data` without the identity file (it cannot read the encrypted data), then `forget
//! --keep-last 1 --prune`. The encrypted snapshot is the newest and intact; it must survive,
//! and the plain one (not selected by the rules) is the one that goes.

mod backup_support;

use std::path::Path;
use std::process::Output;

use backup_support::*;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_read_without_the_key_never_gets_an_encrypted_snapshot_pruned() {
    let apps = test_apps("unjudged", 1, 1);
    let emu = start(emulator_config(&apps, 1, 20)).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &emu.base_url(), &apps, 1);
    let root = dir.path().join("snapshots");

    let out = run(&config, &["backup"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    // The second backup is encrypted (recipients only: this machine has no identity).
    let identity = age::x25519::Identity::generate();
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "\n[encryption]\nrecipients = [\"{}\"]\n",
        identity.to_public()
    ));
    std::fs::write(&config, &text).unwrap();
    let out = run(&config, &["backup"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let all = manifests(&root);
    assert_eq!(all.len(), 2, "{all:?}");
    let (enc_manifest, enc) = all
        .iter()
        .find(|(_, m)| m.encryption.is_some())
        .cloned()
        .expect("an encrypted snapshot");
    let (plain_manifest, plain) = all
        .iter()
        .find(|(_, m)| m.encryption.is_none())
        .cloned()
        .expect("a plain snapshot");
    assert!(enc.finished_at > plain.finished_at);

    // The data of the encrypted snapshot cannot be read here: the check says so, as a check
    // that could not judge, not as a failed snapshot.
    let out = run(&config, &["check", "--read-data"]).await;
    assert_ne!(out.status.code(), Some(0), "{}", describe(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("COULD NOT CHECK"), "{}", describe(&out));
    assert!(!stdout.contains("FAILED"), "{}", describe(&out));
    let enc_row = stdout
        .lines()
        .find(|l| l.contains(&enc.export_job_id.to_string()))
        .expect("a row for the encrypted snapshot");
    assert!(enc_row.contains("not read"), "{}", describe(&out));

    let out = run(&config, &["forget", "--keep-last", "1", "--prune"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let enc_data = enc.data_path(&enc_manifest);
    assert!(enc_manifest.exists(), "{}", describe(&out));
    assert!(enc_data.exists(), "{}", describe(&out));
    assert!(!plain_manifest.exists(), "{}", describe(&out));
    assert!(!plain.data_path(&plain_manifest).exists());
    let out = run(&config, &["--json", "snapshots"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        listed.contains(&enc.export_job_id.to_string()),
        "{}",
        describe(&out)
    );
    // And what is left still verifies.
    let out = run(&config, &["check"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
}
