//! Freshness of each collection's backups: how old the last good snapshot is compared with how
//! often its schedule runs. Pure: the facts come from a [`StatusSource`], the time is passed in.

use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::scheduler::to_ms;
use super::settings::ScheduleSpec;

/// What is known about one collection's backups.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct CollectionStatus {
    pub appid: String,
    pub env: String,
    pub collection: String,
    /// Finish time of the newest verified snapshot.
    #[serde(serialize_with = "ser_time_opt")]
    pub last_success: Option<SystemTime>,
    /// Outcome of the newest attempt: `succeeded`, `failed`, `running`, ...
    pub last_status: Option<String>,
    #[serde(serialize_with = "ser_time_opt")]
    pub last_attempt: Option<SystemTime>,
    /// Duration of the newest successful backup.
    #[serde(serialize_with = "ser_duration_opt")]
    pub last_duration: Option<Duration>,
    /// Export size (raw) and stored (compressed) size of the newest snapshot.
    pub bytes: Option<u64>,
    pub bytes_stored: Option<u64>,
    pub records: Option<u64>,
    pub last_error: Option<String>,
    /// The newest passed check of any of its snapshots (`check`, scheduled or not).
    #[serde(serialize_with = "ser_time_opt")]
    pub last_verified: Option<SystemTime>,
    /// The newest passed test restore of any of its snapshots.
    #[serde(serialize_with = "ser_time_opt")]
    pub last_test_restored: Option<SystemTime>,
}

/// Where the status listener and the metrics get their facts.
pub trait StatusSource: Send + Sync + 'static {
    /// One row per configured/backed-up collection.
    fn collections(&self) -> Result<Vec<CollectionStatus>, String>;
    /// The snapshot catalog as JSON (newest first).
    fn catalog(&self) -> Result<serde_json::Value, String>;
}

/// A collection's status judged against its schedule.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Freshness {
    #[serde(flatten)]
    pub status: CollectionStatus,
    /// The schedule that backs it up most often.
    pub schedule: Option<String>,
    #[serde(serialize_with = "ser_duration_opt")]
    pub expected_interval: Option<Duration>,
    #[serde(serialize_with = "ser_duration_opt")]
    pub age: Option<Duration>,
    pub stale: bool,
}

/// The time between the next two fires of a schedule after `now` (the interval a healthy
/// backup is expected to keep).
pub fn expected_interval(spec: &ScheduleSpec, now: SystemTime) -> Option<Duration> {
    let ts = jiff::Timestamp::try_from(now).ok()?;
    let fires = spec.schedule.upcoming(ts, 2);
    let (a, b) = (fires.first()?, fires.get(1)?);
    let gap = b.timestamp().duration_since(a.timestamp());
    Duration::try_from(gap).ok()
}

/// Judges every collection: stale when its last success is older than `stale_factor` times the
/// expected interval (or it never succeeded and has been due for longer than that since
/// `since`, typically the daemon's start).
pub fn assess(
    rows: Vec<CollectionStatus>,
    specs: &[ScheduleSpec],
    now: SystemTime,
    since: SystemTime,
    stale_factor: f64,
) -> Vec<Freshness> {
    rows.into_iter()
        .map(|status| {
            let best = specs
                .iter()
                .filter(|s| s.covers(&status.env, &status.collection))
                .filter_map(|s| expected_interval(s, now).map(|i| (s, i)))
                .min_by_key(|(_, i)| *i);
            let age = status
                .last_success
                .map(|t| now.duration_since(t).unwrap_or(Duration::ZERO));
            let stale = match best {
                None => false,
                Some((_, interval)) => {
                    let limit = interval.mul_f64(stale_factor);
                    match age {
                        Some(age) => age > limit,
                        None => now.duration_since(since).unwrap_or(Duration::ZERO) > limit,
                    }
                }
            };
            Freshness {
                schedule: best.map(|(s, _)| s.name.clone()),
                expected_interval: best.map(|(_, i)| i),
                age,
                stale,
                status,
            }
        })
        .collect()
}

fn ser_time_opt<S: serde::Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_some(&super::scheduler::fmt_ms(to_ms(*t))),
        None => s.serialize_none(),
    }
}

fn ser_duration_opt<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&d.as_secs_f64()),
        None => s.serialize_none(),
    }
}

/// "3h 12m", "2d 4h", "45s": short human age for the page.
pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h {}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d {}h", s / 86_400, (s % 86_400) / 3600),
    }
}
