//! Migrate jobs on the virtual clock: status progression, job ids, scripted failures and stuck
//! jobs, the message-field switch, real export content and import modes.

mod emulator_support;

use std::time::Duration;

use emulator_support::*;
use serde_json::{json, Value};
use tcb_backup::emulator::{
    EmulatorConfig, FaultAction, FaultRule, JobTiming, SeedSpec, StatusMessageField,
    UnknownCollectionMode, UpsertMode,
};

fn timed() -> EmulatorConfig {
    let mut cfg = EmulatorConfig::for_tests();
    cfg.job_timing = JobTiming {
        waiting_secs: 10.0,
        reading_base_secs: 10.0,
        writing_base_secs: 10.0,
        migrating_base_secs: 10.0,
        per_record_secs: 0.1,
    };
    cfg
}

/// Query a job with a freshly fetched stable token (the tests move the clock by hours).
async fn info(e: &Emu, _t: &str, job: u64) -> Value {
    let t = e.stable_token().await;
    e.tcb(
        "databasemigratequeryinfo",
        &t,
        json!({"env": e.env, "job_id": job}),
    )
    .await
}

async fn export(e: &Emu, t: &str, query: &str, file_type: u64, path: &str) -> u64 {
    let r = e
        .tcb(
            "databasemigrateexport",
            t,
            json!({"env": e.env, "file_path": path, "file_type": file_type, "query": query}),
        )
        .await;
    assert_eq!(errcode(&r), 0, "{r}");
    r["job_id"].as_u64().expect("job_id")
}

#[tokio::test]
async fn export_progresses_through_its_states_with_size_scaled_durations() {
    let e = emu_with(timed()).await;
    let t = e.stable_token().await;
    e.ctl()
        .insert_documents(&e.env, "c", (0..100).map(|i| json!({"i": i})).collect())
        .expect("insert");
    let job = export(&e, &t, "db.collection('c').get()", 1, "out/c.json").await;
    // waiting 10 s, reading 10 + 100×0.1 = 20 s, writing 20 s
    let steps = [
        (0, "waiting"),
        (9, "waiting"),
        (2, "reading"),
        (18, "reading"),
        (2, "writing"),
        (17, "writing"),
        (2, "success"),
    ];
    for (advance, want) in steps {
        e.ctl().advance_clock(Duration::from_secs(advance));
        let r = info(&e, &t, job).await;
        assert_eq!(r["status"], want, "{r}");
        if want == "success" {
            assert_eq!(r["record_success"], 100);
            assert!(r["file_url"]
                .as_str()
                .is_some_and(|u| u.starts_with(&e.base)));
        } else {
            assert_eq!(
                r["file_url"], "",
                "file_url is an empty string until success"
            );
            assert_eq!(r["record_success"], 0);
        }
    }
    let jobs = e.ctl().jobs(&e.env);
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].status, "success");
    assert_eq!(e.ctl().export_count(&e.env, "c"), 1);
}

#[tokio::test]
async fn import_progresses_waiting_migrating_success() {
    let e = emu_with(timed()).await;
    let t = e.stable_token().await;
    e.ctl()
        .put_file(&e.env, "in.json", b"{\"_id\":\"a\"}\n{\"_id\":\"b\"}\n")
        .expect("put");
    let r = e.tcb("databasemigrateimport", &t, json!({"env": e.env, "collection_name": "new_coll", "file_path": "in.json", "file_type": 1, "stop_on_error": false, "conflict_mode": 1})).await;
    let job = r["job_id"].as_u64().expect("job");
    assert_eq!(info(&e, &t, job).await["status"], "waiting");
    e.ctl().advance_clock(Duration::from_secs(11));
    assert_eq!(info(&e, &t, job).await["status"], "migrating");
    assert!(
        e.ctl().documents(&e.env, "new_coll").is_none(),
        "nothing applied before the end"
    );
    e.ctl().advance_clock(Duration::from_secs(11));
    let r = info(&e, &t, job).await;
    assert_eq!(
        (
            r["status"].as_str(),
            r["record_success"].as_u64(),
            r["file_url"].as_str()
        ),
        (Some("success"), Some(2), Some(""))
    );
    assert_eq!(
        e.ctl().documents(&e.env, "new_coll").map(|d| d.len()),
        Some(2)
    );
}

#[tokio::test]
async fn job_ids_are_monotonic_per_env_and_private_to_it() {
    let e = emu().await;
    let t = e.stable_token().await;
    e.ctl().create_collection(&e.env, "c").expect("create");
    let a = export(&e, &t, "db.collection('c').get()", 1, "a").await;
    let b = export(&e, &t, "db.collection('c').get()", 1, "b").await;
    assert!(b > a && a >= 100_000_000);
    let r = e
        .tcb(
            "databasemigratequeryinfo",
            &t,
            json!({"env": e.env2, "job_id": a}),
        )
        .await;
    assert_eq!(errcode(&r), 40097);
    e.ctl().update_config(|c| c.foreign_job_errcode = -501009);
    let r = e
        .tcb(
            "databasemigratequeryinfo",
            &t,
            json!({"env": e.env2, "job_id": a}),
        )
        .await;
    assert_eq!(errcode(&r), -501009);
    assert_rid(&r);
}

#[tokio::test]
async fn scripted_failures_stuck_jobs_and_unknown_collections() {
    let e = emu().await;
    let t = e.stable_token().await;
    e.ctl().create_collection(&e.env, "c").expect("create");
    e.ctl().add_fault(FaultRule::next(
        "databasemigrateexport",
        1,
        FaultAction::FailJob {
            message: "export failed: disk full".into(),
        },
    ));
    let failed = export(&e, &t, "db.collection('c').get()", 1, "a").await;
    e.ctl().add_fault(FaultRule::next(
        "databasemigrateexport",
        1,
        FaultAction::StuckJob,
    ));
    let stuck = export(&e, &t, "db.collection('c').get()", 1, "b").await;
    let missing = export(&e, &t, "db.collection('nope').get()", 1, "c").await;
    e.ctl().advance_clock(Duration::from_secs(86_400));
    let r = info(&e, &t, failed).await;
    assert_eq!(
        (
            r["status"].as_str(),
            r["err_msg"].as_str(),
            r["file_url"].as_str()
        ),
        (Some("fail"), Some("export failed: disk full"), Some(""))
    );
    assert_eq!(info(&e, &t, stuck).await["status"], "waiting");
    let r = info(&e, &t, missing).await;
    assert_eq!(r["status"], "fail");
    assert!(r["error_msg"]
        .as_str()
        .unwrap_or_default()
        .contains("not exists"));
    e.ctl()
        .update_config(|c| c.unknown_collection = UnknownCollectionMode::Immediate);
    let t = e.stable_token().await;
    let r = e.tcb("databasemigrateexport", &t, json!({"env": e.env, "file_path": "x", "file_type": 1, "query": "db.collection('nope').get()"})).await;
    assert_eq!(errcode(&r), -502005);
}

#[tokio::test]
async fn message_field_switch() {
    let e = emu().await;
    let t = e.stable_token().await;
    e.ctl().create_collection(&e.env, "c").expect("create");
    let job = export(&e, &t, "db.collection('c').get()", 1, "a").await;
    e.ctl().advance_clock(Duration::from_secs(60));
    let r = info(&e, &t, job).await;
    assert!(r.get("err_msg").is_some() && r.get("error_msg").is_some());
    e.ctl()
        .update_config(|c| c.status_message_field = StatusMessageField::ErrMsg);
    let r = info(&e, &t, job).await;
    assert!(r.get("err_msg").is_some() && r.get("error_msg").is_none());
    e.ctl()
        .update_config(|c| c.status_message_field = StatusMessageField::ErrorMsg);
    let r = info(&e, &t, job).await;
    assert!(r.get("err_msg").is_none() && r.get("error_msg").is_some());
}

#[tokio::test]
async fn export_content_is_real_json_lines_and_lands_in_storage() {
    let mut cfg = EmulatorConfig::for_tests();
    cfg.seed = Some(SeedSpec {
        collections: 2,
        records_per_collection: 120,
        large_fraction: 0.1,
        ..SeedSpec::default()
    });
    let e = emu_with(cfg).await;
    let t = e.stable_token().await;
    let stored = e.ctl().documents(&e.env, "users").expect("seeded");
    let (_, r) = e
        .export_done(
            &t,
            "db.collection(\"users\").get()",
            1,
            "backups/users.json",
        )
        .await;
    assert_eq!(r["record_success"], 120);
    let (status, body) = e.get_text(r["file_url"].as_str().unwrap_or_default()).await;
    assert_eq!(status, 200);
    let lines: Vec<Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    assert_eq!(lines, stored);
    assert!(lines.iter().all(|d| d["_id"].is_string()
        && d["createdAt"]["$date"].is_string()
        && d["location"]["type"] == "Point"));
    assert!(body.contains("张伟") || body.contains("Zoë") || body.contains("🙂"));
    // the same file is reachable through batchdownloadfile at file_path
    let fid = tcb_backup::emulator::file_id(&e.env, "backups/users.json");
    let d = e
        .tcb(
            "batchdownloadfile",
            &t,
            json!({"env": e.env, "file_list": [{"fileid": fid, "max_age": 600}]}),
        )
        .await;
    let (_, again) = e
        .get_text(
            d["file_list"][0]["download_url"]
                .as_str()
                .unwrap_or_default(),
        )
        .await;
    assert_eq!(again, body);
    // where / skip / limit / field / orderBy subset
    let (_, r) = e.export_done(&t, "db.collection('users').where({active:true}).orderBy('age','desc').skip(2).limit(5).field({age:true,'address.city':true})", 1, "sub.json").await;
    let (_, body) = e.get_text(r["file_url"].as_str().unwrap_or_default()).await;
    let mut want: Vec<&Value> = stored.iter().filter(|d| d["active"] == true).collect();
    want.sort_by(|a, b| b["age"].as_i64().cmp(&a["age"].as_i64()));
    let want: Vec<Value> = want.into_iter().skip(2).take(5).map(|d| json!({"_id": d["_id"], "age": d["age"], "address": {"city": d["address"]["city"]}})).collect();
    let got: Vec<Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(got, want);
    // CSV with .field(): header + rows
    let (_, r) = e
        .export_done(
            &t,
            "db.collection('users').field({_id:true,name:true,age:true}).limit(3)",
            2,
            "u.csv",
        )
        .await;
    let (_, csv) = e.get_text(r["file_url"].as_str().unwrap_or_default()).await;
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(rows.len(), 4);
    assert_eq!(rows[0], "_id,name,age");
    assert!(rows[1].starts_with(stored[0]["_id"].as_str().unwrap_or("?")));
}

#[tokio::test]
async fn synthetic_collections_export_without_being_stored() {
    let e = emu().await;
    let t = e.stable_token().await;
    e.ctl()
        .create_synthetic_collection(&e.env, "big", 3000, 7, 0.02)
        .expect("synthetic");
    let r = e
        .tcb("databasecollectionget", &t, json!({"env": e.env}))
        .await;
    assert_eq!(r["collections"][0]["count"], 3000);
    assert!(r["collections"][0]["size"]
        .as_u64()
        .is_some_and(|s| s > 3000 * 100));
    let (_, r) = e
        .export_done(&t, "db.collection('big').get()", 1, "big.json")
        .await;
    assert_eq!(r["record_success"], 3000);
    let (_, body) = e.get_text(r["file_url"].as_str().unwrap_or_default()).await;
    assert_eq!(body.lines().count(), 3000);
    let (_, r2) = e
        .export_done(&t, "db.collection('big').get()", 1, "big2.json")
        .await;
    let (_, body2) = e
        .get_text(r2["file_url"].as_str().unwrap_or_default())
        .await;
    assert_eq!(body, body2, "deterministic");
    let w = e
        .tcb(
            "databaseadd",
            &t,
            json!({"env": e.env, "query": "db.collection('big').add({data:{a:1}})"}),
        )
        .await;
    assert_ne!(errcode(&w), 0, "synthetic collections are read-only");
}

async fn import(
    e: &Emu,
    _t: &str,
    coll: &str,
    path: &str,
    ft: u64,
    stop: bool,
    mode: u64,
) -> Value {
    let t = &e.stable_token().await;
    let r = e.tcb("databasemigrateimport", t, json!({"env": e.env, "collection_name": coll, "file_path": path, "file_type": ft, "stop_on_error": stop, "conflict_mode": mode})).await;
    assert_eq!(errcode(&r), 0, "{r}");
    let job = r["job_id"].as_u64().expect("job");
    e.ctl().advance_clock(Duration::from_secs(3600));
    info(e, t, job).await
}

#[tokio::test]
async fn import_modes() {
    let e = emu().await;
    let t = e.stable_token().await;
    e.ctl()
        .insert_documents(&e.env, "c", vec![json!({"_id":"a","x":1,"keep":true})])
        .expect("insert");
    let file = "{\"_id\":\"a\",\"x\":2}\n{\"_id\":\"b\",\"d\":{\"$date\":\"2020-01-01T00:00:00.000Z\"}}\n{\"bad\":1,\"bad\":2}\n{\"_id\":\"b\"}\n";
    e.ctl()
        .put_file(&e.env, "in.json", file.as_bytes())
        .expect("put");
    // INSERT: duplicate _id (existing a, repeated b) and duplicate keys fail per record
    let r = import(&e, &t, "c", "in.json", 1, false, 1).await;
    assert_eq!(
        (
            r["status"].as_str(),
            r["record_success"].as_u64(),
            r["record_fail"].as_u64()
        ),
        (Some("success"), Some(1), Some(3))
    );
    let docs = e.ctl().documents(&e.env, "c").expect("docs");
    assert_eq!(docs[0], json!({"_id":"a","x":1,"keep":true}));
    // UPSERT (replace by default)
    let r = import(&e, &t, "c", "in.json", 1, false, 2).await;
    assert_eq!(
        (r["record_success"].as_u64(), r["record_fail"].as_u64()),
        (Some(3), Some(1))
    );
    assert_eq!(
        e.ctl().documents(&e.env, "c").expect("docs")[0],
        json!({"_id":"a","x":2})
    );
    // UPSERT merge switch
    e.ctl()
        .insert_documents(&e.env, "m", vec![json!({"_id":"a","keep":true})])
        .expect("insert");
    e.ctl().update_config(|c| c.upsert_mode = UpsertMode::Merge);
    import(&e, &t, "m", "in.json", 1, false, 2).await;
    assert_eq!(
        e.ctl().documents(&e.env, "m").expect("docs")[0],
        json!({"_id":"a","x":2,"keep":true})
    );
    // stop_on_error
    let r = import(&e, &t, "s", "in.json", 1, true, 1).await;
    assert_eq!(
        (
            r["status"].as_str(),
            r["record_success"].as_u64(),
            r["record_fail"].as_u64()
        ),
        (Some("fail"), Some(2), Some(1))
    );
    assert!(r["err_msg"]
        .as_str()
        .unwrap_or_default()
        .contains("record 3"));
    // missing file → job fail
    let r = import(&e, &t, "c", "nope.json", 1, false, 1).await;
    assert_eq!(r["status"], "fail");
    // CSV import
    e.ctl()
        .put_file(
            &e.env,
            "in.csv",
            b"_id,age,name\nx1,45,\"Li, Lei\"\ny2,21,Zo\xc3\xab\n",
        )
        .expect("put");
    let r = import(&e, &t, "csv", "in.csv", 2, false, 1).await;
    assert_eq!(r["record_success"], 2);
    assert_eq!(
        e.ctl().documents(&e.env, "csv").expect("docs")[0],
        json!({"_id":"x1","age":45,"name":"Li, Lei"})
    );
    // no auto-create
    e.ctl().update_config(|c| c.import_auto_create = false);
    let r = import(&e, &t, "brand_new", "in.csv", 2, false, 1).await;
    assert_eq!(r["status"], "fail");
}

#[tokio::test]
async fn export_then_import_round_trips() {
    let mut cfg = EmulatorConfig::for_tests();
    cfg.seed = Some(SeedSpec {
        collections: 1,
        records_per_collection: 80,
        ..SeedSpec::default()
    });
    let e = emu_with(cfg).await;
    let t = e.stable_token().await;
    let (_, r) = e
        .export_done(&t, "db.collection('users').get()", 1, "rt/users.json")
        .await;
    assert_eq!(r["status"], "success");
    let r = import(&e, &t, "users_restored", "rt/users.json", 1, true, 2).await;
    assert_eq!(
        (r["status"].as_str(), r["record_success"].as_u64()),
        (Some("success"), Some(80))
    );
    assert_eq!(
        e.ctl().documents(&e.env, "users_restored"),
        e.ctl().documents(&e.env, "users")
    );
}

#[tokio::test]
async fn large_exports_are_written_in_the_background() {
    let mut cfg = EmulatorConfig::for_tests();
    cfg.inline_export_max_records = 0;
    let e = emu_with(cfg).await;
    let t = e.stable_token().await;
    e.ctl()
        .create_synthetic_collection(&e.env, "big", 2000, 3, 0.0)
        .expect("synthetic");
    let job = export(
        &e,
        &t,
        "db.collection('big').where({active:true}).get()",
        1,
        "big.json",
    )
    .await;
    e.ctl().settle().await;
    e.ctl().advance_clock(Duration::from_secs(600));
    let r = info(&e, &t, job).await;
    assert_eq!(r["status"], "success", "{r}");
    let n = r["record_success"].as_u64().unwrap_or(0);
    assert!(n > 1000 && n < 2000, "only the matching records: {n}");
    let (_, body) = e.get_text(r["file_url"].as_str().unwrap_or_default()).await;
    assert_eq!(body.lines().count() as u64, n);
    assert!(body.lines().all(|l| l.contains("\"active\":true")));
}

#[tokio::test]
async fn file_url_expiry_can_be_fixed_at_completion() {
    let e = emu().await;
    e.ctl().update_config(|c| {
        c.export_url_ttl_secs = 100;
        c.export_url_fixed_at_completion = true;
    });
    let t = e.stable_token().await;
    e.ctl().create_collection(&e.env, "c").expect("create");
    let job = export(&e, &t, "db.collection('c').get()", 1, "c.json").await;
    e.ctl().advance_clock(Duration::from_secs(10));
    let first = info(&e, &t, job).await["file_url"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    e.ctl().advance_clock(Duration::from_secs(200));
    let again = info(&e, &t, job).await["file_url"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(first, again, "same expiry, same URL");
    assert_eq!(e.get_text(&again).await.0, 403);
    e.ctl()
        .update_config(|c| c.export_url_fixed_at_completion = false);
    let fresh = info(&e, &t, job).await["file_url"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(e.get_text(&fresh).await.0, 200);
}

#[tokio::test]
async fn jobs_can_be_driven_by_hand() {
    let e = emu_with(timed()).await;
    let t = e.stable_token().await;
    e.ctl().create_collection(&e.env, "c").expect("create");
    let a = export(&e, &t, "db.collection('c').get()", 1, "a").await;
    let b = export(&e, &t, "db.collection('c').get()", 1, "b").await;
    e.ctl()
        .control_job(&e.env, a, tcb_backup::emulator::JobControl::FinishNow)
        .expect("finish");
    assert_eq!(info(&e, &t, a).await["status"], "success");
    e.ctl()
        .control_job(&e.env, b, tcb_backup::emulator::JobControl::Stick)
        .expect("stick");
    e.ctl().advance_clock(Duration::from_secs(3600));
    assert_eq!(info(&e, &t, b).await["status"], "waiting");
    e.ctl()
        .control_job(&e.env, b, tcb_backup::emulator::JobControl::Release)
        .expect("release");
    assert_eq!(info(&e, &t, b).await["status"], "waiting");
    e.ctl()
        .control_job(
            &e.env,
            b,
            tcb_backup::emulator::JobControl::Fail {
                message: "boom".into(),
            },
        )
        .expect("fail");
    // over HTTP too
    let r = e
        .http
        .post(format!("{}/_emulator/envs/{}/jobs/{b}", e.base, e.env))
        .json(&json!({"action":"finish_now"}))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    let r = info(&e, &t, b).await;
    assert_eq!(
        (r["status"].as_str(), r["err_msg"].as_str()),
        (Some("fail"), Some("boom"))
    );
    assert!(
        e.ctl()
            .control_job(&e.env, b, tcb_backup::emulator::JobControl::FinishNow)
            .is_err(),
        "already finished"
    );
}
