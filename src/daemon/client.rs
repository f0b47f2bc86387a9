//! Asking a running daemon: when the daemon holds the state store, read-only commands
//! (`snapshots`, `jobs`, `show`) get their data from its status listener instead.

use std::path::Path;
use std::time::Duration;

use tcb_state::{JobSummary, JobView};

use super::settings::StatusToken;
use crate::backup::listing::SnapshotListing;

#[derive(Debug, thiserror::Error)]
pub enum DaemonClientError {
    #[error("cannot ask the daemon: {0}")]
    Setup(String),
    #[error("cannot ask the daemon at {base}: {detail}")]
    Request { base: String, detail: String },
}

/// A client of the status listener named by a configuration's `[daemon]` section.
pub struct DaemonClient {
    base: String,
    token: Option<StatusToken>,
    http: reqwest::Client,
}

impl DaemonClient {
    /// From the configuration at `path` (its `listen` address and status token).
    pub fn from_config(path: &Path) -> Result<DaemonClient, DaemonClientError> {
        let (_, s) = super::backup::load_settings(path).map_err(DaemonClientError::Setup)?;
        if s.listen.port() == 0 {
            return Err(DaemonClientError::Setup(
                "[daemon] listen uses port 0, so its address is unknown".to_string(),
            ));
        }
        Self::new(&format!("http://{}", s.listen), s.status_token)
    }

    pub fn new(base: &str, token: Option<StatusToken>) -> Result<DaemonClient, DaemonClientError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| DaemonClientError::Setup(e.without_url().to_string()))?;
        Ok(DaemonClient {
            base: base.trim_end_matches('/').to_string(),
            token,
            http,
        })
    }

    /// `Ok(None)`: HTTP 404 — for one job, "no such job"; see [`Self::get_listing`].
    async fn get<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<Option<T>, DaemonClientError> {
        let err = |detail: String| DaemonClientError::Request {
            base: self.base.clone(),
            detail,
        };
        let mut req = self.http.get(format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.bearer_auth(&t.0);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| err(e.without_url().to_string()))?;
        match resp.status().as_u16() {
            200 => resp
                .json::<T>()
                .await
                .map(Some)
                .map_err(|e| err(format!("unreadable answer: {}", e.without_url()))),
            404 => Ok(None),
            401 => Err(err(
                "the status token was refused (set the [daemon] status_token_env variable)"
                    .to_string(),
            )),
            code => Err(err(format!("HTTP status {code}"))),
        }
    }

    /// A listing endpoint, which a daemon always serves (an empty list when there is nothing):
    /// a 404 means this daemon does not know the endpoint — another version — and passing
    /// that off as "nothing there" would show an empty catalog or job list.
    async fn get_listing<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<T, DaemonClientError> {
        self.get(path).await?.ok_or_else(|| DaemonClientError::Request {
            base: self.base.clone(),
            detail: format!(
                "it does not serve {path} (HTTP 404): is the running daemon another tcb-backup version? Restart it with this one"
            ),
        })
    }

    /// The catalog, newest first, optionally filtered.
    pub async fn snapshots(
        &self,
        env: Option<&str>,
        collection: Option<&str>,
    ) -> Result<Vec<SnapshotListing>, DaemonClientError> {
        let all: Vec<SnapshotListing> = self.get_listing("/api/catalog").await?;
        Ok(all
            .into_iter()
            .filter(|r| env.is_none_or(|e| r.record.manifest().env == e))
            .filter(|r| collection.is_none_or(|c| r.record.manifest().collection == c))
            .collect())
    }

    /// Active and failed jobs, or every job with `all`.
    pub async fn jobs(&self, all: bool) -> Result<Vec<JobSummary>, DaemonClientError> {
        let path = if all {
            "/api/jobs?all=true"
        } else {
            "/api/jobs?failed=true"
        };
        self.get_listing(path).await
    }

    pub async fn job(&self, id: u64) -> Result<Option<JobView>, DaemonClientError> {
        self.get(&format!("/api/jobs/{id}")).await
    }
}

/// Runs `fut` to completion from synchronous code inside the multi-threaded runtime.
pub fn block_on<F: std::future::Future>(fut: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(fut))
}
