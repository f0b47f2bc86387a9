//! Alert payloads (generic JSON and WeCom group robot) and their delivery to a local receiver:
//! retries, the WeCom errcode answer, the heartbeat, and no key in any error text.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use tcb_backup::daemon::alerts::{Alert, AlertItem, Notifier};
use tcb_backup::daemon::settings::{AlertEvent, AlertFormat, AlertSettings, SecretUrl};

#[derive(Default)]
struct Received {
    posts: Vec<serde_json::Value>,
    heartbeats: usize,
    /// Fail this many requests with HTTP 502 first.
    fail_first: usize,
}

type Shared = Arc<Mutex<Received>>;

async fn receiver() -> (String, Shared) {
    let shared: Shared = Arc::default();
    async fn hook(
        State(s): State<Shared>,
        Json(body): Json<serde_json::Value>,
    ) -> (StatusCode, Json<serde_json::Value>) {
        let mut r = s.lock().unwrap();
        if r.fail_first > 0 {
            r.fail_first -= 1;
            return (StatusCode::BAD_GATEWAY, Json(serde_json::json!({})));
        }
        r.posts.push(body);
        (
            StatusCode::OK,
            Json(serde_json::json!({"errcode": 0, "errmsg": "ok"})),
        )
    }
    async fn wecom_bad_key(
        Query(_q): Query<std::collections::HashMap<String, String>>,
    ) -> Json<serde_json::Value> {
        Json(
            serde_json::json!({"errcode": 93000, "errmsg": "invalid webhook url, hint: [key=SECRETKEY]"}),
        )
    }
    async fn beat(State(s): State<Shared>) -> &'static str {
        s.lock().unwrap().heartbeats += 1;
        "OK"
    }
    let app = Router::new()
        .route("/hook", post(hook))
        .route("/wecom-bad", post(wecom_bad_key))
        .route("/beat", get(beat))
        .with_state(shared.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), shared)
}

fn alert(event: AlertEvent) -> Alert {
    Alert {
        event,
        task: "backup".into(),
        summary: "run 7: 1 succeeded, 1 failed, 0 unfinished".into(),
        schedule: Some("nightly".into()),
        run: Some(7),
        time: SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_234_400),
        items: vec![AlertItem {
            env: "prod-1".into(),
            collection: "orders".into(),
            status: "failed".into(),
            detail: Some("errcode -501007 <quota>\nsecond line".into()),
        }],
    }
}

fn settings(base: &str, path: &str, format: AlertFormat) -> AlertSettings {
    AlertSettings {
        webhook: Some(SecretUrl(format!("{base}{path}?key=SECRETKEY"))),
        format,
        on: vec![AlertEvent::Failure, AlertEvent::Partial],
        heartbeat: Some(SecretUrl(format!("{base}/beat?key=SECRETKEY"))),
    }
}

#[test]
fn json_payload_shape() {
    let p = alert(AlertEvent::Failure).json_payload();
    assert_eq!(p["source"], "tcb-backup");
    assert_eq!(p["event"], "failure");
    assert_eq!(p["title"], "backup failed");
    assert_eq!(p["run"], 7);
    assert_eq!(p["schedule"], "nightly");
    assert_eq!(p["time"], "2026-12-02T18:00:00Z");
    assert_eq!(p["items"][0]["collection"], "orders");
}

#[test]
fn wecom_payload_shape() {
    let p = alert(AlertEvent::Partial).wecom_payload();
    assert_eq!(p["msgtype"], "markdown");
    let content = p["markdown"]["content"].as_str().unwrap();
    assert!(content
        .starts_with("**tcb-backup: <font color=\"comment\">backup partially failed</font>**"));
    assert!(content.contains("> run: 7"));
    // Error text is one line and cannot inject markup.
    assert!(content.contains("- prod-1/orders: failed (errcode -501007 &lt;quota&gt; second line)"));
    // Long lists stay under WeCom's 4096-byte limit.
    let mut big = alert(AlertEvent::Failure);
    big.items = (0..500)
        .map(|i| AlertItem {
            env: "prod-1".into(),
            collection: format!("collection-{i}"),
            status: "failed".into(),
            detail: Some("x".repeat(100)),
        })
        .collect();
    let content = big.wecom_payload()["markdown"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(content.len() <= 4096, "{}", content.len());
    assert!(content.contains("more"));
}

#[tokio::test]
async fn delivers_json_with_retries_and_heartbeat() {
    let (base, got) = receiver().await;
    got.lock().unwrap().fail_first = 2;
    let n = Notifier::new(settings(&base, "/hook", AlertFormat::Json))
        .unwrap()
        .with_retry_delay(Duration::ZERO);
    assert!(n.send(&alert(AlertEvent::Failure)).await.unwrap());
    // Not configured for staleness: nothing sent.
    assert!(!n.send(&alert(AlertEvent::Stale)).await.unwrap());
    assert!(n.heartbeat().await.unwrap());
    let r = got.lock().unwrap();
    assert_eq!(r.posts.len(), 1);
    assert_eq!(r.posts[0]["event"], "failure");
    assert_eq!(r.heartbeats, 1);
}

#[tokio::test]
async fn delivery_errors_never_show_the_key() {
    let (base, got) = receiver().await;
    got.lock().unwrap().fail_first = 10;
    let n = Notifier::new(settings(&base, "/hook", AlertFormat::Json))
        .unwrap()
        .with_retry_delay(Duration::ZERO);
    let e = n
        .send(&alert(AlertEvent::Failure))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("HTTP status 502") && e.contains("3 attempts"),
        "{e}"
    );
    assert!(!e.contains("SECRETKEY"), "{e}");

    let wecom = Notifier::new(settings(&base, "/wecom-bad", AlertFormat::Wecom))
        .unwrap()
        .with_retry_delay(Duration::ZERO);
    let e = wecom
        .send(&alert(AlertEvent::Failure))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("errcode 93000"), "{e}");
    assert!(!e.contains("SECRETKEY"), "{e}");

    // Nothing listens on this port: a transport error, still without the key.
    let dead = Notifier::new(settings("http://127.0.0.1:9", "/hook", AlertFormat::Json))
        .unwrap()
        .with_retry_delay(Duration::ZERO);
    let e = dead
        .send(&alert(AlertEvent::Failure))
        .await
        .unwrap_err()
        .to_string();
    assert!(!e.contains("SECRETKEY"), "{e}");
    assert!(!format!("{:?}", settings(&base, "/hook", AlertFormat::Json)).contains("SECRETKEY"));
}
