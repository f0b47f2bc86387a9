//! Alert and heartbeat deliveries in flight, off the daemon loop.
//!
//! A webhook that hangs costs up to a few attempts × the HTTP timeout (about 50 s). Awaited in
//! the loop, that would hold back signals and scheduled fires; so each delivery runs in its own
//! task. The set is bounded (a dead webhook must not pile up tasks without end: past the bound a
//! new delivery is dropped with a log line), and on shutdown pending deliveries get a short
//! bounded grace, then are dropped with a log line — a stop never waits on a webhook.

use std::future::Future;
use std::time::Duration;

use tokio::task::JoinSet;

/// Deliveries in flight at once; more are dropped (and logged) until some finish.
pub const MAX_IN_FLIGHT: usize = 32;

/// How long pending deliveries get at shutdown before they are dropped.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The spawned deliveries of one daemon loop.
pub struct Deliveries {
    tasks: JoinSet<()>,
    max_in_flight: usize,
}

impl Default for Deliveries {
    fn default() -> Self {
        Deliveries::new(MAX_IN_FLIGHT)
    }
}

impl Deliveries {
    pub fn new(max_in_flight: usize) -> Self {
        Deliveries {
            tasks: JoinSet::new(),
            max_in_flight: max_in_flight.max(1),
        }
    }

    /// Starts `delivery` in its own task. Returns `false` (and logs) when the bound is reached
    /// and it was dropped instead.
    pub fn spawn(
        &mut self,
        what: &'static str,
        delivery: impl Future<Output = ()> + Send + 'static,
    ) -> bool {
        self.reap();
        if self.tasks.len() >= self.max_in_flight {
            tracing::warn!(
                what,
                in_flight = self.tasks.len(),
                "too many alert deliveries pending (webhook slow or down); this one is dropped"
            );
            return false;
        }
        self.tasks.spawn(delivery);
        true
    }

    /// Waits up to `grace` for pending deliveries, then drops the rest (logged).
    pub async fn shutdown(mut self, grace: Duration) {
        self.reap();
        if self.tasks.is_empty() {
            return;
        }
        let drained = tokio::time::timeout(grace, async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                dropped = self.tasks.len(),
                grace_ms = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX),
                "shutting down: alert deliveries still pending after the grace are dropped"
            );
            self.tasks.abort_all();
        }
    }

    /// Forgets finished tasks (a panicking delivery is logged, never propagated).
    fn reap(&mut self) {
        while let Some(done) = self.tasks.try_join_next() {
            if let Err(e) = done {
                if e.is_panic() {
                    tracing::error!("an alert delivery task panicked");
                }
            }
        }
    }
}
