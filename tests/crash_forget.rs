//! The crash matrix for `forget --prune`: the real binary is killed (SIGKILL) at each point of
//! deleting a snapshot (`faultpoint::FORGET_POINTS`), started again without the fault, and the
//! outcome checked: the kept snapshot still verifies (data read included), the forgotten one is
//! fully gone — data file, manifest, catalog entry, its copy at the destination — and nothing
//! is left behind (no stray file locally or at the destination, no copy job).
//!
//! `crash_matrix.rs` checks that each declared point has a case here or in another crash file.

// Shared with the workflow tests (their file); its style lints are theirs.
#[allow(clippy::field_reassign_with_default)]
mod backup_support;
mod crash_support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use crash_support::{assert_died_at, run, Fixture};
use tcb_backup::destination::copy::CopyRecords;
use tcb_backup::faultpoint;
use tcb_backup::retention::forget::CatalogHooks;
use tcb_backup::verify::VerificationStore;
use tcb_state::{Engine, EngineOptions};

const FORGET: &[&str] = &["forget", "--keep-last", "1", "--prune"];

/// The cases below, one per point, in the order a deletion passes them.
const CASES: &[&str] = &[
    "forget.after_remote_copies",
    "forget.after_mark",
    "forget.after_manifest_removed",
    "forget.after_files_removed",
];

#[test]
fn every_forget_point_has_a_case() {
    assert_eq!(CASES, faultpoint::FORGET_POINTS);
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if !dir.exists() {
        return out;
    }
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push(path);
        }
    }
    out.sort();
    out
}

fn names(paths: &[PathBuf]) -> Vec<String> {
    paths
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

async fn crash_at(point: &str) {
    assert!(faultpoint::is_declared(point), "{point} is not declared");
    let fx = Fixture::new("crashforget", 1, 1, 12, 0, 1).await;
    let nas = fx.add_local_destination("nas");
    fx.backup_until_done(3).await;
    // A changed collection, so the second snapshot has a data file of its own.
    let (env, collection) = fx.targets()[0].clone();
    fx.emu
        .control()
        .insert_documents(&env, &collection, vec![serde_json::json!({"_id": "added"})])
        .unwrap();
    fx.backup_until_done(3).await;
    let catalog = fx.catalog().await;
    assert_eq!(catalog.len(), 2, "{catalog:#?}");
    let local = files(&fx.snapshots_dir());
    assert_eq!(local.len(), 4, "{local:?}");
    assert_eq!(names(&files(&nas)), names(&local), "both copied");
    let mut ids: Vec<(String, String)> = catalog
        .iter()
        .map(|s| {
            (
                s["manifest"]["finished_at"].as_str().unwrap().to_string(),
                s["id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    ids.sort();
    let (old, new) = (ids[0].1.clone(), ids[1].1.clone());
    let job_of = |id: &str| id.rsplit('/').next().unwrap().to_string();

    let out = run(
        &fx.config,
        FORGET,
        &[(faultpoint::ENV_VAR, point)],
        Duration::from_secs(60),
    )
    .await;
    assert_died_at(&out, point);
    fx.until_done(FORGET, 2).await;

    let catalog = fx.catalog().await;
    let listed: Vec<&str> = catalog.iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert_eq!(listed, vec![new.as_str()], "{point}");
    let left = files(&fx.snapshots_dir());
    assert_eq!(left.len(), 2, "{point}: {left:?}");
    assert!(
        names(&left).iter().all(|n| n.contains(&job_of(&new))),
        "{point}: {left:?}"
    );
    assert_eq!(
        names(&files(&nas)),
        names(&left),
        "{point}: the destination holds exactly the kept snapshot's copy"
    );
    assert!(
        !names(&files(&nas))
            .iter()
            .any(|n| n.contains(&job_of(&old))),
        "{point}"
    );
    // The kept snapshot verifies, data included; no job is left over.
    fx.until_done(&["check", "--read-data"], 1).await;
    assert!(fx.open_jobs().await.is_empty(), "{point}");
    // A third run has nothing left to do.
    let out = fx
        .until_done(&["--json", "forget", "--keep-last", "1", "--prune"], 1)
        .await;
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        report["removed"],
        serde_json::json!([]),
        "{point}: {report:#}"
    );
    // No record of the forgotten snapshot is left in the state store either.
    let engine = Engine::open(&fx.state_dir(), EngineOptions::default()).unwrap();
    let marks = engine
        .kv(CatalogHooks::FORGETTING_NAMESPACE)
        .scan_prefix::<serde_json::Value>("")
        .unwrap();
    assert!(marks.is_empty(), "{point}: {marks:?}");
    let verification = VerificationStore::new(engine.kv(VerificationStore::NAMESPACE));
    assert!(verification.get(&old).unwrap().is_none(), "{point}");
    assert!(verification.get(&new).unwrap().is_some(), "{point}");
    let copies = CopyRecords::new(engine.kv(CopyRecords::NAMESPACE));
    assert!(copies.of_snapshot(&old).unwrap().is_empty(), "{point}");
    assert_eq!(copies.of_snapshot(&new).unwrap().len(), 1, "{point}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forget_killed_after_remote_copies() {
    crash_at("forget.after_remote_copies").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forget_killed_after_mark() {
    crash_at("forget.after_mark").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forget_killed_after_manifest_removed() {
    crash_at("forget.after_manifest_removed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forget_killed_after_files_removed() {
    crash_at("forget.after_files_removed").await;
}
