//! `tcb-backup demo` through the real binary, in a scratch working directory: it exits 0 with
//! every seeded collection backed up, keeps the emulator's secret in a 0600 file (not in the
//! config, not in the environment), and leaves private files a later `snapshots` can list.

#![cfg(unix)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_tcb-backup");

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

fn files_under(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            assert_eq!(mode(&path), 0o700, "{}", path.display());
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_backs_everything_up_with_private_files() {
    let cwd = tempfile::tempdir().expect("tempdir");
    let out = tokio::process::Command::new(BIN)
        .args(["--json", "demo"])
        .current_dir(cwd.path())
        .env("RUST_LOG", "warn")
        .output()
        .await
        .expect("run demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect();
    let summary = lines
        .iter()
        .find(|l| l["message_type"] == "summary")
        .expect("a summary");
    assert_eq!(summary["status"], "succeeded", "{summary}");
    assert_eq!(
        summary["succeeded"], 12,
        "the demo's 12 collections: {summary}"
    );
    assert_eq!(summary["failed"], 0);

    let dir = cwd.path().join("tcb-backup-demo");
    assert_eq!(mode(&dir), 0o700);
    let secret_file = dir.join("demo-secret");
    assert_eq!(mode(&secret_file), 0o600);
    let secret = std::fs::read_to_string(&secret_file).expect("secret");
    assert!(!secret.trim().is_empty());
    let config = std::fs::read_to_string(dir.join("tcb-backup.toml")).expect("config");
    assert!(config.contains("secret_file = \"demo-secret\""), "{config}");
    assert!(!config.contains(secret.trim()), "no secret inline");
    assert!(!stdout.contains(secret.trim()), "no secret printed");

    let mut files = Vec::new();
    files_under(&dir.join("snapshots"), &mut files);
    let data = files
        .iter()
        .filter(|p| p.to_string_lossy().ends_with(".jsonl.zst"))
        .count();
    let manifests = files
        .iter()
        .filter(|p| p.to_string_lossy().ends_with(".manifest.json"))
        .count();
    assert_eq!((data, manifests), (12, 12), "{files:?}");
    for f in &files {
        assert_eq!(mode(f), 0o600, "{}", f.display());
    }

    // The config it leaves lists what it made.
    let snaps = tokio::process::Command::new(BIN)
        .arg("--config")
        .arg(dir.join("tcb-backup.toml"))
        .args(["--json", "snapshots"])
        .output()
        .await
        .expect("snapshots");
    assert_eq!(snaps.status.code(), Some(0));
    let list: Value = serde_json::from_slice(&snaps.stdout).expect("one JSON document");
    assert_eq!(list.as_array().map(Vec::len), Some(12));
}
