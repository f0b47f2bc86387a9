//! A local S3 server for the tests: `moto_server` from the PyPI package `moto[server]`
//! (`.ci/run` installs it), on 127.0.0.1 and a free port, killed when dropped; and a proxy in
//! front of it that can hold one request (e.g. the second part of a multipart upload) so a
//! test can kill the server at a chosen point of an upload.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Whether `moto_server` is on the PATH. Where it is not, the calling test skips (say so and
/// return), unless `TCB_REQUIRE_PRIVILEGED_TESTS=1` (CI, which installs it): then it fails.
pub fn installed() -> bool {
    let found = std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| dir.join("moto_server").is_file())
    });
    if !found {
        let required = std::env::var("TCB_REQUIRE_PRIVILEGED_TESTS").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "TCB_REQUIRE_PRIVILEGED_TESTS=1 but moto_server is not installed (pip install 'moto[server]')"
        );
        eprintln!("SKIP: moto_server is not installed (pip install 'moto[server]')");
    }
    found
}

pub struct Moto {
    child: Child,
    pub port: u16,
}

impl Moto {
    pub fn start(port: u16) -> Moto {
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server must be installed: pip install 'moto[server]'");
        Moto { child, port }
    }

    /// Waits until the server answers, then creates `bucket` (moto keeps state in memory: a
    /// restarted server has none).
    pub async fn ready(&self, bucket: &str) {
        let http = reqwest::Client::new();
        let url = format!("http://127.0.0.1:{}/{bucket}", self.port);
        for _ in 0..600 {
            if let Ok(resp) = http.put(&url).send().await {
                assert!(
                    resp.status().is_success(),
                    "create bucket: {}",
                    resp.status()
                );
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("moto_server did not come up on port {}", self.port);
    }

    /// Every object in `bucket`: (key, bytes). One listing page is enough for a test.
    #[allow(dead_code)] // not every test that includes this module reads objects back
    pub async fn objects(&self, bucket: &str) -> Vec<(String, Vec<u8>)> {
        let http = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{}/{bucket}", self.port);
        let listing = http
            .get(format!("{base}?list-type=2&max-keys=1000"))
            .send()
            .await
            .expect("list the bucket")
            .text()
            .await
            .expect("listing body");
        assert!(
            !listing.contains("<IsTruncated>true</IsTruncated>"),
            "more than one page of objects"
        );
        let mut out = Vec::new();
        for part in listing.split("<Key>").skip(1) {
            let key = part.split("</Key>").next().unwrap_or("").to_string();
            let body = http
                .get(format!("{base}/{key}"))
                .send()
                .await
                .expect("get an object")
                .bytes()
                .await
                .expect("object body");
            out.push((key, body.to_vec()));
        }
        out
    }

    pub fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A TCP proxy to moto that forwards every HTTP/1.1 request except the first whose request
/// line contains `hold`: that one is not forwarded, its line is reported ([`HoldingProxy::held`])
/// and its connection parked until [`HoldingProxy::release`], which closes it. A connection
/// that cannot reach moto is closed at once (what a client sees of a dead server).
#[allow(dead_code)] // only the mid-upload test holds requests
pub struct HoldingProxy {
    pub port: u16,
    held: tokio::sync::Mutex<tokio::sync::mpsc::Receiver<String>>,
    release: tokio::sync::watch::Sender<bool>,
    accept: tokio::task::JoinHandle<()>,
}

#[allow(dead_code)]
impl HoldingProxy {
    pub async fn start(moto_port: u16, hold: &str) -> HoldingProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let (held_tx, held_rx) = tokio::sync::mpsc::channel(1);
        let (release, release_rx) = tokio::sync::watch::channel(false);
        let hold = std::sync::Arc::new(std::sync::Mutex::new(Some(hold.to_string())));
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", moto_port)).await
                else {
                    continue; // dropping the client closes it
                };
                let (hold, held_tx, release_rx) =
                    (hold.clone(), held_tx.clone(), release_rx.clone());
                tokio::spawn(async move {
                    let (client_read, mut client_write) = client.into_split();
                    let (mut server_read, server_write) = server.into_split();
                    let answers = tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
                    });
                    forward_requests(client_read, server_write, hold, held_tx, release_rx).await;
                    answers.abort();
                });
            }
        });
        HoldingProxy {
            port,
            held: tokio::sync::Mutex::new(held_rx),
            release,
            accept,
        }
    }

    /// The request line of the held request, once it arrived.
    pub async fn held(&self) -> String {
        self.held
            .lock()
            .await
            .recv()
            .await
            .expect("the proxy is running")
    }

    /// Closes the held connection.
    pub fn release(&self) {
        let _ = self.release.send(true);
    }
}

impl Drop for HoldingProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Forwards requests (head, then `Content-Length` bytes of body) from client to server, until
/// one matches the armed `hold` pattern (then waits for the release and returns, closing the
/// connection) or either side closes. A body of unknown length ends the parsing: the rest of
/// the connection is copied as is.
async fn forward_requests(
    mut client: tokio::net::tcp::OwnedReadHalf,
    mut server: tokio::net::tcp::OwnedWriteHalf,
    hold: std::sync::Arc<std::sync::Mutex<Option<String>>>,
    held: tokio::sync::mpsc::Sender<String>,
    mut release: tokio::sync::watch::Receiver<bool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let head_end = loop {
            if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            let mut chunk = [0u8; 64 * 1024];
            match client.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let line = head.lines().next().unwrap_or("").to_string();
        let armed = {
            let mut hold = hold.lock().expect("hold pattern");
            let hit = hold.as_deref().is_some_and(|p| line.contains(p));
            if hit {
                *hold = None;
            }
            hit
        };
        if armed {
            let _ = held.send(line).await;
            let _ = release.wait_for(|released| *released).await;
            return;
        }
        let lower = head.to_ascii_lowercase();
        if lower.lines().any(|h| h.starts_with("transfer-encoding:")) {
            // Unknown length: stop parsing, copy the rest as it comes.
            if server.write_all(&buf).await.is_err() {
                return;
            }
            let _ = tokio::io::copy(&mut client, &mut server).await;
            return;
        }
        let length: usize = lower
            .lines()
            .skip(1)
            .find_map(|h| h.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        let request_end = head_end + length;
        // Forward what is buffered of this request, then the rest of its body.
        let buffered = request_end.min(buf.len());
        if server.write_all(&buf[..buffered]).await.is_err() {
            return;
        }
        let mut missing = request_end - buffered;
        buf.drain(..buffered);
        while missing > 0 {
            let mut chunk = vec![0u8; missing.min(64 * 1024)];
            let n = match client.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if server.write_all(&chunk[..n]).await.is_err() {
                return;
            }
            missing -= n;
        }
    }
}
