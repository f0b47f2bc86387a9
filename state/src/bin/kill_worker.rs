//! Test helper for `tests/kill.rs`: runs a workload of many multi-step jobs against a state
//! directory until all are done. The test SIGKILLs it at random moments and restarts it; every
//! step appends "<job> <step>" to a side-effect log so the test can check at-least-once effects.
//!
//! Usage: tcb-state-kill-worker <state-dir> <effects-log> <jobs> <steps-per-job>
//!        tcb-state-kill-worker --hold <state-dir>   (opens the store, prints READY, waits)

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tcb_state::{
    Engine, EngineError, EngineOptions, KindLimits, RetryPolicy, StepContext, StepError,
    SubmitOptions, Transition, Workflow,
};

struct Steps {
    log: PathBuf,
    steps: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Progress {
    done: u32,
}

impl Workflow for Steps {
    type State = Progress;
    const KIND: &'static str = "kill-test";
    const SCHEMA_VERSION: u32 = 1;

    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            initial_interval: Duration::from_millis(5),
            max_interval: Duration::from_millis(20),
            ..RetryPolicy::default()
        }
    }

    async fn step(&self, ctx: StepContext, s: Progress) -> Result<Transition<Progress>, StepError> {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let line = format!("{} {}\n", ctx.job_id, s.done);
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .and_then(|mut f| f.write_all(line.as_bytes()))
            .map_err(|e| StepError::retryable(format!("effects log: {e}")))?;
        let next = Progress { done: s.done + 1 };
        if next.done >= self.steps {
            Ok(Transition::Complete {
                state: next,
                output: serde_json::json!(self.steps),
            })
        } else {
            Ok(Transition::Next(next))
        }
    }
}

async fn run(args: &[String]) -> Result<(), String> {
    if let [flag, dir] = args {
        if flag == "--hold" {
            let _engine = Engine::open(std::path::Path::new(dir), EngineOptions::default())
                .map_err(|e| e.to_string())?;
            println!("READY");
            std::future::pending::<()>().await;
        }
    }
    let [dir, log, jobs, steps] = args else {
        return Err("usage: tcb-state-kill-worker <state-dir> <effects-log> <jobs> <steps>".into());
    };
    let jobs: u32 = jobs.parse().map_err(|e| format!("jobs: {e}"))?;
    let steps: u32 = steps.parse().map_err(|e| format!("steps: {e}"))?;
    // The previous (killed) process's lock is released by the kernel when it dies; a short
    // retry covers the moment between its death and the test starting us.
    let mut tries = 0;
    let engine = loop {
        match Engine::open(
            std::path::Path::new(dir),
            EngineOptions {
                global_concurrency: 4,
                // This test is about exactly-once completion, not the crash-loop cap: random
                // kills may hit one job's step several times in a row.
                max_recoveries: 1000,
                ..Default::default()
            },
        ) {
            Ok(e) => break e,
            Err(EngineError::Locked { .. }) if tries < 200 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => return Err(e.to_string()),
        }
    };
    engine.register(
        Steps {
            log: PathBuf::from(log),
            steps,
        },
        KindLimits::default(),
    );
    // Idempotent across restarts thanks to the dedupe keys.
    for i in 0..jobs {
        engine
            .submit::<Steps>(
                Progress { done: 0 },
                SubmitOptions {
                    label: format!("job-{i}"),
                    dedupe_key: Some(format!("job-{i}")),
                    ..Default::default()
                },
            )
            .map_err(|e| e.to_string())?;
    }
    println!("READY");
    engine.run_until_idle().await.map_err(|e| e.to_string())?;
    println!("DONE");
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kill worker: {e}");
            ExitCode::FAILURE
        }
    }
}
