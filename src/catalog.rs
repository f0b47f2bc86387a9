//! The catalog of stored snapshots: entry type, rebuild from the destination tree, and the
//! filtering/sorting behind `tcb-backup snapshots` and `show`.
//!
//! The catalog is a cache of what the manifests say. Where entries are stored (the engine's
//! kv namespace) is the backup workflow's business; this module stays storage-agnostic. Each
//! entry's id is derived from env, collection and export job id, so recording the same
//! snapshot twice (after a crash, or by a rebuild) overwrites the entry instead of adding one.
//! [`rebuild_from_files`] recreates every entry from the files alone and reports what does not
//! add up (orphan data files, manifests without data, unreadable manifests, checksum
//! mismatches) without ever stopping at one bad file.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::archive;
use crate::manifest::{self, Manifest};
use crate::naming;

/// One stored snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogEntry {
    /// `<env>/<collection>/<export job id>`, see [`entry_id`].
    pub id: String,
    pub manifest: Manifest,
    pub data_path: PathBuf,
    pub manifest_path: PathBuf,
}

/// The stable id of the snapshot that export job `job_id` produced for `env`/`collection`.
/// Export job ids are unique per env, so this identifies one snapshot whatever its file time.
pub fn entry_id(env: &str, collection: &str, job_id: u64) -> String {
    format!("{env}/{collection}/{job_id}")
}

impl CatalogEntry {
    /// The entry for a manifest stored at `manifest_path`.
    pub fn new(manifest: Manifest, manifest_path: &Path) -> CatalogEntry {
        CatalogEntry {
            id: entry_id(&manifest.env, &manifest.collection, manifest.export_job_id),
            data_path: manifest.data_path(manifest_path),
            manifest_path: manifest_path.to_path_buf(),
            manifest,
        }
    }

    pub fn env(&self) -> &str {
        &self.manifest.env
    }
    pub fn collection(&self) -> &str {
        &self.manifest.collection
    }
    pub fn finished_at(&self) -> OffsetDateTime {
        self.manifest.finished_at
    }
}

/// How much of each snapshot [`rebuild_from_files`] checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VerifyLevel {
    /// The data file exists.
    #[default]
    Exists,
    /// ... and has the manifest's size.
    Size,
    /// ... and the manifest's sha256 (reads every stored byte).
    Checksum,
    /// ... and decompresses, parses and has the manifest's record count and raw sha256.
    Content,
}

/// Something in the destination tree that does not add up. None of these stops a rebuild.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RebuildProblem {
    /// A data file that no manifest describes (e.g. a crash between writing the data file and
    /// its manifest).
    OrphanDataFile {
        path: PathBuf,
    },
    /// A manifest whose data file is missing.
    MissingDataFile {
        manifest: PathBuf,
        data: PathBuf,
    },
    UnreadableManifest {
        path: PathBuf,
        error: String,
    },
    /// The data file does not match its manifest (size, checksum or content).
    DataMismatch {
        manifest: PathBuf,
        error: String,
    },
    /// A manifest stored under another env/collection directory than the one it names.
    MisplacedManifest {
        path: PathBuf,
        env: String,
        collection: String,
    },
    /// Two manifests for the same snapshot id; the first (by path) is kept.
    DuplicateSnapshot {
        id: String,
        kept: PathBuf,
        ignored: PathBuf,
    },
    /// A temp file left by an interrupted write; safe to delete once no backup is running.
    LeftoverTempFile {
        path: PathBuf,
    },
    UnreadableDirectory {
        path: PathBuf,
        error: String,
    },
}

impl std::fmt::Display for RebuildProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RebuildProblem::OrphanDataFile { path } => {
                write!(f, "{}: data file without a manifest", path.display())
            }
            RebuildProblem::MissingDataFile { manifest, data } => write!(
                f,
                "{}: its data file {} is missing",
                manifest.display(),
                data.display()
            ),
            RebuildProblem::UnreadableManifest { path, error } => {
                write!(f, "{}: unreadable manifest: {error}", path.display())
            }
            RebuildProblem::DataMismatch { manifest, error } => {
                write!(f, "{}: {error}", manifest.display())
            }
            RebuildProblem::MisplacedManifest {
                path,
                env,
                collection,
            } => write!(
                f,
                "{}: manifest of {env}/{collection} stored in another directory",
                path.display()
            ),
            RebuildProblem::DuplicateSnapshot { id, kept, ignored } => write!(
                f,
                "snapshot {id} has two manifests: kept {}, ignored {}",
                kept.display(),
                ignored.display()
            ),
            RebuildProblem::LeftoverTempFile { path } => {
                write!(f, "{}: leftover temporary file", path.display())
            }
            RebuildProblem::UnreadableDirectory { path, error } => {
                write!(f, "{}: cannot list directory: {error}", path.display())
            }
        }
    }
}

/// The outcome of a rebuild: every good entry (sorted, see [`sort_entries`]) and every problem.
#[derive(Debug, Clone, Default)]
pub struct Rebuild {
    pub entries: Vec<CatalogEntry>,
    pub problems: Vec<RebuildProblem>,
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("destination root {path}: {source}")]
    Root {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Sorted directory listing as (name, path, is_dir), or the problem.
fn list_dir(dir: &Path) -> Result<Vec<(String, PathBuf, bool)>, std::io::Error> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        // Not following symlinks: a link inside the tree could point anywhere.
        let file_type = entry.file_type()?;
        let Ok(name) = entry.file_name().into_string() else {
            continue; // not UTF-8: never a name this tool writes
        };
        if file_type.is_symlink() {
            continue;
        }
        out.push((name, entry.path(), file_type.is_dir()));
    }
    out.sort();
    Ok(out)
}

/// Walks `<root>/<env>/<collection>/`, reads every manifest and checks its data file to the
/// given level. Fails only if `root` itself cannot be listed.
pub fn rebuild_from_files(root: &Path, verify: VerifyLevel) -> Result<Rebuild, CatalogError> {
    let envs = list_dir(root).map_err(|source| CatalogError::Root {
        path: root.to_path_buf(),
        source,
    })?;
    let mut rebuild = Rebuild::default();
    let mut by_id: BTreeMap<String, usize> = BTreeMap::new();
    for (env, env_path, is_dir) in envs {
        if !is_dir || naming::validate_env_id(&env).is_err() {
            continue; // not ours (README, .git, ...)
        }
        let collections = match list_dir(&env_path) {
            Ok(c) => c,
            Err(e) => {
                rebuild.problems.push(RebuildProblem::UnreadableDirectory {
                    path: env_path,
                    error: e.to_string(),
                });
                continue;
            }
        };
        for (collection, dir, is_dir) in collections {
            if !is_dir || naming::validate_collection_name(&collection).is_err() {
                continue;
            }
            scan_collection_dir(&env, &collection, &dir, verify, &mut rebuild, &mut by_id);
        }
    }
    sort_entries(&mut rebuild.entries);
    Ok(rebuild)
}

fn scan_collection_dir(
    env: &str,
    collection: &str,
    dir: &Path,
    verify: VerifyLevel,
    rebuild: &mut Rebuild,
    by_id: &mut BTreeMap<String, usize>,
) {
    let files = match list_dir(dir) {
        Ok(f) => f,
        Err(e) => {
            rebuild.problems.push(RebuildProblem::UnreadableDirectory {
                path: dir.to_path_buf(),
                error: e.to_string(),
            });
            return;
        }
    };
    let mut data_files = Vec::new();
    let mut referenced = HashSet::new();
    for (name, path, is_dir) in files {
        if is_dir {
            continue;
        }
        if name.starts_with(naming::TEMP_PREFIX) {
            rebuild
                .problems
                .push(RebuildProblem::LeftoverTempFile { path });
        } else if naming::data_file_stem(&name).is_some() {
            data_files.push((name, path));
        } else if let Some(stem) = naming::manifest_file_stem(&name) {
            // An unreadable manifest is reported once, not again as an orphan data file.
            referenced.insert(format!("{stem}{}", naming::DATA_SUFFIX));
            referenced.insert(format!("{stem}{}", naming::ENCRYPTED_DATA_SUFFIX));
            let manifest = match manifest::read_manifest(&path) {
                Ok(m) => m,
                Err(e) => {
                    rebuild.problems.push(RebuildProblem::UnreadableManifest {
                        path,
                        error: e.to_string(),
                    });
                    continue;
                }
            };
            if manifest.env != env || manifest.collection != collection {
                rebuild.problems.push(RebuildProblem::MisplacedManifest {
                    path,
                    env: manifest.env,
                    collection: manifest.collection,
                });
                continue;
            }
            referenced.insert(manifest.data_file.clone());
            let entry = CatalogEntry::new(manifest, &path);
            if let Some(problem) = check_data(&entry, verify) {
                rebuild.problems.push(problem);
                continue;
            }
            if let Some(&kept) = by_id.get(&entry.id) {
                let kept = rebuild
                    .entries
                    .get(kept)
                    .map(|e| e.manifest_path.clone())
                    .unwrap_or_default();
                rebuild.problems.push(RebuildProblem::DuplicateSnapshot {
                    id: entry.id,
                    kept,
                    ignored: path,
                });
                continue;
            }
            by_id.insert(entry.id.clone(), rebuild.entries.len());
            rebuild.entries.push(entry);
        }
    }
    for (name, path) in data_files {
        if !referenced.contains(&name) {
            rebuild
                .problems
                .push(RebuildProblem::OrphanDataFile { path });
        }
    }
}

fn check_data(entry: &CatalogEntry, verify: VerifyLevel) -> Option<RebuildProblem> {
    let meta = match fs::metadata(&entry.data_path) {
        Ok(m) if m.is_file() => m,
        _ => {
            return Some(RebuildProblem::MissingDataFile {
                manifest: entry.manifest_path.clone(),
                data: entry.data_path.clone(),
            })
        }
    };
    let mismatch = |error: String| RebuildProblem::DataMismatch {
        manifest: entry.manifest_path.clone(),
        error,
    };
    match verify {
        VerifyLevel::Exists => None,
        VerifyLevel::Size => (meta.len() != entry.manifest.bytes_stored).then(|| {
            mismatch(format!(
                "data file is {} bytes, the manifest says {}",
                meta.len(),
                entry.manifest.bytes_stored
            ))
        }),
        // A rebuild holds no identity: an encrypted snapshot's content is checked by
        // `check --read-data`, its stored bytes (checksum) here.
        VerifyLevel::Checksum | VerifyLevel::Content => archive::verify_snapshot(
            &entry.data_path,
            &entry.manifest,
            verify == VerifyLevel::Content && entry.manifest.encryption.is_none(),
        )
        .err()
        .map(|e| mismatch(e.to_string())),
    }
}

/// Oldest first by finish time, then by id: the order `snapshots` lists them in.
pub fn sort_entries(entries: &mut [CatalogEntry]) {
    entries.sort_by(|a, b| {
        a.manifest
            .finished_at
            .cmp(&b.manifest.finished_at)
            .then_with(|| a.id.cmp(&b.id))
    });
}

/// Which snapshots `tcb-backup snapshots` shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotFilter {
    pub appid: Option<String>,
    pub env: Option<String>,
    /// Any of these collections (empty: all).
    pub collections: Vec<String>,
    /// Finished at or after.
    pub since: Option<OffsetDateTime>,
    /// Finished before.
    pub until: Option<OffsetDateTime>,
    /// Only the newest snapshot of each env/collection.
    pub latest_only: bool,
}

impl SnapshotFilter {
    pub fn matches(&self, entry: &CatalogEntry) -> bool {
        let m = &entry.manifest;
        self.appid.as_ref().is_none_or(|a| *a == m.appid)
            && self.env.as_ref().is_none_or(|e| *e == m.env)
            && (self.collections.is_empty() || self.collections.contains(&m.collection))
            && self.since.is_none_or(|t| m.finished_at >= t)
            && self.until.is_none_or(|t| m.finished_at < t)
    }
}

/// The entries `filter` selects, in [`sort_entries`] order.
pub fn select<'a>(entries: &'a [CatalogEntry], filter: &SnapshotFilter) -> Vec<&'a CatalogEntry> {
    let mut selected: Vec<&CatalogEntry> = entries.iter().filter(|e| filter.matches(e)).collect();
    selected.sort_by(|a, b| {
        a.manifest
            .finished_at
            .cmp(&b.manifest.finished_at)
            .then_with(|| a.id.cmp(&b.id))
    });
    if filter.latest_only {
        let mut newest: BTreeMap<(&str, &str), &CatalogEntry> = BTreeMap::new();
        for e in &selected {
            newest.insert((e.env(), e.collection()), e); // later ones win
        }
        let keep: HashSet<&str> = newest.values().map(|e| e.id.as_str()).collect();
        selected.retain(|e| keep.contains(e.id.as_str()));
    }
    selected
}

/// The newest snapshot of `env`/`collection`, e.g. to plan the first poll of the next export
/// from how long this one took ([`Manifest::export_duration`]).
pub fn latest_for<'a>(
    entries: &'a [CatalogEntry],
    env: &str,
    collection: &str,
) -> Option<&'a CatalogEntry> {
    entries
        .iter()
        .filter(|e| e.env() == env && e.collection() == collection)
        .max_by(|a, b| {
            a.manifest
                .finished_at
                .cmp(&b.manifest.finished_at)
                .then_with(|| a.id.cmp(&b.id))
        })
}

/// Why `show <id>` found no single entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FindError {
    #[error("no snapshot matches {0:?}")]
    NotFound(String),
    #[error("{query:?} matches several snapshots: {}", candidates.join(", "))]
    Ambiguous {
        query: String,
        candidates: Vec<String>,
    },
}

/// Looks an entry up by its full id, by a unique id prefix, or by its export job id alone.
pub fn find<'a>(entries: &'a [CatalogEntry], query: &str) -> Result<&'a CatalogEntry, FindError> {
    if let Some(e) = entries.iter().find(|e| e.id == query) {
        return Ok(e);
    }
    let by_job: Vec<&CatalogEntry> = match query.parse::<u64>() {
        Ok(job) => entries
            .iter()
            .filter(|e| e.manifest.export_job_id == job)
            .collect(),
        Err(_) => Vec::new(),
    };
    let matches = if by_job.is_empty() {
        entries
            .iter()
            .filter(|e| !query.is_empty() && e.id.starts_with(query))
            .collect()
    } else {
        by_job
    };
    match matches.as_slice() {
        [one] => Ok(one),
        [] => Err(FindError::NotFound(query.to_string())),
        many => Err(FindError::Ambiguous {
            query: query.to_string(),
            candidates: many.iter().map(|e| e.id.clone()).collect(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::{write_snapshot, ArchiveOptions};
    use crate::manifest::{write_manifest, SnapshotInfo};
    use crate::naming::snapshot_paths;
    use bytes::Bytes;
    use time::macros::datetime;

    #[derive(Debug, thiserror::Error)]
    #[error("never")]
    struct Never;

    /// Writes a real snapshot (data + manifest) and returns its entry.
    async fn store(
        root: &Path,
        env: &str,
        collection: &str,
        job: u64,
        at: OffsetDateTime,
        body: &'static [u8],
    ) -> CatalogEntry {
        let paths = snapshot_paths(root, env, collection, at, job).unwrap();
        let summary = write_snapshot(
            futures_util::stream::iter(vec![Ok::<_, Never>(Bytes::from_static(body))]),
            &paths,
            ArchiveOptions::default(),
        )
        .await
        .unwrap();
        let manifest = Manifest::for_snapshot(
            SnapshotInfo {
                appid: "wx1".into(),
                env: env.into(),
                collection: collection.into(),
                query: format!("db.collection({collection:?}).get()"),
                file_type: Default::default(),
                export_job_id: job,
                started_at: at,
                export_ready_at: None,
                export_created_at: None,
            },
            &summary,
            &paths,
            at + time::Duration::seconds(5),
        );
        write_manifest(&paths.manifest, &manifest).unwrap();
        CatalogEntry::new(manifest, &paths.manifest)
    }

    const T1: OffsetDateTime = datetime!(2026-12-01 02:00:00 UTC);
    const T2: OffsetDateTime = datetime!(2026-12-02 02:00:00 UTC);
    const T3: OffsetDateTime = datetime!(2026-12-03 02:00:00 UTC);

    #[tokio::test]
    async fn rebuild_finds_every_snapshot_and_reports_every_problem() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let a = store(root, "prod", "orders", 101, T1, b"{\"a\":1}\n").await;
        let b = store(root, "prod", "orders", 102, T2, b"{\"a\":2}\n").await;
        let c = store(root, "test", "users", 7, T3, b"{\"u\":1}\n{\"u\":2}\n").await;
        let missing = store(root, "prod", "users", 103, T1, b"{}\n").await;
        fs::remove_file(&missing.data_path).unwrap();
        let orphan = store(root, "prod", "users", 104, T2, b"{}\n").await;
        fs::remove_file(&orphan.manifest_path).unwrap();
        let broken = store(root, "prod", "users", 105, T3, b"{}\n").await;
        fs::write(&broken.manifest_path, b"{\"format_version\":1").unwrap();
        let tampered = store(root, "test", "logs", 9, T1, b"{\"x\":1}\n").await;
        let mut bytes = fs::read(&tampered.data_path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        fs::write(&tampered.data_path, &bytes).unwrap();
        let temp = root.join("prod/orders/.tmp-20261203T020000Z-9.jsonl.zst-00ff");
        fs::write(&temp, b"partial").unwrap();
        // Not ours: ignored silently.
        fs::write(root.join("README"), b"backups").unwrap();
        fs::create_dir_all(root.join(".git/objects")).unwrap();
        fs::write(root.join("prod/orders/notes.txt"), b"x").unwrap();

        let rebuild = rebuild_from_files(root, VerifyLevel::Checksum).unwrap();
        let ids: Vec<&str> = rebuild.entries.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, vec![a.id.as_str(), b.id.as_str(), c.id.as_str()]);
        assert_eq!(rebuild.entries[0], a);
        let mut problems = rebuild.problems.clone();
        problems.sort_by_key(|p| format!("{p:?}"));
        assert_eq!(problems.len(), 5, "{problems:#?}");
        assert!(problems.contains(&RebuildProblem::MissingDataFile {
            manifest: missing.manifest_path.clone(),
            data: missing.data_path.clone()
        }));
        assert!(problems.contains(&RebuildProblem::OrphanDataFile {
            path: orphan.data_path.clone()
        }));
        assert!(problems.contains(&RebuildProblem::LeftoverTempFile { path: temp.clone() }));
        assert!(problems.iter().any(|p| matches!(p,
            RebuildProblem::UnreadableManifest { path, .. } if *path == broken.manifest_path)));
        assert!(problems.iter().any(|p| matches!(p,
            RebuildProblem::DataMismatch { manifest, error }
                if *manifest == tampered.manifest_path && error.contains("stored sha256"))));
        for p in &problems {
            assert!(!p.to_string().is_empty());
        }

        // Existence-only checks do not read data: the tampered file passes.
        let quick = rebuild_from_files(root, VerifyLevel::Exists).unwrap();
        assert_eq!(quick.entries.len(), 4);
        let sized = rebuild_from_files(root, VerifyLevel::Size).unwrap();
        assert_eq!(sized.entries.len(), 4);
        let deep = rebuild_from_files(root, VerifyLevel::Content).unwrap();
        assert_eq!(deep.entries.len(), 3);
    }

    #[tokio::test]
    async fn misplaced_and_duplicate_manifests() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let a = store(root, "prod", "orders", 101, T1, b"{}\n").await;
        // The same export recorded again under another time: same id.
        let dup = store(root, "prod", "orders", 101, T2, b"{}\n").await;
        assert_eq!(a.id, dup.id);
        // A manifest copied into another collection's directory.
        fs::create_dir_all(root.join("prod/users")).unwrap();
        let moved = root.join("prod/users/20261201T020000Z-101.manifest.json");
        fs::copy(&a.manifest_path, &moved).unwrap();
        let rebuild = rebuild_from_files(root, VerifyLevel::Exists).unwrap();
        assert_eq!(rebuild.entries.len(), 1);
        assert_eq!(rebuild.entries[0].manifest_path, a.manifest_path);
        assert!(rebuild
            .problems
            .contains(&RebuildProblem::DuplicateSnapshot {
                id: a.id.clone(),
                kept: a.manifest_path.clone(),
                ignored: dup.manifest_path.clone()
            }));
        assert!(rebuild.problems.iter().any(|p| matches!(p,
            RebuildProblem::MisplacedManifest { path, collection, .. }
                if *path == moved && collection == "orders")));
    }

    #[test]
    fn missing_root_is_an_error_empty_root_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let err = rebuild_from_files(&dir.path().join("nope"), VerifyLevel::Exists).unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
        let empty = rebuild_from_files(dir.path(), VerifyLevel::Exists).unwrap();
        assert!(empty.entries.is_empty() && empty.problems.is_empty());
    }

    fn entry(env: &str, collection: &str, job: u64, finished: OffsetDateTime) -> CatalogEntry {
        let mut m = crate::manifest::tests::sample();
        m.env = env.into();
        m.collection = collection.into();
        m.export_job_id = job;
        m.started_at = finished - time::Duration::seconds(10);
        m.finished_at = finished;
        CatalogEntry::new(m, Path::new("/r/x/y/z.manifest.json"))
    }

    #[test]
    fn filtering_sorting_and_lookup() {
        let entries = vec![
            entry("prod", "orders", 3, T3),
            entry("prod", "orders", 1, T1),
            entry("prod", "users", 2, T2),
            entry("test", "orders", 4, T2),
        ];
        let ids = |v: Vec<&CatalogEntry>| v.iter().map(|e| e.id.clone()).collect::<Vec<_>>();
        assert_eq!(
            ids(select(&entries, &SnapshotFilter::default())),
            vec![
                "prod/orders/1",
                "prod/users/2",
                "test/orders/4",
                "prod/orders/3"
            ]
        );
        let prod_orders = SnapshotFilter {
            env: Some("prod".into()),
            collections: vec!["orders".into()],
            ..Default::default()
        };
        assert_eq!(
            ids(select(&entries, &prod_orders)),
            vec!["prod/orders/1", "prod/orders/3"]
        );
        let latest = SnapshotFilter {
            latest_only: true,
            ..Default::default()
        };
        assert_eq!(
            ids(select(&entries, &latest)),
            vec!["prod/users/2", "test/orders/4", "prod/orders/3"]
        );
        let window = SnapshotFilter {
            since: Some(T2),
            until: Some(T3),
            ..Default::default()
        };
        assert_eq!(
            ids(select(&entries, &window)),
            vec!["prod/users/2", "test/orders/4"]
        );
        let other_app = SnapshotFilter {
            appid: Some("wxother".into()),
            ..Default::default()
        };
        assert!(select(&entries, &other_app).is_empty());

        assert_eq!(
            latest_for(&entries, "prod", "orders").unwrap().id,
            "prod/orders/3"
        );
        assert!(latest_for(&entries, "prod", "nope").is_none());

        let mut sorted = entries.clone();
        sort_entries(&mut sorted);
        assert_eq!(sorted[0].id, "prod/orders/1");

        assert_eq!(find(&entries, "prod/users/2").unwrap().id, "prod/users/2");
        assert_eq!(find(&entries, "4").unwrap().id, "test/orders/4");
        assert_eq!(find(&entries, "test/").unwrap().id, "test/orders/4");
        assert!(matches!(
            find(&entries, "prod/orders/"),
            Err(FindError::Ambiguous { .. })
        ));
        assert!(matches!(find(&entries, "9"), Err(FindError::NotFound(_))));
        assert!(matches!(find(&entries, ""), Err(FindError::NotFound(_))));
    }

    #[test]
    fn entries_round_trip_through_json() {
        let e = entry("prod", "orders", 1, T1);
        let json = serde_json::to_string(&e).unwrap();
        assert_eq!(serde_json::from_str::<CatalogEntry>(&json).unwrap(), e);
    }
}
