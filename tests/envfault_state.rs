//! Environment faults on the state store and the API side: a corrupted job record in the
//! store, a download that is truncated on every attempt, and the (server) clock jumping ahead
//! by hours in the middle of a backup. Each ends with a clear error or a completed backup, and
//! never loses or corrupts an earlier snapshot.

// Shared with the workflow tests (their file); its style lints are theirs.
#[allow(clippy::field_reassign_with_default)]
mod backup_support;
mod crash_support;

use std::path::PathBuf;
use std::time::Duration;

use crash_support::{assert_died_at, stderr, Fixture, SpareExports};
use tcb_backup::archive;
use tcb_backup::emulator::{FaultAction, FaultRule};
use tcb_backup::faultpoint;
use tcb_state::{Engine, EngineOptions, JobFilter, SledJobStore};

fn verify_all(before: &[(PathBuf, tcb_backup::manifest::Manifest)]) {
    for (path, m) in before {
        let data = m.data_path(path);
        archive::verify_snapshot(&data, m, true)
            .unwrap_or_else(|e| panic!("earlier snapshot {} damaged: {e}", data.display()));
    }
}

/// Overwrites the stored record of one active `backup.collection` job with garbage.
fn corrupt_one_active_job(fx: &Fixture) -> u64 {
    let victim = {
        let engine = Engine::open(&fx.state_dir(), EngineOptions::default()).expect("open store");
        let active = engine
            .list(&JobFilter {
                kind: Some("backup.collection".into()),
                active_only: true,
                ..JobFilter::default()
            })
            .expect("list");
        active.first().expect("an active collection job").id.0
    };
    let store = SledJobStore::open(&fx.state_dir()).expect("open sled");
    let tree = store.db().open_tree("engine").expect("engine tree");
    let mut key = vec![b'j'];
    key.extend_from_slice(&victim.to_be_bytes());
    let old = tree
        .insert(key, &b"\x00\xffnot a job record{"[..])
        .expect("overwrite");
    assert!(old.is_some(), "the job record key layout changed");
    store.db().flush().expect("flush");
    victim
}

/// A job record of the running backup is overwritten with garbage: the engine quarantines it
/// (naming it), the run counts that collection as failed and ends (it used to wait for ever),
/// the other collections finish, and no earlier snapshot is touched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_job_record_is_quarantined_not_fatal() {
    let fx = Fixture::new("ecs", 1, 3, 30, 0, 1).await;
    fx.backup_until_done(1).await;
    let before = fx.check_invariants().await;
    // A second run, stopped while its jobs are active.
    let out = fx
        .backup(
            &[(faultpoint::ENV_VAR, "backup.before_step.export_created:2")],
            Duration::from_secs(120),
        )
        .await;
    assert_died_at(&out, "backup.before_step.export_created");
    let victim = corrupt_one_active_job(&fx);

    let out = fx.backup(&[], Duration::from_secs(60)).await;
    let all = format!("{}{}", stderr(&out), String::from_utf8_lossy(&out.stdout));
    assert_ne!(out.status.code(), Some(101), "panicked: {all}");
    assert!(
        all.contains("quarantined") || all.contains("cannot be decoded"),
        "the corrupted record of job {victim} should be named: {all}"
    );
    assert_eq!(
        out.status.code(),
        Some(3),
        "a run with a quarantined collection is a partial failure: {all}"
    );
    verify_all(&before);
    // The other collections of the second run still completed.
    let now = backup_support::manifests(&fx.snapshots_dir());
    assert!(
        now.len() >= before.len() + 2,
        "{} snapshots after: {all}",
        now.len()
    );
    for (p, m) in &now {
        archive::verify_snapshot(&m.data_path(p), m, true).expect("verifies");
    }
    fx.check_no_stray_files(&now, false);
    // The store still opens and answers.
    let jobs =
        crash_support::run(&fx.config, &["jobs", "--all"], &[], Duration::from_secs(60)).await;
    assert!(jobs.status.success(), "{}", stderr(&jobs));
    fx.emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_truncated_every_time_fails_clearly() {
    let fx = Fixture::new("etd", 1, 2, 30, 0, 2).await;
    fx.backup_until_done(1).await;
    let before = fx.check_invariants().await;
    fx.emu.control().add_fault(FaultRule::with_probability(
        "download",
        1.0,
        FaultAction::TruncateBody { keep_bytes: None },
    ));
    let out = fx.backup(&[], Duration::from_secs(180)).await;
    let all = format!("{}{}", stderr(&out), String::from_utf8_lossy(&out.stdout));
    assert!(
        !out.status.success(),
        "a truncated export was accepted: {all}"
    );
    assert_ne!(out.status.code(), Some(101), "panicked: {all}");
    assert!(
        all.contains("end of file before message length reached")
            || all.contains("connection closed before message completed")
            || all.to_lowercase().contains("truncat"),
        "the error should say the download was cut short: {all}"
    );
    verify_all(&before);
    let now = backup_support::manifests(&fx.snapshots_dir());
    assert_eq!(
        now.len(),
        before.len(),
        "no snapshot from a truncated download"
    );
    fx.check_no_stray_files(&now, false);

    // Once the network behaves, `retry` finishes the failed jobs.
    fx.emu.control().clear_faults();
    let failed = fx.open_jobs().await;
    for job in failed
        .iter()
        .filter(|j| j.get("kind").and_then(|k| k.as_str()) == Some("backup.collection"))
    {
        let id = job
            .get("id")
            .and_then(|v| v.as_u64())
            .expect("id")
            .to_string();
        let out =
            crash_support::run(&fx.config, &["retry", &id], &[], Duration::from_secs(120)).await;
        assert!(out.status.success(), "retry {id}: {}", stderr(&out));
    }
    let now = backup_support::manifests(&fx.snapshots_dir());
    assert_eq!(now.len(), before.len() + 2);
    fx.emu.shutdown().await;
}

/// The emulator's clock (tokens, signed URLs, export timing) jumps six hours ahead while the
/// backup is stopped mid-poll: stored token expiries and URLs are stale. The resumed backup
/// must notice, fetch what it needs again, and finish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_clock_jump_mid_backup() {
    let fx = Fixture::new("ecj", 1, 3, 30, 0, 1).await;
    let out = fx
        .backup(
            &[(faultpoint::ENV_VAR, "backup.before_step.polling:2")],
            Duration::from_secs(120),
        )
        .await;
    assert_died_at(&out, "backup.before_step.polling");
    let tokens_before = fx.emu.control().issued_tokens().len();
    fx.emu
        .control()
        .advance_clock(Duration::from_secs(6 * 3600));
    fx.backup_until_done(2).await;
    let found = fx.check_invariants().await;
    fx.check_exports(&found, &SpareExports::None);
    assert!(
        fx.emu.control().issued_tokens().len() > tokens_before,
        "a fresh token after the jump"
    );
    fx.emu.shutdown().await;
}

/// The ids `snapshots --json` listed, sorted.
fn catalog_ids(catalog: &[serde_json::Value]) -> Vec<String> {
    let mut ids: Vec<String> = catalog
        .iter()
        .filter_map(|e| e.get("id").and_then(|v| v.as_str()).map(str::to_string))
        .collect();
    ids.sort();
    ids
}

/// A finished backup of three collections whose second catalog entry (in id order) is then
/// overwritten in the state store with bytes that are not a record. Returns the snapshots, all
/// catalog ids and the broken one.
async fn backup_with_corrupted_catalog_entry(
    prefix: &str,
) -> (
    Fixture,
    Vec<(PathBuf, tcb_backup::manifest::Manifest)>,
    Vec<String>,
    String,
) {
    let fx = Fixture::new(prefix, 1, 3, 30, 0, 1).await;
    fx.backup_until_done(1).await;
    let before = fx.check_invariants().await;
    let all_ids = catalog_ids(&fx.catalog().await);
    assert_eq!(all_ids.len(), 3);
    let victim = all_ids[1].clone();
    let store = SledJobStore::open(&fx.state_dir()).expect("open sled");
    let tree = store.db().open_tree("kv/catalog").expect("catalog tree");
    let old = tree
        .insert(victim.as_bytes(), &b"{\"id\": 7, not json"[..])
        .expect("overwrite");
    assert!(old.is_some(), "the catalog key layout changed");
    store.db().flush().expect("flush");
    drop(store);
    (fx, before, all_ids, victim)
}

/// `snapshots --json` on the broken catalog: its output and its combined stdout + stderr.
async fn list_snapshots(fx: &Fixture) -> (std::process::Output, String) {
    let out = crash_support::run(
        &fx.config,
        &["--json", "snapshots"],
        &[],
        Duration::from_secs(60),
    )
    .await;
    let all = format!("{}{}", stderr(&out), String::from_utf8_lossy(&out.stdout));
    assert_ne!(out.status.code(), Some(101), "panicked: {all}");
    (out, all)
}

/// A corrupted catalog entry in the state store: `snapshots` fails with an error naming the
/// entry (not a panic, not a generic failure), and no snapshot file is touched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_catalog_entry_is_named() {
    let (fx, before, _, victim) = backup_with_corrupted_catalog_entry("ecc").await;
    let (out, all) = list_snapshots(&fx).await;
    assert!(
        !out.status.success(),
        "listed a broken catalog as fine: {all}"
    );
    assert!(
        all.contains(&format!(
            "record {victim} in namespace catalog cannot be decoded"
        )),
        "the broken entry {victim} should be named: {all}"
    );
    verify_all(&before);
    let now = backup_support::manifests(&fx.snapshots_dir());
    assert_eq!(now.len(), before.len());
    fx.check_no_stray_files(&now, false);
    fx.emu.shutdown().await;
}

/// One undecodable catalog record hides only itself (known problem 8, fixed): `snapshots`
/// names it and lists the intact snapshots; `catalog rebuild` restores it from its manifest;
/// the invariants hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_catalog_entry_hides_only_itself_and_is_rebuilt() {
    let (fx, _, all_ids, victim) = backup_with_corrupted_catalog_entry("ech").await;
    let (out, all) = list_snapshots(&fx).await;
    assert!(
        all.contains(&victim),
        "the broken entry should be named: {all}"
    );
    let listed: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("the other entries should still be listed ({e}): {all}"));
    let others: Vec<String> = all_ids.iter().filter(|i| **i != victim).cloned().collect();
    assert_eq!(catalog_ids(&listed), others);

    let out = crash_support::run(
        &fx.config,
        &["catalog", "rebuild"],
        &[],
        Duration::from_secs(60),
    )
    .await;
    assert!(out.status.success(), "catalog rebuild: {}", stderr(&out));
    assert_eq!(
        catalog_ids(&fx.catalog().await),
        all_ids,
        "every entry back"
    );
    fx.check_invariants().await;
    fx.emu.shutdown().await;
}
