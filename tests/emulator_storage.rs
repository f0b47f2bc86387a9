//! The fake COS: multipart upload field validation, credential expiry, signed URLs with an
//! expiry, per-file statuses of batchdownloadfile.

mod emulator_support;

use std::time::Duration;

use emulator_support::*;
use reqwest::multipart::{Form, Part};
use serde_json::{json, Value};

async fn ticket(e: &Emu, t: &str, path: &str) -> Value {
    let r = e
        .tcb("uploadfile", t, json!({"env": e.env, "path": path}))
        .await;
    assert_eq!(errcode(&r), 0, "{r}");
    r
}

fn form(r: &Value, key: &str, skip: Option<&str>, file_last: bool) -> Form {
    let s = |k: &str| r[k].as_str().unwrap_or_default().to_string();
    let mut f = Form::new();
    if !file_last {
        f = f.part("file", Part::bytes(b"early".to_vec()));
    }
    for (name, value) in [
        ("key", key.to_string()),
        ("Signature", s("authorization")),
        ("x-cos-security-token", s("token")),
        ("x-cos-meta-fileid", s("cos_file_id")),
    ] {
        if Some(name) != skip {
            f = f.text(name, value);
        }
    }
    if file_last {
        f = f.part(
            "file",
            Part::bytes("数据 data".as_bytes().to_vec()).file_name("x.bin"),
        );
    }
    f
}

async fn post(e: &Emu, url: &str, f: Form) -> (u16, String) {
    let resp = e.http.post(url).multipart(f).send().await.expect("send");
    (
        resp.status().as_u16(),
        resp.text().await.unwrap_or_default(),
    )
}

#[tokio::test]
async fn upload_requires_every_field_with_matching_values() {
    let e = emu().await;
    let t = e.stable_token().await;
    let r = ticket(&e, &t, "dir/file.bin").await;
    let url = r["url"].as_str().expect("url").to_string();
    for field in [
        "key",
        "Signature",
        "x-cos-security-token",
        "x-cos-meta-fileid",
    ] {
        let (status, body) = post(&e, &url, form(&r, "dir/file.bin", Some(field), true)).await;
        assert_eq!(status, 400, "{field}");
        assert!(body.contains("<Code>MalformedPOSTRequest</Code>"), "{body}");
    }
    let (status, body) = post(&e, &url, form(&r, "dir/file.bin", None, false)).await;
    assert_eq!(status, 400, "file must be last: {body}");
    // wrong signature / wrong key → 403 AccessDenied
    let mut bad = r.clone();
    bad["authorization"] = json!("q-sign-algorithm=sha1&q-signature=forged");
    let (status, body) = post(&e, &url, form(&bad, "dir/file.bin", None, true)).await;
    assert_eq!(status, 403);
    assert!(body.contains("<Code>AccessDenied</Code>"));
    let (status, _) = post(&e, &url, form(&r, "other.bin", None, true)).await;
    assert_eq!(status, 403);
    let mut bad = r.clone();
    bad["cos_file_id"] = json!("nope");
    assert_eq!(
        post(&e, &url, form(&bad, "dir/file.bin", None, true))
            .await
            .0,
        403
    );
    // broken multipart body
    let resp = e
        .http
        .post(&url)
        .header("content-type", "multipart/form-data; boundary=XYZ")
        .body("--XYZ\r\nContent-Disposition: form-data; name=\"key\"\r\n\r\nunterminated")
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 400);
    assert!(resp
        .text()
        .await
        .unwrap_or_default()
        .contains("MalformedPOSTRequest"));
    let resp = e
        .http
        .post(&url)
        .body("not multipart")
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 400);
    assert!(
        e.ctl().files(&e.env).is_empty(),
        "nothing stored by failed uploads"
    );
    // finally the right form succeeds
    let (status, _) = post(&e, &url, form(&r, "dir/file.bin", None, true)).await;
    assert_eq!(status, 204);
    assert_eq!(
        e.ctl().read_file(&e.env, "dir/file.bin").as_deref(),
        Some("数据 data".as_bytes())
    );
    let c = e.ctl().counters();
    assert_eq!(
        c.endpoints
            .get("cos_upload")
            .and_then(|s| s.http_statuses.get(&403).copied()),
        Some(3)
    );
}

#[tokio::test]
async fn upload_credentials_expire() {
    let e = emu().await;
    let t = e.stable_token().await;
    let r = ticket(&e, &t, "late.bin").await;
    e.ctl().advance_clock(Duration::from_secs(901));
    let (status, body) = post(
        &e,
        r["url"].as_str().unwrap_or_default(),
        form(&r, "late.bin", None, true),
    )
    .await;
    assert_eq!(status, 403);
    assert!(body.contains("expired"), "{body}");
}

#[tokio::test]
async fn signed_urls_expire_and_resist_tampering() {
    let e = emu().await;
    let t = e.stable_token().await;
    let fid = e
        .ctl()
        .put_file(&e.env, "a/b c.txt", b"hello")
        .expect("put");
    let missing = tcb_backup::emulator::file_id(&e.env, "missing.txt");
    let r = e.tcb("batchdownloadfile", &t, json!({"env": e.env, "file_list": [{"fileid": fid, "max_age": 60}, {"fileid": missing, "max_age": 60}, {"fileid": "garbage", "max_age": 60}]})).await;
    assert_eq!(errcode(&r), 0);
    let list = r["file_list"].as_array().expect("list");
    assert_eq!(list[1]["status"], -503003);
    assert_eq!(list[2]["status"], -503003);
    let url = list[0]["download_url"].as_str().expect("url").to_string();
    assert_eq!(e.get_text(&url).await, (200, "hello".to_string()));
    // tampering with the expiry or the signature
    let tampered = url.replace("&t=", "&t=9");
    assert_eq!(e.get_text(&tampered).await.0, 403);
    let (status, body) = e.get_text(&format!("{}x", url)).await;
    assert_eq!(status, 403);
    assert!(body.contains("<Code>AccessDenied</Code>"));
    // after max_age: 403 XML
    e.ctl().advance_clock(Duration::from_secs(61));
    let (status, body) = e.get_text(&url).await;
    assert_eq!(status, 403);
    assert!(body.contains("Request has expired"));
    // deleted object behind a valid URL → 404 NoSuchKey
    let t = e.stable_token().await;
    let r = e
        .tcb(
            "batchdownloadfile",
            &t,
            json!({"env": e.env, "file_list": [{"fileid": fid, "max_age": 60}]}),
        )
        .await;
    let url = r["file_list"][0]["download_url"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    e.tcb(
        "batchdeletefile",
        &t,
        json!({"env": e.env, "fileid_list": [fid]}),
    )
    .await;
    let (status, body) = e.get_text(&url).await;
    assert_eq!(status, 404);
    assert!(body.contains("NoSuchKey"));
}

#[tokio::test]
async fn export_file_url_expires_after_the_configured_ttl() {
    let e = emu().await;
    e.ctl().update_config(|c| c.export_url_ttl_secs = 120);
    let t = e.stable_token().await;
    e.ctl()
        .insert_documents(&e.env, "c", vec![json!({"a": 1})])
        .expect("insert");
    let (_, info) = e
        .export_done(&t, "db.collection('c').get()", 1, "c.json")
        .await;
    let url = info["file_url"].as_str().expect("url").to_string();
    assert_eq!(e.get_text(&url).await.0, 200);
    e.ctl().advance_clock(Duration::from_secs(121));
    assert_eq!(e.get_text(&url).await.0, 403);
}

#[tokio::test]
async fn downloads_honour_byte_ranges_for_resuming() {
    let e = emu().await;
    let t = e.stable_token().await;
    let fid = e
        .ctl()
        .put_file(&e.env, "r.bin", b"0123456789")
        .expect("put");
    let r = e
        .tcb(
            "batchdownloadfile",
            &t,
            json!({"env": e.env, "file_list": [{"fileid": fid, "max_age": 60}]}),
        )
        .await;
    let url = r["file_list"][0]["download_url"]
        .as_str()
        .expect("url")
        .to_string();
    let resp = e
        .http
        .get(&url)
        .header("range", "bytes=4-")
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 206);
    assert_eq!(
        resp.headers()
            .get("content-range")
            .and_then(|v| v.to_str().ok()),
        Some("bytes 4-9/10")
    );
    assert_eq!(resp.text().await.unwrap_or_default(), "456789");
    let resp = e
        .http
        .get(&url)
        .header("range", "bytes=10-")
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 416);
}
