//! Property test of the engine against a model: random workflows whose steps succeed, wait,
//! spawn children, fail (retryable, permanent, panic) or crash the "process" (the runner is
//! dropped without shutdown and the store reopened), interleaved with cancels, retries and
//! reopens. Properties: every job ends in exactly one terminal state; history is gap-free and
//! ordered; no step runs unless the store says the job is Running (so never after a terminal
//! state); every broadcast (committed) transition is still in the history after crashes; no two
//! steps of one job run at once; undisturbed jobs end exactly as their script says.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use proptest::prelude::*;
use serde::{Deserialize, Serialize};
use tcb_state::*;
use tokio::sync::Notify;

const MAX_ATTEMPTS: u32 = 3;
const MAX_RECOVERIES: u32 = 2;

#[derive(Debug, Clone)]
enum Fail {
    Retryable,
    Panic,
}

#[derive(Debug, Clone)]
enum Res {
    Next,
    Wait(u32),
    Spawn(Vec<Script>),
    Complete,
    Permanent,
}

#[derive(Debug, Clone)]
struct Plan {
    crashes: u8,
    failures: Vec<Fail>,
    result: Res,
}

type Script = Vec<Plan>;

#[derive(Debug, Clone)]
enum Op {
    Submit(Script),
    Run(u8),
    Cancel(usize),
    Retry(usize),
    Reopen,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[derive(Default)]
struct World {
    scripts: Mutex<HashMap<String, Script>>,
    calls: Mutex<HashMap<(String, u32), u32>>,
    crashes_done: Mutex<HashMap<(String, u32), u8>>,
    in_step: Mutex<HashSet<String>>,
    violations: Mutex<Vec<String>>,
    crash: Notify,
    crasher: Mutex<Option<String>>,
    engine: Mutex<Option<WeakEngine>>,
}

impl World {
    fn violation(&self, v: String) {
        lock(&self.violations).push(v);
    }

    fn add_script(&self, label: &str, script: &Script) {
        for (i, plan) in script.iter().enumerate() {
            if let Res::Spawn(children) = &plan.result {
                for (j, c) in children.iter().enumerate() {
                    self.add_script(&child_label(label, i as u32, j), c);
                }
            }
        }
        lock(&self.scripts).insert(label.to_string(), script.clone());
    }

    /// A finished parent reopened by a retry runs its step once more from its final state
    /// when its restarted children end (the engine resumes every job from its last committed
    /// state): in the model, its last step (always Complete or Permanent) comes once more.
    fn repeat_last_step(&self, label: &str) {
        if let Some(script) = lock(&self.scripts).get_mut(label) {
            if let Some(last) = script.last().cloned() {
                script.push(last);
            }
        }
    }
}

fn child_label(parent: &str, step: u32, i: usize) -> String {
    format!("{parent}/{step}.{i}")
}

struct InStep {
    world: Arc<World>,
    label: String,
}

impl Drop for InStep {
    fn drop(&mut self) {
        lock(&self.world.in_step).remove(&self.label);
    }
}

struct ModelWf {
    world: Arc<World>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct MState {
    step: u32,
}

impl Workflow for ModelWf {
    type State = MState;
    const KIND: &'static str = "model";
    const SCHEMA_VERSION: u32 = 1;

    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            initial_interval: Duration::from_secs(1),
            multiplier: 2.0,
            max_interval: Duration::from_secs(10),
            max_attempts: MAX_ATTEMPTS,
            max_elapsed: None,
        }
    }

    async fn step(&self, ctx: StepContext, s: MState) -> Result<Transition<MState>, StepError> {
        let world = &self.world;
        let label = ctx.label.clone();
        if !lock(&world.in_step).insert(label.clone()) {
            world.violation(format!("{label}: two steps at once"));
        }
        let _guard = InStep {
            world: world.clone(),
            label: label.clone(),
        };
        let weak = lock(&world.engine).clone();
        if let Some(engine) = weak.and_then(|w| w.upgrade()) {
            match engine.job(ctx.job_id) {
                Ok(Some(v)) if v.status() == JobStatus::Running => {}
                other => world.violation(format!(
                    "{label}: step ran while the store says {:?}",
                    other.map(|o| o.map(|v| v.status()))
                )),
            }
        }
        let plan = lock(&world.scripts)
            .get(&label)
            .and_then(|script| script.get(s.step as usize).cloned());
        let Some(plan) = plan else {
            world.violation(format!("{label}: step {} beyond its script", s.step));
            return Err(StepError::permanent("no plan"));
        };
        let key = (label.clone(), s.step);
        let crash_now = {
            let mut done = lock(&world.crashes_done);
            let n = done.entry(key.clone()).or_insert(0);
            if *n < plan.crashes {
                *n += 1;
                true
            } else {
                false
            }
        };
        if crash_now {
            *lock(&world.crasher) = Some(label.clone());
            world.crash.notify_one();
            std::future::pending::<()>().await;
        }
        let call = {
            let mut calls = lock(&world.calls);
            let c = calls.entry(key).or_insert(0);
            *c += 1;
            *c
        };
        if let Some(f) = plan.failures.get(call as usize - 1) {
            match f {
                Fail::Retryable => return Err(StepError::retryable("model: transient")),
                Fail::Panic => panic!("model panic"),
            }
        }
        let next = MState { step: s.step + 1 };
        match plan.result {
            Res::Next => Ok(Transition::Next(next)),
            Res::Wait(secs) => Ok(Transition::WaitUntil {
                state: next,
                at: ctx.now + Duration::from_secs(u64::from(secs)),
            }),
            Res::Spawn(children) => Ok(Transition::SpawnChildren {
                state: next,
                children: (0..children.len())
                    .map(|i| {
                        ChildSpec::of::<ModelWf>(
                            &MState { step: 0 },
                            child_label(&label, s.step, i),
                        )
                        .map_err(|e| StepError::permanent(e.to_string()))
                    })
                    .collect::<Result<_, _>>()?,
            }),
            Res::Complete => Ok(Transition::Complete {
                state: next,
                output: serde_json::json!(ctx.children.len()),
            }),
            Res::Permanent => Err(StepError::permanent("model: permanent")),
        }
    }
}

fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

struct Harness {
    world: Arc<World>,
    dir: tempfile::TempDir,
    clock: ManualClock,
    engine: Option<Engine>,
    seen: Arc<Mutex<Vec<JobEvent>>>,
    collectors: Vec<tokio::task::JoinHandle<()>>,
    jobs: Vec<(JobId, String)>,
    disturbed: HashSet<String>,
}

impl Harness {
    async fn open(&mut self) {
        let mut tries = 0;
        let engine = loop {
            let opts = EngineOptions {
                clock: Arc::new(self.clock.clone()),
                global_concurrency: 3,
                max_recoveries: MAX_RECOVERIES,
                shutdown_grace: Duration::from_secs(5),
                event_capacity: 100_000,
                ..Default::default()
            };
            match Engine::open(self.dir.path(), opts) {
                Ok(e) => break e,
                // The dropped engine's last blocking store call still holds the lock.
                Err(EngineError::Locked { .. }) if tries < 5000 => {
                    tries += 1;
                    tokio::task::yield_now().await;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => panic!("reopen: {e}"),
            }
        };
        engine.register(
            ModelWf {
                world: self.world.clone(),
            },
            KindLimits::default(),
        );
        *lock(&self.world.engine) = Some(engine.downgrade());
        let mut rx = engine.subscribe();
        let seen = self.seen.clone();
        self.collectors.push(tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(ev) => lock(&seen).push(ev),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        panic!("event collector lagged by {n}")
                    }
                    Err(_) => return,
                }
            }
        }));
        self.engine = Some(engine);
    }

    fn engine(&self) -> &Engine {
        self.engine.as_ref().expect("engine open")
    }

    async fn close(&mut self) {
        self.engine = None;
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    fn disturb(&mut self, label: &str) {
        let prefix = format!("{label}/");
        let all: Vec<String> = lock(&self.world.scripts).keys().cloned().collect();
        for l in all {
            if l == label || l.starts_with(&prefix) {
                self.disturbed.insert(l);
            }
        }
    }

    /// Runs until `budget` steps started, everything is terminal, or a step crashes the
    /// "process". Returns true when anything is still active.
    async fn run(&mut self, budget: u32) {
        let engine = self.engine().clone();
        let mut rx = engine.subscribe();
        let probe = engine.clone();
        let shutdown = async move {
            let mut started = 0;
            loop {
                let idle = probe
                    .list(&JobFilter {
                        active_only: true,
                        limit: Some(1),
                        ..Default::default()
                    })
                    .map(|v| v.is_empty())
                    .unwrap_or(true);
                if idle {
                    return;
                }
                match rx.recv().await {
                    Ok(ev) => {
                        if matches!(ev.entry.event, HistoryEvent::StepStarted { .. }) {
                            started += 1;
                            if started >= budget {
                                return;
                            }
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(_) => return,
                }
            }
        };
        let crashed = {
            let run = engine.run(shutdown);
            tokio::pin!(run);
            tokio::select! {
                biased;
                _ = self.world.crash.notified() => true,
                r = &mut run => { r.expect("run"); false }
            }
        };
        if crashed {
            // Whatever else held a lease died with the "process": its recovery count is no
            // longer predictable from its script.
            let crasher = lock(&self.world.crasher).take();
            let running = engine
                .list(&JobFilter {
                    statuses: vec![JobStatus::Running],
                    ..Default::default()
                })
                .expect("list running");
            drop(engine);
            self.close().await;
            for s in running {
                if Some(&s.label) != crasher.as_ref() {
                    self.disturbed.insert(s.label);
                }
            }
            self.open().await;
        }
    }

    fn active(&self) -> usize {
        self.engine()
            .list(&JobFilter {
                active_only: true,
                ..Default::default()
            })
            .expect("list")
            .len()
    }
}

/// Expected final status of an undisturbed job, given its children's actual statuses.
fn expected(script: &Script, children_ok: bool) -> (JobStatus, &'static str) {
    for plan in script {
        if u32::from(plan.crashes) > MAX_RECOVERIES {
            return (JobStatus::Failed, "crash-looped");
        }
        if plan.failures.len() as u32 >= MAX_ATTEMPTS {
            return (JobStatus::Failed, "gave up after 3 attempts");
        }
        match plan.result {
            Res::Permanent => return (JobStatus::Failed, "model: permanent"),
            Res::Complete if children_ok => return (JobStatus::Succeeded, ""),
            Res::Complete => return (JobStatus::PartiallyFailed, ""),
            _ => {}
        }
    }
    (JobStatus::Failed, "script ended")
}

fn plan_strategy(allow_spawn: bool) -> impl Strategy<Value = Plan> {
    let fail = prop_oneof![4 => Just(Fail::Retryable), 1 => Just(Fail::Panic)];
    let leaf = prop::collection::vec(
        (
            prop_oneof![6 => Just(0u8), 2 => Just(1u8), 1 => Just(3u8)],
            prop::collection::vec(fail.clone(), 0..=3),
            prop_oneof![Just(Res::Next), (1u32..7200).prop_map(Res::Wait)],
        )
            .prop_map(|(crashes, failures, result)| Plan {
                crashes,
                failures,
                result,
            }),
        0..3,
    );
    let child_script = (
        leaf.clone(),
        prop_oneof![4 => Just(Res::Complete), 1 => Just(Res::Permanent)],
    )
        .prop_map(|(mut steps, last)| {
            steps.push(Plan {
                crashes: 0,
                failures: Vec::new(),
                result: last,
            });
            steps
        });
    let spawn = prop::collection::vec(child_script, 1..4).prop_map(Res::Spawn);
    let result = if allow_spawn {
        prop_oneof![3 => Just(Res::Next), 2 => (1u32..7200).prop_map(Res::Wait), 2 => spawn].boxed()
    } else {
        prop_oneof![Just(Res::Next), (1u32..7200).prop_map(Res::Wait)].boxed()
    };
    (
        prop_oneof![6 => Just(0u8), 2 => Just(1u8), 1 => Just(3u8)],
        prop::collection::vec(fail, 0..=3),
        result,
    )
        .prop_map(|(crashes, failures, result)| Plan {
            crashes,
            failures,
            result,
        })
}

fn script_strategy() -> impl Strategy<Value = Script> {
    (
        prop::collection::vec(plan_strategy(true), 0..4),
        prop_oneof![4 => Just(Res::Complete), 1 => Just(Res::Permanent)],
        prop::collection::vec(
            prop_oneof![3 => Just(Fail::Retryable), 1 => Just(Fail::Panic)],
            0..=3,
        ),
    )
        .prop_map(|(mut steps, last, failures)| {
            steps.push(Plan {
                crashes: 0,
                failures,
                result: last,
            });
            steps
        })
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => script_strategy().prop_map(Op::Submit),
        4 => (1u8..12).prop_map(Op::Run),
        1 => (0usize..16).prop_map(Op::Cancel),
        1 => (0usize..16).prop_map(Op::Retry),
        1 => Just(Op::Reopen),
    ]
}

fn check_case(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let mut h = Harness {
            world: Arc::new(World::default()),
            dir: common::test_dir(),
            clock: ManualClock::auto_advancing(t0()),
            engine: None,
            seen: Arc::new(Mutex::new(Vec::new())),
            collectors: Vec::new(),
            jobs: Vec::new(),
            disturbed: HashSet::new(),
        };
        h.open().await;
        for op in ops {
            match op {
                Op::Submit(script) => {
                    let label = format!("j{}", h.jobs.len());
                    h.world.add_script(&label, &script);
                    let id = h
                        .engine()
                        .submit::<ModelWf>(MState { step: 0 }, SubmitOptions::label(label.clone()))
                        .expect("submit");
                    h.jobs.push((id, label));
                }
                Op::Run(budget) => h.run(u32::from(budget)).await,
                Op::Cancel(i) => {
                    if let Some((id, label)) = h.jobs.get(i % h.jobs.len().max(1)).cloned() {
                        h.engine().cancel(id).expect("cancel");
                        h.disturb(&label);
                    }
                }
                Op::Retry(i) => {
                    if let Some((id, label)) = h.jobs.get(i % h.jobs.len().max(1)).cloned() {
                        let status = h.engine().job(id).expect("job").expect("exists").status();
                        if status == JobStatus::Failed {
                            h.engine().retry(id).expect("retry");
                            h.disturb(&label);
                        } else if status == JobStatus::PartiallyFailed {
                            // Succeeds when a child failed or was cancelled.
                            if h.engine().retry(id).is_ok() {
                                h.world.repeat_last_step(&label);
                                h.disturb(&label);
                            }
                        } else {
                            prop_assert!(h.engine().retry(id).is_err(), "retry of a {status} job");
                        }
                    }
                }
                Op::Reopen => {
                    h.close().await;
                    h.open().await;
                }
            }
        }
        // Drain: every crash is planned a bounded number of times, so this terminates.
        let mut rounds = 0;
        while h.active() > 0 {
            rounds += 1;
            prop_assert!(rounds < 200, "engine did not drain");
            h.run(u32::MAX).await;
        }
        let engine = h.engine().clone();
        let all = engine.list(&JobFilter::default()).expect("list");
        h.close().await;
        drop(engine);
        h.open().await; // committed state survives a clean reopen too
        let engine = h.engine().clone();
        let violations = lock(&h.world.violations).clone();
        prop_assert!(violations.is_empty(), "{violations:?}");
        let mut views = HashMap::new();
        for s in &all {
            let v = engine.job(s.id).expect("job").expect("job exists");
            prop_assert!(v.status().is_terminal(), "{} ended {}", s.label, v.status());
            let seqs: Vec<u64> = v.history.iter().map(|e| e.seq).collect();
            prop_assert_eq!(seqs, (0..v.history.len() as u64).collect::<Vec<_>>());
            // A terminal entry is the last one, unless the user restarted the job (or a parent
            // or child of it): then the very next entry is `Restarted`. So no step ever follows
            // a terminal state, and a success is final.
            for (i, e) in v.history.iter().enumerate() {
                if e.status.is_terminal() && i + 1 < v.history.len() {
                    prop_assert_ne!(
                        e.status,
                        JobStatus::Succeeded,
                        "{}: left a terminal state",
                        &s.label
                    );
                    prop_assert_eq!(
                        &v.history[i + 1].event,
                        &HistoryEvent::Restarted,
                        "{}: entry after a terminal state",
                        &s.label
                    );
                }
            }
            prop_assert_eq!(v.history.last().map(|e| e.status), Some(v.status()));
            for w in v.history.windows(2) {
                prop_assert!(w[0].at <= w[1].at, "{}: history out of time order", s.label);
            }
            views.insert(s.label.clone(), v);
        }
        drop(engine);
        h.close().await;
        for c in h.collectors.drain(..) {
            c.await.expect("collector");
        }
        let by_id: HashMap<JobId, &JobView> = views.values().map(|v| (v.id(), v)).collect();
        for ev in lock(&h.seen).iter() {
            let v = by_id.get(&ev.id).expect("event for a known job");
            prop_assert_eq!(
                v.history.get(ev.entry.seq as usize),
                Some(&ev.entry),
                "committed transition lost for {}",
                ev.label
            );
        }
        for (label, v) in &views {
            let children_ok = v
                .children
                .iter()
                .all(|c| by_id.get(c).map(|cv| cv.status()) == Some(JobStatus::Succeeded));
            if v.status() == JobStatus::Succeeded {
                prop_assert!(children_ok, "{label}: succeeded although a child did not");
            }
            if h.disturbed.contains(label) {
                continue;
            }
            let script = lock(&h.world.scripts).get(label).cloned().expect("script");
            let (status, reason) = expected(&script, children_ok);
            prop_assert_eq!(
                v.status(),
                status,
                "{}: script {:?}\nhistory {:#?}",
                label,
                script,
                v.history
            );
            if !reason.is_empty() {
                let err = v.summary.last_error.clone().unwrap_or_default();
                prop_assert!(
                    err.contains(reason),
                    "{label}: error {err:?} lacks {reason:?}"
                );
            }
        }
        Ok(())
    })
}

static QUIET_MODEL_PANICS: std::sync::Once = std::sync::Once::new();

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 40,
        max_shrink_iters: 200,
        .. ProptestConfig::default()
    })]

    #[test]
    fn engine_matches_model(ops in prop::collection::vec(op_strategy(), 1..14)) {
        QUIET_MODEL_PANICS.call_once(|| {
            let default_hook = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                let quiet = info.payload().downcast_ref::<&str>().is_some_and(|s| *s == "model panic");
                if !quiet {
                    default_hook(info);
                }
            }));
        });
        check_case(ops)?;
    }
}
