//! `cargo bench -p tcb-state`: durable transitions/s, resume time with 10,000 in-flight jobs,
//! and raw sled insert+flush/s for comparison. Prints figures; asserts nothing. The workload is
//! `tcb_state::bench`, which `tcb-backup bench` runs too.

use std::time::{Duration, Instant};

use tcb_state::bench;

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
            let store = dir.path().join(format!("tx-{c}-{r}"));
            runs.push(
                bench::transitions_per_second(&store, 200, 10, c)
                    .await
                    .expect("transitions"),
            );
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
        let times = bench::resume(&dir.path().join(format!("resume-{r}")), 10_000, 10_000)
            .await
            .expect("resume");
        opens.push(times.open.as_secs_f64());
        firsts.push(times.first_step.as_secs_f64());
    }
    println!(
        "resume with 10,000 in-flight jobs:  open + crash recovery {:.3} s, first step started at {:.3} s  (store also holds 10,000 finished jobs; 1,000 were left Running)",
        median(opens),
        median(firsts)
    );
}
