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
    cfg.time_scale = 4.0;
    let emu = start(cfg).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), &emu.base_url(), &apps, CONCURRENCY);

    let kills = [400u64, 900, 600, 1200];
    for (i, after_ms) in kills.iter().enumerate() {
        let mut child = backup_command(&config).spawn().expect("spawn");
        tokio::time::sleep(Duration::from_millis(*after_ms)).await;
        match child.try_wait().expect("try_wait") {
            None => {
                child.kill().await.expect("SIGKILL");
            }
            Some(status) => panic!("run {i} ended before it could be killed: {status}"),
        }
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
        extra <= kills.len() * CONCURRENCY,
        "{extra} orphaned exports for {} kills",
        kills.len()
    );

    // The files: one verified snapshot per collection, no temp or partial file, one catalog
    // entry each.
    let root = dir.path().join("snapshots");
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
