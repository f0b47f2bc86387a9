//! What a restore will do, decided before anything is submitted: source snapshot, target env
//! and collection, conflict mode, and whether the target allows it. `--dry-run` prints this
//! plan and stops; a real run turns it into the workflow's initial state.

use std::fmt;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::catalog::CatalogEntry;
use crate::client::ConflictMode;
use crate::config::AppConfig;
use crate::naming;

use super::workflow::{RestorePhase, RestoreState};

/// What the operator asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreRequest {
    /// Target app; `None` = the snapshot's own app.
    pub appid: Option<String>,
    /// Target env; `None` = the snapshot's own env.
    pub env: Option<String>,
    /// Target collection; `None` = `<collection>_restored_<UTC time>`.
    pub to_collection: Option<String>,
    pub mode: ConflictMode,
    pub stop_on_error: bool,
    /// Allow inserting into a non-empty collection.
    pub force: bool,
    /// The age identity file that decrypts an encrypted snapshot (`--identity` or the
    /// config's `encryption.identity_file`).
    pub identity_file: Option<std::path::PathBuf>,
}

impl Default for RestoreRequest {
    fn default() -> Self {
        RestoreRequest {
            appid: None,
            env: None,
            to_collection: None,
            mode: ConflictMode::Insert,
            stop_on_error: false,
            force: false,
            identity_file: None,
        }
    }
}

/// What is known about the target collection before the restore (from `databasecollectionget`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TargetProbe {
    Missing,
    Exists {
        documents: u64,
    },
    /// Not looked up (dry run without API access).
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("target collection: {0}")]
    InvalidTarget(naming::NameError),
    #[error("target env: {0}")]
    InvalidEnv(naming::NameError),
    #[error(
        "snapshot {snapshot} is encrypted (age, to {recipients}): restoring it needs the identity file; pass --identity FILE or set encryption.identity_file in the config"
    )]
    NeedsIdentity {
        snapshot: String,
        recipients: String,
    },
    #[error(
        "env {env} is not an env of app {appid} in the configuration (its envs: {envs}): a snapshot is restored into an env of its own app; pick one of those with --env, or add the env to the app's [[apps.envs]]"
    )]
    EnvNotInApp {
        env: String,
        appid: String,
        envs: String,
    },
    #[error(
        "target collection {env}/{collection} already holds {documents} documents: restoring would mix them with the snapshot; use --mode upsert (replace documents with the same _id) or --force (insert; duplicate _ids fail), or pick another --to-collection"
    )]
    TargetNotEmpty {
        env: String,
        collection: String,
        documents: u64,
    },
}

/// A restore about to happen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RestorePlan {
    pub snapshot_id: String,
    pub data_path: std::path::PathBuf,
    pub records: u64,
    pub bytes_raw: u64,
    pub appid: String,
    pub env: String,
    pub collection: String,
    pub mode: ConflictMode,
    pub stop_on_error: bool,
    pub force: bool,
    pub target: TargetProbe,
    /// Where the decompressed export is uploaded in the target env's storage.
    pub storage_path: String,
    /// Whether the snapshot is encrypted (it is decrypted while it streams to the upload).
    pub encrypted: bool,
    /// The identity file that decrypts it (a path only; the key is read when needed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity_file: Option<std::path::PathBuf>,
}

/// `<collection>_restored_<UTC time>`, shortened on the collection side if the result would
/// be longer than a valid name.
pub fn default_target_name(collection: &str, now: OffsetDateTime) -> String {
    let suffix = format!("_restored_{}", naming::format_snapshot_time(now));
    let room = naming::MAX_NAME_BYTES.saturating_sub(suffix.len());
    let mut base = collection.to_string();
    while base.len() > room {
        base.pop();
    }
    format!("{base}{suffix}")
}

impl RestorePlan {
    /// Plans restoring `entry`; `now` names the default target and the upload path.
    pub fn new(
        entry: &CatalogEntry,
        req: &RestoreRequest,
        now: OffsetDateTime,
    ) -> Result<RestorePlan, PlanError> {
        let m = &entry.manifest;
        if let (Some(e), None) = (&m.encryption, &req.identity_file) {
            return Err(PlanError::NeedsIdentity {
                snapshot: entry.id.clone(),
                recipients: e.recipients.join(", "),
            });
        }
        let env = req.env.clone().unwrap_or_else(|| m.env.clone());
        naming::validate_env_id(&env).map_err(PlanError::InvalidEnv)?;
        let collection = match &req.to_collection {
            Some(c) => c.clone(),
            None => default_target_name(&m.collection, now),
        };
        naming::validate_collection_name(&collection).map_err(PlanError::InvalidTarget)?;
        let ext = match m.file_type {
            crate::manifest::ExportFileType::Json => "json",
            crate::manifest::ExportFileType::Csv => "csv",
        };
        let storage_path = format!(
            "tcb-backup-restore/{}/{}-{}-{}.{ext}",
            collection,
            m.collection,
            m.export_job_id,
            naming::format_snapshot_time(now)
        );
        Ok(RestorePlan {
            snapshot_id: entry.id.clone(),
            data_path: entry.data_path.clone(),
            records: m.records,
            bytes_raw: m.bytes_raw,
            appid: req.appid.clone().unwrap_or_else(|| m.appid.clone()),
            env,
            collection,
            mode: req.mode,
            stop_on_error: req.stop_on_error,
            force: req.force,
            target: TargetProbe::Unknown,
            storage_path,
            encrypted: m.encryption.is_some(),
            identity_file: m.encryption.as_ref().and(req.identity_file.clone()),
        })
    }

    /// The target env must be one the configuration lists for the target app: any other env
    /// would only fail later, at the API, once the snapshot was verified. An app missing from
    /// the configuration is left to the caller, which needs its client anyway.
    pub fn check_env_in(&self, apps: &[AppConfig]) -> Result<(), PlanError> {
        let Some(app) = apps.iter().find(|a| a.appid == self.appid) else {
            return Ok(());
        };
        if app.envs.iter().any(|e| e.id == self.env) {
            return Ok(());
        }
        Err(PlanError::EnvNotInApp {
            env: self.env.clone(),
            appid: self.appid.clone(),
            envs: app
                .envs
                .iter()
                .map(|e| e.id.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        })
    }

    /// Applies the never-overwrite rule to what is known about the target.
    pub fn check_target(&self) -> Result<(), PlanError> {
        check_target_rule(
            &self.env,
            &self.collection,
            self.mode,
            self.force,
            self.target,
        )
    }

    /// The workflow's initial state.
    pub fn into_state(self, entry: &CatalogEntry) -> RestoreState {
        RestoreState {
            snapshot_id: self.snapshot_id,
            manifest: entry.manifest.clone(),
            data_path: self.data_path,
            appid: self.appid,
            env: self.env,
            collection: self.collection,
            mode: self.mode,
            stop_on_error: self.stop_on_error,
            force: self.force,
            storage_path: self.storage_path,
            identity_file: self.identity_file,
            phase: RestorePhase::Verify,
        }
    }
}

/// A non-empty target needs upsert or force; an empty or missing one is fine.
pub fn check_target_rule(
    env: &str,
    collection: &str,
    mode: ConflictMode,
    force: bool,
    target: TargetProbe,
) -> Result<(), PlanError> {
    match target {
        TargetProbe::Exists { documents }
            if documents > 0 && mode == ConflictMode::Insert && !force =>
        {
            Err(PlanError::TargetNotEmpty {
                env: env.to_string(),
                collection: collection.to_string(),
                documents,
            })
        }
        _ => Ok(()),
    }
}

impl fmt::Display for RestorePlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mode = match self.mode {
            ConflictMode::Insert => "insert",
            ConflictMode::Upsert => "upsert",
        };
        writeln!(f, "restore plan for snapshot {}", self.snapshot_id)?;
        writeln!(
            f,
            "  source:  {} ({} records, {} bytes uncompressed)",
            self.data_path.display(),
            self.records,
            self.bytes_raw
        )?;
        writeln!(
            f,
            "  target:  app {} env {} collection {} ({})",
            self.appid,
            self.env,
            self.collection,
            match self.target {
                TargetProbe::Missing => "new collection, created first".to_string(),
                TargetProbe::Exists { documents } => format!("exists, {documents} documents"),
                TargetProbe::Unknown => "not checked".to_string(),
            }
        )?;
        writeln!(
            f,
            "  import:  mode {mode}, stop on error {}{}",
            self.stop_on_error,
            if self.force { ", forced" } else { "" }
        )?;
        if let Some(identity) = &self.identity_file {
            writeln!(
                f,
                "  decrypt: age, with identity file {}",
                identity.display()
            )?;
        }
        writeln!(
            f,
            "  steps:   1. verify the snapshot file against its manifest"
        )?;
        writeln!(
            f,
            "           2. check/create the target collection (a non-empty one needs --mode upsert or --force)"
        )?;
        writeln!(
            f,
            "           3. upload the {} export to storage path {} (streamed, no plaintext file)",
            if self.encrypted {
                "decrypted, decompressed"
            } else {
                "decompressed"
            },
            self.storage_path
        )?;
        writeln!(
            f,
            "           4. databasemigrateimport, poll until it finishes"
        )?;
        write!(
            f,
            "           5. delete the uploaded file, report record_success/record_fail"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn default_name_fits_and_is_valid() {
        let now = datetime!(2026-12-03 16:55:07 UTC);
        assert_eq!(
            default_target_name("orders", now),
            "orders_restored_20261203T165507Z"
        );
        let long = "x".repeat(300);
        let name = default_target_name(&long, now);
        assert!(name.len() <= naming::MAX_NAME_BYTES);
        assert!(naming::validate_collection_name(&name).is_ok());
        assert!(name.ends_with("_restored_20261203T165507Z"));
    }

    #[test]
    fn non_empty_target_needs_upsert_or_force() {
        let full = TargetProbe::Exists { documents: 3 };
        let err = check_target_rule("e", "c", ConflictMode::Insert, false, full).unwrap_err();
        assert!(err.to_string().contains("--mode upsert"), "{err}");
        assert!(check_target_rule("e", "c", ConflictMode::Upsert, false, full).is_ok());
        assert!(check_target_rule("e", "c", ConflictMode::Insert, true, full).is_ok());
        let empty = TargetProbe::Exists { documents: 0 };
        assert!(check_target_rule("e", "c", ConflictMode::Insert, false, empty).is_ok());
        assert!(
            check_target_rule("e", "c", ConflictMode::Insert, false, TargetProbe::Missing).is_ok()
        );
    }
}
