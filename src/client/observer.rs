//! A hook the client calls once per HTTP call it makes (token endpoint, every `/tcb/*` call,
//! the COS upload POST, file downloads), with the endpoint name, how the call ended and how
//! long it took. The daemon feeds its Prometheus counters from it; anything else (logs,
//! tests) may watch the same way.
//!
//! What an observer sees is safe to export: the endpoint is one of the client's fixed names
//! (never a URL, so never a token or a signed query), and the outcome is a small enum.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::error::{ApiError, ApiErrorKind};

/// How one HTTP call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallOutcome {
    /// A 2xx answer (and, for JSON endpoints, `errcode` 0).
    Ok,
    /// HTTP 200 with a non-zero `errcode`.
    Errcode(i64),
    /// A non-2xx HTTP status (including COS XML errors, expired/missing download URLs).
    HttpStatus(u16),
    /// Connect failure, reset, TLS or body read error.
    Transport,
    /// Connect, request or read timeout.
    Timeout,
    /// The answer did not have the documented shape, or was too large.
    InvalidResponse,
    /// Refused before sending (insecure URL, unusable configuration).
    Refused,
}

impl CallOutcome {
    /// The outcome of a call that failed with `err`.
    pub fn of_error(err: &ApiError) -> CallOutcome {
        match &err.kind {
            ApiErrorKind::Api { errcode, .. } => CallOutcome::Errcode(*errcode),
            ApiErrorKind::Http { status } | ApiErrorKind::Cos { status, .. } => {
                CallOutcome::HttpStatus(*status)
            }
            ApiErrorKind::UrlExpired => CallOutcome::HttpStatus(403),
            ApiErrorKind::NotFound => CallOutcome::HttpStatus(404),
            ApiErrorKind::Transport(_) => CallOutcome::Transport,
            ApiErrorKind::Timeout => CallOutcome::Timeout,
            ApiErrorKind::InvalidResponse(_) | ApiErrorKind::TooLarge => {
                CallOutcome::InvalidResponse
            }
            ApiErrorKind::InsecureUrl(_) | ApiErrorKind::Config(_) => CallOutcome::Refused,
        }
    }

    /// The outcome of a call's result.
    pub fn of<T>(result: &Result<T, ApiError>) -> CallOutcome {
        match result {
            Ok(_) => CallOutcome::Ok,
            Err(e) => CallOutcome::of_error(e),
        }
    }

    /// A short fixed name: `ok`, `errcode`, `http_status`, `transport`, `timeout`,
    /// `invalid_response`, `refused` (for metric labels of bounded cardinality).
    pub fn kind(&self) -> &'static str {
        match self {
            CallOutcome::Ok => "ok",
            CallOutcome::Errcode(_) => "errcode",
            CallOutcome::HttpStatus(_) => "http_status",
            CallOutcome::Transport => "transport",
            CallOutcome::Timeout => "timeout",
            CallOutcome::InvalidResponse => "invalid_response",
            CallOutcome::Refused => "refused",
        }
    }
}

/// One finished HTTP call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiCall<'a> {
    /// The client's name for the endpoint: `databasemigrateexport`, `cgi-bin/stable_token`,
    /// `cos-upload`, `download`, ...
    pub endpoint: &'a str,
    pub outcome: CallOutcome,
    /// From sending the request to the parsed answer (for downloads: to the response headers).
    pub duration: Duration,
}

/// Watches the calls of a [`super::CloudBaseClient`]. Called on the calling task: keep it cheap
/// and never block.
pub trait ApiObserver: Send + Sync {
    fn observe(&self, call: &ApiCall<'_>);
}

/// The observer slot of a client (cheap to clone: the observer is shared).
#[derive(Clone, Default)]
pub(crate) struct ObserverSlot(Option<Arc<dyn ApiObserver>>);

impl ObserverSlot {
    pub(crate) fn new(observer: Option<Arc<dyn ApiObserver>>) -> Self {
        ObserverSlot(observer)
    }

    pub(crate) fn record<T>(
        &self,
        endpoint: &str,
        started: std::time::Instant,
        result: &Result<T, ApiError>,
    ) {
        if let Some(o) = &self.0 {
            o.observe(&ApiCall {
                endpoint,
                outcome: CallOutcome::of(result),
                duration: started.elapsed(),
            });
        }
    }
}

impl fmt::Debug for ObserverSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "ObserverSlot(set)"
        } else {
            "ObserverSlot(none)"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn outcomes_of_every_error_kind() {
        let of = |kind| CallOutcome::of_error(&ApiError::new("x", kind));
        assert_eq!(
            of(ApiErrorKind::Api {
                errcode: -501001,
                errmsg: "busy".into()
            }),
            CallOutcome::Errcode(-501001)
        );
        assert_eq!(
            of(ApiErrorKind::Http { status: 502 }),
            CallOutcome::HttpStatus(502)
        );
        assert_eq!(
            of(ApiErrorKind::Cos {
                status: 403,
                code: "AccessDenied".into(),
                message: String::new()
            }),
            CallOutcome::HttpStatus(403)
        );
        assert_eq!(of(ApiErrorKind::UrlExpired), CallOutcome::HttpStatus(403));
        assert_eq!(of(ApiErrorKind::NotFound), CallOutcome::HttpStatus(404));
        assert_eq!(
            of(ApiErrorKind::Transport("reset".into())),
            CallOutcome::Transport
        );
        assert_eq!(of(ApiErrorKind::Timeout), CallOutcome::Timeout);
        assert_eq!(of(ApiErrorKind::TooLarge), CallOutcome::InvalidResponse);
        assert_eq!(
            of(ApiErrorKind::InvalidResponse("x".into())),
            CallOutcome::InvalidResponse
        );
        assert_eq!(
            of(ApiErrorKind::InsecureUrl("http://x".into())),
            CallOutcome::Refused
        );
        assert_eq!(CallOutcome::of(&Ok::<(), ApiError>(())), CallOutcome::Ok);
        assert_eq!(CallOutcome::Errcode(1).kind(), "errcode");
    }

    #[derive(Default)]
    struct Seen(Mutex<Vec<(String, CallOutcome)>>);
    impl ApiObserver for Seen {
        fn observe(&self, call: &ApiCall<'_>) {
            self.0
                .lock()
                .unwrap()
                .push((call.endpoint.to_string(), call.outcome));
        }
    }

    #[test]
    fn slot_reports_once_per_call_and_is_silent_when_empty() {
        let seen = Arc::new(Seen::default());
        let slot = ObserverSlot::new(Some(seen.clone()));
        slot.record(
            "databasecount",
            std::time::Instant::now(),
            &Ok::<u8, ApiError>(1),
        );
        slot.record(
            "download",
            std::time::Instant::now(),
            &Err::<u8, ApiError>(ApiError::new("download", ApiErrorKind::UrlExpired)),
        );
        ObserverSlot::default().record("x", std::time::Instant::now(), &Ok::<u8, ApiError>(1));
        assert_eq!(
            *seen.0.lock().unwrap(),
            vec![
                ("databasecount".to_string(), CallOutcome::Ok),
                ("download".to_string(), CallOutcome::HttpStatus(403)),
            ]
        );
    }
}
