//! The upload body of a restore: the stored snapshot decrypted (when it is encrypted) and
//! decompressed on the fly and hashed as it streams, so no plaintext temporary file is written
//! and memory stays flat: the plaintext exists only in the chunks in flight to the upload. The hash and
//! size are checked against the manifest once the upload finished; a mismatch fails the
//! restore before anything is imported.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::archive::encrypt::Identities;
use crate::archive::{ArchiveError, SnapshotReader};
use crate::manifest::Manifest;

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

const CHUNK: usize = 256 * 1024;

/// What streamed through the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Streamed {
    pub bytes: u64,
    pub sha256: String,
}

#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("reading snapshot {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("opening snapshot: {0}")]
    Open(ArchiveError),
    #[error("reading snapshot {path}: the reader task failed: {message}")]
    Task { path: PathBuf, message: String },
    #[error("the upload stopped before the whole snapshot {path} was sent")]
    Incomplete { path: PathBuf },
}

/// A body for [`crate::client::CloudBaseClient::upload_file`] plus the task that feeds it.
pub struct DecompressedBody {
    pub body: reqwest::Body,
    reader: JoinHandle<Result<Option<Streamed>, StreamError>>,
    path: PathBuf,
}

impl DecompressedBody {
    /// Starts reading the snapshot at `path` (described by `manifest`; decrypted with
    /// `identities` if it is encrypted) on a blocking thread.
    pub fn open(
        path: &Path,
        manifest: &Manifest,
        identities: Option<&Identities>,
    ) -> Result<DecompressedBody, StreamError> {
        let mut decoder =
            SnapshotReader::open(path, manifest, identities).map_err(StreamError::Open)?;
        let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(4);
        let owned = path.to_path_buf();
        let reader = tokio::task::spawn_blocking(move || {
            let mut hasher = Sha256::new();
            let mut total = 0u64;
            loop {
                let mut buf = vec![0u8; CHUNK];
                let n = match decoder.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        let message = e.to_string();
                        let _ = tx.blocking_send(Err(e));
                        return Err(StreamError::Read {
                            path: owned,
                            source: std::io::Error::other(message),
                        });
                    }
                };
                buf.truncate(n);
                hasher.update(&buf);
                total += n as u64;
                if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                    // The upload gave up; its error is the one that matters.
                    return Ok(None);
                }
            }
            Ok(Some(Streamed {
                bytes: total,
                sha256: hex::encode(hasher.finalize()),
            }))
        });
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            let item = rx.recv().await?;
            // The HTTP body asks for chunk n once it has written chunk n-1 to the connection
            // (the reader runs ahead by the channel's capacity, so counting here, not there,
            // is what makes hit n mean "n-1 chunks sent"): part of the file is in the COS
            // POST, the request not finished. The repeat uploads the whole file again to the
            // same path.
            crate::faultpoint::hit("restore.mid_upload");
            Some((item, rx))
        });
        Ok(DecompressedBody {
            body: reqwest::Body::wrap_stream(stream),
            reader,
            path: path.to_path_buf(),
        })
    }

    /// Splits off the body; [`Finish::finish`] then reports what was streamed.
    pub fn into_parts(self) -> (reqwest::Body, Finish) {
        (
            self.body,
            Finish {
                reader: self.reader,
                path: self.path,
            },
        )
    }
}

/// Collects the reader's result after the upload.
pub struct Finish {
    reader: JoinHandle<Result<Option<Streamed>, StreamError>>,
    path: PathBuf,
}

impl Finish {
    pub async fn finish(self) -> Result<Streamed, StreamError> {
        match self.reader.await {
            Ok(Ok(Some(s))) => Ok(s),
            Ok(Ok(None)) => Err(StreamError::Incomplete { path: self.path }),
            Ok(Err(e)) => Err(e),
            Err(e) => Err(StreamError::Task {
                path: self.path,
                message: e.to_string(),
            }),
        }
    }
}
