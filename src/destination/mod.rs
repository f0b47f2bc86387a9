//! Off-site copies of stored snapshots.
//!
//! A [`Destination`] stores a snapshot's data file and manifest under the same relative key
//! they have in the local tree (`<env>/<collection>/<file>`), and can delete them again. Three
//! kinds: [`local::LocalDir`] (another directory: a mounted disk or share), [`s3::S3Destination`]
//! (S3-compatible object storage through the `object_store` crate) and
//! [`cloudbase::CloudBaseStorage`] (the env's own CloudBase storage via `uploadfile`).
//! Copying is a durable workflow kind ([`copy`]): when a destination is down the snapshot stays
//! recorded locally and the copy is retried with backoff; what was copied where is recorded
//! ([`copy::CopyRecords`]) so that `forget --prune` deletes the remote copies too. [`plan`]
//! builds the destinations from the configuration's `[[destinations]]` and keeps the copy jobs
//! of recorded snapshots going.

pub mod cloudbase;
pub mod copy;
pub mod local;
pub mod plan;
pub mod s3;

use std::path::{Path, PathBuf};

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};

/// Why a destination operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DestinationError {
    /// Worth retrying (connection refused, timeout, 5xx, throttling).
    #[error("destination {destination}: {message}")]
    Transient {
        destination: String,
        message: String,
    },
    /// Retrying will not help (bad credentials, missing bucket, invalid key).
    #[error("destination {destination}: {message}")]
    Permanent {
        destination: String,
        message: String,
    },
}

impl DestinationError {
    pub fn is_transient(&self) -> bool {
        matches!(self, DestinationError::Transient { .. })
    }
}

/// Where a copied file lives remotely (enough to delete it again).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteObject {
    pub key: String,
    /// Destination-specific id, e.g. the CloudBase `cloud://` file id.
    #[serde(default)]
    pub remote_id: Option<String>,
    pub bytes: u64,
}

/// A place snapshots are copied to.
pub trait Destination: Send + Sync {
    /// The configured name (used in records and messages).
    fn name(&self) -> &str;
    /// Stores the local file `local` under `key`, completely or not at all as far as readers
    /// of the destination can tell, and checks the stored size.
    fn put_file<'a>(
        &'a self,
        key: &'a str,
        local: &'a Path,
    ) -> BoxFuture<'a, Result<RemoteObject, DestinationError>>;
    /// Deletes a copied object; an object already gone is not an error.
    fn delete<'a>(
        &'a self,
        object: &'a RemoteObject,
    ) -> BoxFuture<'a, Result<(), DestinationError>>;
}

/// The relative key of a file of the local snapshot tree under `root`.
pub fn key_for(root: &Path, file: &Path) -> Option<String> {
    let rel: PathBuf = file.strip_prefix(root).ok()?.to_path_buf();
    let parts: Vec<&str> = rel
        .components()
        .map(|c| c.as_os_str().to_str())
        .collect::<Option<Vec<_>>>()?;
    if parts.is_empty()
        || parts
            .iter()
            .any(|p| p.is_empty() || *p == ".." || *p == ".")
    {
        return None;
    }
    Some(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_relative_slash_paths_inside_the_root() {
        let root = Path::new("/b/snapshots");
        assert_eq!(
            key_for(root, Path::new("/b/snapshots/prod/orders/x.jsonl.zst")).as_deref(),
            Some("prod/orders/x.jsonl.zst")
        );
        assert_eq!(key_for(root, Path::new("/elsewhere/x")), None);
        assert_eq!(key_for(root, root), None);
    }
}
