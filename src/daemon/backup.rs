//! The daemon wired to the backup workflow: a fire submits a `backup.run` for the schedule's
//! selection, a finished run is judged from its report, status rows come from the snapshot
//! catalog and the `backup.collection` jobs, and [`run_from_config`] assembles it all from a
//! configuration file (what `tcb-backup daemon` calls).

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use tcb_state::{Engine, EngineError, JobFilter, JobId, JobStatus, KindLimits, SubmitOptions};
use tokio::sync::{mpsc, oneshot};

use super::alerts::{AlertItem, Notifier};
use super::freshness::{CollectionStatus, StatusSource};
use super::maintenance::{
    MaintenanceOutput, MaintenanceState, MaintenanceTask, MaintenanceWork, MaintenanceWorkflow,
    MAINTENANCE_KIND,
};
use super::metrics::Counters;
use super::runner::{Daemon, RunOutcome, RunReporter, RunSummary};
use super::scheduler::{Fire, Launcher, Scheduler};
use super::settings::{self, DaemonSettings, ProcessEnv, ScheduleSpec};
use super::status::{DaemonView, StatusContext};
use crate::backup::catalog_store::SnapshotCatalog;
use crate::backup::progress::NoProgress;
use crate::backup::report::run_report;
use crate::backup::run::RunWorkflow;
use crate::backup::service::BackupService;
use crate::backup::settings::AppClients;
use crate::backup::setup;
use crate::backup::state::{RunSelection, RunState};
use crate::config::{CollectionSelection, Config};
use crate::restore::setup::register_restore;
use crate::verify::VerificationStore;

/// The engine kind of a backup run.
pub const RUN_KIND: &str = "backup.run";
/// The engine kind of one collection's backup.
pub const COLLECTION_KIND: &str = "backup.collection";

/// Submits what a fire asks for: a `backup.run` for a backup schedule, a
/// `daemon.maintenance` job for a check or forget schedule. Before a backup it catches up on
/// copies (`BackupService::catch_up_copies`: copies that gave up are submitted again, those
/// backing off are tried now), as `tcb-backup backup` does; the service is the one the
/// reloads reconfigure, so the copy plan is always the current one.
#[derive(Clone, Default)]
pub struct TaskLauncher {
    pub service: Option<Arc<Mutex<BackupService>>>,
}

impl Launcher for TaskLauncher {
    fn launch(
        &self,
        engine: &Engine,
        spec: &ScheduleSpec,
        fire: &Fire,
    ) -> Result<JobId, EngineError> {
        let options = SubmitOptions {
            label: fire.label.clone(),
            dedupe_key: Some(fire.dedupe_key.clone()),
            run_at: Some(fire.start_at),
            ..SubmitOptions::default()
        };
        match MaintenanceTask::of(spec) {
            Some(task) => {
                engine.submit::<MaintenanceWorkflow>(MaintenanceState::Start(task), options)
            }
            None => {
                self.catch_up_copies();
                engine.submit::<RunWorkflow>(
                    RunState::Start {
                        selection: RunSelection {
                            envs: spec.envs.clone(),
                            collections: spec.collections.clone(),
                        },
                    },
                    options,
                )
            }
        }
    }
}

impl TaskLauncher {
    /// Catches up on copies through the shared service (nothing without one).
    pub fn catch_up_copies(&self) {
        let Some(service) = &self.service else {
            return;
        };
        let service = service.lock().unwrap_or_else(|p| p.into_inner());
        match service.catch_up_copies() {
            Ok(c) if c == Default::default() => {}
            Ok(c) => tracing::info!(
                restarted = c.restarted,
                submitted = c.submitted,
                "copies caught up"
            ),
            Err(e) => tracing::warn!(error = %e, "cannot catch up on copies"),
        }
    }
}

/// Judges a finished backup run from its report (per-collection rows), and a finished check
/// or forget from its output.
pub struct TaskReporter;

impl RunReporter for TaskReporter {
    fn watches(&self, kind: &str) -> bool {
        kind == MAINTENANCE_KIND
    }

    fn summarize(&self, engine: &Engine, run: JobId) -> Option<RunSummary> {
        let view = engine.job(run).ok()??;
        if view.summary.kind == MAINTENANCE_KIND {
            return Some(summarize_maintenance(&view));
        }
        let report = run_report(engine, run).ok()?;
        let outcome = if report.status == JobStatus::Cancelled {
            RunOutcome::Cancelled
        } else if report.all_succeeded() {
            RunOutcome::Succeeded
        } else if report.succeeded > 0 {
            RunOutcome::Partial
        } else {
            RunOutcome::Failed
        };
        let mut problems: Vec<AlertItem> = report
            .collections
            .iter()
            .filter(|r| r.status != JobStatus::Succeeded)
            .map(|r| AlertItem {
                env: r.env.clone(),
                collection: r.collection.clone(),
                status: r.status.to_string(),
                detail: r.error.clone(),
            })
            .collect();
        if problems.is_empty() && outcome != RunOutcome::Succeeded {
            problems.push(AlertItem {
                env: String::new(),
                collection: String::new(),
                status: report.status.to_string(),
                detail: report.error.clone(),
            });
        }
        Some(RunSummary {
            outcome,
            summary: format!(
                "run {}: {} succeeded, {} failed, {} unfinished",
                report.run, report.succeeded, report.failed, report.unfinished
            ),
            problems,
            task: "backup",
        })
    }
}

/// A check or forget job, judged from its output.
fn summarize_maintenance(view: &tcb_state::JobView) -> RunSummary {
    let output: Option<MaintenanceOutput> = view
        .output
        .clone()
        .and_then(|o| serde_json::from_value(o).ok());
    let status = view.summary.status;
    let is_forget = matches!(
        serde_json::from_value::<MaintenanceState>(view.state.clone()),
        Ok(MaintenanceState::Start(MaintenanceTask {
            work: MaintenanceWork::Forget(_),
            ..
        }))
    );
    let task = if is_forget { "forget" } else { "check" };
    match output {
        Some(out) => RunSummary {
            outcome: if status == JobStatus::Cancelled {
                RunOutcome::Cancelled
            } else if out.ok && status == JobStatus::Succeeded {
                RunOutcome::Succeeded
            } else {
                RunOutcome::Failed
            },
            summary: out.summary,
            problems: out.problems,
            task,
        },
        None => RunSummary {
            outcome: if status == JobStatus::Cancelled {
                RunOutcome::Cancelled
            } else {
                RunOutcome::Failed
            },
            summary: format!("{}: {status}", view.summary.label),
            problems: vec![AlertItem {
                env: String::new(),
                collection: String::new(),
                status: status.to_string(),
                detail: view.summary.last_error.clone(),
            }],
            task,
        },
    }
}

/// Status rows from the catalog, the verification records, the collection jobs and the
/// configured collections.
pub struct BackupStatus {
    pub engine: Engine,
    pub catalog: SnapshotCatalog,
    pub verification: VerificationStore,
    /// (appid, env, collection) named explicitly in the config: shown even before a backup.
    configured: RwLock<Vec<(String, String, String)>>,
}

impl BackupStatus {
    pub fn new(engine: Engine, catalog: SnapshotCatalog, config: &Config) -> Self {
        let verification = VerificationStore::new(engine.kv(VerificationStore::NAMESPACE));
        let status = BackupStatus {
            engine,
            catalog,
            verification,
            configured: RwLock::new(Vec::new()),
        };
        status.set_config(config);
        status
    }

    /// Takes the explicitly configured collections of `config` (on start and reload).
    pub fn set_config(&self, config: &Config) {
        let mut configured = Vec::new();
        for app in &config.apps {
            for env in &app.envs {
                if let CollectionSelection::Explicit(names) = &env.collections {
                    for n in names {
                        configured.push((app.appid.clone(), env.id.clone(), n.clone()));
                    }
                }
            }
        }
        *self.configured.write().unwrap_or_else(|p| p.into_inner()) = configured;
    }
}

fn offset_to_system(t: time::OffsetDateTime) -> SystemTime {
    let nanos = t.unix_timestamp_nanos();
    if nanos >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    } else {
        SystemTime::UNIX_EPOCH
    }
}

impl StatusSource for BackupStatus {
    fn collections(&self) -> Result<Vec<CollectionStatus>, String> {
        let mut rows: BTreeMap<(String, String), CollectionStatus> = BTreeMap::new();
        let configured = self
            .configured
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let verified = self.verification.all().map_err(|e| e.to_string())?;
        for (appid, env, collection) in &configured {
            rows.entry((env.clone(), collection.clone()))
                .or_insert_with(|| CollectionStatus {
                    appid: appid.clone(),
                    env: env.clone(),
                    collection: collection.clone(),
                    ..CollectionStatus::default()
                });
        }
        // Newest first: the first record seen per collection is its latest snapshot.
        for record in self.catalog.list(None, None).map_err(|e| e.to_string())? {
            let m = record.manifest();
            let row = rows
                .entry((m.env.clone(), m.collection.clone()))
                .or_insert_with(|| CollectionStatus {
                    appid: m.appid.clone(),
                    env: m.env.clone(),
                    collection: m.collection.clone(),
                    ..CollectionStatus::default()
                });
            if let Some(v) = verified.get(&record.entry.id) {
                // The newest passed check / test restore of any snapshot of the collection.
                if v.last_check_ok == Some(true) {
                    let t = v.last_checked_at.map(offset_to_system);
                    row.last_verified = row.last_verified.max(t);
                }
                if v.last_test_restore_ok == Some(true) {
                    let t = v.last_test_restored_at.map(offset_to_system);
                    row.last_test_restored = row.last_test_restored.max(t);
                }
            }
            if row.last_success.is_none() {
                row.appid = m.appid.clone();
                row.last_success = Some(offset_to_system(m.finished_at));
                row.last_duration = (m.finished_at - m.started_at).try_into().ok();
                row.bytes = Some(m.bytes_raw);
                row.bytes_stored = Some(m.bytes_stored);
                row.records = Some(m.records);
            }
        }
        let jobs = self
            .engine
            .list(&JobFilter {
                kind: Some(COLLECTION_KIND.to_string()),
                ..JobFilter::default()
            })
            .map_err(|e| e.to_string())?;
        // Latest attempt per collection; the job label is `env/collection`.
        let mut latest: BTreeMap<(String, String), &tcb_state::JobSummary> = BTreeMap::new();
        for j in &jobs {
            let Some((env, collection)) = j.label.split_once('/') else {
                continue;
            };
            let key = (env.to_string(), collection.to_string());
            let newer = latest
                .get(&key)
                .is_none_or(|cur| (j.updated_at, j.id.0) > (cur.updated_at, cur.id.0));
            if newer {
                latest.insert(key, j);
            }
        }
        for (key, j) in latest {
            let row = rows.entry(key.clone()).or_insert_with(|| CollectionStatus {
                env: key.0.clone(),
                collection: key.1.clone(),
                ..CollectionStatus::default()
            });
            row.last_status = Some(j.status.to_string());
            row.last_attempt = Some(j.updated_at);
            row.last_error = if j.status == JobStatus::Succeeded {
                None
            } else {
                j.last_error.clone()
            };
        }
        for row in rows.values_mut() {
            if row.last_status.is_none() && row.last_success.is_some() {
                row.last_status = Some(JobStatus::Succeeded.to_string());
            }
        }
        Ok(rows.into_values().collect())
    }

    fn catalog(&self) -> Result<serde_json::Value, String> {
        let records = self.catalog.list(None, None).map_err(|e| e.to_string())?;
        let listing =
            crate::backup::listing::annotate(&self.engine, records).map_err(|e| e.to_string())?;
        serde_json::to_value(listing).map_err(|e| e.to_string())
    }
}

/// Why `tcb-backup daemon` stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum DaemonStartError {
    /// The configuration is missing or invalid (including the daemon sections).
    #[error("{0}")]
    Config(String),
    /// Another process holds the state store.
    #[error("{0}")]
    Locked(String),
    /// A secret cannot be fetched.
    #[error("{0}")]
    Credentials(String),
    #[error("{0}")]
    Other(String),
}

fn engine_start_error(e: EngineError) -> DaemonStartError {
    match e {
        EngineError::Locked { .. } => DaemonStartError::Locked(e.to_string()),
        other => DaemonStartError::Other(other.to_string()),
    }
}

/// Reads the daemon settings of the configuration at `path` (logging their warnings: at start
/// and at each reload). Loading the configuration also checks every env and collection the
/// schedules name (see `settings::check_references`).
pub fn load_settings(path: &Path) -> Result<(Config, DaemonSettings), String> {
    let config = setup::load(path).map_err(|e| e.to_string())?;
    let settings = settings::from_config(&config, &ProcessEnv).map_err(|e| e.to_string())?;
    for w in &settings.warnings {
        tracing::warn!("{w}");
    }
    Ok((config, settings))
}

/// Engine slots the daemon opens its store with (at least): `[concurrency] global` changes on
/// SIGHUP take effect through the per-kind limit, so the engine itself must leave room.
pub const DAEMON_ENGINE_SLOTS: usize = 32;

/// Options of [`run_from_config`].
pub struct RunOptions {
    pub config_path: PathBuf,
    /// Overrides `[daemon] listen`.
    pub listen: Option<SocketAddr>,
    pub bound: Option<oneshot::Sender<SocketAddr>>,
}

fn setup_error(e: setup::SetupError) -> DaemonStartError {
    match e {
        setup::SetupError::Missing(m) | setup::SetupError::Invalid(m) => {
            DaemonStartError::Config(m)
        }
        setup::SetupError::Credentials(m) => DaemonStartError::Credentials(m),
        setup::SetupError::Other(m) => DaemonStartError::Other(m),
    }
}

/// Registers what the daemon runs besides the backup workflows: `restore.collection` (test
/// restores) and `daemon.maintenance` (scheduled check and forget), with `clients`.
fn register_daemon_workflows(
    service: &BackupService,
    clients: &AppClients,
    config: &Config,
    retry: &tcb_state::RetryPolicy,
) {
    let engine = &service.engine;
    register_restore(engine, clients, config, retry);
    engine.register(
        MaintenanceWorkflow {
            engine: engine.downgrade(),
            catalog: service.catalog.clone(),
            store: VerificationStore::new(engine.kv(VerificationStore::NAMESPACE)),
            clients: Arc::new(clients.clone()),
            identity_file: config
                .encryption
                .as_ref()
                .and_then(|e| e.identity_file.clone()),
            destinations: service.destinations().clone(),
            copy_policies: crate::destination::plan::CopyPlan::from_config(config)
                .retention_policies(),
        },
        // One check or forget at a time: they read or delete the same files.
        KindLimits::new(1),
    );
}

/// Applies a new configuration to a running daemon (SIGHUP): everything is validated first
/// (file, schedules against the config, secrets, clients); only then are the workflows
/// re-registered with the new settings, clients, plan and concurrency. Jobs are never
/// cancelled: a step already running finishes with the old settings, later steps and new
/// runs use the new ones (jobs resume from their committed state).
pub struct Reconfigurer {
    path: PathBuf,
    /// Shared with the [`TaskLauncher`].
    service: Arc<Mutex<BackupService>>,
    status: Arc<BackupStatus>,
    counters: Arc<Counters>,
    current: Config,
    settings: DaemonSettings,
    engine_slots: usize,
}

impl Reconfigurer {
    /// Reads and applies the configuration file; on any problem nothing changes and the
    /// error says what was wrong.
    pub fn reload(&mut self) -> Result<DaemonSettings, String> {
        let (config, settings) = load_settings(&self.path)?;
        let shared = self.service.clone();
        let mut service = shared.lock().unwrap_or_else(|p| p.into_inner());
        if config.state_dir != self.current.state_dir {
            return Err(format!(
                "state_dir changed from {} to {}: a running daemon cannot move its state store; restart it instead",
                self.current.state_dir.display(),
                config.state_dir.display()
            ));
        }
        let prepared = setup::prepare(&config).map_err(|e| e.to_string())?;
        let mut clients = prepared.clients.clone().unwrap_or_default();
        for appid in clients.appids() {
            if let Some(c) = clients.get(appid) {
                c.set_observer(self.counters.clone());
            }
        }
        // Apps removed from the file keep their client until the daemon restarts, so that
        // their running jobs can finish; new runs no longer select them.
        for app in &self.current.apps {
            if clients.get(&app.appid).is_none() {
                if let Some(old) = service.clients().get(&app.appid) {
                    tracing::info!(appid = %app.appid, "app removed from the configuration; its running jobs finish, no new runs");
                    clients.insert(&app.appid, old.clone(), Some(app.concurrency.max(1)));
                }
            }
        }
        if prepared.concurrency.collections + 2 > self.engine_slots {
            tracing::warn!(
                requested = prepared.concurrency.collections,
                slots = self.engine_slots,
                "[concurrency] global is above the engine slots fixed at start; restart the daemon to use more"
            );
        }
        if settings.listen != self.settings.listen {
            tracing::warn!("[daemon] listen changed: the status listener moves only on restart");
        }
        if settings.status_token != self.settings.status_token {
            tracing::warn!("[daemon] status token changed: it takes effect only on restart");
        }
        if settings.shutdown_grace != self.settings.shutdown_grace {
            tracing::warn!("[daemon] shutdown_grace changed: it takes effect only on restart");
        }
        service.reconfigure(
            prepared.settings.clone(),
            clients.clone(),
            prepared.plan.clone(),
            prepared.concurrency,
            Arc::new(NoProgress),
        );
        register_daemon_workflows(&service, &clients, &config, &prepared.settings.retry);
        drop(service);
        self.status.set_config(&config);
        tracing::info!(
            apps = config.apps.len(),
            envs = config.apps.iter().map(|a| a.envs.len()).sum::<usize>(),
            concurrency = prepared.concurrency.collections,
            "workflows reconfigured"
        );
        self.current = config;
        self.settings = settings.clone();
        Ok(settings)
    }
}

/// `tcb-backup daemon`: opens the store (holding its lock), then runs schedules, the engine and
/// the status listener until `shutdown`; a message on `reload` re-reads the whole
/// configuration ([`Reconfigurer::reload`]) and keeps the old one if the new one is invalid.
pub async fn run_from_config(
    opts: RunOptions,
    shutdown: impl std::future::Future<Output = ()>,
    reload: mpsc::Receiver<()>,
) -> Result<(), DaemonStartError> {
    let (config, settings) = load_settings(&opts.config_path).map_err(DaemonStartError::Config)?;
    let mut prepared = setup::prepare(&config).map_err(setup_error)?;
    prepared.engine_options.shutdown_grace = settings.shutdown_grace;
    let engine_slots = prepared
        .engine_options
        .global_concurrency
        .max(DAEMON_ENGINE_SLOTS);
    prepared.engine_options.global_concurrency = engine_slots;
    let counters = Arc::new(Counters::default());
    let clients = prepared.clients.clone().unwrap_or_default();
    for appid in clients.appids() {
        if let Some(c) = clients.get(appid) {
            c.set_observer(counters.clone());
        }
    }
    let service = prepared
        .open(Arc::new(NoProgress))
        .map_err(engine_start_error)?;
    register_daemon_workflows(&service, &clients, &config, &prepared.settings.retry);
    let engine = service.engine.clone();
    let started_at = engine.clock().now();
    let view = Arc::new(RwLock::new(DaemonView {
        specs: settings.schedules.clone(),
        stale_factor: settings.stale_factor,
        started_at,
        recent_fires: VecDeque::new(),
    }));
    let source = Arc::new(BackupStatus::new(
        engine.clone(),
        service.catalog.clone(),
        &config,
    ));
    let status = StatusContext {
        engine: engine.clone(),
        clock: engine.clock(),
        source: source.clone(),
        counters: counters.clone(),
        view,
        token: settings.status_token.clone(),
        run_kind: RUN_KIND.to_string(),
    };
    let notifier = Notifier::new(settings.alerts.clone())
        .map_err(|e| DaemonStartError::Other(e.to_string()))?;
    let shared = Arc::new(Mutex::new(service.clone()));
    let launcher = TaskLauncher {
        service: Some(shared.clone()),
    };
    // Copies left waiting out a back-off or failed by an earlier process start over now.
    launcher.catch_up_copies();
    let mut reconfigurer = Reconfigurer {
        path: opts.config_path.clone(),
        service: shared,
        status: source,
        counters,
        current: config,
        settings: settings.clone(),
        engine_slots,
    };
    let listen = opts.listen.unwrap_or(settings.listen);
    if let Some(w) = settings::exposed_listener_warning(listen, settings.status_token.is_some()) {
        tracing::warn!("{w}");
    }
    let daemon = Daemon {
        scheduler: Scheduler::new(engine.clone(), settings.schedules.clone(), launcher),
        status,
        notifier: Some(notifier),
        reporter: Arc::new(TaskReporter),
        listen: Some(listen),
        bound: opts.bound,
        reloader: Some(Box::new(move || reconfigurer.reload())),
        stale_check_every: Duration::from_secs(300),
        delivery_grace: super::delivery::DEFAULT_SHUTDOWN_GRACE,
    };
    for s in &settings.schedules {
        let next = jiff::Timestamp::try_from(started_at)
            .ok()
            .and_then(|t| s.schedule.next_after(t));
        tracing::info!(
            schedule = %s.name,
            task = s.task.name(),
            cron = %s.schedule.cron(),
            time_zone = %s.schedule.time_zone_name(),
            next = %next.map(|z| z.to_string()).unwrap_or_else(|| "never".to_string()),
            "schedule loaded"
        );
    }
    daemon
        .run(shutdown, reload)
        .await
        .map_err(|e| DaemonStartError::Other(e.to_string()))
}

/// SIGTERM/SIGINT → the returned future resolves (graceful shutdown); SIGHUP → a message on
/// the receiver (reload). Must be called inside a tokio runtime.
pub fn signals() -> std::io::Result<(impl std::future::Future<Output = ()>, mpsc::Receiver<()>)> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the configuration");
            if tx.send(()).await.is_err() {
                break;
            }
        }
    });
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
    };
    Ok((shutdown, rx))
}
