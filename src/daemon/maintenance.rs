//! Scheduled `check` and `forget`: the `daemon.maintenance` workflow kind a check or forget
//! schedule's fire submits (a backup schedule submits `backup.run` instead).
//!
//! It only wires the library functions to the engine: [`crate::verify::check_entries_with`] and
//! [`crate::verify::check::record_report`] for a check, `restore.collection` children planned by
//! [`crate::verify::test_restore::plan_test_restore`] and judged by
//! [`crate::verify::test_restore::finish_test_restore`] for test restores, and
//! [`crate::retention::forget::forget`] for a forget. Results go to the
//! [`VerificationStore`] like the CLI's; the job's output ([`MaintenanceOutput`]) says whether
//! anything failed, which the daemon turns into an alert.
//!
//! A check with problems (or a forget whose deletions failed) ends `PartiallyFailed`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tcb_state::{ChildSpec, JobStatus, StepContext, StepError, Transition, WeakEngine, Workflow};
use time::OffsetDateTime;

use super::alerts::AlertItem;
use super::settings::{CheckTask, ForgetTask, ScheduleSpec, ScheduleTask};
use crate::archive::encrypt::Identities;
use crate::backup::catalog_store::SnapshotCatalog;
use crate::backup::settings::AppClients;
use crate::catalog::CatalogEntry;
use crate::destination::copy::Destinations;
use crate::restore::RestoreWorkflow;
use crate::retention::forget::{forget, kept_entries, CatalogHooks, ForgetOptions, RemoteCopies};
use crate::retention::RetentionPolicy;
use crate::verify::check::record_report;
use crate::verify::test_restore::{
    finish_test_restore, plan_test_restore, Comparison, RestoreJobEnd,
};
use crate::verify::{check_entries_with, CheckOptions, DataRead, Verdict, VerificationStore};

/// The engine kind of a scheduled check or forget.
pub const MAINTENANCE_KIND: &str = "daemon.maintenance";

/// What one fire asks for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MaintenanceTask {
    pub schedule: String,
    /// The selection (empty: all).
    pub envs: Vec<String>,
    pub collections: Vec<String>,
    pub work: MaintenanceWork,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MaintenanceWork {
    Check(CheckTask),
    Forget(ForgetTask),
}

impl MaintenanceTask {
    /// The task of a check or forget schedule; `None` for a backup schedule.
    pub fn of(spec: &ScheduleSpec) -> Option<MaintenanceTask> {
        let work = match &spec.task {
            ScheduleTask::Backup => return None,
            ScheduleTask::Check(c) => MaintenanceWork::Check(c.clone()),
            ScheduleTask::Forget(f) => MaintenanceWork::Forget(f.clone()),
        };
        Some(MaintenanceTask {
            schedule: spec.name.clone(),
            envs: spec.envs.clone(),
            collections: spec.collections.clone(),
            work,
        })
    }

    fn selects(&self, e: &CatalogEntry) -> bool {
        (self.envs.is_empty() || self.envs.contains(&e.manifest.env))
            && (self.collections.is_empty() || self.collections.contains(&e.manifest.collection))
    }
}

/// The persisted state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum MaintenanceState {
    Start(MaintenanceTask),
    /// The check is recorded; the test restores run as children.
    TestRestoring {
        task: MaintenanceTask,
        checked: MaintenanceOutput,
        restores: Vec<PendingTestRestore>,
    },
}

/// One test restore running as a child job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PendingTestRestore {
    pub snapshot_id: String,
    pub env: String,
    pub scratch_collection: String,
    pub sample: usize,
    /// When it was planned: a verification record at or after this time means the result was
    /// already judged and recorded (the judging step is being repeated after a crash).
    #[serde(with = "time::serde::rfc3339")]
    pub planned_at: OffsetDateTime,
}

/// The job's output.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MaintenanceOutput {
    /// `check` or `forget`.
    pub task: String,
    pub ok: bool,
    pub summary: String,
    /// What failed, per snapshot or collection.
    pub problems: Vec<AlertItem>,
}

/// What the workflow uses; replaced on reload.
#[derive(Clone)]
pub struct MaintenanceWorkflow {
    pub engine: WeakEngine,
    pub catalog: SnapshotCatalog,
    pub store: VerificationStore,
    /// For test restores (the comparison queries and dropping the scratch collection).
    pub clients: Arc<AppClients>,
    /// `encryption.identity_file`: reads the data of encrypted snapshots; without it their data
    /// checks report that an identity is needed.
    pub identity_file: Option<PathBuf>,
    /// Where the recorded copies of forgotten snapshots are deleted (`[[destinations]]`); a
    /// snapshot with a copy at a destination not in here is kept, with an error.
    pub destinations: Destinations,
    /// The destinations with their own retention, applied to their copies after a forget.
    pub copy_policies: Vec<(String, RetentionPolicy)>,
}

fn offset(t: SystemTime) -> OffsetDateTime {
    OffsetDateTime::from(t)
}

fn internal(e: impl std::fmt::Display) -> StepError {
    StepError::retryable(e.to_string())
}

fn item(e: &CatalogEntry, status: &str, detail: Option<String>) -> AlertItem {
    AlertItem {
        env: e.manifest.env.clone(),
        collection: e.manifest.collection.clone(),
        status: status.to_string(),
        detail: Some(match detail {
            Some(d) => format!("{}: {d}", e.id),
            None => e.id.clone(),
        }),
    }
}

/// The alert status of a check that did not pass: a check that could not judge a snapshot
/// (no key, an I/O error) is not a failed snapshot and must not read like one.
fn verdict_status(verdict: Verdict) -> &'static str {
    match verdict {
        Verdict::Inconclusive => "check could not judge",
        _ => "check failed",
    }
}

fn finish(out: MaintenanceOutput, state: MaintenanceState) -> Transition<MaintenanceState> {
    let output = serde_json::to_value(&out).unwrap_or_default();
    if out.ok {
        Transition::Complete { state, output }
    } else {
        Transition::CompletePartial { state, output }
    }
}

impl MaintenanceWorkflow {
    fn entries(&self, task: &MaintenanceTask) -> Result<Vec<CatalogEntry>, StepError> {
        Ok(self
            .catalog
            .list(None, None)
            .map_err(internal)?
            .into_iter()
            .map(|r| r.entry)
            .filter(|e| task.selects(e))
            .collect())
    }

    async fn check(
        &self,
        task: MaintenanceTask,
        c: CheckTask,
        now: OffsetDateTime,
    ) -> Result<Transition<MaintenanceState>, StepError> {
        let entries = self.entries(&task)?;
        let records = self.store.all().map_err(internal)?;
        let read = match c.read_data_percent {
            None => DataRead::None,
            Some(p) if p >= 100.0 => DataRead::All,
            Some(p) => DataRead::Subset(p),
        };
        let to_check = entries.clone();
        let identities = match &self.identity_file {
            Some(path) if entries.iter().any(|e| e.manifest.encryption.is_some()) => {
                Some(Identities::load(path).map_err(|e| StepError::permanent(e.to_string()))?)
            }
            _ => None,
        };
        let report = tokio::task::spawn_blocking(move || {
            check_entries_with(
                &to_check,
                &records,
                CheckOptions { read },
                identities.as_ref(),
            )
        })
        .await
        .map_err(internal)?;
        record_report(&self.store, &report, now).map_err(internal)?;
        let by_id: BTreeMap<&str, &CatalogEntry> =
            entries.iter().map(|e| (e.id.as_str(), e)).collect();
        let mut problems = Vec::new();
        for f in report.failures() {
            if let Some(e) = by_id.get(f.id.as_str()) {
                problems.push(item(e, verdict_status(f.verdict), f.error.clone()));
            }
        }
        let read_count = report.entries.iter().filter(|e| e.read_data).count();
        let mut checked = MaintenanceOutput {
            task: "check".to_string(),
            ok: problems.is_empty(),
            summary: format!(
                "check `{}`: {} snapshot(s) checked ({} with their data read), {} failed",
                task.schedule,
                report.entries.len(),
                read_count,
                problems.len()
            ),
            problems,
        };
        if !c.test_restore {
            return Ok(finish(checked.clone(), MaintenanceState::Start(task)));
        }
        // The newest snapshot of each env/collection, like `check --test-restore`.
        let mut newest: BTreeMap<(String, String), &CatalogEntry> = BTreeMap::new();
        for e in &entries {
            let key = (e.manifest.env.clone(), e.manifest.collection.clone());
            if newest
                .get(&key)
                .is_none_or(|cur| cur.manifest.finished_at < e.manifest.finished_at)
            {
                newest.insert(key, e);
            }
        }
        let mut restores = Vec::new();
        let mut children = Vec::new();
        for e in newest.values() {
            if self.clients.get(&e.manifest.appid).is_none() {
                checked.problems.push(item(
                    e,
                    "test restore failed",
                    Some(format!("app {} is not configured", e.manifest.appid)),
                ));
                continue;
            }
            match plan_test_restore(e, now, self.identity_file.as_deref()) {
                Ok(p) => {
                    let child = ChildSpec::of::<RestoreWorkflow>(
                        &p.state,
                        format!("test-restore {}", e.id),
                    )
                    .map_err(internal)?;
                    children.push(child);
                    restores.push(PendingTestRestore {
                        snapshot_id: e.id.clone(),
                        env: p.env,
                        scratch_collection: p.scratch_collection,
                        sample: c.sample,
                        planned_at: now,
                    });
                }
                Err(err) => {
                    checked
                        .problems
                        .push(item(e, "test restore failed", Some(err.to_string())))
                }
            }
        }
        checked.ok = checked.problems.is_empty();
        if children.is_empty() {
            return Ok(finish(checked, MaintenanceState::Start(task)));
        }
        Ok(Transition::SpawnChildren {
            state: MaintenanceState::TestRestoring {
                task,
                checked,
                restores,
            },
            children,
        })
    }

    async fn judge_restores(
        &self,
        ctx: &StepContext,
        task: MaintenanceTask,
        mut out: MaintenanceOutput,
        restores: Vec<PendingTestRestore>,
        now: OffsetDateTime,
    ) -> Result<Transition<MaintenanceState>, StepError> {
        let mut passed = 0;
        for (pending, child) in restores.iter().zip(&ctx.children) {
            let entry = match self.catalog.find(&pending.snapshot_id) {
                Ok(r) => r.entry,
                Err(e) => {
                    out.problems.push(AlertItem {
                        env: pending.env.clone(),
                        collection: String::new(),
                        status: "test restore failed".to_string(),
                        detail: Some(format!("{}: {e}", pending.snapshot_id)),
                    });
                    continue;
                }
            };
            // Judged before a crash: the scratch collection is already gone, so comparing again
            // would report a false failure. Take the recorded result instead.
            let recorded = self.store.get(&entry.id).map_err(internal)?;
            if let Some(r) = recorded.filter(|r| {
                r.last_test_restored_at
                    .is_some_and(|t| t >= pending.planned_at)
            }) {
                match r.last_test_restore_ok {
                    Some(true) => passed += 1,
                    _ => out.problems.push(item(
                        &entry,
                        "test restore failed",
                        r.last_test_restore_error.clone(),
                    )),
                }
                continue;
            }
            let Some(client) = self.clients.get(&entry.manifest.appid) else {
                out.problems.push(item(
                    &entry,
                    "test restore failed",
                    Some(format!("app {} is not configured", entry.manifest.appid)),
                ));
                continue;
            };
            let end = RestoreJobEnd {
                job: child.id,
                status: child.status,
                output: child.output.clone(),
                error: child.error.clone(),
            };
            match finish_test_restore(
                client,
                &self.store,
                &entry,
                (pending.env.as_str(), pending.scratch_collection.as_str()),
                &end,
                Comparison {
                    sample_size: pending.sample,
                    identity_file: self.identity_file.as_deref(),
                },
                now,
            )
            .await
            {
                Ok(r) if r.ok() => passed += 1,
                Ok(r) => out.problems.push(item(
                    &entry,
                    "test restore failed",
                    Some(r.problems.join("; ")),
                )),
                Err(e) => {
                    out.problems
                        .push(item(&entry, "test restore failed", Some(e.to_string())))
                }
            }
            if child.status != JobStatus::Succeeded {
                tracing::warn!(snapshot = %entry.id, status = %child.status, "test restore job did not succeed");
            }
        }
        out.ok = out.problems.is_empty();
        out.summary = format!(
            "{}; {passed} of {} test restore(s) passed",
            out.summary,
            restores.len()
        );
        Ok(finish(out, MaintenanceState::Start(task)))
    }

    async fn forget(
        &self,
        task: MaintenanceTask,
        f: ForgetTask,
        now: OffsetDateTime,
    ) -> Result<Transition<MaintenanceState>, StepError> {
        let engine = self
            .engine
            .upgrade()
            .ok_or_else(|| StepError::permanent("the state store is closed"))?;
        let entries = self.entries(&task)?;
        let store = self.store.clone();
        let opts = ForgetOptions {
            policy: f.policy.clone(),
            prune: f.prune,
            dry_run: false,
        };
        let remote = RemoteCopies {
            destinations: self.destinations.clone(),
            runtime: tokio::runtime::Handle::current(),
        };
        let mut hooks = CatalogHooks::new(&engine, Some(remote));
        let by_id: BTreeMap<String, CatalogEntry> =
            entries.iter().map(|e| (e.id.clone(), e.clone())).collect();
        let policies = self.copy_policies.clone();
        let (report, copies) = tokio::task::spawn_blocking(move || {
            let report = forget(&entries, &store, &opts, &mut hooks, now)?;
            let records = store.all().map_err(|e| e.to_string())?;
            let kept = kept_entries(&entries, &report);
            let copies = hooks.forget_copies(&policies, &kept, &records, opts.prune);
            Ok::<_, String>((report, copies))
        })
        .await
        .map_err(internal)?
        .map_err(StepError::permanent)?;
        let forgettable = report.plan.forget_ids().count();
        let kept: usize = report.plan.groups.iter().map(|g| g.keep.len()).sum();
        let errors = report.errors.len() + copies.iter().map(|d| d.errors.len()).sum::<usize>();
        let copy_errors = copies.iter().flat_map(|d| {
            d.errors
                .iter()
                .map(move |e| format!("copy at {}: {e}", d.destination))
        });
        let mut problems: Vec<AlertItem> = report
            .errors
            .iter()
            .cloned()
            .chain(copy_errors)
            .map(|e| AlertItem {
                env: String::new(),
                collection: String::new(),
                status: "forget failed".to_string(),
                detail: Some(e),
            })
            .collect();
        let copies_forgotten: usize = copies.iter().map(|d| d.plan.forget_ids().count()).sum();
        for c in report.verified_now.failures() {
            if let Some(e) = by_id.get(&c.id) {
                problems.push(item(e, verdict_status(c.verdict), c.error.clone()));
            }
        }
        let out = MaintenanceOutput {
            task: "forget".to_string(),
            ok: problems.is_empty(),
            summary: format!(
                "forget `{}`: {kept} kept, {forgettable} {}{}, {copies_forgotten} copies forgotten by their destinations' retention, {} error(s)",
                task.schedule,
                if report.deleted {
                    "deleted"
                } else {
                    "to forget (prune is off)"
                },
                if report.spared.is_empty() {
                    String::new()
                } else {
                    format!(
                        " ({} marked failed but kept: the check before deleting did not confirm it)",
                        report.spared.len()
                    )
                },
                errors
            ),
            problems,
        };
        Ok(finish(out, MaintenanceState::Start(task)))
    }
}

impl Workflow for MaintenanceWorkflow {
    type State = MaintenanceState;
    const KIND: &'static str = MAINTENANCE_KIND;
    const SCHEMA_VERSION: u32 = 1;

    fn step_timeout(&self) -> Duration {
        // A check with --read-data decompresses every snapshot in one step.
        Duration::from_secs(6 * 3600)
    }

    async fn step(
        &self,
        ctx: StepContext,
        state: MaintenanceState,
    ) -> Result<Transition<MaintenanceState>, StepError> {
        let now = offset(ctx.now);
        match state {
            MaintenanceState::Start(task) => match task.work.clone() {
                MaintenanceWork::Check(c) => self.check(task, c, now).await,
                MaintenanceWork::Forget(f) => self.forget(task, f, now).await,
            },
            MaintenanceState::TestRestoring {
                task,
                checked,
                restores,
            } => {
                self.judge_restores(&ctx, task, checked, restores, now)
                    .await
            }
        }
    }
}
