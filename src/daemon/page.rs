//! The read-only freshness web page: one row per collection, stale ones highlighted. Rendered
//! on the server (no scripts), so it works in any browser and in a headless screenshot.

use std::fmt::Write as _;
use std::time::SystemTime;

use super::freshness::{human_duration, Freshness};
use super::scheduler::{fmt_ms, to_ms};

/// Escapes text for HTML element content and attribute values.
pub fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Schedules shown under the table.
pub struct PageSchedule {
    pub name: String,
    pub cron: String,
    pub time_zone: String,
    pub next_fire: Option<String>,
}

pub fn render(rows: &[Freshness], schedules: &[PageSchedule], now: SystemTime) -> String {
    let stale = rows.iter().filter(|r| r.stale).count();
    let mut html = String::new();
    html.push_str(concat!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">",
        "<meta http-equiv=\"refresh\" content=\"60\">",
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">",
        "<title>tcb-backup freshness</title><style>",
        "body{font-family:system-ui,sans-serif;margin:2em;color:#222}",
        "table{border-collapse:collapse;width:100%}",
        "th,td{border-bottom:1px solid #ddd;padding:.4em .6em;text-align:left}",
        "th{background:#f4f4f4}td{white-space:nowrap}td.attempt{white-space:normal}",
        "tr.stale td{background:#fde2e1;color:#8a1111;font-weight:600}",
        "tr.fresh td.state{color:#176b21}",
        ".summary{font-size:1.1em;margin:1em 0}",
        ".summary.bad{color:#8a1111;font-weight:700}",
        "</style></head><body>\n<h1>tcb-backup: backup freshness</h1>\n"
    ));
    let _ = writeln!(
        html,
        "<p class=\"summary{}\" id=\"summary\">{} collection{}, {} stale · as of {}</p>",
        if stale > 0 { " bad" } else { "" },
        rows.len(),
        if rows.len() == 1 { "" } else { "s" },
        stale,
        html_escape(&fmt_ms(to_ms(now)))
    );
    html.push_str(concat!(
        "<table id=\"freshness\"><thead><tr><th>Env</th><th>Collection</th><th>State</th>",
        "<th>Last success</th><th>Age</th><th>Expected every</th><th>Last attempt</th>",
        "<th>Records</th><th>Size</th></tr></thead><tbody>\n"
    ));
    for r in rows {
        let s = &r.status;
        let state = if r.stale { "STALE" } else { "fresh" };
        let last_status = s.last_status.clone().unwrap_or_else(|| "-".to_string());
        let _ = writeln!(
            html,
            "<tr class=\"{}\" data-env=\"{}\" data-collection=\"{}\"><td>{}</td><td>{}</td>\
             <td class=\"state\">{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"attempt\">{}{}</td>\
             <td>{}</td><td>{}</td></tr>",
            if r.stale { "stale" } else { "fresh" },
            html_escape(&s.env),
            html_escape(&s.collection),
            html_escape(&s.env),
            html_escape(&s.collection),
            state,
            s.last_success
                .map(|t| html_escape(&fmt_ms(to_ms(t))))
                .unwrap_or_else(|| "never".to_string()),
            r.age.map(human_duration).unwrap_or_else(|| "-".to_string()),
            r.expected_interval
                .map(human_duration)
                .unwrap_or_else(|| "-".to_string()),
            html_escape(&last_status),
            s.last_error
                .as_deref()
                .map(|e| format!(": {}", html_escape(e)))
                .unwrap_or_default(),
            s.records.map(|n| n.to_string()).unwrap_or_default(),
            s.bytes_stored.map(human_bytes).unwrap_or_default(),
        );
    }
    html.push_str("</tbody></table>\n<h2>Schedules</h2>\n<ul id=\"schedules\">\n");
    for s in schedules {
        let _ = writeln!(
            html,
            "<li><b>{}</b>: <code>{}</code> ({}), next {}</li>",
            html_escape(&s.name),
            html_escape(&s.cron),
            html_escape(&s.time_zone),
            html_escape(s.next_fire.as_deref().unwrap_or("never"))
        );
    }
    html.push_str("</ul>\n</body></html>\n");
    html
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS.get(unit).copied().unwrap_or("B"))
    }
}
