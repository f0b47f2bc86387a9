//! The snapshot catalog inside the state store (engine kv namespace `catalog`).
//!
//! One record per stored snapshot, keyed by the data layer's stable id
//! `<env>/<collection>/<export job id>` ([`crate::catalog::entry_id`]), so recording the same
//! snapshot again (a re-run after a crash) overwrites instead of duplicating. The manifests on
//! disk are the source of truth: [`SnapshotCatalog::rebuild`] recreates the catalog from them
//! alone (through [`crate::catalog::rebuild_from_files`]).
//!
//! A record that cannot be decoded (a damaged store) must hide only itself: every read goes
//! through [`SnapshotCatalog::scan`], which replaces such a record in place with a
//! [`DamagedRecord`] mark (its id and the decode error) and goes on. The engine's kv scan
//! stops at the first undecodable value and cannot skip it, so the mark is what lets the scan
//! continue; nothing is lost by it (the record's content is unreadable, the snapshot's files
//! are untouched, and `catalog rebuild` replaces the mark from the manifest). Listings report
//! the marks until then.

use std::collections::BTreeSet;
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

/// A catalog record that could not be decoded: its id (the key) and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DamagedRecord {
    pub id: String,
    pub reason: String,
}

/// How a [`DamagedRecord`] is stored in place of the record: under a key no record has.
#[derive(Serialize, Deserialize)]
struct DamagedMark {
    damaged: DamagedRecord,
}

/// What the namespace holds under a snapshot id.
#[derive(Deserialize)]
#[serde(try_from = "serde_json::Value")]
enum Stored {
    Record(Box<SnapshotRecord>),
    Damaged(DamagedRecord),
}

impl TryFrom<serde_json::Value> for Stored {
    type Error = serde_json::Error;
    // Decided on the `damaged` key rather than an untagged enum, so that a broken record
    // reports serde's precise reason, not "did not match any variant".
    fn try_from(v: serde_json::Value) -> Result<Self, Self::Error> {
        if v.get("damaged").is_some() {
            Ok(Stored::Damaged(DamagedMark::deserialize(v)?.damaged))
        } else {
            Ok(Stored::Record(Box::new(SnapshotRecord::deserialize(v)?)))
        }
    }
}

/// The key of the catalog record `e` failed to decode, when that is what `e` is.
fn undecodable_key(e: &EngineError) -> Option<&str> {
    match e {
        EngineError::KvDecode { key, .. } => Some(key),
        _ => None,
    }
}

/// The readable records of a scan, and the damaged ones it skipped.
#[derive(Debug, Clone, Default)]
pub struct CatalogScan {
    pub records: Vec<SnapshotRecord>,
    pub damaged: Vec<DamagedRecord>,
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogStoreError {
    #[error("catalog: {0}")]
    Store(#[from] EngineError),
    #[error("catalog rebuild: {0}")]
    Rebuild(#[from] catalog::CatalogError),
    #[error("{0}")]
    Find(#[from] catalog::FindError),
    #[error("{} (run `tcb-backup catalog rebuild` to replace it from its manifest)", .0.reason)]
    Damaged(DamagedRecord),
}

/// What `catalog rebuild` did.
#[derive(Debug, Clone, Serialize)]
pub struct RebuildResult {
    pub entries: usize,
    /// Catalog entries dropped because their snapshot is no longer on disk.
    pub removed: usize,
    /// Damaged (undecodable) records replaced from their manifest.
    pub damaged_replaced: Vec<String>,
    /// Damaged records removed because their snapshot has no manifest (counted in `removed`).
    pub damaged_removed: Vec<String>,
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

    /// Every readable record (unordered); damaged ones are marked and skipped (see [`Self::scan`]).
    pub fn all(&self) -> Result<Vec<SnapshotRecord>, CatalogStoreError> {
        Ok(self.scan("")?.records)
    }

    /// Looks a snapshot up by id, unique id prefix or export job id.
    pub fn find(&self, query: &str) -> Result<SnapshotRecord, CatalogStoreError> {
        let CatalogScan { records, damaged } = self.scan("")?;
        let entries: Vec<CatalogEntry> = records.iter().map(|r| r.entry.clone()).collect();
        let found = match catalog::find(&entries, query) {
            Ok(found) => found,
            // Say that the snapshot asked for is damaged, rather than that it does not exist.
            Err(catalog::FindError::NotFound(q)) => {
                return Err(
                    match damaged.into_iter().find(|d| d.id.starts_with(query)) {
                        Some(d) => CatalogStoreError::Damaged(d),
                        None => catalog::FindError::NotFound(q).into(),
                    },
                )
            }
            Err(e) => return Err(e.into()),
        };
        let id = found.id.clone();
        records
            .into_iter()
            .find(|r| r.entry.id == id)
            .ok_or_else(|| catalog::FindError::NotFound(query.to_string()).into())
    }

    /// The record `id`; a damaged one is an error naming it.
    pub fn get(&self, id: &str) -> Result<Option<SnapshotRecord>, CatalogStoreError> {
        let stored = match self.kv.get::<Stored>(id) {
            Ok(stored) => stored,
            Err(e) if undecodable_key(&e) == Some(id) => {
                Some(Stored::Damaged(self.mark_damaged(id, e.to_string())?))
            }
            Err(e) => return Err(e.into()),
        };
        match stored {
            None => Ok(None),
            Some(Stored::Record(r)) => Ok(Some(*r)),
            Some(Stored::Damaged(d)) => Err(CatalogStoreError::Damaged(d)),
        }
    }

    /// Snapshots, newest first, optionally of one env and/or collection.
    pub fn list(
        &self,
        env: Option<&str>,
        collection: Option<&str>,
    ) -> Result<Vec<SnapshotRecord>, CatalogStoreError> {
        Ok(self.list_with_damaged(env, collection)?.records)
    }

    /// [`Self::list`], plus the damaged records of the same selection (in id order).
    pub fn list_with_damaged(
        &self,
        env: Option<&str>,
        collection: Option<&str>,
    ) -> Result<CatalogScan, CatalogStoreError> {
        let prefix = match (env, collection) {
            (Some(e), Some(c)) => format!("{e}/{c}/"),
            (Some(e), None) => format!("{e}/"),
            _ => String::new(),
        };
        let mut scan = self.scan(&prefix)?;
        scan.records.retain(|r| {
            env.is_none_or(|e| r.entry.manifest.env == e)
                && collection.is_none_or(|c| r.entry.manifest.collection == c)
        });
        scan.records.sort_by(|a, b| {
            (b.entry.manifest.finished_at, &b.entry.id)
                .cmp(&(a.entry.manifest.finished_at, &a.entry.id))
        });
        Ok(scan)
    }

    /// The one reader of the namespace: every record under `prefix`, with each undecodable
    /// one replaced by a damaged mark (logged once, when marked) and reported instead.
    fn scan(&self, prefix: &str) -> Result<CatalogScan, CatalogStoreError> {
        let mut marked = BTreeSet::new();
        loop {
            match self.kv.scan_prefix::<Stored>(prefix) {
                Ok(items) => {
                    let mut scan = CatalogScan::default();
                    for (_, stored) in items {
                        match stored {
                            Stored::Record(r) => scan.records.push(*r),
                            Stored::Damaged(d) => scan.damaged.push(d),
                        }
                    }
                    return Ok(scan);
                }
                Err(e) => match undecodable_key(&e) {
                    // The same key failing twice means its mark did not replace it: stop
                    // rather than loop.
                    Some(key) if marked.insert(key.to_string()) => {
                        let key = key.to_string();
                        self.mark_damaged(&key, e.to_string())?;
                    }
                    _ => return Err(e.into()),
                },
            }
        }
    }

    /// Replaces the undecodable record `id` with a damaged mark.
    fn mark_damaged(&self, id: &str, reason: String) -> Result<DamagedRecord, CatalogStoreError> {
        tracing::warn!(
            record = id,
            %reason,
            "damaged catalog record skipped; `tcb-backup catalog rebuild` replaces it from its manifest"
        );
        let damaged = DamagedRecord {
            id: id.to_string(),
            reason,
        };
        self.kv.put(
            id,
            &DamagedMark {
                damaged: damaged.clone(),
            },
        )?;
        Ok(damaged)
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
        let CatalogScan { records, damaged } = self.scan("")?;
        let mut keep = BTreeSet::new();
        for entry in rebuilt.entries {
            let job = records
                .iter()
                .find(|r| r.entry.id == entry.id)
                .and_then(|r| r.job);
            keep.insert(entry.id.clone());
            let rec = SnapshotRecord { entry, job };
            self.kv.put(&rec.entry.id, &rec)?;
        }
        let mut removed = 0;
        for r in records {
            if !keep.contains(&r.entry.id) && self.kv.remove(&r.entry.id)? {
                removed += 1;
            }
        }
        let (mut damaged_replaced, mut damaged_removed) = (Vec::new(), Vec::new());
        for d in damaged {
            if keep.contains(&d.id) {
                damaged_replaced.push(d.id);
            } else {
                if self.kv.remove(&d.id)? {
                    removed += 1;
                }
                damaged_removed.push(d.id);
            }
        }
        Ok(RebuildResult {
            entries: keep.len(),
            removed,
            damaged_replaced,
            damaged_removed,
            problems: rebuilt.problems,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tcb_state::{Engine, EngineOptions, JobStore, SledJobStore};

    use super::*;

    /// A catalog of three snapshots whose middle record (in id order) is then overwritten
    /// with bytes that are not JSON, as a damaged store would hold it.
    fn damaged_catalog(dir: &Path) -> (SnapshotCatalog, Arc<SledJobStore>, Vec<String>) {
        let store = Arc::new(SledJobStore::open(&dir.join("state")).unwrap());
        let engine = Engine::with_store(store.clone(), EngineOptions::default()).unwrap();
        let catalog = SnapshotCatalog::new(engine.kv(SnapshotCatalog::NAMESPACE));
        let mut ids = Vec::new();
        for job in 1..=3 {
            let mut m = crate::manifest::tests::sample();
            m.export_job_id = job;
            let path = dir.join(format!("{job}.manifest.json"));
            ids.push(catalog.record_with_job(&m, &path, Some(job)).unwrap());
        }
        store
            .kv_put(
                SnapshotCatalog::NAMESPACE,
                &ids[1],
                b"{\"id\": 7, not".to_vec(),
            )
            .unwrap();
        (catalog, store, ids)
    }

    fn ids(records: &[SnapshotRecord]) -> Vec<String> {
        let mut ids: Vec<String> = records.iter().map(|r| r.entry.id.clone()).collect();
        ids.sort();
        ids
    }

    #[test]
    fn a_damaged_record_hides_only_itself_from_every_reader() {
        let dir = tempfile::tempdir().unwrap();
        let (catalog, _store, all) = damaged_catalog(dir.path());
        let (victim, others) = (&all[1], vec![all[0].clone(), all[2].clone()]);

        let scan = catalog.list_with_damaged(None, None).unwrap();
        assert_eq!(ids(&scan.records), others);
        assert_eq!(scan.damaged.len(), 1);
        assert_eq!(&scan.damaged[0].id, victim);
        assert!(
            scan.damaged[0].reason.contains(&format!(
                "record {victim} in namespace catalog cannot be decoded"
            )),
            "{}",
            scan.damaged[0].reason
        );
        // Marked once, reported on every later read, by every reader.
        let again = catalog.list_with_damaged(None, None).unwrap();
        assert_eq!(again.damaged, scan.damaged);
        assert_eq!(ids(&catalog.all().unwrap()), others);
        let m = crate::manifest::tests::sample();
        assert_eq!(
            ids(&catalog.list(Some(&m.env), Some(&m.collection)).unwrap()),
            others
        );
        assert_eq!(catalog.get(&others[0]).unwrap().unwrap().id(), others[0]);
        assert!(
            matches!(catalog.get(victim), Err(CatalogStoreError::Damaged(d)) if &d.id == victim)
        );
        assert!(
            matches!(catalog.find(victim), Err(CatalogStoreError::Damaged(d)) if &d.id == victim)
        );
        assert_eq!(catalog.find(&others[1]).unwrap().id(), others[1]);
    }

    #[test]
    fn get_marks_a_damaged_record_it_meets_first() {
        let dir = tempfile::tempdir().unwrap();
        let (catalog, _store, all) = damaged_catalog(dir.path());
        let err = catalog.get(&all[1]).unwrap_err();
        assert!(matches!(&err, CatalogStoreError::Damaged(d) if d.id == all[1]));
        assert!(err.to_string().contains("catalog rebuild"), "{err}");
        assert_eq!(
            catalog.list_with_damaged(None, None).unwrap().damaged.len(),
            1
        );
    }

    #[test]
    fn re_recording_or_rebuilding_replaces_a_damaged_record() {
        let dir = tempfile::tempdir().unwrap();
        let (catalog, _store, all) = damaged_catalog(dir.path());
        // The snapshot recorded again (a re-run of its job): the mark is overwritten.
        let mut m = crate::manifest::tests::sample();
        m.export_job_id = 2;
        catalog
            .record_with_job(&m, &dir.path().join("2.manifest.json"), Some(2))
            .unwrap();
        let scan = catalog.list_with_damaged(None, None).unwrap();
        assert!(scan.damaged.is_empty());
        assert_eq!(ids(&scan.records), all);

        // A rebuild from a destination without manifests removes every record, the damaged
        // one included, and names it.
        let (catalog, _store, all) = damaged_catalog(&dir.path().join("again"));
        let result = catalog.rebuild(&dir.path().join("no-such-root")).unwrap();
        assert_eq!(result.removed, 3);
        assert_eq!(result.damaged_removed, vec![all[1].clone()]);
        assert!(result.damaged_replaced.is_empty());
        let scan = catalog.list_with_damaged(None, None).unwrap();
        assert!(scan.records.is_empty() && scan.damaged.is_empty());
    }
}
