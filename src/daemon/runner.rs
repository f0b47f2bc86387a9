//! The daemon loop: ticks the scheduler at each fire time, runs the engine, serves the status
//! listener, reacts to finished runs (alerts, heartbeat, counters), checks staleness, reloads
//! on request and shuts down gracefully. Alerts and heartbeats are delivered from spawned tasks
//! ([`super::delivery`]): a slow webhook never holds back a signal or a scheduled fire.
//!
//! It is generic over how a fire starts a run ([`Launcher`]) and how a finished run is judged
//! ([`RunReporter`]), so tests drive it with stand-in workflows and a manual clock; the real
//! wiring to the backup workflow is in [`super::backup`].

use std::collections::HashSet;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tcb_state::{Engine, EngineError, JobFilter, JobId, JobStatus};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::alerts::{Alert, AlertItem, Notifier};
use super::delivery::Deliveries;
use super::freshness::human_duration;
use super::metrics::Counters;
use super::scheduler::{FireOutcome, Launcher, Scheduler};
use super::settings::{AlertEvent, DaemonSettings};
use super::stale_alerts::StaleAlerts;
use super::status::{serve, StatusContext};

/// How a finished run went, for alerts and counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunOutcome {
    Succeeded,
    Partial,
    Failed,
    Cancelled,
}

impl RunOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            RunOutcome::Succeeded => "succeeded",
            RunOutcome::Partial => "partially_failed",
            RunOutcome::Failed => "failed",
            RunOutcome::Cancelled => "cancelled",
        }
    }
}

/// A finished run, summarised.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSummary {
    pub outcome: RunOutcome,
    pub summary: String,
    /// The collections that did not succeed.
    pub problems: Vec<AlertItem>,
    /// `backup`, `check` or `forget`. Only a successful backup calls the heartbeat URL (a
    /// passing scheduled check must not keep the dead-man's switch quiet while backups fail).
    pub task: &'static str,
}

/// Judges a finished run.
pub trait RunReporter: Send + Sync + 'static {
    fn summarize(&self, engine: &Engine, run: JobId) -> Option<RunSummary>;

    /// Job kinds besides the status context's `run_kind` whose end is judged and alerted on
    /// (the daemon's scheduled checks and forgets).
    fn watches(&self, _kind: &str) -> bool {
        false
    }
}

/// Judges a run by its engine status alone (tests, and a fallback).
pub struct StatusOnlyReporter;

impl RunReporter for StatusOnlyReporter {
    fn summarize(&self, engine: &Engine, run: JobId) -> Option<RunSummary> {
        let view = engine.job(run).ok()??;
        let outcome = match view.status() {
            JobStatus::Succeeded => RunOutcome::Succeeded,
            JobStatus::PartiallyFailed => RunOutcome::Partial,
            JobStatus::Cancelled => RunOutcome::Cancelled,
            _ => RunOutcome::Failed,
        };
        Some(RunSummary {
            outcome,
            summary: format!("run {run}: {}", outcome.as_str()),
            problems: Vec::new(),
            task: "backup",
        })
    }
}

/// New schedules/alert settings after a reload.
pub type Reloader = Box<dyn FnMut() -> Result<DaemonSettings, String> + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("status listener: {0}")]
    Listener(std::io::Error),
    #[error("engine: {0}")]
    Engine(#[from] EngineError),
    /// The engine's runner ended while the daemon was not stopping: nothing would run the
    /// scheduled backups, so the daemon exits (non-zero) for its supervisor to restart it.
    #[error("the engine's runner stopped unexpectedly: {0}")]
    EngineStopped(String),
}

/// Everything the loop runs.
pub struct Daemon<L: Launcher> {
    pub scheduler: Scheduler<L>,
    pub status: StatusContext,
    pub notifier: Option<Notifier>,
    pub reporter: Arc<dyn RunReporter>,
    /// `None`: no listener (tests that only need the loop).
    pub listen: Option<SocketAddr>,
    /// Receives the listener's bound address once it is ready.
    pub bound: Option<oneshot::Sender<SocketAddr>>,
    pub reloader: Option<Reloader>,
    /// How often freshness is checked for staleness alerts.
    pub stale_check_every: Duration,
    /// At shutdown, how long alert deliveries still pending get before they are dropped
    /// (runs alongside the engine's own grace, so it adds nothing when shorter).
    pub delivery_grace: Duration,
}

impl<L: Launcher> Daemon<L> {
    /// Runs until `shutdown` resolves; a message on `reload` reloads the settings. On shutdown
    /// the engine stops claiming work and gives running steps its grace period; unfinished jobs
    /// resume on the next start.
    pub async fn run(
        mut self,
        shutdown: impl Future<Output = ()>,
        mut reload: mpsc::Receiver<()>,
    ) -> Result<(), DaemonError> {
        let engine = self.scheduler.engine().clone();
        let clock = engine.clock();
        let stop = CancellationToken::new();
        let mut events = engine.subscribe();

        let server = match self.listen {
            Some(addr) => {
                let (tx, rx) = oneshot::channel();
                let ctx = self.status.clone();
                let token = stop.clone();
                let task = tokio::spawn(serve(ctx, addr, tx, token.cancelled_owned()));
                match rx.await {
                    Ok(local) => {
                        if let Some(b) = self.bound.take() {
                            let _ = b.send(local);
                        }
                    }
                    Err(_) => {
                        // The task ended before binding: report its error.
                        return match task.await {
                            Ok(Err(e)) => Err(DaemonError::Listener(e)),
                            _ => Err(DaemonError::Listener(std::io::Error::other(
                                "status listener stopped before it was ready",
                            ))),
                        };
                    }
                }
                Some(task)
            }
            None => None,
        };

        let mut engine_task = {
            let engine = engine.clone();
            let token = stop.clone();
            tokio::spawn(async move { engine.run(token.cancelled_owned()).await })
        };
        // Set when the engine's runner ended on its own (a state store that cannot be written
        // stops it): scheduling on would only pile up runs nothing executes.
        let mut engine_ended = None;

        tokio::pin!(shutdown);
        let mut deliveries = Deliveries::default();
        let mut stale_alerted = StaleAlerts::load(&engine);
        let mut next_stale_check = clock.now();
        let run_kind = self.status.run_kind.clone();
        // Runs reported since the start (each run's end is judged once, whether its event was
        // seen or found after the event channel lagged), and since when to look.
        let mut reported: HashSet<JobId> = HashSet::new();
        let started_at = clock.now();
        loop {
            let now = clock.now();
            let (outcomes, errors) = self.scheduler.tick(now);
            for e in errors {
                tracing::error!(error = %e, "scheduler");
            }
            self.record(outcomes);
            if now >= next_stale_check {
                self.check_stale(&mut stale_alerted, &mut deliveries);
                next_stale_check = now + self.stale_check_every;
            }
            let wake = self
                .scheduler
                .next_wake(now)
                .map_or(next_stale_check, |w| w.min(next_stale_check));
            tokio::select! {
                () = &mut shutdown => {
                    tracing::info!("shutting down: letting running steps finish");
                    break;
                }
                ended = &mut engine_task => {
                    tracing::error!("the engine's runner stopped; shutting down so a supervisor can restart the daemon");
                    engine_ended = Some(ended);
                    break;
                }
                Some(()) = reload.recv() => self.reload(),
                event = events.recv() => match event {
                    Ok(ev) if (ev.kind == run_kind || self.reporter.watches(&ev.kind))
                        && ev.status.is_terminal() => {
                        if reported.insert(ev.id) {
                            self.run_finished(&engine, ev.id, &mut deliveries);
                        }
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        // Events were dropped (a busy loop on a big run): a run's end may be
                        // among them, so ask the store instead.
                        tracing::warn!(missed, "job events lagged; looking for runs that ended meanwhile");
                        for run in self.ended_runs(&engine, &run_kind, started_at, &reported) {
                            reported.insert(run);
                            self.run_finished(&engine, run, &mut deliveries);
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                },
                () = clock.sleep_until(wake) => {}
            }
        }
        stop.cancel();
        // Pending deliveries get their short grace while the engine gives running steps theirs.
        let engine_result = match engine_ended {
            Some(ended) => {
                deliveries.shutdown(self.delivery_grace).await;
                match ended {
                    Ok(Err(e)) => Err(DaemonError::Engine(e)),
                    Ok(Ok(())) => Err(DaemonError::EngineStopped("it returned".into())),
                    Err(e) => Err(DaemonError::EngineStopped(e.to_string())),
                }
            }
            None => {
                let (joined, ()) =
                    tokio::join!(engine_task, deliveries.shutdown(self.delivery_grace));
                match joined {
                    Ok(r) => r.map_err(DaemonError::Engine),
                    Err(e) => {
                        tracing::error!(error = %e, "engine task failed");
                        Ok(())
                    }
                }
            }
        };
        if let Some(task) = server {
            let _ = task.await;
        }
        engine_result
    }

    fn record(&self, outcomes: Vec<FireOutcome>) {
        if outcomes.is_empty() {
            return;
        }
        let mut view = self.status.view.write().unwrap_or_else(|p| p.into_inner());
        for o in outcomes {
            self.status.counters.fire(o.schedule(), o.kind(), o.fires());
            view.record_fire(o);
        }
    }

    fn reload(&mut self) {
        let Some(reloader) = self.reloader.as_mut() else {
            tracing::info!("reload requested, but this daemon has nothing to reload");
            return;
        };
        match reloader() {
            Ok(settings) => {
                self.status.counters.reload("applied");
                tracing::info!(
                    schedules = settings.schedules.len(),
                    "configuration reloaded; running jobs continue"
                );
                self.scheduler.set_specs(settings.schedules.clone());
                {
                    let mut view = self.status.view.write().unwrap_or_else(|p| p.into_inner());
                    view.specs = settings.schedules;
                    view.stale_factor = settings.stale_factor;
                }
                match Notifier::new(settings.alerts) {
                    Ok(n) => self.notifier = Some(n),
                    Err(e) => tracing::error!(error = %e, "alerts after reload"),
                }
            }
            Err(e) => {
                self.status.counters.reload("rejected");
                tracing::error!(error = %e, "reload rejected; keeping the previous configuration")
            }
        }
    }

    /// Runs (and watched jobs) that ended since `since` and were not reported yet, oldest first.
    fn ended_runs(
        &self,
        engine: &Engine,
        run_kind: &str,
        since: SystemTime,
        reported: &HashSet<JobId>,
    ) -> Vec<JobId> {
        match engine.list(&JobFilter::default()) {
            Ok(jobs) => jobs
                .into_iter()
                .filter(|j| j.kind == run_kind || self.reporter.watches(&j.kind))
                .filter(|j| j.status.is_terminal() && j.updated_at >= since)
                .filter(|j| !reported.contains(&j.id))
                .map(|j| j.id)
                .collect(),
            Err(e) => {
                tracing::error!(error = %e, "cannot list jobs after lagged events");
                Vec::new()
            }
        }
    }

    fn run_finished(&self, engine: &Engine, run: JobId, deliveries: &mut Deliveries) {
        let Some(summary) = self.reporter.summarize(engine, run) else {
            return;
        };
        self.status.counters.run_finished(summary.outcome.as_str());
        tracing::info!(
            run = run.0,
            outcome = summary.outcome.as_str(),
            "{}",
            summary.summary
        );
        let Some(notifier) = &self.notifier else {
            return;
        };
        let event = match summary.outcome {
            RunOutcome::Succeeded if summary.task != "backup" => return,
            RunOutcome::Succeeded => {
                let notifier = notifier.clone();
                let counters = self.status.counters.clone();
                deliveries.spawn("heartbeat", async move {
                    match notifier.heartbeat().await {
                        Ok(true) => counters.alert("heartbeat", "sent"),
                        Ok(false) => {}
                        Err(e) => {
                            counters.alert("heartbeat", "failed");
                            tracing::warn!(error = %e, "heartbeat");
                        }
                    }
                });
                return;
            }
            RunOutcome::Cancelled => return,
            RunOutcome::Partial => AlertEvent::Partial,
            RunOutcome::Failed => AlertEvent::Failure,
        };
        let schedule = engine
            .job(run)
            .ok()
            .flatten()
            .map(|v| v.summary.label)
            .filter(|l| l.starts_with("schedule "));
        let alert = Alert {
            event,
            task: summary.task.to_string(),
            summary: summary.summary,
            schedule,
            run: Some(run.0),
            time: engine.clock().now(),
            items: summary.problems,
        };
        deliver(deliveries, notifier, &self.status.counters, alert);
    }

    /// Alerts once per stale episode of a collection (remembered in the store, so across
    /// restarts too); it may alert again after it has been fresh in between.
    fn check_stale(&self, alerted: &mut StaleAlerts, deliveries: &mut Deliveries) {
        let rows = match self.status.freshness() {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(error = %e, "freshness check");
                return;
            }
        };
        alerted.retain_watched(
            rows.iter()
                .map(|r| (r.status.env.as_str(), r.status.collection.as_str())),
        );
        let mut newly = Vec::new();
        for r in &rows {
            let (env, collection) = (&r.status.env, &r.status.collection);
            if r.stale {
                if alerted.stale(env, collection, r.status.last_success) {
                    newly.push(AlertItem {
                        env: r.status.env.clone(),
                        collection: r.status.collection.clone(),
                        status: "stale".to_string(),
                        detail: Some(match r.age {
                            Some(age) => format!("last success {} ago", human_duration(age)),
                            None => "never backed up".to_string(),
                        }),
                    });
                }
            } else {
                alerted.fresh(env, collection);
            }
        }
        if newly.is_empty() {
            return;
        }
        tracing::warn!(collections = newly.len(), "backups are stale");
        if let Some(notifier) = &self.notifier {
            let alert = Alert {
                event: AlertEvent::Stale,
                task: "backup".to_string(),
                summary: format!("{} collection(s) have no recent backup", newly.len()),
                schedule: None,
                run: None,
                time: self.status.clock.now(),
                items: newly,
            };
            deliver(deliveries, notifier, &self.status.counters, alert);
        }
    }
}

/// Sends `alert` from its own task, counting the outcome.
fn deliver(
    deliveries: &mut Deliveries,
    notifier: &Notifier,
    counters: &Arc<Counters>,
    alert: Alert,
) {
    let kind = match alert.event {
        AlertEvent::Failure => "failure",
        AlertEvent::Partial => "partial",
        AlertEvent::Stale => "stale",
    };
    if !notifier.wants(alert.event) {
        return;
    }
    let notifier = notifier.clone();
    let task_counters = counters.clone();
    let spawned = deliveries.spawn("alert", async move {
        match notifier.send(&alert).await {
            Ok(true) => task_counters.alert(kind, "sent"),
            Ok(false) => {}
            Err(e) => {
                task_counters.alert(kind, "failed");
                tracing::warn!(error = %e, "alert");
            }
        }
    });
    if !spawned {
        counters.alert(kind, "dropped");
    }
}

/// The instant a daemon started (for the status view).
pub fn started_now(engine: &Engine) -> SystemTime {
    engine.clock().now()
}
