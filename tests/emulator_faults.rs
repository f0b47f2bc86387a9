//! Fault injection (errcodes, HTTP 5xx, resets, invalid JSON, latency, damaged downloads,
//! expired URLs, seeded probability), counters, and the HTTP control API.

mod emulator_support;

use std::time::{Duration, Instant};

use emulator_support::*;
use serde_json::{json, Value};
use tcb_backup::emulator::{EmulatorConfig, FaultAction, FaultRule};

#[tokio::test]
async fn errcode_faults_for_the_next_n_calls_and_counters() {
    let e = emu().await;
    let t = e.stable_token().await;
    e.ctl().add_fault(FaultRule::next(
        "databasecollectionget",
        2,
        FaultAction::Errcode {
            errcode: -1,
            errmsg: None,
        },
    ));
    let body = json!({"env": e.env});
    let a = e.tcb("databasecollectionget", &t, body.clone()).await;
    assert_eq!(errcode(&a), -1);
    assert_rid(&a);
    assert_eq!(
        errcode(&e.tcb("databasecollectionget", &t, body.clone()).await),
        -1
    );
    assert_eq!(
        errcode(&e.tcb("databasecollectionget", &t, body.clone()).await),
        0
    );
    assert_eq!(e.ctl().calls("databasecollectionget"), 3);
    assert_eq!(e.ctl().errcode_count("databasecollectionget", -1), 2);
    assert_eq!(e.ctl().errcode_count("databasecollectionget", 0), 1);
    assert_eq!(e.ctl().calls("stable_token"), 1);
    assert!(e.ctl().faults().is_empty());
    // token endpoints can be faulted too
    e.ctl().add_fault(FaultRule::next(
        "stable_token",
        1,
        FaultAction::Errcode {
            errcode: -1000,
            errmsg: Some("system error".into()),
        },
    ));
    let r = e
        .stable_token_raw(
            json!({"grant_type":"client_credential","appid":e.appid,"secret":e.secret}),
        )
        .await;
    assert_eq!(errcode(&r), -1000);
}

#[tokio::test]
async fn transport_faults() {
    let e = emu().await;
    let t = e.stable_token().await;
    let url = format!("{}/tcb/databasecollectionget?access_token={t}", e.base);
    let body = json!({"env": e.env}).to_string();
    e.ctl().add_fault(FaultRule::next(
        "databasecollectionget",
        1,
        FaultAction::HttpStatus { status: 502 },
    ));
    let resp = e
        .http
        .post(&url)
        .body(body.clone())
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 502);
    e.ctl().add_fault(FaultRule::next(
        "databasecollectionget",
        1,
        FaultAction::Reset,
    ));
    let outcome = match e.http.post(&url).body(body.clone()).send().await {
        Err(_) => true,
        Ok(resp) => resp.bytes().await.is_err(),
    };
    assert!(outcome, "a reset must surface as a transport error");
    e.ctl().add_fault(FaultRule::next(
        "databasecollectionget",
        1,
        FaultAction::InvalidJson,
    ));
    let text = e
        .http
        .post(&url)
        .body(body.clone())
        .send()
        .await
        .expect("send")
        .text()
        .await
        .expect("text");
    assert!(serde_json::from_str::<Value>(&text).is_err());
    e.ctl().add_fault(FaultRule::next(
        "databasecollectionget",
        1,
        FaultAction::Latency { millis: 150 },
    ));
    let started = Instant::now();
    let r: Value = e
        .http
        .post(&url)
        .body(body.clone())
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert!(started.elapsed() >= Duration::from_millis(150));
    assert_eq!(errcode(&r), 0, "latency alone still answers normally");
    let stats = e
        .ctl()
        .counters()
        .endpoints
        .get("databasecollectionget")
        .cloned()
        .unwrap_or_default();
    assert_eq!(stats.calls, 4);
    assert_eq!(stats.faults_injected, 4);
    // the server is still healthy
    let r = e
        .tcb("databasecollectionget", &t, json!({"env": e.env}))
        .await;
    assert_eq!(errcode(&r), 0);
}

#[tokio::test]
async fn download_faults() {
    let e = emu().await;
    let t = e.stable_token().await;
    let content: Vec<u8> = (0..100_000u32).flat_map(|i| i.to_le_bytes()).collect();
    let fid = e.ctl().put_file(&e.env, "big.bin", &content).expect("put");
    let r = e
        .tcb(
            "batchdownloadfile",
            &t,
            json!({"env": e.env, "file_list": [{"fileid": fid, "max_age": 3600}]}),
        )
        .await;
    let url = r["file_list"][0]["download_url"]
        .as_str()
        .expect("url")
        .to_string();
    let full = e
        .http
        .get(&url)
        .send()
        .await
        .expect("send")
        .bytes()
        .await
        .expect("bytes");
    assert_eq!(full.as_ref(), content.as_slice());

    e.ctl().add_fault(FaultRule::next(
        "download",
        1,
        FaultAction::TruncateBody {
            keep_bytes: Some(1000),
        },
    ));
    let resp = e.http.get(&url).send().await.expect("send");
    assert_eq!(
        resp.content_length(),
        Some(content.len() as u64),
        "announces the full length"
    );
    assert!(resp.bytes().await.is_err(), "then breaks off");

    e.ctl()
        .add_fault(FaultRule::next("download", 1, FaultAction::CorruptBody));
    let bytes = e
        .http
        .get(&url)
        .send()
        .await
        .expect("send")
        .bytes()
        .await
        .expect("bytes");
    assert_eq!(bytes.len(), content.len());
    assert_ne!(bytes.as_ref(), content.as_slice());

    e.ctl()
        .add_fault(FaultRule::next("download", 1, FaultAction::ExpiredUrl));
    let (status, body) = e.get_text(&url).await;
    assert_eq!(status, 403);
    assert!(body.contains("expired"));
    e.ctl()
        .add_fault(FaultRule::next("download", 1, FaultAction::NotFound));
    assert_eq!(e.get_text(&url).await.0, 404);
    assert_eq!(
        e.http
            .get(&url)
            .send()
            .await
            .expect("send")
            .bytes()
            .await
            .expect("ok again")
            .len(),
        content.len()
    );
}

#[tokio::test]
async fn probabilistic_faults_are_seeded() {
    async fn run() -> Vec<i64> {
        let mut cfg = EmulatorConfig::for_tests();
        cfg.fault_seed = 99;
        let e = emu_with(cfg).await;
        let t = e.stable_token().await;
        e.ctl().add_fault(FaultRule::with_probability(
            "databasecount",
            0.3,
            FaultAction::Errcode {
                errcode: -501001,
                errmsg: None,
            },
        ));
        e.ctl().create_collection(&e.env, "c").expect("create");
        let mut out = Vec::new();
        for _ in 0..40 {
            out.push(errcode(
                &e.tcb(
                    "databasecount",
                    &t,
                    json!({"env": e.env, "query": "db.collection('c').count()"}),
                )
                .await,
            ));
        }
        out
    }
    let a = run().await;
    assert_eq!(a, run().await);
    let failures = a.iter().filter(|c| **c == -501001).count();
    assert!((3..=25).contains(&failures), "{failures}");
}

#[tokio::test]
async fn control_api_over_http() {
    let e = emu().await;
    let c = |p: &str| format!("{}/_emulator/{p}", e.base);
    let http = &e.http;
    let r: Value = http
        .post(c("faults"))
        .json(
            &json!({"endpoint":"databasecount","action":{"kind":"errcode","errcode":-1},"times":1}),
        )
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert!(r["id"].is_u64());
    let faults: Value = http
        .get(c("faults"))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(faults.as_array().map(Vec::len), Some(1));
    http.delete(c("faults")).send().await.expect("send");
    assert!(e.ctl().faults().is_empty());
    // documents
    let r: Value = http
        .post(c(&format!("envs/{}/collections/orders/documents", e.env)))
        .json(&json!([{"_id":"o1","n":1},{"n":2}]))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(r["id_list"][0], "o1");
    let docs: Value = http
        .get(c(&format!("envs/{}/collections/orders/documents", e.env)))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(docs.as_array().map(Vec::len), Some(2));
    // tokens, clock, config, quotas, exports, counters
    let t = e.stable_token().await;
    let tokens: Value = http
        .get(c("tokens"))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(tokens[0]["token"], t.as_str());
    let before = e.ctl().now();
    http.post(c("clock/advance"))
        .json(&json!({"seconds": 7300}))
        .send()
        .await
        .expect("send");
    assert!(e.ctl().now().duration_since(before).unwrap_or_default() >= Duration::from_secs(7300));
    assert_eq!(
        errcode(
            &e.tcb("databasecollectionget", &t, json!({"env": e.env}))
                .await
        ),
        42001
    );
    let cfg: Value = http
        .post(c("config"))
        .json(&json!({"status_message_field":"err_msg","quotas":{"token_per_day":5}}))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(cfg["status_message_field"], "err_msg");
    assert_eq!(cfg["quotas"]["token_per_day"], 5);
    assert_eq!(
        cfg["quotas"]["stable_token_per_minute"], 10_000,
        "merge keeps other fields"
    );
    let bad = http
        .post(c("config"))
        .json(&json!({"time_scale":"fast"}))
        .send()
        .await
        .expect("send");
    assert_eq!(bad.status(), 400);
    assert_eq!(
        http.post(c("quotas/clear"))
            .send()
            .await
            .expect("send")
            .status(),
        200
    );
    http.post(c("tokens/force_refresh"))
        .json(&json!({"appid": e.appid}))
        .send()
        .await
        .expect("send");
    let t2 = e.stable_token().await;
    http.post(c("tokens/force_refresh"))
        .json(&json!({"appid": e.appid}))
        .send()
        .await
        .expect("send");
    assert_eq!(
        errcode(
            &e.tcb("databasecollectionget", &t2, json!({"env": e.env}))
                .await
        ),
        40001
    );
    let unknown = http
        .post(c("tokens/legacy"))
        .json(&json!({"appid": "nope", "times": 2}))
        .send()
        .await
        .expect("send");
    assert_eq!(unknown.status(), 400);
    let counters: Value = http
        .get(c("counters"))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(
        counters["endpoints"]["databasecollectionget"]["errcodes"]["42001"],
        1
    );
    let exports: Value = http
        .get(c("exports"))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(exports, json!({}));
    // files and synthetic collections
    let r = http
        .put(c(&format!("envs/{}/files/in/data.json", e.env)))
        .body("{\"a\":1}\n")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    let files: Value = http
        .get(c(&format!("envs/{}/files", e.env)))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(files[0], json!({"path":"in/data.json","size":8}));
    let back = http
        .get(c(&format!("envs/{}/files/in/data.json", e.env)))
        .send()
        .await
        .expect("send")
        .text()
        .await
        .expect("text");
    assert_eq!(back, "{\"a\":1}\n");
    let r = http
        .post(c(&format!("envs/{}/collections/big/synthetic", e.env)))
        .json(&json!({"records": 10}))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    assert_eq!(e.ctl().documents(&e.env, "big").map(|d| d.len()), Some(10));
    let jobs: Value = http
        .get(c(&format!("envs/{}/jobs", e.env)))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(jobs, json!([]));
}
