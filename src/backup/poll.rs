//! When to ask about an export job next: adaptive polling without a fixed deadline.
//!
//! Without history the first poll comes after `initial` (about 1 s), then every poll waits a
//! fixed fraction of the time elapsed since the export was created (never less than `min`, never
//! more than `max`, and never more than double the previous wait). The detection lag is then
//! bounded by that fraction of the export's duration while the number of status calls grows only
//! logarithmically. With the duration of an earlier export of the same collection, the first poll
//! is planned just before that duration and followed by a few short polls around it; only an
//! export that runs well past its history falls back to the proportional schedule.
//!
//! A job whose status (or record count) does not change for `stall_timeout` is declared stalled:
//! that is a progress watchdog, not a deadline, so a long export that keeps moving never fails.
//!
//! The history is only as good as the duration recorded: an export watched across a downtime,
//! a suspended machine or a clock jump would "take" that long, so
//! [`PollPolicy::interrupts_timing`] tells the poll loop when a gap between two observations
//! makes the measurement worthless (it is then not recorded), and the first wait planned from
//! any history is capped by the stall timeout.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Tuning of the poll schedule. All durations are real (wall clock) time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PollPolicy {
    /// Delay of the first status call after the export was created (no history).
    pub initial: Duration,
    /// Smallest wait between two status calls.
    pub min: Duration,
    /// Largest wait between two status calls.
    pub max: Duration,
    /// Wait as a fraction of the time elapsed since the export was created.
    pub fraction: f64,
    /// A wait is never more than this multiple of the previous one.
    pub max_growth: f64,
    /// With history: plan the first poll at this fraction of the previous duration...
    pub history_lead: f64,
    /// ...then poll every `history_step` × previous duration until `history_window` × it.
    pub history_step: f64,
    pub history_window: f64,
    /// No status/record-count change for this long → the job is stalled.
    pub stall_timeout: Duration,
}

impl Default for PollPolicy {
    fn default() -> Self {
        PollPolicy {
            initial: Duration::from_secs(1),
            min: Duration::from_secs(1),
            max: Duration::from_secs(30),
            fraction: 0.27,
            max_growth: 2.0,
            history_lead: 0.92,
            history_step: 0.07,
            history_window: 1.1,
            stall_timeout: Duration::from_secs(30 * 60),
        }
    }
}

impl PollPolicy {
    /// The wait before the next status call.
    ///
    /// `elapsed`: time since the export was created; `previous_wait`: the wait before the call
    /// just made (None before the first call); `history`: duration of an earlier export of the
    /// same collection, if known.
    pub fn next_wait(
        &self,
        elapsed: Duration,
        previous_wait: Option<Duration>,
        history: Option<Duration>,
    ) -> Duration {
        if let Some(hist) = history.filter(|h| !h.is_zero()) {
            // Capped by the stall timeout, not by `max`: waiting to just before a minutes-long
            // export is the point of history (a `max` cap would cost a dozen polls on a 60 s
            // export), while the watchdog already accepts that long without news of a job,
            // so even a wrong history (recorded by an older version across a downtime) costs
            // at most that much.
            let lead = hist.mul_f64(self.history_lead).min(self.stall_timeout);
            if previous_wait.is_none() {
                return lead.saturating_sub(elapsed).max(self.min.min(lead));
            }
            if elapsed < hist.mul_f64(self.history_window) {
                return hist.mul_f64(self.history_step).clamp(self.min, self.max);
            }
        } else if previous_wait.is_none() {
            return self.initial.saturating_sub(elapsed);
        }
        let mut wait = elapsed.mul_f64(self.fraction).clamp(self.min, self.max);
        if let Some(prev) = previous_wait {
            wait = wait.min(prev.mul_f64(self.max_growth.max(1.0)).max(self.min));
        }
        wait
    }

    /// Whether the gap between two observations of an export (its creation, the start of
    /// polling, each status call), planned as `planned`, keeps its duration from being
    /// measured: longer than planned by more than one `max` interval (beyond the ordinary
    /// lateness of a busy runner or a retried call: a downtime, a suspended machine, a clock
    /// jumping ahead), or negative (`gap` None: the clock stepped back). The API gives no
    /// server timestamps, so the local clock across uninterrupted polling is all there is.
    pub fn interrupts_timing(&self, planned: Duration, gap: Option<Duration>) -> bool {
        match gap {
            None => true,
            Some(gap) => gap > planned.saturating_add(self.max),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Simulates polling an export that completes after `duration`; returns the number of status
    /// calls and the detection lag as a fraction of the duration.
    fn simulate(policy: &PollPolicy, duration: Duration, history: Option<Duration>) -> (u32, f64) {
        let mut now = Duration::ZERO;
        let mut prev = None;
        let mut calls = 0;
        loop {
            let wait = policy.next_wait(now, prev, history);
            now += wait;
            prev = Some(wait);
            calls += 1;
            if now >= duration {
                let lag = (now - duration).as_secs_f64() / duration.as_secs_f64();
                return (calls, lag);
            }
            assert!(calls < 10_000, "runaway schedule");
        }
    }

    #[test]
    fn sixty_second_export_without_history() {
        let (calls, lag) = simulate(&PollPolicy::default(), Duration::from_secs(60), None);
        assert!(calls <= 16, "{calls} calls");
        assert!(lag <= 0.20, "lag {lag}");
    }

    #[test]
    fn sixty_second_export_with_history() {
        let p = PollPolicy::default();
        for hist in [54, 57, 60, 63, 66] {
            let (calls, lag) =
                simulate(&p, Duration::from_secs(60), Some(Duration::from_secs(hist)));
            assert!(calls <= 4, "history {hist}: {calls} calls");
            assert!(lag <= 0.10, "history {hist}: lag {lag}");
        }
    }

    #[test]
    fn waits_stay_within_bounds_and_never_jump() {
        let p = PollPolicy::default();
        let mut prev = None;
        let mut now = Duration::ZERO;
        for _ in 0..200 {
            let w = p.next_wait(now, prev, None);
            assert!(w <= p.max);
            if let Some(prev) = prev {
                assert!(w >= p.min);
                assert!(w <= prev.mul_f64(p.max_growth) + p.min);
            }
            now += w;
            prev = Some(w);
        }
        assert_eq!(prev, Some(p.max));
    }

    #[test]
    fn configured_growth_of_one_and_a_half_still_meets_the_targets() {
        let p = PollPolicy {
            max_growth: 1.5,
            ..PollPolicy::default()
        };
        let (calls, lag) = simulate(&p, Duration::from_secs(60), None);
        assert!(calls <= 16 && lag <= 0.20, "{calls} calls, lag {lag}");
    }

    #[test]
    fn long_exports_cost_few_calls() {
        let (calls, lag) = simulate(&PollPolicy::default(), Duration::from_secs(3600), None);
        assert!(calls < 150, "{calls}");
        assert!(lag < 0.01);
    }

    #[test]
    fn a_huge_history_delays_the_first_poll_at_most_by_the_stall_timeout() {
        // An export that "took" two days (measured across a downtime by an older version).
        let p = PollPolicy::default();
        let two_days = Duration::from_secs(2 * 24 * 3600);
        assert_eq!(
            p.next_wait(Duration::ZERO, None, Some(two_days)),
            p.stall_timeout
        );
        // A history within the cap is followed as before.
        let hour = Duration::from_secs(3600);
        let lead = hour.mul_f64(p.history_lead).min(p.stall_timeout);
        assert_eq!(p.next_wait(Duration::ZERO, None, Some(hour)), lead);
        let ten_min = Duration::from_secs(600);
        assert_eq!(
            p.next_wait(Duration::ZERO, None, Some(ten_min)),
            ten_min.mul_f64(p.history_lead)
        );
    }

    #[test]
    fn only_a_gap_well_past_its_plan_interrupts_the_timing() {
        let p = PollPolicy::default();
        let planned = Duration::from_secs(4);
        // On time, or late as a busy runner or a retried call makes it.
        assert!(!p.interrupts_timing(planned, Some(planned)));
        assert!(!p.interrupts_timing(planned, Some(planned + p.max)));
        assert!(!p.interrupts_timing(Duration::ZERO, Some(Duration::from_millis(30))));
        // A downtime or a jump ahead, or the clock stepped back.
        assert!(p.interrupts_timing(planned, Some(planned + p.max + Duration::from_secs(1))));
        assert!(p.interrupts_timing(planned, Some(Duration::from_secs(2 * 24 * 3600))));
        assert!(p.interrupts_timing(planned, None));
    }

    #[test]
    fn resumed_poll_after_a_long_outage_is_prompt() {
        // A restart long after the export was created: the first wait must not be huge.
        let p = PollPolicy::default();
        let w = p.next_wait(Duration::from_secs(5000), None, None);
        assert!(w <= p.initial);
    }
}
