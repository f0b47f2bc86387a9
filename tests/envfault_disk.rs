//! Environment faults on the filesystems: the destination's disk full (a 2 MiB tmpfs), the
//! destination remounted read-only, and the state store's disk full (under `backup` and under
//! the daemon, which must exit for its supervisor rather than go on). Each must end the
//! affected backups with a clear error, leave no partial file, and keep every earlier snapshot
//! intact, listed and verifiable.
//!
//! Mounting needs root (CAP_SYS_ADMIN). Without it the tests print why they skip and pass,
//! unless `TCB_REQUIRE_PRIVILEGED_TESTS=1` (set by CI, which runs as root): then they fail,
//! so that they cannot silently stop running.

// Shared with the workflow tests (their file); its style lints are theirs.
#[allow(clippy::field_reassign_with_default)]
mod backup_support;
mod crash_support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crash_support::{skip_or_fail, stderr, Fixture};
use rand::{Rng, SeedableRng};
use tcb_backup::archive;

/// A tmpfs mounted for the test, unmounted (lazily) on drop.
struct Mount(PathBuf);

impl Mount {
    fn tmpfs(dir: &Path, size: &str) -> Result<Mount, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs refused: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Mount(dir.to_path_buf()))
    }

    fn remount(&self, opt: &str) {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,{opt}")])
            .arg(&self.0)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "remount {opt}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Mounts a tmpfs of `size` on `dir`, or says why not: a skip, or a failure under
/// `TCB_REQUIRE_PRIVILEGED_TESTS=1` (`crash_support::skip_or_fail`).
fn mount_tmpfs(dir: &Path, size: &str) -> Option<Mount> {
    // Only root may mount.
    let uid = Command::new("id").arg("-u").output();
    let root = uid.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if !root {
        return skip_or_fail("not root, cannot mount a tmpfs");
    }
    match Mount::tmpfs(dir, size) {
        Ok(m) => Some(m),
        Err(e) => skip_or_fail(&e),
    }
}

/// Fills the filesystem of `dir` with a file until it is full (ENOSPC); returns the file.
fn fill_up(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).expect("create the filler");
    let chunk = vec![0u8; 4096];
    loop {
        match f.write_all(&chunk) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(28) => break,
            Err(e) => panic!("filling {}: {e}", dir.display()),
        }
    }
    // What did not fit stays unwritten; the file holds everything that did.
    let _ = f.sync_all();
    path
}

/// `n` more collections of 5 small documents each in the fixture's env: a run over them writes
/// enough job records to outgrow the space sled already holds.
fn add_small_collections(fx: &Fixture, n: usize) {
    let env = fx.apps[0].envs[0].clone();
    for k in 0..n {
        let docs = (0..5)
            .map(|i| serde_json::json!({ "_id": format!("d{i}"), "n": i }))
            .collect();
        fx.emu
            .control()
            .insert_documents(&env, &format!("more{k:02}"), docs)
            .expect("insert");
    }
}

/// Incompressible documents (random hex), ~`bytes` of export in total.
fn random_docs(bytes: usize) -> Vec<serde_json::Value> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let per = 500;
    (0..bytes / per)
        .map(|n| {
            let pad: String = (0..per)
                .map(|_| char::from(b"0123456789abcdef"[rng.gen_range(0..16)]))
                .collect();
            serde_json::json!({ "_id": format!("rnd-{n:07}"), "pad": pad })
        })
        .collect()
}

/// Every earlier snapshot still verifies byte for byte.
fn verify_all(before: &[(PathBuf, tcb_backup::manifest::Manifest)]) {
    for (path, m) in before {
        let data = m.data_path(path);
        archive::verify_snapshot(&data, m, true)
            .unwrap_or_else(|e| panic!("earlier snapshot {} damaged: {e}", data.display()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_keeps_earlier_snapshots() {
    let fx = Fixture::new("edf", 1, 3, 30, 0, 2).await;
    let Some(_mount) = mount_tmpfs(&fx.snapshots_dir(), "2m") else {
        return;
    };
    fx.backup_until_done(1).await;
    let before = fx.check_invariants().await;
    let env = fx.apps[0].envs[0].clone();
    fx.emu
        .control()
        .insert_documents(&env, "huge", random_docs(5 << 20))
        .expect("insert");

    let out = fx.backup(&[], Duration::from_secs(180)).await;
    let all = format!("{}{}", stderr(&out), String::from_utf8_lossy(&out.stdout));
    assert!(!out.status.success(), "a 5 MB export fit in 2 MB? {all}");
    assert_ne!(out.status.code(), Some(101), "panicked: {all}");
    assert!(
        all.contains("No space left on device"),
        "the error should say the disk is full: {all}"
    );
    verify_all(&before);
    // No partial file: only complete snapshot pairs in the destination.
    let now = backup_support::manifests(&fx.snapshots_dir());
    fx.check_no_stray_files(&now, false);
    for (p, _) in &before {
        assert!(now.iter().any(|(q, _)| q == p), "{} vanished", p.display());
    }
    fx.emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_destination_keeps_earlier_snapshots() {
    let fx = Fixture::new("ero", 1, 3, 30, 0, 2).await;
    let Some(mount) = mount_tmpfs(&fx.snapshots_dir(), "8m") else {
        return;
    };
    fx.backup_until_done(1).await;
    let before = fx.check_invariants().await;
    mount.remount("ro");
    let out = fx.backup(&[], Duration::from_secs(180)).await;
    let all = format!("{}{}", stderr(&out), String::from_utf8_lossy(&out.stdout));
    mount.remount("rw");
    assert!(!out.status.success(), "wrote to a read-only fs? {all}");
    assert_ne!(out.status.code(), Some(101), "panicked: {all}");
    assert!(
        all.contains("Read-only file system"),
        "the error should say the destination is read-only: {all}"
    );
    verify_all(&before);
    let now = backup_support::manifests(&fx.snapshots_dir());
    assert_eq!(now.len(), before.len());
    fx.check_no_stray_files(&now, false);
    fx.emu.shutdown().await;
}

/// The state store's filesystem fills up during a backup: the backup stops with the store's
/// error (`No space left on device`), every earlier snapshot stays listed and verifies, and
/// once there is room the interrupted run finishes. (Known problem 7: the engine's runner used
/// to re-claim the jobs whose claim failed in a tight loop and never exit.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_store_disk_full_keeps_earlier_snapshots() {
    let fx = Fixture::new("esf", 1, 3, 30, 0, 2).await;
    let Some(_mount) = mount_tmpfs(&fx.state_dir(), "32m") else {
        return;
    };
    fx.backup_until_done(1).await;
    let before = fx.check_invariants().await;
    let before_ids: Vec<String> = fx
        .catalog()
        .await
        .iter()
        .filter_map(|e| e.get("id").and_then(|v| v.as_str()).map(str::to_string))
        .collect();
    // Enough new collections that the next run's job records outgrow the store's allocated
    // space (a few jobs fit in what sled already holds).
    add_small_collections(&fx, 80);
    let filler = fill_up(&fx.state_dir());

    let out = fx.backup(&[], Duration::from_secs(60)).await;
    let all = format!("{}{}", stderr(&out), String::from_utf8_lossy(&out.stdout));
    assert!(
        !out.status.success(),
        "a backup with a full state disk succeeded: {all}"
    );
    assert_ne!(out.status.code(), Some(101), "panicked: {all}");
    assert!(
        all.contains("No space left on device"),
        "the error should say the disk is full: {all}"
    );
    verify_all(&before);

    std::fs::remove_file(&filler).expect("remove the filler");
    let catalog = fx.catalog().await;
    for id in &before_ids {
        assert!(
            catalog
                .iter()
                .any(|e| e.get("id").and_then(|v| v.as_str()) == Some(id)),
            "{id} no longer listed"
        );
    }
    // The interrupted run finishes every collection, and a new full backup runs as usual
    // (its first polls planned from these exports' durations, which a slot queue or the
    // restart no longer inflates: docs/reliability.md, known problems 7 and 10).
    fx.until_done(&["--json", "backup", "--resume-only"], 3)
        .await;
    fx.until_done(&["--json", "backup"], 1).await;
    let now = backup_support::manifests(&fx.snapshots_dir());
    for (p, m) in &now {
        archive::verify_snapshot(&m.data_path(p), m, true).expect("verifies");
    }
    fx.check_no_stray_files(&now, false);
    let listed = fx.catalog().await;
    for (env, collection) in fx.targets() {
        assert!(
            now.iter()
                .any(|(_, m)| m.env == env && m.collection == collection),
            "no snapshot of {env}/{collection}"
        );
    }
    assert_eq!(listed.len(), now.len(), "one catalog entry per snapshot");
    assert!(fx.open_jobs().await.is_empty(), "jobs left open");
    fx.emu.shutdown().await;
}

/// The daemon with its state store on a full disk: the scheduled run's jobs cannot be
/// written, the engine's runner stops with the error, and the daemon exits non-zero with it
/// (for its supervisor to restart it) instead of scheduling runs that nothing executes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_exits_when_its_state_store_is_full() {
    let fx = Fixture::new("edf", 1, 3, 30, 0, 2).await;
    let Some(_mount) = mount_tmpfs(&fx.state_dir(), "32m") else {
        return;
    };
    fx.backup_until_done(1).await;
    let before = fx.check_invariants().await;
    // As above: enough collections that the run's job records outgrow sled's allocation.
    add_small_collections(&fx, 80);
    let mut text = std::fs::read_to_string(&fx.config).expect("read config");
    text.push_str(
        "\n[daemon]\nlisten = \"127.0.0.1:0\"\n\n[[schedules]]\nname = \"often\"\ncron = \"* * * * * * *\"\n",
    );
    std::fs::write(&fx.config, text).expect("write config");
    let filler = fill_up(&fx.state_dir());

    let out = crash_support::run(&fx.config, &["daemon"], &[], Duration::from_secs(90)).await;
    let all = format!("{}{}", stderr(&out), String::from_utf8_lossy(&out.stdout));
    assert_eq!(
        out.status.code(),
        Some(1),
        "the daemon should exit 1 when its store cannot be written: {all}"
    );
    assert!(
        all.contains("No space left on device"),
        "the error should say the disk is full: {all}"
    );
    assert!(
        all.contains("the engine's runner stopped"),
        "the daemon should stop because its runner did: {all}"
    );
    verify_all(&before);
    std::fs::remove_file(&filler).expect("remove the filler");
    fx.emu.shutdown().await;
}
