//! Data files shared by several snapshots (skip unchanged).
//!
//! When an export is byte-identical to the previous snapshot of its collection, the new
//! snapshot's manifest names the data file that snapshot stored instead of storing it again
//! (`Manifest::data_reused_from`). A data file may therefore be referenced by several manifests
//! of its directory, and deleting a snapshot must delete its data file only when no other
//! manifest still names it. The manifests on disk are the truth, so [`referenced_elsewhere`]
//! reads them at prune time (no counter to drift out of step after a crash).
//!
//! Deciding to reuse a file and pruning a file must not interleave (a backup could point a new
//! manifest at a file a concurrent `forget` is about to delete), so both hold the directory's
//! [`DirGuard`]: pruning waits for it, a backup only tries it and stores its own file when the
//! directory is busy. The state store admits one process at a time, so an in-process guard is
//! enough.

use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, OnceLock};

use crate::manifest;
use crate::naming;

struct Busy {
    dirs: Mutex<HashSet<PathBuf>>,
    freed: Condvar,
}

fn busy() -> &'static Busy {
    static BUSY: OnceLock<Busy> = OnceLock::new();
    BUSY.get_or_init(|| Busy {
        dirs: Mutex::new(HashSet::new()),
        freed: Condvar::new(),
    })
}

/// Exclusive use of one snapshot directory's data-file references; released on drop.
pub struct DirGuard {
    dir: PathBuf,
}

impl DirGuard {
    /// Waits for the directory (blocking: call it on a blocking thread).
    pub fn acquire(dir: &Path) -> DirGuard {
        let b = busy();
        let mut dirs = b.dirs.lock().unwrap_or_else(|p| p.into_inner());
        while dirs.contains(dir) {
            dirs = b.freed.wait(dirs).unwrap_or_else(|p| p.into_inner());
        }
        dirs.insert(dir.to_path_buf());
        DirGuard {
            dir: dir.to_path_buf(),
        }
    }

    /// The directory if nobody holds it, else `None` (never waits).
    pub fn try_acquire(dir: &Path) -> Option<DirGuard> {
        let mut dirs = busy().dirs.lock().unwrap_or_else(|p| p.into_inner());
        if !dirs.insert(dir.to_path_buf()) {
            return None;
        }
        Some(DirGuard {
            dir: dir.to_path_buf(),
        })
    }
}

impl Drop for DirGuard {
    fn drop(&mut self) {
        let b = busy();
        let mut dirs = b.dirs.lock().unwrap_or_else(|p| p.into_inner());
        dirs.remove(&self.dir);
        b.freed.notify_all();
    }
}

/// Whether a manifest in `dir` other than `except` names `data_file` as its data file. A
/// manifest that cannot be parsed counts when its bytes mention the file name: when in doubt,
/// a data file is kept.
pub fn referenced_elsewhere(dir: &Path, data_file: &str, except: &Path) -> io::Result<bool> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        if path == except {
            continue;
        }
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with(naming::TEMP_PREFIX) || naming::manifest_file_stem(name).is_none() {
            continue;
        }
        let references = match manifest::read_manifest(&path) {
            Ok(m) => m.data_file == data_file,
            Err(_) => match std::fs::read(&path) {
                Ok(bytes) => {
                    let needle = format!("\"{data_file}\"");
                    bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => false,
                Err(e) => return Err(e),
            },
        };
        if references {
            return Ok(true);
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{tests::sample, write_manifest};

    #[test]
    fn a_try_fails_while_the_directory_is_held_and_succeeds_after() {
        let dir = tempfile::tempdir().unwrap();
        let g = DirGuard::acquire(dir.path());
        assert!(DirGuard::try_acquire(dir.path()).is_none());
        let other = dir.path().join("other");
        assert!(DirGuard::try_acquire(&other).is_some());
        drop(g);
        let again = DirGuard::try_acquire(dir.path());
        assert!(again.is_some());
    }

    #[test]
    fn references_are_found_in_other_manifests_only() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let owner = sample();
        let owner_path = d.join("20261203T020000Z-100000012.manifest.json");
        write_manifest(&owner_path, &owner).unwrap();
        assert!(!referenced_elsewhere(d, &owner.data_file, &owner_path).unwrap());

        let mut reuse = sample();
        reuse.export_job_id = 100000013;
        reuse.data_reused_from = Some("prod-1a2b3c/orders/100000012".into());
        let reuse_path = d.join("20261204T020000Z-100000013.manifest.json");
        write_manifest(&reuse_path, &reuse).unwrap();
        assert!(referenced_elsewhere(d, &owner.data_file, &owner_path).unwrap());
        assert!(referenced_elsewhere(d, &owner.data_file, &reuse_path).unwrap());
        assert!(!referenced_elsewhere(d, "20261205T020000Z-7.jsonl.zst", &owner_path).unwrap());

        // An unreadable manifest that mentions the file keeps it; one that does not, does not.
        std::fs::write(
            &reuse_path,
            format!("{{\"data_file\": \"{}\"", owner.data_file),
        )
        .unwrap();
        assert!(referenced_elsewhere(d, &owner.data_file, &owner_path).unwrap());
        std::fs::write(&reuse_path, b"{broken").unwrap();
        assert!(!referenced_elsewhere(d, &owner.data_file, &owner_path).unwrap());
        assert!(!referenced_elsewhere(&d.join("missing"), "x", &owner_path).unwrap());
    }
}
