//! Deleting one forgotten snapshot from the local destination.
//!
//! Order matters for crash safety: the data file goes first, then the manifest. A crash in
//! between leaves a manifest whose data file is missing, which `check` reports as failed and
//! the next `forget` deletes; the other order would leave an orphan data file nothing refers to.
//! Both removals are idempotent (a file already gone is fine), and the directory is fsynced so
//! a deletion that was reported is durable.

use std::io;
use std::path::{Path, PathBuf};

use crate::catalog::CatalogEntry;

#[derive(Debug, thiserror::Error)]
#[error("cannot delete {path} of snapshot {id}: {source}")]
pub struct PruneError {
    pub id: String,
    pub path: PathBuf,
    pub source: io::Error,
}

/// What deleting one snapshot removed (files already absent are not listed).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Removed {
    pub files: Vec<PathBuf>,
    pub bytes: u64,
}

fn remove_if_present(id: &str, path: &Path, removed: &mut Removed) -> Result<(), PruneError> {
    let err = |source| PruneError {
        id: id.to_string(),
        path: path.to_path_buf(),
        source,
    };
    let len = match std::fs::symlink_metadata(path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(err(e)),
    };
    match std::fs::remove_file(path) {
        Ok(()) => {
            removed.files.push(path.to_path_buf());
            removed.bytes += len;
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(err(e)),
    }
}

/// Removes the data file, then the manifest, of `entry`, and syncs their directory.
pub fn delete_local_snapshot(entry: &CatalogEntry) -> Result<Removed, PruneError> {
    let mut removed = Removed::default();
    remove_if_present(&entry.id, &entry.data_path, &mut removed)?;
    remove_if_present(&entry.id, &entry.manifest_path, &mut removed)?;
    if let Some(dir) = entry.manifest_path.parent() {
        if !removed.files.is_empty() {
            crate::archive::fsutil::sync_dir(dir).map_err(|source| PruneError {
                id: entry.id.clone(),
                path: dir.to_path_buf(),
                source,
            })?;
        }
    }
    Ok(removed)
}
