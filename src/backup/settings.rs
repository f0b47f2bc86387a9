//! What the backup workflows need at run time, independent of how it was configured: the
//! destination, compression, poll and retry tuning, and one shared API client per app.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tcb_state::RetryPolicy;
use tokio::sync::Semaphore;

use crate::client::CloudBaseClient;
use crate::destination::plan::CopySettings;

use super::poll::PollPolicy;
use super::progress::{NoProgress, SharedProgress};

/// Tuning shared by every job of a store.
#[derive(Debug, Clone)]
pub struct WorkflowSettings {
    /// Root of the snapshot tree (`<root>/<env>/<collection>/...`).
    pub destination: PathBuf,
    pub zstd_level: i32,
    pub poll: PollPolicy,
    pub retry: RetryPolicy,
    /// Longest a single step may run (a download of a large export is one step).
    pub step_timeout: Duration,
    /// Encrypt new snapshots to these age recipients (`[encryption]` in the config).
    pub encryption: Option<Arc<crate::archive::encrypt::Recipients>>,
    /// Off-site copies: destinations per env and the destinations themselves.
    pub copies: CopySettings,
}

impl WorkflowSettings {
    pub fn new(destination: PathBuf) -> Self {
        WorkflowSettings {
            destination,
            zstd_level: crate::archive::DEFAULT_ZSTD_LEVEL,
            poll: PollPolicy::default(),
            retry: RetryPolicy::default(),
            step_timeout: Duration::from_secs(6 * 3600),
            encryption: None,
            copies: CopySettings::default(),
        }
    }
}

/// One client per app (shared by all its jobs, so one token serves the whole run) and an
/// optional per-app limit on concurrently running steps.
#[derive(Clone, Default)]
pub struct AppClients {
    clients: HashMap<String, CloudBaseClient>,
    limits: HashMap<String, Arc<Semaphore>>,
    max_concurrent: HashMap<String, usize>,
}

impl AppClients {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&mut self, appid: &str, client: CloudBaseClient, max_concurrent: Option<usize>) {
        self.clients.insert(appid.to_string(), client);
        if let Some(n) = max_concurrent {
            self.limits
                .insert(appid.to_string(), Arc::new(Semaphore::new(n.max(1))));
            self.max_concurrent.insert(appid.to_string(), n.max(1));
        }
    }

    pub fn get(&self, appid: &str) -> Option<&CloudBaseClient> {
        self.clients.get(appid)
    }

    pub fn limit(&self, appid: &str) -> Option<Arc<Semaphore>> {
        self.limits.get(appid).cloned()
    }

    /// Each limited app's limit (collections backed up at once).
    pub fn limits(&self) -> HashMap<String, usize> {
        self.max_concurrent.clone()
    }

    pub fn appids(&self) -> impl Iterator<Item = &String> {
        self.clients.keys()
    }

    /// Token endpoint calls made so far, per app.
    pub fn token_fetches(&self) -> HashMap<String, u64> {
        self.clients
            .iter()
            .map(|(appid, c)| (appid.clone(), c.token_fetches()))
            .collect()
    }
}

/// Everything a workflow instance holds.
#[derive(Clone)]
pub struct WorkflowDeps {
    pub settings: Arc<WorkflowSettings>,
    pub clients: Arc<AppClients>,
    pub progress: SharedProgress,
}

impl WorkflowDeps {
    pub fn new(settings: WorkflowSettings, clients: AppClients) -> Self {
        WorkflowDeps {
            settings: Arc::new(settings),
            clients: Arc::new(clients),
            progress: Arc::new(NoProgress),
        }
    }
}
