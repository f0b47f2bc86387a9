//! Engine figures: the workload of `cargo bench -p tcb-state` (`tcb_state::bench`) at the
//! scenario's size, judged against issue 2's limits: durable transitions per second, and the
//! time to resume a store holding many in-flight jobs.

use tcb_state::bench;

use super::report::{Figure, LimitOp, ScenarioReport};
use super::scenario::BenchError;
use super::scratch::ScratchDir;

#[derive(Debug, Clone)]
pub struct EngineParams {
    pub jobs: u32,
    pub steps: u32,
    pub concurrency: usize,
    pub in_flight: u64,
    pub finished: u64,
}

impl EngineParams {
    pub fn full() -> Self {
        EngineParams {
            jobs: 200,
            steps: 10,
            concurrency: 8,
            in_flight: 10_000,
            finished: 10_000,
        }
    }

    pub fn smoke() -> Self {
        EngineParams {
            jobs: 10,
            steps: 5,
            concurrency: 4,
            in_flight: 100,
            finished: 100,
        }
    }
}

fn workload_err(e: bench::WorkloadError) -> BenchError {
    BenchError::Run(e.to_string())
}

pub async fn run(p: &EngineParams) -> Result<ScenarioReport, BenchError> {
    let mut rep = ScenarioReport::new(
        "engine",
        "durable transitions and resume time (tcb-state with sled)",
    );
    let scratch = ScratchDir::new("engine")
        .map_err(|e| BenchError::Setup(format!("scratch directory: {e}")))?;

    let tps =
        bench::transitions_per_second(&scratch.path().join("tx"), p.jobs, p.steps, p.concurrency)
            .await
            .map_err(workload_err)?;
    rep.push(
        Figure::limited(
            "durable transitions",
            tps,
            "/s",
            LimitOp::Ge,
            2000.0,
            "issue 2: >= 2,000 transitions/s",
        )
        .with_note(format!(
            "{} jobs x {} steps at concurrency {}; each step = claim + commit, each flushed",
            p.jobs, p.steps, p.concurrency
        )),
    );

    let times = bench::resume(&scratch.path().join("resume"), p.in_flight, p.finished)
        .await
        .map_err(workload_err)?;
    let (seed, open, first) = (times.seed, times.open, times.first_step);
    rep.push(
        Figure::limited(
            format!("resume {} in-flight jobs", p.in_flight),
            first.as_secs_f64(),
            "s",
            LimitOp::Le,
            1.0,
            "issue 2: resume of 10,000 in-flight jobs <= 1 s",
        )
        .with_note(format!(
            "open + recovery {:.3} s, first step started after {:.3} s; the store also holds {} finished jobs",
            open.as_secs_f64(),
            first.as_secs_f64(),
            p.finished
        )),
    );
    rep.push(Figure::info(
        "store seeding (setup)",
        seed.as_secs_f64(),
        "s",
    ));
    Ok(rep)
}
