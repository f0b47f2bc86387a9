//! `tcb-backup emulator` through the real binary: with `--json` its banner is one JSON line a
//! script can read the api_base, appids, secrets and env ids from, and those work.

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

const BIN: &str = env!("CARGO_BIN_EXE_tcb-backup");

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emulator_json_prints_one_banner_line_that_works() {
    let data = tempfile::tempdir().expect("tempdir");
    let mut child = tokio::process::Command::new(BIN)
        .args(["--json", "-v", "emulator", "--listen", "127.0.0.1:0"])
        .arg("--data")
        .arg(data.path())
        .args(["--seed-collections", "3"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn the emulator");
    let pid = child.id().expect("pid");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let line = tokio::time::timeout(Duration::from_secs(60), stdout.next_line())
        .await
        .expect("the banner within a minute")
        .expect("read stdout")
        .expect("a banner line");
    let banner: Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON: {line:?}: {e}"));
    assert_eq!(banner["message_type"], "emulator", "{banner}");
    let api_base = banner["api_base"].as_str().expect("api_base");
    assert!(api_base.starts_with("http://127.0.0.1:"), "{banner}");
    assert!(
        banner["control_api"]
            .as_str()
            .is_some_and(|c| c.starts_with(api_base)),
        "{banner}"
    );
    let app = &banner["apps"][0];
    let appid = app["appid"].as_str().expect("appid");
    let secret = app["secret"]
        .as_str()
        .expect("the demo secret, as the text banner shows");
    let envs = app["envs"].as_array().expect("envs");
    assert!(!envs.is_empty(), "{banner}");

    // What the banner says is what the emulator accepts.
    let token: Value = reqwest::Client::new()
        .post(format!("{api_base}/cgi-bin/stable_token"))
        .json(&serde_json::json!({
            "grant_type": "client_credential", "appid": appid, "secret": secret
        }))
        .send()
        .await
        .expect("token request")
        .json()
        .await
        .expect("token JSON");
    assert!(token["access_token"].is_string(), "{token}");

    let sent = std::process::Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .expect("kill -INT");
    assert!(sent.success());
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("stops on Ctrl-C")
        .expect("wait");
    assert_eq!(out.status.code(), Some(0));
    let rest = String::from_utf8_lossy(&out.stdout);
    assert!(rest.trim().is_empty(), "one line only, got more: {rest}");
    let logs = String::from_utf8_lossy(&out.stderr);
    assert!(
        !logs.contains(secret),
        "the secret reached the logs: {logs}"
    );
}
