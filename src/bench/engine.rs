//! Engine figures through tcb-state's public API (the engine's own `cargo bench -p tcb-state`
//! lives in a bench target the library cannot call, so this is a small equivalent): durable
//! transitions per second, and the time to resume a store holding many in-flight jobs.

use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use tcb_state::{
    Commit, Engine, EngineOptions, HistoryEvent, JobStore, KindLimits, NewJob, SledJobStore,
    StepContext, StepError, SubmitOptions, Transition, Workflow,
};

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

/// Counts down: one durable transition per step, no side effect.
struct Countdown;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Left(u32);

impl Workflow for Countdown {
    type State = Left;
    const KIND: &'static str = "bench.countdown";
    const SCHEMA_VERSION: u32 = 1;

    async fn step(&self, _ctx: StepContext, s: Left) -> Result<Transition<Left>, StepError> {
        if s.0 <= 1 {
            Ok(Transition::Complete {
                state: Left(0),
                output: serde_json::Value::Null,
            })
        } else {
            Ok(Transition::Next(Left(s.0 - 1)))
        }
    }
}

fn engine_err(what: &str) -> impl Fn(tcb_state::EngineError) -> BenchError + '_ {
    move |e| BenchError::Run(format!("engine {what}: {e}"))
}

pub async fn run(p: &EngineParams) -> Result<ScenarioReport, BenchError> {
    let mut rep = ScenarioReport::new(
        "engine",
        "durable transitions and resume time (tcb-state with sled)",
    );
    let scratch = ScratchDir::new("engine")
        .map_err(|e| BenchError::Setup(format!("scratch directory: {e}")))?;

    let engine = Engine::open(
        &scratch.path().join("tx"),
        EngineOptions {
            global_concurrency: p.concurrency,
            ..EngineOptions::default()
        },
    )
    .map_err(engine_err("open"))?;
    engine.register(Countdown, KindLimits::default());
    for _ in 0..p.jobs {
        engine
            .submit::<Countdown>(Left(p.steps), SubmitOptions::default())
            .map_err(engine_err("submit"))?;
    }
    let start = Instant::now();
    engine.run_until_idle().await.map_err(engine_err("run"))?;
    let tps = f64::from(p.jobs * p.steps) / start.elapsed().as_secs_f64().max(1e-9);
    drop(engine);
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

    let (seed, open, first) = resume(&scratch, p.in_flight, p.finished).await?;
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

/// Seeds a store with finished and in-flight jobs (some queued, some waiting an hour, some
/// left Running by a "crash"), then measures reopening it until the first step starts.
async fn resume(
    scratch: &ScratchDir,
    in_flight: u64,
    finished: u64,
) -> Result<(Duration, Duration, Duration), BenchError> {
    let path = scratch.path().join("resume");
    let store_err = |e: tcb_state::StoreError| BenchError::Run(format!("seeding the store: {e}"));
    let seeding = Instant::now();
    {
        let store = SledJobStore::open(&path).map_err(store_err)?;
        let now = SystemTime::now();
        let job = |steps: u32, due_at: SystemTime| NewJob {
            kind: Countdown::KIND.into(),
            schema_version: Countdown::SCHEMA_VERSION,
            state: serde_json::json!(steps),
            label: "bench".into(),
            parent: None,
            dedupe_key: None,
            due_at,
        };
        for _ in 0..finished {
            let (id, _) = store.submit(job(1, now), now).map_err(store_err)?;
            let Some((rec, _)) = store
                .claim(id, 1, now, now + Duration::from_secs(60))
                .map_err(store_err)?
            else {
                return Err(BenchError::Run(format!("job {id} not claimable")));
            };
            store
                .commit(
                    id,
                    rec.epoch,
                    Commit::Complete {
                        state: serde_json::json!(0),
                        output: serde_json::Value::Null,
                        partial: None,
                    },
                    now,
                )
                .map_err(store_err)?;
        }
        for i in 0..in_flight {
            let due = if i % 3 == 0 {
                now + Duration::from_secs(3600)
            } else {
                now
            };
            let (id, _) = store.submit(job(3, due), now).map_err(store_err)?;
            if i % 10 == 0 {
                store
                    .claim(id, 1, now + Duration::from_secs(7200), now)
                    .map_err(store_err)?;
            }
        }
    }
    let seed = seeding.elapsed();
    let start = Instant::now();
    let engine = Engine::open(&path, EngineOptions::default()).map_err(engine_err("reopen"))?;
    let open = start.elapsed();
    let mut events = engine.subscribe();
    engine.register(Countdown, KindLimits::default());
    let runner = {
        let engine = engine.clone();
        tokio::spawn(async move {
            engine
                .run(tokio::time::sleep(Duration::from_secs(30)))
                .await
        })
    };
    let first = loop {
        match tokio::time::timeout(Duration::from_secs(30), events.recv()).await {
            Ok(Ok(ev)) if matches!(ev.entry.event, HistoryEvent::StepStarted { .. }) => {
                break start.elapsed()
            }
            Ok(Ok(_)) | Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => {}
            Ok(Err(e)) => {
                runner.abort();
                return Err(BenchError::Run(format!("engine events: {e}")));
            }
            Err(_) => {
                runner.abort();
                return Err(BenchError::Run(
                    "no step started within 30 s of resuming".into(),
                ));
            }
        }
    };
    runner.abort();
    Ok((seed, open, first))
}
