//! A small scripted fake of the WeChat token + tcb endpoints, COS upload and file downloads,
//! for the client tests. It runs on its own thread and runtime so the test's tracing capture
//! only sees client-side events. Not the emulator: just enough to pin the client's behaviour.
#![allow(dead_code)]

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Multipart, Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};

pub const APPID: &str = "wxfakeapp0001";
pub const SECRET: &str = "fake-secret-0123456789abcdef";

/// A canned reply for the next call of an endpoint.
#[derive(Clone, Debug)]
pub enum Reply {
    Json(Value),
    Raw {
        status: u16,
        body: Vec<u8>,
    },
    Delay(Duration, Box<Reply>),
    /// 302 to the given location.
    Redirect(String),
    /// Hold the reply until the test releases the gate.
    Hold(Arc<tokio::sync::Semaphore>, Box<Reply>),
}

#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: HashMap<String, String>,
    pub body: Vec<u8>,
    pub content_type: Option<String>,
}

impl Recorded {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

#[derive(Default)]
pub struct FakeState {
    pub base: Mutex<String>,
    /// Seconds reported as `expires_in`.
    pub expires_in: AtomicU64,
    /// Real delay inside the token endpoints, to make concurrent callers overlap.
    pub token_delay_ms: AtomicU64,
    pub stable_calls: AtomicU64,
    pub legacy_calls: AtomicU64,
    minted: AtomicU64,
    tokens: Mutex<Tokens>,
    scripts: Mutex<HashMap<String, VecDeque<Reply>>>,
    pub requests: Mutex<Vec<Recorded>>,
    /// Number of collections `databasecollectionget` pages over.
    pub collections: AtomicU64,
    /// Files served under /files/NAME.
    pub files: Mutex<HashMap<String, Vec<u8>>>,
    /// Multipart field names received by the fake COS, in order.
    pub cos_fields: Mutex<Vec<Vec<(String, usize)>>>,
}

#[derive(Default)]
struct Tokens {
    issued: Vec<String>,
    valid: HashSet<String>,
    current_stable: Option<String>,
}

#[derive(Clone)]
pub struct Fake {
    pub state: Arc<FakeState>,
    pub base: String,
}

impl Fake {
    /// Starts the fake on 127.0.0.1:0 in a thread of its own.
    pub fn start() -> Fake {
        let state = Arc::new(FakeState::default());
        state.expires_in.store(7200, Ordering::SeqCst);
        state.collections.store(3, Ordering::SeqCst);
        let (tx, rx) = std::sync::mpsc::channel();
        let st = state.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                let addr = listener.local_addr().unwrap();
                *st.base.lock().unwrap() = format!("http://{addr}");
                tx.send(format!("http://{addr}")).unwrap();
                let app = Router::new()
                    .route("/cgi-bin/stable_token", post(stable_token))
                    .route("/cgi-bin/token", get(legacy_token))
                    .route("/tcb/{endpoint}", post(tcb))
                    .route("/cos/{*path}", post(cos_upload))
                    .route("/files/{name}", get(file))
                    .with_state(st);
                axum::serve(listener, app).await.unwrap();
            });
        });
        let base = rx.recv().unwrap();
        Fake { state, base }
    }

    pub fn url(&self) -> url::Url {
        url::Url::parse(&self.base).unwrap()
    }

    /// Queues replies for the next calls of `endpoint` (e.g. "databasecount", "stable_token").
    pub fn script(&self, endpoint: &str, replies: impl IntoIterator<Item = Reply>) {
        self.state
            .scripts
            .lock()
            .unwrap()
            .entry(endpoint.to_owned())
            .or_default()
            .extend(replies);
    }

    /// Replies still queued for `endpoint`.
    pub fn pending_scripts(&self, endpoint: &str) -> usize {
        self.state
            .scripts
            .lock()
            .unwrap()
            .get(endpoint)
            .map_or(0, |q| q.len())
    }

    /// Every token minted so far (for leak assertions).
    pub fn issued_tokens(&self) -> Vec<String> {
        self.state.tokens.lock().unwrap().issued.clone()
    }

    /// "Another service force-refreshed": every token dies; the next stable call mints anew.
    pub fn revoke_all(&self) {
        let mut t = self.state.tokens.lock().unwrap();
        t.valid.clear();
        t.current_stable = None;
    }

    pub fn calls(&self, path: &str) -> Vec<Recorded> {
        self.state
            .requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    pub fn add_file(&self, name: &str, data: Vec<u8>) {
        self.state
            .files
            .lock()
            .unwrap()
            .insert(name.to_owned(), data);
    }
}

fn record(
    st: &FakeState,
    method: &Method,
    path: &str,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: &[u8],
) {
    st.requests.lock().unwrap().push(Recorded {
        method: method.to_string(),
        path: path.to_owned(),
        query: query.clone(),
        body: body.to_vec(),
        content_type: headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    });
}

fn next_script(st: &FakeState, endpoint: &str) -> Option<Reply> {
    st.scripts
        .lock()
        .unwrap()
        .get_mut(endpoint)
        .and_then(|q| q.pop_front())
}

async fn render(reply: Reply) -> Response {
    let mut reply = reply;
    loop {
        match reply {
            Reply::Json(v) => return (StatusCode::OK, axum::Json(v)).into_response(),
            Reply::Raw { status, body } => {
                return (StatusCode::from_u16(status).unwrap(), Body::from(body)).into_response()
            }
            Reply::Redirect(to) => {
                return (StatusCode::FOUND, [("location", to)], Body::empty()).into_response()
            }
            Reply::Hold(gate, inner) => {
                let _permit = gate.acquire().await;
                reply = *inner;
            }
            Reply::Delay(d, inner) => {
                tokio::time::sleep(d).await;
                reply = *inner;
            }
        }
    }
}

fn err(code: i64, msg: &str) -> Response {
    (
        StatusCode::OK,
        axum::Json(
            json!({"errcode": code, "errmsg": format!("{msg} rid: 6a1b2c3d-00000001-12345678")}),
        ),
    )
        .into_response()
}

fn mint(st: &FakeState, family: &str) -> String {
    let n = st.minted.fetch_add(1, Ordering::SeqCst);
    let tok = format!("{family}TOKEN{n:04}xyzabcdefghijklmnopqrstuvwxyz0123456789");
    let mut t = st.tokens.lock().unwrap();
    t.issued.push(tok.clone());
    t.valid.insert(tok.clone());
    tok
}

async fn stable_token(
    State(st): State<Arc<FakeState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    st.stable_calls.fetch_add(1, Ordering::SeqCst);
    record(
        &st,
        &Method::POST,
        "/cgi-bin/stable_token",
        &HashMap::new(),
        &headers,
        &body,
    );
    tokio::time::sleep(Duration::from_millis(
        st.token_delay_ms.load(Ordering::SeqCst),
    ))
    .await;
    if let Some(r) = next_script(&st, "stable_token") {
        return render(r).await;
    }
    let Ok(v) = serde_json::from_slice::<Value>(&body) else {
        return err(41002, "appid missing");
    };
    if v["secret"] != SECRET || v["appid"] != APPID {
        return err(40001, "invalid credential");
    }
    let existing = st.tokens.lock().unwrap().current_stable.clone();
    let tok = match existing {
        Some(t) => t,
        None => {
            let t = mint(&st, "S");
            st.tokens.lock().unwrap().current_stable = Some(t.clone());
            t
        }
    };
    (
        StatusCode::OK,
        axum::Json(
            json!({"access_token": tok, "expires_in": st.expires_in.load(Ordering::SeqCst)}),
        ),
    )
        .into_response()
}

async fn legacy_token(
    State(st): State<Arc<FakeState>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    st.legacy_calls.fetch_add(1, Ordering::SeqCst);
    record(&st, &Method::GET, "/cgi-bin/token", &q, &headers, &[]);
    tokio::time::sleep(Duration::from_millis(
        st.token_delay_ms.load(Ordering::SeqCst),
    ))
    .await;
    if let Some(r) = next_script(&st, "token") {
        return render(r).await;
    }
    if q.get("grant_type").map(String::as_str) != Some("client_credential") {
        return err(40002, "invalid grant_type");
    }
    if q.get("secret").map(String::as_str) != Some(SECRET) {
        return err(40001, "invalid credential");
    }
    let tok = mint(&st, "L");
    (
        StatusCode::OK,
        axum::Json(
            json!({"access_token": tok, "expires_in": st.expires_in.load(Ordering::SeqCst)}),
        ),
    )
        .into_response()
}

async fn tcb(
    State(st): State<Arc<FakeState>>,
    Path(endpoint): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    record(
        &st,
        &Method::POST,
        &format!("/tcb/{endpoint}"),
        &q,
        &headers,
        &body,
    );
    let Some(token) = q.get("access_token") else {
        return err(41001, "access_token missing");
    };
    if !st.tokens.lock().unwrap().valid.contains(token) {
        return err(
            40001,
            "invalid credential, access_token is invalid or not latest",
        );
    }
    if let Some(r) = next_script(&st, &endpoint) {
        return render(r).await;
    }
    let Ok(req) = serde_json::from_slice::<Value>(&body) else {
        return err(47001, "data format error");
    };
    let base = st.base.lock().unwrap().clone();
    let ok = |mut v: Value| {
        v["errcode"] = json!(0);
        v["errmsg"] = json!("ok");
        (StatusCode::OK, axum::Json(v)).into_response()
    };
    match endpoint.as_str() {
        "databasemigrateexport" | "databasemigrateimport" => ok(json!({"job_id": 100000001u64})),
        "databasemigratequeryinfo" => ok(json!({
            "status": "success", "record_success": 3, "record_fail": 0,
            "error_msg": "导出完成.", "file_url": format!("{base}/files/export.json")
        })),
        "databasecollectionget" => {
            // The server caps pages at 10 whatever the client asks for.
            let total = st.collections.load(Ordering::SeqCst);
            let offset = req["offset"].as_u64().unwrap_or(0);
            let limit = req["limit"].as_u64().unwrap_or(10).min(10);
            let cols: Vec<Value> = (offset..total.min(offset + limit))
                .map(|i| json!({"name": format!("c{i:03}"), "count": i, "size": 10*i, "index_count": 1, "index_size": 4096}))
                .collect();
            ok(
                json!({"collections": cols, "pager": {"Offset": offset, "Limit": limit, "Total": total}}),
            )
        }
        "databasecollectionadd" | "databasecollectiondelete" => ok(json!({})),
        "databaseadd" => ok(json!({"id_list": ["be62d9c4", "0f4b8add"]})),
        "databasequery" => ok(json!({
            "pager": {"Offset": 0, "Limit": 10, "Total": 2},
            "data": ["{\"_id\":\"a\",\"done\":true}", "{\"_id\":\"b\",\"due\":{\"$date\":\"2019-09-09T00:00:00.000Z\"}}"]
        })),
        "databasecount" => ok(json!({"count": 3})),
        "uploadfile" => {
            let path = req["path"].as_str().unwrap_or("");
            ok(json!({
                "url": format!("{base}/cos/7465-env-1258717764/{path}"),
                "token": "cos-security-token-abcdef0123456789",
                "authorization": "q-sign-algorithm=sha1&q-ak=AKIDfake&q-signature=0123456789",
                "file_id": format!("cloud://env.7465-env-1258717764/{path}"),
                "cos_file_id": "cos-file-id-42"
            }))
        }
        "batchdownloadfile" => {
            let list: Vec<Value> = req["file_list"].as_array().cloned().unwrap_or_default().into_iter().map(|f| {
                let id = f["fileid"].as_str().unwrap_or("").to_owned();
                if id.contains("missing") {
                    json!({"fileid": id, "download_url": "", "status": -503003, "errmsg": "file not exist"})
                } else {
                    let name = id.rsplit('/').next().unwrap_or("").to_owned();
                    json!({"fileid": id, "download_url": format!("{base}/files/{name}"), "status": 0, "errmsg": "ok"})
                }
            }).collect();
            ok(json!({"file_list": list}))
        }
        "batchdeletefile" => {
            let list: Vec<Value> = req["fileid_list"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(|id| json!({"fileid": id, "status": 0, "errmsg": "ok"}))
                .collect();
            ok(json!({"delete_list": list}))
        }
        _ => err(40097, "unknown endpoint"),
    }
}

async fn cos_upload(
    State(st): State<Arc<FakeState>>,
    Path(path): Path<String>,
    mut mp: Multipart,
) -> Response {
    record(
        &st,
        &Method::POST,
        &format!("/cos/{path}"),
        &HashMap::new(),
        &HeaderMap::new(),
        &[],
    );
    let mut fields = Vec::new();
    loop {
        match mp.next_field().await {
            Ok(Some(f)) => {
                let name = f.name().unwrap_or("").to_owned();
                let data = f.bytes().await.map(|b| b.len()).unwrap_or(0);
                fields.push((name, data));
            }
            Ok(None) => break,
            Err(_) => {
                return (StatusCode::BAD_REQUEST, "<Error><Code>MalformedPOSTRequest</Code><Message>The body of your POST request is not well-formed multipart/form-data.</Message></Error>").into_response();
            }
        }
    }
    st.cos_fields.lock().unwrap().push(fields);
    if let Some(r) = next_script(&st, "cos") {
        return render(r).await;
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn file(State(st): State<Arc<FakeState>>, Path(name): Path<String>) -> Response {
    if let Some(r) = next_script(&st, "file") {
        return render(r).await;
    }
    match st.files.lock().unwrap().get(&name) {
        Some(data) => (StatusCode::OK, data.clone()).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            "<Error><Code>NoSuchKey</Code></Error>",
        )
            .into_response(),
    }
}

/// Client config pointing at `base` with short timeouts for tests.
pub fn config(base: url::Url) -> tcb_backup::client::ClientConfig {
    tcb_backup::client::ClientConfig {
        connect_timeout: Duration::from_secs(5),
        request_timeout: Duration::from_secs(5),
        ..tcb_backup::client::ClientConfig::with_api_base(base)
    }
}

pub fn creds(mode: tcb_backup::client::TokenMode) -> tcb_backup::client::AppCredentials {
    tcb_backup::client::AppCredentials {
        appid: APPID.to_owned(),
        secret: tcb_backup::client::Secret::new(SECRET),
        token_mode: mode,
    }
}

pub fn client(
    fake: &Fake,
    mode: tcb_backup::client::TokenMode,
) -> tcb_backup::client::CloudBaseClient {
    tcb_backup::client::CloudBaseClient::new(config(fake.url()), creds(mode)).unwrap()
}
