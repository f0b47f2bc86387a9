//! Redaction of credentials from any text that may reach a log, an error or the terminal.
//!
//! Two layers: (1) values of credential-looking keys (`access_token=...`, `secret=...`,
//! `"token":"..."`, ...) in URLs, query strings and JSON; (2) every literal access token and
//! AppSecret a client of this process currently holds or held recently, wherever it appears.
//! Layer 2 catches what layer 1 cannot know about (a token echoed in an unexpected place).

use std::collections::VecDeque;
use std::sync::{LazyLock, RwLock};

/// What replaces a redacted value.
pub const REDACTED: &str = "[redacted]";

/// Keys whose values are credentials. Matched case-insensitively as a whole word followed by
/// `=` (query string, form) or `":` (JSON).
const SENSITIVE_KEYS: &[&str] = &[
    "access_token",
    "cloudbase_access_token",
    "authorizer_access_token",
    "component_access_token",
    "secret",
    "appsecret",
    "token",
    "x-cos-security-token",
    "authorization",
    "signature",
];

/// Literal strings shorter than this are not redacted by value: a 3-character "secret" would
/// turn every message into confetti, and real secrets/tokens are far longer.
const MIN_LITERAL_LEN: usize = 6;

/// How many recently held tokens stay known to the redactor (bounded memory; old tokens that
/// were rotated out are still worth hiding for a while).
const MAX_KNOWN_LITERALS: usize = 256;

static KNOWN_LITERALS: LazyLock<RwLock<VecDeque<String>>> =
    LazyLock::new(|| RwLock::new(VecDeque::new()));

/// Registers a credential (access token, AppSecret, COS token) so that every later
/// [`redact`] call removes it wherever it appears.
pub fn register_sensitive(value: &str) {
    if value.len() < MIN_LITERAL_LEN {
        return;
    }
    let mut known = match KNOWN_LITERALS.write() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    };
    if known.iter().any(|k| k == value) {
        return;
    }
    if known.len() >= MAX_KNOWN_LITERALS {
        known.pop_front();
    }
    known.push_back(value.to_owned());
}

/// Returns `text` with every credential removed: values of `access_token=`, `secret=` and the
/// other sensitive keys, plus every registered token/secret literal.
pub fn redact(text: &str) -> String {
    let mut out = redact_keyed_values(text);
    let known = match KNOWN_LITERALS.read() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    };
    for literal in known.iter() {
        if out.contains(literal.as_str()) {
            out = out.replace(literal.as_str(), REDACTED);
        }
    }
    out
}

/// Converts a reqwest error into a printable message: the URL (which may carry
/// `access_token=` or `secret=`) is dropped and the rest is redacted, including the source chain.
pub fn reqwest_message(err: reqwest::Error) -> String {
    let err = err.without_url();
    let mut msg = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    redact(&msg)
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

/// Where the value after a key at `key_end` starts and how it ends, if the key is followed by an
/// assignment. Returns `(value_start, quoted)`.
fn value_after_key(bytes: &[u8], key_end: usize) -> Option<(usize, bool)> {
    let at = |i: usize| bytes.get(i).copied();
    match at(key_end)? {
        b'=' => Some((key_end + 1, false)),
        b'"' | b'\'' => {
            // JSON: key":"value" (optional whitespace around the colon)
            let mut i = key_end + 1;
            while matches!(at(i), Some(b' ')) {
                i += 1;
            }
            if at(i)? != b':' {
                return None;
            }
            i += 1;
            while matches!(at(i), Some(b' ')) {
                i += 1;
            }
            match at(i)? {
                b'"' => Some((i + 1, true)),
                _ => Some((i, false)),
            }
        }
        b':' => {
            // header style: "Authorization: value"
            let mut i = key_end + 1;
            while matches!(at(i), Some(b' ')) {
                i += 1;
            }
            Some((i, false))
        }
        _ => None,
    }
}

fn redact_keyed_values(text: &str) -> String {
    let bytes = text.as_bytes();
    let lower = text.to_ascii_lowercase();
    let lower = lower.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut copied_to = 0usize;
    let mut i = 0usize;
    while i < bytes.len() {
        let mut advanced = false;
        if i == 0 || !is_word_byte(lower[i - 1]) {
            for key in SENSITIVE_KEYS {
                let key_end = i + key.len();
                if lower.get(i..key_end) != Some(key.as_bytes()) {
                    continue;
                }
                if lower.get(key_end).is_some_and(|&b| is_word_byte(b)) {
                    continue;
                }
                let Some((start, quoted)) = value_after_key(bytes, key_end) else {
                    continue;
                };
                let mut end = start;
                if quoted {
                    while end < bytes.len() && bytes[end] != b'"' {
                        end += if bytes[end] == b'\\' { 2 } else { 1 };
                    }
                    end = end.min(bytes.len());
                } else {
                    while end < bytes.len()
                        && !matches!(
                            bytes[end],
                            b'&' | b' '
                                | b'\t'
                                | b'\n'
                                | b'\r'
                                | b'"'
                                | b'\''
                                | b'<'
                                | b'>'
                                | b','
                                | b';'
                                | b')'
                                | b'}'
                        )
                    {
                        end += 1;
                    }
                }
                if end == start {
                    continue;
                }
                // `start` and `end` sit next to ASCII delimiters, so they are char boundaries.
                out.push_str(&text[copied_to..start]);
                out.push_str(REDACTED);
                copied_to = end;
                i = end;
                advanced = true;
                break;
            }
        }
        if !advanced {
            i += 1;
        }
    }
    if copied_to < text.len() {
        out.push_str(&text[copied_to..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_string_values_are_removed() {
        let s = redact("GET https://api.weixin.qq.com/tcb/x?access_token=ABC.def-123&env=prod");
        assert_eq!(
            s,
            "GET https://api.weixin.qq.com/tcb/x?access_token=[redacted]&env=prod"
        );
        let s = redact("/cgi-bin/token?grant_type=client_credential&appid=wx1&secret=s3cr3t");
        assert!(!s.contains("s3cr3t"), "{s}");
        assert!(s.contains("appid=wx1"));
    }

    #[test]
    fn json_and_header_values_are_removed() {
        let s = redact(r#"{"access_token":"TOKVALUE","expires_in":7200}"#);
        assert_eq!(s, r#"{"access_token":"[redacted]","expires_in":7200}"#);
        let s = redact(r#"{"token": "cos-tok", "authorization":"q-sign-algorithm=sha1&q-ak=AK"}"#);
        assert!(!s.contains("cos-tok") && !s.contains("q-ak=AK"), "{s}");
        let s = redact("Authorization: q-sign-algorithm=sha1");
        assert!(!s.contains("sha1"), "{s}");
    }

    #[test]
    fn case_and_word_boundaries() {
        assert!(!redact("ACCESS_TOKEN=zzz").contains("zzz"));
        // `tokens=` is a different word and stays.
        assert_eq!(redact("tokens=3"), "tokens=3");
        assert_eq!(redact("no secrets here"), "no secrets here");
        // unicode around the key does not break slicing
        let s = redact("导出完成 access_token=秘密值&x=1 完成");
        assert!(!s.contains("秘密值"), "{s}");
    }

    #[test]
    fn registered_literals_are_removed_anywhere() {
        register_sensitive("literal-token-0123456789");
        let s = redact("server said: bad token literal-token-0123456789!");
        assert_eq!(s, "server said: bad token [redacted]!");
        register_sensitive("abc"); // too short: ignored
        assert_eq!(redact("abc"), "abc");
    }

    proptest::proptest! {
        #[test]
        fn never_panics_and_removes_query_tokens(
            prefix in "\\PC{0,40}",
            token in "[A-Za-z0-9_.-]{8,64}",
            suffix in "(&[a-z]{1,5}=[a-z0-9]{0,8}){0,3}",
        ) {
            let _ = redact(&prefix);
            let text = format!("{prefix} https://h/p?access_token={token}{suffix}");
            let out = redact(&text);
            proptest::prop_assert!(!out.contains(&format!("access_token={token}")), "{}", out);
        }
    }

    #[tokio::test]
    async fn reqwest_error_with_token_in_url_is_clean() {
        // A port nobody listens on: connect fails and the error would carry the URL.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let url = format!("http://127.0.0.1:{port}/tcb/x?access_token=SUPERSECRETTOKEN&secret=SEC");
        let err = reqwest::Client::new().get(&url).send().await.unwrap_err();
        assert!(format!("{err}").contains("SUPERSECRETTOKEN") || err.url().is_some());
        let msg = reqwest_message(err);
        assert!(!msg.contains("SUPERSECRETTOKEN"), "{msg}");
        assert!(!msg.contains("SEC&"), "{msg}");
        assert!(!msg.is_empty());
    }
}
