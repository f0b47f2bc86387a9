//! `show`'s output, shared by the local command and the one answered by a running daemon: a
//! snapshot (with its copies and verification times) and a job with its history, as one JSON
//! document or as text. Statuses are the same kebab-case names `jobs` prints, and history
//! events are sentences, not the engine's serialized records.

use std::time::{Duration, SystemTime};

use serde::Serialize;
use tcb_state::{HistoryEntry, HistoryEvent, JobSummary, JobView};

use super::output::Output;
use super::table::human_bytes;
use crate::backup::catalog_store::SnapshotRecord;
use crate::backup::listing::SnapshotStatus;
use crate::backup::report::collection_row;

/// What `show` found.
#[derive(Serialize)]
pub struct ShowOutput {
    pub snapshot: Option<SnapshotRecord>,
    /// Copies and verification times of `snapshot`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot_status: Option<SnapshotStatus>,
    pub job: Option<JobDocument>,
}

/// One job in `jobs --json`, and the head of a job in `show --json`.
#[derive(Serialize)]
pub struct JobLine {
    pub id: u64,
    pub kind: String,
    pub label: String,
    pub status: &'static str,
    pub parent: Option<u64>,
    pub created_at: String,
    pub updated_at: String,
    pub attempt: u32,
    pub last_error: Option<String>,
}

impl From<&JobSummary> for JobLine {
    fn from(s: &JobSummary) -> Self {
        JobLine {
            id: s.id.0,
            kind: s.kind.clone(),
            label: s.label.clone(),
            status: s.status.as_str(),
            parent: s.parent.map(|p| p.0),
            created_at: rfc3339(s.created_at),
            updated_at: rfc3339(s.updated_at),
            attempt: s.attempt,
            last_error: s.last_error.clone(),
        }
    }
}

/// A job as `show --json` prints it.
#[derive(Serialize)]
pub struct JobDocument {
    #[serde(flatten)]
    pub job: JobLine,
    /// For a collection job: the phase it reached (`recorded` when done).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    pub state: serde_json::Value,
    pub output: Option<serde_json::Value>,
    pub children: Vec<u64>,
    pub recoveries: u32,
    pub history: Vec<HistoryLine>,
}

/// One history entry: `event` is the sentence, `detail` the engine's record of it.
#[derive(Serialize)]
pub struct HistoryLine {
    pub seq: u64,
    pub at: String,
    pub status: &'static str,
    pub attempt: u32,
    pub event: String,
    pub detail: HistoryEvent,
}

fn rfc3339(t: SystemTime) -> String {
    time::OffsetDateTime::from(t)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

impl From<&JobView> for JobDocument {
    fn from(v: &JobView) -> Self {
        JobDocument {
            job: JobLine::from(&v.summary),
            phase: (v.summary.kind == "backup.collection").then(|| collection_row(v).phase),
            state: v.state.clone(),
            output: v.output.clone(),
            children: v.children.iter().map(|c| c.0).collect(),
            recoveries: v.recoveries,
            history: v.history.iter().map(HistoryLine::from).collect(),
        }
    }
}

impl From<&HistoryEntry> for HistoryLine {
    fn from(h: &HistoryEntry) -> Self {
        HistoryLine {
            seq: h.seq,
            at: rfc3339(h.at),
            status: h.status.as_str(),
            attempt: h.attempt,
            event: describe(&h.event),
            detail: h.event.clone(),
        }
    }
}

/// A history event in words.
pub fn describe(e: &HistoryEvent) -> String {
    match e {
        HistoryEvent::Submitted => "submitted".into(),
        HistoryEvent::StepStarted { epoch } => format!("step started (lease {epoch})"),
        HistoryEvent::Advanced => "step done, next step queued".into(),
        HistoryEvent::Waiting { until_ms } => format!(
            "waiting until {}",
            rfc3339(SystemTime::UNIX_EPOCH + Duration::from_millis(*until_ms))
        ),
        HistoryEvent::SpawnedChildren { children } => {
            format!("started {} child job(s)", children.len())
        }
        HistoryEvent::ChildrenDone => "every child job ended".into(),
        HistoryEvent::RetryScheduled { error, delay_ms } => format!(
            "failed, retrying in {:.1} s: {error}",
            *delay_ms as f64 / 1000.0
        ),
        HistoryEvent::Succeeded => "succeeded".into(),
        HistoryEvent::PartiallyFailed { reason } => format!("partially failed: {reason}"),
        HistoryEvent::Failed { error } => format!("failed: {error}"),
        HistoryEvent::CancelRequested => "cancellation requested".into(),
        HistoryEvent::Cancelled => "cancelled".into(),
        HistoryEvent::Recovered { recoveries } => {
            format!("resumed after the process died mid-step (recovery {recoveries})")
        }
        HistoryEvent::Restarted => "restarted by retry".into(),
        HistoryEvent::Woken => "woken early (what it waited for is free)".into(),
    }
}

/// Prints `show`'s text: the snapshot, then the job and its history.
pub fn print(result: &ShowOutput, out: &Output) {
    if let Some(s) = &result.snapshot {
        let m = s.manifest();
        out.text(&format!("snapshot {}", s.id()));
        out.text(&format!(
            "  app {}  env {}  collection {}\n  export job {}  records {}  size {} (stored {})\n  sha256 {}\n  time {}\n  data {}\n  manifest {}",
            m.appid,
            m.env,
            m.collection,
            m.export_job_id,
            m.records,
            human_bytes(m.bytes_raw),
            human_bytes(m.bytes_stored),
            m.sha256_raw,
            s.time_text(),
            s.entry.data_path.display(),
            s.entry.manifest_path.display()
        ));
        if let Some(status) = &result.snapshot_status {
            print_snapshot_status(s, status, out);
        }
    }
    if let Some(j) = &result.job {
        out.text(&format!(
            "job {} ({}) {}: {}",
            j.job.id, j.job.kind, j.job.label, j.job.status
        ));
        if let Some(e) = &j.job.last_error {
            out.text(&format!("  last error: {e}"));
        }
        if let Some(phase) = &j.phase {
            out.text(&format!("  phase: {phase}"));
        }
        if !j.children.is_empty() {
            out.text(&format!("  {} child job(s)", j.children.len()));
        }
        out.text("  history:");
        for h in &j.history {
            out.text(&format!(
                "    {:>3} {} {:<20} {}",
                h.seq, h.at, h.status, h.event
            ));
        }
    }
}

/// The lines about a snapshot's data file sharing, copies and verification.
fn print_snapshot_status(s: &SnapshotRecord, status: &SnapshotStatus, out: &Output) {
    if let Some(owner) = &s.manifest().data_reused_from {
        out.text(&format!(
            "  unchanged since the previous snapshot: shares the data file of {owner}"
        ));
    }
    out.text(&format!(
        "  copies {}\n  last verified {}  data read {}\n  last test restore {}",
        status.copies_text(),
        status.verified_text(),
        status.data_read_text(),
        status.test_restored_text()
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_reads_as_words_not_as_a_record() {
        let events = [
            HistoryEvent::Submitted,
            HistoryEvent::StepStarted { epoch: 2 },
            HistoryEvent::Waiting { until_ms: 0 },
            HistoryEvent::RetryScheduled {
                error: "boom".into(),
                delay_ms: 1500,
            },
            HistoryEvent::PartiallyFailed {
                reason: "1 of 2".into(),
            },
            HistoryEvent::Woken,
        ];
        let text: Vec<String> = events.iter().map(describe).collect();
        assert_eq!(text[2], "waiting until 1970-01-01T00:00:00Z");
        assert_eq!(text[3], "failed, retrying in 1.5 s: boom");
        for t in &text {
            assert!(!t.contains('{') && !t.contains("type"), "{t}");
        }
    }
}
