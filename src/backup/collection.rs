//! The `backup.collection` workflow: one export of one collection, from token to catalog entry.
//!
//! Each step does one side effect and returns the next state (see `state.rs` for what is
//! persisted and why). Steps are safe to run again: a re-run of the poll/download step removes
//! its own stale temporary file and any uncommitted data file of the same export before writing,
//! and the record step overwrites the manifest and the catalog entry under the same stable id.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tcb_state::{
    Engine, EngineError, JobFilter, JobStatus, KvNamespace, StepContext, StepError, Transition,
    Workflow,
};
use time::OffsetDateTime;

use crate::archive::{self, ArchiveError, ArchiveOptions};
use crate::client::{
    ApiError, ApiErrorKind, CloudBaseClient, ExportRequest, FileType, MigrateJobInfo, MigrateStatus,
};
use crate::manifest::{self, ExportFileType, Manifest};
use crate::naming::{self, SnapshotPaths};

use super::catalog_store::SnapshotCatalog;
use super::errors::step_error;
use super::progress::{ProgressEvent, Target};
use super::settings::WorkflowDeps;
use super::slots::ExportSlots;
use super::state::{CollectionOutput, CollectionState, ExportRef, Phase, PollProgress, StoredFile};
use super::unchanged;
use crate::data_refs::DirGuard;
use crate::destination::plan::CopySubmitter;

/// The workflow kind backing up one collection.
#[derive(Clone)]
pub struct CollectionWorkflow {
    deps: WorkflowDeps,
    catalog: SnapshotCatalog,
    /// Exports the server reported failed, keyed by our job id. A failed export cannot be
    /// resumed, so when `tcb-backup retry` restarts such a job (from its committed Polling
    /// state) the marker tells the step to create a new export instead of re-polling.
    failed_exports: KvNamespace,
    /// Submits the off-site copies of a recorded snapshot (none when not set).
    copies: Option<CopySubmitter>,
    /// Caps the exports in flight (none: no cap beyond the engine's step limits).
    slots: Option<Arc<ExportSlots>>,
}

/// How long a job without an export slot waits before it looks again on its own. It is woken
/// as soon as a slot frees up (released, or reclaimed from a job that ended: see
/// [`ExportSlots`]), so this is only a safety net; each re-check adds a history entry.
const SLOT_RECHECK: Duration = Duration::from_secs(60);

/// Wakes the collection jobs an earlier process left waiting for an export slot. The slot
/// registry lives in memory, so such a job is in no queue of this process: without this it
/// would sleep until its [`SLOT_RECHECK`] while slots are free. A waiter is a Waiting job in
/// the TokenAcquired phase with no failed attempt (a retry back-off after a failed export
/// call has one, and keeps its delay). Returns how many were woken.
pub fn wake_slot_waiters(engine: &Engine) -> Result<usize, EngineError> {
    let waiting = engine.list(&JobFilter {
        kind: Some(CollectionWorkflow::KIND.to_string()),
        active_only: true,
        ..JobFilter::default()
    })?;
    let mut woken = 0;
    for job in waiting
        .iter()
        .filter(|j| j.status == JobStatus::Waiting && j.attempt == 0)
    {
        let Some(view) = engine.job(job.id)? else {
            continue;
        };
        let waits_for_slot = serde_json::from_value::<CollectionState>(view.state)
            .is_ok_and(|s| matches!(s.phase, Phase::TokenAcquired { .. }));
        if waits_for_slot {
            engine.wake(job.id)?;
            woken += 1;
        }
    }
    Ok(woken)
}

/// `databaseadd`'s answer when the collection is missing (see the errcode table).
const COLLECTION_DOES_NOT_EXIST: i64 = -502005;

/// The engine kv namespace of [`CollectionWorkflow`]'s failed-export markers.
pub const FAILED_EXPORTS_NAMESPACE: &str = "failed_exports";

impl CollectionWorkflow {
    pub fn new(deps: WorkflowDeps, catalog: SnapshotCatalog, failed_exports: KvNamespace) -> Self {
        CollectionWorkflow {
            deps,
            catalog,
            failed_exports,
            copies: None,
            slots: None,
        }
    }

    /// Caps the exports in flight through `slots` (see [`ExportSlots`]).
    pub fn with_export_slots(mut self, slots: Arc<ExportSlots>) -> Self {
        self.slots = Some(slots);
        self
    }

    /// Submits copy jobs for each recorded snapshot through `copies`.
    pub fn with_copies(mut self, copies: CopySubmitter) -> Self {
        self.copies = Some(copies);
        self
    }

    fn client(&self, target: &Target) -> Result<CloudBaseClient, StepError> {
        self.deps
            .clients
            .get(&target.appid)
            .cloned()
            .ok_or_else(|| {
                StepError::permanent(format!(
                    "{target}: app {} is not in the configuration (was it removed?)",
                    target.appid
                ))
            })
    }

    fn phase_event(
        &self,
        ctx: &StepContext,
        target: &Target,
        phase: &'static str,
        export: Option<u64>,
        detail: Option<String>,
    ) {
        self.deps.progress.report(ProgressEvent::Phase {
            target: target.clone(),
            job: ctx.job_id.0,
            phase,
            export_job_id: export,
            detail,
        });
    }

    async fn acquire_token(
        &self,
        ctx: &StepContext,
        mut st: CollectionState,
    ) -> Result<Transition<CollectionState>, StepError> {
        let target = st.spec.target.clone();
        st.started_at.get_or_insert(odt(ctx.now));
        st.phase = self.token_acquired(ctx, &target, None).await?;
        self.phase_event(ctx, &target, "token_acquired", None, None);
        Ok(Transition::Next(st))
    }

    /// Makes sure the app has a token (the client's in-memory cache usually has one: no call)
    /// and returns the phase recording until when it is valid — never the token itself.
    async fn token_acquired(
        &self,
        ctx: &StepContext,
        target: &Target,
        replaces_failed_export: Option<u64>,
    ) -> Result<Phase, StepError> {
        let client = self.client(target)?;
        let expires = client.ensure_token().await.map_err(|e| {
            step_error(
                &format!("access token for app {} ({target})", target.appid),
                &e,
                ctx.now,
            )
        })?;
        Ok(Phase::TokenAcquired {
            token_expires_at: odt(expires),
            replaces_failed_export,
        })
    }

    async fn create_export(
        &self,
        ctx: &StepContext,
        mut st: CollectionState,
    ) -> Result<Transition<CollectionState>, StepError> {
        let target = st.spec.target.clone();
        let client = self.client(&target)?;
        let created_at = odt(ctx.now);
        // Unique per job and attempt time, so two runs never overwrite each other's export.
        let file_path = format!(
            "tcb-backup/{}/{}-{}.json",
            target.collection,
            naming::format_snapshot_time(created_at),
            ctx.job_id
        );
        let req = ExportRequest {
            file_path: file_path.clone(),
            file_type: match st.spec.file_type {
                ExportFileType::Json => FileType::Json,
                ExportFileType::Csv => FileType::Csv,
            },
            query: st.spec.query.clone(),
        };
        let job_id = client
            .export(&target.env, &req)
            .await
            .map_err(|e| step_error(&format!("creating the export of {target}"), &e, ctx.now))?;
        crate::faultpoint::hit("backup.after_export_call");
        tracing::info!(%target, export_job = job_id, "export created");
        st.phase = Phase::ExportCreated {
            export: ExportRef {
                job_id,
                file_path,
                created_at,
            },
        };
        self.phase_event(ctx, &target, "export_created", Some(job_id), None);
        Ok(Transition::Next(st))
    }

    /// Plans the first status call, from history when there is some.
    fn start_polling(
        &self,
        ctx: &StepContext,
        mut st: CollectionState,
        export: ExportRef,
    ) -> Transition<CollectionState> {
        let history = self.catalog.export_duration(&st.spec.target);
        let policy = &self.deps.settings.poll;
        let elapsed = since(ctx.now, export.created_at);
        let wait = policy.next_wait(elapsed, None, history);
        // The duration recorded runs from the export's creation (the manifest's
        // `export_created_at`, or `started_at` when it was created right away) to the export
        // seen finished: a wait between the creation and this step (a restart) would count as
        // export time. A wait before the creation (for an export slot) does not.
        let timing_interrupted =
            policy.interrupts_timing(Duration::ZERO, gap(odt(ctx.now), export.created_at));
        let poll = PollProgress {
            polls: 0,
            last_wait_ms: Some(millis(wait)),
            last_status: None,
            last_records: 0,
            last_change_at: odt(ctx.now),
            last_running_at: None,
            history_ms: history.map(millis),
            timing_interrupted,
        };
        let detail = history.map(|h| format!("previous export took {:.1}s", h.as_secs_f64()));
        self.phase_event(ctx, &st.spec.target, "polling", Some(export.job_id), detail);
        st.phase = Phase::Polling { export, poll };
        Transition::WaitUntil {
            state: st,
            at: ctx.now + wait,
        }
    }

    async fn poll(
        &self,
        ctx: &StepContext,
        mut st: CollectionState,
        export: ExportRef,
        mut poll: PollProgress,
    ) -> Result<Transition<CollectionState>, StepError> {
        let target = st.spec.target.clone();
        let client = self.client(&target)?;
        let what = format!("export job {} of {target}", export.job_id);
        let marker = ctx.job_id.to_string();
        if let Ok(Some(failed)) = self.failed_exports.get::<u64>(&marker) {
            if failed == export.job_id {
                // A retry of a job whose export failed on the server: start a new export,
                // with a token as a first attempt would (the marker goes only once we have it).
                st.phase = self
                    .token_acquired(ctx, &target, Some(export.job_id))
                    .await?;
                let _ = self.failed_exports.remove(&marker);
                tracing::info!(%target, export_job = export.job_id, "export failed earlier; creating a new one");
                return Ok(Transition::Next(st));
            }
        }
        let info = client
            .query_migrate_job(&target.env, export.job_id)
            .await
            .map_err(|e| step_error(&what, &e, ctx.now))?;
        poll.polls += 1;
        let now = odt(ctx.now);
        // The previous observation: the last call that saw the job running, else the start
        // of polling (`last_change_at` is still that time until a call has seen the job).
        let previous = poll.last_running_at.unwrap_or(poll.last_change_at);
        let planned = Duration::from_millis(poll.last_wait_ms.unwrap_or(0));
        poll.timing_interrupted |= self
            .deps
            .settings
            .poll
            .interrupts_timing(planned, gap(now, previous));
        match &info.status {
            MigrateStatus::Success => {
                let ready_at = match poll.last_running_at {
                    // Measured across a downtime or a clock jump: not a duration to plan by.
                    _ if poll.timing_interrupted => None,
                    // The export finished somewhere between the last two calls.
                    Some(running) if running < now => Some(running + (now - running) / 2),
                    _ => Some(now),
                };
                let file = self.download(ctx, &st, &export, &info, ready_at).await?;
                self.phase_event(
                    ctx,
                    &target,
                    "downloaded",
                    Some(export.job_id),
                    Some(format!("{} records", file.records)),
                );
                st.phase = Phase::Downloaded { export, file };
                Ok(Transition::Next(st))
            }
            MigrateStatus::Fail => {
                self.failed_exports
                    .put(&marker, &export.job_id)
                    .map_err(|e| StepError::retryable(format!("{what}: {e}")))?;
                Err(StepError::permanent(format!(
                    "{what} failed on the server: {} ({} records exported, {} failed); \
                     `tcb-backup retry {}` starts a new export",
                    info.message.as_deref().unwrap_or("no message"),
                    info.record_success,
                    info.record_fail,
                    ctx.job_id
                )))
            }
            MigrateStatus::Running(status) => {
                let policy = &self.deps.settings.poll;
                let watched_recently = poll
                    .last_running_at
                    .map(|t| now - t < time_dur(policy.stall_timeout) / 2)
                    .unwrap_or(false);
                let changed = poll.last_status.as_deref() != Some(status.as_str())
                    || poll.last_records != info.record_success;
                if changed || !watched_recently {
                    // Also reset after a gap in watching (restart, manual retry): the watchdog
                    // only judges time it actually observed.
                    poll.last_change_at = now;
                }
                poll.last_status = Some(status.clone());
                poll.last_records = info.record_success;
                poll.last_running_at = Some(now);
                let unchanged_for = now - poll.last_change_at;
                if unchanged_for >= time_dur(policy.stall_timeout) {
                    return Err(StepError::permanent(format!(
                        "{what} stalled: status {status:?} and {} records unchanged for {} s \
                         (poll.stall_timeout); `tcb-backup retry {}` keeps waiting on the same export",
                        info.record_success,
                        unchanged_for.whole_seconds(),
                        ctx.job_id
                    )));
                }
                let wait = policy.next_wait(
                    since(ctx.now, export.created_at),
                    poll.last_wait_ms.map(Duration::from_millis),
                    poll.history_ms.map(Duration::from_millis),
                );
                poll.last_wait_ms = Some(millis(wait));
                tracing::debug!(%target, export_job = export.job_id, %status, polls = poll.polls, wait_ms = millis(wait), "export still running");
                st.phase = Phase::Polling { export, poll };
                Ok(Transition::WaitUntil {
                    state: st,
                    at: ctx.now + wait,
                })
            }
        }
    }

    fn snapshot_paths(
        &self,
        target: &Target,
        export: &ExportRef,
    ) -> Result<SnapshotPaths, StepError> {
        naming::snapshot_paths(
            &self.deps.settings.destination,
            &target.env,
            &target.collection,
            export.created_at,
            export.job_id,
        )
        .map_err(|e| StepError::permanent(format!("{target}: {e}")))
    }

    async fn download(
        &self,
        ctx: &StepContext,
        st: &CollectionState,
        export: &ExportRef,
        info: &MigrateJobInfo,
        export_ready_at: Option<OffsetDateTime>,
    ) -> Result<StoredFile, StepError> {
        let target = &st.spec.target;
        let what = format!("export job {} of {target}", export.job_id);
        let client = self.client(target)?;
        let Some(url) = info.file_url.as_deref() else {
            return Err(StepError::retryable(format!(
                "{what}: the server reported success without a file_url; asking again"
            )));
        };
        let encryption = self.deps.settings.encryption.clone();
        let paths = self
            .snapshot_paths(target, export)?
            .with_encryption(encryption.is_some());
        // Times in the manifest follow the engine's clock (which may be virtual), so the
        // download's duration is added to the step's start rather than read off the wall clock.
        let download_started = std::time::Instant::now();
        remove_leftovers(&paths, true).map_err(|e| {
            StepError::retryable(format!("{what}: cannot clean up an earlier attempt: {e}"))
        })?;
        self.phase_event(ctx, target, "downloading", Some(export.job_id), None);
        let download = client
            .download(url)
            .await
            .map_err(|e| download_error(&what, &e, ctx.now))?;
        let total = download.content_length;
        let progress = self.deps.progress.clone();
        let (ptarget, job) = (target.clone(), ctx.job_id.0);
        let opts = ArchiveOptions {
            zstd_level: self.deps.settings.zstd_level,
            expected_records: Some(info.record_success),
            file_type: st.spec.file_type,
            progress: Some(Arc::new(move |p: archive::ArchiveProgress| {
                progress.report(ProgressEvent::Bytes {
                    target: ptarget.clone(),
                    job,
                    bytes: p.bytes_raw,
                    total,
                })
            })),
            encryption: encryption.clone(),
            ..ArchiveOptions::default()
        };
        let summary = archive::write_snapshot(download.stream, &paths, opts)
            .await
            .map_err(|e| archive_error(&what, e, ctx.now))?;
        Ok(StoredFile {
            path: paths.data.display().to_string(),
            manifest_path: paths.manifest.display().to_string(),
            bytes: summary.bytes_raw,
            bytes_stored: summary.bytes_stored,
            sha256: summary.sha256_raw,
            sha256_stored: summary.sha256_stored,
            records: summary.records,
            finished_at: odt(ctx.now + download_started.elapsed()),
            export_ready_at,
            encryption: encryption.map(|r| manifest::ManifestEncryption::age(&r)),
        })
    }

    async fn record(
        &self,
        ctx: &StepContext,
        mut st: CollectionState,
        export: ExportRef,
        file: StoredFile,
    ) -> Result<Transition<CollectionState>, StepError> {
        let target = st.spec.target.clone();
        let what = format!("export job {} of {target}", export.job_id);
        let paths = self
            .snapshot_paths(&target, &export)?
            .with_encryption(file.encryption.is_some());
        let own_id = crate::catalog::entry_id(&target.env, &target.collection, export.job_id);
        // Capped at the finish: a start committed before the clock stepped back is later.
        let started_at = st
            .started_at
            .unwrap_or(export.created_at)
            .min(file.finished_at);
        let m = Manifest {
            format_version: manifest::FORMAT_VERSION,
            tool_version: manifest::TOOL_VERSION.to_string(),
            appid: target.appid.clone(),
            env: target.env.clone(),
            collection: target.collection.clone(),
            query: st.spec.query.clone(),
            file_type: st.spec.file_type,
            export_job_id: export.job_id,
            records: file.records,
            bytes_raw: file.bytes,
            bytes_stored: file.bytes_stored,
            sha256_raw: file.sha256.clone(),
            sha256_stored: file.sha256_stored.clone(),
            started_at,
            finished_at: file.finished_at,
            export_ready_at: file.export_ready_at,
            // Only when it tells something `started_at` does not (see the field).
            export_created_at: Some(export.created_at)
                .filter(|created| *created - started_at > time::Duration::SECOND),
            data_file: paths.data_file_name(),
            encryption: file.encryption.clone(),
            data_reused_from: None,
        };
        // A crash while writing the manifest leaves its temp file; this step owns it now.
        remove_leftovers(&paths, false)
            .map_err(|e| StepError::retryable(format!("{what}: cannot clean up: {e}")))?;
        let (catalog, step_paths, step_id) = (self.catalog.clone(), paths.clone(), own_id.clone());
        let m = tokio::task::spawn_blocking(move || {
            write_snapshot_manifest(&catalog, &step_paths, m, &step_id)
        })
        .await
        .map_err(|e| StepError::retryable(format!("{what}: manifest writer failed: {e}")))?
        .map_err(|e| StepError::retryable(format!("{what}: {e}")))?;
        crate::faultpoint::hit("backup.after_manifest");
        let snapshot_id = self
            .catalog
            .record_with_job(&m, &paths.manifest, Some(ctx.job_id.0))
            .map_err(|e| StepError::retryable(format!("{what}: catalog: {e}")))?;
        crate::faultpoint::hit("backup.after_catalog");
        if m.is_reference() && paths.data.exists() {
            // The download is a duplicate of the shared file: the manifest and the catalog
            // no longer name it, so it can go (a crash before this leaves it for the repeat).
            remove_file(&paths.data)
                .and_then(|()| crate::archive::fsutil::sync_dir(&paths.dir))
                .map_err(|e| {
                    StepError::retryable(format!("{what}: removing the duplicate file: {e}"))
                })?;
            tracing::info!(%target, snapshot = %snapshot_id, reused = ?m.data_reused_from, "unchanged since the previous snapshot: its data file is shared");
            crate::faultpoint::hit("backup.after_duplicate_removed");
        }
        if let Some(copies) = &self.copies {
            let entry = crate::catalog::CatalogEntry::new(m.clone(), &paths.manifest);
            let submitted = copies
                .submit(&entry)
                .map_err(|e| StepError::retryable(format!("{what}: submitting copies: {e}")))?;
            if !submitted.is_empty() {
                // Copy jobs exist, Recorded is not committed: the repeat submits them again
                // (the dedupe key returns the pending ones).
                crate::faultpoint::hit("backup.after_copies_submitted");
            }
        }
        if let Some(info_collection) = &st.spec.record_collection {
            self.record_info_document(ctx, &target, info_collection, &snapshot_id, &m)
                .await?;
        }
        self.phase_event(ctx, &target, "recorded", Some(export.job_id), None);
        let output = CollectionOutput {
            target: target.clone(),
            snapshot_id: snapshot_id.clone(),
            export_job_id: export.job_id,
            path: m.data_path(&paths.manifest).display().to_string(),
            records: file.records,
            bytes: file.bytes,
            bytes_stored: m.bytes_stored,
            data_reused_from: m.data_reused_from.clone(),
        };
        st.phase = Phase::Recorded {
            export,
            file,
            snapshot_id,
        };
        Ok(Transition::Complete {
            state: st,
            output: serde_json::to_value(output).unwrap_or_default(),
        })
    }

    /// The optional `db_back_info`-style document. Its `_id` is derived from the snapshot id, so
    /// a re-run after a crash cannot add a second document (the insert is refused instead,
    /// which is logged and ignored).
    async fn record_info_document(
        &self,
        ctx: &StepContext,
        target: &Target,
        info_collection: &str,
        snapshot_id: &str,
        m: &Manifest,
    ) -> Result<(), StepError> {
        let client = self.client(target)?;
        let doc = serde_json::json!({
            "_id": info_doc_id(snapshot_id),
            "snapshot_id": snapshot_id,
            "collection": m.collection,
            "export_job_id": m.export_job_id,
            "file_path": m.data_file,
            "records": m.records,
            "bytes": m.bytes_raw,
            "sha256": m.sha256_raw,
            "date": { "$date": m.finished_at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default() },
        });
        let name = serde_json::Value::String(info_collection.to_string());
        let query = format!("db.collection({name}).add({{data: [{doc}]}})");
        let mut added = client.database_add(&target.env, &query).await;
        if added.as_ref().err().and_then(|e| e.errcode()) == Some(COLLECTION_DOES_NOT_EXIST) {
            // The first snapshot of an env: create the info collection, then add again. (A
            // concurrent job may have created it meanwhile; its error is then harmless.)
            if let Err(e) = client.add_collection(&target.env, info_collection).await {
                tracing::debug!(%target, error = %e, "creating the backup info collection");
            }
            added = client.database_add(&target.env, &query).await;
        }
        match added {
            Ok(_) => Ok(()),
            Err(e) if e.class().is_retryable() => Err(step_error(
                &format!("recording {snapshot_id} in {info_collection}"),
                &e,
                ctx.now,
            )),
            Err(e) => {
                tracing::warn!(%target, snapshot = snapshot_id, error = %e, "could not add the backup info document (ignored)");
                Ok(())
            }
        }
    }
}

impl Workflow for CollectionWorkflow {
    type State = CollectionState;
    const KIND: &'static str = "backup.collection";
    const SCHEMA_VERSION: u32 = 1;

    fn retry_policy(&self) -> tcb_state::RetryPolicy {
        self.deps.settings.retry.clone()
    }

    fn step_timeout(&self) -> Duration {
        self.deps.settings.step_timeout
    }

    async fn step(
        &self,
        ctx: StepContext,
        state: CollectionState,
    ) -> Result<Transition<CollectionState>, StepError> {
        if let Some(slots) = &self.slots {
            let appid = &state.spec.target.appid;
            match &state.phase {
                Phase::ExportCreated { .. } | Phase::Polling { .. } | Phase::Downloaded { .. } => {
                    slots.hold(ctx.job_id, appid)
                }
                Phase::TokenAcquired { .. } if !slots.try_take(ctx.job_id, appid) => {
                    self.phase_event(&ctx, &state.spec.target, "waiting_for_slot", None, None);
                    return Ok(Transition::WaitUntil {
                        at: ctx.now + SLOT_RECHECK,
                        state,
                    });
                }
                _ => {}
            }
        }
        let creating = matches!(state.phase, Phase::TokenAcquired { .. });
        let _permit = match self.deps.clients.limit(&state.spec.target.appid) {
            Some(sem) => sem.acquire_owned().await.ok(),
            None => None,
        };
        crate::faultpoint::hit_at("backup.before_step", state.phase.name());
        let target = state.spec.target.clone();
        let job = ctx.job_id.0;
        let result = match state.phase.clone() {
            Phase::Start => self.acquire_token(&ctx, state).await,
            Phase::TokenAcquired { .. } => self.create_export(&ctx, state).await,
            Phase::ExportCreated { export } => Ok(self.start_polling(&ctx, state, export)),
            Phase::Polling { export, poll } => self.poll(&ctx, state, export, poll).await,
            Phase::Downloaded { export, file } => self.record(&ctx, state, export, file).await,
            Phase::Recorded {
                ref export,
                ref file,
                ref snapshot_id,
            } => {
                let output = CollectionOutput {
                    target: target.clone(),
                    snapshot_id: snapshot_id.clone(),
                    export_job_id: export.job_id,
                    path: file.path.clone(),
                    records: file.records,
                    bytes: file.bytes,
                    bytes_stored: file.bytes_stored,
                    data_reused_from: None,
                };
                Ok(Transition::Complete {
                    state,
                    output: serde_json::to_value(output).unwrap_or_default(),
                })
            }
        };
        if let Some(slots) = &self.slots {
            // The slot goes back once the snapshot is recorded, when the job fails for good,
            // and when creating the export failed (the job takes one again when it retries).
            let done = match &result {
                Ok(Transition::Next(s)) => matches!(s.phase, Phase::Recorded { .. }),
                Ok(Transition::Complete { .. }) => true,
                Ok(_) => false,
                Err(e) => creating || !e.is_retryable(),
            };
            if done {
                slots.release(ctx.job_id);
            }
        }
        if let Err(e) = &result {
            tracing::warn!(%target, job, error = %e.message(), retryable = e.is_retryable(), "step failed");
            self.deps.progress.report(ProgressEvent::Problem {
                target,
                job,
                retrying: e.is_retryable(),
                message: e.message().to_string(),
            });
        }
        result
    }
}

/// Writes the manifest of a downloaded snapshot: a reference to the previous snapshot's data
/// file when the export is byte-identical to it (skip unchanged), else naming its own file.
/// Blocking. Safe to repeat: the manifest an earlier attempt wrote is kept when its data file
/// is there (a reference's attempt may already have deleted the duplicate download, and
/// copies may have been submitted for the file it names), so the decision is made once.
fn write_snapshot_manifest(
    catalog: &SnapshotCatalog,
    paths: &SnapshotPaths,
    m: Manifest,
    own_id: &str,
) -> Result<Manifest, String> {
    if let Ok(earlier) = manifest::read_manifest(&paths.manifest) {
        if earlier.export_job_id == m.export_job_id
            && earlier.sha256_raw == m.sha256_raw
            && earlier.data_path(&paths.manifest).is_file()
        {
            return Ok(earlier);
        }
    }
    // Only try the guard: while a forget works in this directory, store our own file.
    let guard = DirGuard::try_acquire(&paths.dir);
    let m = match guard
        .as_ref()
        .and_then(|_| unchanged::find_reusable(catalog, &m, own_id, &paths.dir))
    {
        Some(reusable) => unchanged::as_reference(m, &reusable),
        None => m,
    };
    if !m.is_reference() && !paths.data.is_file() {
        return Err(format!(
            "the downloaded file {} is missing",
            paths.data.display()
        ));
    }
    manifest::write_manifest(&paths.manifest, &m).map_err(|e| e.to_string())?;
    drop(guard);
    Ok(m)
}

/// The download failed before any byte was stored. An expired/refused URL is retried through a
/// fresh status query (the state is still Polling, so the retry asks the server again).
fn download_error(what: &str, e: &ApiError, now: SystemTime) -> StepError {
    match e.kind {
        ApiErrorKind::UrlExpired | ApiErrorKind::NotFound => StepError::retry_after(
            format!("{what}: file URL unusable ({e}); re-querying the job for a fresh one"),
            Duration::from_millis(200),
        ),
        _ => step_error(what, e, now),
    }
}

fn archive_error(what: &str, e: ArchiveError, now: SystemTime) -> StepError {
    if let ArchiveError::Source { source, .. } = &e {
        if let Some(api) = source.downcast_ref::<ApiError>() {
            return download_error(what, api, now);
        }
    }
    if e.is_retryable() {
        StepError::retryable(format!("{what}: {e}"))
    } else {
        StepError::permanent(format!("{what}: {e}"))
    }
}

/// Removes what an interrupted attempt at this very snapshot may have left: its hidden temp
/// files, and (`with_data`, before a download) a data file renamed into place whose Downloaded
/// state was never committed. Everything removed carries this export's job id in its name, so
/// no other snapshot is touched.
fn remove_leftovers(paths: &SnapshotPaths, with_data: bool) -> std::io::Result<()> {
    // Either name: encryption may have been switched on or off since the earlier attempt.
    let [data_name, encrypted_name] = paths.data_file_names();
    let manifest_name = paths
        .manifest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let entries = match std::fs::read_dir(&paths.dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let stale_temp = name
            .strip_prefix(naming::TEMP_PREFIX)
            .map(|rest| rest.starts_with(&data_name) || rest.starts_with(&manifest_name))
            .unwrap_or(false);
        if stale_temp || (with_data && (name == data_name || name == encrypted_name)) {
            remove_file(&entry.path())?;
        }
    }
    Ok(())
}

fn remove_file(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// A 32-hex `_id` (the shape CloudBase uses) derived from the snapshot id.
fn info_doc_id(snapshot_id: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(snapshot_id.as_bytes());
    hex::encode(digest).chars().take(32).collect()
}

pub(crate) fn odt(t: SystemTime) -> OffsetDateTime {
    OffsetDateTime::from(t)
}

fn since(now: SystemTime, then: OffsetDateTime) -> Duration {
    let now = odt(now);
    let d = now - then;
    if d.is_negative() {
        Duration::ZERO
    } else {
        d.unsigned_abs()
    }
}

/// Time from `earlier` to `later`; None when `later` is before it (the clock stepped back).
fn gap(later: OffsetDateTime, earlier: OffsetDateTime) -> Option<Duration> {
    (later - earlier).try_into().ok()
}

fn time_dur(d: Duration) -> time::Duration {
    time::Duration::try_from(d).unwrap_or(time::Duration::MAX)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leftovers_of_this_snapshot_only_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let paths = naming::snapshot_paths(
            dir.path(),
            "prod",
            "orders",
            OffsetDateTime::UNIX_EPOCH,
            100000001,
        )
        .unwrap();
        std::fs::create_dir_all(&paths.dir).unwrap();
        let temp = paths.dir.join(format!(
            "{}{}-abcdef",
            naming::TEMP_PREFIX,
            paths.data_file_name()
        ));
        let other = paths.dir.join("19700101T000000Z-100000002.jsonl.zst");
        for p in [&temp, &paths.data, &other] {
            std::fs::write(p, b"x").unwrap();
        }
        remove_leftovers(&paths, true).unwrap();
        assert!(!temp.exists());
        assert!(!paths.data.exists());
        assert!(other.exists());
    }

    /// Stores `body` as the download of export `job` and returns its paths and draft manifest.
    async fn downloaded(
        root: &Path,
        job: u64,
        at: OffsetDateTime,
        body: &'static [u8],
    ) -> (SnapshotPaths, Manifest) {
        let paths = naming::snapshot_paths(root, "prod", "orders", at, job).unwrap();
        let summary = archive::write_snapshot(
            futures_util::stream::iter(vec![Ok::<_, std::io::Error>(bytes::Bytes::from_static(
                body,
            ))]),
            &paths,
            ArchiveOptions::default(),
        )
        .await
        .unwrap();
        let m = Manifest::for_snapshot(
            manifest::SnapshotInfo {
                appid: "wx1".into(),
                env: "prod".into(),
                collection: "orders".into(),
                query: "db.collection(\"orders\").get()".into(),
                file_type: ExportFileType::Json,
                export_job_id: job,
                started_at: at,
                export_ready_at: None,
                export_created_at: None,
            },
            &summary,
            &paths,
            at,
        );
        (paths, m)
    }

    #[tokio::test]
    async fn unchanged_exports_share_a_file_and_a_repeated_step_keeps_the_reference() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("snapshots");
        let engine = tcb_state::Engine::open(
            &dir.path().join("state"),
            tcb_state::EngineOptions::default(),
        )
        .unwrap();
        let catalog = SnapshotCatalog::new(engine.kv(SnapshotCatalog::NAMESPACE));
        let body: &'static [u8] = b"{\"_id\":\"a\"}\n{\"_id\":\"b\"}\n";
        let t = |h: i64| OffsetDateTime::UNIX_EPOCH + time::Duration::hours(h);
        let id = |job: u64| crate::catalog::entry_id("prod", "orders", job);

        // The first snapshot stores its own file.
        let (p1, m1) = downloaded(&root, 1, t(1), body).await;
        let m1 = write_snapshot_manifest(&catalog, &p1, m1, &id(1)).unwrap();
        assert!(!m1.is_reference());
        catalog.record_with_job(&m1, &p1.manifest, None).unwrap();

        // An identical export: the manifest names the first file and says so.
        let (p2, m2) = downloaded(&root, 2, t(2), body).await;
        let m2 = write_snapshot_manifest(&catalog, &p2, m2, &id(2)).unwrap();
        assert_eq!(m2.data_file, m1.data_file);
        assert_eq!(m2.data_reused_from.as_deref(), Some(id(1).as_str()));
        assert_eq!(m2.sha256_stored, m1.sha256_stored);
        assert_eq!(manifest::read_manifest(&p2.manifest).unwrap(), m2);
        // A crash after the duplicate was deleted: the repeated step keeps the reference
        // instead of failing on its missing download.
        std::fs::remove_file(&p2.data).unwrap();
        let again = write_snapshot_manifest(&catalog, &p2, m2.clone(), &id(2)).unwrap();
        assert_eq!(again, m2);
        catalog.record_with_job(&m2, &p2.manifest, None).unwrap();

        // While a forget holds the directory, a backup stores its own file.
        let (p3, m3) = downloaded(&root, 3, t(3), body).await;
        {
            let _forget = DirGuard::acquire(&p3.dir);
            let m3 = write_snapshot_manifest(&catalog, &p3, m3, &id(3)).unwrap();
            assert!(!m3.is_reference());
            assert!(p3.data.is_file());
        }

        // A damaged earlier file is never shared: the fresh download is kept.
        let mut bytes = std::fs::read(&p1.data).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&p1.data, &bytes).unwrap();
        let (p4, m4) = downloaded(&root, 4, t(4), body).await;
        let m4 = write_snapshot_manifest(&catalog, &p4, m4, &id(4)).unwrap();
        assert!(!m4.is_reference());

        // A different export is not shared either.
        let (p5, m5) = downloaded(&root, 5, t(5), b"{\"_id\":\"c\"}\n").await;
        catalog.record_with_job(&m4, &p4.manifest, None).unwrap();
        let m5 = write_snapshot_manifest(&catalog, &p5, m5, &id(5)).unwrap();
        assert!(!m5.is_reference());
    }

    #[test]
    fn info_ids_are_stable_hex() {
        let a = info_doc_id("prod/orders/1");
        assert_eq!(a.len(), 32);
        assert_eq!(a, info_doc_id("prod/orders/1"));
        assert_ne!(a, info_doc_id("prod/orders/2"));
    }
}
