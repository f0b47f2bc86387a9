//! Turning client errors into engine step errors: what is retried, after how long, and what
//! the message says (always env, collection and export job where known, plus errcode/errmsg).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tcb_state::StepError;

use crate::client::{ApiError, ErrorClass};

/// The retry hint for throttling codes: 45011 means "retry next minute", -501004 (env
/// concurrency quota) clears quickly.
pub fn retry_hint(err: &ApiError, now: SystemTime) -> Option<Duration> {
    match err.errcode() {
        Some(45011) => {
            let secs = now
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            // Until the next minute starts, plus a second of margin for clock skew.
            Some(Duration::from_secs(60 - secs % 60 + 1))
        }
        Some(-501004) => Some(Duration::from_secs(2)),
        _ => None,
    }
}

/// Maps `err`, raised while doing `what` (e.g. "export job 100000012 for env prod/orders"),
/// to the step error the engine acts on.
pub fn step_error(what: &str, err: &ApiError, now: SystemTime) -> StepError {
    let message = format!("{what}: {err}");
    match err.class() {
        ErrorClass::Transient | ErrorClass::RefreshToken => StepError::Retryable {
            message,
            retry_after: retry_hint(err, now),
        },
        ErrorClass::Quota => StepError::permanent(format!(
            "{message} (quota exhausted: wait for the quota to reset, then `tcb-backup retry`)"
        )),
        ErrorClass::PermanentConfig => {
            StepError::permanent(format!("{message} (configuration problem: not retried)"))
        }
        ErrorClass::PermanentRequest => StepError::permanent(message),
    }
}

/// True when the error says the app's credentials (appid, secret, IP whitelist, frozen secret)
/// are unusable: the CLI reports these with exit code 12.
pub fn is_credential_error(err: &ApiError) -> bool {
    err.is_token_endpoint()
        && matches!(
            err.class(),
            ErrorClass::PermanentConfig | ErrorClass::PermanentRequest
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::ApiErrorKind;

    fn api(endpoint: &str, errcode: i64) -> ApiError {
        ApiError::new(
            endpoint,
            ApiErrorKind::Api {
                errcode,
                errmsg: "boom rid: 1-2-3".into(),
            },
        )
    }

    #[test]
    fn throttling_waits_for_the_next_minute() {
        let now = UNIX_EPOCH + Duration::from_secs(600 + 45);
        match step_error("x", &api("databasemigratequeryinfo", 45011), now) {
            StepError::Retryable { retry_after, .. } => {
                assert_eq!(retry_after, Some(Duration::from_secs(16)))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn env_concurrency_is_short_and_system_errors_have_no_hint() {
        let now = SystemTime::now();
        let e = step_error("x", &api("databasemigrateexport", -501004), now);
        assert!(
            matches!(e, StepError::Retryable { retry_after: Some(d), .. } if d <= Duration::from_secs(5))
        );
        let e = step_error("x", &api("databasemigrateexport", -1), now);
        assert!(matches!(
            e,
            StepError::Retryable {
                retry_after: None,
                ..
            }
        ));
    }

    #[test]
    fn permanent_errors_carry_errcode_and_context() {
        let e = step_error(
            "export for env prod/orders",
            &api("databasemigrateexport", -501007),
            SystemTime::now(),
        );
        match e {
            StepError::Permanent { message } => {
                assert!(message.contains("-501007"), "{message}");
                assert!(message.contains("prod/orders"), "{message}");
                assert!(message.contains("boom"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_secret_is_a_credential_error() {
        assert!(is_credential_error(&api("cgi-bin/stable_token", 40125)));
        assert!(!is_credential_error(&api("databasemigrateexport", 40097)));
    }
}
