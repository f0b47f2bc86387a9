//! The emulator's request parsing, end to end through its HTTP server: an in-process emulator
//! (the demo config: seeded collections, a valid token fetched once) gets the fuzz input as the
//! JSON body of a `/tcb/` endpoint (chosen by the first byte) or as the multipart body of a COS
//! upload. Whatever the bytes, the server answers with a complete HTTP response — never a
//! dropped connection (a panicking handler) or a hang — and every `/tcb/` answer is a JSON
//! envelope with an errcode. The COS `Range` parser is fuzzed directly: a satisfiable range
//! lies inside the object.
#![no_main]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use tcb_backup::emulator::{self, EmulatorConfig, TCB_ENDPOINTS};

struct World {
    addr: SocketAddr,
    token: String,
}

/// One raw HTTP/1.1 exchange (`Connection: close`): the whole response.
fn exchange(addr: SocketAddr, head: &str, body: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).expect("connect to the emulator");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    let head = format!(
        "{head}\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).expect("send head");
    s.write_all(body).expect("send body");
    let mut out = Vec::new();
    s.read_to_end(&mut out)
        .expect("the emulator answers (a timeout means it hung)");
    out
}

fn body_of(response: &[u8]) -> &[u8] {
    let at = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(response.len(), |i| i + 4);
    &response[at..]
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let cfg = EmulatorConfig::demo();
        let app = cfg.apps[0].clone();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let emu = emulator::start(cfg, SocketAddr::from(([127, 0, 0, 1], 0)))
                    .await
                    .expect("start the emulator");
                tx.send(emu.addr()).expect("hand over the address");
                // Serve for the life of the fuzzing process.
                std::future::pending::<()>().await;
                drop(emu);
            });
        });
        let addr = rx.recv().expect("the emulator started");
        let body = serde_json::json!({
            "grant_type": "client_credential",
            "appid": app.appid,
            "secret": app.secret,
        })
        .to_string();
        let resp = exchange(
            addr,
            "POST /cgi-bin/stable_token HTTP/1.1\r\nContent-Type: application/json",
            body.as_bytes(),
        );
        let v: serde_json::Value = serde_json::from_slice(body_of(&resp)).expect("token JSON");
        let token = v["access_token"].as_str().expect("a token").to_string();
        World { addr, token }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    if let Ok(text) = std::str::from_utf8(rest) {
        let total = u64::from(selector) * 997;
        if let Some((start, len)) = emulator::parse_range(text, total) {
            assert!(len >= 1 && start.checked_add(len).is_some_and(|end| end <= total));
        }
    }
    let w = world();
    let choice = usize::from(selector) % (TCB_ENDPOINTS.len() + 1);
    if let Some(ep) = TCB_ENDPOINTS.get(choice) {
        let head = format!(
            "POST /tcb/{ep}?access_token={} HTTP/1.1\r\nContent-Type: application/json",
            w.token
        );
        let resp = exchange(w.addr, &head, rest);
        assert!(
            resp.starts_with(b"HTTP/1.1 200"),
            "{ep}: not a 200 answer: {}",
            String::from_utf8_lossy(&resp)
        );
        let v: serde_json::Value =
            serde_json::from_slice(body_of(&resp)).expect("every /tcb/ answer is JSON");
        assert!(v.get("errcode").is_some(), "{ep}: no errcode in {v}");
    } else {
        let head = "POST /cos/fuzz-bucket/some/object HTTP/1.1\r\n\
                    Content-Type: multipart/form-data; boundary=XfuzzX";
        let resp = exchange(w.addr, head, rest);
        assert!(
            resp.starts_with(b"HTTP/1.1 "),
            "cos upload: no answer: {}",
            String::from_utf8_lossy(&resp)
        );
    }
});
