//! Deleting one forgotten snapshot from the local destination.
//!
//! The manifest goes first, then the data file: `catalog rebuild` (which works from the
//! manifests) then never finds a snapshot whose data is gone. A crash in between leaves a data
//! file without a manifest; the caller has marked the snapshot as being deleted before
//! calling this (see [`super::forget::ForgetHooks`]), so the next `forget --prune` finishes
//! it. Both removals are idempotent (a file already gone is fine), and the directory is
//! fsynced so a deletion that was reported is durable.
//!
//! A data file shared with another snapshot (skip unchanged, see [`crate::data_refs`]) is kept
//! while any other manifest of its directory still names it; only the manifest goes. The check
//! reads the manifests on disk under the directory's guard, so a backup cannot point a new
//! snapshot at the file between the check and the deletion.

use std::io;
use std::path::{Path, PathBuf};

use crate::catalog::CatalogEntry;
use crate::data_refs::{referenced_elsewhere, DirGuard};

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
    /// The data file, when it was kept because another snapshot still uses it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shared_data_kept: Option<PathBuf>,
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

/// Removes the manifest, then the data file (unless another manifest still names it), of
/// `entry`, and syncs their directory. Blocking (waits for the directory's guard).
pub fn delete_local_snapshot(entry: &CatalogEntry) -> Result<Removed, PruneError> {
    let mut removed = Removed::default();
    let dir = entry
        .manifest_path
        .parent()
        .unwrap_or_else(|| Path::new("."))
        .to_path_buf();
    let _guard = DirGuard::acquire(&dir);
    let data_name = entry
        .data_path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(&entry.manifest.data_file)
        .to_string();
    let shared = entry.data_path.parent() == Some(dir.as_path())
        && referenced_elsewhere(&dir, &data_name, &entry.manifest_path).map_err(|source| {
            PruneError {
                id: entry.id.clone(),
                path: dir.clone(),
                source,
            }
        })?;
    remove_if_present(&entry.id, &entry.manifest_path, &mut removed)?;
    // The manifest is gone, the data file not yet.
    crate::faultpoint::hit("forget.after_manifest_removed");
    if shared {
        removed.shared_data_kept = Some(entry.data_path.clone());
    } else {
        remove_if_present(&entry.id, &entry.data_path, &mut removed)?;
    }
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
