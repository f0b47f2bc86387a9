//! Configuration of the emulator: the apps and envs it accepts, the virtual clock, job timing and
//! every switch for the points the reference marks UNCERTAIN (see `docs/emulator.md`).
//!
//! The whole struct is serde-(de)serialisable so the control API can read it and patch it at
//! runtime (`POST /_emulator/config` merges a JSON object into it).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::seed::SeedSpec;

/// One mini program the emulator accepts credentials for.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct EmulatorApp {
    pub appid: String,
    pub secret: String,
    pub envs: Vec<String>,
    /// Envs that exist but have cloud development disabled (→ 85088).
    pub disabled_envs: Vec<String>,
    /// When set, `/cgi-bin/token` and `/cgi-bin/stable_token` only accept these peer IPs (→ 40164).
    pub ip_whitelist: Option<Vec<String>>,
    /// AppSecret frozen (→ 40243).
    pub secret_frozen: bool,
    /// Risky-call confirmation pending (→ 89503).
    pub ip_confirmation_required: bool,
}

impl Default for EmulatorApp {
    fn default() -> Self {
        EmulatorApp {
            appid: "wx5e1a7c3b9d2f4e60".into(),
            secret: "3f9c2a7e5b1d8c4f6a0e9b2d7c5a1f38".into(),
            envs: vec!["prod-7g3k2a".into(), "test-1a2b3c".into()],
            disabled_envs: Vec::new(),
            ip_whitelist: None,
            secret_frozen: false,
            ip_confirmation_required: false,
        }
    }
}

/// Which key(s) `databasemigratequeryinfo` uses for the job message (reference §3, UNCERTAIN).
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum StatusMessageField {
    #[default]
    Both,
    ErrMsg,
    ErrorMsg,
}

/// What an export of a collection that does not exist does (reference §12.C.12).
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum UnknownCollectionMode {
    /// The job is created and ends in `fail`.
    #[default]
    FailJob,
    /// The export call itself answers -502005.
    Immediate,
}

/// UPSERT import semantics (reference §4, UNCERTAIN).
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum UpsertMode {
    /// The stored document is replaced by the file's record.
    #[default]
    Replace,
    /// Top-level fields of the record are merged into the stored document.
    Merge,
}

/// Rate limits and quotas. `None` disables a limit.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Quotas {
    /// `/cgi-bin/token` calls per app per (virtual) day → 45009.
    pub token_per_day: Option<u64>,
    /// `/cgi-bin/stable_token` calls per app per (virtual) minute → 45011.
    pub stable_token_per_minute: Option<u64>,
    /// `/cgi-bin/stable_token` calls per app per (virtual) day → 45009.
    pub stable_token_per_day: Option<u64>,
    /// `/tcb/*` calls per env per REAL second → -501004. Real time, because it models load.
    pub env_qps: Option<u64>,
    /// `/tcb/*` calls per env per virtual day → -501003.
    pub env_requests_per_day: Option<u64>,
    /// Read calls (query/count/export) per env per virtual day → -501015.
    pub env_reads_per_day: Option<u64>,
    /// Write calls (add/update/delete/import) per env per virtual day → -501016.
    pub env_writes_per_day: Option<u64>,
}

impl Default for Quotas {
    fn default() -> Self {
        Quotas {
            token_per_day: Some(2000),
            stable_token_per_minute: Some(10_000),
            stable_token_per_day: Some(500_000),
            env_qps: Some(1000),
            env_requests_per_day: None,
            env_reads_per_day: None,
            env_writes_per_day: None,
        }
    }
}

/// Durations of the migrate-job phases, in virtual seconds. Each phase lasts
/// `base + per_record * records`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct JobTiming {
    pub waiting_secs: f64,
    pub reading_base_secs: f64,
    pub writing_base_secs: f64,
    pub migrating_base_secs: f64,
    pub per_record_secs: f64,
}

impl Default for JobTiming {
    fn default() -> Self {
        JobTiming {
            waiting_secs: 1.0,
            reading_base_secs: 1.0,
            writing_base_secs: 1.0,
            migrating_base_secs: 2.0,
            per_record_secs: 0.0005,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct EmulatorConfig {
    pub apps: Vec<EmulatorApp>,
    /// Virtual seconds per real second (0 = frozen; tests advance the clock by hand).
    pub time_scale: f64,
    /// Virtual unix time at start; `None` = the real current time.
    pub start_unix_secs: Option<f64>,
    /// `expires_in` of freshly minted tokens.
    pub token_ttl_secs: u64,
    /// Overlap during which a superseded token still works (both families).
    pub token_grace_secs: u64,
    /// errcode for an unknown/superseded token on `/tcb/*` (40001 or 40014).
    pub invalid_token_errcode: i64,
    /// errcode for a wrong secret on the token endpoints (40001 or 40125).
    pub wrong_secret_errcode: i64,
    pub stable_force_refresh_per_day: u32,
    pub stable_force_refresh_spacing_secs: u64,
    pub quotas: Quotas,
    /// Offset of the "midnight" at which daily quotas reset (Beijing time = +8 h).
    pub day_utc_offset_secs: i64,
    pub job_timing: JobTiming,
    /// Lifetime of an export's `file_url`.
    pub export_url_ttl_secs: u64,
    /// `false`: every `databasemigratequeryinfo` signs a fresh `file_url` valid for the TTL from
    /// now; `true`: the URL's expiry is fixed at job completion + TTL (re-querying does not help).
    pub export_url_fixed_at_completion: bool,
    /// Lifetime of the COS upload credentials returned by `uploadfile`.
    pub upload_credential_ttl_secs: u64,
    pub status_message_field: StatusMessageField,
    /// errcode when a job id belongs to another env (40097 or -501009).
    pub foreign_job_errcode: i64,
    pub unknown_collection: UnknownCollectionMode,
    /// errcode of `databasecollectionadd` for an existing collection.
    pub collection_exists_errcode: i64,
    /// Import into a missing collection creates it (else the job fails).
    pub import_auto_create: bool,
    pub upsert_mode: UpsertMode,
    /// HTTP status of a successful COS POST upload.
    pub cos_success_status: u16,
    /// Reject multipart uploads whose `file` part is not the last one.
    pub cos_require_file_last: bool,
    /// Maximum entries of `batchdownloadfile`/`batchdeletefile`.
    pub max_batch_files: usize,
    pub query_default_limit: u64,
    pub query_max_limit: u64,
    /// Exports with more records than this are written in the background (status stays
    /// `writing` until the file is complete); smaller ones are written before the call answers.
    pub inline_export_max_records: u64,
    pub seed: Option<SeedSpec>,
    /// Persist collections and storage here (standalone emulator).
    pub data_dir: Option<PathBuf>,
    /// Seed of the RNG behind probabilistic faults.
    pub fault_seed: u64,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        EmulatorConfig {
            apps: vec![EmulatorApp::default()],
            time_scale: 1.0,
            start_unix_secs: None,
            token_ttl_secs: 7200,
            token_grace_secs: 300,
            invalid_token_errcode: 40001,
            wrong_secret_errcode: 40001,
            stable_force_refresh_per_day: 20,
            stable_force_refresh_spacing_secs: 30,
            quotas: Quotas::default(),
            day_utc_offset_secs: 8 * 3600,
            job_timing: JobTiming::default(),
            export_url_ttl_secs: 3600,
            export_url_fixed_at_completion: false,
            upload_credential_ttl_secs: 900,
            status_message_field: StatusMessageField::Both,
            foreign_job_errcode: 40097,
            unknown_collection: UnknownCollectionMode::FailJob,
            collection_exists_errcode: -502013,
            import_auto_create: true,
            upsert_mode: UpsertMode::Replace,
            cos_success_status: 204,
            cos_require_file_last: true,
            max_batch_files: 50,
            query_default_limit: 10,
            query_max_limit: 1000,
            inline_export_max_records: 50_000,
            seed: None,
            data_dir: None,
            fault_seed: 0x7cb_5eed,
        }
    }
}

impl EmulatorConfig {
    /// One app, two envs, a few seeded collections: what `tcb-backup emulator` and the demo use.
    pub fn demo() -> Self {
        EmulatorConfig {
            seed: Some(SeedSpec::default()),
            ..EmulatorConfig::default()
        }
    }

    /// A config for tests: frozen virtual clock (advance it by hand), no seed.
    pub fn for_tests() -> Self {
        EmulatorConfig {
            time_scale: 0.0,
            ..EmulatorConfig::default()
        }
    }
}
