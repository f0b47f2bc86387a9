//! Contract tests for the error examples quoted in the reference: codes, message texts (which
//! clients must not compare for equality, but which should look like the real ones) and the
//! rid suffix.

mod emulator_support;

use std::time::Duration;

use emulator_support::*;
use serde_json::{json, Value};
use tcb_backup::emulator::{EmulatorConfig, FaultAction, FaultRule};

fn msg(v: &Value) -> &str {
    v["errmsg"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn token_error_examples() {
    let mut cfg = EmulatorConfig::for_tests();
    cfg.quotas.token_per_day = Some(0);
    cfg.quotas.stable_token_per_minute = Some(0);
    let e = emu_with(cfg).await;
    // §1.1: {"errcode":40013,"errmsg":"invalid appid"}
    let r: Value = e
        .http
        .get(format!(
            "{}/cgi-bin/token?grant_type=client_credential&appid=wxnope&secret=x",
            e.base
        ))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(errcode(&r), 40013);
    assert!(msg(&r).starts_with("invalid appid rid: "));
    assert_rid(&r);
    assert_eq!(
        r.as_object().map(|o| o.len()),
        Some(2),
        "only errcode and errmsg"
    );
    // §1.1 quota texts
    let r = e.legacy_token().await;
    assert_eq!(errcode(&r), 45009);
    assert!(msg(&r).starts_with("reach max api daily quota limit"));
    let r = e
        .stable_token_raw(
            json!({"grant_type":"client_credential","appid":e.appid,"secret":e.secret}),
        )
        .await;
    assert_eq!(errcode(&r), 45011);
    assert!(msg(&r).starts_with("api minute-quota reach limit must slower retry next minute"));
    // §12.A: -1000 "system error" with HTTP 200 from /cgi-bin/token
    e.ctl().clear_quotas();
    e.ctl().update_config(|c| c.quotas.token_per_day = None);
    e.ctl().add_fault(FaultRule::next(
        "token",
        1,
        FaultAction::Errcode {
            errcode: -1000,
            errmsg: None,
        },
    ));
    let resp = e
        .http
        .get(format!(
            "{}/cgi-bin/token?grant_type=client_credential&appid={}&secret={}",
            e.base, e.appid, e.secret
        ))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    let r: Value = resp.json().await.expect("json");
    assert_eq!(errcode(&r), -1000);
    assert!(msg(&r).starts_with("system error rid: "));
}

#[tokio::test]
async fn tcb_error_examples() {
    let e = emu().await;
    let t = e.stable_token().await;
    // §13 #11: -501007 [100003] env not exists
    let r = e.tcb("databasemigrateexport", &t, json!({"env": "test2-4a89da", "file_path": "x", "file_type": 1, "query": "db.collection('a').get()"})).await;
    assert_eq!(errcode(&r), -501007);
    assert!(msg(&r).contains("[100003] env not exists"));
    // §2 / §13 #8: -501000 Param `Fields` Is Missing
    e.ctl().create_collection(&e.env, "a").expect("create");
    let r = e.tcb("databasemigrateexport", &t, json!({"env": e.env, "file_path": "x", "file_type": 2, "query": "db.collection('a').get()"})).await;
    assert_eq!(errcode(&r), -501000);
    assert!(msg(&r).starts_with("Param `Fields` Is Missing rid: "));
    // §0 / §13 #1: 40001 "invalid credential, access_token is invalid or not latest"
    e.ctl()
        .force_refresh_by_other_service(&e.appid)
        .expect("force");
    let r = e
        .tcb("databasecollectionget", &t, json!({"env": e.env}))
        .await;
    assert_eq!(errcode(&r), 40001);
    assert!(msg(&r).starts_with("invalid credential, access_token is invalid or not latest rid: "));
    // 42001
    let t = e.stable_token().await;
    e.ctl().advance_clock(Duration::from_secs(7201));
    let r = e
        .tcb("databasecollectionget", &t, json!({"env": e.env}))
        .await;
    assert_eq!(errcode(&r), 42001);
    assert!(msg(&r).starts_with("access_token expired rid: "));
}

#[tokio::test]
async fn cos_error_examples() {
    let e = emu().await;
    let t = e.stable_token().await;
    let r = e
        .tcb("uploadfile", &t, json!({"env": e.env, "path": "x"}))
        .await;
    let url = r["url"].as_str().expect("url");
    // §7.1 / §13 #9: MalformedPOSTRequest for a broken body
    let resp = e
        .http
        .post(url)
        .header("content-type", "multipart/form-data; boundary=B")
        .body("garbage")
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 400);
    assert_eq!(
        resp.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/xml")
    );
    let body = resp.text().await.unwrap_or_default();
    assert!(body.contains("<Error>") && body.contains("<Code>MalformedPOSTRequest</Code>"));
    assert!(body.contains("The body of your POST request is not well-formed multipart/form-data."));
}
