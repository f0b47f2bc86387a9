//! Restore: putting a stored snapshot back into a CloudBase collection, as a durable workflow
//! kind (`restore.collection`) on the engine.
//!
//! Steps, each committed before the next runs (so `kill -9` anywhere resumes where it stopped):
//! verify the snapshot against its manifest (sha256, size, records) → check the target (a
//! non-empty collection needs upsert or `--force`; a missing one is created) → decompress and
//! upload the export to the target env's storage (`uploadfile` + COS POST) → start
//! `databasemigrateimport` → poll it → remove the uploaded file → report `record_success` /
//! `record_fail`.
//!
//! - [`plan`]: what a restore will do (`--dry-run` prints it), and the default target name
//! - [`workflow`]: the workflow kind and its persisted state
//! - [`setup`]: registering the workflow from the configuration
//! - [`upload`]: the streaming decompress-and-hash body for the upload

pub mod plan;
pub mod setup;
pub mod upload;
pub mod workflow;

pub use plan::{default_target_name, RestorePlan, RestoreRequest, TargetProbe};
pub use workflow::{
    ImportOutcome, PollPolicy, RestoreClients, RestorePhase, RestoreState, RestoreWorkflow,
    IMPORT_MARKS_NAMESPACE,
};
