//! Helpers of the restore/verify tests: an emulator with fast virtual time, a client for it,
//! a direct backup (export → download → snapshot + manifest) that does not depend on the backup
//! workflow, and an engine with the restore kind registered.

#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use tcb_backup::archive::{write_snapshot, ArchiveOptions};
use tcb_backup::catalog::CatalogEntry;
use tcb_backup::client::{
    AppCredentials, ClientConfig, CloudBaseClient, ExportRequest, FileType, MigrateStatus, Secret,
    TokenMode,
};
use tcb_backup::emulator::{self, EmulatorApp, EmulatorConfig, EmulatorHandle};
use tcb_backup::manifest::{write_manifest, Manifest, SnapshotInfo};
use tcb_backup::naming::snapshot_paths;
use tcb_backup::restore::{PollPolicy, RestoreClients, RestoreWorkflow, IMPORT_MARKS_NAMESPACE};
use tcb_state::{Engine, EngineOptions, KindLimits, RetryPolicy};

pub const APPID: &str = "wxrestore0011223344";
pub const SECRET: &str = "restore-secret-0123456789abcdef";
pub const ENV: &str = "prod-r1";
pub const OTHER_ENV: &str = "test-r2";

/// Virtual time runs 1000× faster than real time: a migrate job of a few virtual seconds
/// finishes within milliseconds. Tokens and upload credentials outlive any test.
pub async fn start_emulator() -> EmulatorHandle {
    let cfg = EmulatorConfig {
        apps: vec![EmulatorApp {
            appid: APPID.into(),
            secret: SECRET.into(),
            envs: vec![ENV.into(), OTHER_ENV.into()],
            ..EmulatorApp::default()
        }],
        time_scale: 1000.0,
        token_ttl_secs: 1_000_000_000,
        upload_credential_ttl_secs: 1_000_000_000,
        export_url_ttl_secs: 1_000_000_000,
        ..EmulatorConfig::default()
    };
    emulator::start(cfg, "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("emulator starts")
}

pub fn client(emu: &EmulatorHandle) -> CloudBaseClient {
    let cfg = ClientConfig {
        api_base: emu.base_url().parse().expect("url"),
        ..ClientConfig::default()
    };
    CloudBaseClient::new(
        cfg,
        AppCredentials {
            appid: APPID.into(),
            secret: Secret::new(SECRET),
            token_mode: TokenMode::Stable,
        },
    )
    .expect("client")
}

/// Documents with every kind of value a restore must carry over unchanged.
pub fn tricky_documents(n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| {
            json!({
                "_id": format!("doc-{i:04}"),
                "title": format!("订单 {i} — naïve café ✓ 😀"),
                "createdAt": {"$date": format!("2026-0{}-1{}T0{}:30:00.{:03}Z", 1 + i % 9, i % 10, i % 10, i % 1000)},
                "location": {"type": "Point", "coordinates": [113.0 + i as f64 / 100.0, 23.5]},
                "nested": {"level1": {"level2": {"values": [i, i * 2, {"deep": "ü"}], "flag": i % 2 == 0}}},
                "tags": ["a", "b", "中文"],
                "amount": i as f64 * 1.25,
                "nothing": null,
            })
        })
        .collect()
}

pub fn seed(emu: &EmulatorHandle, env: &str, collection: &str, docs: Vec<Value>) {
    emu.control()
        .insert_documents(env, collection, docs)
        .expect("insert documents");
}

/// Waits for a migrate job by advancing the emulator's clock: no real waiting.
pub async fn wait_job(
    emu: &EmulatorHandle,
    client: &CloudBaseClient,
    env: &str,
    job: u64,
) -> tcb_backup::client::MigrateJobInfo {
    for _ in 0..100 {
        let info = client.query_migrate_job(env, job).await.expect("query job");
        match info.status {
            MigrateStatus::Running(_) => emu.control().advance_clock(Duration::from_secs(3600)),
            _ => return info,
        }
    }
    panic!("job {job} never finished");
}

/// Exports `collection` and returns its records (parsed lines).
pub async fn export_records(
    emu: &EmulatorHandle,
    client: &CloudBaseClient,
    env: &str,
    collection: &str,
) -> (Vec<u8>, u64) {
    let job = client
        .export(
            env,
            &ExportRequest {
                file_path: format!("exports/{collection}-{}.json", rand_suffix()),
                file_type: FileType::Json,
                query: format!("db.collection({collection:?}).get()"),
            },
        )
        .await
        .expect("export");
    let info = wait_job(emu, client, env, job).await;
    assert_eq!(info.status, MigrateStatus::Success, "{info:?}");
    let url = info.file_url.expect("file_url");
    let dl = client.download(&url).await.expect("download");
    use futures_util::StreamExt;
    let mut body = Vec::new();
    let mut s = dl.stream;
    while let Some(chunk) = s.next().await {
        body.extend_from_slice(&chunk.expect("chunk"));
    }
    (body, job)
}

fn rand_suffix() -> u64 {
    rand::random::<u64>()
}

/// Backs `collection` up into `root` the way the backup workflow stores it.
pub async fn backup(
    emu: &EmulatorHandle,
    client: &CloudBaseClient,
    root: &Path,
    env: &str,
    collection: &str,
) -> CatalogEntry {
    let started = time::OffsetDateTime::now_utc();
    let (body, job) = export_records(emu, client, env, collection).await;
    let paths = snapshot_paths(root, env, collection, started, job).expect("paths");
    let stream =
        futures_util::stream::iter(vec![Ok::<_, std::io::Error>(bytes::Bytes::from(body))]);
    let summary = write_snapshot(stream, &paths, ArchiveOptions::default())
        .await
        .expect("snapshot written");
    let manifest = Manifest::for_snapshot(
        SnapshotInfo {
            appid: APPID.into(),
            env: env.into(),
            collection: collection.into(),
            query: format!("db.collection({collection:?}).get()"),
            file_type: Default::default(),
            export_job_id: job,
            started_at: started,
            export_ready_at: None,
            export_created_at: None,
        },
        &summary,
        &paths,
        time::OffsetDateTime::now_utc(),
    );
    write_manifest(&paths.manifest, &manifest).expect("manifest");
    CatalogEntry::new(manifest, &paths.manifest)
}

/// Parsed JSON lines, sorted by `_id`.
pub fn parse_lines(body: &[u8]) -> Vec<Value> {
    let mut out: Vec<Value> = body
        .split(|b| *b == b'\n')
        .filter(|l| !l.iter().all(|b| b.is_ascii_whitespace()))
        .map(|l| serde_json::from_slice(l).expect("JSON line"))
        .collect();
    sort_by_id(&mut out);
    out
}

pub fn sort_by_id(docs: &mut [Value]) {
    docs.sort_by(|a, b| a["_id"].as_str().cmp(&b["_id"].as_str()));
}

pub fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        initial_interval: Duration::from_millis(1),
        multiplier: 2.0,
        max_interval: Duration::from_millis(20),
        max_attempts: 10,
        max_elapsed: None,
    }
}

pub fn fast_poll() -> PollPolicy {
    PollPolicy {
        initial: Duration::from_millis(2),
        multiplier: 1.5,
        max: Duration::from_millis(20),
        max_wait: Duration::from_secs(60),
    }
}

pub fn restore_workflow(engine: &Engine, client: &CloudBaseClient) -> RestoreWorkflow {
    let mut clients = RestoreClients::new();
    clients.insert(client.clone());
    RestoreWorkflow::new(clients, engine.kv(IMPORT_MARKS_NAMESPACE))
        .with_poll(fast_poll())
        .with_retry(fast_retry())
}

pub fn open_engine(dir: &Path, client: &CloudBaseClient) -> Engine {
    let engine = Engine::open(dir, EngineOptions::default()).expect("engine opens");
    let wf = restore_workflow(&engine, client);
    engine.register(wf, KindLimits::new(4));
    engine
}
