//! The engine's public vocabulary: job ids and statuses, step errors and transitions, retry and
//! concurrency settings, and the read-only views returned by queries.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

/// A job's identifier; unique within one state directory, never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct JobId(pub u64);

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for JobId {
    type Err = std::num::ParseIntError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.trim().parse::<u64>().map(JobId)
    }
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum JobStatus {
    /// Runnable at its due time (new, after a `Next`, or after a retry was scheduled).
    Queued,
    /// A step is in flight (holds a lease).
    Running,
    /// Polling: runs again at its due time.
    Waiting,
    /// Spawned children; runs again once every child is terminal.
    WaitingForChildren,
    Succeeded,
    /// Completed, but at least one child did not succeed. Never reported as success.
    PartiallyFailed,
    Failed,
    Cancelled,
}

impl JobStatus {
    /// True for the four final statuses; a terminal job never runs another step.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobStatus::Succeeded
                | JobStatus::PartiallyFailed
                | JobStatus::Failed
                | JobStatus::Cancelled
        )
    }

    /// Lower-case name, as shown by the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Waiting => "waiting",
            JobStatus::WaitingForChildren => "waiting-for-children",
            JobStatus::Succeeded => "succeeded",
            JobStatus::PartiallyFailed => "partially-failed",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a step did not produce a transition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum StepError {
    /// Worth trying again later (network, throttling, a timeout). `retry_after` is a lower bound
    /// on the delay, e.g. from a server's hint.
    #[error("{message}")]
    Retryable {
        message: String,
        retry_after: Option<Duration>,
    },
    /// Trying again cannot help (bad configuration, invalid request): the job fails now.
    #[error("{message}")]
    Permanent { message: String },
}

impl StepError {
    pub fn retryable(message: impl Into<String>) -> Self {
        StepError::Retryable {
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn retry_after(message: impl Into<String>, after: Duration) -> Self {
        StepError::Retryable {
            message: message.into(),
            retry_after: Some(after),
        }
    }

    pub fn permanent(message: impl Into<String>) -> Self {
        StepError::Permanent {
            message: message.into(),
        }
    }

    pub fn is_retryable(&self) -> bool {
        matches!(self, StepError::Retryable { .. })
    }

    pub fn message(&self) -> &str {
        match self {
            StepError::Retryable { message, .. } | StepError::Permanent { message } => message,
        }
    }
}

/// What a successful step asks the engine to commit.
#[derive(Debug, Clone, PartialEq)]
pub enum Transition<S> {
    /// Commit `S` and run the next step as soon as a slot is free.
    Next(S),
    /// Commit `state` and run again at `at` (polling).
    WaitUntil { state: S, at: SystemTime },
    /// Atomically commit `state` and create the children; the step runs again with `state` once
    /// every child is terminal, and sees their outcomes in [`StepContext::children`].
    SpawnChildren { state: S, children: Vec<ChildSpec> },
    /// Terminal success. If any child of this job did not succeed, the engine records
    /// `PartiallyFailed` instead: a partial failure is never reported as success.
    Complete { state: S, output: serde_json::Value },
    /// Terminal `PartiallyFailed`, chosen by the workflow.
    CompletePartial { state: S, output: serde_json::Value },
}

/// A child job to create with [`Transition::SpawnChildren`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChildSpec {
    pub kind: String,
    pub initial_state: serde_json::Value,
    pub label: String,
    /// Schema version of `initial_state`; `None` means "the version of the registered kind".
    pub schema_version: Option<u32>,
}

impl ChildSpec {
    /// A child by kind name; its schema version is the registered kind's.
    pub fn new(
        kind: impl Into<String>,
        initial_state: serde_json::Value,
        label: impl Into<String>,
    ) -> ChildSpec {
        ChildSpec {
            kind: kind.into(),
            initial_state,
            label: label.into(),
            schema_version: None,
        }
    }

    /// A child of workflow kind `W`, its state serialized now.
    pub fn of<W: crate::Workflow>(
        initial: &W::State,
        label: impl Into<String>,
    ) -> Result<ChildSpec, serde_json::Error> {
        Ok(ChildSpec {
            kind: W::KIND.to_string(),
            initial_state: serde_json::to_value(initial)?,
            label: label.into(),
            schema_version: Some(W::SCHEMA_VERSION),
        })
    }
}

/// How one child ended, as its parent sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChildOutcome {
    pub id: JobId,
    pub kind: String,
    pub label: String,
    pub status: JobStatus,
    pub output: Option<serde_json::Value>,
    pub error: Option<String>,
}

/// What a step knows about its job besides the state.
#[derive(Debug, Clone)]
pub struct StepContext {
    pub job_id: JobId,
    /// 1 for the first try of this step, 2 for the first retry, ...
    pub attempt: u32,
    pub parent: Option<JobId>,
    pub label: String,
    /// The engine clock's time when the step started.
    pub now: SystemTime,
    /// Every child this job ever spawned (all terminal when the step runs), in spawn order.
    pub children: Vec<ChildOutcome>,
}

impl StepContext {
    /// True when every child succeeded (also true without children).
    pub fn all_children_succeeded(&self) -> bool {
        self.children
            .iter()
            .all(|c| c.status == JobStatus::Succeeded)
    }
}

/// Per-kind retry policy for retryable step errors.
///
/// The delay before retry `n` (n = 1 after the first failure) is drawn uniformly from
/// `[0, min(max_interval, initial_interval * multiplier^(n-1))]` ("full jitter"), and is never
/// less than the error's `retry_after`. See `retry.rs` for how the `backoff` crate computes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetryPolicy {
    pub initial_interval: Duration,
    pub multiplier: f64,
    pub max_interval: Duration,
    /// Attempts of one step in total, the first included (1 = never retry).
    pub max_attempts: u32,
    /// Give up when the next retry would start more than this long after the step first failed.
    pub max_elapsed: Option<Duration>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial_interval: Duration::from_secs(1),
            multiplier: 2.0,
            max_interval: Duration::from_secs(60),
            max_attempts: 8,
            max_elapsed: Some(Duration::from_secs(15 * 60)),
        }
    }
}

/// Concurrency limit of one workflow kind (on top of the engine's global limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KindLimits {
    pub max_concurrent: usize,
}

impl KindLimits {
    pub fn new(max_concurrent: usize) -> Self {
        KindLimits {
            max_concurrent: max_concurrent.max(1),
        }
    }
}

impl Default for KindLimits {
    fn default() -> Self {
        KindLimits {
            max_concurrent: usize::MAX,
        }
    }
}

/// Options of [`crate::Engine::submit`].
#[derive(Debug, Clone, Default)]
pub struct SubmitOptions {
    /// Human-readable name shown in listings ("prod-1/orders").
    pub label: String,
    /// Links the job under a parent for listings (the parent does not wait for it; use
    /// `Transition::SpawnChildren` for fan-out).
    pub parent: Option<JobId>,
    /// A second submit with the same key returns the first job's id instead of a new job.
    pub dedupe_key: Option<String>,
    /// Do not start before this time.
    pub run_at: Option<SystemTime>,
}

impl SubmitOptions {
    pub fn label(label: impl Into<String>) -> Self {
        SubmitOptions {
            label: label.into(),
            ..Default::default()
        }
    }
}

/// Filter of [`crate::Engine::list`]; empty fields match everything.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    pub statuses: Vec<JobStatus>,
    pub kind: Option<String>,
    pub parent: Option<JobId>,
    /// Only jobs that are not terminal (served from the active index, no full scan).
    pub active_only: bool,
    pub limit: Option<usize>,
}

/// One line of a job listing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSummary {
    pub id: JobId,
    pub kind: String,
    pub label: String,
    pub status: JobStatus,
    pub parent: Option<JobId>,
    pub created_at: SystemTime,
    pub updated_at: SystemTime,
    pub due_at: Option<SystemTime>,
    /// Failed attempts of the current step so far (0 after any progress).
    pub attempt: u32,
    pub last_error: Option<String>,
}

/// What happened in one history entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum HistoryEvent {
    Submitted,
    /// A runner took the lease and started a step.
    StepStarted {
        epoch: u64,
    },
    /// The step returned `Next`.
    Advanced,
    Waiting {
        until_ms: u64,
    },
    SpawnedChildren {
        children: Vec<JobId>,
    },
    /// The last child finished; the job is runnable again.
    ChildrenDone,
    RetryScheduled {
        error: String,
        delay_ms: u64,
    },
    Succeeded,
    PartiallyFailed {
        reason: String,
    },
    Failed {
        error: String,
    },
    CancelRequested,
    Cancelled,
    /// Found `Running` when the store was opened: the process died mid-step.
    Recovered {
        recoveries: u32,
    },
    /// `retry()` restarted a failed job.
    Restarted,
    /// `wake()` made a waiting job due before its time (what it waited for happened).
    Woken,
}

/// One entry of a job's append-only history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// 0, 1, 2, ... without gaps.
    pub seq: u64,
    pub at: SystemTime,
    /// Status after this entry.
    pub status: JobStatus,
    /// Failed attempts of the current step so far, when this happened.
    pub attempt: u32,
    pub event: HistoryEvent,
}

/// A job with its full history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobView {
    pub summary: JobSummary,
    pub schema_version: u32,
    pub state: serde_json::Value,
    pub output: Option<serde_json::Value>,
    pub children: Vec<JobId>,
    pub recoveries: u32,
    pub epoch: u64,
    pub history: Vec<HistoryEntry>,
}

impl JobView {
    pub fn id(&self) -> JobId {
        self.summary.id
    }
    pub fn status(&self) -> JobStatus {
        self.summary.status
    }
}

/// A committed change, broadcast for progress UIs. Receivers that lag miss events (tokio
/// broadcast semantics); re-read the job if that matters.
#[derive(Debug, Clone, PartialEq)]
pub struct JobEvent {
    pub id: JobId,
    pub kind: String,
    pub label: String,
    pub status: JobStatus,
    pub entry: HistoryEntry,
}

/// A record moved aside because it could not be decoded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuarantineEntry {
    pub id: JobId,
    pub reason: String,
    pub at: SystemTime,
    /// The undecodable bytes, lossily as text.
    pub raw: String,
}
