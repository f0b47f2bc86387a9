//! The daemon loop on a manual clock (time moves only when the test says so): a fire at the
//! nominal time starts a run, a successful run calls the heartbeat, a failed one posts an
//! alert; a graceful shutdown in the middle of a run lets the running step commit, and the next
//! start resumes the run to completion without starting it again; a run whose end the loop's
//! event subscription dropped (lagged) is still found and alerted on, once; a webhook that
//! never answers holds back neither the next fire nor the shutdown.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tcb_backup::daemon::alerts::Notifier;
use tcb_backup::daemon::freshness::{CollectionStatus, StatusSource};
use tcb_backup::daemon::metrics::Counters;
use tcb_backup::daemon::runner::{Daemon, StatusOnlyReporter};
use tcb_backup::daemon::scheduler::{Fire, Launcher, Scheduler};
use tcb_backup::daemon::settings::{
    AlertEvent, AlertFormat, AlertSettings, OverlapPolicy, ScheduleSpec, ScheduleTask, SecretUrl,
};
use tcb_backup::daemon::status::{DaemonView, StatusContext};
use tcb_backup::schedule::Schedule;
use tcb_state::{
    Engine, EngineError, EngineOptions, JobFilter, JobId, JobStatus, KindLimits, ManualClock,
    StepContext, StepError, SubmitOptions, Transition, Workflow,
};
use tokio::sync::{mpsc, oneshot, Notify};

/// Two steps; the second may hang (held at a gate), succeed or fail.
#[derive(Clone)]
struct GatedRun {
    gate: Arc<Gate>,
}

#[derive(Default)]
struct Gate {
    hold: Mutex<bool>,
    entered: Notify,
    first_steps: AtomicU32,
    second_steps: AtomicU32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
enum RunStep {
    First { fail: bool },
    Second { fail: bool },
}

impl Workflow for GatedRun {
    type State = RunStep;
    const KIND: &'static str = "test.run";
    const SCHEMA_VERSION: u32 = 1;
    async fn step(&self, _ctx: StepContext, s: RunStep) -> Result<Transition<RunStep>, StepError> {
        match s {
            RunStep::First { fail } => {
                self.gate.first_steps.fetch_add(1, Ordering::SeqCst);
                Ok(Transition::Next(RunStep::Second { fail }))
            }
            RunStep::Second { fail } => {
                self.gate.second_steps.fetch_add(1, Ordering::SeqCst);
                let held = *self.gate.hold.lock().unwrap();
                if held {
                    // Never opened in the test: the step outlives the shutdown grace.
                    self.gate.entered.notify_one();
                    std::future::pending::<()>().await;
                }
                if fail {
                    Err(StepError::permanent("export failed: errcode -501007"))
                } else {
                    Ok(Transition::Complete {
                        state: RunStep::Second { fail },
                        output: serde_json::json!({}),
                    })
                }
            }
        }
    }
}

struct GatedLauncher {
    fail: bool,
}

impl Launcher for GatedLauncher {
    fn launch(&self, engine: &Engine, _: &ScheduleSpec, fire: &Fire) -> Result<JobId, EngineError> {
        engine.submit::<GatedRun>(
            RunStep::First { fail: self.fail },
            SubmitOptions {
                label: fire.label.clone(),
                dedupe_key: Some(fire.dedupe_key.clone()),
                run_at: Some(fire.start_at),
                ..SubmitOptions::default()
            },
        )
    }
}

struct NoCollections;
impl StatusSource for NoCollections {
    fn collections(&self) -> Result<Vec<CollectionStatus>, String> {
        Ok(vec![])
    }
    fn catalog(&self) -> Result<serde_json::Value, String> {
        Ok(serde_json::json!([]))
    }
}

#[derive(Default)]
struct Hooks {
    alerts: Mutex<Vec<serde_json::Value>>,
    heartbeats: AtomicU32,
    changed: Notify,
}

async fn hook_server() -> (String, Arc<Hooks>) {
    let hooks = Arc::new(Hooks::default());
    async fn alert(State(h): State<Arc<Hooks>>, Json(v): Json<serde_json::Value>) -> &'static str {
        h.alerts.lock().unwrap().push(v);
        h.changed.notify_waiters();
        "ok"
    }
    /// A webhook that takes the request and never answers.
    async fn hang(State(h): State<Arc<Hooks>>, Json(v): Json<serde_json::Value>) -> &'static str {
        h.alerts.lock().unwrap().push(v);
        h.changed.notify_waiters();
        std::future::pending::<()>().await;
        "never"
    }
    async fn beat(State(h): State<Arc<Hooks>>) -> &'static str {
        h.heartbeats.fetch_add(1, Ordering::SeqCst);
        h.changed.notify_waiters();
        "ok"
    }
    let app = Router::new()
        .route("/alert", post(alert))
        .route("/hang", post(hang))
        .route("/beat", get(beat))
        .with_state(hooks.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), hooks)
}

fn at(text: &str) -> SystemTime {
    let ts: jiff::Timestamp = text.parse().unwrap();
    SystemTime::try_from(ts).unwrap()
}

fn nightly() -> ScheduleSpec {
    ScheduleSpec {
        name: "nightly".into(),
        schedule: Schedule::new("0 0 2 * * * *", None).unwrap(),
        task: ScheduleTask::Backup,
        envs: vec![],
        collections: vec![],
        overlap: OverlapPolicy::Skip,
        jitter: Duration::ZERO,
        catch_up_window: Duration::from_secs(3600),
    }
}

fn open(dir: &std::path::Path, clock: &ManualClock, gate: &Arc<Gate>) -> Engine {
    open_with(dir, clock, gate, EngineOptions::default().event_capacity)
}

fn open_with(
    dir: &std::path::Path,
    clock: &ManualClock,
    gate: &Arc<Gate>,
    event_capacity: usize,
) -> Engine {
    let engine = Engine::open(
        dir,
        EngineOptions {
            clock: Arc::new(clock.clone()),
            // The hung step of the shutdown test is abandoned after this (real) deadline.
            shutdown_grace: Duration::from_millis(300),
            event_capacity,
            ..EngineOptions::default()
        },
    )
    .unwrap();
    engine.register(GatedRun { gate: gate.clone() }, KindLimits::new(2));
    engine
}

fn daemon(engine: &Engine, fail: bool, alerts: Option<AlertSettings>) -> Daemon<GatedLauncher> {
    let clock = engine.clock();
    Daemon {
        scheduler: Scheduler::new(engine.clone(), vec![nightly()], GatedLauncher { fail }),
        status: StatusContext {
            engine: engine.clone(),
            clock: clock.clone(),
            source: Arc::new(NoCollections),
            counters: Arc::new(Counters::default()),
            view: Arc::new(RwLock::new(DaemonView {
                specs: vec![nightly()],
                stale_factor: 1.5,
                started_at: clock.now(),
                recent_fires: VecDeque::new(),
            })),
            token: None,
            run_kind: "test.run".into(),
        },
        notifier: alerts.map(|a| Notifier::new(a).unwrap().with_retry_delay(Duration::ZERO)),
        reporter: Arc::new(StatusOnlyReporter),
        listen: None,
        bound: None,
        reloader: None,
        stale_check_every: Duration::from_secs(3600),
        delivery_grace: Duration::from_millis(200),
    }
}

fn runs(engine: &Engine) -> Vec<tcb_state::JobSummary> {
    engine
        .list(&JobFilter {
            kind: Some("test.run".into()),
            ..JobFilter::default()
        })
        .unwrap()
}

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), f)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// Waits until `cond` holds, re-checking whenever the hook server saw a request.
async fn until(hooks: &Hooks, what: &str, cond: impl Fn() -> bool) {
    within(what, async {
        loop {
            let changed = hooks.changed.notified();
            if cond() {
                return;
            }
            changed.await;
        }
    })
    .await;
}

fn alert_settings(base: &str) -> AlertSettings {
    AlertSettings {
        webhook: Some(SecretUrl(format!("{base}/alert"))),
        format: AlertFormat::Json,
        on: vec![AlertEvent::Failure, AlertEvent::Partial, AlertEvent::Stale],
        heartbeat: Some(SecretUrl(format!("{base}/beat"))),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fires_at_the_nominal_time_and_calls_the_heartbeat() {
    let (base, hooks) = hook_server().await;
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(at("2026-12-03T01:59:00+08:00"));
    let gate = Arc::new(Gate::default());
    let engine = open(dir.path(), &clock, &gate);
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let (_reload_tx, reload_rx) = mpsc::channel(1);
    let d = daemon(&engine, false, Some(alert_settings(&base)));
    let task = tokio::spawn(d.run(
        async {
            let _ = stop_rx.await;
        },
        reload_rx,
    ));
    // Before 02:00 nothing runs; the first tick only records the schedule.
    let mut events = engine.subscribe();
    clock.set(at("2026-12-03T02:00:00+08:00"));
    let ev = within("the run to be submitted", async {
        events.recv().await.unwrap()
    })
    .await;
    assert_eq!(ev.kind, "test.run");
    until(&hooks, "the heartbeat", || {
        hooks.heartbeats.load(Ordering::SeqCst) == 1
    })
    .await;
    assert!(hooks.alerts.lock().unwrap().is_empty());
    let all = runs(&engine);
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].status, JobStatus::Succeeded);
    let _ = stop_tx.send(());
    within("the daemon to stop", task).await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_run_posts_an_alert_and_no_heartbeat() {
    let (base, hooks) = hook_server().await;
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(at("2026-12-03T02:00:00+08:00"));
    let gate = Arc::new(Gate::default());
    let engine = open(dir.path(), &clock, &gate);
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let (_reload_tx, reload_rx) = mpsc::channel(1);
    let task = tokio::spawn(daemon(&engine, true, Some(alert_settings(&base))).run(
        async {
            let _ = stop_rx.await;
        },
        reload_rx,
    ));
    until(&hooks, "the alert", || {
        !hooks.alerts.lock().unwrap().is_empty()
    })
    .await;
    let alert = hooks.alerts.lock().unwrap()[0].clone();
    assert_eq!(alert["event"], "failure");
    assert!(alert["schedule"]
        .as_str()
        .unwrap()
        .starts_with("schedule nightly @"));
    assert_eq!(hooks.heartbeats.load(Ordering::SeqCst), 0);
    let _ = stop_tx.send(());
    within("the daemon to stop", task).await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_mid_run_then_resume_to_completion() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(at("2026-12-03T02:00:00+08:00"));
    let gate = Arc::new(Gate::default());
    *gate.hold.lock().unwrap() = true;
    let job;
    {
        let engine = open(dir.path(), &clock, &gate);
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (_reload_tx, reload_rx) = mpsc::channel(1);
        let entered = gate.entered.notified();
        let task = tokio::spawn(daemon(&engine, false, None).run(
            async {
                let _ = stop_rx.await;
            },
            reload_rx,
        ));
        within("the second step to start", entered).await;
        // SIGTERM while the second step hangs: the daemon waits out the grace, then exits.
        let _ = stop_tx.send(());
        within("the daemon to stop", task).await.unwrap().unwrap();
        let all = runs(&engine);
        assert_eq!(all.len(), 1);
        job = all[0].id;
        assert!(!all[0].status.is_terminal(), "{:?}", all[0].status);
        assert_eq!(gate.first_steps.load(Ordering::SeqCst), 1);
        assert_eq!(gate.second_steps.load(Ordering::SeqCst), 1);
    }

    // Restart 30 s later: the run resumes at its second step (the first is checkpointed);
    // no second run starts.
    *gate.hold.lock().unwrap() = false;
    clock.set(at("2026-12-03T02:00:30+08:00"));
    // In-process, the aborted step's task releases its engine handle (and the store lock)
    // asynchronously; a real restart is a new process. Wait for the lock, bounded.
    let engine = reopen(dir.path(), &clock, &gate).await;
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let (_reload_tx, reload_rx) = mpsc::channel(1);
    let task = tokio::spawn(daemon(&engine, false, None).run(
        async {
            let _ = stop_rx.await;
        },
        reload_rx,
    ));
    let view = within("the run to finish", engine.wait(job)).await.unwrap();
    assert_eq!(view.status(), JobStatus::Succeeded);
    assert_eq!(
        gate.first_steps.load(Ordering::SeqCst),
        1,
        "step 1 not repeated"
    );
    assert_eq!(
        gate.second_steps.load(Ordering::SeqCst),
        2,
        "the abandoned step ran again"
    );
    assert_eq!(runs(&engine).len(), 1, "the restart started no second run");
    let _ = stop_tx.send(());
    within("the daemon to stop", task).await.unwrap().unwrap();
}

/// A one-step job of a kind the daemon does not watch: it only makes events.
struct Noise;

impl Workflow for Noise {
    type State = ();
    const KIND: &'static str = "test.noise";
    const SCHEMA_VERSION: u32 = 1;
    async fn step(&self, _ctx: StepContext, _s: ()) -> Result<Transition<()>, StepError> {
        Ok(Transition::Complete {
            state: (),
            output: serde_json::json!({}),
        })
    }
}

async fn ended(engine: &Engine, job: JobId) -> JobStatus {
    within("the job to end", async {
        loop {
            let status = engine.job(job).unwrap().unwrap().status();
            if status.is_terminal() {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
}

/// While the loop is busy (held in a reload that blocks until the test lets go), another run
/// fails and more events follow on a subscription of capacity 1, so the run's end is among the
/// dropped events: the loop notices the lag, finds the run in the store and alerts on it — once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_ends_while_events_lag_is_still_alerted() {
    let (base, hooks) = hook_server().await;
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(at("2026-12-03T02:00:00+08:00"));
    let gate = Arc::new(Gate::default());
    let engine = open_with(dir.path(), &clock, &gate, 1);
    engine.register(Noise, KindLimits::default());
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let (reload_tx, reload_rx) = mpsc::channel(1);
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let release_rx = Mutex::new(release_rx);
    let held = Arc::new(Notify::new());
    let mut d = daemon(&engine, true, Some(alert_settings(&base)));
    d.reloader = Some(Box::new({
        let held = held.clone();
        move || {
            held.notify_one();
            // Blocks the loop (its worker handed over, so the engine keeps running).
            tokio::task::block_in_place(|| {
                let _ = release_rx.lock().unwrap().recv();
            });
            Err("held by the test".to_string())
        }
    }));
    let task = tokio::spawn(d.run(
        async {
            let _ = stop_rx.await;
        },
        reload_rx,
    ));
    // The scheduled run fails and is alerted on.
    until(&hooks, "the first alert", || {
        hooks.alerts.lock().unwrap().len() == 1
    })
    .await;
    // Hold the loop.
    let entered = held.notified();
    reload_tx.send(()).await.unwrap();
    within("the loop to be held", entered).await;
    let second = engine
        .submit::<GatedRun>(
            RunStep::First { fail: true },
            SubmitOptions::label("schedule nightly @ by hand"),
        )
        .unwrap();
    assert_eq!(ended(&engine, second).await, JobStatus::Failed);
    let noise = engine
        .submit::<Noise>((), SubmitOptions::default())
        .unwrap();
    assert_eq!(ended(&engine, noise).await, JobStatus::Succeeded);
    release_tx.send(()).unwrap();
    until(&hooks, "the second run's alert", || {
        hooks.alerts.lock().unwrap().len() >= 2
    })
    .await;
    let runs: Vec<u64> = hooks
        .alerts
        .lock()
        .unwrap()
        .iter()
        .map(|a| a["run"].as_u64().unwrap())
        .collect();
    assert_eq!(runs[1], second.0, "{runs:?}");
    let _ = stop_tx.send(());
    within("the daemon to stop", task).await.unwrap().unwrap();
    assert_eq!(
        hooks.alerts.lock().unwrap().len(),
        2,
        "each run alerted once"
    );
}

/// Two collections: `orders` last backed up three days ago, `users` last night.
struct OneStale;
impl StatusSource for OneStale {
    fn collections(&self) -> Result<Vec<CollectionStatus>, String> {
        let row = |collection: &str, last: &str| CollectionStatus {
            appid: "wx1".into(),
            env: "prod".into(),
            collection: collection.into(),
            last_success: Some(at(last)),
            ..CollectionStatus::default()
        };
        Ok(vec![
            row("orders", "2026-11-30T02:05:00+08:00"),
            row("users", "2026-12-03T02:05:00+08:00"),
        ])
    }
    fn catalog(&self) -> Result<serde_json::Value, String> {
        Ok(serde_json::json!([]))
    }
}

/// The loop's freshness check posts one `stale` alert naming the stale collection only, and
/// does not repeat it at the next check while the collection stays stale.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_collection_is_alerted_once() {
    let (base, hooks) = hook_server().await;
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(at("2026-12-03T10:00:00+08:00"));
    let gate = Arc::new(Gate::default());
    let engine = open(dir.path(), &clock, &gate);
    let mut d = daemon(&engine, false, Some(alert_settings(&base)));
    d.status.source = Arc::new(OneStale);
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let (_reload_tx, reload_rx) = mpsc::channel(1);
    let task = tokio::spawn(d.run(
        async {
            let _ = stop_rx.await;
        },
        reload_rx,
    ));
    until(&hooks, "the stale alert", || {
        !hooks.alerts.lock().unwrap().is_empty()
    })
    .await;
    let alert = hooks.alerts.lock().unwrap()[0].clone();
    assert_eq!(alert["event"], "stale");
    let items = alert["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{alert:#}");
    assert_eq!(items[0]["collection"], "orders");
    assert!(
        items[0]["detail"].as_str().unwrap().contains("3d"),
        "{alert:#}"
    );
    // At 02:00 the loop fires the nightly run and checks freshness again (a check is due
    // every hour) in the same pass, before the run ends: orders is still stale, no new alert.
    let mut events = engine.subscribe();
    clock.set(at("2026-12-04T02:00:00+08:00"));
    within("the nightly run", async { events.recv().await.unwrap() }).await;
    until(&hooks, "the heartbeat", || {
        hooks.heartbeats.load(Ordering::SeqCst) == 1
    })
    .await;
    assert_eq!(hooks.alerts.lock().unwrap().len(), 1, "alerted once");
    let _ = stop_tx.send(());
    within("the daemon to stop", task).await.unwrap().unwrap();
}

/// A webhook that takes the alert and never answers: the next scheduled fire still starts on
/// time, and a shutdown is prompt (the pending deliveries get `delivery_grace`, then are
/// dropped) — not the ~50 s of attempts × HTTP timeout the delivery would otherwise take.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_that_never_answers_delays_neither_fires_nor_shutdown() {
    let (base, hooks) = hook_server().await;
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(at("2026-12-03T02:00:00+08:00"));
    let gate = Arc::new(Gate::default());
    let engine = open(dir.path(), &clock, &gate);
    let mut settings = alert_settings(&base);
    settings.webhook = Some(SecretUrl(format!("{base}/hang")));
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let (_reload_tx, reload_rx) = mpsc::channel(1);
    let task = tokio::spawn(daemon(&engine, true, Some(settings)).run(
        async {
            let _ = stop_rx.await;
        },
        reload_rx,
    ));
    // The first run fails; its alert is now stuck on the webhook.
    until(&hooks, "the first alert to reach the webhook", || {
        hooks.alerts.lock().unwrap().len() == 1
    })
    .await;
    // The next night's fire starts at once, not after the stuck delivery.
    let mut events = engine.subscribe();
    clock.set(at("2026-12-04T02:00:00+08:00"));
    let ev = tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .expect("the next fire was held back by the stuck webhook")
        .unwrap();
    assert_eq!(ev.kind, "test.run");
    assert_eq!(runs(&engine).len(), 2);
    until(&hooks, "the second alert to reach the webhook", || {
        hooks.alerts.lock().unwrap().len() == 2
    })
    .await;
    // Both deliveries still hang; the stop does not wait for them.
    let asked = std::time::Instant::now();
    let _ = stop_tx.send(());
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the shutdown waited on the stuck webhook")
        .unwrap()
        .unwrap();
    assert!(asked.elapsed() < Duration::from_secs(5));
}

/// `orders`, last backed up at a time the test changes; counts the freshness checks.
#[derive(Default)]
struct Switchable {
    orders_last: Mutex<String>,
    checks: AtomicU32,
}

impl StatusSource for Switchable {
    fn collections(&self) -> Result<Vec<CollectionStatus>, String> {
        let last = self.orders_last.lock().unwrap().clone();
        self.checks.fetch_add(1, Ordering::SeqCst);
        Ok(vec![CollectionStatus {
            appid: "wx1".into(),
            env: "prod".into(),
            collection: "orders".into(),
            last_success: Some(at(&last)),
            ..CollectionStatus::default()
        }])
    }
    fn catalog(&self) -> Result<serde_json::Value, String> {
        Ok(serde_json::json!([]))
    }
}

async fn checks_reach(source: &Switchable, n: u32) {
    within("a freshness check", async {
        while source.checks.load(Ordering::SeqCst) < n {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

/// Opens the store again once the previous daemon's engine has let go of it.
async fn reopen(dir: &std::path::Path, clock: &ManualClock, gate: &Arc<Gate>) -> Engine {
    let engine = within("the store lock to be released", async {
        loop {
            match Engine::open(
                dir,
                EngineOptions {
                    clock: Arc::new(clock.clone()),
                    ..EngineOptions::default()
                },
            ) {
                Ok(e) => break e,
                Err(EngineError::Locked { .. }) => {
                    tokio::time::sleep(Duration::from_millis(10)).await
                }
                Err(e) => panic!("{e}"),
            }
        }
    })
    .await;
    engine.register(GatedRun { gate: gate.clone() }, KindLimits::new(2));
    engine
}

/// The stale alert is remembered in the store: a restart while the collection is still stale
/// (same last success) does not alert again; once it has been fresh, a new staleness does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_does_not_repeat_a_stale_alert() {
    let (base, hooks) = hook_server().await;
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(at("2026-12-03T10:00:00+08:00"));
    let gate = Arc::new(Gate::default());
    let source = Arc::new(Switchable::default());
    *source.orders_last.lock().unwrap() = "2026-11-30T02:05:00+08:00".into();
    let start = |engine: &Engine| {
        let mut d = daemon(engine, false, Some(alert_settings(&base)));
        d.status.source = source.clone();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (reload_tx, reload_rx) = mpsc::channel(1);
        let task = tokio::spawn(d.run(
            async {
                let _ = stop_rx.await;
            },
            reload_rx,
        ));
        (stop_tx, reload_tx, task)
    };

    let engine = open(dir.path(), &clock, &gate);
    let (stop_tx, _reload, task) = start(&engine);
    until(&hooks, "the stale alert", || {
        hooks.alerts.lock().unwrap().len() == 1
    })
    .await;
    let _ = stop_tx.send(());
    within("the daemon to stop", task).await.unwrap().unwrap();
    drop(engine);

    // Restart an hour later: orders is still stale with the same last success.
    clock.set(at("2026-12-03T10:30:00+08:00"));
    let engine = reopen(dir.path(), &clock, &gate).await;
    let before = source.checks.load(Ordering::SeqCst);
    let (stop_tx, _reload, task) = start(&engine);
    checks_reach(&source, before + 1).await;
    // Fresh at the next check (a backup happened): the episode ends.
    *source.orders_last.lock().unwrap() = "2026-12-03T02:05:00+08:00".into();
    clock.set(at("2026-12-03T11:30:00+08:00"));
    checks_reach(&source, before + 2).await;
    // Stale again, with another last success: a new episode, alerted.
    *source.orders_last.lock().unwrap() = "2026-12-01T02:05:00+08:00".into();
    clock.set(at("2026-12-03T12:30:00+08:00"));
    until(&hooks, "the new episode's alert", || {
        hooks.alerts.lock().unwrap().len() >= 2
    })
    .await;
    let _ = stop_tx.send(());
    within("the daemon to stop", task).await.unwrap().unwrap();
    let alerts = hooks.alerts.lock().unwrap().clone();
    assert_eq!(alerts.len(), 2, "no repeat after the restart: {alerts:#?}");
    let detail = alerts[1]["items"][0]["detail"].as_str().unwrap();
    assert!(detail.starts_with("last success 2d"), "{detail}");
}
