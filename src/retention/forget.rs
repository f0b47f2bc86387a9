//! `tcb-backup forget`: verify what has not been verified, plan with [`super::plan`], and with
//! `--prune` delete what the plan forgets — remote copies first, then (marked as being
//! deleted and unlisted) the local manifest and data file ([`super::prune`]), then the
//! records; see [`ForgetHooks`] for why that order is crash safe. Without `--prune`
//! (or with `--dry-run`) nothing is deleted and the plan is the answer.
//!
//! Unverified snapshots (never judged: a check that could not judge, such as a data read
//! without the key of an encrypted snapshot, is no verdict) are checked (files + sha256)
//! before planning so that they can count; a snapshot whose check fails becomes `Failed` and
//! never counts. A snapshot the plan forgets as failed is checked once more right before it
//! would be deleted, and deleted only if that check still fails (otherwise it is `spared`).
//!
//! Each destination with its own retention ([`CatalogHooks::forget_copies`]) then plans, and
//! with `--prune` deletes, its copies of the snapshots kept locally. The CLI and the daemon's
//! scheduled forget both run the two in that order.

use std::collections::HashMap;

use serde::Serialize;
use time::OffsetDateTime;

use crate::catalog::CatalogEntry;
use crate::verify::check::{apply_check, confirm_failed};
use crate::verify::{
    check_entries, CheckOptions, CheckReport, VerificationRecord, VerificationStore,
};

use super::prune::{delete_local_snapshot, Removed};
use super::{plan, Candidate, ForgetReason, RetentionPlan, RetentionPolicy, Standing};

/// Retention candidates for `entries`, with their standing from `records`.
pub fn candidates(
    entries: &[CatalogEntry],
    records: &HashMap<String, VerificationRecord>,
) -> Vec<Candidate> {
    entries
        .iter()
        .map(|e| Candidate {
            id: e.id.clone(),
            env: e.manifest.env.clone(),
            collection: e.manifest.collection.clone(),
            time: e.manifest.finished_at,
            standing: records
                .get(&e.id)
                .map(VerificationRecord::standing)
                .unwrap_or(Standing::Unverified),
        })
        .collect()
}

#[derive(Debug, Clone, PartialEq)]
pub struct ForgetOptions {
    pub policy: RetentionPolicy,
    /// Actually delete (otherwise only plan).
    pub prune: bool,
    pub dry_run: bool,
}

/// What a forget run did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ForgetReport {
    /// Checks run on previously unverified snapshots.
    pub verified_now: CheckReport,
    pub plan: RetentionPlan,
    pub removed: Vec<(String, Removed)>,
    /// Snapshots the plan forgot as failed but that were kept because the check re-run just
    /// before deleting did not confirm the failure, with why.
    pub spared: Vec<(String, String)>,
    /// Deletions that failed (the snapshot stays recorded; the next run tries again).
    pub errors: Vec<String>,
    pub deleted: bool,
}

/// Callbacks into the parts of the tool that hold other copies and records of a snapshot.
///
/// One snapshot is deleted in this order, each part safe to repeat: its remote copies
/// ([`Self::delete_remote_copies`]; a failure keeps the snapshot, listed and whole), then
/// [`Self::begin_forget`] durably marks it as being deleted and drops it from the catalog, then
/// its manifest and data file go, its verification record, and [`Self::end_forget`] clears
/// the mark. A crash anywhere leaves either a whole, listed snapshot or an unlisted, marked
/// one, which the next `forget --prune` finishes first ([`Self::unfinished`]).
pub trait ForgetHooks {
    /// Deletes the snapshot's remote copies (destinations); called before the local files go.
    fn delete_remote_copies(&mut self, entry: &CatalogEntry) -> Result<(), String>;
    /// Durably marks the snapshot as being deleted, then drops its catalog record.
    fn begin_forget(&mut self, entry: &CatalogEntry) -> Result<(), String>;
    /// Clears the mark: the snapshot is gone.
    fn end_forget(&mut self, entry: &CatalogEntry) -> Result<(), String>;
    /// Snapshots marked by a deletion that did not finish.
    fn unfinished(&mut self) -> Result<Vec<CatalogEntry>, String>;
}

/// The retention plan of one destination: `policy` applied to the snapshots of `entries` that
/// have a copy there (`has_copy`), with the standing their local checks give them. Forgetting
/// a copy deletes only the copy; the local snapshot follows its own policy.
pub fn destination_plan(
    policy: &RetentionPolicy,
    entries: &[CatalogEntry],
    has_copy: impl Fn(&CatalogEntry) -> bool,
    records: &HashMap<String, VerificationRecord>,
) -> RetentionPlan {
    let with_copy: Vec<CatalogEntry> = entries.iter().filter(|e| has_copy(e)).cloned().collect();
    plan(policy, &candidates(&with_copy, records))
}

/// Checks (files + sha256) the entries that were never checked, so they can count, and
/// records the results unless `dry_run`. Returns the checks and every entry's record as it
/// stands now (with the new results, recorded or not).
pub fn verify_unverified(
    entries: &[CatalogEntry],
    store: &VerificationStore,
    dry_run: bool,
    now: OffsetDateTime,
) -> Result<(CheckReport, HashMap<String, VerificationRecord>), String> {
    let mut records = store.all().map_err(|e| e.to_string())?;
    let unverified: Vec<CatalogEntry> = entries
        .iter()
        .filter(|e| records.get(&e.id).is_none_or(|r| r.last_check_ok.is_none()))
        .cloned()
        .collect();
    let verified_now = check_entries(&unverified, &records, CheckOptions::default());
    if !dry_run {
        crate::verify::check::record_report(store, &verified_now, now)
            .map_err(|e| e.to_string())?;
    }
    for c in &verified_now.entries {
        apply_check(records.entry(c.id.clone()).or_default(), c, now);
    }
    Ok((verified_now, records))
}

/// Runs forget over `entries` (blocking: file I/O; call it on a blocking thread).
pub fn forget(
    entries: &[CatalogEntry],
    store: &VerificationStore,
    opts: &ForgetOptions,
    hooks: &mut dyn ForgetHooks,
    now: OffsetDateTime,
) -> Result<ForgetReport, String> {
    opts.policy.validate().map_err(|e| e.to_string())?;
    let (verified_now, records) = verify_unverified(entries, store, opts.dry_run, now)?;
    let plan = plan(&opts.policy, &candidates(entries, &records));
    let mut report = ForgetReport {
        verified_now,
        plan,
        ..ForgetReport::default()
    };
    if !opts.prune || opts.dry_run {
        return Ok(report);
    }
    report.deleted = true;
    // Deletions a crash interrupted come first: their snapshots are no longer listed.
    match hooks.unfinished() {
        Ok(pending) => {
            for entry in pending {
                delete_snapshot(&entry, store, hooks, &mut report);
            }
        }
        Err(e) => report.errors.push(format!("unfinished deletions: {e}")),
    }
    let by_id: HashMap<&str, &CatalogEntry> = entries.iter().map(|e| (e.id.as_str(), e)).collect();
    let ids: Vec<String> = report.plan.forget_ids().map(String::from).collect();
    // A verdict may be stale or wrong; a snapshot goes as failed only if it fails now.
    let failed: std::collections::HashSet<String> = report
        .plan
        .groups
        .iter()
        .flat_map(|g| g.forget.iter())
        .filter(|f| f.reason == ForgetReason::Failed)
        .map(|f| f.candidate.id.clone())
        .collect();
    for id in ids {
        let Some(entry) = by_id.get(id.as_str()) else {
            continue;
        };
        if failed.contains(id.as_str()) {
            if let Err(why) = confirm_failed(entry) {
                report.spared.push((id.clone(), why));
                continue;
            }
        }
        if let Err(e) = hooks.delete_remote_copies(entry) {
            report.errors.push(format!("{id}: remote copies: {e}"));
            continue;
        }
        // The copies are gone; the snapshot is still whole and listed.
        crate::faultpoint::hit("forget.after_remote_copies");
        delete_snapshot(entry, store, hooks, &mut report);
    }
    Ok(report)
}

/// Deletes one snapshot whose remote copies are gone (see [`ForgetHooks`] for the order);
/// safe to repeat on a snapshot a crash left half-deleted. Errors go to the report and leave
/// the mark, so the next run finishes it.
fn delete_snapshot(
    entry: &CatalogEntry,
    store: &VerificationStore,
    hooks: &mut dyn ForgetHooks,
    report: &mut ForgetReport,
) {
    let id = &entry.id;
    if let Err(e) = hooks.begin_forget(entry) {
        report.errors.push(format!("{id}: catalog: {e}"));
        return;
    }
    // Marked and unlisted; the files are all there.
    crate::faultpoint::hit("forget.after_mark");
    match delete_local_snapshot(entry) {
        Ok(removed) => report.removed.push((id.clone(), removed)),
        Err(e) => {
            report.errors.push(e.to_string());
            return;
        }
    }
    // The files are gone; the records and the mark are not.
    crate::faultpoint::hit("forget.after_files_removed");
    if let Err(e) = store.remove(id) {
        report
            .errors
            .push(format!("{id}: verification record: {e}"));
        return;
    }
    if let Err(e) = hooks.end_forget(entry) {
        report.errors.push(format!("{id}: {e}"));
    }
}

/// The hooks of a forget run against the state store: catalog records are dropped from the
/// engine's kv, and recorded remote copies are deleted through `destinations`. A copy at a
/// destination these hooks cannot reach (none given, or not configured) keeps its snapshot,
/// with an error, rather than being orphaned.
pub struct CatalogHooks {
    engine: tcb_state::Engine,
    catalog_kv: tcb_state::KvNamespace,
    /// Snapshots being deleted (id → catalog entry), see [`ForgetHooks`].
    forgetting_kv: tcb_state::KvNamespace,
    copies: crate::destination::copy::CopyRecords,
    remote: Option<RemoteCopies>,
}

/// The destinations remote copies are deleted through; forget runs on a blocking thread and
/// remote deletions are async, hence the runtime handle.
pub struct RemoteCopies {
    pub destinations: crate::destination::copy::Destinations,
    pub runtime: tokio::runtime::Handle,
}

impl CatalogHooks {
    /// The kv namespace of the deletion marks.
    pub const FORGETTING_NAMESPACE: &'static str = "forgetting";

    pub fn new(engine: &tcb_state::Engine, remote: Option<RemoteCopies>) -> Self {
        use crate::backup::catalog_store::SnapshotCatalog;
        use crate::destination::copy::CopyRecords;
        CatalogHooks {
            engine: engine.clone(),
            catalog_kv: engine.kv(SnapshotCatalog::NAMESPACE),
            forgetting_kv: engine.kv(Self::FORGETTING_NAMESPACE),
            copies: CopyRecords::new(engine.kv(CopyRecords::NAMESPACE)),
            remote,
        }
    }
}

impl ForgetHooks for CatalogHooks {
    fn delete_remote_copies(&mut self, entry: &CatalogEntry) -> Result<(), String> {
        if let Some(remote) = &self.remote {
            // Copies under way first: once cancelled they cannot record a copy behind us.
            return remote.runtime.block_on(async {
                crate::destination::copy::cancel_copies(
                    &self.engine,
                    &remote.destinations,
                    &self.copies,
                    &entry.id,
                )
                .await?;
                crate::destination::copy::delete_copies(
                    &remote.destinations,
                    &self.copies,
                    &entry.id,
                )
                .await
                .map(|_| ())
            });
        }
        let copies = self
            .copies
            .of_snapshot(&entry.id)
            .map_err(|e| e.to_string())?;
        if copies.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "has copies at {}, which this command cannot delete; kept",
                copies
                    .iter()
                    .map(|c| c.destination.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        }
    }
    fn begin_forget(&mut self, entry: &CatalogEntry) -> Result<(), String> {
        self.forgetting_kv
            .put(&entry.id, entry)
            .map_err(|e| e.to_string())?;
        self.catalog_kv
            .remove(&entry.id)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
    fn end_forget(&mut self, entry: &CatalogEntry) -> Result<(), String> {
        self.forgetting_kv
            .remove(&entry.id)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
    fn unfinished(&mut self) -> Result<Vec<CatalogEntry>, String> {
        Ok(self
            .forgetting_kv
            .scan_prefix::<CatalogEntry>("")
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|(_, e)| e)
            .collect())
    }
}

/// What forget did with one destination's copies.
#[derive(Debug, Serialize)]
pub struct DestinationForget {
    pub destination: String,
    pub plan: RetentionPlan,
    /// Snapshots whose copy here was deleted.
    pub deleted: Vec<String>,
    pub errors: Vec<String>,
}

/// The entries a forget run did not delete.
pub fn kept_entries(entries: &[CatalogEntry], report: &ForgetReport) -> Vec<CatalogEntry> {
    let removed: std::collections::HashSet<&str> =
        report.removed.iter().map(|(id, _)| id.as_str()).collect();
    entries
        .iter()
        .filter(|e| !removed.contains(e.id.as_str()))
        .cloned()
        .collect()
}

impl CatalogHooks {
    /// Applies each destination's own `policies` to its copies of `entries` (the snapshots
    /// kept locally; a copy forgotten here deletes only the copy), ranking them by `records`.
    /// With `delete` the forgotten copies are deleted through the hooks' destinations (one
    /// that cannot be reached gives an error and keeps the copy); without, only planned.
    /// Blocking, like [`forget`].
    pub fn forget_copies(
        &self,
        policies: &[(String, RetentionPolicy)],
        entries: &[CatalogEntry],
        records: &HashMap<String, VerificationRecord>,
        delete: bool,
    ) -> Vec<DestinationForget> {
        let mut out = Vec::new();
        for (name, policy) in policies {
            let has_copy = |e: &CatalogEntry| self.copies.get(&e.id, name).ok().flatten().is_some();
            let mut done = DestinationForget {
                destination: name.clone(),
                plan: destination_plan(policy, entries, has_copy, records),
                deleted: Vec::new(),
                errors: Vec::new(),
            };
            if delete {
                let ids: Vec<String> = done.plan.forget_ids().map(String::from).collect();
                for id in ids {
                    match self.delete_copy_at(&id, name) {
                        Ok(()) => done.deleted.push(id),
                        Err(e) => done.errors.push(format!("{id}: {e}")),
                    }
                }
            }
            out.push(done);
        }
        out
    }

    fn delete_copy_at(&self, id: &str, destination: &str) -> Result<(), String> {
        let Some(record) = self
            .copies
            .get(id, destination)
            .map_err(|e| e.to_string())?
        else {
            return Ok(());
        };
        let Some(remote) = &self.remote else {
            return Err(format!(
                "the copy at {destination} cannot be deleted from here; kept"
            ));
        };
        remote
            .runtime
            .block_on(crate::destination::copy::delete_copy(
                &remote.destinations,
                &self.copies,
                &record,
            ))
    }
}
