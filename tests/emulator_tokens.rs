//! The two token families over HTTP: grace windows, early rotation, forced refresh limits,
//! isolation between families, the "another service" helpers and the token quotas.

mod emulator_support;

use std::time::Duration;

use emulator_support::*;
use serde_json::json;
use tcb_backup::emulator::{EmulatorConfig, Family};

async fn works(e: &Emu, token: &str) -> i64 {
    errcode(
        &e.tcb("databasecollectionget", token, json!({"env": e.env}))
            .await,
    )
}

#[tokio::test]
async fn legacy_tokens_supersede_each_other_with_a_grace_window() {
    let e = emu().await;
    let t1 = e.legacy_token().await["access_token"]
        .as_str()
        .expect("t1")
        .to_string();
    let t2 = e.legacy_token().await["access_token"]
        .as_str()
        .expect("t2")
        .to_string();
    assert_ne!(t1, t2);
    assert_eq!(
        works(&e, &t1).await,
        0,
        "previous token inside its 300 s grace"
    );
    e.ctl().advance_clock(Duration::from_secs(299));
    assert_eq!(works(&e, &t1).await, 0);
    e.ctl().advance_clock(Duration::from_secs(2));
    assert_eq!(works(&e, &t1).await, 40001, "grace over");
    // a third fetch kills the one before the previous at once
    let t3 = e.legacy_token().await["access_token"]
        .as_str()
        .expect("t3")
        .to_string();
    let _t4 = e.legacy_token().await;
    assert_eq!(works(&e, &t2).await, 40001);
    assert_eq!(works(&e, &t3).await, 0);
}

#[tokio::test]
async fn stable_token_is_shared_then_rotates_early() {
    let e = emu().await;
    let body = json!({"grant_type":"client_credential","appid":e.appid,"secret":e.secret});
    let a = e.stable_token_raw(body.clone()).await;
    let b = e.stable_token_raw(body.clone()).await;
    assert_eq!(
        a["access_token"], b["access_token"],
        "normal mode returns the same token"
    );
    e.ctl().advance_clock(Duration::from_secs(1000));
    let c = e.stable_token_raw(body.clone()).await;
    assert_eq!(c["access_token"], a["access_token"]);
    assert_eq!(c["expires_in"], 6200, "expires_in is the remaining life");
    e.ctl().advance_clock(Duration::from_secs(5950)); // 250 s left
    let d = e.stable_token_raw(body.clone()).await;
    assert_ne!(
        d["access_token"], a["access_token"],
        "rotated inside the last 300 s"
    );
    assert_eq!(d["expires_in"], 7200);
    let old = a["access_token"].as_str().unwrap_or_default();
    let new = d["access_token"].as_str().unwrap_or_default();
    assert_eq!(
        works(&e, old).await,
        0,
        "old stays valid until its natural expiry"
    );
    assert_eq!(works(&e, new).await, 0);
    e.ctl().advance_clock(Duration::from_secs(250));
    assert_eq!(works(&e, old).await, 42001);
    assert_eq!(works(&e, new).await, 0);
    // every stable token returned has expires_in >= 300
    for _ in 0..5 {
        e.ctl().advance_clock(Duration::from_secs(1500));
        let r = e.stable_token_raw(body.clone()).await;
        assert!(r["expires_in"].as_u64().is_some_and(|s| s >= 300), "{r}");
    }
}

#[tokio::test]
async fn force_refresh_rules() {
    let e = emu().await;
    let normal = json!({"grant_type":"client_credential","appid":e.appid,"secret":e.secret});
    let force = json!({"grant_type":"client_credential","appid":e.appid,"secret":e.secret,"force_refresh":true});
    let t0 = e.stable_token_raw(normal.clone()).await["access_token"].clone();
    let t1 = e.stable_token_raw(force.clone()).await["access_token"].clone();
    assert_ne!(t0, t1);
    assert_eq!(
        works(&e, t0.as_str().unwrap_or_default()).await,
        40001,
        "forced refresh kills the old token at once"
    );
    e.ctl().advance_clock(Duration::from_secs(10));
    let t2 = e.stable_token_raw(force.clone()).await["access_token"].clone();
    assert_eq!(
        t1, t2,
        "a forced call < 30 s after the previous one changes nothing"
    );
    let mut last = t2;
    for _ in 0..19 {
        e.ctl().advance_clock(Duration::from_secs(31));
        last = e.stable_token_raw(force.clone()).await["access_token"].clone();
    }
    e.ctl().advance_clock(Duration::from_secs(31));
    let capped = e.stable_token_raw(force.clone()).await["access_token"].clone();
    assert_eq!(
        capped, last,
        "the 21st forced refresh of the day changes nothing"
    );
}

#[tokio::test]
async fn families_are_isolated_and_other_services_can_interfere() {
    let e = emu().await;
    let stable = e.stable_token().await;
    let legacy = e.legacy_token().await["access_token"]
        .as_str()
        .expect("legacy")
        .to_string();
    // another service hammering the legacy endpoint kills only legacy tokens
    e.ctl()
        .legacy_token_by_other_service(&e.appid, 3)
        .expect("legacy helper");
    assert_eq!(works(&e, &legacy).await, 40001);
    assert_eq!(works(&e, &stable).await, 0);
    // another service force-refreshing kills only stable tokens
    let legacy2 = e.legacy_token().await["access_token"]
        .as_str()
        .expect("legacy2")
        .to_string();
    e.ctl()
        .force_refresh_by_other_service(&e.appid)
        .expect("force helper");
    assert_eq!(works(&e, &stable).await, 40001);
    assert_eq!(works(&e, &legacy2).await, 0);
    let fresh = e.stable_token().await;
    assert_ne!(fresh, stable);
    assert_eq!(works(&e, &fresh).await, 0);
    let issued = e.ctl().issued_tokens();
    assert!(issued
        .iter()
        .any(|t| t.token == fresh && t.family == Family::Stable));
    assert!(issued
        .iter()
        .any(|t| t.token == legacy && t.family == Family::Legacy));
    assert!(e.ctl().force_refresh_by_other_service("wxunknown").is_err());
}

#[tokio::test]
async fn token_quotas_and_clear() {
    let mut cfg = EmulatorConfig::for_tests();
    cfg.quotas.token_per_day = Some(3);
    cfg.quotas.stable_token_per_minute = Some(2);
    let e = emu_with(cfg).await;
    for _ in 0..3 {
        assert!(e.legacy_token().await["access_token"].is_string());
    }
    let r = e.legacy_token().await;
    assert_eq!(errcode(&r), 45009);
    assert_rid(&r);
    e.ctl().clear_quotas();
    assert!(e.legacy_token().await["access_token"].is_string());
    // stable: per-minute limit → 45011, next minute fine
    let body = json!({"grant_type":"client_credential","appid":e.appid,"secret":e.secret});
    e.stable_token_raw(body.clone()).await;
    e.stable_token_raw(body.clone()).await;
    assert_eq!(errcode(&e.stable_token_raw(body.clone()).await), 45011);
    e.ctl().advance_clock(Duration::from_secs(60));
    assert!(e.stable_token_raw(body.clone()).await["access_token"].is_string());
    // the daily legacy quota resets at Beijing midnight
    e.legacy_token().await;
    e.legacy_token().await;
    assert_eq!(errcode(&e.legacy_token().await), 45009);
    e.ctl().advance_clock(Duration::from_secs(86_400));
    assert!(e.legacy_token().await["access_token"].is_string());
    assert_eq!(e.ctl().errcode_count("token", 45009), 2);
}

#[tokio::test]
async fn env_quotas() {
    let mut cfg = EmulatorConfig::for_tests();
    cfg.quotas.env_qps = Some(1);
    cfg.quotas.env_reads_per_day = Some(3);
    let e = emu_with(cfg).await;
    let t = e.stable_token().await;
    let mut codes = Vec::new();
    for _ in 0..5 {
        codes.push(works(&e, &t).await);
    }
    assert_eq!(codes[0], 0);
    assert!(codes.contains(&-501004), "{codes:?}");
    e.ctl().update_config(|c| c.quotas.env_qps = None);
    e.ctl().clear_quotas();
    let codes: Vec<i64> = futures_util::future::join_all((0..4).map(|_| works(&e, &t))).await;
    assert_eq!(
        codes.iter().filter(|c| **c == -501015).count(),
        1,
        "{codes:?}"
    );
}
