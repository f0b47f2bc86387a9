//! Asynchronous migrate jobs (reference §2–§4, §12.C): export `waiting → reading → writing →
//! success`, import `waiting → migrating → success`, each phase lasting `base + per_record × n`
//! virtual seconds; scripted `fail` and stuck jobs. A job's heavy work (writing the export file,
//! parsing the import file) is "prepared" outside the world lock; the job is finalised (file
//! registered in storage, import applied) the first time the world is ticked after its end.

use std::path::PathBuf;

use serde::Serialize;
use serde_json::Value;

use super::config::{JobTiming, UpsertMode};
use super::formats::FileType;
use super::store::{normalize_id, Collection, InsertError};

#[derive(Clone, Debug, PartialEq)]
pub enum JobKind {
    Export {
        collection: String,
        file_path: String,
        file_type: FileType,
    },
    Import {
        collection: String,
        file_path: String,
        file_type: FileType,
        stop_on_error: bool,
        upsert: bool,
    },
}

/// What a fault or the test scripted for the job.
#[derive(Clone, Debug, PartialEq)]
pub enum JobScript {
    Normal,
    Stuck,
    Fail(String),
}

/// Result of the out-of-lock work.
#[derive(Clone, Debug)]
pub enum Prepared {
    ExportFile {
        blob: PathBuf,
        size: u64,
        records: u64,
    },
    ImportRecords(Vec<Result<Value, String>>),
    Failed(String),
}

/// Final state of a finished job.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Outcome {
    pub success: bool,
    pub record_success: u64,
    pub record_fail: u64,
    pub message: String,
}

#[derive(Clone, Debug)]
pub struct Job {
    pub id: u64,
    pub kind: JobKind,
    pub created_at: f64,
    pub script: JobScript,
    /// Records the job works on (drives the durations).
    pub records: u64,
    pub prepared: Option<Prepared>,
    pub outcome: Option<Outcome>,
    /// Blob and size of a successful export.
    pub export_file: Option<(PathBuf, u64)>,
    /// When the job reached its terminal state (virtual time).
    pub finished_at: Option<f64>,
}

/// Where a job stands at a given instant.
#[derive(Clone, Debug, PartialEq)]
pub enum Progress {
    Running(&'static str),
    /// Its time is up; finalise it (if prepared).
    Due,
    Done,
}

impl Job {
    pub fn new(id: u64, kind: JobKind, created_at: f64, script: JobScript, records: u64) -> Self {
        Job {
            id,
            kind,
            created_at,
            script,
            records,
            prepared: None,
            outcome: None,
            export_file: None,
            finished_at: None,
        }
    }

    pub fn is_export(&self) -> bool {
        matches!(self.kind, JobKind::Export { .. })
    }

    fn phases(&self, t: &JobTiming) -> Vec<(&'static str, f64)> {
        let per = t.per_record_secs * self.records as f64;
        match self.kind {
            JobKind::Export { .. } => vec![
                ("waiting", t.waiting_secs),
                ("reading", t.reading_base_secs + per),
                ("writing", t.writing_base_secs + per),
            ],
            JobKind::Import { .. } => vec![
                ("waiting", t.waiting_secs),
                ("migrating", t.migrating_base_secs + per),
            ],
        }
    }

    pub fn progress(&self, now: f64, timing: &JobTiming) -> Progress {
        if self.outcome.is_some() {
            return Progress::Done;
        }
        if self.script == JobScript::Stuck {
            return Progress::Running("waiting");
        }
        let mut elapsed = now - self.created_at;
        let phases = self.phases(timing);
        for (name, dur) in &phases {
            if elapsed < *dur {
                return Progress::Running(name);
            }
            elapsed -= dur;
        }
        if self.prepared.is_none() {
            // Background work still running: stay in the last phase.
            return Progress::Running(phases.last().map_or("waiting", |(n, _)| n));
        }
        Progress::Due
    }

    /// Status string reported by `databasemigratequeryinfo`.
    pub fn status(&self, now: f64, timing: &JobTiming) -> &'static str {
        match (&self.outcome, self.progress(now, timing)) {
            (Some(o), _) => {
                if o.success {
                    "success"
                } else {
                    "fail"
                }
            }
            (None, Progress::Running(s)) => s,
            (None, _) => "writing",
        }
    }
}

/// Apply parsed import records to a collection with the INSERT/UPSERT rules.
pub fn apply_import(
    coll: &mut Collection,
    records: Vec<Result<Value, String>>,
    upsert: bool,
    upsert_mode: UpsertMode,
    stop_on_error: bool,
) -> Outcome {
    let (mut ok, mut failed) = (0u64, 0u64);
    let mut first_error: Option<String> = None;
    for (i, rec) in records.into_iter().enumerate() {
        let result = rec.and_then(|doc| import_one(coll, doc, upsert, upsert_mode));
        match result {
            Ok(()) => ok += 1,
            Err(e) => {
                failed += 1;
                if first_error.is_none() {
                    first_error = Some(format!("record {}: {e}", i + 1));
                }
                if stop_on_error {
                    return Outcome {
                        success: false,
                        record_success: ok,
                        record_fail: failed,
                        message: format!(
                            "import stopped at the first error: {}",
                            first_error.unwrap_or_default()
                        ),
                    };
                }
            }
        }
    }
    Outcome {
        success: true,
        record_success: ok,
        record_fail: failed,
        message: match first_error {
            None => "导入完成.".to_string(),
            Some(e) => format!("导入完成. {failed} records failed, first: {e}"),
        },
    }
}

fn import_one(
    coll: &mut Collection,
    mut doc: Value,
    upsert: bool,
    mode: UpsertMode,
) -> Result<(), String> {
    let id = normalize_id(&mut doc).map_err(|e| e.to_string())?;
    if !upsert {
        return coll.insert(doc).map(|_| ()).map_err(|e| match e {
            InsertError::Duplicate(id) => format!("duplicate _id {id:?}"),
            other => other.to_string(),
        });
    }
    let merged = match (mode, coll.get(&id)) {
        (UpsertMode::Merge, Some(existing)) => {
            let mut base = (**existing).clone();
            if let (Value::Object(b), Value::Object(new)) = (&mut base, doc) {
                for (k, v) in new {
                    b.insert(k, v);
                }
            }
            base
        }
        _ => doc,
    };
    coll.put(merged).map(|_| ()).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn export_job(records: u64) -> Job {
        Job::new(
            1,
            JobKind::Export {
                collection: "c".into(),
                file_path: "f".into(),
                file_type: FileType::Json,
            },
            100.0,
            JobScript::Normal,
            records,
        )
    }

    #[test]
    fn phases_scale_with_size() {
        let t = JobTiming {
            waiting_secs: 1.0,
            reading_base_secs: 1.0,
            writing_base_secs: 1.0,
            migrating_base_secs: 1.0,
            per_record_secs: 0.01,
        };
        let mut j = export_job(1000);
        assert_eq!(j.status(100.5, &t), "waiting");
        assert_eq!(j.status(105.0, &t), "reading");
        assert_eq!(j.status(115.0, &t), "writing");
        assert_eq!(j.progress(125.0, &t), Progress::Running("writing"));
        j.prepared = Some(Prepared::Failed("x".into()));
        assert_eq!(j.progress(125.0, &t), Progress::Due);
        j.script = JobScript::Stuck;
        assert_eq!(j.status(1e9, &t), "waiting");
    }

    #[test]
    fn insert_vs_upsert() {
        let mut c = Collection::default();
        c.insert(json!({"_id":"a","x":1,"keep":true}))
            .unwrap_or_default();
        let recs = || {
            vec![
                Ok(json!({"_id":"a","x":2})),
                Ok(json!({"_id":"b"})),
                Err("bad".to_string()),
            ]
        };
        let o = apply_import(&mut c, recs(), false, UpsertMode::Replace, false);
        assert_eq!((o.success, o.record_success, o.record_fail), (true, 1, 2));
        let o = apply_import(&mut c, recs(), true, UpsertMode::Merge, false);
        assert_eq!((o.record_success, o.record_fail), (2, 1));
        assert_eq!(c.get("a").map(|d| d["keep"].clone()), Some(json!(true)));
        let o = apply_import(&mut c, recs(), true, UpsertMode::Replace, false);
        assert_eq!(o.record_success, 2);
        assert_eq!(c.get("a").map(|d| d.get("keep").is_none()), Some(true));
        let o = apply_import(
            &mut c,
            vec![Err("bad".into()), Ok(json!({"_id":"z"}))],
            false,
            UpsertMode::Replace,
            true,
        );
        assert_eq!((o.success, o.record_success, o.record_fail), (false, 0, 1));
        assert!(!c.contains("z"));
    }
}
