//! The per-app access-token cache: single-flight refresh, refresh ahead of expiry, and
//! targeted invalidation after a token error.
//!
//! Rules (see `docs/client.md`):
//! * one cache per client (= per app); concurrent callers that find no usable token queue on
//!   one async gate, and only the first of them calls the token endpoint;
//! * a token is refreshed `min(5 min, lifetime / 2)` before `expires_in` runs out;
//! * `invalidate(generation)` drops the cached token only if it is still the one that failed,
//!   so 50 callers reporting the same dead token cause one refresh, not 50;
//! * a failed fetch is handed to every caller that was already waiting for it, and a
//!   still-valid older token is used instead of failing when a refresh ahead of expiry fails.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;
use std::time::{Duration, SystemTime};

use tracing::{debug, warn};

use super::config::{AppCredentials, SharedClock, TokenMode};
use super::error::{ApiError, ApiErrorKind, TOKEN_ENDPOINT_LEGACY, TOKEN_ENDPOINT_STABLE};
use super::observer::ObserverSlot;
use super::redact::register_sensitive;
use super::transport::{endpoint_url, map_reqwest, parse_envelope, read_capped, Transport};
use super::types::TokenResponse;

/// Largest refresh-ahead margin (the stable_token rotation window).
const MAX_REFRESH_MARGIN: Duration = Duration::from_secs(300);

/// Longest token lifetime believed, whatever `expires_in` says.
const MAX_TOKEN_LIFETIME_SECS: u64 = 24 * 3600;

/// After a failed refresh-ahead, how long the still-valid token is used before trying again.
const REFRESH_RETRY_DELAY: Duration = Duration::from_secs(30);

/// An access token. `Debug`/`Display` never show the value.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct AccessToken(String);

impl AccessToken {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AccessToken([redacted])")
    }
}

/// A usable token plus the generation that identifies it for [`TokenCache::invalidate`].
#[derive(Debug, Clone)]
pub(crate) struct TokenHandle {
    pub token: AccessToken,
    pub generation: u64,
    pub expires_at: SystemTime,
}

#[derive(Debug, Clone)]
struct Cached {
    handle: TokenHandle,
    refresh_at: SystemTime,
}

#[derive(Debug, Default)]
struct Gate {
    /// The outcome of the most recent fetch, if it failed.
    last_failure: Option<ApiError>,
}

pub(crate) struct TokenCache {
    creds: AppCredentials,
    clock: SharedClock,
    cache: RwLock<Option<Cached>>,
    gate: tokio::sync::Mutex<Gate>,
    /// Completed fetch attempts (success or failure); lets a waiter tell "someone fetched while
    /// I queued" from "nobody did".
    completed: AtomicU64,
    /// Token endpoint calls made (what tests and `token_fetches()` count).
    fetches: AtomicU64,
    next_generation: AtomicU64,
}

impl fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenCache")
            .field("appid", &self.creds.appid)
            .field("mode", &self.creds.token_mode)
            .field("fetches", &self.fetches.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

fn refresh_margin(lifetime: Duration) -> Duration {
    MAX_REFRESH_MARGIN.min(lifetime / 2)
}

impl TokenCache {
    pub fn new(creds: AppCredentials, clock: SharedClock) -> Self {
        register_sensitive(creds.secret.expose());
        TokenCache {
            creds,
            clock,
            cache: RwLock::new(None),
            gate: tokio::sync::Mutex::new(Gate::default()),
            completed: AtomicU64::new(0),
            fetches: AtomicU64::new(0),
            next_generation: AtomicU64::new(1),
        }
    }

    pub fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::SeqCst)
    }

    fn read_cache(&self) -> Option<Cached> {
        match self.cache.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    fn write_cache(&self) -> std::sync::RwLockWriteGuard<'_, Option<Cached>> {
        match self.cache.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    fn fresh(&self) -> Option<TokenHandle> {
        let now = self.clock.now();
        self.read_cache()
            .filter(|c| now < c.refresh_at)
            .map(|c| c.handle)
    }

    /// A usable token, fetching one (single-flight) when none is cached or it is due.
    pub async fn get(
        &self,
        transport: &Transport,
        api_base: &url::Url,
        observer: &ObserverSlot,
    ) -> Result<TokenHandle, ApiError> {
        if let Some(h) = self.fresh() {
            return Ok(h);
        }
        let seen = self.completed.load(Ordering::SeqCst);
        let mut gate = self.gate.lock().await;
        if let Some(h) = self.fresh() {
            return Ok(h);
        }
        if self.completed.load(Ordering::SeqCst) != seen {
            if let Some(err) = &gate.last_failure {
                // The fetch we queued behind just failed: share its outcome instead of
                // hammering the token endpoint once per waiter.
                return Err(err.clone());
            }
        }
        let started = std::time::Instant::now();
        let result = self.fetch(transport, api_base).await;
        observer.record(self.endpoint(), started, &result);
        self.completed.fetch_add(1, Ordering::SeqCst);
        match result {
            Ok(handle) => {
                gate.last_failure = None;
                Ok(handle)
            }
            Err(err) => {
                gate.last_failure = Some(err.clone());
                // Refresh-ahead failed but the old token has not expired: keep using it.
                let now = self.clock.now();
                let mut cache = self.write_cache();
                if let Some(c) = cache.as_mut().filter(|c| now < c.handle.expires_at) {
                    // Try again a little later, not on every call.
                    let remaining = c.handle.expires_at.duration_since(now).unwrap_or_default();
                    c.refresh_at = now + (remaining / 2).min(REFRESH_RETRY_DELAY);
                    warn!(endpoint = %err.endpoint, error = %err, "token refresh failed; using the current token until it expires");
                    return Ok(c.handle.clone());
                }
                Err(err)
            }
        }
    }

    /// Forgets the cached token if it is still generation `generation` (the one a call found
    /// dead). Returns whether it was dropped.
    pub fn invalidate(&self, generation: u64) -> bool {
        let mut cache = self.write_cache();
        if cache
            .as_ref()
            .is_some_and(|c| c.handle.generation == generation)
        {
            *cache = None;
            true
        } else {
            false
        }
    }

    fn endpoint(&self) -> &'static str {
        match self.creds.token_mode {
            TokenMode::Stable => TOKEN_ENDPOINT_STABLE,
            TokenMode::Legacy => TOKEN_ENDPOINT_LEGACY,
        }
    }

    async fn fetch(
        &self,
        transport: &Transport,
        api_base: &url::Url,
    ) -> Result<TokenHandle, ApiError> {
        let endpoint = self.endpoint();
        let err = |kind| ApiError::new(endpoint, kind);
        let segments: &[&str] = match self.creds.token_mode {
            TokenMode::Stable => &["cgi-bin", "stable_token"],
            TokenMode::Legacy => &["cgi-bin", "token"],
        };
        let mut url = endpoint_url(api_base, segments).map_err(err)?;
        self.fetches.fetch_add(1, Ordering::SeqCst);
        debug!(endpoint, appid = %self.creds.appid, "fetching access token");
        let request = match self.creds.token_mode {
            TokenMode::Stable => transport.api.post(url).json(&serde_json::json!({
                "grant_type": "client_credential",
                "appid": self.creds.appid,
                "secret": self.creds.secret.expose(),
            })),
            TokenMode::Legacy => {
                url.query_pairs_mut()
                    .append_pair("grant_type", "client_credential")
                    .append_pair("appid", &self.creds.appid)
                    .append_pair("secret", self.creds.secret.expose());
                transport.api.get(url)
            }
        };
        let resp = request.send().await.map_err(|e| map_reqwest(endpoint, e))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(err(ApiErrorKind::Http {
                status: status.as_u16(),
            }));
        }
        let body = read_capped(endpoint, resp, transport.max_json_bytes).await?;
        let parsed: TokenResponse = parse_envelope(endpoint, &body)?;
        if parsed.access_token.is_empty() {
            return Err(err(ApiErrorKind::InvalidResponse(
                "empty access_token".to_owned(),
            )));
        }
        register_sensitive(&parsed.access_token);
        if parsed.expires_in == 0 {
            return Err(err(ApiErrorKind::InvalidResponse(
                "expires_in is 0".to_owned(),
            )));
        }
        let now = self.clock.now();
        // Documented lifetimes are <= 7200 s; a hostile value must not overflow the clock math.
        let lifetime = Duration::from_secs(parsed.expires_in.min(MAX_TOKEN_LIFETIME_SECS));
        let handle = TokenHandle {
            token: AccessToken(parsed.access_token),
            generation: self.next_generation.fetch_add(1, Ordering::SeqCst),
            expires_at: now + lifetime,
        };
        *self.write_cache() = Some(Cached {
            handle: handle.clone(),
            refresh_at: now + (lifetime - refresh_margin(lifetime)),
        });
        debug!(
            endpoint,
            expires_in = parsed.expires_in,
            generation = handle.generation,
            "access token cached"
        );
        Ok(handle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn margin_is_five_minutes_or_half_the_lifetime() {
        assert_eq!(
            refresh_margin(Duration::from_secs(7200)),
            Duration::from_secs(300)
        );
        assert_eq!(
            refresh_margin(Duration::from_secs(400)),
            Duration::from_secs(200)
        );
        assert_eq!(
            refresh_margin(Duration::from_secs(1)),
            Duration::from_millis(500)
        );
    }

    #[test]
    fn token_debug_is_redacted() {
        let t = AccessToken("tok-abcdefgh".into());
        assert!(!format!("{t:?}").contains("abcdefgh"));
        let h = TokenHandle {
            token: t,
            generation: 1,
            expires_at: SystemTime::UNIX_EPOCH,
        };
        assert!(!format!("{h:?}").contains("abcdefgh"));
    }
}
