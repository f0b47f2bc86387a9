//! HTTP plumbing shared by every endpoint: the two reqwest clients (JSON calls with a total
//! timeout, transfers with an idle-read timeout), the https-or-loopback URL rule, size-capped
//! body reading, reqwest error mapping and the `errcode` envelope check.

use std::net::IpAddr;

use serde::de::DeserializeOwned;
use url::{Host, Url};

use super::config::ClientConfig;
use super::error::{ApiError, ApiErrorKind};
use super::redact::{redact, reqwest_message};

/// Most redirects followed for a download (COS may redirect; the API never should).
const MAX_REDIRECTS: usize = 5;

/// Message of a refused redirect; recognised again when mapping the reqwest error.
const INSECURE_REDIRECT: &str = "redirect to an insecure URL refused";

/// Error bodies (COS XML, HTML error pages) are read only this far.
pub(crate) const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;

/// True for 127.0.0.0/8, ::1 (and v4-mapped loopback) and `localhost`.
pub fn is_loopback_host(url: &Url) -> bool {
    match url.host() {
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => {
            ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
        Some(Host::Domain(d)) => {
            let d = d.trim_end_matches('.').to_ascii_lowercase();
            d == "localhost"
                || d.ends_with(".localhost")
                || d.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
        }
        None => false,
    }
}

/// The https rule: https always; http only for loopback hosts or with `allow_insecure_http`.
pub fn check_url(url: &Url, allow_insecure_http: bool) -> Result<(), ApiErrorKind> {
    let shown = || redact(url.as_str());
    match url.scheme() {
        "https" => Ok(()),
        "http" if allow_insecure_http || is_loopback_host(url) => Ok(()),
        _ => Err(ApiErrorKind::InsecureUrl(shown())),
    }
}

/// The HTTP side of a client.
#[derive(Debug, Clone)]
pub(crate) struct Transport {
    /// JSON API calls: total request timeout, no redirects (a redirect would carry nothing
    /// useful and could move the call to another host).
    pub api: reqwest::Client,
    /// Uploads and downloads: idle-read timeout only, redirects under the https rule.
    pub transfer: reqwest::Client,
    pub max_json_bytes: usize,
}

impl Transport {
    pub fn new(cfg: &ClientConfig) -> Result<Self, ApiError> {
        let build_err = |e: reqwest::Error| {
            ApiError::new(
                "client",
                ApiErrorKind::Config(format!("cannot build HTTP client: {}", reqwest_message(e))),
            )
        };
        let api = reqwest::Client::builder()
            .connect_timeout(cfg.connect_timeout)
            .timeout(cfg.request_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(build_err)?;
        let allow = cfg.allow_insecure_http;
        let policy = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() >= MAX_REDIRECTS {
                attempt.error("too many redirects")
            } else if check_url(attempt.url(), allow).is_err() {
                attempt.error(INSECURE_REDIRECT)
            } else {
                attempt.follow()
            }
        });
        let transfer = reqwest::Client::builder()
            .connect_timeout(cfg.connect_timeout)
            .read_timeout(cfg.request_timeout)
            .redirect(policy)
            .build()
            .map_err(build_err)?;
        Ok(Transport {
            api,
            transfer,
            max_json_bytes: cfg.max_json_bytes,
        })
    }
}

/// Maps a reqwest error to an [`ApiError`] without its URL and with credentials redacted.
pub(crate) fn map_reqwest(endpoint: &str, err: reqwest::Error) -> ApiError {
    if err.is_timeout() {
        return ApiError::new(endpoint, ApiErrorKind::Timeout);
    }
    let redirect = err.is_redirect();
    let msg = reqwest_message(err);
    if redirect && msg.contains(INSECURE_REDIRECT) {
        return ApiError::new(endpoint, ApiErrorKind::InsecureUrl(msg));
    }
    ApiError::new(endpoint, ApiErrorKind::Transport(msg))
}

/// Reads a response body chunk by chunk, failing with `TooLarge` once it exceeds `limit`.
pub(crate) async fn read_capped(
    endpoint: &str,
    mut resp: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, ApiError> {
    if resp.content_length().is_some_and(|len| len > limit as u64) {
        return Err(ApiError::new(endpoint, ApiErrorKind::TooLarge));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| map_reqwest(endpoint, e))? {
        if body.len() + chunk.len() > limit {
            return Err(ApiError::new(endpoint, ApiErrorKind::TooLarge));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Reads at most `limit` bytes of an error body (the rest is dropped, not an error).
pub(crate) async fn read_error_body(mut resp: reqwest::Response, limit: usize) -> Vec<u8> {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = resp.chunk().await {
        let room = limit.saturating_sub(body.len());
        body.extend_from_slice(chunk.get(..room.min(chunk.len())).unwrap_or(&[]));
        if body.len() >= limit {
            break;
        }
    }
    body
}

/// Parses a JSON body as an object, checks `errcode` (absent = 0) and deserialises the rest.
pub(crate) fn parse_envelope<T: DeserializeOwned>(
    endpoint: &str,
    body: &[u8],
) -> Result<T, ApiError> {
    let invalid =
        |msg: String| ApiError::new(endpoint, ApiErrorKind::InvalidResponse(redact(&msg)));
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
        invalid(format!(
            "body is not valid JSON ({} bytes): {e}",
            body.len()
        ))
    })?;
    let serde_json::Value::Object(map) = &value else {
        return Err(invalid(format!(
            "expected a JSON object, got {}",
            json_kind(&value)
        )));
    };
    if let Some(code) = errcode_of(map).map_err(invalid)? {
        if code != 0 {
            let errmsg = match map.get("errmsg") {
                Some(serde_json::Value::String(s)) => redact(s),
                Some(other) => redact(&other.to_string()),
                None => String::new(),
            };
            return Err(ApiError::new(
                endpoint,
                ApiErrorKind::Api {
                    errcode: code,
                    errmsg,
                },
            ));
        }
    }
    serde_json::from_value(value).map_err(|e| invalid(e.to_string()))
}

fn errcode_of(map: &serde_json::Map<String, serde_json::Value>) -> Result<Option<i64>, String> {
    match map.get("errcode") {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::Number(n)) => n
            .as_i64()
            .map(Some)
            .ok_or_else(|| format!("errcode {n} is not an integer")),
        Some(serde_json::Value::String(s)) => s
            .trim()
            .parse::<i64>()
            .map(Some)
            .map_err(|_| "errcode is a non-numeric string".to_owned()),
        Some(other) => Err(format!(
            "errcode is {}, expected a number",
            json_kind(other)
        )),
    }
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// Appends path segments to the API base (which may itself carry a path prefix).
pub(crate) fn endpoint_url(base: &Url, segments: &[&str]) -> Result<Url, ApiErrorKind> {
    let mut url = base.clone();
    url.set_query(None);
    url.set_fragment(None);
    {
        let mut path = url
            .path_segments_mut()
            .map_err(|_| ApiErrorKind::Config("api_base cannot carry a path".to_owned()))?;
        path.pop_if_empty();
        path.extend(segments);
    }
    Ok(url)
}

/// Extracts `<Code>` and `<Message>` from a COS XML error body (no XML crate needed for two
/// flat tags; anything unparseable yields `None`).
pub(crate) fn cos_error_fields(body: &[u8]) -> Option<(String, String)> {
    let text = String::from_utf8_lossy(body);
    let tag = |name: &str| -> Option<String> {
        let open = format!("<{name}>");
        let close = format!("</{name}>");
        let start = text.find(&open)? + open.len();
        let len = text.get(start..)?.find(&close)?;
        text.get(start..start + len).map(|s| s.trim().to_owned())
    };
    let code = tag("Code")?;
    let message = tag("Message").unwrap_or_default();
    Some((redact(&code), redact(&message)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn https_rule() {
        assert!(check_url(&url("https://api.weixin.qq.com/x"), false).is_ok());
        assert!(check_url(&url("http://127.0.0.1:8080/x"), false).is_ok());
        assert!(check_url(&url("http://127.5.6.7/x"), false).is_ok());
        assert!(check_url(&url("http://[::1]:9/x"), false).is_ok());
        assert!(check_url(&url("http://localhost:9/x"), false).is_ok());
        assert!(check_url(&url("http://LOCALHOST./x"), false).is_ok());
        assert!(check_url(&url("http://example.com/x"), true).is_ok());
        let err = check_url(&url("http://example.com/x?access_token=TTTTTTTT"), false).unwrap_err();
        assert!(
            matches!(&err, ApiErrorKind::InsecureUrl(u) if !u.contains("TTTTTTTT")),
            "{err:?}"
        );
        assert!(check_url(&url("http://10.0.0.1/x"), false).is_err());
        assert!(check_url(&url("http://localhost.evil.com/x"), false).is_err());
        assert!(check_url(&url("ftp://127.0.0.1/x"), true).is_err());
        assert!(check_url(&url("file:///etc/passwd"), true).is_err());
    }

    #[test]
    fn envelope_errors() {
        #[derive(serde::Deserialize, Debug)]
        struct R {
            #[allow(dead_code)]
            job_id: u64,
        }
        let e = parse_envelope::<R>(
            "databasemigrateexport",
            b"{\"errcode\":-501004,\"errmsg\":\"busy rid: 1-2-3\"}",
        )
        .unwrap_err();
        assert_eq!(e.errcode(), Some(-501004));
        assert!(e.to_string().contains("rid: 1-2-3"));
        for bad in [
            &b"{\"errcode\":0,"[..],
            b"[]",
            b"",
            b"null",
            b"{\"errcode\":\"x\"}",
            b"{\"errcode\":0,\"job_id\":\"x\"}",
            b"{\"errcode\":0}",
        ] {
            let e = parse_envelope::<R>("x", bad).unwrap_err();
            assert!(matches!(e.kind, ApiErrorKind::InvalidResponse(_)), "{e}");
        }
        assert_eq!(
            parse_envelope::<R>("x", b"{\"errcode\":0,\"errmsg\":\"ok\",\"job_id\":7}")
                .unwrap()
                .job_id,
            7
        );
        // deeply nested JSON hits serde_json's recursion limit instead of the stack
        let deep = "[".repeat(100_000);
        assert!(parse_envelope::<R>("x", deep.as_bytes()).is_err());
    }

    #[test]
    fn endpoint_urls() {
        let u = endpoint_url(&url("http://127.0.0.1:9"), &["tcb", "databasequery"]).unwrap();
        assert_eq!(u.as_str(), "http://127.0.0.1:9/tcb/databasequery");
        let u = endpoint_url(
            &url("https://gw.example.com/prefix/"),
            &["cgi-bin", "token"],
        )
        .unwrap();
        assert_eq!(u.as_str(), "https://gw.example.com/prefix/cgi-bin/token");
    }

    #[test]
    fn cos_xml() {
        let body = b"<?xml version='1.0'?><Error><Code>MalformedPOSTRequest</Code><Message>The body of your POST request is not well-formed</Message></Error>";
        assert_eq!(
            cos_error_fields(body),
            Some((
                "MalformedPOSTRequest".into(),
                "The body of your POST request is not well-formed".into()
            ))
        );
        assert_eq!(cos_error_fields(b"<html>nope</html>"), None);
        assert_eq!(cos_error_fields(b"<Code>unterminated"), None);
    }
}
