//! Client configuration and credentials: what a [`CloudBaseClient`](super::CloudBaseClient) is
//! built from.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use url::Url;

/// Transport settings of one client.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Base URL of the WeChat API (`https://api.weixin.qq.com`; the emulator's URL in tests).
    pub api_base: Url,
    /// Allow plain http to non-loopback hosts. Loopback (127.0.0.0/8, ::1, localhost) is
    /// always allowed so the emulator works without this.
    pub allow_insecure_http: bool,
    /// TCP+TLS connect timeout.
    pub connect_timeout: Duration,
    /// Whole-request timeout for JSON API calls; idle-read timeout for uploads/downloads
    /// (those may legitimately run for a long time as long as bytes keep flowing).
    pub request_timeout: Duration,
    /// Largest JSON response body accepted; larger bodies fail with `TooLarge`.
    pub max_json_bytes: usize,
}

/// Default WeChat API base URL.
pub const DEFAULT_API_BASE: &str = "https://api.weixin.qq.com";

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            // A compile-time constant, not input: it always parses.
            api_base: Url::parse(DEFAULT_API_BASE).expect("DEFAULT_API_BASE is a valid URL"),
            allow_insecure_http: false,
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            max_json_bytes: 16 * 1024 * 1024,
        }
    }
}

impl ClientConfig {
    /// Default settings with another API base (e.g. the emulator's `http://127.0.0.1:PORT`).
    pub fn with_api_base(api_base: Url) -> Self {
        ClientConfig {
            api_base,
            ..ClientConfig::default()
        }
    }
}

/// Which token endpoint an app uses. The two token families are isolated on the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenMode {
    /// `POST /cgi-bin/stable_token` in normal mode (never `force_refresh`): does not kick out
    /// other services using the same app.
    #[default]
    Stable,
    /// `GET /cgi-bin/token`: every fetch invalidates this family's previous token after 5 min.
    Legacy,
}

/// An AppSecret. `Debug` and `Display` print `[redacted]`; the value is only reachable
/// through [`Secret::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The raw value, for building the token request only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret(value)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Who the client authenticates as.
#[derive(Debug, Clone)]
pub struct AppCredentials {
    pub appid: String,
    pub secret: Secret,
    pub token_mode: TokenMode,
}

/// Source of wall-clock time for token expiry; tests inject a manual clock so nothing waits.
pub trait ClientClock: Send + Sync + fmt::Debug {
    fn now(&self) -> SystemTime;
}

/// The real clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl ClientClock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock backed by a closure, e.g. one that follows the emulator's virtual clock so that
/// refresh-ahead happens in the same time the tokens expire in:
/// `Arc::new(FnClock(move || control.now()))`.
pub struct FnClock<F>(pub F);

impl<F> fmt::Debug for FnClock<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FnClock")
    }
}

impl<F: Fn() -> SystemTime + Send + Sync> ClientClock for FnClock<F> {
    fn now(&self) -> SystemTime {
        (self.0)()
    }
}

/// Shared handle to a clock.
pub type SharedClock = Arc<dyn ClientClock>;
