//! From a loaded configuration to the runtime pieces: resolved secrets and one client per app,
//! the backup plan, workflow settings and engine options. Also the credential preflight that
//! lets the CLI report a wrong secret with its own exit code before any job runs.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;
use tcb_state::{EngineError, EngineOptions, RetryPolicy};

use crate::client::{AppCredentials, ClientConfig, CloudBaseClient, Secret, TokenMode};
use crate::config::{self, Config};
use crate::destination::plan::{build_destinations, CopyPlan, CopySettings};

use super::errors::is_credential_error;
use super::plan::{BackupPlan, CollectionSelection, PlanApp, PlanEnv};
use super::poll::PollPolicy;
use super::progress::SharedProgress;
use super::service::{BackupService, Concurrency};
use super::settings::{AppClients, WorkflowSettings};
use super::state::RunSelection;

/// Why the configuration cannot be used; the CLI maps each to an exit code.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SetupError {
    /// No config file (exit 10).
    #[error("{0}")]
    Missing(String),
    /// The config file has problems (exit 10).
    #[error("{0}")]
    Invalid(String),
    /// A secret cannot be fetched or the platform refused the credentials (exit 12).
    #[error("{0}")]
    Credentials(String),
    #[error("{0}")]
    Other(String),
}

/// Loads and validates the config file.
pub fn load(path: &Path) -> Result<Config, SetupError> {
    if let Some(warning) = config::config_permission_warning(path) {
        tracing::warn!("{warning}");
    }
    let loaded = config::load(path).map_err(|e| {
        if e.missing {
            SetupError::Missing(format!(
                "no configuration at {}: create one with `tcb-backup init` (or pass --config / set TCB_BACKUP_CONFIG)",
                path.display()
            ))
        } else {
            SetupError::Invalid(e.to_string())
        }
    })?;
    // The identity decrypts every encrypted snapshot: say so early if others can read it.
    let identity = loaded
        .encryption
        .as_ref()
        .and_then(|e| e.identity_file.as_deref());
    if let Some(warning) = identity.and_then(config::permission_warning) {
        tracing::warn!("{warning} (encryption.identity_file: it decrypts the backups)");
    }
    Ok(loaded)
}

/// Everything a command needs from the configuration.
#[derive(Clone)]
pub struct Prepared {
    pub config: Config,
    pub state_dir: PathBuf,
    pub destination: PathBuf,
    pub engine_options: EngineOptions,
    pub settings: WorkflowSettings,
    pub plan: BackupPlan,
    pub concurrency: Concurrency,
    /// None when prepared offline (no secrets resolved).
    pub clients: Option<AppClients>,
}

/// The poll schedule a `[poll]` table asks for.
pub fn poll_policy(poll: &config::PollConfig) -> PollPolicy {
    PollPolicy {
        initial: poll.initial_interval,
        min: poll.initial_interval.min(PollPolicy::default().min),
        max: poll.max_interval,
        // `multiplier` caps how fast the waits grow; the schedule itself is proportional.
        max_growth: poll.multiplier.max(1.0),
        stall_timeout: poll.stall_timeout,
        ..PollPolicy::default()
    }
}

/// The step retry policy a `[retry]` table asks for.
pub fn retry_policy(retry: &config::RetryConfig) -> RetryPolicy {
    RetryPolicy {
        initial_interval: retry.initial_interval,
        multiplier: retry.multiplier,
        max_interval: retry.max_interval,
        max_attempts: retry.max_attempts,
        max_elapsed: retry.max_elapsed,
    }
}

/// The settings a configuration that leaves `[poll]` and `[retry]` out gets, storing under
/// `destination` (what the benchmarks measure: what users run).
pub fn default_settings(destination: PathBuf) -> WorkflowSettings {
    WorkflowSettings {
        poll: poll_policy(&config::PollConfig::default()),
        retry: retry_policy(&config::RetryConfig::default()),
        ..WorkflowSettings::new(destination)
    }
}

/// Prepares without touching secrets (read-only commands, `config check`).
pub fn prepare_offline(config: &Config) -> Result<Prepared, SetupError> {
    let settings = WorkflowSettings {
        destination: config.destination.root.clone(),
        zstd_level: config.destination.zstd_level,
        poll: poll_policy(&config.poll),
        retry: retry_policy(&config.retry),
        encryption: config
            .encryption
            .as_ref()
            .map(|e| Arc::new(e.recipients.clone())),
        copies: CopySettings {
            plan: CopyPlan::from_config(config),
            ..CopySettings::default()
        },
        ..WorkflowSettings::new(config.destination.root.clone())
    };
    let plan = BackupPlan {
        apps: config
            .apps
            .iter()
            .map(|a| PlanApp {
                appid: a.appid.clone(),
                envs: a
                    .envs
                    .iter()
                    .map(|e| PlanEnv {
                        id: e.id.clone(),
                        collections: match &e.collections {
                            config::CollectionSelection::Explicit(names) => {
                                CollectionSelection::Explicit(names.clone())
                            }
                            config::CollectionSelection::Discover {
                                include, exclude, ..
                            } => CollectionSelection::Discover {
                                include: include.clone(),
                                exclude: exclude.clone(),
                            },
                        },
                        queries: e.queries.clone(),
                        fields: e.fields.clone(),
                        file_type: e.file_type,
                        record_collection: e.record_collection.clone(),
                    })
                    .collect(),
            })
            .collect(),
    };
    let concurrency = Concurrency {
        collections: config.concurrency.global.max(1),
    };
    let engine_options = EngineOptions {
        // Run jobs wait for their children without a slot, but leave room for them anyway.
        global_concurrency: concurrency.collections + 2,
        // Ctrl-C should stop promptly; an interrupted step simply runs again next time.
        shutdown_grace: std::time::Duration::from_secs(3),
        ..EngineOptions::default()
    };
    Ok(Prepared {
        config: config.clone(),
        state_dir: config.state_dir.clone(),
        destination: config.destination.root.clone(),
        engine_options,
        settings,
        plan,
        concurrency,
        clients: None,
    })
}

/// Prepares with secrets resolved and one client built per app.
pub fn prepare(config: &Config) -> Result<Prepared, SetupError> {
    let mut prepared = prepare_offline(config)?;
    let mut clients = AppClients::new();
    for app in &config.apps {
        let secret =
            config::resolve_secret(app).map_err(|e| SetupError::Credentials(e.to_string()))?;
        let creds = AppCredentials {
            appid: app.appid.clone(),
            secret: Secret::new(secret.into_inner()),
            token_mode: match app.token_mode {
                config::TokenMode::Stable => TokenMode::Stable,
                config::TokenMode::Legacy => TokenMode::Legacy,
            },
        };
        let client_config = ClientConfig {
            allow_insecure_http: app.allow_insecure_http,
            ..ClientConfig::with_api_base(app.api_base.clone())
        };
        let client = CloudBaseClient::new(client_config, creds)
            .map_err(|e| SetupError::Other(format!("app {}: {e}", app.appid)))?;
        clients.insert(&app.appid, client, Some(app.concurrency.max(1)));
    }
    prepared.settings.copies.destinations =
        build_destinations(config, Some(&clients)).map_err(SetupError::Credentials)?;
    prepared.clients = Some(clients);
    Ok(prepared)
}

impl Prepared {
    /// Opens the store and registers the workflows (needs [`prepare`], not offline).
    pub fn open(&self, progress: SharedProgress) -> Result<BackupService, EngineError> {
        BackupService::open(
            &self.state_dir,
            self.engine_options.clone(),
            self.settings.clone(),
            self.clients.clone().unwrap_or_default(),
            self.plan.clone(),
            self.concurrency,
            progress,
        )
    }

    /// Fetches a token for every app the selection touches (the run's one token call per app;
    /// the jobs reuse it). A refused secret is reported now, as a credential error; a transient
    /// failure is left to the jobs' retries.
    pub async fn preflight(
        &self,
        service: &BackupService,
        selection: &RunSelection,
    ) -> Result<(), SetupError> {
        let envs = self.plan.envs(selection).map_err(SetupError::Invalid)?;
        let mut seen = std::collections::BTreeSet::new();
        for (app, _) in envs {
            if !seen.insert(app.appid.clone()) {
                continue;
            }
            let Some(client) = service.clients().get(&app.appid) else {
                continue;
            };
            if let Err(e) = client.ensure_token().await {
                if is_credential_error(&e) {
                    return Err(SetupError::Credentials(format!(
                        "app {}: the platform refused the credentials: {e}",
                        app.appid
                    )));
                }
                tracing::warn!(appid = %app.appid, error = %e, "token preflight failed; the jobs will retry");
            }
        }
        Ok(())
    }

    /// What `config check` prints.
    pub fn describe(&self) -> ConfigSummary {
        ConfigSummary {
            config: self.config.source.clone(),
            state_dir: self.state_dir.clone(),
            destination: self.destination.clone(),
            concurrency: self.concurrency.collections,
            apps: self
                .config
                .apps
                .iter()
                .map(|a| AppSummary {
                    appid: a.appid.clone(),
                    api_base: a.api_base.to_string(),
                    envs: a
                        .envs
                        .iter()
                        .map(|e| EnvSummary {
                            id: e.id.clone(),
                            collections: match &e.collections {
                                config::CollectionSelection::Explicit(n) => n.join(", "),
                                config::CollectionSelection::Discover {
                                    include, exclude, ..
                                } => format!(
                                    "discover include [{}] exclude [{}]",
                                    include.join(", "),
                                    exclude.join(", ")
                                ),
                            },
                        })
                        .collect(),
                })
                .collect(),
            encryption: self.config.encryption.as_ref().map(|e| EncryptionSummary {
                recipients: e.recipients.to_strings(),
                identity_file: e.identity_file.clone(),
            }),
            destinations: self
                .config
                .destinations
                .iter()
                .map(|d| {
                    format!(
                        "{} ({}): {}{}",
                        d.name,
                        d.kind.name(),
                        d.envs
                            .as_ref()
                            .map(|e| e.join(", "))
                            .unwrap_or_else(|| "every env".to_string()),
                        if d.retention.is_some() {
                            ", own retention"
                        } else {
                            ""
                        }
                    )
                })
                .collect(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct ConfigSummary {
    pub config: PathBuf,
    pub state_dir: PathBuf,
    pub destination: PathBuf,
    pub concurrency: usize,
    pub apps: Vec<AppSummary>,
    /// `<name> (<kind>): <envs>[, retention]` per `[[destinations]]`.
    pub destinations: Vec<String>,
    /// `[encryption]`, when on: the recipients (public keys) and the identity file's path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encryption: Option<EncryptionSummary>,
}

#[derive(Debug, Serialize)]
pub struct EncryptionSummary {
    pub recipients: Vec<String>,
    pub identity_file: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
pub struct AppSummary {
    pub appid: String,
    pub api_base: String,
    pub envs: Vec<EnvSummary>,
}

#[derive(Debug, Serialize)]
pub struct EnvSummary {
    pub id: String,
    pub collections: String,
}

impl ConfigSummary {
    pub fn to_text(&self) -> String {
        let mut s = format!(
            "  state dir:   {}\n  destination: {}\n  concurrency: {}\n",
            self.state_dir.display(),
            self.destination.display(),
            self.concurrency
        );
        for a in &self.apps {
            s.push_str(&format!("  app {} ({})\n", a.appid, a.api_base));
            for e in &a.envs {
                s.push_str(&format!("    env {}: {}\n", e.id, e.collections));
            }
        }
        if let Some(e) = &self.encryption {
            s.push_str(&format!(
                "  encryption:  age, to {}; identity file {}\n",
                e.recipients.join(", "),
                e.identity_file.as_ref().map_or(
                    "not set (check --read-data and restore need --identity)".to_string(),
                    |p| p.display().to_string()
                )
            ));
        }
        for d in &self.destinations {
            s.push_str(&format!("  copies to {d}\n"));
        }
        s
    }
}

/// Shared handle type for the progress sink (re-exported for the CLI).
pub type Progress = Arc<dyn super::progress::ProgressSink>;
