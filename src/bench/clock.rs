//! Engine clocks that follow the emulator's virtual clock, so the workflow, the client's token
//! cache and the emulator's export jobs all agree on the time.
//!
//! - [`EmulatorClock::virtual_time`]: the emulator's clock is frozen and the engine jumps it to
//!   the next wake-up whenever nothing is running. Status calls, waits and detection lag are
//!   then exact and deterministic, and a 10-minute export costs no real waiting.
//! - [`EmulatorClock::scaled`]: the emulator's clock runs `scale` × real time and the engine
//!   really sleeps `wait / scale`. Real overheads (HTTP, fsync, store commits) count, magnified
//!   by `scale` when expressed in virtual seconds, so a figure that passes scaled also passes
//!   at 1×.

use std::time::{Duration, SystemTime};

use tcb_state::{Clock, SleepFuture};

use crate::emulator::EmulatorControl;

#[derive(Debug, Clone)]
pub struct EmulatorClock {
    control: EmulatorControl,
    /// `None`: frozen emulator, time jumps on sleep; `Some(s)`: emulator runs at `s` × real time.
    scale: Option<f64>,
}

impl EmulatorClock {
    /// Freezes the emulator's clock; the engine advances it when idle.
    pub fn virtual_time(control: EmulatorControl) -> Self {
        control.set_time_scale(0.0);
        EmulatorClock {
            control,
            scale: None,
        }
    }

    /// Runs the emulator's clock at `scale` × real time (clamped to at least 0.001).
    pub fn scaled(control: EmulatorControl, scale: f64) -> Self {
        let scale = if scale.is_finite() {
            scale.max(0.001)
        } else {
            1.0
        };
        control.set_time_scale(scale);
        EmulatorClock {
            control,
            scale: Some(scale),
        }
    }
}

impl Clock for EmulatorClock {
    fn now(&self) -> SystemTime {
        self.control.now()
    }

    fn sleep_until(&self, at: SystemTime) -> SleepFuture {
        let ahead = at
            .duration_since(self.control.now())
            .unwrap_or(Duration::ZERO);
        match self.scale {
            None => {
                // The emulator keeps time as f64 seconds (~0.25 µs resolution today): nudge
                // until `now() >= at`, or the runner would find nothing due and spin.
                let mut step = ahead;
                for _ in 0..64 {
                    if self.control.now() >= at {
                        break;
                    }
                    self.control
                        .advance_clock(step.max(Duration::from_micros(1)));
                    step = Duration::from_micros(1);
                }
                Box::pin(std::future::ready(()))
            }
            // Capped so that a change of scale or a clock jump is noticed soon.
            Some(scale) => Box::pin(tokio::time::sleep(
                ahead.div_f64(scale).min(Duration::from_secs(5)),
            )),
        }
    }

    fn advances_on_sleep(&self) -> bool {
        self.scale.is_none()
    }
}
