//! From the configuration's `[[destinations]]` to running copies: which destinations each env's
//! snapshots go to ([`CopyPlan`]), the destinations themselves ([`build_destinations`]), the
//! copy jobs a recorded snapshot gets ([`CopySubmitter`]), the catch-up at the start of a run
//! that re-queues copies waiting out a back-off and resubmits failed or missing ones
//! ([`catch_up`]), and what a run or `snapshots` reports about copies ([`copy_lines`]).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;
use tcb_state::{Engine, JobFilter, JobId, JobStatus, RetryPolicy, SubmitOptions, WeakEngine};

use super::cloudbase::CloudBaseByEnv;
use super::copy::{
    default_copy_retry, submit_copies, CopyRecords, CopyState, CopyWorkflow, Destinations,
};
use super::local::LocalDir;
use super::s3::{S3Destination, S3Settings};
use crate::backup::settings::AppClients;
use crate::catalog::CatalogEntry;
use crate::config::{resolve_credential, Config, CopyDestinationKind};
use crate::retention::RetentionPolicy;

/// One configured destination as the workflows see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedDestination {
    pub name: String,
    /// `None`: every env.
    pub envs: Option<Vec<String>>,
    pub retention: Option<RetentionPolicy>,
}

/// Which destinations receive which env's snapshots.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CopyPlan {
    pub destinations: Vec<PlannedDestination>,
}

impl CopyPlan {
    pub fn from_config(config: &Config) -> CopyPlan {
        CopyPlan {
            destinations: config
                .destinations
                .iter()
                .map(|d| PlannedDestination {
                    name: d.name.clone(),
                    envs: d.envs.clone(),
                    retention: d.retention.clone(),
                })
                .collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.destinations.is_empty()
    }

    /// The destinations that have their own retention, with it.
    pub fn retention_policies(&self) -> Vec<(String, RetentionPolicy)> {
        self.destinations
            .iter()
            .filter_map(|d| d.retention.clone().map(|p| (d.name.clone(), p)))
            .collect()
    }

    /// The destinations snapshots of `env` are copied to, in configuration order.
    pub fn for_env(&self, env: &str) -> Vec<String> {
        self.destinations
            .iter()
            .filter(|d| d.envs.as_ref().is_none_or(|e| e.iter().any(|e| e == env)))
            .map(|d| d.name.clone())
            .collect()
    }
}

/// Everything the copy side of a store needs at run time.
#[derive(Clone)]
pub struct CopySettings {
    pub plan: CopyPlan,
    /// Empty when prepared offline (no credentials resolved).
    pub destinations: Destinations,
    pub retry: RetryPolicy,
}

impl Default for CopySettings {
    fn default() -> Self {
        CopySettings {
            plan: CopyPlan::default(),
            destinations: Destinations::new(),
            retry: default_copy_retry(),
        }
    }
}

impl std::fmt::Debug for CopySettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&String> = self.destinations.names().collect();
        names.sort();
        f.debug_struct("CopySettings")
            .field("plan", &self.plan)
            .field("destinations", &names)
            .field("retry", &self.retry)
            .finish()
    }
}

/// Builds the configured destinations, reading S3 keys from their sources. A `cloudbase`
/// destination needs the apps' clients; without them (offline) it is left out, so its copies
/// cannot be written or deleted from here.
pub fn build_destinations(
    config: &Config,
    clients: Option<&AppClients>,
) -> Result<Destinations, String> {
    let mut out = Destinations::new();
    for d in &config.destinations {
        match &d.kind {
            CopyDestinationKind::Local { path } => {
                out.insert(Arc::new(LocalDir::new(d.name.clone(), path.clone())));
            }
            CopyDestinationKind::S3 {
                bucket,
                prefix,
                endpoint,
                region,
                access_key_id,
                secret_access_key,
                allow_http,
            } => {
                let key = |source| {
                    resolve_credential(source)
                        .map_err(|e| format!("destination {}: S3 key: {e}", d.name))
                };
                let settings = S3Settings {
                    bucket: bucket.clone(),
                    prefix: prefix.clone(),
                    endpoint: endpoint.clone(),
                    region: region.clone(),
                    access_key_id: key(access_key_id)?,
                    secret_access_key: key(secret_access_key)?,
                    allow_http: *allow_http,
                };
                let s3 = S3Destination::new(d.name.clone(), settings).map_err(|e| e.to_string())?;
                out.insert(Arc::new(s3));
            }
            CopyDestinationKind::CloudBase { prefix } => {
                let Some(clients) = clients else { continue };
                let mut by_env = CloudBaseByEnv::new(d.name.clone(), prefix.clone());
                for app in &config.apps {
                    let Some(client) = clients.get(&app.appid) else {
                        continue;
                    };
                    for env in &app.envs {
                        if d.applies_to(&env.id) {
                            by_env.add_env(&env.id, client.clone());
                        }
                    }
                }
                out.insert(Arc::new(by_env));
            }
        }
    }
    Ok(out)
}

/// What the backup step uses to submit the copies of a snapshot it recorded.
#[derive(Clone)]
pub struct CopySubmitter {
    engine: WeakEngine,
    plan: CopyPlan,
    root: PathBuf,
}

impl CopySubmitter {
    pub fn new(engine: WeakEngine, plan: CopyPlan, root: PathBuf) -> Self {
        CopySubmitter { engine, plan, root }
    }

    /// One `copy.snapshot` job per destination of the entry's env (deduplicated by snapshot
    /// and destination, so a repeated step submits nothing new).
    pub fn submit(&self, entry: &CatalogEntry) -> Result<Vec<JobId>, String> {
        let names = self.plan.for_env(entry.env());
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let engine = self
            .engine
            .upgrade()
            .ok_or_else(|| "the job store is closing".to_string())?;
        submit_copies(&engine, entry, &self.root, &names)
    }
}

/// A copy job's (snapshot id, destination name).
type CopyKey = (String, String);

/// The copy jobs (only the unfinished ones with `active_only`) that `wanted` keeps, each with
/// the snapshot and destination it copies, in id order.
fn copy_jobs(
    engine: &Engine,
    active_only: bool,
    wanted: impl Fn(&tcb_state::JobSummary) -> bool,
) -> Result<Vec<(CopyKey, tcb_state::JobSummary)>, String> {
    let filter = JobFilter {
        kind: Some(CopyWorkflow::KIND_NAME.to_string()),
        active_only,
        ..JobFilter::default()
    };
    let mut out = Vec::new();
    for summary in engine.list(&filter).map_err(|e| e.to_string())? {
        if !wanted(&summary) {
            continue;
        }
        let Some(view) = engine.job(summary.id).map_err(|e| e.to_string())? else {
            continue;
        };
        if let Ok(state) = serde_json::from_value::<CopyState>(view.state) {
            out.push(((state.snapshot_id, state.destination), summary));
        }
    }
    Ok(out)
}

/// True for a copy job that failed and waits out its back-off.
fn backing_off(job: &tcb_state::JobSummary, now: SystemTime) -> bool {
    job.status == JobStatus::Queued && job.attempt > 0 && job.due_at.is_some_and(|d| d > now)
}

/// What [`catch_up`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CatchUp {
    /// Copies waiting out a back-off that were woken to try now.
    pub restarted: usize,
    /// Copies submitted because none was recorded or pending (failed earlier, or the snapshot
    /// predates the destination).
    pub submitted: usize,
}

/// At the start of a run: every snapshot in `entries` should have a copy at each destination
/// of its env. A copy that is recorded is left alone; one waiting out a back-off is tried now
/// (its job woken); a missing one (its job failed, or the snapshot is older than the
/// destination) is submitted.
pub fn catch_up(
    engine: &Engine,
    entries: &[CatalogEntry],
    plan: &CopyPlan,
    root: &Path,
    records: &CopyRecords,
) -> Result<CatchUp, String> {
    let mut done = CatchUp::default();
    if plan.is_empty() {
        return Ok(done);
    }
    let now = engine.clock().now();
    let active: HashMap<_, _> = copy_jobs(engine, true, |_| true)?.into_iter().collect();
    for entry in entries {
        // A snapshot whose files are gone cannot be copied; `check` reports it.
        if !entry.data_path.is_file() || !entry.manifest_path.is_file() {
            continue;
        }
        for d in plan.for_env(entry.env()) {
            if records
                .get(&entry.id, &d)
                .map_err(|e| e.to_string())?
                .is_some()
            {
                continue;
            }
            match active.get(&(entry.id.clone(), d.clone())) {
                Some(job) => {
                    if backing_off(job, now) {
                        engine.wake(job.id).map_err(|e| e.to_string())?;
                        done.restarted += 1;
                    }
                    continue;
                }
                None => done.submitted += 1,
            }
            let state = CopyState::new(entry, root, &d)?;
            engine
                .submit::<CopyWorkflow>(
                    state,
                    SubmitOptions::label(format!("copy {} → {d}", entry.id)),
                )
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(done)
}

/// True when no copy job needs the runner now: each one is finished or waiting out a
/// back-off after a failure (its destination is down). A backup waits for this before it
/// exits, so copies to reachable destinations are done by then.
pub fn copies_settled(engine: &Engine) -> Result<bool, String> {
    let now = engine.clock().now();
    let filter = JobFilter {
        kind: Some(CopyWorkflow::KIND_NAME.to_string()),
        active_only: true,
        ..JobFilter::default()
    };
    // Summaries only: this runs after every event while a backup waits for its copies.
    Ok(engine
        .list(&filter)
        .map_err(|e| e.to_string())?
        .iter()
        .all(|j| backing_off(j, now)))
}

/// Where a snapshot's copy to one destination stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CopyStatus {
    Copied,
    /// Queued, running, or waiting to be retried.
    Pending,
    /// Its job failed or was cancelled; the next backup submits it again.
    Failed,
}

impl std::fmt::Display for CopyStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CopyStatus::Copied => "copied",
            CopyStatus::Pending => "pending",
            CopyStatus::Failed => "failed",
        })
    }
}

/// One snapshot × destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CopyLine {
    pub snapshot_id: String,
    pub destination: String,
    pub status: CopyStatus,
    pub job: Option<u64>,
    pub error: Option<String>,
}

/// Where the copies of `entries` stand at the destinations of their envs.
pub fn copy_lines(
    engine: &Engine,
    entries: &[CatalogEntry],
    plan: &CopyPlan,
    records: &CopyRecords,
) -> Result<Vec<CopyLine>, String> {
    if plan.is_empty() || entries.is_empty() {
        return Ok(Vec::new());
    }
    // The newest job per (snapshot, destination) that did not succeed (jobs come in id
    // order, so a later one replaces an earlier one).
    let latest: BTreeMap<CopyKey, tcb_state::JobSummary> =
        copy_jobs(engine, false, |j| j.status != JobStatus::Succeeded)?
            .into_iter()
            .collect();
    let mut out = Vec::new();
    for entry in entries {
        for d in plan.for_env(entry.env()) {
            let copied = records
                .get(&entry.id, &d)
                .map_err(|e| e.to_string())?
                .is_some();
            let job = latest.get(&(entry.id.clone(), d.clone()));
            let (status, error) = match job {
                _ if copied => (CopyStatus::Copied, None),
                Some(j) if !j.status.is_terminal() => (CopyStatus::Pending, j.last_error.clone()),
                Some(j) => (CopyStatus::Failed, j.last_error.clone()),
                None => (
                    CopyStatus::Pending,
                    Some("not submitted yet (the next backup submits it)".to_string()),
                ),
            };
            out.push(CopyLine {
                snapshot_id: entry.id.clone(),
                destination: d,
                status,
                job: job.filter(|_| !copied).map(|j| j.id.0),
                error,
            });
        }
    }
    Ok(out)
}
