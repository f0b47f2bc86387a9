//! Off-site copies and skip-unchanged, end to end against the in-process emulator: `backup`
//! submits a durable copy per configured destination (a local directory and an S3 server,
//! `moto_server` from PyPI, stopped and restarted between runs), `forget` applies each
//! destination's own retention and deletes remote copies with local snapshots, and an unchanged
//! export shares the previous snapshot's data file (restore, check, rebuild and forget follow
//! the reference).

mod backup_support;
mod moto_support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use backup_support::*;
use clap::Parser;
use moto_support::{free_port, Moto};
use serde_json::json;
use tcb_backup::backup::catalog_store::SnapshotCatalog;
use tcb_backup::backup::setup;
use tcb_backup::backup::{NoProgress, RunReport, RunSelection};
use tcb_backup::catalog::CatalogEntry;
use tcb_backup::destination::copy::CopyRecords;
use tcb_backup::destination::plan::{CatchUp, CopyLine, CopyStatus};
use tcb_backup::verify::{check_entries, CheckOptions, DataRead};
use tcb_state::{Engine, EngineOptions, JobStatus};

const BUCKET: &str = "tcb-copies-test";

async fn object_exists(port: u16, key: &str) -> bool {
    let url = format!("http://127.0.0.1:{port}/{BUCKET}/copies/{key}");
    match reqwest::Client::new().get(&url).send().await {
        Ok(r) => r.status().is_success(),
        Err(_) => false,
    }
}

fn append(path: &Path, text: &str) {
    let mut config = std::fs::read_to_string(path).unwrap();
    config.push_str(text);
    std::fs::write(path, config).unwrap();
}

struct Backup {
    report: RunReport,
    copies: Vec<CopyLine>,
    caught_up: CatchUp,
}

/// One `backup` the way the command runs it (catch-up, run, wait for the copies), in-process.
/// The store is closed again on return.
async fn backup(config_path: &Path) -> Backup {
    let config = setup::load(config_path).expect("config loads");
    let prepared = setup::prepare(&config).expect("prepare");
    let service = prepared.open(Arc::new(NoProgress)).expect("open store");
    let caught_up = service.catch_up_copies().expect("catch up");
    let run = service
        .submit_run(RunSelection {
            envs: vec![],
            collections: vec![],
        })
        .expect("submit");
    service
        .drive_with_copies(&[run], std::future::pending::<()>())
        .await
        .expect("drive");
    let report = service.report(run).expect("report");
    assert_eq!(report.status, JobStatus::Succeeded, "{report:#?}");
    let ids: Vec<String> = report
        .collections
        .iter()
        .filter_map(|r| r.snapshot_id.clone())
        .collect();
    let copies = service.copy_lines(&ids).expect("copy lines");
    Backup {
        report,
        copies,
        caught_up,
    }
}

/// Runs the CLI in-process on its own thread (it starts its own runtime); the exit code.
fn cli(config: &Path, args: &[&str]) -> i32 {
    let mut argv = vec![
        "tcb-backup".to_string(),
        "--config".to_string(),
        config.display().to_string(),
    ];
    argv.extend(args.iter().map(|s| s.to_string()));
    let parsed = tcb_backup::cli::Cli::try_parse_from(argv).expect("arguments parse");
    std::thread::spawn(move || tcb_backup::cli::run(parsed))
        .join()
        .expect("cli thread")
}

/// The catalog and copy records of the store (opened read-only for the look, then closed).
fn store_view(state: &Path) -> (Vec<CatalogEntry>, Vec<(String, String)>) {
    let engine = Engine::open(state, EngineOptions::default()).expect("open store");
    let catalog = SnapshotCatalog::new(engine.kv(SnapshotCatalog::NAMESPACE));
    let mut entries: Vec<CatalogEntry> = catalog
        .list(None, None)
        .unwrap()
        .into_iter()
        .map(|r| r.entry)
        .collect();
    entries.reverse(); // oldest first
    let copies = CopyRecords::new(engine.kv(CopyRecords::NAMESPACE))
        .all()
        .unwrap()
        .into_iter()
        .map(|r| (r.snapshot_id, r.destination))
        .collect();
    (entries, copies)
}

/// `tcb-backup snapshots --json`, run as the real binary.
fn snapshots_json(config: &Path) -> Vec<serde_json::Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_tcb-backup"))
        .args(["--json", "--config"])
        .arg(config)
        .arg("snapshots")
        .output()
        .expect("run tcb-backup");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON document")
}

fn data_files(dir: &Path) -> Vec<PathBuf> {
    walk(dir)
        .into_iter()
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name.ends_with(".jsonl.zst") && !name.starts_with('.')
        })
        .collect()
}

fn add_document(emu: &tcb_backup::emulator::EmulatorHandle, env: &str, collection: &str, n: u32) {
    emu.control()
        .insert_documents(
            env,
            collection,
            vec![json!({ "_id": format!("new-{n}"), "n": n })],
        )
        .expect("insert");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backup_copies_to_local_and_s3_through_an_s3_outage() {
    if !moto_support::installed() {
        return;
    }
    let apps = test_apps("cpy", 1, 1);
    let env = apps[0].envs[0].clone();
    let emu = start(emulator_config(&apps, 2, 30)).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &emu.base_url(), &apps, 4);
    let port = free_port();
    std::env::set_var("TCB_COPIES_TEST_AK", "testing");
    std::env::set_var("TCB_COPIES_TEST_SK", "testing");
    let nas = dir.path().join("nas");
    append(
        &config,
        &format!(
            r#"
[[destinations]]
name = "nas"
kind = "local"
path = "{nas}"

[[destinations]]
name = "offsite"
kind = "s3"
bucket = "{BUCKET}"
prefix = "copies"
endpoint = "http://127.0.0.1:{port}"
access_key_id_env = "TCB_COPIES_TEST_AK"
secret_access_key_env = "TCB_COPIES_TEST_SK"
"#,
            nas = nas.display()
        ),
    );
    let moto = Moto::start(port);
    moto.ready(BUCKET).await;

    // 1. Both destinations up: every snapshot is copied to both before `backup` returns.
    let first = backup(&config).await;
    assert_eq!(first.report.succeeded, 2);
    assert_eq!(first.copies.len(), 4, "{:#?}", first.copies);
    assert!(
        first.copies.iter().all(|c| c.status == CopyStatus::Copied),
        "{:#?}",
        first.copies
    );
    let root = dir.path().join("snapshots");
    for file in data_files(&root) {
        let key = file
            .strip_prefix(&root)
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        assert!(nas.join(&key).is_file(), "{key} at nas");
        assert!(object_exists(port, &key).await, "{key} at offsite");
    }

    // 2. The S3 server is down: the snapshots are recorded locally, the local copies are made,
    //    and the S3 copies are pending (retried with back-off), with the error in the summary.
    moto.stop();
    for (i, collection) in emu.control().collections(&env).unwrap().iter().enumerate() {
        add_document(&emu, &env, collection, i as u32);
    }
    let second = backup(&config).await;
    assert_eq!(second.report.succeeded, 2);
    let (offsite, local): (Vec<&CopyLine>, Vec<&CopyLine>) = second
        .copies
        .iter()
        .partition(|c| c.destination == "offsite");
    assert!(
        local.iter().all(|c| c.status == CopyStatus::Copied),
        "{local:#?}"
    );
    assert_eq!(offsite.len(), 2);
    for c in &offsite {
        assert_eq!(c.status, CopyStatus::Pending, "{c:#?}");
        assert!(c.error.is_some(), "a pending copy says why: {c:#?}");
    }
    let pending: Vec<String> = offsite.iter().map(|c| c.snapshot_id.clone()).collect();

    // 3. The server is back: the next backup restarts the waiting copies and finishes them.
    let moto = Moto::start(port);
    moto.ready(BUCKET).await;
    let third = backup(&config).await;
    // A copy whose back-off already ran out just runs; one still waiting is restarted now.
    assert!(third.caught_up.restarted <= 2, "{:?}", third.caught_up);
    assert_eq!(third.caught_up.submitted, 0, "{:?}", third.caught_up);
    assert!(
        third.copies.iter().all(|c| c.status == CopyStatus::Copied),
        "{:#?}",
        third.copies
    );
    let (entries, copies) = store_view(&dir.path().join("state"));
    for id in &pending {
        assert!(
            copies.contains(&(id.clone(), "offsite".to_string())),
            "{id}"
        );
        let entry = entries.iter().find(|e| &e.id == id).unwrap();
        let key = entry
            .data_path
            .strip_prefix(&root)
            .unwrap()
            .to_str()
            .unwrap();
        assert!(
            object_exists(port, key).await,
            "{key} at offsite after the restart"
        );
    }
    // `snapshots --json` lists the destinations holding each snapshot.
    assert_eq!(cli(&config, &["snapshots"]), 0);
    drop(moto);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forget_applies_each_destinations_retention_and_deletes_copies_with_snapshots() {
    let apps = test_apps("fgd", 1, 1);
    let env = apps[0].envs[0].clone();
    let emu = start(emulator_config(&apps, 1, 20)).await;
    let collection = emu.control().collections(&env).unwrap()[0].clone();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &emu.base_url(), &apps, 2);
    let nas = dir.path().join("nas");
    append(
        &config,
        &format!(
            r#"
[[destinations]]
name = "nas"
kind = "local"
path = "{nas}"

[destinations.retention]
keep_last = 1
"#,
            nas = nas.display()
        ),
    );
    backup(&config).await;
    add_document(&emu, &env, &collection, 1);
    backup(&config).await;
    let state = dir.path().join("state");
    let (entries, copies) = store_view(&state);
    assert_eq!(entries.len(), 2);
    assert_eq!(copies.len(), 2);
    assert_eq!(data_files(&nas).len(), 2);

    // No rule on the command line: only the destination's policy applies. The older copy
    // goes, both local snapshots stay.
    assert_eq!(cli(&config, &["forget", "--prune"]), 0);
    let (after, copies) = store_view(&state);
    assert_eq!(after.len(), 2);
    assert_eq!(copies, vec![(entries[1].id.clone(), "nas".to_string())]);
    let listing = snapshots_json(&config);
    let copies_of = |id: &str| {
        listing
            .iter()
            .find(|r| r["id"] == json!(id))
            .map(|r| r["copies"].clone())
    };
    assert_eq!(copies_of(&entries[1].id), Some(json!(["nas"])));
    assert_eq!(copies_of(&entries[0].id), Some(json!([])));
    let root = dir.path().join("snapshots");
    let kept_key = entries[1].data_path.strip_prefix(&root).unwrap();
    assert_eq!(data_files(&nas), vec![nas.join(kept_key)]);
    assert!(
        entries[0].data_path.is_file(),
        "the local snapshot is not the destination's"
    );

    // A third snapshot, then a local forget: the snapshots it deletes lose their remote
    // copies too, and the destination keeps the newest copy.
    add_document(&emu, &env, &collection, 2);
    backup(&config).await;
    let (entries, _) = store_view(&state);
    assert_eq!(entries.len(), 3);
    assert_eq!(cli(&config, &["forget", "--keep-last", "1", "--prune"]), 0);
    let (after, copies) = store_view(&state);
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].id, entries[2].id);
    assert_eq!(copies, vec![(entries[2].id.clone(), "nas".to_string())]);
    let newest_key = entries[2].data_path.strip_prefix(&root).unwrap();
    assert_eq!(data_files(&nas), vec![nas.join(newest_key)]);
    assert!(!entries[1].data_path.exists() && !entries[0].data_path.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unchanged_export_shares_the_previous_data_file() {
    let apps = test_apps("unc", 1, 1);
    let env = apps[0].envs[0].clone();
    let emu = start(emulator_config(&apps, 1, 40)).await;
    let collection = emu.control().collections(&env).unwrap()[0].clone();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &emu.base_url(), &apps, 2);
    let root = dir.path().join("snapshots");
    let state = dir.path().join("state");

    let first = backup(&config).await;
    let second = backup(&config).await;
    assert_eq!(
        second.report.collections[0].data_reused_from,
        first.report.collections[0].snapshot_id
    );
    let (entries, _) = store_view(&state);
    assert_eq!(entries.len(), 2, "two snapshots");
    assert_eq!(data_files(&root).len(), 1, "one data file");
    let (a, b) = (&entries[0], &entries[1]);
    assert_ne!(a.id, b.id);
    assert_ne!(a.manifest.export_job_id, b.manifest.export_job_id);
    assert_ne!(a.manifest_path, b.manifest_path);
    assert!(b.manifest.finished_at >= a.manifest.finished_at);
    assert_eq!(b.data_path, a.data_path);
    assert_eq!(b.manifest.data_reused_from.as_deref(), Some(a.id.as_str()));
    assert!(a.manifest.data_reused_from.is_none());
    // The manifest on disk says it is a reference.
    let text = std::fs::read_to_string(&b.manifest_path).unwrap();
    assert!(text.contains("\"data_reused_from\""), "{text}");

    // check (with the data) and a catalog rebuild follow the reference.
    let report = check_entries(
        &entries,
        &Default::default(),
        CheckOptions {
            read: DataRead::All,
        },
    );
    assert_eq!(report.failures().count(), 0, "{report:#?}");
    assert_eq!(cli(&config, &["catalog", "rebuild"]), 0);
    let (rebuilt, _) = store_view(&state);
    assert_eq!(rebuilt, entries);

    // A restore of the second snapshot brings the documents back.
    assert_eq!(
        cli(
            &config,
            &["restore", &b.id, "--to-collection", "back_again"]
        ),
        0
    );
    let mut restored = emu.control().documents(&env, "back_again").unwrap();
    let mut original = emu.control().documents(&env, &collection).unwrap();
    let by_id = |v: &serde_json::Value| v["_id"].to_string();
    restored.sort_by_key(by_id);
    original.sort_by_key(by_id);
    assert_eq!(restored, original);

    // Forgetting the first snapshot keeps the file the second one uses.
    assert_eq!(cli(&config, &["forget", "--keep-last", "1", "--prune"]), 0);
    let (after, _) = store_view(&state);
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].id, b.id);
    assert!(!a.manifest_path.exists());
    assert!(b.data_path.is_file(), "the shared data file is kept");
    assert_eq!(cli(&config, &["check", "--read-data"]), 0);

    // `snapshots --json` (the real binary) carries the verification times; a test restore
    // of the snapshot that shares a file works too, and is shown.
    assert_eq!(
        cli(
            &config,
            &["check", "--test-restore", "--collection", &collection]
        ),
        0
    );
    let listing = snapshots_json(&config);
    let row = listing
        .iter()
        .find(|r| r["id"] == json!(b.id))
        .expect("listed");
    assert!(row["last_verified_at"].is_string(), "{row:#}");
    assert_eq!(row["last_verify_ok"], json!(true));
    assert!(row["last_data_verified_at"].is_string(), "{row:#}");
    assert!(row["last_test_restored_at"].is_string(), "{row:#}");
    assert_eq!(row["last_test_restore_ok"], json!(true));
    assert_eq!(row["copies"], json!([]));
    assert_eq!(row["manifest"]["data_reused_from"], json!(a.id));

    // Once the last snapshot using it goes too, so does the file.
    add_document(&emu, &env, &collection, 1);
    let third = backup(&config).await;
    assert!(third.report.collections[0].data_reused_from.is_none());
    assert_eq!(cli(&config, &["forget", "--keep-last", "1", "--prune"]), 0);
    assert!(!b.data_path.exists(), "no manifest names it any more");
    // (The restored collection was backed up too, in its own directory.)
    assert_eq!(data_files(&root.join(&env).join(&collection)).len(), 1);
}

/// The daemon catches up on copies before each scheduled backup, not only when it starts: a
/// destination added to the configuration gets the snapshots that already exist when the next
/// scheduled backup fires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_backup_catches_up_on_copies() {
    use std::sync::Mutex;
    use tcb_backup::daemon::backup::TaskLauncher;
    use tcb_backup::daemon::scheduler::{Fire, Launcher};
    use tcb_backup::daemon::settings::{OverlapPolicy, ScheduleSpec, ScheduleTask};
    use tcb_backup::destination::copy::CopyWorkflow;
    use tcb_state::JobFilter;

    let apps = test_apps("dcu", 1, 1);
    let emu = start(emulator_config(&apps, 2, 10)).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &emu.base_url(), &apps, 2);
    let first = backup(&config).await;
    assert!(first.copies.is_empty(), "no destination yet");
    let nas = dir.path().join("nas");
    append(
        &config,
        &format!(
            "\n[[destinations]]\nname = \"nas\"\nkind = \"local\"\npath = \"{}\"\n",
            nas.display()
        ),
    );

    let loaded = setup::load(&config).expect("config loads");
    let prepared = setup::prepare(&loaded).expect("prepare");
    let service = prepared.open(Arc::new(NoProgress)).expect("open store");
    let copy_jobs = |engine: &Engine| {
        engine
            .list(&JobFilter {
                kind: Some(CopyWorkflow::KIND_NAME.to_string()),
                ..JobFilter::default()
            })
            .unwrap()
            .len()
    };
    assert_eq!(copy_jobs(&service.engine), 0);
    let launcher = TaskLauncher {
        service: Some(Arc::new(Mutex::new(service.clone()))),
    };
    let spec = ScheduleSpec {
        name: "nightly".into(),
        schedule: tcb_backup::schedule::Schedule::new("0 0 2 * * * *", None).unwrap(),
        task: ScheduleTask::Backup,
        envs: vec![],
        collections: vec![],
        overlap: OverlapPolicy::Skip,
        jitter: Duration::ZERO,
        catch_up_window: Duration::from_secs(3600),
    };
    let now = service.engine.clock().now();
    let fire = Fire {
        schedule: "nightly".into(),
        nominal: now,
        start_at: now,
        dedupe_key: "nightly@test".into(),
        label: "nightly".into(),
    };
    let run = launcher
        .launch(&service.engine, &spec, &fire)
        .expect("launch");
    assert_eq!(
        copy_jobs(&service.engine),
        2,
        "one copy per existing snapshot, submitted before the run"
    );
    service
        .drive_with_copies(&[run], std::future::pending::<()>())
        .await
        .expect("drive");
    let (entries, copies) = store_view_open(&service);
    assert_eq!(entries, 4, "two runs of two collections");
    assert_eq!(
        copies, 4,
        "every snapshot, old and new, has its copy at nas"
    );
    emu.shutdown().await;
}

/// Catalog entries and copy records of an open service.
fn store_view_open(service: &tcb_backup::backup::service::BackupService) -> (usize, usize) {
    let entries = service.catalog.list(None, None).unwrap().len();
    let copies = service.copy_records().all().unwrap().len();
    (entries, copies)
}
