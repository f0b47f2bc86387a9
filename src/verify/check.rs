//! `tcb-backup check`: do the stored files still say what their manifests say?
//!
//! Every entry gets the cheap check (manifest on disk parses and equals the catalog's copy,
//! data file present, size and sha256 agree). Reading the data (decompress, parse every line,
//! count, raw sha256) is done for all entries with `--read-data`, or for a subset with
//! `--read-data-subset=P%`: the P% whose data was read longest ago (never first; a read
//! that failed or could not judge counts as a read), so that repeated subset checks cover the
//! whole archive over time.

use std::collections::HashMap;

use serde::Serialize;
use time::OffsetDateTime;

use std::io;

use crate::archive;
use crate::archive::encrypt::Identities;
use crate::archive::ArchiveError;
use crate::catalog::CatalogEntry;
use crate::manifest::{self, ManifestError};

use super::records::{VerificationRecord, VerificationStore};

/// How much data to read.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum DataRead {
    /// Sizes and sha256 of the stored files only.
    #[default]
    None,
    All,
    /// Percent (0 < p <= 100) of the entries.
    Subset(f64),
}

impl DataRead {
    /// Parses `--read-data-subset` values like `10%` or `2.5`.
    pub fn parse_subset(text: &str) -> Result<DataRead, String> {
        let number = text.trim().trim_end_matches('%');
        let p: f64 = number
            .parse()
            .map_err(|_| format!("--read-data-subset {text:?}: expected a percentage like 10%"))?;
        if !(p > 0.0 && p <= 100.0) {
            return Err(format!(
                "--read-data-subset {text:?}: the percentage must be above 0 and at most 100"
            ));
        }
        Ok(DataRead::Subset(p))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct CheckOptions {
    pub read: DataRead,
}

/// What a check concluded about one snapshot. Only `Failed` is a judgement against the
/// snapshot: `Inconclusive` means the check could not look (no key for an encrypted
/// snapshot, an I/O error other than "not found", a manifest from a newer tool) and says
/// nothing about the files — retention must never count it as failed, let alone delete it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Passed,
    /// The files are missing, corrupt or disagree with the manifest.
    Failed,
    /// The check could not judge the snapshot.
    Inconclusive,
}

/// Why a check did not pass: a real failure or a check that could not judge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckFailure {
    /// `Failed` or `Inconclusive`.
    pub verdict: Verdict,
    pub message: String,
}

impl std::fmt::Display for CheckFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl CheckFailure {
    fn failed(message: String) -> Self {
        CheckFailure {
            verdict: Verdict::Failed,
            message,
        }
    }

    fn from_manifest(e: &ManifestError) -> Self {
        let verdict = match e {
            ManifestError::Io { source, .. } if source.kind() != io::ErrorKind::NotFound => {
                Verdict::Inconclusive
            }
            ManifestError::UnsupportedVersion { .. } => Verdict::Inconclusive,
            _ => Verdict::Failed,
        };
        CheckFailure {
            verdict,
            message: e.to_string(),
        }
    }

    fn from_archive(e: &ArchiveError) -> Self {
        let verdict = match e {
            ArchiveError::NeedsIdentity { .. } | ArchiveError::WrongIdentity { .. } => {
                Verdict::Inconclusive
            }
            ArchiveError::Io { source, .. } if source.kind() != io::ErrorKind::NotFound => {
                Verdict::Inconclusive
            }
            ArchiveError::Worker(_) | ArchiveError::Source { .. } => Verdict::Inconclusive,
            _ => Verdict::Failed,
        };
        CheckFailure {
            verdict,
            message: e.to_string(),
        }
    }
}

/// The result for one entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EntryCheck {
    pub id: String,
    pub read_data: bool,
    /// `verdict == Passed`.
    pub ok: bool,
    pub verdict: Verdict,
    pub error: Option<String>,
    /// Records counted, when the data was read and passed.
    pub records: Option<u64>,
}

impl EntryCheck {
    fn new(id: &str, read_data: bool, result: Result<Option<u64>, CheckFailure>) -> Self {
        let verdict = match &result {
            Ok(_) => Verdict::Passed,
            Err(f) => f.verdict,
        };
        EntryCheck {
            id: id.to_string(),
            read_data,
            ok: verdict == Verdict::Passed,
            verdict,
            records: result.as_ref().ok().copied().flatten(),
            error: result.err().map(|f| f.message),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CheckReport {
    pub entries: Vec<EntryCheck>,
}

impl CheckReport {
    /// Entries that did not pass: failed or could not be judged.
    pub fn failures(&self) -> impl Iterator<Item = &EntryCheck> {
        self.entries.iter().filter(|e| !e.ok)
    }
    pub fn is_ok(&self) -> bool {
        self.failures().next().is_none()
    }
}

/// Checks one entry; `Ok(Some(records))` when the data was read.
pub fn check_entry(entry: &CatalogEntry, read_data: bool) -> Result<Option<u64>, CheckFailure> {
    check_entry_with(entry, read_data, None)
}

/// [`check_entry`] with the identities that decrypt encrypted snapshots. Reading the data of
/// an encrypted snapshot without them is inconclusive, with a message saying how to provide
/// one; the cheap check (size and sha256 of the stored bytes) never needs them.
///
/// When reading the data does not pass, the cheap check runs too: a stored file that no
/// longer matches its manifest is a failure whatever stopped the read, and one that matches
/// keeps the read's own verdict (a missing key stays inconclusive, bad content fails).
pub fn check_entry_with(
    entry: &CatalogEntry,
    read_data: bool,
    identities: Option<&Identities>,
) -> Result<Option<u64>, CheckFailure> {
    let on_disk = manifest::read_manifest(&entry.manifest_path)
        .map_err(|e| CheckFailure::from_manifest(&e))?;
    if on_disk != entry.manifest {
        return Err(CheckFailure::failed(format!(
            "manifest {} differs from the catalog's record of snapshot {} (run `tcb-backup catalog rebuild`)",
            entry.manifest_path.display(),
            entry.id
        )));
    }
    match archive::verify_snapshot_with(&entry.data_path, &entry.manifest, read_data, identities) {
        Ok(check) => Ok(check.data.map(|d| d.records)),
        Err(e) if read_data => {
            let read = CheckFailure::from_archive(&e);
            match archive::verify_snapshot_with(&entry.data_path, &entry.manifest, false, None) {
                Ok(_) => Err(read),
                Err(cheap) => {
                    let cheap = CheckFailure::from_archive(&cheap);
                    // A failed cheap check is the stronger statement; an inconclusive one
                    // cannot turn a failed read into a pass.
                    if cheap.verdict == Verdict::Failed || read.verdict == Verdict::Inconclusive {
                        Err(cheap)
                    } else {
                        Err(read)
                    }
                }
            }
        }
        Err(e) => Err(CheckFailure::from_archive(&e)),
    }
}

/// The cheap check of a snapshot about to be deleted as failed, run right before deleting:
/// its files, size and sha256 against the manifest. `Ok` only when it still fails; otherwise
/// why it must be kept (it passes now, or the check cannot judge it).
pub fn confirm_failed(entry: &CatalogEntry) -> Result<(), String> {
    match check_entry(entry, false) {
        Err(f) if f.verdict == Verdict::Failed => Ok(()),
        Err(f) => Err(format!("could not re-check it before deleting: {f}")),
        Ok(_) => Err(
            "its files match the manifest now (size and sha256); run `tcb-backup check --read-data` to judge it again"
                .to_string(),
        ),
    }
}

/// The ids whose data a `Subset(p)` check reads: ceil(p% of n), least recently read first
/// (never read before anything), ties by id. "Read" is the last attempt, passed or not (a
/// record from before attempts were kept falls back to its last pass), so that a snapshot
/// whose data cannot be read does not come first in every run and stall the rotation.
pub fn select_subset(
    entries: &[CatalogEntry],
    records: &HashMap<String, VerificationRecord>,
    percent: f64,
) -> Vec<String> {
    let want = ((entries.len() as f64) * percent / 100.0).ceil() as usize;
    let mut order: Vec<(Option<OffsetDateTime>, &str)> = entries
        .iter()
        .map(|e| {
            (
                records
                    .get(&e.id)
                    .and_then(|r| r.last_data_read_at.or(r.last_data_verified_at)),
                e.id.as_str(),
            )
        })
        .collect();
    order.sort();
    order
        .into_iter()
        .take(want.min(entries.len()))
        .map(|(_, id)| id.to_string())
        .collect()
}

/// Checks every entry (blocking: run it on a blocking thread).
pub fn check_entries(
    entries: &[CatalogEntry],
    records: &HashMap<String, VerificationRecord>,
    opts: CheckOptions,
) -> CheckReport {
    check_entries_with(entries, records, opts, None)
}

/// [`check_entries`], decrypting encrypted snapshots with `identities` when their data is read.
pub fn check_entries_with(
    entries: &[CatalogEntry],
    records: &HashMap<String, VerificationRecord>,
    opts: CheckOptions,
    identities: Option<&Identities>,
) -> CheckReport {
    let subset: Option<Vec<String>> = match opts.read {
        DataRead::Subset(p) => Some(select_subset(entries, records, p)),
        _ => None,
    };
    let mut report = CheckReport::default();
    for entry in entries {
        let read_data = match opts.read {
            DataRead::None => false,
            DataRead::All => true,
            DataRead::Subset(_) => subset.as_ref().is_some_and(|s| s.contains(&entry.id)),
        };
        let result = check_entry_with(entry, read_data, identities);
        report
            .entries
            .push(EntryCheck::new(&entry.id, read_data, result));
    }
    report
}

/// Folds one check into a snapshot's record. An inconclusive check leaves the verdict as it
/// was (it judged nothing) and only notes why it could not judge.
pub fn apply_check(r: &mut VerificationRecord, e: &EntryCheck, now: OffsetDateTime) {
    r.last_checked_at = Some(now);
    r.last_error = e.error.clone();
    r.last_check_inconclusive = e.verdict == Verdict::Inconclusive;
    if e.read_data {
        r.last_data_read_at = Some(now);
    }
    if e.verdict == Verdict::Inconclusive {
        return;
    }
    r.last_check_ok = Some(e.ok);
    r.last_check_read_data = e.read_data;
    if e.ok && e.read_data {
        r.last_data_verified_at = Some(now);
    }
}

/// Stores the outcome of a check run.
pub fn record_report(
    store: &VerificationStore,
    report: &CheckReport,
    now: OffsetDateTime,
) -> Result<(), tcb_state::EngineError> {
    for e in &report.entries {
        store.update(&e.id, |r| apply_check(r, e, now))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn entry(id: u64) -> CatalogEntry {
        let mut m = crate::manifest::tests::sample();
        m.export_job_id = id;
        CatalogEntry::new(m, Path::new("/nowhere/a/b/x.manifest.json"))
    }

    #[test]
    fn subset_rotates_through_the_least_recently_read() {
        let entries: Vec<CatalogEntry> = (1..=10).map(entry).collect();
        let mut records = HashMap::new();
        let t = time::macros::datetime!(2026-12-01 00:00 UTC);
        for (i, e) in entries.iter().enumerate() {
            if i < 7 {
                records.insert(
                    e.id.clone(),
                    VerificationRecord {
                        last_data_verified_at: Some(t + time::Duration::hours(i as i64)),
                        ..Default::default()
                    },
                );
            }
        }
        let mut picked = select_subset(&entries, &records, 25.0); // ceil(2.5) = 3
        picked.sort();
        let mut never: Vec<String> = entries[7..].iter().map(|e| e.id.clone()).collect();
        never.sort();
        assert_eq!(picked, never);
        let picked = select_subset(&entries, &records, 40.0);
        assert_eq!(picked.len(), 4);
        assert_eq!(picked[3], entries[0].id);
        assert_eq!(select_subset(&entries, &records, 100.0).len(), 10);
        assert_eq!(select_subset(&entries, &records, 0.1).len(), 1);
    }

    #[test]
    fn subset_percent_parses() {
        assert_eq!(DataRead::parse_subset("10%"), Ok(DataRead::Subset(10.0)));
        assert_eq!(DataRead::parse_subset("2.5"), Ok(DataRead::Subset(2.5)));
        for bad in ["0%", "101%", "x", "", "-5%", "NaN"] {
            assert!(DataRead::parse_subset(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn missing_files_fail_with_the_path() {
        let r = check_entries(&[entry(5)], &HashMap::new(), CheckOptions::default());
        assert!(!r.is_ok());
        let err = r.entries[0].error.clone().unwrap();
        assert!(err.contains("/nowhere/a/b/x.manifest.json"), "{err}");
        // A missing file is a verdict against the snapshot, not a check that could not look.
        assert_eq!(r.entries[0].verdict, Verdict::Failed);
    }
}
