//! Shows backup progress: one indicatif bar per collection on a terminal, plain lines on a
//! non-terminal stderr, JSON lines (`message_type: "progress"`) with `--json`.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::backup::progress::{ProgressEvent, ProgressSink, Target};

use super::output::tagged_line;

/// How progress is rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    Bars,
    Plain,
    Json,
    Silent,
}

impl ProgressMode {
    /// Bars on a terminal stderr, plain lines otherwise; JSON lines when `--json`.
    pub fn detect(json: bool) -> Self {
        if json {
            ProgressMode::Json
        } else if std::io::stderr().is_terminal() {
            ProgressMode::Bars
        } else {
            ProgressMode::Plain
        }
    }
}

/// A [`ProgressSink`] that renders in one of the [`ProgressMode`]s.
pub struct ProgressDisplay {
    mode: ProgressMode,
    multi: MultiProgress,
    bars: Mutex<HashMap<Target, ProgressBar>>,
    /// Last time a `bytes` event was printed per collection (plain/JSON modes are throttled).
    last_bytes: Mutex<HashMap<Target, Instant>>,
}

const BYTES_EVERY: Duration = Duration::from_secs(1);

impl ProgressDisplay {
    pub fn new(mode: ProgressMode) -> Self {
        let multi = MultiProgress::with_draw_target(match mode {
            ProgressMode::Bars => ProgressDrawTarget::stderr(),
            _ => ProgressDrawTarget::hidden(),
        });
        ProgressDisplay {
            mode,
            multi,
            bars: Mutex::new(HashMap::new()),
            last_bytes: Mutex::new(HashMap::new()),
        }
    }

    fn bar(&self, target: &Target) -> Option<ProgressBar> {
        let mut bars = self.bars.lock().ok()?;
        let bar = bars.entry(target.clone()).or_insert_with(|| {
            let bar = self.multi.add(ProgressBar::new(0));
            bar.set_style(waiting_style());
            bar.set_prefix(format!("{target}"));
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Some(bar.clone())
    }

    /// Marks a collection done (the run's outcome is known to the caller, not the workflow).
    pub fn finish(&self, target: &Target, ok: bool, message: &str) {
        match self.mode {
            ProgressMode::Bars => {
                if let Some(bar) = self.bar(target) {
                    bar.set_style(done_style());
                    bar.finish_with_message(format!(
                        "{} {message}",
                        if ok { "done" } else { "FAILED" }
                    ));
                }
            }
            ProgressMode::Plain | ProgressMode::Json | ProgressMode::Silent => {}
        }
    }

    /// Stops every remaining bar (Ctrl-C, end of run).
    pub fn finish_all(&self) {
        if let Ok(bars) = self.bars.lock() {
            for bar in bars.values() {
                if !bar.is_finished() {
                    bar.abandon();
                }
            }
        }
    }

    /// Prints a line above the bars (or plainly) without tearing them.
    pub fn println(&self, line: &str) {
        match self.mode {
            ProgressMode::Bars => {
                let _ = self.multi.println(line);
            }
            ProgressMode::Plain => eprintln!("{line}"),
            ProgressMode::Json | ProgressMode::Silent => {}
        }
    }

    fn throttled(&self, target: &Target, last: bool) -> bool {
        let Ok(mut map) = self.last_bytes.lock() else {
            return true;
        };
        let now = Instant::now();
        match map.get(target) {
            Some(t) if now.duration_since(*t) < BYTES_EVERY && !last => true,
            _ => {
                map.insert(target.clone(), now);
                false
            }
        }
    }
}

fn waiting_style() -> ProgressStyle {
    ProgressStyle::with_template("{spinner} {prefix:32!} {wide_msg}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner())
}

fn bytes_style() -> ProgressStyle {
    ProgressStyle::with_template(
        "{spinner} {prefix:32!} [{bar:24}] {bytes:>10}/{total_bytes:10} {bytes_per_sec:>12} {msg}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ")
}

fn done_style() -> ProgressStyle {
    ProgressStyle::with_template("  {prefix:32!} {wide_msg}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner())
}

impl ProgressSink for ProgressDisplay {
    fn report(&self, event: ProgressEvent) {
        match self.mode {
            ProgressMode::Silent => {}
            ProgressMode::Json => {
                if let ProgressEvent::Bytes {
                    target,
                    bytes,
                    total,
                    ..
                } = &event
                {
                    if self.throttled(target, Some(*bytes) == *total) {
                        return;
                    }
                }
                println!("{}", tagged_line("progress", &event));
            }
            ProgressMode::Plain => match &event {
                ProgressEvent::Phase {
                    target,
                    phase,
                    export_job_id,
                    detail,
                    ..
                } => {
                    let job = export_job_id
                        .map(|j| format!(" (export job {j})"))
                        .unwrap_or_default();
                    let detail = detail
                        .as_deref()
                        .map(|d| format!(": {d}"))
                        .unwrap_or_default();
                    eprintln!("{target}: {phase}{job}{detail}");
                }
                ProgressEvent::Bytes { .. } => {}
                ProgressEvent::Problem {
                    target,
                    retrying,
                    message,
                    ..
                } => {
                    let what = if *retrying {
                        "retrying after"
                    } else {
                        "failed"
                    };
                    eprintln!("{target}: {what}: {message}");
                }
            },
            ProgressMode::Bars => {
                let Some(bar) = self.bar(event.target()) else {
                    return;
                };
                match &event {
                    ProgressEvent::Phase {
                        phase,
                        export_job_id,
                        detail,
                        ..
                    } => {
                        if *phase == "downloading" {
                            bar.set_style(bytes_style());
                        }
                        let job = export_job_id
                            .map(|j| format!(" job {j}"))
                            .unwrap_or_default();
                        let detail = detail
                            .as_deref()
                            .map(|d| format!(" {d}"))
                            .unwrap_or_default();
                        bar.set_message(format!("{phase}{job}{detail}"));
                    }
                    ProgressEvent::Bytes { bytes, total, .. } => {
                        if let Some(total) = total {
                            bar.set_length(*total);
                        } else if bar.length().unwrap_or(0) < *bytes {
                            bar.set_length(*bytes);
                        }
                        bar.set_position(*bytes);
                    }
                    ProgressEvent::Problem {
                        retrying, message, ..
                    } => {
                        let what = if *retrying { "retrying" } else { "failed" };
                        bar.set_message(format!("{what}: {message}"));
                    }
                }
            }
        }
    }
}
