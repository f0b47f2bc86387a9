//! Shared pieces of the reliability tests (crash matrix, soak, environment faults, security):
//! run the real `tcb-backup` binary against an in-process emulator, kill it, restart it, and
//! check the invariants every backup must keep whatever happened to the process:
//!
//! - every collection ends with exactly one snapshot, Recorded in the catalog (one entry, no
//!   duplicate), whose data file verifies against its manifest (sizes, sha256, record count)
//!   and holds exactly the emulator's documents;
//! - no temporary or orphaned file is visible in the destination;
//! - no job is left active or failed;
//! - no second export for a job whose export job id was committed: per (env, collection),
//!   every export the emulator created is a recorded snapshot's or one a crash left
//!   uncommitted (`check_exports`, with the spare exports each caller can account for).

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Output, Stdio};
use std::time::Duration;

use serde_json::Value;
use tcb_backup::archive;
use tcb_backup::emulator::EmulatorHandle;
use tcb_backup::manifest::Manifest;
use tcb_state::{Engine, EngineOptions, HistoryEvent, JobFilter, JobView};

use super::backup_support::{self, TestApp};

pub const BIN: &str = env!("CARGO_BIN_EXE_tcb-backup");

/// One test's world: an emulator, a temp dir with config, state and snapshots.
pub struct Fixture {
    pub emu: EmulatorHandle,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub apps: Vec<TestApp>,
}

impl Fixture {
    /// `collections` seeded collections of `records` records in each env of one app, plus
    /// `big_records` records (~250 bytes each) in a collection named `big` so downloads span
    /// many chunks.
    pub async fn new(
        prefix: &str,
        envs: usize,
        collections: u32,
        records: u64,
        big_records: usize,
        concurrency: usize,
    ) -> Fixture {
        let apps = backup_support::test_apps(prefix, 1, envs);
        let cfg = backup_support::emulator_config(&apps, collections, records);
        let emu = backup_support::start(cfg).await;
        if big_records > 0 {
            for env in &apps[0].envs {
                let docs: Vec<_> = (0..big_records)
                    .map(|n| serde_json::json!({ "_id": format!("big-{n:07}"), "n": n, "pad": "p".repeat(200) }))
                    .collect();
                emu.control()
                    .insert_documents(env, "big", docs)
                    .expect("insert big collection");
            }
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let config = backup_support::write_config(dir.path(), &emu.base_url(), &apps, concurrency);
        Fixture {
            emu,
            dir,
            config,
            apps,
        }
    }

    pub fn snapshots_dir(&self) -> PathBuf {
        self.dir.path().join("snapshots")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// Adds a `[[destinations]]` table of kind "local" named `name` to the config; returns its
    /// directory (beside the snapshots, not under them).
    pub fn add_local_destination(&self, name: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        let mut text = std::fs::read_to_string(&self.config).expect("read config");
        text.push_str(&format!(
            "\n[[destinations]]\nname = \"{name}\"\nkind = \"local\"\npath = \"{}\"\n",
            path.display()
        ));
        std::fs::write(&self.config, text).expect("write config");
        path
    }

    /// Every (env, collection) the emulator holds for the test app.
    pub fn targets(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for env in &self.apps[0].envs {
            for c in self.emu.control().collections(env).expect("collections") {
                out.push((env.clone(), c));
            }
        }
        out.sort();
        out
    }

    /// The export job ids the emulator created, per (env, collection), ascending.
    pub fn exports(&self) -> BTreeMap<(String, String), Vec<u64>> {
        let mut out: BTreeMap<(String, String), Vec<u64>> = BTreeMap::new();
        for env in &self.apps[0].envs {
            for j in self.emu.control().jobs(env) {
                if j.export {
                    out.entry((env.clone(), j.collection.clone()))
                        .or_default()
                        .push(j.job_id);
                }
            }
        }
        for ids in out.values_mut() {
            ids.sort_unstable();
        }
        out
    }

    /// `tcb-backup backup --json` with `env` added, killed after `timeout` if still running.
    pub async fn backup(&self, env: &[(&str, &str)], timeout: Duration) -> Output {
        run(&self.config, &["--json", "backup"], env, timeout).await
    }

    /// Runs `backup` until it exits 0 (at most `max` times), returning the last output.
    pub async fn backup_until_done(&self, max: usize) -> Output {
        self.until_done(&["--json", "backup"], max).await
    }

    /// Runs the binary with `args` (no fault point) until it exits 0, at most `max` times;
    /// returns the last output.
    pub async fn until_done(&self, args: &[&str], max: usize) -> Output {
        let mut last = None;
        for _ in 0..max {
            let out = run(&self.config, args, &[], Duration::from_secs(120)).await;
            let ok = out.status.success();
            last = Some(out);
            if ok {
                break;
            }
        }
        let out = last.expect("at least one run");
        assert!(
            out.status.success(),
            "{args:?} did not finish: {}\nstderr:\n{}\nstdout:\n{}",
            describe(&out.status),
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        out
    }

    /// The catalog as `tcb-backup snapshots --json` prints it.
    pub async fn catalog(&self) -> Vec<Value> {
        let out = run(
            &self.config,
            &["--json", "snapshots"],
            &[],
            Duration::from_secs(60),
        )
        .await;
        assert!(out.status.success(), "snapshots: {}", stderr(&out));
        serde_json::from_slice::<Vec<Value>>(&out.stdout).expect("snapshots --json is a list")
    }

    /// Active and failed jobs as `tcb-backup jobs --json` prints them.
    pub async fn open_jobs(&self) -> Vec<Value> {
        let out = run(
            &self.config,
            &["--json", "jobs"],
            &[],
            Duration::from_secs(60),
        )
        .await;
        assert!(out.status.success(), "jobs: {}", stderr(&out));
        serde_json::from_slice::<Vec<Value>>(&out.stdout).expect("jobs --json is a list")
    }

    /// The invariants every finished backup keeps (see the module docs). Returns the manifests.
    pub async fn check_invariants(&self) -> Vec<(PathBuf, Manifest)> {
        self.check_invariants_tolerating(false).await.0
    }

    /// [`Fixture::check_invariants`], optionally tolerating (and counting) stale manifest temp
    /// files: the known leak when a crash falls between a manifest's write and its rename.
    pub async fn check_invariants_tolerating(
        &self,
        manifest_temps: bool,
    ) -> (Vec<(PathBuf, Manifest)>, usize) {
        self.check_invariants_with(1, manifest_temps).await
    }

    /// [`Fixture::check_invariants`] after `per_collection` backups of unchanged collections:
    /// that many snapshots of each (later ones may share an earlier one's data file).
    pub async fn check_invariants_n(&self, per_collection: usize) -> Vec<(PathBuf, Manifest)> {
        self.check_invariants_with(per_collection, false).await.0
    }

    async fn check_invariants_with(
        &self,
        per_collection: usize,
        manifest_temps: bool,
    ) -> (Vec<(PathBuf, Manifest)>, usize) {
        let targets = self.targets();
        let found = backup_support::manifests(&self.snapshots_dir());
        let mut seen: BTreeMap<(String, String), usize> = BTreeMap::new();
        for (path, m) in &found {
            let n = seen
                .entry((m.env.clone(), m.collection.clone()))
                .or_default();
            *n += 1;
            assert!(
                *n <= per_collection,
                "{n} snapshots of {}/{} (the last: {})",
                m.env,
                m.collection,
                path.display()
            );
            let data = m.data_path(path);
            archive::verify_snapshot(&data, m, true)
                .unwrap_or_else(|e| panic!("{} does not verify: {e}", data.display()));
            backup_support::check_snapshot(path, m, &self.emu);
        }
        let have: Vec<_> = seen.keys().cloned().collect();
        assert_eq!(have, targets, "snapshots of every collection");
        assert!(
            seen.values().all(|n| *n == per_collection),
            "{per_collection} snapshot(s) per collection: {seen:?}"
        );
        let tolerated = self.check_no_stray_files(&found, manifest_temps);

        let catalog = self.catalog().await;
        let ids: Vec<&str> = catalog
            .iter()
            .map(|e| e.get("id").and_then(Value::as_str).unwrap_or(""))
            .collect();
        let unique: BTreeSet<&str> = ids.iter().copied().collect();
        assert_eq!(unique.len(), ids.len(), "duplicate catalog ids: {ids:?}");
        assert_eq!(
            ids.len(),
            targets.len() * per_collection,
            "one catalog entry per snapshot"
        );

        // Nothing active or failed: a run whose failed collections were retried ends by their
        // new outcome (retrying a collection reopens its run).
        let open = self.open_jobs().await;
        assert!(open.is_empty(), "jobs left active or failed: {open:#?}");
        (found, tolerated)
    }

    /// Every file in the destination is a published data file with its manifest or a manifest
    /// of one: no temp file, no data file without manifest.
    pub fn check_no_stray_files(
        &self,
        found: &[(PathBuf, Manifest)],
        manifest_temps: bool,
    ) -> usize {
        let mut tolerated = 0;
        let expected: BTreeSet<PathBuf> = found
            .iter()
            .flat_map(|(p, m)| [p.clone(), m.data_path(p)])
            .collect();
        for f in backup_support::walk(&self.snapshots_dir()) {
            let name = f.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if manifest_temps && name.starts_with(".tmp-") && name.contains(".manifest.json-") {
                tolerated += 1;
                continue;
            }
            assert!(
                !name.starts_with(".tmp-"),
                "leftover temp file {}",
                f.display()
            );
            assert!(
                expected.contains(&f),
                "stray file in the destination: {}",
                f.display()
            );
        }
        tolerated
    }

    /// The `backup.collection` jobs of the store, read with the binary dead or finished
    /// (opening the store recovers jobs a killed process left running, exactly as the next run
    /// of the binary would).
    fn collection_jobs(&self) -> Vec<JobView> {
        let engine = Engine::open(&self.state_dir(), EngineOptions::default())
            .unwrap_or_else(|e| panic!("the store does not open: {e}"));
        let jobs = engine
            .list(&JobFilter {
                kind: Some("backup.collection".into()),
                ..JobFilter::default()
            })
            .expect("list backup.collection jobs");
        jobs.iter()
            .map(|s| {
                engine
                    .job(s.id)
                    .expect("read job")
                    .expect("listed job exists")
            })
            .collect()
    }

    /// Every export job id a `backup.collection` job has committed (all phases from
    /// ExportCreated on carry it), with the job and its (env, collection).
    pub fn committed_exports(&self) -> Vec<CommittedExport> {
        self.collection_jobs()
            .iter()
            .filter_map(|job| {
                let export = job.state.pointer("/phase/export/job_id")?.as_u64()?;
                Some(CommittedExport {
                    job: job.id().0,
                    target: job_target(job),
                    export,
                })
            })
            .collect()
    }

    /// Per (env, collection), the exports the emulator created whose id no job committed: the
    /// orphans a crash just left (call it with the process dead). A resumed job cannot know
    /// these ids, so each stays an orphan for good.
    pub fn uncommitted_exports(&self) -> BTreeMap<(String, String), BTreeSet<u64>> {
        let committed: BTreeSet<u64> = self
            .committed_exports()
            .into_iter()
            .map(|c| c.export)
            .collect();
        let mut out = BTreeMap::new();
        for (target, ids) in self.exports() {
            let left: BTreeSet<u64> = ids
                .into_iter()
                .filter(|id| !committed.contains(id))
                .collect();
            if !left.is_empty() {
                out.insert(target, left);
            }
        }
        out
    }

    /// Per (env, collection), how many times its jobs' steps ended without committing their
    /// work: crash recoveries, retries scheduled after a failed step, and failures (including
    /// crash loops). Each export the server created but no job committed needs one of these
    /// (the export call is the only side effect of its step, and a step that commits keeps the
    /// id), so this bounds the orphaned exports of each collection.
    pub fn interrupted_steps(&self) -> BTreeMap<(String, String), usize> {
        let mut out: BTreeMap<(String, String), usize> = BTreeMap::new();
        for job in self.collection_jobs() {
            let n = job
                .history
                .iter()
                .filter(|h| {
                    matches!(
                        h.event,
                        HistoryEvent::Recovered { .. }
                            | HistoryEvent::RetryScheduled { .. }
                            | HistoryEvent::Failed { .. }
                    )
                })
                .count();
            *out.entry(job_target(&job)).or_default() += n;
        }
        out
    }

    /// No second export for any job whose export id was committed: every export of a
    /// collection is one a snapshot was made from, or one of the spare exports `spare` allows
    /// for that same collection (see [`SpareExports`]). The newest export of each collection
    /// is always one a snapshot was made from.
    pub fn check_exports(&self, found: &[(PathBuf, Manifest)], spare: &SpareExports) {
        let exports = self.exports();
        let mut recorded: BTreeMap<(String, String), BTreeSet<u64>> = BTreeMap::new();
        for (_, m) in found {
            recorded
                .entry((m.env.clone(), m.collection.clone()))
                .or_default()
                .insert(m.export_job_id);
        }
        for (target, used) in &recorded {
            let ids = exports.get(target).cloned().unwrap_or_default();
            let (env, collection) = target;
            assert!(
                ids.last().is_some_and(|newest| used.contains(newest)),
                "{env}/{collection}: the newest export must be a recorded snapshot's: exports {ids:?}, recorded {used:?}"
            );
            let unused: BTreeSet<u64> = ids
                .iter()
                .copied()
                .filter(|id| !used.contains(id))
                .collect();
            match spare {
                SpareExports::None => assert!(
                    unused.is_empty(),
                    "{env}/{collection}: exports {unused:?} besides the recorded ones {used:?}"
                ),
                SpareExports::Exactly(allowed) => {
                    let expected = allowed.get(target).cloned().unwrap_or_default();
                    assert_eq!(
                        unused, expected,
                        "{env}/{collection}: the exports besides the recorded ones {used:?} must be exactly the ones the crashes left uncommitted"
                    );
                }
                SpareExports::AtMost(allowed) => {
                    let max = allowed.get(target).copied().unwrap_or(0);
                    assert!(
                        unused.len() <= max,
                        "{env}/{collection}: {} exports besides the recorded ones {used:?}, at most {max} allowed: {unused:?}",
                        unused.len()
                    );
                }
            }
        }
        for target in exports.keys() {
            assert!(
                recorded.contains_key(target),
                "{}/{}: exported, but no snapshot recorded",
                target.0,
                target.1
            );
        }
    }
}

/// One export id a `backup.collection` job committed.
#[derive(Clone, Debug)]
pub struct CommittedExport {
    pub job: u64,
    pub target: (String, String),
    pub export: u64,
}

/// The (env, collection) a `backup.collection` job backs up, from its persisted spec.
fn job_target(job: &JobView) -> (String, String) {
    let field = |name: &str| {
        job.state
            .pointer(&format!("/spec/target/{name}"))
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("job {} has no spec.target.{name}", job.id().0))
            .to_string()
    };
    (field("env"), field("collection"))
}

/// The exports [`Fixture::check_exports`] allows per (env, collection) besides the ones
/// snapshots were made from. A collection not named allows none.
pub enum SpareExports {
    /// No collection has any.
    None,
    /// Exactly these ids: the orphans the crashes left ([`Fixture::uncommitted_exports`]).
    Exactly(BTreeMap<(String, String), BTreeSet<u64>>),
    /// At most this many (e.g. [`Fixture::interrupted_steps`], when the crashes are too many
    /// to inspect each).
    AtMost(BTreeMap<(String, String), usize>),
}

/// Set (to 1) where the tests that need root or an extra tool must run (CI runs as root and
/// installs the tools): then such a test fails instead of skipping, so it cannot silently stop
/// running.
pub const REQUIRE_ENV: &str = "TCB_REQUIRE_PRIVILEGED_TESTS";

/// A test that cannot run here: prints why and skips (None), or fails when [`REQUIRE_ENV`]
/// is 1.
pub fn skip_or_fail<T>(why: &str) -> Option<T> {
    let required = std::env::var(REQUIRE_ENV).is_ok_and(|v| v == "1");
    assert!(!required, "{REQUIRE_ENV}=1 but {why}");
    eprintln!("SKIP: {why}");
    None
}

/// Runs the binary with `args` after `--config`, extra env, a deadline (then SIGKILL).
pub async fn run(config: &Path, args: &[&str], env: &[(&str, &str)], timeout: Duration) -> Output {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.arg("--config")
        .arg(config)
        .args(args)
        .env_remove(tcb_backup::faultpoint::ENV_VAR)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn tcb-backup");
    let mut out_pipe = child.stdout.take().expect("stdout");
    let mut err_pipe = child.stderr.take().expect("stderr");
    let out_reader = tokio::spawn(async move {
        let mut buf = Vec::new();
        let _ = tokio::io::AsyncReadExt::read_to_end(&mut out_pipe, &mut buf).await;
        buf
    });
    let err_reader = tokio::spawn(async move {
        let mut buf = Vec::new();
        let _ = tokio::io::AsyncReadExt::read_to_end(&mut err_pipe, &mut buf).await;
        buf
    });
    let status = tokio::time::timeout(timeout, child.wait()).await;
    let timed_out = status.is_err();
    let status = match status {
        Ok(s) => s.expect("wait for tcb-backup"),
        Err(_) => {
            let _ = child.start_kill();
            child.wait().await.expect("reap tcb-backup")
        }
    };
    let out = Output {
        status,
        stdout: out_reader.await.unwrap_or_default(),
        stderr: err_reader.await.unwrap_or_default(),
    };
    if timed_out {
        let tail = |b: &[u8]| {
            let t = String::from_utf8_lossy(b).into_owned();
            let start = t.len().saturating_sub(4000);
            t.get(start..).unwrap_or("").to_string()
        };
        panic!(
            "tcb-backup {args:?} still running after {timeout:?}; stderr tail:\n{}\nstdout tail:\n{}",
            tail(&out.stderr),
            tail(&out.stdout)
        );
    }
    out
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn describe(status: &ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(s)) => format!("signal {s}"),
        _ => "unknown".into(),
    }
}

/// The process died at the armed fault point (SIGKILL after the faultpoint line).
pub fn assert_died_at(out: &Output, point: &str) {
    use std::os::unix::process::ExitStatusExt;
    let err = stderr(out);
    assert_eq!(
        out.status.signal(),
        Some(9),
        "expected a SIGKILL at {point}, got {}; stderr:\n{err}",
        describe(&out.status)
    );
    assert!(
        err.contains(&format!("faultpoint {point} hit")),
        "died, but not at {point}: {err}"
    );
}
