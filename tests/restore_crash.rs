//! A restore killed at every step — before the step's side effect, and after it but before the
//! engine committed the result (the `kill -9` window) — resumes to the same documents.
//!
//! The "process" is the engine: at the crash point the step hangs, the runner task is aborted
//! and the engine dropped, so nothing of that step is ever committed; a new engine is then
//! opened on the same store with the ordinary workflow and runs the job to the end.

mod restore_support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use restore_support::*;
use tcb_backup::restore::{RestorePlan, RestoreRequest, RestoreState, RestoreWorkflow};
use tcb_state::{
    Engine, EngineOptions, JobStatus, KindLimits, StepContext, StepError, SubmitOptions,
    Transition, Workflow,
};
use tokio::sync::Notify;

/// Delegates to the real workflow until step call number `crash_at`, where it hangs before or
/// after running the real step. While it hangs it holds no store handle (the test drops the
/// inner workflow), so the store can be reopened as after a real crash.
struct Crashing {
    inner: Arc<Mutex<Option<RestoreWorkflow>>>,
    calls: Arc<AtomicUsize>,
    crash_at: usize,
    after_effect: bool,
    reached: Arc<Notify>,
}

impl Crashing {
    fn inner(&self) -> Result<RestoreWorkflow, StepError> {
        self.inner
            .lock()
            .ok()
            .and_then(|g| g.clone())
            .ok_or_else(|| StepError::permanent("crashed"))
    }
}

impl Workflow for Crashing {
    type State = RestoreState;
    const KIND: &'static str = RestoreWorkflow::KIND;
    const SCHEMA_VERSION: u32 = RestoreWorkflow::SCHEMA_VERSION;

    fn retry_policy(&self) -> tcb_state::RetryPolicy {
        fast_retry()
    }

    async fn step(
        &self,
        ctx: StepContext,
        state: RestoreState,
    ) -> Result<Transition<RestoreState>, StepError> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        if n == self.crash_at && !self.after_effect {
            self.reached.notify_one();
            std::future::pending::<()>().await;
        }
        let result = {
            let inner = self.inner()?;
            inner.step(ctx, state).await
        };
        if n == self.crash_at {
            self.reached.notify_one();
            std::future::pending::<()>().await;
        }
        result
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_killed_at_every_step_resumes_to_the_same_documents() {
    let emu = start_emulator().await;
    let client = client(&emu);
    seed(&emu, ENV, "orders", tricky_documents(40));
    let dir = tempfile::tempdir().unwrap();
    let entry = backup(&emu, &client, &dir.path().join("snapshots"), ENV, "orders").await;
    let mut original = emu.control().documents(ENV, "orders").unwrap();
    sort_by_id(&mut original);

    let mut crashes = 0;
    let mut restarted_imports = 0;
    for after_effect in [false, true] {
        for crash_at in 0.. {
            let state_dir = dir.path().join(format!("state-{after_effect}-{crash_at}"));
            let target = format!("orders_k{crash_at}_{}", u8::from(after_effect));
            let req = RestoreRequest {
                to_collection: Some(target.clone()),
                ..RestoreRequest::default()
            };
            let plan = RestorePlan::new(&entry, &req, time::OffsetDateTime::now_utc()).unwrap();

            // First life: runs until the crash point.
            let engine = Engine::open(&state_dir, EngineOptions::default()).unwrap();
            let inner = Arc::new(Mutex::new(Some(restore_workflow(&engine, &client))));
            let reached = Arc::new(Notify::new());
            engine.register(
                Crashing {
                    inner: inner.clone(),
                    calls: Arc::new(AtomicUsize::new(0)),
                    crash_at,
                    after_effect,
                    reached: reached.clone(),
                },
                KindLimits::new(1),
            );
            let id = engine
                .submit::<Crashing>(plan.into_state(&entry), SubmitOptions::label("restore"))
                .unwrap();
            let mut runner = {
                let engine = engine.clone();
                tokio::spawn(async move { engine.run_until_idle().await })
            };
            let crashed = tokio::select! {
                _ = reached.notified() => true,
                done = &mut runner => { done.unwrap().unwrap(); false }
            };
            if !crashed {
                // crash_at is past the last step: every crash point was covered.
                let view = engine.job(id).unwrap().unwrap();
                assert_eq!(view.summary.status, JobStatus::Succeeded);
                break;
            }
            crashes += 1;
            // "kill -9": stop the runner, drop every handle on the store.
            runner.abort();
            let _ = runner.await;
            inner.lock().unwrap().take();
            drop(engine);

            // Second life: a fresh engine on the same store finishes the job.
            let engine = reopen(&state_dir, &client).await;
            engine.run_until_idle().await.unwrap();
            let view = engine.job(id).unwrap().unwrap();
            assert_eq!(
                view.summary.status,
                JobStatus::Succeeded,
                "crash at step {crash_at} (after effect: {after_effect}): {:?}",
                view.summary.last_error
            );
            let outcome: tcb_backup::restore::ImportOutcome =
                serde_json::from_value(view.output.unwrap()).unwrap();
            assert_eq!(
                (outcome.record_success, outcome.record_fail),
                (40, 0),
                "crash at {crash_at}/{after_effect}: {outcome:?}"
            );
            assert_eq!(outcome.cleanup_error, None);
            restarted_imports += usize::from(outcome.restarted_import);
            let mut docs = emu.control().documents(ENV, &target).unwrap();
            sort_by_id(&mut docs);
            assert_eq!(docs, original, "crash at {crash_at}/{after_effect}");
            drop(engine);
        }
    }
    // verify, prepare, upload, start import, >= 1 poll, cleanup; twice.
    assert!(crashes >= 12, "{crashes}");
    // Exactly the crash right after the import call leaves it unknown whether it started.
    assert_eq!(restarted_imports, 1);
    assert!(emu
        .control()
        .files(ENV)
        .iter()
        .all(|(path, _)| !path.starts_with("tcb-backup-restore/")));
}

/// Opens the store again once the crashed step task has let go of it.
async fn reopen(dir: &std::path::Path, client: &tcb_backup::client::CloudBaseClient) -> Engine {
    for _ in 0..1000 {
        match Engine::open(dir, EngineOptions::default()) {
            Ok(engine) => {
                let wf = restore_workflow(&engine, client);
                engine.register(wf, KindLimits::new(1));
                return engine;
            }
            Err(tcb_state::EngineError::Locked { .. }) => tokio::task::yield_now().await,
            Err(e) => panic!("reopen: {e}"),
        }
    }
    panic!("the store stayed locked");
}
