//! What `snapshots` and `show` print about a snapshot besides its catalog record: the
//! destinations holding a copy (copy records) and when it was last verified and test-restored
//! (verification records). Both live in their own kv namespaces, so recording a copy or a
//! check never rewrites what the backup recorded; this module joins them for display.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use tcb_state::{Engine, EngineError};
use time::OffsetDateTime;

use super::catalog_store::SnapshotRecord;
use crate::destination::copy::CopyRecords;
use crate::verify::{VerificationRecord, VerificationStore};

/// A snapshot's copies and verification times.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotStatus {
    /// Destinations holding a complete copy, by name (sorted).
    #[serde(default)]
    pub copies: Vec<String>,
    /// The last check (files + sha256, maybe data) and whether it passed.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_verified_at: Option<OffsetDateTime>,
    #[serde(default)]
    pub last_verify_ok: Option<bool>,
    /// The last check that also read and counted the data, and passed.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_data_verified_at: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_test_restored_at: Option<OffsetDateTime>,
    #[serde(default)]
    pub last_test_restore_ok: Option<bool>,
}

impl SnapshotStatus {
    fn new(copies: Vec<String>, v: Option<&VerificationRecord>) -> SnapshotStatus {
        let v = v.cloned().unwrap_or_default();
        SnapshotStatus {
            copies,
            last_verified_at: v.last_checked_at,
            last_verify_ok: v.last_check_ok,
            last_data_verified_at: v.last_data_verified_at,
            last_test_restored_at: v.last_test_restored_at,
            last_test_restore_ok: v.last_test_restore_ok,
        }
    }

    /// `2026-12-03 17:22` (UTC), `FAILED 2026-12-03 17:22`, or `-`.
    pub fn verified_text(&self) -> String {
        outcome_text(self.last_verified_at, self.last_verify_ok)
    }

    /// When the data was last read and counted (that check passed), or `-`.
    pub fn data_read_text(&self) -> String {
        outcome_text(self.last_data_verified_at, None)
    }

    pub fn test_restored_text(&self) -> String {
        outcome_text(self.last_test_restored_at, self.last_test_restore_ok)
    }

    pub fn copies_text(&self) -> String {
        if self.copies.is_empty() {
            "-".to_string()
        } else {
            self.copies.join(",")
        }
    }
}

fn outcome_text(at: Option<OffsetDateTime>, ok: Option<bool>) -> String {
    match at {
        None => "-".to_string(),
        Some(t) => {
            let t = t.to_offset(time::UtcOffset::UTC);
            let text = format!(
                "{:04}-{:02}-{:02} {:02}:{:02}",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute()
            );
            if ok == Some(false) {
                format!("FAILED {text}")
            } else {
                text
            }
        }
    }
}

/// A catalog record with its status, as `snapshots --json` prints it (the record's fields
/// plus the status fields, at the same level).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotListing {
    #[serde(flatten)]
    pub record: SnapshotRecord,
    #[serde(flatten)]
    pub status: SnapshotStatus,
}

/// Joins `records` with their copy and verification records.
pub fn annotate(
    engine: &Engine,
    records: Vec<SnapshotRecord>,
) -> Result<Vec<SnapshotListing>, EngineError> {
    // Destinations by snapshot: the records come sorted by snapshot id then destination.
    let mut copies: HashMap<String, Vec<String>> = HashMap::new();
    for c in CopyRecords::new(engine.kv(CopyRecords::NAMESPACE)).all()? {
        copies.entry(c.snapshot_id).or_default().push(c.destination);
    }
    let verification = VerificationStore::new(engine.kv(VerificationStore::NAMESPACE)).all()?;
    Ok(records
        .into_iter()
        .map(|record| {
            let names = copies.remove(&record.entry.id).unwrap_or_default();
            let status = SnapshotStatus::new(names, verification.get(&record.entry.id));
            SnapshotListing { record, status }
        })
        .collect())
}

/// The status of one snapshot.
pub fn status_of(engine: &Engine, id: &str) -> Result<SnapshotStatus, EngineError> {
    let mut copies: Vec<String> = CopyRecords::new(engine.kv(CopyRecords::NAMESPACE))
        .of_snapshot(id)?
        .into_iter()
        .map(|c| c.destination)
        .collect();
    copies.sort();
    let v = VerificationStore::new(engine.kv(VerificationStore::NAMESPACE)).get(id)?;
    Ok(SnapshotStatus::new(copies, v.as_ref()))
}
