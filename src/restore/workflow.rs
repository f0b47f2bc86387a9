//! The `restore.collection` workflow kind: its persisted state and one step per side effect.
//!
//! The one step that is not naturally idempotent is starting the import: if the process dies
//! after the server accepted `databasemigrateimport` but before the engine committed the job
//! id, a resumed run cannot know whether an import is already running. Every call is therefore
//! counted durably (kv namespace [`IMPORT_MARKS_NAMESPACE`]) *before* it is made; a second call
//! for the same restore job runs in upsert mode (unless the operator forced insert into a
//! non-empty collection), which converges on the same documents whatever the first one did,
//! instead of failing every record as a duplicate. The report says when this happened.
//!
//! Once the file is in the env's storage (plaintext, even for an encrypted snapshot), every way
//! the job can end goes through a step that deletes it: success through `Cleanup`, a permanent
//! failure (a hash mismatch, an import ending in `fail`, a poll timeout, a refused import call,
//! retries used up) through `Abandon`, which persists the failure reason first so the deletion
//! survives a crash and runs again, then fails the job with that reason.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tcb_state::{KvNamespace, RetryPolicy, StepContext, StepError, Transition, Workflow};

use crate::client::{
    ApiError, CloudBaseClient, ConflictMode, ErrorClass, FileType, ImportRequest, MigrateStatus,
};
use crate::manifest::{ExportFileType, Manifest};

use super::plan::{check_target_rule, TargetProbe};
use super::upload::DecompressedBody;
use crate::archive::encrypt::Identities;

/// Where the workflow counts its `databasemigrateimport` calls (key: restore job id).
pub const IMPORT_MARKS_NAMESPACE: &str = "restore.import_calls";

/// The clients restores may use, by appid.
#[derive(Clone, Default)]
pub struct RestoreClients {
    clients: HashMap<String, CloudBaseClient>,
}

impl RestoreClients {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn insert(&mut self, client: CloudBaseClient) {
        self.clients.insert(client.appid().to_string(), client);
    }
    pub fn get(&self, appid: &str) -> Option<&CloudBaseClient> {
        self.clients.get(appid)
    }
}

/// How often an import job is polled: `initial`, growing by `multiplier` up to `max`; the
/// restore fails if the job is still running after `max_wait`.
#[derive(Debug, Clone, PartialEq)]
pub struct PollPolicy {
    pub initial: Duration,
    pub multiplier: f64,
    pub max: Duration,
    pub max_wait: Duration,
}

impl Default for PollPolicy {
    fn default() -> Self {
        PollPolicy {
            initial: Duration::from_secs(2),
            multiplier: 1.5,
            max: Duration::from_secs(30),
            max_wait: Duration::from_secs(6 * 3600),
        }
    }
}

/// Where a restore is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum RestorePhase {
    Verify,
    PrepareTarget,
    Upload,
    StartImport {
        file_id: String,
    },
    Poll {
        file_id: String,
        import_job_id: u64,
        /// Unix ms of the first poll: bounds the wait.
        first_poll_ms: u64,
        next_interval_ms: u64,
        restarted_import: bool,
    },
    Cleanup {
        file_id: String,
        outcome: ImportOutcome,
    },
    /// The restore failed for good after the upload: delete the uploaded file and the
    /// import-call counter, then fail the job with `error` (persisted so a crash in between
    /// repeats the deletion and still reports the original reason).
    Abandon {
        file_id: String,
        error: String,
    },
}

impl RestorePhase {
    /// The phase's name, as in the persisted state and the `restore.before_step.<name>` fault
    /// points.
    pub fn name(&self) -> &'static str {
        match self {
            RestorePhase::Verify => "verify",
            RestorePhase::PrepareTarget => "prepare_target",
            RestorePhase::Upload => "upload",
            RestorePhase::StartImport { .. } => "start_import",
            RestorePhase::Poll { .. } => "poll",
            RestorePhase::Cleanup { .. } => "cleanup",
            RestorePhase::Abandon { .. } => "abandon",
        }
    }
}

/// The persisted state of one restore job (no token, no secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreState {
    pub snapshot_id: String,
    pub manifest: Manifest,
    pub data_path: PathBuf,
    pub appid: String,
    pub env: String,
    pub collection: String,
    pub mode: ConflictMode,
    pub stop_on_error: bool,
    pub force: bool,
    pub storage_path: String,
    /// The identity file that decrypts an encrypted snapshot: only its path is persisted,
    /// the key is read from it by the steps that need it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_file: Option<PathBuf>,
    pub phase: RestorePhase,
}

/// The job's output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportOutcome {
    pub snapshot_id: String,
    pub env: String,
    pub collection: String,
    pub import_job_id: u64,
    pub expected_records: u64,
    pub record_success: u64,
    pub record_fail: u64,
    pub message: Option<String>,
    /// A crash left it unknown whether an earlier import call started; the import was started
    /// again (in upsert mode unless insert was forced).
    pub restarted_import: bool,
    /// The uploaded file could not be removed from storage (the restore itself succeeded).
    pub cleanup_error: Option<String>,
}

impl ImportOutcome {
    /// Every record of the snapshot imported, none failed.
    pub fn is_complete(&self) -> bool {
        self.record_fail == 0 && self.record_success == self.expected_records
    }
}

/// The workflow kind. One instance serves every restore job of a store.
#[derive(Clone)]
pub struct RestoreWorkflow {
    clients: Arc<RestoreClients>,
    marks: KvNamespace,
    poll: PollPolicy,
    retry: RetryPolicy,
    step_timeout: Duration,
}

impl RestoreWorkflow {
    /// `marks` must be the engine's `kv(IMPORT_MARKS_NAMESPACE)`.
    pub fn new(clients: RestoreClients, marks: KvNamespace) -> Self {
        RestoreWorkflow {
            clients: Arc::new(clients),
            marks,
            poll: PollPolicy::default(),
            retry: RetryPolicy::default(),
            step_timeout: Duration::from_secs(6 * 3600),
        }
    }
    pub fn with_poll(mut self, poll: PollPolicy) -> Self {
        self.poll = poll;
        self
    }
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }
    pub fn with_step_timeout(mut self, t: Duration) -> Self {
        self.step_timeout = t;
        self
    }

    /// A step error once the file is in the env's storage: a permanent one, or a retryable one
    /// on the last attempt the retry policy allows, moves the job to [`RestorePhase::Abandon`]
    /// (committed before anything else happens) instead of failing it with the upload left
    /// behind. Other retryable errors are retried as usual.
    fn after_upload(
        &self,
        ctx: &StepContext,
        mut s: RestoreState,
        file_id: String,
        err: StepError,
    ) -> Result<Transition<RestoreState>, StepError> {
        let error = match err {
            StepError::Permanent { message } => message,
            StepError::Retryable { message, .. } if ctx.attempt >= self.retry.max_attempts => {
                format!("{message} (gave up after {} attempts)", ctx.attempt)
            }
            retryable => return Err(retryable),
        };
        s.phase = RestorePhase::Abandon { file_id, error };
        Ok(Transition::Next(s))
    }

    /// Deletes the uploaded file from the env's storage and the job's import-call counter.
    /// Returns why the file could not be deleted, if it could not; a file already gone counts
    /// as deleted, so a repeat after a crash is harmless.
    async fn remove_upload(
        &self,
        client: &CloudBaseClient,
        job_id: tcb_state::JobId,
        env: &str,
        file_id: &str,
    ) -> Option<String> {
        let file_id = file_id.to_string();
        let failed = match client
            .batch_delete_file(env, std::slice::from_ref(&file_id))
            .await
        {
            // -503003 (file not found): an earlier attempt already deleted it.
            Ok(results) => results
                .iter()
                .find(|r| r.status != 0 && r.status != -503003)
                .map(|r| format!("deleting {}: status {} {}", r.fileid, r.status, r.errmsg)),
            Err(e) => Some(format!("deleting {file_id}: {e}")),
        };
        // The upload is gone, its import-call counter not: the repeat deletes again (not found
        // counts as deleted) and removes the counter.
        crate::faultpoint::hit("restore.after_file_deleted");
        if let Err(e) = self.marks.remove(&job_id.to_string()) {
            tracing::warn!(job = %job_id, error = %e, "cannot drop the import call record");
        }
        crate::faultpoint::hit("restore.after_mark_removed");
        failed
    }

    fn client(&self, s: &RestoreState) -> Result<&CloudBaseClient, StepError> {
        self.clients.get(&s.appid).ok_or_else(|| {
            StepError::permanent(format!(
                "restore of {} into {}/{}: app {} is not configured",
                s.snapshot_id, s.env, s.collection, s.appid
            ))
        })
    }
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Client error → engine error: transient and token problems are retried, the rest is not.
pub fn api_step_error(what: &str, err: &ApiError) -> StepError {
    let message = format!("{what}: {err}");
    match err.class() {
        ErrorClass::Transient | ErrorClass::RefreshToken => StepError::retryable(message),
        ErrorClass::Quota => StepError::permanent(format!(
            "{message} (quota exhausted: retry the job once the quota resets)"
        )),
        ErrorClass::PermanentConfig => {
            StepError::permanent(format!("{message} (configuration problem: not retried)"))
        }
        ErrorClass::PermanentRequest => StepError::permanent(message),
    }
}

/// The identities that decrypt the snapshot of `s`, if it is encrypted. A missing or unusable
/// identity file is permanent: retrying cannot make the key appear.
fn identities(s: &RestoreState) -> Result<Option<Identities>, StepError> {
    if s.manifest.encryption.is_none() {
        return Ok(None);
    }
    let Some(path) = &s.identity_file else {
        return Err(StepError::permanent(format!(
            "restore of {}: the snapshot is encrypted and this restore has no identity file; start it again with --identity FILE or set encryption.identity_file",
            s.snapshot_id
        )));
    };
    Identities::load(path)
        .map(Some)
        .map_err(|e| StepError::permanent(format!("restore of {}: {e}", s.snapshot_id)))
}

fn file_type(m: &Manifest) -> FileType {
    match m.file_type {
        ExportFileType::Json => FileType::Json,
        ExportFileType::Csv => FileType::Csv,
    }
}

impl Workflow for RestoreWorkflow {
    type State = RestoreState;
    const KIND: &'static str = "restore.collection";
    const SCHEMA_VERSION: u32 = 1;

    fn retry_policy(&self) -> RetryPolicy {
        self.retry.clone()
    }

    fn step_timeout(&self) -> Duration {
        self.step_timeout
    }

    async fn step(
        &self,
        ctx: StepContext,
        mut s: RestoreState,
    ) -> Result<Transition<RestoreState>, StepError> {
        let target = format!("{}/{}", s.env, s.collection);
        // The phase committed, its step not run yet: the repeat runs it from the start.
        crate::faultpoint::hit_at("restore.before_step", s.phase.name());
        match s.phase.clone() {
            RestorePhase::Verify => {
                let path = s.data_path.clone();
                let manifest = s.manifest.clone();
                let keys = identities(&s)?;
                let checked = tokio::task::spawn_blocking(move || {
                    crate::archive::verify_snapshot_with(&path, &manifest, true, keys.as_ref())
                })
                .await
                .map_err(|e| StepError::retryable(format!("verify task failed: {e}")))?;
                if let Err(e) = checked {
                    let message =
                        format!("restore of {}: snapshot check failed: {e}", s.snapshot_id);
                    return Err(match e {
                        crate::archive::ArchiveError::Io { .. } => StepError::retryable(message),
                        _ => StepError::permanent(message),
                    });
                }
                s.phase = RestorePhase::PrepareTarget;
                Ok(Transition::Next(s))
            }
            RestorePhase::PrepareTarget => {
                let client = self.client(&s)?;
                let probe = probe_target(client, &s.env, &s.collection)
                    .await
                    .map_err(|e| {
                        api_step_error(&format!("listing collections of env {}", s.env), &e)
                    })?;
                check_target_rule(&s.env, &s.collection, s.mode, s.force, probe).map_err(|e| {
                    StepError::permanent(format!("restore of {}: {e}", s.snapshot_id))
                })?;
                if probe == TargetProbe::Missing {
                    if let Err(e) = client.add_collection(&s.env, &s.collection).await {
                        // Created by a concurrent or earlier attempt whose answer was lost?
                        let again = probe_target(client, &s.env, &s.collection).await.ok();
                        if !matches!(again, Some(TargetProbe::Exists { documents: 0 })) {
                            return Err(api_step_error(
                                &format!("creating collection {target}"),
                                &e,
                            ));
                        }
                    }
                    // Created, Upload not committed: the repeat finds it empty and goes on.
                    crate::faultpoint::hit("restore.after_create_collection");
                }
                s.phase = RestorePhase::Upload;
                Ok(Transition::Next(s))
            }
            RestorePhase::Upload => {
                let client = self.client(&s)?;
                let keys = identities(&s)?;
                let body = DecompressedBody::open(&s.data_path, &s.manifest, keys.as_ref())
                    .map_err(|e| {
                        StepError::retryable(format!("restore of {}: {e}", s.snapshot_id))
                    })?;
                let (body, finish) = body.into_parts();
                let uploaded = client
                    .upload_file(&s.env, &s.storage_path, body, s.manifest.bytes_raw)
                    .await;
                let streamed = finish.finish().await;
                let file_id = uploaded.map_err(|e| {
                    api_step_error(
                        &format!("uploading {} to env {} storage", s.storage_path, s.env),
                        &e,
                    )
                })?;
                let streamed = streamed.map_err(|e| {
                    StepError::retryable(format!("restore of {}: {e}", s.snapshot_id))
                })?;
                if streamed.sha256 != s.manifest.sha256_raw
                    || streamed.bytes != s.manifest.bytes_raw
                {
                    let error = StepError::permanent(format!(
                        "restore of {}: the uploaded data ({} bytes, sha256 {}) does not match the manifest ({} bytes, sha256 {}); not importing it",
                        s.snapshot_id, streamed.bytes, streamed.sha256, s.manifest.bytes_raw, s.manifest.sha256_raw
                    ));
                    return self.after_upload(&ctx, s, file_id, error);
                }
                // In the env's storage, StartImport not committed: the repeat uploads again
                // to the same path.
                crate::faultpoint::hit("restore.after_upload");
                s.phase = RestorePhase::StartImport { file_id };
                Ok(Transition::Next(s))
            }
            RestorePhase::StartImport { file_id } => {
                let client = match self.client(&s) {
                    Ok(client) => client,
                    Err(e) => return self.after_upload(&ctx, s, file_id, e),
                };
                let key = ctx.job_id.to_string();
                let store_err = |e: tcb_state::EngineError| {
                    StepError::retryable(format!("recording the import call: {e}"))
                };
                let calls: u32 = self.marks.get(&key).map_err(store_err)?.unwrap_or(0);
                let restarted = calls > 0;
                let mode = if restarted && !s.force {
                    ConflictMode::Upsert
                } else {
                    s.mode
                };
                self.marks.put(&key, &(calls + 1)).map_err(store_err)?;
                // Counted, not called: the repeat calls it once, in upsert mode.
                crate::faultpoint::hit("restore.after_import_mark");
                let req = ImportRequest {
                    collection_name: s.collection.clone(),
                    file_path: s.storage_path.clone(),
                    file_type: file_type(&s.manifest),
                    stop_on_error: s.stop_on_error,
                    conflict_mode: mode,
                };
                let import_job_id = match client.import(&s.env, &req).await {
                    Ok(id) => id,
                    Err(e) => {
                        let error =
                            api_step_error(&format!("starting the import into {target}"), &e);
                        return self.after_upload(&ctx, s, file_id, error);
                    }
                };
                // Running on the server, its id not committed: the repeat starts a second
                // import (upsert), which converges on the same documents.
                crate::faultpoint::hit("restore.after_import_call");
                tracing::info!(job = %ctx.job_id, import_job_id, %target, restarted, "import started");
                s.phase = RestorePhase::Poll {
                    file_id,
                    import_job_id,
                    first_poll_ms: unix_ms(ctx.now),
                    next_interval_ms: self.poll.initial.as_millis() as u64,
                    restarted_import: restarted,
                };
                Ok(Transition::Next(s))
            }
            RestorePhase::Poll {
                file_id,
                import_job_id,
                first_poll_ms,
                next_interval_ms,
                restarted_import,
            } => {
                let client = match self.client(&s) {
                    Ok(client) => client,
                    Err(e) => return self.after_upload(&ctx, s, file_id, e),
                };
                let what = format!("import job {import_job_id} into {target}");
                let info = match client.query_migrate_job(&s.env, import_job_id).await {
                    Ok(info) => info,
                    Err(e) => {
                        let error = api_step_error(&what, &e);
                        return self.after_upload(&ctx, s, file_id, error);
                    }
                };
                match info.status {
                    MigrateStatus::Success => {
                        let outcome = ImportOutcome {
                            snapshot_id: s.snapshot_id.clone(),
                            env: s.env.clone(),
                            collection: s.collection.clone(),
                            import_job_id,
                            expected_records: s.manifest.records,
                            record_success: info.record_success,
                            record_fail: info.record_fail,
                            message: info.message,
                            restarted_import,
                            cleanup_error: None,
                        };
                        s.phase = RestorePhase::Cleanup { file_id, outcome };
                        Ok(Transition::Next(s))
                    }
                    MigrateStatus::Fail => {
                        let error = StepError::permanent(format!(
                            "{what} failed: {} ({} records imported, {} failed)",
                            info.message.as_deref().unwrap_or("no message"),
                            info.record_success,
                            info.record_fail
                        ));
                        self.after_upload(&ctx, s, file_id, error)
                    }
                    MigrateStatus::Running(status) => {
                        let waited = unix_ms(ctx.now).saturating_sub(first_poll_ms);
                        if waited > self.poll.max_wait.as_millis() as u64 {
                            let error = StepError::permanent(format!(
                                "{what} is still {status} after {}s; giving up (the import may still finish on the server)",
                                waited / 1000
                            ));
                            return self.after_upload(&ctx, s, file_id, error);
                        }
                        let at = ctx.now + Duration::from_millis(next_interval_ms);
                        let grown = (next_interval_ms as f64 * self.poll.multiplier) as u64;
                        s.phase = RestorePhase::Poll {
                            file_id,
                            import_job_id,
                            first_poll_ms,
                            next_interval_ms: grown.min(self.poll.max.as_millis() as u64).max(1),
                            restarted_import,
                        };
                        Ok(Transition::WaitUntil { state: s, at })
                    }
                }
            }
            RestorePhase::Cleanup {
                file_id,
                mut outcome,
            } => {
                let client = self.client(&s)?;
                // Best effort: the restore is done; a leftover upload is reported, not fatal.
                outcome.cleanup_error = self
                    .remove_upload(client, ctx.job_id, &s.env, &file_id)
                    .await;
                let output = serde_json::to_value(&outcome).unwrap_or(serde_json::Value::Null);
                let complete = outcome.is_complete();
                s.phase = RestorePhase::Cleanup { file_id, outcome };
                Ok(if complete {
                    Transition::Complete { state: s, output }
                } else {
                    Transition::CompletePartial { state: s, output }
                })
            }
            RestorePhase::Abandon { file_id, error } => {
                let Some(client) = self.clients.get(&s.appid) else {
                    // Nothing can delete it; retrying cannot change that.
                    return Err(StepError::permanent(format!(
                        "{error} (the uploaded file {file_id} was not removed: app {} is not configured)",
                        s.appid
                    )));
                };
                let failed = self
                    .remove_upload(client, ctx.job_id, &s.env, &file_id)
                    .await;
                Err(match failed {
                    None => StepError::permanent(error),
                    // The plaintext upload must not stay: retried while the policy allows,
                    // and the original reason stays in front either way.
                    Some(why) if ctx.attempt < self.retry.max_attempts => {
                        StepError::retryable(format!(
                            "{error} (removing the uploaded file {file_id} failed, retrying: {why})"
                        ))
                    }
                    Some(why) => StepError::permanent(format!(
                        "{error} (the uploaded file {file_id} could not be removed from env {} storage: {why})",
                        s.env
                    )),
                })
            }
        }
    }
}

/// Whether `collection` exists in `env`, and how many documents it holds.
pub async fn probe_target(
    client: &CloudBaseClient,
    env: &str,
    collection: &str,
) -> Result<TargetProbe, ApiError> {
    let all = client.list_collections(env).await?;
    if !all.iter().any(|c| c.name == collection) {
        return Ok(TargetProbe::Missing);
    }
    // The listing's count may lag; an exact count decides whether the target is empty.
    let documents = client
        .database_count(env, &format!("db.collection({collection:?}).count()"))
        .await?;
    Ok(TargetProbe::Exists { documents })
}
