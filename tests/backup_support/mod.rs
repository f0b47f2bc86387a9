//! Shared helpers of the backup and CLI integration tests: an in-process emulator, a config
//! file pointing at it, and the checks every stored snapshot must pass.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use serde_json::Value;
use tcb_backup::emulator::{self, EmulatorApp, EmulatorConfig, EmulatorHandle, SeedSpec};
use tcb_backup::manifest::{self, Manifest};

/// One app of a test setup: its emulator side and how the config file selects collections.
pub struct TestApp {
    pub appid: String,
    pub secret: String,
    /// Name of the environment variable the config reads the secret from.
    pub secret_env: String,
    pub envs: Vec<String>,
}

/// Emulator config for tests: fast virtual clock, the given apps, seeded collections.
pub fn emulator_config(apps: &[TestApp], collections: u32, records: u64) -> EmulatorConfig {
    EmulatorConfig {
        apps: apps
            .iter()
            .map(|a| EmulatorApp {
                appid: a.appid.clone(),
                secret: a.secret.clone(),
                envs: a.envs.clone(),
                ..EmulatorApp::default()
            })
            .collect(),
        // Exports take a few virtual seconds; at 40x they take ~0.1 s of real time.
        time_scale: 40.0,
        seed: Some(SeedSpec {
            collections,
            records_per_collection: records,
            ..SeedSpec::default()
        }),
        ..EmulatorConfig::default()
    }
}

pub async fn start(cfg: EmulatorConfig) -> EmulatorHandle {
    emulator::start(cfg, "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("emulator starts")
}

pub fn test_apps(prefix: &str, n_apps: usize, envs_per_app: usize) -> Vec<TestApp> {
    (0..n_apps)
        .map(|i| TestApp {
            appid: format!("wx{prefix}{i:02}aa55bb66cc77"),
            secret: format!("secret-{prefix}-{i}-0123456789abcdef"),
            secret_env: format!("TCB_TEST_SECRET_{}_{i}", prefix.to_uppercase()),
            envs: (0..envs_per_app)
                .map(|e| format!("{prefix}-env{i}{e}"))
                .collect(),
        })
        .collect()
}

/// Writes `tcb-backup.toml` in `dir` pointing at the emulator, with fast poll/retry settings.
/// Every env discovers all its collections. Sets the secret environment variables.
pub fn write_config(dir: &Path, base_url: &str, apps: &[TestApp], concurrency: usize) -> PathBuf {
    let mut text = format!(
        r#"
state_dir = "{state}"

[destination]
root = "{dest}"
zstd_level = 3

[concurrency]
global = {concurrency}
per_app = {concurrency}

[retry]
initial_interval = "10ms"
multiplier = 2.0
max_interval = "200ms"
max_attempts = 12
max_elapsed = "2m"

[poll]
initial_interval = "20ms"
multiplier = 2.0
max_interval = "200ms"
stall_timeout = "2m"
"#,
        state = dir.join("state").display(),
        dest = dir.join("snapshots").display(),
    );
    for app in apps {
        // The variable is process-wide; tests use distinct names so they never race.
        std::env::set_var(&app.secret_env, &app.secret);
        text.push_str(&format!(
            r#"
[[apps]]
appid = "{appid}"
secret_env = "{secret_env}"
api_base = "{base_url}"
"#,
            appid = app.appid,
            secret_env = app.secret_env,
        ));
        for env in &app.envs {
            text.push_str(&format!(
                r#"
[[apps.envs]]
id = "{env}"
discover = {{ include = ["*"] }}
"#
            ));
        }
    }
    let path = dir.join("tcb-backup.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

/// Every manifest under `root`, with its path.
pub fn manifests(root: &Path) -> Vec<(PathBuf, Manifest)> {
    let mut out = Vec::new();
    for file in walk(root) {
        let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.ends_with(".manifest.json") && !name.starts_with('.') {
            let m = manifest::read_manifest(&file).expect("manifest parses");
            out.push((file, m));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

pub fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Decompresses a data file and returns its records (one JSON object per line) and the sha256
/// of the decompressed bytes.
pub fn read_snapshot(path: &Path) -> (Vec<Value>, String, u64) {
    use sha2::{Digest, Sha256};
    let file = std::fs::File::open(path).expect("open data file");
    let decoder = zstd::stream::read::Decoder::new(file).expect("zstd stream");
    let mut reader = BufReader::new(decoder);
    let mut hasher = Sha256::new();
    let mut records = Vec::new();
    let mut bytes = 0u64;
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line).expect("decompress");
        if n == 0 {
            break;
        }
        bytes += n as u64;
        hasher.update(&line);
        let text = std::str::from_utf8(&line).expect("utf-8").trim();
        if !text.is_empty() {
            records.push(serde_json::from_str::<Value>(text).expect("each line is JSON"));
        }
    }
    (records, hex::encode(hasher.finalize()), bytes)
}

/// Checks one snapshot: data file decompresses, parses, matches its manifest, and holds exactly
/// the emulator's documents of that collection (by `_id`, with equal content).
pub fn check_snapshot(manifest_path: &Path, m: &Manifest, emu: &EmulatorHandle) {
    let data = m.data_path(manifest_path);
    let (records, sha, bytes) = read_snapshot(&data);
    assert_eq!(
        records.len() as u64,
        m.records,
        "{}: record count",
        data.display()
    );
    assert_eq!(
        sha,
        m.sha256_raw,
        "{}: sha256 of the export",
        data.display()
    );
    assert_eq!(bytes, m.bytes_raw, "{}: raw size", data.display());
    let stored = std::fs::metadata(&data).expect("stat").len();
    assert_eq!(stored, m.bytes_stored, "{}: stored size", data.display());
    let docs = emu
        .control()
        .documents(&m.env, &m.collection)
        .expect("collection exists in the emulator");
    let by_id = |v: &[Value]| -> BTreeMap<String, Value> {
        v.iter()
            .map(|d| {
                (
                    d.get("_id")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string(),
                    d.clone(),
                )
            })
            .collect()
    };
    let (got, want) = (by_id(&records), by_id(&docs));
    assert_eq!(
        got.len(),
        records.len(),
        "{}: duplicate _id",
        data.display()
    );
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "{}: ids differ from the emulator's collection",
        data.display()
    );
    assert_eq!(got, want, "{}: content differs", data.display());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&data).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}: mode", data.display());
        let dir_mode = std::fs::metadata(data.parent().expect("dir"))
            .expect("stat dir")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dir_mode, 0o700, "{}: dir mode", data.display());
    }
}

/// No temporary or partial file anywhere under `root`.
pub fn assert_no_temp_files(root: &Path) {
    for f in walk(root) {
        let name = f.file_name().and_then(|n| n.to_str()).unwrap_or("");
        assert!(
            !name.starts_with(".tmp-"),
            "leftover temp file {}",
            f.display()
        );
    }
}
