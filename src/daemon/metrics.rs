//! Prometheus metrics: counters the daemon keeps while running, plus gauges computed at scrape
//! time from the freshness rows, job counts and schedules, rendered in the text exposition
//! format (version 0.0.4).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::SystemTime;

use crate::client::{errcode_meaning, ApiCall, ApiObserver, CallOutcome};

use super::freshness::Freshness;
use super::scheduler::to_ms;

/// Counters that live as long as the daemon process.
#[derive(Debug, Default)]
pub struct Counters {
    inner: Mutex<CounterValues>,
}

#[derive(Debug, Default, Clone)]
struct CounterValues {
    /// (schedule, outcome) → fires.
    fires: BTreeMap<(String, String), u64>,
    /// run outcome → finished runs.
    runs: BTreeMap<String, u64>,
    /// (endpoint, outcome kind) → calls.
    api_calls: BTreeMap<(String, String), u64>,
    /// (endpoint, errcode or error kind) → errors.
    api_errors: BTreeMap<(String, String), u64>,
    /// endpoint → call durations.
    api_durations: BTreeMap<String, Histogram>,
    /// (kind, outcome) → alerts sent.
    alerts: BTreeMap<(String, String), u64>,
    /// outcome (`applied`, `rejected`) → configuration reloads.
    reloads: BTreeMap<String, u64>,
}

impl Counters {
    fn with<R>(&self, f: impl FnOnce(&mut CounterValues) -> R) -> R {
        // A poisoned lock only means another thread panicked mid-increment; the counts are
        // still usable.
        let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }

    /// `count` nominal fire times of `schedule` had `outcome`.
    pub fn fire(&self, schedule: &str, outcome: &str, count: u64) {
        self.with(|c| {
            let n = c
                .fires
                .entry((schedule.to_string(), outcome.to_string()))
                .or_default();
            *n = n.saturating_add(count);
        });
    }

    pub fn run_finished(&self, outcome: &str) {
        self.with(|c| *c.runs.entry(outcome.to_string()).or_default() += 1);
    }

    /// One finished API call, as the client's observer reports it.
    pub fn api_call(&self, call: &ApiCall<'_>) {
        let error = error_label(call.outcome);
        self.with(|c| {
            *c.api_calls
                .entry((call.endpoint.to_string(), call.outcome.kind().to_string()))
                .or_default() += 1;
            if let Some(e) = error {
                *c.api_errors
                    .entry((call.endpoint.to_string(), e))
                    .or_default() += 1;
            }
            c.api_durations
                .entry(call.endpoint.to_string())
                .or_default()
                .observe(call.duration.as_secs_f64());
        });
    }

    /// Calls of `endpoint` that ended with errcode `code` (tests compare it with the server).
    pub fn api_errcode_count(&self, endpoint: &str, code: i64) -> u64 {
        self.with(|c| {
            c.api_errors
                .get(&(endpoint.to_string(), code.to_string()))
                .copied()
                .unwrap_or(0)
        })
    }

    /// Calls of `endpoint` with outcome kind `kind` (`ok`, `errcode`, ...).
    pub fn api_call_count(&self, endpoint: &str, kind: &str) -> u64 {
        self.with(|c| {
            c.api_calls
                .get(&(endpoint.to_string(), kind.to_string()))
                .copied()
                .unwrap_or(0)
        })
    }

    /// A configuration reload (SIGHUP) was `applied` or `rejected`.
    pub fn reload(&self, outcome: &str) {
        self.with(|c| *c.reloads.entry(outcome.to_string()).or_default() += 1);
    }

    /// Reloads with `outcome` so far.
    pub fn reload_count(&self, outcome: &str) -> u64 {
        self.with(|c| c.reloads.get(outcome).copied().unwrap_or(0))
    }

    pub fn alert(&self, kind: &str, outcome: &str) {
        self.with(|c| {
            *c.alerts
                .entry((kind.to_string(), outcome.to_string()))
                .or_default() += 1
        });
    }

    fn snapshot(&self) -> CounterValues {
        self.with(|c| c.clone())
    }
}

impl ApiObserver for Counters {
    fn observe(&self, call: &ApiCall<'_>) {
        self.api_call(call);
    }
}

/// The `errcode` label of a failed call: the errcode itself when the client knows its meaning
/// (a server inventing codes must not grow the label set without bound), `other` for unknown
/// codes, `http_<status>` for HTTP statuses, else the outcome kind. `None` for a success.
pub fn error_label(outcome: CallOutcome) -> Option<String> {
    match outcome {
        CallOutcome::Ok => None,
        CallOutcome::Errcode(code) if errcode_meaning(code).is_some() => Some(code.to_string()),
        CallOutcome::Errcode(_) => Some("other".to_string()),
        CallOutcome::HttpStatus(status) => Some(format!("http_{status}")),
        other => Some(other.kind().to_string()),
    }
}

/// Upper bounds (seconds) of the API call duration histogram.
pub const DURATION_BUCKETS: [f64; 10] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// A cumulative Prometheus histogram with [`DURATION_BUCKETS`].
#[derive(Debug, Clone, Default)]
struct Histogram {
    /// Observations `<=` each bucket bound (not yet cumulative).
    buckets: [u64; DURATION_BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, v: f64) {
        if let Some(i) = DURATION_BUCKETS.iter().position(|b| v <= *b) {
            if let Some(slot) = self.buckets.get_mut(i) {
                *slot += 1;
            }
        }
        self.count += 1;
        self.sum += v;
    }
}

/// Per-schedule facts for the scrape.
#[derive(Debug, Clone)]
pub struct ScheduleGauge {
    pub name: String,
    pub next_fire: Option<SystemTime>,
    pub last_nominal: Option<SystemTime>,
}

/// Everything a scrape renders.
pub struct Scrape<'a> {
    pub started_at: SystemTime,
    pub freshness: &'a [Freshness],
    /// Job status → number of jobs (active ones; terminal counts come from `Counters`).
    pub jobs_by_status: &'a BTreeMap<String, u64>,
    pub schedules: &'a [ScheduleGauge],
    pub counters: &'a Counters,
}

/// Escapes a label value: backslash, double quote and newline.
pub fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

struct Writer {
    out: String,
}

impl Writer {
    fn header(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape_label(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {}", format_value(value));
    }
}

fn format_value(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

fn secs(t: SystemTime) -> f64 {
    to_ms(t) as f64 / 1000.0
}

/// Renders the whole exposition.
pub fn render(scrape: &Scrape<'_>) -> String {
    let mut w = Writer { out: String::new() };
    w.header(
        "tcb_backup_daemon_start_time_seconds",
        "gauge",
        "Unix time the daemon started.",
    );
    w.sample(
        "tcb_backup_daemon_start_time_seconds",
        &[],
        secs(scrape.started_at),
    );

    type Pick = fn(&Freshness) -> Option<f64>;
    let per_collection: [(&str, &str, Pick); 9] = [
        (
            "tcb_backup_last_success_timestamp_seconds",
            "Unix time the newest snapshot in the catalog (a recorded, successful backup) finished.",
            |f| f.status.last_success.map(secs),
        ),
        (
            "tcb_backup_last_duration_seconds",
            "Duration of the newest successful backup.",
            |f| f.status.last_duration.map(|d| d.as_secs_f64()),
        ),
        (
            "tcb_backup_last_bytes",
            "Export size (uncompressed) of the newest snapshot.",
            |f| f.status.bytes.map(|b| b as f64),
        ),
        (
            "tcb_backup_last_stored_bytes",
            "Stored (compressed) size of the newest snapshot.",
            |f| f.status.bytes_stored.map(|b| b as f64),
        ),
        (
            "tcb_backup_last_records",
            "Records in the newest snapshot.",
            |f| f.status.records.map(|r| r as f64),
        ),
        (
            "tcb_backup_expected_interval_seconds",
            "Time between scheduled backups of this collection.",
            |f| f.expected_interval.map(|d| d.as_secs_f64()),
        ),
        (
            "tcb_backup_last_verified_timestamp_seconds",
            "Unix time of the newest passed check of any snapshot of the collection.",
            |f| f.status.last_verified.map(secs),
        ),
        (
            "tcb_backup_last_test_restore_timestamp_seconds",
            "Unix time of the newest passed test restore of any snapshot of the collection.",
            |f| f.status.last_test_restored.map(secs),
        ),
        (
            "tcb_backup_stale",
            "1 when the newest snapshot is older than the staleness limit.",
            |f| Some(if f.stale { 1.0 } else { 0.0 }),
        ),
    ];
    for (name, help, pick) in per_collection {
        w.header(name, "gauge", help);
        for f in scrape.freshness {
            if let Some(v) = pick(f) {
                w.sample(
                    name,
                    &[
                        ("appid", &f.status.appid),
                        ("env", &f.status.env),
                        ("collection", &f.status.collection),
                    ],
                    v,
                );
            }
        }
    }
    w.header(
        "tcb_backup_last_status",
        "gauge",
        "1 for the outcome of the newest backup attempt of a collection (label status).",
    );
    for f in scrape.freshness {
        if let Some(status) = &f.status.last_status {
            w.sample(
                "tcb_backup_last_status",
                &[
                    ("appid", &f.status.appid),
                    ("env", &f.status.env),
                    ("collection", &f.status.collection),
                    ("status", status),
                ],
                1.0,
            );
        }
    }

    w.header(
        "tcb_backup_jobs",
        "gauge",
        "Jobs in the state store by status, finished ones (succeeded, partially-failed, failed, cancelled) included.",
    );
    for (status, n) in scrape.jobs_by_status {
        w.sample("tcb_backup_jobs", &[("status", status)], *n as f64);
    }

    w.header(
        "tcb_backup_schedule_next_fire_timestamp_seconds",
        "gauge",
        "Unix time of the next nominal fire of a schedule.",
    );
    for s in scrape.schedules {
        if let Some(t) = s.next_fire {
            w.sample(
                "tcb_backup_schedule_next_fire_timestamp_seconds",
                &[("schedule", &s.name)],
                secs(t),
            );
        }
    }
    w.header(
        "tcb_backup_schedule_last_fire_timestamp_seconds",
        "gauge",
        "Unix time of the nominal fire whose run was started most recently.",
    );
    for s in scrape.schedules {
        if let Some(t) = s.last_nominal {
            w.sample(
                "tcb_backup_schedule_last_fire_timestamp_seconds",
                &[("schedule", &s.name)],
                secs(t),
            );
        }
    }

    let c = scrape.counters.snapshot();
    w.header(
        "tcb_backup_schedule_fires_total",
        "counter",
        "Schedule fires since start, by outcome (started, skipped_overlap, queued, missed; coalesced: fire times inside the catch-up window folded into one later run).",
    );
    for ((schedule, outcome), n) in &c.fires {
        w.sample(
            "tcb_backup_schedule_fires_total",
            &[("schedule", schedule), ("outcome", outcome)],
            *n as f64,
        );
    }
    w.header(
        "tcb_backup_runs_finished_total",
        "counter",
        "Backup runs and scheduled checks/forgets finished since start, by outcome.",
    );
    for (outcome, n) in &c.runs {
        w.sample(
            "tcb_backup_runs_finished_total",
            &[("outcome", outcome)],
            *n as f64,
        );
    }
    w.header(
        "tcb_backup_api_calls_total",
        "counter",
        "CloudBase HTTP calls since start, by endpoint and outcome (ok, errcode, http_status, transport, timeout, invalid_response, refused).",
    );
    for ((endpoint, outcome), n) in &c.api_calls {
        w.sample(
            "tcb_backup_api_calls_total",
            &[("endpoint", endpoint), ("outcome", outcome)],
            *n as f64,
        );
    }
    w.header(
        "tcb_backup_api_call_duration_seconds",
        "histogram",
        "Duration of CloudBase HTTP calls (downloads: until the response headers), by endpoint.",
    );
    for (endpoint, h) in &c.api_durations {
        let mut cumulative = 0;
        for (bound, n) in DURATION_BUCKETS.iter().zip(h.buckets) {
            cumulative += n;
            w.sample(
                "tcb_backup_api_call_duration_seconds_bucket",
                &[("endpoint", endpoint), ("le", &bound.to_string())],
                cumulative as f64,
            );
        }
        w.sample(
            "tcb_backup_api_call_duration_seconds_bucket",
            &[("endpoint", endpoint), ("le", "+Inf")],
            h.count as f64,
        );
        w.sample(
            "tcb_backup_api_call_duration_seconds_sum",
            &[("endpoint", endpoint)],
            h.sum,
        );
        w.sample(
            "tcb_backup_api_call_duration_seconds_count",
            &[("endpoint", endpoint)],
            h.count as f64,
        );
    }
    w.header(
        "tcb_backup_api_errors_total",
        "counter",
        "CloudBase API errors since start, by endpoint and errcode (or error kind).",
    );
    for ((endpoint, errcode), n) in &c.api_errors {
        w.sample(
            "tcb_backup_api_errors_total",
            &[("endpoint", endpoint), ("errcode", errcode)],
            *n as f64,
        );
    }
    w.header(
        "tcb_backup_config_reloads_total",
        "counter",
        "Configuration reloads (SIGHUP) since start, by outcome (applied, rejected).",
    );
    for (outcome, n) in &c.reloads {
        w.sample(
            "tcb_backup_config_reloads_total",
            &[("outcome", outcome)],
            *n as f64,
        );
    }
    w.header(
        "tcb_backup_alerts_total",
        "counter",
        "Alert and heartbeat deliveries since start, by kind and outcome.",
    );
    for ((kind, outcome), n) in &c.alerts {
        w.sample(
            "tcb_backup_alerts_total",
            &[("kind", kind), ("outcome", outcome)],
            *n as f64,
        );
    }
    w.out
}
