//! S3-compatible object storage through the `object_store` crate. Files are streamed as a
//! multipart upload of 8 MiB parts, two in flight (flat memory whatever the size). Until the
//! upload is completed no object is visible at the key; a failed part or completion aborts
//! the upload (so the server drops the parts it holds — when it is reachable; a server that
//! died keeps nothing or lets the bucket's lifecycle rules clean up). The stored size is
//! checked with a HEAD afterwards.
//!
//! The parts are driven here rather than by `object_store::WriteMultipart`, whose `finish`
//! returns a failed part's error without aborting the upload.
//!
//! The crate's own request retries are kept short: an outage is the copy workflow's business
//! (durable, with long backoff), not something to wait out inside one step.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::stream::{FuturesUnordered, StreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{
    BackoffConfig, MultipartUpload, ObjectStore, PutPayload, RetryConfig, UploadPart,
};
use tokio::io::AsyncReadExt;

use super::{Destination, DestinationError, RemoteObject};

const PART_SIZE: usize = 8 * 1024 * 1024;
/// Parts uploading at once (memory: this many parts plus the one being read).
const PARTS_IN_FLIGHT: usize = 2;

pub struct S3Destination {
    name: String,
    prefix: String,
    store: Arc<dyn ObjectStore>,
}

/// Connection settings (the keys come from the environment variables the config names).
#[derive(Clone)]
pub struct S3Settings {
    pub bucket: String,
    pub prefix: String,
    pub endpoint: Option<String>,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub allow_http: bool,
}

impl std::fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Settings")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &"[redacted]")
            .field("secret_access_key", &"[redacted]")
            .finish()
    }
}

impl S3Destination {
    pub fn new(name: impl Into<String>, s: S3Settings) -> Result<Self, DestinationError> {
        let name = name.into();
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&s.bucket)
            .with_region(&s.region)
            .with_access_key_id(&s.access_key_id)
            .with_secret_access_key(&s.secret_access_key)
            .with_allow_http(s.allow_http)
            .with_retry(RetryConfig {
                backoff: BackoffConfig {
                    init_backoff: Duration::from_millis(100),
                    max_backoff: Duration::from_secs(2),
                    base: 2.0,
                },
                max_retries: 2,
                retry_timeout: Duration::from_secs(30),
            });
        if let Some(endpoint) = &s.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        let store = builder.build().map_err(|e| DestinationError::Permanent {
            destination: name.clone(),
            message: format!("invalid S3 settings: {e}"),
        })?;
        Ok(S3Destination {
            name,
            prefix: s.prefix.trim_matches('/').to_string(),
            store: Arc::new(store),
        })
    }

    fn path(&self, key: &str) -> ObjectPath {
        if self.prefix.is_empty() {
            ObjectPath::from(key)
        } else {
            ObjectPath::from(format!("{}/{key}", self.prefix))
        }
    }

    fn classify(&self, what: &str, e: object_store::Error) -> DestinationError {
        let message = format!("{what}: {e}");
        match e {
            object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. }
            | object_store::Error::InvalidPath { .. }
            | object_store::Error::NotSupported { .. } => DestinationError::Permanent {
                destination: self.name.clone(),
                message,
            },
            _ => DestinationError::Transient {
                destination: self.name.clone(),
                message,
            },
        }
    }

    async fn upload(&self, key: &str, local: &Path) -> Result<RemoteObject, DestinationError> {
        let path = self.path(key);
        let mut file = tokio::fs::File::open(local)
            .await
            .map_err(|e| self.read_error(local, e))?;
        let mut upload = self
            .store
            .put_multipart(&path)
            .await
            .map_err(|e| self.classify(&format!("starting upload of {path}"), e))?;
        let mut in_flight = FuturesUnordered::new();
        match self
            .send_parts(&mut file, local, &path, upload.as_mut(), &mut in_flight)
            .await
        {
            Ok(total) => match upload.complete().await {
                Ok(_) => self.check_size(&path, key, total).await,
                Err(e) => {
                    abort(upload, in_flight).await;
                    Err(self.classify(&format!("finishing upload of {path}"), e))
                }
            },
            Err(e) => {
                abort(upload, in_flight).await;
                Err(e)
            }
        }
    }

    /// Reads `file` in parts and uploads them, at most [`PARTS_IN_FLIGHT`] at once; returns
    /// the bytes sent once every part is stored. At least one (maybe empty) part is sent: S3
    /// completes no upload without one.
    async fn send_parts(
        &self,
        file: &mut tokio::fs::File,
        local: &Path,
        path: &ObjectPath,
        upload: &mut dyn MultipartUpload,
        in_flight: &mut FuturesUnordered<UploadPart>,
    ) -> Result<u64, DestinationError> {
        let part_failed = |e| self.classify(&format!("uploading {path}"), e);
        let mut total = 0u64;
        loop {
            let mut part = Vec::with_capacity(PART_SIZE);
            let n = (&mut *file)
                .take(PART_SIZE as u64)
                .read_to_end(&mut part)
                .await
                .map_err(|e| self.read_error(local, e))?;
            if n == 0 && total > 0 {
                break;
            }
            while in_flight.len() >= PARTS_IN_FLIGHT {
                if let Some(Err(e)) = in_flight.next().await {
                    return Err(part_failed(e));
                }
            }
            total += n as u64;
            in_flight.push(upload.put_part(PutPayload::from(part)));
            if n < PART_SIZE {
                break;
            }
        }
        while let Some(done) = in_flight.next().await {
            done.map_err(part_failed)?;
        }
        Ok(total)
    }

    fn read_error(&self, local: &Path, e: std::io::Error) -> DestinationError {
        DestinationError::Transient {
            destination: self.name.clone(),
            message: format!("reading {}: {e}", local.display()),
        }
    }

    async fn check_size(
        &self,
        path: &ObjectPath,
        key: &str,
        total: u64,
    ) -> Result<RemoteObject, DestinationError> {
        let head = self
            .store
            .head(path)
            .await
            .map_err(|e| self.classify(&format!("checking {path}"), e))?;
        if head.size != total {
            return Err(DestinationError::Transient {
                destination: self.name.clone(),
                message: format!(
                    "{path} is {} bytes after upload, expected {total}",
                    head.size
                ),
            });
        }
        Ok(RemoteObject {
            key: key.to_string(),
            remote_id: None,
            bytes: total,
        })
    }
}

/// Stops the parts still uploading and aborts the upload, so the server drops the parts it
/// holds. Best effort: the server may be the reason the upload failed; the error that made us
/// abort is the one reported.
async fn abort(mut upload: Box<dyn MultipartUpload>, in_flight: FuturesUnordered<UploadPart>) {
    drop(in_flight);
    if let Err(e) = upload.abort().await {
        tracing::debug!(error = %e, "aborting a failed multipart upload");
    }
}

impl Destination for S3Destination {
    fn name(&self) -> &str {
        &self.name
    }

    fn put_file<'a>(
        &'a self,
        key: &'a str,
        local: &'a Path,
    ) -> BoxFuture<'a, Result<RemoteObject, DestinationError>> {
        Box::pin(self.upload(key, local))
    }

    fn delete<'a>(
        &'a self,
        object: &'a RemoteObject,
    ) -> BoxFuture<'a, Result<(), DestinationError>> {
        Box::pin(async move {
            let path = self.path(&object.key);
            match self.store.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(self.classify(&format!("deleting {path}"), e)),
            }
        })
    }
}
