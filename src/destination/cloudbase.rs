//! The env's own CloudBase storage as a destination (what the original backup recipe did):
//! `uploadfile` + COS POST under `<prefix>/<key>`, deleted with `batchdeletefile` by file id.

use std::path::Path;

use futures_util::future::BoxFuture;

use super::{Destination, DestinationError, RemoteObject};
use crate::client::{CloudBaseClient, ErrorClass};

pub struct CloudBaseStorage {
    name: String,
    client: CloudBaseClient,
    env: String,
    prefix: String,
}

impl CloudBaseStorage {
    pub fn new(
        name: impl Into<String>,
        client: CloudBaseClient,
        env: impl Into<String>,
        prefix: impl Into<String>,
    ) -> Self {
        CloudBaseStorage {
            name: name.into(),
            client,
            env: env.into(),
            prefix: prefix.into().trim_matches('/').to_string(),
        }
    }

    fn error(&self, what: &str, e: crate::client::ApiError) -> DestinationError {
        let message = format!("{what}: {e}");
        match e.class() {
            ErrorClass::Transient | ErrorClass::RefreshToken => DestinationError::Transient {
                destination: self.name.clone(),
                message,
            },
            _ => DestinationError::Permanent {
                destination: self.name.clone(),
                message,
            },
        }
    }

    async fn upload(&self, key: &str, local: &Path) -> Result<RemoteObject, DestinationError> {
        let storage_path = format!("{}/{key}", self.prefix);
        let io = |e: std::io::Error| DestinationError::Transient {
            destination: self.name.clone(),
            message: format!("reading {}: {e}", local.display()),
        };
        let file = tokio::fs::File::open(local).await.map_err(io)?;
        let len = file.metadata().await.map_err(io)?.len();
        let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(file));
        let file_id = self
            .client
            .upload_file(&self.env, &storage_path, body, len)
            .await
            .map_err(|e| self.error(&format!("uploading {storage_path} to env {}", self.env), e))?;
        Ok(RemoteObject {
            key: key.to_string(),
            remote_id: Some(file_id),
            bytes: len,
        })
    }
}

impl Destination for CloudBaseStorage {
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
            let Some(file_id) = &object.remote_id else {
                return Err(DestinationError::Permanent {
                    destination: self.name.clone(),
                    message: format!("{}: no file id recorded", object.key),
                });
            };
            let results = self
                .client
                .batch_delete_file(&self.env, std::slice::from_ref(file_id))
                .await
                .map_err(|e| self.error(&format!("deleting {file_id}"), e))?;
            // -503003: already gone.
            match results
                .iter()
                .find(|r| r.status != 0 && r.status != -503003)
            {
                None => Ok(()),
                Some(r) => Err(DestinationError::Transient {
                    destination: self.name.clone(),
                    message: format!("deleting {file_id}: status {} {}", r.status, r.errmsg),
                }),
            }
        })
    }
}

/// The `cloudbase` kind of the configuration: each snapshot goes to the storage of its own env
/// (the first part of its key, `<env>/<collection>/<file>`), under one prefix.
pub struct CloudBaseByEnv {
    name: String,
    prefix: String,
    envs: std::collections::HashMap<String, CloudBaseStorage>,
}

impl CloudBaseByEnv {
    pub fn new(name: impl Into<String>, prefix: impl Into<String>) -> Self {
        CloudBaseByEnv {
            name: name.into(),
            prefix: prefix.into(),
            envs: std::collections::HashMap::new(),
        }
    }

    /// Serves `env` with `client` (the client of the env's app).
    pub fn add_env(&mut self, env: &str, client: CloudBaseClient) {
        self.envs.insert(
            env.to_string(),
            CloudBaseStorage::new(self.name.clone(), client, env, self.prefix.clone()),
        );
    }

    fn storage(&self, key: &str) -> Result<&CloudBaseStorage, DestinationError> {
        let env = key.split('/').next().unwrap_or_default();
        self.envs
            .get(env)
            .ok_or_else(|| DestinationError::Permanent {
                destination: self.name.clone(),
                message: format!("{key}: env {env:?} is not served by this destination"),
            })
    }
}

impl Destination for CloudBaseByEnv {
    fn name(&self) -> &str {
        &self.name
    }

    fn put_file<'a>(
        &'a self,
        key: &'a str,
        local: &'a Path,
    ) -> BoxFuture<'a, Result<RemoteObject, DestinationError>> {
        match self.storage(key) {
            Ok(s) => s.put_file(key, local),
            Err(e) => Box::pin(async move { Err(e) }),
        }
    }

    fn delete<'a>(
        &'a self,
        object: &'a RemoteObject,
    ) -> BoxFuture<'a, Result<(), DestinationError>> {
        match self.storage(&object.key) {
            Ok(s) => s.delete(object),
            Err(e) => Box::pin(async move { Err(e) }),
        }
    }
}
