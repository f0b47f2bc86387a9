//! Endpoint behaviour of the client against a scripted fake: request shapes and field types,
//! paging, upload/download, error mapping and hostile responses.

mod client_fake;

use std::sync::atomic::Ordering;
use std::time::Duration;

use client_fake::{client, config, creds, Fake, Reply};
use futures_util::StreamExt;
use serde_json::json;
use tcb_backup::client::{
    ApiErrorKind, ClientConfig, CloudBaseClient, ConflictMode, ErrorClass, ExportRequest, FileType,
    ImportRequest, MigrateStatus, TokenMode,
};

fn stable(fake: &Fake) -> CloudBaseClient {
    client(fake, TokenMode::Stable)
}

#[tokio::test]
async fn export_import_and_query_info_send_documented_types() {
    let fake = Fake::start();
    let c = stable(&fake);
    let job = c
        .export(
            "env-1",
            &ExportRequest {
                file_path: "backups/orders".into(),
                file_type: FileType::Json,
                query: "db.collection(\"orders\").get()".into(),
            },
        )
        .await
        .unwrap();
    assert_eq!(job, 100000001);
    let body = fake.calls("/tcb/databasemigrateexport")[0].json();
    assert_eq!(
        body,
        json!({"env": "env-1", "file_path": "backups/orders", "file_type": 1, "query": "db.collection(\"orders\").get()"})
    );
    c.import(
        "env-1",
        &ImportRequest {
            collection_name: "orders".into(),
            file_path: "backups/orders".into(),
            file_type: FileType::Csv,
            stop_on_error: true,
            conflict_mode: ConflictMode::Upsert,
        },
    )
    .await
    .unwrap();
    let body = fake.calls("/tcb/databasemigrateimport")[0].json();
    assert_eq!(
        body,
        json!({"env": "env-1", "collection_name": "orders", "file_path": "backups/orders",
               "file_type": 2, "stop_on_error": true, "conflict_mode": 2})
    );
    let info = c.query_migrate_job("env-1", job).await.unwrap();
    assert_eq!(info.status, MigrateStatus::Success);
    assert_eq!(info.record_success, 3);
    assert_eq!(info.message.as_deref(), Some("导出完成."));
    assert!(info.file_url.unwrap().ends_with("/files/export.json"));
    let body = fake.calls("/tcb/databasemigratequeryinfo")[0].json();
    assert_eq!(body, json!({"env": "env-1", "job_id": 100000001u64}));
    // access_token travels in the query string only
    assert!(fake.calls("/tcb/databasemigrateexport")[0]
        .query
        .contains_key("access_token"));
}

#[tokio::test]
async fn query_info_unknown_status_is_running_and_err_msg_is_read() {
    let fake = Fake::start();
    let c = stable(&fake);
    fake.script(
        "databasemigratequeryinfo",
        [
            Reply::Json(json!({"errcode":0,"errmsg":"ok","status":"migrating","record_success":0,"record_fail":0,"err_msg":"","file_url":""})),
            Reply::Json(json!({"errcode":0,"errmsg":"ok","status":"fail","record_success":1,"record_fail":2,"err_msg":"boom"})),
            Reply::Json(json!({"errcode":0,"errmsg":"ok","status":"paused-by-ops"})),
        ],
    );
    let a = c.query_migrate_job("e", 1).await.unwrap();
    assert_eq!(a.status, MigrateStatus::Running("migrating".into()));
    assert_eq!(a.file_url, None);
    assert_eq!(a.message, None);
    let b = c.query_migrate_job("e", 1).await.unwrap();
    assert_eq!(b.status, MigrateStatus::Fail);
    assert_eq!((b.record_fail, b.message.as_deref()), (2, Some("boom")));
    let d = c.query_migrate_job("e", 1).await.unwrap();
    assert!(!d.status.is_terminal());
}

#[tokio::test]
async fn list_collections_pages_until_total() {
    let fake = Fake::start();
    fake.state.collections.store(25, Ordering::SeqCst);
    let c = stable(&fake);
    let cols = c.list_collections("env").await.unwrap();
    assert_eq!(cols.len(), 25);
    assert_eq!(cols[24].name, "c024");
    assert_eq!(cols[3].size, 30);
    // the fake caps pages at 10: the client advanced by what it got, not by what it asked
    let offsets: Vec<u64> = fake
        .calls("/tcb/databasecollectionget")
        .iter()
        .map(|r| r.json()["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, vec![0, 10, 20]);
    fake.state.collections.store(0, Ordering::SeqCst);
    assert!(c.list_collections("env").await.unwrap().is_empty());
}

#[tokio::test]
async fn list_collections_survives_lying_servers() {
    let fake = Fake::start();
    let c = stable(&fake);
    let page = |names: &[&str], total: u64| {
        let cols: Vec<_> = names
            .iter()
            .map(|n| json!({"name": n, "count": 1}))
            .collect();
        Reply::Json(json!({"errcode":0,"errmsg":"ok","collections": cols,
            "pager": {"Offset": 0, "Limit": 10, "Total": total}}))
    };
    // empty page before Total
    fake.script(
        "databasecollectionget",
        [page(&["a", "b"], 100), page(&[], 100)],
    );
    let err = c.list_collections("env").await.unwrap_err();
    assert!(
        matches!(err.kind, ApiErrorKind::InvalidResponse(_)),
        "{err}"
    );
    assert!(err.to_string().contains("empty page"), "{err}");
    // the same page again and again
    fake.script(
        "databasecollectionget",
        [page(&["a", "b"], 1000), page(&["a", "b"], 1000)],
    );
    let err = c.list_collections("env").await.unwrap_err();
    assert!(err.to_string().contains("repeated"), "{err}");
    // no pager at all: a short page ends the listing
    fake.script(
        "databasecollectionget",
        [Reply::Json(
            json!({"errcode":0,"errmsg":"ok","collections":[{"name":"x"}]}),
        )],
    );
    assert_eq!(c.list_collections("env").await.unwrap().len(), 1);
}

#[tokio::test]
async fn records_endpoints() {
    let fake = Fake::start();
    let c = stable(&fake);
    let page = c
        .database_query("env", "db.collection('geo').get()")
        .await
        .unwrap();
    assert_eq!(page.data.len(), 2);
    assert_eq!(page.data[0]["_id"], "a");
    assert_eq!(page.data[1]["due"]["$date"], "2019-09-09T00:00:00.000Z");
    assert_eq!(page.pager.unwrap().total, Some(2));
    assert_eq!(c.database_count("env", "q").await.unwrap(), 3);
    assert_eq!(
        c.database_add("env", "q").await.unwrap(),
        vec!["be62d9c4", "0f4b8add"]
    );
    c.add_collection("env", "new").await.unwrap();
    c.delete_collection("env", "new").await.unwrap();
    assert_eq!(
        fake.calls("/tcb/databasecollectionadd")[0].json(),
        json!({"env": "env", "collection_name": "new"})
    );
    fake.script(
        "databasequery",
        [Reply::Json(
            json!({"errcode":0,"errmsg":"ok","data":["{\"_id\":\"a\"", "{}"]}),
        )],
    );
    let err = c.database_query("env", "q").await.unwrap_err();
    assert!(err.to_string().contains("data[0]"), "{err}");
    fake.script(
        "databasequery",
        [Reply::Json(
            json!({"errcode":0,"errmsg":"ok","data":[{"_id":"a"}]}),
        )],
    );
    let err = c.database_query("env", "q").await.unwrap_err();
    assert!(
        matches!(err.kind, ApiErrorKind::InvalidResponse(_)),
        "{err}"
    );
}

#[tokio::test]
async fn api_errors_carry_endpoint_code_and_rid() {
    let fake = Fake::start();
    let c = stable(&fake);
    fake.script(
        "databasemigrateexport",
        [Reply::Json(json!({"errcode": -501004, "errmsg": "concurrency limit rid: 68d49773-32044106-7794eb1b"}))],
    );
    let err = c
        .export(
            "env",
            &ExportRequest {
                file_path: "p".into(),
                file_type: FileType::Json,
                query: "q".into(),
            },
        )
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "databasemigrateexport: errcode -501004 (concurrency exceeds env quota): concurrency limit rid: 68d49773-32044106-7794eb1b"
    );
    assert_eq!(err.class(), ErrorClass::Transient);
    fake.script(
        "databasecount",
        [Reply::Json(
            json!({"errcode": -501015, "errmsg": "read quota"}),
        )],
    );
    assert_eq!(
        c.database_count("e", "q").await.unwrap_err().class(),
        ErrorClass::Quota
    );
}

#[tokio::test]
async fn upload_sends_five_fields_with_file_last() {
    let fake = Fake::start();
    let c = stable(&fake);
    let data = vec![7u8; 100_000];
    let id = c
        .upload_file(
            "env",
            "imports/orders.json",
            data.clone().into(),
            data.len() as u64,
        )
        .await
        .unwrap();
    assert_eq!(id, "cloud://env.7465-env-1258717764/imports/orders.json");
    let fields = fake.state.cos_fields.lock().unwrap()[0].clone();
    let names: Vec<&str> = fields.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "key",
            "Signature",
            "x-cos-security-token",
            "x-cos-meta-fileid",
            "file"
        ]
    );
    assert_eq!(fields[4].1, 100_000);
    // COS 200 with an empty body is also success
    fake.script(
        "cos",
        [Reply::Raw {
            status: 200,
            body: vec![],
        }],
    );
    c.upload_file("env", "x", vec![1u8].into(), 1)
        .await
        .unwrap();
    // COS XML errors surface their Code
    fake.script(
        "cos",
        [Reply::Raw {
            status: 403,
            body: b"<?xml version='1.0' encoding='utf-8' ?><Error><Code>AccessDenied</Code><Message>Request has expired</Message><RequestId>NjA</RequestId></Error>".to_vec(),
        }],
    );
    let err = c
        .upload_file("env", "x", vec![1u8].into(), 1)
        .await
        .unwrap_err();
    assert!(
        matches!(&err.kind, ApiErrorKind::Cos { status: 403, code, message } if code == "AccessDenied" && message == "Request has expired"),
        "{err:?}"
    );
    assert_eq!(err.endpoint, "cos-upload");
    assert!(!err.to_string().contains("cos-security-token-abcdef"));
}

#[tokio::test]
async fn upload_refuses_insecure_cos_url() {
    let fake = Fake::start();
    let c = stable(&fake);
    fake.script(
        "uploadfile",
        [Reply::Json(json!({"errcode":0,"errmsg":"ok","url":"http://cos.example.com/b/x",
            "token":"t0123456789","authorization":"a0123456789","file_id":"cloud://e.b/x","cos_file_id":"c"}))],
    );
    let err = c
        .upload_file("env", "x", vec![1u8].into(), 1)
        .await
        .unwrap_err();
    assert!(matches!(err.kind, ApiErrorKind::InsecureUrl(_)), "{err}");
    assert_eq!(err.class(), ErrorClass::PermanentConfig);
}

#[tokio::test]
async fn batch_file_calls_split_at_fifty_and_keep_order() {
    let fake = Fake::start();
    let c = stable(&fake);
    let files: Vec<(String, u64)> = (0..120)
        .map(|i| {
            let id = if i == 7 {
                "cloud://env.b/missing".to_owned()
            } else {
                format!("cloud://env.b/f{i}")
            };
            (id, 600)
        })
        .collect();
    let links = c.batch_download_file("env", &files).await.unwrap();
    assert_eq!(links.len(), 120);
    assert_eq!(fake.calls("/tcb/batchdownloadfile").len(), 3);
    assert_eq!(links[119].fileid, "cloud://env.b/f119");
    assert_eq!(links[7].status, -503003);
    assert_eq!(links[7].download_url, None);
    assert!(links[0]
        .download_url
        .as_deref()
        .unwrap()
        .ends_with("/files/f0"));
    let first = fake.calls("/tcb/batchdownloadfile")[0].json();
    assert_eq!(
        first["file_list"][0],
        json!({"fileid": "cloud://env.b/f0", "max_age": 600})
    );
    let ids: Vec<String> = (0..51).map(|i| format!("cloud://env.b/f{i}")).collect();
    let deleted = c.batch_delete_file("env", &ids).await.unwrap();
    assert_eq!(deleted.len(), 51);
    assert!(deleted.iter().all(|d| d.status == 0));
    assert_eq!(fake.calls("/tcb/batchdeletefile").len(), 2);
}

#[tokio::test]
async fn download_streams_and_maps_statuses() {
    let fake = Fake::start();
    let c = stable(&fake);
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    fake.add_file("big.json", data.clone());
    let dl = c
        .download(&format!("{}/files/big.json", fake.base))
        .await
        .unwrap();
    assert_eq!(dl.content_length, Some(3_000_000));
    let mut got = Vec::new();
    let mut chunks = 0;
    let mut stream = dl.stream;
    while let Some(chunk) = stream.next().await {
        got.extend_from_slice(&chunk.unwrap());
        chunks += 1;
    }
    assert_eq!(got, data);
    assert!(chunks > 1, "body arrived as a stream of chunks");

    let err = c
        .download(&format!("{}/files/nope", fake.base))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ApiErrorKind::NotFound);
    fake.script(
        "file",
        [
            Reply::Raw {
                status: 403,
                body: b"<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>".to_vec(),
            },
            Reply::Raw { status: 502, body: b"bad gateway".to_vec() },
        ],
    );
    let err = c
        .download(&format!("{}/files/big.json", fake.base))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ApiErrorKind::UrlExpired);
    let err = c
        .download(&format!("{}/files/big.json", fake.base))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ApiErrorKind::Http { status: 502 });
    assert_eq!(err.class(), ErrorClass::Transient);
    let err = c.download("http://files.example.com/x").await.unwrap_err();
    assert!(matches!(err.kind, ApiErrorKind::InsecureUrl(_)));
    // redirects are followed only under the same https-or-loopback rule
    fake.script(
        "file",
        [Reply::Redirect(format!("{}/files/big.json", fake.base))],
    );
    let dl = c
        .download(&format!("{}/files/elsewhere", fake.base))
        .await
        .unwrap();
    assert_eq!(dl.content_length, Some(3_000_000));
    fake.script(
        "file",
        [Reply::Redirect("http://files.example.com/big.json".into())],
    );
    let err = c
        .download(&format!("{}/files/elsewhere", fake.base))
        .await
        .unwrap_err();
    assert!(matches!(err.kind, ApiErrorKind::InsecureUrl(_)), "{err}");
    assert!(!err.to_string().contains("example.com"), "{err}");
    let err = c.download("not a url").await.unwrap_err();
    assert!(matches!(err.kind, ApiErrorKind::InvalidResponse(_)));
}

#[tokio::test]
async fn hostile_json_bodies_are_clear_errors() {
    let fake = Fake::start();
    let c = stable(&fake);
    let hostile: Vec<(Reply, &str)> = vec![
        (
            Reply::Raw {
                status: 200,
                body: b"{\"errcode\":0,\"errmsg\":\"ok\",\"count\":".to_vec(),
            },
            "not valid JSON",
        ),
        (
            Reply::Raw {
                status: 200,
                body: b"<html>gateway</html>".to_vec(),
            },
            "not valid JSON",
        ),
        (
            Reply::Raw {
                status: 200,
                body: vec![],
            },
            "not valid JSON",
        ),
        (Reply::Json(json!([1, 2])), "expected a JSON object"),
        (
            Reply::Json(json!({"errcode":0,"errmsg":"ok","count":"many"})),
            "count",
        ),
        (
            Reply::Json(json!({"errcode":0,"errmsg":"ok"})),
            "missing field `count`",
        ),
        (
            Reply::Json(json!({"errcode":{"x":1},"errmsg":"ok"})),
            "errcode",
        ),
        (
            Reply::Raw {
                status: 200,
                body: "[".repeat(50_000).into_bytes(),
            },
            "not valid JSON",
        ),
    ];
    for (reply, needle) in hostile {
        fake.script("databasecount", [reply]);
        let err = c.database_count("env", "q").await.unwrap_err();
        assert!(
            matches!(err.kind, ApiErrorKind::InvalidResponse(_)),
            "{err}"
        );
        assert!(err.to_string().contains(needle), "{err} / {needle}");
        assert_eq!(err.class(), ErrorClass::Transient);
    }
    fake.script(
        "databasecount",
        [Reply::Raw {
            status: 500,
            body: b"oops".to_vec(),
        }],
    );
    let err = c.database_count("env", "q").await.unwrap_err();
    assert_eq!(err.kind, ApiErrorKind::Http { status: 500 });
    assert_eq!(err.class(), ErrorClass::Transient);
}

#[tokio::test]
async fn oversized_json_is_cut_off() {
    let fake = Fake::start();
    let cfg = ClientConfig {
        max_json_bytes: 4096,
        ..config(fake.url())
    };
    let c = CloudBaseClient::new(cfg, creds(TokenMode::Stable)).unwrap();
    let big = json!({"errcode":0,"errmsg":"ok","count":1,"pad":"x".repeat(100_000)});
    fake.script("databasecount", [Reply::Json(big)]);
    let err = c.database_count("env", "q").await.unwrap_err();
    assert_eq!(err.kind, ApiErrorKind::TooLarge);
    // a body without Content-Length (chunked) is cut off while reading
    let chunked = chunked_server(200_000).await;
    let cfg = ClientConfig {
        max_json_bytes: 4096,
        ..config(url::Url::parse(&chunked).unwrap())
    };
    let c3 = CloudBaseClient::new(cfg, creds(TokenMode::Stable)).unwrap();
    let err = c3.ensure_token().await.unwrap_err();
    assert_eq!(err.kind, ApiErrorKind::TooLarge, "{err}");
}

/// A raw HTTP server that answers every request with a chunked body of `n` bytes.
async fn chunked_server(n: usize) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = sock.read(&mut buf).await;
                let _ = sock
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n")
                    .await;
                let chunk = vec![b' '; 1024];
                for _ in 0..n / 1024 {
                    let _ = sock.write_all(b"400\r\n").await;
                    if sock.write_all(&chunk).await.is_err() {
                        return;
                    }
                    let _ = sock.write_all(b"\r\n").await;
                }
                let _ = sock.write_all(b"0\r\n\r\n").await;
            });
        }
    });
    format!("http://{addr}")
}

/// A raw server that accepts connections and closes them without answering.
async fn resetting_server() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            drop(sock);
        }
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn resets_and_timeouts_are_transient() {
    let base = resetting_server().await;
    let c = CloudBaseClient::new(
        config(url::Url::parse(&base).unwrap()),
        creds(TokenMode::Stable),
    )
    .unwrap();
    let err = c.ensure_token().await.unwrap_err();
    assert!(matches!(err.kind, ApiErrorKind::Transport(_)), "{err}");
    assert_eq!(err.class(), ErrorClass::Transient);

    let fake = Fake::start();
    let cfg = ClientConfig {
        request_timeout: Duration::from_millis(300),
        ..config(fake.url())
    };
    let c = CloudBaseClient::new(cfg, creds(TokenMode::Stable)).unwrap();
    fake.script(
        "databasecount",
        [Reply::Delay(
            Duration::from_secs(3),
            Box::new(Reply::Json(json!({"errcode":0,"count":1}))),
        )],
    );
    let err = c.database_count("env", "q").await.unwrap_err();
    assert_eq!(err.kind, ApiErrorKind::Timeout, "{err}");
    assert_eq!(err.class(), ErrorClass::Transient);
}

#[tokio::test]
async fn insecure_api_base_is_refused_unless_opted_in() {
    let base = url::Url::parse("http://api.example.com").unwrap();
    let err = CloudBaseClient::new(
        ClientConfig::with_api_base(base.clone()),
        creds(TokenMode::Stable),
    )
    .unwrap_err();
    assert!(matches!(err.kind, ApiErrorKind::InsecureUrl(_)), "{err}");
    let cfg = ClientConfig {
        allow_insecure_http: true,
        ..ClientConfig::with_api_base(base)
    };
    assert!(CloudBaseClient::new(cfg, creds(TokenMode::Stable)).is_ok());
    assert!(CloudBaseClient::new(ClientConfig::default(), creds(TokenMode::Stable)).is_ok());
}

/// A raw server that promises `promised` bytes and sends only `sent` before closing.
async fn truncating_server(promised: usize, sent: usize) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let mut buf = [0u8; 4096];
            let _ = sock.read(&mut buf).await;
            let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {promised}\r\n\r\n");
            let _ = sock.write_all(head.as_bytes()).await;
            let _ = sock.write_all(&vec![b'x'; sent]).await;
            let _ = sock.shutdown().await;
        }
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn truncated_download_ends_in_an_error_not_a_short_success() {
    let fake = Fake::start();
    let c = stable(&fake);
    let base = truncating_server(10_000, 4_000).await;
    let dl = c.download(&format!("{base}/f")).await.unwrap();
    assert_eq!(dl.content_length, Some(10_000));
    let mut stream = dl.stream;
    let mut got = 0usize;
    let mut error = None;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(b) => got += b.len(),
            Err(e) => {
                error = Some(e);
                break;
            }
        }
    }
    let err = error.expect("a truncated body must surface as an error");
    assert!(got <= 4_000);
    assert_eq!(err.endpoint, "download");
    assert_eq!(err.class(), ErrorClass::Transient, "{err}");
}
