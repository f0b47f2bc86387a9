//! Behaviour of the engine through its public API: steps, waits, retries, failures, fan-out,
//! cancel, retry, crash recovery, locking, quarantine, kv.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tcb_state::*;

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

fn fast_policy(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        initial_interval: Duration::from_secs(10),
        multiplier: 2.0,
        max_interval: Duration::from_secs(60),
        max_attempts,
        max_elapsed: None,
    }
}

/// Counts to `target`, one step per increment; `fail_first` retryable failures per step.
#[derive(Clone)]
struct Counter {
    calls: Arc<AtomicU32>,
    fail_first: u32,
    permanent_at: Option<u32>,
    max_attempts: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Count {
    n: u32,
    target: u32,
}

impl Workflow for Counter {
    type State = Count;
    const KIND: &'static str = "counter";
    const SCHEMA_VERSION: u32 = 1;
    fn retry_policy(&self) -> RetryPolicy {
        fast_policy(self.max_attempts)
    }
    async fn step(&self, ctx: StepContext, s: Count) -> Result<Transition<Count>, StepError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if Some(s.n) == self.permanent_at {
            return Err(StepError::permanent(format!("bad step {}", s.n)));
        }
        if ctx.attempt <= self.fail_first {
            return Err(StepError::retryable(format!("flaky at {}", s.n)));
        }
        if s.n + 1 >= s.target {
            return Ok(Transition::Complete {
                state: Count { n: s.n + 1, ..s },
                output: serde_json::json!({"n": s.n + 1}),
            });
        }
        Ok(Transition::Next(Count { n: s.n + 1, ..s }))
    }
}

fn counter(fail_first: u32, max_attempts: u32) -> Counter {
    Counter {
        calls: Arc::new(AtomicU32::new(0)),
        fail_first,
        permanent_at: None,
        max_attempts,
    }
}

#[tokio::test]
async fn steps_run_to_completion_with_history() {
    let dir = common::test_dir();
    let clock = ManualClock::auto_advancing(t0());
    let engine = Engine::open(dir.path(), opts(&clock)).unwrap();
    let wf = counter(0, 3);
    engine.register(wf.clone(), KindLimits::default());
    let id = engine
        .submit::<Counter>(Count { n: 0, target: 3 }, SubmitOptions::label("c"))
        .unwrap();
    engine.run_until_idle().await.unwrap();
    let job = engine.job(id).unwrap().unwrap();
    assert_eq!(job.status(), JobStatus::Succeeded);
    assert_eq!(job.state, serde_json::json!({"n": 3, "target": 3}));
    assert_eq!(job.output, Some(serde_json::json!({"n": 3})));
    assert_eq!(wf.calls.load(Ordering::SeqCst), 3);
    let seqs: Vec<u64> = job.history.iter().map(|h| h.seq).collect();
    assert_eq!(seqs, (0..job.history.len() as u64).collect::<Vec<_>>());
    assert_eq!(
        job.history
            .iter()
            .filter(|h| h.status.is_terminal())
            .count(),
        1
    );
}

#[tokio::test]
async fn retryable_errors_back_off_in_virtual_time_then_succeed() {
    let dir = common::test_dir();
    let clock = ManualClock::auto_advancing(t0());
    let engine = Engine::open(dir.path(), opts(&clock)).unwrap();
    engine.register(counter(2, 5), KindLimits::default());
    let id = engine
        .submit::<Counter>(Count { n: 0, target: 1 }, SubmitOptions::default())
        .unwrap();
    engine.run_until_idle().await.unwrap();
    let job = engine.job(id).unwrap().unwrap();
    assert_eq!(job.status(), JobStatus::Succeeded);
    let retries: Vec<u64> = job
        .history
        .iter()
        .filter_map(|h| match &h.event {
            HistoryEvent::RetryScheduled { delay_ms, .. } => Some(*delay_ms),
            _ => None,
        })
        .collect();
    assert_eq!(retries.len(), 2);
    assert!(retries[0] <= 10_000 && retries[1] <= 20_000, "{retries:?}");
}

#[tokio::test]
async fn exhausted_retries_fail_with_last_error_and_retry_restarts() {
    let dir = common::test_dir();
    let clock = ManualClock::auto_advancing(t0());
    let engine = Engine::open(dir.path(), opts(&clock)).unwrap();
    engine.register(counter(3, 3), KindLimits::default());
    let id = engine
        .submit::<Counter>(Count { n: 0, target: 2 }, SubmitOptions::default())
        .unwrap();
    engine.run_until_idle().await.unwrap();
    let job = engine.job(id).unwrap().unwrap();
    assert_eq!(job.status(), JobStatus::Failed);
    let err = job.summary.last_error.clone().unwrap();
    assert!(
        err.contains("gave up after 3 attempts") && err.contains("flaky at 0"),
        "{err}"
    );

    // A policy that now allows one more attempt per step: retry picks up where it failed.
    engine.register(counter(3, 4), KindLimits::default());
    engine.retry(id).unwrap();
    engine.run_until_idle().await.unwrap();
    let job = engine.job(id).unwrap().unwrap();
    assert_eq!(job.status(), JobStatus::Succeeded);
    assert!(
        engine.retry(id).is_err(),
        "only failed or partially failed jobs can be retried"
    );
}

#[tokio::test]
async fn permanent_error_fails_at_once() {
    let dir = common::test_dir();
    let clock = ManualClock::auto_advancing(t0());
    let engine = Engine::open(dir.path(), opts(&clock)).unwrap();
    let wf = Counter {
        permanent_at: Some(1),
        ..counter(0, 5)
    };
    engine.register(wf.clone(), KindLimits::default());
    let id = engine
        .submit::<Counter>(Count { n: 0, target: 5 }, SubmitOptions::default())
        .unwrap();
    engine.run_until_idle().await.unwrap();
    let job = engine.job(id).unwrap().unwrap();
    assert_eq!(job.status(), JobStatus::Failed);
    assert_eq!(job.summary.last_error.as_deref(), Some("bad step 1"));
    assert_eq!(wf.calls.load(Ordering::SeqCst), 2);
    assert_eq!(job.state, serde_json::json!({"n": 1, "target": 5}));
}

#[tokio::test]
async fn second_open_is_locked() {
    let dir = common::test_dir();
    let clock = ManualClock::new(t0());
    let _engine = Engine::open(dir.path(), opts(&clock)).unwrap();
    match Engine::open(dir.path(), opts(&clock)) {
        Err(EngineError::Locked { path }) => assert_eq!(path, dir.path()),
        Err(e) => panic!("expected Locked, got {e}"),
        Ok(_) => panic!("expected Locked, got an engine"),
    }
}

#[tokio::test]
async fn kv_round_trip_survives_reopen() {
    let dir = common::test_dir();
    let clock = ManualClock::new(t0());
    {
        let engine = Engine::open(dir.path(), opts(&clock)).unwrap();
        let kv = engine.kv("catalog");
        kv.put("a/1", &serde_json::json!({"x": 1})).unwrap();
        kv.put("a/2", &serde_json::json!({"x": 2})).unwrap();
        kv.put("b/1", &serde_json::json!({"x": 3})).unwrap();
        assert!(kv.remove("b/1").unwrap());
        assert!(!kv.remove("b/1").unwrap());
    }
    let engine = Engine::open(dir.path(), opts(&clock)).unwrap();
    let kv = engine.kv("catalog");
    let got: Vec<(String, serde_json::Value)> = kv.scan_prefix("a/").unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(
        kv.get::<serde_json::Value>("a/2").unwrap(),
        Some(serde_json::json!({"x": 2}))
    );
    assert_eq!(kv.get::<serde_json::Value>("b/1").unwrap(), None);
    assert!(engine.kv("other").get::<u32>("a/1").unwrap().is_none());
}
