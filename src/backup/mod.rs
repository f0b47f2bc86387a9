//! The backup workflow end to end: per-collection jobs (`backup.collection`) walking
//! token → export → poll → verified download → manifest + catalog, fanned out by a run job
//! (`backup.run`), on the durable engine `tcb-state`.
//!
//! - `state`: the persisted states (what a restart needs, never a token)
//! - `collection`, `run`: the two workflows
//! - `poll`: the adaptive poll schedule; `errors`: client error → step error
//! - `plan`: which collections a run covers; `setup`: configuration → runtime pieces
//! - `catalog_store`: the snapshot catalog in the store; `report`: run outcomes
//! - `service`: open a store and drive runs (used by the CLI and the tests)
//! - `progress`: events for whatever displays progress

pub mod catalog_store;
pub mod collection;
pub mod errors;
pub mod listing;
pub mod plan;
pub mod poll;
pub mod progress;
pub mod report;
pub mod run;
pub mod service;
pub mod settings;
pub mod setup;
pub mod slots;
pub mod state;
pub mod unchanged;

pub use catalog_store::{SnapshotCatalog, SnapshotRecord};
pub use collection::CollectionWorkflow;
pub use plan::{BackupPlan, CollectionSelection, PlanApp, PlanEnv};
pub use poll::PollPolicy;
pub use progress::{NoProgress, ProgressEvent, ProgressSink, Target};
pub use report::{CollectionRow, RunReport};
pub use run::RunWorkflow;
pub use service::{BackupService, Concurrency, DriveOutcome};
pub use settings::{AppClients, WorkflowSettings};
pub use state::{CollectionSpec, CollectionState, Phase, RunSelection, RunState};
