//! Security evidence: a full backup at trace log level with API faults on (refused tokens,
//! transient errors, expired and truncated downloads), a crash in the middle, a token
//! force-refreshed by "another service", then every byte the tool produced — stdout and stderr
//! of every process, every file of the state store, the destination and the config dir — is
//! searched for the app secret and every access token the emulator ever issued: zero hits.
//! Also: files 0600 and directories 0700 in the state store and the destination; and the same
//! search for an S3 destination's access key id and secret access key (a `moto_server` on
//! 127.0.0.1, as in `restore_s3_copy.rs`) through a crash mid-copy, an S3 outage, copies and
//! deletes of copies, in every output and file and in every object stored in the bucket.

// Shared with the workflow tests (their file); its style lints are theirs.
#[allow(clippy::field_reassign_with_default)]
mod backup_support;
mod crash_support;
mod moto_support;

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use crash_support::{assert_died_at, Fixture};
use tcb_backup::emulator::{FaultAction, FaultRule};
use tcb_backup::faultpoint;

const TRACE: [(&str, &str); 1] = [("RUST_LOG", "trace")];

fn add_faults(fx: &Fixture) {
    let c = fx.emu.control();
    c.add_fault(FaultRule::with_probability(
        "databasemigratequeryinfo",
        0.25,
        FaultAction::Errcode {
            errcode: -1,
            errmsg: None,
        },
    ));
    c.add_fault(FaultRule::next(
        "databasemigrateexport",
        2,
        FaultAction::Errcode {
            errcode: 40001,
            errmsg: None,
        },
    ));
    c.add_fault(FaultRule::next(
        "databasemigrateexport",
        1,
        FaultAction::Reset,
    ));
    c.add_fault(FaultRule::next("download", 2, FaultAction::ExpiredUrl));
    c.add_fault(FaultRule::next(
        "download",
        1,
        FaultAction::TruncateBody { keep_bytes: None },
    ));
}

/// Every occurrence of any needle in `hay`, as "what @ offset".
fn hits(hay: &[u8], needles: &[(String, String)]) -> Vec<String> {
    let mut out = Vec::new();
    for (what, needle) in needles {
        let n = needle.as_bytes();
        if n.is_empty() || hay.len() < n.len() {
            continue;
        }
        for (i, w) in hay.windows(n.len()).enumerate() {
            if w == n {
                out.push(format!("{what} @ {i}"));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_or_token_anywhere() {
    let fx = Fixture::new("sec", 2, 2, 30, 600, 4).await;
    add_faults(&fx);
    let mut transcripts: Vec<(String, Vec<u8>)> = Vec::new();

    // 1. Crash half-way through, at trace level.
    let mut env = TRACE.to_vec();
    env.push((faultpoint::ENV_VAR, "backup.before_step.polling:4"));
    let out = fx.backup(&env, Duration::from_secs(120)).await;
    assert_died_at(&out, "backup.before_step.polling");
    transcripts.push(("crashed run stdout".into(), out.stdout));
    transcripts.push(("crashed run stderr".into(), out.stderr));

    // 2. Another service force-refreshes the token: the next run must fetch a new one.
    fx.emu
        .control()
        .force_refresh_by_other_service(&fx.apps[0].appid)
        .expect("force refresh");

    // 3. Finish, still at trace level, then read everything back through the CLI.
    let out = fx.backup(&TRACE, Duration::from_secs(120)).await;
    assert!(
        out.status.success(),
        "resume failed: {}",
        crash_support::stderr(&out)
    );
    transcripts.push(("resumed run stdout".into(), out.stdout));
    transcripts.push(("resumed run stderr".into(), out.stderr));
    for args in [
        &["-vvv", "snapshots"][..],
        &["-vvv", "jobs", "--all"],
        &["-vvv", "--json", "jobs", "--all"],
        &["-vvv", "config", "check"],
    ] {
        let out = crash_support::run(&fx.config, args, &TRACE, Duration::from_secs(60)).await;
        assert!(
            out.status.success(),
            "{args:?}: {}",
            crash_support::stderr(&out)
        );
        transcripts.push((format!("{args:?} stdout"), out.stdout));
        transcripts.push((format!("{args:?} stderr"), out.stderr));
    }
    let found = fx.check_invariants().await;
    assert_eq!(found.len(), 2 * 3);

    // The needles: the secret and every token the emulator issued (both families).
    let tokens = fx.emu.control().issued_tokens();
    assert!(
        tokens.len() >= 2,
        "the faults should have forced token refreshes: {} tokens",
        tokens.len()
    );
    let mut needles = vec![("the app secret".to_string(), fx.apps[0].secret.clone())];
    for (i, t) in tokens.iter().enumerate() {
        needles.push((format!("access token #{i}"), t.token.clone()));
    }
    let counters = fx.emu.control().counters();
    let injected: u64 = counters.endpoints.values().map(|e| e.faults_injected).sum();
    assert!(injected >= 5, "faults really fired: {counters:#?}");

    let mut leaks = Vec::new();
    let mut log_bytes = 0usize;
    for (what, bytes) in &transcripts {
        log_bytes += bytes.len();
        for h in hits(bytes, &needles) {
            leaks.push(format!("{what}: {h}"));
        }
    }
    // The trace logs really are verbose: the search had something to search.
    assert!(log_bytes > 100_000, "only {log_bytes} bytes of output");
    let mut files = 0;
    for file in backup_support::walk(fx.dir.path()) {
        let bytes = std::fs::read(&file).expect("read file");
        files += 1;
        // sled may compress pages; the raw bytes are what an attacker with the disk would see.
        for h in hits(&bytes, &needles) {
            leaks.push(format!("{}: {h}", file.display()));
        }
    }
    assert!(files > 10, "only {files} files searched");
    assert!(leaks.is_empty(), "secrets found:\n{}", leaks.join("\n"));
    eprintln!(
        "security: searched {log_bytes} bytes of output and {files} files for the secret and {} tokens ({injected} faults injected): 0 hits",
        tokens.len()
    );
    fx.emu.shutdown().await;
}

/// Modes of everything the tool created: files 0600, directories 0700.
fn private_modes(root: &Path) -> Vec<String> {
    use std::os::unix::fs::PermissionsExt;
    let mut bad = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let meta = std::fs::symlink_metadata(&p).expect("stat");
        let mode = meta.permissions().mode() & 0o777;
        if meta.is_dir() {
            if mode != 0o700 {
                bad.push(format!("dir {} mode {mode:o}", p.display()));
            }
            for e in std::fs::read_dir(&p).expect("read dir").flatten() {
                stack.push(e.path());
            }
        } else if mode & 0o077 != 0 {
            bad.push(format!("file {} mode {mode:o}", p.display()));
        }
    }
    bad.sort();
    bad
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destination_is_private() {
    let fx = Fixture::new("sep", 1, 2, 20, 0, 2).await;
    fx.backup_until_done(1).await;
    let bad = private_modes(&fx.snapshots_dir());
    assert!(bad.is_empty(), "not private:\n{}", bad.join("\n"));
    fx.emu.shutdown().await;
}

/// The state store (job states, the catalog) is private too: the binary sets its umask to 077
/// before it creates anything, so sled's directory and files are 0700 / 0600.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_store_is_private() {
    let fx = Fixture::new("ses", 1, 2, 20, 0, 2).await;
    fx.backup_until_done(1).await;
    let bad = private_modes(&fx.state_dir());
    assert!(bad.is_empty(), "not private:\n{}", bad.join("\n"));
    fx.emu.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// S3 credentials

const BUCKET: &str = "tcb-leak-test";
/// Distinctive values (moto accepts any keys): a hit cannot be a coincidence.
const ACCESS_KEY_ID: &str = "AKIATCBLEAKTEST7Q2W";
const SECRET_ACCESS_KEY: &str = "tcbLeak/Secret+Key0123456789abcdefGHIJKLmn";

/// A moto server on `port` with the test's bucket (a restarted moto is empty).
async fn started_moto(port: u16) -> moto_support::Moto {
    let moto = moto_support::Moto::start(port);
    moto.ready(BUCKET).await;
    moto
}

fn keep(transcripts: &mut Vec<(String, Vec<u8>)>, what: &str, out: Output) {
    transcripts.push((format!("{what} stdout"), out.stdout));
    transcripts.push((format!("{what} stderr"), out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_s3_key_anywhere() {
    if !moto_support::installed() {
        return;
    }
    let fx = Fixture::new("ses3", 1, 2, 30, 600, 2).await;
    let port = moto_support::free_port();
    // The S3 keys reach each child process through its own environment (a process-wide
    // `set_var` would race with the other tests of this binary running in parallel).
    let env: Vec<(&str, &str)> = TRACE
        .iter()
        .copied()
        .chain([
            ("TCB_SEC_S3_AK", ACCESS_KEY_ID),
            ("TCB_SEC_S3_SK", SECRET_ACCESS_KEY),
        ])
        .collect();
    let nas = fx.add_local_destination("nas");
    let mut config = std::fs::read_to_string(&fx.config).unwrap();
    config.push_str(&format!(
        r#"
[[destinations]]
name = "offsite"
kind = "s3"
bucket = "{BUCKET}"
prefix = "copies"
endpoint = "http://127.0.0.1:{port}"
access_key_id_env = "TCB_SEC_S3_AK"
secret_access_key_env = "TCB_SEC_S3_SK"
"#
    ));
    std::fs::write(&fx.config, config).unwrap();
    let mut transcripts: Vec<(String, Vec<u8>)> = Vec::new();
    let cli = |args: &'static [&'static str]| {
        let config = fx.config.clone();
        let env = env.clone();
        async move { crash_support::run(&config, args, &env, Duration::from_secs(120)).await }
    };

    // 1. A backup at trace level that dies in the middle of a copy (S3 or local).
    let moto = started_moto(port).await;
    let mut crash_env = env.clone();
    crash_env.push((faultpoint::ENV_VAR, "copy.after_data_put:2"));
    let out = fx.backup(&crash_env, Duration::from_secs(120)).await;
    assert_died_at(&out, "copy.after_data_put");
    keep(&mut transcripts, "crashed backup", out);

    // 2. S3 down: the resumed copies fail (connection refused) and wait out a back-off.
    moto.stop();
    let out = cli(&["--json", "backup", "--resume-only"]).await;
    assert!(out.status.success(), "{}", crash_support::stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.contains("\"pending\""),
        "copies pending while S3 is down: {text}"
    );
    keep(&mut transcripts, "backup during the outage", out);

    // 3. S3 back: the copies finish; a second backup (unchanged: shared data objects), a
    //    forget that deletes the older snapshots' copies, and the listings.
    let moto = started_moto(port).await;
    for (what, args) in [
        ("resumed backup", &["--json", "backup", "--resume-only"][..]),
        ("second backup", &["--json", "backup"]),
        ("forget", &["-vvv", "forget", "--keep-last", "1", "--prune"]),
        ("snapshots", &["-vvv", "--json", "snapshots"]),
        ("jobs", &["-vvv", "jobs", "--all"]),
        ("config check", &["-vvv", "config", "check"]),
    ] {
        let out = crash_support::run(&fx.config, args, &env, Duration::from_secs(120)).await;
        assert!(
            out.status.success(),
            "{what}: {}",
            crash_support::stderr(&out)
        );
        if what == "snapshots" {
            // Every remaining snapshot is held by both destinations.
            let listing: Vec<serde_json::Value> =
                serde_json::from_slice(&out.stdout).expect("snapshots --json");
            assert_eq!(listing.len(), 3, "{listing:#?}");
            for row in &listing {
                assert_eq!(
                    row["copies"],
                    serde_json::json!(["nas", "offsite"]),
                    "{row:#}"
                );
            }
        }
        keep(&mut transcripts, what, out);
    }
    let objects = moto.objects(BUCKET).await;
    assert!(
        objects.len() >= 6,
        "the bucket holds the copies: {:?}",
        objects.iter().map(|(k, _)| k).collect::<Vec<_>>()
    );

    let mut needles = vec![
        (
            "the S3 access key id".to_string(),
            ACCESS_KEY_ID.to_string(),
        ),
        (
            "the S3 secret access key".to_string(),
            SECRET_ACCESS_KEY.to_string(),
        ),
        ("the app secret".to_string(), fx.apps[0].secret.clone()),
    ];
    for (i, t) in fx.emu.control().issued_tokens().iter().enumerate() {
        needles.push((format!("access token #{i}"), t.token.clone()));
    }
    let mut leaks = Vec::new();
    let mut log_bytes = 0usize;
    for (what, bytes) in &transcripts {
        log_bytes += bytes.len();
        for h in hits(bytes, &needles) {
            leaks.push(format!("{what}: {h}"));
        }
    }
    assert!(log_bytes > 100_000, "only {log_bytes} bytes of output");
    // The state store, the snapshots, the local destination and the config dir...
    let mut files = 0;
    for file in backup_support::walk(fx.dir.path()) {
        let bytes = std::fs::read(&file).expect("read file");
        files += 1;
        for h in hits(&bytes, &needles) {
            leaks.push(format!("{}: {h}", file.display()));
        }
    }
    assert!(
        backup_support::walk(&nas).len() >= 6,
        "the local destination was searched too"
    );
    // ...and what the S3 destination stores.
    let mut object_bytes = 0;
    for (key, bytes) in &objects {
        object_bytes += bytes.len();
        for h in hits(bytes, &needles) {
            leaks.push(format!("s3://{BUCKET}/{key}: {h}"));
        }
    }
    assert!(leaks.is_empty(), "secrets found:\n{}", leaks.join("\n"));
    eprintln!(
        "security (S3): searched {log_bytes} bytes of output, {files} files and {} objects ({object_bytes} bytes) for the S3 keys, the secret and {} tokens: 0 hits",
        objects.len(),
        needles.len() - 3
    );
    moto.stop();
    fx.emu.shutdown().await;
}
