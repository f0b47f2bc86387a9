//! The emulator's virtual clock: token expiry, grace windows, job progress, URL expiry and daily
//! quota resets all read it, so tests advance time instead of sleeping.
//!
//! Virtual time = start + real elapsed × `time_scale` + manual advances. A scale of 0 freezes it.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[derive(Debug)]
struct ClockState {
    anchor_real: Instant,
    anchor_virtual: f64,
    scale: f64,
}

/// Shared virtual clock (unix seconds as `f64`).
#[derive(Debug)]
pub struct VirtualClock {
    state: Mutex<ClockState>,
}

impl VirtualClock {
    pub fn new(start_unix_secs: Option<f64>, scale: f64) -> Self {
        let start = start_unix_secs.unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0)
        });
        VirtualClock {
            state: Mutex::new(ClockState {
                anchor_real: Instant::now(),
                anchor_virtual: start,
                scale: sanitize_scale(scale),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ClockState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Current virtual unix time in seconds.
    pub fn now(&self) -> f64 {
        let s = self.lock();
        s.anchor_virtual + s.anchor_real.elapsed().as_secs_f64() * s.scale
    }

    pub fn now_system(&self) -> SystemTime {
        to_system_time(self.now())
    }

    /// Jump the virtual clock forward.
    pub fn advance(&self, by: Duration) {
        let mut s = self.lock();
        s.anchor_virtual += by.as_secs_f64();
    }

    pub fn scale(&self) -> f64 {
        self.lock().scale
    }

    /// Change the speed from now on (time already elapsed is kept).
    pub fn set_scale(&self, scale: f64) {
        let mut s = self.lock();
        let now = s.anchor_virtual + s.anchor_real.elapsed().as_secs_f64() * s.scale;
        s.anchor_real = Instant::now();
        s.anchor_virtual = now;
        s.scale = sanitize_scale(scale);
    }
}

fn sanitize_scale(scale: f64) -> f64 {
    if scale.is_finite() && scale >= 0.0 {
        scale
    } else {
        0.0
    }
}

pub fn to_system_time(unix_secs: f64) -> SystemTime {
    if unix_secs.is_finite() && unix_secs > 0.0 {
        Duration::try_from_secs_f64(unix_secs)
            .ok()
            .and_then(|d| UNIX_EPOCH.checked_add(d))
            .unwrap_or(UNIX_EPOCH)
    } else {
        UNIX_EPOCH
    }
}

/// ISO-8601 UTC with milliseconds, the `$date` form of export files.
pub fn iso_millis(unix_millis: i64) -> String {
    let nanos = i128::from(unix_millis) * 1_000_000;
    match time::OffsetDateTime::from_unix_timestamp_nanos(nanos) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.millisecond()
        ),
        Err(_) => "1970-01-01T00:00:00.000Z".to_string(),
    }
}

/// Parse an ISO date (`2019-09-09`, `2018-08-31T17:30:00.882Z`, with offset) into unix millis.
pub fn parse_iso_millis(text: &str) -> Option<i64> {
    use time::format_description::well_known::Rfc3339;
    if let Ok(t) = time::OffsetDateTime::parse(text, &Rfc3339) {
        return i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok();
    }
    let date_fmt = time::macros::format_description!("[year]-[month]-[day]");
    if let Ok(d) = time::Date::parse(text, &date_fmt) {
        let t = d.midnight().assume_utc();
        return Some(t.unix_timestamp() * 1000);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frozen_clock_only_moves_when_advanced() {
        let c = VirtualClock::new(Some(1000.0), 0.0);
        assert_eq!(c.now(), 1000.0);
        c.advance(Duration::from_secs(301));
        assert_eq!(c.now(), 1301.0);
        c.set_scale(f64::NAN);
        assert_eq!(c.scale(), 0.0);
    }

    #[test]
    fn iso_round_trip() {
        let ms = parse_iso_millis("2018-08-31T17:30:00.882Z").unwrap_or_default();
        assert_eq!(iso_millis(ms), "2018-08-31T17:30:00.882Z");
        assert_eq!(
            parse_iso_millis("2019-09-09").map(iso_millis).as_deref(),
            Some("2019-09-09T00:00:00.000Z")
        );
        assert_eq!(parse_iso_millis("not a date"), None);
    }
}
