//! The daemon's part of `tcb-backup.toml`: `[daemon]`, `[daemon.alerts]` and `[[schedules]]`,
//! validated into typed settings with every problem reported at its key path.
//!
//! ```toml
//! [daemon]
//! listen = "127.0.0.1:9817"          # status/metrics listener
//! status_token_env = "TCB_STATUS_TOKEN"  # optional: bearer token required by the listener
//!                                     # (or status_token_file; inline status_token warns)
//! catch_up_window = "12h"             # run a missed fire after downtime if at most this late
//! overlap = "skip"                    # or "queue": what a fire does while the last run is active
//! jitter = "0s"                       # random start delay, at most this much
//! shutdown_grace = "60s"              # SIGTERM: how long running steps get to finish
//! stale_factor = 1.5                  # 1.0–100; stale = the next fire after the last success is 0.5 x interval overdue
//!
//! [daemon.alerts]
//! webhook_url_env = "TCB_ALERT_WEBHOOK"  # or webhook_url_file; inline webhook_url warns
//!                                     # (the URL often holds a key)
//! format = "json"                     # or "wecom" (WeCom group robot)
//! on = ["failure", "partial", "stale"]
//! heartbeat_url_env = "TCB_HEARTBEAT_URL"  # or heartbeat_url; called after fully successful runs
//!
//! [[schedules]]
//! name = "nightly"
//! cron = "0 0 2 * * * *"              # 7-field platform form, 5/6 fields, or @daily
//! time_zone = "Asia/Shanghai"         # default
//! envs = []                           # empty: every configured env
//! collections = []                    # empty: every configured/discovered collection
//! # overlap, jitter, catch_up_window may be overridden per schedule
//!
//! [[schedules]]
//! name = "weekly-check"
//! task = "check"                      # "backup" (default), "check" or "forget"
//! [schedules.check]                   # read_data / read_data_subset, test_restore, sample
//! test_restore = true
//!
//! [[schedules]]
//! name = "retention"
//! task = "forget"
//! [schedules.forget]                  # keep_last/hourly/daily/weekly/monthly/yearly,
//! keep_daily = 14                     # keep_within, keep_min, prune
//! prune = true
//! ```
//!
//! [`check_references`] checks the envs and collections schedules name against the apps.
//!
//! Without any `[[schedules]]` the daemon runs one schedule, `default`: 02:00 daily in
//! Asia/Shanghai over everything configured.

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::config::parse_duration;
use crate::schedule::{Schedule, DEFAULT_CRON};
use crate::verify::DataRead;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:9817";
pub const DEFAULT_CATCH_UP_WINDOW: Duration = Duration::from_secs(12 * 3600);
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(60);
pub const DEFAULT_STALE_FACTOR: f64 = 1.5;
/// A bigger factor would call a daily backup fresh for months: surely a typo.
pub const MAX_STALE_FACTOR: f64 = 100.0;
pub const DEFAULT_SCHEDULE_NAME: &str = "default";

/// What a fire does while the previous run of the same schedule is still active.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OverlapPolicy {
    /// Drop the fire (counted and logged).
    #[default]
    Skip,
    /// Keep one pending fire; it starts as soon as the active run ends. A newer fire replaces
    /// an older pending one.
    Queue,
}

/// What a schedule's fire does.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
#[serde(tag = "task", rename_all = "snake_case")]
pub enum ScheduleTask {
    /// Back up the selection (`backup.run`).
    #[default]
    Backup,
    /// Verify the selection's snapshots (`tcb-backup check`).
    Check(CheckTask),
    /// Apply a retention policy to the selection's snapshots (`tcb-backup forget`).
    Forget(ForgetTask),
}

impl ScheduleTask {
    pub fn name(&self) -> &'static str {
        match self {
            ScheduleTask::Backup => "backup",
            ScheduleTask::Check(_) => "check",
            ScheduleTask::Forget(_) => "forget",
        }
    }
}

/// `[schedules.check]`: what a scheduled check does.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct CheckTask {
    /// Percent of the snapshots whose data is read (least recently read first); 100 = all,
    /// `None` = files and sha256 only.
    pub read_data_percent: Option<f64>,
    /// Restore the newest snapshot of each collection into a scratch collection and compare.
    pub test_restore: bool,
    /// Documents compared per test restore.
    pub sample: usize,
}

/// Documents compared per scheduled test restore unless `sample` says otherwise.
pub const DEFAULT_TEST_RESTORE_SAMPLE: usize = 20;

/// `[schedules.forget]`: a retention policy applied on a schedule.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct ForgetTask {
    pub policy: crate::retention::RetentionPolicy,
    /// Delete what the policy forgets (otherwise the plan is only logged and recorded).
    pub prune: bool,
}

/// One validated `[[schedules]]` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleSpec {
    pub name: String,
    pub schedule: Schedule,
    /// What a fire does (default: a backup).
    pub task: ScheduleTask,
    /// Only these envs (empty: all).
    pub envs: Vec<String>,
    /// Only these collections (empty: all).
    pub collections: Vec<String>,
    pub overlap: OverlapPolicy,
    pub jitter: Duration,
    pub catch_up_window: Duration,
}

impl ScheduleSpec {
    /// The built-in schedule used when the config has none.
    pub fn default_schedule() -> Result<ScheduleSpec, crate::schedule::ScheduleError> {
        Ok(ScheduleSpec {
            name: DEFAULT_SCHEDULE_NAME.to_string(),
            schedule: Schedule::new(DEFAULT_CRON, None)?,
            task: ScheduleTask::Backup,
            envs: Vec::new(),
            collections: Vec::new(),
            overlap: OverlapPolicy::Skip,
            jitter: Duration::ZERO,
            catch_up_window: DEFAULT_CATCH_UP_WINDOW,
        })
    }

    /// Whether this schedule backs up `env`/`collection` (check and forget schedules back up
    /// nothing, so they never set a collection's expected interval).
    pub fn covers(&self, env: &str, collection: &str) -> bool {
        self.task == ScheduleTask::Backup && self.selects(env, collection)
    }

    /// Whether `env`/`collection` is in this schedule's selection (whatever its task).
    pub fn selects(&self, env: &str, collection: &str) -> bool {
        (self.envs.is_empty() || self.envs.iter().any(|e| e == env))
            && (self.collections.is_empty() || self.collections.iter().any(|c| c == collection))
    }
}

/// Alert output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum AlertFormat {
    #[default]
    Json,
    /// WeCom (企业微信) group robot: `{"msgtype":"markdown","markdown":{"content":...}}`.
    Wecom,
}

/// Which events raise an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertEvent {
    Failure,
    Partial,
    Stale,
}

/// A URL that may carry a key (WeCom robot `?key=`): Debug/Display never print it.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl(pub String);

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted url]")
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct AlertSettings {
    pub webhook: Option<SecretUrl>,
    pub format: AlertFormat,
    pub on: Vec<AlertEvent>,
    pub heartbeat: Option<SecretUrl>,
}

impl Default for AlertSettings {
    fn default() -> Self {
        AlertSettings {
            webhook: None,
            format: AlertFormat::Json,
            on: vec![AlertEvent::Failure, AlertEvent::Partial, AlertEvent::Stale],
            heartbeat: None,
        }
    }
}

/// A token the status listener requires (`Authorization: Bearer ...`). Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct StatusToken(pub String);

impl fmt::Debug for StatusToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct DaemonSettings {
    pub listen: SocketAddr,
    pub status_token: Option<StatusToken>,
    pub shutdown_grace: Duration,
    pub stale_factor: f64,
    pub alerts: AlertSettings,
    pub schedules: Vec<ScheduleSpec>,
    /// Accepted but worth a log line at start and reload (a secret written inline, a secret
    /// file readable by others).
    pub warnings: Vec<SettingsProblem>,
}

/// The `[daemon]` table as written in the file, kept in [`crate::config::Config`]. It may hold
/// inline secrets (`status_token`, `webhook_url`, `heartbeat_url`), so its `Debug` redacts them.
#[derive(Clone, PartialEq)]
pub struct RawDaemonTable(pub toml::Value);

/// Keys of the `[daemon]` table (and of `[daemon.alerts]`) whose values are secrets.
const INLINE_SECRET_KEYS: [&str; 3] = ["status_token", "webhook_url", "heartbeat_url"];

impl fmt::Debug for RawDaemonTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn redact(value: &mut toml::Value) {
            if let Some(table) = value.as_table_mut() {
                for (key, v) in table.iter_mut() {
                    if INLINE_SECRET_KEYS.contains(&key.as_str()) {
                        *v = toml::Value::String("[redacted]".to_string());
                    } else {
                        redact(v);
                    }
                }
            }
        }
        let mut shown = self.0.clone();
        redact(&mut shown);
        f.debug_tuple("RawDaemonTable").field(&shown).finish()
    }
}

/// One problem in the daemon's config sections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingsProblem {
    /// Key path such as `schedules[1].cron`.
    pub location: String,
    pub message: String,
}

impl fmt::Display for SettingsProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.message)
    }
}

/// Everything wrong with the daemon's config sections.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct SettingsErrors {
    pub problems: Vec<SettingsProblem>,
}

impl fmt::Display for SettingsErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        write!(
            f,
            "daemon settings: {n} problem{}",
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            write!(f, "\n  - {p}")?;
        }
        Ok(())
    }
}

/// Reads environment variables and secret files; injectable so tests do not touch the process
/// environment (and the structure check at load needs neither).
pub trait EnvLookup {
    fn var(&self, name: &str) -> Option<String>;

    /// The text of a `*_file` secret.
    fn read_file(&self, path: &Path) -> std::io::Result<String> {
        std::fs::read_to_string(path)
    }
}

/// The real process environment.
pub struct ProcessEnv;

impl EnvLookup for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

struct Checker<'a> {
    problems: Vec<SettingsProblem>,
    warnings: Vec<SettingsProblem>,
    env: &'a dyn EnvLookup,
    /// Relative `*_file` paths are resolved against this (the config file's directory).
    base: Option<&'a Path>,
}

impl Checker<'_> {
    fn problem(&mut self, location: impl Into<String>, message: impl Into<String>) {
        self.problems.push(SettingsProblem {
            location: location.into(),
            message: message.into(),
        });
    }

    fn warning(&mut self, location: impl Into<String>, message: impl Into<String>) {
        self.warnings.push(SettingsProblem {
            location: location.into(),
            message: message.into(),
        });
    }

    fn table<'v>(
        &mut self,
        value: &'v toml::Value,
        location: &str,
        allowed: &[&str],
    ) -> Option<&'v toml::Table> {
        let Some(table) = value.as_table() else {
            self.problem(location, "must be a table");
            return None;
        };
        for key in table.keys() {
            if !allowed.contains(&key.as_str()) {
                self.problem(
                    format!("{location}.{key}"),
                    format!("unknown key (known: {})", allowed.join(", ")),
                );
            }
        }
        Some(table)
    }

    fn string(&mut self, table: &toml::Table, location: &str, key: &str) -> Option<String> {
        match table.get(key) {
            None => None,
            Some(toml::Value::String(s)) => Some(s.clone()),
            Some(_) => {
                self.problem(format!("{location}.{key}"), "must be a string");
                None
            }
        }
    }

    fn duration(&mut self, table: &toml::Table, location: &str, key: &str) -> Option<Duration> {
        let text = self.string(table, location, key)?;
        match parse_duration(&text) {
            Ok(d) => Some(d),
            Err(e) => {
                self.problem(format!("{location}.{key}"), e);
                None
            }
        }
    }

    fn strings(&mut self, table: &toml::Table, location: &str, key: &str) -> Vec<String> {
        match table.get(key) {
            None => Vec::new(),
            Some(toml::Value::Array(items)) => {
                let mut out = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    match item.as_str() {
                        Some(s) => out.push(s.to_string()),
                        None => self.problem(format!("{location}.{key}[{i}]"), "must be a string"),
                    }
                }
                out
            }
            Some(_) => {
                self.problem(format!("{location}.{key}"), "must be an array of strings");
                Vec::new()
            }
        }
    }

    fn overlap(&mut self, table: &toml::Table, location: &str) -> Option<OverlapPolicy> {
        match self.string(table, location, "overlap")?.as_str() {
            "skip" => Some(OverlapPolicy::Skip),
            "queue" => Some(OverlapPolicy::Queue),
            other => {
                self.problem(
                    format!("{location}.overlap"),
                    format!("`{other}` is not an overlap policy (use \"skip\" or \"queue\")"),
                );
                None
            }
        }
    }

    fn uint(&mut self, table: &toml::Table, location: &str, key: &str) -> Option<u32> {
        match table.get(key) {
            None => None,
            Some(v) => match v.as_integer().and_then(|i| u32::try_from(i).ok()) {
                Some(n) => Some(n),
                None => {
                    self.problem(
                        format!("{location}.{key}"),
                        "must be a whole number of at least 0",
                    );
                    None
                }
            },
        }
    }

    fn boolean(&mut self, table: &toml::Table, location: &str, key: &str) -> Option<bool> {
        match table.get(key) {
            None => None,
            Some(toml::Value::Boolean(b)) => Some(*b),
            Some(_) => {
                self.problem(format!("{location}.{key}"), "must be true or false");
                None
            }
        }
    }

    /// `task` and its `[schedules.check]` / `[schedules.forget]` table.
    fn task(&mut self, t: &toml::Table, location: &str) -> ScheduleTask {
        let name = self
            .string(t, location, "task")
            .unwrap_or_else(|| "backup".to_string());
        for (key, wanted) in [("check", "check"), ("forget", "forget")] {
            if t.contains_key(key) && name != wanted {
                self.problem(
                    format!("{location}.{key}"),
                    format!("only allowed with task = \"{wanted}\" (this schedule's task is \"{name}\")"),
                );
            }
        }
        let empty = toml::Table::new();
        match name.as_str() {
            "backup" => ScheduleTask::Backup,
            "check" => {
                let loc = format!("{location}.check");
                let c = match t.get("check") {
                    Some(v) => self
                        .table(
                            v,
                            &loc,
                            &["read_data", "read_data_subset", "test_restore", "sample"],
                        )
                        .unwrap_or(&empty),
                    None => &empty,
                };
                let read_all = self.boolean(c, &loc, "read_data").unwrap_or(false);
                let subset = self.string(c, &loc, "read_data_subset");
                let read_data_percent = match (read_all, subset) {
                    (true, Some(_)) => {
                        self.problem(
                            format!("{loc}.read_data"),
                            "give either `read_data` or `read_data_subset`, not both",
                        );
                        None
                    }
                    (true, None) => Some(100.0),
                    (false, Some(text)) => match DataRead::parse_subset(&text) {
                        Ok(DataRead::Subset(p)) => Some(p),
                        Ok(_) => None,
                        Err(e) => {
                            self.problem(format!("{loc}.read_data_subset"), e);
                            None
                        }
                    },
                    (false, None) => None,
                };
                let test_restore = self.boolean(c, &loc, "test_restore").unwrap_or(false);
                let sample = match self.uint(c, &loc, "sample") {
                    Some(n) => n as usize,
                    None => DEFAULT_TEST_RESTORE_SAMPLE,
                };
                ScheduleTask::Check(CheckTask {
                    read_data_percent,
                    test_restore,
                    sample,
                })
            }
            "forget" => {
                let loc = format!("{location}.forget");
                let Some(v) = t.get("forget") else {
                    self.problem(
                        &loc,
                        "missing: a forget schedule needs a retention policy ([schedules.forget] with keep_last, keep_daily, ...)",
                    );
                    return ScheduleTask::Backup;
                };
                let f = self
                    .table(
                        v,
                        &loc,
                        &[
                            "keep_last",
                            "keep_hourly",
                            "keep_daily",
                            "keep_weekly",
                            "keep_monthly",
                            "keep_yearly",
                            "keep_within",
                            "keep_min",
                            "prune",
                        ],
                    )
                    .unwrap_or(&empty);
                let keep_within = match self.string(f, &loc, "keep_within") {
                    None => None,
                    Some(text) => match crate::retention::parse_duration(&text) {
                        Ok(d) => Some(d),
                        Err(e) => {
                            self.problem(format!("{loc}.keep_within"), e.to_string());
                            None
                        }
                    },
                };
                let policy = crate::retention::RetentionPolicy {
                    keep_last: self.uint(f, &loc, "keep_last").unwrap_or(0),
                    keep_hourly: self.uint(f, &loc, "keep_hourly").unwrap_or(0),
                    keep_daily: self.uint(f, &loc, "keep_daily").unwrap_or(0),
                    keep_weekly: self.uint(f, &loc, "keep_weekly").unwrap_or(0),
                    keep_monthly: self.uint(f, &loc, "keep_monthly").unwrap_or(0),
                    keep_yearly: self.uint(f, &loc, "keep_yearly").unwrap_or(0),
                    keep_within,
                    min_keep: self
                        .uint(f, &loc, "keep_min")
                        .unwrap_or(crate::retention::DEFAULT_MIN_KEEP),
                };
                if let Err(e) = policy.validate() {
                    self.problem(&loc, e.to_string());
                }
                let prune = self.boolean(f, &loc, "prune").unwrap_or(false);
                ScheduleTask::Forget(ForgetTask { policy, prune })
            }
            other => {
                self.problem(
                    format!("{location}.task"),
                    format!("`{other}` is not a schedule task (use \"backup\", \"check\" or \"forget\")"),
                );
                ScheduleTask::Backup
            }
        }
    }

    /// A secret from `key_env` (an environment variable's name), `key_file` (a file, mode
    /// 0600) or `key` (inline: accepted, with a warning — it is a secret in the config file).
    /// At most one of the three. The value is never echoed in a problem.
    fn secret_string(&mut self, table: &toml::Table, location: &str, key: &str) -> Option<String> {
        let env_key = format!("{key}_env");
        let file_key = format!("{key}_file");
        let plain = self.string(table, location, key);
        let from_env = self.string(table, location, &env_key);
        let from_file = self.string(table, location, &file_key);
        let given = [plain.is_some(), from_env.is_some(), from_file.is_some()];
        if given.iter().filter(|g| **g).count() > 1 {
            self.problem(
                format!("{location}.{key}"),
                format!("give only one of `{env_key}`, `{file_key}` or `{key}`"),
            );
            return None;
        }
        if let Some(v) = plain {
            self.warning(
                format!("{location}.{key}"),
                format!("is a secret written in the config file: move it to `{env_key}` (an environment variable) or `{file_key}` (a file of mode 0600)"),
            );
            return Some(v);
        }
        if let Some(var) = from_env {
            return match self.env.var(&var) {
                Some(v) if !v.trim().is_empty() => Some(v.trim().to_string()),
                _ => {
                    self.problem(
                        format!("{location}.{env_key}"),
                        format!("environment variable `{var}` is not set or empty"),
                    );
                    None
                }
            };
        }
        let file = from_file?;
        let path = match self.base {
            Some(base) if Path::new(&file).is_relative() => base.join(&file),
            _ => PathBuf::from(&file),
        };
        match self.env.read_file(&path) {
            Ok(text) if !text.trim().is_empty() => {
                if let Some(w) = crate::config::permission_warning(&path) {
                    self.warning(format!("{location}.{file_key}"), w);
                }
                Some(text.trim().to_string())
            }
            Ok(_) => {
                self.problem(
                    format!("{location}.{file_key}"),
                    format!("{} is empty", path.display()),
                );
                None
            }
            Err(e) => {
                self.problem(
                    format!("{location}.{file_key}"),
                    format!("cannot read {}: {e}", path.display()),
                );
                None
            }
        }
    }

    fn url(&mut self, table: &toml::Table, location: &str, key: &str) -> Option<SecretUrl> {
        let text = self.secret_string(table, location, key)?;
        match url::Url::parse(&text) {
            Ok(u) if u.scheme() == "https" || u.scheme() == "http" => Some(SecretUrl(text)),
            // The URL may hold a key: never echo it.
            _ => {
                self.problem(format!("{location}.{key}"), "is not an http(s) URL");
                None
            }
        }
    }
}

/// Validates the daemon sections. `daemon`: the `[daemon]` table if present; `schedules`: the
/// `[[schedules]]` entries.
pub fn from_toml(
    daemon: Option<&toml::Value>,
    schedules: &[toml::Value],
    env: &dyn EnvLookup,
) -> Result<DaemonSettings, SettingsErrors> {
    from_toml_in(daemon, schedules, env, None)
}

/// [`from_toml`] with relative `*_file` paths resolved against `base` (the config file's
/// directory) instead of the working directory.
pub fn from_toml_in(
    daemon: Option<&toml::Value>,
    schedules: &[toml::Value],
    env: &dyn EnvLookup,
    base: Option<&Path>,
) -> Result<DaemonSettings, SettingsErrors> {
    let mut cx = Checker {
        problems: Vec::new(),
        warnings: Vec::new(),
        env,
        base,
    };
    let empty = toml::Table::new();
    let daemon_table = match daemon {
        Some(v) => cx
            .table(
                v,
                "daemon",
                &[
                    "listen",
                    "status_token",
                    "status_token_env",
                    "status_token_file",
                    "catch_up_window",
                    "overlap",
                    "jitter",
                    "shutdown_grace",
                    "stale_factor",
                    "alerts",
                ],
            )
            .unwrap_or(&empty),
        None => &empty,
    };
    let listen_text = cx
        .string(daemon_table, "daemon", "listen")
        .unwrap_or_else(|| DEFAULT_LISTEN.to_string());
    let listen = match listen_text.parse::<SocketAddr>() {
        Ok(a) => a,
        Err(_) => {
            cx.problem(
                "daemon.listen",
                format!("`{listen_text}` is not an address:port such as 127.0.0.1:9817"),
            );
            // Placeholder; the problem makes the whole result an error.
            SocketAddr::from(([127, 0, 0, 1], 0))
        }
    };
    let status_token = cx
        .secret_string(daemon_table, "daemon", "status_token")
        .map(StatusToken);
    let catch_up_default = cx
        .duration(daemon_table, "daemon", "catch_up_window")
        .unwrap_or(DEFAULT_CATCH_UP_WINDOW);
    let overlap_default = cx.overlap(daemon_table, "daemon").unwrap_or_default();
    let jitter_default = cx
        .duration(daemon_table, "daemon", "jitter")
        .unwrap_or(Duration::ZERO);
    let shutdown_grace = cx
        .duration(daemon_table, "daemon", "shutdown_grace")
        .unwrap_or(DEFAULT_SHUTDOWN_GRACE);
    let stale_factor = match daemon_table.get("stale_factor") {
        None => DEFAULT_STALE_FACTOR,
        Some(v) => match v.as_float().or_else(|| v.as_integer().map(|i| i as f64)) {
            Some(f) if (1.0..=MAX_STALE_FACTOR).contains(&f) => f,
            _ => {
                cx.problem(
                    "daemon.stale_factor",
                    format!("must be a number from 1.0 to {MAX_STALE_FACTOR}"),
                );
                DEFAULT_STALE_FACTOR
            }
        },
    };

    let mut alerts = AlertSettings::default();
    if let Some(v) = daemon_table.get("alerts") {
        if let Some(t) = cx.table(
            v,
            "daemon.alerts",
            &[
                "webhook_url",
                "webhook_url_env",
                "webhook_url_file",
                "format",
                "on",
                "heartbeat_url",
                "heartbeat_url_env",
                "heartbeat_url_file",
            ],
        ) {
            alerts.webhook = cx.url(t, "daemon.alerts", "webhook_url");
            alerts.heartbeat = cx.url(t, "daemon.alerts", "heartbeat_url");
            if let Some(format) = cx.string(t, "daemon.alerts", "format") {
                match format.as_str() {
                    "json" => alerts.format = AlertFormat::Json,
                    "wecom" => alerts.format = AlertFormat::Wecom,
                    other => cx.problem(
                        "daemon.alerts.format",
                        format!("`{other}` is not an alert format (use \"json\" or \"wecom\")"),
                    ),
                }
            }
            if t.contains_key("on") {
                let mut on = Vec::new();
                for (i, name) in cx.strings(t, "daemon.alerts", "on").iter().enumerate() {
                    match name.as_str() {
                        "failure" => on.push(AlertEvent::Failure),
                        "partial" => on.push(AlertEvent::Partial),
                        "stale" => on.push(AlertEvent::Stale),
                        other => cx.problem(
                            format!("daemon.alerts.on[{i}]"),
                            format!(
                                "`{other}` is not an alert event (use \"failure\", \"partial\", \"stale\")"
                            ),
                        ),
                    }
                }
                alerts.on = on;
            }
        }
    }

    let mut specs = Vec::new();
    let mut names = HashSet::new();
    for (i, value) in schedules.iter().enumerate() {
        let location = format!("schedules[{i}]");
        let Some(t) = cx.table(
            value,
            &location,
            &[
                "name",
                "cron",
                "time_zone",
                "envs",
                "collections",
                "overlap",
                "jitter",
                "catch_up_window",
                "task",
                "check",
                "forget",
            ],
        ) else {
            continue;
        };
        let name = match cx.string(t, &location, "name") {
            Some(n) if valid_schedule_name(&n) => n,
            Some(n) => {
                cx.problem(
                    format!("{location}.name"),
                    format!("`{n}` is not a valid schedule name (1–60 of a-z A-Z 0-9 _ -)"),
                );
                continue;
            }
            None => {
                cx.problem(
                    format!("{location}.name"),
                    "missing (every schedule needs a name)",
                );
                continue;
            }
        };
        if !names.insert(name.clone()) {
            cx.problem(
                format!("{location}.name"),
                format!("schedule `{name}` is defined twice"),
            );
        }
        let cron = cx
            .string(t, &location, "cron")
            .unwrap_or_else(|| DEFAULT_CRON.to_string());
        let tz = cx.string(t, &location, "time_zone");
        let schedule = match Schedule::new(&cron, tz.as_deref()) {
            Ok(s) => s,
            Err(crate::schedule::ScheduleError::Cron(e)) => {
                cx.problem(format!("{location}.cron"), e.to_string());
                continue;
            }
            Err(e) => {
                cx.problem(format!("{location}.time_zone"), e.to_string());
                continue;
            }
        };
        let task = cx.task(t, &location);
        let envs = cx.strings(t, &location, "envs");
        let collections = cx.strings(t, &location, "collections");
        let overlap = cx.overlap(t, &location).unwrap_or(overlap_default);
        let jitter = cx
            .duration(t, &location, "jitter")
            .unwrap_or(jitter_default);
        let catch_up_window = cx
            .duration(t, &location, "catch_up_window")
            .unwrap_or(catch_up_default);
        specs.push(ScheduleSpec {
            name,
            schedule,
            task,
            envs,
            collections,
            overlap,
            jitter,
            catch_up_window,
        });
    }
    if schedules.is_empty() {
        match ScheduleSpec::default_schedule() {
            Ok(mut s) => {
                s.overlap = overlap_default;
                s.jitter = jitter_default;
                s.catch_up_window = catch_up_default;
                specs.push(s);
            }
            Err(e) => cx.problem("schedules", e.to_string()),
        }
    }
    if !cx.problems.is_empty() {
        return Err(SettingsErrors {
            problems: cx.problems,
        });
    }
    Ok(DaemonSettings {
        listen,
        status_token,
        shutdown_grace,
        stale_factor,
        alerts,
        schedules: specs,
        warnings: cx.warnings,
    })
}

/// The warning for a status listener other hosts can reach with no token: anyone on the
/// network could read the job list, the catalog and the metrics. `None` when it is on loopback
/// or needs a token.
pub fn exposed_listener_warning(listen: SocketAddr, has_token: bool) -> Option<String> {
    if has_token || listen.ip().is_loopback() {
        return None;
    }
    Some(format!(
        "the status listener on {listen} is reachable from other hosts and needs no token: anyone who can reach it can read the jobs, the catalog and the metrics; set [daemon] status_token_env (or status_token_file), or listen on 127.0.0.1 behind a reverse proxy"
    ))
}

/// Schedule names appear in metric labels, URLs and dedupe keys.
pub fn valid_schedule_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 60
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Pretends every environment variable is set: for checking the structure of the sections
/// when the config is loaded (by any command) without requiring the daemon's secrets.
struct AssumeSet;

impl EnvLookup for AssumeSet {
    fn var(&self, _name: &str) -> Option<String> {
        Some("http://assumed.invalid/".to_string())
    }

    fn read_file(&self, _path: &Path) -> std::io::Result<String> {
        Ok("http://assumed.invalid/".to_string())
    }
}

/// Problems of the daemon sections (called by `crate::config` while loading): their
/// structure, and every env and collection a schedule names checked against `apps`.
pub fn check_structure(
    daemon: Option<&toml::Value>,
    schedules: &[toml::Value],
    apps: &[crate::config::AppConfig],
) -> Vec<SettingsProblem> {
    match from_toml(daemon, schedules, &AssumeSet) {
        Ok(settings) => check_references(&settings.schedules, apps),
        Err(e) => e.problems,
    }
}

/// Schedules naming an env or collection the configuration does not have. Only what can be
/// known without asking the server is checked: an env must be configured; a collection must
/// be listed by, or match the `discover` globs of, at least one of the schedule's envs (whether
/// a discovered collection exists is only known when a run lists the env's collections).
/// `specs[i]` must come from `[[schedules]]` entry `i` (as [`from_toml`] returns them).
pub fn check_references(
    specs: &[ScheduleSpec],
    apps: &[crate::config::AppConfig],
) -> Vec<SettingsProblem> {
    let envs: Vec<&crate::config::EnvConfig> = apps.iter().flat_map(|a| &a.envs).collect();
    let known: Vec<&str> = envs.iter().map(|e| e.id.as_str()).collect();
    let mut problems = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        for (j, env) in spec.envs.iter().enumerate() {
            if !known.contains(&env.as_str()) {
                problems.push(SettingsProblem {
                    location: format!("schedules[{i}].envs[{j}]"),
                    message: format!(
                        "env `{env}` is not configured in any [[apps]] (configured: {})",
                        known.join(", ")
                    ),
                });
            }
        }
        let selected: Vec<&&crate::config::EnvConfig> = envs
            .iter()
            .filter(|e| spec.envs.is_empty() || spec.envs.contains(&e.id))
            .collect();
        if selected.is_empty() {
            continue;
        }
        for (j, collection) in spec.collections.iter().enumerate() {
            if !selected.iter().any(|e| e.collections.selects(collection)) {
                problems.push(SettingsProblem {
                    location: format!("schedules[{i}].collections[{j}]"),
                    message: format!(
                        "collection `{collection}` is neither listed in nor matched by the discover globs of {}",
                        if spec.envs.is_empty() {
                            "any configured env".to_string()
                        } else {
                            format!("env(s) {}", spec.envs.join(", "))
                        }
                    ),
                });
            }
        }
    }
    problems
}

/// The daemon settings of a loaded configuration, resolving `*_env` secrets from `env`.
pub fn from_config(
    config: &crate::config::Config,
    env: &dyn EnvLookup,
) -> Result<DaemonSettings, SettingsErrors> {
    from_toml_in(
        config.daemon.as_ref().map(|d| &d.0),
        &config.schedules,
        env,
        config.source.parent(),
    )
}

/// Parses the daemon sections out of a whole config file's text (for callers that have the
/// text but whose [`crate::config::Config`] does not carry the raw sections).
pub fn from_config_text(text: &str, env: &dyn EnvLookup) -> Result<DaemonSettings, SettingsErrors> {
    let value: toml::Table = text.parse().map_err(|e: toml::de::Error| SettingsErrors {
        problems: vec![SettingsProblem {
            location: String::new(),
            message: e.message().to_string(),
        }],
    })?;
    let schedules = match value.get("schedules") {
        None => Vec::new(),
        Some(toml::Value::Array(a)) => a.clone(),
        Some(_) => {
            return Err(SettingsErrors {
                problems: vec![SettingsProblem {
                    location: "schedules".to_string(),
                    message: "must be an array of tables ([[schedules]])".to_string(),
                }],
            })
        }
    };
    from_toml(value.get("daemon"), &schedules, env)
}
