//! The real binary stopped by SIGTERM while a scheduled backup is mid-run: it exits 0 within
//! its shutdown grace, and the next start resumes that run to completion — the same export,
//! and no second run for the same (schedule, nominal time).
//!
//! The run is held inside an export status poll by the emulator's latency fault. The schedule
//! fires exactly once (a 7-field expression with a year), set by a SIGHUP reload a few seconds
//! ahead, so the only real time spent is those seconds, the grace and the backup itself.

#[path = "backup_support/mod.rs"]
mod support;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tcb_backup::emulator::{FaultAction, FaultRule};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Child;

const BIN: &str = env!("CARGO_BIN_EXE_tcb-backup");

/// Starts `tcb-backup daemon` and returns it with its listener address.
async fn start_daemon(config: &Path) -> (Child, String) {
    let mut child = tokio::process::Command::new(BIN)
        .args(["--json", "--config"])
        .arg(config)
        .arg("daemon")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
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
    (child, addr)
}

async fn signal(child: &Child, sig: &str) {
    let pid = child.id().unwrap().to_string();
    let ok = tokio::process::Command::new("kill")
        .args([sig, &pid])
        .status()
        .await
        .unwrap();
    assert!(ok.success());
}

async fn get_json(client: &reqwest::Client, url: &str) -> serde_json::Value {
    client.get(url).send().await.unwrap().json().await.unwrap()
}

/// Polls `check` every 50 ms until it returns true, for at most `limit`.
async fn eventually<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    tokio::time::timeout(limit, async {
        while !check().await {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_run_exits_0_and_the_restart_resumes_the_same_run() {
    let apps = support::test_apps("sgt", 1, 1);
    let env = apps[0].envs[0].clone();
    let emu = support::start(support::emulator_config(&apps, 1, 20)).await;
    let dir = tempfile::tempdir().unwrap();
    let config = support::write_config(dir.path(), &emu.base_url(), &apps, 2);
    let base = std::fs::read_to_string(&config).unwrap();
    let daemon_section = "\n[daemon]\nlisten = \"127.0.0.1:0\"\nshutdown_grace = \"1s\"\n";
    std::fs::write(
        &config,
        format!(
            "{base}{daemon_section}\n[[schedules]]\nname = \"nightly\"\ncron = \"0 0 2 * * * *\"\n"
        ),
    )
    .unwrap();
    let (mut child, addr) = start_daemon(&config).await;
    let client = reqwest::Client::new();

    // The first status poll of the export answers only after 8 s: the run is held there.
    emu.control().add_fault(FaultRule::next(
        "databasemigratequeryinfo",
        1,
        FaultAction::Latency { millis: 8_000 },
    ));
    // A schedule that fires once, 10 s from now (UTC, with the year: never again). The lead
    // only has to cover the reload below; a busy machine can take a few seconds for it.
    let at = jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::from_secs(10))
        .unwrap()
        .to_zoned_datetime(jiff::tz::TimeZone::UTC);
    let cron = format!(
        "{} {} {} {} {} * {}",
        at.second(),
        at.minute(),
        at.hour(),
        at.day(),
        at.month(),
        at.year()
    );
    std::fs::write(
        &config,
        format!("{base}{daemon_section}\n[[schedules]]\nname = \"once\"\ncron = \"{cron}\"\ntime_zone = \"UTC\"\n"),
    )
    .unwrap();
    signal(&child, "-HUP").await;
    eventually("the reloaded schedule", Duration::from_secs(10), || async {
        let s = get_json(&client, &format!("http://{addr}/api/schedules")).await;
        s[0]["name"] == "once"
    })
    .await;

    // The run starts, creates its export and is held in the delayed poll.
    eventually("the held status poll", Duration::from_secs(30), || async {
        emu.control().faults().is_empty()
    })
    .await;
    assert_eq!(emu.control().export_count(&env, "users"), 1);

    // SIGTERM mid-run: exit 0 within the 1 s grace (plus start-up slack), not after the poll.
    let asked = std::time::Instant::now();
    signal(&child, "-TERM").await;
    let status = tokio::time::timeout(Duration::from_secs(6), child.wait())
        .await
        .expect("daemon exits within the grace after SIGTERM")
        .unwrap();
    assert_eq!(status.code(), Some(0), "exit status {status:?}");
    assert!(asked.elapsed() < Duration::from_secs(6));
    // The run was cut short: unfinished in the store (read with the daemon stopped).
    let out = tokio::process::Command::new(BIN)
        .args(["--json", "--config"])
        .arg(&config)
        .args(["jobs", "--all"])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let jobs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let run = jobs
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["kind"] == "backup.run")
        .unwrap_or_else(|| panic!("no run in {jobs:#}"));
    let status = run["status"].as_str().unwrap().to_ascii_lowercase();
    assert!(
        ![
            "succeeded",
            "failed",
            "partially-failed",
            "partiallyfailed",
            "cancelled"
        ]
        .contains(&status.as_str()),
        "the run should be unfinished: {run:#}"
    );

    // Restart: the run resumes and completes; no second run, no second export.
    let (mut child, addr) = start_daemon(&config).await;
    eventually("the run to complete", Duration::from_secs(60), || async {
        let rows = get_json(&client, &format!("http://{addr}/api/freshness")).await;
        rows.as_array()
            .is_some_and(|r| r.len() == 1 && !r[0]["last_success"].is_null())
    })
    .await;
    let jobs = get_json(&client, &format!("http://{addr}/api/jobs?all=true")).await;
    let runs: Vec<&serde_json::Value> = jobs
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["kind"] == "backup.run")
        .collect();
    assert_eq!(runs.len(), 1, "{jobs:#}");
    assert_eq!(runs[0]["status"], "Succeeded", "{jobs:#}");
    assert!(
        runs[0]["label"]
            .as_str()
            .unwrap()
            .starts_with("schedule once @"),
        "{jobs:#}"
    );
    assert_eq!(
        emu.control().export_count(&env, "users"),
        1,
        "the resumed run re-polled its export instead of creating another"
    );
    let schedules = get_json(&client, &format!("http://{addr}/api/schedules")).await;
    assert_eq!(schedules[0]["started"], 1, "{schedules:#}");

    signal(&child, "-TERM").await;
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("daemon exits after SIGTERM")
        .unwrap();
    assert_eq!(status.code(), Some(0));
    emu.shutdown().await;
}
