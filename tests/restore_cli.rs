//! The real binary: backup → `restore` (dry run, real, refused overwrite) → `check`
//! (--read-data, --test-restore) → `forget --prune`; and a `restore` SIGKILLed mid-run that
//! `restore` (no snapshot) resumes; dates, GeoPoints, nested objects and unicode come back
//! identical from backup → restore → a second export.

mod backup_support;
mod restore_support;

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use backup_support::*;
use serde_json::Value;
use tcb_state::{Engine, JobFilter, JobStatus};

const BIN: &str = env!("CARGO_BIN_EXE_tcb-backup");

fn command(config: &Path, args: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.arg("--config")
        .arg(config)
        .args(args)
        .env("RUST_LOG", "warn")
        .kill_on_drop(true);
    cmd
}

async fn run(config: &Path, args: &[&str]) -> Output {
    command(config, args).output().await.expect("run binary")
}

fn describe(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn sorted_docs(mut docs: Vec<Value>) -> Vec<Value> {
    docs.sort_by(|a, b| a["_id"].as_str().cmp(&b["_id"].as_str()));
    docs
}

/// Snapshot ids (`<env>/<collection>/<job>`) of the manifests under `root`.
fn snapshot_ids(root: &Path) -> Vec<(String, String)> {
    manifests(root)
        .into_iter()
        .map(|(_, m)| {
            (
                format!("{}/{}/{}", m.env, m.collection, m.export_job_id),
                m.collection,
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_check_forget_through_the_cli() {
    let apps = test_apps("rcli", 1, 1);
    let emu = start(emulator_config(&apps, 2, 80)).await;
    let env = apps[0].envs[0].clone();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &emu.base_url(), &apps, 2);
    let root = dir.path().join("snapshots");

    let out = run(&config, &["backup"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let ids = snapshot_ids(&root);
    assert_eq!(ids.len(), 2);
    let (id, collection) = ids[0].clone();

    // Dry run: the plan, nothing restored.
    let before = emu.control().collections(&env).unwrap();
    let out = run(&config, &["restore", &id, "--dry-run"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("restore plan") && text.contains("_restored_"),
        "{text}"
    );
    assert_eq!(emu.control().collections(&env).unwrap(), before);

    // The real thing: a new collection with the same documents.
    let out = run(&config, &["restore", &id]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let restored = emu
        .control()
        .collections(&env)
        .unwrap()
        .into_iter()
        .find(|c| c.starts_with(&format!("{collection}_restored_")))
        .expect("restored collection");
    assert_eq!(
        sorted_docs(emu.control().documents(&env, &restored).unwrap()),
        sorted_docs(emu.control().documents(&env, &collection).unwrap())
    );

    // Restoring into it again without upsert/force is refused with exit 1.
    let out = run(&config, &["restore", &id, "--to-collection", &restored]).await;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--mode upsert"),
        "{}",
        describe(&out)
    );

    let out = run(&config, &["check", "--read-data"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let out = run(&config, &["check", "--test-restore", "--sample", "5"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("test restore of"));

    // A second backup (without the restored copy, which discovery would back up too), then
    // keep only the newest per collection.
    emu.control().drop_collection(&env, &restored).unwrap();
    let out = run(&config, &["backup"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(snapshot_ids(&root).len(), 4);
    let out = run(&config, &["forget", "--keep-last", "1"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(snapshot_ids(&root).len(), 4, "no --prune: nothing deleted");
    let out = run(&config, &["forget", "--keep-last", "1", "--prune"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let left = snapshot_ids(&root);
    assert_eq!(left.len(), 2);
    assert!(
        !left.iter().any(|(i, _)| *i == id),
        "the older snapshot went"
    );
    let out = run(&config, &["forget"]).await;
    assert_eq!(
        out.status.code(),
        Some(1),
        "an empty policy is refused: {}",
        describe(&out)
    );
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_restore_resumes() {
    let apps = test_apps("rkill", 1, 1);
    let mut cfg = emulator_config(&apps, 1, 400);
    let env = apps[0].envs[0].clone();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "http://placeholder", &apps, 1);
    // Slow virtual time: the import takes a few real seconds, so the kill lands mid-restore.
    cfg.time_scale = 2.0;
    let emu = start(cfg).await;
    let config_text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("http://placeholder", &emu.base_url());
    std::fs::write(&config, config_text).unwrap();
    emu.control().set_time_scale(200.0);
    let out = run(&config, &["backup"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    emu.control().set_time_scale(2.0);
    let (id, collection) = snapshot_ids(&dir.path().join("snapshots"))[0].clone();

    let mut child = command(
        &config,
        &["restore", &id, "--to-collection", "restored_after_kill"],
    )
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null())
    .spawn()
    .unwrap();
    // Wait until the restore has progressed to the import (deterministic point: the import
    // job exists), then kill -9.
    let mut started = false;
    for _ in 0..2000 {
        if emu.control().jobs(&env).iter().any(|j| !j.export) {
            started = true;
            break;
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(started, "the restore never started an import");
    child.kill().await.unwrap();

    emu.control().set_time_scale(200.0);
    let out = run(&config, &["restore"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(
        sorted_docs(
            emu.control()
                .documents(&env, "restored_after_kill")
                .unwrap()
        ),
        sorted_docs(emu.control().documents(&env, &collection).unwrap())
    );
    let engine = Engine::open(&dir.path().join("state"), Default::default()).unwrap();
    let jobs = engine
        .list(&JobFilter {
            kind: Some("restore.collection".into()),
            ..JobFilter::default()
        })
        .unwrap();
    assert_eq!(jobs.len(), 1, "resumed, not started again");
    assert_eq!(jobs[0].status, JobStatus::Succeeded);
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tricky_documents_survive_backup_restore_and_a_second_export() {
    let apps = test_apps("rtd", 1, 1);
    let emu = start(emulator_config(&apps, 1, 5)).await;
    let env = apps[0].envs[0].clone();
    let original = restore_support::tricky_documents(40);
    emu.control()
        .insert_documents(&env, "tricky", original.clone())
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &emu.base_url(), &apps, 2);
    let root = dir.path().join("snapshots");

    let out = run(&config, &["backup"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let (id, _) = snapshot_ids(&root)
        .into_iter()
        .find(|(_, c)| c == "tricky")
        .expect("a snapshot of tricky");
    let out = run(&config, &["restore", &id, "--to-collection", "tricky_copy"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(
        sorted_docs(emu.control().documents(&env, "tricky_copy").unwrap()),
        sorted_docs(original.clone()),
        "the restored collection holds the very documents"
    );

    // Export both again: the restored collection's snapshot equals the original's.
    let out = run(&config, &["backup"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let newest = |collection: &str| {
        let mut found: Vec<_> = manifests(&root)
            .into_iter()
            .filter(|(_, m)| m.collection == collection)
            .collect();
        found.sort_by_key(|(_, m)| m.export_job_id);
        let (path, m) = found.pop().expect("a snapshot");
        read_snapshot(&m.data_path(&path)).0
    };
    let again = sorted_docs(newest("tricky_copy"));
    assert_eq!(again, sorted_docs(newest("tricky")));
    assert_eq!(again.len(), 40);
    // Spot-check the hard parts survived as data, not as strings.
    let doc = again.iter().find(|d| d["_id"] == "doc-0007").unwrap();
    assert_eq!(doc["title"], "订单 7 — naïve café ✓ 😀");
    assert!(doc["createdAt"]["$date"].is_string(), "{doc}");
    assert_eq!(doc["location"]["type"], "Point");
    assert_eq!(doc["nested"]["level1"]["level2"]["values"][2]["deep"], "ü");
    emu.shutdown().await;
}

/// `restore --env` into an env that is not one of the snapshot's app's envs in the
/// configuration (here: an env of another configured app) is refused before anything is
/// submitted, exit 1, naming the app's envs; another env of the same app is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_into_an_env_of_another_app_is_refused_at_plan_time() {
    let apps = test_apps("renv", 2, 2);
    let emu = start(emulator_config(&apps, 1, 10)).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &emu.base_url(), &apps, 2);
    let out = run(&config, &["backup"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let (own, other_app) = (&apps[0], &apps[1]);
    let (id, _) = snapshot_ids(&dir.path().join("snapshots"))
        .into_iter()
        .find(|(id, _)| id.starts_with(&format!("{}/", own.envs[0])))
        .expect("a snapshot of the first app's first env");

    let foreign = &other_app.envs[0];
    let out = run(
        &config,
        &["restore", &id, "--env", foreign, "--to-collection", "moved"],
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    let own_envs = own.envs.join(", ");
    assert!(
        err.contains(foreign.as_str()) && err.contains(&own.appid) && err.contains(&own_envs),
        "{err}"
    );
    // Nothing was submitted or started.
    let engine = Engine::open(&dir.path().join("state"), Default::default()).unwrap();
    let restores = engine
        .list(&JobFilter {
            kind: Some("restore.collection".into()),
            ..JobFilter::default()
        })
        .unwrap();
    assert!(restores.is_empty(), "{restores:?}");
    drop(engine);
    assert!(emu.control().jobs(foreign).iter().all(|j| j.export));
    assert_eq!(emu.control().documents(foreign, "moved"), None);

    // Another env of the snapshot's own app is a valid target.
    let out = run(
        &config,
        &[
            "restore",
            &id,
            "--env",
            &own.envs[1],
            "--to-collection",
            "moved",
            "--dry-run",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    emu.shutdown().await;
}
