//! The unattended daemon: runs backups on cron schedules, survives restarts without missing or
//! doubling a run, and reports what it is doing.
//!
//! - [`settings`]: the `[daemon]`, `[daemon.alerts]` and `[[schedules]]` config sections
//! - [`scheduler`]: durable fire bookkeeping (catch-up, overlap, jitter, exactly-once start)

pub mod alerts;
pub mod freshness;
pub mod metrics;
pub mod page;
pub mod scheduler;
pub mod settings;
pub mod status;
