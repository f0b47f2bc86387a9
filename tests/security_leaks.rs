//! Security evidence: a full backup at trace log level with API faults on (refused tokens,
//! transient errors, expired and truncated downloads), a crash in the middle, a token
//! force-refreshed by "another service", then every byte the tool produced — stdout and stderr
//! of every process, every file of the state store, the destination and the config dir — is
//! searched for the app secret and every access token the emulator ever issued: zero hits.
//! Also: files 0600 and directories 0700 in the state store and the destination.

// Shared with the workflow tests (their file); its style lints are theirs.
#[allow(clippy::field_reassign_with_default)]
mod backup_support;
mod crash_support;

use std::path::Path;
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

/// KNOWN BUG (reported to the lead): the state store directory is created 0755 and sled's files
/// 0644 (umask), so other local users can read job states and the catalog. Fix: create the
/// state dir 0700 before `Engine::open` (and/or open sled files 0600).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]

async fn state_store_is_private() {
    let fx = Fixture::new("ses", 1, 2, 20, 0, 2).await;
    fx.backup_until_done(1).await;
    let bad = private_modes(&fx.state_dir());
    assert!(bad.is_empty(), "not private:\n{}", bad.join("\n"));
    fx.emu.shutdown().await;
}
