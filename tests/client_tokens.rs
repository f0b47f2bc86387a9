//! Token behaviour of the client against a scripted fake: single-flight, refresh ahead of
//! expiry, refresh-once-retry-once after token errors, shared failures, legacy vs stable.

mod client_fake;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use client_fake::{client, config, creds, Fake, Reply, SECRET};
use serde_json::json;
use tcb_backup::client::{
    AppCredentials, ClientClock, CloudBaseClient, ErrorClass, Secret, TokenMode,
};

#[derive(Debug)]
struct ManualClock(Mutex<SystemTime>);

impl ManualClock {
    fn new() -> Arc<Self> {
        Arc::new(ManualClock(Mutex::new(
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
        )))
    }
    fn advance(&self, d: Duration) {
        *self.0.lock().unwrap() += d;
    }
}

impl ClientClock for ManualClock {
    fn now(&self) -> SystemTime {
        *self.0.lock().unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hundred_concurrent_callers_make_one_token_call() {
    let fake = Fake::start();
    fake.state.token_delay_ms.store(100, Ordering::SeqCst);
    let c = client(&fake, TokenMode::Stable);
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move { c.ensure_token().await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(c.token_fetches(), 1);
    assert_eq!(fake.state.stable_calls.load(Ordering::SeqCst), 1);
    // and later calls reuse the cached token
    c.database_count("env", "db.collection('a').count()")
        .await
        .unwrap();
    assert_eq!(c.token_fetches(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_callers_share_a_failed_fetch() {
    let fake = Fake::start();
    // Long enough that every caller is queued before the one fetch answers.
    fake.state.token_delay_ms.store(500, Ordering::SeqCst);
    let bad = AppCredentials {
        secret: Secret::new("wrong-secret-value"),
        ..creds(TokenMode::Stable)
    };
    let c = CloudBaseClient::new(config(fake.url()), bad).unwrap();
    let start = Arc::new(tokio::sync::Barrier::new(51));
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let c = c.clone();
            let start = start.clone();
            tokio::spawn(async move {
                start.wait().await;
                c.ensure_token().await
            })
        })
        .collect();
    start.wait().await;
    for t in tasks {
        let err = t.await.unwrap().unwrap_err();
        assert_eq!(err.errcode(), Some(40001));
        // at the token endpoint 40001 means a wrong secret, not "refresh"
        assert_eq!(err.class(), ErrorClass::PermanentConfig, "{err}");
    }
    assert_eq!(fake.state.stable_calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn stable_request_is_json_without_force_refresh() {
    let fake = Fake::start();
    let c = client(&fake, TokenMode::Stable);
    c.ensure_token().await.unwrap();
    let calls = fake.calls("/cgi-bin/stable_token");
    assert_eq!(calls.len(), 1);
    let body = calls[0].json();
    assert_eq!(
        body,
        json!({"grant_type": "client_credential", "appid": client_fake::APPID, "secret": SECRET})
    );
    assert!(calls[0]
        .content_type
        .as_deref()
        .unwrap_or("")
        .starts_with("application/json"));
    assert_eq!(fake.state.legacy_calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn legacy_mode_uses_get_token_and_its_own_cache() {
    let fake = Fake::start();
    let legacy = client(&fake, TokenMode::Legacy);
    let stable = client(&fake, TokenMode::Stable);
    legacy.ensure_token().await.unwrap();
    let calls = fake.calls("/cgi-bin/token");
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].method, "GET");
    assert_eq!(calls[0].query["grant_type"], "client_credential");
    assert_eq!(calls[0].query["appid"], client_fake::APPID);
    assert_eq!(fake.state.stable_calls.load(Ordering::SeqCst), 0);
    stable.ensure_token().await.unwrap();
    legacy.database_count("env", "q").await.unwrap();
    stable.database_count("env", "q").await.unwrap();
    // each family fetched once; neither client's token was disturbed by the other
    assert_eq!(legacy.token_fetches(), 1);
    assert_eq!(stable.token_fetches(), 1);
    let used: Vec<String> = fake
        .calls("/tcb/databasecount")
        .iter()
        .map(|r| r.query["access_token"].clone())
        .collect();
    assert!(
        used[0].starts_with('L') && used[1].starts_with('S'),
        "{used:?}"
    );
}

#[tokio::test]
async fn token_error_mid_run_refreshes_once_and_retries_once() {
    for code in [40001, 40014, 42001] {
        let fake = Fake::start();
        let c = client(&fake, TokenMode::Stable);
        c.ensure_token().await.unwrap();
        fake.script(
            "databasecount",
            [Reply::Json(
                json!({"errcode": code, "errmsg": "token dead rid: x"}),
            )],
        );
        assert_eq!(
            c.database_count("env", "q").await.unwrap(),
            3,
            "code {code}"
        );
        assert_eq!(c.token_fetches(), 2, "code {code}");
        assert_eq!(fake.calls("/tcb/databasecount").len(), 2);
    }
}

#[tokio::test]
async fn persistent_token_error_is_returned_after_one_retry() {
    let fake = Fake::start();
    let c = client(&fake, TokenMode::Stable);
    let dead = || Reply::Json(json!({"errcode": 42001, "errmsg": "access_token expired rid: y"}));
    fake.script("databasecount", [dead(), dead(), dead()]);
    let err = c.database_count("env", "q").await.unwrap_err();
    assert_eq!(err.errcode(), Some(42001));
    assert_eq!(err.class(), ErrorClass::RefreshToken);
    assert_eq!(fake.calls("/tcb/databasecount").len(), 2);
    assert_eq!(c.token_fetches(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_callers_seeing_the_same_dead_token_cause_one_refresh() {
    let fake = Fake::start();
    let c = client(&fake, TokenMode::Stable);
    c.ensure_token().await.unwrap();
    // another service force-refreshed: the cached token is now dead for everyone
    fake.revoke_all();
    fake.state.token_delay_ms.store(50, Ordering::SeqCst);
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move { c.database_count("env", "q").await })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), 3);
    }
    assert_eq!(c.token_fetches(), 2);
    assert_eq!(fake.state.stable_calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn refresh_happens_before_expiry_honouring_expires_in() {
    let fake = Fake::start();
    let clock = ManualClock::new();
    let c =
        CloudBaseClient::with_clock(config(fake.url()), creds(TokenMode::Stable), clock.clone())
            .unwrap();
    let exp = c.ensure_token().await.unwrap();
    assert_eq!(exp, clock.now() + Duration::from_secs(7200));
    clock.advance(Duration::from_secs(6899));
    c.ensure_token().await.unwrap();
    assert_eq!(c.token_fetches(), 1, "still far from expiry");
    clock.advance(Duration::from_secs(2)); // 6901 s: inside the 5 min margin
    c.ensure_token().await.unwrap();
    assert_eq!(c.token_fetches(), 2);

    // a short lifetime is not assumed to be 7200: margin is half of it
    fake.state.expires_in.store(400, Ordering::SeqCst);
    fake.revoke_all();
    clock.advance(Duration::from_secs(10_000));
    c.ensure_token().await.unwrap();
    assert_eq!(c.token_fetches(), 3);
    clock.advance(Duration::from_secs(199));
    c.ensure_token().await.unwrap();
    assert_eq!(c.token_fetches(), 3);
    clock.advance(Duration::from_secs(2));
    c.ensure_token().await.unwrap();
    assert_eq!(c.token_fetches(), 4);
}

#[tokio::test]
async fn failed_refresh_ahead_keeps_the_still_valid_token() {
    let fake = Fake::start();
    let clock = ManualClock::new();
    let c =
        CloudBaseClient::with_clock(config(fake.url()), creds(TokenMode::Stable), clock.clone())
            .unwrap();
    c.ensure_token().await.unwrap();
    clock.advance(Duration::from_secs(7000));
    fake.script(
        "stable_token",
        [Reply::Json(json!({"errcode": -1, "errmsg": "system busy"}))],
    );
    // the refresh fails, but the old token has 200 s left and still works
    assert_eq!(c.database_count("env", "q").await.unwrap(), 3);
    assert_eq!(c.token_fetches(), 2);
    // no new attempt on every call: the retry is deferred
    c.database_count("env", "q").await.unwrap();
    assert_eq!(c.token_fetches(), 2);
    clock.advance(Duration::from_secs(31));
    c.database_count("env", "q").await.unwrap();
    assert_eq!(c.token_fetches(), 3);
}

#[tokio::test]
async fn token_endpoint_hostile_bodies() {
    let fake = Fake::start();
    let c = client(&fake, TokenMode::Stable);
    fake.script(
        "stable_token",
        [
            Reply::Json(json!({"access_token": "", "expires_in": 7200})),
            Reply::Json(json!({"access_token": "abcdefghijk", "expires_in": "soon"})),
            Reply::Json(json!({"expires_in": 7200})),
            Reply::Raw {
                status: 200,
                body: b"{\"access_token\":\"abc".to_vec(),
            },
            Reply::Raw {
                status: 503,
                body: b"busy".to_vec(),
            },
        ],
    );
    for _ in 0..4 {
        let err = c.ensure_token().await.unwrap_err();
        assert!(
            matches!(
                err.kind,
                tcb_backup::client::ApiErrorKind::InvalidResponse(_)
            ),
            "{err}"
        );
        assert_eq!(err.endpoint, "cgi-bin/stable_token");
    }
    let err = c.ensure_token().await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Transient, "{err}");
    c.ensure_token().await.unwrap();
}

#[tokio::test]
async fn absurd_expires_in_is_capped_not_a_panic() {
    let fake = Fake::start();
    let c = client(&fake, TokenMode::Stable);
    fake.script(
        "stable_token",
        [Reply::Json(
            json!({"access_token": "abcdefghijklmnop", "expires_in": u64::MAX}),
        )],
    );
    let exp = c.ensure_token().await.unwrap();
    assert!(exp <= SystemTime::now() + Duration::from_secs(24 * 3600 + 60));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_report_of_an_old_token_does_not_drop_the_new_one() {
    let fake = Fake::start();
    let c = client(&fake, TokenMode::Stable);
    c.ensure_token().await.unwrap();
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    fake.script(
        "databasecount",
        [Reply::Hold(
            gate.clone(),
            Box::new(Reply::Json(
                json!({"errcode": 40001, "errmsg": "old token rid: z"}),
            )),
        )],
    );
    // B's call (with the first token) is held by the server...
    let b = {
        let c = c.clone();
        tokio::spawn(async move { c.database_count("env", "q").await })
    };
    while fake.pending_scripts("databasecount") > 0 {
        tokio::task::yield_now().await;
    }
    // ...while A finds the token dead and refreshes it.
    fake.revoke_all();
    assert_eq!(c.database_count("env", "q").await.unwrap(), 3);
    assert_eq!(c.token_fetches(), 2);
    // B's 40001 for the *old* token now arrives: it must not discard the new token.
    gate.add_permits(1);
    assert_eq!(b.await.unwrap().unwrap(), 3);
    assert_eq!(c.token_fetches(), 2);
}
