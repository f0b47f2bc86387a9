//! Which collections have been alerted as stale, kept in the engine's kv store so that a
//! restart does not alert again on a collection that is still in the same stale episode.
//!
//! An episode is identified by the collection's last success at the time of the alert: while
//! the collection stays stale with that same last success, it is not alerted again (across any
//! number of restarts). When it is seen fresh the record is removed; a later staleness — or a
//! stale collection whose last success changed meanwhile (fresh while the daemon was down, then
//! stale again) — is a new episode and is alerted.

use std::collections::HashMap;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use tcb_state::{Engine, KvNamespace};

use super::scheduler::to_ms;

/// The engine kv namespace of the records.
pub const NAMESPACE: &str = "daemon.stale_alerts";

/// One alerted stale episode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StaleRecord {
    pub env: String,
    pub collection: String,
    /// The collection's last success when the alert was sent (Unix ms; `None`: never).
    pub last_success_ms: Option<i64>,
}

/// The alerted episodes: an in-memory copy of the kv records, written through.
pub struct StaleAlerts {
    kv: KvNamespace,
    alerted: HashMap<String, StaleRecord>,
}

fn key(env: &str, collection: &str) -> String {
    format!("{env}/{collection}")
}

impl StaleAlerts {
    /// Loads the records left by earlier runs. An unreadable store is logged and treated as
    /// empty (at worst an alert is repeated; never a reason not to run).
    pub fn load(engine: &Engine) -> StaleAlerts {
        let kv = engine.kv(NAMESPACE);
        let alerted = match kv.scan_prefix::<StaleRecord>("") {
            Ok(records) => records.into_iter().collect(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the stale-alert records; stale collections may be alerted again");
                HashMap::new()
            }
        };
        StaleAlerts { kv, alerted }
    }

    /// Records that `env/collection` is stale with `last_success`. True when this is a new
    /// episode (alert on it); false when it was already alerted.
    pub fn stale(&mut self, env: &str, collection: &str, last_success: Option<SystemTime>) -> bool {
        let record = StaleRecord {
            env: env.to_string(),
            collection: collection.to_string(),
            last_success_ms: last_success.map(to_ms),
        };
        let k = key(env, collection);
        if self.alerted.get(&k) == Some(&record) {
            return false;
        }
        if let Err(e) = self.kv.put(&k, &record) {
            tracing::warn!(error = %e, env, collection, "cannot persist a stale alert; a restart may repeat it");
        }
        self.alerted.insert(k, record);
        true
    }

    /// `env/collection` is fresh: its episode is over.
    pub fn fresh(&mut self, env: &str, collection: &str) {
        let k = key(env, collection);
        if self.alerted.remove(&k).is_some() {
            self.forget(&k);
        }
    }

    /// Drops the records of collections no longer watched (not in `watched`, as env/collection).
    pub fn retain_watched<'a>(&mut self, watched: impl IntoIterator<Item = (&'a str, &'a str)>) {
        let keep: std::collections::HashSet<String> =
            watched.into_iter().map(|(e, c)| key(e, c)).collect();
        let gone: Vec<String> = self
            .alerted
            .keys()
            .filter(|k| !keep.contains(*k))
            .cloned()
            .collect();
        for k in gone {
            self.alerted.remove(&k);
            self.forget(&k);
        }
    }

    fn forget(&self, k: &str) {
        if let Err(e) = self.kv.remove(k) {
            tracing::warn!(error = %e, key = k, "cannot remove a stale-alert record");
        }
    }
}
