//! Progress reporting from the backup workflow to whatever displays it (terminal bars, plain
//! lines, JSON lines, nothing). The workflow only calls [`ProgressSink::report`]; it never knows
//! how the events are shown.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Which collection of which app/env an event or job is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Target {
    pub appid: String,
    pub env: String,
    pub collection: String,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.env, self.collection)
    }
}

/// One thing worth showing about a collection's backup.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ProgressEvent {
    /// The workflow entered a new phase (`token_acquired`, `export_created`, `polling`,
    /// `downloading`, `downloaded`, `recorded`).
    Phase {
        target: Target,
        job: u64,
        phase: &'static str,
        export_job_id: Option<u64>,
        detail: Option<String>,
    },
    /// Bytes of the export file received so far.
    Bytes {
        target: Target,
        job: u64,
        bytes: u64,
        total: Option<u64>,
    },
    /// A step failed; `retrying` says whether the engine will try again.
    Problem {
        target: Target,
        job: u64,
        retrying: bool,
        message: String,
    },
}

impl ProgressEvent {
    pub fn target(&self) -> &Target {
        match self {
            ProgressEvent::Phase { target, .. }
            | ProgressEvent::Bytes { target, .. }
            | ProgressEvent::Problem { target, .. } => target,
        }
    }
}

/// Receives progress events. Implementations must be cheap and never block for long: they are
/// called from inside workflow steps.
pub trait ProgressSink: Send + Sync {
    fn report(&self, event: ProgressEvent);
}

/// Discards every event.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl ProgressSink for NoProgress {
    fn report(&self, _event: ProgressEvent) {}
}

pub type SharedProgress = Arc<dyn ProgressSink>;
