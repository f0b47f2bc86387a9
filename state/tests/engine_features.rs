//! Fan-out/fan-in, cancel, crash recovery and its cap, quarantine, panics, timeouts, limits,
//! leases and epochs, events, dedupe and graceful shutdown.

mod common;

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tcb_state::*;
use tokio::sync::Notify;

fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

fn opts(clock: &ManualClock) -> EngineOptions {
    EngineOptions {
        clock: Arc::new(clock.clone()),
        global_concurrency: 4,
        ..Default::default()
    }
}

fn no_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 1,
        ..Default::default()
    }
}

/// A leaf job: succeeds, fails permanently, or waits once, depending on its state. A `healed`
/// leaf never fails (what was broken got fixed before a retry).
struct Leaf {
    healed: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
enum LeafState {
    Start { fail: bool, wait: bool },
    Done,
}

impl Workflow for Leaf {
    type State = LeafState;
    const KIND: &'static str = "leaf";
    const SCHEMA_VERSION: u32 = 1;
    fn retry_policy(&self) -> RetryPolicy {
        no_retry()
    }
    async fn step(
        &self,
        ctx: StepContext,
        s: LeafState,
    ) -> Result<Transition<LeafState>, StepError> {
        match s {
            LeafState::Start { wait: true, fail } => Ok(Transition::WaitUntil {
                state: LeafState::Start { wait: false, fail },
                at: ctx.now + Duration::from_secs(3600),
            }),
            LeafState::Start { fail: true, .. } if !self.healed => {
                Err(StepError::permanent("leaf broke"))
            }
            LeafState::Start { .. } | LeafState::Done => Ok(Transition::Complete {
                state: LeafState::Done,
                output: serde_json::json!(ctx.label),
            }),
        }
    }
}

/// Spawns the given leaves, then reports what its children did.
struct Parent;

#[derive(Debug, Clone, Serialize, Deserialize)]
enum ParentState {
    Spawn(Vec<(bool, bool)>),
    Collect,
}

impl Workflow for Parent {
    type State = ParentState;
    const KIND: &'static str = "parent";
    const SCHEMA_VERSION: u32 = 1;
    async fn step(
        &self,
        ctx: StepContext,
        s: ParentState,
    ) -> Result<Transition<ParentState>, StepError> {
        match s {
            ParentState::Spawn(leaves) => {
                let children = leaves
                    .iter()
                    .enumerate()
                    .map(|(i, (fail, wait))| {
                        ChildSpec::of::<Leaf>(
                            &LeafState::Start {
                                fail: *fail,
                                wait: *wait,
                            },
                            format!("leaf-{i}"),
                        )
                        .map_err(|e| StepError::permanent(e.to_string()))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Transition::SpawnChildren {
                    state: ParentState::Collect,
                    children,
                })
            }
            ParentState::Collect => {
                let summary: Vec<String> = ctx
                    .children
                    .iter()
                    .map(|c| format!("{}={}", c.label, c.status))
                    .collect();
                Ok(Transition::Complete {
                    state: ParentState::Collect,
                    output: serde_json::json!(summary),
                })
            }
        }
    }
}

fn engine_with_kinds(dir: &std::path::Path, clock: &ManualClock) -> Engine {
    let engine = Engine::open(dir, opts(clock)).unwrap();
    engine.register(Leaf { healed: false }, KindLimits::default());
    engine.register(Parent, KindLimits::default());
    engine
}

#[tokio::test]
async fn fan_out_all_succeed() {
    let dir = common::test_dir();
    let clock = ManualClock::auto_advancing(t0());
    let engine = engine_with_kinds(dir.path(), &clock);
    let id = engine
        .submit::<Parent>(
            ParentState::Spawn(vec![(false, false), (false, true), (false, false)]),
            SubmitOptions::label("p"),
        )
        .unwrap();
    engine.run_until_idle().await.unwrap();
    let job = engine.job(id).unwrap().unwrap();
    assert_eq!(job.status(), JobStatus::Succeeded);
    assert_eq!(
        job.output,
        Some(serde_json::json!([
            "leaf-0=succeeded",
            "leaf-1=succeeded",
            "leaf-2=succeeded"
        ]))
    );
    let children = engine
        .list(&JobFilter {
            parent: Some(id),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(children.len(), 3);
    assert!(children.iter().all(|c| c.parent == Some(id)));
    assert!(
        clock.now() >= t0() + Duration::from_secs(3600),
        "waited in virtual time"
    );
}

#[tokio::test]
async fn partial_failure_is_never_success() {
    let dir = common::test_dir();
    let clock = ManualClock::auto_advancing(t0());
    let engine = engine_with_kinds(dir.path(), &clock);
    let id = engine
        .submit::<Parent>(
            ParentState::Spawn(vec![(false, false), (true, false)]),
            SubmitOptions::default(),
        )
        .unwrap();
    engine.run_until_idle().await.unwrap();
    let job = engine.job(id).unwrap().unwrap();
    assert_eq!(job.status(), JobStatus::PartiallyFailed);
    assert_eq!(
        job.output,
        Some(serde_json::json!(["leaf-0=succeeded", "leaf-1=failed"]))
    );
    assert!(job.history.iter().any(|h| matches!(
        &h.event,
        HistoryEvent::PartiallyFailed { reason } if reason.contains("1 of 2")
    )));
}

#[tokio::test]
async fn retrying_a_failed_child_reopens_its_finished_parent() {
    let dir = common::test_dir();
    let clock = ManualClock::auto_advancing(t0());
    let engine = engine_with_kinds(dir.path(), &clock);
    let id = engine
        .submit::<Parent>(
            ParentState::Spawn(vec![(false, false), (true, false)]),
            SubmitOptions::default(),
        )
        .unwrap();
    engine.run_until_idle().await.unwrap();
    assert_eq!(
        engine.job(id).unwrap().unwrap().status(),
        JobStatus::PartiallyFailed
    );
    let children = engine.job(id).unwrap().unwrap().children;
    let failed = children[1];
    assert_eq!(
        engine.job(failed).unwrap().unwrap().status(),
        JobStatus::Failed
    );

    engine.register(Leaf { healed: true }, KindLimits::default());
    engine.retry(failed).unwrap();
    let parent = engine.job(id).unwrap().unwrap();
    assert_eq!(parent.status(), JobStatus::WaitingForChildren, "reopened");
    engine.run_until_idle().await.unwrap();
    let parent = engine.job(id).unwrap().unwrap();
    assert_eq!(parent.status(), JobStatus::Succeeded);
    assert_eq!(
        parent.output,
        Some(serde_json::json!(["leaf-0=succeeded", "leaf-1=succeeded"]))
    );
    assert!(parent
        .history
        .iter()
        .any(|h| h.event == HistoryEvent::Restarted));
    // The child that had succeeded ran once.
    let first = engine.job(children[0]).unwrap().unwrap();
    assert!(!first
        .history
        .iter()
        .any(|h| h.event == HistoryEvent::Restarted));
    assert!(engine.retry(id).is_err(), "a succeeded job is not retried");
}

#[tokio::test]
async fn retrying_a_parent_restarts_only_its_unsuccessful_children() {
    let dir = common::test_dir();
    let clock = ManualClock::auto_advancing(t0());
    let engine = engine_with_kinds(dir.path(), &clock);
    let id = engine
        .submit::<Parent>(
            ParentState::Spawn(vec![(true, false), (false, false), (true, false)]),
            SubmitOptions::default(),
        )
        .unwrap();
    engine.run_until_idle().await.unwrap();
    assert_eq!(
        engine.job(id).unwrap().unwrap().status(),
        JobStatus::PartiallyFailed
    );

    // Still broken: the retried children fail again, and so does the parent's outcome.
    engine.retry(id).unwrap();
    engine.run_until_idle().await.unwrap();
    let parent = engine.job(id).unwrap().unwrap();
    assert_eq!(parent.status(), JobStatus::PartiallyFailed);

    engine.register(Leaf { healed: true }, KindLimits::default());
    engine.retry(id).unwrap();
    engine.run_until_idle().await.unwrap();
    let parent = engine.job(id).unwrap().unwrap();
    assert_eq!(parent.status(), JobStatus::Succeeded);
    let restarts = |child: JobId| {
        engine
            .job(child)
            .unwrap()
            .unwrap()
            .history
            .iter()
            .filter(|h| h.event == HistoryEvent::Restarted)
            .count()
    };
    assert_eq!(
        parent
            .children
            .iter()
            .map(|c| restarts(*c))
            .collect::<Vec<_>>(),
        vec![2, 0, 2]
    );
    assert!(engine.retry(id).is_err(), "nothing left to retry");
}

#[tokio::test]
async fn a_woken_job_runs_before_its_planned_time() {
    let dir = common::test_dir();
    // A clock that never moves by itself: only the wake can make the leaf due.
    let clock = ManualClock::new(t0());
    let engine = engine_with_kinds(dir.path(), &clock);
    let id = engine
        .submit::<Leaf>(
            LeafState::Start {
                fail: false,
                wait: true,
            },
            SubmitOptions::default(),
        )
        .unwrap();
    let drive = {
        let engine = engine.clone();
        tokio::spawn(async move { engine.run(std::future::pending::<()>()).await })
    };
    let waiting = loop {
        let v = engine.job(id).unwrap().unwrap();
        if v.status() == JobStatus::Waiting {
            break v;
        }
        tokio::task::yield_now().await;
    };
    assert!(!waiting
        .history
        .iter()
        .any(|h| h.event == HistoryEvent::Woken));
    engine.wake(id).unwrap();
    let done = tokio::time::timeout(Duration::from_secs(30), engine.wait(id))
        .await
        .expect("the woken job ran")
        .unwrap();
    assert_eq!(done.status(), JobStatus::Succeeded);
    assert!(done.history.iter().any(|h| h.event == HistoryEvent::Woken));
    assert_eq!(clock.now(), t0(), "no virtual time passed");
    // Waking a finished job changes nothing.
    engine.wake(id).unwrap();
    assert_eq!(
        engine.job(id).unwrap().unwrap().history.len(),
        done.history.len()
    );
    drive.abort();
}

#[tokio::test]
async fn cancel_parent_cancels_waiting_children_at_once() {
    let dir = common::test_dir();
    let clock = ManualClock::new(t0());
    let engine = engine_with_kinds(dir.path(), &clock);
    let id = engine
        .submit::<Parent>(
            ParentState::Spawn(vec![(false, true), (false, true)]),
            SubmitOptions::default(),
        )
        .unwrap();
    // Manual clock: the children park in Waiting and time does not move, so the run stops
    // only via shutdown once both wait.
    let mut events = engine.subscribe();
    let runner = {
        let engine = engine.clone();
        let stop = Arc::new(Notify::new());
        let stop2 = stop.clone();
        (
            tokio::spawn(async move { engine.run(async move { stop2.notified().await }).await }),
            stop,
        )
    };
    let mut waiting = 0;
    while waiting < 2 {
        let ev = events.recv().await.unwrap();
        if ev.kind == "leaf" && ev.status == JobStatus::Waiting {
            waiting += 1;
        }
    }
    engine.cancel(id).unwrap();
    let parent = engine.wait(id).await.unwrap();
    assert_eq!(parent.status(), JobStatus::Cancelled);
    for c in &parent.children {
        assert_eq!(
            engine.job(*c).unwrap().unwrap().status(),
            JobStatus::Cancelled
        );
    }
    runner.1.notify_one();
    runner.0.await.unwrap().unwrap();
    assert!(engine
        .list(&JobFilter {
            active_only: true,
            ..Default::default()
        })
        .unwrap()
        .is_empty());
}

/// Blocks in its step until released; for cancel-while-running and shutdown.
#[derive(Clone)]
struct Gate {
    entered: Arc<Notify>,
    release: Arc<Notify>,
}

impl Workflow for Gate {
    type State = u32;
    const KIND: &'static str = "gate";
    const SCHEMA_VERSION: u32 = 1;
    async fn step(&self, _ctx: StepContext, s: u32) -> Result<Transition<u32>, StepError> {
        self.entered.notify_one();
        self.release.notified().await;
        Ok(Transition::Next(s + 1))
    }
}

#[tokio::test]
async fn cancel_running_job_stops_at_step_boundary() {
    let dir = common::test_dir();
    let clock = ManualClock::auto_advancing(t0());
    let engine = Engine::open(dir.path(), opts(&clock)).unwrap();
    let gate = Gate {
        entered: Arc::new(Notify::new()),
        release: Arc::new(Notify::new()),
    };
    engine.register(gate.clone(), KindLimits::default());
    let id = engine.submit::<Gate>(0, SubmitOptions::default()).unwrap();
    let run = tokio::spawn({
        let engine = engine.clone();
        async move { engine.run_until_idle().await }
    });
    gate.entered.notified().await;
    engine.cancel(id).unwrap();
    assert_eq!(
        engine.job(id).unwrap().unwrap().status(),
        JobStatus::Running
    );
    gate.release.notify_one();
    run.await.unwrap().unwrap();
    let job = engine.job(id).unwrap().unwrap();
    assert_eq!(job.status(), JobStatus::Cancelled);
    assert_eq!(
        job.state,
        serde_json::json!(1),
        "the finished step's state is kept"
    );
    let started = job
        .history
        .iter()
        .filter(|h| matches!(h.event, HistoryEvent::StepStarted { .. }))
        .count();
    assert_eq!(started, 1, "no step after the cancel");
}

#[tokio::test]
async fn graceful_shutdown_lets_the_running_step_commit() {
    let dir = common::test_dir();
    let clock = ManualClock::new(t0());
    let engine = Engine::open(dir.path(), opts(&clock)).unwrap();
    let gate = Gate {
        entered: Arc::new(Notify::new()),
        release: Arc::new(Notify::new()),
    };
    engine.register(gate.clone(), KindLimits::default());
    let id = engine.submit::<Gate>(0, SubmitOptions::default()).unwrap();
    let stop = Arc::new(Notify::new());
    let run = tokio::spawn({
        let engine = engine.clone();
        let stop = stop.clone();
        async move { engine.run(async move { stop.notified().await }).await }
    });
    gate.entered.notified().await;
    stop.notify_one();
    tokio::task::yield_now().await;
    gate.release.notify_one();
    run.await.unwrap().unwrap();
    let job = engine.job(id).unwrap().unwrap();
    assert_eq!(job.state, serde_json::json!(1));
    assert_eq!(
        job.status(),
        JobStatus::Queued,
        "committed, not started again"
    );
}

#[tokio::test]
async fn crashed_running_job_resumes_and_crash_loop_is_capped() {
    let dir = common::test_dir();
    let clock = ManualClock::auto_advancing(t0());
    let (resumed, looping) = {
        let store = SledJobStore::open(dir.path()).unwrap();
        let mk = |label: &str| NewJob {
            kind: "leaf".into(),
            schema_version: 1,
            state: serde_json::json!({"Start": {"fail": false, "wait": false}}),
            label: label.into(),
            parent: None,
            dedupe_key: None,
            due_at: t0(),
        };
        let (a, _) = store.submit(mk("resumes"), t0()).unwrap();
        let (b, _) = store.submit(mk("loops"), t0()).unwrap();
        store
            .claim(a, 1, t0(), t0() + Duration::from_secs(60))
            .unwrap()
            .unwrap();
        store
            .claim(b, 1, t0(), t0() + Duration::from_secs(60))
            .unwrap()
            .unwrap();
        (a, b)
    };
    // The "process" died mid-step for both. Reopen; then crash `looping` again and again.
    for round in 1..=6u32 {
        let store = match SledJobStore::open(dir.path()) {
            Ok(s) => s,
            Err(e) => panic!("reopen round {round}: {e:?}"),
        };
        let changed = store.recover(t0(), 5).unwrap();
        let rec = store.get(looping).unwrap().unwrap();
        if round <= 5 {
            assert_eq!(rec.status, JobStatus::Queued, "round {round}");
            assert_eq!(rec.recoveries, round);
            store
                .claim(looping, 1, t0(), t0() + Duration::from_secs(60))
                .unwrap()
                .unwrap();
        } else {
            assert_eq!(rec.status, JobStatus::Failed);
            assert!(rec.last_error.unwrap().contains("crash-looped 6 times"));
        }
        assert!(changed.iter().any(|c| c.record.id == looping));
    }
    let engine = engine_with_kinds(dir.path(), &clock);
    engine.run_until_idle().await.unwrap();
    let a = engine.job(resumed).unwrap().unwrap();
    assert_eq!(a.status(), JobStatus::Succeeded);
    assert!(a
        .history
        .iter()
        .any(|h| matches!(h.event, HistoryEvent::Recovered { recoveries: 1 })));
    assert_eq!(
        engine.job(looping).unwrap().unwrap().status(),
        JobStatus::Failed
    );
}

/// Crashes interleaved with ordinary retries are not a crash loop: a `Retry` commit proves the
/// step ran to its end, so the count of crashes in a row starts again.
#[tokio::test]
async fn a_retry_commit_breaks_the_crash_loop_count() {
    let dir = common::test_dir();
    let store = SledJobStore::open(dir.path()).unwrap();
    let (id, _) = store
        .submit(
            NewJob {
                kind: "leaf".into(),
                schema_version: 1,
                state: serde_json::json!({"Start": {"fail": false, "wait": false}}),
                label: "flaky".into(),
                parent: None,
                dedupe_key: None,
                due_at: t0(),
            },
            t0(),
        )
        .unwrap();
    let lease = t0() + Duration::from_secs(60);
    // Three rounds of: 5 crashes in the step (the cap), then an attempt that ends in a
    // retryable error. 15 crashes in all, never more than 5 in a row.
    for round in 0..3 {
        for crash in 1..=5u32 {
            store.claim(id, 1, t0(), lease).unwrap().unwrap();
            store.recover(t0(), 5).unwrap();
            let rec = store.get(id).unwrap().unwrap();
            assert_eq!(rec.status, JobStatus::Queued, "round {round} crash {crash}");
            assert_eq!(rec.recoveries, crash);
        }
        let (rec, _) = store.claim(id, 1, t0(), lease).unwrap().unwrap();
        store
            .commit(
                id,
                rec.epoch,
                Commit::Retry {
                    error: "network".into(),
                    at: t0(),
                    delay: Duration::ZERO,
                },
                t0(),
            )
            .unwrap();
        let rec = store.get(id).unwrap().unwrap();
        assert_eq!(rec.recoveries, 0, "round {round}");
        assert_eq!(
            rec.failed_attempts,
            round + 1,
            "the retry budget still counts"
        );
    }
    // A sixth crash in a row is still a crash loop.
    for _ in 1..=6 {
        store.claim(id, 1, t0(), lease).unwrap().unwrap();
        store.recover(t0(), 5).unwrap();
    }
    let rec = store.get(id).unwrap().unwrap();
    assert_eq!(rec.status, JobStatus::Failed);
    assert!(rec.last_error.unwrap().contains("crash-looped 6 times"));
}

#[tokio::test]
async fn stale_epoch_commit_is_rejected() {
    let dir = common::test_dir();
    let store = SledJobStore::open(dir.path()).unwrap();
    let job = NewJob {
        kind: "k".into(),
        schema_version: 1,
        state: serde_json::json!(0),
        label: String::new(),
        parent: None,
        dedupe_key: None,
        due_at: t0(),
    };
    let (id, _) = store.submit(job, t0()).unwrap();
    let (first, _) = store.claim(id, 1, t0(), t0()).unwrap().unwrap();
    assert!(store.claim(id, 2, t0(), t0()).unwrap().is_none(), "held");
    store.recover(t0(), 5).unwrap();
    let (second, _) = store.claim(id, 2, t0(), t0()).unwrap().unwrap();
    assert_eq!(second.epoch, first.epoch + 1);
    let stale = store.commit(
        id,
        first.epoch,
        Commit::Next {
            state: serde_json::json!(9),
        },
        t0(),
    );
    assert!(
        matches!(stale, Err(StoreError::StaleEpoch { .. })),
        "{stale:?}"
    );
    store
        .commit(
            id,
            second.epoch,
            Commit::Next {
                state: serde_json::json!(1),
            },
            t0(),
        )
        .unwrap();
    assert_eq!(store.get(id).unwrap().unwrap().state, serde_json::json!(1));
}

#[tokio::test]
async fn corrupt_and_unknown_version_records_are_quarantined_rest_works() {
    let dir = common::test_dir();
    let clock = ManualClock::auto_advancing(t0());
    let leaf = |v: u32| NewJob {
        kind: "leaf".into(),
        schema_version: v,
        state: serde_json::json!({"Start": {"fail": false, "wait": false}}),
        label: String::new(),
        parent: None,
        dedupe_key: None,
        due_at: t0(),
    };
    let (good, corrupt, future) = {
        let store = SledJobStore::open(dir.path()).unwrap();
        let (good, _) = store.submit(leaf(1), t0()).unwrap();
        let (corrupt, _) = store.submit(leaf(1), t0()).unwrap();
        let (future, _) = store.submit(leaf(7), t0()).unwrap();
        store
            .db()
            .open_tree("engine")
            .unwrap()
            .insert(
                [&b"j"[..], &corrupt.0.to_be_bytes()[..]].concat(),
                &b"{not json"[..],
            )
            .unwrap();
        store.db().flush().unwrap();
        (good, corrupt, future)
    };
    let engine = engine_with_kinds(dir.path(), &clock);
    engine.run_until_idle().await.unwrap();
    assert_eq!(
        engine.job(good).unwrap().unwrap().status(),
        JobStatus::Succeeded
    );
    let q = engine.quarantined().unwrap();
    let ids: Vec<JobId> = q.iter().map(|e| e.id).collect();
    assert!(ids.contains(&corrupt) && ids.contains(&future), "{q:?}");
    let fut = q.iter().find(|e| e.id == future).unwrap();
    assert!(fut.reason.contains("schema version 7"), "{}", fut.reason);
    assert!(engine.job(corrupt).unwrap().is_none());
    assert!(engine.list(&JobFilter::default()).unwrap().len() == 1);
}

/// Panics or hangs on its first attempt, then succeeds.
#[derive(Clone)]
struct Flaky {
    calls: Arc<AtomicU32>,
    hang: bool,
}

impl Workflow for Flaky {
    type State = ();
    const KIND: &'static str = "flaky";
    const SCHEMA_VERSION: u32 = 1;
    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            max_attempts: 3,
            ..Default::default()
        }
    }
    fn step_timeout(&self) -> Duration {
        Duration::from_millis(50)
    }
    async fn step(&self, _ctx: StepContext, _s: ()) -> Result<Transition<()>, StepError> {
        if self.calls.fetch_add(1, Ordering::SeqCst) == 0 {
            if self.hang {
                std::future::pending::<()>().await;
            }
            panic!("boom in step");
        }
        Ok(Transition::Complete {
            state: (),
            output: serde_json::Value::Null,
        })
    }
}

#[tokio::test]
async fn panic_and_timeout_are_retryable() {
    for hang in [false, true] {
        let dir = common::test_dir();
        let clock = ManualClock::auto_advancing(t0());
        let engine = Engine::open(dir.path(), opts(&clock)).unwrap();
        let wf = Flaky {
            calls: Arc::new(AtomicU32::new(0)),
            hang,
        };
        engine.register(wf.clone(), KindLimits::default());
        let id = engine
            .submit::<Flaky>((), SubmitOptions::default())
            .unwrap();
        engine.run_until_idle().await.unwrap();
        let job = engine.job(id).unwrap().unwrap();
        assert_eq!(job.status(), JobStatus::Succeeded);
        let err = job
            .history
            .iter()
            .find_map(|h| match &h.event {
                HistoryEvent::RetryScheduled { error, .. } => Some(error.clone()),
                _ => None,
            })
            .unwrap();
        let expected = if hang {
            "timed out"
        } else {
            "panicked: boom in step"
        };
        assert!(err.contains(expected), "{err}");
    }
}

/// Records the highest number of its steps running at once.
#[derive(Clone)]
struct Probe {
    now: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
}

impl Workflow for Probe {
    type State = u8;
    const KIND: &'static str = "probe";
    const SCHEMA_VERSION: u32 = 1;
    async fn step(&self, _ctx: StepContext, s: u8) -> Result<Transition<u8>, StepError> {
        let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(n, Ordering::SeqCst);
        for _ in 0..5 {
            tokio::task::yield_now().await;
        }
        self.now.fetch_sub(1, Ordering::SeqCst);
        if s >= 2 {
            Ok(Transition::Complete {
                state: s,
                output: serde_json::Value::Null,
            })
        } else {
            Ok(Transition::Next(s + 1))
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_kind_limit_is_respected() {
    let dir = common::test_dir();
    let clock = ManualClock::auto_advancing(t0());
    let engine = Engine::open(dir.path(), opts(&clock)).unwrap();
    let probe = Probe {
        now: Arc::new(AtomicUsize::new(0)),
        peak: Arc::new(AtomicUsize::new(0)),
    };
    engine.register(probe.clone(), KindLimits::new(2));
    for _ in 0..10 {
        engine.submit::<Probe>(0, SubmitOptions::default()).unwrap();
    }
    engine.run_until_idle().await.unwrap();
    assert!(probe.peak.load(Ordering::SeqCst) <= 2);
    let done = engine
        .list(&JobFilter {
            statuses: vec![JobStatus::Succeeded],
            kind: Some("probe".into()),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(done.len(), 10);
}

#[tokio::test]
async fn dedupe_key_returns_the_first_job() {
    let dir = common::test_dir();
    let clock = ManualClock::new(t0());
    let engine = Engine::open(dir.path(), opts(&clock)).unwrap();
    let o = SubmitOptions {
        dedupe_key: Some("backup/prod/2026-12-03".into()),
        ..Default::default()
    };
    let a = engine.submit::<Probe>(0, o.clone()).unwrap();
    let b = engine.submit::<Probe>(0, o).unwrap();
    assert_eq!(a, b);
    assert_eq!(engine.list(&JobFilter::default()).unwrap().len(), 1);
    assert_eq!("42".parse::<JobId>().unwrap(), JobId(42));
    assert_eq!(JobId(42).to_string(), "42");
}

#[tokio::test]
async fn corrupt_child_is_quarantined_and_parent_sees_it_failed() {
    let dir = common::test_dir();
    let (parent, children) = {
        let clock = ManualClock::new(t0());
        let engine = engine_with_kinds(dir.path(), &clock);
        let id = engine
            .submit::<Parent>(
                ParentState::Spawn(vec![(false, true), (false, true)]),
                SubmitOptions::default(),
            )
            .unwrap();
        let mut events = engine.subscribe();
        let stop = Arc::new(Notify::new());
        let run = tokio::spawn({
            let engine = engine.clone();
            let stop = stop.clone();
            async move { engine.run(async move { stop.notified().await }).await }
        });
        let mut waiting = 0;
        while waiting < 2 {
            let ev = events.recv().await.unwrap();
            if ev.kind == "leaf" && ev.status == JobStatus::Waiting {
                waiting += 1;
            }
        }
        stop.notify_one();
        run.await.unwrap().unwrap();
        let children = engine.job(id).unwrap().unwrap().children;
        (id, children)
    };
    {
        let store = SledJobStore::open(dir.path()).unwrap();
        store
            .db()
            .open_tree("engine")
            .unwrap()
            .insert(
                [&b"j"[..], &children[1].0.to_be_bytes()[..]].concat(),
                &b"\xff\x00garbage"[..],
            )
            .unwrap();
        store.db().flush().unwrap();
    }
    let clock = ManualClock::auto_advancing(t0());
    let engine = engine_with_kinds(dir.path(), &clock);
    engine.run_until_idle().await.unwrap();
    let p = engine.job(parent).unwrap().unwrap();
    assert_eq!(p.status(), JobStatus::PartiallyFailed);
    assert_eq!(
        p.output,
        Some(serde_json::json!(["leaf-0=succeeded", "=failed"]))
    );
    let q = engine.quarantined().unwrap();
    assert_eq!(q.len(), 1);
    assert_eq!(q[0].id, children[1]);
    assert!(
        q[0].reason.contains("invalid job record"),
        "{}",
        q[0].reason
    );
}

struct QuickA;
struct QuickB;

impl Workflow for QuickA {
    type State = ();
    const KIND: &'static str = "quick-a";
    const SCHEMA_VERSION: u32 = 1;
    async fn step(&self, _ctx: StepContext, _s: ()) -> Result<Transition<()>, StepError> {
        Ok(Transition::Complete {
            state: (),
            output: serde_json::Value::Null,
        })
    }
}

impl Workflow for QuickB {
    type State = ();
    const KIND: &'static str = "quick-b";
    const SCHEMA_VERSION: u32 = 1;
    async fn step(&self, _ctx: StepContext, _s: ()) -> Result<Transition<()>, StepError> {
        Ok(Transition::Complete {
            state: (),
            output: serde_json::Value::Null,
        })
    }
}

#[tokio::test]
async fn a_kind_at_its_limit_does_not_starve_other_kinds() {
    let dir = common::test_dir();
    let clock = ManualClock::auto_advancing(t0());
    let engine = Engine::open(dir.path(), opts(&clock)).unwrap();
    engine.register(QuickA, KindLimits::new(1));
    engine.register(QuickB, KindLimits::default());
    for _ in 0..300 {
        engine
            .submit::<QuickA>((), SubmitOptions::default())
            .unwrap();
    }
    clock.advance(Duration::from_secs(1));
    let b = engine
        .submit::<QuickB>((), SubmitOptions::default())
        .unwrap();
    let mut events = engine.subscribe();
    engine.run_until_idle().await.unwrap();
    let mut a_done_before_b = 0;
    loop {
        let ev = events.recv().await.unwrap();
        if ev.status != JobStatus::Succeeded {
            continue;
        }
        if ev.id == b {
            break;
        }
        a_done_before_b += 1;
    }
    assert!(
        a_done_before_b < 10,
        "{a_done_before_b} quick-a jobs finished before the later quick-b job"
    );
}

#[tokio::test]
async fn a_stale_due_entry_is_dropped_not_spun_on() {
    let dir = common::test_dir();
    let clock = ManualClock::auto_advancing(t0());
    let done = {
        let engine = engine_with_kinds(dir.path(), &clock);
        let id = engine
            .submit::<Leaf>(
                LeafState::Start {
                    fail: false,
                    wait: false,
                },
                SubmitOptions::default(),
            )
            .unwrap();
        engine.run_until_idle().await.unwrap();
        id
    };
    {
        // Damage: a due entry for a finished job (and one for a job that does not exist).
        let store = SledJobStore::open(dir.path()).unwrap();
        let tree = store.db().open_tree("engine").unwrap();
        for id in [done.0, 999_999] {
            let key = [
                &b"d"[..],
                &(t0()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap()
                    .as_millis() as u64)
                    .to_be_bytes()[..],
                &id.to_be_bytes()[..],
            ]
            .concat();
            tree.insert(key, &b"leaf"[..]).unwrap();
        }
        store.db().flush().unwrap();
    }
    let engine = engine_with_kinds(dir.path(), &clock);
    tokio::time::timeout(Duration::from_secs(10), engine.run_until_idle())
        .await
        .expect("run_until_idle must not spin on stale entries")
        .unwrap();
    assert_eq!(
        engine.job(done).unwrap().unwrap().status(),
        JobStatus::Succeeded
    );
}
