//! The security test of issue 3: the client runs at TRACE level (tracing plus reqwest/hyper's
//! `log` records) through a faulty session against the emulator, and neither the AppSecret nor
//! any access token the emulator issued appears in the captured output.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use tcb_backup::client::{
    AppCredentials, ClientConfig, CloudBaseClient, ExportRequest, FileType, Secret, TokenMode,
};
use tcb_backup::emulator::{start, EmulatorConfig, FaultAction, FaultRule, SeedSpec};

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Buffer {
    type Writer = Buffer;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

fn show<T: std::fmt::Debug>(what: &str, r: Result<T, tcb_backup::client::ApiError>) {
    match r {
        Ok(v) => tracing::info!(what, "ok: {v:?}"),
        Err(e) => tracing::error!(what, "error: {e} / {e:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faulty_session_at_trace_level_leaks_nothing() {
    let buffer = Buffer::default();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(buffer.clone())
        .with_ansi(false)
        .try_init()
        .expect("first subscriber in this test binary");

    let mut cfg = EmulatorConfig::for_tests();
    cfg.seed = Some(SeedSpec {
        collections: 2,
        records_per_collection: 20,
        ..SeedSpec::default()
    });
    let emu = start(cfg, "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let app = emu.apps()[0].clone();
    let env = app.envs[0].clone();
    let ctl = emu.control();
    let make_with = |mode, secret: &str, timeout: Duration| {
        CloudBaseClient::new(
            ClientConfig {
                request_timeout: timeout,
                ..ClientConfig::with_api_base(url::Url::parse(&emu.base_url()).unwrap())
            },
            AppCredentials {
                appid: app.appid.clone(),
                secret: Secret::new(secret),
                token_mode: mode,
            },
        )
        .unwrap()
    };
    let make = |mode, secret: &str| make_with(mode, secret, Duration::from_secs(10));
    let stable = make(TokenMode::Stable, &app.secret);
    let legacy = make(TokenMode::Legacy, &app.secret);
    tracing::debug!(?stable, ?legacy, "clients");

    show("stable token", stable.ensure_token().await);
    show("legacy token", legacy.ensure_token().await);
    ctl.force_refresh_by_other_service(&app.appid).unwrap();
    show("after force refresh", stable.list_collections(&env).await);
    ctl.legacy_token_by_other_service(&app.appid, 3).unwrap();
    show("after legacy churn", legacy.list_collections(&env).await);
    for action in [
        FaultAction::Errcode {
            errcode: 40001,
            errmsg: None,
        },
        FaultAction::Errcode {
            errcode: -501004,
            errmsg: None,
        },
        FaultAction::HttpStatus { status: 503 },
        FaultAction::Reset,
        FaultAction::InvalidJson,
    ] {
        ctl.add_fault(FaultRule::next("databasecount", 1, action));
        show(
            "count",
            stable
                .database_count(&env, "db.collection(\"users\").count()")
                .await,
        );
    }
    let impatient = make_with(TokenMode::Stable, &app.secret, Duration::from_millis(300));
    show("impatient token", impatient.ensure_token().await);
    ctl.add_fault(FaultRule::next(
        "databasecount",
        1,
        FaultAction::Latency { millis: 1500 },
    ));
    show(
        "timeout",
        impatient
            .database_count(&env, "db.collection(\"users\").count()")
            .await,
    );
    ctl.add_fault(FaultRule::next("token", 1, FaultAction::Reset));
    let legacy2 = make(TokenMode::Legacy, &app.secret);
    show("legacy reset", legacy2.ensure_token().await);
    let wrong = make(TokenMode::Legacy, "wrong-secret-but-still-secret");
    show("wrong secret", wrong.ensure_token().await);
    // an export with a download, an expired URL and a truncated body
    let cols = stable.list_collections(&env).await.unwrap();
    let name = cols[0].name.clone();
    let job = stable
        .export(
            &env,
            &ExportRequest {
                file_path: "b/x.json".into(),
                file_type: FileType::Json,
                query: format!("db.collection(\"{name}\").get()"),
            },
        )
        .await
        .unwrap();
    ctl.advance_clock(Duration::from_secs(600));
    let info = stable.query_migrate_job(&env, job).await.unwrap();
    tracing::info!(?info, "job");
    let url = info.file_url.clone().unwrap_or_default();
    ctl.add_fault(FaultRule::next(
        "download",
        1,
        FaultAction::TruncateBody { keep_bytes: None },
    ));
    if let Ok(dl) = stable.download(&url).await {
        let results: Vec<_> = dl.stream.collect().await;
        for r in results.iter().filter(|r| r.is_err()) {
            tracing::error!("stream: {r:?}");
        }
    }
    ctl.add_fault(FaultRule::next("download", 1, FaultAction::ExpiredUrl));
    show(
        "expired",
        stable.download(&url).await.map(|d| d.content_length),
    );
    show(
        "upload",
        stable
            .upload_file(&env, "up/a.json", b"{}\n".to_vec().into(), 3)
            .await,
    );
    ctl.add_fault(FaultRule::next(
        "cos_upload",
        1,
        FaultAction::HttpStatus { status: 500 },
    ));
    show(
        "upload 500",
        stable
            .upload_file(&env, "up/b.json", b"{}\n".to_vec().into(), 3)
            .await,
    );

    let captured = String::from_utf8_lossy(&buffer.0.lock().unwrap()).into_owned();
    assert!(
        captured.contains("databasecount"),
        "capture saw the session"
    );
    assert!(captured.contains("errcode -501004"), "{captured}");
    let issued = ctl.issued_tokens();
    assert!(issued.len() >= 4, "{}", issued.len());
    for t in &issued {
        assert!(
            !captured.contains(&t.token),
            "issued token leaked into the trace output"
        );
    }
    assert!(!captured.contains(&app.secret), "secret leaked");
    assert!(
        !captured.contains("wrong-secret-but-still-secret"),
        "wrong secret leaked"
    );
    emu.shutdown().await;
}
