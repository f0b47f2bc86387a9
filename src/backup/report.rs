//! The outcome of a run as the CLI shows it: one row per collection job, built from the
//! engine's job records (so a resumed run reports exactly like a fresh one).

use serde::Serialize;
use tcb_state::{Engine, EngineError, JobId, JobStatus, JobView};

use super::state::{CollectionOutput, CollectionSpec, CollectionState, Phase};

/// Serialises a status as the CLI shows it (`succeeded`, `partially-failed`, ...).
pub fn status_name<S: serde::Serializer>(status: &JobStatus, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(status.as_str())
}

/// One collection's line in the summary.
#[derive(Debug, Clone, Serialize)]
pub struct CollectionRow {
    pub job: u64,
    pub appid: String,
    pub env: String,
    pub collection: String,
    #[serde(serialize_with = "status_name")]
    pub status: JobStatus,
    /// Phase the job reached (`recorded` when done).
    pub phase: String,
    pub export_job_id: Option<u64>,
    pub records: Option<u64>,
    pub bytes: Option<u64>,
    pub bytes_stored: Option<u64>,
    pub snapshot_id: Option<String>,
    pub path: Option<String>,
    /// The snapshot whose data file this one shares (the export was unchanged).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_reused_from: Option<String>,
    pub seconds: f64,
    pub error: Option<String>,
}

/// A run's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub run: u64,
    #[serde(serialize_with = "status_name")]
    pub status: JobStatus,
    pub error: Option<String>,
    pub succeeded: usize,
    pub failed: usize,
    pub unfinished: usize,
    pub collections: Vec<CollectionRow>,
}

impl RunReport {
    pub fn all_succeeded(&self) -> bool {
        self.status == JobStatus::Succeeded && self.failed == 0 && self.unfinished == 0
    }
}

/// Builds the row of one `backup.collection` job from its view.
pub fn collection_row(view: &JobView) -> CollectionRow {
    let state: Option<CollectionState> = serde_json::from_value(view.state.clone()).ok();
    let output: Option<CollectionOutput> = view
        .output
        .as_ref()
        .and_then(|o| serde_json::from_value(o.clone()).ok());
    let (appid, env, collection) = match &state {
        Some(s) => (
            s.spec.target.appid.clone(),
            s.spec.target.env.clone(),
            s.spec.target.collection.clone(),
        ),
        None => (String::new(), String::new(), view.summary.label.clone()),
    };
    let (phase, export_job_id, file) = match &state {
        Some(s) => {
            let file = match &s.phase {
                Phase::Downloaded { file, .. } | Phase::Recorded { file, .. } => Some(file.clone()),
                _ => None,
            };
            (
                s.phase.name().to_string(),
                s.phase.export().map(|e| e.job_id),
                file,
            )
        }
        None => ("unknown".to_string(), None, None),
    };
    let seconds = view
        .summary
        .updated_at
        .duration_since(view.summary.created_at)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    CollectionRow {
        job: view.summary.id.0,
        appid,
        env,
        collection,
        status: view.summary.status,
        phase,
        export_job_id,
        records: file.as_ref().map(|f| f.records),
        bytes: file.as_ref().map(|f| f.bytes),
        bytes_stored: file.as_ref().map(|f| f.bytes_stored),
        snapshot_id: output.as_ref().map(|o| o.snapshot_id.clone()),
        path: output
            .as_ref()
            .map(|o| o.path.clone())
            .or_else(|| file.as_ref().map(|f| f.path.clone())),
        data_reused_from: output.as_ref().and_then(|o| o.data_reused_from.clone()),
        seconds,
        error: if view.summary.status == JobStatus::Succeeded {
            None
        } else {
            view.summary.last_error.clone()
        },
    }
}

/// The report of run `run`, reading every child's record.
pub fn run_report(engine: &Engine, run: JobId) -> Result<RunReport, EngineError> {
    let view = engine.job(run)?.ok_or(EngineError::NotFound(run))?;
    // The run's state lists its targets in the order its children were spawned: a child whose
    // record is gone (quarantined as undecodable) is still reported, as failed.
    let targets: Vec<CollectionSpec> = view
        .state
        .get("targets")
        .cloned()
        .and_then(|t| serde_json::from_value(t).ok())
        .unwrap_or_default();
    let quarantined = engine.quarantined()?;
    let mut rows = Vec::new();
    for (i, child) in view.children.iter().enumerate() {
        match engine.job(*child)? {
            Some(cv) => rows.push(collection_row(&cv)),
            None => {
                let reason = quarantined
                    .iter()
                    .find(|q| q.id == *child)
                    .map(|q| format!("job record quarantined: {}", q.reason))
                    .unwrap_or_else(|| "job record missing from the state store".to_string());
                let target = targets.get(i).map(|t| t.target.clone());
                rows.push(CollectionRow {
                    job: child.0,
                    appid: target.as_ref().map(|t| t.appid.clone()).unwrap_or_default(),
                    env: target.as_ref().map(|t| t.env.clone()).unwrap_or_default(),
                    collection: target.map(|t| t.collection).unwrap_or_default(),
                    status: JobStatus::Failed,
                    phase: "unknown".to_string(),
                    export_job_id: None,
                    records: None,
                    bytes: None,
                    bytes_stored: None,
                    snapshot_id: None,
                    path: None,
                    data_reused_from: None,
                    seconds: 0.0,
                    error: Some(reason),
                });
            }
        }
    }
    rows.sort_by(|a, b| (&a.appid, &a.env, &a.collection).cmp(&(&b.appid, &b.env, &b.collection)));
    let succeeded = rows
        .iter()
        .filter(|r| r.status == JobStatus::Succeeded)
        .count();
    let unfinished = rows.iter().filter(|r| !r.status.is_terminal()).count();
    let mut failed = rows.len() - succeeded - unfinished;
    // Discovery problems (an env that could not be listed) count as failures too.
    if let Some(problems) = view
        .state
        .get("problems")
        .and_then(|p| p.as_array())
        .map(|p| p.len())
    {
        failed += problems;
    }
    Ok(RunReport {
        run: run.0,
        status: view.summary.status,
        error: view.summary.last_error.clone(),
        succeeded,
        failed,
        unfinished,
        collections: rows,
    })
}
