//! `check --test-restore`: prove a snapshot restores. The snapshot is restored (the ordinary
//! restore workflow) into a scratch collection `<collection>_verify_<UTC time>` of its own env,
//! the document count and a sample of documents are compared with the snapshot, and the scratch
//! collection is dropped whatever the outcome (interrupted or failed included, best effort).
//! The command line drives only the restore job: copy jobs backing off for days do not keep a
//! test restore waiting.

use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;
use serde_json::Value;
use tcb_state::{Engine, JobId, JobStatus, SubmitOptions};
use time::OffsetDateTime;

use crate::archive::encrypt::Identities;
use crate::archive::SnapshotLines;
use crate::catalog::CatalogEntry;
use crate::client::CloudBaseClient;
use crate::naming;
use crate::restore::{ImportOutcome, RestorePlan, RestoreRequest, RestoreState, RestoreWorkflow};

use super::ejson;
use super::records::VerificationStore;

/// `<collection>_verify_<UTC time>`, shortened to a valid name.
pub fn scratch_collection_name(collection: &str, now: OffsetDateTime) -> String {
    let suffix = format!("_verify_{}", naming::format_snapshot_time(now));
    let room = naming::MAX_NAME_BYTES.saturating_sub(suffix.len());
    let mut base = collection.to_string();
    while base.len() > room {
        base.pop();
    }
    format!("{base}{suffix}")
}

/// What a test restore found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TestRestoreResult {
    pub snapshot_id: String,
    pub scratch_collection: String,
    pub expected_records: u64,
    pub restored_count: u64,
    pub sampled: usize,
    /// Human-readable differences; empty = passed.
    pub problems: Vec<String>,
    /// The scratch collection could not be dropped.
    pub drop_error: Option<String>,
}

impl TestRestoreResult {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TestRestoreError {
    #[error("test restore of {id}: {message}")]
    Failed { id: String, message: String },
}

/// A deterministic sample (reservoir, seeded by the snapshot id) of up to `k` documents;
/// `identities` decrypt an encrypted snapshot.
pub fn sample_documents(
    entry: &CatalogEntry,
    k: usize,
    identities: Option<&Identities>,
) -> Result<Vec<Value>, String> {
    use rand::{Rng, SeedableRng};
    let seed = entry
        .manifest
        .sha256_raw
        .bytes()
        .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut sample: Vec<Value> = Vec::with_capacity(k);
    let lines = SnapshotLines::open_snapshot(&entry.data_path, &entry.manifest, identities)
        .map_err(|e| e.to_string())?;
    for (i, line) in lines.enumerate() {
        let line = line.map_err(|e| e.to_string())?;
        let doc: Value = serde_json::from_slice(&line)
            .map_err(|e| format!("{}: record {}: {e}", entry.data_path.display(), i + 1))?;
        if sample.len() < k {
            sample.push(doc);
        } else {
            let j = rng.gen_range(0..=i);
            if let Some(slot) = sample.get_mut(j) {
                *slot = doc;
            }
        }
    }
    Ok(sample)
}

/// Compares the restored collection with the snapshot: count, then every sampled document
/// looked up by `_id` must be equal value for value.
pub async fn compare_restored(
    client: &CloudBaseClient,
    env: &str,
    collection: &str,
    expected_records: u64,
    sample: &[Value],
) -> (u64, Vec<String>) {
    let mut problems = Vec::new();
    let count = match client
        .database_count(env, &format!("db.collection({collection:?}).count()"))
        .await
    {
        Ok(n) => n,
        Err(e) => {
            problems.push(format!("counting {env}/{collection}: {e}"));
            return (0, problems);
        }
    };
    if count != expected_records {
        problems.push(format!(
            "{env}/{collection} holds {count} documents, the snapshot {expected_records}"
        ));
    }
    for doc in sample {
        let Some(id) = doc.get("_id") else {
            problems.push("a sampled record has no _id".into());
            continue;
        };
        let id_literal = serde_json::to_string(id).unwrap_or_default();
        let query = format!("db.collection({collection:?}).where({{_id: {id_literal}}}).get()");
        match client.database_query(env, &query).await {
            Ok(page) => match page.data.as_slice() {
                [found] if ejson::same_document(found, doc) => {}
                [found] => problems.push(format!(
                    "document {id_literal} differs: snapshot {doc}, restored {found}"
                )),
                [] => problems.push(format!("document {id_literal} is missing")),
                more => problems.push(format!("document {id_literal} found {} times", more.len())),
            },
            Err(e) => problems.push(format!("looking up {id_literal}: {e}")),
        }
    }
    (count, problems)
}

/// A test restore ready to submit: the restore job's initial state and where it restores to.
#[derive(Debug, Clone)]
pub struct PlannedTestRestore {
    pub env: String,
    pub scratch_collection: String,
    pub state: RestoreState,
}

/// Plans the test restore of `entry` into a new scratch collection of its own env;
/// `identity_file` decrypts an encrypted snapshot.
pub fn plan_test_restore(
    entry: &CatalogEntry,
    now: OffsetDateTime,
    identity_file: Option<&Path>,
) -> Result<PlannedTestRestore, TestRestoreError> {
    let scratch = scratch_collection_name(&entry.manifest.collection, now);
    let req = RestoreRequest {
        to_collection: Some(scratch.clone()),
        identity_file: identity_file.map(Path::to_path_buf),
        ..RestoreRequest::default()
    };
    let plan = RestorePlan::new(entry, &req, now).map_err(|e| TestRestoreError::Failed {
        id: entry.id.clone(),
        message: e.to_string(),
    })?;
    Ok(PlannedTestRestore {
        env: plan.env.clone(),
        scratch_collection: scratch,
        state: plan.into_state(entry),
    })
}

/// How the restore job of a test restore ended.
#[derive(Debug, Clone)]
pub struct RestoreJobEnd {
    pub job: JobId,
    pub status: JobStatus,
    pub output: Option<Value>,
    pub error: Option<String>,
}

/// How a restored collection is compared with its snapshot.
#[derive(Debug, Clone, Copy)]
pub struct Comparison<'a> {
    /// Documents of the snapshot looked up in the restored collection.
    pub sample_size: usize,
    /// Decrypts the snapshot when it is encrypted.
    pub identity_file: Option<&'a Path>,
}

/// After the restore job ended: compares `target` (env, scratch collection) with the snapshot
/// (see [`Comparison`]), drops the scratch collection whatever the
/// outcome, and records the result in `store`.
pub async fn finish_test_restore(
    client: &CloudBaseClient,
    store: &VerificationStore,
    entry: &CatalogEntry,
    target: (&str, &str),
    end: &RestoreJobEnd,
    compare: Comparison<'_>,
    now: OffsetDateTime,
) -> Result<TestRestoreResult, TestRestoreError> {
    let Comparison {
        sample_size,
        identity_file,
    } = compare;
    let fail = |message: String| TestRestoreError::Failed {
        id: entry.id.clone(),
        message,
    };
    let (env, scratch) = target;
    let mut problems = Vec::new();
    let mut restored_count = 0;
    let mut sampled = 0;
    if end.status == JobStatus::Succeeded || end.status == JobStatus::PartiallyFailed {
        if let Some(outcome) = end
            .output
            .clone()
            .and_then(|o| serde_json::from_value::<ImportOutcome>(o).ok())
        {
            if outcome.record_fail > 0 {
                problems.push(format!("{} records failed to import", outcome.record_fail));
            }
        }
        // No early return from here on: the scratch collection is dropped whatever happens.
        let path_entry = entry.clone();
        let keys = match (&entry.manifest.encryption, identity_file) {
            (Some(_), Some(path)) => Identities::load(path).map(Some).map_err(|e| e.to_string()),
            _ => Ok(None),
        };
        let sample = match keys {
            Ok(keys) => tokio::task::spawn_blocking(move || {
                sample_documents(&path_entry, sample_size, keys.as_ref())
            })
            .await
            .unwrap_or_else(|e| Err(format!("the sampling task failed: {e}"))),
            Err(e) => Err(e),
        };
        match sample {
            Ok(sample) => {
                sampled = sample.len();
                let (count, found) =
                    compare_restored(client, env, scratch, entry.manifest.records, &sample).await;
                restored_count = count;
                problems.extend(found);
            }
            Err(e) => problems.push(format!("reading the snapshot: {e}")),
        }
    } else {
        problems.push(format!(
            "restore job {} ended {}: {}",
            end.job,
            end.status.as_str(),
            end.error.clone().unwrap_or_default()
        ));
    }
    let drop_error = drop_scratch(client, env, scratch).await;
    let result = TestRestoreResult {
        snapshot_id: entry.id.clone(),
        scratch_collection: scratch.to_string(),
        expected_records: entry.manifest.records,
        restored_count,
        sampled,
        problems,
        drop_error,
    };
    store
        .update(&entry.id, |r| {
            r.last_test_restored_at = Some(now);
            r.last_test_restore_ok = Some(result.ok());
            r.last_test_restore_error = (!result.ok()).then(|| result.problems.join("; "));
        })
        .map_err(|e| fail(e.to_string()))?;
    Ok(result)
}

/// Drops a scratch collection; the error, if any, as the report says it. One that does not
/// exist (-502005: an interrupted restore may not have created it yet) is fine.
async fn drop_scratch(client: &CloudBaseClient, env: &str, scratch: &str) -> Option<String> {
    match client.delete_collection(env, scratch).await {
        Ok(()) => None,
        Err(e) if e.errcode() == Some(COLLECTION_DOES_NOT_EXIST) => None,
        Err(e) => Some(format!("dropping {env}/{scratch}: {e}")),
    }
}

/// The errcode of "collection does not exist" (wechat-api.md §10).
const COLLECTION_DOES_NOT_EXIST: i64 = -502005;

/// Runs the engine until `job` is terminal or `interrupt` fires (then stops gracefully: the
/// running step gets the engine's shutdown grace). Only this job is waited for: a copy job
/// backing off for days, or any other unfinished job, does not keep it running. `true` when
/// interrupted.
async fn drive_job(
    engine: &Engine,
    job: JobId,
    interrupt: impl Future<Output = ()>,
) -> Result<bool, tcb_state::EngineError> {
    let interrupted = AtomicBool::new(false);
    let stop = async {
        tokio::select! {
            () = interrupt => interrupted.store(true, Ordering::SeqCst),
            done = engine.wait(job) => {
                if let Err(e) = done {
                    tracing::warn!(%job, error = %e, "cannot wait for the test restore job");
                }
            }
        }
    };
    engine.run(stop).await?;
    Ok(interrupted.load(Ordering::SeqCst))
}

/// Runs one test restore to the end on `engine` (which must have [`RestoreWorkflow`]
/// registered and no other runner active), records the result and drops the scratch collection.
/// An encrypted snapshot needs [`run_test_restore_with_identity`].
pub async fn run_test_restore(
    engine: &Engine,
    client: &CloudBaseClient,
    store: &VerificationStore,
    entry: &CatalogEntry,
    sample_size: usize,
    now: OffsetDateTime,
) -> Result<TestRestoreResult, TestRestoreError> {
    let compare = Comparison {
        sample_size,
        identity_file: None,
    };
    run_test_restore_with_identity(
        engine,
        client,
        store,
        entry,
        compare,
        now,
        std::future::pending(),
    )
    .await
}

/// [`run_test_restore`], decrypting an encrypted snapshot with the comparison's identity file
/// (both for the restore and for the sample it compares), and stopping at `interrupt`: the
/// restore job is then cancelled (it must not resume later into a collection nobody drops)
/// and the scratch collection dropped, best effort, the error saying how that went.
pub async fn run_test_restore_with_identity(
    engine: &Engine,
    client: &CloudBaseClient,
    store: &VerificationStore,
    entry: &CatalogEntry,
    compare: Comparison<'_>,
    now: OffsetDateTime,
    interrupt: impl Future<Output = ()>,
) -> Result<TestRestoreResult, TestRestoreError> {
    let fail = |message: String| TestRestoreError::Failed {
        id: entry.id.clone(),
        message,
    };
    let planned = plan_test_restore(entry, now, compare.identity_file)?;
    let job = engine
        .submit::<RestoreWorkflow>(
            planned.state.clone(),
            SubmitOptions::label(format!("test-restore {}", entry.id)),
        )
        .map_err(|e| fail(e.to_string()))?;
    let target = (planned.env.as_str(), planned.scratch_collection.as_str());
    let stopped = match drive_job(engine, job, interrupt).await {
        Ok(false) => None,
        Ok(true) => Some("interrupted".to_string()),
        Err(e) => Some(e.to_string()),
    };
    if let Some(why) = stopped {
        let cancel = engine
            .cancel(job)
            .err()
            .map(|e| format!("; cancelling restore job {job}: {e}"));
        let dropped = match drop_scratch(client, target.0, target.1).await {
            None => format!("scratch collection {}/{} dropped", target.0, target.1),
            Some(e) => format!("{e}; drop it by hand"),
        };
        return Err(fail(format!(
            "{why} ({dropped}{})",
            cancel.unwrap_or_default()
        )));
    }
    let view = engine
        .job(job)
        .map_err(|e| fail(e.to_string()))?
        .ok_or_else(|| fail(format!("restore job {job} vanished")))?;
    let end = RestoreJobEnd {
        job,
        status: view.summary.status,
        output: view.output.clone(),
        error: view.summary.last_error.clone(),
    };
    finish_test_restore(client, store, entry, target, &end, compare, now).await
}
