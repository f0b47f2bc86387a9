//! Durable scheduling: which nominal fire times are due, and starting each exactly once.
//!
//! Per schedule the store keeps a [`ScheduleState`] (engine kv namespace
//! [`STATE_NAMESPACE`]) with a *watermark*: every nominal time up to it has been dealt with
//! (started, skipped or missed). A tick at `now` looks at the nominal times after the watermark:
//! the latest one no more than `catch_up_window` old is due (so downtime yields at most one
//! catch-up run, never a burst); older ones are counted as missed, and the earlier ones inside
//! the window that the due one supersedes are logged and counted as coalesced.
//!
//! A run is identified by (schedule, nominal time): it is submitted with the engine dedupe key
//! [`dedupe_key`], and the nominal time is persisted as `pending` *before* the submit. A crash
//! anywhere in between makes the next tick submit the same key again, which the engine answers
//! with the existing job — a restart never starts a run twice.
//!
//! Everything here takes `now` as an argument: tests drive it with any instants they like.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tcb_state::{Engine, EngineError, JobId, JobStatus, KvNamespace};

use super::settings::{OverlapPolicy, ScheduleSpec};

/// The engine kv namespace holding one [`ScheduleState`] per schedule name.
pub const STATE_NAMESPACE: &str = "daemon.schedules";

/// Lateness always tolerated, whatever `catch_up_window` says: a tick is never exactly on time.
pub const MIN_LATENESS: Duration = Duration::from_secs(60);

/// What the store remembers about one schedule. Times are Unix milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ScheduleState {
    /// Every nominal time `<=` this has been dealt with.
    pub watermark_ms: i64,
    /// A nominal time whose run is being submitted (set before the submit, cleared after).
    pub pending_ms: Option<i64>,
    /// Waiting for the active run to end (overlap policy `queue`).
    pub queued_ms: Option<i64>,
    /// The most recent nominal time a run was started for, and that run.
    pub last_nominal_ms: Option<i64>,
    pub last_job: Option<u64>,
    pub started: u64,
    pub skipped_overlap: u64,
    pub missed: u64,
    /// Nominal times inside the catch-up window superseded by a later one (one run for all).
    /// Absent in states written before it was counted.
    #[serde(default)]
    pub coalesced: u64,
}

/// What a tick did for one schedule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum FireOutcome {
    /// A run was submitted (or found already submitted) for `nominal`.
    Started {
        schedule: String,
        nominal_ms: i64,
        job: u64,
        start_at_ms: i64,
    },
    /// The previous run was still active; this fire was dropped.
    SkippedOverlap {
        schedule: String,
        nominal_ms: i64,
        active_job: u64,
    },
    /// The previous run was still active; this fire waits for it.
    Queued {
        schedule: String,
        nominal_ms: i64,
        active_job: u64,
    },
    /// Nominal times older than the catch-up window were not run.
    Missed {
        schedule: String,
        first_missed_ms: i64,
    },
    /// `count` nominal times inside the catch-up window (from `first_ms` to `last_ms`) were
    /// folded into the one run for the later `due_ms`.
    Coalesced {
        schedule: String,
        count: u64,
        first_ms: i64,
        last_ms: i64,
        due_ms: i64,
    },
}

impl FireOutcome {
    pub fn schedule(&self) -> &str {
        match self {
            FireOutcome::Started { schedule, .. }
            | FireOutcome::SkippedOverlap { schedule, .. }
            | FireOutcome::Queued { schedule, .. }
            | FireOutcome::Missed { schedule, .. }
            | FireOutcome::Coalesced { schedule, .. } => schedule,
        }
    }

    /// How many nominal times this outcome stands for (the fires counter adds this much).
    pub fn fires(&self) -> u64 {
        match self {
            FireOutcome::Coalesced { count, .. } => *count,
            _ => 1,
        }
    }

    /// Short name for metrics labels.
    pub fn kind(&self) -> &'static str {
        match self {
            FireOutcome::Started { .. } => "started",
            FireOutcome::SkippedOverlap { .. } => "skipped_overlap",
            FireOutcome::Queued { .. } => "queued",
            FireOutcome::Missed { .. } => "missed",
            FireOutcome::Coalesced { .. } => "coalesced",
        }
    }
}

/// One run to start: the identity and when it should begin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fire {
    pub schedule: String,
    pub nominal: SystemTime,
    /// `nominal` plus the jitter offset.
    pub start_at: SystemTime,
    pub dedupe_key: String,
    pub label: String,
}

/// Starts the run of a fire. The real one submits a `backup.run`; tests submit a stand-in.
/// Must pass `fire.dedupe_key` and `fire.start_at` to the engine.
pub trait Launcher: Send + Sync + 'static {
    fn launch(
        &self,
        engine: &Engine,
        spec: &ScheduleSpec,
        fire: &Fire,
    ) -> Result<JobId, EngineError>;
}

#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error("schedule `{schedule}`: state store: {source}")]
    Store {
        schedule: String,
        #[source]
        source: EngineError,
    },
    #[error("schedule `{schedule}`: cannot start the run for {nominal}: {source}")]
    Launch {
        schedule: String,
        nominal: String,
        #[source]
        source: EngineError,
    },
}

/// The engine dedupe key of the run of `schedule` at `nominal`.
pub fn dedupe_key(schedule: &str, nominal_ms: i64) -> String {
    format!("schedule/{schedule}/{nominal_ms}")
}

/// A start delay in `[0, max)` that is random-looking but fixed for a given fire, so a restart
/// computes the same start time (and tests are deterministic).
pub fn jitter_offset(schedule: &str, nominal_ms: i64, max: Duration) -> Duration {
    let max_ms = u64::try_from(max.as_millis()).unwrap_or(u64::MAX);
    if max_ms == 0 {
        return Duration::ZERO;
    }
    let digest = Sha256::new()
        .chain_update(schedule.as_bytes())
        .chain_update(nominal_ms.to_be_bytes())
        .finalize();
    let mut word = [0u8; 8];
    word.copy_from_slice(digest.get(..8).unwrap_or(&[0; 8]));
    Duration::from_millis(u64::from_be_bytes(word) % max_ms)
}

pub fn to_ms(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

pub fn from_ms(ms: i64) -> SystemTime {
    if ms >= 0 {
        UNIX_EPOCH + Duration::from_millis(ms.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
    }
}

fn ts_of_ms(ms: i64) -> Option<jiff::Timestamp> {
    jiff::Timestamp::from_millisecond(ms).ok()
}

/// Which nominal times of `spec` are due at `now` given the watermark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Due {
    /// The latest nominal time in `(watermark, now]` within the catch-up window.
    pub due_ms: Option<i64>,
    /// The first nominal time after the watermark that is too old to run, if any.
    pub first_missed_ms: Option<i64>,
    /// The new watermark if nothing is started (everything up to the horizon is dealt with).
    pub horizon_ms: i64,
    /// The nominal times after the watermark and inside the window but before `due_ms`: they
    /// get no run of their own (the run for `due_ms` covers them).
    pub coalesced: Option<CoalescedFires>,
}

/// Nominal times folded into a later catch-up run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoalescedFires {
    /// How many (counted up to [`COALESCED_COUNT_LIMIT`]).
    pub count: u64,
    pub first_ms: i64,
    pub last_ms: i64,
}

/// Counting coalesced fires walks them one by one: a per-second schedule after a long
/// downtime would mean tens of thousands of steps, so the count stops here (and says "at
/// least" in the log).
pub const COALESCED_COUNT_LIMIT: u64 = 10_000;

/// The nominal times of `spec` in `(after_ms, before_ms)`, counted up to the limit.
fn coalesced_between(spec: &ScheduleSpec, after_ms: i64, before_ms: i64) -> Option<CoalescedFires> {
    let mut cursor = ts_of_ms(after_ms)?;
    let mut found: Option<CoalescedFires> = None;
    while found.is_none_or(|f| f.count < COALESCED_COUNT_LIMIT) {
        let Some(next) = spec.schedule.next_after(cursor) else {
            break;
        };
        let next_ms = next.timestamp().as_millisecond();
        if next_ms >= before_ms {
            break;
        }
        found = Some(match found {
            None => CoalescedFires {
                count: 1,
                first_ms: next_ms,
                last_ms: next_ms,
            },
            Some(f) => CoalescedFires {
                count: f.count + 1,
                last_ms: next_ms,
                ..f
            },
        });
        cursor = next.timestamp();
    }
    found
}

/// Pure: what is due for `spec` at `now` after `watermark_ms`.
pub fn due(spec: &ScheduleSpec, watermark_ms: i64, now: SystemTime) -> Due {
    let now_ms = to_ms(now);
    let window = spec.catch_up_window.max(MIN_LATENESS);
    let window_ms = i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
    // Nominal times <= horizon are too old to run (or already dealt with).
    let horizon_ms = watermark_ms.max(now_ms.saturating_sub(window_ms));
    let mut out = Due {
        due_ms: None,
        first_missed_ms: None,
        horizon_ms,
        coalesced: None,
    };
    if now_ms <= watermark_ms {
        return out;
    }
    let (Some(now_ts), Some(horizon_ts), Some(wm_ts)) = (
        ts_of_ms(now_ms),
        ts_of_ms(horizon_ms.saturating_add(1)),
        ts_of_ms(watermark_ms),
    ) else {
        return out;
    };
    out.due_ms = spec
        .schedule
        .last_at_or_before(now_ts, horizon_ts)
        .map(|z| z.timestamp().as_millisecond());
    if let Some(due_ms) = out.due_ms {
        out.coalesced = coalesced_between(spec, horizon_ms, due_ms);
    }
    if horizon_ms > watermark_ms {
        if let Some(first) = spec.schedule.next_after(wm_ts) {
            let first_ms = first.timestamp().as_millisecond();
            if first_ms <= horizon_ms {
                out.first_missed_ms = Some(first_ms);
            }
        }
    }
    out
}

/// Runs schedules against an engine.
pub struct Scheduler<L: Launcher> {
    engine: Engine,
    kv: KvNamespace,
    specs: Vec<ScheduleSpec>,
    launcher: L,
}

impl<L: Launcher> Scheduler<L> {
    pub fn new(engine: Engine, specs: Vec<ScheduleSpec>, launcher: L) -> Self {
        let kv = engine.kv(STATE_NAMESPACE);
        Scheduler {
            engine,
            kv,
            specs,
            launcher,
        }
    }

    pub fn specs(&self) -> &[ScheduleSpec] {
        &self.specs
    }

    /// Replaces the schedules (SIGHUP). State is kept by name.
    pub fn set_specs(&mut self, specs: Vec<ScheduleSpec>) {
        self.specs = specs;
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The stored state of a schedule, if it ever ticked.
    pub fn state(&self, name: &str) -> Result<Option<ScheduleState>, EngineError> {
        self.kv.get(name)
    }

    /// Runs every schedule once at `now`: starts due runs, queued runs whose predecessor has
    /// ended, and records skips and misses. Errors of one schedule do not stop the others.
    pub fn tick(&self, now: SystemTime) -> (Vec<FireOutcome>, Vec<SchedulerError>) {
        let mut outcomes = Vec::new();
        let mut errors = Vec::new();
        for spec in &self.specs {
            if let Err(e) = self.tick_one(spec, now, &mut outcomes) {
                errors.push(e);
            }
        }
        (outcomes, errors)
    }

    /// The earliest instant a tick could do something: the next nominal time (plus nothing
    /// for jitter: the engine holds the run until its start time). `None`: no schedule fires
    /// again. Queued fires wait for a job to end, which the caller watches via engine events.
    pub fn next_wake(&self, now: SystemTime) -> Option<SystemTime> {
        let now_ms = to_ms(now);
        self.specs
            .iter()
            .filter_map(|spec| {
                let wm = self
                    .kv
                    .get::<ScheduleState>(&spec.name)
                    .ok()
                    .flatten()
                    .map_or(now_ms, |s| s.watermark_ms);
                let from = ts_of_ms(wm.max(now_ms.saturating_sub(1)))?;
                spec.schedule.next_after(from)
            })
            .map(|z| from_ms(z.timestamp().as_millisecond()))
            .min()
    }

    /// Whether any schedule waits for its active run to end.
    pub fn has_queued(&self) -> bool {
        self.specs.iter().any(|s| {
            self.kv
                .get::<ScheduleState>(&s.name)
                .ok()
                .flatten()
                .is_some_and(|st| st.queued_ms.is_some())
        })
    }

    fn store_err(spec: &ScheduleSpec) -> impl Fn(EngineError) -> SchedulerError + '_ {
        move |source| SchedulerError::Store {
            schedule: spec.name.clone(),
            source,
        }
    }

    fn save(&self, spec: &ScheduleSpec, state: &ScheduleState) -> Result<(), SchedulerError> {
        self.kv
            .put(&spec.name, state)
            .map_err(Self::store_err(spec))
    }

    fn active_job(&self, state: &ScheduleState) -> Result<Option<u64>, EngineError> {
        let Some(id) = state.last_job else {
            return Ok(None);
        };
        Ok(self
            .engine
            .job(JobId(id))?
            .filter(|v| !is_terminal(v.status()))
            .map(|_| id))
    }

    fn tick_one(
        &self,
        spec: &ScheduleSpec,
        now: SystemTime,
        outcomes: &mut Vec<FireOutcome>,
    ) -> Result<(), SchedulerError> {
        let now_ms = to_ms(now);
        let mut state = match self.kv.get::<ScheduleState>(&spec.name) {
            Ok(Some(s)) => s,
            Ok(None) => {
                // First sight: nothing before now is owed.
                let s = ScheduleState {
                    watermark_ms: now_ms.saturating_sub(1),
                    ..ScheduleState::default()
                };
                self.save(spec, &s)?;
                s
            }
            Err(e) => return Err(Self::store_err(spec)(e)),
        };

        // A submit interrupted by a crash: repeat it (same dedupe key, same job).
        if let Some(pending) = state.pending_ms {
            self.start(spec, &mut state, pending, outcomes)?;
        }

        let active = self.active_job(&state).map_err(Self::store_err(spec))?;

        if let (Some(queued), None) = (state.queued_ms, active) {
            state.queued_ms = None;
            self.start(spec, &mut state, queued, outcomes)?;
        }

        let due = due(spec, state.watermark_ms, now);
        if let Some(first_missed_ms) = due.first_missed_ms {
            state.missed += 1;
            tracing::warn!(
                schedule = %spec.name,
                first_missed = %fmt_ms(first_missed_ms),
                "fire times older than the catch-up window were not run"
            );
            outcomes.push(FireOutcome::Missed {
                schedule: spec.name.clone(),
                first_missed_ms,
            });
        }
        if let (Some(c), Some(due_ms)) = (due.coalesced, due.due_ms) {
            state.coalesced = state.coalesced.saturating_add(c.count);
            let at_least = if c.count >= COALESCED_COUNT_LIMIT {
                "at least "
            } else {
                ""
            };
            tracing::warn!(
                schedule = %spec.name,
                first = %fmt_ms(c.first_ms),
                last = %fmt_ms(c.last_ms),
                run_for = %fmt_ms(due_ms),
                "{at_least}{} earlier fire time(s) inside the catch-up window are coalesced into one run for the latest",
                c.count
            );
            outcomes.push(FireOutcome::Coalesced {
                schedule: spec.name.clone(),
                count: c.count,
                first_ms: c.first_ms,
                last_ms: c.last_ms,
                due_ms,
            });
        }
        match due.due_ms {
            None => {
                if due.horizon_ms > state.watermark_ms {
                    state.watermark_ms = due.horizon_ms;
                }
                self.save(spec, &state)?;
            }
            Some(nominal_ms) => {
                let active = self.active_job(&state).map_err(Self::store_err(spec))?;
                match (active, spec.overlap) {
                    (Some(active_job), OverlapPolicy::Skip) => {
                        state.watermark_ms = nominal_ms;
                        state.skipped_overlap += 1;
                        self.save(spec, &state)?;
                        tracing::warn!(
                            schedule = %spec.name, nominal = %fmt_ms(nominal_ms), active_job,
                            "previous run still active; this fire is skipped"
                        );
                        outcomes.push(FireOutcome::SkippedOverlap {
                            schedule: spec.name.clone(),
                            nominal_ms,
                            active_job,
                        });
                    }
                    (Some(active_job), OverlapPolicy::Queue) => {
                        state.watermark_ms = nominal_ms;
                        state.queued_ms = Some(nominal_ms);
                        self.save(spec, &state)?;
                        tracing::info!(
                            schedule = %spec.name, nominal = %fmt_ms(nominal_ms), active_job,
                            "previous run still active; this fire waits for it"
                        );
                        outcomes.push(FireOutcome::Queued {
                            schedule: spec.name.clone(),
                            nominal_ms,
                            active_job,
                        });
                    }
                    (None, _) => {
                        state.watermark_ms = nominal_ms;
                        self.start(spec, &mut state, nominal_ms, outcomes)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Persist the intent, submit (idempotent by key), persist the result.
    fn start(
        &self,
        spec: &ScheduleSpec,
        state: &mut ScheduleState,
        nominal_ms: i64,
        outcomes: &mut Vec<FireOutcome>,
    ) -> Result<(), SchedulerError> {
        state.pending_ms = Some(nominal_ms);
        self.save(spec, state)?;
        let nominal = from_ms(nominal_ms);
        let start_at = nominal + jitter_offset(&spec.name, nominal_ms, spec.jitter);
        let fire = Fire {
            schedule: spec.name.clone(),
            nominal,
            start_at,
            dedupe_key: dedupe_key(&spec.name, nominal_ms),
            label: format!("schedule {} @ {}", spec.name, fmt_ms(nominal_ms)),
        };
        let job = self
            .launcher
            .launch(&self.engine, spec, &fire)
            .map_err(|source| SchedulerError::Launch {
                schedule: spec.name.clone(),
                nominal: fmt_ms(nominal_ms),
                source,
            })?;
        state.pending_ms = None;
        if state.last_job != Some(job.0) {
            state.started += 1;
        }
        state.last_job = Some(job.0);
        state.last_nominal_ms = Some(nominal_ms);
        self.save(spec, state)?;
        tracing::info!(schedule = %spec.name, nominal = %fmt_ms(nominal_ms), job = job.0, "run started");
        outcomes.push(FireOutcome::Started {
            schedule: spec.name.clone(),
            nominal_ms,
            job: job.0,
            start_at_ms: to_ms(start_at),
        });
        Ok(())
    }
}

fn is_terminal(status: JobStatus) -> bool {
    status.is_terminal()
}

/// RFC 3339 UTC text of a Unix-millisecond time.
pub fn fmt_ms(ms: i64) -> String {
    ts_of_ms(ms).map_or_else(|| ms.to_string(), |t| t.to_string())
}
