//! S3-compatible object storage through the `object_store` crate. Files are streamed as a
//! multipart upload (flat memory whatever the size; a failed upload is aborted, so no partial
//! object becomes visible) and the stored size is checked with a HEAD afterwards.
//!
//! The crate's own request retries are kept short: an outage is the copy workflow's business
//! (durable, with long backoff), not something to wait out inside one step.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{BackoffConfig, ObjectStore, RetryConfig, WriteMultipart};
use tokio::io::AsyncReadExt;

use super::{Destination, DestinationError, RemoteObject};

const PART_SIZE: usize = 8 * 1024 * 1024;

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
        let io = |e: std::io::Error| DestinationError::Transient {
            destination: self.name.clone(),
            message: format!("reading {}: {e}", local.display()),
        };
        let mut file = tokio::fs::File::open(local).await.map_err(io)?;
        let upload = self
            .store
            .put_multipart(&path)
            .await
            .map_err(|e| self.classify(&format!("starting upload of {path}"), e))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        let mut buf = vec![0u8; 1024 * 1024];
        let mut total = 0u64;
        loop {
            let n = match file.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => {
                    let _ = writer.abort().await;
                    return Err(io(e));
                }
            };
            if let Err(e) = writer.wait_for_capacity(2).await {
                let _ = writer.abort().await;
                return Err(self.classify(&format!("uploading {path}"), e));
            }
            writer.write(buf.get(..n).unwrap_or_default());
            total += n as u64;
        }
        writer
            .finish()
            .await
            .map_err(|e| self.classify(&format!("finishing upload of {path}"), e))?;
        let head = self
            .store
            .head(&path)
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
