//! The status listener: JSON endpoints, Prometheus `/metrics` and the freshness page, served
//! by axum while the daemon runs (127.0.0.1 by default).
//!
//! | path | content |
//! |---|---|
//! | `/health` | liveness (never needs the token) |
//! | `/api/schedules` | schedules with next fire time and stored state |
//! | `/api/jobs` | active (unfinished) jobs; `?failed=true` adds failed ones, `?all=true` all |
//! | `/api/jobs/{id}` | one job with its history (what `show` prints) |
//! | `/api/runs?limit=N` | recent backup runs, newest first |
//! | `/api/fires` | the daemon's recent fire outcomes |
//! | `/api/freshness` | per-collection freshness |
//! | `/api/catalog` | the snapshot catalog |
//! | `/metrics` | Prometheus text format |
//! | `/` | the read-only freshness page |
//!
//! With a token configured, every path but `/health` needs `Authorization: Bearer <token>`.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tcb_state::{Clock, Engine, JobFilter, JobId, JobStatus};

use super::freshness::{assess, Freshness, StatusSource};
use super::metrics::{self, Counters, ScheduleGauge};
use super::page::{self, PageSchedule};
use super::scheduler::{fmt_ms, from_ms, to_ms, FireOutcome, ScheduleState, STATE_NAMESPACE};
use super::settings::{ScheduleSpec, StatusToken};

/// How many recent fire outcomes the daemon keeps for `/api/fires`.
pub const RECENT_FIRES: usize = 100;

/// What the daemon loop shares with the listener; replaced on reload.
pub struct DaemonView {
    pub specs: Vec<ScheduleSpec>,
    pub stale_factor: f64,
    pub started_at: SystemTime,
    pub recent_fires: VecDeque<FireOutcome>,
}

impl DaemonView {
    pub fn record_fire(&mut self, outcome: FireOutcome) {
        if self.recent_fires.len() >= RECENT_FIRES {
            self.recent_fires.pop_front();
        }
        self.recent_fires.push_back(outcome);
    }
}

/// Everything the handlers need.
#[derive(Clone)]
pub struct StatusContext {
    pub engine: Engine,
    pub clock: Arc<dyn Clock>,
    pub source: Arc<dyn StatusSource>,
    pub counters: Arc<Counters>,
    pub view: Arc<RwLock<DaemonView>>,
    pub token: Option<StatusToken>,
    /// The engine kind of a backup run (`backup.run`).
    pub run_kind: String,
}

impl StatusContext {
    fn read_view<R>(&self, f: impl FnOnce(&DaemonView) -> R) -> R {
        let guard = self.view.read().unwrap_or_else(|p| p.into_inner());
        f(&guard)
    }

    /// Freshness rows for the page, the API and the metrics.
    pub fn freshness(&self) -> Result<Vec<Freshness>, String> {
        let rows = self.source.collections()?;
        let now = self.clock.now();
        Ok(self.read_view(|v| assess(rows, &v.specs, now, v.started_at, v.stale_factor)))
    }

    fn schedule_rows(&self) -> Vec<ScheduleRow> {
        let now = self.clock.now();
        let kv = self.engine.kv(STATE_NAMESPACE);
        self.read_view(|v| {
            v.specs
                .iter()
                .map(|s| {
                    let state: Option<ScheduleState> = kv.get(&s.name).ok().flatten();
                    let next = jiff::Timestamp::try_from(now)
                        .ok()
                        .and_then(|t| s.schedule.next_after(t));
                    ScheduleRow {
                        name: s.name.clone(),
                        cron: s.schedule.cron().to_string(),
                        time_zone: s.schedule.time_zone_name().to_string(),
                        next_fire: next.as_ref().map(|z| z.to_string()),
                        next_fire_ms: next.map(|z| z.timestamp().as_millisecond()),
                        overlap: format!("{:?}", s.overlap).to_lowercase(),
                        jitter_seconds: s.jitter.as_secs_f64(),
                        catch_up_window_seconds: s.catch_up_window.as_secs_f64(),
                        envs: s.envs.clone(),
                        collections: s.collections.clone(),
                        last_fire: state.as_ref().and_then(|st| st.last_nominal_ms).map(fmt_ms),
                        last_fire_ms: state.as_ref().and_then(|st| st.last_nominal_ms),
                        last_job: state.as_ref().and_then(|st| st.last_job),
                        queued: state.as_ref().and_then(|st| st.queued_ms).map(fmt_ms),
                        started: state.as_ref().map_or(0, |st| st.started),
                        skipped_overlap: state.as_ref().map_or(0, |st| st.skipped_overlap),
                        missed: state.as_ref().map_or(0, |st| st.missed),
                        coalesced: state.as_ref().map_or(0, |st| st.coalesced),
                    }
                })
                .collect()
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ScheduleRow {
    pub name: String,
    pub cron: String,
    pub time_zone: String,
    pub next_fire: Option<String>,
    #[serde(skip)]
    pub next_fire_ms: Option<i64>,
    pub overlap: String,
    pub jitter_seconds: f64,
    pub catch_up_window_seconds: f64,
    pub envs: Vec<String>,
    pub collections: Vec<String>,
    pub last_fire: Option<String>,
    #[serde(skip)]
    pub last_fire_ms: Option<i64>,
    pub last_job: Option<u64>,
    pub queued: Option<String>,
    pub started: u64,
    pub skipped_overlap: u64,
    pub missed: u64,
    pub coalesced: u64,
}

/// The router (tests serve it on a port-0 listener).
pub fn router(ctx: StatusContext) -> Router {
    let protected = Router::new()
        .route("/", get(page_handler))
        .route("/metrics", get(metrics_handler))
        .route("/api/schedules", get(schedules_handler))
        .route("/api/jobs", get(jobs_handler))
        .route("/api/jobs/{id}", get(job_handler))
        .route("/api/runs", get(runs_handler))
        .route("/api/fires", get(fires_handler))
        .route("/api/freshness", get(freshness_handler))
        .route("/api/catalog", get(catalog_handler))
        .route_layer(middleware::from_fn_with_state(ctx.clone(), require_token));
    Router::new()
        .route("/health", get(health_handler))
        .merge(protected)
        .with_state(ctx)
}

/// Binds `addr` and serves until `shutdown` resolves. Returns the bound address through
/// `bound` before serving (port 0 picks a free port).
pub async fn serve(
    ctx: StatusContext,
    addr: SocketAddr,
    bound: tokio::sync::oneshot::Sender<SocketAddr>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("status listener on {addr}: {e}")))?;
    let local = listener.local_addr()?;
    let _ = bound.send(local);
    tracing::info!(address = %local, "status listener ready");
    axum::serve(listener, router(ctx))
        .with_graceful_shutdown(shutdown)
        .await
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn require_token(
    State(ctx): State<StatusContext>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Response {
    if let Some(token) = &ctx.token {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !constant_time_eq(given.as_bytes(), token.0.as_bytes()) {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                Json(serde_json::json!({"error": "missing or wrong bearer token"})),
            )
                .into_response();
        }
    }
    next.run(request).await
}

fn internal(message: String) -> Response {
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        Json(serde_json::json!({ "error": message })),
    )
        .into_response()
}

async fn health_handler(State(ctx): State<StatusContext>) -> Response {
    let now = ctx.clock.now();
    let started = ctx.read_view(|v| v.started_at);
    Json(serde_json::json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "now": fmt_ms(to_ms(now)),
        "started_at": fmt_ms(to_ms(started)),
        "uptime_seconds": now.duration_since(started).map(|d| d.as_secs()).unwrap_or(0),
    }))
    .into_response()
}

async fn schedules_handler(State(ctx): State<StatusContext>) -> Response {
    Json(ctx.schedule_rows()).into_response()
}

#[derive(Deserialize)]
struct JobsQuery {
    /// Every job, finished or not.
    all: Option<bool>,
    /// Active jobs plus failed and partially failed ones (what `tcb-backup jobs` lists).
    failed: Option<bool>,
}

async fn jobs_handler(State(ctx): State<StatusContext>, Query(q): Query<JobsQuery>) -> Response {
    let listed = if q.all == Some(true) {
        ctx.engine.list(&JobFilter::default())
    } else {
        let active = ctx.engine.list(&JobFilter {
            active_only: true,
            ..JobFilter::default()
        });
        match (active, q.failed == Some(true)) {
            (Ok(mut jobs), true) => ctx
                .engine
                .list(&JobFilter {
                    statuses: vec![JobStatus::Failed, JobStatus::PartiallyFailed],
                    ..JobFilter::default()
                })
                .map(|failed| {
                    jobs.extend(failed);
                    jobs
                }),
            (other, _) => other,
        }
    };
    match listed {
        Ok(jobs) => Json(jobs).into_response(),
        Err(e) => internal(e.to_string()),
    }
}

async fn job_handler(State(ctx): State<StatusContext>, Path(id): Path<String>) -> Response {
    let Ok(id) = id.parse::<u64>() else {
        return (
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({"error": format!("`{id}` is not a job id")})),
        )
            .into_response();
    };
    match ctx.engine.job(JobId(id)) {
        Ok(Some(view)) => Json(view).into_response(),
        Ok(None) => (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({"error": format!("job {id} not found")})),
        )
            .into_response(),
        Err(e) => internal(e.to_string()),
    }
}

#[derive(Deserialize)]
struct RunsQuery {
    limit: Option<usize>,
}

async fn runs_handler(State(ctx): State<StatusContext>, Query(q): Query<RunsQuery>) -> Response {
    let filter = JobFilter {
        kind: Some(ctx.run_kind.clone()),
        ..JobFilter::default()
    };
    match ctx.engine.list(&filter) {
        Ok(mut runs) => {
            runs.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.0.cmp(&a.id.0)));
            runs.truncate(q.limit.unwrap_or(20).min(1000));
            Json(runs).into_response()
        }
        Err(e) => internal(e.to_string()),
    }
}

async fn fires_handler(State(ctx): State<StatusContext>) -> Response {
    let fires: Vec<FireOutcome> = ctx.read_view(|v| v.recent_fires.iter().cloned().collect());
    Json(fires).into_response()
}

async fn freshness_handler(State(ctx): State<StatusContext>) -> Response {
    match ctx.freshness() {
        Ok(rows) => Json(rows).into_response(),
        Err(e) => internal(e),
    }
}

async fn catalog_handler(State(ctx): State<StatusContext>) -> Response {
    match ctx.source.catalog() {
        Ok(v) => Json(v).into_response(),
        Err(e) => internal(e),
    }
}

/// Every job in the store by status, finished ones included; every status is present (zero
/// when none), so the series do not come and go. The engine has no count API, so this reads
/// every job record once per scrape: the cost grows with the jobs the store keeps (finished
/// ones too), one decode each.
fn jobs_by_status(engine: &Engine) -> Result<BTreeMap<String, u64>, tcb_state::EngineError> {
    let mut counts: BTreeMap<String, u64> = [
        JobStatus::Queued,
        JobStatus::Running,
        JobStatus::Waiting,
        JobStatus::WaitingForChildren,
        JobStatus::Succeeded,
        JobStatus::PartiallyFailed,
        JobStatus::Failed,
        JobStatus::Cancelled,
    ]
    .iter()
    .map(|s| (s.as_str().to_string(), 0))
    .collect();
    for j in engine.list(&JobFilter::default())? {
        *counts.entry(j.status.as_str().to_string()).or_default() += 1;
    }
    Ok(counts)
}

async fn metrics_handler(State(ctx): State<StatusContext>) -> Response {
    let freshness = match ctx.freshness() {
        Ok(rows) => rows,
        Err(e) => return internal(e),
    };
    let jobs_by_status = match jobs_by_status(&ctx.engine) {
        Ok(counts) => counts,
        Err(e) => return internal(e.to_string()),
    };
    let schedules: Vec<ScheduleGauge> = ctx
        .schedule_rows()
        .into_iter()
        .map(|r| ScheduleGauge {
            name: r.name,
            next_fire: r.next_fire_ms.map(from_ms),
            last_nominal: r.last_fire_ms.map(from_ms),
        })
        .collect();
    let started_at = ctx.read_view(|v| v.started_at);
    let body = metrics::render(&metrics::Scrape {
        started_at,
        freshness: &freshness,
        jobs_by_status: &jobs_by_status,
        schedules: &schedules,
        counters: &ctx.counters,
    });
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

async fn page_handler(State(ctx): State<StatusContext>) -> Response {
    let rows = match ctx.freshness() {
        Ok(rows) => rows,
        Err(e) => return internal(e),
    };
    let schedules: Vec<PageSchedule> = ctx
        .schedule_rows()
        .into_iter()
        .map(|r| PageSchedule {
            name: r.name,
            cron: r.cron,
            time_zone: r.time_zone,
            next_fire: r.next_fire,
        })
        .collect();
    Html(page::render(&rows, &schedules, ctx.clock.now())).into_response()
}
