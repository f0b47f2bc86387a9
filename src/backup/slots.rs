//! Export slots: how many exports may be in flight at once, from the `databasemigrateexport`
//! call until the snapshot is recorded.
//!
//! The engine's kind limit caps *running steps*, but a collection between two polls runs no
//! step: without slots, 100 collections would put 100 exports on the platform at once (which
//! risks -501004, "concurrency exceeds env quota"). A job takes a slot before it creates its
//! export and keeps it through polling, download and record; a job without one waits in its
//! committed `TokenAcquired` state and is woken (`Engine::wake`) when a slot frees up.
//!
//! Slots are memory only, and rebuilt from the committed states: a job resumed past export
//! creation (after a crash or a reload) holds its slot again at its next step, even over the
//! limit, because its export exists already. A job that ends without releasing its slot
//! (cancelled between two polls, failed for good) loses it as soon as the engine reports the
//! end (a watcher on the engine's job events), or failing that the next time the slots are
//! full; either way the jobs waiting for the freed slots are woken then, not at their
//! fallback re-check.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use tcb_state::{JobId, WeakEngine};
use tokio::sync::broadcast::error::RecvError;

/// The exports in flight, per app and in all, and the jobs waiting for a slot.
pub struct ExportSlots {
    engine: WeakEngine,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    global: usize,
    per_app: HashMap<String, usize>,
    /// Job → the app it belongs to.
    held: HashMap<JobId, String>,
    /// Jobs that found no free slot, first come first served.
    waiting: VecDeque<(JobId, String)>,
    high_water: usize,
}

impl Inner {
    fn held_by(&self, appid: &str) -> usize {
        self.held.values().filter(|a| *a == appid).count()
    }

    fn fits(&self, appid: &str) -> bool {
        self.held.len() < self.global
            && self
                .per_app
                .get(appid)
                .is_none_or(|&max| self.held_by(appid) < max)
    }
}

impl ExportSlots {
    /// `global` exports in flight at most (per-app limits are set with [`Self::set_limits`]).
    /// Inside a tokio runtime it also watches the engine's job events, so a slot whose job
    /// ends without giving it back is reclaimed (and its waiters woken) at once.
    pub fn new(engine: WeakEngine, global: usize) -> Arc<Self> {
        let slots = Arc::new(ExportSlots {
            engine,
            inner: Mutex::new(Inner {
                global: global.max(1),
                ..Inner::default()
            }),
        });
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(watch_job_ends(Arc::downgrade(&slots)));
        }
        slots
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps half-updated in a harmful way
        // (each operation is a single insert or remove), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets the limits (a reload may change them); slots already held are kept.
    pub fn set_limits(&self, global: usize, per_app: HashMap<String, usize>) {
        let mut inner = self.lock();
        inner.global = global.max(1);
        inner.per_app = per_app.into_iter().map(|(a, n)| (a, n.max(1))).collect();
    }

    /// Takes a slot for `job` of `appid` (a job already holding one keeps it). False when none
    /// is free: the job is queued and woken when one frees up.
    pub fn try_take(&self, job: JobId, appid: &str) -> bool {
        let mut inner = self.lock();
        if inner.held.contains_key(&job) {
            return true;
        }
        let reclaimed = !inner.fits(appid) && self.drop_finished(&mut inner);
        let taken = if inner.fits(appid) {
            inner.waiting.retain(|(j, _)| *j != job);
            inner.held.insert(job, appid.to_string());
            inner.high_water = inner.high_water.max(inner.held.len());
            true
        } else {
            if !inner.waiting.iter().any(|(j, _)| *j == job) {
                inner.waiting.push_back((job, appid.to_string()));
            }
            false
        };
        if reclaimed {
            // Slots this caller did not need are for the others waiting.
            self.wake_free(&mut inner);
        }
        taken
    }

    /// `job` ended (the engine says so): its slot, if it still held one, goes to a waiter.
    pub fn job_ended(&self, job: JobId) {
        let mut inner = self.lock();
        inner.waiting.retain(|(j, _)| *j != job);
        if inner.held.remove(&job).is_some() {
            self.wake_free(&mut inner);
        }
    }

    /// Records that `job` has an export in flight (it was created before this process, or this
    /// configuration, knew of it), whatever the limit.
    pub fn hold(&self, job: JobId, appid: &str) {
        let mut inner = self.lock();
        if inner.held.insert(job, appid.to_string()).is_none() {
            inner.high_water = inner.high_water.max(inner.held.len());
        }
    }

    /// Gives `job`'s slot back and wakes the first waiting job that now fits.
    pub fn release(&self, job: JobId) {
        let mut inner = self.lock();
        if inner.held.remove(&job).is_some() {
            self.wake_next(&mut inner);
        }
    }

    /// The most slots held at once since this process started (for tests).
    pub fn high_water(&self) -> usize {
        self.lock().high_water
    }

    /// Slots held now (for tests).
    pub fn in_flight(&self) -> usize {
        self.lock().held.len()
    }

    fn wake_next(&self, inner: &mut Inner) {
        let Some(pos) = inner.waiting.iter().position(|(_, app)| inner.fits(app)) else {
            return;
        };
        if let Some((job, _)) = inner.waiting.remove(pos) {
            self.wake(job);
        }
    }

    /// Wakes as many waiting jobs, first come first served, as there are free slots for them
    /// (counting the slots the ones woken before them will take).
    fn wake_free(&self, inner: &mut Inner) {
        let mut promised_global = 0;
        let mut promised: HashMap<String, usize> = HashMap::new();
        let mut i = 0;
        while i < inner.waiting.len() && inner.held.len() + promised_global < inner.global {
            let app = inner.waiting[i].1.clone();
            let app_promised = promised.get(&app).copied().unwrap_or(0);
            let fits = inner
                .per_app
                .get(&app)
                .is_none_or(|&max| inner.held_by(&app) + app_promised < max);
            if !fits {
                i += 1;
                continue;
            }
            if let Some((job, _)) = inner.waiting.remove(i) {
                promised_global += 1;
                *promised.entry(app).or_default() += 1;
                self.wake(job);
            }
        }
    }

    fn wake(&self, job: JobId) {
        if let Some(engine) = self.engine.upgrade() {
            // A wake that cannot be committed only delays the job to its fallback re-check.
            if let Err(e) = engine.wake(job) {
                tracing::warn!(%job, error = %e, "cannot wake a job waiting for an export slot");
            }
        }
    }

    /// Drops the slots of jobs that ended without releasing them (failed after their retries,
    /// cancelled, removed), as the store says, and the waiters that ended. True when a slot
    /// was reclaimed (the caller wakes the waiters it frees).
    fn drop_finished(&self, inner: &mut Inner) -> bool {
        let Some(engine) = self.engine.upgrade() else {
            return false;
        };
        let before = inner.held.len();
        inner.held.retain(|job, _| match engine.job(*job) {
            Ok(Some(v)) => !v.status().is_terminal(),
            Ok(None) => false,
            // Unknown: keep it (erring on fewer exports in flight).
            Err(_) => true,
        });
        inner.waiting.retain(
            |(job, _)| matches!(engine.job(*job), Ok(Some(v)) if !v.status().is_terminal()),
        );
        inner.held.len() < before
    }
}

/// Hands back the slots of jobs that end without a step of theirs releasing them (a job
/// cancelled while waiting between two polls runs no further step). Ends with the engine.
async fn watch_job_ends(slots: Weak<ExportSlots>) {
    let Some(mut events) = slots
        .upgrade()
        .and_then(|s| s.engine.upgrade())
        .map(|e| e.subscribe())
    else {
        return;
    };
    loop {
        let event = events.recv().await;
        let Some(slots) = slots.upgrade() else {
            return;
        };
        match event {
            Ok(e) if e.status.is_terminal() => slots.job_ended(e.id),
            Ok(_) => {}
            // Missed events: look at every holder in the store instead.
            Err(RecvError::Lagged(_)) => {
                let mut inner = slots.lock();
                if slots.drop_finished(&mut inner) {
                    slots.wake_free(&mut inner);
                }
            }
            Err(RecvError::Closed) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tcb_state::{Engine, EngineOptions};

    fn engine() -> (tempfile::TempDir, Engine) {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(&dir.path().join("state"), EngineOptions::default()).unwrap();
        (dir, engine)
    }

    /// A real (active) job: slots of jobs unknown to the store count as finished when full.
    fn job(engine: &Engine) -> JobId {
        engine
            .submit_raw(
                "backup.collection",
                1,
                serde_json::json!({}),
                tcb_state::SubmitOptions::default(),
            )
            .unwrap()
    }

    #[test]
    fn global_and_per_app_limits_hold_and_a_release_frees_a_slot() {
        let (_dir, engine) = engine();
        let slots = ExportSlots::new(engine.downgrade(), 3);
        slots.set_limits(3, HashMap::from([("a".to_string(), 2)]));
        let j: Vec<JobId> = (0..5).map(|_| job(&engine)).collect();
        assert!(slots.try_take(j[0], "a"));
        assert!(slots.try_take(j[0], "a"), "a holder keeps its slot");
        assert!(slots.try_take(j[1], "a"));
        assert!(!slots.try_take(j[2], "a"), "app a is at its limit");
        assert!(slots.try_take(j[3], "b"));
        assert!(!slots.try_take(j[4], "b"), "the global limit is reached");
        assert_eq!(slots.in_flight(), 3);
        slots.release(j[0]);
        assert!(slots.try_take(j[2], "a"));
        assert!(!slots.try_take(j[4], "b"));
        assert_eq!(slots.high_water(), 3);
    }

    #[test]
    fn a_resumed_export_holds_its_slot_over_the_limit() {
        let (_dir, engine) = engine();
        let slots = ExportSlots::new(engine.downgrade(), 1);
        let ids = [job(&engine), job(&engine)];
        assert!(slots.try_take(ids[0], "a"));
        slots.hold(ids[1], "a");
        assert_eq!(slots.in_flight(), 2);
        assert!(!slots.try_take(JobId(99), "a"));
    }

    #[test]
    fn slots_of_jobs_that_ended_elsewhere_are_reclaimed_when_full() {
        let (_dir, engine) = engine();
        let slots = ExportSlots::new(engine.downgrade(), 1);
        let job = engine
            .submit_raw(
                "backup.collection",
                1,
                serde_json::json!({}),
                tcb_state::SubmitOptions::label("c"),
            )
            .unwrap();
        assert!(slots.try_take(job, "a"));
        assert!(!slots.try_take(JobId(7), "a"), "the job is still active");
        engine.cancel(job).unwrap();
        assert!(
            slots.try_take(JobId(7), "a"),
            "a cancelled job's slot is reclaimed"
        );
    }

    /// A job queued for later (as a job waiting for a slot is), and whether it is due now.
    fn later_job(engine: &Engine) -> JobId {
        engine
            .submit_raw(
                "backup.collection",
                1,
                serde_json::json!({}),
                tcb_state::SubmitOptions {
                    run_at: Some(
                        std::time::SystemTime::now() + std::time::Duration::from_secs(3600),
                    ),
                    ..Default::default()
                },
            )
            .unwrap()
    }

    fn woken(engine: &Engine, job: JobId) -> bool {
        engine
            .job(job)
            .unwrap()
            .unwrap()
            .history
            .iter()
            .any(|h| matches!(h.event, tcb_state::HistoryEvent::Woken))
    }

    #[test]
    fn reclaiming_a_cancelled_jobs_slot_wakes_the_waiters_it_frees() {
        let (_dir, engine) = engine();
        let slots = ExportSlots::new(engine.downgrade(), 2);
        let holders = [job(&engine), job(&engine)];
        let waiters = [later_job(&engine), later_job(&engine), later_job(&engine)];
        for h in holders {
            assert!(slots.try_take(h, "a"));
        }
        for w in waiters {
            assert!(!slots.try_take(w, "a"));
        }
        engine.cancel(holders[0]).unwrap();
        engine.cancel(holders[1]).unwrap();
        // A newcomer finds the slots full, reclaims both, takes one: the other goes to the
        // first waiter, woken now rather than at its fallback re-check.
        let newcomer = job(&engine);
        assert!(slots.try_take(newcomer, "a"));
        assert!(woken(&engine, waiters[0]), "the first waiter is woken");
        assert!(!woken(&engine, waiters[1]), "no slot for the second");
        assert!(!woken(&engine, waiters[2]));
    }

    #[tokio::test]
    async fn a_job_ending_without_a_release_wakes_a_waiter_at_once() {
        let (_dir, engine) = engine();
        let slots = ExportSlots::new(engine.downgrade(), 1);
        let holder = job(&engine);
        let waiter = later_job(&engine);
        assert!(slots.try_take(holder, "a"));
        assert!(!slots.try_take(waiter, "a"));
        // Let the watcher subscribe before the event it is to see.
        tokio::task::yield_now().await;
        engine.cancel(holder).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !woken(&engine, waiter) {
            assert!(std::time::Instant::now() < deadline, "never woken");
            tokio::task::yield_now().await;
        }
        assert_eq!(slots.in_flight(), 0, "the cancelled job's slot is back");
    }
}
