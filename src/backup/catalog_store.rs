//! The snapshot catalog inside the state store (engine kv namespace `catalog`).
//!
//! One record per stored snapshot, keyed by its stable id `<env>/<collection>/<export job id>`,
//! so recording the same snapshot again (a re-run after a crash) overwrites instead of
//! duplicating. The manifests on disk are the source of truth: [`SnapshotCatalog::rebuild`]
//! recreates the catalog from them alone.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tcb_state::{EngineError, KvNamespace};
use time::OffsetDateTime;

use crate::manifest::{self, ExportFileType, Manifest};
use crate::naming;

use super::progress::Target;

/// One catalog entry: the manifest's facts plus where the files are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRecord {
    pub id: String,
    pub appid: String,
    pub env: String,
    pub collection: String,
    pub query: String,
    pub file_type: ExportFileType,
    pub export_job_id: u64,
    pub records: u64,
    pub bytes_raw: u64,
    pub bytes_stored: u64,
    pub sha256_raw: String,
    pub sha256_stored: String,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub finished_at: OffsetDateTime,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub export_ready_at: Option<OffsetDateTime>,
    pub data_path: PathBuf,
    pub manifest_path: PathBuf,
    /// The `backup.collection` job that made it (unknown after a rebuild from files).
    pub job: Option<u64>,
    pub tool_version: String,
}

impl SnapshotRecord {
    pub fn from_manifest(m: &Manifest, manifest_path: &Path, job: Option<u64>) -> Self {
        SnapshotRecord {
            id: snapshot_id(&m.env, &m.collection, m.export_job_id),
            appid: m.appid.clone(),
            env: m.env.clone(),
            collection: m.collection.clone(),
            query: m.query.clone(),
            file_type: m.file_type,
            export_job_id: m.export_job_id,
            records: m.records,
            bytes_raw: m.bytes_raw,
            bytes_stored: m.bytes_stored,
            sha256_raw: m.sha256_raw.clone(),
            sha256_stored: m.sha256_stored.clone(),
            started_at: m.started_at,
            finished_at: m.finished_at,
            export_ready_at: m.export_ready_at,
            data_path: m.data_path(manifest_path),
            manifest_path: manifest_path.to_path_buf(),
            job,
            tool_version: m.tool_version.clone(),
        }
    }

    /// The snapshot's time as in its file name (UTC).
    pub fn time_text(&self) -> String {
        self.started_at
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default()
    }

    /// How long the server took to produce the export, when known.
    pub fn export_duration(&self) -> Option<Duration> {
        let ready = self.export_ready_at?;
        let d = ready - self.started_at;
        (!d.is_negative()).then(|| d.unsigned_abs())
    }
}

/// The stable id of a snapshot.
pub fn snapshot_id(env: &str, collection: &str, export_job_id: u64) -> String {
    format!("{env}/{collection}/{export_job_id}")
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("catalog: {0}")]
    Store(#[from] EngineError),
    #[error("catalog rebuild: cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What `catalog rebuild` did.
#[derive(Debug, Clone, Serialize)]
pub struct RebuildResult {
    pub entries: usize,
    /// Catalog entries dropped because their manifest is gone.
    pub removed: usize,
    pub problems: Vec<String>,
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
    ) -> Result<String, CatalogError> {
        let rec = SnapshotRecord::from_manifest(m, manifest_path, job);
        self.kv.put(&rec.id, &rec)?;
        Ok(rec.id)
    }

    pub fn get(&self, id: &str) -> Result<Option<SnapshotRecord>, CatalogError> {
        Ok(self.kv.get(id)?)
    }

    /// Snapshots, newest first, optionally of one env and/or collection.
    pub fn list(
        &self,
        env: Option<&str>,
        collection: Option<&str>,
    ) -> Result<Vec<SnapshotRecord>, CatalogError> {
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
            .filter(|r| collection.map(|c| r.collection == c).unwrap_or(true))
            .filter(|r| env.map(|e| r.env == e).unwrap_or(true))
            .collect();
        out.sort_by(|a, b| (b.started_at, b.export_job_id).cmp(&(a.started_at, a.export_job_id)));
        Ok(out)
    }

    /// Duration of the newest earlier export of `target` (plans the first poll).
    pub fn export_duration(&self, target: &Target) -> Option<Duration> {
        let list = self
            .list(Some(&target.env), Some(&target.collection))
            .ok()?;
        list.iter()
            .filter(|r| r.appid == target.appid)
            .find_map(SnapshotRecord::export_duration)
    }

    /// Replaces the catalog with what the manifests under `root` describe.
    pub fn rebuild(&self, root: &Path) -> Result<RebuildResult, CatalogError> {
        let mut problems = Vec::new();
        let mut found = Vec::new();
        for (manifest_path, result) in scan_manifests(root, &mut problems)? {
            match result {
                Ok(m) => {
                    let data = m.data_path(&manifest_path);
                    if !data.is_file() {
                        problems.push(format!(
                            "{}: its data file {} is missing",
                            manifest_path.display(),
                            data.display()
                        ));
                        continue;
                    }
                    found.push((m, manifest_path));
                }
                Err(e) => problems.push(e.to_string()),
            }
        }
        let existing: Vec<(String, SnapshotRecord)> = self.kv.scan_prefix("")?;
        let mut keep = std::collections::BTreeSet::new();
        for (m, path) in &found {
            let id = snapshot_id(&m.env, &m.collection, m.export_job_id);
            let job = existing
                .iter()
                .find(|(k, _)| *k == id)
                .and_then(|(_, r)| r.job);
            self.record_with_job(m, path, job)?;
            keep.insert(id);
        }
        let mut removed = 0;
        for (key, _) in existing {
            if !keep.contains(&key) && self.kv.remove(&key)? {
                removed += 1;
            }
        }
        Ok(RebuildResult {
            entries: keep.len(),
            removed,
            problems,
        })
    }
}

type ManifestScan = Vec<(PathBuf, Result<Manifest, manifest::ManifestError>)>;

/// `<root>/<env>/<collection>/<stem>.manifest.json`, in a stable order.
fn scan_manifests(root: &Path, problems: &mut Vec<String>) -> Result<ManifestScan, CatalogError> {
    let mut out = Vec::new();
    let read = |dir: &Path| -> Result<Vec<PathBuf>, CatalogError> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|source| CatalogError::Io {
                path: dir.to_path_buf(),
                source,
            })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        v.sort();
        Ok(v)
    };
    if !root.exists() {
        return Ok(out);
    }
    for env_dir in read(root)?.into_iter().filter(|p| p.is_dir()) {
        for coll_dir in read(&env_dir)?.into_iter().filter(|p| p.is_dir()) {
            for file in read(&coll_dir)? {
                let Some(name) = file.file_name().and_then(|n| n.to_str()) else {
                    continue;
                };
                if name.starts_with(naming::TEMP_PREFIX) {
                    problems.push(format!("{}: leftover temporary file", file.display()));
                    continue;
                }
                if naming::manifest_file_stem(name).is_some() {
                    let m = manifest::read_manifest(&file);
                    out.push((file, m));
                }
            }
        }
    }
    Ok(out)
}
