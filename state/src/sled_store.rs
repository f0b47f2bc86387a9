//! `SledJobStore`: the embedded [`JobStore`] on sled 0.34.
//!
//! Trees: `jobs` (id → record), `due` (due ms ++ id → kind, Queued/Waiting only), `active`
//! (id → (), every non-terminal job: what recovery scans, so finished jobs are never read at
//! start-up), `history` (id ++ seq → entry), `links` (parent ++ child → ()), `dedupe`
//! (key → id), `quarantine` (id → entry), and one `kv/<namespace>` tree per app namespace.
//! Every transition is one sled transaction over the job trees, followed by a flush (fsync of
//! sled's log) before the method returns.

use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::SystemTime;

use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use sled::IVec;

use crate::clock::{from_ms, to_ms};
use crate::error::StoreError;
use crate::store::{Changed, Commit, DueJob, JobRecord, JobStore, Lease, NewJob, RECORD_FORMAT};
use crate::types::{HistoryEntry, HistoryEvent, JobFilter, JobId, JobStatus, QuarantineEntry};

type TxResult<T> = Result<T, ConflictableTransactionError<StoreError>>;

/// Group commit: concurrent callers that need their writes durable share one sled flush.
/// A caller's writes are covered by any flush that *starts* after they were written; a caller
/// that finds a flush in progress waits for it and, if that one started too early, for the next.
#[derive(Default)]
struct GroupFlush {
    state: Mutex<FlushState>,
    done: Condvar,
}

#[derive(Default)]
struct FlushState {
    /// Tickets handed out so far (each ticket = "my writes are in sled's memory").
    issued: u64,
    /// Every ticket up to this one is durable.
    durable: u64,
    flushing: bool,
}

impl GroupFlush {
    fn flush(&self, db: &sled::Db) -> Result<(), StoreError> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.issued += 1;
        let ticket = st.issued;
        loop {
            if st.durable >= ticket {
                return Ok(());
            }
            if !st.flushing {
                st.flushing = true;
                let covers = st.issued;
                drop(st);
                let result = db.flush();
                st = self.state.lock().unwrap_or_else(|p| p.into_inner());
                st.flushing = false;
                if result.is_ok() {
                    st.durable = st.durable.max(covers);
                }
                self.done.notify_all();
                result?;
                continue;
            }
            st = self.done.wait(st).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// The sled-backed store. Cheap to clone (sled handles are reference-counted).
#[derive(Clone)]
pub struct SledJobStore {
    db: sled::Db,
    group: Arc<GroupFlush>,
    /// One tree holds every job-related keyspace (a one-tree sled transaction is much cheaper
    /// than one spanning seven trees); each keyspace has a one-byte prefix.
    engine: sled::Tree,
    jobs: Part,
    due: Part,
    active: Part,
    history: Part,
    links: Part,
    quarantine: Part,
}

/// How long `open` retries a lock conflict before reporting `Locked`.
const LOCK_RETRY: std::time::Duration = std::time::Duration::from_millis(1500);

const P_JOBS: u8 = b'j';
const P_DUE: u8 = b'd';
const P_ACTIVE: u8 = b'a';
const P_HISTORY: u8 = b'h';
const P_LINKS: u8 = b'l';
const P_DEDUPE: u8 = b'k';
const P_QUARANTINE: u8 = b'q';

fn prefixed(p: u8, k: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(k.len() + 1);
    v.push(p);
    v.extend_from_slice(k);
    v
}

type KvItem = sled::Result<(IVec, IVec)>;

/// One prefixed keyspace of the engine tree, outside transactions. Keys it returns are
/// stripped of the prefix.
#[derive(Clone)]
struct Part {
    tree: sled::Tree,
    p: u8,
}

impl Part {
    fn strip(p: u8, item: KvItem) -> Option<KvItem> {
        match item {
            Ok((k, v)) => match k.split_first() {
                Some((first, rest)) if *first == p => Some(Ok((IVec::from(rest), v))),
                _ => None,
            },
            Err(e) => Some(Err(e)),
        }
    }

    fn get(&self, k: impl AsRef<[u8]>) -> sled::Result<Option<IVec>> {
        self.tree.get(prefixed(self.p, k.as_ref()))
    }

    fn scan_prefix(&self, k: impl AsRef<[u8]>) -> impl Iterator<Item = KvItem> {
        let p = self.p;
        self.tree
            .scan_prefix(prefixed(p, k.as_ref()))
            .filter_map(move |i| Part::strip(p, i))
    }

    fn iter(&self) -> impl Iterator<Item = KvItem> {
        self.scan_prefix([])
    }

    fn range_to_inclusive(&self, end: &[u8]) -> impl Iterator<Item = KvItem> {
        let p = self.p;
        self.tree
            .range(vec![p]..=prefixed(p, end))
            .filter_map(move |i| Part::strip(p, i))
    }

    fn range_from(&self, start: &[u8]) -> impl Iterator<Item = KvItem> {
        let p = self.p;
        self.tree
            .range(prefixed(p, start)..)
            .map_while(move |i| Part::strip(p, i))
    }

    fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }
}

/// One prefixed keyspace inside a transaction.
struct Sub<'a> {
    t: &'a TransactionalTree,
    p: u8,
}

impl Sub<'_> {
    fn get(
        &self,
        k: impl AsRef<[u8]>,
    ) -> Result<Option<IVec>, sled::transaction::UnabortableTransactionError> {
        self.t.get(prefixed(self.p, k.as_ref()))
    }

    fn insert(
        &self,
        k: impl AsRef<[u8]>,
        v: impl Into<IVec>,
    ) -> Result<Option<IVec>, sled::transaction::UnabortableTransactionError> {
        self.t.insert(prefixed(self.p, k.as_ref()), v)
    }

    fn remove(
        &self,
        k: impl AsRef<[u8]>,
    ) -> Result<Option<IVec>, sled::transaction::UnabortableTransactionError> {
        self.t.remove(prefixed(self.p, k.as_ref()))
    }
}

fn id_key(id: JobId) -> [u8; 8] {
    id.0.to_be_bytes()
}

fn pair_key(a: u64, b: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&a.to_be_bytes());
    k[8..].copy_from_slice(&b.to_be_bytes());
    k
}

fn read_u64(bytes: &[u8]) -> Option<u64> {
    let arr: [u8; 8] = bytes.get(..8)?.try_into().ok()?;
    Some(u64::from_be_bytes(arr))
}

fn decode_record(id: JobId, bytes: &[u8]) -> Result<JobRecord, StoreError> {
    let rec: JobRecord = serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        id,
        reason: format!("invalid job record: {e}"),
    })?;
    if rec.format != RECORD_FORMAT {
        return Err(StoreError::Corrupt {
            id,
            reason: format!(
                "unknown record format {} (this build reads format {RECORD_FORMAT})",
                rec.format
            ),
        });
    }
    if rec.id != id {
        return Err(StoreError::Corrupt {
            id,
            reason: format!("record claims id {}", rec.id),
        });
    }
    Ok(rec)
}

fn encode<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(v).map_err(|e| StoreError::Encode(e.to_string()))
}

fn abort<T>(e: StoreError) -> TxResult<T> {
    Err(ConflictableTransactionError::Abort(e))
}

fn map_tx_err(e: TransactionError<StoreError>) -> StoreError {
    match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => StoreError::from(e),
    }
}

fn is_runnable(status: JobStatus) -> bool {
    matches!(status, JobStatus::Queued | JobStatus::Waiting)
}

/// The due time a runnable job gets after a restart at `now_ms`, when it must move: its last
/// commit lies after `now_ms` (the clock was stepped back) and it is due later than `now_ms` +
/// the wait it was committed with. Waits within one process follow the engine's clock.
fn clamped_due_ms(rec: &JobRecord, now_ms: u64) -> Option<u64> {
    let due = rec.due_at_ms?;
    if !is_runnable(rec.status) || rec.updated_at_ms <= now_ms {
        return None;
    }
    let wait = due.saturating_sub(rec.updated_at_ms);
    let clamped = now_ms.saturating_add(wait);
    (clamped < due).then_some(clamped)
}

/// Index membership of a record, captured before it changes.
#[derive(Clone, Copy)]
struct IndexKey {
    id: JobId,
    due: Option<u64>,
    active: bool,
}

impl IndexKey {
    fn of(rec: &JobRecord) -> IndexKey {
        IndexKey {
            id: rec.id,
            due: if is_runnable(rec.status) {
                rec.due_at_ms
            } else {
                None
            },
            active: !rec.status.is_terminal(),
        }
    }
}

/// The job trees inside one transaction.
struct Tx<'a> {
    jobs: Sub<'a>,
    due: Sub<'a>,
    active: Sub<'a>,
    history: Sub<'a>,
    links: Sub<'a>,
    dedupe: Sub<'a>,
    quarantine: Sub<'a>,
    now_ms: u64,
    changed: Vec<Changed>,
}

impl<'a> Tx<'a> {
    fn new(t: &'a TransactionalTree, now_ms: u64) -> Tx<'a> {
        let sub = |p| Sub { t, p };
        Tx {
            jobs: sub(P_JOBS),
            due: sub(P_DUE),
            active: sub(P_ACTIVE),
            history: sub(P_HISTORY),
            links: sub(P_LINKS),
            dedupe: sub(P_DEDUPE),
            quarantine: sub(P_QUARANTINE),
            now_ms,
            changed: Vec::new(),
        }
    }

    fn get(&self, id: JobId) -> TxResult<Option<JobRecord>> {
        match self.jobs.get(id_key(id))? {
            None => Ok(None),
            Some(bytes) => match decode_record(id, &bytes) {
                Ok(r) => Ok(Some(r)),
                Err(e) => abort(e),
            },
        }
    }

    fn must_get(&self, id: JobId) -> TxResult<JobRecord> {
        match self.get(id)? {
            Some(r) => Ok(r),
            None => abort(StoreError::NotFound(id)),
        }
    }

    /// Writes the record and moves its index entries from `before` to its current status.
    fn save(&self, before: Option<IndexKey>, rec: &JobRecord) -> TxResult<()> {
        let after = IndexKey::of(rec);
        if let Some(b) = before {
            if let Some(d) = b.due {
                self.due.remove(&pair_key(d, b.id.0)[..])?;
            }
            if b.active && !after.active {
                self.active.remove(&id_key(b.id)[..])?;
            }
        }
        if let Some(d) = after.due {
            self.due
                .insert(&pair_key(d, rec.id.0)[..], rec.kind.as_bytes())?;
        }
        if after.active {
            self.active.insert(&id_key(rec.id)[..], &[][..])?;
        }
        let bytes = match encode(rec) {
            Ok(b) => b,
            Err(e) => return abort(e),
        };
        self.jobs.insert(&id_key(rec.id)[..], bytes)?;
        Ok(())
    }

    /// Appends a history entry (status = the record's current status) and remembers the change.
    fn append(&mut self, rec: &mut JobRecord, event: HistoryEvent) -> TxResult<()> {
        let entry = HistoryEntry {
            seq: rec.history_len,
            at: from_ms(self.now_ms),
            status: rec.status,
            attempt: rec.failed_attempts,
            event,
        };
        let bytes = match encode(&entry) {
            Ok(b) => b,
            Err(e) => return abort(e),
        };
        self.history
            .insert(&pair_key(rec.id.0, entry.seq)[..], bytes)?;
        rec.history_len += 1;
        rec.updated_at_ms = self.now_ms;
        self.changed.push(Changed {
            record: rec.clone(),
            entry,
        });
        Ok(())
    }

    /// Saves `rec` (already mutated from `before`) with a history entry.
    fn save_with(
        &mut self,
        before: Option<IndexKey>,
        rec: &mut JobRecord,
        event: HistoryEvent,
    ) -> TxResult<()> {
        self.append(rec, event)?;
        // `changed` holds a clone taken before `history_len` was bumped; refresh it.
        if let Some(last) = self.changed.last_mut() {
            last.record = rec.clone();
        }
        self.save(before, rec)
    }

    fn insert_job(&mut self, id: JobId, job: &NewJob, awaited: bool) -> TxResult<JobRecord> {
        let mut rec = JobRecord {
            format: RECORD_FORMAT,
            id,
            kind: job.kind.clone(),
            schema_version: job.schema_version,
            state: job.state.clone(),
            status: JobStatus::Queued,
            label: job.label.clone(),
            parent: job.parent,
            awaited_by_parent: awaited,
            children: Vec::new(),
            pending_children: 0,
            dedupe_key: job.dedupe_key.clone(),
            created_at_ms: self.now_ms,
            updated_at_ms: self.now_ms,
            due_at_ms: Some(to_ms(job.due_at)),
            failed_attempts: 0,
            first_failure_at_ms: None,
            recoveries: 0,
            epoch: 0,
            lease: None,
            cancel_requested: false,
            last_error: None,
            output: None,
            history_len: 0,
        };
        if let Some(p) = job.parent {
            self.links.insert(&pair_key(p.0, id.0)[..], &[][..])?;
        }
        if let Some(key) = &job.dedupe_key {
            self.dedupe.insert(key.as_bytes(), &id_key(id)[..])?;
        }
        self.save_with(None, &mut rec, HistoryEvent::Submitted)?;
        Ok(rec)
    }

    /// Makes `rec` terminal with `status`, then cancels its non-terminal children and tells a
    /// waiting parent.
    fn finish(
        &mut self,
        before: Option<IndexKey>,
        rec: &mut JobRecord,
        status: JobStatus,
        event: HistoryEvent,
    ) -> TxResult<()> {
        rec.status = status;
        rec.due_at_ms = None;
        rec.lease = None;
        self.save_with(before, rec, event)?;
        for child in rec.children.clone() {
            if let Some(c) = self.get(child)? {
                if !c.status.is_terminal() {
                    self.cancel_record(c)?;
                }
            }
        }
        if rec.awaited_by_parent {
            if let Some(p) = rec.parent {
                self.child_finished(p)?;
            }
        }
        Ok(())
    }

    fn child_finished(&mut self, parent: JobId) -> TxResult<()> {
        let Some(mut p) = self.get(parent)? else {
            return Ok(());
        };
        if p.status != JobStatus::WaitingForChildren {
            return Ok(());
        }
        let before = IndexKey::of(&p);
        p.pending_children = p.pending_children.saturating_sub(1);
        if p.pending_children == 0 {
            p.status = JobStatus::Queued;
            p.due_at_ms = Some(self.now_ms);
            self.save_with(Some(before), &mut p, HistoryEvent::ChildrenDone)?;
        } else {
            self.save(Some(before), &p)?;
        }
        Ok(())
    }

    /// Takes the lease of a due runnable job; `None` when it is not claimable.
    fn claim_job(
        &mut self,
        id: JobId,
        owner: u64,
        lease_until_ms: u64,
    ) -> TxResult<Option<JobRecord>> {
        let Some(mut rec) = self.get(id)? else {
            return Ok(None);
        };
        if !is_runnable(rec.status) || rec.due_at_ms.is_some_and(|d| d > self.now_ms) {
            return Ok(None);
        }
        let before = IndexKey::of(&rec);
        rec.epoch += 1;
        rec.status = JobStatus::Running;
        rec.due_at_ms = None;
        rec.lease = Some(Lease {
            owner,
            expires_at_ms: lease_until_ms,
        });
        let epoch = rec.epoch;
        self.save_with(Some(before), &mut rec, HistoryEvent::StepStarted { epoch })?;
        Ok(Some(rec))
    }

    /// Applies a step's result to a job Running with `epoch`.
    fn commit_job(
        &mut self,
        id: JobId,
        epoch: u64,
        commit: &Commit,
        child_ids: &[JobId],
    ) -> TxResult<()> {
        let mut rec = self.must_get(id)?;
        if rec.status != JobStatus::Running || rec.epoch != epoch {
            return abort(StoreError::StaleEpoch {
                id,
                epoch,
                current: rec.epoch,
                status: rec.status,
            });
        }
        let before = Some(IndexKey::of(&rec));
        rec.lease = None;
        let progress = |rec: &mut JobRecord, state: &serde_json::Value| {
            rec.state = state.clone();
            rec.failed_attempts = 0;
            rec.first_failure_at_ms = None;
            rec.recoveries = 0;
            rec.last_error = None;
        };
        match commit {
            Commit::Complete {
                state,
                output,
                partial,
            } => {
                progress(&mut rec, state);
                rec.output = Some(output.clone());
                let mut failed_children = 0usize;
                for c in &rec.children {
                    match self.get(*c)? {
                        Some(child) if child.status == JobStatus::Succeeded => {}
                        _ => failed_children += 1,
                    }
                }
                let reason = match partial {
                    Some(r) => Some(r.clone()),
                    None if failed_children > 0 => Some(format!(
                        "{failed_children} of {} children did not succeed",
                        rec.children.len()
                    )),
                    None => None,
                };
                return match reason {
                    Some(reason) => self.finish(
                        before,
                        &mut rec,
                        JobStatus::PartiallyFailed,
                        HistoryEvent::PartiallyFailed { reason },
                    ),
                    None => self.finish(
                        before,
                        &mut rec,
                        JobStatus::Succeeded,
                        HistoryEvent::Succeeded,
                    ),
                };
            }
            Commit::Fail { error } => {
                rec.failed_attempts += 1;
                rec.last_error = Some(error.clone());
                return self.finish(
                    before,
                    &mut rec,
                    JobStatus::Failed,
                    HistoryEvent::Failed {
                        error: error.clone(),
                    },
                );
            }
            Commit::Next { state } | Commit::Wait { state, .. } | Commit::Spawn { state, .. } => {
                progress(&mut rec, state)
            }
            Commit::Retry { error, .. } => {
                rec.failed_attempts += 1;
                rec.last_error = Some(error.clone());
                // The step ran to its end (with a retryable error): the process did not die
                // in it, so the run of crashes "in a row" is broken. Without this reset, kills
                // interleaved with ordinary retries (a flaky network under frequent restarts)
                // added up to a false crash loop; a real one (a step that kills the process
                // every time) never reaches a commit, and the retry budget still bounds the
                // failures.
                rec.recoveries = 0;
                if rec.first_failure_at_ms.is_none() {
                    rec.first_failure_at_ms = Some(self.now_ms);
                }
            }
        }
        if rec.cancel_requested {
            return self.finish(
                before,
                &mut rec,
                JobStatus::Cancelled,
                HistoryEvent::Cancelled,
            );
        }
        match commit {
            Commit::Next { .. } => {
                rec.status = JobStatus::Queued;
                rec.due_at_ms = Some(self.now_ms);
                self.save_with(before, &mut rec, HistoryEvent::Advanced)
            }
            Commit::Wait { at, .. } => {
                let until_ms = to_ms(*at);
                rec.status = JobStatus::Waiting;
                rec.due_at_ms = Some(until_ms);
                self.save_with(before, &mut rec, HistoryEvent::Waiting { until_ms })
            }
            Commit::Retry { error, at, delay } => {
                rec.status = JobStatus::Queued;
                rec.due_at_ms = Some(to_ms(*at));
                self.save_with(
                    before,
                    &mut rec,
                    HistoryEvent::RetryScheduled {
                        error: error.clone(),
                        delay_ms: u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                    },
                )
            }
            Commit::Spawn { children, .. } => {
                if children.is_empty() {
                    rec.status = JobStatus::Queued;
                    rec.due_at_ms = Some(self.now_ms);
                    return self.save_with(before, &mut rec, HistoryEvent::Advanced);
                }
                let mut spawned = Vec::with_capacity(children.len());
                for (child, cid) in children.iter().zip(child_ids) {
                    let mut job = child.clone();
                    job.parent = Some(id);
                    job.dedupe_key = None;
                    self.insert_job(*cid, &job, true)?;
                    spawned.push(*cid);
                }
                rec.children.extend(spawned.iter().copied());
                rec.pending_children = u32::try_from(spawned.len()).unwrap_or(u32::MAX);
                rec.status = JobStatus::WaitingForChildren;
                rec.due_at_ms = None;
                self.save_with(
                    before,
                    &mut rec,
                    HistoryEvent::SpawnedChildren { children: spawned },
                )
            }
            Commit::Complete { .. } | Commit::Fail { .. } => Ok(()),
        }
    }

    /// Crash recovery of one job found Running at open.
    fn recover_job(&mut self, id: JobId, max_recoveries: u32) -> TxResult<()> {
        let Some(mut rec) = self.get(id)? else {
            return Ok(());
        };
        if rec.status != JobStatus::Running {
            return Ok(());
        }
        let before = Some(IndexKey::of(&rec));
        rec.recoveries += 1;
        rec.lease = None;
        if rec.recoveries > max_recoveries {
            let error = format!(
                "crash-looped {} times: the process died during this step {} times in a row",
                rec.recoveries, rec.recoveries
            );
            rec.last_error = Some(error.clone());
            return self.finish(
                before,
                &mut rec,
                JobStatus::Failed,
                HistoryEvent::Failed { error },
            );
        }
        rec.status = JobStatus::Queued;
        rec.due_at_ms = Some(self.now_ms);
        let recoveries = rec.recoveries;
        self.save_with(before, &mut rec, HistoryEvent::Recovered { recoveries })
    }

    /// After a restart with the clock stepped back (the job's last commit lies after now), a
    /// Queued/Waiting job due later than now + the wait it was committed with (due time −
    /// commit time) is made due at now + that wait: a clock stepped back never lengthens a
    /// wait. The commit time is kept, so a second restart computes the same wait. True when
    /// the due time moved.
    fn clamp_due(&mut self, id: JobId) -> TxResult<bool> {
        let Some(mut rec) = self.get(id)? else {
            return Ok(false);
        };
        let Some(clamped) = clamped_due_ms(&rec, self.now_ms) else {
            return Ok(false);
        };
        let before = IndexKey::of(&rec);
        rec.due_at_ms = Some(clamped);
        self.save(Some(before), &rec)?;
        Ok(true)
    }

    /// Makes a Failed, PartiallyFailed or Cancelled job run again from its last committed
    /// state. A job with children that did not succeed restarts those (recursively) and waits
    /// for them; any other job is queued itself. False when there was nothing to restart (a
    /// PartiallyFailed job whose children all succeeded).
    fn reopen(&mut self, mut rec: JobRecord) -> TxResult<bool> {
        let mut restarted = 0;
        for cid in rec.children.clone() {
            if let Some(c) = self.get(cid)? {
                let unsuccessful = matches!(
                    c.status,
                    JobStatus::Failed | JobStatus::PartiallyFailed | JobStatus::Cancelled
                );
                if unsuccessful && c.awaited_by_parent && self.reopen(c)? {
                    restarted += 1;
                }
            }
        }
        let before = IndexKey::of(&rec);
        if restarted > 0 {
            self.wait_again(before, &mut rec, restarted)?;
            return Ok(true);
        }
        if rec.status == JobStatus::PartiallyFailed {
            return Ok(false);
        }
        rec.status = JobStatus::Queued;
        rec.due_at_ms = Some(self.now_ms);
        Self::reset_attempts(&mut rec);
        self.save_with(Some(before), &mut rec, HistoryEvent::Restarted)?;
        Ok(true)
    }

    /// A finished parent waits for `pending` restarted children again; it runs its step once
    /// they are all terminal, as after its first fan-out.
    fn wait_again(&mut self, before: IndexKey, rec: &mut JobRecord, pending: u32) -> TxResult<()> {
        rec.status = JobStatus::WaitingForChildren;
        rec.pending_children = pending;
        rec.due_at_ms = None;
        Self::reset_attempts(rec);
        self.save_with(Some(before), rec, HistoryEvent::Restarted)
    }

    fn reset_attempts(rec: &mut JobRecord) {
        rec.failed_attempts = 0;
        rec.first_failure_at_ms = None;
        rec.recoveries = 0;
        rec.cancel_requested = false;
    }

    fn cancel_record(&mut self, mut rec: JobRecord) -> TxResult<()> {
        if rec.status.is_terminal() {
            return Ok(());
        }
        let before = IndexKey::of(&rec);
        if rec.status == JobStatus::Running {
            if !rec.cancel_requested {
                rec.cancel_requested = true;
                self.save_with(Some(before), &mut rec, HistoryEvent::CancelRequested)?;
            }
            return Ok(());
        }
        self.finish(
            Some(before),
            &mut rec,
            JobStatus::Cancelled,
            HistoryEvent::Cancelled,
        )
    }
}

impl SledJobStore {
    /// Opens (or creates) the store in `dir`. A directory held by another process gives
    /// [`StoreError::Locked`].
    pub fn open(dir: &Path) -> Result<SledJobStore, StoreError> {
        // sled releases its file lock asynchronously: its background I/O threads may hold the
        // database for a moment after the last handle in this process was dropped. So a lock
        // conflict is retried briefly before it is reported.
        let deadline = std::time::Instant::now() + LOCK_RETRY;
        let db = loop {
            match sled::Config::new()
                .path(dir)
                .mode(sled::Mode::HighThroughput)
                .open()
            {
                Ok(db) => break db,
                Err(e) => {
                    let text = e.to_string();
                    if !text.contains("could not acquire lock") {
                        return Err(StoreError::Io(format!(
                            "opening state store {}: {text}",
                            dir.display()
                        )));
                    }
                    if std::time::Instant::now() >= deadline {
                        return Err(StoreError::Locked {
                            path: dir.to_path_buf(),
                            detail: text,
                        });
                    }
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
            }
        };
        let engine = db.open_tree("engine")?;
        let part = |p| Part {
            tree: engine.clone(),
            p,
        };
        Ok(SledJobStore {
            jobs: part(P_JOBS),
            due: part(P_DUE),
            active: part(P_ACTIVE),
            history: part(P_HISTORY),
            links: part(P_LINKS),
            quarantine: part(P_QUARANTINE),
            engine,
            group: Arc::new(GroupFlush::default()),
            db,
        })
    }

    /// The underlying sled database (benchmarks compare raw sled with engine transitions).
    pub fn db(&self) -> &sled::Db {
        &self.db
    }

    /// Makes every write this thread has done durable (fsync of sled's log), sharing the flush
    /// with concurrent callers.
    fn flush(&self) -> Result<(), StoreError> {
        self.group.flush(&self.db)
    }

    fn new_id(&self) -> Result<JobId, StoreError> {
        // sled ids start at 0; keep 0 free so ids are always positive.
        Ok(JobId(self.db.generate_id()? + 1))
    }

    /// Runs `f` as one transaction over the job trees and flushes before returning.
    fn transact<T>(
        &self,
        now: SystemTime,
        f: impl Fn(&mut Tx<'_>) -> TxResult<T>,
    ) -> Result<(T, Vec<Changed>), StoreError> {
        let now_ms = to_ms(now);
        let mut quarantined = Vec::new();
        loop {
            let result = self
                .engine
                .transaction(|t| {
                    let mut tx = Tx::new(t, now_ms);
                    let value = f(&mut tx)?;
                    Ok((value, tx.changed))
                })
                .map_err(map_tx_err);
            match result {
                Ok(v) => {
                    // Every write of these transactions comes with a history entry, so an empty
                    // change list means nothing was written (a dedupe hit, a job not claimable).
                    if !v.1.is_empty() {
                        self.flush()?;
                    }
                    return Ok(v);
                }
                // A record the transaction touched (the job, a parent or a child) is undecodable:
                // move it aside so the rest of the store keeps working, then try again without it.
                Err(StoreError::Corrupt { id, reason }) => {
                    if quarantined.contains(&id) || quarantined.len() >= 8 {
                        return Err(StoreError::Corrupt { id, reason });
                    }
                    self.quarantine(id, &reason, now)?;
                    quarantined.push(id);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// A due entry whose job cannot be claimed should not exist (the index changes in the same
    /// transaction as the record). If one does — damage, or a bug — the runner would find it
    /// again and again; remove every due entry of `id` that does not match its record.
    fn drop_stale_due_entries(&self, id: JobId) -> Result<(), StoreError> {
        let mut stale = Vec::new();
        for item in self.due.iter() {
            let (key, _) = item?;
            if key.get(8..).and_then(read_u64) == Some(id.0) {
                stale.push(key);
            }
        }
        if stale.is_empty() {
            return Ok(());
        }
        let rec = match self.jobs.get(id_key(id))? {
            Some(bytes) => decode_record(id, &bytes).ok(),
            None => None,
        };
        let valid = rec.as_ref().and_then(|r| IndexKey::of(r).due);
        let mut removed = 0;
        for key in stale {
            if valid.is_some_and(|d| read_u64(&key) == Some(d)) {
                continue;
            }
            self.engine.remove(prefixed(P_DUE, &key))?;
            removed += 1;
        }
        if removed > 0 {
            tracing::warn!(job = %id, removed, "removed due-index entries that did not match the job record");
            self.flush()?;
        }
        Ok(())
    }

    fn kv_tree(&self, namespace: &str) -> Result<sled::Tree, StoreError> {
        Ok(self.db.open_tree(format!("kv/{namespace}"))?)
    }

    fn decode_or_quarantine(&self, id: JobId, bytes: &[u8]) -> Option<JobRecord> {
        match decode_record(id, bytes) {
            Ok(r) => Some(r),
            Err(e) => {
                let reason = match &e {
                    StoreError::Corrupt { reason, .. } => reason.clone(),
                    other => other.to_string(),
                };
                tracing::error!(job = %id, %reason, "quarantining undecodable job record");
                if let Err(qe) = self.quarantine(id, &reason, SystemTime::now()) {
                    tracing::error!(job = %id, error = %qe, "quarantine failed");
                }
                None
            }
        }
    }
}

impl JobStore for SledJobStore {
    fn submit(&self, job: NewJob, now: SystemTime) -> Result<(JobId, Vec<Changed>), StoreError> {
        let fresh = self.new_id()?;
        let (id, changed) = self.transact(now, |tx| {
            if let Some(key) = &job.dedupe_key {
                if let Some(existing) = tx.dedupe.get(key.as_bytes())? {
                    if let Some(id) = read_u64(&existing) {
                        return Ok(JobId(id));
                    }
                }
            }
            tx.insert_job(fresh, &job, false)?;
            Ok(fresh)
        })?;
        Ok((id, changed))
    }

    fn claim(
        &self,
        id: JobId,
        owner: u64,
        now: SystemTime,
        lease_until: SystemTime,
    ) -> Result<Option<(JobRecord, Changed)>, StoreError> {
        let lease_ms = to_ms(lease_until);
        let (rec, mut changed) = self.transact(now, |tx| tx.claim_job(id, owner, lease_ms))?;
        if rec.is_none() {
            self.drop_stale_due_entries(id)?;
        }
        Ok(rec.and_then(|r| changed.pop().map(|c| (r, c))))
    }

    fn commit(
        &self,
        id: JobId,
        epoch: u64,
        commit: Commit,
        now: SystemTime,
    ) -> Result<Vec<Changed>, StoreError> {
        let child_ids: Vec<JobId> = match &commit {
            Commit::Spawn { children, .. } => children
                .iter()
                .map(|_| self.new_id())
                .collect::<Result<_, _>>()?,
            _ => Vec::new(),
        };
        let ((), changed) =
            self.transact(now, |tx| tx.commit_job(id, epoch, &commit, &child_ids))?;
        Ok(changed)
    }

    fn commit_and_claim(
        &self,
        id: JobId,
        epoch: u64,
        state: serde_json::Value,
        owner: u64,
        now: SystemTime,
        lease_until: SystemTime,
    ) -> Result<(Vec<Changed>, Option<JobRecord>), StoreError> {
        let lease_ms = to_ms(lease_until);
        let commit = Commit::Next { state };
        let (rec, changed) = self.transact(now, |tx| {
            tx.commit_job(id, epoch, &commit, &[])?;
            tx.claim_job(id, owner, lease_ms)
        })?;
        Ok((changed, rec))
    }

    fn cancel(&self, id: JobId, now: SystemTime) -> Result<Vec<Changed>, StoreError> {
        let ((), changed) = self.transact(now, |tx| {
            let rec = tx.must_get(id)?;
            tx.cancel_record(rec)
        })?;
        Ok(changed)
    }

    fn restart(&self, id: JobId, now: SystemTime) -> Result<Vec<Changed>, StoreError> {
        let ((), changed) = self.transact(now, |tx| {
            let rec = tx.must_get(id)?;
            if !matches!(rec.status, JobStatus::Failed | JobStatus::PartiallyFailed) {
                return abort(StoreError::InvalidState {
                    id,
                    message: format!(
                        "only a failed or partially failed job can be retried; it is {}",
                        rec.status
                    ),
                });
            }
            if !tx.reopen(rec)? {
                return abort(StoreError::InvalidState {
                    id,
                    message: "partially failed, but none of its children failed or was cancelled: there is nothing to retry".to_string(),
                });
            }
            // A parent that already finished without this job waits for it again, so that
            // its outcome follows the retried child (a run can still end Succeeded).
            let rec = tx.must_get(id)?;
            if let (true, Some(pid)) = (rec.awaited_by_parent, rec.parent) {
                if let Some(mut p) = tx.get(pid)? {
                    let before = IndexKey::of(&p);
                    match p.status {
                        JobStatus::WaitingForChildren => {
                            p.pending_children += 1;
                            tx.save(Some(before), &p)?;
                        }
                        JobStatus::Failed | JobStatus::PartiallyFailed
                            if p.children.contains(&id) =>
                        {
                            tx.wait_again(before, &mut p, 1)?;
                        }
                        _ => {}
                    }
                }
            }
            Ok(())
        })?;
        Ok(changed)
    }

    fn wake(&self, id: JobId, now: SystemTime) -> Result<Vec<Changed>, StoreError> {
        let ((), changed) = self.transact(now, |tx| {
            let Some(mut rec) = tx.get(id)? else {
                return Ok(());
            };
            // Waiting (between steps) or Queued for later (a retry's back-off).
            if !is_runnable(rec.status) || rec.due_at_ms.is_none_or(|d| d <= tx.now_ms) {
                return Ok(());
            }
            let before = IndexKey::of(&rec);
            rec.due_at_ms = Some(tx.now_ms);
            tx.save_with(Some(before), &mut rec, HistoryEvent::Woken)
        })?;
        Ok(changed)
    }

    fn recover(&self, now: SystemTime, max_recoveries: u32) -> Result<Vec<Changed>, StoreError> {
        let now_ms = to_ms(now);
        let mut all = Vec::new();
        let mut running = Vec::new();
        let mut stepped_back = Vec::new();
        for item in self.active.iter() {
            let (key, _) = item?;
            let Some(id) = read_u64(&key).map(JobId) else {
                continue;
            };
            let Some(bytes) = self.jobs.get(key)? else {
                continue;
            };
            let Some(rec) = self.decode_or_quarantine(id, &bytes) else {
                continue;
            };
            if rec.status == JobStatus::Running {
                running.push(id);
            } else if clamped_due_ms(&rec, now_ms).is_some() {
                stepped_back.push(id);
            }
        }
        if !stepped_back.is_empty() {
            tracing::warn!(
                jobs = stepped_back.len(),
                "the clock is earlier than these jobs' last commits (stepped back?): their waits restart from now"
            );
        }
        // No history entry: nothing happened to the jobs, only the clock moved. So `transact`
        // sees no change and does not flush; flush here.
        for chunk in stepped_back.chunks(512) {
            let (moved, _) = self.transact(now, |tx| {
                let mut moved = false;
                for &id in chunk {
                    moved |= tx.clamp_due(id)?;
                }
                Ok(moved)
            })?;
            if moved {
                self.flush()?;
            }
        }
        // Batched: one transaction and one flush per chunk keeps start-up fast after a crash
        // with many jobs in flight.
        for chunk in running.chunks(512) {
            let ((), changed) = self.transact(now, |tx| {
                for &id in chunk {
                    tx.recover_job(id, max_recoveries)?;
                }
                Ok(())
            })?;
            all.extend(changed);
        }
        Ok(all)
    }

    fn due(&self, now: SystemTime, limit: usize) -> Result<Vec<DueJob>, StoreError> {
        let end = pair_key(to_ms(now), u64::MAX);
        let mut out = Vec::new();
        for item in self.due.range_to_inclusive(&end) {
            if out.len() >= limit {
                break;
            }
            let (key, kind) = item?;
            let (Some(at), Some(id)) = (read_u64(&key), key.get(8..).and_then(read_u64)) else {
                continue;
            };
            out.push(DueJob {
                id: JobId(id),
                kind: String::from_utf8_lossy(&kind).into_owned(),
                due_at: from_ms(at),
            });
        }
        Ok(out)
    }

    fn next_due_after(&self, now: SystemTime) -> Result<Option<SystemTime>, StoreError> {
        let start = pair_key(to_ms(now).saturating_add(1), 0);
        match self.due.range_from(&start).next() {
            Some(item) => {
                let (key, _) = item?;
                Ok(read_u64(&key).map(from_ms))
            }
            None => Ok(None),
        }
    }

    fn has_active(&self) -> Result<bool, StoreError> {
        Ok(!self.active.is_empty())
    }

    fn get(&self, id: JobId) -> Result<Option<JobRecord>, StoreError> {
        match self.jobs.get(id_key(id))? {
            None => Ok(None),
            Some(bytes) => match decode_record(id, &bytes) {
                Ok(r) => Ok(Some(r)),
                Err(e) => {
                    let reason = e.to_string();
                    self.quarantine(id, &reason, SystemTime::now())?;
                    Err(e)
                }
            },
        }
    }

    fn history(&self, id: JobId) -> Result<Vec<HistoryEntry>, StoreError> {
        let mut out = Vec::new();
        for item in self.history.scan_prefix(id_key(id)) {
            let (_, bytes) = item?;
            let entry: HistoryEntry =
                serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
                    id,
                    reason: format!("invalid history entry: {e}"),
                })?;
            out.push(entry);
        }
        Ok(out)
    }

    fn list(&self, filter: &JobFilter) -> Result<Vec<JobRecord>, StoreError> {
        let limit = filter.limit.unwrap_or(usize::MAX);
        let matches = |r: &JobRecord| {
            (filter.statuses.is_empty() || filter.statuses.contains(&r.status))
                && filter.kind.as_ref().is_none_or(|k| &r.kind == k)
                && filter.parent.is_none_or(|p| r.parent == Some(p))
                && (!filter.active_only || !r.status.is_terminal())
        };
        let ids: Box<dyn Iterator<Item = sled::Result<JobId>>> = if let Some(p) = filter.parent {
            Box::new(
                self.links
                    .scan_prefix(id_key(p))
                    .map(|i| i.map(|(k, _)| JobId(k.get(8..).and_then(read_u64).unwrap_or(0)))),
            )
        } else if filter.active_only {
            Box::new(
                self.active
                    .iter()
                    .map(|i| i.map(|(k, _)| JobId(read_u64(&k).unwrap_or(0)))),
            )
        } else {
            Box::new(
                self.jobs
                    .iter()
                    .map(|i| i.map(|(k, _)| JobId(read_u64(&k).unwrap_or(0)))),
            )
        };
        let mut out = Vec::new();
        for id in ids {
            if out.len() >= limit {
                break;
            }
            let id = id?;
            let Some(bytes) = self.jobs.get(id_key(id))? else {
                continue;
            };
            let Some(rec) = self.decode_or_quarantine(id, &bytes) else {
                continue;
            };
            if matches(&rec) {
                out.push(rec);
            }
        }
        Ok(out)
    }

    fn quarantine(
        &self,
        id: JobId,
        reason: &str,
        now: SystemTime,
    ) -> Result<Vec<Changed>, StoreError> {
        let raw = self.jobs.get(id_key(id))?;
        let Some(raw) = raw else {
            return Ok(Vec::new());
        };
        // An undecodable record's due key is unknown: find it by id (rare, small index).
        let mut due_keys = Vec::new();
        for item in self.due.iter() {
            let (key, _) = item?;
            if key.get(8..).and_then(read_u64) == Some(id.0) {
                due_keys.push(key);
            }
        }
        let decoded = decode_record(id, &raw).ok();
        // The parent that may be waiting for this job. For an undecodable record, find it through
        // the links keyspace (rare path), and only if the job was still active (a terminal child
        // was already counted).
        let waiting_parent = match &decoded {
            Some(rec) if rec.awaited_by_parent && !rec.status.is_terminal() => rec.parent,
            Some(_) => None,
            None if self.active.get(id_key(id))?.is_some() => {
                let mut found = None;
                for item in self.links.iter() {
                    let (key, _) = item?;
                    if key.get(8..).and_then(read_u64) == Some(id.0) {
                        found = read_u64(&key).map(JobId);
                        break;
                    }
                }
                found
            }
            None => None,
        };
        let entry = QuarantineEntry {
            id,
            reason: reason.to_string(),
            at: now,
            raw: String::from_utf8_lossy(&raw).into_owned(),
        };
        let entry_bytes = encode(&entry)?;
        let now_ms = to_ms(now);
        let changed = self
            .engine
            .transaction(|t| {
                let mut tx = Tx::new(t, now_ms);
                tx.jobs.remove(&id_key(id)[..])?;
                for k in &due_keys {
                    tx.due.remove(k.clone())?;
                }
                tx.active.remove(&id_key(id)[..])?;
                tx.quarantine.insert(&id_key(id)[..], entry_bytes.clone())?;
                if let Some(p) = waiting_parent {
                    if tx.get(p)?.is_some_and(|pr| pr.children.contains(&id)) {
                        tx.child_finished(p)?;
                    }
                }
                Ok(tx.changed)
            })
            .map_err(map_tx_err)?;
        self.flush()?;
        tracing::warn!(job = %id, %reason, "job record quarantined");
        Ok(changed)
    }

    fn quarantined(&self) -> Result<Vec<QuarantineEntry>, StoreError> {
        let mut out = Vec::new();
        for item in self.quarantine.iter() {
            let (key, bytes) = item?;
            match serde_json::from_slice::<QuarantineEntry>(&bytes) {
                Ok(e) => out.push(e),
                Err(e) => out.push(QuarantineEntry {
                    id: JobId(read_u64(&key).unwrap_or(0)),
                    reason: format!("quarantine entry itself undecodable: {e}"),
                    at: SystemTime::UNIX_EPOCH,
                    raw: String::from_utf8_lossy(&bytes).into_owned(),
                }),
            }
        }
        Ok(out)
    }

    fn kv_put(&self, namespace: &str, key: &str, value: Vec<u8>) -> Result<(), StoreError> {
        self.kv_tree(namespace)?.insert(key.as_bytes(), value)?;
        self.flush()
    }

    fn kv_get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .kv_tree(namespace)?
            .get(key.as_bytes())?
            .map(|v| v.to_vec()))
    }

    fn kv_remove(&self, namespace: &str, key: &str) -> Result<bool, StoreError> {
        let existed = self.kv_tree(namespace)?.remove(key.as_bytes())?.is_some();
        self.flush()?;
        Ok(existed)
    }

    fn kv_scan_prefix(
        &self,
        namespace: &str,
        prefix: &str,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let mut out = Vec::new();
        for item in self.kv_tree(namespace)?.scan_prefix(prefix.as_bytes()) {
            let (k, v) = item?;
            out.push((String::from_utf8_lossy(&k).into_owned(), v.to_vec()));
        }
        Ok(out)
    }
}
