//! HTTP surface: routing of one axum server (API, fake COS, control API), the shared response
//! helpers that count every answer, fault pre-processing, and the two token endpoints.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, DefaultBodyLimit, RawQuery, State};
use axum::http::{header, Method, StatusCode};
use axum::response::Response;
use axum::routing::{any, get};
use axum::Router;
use serde_json::{json, Value};

use super::control;
use super::cos;
use super::envelope::ApiReject;
use super::faults::FaultAction;
use super::tcb;
use super::world::Core;

pub type Shared = Arc<Core>;

pub fn router(core: Shared) -> Router {
    Router::new()
        .route("/cgi-bin/token", any(token))
        .route("/cgi-bin/stable_token", any(stable_token))
        .route("/tcb/{endpoint}", any(tcb::endpoint))
        .layer(DefaultBodyLimit::max(64 * 1024 * 1024))
        .route(
            "/cos/{bucket}/{*path}",
            get(cos::download)
                .post(cos::upload)
                .layer(DefaultBodyLimit::disable()),
        )
        .merge(control::routes().layer(DefaultBodyLimit::max(512 * 1024 * 1024)))
        .with_state(core)
}

/// A JSON answer to a call counted under `endpoint` (see [`pre_faults`]), its status and the
/// errcode found in the body counted too.
pub fn json_reply(core: &Core, endpoint: &str, status: u16, body: Value) -> Response {
    let errcode =
        body.get("errcode")
            .and_then(Value::as_i64)
            .or(if body.get("access_token").is_some() {
                Some(0)
            } else {
                None
            });
    core.world().counters.answered(endpoint, status, errcode);
    raw_response(
        status,
        "application/json; encoding=utf-8",
        Body::from(body.to_string()),
    )
}

/// A non-JSON answer to a call counted under `endpoint`, its status counted.
pub fn counted_raw(
    core: &Core,
    endpoint: &str,
    status: u16,
    content_type: &str,
    body: Body,
) -> Response {
    core.world().counters.answered(endpoint, status, None);
    raw_response(status, content_type, body)
}

pub fn raw_response(status: u16, content_type: &str, body: Body) -> Response {
    let mut resp = Response::new(body);
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(v) = header::HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    resp
}

/// A response whose body fails at once: hyper drops the connection without completing it.
pub fn reset_response() -> Response {
    let stream = futures_util::stream::once(async {
        Err::<Bytes, std::io::Error>(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "injected connection reset",
        ))
    });
    let mut resp = raw_response(200, "application/json", Body::from_stream(stream));
    resp.headers_mut().insert(
        header::CONTENT_LENGTH,
        header::HeaderValue::from_static("64"),
    );
    resp
}

/// The first thing every handler does: count the call as arrived, decide (and count) the
/// faults that fire for it, and apply them: latency is waited out, short-circuiting faults
/// return the response to send; the rest (job/download faults) go back to the handler.
pub async fn pre_faults(core: &Core, endpoint: &str) -> Result<Vec<FaultAction>, Response> {
    let fired = {
        let mut w = core.world();
        let fired = w.faults.take(endpoint);
        w.counters.arrived(endpoint, !fired.is_empty());
        fired
    };
    let delay: u64 = fired
        .iter()
        .map(|a| match a {
            FaultAction::Latency { millis } => *millis,
            _ => 0,
        })
        .fold(0u64, u64::saturating_add);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let mut rest = Vec::new();
    for action in fired {
        match action {
            FaultAction::Latency { .. } => {}
            FaultAction::Errcode { errcode, errmsg } => {
                let reject = match errmsg {
                    Some(m) => ApiReject::new(errcode, m),
                    None => ApiReject::code(errcode),
                };
                return Err(json_reply(core, endpoint, 200, reject.to_body()));
            }
            FaultAction::HttpStatus { status } => {
                let body = format!("<html><head><title>{status}</title></head><body><center><h1>{status}</h1></center></body></html>");
                return Err(counted_raw(
                    core,
                    endpoint,
                    status,
                    "text/html",
                    Body::from(body),
                ));
            }
            FaultAction::Reset => {
                core.world().counters.answered(endpoint, 0, None);
                return Err(reset_response());
            }
            FaultAction::InvalidJson => {
                return Err(counted_raw(
                    core,
                    endpoint,
                    200,
                    "application/json",
                    Body::from("{\"errcode\":0,\"errmsg\":\"ok\",\"job_id\":1<html>"),
                ));
            }
            other => rest.push(other),
        }
    }
    Ok(rest)
}

fn query_params(raw: Option<&str>) -> HashMap<String, String> {
    raw.map(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .into_owned()
            .collect()
    })
    .unwrap_or_default()
}

/// The checks both token endpoints share once appid and secret are known.
fn check_credentials(
    core: &Core,
    peer: SocketAddr,
    appid: &str,
    secret: &str,
) -> Result<(), ApiReject> {
    let w = core.world();
    let app = w
        .cfg
        .apps
        .iter()
        .find(|a| a.appid == appid)
        .ok_or_else(|| ApiReject::code(40013))?;
    if let Some(list) = &app.ip_whitelist {
        let ip = peer.ip().to_string();
        if !list.contains(&ip) {
            return Err(ApiReject::new(
                40164,
                format!("invalid ip {ip} ipv6 ::ffff:{ip}, not in whitelist"),
            ));
        }
    }
    if app.ip_confirmation_required {
        return Err(ApiReject::code(89503));
    }
    if app.secret_frozen {
        return Err(ApiReject::code(40243));
    }
    if app.secret != secret {
        let code = w.cfg.wrong_secret_errcode;
        return Err(if code == 40001 {
            ApiReject::new(40001, "invalid credential, invalid appsecret")
        } else {
            ApiReject::code(code)
        });
    }
    Ok(())
}

async fn token(
    State(core): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    RawQuery(raw): RawQuery,
) -> Response {
    const EP: &str = "token";
    if let Err(resp) = pre_faults(&core, EP).await {
        return resp;
    }
    let result = (|| {
        if method != Method::GET && method != Method::POST {
            return Err(ApiReject::code(43002));
        }
        let p = query_params(raw.as_deref());
        if p.get("grant_type").map(String::as_str) != Some("client_credential") {
            return Err(ApiReject::code(40002));
        }
        let appid = p
            .get("appid")
            .filter(|s| !s.is_empty())
            .ok_or_else(|| ApiReject::code(41002))?;
        let secret = p
            .get("secret")
            .filter(|s| !s.is_empty())
            .ok_or_else(|| ApiReject::code(41004))?;
        check_credentials(&core, peer, appid, secret)?;
        let now = core.now();
        let mut w = core.world();
        let (limit, offset) = (w.cfg.quotas.token_per_day, w.cfg.day_utc_offset_secs);
        if !w.quotas.take_daily(appid, "token", limit, now, offset) {
            return Err(ApiReject::new(
                45009,
                format!("reach max api daily quota limit, appid {appid}"),
            ));
        }
        let rules = w.token_rules();
        Ok(w.tokens.legacy_fetch(appid, now, &rules))
    })();
    match result {
        Ok((t, expires_in)) => json_reply(
            &core,
            EP,
            200,
            json!({"access_token": t, "expires_in": expires_in}),
        ),
        Err(r) => json_reply(&core, EP, 200, r.to_body()),
    }
}

async fn stable_token(
    State(core): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    body: Bytes,
) -> Response {
    const EP: &str = "stable_token";
    if let Err(resp) = pre_faults(&core, EP).await {
        return resp;
    }
    let result = (|| {
        if method != Method::POST {
            return Err(ApiReject::code(43002));
        }
        // A form-encoded (non-JSON) body reads as "appid missing" (reference §1.2).
        let v: Value = serde_json::from_slice(&body).map_err(|_| ApiReject::code(41002))?;
        let obj = v.as_object().ok_or_else(|| ApiReject::code(41002))?;
        let field = |k: &str| obj.get(k).and_then(Value::as_str).filter(|s| !s.is_empty());
        if field("grant_type") != Some("client_credential") {
            return Err(ApiReject::code(40002));
        }
        let appid = field("appid").ok_or_else(|| ApiReject::code(41002))?;
        let secret = field("secret").ok_or_else(|| ApiReject::code(41004))?;
        let force = match obj.get("force_refresh") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(ApiReject::invalid_args("force_refresh must be a boolean")),
        };
        check_credentials(&core, peer, appid, secret)?;
        let now = core.now();
        let mut w = core.world();
        let q = w.cfg.quotas.clone();
        let offset = w.cfg.day_utc_offset_secs;
        if !w
            .quotas
            .take_minute(appid, "stable_token_minute", q.stable_token_per_minute, now)
        {
            return Err(ApiReject::code(45011));
        }
        if !w.quotas.take_daily(
            appid,
            "stable_token_day",
            q.stable_token_per_day,
            now,
            offset,
        ) {
            return Err(ApiReject::new(
                45009,
                format!("reach max api daily quota limit, appid {appid}"),
            ));
        }
        let rules = w.token_rules();
        Ok(w.tokens.stable_fetch(appid, force, now, &rules))
    })();
    match result {
        Ok((t, expires_in)) => json_reply(
            &core,
            EP,
            200,
            json!({"access_token": t, "expires_in": expires_in}),
        ),
        Err(r) => json_reply(&core, EP, 200, r.to_body()),
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddr};
    use std::time::Duration;

    use crate::emulator::{start, EmulatorConfig, FaultAction, FaultRule};

    /// A call whose client goes away before the answer (a killed process, a timeout) is
    /// counted, with its fault: counting it only with the answer skewed the soak's fault rate.
    #[tokio::test]
    async fn a_call_cut_off_before_its_answer_is_counted() {
        let emu = start(
            EmulatorConfig::default(),
            SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        )
        .await
        .expect("start the emulator");
        emu.control().add_fault(FaultRule::next(
            "databasecollectionget",
            1,
            FaultAction::Latency { millis: 60_000 },
        ));
        let http = reqwest::Client::new();
        let sent = http
            .post(format!("{}/tcb/databasecollectionget", emu.base_url()))
            .body("{}")
            .timeout(Duration::from_millis(200))
            .send()
            .await;
        assert!(sent.is_err(), "the client gave up before the answer");
        let stats = emu
            .control()
            .counters()
            .endpoints
            .get("databasecollectionget")
            .cloned()
            .unwrap_or_default();
        assert_eq!(stats.calls, 1);
        assert_eq!(stats.faults_injected, 1);
        assert_eq!(stats.unanswered(), 1);
        // Dropped, not shut down: a graceful shutdown would wait for the delayed handler.
        drop(emu);
    }
}
