//! The client against the in-process emulator: a whole export → download round trip, upload →
//! import, file batches, token races and family isolation, and every error class the emulator
//! can inject.

use std::time::Duration;

use futures_util::StreamExt;
use tcb_backup::client::{
    ApiErrorKind, AppCredentials, ClientConfig, CloudBaseClient, ConflictMode, ErrorClass,
    ExportRequest, FileType, ImportRequest, MigrateStatus, Secret, TokenMode,
};
use tcb_backup::emulator::{
    start, EmulatorConfig, EmulatorHandle, FaultAction, FaultRule, SeedSpec,
};

async fn emulator(seed: bool) -> EmulatorHandle {
    let mut cfg = EmulatorConfig::for_tests();
    if seed {
        cfg.seed = Some(SeedSpec {
            collections: 3,
            records_per_collection: 50,
            ..SeedSpec::default()
        });
    }
    start(cfg, "127.0.0.1:0".parse().unwrap()).await.unwrap()
}

fn client(emu: &EmulatorHandle, mode: TokenMode) -> CloudBaseClient {
    let app = &emu.apps()[0];
    let cfg = ClientConfig {
        connect_timeout: Duration::from_secs(5),
        request_timeout: Duration::from_secs(10),
        ..ClientConfig::with_api_base(url::Url::parse(&emu.base_url()).unwrap())
    };
    CloudBaseClient::new(
        cfg,
        AppCredentials {
            appid: app.appid.clone(),
            secret: Secret::new(app.secret.clone()),
            token_mode: mode,
        },
    )
    .unwrap()
}

fn env(emu: &EmulatorHandle) -> String {
    emu.apps()[0].envs[0].clone()
}

async fn wait_for_job(
    emu: &EmulatorHandle,
    c: &CloudBaseClient,
    env: &str,
    job: u64,
) -> tcb_backup::client::MigrateJobInfo {
    for _ in 0..100 {
        let info = c.query_migrate_job(env, job).await.unwrap();
        if info.status.is_terminal() {
            return info;
        }
        emu.control().advance_clock(Duration::from_secs(30));
    }
    panic!("job {job} never finished");
}

#[tokio::test]
async fn export_round_trip_with_download() {
    let emu = emulator(true).await;
    let c = client(&emu, TokenMode::Stable);
    let env = env(&emu);
    let cols = c.list_collections(&env).await.unwrap();
    assert_eq!(cols.len(), 3, "{cols:?}");
    let name = cols[0].name.clone();
    assert_eq!(cols[0].count, 50);
    let job = c
        .export(
            &env,
            &ExportRequest {
                file_path: format!("backup/{name}.json"),
                file_type: FileType::Json,
                query: format!("db.collection(\"{name}\").get()"),
            },
        )
        .await
        .unwrap();
    assert!(job >= 100_000_000);
    let info = wait_for_job(&emu, &c, &env, job).await;
    assert_eq!(info.status, MigrateStatus::Success, "{info:?}");
    assert_eq!(info.record_success, 50);
    assert!(info.message.is_some());
    let dl = c.download(info.file_url.as_deref().unwrap()).await.unwrap();
    let mut body = Vec::new();
    let mut stream = dl.stream;
    while let Some(chunk) = stream.next().await {
        body.extend_from_slice(&chunk.unwrap());
    }
    let lines: Vec<&[u8]> = body
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(lines.len(), 50);
    for line in lines {
        let doc: serde_json::Value = serde_json::from_slice(line).unwrap();
        assert!(doc["_id"].is_string());
    }
    // the same file through storage: batchdownloadfile
    let file_id = tcb_backup::emulator::file_id(&env, &format!("backup/{name}.json"));
    let links = c
        .batch_download_file(
            &env,
            &[
                (file_id.clone(), 600),
                ("cloud://nope.7465-nope/x".into(), 600),
            ],
        )
        .await
        .unwrap();
    assert_eq!(links[0].status, 0, "{links:?}");
    assert_ne!(links[1].status, 0);
    let dl = c
        .download(links[0].download_url.as_deref().unwrap())
        .await
        .unwrap();
    assert_eq!(dl.content_length, Some(body.len() as u64));
    // URL expiry in virtual time → UrlExpired
    emu.control().advance_clock(Duration::from_secs(601));
    let err = c
        .download(links[0].download_url.as_deref().unwrap())
        .await
        .unwrap_err();
    assert_eq!(err.kind, ApiErrorKind::UrlExpired, "{err}");
    let deleted = c
        .batch_delete_file(&env, std::slice::from_ref(&file_id))
        .await
        .unwrap();
    assert_eq!(deleted[0].status, 0, "{deleted:?}");
    emu.shutdown().await;
}

#[tokio::test]
async fn upload_import_and_records() {
    let emu = emulator(false).await;
    let c = client(&emu, TokenMode::Stable);
    let env = env(&emu);
    let data = b"{\"_id\":\"a1\",\"n\":1}\n{\"_id\":\"a2\",\"n\":2}\n".to_vec();
    let len = data.len() as u64;
    let file_id = c
        .upload_file(&env, "imports/people.json", data.into(), len)
        .await
        .unwrap();
    assert!(file_id.starts_with("cloud://"), "{file_id}");
    let job = c
        .import(
            &env,
            &ImportRequest {
                collection_name: "people".into(),
                file_path: "imports/people.json".into(),
                file_type: FileType::Json,
                stop_on_error: false,
                conflict_mode: ConflictMode::Upsert,
            },
        )
        .await
        .unwrap();
    let info = wait_for_job(&emu, &c, &env, job).await;
    assert_eq!(info.status, MigrateStatus::Success, "{info:?}");
    assert_eq!(info.record_success, 2);
    assert_eq!(
        c.database_count(&env, "db.collection(\"people\").count()")
            .await
            .unwrap(),
        2
    );
    let page = c
        .database_query(&env, "db.collection(\"people\").where({n:2}).get()")
        .await
        .unwrap();
    assert_eq!(page.data.len(), 1);
    assert_eq!(page.data[0]["_id"], "a2");
    let ids = c
        .database_add(&env, "db.collection(\"people\").add({data:[{n:3}]})")
        .await
        .unwrap();
    assert_eq!(ids.len(), 1);
    c.add_collection(&env, "empty_one").await.unwrap();
    let err = c.add_collection(&env, "empty_one").await.unwrap_err();
    assert!(err.errcode().is_some(), "{err}");
    c.delete_collection(&env, "empty_one").await.unwrap();
    let err = c.delete_collection(&env, "empty_one").await.unwrap_err();
    assert_eq!(err.errcode(), Some(-502005));
    assert_eq!(err.class(), ErrorClass::PermanentRequest);
    // a CSV export without fields is the documented -501000
    let err = c
        .export(
            &env,
            &ExportRequest {
                file_path: "x.csv".into(),
                file_type: FileType::Csv,
                query: "db.collection(\"people\").get()".into(),
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.errcode(), Some(-501000), "{err}");
    // an unknown env
    let err = c
        .database_count("no-such-env", "db.collection(\"people\").count()")
        .await
        .unwrap_err();
    assert_eq!(err.errcode(), Some(-501007), "{err}");
    assert_eq!(err.class(), ErrorClass::PermanentConfig);
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn token_single_flight_and_invalidation_against_the_emulator() {
    let emu = emulator(false).await;
    let c = client(&emu, TokenMode::Stable);
    let env = env(&emu);
    emu.control().add_fault(FaultRule::next(
        "stable_token",
        1,
        FaultAction::Latency { millis: 100 },
    ));
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move { c.ensure_token().await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(emu.control().calls("stable_token"), 1);
    assert_eq!(c.token_fetches(), 1);

    // another service force-refreshes: 40001 mid-run → one refresh, one retry, for everyone
    let appid = emu.apps()[0].appid.clone();
    emu.control()
        .force_refresh_by_other_service(&appid)
        .unwrap();
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let c = c.clone();
            let env = env.clone();
            tokio::spawn(async move { c.list_collections(&env).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(c.token_fetches(), 2);
    assert_eq!(emu.control().calls("stable_token"), 2);

    // expiry in the emulator's virtual time → 42001 → refresh
    emu.control().advance_clock(Duration::from_secs(7300));
    c.list_collections(&env).await.unwrap();
    assert_eq!(c.token_fetches(), 3);
    emu.shutdown().await;
}

#[tokio::test]
async fn legacy_family_churn_does_not_touch_stable_tokens() {
    let emu = emulator(false).await;
    let env = env(&emu);
    let appid = emu.apps()[0].appid.clone();
    let stable = client(&emu, TokenMode::Stable);
    let legacy = client(&emu, TokenMode::Legacy);
    stable.list_collections(&env).await.unwrap();
    legacy.list_collections(&env).await.unwrap();
    // someone else fetches legacy tokens twice: ours is now older than the grace window allows
    emu.control()
        .legacy_token_by_other_service(&appid, 2)
        .unwrap();
    stable.list_collections(&env).await.unwrap();
    legacy.list_collections(&env).await.unwrap();
    assert_eq!(stable.token_fetches(), 1, "stable family untouched");
    assert_eq!(legacy.token_fetches(), 2, "legacy refreshed once");
    emu.shutdown().await;
}

#[tokio::test]
async fn injected_faults_map_to_their_classes() {
    let emu = emulator(false).await;
    let c = client(&emu, TokenMode::Stable);
    let env = env(&emu);
    c.ensure_token().await.unwrap();
    let ctl = emu.control();
    let ep = "databasecollectionget";
    let cases: Vec<(FaultAction, ErrorClass)> = vec![
        (
            FaultAction::Errcode {
                errcode: -501004,
                errmsg: None,
            },
            ErrorClass::Transient,
        ),
        (
            FaultAction::Errcode {
                errcode: -1000,
                errmsg: None,
            },
            ErrorClass::Transient,
        ),
        (
            FaultAction::Errcode {
                errcode: 45011,
                errmsg: None,
            },
            ErrorClass::Transient,
        ),
        (
            FaultAction::Errcode {
                errcode: -501015,
                errmsg: None,
            },
            ErrorClass::Quota,
        ),
        (
            FaultAction::Errcode {
                errcode: 85088,
                errmsg: None,
            },
            ErrorClass::PermanentConfig,
        ),
        (
            FaultAction::Errcode {
                errcode: 40097,
                errmsg: None,
            },
            ErrorClass::PermanentRequest,
        ),
        (
            FaultAction::HttpStatus { status: 502 },
            ErrorClass::Transient,
        ),
        (FaultAction::Reset, ErrorClass::Transient),
        (FaultAction::InvalidJson, ErrorClass::Transient),
    ];
    for (action, class) in cases {
        let what = format!("{action:?}");
        ctl.add_fault(FaultRule::next(ep, 1, action));
        let err = c.list_collections(&env).await.unwrap_err();
        assert_eq!(err.class(), class, "{what}: {err}");
        assert_eq!(err.endpoint, ep);
        if let Some(code) = err.errcode() {
            assert!(
                err.to_string().contains(&format!("errcode {code}")),
                "{err}"
            );
            assert!(err.to_string().contains("rid:"), "{err}");
        }
    }
    // a token error injected once is absorbed by refresh + retry
    ctl.add_fault(FaultRule::next(
        ep,
        1,
        FaultAction::Errcode {
            errcode: 40001,
            errmsg: None,
        },
    ));
    c.list_collections(&env).await.unwrap();
    assert_eq!(c.token_fetches(), 2);
    // the token endpoint itself failing: 40164 is configuration
    ctl.add_fault(FaultRule::next(
        "stable_token",
        1,
        FaultAction::Errcode {
            errcode: 40164,
            errmsg: None,
        },
    ));
    let fresh = client(&emu, TokenMode::Stable);
    let err = fresh.ensure_token().await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::PermanentConfig, "{err}");
    // downloads: expired, missing, truncated
    let url_src = ctl.put_file(&env, "f.bin", &vec![9u8; 100_000]).unwrap();
    let links = c
        .batch_download_file(&env, &[(url_src, 600)])
        .await
        .unwrap();
    let url = links[0].download_url.clone().unwrap();
    ctl.add_fault(FaultRule::next("download", 1, FaultAction::ExpiredUrl));
    assert_eq!(
        c.download(&url).await.unwrap_err().kind,
        ApiErrorKind::UrlExpired
    );
    ctl.add_fault(FaultRule::next("download", 1, FaultAction::NotFound));
    assert_eq!(
        c.download(&url).await.unwrap_err().kind,
        ApiErrorKind::NotFound
    );
    ctl.add_fault(FaultRule::next(
        "download",
        1,
        FaultAction::TruncateBody {
            keep_bytes: Some(1000),
        },
    ));
    let dl = c.download(&url).await.unwrap();
    let results: Vec<_> = dl.stream.collect().await;
    assert!(
        results.iter().any(|r| r.is_err()),
        "truncation must surface as an error"
    );
    // the untouched download still works
    let dl = c.download(&url).await.unwrap();
    let total: usize = dl
        .stream
        .map(|r| r.unwrap().len())
        .fold(0, |a, n| async move { a + n })
        .await;
    assert_eq!(total, 100_000);
    emu.shutdown().await;
}

#[tokio::test]
async fn either_status_message_field_and_40014_are_understood() {
    use tcb_backup::emulator::StatusMessageField;
    let emu = emulator(true).await;
    let c = client(&emu, TokenMode::Stable);
    let env = env(&emu);
    let name = c.list_collections(&env).await.unwrap()[0].name.clone();
    let job = c
        .export(
            &env,
            &ExportRequest {
                file_path: "m.json".into(),
                file_type: FileType::Json,
                query: format!("db.collection(\"{name}\").get()"),
            },
        )
        .await
        .unwrap();
    wait_for_job(&emu, &c, &env, job).await;
    for field in [
        StatusMessageField::ErrMsg,
        StatusMessageField::ErrorMsg,
        StatusMessageField::Both,
    ] {
        emu.control()
            .update_config(|cfg| cfg.status_message_field = field);
        let info = c.query_migrate_job(&env, job).await.unwrap();
        assert_eq!(info.status, MigrateStatus::Success);
        assert!(
            info.message.as_deref().is_some_and(|m| !m.is_empty()),
            "{field:?}: {info:?}"
        );
    }
    // the emulator switched to 40014 for dead tokens: still one refresh + retry
    emu.control()
        .update_config(|cfg| cfg.invalid_token_errcode = 40014);
    let appid = emu.apps()[0].appid.clone();
    emu.control()
        .force_refresh_by_other_service(&appid)
        .unwrap();
    c.query_migrate_job(&env, job).await.unwrap();
    assert_eq!(c.token_fetches(), 2);
    assert_eq!(
        emu.control()
            .errcode_count("databasemigratequeryinfo", 40014),
        1
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn with_the_emulator_clock_tokens_are_refreshed_ahead_of_expiry() {
    let emu = emulator(false).await;
    let env = env(&emu);
    let app = &emu.apps()[0];
    let ctl = emu.control().clone();
    let c = CloudBaseClient::with_clock(
        ClientConfig::with_api_base(url::Url::parse(&emu.base_url()).unwrap()),
        AppCredentials {
            appid: app.appid.clone(),
            secret: Secret::new(app.secret.clone()),
            token_mode: TokenMode::Stable,
        },
        std::sync::Arc::new(tcb_backup::client::FnClock(move || ctl.now())),
    )
    .unwrap();
    for _ in 0..6 {
        c.list_collections(&env).await.unwrap();
        emu.control().advance_clock(Duration::from_secs(1900));
    }
    // ~11400 virtual seconds: refreshed ahead each time, never caught by 42001/40001
    assert!(c.token_fetches() >= 2, "{}", c.token_fetches());
    assert_eq!(
        emu.control().errcode_count("databasecollectionget", 42001),
        0
    );
    assert_eq!(
        emu.control().errcode_count("databasecollectionget", 40001),
        0
    );
    emu.shutdown().await;
}
