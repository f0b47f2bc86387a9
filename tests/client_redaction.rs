//! Runs the client at trace log level (tracing + the `log` records of reqwest/hyper) through a
//! faulty session and asserts that neither the AppSecret nor any issued access token (nor the
//! COS upload credentials) appears in the captured output, in errors, or in Debug output.

mod client_fake;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use client_fake::{client, config, creds, Fake, Reply, SECRET};
use serde_json::json;
use tcb_backup::client::{ClientConfig, CloudBaseClient, ExportRequest, FileType, TokenMode};

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Buffer {
    type Writer = Buffer;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

fn log_err(what: &str, r: Result<impl std::fmt::Debug, tcb_backup::client::ApiError>) {
    match r {
        Ok(v) => tracing::info!(what, "ok: {v:?}"),
        Err(e) => tracing::error!(what, "error: {e} / {e:?} / class {}", e.class()),
    }
}

#[tokio::test]
async fn nothing_secret_reaches_the_trace_log() {
    let buffer = Buffer::default();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(buffer.clone())
        .with_ansi(false)
        .try_init()
        .expect("first subscriber in this test binary");

    let fake = Fake::start();
    let stable = client(&fake, TokenMode::Stable);
    let legacy = client(&fake, TokenMode::Legacy);
    tracing::debug!(?stable, ?legacy, creds = ?creds(TokenMode::Stable), "clients");

    log_err("token", stable.ensure_token().await);
    log_err("legacy token", legacy.ensure_token().await);
    // token dies mid-run: refresh + retry
    fake.script(
        "databasecount",
        [Reply::Json(
            json!({"errcode":40001,"errmsg":"invalid credential rid: a"}),
        )],
    );
    log_err("count", stable.database_count("env", "q").await);
    fake.revoke_all();
    log_err(
        "count after revoke",
        legacy.database_count("env", "q").await,
    );
    log_err(
        "count after revoke",
        stable.database_count("env", "q").await,
    );
    // errors of every kind
    fake.script(
        "databasemigrateexport",
        [Reply::Json(
            json!({"errcode":-501004,"errmsg":"busy rid: b"}),
        )],
    );
    let req = ExportRequest {
        file_path: "p".into(),
        file_type: FileType::Json,
        query: "q".into(),
    };
    log_err("export", stable.export("env", &req).await);
    fake.script(
        "databasecount",
        [Reply::Raw {
            status: 200,
            body: b"{\"errcode\":0,".to_vec(),
        }],
    );
    log_err("count invalid", stable.database_count("env", "q").await);
    fake.script(
        "databasecount",
        [Reply::Raw {
            status: 502,
            body: b"bad".to_vec(),
        }],
    );
    log_err("count 502", stable.database_count("env", "q").await);
    log_err(
        "upload",
        stable
            .upload_file("env", "a/b.json", b"{}".to_vec().into(), 2)
            .await,
    );
    fake.script(
        "cos",
        [Reply::Raw {
            status: 403,
            body: b"<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>"
                .to_vec(),
        }],
    );
    log_err(
        "upload denied",
        stable
            .upload_file("env", "a/b.json", b"{}".to_vec().into(), 2)
            .await,
    );
    fake.script(
        "file",
        [Reply::Raw {
            status: 403,
            body: b"<Error><Code>AccessDenied</Code></Error>".to_vec(),
        }],
    );
    log_err(
        "download",
        stable
            .download(&format!("{}/files/x", fake.base))
            .await
            .map(|d| d.content_length),
    );
    // a server that echoes the token back in its errmsg
    let token_now = fake.issued_tokens().last().cloned().unwrap();
    fake.script("databasecount", [Reply::Json(json!({"errcode":40097,"errmsg":format!("bad request for access_token={token_now} and token {token_now}")}))]);
    log_err("echo", stable.database_count("env", "q").await);

    // transport failures whose reqwest errors carry the URL (legacy: with secret= in it)
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let a = l.local_addr().unwrap();
        drop(l);
        url::Url::parse(&format!("http://{a}")).unwrap()
    };
    let legacy_dead = CloudBaseClient::new(config(dead.clone()), creds(TokenMode::Legacy)).unwrap();
    log_err("legacy refused", legacy_dead.ensure_token().await);
    let slow = ClientConfig {
        request_timeout: Duration::from_millis(200),
        ..config(fake.url())
    };
    let slow_client = CloudBaseClient::new(slow, creds(TokenMode::Stable)).unwrap();
    fake.script(
        "databasecount",
        [Reply::Delay(
            Duration::from_secs(2),
            Box::new(Reply::Json(json!({"errcode":0,"count":1}))),
        )],
    );
    log_err("timeout", slow_client.database_count("env", "q").await);

    let captured = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
    // the capture works and saw the session
    assert!(captured.contains("databasecount"), "{captured}");
    assert!(captured.contains("cgi-bin/token"), "{captured}");
    assert!(captured.contains("errcode -501004"), "{captured}");
    assert!(captured.contains("[redacted]"), "{captured}");
    let issued = fake.issued_tokens();
    assert!(issued.len() >= 3, "{issued:?}");
    let mut forbidden: Vec<String> = issued;
    forbidden.push(SECRET.to_owned());
    forbidden.push("cos-security-token-abcdef0123456789".to_owned());
    forbidden.push("q-signature=0123456789".to_owned());
    for f in &forbidden {
        assert!(!captured.contains(f.as_str()), "leaked {f} in:\n{captured}");
    }
}
