//! Injectable time: the engine never reads the wall clock or sleeps directly, so tests can run
//! backoff delays and `WaitUntil` polls in virtual time without really waiting.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// A boxed, sendable future; what [`Clock::sleep_until`] returns.
pub type SleepFuture = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// The engine's source of time.
pub trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> SystemTime;
    /// Resolves once `now() >= at` (it may resolve early: the engine re-checks).
    fn sleep_until(&self, at: SystemTime) -> SleepFuture;
    /// True for a virtual clock whose `sleep_until` jumps time forward instead of waiting. The
    /// runner then only sleeps when nothing is running, so time never skips past a running step.
    fn advances_on_sleep(&self) -> bool {
        false
    }
}

/// Wall-clock time and tokio sleeps.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

/// Longest single real sleep: the runner re-evaluates at least this often, which bounds the
/// effect of a wall-clock jump.
const MAX_REAL_SLEEP: Duration = Duration::from_secs(30);

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }

    fn sleep_until(&self, at: SystemTime) -> SleepFuture {
        let wait = at
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO)
            .min(MAX_REAL_SLEEP);
        Box::pin(tokio::time::sleep(wait))
    }
}

/// A clock for tests. Time only moves when the test calls [`ManualClock::advance`] /
/// [`ManualClock::set`], or — in auto-advance mode — when the idle runner sleeps, in which case
/// time jumps straight to the wake-up instant.
#[derive(Debug, Clone)]
pub struct ManualClock {
    inner: Arc<ManualInner>,
}

#[derive(Debug)]
struct ManualInner {
    now: Mutex<SystemTime>,
    changed: tokio::sync::watch::Sender<SystemTime>,
    auto_advance: bool,
}

impl ManualClock {
    /// A clock standing still at `start`; sleepers wait for `advance`/`set`.
    pub fn new(start: SystemTime) -> Self {
        Self::build(start, false)
    }

    /// A virtual clock: a sleep jumps time forward to its deadline at once.
    pub fn auto_advancing(start: SystemTime) -> Self {
        Self::build(start, true)
    }

    fn build(start: SystemTime, auto_advance: bool) -> Self {
        let (changed, _) = tokio::sync::watch::channel(start);
        ManualClock {
            inner: Arc::new(ManualInner {
                now: Mutex::new(start),
                changed,
                auto_advance,
            }),
        }
    }

    /// Moves time forward by `by`.
    pub fn advance(&self, by: Duration) {
        let next = self.now() + by;
        self.set(next);
    }

    /// Sets the time; it never moves backwards (an earlier instant is ignored).
    pub fn set(&self, at: SystemTime) {
        let mut now = self.inner.now.lock().unwrap_or_else(|p| p.into_inner());
        if at > *now {
            *now = at;
            self.inner.changed.send_replace(at);
        }
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        *self.inner.now.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn sleep_until(&self, at: SystemTime) -> SleepFuture {
        if self.inner.auto_advance {
            self.set(at);
            return Box::pin(std::future::ready(()));
        }
        let mut rx = self.inner.changed.subscribe();
        Box::pin(async move {
            loop {
                if *rx.borrow_and_update() >= at {
                    return;
                }
                if rx.changed().await.is_err() {
                    return;
                }
            }
        })
    }

    fn advances_on_sleep(&self) -> bool {
        self.inner.auto_advance
    }
}

/// Milliseconds since the Unix epoch: how the store persists instants (0 for pre-1970 times).
pub(crate) fn to_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The inverse of [`to_ms`].
pub(crate) fn from_ms(ms: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn manual_clock_wakes_sleepers_on_advance() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let clock = ManualClock::new(start);
        let sleeper = tokio::spawn(clock.sleep_until(start + Duration::from_secs(5)));
        clock.advance(Duration::from_secs(2));
        tokio::task::yield_now().await;
        assert!(!sleeper.is_finished());
        clock.advance(Duration::from_secs(3));
        sleeper.await.unwrap();
        assert_eq!(clock.now(), start + Duration::from_secs(5));
    }

    #[tokio::test]
    async fn auto_advancing_clock_jumps() {
        let start = SystemTime::UNIX_EPOCH;
        let clock = ManualClock::auto_advancing(start);
        clock.sleep_until(start + Duration::from_secs(60)).await;
        assert_eq!(clock.now(), start + Duration::from_secs(60));
        clock.set(start);
        assert_eq!(
            clock.now(),
            start + Duration::from_secs(60),
            "never backwards"
        );
    }
}
