//! The engine under faults of its environment: a state store that can no longer write (a full
//! disk) and a wall clock stepped back between two processes.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
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
        shutdown_grace: Duration::from_secs(5),
        ..Default::default()
    }
}

/// What the full disk's writes fail with (the text sled reports for ENOSPC).
const ENOSPC: &str = "No space left on device (os error 28)";

/// A sled store on a disk that can fill up: while `full`, every write fails with ENOSPC and
/// reads still work, as they do on a full filesystem. A claim fails before it writes anything
/// (the job stays due); a commit is applied and then reported failed, as when sled's flush
/// fails after the transaction.
struct FullDisk {
    inner: SledJobStore,
    full: AtomicBool,
    /// Claims tried while the disk was full.
    claims_while_full: AtomicUsize,
}

impl FullDisk {
    fn open(dir: &std::path::Path) -> Arc<FullDisk> {
        Arc::new(FullDisk {
            inner: SledJobStore::open(dir).unwrap(),
            full: AtomicBool::new(false),
            claims_while_full: AtomicUsize::new(0),
        })
    }

    fn refuse(&self) -> Result<(), StoreError> {
        if self.full.load(Ordering::SeqCst) {
            return Err(StoreError::Io(ENOSPC.to_string()));
        }
        Ok(())
    }

    /// `result`, or ENOSPC if the disk is full: the write happened in memory, its flush failed.
    fn after<T>(&self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        let value = result?;
        self.refuse()?;
        Ok(value)
    }
}

impl JobStore for FullDisk {
    fn submit(&self, job: NewJob, now: SystemTime) -> Result<(JobId, Vec<Changed>), StoreError> {
        self.refuse()?;
        self.inner.submit(job, now)
    }
    fn claim(
        &self,
        id: JobId,
        owner: u64,
        now: SystemTime,
        lease_until: SystemTime,
    ) -> Result<Option<(JobRecord, Changed)>, StoreError> {
        if self.full.load(Ordering::SeqCst) {
            self.claims_while_full.fetch_add(1, Ordering::SeqCst);
        }
        self.refuse()?;
        self.inner.claim(id, owner, now, lease_until)
    }
    fn commit(
        &self,
        id: JobId,
        epoch: u64,
        commit: Commit,
        now: SystemTime,
    ) -> Result<Vec<Changed>, StoreError> {
        self.after(self.inner.commit(id, epoch, commit, now))
    }
    fn commit_and_claim(
        &self,
        id: JobId,
        epoch: u64,
        state: serde_json::Value,
        owner: u64,
        now: SystemTime,
        lease_until: SystemTime,
    ) -> Result<(Vec<Changed>, Option<JobRecord>), StoreError> {
        self.after(
            self.inner
                .commit_and_claim(id, epoch, state, owner, now, lease_until),
        )
    }
    fn cancel(&self, id: JobId, now: SystemTime) -> Result<Vec<Changed>, StoreError> {
        self.refuse()?;
        self.inner.cancel(id, now)
    }
    fn restart(&self, id: JobId, now: SystemTime) -> Result<Vec<Changed>, StoreError> {
        self.refuse()?;
        self.inner.restart(id, now)
    }
    fn wake(&self, id: JobId, now: SystemTime) -> Result<Vec<Changed>, StoreError> {
        self.refuse()?;
        self.inner.wake(id, now)
    }
    fn recover(&self, now: SystemTime, max_recoveries: u32) -> Result<Vec<Changed>, StoreError> {
        self.refuse()?;
        self.inner.recover(now, max_recoveries)
    }
    fn due(&self, now: SystemTime, limit: usize) -> Result<Vec<DueJob>, StoreError> {
        self.inner.due(now, limit)
    }
    fn next_due_after(&self, now: SystemTime) -> Result<Option<SystemTime>, StoreError> {
        self.inner.next_due_after(now)
    }
    fn has_active(&self) -> Result<bool, StoreError> {
        self.inner.has_active()
    }
    fn get(&self, id: JobId) -> Result<Option<JobRecord>, StoreError> {
        self.inner.get(id)
    }
    fn history(&self, id: JobId) -> Result<Vec<HistoryEntry>, StoreError> {
        self.inner.history(id)
    }
    fn list(&self, filter: &JobFilter) -> Result<Vec<JobRecord>, StoreError> {
        self.inner.list(filter)
    }
    fn quarantine(
        &self,
        id: JobId,
        reason: &str,
        now: SystemTime,
    ) -> Result<Vec<Changed>, StoreError> {
        self.refuse()?;
        self.inner.quarantine(id, reason, now)
    }
    fn quarantined(&self) -> Result<Vec<QuarantineEntry>, StoreError> {
        self.inner.quarantined()
    }
    fn kv_put(&self, namespace: &str, key: &str, value: Vec<u8>) -> Result<(), StoreError> {
        self.refuse()?;
        self.inner.kv_put(namespace, key, value)
    }
    fn kv_get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.kv_get(namespace, key)
    }
    fn kv_remove(&self, namespace: &str, key: &str) -> Result<bool, StoreError> {
        self.refuse()?;
        self.inner.kv_remove(namespace, key)
    }
    fn kv_scan_prefix(
        &self,
        namespace: &str,
        prefix: &str,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.inner.kv_scan_prefix(namespace, prefix)
    }
}

/// Three steps, then done. When `fills_disk` is set, the second step fills the disk (as a
/// download does) before it returns, so its commit is the write that fails.
struct Steps {
    fills_disk: Option<Arc<FullDisk>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Count(u32);

impl Workflow for Steps {
    type State = Count;
    const KIND: &'static str = "steps";
    const SCHEMA_VERSION: u32 = 1;
    async fn step(&self, _ctx: StepContext, s: Count) -> Result<Transition<Count>, StepError> {
        if s.0 == 1 {
            if let Some(disk) = &self.fills_disk {
                disk.full.store(true, Ordering::SeqCst);
            }
        }
        Ok(if s.0 >= 3 {
            Transition::Complete {
                state: s,
                output: serde_json::json!("done"),
            }
        } else {
            Transition::Next(Count(s.0 + 1))
        })
    }
}

/// Runs until idle, or fails the test if the runner neither finishes nor stops.
async fn run_bounded(engine: &Engine) -> Result<(), EngineError> {
    tokio::time::timeout(Duration::from_secs(30), engine.run_until_idle())
        .await
        .expect("the runner neither finished nor stopped (spinning on a store it cannot write?)")
}

fn assert_enospc(result: Result<(), EngineError>) {
    match result {
        Err(EngineError::Store(StoreError::Io(msg))) => {
            assert!(msg.contains("No space left on device"), "{msg}")
        }
        other => panic!("expected the store's I/O error, got {other:?}"),
    }
}

/// The jobs, once there is room again and a new process opens the store: all succeed.
async fn finish_with_room(dir: &std::path::Path, ids: &[JobId]) {
    let clock = ManualClock::auto_advancing(t0());
    let engine = Engine::open(dir, opts(&clock)).unwrap();
    engine.register(Steps { fills_disk: None }, KindLimits::default());
    run_bounded(&engine).await.unwrap();
    for &id in ids {
        let job = engine.job(id).unwrap().unwrap();
        assert_eq!(job.status(), JobStatus::Succeeded, "{job:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_that_cannot_be_written_stops_the_run_and_the_next_run_finishes() {
    let dir = common::test_dir();
    let clock = ManualClock::auto_advancing(t0());
    let ids = {
        let disk = FullDisk::open(dir.path());
        let engine = Engine::with_store(disk.clone(), opts(&clock)).unwrap();
        engine.register(Steps { fills_disk: None }, KindLimits::default());
        let ids: Vec<JobId> = (0..6)
            .map(|_| {
                engine
                    .submit::<Steps>(Count(0), SubmitOptions::default())
                    .unwrap()
            })
            .collect();
        disk.full.store(true, Ordering::SeqCst);
        assert_enospc(run_bounded(&engine).await);
        // One pass over the due jobs at most (global concurrency 4), never the same jobs
        // again and again.
        let claims = disk.claims_while_full.load(Ordering::SeqCst);
        assert!(
            (1..=4).contains(&claims),
            "{claims} claims tried on a full disk"
        );
        for &id in &ids {
            assert_eq!(engine.job(id).unwrap().unwrap().status(), JobStatus::Queued);
        }
        ids
    };
    finish_with_room(dir.path(), &ids).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_that_cannot_be_written_stops_the_run_and_the_next_run_finishes() {
    let dir = common::test_dir();
    let clock = ManualClock::auto_advancing(t0());
    let ids = {
        let disk = FullDisk::open(dir.path());
        let engine = Engine::with_store(disk.clone(), opts(&clock)).unwrap();
        engine.register(
            Steps {
                fills_disk: Some(disk.clone()),
            },
            KindLimits::default(),
        );
        let ids: Vec<JobId> = (0..6)
            .map(|_| {
                engine
                    .submit::<Steps>(Count(0), SubmitOptions::default())
                    .unwrap()
            })
            .collect();
        assert_enospc(run_bounded(&engine).await);
        let claims = disk.claims_while_full.load(Ordering::SeqCst);
        assert!(claims <= 4, "{claims} claims tried on a full disk");
        let unfinished = ids
            .iter()
            .filter(|&&id| !engine.job(id).unwrap().unwrap().status().is_terminal())
            .count();
        assert!(unfinished > 0, "every job finished on a full disk");
        ids
    };
    // The next process finds jobs left Running (their failed commits and claims were in
    // memory only, or reached the disk) and recovers them.
    finish_with_room(dir.path(), &ids).await;
}

/// Waits `wait` once, then completes.
struct Poll {
    wait: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
enum PollState {
    Start,
    Polled,
}

impl Workflow for Poll {
    type State = PollState;
    const KIND: &'static str = "poll";
    const SCHEMA_VERSION: u32 = 1;
    async fn step(
        &self,
        ctx: StepContext,
        s: PollState,
    ) -> Result<Transition<PollState>, StepError> {
        Ok(match s {
            PollState::Start => Transition::WaitUntil {
                state: PollState::Polled,
                at: ctx.now + self.wait,
            },
            PollState::Polled => Transition::Complete {
                state: PollState::Polled,
                output: serde_json::json!(ctx.now.duration_since(t0()).unwrap().as_secs()),
            },
        })
    }
}

const POLL_WAIT: Duration = Duration::from_secs(600);

/// Commits a poll's `WaitUntil` with the clock at `at`; returns the job, Waiting.
async fn waiting_poll(dir: &std::path::Path, at: SystemTime) -> JobId {
    let clock = ManualClock::new(at);
    let engine = Engine::open(dir, opts(&clock)).unwrap();
    engine.register(Poll { wait: POLL_WAIT }, KindLimits::default());
    let mut events = engine.subscribe();
    let id = engine
        .submit::<Poll>(PollState::Start, SubmitOptions::default())
        .unwrap();
    let runner = {
        let engine = engine.clone();
        tokio::spawn(async move { engine.run(std::future::pending::<()>()).await })
    };
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let ev = events.recv().await.unwrap();
            if ev.id == id && ev.status == JobStatus::Waiting {
                break;
            }
        }
    })
    .await
    .expect("the poll committed its wait");
    runner.abort();
    let _ = runner.await;
    id
}

#[tokio::test]
async fn a_clock_stepped_back_never_lengthens_a_wait_after_a_restart() {
    let dir = common::test_dir();
    let committed_at = t0() + Duration::from_secs(3 * 3600);
    let id = waiting_poll(dir.path(), committed_at).await;

    // The next process starts with the clock three hours back.
    let clock = ManualClock::auto_advancing(t0());
    let engine = Engine::open(dir.path(), opts(&clock)).unwrap();
    engine.register(Poll { wait: POLL_WAIT }, KindLimits::default());
    let job = engine.job(id).unwrap().unwrap();
    assert_eq!(job.status(), JobStatus::Waiting);
    assert_eq!(
        job.summary.due_at,
        Some(t0() + POLL_WAIT),
        "due within its original wait from now, not at the stored instant 3 h away"
    );
    run_bounded(&engine).await.unwrap();
    let done = engine.job(id).unwrap().unwrap();
    assert_eq!(done.status(), JobStatus::Succeeded);
    assert_eq!(
        clock.now(),
        t0() + POLL_WAIT,
        "the resumed job waited its wait, no longer"
    );
    assert_eq!(done.output, Some(serde_json::json!(POLL_WAIT.as_secs())));
}

#[tokio::test]
async fn a_restart_with_the_clock_unchanged_or_ahead_keeps_the_due_time() {
    let dir = common::test_dir();
    let id = waiting_poll(dir.path(), t0()).await;
    for later in [Duration::ZERO, Duration::from_secs(60)] {
        let clock = ManualClock::new(t0() + later);
        let engine = Engine::open(dir.path(), opts(&clock)).unwrap();
        let job = engine.job(id).unwrap().unwrap();
        assert_eq!(job.summary.due_at, Some(t0() + POLL_WAIT));
    }
}
