//! The one error type of the CloudBase client and the retry classification of every errcode.
//!
//! An [`ApiError`] always names the endpoint it came from and is safe to print: messages that
//! originate from the network (reqwest errors, server `errmsg`s, COS error bodies) pass through
//! [`redact`](super::redact::redact) before they are stored here, so neither an access token nor
//! an AppSecret can leak through `Display` or `Debug`.
//!
//! The classification follows §0.1, §1.1 and §10 of `docs/wechat-api.md`; `docs/client.md`
//! carries the same table in prose.

use std::fmt;

/// Endpoint names used for the two token endpoints. At these endpoints 40001/40014 mean
/// "wrong secret" rather than "refresh your token", so [`ApiError::class`] treats them apart.
pub const TOKEN_ENDPOINT_LEGACY: &str = "cgi-bin/token";
/// See [`TOKEN_ENDPOINT_LEGACY`].
pub const TOKEN_ENDPOINT_STABLE: &str = "cgi-bin/stable_token";

/// What a caller should do about an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// Retry with back-off; the same request may well succeed later.
    Transient,
    /// The access token is unusable: refresh it once and retry once (the client does this
    /// itself; a caller only sees this class when the retry failed too).
    RefreshToken,
    /// A daily/env quota is exhausted: stop this app/env until the quota resets; alert.
    Quota,
    /// The app, env or machine is misconfigured (secret, IP whitelist, env id, permissions):
    /// never retry automatically, a human has to act.
    PermanentConfig,
    /// The request itself is wrong or refers to something that does not exist: retrying the
    /// same request cannot help.
    PermanentRequest,
}

impl ErrorClass {
    /// True for the classes a retry loop may retry (after a token refresh for `RefreshToken`).
    pub fn is_retryable(self) -> bool {
        matches!(self, ErrorClass::Transient | ErrorClass::RefreshToken)
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorClass::Transient => "transient",
            ErrorClass::RefreshToken => "refresh-token",
            ErrorClass::Quota => "quota",
            ErrorClass::PermanentConfig => "permanent-config",
            ErrorClass::PermanentRequest => "permanent-request",
        })
    }
}

/// Retry class of an errcode returned by a `/tcb/*` endpoint (and of the platform-level codes).
///
/// Codes the reference does not list are `PermanentRequest`: retrying an unknown failure
/// blindly is worse than surfacing it.
pub fn classify_errcode(code: i64) -> ErrorClass {
    use ErrorClass::*;
    match code {
        // Platform-level and generic system errors.
        -1 | -1000 | 45011 => Transient,
        40001 | 40014 | 42001 => RefreshToken,
        45009 => Quota,
        40164 | 40243 | 89503 | 85088 | 40013 | 40125 | 41002 | 41004 | 61004 => PermanentConfig,
        40002 | 40097 | 40101 | 41001 | 43002 | 44002 | 47001 => PermanentRequest,
        // CloudBase SDK-level codes that can surface through HTTP.
        -401001 => PermanentConfig,
        -401002 | -401003 | -403001 => PermanentRequest,
        // -5010xx: cloud platform.
        -501001 | -501002 | -501004 | -501018 => Transient,
        -501003 | -501015 | -501016 => Quota,
        -501005 | -501007 | -501017 | -501019 => PermanentConfig,
        -501000 | -501009 | -501020 | -501021 => PermanentRequest,
        // -5020xx: database.
        -502001 | -502011 => Transient,
        -502003 => PermanentConfig,
        // -502010, -502012..-502015 are "transient once, then permanent" in the reference; the
        // client cannot count, so they are permanent here and the next scheduled run retries.
        -502002 | -502005 | -502010 | -502015..=-502012 => PermanentRequest,
        // -5030xx: storage.
        -503001 => Transient,
        -503002 => PermanentConfig,
        -503003 => PermanentRequest,
        // -5040xx: cloud functions.
        -504001 | -504002 => Transient,
        // -6010xx: WeChat backend.
        -601001 | -601003 => Transient,
        -601002 => PermanentRequest,
        _ => PermanentRequest,
    }
}

/// Retry class of an errcode returned by a token endpoint: there 40001/40014 mean a wrong or
/// foreign AppSecret (configuration), not an expired token.
pub fn classify_token_errcode(code: i64) -> ErrorClass {
    match code {
        40001 | 40014 | 42001 => ErrorClass::PermanentConfig,
        other => classify_errcode(other),
    }
}

/// Short English meaning of an errcode, for error messages; `None` for codes we do not know.
pub fn errcode_meaning(code: i64) -> Option<&'static str> {
    Some(match code {
        -1 => "system busy",
        -1000 => "system error",
        40001 => "access token invalid or not latest (at token fetch: wrong AppSecret)",
        40002 => "grant_type must be client_credential",
        40013 => "invalid AppID",
        40014 => "access token invalid",
        40097 => "request parameter invalid",
        40101 => "required parameter missing",
        40125 => "invalid AppSecret",
        40164 => "caller IP not in the API IP whitelist",
        40243 => "AppSecret is frozen",
        41001 => "access token missing",
        41002 => "appid missing",
        41004 => "appsecret missing",
        42001 => "access token expired",
        43002 => "wrong HTTP method",
        44002 => "POST body empty",
        45009 => "daily API quota exhausted",
        45011 => "per-minute API frequency limit",
        47001 => "POST body malformed",
        61004 => "client IP not registered",
        85088 => "cloud development not enabled for this app",
        89503 => "risky call: an admin must confirm this IP",
        -401001 => "no permission",
        -401002 => "bad parameter",
        -401003 => "bad parameter type",
        -403001 => "upload exceeds size limit",
        -501000 => "parameter missing",
        -501001 => "cloud system error",
        -501002 => "cloud response timeout",
        -501003 => "request count exceeds env quota",
        -501004 => "concurrency exceeds env quota",
        -501005 => "environment info abnormal",
        -501007 => "parameter error (e.g. env does not exist)",
        -501009 => "target resource invalid or not found",
        -501015 => "daily read quota exhausted",
        -501016 => "daily write quota exhausted",
        -501017 => "disk full",
        -501018 => "resource unavailable",
        -501019 => "unauthorized operation",
        -501020 => "unknown parameter error",
        -501021 => "unsupported operation",
        -502001 => "database request failed",
        -502002 => "illegal database command",
        -502003 => "no permission on database",
        -502005 => "collection does not exist",
        -502010 => "database operation failed",
        -502011 => "database operation timeout",
        -502012 => "database insert failed",
        -502013 => "create collection failed",
        -502014 => "database delete failed",
        -502015 => "database query failed",
        -503001 => "storage request failed",
        -503002 => "no permission on storage",
        -503003 => "file not found or illegal signature",
        -504001 => "cloud function call failed",
        -504002 => "cloud function execution failed",
        -601001 => "WeChat backend system error",
        -601002 => "WeChat backend parameter error",
        -601003 => "WeChat backend network error",
        _ => return None,
    })
}

/// An error from one client call. `Display` looks like
/// `databasemigrateexport: errcode -501004 (concurrency exceeds env quota): <errmsg incl. rid>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{endpoint}: {kind}")]
pub struct ApiError {
    /// Endpoint name without host or query, e.g. `databasemigrateexport`, `cgi-bin/token`,
    /// `cos-upload`, `download`.
    pub endpoint: String,
    /// What went wrong.
    pub kind: ApiErrorKind,
}

/// What went wrong in an [`ApiError`]. Every string inside is already redacted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiErrorKind {
    /// The server answered with a non-zero `errcode`; `errmsg` keeps its `rid:` suffix.
    #[error("errcode {errcode}{}: {errmsg}", meaning_suffix(*.errcode))]
    Api { errcode: i64, errmsg: String },
    /// A non-2xx HTTP status without a more specific meaning.
    #[error("HTTP status {status}")]
    Http { status: u16 },
    /// COS (upload) answered with an XML `<Error>`; `code` is its `<Code>`.
    #[error("COS error {code} (HTTP {status}): {message}")]
    Cos {
        status: u16,
        code: String,
        message: String,
    },
    /// A download URL was refused with 403 (COS: AccessDenied / "Request has expired"):
    /// fetch a fresh URL and try again.
    #[error("download URL expired or refused (HTTP 403); request a fresh URL")]
    UrlExpired,
    /// The file behind a URL does not exist (HTTP 404).
    #[error("file not found (HTTP 404)")]
    NotFound,
    /// Connection failure, reset, TLS or body read error (message redacted).
    #[error("transport error: {0}")]
    Transport(String),
    /// Connect, request or read timeout.
    #[error("timed out")]
    Timeout,
    /// The response did not have the documented shape (bad JSON, wrong types, missing fields).
    #[error("invalid response: {0}")]
    InvalidResponse(String),
    /// The JSON response exceeded the configured size cap (`max_json_bytes`).
    #[error("response larger than the configured max_json_bytes limit")]
    TooLarge,
    /// A URL (configured or returned by the server) is not https and not loopback.
    #[error("refusing insecure URL (https required except for loopback): {0}")]
    InsecureUrl(String),
    /// The client was built with an unusable configuration.
    #[error("invalid client configuration: {0}")]
    Config(String),
}

fn meaning_suffix(code: i64) -> String {
    match errcode_meaning(code) {
        Some(m) => format!(" ({m})"),
        None => String::new(),
    }
}

impl ApiError {
    /// Builds an error for `endpoint`.
    pub fn new(endpoint: impl Into<String>, kind: ApiErrorKind) -> Self {
        ApiError {
            endpoint: endpoint.into(),
            kind,
        }
    }

    /// The server errcode, if this is an API-level error.
    pub fn errcode(&self) -> Option<i64> {
        match self.kind {
            ApiErrorKind::Api { errcode, .. } => Some(errcode),
            _ => None,
        }
    }

    /// True when the endpoint is one of the two token endpoints.
    pub fn is_token_endpoint(&self) -> bool {
        self.endpoint == TOKEN_ENDPOINT_LEGACY || self.endpoint == TOKEN_ENDPOINT_STABLE
    }

    /// What a caller should do about this error (see [`ErrorClass`]).
    pub fn class(&self) -> ErrorClass {
        match &self.kind {
            ApiErrorKind::Api { errcode, .. } => {
                if self.is_token_endpoint() {
                    classify_token_errcode(*errcode)
                } else {
                    classify_errcode(*errcode)
                }
            }
            ApiErrorKind::Http { status } => classify_http_status(*status),
            ApiErrorKind::Cos { status, code, .. } => classify_cos(*status, code),
            // A fresh URL is one query away; the step that downloads retries.
            ApiErrorKind::UrlExpired => ErrorClass::Transient,
            ApiErrorKind::NotFound => ErrorClass::PermanentRequest,
            ApiErrorKind::Transport(_) | ApiErrorKind::Timeout => ErrorClass::Transient,
            ApiErrorKind::InvalidResponse(_) => ErrorClass::Transient,
            ApiErrorKind::TooLarge => ErrorClass::PermanentRequest,
            ApiErrorKind::InsecureUrl(_) | ApiErrorKind::Config(_) => ErrorClass::PermanentConfig,
        }
    }
}

/// Class of a bare HTTP status: 5xx, 408 and 429 are transient, other statuses permanent.
pub fn classify_http_status(status: u16) -> ErrorClass {
    match status {
        408 | 429 | 500..=599 => ErrorClass::Transient,
        _ => ErrorClass::PermanentRequest,
    }
}

fn classify_cos(status: u16, code: &str) -> ErrorClass {
    match code {
        "InternalError" | "ServiceUnavailable" | "SlowDown" | "RequestTimeout" => {
            ErrorClass::Transient
        }
        // Expired upload credentials: a new uploadfile call gets fresh ones.
        "AccessDenied" | "RequestTimeTooSkewed" | "ExpiredToken" => ErrorClass::Transient,
        _ => classify_http_status(status),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ErrorClass::*;

    #[test]
    fn every_listed_code_has_its_class() {
        let table: &[(i64, ErrorClass)] = &[
            (-1, Transient),
            (-1000, Transient),
            (45011, Transient),
            (-501001, Transient),
            (-501002, Transient),
            (-501004, Transient),
            (-501018, Transient),
            (-502001, Transient),
            (-502011, Transient),
            (-503001, Transient),
            (-504001, Transient),
            (-504002, Transient),
            (-601001, Transient),
            (-601003, Transient),
            (40001, RefreshToken),
            (40014, RefreshToken),
            (42001, RefreshToken),
            (45009, Quota),
            (-501003, Quota),
            (-501015, Quota),
            (-501016, Quota),
            (40164, PermanentConfig),
            (40243, PermanentConfig),
            (89503, PermanentConfig),
            (85088, PermanentConfig),
            (40013, PermanentConfig),
            (40125, PermanentConfig),
            (41002, PermanentConfig),
            (41004, PermanentConfig),
            (61004, PermanentConfig),
            (-401001, PermanentConfig),
            (-501005, PermanentConfig),
            (-501007, PermanentConfig),
            (-501017, PermanentConfig),
            (-501019, PermanentConfig),
            (-502003, PermanentConfig),
            (-503002, PermanentConfig),
            (40002, PermanentRequest),
            (40097, PermanentRequest),
            (40101, PermanentRequest),
            (41001, PermanentRequest),
            (43002, PermanentRequest),
            (44002, PermanentRequest),
            (47001, PermanentRequest),
            (-401002, PermanentRequest),
            (-401003, PermanentRequest),
            (-403001, PermanentRequest),
            (-501000, PermanentRequest),
            (-501009, PermanentRequest),
            (-501020, PermanentRequest),
            (-501021, PermanentRequest),
            (-502002, PermanentRequest),
            (-502005, PermanentRequest),
            (-502010, PermanentRequest),
            (-502012, PermanentRequest),
            (-502013, PermanentRequest),
            (-502014, PermanentRequest),
            (-502015, PermanentRequest),
            (-503003, PermanentRequest),
            (-601002, PermanentRequest),
            (123456, PermanentRequest),
        ];
        for &(code, class) in table {
            assert_eq!(classify_errcode(code), class, "errcode {code}");
        }
    }

    #[test]
    fn token_endpoint_codes_are_configuration_errors() {
        assert_eq!(classify_token_errcode(40001), PermanentConfig);
        assert_eq!(classify_token_errcode(40014), PermanentConfig);
        assert_eq!(classify_token_errcode(-1), Transient);
        assert_eq!(classify_token_errcode(45009), Quota);
        let at_token = ApiError::new(
            TOKEN_ENDPOINT_STABLE,
            ApiErrorKind::Api {
                errcode: 40001,
                errmsg: "invalid credential".into(),
            },
        );
        assert_eq!(at_token.class(), PermanentConfig);
        let at_tcb = ApiError::new(
            "databasequery",
            ApiErrorKind::Api {
                errcode: 40001,
                errmsg: "invalid credential".into(),
            },
        );
        assert_eq!(at_tcb.class(), RefreshToken);
    }

    #[test]
    fn transport_level_kinds() {
        let e = |kind| ApiError::new("x", kind);
        assert_eq!(e(ApiErrorKind::Http { status: 502 }).class(), Transient);
        assert_eq!(e(ApiErrorKind::Http { status: 429 }).class(), Transient);
        assert_eq!(
            e(ApiErrorKind::Http { status: 400 }).class(),
            PermanentRequest
        );
        assert_eq!(e(ApiErrorKind::Timeout).class(), Transient);
        assert_eq!(
            e(ApiErrorKind::Transport("reset".into())).class(),
            Transient
        );
        assert_eq!(
            e(ApiErrorKind::InvalidResponse("x".into())).class(),
            Transient
        );
        assert_eq!(e(ApiErrorKind::UrlExpired).class(), Transient);
        assert_eq!(e(ApiErrorKind::NotFound).class(), PermanentRequest);
        assert_eq!(
            e(ApiErrorKind::InsecureUrl("http://x".into())).class(),
            PermanentConfig
        );
        let cos = |status, code: &str| {
            e(ApiErrorKind::Cos {
                status,
                code: code.into(),
                message: String::new(),
            })
            .class()
        };
        assert_eq!(cos(400, "MalformedPOSTRequest"), PermanentRequest);
        assert_eq!(cos(503, "SlowDown"), Transient);
        assert_eq!(cos(403, "AccessDenied"), Transient);
    }

    #[test]
    fn display_names_endpoint_code_meaning_and_message() {
        let err = ApiError::new(
            "databasemigrateexport",
            ApiErrorKind::Api {
                errcode: -501004,
                errmsg: "concurrency limit rid: 68d49773-32044106-7794eb1b".into(),
            },
        );
        assert_eq!(
            err.to_string(),
            "databasemigrateexport: errcode -501004 (concurrency exceeds env quota): \
             concurrency limit rid: 68d49773-32044106-7794eb1b"
        );
        assert_eq!(err.errcode(), Some(-501004));
        let unknown = ApiError::new(
            "databasequery",
            ApiErrorKind::Api {
                errcode: 777,
                errmsg: "odd".into(),
            },
        );
        assert_eq!(unknown.to_string(), "databasequery: errcode 777: odd");
    }
}
