//! The snapshot catalog inside the state store (engine kv namespace `catalog`).
//!
//! One record per stored snapshot, keyed by the data layer's stable id
//! `<env>/<collection>/<export job id>` ([`crate::catalog::entry_id`]), so recording the same
//! snapshot again (a re-run after a crash) overwrites instead of duplicating. The manifests on
//! disk are the source of truth: [`SnapshotCatalog::rebuild`] recreates the catalog from them
//! alone (through [`crate::catalog::rebuild_from_files`]).

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tcb_state::{EngineError, KvNamespace};

use crate::catalog::{self, CatalogEntry, RebuildProblem, VerifyLevel};
use crate::manifest::Manifest;

use super::progress::Target;

/// A catalog entry plus the job that made it (unknown after a rebuild from files).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRecord {
    #[serde(flatten)]
    pub entry: CatalogEntry,
    /// The `backup.collection` job id.
    #[serde(default)]
    pub job: Option<u64>,
}

impl SnapshotRecord {
    pub fn id(&self) -> &str {
        &self.entry.id
    }
    pub fn manifest(&self) -> &Manifest {
        &self.entry.manifest
    }
    /// The snapshot's finish time (UTC, to the second), e.g. `2026-12-03 17:22:17`.
    pub fn time_text(&self) -> String {
        let t = self
            .entry
            .manifest
            .finished_at
            .to_offset(time::UtcOffset::UTC);
        format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogStoreError {
    #[error("catalog: {0}")]
    Store(#[from] EngineError),
    #[error("catalog rebuild: {0}")]
    Rebuild(#[from] catalog::CatalogError),
    #[error("{0}")]
    Find(#[from] catalog::FindError),
}

/// What `catalog rebuild` did.
#[derive(Debug, Clone, Serialize)]
pub struct RebuildResult {
    pub entries: usize,
    /// Catalog entries dropped because their snapshot is no longer on disk.
    pub removed: usize,
    pub problems: Vec<RebuildProblem>,
}

#[derive(Clone)]
pub struct SnapshotCatalog {
    kv: KvNamespace,
}

impl SnapshotCatalog {
    pub const NAMESPACE: &'static str = "catalog";

    pub fn new(kv: KvNamespace) -> Self {
        SnapshotCatalog { kv }
    }

    /// Records (or re-records) the snapshot described by `m`; returns its id.
    pub fn record_with_job(
        &self,
        m: &Manifest,
        manifest_path: &Path,
        job: Option<u64>,
    ) -> Result<String, CatalogStoreError> {
        let rec = SnapshotRecord {
            entry: CatalogEntry::new(m.clone(), manifest_path),
            job,
        };
        self.kv.put(&rec.entry.id, &rec)?;
        Ok(rec.entry.id)
    }

    /// Every record (unordered).
    pub fn all(&self) -> Result<Vec<SnapshotRecord>, CatalogStoreError> {
        Ok(self
            .kv
            .scan_prefix::<SnapshotRecord>("")?
            .into_iter()
            .map(|(_, r)| r)
            .collect())
    }

    /// Looks a snapshot up by id, unique id prefix or export job id.
    pub fn find(&self, query: &str) -> Result<SnapshotRecord, CatalogStoreError> {
        let all = self.all()?;
        let entries: Vec<CatalogEntry> = all.iter().map(|r| r.entry.clone()).collect();
        let found = catalog::find(&entries, query)?;
        let id = found.id.clone();
        all.into_iter()
            .find(|r| r.entry.id == id)
            .ok_or_else(|| catalog::FindError::NotFound(query.to_string()).into())
    }

    pub fn get(&self, id: &str) -> Result<Option<SnapshotRecord>, CatalogStoreError> {
        Ok(self.kv.get(id)?)
    }

    /// Snapshots, newest first, optionally of one env and/or collection.
    pub fn list(
        &self,
        env: Option<&str>,
        collection: Option<&str>,
    ) -> Result<Vec<SnapshotRecord>, CatalogStoreError> {
        let prefix = match (env, collection) {
            (Some(e), Some(c)) => format!("{e}/{c}/"),
            (Some(e), None) => format!("{e}/"),
            _ => String::new(),
        };
        let mut out: Vec<SnapshotRecord> = self
            .kv
            .scan_prefix::<SnapshotRecord>(&prefix)?
            .into_iter()
            .map(|(_, r)| r)
            .filter(|r| env.is_none_or(|e| r.entry.manifest.env == e))
            .filter(|r| collection.is_none_or(|c| r.entry.manifest.collection == c))
            .collect();
        out.sort_by(|a, b| {
            (b.entry.manifest.finished_at, &b.entry.id)
                .cmp(&(a.entry.manifest.finished_at, &a.entry.id))
        });
        Ok(out)
    }

    /// How long the newest earlier export of `target` took on the server (plans the first
    /// poll of the next one).
    pub fn export_duration(&self, target: &Target) -> Option<Duration> {
        self.list(Some(&target.env), Some(&target.collection))
            .ok()?
            .iter()
            .filter(|r| r.entry.manifest.appid == target.appid)
            .find_map(|r| r.entry.manifest.export_duration())
    }

    /// Replaces the catalog with what the manifests under `root` describe.
    pub fn rebuild(&self, root: &Path) -> Result<RebuildResult, CatalogStoreError> {
        let rebuilt = if root.exists() {
            catalog::rebuild_from_files(root, VerifyLevel::Size)?
        } else {
            catalog::Rebuild::default()
        };
        let existing = self.all()?;
        let mut keep = std::collections::BTreeSet::new();
        for entry in rebuilt.entries {
            let job = existing
                .iter()
                .find(|r| r.entry.id == entry.id)
                .and_then(|r| r.job);
            keep.insert(entry.id.clone());
            let rec = SnapshotRecord { entry, job };
            self.kv.put(&rec.entry.id, &rec)?;
        }
        let mut removed = 0;
        for r in existing {
            if !keep.contains(&r.entry.id) && self.kv.remove(&r.entry.id)? {
                removed += 1;
            }
        }
        Ok(RebuildResult {
            entries: keep.len(),
            removed,
            problems: rebuilt.problems,
        })
    }
}
