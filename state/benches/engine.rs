//! `cargo bench -p tcb-state`: durable transitions/s, resume time with 10,000 in-flight jobs,
//! and raw sled insert+flush/s for comparison. Prints figures; asserts nothing.

use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use tcb_state::*;

/// Counts down: one durable transition per step.
struct Countdown;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Left(u32);

impl Workflow for Countdown {
    type State = Left;
    const KIND: &'static str = "countdown";
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

/// Raw sled: ops/s, and the median / worst single insert+flush latency (fsync stalls caused by
/// other processes' disk writes show up in the worst case).
fn raw_sled(dir: &std::path::Path, n: usize) -> (f64, Duration, Duration) {
    let db = sled::open(dir.join("raw")).expect("open raw sled");
    let tree = db.open_tree("t").expect("tree");
    let value = vec![7u8; 300];
    let mut lat = Vec::with_capacity(n);
    let start = Instant::now();
    for i in 0..n as u64 {
        let t = Instant::now();
        tree.insert(i.to_be_bytes(), value.clone()).expect("insert");
        db.flush().expect("flush");
        lat.push(t.elapsed());
    }
    let ops = n as f64 / start.elapsed().as_secs_f64();
    lat.sort();
    (ops, lat[lat.len() / 2], lat[lat.len() - 1])
}

async fn transitions(
    dir: &std::path::Path,
    run: u32,
    jobs: u32,
    steps: u32,
    concurrency: usize,
) -> f64 {
    let engine = Engine::open(
        &dir.join(format!("tx-{concurrency}-{run}")),
        EngineOptions {
            global_concurrency: concurrency,
            ..Default::default()
        },
    )
    .expect("open engine");
    engine.register(Countdown, KindLimits::default());
    for _ in 0..jobs {
        engine
            .submit::<Countdown>(Left(steps), SubmitOptions::default())
            .expect("submit");
    }
    let start = Instant::now();
    engine.run_until_idle().await.expect("run");
    let secs = start.elapsed().as_secs_f64();
    f64::from(jobs * steps) / secs
}

async fn resume(dir: &std::path::Path, in_flight: u64, finished: u64) -> (Duration, Duration) {
    let path = dir.to_path_buf();
    {
        let store = SledJobStore::open(&path).expect("open store");
        let now = SystemTime::now();
        let mk = |steps: u32, due_at: SystemTime| NewJob {
            kind: "countdown".into(),
            schema_version: 1,
            state: serde_json::to_value(Left(steps)).expect("state"),
            label: "bench".into(),
            parent: None,
            dedupe_key: None,
            due_at,
        };
        for _ in 0..finished {
            let (id, _) = store.submit(mk(1, now), now).expect("submit");
            let (rec, _) = store
                .claim(id, 1, now, now + Duration::from_secs(60))
                .expect("claim")
                .expect("claimable");
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
                .expect("commit");
        }
        for i in 0..in_flight {
            // A mix: most queued, some polling an hour out, some left Running by the "crash".
            let due = if i % 3 == 0 {
                now + Duration::from_secs(3600)
            } else {
                now
            };
            let (id, _) = store.submit(mk(3, due), now).expect("submit");
            if i % 10 == 0 {
                store
                    .claim(id, 1, now + Duration::from_secs(7200), now)
                    .expect("claim");
            }
        }
    }
    let start = Instant::now();
    let engine = Engine::open(&path, EngineOptions::default()).expect("reopen");
    let open = start.elapsed();
    let mut events = engine.subscribe();
    engine.register(Countdown, KindLimits::default());
    let runner = {
        let engine = engine.clone();
        tokio::spawn(async move {
            engine
                .run(async {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                })
                .await
        })
    };
    let first_step = loop {
        match events.recv().await {
            Ok(ev) if matches!(ev.entry.event, HistoryEvent::StepStarted { .. }) => {
                break start.elapsed()
            }
            Ok(_) => {}
            Err(e) => panic!("events: {e}"),
        }
    };
    runner.abort();
    (open, first_step)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

const RUNS: u32 = 3;

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    println!("tcb-state engine benchmark: median of {RUNS} runs each");
    let raws: Vec<(f64, Duration, Duration)> = (0..RUNS)
        .map(|r| raw_sled(&dir.path().join(format!("raw-{r}")), 2000))
        .collect();
    let raw = median(raws.iter().map(|r| r.0).collect());
    let p50 = median(raws.iter().map(|r| r.1.as_secs_f64() * 1e3).collect());
    let worst = raws
        .iter()
        .map(|r| r.2.as_secs_f64() * 1e3)
        .fold(0.0, f64::max);
    println!(
        "raw sled insert+flush:             {raw:>8.0} ops/s  (one 300-byte insert, then flush; median {p50:.2} ms, worst {worst:.1} ms)"
    );
    // `cargo bench -p tcb-state -- transitions` runs only this part, printing every run.
    let only_transitions = std::env::args().any(|a| a == "transitions");
    for c in [1usize, 4, 8, 32] {
        let mut runs = Vec::new();
        for r in 0..RUNS {
            runs.push(transitions(dir.path(), r, 200, 10, c).await);
        }
        if only_transitions {
            println!("  runs: {runs:.0?}");
        }
        let tps = median(runs);
        println!(
            "durable transitions, concurrency {c:>2}: {tps:>8.0} /s  (200 jobs x 10 steps, each step committed + flushed)"
        );
    }
    if only_transitions {
        return;
    }
    let mut opens = Vec::new();
    let mut firsts = Vec::new();
    for r in 0..RUNS {
        let (open, first) = resume(&dir.path().join(format!("resume-{r}")), 10_000, 10_000).await;
        opens.push(open.as_secs_f64());
        firsts.push(first.as_secs_f64());
    }
    println!(
        "resume with 10,000 in-flight jobs:  open + crash recovery {:.3} s, first step started at {:.3} s  (store also holds 10,000 finished jobs; 1,000 were left Running)",
        median(opens),
        median(firsts)
    );
}
