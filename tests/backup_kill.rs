//! Crash safety of the real binary: SIGKILL it several times mid-run, restart it, and check
//! that every collection ends Recorded exactly once, that no export was created again after its
//! job id had been committed, and that no partial or temporary file is visible.

mod backup_support;

use std::collections::BTreeMap;
use std::time::Duration;

use backup_support::*;
use tcb_backup::backup::{CollectionState, Phase, SnapshotCatalog};
use tcb_state::{Engine, JobFilter, JobStatus};

const BIN: &str = env!("CARGO_BIN_EXE_tcb-backup");
const CONCURRENCY: usize = 4;

fn backup_command(config: &std::path::Path) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.arg("--config")
        .arg(config)
        .arg("backup")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_run_then_resume() {
    let apps = test_apps("kill", 1, 2);
    let mut cfg = emulator_config(&apps, 10, 300);
    // Each export takes a few virtual seconds; at 2x about 1.5-2 s real, so a run of 20
    // collections at concurrency 4 lasts long enough to be killed several times.
    // Exports run on the emulator's clock whether or not the binary is alive.
    cfg.time_scale = 2.0;
    let emu = start(cfg).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), &emu.base_url(), &apps, CONCURRENCY);

    // Kill points: when this many snapshots are on disk (so every kill lands mid-run, with
    // exports created, some committed, some downloading), then restart.
    let kill_at = [0usize, 4, 8, 12];
    let root = dir.path().join("snapshots");
    let mut kills = 0;
    for target in kill_at {
        let mut child = backup_command(&config).spawn().expect("spawn");
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                panic!(
                    "a run ended before it could be killed (after {target} snapshots): {status}"
                );
            }
            let done = manifests(&root).len();
            // At 0, wait until the first export exists; otherwise until `target` snapshots.
            let reached = if target == 0 {
                emu.control().exports_created().values().sum::<u64>() > 0
            } else {
                done >= target
            };
            if reached || std::time::Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        child.kill().await.expect("SIGKILL");
        kills += 1;
    }
    let out = backup_command(&config).output().await.expect("final run");
    assert_eq!(
        out.status.code(),
        Some(0),
        "final run: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The store: one succeeded, Recorded job per collection, no second run.
    let engine = Engine::open(&dir.path().join("state"), Default::default()).expect("open store");
    let runs = engine
        .list(&JobFilter {
            kind: Some("backup.run".into()),
            ..JobFilter::default()
        })
        .expect("list runs");
    assert_eq!(
        runs.len(),
        1,
        "restarts resume the run instead of starting another"
    );
    assert_eq!(runs[0].status, JobStatus::Succeeded);
    let jobs = engine
        .list(&JobFilter {
            kind: Some("backup.collection".into()),
            ..JobFilter::default()
        })
        .expect("list jobs");
    assert_eq!(jobs.len(), 20);
    let mut recorded: BTreeMap<(String, String), u64> = BTreeMap::new();
    for j in &jobs {
        assert_eq!(j.status, JobStatus::Succeeded, "{j:?}");
        let view = engine.job(j.id).expect("job").expect("exists");
        let st: CollectionState = serde_json::from_value(view.state).expect("state decodes");
        let Phase::Recorded { export, .. } = &st.phase else {
            panic!("{} ended in {:?}", j.label, st.phase.name());
        };
        let key = (
            st.spec.target.env.clone(),
            st.spec.target.collection.clone(),
        );
        assert!(
            recorded.insert(key, export.job_id).is_none(),
            "two jobs for {}",
            j.label
        );
    }

    // The emulator: no export of a collection was created after the committed one, and the
    // exports orphaned by kills (created, then killed before the commit) are few.
    let mut extra = 0;
    for ((env, collection), committed) in &recorded {
        let exports: Vec<u64> = emu
            .control()
            .jobs(env)
            .into_iter()
            .filter(|j| j.export && &j.collection == collection)
            .map(|j| j.job_id)
            .collect();
        assert!(
            exports.contains(committed),
            "{env}/{collection}: {exports:?}"
        );
        assert!(
            exports.iter().all(|id| id <= committed),
            "{env}/{collection}: an export was created after job id {committed} was committed: {exports:?}"
        );
        extra += exports.len() - 1;
    }
    assert!(
        extra <= kills * CONCURRENCY,
        "{extra} orphaned exports for {kills} kills"
    );

    // The files: one verified snapshot per collection, no temp or partial file, one catalog
    // entry each.
    assert_no_temp_files(&root);
    let found = manifests(&root);
    assert_eq!(found.len(), 20);
    for (path, m) in &found {
        check_snapshot(path, m, &emu);
        assert_eq!(
            recorded.get(&(m.env.clone(), m.collection.clone())),
            Some(&m.export_job_id)
        );
    }
    let data_files = walk(&root)
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".jsonl.zst"))
        .count();
    assert_eq!(data_files, 20, "no data file without its manifest");
    let catalog = SnapshotCatalog::new(engine.kv(SnapshotCatalog::NAMESPACE));
    assert_eq!(catalog.list(None, None).expect("catalog").len(), 20);
    emu.shutdown().await;
}

/// Ctrl-C (SIGINT) stops gracefully with exit 130; the next `backup` finishes the same run.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_stops_with_130_and_the_next_backup_resumes() {
    let apps = test_apps("intr", 1, 1);
    let mut cfg = emulator_config(&apps, 8, 200);
    cfg.time_scale = 2.0;
    let emu = start(cfg).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), &emu.base_url(), &apps, 2);

    let child = backup_command(&config).spawn().expect("spawn");
    let pid = child.id().expect("pid");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while emu.control().exports_created().values().sum::<u64>() == 0
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let sent = std::process::Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .expect("kill -INT");
    assert!(sent.success());
    let out = child.wait_with_output().await.expect("wait");
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = backup_command(&config).output().await.expect("second run");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let engine = Engine::open(&dir.path().join("state"), Default::default()).expect("open store");
    let runs = engine
        .list(&JobFilter {
            kind: Some("backup.run".into()),
            ..JobFilter::default()
        })
        .expect("runs");
    assert_eq!(
        runs.len(),
        1,
        "the interrupted run was resumed, not replaced"
    );
    assert_eq!(runs[0].status, JobStatus::Succeeded);
    assert_eq!(manifests(&dir.path().join("snapshots")).len(), 8);
    emu.shutdown().await;
}
