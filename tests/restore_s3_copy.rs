//! Copies to S3-compatible storage (a local `moto_server`, from the PyPI package
//! `moto[server]`) and to a local directory, with the S3 server stopped and restarted mid-run
//! (between copies, and in the middle of a multipart upload): the copy job retries until the
//! server is back, records the copy, and deleting the copies removes the objects.

mod moto_support;
mod snapshot_support;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use moto_support::{free_port, HoldingProxy, Moto};
use snapshot_support::store_snapshot;
use tcb_backup::catalog::CatalogEntry;
use tcb_backup::destination::copy::{
    delete_copies, submit_copies, CopyRecords, CopyWorkflow, Destinations,
};
use tcb_backup::destination::local::LocalDir;
use tcb_backup::destination::s3::{S3Destination, S3Settings};
use tcb_state::{Engine, EngineOptions, JobStatus, KindLimits, RetryPolicy};

const BUCKET: &str = "tcb-backup-test";

async fn snapshot(root: &Path, job: u64) -> CatalogEntry {
    let body: String = (0..2000)
        .map(|i| format!("{{\"_id\":\"{job}-{i}\",\"text\":\"数据 {i}\"}}\n"))
        .collect();
    stored_snapshot(root, job, body).await
}

/// Stores `body` (JSON lines) as snapshot `job` of prod/orders under `root`, made now.
async fn stored_snapshot(root: &Path, job: u64, body: String) -> CatalogEntry {
    store_snapshot(root, "orders", job, time::OffsetDateTime::now_utc(), body).await
}

/// A snapshot of `records` lines of 1000 random alphanumeric characters: zstd cannot shrink
/// them much (~6 bits of 8), so the stored file is about 0.75 KiB a record.
async fn incompressible_snapshot(root: &Path, job: u64, records: usize) -> CatalogEntry {
    use rand::distributions::{Alphanumeric, DistString};
    let mut rng = rand::thread_rng();
    let body: String = (0..records)
        .map(|i| {
            let noise = Alphanumeric.sample_string(&mut rng, 1000);
            format!("{{\"_id\":\"{job}-{i}\",\"noise\":\"{noise}\"}}\n")
        })
        .collect();
    stored_snapshot(root, job, body).await
}

async fn object_size(port: u16, key: &str) -> Option<u64> {
    let url = format!("http://127.0.0.1:{port}/{BUCKET}/copies/{key}");
    let resp = reqwest::Client::new().get(&url).send().await.ok()?;
    if !resp.status().is_success() {
        return None;
    }
    Some(resp.bytes().await.ok()?.len() as u64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_copy_survives_a_server_restart_and_forget_deletes_copies() {
    if !moto_support::installed() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("snapshots");
    let port = free_port();
    let moto = Moto::start(port);
    moto.ready(BUCKET).await;

    let s3 = S3Destination::new(
        "offsite",
        S3Settings {
            bucket: BUCKET.into(),
            prefix: "copies".into(),
            endpoint: Some(format!("http://127.0.0.1:{port}")),
            region: "us-east-1".into(),
            access_key_id: "testing".into(),
            secret_access_key: "testing".into(),
            allow_http: true,
        },
    )
    .unwrap();
    let mut destinations = Destinations::new();
    destinations.insert(Arc::new(s3));
    destinations.insert(Arc::new(LocalDir::new("nas", dir.path().join("nas"))));

    let engine = Engine::open(&dir.path().join("state"), EngineOptions::default()).unwrap();
    let records = CopyRecords::new(engine.kv(CopyRecords::NAMESPACE));
    engine.register(
        CopyWorkflow::new(destinations.clone(), records.clone()).with_retry(RetryPolicy {
            initial_interval: Duration::from_millis(50),
            multiplier: 2.0,
            max_interval: Duration::from_millis(400),
            max_attempts: 1000,
            max_elapsed: None,
        }),
        KindLimits::new(2),
    );
    let names = vec!["offsite".to_string(), "nas".to_string()];

    // 1. Server up: both copies of the first snapshot succeed.
    let first = snapshot(&root, 1).await;
    let jobs = submit_copies(&engine, &first, &root, &names).unwrap();
    engine.run_until_idle().await.unwrap();
    for j in &jobs {
        assert_eq!(
            engine.job(*j).unwrap().unwrap().summary.status,
            JobStatus::Succeeded
        );
    }
    let data_key =
        "prod/orders/".to_string() + first.data_path.file_name().unwrap().to_str().unwrap();
    assert_eq!(
        object_size(port, &data_key).await,
        Some(first.manifest.bytes_stored)
    );
    assert!(dir.path().join("nas").join(&data_key).exists());

    // 2. Server stopped: the copy of the second snapshot fails and is retried...
    moto.stop();
    let second = snapshot(&root, 2).await;
    let jobs = submit_copies(&engine, &second, &root, &names[..1]).unwrap();
    let job = jobs[0];
    let runner = {
        let engine = engine.clone();
        tokio::spawn(async move { engine.run_until_idle().await })
    };
    let mut retried = false;
    for _ in 0..400 {
        let view = engine.job(job).unwrap().unwrap();
        if view.summary.last_error.is_some() {
            retried = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(retried, "the copy never failed while the server was down");
    assert_ne!(
        engine.job(job).unwrap().unwrap().summary.status,
        JobStatus::Failed
    );
    // ...the local snapshot is untouched, and once the server is back the copy completes.
    assert!(second.data_path.exists());
    let moto = Moto::start(port);
    moto.ready(BUCKET).await;
    runner.await.unwrap().unwrap();
    let view = engine.job(job).unwrap().unwrap();
    assert_eq!(
        view.summary.status,
        JobStatus::Succeeded,
        "{:?}",
        view.summary.last_error
    );
    let key2 = "prod/orders/".to_string() + second.data_path.file_name().unwrap().to_str().unwrap();
    assert_eq!(
        object_size(port, &key2).await,
        Some(second.manifest.bytes_stored)
    );
    assert_eq!(records.of_snapshot(&second.id).unwrap().len(), 1);

    // Deleting the copies (what forget --prune does) removes the objects and the records.
    assert_eq!(
        delete_copies(&destinations, &records, &second.id)
            .await
            .unwrap(),
        1
    );
    assert_eq!(object_size(port, &key2).await, None);
    assert!(records.of_snapshot(&second.id).unwrap().is_empty());
    assert_eq!(
        delete_copies(&destinations, &records, &first.id)
            .await
            .unwrap(),
        2
    );
    assert!(!dir.path().join("nas").join(&data_key).exists());
    drop(moto);
}

fn s3_settings(port: u16) -> S3Settings {
    S3Settings {
        bucket: BUCKET.into(),
        prefix: "copies".into(),
        endpoint: Some(format!("http://127.0.0.1:{port}")),
        region: "us-east-1".into(),
        access_key_id: "testing".into(),
        secret_access_key: "testing".into(),
        allow_http: true,
    }
}

/// The S3 server dies while a snapshot of two 8 MiB parts is being uploaded, after the first
/// part is stored: no object appears at the key, the copy fails and is retried, and once a
/// fresh server (empty: the bucket created again) is up, the retry uploads the whole file.
///
/// The client reaches moto through a proxy that holds the request of part 2, so "after the
/// first part" is a fact rather than a race: the test waits (via the S3 API, directly) until
/// moto lists part 1 of the upload, then kills moto and drops the held connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_copy_survives_the_server_dying_mid_upload() {
    if !moto_support::installed() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("snapshots");
    let moto_port = free_port();
    let moto = Moto::start(moto_port);
    moto.ready(BUCKET).await;
    let proxy = HoldingProxy::start(moto_port, "partNumber=2&").await;

    let mut destinations = Destinations::new();
    destinations.insert(Arc::new(
        S3Destination::new("offsite", s3_settings(proxy.port)).unwrap(),
    ));
    let engine = Engine::open(&dir.path().join("state"), EngineOptions::default()).unwrap();
    let records = CopyRecords::new(engine.kv(CopyRecords::NAMESPACE));
    engine.register(
        CopyWorkflow::new(destinations, records.clone()).with_retry(RetryPolicy {
            initial_interval: Duration::from_millis(50),
            multiplier: 2.0,
            max_interval: Duration::from_millis(400),
            max_attempts: 1000,
            max_elapsed: None,
        }),
        KindLimits::new(1),
    );

    let snap = incompressible_snapshot(&root, 7, 12_000).await;
    let part = 8 * 1024 * 1024;
    assert!(
        snap.manifest.bytes_stored > part as u64 && snap.manifest.bytes_stored < 2 * part as u64,
        "{} bytes stored: not two parts",
        snap.manifest.bytes_stored
    );
    let job = submit_copies(&engine, &snap, &root, &["offsite".to_string()]).unwrap()[0];
    let runner = {
        let engine = engine.clone();
        tokio::spawn(async move { engine.run_until_idle().await })
    };

    // Part 2 is on its way (held); part 1 is stored once moto lists it.
    let line = tokio::time::timeout(Duration::from_secs(60), proxy.held())
        .await
        .expect("part 2 was never sent");
    let upload_id = line
        .split("uploadId=")
        .nth(1)
        .and_then(|rest| rest.split([' ', '&']).next())
        .expect("an upload id in the part request")
        .to_string();
    let key = "prod/orders/".to_string() + snap.data_path.file_name().unwrap().to_str().unwrap();
    let parts_url =
        format!("http://127.0.0.1:{moto_port}/{BUCKET}/copies/{key}?uploadId={upload_id}");
    let http = reqwest::Client::new();
    let mut part_one = false;
    for _ in 0..600 {
        let listing = http
            .get(&parts_url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if listing.contains("<PartNumber>1</PartNumber>") {
            part_one = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(part_one, "moto never stored part 1");
    assert_eq!(
        object_size(moto_port, &key).await,
        None,
        "an object is visible before the upload completed"
    );

    // The server dies mid-upload; the held part's connection drops with it.
    moto.stop();
    proxy.release();
    let mut retried = false;
    for _ in 0..400 {
        let view = engine.job(job).unwrap().unwrap();
        if view.summary.last_error.is_some() {
            retried = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(retried, "the copy never failed while the server was down");
    assert_ne!(
        engine.job(job).unwrap().unwrap().summary.status,
        JobStatus::Failed
    );

    // A fresh, empty server: the retry uploads the whole file again.
    let moto = Moto::start(moto_port);
    moto.ready(BUCKET).await;
    runner.await.unwrap().unwrap();
    let view = engine.job(job).unwrap().unwrap();
    assert_eq!(
        view.summary.status,
        JobStatus::Succeeded,
        "{:?}",
        view.summary.last_error
    );
    let stored = http
        .get(format!(
            "http://127.0.0.1:{moto_port}/{BUCKET}/copies/{key}"
        ))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(
        stored == std::fs::read(&snap.data_path).unwrap(),
        "the object differs from the local file"
    );
    let recorded = records.of_snapshot(&snap.id).unwrap();
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].data.bytes, snap.manifest.bytes_stored);
    // Nothing left half-done on the new server.
    let uploads = http
        .get(format!("http://127.0.0.1:{moto_port}/{BUCKET}?uploads"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!uploads.contains("<UploadId>"), "{uploads}");
    drop(moto);
}
