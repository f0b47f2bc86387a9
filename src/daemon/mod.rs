//! The unattended daemon: runs backups on cron schedules, survives restarts without missing or
//! doubling a run, and reports what it is doing.
//!
//! - [`settings`]: the `[daemon]`, `[daemon.alerts]` and `[[schedules]]` config sections
//! - [`scheduler`]: durable fire bookkeeping (catch-up, overlap, jitter, exactly-once start)
//! - [`runner`]: the loop (ticks, engine, listener, alerts on finished runs, staleness, reload)
//! - [`maintenance`]: scheduled `check` and `forget` (the `daemon.maintenance` workflow)
//! - [`backup`]: the loop wired to the backup workflow and a config file; signal handling
//! - [`status`], [`page`]: the HTTP listener (JSON, `/metrics`, freshness page)
//! - [`metrics`], [`freshness`], [`alerts`]: what the listener and the alerts report
//! - [`delivery`]: alert and heartbeat deliveries off the loop (bounded; short grace at stop)
//! - [`stale_alerts`]: the stale episodes already alerted, kept across restarts

pub mod alerts;
pub mod backup;
pub mod client;
pub mod delivery;
pub mod freshness;
pub mod maintenance;
pub mod metrics;
pub mod page;
pub mod runner;
pub mod scheduler;
pub mod settings;
pub mod stale_alerts;
pub mod status;
