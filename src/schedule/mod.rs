//! When backups run: cron expressions in an IANA time zone, and their next fire times.
//!
//! Pure computation, no I/O and no clock: callers pass the instant to search from. [`cron`]
//! parses expressions and matches wall-clock times; [`Schedule`] puts one in a zone (default
//! `Asia/Shanghai`, the platform's UTC+8) and maps matching wall-clock times to instants.
//!
//! Daylight-saving rules, chosen so that a daily backup runs exactly once per day:
//! * a wall-clock time that does not exist (skipped by a spring-forward) fires at the instant
//!   the clocks jump, i.e. as soon as the wall clock has passed it;
//! * a wall-clock time that happens twice (a fall-back) fires once, at its first occurrence.

pub mod cron;

use std::fmt;
use std::time::SystemTime;

use jiff::civil::DateTime;
use jiff::tz::{AmbiguousOffset, TimeZone};
use jiff::{Timestamp, ZonedDateTime};

pub use cron::{CivilTime, CronError, CronExpr, CronForm};

/// The zone schedules use when none is given: the platform's own timer triggers run in UTC+8.
pub const DEFAULT_TIME_ZONE: &str = "Asia/Shanghai";
/// The schedule used when the config names none: 02:00 every day.
pub const DEFAULT_CRON: &str = "0 0 2 * * * *";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("invalid cron expression: {0}")]
    Cron(#[from] CronError),
    #[error(
        "unknown time zone `{name}` (use an IANA name such as Asia/Shanghai or UTC): {reason}"
    )]
    TimeZone { name: String, reason: String },
}

/// A cron expression in a time zone.
#[derive(Clone)]
pub struct Schedule {
    cron: CronExpr,
    tz: TimeZone,
    tz_name: String,
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Schedule({} in {})", self.cron, self.tz_name)
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` ({})", self.cron, self.tz_name)
    }
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Self) -> bool {
        self.cron == other.cron && self.tz_name == other.tz_name
    }
}

impl Schedule {
    /// `time_zone`: an IANA name; `None` means [`DEFAULT_TIME_ZONE`].
    pub fn new(expr: &str, time_zone: Option<&str>) -> Result<Schedule, ScheduleError> {
        let cron = CronExpr::parse(expr)?;
        let name = time_zone.unwrap_or(DEFAULT_TIME_ZONE);
        let tz = TimeZone::get(name).map_err(|e| ScheduleError::TimeZone {
            name: name.to_string(),
            reason: e.to_string(),
        })?;
        Ok(Schedule {
            cron,
            tz_name: tz.iana_name().unwrap_or(name).to_string(),
            tz,
        })
    }

    pub fn cron(&self) -> &CronExpr {
        &self.cron
    }

    pub fn time_zone(&self) -> &TimeZone {
        &self.tz
    }

    pub fn time_zone_name(&self) -> &str {
        &self.tz_name
    }

    /// The first fire time strictly after `after`, in the schedule's zone. `None`: never again
    /// (a year field in the past, or a date such as 31 February).
    pub fn next_after(&self, after: Timestamp) -> Option<ZonedDateTime> {
        let start = civil_of(&after.to_zoned_datetime(self.tz.clone()));
        let mut from = start.next_second();
        // A matching wall-clock time can map to an instant at or before `after` only inside a
        // repeated (fall-back) hour; skip those. Bounded: a repeated period is at most hours.
        for _ in 0..100_000 {
            let civil = self.cron.next_at_or_after(from)?;
            let fire = self.instant_of(civil)?;
            if fire.timestamp() > after {
                return Some(fire);
            }
            from = civil.next_second();
        }
        None
    }

    /// Like [`Schedule::next_after`] for a [`SystemTime`].
    pub fn next_after_system(&self, after: SystemTime) -> Option<ZonedDateTime> {
        let ts = Timestamp::try_from(after).ok()?;
        self.next_after(ts)
    }

    /// The next `count` fire times after `after`.
    pub fn upcoming(&self, after: Timestamp, count: usize) -> Vec<ZonedDateTime> {
        let mut out = Vec::with_capacity(count.min(1024));
        let mut cursor = after;
        while out.len() < count {
            match self.next_after(cursor) {
                Some(z) => {
                    cursor = z.timestamp();
                    out.push(z);
                }
                None => break,
            }
        }
        out
    }

    /// The most recent fire time at or before `at`, searching back no further than `horizon`
    /// (used for catch-up: "which nominal time did we miss?").
    pub fn last_at_or_before(&self, at: Timestamp, horizon: Timestamp) -> Option<ZonedDateTime> {
        let mut last = None;
        let mut cursor = horizon
            .checked_sub(jiff::SignedDuration::from_secs(1))
            .ok()?;
        while let Some(next) = self.next_after(cursor) {
            if next.timestamp() > at {
                break;
            }
            cursor = next.timestamp();
            // The cursor started up to a second early (fires are whole seconds, `horizon`
            // need not be).
            if next.timestamp() >= horizon {
                last = Some(next);
            }
        }
        last
    }

    /// The instant a matching wall-clock time fires at (see the module docs for DST rules).
    fn instant_of(&self, t: CivilTime) -> Option<ZonedDateTime> {
        let dt = DateTime::new(
            i16::try_from(t.year).ok()?,
            i8::try_from(t.month).ok()?,
            i8::try_from(t.day).ok()?,
            i8::try_from(t.hour).ok()?,
            i8::try_from(t.minute).ok()?,
            i8::try_from(t.second).ok()?,
            0,
        )
        .ok()?;
        let ambiguous = self.tz.to_ambiguous_zoned_datetime(dt);
        let ts = match ambiguous.offset() {
            AmbiguousOffset::Unambiguous { offset } => offset.to_timestamp(dt).ok()?,
            // First occurrence.
            AmbiguousOffset::Fold { before, .. } => before.to_timestamp(dt).ok()?,
            // Skipped: the instant the clocks jumped. Reading the time with the offset in force
            // after the jump lands before the jump; the next transition from there is the jump.
            AmbiguousOffset::Gap { after, .. } => {
                let early = after.to_timestamp(dt).ok()?;
                self.tz.following(early).next()?.timestamp()
            }
        };
        Some(ts.to_zoned_datetime(self.tz.clone()))
    }
}

fn civil_of(z: &ZonedDateTime) -> CivilTime {
    // ZonedDateTime fields are always in range; the casts cannot truncate for years 0..=9999 and
    // clamp (harmlessly, far outside any schedule) otherwise.
    CivilTime {
        year: u16::try_from(z.year()).unwrap_or(0),
        month: z.month().unsigned_abs(),
        day: z.day().unsigned_abs(),
        hour: z.hour().unsigned_abs(),
        minute: z.minute().unsigned_abs(),
        second: z.second().unsigned_abs(),
    }
}
