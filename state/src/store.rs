//! The store contract behind the engine: atomic transitions, leases with epochs, a due index,
//! per-job history and parent/child links, plus durable key-value namespaces for applications.
//!
//! Every mutating method is one atomic transaction and is durable when it returns (the sled
//! implementation flushes before returning). A store shared by several workers (e.g. PostgreSQL)
//! would implement the same contract; workflows never see the store.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::clock::from_ms;
use crate::error::StoreError;
use crate::types::{HistoryEntry, JobFilter, JobId, JobStatus, JobSummary, QuarantineEntry};

/// Version of the [`JobRecord`] encoding; a record with another version is quarantined.
pub const RECORD_FORMAT: u32 = 1;

/// A job's lease: who runs its current step, and until when the claim is honoured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub owner: u64,
    pub expires_at_ms: u64,
}

/// The persisted job record (the job's last committed state).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    pub format: u32,
    pub id: JobId,
    pub kind: String,
    pub schema_version: u32,
    pub state: serde_json::Value,
    pub status: JobStatus,
    pub label: String,
    pub parent: Option<JobId>,
    /// True when the parent waits for this job (created by `SpawnChildren`).
    pub awaited_by_parent: bool,
    pub children: Vec<JobId>,
    /// Children the job still waits for.
    pub pending_children: u32,
    pub dedupe_key: Option<String>,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
    /// When the job becomes runnable (Queued/Waiting only).
    pub due_at_ms: Option<u64>,
    /// Failed attempts of the current step.
    pub failed_attempts: u32,
    pub first_failure_at_ms: Option<u64>,
    /// Crash recoveries since the job's last commit (progress or a scheduled retry).
    pub recoveries: u32,
    /// Incremented by every claim; a commit must present the current epoch.
    pub epoch: u64,
    pub lease: Option<Lease>,
    pub cancel_requested: bool,
    pub last_error: Option<String>,
    pub output: Option<serde_json::Value>,
    /// Number of history entries; the next entry's sequence number.
    pub history_len: u64,
}

impl JobRecord {
    pub fn summary(&self) -> JobSummary {
        JobSummary {
            id: self.id,
            kind: self.kind.clone(),
            label: self.label.clone(),
            status: self.status,
            parent: self.parent,
            created_at: from_ms(self.created_at_ms),
            updated_at: from_ms(self.updated_at_ms),
            due_at: self.due_at_ms.map(from_ms),
            attempt: self.failed_attempts,
            last_error: self.last_error.clone(),
        }
    }
}

/// A job to create.
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    pub kind: String,
    pub schema_version: u32,
    pub state: serde_json::Value,
    pub label: String,
    pub parent: Option<JobId>,
    pub dedupe_key: Option<String>,
    pub due_at: SystemTime,
}

/// The result of a step, to commit atomically.
#[derive(Debug, Clone, PartialEq)]
pub enum Commit {
    Next {
        state: serde_json::Value,
    },
    Wait {
        state: serde_json::Value,
        at: SystemTime,
    },
    Spawn {
        state: serde_json::Value,
        children: Vec<NewJob>,
    },
    Complete {
        state: serde_json::Value,
        output: serde_json::Value,
        /// `Some(reason)` when the workflow itself reports a partial failure.
        partial: Option<String>,
    },
    Retry {
        error: String,
        at: SystemTime,
        delay: Duration,
    },
    Fail {
        error: String,
    },
}

/// A job whose record changed in a transaction, with the history entry written for it.
#[derive(Debug, Clone, PartialEq)]
pub struct Changed {
    pub record: JobRecord,
    pub entry: HistoryEntry,
}

/// A runnable job found in the due index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueJob {
    pub id: JobId,
    pub kind: String,
    pub due_at: SystemTime,
}

/// The contract every store implements. All mutations are atomic and durable on return.
pub trait JobStore: Send + Sync + 'static {
    /// Creates a job, or returns the existing id for a known `dedupe_key` (then no change).
    fn submit(&self, job: NewJob, now: SystemTime) -> Result<(JobId, Vec<Changed>), StoreError>;
    /// Takes the lease of a due Queued/Waiting job: status Running, epoch + 1.
    /// `Ok(None)` when the job is not (or no longer) claimable.
    fn claim(
        &self,
        id: JobId,
        owner: u64,
        now: SystemTime,
        lease_until: SystemTime,
    ) -> Result<Option<(JobRecord, Changed)>, StoreError>;
    /// Commits a step's result; rejected with `StaleEpoch` unless the job is Running with `epoch`.
    fn commit(
        &self,
        id: JobId,
        epoch: u64,
        commit: Commit,
        now: SystemTime,
    ) -> Result<Vec<Changed>, StoreError>;
    /// Commits `Next { state }` and, unless the job was cancelled meanwhile, claims its next
    /// step for the same owner in the same transaction: one durable write instead of two for a
    /// job that goes straight on. `Ok((changes, None))` when it was not claimed again.
    fn commit_and_claim(
        &self,
        id: JobId,
        epoch: u64,
        state: serde_json::Value,
        owner: u64,
        now: SystemTime,
        lease_until: SystemTime,
    ) -> Result<(Vec<Changed>, Option<JobRecord>), StoreError> {
        let mut changed = self.commit(id, epoch, Commit::Next { state }, now)?;
        match self.claim(id, owner, now, lease_until)? {
            Some((rec, c)) => {
                changed.push(c);
                Ok((changed, Some(rec)))
            }
            None => Ok((changed, None)),
        }
    }
    /// Cancels a job (at once unless Running: then at its next step boundary) and its
    /// non-terminal descendants. A terminal job is left alone (empty result).
    fn cancel(&self, id: JobId, now: SystemTime) -> Result<Vec<Changed>, StoreError>;
    /// Restarts a Failed or PartiallyFailed job from its last committed state (see
    /// `Engine::retry` for parents and children).
    fn restart(&self, id: JobId, now: SystemTime) -> Result<Vec<Changed>, StoreError>;
    /// Makes a job due now that waits for a later time (Waiting, or Queued out a retry's
    /// back-off); any other job is left alone (empty result).
    fn wake(&self, id: JobId, now: SystemTime) -> Result<Vec<Changed>, StoreError>;
    /// Crash recovery at open: every job left Running becomes runnable again, or Failed once
    /// it has been recovered more than `max_recoveries` times without progress. And a
    /// Queued/Waiting job whose last commit lies after `now` (the clock was stepped back) and
    /// that is due later than `now` + the wait it was committed with (due time − commit time)
    /// becomes due at `now` + that wait: a clock stepped back never lengthens a wait.
    fn recover(&self, now: SystemTime, max_recoveries: u32) -> Result<Vec<Changed>, StoreError>;
    /// Due Queued/Waiting jobs, earliest first.
    fn due(&self, now: SystemTime, limit: usize) -> Result<Vec<DueJob>, StoreError>;
    /// The earliest due time strictly after `now`.
    fn next_due_after(&self, now: SystemTime) -> Result<Option<SystemTime>, StoreError>;
    /// True when some job is not terminal.
    fn has_active(&self) -> Result<bool, StoreError>;
    fn get(&self, id: JobId) -> Result<Option<JobRecord>, StoreError>;
    fn history(&self, id: JobId) -> Result<Vec<HistoryEntry>, StoreError>;
    fn list(&self, filter: &JobFilter) -> Result<Vec<JobRecord>, StoreError>;
    /// Moves an undecodable (or unusable) job record aside; a waiting parent treats it as failed.
    fn quarantine(
        &self,
        id: JobId,
        reason: &str,
        now: SystemTime,
    ) -> Result<Vec<Changed>, StoreError>;
    fn quarantined(&self) -> Result<Vec<QuarantineEntry>, StoreError>;
    fn kv_put(&self, namespace: &str, key: &str, value: Vec<u8>) -> Result<(), StoreError>;
    fn kv_get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    fn kv_remove(&self, namespace: &str, key: &str) -> Result<bool, StoreError>;
    fn kv_scan_prefix(
        &self,
        namespace: &str,
        prefix: &str,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError>;
}
