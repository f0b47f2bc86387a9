//! The emulator's shared state: every env's collections, storage and jobs, the token book,
//! quotas, faults and counters, behind one mutex (held only for short, non-blocking sections),
//! plus the virtual clock, blob directory and URL signer.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use tokio::sync::Notify;

use super::clock::VirtualClock;
use super::config::EmulatorConfig;
use super::faults::{Counters, FaultBook};
use super::jobs::{apply_import, Job, JobKind, JobScript, Outcome, Prepared, Progress};
use super::quota::QuotaBook;
use super::seed::stable_hash;
use super::storage::{BlobDir, Signer, StoredFile, UploadTicket};
use super::store::Collection;
use super::tokens::{TokenBook, TokenRules};

/// One cloud environment.
#[derive(Debug, Default)]
pub struct EnvState {
    pub appid: String,
    pub enabled: bool,
    pub collections: BTreeMap<String, Collection>,
    pub files: BTreeMap<String, StoredFile>,
    pub jobs: BTreeMap<u64, Job>,
    pub next_job_id: u64,
}

#[derive(Debug)]
pub struct World {
    pub cfg: EmulatorConfig,
    pub tokens: TokenBook,
    pub quotas: QuotaBook,
    pub envs: BTreeMap<String, EnvState>,
    pub counters: Counters,
    pub faults: FaultBook,
    /// "env/collection" → export jobs created.
    pub exports_created: BTreeMap<String, u64>,
    /// Upload credentials by security token.
    pub uploads: HashMap<String, UploadTicket>,
    /// Export results behind `file_url`: "env/job_id/name" → file.
    pub export_objects: BTreeMap<String, StoredFile>,
}

impl World {
    pub fn new(cfg: EmulatorConfig) -> Self {
        let mut envs = BTreeMap::new();
        for app in &cfg.apps {
            for (env, enabled) in app
                .envs
                .iter()
                .map(|e| (e, true))
                .chain(app.disabled_envs.iter().map(|e| (e, false)))
            {
                envs.insert(
                    env.clone(),
                    EnvState {
                        appid: app.appid.clone(),
                        enabled,
                        next_job_id: 100_000_000 + stable_hash(env) % 9_000,
                        ..EnvState::default()
                    },
                );
            }
        }
        World {
            faults: FaultBook::new(cfg.fault_seed),
            cfg,
            tokens: TokenBook::default(),
            quotas: QuotaBook::default(),
            envs,
            counters: Counters::default(),
            exports_created: BTreeMap::new(),
            uploads: HashMap::new(),
            export_objects: BTreeMap::new(),
        }
    }

    pub fn token_rules(&self) -> TokenRules {
        TokenRules {
            ttl: self.cfg.token_ttl_secs as f64,
            grace: self.cfg.token_grace_secs as f64,
            force_per_day: self.cfg.stable_force_refresh_per_day,
            force_spacing: self.cfg.stable_force_refresh_spacing_secs as f64,
            day_offset: self.cfg.day_utc_offset_secs,
        }
    }

    /// Finalise every job whose time is up: register export files, apply imports.
    pub fn tick(&mut self, now: f64) {
        let timing = self.cfg.job_timing.clone();
        let upsert_mode = self.cfg.upsert_mode;
        let auto_create = self.cfg.import_auto_create;
        let mut objects = Vec::new();
        for (env_id, env) in self.envs.iter_mut() {
            let due: Vec<u64> = env
                .jobs
                .values()
                .filter(|j| j.progress(now, &timing) == Progress::Due)
                .map(|j| j.id)
                .collect();
            for id in due {
                let Some(job) = env.jobs.get_mut(&id) else {
                    continue;
                };
                let prepared = job.prepared.take();
                let script = job.script.clone();
                let kind = job.kind.clone();
                let mut export_file = None;
                let outcome = match (script, prepared) {
                    (JobScript::Fail(msg), _) => fail(msg),
                    (_, None) => fail("job failed".into()),
                    (_, Some(Prepared::Failed(msg))) => fail(msg),
                    (
                        _,
                        Some(Prepared::ExportFile {
                            blob,
                            size,
                            records,
                        }),
                    ) => {
                        export_file = Some((blob, size));
                        Outcome {
                            success: true,
                            record_success: records,
                            record_fail: 0,
                            message: "导出完成.".into(),
                        }
                    }
                    (_, Some(Prepared::ImportRecords(records))) => match &kind {
                        JobKind::Import {
                            collection,
                            upsert,
                            stop_on_error,
                            ..
                        } => {
                            if !env.collections.contains_key(collection) && !auto_create {
                                fail(format!("collection {collection} not exists"))
                            } else {
                                let coll = env.collections.entry(collection.clone()).or_default();
                                apply_import(coll, records, *upsert, upsert_mode, *stop_on_error)
                            }
                        }
                        JobKind::Export { .. } => fail("job failed".into()),
                    },
                };
                if let (Some((blob, size)), JobKind::Export { file_path, .. }) =
                    (&export_file, &kind)
                {
                    let stored = StoredFile {
                        blob: blob.clone(),
                        size: *size,
                    };
                    env.files.insert(file_path.clone(), stored.clone());
                    objects.push((export_object_key(env_id, id, file_path), stored));
                }
                if let Some(job) = env.jobs.get_mut(&id) {
                    job.export_file = export_file;
                    job.outcome = Some(outcome);
                    job.finished_at = Some(now);
                }
            }
        }
        self.export_objects.extend(objects);
    }
}

fn fail(message: String) -> Outcome {
    Outcome {
        success: false,
        record_success: 0,
        record_fail: 0,
        message,
    }
}

/// Key of an export result in the export bucket.
pub fn export_object_key(env: &str, job_id: u64, file_path: &str) -> String {
    let name = file_path.rsplit('/').next().unwrap_or("export");
    format!("{env}/{job_id}/{name}")
}

/// Everything the handlers share.
#[derive(Debug)]
pub struct Core {
    world: Mutex<World>,
    pub clock: VirtualClock,
    pub blobs: BlobDir,
    pub signer: Signer,
    pub base_url: OnceLock<String>,
    background: AtomicUsize,
    settled: Notify,
}

impl Core {
    pub fn new(cfg: EmulatorConfig, blobs: BlobDir) -> Self {
        Core {
            clock: VirtualClock::new(cfg.start_unix_secs, cfg.time_scale),
            world: Mutex::new(World::new(cfg)),
            blobs,
            signer: Signer::default(),
            base_url: OnceLock::new(),
            background: AtomicUsize::new(0),
            settled: Notify::new(),
        }
    }

    /// Lock the world and bring its jobs up to date with the virtual clock.
    pub fn world(&self) -> MutexGuard<'_, World> {
        let mut w = self.world.lock().unwrap_or_else(|e| e.into_inner());
        w.tick(self.clock.now());
        w
    }

    pub fn now(&self) -> f64 {
        self.clock.now()
    }

    /// Run job preparation (big export files, big imports) in the background, tracked so that
    /// [`Core::settle`] can wait for it.
    pub fn spawn_background(self: &Arc<Self>, task: impl Future<Output = ()> + Send + 'static) {
        self.background.fetch_add(1, Ordering::SeqCst);
        let core = Arc::clone(self);
        tokio::spawn(async move {
            task.await;
            core.background.fetch_sub(1, Ordering::SeqCst);
            core.settled.notify_waiters();
        });
    }

    /// Wait until no background preparation is running.
    pub async fn settle(&self) {
        loop {
            let notified = self.settled.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.background.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }

    pub fn base(&self) -> &str {
        self.base_url
            .get()
            .map_or("http://127.0.0.1", String::as_str)
    }
}
