//! The daemon wired to the backup workflow: a fire submits a `backup.run` for the schedule's
//! selection, a finished run is judged from its report, status rows come from the snapshot
//! catalog and the `backup.collection` jobs, and [`run_from_config`] assembles it all from a
//! configuration file (what `tcb-backup daemon` calls).

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use tcb_state::{Engine, EngineError, JobFilter, JobId, JobStatus, SubmitOptions};
use tokio::sync::{mpsc, oneshot};

use super::alerts::{AlertItem, Notifier};
use super::freshness::{CollectionStatus, StatusSource};
use super::metrics::Counters;
use super::runner::{Daemon, RunOutcome, RunReporter, RunSummary};
use super::scheduler::{Fire, Launcher, Scheduler};
use super::settings::{self, DaemonSettings, ProcessEnv, ScheduleSpec};
use super::status::{DaemonView, StatusContext};
use crate::backup::catalog_store::SnapshotCatalog;
use crate::backup::progress::{ProgressEvent, ProgressSink};
use crate::backup::report::run_report;
use crate::backup::run::RunWorkflow;
use crate::backup::setup;
use crate::backup::state::{RunSelection, RunState};
use crate::config::{CollectionSelection, Config};

/// The engine kind of a backup run.
pub const RUN_KIND: &str = "backup.run";
/// The engine kind of one collection's backup.
pub const COLLECTION_KIND: &str = "backup.collection";

/// Submits a `backup.run` per fire.
pub struct BackupLauncher;

impl Launcher for BackupLauncher {
    fn launch(
        &self,
        engine: &Engine,
        spec: &ScheduleSpec,
        fire: &Fire,
    ) -> Result<JobId, EngineError> {
        engine.submit::<RunWorkflow>(
            RunState::Start {
                selection: RunSelection {
                    envs: spec.envs.clone(),
                    collections: spec.collections.clone(),
                },
            },
            SubmitOptions {
                label: fire.label.clone(),
                dedupe_key: Some(fire.dedupe_key.clone()),
                run_at: Some(fire.start_at),
                ..SubmitOptions::default()
            },
        )
    }
}

/// Judges a run from its report (per-collection rows).
pub struct BackupReporter;

impl RunReporter for BackupReporter {
    fn summarize(&self, engine: &Engine, run: JobId) -> Option<RunSummary> {
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
        })
    }
}

/// Status rows from the catalog, the collection jobs and the configured collections.
pub struct BackupStatus {
    pub engine: Engine,
    pub catalog: SnapshotCatalog,
    /// (appid, env, collection) named explicitly in the config: shown even before a backup.
    pub configured: Vec<(String, String, String)>,
}

impl BackupStatus {
    pub fn new(engine: Engine, catalog: SnapshotCatalog, config: &Config) -> Self {
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
        BackupStatus {
            engine,
            catalog,
            configured,
        }
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
        for (appid, env, collection) in &self.configured {
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
        serde_json::to_value(records).map_err(|e| e.to_string())
    }
}

/// Counts step problems per collection (the CloudBase client has no call hook yet, so API
/// errors are seen as the workflow's step problems).
pub struct ProblemCounter {
    pub counters: Arc<Counters>,
}

impl ProgressSink for ProblemCounter {
    fn report(&self, event: ProgressEvent) {
        if let ProgressEvent::Problem { message, .. } = &event {
            let endpoint = message
                .split_whitespace()
                .find(|w| w.starts_with('/') || w.contains("/tcb/") || w.contains("/cgi-bin/"))
                .map(|w| w.trim_matches(|c: char| c == ':' || c == ',').to_string())
                .unwrap_or_else(|| "step".to_string());
            let code = message
                .split("errcode")
                .nth(1)
                .and_then(|rest| {
                    rest.trim_start_matches([' ', ':', '='])
                        .split(|c: char| !(c.is_ascii_digit() || c == '-'))
                        .next()
                        .filter(|s| !s.is_empty())
                        .map(str::to_string)
                })
                .unwrap_or_else(|| "error".to_string());
            self.counters.api_call(&endpoint, Some(&code));
        }
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

/// Reads the daemon settings of the configuration at `path`.
pub fn load_settings(path: &Path) -> Result<(Config, DaemonSettings), String> {
    let config = setup::load(path).map_err(|e| e.to_string())?;
    let settings = settings::from_config(&config, &ProcessEnv).map_err(|e| e.to_string())?;
    Ok((config, settings))
}

/// Options of [`run_from_config`].
pub struct RunOptions {
    pub config_path: PathBuf,
    /// Overrides `[daemon] listen`.
    pub listen: Option<SocketAddr>,
    pub bound: Option<oneshot::Sender<SocketAddr>>,
}

/// `tcb-backup daemon`: opens the store (holding its lock), then runs schedules, the engine and
/// the status listener until `shutdown`; a message on `reload` re-reads the configuration's
/// schedules and alert settings (collections and credentials need a restart).
pub async fn run_from_config(
    opts: RunOptions,
    shutdown: impl std::future::Future<Output = ()>,
    reload: mpsc::Receiver<()>,
) -> Result<(), DaemonStartError> {
    let (config, settings) = load_settings(&opts.config_path).map_err(DaemonStartError::Config)?;
    let mut prepared = setup::prepare(&config).map_err(|e| match e {
        setup::SetupError::Missing(m) | setup::SetupError::Invalid(m) => {
            DaemonStartError::Config(m)
        }
        setup::SetupError::Credentials(m) => DaemonStartError::Credentials(m),
        setup::SetupError::Other(m) => DaemonStartError::Other(m),
    })?;
    prepared.engine_options.shutdown_grace = settings.shutdown_grace;
    let counters = Arc::new(Counters::default());
    let service = prepared
        .open(Arc::new(ProblemCounter {
            counters: counters.clone(),
        }))
        .map_err(engine_start_error)?;
    let engine = service.engine.clone();
    let started_at = engine.clock().now();
    let view = Arc::new(RwLock::new(DaemonView {
        specs: settings.schedules.clone(),
        stale_factor: settings.stale_factor,
        started_at,
        recent_fires: VecDeque::new(),
    }));
    let status = StatusContext {
        engine: engine.clone(),
        clock: engine.clock(),
        source: Arc::new(BackupStatus::new(
            engine.clone(),
            service.catalog.clone(),
            &config,
        )),
        counters,
        view,
        token: settings.status_token.clone(),
        run_kind: RUN_KIND.to_string(),
    };
    let notifier = Notifier::new(settings.alerts.clone())
        .map_err(|e| DaemonStartError::Other(e.to_string()))?;
    let path = opts.config_path.clone();
    let daemon = Daemon {
        scheduler: Scheduler::new(engine.clone(), settings.schedules.clone(), BackupLauncher),
        status,
        notifier: Some(notifier),
        reporter: Arc::new(BackupReporter),
        listen: Some(opts.listen.unwrap_or(settings.listen)),
        bound: opts.bound,
        reloader: Some(Box::new(move || load_settings(&path).map(|(_, s)| s))),
        stale_check_every: Duration::from_secs(300),
    };
    for s in &settings.schedules {
        let next = jiff::Timestamp::try_from(started_at)
            .ok()
            .and_then(|t| s.schedule.next_after(t));
        tracing::info!(
            schedule = %s.name,
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
