//! A faithful local emulator of the WeChat CloudBase HTTP API (reference
//! `wechat-api.md` §12): access tokens of both families, every `/tcb/*` endpoint the tool uses,
//! a fake COS for uploads and signed expiring downloads, a virtual clock, quotas, fault
//! injection and a control API (`/_emulator/...`). Tests start it in-process on port 0 with
//! [`start`]; `tcb-backup emulator` runs it standalone through [`run_standalone`].
//!
//! Module map: `server` (routing, token endpoints, fault pre-processing), `tcb` (validation and
//! `/tcb/*`), `migrate` (export/import/queryinfo), `cos` (fake COS), `envelope`, `tokens`,
//! `quota`, `query` (JS query subset parser) and `query_eval`, `store` (collections), `formats`
//! (JSON Lines/CSV), `jobs`, `storage` (file ids, blobs, signing), `faults`, `clock`, `seed`,
//! `persist`, `control`, `world` (shared state).

mod clock;
mod config;
mod control;
mod cos;
mod envelope;
mod faults;
mod formats;
mod jobs;
mod migrate;
mod persist;
pub mod query;
mod query_eval;
mod quota;
mod seed;
mod server;
mod storage;
mod store;
mod tcb;
mod tokens;
mod world;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use clock::VirtualClock;
pub use config::{
    EmulatorApp, EmulatorConfig, JobTiming, Quotas, StatusMessageField, UnknownCollectionMode,
    UpsertMode,
};
pub use control::{ControlError, EmulatorControl, JobControl, JobSnapshot};
pub use cos::parse_range;
pub use faults::{Counters, EndpointStats, FaultAction, FaultRule};
pub use seed::SeedSpec;
pub use storage::{file_id, parse_file_id, EXPORT_BUCKET};
pub use tcb::TCB_ENDPOINTS;
pub use tokens::{Family, IssuedToken};

use world::Core;

/// Why the emulator could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    #[error("emulator: cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("emulator: cannot prepare storage directory: {0}")]
    Storage(std::io::Error),
    #[error("emulator: data directory {path}: {message}")]
    DataDir { path: PathBuf, message: String },
    #[error("emulator: invalid configuration: {0}")]
    Config(String),
    #[error("emulator: server failed: {0}")]
    Serve(std::io::Error),
}

/// A running emulator. Dropping it stops the server and removes temporary blobs (without the
/// `data_dir` save that [`EmulatorHandle::shutdown`] does).
pub struct EmulatorHandle {
    base_url: String,
    addr: SocketAddr,
    apps: Vec<EmulatorApp>,
    control: EmulatorControl,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), std::io::Error>>>,
}

impl std::fmt::Debug for EmulatorHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmulatorHandle")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl Drop for EmulatorHandle {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
        self.control.core.blobs.cleanup();
    }
}

impl EmulatorHandle {
    /// `http://127.0.0.1:PORT`: API, COS and file URLs are all served here.
    pub fn base_url(&self) -> String {
        self.base_url.clone()
    }
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
    pub fn apps(&self) -> &[EmulatorApp] {
        &self.apps
    }
    pub fn control(&self) -> &EmulatorControl {
        &self.control
    }
    /// Stop serving, persist to `data_dir` if configured, remove temporary blobs.
    pub async fn shutdown(mut self) {
        // (Drop then only repeats the idempotent cleanup.)
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        let core = &self.control.core;
        let data_dir = core.world().cfg.data_dir.clone();
        if let Some(dir) = data_dir {
            if let Err(e) = persist::save(core, &dir) {
                tracing::warn!("emulator: could not persist to {}: {e}", dir.display());
            }
        }
        core.blobs.cleanup();
    }
}

/// Start the emulator on `listen` (port 0 picks a free port).
pub async fn start(
    cfg: EmulatorConfig,
    listen: SocketAddr,
) -> Result<EmulatorHandle, EmulatorError> {
    validate_config(&cfg)?;
    let blobs = storage::BlobDir::open(cfg.data_dir.as_deref()).map_err(EmulatorError::Storage)?;
    let apps = cfg.apps.clone();
    let seed = cfg.seed.clone();
    let data_dir = cfg.data_dir.clone();
    let core = Arc::new(Core::new(cfg, blobs));
    if let Some(dir) = &data_dir {
        persist::load(&core, dir).map_err(|message| EmulatorError::DataDir {
            path: dir.clone(),
            message,
        })?;
    }
    if let Some(spec) = seed {
        seed_world(&core, &spec);
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| EmulatorError::Bind {
            addr: listen,
            source,
        })?;
    let addr = listener
        .local_addr()
        .map_err(|source| EmulatorError::Bind {
            addr: listen,
            source,
        })?;
    let host = if addr.ip().is_unspecified() {
        SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), addr.port())
    } else {
        addr
    };
    let base_url = format!("http://{host}");
    let _ = core.base_url.set(base_url.clone());
    let app = server::router(Arc::clone(&core));
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async {
            let _ = stop_rx.await;
        })
        .await
    });
    Ok(EmulatorHandle {
        base_url,
        addr,
        apps,
        control: EmulatorControl { core },
        stop: Some(stop_tx),
        task: Some(task),
    })
}

fn validate_config(cfg: &EmulatorConfig) -> Result<(), EmulatorError> {
    if cfg.apps.is_empty() {
        return Err(EmulatorError::Config("at least one app is required".into()));
    }
    let mut seen_apps = std::collections::HashSet::new();
    let mut seen_envs = std::collections::HashSet::new();
    for app in &cfg.apps {
        if app.appid.is_empty() || app.secret.is_empty() {
            return Err(EmulatorError::Config(
                "every app needs an appid and a secret".into(),
            ));
        }
        if !seen_apps.insert(app.appid.as_str()) {
            return Err(EmulatorError::Config(format!(
                "appid {} is listed twice",
                app.appid
            )));
        }
        for env in app.envs.iter().chain(&app.disabled_envs) {
            if env.is_empty() || env.contains(['/', '.', ' ']) {
                return Err(EmulatorError::Config(format!("invalid env id {env:?}")));
            }
            if !seen_envs.insert(env.as_str()) {
                return Err(EmulatorError::Config(format!("env {env} is listed twice")));
            }
        }
    }
    Ok(())
}

/// Add the seed collections that are missing (stored, or synthetic when the spec says so).
fn seed_world(core: &Core, spec: &SeedSpec) {
    let mut w = core.world();
    let envs: Vec<String> = w
        .envs
        .keys()
        .filter(|e| spec.envs.as_ref().is_none_or(|list| list.contains(e)))
        .cloned()
        .collect();
    for env in envs {
        let Some(state) = w.envs.get_mut(&env) else {
            continue;
        };
        for i in 0..spec.collections {
            let name = seed::collection_name(i);
            if state.collections.contains_key(&name) {
                continue;
            }
            let coll = if spec.synthetic {
                store::Collection::synthetic(store::Synthetic::new(
                    &env,
                    &name,
                    spec.seed,
                    spec.records_per_collection,
                    spec.large_fraction,
                ))
            } else {
                let mut c = store::Collection::default();
                for doc in seed::generate(spec, &env, &name) {
                    let _ = c.insert(doc);
                }
                c
            };
            state.collections.insert(name, coll);
        }
    }
}

/// Options of `tcb-backup emulator`.
#[derive(Clone, Debug)]
pub struct StandaloneOptions {
    pub listen: SocketAddr,
    pub data_dir: Option<PathBuf>,
    pub seed_collections: Option<u32>,
    pub seed_records: Option<u64>,
    /// Start from this config instead of [`EmulatorConfig::demo`].
    pub config: Option<EmulatorConfig>,
}

/// Start the standalone emulator and render the banner `tcb-backup emulator` prints (base URL,
/// appid, secret, env ids). Split from [`run_standalone`] so it can be tested.
pub async fn start_standalone(
    opts: StandaloneOptions,
) -> Result<(EmulatorHandle, String), EmulatorError> {
    let mut cfg = opts.config.unwrap_or_else(EmulatorConfig::demo);
    if opts.data_dir.is_some() {
        cfg.data_dir = opts.data_dir;
    }
    if opts.seed_collections.is_some() || opts.seed_records.is_some() {
        let mut spec = cfg.seed.unwrap_or_default();
        if let Some(n) = opts.seed_collections {
            spec.collections = n;
        }
        if let Some(m) = opts.seed_records {
            spec.records_per_collection = m;
        }
        cfg.seed = Some(spec);
    }
    let handle = start(cfg, opts.listen).await?;
    let banner = StandaloneBanner::of(&handle).to_text();
    Ok((handle, banner))
}

/// What a standalone emulator announces: what to put in a config to use it. The secrets are
/// the emulator's own demo secrets (it accepts nothing else), printed on stdout for the user to
/// copy, never logged.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StandaloneBanner {
    pub api_base: String,
    pub apps: Vec<BannerApp>,
    pub control_api: String,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct BannerApp {
    pub appid: String,
    pub secret: String,
    pub envs: Vec<String>,
}

impl StandaloneBanner {
    pub fn of(handle: &EmulatorHandle) -> Self {
        StandaloneBanner {
            api_base: handle.base_url(),
            apps: handle
                .apps()
                .iter()
                .map(|a| BannerApp {
                    appid: a.appid.clone(),
                    secret: a.secret.clone(),
                    envs: a.envs.clone(),
                })
                .collect(),
            control_api: format!("{}/_emulator/", handle.base_url()),
        }
    }

    pub fn to_text(&self) -> String {
        let mut text = format!(
            "tcb-backup emulator listening on {base}\n  api_base: {base}\n",
            base = self.api_base
        );
        for app in &self.apps {
            text.push_str(&format!(
                "  appid:  {}\n  secret: {}\n  envs:   {}\n",
                app.appid,
                app.secret,
                app.envs.join(", ")
            ));
        }
        text.push_str(&format!(
            "  control API: {}  (Ctrl-C to stop)\n",
            self.control_api
        ));
        text
    }
}

/// Serve until Ctrl-C, after printing the appid, secret, env ids and base URL it accepts; then
/// save to `data_dir` if given.
/// `announce` prints the banner (as text or JSON: the caller's choice).
pub async fn run_standalone(
    opts: StandaloneOptions,
    announce: impl FnOnce(&StandaloneBanner),
) -> Result<(), EmulatorError> {
    let (handle, _) = start_standalone(opts).await?;
    announce(&StandaloneBanner::of(&handle));
    let _ = tokio::signal::ctrl_c().await;
    handle.shutdown().await;
    Ok(())
}
