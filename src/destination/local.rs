//! A destination directory (a second disk, a mounted share): files are copied to a temp name,
//! fsynced and renamed into place, so a reader never sees half a copy. A temp file of the same
//! name that no copy of this process is writing was left by a process that died mid-copy; the
//! next put of that name removes it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use futures_util::future::BoxFuture;

use super::{Destination, DestinationError, RemoteObject};
use crate::archive::fsutil;
use crate::naming::TEMP_PREFIX;

/// The temp files the copies of this process are writing (any destination).
static WRITING: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());

/// Takes a temp file off [`WRITING`] when its copy ends, published or not.
struct Writing(PathBuf);

impl Drop for Writing {
    fn drop(&mut self) {
        WRITING
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.0);
    }
}

/// Whether `file` is a temp file `fsutil::TempFile::create` made for `name`.
fn is_temp_of(file: &str, name: &str) -> bool {
    file.strip_prefix(TEMP_PREFIX)
        .and_then(|rest| rest.strip_prefix(name))
        .and_then(|rest| rest.strip_prefix('-'))
        .is_some_and(|random| random.len() == 16 && random.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Removes the temp files for `name` in `dir` that no copy of this process is writing.
fn remove_stale_temps(dir: &Path, name: &str, writing: &BTreeSet<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let stale = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| is_temp_of(n, name))
            && !writing.contains(&path);
        if stale {
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => tracing::info!(file = %path.display(), "removed a copy's leftover temp file"),
            }
        }
    }
    Ok(())
}

pub struct LocalDir {
    name: String,
    root: PathBuf,
}

impl LocalDir {
    pub fn new(name: impl Into<String>, root: impl Into<PathBuf>) -> Self {
        LocalDir {
            name: name.into(),
            root: root.into(),
        }
    }

    fn target(&self, key: &str) -> Result<PathBuf, DestinationError> {
        if key
            .split('/')
            .any(|p| p.is_empty() || p == "." || p == "..")
        {
            return Err(DestinationError::Permanent {
                destination: self.name.clone(),
                message: format!("invalid key {key:?}"),
            });
        }
        Ok(self.root.join(key))
    }

    fn copy_blocking(&self, key: &str, local: &Path) -> Result<RemoteObject, DestinationError> {
        let err = |message: String| DestinationError::Transient {
            destination: self.name.clone(),
            message,
        };
        let target = self.target(key)?;
        let dir = target
            .parent()
            .ok_or_else(|| err(format!("{key}: no parent directory")))?;
        fsutil::create_private_dir_all(dir).map_err(|e| err(format!("{}: {e}", dir.display())))?;
        let name = target
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| err(format!("{key}: no file name")))?;
        let (temp, _writing) = {
            // Under the lock, so no copy's fresh temp file is taken for a leftover.
            let mut writing = WRITING.lock().unwrap_or_else(PoisonError::into_inner);
            remove_stale_temps(dir, name, &writing)
                .map_err(|e| err(format!("cleaning up {}: {e}", dir.display())))?;
            let temp = fsutil::TempFile::create(dir, name)
                .map_err(|e| err(format!("{}: {e}", dir.display())))?;
            writing.insert(temp.path().to_path_buf());
            let guard = Writing(temp.path().to_path_buf());
            (temp, guard)
        };
        let mut src =
            std::fs::File::open(local).map_err(|e| err(format!("{}: {e}", local.display())))?;
        let mut dst = temp.file();
        let bytes = std::io::copy(&mut src, &mut dst)
            .map_err(|e| err(format!("copying to {}: {e}", target.display())))?;
        temp.file()
            .sync_all()
            .map_err(|e| err(format!("fsync {}: {e}", target.display())))?;
        temp.persist_replacing(&target)
            .map_err(|e| err(format!("publishing {}: {e}", target.display())))?;
        fsutil::sync_dir(dir).map_err(|e| err(format!("fsync {}: {e}", dir.display())))?;
        Ok(RemoteObject {
            key: key.to_string(),
            remote_id: None,
            bytes,
        })
    }
}

impl Destination for LocalDir {
    fn name(&self) -> &str {
        &self.name
    }

    fn put_file<'a>(
        &'a self,
        key: &'a str,
        local: &'a Path,
    ) -> BoxFuture<'a, Result<RemoteObject, DestinationError>> {
        Box::pin(async move { tokio::task::block_in_place(|| self.copy_blocking(key, local)) })
    }

    fn delete<'a>(
        &'a self,
        object: &'a RemoteObject,
    ) -> BoxFuture<'a, Result<(), DestinationError>> {
        Box::pin(async move {
            let target = self.target(&object.key)?;
            match std::fs::remove_file(&target) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(DestinationError::Transient {
                    destination: self.name.clone(),
                    message: format!("deleting {}: {e}", target.display()),
                }),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names_match_their_file_only() {
        let name = "20261203T020000Z-1.jsonl.zst";
        assert!(is_temp_of(&format!(".tmp-{name}-0123456789abcdef"), name));
        assert!(!is_temp_of(
            &format!(".tmp-{name}.age-0123456789abcdef"),
            name
        ));
        assert!(!is_temp_of(&format!(".tmp-{name}-0123"), name));
        assert!(!is_temp_of(name, name));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_leftover_temp_file_goes_with_the_next_put_of_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::write(&src, b"snapshot bytes").unwrap();
        let dest = LocalDir::new("nas", dir.path().join("nas"));
        let target_dir = dir.path().join("nas/prod/orders");
        fsutil::create_private_dir_all(&target_dir).unwrap();
        // A process died while copying: its temp file of this name stays behind, as does one
        // of another file, which this put leaves alone.
        let stale = target_dir.join(".tmp-1.manifest.json-00000000deadbeef");
        let other = target_dir.join(".tmp-2.manifest.json-00000000deadbeef");
        std::fs::write(&stale, b"half").unwrap();
        std::fs::write(&other, b"half").unwrap();
        let object = dest
            .put_file("prod/orders/1.manifest.json", &src)
            .await
            .unwrap();
        assert_eq!(object.bytes, 14);
        assert!(!stale.exists(), "the leftover of this name is gone");
        assert!(other.exists(), "another name's is not this put's business");
        assert_eq!(
            std::fs::read(target_dir.join("1.manifest.json")).unwrap(),
            b"snapshot bytes"
        );
        // (Other tests' copies may be in flight: only this directory's entries count.)
        assert!(!WRITING
            .lock()
            .unwrap()
            .iter()
            .any(|p| p.starts_with(dir.path())));
    }
}
