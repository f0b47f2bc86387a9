//! End to end, in-process: two apps, four envs, 52 collections of mixed sizes, faults switched
//! on (transient errcodes on status calls, 5xx on exports, expired download URLs). Every
//! collection must end Recorded with a file that decompresses, parses and matches its manifest
//! and the emulator's data, with exactly one token call per app.

mod backup_support;

use std::sync::Arc;

use backup_support::*;
use serde_json::json;
use tcb_backup::backup::setup;
use tcb_backup::backup::{NoProgress, RunSelection};
use tcb_backup::emulator::{FaultAction, FaultRule};
use tcb_state::JobStatus;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backs_up_every_collection_through_faults() {
    let apps = test_apps("e2e", 2, 2);
    let mut cfg = emulator_config(&apps, 13, 40);
    cfg.fault_seed = 11;
    let emu = start(cfg).await;
    // Mixed sizes: make a few collections much bigger than the rest.
    for (i, env) in apps.iter().flat_map(|a| a.envs.iter()).enumerate() {
        let docs: Vec<_> = (0..(500 + i * 700))
            .map(|n| json!({ "_id": format!("big-{i}-{n:06}"), "n": n, "pad": "x".repeat(200) }))
            .collect();
        emu.control()
            .insert_documents(env, "orders", docs)
            .expect("insert");
    }
    let c = emu.control();
    c.add_fault(FaultRule::with_probability(
        "databasemigratequeryinfo",
        0.2,
        FaultAction::Errcode {
            errcode: -1,
            errmsg: None,
        },
    ));
    c.add_fault(FaultRule::with_probability(
        "databasemigrateexport",
        0.1,
        FaultAction::Errcode {
            errcode: -501001,
            errmsg: None,
        },
    ));
    c.add_fault(FaultRule::next(
        "databasemigrateexport",
        3,
        FaultAction::HttpStatus { status: 502 },
    ));
    c.add_fault(FaultRule::next("download", 2, FaultAction::ExpiredUrl));
    c.add_fault(FaultRule::next(
        "download",
        1,
        FaultAction::TruncateBody { keep_bytes: None },
    ));

    let dir = tempfile::tempdir().expect("tempdir");
    let config_path = write_config(dir.path(), &emu.base_url(), &apps, 8);
    let config = setup::load(&config_path).expect("config loads");
    let prepared = setup::prepare(&config).expect("prepare");
    let service = prepared.open(Arc::new(NoProgress)).expect("open store");

    let selection = RunSelection {
        envs: vec![],
        collections: vec![],
    };
    prepared
        .preflight(&service, &selection)
        .await
        .expect("credentials accepted");
    let run = service.submit_run(selection).expect("submit");
    let never = std::future::pending::<()>();
    service.drive(&[run], never).await.expect("drive");

    let report = service.report(run).expect("report");
    let failures: Vec<_> = report
        .collections
        .iter()
        .filter(|r| r.status != JobStatus::Succeeded)
        .map(|r| format!("{}/{}: {:?} {:?}", r.env, r.collection, r.status, r.error))
        .collect();
    assert!(failures.is_empty(), "failed collections: {failures:#?}");
    assert_eq!(report.status, JobStatus::Succeeded);
    assert_eq!(report.collections.len(), 52);
    assert!(report.collections.iter().all(|r| r.phase == "recorded"));

    // One token call per app for the whole run.
    for (appid, n) in service.clients().token_fetches() {
        assert_eq!(n, 1, "token calls of {appid}");
    }

    // Every file checks out against its manifest and the emulator's data.
    let found = manifests(&dir.path().join("snapshots"));
    assert_eq!(found.len(), 52);
    for (path, m) in &found {
        check_snapshot(path, m, &emu);
        assert_eq!(
            emu.control().export_count(&m.env, &m.collection),
            1,
            "{}/{}: exactly one export (retries never create a second one once committed)",
            m.env,
            m.collection
        );
    }
    assert_no_temp_files(&dir.path().join("snapshots"));

    // The catalog has one entry per snapshot.
    let catalog = service.catalog.list(None, None).expect("catalog");
    assert_eq!(catalog.len(), 52);

    // Faults really fired.
    let counters = emu.control().counters();
    let faults = |ep: &str| counters.endpoints.get(ep).map_or(0, |e| e.faults_injected);
    assert!(faults("databasemigratequeryinfo") > 0, "{counters:#?}");
    assert!(faults("databasemigrateexport") >= 3, "{counters:#?}");
    let downloads = counters
        .endpoints
        .get("download")
        .cloned()
        .unwrap_or_default();
    assert!(
        downloads.http_statuses.get(&403).copied().unwrap_or(0) >= 2,
        "{counters:#?}"
    );
    emu.shutdown().await;
}

/// The concurrency limit caps exports in flight on the platform, not only running steps: a
/// collection waiting between two polls still holds its slot, so the emulator never has more
/// than `concurrency` exports running at once, whatever the number of collections.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exports_in_flight_never_exceed_the_concurrency() {
    const LIMIT: usize = 3;
    let apps = test_apps("slots", 1, 2);
    let emu = start(emulator_config(&apps, 9, 30)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config_path = write_config(dir.path(), &emu.base_url(), &apps, LIMIT);
    let config = setup::load(&config_path).expect("config loads");
    let prepared = setup::prepare(&config).expect("prepare");
    let service = prepared.open(Arc::new(NoProgress)).expect("open store");
    let run = service
        .submit_run(RunSelection {
            envs: vec![],
            collections: vec![],
        })
        .expect("submit");
    service
        .drive(&[run], std::future::pending::<()>())
        .await
        .expect("drive");
    let report = service.report(run).expect("report");
    assert_eq!(report.status, JobStatus::Succeeded, "{report:#?}");
    assert_eq!(report.collections.len(), 18);

    // On the platform's side: the most exports running at any instant (virtual time).
    let mut edges = Vec::new();
    for env in &apps[0].envs {
        for job in emu.control().jobs(env).into_iter().filter(|j| j.export) {
            let end = job.finished_at.expect("every export was seen to finish");
            edges.push((job.created_at, 1i32));
            edges.push((end, -1i32));
        }
    }
    assert_eq!(edges.len(), 36, "one export per collection");
    // Ends sort before starts at the same instant: a slot freed and taken at once is no overlap.
    edges.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let (mut running, mut most) = (0, 0);
    for (_, d) in edges {
        running += d;
        most = most.max(running);
    }
    assert!(most as usize <= LIMIT, "{most} exports ran at once");
    // And the limit was used: slots were saturated, so collections really waited for one.
    assert_eq!(service.export_slots().high_water(), LIMIT);
    assert_eq!(most as usize, LIMIT);
    assert_eq!(
        service.export_slots().in_flight(),
        0,
        "every slot given back"
    );
    emu.shutdown().await;
}
