//! `tcb-backup daemon` and `tcb-backup schedule next`: the command-line side of the unattended
//! daemon (`crate::daemon`).

use std::net::SocketAddr;

use clap::{Args, Subcommand};
use serde::Serialize;

use super::args::{GlobalArgs, JobsArgs, ShowArgs, SnapshotsArgs};
use super::exit::{CliError, ExitStatus};
use super::output::Output;
use super::show::{JobDocument, ShowOutput};
use crate::backup::setup;
use crate::catalog::CatalogEntry;
use crate::daemon::backup::{run_from_config, signals, DaemonStartError, RunOptions};
use crate::daemon::client::{block_on, DaemonClient, DaemonClientError};
use crate::daemon::settings::{self, ScheduleSpec};
use crate::schedule::Schedule;

#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// Listen here instead of `[daemon] listen` (status, /metrics, freshness page).
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<SocketAddr>,
}

#[derive(Debug, Subcommand)]
pub enum ScheduleCommand {
    /// Print the upcoming fire times of the configured schedules (or of --cron).
    Next(ScheduleNextArgs),
}

#[derive(Debug, Args)]
pub struct ScheduleNextArgs {
    /// How many fire times per schedule (1–1000).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub count: u16,
    /// Only this schedule.
    #[arg(long, value_name = "NAME")]
    pub schedule: Option<String>,
    /// Evaluate this expression instead of the configuration's schedules.
    #[arg(long, value_name = "EXPR")]
    pub cron: Option<String>,
    /// Time zone for --cron (IANA name; default Asia/Shanghai).
    #[arg(long, value_name = "ZONE", requires = "cron")]
    pub time_zone: Option<String>,
}

pub async fn daemon(g: &GlobalArgs, a: DaemonArgs, out: Output) -> Result<ExitStatus, CliError> {
    let (shutdown, reload) =
        signals().map_err(|e| CliError::error(format!("cannot install signal handlers: {e}")))?;
    let (tx, rx) = tokio::sync::oneshot::channel::<SocketAddr>();
    tokio::spawn(async move {
        if let Ok(addr) = rx.await {
            out.message(
                "listening",
                &serde_json::json!({ "address": addr.to_string() }),
            );
            out.text(&format!("status listener on http://{addr}/"));
        }
    });
    run_from_config(
        RunOptions {
            config_path: g.config.clone(),
            listen: a.listen,
            bound: Some(tx),
        },
        shutdown,
        reload,
    )
    .await
    .map_err(|e| match e {
        DaemonStartError::Config(m) => CliError::new(ExitStatus::ConfigOrStoreMissing, m),
        DaemonStartError::Locked(m) => CliError::new(ExitStatus::StoreLocked, m),
        DaemonStartError::Credentials(m) => CliError::credentials(m),
        DaemonStartError::Other(m) => CliError::error(m),
    })?;
    Ok(ExitStatus::Ok)
}

#[derive(Serialize)]
struct NextFires {
    schedule: String,
    cron: String,
    time_zone: String,
    next: Vec<String>,
}

pub fn schedule(g: &GlobalArgs, c: ScheduleCommand, out: Output) -> Result<ExitStatus, CliError> {
    let ScheduleCommand::Next(a) = c;
    let specs: Vec<(String, Schedule)> = match &a.cron {
        Some(expr) => {
            let s = Schedule::new(expr, a.time_zone.as_deref())
                .map_err(|e| CliError::new(ExitStatus::ConfigOrStoreMissing, e.to_string()))?;
            vec![("cron".to_string(), s)]
        }
        None => {
            let config = setup::load(&g.config).map_err(super::commands::setup_error)?;
            // Fire times need no secrets: check the structure only.
            let problems = settings::check_structure(
                config.daemon.as_ref().map(|d| &d.0),
                &config.schedules,
                &config.apps,
            );
            if !problems.is_empty() {
                let text: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
                return Err(CliError::new(
                    ExitStatus::ConfigOrStoreMissing,
                    text.join("\n"),
                ));
            }
            let mut specs: Vec<ScheduleSpec> = Vec::new();
            if config.schedules.is_empty() {
                specs.push(
                    ScheduleSpec::default_schedule().map_err(|e| CliError::error(e.to_string()))?,
                );
            } else {
                for raw in &config.schedules {
                    let name = raw.get("name").and_then(|v| v.as_str()).unwrap_or("");
                    let cron = raw
                        .get("cron")
                        .and_then(|v| v.as_str())
                        .unwrap_or(crate::schedule::DEFAULT_CRON);
                    let tz = raw.get("time_zone").and_then(|v| v.as_str());
                    let schedule = Schedule::new(cron, tz).map_err(|e| {
                        CliError::new(ExitStatus::ConfigOrStoreMissing, e.to_string())
                    })?;
                    let mut spec = ScheduleSpec::default_schedule()
                        .map_err(|e| CliError::error(e.to_string()))?;
                    spec.name = name.to_string();
                    spec.schedule = schedule;
                    specs.push(spec);
                }
            }
            specs.into_iter().map(|s| (s.name, s.schedule)).collect()
        }
    };
    let now = jiff::Timestamp::now();
    let mut any = false;
    let mut docs = Vec::new();
    for (name, schedule) in specs {
        if a.schedule.as_ref().is_some_and(|want| want != &name) {
            continue;
        }
        any = true;
        let next: Vec<String> = schedule
            .upcoming(now, usize::from(a.count))
            .iter()
            .map(|z| z.strftime("%Y-%m-%d %H:%M:%S %:z (%a)").to_string())
            .collect();
        let mut text = format!(
            "{name}: `{}` in {}\n",
            schedule.cron(),
            schedule.time_zone_name()
        );
        if next.is_empty() {
            text.push_str("  never fires again\n");
        }
        for n in &next {
            text.push_str(&format!("  {n}\n"));
        }
        out.text(&text);
        docs.push(NextFires {
            schedule: name,
            cron: schedule.cron().to_string(),
            time_zone: schedule.time_zone_name().to_string(),
            next,
        });
    }
    if !any {
        return Err(CliError::error(format!(
            "no schedule named {:?} in the configuration",
            a.schedule.unwrap_or_default()
        )));
    }
    out.document(&docs);
    Ok(ExitStatus::Ok)
}

// ---------------------------------------------------------------- asking a running daemon

/// The daemon client of the configuration, or the original "store locked" error when there is
/// no reachable daemon to ask.
fn daemon_client(g: &GlobalArgs, locked: &CliError) -> Result<DaemonClient, CliError> {
    DaemonClient::from_config(&g.config)
        .map_err(|e| CliError::new(ExitStatus::StoreLocked, format!("{} ({e})", locked.message)))
}

fn remote_error(locked: &CliError, e: DaemonClientError) -> CliError {
    CliError::new(ExitStatus::StoreLocked, format!("{} ({e})", locked.message))
}

/// `snapshots` answered by the daemon (same output as when reading the store).
pub fn remote_snapshots(
    g: &GlobalArgs,
    a: SnapshotsArgs,
    out: Output,
    locked: CliError,
) -> Result<ExitStatus, CliError> {
    let client = daemon_client(g, &locked)?;
    let list = block_on(client.snapshots(a.env.as_deref(), a.collection.as_deref()))
        .map_err(|e| remote_error(&locked, e))?;
    super::commands::print_snapshots(list, a.limit, " (from the running daemon)", &out);
    Ok(ExitStatus::Ok)
}

/// `jobs` answered by the daemon.
pub fn remote_jobs(
    g: &GlobalArgs,
    a: JobsArgs,
    out: Output,
    locked: CliError,
) -> Result<ExitStatus, CliError> {
    let client = daemon_client(g, &locked)?;
    let list = block_on(client.jobs(a.all)).map_err(|e| remote_error(&locked, e))?;
    super::commands::print_jobs(list, "(from the running daemon)", &out);
    Ok(ExitStatus::Ok)
}

/// `show` answered by the daemon: a job id, or a snapshot id / export job id.
pub fn remote_show(
    g: &GlobalArgs,
    a: ShowArgs,
    out: Output,
    locked: CliError,
) -> Result<ExitStatus, CliError> {
    let client = daemon_client(g, &locked)?;
    let query = a.id.trim().to_string();
    let (snapshot, job) = block_on(async {
        let job = match query.parse::<u64>() {
            Ok(n) => client.job(n).await?,
            Err(_) => None,
        };
        let catalog = client.snapshots(None, None).await?;
        let snapshot = match &job {
            Some(v) => catalog
                .into_iter()
                .find(|l| l.record.job == Some(v.summary.id.0)),
            None => {
                // The same look-up as the local `show`: full id, unique prefix or export job id.
                let entries: Vec<CatalogEntry> =
                    catalog.iter().map(|l| l.record.entry.clone()).collect();
                let found = crate::catalog::find(&entries, &query)
                    .ok()
                    .map(|e| e.id.clone());
                catalog
                    .into_iter()
                    .find(|l| Some(l.record.id()) == found.as_deref())
            }
        };
        let job = match (&job, &snapshot) {
            (None, Some(l)) => match l.record.job {
                Some(j) => client.job(j).await?,
                None => None,
            },
            _ => job,
        };
        Ok::<_, DaemonClientError>((snapshot, job))
    })
    .map_err(|e| remote_error(&locked, e))?;
    if snapshot.is_none() && job.is_none() {
        return Err(CliError::error(format!(
            "no snapshot or job {:?} (see `tcb-backup snapshots` and `tcb-backup jobs --all`)",
            a.id
        )));
    }
    let (snapshot, snapshot_status) = match snapshot {
        Some(l) => (Some(l.record), Some(l.status)),
        None => (None, None),
    };
    let result = ShowOutput {
        snapshot,
        snapshot_status,
        job: job.as_ref().map(JobDocument::from),
    };
    out.document(&result);
    if !out.is_json() {
        super::show::print(&result, &out);
        out.text("(from the running daemon)");
    }
    Ok(ExitStatus::Ok)
}
