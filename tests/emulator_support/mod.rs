//! Shared helpers of the emulator and contract tests: start an emulator on port 0 and talk to
//! it over real HTTP with reqwest (never through the client module).
#![allow(dead_code)]

use serde_json::{json, Value};
use tcb_backup::emulator::{start, EmulatorConfig, EmulatorControl, EmulatorHandle};

pub struct Emu {
    pub handle: EmulatorHandle,
    pub http: reqwest::Client,
    pub base: String,
    pub appid: String,
    pub secret: String,
    pub env: String,
    pub env2: String,
}

pub async fn emu() -> Emu {
    emu_with(EmulatorConfig::for_tests()).await
}

pub async fn emu_with(cfg: EmulatorConfig) -> Emu {
    let handle = start(cfg, "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("emulator starts");
    let app = handle.apps()[0].clone();
    Emu {
        base: handle.base_url(),
        http: reqwest::Client::new(),
        appid: app.appid,
        secret: app.secret,
        env: app.envs[0].clone(),
        env2: app.envs[1].clone(),
        handle,
    }
}

impl Emu {
    pub fn ctl(&self) -> &EmulatorControl {
        self.handle.control()
    }

    pub async fn stable_token_raw(&self, body: Value) -> Value {
        self.http
            .post(format!("{}/cgi-bin/stable_token", self.base))
            .json(&body)
            .send()
            .await
            .expect("send")
            .json()
            .await
            .expect("json")
    }

    pub async fn stable_token(&self) -> String {
        let v = self
            .stable_token_raw(
                json!({"grant_type":"client_credential","appid":self.appid,"secret":self.secret}),
            )
            .await;
        v["access_token"].as_str().expect("token").to_string()
    }

    pub async fn legacy_token(&self) -> Value {
        self.http
            .get(format!(
                "{}/cgi-bin/token?grant_type=client_credential&appid={}&secret={}",
                self.base, self.appid, self.secret
            ))
            .send()
            .await
            .expect("send")
            .json()
            .await
            .expect("json")
    }

    /// POST /tcb/<ep>?access_token=<token> with a JSON body; returns the parsed body.
    pub async fn tcb(&self, ep: &str, token: &str, body: Value) -> Value {
        self.tcb_raw(ep, Some(token), body.to_string().into_bytes())
            .await
    }

    pub async fn tcb_raw(&self, ep: &str, token: Option<&str>, body: Vec<u8>) -> Value {
        let url = match token {
            Some(t) => format!("{}/tcb/{ep}?access_token={t}", self.base),
            None => format!("{}/tcb/{ep}", self.base),
        };
        let resp = self
            .http
            .post(url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 200, "API errors travel with HTTP 200");
        resp.json().await.expect("json body")
    }

    /// Run an export to success on the frozen clock; returns (job_id, queryinfo body).
    pub async fn export_done(
        &self,
        token: &str,
        query: &str,
        file_type: u64,
        file_path: &str,
    ) -> (u64, Value) {
        let r = self
            .tcb("databasemigrateexport", token, json!({"env": self.env, "file_path": file_path, "file_type": file_type, "query": query}))
            .await;
        assert_eq!(r["errcode"], 0, "{r}");
        let job_id = r["job_id"].as_u64().expect("job_id");
        self.ctl()
            .advance_clock(std::time::Duration::from_secs(600));
        // the clock moved: fetch the (possibly rotated) stable token like a client would
        let fresh = self.stable_token().await;
        let info = self
            .tcb(
                "databasemigratequeryinfo",
                &fresh,
                json!({"env": self.env, "job_id": job_id}),
            )
            .await;
        (job_id, info)
    }

    pub async fn get_text(&self, url: &str) -> (u16, String) {
        let resp = self.http.get(url).send().await.expect("send");
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap_or_default())
    }
}

pub fn errcode(v: &Value) -> i64 {
    v["errcode"].as_i64().unwrap_or(i64::MIN)
}

/// errmsg of a non-zero errcode ends with " rid: xxxxxxxx-xxxxxxxx-xxxxxxxx".
pub fn assert_rid(v: &Value) {
    let msg = v["errmsg"].as_str().unwrap_or_default();
    let rid = msg.rsplit_once(" rid: ").map(|(_, r)| r).unwrap_or("");
    let parts: Vec<&str> = rid.split('-').collect();
    assert!(
        parts.len() == 3
            && parts
                .iter()
                .all(|p| p.len() == 8 && p.chars().all(|c| c.is_ascii_hexdigit())),
        "errmsg without rid suffix: {msg:?}"
    );
}
