//! Kill test: a real child process runs many multi-step jobs; it is SIGKILLed at random moments
//! (at least 20 times) and restarted; finally every job must have completed exactly once
//! according to its history, and every step's side effect must have happened at least once.

mod common;

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use tcb_state::{Engine, EngineError, EngineOptions, HistoryEvent, JobFilter, JobStatus};

const JOBS: u32 = 150;
const STEPS: u32 = 6;
const KILLS: u32 = 20;

fn worker(dir: &std::path::Path, log: &std::path::Path) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_tcb-state-kill-worker"))
        .arg(dir)
        .arg(log)
        .arg(JOBS.to_string())
        .arg(STEPS.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn worker")
}

#[test]
fn sigkilled_worker_completes_every_job_exactly_once() {
    let tmp = common::test_dir();
    let dir = tmp.path().join("state");
    let log = tmp.path().join("effects.log");
    let seed: u64 = rand::random();
    println!("kill test seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);

    let mut kills = 0;
    let mut lives = 0;
    while kills < KILLS {
        lives += 1;
        assert!(
            lives < 200,
            "work finished before {KILLS} kills; make the workload bigger"
        );
        let mut child = worker(&dir, &log);
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        out.read_line(&mut line).expect("read worker output");
        if line.trim() != "READY" {
            let status = child.wait().expect("wait");
            panic!("worker did not start: {line:?} ({status})");
        }
        // A random moment while it works.
        std::thread::sleep(Duration::from_millis(rng.gen_range(5..80)));
        if child.try_wait().expect("try_wait").is_none() {
            child.kill().expect("SIGKILL worker");
            kills += 1;
        }
        child.wait().expect("reap worker");
        if kills < KILLS && lives > KILLS * 3 {
            break;
        }
    }

    // A last, undisturbed run finishes the work.
    let mut child = worker(&dir, &log);
    let status = child.wait().expect("wait for final worker");
    assert!(status.success(), "final worker run failed: {status}");
    assert!(kills >= KILLS, "only {kills} kills landed");

    let engine = Engine::open(&dir, EngineOptions::default()).expect("open state");
    let jobs = engine.list(&JobFilter::default()).expect("list");
    assert_eq!(jobs.len(), JOBS as usize, "one job per dedupe key");
    let mut recovered = 0;
    for s in &jobs {
        let v = engine.job(s.id).expect("job").expect("exists");
        assert_eq!(
            v.status(),
            JobStatus::Succeeded,
            "{}: {:?}",
            s.label,
            v.history
        );
        let seqs: Vec<u64> = v.history.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, (0..v.history.len() as u64).collect::<Vec<_>>());
        let completions = v
            .history
            .iter()
            .filter(|e| e.event == HistoryEvent::Succeeded)
            .count();
        assert_eq!(completions, 1, "{} completed {completions} times", s.label);
        assert_eq!(
            v.history.last().map(|e| e.status),
            Some(JobStatus::Succeeded)
        );
        assert_eq!(v.state, serde_json::json!({"done": STEPS}));
        recovered += v
            .history
            .iter()
            .filter(|e| matches!(e.event, HistoryEvent::Recovered { .. }))
            .count();
    }
    println!("{kills} kills over {lives} lives; {recovered} mid-step recoveries");
    assert!(recovered > 0, "no kill ever landed mid-step");

    // Every step's side effect happened at least once (more than once is allowed: a step
    // interrupted by a kill runs again).
    let text = std::fs::read_to_string(&log).expect("effects log");
    let mut seen: HashMap<String, HashSet<u32>> = HashMap::new();
    for line in text.lines() {
        let mut parts = line.split(' ');
        if let (Some(id), Some(step)) = (parts.next(), parts.next()) {
            if let Ok(step) = step.parse::<u32>() {
                seen.entry(id.to_string()).or_default().insert(step);
            }
        }
    }
    for s in &jobs {
        let steps = seen.get(&s.id.to_string()).cloned().unwrap_or_default();
        assert_eq!(
            steps.len(),
            STEPS as usize,
            "{}: effects {steps:?}",
            s.label
        );
    }
}

#[test]
fn a_second_process_gets_locked_until_the_first_dies() {
    let tmp = common::test_dir();
    let dir = tmp.path().join("state");
    let mut holder = Command::new(env!("CARGO_BIN_EXE_tcb-state-kill-worker"))
        .arg("--hold")
        .arg(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn holder");
    let mut line = String::new();
    BufReader::new(holder.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read holder output");
    assert_eq!(line.trim(), "READY");
    match Engine::open(&dir, EngineOptions::default()) {
        Err(e @ EngineError::Locked { .. }) => {
            assert!(e.to_string().contains("locked by another process"), "{e}")
        }
        Err(e) => panic!("expected Locked, got {e}"),
        Ok(_) => panic!("opened a state directory another process holds"),
    }
    holder.kill().expect("SIGKILL holder");
    holder.wait().expect("reap holder");
    Engine::open(&dir, EngineOptions::default()).expect("the dead holder's lock is released");
}
