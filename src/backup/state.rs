//! The persisted states of the backup workflows.
//!
//! `backup.collection` (one job per app+env+collection) walks
//! `Start → TokenAcquired → ExportCreated → Polling → Downloaded → Recorded`; failure and
//! cancellation are the engine's terminal statuses, not states here. What is persisted is exactly
//! what a restart needs: the export job id is committed (ExportCreated) before the first status
//! call, so a resumed job re-polls that export and never creates a second one. Tokens are never
//! part of a state: TokenAcquired records only that one was obtained and until when. The file
//! URL is not persisted either (it is a signed, expiring link): it is re-queried when needed.
//!
//! `backup.run` is the parent: it discovers the collections, spawns one child per collection and
//! completes with each child's outcome.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::manifest::ExportFileType;

use super::progress::Target;

/// What one `backup.collection` job backs up. Fixed when the job is submitted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CollectionSpec {
    pub target: Target,
    /// The export query exactly as sent (`db.collection("NAME").get()` unless overridden).
    pub query: String,
    pub file_type: ExportFileType,
    /// Also add a document describing the snapshot to this collection of the same env
    /// (`db_back_info` style); None = off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record_collection: Option<String>,
}

/// A `backup.collection` job's state: its spec plus the phase it reached.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CollectionState {
    pub spec: CollectionSpec,
    /// When this collection's backup started (first step), recorded in the manifest.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub started_at: Option<OffsetDateTime>,
    pub phase: Phase,
}

impl CollectionState {
    pub fn new(spec: CollectionSpec) -> Self {
        CollectionState {
            spec,
            started_at: None,
            phase: Phase::Start,
        }
    }
}

/// The export job on the server, once created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportRef {
    /// The server's migrate job id.
    pub job_id: u64,
    /// Where the server writes the export in the env's cloud storage.
    pub file_path: String,
    /// When the export was created; names the snapshot file and measures its duration.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// Bookkeeping of the poll loop, persisted with every WaitUntil so a restart keeps its cadence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PollProgress {
    /// Status calls made so far.
    pub polls: u32,
    /// Wait before the previous call, in milliseconds (None before the first call).
    pub last_wait_ms: Option<u64>,
    /// Last status string seen ("waiting", "reading", ...), None before the first call.
    pub last_status: Option<String>,
    pub last_records: u64,
    /// When the status or record count last changed (the stall watchdog's reference).
    #[serde(with = "time::serde::rfc3339")]
    pub last_change_at: OffsetDateTime,
    /// When the job was last seen still running (to estimate its true duration).
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_running_at: Option<OffsetDateTime>,
    /// Duration (ms) of an earlier export of the same collection, planning the first poll.
    pub history_ms: Option<u64>,
    /// Set once a gap between two observations of the export was too long to measure across
    /// (`PollPolicy::interrupts_timing`: a downtime, a clock jump): the snapshot then records
    /// no export duration. Absent in stores written before it: false.
    #[serde(default)]
    pub timing_interrupted: bool,
}

/// The stored snapshot, once downloaded and verified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredFile {
    /// The data file (`…/<UTC time>-<job_id>.jsonl.zst`).
    pub path: String,
    /// The manifest beside it.
    pub manifest_path: String,
    /// Size of the export as downloaded.
    pub bytes: u64,
    pub bytes_stored: u64,
    /// sha256 of the export as downloaded.
    pub sha256: String,
    pub sha256_stored: String,
    pub records: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub finished_at: OffsetDateTime,
    /// Estimated moment the server finished the export.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub export_ready_at: Option<OffsetDateTime>,
    /// How the data file was encrypted, if it was (decided when it was written, so a config
    /// change before the record step cannot mislabel it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<crate::manifest::ManifestEncryption>,
}

/// The phases of `backup.collection`, named as in the spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state")]
pub enum Phase {
    Start,
    /// A valid token exists until `token_expires_at` (the token itself is never stored).
    TokenAcquired {
        #[serde(with = "time::serde::rfc3339")]
        token_expires_at: OffsetDateTime,
        /// Set when the job came back here because its export (this server job id) failed
        /// on the server and is being retried with a new one. Absent in stores written before
        /// the field existed (serde default), which decode as a first attempt.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        replaces_failed_export: Option<u64>,
    },
    /// The export job exists on the server; committed before any status call.
    ExportCreated {
        export: ExportRef,
    },
    /// Waiting for the export to finish.
    Polling {
        export: ExportRef,
        poll: PollProgress,
    },
    /// The verified file is on disk (data file renamed into place).
    Downloaded {
        export: ExportRef,
        file: StoredFile,
    },
    /// Manifest written and catalog entry recorded: done.
    Recorded {
        export: ExportRef,
        file: StoredFile,
        snapshot_id: String,
    },
}

impl Phase {
    /// The snake_case name shown in progress output and `jobs`.
    pub fn name(&self) -> &'static str {
        match self {
            Phase::Start => "start",
            Phase::TokenAcquired { .. } => "token_acquired",
            Phase::ExportCreated { .. } => "export_created",
            Phase::Polling { .. } => "polling",
            Phase::Downloaded { .. } => "downloaded",
            Phase::Recorded { .. } => "recorded",
        }
    }

    pub fn export(&self) -> Option<&ExportRef> {
        match self {
            Phase::Start | Phase::TokenAcquired { .. } => None,
            Phase::ExportCreated { export }
            | Phase::Polling { export, .. }
            | Phase::Downloaded { export, .. }
            | Phase::Recorded { export, .. } => Some(export),
        }
    }
}

/// What a `backup.run` covers: an app/env/collection selection, resolved when it starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSelection {
    /// Only these envs (empty = all configured).
    pub envs: Vec<String>,
    /// Only these collections (empty = all configured or discovered).
    pub collections: Vec<String>,
}

/// The `backup.run` job's state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state")]
pub enum RunState {
    /// Resolve the selection into collections (discovery through the API where configured).
    Start { selection: RunSelection },
    /// Children spawned; the step runs again once all are terminal.
    Spawned {
        selection: RunSelection,
        targets: Vec<CollectionSpec>,
        /// Discovery problems (an env whose listing failed): they count as failures.
        problems: Vec<String>,
    },
}

/// The output of a finished `backup.collection` job (the engine stores it with the job).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CollectionOutput {
    pub target: Target,
    pub snapshot_id: String,
    pub export_job_id: u64,
    pub path: String,
    pub records: u64,
    pub bytes: u64,
    pub bytes_stored: u64,
    /// Set when the export was unchanged since that snapshot, whose data file it shares.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_reused_from: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_and_never_carry_a_token() {
        let spec = CollectionSpec {
            target: Target {
                appid: "wx1".into(),
                env: "prod".into(),
                collection: "orders".into(),
            },
            query: "db.collection(\"orders\").get()".into(),
            file_type: ExportFileType::Json,
            record_collection: None,
        };
        let mut st = CollectionState::new(spec);
        st.phase = Phase::TokenAcquired {
            token_expires_at: OffsetDateTime::UNIX_EPOCH,
            replaces_failed_export: None,
        };
        let json = serde_json::to_string(&st).unwrap();
        assert!(json.contains("\"state\":\"TokenAcquired\""));
        assert!(!json.contains("access_token"));
        assert!(!json.contains("replaces_failed_export"), "{json}");
        let back: CollectionState = serde_json::from_str(&json).unwrap();
        assert_eq!(back, st);

        st.phase = Phase::TokenAcquired {
            token_expires_at: OffsetDateTime::UNIX_EPOCH,
            replaces_failed_export: Some(1234),
        };
        let json = serde_json::to_string(&st).unwrap();
        assert!(json.contains("\"replaces_failed_export\":1234"), "{json}");
        let back: CollectionState = serde_json::from_str(&json).unwrap();
        assert_eq!(back, st);
    }

    #[test]
    fn a_token_acquired_state_of_an_older_store_still_decodes() {
        let old = r#"{"spec":{"target":{"appid":"wx1","env":"prod","collection":"orders"},
            "query":"db.collection(\"orders\").get()","file_type":"json"},
            "started_at":"2026-12-01T00:00:00Z",
            "phase":{"state":"TokenAcquired","token_expires_at":"2026-12-01T02:00:00Z"}}"#;
        let st: CollectionState = serde_json::from_str(old).unwrap();
        assert!(matches!(
            st.phase,
            Phase::TokenAcquired {
                replaces_failed_export: None,
                ..
            }
        ));
    }
}
