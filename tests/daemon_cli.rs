//! The real binary: `schedule next` (and its field-pointing errors), and `tcb-backup daemon`
//! against the in-process emulator — it backs up on its schedule, serves its status, reloads
//! on SIGHUP and exits 0 on SIGTERM. The schedule fires every second, so the only real time
//! spent is that second plus the backup itself; every wait is bounded.

#[path = "backup_support/mod.rs"]
mod support;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

const BIN: &str = env!("CARGO_BIN_EXE_tcb-backup");

fn append(path: &Path, text: &str) {
    let mut config = std::fs::read_to_string(path).unwrap();
    config.push_str(text);
    std::fs::write(path, config).unwrap();
}

#[tokio::test]
async fn schedule_next_lists_fire_times_and_points_at_bad_fields() {
    let dir = tempfile::tempdir().unwrap();
    let apps = support::test_apps("sn", 1, 1);
    let config = support::write_config(dir.path(), "http://127.0.0.1:9", &apps, 2);
    append(
        &config,
        r#"
[daemon]
catch_up_window = "6h"

[[schedules]]
name = "nightly"
cron = "0 0 2 * * * *"

[[schedules]]
name = "weekly-ny"
cron = "30 4 * * SUN"
time_zone = "America/New_York"
"#,
    );
    let out = tokio::process::Command::new(BIN)
        .args(["--json", "--config"])
        .arg(&config)
        .args(["schedule", "next", "--count", "3"])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc[0]["schedule"], "nightly");
    assert_eq!(doc[0]["time_zone"], "Asia/Shanghai");
    let nightly: Vec<&str> = doc[0]["next"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(nightly.len(), 3);
    assert!(
        nightly.iter().all(|t| t.contains(" 02:00:00 +08:00 ")),
        "{nightly:?}"
    );
    let weekly = doc[1]["next"].as_array().unwrap();
    assert!(weekly
        .iter()
        .all(|t| t.as_str().unwrap().contains(" 04:30:00 -0")
            && t.as_str().unwrap().ends_with("(Sun)")));

    // `--count 0` would print "never fires again" for a schedule that does fire: refused by
    // the argument parser, like an absurdly large count.
    for bad in ["0", "1001"] {
        let out = tokio::process::Command::new(BIN)
            .arg("--config")
            .arg(&config)
            .args(["schedule", "next", "--count", bad])
            .output()
            .await
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "--count {bad}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("--count") && err.contains(&format!("{bad} is not in 1..=1000")),
            "{err}"
        );
        assert!(out.stdout.is_empty());
    }

    // A bad field fails the config load, naming the key and the field.
    append(
        &config,
        r#"
[[schedules]]
name = "broken"
cron = "0 0 2 * * 8 *"
"#,
    );
    let out = tokio::process::Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .args(["schedule", "next"])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("schedules[2].cron")
            && err.contains("field 6 (day of week) `8`: out of range 0–6"),
        "{err}"
    );
}

async fn get_json(client: &reqwest::Client, url: &str) -> serde_json::Value {
    client
        .get(url)
        .bearer_auth("status-token-for-tests")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Polls `check` every 100 ms until it returns true, for at most `limit`.
async fn eventually<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_backs_up_on_schedule_reloads_on_sighup_and_exits_on_sigterm() {
    let apps = support::test_apps("dmn", 1, 1);
    let emu = support::start(support::emulator_config(&apps, 2, 20)).await;
    let dir = tempfile::tempdir().unwrap();
    let config = support::write_config(dir.path(), &emu.base_url(), &apps, 2);
    std::env::set_var("TCB_DAEMON_TEST_STATUS_TOKEN", "status-token-for-tests");
    let base = std::fs::read_to_string(&config).unwrap();
    // A fixed port, so that other commands can find the daemon through the config.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    append(
        &config,
        &format!(
            r#"
[daemon]
listen = "127.0.0.1:{port}"
status_token_env = "TCB_DAEMON_TEST_STATUS_TOKEN"
shutdown_grace = "5s"

[[schedules]]
name = "every-second"
cron = "* * * * * *"
time_zone = "UTC"
"#
        ),
    );
    let mut child = tokio::process::Command::new(BIN)
        .args(["--json", "--config"])
        .arg(&config)
        .arg("daemon")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id().unwrap().to_string();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            if v["message_type"] == "listening" {
                return v["address"].as_str().unwrap().to_string();
            }
        }
        panic!("daemon exited before listening");
    })
    .await
    .expect("daemon listening within 30 s");
    let client = reqwest::Client::new();
    let health = get_json(&client, &format!("http://{addr}/health")).await;
    assert_eq!(health["status"], "ok");
    let denied = client
        .get(format!("http://{addr}/api/schedules"))
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status().as_u16(), 401);

    // The schedule fires and the run backs up both collections.
    eventually(
        "both collections backed up",
        Duration::from_secs(60),
        || async {
            let rows = get_json(&client, &format!("http://{addr}/api/freshness")).await;
            rows.as_array().is_some_and(|r| {
                r.len() == 2
                    && r.iter()
                        .all(|c| !c["last_success"].is_null() && c["stale"] == false)
            })
        },
    )
    .await;
    let catalog = get_json(&client, &format!("http://{addr}/api/catalog")).await;
    assert!(catalog.as_array().unwrap().len() >= 2);
    let metrics = client
        .get(format!("http://{addr}/metrics"))
        .bearer_auth("status-token-for-tests")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("tcb_backup_last_success_timestamp_seconds{appid=\"wxdmn00aa55bb66cc77\",env=\"dmn-env00\""), "{metrics}");
    assert!(metrics.contains(
        "tcb_backup_schedule_fires_total{schedule=\"every-second\",outcome=\"started\"}"
    ));

    // SIGHUP: a new schedule list, the daemon keeps running.
    std::fs::write(
        &config,
        format!(
            "{base}\n[daemon]\nlisten = \"127.0.0.1:{port}\"\nstatus_token_env = \"TCB_DAEMON_TEST_STATUS_TOKEN\"\n\n[[schedules]]\nname = \"nightly\"\ncron = \"0 0 2 * * * *\"\n\n[[schedules]]\nname = \"weekly\"\ncron = \"@weekly\"\n"
        ),
    )
    .unwrap();
    let hup = tokio::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .await
        .unwrap();
    assert!(hup.success());
    eventually(
        "the reloaded schedules",
        Duration::from_secs(20),
        || async {
            let s = get_json(&client, &format!("http://{addr}/api/schedules")).await;
            s.as_array().is_some_and(|a| {
                a.len() == 2 && a[0]["name"] == "nightly" && a[1]["name"] == "weekly"
            })
        },
    )
    .await;

    // While the daemon holds the store, read-only commands ask it instead.
    let cli = |args: &'static [&'static str]| {
        let config = config.clone();
        async move {
            let out = tokio::process::Command::new(BIN)
                .args(["--json", "--config"])
                .arg(&config)
                .args(args)
                .output()
                .await
                .unwrap();
            assert!(
                out.status.success(),
                "{args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
        }
    };
    let snapshots = cli(&["snapshots"]).await;
    let first = snapshots[0]["id"].as_str().unwrap().to_string();
    assert!(snapshots.as_array().unwrap().len() >= 2);
    let jobs = cli(&["jobs", "--all"]).await;
    assert!(jobs
        .as_array()
        .unwrap()
        .iter()
        .any(|j| j["kind"] == "backup.run" && j["status"] == "succeeded"));
    let out = tokio::process::Command::new(BIN)
        .args(["--json", "--config"])
        .arg(&config)
        .args(["show", &first])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["snapshot"]["id"], first.as_str());
    assert_eq!(shown["job"]["status"], "succeeded");
    assert!(
        shown["job"]["history"][0]["event"] == "submitted",
        "history in words: {shown}"
    );
    // Commands that write are still refused (exit 11: store locked).
    let backup = tokio::process::Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .arg("backup")
        .output()
        .await
        .unwrap();
    assert_eq!(backup.status.code(), Some(11));

    // SIGTERM: graceful stop, exit 0.
    let term = tokio::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(term.success());
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("daemon exits within 30 s of SIGTERM")
        .unwrap();
    assert_eq!(status.code(), Some(0), "exit status {status:?}");
    emu.shutdown().await;
}

/// A schedule naming an env or collection that is not configured: `config check` reports it at
/// its location (and line), and the daemon refuses to start (exit 10, invalid configuration).
#[tokio::test]
async fn config_check_and_daemon_refuse_schedules_naming_unknown_envs() {
    let dir = tempfile::tempdir().unwrap();
    let apps = support::test_apps("scr", 1, 1);
    let config = support::write_config(dir.path(), "http://127.0.0.1:9", &apps, 2);
    append(
        &config,
        r#"
[[schedules]]
name = "nightly"
envs = ["scr-env00", "scr-typo"]
"#,
    );
    for args in [&["config", "check"][..], &["daemon"][..]] {
        let out = tokio::process::Command::new(BIN)
            .arg("--config")
            .arg(&config)
            .args(args)
            .output()
            .await
            .unwrap();
        assert_eq!(out.status.code(), Some(10), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("schedules[0].envs[1]")
                && err.contains("env `scr-typo` is not configured")
                && err.contains("line "),
            "{args:?}: {err}"
        );
    }
}
