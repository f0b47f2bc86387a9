//! The *local* clock jumping while a backup is interrupted. The binary has no injectable clock,
//! so the test runs it under libfaketime (`LD_PRELOAD`, Debian package `faketime`) with the
//! wall clock moved: a backup killed mid-poll resumes with the clock two days ahead, or three
//! hours back; then a new backup runs two days ahead. Each must finish with the invariants of
//! `crash_support` (every snapshot recorded once and verified, no second export of a committed
//! id, nothing left open) — the engine's stored due times and the workflows' stored
//! timestamps are from another "time", and must not strand a job or corrupt a snapshot.
//!
//! Without libfaketime the test skips, or fails under `TCB_REQUIRE_PRIVILEGED_TESTS=1` (CI
//! installs the package).

// Shared with the workflow tests (their file); its style lints are theirs.
#[allow(clippy::field_reassign_with_default)]
mod backup_support;
mod crash_support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use crash_support::{assert_died_at, describe, skip_or_fail, stderr, Fixture, SpareExports};
use tcb_backup::faultpoint;

/// Where Debian and Ubuntu put the preload library.
const LIBFAKETIME: [&str; 2] = [
    "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
    "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
];

fn libfaketime() -> Option<PathBuf> {
    LIBFAKETIME.iter().map(PathBuf::from).find(|p| p.exists())
}

/// `backup` under libfaketime with the wall clock moved by `offset` (e.g. "-3h", "+2d");
/// the monotonic clock is left alone (timers and timeouts keep working), as it is when an
/// operator or NTP steps the system clock.
async fn backup_at(
    fx: &Fixture,
    lib: &std::path::Path,
    offset: &str,
    args: &[&str],
    extra: &[(&str, &str)],
) -> Output {
    let lib = lib.display().to_string();
    let mut env: Vec<(&str, &str)> = vec![
        ("LD_PRELOAD", &lib),
        ("FAKETIME", offset),
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
    ];
    env.extend_from_slice(extra);
    crash_support::run(&fx.config, args, &env, Duration::from_secs(120)).await
}

/// A backup killed mid-poll with the true time; returns the fixture, the library and the
/// exports the crash left uncommitted. None when the test skips.
async fn killed_mid_poll(
    prefix: &str,
) -> Option<(Fixture, PathBuf, BTreeMap<(String, String), BTreeSet<u64>>)> {
    let lib = libfaketime().or_else(|| skip_or_fail("libfaketime is not installed"))?;
    let fx = Fixture::new(prefix, 1, 3, 30, 0, 1).await;
    let out = backup_at(
        &fx,
        &lib,
        "+0",
        &["--json", "backup"],
        &[(faultpoint::ENV_VAR, "backup.before_step.polling:2")],
    )
    .await;
    assert_died_at(&out, "backup.before_step.polling");
    let left = fx.uncommitted_exports();
    Some((fx, lib, left))
}

/// Resumes with the clock moved by `offset` until the run finishes (at most 3 processes),
/// then checks the invariants and that no committed export was exported again.
async fn resume_and_check(
    fx: &Fixture,
    lib: &std::path::Path,
    offset: &str,
    left: BTreeMap<(String, String), BTreeSet<u64>>,
) {
    let mut finished = false;
    for _ in 0..3 {
        let out = backup_at(fx, lib, offset, &["--json", "backup", "--resume-only"], &[]).await;
        assert_ne!(out.status.code(), Some(101), "panicked: {}", stderr(&out));
        if out.status.success() {
            finished = true;
            break;
        }
        eprintln!(
            "resume with the clock at {offset}: {}",
            describe(&out.status)
        );
    }
    assert!(
        finished,
        "the interrupted backup never finished with the clock at {offset}"
    );
    let found = fx.check_invariants().await;
    fx.check_exports(&found, &SpareExports::Exactly(left));
}

/// The clock two days ahead when the killed backup resumes (every stored due time is long
/// past, every stored timestamp old): it finishes at once, nothing duplicated or lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_clock_jumps_ahead_mid_backup() {
    let Some((fx, lib, left)) = killed_mid_poll("elc").await else {
        return;
    };
    resume_and_check(&fx, &lib, "+2d", left).await;
    fx.emu.shutdown().await;
}

/// After the resume above, the next backup finishes promptly (known problem 10, fixed): the
/// export seen finished after the jump "took" two days by the clock, a duration measured
/// across an interruption, so it is not recorded and cannot delay the next first poll (which
/// history could delay by at most the stall timeout anyway). The same holds without any clock
/// jump when a killed backup resumes after a long downtime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn next_backup_after_a_jump_ahead_polls_promptly() {
    let Some((fx, lib, left)) = killed_mid_poll("ela").await else {
        return;
    };
    resume_and_check(&fx, &lib, "+2d", left).await;
    let out = backup_at(&fx, &lib, "+2d", &["--json", "backup"], &[]).await;
    assert!(
        out.status.success(),
        "backup with the clock 2 days ahead: {}",
        stderr(&out)
    );
    fx.check_invariants_n(2).await;
    fx.emu.shutdown().await;
}

/// The clock three hours back when the killed backup resumes: every stored due time and
/// commit time lies in the "future". It finishes as with the clock unchanged: at open the
/// engine restarts each wait from now (known problem 9: the job interrupted mid-poll used to
/// sleep until its stored due time, three hours away).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_clock_jumps_back_mid_backup() {
    let Some((fx, lib, left)) = killed_mid_poll("elb").await else {
        return;
    };
    resume_and_check(&fx, &lib, "-3h", left).await;
    fx.emu.shutdown().await;
}
