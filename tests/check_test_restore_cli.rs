//! `check --test-restore` through the real binary while an off-site copy is backing off.
//!
//! A copy to a destination that is down retries for days; the test restore must drive only
//! its own restore job, finish, and record its result — not wait for every job of the store.

mod backup_support;

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use backup_support::*;

const BIN: &str = env!("CARGO_BIN_EXE_tcb-backup");

async fn run(config: &Path, args: &[&str]) -> Output {
    let run = tokio::process::Command::new(BIN)
        .arg("--config")
        .arg(config)
        .args(args)
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .output();
    // Far above what the command needs; a hang fails the test instead of blocking it.
    tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .unwrap_or_else(|_| panic!("tcb-backup {args:?} did not finish"))
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
async fn a_test_restore_finishes_while_a_copy_is_backing_off() {
    let apps = test_apps("trcopy", 1, 1);
    let emu = start(emulator_config(&apps, 1, 15)).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &emu.base_url(), &apps, 1);
    // A destination under a regular file: every copy attempt fails and backs off (seconds,
    // then minutes, for days).
    let blocker = dir.path().join("not-a-directory");
    std::fs::write(&blocker, b"x").unwrap();
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "\n[[destinations]]\nname = \"nas\"\nkind = \"local\"\npath = \"{}\"\n",
        blocker.join("nas").display()
    ));
    std::fs::write(&config, &text).unwrap();

    let out = run(&config, &["backup"]).await;
    let root = dir.path().join("snapshots");
    assert_eq!(manifests(&root).len(), 1, "{}", describe(&out));
    assert!(
        describe(&out).contains("1 pending"),
        "the copy is left backing off: {}",
        describe(&out)
    );

    let out = run(&config, &["check", "--test-restore", "--sample", "5"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("test restore of"), "{}", describe(&out));
    assert!(stdout.contains(": ok ("), "{}", describe(&out));
    // The result is recorded, and the scratch collection is gone.
    let out = run(&config, &["--json", "snapshots"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let text = listed.to_string();
    assert!(text.contains("\"last_test_restore_ok\":true"), "{listed:#}");
    let env = &apps[0].envs[0];
    let scratch: Vec<String> = emu
        .control()
        .collections(env)
        .unwrap()
        .into_iter()
        .filter(|c| c.contains("_verify_"))
        .collect();
    assert!(scratch.is_empty(), "{scratch:?}");
}
