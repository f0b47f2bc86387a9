//! Durable scheduling against a real engine store, with instants passed in (no waiting):
//! catch-up after downtime (once, never a burst), misses beyond the window, no double run
//! across a restart (also when the process died between submit and bookkeeping), overlap skip
//! and queue-one, deterministic jitter.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tcb_backup::daemon::scheduler::{
    due, jitter_offset, to_ms, Fire, FireOutcome, Launcher, Scheduler, STATE_NAMESPACE,
};
use tcb_backup::daemon::settings::{OverlapPolicy, ScheduleSpec, ScheduleTask};
use tcb_backup::schedule::Schedule;
use tcb_state::{
    Engine, EngineError, EngineOptions, JobFilter, JobId, JobStatus, KindLimits, ManualClock,
    StepContext, StepError, SubmitOptions, Transition, Workflow,
};

/// A run that completes in one step.
#[derive(Clone)]
struct QuickRun;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct QuickState {
    schedule: String,
}

impl Workflow for QuickRun {
    type State = QuickState;
    const KIND: &'static str = "test.run";
    const SCHEMA_VERSION: u32 = 1;
    async fn step(
        &self,
        _ctx: StepContext,
        state: QuickState,
    ) -> Result<Transition<QuickState>, StepError> {
        Ok(Transition::Complete {
            state,
            output: serde_json::json!({}),
        })
    }
}

struct TestLauncher {
    /// Simulates a crash right after the submit (before the scheduler's bookkeeping).
    crash_after_submit: Arc<AtomicBool>,
}

impl Launcher for TestLauncher {
    fn launch(
        &self,
        engine: &Engine,
        spec: &ScheduleSpec,
        fire: &Fire,
    ) -> Result<JobId, EngineError> {
        let id = engine.submit::<QuickRun>(
            QuickState {
                schedule: spec.name.clone(),
            },
            SubmitOptions {
                label: fire.label.clone(),
                dedupe_key: Some(fire.dedupe_key.clone()),
                run_at: Some(fire.start_at),
                ..SubmitOptions::default()
            },
        )?;
        if self.crash_after_submit.load(Ordering::SeqCst) {
            return Err(EngineError::Locked {
                path: "simulated crash".into(),
            });
        }
        Ok(id)
    }
}

fn at(text: &str) -> SystemTime {
    let ts: jiff::Timestamp = text.parse().unwrap();
    SystemTime::try_from(ts).unwrap()
}

fn ms(text: &str) -> i64 {
    to_ms(at(text))
}

fn spec(overlap: OverlapPolicy) -> ScheduleSpec {
    ScheduleSpec {
        name: "nightly".to_string(),
        schedule: Schedule::new("0 0 2 * * * *", None).unwrap(),
        task: ScheduleTask::Backup,
        envs: vec![],
        collections: vec![],
        overlap,
        jitter: Duration::ZERO,
        catch_up_window: Duration::from_secs(12 * 3600),
    }
}

fn open(dir: &std::path::Path, now: SystemTime) -> Engine {
    let clock = ManualClock::auto_advancing(now);
    let engine = Engine::open(
        dir,
        EngineOptions {
            clock: Arc::new(clock),
            ..EngineOptions::default()
        },
    )
    .unwrap();
    engine.register(QuickRun, KindLimits::new(4));
    engine
}

fn scheduler(engine: &Engine, spec: ScheduleSpec) -> (Scheduler<TestLauncher>, Arc<AtomicBool>) {
    let crash = Arc::new(AtomicBool::new(false));
    (
        Scheduler::new(
            engine.clone(),
            vec![spec],
            TestLauncher {
                crash_after_submit: crash.clone(),
            },
        ),
        crash,
    )
}

fn runs(engine: &Engine) -> Vec<tcb_state::JobSummary> {
    engine
        .list(&JobFilter {
            kind: Some("test.run".to_string()),
            ..JobFilter::default()
        })
        .unwrap()
}

fn started(outcomes: &[FireOutcome]) -> Vec<i64> {
    outcomes
        .iter()
        .filter_map(|o| match o {
            FireOutcome::Started { nominal_ms, .. } => Some(*nominal_ms),
            _ => None,
        })
        .collect()
}

#[test]
fn first_sight_owes_nothing_then_fires_on_time() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path(), at("2026-12-03T01:00:00+08:00"));
    let (s, _) = scheduler(&engine, spec(OverlapPolicy::Skip));
    let (o, e) = s.tick(at("2026-12-03T01:00:00+08:00"));
    assert!(o.is_empty() && e.is_empty(), "{o:?} {e:?}");
    assert_eq!(
        s.next_wake(at("2026-12-03T01:00:00+08:00")),
        Some(at("2026-12-03T02:00:00+08:00"))
    );
    let (o, e) = s.tick(at("2026-12-03T02:00:00.250+08:00"));
    assert!(e.is_empty(), "{e:?}");
    assert_eq!(started(&o), [ms("2026-12-03T02:00:00+08:00")]);
    // A second tick in the same second does nothing.
    let (o, _) = s.tick(at("2026-12-03T02:00:01+08:00"));
    assert!(o.is_empty(), "{o:?}");
    assert_eq!(runs(&engine).len(), 1);
}

#[tokio::test]
async fn catch_up_after_downtime_runs_once_not_a_burst() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path(), at("2026-12-01T01:00:00+08:00"));
    let (s, _) = scheduler(&engine, spec(OverlapPolicy::Skip));
    s.tick(at("2026-12-01T01:00:00+08:00"));
    let (o, _) = s.tick(at("2026-12-01T02:00:00+08:00"));
    assert_eq!(started(&o).len(), 1);
    engine.run_until_idle().await.unwrap();
    drop(s);
    drop(engine);

    // Down from 1 Dec 03:00 until 3 Dec 09:00: 2 Dec 02:00 and 3 Dec 02:00 were missed.
    let engine = open(dir.path(), at("2026-12-03T09:00:00+08:00"));
    let (s, _) = scheduler(&engine, spec(OverlapPolicy::Skip));
    let (o, e) = s.tick(at("2026-12-03T09:00:00+08:00"));
    assert!(e.is_empty(), "{e:?}");
    assert_eq!(
        started(&o),
        [ms("2026-12-03T02:00:00+08:00")],
        "only the latest missed fire, once"
    );
    assert!(o.iter().any(|x| matches!(x,
        FireOutcome::Missed { first_missed_ms, .. } if *first_missed_ms == ms("2026-12-02T02:00:00+08:00"))));
    let (o, _) = s.tick(at("2026-12-03T09:00:05+08:00"));
    assert!(o.is_empty(), "{o:?}");
    assert_eq!(runs(&engine).len(), 2);
    let state = s.state("nightly").unwrap().unwrap();
    assert_eq!(state.missed, 1);
    assert_eq!(state.started, 2);
}

/// Downtime inside a long catch-up window: the latest fire runs once, and the earlier ones it
/// supersedes are reported (outcome, schedule state) rather than dropped silently.
#[tokio::test]
async fn catch_up_reports_the_fires_it_coalesces() {
    let dir = tempfile::tempdir().unwrap();
    let mut long_window = spec(OverlapPolicy::Skip);
    long_window.catch_up_window = Duration::from_secs(48 * 3600);
    let engine = open(dir.path(), at("2026-12-01T01:00:00+08:00"));
    let (s, _) = scheduler(&engine, long_window.clone());
    s.tick(at("2026-12-01T01:00:00+08:00"));
    assert_eq!(
        started(&s.tick(at("2026-12-01T02:00:00+08:00")).0),
        [ms("2026-12-01T02:00:00+08:00")]
    );
    engine.run_until_idle().await.unwrap();
    drop(s);
    drop(engine);

    // Down until 3 Dec 09:00: 2 Dec 02:00 and 3 Dec 02:00 are both inside the 48 h window.
    let engine = open(dir.path(), at("2026-12-03T09:00:00+08:00"));
    let (s, _) = scheduler(&engine, long_window);
    let (o, e) = s.tick(at("2026-12-03T09:00:00+08:00"));
    assert!(e.is_empty(), "{e:?}");
    assert_eq!(started(&o), [ms("2026-12-03T02:00:00+08:00")]);
    let coalesced: Vec<_> = o
        .iter()
        .filter(|x| matches!(x, FireOutcome::Coalesced { .. }))
        .collect();
    assert_eq!(
        coalesced,
        [&FireOutcome::Coalesced {
            schedule: "nightly".into(),
            count: 1,
            first_ms: ms("2026-12-02T02:00:00+08:00"),
            last_ms: ms("2026-12-02T02:00:00+08:00"),
            due_ms: ms("2026-12-03T02:00:00+08:00"),
        }]
    );
    assert_eq!(coalesced[0].kind(), "coalesced");
    assert_eq!(coalesced[0].fires(), 1);
    assert!(
        !o.iter().any(|x| matches!(x, FireOutcome::Missed { .. })),
        "{o:?}"
    );
    let state = s.state("nightly").unwrap().unwrap();
    assert_eq!((state.coalesced, state.missed, state.started), (1, 0, 2));
    // Reported once: the next tick has nothing to say.
    assert!(s.tick(at("2026-12-03T09:00:05+08:00")).0.is_empty());
}

/// Hand-worked: hourly, last dealt with 01:00, back at 09:30 with a 12 h window: 09:00 runs,
/// 02:00 … 08:00 (7 fire times) are coalesced into it.
#[test]
fn due_counts_every_coalesced_fire_time() {
    let mut hourly = spec(OverlapPolicy::Skip);
    hourly.schedule = Schedule::new("0 0 * * * * *", None).unwrap();
    let d = due(
        &hourly,
        ms("2026-12-03T01:00:00+08:00"),
        at("2026-12-03T09:30:00+08:00"),
    );
    assert_eq!(d.due_ms, Some(ms("2026-12-03T09:00:00+08:00")));
    let c = d.coalesced.unwrap();
    assert_eq!(c.count, 7);
    assert_eq!(c.first_ms, ms("2026-12-03T02:00:00+08:00"));
    assert_eq!(c.last_ms, ms("2026-12-03T08:00:00+08:00"));
    // On time: nothing coalesced.
    let d = due(
        &hourly,
        ms("2026-12-03T08:00:00+08:00"),
        at("2026-12-03T09:00:01+08:00"),
    );
    assert_eq!(d.due_ms, Some(ms("2026-12-03T09:00:00+08:00")));
    assert_eq!(d.coalesced, None);
}

#[test]
fn downtime_beyond_the_window_misses_and_waits_for_the_next_fire() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path(), at("2026-12-02T12:00:00+08:00"));
    let (s, _) = scheduler(&engine, spec(OverlapPolicy::Skip));
    s.tick(at("2026-12-02T12:00:00+08:00"));
    // 18 hours late: beyond the 12 h window.
    let (o, _) = s.tick(at("2026-12-03T20:00:00+08:00"));
    assert!(started(&o).is_empty(), "{o:?}");
    assert_eq!(o.len(), 1, "{o:?}");
    assert!(matches!(o.first(), Some(FireOutcome::Missed { .. })));
    let (o, _) = s.tick(at("2026-12-03T21:00:00+08:00"));
    assert!(o.is_empty(), "the miss is reported once: {o:?}");
    let (o, _) = s.tick(at("2026-12-04T02:00:00+08:00"));
    assert_eq!(started(&o), [ms("2026-12-04T02:00:00+08:00")]);
}

#[test]
fn restart_never_starts_a_run_twice() {
    let dir = tempfile::tempdir().unwrap();
    let now = at("2026-12-03T02:00:00+08:00");
    {
        let engine = open(dir.path(), now);
        let (s, _) = scheduler(&engine, spec(OverlapPolicy::Skip));
        s.tick(at("2026-12-03T01:59:00+08:00"));
        let (o, _) = s.tick(now);
        assert_eq!(started(&o).len(), 1);
    }
    // Restarted a few seconds later, the run still in progress (never driven here).
    let engine = open(dir.path(), now);
    let (s, _) = scheduler(&engine, spec(OverlapPolicy::Skip));
    let (o, e) = s.tick(at("2026-12-03T02:00:10+08:00"));
    assert!(o.is_empty() && e.is_empty(), "{o:?} {e:?}");
    assert_eq!(runs(&engine).len(), 1);
}

#[test]
fn crash_between_submit_and_bookkeeping_resubmits_the_same_run() {
    let dir = tempfile::tempdir().unwrap();
    let now = at("2026-12-03T02:00:00+08:00");
    let first_job;
    {
        let engine = open(dir.path(), now);
        let (s, crash) = scheduler(&engine, spec(OverlapPolicy::Skip));
        s.tick(at("2026-12-03T01:59:00+08:00"));
        crash.store(true, Ordering::SeqCst);
        let (o, e) = s.tick(now);
        assert!(o.is_empty());
        assert_eq!(e.len(), 1, "the simulated crash surfaces as an error");
        first_job = runs(&engine).first().unwrap().id;
        let state = s.state("nightly").unwrap().unwrap();
        assert_eq!(state.pending_ms, Some(to_ms(now)));
    }
    let engine = open(dir.path(), now);
    let (s, _) = scheduler(&engine, spec(OverlapPolicy::Skip));
    let (o, e) = s.tick(at("2026-12-03T02:00:20+08:00"));
    assert!(e.is_empty(), "{e:?}");
    assert!(matches!(o.as_slice(),
        [FireOutcome::Started { job, nominal_ms, .. }] if *job == first_job.0 && *nominal_ms == to_ms(now)));
    assert_eq!(runs(&engine).len(), 1, "same dedupe key, same job");
    let state = s.state("nightly").unwrap().unwrap();
    assert_eq!(state.pending_ms, None);
    assert_eq!(state.last_job, Some(first_job.0));
    assert_eq!(state.started, 1);
}

#[test]
fn overlap_skip_drops_the_fire_while_the_last_run_is_active() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path(), at("2026-12-03T01:00:00+08:00"));
    let mut hourly = spec(OverlapPolicy::Skip);
    hourly.schedule = Schedule::new("0 0 * * * * *", None).unwrap();
    let (s, _) = scheduler(&engine, hourly);
    s.tick(at("2026-12-03T01:30:00+08:00"));
    let (o, _) = s.tick(at("2026-12-03T02:00:00+08:00"));
    let first = started(&o);
    assert_eq!(first.len(), 1);
    // The engine never ran it: still queued, i.e. active.
    let (o, _) = s.tick(at("2026-12-03T03:00:00+08:00"));
    assert!(
        matches!(o.as_slice(), [FireOutcome::SkippedOverlap { nominal_ms, .. }] if *nominal_ms == ms("2026-12-03T03:00:00+08:00")),
        "{o:?}"
    );
    assert_eq!(runs(&engine).len(), 1);
    assert_eq!(s.state("nightly").unwrap().unwrap().skipped_overlap, 1);
}

#[tokio::test]
async fn overlap_queue_starts_one_pending_fire_after_the_active_run() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path(), at("2026-12-03T01:00:00+08:00"));
    let mut hourly = spec(OverlapPolicy::Queue);
    hourly.schedule = Schedule::new("0 0 * * * * *", None).unwrap();
    let (s, _) = scheduler(&engine, hourly);
    s.tick(at("2026-12-03T01:30:00+08:00"));
    let (o, _) = s.tick(at("2026-12-03T02:00:00+08:00"));
    assert_eq!(started(&o).len(), 1);
    let (o, _) = s.tick(at("2026-12-03T03:00:00+08:00"));
    assert!(
        matches!(o.as_slice(), [FireOutcome::Queued { .. }]),
        "{o:?}"
    );
    // A newer fire replaces the pending one: still one queued.
    let (o, _) = s.tick(at("2026-12-03T04:00:00+08:00"));
    assert!(
        matches!(o.as_slice(), [FireOutcome::Queued { .. }]),
        "{o:?}"
    );
    assert!(s.has_queued());
    assert_eq!(runs(&engine).len(), 1);

    engine.run_until_idle().await.unwrap();
    let (o, _) = s.tick(at("2026-12-03T04:10:00+08:00"));
    assert_eq!(started(&o), [ms("2026-12-03T04:00:00+08:00")]);
    assert!(!s.has_queued());
    assert_eq!(runs(&engine).len(), 2);
}

#[test]
fn jitter_delays_the_start_deterministically() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path(), at("2026-12-03T01:00:00+08:00"));
    let mut jittered = spec(OverlapPolicy::Skip);
    jittered.jitter = Duration::from_secs(600);
    let (s, _) = scheduler(&engine, jittered);
    s.tick(at("2026-12-03T01:00:00+08:00"));
    let (o, _) = s.tick(at("2026-12-03T02:00:00+08:00"));
    let nominal = ms("2026-12-03T02:00:00+08:00");
    let offset = jitter_offset("nightly", nominal, Duration::from_secs(600));
    assert!(offset < Duration::from_secs(600));
    assert_eq!(
        offset,
        jitter_offset("nightly", nominal, Duration::from_secs(600))
    );
    assert_ne!(
        offset,
        jitter_offset("nightly", nominal + 86_400_000, Duration::from_secs(600)),
        "different fires get different offsets"
    );
    let expected = nominal + i64::try_from(offset.as_millis()).unwrap();
    assert!(
        matches!(o.as_slice(), [FireOutcome::Started { start_at_ms, .. }] if *start_at_ms == expected)
    );
    let job = runs(&engine).into_iter().next().unwrap();
    assert_eq!(job.due_at.map(to_ms), Some(expected));
    assert_eq!(job.status, JobStatus::Queued);
}

#[test]
fn due_is_pure_and_honours_the_window() {
    let s = spec(OverlapPolicy::Skip);
    let wm = ms("2026-12-02T03:00:00+08:00");
    // 11h59m late: runs.
    let d = due(&s, wm, at("2026-12-03T13:59:00+08:00"));
    assert_eq!(d.due_ms, Some(ms("2026-12-03T02:00:00+08:00")));
    assert_eq!(d.first_missed_ms, None);
    // 12h01m late: missed.
    let d = due(&s, wm, at("2026-12-03T14:01:00+08:00"));
    assert_eq!(d.due_ms, None);
    assert_eq!(d.first_missed_ms, Some(ms("2026-12-03T02:00:00+08:00")));
    // A zero window still tolerates a minute of lateness.
    let mut strict = spec(OverlapPolicy::Skip);
    strict.catch_up_window = Duration::ZERO;
    let d = due(&strict, wm, at("2026-12-03T02:00:30+08:00"));
    assert_eq!(d.due_ms, Some(ms("2026-12-03T02:00:00+08:00")));
    // Nothing after the watermark.
    let d = due(
        &s,
        ms("2026-12-03T02:00:00+08:00"),
        at("2026-12-03T09:00:00+08:00"),
    );
    assert_eq!(d.due_ms, None);
    assert_eq!(d.first_missed_ms, None);
    assert_eq!(STATE_NAMESPACE, "daemon.schedules");
}
