//! Test/benchmark control over the emulator: in process through [`EmulatorControl`], and over
//! HTTP under `/_emulator/...` (JSON) with the same powers. See `docs/emulator.md`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::config::EmulatorConfig;
use super::faults::{Counters, FaultRule};
use super::jobs::JobScript;
use super::query::ParsedQuery;
use super::server::Shared;
use super::storage::StoredFile;
use super::store::{Collection, Synthetic};
use super::tokens::IssuedToken;
use super::world::Core;

/// A job as the control API shows it.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct JobSnapshot {
    pub job_id: u64,
    pub export: bool,
    pub collection: String,
    pub file_path: String,
    pub status: String,
    pub record_success: u64,
    pub record_fail: u64,
    pub message: String,
    /// Virtual seconds (the emulator's clock) when the job was created, and when it was seen
    /// to end (by a status query); with these a test can tell how many ran at once.
    pub created_at: f64,
    pub finished_at: Option<f64>,
}

/// Drive a job by hand (reference §12.C.10: "or driven manually by the test").
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum JobControl {
    /// Skip the remaining phases: the job finishes at the next look (success unless scripted).
    FinishNow,
    /// End the job in `fail` with this message (at its natural end, or now with FinishNow).
    Fail { message: String },
    /// Keep the job in `waiting` until released.
    Stick,
    /// Release a stuck job: its phases restart from now.
    Release,
}

/// Errors of control operations.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ControlError {
    #[error("unknown env {0:?}")]
    UnknownEnv(String),
    #[error("unknown appid {0:?}")]
    UnknownApp(String),
    #[error("collection {collection:?} does not exist in env {env:?}")]
    UnknownCollection { env: String, collection: String },
    #[error("invalid document: {0}")]
    InvalidDocument(String),
    #[error("invalid config patch: {0}")]
    InvalidConfig(String),
    #[error("job {job_id} not found in env {env:?} (or already finished)")]
    UnknownJob { env: String, job_id: u64 },
    #[error("storage error: {0}")]
    Storage(String),
}

/// In-process control handle (cheap to clone).
#[derive(Clone, Debug)]
pub struct EmulatorControl {
    pub(crate) core: Arc<Core>,
}

impl EmulatorControl {
    // ---- faults
    /// Add a fault rule; returns its id.
    pub fn add_fault(&self, rule: FaultRule) -> u64 {
        self.core.world().faults.add(rule)
    }
    pub fn remove_fault(&self, id: u64) -> bool {
        self.core.world().faults.remove(id)
    }
    pub fn clear_faults(&self) {
        self.core.world().faults.clear();
    }
    pub fn faults(&self) -> Vec<(u64, FaultRule)> {
        self.core.world().faults.list()
    }

    // ---- counters
    pub fn counters(&self) -> Counters {
        self.core.world().counters.clone()
    }
    /// Calls of one endpoint (`token`, `stable_token`, `databasemigrateexport`, `download`, ...).
    pub fn calls(&self, endpoint: &str) -> u64 {
        self.core.world().counters.calls(endpoint)
    }
    /// Calls of one endpoint answered with `errcode`.
    pub fn errcode_count(&self, endpoint: &str, errcode: i64) -> u64 {
        self.core.world().counters.errcode(endpoint, errcode)
    }
    pub fn reset_counters(&self) {
        self.core.world().counters = Counters::default();
    }
    /// Export jobs created per "env/collection".
    pub fn exports_created(&self) -> BTreeMap<String, u64> {
        self.core.world().exports_created.clone()
    }
    pub fn export_count(&self, env: &str, collection: &str) -> u64 {
        self.core
            .world()
            .exports_created
            .get(&format!("{env}/{collection}"))
            .copied()
            .unwrap_or(0)
    }

    // ---- tokens
    /// Every access token ever issued (for the tests that check nothing leaks).
    pub fn issued_tokens(&self) -> Vec<IssuedToken> {
        self.core.world().tokens.issued().to_vec()
    }
    /// "Another service force-refreshed the stable token": every stable token of the app dies.
    pub fn force_refresh_by_other_service(&self, appid: &str) -> Result<(), ControlError> {
        let now = self.core.now();
        let mut w = self.core.world();
        if !w.cfg.apps.iter().any(|a| a.appid == appid) {
            return Err(ControlError::UnknownApp(appid.into()));
        }
        let rules = w.token_rules();
        w.tokens.force_stable(appid, now, &rules);
        Ok(())
    }
    /// "Another service called legacy /cgi-bin/token `times` times" (legacy family only).
    pub fn legacy_token_by_other_service(
        &self,
        appid: &str,
        times: u32,
    ) -> Result<(), ControlError> {
        let now = self.core.now();
        let mut w = self.core.world();
        if !w.cfg.apps.iter().any(|a| a.appid == appid) {
            return Err(ControlError::UnknownApp(appid.into()));
        }
        let rules = w.token_rules();
        for _ in 0..times {
            w.tokens.legacy_fetch(appid, now, &rules);
        }
        Ok(())
    }

    /// Wait until every background job preparation (large export files, large imports) is
    /// done, so a test can advance the clock and see the final status deterministically.
    pub async fn settle(&self) {
        self.core.settle().await;
    }

    // ---- clock, quotas, config
    pub fn advance_clock(&self, by: Duration) {
        self.core.clock.advance(by);
    }
    pub fn now(&self) -> SystemTime {
        self.core.clock.now_system()
    }
    pub fn set_time_scale(&self, scale: f64) {
        self.core.clock.set_scale(scale);
    }
    pub fn clear_quotas(&self) {
        self.core.world().quotas.clear();
    }
    pub fn config(&self) -> EmulatorConfig {
        self.core.world().cfg.clone()
    }
    /// Change switches at runtime (apps/envs are fixed at start).
    pub fn update_config(&self, f: impl FnOnce(&mut EmulatorConfig)) {
        let mut w = self.core.world();
        f(&mut w.cfg);
    }
    /// Merge a JSON object into the config (what `POST /_emulator/config` does).
    pub fn patch_config(&self, patch: &Value) -> Result<EmulatorConfig, ControlError> {
        let mut w = self.core.world();
        let mut current =
            serde_json::to_value(&w.cfg).map_err(|e| ControlError::InvalidConfig(e.to_string()))?;
        merge(&mut current, patch);
        let cfg: EmulatorConfig = serde_json::from_value(current)
            .map_err(|e| ControlError::InvalidConfig(e.to_string()))?;
        w.cfg = EmulatorConfig {
            apps: w.cfg.apps.clone(),
            ..cfg
        };
        Ok(w.cfg.clone())
    }

    // ---- data
    /// Documents of a collection in storage order (None if it does not exist).
    pub fn documents(&self, env: &str, collection: &str) -> Option<Vec<Value>> {
        let w = self.core.world();
        let c = w.envs.get(env)?.collections.get(collection)?;
        Some(c.iter().map(|d| (*d).clone()).collect())
    }
    pub fn collections(&self, env: &str) -> Result<Vec<String>, ControlError> {
        let w = self.core.world();
        let e = w
            .envs
            .get(env)
            .ok_or_else(|| ControlError::UnknownEnv(env.into()))?;
        Ok(e.collections.keys().cloned().collect())
    }
    /// Insert documents (creating the collection); returns their `_id`s.
    pub fn insert_documents(
        &self,
        env: &str,
        collection: &str,
        docs: Vec<Value>,
    ) -> Result<Vec<String>, ControlError> {
        let mut w = self.core.world();
        let e = w
            .envs
            .get_mut(env)
            .ok_or_else(|| ControlError::UnknownEnv(env.into()))?;
        let c = e.collections.entry(collection.to_string()).or_default();
        docs.into_iter()
            .map(|d| {
                c.insert(d)
                    .map_err(|e| ControlError::InvalidDocument(e.to_string()))
            })
            .collect()
    }
    pub fn create_collection(&self, env: &str, collection: &str) -> Result<(), ControlError> {
        let mut w = self.core.world();
        let e = w
            .envs
            .get_mut(env)
            .ok_or_else(|| ControlError::UnknownEnv(env.into()))?;
        e.collections
            .entry(collection.to_string())
            .or_insert_with(Collection::default);
        Ok(())
    }
    /// Create (or replace) a read-only synthetic collection of `records` generated documents
    /// that exports stream without holding them in memory (for benchmarks).
    pub fn create_synthetic_collection(
        &self,
        env: &str,
        collection: &str,
        records: u64,
        seed: u64,
        large_fraction: f64,
    ) -> Result<(), ControlError> {
        let spec = Synthetic::new(env, collection, seed, records, large_fraction);
        let mut w = self.core.world();
        let e = w
            .envs
            .get_mut(env)
            .ok_or_else(|| ControlError::UnknownEnv(env.into()))?;
        e.collections
            .insert(collection.to_string(), Collection::synthetic(spec));
        Ok(())
    }
    pub fn drop_collection(&self, env: &str, collection: &str) -> Result<bool, ControlError> {
        let mut w = self.core.world();
        let e = w
            .envs
            .get_mut(env)
            .ok_or_else(|| ControlError::UnknownEnv(env.into()))?;
        Ok(e.collections.remove(collection).is_some())
    }
    /// Put a file into the env's storage directly (as if uploaded).
    pub fn put_file(&self, env: &str, path: &str, content: &[u8]) -> Result<String, ControlError> {
        let blob = self.core.blobs.new_blob();
        std::fs::write(&blob, content).map_err(|e| ControlError::Storage(e.to_string()))?;
        let mut w = self.core.world();
        let e = w
            .envs
            .get_mut(env)
            .ok_or_else(|| ControlError::UnknownEnv(env.into()))?;
        e.files.insert(
            path.to_string(),
            StoredFile {
                blob,
                size: content.len() as u64,
            },
        );
        Ok(super::storage::file_id(env, path))
    }
    /// Read a file of the env's storage.
    pub fn read_file(&self, env: &str, path: &str) -> Option<Vec<u8>> {
        let blob = {
            let w = self.core.world();
            w.envs.get(env)?.files.get(path)?.blob.clone()
        };
        std::fs::read(blob).ok()
    }
    /// Paths and sizes of the env's storage.
    pub fn files(&self, env: &str) -> Vec<(String, u64)> {
        let w = self.core.world();
        w.envs
            .get(env)
            .map(|e| e.files.iter().map(|(p, f)| (p.clone(), f.size)).collect())
            .unwrap_or_default()
    }
    /// Change the course of an unfinished job.
    pub fn control_job(
        &self,
        env: &str,
        job_id: u64,
        action: JobControl,
    ) -> Result<(), ControlError> {
        let now = self.core.now();
        let mut w = self.core.world();
        let job = w
            .envs
            .get_mut(env)
            .and_then(|e| e.jobs.get_mut(&job_id))
            .filter(|j| j.outcome.is_none())
            .ok_or_else(|| ControlError::UnknownJob {
                env: env.into(),
                job_id,
            })?;
        match action {
            JobControl::FinishNow => {
                if job.script == JobScript::Stuck {
                    job.script = JobScript::Normal;
                }
                job.created_at = f64::MIN / 4.0;
            }
            JobControl::Fail { message } => job.script = JobScript::Fail(message),
            JobControl::Stick => job.script = JobScript::Stuck,
            JobControl::Release => {
                job.script = JobScript::Normal;
                job.created_at = now;
            }
        }
        drop(w);
        // finalise at once if it is due
        drop(self.core.world());
        Ok(())
    }

    /// Jobs of an env with their current status.
    pub fn jobs(&self, env: &str) -> Vec<JobSnapshot> {
        let now = self.core.now();
        let w = self.core.world();
        let timing = w.cfg.job_timing.clone();
        let Some(e) = w.envs.get(env) else {
            return Vec::new();
        };
        e.jobs
            .values()
            .map(|j| {
                let (collection, file_path) = match &j.kind {
                    super::jobs::JobKind::Export {
                        collection,
                        file_path,
                        ..
                    }
                    | super::jobs::JobKind::Import {
                        collection,
                        file_path,
                        ..
                    } => (collection.clone(), file_path.clone()),
                };
                let o = j.outcome.clone();
                JobSnapshot {
                    job_id: j.id,
                    export: j.is_export(),
                    collection,
                    file_path,
                    status: j.status(now, &timing).to_string(),
                    record_success: o.as_ref().map_or(0, |o| o.record_success),
                    record_fail: o.as_ref().map_or(0, |o| o.record_fail),
                    message: o.map(|o| o.message).unwrap_or_default(),
                    created_at: j.created_at,
                    finished_at: j.finished_at,
                }
            })
            .collect()
    }
    /// Count documents matching a query statement (`db.collection("x").where({...}).get()`).
    pub fn count_matching(&self, env: &str, query: &str) -> Result<u64, ControlError> {
        let q: ParsedQuery =
            super::query::parse(query).map_err(|e| ControlError::InvalidDocument(e.to_string()))?;
        let w = self.core.world();
        let e = w
            .envs
            .get(env)
            .ok_or_else(|| ControlError::UnknownEnv(env.into()))?;
        let c =
            e.collections
                .get(&q.collection)
                .ok_or_else(|| ControlError::UnknownCollection {
                    env: env.into(),
                    collection: q.collection.clone(),
                })?;
        Ok(c.count(&q))
    }
}

fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                match t.get_mut(k) {
                    Some(existing) if existing.is_object() && v.is_object() => merge(existing, v),
                    _ => {
                        t.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

// ---------------------------------------------------------------- HTTP

fn ctl(core: &Shared) -> EmulatorControl {
    EmulatorControl {
        core: Arc::clone(core),
    }
}

fn bad(e: ControlError) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"error": e.to_string()})),
    )
        .into_response()
}

#[derive(Deserialize)]
struct SyntheticArg {
    records: u64,
    #[serde(default)]
    seed: u64,
    #[serde(default)]
    large_fraction: f64,
}
#[derive(Deserialize)]
struct Advance {
    seconds: f64,
}
#[derive(Deserialize)]
struct Scale {
    time_scale: f64,
}
#[derive(Deserialize)]
struct AppArg {
    appid: String,
    #[serde(default = "one")]
    times: u32,
}
fn one() -> u32 {
    1
}

pub fn routes() -> Router<Shared> {
    Router::new()
        .route(
            "/_emulator/faults",
            get(|State(c): State<Shared>| async move {
                Json(json!(ctl(&c)
                    .faults()
                    .into_iter()
                    .map(|(id, r)| json!({"id": id, "rule": r}))
                    .collect::<Vec<_>>()))
            })
            .post(
                |State(c): State<Shared>, Json(rule): Json<FaultRule>| async move {
                    Json(json!({"id": ctl(&c).add_fault(rule)}))
                },
            )
            .delete(|State(c): State<Shared>| async move {
                ctl(&c).clear_faults();
                Json(json!({}))
            }),
        )
        .route(
            "/_emulator/counters",
            get(|State(c): State<Shared>| async move { Json(ctl(&c).counters()) }).delete(
                |State(c): State<Shared>| async move {
                    ctl(&c).reset_counters();
                    Json(json!({}))
                },
            ),
        )
        .route(
            "/_emulator/exports",
            get(|State(c): State<Shared>| async move { Json(ctl(&c).exports_created()) }),
        )
        .route(
            "/_emulator/tokens",
            get(|State(c): State<Shared>| async move { Json(ctl(&c).issued_tokens()) }),
        )
        .route(
            "/_emulator/tokens/force_refresh",
            post(
                |State(c): State<Shared>, Json(a): Json<AppArg>| async move {
                    match ctl(&c).force_refresh_by_other_service(&a.appid) {
                        Ok(()) => Json(json!({})).into_response(),
                        Err(e) => bad(e),
                    }
                },
            ),
        )
        .route(
            "/_emulator/tokens/legacy",
            post(
                |State(c): State<Shared>, Json(a): Json<AppArg>| async move {
                    match ctl(&c).legacy_token_by_other_service(&a.appid, a.times) {
                        Ok(()) => Json(json!({})).into_response(),
                        Err(e) => bad(e),
                    }
                },
            ),
        )
        .route(
            "/_emulator/clock",
            get(|State(c): State<Shared>| async move {
                Json(json!({"now_unix": c.clock.now(), "time_scale": c.clock.scale()}))
            }),
        )
        .route(
            "/_emulator/clock/advance",
            post(
                |State(c): State<Shared>, Json(a): Json<Advance>| async move {
                    if let Ok(d) = Duration::try_from_secs_f64(a.seconds) {
                        c.clock.advance(d);
                    }
                    Json(json!({"now_unix": c.clock.now()}))
                },
            ),
        )
        .route(
            "/_emulator/clock/scale",
            post(|State(c): State<Shared>, Json(s): Json<Scale>| async move {
                c.clock.set_scale(s.time_scale);
                Json(json!({"time_scale": c.clock.scale()}))
            }),
        )
        .route(
            "/_emulator/settle",
            post(|State(c): State<Shared>| async move {
                c.settle().await;
                Json(json!({}))
            }),
        )
        .route(
            "/_emulator/quotas/clear",
            post(|State(c): State<Shared>| async move {
                ctl(&c).clear_quotas();
                Json(json!({}))
            }),
        )
        .route(
            "/_emulator/config",
            get(|State(c): State<Shared>| async move { Json(ctl(&c).config()) }).post(
                |State(c): State<Shared>, Json(p): Json<Value>| async move {
                    match ctl(&c).patch_config(&p) {
                        Ok(cfg) => Json(cfg).into_response(),
                        Err(e) => bad(e),
                    }
                },
            ),
        )
        .route(
            "/_emulator/envs/{env}/collections/{name}/documents",
            get(
                |State(c): State<Shared>, Path((env, name)): Path<(String, String)>| async move {
                    match ctl(&c).documents(&env, &name) {
                        Some(docs) => Json(docs).into_response(),
                        None => (
                            StatusCode::NOT_FOUND,
                            Json(json!({"error": "no such collection"})),
                        )
                            .into_response(),
                    }
                },
            )
            .post(
                |State(c): State<Shared>,
                 Path((env, name)): Path<(String, String)>,
                 Json(docs): Json<Vec<Value>>| async move {
                    match ctl(&c).insert_documents(&env, &name, docs) {
                        Ok(ids) => Json(json!({"id_list": ids})).into_response(),
                        Err(e) => bad(e),
                    }
                },
            ),
        )
        .route(
            "/_emulator/envs/{env}/collections/{name}/synthetic",
            post(
                |State(c): State<Shared>,
                 Path((env, name)): Path<(String, String)>,
                 Json(a): Json<SyntheticArg>| async move {
                    match ctl(&c).create_synthetic_collection(
                        &env,
                        &name,
                        a.records,
                        a.seed,
                        a.large_fraction,
                    ) {
                        Ok(()) => Json(json!({})).into_response(),
                        Err(e) => bad(e),
                    }
                },
            ),
        )
        .route(
            "/_emulator/envs/{env}/jobs",
            get(
                |State(c): State<Shared>, Path(env): Path<String>| async move {
                    Json(ctl(&c).jobs(&env))
                },
            ),
        )
        .route(
            "/_emulator/envs/{env}/jobs/{job_id}",
            post(
                |State(c): State<Shared>,
                 Path((env, job_id)): Path<(String, u64)>,
                 Json(a): Json<JobControl>| async move {
                    match ctl(&c).control_job(&env, job_id, a) {
                        Ok(()) => Json(json!({})).into_response(),
                        Err(e) => bad(e),
                    }
                },
            ),
        )
        .route(
            "/_emulator/envs/{env}/files",
            get(
                |State(c): State<Shared>, Path(env): Path<String>| async move {
                    Json(
                        ctl(&c)
                            .files(&env)
                            .into_iter()
                            .map(|(p, s)| json!({"path": p, "size": s}))
                            .collect::<Vec<_>>(),
                    )
                },
            ),
        )
        .route(
            "/_emulator/envs/{env}/files/{*path}",
            axum::routing::put(
                |State(c): State<Shared>,
                 Path((env, path)): Path<(String, String)>,
                 body: axum::body::Bytes| async move {
                    match ctl(&c).put_file(&env, &path, &body) {
                        Ok(id) => Json(json!({"file_id": id})).into_response(),
                        Err(e) => bad(e),
                    }
                },
            )
            .get(
                |State(c): State<Shared>, Path((env, path)): Path<(String, String)>| async move {
                    match ctl(&c).read_file(&env, &path) {
                        Some(bytes) => bytes.into_response(),
                        None => (
                            StatusCode::NOT_FOUND,
                            Json(json!({"error": "no such file"})),
                        )
                            .into_response(),
                    }
                },
            ),
        )
}
