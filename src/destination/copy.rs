//! The `copy.snapshot` workflow kind: copy one stored snapshot to one destination, durably.
//!
//! Data file first, manifest last (a manifest at the destination means its data is complete),
//! then a [`CopyRecord`] so `forget --prune` can delete the copy; `forget` also cancels a copy
//! still under way ([`cancel_copies`]) and deletes what it already put. A destination that is down
//! makes the step fail as retryable; the engine retries it with this kind's (long) backoff, and
//! the local snapshot is unaffected meanwhile. Both puts overwrite, so a step repeated after a
//! crash is harmless.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tcb_state::{
    Engine, EngineError, JobId, KvNamespace, RetryPolicy, StepContext, StepError, SubmitOptions,
    Transition, Workflow,
};

use super::{key_for, Destination, DestinationError, RemoteObject};
use crate::catalog::CatalogEntry;

/// The configured destinations by name.
#[derive(Clone, Default)]
pub struct Destinations {
    map: HashMap<String, Arc<dyn Destination>>,
}

impl Destinations {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn insert(&mut self, d: Arc<dyn Destination>) {
        self.map.insert(d.name().to_string(), d);
    }
    pub fn get(&self, name: &str) -> Option<&Arc<dyn Destination>> {
        self.map.get(name)
    }
    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.map.keys()
    }
}

/// One finished copy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyRecord {
    pub snapshot_id: String,
    pub destination: String,
    pub data: RemoteObject,
    pub manifest: RemoteObject,
}

/// Finished copies in the state store (kv namespace [`CopyRecords::NAMESPACE`]).
#[derive(Clone)]
pub struct CopyRecords {
    kv: KvNamespace,
}

impl CopyRecords {
    pub const NAMESPACE: &'static str = "copies";

    pub fn new(kv: KvNamespace) -> Self {
        CopyRecords { kv }
    }
    fn key(snapshot_id: &str, destination: &str) -> String {
        // The id ends in the numeric export job id, so "<id>#" never prefixes another id.
        format!("{snapshot_id}#{destination}")
    }
    pub fn put(&self, r: &CopyRecord) -> Result<(), EngineError> {
        self.kv.put(&Self::key(&r.snapshot_id, &r.destination), r)
    }
    pub fn of_snapshot(&self, snapshot_id: &str) -> Result<Vec<CopyRecord>, EngineError> {
        Ok(self
            .kv
            .scan_prefix::<CopyRecord>(&format!("{snapshot_id}#"))?
            .into_iter()
            .map(|(_, r)| r)
            .collect())
    }
    pub fn remove(&self, r: &CopyRecord) -> Result<bool, EngineError> {
        self.kv.remove(&Self::key(&r.snapshot_id, &r.destination))
    }
    /// The copy of `snapshot_id` at `destination`, if one was recorded.
    pub fn get(
        &self,
        snapshot_id: &str,
        destination: &str,
    ) -> Result<Option<CopyRecord>, EngineError> {
        self.kv.get(&Self::key(snapshot_id, destination))
    }
    /// Every record, by snapshot id then destination.
    pub fn all(&self) -> Result<Vec<CopyRecord>, EngineError> {
        Ok(self
            .kv
            .scan_prefix::<CopyRecord>("")?
            .into_iter()
            .map(|(_, r)| r)
            .collect())
    }
    /// A data object already at `destination` under `key`, recorded for another snapshot
    /// (snapshots that share a data file, see `crate::data_refs`, share its remote copy too).
    pub fn data_object(
        &self,
        destination: &str,
        key: &str,
        except_snapshot: &str,
    ) -> Result<Option<RemoteObject>, EngineError> {
        Ok(self
            .all()?
            .into_iter()
            .find(|r| {
                r.destination == destination
                    && r.data.key == key
                    && r.snapshot_id != except_snapshot
            })
            .map(|r| r.data))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum CopyPhase {
    Data,
    Manifest { data: RemoteObject },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyState {
    pub snapshot_id: String,
    pub destination: String,
    pub data_path: PathBuf,
    pub manifest_path: PathBuf,
    pub data_key: String,
    pub manifest_key: String,
    pub phase: CopyPhase,
}

impl CopyState {
    /// The copy of `entry` (stored under `root`) to `destination`.
    pub fn new(entry: &CatalogEntry, root: &Path, destination: &str) -> Result<Self, String> {
        let key = |p: &Path| {
            key_for(root, p).ok_or_else(|| {
                format!(
                    "snapshot {}: {} is not under the destination root {}",
                    entry.id,
                    p.display(),
                    root.display()
                )
            })
        };
        Ok(CopyState {
            snapshot_id: entry.id.clone(),
            destination: destination.to_string(),
            data_key: key(&entry.data_path)?,
            manifest_key: key(&entry.manifest_path)?,
            data_path: entry.data_path.clone(),
            manifest_path: entry.manifest_path.clone(),
            phase: CopyPhase::Data,
        })
    }
}

/// Long, patient retries: a destination may be down for hours.
pub fn default_copy_retry() -> RetryPolicy {
    RetryPolicy {
        initial_interval: Duration::from_secs(5),
        multiplier: 2.0,
        max_interval: Duration::from_secs(15 * 60),
        max_attempts: 100,
        max_elapsed: Some(Duration::from_secs(3 * 24 * 3600)),
    }
}

#[derive(Clone)]
pub struct CopyWorkflow {
    destinations: Destinations,
    records: CopyRecords,
    retry: RetryPolicy,
}

impl CopyWorkflow {
    pub const KIND_NAME: &'static str = "copy.snapshot";

    pub fn new(destinations: Destinations, records: CopyRecords) -> Self {
        CopyWorkflow {
            destinations,
            records,
            retry: default_copy_retry(),
        }
    }
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }
}

fn step_error(e: DestinationError) -> StepError {
    if e.is_transient() {
        StepError::retryable(e.to_string())
    } else {
        StepError::permanent(e.to_string())
    }
}

impl Workflow for CopyWorkflow {
    type State = CopyState;
    const KIND: &'static str = "copy.snapshot";
    const SCHEMA_VERSION: u32 = 1;

    fn retry_policy(&self) -> RetryPolicy {
        self.retry.clone()
    }

    fn step_timeout(&self) -> Duration {
        Duration::from_secs(6 * 3600)
    }

    async fn step(
        &self,
        _ctx: StepContext,
        mut s: CopyState,
    ) -> Result<Transition<CopyState>, StepError> {
        let dest = self.destinations.get(&s.destination).ok_or_else(|| {
            StepError::permanent(format!(
                "copy of {}: destination {} is not configured",
                s.snapshot_id, s.destination
            ))
        })?;
        for path in [&s.data_path, &s.manifest_path] {
            if !path.exists() {
                return Err(StepError::permanent(format!(
                    "copy of {}: {} no longer exists (snapshot forgotten?)",
                    s.snapshot_id,
                    path.display()
                )));
            }
        }
        match s.phase.clone() {
            CopyPhase::Data => {
                // A snapshot sharing an earlier snapshot's data file shares its copy too.
                let existing = self
                    .records
                    .data_object(&s.destination, &s.data_key, &s.snapshot_id)
                    .map_err(|e| StepError::retryable(format!("reading copy records: {e}")))?;
                let data = match existing {
                    Some(data) => data,
                    None => dest
                        .put_file(&s.data_key, &s.data_path)
                        .await
                        .map_err(step_error)?,
                };
                // The data object is complete at the destination, Manifest not committed: the
                // repeat puts it again (overwriting).
                crate::faultpoint::hit("copy.after_data_put");
                s.phase = CopyPhase::Manifest { data };
                Ok(Transition::Next(s))
            }
            CopyPhase::Manifest { data } => {
                let manifest = dest
                    .put_file(&s.manifest_key, &s.manifest_path)
                    .await
                    .map_err(step_error)?;
                // Both files are at the destination, no record yet.
                crate::faultpoint::hit("copy.after_manifest_put");
                let record = CopyRecord {
                    snapshot_id: s.snapshot_id.clone(),
                    destination: s.destination.clone(),
                    data,
                    manifest,
                };
                self.records
                    .put(&record)
                    .map_err(|e| StepError::retryable(format!("recording the copy: {e}")))?;
                // Recorded (keyed by snapshot and destination), the job not completed.
                crate::faultpoint::hit("copy.after_record");
                let output = serde_json::to_value(&record).unwrap_or(serde_json::Value::Null);
                Ok(Transition::Complete { state: s, output })
            }
        }
    }
}

/// Submits one copy job per destination for `entry` (deduplicated: submitting the same copy
/// twice while one is pending returns the pending job).
pub fn submit_copies(
    engine: &Engine,
    entry: &CatalogEntry,
    root: &Path,
    destinations: &[String],
) -> Result<Vec<JobId>, String> {
    let mut jobs = Vec::new();
    for d in destinations {
        let state = CopyState::new(entry, root, d)?;
        let opts = SubmitOptions {
            dedupe_key: Some(format!("copy:{}#{d}", entry.id)),
            ..SubmitOptions::label(format!("copy {} → {d}", entry.id))
        };
        jobs.push(
            engine
                .submit::<CopyWorkflow>(state, opts)
                .map_err(|e| e.to_string())?,
        );
    }
    Ok(jobs)
}

/// Cancels the unfinished copy jobs of `snapshot_id` (one backing off between its data and
/// manifest puts has no [`CopyRecord`] yet) and deletes what they already put, so that
/// deleting the snapshot orphans nothing remote and leaves no job to fail on its missing
/// files. A job cancelled while it is running a step only gets a cancel request: the
/// snapshot must then be kept this time (an error); the next forget finds the job finished.
/// Returns how many jobs were cancelled.
pub async fn cancel_copies(
    engine: &Engine,
    destinations: &Destinations,
    records: &CopyRecords,
    snapshot_id: &str,
) -> Result<usize, String> {
    let filter = tcb_state::JobFilter {
        kind: Some(CopyWorkflow::KIND_NAME.to_string()),
        active_only: true,
        ..tcb_state::JobFilter::default()
    };
    let mut cancelled = 0;
    for job in engine.list(&filter).map_err(|e| e.to_string())? {
        let Some(view) = engine.job(job.id).map_err(|e| e.to_string())? else {
            continue;
        };
        let Ok(state) = serde_json::from_value::<CopyState>(view.state) else {
            continue;
        };
        if state.snapshot_id != snapshot_id {
            continue;
        }
        engine.cancel(job.id).map_err(|e| e.to_string())?;
        let now = engine.job(job.id).map_err(|e| e.to_string())?;
        if now.is_some_and(|v| !v.status().is_terminal()) {
            return Err(format!(
                "its copy to {} is running (job {}); cancel requested, kept until the next forget",
                state.destination, job.id
            ));
        }
        cancelled += 1;
        delete_partial_copy(destinations, records, &state).await?;
    }
    Ok(cancelled)
}

/// Deletes what a cancelled copy job may have put: its data object (known once the job
/// reached the manifest phase; unless another snapshot's copy uses it) and its manifest (a
/// crash between the manifest put and the record leaves one). Objects not there are fine.
async fn delete_partial_copy(
    destinations: &Destinations,
    records: &CopyRecords,
    s: &CopyState,
) -> Result<(), String> {
    let dest = destinations.get(&s.destination).ok_or_else(|| {
        format!(
            "its unfinished copy to {} may have put objects there, and that destination is not configured (or not reachable from this command)",
            s.destination
        )
    })?;
    let by_key = |key: &str| RemoteObject {
        key: key.to_string(),
        remote_id: None,
        bytes: 0,
    };
    let data = match &s.phase {
        CopyPhase::Manifest { data } => data.clone(),
        // The put may have finished without its commit (a crash): by key, where a key is
        // enough to find it.
        CopyPhase::Data => by_key(&s.data_key),
    };
    let shared = records
        .data_object(&s.destination, &data.key, &s.snapshot_id)
        .map_err(|e| e.to_string())?
        .is_some();
    // The data object is known to be there once the job reached the manifest phase: failing
    // to delete it keeps the snapshot. The rest is only possibly there, and not addressable
    // by key at every destination: best effort.
    let known = matches!(s.phase, CopyPhase::Manifest { .. });
    if !shared {
        if let Err(e) = dest.delete(&data).await {
            if known {
                return Err(format!(
                    "deleting {} put by its unfinished copy to {}: {e}",
                    data.key, s.destination
                ));
            }
            tracing::warn!(key = %data.key, destination = %s.destination, error = %e,
                "could not delete what a cancelled copy may have put");
        }
    }
    if let Err(e) = dest.delete(&by_key(&s.manifest_key)).await {
        tracing::warn!(key = %s.manifest_key, destination = %s.destination, error = %e,
            "could not delete what a cancelled copy may have put");
    }
    Ok(())
}

/// Deletes every recorded copy of `snapshot_id` (see [`delete_copy`]); returns how many.
pub async fn delete_copies(
    destinations: &Destinations,
    records: &CopyRecords,
    snapshot_id: &str,
) -> Result<usize, String> {
    let mut deleted = 0;
    for r in records
        .of_snapshot(snapshot_id)
        .map_err(|e| e.to_string())?
    {
        delete_copy(destinations, records, &r).await?;
        deleted += 1;
    }
    Ok(deleted)
}

/// Deletes one recorded copy: data first (unless another snapshot's copy at the same
/// destination uses the same object), manifest after, record last.
pub async fn delete_copy(
    destinations: &Destinations,
    records: &CopyRecords,
    r: &CopyRecord,
) -> Result<(), String> {
    let dest = destinations.get(&r.destination).ok_or_else(|| {
        format!(
            "snapshot {} has a copy at {}, which is not configured (or not reachable from this command)",
            r.snapshot_id, r.destination
        )
    })?;
    let shared = records
        .data_object(&r.destination, &r.data.key, &r.snapshot_id)
        .map_err(|e| e.to_string())?
        .is_some();
    if !shared {
        dest.delete(&r.data).await.map_err(|e| e.to_string())?;
    }
    dest.delete(&r.manifest).await.map_err(|e| e.to_string())?;
    records.remove(r).map_err(|e| e.to_string())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::destination::local::LocalDir;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_remote_data_object_two_snapshots_share_goes_with_the_last_one() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(&dir.path().join("state"), Default::default()).unwrap();
        let records = CopyRecords::new(engine.kv(CopyRecords::NAMESPACE));
        let nas = dir.path().join("nas");
        let mut destinations = Destinations::new();
        destinations.insert(Arc::new(LocalDir::new("nas", &nas)));
        let local = dir.path().join("file");
        std::fs::write(&local, b"data").unwrap();
        let dest = destinations.get("nas").unwrap().clone();
        let data = dest
            .put_file("prod/orders/1.jsonl.zst", &local)
            .await
            .unwrap();
        let mut copies = Vec::new();
        for job in [1, 2] {
            let manifest = dest
                .put_file(&format!("prod/orders/{job}.manifest.json"), &local)
                .await
                .unwrap();
            let r = CopyRecord {
                snapshot_id: format!("prod/orders/{job}"),
                destination: "nas".into(),
                data: data.clone(),
                manifest,
            };
            records.put(&r).unwrap();
            copies.push(r);
        }
        assert_eq!(
            records
                .data_object("nas", &data.key, "prod/orders/2")
                .unwrap(),
            Some(data.clone())
        );
        delete_copy(&destinations, &records, &copies[0])
            .await
            .unwrap();
        assert!(
            nas.join(&data.key).is_file(),
            "still used by the second copy"
        );
        assert!(!nas.join("prod/orders/1.manifest.json").exists());
        assert!(records.get("prod/orders/1", "nas").unwrap().is_none());
        assert_eq!(
            delete_copies(&destinations, &records, "prod/orders/2")
                .await
                .unwrap(),
            1
        );
        assert!(!nas.join(&data.key).exists());
        assert!(records.all().unwrap().is_empty());
    }
}
