//! The `/tcb/*` endpoints: request validation in the order of reference §12.A.3 (method, token,
//! body, fields, env, quotas), then the endpoint logic over the world (collections, records,
//! storage); the migrate-job endpoints live in `migrate`.

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::Method;
use axum::response::Response;
use serde_json::{json, Map, Value};

use super::envelope::{ok_body, ApiReject};
use super::faults::FaultAction;
use super::formats::FileType;
use super::jobs::JobScript;
use super::migrate;
use super::query::{self, set_path, Action, ParsedQuery};
use super::server::{json_reply, pre_faults, Shared};
use super::storage::{
    bucket_for_env, file_id, object_url, parse_file_id, signed_url, valid_storage_path,
    UploadTicket,
};
use super::store::{Collection, InsertError};
use super::tokens::TokenProblem;
use super::world::{Core, World};

pub const TCB_ENDPOINTS: &[&str] = &[
    "databasemigrateexport",
    "databasemigratequeryinfo",
    "databasemigrateimport",
    "databasecollectionget",
    "databasecollectionadd",
    "databasecollectiondelete",
    "databaseadd",
    "databasequery",
    "databasecount",
    "databaseupdate",
    "databasedelete",
    "uploadfile",
    "batchdownloadfile",
    "batchdeletefile",
];

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Str,
    Int,
    /// A number, or a string of digits (`file_type: '1'` is seen in the wild).
    Code,
    Bool,
    Array,
}

fn spec(endpoint: &str) -> &'static [(&'static str, Kind, bool)] {
    use Kind::*;
    match endpoint {
        "databasemigrateexport" => &[
            ("env", Str, true),
            ("file_path", Str, true),
            ("file_type", Code, true),
            ("query", Str, true),
        ],
        "databasemigratequeryinfo" => &[("env", Str, true), ("job_id", Int, true)],
        "databasemigrateimport" => &[
            ("env", Str, true),
            ("collection_name", Str, true),
            ("file_path", Str, true),
            ("file_type", Code, true),
            ("stop_on_error", Bool, true),
            ("conflict_mode", Code, true),
        ],
        "databasecollectionget" => &[
            ("env", Str, true),
            ("limit", Int, false),
            ("offset", Int, false),
        ],
        "databasecollectionadd" | "databasecollectiondelete" => {
            &[("env", Str, true), ("collection_name", Str, true)]
        }
        "uploadfile" => &[("env", Str, true), ("path", Str, true)],
        "batchdownloadfile" => &[("env", Str, true), ("file_list", Array, true)],
        "batchdeletefile" => &[("env", Str, true), ("fileid_list", Array, true)],
        _ => &[("env", Str, true), ("query", Str, true)],
    }
}

fn kind_ok(kind: Kind, v: &Value) -> bool {
    match kind {
        Kind::Str => v.is_string(),
        Kind::Int => v.as_u64().is_some(),
        Kind::Code => v.as_u64().is_some() || v.as_str().is_some_and(|s| s.parse::<u64>().is_ok()),
        Kind::Bool => v.is_boolean(),
        Kind::Array => v.is_array(),
    }
}

/// A validated request.
pub(super) struct Ctx {
    pub(super) env: String,
    pub(super) body: Map<String, Value>,
}

impl Ctx {
    pub(super) fn str(&self, k: &str) -> &str {
        self.body.get(k).and_then(Value::as_str).unwrap_or_default()
    }
    pub(super) fn int(&self, k: &str) -> Option<u64> {
        self.body.get(k).and_then(Value::as_u64)
    }
    pub(super) fn code(&self, k: &str) -> u64 {
        match self.body.get(k) {
            Some(Value::String(s)) => s.parse().unwrap_or(0),
            Some(v) => v.as_u64().unwrap_or(0),
            None => 0,
        }
    }
    pub(super) fn bool(&self, k: &str) -> bool {
        self.body.get(k).and_then(Value::as_bool).unwrap_or(false)
    }
}

fn is_read(ep: &str) -> bool {
    matches!(
        ep,
        "databasequery" | "databasecount" | "databasemigrateexport" | "databasecollectionget"
    )
}

fn is_write(ep: &str) -> bool {
    matches!(
        ep,
        "databaseadd" | "databaseupdate" | "databasedelete" | "databasemigrateimport"
    )
}

pub(super) fn validate(
    w: &mut World,
    now: f64,
    ep: &str,
    method: &Method,
    raw_query: Option<&str>,
    body: &[u8],
) -> Result<Ctx, ApiReject> {
    if method != Method::POST {
        return Err(ApiReject::code(43002));
    }
    let token = raw_query
        .and_then(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .find(|(k, _)| k == "access_token")
                .map(|(_, v)| v.into_owned())
        })
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiReject::code(41001))?;
    let appid = w.tokens.check(&token, now).map_err(|p| match p {
        TokenProblem::Invalid => ApiReject::code(w.cfg.invalid_token_errcode),
        TokenProblem::Expired => ApiReject::code(42001),
    })?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiReject::code(44002));
    }
    let v: Value = serde_json::from_slice(body).map_err(|_| ApiReject::code(47001))?;
    let Value::Object(obj) = v else {
        return Err(ApiReject::code(47001));
    };
    let spec = spec(ep);
    for (name, _, required) in spec {
        if *required && obj.get(*name).is_none_or(Value::is_null) {
            return Err(ApiReject::missing(name));
        }
    }
    for (name, kind, _) in spec {
        if let Some(v) = obj.get(*name).filter(|v| !v.is_null()) {
            if !kind_ok(*kind, v) {
                return Err(ApiReject::invalid_args(format!(
                    "{name} has the wrong type"
                )));
            }
        }
    }
    let env = obj
        .get("env")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    match w.envs.get(&env) {
        Some(e) if e.appid == appid => {
            if !e.enabled {
                return Err(ApiReject::code(85088));
            }
        }
        _ => return Err(ApiReject::code(-501007)),
    }
    let q = w.cfg.quotas.clone();
    let offset = w.cfg.day_utc_offset_secs;
    if !w.quotas.take_qps(&env, q.env_qps) {
        return Err(ApiReject::code(-501004));
    }
    if !w
        .quotas
        .take_daily(&env, "env_requests", q.env_requests_per_day, now, offset)
    {
        return Err(ApiReject::code(-501003));
    }
    if is_read(ep)
        && !w
            .quotas
            .take_daily(&env, "env_reads", q.env_reads_per_day, now, offset)
    {
        return Err(ApiReject::code(-501015));
    }
    if is_write(ep)
        && !w
            .quotas
            .take_daily(&env, "env_writes", q.env_writes_per_day, now, offset)
    {
        return Err(ApiReject::code(-501016));
    }
    Ok(Ctx { env, body: obj })
}

/// `ANY /tcb/{endpoint}`.
pub async fn endpoint(
    State(core): State<Shared>,
    Path(ep): Path<String>,
    method: Method,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Response {
    let Some(ep) = TCB_ENDPOINTS.iter().find(|e| **e == ep).copied() else {
        core.world().counters.arrived("unknown", false);
        return json_reply(
            &core,
            "unknown",
            404,
            ApiReject::new(40066, "invalid url").to_body(),
        );
    };
    let fired = match pre_faults(&core, ep).await {
        Ok(f) => f,
        Err(resp) => return resp,
    };
    let body = match handle(&core, ep, &method, raw.as_deref(), &body, &fired).await {
        Ok(v) => ok_body(v),
        Err(r) => r.to_body(),
    };
    json_reply(&core, ep, 200, body)
}

pub(super) fn job_script(fired: &[FaultAction]) -> JobScript {
    for f in fired {
        match f {
            FaultAction::StuckJob => return JobScript::Stuck,
            FaultAction::FailJob { message } => return JobScript::Fail(message.clone()),
            _ => {}
        }
    }
    JobScript::Normal
}

pub(super) fn file_type(ctx: &Ctx) -> Result<FileType, ApiReject> {
    match ctx.code("file_type") {
        1 => Ok(FileType::Json),
        2 => Ok(FileType::Csv),
        _ => Err(ApiReject::invalid_args(
            "file_type must be 1 (json) or 2 (csv)",
        )),
    }
}

pub(super) fn parse_query(ctx: &Ctx) -> Result<ParsedQuery, ApiReject> {
    query::parse(ctx.str("query")).map_err(|e| ApiReject::invalid_args(format!("query: {e}")))
}

pub(super) fn valid_collection_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('$')
        && !name
            .chars()
            .any(|c| c.is_control() || matches!(c, '/' | '\\' | ' '))
}

async fn handle(
    core: &Shared,
    ep: &str,
    method: &Method,
    raw: Option<&str>,
    body: &[u8],
    fired: &[FaultAction],
) -> Result<Value, ApiReject> {
    let now = core.now();
    match ep {
        "databasemigrateexport" => migrate::export(core, method, raw, body, fired).await,
        "databasemigrateimport" => migrate::import(core, method, raw, body, fired).await,
        _ => {
            let mut w = core.world();
            let ctx = validate(&mut w, now, ep, method, raw, body)?;
            sync_endpoint(core, &mut w, now, ep, &ctx)
        }
    }
}

fn sync_endpoint(
    core: &Core,
    w: &mut World,
    now: f64,
    ep: &str,
    ctx: &Ctx,
) -> Result<Value, ApiReject> {
    match ep {
        "databasemigratequeryinfo" => migrate::query_info(core, w, now, ctx),
        "databasecollectionget" => collection_get(w, ctx),
        "databasecollectionadd" => {
            let name = ctx.str("collection_name");
            if !valid_collection_name(name) {
                return Err(ApiReject::invalid_args("collection_name is invalid"));
            }
            let code = w.cfg.collection_exists_errcode;
            let env = env_mut(w, &ctx.env)?;
            if env.collections.contains_key(name) {
                return Err(ApiReject::code(code));
            }
            env.collections
                .insert(name.to_string(), Collection::default());
            Ok(json!({}))
        }
        "databasecollectiondelete" => {
            let env = env_mut(w, &ctx.env)?;
            match env.collections.remove(ctx.str("collection_name")) {
                Some(_) => Ok(json!({})),
                None => Err(ApiReject::code(-502005)),
            }
        }
        "databaseadd" | "databasequery" | "databasecount" | "databaseupdate" | "databasedelete" => {
            records(w, ep, ctx)
        }
        "uploadfile" => {
            let path = ctx.str("path");
            if !valid_storage_path(path) {
                return Err(ApiReject::invalid_args("path is invalid"));
            }
            let ticket = UploadTicket::issue(
                &core.signer,
                &ctx.env,
                path,
                now,
                w.cfg.upload_credential_ttl_secs,
            );
            let out = json!({
                "url": object_url(core.base(), &ticket.bucket, path),
                "token": ticket.token,
                "authorization": ticket.authorization,
                "file_id": file_id(&ctx.env, path),
                "cos_file_id": ticket.cos_file_id,
            });
            w.uploads.insert(ticket.token.clone(), ticket);
            Ok(out)
        }
        "batchdownloadfile" => batch_download(core, w, now, ctx),
        "batchdeletefile" => batch_delete(w, ctx),
        _ => Err(ApiReject::code(-1)),
    }
}

pub(super) fn env_mut<'a>(
    w: &'a mut World,
    env: &str,
) -> Result<&'a mut super::world::EnvState, ApiReject> {
    w.envs.get_mut(env).ok_or_else(|| ApiReject::code(-501007))
}

fn collection_get(w: &mut World, ctx: &Ctx) -> Result<Value, ApiReject> {
    let limit = ctx.int("limit").unwrap_or(10);
    let offset = ctx.int("offset").unwrap_or(0);
    if limit == 0 || limit > 1000 {
        return Err(ApiReject::invalid_args("limit must be between 1 and 1000"));
    }
    let env = env_mut(w, &ctx.env)?;
    let total = env.collections.len();
    let page: Vec<Value> = env
        .collections
        .iter()
        .skip(usize::try_from(offset).unwrap_or(usize::MAX))
        .take(usize::try_from(limit).unwrap_or(usize::MAX))
        .map(|(name, c)| json!({"name": name, "count": c.len(), "size": c.bytes(), "index_count": 1, "index_size": c.index_size()}))
        .collect();
    Ok(json!({"collections": page, "pager": {"Offset": offset, "Limit": limit, "Total": total}}))
}

fn records(w: &mut World, ep: &str, ctx: &Ctx) -> Result<Value, ApiReject> {
    let q = parse_query(ctx)?;
    let (default_limit, max_limit) = (w.cfg.query_default_limit, w.cfg.query_max_limit);
    let env = env_mut(w, &ctx.env)?;
    let coll = env
        .collections
        .get_mut(&q.collection)
        .ok_or_else(|| ApiReject::code(-502005))?;
    let wrong = |what: &str| {
        Err(ApiReject::invalid_args(format!(
            "query must end with {what} for {ep}"
        )))
    };
    match (ep, &q.action) {
        ("databaseadd", Some(Action::Add(items))) => {
            let mut ids = Vec::new();
            for item in items {
                let id = coll.insert(item.clone()).map_err(|e| match e {
                    InsertError::Duplicate(_) => {
                        ApiReject::new(-502001, format!("database request fail, {e}"))
                    }
                    other => ApiReject::invalid_args(other.to_string()),
                })?;
                ids.push(id);
            }
            Ok(json!({"id_list": ids}))
        }
        ("databaseadd", _) => wrong(".add({data})"),
        ("databasequery", None | Some(Action::Get)) => {
            let limit = q.limit.unwrap_or(default_limit).min(max_limit);
            let total = coll.count(&q);
            let data: Vec<String> = coll
                .select(&q, Some(limit))
                .iter()
                .map(|d| q.project(d).to_string())
                .collect();
            Ok(
                json!({"pager": {"Offset": q.skip.unwrap_or(0), "Limit": limit, "Total": total}, "data": data}),
            )
        }
        ("databasequery", _) => wrong(".get()"),
        ("databasecount", Some(Action::Count)) => Ok(json!({"count": coll.count(&q)})),
        ("databasecount", _) => wrong(".count()"),
        ("databaseupdate", Some(Action::Update(data))) => {
            if data.keys().any(|k| k == "_id") {
                return Err(ApiReject::invalid_args("_id cannot be updated"));
            }
            let hits = coll.select(&q, None);
            let mut modified = 0;
            for doc in &hits {
                let mut new = (**doc).clone();
                for (k, v) in data {
                    set_path(&mut new, k, v.clone());
                }
                if new != **doc {
                    modified += 1;
                    coll.put(new)
                        .map_err(|e| ApiReject::invalid_args(e.to_string()))?;
                }
            }
            Ok(json!({"matched": hits.len(), "modified": modified, "id": ""}))
        }
        ("databaseupdate", Some(Action::Set(data))) => {
            let Some(id) = q.doc_id.clone() else {
                return wrong(".doc(id).set({data})");
            };
            let mut doc = data.clone();
            set_path(&mut doc, "_id", Value::String(id.clone()));
            let existed = coll.get(&id).cloned();
            coll.put(doc.clone())
                .map_err(|e| ApiReject::invalid_args(e.to_string()))?;
            Ok(match existed {
                Some(old) => json!({"matched": 1, "modified": u64::from(*old != doc), "id": ""}),
                None => json!({"matched": 0, "modified": 0, "id": id}),
            })
        }
        ("databaseupdate", _) => wrong(".update({data}) or .set({data})"),
        ("databasedelete", Some(Action::Remove)) => {
            let hits = coll.select(&q, None);
            let mut deleted = 0u64;
            for doc in hits {
                if let Some(id) = doc.get("_id").and_then(Value::as_str) {
                    if coll.remove(id) {
                        deleted += 1;
                    }
                }
            }
            Ok(json!({"deleted": deleted}))
        }
        _ => wrong(".remove()"),
    }
}

// ---------------------------------------------------------------- storage

fn batch_download(core: &Core, w: &mut World, now: f64, ctx: &Ctx) -> Result<Value, ApiReject> {
    let list = ctx
        .body
        .get("file_list")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if list.len() > w.cfg.max_batch_files {
        return Err(ApiReject::invalid_args(format!(
            "file_list has more than {} entries",
            w.cfg.max_batch_files
        )));
    }
    let mut wanted = Vec::new();
    for item in &list {
        let fileid = item.get("fileid").and_then(Value::as_str);
        let max_age = item.get("max_age").and_then(Value::as_u64);
        match (fileid, max_age) {
            (Some(f), Some(m)) => wanted.push((f.to_string(), m)),
            _ => {
                return Err(ApiReject::invalid_args(
                    "file_list entries need fileid (string) and max_age (number)",
                ))
            }
        }
    }
    let env = env_mut(w, &ctx.env)?;
    let bucket = bucket_for_env(&ctx.env);
    let out: Vec<Value> = wanted
        .into_iter()
        .map(|(fid, max_age)| match parse_file_id(&fid) {
            Some((e, b, path)) if e == ctx.env && b == bucket && env.files.contains_key(&path) => {
                let expires = (now + max_age as f64).max(0.0) as u64;
                json!({"fileid": fid, "download_url": signed_url(core.base(), &core.signer, &bucket, &path, expires), "status": 0, "errmsg": "ok"})
            }
            _ => json!({"fileid": fid, "download_url": "", "status": -503003, "errmsg": "storage file not exists"}),
        })
        .collect();
    Ok(json!({"file_list": out}))
}

fn batch_delete(w: &mut World, ctx: &Ctx) -> Result<Value, ApiReject> {
    let list = ctx
        .body
        .get("fileid_list")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if list.len() > w.cfg.max_batch_files {
        return Err(ApiReject::invalid_args(format!(
            "fileid_list has more than {} entries",
            w.cfg.max_batch_files
        )));
    }
    let ids: Vec<String> = list
        .iter()
        .map(|v| v.as_str().map(str::to_string))
        .collect::<Option<_>>()
        .ok_or_else(|| ApiReject::invalid_args("fileid_list must hold strings"))?;
    let env = env_mut(w, &ctx.env)?;
    let bucket = bucket_for_env(&ctx.env);
    let out: Vec<Value> = ids
        .into_iter()
        .map(|fid| match parse_file_id(&fid) {
            Some((e, b, path))
                if e == ctx.env && b == bucket && env.files.remove(&path).is_some() =>
            {
                json!({"fileid": fid, "status": 0, "errmsg": "ok"})
            }
            _ => json!({"fileid": fid, "status": -503003, "errmsg": "storage file not exists"}),
        })
        .collect();
    Ok(json!({"delete_list": out}))
}
