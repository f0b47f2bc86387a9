//! One benchmark setup: an in-process emulator, a fresh state store and snapshot root, and the
//! real backup workflows (`BackupService`) wired to them with the emulator's clock. Progress
//! events are timestamped in virtual time so the scenarios can measure detection lag and the
//! number of exports in flight.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tcb_state::EngineOptions;
use url::Url;

use crate::backup::progress::{ProgressEvent, ProgressSink, Target};
use crate::backup::{
    AppClients, BackupPlan, BackupService, CollectionSelection, Concurrency, PlanApp, PlanEnv,
    RunReport, RunSelection,
};
use crate::client::{AppCredentials, ClientConfig, CloudBaseClient, FnClock, Secret, TokenMode};
use crate::emulator::{
    self, EmulatorApp, EmulatorConfig, EmulatorControl, EmulatorHandle, JobTiming,
};
use crate::manifest::ExportFileType;

use super::clock::EmulatorClock;
use super::scenario::BenchError;
use super::scratch::ScratchDir;

/// How time passes in a setup.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TimeMode {
    /// Frozen emulator clock, advanced by the engine when idle (exact, no real waiting).
    Virtual,
    /// Emulator clock at this many virtual seconds per real second; the engine really sleeps.
    Scaled(f64),
}

/// What to build.
#[derive(Debug, Clone)]
pub struct HarnessSpec {
    pub label: String,
    /// Apps and their envs.
    pub apps: Vec<(String, Vec<String>)>,
    pub time: TimeMode,
    pub timing: JobTiming,
    /// Collection steps running at once (the `[concurrency] global` setting).
    pub concurrency: usize,
}

impl HarnessSpec {
    /// One app with one env.
    pub fn single(label: &str, time: TimeMode, timing: JobTiming, concurrency: usize) -> Self {
        HarnessSpec {
            label: label.to_string(),
            apps: vec![(bench_appid(0), vec![format!("bench-{label}")])],
            time,
            timing,
            concurrency,
        }
    }
}

/// Export phases adding up to `total` virtual seconds, independent of the record count.
pub fn timing_for(total: Duration) -> JobTiming {
    let t = total.as_secs_f64();
    JobTiming {
        waiting_secs: t * 0.2,
        reading_base_secs: t * 0.4,
        writing_base_secs: t * 0.4,
        migrating_base_secs: t,
        per_record_secs: 0.0,
    }
}

fn week_ago() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
        - 7.0 * 86_400.0
}

pub fn bench_appid(i: usize) -> String {
    format!("wxbench{i:02}aa55bb66cc77")
}

fn bench_secret(appid: &str) -> String {
    format!("bench-secret-{appid}-0123456789abcdef")
}

/// Virtual time at which each collection's export was created and its success detected, and
/// the most exports in flight at once.
#[derive(Debug, Default)]
struct Timeline {
    created: BTreeMap<Target, SystemTime>,
    detected: BTreeMap<Target, SystemTime>,
    in_flight: usize,
    peak_in_flight: usize,
    problems: Vec<String>,
}

struct Recorder {
    control: EmulatorControl,
    timeline: Mutex<Timeline>,
}

impl ProgressSink for Recorder {
    fn report(&self, event: ProgressEvent) {
        let now = self.control.now();
        let Ok(mut t) = self.timeline.lock() else {
            return;
        };
        match event {
            ProgressEvent::Phase {
                target,
                phase: "export_created",
                ..
            } => {
                if t.created.insert(target, now).is_none() {
                    t.in_flight += 1;
                    t.peak_in_flight = t.peak_in_flight.max(t.in_flight);
                }
            }
            // Emitted right after the status call that reported success.
            ProgressEvent::Phase {
                target,
                phase: "downloading",
                ..
            } => {
                if t.detected.insert(target, now).is_none() {
                    t.in_flight = t.in_flight.saturating_sub(1);
                }
            }
            ProgressEvent::Problem {
                target, message, ..
            } => {
                t.problems.push(format!("{target}: {message}"));
            }
            ProgressEvent::Phase { .. } | ProgressEvent::Bytes { .. } => {}
        }
    }
}

/// Per-collection timing of one run.
#[derive(Debug, Clone)]
pub struct ExportTiming {
    pub target: Target,
    pub created: SystemTime,
    pub detected: SystemTime,
}

/// The outcome of one run.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub report: RunReport,
    /// Virtual time from submitting the run to every job being terminal.
    pub virtual_wall: Duration,
    pub real_wall: Duration,
    pub exports: Vec<ExportTiming>,
    pub peak_in_flight: usize,
    pub problems: Vec<String>,
}

/// A running setup. Drop order: the service before the scratch directory.
pub struct Harness {
    pub service: BackupService,
    pub emulator: EmulatorHandle,
    recorder: Arc<Recorder>,
    pub root: PathBuf,
    _scratch: ScratchDir,
}

impl Harness {
    pub async fn start(spec: &HarnessSpec) -> Result<Self, BenchError> {
        let scratch = ScratchDir::new(&spec.label).map_err(|e| {
            BenchError::Setup(format!(
                "{}: cannot create a scratch directory: {e}",
                spec.label
            ))
        })?;
        let mut cfg = EmulatorConfig {
            apps: spec
                .apps
                .iter()
                .map(|(appid, envs)| EmulatorApp {
                    appid: appid.clone(),
                    secret: bench_secret(appid),
                    envs: envs.clone(),
                    ..EmulatorApp::default()
                })
                .collect(),
            time_scale: 0.0,
            // The workflow stamps `finished_at` with the real clock and `started_at` with the
            // engine's (virtual) one; starting a week in the past keeps virtual time behind
            // real time however far a scenario advances it.
            start_unix_secs: Some(week_ago()),
            job_timing: spec.timing.clone(),
            seed: None,
            ..EmulatorConfig::default()
        };
        // A benchmark measures the tool, not the basic plan's QPS quota.
        cfg.quotas.env_qps = None;
        let emu = emulator::start(cfg, std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .map_err(|e| BenchError::Setup(format!("{}: emulator: {e}", spec.label)))?;
        let control = emu.control().clone();
        let clock = match spec.time {
            TimeMode::Virtual => EmulatorClock::virtual_time(control.clone()),
            TimeMode::Scaled(s) => EmulatorClock::scaled(control.clone(), s),
        };
        let base = Url::parse(&emu.base_url())
            .map_err(|e| BenchError::Setup(format!("emulator URL: {e}")))?;
        let mut clients = AppClients::new();
        for (appid, _) in &spec.apps {
            let ctl = control.clone();
            let client = CloudBaseClient::with_clock(
                ClientConfig::with_api_base(base.clone()),
                AppCredentials {
                    appid: appid.clone(),
                    secret: Secret::new(bench_secret(appid)),
                    token_mode: TokenMode::Stable,
                },
                Arc::new(FnClock(move || ctl.now())),
            )
            .map_err(|e| BenchError::Setup(format!("client for {appid}: {e}")))?;
            clients.insert(appid, client, Some(spec.concurrency));
        }
        let plan = BackupPlan {
            apps: spec
                .apps
                .iter()
                .map(|(appid, envs)| PlanApp {
                    appid: appid.clone(),
                    envs: envs
                        .iter()
                        .map(|env| PlanEnv {
                            id: env.clone(),
                            collections: CollectionSelection::Discover {
                                include: vec![],
                                exclude: vec![],
                            },
                            queries: BTreeMap::new(),
                            fields: vec![],
                            file_type: ExportFileType::Json,
                            record_collection: None,
                        })
                        .collect(),
                })
                .collect(),
        };
        let root = scratch.path().join("snapshots");
        let options = EngineOptions {
            clock: Arc::new(clock),
            global_concurrency: spec.concurrency + 2,
            shutdown_grace: Duration::from_secs(3),
            ..EngineOptions::default()
        };
        let recorder = Arc::new(Recorder {
            control: control.clone(),
            timeline: Mutex::new(Timeline::default()),
        });
        let service = BackupService::open(
            &scratch.path().join("state"),
            options,
            // The defaults a configuration gets, so the figures are what users see.
            crate::backup::setup::default_settings(root.clone()),
            clients,
            plan,
            Concurrency {
                collections: spec.concurrency,
            },
            recorder.clone(),
        )
        .map_err(|e| BenchError::Setup(format!("{}: state store: {e}", spec.label)))?;
        Ok(Harness {
            service,
            emulator: emu,
            recorder,
            root,
            _scratch: scratch,
        })
    }

    pub fn control(&self) -> &EmulatorControl {
        self.emulator.control()
    }

    /// Token endpoint calls made by every client so far.
    pub fn token_fetches(&self) -> u64 {
        self.service.clients().token_fetches().values().sum()
    }

    /// Runs one backup of `selection` to the end and collects its timings.
    pub async fn run(&self, selection: RunSelection) -> Result<RunOutcome, BenchError> {
        if let Ok(mut t) = self.recorder.timeline.lock() {
            *t = Timeline::default();
        }
        let start_virtual = self.control().now();
        let start_real = std::time::Instant::now();
        let run = self
            .service
            .submit_run(selection)
            .map_err(|e| BenchError::Run(format!("submitting the run: {e}")))?;
        self.service
            .drive(&[run], std::future::pending::<()>())
            .await
            .map_err(|e| BenchError::Run(format!("running the backup: {e}")))?;
        let real_wall = start_real.elapsed();
        let virtual_wall = self
            .control()
            .now()
            .duration_since(start_virtual)
            .unwrap_or_default();
        let report = self
            .service
            .report(run)
            .map_err(|e| BenchError::Run(format!("reading the run report: {e}")))?;
        let timeline = self
            .recorder
            .timeline
            .lock()
            .map(|mut t| std::mem::take(&mut *t))
            .unwrap_or_default();
        if !report.all_succeeded() {
            let failed: Vec<String> = report
                .collections
                .iter()
                .filter(|r| r.error.is_some())
                .take(3)
                .map(|r| {
                    format!(
                        "{}/{}: {}",
                        r.env,
                        r.collection,
                        r.error.clone().unwrap_or_default()
                    )
                })
                .collect();
            return Err(BenchError::Run(format!(
                "the benchmark backup did not succeed ({:?}, {} failed): {}",
                report.status,
                report.failed,
                failed.join("; ")
            )));
        }
        let exports = timeline
            .created
            .iter()
            .filter_map(|(target, created)| {
                timeline.detected.get(target).map(|detected| ExportTiming {
                    target: target.clone(),
                    created: *created,
                    detected: *detected,
                })
            })
            .collect();
        Ok(RunOutcome {
            report,
            virtual_wall,
            real_wall,
            exports,
            peak_in_flight: timeline.peak_in_flight,
            problems: timeline.problems,
        })
    }

    pub async fn shutdown(self) {
        let Harness {
            service,
            emulator,
            _scratch,
            ..
        } = self;
        drop(service);
        emulator.shutdown().await;
        drop(_scratch);
    }
}

/// Every collection of every env.
pub fn everything() -> RunSelection {
    RunSelection {
        envs: vec![],
        collections: vec![],
    }
}

/// Small stored documents for collection `name`.
pub fn small_docs(name: &str, n: usize) -> Vec<serde_json::Value> {
    (0..n)
        .map(|i| serde_json::json!({ "_id": format!("{name}-{i:05}"), "n": i, "tag": "bench" }))
        .collect()
}
