//! Contract tests: every request/response example of the reference (`wechat-api.md`),
//! replayed against the emulator over real HTTP, plus the shapes of every endpoint.

mod emulator_support;

use emulator_support::*;
use serde_json::{json, Value};

#[tokio::test]
async fn token_endpoints_return_only_token_and_expiry() {
    let e = emu().await;
    let legacy = e.legacy_token().await;
    let keys: Vec<&String> = legacy.as_object().expect("object").keys().collect();
    assert_eq!(keys, ["access_token", "expires_in"]);
    assert_eq!(legacy["expires_in"], 7200);
    let stable = e
        .stable_token_raw(json!({"grant_type":"client_credential","appid":e.appid,"secret":e.secret,"force_refresh":false}))
        .await;
    assert_eq!(stable.as_object().map(|o| o.len()), Some(2));
    assert!(stable["access_token"]
        .as_str()
        .is_some_and(|t| t.len() >= 100));
    assert_eq!(e.ctl().issued_tokens().len(), 2);
}

#[tokio::test]
async fn reference_example_export_query_is_accepted() {
    let e = emu().await;
    let t = e.stable_token().await;
    e.ctl()
        .insert_documents(&e.env, "geo", vec![
            json!({"_id":"a","name":"x","age":15,"loc":{"type":"Point","coordinates":[113,23]},"array":[1,2]}),
            json!({"_id":"b","name":"x","age":16,"loc":{"type":"Point","coordinates":[113,23]},"array":[1,2]}),
            json!({"_id":"c","name":"y","age":15}),
        ])
        .expect("insert");
    // §2 example request
    let q = "const Point = db.Geo.Point;db.collection('geo').where({name:'x',age:_.gt(10).and(_.lt(20)),loc:new Point(113,23),array:[1,2]}).limit(10).skip(1).orderBy('age','asc').orderBy('name','desc').field({name:true}).get()";
    let (job_id, info) = e.export_done(&t, q, 1, "test_export").await;
    assert!((100_000_000..100_010_000).contains(&job_id), "{job_id}");
    // §3 example response shape
    assert_eq!(info["errcode"], 0);
    assert_eq!(info["errmsg"], "ok");
    assert_eq!(info["status"], "success");
    assert_eq!(info["record_success"], 1);
    assert_eq!(info["record_fail"], 0);
    assert_eq!(info["error_msg"], "导出完成.");
    assert_eq!(info["err_msg"], "导出完成.");
    let url = info["file_url"].as_str().expect("file_url");
    let (status, body) = e.get_text(url).await;
    assert_eq!(status, 200);
    assert_eq!(body, "{\"_id\":\"b\",\"name\":\"x\"}\n");
}

#[tokio::test]
async fn reference_example_import_and_collections() {
    let e = emu().await;
    let t = e.stable_token().await;
    // §5.2 examples
    let r = e
        .tcb(
            "databasecollectionadd",
            &t,
            json!({"env": e.env, "collection_name":"test_add_collection"}),
        )
        .await;
    assert_eq!(r, json!({"errcode":0,"errmsg":"ok"}));
    let r = e
        .tcb(
            "databasecollectionadd",
            &t,
            json!({"env": e.env, "collection_name":"test_delete_collection"}),
        )
        .await;
    assert_eq!(errcode(&r), 0);
    let r = e
        .tcb(
            "databasecollectiondelete",
            &t,
            json!({"env": e.env, "collection_name":"test_delete_collection"}),
        )
        .await;
    assert_eq!(r, json!({"errcode":0,"errmsg":"ok"}));
    // §4 example
    e.ctl()
        .put_file(
            &e.env,
            "test_import",
            b"{\"_id\":\"1\",\"a\":1}\n{\"_id\":\"2\",\"a\":2}\n",
        )
        .expect("put");
    let r = e
        .tcb("databasemigrateimport", &t, json!({"env": e.env,"collection_name":"test1","file_path":"test_import","file_type":1,"stop_on_error":false,"conflict_mode":2}))
        .await;
    assert_eq!(errcode(&r), 0);
    assert!(r["job_id"].is_u64());
    // §5.1 example response shape
    e.ctl()
        .insert_documents(&e.env, "geo", (0..13).map(|i| json!({"i": i})).collect())
        .expect("insert");
    let r = e
        .tcb("databasecollectionget", &t, json!({"env": e.env}))
        .await;
    assert_eq!(r["pager"], json!({"Offset":0,"Limit":10,"Total":2}));
    let geo = r["collections"]
        .as_array()
        .expect("collections")
        .iter()
        .find(|c| c["name"] == "geo")
        .cloned()
        .unwrap_or_default();
    assert_eq!(geo["count"], 13);
    for k in ["size", "index_count", "index_size"] {
        assert!(geo[k].as_u64().is_some_and(|n| n > 0), "{k}");
    }
}

#[tokio::test]
async fn reference_examples_records() {
    let e = emu().await;
    let t = e.stable_token().await;
    e.ctl().create_collection(&e.env, "geo").expect("create");
    // §6 databaseadd example
    let r = e
        .tcb("databaseadd", &t, json!({"env": e.env, "query": "db.collection(\"geo\").add({data:[{description:\"item1\",due:new Date(\"2019-09-09\"),tags:[\"cloud\",\"database\"],location:new db.Geo.Point(113,23),done:false},{description:\"item2\",done:true}]})"}))
        .await;
    assert_eq!(errcode(&r), 0, "{r}");
    let ids = r["id_list"].as_array().expect("id_list");
    assert_eq!(ids.len(), 2);
    assert!(ids
        .iter()
        .all(|i| i.as_str().is_some_and(|s| s.len() == 32)));
    let docs = e.ctl().documents(&e.env, "geo").expect("docs");
    assert_eq!(docs[0]["due"], json!({"$date":"2019-09-09T00:00:00.000Z"}));
    assert_eq!(
        docs[0]["location"],
        json!({"type":"Point","coordinates":[113,23]})
    );
    e.ctl()
        .insert_documents(
            &e.env,
            "geo",
            vec![json!({"_id":"b15498af-1a5a-40b4-a4e7-b3fc4a1df482","done":true,"name":"test"})],
        )
        .expect("insert");
    // §6 databasequery example: data is an array of JSON strings
    let r = e.tcb("databasequery", &t, json!({"env": e.env, "query": "db.collection(\"geo\").where({done:true}).limit(10).skip(1).get()"})).await;
    assert_eq!(r["pager"], json!({"Offset":1,"Limit":10,"Total":2}));
    let data = r["data"].as_array().expect("data");
    assert_eq!(data.len(), 1);
    let doc: Value = serde_json::from_str(data[0].as_str().expect("string")).expect("json string");
    assert_eq!(
        doc,
        json!({"_id":"b15498af-1a5a-40b4-a4e7-b3fc4a1df482","done":true,"name":"test"})
    );
    // default page 10
    e.ctl()
        .insert_documents(&e.env, "geo", (0..25).map(|i| json!({"n": i})).collect())
        .expect("insert");
    let r = e
        .tcb(
            "databasequery",
            &t,
            json!({"env": e.env, "query": "db.collection('geo').get()"}),
        )
        .await;
    assert_eq!(r["data"].as_array().map(Vec::len), Some(10));
    // §6 databasecount example
    let r = e
        .tcb(
            "databasecount",
            &t,
            json!({"env": e.env, "query": "db.collection(\"geo\").where({done:true}).count()"}),
        )
        .await;
    assert_eq!(r, json!({"errcode":0,"errmsg":"ok","count":2}));
    // update and delete
    let r = e.tcb("databaseupdate", &t, json!({"env": e.env, "query": "db.collection('geo').where({done:true}).update({data:{done:false,'meta.by':'test'}})"})).await;
    assert_eq!(
        (
            r["matched"].as_u64(),
            r["modified"].as_u64(),
            r["id"].as_str()
        ),
        (Some(2), Some(2), Some(""))
    );
    let r = e
        .tcb(
            "databasedelete",
            &t,
            json!({"env": e.env, "query": "db.collection(\"geo\").where({done:false}).remove()"}),
        )
        .await;
    assert_eq!(r, json!({"errcode":0,"errmsg":"ok","deleted":3}));
}

#[tokio::test]
async fn reference_examples_storage() {
    let e = emu().await;
    let t = e.stable_token().await;
    // §7.1 step 1
    let r = e
        .tcb(
            "uploadfile",
            &t,
            json!({"env": e.env, "path": "testupload"}),
        )
        .await;
    assert_eq!(errcode(&r), 0);
    let url = r["url"].as_str().expect("url").to_string();
    assert!(
        url.starts_with(&format!("{}/cos/7465-{}-", e.base, e.env)),
        "{url}"
    );
    assert!(url.ends_with("/testupload"));
    assert!(r["authorization"]
        .as_str()
        .is_some_and(|a| a.starts_with("q-sign-algorithm=sha1&q-ak=AKID")));
    let file_id = r["file_id"].as_str().expect("file_id").to_string();
    assert_eq!(
        file_id,
        format!("cloud://{}.7465-{}-1258717764/testupload", e.env, e.env)
    );
    // §7.1 step 2: the five form fields, file last
    let form = reqwest::multipart::Form::new()
        .text("key", "testupload")
        .text(
            "Signature",
            r["authorization"].as_str().unwrap_or_default().to_string(),
        )
        .text(
            "x-cos-security-token",
            r["token"].as_str().unwrap_or_default().to_string(),
        )
        .text(
            "x-cos-meta-fileid",
            r["cos_file_id"].as_str().unwrap_or_default().to_string(),
        )
        .part(
            "file",
            reqwest::multipart::Part::bytes(b"hello cos".to_vec()),
        );
    let resp = e
        .http
        .post(&url)
        .multipart(form)
        .send()
        .await
        .expect("upload");
    assert_eq!(resp.status(), 204);
    // §7.2 example
    let r = e
        .tcb(
            "batchdownloadfile",
            &t,
            json!({"env": e.env, "file_list":[{"fileid": file_id, "max_age":7200}]}),
        )
        .await;
    assert_eq!(errcode(&r), 0);
    let item = &r["file_list"][0];
    assert_eq!(
        (
            item["fileid"].as_str(),
            item["status"].as_i64(),
            item["errmsg"].as_str()
        ),
        (Some(file_id.as_str()), Some(0), Some("ok"))
    );
    let (status, body) = e
        .get_text(item["download_url"].as_str().unwrap_or_default())
        .await;
    assert_eq!((status, body.as_str()), (200, "hello cos"));
    // §7.3: object-form delete_list
    let r = e
        .tcb(
            "batchdeletefile",
            &t,
            json!({"env": e.env, "fileid_list":[file_id, "cloud://nope.b/x"]}),
        )
        .await;
    assert_eq!(
        r["delete_list"][0],
        json!({"fileid": file_id, "status": 0, "errmsg": "ok"})
    );
    assert_eq!(r["delete_list"][1]["status"], -503003);
}
