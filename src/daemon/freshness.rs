//! Freshness of each collection's backups: how old the last good snapshot is compared with how
//! often its schedule runs. Pure: the facts come from a [`StatusSource`], the time is passed in.

use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::scheduler::{from_ms, to_ms};
use super::settings::ScheduleSpec;

/// What is known about one collection's backups.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct CollectionStatus {
    pub appid: String,
    pub env: String,
    pub collection: String,
    /// Finish time of the newest snapshot in the catalog (a recorded, successful backup).
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

/// The first fire of `spec` after `t` (when the next backup is due) and the gap from it to the
/// fire after it (the interval the schedule keeps from then on).
pub fn next_due(spec: &ScheduleSpec, t: SystemTime) -> Option<(SystemTime, Duration)> {
    let ts = jiff::Timestamp::try_from(t).ok()?;
    let fires = spec.schedule.upcoming(ts, 2);
    let (a, b) = (fires.first()?.timestamp(), fires.get(1)?.timestamp());
    let gap = Duration::try_from(b.duration_since(a)).ok()?;
    Some((from_ms(a.as_millisecond()), gap))
}

/// Judges every collection against the schedules that cover it. The next backup was due at the
/// first fire after its last success (or after `since`, typically the daemon's start, when it
/// never succeeded); it is stale once that fire is `stale_factor - 1` intervals overdue. So a
/// daily 02:00 schedule with the default factor 1.5 turns stale at 14:00 the day after the last
/// success, and a weekday schedule does not turn stale over the weekend (the Friday backup's
/// next due fire is Monday's).
pub fn assess(
    rows: Vec<CollectionStatus>,
    specs: &[ScheduleSpec],
    now: SystemTime,
    since: SystemTime,
    stale_factor: f64,
) -> Vec<Freshness> {
    let grace = (stale_factor - 1.0).max(0.0);
    rows.into_iter()
        .map(|status| {
            let from = status.last_success.unwrap_or(since);
            // The schedule whose next fire comes first is the one that judges it.
            let best = specs
                .iter()
                .filter(|s| s.covers(&status.env, &status.collection))
                .filter_map(|s| next_due(s, from).map(|d| (s, d)))
                .min_by_key(|(_, (due, _))| *due);
            let age = status
                .last_success
                .map(|t| now.duration_since(t).unwrap_or(Duration::ZERO));
            let stale = best.is_some_and(|(_, (due, interval))| {
                overdue_after(due, interval, grace).is_some_and(|limit| now > limit)
            });
            Freshness {
                schedule: best.map(|(s, _)| s.name.clone()),
                expected_interval: best.map(|(_, (_, i))| i),
                age,
                stale,
                status,
            }
        })
        .collect()
}

/// The instant past which a fire due at `due` is overdue: `grace` intervals later. `None` when
/// that is beyond what time can represent (never stale), rather than an overflow panic — the
/// settings cap the factor, but the state store and the schedules are not trusted blindly.
fn overdue_after(due: SystemTime, interval: Duration, grace: f64) -> Option<SystemTime> {
    let extra = Duration::try_from_secs_f64(interval.as_secs_f64() * grace).ok()?;
    due.checked_add(extra)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::settings::{OverlapPolicy, ScheduleTask};
    use crate::schedule::Schedule;

    fn at(s: &str) -> SystemTime {
        let ts: jiff::Timestamp = s.parse().unwrap();
        from_ms(ts.as_millisecond())
    }

    fn spec(cron: &str) -> ScheduleSpec {
        ScheduleSpec {
            name: "s".into(),
            schedule: Schedule::new(cron, None).unwrap(),
            task: ScheduleTask::Backup,
            envs: vec![],
            collections: vec![],
            overlap: OverlapPolicy::Skip,
            jitter: Duration::ZERO,
            catch_up_window: Duration::from_secs(3600),
        }
    }

    fn stale(cron: &str, last_success: &str, now: &str) -> bool {
        let row = CollectionStatus {
            env: "prod".into(),
            collection: "orders".into(),
            last_success: Some(at(last_success)),
            ..CollectionStatus::default()
        };
        let since = at("2026-11-01T00:00:00+08:00");
        assess(vec![row], &[spec(cron)], at(now), since, 1.5)[0].stale
    }

    /// A factor beyond what a `Duration` holds (settings cap it at 100, but this must not panic
    /// whatever it is given) means "never stale", not an overflow.
    #[test]
    fn a_huge_factor_does_not_overflow() {
        let row = CollectionStatus {
            env: "prod".into(),
            collection: "orders".into(),
            last_success: Some(at("2026-11-01T02:05:00+08:00")),
            ..CollectionStatus::default()
        };
        let now = at("2026-12-04T02:00:00+08:00");
        let since = at("2026-11-01T00:00:00+08:00");
        for factor in [1e300, f64::MAX, f64::INFINITY] {
            let rows = assess(
                vec![row.clone()],
                &[spec("0 0 2 * * * *")],
                now,
                since,
                factor,
            );
            assert!(!rows[0].stale, "{factor}");
        }
        // The bounded maximum still judges: 100 days of a daily schedule.
        let rows = assess(vec![row], &[spec("0 0 2 * * * *")], now, since, 100.0);
        assert!(!rows[0].stale);
        let later = at("2027-03-01T00:00:00+08:00");
        let row = CollectionStatus {
            env: "prod".into(),
            collection: "orders".into(),
            last_success: Some(at("2026-11-01T02:05:00+08:00")),
            ..CollectionStatus::default()
        };
        assert!(assess(vec![row], &[spec("0 0 2 * * * *")], later, since, 100.0)[0].stale);
    }

    #[test]
    fn a_weekday_schedule_is_not_stale_over_the_weekend() {
        // 2026-12-04 is a Friday; 02:00 Beijing time, Monday to Friday.
        let cron = "0 0 2 * * 1-5 *";
        let friday = "2026-12-04T02:05:00+08:00";
        assert!(
            !stale(cron, friday, "2026-12-05T20:00:00+08:00"),
            "Saturday"
        );
        assert!(
            !stale(cron, friday, "2026-12-07T13:59:00+08:00"),
            "Monday morning"
        );
        assert!(
            stale(cron, friday, "2026-12-07T14:01:00+08:00"),
            "Monday's run is overdue"
        );
    }

    #[test]
    fn a_daily_schedule_turns_stale_half_a_day_after_a_missed_fire() {
        let cron = "0 0 2 * * * *";
        let last = "2026-12-04T02:05:00+08:00";
        assert!(!stale(cron, last, "2026-12-05T13:59:00+08:00"));
        assert!(stale(cron, last, "2026-12-05T14:01:00+08:00"));
    }
}
