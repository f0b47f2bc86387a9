//! The daemon as `tcb-backup daemon` runs it (`run_from_config`, in-process) against the
//! emulator with faults switched on:
//!
//! - SIGHUP (a message on the reload channel) re-reads the whole configuration: a collection
//!   added to the schedule is backed up by the next fire; an invalid configuration is rejected
//!   (counted, logged) and the old one keeps running;
//! - `/metrics` counts API calls and errors from the client's observer hook, and the counts by
//!   endpoint and errcode equal the emulator's own counters.
//!
//! The schedule fires every second (UTC), so the real time spent is about a second per fire
//! plus the backups themselves (the emulator runs its jobs 40x faster); every wait is bounded.

#[path = "backup_support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use tcb_backup::daemon::backup::{run_from_config, RunOptions};
use tcb_backup::emulator::{FaultAction, FaultRule};
use tokio::sync::{mpsc, oneshot};

fn config_with_schedule(base: &str, schedule: &str) -> String {
    format!("{base}\n[daemon]\nlisten = \"127.0.0.1:0\"\n\n{schedule}")
}

fn every_second(collections: &[&str]) -> String {
    let list: Vec<String> = collections.iter().map(|c| format!("{c:?}")).collect();
    format!(
        "[[schedules]]\nname = \"often\"\ncron = \"* * * * * *\"\ntime_zone = \"UTC\"\ncollections = [{}]\n",
        list.join(", ")
    )
}

async fn get(client: &reqwest::Client, addr: SocketAddr, path: &str) -> String {
    client
        .get(format!("http://{addr}{path}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

async fn get_json(client: &reqwest::Client, addr: SocketAddr, path: &str) -> serde_json::Value {
    serde_json::from_str(&get(client, addr, path).await).unwrap()
}

/// Polls `check` every 50 ms until it returns true, for at most `limit`.
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
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `name{labels} value` samples of `/metrics`, keyed by `name{labels}`.
fn samples(metrics: &str) -> BTreeMap<String, f64> {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            Some((key.to_string(), value.parse().ok()?))
        })
        .collect()
}

fn snapshot_collections(catalog: &serde_json::Value) -> Vec<String> {
    catalog
        .as_array()
        .unwrap()
        .iter()
        // Snapshot ids are `<env>/<collection>/<job id>`.
        .filter_map(|r| r["id"].as_str()?.split('/').nth(1).map(str::to_string))
        .collect()
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_applies_new_collections_rejects_bad_configs_and_metrics_match_the_server() {
    let apps = support::test_apps("rld", 1, 1);
    let mut cfg = support::emulator_config(&apps, 3, 20);
    cfg.fault_seed = 5;
    let emu = support::start(cfg).await;
    let env = apps[0].envs[0].clone();
    let mut names = emu.control().collections(&env).unwrap();
    names.sort();
    let (first, second) = (names[0].clone(), names[1].clone());
    // Faults the backup retries through; each is answered (and counted) by the emulator.
    let c = emu.control();
    c.add_fault(FaultRule::next(
        "databasemigrateexport",
        2,
        FaultAction::Errcode {
            errcode: -501001,
            errmsg: None,
        },
    ));
    c.add_fault(FaultRule::next(
        "databasemigratequeryinfo",
        2,
        FaultAction::Errcode {
            errcode: -1,
            errmsg: None,
        },
    ));
    c.add_fault(FaultRule::next(
        "databasecollectionget",
        1,
        FaultAction::HttpStatus { status: 502 },
    ));
    c.add_fault(FaultRule::next("download", 1, FaultAction::ExpiredUrl));
    c.reset_counters();

    let dir = tempfile::tempdir().unwrap();
    let path = support::write_config(dir.path(), &emu.base_url(), &apps, 2);
    let base = std::fs::read_to_string(&path).unwrap();
    write(
        &path,
        &config_with_schedule(&base, &every_second(&[&first])),
    );

    let (bound_tx, bound_rx) = oneshot::channel();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let (reload_tx, reload_rx) = mpsc::channel(4);
    let daemon = tokio::spawn(run_from_config(
        RunOptions {
            config_path: path.clone(),
            listen: None,
            bound: Some(bound_tx),
        },
        async move {
            let _ = stop_rx.await;
        },
        reload_rx,
    ));
    let addr = tokio::time::timeout(Duration::from_secs(30), bound_rx)
        .await
        .expect("listening within 30 s")
        .expect("daemon started");
    let http = reqwest::Client::new();

    eventually(
        "the first collection backed up",
        Duration::from_secs(60),
        || async {
            snapshot_collections(&get_json(&http, addr, "/api/catalog").await).contains(&first)
        },
    )
    .await;
    assert!(
        !snapshot_collections(&get_json(&http, addr, "/api/catalog").await).contains(&second),
        "not in the schedule yet"
    );

    // An invalid configuration (the schedule names an env that does not exist) is rejected;
    // the old one keeps running.
    write(
        &path,
        &config_with_schedule(
            &base,
            &format!(
                "{}envs = [\"no-such-env\"]\n",
                every_second(&[&first, &second])
            ),
        ),
    );
    reload_tx.send(()).await.unwrap();
    eventually("the rejected reload", Duration::from_secs(20), || async {
        samples(&get(&http, addr, "/metrics").await)
            .get("tcb_backup_config_reloads_total{outcome=\"rejected\"}")
            == Some(&1.0)
    })
    .await;
    let schedules = get_json(&http, addr, "/api/schedules").await;
    assert_eq!(
        schedules[0]["collections"],
        serde_json::json!([first.clone()])
    );
    assert!(schedules[0]["envs"].as_array().unwrap().is_empty());

    // A valid change: the second collection joins the schedule and the next fire backs it up.
    // It is applied while a run is in flight (the schedule fires every second).
    eventually("a run in flight", Duration::from_secs(20), || async {
        get_json(&http, addr, "/api/jobs")
            .await
            .as_array()
            .is_some_and(|a| !a.is_empty())
    })
    .await;
    write(
        &path,
        &config_with_schedule(&base, &every_second(&[&first, &second])),
    );
    reload_tx.send(()).await.unwrap();
    eventually(
        "the second collection backed up after the reload",
        Duration::from_secs(60),
        || async {
            snapshot_collections(&get_json(&http, addr, "/api/catalog").await).contains(&second)
        },
    )
    .await;
    let metrics = samples(&get(&http, addr, "/metrics").await);
    assert_eq!(
        metrics.get("tcb_backup_config_reloads_total{outcome=\"applied\"}"),
        Some(&1.0)
    );

    // Quiet the schedule, let every job end, then compare the counts with the server's.
    write(
        &path,
        &config_with_schedule(
            &base,
            "[[schedules]]\nname = \"often\"\ncron = \"0 0 2 1 1 * 2099\"\n",
        ),
    );
    reload_tx.send(()).await.unwrap();
    eventually("the quiet schedule", Duration::from_secs(20), || async {
        samples(&get(&http, addr, "/metrics").await)
            .get("tcb_backup_config_reloads_total{outcome=\"applied\"}")
            == Some(&2.0)
    })
    .await;
    eventually("no active job", Duration::from_secs(60), || async {
        get_json(&http, addr, "/api/jobs")
            .await
            .as_array()
            .is_some_and(|a| a.is_empty())
    })
    .await;

    // Reloads happened while runs were in flight (the schedule fires every second): no job
    // was cancelled or lost, every one ended successfully.
    let jobs = get_json(&http, addr, "/api/jobs?all=true").await;
    let jobs = jobs.as_array().unwrap();
    assert!(jobs.len() >= 4, "{jobs:#?}");
    assert!(jobs.iter().all(|j| j["status"] == "Succeeded"), "{jobs:#?}");

    let metrics = samples(&get(&http, addr, "/metrics").await);
    let server = emu.control().counters();
    // Our endpoint names → the emulator's.
    let ours = |emulator_name: &str| match emulator_name {
        "stable_token" => "cgi-bin/stable_token".to_string(),
        "token" => "cgi-bin/token".to_string(),
        "cos_upload" => "cos-upload".to_string(),
        other => other.to_string(),
    };
    let mut compared_errcodes = 0;
    for (name, stats) in &server.endpoints {
        let endpoint = ours(name);
        let total: f64 = metrics
            .iter()
            .filter(|(k, _)| {
                k.starts_with(&format!(
                    "tcb_backup_api_calls_total{{endpoint=\"{endpoint}\","
                ))
            })
            .map(|(_, v)| v)
            .sum();
        assert_eq!(total, stats.calls as f64, "calls of {endpoint}");
        for (code, n) in &stats.errcodes {
            let key = if *code == 0 {
                format!("tcb_backup_api_calls_total{{endpoint=\"{endpoint}\",outcome=\"ok\"}}")
            } else {
                compared_errcodes += 1;
                format!("tcb_backup_api_errors_total{{endpoint=\"{endpoint}\",errcode=\"{code}\"}}")
            };
            assert_eq!(metrics.get(&key), Some(&(*n as f64)), "{key}");
        }
        for (status, n) in &stats.http_statuses {
            if *status >= 400 {
                let key = format!(
                    "tcb_backup_api_errors_total{{endpoint=\"{endpoint}\",errcode=\"http_{status}\"}}"
                );
                assert_eq!(metrics.get(&key), Some(&(*n as f64)), "{key}");
            }
        }
    }
    assert!(compared_errcodes >= 2, "the injected errcodes were seen");
    assert_eq!(
        metrics.get(
            "tcb_backup_api_errors_total{endpoint=\"databasemigrateexport\",errcode=\"-501001\"}"
        ),
        Some(&2.0)
    );
    assert_eq!(
        metrics.get(
            "tcb_backup_api_errors_total{endpoint=\"databasecollectionget\",errcode=\"http_502\"}"
        ),
        Some(&1.0)
    );
    assert_eq!(
        metrics.get(
            "tcb_backup_api_errors_total{endpoint=\"databasemigratequeryinfo\",errcode=\"-1\"}"
        ),
        Some(&2.0)
    );
    assert_eq!(
        metrics.get("tcb_backup_api_errors_total{endpoint=\"download\",errcode=\"http_403\"}"),
        Some(&1.0),
        "{server:#?}"
    );
    assert!(metrics.keys().any(|k| k.starts_with(
        "tcb_backup_api_call_duration_seconds_count{endpoint=\"databasemigrateexport\"}"
    )));
    // Nothing secret in the exposition.
    let text = get(&http, addr, "/metrics").await;
    assert!(!text.contains(&apps[0].secret) && !text.contains("access_token"));

    stop_tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(30), daemon)
        .await
        .expect("stops within 30 s")
        .unwrap()
        .expect("clean stop");
    emu.shutdown().await;
}
