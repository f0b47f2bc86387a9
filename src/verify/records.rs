//! Verification results per snapshot, kept beside the catalog in the state store (kv namespace
//! [`VerificationStore::NAMESPACE`], keyed by catalog entry id). Kept separate from the catalog
//! records so that recording a check never rewrites what the backup recorded.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use tcb_state::{EngineError, KvNamespace};
use time::OffsetDateTime;

use crate::retention::Standing;

/// What is known about one snapshot's health.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerificationRecord {
    /// The last check of any depth (files + sha256, maybe data).
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_checked_at: Option<OffsetDateTime>,
    /// The last verdict (`None`: never judged). A check that could not judge (see
    /// [`crate::verify::check::Verdict::Inconclusive`]) leaves it as it was.
    #[serde(default)]
    pub last_check_ok: Option<bool>,
    /// The last check could not judge the snapshot (`last_error` says why).
    #[serde(default)]
    pub last_check_inconclusive: bool,
    #[serde(default)]
    pub last_check_read_data: bool,
    #[serde(default)]
    pub last_error: Option<String>,
    /// The last check that tried to read the data, whatever it concluded: what
    /// `--read-data-subset` rotates on, so a snapshot whose data cannot be read (corrupt, or
    /// no key) does not take a place in every run.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_data_read_at: Option<OffsetDateTime>,
    /// The last check that decompressed and counted the data and passed.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_data_verified_at: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_test_restored_at: Option<OffsetDateTime>,
    #[serde(default)]
    pub last_test_restore_ok: Option<bool>,
    #[serde(default)]
    pub last_test_restore_error: Option<String>,
}

impl VerificationRecord {
    /// Retention counts a snapshot only if its last verdict was a pass; a failed one never
    /// counts. A check that could not judge is no verdict at all.
    pub fn standing(&self) -> Standing {
        match self.last_check_ok {
            Some(true) => Standing::Counted,
            Some(false) => Standing::Failed,
            None => Standing::Unverified,
        }
    }
}

/// The records in the state store.
#[derive(Clone)]
pub struct VerificationStore {
    kv: KvNamespace,
}

impl VerificationStore {
    pub const NAMESPACE: &'static str = "verification";

    /// `kv` must be the engine's `kv(VerificationStore::NAMESPACE)`.
    pub fn new(kv: KvNamespace) -> Self {
        VerificationStore { kv }
    }

    pub fn get(&self, id: &str) -> Result<Option<VerificationRecord>, EngineError> {
        self.kv.get(id)
    }

    pub fn put(&self, id: &str, rec: &VerificationRecord) -> Result<(), EngineError> {
        self.kv.put(id, rec)
    }

    pub fn remove(&self, id: &str) -> Result<bool, EngineError> {
        self.kv.remove(id)
    }

    pub fn all(&self) -> Result<HashMap<String, VerificationRecord>, EngineError> {
        Ok(self.kv.scan_prefix("")?.into_iter().collect())
    }

    /// Updates the record of `id` in place (creating it).
    pub fn update(
        &self,
        id: &str,
        f: impl FnOnce(&mut VerificationRecord),
    ) -> Result<VerificationRecord, EngineError> {
        let mut rec = self.get(id)?.unwrap_or_default();
        f(&mut rec);
        self.put(id, &rec)?;
        Ok(rec)
    }
}
