//! Fan-out: N collections whose exports take D each, backed up in one run at concurrency C.
//! Wall time is compared with the ideal ceil(N/C) × D (what a perfect scheduler needs if C
//! exports may be in flight) and with backing the collections up one by one, the way the
//! original cloud function did (estimated from a smaller sample run one collection at a time).

use std::time::Duration;

use crate::backup::RunSelection;

use super::harness::{everything, small_docs, timing_for, Harness, HarnessSpec, TimeMode};
use super::report::{Figure, LimitOp, ScenarioReport};
use super::scenario::{BenchError, BenchOptions};

#[derive(Debug, Clone)]
pub struct FanoutParams {
    pub collections: usize,
    pub concurrency: usize,
    pub export: Duration,
    pub time_scale: f64,
    pub sequential_sample: usize,
}

impl FanoutParams {
    pub fn from_options(o: &BenchOptions) -> Self {
        FanoutParams {
            collections: o.fanout_collections.max(1),
            concurrency: o.fanout_concurrency.max(1),
            export: o.fanout_export,
            time_scale: o.fanout_time_scale,
            sequential_sample: o.sequential_sample.max(1),
        }
    }

    pub fn smoke() -> Self {
        FanoutParams {
            collections: 6,
            concurrency: 3,
            export: Duration::from_secs(2),
            time_scale: 20.0,
            sequential_sample: 2,
        }
    }
}

const STATUS_ENDPOINT: &str = "databasemigratequeryinfo";

pub async fn run(p: &FanoutParams) -> Result<ScenarioReport, BenchError> {
    let d = p.export.as_secs_f64();
    let mut rep = ScenarioReport::new(
        "fanout",
        format!(
            "{} collections x {d} s exports at concurrency {} (time scale {}x)",
            p.collections, p.concurrency, p.time_scale
        ),
    );
    let spec = HarnessSpec::single(
        "fanout",
        TimeMode::Scaled(p.time_scale),
        timing_for(p.export),
        p.concurrency,
    );
    let env = spec.apps[0].1[0].clone();
    let h = Harness::start(&spec).await?;
    for i in 0..p.collections {
        let name = format!("c{i:03}");
        h.control()
            .insert_documents(&env, &name, small_docs(&name, 20))
            .map_err(|e| BenchError::Setup(format!("seeding {env}/{name}: {e}")))?;
    }
    let outcome = h.run(everything()).await?;
    let status_calls = h.control().calls(STATUS_ENDPOINT);
    let tokens = h.token_fetches();
    h.shutdown().await;

    let waves = p.collections.div_ceil(p.concurrency) as f64;
    let ideal = waves * d;
    let wall = outcome.virtual_wall.as_secs_f64();
    rep.push(Figure::limited(
        "wall time",
        wall,
        "s",
        LimitOp::Le,
        1.15 * ideal,
        format!(
            "issue 4: 1.15 x ideal ceil({}/{}) x {d} s = {ideal} s",
            p.collections, p.concurrency
        ),
    ));
    rep.push(Figure::info("wall time / ideal", wall / ideal, "x"));
    let peak = outcome.peak_in_flight;
    let mut in_flight = Figure::info("exports in flight (peak)", peak as f64, "");
    if peak > p.concurrency {
        in_flight = in_flight.with_note(format!(
            "more than C={}: the concurrency setting bounds running steps, not exports waiting \
             on the platform, so the ideal's premise (at most C exports in flight) does not hold",
            p.concurrency
        ));
    }
    rep.push(in_flight);
    rep.push(Figure::info(
        "status calls per export",
        status_calls as f64 / p.collections as f64,
        "",
    ));
    rep.push(Figure::limited(
        "token calls (run)",
        tokens as f64,
        "",
        LimitOp::Le,
        1.0,
        "issue 4: one token call per run",
    ));

    // One by one: a fresh setup, each collection its own run, strictly after the previous.
    let seq_spec = HarnessSpec::single(
        "fanout-seq",
        TimeMode::Scaled(p.time_scale),
        timing_for(p.export),
        1,
    );
    let seq_env = seq_spec.apps[0].1[0].clone();
    let hs = Harness::start(&seq_spec).await?;
    let n = p.sequential_sample.min(p.collections);
    for i in 0..n {
        let name = format!("c{i:03}");
        hs.control()
            .insert_documents(&seq_env, &name, small_docs(&name, 20))
            .map_err(|e| BenchError::Setup(format!("seeding {seq_env}/{name}: {e}")))?;
    }
    let mut seq_total = 0.0;
    for i in 0..n {
        let o = hs
            .run(RunSelection {
                envs: vec![],
                collections: vec![format!("c{i:03}")],
            })
            .await?;
        seq_total += o.virtual_wall.as_secs_f64();
    }
    hs.shutdown().await;
    let per = seq_total / n as f64;
    let one_by_one = per * p.collections as f64;
    rep.push(
        Figure::info("one-by-one (estimated)", one_by_one, "s").with_note(format!(
            "{n} collections backed up one run at a time took {per:.2} s each; x {}",
            p.collections
        )),
    );
    rep.push(Figure::info(
        "speed-up vs one-by-one",
        one_by_one / wall.max(1e-9),
        "x",
    ));
    rep.note(format!(
        "times are virtual seconds of the emulator clock running at {}x real time; real \
         overheads count {}x, so a pass here is a pass at 1x",
        p.time_scale, p.time_scale
    ));
    if !outcome.problems.is_empty() {
        rep.note(format!(
            "{} step problems were retried, e.g. {}",
            outcome.problems.len(),
            outcome.problems[0]
        ));
    }
    Ok(rep)
}
