//! The binary's documented exit codes and `--json` shapes: missing config (10), locked store
//! (11), refused credentials (12), partial failure (3), success (0).

#[path = "backup_support/mod.rs"]
mod backup_support;

use std::path::{Path, PathBuf};
use std::process::Output;

use backup_support::*;
use serde_json::Value;
use tcb_backup::emulator::{FaultAction, FaultRule};

const BIN: &str = env!("CARGO_BIN_EXE_tcb-backup");

async fn run(args: &[&str], config: &Path) -> Output {
    tokio::process::Command::new(BIN)
        .arg("--config")
        .arg(config)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .await
        .expect("run the binary")
}

fn json_lines(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect()
}

fn describe(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test]
async fn missing_config_exits_10_with_a_json_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("nope.toml");
    let out = run(&["--json", "backup"], &config).await;
    assert_eq!(out.status.code(), Some(10), "{}", describe(&out));
    let lines = json_lines(&out);
    let last = lines.last().expect("an error line");
    assert_eq!(last["message_type"], "error");
    assert_eq!(last["exit_code"], 10);
    assert!(last["message"]
        .as_str()
        .unwrap_or("")
        .contains("tcb-backup init"));

    let out = run(&["snapshots"], &config).await;
    assert_eq!(out.status.code(), Some(10), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no configuration"));
}

#[tokio::test]
async fn init_then_config_check() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("tcb-backup.toml");
    let out = run(&["--json", "init"], &config).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(config.exists());
    let again = run(&["init"], &config).await;
    assert_eq!(again.status.code(), Some(1), "init refuses to overwrite");
    let check = run(&["--json", "config", "check"], &config).await;
    assert_eq!(check.status.code(), Some(0), "{}", describe(&check));
    let doc: Value = serde_json::from_slice(&check.stdout).expect("one JSON document");
    assert!(
        doc["apps"].as_array().is_some_and(|a| !a.is_empty()),
        "{doc}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locked_store_exits_11() {
    let apps = test_apps("lock", 1, 1);
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), "http://127.0.0.1:9", &apps, 2);
    let _engine = tcb_state::Engine::open(&dir.path().join("state"), Default::default())
        .expect("this process takes the store");
    let out = run(&["snapshots"], &config).await;
    assert_eq!(out.status.code(), Some(11), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("locked"),
        "{}",
        describe(&out)
    );
    // `cancel` needs the store too (documented limitation): it cannot act while it is held.
    let out = run(&["cancel", "1"], &config).await;
    assert_eq!(out.status.code(), Some(11), "{}", describe(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_credentials_exit_12() {
    let apps = test_apps("cred", 1, 1);
    let emu = start(emulator_config(&apps, 2, 10)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), &emu.base_url(), &apps, 2);
    std::env::set_var(&apps[0].secret_env, "wrong-secret");
    let out = run(&["--json", "backup"], &config).await;
    assert_eq!(out.status.code(), Some(12), "{}", describe(&out));
    let last = json_lines(&out).pop().expect("error line");
    assert_eq!(last["message_type"], "error");
    assert_eq!(last["exit_code"], 12);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("wrong-secret"));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("wrong-secret"));
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_failure_exits_3_and_success_exits_0() {
    let apps = test_apps("part", 1, 1);
    let emu = start(emulator_config(&apps, 4, 20)).await;
    emu.control().add_fault(FaultRule::next(
        "databasemigrateexport",
        1,
        FaultAction::FailJob {
            message: "disk on fire".into(),
        },
    ));
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), &emu.base_url(), &apps, 1);
    let out = run(&["--json", "backup"], &config).await;
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    let lines = json_lines(&out);
    assert!(
        lines.iter().all(|l| l["message_type"].is_string()),
        "{lines:?}"
    );
    let summary = lines
        .iter()
        .find(|l| l["message_type"] == "summary")
        .expect("a summary line");
    assert_eq!(summary["status"], "partially-failed");
    assert_eq!(summary["succeeded"], 3);
    assert_eq!(summary["failed"], 1);
    let rows = summary["runs"][0]["collections"].as_array().expect("rows");
    let failed: Vec<&Value> = rows.iter().filter(|r| r["status"] == "failed").collect();
    assert_eq!(failed.len(), 1);
    let err = failed[0]["error"].as_str().unwrap_or("");
    assert!(err.contains("disk on fire"), "{err}");

    // `jobs` lists the failed one; `retry` finishes it; then everything succeeded.
    let jobs = run(&["--json", "jobs"], &config).await;
    assert_eq!(jobs.status.code(), Some(0), "{}", describe(&jobs));
    let list: Value = serde_json::from_slice(&jobs.stdout).expect("one JSON document");
    let failed_job = list
        .as_array()
        .and_then(|l| {
            l.iter()
                .find(|j| j["kind"] == "backup.collection" && j["status"] == "failed")
        })
        .expect("the failed collection job is listed")["id"]
        .to_string();
    let retry = run(&["--json", "retry", &failed_job], &config).await;
    assert_eq!(retry.status.code(), Some(0), "{}", describe(&retry));
    // The retry reopened the partially failed run, which now ends Succeeded.
    let lines = json_lines(&retry);
    let run_id = lines
        .iter()
        .find(|l| l["message_type"] == "retry")
        .and_then(|l| l["reopened_run"].as_u64())
        .expect("the run was reopened");
    let results: Vec<(u64, &str)> = lines
        .iter()
        .filter(|l| l["message_type"] == "result")
        .map(|l| {
            (
                l["job"].as_u64().unwrap_or(0),
                l["status"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(results.last(), Some(&(run_id, "succeeded")), "{lines:?}");
    let jobs = run(&["--json", "jobs"], &config).await;
    let open: Value = serde_json::from_slice(&jobs.stdout).expect("one JSON document");
    assert_eq!(
        open,
        serde_json::json!([]),
        "nothing failed or active is left"
    );

    let snaps = run(&["--json", "snapshots"], &config).await;
    assert_eq!(snaps.status.code(), Some(0), "{}", describe(&snaps));
    let list: Value = serde_json::from_slice(&snaps.stdout).expect("one JSON document");
    let list = list.as_array().expect("array");
    assert_eq!(list.len(), 4);
    let id = list[0]["id"].as_str().expect("id").to_string();
    let show = run(&["--json", "show", &id], &config).await;
    assert_eq!(show.status.code(), Some(0), "{}", describe(&show));
    let doc: Value = serde_json::from_slice(&show.stdout).expect("one JSON document");
    assert_eq!(doc["snapshot"]["id"], id.as_str());
    assert!(doc["job"]["history"]
        .as_array()
        .is_some_and(|h| !h.is_empty()));

    // A second backup makes new snapshots and succeeds.
    let out = run(&["backup"], &config).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("COLLECTION") && text.contains("succeeded"),
        "{text}"
    );
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_rebuild_follows_the_files() {
    let apps = test_apps("rebuild", 1, 1);
    let emu = start(emulator_config(&apps, 3, 20)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), &emu.base_url(), &apps, 2);
    let out = run(&["backup"], &config).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    emu.shutdown().await;

    // Remove one snapshot's files: the rebuilt catalog drops it.
    let found = manifests(&dir.path().join("snapshots"));
    assert_eq!(found.len(), 3);
    let (gone_manifest, gone) = &found[0];
    std::fs::remove_file(gone.data_path(gone_manifest)).expect("rm data");
    std::fs::remove_file(gone_manifest).expect("rm manifest");
    let out = run(&["--json", "catalog", "rebuild"], &config).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let doc: Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    assert_eq!(doc["entries"], 2);
    assert_eq!(doc["removed"], 1);
    let snaps = run(&["--json", "snapshots"], &config).await;
    let list: Value = serde_json::from_slice(&snaps.stdout).expect("JSON");
    assert_eq!(list.as_array().map(Vec::len), Some(2));

    // A data file without a manifest is reported, with exit 3.
    let (keep_manifest, keep) = &found[1];
    std::fs::remove_file(keep_manifest).expect("rm manifest");
    let _ = keep;
    let out = run(&["--json", "catalog", "rebuild"], &config).await;
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    let doc: Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    assert_eq!(doc["entries"], 1);
    assert_eq!(doc["problems"][0]["kind"], "orphan_data_file", "{doc}");

    // cancel: an unknown job is an error; a finished one is left as it is.
    let out = run(&["cancel", "999999"], &config).await;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let out = run(&["--json", "cancel", "1"], &config).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let doc: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(doc["status"], "succeeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_rebuild_recreates_a_lost_state_store_from_the_files() {
    let apps = test_apps("lost", 1, 2);
    let emu = start(emulator_config(&apps, 2, 15)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), &emu.base_url(), &apps, 2);
    let out = run(&["backup"], &config).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    emu.shutdown().await;
    let before = run(&["--json", "snapshots"], &config).await;
    let before: Value = serde_json::from_slice(&before.stdout).expect("one JSON document");
    let summary = |list: &Value| -> Vec<(String, u64, u64)> {
        let mut rows: Vec<(String, u64, u64)> = list
            .as_array()
            .expect("array")
            .iter()
            .map(|s| {
                (
                    s["id"].as_str().expect("id").to_string(),
                    s["manifest"]["records"].as_u64().expect("records"),
                    s["manifest"]["bytes_raw"].as_u64().expect("bytes"),
                )
            })
            .collect();
        rows.sort();
        rows
    };
    let expected = summary(&before);
    assert_eq!(expected.len(), 4, "two envs of two collections: {before}");

    // The state store is lost; the files on disk are all that is left.
    std::fs::remove_dir_all(dir.path().join("state")).expect("rm state");
    let out = run(&["snapshots"], &config).await;
    assert_eq!(out.status.code(), Some(10), "{}", describe(&out));
    let out = run(&["--json", "catalog", "rebuild"], &config).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let doc: Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    assert_eq!(doc["entries"], 4, "{doc}");
    assert_eq!(doc["problems"], serde_json::json!([]), "{doc}");

    let after = run(&["--json", "snapshots"], &config).await;
    assert_eq!(after.status.code(), Some(0), "{}", describe(&after));
    let after: Value = serde_json::from_slice(&after.stdout).expect("one JSON document");
    assert_eq!(summary(&after), expected);
    let by_id = |list: &Value, id: &str| -> Value {
        list.as_array()
            .and_then(|l| l.iter().find(|s| s["id"] == id).cloned())
            .expect("listed")
    };
    for (id, _, _) in &expected {
        let (old, new) = (by_id(&before, id), by_id(&after, id));
        assert_eq!(old["manifest"], new["manifest"], "{id}");
        assert!(new["job"].is_null(), "no job of this store made {id}");
    }

    // Rebuilding still refuses a store someone else holds.
    let _engine = tcb_state::Engine::open(&dir.path().join("state"), Default::default())
        .expect("this process takes the store");
    let out = run(&["catalog", "rebuild"], &config).await;
    assert_eq!(out.status.code(), Some(11), "{}", describe(&out));
}

/// `write_config` with explicit collection lists instead of discovery.
fn explicit_config(dir: &Path, base_url: &str, apps: &[TestApp], collections: &[&str]) -> PathBuf {
    let config = write_config(dir, base_url, apps, 2);
    let list = collections
        .iter()
        .map(|c| format!("{c:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    let text = std::fs::read_to_string(&config)
        .expect("read config")
        .replace(
            r#"discover = { include = ["*"] }"#,
            &format!("collections = [{list}]"),
        );
    std::fs::write(&config, text).expect("write config");
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_env_or_collection_exits_1_before_any_secret_is_fetched() {
    let apps = test_apps("selerr", 1, 2);
    let dir = tempfile::tempdir().expect("tempdir");
    let config = explicit_config(dir.path(), "http://127.0.0.1:9", &apps, &["users"]);
    // No secret to fetch: resolving it would be a credential error (12), not this one.
    std::env::remove_var(&apps[0].secret_env);

    let out = run(&["--json", "backup", "--env", "nope"], &config).await;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let last = json_lines(&out).pop().expect("an error line");
    let message = last["message"].as_str().unwrap_or("");
    assert!(
        message.contains("nope") && apps[0].envs.iter().all(|e| message.contains(e.as_str())),
        "names the configured envs: {message}"
    );

    let out = run(&["backup", "--collection", "ordres"], &config).await;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("ordres") && err.contains("configured: users"),
        "{}",
        describe(&out)
    );
    assert!(!dir.path().join("state").exists(), "nothing was started");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collection_name_matching_nothing_is_warned_about() {
    let apps = test_apps("selwarn", 1, 1);
    let emu = start(emulator_config(&apps, 3, 10)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = explicit_config(dir.path(), &emu.base_url(), &apps, &["users", "orders"]);
    let out = run(
        &["--json", "backup", "--collection", "users", "ordres"],
        &config,
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--collection ordres"),
        "{}",
        describe(&out)
    );
    let lines = json_lines(&out);
    let summary = lines
        .iter()
        .find(|l| l["message_type"] == "summary")
        .expect("a summary line");
    assert_eq!(summary["succeeded"], 1, "only users: {summary}");
    let warnings = summary["warnings"].as_array().expect("warnings");
    assert_eq!(warnings.len(), 1, "{summary}");
    assert!(warnings[0].as_str().unwrap_or("").contains("ordres"));

    // With discovery the check happens once the run has listed the collections.
    let config = write_config(dir.path(), &emu.base_url(), &apps, 2);
    let out = run(&["backup", "--collection", "users", "zzz"], &config).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--collection zzz"),
        "{}",
        describe(&out)
    );
    emu.shutdown().await;
}
