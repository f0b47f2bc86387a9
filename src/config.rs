//! `tcb-backup.toml`: what to back up, where to, and how hard to try.
//!
//! [`load`] reads the file and reports *every* problem it finds, each with its location (a key
//! path such as `apps[1].envs[0].collections` and, where it can be found, the line), instead of
//! stopping at the first. Unknown keys are errors so that typos do not silently fall back to
//! defaults. Secrets are never written in the file: an app names where its secret comes from
//! (`secret_env`, `secret_file` or `secret_command`) and [`resolve_secret`] fetches it when
//! needed, without ever putting it in an error message. See `docs/configuration.md` for every
//! key and its default.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::Deserialize;
use url::Url;

use crate::archive::encrypt::{self, Recipients};
use crate::archive::{DEFAULT_ZSTD_LEVEL, ZSTD_LEVELS};
use crate::manifest::ExportFileType;
use crate::naming;

mod destinations;
pub use destinations::{
    resolve_credential, CopyDestination, CopyDestinationKind, CredentialSource,
    DEFAULT_CLOUDBASE_PREFIX, DEFAULT_S3_REGION,
};

/// The file name `tcb-backup` looks for by default.
pub const DEFAULT_CONFIG_FILE: &str = "tcb-backup.toml";
pub const DEFAULT_STATE_DIR: &str = "tcb-backup-state";
pub const DEFAULT_DESTINATION_ROOT: &str = "tcb-backup-data";
pub const DEFAULT_API_BASE: &str = "https://api.weixin.qq.com";
pub const DEFAULT_GLOBAL_CONCURRENCY: usize = 8;

/// The whole configuration, validated. Relative paths are resolved against the directory of
/// the config file.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this was loaded from.
    pub source: PathBuf,
    pub state_dir: PathBuf,
    pub destination: DestinationConfig,
    pub concurrency: ConcurrencyConfig,
    pub retry: RetryConfig,
    pub poll: PollConfig,
    pub apps: Vec<AppConfig>,
    /// The `[[destinations]]` snapshots are copied to (see `config/destinations.rs`).
    pub destinations: Vec<CopyDestination>,
    /// The `[daemon]` table, as written; `crate::daemon::settings` turns it into settings.
    /// Its `Debug` redacts inline secrets.
    pub daemon: Option<crate::daemon::settings::RawDaemonTable>,
    /// The `[[schedules]]` entries, as written (see `crate::daemon::settings`).
    pub schedules: Vec<toml::Value>,
    /// `[encryption]`: encrypt new snapshots at rest with age (absent: stored unencrypted).
    pub encryption: Option<EncryptionConfig>,
}

/// The `[encryption]` section: who new snapshots are encrypted to, and where the key that
/// decrypts them lives. The identity file is only named here, never read at load time (a
/// backup machine need not hold it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptionConfig {
    /// `recipients` plus the lines of `recipients_file`, duplicates removed; never empty.
    pub recipients: Recipients,
    pub recipients_file: Option<PathBuf>,
    /// The age identity file for `check --read-data`, `--test-restore` and `restore`.
    pub identity_file: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestinationConfig {
    pub root: PathBuf,
    pub zstd_level: i32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConcurrencyConfig {
    /// Collections backed up at once, over all apps.
    pub global: usize,
    /// Collections backed up at once per app, unless the app sets its own `concurrency`.
    pub per_app: usize,
}

/// Retries of a failing step (API call, download).
#[derive(Debug, Clone, PartialEq)]
pub struct RetryConfig {
    pub initial_interval: Duration,
    pub multiplier: f64,
    pub max_interval: Duration,
    pub max_attempts: u32,
    /// Give up once this much time has passed since the first attempt (`None`: no limit).
    pub max_elapsed: Option<Duration>,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            initial_interval: Duration::from_secs(2),
            multiplier: 2.0,
            max_interval: Duration::from_secs(300),
            max_attempts: 8,
            max_elapsed: Some(Duration::from_secs(3600)),
        }
    }
}

/// Polling of export jobs: adaptive back-off with a stall timeout instead of a fixed deadline.
#[derive(Debug, Clone, PartialEq)]
pub struct PollConfig {
    pub initial_interval: Duration,
    pub multiplier: f64,
    pub max_interval: Duration,
    /// Fail the job when its status has not changed for this long.
    pub stall_timeout: Duration,
}

impl Default for PollConfig {
    fn default() -> Self {
        PollConfig {
            initial_interval: Duration::from_secs(1),
            multiplier: 1.5,
            max_interval: Duration::from_secs(30),
            stall_timeout: Duration::from_secs(30 * 60),
        }
    }
}

/// Which access-token endpoint an app uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TokenMode {
    /// `POST /cgi-bin/stable_token`: shares the token with other services of the same app.
    #[default]
    Stable,
    /// `GET /cgi-bin/token`: each call invalidates tokens other services hold.
    Legacy,
}

/// Where an app's secret comes from. Never the secret itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// The name of an environment variable.
    Env(String),
    /// A file whose content (trimmed) is the secret.
    File(PathBuf),
    /// A program and its arguments; its standard output (trimmed) is the secret.
    Command(Vec<String>),
}

#[derive(Debug, Clone)]
pub struct AppConfig {
    pub appid: String,
    pub secret: SecretSource,
    pub token_mode: TokenMode,
    pub api_base: Url,
    pub allow_insecure_http: bool,
    /// Collections of this app backed up at once.
    pub concurrency: usize,
    pub envs: Vec<EnvConfig>,
}

/// Which collections of an env to back up.
#[derive(Debug, Clone)]
pub enum CollectionSelection {
    Explicit(Vec<String>),
    /// Every collection `databasecollectionget` lists that matches an include glob and no
    /// exclude glob.
    Discover {
        include: Vec<String>,
        exclude: Vec<String>,
        include_set: GlobSet,
        exclude_set: GlobSet,
    },
}

impl CollectionSelection {
    /// Whether a discovered (or listed) collection name is selected.
    pub fn selects(&self, name: &str) -> bool {
        match self {
            CollectionSelection::Explicit(names) => names.iter().any(|n| n == name),
            CollectionSelection::Discover {
                include_set,
                exclude_set,
                ..
            } => include_set.is_match(name) && !exclude_set.is_match(name),
        }
    }
}

#[derive(Debug, Clone)]
pub struct EnvConfig {
    pub id: String,
    pub collections: CollectionSelection,
    /// Export query per collection, replacing the default `db.collection("NAME").get()`.
    pub queries: BTreeMap<String, String>,
    pub file_type: ExportFileType,
    /// Fields to export (required for CSV; for JSON, empty = every field).
    pub fields: Vec<String>,
    /// Collection in this env that receives a document per backup (db_back_info style).
    pub record_collection: Option<String>,
}

impl EnvConfig {
    /// The export query for `collection`: its override, or the whole collection (restricted to
    /// `fields` if set). Names are JSON-quoted, which is valid JavaScript string syntax.
    pub fn query_for(&self, collection: &str) -> String {
        if let Some(query) = self.queries.get(collection) {
            return query.clone();
        }
        let quote = |s: &str| serde_json::to_string(s).unwrap_or_default();
        let mut query = format!("db.collection({})", quote(collection));
        if !self.fields.is_empty() {
            let fields: Vec<String> = self
                .fields
                .iter()
                .map(|f| format!("{}:true", quote(f)))
                .collect();
            query.push_str(&format!(".field({{{}}})", fields.join(",")));
        }
        query.push_str(".get()");
        query
    }

    /// Splits discovered collection names into the selected valid ones and the selected ones
    /// whose names cannot be used safely (with the reason).
    pub fn select_discovered<'a>(
        &self,
        names: impl IntoIterator<Item = &'a str>,
    ) -> (Vec<String>, Vec<naming::NameError>) {
        let mut selected = Vec::new();
        let mut refused = Vec::new();
        for name in names {
            if !self.collections.selects(name) {
                continue;
            }
            match naming::validate_collection_name(name) {
                Ok(()) => selected.push(name.to_string()),
                Err(e) => refused.push(e),
            }
        }
        (selected, refused)
    }
}

impl Config {
    pub fn app(&self, appid: &str) -> Option<&AppConfig> {
        self.apps.iter().find(|a| a.appid == appid)
    }

    /// The app and env config of env `id` (env ids are unique across the file).
    pub fn env(&self, id: &str) -> Option<(&AppConfig, &EnvConfig)> {
        self.apps
            .iter()
            .find_map(|a| a.envs.iter().find(|e| e.id == id).map(|e| (a, e)))
    }
}

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// Key path, e.g. `apps[1].envs[0].collections` (empty for the file as a whole).
    pub location: String,
    /// 1-based line, when it could be found.
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.location.is_empty(), self.line) {
            (true, Some(line)) => write!(f, "line {line}: {}", self.message),
            (true, None) => write!(f, "{}", self.message),
            (false, Some(line)) => write!(f, "{} (line {line}): {}", self.location, self.message),
            (false, None) => write!(f, "{}: {}", self.location, self.message),
        }
    }
}

/// Everything wrong with a config file.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigErrors {
    pub path: PathBuf,
    /// The file could not be read at all (as opposed to being invalid).
    pub missing: bool,
    pub problems: Vec<ConfigProblem>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        write!(
            f,
            "{}: {n} problem{}",
            self.path.display(),
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            write!(f, "\n  - {p}")?;
        }
        Ok(())
    }
}

/// Reads and validates a config file.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigErrors {
        path: path.to_path_buf(),
        missing: true,
        problems: vec![ConfigProblem {
            location: String::new(),
            line: None,
            message: if e.kind() == std::io::ErrorKind::NotFound {
                "no such file (`tcb-backup init` writes a commented example)".to_string()
            } else {
                format!("cannot read: {e}")
            },
        }],
    })?;
    let base = path.parent().unwrap_or_else(|| Path::new("."));
    load_str(&text, path, base)
}

/// Validates config text; `path` is used in messages, `base_dir` resolves relative paths.
pub fn load_str(text: &str, path: &Path, base_dir: &Path) -> Result<Config, ConfigErrors> {
    let mut cx = Checker {
        problems: Vec::new(),
        locator: Locator::new(text),
    };
    let config = cx.check(text, path, base_dir);
    match config {
        Some(config) if cx.problems.is_empty() => Ok(config),
        _ => Err(ConfigErrors {
            path: path.to_path_buf(),
            missing: false,
            problems: cx.problems,
        }),
    }
}

// ---------------------------------------------------------------------------------------------
// Raw shapes, as written in the file. Every section is deserialised on its own so that one bad
// app or env does not hide the problems of the others.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTop {
    state_dir: Option<String>,
    destination: Option<toml::Value>,
    concurrency: Option<toml::Value>,
    retry: Option<toml::Value>,
    poll: Option<toml::Value>,
    #[serde(default)]
    apps: Vec<toml::Value>,
    #[serde(default)]
    destinations: Vec<toml::Value>,
    /// Validated by `crate::daemon::settings` (structure here, env vars when the daemon starts).
    daemon: Option<toml::Value>,
    #[serde(default)]
    schedules: Vec<toml::Value>,
    encryption: Option<toml::Value>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDestination {
    root: Option<String>,
    zstd_level: Option<i64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawEncryption {
    #[serde(default)]
    recipients: Vec<String>,
    recipients_file: Option<String>,
    identity_file: Option<String>,
    /// Only here to explain why it is refused.
    identity: Option<toml::Value>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConcurrency {
    global: Option<i64>,
    per_app: Option<i64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRetry {
    initial_interval: Option<toml::Value>,
    multiplier: Option<f64>,
    max_interval: Option<toml::Value>,
    max_attempts: Option<i64>,
    max_elapsed: Option<toml::Value>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPoll {
    initial_interval: Option<toml::Value>,
    multiplier: Option<f64>,
    max_interval: Option<toml::Value>,
    stall_timeout: Option<toml::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApp {
    appid: Option<String>,
    /// Only here to explain why it is refused.
    secret: Option<toml::Value>,
    secret_env: Option<String>,
    secret_file: Option<String>,
    secret_command: Option<RawCommand>,
    token_mode: Option<String>,
    api_base: Option<String>,
    allow_insecure_http: Option<bool>,
    concurrency: Option<i64>,
    record_collection: Option<String>,
    #[serde(default)]
    envs: Vec<toml::Value>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawCommand {
    Shell(String),
    Argv(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEnv {
    id: Option<String>,
    collections: Option<Vec<String>>,
    discover: Option<RawDiscover>,
    #[serde(default)]
    queries: BTreeMap<String, String>,
    file_type: Option<String>,
    fields: Option<Vec<String>>,
    record_collection: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDiscover {
    include: Option<Vec<String>>,
    #[serde(default)]
    exclude: Vec<String>,
}

struct Checker {
    problems: Vec<ConfigProblem>,
    locator: Locator,
}

impl Checker {
    fn problem(&mut self, location: &str, message: impl Into<String>) {
        self.problems.push(ConfigProblem {
            location: location.to_string(),
            line: self.locator.line_of(location),
            message: message.into(),
        });
    }

    /// Deserialises one section, recording (not propagating) a failure.
    fn section<T: for<'de> Deserialize<'de>>(
        &mut self,
        location: &str,
        value: toml::Value,
    ) -> Option<T> {
        match T::deserialize(value) {
            Ok(v) => Some(v),
            Err(e) => {
                // The message may name the offending key ("unknown field `colections`"); point
                // at that key's line when possible.
                let message = e.message().trim().to_string();
                let key = message
                    .strip_prefix("unknown field `")
                    .and_then(|rest| rest.split('`').next())
                    .map(|k| join(location, k));
                let line = key
                    .as_deref()
                    .and_then(|k| self.locator.line_of(k))
                    .or_else(|| self.locator.line_of(location));
                self.problems.push(ConfigProblem {
                    location: location.to_string(),
                    line,
                    message,
                });
                None
            }
        }
    }

    fn check(&mut self, text: &str, path: &Path, base: &Path) -> Option<Config> {
        let table: toml::Table = match text.parse() {
            Ok(t) => t,
            Err(e) => {
                let line = e
                    .span()
                    .map(|s| text.get(..s.start).unwrap_or(text).matches('\n').count() + 1);
                self.problems.push(ConfigProblem {
                    location: String::new(),
                    line,
                    message: format!("not valid TOML: {}", e.message().trim()),
                });
                return None;
            }
        };
        let top: RawTop = self.section("", toml::Value::Table(table))?;

        let state_dir = resolve_path(base, top.state_dir.as_deref().unwrap_or(DEFAULT_STATE_DIR));
        if top.state_dir.as_deref() == Some("") {
            self.problem("state_dir", "must not be empty");
        }

        let destination = self.destination(top.destination, base);
        let concurrency = self.concurrency(top.concurrency);
        let retry = self.retry(top.retry);
        let poll = self.poll(top.poll);
        let encryption = top
            .encryption
            .and_then(|value| self.encryption(value, base));

        if top.apps.is_empty() {
            self.problem(
                "apps",
                "no [[apps]] configured: add at least one app with its appid, secret source and envs",
            );
        }
        let mut apps = Vec::new();
        let mut appids = HashSet::new();
        let mut env_ids: BTreeMap<String, String> = BTreeMap::new();
        for (i, value) in top.apps.into_iter().enumerate() {
            let loc = format!("apps[{i}]");
            if let Some(app) = self.app(&loc, value, base, concurrency) {
                if !appids.insert(app.appid.clone()) {
                    self.problem(
                        &join(&loc, "appid"),
                        format!("appid {:?} is configured twice", app.appid),
                    );
                }
                for (j, env) in app.envs.iter().enumerate() {
                    let env_loc = format!("{loc}.envs[{j}].id");
                    if let Some(first) = env_ids.get(&env.id) {
                        let first = first.clone();
                        self.problem(
                            &env_loc,
                            format!(
                                "env {:?} is configured twice (first at {first}); snapshots are stored by env id, so each env may appear once",
                                env.id
                            ),
                        );
                    } else {
                        env_ids.insert(env.id.clone(), env_loc);
                    }
                }
                apps.push(app);
            }
        }
        let configured_envs = env_ids.keys().cloned().collect();
        let copy_destinations =
            self.copy_destinations(top.destinations, base, &configured_envs, &destination.root);
        for p in
            crate::daemon::settings::check_structure(top.daemon.as_ref(), &top.schedules, &apps)
        {
            self.problem(&p.location, p.message);
        }
        Some(Config {
            source: path.to_path_buf(),
            state_dir,
            destination,
            concurrency,
            retry,
            poll,
            apps,
            destinations: copy_destinations,
            daemon: top.daemon.map(crate::daemon::settings::RawDaemonTable),
            schedules: top.schedules,
            encryption,
        })
    }

    fn encryption(&mut self, value: toml::Value, base: &Path) -> Option<EncryptionConfig> {
        let raw: RawEncryption = self.section("encryption", value)?;
        let before = self.problems.len();
        if raw.identity.is_some() {
            self.problem(
                "encryption.identity",
                "secret keys are never written in the config file: put the AGE-SECRET-KEY-1… line in a file (mode 0600) and set identity_file = \"path/to/file\" instead, and remove this key",
            );
        }
        let mut keys = Vec::new();
        for (i, text) in raw.recipients.iter().enumerate() {
            match encrypt::parse_recipient(text) {
                Ok(k) => keys.push(k),
                Err(message) => self.problem(&format!("encryption.recipients[{i}]"), message),
            }
        }
        let recipients_file = match raw.recipients_file.as_deref() {
            None => None,
            Some("") => {
                self.problem("encryption.recipients_file", "must not be empty");
                None
            }
            Some(file) => {
                let path = resolve_path(base, file);
                match encrypt::read_recipients_file(&path) {
                    Ok(more) => keys.extend(more),
                    Err(message) => self.problem("encryption.recipients_file", message),
                }
                Some(path)
            }
        };
        let identity_file = match raw.identity_file.as_deref() {
            None => None,
            Some("") => {
                self.problem("encryption.identity_file", "must not be empty");
                None
            }
            Some(file) => Some(resolve_path(base, file)),
        };
        let recipients = Recipients::new(keys);
        if recipients.is_none() && self.problems.len() == before {
            self.problem(
                "encryption.recipients",
                "no recipients: list the age public keys (age1…, from `age-keygen -y KEYFILE`) snapshots are encrypted to, or set recipients_file; remove [encryption] to store snapshots unencrypted",
            );
        }
        Some(EncryptionConfig {
            recipients: recipients?,
            recipients_file,
            identity_file,
        })
    }

    fn destination(&mut self, value: Option<toml::Value>, base: &Path) -> DestinationConfig {
        let raw: RawDestination = value
            .and_then(|v| self.section("destination", v))
            .unwrap_or_default();
        if raw.root.as_deref() == Some("") {
            self.problem("destination.root", "must not be empty");
        }
        let zstd_level = match raw.zstd_level {
            None => DEFAULT_ZSTD_LEVEL,
            Some(level) => match i32::try_from(level) {
                Ok(l) if ZSTD_LEVELS.contains(&l) => l,
                _ => {
                    self.problem(
                        "destination.zstd_level",
                        format!("{level} is out of range: use 1 (fastest) to 19 (smallest); default {DEFAULT_ZSTD_LEVEL}"),
                    );
                    DEFAULT_ZSTD_LEVEL
                }
            },
        };
        DestinationConfig {
            root: resolve_path(
                base,
                raw.root.as_deref().unwrap_or(DEFAULT_DESTINATION_ROOT),
            ),
            zstd_level,
        }
    }

    fn positive(&mut self, location: &str, value: Option<i64>, default: usize) -> usize {
        match value {
            None => default,
            Some(n) if n >= 1 => usize::try_from(n).unwrap_or(default),
            Some(n) => {
                self.problem(location, format!("{n} is not allowed: must be at least 1"));
                default
            }
        }
    }

    fn concurrency(&mut self, value: Option<toml::Value>) -> ConcurrencyConfig {
        let raw: RawConcurrency = value
            .and_then(|v| self.section("concurrency", v))
            .unwrap_or_default();
        let global = self.positive("concurrency.global", raw.global, DEFAULT_GLOBAL_CONCURRENCY);
        let per_app = self.positive("concurrency.per_app", raw.per_app, global);
        ConcurrencyConfig { global, per_app }
    }

    fn duration(
        &mut self,
        location: &str,
        value: Option<toml::Value>,
        default: Duration,
    ) -> Duration {
        self.optional_duration(location, value, Some(default))
            .unwrap_or(default)
    }

    /// `"off"` gives `None`; a missing key gives `default`.
    fn optional_duration(
        &mut self,
        location: &str,
        value: Option<toml::Value>,
        default: Option<Duration>,
    ) -> Option<Duration> {
        match value {
            None => default,
            Some(toml::Value::String(s)) if s == "off" => None,
            Some(toml::Value::String(s)) => match parse_duration(&s) {
                Ok(d) if !d.is_zero() => Some(d),
                Ok(_) => {
                    self.problem(location, "must be greater than zero");
                    default
                }
                Err(e) => {
                    self.problem(location, e);
                    default
                }
            },
            Some(other) => {
                self.problem(
                    location,
                    format!(
                        "{other} is not a duration: write it as a string with a unit, e.g. \"500ms\", \"2s\", \"5m\", \"1h\""
                    ),
                );
                default
            }
        }
    }

    fn multiplier(&mut self, location: &str, value: Option<f64>, default: f64) -> f64 {
        match value {
            None => default,
            Some(m) if m.is_finite() && (1.0..=10.0).contains(&m) => m,
            Some(m) => {
                self.problem(location, format!("{m} is out of range: use 1.0 to 10.0"));
                default
            }
        }
    }

    fn retry(&mut self, value: Option<toml::Value>) -> RetryConfig {
        let raw: RawRetry = value
            .and_then(|v| self.section("retry", v))
            .unwrap_or_default();
        let d = RetryConfig::default();
        let retry = RetryConfig {
            initial_interval: self.duration(
                "retry.initial_interval",
                raw.initial_interval,
                d.initial_interval,
            ),
            multiplier: self.multiplier("retry.multiplier", raw.multiplier, d.multiplier),
            max_interval: self.duration("retry.max_interval", raw.max_interval, d.max_interval),
            max_attempts: u32::try_from(self.positive(
                "retry.max_attempts",
                raw.max_attempts,
                d.max_attempts as usize,
            ))
            .unwrap_or(u32::MAX),
            max_elapsed: self.optional_duration(
                "retry.max_elapsed",
                raw.max_elapsed,
                d.max_elapsed,
            ),
        };
        if retry.max_interval < retry.initial_interval {
            self.problem(
                "retry.max_interval",
                "is shorter than retry.initial_interval",
            );
        }
        retry
    }

    fn poll(&mut self, value: Option<toml::Value>) -> PollConfig {
        let raw: RawPoll = value
            .and_then(|v| self.section("poll", v))
            .unwrap_or_default();
        let d = PollConfig::default();
        let poll = PollConfig {
            initial_interval: self.duration(
                "poll.initial_interval",
                raw.initial_interval,
                d.initial_interval,
            ),
            multiplier: self.multiplier("poll.multiplier", raw.multiplier, d.multiplier),
            max_interval: self.duration("poll.max_interval", raw.max_interval, d.max_interval),
            stall_timeout: self.duration("poll.stall_timeout", raw.stall_timeout, d.stall_timeout),
        };
        if poll.max_interval < poll.initial_interval {
            self.problem("poll.max_interval", "is shorter than poll.initial_interval");
        }
        if poll.stall_timeout <= poll.max_interval {
            self.problem(
                "poll.stall_timeout",
                "must be longer than poll.max_interval, or every job would look stalled",
            );
        }
        poll
    }

    fn app(
        &mut self,
        loc: &str,
        value: toml::Value,
        base: &Path,
        concurrency: ConcurrencyConfig,
    ) -> Option<AppConfig> {
        let raw: RawApp = self.section(loc, value)?;
        let mut ok = true;
        let appid = raw.appid.unwrap_or_default();
        if appid.is_empty() {
            self.problem(
                &join(loc, "appid"),
                "missing: the mini program's AppID (e.g. \"wx0123456789abcdef\")",
            );
            ok = false;
        } else if !appid.bytes().all(|b| b.is_ascii_alphanumeric()) || appid.len() > 64 {
            self.problem(
                &join(loc, "appid"),
                format!("{appid:?} does not look like an AppID (letters and digits only)"),
            );
            ok = false;
        }

        if raw.secret.is_some() {
            self.problem(
                &join(loc, "secret"),
                "secrets are never written in the config file: set secret_env = \"NAME_OF_ENV_VAR\", secret_file = \"path/to/file\" (mode 0600) or secret_command = [\"program\", \"args\"] instead, and remove this key",
            );
            ok = false;
        }
        let mut sources = Vec::new();
        if let Some(name) = raw.secret_env {
            if name.is_empty() || name.contains('=') || name.contains('\0') {
                self.problem(
                    &join(loc, "secret_env"),
                    "must be the name of an environment variable",
                );
                ok = false;
            }
            sources.push(SecretSource::Env(name));
        }
        if let Some(file) = raw.secret_file {
            if file.is_empty() {
                self.problem(&join(loc, "secret_file"), "must not be empty");
                ok = false;
            }
            sources.push(SecretSource::File(resolve_path(base, &file)));
        }
        if let Some(command) = raw.secret_command {
            let argv = match command {
                RawCommand::Shell(line) => vec!["sh".to_string(), "-c".to_string(), line],
                RawCommand::Argv(argv) => argv,
            };
            let empty_program = argv.first().is_none_or(|p| p.trim().is_empty())
                || argv.get(2).is_some_and(|line| line.trim().is_empty())
                    && argv.first().is_some_and(|p| p == "sh");
            if empty_program {
                self.problem(&join(loc, "secret_command"), "must name a program to run");
                ok = false;
            }
            sources.push(SecretSource::Command(argv));
        }
        let secret = match sources.len() {
            1 => sources.pop(),
            0 => {
                if raw.secret.is_none() {
                    self.problem(
                        loc,
                        "no secret source: set exactly one of secret_env, secret_file or secret_command",
                    );
                }
                None
            }
            _ => {
                self.problem(
                    loc,
                    "more than one secret source: set exactly one of secret_env, secret_file or secret_command",
                );
                None
            }
        };

        let token_mode = match raw.token_mode.as_deref() {
            None | Some("stable") => TokenMode::Stable,
            Some("legacy") => TokenMode::Legacy,
            Some(other) => {
                self.problem(
                    &join(loc, "token_mode"),
                    format!(
                        "{other:?} is not a token mode: use \"stable\" (default) or \"legacy\""
                    ),
                );
                TokenMode::Stable
            }
        };
        let allow_insecure_http = raw.allow_insecure_http.unwrap_or(false);
        let api_base_text = raw.api_base.as_deref().unwrap_or(DEFAULT_API_BASE);
        let api_base = match Url::parse(api_base_text) {
            Ok(url) => {
                let loopback = match url.host() {
                    Some(url::Host::Domain(d)) => d == "localhost",
                    Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                    Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                    None => false,
                };
                match url.scheme() {
                    "https" => {}
                    "http" if allow_insecure_http || loopback => {}
                    "http" => {
                        self.problem(
                            &join(loc, "api_base"),
                            format!("{api_base_text:?} uses plain http, which would send the secret and tokens unencrypted; use https, or set allow_insecure_http = true (test servers only)"),
                        );
                        ok = false;
                    }
                    other => {
                        self.problem(
                            &join(loc, "api_base"),
                            format!("scheme {other:?} is not supported: use https"),
                        );
                        ok = false;
                    }
                }
                if url.host().is_none() {
                    self.problem(&join(loc, "api_base"), "has no host");
                    ok = false;
                }
                Some(url)
            }
            Err(e) => {
                self.problem(
                    &join(loc, "api_base"),
                    format!("{api_base_text:?} is not a URL: {e}"),
                );
                ok = false;
                None
            }
        };
        let app_concurrency = self.positive(
            &join(loc, "concurrency"),
            raw.concurrency,
            concurrency.per_app,
        );
        if let Some(rc) = &raw.record_collection {
            if let Err(e) = naming::validate_collection_name(rc) {
                self.problem(&join(loc, "record_collection"), e.to_string());
                ok = false;
            }
        }

        if raw.envs.is_empty() {
            self.problem(
                &join(loc, "envs"),
                "no [[apps.envs]] configured: add at least one env with its id and collections",
            );
            ok = false;
        }
        let mut envs = Vec::new();
        for (j, value) in raw.envs.into_iter().enumerate() {
            let env_loc = format!("{loc}.envs[{j}]");
            match self.env(&env_loc, value, raw.record_collection.as_deref()) {
                Some(env) => envs.push(env),
                None => ok = false,
            }
        }
        match (ok, secret, api_base) {
            (true, Some(secret), Some(api_base)) => Some(AppConfig {
                appid,
                secret,
                token_mode,
                api_base,
                allow_insecure_http,
                concurrency: app_concurrency,
                envs,
            }),
            _ => None,
        }
    }

    fn globs(&mut self, location: &str, patterns: &[String]) -> Option<GlobSet> {
        let mut builder = GlobSetBuilder::new();
        let mut ok = true;
        for (k, pattern) in patterns.iter().enumerate() {
            match Glob::new(pattern) {
                Ok(glob) => {
                    builder.add(glob);
                }
                Err(e) => {
                    self.problem(
                        &format!("{location}[{k}]"),
                        format!("{pattern:?} is not a valid glob: {}", e.kind()),
                    );
                    ok = false;
                }
            }
        }
        if !ok {
            return None;
        }
        match builder.build() {
            Ok(set) => Some(set),
            Err(e) => {
                self.problem(location, format!("invalid globs: {e}"));
                None
            }
        }
    }

    fn env(
        &mut self,
        loc: &str,
        value: toml::Value,
        app_record_collection: Option<&str>,
    ) -> Option<EnvConfig> {
        let raw: RawEnv = self.section(loc, value)?;
        let mut ok = true;
        let id = raw.id.unwrap_or_default();
        if id.is_empty() {
            self.problem(
                &join(loc, "id"),
                "missing: the cloud environment id (e.g. \"prod-4a89da\")",
            );
            ok = false;
        } else if let Err(e) = naming::validate_env_id(&id) {
            self.problem(&join(loc, "id"), e.to_string());
            ok = false;
        }

        let collections = match (raw.collections, raw.discover) {
            (Some(_), Some(_)) => {
                self.problem(
                    loc,
                    "both collections and discover are set: list the collections, or discover them, not both",
                );
                None
            }
            (None, None) => {
                self.problem(
                    loc,
                    "no collections: set collections = [\"name\", ...] or discover = { include = [\"*\"] }",
                );
                None
            }
            (Some(list), None) => {
                let cloc = join(loc, "collections");
                if list.is_empty() {
                    self.problem(&cloc, "is empty: list at least one collection");
                }
                let mut seen = HashSet::new();
                for (k, name) in list.iter().enumerate() {
                    if let Err(e) = naming::validate_collection_name(name) {
                        self.problem(&format!("{cloc}[{k}]"), e.to_string());
                    } else if !seen.insert(name.as_str()) {
                        self.problem(
                            &format!("{cloc}[{k}]"),
                            format!("collection {name:?} is listed twice"),
                        );
                    }
                }
                Some(CollectionSelection::Explicit(list))
            }
            (None, Some(discover)) => {
                let include = discover.include.unwrap_or_else(|| vec!["*".to_string()]);
                let dloc = join(loc, "discover");
                if include.is_empty() {
                    self.problem(
                        &join(&dloc, "include"),
                        "is empty, so nothing would be selected: use [\"*\"] for every collection",
                    );
                }
                let include_set = self.globs(&join(&dloc, "include"), &include);
                let exclude_set = self.globs(&join(&dloc, "exclude"), &discover.exclude);
                match (include_set, exclude_set) {
                    (Some(include_set), Some(exclude_set)) => Some(CollectionSelection::Discover {
                        include,
                        exclude: discover.exclude,
                        include_set,
                        exclude_set,
                    }),
                    _ => None,
                }
            }
        };

        for (name, query) in &raw.queries {
            let qloc = format!("{}.{}", join(loc, "queries"), toml_key(name));
            if let Err(e) = naming::validate_collection_name(name) {
                self.problem(&qloc, e.to_string());
                ok = false;
            } else if let Some(CollectionSelection::Explicit(list)) = &collections {
                if !list.contains(name) {
                    self.problem(
                        &qloc,
                        format!("collection {name:?} has a query but is not in collections"),
                    );
                    ok = false;
                }
            }
            if query.trim().is_empty() {
                self.problem(&qloc, "the query is empty");
                ok = false;
            }
        }

        let file_type = match raw.file_type.as_deref() {
            None | Some("json") => ExportFileType::Json,
            Some("csv") => ExportFileType::Csv,
            Some(other) => {
                self.problem(
                    &join(loc, "file_type"),
                    format!("{other:?} is not a file type: use \"json\" (default) or \"csv\""),
                );
                ok = false;
                ExportFileType::Json
            }
        };
        let fields = raw.fields.unwrap_or_default();
        for (k, field) in fields.iter().enumerate() {
            if field.is_empty() || field.chars().any(char::is_control) {
                self.problem(
                    &format!("{}[{k}]", join(loc, "fields")),
                    format!("{field:?} is not a field name"),
                );
                ok = false;
            }
        }
        if file_type == ExportFileType::Csv && fields.is_empty() {
            self.problem(
                &join(loc, "file_type"),
                "CSV exports need a field list: add fields = [\"_id\", ...] (the API rejects a CSV export without one: -501000 Param `Fields` Is Missing). JSON exports every field and is the better choice for backups",
            );
            ok = false;
        }
        let record_collection = raw
            .record_collection
            .or_else(|| app_record_collection.map(str::to_string));
        if let Some(rc) = &record_collection {
            if let Err(e) = naming::validate_collection_name(rc) {
                self.problem(&join(loc, "record_collection"), e.to_string());
                ok = false;
            }
        }
        match (ok, collections) {
            (true, Some(collections)) => Some(EnvConfig {
                id,
                collections,
                queries: raw.queries,
                file_type,
                fields,
                record_collection,
            }),
            _ => None,
        }
    }
}

fn join(location: &str, key: &str) -> String {
    if location.is_empty() {
        key.to_string()
    } else {
        format!("{location}.{key}")
    }
}

/// A key as it would be written in a TOML key path (quoted unless bare).
fn toml_key(key: &str) -> String {
    if !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        key.to_string()
    } else {
        serde_json::to_string(key).unwrap_or_default()
    }
}

fn resolve_path(base: &Path, path: &str) -> PathBuf {
    let p = Path::new(path);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// Parses a human duration: one or more `<integer><unit>` parts, units `ms`, `s`, `m`, `h`,
/// `d`, e.g. `"500ms"`, `"2s"`, `"1h30m"`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || {
        format!(
            "{text:?} is not a duration: use a number with a unit (ms, s, m, h, d), e.g. \"500ms\", \"2s\", \"5m\", \"1h30m\""
        )
    };
    let s = text.trim();
    if s.is_empty() {
        return Err(bad());
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        let (number, after) = rest.split_at(digits);
        let n: u64 = number.parse().map_err(|_| bad())?;
        let unit_len = after.bytes().take_while(u8::is_ascii_alphabetic).count();
        let (unit, after) = after.split_at(unit_len);
        let part = match unit {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.saturating_mul(60)),
            "h" => Duration::from_secs(n.saturating_mul(3600)),
            "d" => Duration::from_secs(n.saturating_mul(86400)),
            _ => return Err(bad()),
        };
        total = total.checked_add(part).ok_or_else(bad)?;
        rest = after;
    }
    Ok(total)
}

/// Finds the line of a key path (`apps[1].envs[0].collections`) in the text, for messages.
/// Works on the usual layout (`[[apps]]` / `[[apps.envs]]` headers, one key per line); returns
/// the line of the nearest enclosing table it knows when the key itself is not found.
struct Locator {
    lines: BTreeMap<String, usize>,
}

impl Locator {
    fn new(text: &str) -> Locator {
        let mut lines = BTreeMap::new();
        let mut app: Option<usize> = None;
        let mut env: Option<usize> = None;
        let mut table = String::new();
        // Other arrays of tables (`[[destinations]]`, ...): name → index of the current one.
        let mut arrays: BTreeMap<String, usize> = BTreeMap::new();
        for (n, raw_line) in text.lines().enumerate() {
            let line_no = n + 1;
            let line = raw_line.trim();
            if let Some(name) = line.strip_prefix("[[").and_then(|l| l.split("]]").next()) {
                match name.trim() {
                    "apps" => {
                        let i = app.map_or(0, |i| i + 1);
                        app = Some(i);
                        env = None;
                        table = format!("apps[{i}]");
                    }
                    "apps.envs" => {
                        let j = env.map_or(0, |j| j + 1);
                        env = Some(j);
                        table = format!("apps[{}].envs[{j}]", app.unwrap_or(0));
                    }
                    other => {
                        let i = *arrays
                            .entry(other.to_string())
                            .and_modify(|i| *i += 1)
                            .or_insert(0);
                        table = format!("{other}[{i}]");
                    }
                }
                lines.entry(table.clone()).or_insert(line_no);
            } else if let Some(name) = line.strip_prefix('[').and_then(|l| l.split(']').next()) {
                let name = name.trim();
                table = if let Some(sub) = name.strip_prefix("apps.envs.") {
                    format!(
                        "apps[{}].envs[{}].{sub}",
                        app.unwrap_or(0),
                        env.unwrap_or(0)
                    )
                } else if let Some(sub) = name.strip_prefix("apps.") {
                    format!("apps[{}].{sub}", app.unwrap_or(0))
                } else if let Some((i, (head, sub))) = name
                    .split_once('.')
                    .and_then(|(head, sub)| arrays.get(head).map(|i| (*i, (head, sub))))
                {
                    format!("{head}[{i}].{sub}")
                } else {
                    name.to_string()
                };
                lines.entry(table.clone()).or_insert(line_no);
            } else if let Some((key, _)) = line.split_once('=') {
                let key = key.trim();
                if !key.is_empty() && !key.starts_with('#') {
                    lines.entry(join(&table, key)).or_insert(line_no);
                }
            }
        }
        Locator { lines }
    }

    fn line_of(&self, location: &str) -> Option<usize> {
        let mut loc = location;
        loop {
            if let Some(line) = self.lines.get(loc) {
                return Some(*line);
            }
            // `collections[2]` → `collections`, `apps[0].envs[1].id` → `apps[0].envs[1]`.
            if let Some(stripped) = loc.strip_suffix(']').and_then(|l| l.rsplit_once('[')) {
                loc = stripped.0;
                if self.lines.contains_key(loc) {
                    continue;
                }
            }
            match loc.rsplit_once('.') {
                Some((parent, _)) => loc = parent,
                None => return None,
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Secrets

/// An app secret fetched from its source. Debug and Display never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct ResolvedSecret(String);

impl ResolvedSecret {
    /// The secret itself, for the token request only.
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn into_inner(self) -> String {
        self.0
    }
}

impl fmt::Debug for ResolvedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for ResolvedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Why a secret could not be fetched. Never contains the secret.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("app {appid}: environment variable {name} (secret_env) is not set")]
    EnvMissing { appid: String, name: String },
    #[error("app {appid}: environment variable {name} (secret_env) is not valid UTF-8")]
    EnvNotUnicode { appid: String, name: String },
    #[error("app {appid}: cannot read secret_file {path}: {source}")]
    File {
        appid: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("app {appid}: cannot run secret_command {program:?}: {source}")]
    CommandSpawn {
        appid: String,
        program: String,
        source: std::io::Error,
    },
    #[error("app {appid}: secret_command {program:?} failed ({status}){stderr}")]
    CommandFailed {
        appid: String,
        program: String,
        status: String,
        /// The first line of its standard error, if any (never its standard output).
        stderr: String,
    },
    #[error("app {appid}: the secret from {source_kind} is empty")]
    Empty { appid: String, source_kind: String },
    #[error("app {appid}: the secret from {source_kind} is not valid UTF-8 text")]
    NotText { appid: String, source_kind: String },
}

/// Fetches an app's secret from its configured source. A secret file readable by group or
/// others is used but logged as a warning.
pub fn resolve_secret(app: &AppConfig) -> Result<ResolvedSecret, SecretError> {
    let appid = app.appid.clone();
    let (raw, source_kind) = match &app.secret {
        SecretSource::Env(name) => match std::env::var(name) {
            Ok(v) => (v, format!("environment variable {name}")),
            Err(std::env::VarError::NotPresent) => {
                return Err(SecretError::EnvMissing {
                    appid,
                    name: name.clone(),
                })
            }
            Err(std::env::VarError::NotUnicode(_)) => {
                return Err(SecretError::EnvNotUnicode {
                    appid,
                    name: name.clone(),
                })
            }
        },
        SecretSource::File(path) => {
            if let Some(warning) = permission_warning(path) {
                tracing::warn!(appid = %app.appid, "{warning}");
            }
            let bytes = std::fs::read(path).map_err(|source| SecretError::File {
                appid: appid.clone(),
                path: path.clone(),
                source,
            })?;
            let kind = format!("secret_file {}", path.display());
            match String::from_utf8(bytes) {
                Ok(s) => (s, kind),
                Err(_) => {
                    return Err(SecretError::NotText {
                        appid,
                        source_kind: kind,
                    })
                }
            }
        }
        SecretSource::Command(argv) => {
            let program = argv.first().cloned().unwrap_or_default();
            let output = std::process::Command::new(&program)
                .args(argv.iter().skip(1))
                .stdin(std::process::Stdio::null())
                .output()
                .map_err(|source| SecretError::CommandSpawn {
                    appid: appid.clone(),
                    program: program.clone(),
                    source,
                })?;
            if !output.status.success() {
                let first_line = String::from_utf8_lossy(&output.stderr)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .chars()
                    .filter(|c| !c.is_control())
                    .take(200)
                    .collect::<String>();
                return Err(SecretError::CommandFailed {
                    appid,
                    program,
                    status: output.status.to_string(),
                    stderr: if first_line.is_empty() {
                        String::new()
                    } else {
                        format!(": {first_line}")
                    },
                });
            }
            let kind = format!("secret_command {program:?}");
            match String::from_utf8(output.stdout) {
                Ok(s) => (s, kind),
                Err(_) => {
                    return Err(SecretError::NotText {
                        appid,
                        source_kind: kind,
                    })
                }
            }
        }
    };
    let secret = raw.trim();
    if secret.is_empty() {
        return Err(SecretError::Empty { appid, source_kind });
    }
    Ok(ResolvedSecret(secret.to_string()))
}

/// A warning if `path` (a config or secret file) can be read by group or others.
pub fn permission_warning(path: &Path) -> Option<String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).ok()?.permissions().mode();
        if mode & 0o077 != 0 {
            return Some(format!(
                "{} is accessible by other users (mode {:04o}); run `chmod 600 {}`",
                path.display(),
                mode & 0o7777,
                path.display()
            ));
        }
        None
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

/// A warning if the config file itself can be read by other users (it names where the secrets
/// are, and may sit beside them).
pub fn config_permission_warning(path: &Path) -> Option<String> {
    permission_warning(path)
}

/// A fully commented example configuration (written by `tcb-backup init`); it passes [`load`].
pub fn example_toml() -> &'static str {
    EXAMPLE_TOML
}

const EXAMPLE_TOML: &str = r##"# tcb-backup configuration.
# Every key is documented in docs/configuration.md. Relative paths are resolved
# against the directory of this file. Keep this file private: `chmod 600 tcb-backup.toml`.

# Where the job store (progress, catalog) lives. Default: "tcb-backup-state".
state_dir = "tcb-backup-state"

[destination]
# Snapshots are written to <root>/<env>/<collection>/<UTC time>-<job id>.jsonl.zst,
# each with a .manifest.json beside it. Default: "tcb-backup-data".
root = "tcb-backup-data"
# zstd compression level, 1 (fastest) to 19 (smallest). Default: 3.
zstd_level = 3

[concurrency]
# Collections backed up at the same time, over all apps. Default: 8.
global = 8
# Collections backed up at the same time per app (an app may set its own
# `concurrency`). Default: the global limit.
per_app = 4

[retry]
# Retries of a failing step (API call, download): exponential back-off.
initial_interval = "2s"
multiplier = 2.0
max_interval = "5m"
max_attempts = 8
# Stop retrying once this much time has passed since the first attempt ("off": no limit).
max_elapsed = "1h"

[poll]
# Export jobs are polled from about `initial_interval`, growing by `multiplier`
# up to `max_interval`. A job whose status does not change for `stall_timeout`
# is treated as stuck and failed.
initial_interval = "1s"
multiplier = 1.5
max_interval = "30s"
stall_timeout = "30m"

# Optional: encrypt snapshots at rest with age (https://age-encryption.org).
# Each export is compressed, then encrypted to every recipient, and stored as
# <UTC time>-<job id>.jsonl.zst.age; no plaintext file is ever written. Backing
# up needs only the public keys; `check --read-data`, `check --test-restore` and
# `restore` need the identity (secret key), which is never written here.
# Create a key pair with `age-keygen -o backup-identity.txt`.
# [encryption]
# recipients = ["age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"]
# recipients_file = "backup-recipients.txt"     # more age1… keys, one per line
# identity_file = "secrets/backup-identity.txt" # AGE-SECRET-KEY-1…, keep it mode 0600

# One [[apps]] table per mini program.
[[apps]]
appid = "wx0123456789abcdef"
# The AppSecret is never written here. Use exactly one of:
#   secret_env = "NAME"                   read the environment variable NAME
#   secret_file = "path/to/secret"        read a file (keep it mode 0600)
#   secret_command = ["pass", "show", "wechat/app"]   run a program, use its output
secret_env = "TCB_BACKUP_SECRET_WX0123456789ABCDEF"
# "stable" (default) uses /cgi-bin/stable_token, which does not invalidate tokens
# held by your other services; "legacy" uses /cgi-bin/token.
token_mode = "stable"
# API server. Default: "https://api.weixin.qq.com". Plain http is refused unless the
# host is loopback or allow_insecure_http = true (for test servers only).
api_base = "https://api.weixin.qq.com"
allow_insecure_http = false
# Collections of this app backed up at the same time (default: concurrency.per_app).
# concurrency = 4
# Also add a document per backup to this collection of the env, as the classic
# cloud-function backup recipe did (off unless set; envs may override).
# record_collection = "db_back_info"

# One [[apps.envs]] table per cloud environment of the app above.
[[apps.envs]]
id = "prod-4a89da"
# Either an explicit list of collections ...
collections = ["orders", "users"]
# Export format: "json" (default; JSON Lines, re-importable as is) or "csv"
# (needs `fields`).
file_type = "json"

# Optional: export queries that replace the default db.collection("NAME").get()
# for some collections (JavaScript database-SDK syntax).
[apps.envs.queries]
orders = 'db.collection("orders").where({archived: false}).get()'

[[apps.envs]]
id = "test-7f3c21"
# ... or every collection the env has, filtered by globs.
discover = { include = ["*"], exclude = ["tmp_*", "*_cache"] }

# A second app, with its secret in a file.
[[apps]]
appid = "wxfedcba9876543210"
secret_file = "secrets/wxfedcba9876543210"

[[apps.envs]]
id = "shop-9b8e7d"
collections = ["products"]

# Optional: copies of every snapshot off this machine, each [[destinations]] with its
# own name, kind, envs and retention. A copy is a durable job: when a destination is
# down the snapshot stays recorded locally and the copy is retried (with back-off, and
# again on the next `tcb-backup backup`).
[[destinations]]
name = "nas"
kind = "local"                 # another directory: a second disk, a mounted share
path = "/mnt/nas/tcb-backup"

[[destinations]]
name = "offsite"
kind = "s3"                    # S3-compatible object storage (AWS, MinIO, COS, ...)
bucket = "my-tcb-backups"
prefix = "tcb"
# endpoint = "https://s3.example.com"   # omit for AWS
region = "us-east-1"
# Keys are never written here: name an environment variable or a file for each.
access_key_id_env = "TCB_S3_ACCESS_KEY_ID"
secret_access_key_env = "TCB_S3_SECRET_ACCESS_KEY"
envs = ["prod-4a89da"]         # default: every env
# How long copies stay here (`tcb-backup forget` applies it); default: as long as the
# local snapshot exists.
[destinations.retention]
keep_daily = 7
keep_monthly = 12

# [[destinations]]
# name = "cloud"
# kind = "cloudbase"           # the snapshot's own env storage (uploadfile)
# prefix = "tcb-backup-copies"
"##;

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[[apps]]
appid = "wx1"
secret_env = "X"

[[apps.envs]]
id = "prod"
collections = ["orders"]
"#;

    fn load_text(text: &str) -> Result<Config, ConfigErrors> {
        load_str(
            text,
            Path::new("/etc/tcb/tcb-backup.toml"),
            Path::new("/etc/tcb"),
        )
    }

    fn problems(text: &str) -> Vec<ConfigProblem> {
        match load_text(text) {
            Ok(_) => panic!("config was accepted:\n{text}"),
            Err(e) => e.problems,
        }
    }

    /// The single problem at `location`, whose message contains `needle`.
    fn expect_problem(text: &str, location: &str, needle: &str) -> ConfigProblem {
        let all = problems(text);
        let found: Vec<_> = all
            .iter()
            .filter(|p| p.location == location && p.message.contains(needle))
            .collect();
        assert_eq!(
            found.len(),
            1,
            "expected one problem at {location:?} containing {needle:?}, got {all:#?}"
        );
        found[0].clone()
    }

    #[test]
    fn example_config_parses_with_several_apps_and_envs() {
        let config = load_text(example_toml()).unwrap();
        assert_eq!(config.apps.len(), 2);
        assert_eq!(config.state_dir, Path::new("/etc/tcb/tcb-backup-state"));
        assert_eq!(
            config.destination.root,
            Path::new("/etc/tcb/tcb-backup-data")
        );
        assert_eq!(config.destination.zstd_level, 3);
        assert_eq!(config.destinations.len(), 2);
        assert!(config.destinations[1].retention.is_some());
        assert_eq!(
            config.concurrency,
            ConcurrencyConfig {
                global: 8,
                per_app: 4
            }
        );
        assert_eq!(config.retry, RetryConfig::default());
        assert_eq!(config.poll, PollConfig::default());
        let app = &config.apps[0];
        assert_eq!(app.appid, "wx0123456789abcdef");
        assert_eq!(
            app.secret,
            SecretSource::Env("TCB_BACKUP_SECRET_WX0123456789ABCDEF".into())
        );
        assert_eq!(app.concurrency, 4);
        assert_eq!(app.envs.len(), 2);
        let prod = &app.envs[0];
        assert_eq!(
            prod.query_for("orders"),
            r#"db.collection("orders").where({archived: false}).get()"#
        );
        assert_eq!(prod.query_for("users"), r#"db.collection("users").get()"#);
        let test = &app.envs[1];
        assert!(test.collections.selects("orders"));
        assert!(!test.collections.selects("tmp_1"));
        assert!(!test.collections.selects("session_cache"));
        let (selected, refused) = test.select_discovered(["a", "tmp_x", "../evil", "b"]);
        assert_eq!(selected, vec!["a", "b"]);
        assert_eq!(refused.len(), 1);
        let shop = &config.apps[1];
        assert_eq!(
            shop.secret,
            SecretSource::File(PathBuf::from("/etc/tcb/secrets/wxfedcba9876543210"))
        );
        assert_eq!(shop.api_base.as_str(), "https://api.weixin.qq.com/");
        assert_eq!(
            config.env("shop-9b8e7d").unwrap().0.appid,
            "wxfedcba9876543210"
        );
        assert!(config.env("nope").is_none());
        assert!(config.app("wx0123456789abcdef").is_some());
    }

    #[test]
    fn minimal_config_gets_the_defaults() {
        let config = load_text(MINIMAL).unwrap();
        assert_eq!(
            config.destination.root,
            Path::new("/etc/tcb/tcb-backup-data")
        );
        assert_eq!(config.concurrency.global, DEFAULT_GLOBAL_CONCURRENCY);
        assert_eq!(config.concurrency.per_app, DEFAULT_GLOBAL_CONCURRENCY);
        let app = &config.apps[0];
        assert_eq!(app.token_mode, TokenMode::Stable);
        assert!(!app.allow_insecure_http);
        assert_eq!(app.api_base.as_str(), "https://api.weixin.qq.com/");
        assert_eq!(app.envs[0].file_type, ExportFileType::Json);
        assert_eq!(app.envs[0].record_collection, None);
    }

    #[test]
    fn toml_syntax_error_has_a_line() {
        let p = problems("state_dir = \"a\"\n\n[destination\nroot = 1\n");
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].line, Some(3), "{p:?}");
        assert!(p[0].message.contains("not valid TOML"), "{p:?}");
    }

    #[test]
    fn unknown_keys_are_caught_with_their_line() {
        let text = MINIMAL.replace("collections =", "colections =");
        let p = expect_problem(&text, "apps[0].envs[0]", "unknown field `colections`");
        assert_eq!(p.line, Some(8));
        let p = expect_problem(
            &format!("stat_dir = \"x\"\n{MINIMAL}"),
            "",
            "unknown field `stat_dir`",
        );
        assert_eq!(p.line, Some(1));
        expect_problem(
            &format!("[retry]\nmax_atempts = 3\n{MINIMAL}"),
            "retry",
            "unknown field `max_atempts`",
        );
    }

    #[test]
    fn inline_secret_gets_a_specific_error() {
        let text = MINIMAL.replace("secret_env = \"X\"", "secret = \"abc123supersecret\"");
        let p = expect_problem(&text, "apps[0].secret", "never written in the config file");
        assert!(p.message.contains("secret_env") && p.message.contains("secret_command"));
        assert_eq!(p.line, Some(4));
        let all = load_text(&text).unwrap_err().to_string();
        assert!(!all.contains("abc123supersecret"), "{all}");
    }

    #[test]
    fn exactly_one_secret_source() {
        let none = MINIMAL.replace("secret_env = \"X\"\n", "");
        expect_problem(&none, "apps[0]", "no secret source");
        let two = MINIMAL.replace(
            "secret_env = \"X\"",
            "secret_env = \"X\"\nsecret_command = \"pass show x\"",
        );
        expect_problem(&two, "apps[0]", "more than one secret source");
        let empty_cmd = MINIMAL.replace("secret_env = \"X\"", "secret_command = []");
        expect_problem(&empty_cmd, "apps[0].secret_command", "must name a program");
        let shell =
            load_text(&MINIMAL.replace("secret_env = \"X\"", "secret_command = \"pass show x\""))
                .unwrap();
        assert_eq!(
            shell.apps[0].secret,
            SecretSource::Command(vec!["sh".into(), "-c".into(), "pass show x".into()])
        );
    }

    #[test]
    fn bad_names_are_refused_with_location_and_line() {
        let text = MINIMAL.replace("[\"orders\"]", "[\"orders\", \"../etc\", \"orders\"]");
        let p = expect_problem(
            &text,
            "apps[0].envs[0].collections[1]",
            "collection name \"../etc\"",
        );
        assert_eq!(p.line, Some(8));
        expect_problem(&text, "apps[0].envs[0].collections[2]", "listed twice");
        let text = MINIMAL.replace("id = \"prod\"", "id = \"prod/1\"");
        expect_problem(&text, "apps[0].envs[0].id", "path separator");
        let text = MINIMAL.replace("appid = \"wx1\"", "appid = \"wx 1\"");
        expect_problem(&text, "apps[0].appid", "does not look like an AppID");
        let text = MINIMAL.replace("appid = \"wx1\"\n", "");
        expect_problem(&text, "apps[0].appid", "missing");
    }

    #[test]
    fn duplicates_across_apps() {
        let text = format!("{MINIMAL}\n{MINIMAL}");
        expect_problem(&text, "apps[1].appid", "configured twice");
        let p = expect_problem(&text, "apps[1].envs[0].id", "configured twice");
        assert!(p.message.contains("apps[0].envs[0].id"), "{p:?}");
        assert_eq!(p.line, Some(16));
    }

    #[test]
    fn collections_list_or_discover() {
        let both = MINIMAL.replace(
            "collections = [\"orders\"]",
            "collections = [\"orders\"]\ndiscover = { include = [\"*\"] }",
        );
        expect_problem(&both, "apps[0].envs[0]", "not both");
        let neither = MINIMAL.replace("collections = [\"orders\"]", "");
        expect_problem(&neither, "apps[0].envs[0]", "no collections");
        let empty = MINIMAL.replace("[\"orders\"]", "[]");
        expect_problem(&empty, "apps[0].envs[0].collections", "is empty");
        let bad_glob = MINIMAL.replace(
            "collections = [\"orders\"]",
            "discover = { include = [\"a*\", \"[z\"], exclude = [\"{x\"] }",
        );
        expect_problem(
            &bad_glob,
            "apps[0].envs[0].discover.include[1]",
            "not a valid glob",
        );
        expect_problem(
            &bad_glob,
            "apps[0].envs[0].discover.exclude[0]",
            "not a valid glob",
        );
        let default_include =
            load_text(&MINIMAL.replace("collections = [\"orders\"]", "discover = {}")).unwrap();
        assert!(default_include.apps[0].envs[0]
            .collections
            .selects("anything"));
    }

    #[test]
    fn queries_must_match_listed_collections() {
        let text = format!("{MINIMAL}\n[apps.envs.queries]\nusers = 'db.collection(\"users\").get()'\n\"a/b\" = 'x'\norders = ' '\n");
        let p = expect_problem(&text, "apps[0].envs[0].queries.users", "not in collections");
        assert_eq!(p.line, Some(11));
        expect_problem(&text, "apps[0].envs[0].queries.\"a/b\"", "path separator");
        expect_problem(&text, "apps[0].envs[0].queries.orders", "query is empty");
    }

    #[test]
    fn csv_needs_fields() {
        let csv = MINIMAL.replace(
            "collections = [\"orders\"]",
            "collections = [\"orders\"]\nfile_type = \"csv\"",
        );
        let p = expect_problem(
            &csv,
            "apps[0].envs[0].file_type",
            "CSV exports need a field list",
        );
        assert!(p.message.contains("-501000"));
        let ok = load_text(&csv.replace(
            "file_type = \"csv\"",
            "file_type = \"csv\"\nfields = [\"_id\", \"name\"]",
        ))
        .unwrap();
        let env = &ok.apps[0].envs[0];
        assert_eq!(env.file_type, ExportFileType::Csv);
        assert_eq!(
            env.query_for("orders"),
            r#"db.collection("orders").field({"_id":true,"name":true}).get()"#
        );
        expect_problem(
            &MINIMAL.replace(
                "collections = [\"orders\"]",
                "collections = [\"orders\"]\nfile_type = \"xml\"",
            ),
            "apps[0].envs[0].file_type",
            "not a file type",
        );
    }

    #[test]
    fn numbers_and_durations_are_checked() {
        let text = format!(
            "[concurrency]\nglobal = 0\nper_app = -2\n[destination]\nzstd_level = 22\n[retry]\ninitial_interval = 5\nmax_interval = \"2x\"\nmultiplier = 0.5\nmax_attempts = 0\n[poll]\ninitial_interval = \"0s\"\nstall_timeout = \"10s\"\n{MINIMAL}"
        );
        let all = problems(&text);
        for (location, needle) in [
            ("concurrency.global", "at least 1"),
            ("concurrency.per_app", "at least 1"),
            ("destination.zstd_level", "1 (fastest) to 19"),
            ("retry.initial_interval", "with a unit"),
            ("retry.max_interval", "not a duration"),
            ("retry.multiplier", "out of range"),
            ("retry.max_attempts", "at least 1"),
            ("poll.initial_interval", "greater than zero"),
            ("poll.stall_timeout", "longer than poll.max_interval"),
        ] {
            assert!(
                all.iter()
                    .any(|p| p.location == location && p.message.contains(needle)),
                "missing {location}: {needle} in {all:#?}"
            );
        }
        let p = all
            .iter()
            .find(|p| p.location == "concurrency.global")
            .unwrap();
        assert_eq!(p.line, Some(2));
        let app_zero = MINIMAL.replace("secret_env = \"X\"", "secret_env = \"X\"\nconcurrency = 0");
        expect_problem(&app_zero, "apps[0].concurrency", "at least 1");
        let off = load_text(&format!("[retry]\nmax_elapsed = \"off\"\n{MINIMAL}")).unwrap();
        assert_eq!(off.retry.max_elapsed, None);
    }

    #[test]
    fn plain_http_needs_loopback_or_explicit_opt_in() {
        let http = MINIMAL.replace(
            "secret_env = \"X\"",
            "secret_env = \"X\"\napi_base = \"http://example.com\"",
        );
        expect_problem(&http, "apps[0].api_base", "allow_insecure_http");
        load_text(&http.replace("api_base", "allow_insecure_http = true\napi_base")).unwrap();
        let local = load_text(&http.replace("example.com", "127.0.0.1:8080")).unwrap();
        assert_eq!(local.apps[0].api_base.as_str(), "http://127.0.0.1:8080/");
        expect_problem(
            &http.replace("http://example.com", "not a url"),
            "apps[0].api_base",
            "not a URL",
        );
        expect_problem(
            &http.replace("http://", "ftp://"),
            "apps[0].api_base",
            "not supported",
        );
        let legacy = MINIMAL.replace(
            "secret_env = \"X\"",
            "secret_env = \"X\"\ntoken_mode = \"legacy\"",
        );
        assert_eq!(
            load_text(&legacy).unwrap().apps[0].token_mode,
            TokenMode::Legacy
        );
        expect_problem(
            &legacy.replace("legacy", "fast"),
            "apps[0].token_mode",
            "not a token mode",
        );
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let text = r#"
[concurrency]
global = 0

[[apps]]
appid = "wx1"
secret = "s"

[[apps.envs]]
id = "a/b"
collections = ["ok"]

[[apps]]
appid = "wx2"
secret_env = "Y"
tokn_mode = "stable"

[[apps.envs]]
id = "e2"
collections = [".hidden"]
"#;
        let all = problems(text);
        let locations: Vec<&str> = all.iter().map(|p| p.location.as_str()).collect();
        assert_eq!(
            locations,
            vec![
                "concurrency.global",
                "apps[0].secret",
                "apps[0].envs[0].id",
                "apps[1]"
            ],
            "{all:#?}"
        );
        let lines: Vec<Option<usize>> = all.iter().map(|p| p.line).collect();
        assert_eq!(lines, vec![Some(3), Some(7), Some(10), Some(16)]);
        let text = load_text(text).unwrap_err().to_string();
        assert!(
            text.starts_with("/etc/tcb/tcb-backup.toml: 4 problems"),
            "{text}"
        );
        assert!(
            text.contains("apps[0].envs[0].id (line 10): invalid env id"),
            "{text}"
        );
    }

    #[test]
    fn no_apps_is_an_error() {
        expect_problem("state_dir = \"x\"\n", "apps", "no [[apps]]");
        expect_problem(
            "[[apps]]\nappid = \"wx1\"\nsecret_env = \"X\"\n",
            "apps[0].envs",
            "no [[apps.envs]]",
        );
    }

    #[test]
    fn missing_file_is_flagged_as_missing() {
        let dir = tempfile::tempdir().unwrap();
        let err = load(&dir.path().join("tcb-backup.toml")).unwrap_err();
        assert!(err.missing);
        assert!(err.to_string().contains("tcb-backup init"), "{err}");
        let path = dir.path().join("c.toml");
        std::fs::write(&path, example_toml()).unwrap();
        let config = load(&path).unwrap();
        assert_eq!(config.destination.root, dir.path().join("tcb-backup-data"));
        assert_eq!(config.source, path);
    }

    #[test]
    fn examples_in_the_docs_are_valid() {
        let doc = include_str!("../docs/configuration.md");
        let mut blocks = 0;
        for block in doc.split("```toml\n").skip(1) {
            let text = block.split("```").next().unwrap_or_default();
            if let Err(e) = load_text(text) {
                panic!("example in docs/configuration.md is invalid: {e}\n{text}");
            }
            blocks += 1;
        }
        assert_eq!(blocks, 4);
    }

    fn with_encryption(section: &str) -> String {
        format!("{MINIMAL}\n[encryption]\n{section}\n")
    }

    #[test]
    fn encryption_section_is_parsed_and_resolved() {
        let (secret, public) = crate::archive::encrypt::tests::test_identity();
        let (_, public2) = crate::archive::encrypt::tests::test_identity();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("recipients.txt"),
            format!("# ops team\n{public2}\n\n{public}\n"),
        )
        .unwrap();
        let text = with_encryption(&format!(
            "recipients = [\"{public}\"]\nrecipients_file = \"recipients.txt\"\nidentity_file = \"keys/backup.txt\""
        ));
        let config = load_str(&text, &dir.path().join("c.toml"), dir.path()).unwrap();
        let enc = config.encryption.expect("encryption");
        // Duplicates collapse, the file's keys follow the inline ones.
        assert_eq!(enc.recipients.to_strings(), [public.clone(), public2]);
        assert_eq!(
            enc.identity_file,
            Some(dir.path().join("keys/backup.txt")),
            "resolved against the config's directory, and not read at load time"
        );
        assert!(load_text(MINIMAL).unwrap().encryption.is_none());

        // A secret key where a recipient belongs: refused, located, never echoed.
        let text = with_encryption(&format!("recipients = [\"{public}\", \"{secret}\"]"));
        let p = expect_problem(&text, "encryption.recipients[1]", "secret key");
        assert!(p.line.is_some());
        assert!(!p.message.contains(&secret[16..]), "{p}");
        // An inline identity.
        let text = with_encryption(&format!(
            "recipients = [\"{public}\"]\nidentity = \"{secret}\""
        ));
        let p = expect_problem(&text, "encryption.identity", "never written in the config");
        assert!(!p.to_string().contains(&secret[16..]), "{p}");
    }

    #[test]
    fn encryption_problems_have_their_key_path_and_line() {
        let (_, public) = crate::archive::encrypt::tests::test_identity();
        let text = with_encryption("identity_file = \"k.txt\"");
        let p = expect_problem(&text, "encryption.recipients", "no recipients");
        assert_eq!(p.line, Some(MINIMAL.lines().count() + 2));
        expect_problem(
            &with_encryption("recipients = [\"age1notakey\"]"),
            "encryption.recipients[0]",
            "not a valid age X25519 recipient",
        );
        expect_problem(
            &with_encryption("recipients = [\"ssh-ed25519 AAAAC3\"]"),
            "encryption.recipients[0]",
            "SSH keys",
        );
        expect_problem(
            &with_encryption(&format!(
                "recipients = [\"{public}\"]\nrecipients_file = \"/nonexistent/r.txt\""
            )),
            "encryption.recipients_file",
            "/nonexistent/r.txt",
        );
        expect_problem(
            &with_encryption(&format!(
                "recipients = [\"{public}\"]\nidentity_file = \"\""
            )),
            "encryption.identity_file",
            "must not be empty",
        );
        let p = expect_problem(
            &with_encryption(&format!("recipients = [\"{public}\"]\nrecipient = \"x\"")),
            "encryption",
            "unknown field `recipient`",
        );
        assert_eq!(p.line, Some(MINIMAL.lines().count() + 4));
        // A bad line of the recipients file is named with its line.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("r.txt"),
            format!("{public}\n# c\nage1bad\n"),
        )
        .unwrap();
        let err = load_str(
            &with_encryption("recipients_file = \"r.txt\""),
            &dir.path().join("c.toml"),
            dir.path(),
        )
        .unwrap_err();
        let p = &err.problems[0];
        assert_eq!(p.location, "encryption.recipients_file");
        assert!(p.message.contains("r.txt line 3"), "{p}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86400)));
        for bad in [
            "",
            "5",
            "s",
            "1.5s",
            "2 s",
            "-1s",
            "3y",
            "99999999999999999999s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    fn app_with(secret: SecretSource) -> AppConfig {
        let mut app = load_text(MINIMAL).unwrap().apps.remove(0);
        app.secret = secret;
        app
    }

    #[test]
    fn secret_from_env() {
        let name = "TCB_BACKUP_TEST_SECRET_FROM_ENV_7731";
        std::env::set_var(name, "  s3cr3t-value\n");
        let secret = resolve_secret(&app_with(SecretSource::Env(name.into()))).unwrap();
        assert_eq!(secret.expose(), "s3cr3t-value");
        assert_eq!(format!("{secret:?} {secret}"), "[redacted] [redacted]");
        let missing = "TCB_BACKUP_TEST_SECRET_NOT_SET_7731";
        let err = resolve_secret(&app_with(SecretSource::Env(missing.into()))).unwrap_err();
        assert!(err.to_string().contains(missing), "{err}");
        let empty = "TCB_BACKUP_TEST_SECRET_EMPTY_7731";
        std::env::set_var(empty, " \n");
        let err = resolve_secret(&app_with(SecretSource::Env(empty.into()))).unwrap_err();
        assert!(matches!(err, SecretError::Empty { .. }), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn secret_from_file_and_permission_warning() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "file-s3cr3t\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let warning = permission_warning(&path).unwrap();
        assert!(
            warning.contains("0644") && warning.contains("chmod 600"),
            "{warning}"
        );
        let secret = resolve_secret(&app_with(SecretSource::File(path.clone()))).unwrap();
        assert_eq!(secret.expose(), "file-s3cr3t");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(permission_warning(&path), None);
        assert_eq!(config_permission_warning(&path), None);
        let err =
            resolve_secret(&app_with(SecretSource::File(dir.path().join("nope")))).unwrap_err();
        assert!(matches!(err, SecretError::File { .. }), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn secret_from_command_never_leaks_into_errors() {
        let ok = resolve_secret(&app_with(SecretSource::Command(vec![
            "sh".into(),
            "-c".into(),
            "printf 'cmd-s3cr3t\\n'".into(),
        ])))
        .unwrap();
        assert_eq!(ok.expose(), "cmd-s3cr3t");
        let err = resolve_secret(&app_with(SecretSource::Command(vec![
            "sh".into(),
            "-c".into(),
            "echo leaked-s3cr3t; echo 'vault is sealed' >&2; exit 3".into(),
        ])))
        .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("vault is sealed") && text.contains('3'),
            "{text}"
        );
        assert!(!text.contains("leaked-s3cr3t"), "{text}");
        let err = resolve_secret(&app_with(SecretSource::Command(vec![
            "/nonexistent/tcb-secret-helper".into(),
        ])))
        .unwrap_err();
        assert!(matches!(err, SecretError::CommandSpawn { .. }), "{err}");
    }
}
