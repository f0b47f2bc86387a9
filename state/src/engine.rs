//! The engine: the public API (submit, run, wait, cancel, retry, queries) and the tokio runner
//! that claims due jobs, runs one step per job at a time under global and per-kind limits, and
//! commits each step's result durably before the job's next step can start.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use tokio::sync::{broadcast, Notify};
use tokio::task::JoinSet;

use crate::clock::{from_ms, Clock, SystemClock};
use crate::error::{EngineError, StoreError};
use crate::kv::KvNamespace;
use crate::retry::{self, RetryDecision};
use crate::sled_store::SledJobStore;
use crate::store::{Changed, Commit, JobRecord, JobStore, NewJob};
use crate::types::{
    ChildOutcome, JobEvent, JobFilter, JobId, JobStatus, JobSummary, JobView, KindLimits,
    QuarantineEntry, StepContext, StepError, SubmitOptions, Transition,
};
use crate::workflow::{Erased, ErasedWorkflow, StepFailure, Workflow};

/// Engine settings.
#[derive(Clone)]
pub struct EngineOptions {
    /// Source of time; tests inject a [`crate::ManualClock`].
    pub clock: Arc<dyn Clock>,
    /// Steps running at once across all kinds.
    pub global_concurrency: usize,
    /// How long a claim is honoured; always extended to at least twice the step timeout.
    pub lease_duration: Duration,
    /// Crash recoveries of one step before the job fails as crash-looping.
    pub max_recoveries: u32,
    /// How long graceful shutdown lets running steps finish.
    pub shutdown_grace: Duration,
    /// Capacity of the event broadcast; slower subscribers miss events.
    pub event_capacity: usize,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            clock: Arc::new(SystemClock),
            global_concurrency: 8,
            lease_duration: Duration::from_secs(600),
            max_recoveries: 5,
            shutdown_grace: Duration::from_secs(30),
            event_capacity: 1024,
        }
    }
}

impl std::fmt::Debug for EngineOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineOptions")
            .field("global_concurrency", &self.global_concurrency)
            .field("lease_duration", &self.lease_duration)
            .field("max_recoveries", &self.max_recoveries)
            .field("shutdown_grace", &self.shutdown_grace)
            .finish_non_exhaustive()
    }
}

/// Most due-index entries one scheduling pass looks at.
const MAX_DUE_SCAN: usize = 16_384;

/// Steps one job may chain in its slot before it goes back to the due queue.
const MAX_CHAIN: u32 = 32;

struct Registered {
    wf: Arc<dyn ErasedWorkflow>,
    limits: KindLimits,
}

struct Inner {
    store: Arc<dyn JobStore>,
    clock: Arc<dyn Clock>,
    opts: EngineOptions,
    registry: RwLock<HashMap<String, Arc<Registered>>>,
    events: broadcast::Sender<JobEvent>,
    wake: Notify,
    runner_active: AtomicBool,
    /// Set when graceful shutdown begins: running jobs stop chaining steps.
    stopping: AtomicBool,
    /// Identifies this engine instance in leases.
    owner: u64,
}

/// The durable workflow engine. Clone it freely: clones share one store and runner.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, EngineError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| EngineError::Runtime(format!("store task failed: {e}")))
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

fn view(rec: JobRecord, history: Vec<crate::types::HistoryEntry>) -> JobView {
    JobView {
        summary: rec.summary(),
        schema_version: rec.schema_version,
        state: rec.state,
        output: rec.output,
        children: rec.children,
        recoveries: rec.recoveries,
        epoch: rec.epoch,
        history,
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::AbortHandle);
impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A handle that does not keep the engine (and its store) open; see [`Engine::downgrade`].
#[derive(Clone)]
pub struct WeakEngine {
    inner: std::sync::Weak<Inner>,
}

impl WeakEngine {
    /// The engine, if it is still open.
    pub fn upgrade(&self) -> Option<Engine> {
        self.inner.upgrade().map(|inner| Engine { inner })
    }
}

/// What a job driver task returns: the job, its kind, and how driving it went.
type DriverResult = (JobId, String, Result<(), EngineError>);

/// The runner's book-keeping of the job drivers in flight.
#[derive(Default)]
struct Slots {
    running: HashSet<JobId>,
    per_kind: HashMap<String, usize>,
    /// The first store failure a driver reported: the runner stops and returns it.
    failure: Option<EngineError>,
}

impl Slots {
    /// Frees the slot of a driver that ended and keeps its error if it must stop the runner.
    fn reap(&mut self, res: Result<DriverResult, tokio::task::JoinError>) {
        match res {
            Ok((id, kind, outcome)) => {
                self.running.remove(&id);
                if let Some(n) = self.per_kind.get_mut(&kind) {
                    *n = n.saturating_sub(1);
                }
                match outcome {
                    Ok(()) => {}
                    Err(e) if stops_the_runner(&e) => {
                        tracing::error!(job = %id, error = %e, "the state store cannot be written: stopping the runner");
                        self.failure.get_or_insert(e);
                    }
                    Err(e) => tracing::error!(job = %id, error = %e, "running a step failed"),
                }
            }
            Err(e) => {
                // run_job catches step panics itself; this is a bug in the runner.
                tracing::error!(error = %e, "job driver task failed");
            }
        }
    }
}

/// True for a driver error that claiming again cannot get past: the store failed to read or
/// write (a full or failing disk). The job's record is unchanged, so it is still due, and the
/// runner would re-claim it at once, and fail again, for ever.
fn stops_the_runner(e: &EngineError) -> bool {
    matches!(e, EngineError::Store(StoreError::Io(_)))
}

/// Clears the "runner active" flag however the runner exits (including being dropped).
struct RunnerGuard<'a>(&'a AtomicBool);
impl Drop for RunnerGuard<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

impl Engine {
    /// Opens the sled store in `dir` and recovers jobs a crashed process left running. A second
    /// process on the same directory gets [`EngineError::Locked`].
    pub fn open(dir: &Path, opts: EngineOptions) -> Result<Engine, EngineError> {
        let store = SledJobStore::open(dir)?;
        Engine::with_store(Arc::new(store), opts)
    }

    /// An engine on any [`JobStore`]; runs crash recovery first.
    pub fn with_store(
        store: Arc<dyn JobStore>,
        opts: EngineOptions,
    ) -> Result<Engine, EngineError> {
        let (events, _) = broadcast::channel(opts.event_capacity.max(1));
        let engine = Engine {
            inner: Arc::new(Inner {
                store,
                clock: opts.clock.clone(),
                opts,
                registry: RwLock::new(HashMap::new()),
                events,
                wake: Notify::new(),
                runner_active: AtomicBool::new(false),
                stopping: AtomicBool::new(false),
                owner: rand::random(),
            }),
        };
        let recovered = engine
            .inner
            .store
            .recover(engine.inner.clock.now(), engine.inner.opts.max_recoveries)?;
        if !recovered.is_empty() {
            tracing::info!(
                jobs = recovered.len(),
                "recovered jobs interrupted by a crash"
            );
        }
        engine.emit(recovered);
        Ok(engine)
    }

    /// Registers a workflow kind with its concurrency limit; replaces an earlier registration.
    pub fn register<W: Workflow>(&self, wf: W, limits: KindLimits) {
        let reg = Arc::new(Registered {
            wf: Arc::new(Erased(wf)),
            limits,
        });
        self.registry_write().insert(W::KIND.to_string(), reg);
        self.inner.wake.notify_one();
    }

    fn registry_read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<Registered>>> {
        self.inner
            .registry
            .read()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn registry_write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Arc<Registered>>> {
        self.inner
            .registry
            .write()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// A handle that does not keep the store open (for workflows that need to query the engine
    /// without creating a reference cycle through the registry).
    pub fn downgrade(&self) -> WeakEngine {
        WeakEngine {
            inner: Arc::downgrade(&self.inner),
        }
    }

    /// The engine's clock.
    pub fn clock(&self) -> Arc<dyn Clock> {
        self.inner.clock.clone()
    }

    /// Submits a job of kind `W`, durably. The runner picks it up when it is due.
    pub fn submit<W: Workflow>(
        &self,
        initial: W::State,
        opts: SubmitOptions,
    ) -> Result<JobId, EngineError> {
        let state = serde_json::to_value(&initial).map_err(|e| EngineError::Serialize {
            kind: W::KIND.to_string(),
            message: e.to_string(),
        })?;
        self.submit_raw(W::KIND, W::SCHEMA_VERSION, state, opts)
    }

    /// Submits a job by kind name with an already serialized state.
    pub fn submit_raw(
        &self,
        kind: &str,
        schema_version: u32,
        state: serde_json::Value,
        opts: SubmitOptions,
    ) -> Result<JobId, EngineError> {
        let now = self.inner.clock.now();
        let job = NewJob {
            kind: kind.to_string(),
            schema_version,
            state,
            label: opts.label,
            parent: opts.parent,
            dedupe_key: opts.dedupe_key,
            due_at: opts.run_at.unwrap_or(now),
        };
        let (id, changed) = self.inner.store.submit(job, now)?;
        self.emit(changed);
        self.inner.wake.notify_one();
        Ok(id)
    }

    /// Restarts a Failed or PartiallyFailed job from its last committed state (succeeded steps
    /// are not redone). A parent restarts its children that failed or were cancelled and waits
    /// for them again; a child whose parent already finished reopens that parent, so the
    /// parent's outcome follows the retried child.
    pub fn retry(&self, id: JobId) -> Result<(), EngineError> {
        let changed = self.inner.store.restart(id, self.inner.clock.now())?;
        self.emit(changed);
        self.inner.wake.notify_one();
        Ok(())
    }

    /// Makes a job due now instead of at its planned time: one that waits for something another
    /// job frees (a slot) is woken when it is freed, and one waiting out a retry's back-off is
    /// tried at once (its attempt count is kept). Its step runs again with the state it waited
    /// in. A job that is not waiting for a later time is left alone.
    pub fn wake(&self, id: JobId) -> Result<(), EngineError> {
        let changed = self.inner.store.wake(id, self.inner.clock.now())?;
        if !changed.is_empty() {
            self.emit(changed);
            self.inner.wake.notify_one();
        }
        Ok(())
    }

    /// Cancels a job and its non-terminal descendants: at once when not running, else at the
    /// running step's end (its result is committed, then the job is Cancelled). A terminal job is
    /// left as it is.
    pub fn cancel(&self, id: JobId) -> Result<(), EngineError> {
        let changed = self.inner.store.cancel(id, self.inner.clock.now())?;
        self.emit(changed);
        self.inner.wake.notify_one();
        Ok(())
    }

    /// One job with its full history.
    pub fn job(&self, id: JobId) -> Result<Option<JobView>, EngineError> {
        let Some(rec) = self.inner.store.get(id)? else {
            return Ok(None);
        };
        let history = self.inner.store.history(id)?;
        Ok(Some(view(rec, history)))
    }

    /// Jobs matching `filter`, in id order.
    pub fn list(&self, filter: &JobFilter) -> Result<Vec<JobSummary>, EngineError> {
        Ok(self
            .inner
            .store
            .list(filter)?
            .iter()
            .map(JobRecord::summary)
            .collect())
    }

    /// Records moved aside because they could not be decoded.
    pub fn quarantined(&self) -> Result<Vec<QuarantineEntry>, EngineError> {
        Ok(self.inner.store.quarantined()?)
    }

    /// Durable application records in `namespace`.
    pub fn kv(&self, namespace: &str) -> KvNamespace {
        KvNamespace::new(self.inner.store.clone(), namespace)
    }

    /// Every committed change, for progress UIs.
    pub fn subscribe(&self) -> broadcast::Receiver<JobEvent> {
        self.inner.events.subscribe()
    }

    /// Waits until job `id` is terminal and returns it. Does not drive the runner: call it while
    /// `run` or `run_until_idle` runs.
    pub async fn wait(&self, id: JobId) -> Result<JobView, EngineError> {
        let mut rx = self.subscribe();
        loop {
            match self.job(id)? {
                None => return Err(EngineError::NotFound(id)),
                Some(v) if v.status().is_terminal() => return Ok(v),
                Some(_) => {}
            }
            loop {
                match rx.recv().await {
                    Ok(ev) if ev.id == id && ev.status.is_terminal() => break,
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => break,
                    Err(broadcast::error::RecvError::Closed) => {
                        return Err(EngineError::Runtime("event channel closed".into()))
                    }
                }
            }
        }
    }

    /// Runs until no runnable or waiting job of a registered kind is left (waits for Waiting
    /// jobs via the clock; with an auto-advancing test clock that takes no real time).
    pub async fn run_until_idle(&self) -> Result<(), EngineError> {
        self.drive(std::future::pending::<()>(), true).await
    }

    /// Runs as a daemon until `shutdown` resolves, then stops claiming, lets running steps finish
    /// for up to `shutdown_grace` (their results are committed), and returns.
    pub async fn run(&self, shutdown: impl Future<Output = ()>) -> Result<(), EngineError> {
        self.drive(shutdown, false).await
    }

    fn emit(&self, changed: Vec<Changed>) {
        for c in changed {
            let _ = self.inner.events.send(JobEvent {
                id: c.record.id,
                kind: c.record.kind,
                label: c.record.label,
                status: c.record.status,
                entry: c.entry,
            });
        }
    }

    async fn drive(
        &self,
        shutdown: impl Future<Output = ()>,
        until_idle: bool,
    ) -> Result<(), EngineError> {
        if self.inner.runner_active.swap(true, Ordering::SeqCst) {
            return Err(EngineError::AlreadyRunning);
        }
        let _guard = RunnerGuard(&self.inner.runner_active);
        self.inner.stopping.store(false, Ordering::SeqCst);
        let global = self.inner.opts.global_concurrency.max(1);
        let scan_limit = global * 4 + 64;
        let mut tasks: JoinSet<DriverResult> = JoinSet::new();
        let mut slots = Slots::default();
        tokio::pin!(shutdown);
        let mut stopping = false;
        loop {
            while let Some(res) = tasks.try_join_next() {
                slots.reap(res);
            }
            if !stopping && slots.failure.is_some() {
                // A store write failed: claiming again would find the same jobs due and fail
                // the same way, in a tight loop. Stop as on shutdown and report the error.
                stopping = true;
                self.inner.stopping.store(true, Ordering::SeqCst);
            }
            if stopping {
                break;
            }
            let now = self.inner.clock.now();
            // Look at the earliest due jobs first; if free slots remain but everything in view
            // belongs to a kind at its limit (or an unregistered kind), look further so that one
            // busy kind cannot starve the others.
            let mut limit = scan_limit;
            while slots.running.len() < global {
                let due = self.inner.store.due(now, limit)?;
                let seen_all = due.len() < limit;
                let registry = self.registry_read();
                for d in due {
                    if slots.running.len() >= global {
                        break;
                    }
                    if slots.running.contains(&d.id) {
                        continue;
                    }
                    let Some(reg) = registry.get(&d.kind) else {
                        continue;
                    };
                    let n = slots.per_kind.entry(d.kind.clone()).or_insert(0);
                    if *n >= reg.limits.max_concurrent {
                        continue;
                    }
                    *n += 1;
                    slots.running.insert(d.id);
                    let inner = self.inner.clone();
                    let reg = reg.clone();
                    let kind = d.kind.clone();
                    let id = d.id;
                    tasks.spawn(async move {
                        let engine = Engine { inner };
                        let outcome = engine.run_job(id, reg).await;
                        (id, kind, outcome)
                    });
                }
                if seen_all || limit >= MAX_DUE_SCAN {
                    break;
                }
                limit = (limit * 8).min(MAX_DUE_SCAN);
            }
            let next = self.inner.store.next_due_after(now)?;
            if tasks.is_empty() && until_idle {
                let due_now = self.has_registered_due(now)?;
                if !due_now && next.is_none() {
                    break;
                }
            }
            let can_sleep =
                next.is_some() && (tasks.is_empty() || !self.inner.clock.advances_on_sleep());
            let sleep = match next {
                Some(at) if can_sleep => self.inner.clock.sleep_until(at),
                _ => Box::pin(std::future::pending()),
            };
            tokio::select! {
                biased;
                _ = &mut shutdown, if !stopping => {
                    stopping = true;
                    self.inner.stopping.store(true, Ordering::SeqCst);
                }
                Some(res) = tasks.join_next(), if !tasks.is_empty() => {
                    slots.reap(res);
                }
                _ = self.inner.wake.notified() => {}
                _ = sleep => {}
            }
        }
        if !tasks.is_empty() {
            tracing::info!(
                running = tasks.len(),
                "shutting down: letting running steps finish"
            );
            let deadline = tokio::time::sleep(self.inner.opts.shutdown_grace);
            tokio::pin!(deadline);
            loop {
                tokio::select! {
                    res = tasks.join_next() => match res {
                        None => break,
                        Some(res) => slots.reap(res),
                    },
                    _ = &mut deadline => {
                        tracing::warn!(running = tasks.len(), "shutdown deadline passed: abandoning running steps (they run again after restart)");
                        tasks.abort_all();
                        break;
                    }
                }
            }
        }
        match slots.failure {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// True when a job of a registered kind is due now (jobs of unknown kinds do not keep
    /// `run_until_idle` busy).
    fn has_registered_due(&self, now: SystemTime) -> Result<bool, EngineError> {
        let registry = self.registry_read();
        Ok(self
            .inner
            .store
            .due(now, 1024)?
            .iter()
            .any(|d| registry.contains_key(&d.kind)))
    }

    fn child_outcomes(&self, rec: &JobRecord) -> Result<Vec<ChildOutcome>, EngineError> {
        if rec.children.is_empty() {
            return Ok(Vec::new());
        }
        let mut quarantined: Option<Vec<QuarantineEntry>> = None;
        let mut out = Vec::with_capacity(rec.children.len());
        for &cid in &rec.children {
            let child = match self.inner.store.get(cid) {
                Ok(c) => c,
                Err(StoreError::Corrupt { .. }) => None,
                Err(e) => return Err(e.into()),
            };
            match child {
                Some(c) => out.push(ChildOutcome {
                    id: cid,
                    kind: c.kind,
                    label: c.label,
                    status: c.status,
                    output: c.output,
                    error: c.last_error,
                }),
                None => {
                    let q = match &quarantined {
                        Some(q) => q,
                        None => quarantined.insert(self.inner.store.quarantined()?),
                    };
                    let reason = q
                        .iter()
                        .find(|e| e.id == cid)
                        .map(|e| format!("record quarantined: {}", e.reason))
                        .unwrap_or_else(|| "record missing from the store".to_string());
                    out.push(ChildOutcome {
                        id: cid,
                        kind: String::new(),
                        label: String::new(),
                        status: JobStatus::Failed,
                        output: None,
                        error: Some(reason),
                    });
                }
            }
        }
        Ok(out)
    }

    async fn quarantine(&self, id: JobId, reason: String) -> Result<(), EngineError> {
        let store = self.inner.store.clone();
        let now = self.inner.clock.now();
        let changed = blocking(move || store.quarantine(id, &reason, now)).await??;
        self.emit(changed);
        Ok(())
    }

    /// Claims job `id`, runs its step and commits the result; while the job goes straight on
    /// (`Next`), commits and re-claims in one transaction and runs the next step in the same slot
    /// (at most `MAX_CHAIN` steps, so other due jobs get their turn).
    async fn run_job(&self, id: JobId, reg: Arc<Registered>) -> Result<(), EngineError> {
        let wf = reg.wf.clone();
        let timeout = wf.step_timeout();
        let lease = self.inner.opts.lease_duration.max(timeout * 2);
        let owner = self.inner.owner;
        let now = self.inner.clock.now();
        let store = self.inner.store.clone();
        let claimed = blocking(move || store.claim(id, owner, now, now + lease)).await?;
        let mut rec = match claimed {
            Ok(Some((rec, changed))) => {
                self.emit(vec![changed]);
                rec
            }
            Ok(None) => return Ok(()),
            Err(StoreError::Corrupt { .. }) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let mut chained = 0;
        loop {
            let Some(commit) = self.run_step(&rec, &wf).await? else {
                return Ok(());
            };
            let now = self.inner.clock.now();
            let store = self.inner.store.clone();
            let epoch = rec.epoch;
            let result = match commit {
                Commit::Next { state }
                    if chained < MAX_CHAIN && !self.inner.stopping.load(Ordering::SeqCst) =>
                {
                    chained += 1;
                    blocking(move || {
                        store.commit_and_claim(id, epoch, state, owner, now, now + lease)
                    })
                    .await?
                }
                commit => blocking(move || store.commit(id, epoch, commit, now))
                    .await?
                    .map(|changed| (changed, None)),
            };
            match result {
                Ok((changed, next)) => {
                    self.emit(changed);
                    match next {
                        Some(next) => rec = next,
                        None => return Ok(()),
                    }
                }
                Err(e @ StoreError::StaleEpoch { .. }) => {
                    tracing::warn!(job = %id, error = %e, "step result discarded");
                    return Ok(());
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Runs the step of a claimed job and turns its result into what to commit (`None` when
    /// the job was quarantined instead).
    async fn run_step(
        &self,
        rec: &JobRecord,
        wf: &Arc<dyn ErasedWorkflow>,
    ) -> Result<Option<Commit>, EngineError> {
        let id = rec.id;
        if rec.schema_version != wf.schema_version() {
            let reason = format!(
                "kind {} has schema version {} but this build knows version {}",
                rec.kind,
                rec.schema_version,
                wf.schema_version()
            );
            self.quarantine(id, reason).await?;
            return Ok(None);
        }
        let timeout = wf.step_timeout();
        let ctx = StepContext {
            job_id: id,
            attempt: rec.failed_attempts + 1,
            parent: rec.parent,
            label: rec.label.clone(),
            now: self.inner.clock.now(),
            children: self.child_outcomes(rec)?,
        };
        // The step runs in its own task so that a panic surfaces as a JoinError here. If this
        // driver is dropped (runner dropped without shutdown), the step is aborted with it.
        let handle = tokio::spawn(wf.clone().run_step(ctx, rec.state.clone()));
        let abort = handle.abort_handle();
        let _abort_on_drop = AbortOnDrop(handle.abort_handle());
        let result = match tokio::time::timeout(timeout, handle).await {
            Ok(Ok(r)) => r,
            Ok(Err(join)) if join.is_panic() => Err(StepFailure::Step(StepError::retryable(
                format!("step panicked: {}", panic_message(join.into_panic())),
            ))),
            Ok(Err(_)) => Err(StepFailure::Step(StepError::retryable(
                "step task was cancelled",
            ))),
            Err(_) => {
                abort.abort();
                Err(StepFailure::Step(StepError::retryable(format!(
                    "step timed out after {:.1}s",
                    timeout.as_secs_f64()
                ))))
            }
        };
        let now = self.inner.clock.now();
        Ok(Some(match result {
            Ok(t) => self.transition_to_commit(t, now),
            Err(StepFailure::Decode(reason)) => {
                self.quarantine(id, reason).await?;
                return Ok(None);
            }
            Err(StepFailure::Step(StepError::Permanent { message })) => {
                Commit::Fail { error: message }
            }
            Err(StepFailure::Step(StepError::Retryable {
                message,
                retry_after,
            })) => {
                let attempt = rec.failed_attempts + 1;
                let first = rec.first_failure_at_ms.map(from_ms).unwrap_or(now);
                match retry::decide(&wf.retry_policy(), attempt, first, now, retry_after) {
                    RetryDecision::RetryAt { at, delay } => {
                        tracing::debug!(job = %id, attempt, ?delay, error = %message, "step failed; retry scheduled");
                        Commit::Retry {
                            error: message,
                            at,
                            delay,
                        }
                    }
                    RetryDecision::GiveUp { reason } => Commit::Fail {
                        error: format!("{reason}; last error: {message}"),
                    },
                }
            }
        }))
    }

    fn transition_to_commit(&self, t: Transition<serde_json::Value>, now: SystemTime) -> Commit {
        match t {
            Transition::Next(state) => Commit::Next { state },
            Transition::WaitUntil { state, at } => Commit::Wait { state, at },
            Transition::Complete { state, output } => Commit::Complete {
                state,
                output,
                partial: None,
            },
            Transition::CompletePartial { state, output } => Commit::Complete {
                state,
                output,
                partial: Some("the workflow reported a partial failure".to_string()),
            },
            Transition::SpawnChildren { state, children } => {
                let registry = self.registry_read();
                let mut jobs = Vec::with_capacity(children.len());
                for c in children {
                    let version = match c
                        .schema_version
                        .or_else(|| registry.get(&c.kind).map(|r| r.wf.schema_version()))
                    {
                        Some(v) => v,
                        None => {
                            return Commit::Fail {
                                error: format!(
                                    "cannot spawn child {:?}: kind {} is not registered and the spec has no schema version",
                                    c.label, c.kind
                                ),
                            }
                        }
                    };
                    jobs.push(NewJob {
                        kind: c.kind,
                        schema_version: version,
                        state: c.initial_state,
                        label: c.label,
                        parent: None,
                        dedupe_key: None,
                        due_at: now,
                    });
                }
                Commit::Spawn {
                    state,
                    children: jobs,
                }
            }
        }
    }
}
