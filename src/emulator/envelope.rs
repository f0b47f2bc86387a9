//! Response envelopes: `{"errcode":0,"errmsg":"ok",...}` on success, and on failure an errcode
//! with an errmsg that carries the ` rid: xxxxxxxx-xxxxxxxx-xxxxxxxx` suffix the real API appends
//! (reference §0, §12.A.1–2). API-level errors always travel with HTTP 200.

use serde_json::{json, Map, Value};

/// An API-level rejection: becomes an HTTP 200 body with a non-zero errcode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiReject {
    pub errcode: i64,
    /// Message without the rid suffix.
    pub errmsg: String,
}

impl ApiReject {
    pub fn new(errcode: i64, errmsg: impl Into<String>) -> Self {
        ApiReject {
            errcode,
            errmsg: errmsg.into(),
        }
    }

    /// The standard message the platform uses for a code.
    pub fn code(errcode: i64) -> Self {
        ApiReject::new(errcode, standard_message(errcode))
    }

    pub fn invalid_args(detail: impl AsRef<str>) -> Self {
        ApiReject::new(40097, format!("invalid args, {}", detail.as_ref()))
    }

    pub fn missing(field: &str) -> Self {
        ApiReject::new(40101, format!("missing parameter, {field} is required"))
    }

    pub fn to_body(&self) -> Value {
        json!({"errcode": self.errcode, "errmsg": with_rid(&self.errmsg)})
    }
}

pub fn standard_message(errcode: i64) -> &'static str {
    match errcode {
        -1 => "system error",
        -1000 => "system error",
        40001 => "invalid credential, access_token is invalid or not latest",
        40002 => "invalid grant_type",
        40013 => "invalid appid",
        40014 => "invalid access_token",
        40097 => "invalid args",
        40101 => "missing parameter",
        40125 => "invalid appsecret",
        40164 => "invalid ip, not in whitelist",
        40243 => "AppSecret is frozen",
        41001 => "access_token missing",
        41002 => "appid missing",
        41004 => "appsecret missing",
        42001 => "access_token expired",
        43002 => "require POST method",
        44002 => "empty post data",
        45009 => "reach max api daily quota limit",
        45011 => "api minute-quota reach limit must slower retry next minute",
        47001 => "data format error",
        85088 => "no permission to use cloud development",
        89503 => "risky call, please wait for the admin to confirm",
        -501000 => "[InvalidParameter] invalid parameter",
        -501001 => "[InternalError] cloud system error",
        -501002 => "[RequestTimeout] cloud response timeout",
        -501003 => "[LimitExceeded] request count exceeds env quota",
        -501004 => "[LimitExceeded] concurrency exceeds env quota",
        -501007 => "[InvalidParameter] [100003] env not exists",
        -501009 => "[ResourceNotFound] target resource invalid",
        -501015 => "[LimitExceeded] daily read quota exhausted",
        -501016 => "[LimitExceeded] daily write quota exhausted",
        -502001 => "database request fail",
        -502005 => "database collection not exists",
        -502013 => "create collection fail, collection already exists",
        -503003 => "file not exists",
        _ => "error",
    }
}

/// Appends the request-id suffix the real platform puts on every non-zero errmsg.
pub fn with_rid(msg: &str) -> String {
    let n: [u32; 3] = rand::random();
    format!("{msg} rid: {:08x}-{:08x}-{:08x}", n[0], n[1], n[2])
}

/// Success body of a `/tcb/*` endpoint: the given fields plus `errcode:0, errmsg:"ok"`.
pub fn ok_body(fields: Value) -> Value {
    let mut map = Map::new();
    map.insert("errcode".into(), json!(0));
    map.insert("errmsg".into(), json!("ok"));
    if let Value::Object(extra) = fields {
        for (k, v) in extra {
            map.insert(k, v);
        }
    }
    Value::Object(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rid_suffix_shape() {
        let body = ApiReject::code(40001).to_body();
        let msg = body["errmsg"].as_str().unwrap_or_default().to_string();
        let (_, rid) = msg.split_once(" rid: ").unwrap_or(("", ""));
        let parts: Vec<&str> = rid.split('-').collect();
        assert_eq!(parts.len(), 3);
        assert!(parts
            .iter()
            .all(|p| p.len() == 8 && p.chars().all(|c| c.is_ascii_hexdigit())));
        assert_eq!(ok_body(json!({"a":1}))["errmsg"], "ok");
    }
}
