//! A destination directory (a second disk, a mounted share): files are copied to a temp name,
//! fsynced and renamed into place, so a reader never sees half a copy.

use std::path::{Path, PathBuf};

use futures_util::future::BoxFuture;

use super::{Destination, DestinationError, RemoteObject};
use crate::archive::fsutil;

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
        let temp = fsutil::TempFile::create(dir, name)
            .map_err(|e| err(format!("{}: {e}", dir.display())))?;
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
