//! Fire times for every cron spelling, checked against hand-worked cases: the platform's own
//! examples (reference §8) in UTC+8, crontab/6-field/alias forms, the year field, day-of-month
//! OR day-of-week, daylight-saving transitions in America/New_York, and errors that name the
//! bad field. Reference instant: Thursday 2026-12-03 10:00:00 in Asia/Shanghai.

use jiff::Timestamp;
use proptest::prelude::*;
use tcb_backup::schedule::{CivilTime, CronError, CronExpr, Schedule, ScheduleError};

fn ts(text: &str) -> Timestamp {
    text.parse().unwrap()
}

/// The next `n` fire times, each as RFC 3339 with the zone's offset.
fn next_n(expr: &str, zone: Option<&str>, after: &str, n: usize) -> Vec<String> {
    let schedule = Schedule::new(expr, zone).unwrap();
    schedule
        .upcoming(ts(after), n)
        .iter()
        .map(|z| z.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string())
        .collect()
}

const THU_10AM_CST: &str = "2026-12-03T10:00:00+08:00";

fn shanghai(expr: &str, n: usize) -> Vec<String> {
    next_n(expr, None, THU_10AM_CST, n)
}

#[test]
fn platform_example_every_five_seconds() {
    assert_eq!(
        shanghai("*/5 * * * * * *", 3),
        [
            "2026-12-03T10:00:05+08:00",
            "2026-12-03T10:00:10+08:00",
            "2026-12-03T10:00:15+08:00"
        ]
    );
}

#[test]
fn platform_example_two_am_on_the_first() {
    assert_eq!(
        shanghai("0 0 2 1 * * *", 3),
        [
            "2027-01-01T02:00:00+08:00",
            "2027-02-01T02:00:00+08:00",
            "2027-03-01T02:00:00+08:00"
        ]
    );
}

#[test]
fn platform_example_weekdays_at_ten_fifteen() {
    // Thursday 3rd, Friday 4th, then Monday 7th.
    assert_eq!(
        shanghai("0 15 10 * * MON-FRI *", 3),
        [
            "2026-12-03T10:15:00+08:00",
            "2026-12-04T10:15:00+08:00",
            "2026-12-07T10:15:00+08:00"
        ]
    );
}

#[test]
fn platform_example_hour_list() {
    // 10:00 itself is not strictly after the reference instant.
    assert_eq!(
        shanghai("0 0 10,14,16 * * * *", 3),
        [
            "2026-12-03T14:00:00+08:00",
            "2026-12-03T16:00:00+08:00",
            "2026-12-04T10:00:00+08:00"
        ]
    );
}

#[test]
fn platform_example_every_half_hour_in_office_hours() {
    let times = shanghai("0 */30 9-17 * * * *", 16);
    assert_eq!(times.first().unwrap(), "2026-12-03T10:30:00+08:00");
    assert_eq!(times.get(14).unwrap(), "2026-12-03T17:30:00+08:00");
    assert_eq!(times.get(15).unwrap(), "2026-12-04T09:00:00+08:00");
}

#[test]
fn platform_example_wednesday_noon_and_monday_backup() {
    assert_eq!(
        shanghai("0 0 12 * * WED *", 2),
        ["2026-12-09T12:00:00+08:00", "2026-12-16T12:00:00+08:00"]
    );
    assert_eq!(
        shanghai("0 0 4 * * MON *", 1),
        ["2026-12-07T04:00:00+08:00"]
    );
}

#[test]
fn step_from_a_start_value_runs_to_the_end_of_the_field() {
    // §8: `1/10` in minutes = minute 1, 11, 21, ...
    let times = shanghai("0 1/10 * * * * *", 7);
    assert_eq!(
        times,
        [
            "2026-12-03T10:01:00+08:00",
            "2026-12-03T10:11:00+08:00",
            "2026-12-03T10:21:00+08:00",
            "2026-12-03T10:31:00+08:00",
            "2026-12-03T10:41:00+08:00",
            "2026-12-03T10:51:00+08:00",
            "2026-12-03T11:01:00+08:00"
        ]
    );
}

#[test]
fn day_of_month_and_day_of_week_are_ored() {
    // Mondays and the 1st: Mon 7, 14, 21, 28 Dec, Fri 1 Jan 2027, Mon 4 Jan.
    assert_eq!(
        shanghai("0 0 2 1 * MON *", 6),
        [
            "2026-12-07T02:00:00+08:00",
            "2026-12-14T02:00:00+08:00",
            "2026-12-21T02:00:00+08:00",
            "2026-12-28T02:00:00+08:00",
            "2027-01-01T02:00:00+08:00",
            "2027-01-04T02:00:00+08:00"
        ]
    );
    // Only one given: it alone restricts (0 = Sunday; 6 Dec 2026 is a Sunday).
    assert_eq!(
        shanghai("0 0 2 * * 0 *", 2),
        ["2026-12-06T02:00:00+08:00", "2026-12-13T02:00:00+08:00"]
    );
    // A stepped day of month counts as given: odd days OR Sundays.
    assert_eq!(
        shanghai("0 0 2 */2 * SUN *", 4),
        [
            "2026-12-05T02:00:00+08:00",
            "2026-12-06T02:00:00+08:00",
            "2026-12-07T02:00:00+08:00",
            "2026-12-09T02:00:00+08:00"
        ]
    );
}

/// Crontab (5 and 6 fields) follows Vixie cron/cronie: a day field starting with `*` (`*/2`)
/// is unrestricted, so the two day fields are AND-ed; a stepped range (`1-31/2`) restricts, so
/// they are OR-ed. The platform form keeps OR for `*/2` (see `day_of_month_and_day_of_week_are_ored`).
#[test]
fn crontab_day_fields_starting_with_a_star_are_anded() {
    // Odd days that are Mondays: Mon 7 and 21 Dec, Mon 11 and 25 Jan 2027 (14, 28 Dec and
    // 4, 18 Jan are even; 5, 9, 11 Dec are odd but not Mondays).
    let odd_mondays = [
        "2026-12-07T02:00:00+08:00",
        "2026-12-21T02:00:00+08:00",
        "2027-01-11T02:00:00+08:00",
        "2027-01-25T02:00:00+08:00",
    ];
    assert_eq!(shanghai("0 2 */2 * 1", 4), odd_mondays, "5 fields");
    assert_eq!(shanghai("0 0 2 */2 * MON", 4), odd_mondays, "6 fields");
    // A stepped day of week starting with `*` (Sun, Wed, Sat) with the 1st: the 1st of a month
    // falling on one of them — Sat 1 May 2027, Sun 1 Aug 2027.
    assert_eq!(
        shanghai("0 2 1 * */3", 2),
        ["2027-05-01T02:00:00+08:00", "2027-08-01T02:00:00+08:00"]
    );
    // The same odd days written as a range restrict: odd days OR Mondays.
    assert_eq!(
        shanghai("0 2 1-31/2 * 1", 7),
        [
            "2026-12-05T02:00:00+08:00",
            "2026-12-07T02:00:00+08:00",
            "2026-12-09T02:00:00+08:00",
            "2026-12-11T02:00:00+08:00",
            "2026-12-13T02:00:00+08:00",
            "2026-12-14T02:00:00+08:00",
            "2026-12-15T02:00:00+08:00"
        ]
    );
    // The platform form: `*/2` counts as given, so odd days OR Mondays there.
    assert_eq!(
        shanghai("0 0 2 */2 * MON *", 3),
        [
            "2026-12-05T02:00:00+08:00",
            "2026-12-07T02:00:00+08:00",
            "2026-12-09T02:00:00+08:00"
        ]
    );
}

#[test]
fn year_field() {
    assert_eq!(
        shanghai("0 0 0 1 1 * 2028", 3),
        ["2028-01-01T00:00:00+08:00"],
        "a single year fires once and then never"
    );
    assert!(shanghai("0 0 0 1 1 * 2020", 1).is_empty());
    assert_eq!(
        shanghai("0 0 0 1 1 * 2027-2099/10", 2),
        ["2027-01-01T00:00:00+08:00", "2037-01-01T00:00:00+08:00"]
    );
}

#[test]
fn impossible_and_rare_dates() {
    assert!(shanghai("0 0 0 31 2 *", 1).is_empty(), "31 February");
    assert_eq!(
        shanghai("0 0 0 29 2 *", 2),
        ["2028-02-29T00:00:00+08:00", "2032-02-29T00:00:00+08:00"]
    );
    // Across a non-leap century year: 2096, then 2104 (8 years).
    assert_eq!(
        next_n("0 0 29 2 *", Some("UTC"), "2096-03-01T00:00:00Z", 1),
        ["2104-02-29T00:00:00+00:00"]
    );
}

#[test]
fn crontab_five_fields() {
    assert_eq!(
        shanghai("30 2 * * *", 2),
        ["2026-12-04T02:30:00+08:00", "2026-12-05T02:30:00+08:00"]
    );
    // 7 is Sunday in crontab.
    assert_eq!(shanghai("0 2 * * 7", 1), ["2026-12-06T02:00:00+08:00"]);
    assert_eq!(
        shanghai("0 2 * jan,Feb fri", 2),
        ["2027-01-01T02:00:00+08:00", "2027-01-08T02:00:00+08:00"]
    );
}

#[test]
fn six_fields_with_seconds() {
    assert_eq!(
        shanghai("15 30 2 * * *", 2),
        ["2026-12-04T02:30:15+08:00", "2026-12-05T02:30:15+08:00"]
    );
    assert_eq!(
        shanghai("0,30 * * * * *", 3),
        [
            "2026-12-03T10:00:30+08:00",
            "2026-12-03T10:01:00+08:00",
            "2026-12-03T10:01:30+08:00"
        ]
    );
}

#[test]
fn aliases() {
    assert_eq!(shanghai("@daily", 1), ["2026-12-04T00:00:00+08:00"]);
    assert_eq!(shanghai("@midnight", 1), ["2026-12-04T00:00:00+08:00"]);
    assert_eq!(shanghai("@hourly", 1), ["2026-12-03T11:00:00+08:00"]);
    assert_eq!(shanghai("@weekly", 1), ["2026-12-06T00:00:00+08:00"]);
    assert_eq!(shanghai("@monthly", 1), ["2027-01-01T00:00:00+08:00"]);
    assert_eq!(shanghai("@yearly", 1), ["2027-01-01T00:00:00+08:00"]);
    assert_eq!(shanghai("@annually", 1), ["2027-01-01T00:00:00+08:00"]);
    assert_eq!(shanghai("@DAILY", 1), ["2026-12-04T00:00:00+08:00"]);
}

#[test]
fn default_zone_is_utc_plus_eight() {
    let s = Schedule::new("0 0 2 * * * *", None).unwrap();
    assert_eq!(s.time_zone_name(), "Asia/Shanghai");
    let next = s.next_after(ts("2026-12-03T00:00:00Z")).unwrap();
    assert_eq!(next.timestamp(), ts("2026-12-03T18:00:00Z"));
    // The same expression in UTC fires eight hours later in absolute time.
    let utc = Schedule::new("0 0 2 * * * *", Some("UTC")).unwrap();
    assert_eq!(
        utc.next_after(ts("2026-12-03T00:00:00Z"))
            .unwrap()
            .timestamp(),
        ts("2026-12-03T02:00:00Z")
    );
}

// ------------------------------------------------------------------------------------------
// America/New_York, 2026: clocks jump 02:00 EST -> 03:00 EDT on 8 March and fall back
// 02:00 EDT -> 01:00 EST on 1 November.

const NY: Option<&str> = Some("America/New_York");

#[test]
fn dst_spring_forward_skipped_time_fires_when_clocks_jump() {
    assert_eq!(
        next_n("0 30 2 * * *", NY, "2026-03-07T03:00:00-05:00", 3),
        [
            "2026-03-08T03:00:00-04:00",
            "2026-03-09T02:30:00-04:00",
            "2026-03-10T02:30:00-04:00"
        ]
    );
    // Several skipped times collapse into one fire.
    assert_eq!(
        next_n("0 */15 * * * *", NY, "2026-03-08T01:50:00-05:00", 3),
        [
            "2026-03-08T03:00:00-04:00",
            "2026-03-08T03:15:00-04:00",
            "2026-03-08T03:30:00-04:00"
        ]
    );
    // A time just before the gap keeps its standard-time offset.
    assert_eq!(
        next_n("0 30 1 * * *", NY, "2026-03-07T12:00:00-05:00", 2),
        ["2026-03-08T01:30:00-05:00", "2026-03-09T01:30:00-04:00"]
    );
}

#[test]
fn dst_fall_back_repeated_time_fires_once() {
    assert_eq!(
        next_n("0 30 1 * * *", NY, "2026-10-31T12:00:00-04:00", 2),
        ["2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00"]
    );
    // Inside the repeated hour, after the first 01:30: the second 01:30 does not fire again.
    assert_eq!(
        next_n("0 30 1 * * *", NY, "2026-11-01T01:45:00-04:00", 1),
        ["2026-11-02T01:30:00-05:00"]
    );
    assert_eq!(
        next_n("0 30 1 * * *", NY, "2026-11-01T01:10:00-05:00", 1),
        ["2026-11-02T01:30:00-05:00"]
    );
    // Hourly: 01:00 runs once (first occurrence), next is 02:00 standard time.
    assert_eq!(
        next_n("0 0 * * * *", NY, "2026-11-01T00:30:00-04:00", 3),
        [
            "2026-11-01T01:00:00-04:00",
            "2026-11-01T02:00:00-05:00",
            "2026-11-01T03:00:00-05:00"
        ]
    );
    // A daily 02:00 backup is unaffected by either transition.
    assert_eq!(
        next_n("0 0 2 * * *", NY, "2026-10-31T12:00:00-04:00", 2),
        ["2026-11-01T02:00:00-05:00", "2026-11-02T02:00:00-05:00"]
    );
}

#[test]
fn dst_rules_hold_for_every_syntax() {
    // Spring forward: the skipped 02:30 fires when the clocks jump, in the 5- and 7-field forms
    // as in the 6-field one.
    for expr in ["30 2 * * *", "0 30 2 * * * *", "0 30 2 * * * 2026"] {
        assert_eq!(
            next_n(expr, NY, "2026-03-07T03:00:00-05:00", 2),
            ["2026-03-08T03:00:00-04:00", "2026-03-09T02:30:00-04:00"],
            "{expr}"
        );
    }
    // 8 March 2026 is a Sunday: the platform's weekday 0, in the 7-field form.
    assert_eq!(
        next_n("0 30 2 * * 0 *", NY, "2026-03-01T12:00:00-05:00", 2),
        ["2026-03-08T03:00:00-04:00", "2026-03-15T02:30:00-04:00"]
    );
    // Fall back: the repeated 01:30 fires once.
    for expr in ["30 1 * * *", "0 30 1 * * * *"] {
        assert_eq!(
            next_n(expr, NY, "2026-10-31T12:00:00-04:00", 2),
            ["2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00"],
            "{expr}"
        );
    }
    // An alias: @hourly runs the repeated 01:00 once.
    assert_eq!(
        next_n("@hourly", NY, "2026-11-01T00:30:00-04:00", 3),
        [
            "2026-11-01T01:00:00-04:00",
            "2026-11-01T02:00:00-05:00",
            "2026-11-01T03:00:00-05:00"
        ]
    );
}

#[test]
fn last_at_or_before_finds_the_missed_nominal_time() {
    let s = Schedule::new("0 0 2 * * * *", None).unwrap();
    let last = s
        .last_at_or_before(
            ts("2026-12-03T10:00:00+08:00"),
            ts("2026-12-01T00:00:00+08:00"),
        )
        .unwrap();
    assert_eq!(last.timestamp(), ts("2026-12-03T02:00:00+08:00"));
    assert!(s
        .last_at_or_before(
            ts("2026-12-03T01:00:00+08:00"),
            ts("2026-12-03T00:00:00+08:00")
        )
        .is_none());
    // Inclusive at both ends.
    assert_eq!(
        s.last_at_or_before(
            ts("2026-12-03T02:00:00+08:00"),
            ts("2026-12-03T02:00:00+08:00")
        )
        .unwrap()
        .timestamp(),
        ts("2026-12-03T02:00:00+08:00")
    );
}

// ------------------------------------------------------------------------------------------
// Errors point at the field.

fn err(expr: &str) -> String {
    CronExpr::parse(expr).unwrap_err().to_string()
}

#[test]
fn errors_name_the_bad_field() {
    assert_eq!(
        err("0 0 2 * * 8 *"),
        "field 6 (day of week) `8`: out of range 0–6"
    );
    assert_eq!(
        err("0 0 24 * * * *"),
        "field 3 (hour) `24`: out of range 0–23"
    );
    assert_eq!(
        err("0 0 2 * 13 * *"),
        "field 5 (month) `13`: out of range 1–12"
    );
    assert_eq!(
        err("0 0 2 * * * 2100"),
        "field 7 (year) `2100`: out of range 1970–2099"
    );
    assert_eq!(
        err("60 0 * * *"),
        "field 1 (minute) `60`: out of range 0–59"
    );
    assert_eq!(
        err("0 0 2 * * 1-8 *"),
        "field 6 (day of week) `1-8`: `8` is out of range 0–6"
    );
    assert_eq!(
        err("*/0 * * * *"),
        "field 1 (minute) `*/0`: step must be at least 1"
    );
    assert_eq!(
        err("5-1 * * * *"),
        "field 1 (minute) `5-1`: range `5-1` runs backwards (start 5 is after end 1)"
    );
    assert_eq!(
        err("0 0 2 * * FOO *"),
        "field 6 (day of week) `FOO`: `FOO` is not a number or a name (SUN–SAT)"
    );
    assert!(err("0 0 2 L * * *").starts_with("field 4 (day of month) `L`: `L` is not supported"));
    assert_eq!(
        err("0 0 2 1,,2 * * *"),
        "field 4 (day of month) `1,,2`: empty list item (stray `,`)"
    );
    assert_eq!(
        err("0 0 2 * * 0 ?"),
        "field 7 (year) `?`: `?` is not supported (the platform documents only `, - * /`)"
    );
    // 7 = Sunday is crontab's, not the platform's.
    assert_eq!(
        err("0 0 2 * * 7 *"),
        "field 6 (day of week) `7`: out of range 0–6"
    );
}

#[test]
fn errors_for_shape() {
    assert_eq!(CronExpr::parse("  "), Err(CronError::Empty));
    assert!(matches!(
        CronExpr::parse("0 0 2 * * * * *"),
        Err(CronError::FieldCount { count: 8, .. })
    ));
    assert!(matches!(
        CronExpr::parse("0 2 * *"),
        Err(CronError::FieldCount { count: 4, .. })
    ));
    assert!(matches!(
        CronExpr::parse("@reboot"),
        Err(CronError::UnknownAlias(_))
    ));
    assert!(matches!(
        Schedule::new("@daily", Some("Mars/Olympus")),
        Err(ScheduleError::TimeZone { .. })
    ));
}

#[test]
fn civil_next_second_rolls_over_the_year() {
    let t = CivilTime {
        year: 2026,
        month: 12,
        day: 31,
        hour: 23,
        minute: 59,
        second: 59,
    };
    assert_eq!(
        t.next_second(),
        CivilTime {
            year: 2027,
            month: 1,
            day: 1,
            hour: 0,
            minute: 0,
            second: 0
        }
    );
}

// ------------------------------------------------------------------------------------------
// Against brute force: the next fire is a match and no whole minute before it matches.

fn field(max: u32, min: u32) -> impl Strategy<Value = String> {
    prop_oneof![
        Just("*".to_string()),
        (min..=max).prop_map(|v| v.to_string()),
        (min..=max, min..=max).prop_map(|(a, b)| format!("{}-{}", a.min(b), a.max(b))),
        (1u32..=7).prop_map(|s| format!("*/{s}")),
        (min..=max, min..=max).prop_map(|(a, b)| format!("{a},{b}")),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn next_matches_brute_force(
        minute in field(59, 0), hour in field(23, 0), dom in field(31, 1),
        month in field(12, 1), dow in field(6, 0), start_minutes in 0i64..(60 * 24 * 366)
    ) {
        let expr = format!("{minute} {hour} {dom} {month} {dow}");
        let s = Schedule::new(&expr, Some("UTC")).unwrap();
        let after = ts("2026-01-01T00:00:00Z")
            .checked_add(jiff::SignedDuration::from_mins(start_minutes)).unwrap();
        if let Some(next) = s.next_after(after) {
            let cron = s.cron();
            let civil = |t: Timestamp| {
                let z = t.to_zoned_datetime(jiff::tz::TimeZone::UTC);
                CivilTime { year: z.year() as u16, month: z.month() as u8, day: z.day() as u8,
                    hour: z.hour() as u8, minute: z.minute() as u8, second: z.second() as u8 }
            };
            prop_assert!(cron.matches(civil(next.timestamp())));
            // Brute force over at most ~2 months of minutes.
            let mut t = after.checked_add(jiff::SignedDuration::from_secs(60 - after.as_second().rem_euclid(60))).unwrap();
            let mut steps = 0;
            while t < next.timestamp() && steps < 90_000 {
                prop_assert!(!cron.matches(civil(t)), "{expr}: {t} matches before {next}");
                t = t.checked_add(jiff::SignedDuration::from_mins(1)).unwrap();
                steps += 1;
            }
        }
    }
}
