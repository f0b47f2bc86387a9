//! Environment faults on the destination filesystem: disk full (a 2 MiB tmpfs) and a
//! destination remounted read-only. Each must end the affected backups with a clear error,
//! leave no partial file, and keep every earlier snapshot intact and verifiable.
//!
//! Mounting needs root (CAP_SYS_ADMIN); without it the tests print why they skip and pass.

// Shared with the workflow tests (their file); its style lints are theirs.
#[allow(clippy::field_reassign_with_default)]
mod backup_support;
mod crash_support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crash_support::{stderr, Fixture};
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

/// Mounts a tmpfs on the fixture's destination, or says why not.
fn mount_destination(fx: &Fixture, size: &str) -> Option<Mount> {
    // Only root may mount.
    let uid = Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        eprintln!("SKIP: not root, cannot mount a tmpfs");
        return None;
    }
    match Mount::tmpfs(&fx.snapshots_dir(), size) {
        Ok(m) => Some(m),
        Err(e) => {
            eprintln!("SKIP: {e}");
            None
        }
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
    let Some(_mount) = mount_destination(&fx, "2m") else {
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
    let Some(mount) = mount_destination(&fx, "8m") else {
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
