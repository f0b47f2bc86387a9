//! Polling cost vs promptness: for exports from 1 s to 10 min, the status calls the workflow
//! makes and how late it notices completion (detection lag, as a share of the duration), first
//! with no history, then with the earlier export of the same collection in the catalog.
//!
//! Runs the real workflow against the emulator on a virtual clock that the engine advances when
//! idle: exact, deterministic, and a 10-minute export costs milliseconds.

use std::time::Duration;

use super::harness::{everything, small_docs, timing_for, Harness, HarnessSpec, TimeMode};
use super::report::{Figure, LimitOp, ScenarioReport};
use super::scenario::BenchError;

const STATUS_ENDPOINT: &str = "databasemigratequeryinfo";

#[derive(Debug, Clone)]
pub struct PollingParams {
    pub durations: Vec<Duration>,
}

impl PollingParams {
    pub fn full() -> Self {
        PollingParams {
            durations: [1, 10, 60, 300, 600]
                .into_iter()
                .map(Duration::from_secs)
                .collect(),
        }
    }

    pub fn smoke() -> Self {
        PollingParams {
            durations: vec![Duration::from_secs(60)],
        }
    }
}

/// Status calls and lag of one export.
#[derive(Debug, Clone, Copy)]
pub struct PollSample {
    pub status_calls: u64,
    /// (detected − created − duration) / duration.
    pub lag: f64,
}

pub async fn run(p: &PollingParams) -> Result<ScenarioReport, BenchError> {
    let mut rep = ScenarioReport::new(
        "polling",
        "status calls and detection lag per export, default poll policy, virtual time",
    );
    for &d in &p.durations {
        let (cold, warm) = measure(d).await?;
        let label = human(d);
        let is_target = d == Duration::from_secs(60);
        let push = |rep: &mut ScenarioReport, what: &str, s: PollSample, calls: u64, lag: f64| {
            let calls_name = format!("{label} export, {what}: status calls");
            let lag_name = format!("{label} export, {what}: detection lag");
            if is_target {
                rep.push(Figure::limited(
                    calls_name,
                    s.status_calls as f64,
                    "",
                    LimitOp::Le,
                    calls as f64,
                    format!("issue 4, {what}"),
                ));
                rep.push(Figure::limited(
                    lag_name,
                    s.lag * 100.0,
                    "%",
                    LimitOp::Le,
                    lag * 100.0,
                    format!("issue 4, {what}"),
                ));
            } else {
                rep.push(Figure::info(calls_name, s.status_calls as f64, ""));
                rep.push(Figure::info(lag_name, s.lag * 100.0, "%"));
            }
        };
        push(&mut rep, "no history", cold, 16, 0.20);
        push(&mut rep, "with history", warm, 4, 0.10);
    }
    rep.note(
        "each export is the real backup.collection workflow against the emulator; the second \
         run of the same collection finds the first one's duration in the catalog",
    );
    rep.note("detection lag = time from the export's completion to the status call that saw it");
    Ok(rep)
}

/// Backs the same collection up twice; returns (no history, with history).
pub async fn measure(duration: Duration) -> Result<(PollSample, PollSample), BenchError> {
    let spec = HarnessSpec::single("polling", TimeMode::Virtual, timing_for(duration), 2);
    let env = spec.apps[0].1[0].clone();
    let h = Harness::start(&spec).await?;
    h.control()
        .insert_documents(&env, "orders", small_docs("orders", 20))
        .map_err(|e| BenchError::Setup(format!("seeding {env}/orders: {e}")))?;
    let first = sample(&h, duration).await?;
    let second = sample(&h, duration).await?;
    h.shutdown().await;
    Ok((first, second))
}

async fn sample(h: &Harness, duration: Duration) -> Result<PollSample, BenchError> {
    let before = h.control().calls(STATUS_ENDPOINT);
    let outcome = h.run(everything()).await?;
    let calls = h.control().calls(STATUS_ENDPOINT) - before;
    let e = outcome
        .exports
        .first()
        .ok_or_else(|| BenchError::Run("the polling run reported no export".into()))?;
    let took = e.detected.duration_since(e.created).unwrap_or_default();
    let lag = (took.as_secs_f64() - duration.as_secs_f64()) / duration.as_secs_f64();
    Ok(PollSample {
        status_calls: calls,
        lag,
    })
}

fn human(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 && s % 60 == 0 {
        format!("{} min", s / 60)
    } else {
        format!("{s} s")
    }
}
