//! Registering the restore workflow on an engine from the configuration: the one place the CLI
//! (`restore`, `check --test-restore`) and the daemon (scheduled test restores) share.

use tcb_state::{Engine, KindLimits, RetryPolicy};

use crate::backup::settings::AppClients;
use crate::config::Config;

use super::{PollPolicy, RestoreClients, RestoreWorkflow, IMPORT_MARKS_NAMESPACE};

/// Restores running at once.
pub const RESTORE_CONCURRENCY: usize = 2;

/// Registers (or re-registers, with new clients) `restore.collection` on `engine`.
pub fn register_restore(engine: &Engine, apps: &AppClients, config: &Config, retry: &RetryPolicy) {
    let mut clients = RestoreClients::new();
    for appid in apps.appids() {
        if let Some(c) = apps.get(appid) {
            clients.insert(c.clone());
        }
    }
    let poll = PollPolicy {
        initial: config.poll.initial_interval,
        multiplier: config.poll.multiplier.max(1.0),
        max: config.poll.max_interval,
        ..PollPolicy::default()
    };
    let wf = RestoreWorkflow::new(clients, engine.kv(IMPORT_MARKS_NAMESPACE))
        .with_poll(poll)
        .with_retry(retry.clone());
    engine.register(wf, KindLimits::new(RESTORE_CONCURRENCY));
}
