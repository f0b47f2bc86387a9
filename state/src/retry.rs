//! Retry scheduling: exponential backoff with full jitter, computed by the `backoff` crate.
//!
//! `backoff::ExponentialBackoff` draws a delay uniformly from
//! `[interval * (1 - r), interval * (1 + r)]` for randomization factor `r`. With `r = 1` and the
//! crate's interval set to *half* of ours, that range is `[0, our interval]`: full jitter. The
//! attempt count lives in the store, not in a long-lived backoff object, so for retry `n` we build
//! a backoff whose current interval is `initial * multiplier^(n-1) / 2` (capped at
//! `max_interval / 2`) and take its one next delay. `max_elapsed` is enforced here against the
//! persisted time of the step's first failure and the engine clock, so the crate's own
//! wall-clock elapsed limit is switched off.

use std::time::{Duration, SystemTime};

use backoff::backoff::Backoff;

use crate::types::RetryPolicy;

/// The decision after a retryable failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetryDecision {
    /// Run the step again at this time.
    RetryAt { at: SystemTime, delay: Duration },
    /// Stop: the reason says which limit was hit.
    GiveUp { reason: String },
}

/// The full-jitter cap for retry `retry_number` (1-based): `min(max, initial * multiplier^(n-1))`.
pub fn interval_cap(policy: &RetryPolicy, retry_number: u32) -> Duration {
    let multiplier = if policy.multiplier.is_finite() && policy.multiplier >= 1.0 {
        policy.multiplier
    } else {
        1.0
    };
    let exp = i32::try_from(retry_number.saturating_sub(1)).unwrap_or(i32::MAX);
    let secs = policy.initial_interval.as_secs_f64() * multiplier.powi(exp);
    let max = policy.max_interval.as_secs_f64();
    if !secs.is_finite() || secs >= max {
        policy.max_interval
    } else {
        Duration::from_secs_f64(secs.max(0.0))
    }
}

/// One jittered delay for retry `retry_number`, drawn by `backoff`.
pub fn jittered_delay(policy: &RetryPolicy, retry_number: u32) -> Duration {
    let cap = interval_cap(policy, retry_number);
    let half = cap / 2;
    let mut b = backoff::ExponentialBackoffBuilder::new()
        .with_initial_interval(half)
        .with_randomization_factor(1.0)
        .with_multiplier(1.0)
        .with_max_interval(half.max(Duration::from_nanos(1)))
        .with_max_elapsed_time(None)
        .build();
    b.current_interval = half;
    // `backoff` adds one nanosecond of range (its "+1"); clamp so the cap is exact.
    b.next_backoff().unwrap_or(cap).min(cap)
}

/// Decides what happens after failed attempt number `attempt` (1-based) of a step.
pub fn decide(
    policy: &RetryPolicy,
    attempt: u32,
    first_failure: SystemTime,
    now: SystemTime,
    retry_after: Option<Duration>,
) -> RetryDecision {
    if attempt >= policy.max_attempts.max(1) {
        return RetryDecision::GiveUp {
            reason: format!("gave up after {attempt} attempts"),
        };
    }
    let mut delay = jittered_delay(policy, attempt);
    if let Some(after) = retry_after {
        delay = delay.max(after);
    }
    let at = now + delay;
    if let Some(max_elapsed) = policy.max_elapsed {
        let elapsed = at.duration_since(first_failure).unwrap_or(Duration::ZERO);
        if elapsed > max_elapsed {
            return RetryDecision::GiveUp {
                reason: format!(
                    "gave up after {attempt} attempts: retrying would exceed the retry time limit of {}s",
                    max_elapsed.as_secs()
                ),
            };
        }
    }
    RetryDecision::RetryAt { at, delay }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            initial_interval: Duration::from_millis(100),
            multiplier: 2.0,
            max_interval: Duration::from_secs(1),
            max_attempts: 6,
            max_elapsed: Some(Duration::from_secs(10)),
        }
    }

    #[test]
    fn caps_grow_exponentially_then_saturate() {
        let p = policy();
        let caps: Vec<u128> = (1..=6).map(|n| interval_cap(&p, n).as_millis()).collect();
        assert_eq!(caps, vec![100, 200, 400, 800, 1000, 1000]);
    }

    #[test]
    fn jitter_is_full_range_and_bounded() {
        let p = policy();
        for n in 1..=5 {
            let cap = interval_cap(&p, n);
            let mut min = cap;
            let mut max = Duration::ZERO;
            for _ in 0..2000 {
                let d = jittered_delay(&p, n);
                assert!(d <= cap, "retry {n}: {d:?} > {cap:?}");
                min = min.min(d);
                max = max.max(d);
            }
            assert!(min < cap / 10, "retry {n}: never near 0 (min {min:?})");
            assert!(
                max > cap * 9 / 10,
                "retry {n}: never near cap (max {max:?})"
            );
        }
    }

    #[test]
    fn gives_up_at_max_attempts() {
        let p = policy();
        let t = SystemTime::UNIX_EPOCH;
        assert!(matches!(
            decide(&p, 5, t, t, None),
            RetryDecision::RetryAt { .. }
        ));
        match decide(&p, 6, t, t, None) {
            RetryDecision::GiveUp { reason } => assert!(reason.contains("6 attempts")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn gives_up_past_max_elapsed() {
        let p = policy();
        let t0 = SystemTime::UNIX_EPOCH;
        let late = t0 + Duration::from_secs(10);
        match decide(&p, 1, t0, late, Some(Duration::from_millis(1))) {
            RetryDecision::GiveUp { reason } => assert!(reason.contains("time limit")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn retry_after_is_a_lower_bound() {
        let p = policy();
        let t = SystemTime::UNIX_EPOCH;
        match decide(&p, 1, t, t, Some(Duration::from_secs(5))) {
            RetryDecision::RetryAt { delay, at } => {
                assert_eq!(delay, Duration::from_secs(5));
                assert_eq!(at, t + delay);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn single_attempt_policy_never_retries() {
        let p = RetryPolicy {
            max_attempts: 1,
            ..policy()
        };
        let t = SystemTime::UNIX_EPOCH;
        assert!(matches!(
            decide(&p, 1, t, t, None),
            RetryDecision::GiveUp { .. }
        ));
    }
}
