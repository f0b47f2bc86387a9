//! A local S3 server for the tests: `moto_server` from the PyPI package `moto[server]`
//! (`.ci/run` installs it), on 127.0.0.1 and a free port, killed when dropped.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

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
