//! Opening a store and driving backups: the glue between the engine, the workflows and the
//! CLI (and the tests, which drive it in-process).

use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tcb_state::{
    Engine, EngineError, EngineOptions, JobFilter, JobId, JobStatus, KindLimits, SubmitOptions,
};

use super::catalog_store::SnapshotCatalog;
use super::collection::CollectionWorkflow;
use super::plan::BackupPlan;
use super::progress::SharedProgress;
use super::report::{run_report, RunReport};
use super::run::RunWorkflow;
use super::settings::{AppClients, WorkflowDeps, WorkflowSettings};
use super::slots::ExportSlots;
use super::state::{RunSelection, RunState};
use crate::destination::copy::{CopyRecords, CopyWorkflow};
use crate::destination::plan::{
    catch_up, copies_settled, copy_lines, CatchUp, CopyLine, CopySubmitter,
};

/// Copies running at once (they are I/O bound and mostly wait on the network).
const COPY_CONCURRENCY: usize = 2;

/// How many collection jobs run at once (global), from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct Concurrency {
    pub collections: usize,
}

/// An open store with both workflows registered.
#[derive(Clone)]
pub struct BackupService {
    pub engine: Engine,
    pub catalog: SnapshotCatalog,
    deps: WorkflowDeps,
    /// Exports in flight; kept across reconfigurations (the jobs holding them keep running).
    export_slots: Arc<ExportSlots>,
}

/// How a drive ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriveOutcome {
    /// Every awaited job is terminal.
    Idle,
    /// The shutdown future fired first (Ctrl-C); unfinished jobs resume next time.
    Interrupted,
}

impl BackupService {
    /// Opens (creating) the store in `state_dir` and registers the workflows.
    pub fn open(
        state_dir: &Path,
        options: EngineOptions,
        settings: WorkflowSettings,
        clients: AppClients,
        plan: BackupPlan,
        concurrency: Concurrency,
        progress: SharedProgress,
    ) -> Result<Self, EngineError> {
        let engine = Engine::open(state_dir, options)?;
        let catalog = SnapshotCatalog::new(engine.kv(SnapshotCatalog::NAMESPACE));
        let export_slots = ExportSlots::new(engine.downgrade(), concurrency.collections);
        let mut service = BackupService {
            engine,
            catalog,
            deps: WorkflowDeps::new(settings.clone(), clients.clone()),
            export_slots,
        };
        service.reconfigure(settings, clients, plan, concurrency, progress);
        let woken = super::collection::wake_slot_waiters(&service.engine)?;
        if woken > 0 {
            tracing::debug!(
                woken,
                "woke collections an earlier process left waiting for a slot"
            );
        }
        Ok(service)
    }

    /// (Re-)registers both workflows with these settings, clients, plan and concurrency (the
    /// daemon calls it on SIGHUP). Jobs keep their committed state: a step already running
    /// finishes with what it started with (as do the steps the engine chains right after it
    /// without releasing the job), every later claim uses the new workflows.
    pub fn reconfigure(
        &mut self,
        settings: WorkflowSettings,
        clients: AppClients,
        plan: BackupPlan,
        concurrency: Concurrency,
        progress: SharedProgress,
    ) {
        self.export_slots
            .set_limits(concurrency.collections, clients.limits());
        let mut deps = WorkflowDeps::new(settings, clients);
        deps.progress = progress;
        self.engine.register(
            CollectionWorkflow::new(
                deps.clone(),
                self.catalog.clone(),
                self.engine.kv(super::collection::FAILED_EXPORTS_NAMESPACE),
            )
            .with_copies(CopySubmitter::new(
                self.engine.downgrade(),
                deps.settings.copies.plan.clone(),
                deps.settings.destination.clone(),
            ))
            .with_export_slots(self.export_slots.clone()),
            KindLimits::new(concurrency.collections),
        );
        self.engine.register(
            RunWorkflow::new(deps.clone(), Arc::new(plan)),
            KindLimits::default(),
        );
        let copies = &deps.settings.copies;
        self.engine.register(
            CopyWorkflow::new(
                copies.destinations.clone(),
                CopyRecords::new(self.engine.kv(CopyRecords::NAMESPACE)),
            )
            .with_retry(copies.retry.clone()),
            KindLimits::new(COPY_CONCURRENCY),
        );
        self.deps = deps;
    }

    /// The settings the workflows currently run with.
    pub fn settings(&self) -> &WorkflowSettings {
        &self.deps.settings
    }

    pub fn clients(&self) -> &AppClients {
        &self.deps.clients
    }

    /// Runs that are not terminal yet (a previous process died or was interrupted).
    pub fn unfinished_runs(&self) -> Result<Vec<JobId>, EngineError> {
        let filter = JobFilter {
            kind: Some(RunWorkflow::KIND_NAME.to_string()),
            active_only: true,
            ..JobFilter::default()
        };
        Ok(self
            .engine
            .list(&filter)?
            .into_iter()
            .map(|s| s.id)
            .collect())
    }

    /// Submits a new run for `selection`.
    pub fn submit_run(&self, selection: RunSelection) -> Result<JobId, EngineError> {
        let label = describe(&selection);
        self.engine
            .submit::<RunWorkflow>(RunState::Start { selection }, SubmitOptions::label(label))
    }

    /// Runs the engine until every job in `until_done` is terminal (their children with them),
    /// or until `interrupt` fires; then stops gracefully (running steps get the engine's
    /// shutdown grace to commit, the rest resumes next time).
    pub async fn drive(
        &self,
        until_done: &[JobId],
        interrupt: impl Future<Output = ()>,
    ) -> Result<DriveOutcome, EngineError> {
        self.drive_until(until_done, false, interrupt).await
    }

    /// Like [`Self::drive`], then keeps the runner going until no copy job needs it now
    /// (every copy finished, or waiting out a back-off because its destination is down), so a
    /// backup exits with its copies to reachable destinations done.
    pub async fn drive_with_copies(
        &self,
        until_done: &[JobId],
        interrupt: impl Future<Output = ()>,
    ) -> Result<DriveOutcome, EngineError> {
        self.drive_until(until_done, true, interrupt).await
    }

    async fn drive_until(
        &self,
        until_done: &[JobId],
        copies_too: bool,
        interrupt: impl Future<Output = ()>,
    ) -> Result<DriveOutcome, EngineError> {
        let interrupted = Arc::new(AtomicBool::new(false));
        let flag = interrupted.clone();
        let engine = self.engine.clone();
        let jobs = until_done.to_vec();
        let stop = async move {
            let all_done = async {
                for job in &jobs {
                    if let Err(e) = engine.wait(*job).await {
                        tracing::warn!(%job, error = %e, "cannot wait for job");
                    }
                }
                if copies_too {
                    wait_for_copies(&engine).await;
                }
            };
            tokio::select! {
                () = interrupt => flag.store(true, Ordering::SeqCst),
                () = all_done => {}
            }
        };
        self.engine.run(stop).await?;
        Ok(if interrupted.load(Ordering::SeqCst) {
            DriveOutcome::Interrupted
        } else {
            DriveOutcome::Idle
        })
    }

    /// Copy bookkeeping at the start of a run (see [`catch_up`]).
    pub fn catch_up_copies(&self) -> Result<CatchUp, String> {
        let copies = &self.deps.settings.copies;
        if copies.plan.is_empty() {
            return Ok(CatchUp::default());
        }
        let entries: Vec<_> = self
            .catalog
            .all()
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|r| r.entry)
            .collect();
        catch_up(
            &self.engine,
            &entries,
            &copies.plan,
            &self.deps.settings.destination,
            &self.copy_records(),
        )
    }

    /// Where the copies of `snapshot_ids` stand.
    pub fn copy_lines(&self, snapshot_ids: &[String]) -> Result<Vec<CopyLine>, String> {
        let mut entries = Vec::new();
        for id in snapshot_ids {
            if let Some(r) = self.catalog.get(id).map_err(|e| e.to_string())? {
                entries.push(r.entry);
            }
        }
        copy_lines(
            &self.engine,
            &entries,
            &self.deps.settings.copies.plan,
            &self.copy_records(),
        )
    }

    /// The exports in flight (benchmarks and tests read its high-water mark).
    pub fn export_slots(&self) -> &ExportSlots {
        &self.export_slots
    }

    /// The configured off-site destinations (empty before [`Self::open`] with real clients).
    pub fn destinations(&self) -> &crate::destination::copy::Destinations {
        &self.deps.settings.copies.destinations
    }

    pub fn copy_records(&self) -> CopyRecords {
        CopyRecords::new(self.engine.kv(CopyRecords::NAMESPACE))
    }

    pub fn report(&self, run: JobId) -> Result<RunReport, EngineError> {
        run_report(&self.engine, run)
    }

    /// The selection a run was submitted with.
    pub fn selection_of(&self, run: JobId) -> Result<Option<RunSelection>, EngineError> {
        Ok(self.engine.job(run)?.and_then(|v| {
            serde_json::from_value::<RunState>(v.state)
                .ok()
                .map(|s| match s {
                    RunState::Start { selection } | RunState::Spawned { selection, .. } => {
                        selection
                    }
                })
        }))
    }

    /// True when `status` of a run means "nothing went wrong".
    pub fn run_ok(status: JobStatus) -> bool {
        status == JobStatus::Succeeded
    }
}

impl RunWorkflow {
    pub const KIND_NAME: &'static str = "backup.run";
}

fn describe(selection: &RunSelection) -> String {
    let envs = if selection.envs.is_empty() {
        "all envs".to_string()
    } else {
        selection.envs.join(",")
    };
    let cols = if selection.collections.is_empty() {
        "all collections".to_string()
    } else {
        selection.collections.join(",")
    };
    format!("backup {envs}: {cols}")
}

/// Returns once no copy job needs the runner now (see [`copies_settled`]).
async fn wait_for_copies(engine: &Engine) {
    // Subscribe before each look, so no change between the look and the wait is missed.
    loop {
        let mut events = engine.subscribe();
        match copies_settled(engine) {
            Ok(true) => return,
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(error = %e, "cannot list copy jobs");
                return;
            }
        }
        if let Err(tokio::sync::broadcast::error::RecvError::Closed) = events.recv().await {
            return;
        }
    }
}
