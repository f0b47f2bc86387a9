//! The request validation order of reference §12.A.3 and the error envelopes.

mod emulator_support;

use emulator_support::*;
use serde_json::json;
use tcb_backup::emulator::{EmulatorApp, EmulatorConfig};

#[tokio::test]
async fn checks_run_in_the_documented_order() {
    let e = emu().await;
    let t = e.stable_token().await;
    let ep = |name: &str| format!("{}/tcb/{name}", e.base);

    // method first: even without a token
    let r: serde_json::Value = e
        .http
        .get(ep("databasecollectionget"))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(errcode(&r), 43002);
    assert_rid(&r);
    // missing token beats an empty body
    assert_eq!(
        errcode(&e.tcb_raw("databasecollectionget", None, vec![]).await),
        41001
    );
    assert_eq!(
        errcode(&e.tcb_raw("databasecollectionget", Some(""), vec![]).await),
        41001
    );
    // unknown token beats an empty body
    let r = e
        .tcb_raw("databasecollectionget", Some("bogus"), vec![])
        .await;
    assert_eq!(errcode(&r), 40001);
    assert!(r["errmsg"]
        .as_str()
        .unwrap_or_default()
        .starts_with("invalid credential"));
    assert_rid(&r);
    // empty body, then bad JSON
    assert_eq!(
        errcode(&e.tcb_raw("databasecollectionget", Some(&t), vec![]).await),
        44002
    );
    assert_eq!(
        errcode(
            &e.tcb_raw("databasecollectionget", Some(&t), b"  \n".to_vec())
                .await
        ),
        44002
    );
    assert_eq!(
        errcode(
            &e.tcb_raw("databasecollectionget", Some(&t), b"{env:1".to_vec())
                .await
        ),
        47001
    );
    assert_eq!(
        errcode(
            &e.tcb_raw("databasecollectionget", Some(&t), b"[1,2]".to_vec())
                .await
        ),
        47001
    );
    assert_eq!(
        errcode(
            &e.tcb_raw("databasecollectionget", Some(&t), b"env=x".to_vec())
                .await
        ),
        47001
    );
    // missing field beats a wrong type
    let r = e
        .tcb("databasemigratequeryinfo", &t, json!({"env": 5}))
        .await;
    assert_eq!(errcode(&r), 40101);
    let r = e
        .tcb("databasemigratequeryinfo", &t, json!({"env": e.env}))
        .await;
    assert_eq!(errcode(&r), 40101);
    let r = e
        .tcb(
            "databasemigratequeryinfo",
            &t,
            json!({"env": e.env, "job_id": "100000001"}),
        )
        .await;
    assert_eq!(errcode(&r), 40097);
    let r = e
        .tcb(
            "databasemigratequeryinfo",
            &t,
            json!({"env": 7, "job_id": 1}),
        )
        .await;
    assert_eq!(errcode(&r), 40097);
    // wrong type beats an unknown env
    let r = e.tcb("databasemigrateexport", &t, json!({"env": "nope", "file_path": "x", "file_type": true, "query": "db.collection('a').get()"})).await;
    assert_eq!(errcode(&r), 40097);
    // unknown env
    let r = e
        .tcb("databasecollectionget", &t, json!({"env": "nope-123"}))
        .await;
    assert_eq!(errcode(&r), -501007);
    assert!(r["errmsg"]
        .as_str()
        .unwrap_or_default()
        .contains("[100003] env not exists"));
    assert_rid(&r);
    // expired token: 42001 before anything about the body
    e.ctl().advance_clock(std::time::Duration::from_secs(7200));
    assert_eq!(
        errcode(&e.tcb_raw("databasecollectionget", Some(&t), vec![]).await),
        42001
    );
}

#[tokio::test]
async fn switches_and_value_checks() {
    let mut cfg = EmulatorConfig::for_tests();
    cfg.invalid_token_errcode = 40014;
    cfg.apps[0].disabled_envs = vec!["off-env".into()];
    cfg.apps.push(EmulatorApp {
        appid: "wxother0000000001".into(),
        secret: "othersecret".into(),
        envs: vec!["other-env".into()],
        ..EmulatorApp::default()
    });
    let e = emu_with(cfg).await;
    let t = e.stable_token().await;
    assert_eq!(
        errcode(
            &e.tcb_raw("databasecount", Some("bogus"), b"{}".to_vec())
                .await
        ),
        40014
    );
    assert_eq!(
        errcode(
            &e.tcb("databasecollectionget", &t, json!({"env": "off-env"}))
                .await
        ),
        85088
    );
    // another app's env does not exist for this token
    assert_eq!(
        errcode(
            &e.tcb("databasecollectionget", &t, json!({"env": "other-env"}))
                .await
        ),
        -501007
    );
    // file_type as a string of digits is accepted; out-of-range values are not
    e.ctl().create_collection(&e.env, "c").expect("create");
    let ok = e.tcb("databasemigrateexport", &t, json!({"env": e.env, "file_path": "p", "file_type": "1", "query": "db.collection(\"c\").get()"})).await;
    assert_eq!(errcode(&ok), 0, "{ok}");
    for (ft, path, query) in [
        (json!(3), "p", "db.collection('c').get()"),
        (json!(1), "../x", "db.collection('c').get()"),
        (json!(1), "p", "require('fs')"),
        (json!(1), "p", "db.collection('c').count()"),
    ] {
        let r = e
            .tcb(
                "databasemigrateexport",
                &t,
                json!({"env": e.env, "file_path": path, "file_type": ft, "query": query}),
            )
            .await;
        assert_eq!(errcode(&r), 40097, "{r}");
        assert_rid(&r);
    }
    // CSV without .field()
    let r = e.tcb("databasemigrateexport", &t, json!({"env": e.env, "file_path": "p", "file_type": 2, "query": "db.collection('c').get()"})).await;
    assert_eq!(errcode(&r), -501000);
    assert!(r["errmsg"]
        .as_str()
        .unwrap_or_default()
        .starts_with("Param `Fields` Is Missing"));
    // batch limits
    let list: Vec<_> = (0..51)
        .map(|i| json!({"fileid": format!("cloud://{}.b/{i}", e.env), "max_age": 60}))
        .collect();
    assert_eq!(
        errcode(
            &e.tcb(
                "batchdownloadfile",
                &t,
                json!({"env": e.env, "file_list": list})
            )
            .await
        ),
        40097
    );
    assert_eq!(
        errcode(
            &e.tcb(
                "batchdownloadfile",
                &t,
                json!({"env": e.env, "file_list": [{"fileid": 1}]})
            )
            .await
        ),
        40097
    );
    // collections: add twice, delete missing
    assert_eq!(
        errcode(
            &e.tcb(
                "databasecollectionadd",
                &t,
                json!({"env": e.env, "collection_name": "c"})
            )
            .await
        ),
        -502013
    );
    assert_eq!(
        errcode(
            &e.tcb(
                "databasecollectiondelete",
                &t,
                json!({"env": e.env, "collection_name": "zz"})
            )
            .await
        ),
        -502005
    );
    assert_eq!(
        errcode(
            &e.tcb(
                "databasequery",
                &t,
                json!({"env": e.env, "query": "db.collection('zz').get()"})
            )
            .await
        ),
        -502005
    );
    // unknown endpoint
    let resp = e
        .http
        .post(format!(
            "{}/tcb/databasedropeverything?access_token={t}",
            e.base
        ))
        .body("{}")
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 404);
}

#[tokio::test]
async fn hostile_bodies_never_break_the_server() {
    let e = emu().await;
    let t = e.stable_token().await;
    e.ctl().create_collection(&e.env, "c").expect("create");
    let nasty = [
        "db.collection('c').where(".repeat(2000),
        format!(
            "db.collection('c').where({{a:{}}}).get()",
            "[".repeat(10_000)
        ),
        "db.collection('c').limit(99999999999999999999999).get()".to_string(),
        "db.collection('c').where({a:1}).get(); db.collection('d').get()".to_string(),
        "\"".to_string(),
    ];
    for q in nasty {
        let r = e
            .tcb("databasequery", &t, json!({"env": e.env, "query": q}))
            .await;
        assert_eq!(errcode(&r), 40097, "{r}");
    }
    let r = e
        .tcb(
            "databasequery",
            &t,
            json!({"env": e.env, "query": "db.collection('c').where({a:'\u{0}\u{ffff}'}).get()"}),
        )
        .await;
    assert_eq!(errcode(&r), 0, "odd but valid strings are fine");
    let r = e
        .tcb("databasecollectionget", &t, json!({"env": e.env}))
        .await;
    assert_eq!(errcode(&r), 0);
}

#[tokio::test]
async fn stable_token_request_errors() {
    let e = emu().await;
    let url = format!("{}/cgi-bin/stable_token", e.base);
    let form = format!(
        "grant_type=client_credential&appid={}&secret={}",
        e.appid, e.secret
    );
    let r: serde_json::Value = e
        .http
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(errcode(&r), 41002);
    assert_rid(&r);
    let cases = [
        (
            json!({"grant_type":"password","appid":e.appid,"secret":e.secret}),
            40002,
        ),
        (
            json!({"grant_type":"client_credential","secret":e.secret}),
            41002,
        ),
        (
            json!({"grant_type":"client_credential","appid":e.appid}),
            41004,
        ),
        (
            json!({"grant_type":"client_credential","appid":"wxnope","secret":e.secret}),
            40013,
        ),
        (
            json!({"grant_type":"client_credential","appid":e.appid,"secret":"wrong"}),
            40001,
        ),
        (
            json!({"grant_type":"client_credential","appid":e.appid,"secret":e.secret,"force_refresh":"yes"}),
            40097,
        ),
    ];
    for (body, code) in cases {
        let r = e.stable_token_raw(body.clone()).await;
        assert_eq!(errcode(&r), code, "{body}");
        assert_rid(&r);
    }
    let r: serde_json::Value = e
        .http
        .get(format!(
            "{}/cgi-bin/token?grant_type=client_credential&appid={}",
            e.base, e.appid
        ))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(errcode(&r), 41004);
}

#[tokio::test]
async fn token_endpoint_account_states() {
    let mut cfg = EmulatorConfig::for_tests();
    cfg.wrong_secret_errcode = 40125;
    let e = emu_with(cfg).await;
    let body = json!({"grant_type":"client_credential","appid":e.appid,"secret":"wrong"});
    assert_eq!(errcode(&e.stable_token_raw(body).await), 40125);
    e.ctl()
        .update_config(|c| c.apps[0].ip_whitelist = Some(vec!["10.0.0.1".into()]));
    let r = e.legacy_token().await;
    assert_eq!(errcode(&r), 40164);
    assert!(r["errmsg"]
        .as_str()
        .unwrap_or_default()
        .starts_with("invalid ip 127.0.0.1 ipv6 ::ffff:127.0.0.1, not in whitelist"));
    e.ctl().update_config(|c| {
        c.apps[0].ip_whitelist = Some(vec!["127.0.0.1".into()]);
        c.apps[0].secret_frozen = true;
    });
    assert_eq!(errcode(&e.legacy_token().await), 40243);
    e.ctl().update_config(|c| {
        c.apps[0].secret_frozen = false;
        c.apps[0].ip_confirmation_required = true;
    });
    assert_eq!(errcode(&e.legacy_token().await), 89503);
}

#[tokio::test]
async fn bad_configs_are_refused_at_start() {
    let addr = "127.0.0.1:0".parse().expect("addr");
    let mut dup = EmulatorConfig::for_tests();
    dup.apps.push(EmulatorApp {
        appid: "wxsecond".into(),
        ..EmulatorApp::default()
    });
    let err = tcb_backup::emulator::start(dup, addr)
        .await
        .expect_err("duplicate envs");
    assert!(err.to_string().contains("listed twice"), "{err}");
    let mut empty = EmulatorConfig::for_tests();
    empty.apps.clear();
    assert!(tcb_backup::emulator::start(empty, addr).await.is_err());
    let mut bad_env = EmulatorConfig::for_tests();
    bad_env.apps[0].envs.push("a.b".into());
    assert!(tcb_backup::emulator::start(bad_env, addr).await.is_err());
}
