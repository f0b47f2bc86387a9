//! Call quotas and rate limits (reference §1, §10, §12.B.8, §12.F.20): per-app token quotas on
//! the virtual clock (daily windows reset at the configured local midnight), per-env QPS on the
//! real clock (it models load), per-env daily request/read/write budgets.

use std::collections::HashMap;
use std::time::Instant;

use super::tokens::day_index;

#[derive(Debug)]
pub struct QuotaBook {
    /// (scope, counter name) → (window index, calls in that window)
    windows: HashMap<(String, &'static str), (i64, u64)>,
    qps: HashMap<String, (u64, u64)>,
    started: Instant,
}

impl Default for QuotaBook {
    fn default() -> Self {
        QuotaBook {
            windows: HashMap::new(),
            qps: HashMap::new(),
            started: Instant::now(),
        }
    }
}

impl QuotaBook {
    /// Count one call in the daily window; `true` if it is within `limit`.
    pub fn take_daily(
        &mut self,
        scope: &str,
        name: &'static str,
        limit: Option<u64>,
        now: f64,
        day_offset: i64,
    ) -> bool {
        self.take(scope, name, limit, day_index(now, day_offset))
    }

    /// Count one call in the (virtual) minute window.
    pub fn take_minute(
        &mut self,
        scope: &str,
        name: &'static str,
        limit: Option<u64>,
        now: f64,
    ) -> bool {
        self.take(scope, name, limit, (now / 60.0).floor() as i64)
    }

    fn take(&mut self, scope: &str, name: &'static str, limit: Option<u64>, window: i64) -> bool {
        let entry = self
            .windows
            .entry((scope.to_string(), name))
            .or_insert((window, 0));
        if entry.0 != window {
            *entry = (window, 0);
        }
        entry.1 += 1;
        limit.is_none_or(|l| entry.1 <= l)
    }

    /// Count one call against the env's real-time QPS limit.
    pub fn take_qps(&mut self, env: &str, limit: Option<u64>) -> bool {
        let second = self.started.elapsed().as_secs();
        let entry = self.qps.entry(env.to_string()).or_insert((second, 0));
        if entry.0 != second {
            *entry = (second, 0);
        }
        entry.1 += 1;
        limit.is_none_or(|l| entry.1 <= l)
    }

    /// The control API's clear_quota: every counter back to zero.
    pub fn clear(&mut self) {
        self.windows.clear();
        self.qps.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn daily_window_resets_at_local_midnight() {
        let mut q = QuotaBook::default();
        let offset = 8 * 3600;
        // 15:59:59 UTC = 23:59:59 Beijing
        let t = 86_400.0 * 100.0 + 16.0 * 3600.0 - 1.0;
        assert!(q.take_daily("a", "token", Some(1), t, offset));
        assert!(!q.take_daily("a", "token", Some(1), t, offset));
        assert!(q.take_daily("a", "token", Some(1), t + 2.0, offset));
        q.clear();
        assert!(q.take_daily("a", "token", Some(1), t + 2.0, offset));
    }
}
