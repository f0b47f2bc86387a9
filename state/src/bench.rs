//! The engine's benchmark workload, shared by `cargo bench -p tcb-state` and `tcb-backup bench`
//! so that both measure exactly the same thing: durable transitions per second of a workflow
//! with no side effect, and the time to resume a store holding many in-flight jobs.
//!
//! Nothing here asserts a figure; the callers print and judge them.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use crate::{
    Commit, Engine, EngineOptions, HistoryEvent, JobStore, KindLimits, NewJob, SledJobStore,
    StepContext, StepError, SubmitOptions, Transition, Workflow,
};

/// Counts down: one durable transition per step, no side effect.
pub struct Countdown;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Left(pub u32);

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

/// What went wrong while setting up or running the workload (not a slow figure: that is the
/// caller's judgement).
#[derive(Debug, thiserror::Error)]
#[error("engine benchmark, {what}: {message}")]
pub struct WorkloadError {
    what: &'static str,
    message: String,
}

impl WorkloadError {
    fn new(what: &'static str, message: impl std::fmt::Display) -> WorkloadError {
        WorkloadError {
            what,
            message: message.to_string(),
        }
    }
}

fn failed<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> WorkloadError {
    move |e| WorkloadError::new(what, e)
}

/// Durable transitions per second: `jobs` countdowns of `steps` steps each, run to the end in
/// a fresh store at `dir` with `concurrency` steps at once. Every step is committed and
/// flushed before the job's next one.
pub async fn transitions_per_second(
    dir: &Path,
    jobs: u32,
    steps: u32,
    concurrency: usize,
) -> Result<f64, WorkloadError> {
    let engine = Engine::open(
        dir,
        EngineOptions {
            global_concurrency: concurrency,
            ..EngineOptions::default()
        },
    )
    .map_err(failed("opening the store"))?;
    engine.register(Countdown, KindLimits::default());
    for _ in 0..jobs {
        engine
            .submit::<Countdown>(Left(steps), SubmitOptions::default())
            .map_err(failed("submitting a job"))?;
    }
    let start = Instant::now();
    engine
        .run_until_idle()
        .await
        .map_err(failed("running the jobs"))?;
    Ok(f64::from(jobs * steps) / start.elapsed().as_secs_f64().max(1e-9))
}

/// The times of one resume.
#[derive(Debug, Clone, Copy)]
pub struct ResumeTimes {
    /// Writing the store (setup, not part of the figure).
    pub seed: Duration,
    /// `Engine::open`, crash recovery included.
    pub open: Duration,
    /// From the start of `Engine::open` until the first step started.
    pub first_step: Duration,
}

/// Seeds a store at `dir` with `finished` finished jobs and `in_flight` unfinished ones (a
/// third waiting an hour out, a tenth left Running by a "crash", the rest queued), then
/// measures reopening it until the first step starts.
pub async fn resume(
    dir: &Path,
    in_flight: u64,
    finished: u64,
) -> Result<ResumeTimes, WorkloadError> {
    let seeding = Instant::now();
    {
        let store = SledJobStore::open(dir).map_err(failed("opening the store to seed"))?;
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
        let seed = failed("seeding the store");
        for _ in 0..finished {
            let (id, _) = store.submit(job(1, now), now).map_err(&seed)?;
            let Some((rec, _)) = store
                .claim(id, 1, now, now + Duration::from_secs(60))
                .map_err(&seed)?
            else {
                return Err(WorkloadError::new(
                    "seeding the store",
                    format!("job {id} not claimable"),
                ));
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
                .map_err(&seed)?;
        }
        for i in 0..in_flight {
            let due = if i % 3 == 0 {
                now + Duration::from_secs(3600)
            } else {
                now
            };
            let (id, _) = store.submit(job(3, due), now).map_err(&seed)?;
            if i % 10 == 0 {
                store
                    .claim(id, 1, now + Duration::from_secs(7200), now)
                    .map_err(&seed)?;
            }
        }
    }
    let seed = seeding.elapsed();

    let start = Instant::now();
    let engine =
        Engine::open(dir, EngineOptions::default()).map_err(failed("reopening the store"))?;
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
    const WAITING: &str = "waiting for the first step";
    let first_step = loop {
        match tokio::time::timeout(Duration::from_secs(30), events.recv()).await {
            Ok(Ok(ev)) if matches!(ev.entry.event, HistoryEvent::StepStarted { .. }) => {
                break Ok(start.elapsed());
            }
            Ok(Ok(_)) | Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => {}
            Ok(Err(e)) => break Err(WorkloadError::new(WAITING, e)),
            Err(_) => {
                break Err(WorkloadError::new(
                    WAITING,
                    "no step started within 30 s of resuming",
                ))
            }
        }
    };
    runner.abort();
    Ok(ResumeTimes {
        seed,
        open,
        first_step: first_step?,
    })
}
