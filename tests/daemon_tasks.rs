//! Scheduled `check` (with data read and test restore) and `forget` (a retention policy with
//! prune) run by the daemon loop on an injected clock, against real snapshot files and the
//! emulator: results land in the verification store, `/metrics` shows the last verified and
//! test-restored times per collection, a failed check raises an alert (and never calls the
//! backup heartbeat), and forget deletes what the policy forgets.

mod restore_support;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use restore_support::*;
use tcb_backup::backup::catalog_store::SnapshotCatalog;
use tcb_backup::backup::settings::AppClients;
use tcb_backup::daemon::alerts::Notifier;
use tcb_backup::daemon::backup::{BackupStatus, TaskLauncher, TaskReporter};
use tcb_backup::daemon::maintenance::{
    MaintenanceOutput, MaintenanceState, MaintenanceTask, MaintenanceWorkflow, PendingTestRestore,
    MAINTENANCE_KIND,
};
use tcb_backup::daemon::metrics::Counters;
use tcb_backup::daemon::runner::Daemon;
use tcb_backup::daemon::scheduler::{ScheduleState, Scheduler, STATE_NAMESPACE};
use tcb_backup::daemon::settings::{
    AlertEvent, AlertFormat, AlertSettings, CheckTask, ForgetTask, OverlapPolicy, ScheduleSpec,
    ScheduleTask, SecretUrl,
};
use tcb_backup::daemon::status::{router, DaemonView, StatusContext};
use tcb_backup::retention::RetentionPolicy;
use tcb_backup::schedule::Schedule;
use tcb_backup::verify::VerificationStore;
use tcb_state::{
    ChildOutcome, Clock, Engine, EngineOptions, JobFilter, JobId, JobStatus, KindLimits,
    ManualClock, StepContext, Transition, Workflow,
};
use tokio::sync::mpsc;

#[derive(Default)]
struct Hooks {
    alerts: Mutex<Vec<serde_json::Value>>,
    heartbeats: AtomicU32,
}

async fn hook_server() -> (String, Arc<Hooks>) {
    let hooks = Arc::new(Hooks::default());
    async fn alert(State(h): State<Arc<Hooks>>, Json(v): Json<serde_json::Value>) -> &'static str {
        h.alerts.lock().unwrap().push(v);
        "ok"
    }
    async fn beat(State(h): State<Arc<Hooks>>) -> &'static str {
        h.heartbeats.fetch_add(1, Ordering::SeqCst);
        "ok"
    }
    let app = Router::new()
        .route("/alert", post(alert))
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

fn spec(name: &str, cron: &str, task: ScheduleTask) -> ScheduleSpec {
    ScheduleSpec {
        name: name.into(),
        schedule: Schedule::new(cron, None).unwrap(),
        task,
        envs: vec![],
        collections: vec![],
        overlap: OverlapPolicy::Skip,
        jitter: Duration::ZERO,
        catch_up_window: Duration::from_secs(3600),
    }
}

fn maintenance_jobs(engine: &Engine) -> Vec<tcb_state::JobSummary> {
    let mut jobs = engine
        .list(&JobFilter {
            kind: Some(MAINTENANCE_KIND.into()),
            ..JobFilter::default()
        })
        .unwrap();
    jobs.sort_by_key(|j| j.id.0);
    jobs
}

/// Moves the injected clock forward in small steps (restore polls wait on it) until the
/// `n`-th maintenance job has ended.
async fn drive_until_done(clock: &ManualClock, engine: &Engine, n: usize) -> JobStatus {
    for _ in 0..4000 {
        if let Some(j) = maintenance_jobs(engine).get(n - 1) {
            if j.status.is_terminal() {
                return j.status;
            }
        }
        clock.advance(Duration::from_millis(20));
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    panic!(
        "maintenance job {n} did not end: {:#?}",
        maintenance_jobs(engine)
    );
}

fn minimal_config(dir: &std::path::Path) -> tcb_backup::config::Config {
    let text = format!(
        "[[apps]]\nappid = \"{APPID}\"\nsecret_env = \"UNUSED_SECRET\"\n\n[[apps.envs]]\nid = \"{ENV}\"\ncollections = [\"orders\", \"users\"]\n"
    );
    tcb_backup::config::load_str(&text, &dir.join("t.toml"), dir).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_check_and_forget() {
    let emu = start_emulator().await;
    let client = client(&emu);
    seed(&emu, ENV, "orders", tricky_documents(30));
    seed(&emu, ENV, "users", tricky_documents(8));
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("snapshots");
    let orders_old = backup(&emu, &client, &root, ENV, "orders").await;
    let orders_new = backup(&emu, &client, &root, ENV, "orders").await;
    let users = backup(&emu, &client, &root, ENV, "users").await;
    assert!(orders_old.manifest.finished_at <= orders_new.manifest.finished_at);

    let clock = ManualClock::new(at("2026-12-03T02:59:00+08:00"));
    let engine = Engine::open(
        &dir.path().join("state"),
        EngineOptions {
            clock: Arc::new(clock.clone()),
            ..EngineOptions::default()
        },
    )
    .unwrap();
    let catalog = SnapshotCatalog::new(engine.kv(SnapshotCatalog::NAMESPACE));
    for e in [&orders_old, &orders_new, &users] {
        catalog
            .record_with_job(&e.manifest, &e.manifest_path, None)
            .unwrap();
    }
    let store = VerificationStore::new(engine.kv(VerificationStore::NAMESPACE));
    engine.register(restore_workflow(&engine, &client), KindLimits::new(2));
    let mut apps = AppClients::new();
    apps.insert(APPID, client.clone(), None);
    let maintenance = MaintenanceWorkflow {
        engine: engine.downgrade(),
        catalog: catalog.clone(),
        store: store.clone(),
        clients: Arc::new(apps),
        identity_file: None,
        destinations: Default::default(),
        copy_policies: Vec::new(),
    };
    engine.register(maintenance.clone(), KindLimits::new(1));

    let specs = vec![
        spec(
            "checks",
            "0 0 3 * * * *",
            ScheduleTask::Check(CheckTask {
                read_data_percent: Some(100.0),
                test_restore: true,
                sample: 5,
            }),
        ),
        spec(
            "retention",
            "0 0 4 * * * *",
            ScheduleTask::Forget(ForgetTask {
                policy: RetentionPolicy {
                    keep_last: 1,
                    ..RetentionPolicy::default()
                },
                prune: true,
            }),
        ),
    ];
    let (hook_base, hooks) = hook_server().await;
    let status = StatusContext {
        engine: engine.clone(),
        clock: engine.clock(),
        source: Arc::new(BackupStatus::new(
            engine.clone(),
            catalog.clone(),
            &minimal_config(dir.path()),
        )),
        counters: Arc::new(Counters::default()),
        view: Arc::new(RwLock::new(DaemonView {
            specs: specs.clone(),
            stale_factor: 1.5,
            started_at: clock.now(),
            recent_fires: VecDeque::new(),
        })),
        token: None,
        run_kind: "backup.run".into(),
    };
    let notifier = Notifier::new(AlertSettings {
        webhook: Some(SecretUrl(format!("{hook_base}/alert"))),
        format: AlertFormat::Json,
        on: vec![AlertEvent::Failure, AlertEvent::Partial],
        heartbeat: Some(SecretUrl(format!("{hook_base}/beat"))),
    })
    .unwrap()
    .with_retry_delay(Duration::ZERO);
    let daemon = Daemon {
        scheduler: Scheduler::new(engine.clone(), specs, TaskLauncher::default()),
        status: status.clone(),
        notifier: Some(notifier),
        reporter: Arc::new(TaskReporter),
        listen: None,
        bound: None,
        reloader: None,
        stale_check_every: Duration::from_secs(7 * 86_400),
        delivery_grace: Duration::from_millis(200),
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (_reload_tx, reload_rx) = mpsc::channel(1);
    let task = tokio::spawn(daemon.run(
        async move {
            let _ = stop_rx.await;
        },
        reload_rx,
    ));
    // The listener, for /metrics.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let ctx = status.clone();
    tokio::spawn(async move { axum::serve(listener, router(ctx)).await.unwrap() });

    // The loop's first tick records the schedules at 02:59 (nothing owed from before); only
    // then does time move, so the 03:00 fire is owed.
    let kv = engine.kv(STATE_NAMESPACE);
    for _ in 0..1000 {
        let checks: Option<ScheduleState> = kv.get("checks").unwrap();
        let retention: Option<ScheduleState> = kv.get("retention").unwrap();
        if checks.is_some() && retention.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(kv.get::<ScheduleState>("retention").unwrap().is_some());
    // 03:00: the check.
    clock.set(at("2026-12-03T03:00:00+08:00"));
    assert_eq!(
        drive_until_done(&clock, &engine, 1).await,
        JobStatus::Succeeded
    );
    let three = time::OffsetDateTime::from(at("2026-12-03T03:00:00+08:00"));
    for e in [&orders_old, &orders_new, &users] {
        let r = store.get(&e.id).unwrap().unwrap();
        assert_eq!(r.last_check_ok, Some(true), "{}", e.id);
        assert!(r.last_checked_at.unwrap() >= three, "{}: {r:?}", e.id);
        assert!(r.last_data_verified_at.is_some(), "{}", e.id);
    }
    // Test restores: the newest snapshot of each collection, compared and dropped.
    for e in [&orders_new, &users] {
        let r = store.get(&e.id).unwrap().unwrap();
        assert_eq!(r.last_test_restore_ok, Some(true), "{}: {r:?}", e.id);
        assert!(r.last_test_restored_at.unwrap() >= three);
    }
    assert_eq!(
        store
            .get(&orders_old.id)
            .unwrap()
            .unwrap()
            .last_test_restored_at,
        None
    );
    let left: Vec<String> = emu
        .control()
        .collections(ENV)
        .unwrap()
        .into_iter()
        .filter(|c| c.contains("_verify_"))
        .collect();
    assert!(left.is_empty(), "scratch collections left: {left:?}");
    // The judging step repeated (as after a crash once the scratch collections are dropped)
    // takes the recorded results instead of reporting the missing scratch collection.
    let check_task = MaintenanceTask::of(&spec(
        "checks",
        "0 0 3 * * * *",
        ScheduleTask::Check(CheckTask {
            read_data_percent: None,
            test_restore: true,
            sample: 5,
        }),
    ))
    .unwrap();
    let again = maintenance
        .step(
            StepContext {
                job_id: JobId(999),
                attempt: 1,
                parent: None,
                label: "repeat".into(),
                now: clock.now(),
                children: vec![ChildOutcome {
                    id: JobId(998),
                    kind: "restore.collection".into(),
                    label: String::new(),
                    status: JobStatus::Succeeded,
                    output: None,
                    error: None,
                }],
            },
            MaintenanceState::TestRestoring {
                task: check_task,
                checked: MaintenanceOutput {
                    task: "check".into(),
                    ok: true,
                    summary: "check".into(),
                    problems: vec![],
                },
                restores: vec![PendingTestRestore {
                    snapshot_id: orders_new.id.clone(),
                    env: ENV.into(),
                    scratch_collection: "orders_verify_gone".into(),
                    sample: 5,
                    planned_at: three,
                }],
            },
        )
        .await
        .unwrap();
    let Transition::Complete { output, .. } = again else {
        panic!("{again:?}")
    };
    assert_eq!(output["ok"], true, "{output:#}");

    // A passing check neither alerts nor calls the backup heartbeat.
    assert!(hooks.alerts.lock().unwrap().is_empty());
    assert_eq!(hooks.heartbeats.load(Ordering::SeqCst), 0);

    let metrics = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for collection in ["orders", "users"] {
        for name in [
            "tcb_backup_last_verified_timestamp_seconds",
            "tcb_backup_last_test_restore_timestamp_seconds",
        ] {
            let prefix =
                format!("{name}{{appid=\"{APPID}\",env=\"{ENV}\",collection=\"{collection}\"}} ");
            let line = metrics
                .lines()
                .find(|l| l.starts_with(&prefix))
                .unwrap_or_else(|| panic!("no {prefix} in\n{metrics}"));
            let value: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
            assert!(value >= three.unix_timestamp() as f64, "{line}");
            assert!(value < three.unix_timestamp() as f64 + 3600.0, "{line}");
        }
    }

    // 04:00: forget keeps the newest orders snapshot and prunes the older one.
    clock.set(at("2026-12-03T04:00:00+08:00"));
    assert_eq!(
        drive_until_done(&clock, &engine, 2).await,
        JobStatus::Succeeded
    );
    assert!(!orders_old.data_path.exists() && !orders_old.manifest_path.exists());
    assert!(orders_new.data_path.exists() && users.data_path.exists());
    assert!(catalog.get(&orders_old.id).unwrap().is_none());
    assert!(catalog.get(&orders_new.id).unwrap().is_some());
    assert!(store.get(&orders_old.id).unwrap().is_none());

    // The users snapshot rots; the next day's check fails and alerts.
    let mut bytes = std::fs::read(&users.data_path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&users.data_path, bytes).unwrap();
    clock.set(at("2026-12-04T03:00:00+08:00"));
    assert_eq!(
        drive_until_done(&clock, &engine, 3).await,
        JobStatus::PartiallyFailed
    );
    let r = store.get(&users.id).unwrap().unwrap();
    assert_eq!(r.last_check_ok, Some(false));
    assert!(r.last_error.is_some());
    let alert = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(a) = hooks.alerts.lock().unwrap().first().cloned() {
                return a;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("an alert for the failed check");
    assert_eq!(alert["event"], "failure");
    assert_eq!(alert["task"], "check");
    assert_eq!(alert["title"], "scheduled check failed");
    assert_eq!(alert["schedule"], "schedule checks @ 2026-12-03T19:00:00Z");
    let items = alert["items"].as_array().unwrap();
    assert!(
        items
            .iter()
            .any(|i| i["collection"] == "users" && i["status"] == "check failed"),
        "{alert:#}"
    );
    assert!(alert["summary"].as_str().unwrap().contains("1 failed"));
    assert_eq!(hooks.heartbeats.load(Ordering::SeqCst), 0);

    stop_tx.send(()).unwrap();
    task.await.unwrap().unwrap();
    emu.shutdown().await;
}
