//! The crash matrix, continued: the durable points of the restore workflow, of the copy
//! workflow, and the record step's points only some backups pass (an unchanged export, copies
//! submitted). As in `crash_matrix.rs`, the real binary runs with `TCB_BACKUP_FAULTPOINT` set so
//! it is killed (SIGKILL) exactly there, is started again without it, and the outcome is checked:
//!
//! - a restore (`tcb-backup restore ID --to-collection C`, resumed by `tcb-backup restore`)
//!   ends Succeeded with exactly the snapshot's documents in the target, no record failed, one
//!   import on the server (two only when the crash fell between the import call and the commit
//!   of its id, the second in upsert mode), the uploaded file deleted and its import-call
//!   counter removed, and the backup's invariants of `crash_support` kept (the source snapshot
//!   verifies, nothing was exported again); killed mid-upload, the emulator saw a cut-off POST
//!   and stored nothing at the path;
//! - a backup with a `kind = "local"` destination (`tcb-backup backup`, resumed by
//!   `tcb-backup backup --resume-only`) keeps every invariant of `crash_support` (exports
//!   included: every snapshot from the newest export, at most the one orphan a kill can leave
//!   when it falls in another collection's export call, before its id is committed), and every
//!   snapshot ends with exactly one copy record whose files at the destination are identical
//!   to the local ones, with no temp file and nothing else there.
//!
//! `crash_matrix.rs` checks that each declared point has a case here or there.

// Shared with the workflow tests (their file); its style lints are theirs.
#[allow(clippy::field_reassign_with_default)]
mod backup_support;
mod crash_support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use crash_support::{assert_died_at, Fixture, SpareExports};
use serde_json::Value;
use tcb_backup::backup::catalog_store::SnapshotCatalog;
use tcb_backup::catalog::CatalogEntry;
use tcb_backup::destination::copy::{CopyRecords, CopyState};
use tcb_backup::emulator::{FaultAction, FaultRule};
use tcb_backup::faultpoint;
use tcb_backup::restore::IMPORT_MARKS_NAMESPACE;
use tcb_state::{Engine, EngineOptions, JobFilter, JobStatus};

const RESTORED: &str = "restored";
const NAS: &str = "nas";

fn declared(point: &str) {
    assert!(
        faultpoint::is_declared(point),
        "{point} is not a declared fault point"
    );
}

fn sorted_docs(mut docs: Vec<Value>) -> Vec<Value> {
    docs.sort_by(|a, b| a["_id"].as_str().cmp(&b["_id"].as_str()));
    docs
}

/// The `--json` lines of `stdout` whose `message_type` is `kind`.
fn messages(stdout: &[u8], kind: &str) -> Vec<Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["message_type"] == kind)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Restore

/// A backed-up fixture and the snapshot a restore case restores.
struct Restoring {
    fx: Fixture,
    env: String,
    source: String,
    records: u64,
}

/// Back up one collection (plus, with `big_records`, the `big` collection of several upload
/// chunks, which is then the one restored) and restore it into a new collection, crashing at
/// `spec` (`point[:n]`), with `fault` injected into the emulator once the backup is done.
async fn restore_until_crash(
    prefix: &str,
    point: &str,
    spec: &str,
    big_records: usize,
    fault: Option<FaultRule>,
) -> Restoring {
    declared(point);
    let fx = Fixture::new(prefix, 1, 1, 300, big_records, 1).await;
    fx.backup_until_done(1).await;
    if let Some(rule) = fault {
        fx.emu.control().add_fault(rule);
    }
    let env = fx.apps[0].envs[0].clone();
    let source = if big_records > 0 {
        "big".to_string()
    } else {
        fx.targets()[0].1.clone()
    };
    let catalog = fx.catalog().await;
    let id = catalog
        .iter()
        .find(|e| e["manifest"]["collection"] == source.as_str())
        .and_then(|e| e["id"].as_str())
        .unwrap_or_else(|| panic!("no snapshot of {source}: {catalog:?}"))
        .to_string();
    let records = fx.emu.control().documents(&env, &source).unwrap().len() as u64;

    let out = crash_support::run(
        &fx.config,
        &["--json", "restore", &id, "--to-collection", RESTORED],
        &[(faultpoint::ENV_VAR, spec)],
        Duration::from_secs(120),
    )
    .await;
    assert_died_at(&out, point);
    assert!(
        messages(&out.stdout, "result").is_empty(),
        "no result before the crash"
    );
    Restoring {
        fx,
        env,
        source,
        records,
    }
}

/// Resume with `restore` and check. `imports`: import jobs the server may see (2 only when the
/// crash fell after the import call, before its commit); `restarted`: whether the workflow must
/// report a restarted import (its call counter was committed before the crash). Then the
/// backup's own invariants: the source snapshots still verify, nothing was exported again.
async fn resume_and_check(r: &Restoring, imports: usize, restarted: bool) {
    let Restoring {
        fx,
        env,
        source,
        records,
        ..
    } = r;
    let records = *records;
    let out = fx.until_done(&["--json", "restore"], 1).await;
    let results = messages(&out.stdout, "result");
    assert_eq!(results.len(), 1, "one restore resumed: {results:?}");
    let r = &results[0];
    assert_eq!(r["status"], "succeeded", "{r:#}");
    let outcome = &r["outcome"];
    assert_eq!(outcome["collection"], RESTORED, "{r:#}");
    assert_eq!(outcome["expected_records"], records, "{r:#}");
    assert_eq!(outcome["record_success"], records, "{r:#}");
    assert_eq!(outcome["record_fail"], 0, "{r:#}");
    assert_eq!(outcome["restarted_import"], restarted, "{r:#}");
    assert_eq!(outcome["cleanup_error"], Value::Null, "{r:#}");

    // Exactly the snapshot's documents, once each: the import was not doubled.
    let control = fx.emu.control();
    let restored = control.documents(env, RESTORED).expect("target exists");
    assert_eq!(restored.len() as u64, records, "documents in the target");
    assert_eq!(
        sorted_docs(restored),
        sorted_docs(control.documents(env, source).unwrap())
    );
    let import_jobs: Vec<_> = control
        .jobs(env)
        .into_iter()
        .filter(|j| !j.export)
        .collect();
    assert!(
        import_jobs.iter().all(|j| j.collection == RESTORED),
        "{import_jobs:?}"
    );
    assert_eq!(
        import_jobs.len(),
        imports,
        "imports started: {import_jobs:?}"
    );
    // The uploaded export was deleted from the env's storage.
    assert_eq!(
        restore_uploads(fx, env),
        Vec::<String>::new(),
        "uploads left"
    );

    // One restore job, resumed (not started again), Succeeded; its counter is gone.
    one_restore_job_ended(fx, JobStatus::Succeeded);

    // The backup side is untouched: with the restored collection (which has no snapshot of its
    // own) out of the way, every collection still has its one verifying snapshot, no job is
    // open, and no collection was exported twice.
    control.drop_collection(env, RESTORED).expect("drop target");
    let found = fx.check_invariants().await;
    fx.check_exports(&found, &SpareExports::None);
}

/// The paths of the env's storage under the restore's upload prefix.
fn restore_uploads(fx: &Fixture, env: &str) -> Vec<String> {
    fx.emu
        .control()
        .files(env)
        .into_iter()
        .map(|(path, _)| path)
        .filter(|path| path.starts_with("tcb-backup-restore/"))
        .collect()
}

/// A restore crashed at the first hit of `point`, resumed, checked.
async fn restore_crash_at(prefix: &str, point: &str, imports: usize, restarted: bool) {
    let r = restore_until_crash(prefix, point, point, 0, None).await;
    resume_and_check(&r, imports, restarted).await;
    r.fx.emu.shutdown().await;
}

/// Exactly one restore job (resumed, never started again) ended `status`, and its import-call
/// counter is gone.
fn one_restore_job_ended(fx: &Fixture, status: JobStatus) {
    let engine = Engine::open(&fx.state_dir(), EngineOptions::default()).unwrap();
    let jobs = engine
        .list(&JobFilter {
            kind: Some("restore.collection".into()),
            ..JobFilter::default()
        })
        .unwrap();
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(jobs[0].status, status);
    let marks = engine
        .kv(IMPORT_MARKS_NAMESPACE)
        .scan_prefix::<u32>("")
        .unwrap();
    assert!(marks.is_empty(), "import-call counters left: {marks:?}");
}

macro_rules! restore_case {
    ($name:ident, $prefix:literal, $point:literal, $imports:literal, $restarted:literal) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            restore_crash_at($prefix, $point, $imports, $restarted).await;
        }
    };
}

restore_case!(
    restore_after_create_collection,
    "rca",
    "restore.after_create_collection",
    1,
    false
);
restore_case!(
    restore_before_prepare_target,
    "rcg",
    "restore.before_step.prepare_target",
    1,
    false
);

/// Killed while the COS POST is under way: the `big` snapshot is over two upload chunks (256
/// KiB) of export, and the kill falls when the body asks for its second chunk, the first sent.
/// The emulator saw a cut-off upload (a malformed POST, nothing stored at the path); the
/// resumed restore uploads the whole file again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_mid_upload() {
    // ~250 bytes a record: about 730 KiB of export, three chunks.
    let r = restore_until_crash(
        "rmu",
        "restore.mid_upload",
        "restore.mid_upload:2",
        3000,
        None,
    )
    .await;
    let raw = backup_support::manifests(&r.fx.snapshots_dir())
        .into_iter()
        .find(|(_, m)| m.collection == r.source)
        .map(|(_, m)| m.bytes_raw)
        .expect("the big snapshot's manifest");
    assert!(raw > 2 * 256 * 1024, "{raw} bytes: fewer than 3 chunks");
    let control = r.fx.emu.control();
    assert_eq!(control.calls("uploadfile"), 1, "the upload was started");
    assert_eq!(
        restore_uploads(&r.fx, &r.env),
        Vec::<String>::new(),
        "a partial upload is stored"
    );
    resume_and_check(&r, 1, false).await;
    // The first POST ended cut off (a malformed form: the server read part of the body, then
    // the connection died), the second succeeded.
    let posts = control
        .counters()
        .endpoints
        .get("cos_upload")
        .cloned()
        .unwrap_or_default();
    assert_eq!(posts.http_statuses.get(&400), Some(&1), "{posts:?}");
    assert_eq!(posts.calls, 2, "{posts:?}");
    r.fx.emu.shutdown().await;
}
restore_case!(
    restore_after_upload,
    "rcb",
    "restore.after_upload",
    1,
    false
);
restore_case!(
    restore_after_import_mark,
    "rcc",
    "restore.after_import_mark",
    1,
    true
);
restore_case!(
    restore_after_import_call,
    "rcd",
    "restore.after_import_call",
    2,
    true
);
restore_case!(
    restore_before_poll,
    "rch",
    "restore.before_step.poll",
    1,
    false
);
restore_case!(
    restore_after_file_deleted,
    "rce",
    "restore.after_file_deleted",
    1,
    false
);
restore_case!(
    restore_after_mark_removed,
    "rcf",
    "restore.after_mark_removed",
    1,
    false
);

/// The import ends in `fail`; killed once that failure is committed (the `Abandon` phase),
/// before the plaintext upload is deleted. The resumed restore deletes it and its import-call
/// counter, and the job fails with the import's own reason; the source snapshot is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_before_abandon() {
    let fail = FaultRule::next(
        "databasemigrateimport",
        1,
        FaultAction::FailJob {
            message: "import exploded".into(),
        },
    );
    let r = restore_until_crash(
        "rci",
        "restore.before_step.abandon",
        "restore.before_step.abandon",
        0,
        Some(fail),
    )
    .await;
    assert_eq!(
        restore_uploads(&r.fx, &r.env).len(),
        1,
        "the crash left the upload in storage"
    );

    let out = crash_support::run(
        &r.fx.config,
        &["--json", "restore"],
        &[],
        Duration::from_secs(120),
    )
    .await;
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        crash_support::stderr(&out)
    );
    let results = messages(&out.stdout, "result");
    assert_eq!(results.len(), 1, "one restore resumed: {results:?}");
    assert_eq!(results[0]["status"], "failed", "{:#}", results[0]);
    let error = results[0]["error"].as_str().unwrap_or_default();
    assert!(error.contains("import exploded"), "{error}");
    assert_eq!(
        restore_uploads(&r.fx, &r.env),
        Vec::<String>::new(),
        "uploads left"
    );
    let import_jobs = r.fx.emu.control().jobs(&r.env);
    assert_eq!(import_jobs.iter().filter(|j| !j.export).count(), 1);

    one_restore_job_ended(&r.fx, JobStatus::Failed);

    // The failed restore is the only open job, so the source is checked directly: its one
    // snapshot verifies, nothing was exported twice.
    let found = backup_support::manifests(&r.fx.snapshots_dir());
    assert_eq!(found.len(), 1);
    for (path, m) in &found {
        tcb_backup::archive::verify_snapshot(&m.data_path(path), m, true).expect("verifies");
    }
    r.fx.check_exports(&found, &SpareExports::None);
    r.fx.emu.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Copies (and the record step's points that need them)

/// The store's catalog (oldest first), copy records by (snapshot, destination), and copy jobs
/// (status) by (snapshot, destination). Opened while no binary runs, closed on return.
#[allow(clippy::type_complexity)]
fn store_view(
    state: &Path,
) -> (
    Vec<CatalogEntry>,
    BTreeMap<(String, String), tcb_backup::destination::copy::CopyRecord>,
    BTreeMap<(String, String), Vec<JobStatus>>,
) {
    let engine = Engine::open(state, EngineOptions::default()).expect("open store");
    let mut entries: Vec<CatalogEntry> =
        SnapshotCatalog::new(engine.kv(SnapshotCatalog::NAMESPACE))
            .all()
            .unwrap()
            .into_iter()
            .map(|r| r.entry)
            .collect();
    entries.sort_by_key(|e| e.manifest.export_job_id);
    let records = CopyRecords::new(engine.kv(CopyRecords::NAMESPACE))
        .all()
        .unwrap()
        .into_iter()
        .map(|r| ((r.snapshot_id.clone(), r.destination.clone()), r))
        .collect();
    let mut jobs: BTreeMap<(String, String), Vec<JobStatus>> = BTreeMap::new();
    for summary in engine
        .list(&JobFilter {
            kind: Some("copy.snapshot".into()),
            ..JobFilter::default()
        })
        .unwrap()
    {
        let view = engine.job(summary.id).unwrap().expect("listed job");
        let state: CopyState = serde_json::from_value(view.state).expect("a copy state");
        jobs.entry((state.snapshot_id, state.destination))
            .or_default()
            .push(summary.status);
    }
    (entries, records, jobs)
}

/// Every snapshot has exactly one copy at `nas` whose data file and manifest are byte for
/// byte the local ones; the destination holds nothing else (no temp file); every copy job
/// succeeded. Returns the number of copy jobs.
fn check_copies(fx: &Fixture, nas: &Path) -> usize {
    let root = fx.snapshots_dir();
    let (entries, records, jobs) = store_view(&fx.state_dir());
    assert!(!entries.is_empty());
    let mut expected = std::collections::BTreeSet::new();
    for e in &entries {
        let key = (e.id.clone(), NAS.to_string());
        let r = records
            .get(&key)
            .unwrap_or_else(|| panic!("{}: no copy recorded: {records:?}", e.id));
        for (local, object) in [(&e.data_path, &r.data), (&e.manifest_path, &r.manifest)] {
            let rel = local.strip_prefix(&root).expect("under the snapshots root");
            assert_eq!(Path::new(&object.key), rel, "{}: key", e.id);
            let want = std::fs::read(local).expect("read local file");
            let got = std::fs::read(nas.join(rel))
                .unwrap_or_else(|err| panic!("{}: {} at nas: {err}", e.id, rel.display()));
            assert_eq!(object.bytes, want.len() as u64, "{}: recorded size", e.id);
            assert!(got == want, "{}: {} differs at nas", e.id, rel.display());
            expected.insert(nas.join(rel));
        }
        let statuses = jobs.get(&key).cloned().unwrap_or_default();
        assert!(
            !statuses.is_empty() && statuses.iter().all(|s| *s == JobStatus::Succeeded),
            "{}: copy jobs {statuses:?}",
            e.id
        );
    }
    assert_eq!(records.len(), entries.len(), "one copy record per snapshot");
    for f in backup_support::walk(nas) {
        let name = f.file_name().and_then(|n| n.to_str()).unwrap_or("");
        assert!(
            !name.starts_with(".tmp-"),
            "temp file left: {}",
            f.display()
        );
        assert!(expected.contains(&f), "stray file at nas: {}", f.display());
    }
    jobs.values().map(Vec::len).sum()
}

/// A backup of two collections copied to a local destination, crashing at the `nth` hit of
/// `point` (in the second backup when `second`: an unchanged export, whose snapshots share the
/// first ones' data files), resumed with `backup --resume-only`, checked.
async fn copy_crash_at(prefix: &str, point: &str, nth: u32, second: bool) -> usize {
    declared(point);
    let fx = Fixture::new(prefix, 1, 2, 40, 0, 1).await;
    let nas = fx.add_local_destination(NAS);
    if second {
        fx.backup_until_done(1).await;
    }
    let spec = format!("{point}:{nth}");
    let out = fx
        .backup(&[(faultpoint::ENV_VAR, &spec)], Duration::from_secs(120))
        .await;
    assert_died_at(&out, point);
    // The copy of the first collection runs while the second one is backed up: the kill can
    // fall between the second's export call and the commit of its id (the one window where an
    // export is orphaned by design). Those orphans, read with the process dead, are the only
    // spare exports allowed.
    let left = fx.uncommitted_exports();
    let out = fx
        .until_done(&["--json", "backup", "--resume-only"], 2)
        .await;
    assert_eq!(
        messages(&out.stdout, "run_started"),
        Vec::<Value>::new(),
        "--resume-only started a run"
    );
    let runs = if second { 2 } else { 1 };
    let found = fx.check_invariants_n(runs).await;
    assert_eq!(found.len(), 2 * runs);
    if second {
        // The second snapshot of each collection names the first one's data file.
        let shared = found
            .iter()
            .filter(|(_, m)| m.data_reused_from.is_some())
            .count();
        assert_eq!(shared, 2, "unchanged exports share the data file");
    }
    fx.check_exports(&found, &SpareExports::Exactly(left));
    let copy_jobs = check_copies(&fx, &nas);
    fx.emu.shutdown().await;
    copy_jobs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_after_data_put() {
    copy_crash_at("cca", "copy.after_data_put", 1, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_after_manifest_put() {
    copy_crash_at("ccb", "copy.after_manifest_put", 1, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_after_record() {
    copy_crash_at("ccc", "copy.after_record", 1, false).await;
}

/// A copy of the second (unchanged) snapshot shares the first one's remote data object: the
/// crash falls after that share, before the commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_after_data_shared() {
    copy_crash_at("ccd", "copy.after_data_put", 1, true).await;
}

/// Copies submitted, Recorded not committed: the repeated record step submits them again; the
/// dedupe key hands back the pending job. (A second job can only appear if the first one
/// finished in the resumed process before the repeat submitted: at most two, one record.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_after_copies_submitted() {
    let jobs = copy_crash_at("cce", "backup.after_copies_submitted", 1, false).await;
    assert!((2..=3).contains(&jobs), "{jobs} copy jobs for 2 snapshots");
}

/// A destination added after the snapshots were taken: `backup --resume-only` catches up (one
/// copy per snapshot) and dies in a copy; the next `backup --resume-only` has no run to
/// resume and nothing for the catch-up to restart (the copy jobs are active, not backing off),
/// yet it must finish them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_in_a_catch_up_resumes() {
    let point = "copy.after_manifest_put";
    declared(point);
    let fx = Fixture::new("ccg", 1, 2, 40, 0, 1).await;
    fx.backup_until_done(1).await;
    let nas = fx.add_local_destination(NAS);
    let out = crash_support::run(
        &fx.config,
        &["--json", "backup", "--resume-only"],
        &[(faultpoint::ENV_VAR, point)],
        Duration::from_secs(120),
    )
    .await;
    assert_died_at(&out, point);
    fx.until_done(&["--json", "backup", "--resume-only"], 1)
        .await;
    let found = fx.check_invariants().await;
    assert_eq!(found.len(), 2);
    // The backup was done before the catch-up started: no export can be orphaned.
    fx.check_exports(&found, &SpareExports::None);
    assert_eq!(check_copies(&fx, &nas), 2, "the catch-up's two copy jobs");
    fx.emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_after_duplicate_removed() {
    copy_crash_at("ccf", "backup.after_duplicate_removed", 1, true).await;
}
