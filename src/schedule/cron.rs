//! Cron expressions: parsing with errors that name the bad field, and matching civil times.
//!
//! Four spellings are accepted, told apart by the number of fields:
//!
//! | fields | form | order |
//! |---|---|---|
//! | 5 | crontab | `min hour dom month dow` (seconds = 0) |
//! | 6 | with seconds | `sec min hour dom month dow` |
//! | 7 | WeChat/CloudBase timer trigger | `sec min hour dom month dow year` |
//! | 1 | alias | `@yearly` `@annually` `@monthly` `@weekly` `@daily` `@midnight` `@hourly` |
//!
//! Semantics follow the platform's timer trigger (reference §8): day of week 0 = Sunday (names
//! `SUN`…`SAT`; in the 5- and 6-field forms 7 is also accepted as Sunday, as crontab does), months
//! `1`–`12` or `JAN`…`DEC`, year 1970–2099. `a/n` steps from `a` to the end of the field (`1/10`
//! in minutes = 1, 11, 21, …). When day of month *and* day of week are both given a day matches
//! if either matches — the platform ORs them; otherwise both must match. "Given" means anything
//! but a bare `*` in the 7-field form, and (as in Vixie cron/cronie) a field not starting with
//! `*` in the 5- and 6-field forms, where `*/2` is unrestricted. This module knows nothing of time zones: it finds matching civil (wall-clock)
//! times; [`super::Schedule`] maps them to instants.

use std::fmt;
use std::str::FromStr;

/// First and last year the platform's year field accepts; also the search horizon.
pub const MIN_YEAR: u16 = 1970;
pub const MAX_YEAR: u16 = 2099;

/// Which spelling an expression was written in (kept for display and diagnostics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CronForm {
    /// `@daily` and friends.
    Alias,
    /// 5 fields, standard crontab.
    Crontab,
    /// 6 fields, leading seconds.
    WithSeconds,
    /// 7 fields, the WeChat/CloudBase timer-trigger form with a trailing year.
    Platform,
}

/// An invalid cron expression, pointing at the field that is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CronError {
    #[error("empty cron expression")]
    Empty,
    #[error(
        "cron expression `{expr}` has {count} fields; expected 5 (min hour dom month dow), \
         6 (sec min hour dom month dow), 7 (sec min hour dom month dow year) or an alias \
         such as @daily"
    )]
    FieldCount { expr: String, count: usize },
    #[error("unknown cron alias `{0}` (known: @yearly @annually @monthly @weekly @daily @midnight @hourly)")]
    UnknownAlias(String),
    /// `position` is 1-based within the expression as written.
    #[error("field {position} ({name}) `{text}`: {problem}")]
    Field {
        position: usize,
        name: &'static str,
        text: String,
        problem: String,
    },
}

/// A set of small integers (0..=63), one bit each.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
struct Bits(u64);

impl Bits {
    fn has(self, v: u32) -> bool {
        v < 64 && self.0 & (1u64 << v) != 0
    }
    fn add(&mut self, v: u32) {
        if v < 64 {
            self.0 |= 1u64 << v;
        }
    }
}

impl fmt::Debug for Bits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let values: Vec<u32> = (0..64).filter(|v| self.has(*v)).collect();
        write!(f, "{values:?}")
    }
}

/// Years 1970..=2099 as 130 bits.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
struct YearBits([u64; 3]);

impl YearBits {
    fn has(&self, year: u16) -> bool {
        if !(MIN_YEAR..=MAX_YEAR).contains(&year) {
            return false;
        }
        let i = usize::from(year - MIN_YEAR);
        self.0
            .get(i / 64)
            .is_some_and(|w| w & (1u64 << (i % 64)) != 0)
    }
    fn add(&mut self, year: u32) {
        if let Ok(y) = u16::try_from(year) {
            if (MIN_YEAR..=MAX_YEAR).contains(&y) {
                let i = usize::from(y - MIN_YEAR);
                if let Some(w) = self.0.get_mut(i / 64) {
                    *w |= 1u64 << (i % 64);
                }
            }
        }
    }
}

impl fmt::Debug for YearBits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let years: Vec<u16> = (MIN_YEAR..=MAX_YEAR).filter(|y| self.has(*y)).collect();
        write!(f, "{years:?}")
    }
}

/// A wall-clock time without a zone, second precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CivilTime {
    pub year: u16,
    pub month: u8,
    pub day: u8,
    pub hour: u8,
    pub minute: u8,
    pub second: u8,
}

impl CivilTime {
    /// The next second, rolling over minutes, hours, days, months and years.
    pub fn next_second(self) -> CivilTime {
        let mut t = self;
        if t.second < 59 {
            t.second += 1;
            return t;
        }
        t.second = 0;
        if t.minute < 59 {
            t.minute += 1;
            return t;
        }
        t.minute = 0;
        if t.hour < 23 {
            t.hour += 1;
            return t;
        }
        t.hour = 0;
        if t.day < days_in_month(t.year, t.month) {
            t.day += 1;
            return t;
        }
        t.day = 1;
        if t.month < 12 {
            t.month += 1;
            return t;
        }
        t.month = 1;
        t.year = t.year.saturating_add(1);
        t
    }
}

impl fmt::Display for CivilTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )
    }
}

pub fn is_leap_year(year: u16) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

pub fn days_in_month(year: u16, month: u8) -> u8 {
    match month {
        4 | 6 | 9 | 11 => 30,
        2 if is_leap_year(year) => 29,
        2 => 28,
        _ => 31,
    }
}

/// Day of week, 0 = Sunday (Sakamoto's method; proleptic Gregorian).
pub fn weekday(year: u16, month: u8, day: u8) -> u8 {
    const T: [u32; 12] = [0, 3, 2, 5, 0, 3, 5, 1, 4, 6, 2, 4];
    let y = u32::from(year) - u32::from(month < 3);
    let t = T
        .get(usize::from(month.saturating_sub(1)))
        .copied()
        .unwrap_or(0);
    ((y + y / 4 - y / 100 + y / 400 + t + u32::from(day)) % 7) as u8
}

/// A parsed cron expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronExpr {
    source: String,
    form: CronForm,
    seconds: Bits,
    minutes: Bits,
    hours: Bits,
    days_of_month: Bits,
    months: Bits,
    days_of_week: Bits,
    /// `None`: every year.
    years: Option<YearBits>,
    /// Day of month / day of week written as something other than a bare `*`.
    dom_given: bool,
    dow_given: bool,
}

#[derive(Clone, Copy)]
enum Kind {
    Second,
    Minute,
    Hour,
    DayOfMonth,
    Month,
    DayOfWeek,
    Year,
}

struct FieldSpec {
    kind: Kind,
    name: &'static str,
    min: u32,
    max: u32,
}

const MONTH_NAMES: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const DAY_NAMES: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

fn spec(kind: Kind, form: CronForm) -> FieldSpec {
    let (name, min, max) = match kind {
        Kind::Second => ("second", 0, 59),
        Kind::Minute => ("minute", 0, 59),
        Kind::Hour => ("hour", 0, 23),
        Kind::DayOfMonth => ("day of month", 1, 31),
        Kind::Month => ("month", 1, 12),
        // The platform documents 0–6; crontab also takes 7 for Sunday.
        Kind::DayOfWeek if form == CronForm::Platform => ("day of week", 0, 6),
        Kind::DayOfWeek => ("day of week", 0, 7),
        Kind::Year => ("year", u32::from(MIN_YEAR), u32::from(MAX_YEAR)),
    };
    FieldSpec {
        kind,
        name,
        min,
        max,
    }
}

impl FromStr for CronExpr {
    type Err = CronError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CronExpr::parse(s)
    }
}

impl fmt::Display for CronExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl CronExpr {
    /// Parses any of the accepted spellings (see the module docs).
    pub fn parse(text: &str) -> Result<CronExpr, CronError> {
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(CronError::Empty);
        }
        if trimmed.starts_with('@') {
            let expanded = match trimmed.to_ascii_lowercase().as_str() {
                "@yearly" | "@annually" => "0 0 0 1 1 *",
                "@monthly" => "0 0 0 1 * *",
                "@weekly" => "0 0 0 * * 0",
                "@daily" | "@midnight" => "0 0 0 * * *",
                "@hourly" => "0 0 * * * *",
                _ => return Err(CronError::UnknownAlias(trimmed.to_string())),
            };
            let mut expr = Self::parse_fields(expanded, CronForm::WithSeconds)?;
            expr.form = CronForm::Alias;
            expr.source = trimmed.to_string();
            return Ok(expr);
        }
        let count = trimmed.split_whitespace().count();
        let form = match count {
            5 => CronForm::Crontab,
            6 => CronForm::WithSeconds,
            7 => CronForm::Platform,
            _ => {
                return Err(CronError::FieldCount {
                    expr: trimmed.to_string(),
                    count,
                })
            }
        };
        Self::parse_fields(trimmed, form)
    }

    fn parse_fields(text: &str, form: CronForm) -> Result<CronExpr, CronError> {
        let kinds: &[Kind] = match form {
            CronForm::Crontab => &[
                Kind::Minute,
                Kind::Hour,
                Kind::DayOfMonth,
                Kind::Month,
                Kind::DayOfWeek,
            ],
            CronForm::WithSeconds | CronForm::Alias => &[
                Kind::Second,
                Kind::Minute,
                Kind::Hour,
                Kind::DayOfMonth,
                Kind::Month,
                Kind::DayOfWeek,
            ],
            CronForm::Platform => &[
                Kind::Second,
                Kind::Minute,
                Kind::Hour,
                Kind::DayOfMonth,
                Kind::Month,
                Kind::DayOfWeek,
                Kind::Year,
            ],
        };
        let mut expr = CronExpr {
            source: text.split_whitespace().collect::<Vec<_>>().join(" "),
            form,
            seconds: Bits(1), // second 0 unless a seconds field says otherwise
            minutes: Bits::default(),
            hours: Bits::default(),
            days_of_month: Bits::default(),
            months: Bits::default(),
            days_of_week: Bits::default(),
            years: None,
            dom_given: false,
            dow_given: false,
        };
        for (index, (field, kind)) in text.split_whitespace().zip(kinds.iter()).enumerate() {
            let spec = spec(*kind, form);
            let values = parse_field(field, &spec).map_err(|problem| CronError::Field {
                position: index + 1,
                name: spec.name,
                text: field.to_string(),
                problem,
            })?;
            // Whether the field restricts (for day-of-month/day-of-week: whether the two are
            // OR-ed). Vixie cron and cronie treat a field *starting* with `*` (`*`, `*/2`) as
            // unrestricted, so `0 2 */2 * 1` is odd days that are Mondays (AND); the platform's
            // reference (§8) says only that `*` is all values and that both days may be given
            // (OR-ed), so there only a bare `*` is unrestricted and `*/2` counts as given.
            let given = match form {
                CronForm::Platform => field != "*",
                CronForm::Crontab | CronForm::WithSeconds | CronForm::Alias => {
                    !field.starts_with('*')
                }
            };
            match kind {
                Kind::Second => expr.seconds = bits_of(&values),
                Kind::Minute => expr.minutes = bits_of(&values),
                Kind::Hour => expr.hours = bits_of(&values),
                Kind::DayOfMonth => {
                    expr.days_of_month = bits_of(&values);
                    expr.dom_given = given;
                }
                Kind::Month => expr.months = bits_of(&values),
                Kind::DayOfWeek => {
                    // 7 is Sunday too (crontab).
                    let mut bits = Bits::default();
                    for v in &values {
                        bits.add(v % 7);
                    }
                    expr.days_of_week = bits;
                    expr.dow_given = given;
                }
                Kind::Year => {
                    if given {
                        let mut years = YearBits::default();
                        for v in &values {
                            years.add(*v);
                        }
                        expr.years = Some(years);
                    }
                }
            }
        }
        Ok(expr)
    }

    /// The expression as written (whitespace normalised).
    pub fn as_str(&self) -> &str {
        &self.source
    }

    pub fn form(&self) -> CronForm {
        self.form
    }

    /// Whether the expression fires on that day (month, day-of-month/day-of-week, year).
    pub fn matches_day(&self, year: u16, month: u8, day: u8) -> bool {
        if let Some(years) = &self.years {
            if !years.has(year) {
                return false;
            }
        }
        if !self.months.has(u32::from(month)) || day < 1 || day > days_in_month(year, month) {
            return false;
        }
        let dom = self.days_of_month.has(u32::from(day));
        let dow = self.days_of_week.has(u32::from(weekday(year, month, day)));
        if self.dom_given && self.dow_given {
            dom || dow
        } else {
            dom && dow
        }
    }

    /// Whether a civil time matches every field.
    pub fn matches(&self, t: CivilTime) -> bool {
        self.matches_day(t.year, t.month, t.day)
            && self.hours.has(u32::from(t.hour))
            && self.minutes.has(u32::from(t.minute))
            && self.seconds.has(u32::from(t.second))
    }

    /// The first matching civil time at or after `from`, searching up to year [`MAX_YEAR`] when
    /// a year field restricts the years, and eight years ahead otherwise (the longest possible
    /// gap: 29 February across a non-leap century year). `None`: it never fires again.
    pub fn next_at_or_after(&self, from: CivilTime) -> Option<CivilTime> {
        let last_year = if self.years.is_some() {
            MAX_YEAR
        } else {
            from.year.saturating_add(8)
        };
        for year in from.year..=last_year {
            if let Some(years) = &self.years {
                if !years.has(year) {
                    continue;
                }
            }
            let first_y = year == from.year;
            for month in 1..=12u8 {
                if (first_y && month < from.month) || !self.months.has(u32::from(month)) {
                    continue;
                }
                let first_mo = first_y && month == from.month;
                for day in 1..=days_in_month(year, month) {
                    if (first_mo && day < from.day) || !self.matches_day(year, month, day) {
                        continue;
                    }
                    let first_d = first_mo && day == from.day;
                    for hour in 0..24u8 {
                        if (first_d && hour < from.hour) || !self.hours.has(u32::from(hour)) {
                            continue;
                        }
                        let first_h = first_d && hour == from.hour;
                        for minute in 0..60u8 {
                            if (first_h && minute < from.minute)
                                || !self.minutes.has(u32::from(minute))
                            {
                                continue;
                            }
                            let first_mi = first_h && minute == from.minute;
                            for second in 0..60u8 {
                                if (first_mi && second < from.second)
                                    || !self.seconds.has(u32::from(second))
                                {
                                    continue;
                                }
                                return Some(CivilTime {
                                    year,
                                    month,
                                    day,
                                    hour,
                                    minute,
                                    second,
                                });
                            }
                        }
                    }
                }
            }
        }
        None
    }
}

fn bits_of(values: &[u32]) -> Bits {
    let mut bits = Bits::default();
    for v in values {
        bits.add(*v);
    }
    bits
}

/// Expands one field to its values; the error text is the problem only (the caller adds the
/// field's position, name and text).
fn parse_field(field: &str, spec: &FieldSpec) -> Result<Vec<u32>, String> {
    let mut values = Vec::new();
    for part in field.split(',') {
        if part.is_empty() {
            return Err("empty list item (stray `,`)".to_string());
        }
        let (range, step) = match part.split_once('/') {
            Some((range, step)) => {
                let step: u32 = step
                    .parse()
                    .map_err(|_| format!("step `{step}` is not a whole number"))?;
                if step == 0 {
                    return Err("step must be at least 1".to_string());
                }
                (range, Some(step))
            }
            None => (part, None),
        };
        let (start, end) = if range == "*" {
            (spec.min, spec.max)
        } else if let Some((a, b)) = range.split_once('-') {
            let a = value(a, spec, false)?;
            let b = value(b, spec, false)?;
            if a > b {
                return Err(format!(
                    "range `{range}` runs backwards (start {a} is after end {b})"
                ));
            }
            (a, b)
        } else {
            let a = value(range, spec, range == field)?;
            // `a/n` runs from a to the end of the field.
            (a, if step.is_some() { spec.max } else { a })
        };
        let step = step.unwrap_or(1);
        let mut v = start;
        while v <= end {
            values.push(v);
            v = v.saturating_add(step);
        }
    }
    Ok(values)
}

/// `whole`: `text` is the entire field (so the message need not repeat it).
fn value(text: &str, spec: &FieldSpec, whole: bool) -> Result<u32, String> {
    let names: &[&str] = match spec.kind {
        Kind::Month => &MONTH_NAMES,
        Kind::DayOfWeek => &DAY_NAMES,
        _ => &[],
    };
    if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(text)) {
        // Months are 1-based, weekdays 0-based.
        let i = i as u32;
        return Ok(if matches!(spec.kind, Kind::Month) {
            i + 1
        } else {
            i
        });
    }
    if text.is_empty() {
        return Err("missing number".to_string());
    }
    if matches!(text, "?" | "L" | "W") || text.contains(['#', 'L', 'W', '?']) {
        return Err(format!(
            "`{text}` is not supported (the platform documents only `, - * /`)"
        ));
    }
    let n: u32 = text.parse().map_err(|_| {
        if names.is_empty() {
            format!("`{text}` is not a number")
        } else {
            format!(
                "`{text}` is not a number or a name ({}–{})",
                names.first().copied().unwrap_or(""),
                names.last().copied().unwrap_or("")
            )
        }
    })?;
    if n < spec.min || n > spec.max {
        return Err(if whole {
            format!("out of range {}–{}", spec.min, spec.max)
        } else {
            format!("`{text}` is out of range {}–{}", spec.min, spec.max)
        });
    }
    Ok(n)
}
