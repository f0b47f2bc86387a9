//! The two isolated access-token families of an app (reference §1, §12.B):
//! legacy `/cgi-bin/token` (every fetch supersedes the previous token, which keeps a grace
//! window; anything older dies at once) and `/cgi-bin/stable_token` (same token until its last
//! grace window, early rotation, `force_refresh` with a daily cap and a minimum spacing).
//! Minting in one family never touches the other.

use std::collections::HashMap;

use rand::Rng;
use serde::Serialize;

/// Token family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    Legacy,
    Stable,
}

#[derive(Clone, Debug)]
struct TokenRecord {
    appid: String,
    expires_at: f64,
    /// Superseded: unusable from this instant on (→ 40001 rather than 42001).
    revoked_at: Option<f64>,
}

#[derive(Debug, Default)]
struct FamilyState {
    current: Option<String>,
    previous: Option<String>,
    forced_day: i64,
    forced_count: u32,
    last_forced_at: Option<f64>,
}

/// Every token ever minted, for the security tests that grep logs for them.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct IssuedToken {
    pub appid: String,
    pub family: Family,
    pub token: String,
    pub issued_at_unix: f64,
    pub expires_at_unix: f64,
}

/// Why a presented token is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenProblem {
    /// Never issued, or superseded/revoked.
    Invalid,
    Expired,
}

/// Rules the book applies; copied from the config on every call so runtime changes apply.
#[derive(Clone, Copy, Debug)]
pub struct TokenRules {
    pub ttl: f64,
    pub grace: f64,
    pub force_per_day: u32,
    pub force_spacing: f64,
    pub day_offset: i64,
}

#[derive(Debug, Default)]
pub struct TokenBook {
    tokens: HashMap<String, TokenRecord>,
    families: HashMap<(String, Family), FamilyState>,
    issued: Vec<IssuedToken>,
}

impl TokenBook {
    fn mint(&mut self, appid: &str, family: Family, now: f64, ttl: f64) -> String {
        let token = new_token_string();
        self.tokens.insert(
            token.clone(),
            TokenRecord {
                appid: appid.to_string(),
                expires_at: now + ttl,
                revoked_at: None,
            },
        );
        self.issued.push(IssuedToken {
            appid: appid.to_string(),
            family,
            token: token.clone(),
            issued_at_unix: now,
            expires_at_unix: now + ttl,
        });
        token
    }

    fn revoke(&mut self, token: &Option<String>, at: f64) {
        if let Some(t) = token {
            if let Some(rec) = self.tokens.get_mut(t) {
                let at = at.min(rec.expires_at);
                rec.revoked_at = Some(rec.revoked_at.map_or(at, |r| r.min(at)));
            }
        }
    }

    /// `/cgi-bin/token`: always a new token; the previous one keeps `grace` seconds, older die.
    /// Returns the token and its `expires_in`.
    pub fn legacy_fetch(&mut self, appid: &str, now: f64, rules: &TokenRules) -> (String, u64) {
        let token = self.mint(appid, Family::Legacy, now, rules.ttl);
        let key = (appid.to_string(), Family::Legacy);
        let state = self.families.entry(key.clone()).or_default();
        let older = state.previous.take();
        let prev = state.current.take();
        state.previous = prev.clone();
        state.current = Some(token.clone());
        self.revoke(&older, now);
        self.revoke(&prev, now + rules.grace);
        (token, rules.ttl.max(0.0) as u64)
    }

    fn usable(&self, token: &Option<String>, now: f64) -> Option<(String, f64)> {
        let t = token.as_ref()?;
        let rec = self.tokens.get(t)?;
        if rec.revoked_at.is_some_and(|r| r <= now) || rec.expires_at <= now {
            return None;
        }
        Some((t.clone(), rec.expires_at))
    }

    /// `/cgi-bin/stable_token`. Returns the token and its remaining life (`expires_in`).
    pub fn stable_fetch(
        &mut self,
        appid: &str,
        force: bool,
        now: f64,
        rules: &TokenRules,
    ) -> (String, u64) {
        let key = (appid.to_string(), Family::Stable);
        let day = day_index(now, rules.day_offset);
        let (current, allowed_force) = {
            let state = self.families.entry(key.clone()).or_default();
            if state.forced_day != day {
                state.forced_day = day;
                state.forced_count = 0;
            }
            let spaced = state
                .last_forced_at
                .is_none_or(|t| now - t >= rules.force_spacing);
            (
                state.current.clone(),
                spaced && state.forced_count < rules.force_per_day,
            )
        };
        let live = self.usable(&current, now);
        if force && allowed_force {
            return self.force_stable(appid, now, rules);
        }
        match live {
            Some((token, expires_at)) if expires_at - now > rules.grace => {
                (token, (expires_at - now).floor() as u64)
            }
            Some(_) => {
                // Last grace window: rotate early; the old token lives on until it expires.
                let token = self.mint(appid, Family::Stable, now, rules.ttl);
                let state = self.families.entry(key).or_default();
                state.previous = state.current.replace(token.clone());
                (token, rules.ttl.max(0.0) as u64)
            }
            None => {
                let token = self.mint(appid, Family::Stable, now, rules.ttl);
                let state = self.families.entry(key).or_default();
                state.previous = state.current.replace(token.clone());
                (token, rules.ttl.max(0.0) as u64)
            }
        }
    }

    /// A forced stable refresh: new token, every earlier stable token of the app dies now.
    /// Used by `force_refresh=true` and by the "another service force-refreshed" helper.
    pub fn force_stable(&mut self, appid: &str, now: f64, rules: &TokenRules) -> (String, u64) {
        let key = (appid.to_string(), Family::Stable);
        let token = self.mint(appid, Family::Stable, now, rules.ttl);
        let day = day_index(now, rules.day_offset);
        let state = self.families.entry(key).or_default();
        if state.forced_day != day {
            state.forced_day = day;
            state.forced_count = 0;
        }
        state.forced_count += 1;
        state.last_forced_at = Some(now);
        let prev = state.current.replace(token.clone());
        let older = state.previous.take();
        self.revoke(&prev, now);
        self.revoke(&older, now);
        (token, rules.ttl.max(0.0) as u64)
    }

    /// Validate a token presented on `/tcb/*`; returns its appid.
    pub fn check(&self, token: &str, now: f64) -> Result<String, TokenProblem> {
        let rec = self.tokens.get(token).ok_or(TokenProblem::Invalid)?;
        if rec.revoked_at.is_some_and(|r| r <= now) {
            return Err(TokenProblem::Invalid);
        }
        if rec.expires_at <= now {
            return Err(TokenProblem::Expired);
        }
        Ok(rec.appid.clone())
    }

    pub fn issued(&self) -> &[IssuedToken] {
        &self.issued
    }
}

/// Index of the (virtual) day, with days starting at local midnight of `offset` seconds east.
pub fn day_index(now: f64, offset: i64) -> i64 {
    ((now + offset as f64) / 86_400.0).floor() as i64
}

fn new_token_string() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";
    let mut rng = rand::thread_rng();
    (0..136)
        .map(|_| {
            let i = rng.gen_range(0..ALPHABET.len());
            char::from(ALPHABET.get(i).copied().unwrap_or(b'A'))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: TokenRules = TokenRules {
        ttl: 7200.0,
        grace: 300.0,
        force_per_day: 20,
        force_spacing: 30.0,
        day_offset: 8 * 3600,
    };

    #[test]
    fn legacy_supersedes_with_grace_and_kills_older() {
        let mut b = TokenBook::default();
        let (t1, _) = b.legacy_fetch("a", 0.0, &RULES);
        let (t2, _) = b.legacy_fetch("a", 10.0, &RULES);
        assert_eq!(b.check(&t1, 100.0), Ok("a".into()));
        assert_eq!(b.check(&t1, 310.0), Err(TokenProblem::Invalid));
        let (_t3, _) = b.legacy_fetch("a", 20.0, &RULES);
        assert_eq!(b.check(&t1, 21.0), Err(TokenProblem::Invalid));
        assert!(b.check(&t2, 21.0).is_ok());
        assert_eq!(b.check(&t2, 20.0 + 7200.0), Err(TokenProblem::Invalid));
    }

    #[test]
    fn stable_same_token_then_early_rotation() {
        let mut b = TokenBook::default();
        let (t1, e1) = b.stable_fetch("a", false, 0.0, &RULES);
        assert_eq!(e1, 7200);
        let (same, e) = b.stable_fetch("a", false, 1000.0, &RULES);
        assert_eq!((same.as_str(), e), (t1.as_str(), 6200));
        let (t2, e2) = b.stable_fetch("a", false, 7000.0, &RULES);
        assert_ne!(t2, t1);
        assert_eq!(e2, 7200);
        assert!(b.check(&t1, 7100.0).is_ok());
        assert_eq!(b.check(&t1, 7200.0), Err(TokenProblem::Expired));
        // the legacy family is untouched by all of this
        let (l, _) = b.legacy_fetch("a", 7100.0, &RULES);
        assert!(b.check(&t2, 7101.0).is_ok() && b.check(&l, 7101.0).is_ok());
    }

    #[test]
    fn forced_refresh_limits() {
        let mut b = TokenBook::default();
        let (t1, _) = b.stable_fetch("a", false, 0.0, &RULES);
        let (t2, _) = b.stable_fetch("a", true, 100.0, &RULES);
        assert_ne!(t1, t2);
        assert_eq!(b.check(&t1, 100.0), Err(TokenProblem::Invalid));
        let (t3, _) = b.stable_fetch("a", true, 110.0, &RULES);
        assert_eq!(t3, t2, "forced call within 30 s returns the current token");
        let mut now = 200.0;
        for _ in 0..19 {
            b.stable_fetch("a", true, now, &RULES);
            now += 31.0;
        }
        let (cur, _) = b.stable_fetch("a", false, now, &RULES);
        let (after_cap, _) = b.stable_fetch("a", true, now + 40.0, &RULES);
        assert_eq!(
            cur, after_cap,
            "21st forced refresh of the day does nothing"
        );
    }
}
