//! The migrate-job endpoints: `databasemigrateexport` (evaluate the query, snapshot or stream
//! the documents into a file on disk), `databasemigrateimport` (parse a storage file) and
//! `databasemigratequeryinfo` (status, counts, message field switch, signed `file_url`).

use std::sync::Arc;

use axum::http::Method;
use serde_json::{json, Value};

use super::config::{StatusMessageField, UnknownCollectionMode};
use super::envelope::ApiReject;
use super::faults::FaultAction;
use super::formats::{self, FileType};
use super::jobs::{Job, JobKind, Prepared};
use super::query::{Action, ParsedQuery};
use super::server::Shared;
use super::storage::{signed_url, valid_storage_path, StoredFile, EXPORT_BUCKET};
use super::store::{select_from, Synthetic};
use super::tcb::{
    env_mut, file_type, job_script, parse_query, valid_collection_name, validate, Ctx,
};
use super::world::{export_object_key, Core, World};

pub(super) async fn export(
    core: &Shared,
    method: &Method,
    raw: Option<&str>,
    body: &[u8],
    fired: &[FaultAction],
) -> Result<Value, ApiReject> {
    let now = core.now();
    let (env, job_id, work) = {
        let mut w = core.world();
        let ctx = validate(&mut w, now, "databasemigrateexport", method, raw, body)?;
        let ft = file_type(&ctx)?;
        let file_path = ctx.str("file_path").to_string();
        if !valid_storage_path(&file_path) {
            return Err(ApiReject::invalid_args("file_path is invalid"));
        }
        let q = parse_query(&ctx)?;
        if !matches!(q.action, None | Some(Action::Get)) {
            return Err(ApiReject::invalid_args(
                "query: an export query must end with .get()",
            ));
        }
        if ft == FileType::Csv && q.included_fields().is_none() {
            return Err(ApiReject::new(-501000, "Param `Fields` Is Missing"));
        }
        let mode = w.cfg.unknown_collection;
        let inline_max = w.cfg.inline_export_max_records;
        let env = env_mut(&mut w, &ctx.env)?;
        let (source, records, prepared) = match env.collections.get(&q.collection) {
            Some(c) => match c.synthetic_spec() {
                Some(s) => (ExportSource::Synthetic(s.clone()), s.records, None),
                None => {
                    let docs = c.select(&q, q.limit);
                    let n = docs.len() as u64;
                    (ExportSource::Docs(docs), n, None)
                }
            },
            None if mode == UnknownCollectionMode::Immediate => {
                return Err(ApiReject::code(-502005))
            }
            None => (
                ExportSource::Docs(Vec::new()),
                0,
                Some(Prepared::Failed(format!(
                    "collection {} not exists",
                    q.collection
                ))),
            ),
        };
        let id = env.next_job_id;
        env.next_job_id += 1;
        let kind = JobKind::Export {
            collection: q.collection.clone(),
            file_path,
            file_type: ft,
        };
        let mut job = Job::new(id, kind, now, job_script(fired), records);
        let work = match prepared {
            Some(p) => {
                job.prepared = Some(p);
                None
            }
            None => Some((source, q.clone(), ft, records <= inline_max)),
        };
        env.jobs.insert(id, job);
        *w.exports_created
            .entry(format!("{}/{}", ctx.env, q.collection))
            .or_default() += 1;
        (ctx.env.clone(), id, work)
    };
    if let Some((source, q, ft, inline)) = work {
        let task = {
            let core = Arc::clone(core);
            let env = env.clone();
            async move {
                let blob = core.blobs.new_blob();
                let prepared =
                    tokio::task::spawn_blocking(move || write_export_blob(blob, source, &q, ft))
                        .await
                        .unwrap_or_else(|e| {
                            Prepared::Failed(format!("export writer crashed: {e}"))
                        });
                set_prepared(&core, &env, job_id, prepared, None);
            }
        };
        if inline {
            task.await;
        } else {
            core.spawn_background(task);
        }
    }
    Ok(json!({"job_id": job_id}))
}

/// Where an export's documents come from.
enum ExportSource {
    /// A snapshot of a stored collection (already filtered, ordered and windowed).
    Docs(Vec<Arc<Value>>),
    /// A synthetic collection: generated, filtered and written one document at a time.
    Synthetic(Synthetic),
}

fn write_export_blob(
    blob: std::path::PathBuf,
    source: ExportSource,
    q: &ParsedQuery,
    ft: FileType,
) -> Prepared {
    let result = (|| -> std::io::Result<(u64, u64)> {
        let file = std::fs::File::create(&blob)?;
        let mut out = std::io::BufWriter::with_capacity(256 * 1024, file);
        let n = match source {
            ExportSource::Docs(docs) => formats::write_export(&mut out, docs, q, ft)?,
            ExportSource::Synthetic(s) if q.order_by.is_empty() => {
                let skip = usize::try_from(q.skip.unwrap_or(0)).unwrap_or(usize::MAX);
                let take = q
                    .limit
                    .map_or(usize::MAX, |l| usize::try_from(l).unwrap_or(usize::MAX));
                let docs = s
                    .generator()
                    .map(Arc::new)
                    .filter(|d| q.matches(d))
                    .skip(skip)
                    .take(take);
                formats::write_export(&mut out, docs, q, ft)?
            }
            ExportSource::Synthetic(s) => {
                let docs = select_from(s.generator().map(Arc::new), q, q.limit);
                formats::write_export(&mut out, docs, q, ft)?
            }
        };
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        Ok((n, file.metadata()?.len()))
    })();
    match result {
        Ok((records, size)) => Prepared::ExportFile {
            blob,
            size,
            records,
        },
        Err(e) => Prepared::Failed(format!("export writer failed: {e}")),
    }
}

fn set_prepared(core: &Core, env: &str, job_id: u64, prepared: Prepared, records: Option<u64>) {
    let mut w = core.world();
    if let Some(job) = w.envs.get_mut(env).and_then(|e| e.jobs.get_mut(&job_id)) {
        job.prepared = Some(prepared);
        if let Some(n) = records {
            job.records = n;
        }
    }
}

pub(super) async fn import(
    core: &Shared,
    method: &Method,
    raw: Option<&str>,
    body: &[u8],
    fired: &[FaultAction],
) -> Result<Value, ApiReject> {
    let now = core.now();
    let (env, job_id, work) = {
        let mut w = core.world();
        let ctx = validate(&mut w, now, "databasemigrateimport", method, raw, body)?;
        let ft = file_type(&ctx)?;
        let upsert = match ctx.code("conflict_mode") {
            1 => false,
            2 => true,
            _ => {
                return Err(ApiReject::invalid_args(
                    "conflict_mode must be 1 (insert) or 2 (upsert)",
                ))
            }
        };
        let collection = ctx.str("collection_name").to_string();
        if !valid_collection_name(&collection) {
            return Err(ApiReject::invalid_args("collection_name is invalid"));
        }
        let file_path = ctx.str("file_path").to_string();
        if !valid_storage_path(&file_path) {
            return Err(ApiReject::invalid_args("file_path is invalid"));
        }
        let env = env_mut(&mut w, &ctx.env)?;
        let id = env.next_job_id;
        env.next_job_id += 1;
        let kind = JobKind::Import {
            collection,
            file_path: file_path.clone(),
            file_type: ft,
            stop_on_error: ctx.bool("stop_on_error"),
            upsert,
        };
        let mut job = Job::new(id, kind, now, job_script(fired), 0);
        let work = match env.files.get(&file_path) {
            Some(f) => Some((f.clone(), ft)),
            None => {
                job.prepared = Some(Prepared::Failed(format!(
                    "file {file_path} not exists in env storage"
                )));
                None
            }
        };
        env.jobs.insert(id, job);
        (ctx.env.clone(), id, work)
    };
    if let Some((file, ft)) = work {
        let inline = file.size <= 32 * 1024 * 1024;
        let task = {
            let core = Arc::clone(core);
            async move {
                let parsed = tokio::task::spawn_blocking(move || read_import(&file, ft))
                    .await
                    .unwrap_or_else(|e| Err(format!("import reader crashed: {e}")));
                let (prepared, n) = match parsed {
                    Ok(records) => {
                        let n = records.len() as u64;
                        (Prepared::ImportRecords(records), Some(n))
                    }
                    Err(e) => (Prepared::Failed(e), None),
                };
                set_prepared(&core, &env, job_id, prepared, n);
            }
        };
        if inline {
            task.await;
        } else {
            core.spawn_background(task);
        }
    }
    Ok(json!({"job_id": job_id}))
}

fn read_import(file: &StoredFile, ft: FileType) -> Result<Vec<Result<Value, String>>, String> {
    let f = std::fs::File::open(&file.blob).map_err(|e| format!("cannot read import file: {e}"))?;
    match ft {
        FileType::Json => formats::parse_json_lines(std::io::BufReader::new(f))
            .map_err(|e| format!("cannot read import file: {e}")),
        FileType::Csv => {
            let text = std::fs::read_to_string(&file.blob)
                .map_err(|e| format!("import file is not UTF-8 text: {e}"))?;
            formats::parse_csv(&text)
        }
    }
}

pub(super) fn query_info(
    core: &Core,
    w: &mut World,
    now: f64,
    ctx: &Ctx,
) -> Result<Value, ApiReject> {
    let job_id = ctx.int("job_id").unwrap_or(0);
    let foreign = w.cfg.foreign_job_errcode;
    let field = w.cfg.status_message_field;
    let ttl = w.cfg.export_url_ttl_secs;
    let fixed = w.cfg.export_url_fixed_at_completion;
    let timing = w.cfg.job_timing.clone();
    let env = env_mut(w, &ctx.env)?;
    let Some(job) = env.jobs.get(&job_id) else {
        return Err(if foreign == 40097 {
            ApiReject::invalid_args(format!("job_id {job_id} not found in env {}", ctx.env))
        } else {
            ApiReject::code(foreign)
        });
    };
    let status = job.status(now, &timing);
    let (ok, failed, message) = job.outcome.as_ref().map_or((0, 0, String::new()), |o| {
        (o.record_success, o.record_fail, o.message.clone())
    });
    let file_url = match (&job.kind, &job.export_file, status) {
        (JobKind::Export { file_path, .. }, Some(_), "success") => {
            let key = export_object_key(&ctx.env, job_id, file_path);
            let from = if fixed {
                job.finished_at.unwrap_or(now)
            } else {
                now
            };
            let expires = (from + ttl as f64).max(0.0) as u64;
            signed_url(core.base(), &core.signer, EXPORT_BUCKET, &key, expires)
        }
        _ => String::new(),
    };
    let mut out = json!({"status": status, "record_success": ok, "record_fail": failed, "file_url": file_url});
    if matches!(field, StatusMessageField::Both | StatusMessageField::ErrMsg) {
        out["err_msg"] = json!(message);
    }
    if matches!(
        field,
        StatusMessageField::Both | StatusMessageField::ErrorMsg
    ) {
        out["error_msg"] = json!(message);
    }
    Ok(out)
}
