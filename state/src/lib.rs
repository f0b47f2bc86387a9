//! tcb-state: a durable workflow engine on sled. It knows nothing of WeChat or backups.
//!
//! A workflow kind ([`Workflow`]) is a serde state plus an async step that performs one side
//! effect and returns a [`Transition`]. The [`Engine`] persists every transition atomically and
//! durably (sled transaction + flush) before the job's next step, runs steps under global and
//! per-kind limits with leases, retries with exponential backoff and full jitter, fans out to
//! child jobs, and resumes interrupted jobs after a crash. See `docs/engine.md`.

pub mod bench;
mod clock;
mod engine;
mod error;
mod kv;
pub mod retry;
mod sled_store;
mod store;
mod types;
mod workflow;

pub use clock::{Clock, ManualClock, SleepFuture, SystemClock};
pub use engine::{Engine, EngineOptions, WeakEngine};
pub use error::{EngineError, StoreError};
pub use kv::KvNamespace;
pub use sled_store::SledJobStore;
pub use store::{Changed, Commit, DueJob, JobRecord, JobStore, Lease, NewJob, RECORD_FORMAT};
pub use types::{
    ChildOutcome, ChildSpec, HistoryEntry, HistoryEvent, JobEvent, JobFilter, JobId, JobStatus,
    JobSummary, JobView, KindLimits, QuarantineEntry, RetryPolicy, StepContext, StepError,
    SubmitOptions, Transition,
};
pub use workflow::Workflow;
