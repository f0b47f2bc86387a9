//! The `[[destinations]]` tables: where snapshots are copied off the machine, which envs each
//! destination serves and how long it keeps copies.
//!
//! Validated like the rest of the file (every problem with its key path and line, unknown keys
//! refused). Credentials are never written in the file: an S3 destination names an environment
//! variable or a file for each key, and [`resolve_credential`] reads it only when the
//! destination is built, without ever putting the value into an error message.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;
use url::Url;

use super::{join, resolve_path, Checker};
use crate::retention::{self, RetentionPolicy, DEFAULT_MIN_KEEP};

/// Prefix under which the `cloudbase` kind stores copies in an env's storage by default.
pub const DEFAULT_CLOUDBASE_PREFIX: &str = "tcb-backup-copies";
/// Region used for S3 when none is set (MinIO and most S3-compatible servers accept it).
pub const DEFAULT_S3_REGION: &str = "us-east-1";

/// One validated `[[destinations]]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyDestination {
    /// Unique name, used in copy records and messages.
    pub name: String,
    pub kind: CopyDestinationKind,
    /// Env ids whose snapshots are copied here; `None`: every configured env.
    pub envs: Option<Vec<String>>,
    /// How long copies are kept here (applied by `forget`); `None`: as long as the local
    /// snapshot exists.
    pub retention: Option<RetentionPolicy>,
}

impl CopyDestination {
    /// Whether snapshots of `env` are copied to this destination.
    pub fn applies_to(&self, env: &str) -> bool {
        self.envs
            .as_ref()
            .is_none_or(|envs| envs.iter().any(|e| e == env))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopyDestinationKind {
    /// Another directory (second disk, mounted share).
    Local { path: PathBuf },
    /// S3-compatible object storage.
    S3 {
        bucket: String,
        prefix: String,
        endpoint: Option<String>,
        region: String,
        access_key_id: CredentialSource,
        secret_access_key: CredentialSource,
        allow_http: bool,
    },
    /// The storage of the snapshot's own env (`uploadfile`), under `prefix`.
    CloudBase { prefix: String },
}

impl CopyDestinationKind {
    pub fn name(&self) -> &'static str {
        match self {
            CopyDestinationKind::Local { .. } => "local",
            CopyDestinationKind::S3 { .. } => "s3",
            CopyDestinationKind::CloudBase { .. } => "cloudbase",
        }
    }
}

/// Where a credential comes from. Never the credential itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialSource {
    Env(String),
    File(PathBuf),
}

impl fmt::Display for CredentialSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CredentialSource::Env(name) => write!(f, "environment variable {name}"),
            CredentialSource::File(path) => write!(f, "file {}", path.display()),
        }
    }
}

/// Reads a credential from its source (trimmed). The error names the source, never a value.
pub fn resolve_credential(source: &CredentialSource) -> Result<String, String> {
    let value = match source {
        CredentialSource::Env(name) => std::env::var(name)
            .map_err(|_| format!("environment variable {name} is not set (or not UTF-8)"))?,
        CredentialSource::File(path) => std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {}", path.display(), e.kind()))?,
    };
    let value = value.trim().to_string();
    if value.is_empty() {
        return Err(format!("{source} is empty"));
    }
    Ok(value)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCopyDestination {
    name: Option<String>,
    kind: Option<String>,
    envs: Option<Vec<String>>,
    path: Option<String>,
    bucket: Option<String>,
    prefix: Option<String>,
    endpoint: Option<String>,
    region: Option<String>,
    /// Only here to explain why they are refused.
    access_key_id: Option<toml::Value>,
    secret_access_key: Option<toml::Value>,
    access_key_id_env: Option<String>,
    access_key_id_file: Option<String>,
    secret_access_key_env: Option<String>,
    secret_access_key_file: Option<String>,
    allow_http: Option<bool>,
    retention: Option<toml::Value>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRetention {
    keep_last: Option<i64>,
    keep_hourly: Option<i64>,
    keep_daily: Option<i64>,
    keep_weekly: Option<i64>,
    keep_monthly: Option<i64>,
    keep_yearly: Option<i64>,
    keep_within: Option<String>,
    keep_min: Option<i64>,
}

fn valid_destination_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// `a` equals `b` or lies inside it, comparing the paths as written (they may not exist yet).
fn is_within(a: &Path, b: &Path) -> bool {
    let norm = |p: &Path| -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for c in p.components() {
            match c {
                Component::CurDir => {}
                Component::ParentDir => {
                    out.pop();
                }
                other => out.push(other.as_os_str().to_string_lossy().into_owned()),
            }
        }
        out
    };
    let (a, b) = (norm(a), norm(b));
    a.len() >= b.len() && a.iter().zip(&b).all(|(x, y)| x == y)
}

impl Checker {
    /// Validates every `[[destinations]]` table. `env_ids` are the configured envs, `root`
    /// the local snapshot tree.
    pub(super) fn copy_destinations(
        &mut self,
        values: Vec<toml::Value>,
        base: &Path,
        env_ids: &BTreeSet<String>,
        root: &Path,
    ) -> Vec<CopyDestination> {
        let mut out = Vec::new();
        let mut names: BTreeMap<String, String> = BTreeMap::new();
        for (i, value) in values.into_iter().enumerate() {
            let loc = format!("destinations[{i}]");
            // Names are compared before the rest is checked, so a duplicate is reported even
            // when its first use has problems of its own.
            if let Some(name) = value.get("name").and_then(|v| v.as_str()) {
                if let Some(first) = names.get(name) {
                    let first = first.clone();
                    self.problem(
                        &join(&loc, "name"),
                        format!(
                            "destination {name:?} is configured twice (first at {first}); copy records are kept by name, so each name may appear once"
                        ),
                    );
                    continue;
                }
                names.insert(name.to_string(), loc.clone());
            }
            if let Some(d) = self.copy_destination(&loc, value, base, env_ids, root) {
                out.push(d);
            }
        }
        out
    }

    fn copy_destination(
        &mut self,
        loc: &str,
        value: toml::Value,
        base: &Path,
        env_ids: &BTreeSet<String>,
        root: &Path,
    ) -> Option<CopyDestination> {
        let raw: RawCopyDestination = self.section(loc, value)?;
        let before = self.problems.len();
        let name = raw.name.clone().unwrap_or_default();
        if raw.name.is_none() {
            self.problem(
                &join(loc, "name"),
                "missing: a short name for this destination, e.g. \"offsite\"",
            );
        } else if !valid_destination_name(&name) {
            self.problem(
                &join(loc, "name"),
                format!("{name:?} is not a valid name: use 1 to 64 letters, digits, '-' or '_'"),
            );
        }
        let envs = match &raw.envs {
            None => None,
            Some(list) if list.is_empty() => {
                self.problem(
                    &join(loc, "envs"),
                    "is empty, so nothing would be copied: list env ids, or remove the key to copy every env",
                );
                None
            }
            Some(list) => {
                for (j, env) in list.iter().enumerate() {
                    if !env_ids.contains(env) {
                        self.problem(
                            &format!("{loc}.envs[{j}]"),
                            format!("{env:?} is not an env configured under [[apps.envs]]"),
                        );
                    }
                }
                Some(list.clone())
            }
        };
        let retention = raw
            .retention
            .clone()
            .and_then(|v| self.copy_retention(&join(loc, "retention"), v));
        for (key, present) in [
            ("access_key_id", raw.access_key_id.is_some()),
            ("secret_access_key", raw.secret_access_key.is_some()),
        ] {
            if present {
                self.problem(
                    &join(loc, key),
                    format!("credentials are never written in the config file: set {key}_env = \"NAME_OF_ENV_VAR\" or {key}_file = \"path/to/file\" (mode 0600) instead, and remove this key"),
                );
            }
        }
        let kind = match raw.kind.as_deref() {
            None => {
                self.problem(
                    &join(loc, "kind"),
                    "missing: one of \"local\", \"s3\", \"cloudbase\"",
                );
                None
            }
            Some("local") => self.local_kind(loc, &raw, base, root),
            Some("s3") => self.s3_kind(loc, &raw, base),
            Some("cloudbase") => self.cloudbase_kind(loc, &raw),
            Some(other) => {
                self.problem(
                    &join(loc, "kind"),
                    format!("{other:?} is not a destination kind: use \"local\", \"s3\" or \"cloudbase\""),
                );
                None
            }
        };
        if self.problems.len() != before {
            return None;
        }
        Some(CopyDestination {
            name,
            kind: kind?,
            envs,
            retention,
        })
    }

    /// Keys of another kind are refused (a typo or a copy-paste from another kind): every
    /// kind-specific key that is set and not in `uses`.
    fn foreign_keys(&mut self, loc: &str, kind: &str, raw: &RawCopyDestination, uses: &[&str]) {
        let set = [
            ("path", raw.path.is_some()),
            ("bucket", raw.bucket.is_some()),
            ("prefix", raw.prefix.is_some()),
            ("endpoint", raw.endpoint.is_some()),
            ("region", raw.region.is_some()),
            ("access_key_id_env", raw.access_key_id_env.is_some()),
            ("access_key_id_file", raw.access_key_id_file.is_some()),
            ("secret_access_key_env", raw.secret_access_key_env.is_some()),
            (
                "secret_access_key_file",
                raw.secret_access_key_file.is_some(),
            ),
            ("allow_http", raw.allow_http.is_some()),
        ];
        for (key, is_set) in set {
            if is_set && !uses.contains(&key) {
                self.problem(
                    &join(loc, key),
                    format!("is not a key of a {kind} destination"),
                );
            }
        }
    }

    fn local_kind(
        &mut self,
        loc: &str,
        raw: &RawCopyDestination,
        base: &Path,
        root: &Path,
    ) -> Option<CopyDestinationKind> {
        self.foreign_keys(loc, "local", raw, &["path"]);
        let path = match raw.path.as_deref() {
            None | Some("") => {
                self.problem(
                    &join(loc, "path"),
                    "missing: the directory copies are written to, e.g. \"/mnt/nas/tcb-backup\"",
                );
                return None;
            }
            Some(p) => resolve_path(base, p),
        };
        if is_within(&path, root) || is_within(root, &path) {
            self.problem(
                &join(loc, "path"),
                format!(
                    "{} overlaps the snapshot tree {} (destination.root): a copy must live in another directory",
                    path.display(),
                    root.display()
                ),
            );
            return None;
        }
        Some(CopyDestinationKind::Local { path })
    }

    fn credential(
        &mut self,
        loc: &str,
        key: &str,
        env: &Option<String>,
        file: &Option<String>,
        base: &Path,
    ) -> Option<CredentialSource> {
        match (env.as_deref(), file.as_deref()) {
            (Some(name), None) => {
                if name.is_empty() || name.contains('=') || name.contains('\0') {
                    self.problem(
                        &join(loc, &format!("{key}_env")),
                        format!("{name:?} is not an environment variable name"),
                    );
                    return None;
                }
                Some(CredentialSource::Env(name.to_string()))
            }
            (None, Some(path)) => {
                if path.is_empty() {
                    self.problem(&join(loc, &format!("{key}_file")), "must not be empty");
                    return None;
                }
                Some(CredentialSource::File(resolve_path(base, path)))
            }
            (None, None) => {
                self.problem(
                    &join(loc, &format!("{key}_env")),
                    format!("missing: set {key}_env (an environment variable) or {key}_file"),
                );
                None
            }
            (Some(_), Some(_)) => {
                self.problem(
                    &join(loc, &format!("{key}_file")),
                    format!("set only one of {key}_env and {key}_file"),
                );
                None
            }
        }
    }

    fn s3_kind(
        &mut self,
        loc: &str,
        raw: &RawCopyDestination,
        base: &Path,
    ) -> Option<CopyDestinationKind> {
        self.foreign_keys(
            loc,
            "s3",
            raw,
            &[
                "bucket",
                "prefix",
                "endpoint",
                "region",
                "access_key_id_env",
                "access_key_id_file",
                "secret_access_key_env",
                "secret_access_key_file",
                "allow_http",
            ],
        );
        let bucket = raw.bucket.clone().unwrap_or_default();
        if bucket.is_empty() {
            self.problem(&join(loc, "bucket"), "missing: the bucket name");
        } else if bucket.contains('/') || bucket.chars().any(char::is_whitespace) {
            self.problem(
                &join(loc, "bucket"),
                format!("{bucket:?} is not a bucket name (no '/' or spaces)"),
            );
        }
        let prefix = raw.prefix.clone().unwrap_or_default();
        if prefix.contains('\\') || prefix.split('/').any(|p| p == "..") {
            self.problem(
                &join(loc, "prefix"),
                format!("{prefix:?} must be a plain key prefix (no '..' or '\\')"),
            );
        }
        let mut allow_http = raw.allow_http.unwrap_or(false);
        if let Some(endpoint) = &raw.endpoint {
            match Url::parse(endpoint) {
                Ok(url) if url.scheme() == "https" => {}
                Ok(url) if url.scheme() == "http" => {
                    let loopback = matches!(
                        url.host_str(),
                        Some("127.0.0.1" | "localhost" | "[::1]" | "::1")
                    );
                    if loopback {
                        allow_http = true;
                    } else if !allow_http {
                        self.problem(
                            &join(loc, "endpoint"),
                            format!("{endpoint:?} uses plain http, which would send the keys and the data unencrypted; use https, or set allow_http = true"),
                        );
                    }
                }
                Ok(url) => self.problem(
                    &join(loc, "endpoint"),
                    format!("scheme {:?} is not supported: use https://", url.scheme()),
                ),
                Err(e) => self.problem(
                    &join(loc, "endpoint"),
                    format!("{endpoint:?} is not a URL: {e}"),
                ),
            }
        }
        let region = raw
            .region
            .clone()
            .unwrap_or_else(|| DEFAULT_S3_REGION.to_string());
        if region.is_empty() {
            self.problem(&join(loc, "region"), "must not be empty");
        }
        let access_key_id = self.credential(
            loc,
            "access_key_id",
            &raw.access_key_id_env,
            &raw.access_key_id_file,
            base,
        );
        let secret_access_key = self.credential(
            loc,
            "secret_access_key",
            &raw.secret_access_key_env,
            &raw.secret_access_key_file,
            base,
        );
        Some(CopyDestinationKind::S3 {
            bucket,
            prefix: prefix.trim_matches('/').to_string(),
            endpoint: raw.endpoint.clone(),
            region,
            access_key_id: access_key_id?,
            secret_access_key: secret_access_key?,
            allow_http,
        })
    }

    fn cloudbase_kind(
        &mut self,
        loc: &str,
        raw: &RawCopyDestination,
    ) -> Option<CopyDestinationKind> {
        self.foreign_keys(loc, "cloudbase", raw, &["prefix"]);
        let prefix = raw
            .prefix
            .clone()
            .unwrap_or_else(|| DEFAULT_CLOUDBASE_PREFIX.to_string());
        let trimmed = prefix.trim_matches('/');
        if trimmed.is_empty() || prefix.contains('\\') || trimmed.split('/').any(|p| p == "..") {
            self.problem(
                &join(loc, "prefix"),
                format!("{prefix:?} must be a non-empty storage path prefix (no '..' or '\\')"),
            );
            return None;
        }
        Some(CopyDestinationKind::CloudBase {
            prefix: trimmed.to_string(),
        })
    }

    fn copy_retention(&mut self, loc: &str, value: toml::Value) -> Option<RetentionPolicy> {
        let raw: RawRetention = self.section(loc, value)?;
        let before = self.problems.len();
        let count = |cx: &mut Checker, key: &str, v: Option<i64>, default: u32| match v {
            None => default,
            Some(n) => match u32::try_from(n) {
                Ok(n) => n,
                Err(_) => {
                    cx.problem(&join(loc, key), format!("{n} is out of range"));
                    default
                }
            },
        };
        let mut policy = RetentionPolicy {
            keep_last: count(self, "keep_last", raw.keep_last, 0),
            keep_hourly: count(self, "keep_hourly", raw.keep_hourly, 0),
            keep_daily: count(self, "keep_daily", raw.keep_daily, 0),
            keep_weekly: count(self, "keep_weekly", raw.keep_weekly, 0),
            keep_monthly: count(self, "keep_monthly", raw.keep_monthly, 0),
            keep_yearly: count(self, "keep_yearly", raw.keep_yearly, 0),
            keep_within: None,
            min_keep: count(self, "keep_min", raw.keep_min, DEFAULT_MIN_KEEP),
        };
        if let Some(text) = &raw.keep_within {
            match retention::parse_duration(text) {
                Ok(d) => policy.keep_within = Some(d),
                Err(e) => self.problem(&join(loc, "keep_within"), e.to_string()),
            }
        }
        if self.problems.len() != before {
            return None;
        }
        match policy.validate() {
            Ok(()) => Some(policy),
            Err(retention::PolicyError::ZeroFloor) => {
                self.problem(
                    &join(loc, "keep_min"),
                    "must be at least 1: retention never deletes every copy",
                );
                None
            }
            Err(_) => {
                self.problem(
                    loc,
                    "no rule: set at least one of keep_last, keep_hourly, keep_daily, keep_weekly, keep_monthly, keep_yearly, keep_within (or remove the table to keep copies as long as the snapshot)",
                );
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{load_str, ConfigProblem};
    use super::*;

    const APPS: &str = r#"
[destination]
root = "data"

[[apps]]
appid = "wx1"
secret_env = "X"

[[apps.envs]]
id = "prod"
collections = ["orders"]

[[apps.envs]]
id = "test"
collections = ["orders"]
"#;

    fn load(extra: &str) -> Result<super::super::Config, Vec<ConfigProblem>> {
        let text = format!("{APPS}{extra}");
        load_str(
            &text,
            Path::new("/etc/tcb/tcb-backup.toml"),
            Path::new("/etc/tcb"),
        )
        .map_err(|e| e.problems)
    }

    fn problem_at(problems: &[ConfigProblem], location: &str, needle: &str) -> ConfigProblem {
        let found: Vec<_> = problems
            .iter()
            .filter(|p| p.location == location && p.message.contains(needle))
            .collect();
        assert_eq!(found.len(), 1, "{location} / {needle}: {problems:#?}");
        found[0].clone()
    }

    #[test]
    fn every_kind_parses_with_defaults_envs_and_retention() {
        let config = load(
            r#"
[[destinations]]
name = "nas"
kind = "local"
path = "copies/nas"

[[destinations]]
name = "offsite"
kind = "s3"
bucket = "backups"
prefix = "/tcb/"
endpoint = "http://127.0.0.1:9000"
access_key_id_env = "AK"
secret_access_key_file = "secrets/s3"
envs = ["prod"]

[destinations.retention]
keep_daily = 7
keep_within = "14d"

[[destinations]]
name = "cloud"
kind = "cloudbase"
"#,
        )
        .unwrap();
        let d = &config.destinations;
        assert_eq!(d.len(), 3);
        assert_eq!(
            d[0].kind,
            CopyDestinationKind::Local {
                path: PathBuf::from("/etc/tcb/copies/nas")
            }
        );
        assert!(d[0].applies_to("test") && d[0].retention.is_none());
        match &d[1].kind {
            CopyDestinationKind::S3 {
                prefix,
                region,
                allow_http,
                access_key_id,
                secret_access_key,
                ..
            } => {
                assert_eq!(prefix, "tcb");
                assert_eq!(region, DEFAULT_S3_REGION);
                assert!(*allow_http, "loopback http is allowed");
                assert_eq!(access_key_id, &CredentialSource::Env("AK".into()));
                assert_eq!(
                    secret_access_key,
                    &CredentialSource::File("/etc/tcb/secrets/s3".into())
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(d[1].applies_to("prod") && !d[1].applies_to("test"));
        let policy = d[1].retention.as_ref().unwrap();
        assert_eq!(policy.keep_daily, 7);
        assert_eq!(
            policy.keep_within,
            Some(std::time::Duration::from_secs(14 * 86400))
        );
        assert_eq!(policy.min_keep, DEFAULT_MIN_KEEP);
        assert_eq!(
            d[2].kind,
            CopyDestinationKind::CloudBase {
                prefix: DEFAULT_CLOUDBASE_PREFIX.into()
            }
        );
    }

    #[test]
    fn every_problem_has_its_key_path_and_line() {
        let text = r#"
[[destinations]]
name = "nas"
kind = "local"
path = "data/inside"

[[destinations]]
name = "nas"
kind = "local"
path = "/mnt/elsewhere"

[[destinations]]
name = "bad name!"
kind = "s3"
bucket = "b"
endpoint = "http://s3.example.com"
access_key_id = "AKIAINLINE"
secret_access_key_env = "SK"
envs = ["prod", "staging"]

[destinations.retention]
keep_daily = -1
keep_within = "soon"

[[destinations]]
name = "cloud"
kind = "cloudbase"
bucket = "x"

[[destinations]]
name = "nothing"
kind = "ftp"

[[destinations]]
name = "norule"
kind = "local"
path = "/mnt/norule"
envs = []
colour = "blue"

[[destinations]]
name = "floor"
kind = "local"
path = "/mnt/floor"

[destinations.retention]
keep_last = 3
keep_min = 0
"#;
        let problems = load(text).unwrap_err();
        let line = |p: ConfigProblem| p.line.unwrap_or(0) - APPS.lines().count();
        assert_eq!(
            line(problem_at(&problems, "destinations[0].path", "overlaps")),
            5
        );
        assert_eq!(
            line(problem_at(
                &problems,
                "destinations[1].name",
                "configured twice"
            )),
            8
        );
        assert_eq!(
            line(problem_at(
                &problems,
                "destinations[2].name",
                "not a valid name"
            )),
            13
        );
        assert_eq!(
            line(problem_at(
                &problems,
                "destinations[2].endpoint",
                "plain http"
            )),
            16
        );
        let inline = problem_at(
            &problems,
            "destinations[2].access_key_id",
            "never written in the config file",
        );
        assert!(!inline.message.contains("AKIAINLINE"));
        assert_eq!(line(inline), 17);
        problem_at(&problems, "destinations[2].access_key_id_env", "missing");
        assert_eq!(
            line(problem_at(
                &problems,
                "destinations[2].envs[1]",
                "\"staging\""
            )),
            19
        );
        assert_eq!(
            line(problem_at(
                &problems,
                "destinations[2].retention.keep_daily",
                "out of range"
            )),
            22
        );
        problem_at(&problems, "destinations[2].retention.keep_within", "soon");
        assert_eq!(
            line(problem_at(
                &problems,
                "destinations[3].bucket",
                "not a key of a cloudbase"
            )),
            28
        );
        problem_at(&problems, "destinations[4].kind", "\"ftp\"");
        // An unknown key fails the table's parse; its line is the key's.
        assert_eq!(
            line(problem_at(
                &problems,
                "destinations[5]",
                "unknown field `colour`"
            )),
            39
        );
        problem_at(
            &problems,
            "destinations[6].retention.keep_min",
            "at least 1",
        );
    }

    #[test]
    fn retention_needs_a_rule_and_credentials_a_source() {
        let problems = load(
            r#"
[[destinations]]
name = "offsite"
kind = "s3"
bucket = "b"
access_key_id_env = "AK"
access_key_id_file = "ak"
secret_access_key_env = "SK"

[destinations.retention]
keep_min = 2

[[destinations]]
name = "empty"
kind = "local"
path = "/mnt/x"
envs = []
"#,
        )
        .unwrap_err();
        problem_at(&problems, "destinations[0].access_key_id_file", "only one");
        problem_at(&problems, "destinations[0].retention", "no rule");
        problem_at(&problems, "destinations[1].envs", "is empty");
    }

    #[test]
    fn credentials_resolve_without_showing_the_value() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("key");
        std::fs::write(&file, "  s3cr3t-value\n").unwrap();
        assert_eq!(
            resolve_credential(&CredentialSource::File(file.clone())).unwrap(),
            "s3cr3t-value"
        );
        std::fs::write(&file, " \n").unwrap();
        let err = resolve_credential(&CredentialSource::File(file)).unwrap_err();
        assert!(err.contains("empty"), "{err}");
        let err = resolve_credential(&CredentialSource::Env(
            "TCB_TEST_UNSET_CREDENTIAL_VARIABLE".into(),
        ))
        .unwrap_err();
        assert!(err.contains("TCB_TEST_UNSET_CREDENTIAL_VARIABLE"), "{err}");
    }
}
