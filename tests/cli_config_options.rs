//! Configuration options and CLI behaviour through the real binary against the emulator: a
//! per-collection query override is what the export runs, `record_collection` adds one
//! `db_back_info`-style document per snapshot, `snapshots` filters, and `--log-format json`
//! writes JSON log lines on stderr.

#[path = "backup_support/mod.rs"]
mod backup_support;

use std::path::Path;
use std::process::Output;

use backup_support::*;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_tcb-backup");

const ORDERS_QUERY: &str = r#"db.collection("orders").where({active: true}).get()"#;

async fn run(args: &[&str], config: &Path) -> Output {
    tokio::process::Command::new(BIN)
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .await
        .expect("run the binary")
}

fn describe(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `write_config` with explicit collections, a query override for orders and
/// `record_collection` on the app.
fn config_with_options(dir: &Path, base_url: &str, apps: &[TestApp]) -> std::path::PathBuf {
    let config = write_config(dir, base_url, apps, 2);
    let text = std::fs::read_to_string(&config).expect("read config");
    let text = text
        .replace(
            "api_base =",
            "record_collection = \"db_back_info\"\napi_base =",
        )
        .replace(
            r#"discover = { include = ["*"] }"#,
            &format!(
                "collections = [\"users\", \"orders\", \"products\"]\n\n[apps.envs.queries]\norders = '{ORDERS_QUERY}'"
            ),
        );
    std::fs::write(&config, text).expect("write config");
    config
}

fn snapshot_list(out: &Output) -> Vec<Value> {
    assert_eq!(out.status.code(), Some(0), "{}", describe(out));
    serde_json::from_slice::<Value>(&out.stdout)
        .expect("one JSON document")
        .as_array()
        .cloned()
        .expect("an array")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_override_record_collection_filters_and_json_logs() {
    let apps = test_apps("opts", 1, 2);
    let emu = start(emulator_config(&apps, 3, 40)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config_with_options(dir.path(), &emu.base_url(), &apps);
    let envs = &apps[0].envs;

    // With --json the progress lines go to stdout, so stderr carries only the logs.
    let out = run(&["--json", "--log-format", "json", "-v", "backup"], &config).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));

    // --log-format json: every stderr line is a JSON log record.
    let stderr = String::from_utf8_lossy(&out.stderr);
    let logs: Vec<Value> = stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON log line: {l:?}: {e}"))
        })
        .collect();
    assert!(!logs.is_empty(), "-v logs the run at info level");
    assert!(
        logs.iter()
            .all(|l| l["level"].is_string() && l["fields"].is_object()),
        "{logs:?}"
    );
    assert!(
        logs.iter()
            .any(|l| l["fields"]["message"] == "run fans out"),
        "{logs:?}"
    );

    // The override is the query the export ran: the manifest says so and the emulator
    // exported exactly the matching documents.
    for env in envs {
        let (path, m) = manifests(&dir.path().join("snapshots"))
            .into_iter()
            .find(|(_, m)| m.env == *env && m.collection == "orders")
            .expect("an orders snapshot");
        assert_eq!(m.query, ORDERS_QUERY);
        let matching = emu
            .control()
            .count_matching(env, ORDERS_QUERY)
            .expect("count");
        let all = emu
            .control()
            .documents(env, "orders")
            .expect("orders")
            .len() as u64;
        assert!(0 < matching && matching < all, "{matching} of {all}");
        assert_eq!(m.records, matching);
        let (docs, _, _) = read_snapshot(&m.data_path(&path));
        assert!(docs.iter().all(|d| d["active"] == true));
    }

    // record_collection: one info document per snapshot, in the snapshot's env.
    let snapshots = snapshot_list(&run(&["--json", "snapshots"], &config).await);
    assert_eq!(snapshots.len(), 6);
    for env in envs {
        let infos = emu
            .control()
            .documents(env, "db_back_info")
            .expect("the info collection exists");
        let mut recorded: Vec<&str> = infos
            .iter()
            .map(|d| d["snapshot_id"].as_str().expect("snapshot_id"))
            .collect();
        recorded.sort();
        let mut expected: Vec<&str> = snapshots
            .iter()
            .filter(|s| s["manifest"]["env"] == env.as_str())
            .map(|s| s["id"].as_str().expect("id"))
            .collect();
        expected.sort();
        assert_eq!(recorded, expected, "{env}");
        for info in &infos {
            let id = info["snapshot_id"].as_str().unwrap_or("");
            let snap = snapshots.iter().find(|s| s["id"] == id).expect("listed");
            assert_eq!(info["records"], snap["manifest"]["records"]);
            assert_eq!(info["sha256"], snap["manifest"]["sha256_raw"]);
        }
    }

    // snapshots filters.
    let by_env = snapshot_list(&run(&["--json", "snapshots", "--env", &envs[1]], &config).await);
    assert_eq!(by_env.len(), 3);
    assert!(by_env
        .iter()
        .all(|s| s["manifest"]["env"] == envs[1].as_str()));
    let by_coll =
        snapshot_list(&run(&["--json", "snapshots", "--collection", "users"], &config).await);
    assert_eq!(by_coll.len(), 2);
    assert!(by_coll
        .iter()
        .all(|s| s["manifest"]["collection"] == "users"));
    let both = snapshot_list(
        &run(
            &[
                "--json",
                "snapshots",
                "--env",
                &envs[0],
                "--collection",
                "orders",
            ],
            &config,
        )
        .await,
    );
    assert_eq!(both.len(), 1);
    assert_eq!(both[0]["manifest"]["env"], envs[0].as_str());
    // --limit keeps the newest.
    let newest = snapshot_list(&run(&["--json", "snapshots", "--limit", "2"], &config).await);
    assert_eq!(newest.len(), 2);
    let finished = |s: &Value| {
        s["manifest"]["finished_at"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    let latest = snapshots.iter().map(finished).max().expect("some");
    assert_eq!(finished(&newest[0]), latest);
    assert!(finished(&newest[0]) >= finished(&newest[1]));
    let none = snapshot_list(&run(&["--json", "snapshots", "--env", "no-such-env"], &config).await);
    assert!(none.is_empty());
    emu.shutdown().await;
}
