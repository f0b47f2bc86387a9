//! A restore that fails after its upload still deletes the uploaded file — plaintext, even for
//! an encrypted snapshot — from the env's storage, removes its import-call counter, and fails
//! the job with the original reason: the hash of the streamed data not matching the manifest,
//! an import ending in `fail`, an import still running past the poll limit, an import call the
//! server refuses.

mod restore_support;

use std::time::Duration;

use restore_support::*;
use tcb_backup::catalog::CatalogEntry;
use tcb_backup::emulator::{FaultAction, FaultRule};
use tcb_backup::restore::{
    PollPolicy, RestorePhase, RestorePlan, RestoreRequest, RestoreState, RestoreWorkflow,
    IMPORT_MARKS_NAMESPACE,
};
use tcb_state::{Engine, EngineOptions, JobStatus, KindLimits, SubmitOptions};

const TARGET: &str = "orders_back";

struct World {
    emu: tcb_backup::emulator::EmulatorHandle,
    entry: CatalogEntry,
    engine: Engine,
    _dir: tempfile::TempDir,
}

/// One backed-up collection and an engine whose restores poll with `poll`.
async fn world(poll: PollPolicy) -> World {
    let emu = start_emulator().await;
    let client = client(&emu);
    seed(&emu, ENV, "orders", tricky_documents(30));
    let dir = tempfile::tempdir().unwrap();
    let entry = backup(&emu, &client, &dir.path().join("snapshots"), ENV, "orders").await;
    let engine = Engine::open(&dir.path().join("state"), EngineOptions::default()).unwrap();
    engine.register(
        restore_workflow(&engine, &client).with_poll(poll),
        KindLimits::new(1),
    );
    World {
        emu,
        entry,
        engine,
        _dir: dir,
    }
}

fn state(w: &World) -> RestoreState {
    let req = RestoreRequest {
        to_collection: Some(TARGET.into()),
        ..RestoreRequest::default()
    };
    RestorePlan::new(&w.entry, &req, time::OffsetDateTime::now_utc())
        .expect("plan")
        .into_state(&w.entry)
}

/// Runs the restore to its end and checks what every failure after an upload must leave: the
/// job Failed with an error containing `reason` (and no word of a cleanup problem), the file
/// uploaded and then gone from storage, no import-call counter.
async fn fails_and_cleans_up(w: &World, state: RestoreState, reason: &str) {
    let id = w
        .engine
        .submit::<RestoreWorkflow>(state, SubmitOptions::label("restore"))
        .unwrap();
    w.engine.run_until_idle().await.unwrap();
    let view = w.engine.job(id).unwrap().unwrap();
    assert_eq!(view.summary.status, JobStatus::Failed);
    let error = view.summary.last_error.unwrap_or_default();
    assert!(error.contains(reason), "{error}");
    assert!(
        !error.contains("removed") && !error.contains("removing"),
        "{error}"
    );
    assert!(
        w.emu.control().calls("cos_upload") >= 1,
        "the file was never uploaded: the test proves nothing"
    );
    let leftovers: Vec<_> = w
        .emu
        .control()
        .files(ENV)
        .into_iter()
        .filter(|(path, _)| path.starts_with("tcb-backup-restore/"))
        .collect();
    assert!(leftovers.is_empty(), "uploads left: {leftovers:?}");
    let marks = w
        .engine
        .kv(IMPORT_MARKS_NAMESPACE)
        .scan_prefix::<u32>("")
        .unwrap();
    assert!(marks.is_empty(), "import-call counters left: {marks:?}");
    let view: RestoreState = serde_json::from_value(view.state).unwrap();
    assert!(
        matches!(view.phase, RestorePhase::Abandon { .. }),
        "{:?}",
        view.phase
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_ending_in_fail_deletes_the_upload() {
    let w = world(fast_poll()).await;
    w.emu.control().add_fault(FaultRule::next(
        "databasemigrateimport",
        1,
        FaultAction::FailJob {
            message: "import exploded".into(),
        },
    ));
    fails_and_cleans_up(&w, state(&w), "import exploded").await;
    w.emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_running_past_the_poll_limit_deletes_the_upload() {
    // No wait allowed: the first poll that finds the job running gives up.
    let poll = PollPolicy {
        max_wait: Duration::ZERO,
        ..fast_poll()
    };
    let w = world(poll).await;
    w.emu.control().add_fault(FaultRule::next(
        "databasemigrateimport",
        1,
        FaultAction::StuckJob,
    ));
    fails_and_cleans_up(&w, state(&w), "giving up").await;
    w.emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_call_refused_for_good_deletes_the_upload() {
    let w = world(fast_poll()).await;
    // -501009: a permanent request error.
    w.emu.control().add_fault(FaultRule::next(
        "databasemigrateimport",
        1,
        FaultAction::Errcode {
            errcode: -501009,
            errmsg: None,
        },
    ));
    fails_and_cleans_up(&w, state(&w), "starting the import into").await;
    assert!(
        w.emu.control().jobs(ENV).iter().all(|j| j.export),
        "no import ran"
    );
    w.emu.shutdown().await;
}

/// The data file changed after it was verified (a valid zstd stream of the same size of data,
/// one byte different): the upload's hash does not match the manifest, nothing is imported,
/// the upload is deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hash_mismatch_after_the_upload_deletes_it() {
    let w = world(fast_poll()).await;
    let stored = std::fs::read(&w.entry.data_path).unwrap();
    let mut raw = zstd::decode_all(&stored[..]).unwrap();
    let at = raw
        .iter()
        .position(|b| *b == b'a')
        .expect("an 'a' in the export");
    raw[at] = b'b';
    std::fs::write(&w.entry.data_path, zstd::encode_all(&raw[..], 3).unwrap()).unwrap();
    let mut s = state(&w);
    // Verified before the file changed.
    s.phase = RestorePhase::PrepareTarget;
    fails_and_cleans_up(&w, s, "does not match the manifest").await;
    assert!(
        w.emu.control().jobs(ENV).iter().all(|j| j.export),
        "nothing was imported"
    );
    w.emu.shutdown().await;
}
