//! API response decoding, through the real client and a real HTTP exchange: a tiny loopback
//! server answers every `/tcb/...` call (and, when the first byte says so, the token call) with
//! the fuzz input as body. Whatever the body, each call returns a value or a typed `ApiError`
//! whose message never carries the secret or the access token; it never panics or hangs.
#![no_main]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use tcb_backup::client::{
    AppCredentials, ClientConfig, CloudBaseClient, ExportRequest, FileType, Secret, TokenMode,
};

const SECRET: &str = "fuzz-secret-0123456789abcdef";
const TOKEN: &str = "FUZZTOKEN_abcdefghijklmnopqrstuvwxyz_0123456789";

struct Reply {
    body: Vec<u8>,
    fuzz_token: bool,
}

static REPLY: Mutex<Reply> = Mutex::new(Reply {
    body: Vec::new(),
    fuzz_token: false,
});

fn serve(stream: TcpStream) {
    let mut reader = BufReader::new(match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    });
    let mut writer = stream;
    loop {
        let mut first = String::new();
        if reader.read_line(&mut first).unwrap_or(0) == 0 {
            return;
        }
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let body = {
            let r = REPLY.lock().unwrap_or_else(|p| p.into_inner());
            if first.contains("token") && !r.fuzz_token {
                format!("{{\"access_token\":\"{TOKEN}\",\"expires_in\":7200}}").into_bytes()
            } else {
                r.body.clone()
            }
        };
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        if writer.write_all(head.as_bytes()).is_err() || writer.write_all(&body).is_err() {
            return;
        }
    }
}

struct World {
    rt: tokio::runtime::Runtime,
    base: url::Url,
    client: CloudBaseClient,
}

fn client(base: &url::Url) -> CloudBaseClient {
    let mut cfg = ClientConfig::with_api_base(base.clone());
    cfg.request_timeout = Duration::from_secs(5);
    cfg.max_json_bytes = 1 << 20;
    CloudBaseClient::new(
        cfg,
        AppCredentials {
            appid: "wxfuzz0123456789ab".into(),
            secret: Secret::new(SECRET),
            token_mode: TokenMode::Stable,
        },
    )
    .expect("client")
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        std::thread::spawn(move || {
            for s in listener.incoming().flatten() {
                std::thread::spawn(move || serve(s));
            }
        });
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let base = url::Url::parse(&format!("http://{addr}")).expect("url");
        let client = client(&base);
        World { rt, base, client }
    })
}

fn check(text: String) {
    assert!(!text.contains(SECRET), "secret in an error: {text}");
    assert!(!text.contains(TOKEN), "token in an error: {text}");
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let w = world();
    {
        let mut r = REPLY.lock().unwrap_or_else(|p| p.into_inner());
        r.body = body.to_vec();
        r.fuzz_token = selector % 8 == 0;
    }
    w.rt.block_on(async {
        let env = "fuzz-env";
        let result: Result<String, tcb_backup::client::ApiError> = match selector % 8 {
            0 => client(&w.base)
                .ensure_token()
                .await
                .map(|t| format!("{t:?}")),
            1 => w
                .client
                .export(
                    env,
                    &ExportRequest {
                        file_path: "x.json".into(),
                        file_type: FileType::Json,
                        query: "db.collection(\"a\").get()".into(),
                    },
                )
                .await
                .map(|id| id.to_string()),
            2 => w
                .client
                .query_migrate_job(env, 7)
                .await
                .map(|i| format!("{i:?}")),
            3 => w
                .client
                .list_collections(env)
                .await
                .map(|c| format!("{c:?}")),
            4 => w
                .client
                .batch_download_file(env, &[("cloud://a/b".into(), 60)])
                .await
                .map(|l| format!("{l:?}")),
            5 => w
                .client
                .database_query(env, "db.collection(\"a\").get()")
                .await
                .map(|p| format!("{p:?}")),
            6 => w
                .client
                .database_count(env, "db.collection(\"a\").count()")
                .await
                .map(|n| n.to_string()),
            _ => w
                .client
                .batch_delete_file(env, &["cloud://a/b".into()])
                .await
                .map(|d| format!("{d:?}")),
        };
        match result {
            Ok(text) => check(text),
            Err(e) => {
                check(e.to_string());
                check(format!("{e:?}"));
            }
        }
    });
});
