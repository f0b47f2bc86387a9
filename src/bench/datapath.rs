//! Data path: how fast an export goes from the download to a verified, compressed, fsync'd
//! snapshot (download → line split + JSON parse → sha256 → zstd → fsync → rename), against
//! the same bytes streamed into a plain file (download → write → fsync). Also backs the export
//! up through the whole workflow first, so the scenario's peak RSS is that of a real backup.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

use crate::archive::{self, ArchiveOptions};
use crate::backup::plan::default_query;
use crate::backup::RunSelection;
use crate::client::{CloudBaseClient, ExportRequest, FileType, MigrateStatus};
use crate::emulator::JobTiming;
use crate::naming;

use super::harness::{Harness, HarnessSpec, TimeMode};
use super::report::{Figure, ScenarioReport};
use super::scenario::BenchError;
use super::scratch::ScratchDir;

const MB: f64 = 1_000_000.0;
/// Share of documents with a large (2–16 KiB) text field, as in the emulator's seed.
const LARGE_FRACTION: f64 = 0.05;
const PROBE_RECORDS: u64 = 20_000;

pub async fn run(name: &str, target_bytes: u64) -> Result<ScenarioReport, BenchError> {
    let mut rep = ScenarioReport::new(
        name,
        format!(
            "a {} MiB export: workflow backup, then pipeline vs plain file",
            target_bytes >> 20
        ),
    );
    let timing = JobTiming {
        waiting_secs: 0.1,
        reading_base_secs: 0.1,
        writing_base_secs: 0.1,
        migrating_base_secs: 0.1,
        per_record_secs: 0.0,
    };
    let spec = HarnessSpec::single("datapath", TimeMode::Scaled(1.0), timing, 2);
    let env = spec.apps[0].1[0].clone();
    let appid = spec.apps[0].0.clone();
    let h = Harness::start(&spec).await?;
    let client = h
        .service
        .clients()
        .get(&appid)
        .cloned()
        .ok_or_else(|| BenchError::Setup("no client for the benchmark app".into()))?;

    // Size the synthetic collection from a probe export's bytes per record.
    let probe_records = PROBE_RECORDS.min(target_bytes / 200 + 1);
    h.control()
        .create_synthetic_collection(&env, "probe", probe_records, 7, LARGE_FRACTION)
        .map_err(|e| BenchError::Setup(format!("probe collection: {e}")))?;
    let probe_url = export_and_wait(&client, &env, "probe").await?;
    let probe_bytes = count_bytes(&client, &probe_url).await?;
    let per_record = (probe_bytes / probe_records).max(1);
    let records = (target_bytes / per_record).max(1);
    h.control()
        .create_synthetic_collection(&env, "big", records, 11, LARGE_FRACTION)
        .map_err(|e| BenchError::Setup(format!("big collection: {e}")))?;

    // 1. The real backup of the export (export, poll, download, archive, manifest, catalog).
    let outcome = h
        .run(RunSelection {
            envs: vec![],
            collections: vec!["big".into()],
        })
        .await?;
    let row = outcome
        .report
        .collections
        .first()
        .ok_or_else(|| BenchError::Run("the data-path run backed up nothing".into()))?;
    let bytes = row.bytes.unwrap_or(0);
    let job_id = row
        .export_job_id
        .ok_or_else(|| BenchError::Run("the data-path run has no export job id".into()))?;
    rep.push(Figure::info("export size", bytes as f64 / MB, "MB"));
    rep.push(Figure::info("records", row.records.unwrap_or(0) as f64, ""));
    rep.push(
        Figure::info("whole backup", outcome.real_wall.as_secs_f64(), "s")
            .with_note("export generation by the in-process emulator included"),
    );

    // 2. The same export downloaded again: plain file vs the snapshot pipeline.
    let scratch = ScratchDir::new("datapath-files")
        .map_err(|e| BenchError::Setup(format!("scratch directory: {e}")))?;
    // Alternate the two copies twice and keep the best of each, so that neither profits
    // alone from a warmer page cache or a quieter moment on a shared machine.
    let mut plain = Duration::MAX;
    let mut pipeline = Duration::MAX;
    let mut stored = 0;
    for round in 0..2 {
        let url = fresh_url(&client, &env, job_id).await?;
        plain = plain.min(plain_copy(&client, &url, &scratch.path().join("plain.json")).await?);
        let url = fresh_url(&client, &env, job_id).await?;
        let dir = scratch.path().join(format!("pipeline-{round}"));
        let (took, size) = pipeline_copy(&client, &url, &dir, &env, job_id).await?;
        pipeline = pipeline.min(took);
        stored = size;
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot remove a pipeline copy");
        }
    }
    let secs = |d: Duration| d.as_secs_f64().max(1e-9);
    let plain_rate = bytes as f64 / MB / secs(plain);
    let pipe_rate = bytes as f64 / MB / secs(pipeline);
    rep.push(Figure::info(
        "plain file (download -> write -> fsync)",
        plain_rate,
        "MB/s",
    ));
    rep.push(Figure::info(
        "snapshot pipeline (download -> parse -> sha256 -> zstd -> fsync)",
        pipe_rate,
        "MB/s",
    ));
    rep.push(Figure::info(
        "pipeline / plain",
        pipe_rate / plain_rate.max(1e-9),
        "x",
    ));
    rep.push(Figure::info(
        "compression (stored / raw)",
        stored as f64 / (bytes.max(1)) as f64,
        "",
    ));
    rep.note("MB = 10^6 bytes of the raw export; both copies read the emulator's file from the page cache over loopback HTTP; best of two alternating rounds each");
    drop(scratch);
    h.shutdown().await;
    Ok(rep)
}

async fn export_and_wait(
    client: &CloudBaseClient,
    env: &str,
    collection: &str,
) -> Result<String, BenchError> {
    let req = ExportRequest {
        file_path: format!("bench/{collection}.json"),
        file_type: FileType::Json,
        query: default_query(collection, &[]),
    };
    let job = client
        .export(env, &req)
        .await
        .map_err(|e| BenchError::Run(format!("probe export: {e}")))?;
    let deadline = Instant::now() + Duration::from_secs(600);
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let info = client
            .query_migrate_job(env, job)
            .await
            .map_err(|e| BenchError::Run(format!("probe export status: {e}")))?;
        match info.status {
            MigrateStatus::Success => {
                return info
                    .file_url
                    .ok_or_else(|| BenchError::Run("probe export without file_url".into()))
            }
            MigrateStatus::Fail => {
                return Err(BenchError::Run(format!(
                    "probe export failed: {}",
                    info.message.unwrap_or_default()
                )))
            }
            MigrateStatus::Running(_) => {}
        }
    }
    Err(BenchError::Run(
        "probe export did not finish in 10 minutes".into(),
    ))
}

async fn fresh_url(client: &CloudBaseClient, env: &str, job: u64) -> Result<String, BenchError> {
    client
        .query_migrate_job(env, job)
        .await
        .map_err(|e| BenchError::Run(format!("export job {job} status: {e}")))?
        .file_url
        .ok_or_else(|| BenchError::Run(format!("export job {job} has no file_url")))
}

async fn count_bytes(client: &CloudBaseClient, url: &str) -> Result<u64, BenchError> {
    let mut dl = client
        .download(url)
        .await
        .map_err(|e| BenchError::Run(format!("probe download: {e}")))?;
    let mut n = 0u64;
    while let Some(chunk) = dl.stream.next().await {
        n += chunk
            .map_err(|e| BenchError::Run(format!("probe download: {e}")))?
            .len() as u64;
    }
    Ok(n)
}

async fn plain_copy(
    client: &CloudBaseClient,
    url: &str,
    path: &std::path::Path,
) -> Result<Duration, BenchError> {
    let io = |e: std::io::Error| BenchError::Run(format!("plain copy to {}: {e}", path.display()));
    let start = Instant::now();
    let mut dl = client
        .download(url)
        .await
        .map_err(|e| BenchError::Run(format!("download: {e}")))?;
    // Buffered like the archive writer's output, so the comparison is about the work done
    // on the bytes, not the number of write calls.
    let file = tokio::fs::File::create(path).await.map_err(io)?;
    let mut file = tokio::io::BufWriter::with_capacity(1 << 20, file);
    while let Some(chunk) = dl.stream.next().await {
        let chunk = chunk.map_err(|e| BenchError::Run(format!("download: {e}")))?;
        file.write_all(&chunk).await.map_err(io)?;
    }
    file.flush().await.map_err(io)?;
    let file = file.into_inner();
    file.sync_all().await.map_err(io)?;
    let took = start.elapsed();
    drop(file);
    // Free the disk before the pipeline run (matters for the 1 GiB export).
    tokio::fs::remove_file(path).await.map_err(io)?;
    Ok(took)
}

async fn pipeline_copy(
    client: &CloudBaseClient,
    url: &str,
    root: &std::path::Path,
    env: &str,
    job: u64,
) -> Result<(Duration, u64), BenchError> {
    let paths = naming::snapshot_paths(root, env, "big", time::OffsetDateTime::now_utc(), job)
        .map_err(|e| BenchError::Setup(format!("snapshot paths: {e}")))?;
    let start = Instant::now();
    let dl = client
        .download(url)
        .await
        .map_err(|e| BenchError::Run(format!("download: {e}")))?;
    let summary = archive::write_snapshot(dl.stream, &paths, ArchiveOptions::default())
        .await
        .map_err(|e| BenchError::Run(format!("snapshot pipeline: {e}")))?;
    Ok((start.elapsed(), summary.bytes_stored))
}
