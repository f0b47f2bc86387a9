//! Skip unchanged: a new snapshot whose export is byte-identical to the previous snapshot of
//! the same env+collection shares that snapshot's stored data file instead of keeping its own.
//!
//! The new snapshot is still a snapshot of its own (its manifest, catalog entry, times and
//! export job id); only `data_file` points at the earlier file and `data_reused_from` says so.
//! The step that records it (see `collection.rs`) runs in this order, each part safe to repeat:
//! decide and write the referencing manifest under the directory's guard
//! ([`crate::data_refs::DirGuard`]), record the catalog entry, then delete the freshly downloaded
//! duplicate. A crash before the deletion leaves the duplicate, which the repeated step deletes;
//! a repeated step that finds its referencing manifest already written keeps it.

use std::path::{Path, PathBuf};

use crate::archive;
use crate::manifest::Manifest;

use super::catalog_store::SnapshotCatalog;

/// The earlier data file a new snapshot can share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reusable {
    /// The snapshot that stored the file (the first of a chain of identical snapshots).
    pub stored_by: String,
    pub data_file: String,
    pub data_path: PathBuf,
    pub bytes_stored: u64,
    pub sha256_stored: String,
}

/// Whether two manifests describe the same export content, stored the same way (an
/// unencrypted file is never shared by an encrypted snapshot, nor one encrypted to other
/// recipients).
fn same_content(prev: &Manifest, new: &Manifest) -> bool {
    prev.encryption == new.encryption
        && prev.appid == new.appid
        && prev.env == new.env
        && prev.collection == new.collection
        && prev.file_type == new.file_type
        && prev.records == new.records
        && prev.bytes_raw == new.bytes_raw
        && prev.sha256_raw == new.sha256_raw
}

/// The data file of the newest earlier snapshot of `new`'s env+collection, if that export was
/// byte-identical to `new`'s and its file (in `dir`) is intact: present, with the size and
/// sha256 its manifest records. Call it with `dir`'s guard held. `own_id` is the new
/// snapshot's id (a repeated step may find it in the catalog already).
pub fn find_reusable(
    catalog: &SnapshotCatalog,
    new: &Manifest,
    own_id: &str,
    dir: &Path,
) -> Option<Reusable> {
    let prev = catalog
        .list(Some(&new.env), Some(&new.collection))
        .ok()?
        .into_iter()
        .find(|r| r.entry.id != own_id)?;
    let m = &prev.entry.manifest;
    if !same_content(m, new) || prev.entry.data_path.parent() != Some(dir) {
        return None;
    }
    // Never point at a file that does not hold what it should: the fresh download is the
    // better copy then.
    archive::verify_snapshot(&prev.entry.data_path, m, false).ok()?;
    Some(Reusable {
        stored_by: m
            .data_reused_from
            .clone()
            .unwrap_or_else(|| prev.entry.id.clone()),
        data_file: m.data_file.clone(),
        data_path: prev.entry.data_path.clone(),
        bytes_stored: m.bytes_stored,
        sha256_stored: m.sha256_stored.clone(),
    })
}

/// `m` turned into a reference to `r`'s file.
pub fn as_reference(mut m: Manifest, r: &Reusable) -> Manifest {
    m.data_file = r.data_file.clone();
    m.bytes_stored = r.bytes_stored;
    m.sha256_stored = r.sha256_stored.clone();
    m.data_reused_from = Some(r.stored_by.clone());
    m
}
