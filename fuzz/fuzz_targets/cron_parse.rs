//! Cron parsing and fire-time search (`src/schedule/`): any text gives an expression or an error
//! naming the bad field, never a panic or a hang. Input: the expression on the first line and,
//! optionally, an IANA time zone on the second. Whatever parses must re-parse from its
//! normalised text to the same expression; every fire time found must match the expression and
//! lie at or after (civil search) / strictly after (zoned search) where the search started.
#![no_main]

use std::time::{Duration, SystemTime};

use libfuzzer_sys::fuzz_target;
use tcb_backup::schedule::{CivilTime, CronExpr, Schedule};

/// Search starts: an ordinary day, the first and the last second of the accepted years, and a
/// leap day (the end of February is where day arithmetic goes wrong).
const STARTS: [CivilTime; 4] = [
    civil(2026, 12, 3, 19, 27, 9),
    civil(1970, 1, 1, 0, 0, 0),
    civil(2099, 12, 31, 23, 59, 59),
    civil(2028, 2, 29, 23, 59, 59),
];

const fn civil(year: u16, month: u8, day: u8, hour: u8, minute: u8, second: u8) -> CivilTime {
    CivilTime {
        year,
        month,
        day,
        hour,
        minute,
        second,
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.splitn(2, '\n');
    let expr_text = lines.next().unwrap_or("");
    let zone = lines.next().map(str::trim).filter(|z| !z.is_empty());

    let Ok(expr) = CronExpr::parse(expr_text) else {
        // The error must render (it names the field); an empty message would be useless.
        if let Err(e) = CronExpr::parse(expr_text) {
            assert!(!e.to_string().is_empty());
        }
        return;
    };
    let again = CronExpr::parse(expr.as_str()).expect("a parsed expression re-parses");
    assert_eq!(again, expr, "normalised text parses to the same expression");

    for from in STARTS {
        if let Some(t) = expr.next_at_or_after(from) {
            assert!(t >= from, "{expr:?}: {t} is before {from}");
            assert!(expr.matches(t), "{expr:?}: {t} does not match");
        }
    }

    // In a zone: the fire time is strictly after the start, whatever the zone's DST rules.
    let Ok(schedule) = Schedule::new(expr_text, zone) else {
        return;
    };
    let after = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_319_229); // 2026-12-03
    let after_s = after
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    if let Some(next) = schedule.next_after_system(after) {
        assert!(
            next.timestamp().as_second() > after_s,
            "{schedule:?}: {next} not after the start"
        );
    }
});
