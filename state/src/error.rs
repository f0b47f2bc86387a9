//! Typed errors of the engine and of its store.

use std::path::PathBuf;

use crate::types::{JobId, JobStatus};

/// Errors a [`crate::JobStore`] reports.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state store is locked by another process ({path}); stop the other tcb-backup process (daemon?) or use another state directory")]
    Locked { path: PathBuf, detail: String },
    #[error("state store I/O error: {0}")]
    Io(String),
    #[error("job {id}: stored record cannot be decoded ({reason}); it was quarantined")]
    Corrupt { id: JobId, reason: String },
    #[error("job {0} not found")]
    NotFound(JobId),
    #[error("job {id}: lease epoch {epoch} is stale (store has epoch {current}, status {status}); another attempt owns this job")]
    StaleEpoch {
        id: JobId,
        epoch: u64,
        current: u64,
        status: JobStatus,
    },
    #[error("job {id}: {message}")]
    InvalidState { id: JobId, message: String },
    #[error("encoding a value for the store failed: {0}")]
    Encode(String),
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        StoreError::Io(e.to_string())
    }
}

/// Errors of the [`crate::Engine`] API.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("state directory {path} is locked by another process; only one tcb-backup process may use it at a time (is a daemon running?)")]
    Locked { path: PathBuf },
    #[error(transparent)]
    Store(StoreError),
    #[error("job {0} not found")]
    NotFound(JobId),
    #[error("job {id} is {status}: {message}")]
    WrongStatus {
        id: JobId,
        status: JobStatus,
        message: &'static str,
    },
    #[error("job state of kind {kind} cannot be serialized: {message}")]
    Serialize { kind: String, message: String },
    #[error("record {key} in namespace {namespace} cannot be decoded: {message}")]
    KvDecode {
        namespace: String,
        key: String,
        message: String,
    },
    #[error("the engine's runner is already running in this process")]
    AlreadyRunning,
    #[error("engine runtime error: {0}")]
    Runtime(String),
}

impl From<StoreError> for EngineError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Locked { path, .. } => EngineError::Locked { path },
            StoreError::NotFound(id) => EngineError::NotFound(id),
            other => EngineError::Store(other),
        }
    }
}
