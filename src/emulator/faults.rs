//! Fault injection (reference §12.F.21): rules per endpoint that fire for the next N calls or
//! with a seeded probability, plus the per-endpoint call counters tests and benchmarks assert on.
//!
//! Endpoint names: `token`, `stable_token`, every `/tcb/` name (`databasemigrateexport`, ...),
//! `cos_upload`, `download`, or `*` for every endpoint.

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// What an injected fault does.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FaultAction {
    /// Answer HTTP 200 with this errcode (errmsg defaults to the standard message).
    Errcode {
        errcode: i64,
        #[serde(default)]
        errmsg: Option<String>,
    },
    /// Answer with this HTTP status (e.g. 502) and a non-JSON body.
    HttpStatus { status: u16 },
    /// Drop the connection without a complete response.
    Reset,
    /// Delay the response (real milliseconds), then handle the call normally.
    Latency { millis: u64 },
    /// HTTP 200 with a body that is not valid JSON.
    InvalidJson,
    /// Downloads: announce the full length but send only `keep_bytes` (default: half).
    TruncateBody {
        #[serde(default)]
        keep_bytes: Option<u64>,
    },
    /// Downloads: flip one byte in the middle of the body.
    CorruptBody,
    /// Downloads: send the body in 16 KiB chunks with this real delay before each.
    SlowBody { millis_per_chunk: u64 },
    /// Downloads: answer 403 "Request has expired" whatever the signature says.
    ExpiredUrl,
    /// Downloads: answer 404 NoSuchKey.
    NotFound,
    /// Export/import: the created job stays in `waiting` forever.
    StuckJob,
    /// Export/import: the created job ends in `fail` with this message.
    FailJob { message: String },
}

/// One fault rule.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct FaultRule {
    pub endpoint: String,
    pub action: FaultAction,
    /// Fire for this many matching calls, then disappear (`None` = no limit).
    #[serde(default)]
    pub times: Option<u64>,
    /// Fire with this probability per matching call (seeded RNG; `None` = always).
    #[serde(default)]
    pub probability: Option<f64>,
}

impl FaultRule {
    /// Fire for the next `n` calls of `endpoint`.
    pub fn next(endpoint: &str, n: u64, action: FaultAction) -> Self {
        FaultRule {
            endpoint: endpoint.to_string(),
            action,
            times: Some(n),
            probability: None,
        }
    }

    /// Fire on each call of `endpoint` with probability `p` until removed.
    pub fn with_probability(endpoint: &str, p: f64, action: FaultAction) -> Self {
        FaultRule {
            endpoint: endpoint.to_string(),
            action,
            times: None,
            probability: Some(p),
        }
    }
}

#[derive(Debug)]
pub struct FaultBook {
    rules: Vec<(u64, FaultRule)>,
    next_id: u64,
    rng: StdRng,
}

impl FaultBook {
    pub fn new(seed: u64) -> Self {
        FaultBook {
            rules: Vec::new(),
            next_id: 1,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    pub fn add(&mut self, rule: FaultRule) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.rules.push((id, rule));
        id
    }

    pub fn clear(&mut self) {
        self.rules.clear();
    }

    pub fn remove(&mut self, id: u64) -> bool {
        let before = self.rules.len();
        self.rules.retain(|(i, _)| *i != id);
        before != self.rules.len()
    }

    pub fn list(&self) -> Vec<(u64, FaultRule)> {
        self.rules.clone()
    }

    /// The actions that fire for one call of `endpoint` (consuming `times`).
    pub fn take(&mut self, endpoint: &str) -> Vec<FaultAction> {
        let mut fired = Vec::new();
        for (_, rule) in self.rules.iter_mut() {
            if rule.endpoint != endpoint && rule.endpoint != "*" {
                continue;
            }
            if rule.times == Some(0) {
                continue;
            }
            if let Some(p) = rule.probability {
                if self.rng.gen::<f64>() >= p {
                    continue;
                }
            }
            if let Some(t) = rule.times.as_mut() {
                *t -= 1;
            }
            fired.push(rule.action.clone());
        }
        self.rules.retain(|(_, r)| r.times != Some(0));
        fired
    }
}

/// Calls seen by one endpoint.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct EndpointStats {
    /// Calls that arrived, counted before anything can cut them off: a client killed (or
    /// timing out) mid-call made the call all the same, and the server may have acted on it.
    pub calls: u64,
    /// errcode → calls answered with it (0 = success) for JSON answers.
    pub errcodes: BTreeMap<i64, u64>,
    /// HTTP status → calls, for every answer sent (0 = connection reset on purpose).
    pub http_statuses: BTreeMap<u16, u64>,
    /// Calls on which an injected fault fired, counted when it is decided.
    pub faults_injected: u64,
}

impl EndpointStats {
    /// Calls that never got an answer: the client went away while the server worked on them.
    pub fn unanswered(&self) -> u64 {
        let answered: u64 = self.http_statuses.values().sum();
        self.calls.saturating_sub(answered)
    }
}

/// Counters of every call, per endpoint.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Counters {
    pub endpoints: BTreeMap<String, EndpointStats>,
}

impl Counters {
    /// A call arrived at `endpoint`; `faulted`: an injected fault fired for it. Counted on
    /// arrival, not with the answer, so that calls cut off before their answer (the client
    /// killed or gone) are counted too and the fault rate is faults per call made.
    pub fn arrived(&mut self, endpoint: &str, faulted: bool) {
        let e = self.endpoints.entry(endpoint.to_string()).or_default();
        e.calls += 1;
        if faulted {
            e.faults_injected += 1;
        }
    }

    /// The answer sent to a call counted by [`Counters::arrived`].
    pub fn answered(&mut self, endpoint: &str, http_status: u16, errcode: Option<i64>) {
        let e = self.endpoints.entry(endpoint.to_string()).or_default();
        *e.http_statuses.entry(http_status).or_default() += 1;
        if let Some(code) = errcode {
            *e.errcodes.entry(code).or_default() += 1;
        }
    }

    /// Total calls of an endpoint.
    pub fn calls(&self, endpoint: &str) -> u64 {
        self.endpoints.get(endpoint).map_or(0, |e| e.calls)
    }

    /// Calls of an endpoint answered with `errcode`.
    pub fn errcode(&self, endpoint: &str, errcode: i64) -> u64 {
        self.endpoints
            .get(endpoint)
            .and_then(|e| e.errcodes.get(&errcode).copied())
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_n_then_gone() {
        let mut b = FaultBook::new(1);
        b.add(FaultRule::next("x", 2, FaultAction::Reset));
        assert_eq!(b.take("y"), vec![]);
        assert_eq!(b.take("x"), vec![FaultAction::Reset]);
        assert_eq!(b.take("x"), vec![FaultAction::Reset]);
        assert_eq!(b.take("x"), vec![]);
        assert!(b.list().is_empty());
    }

    #[test]
    fn probability_is_seeded() {
        let run = || {
            let mut b = FaultBook::new(42);
            b.add(FaultRule::with_probability(
                "*",
                0.3,
                FaultAction::InvalidJson,
            ));
            (0..100)
                .map(|_| !b.take("a").is_empty())
                .collect::<Vec<_>>()
        };
        let a = run();
        assert_eq!(a, run());
        let hits = a.iter().filter(|h| **h).count();
        assert!((10..50).contains(&hits), "{hits}");
    }
}
