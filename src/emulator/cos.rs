//! The fake COS: the multipart POST upload at the URL `uploadfile` returns (reference §7.1,
//! §12.E.17) and GET of signed, expiring object URLs (export `file_url`s and
//! `batchdownloadfile` links), streamed from disk with optional injected damage.

use std::collections::HashMap;

use axum::body::{Body, Bytes};
use axum::extract::multipart::MultipartRejection;
use axum::extract::{Multipart, Path, Query, State};
use axum::http::header;
use axum::response::Response;
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::io::ReaderStream;

use super::faults::FaultAction;
use super::server::{counted_raw, pre_faults, raw_response, Shared};
use super::storage::{bucket_for_env, StoredFile, EXPORT_BUCKET};
use super::world::Core;

fn xml_error(code: &str, message: &str, resource: &str) -> String {
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    let n: u64 = rand::random();
    format!(
        "<?xml version='1.0' encoding='utf-8' ?>\n<Error>\n\t<Code>{}</Code>\n\t<Message>{}</Message>\n\t<Resource>{}</Resource>\n\t<RequestId>{n:016x}</RequestId>\n</Error>",
        esc(code),
        esc(message),
        esc(resource)
    )
}

fn xml_reply(
    core: &Core,
    ep: &str,
    status: u16,
    code: &str,
    message: &str,
    resource: &str,
) -> Response {
    counted_raw(
        core,
        ep,
        status,
        "application/xml",
        Body::from(xml_error(code, message, resource)),
    )
}

/// COS POST Object accepts objects up to 5 GB (reference §7.1).
const MAX_OBJECT_BYTES: u64 = 5 * 1024 * 1024 * 1024;

const MALFORMED: &str = "The body of your POST request is not well-formed multipart/form-data.";

/// `POST /cos/{bucket}/{*path}`: multipart form with key, Signature, x-cos-security-token,
/// x-cos-meta-fileid and file (last).
pub async fn upload(
    State(core): State<Shared>,
    Path((bucket, path)): Path<(String, String)>,
    multipart: Result<Multipart, MultipartRejection>,
) -> Response {
    const EP: &str = "cos_upload";
    if let Err(r) = pre_faults(&core, EP).await {
        return r;
    }
    let resource = format!("{bucket}/{path}");
    let malformed = |msg: &str| xml_reply(&core, EP, 400, "MalformedPOSTRequest", msg, &resource);
    let mut mp = match multipart {
        Ok(m) => m,
        Err(_) => return malformed(MALFORMED),
    };
    let mut fields: HashMap<String, String> = HashMap::new();
    let mut stored: Option<StoredFile> = None;
    let require_last = core.world().cfg.cos_require_file_last;
    loop {
        let field = match mp.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(_) => return malformed(MALFORMED),
        };
        let name = field.name().unwrap_or_default().to_string();
        if stored.is_some() && require_last {
            return malformed("The file field must be the last field of the form.");
        }
        if name != "file" {
            let mut field = field;
            let mut text = Vec::new();
            loop {
                match field.chunk().await {
                    Ok(Some(c)) => {
                        text.extend_from_slice(&c);
                        if text.len() > 64 * 1024 {
                            return malformed("A form field is too large.");
                        }
                    }
                    Ok(None) => break,
                    Err(_) => return malformed(MALFORMED),
                }
            }
            fields.insert(name, String::from_utf8_lossy(&text).into_owned());
            continue;
        }
        let env = match check_ticket(&core, &bucket, &path, &fields) {
            Ok(env) => env,
            Err((status, code, msg)) => return xml_reply(&core, EP, status, code, &msg, &resource),
        };
        let blob = core.blobs.new_blob();
        let mut file = match tokio::fs::File::create(&blob).await {
            Ok(f) => f,
            Err(e) => {
                return xml_reply(
                    &core,
                    EP,
                    500,
                    "InternalError",
                    &format!("cannot store object: {e}"),
                    &resource,
                )
            }
        };
        let mut field = field;
        let mut size = 0u64;
        loop {
            match field.chunk().await {
                Ok(Some(c)) => {
                    size += c.len() as u64;
                    if size > MAX_OBJECT_BYTES {
                        drop(file);
                        let _ = tokio::fs::remove_file(&blob).await;
                        return xml_reply(
                            &core,
                            EP,
                            400,
                            "EntityTooLarge",
                            "Your proposed upload exceeds the maximum allowed object size.",
                            &resource,
                        );
                    }
                    if let Err(e) = file.write_all(&c).await {
                        return xml_reply(
                            &core,
                            EP,
                            500,
                            "InternalError",
                            &format!("cannot store object: {e}"),
                            &resource,
                        );
                    }
                }
                Ok(None) => break,
                Err(_) => {
                    let _ = tokio::fs::remove_file(&blob).await;
                    return malformed(MALFORMED);
                }
            }
        }
        if let Err(e) = file.flush().await.and(file.sync_all().await) {
            return xml_reply(
                &core,
                EP,
                500,
                "InternalError",
                &format!("cannot store object: {e}"),
                &resource,
            );
        }
        let _ = env;
        stored = Some(StoredFile { blob, size });
    }
    let Some(stored) = stored else {
        return malformed("The form has no file field.");
    };
    let status = {
        let mut w = core.world();
        let env = w
            .envs
            .iter_mut()
            .find(|(id, _)| bucket_for_env(id) == bucket)
            .map(|(_, e)| e);
        if let Some(env) = env {
            env.files.insert(path.clone(), stored.clone());
        }
        w.cfg.cos_success_status
    };
    let mut resp = counted_raw(&core, EP, status, "application/xml", Body::empty());
    if let Ok(v) = header::HeaderValue::from_str(&format!(
        "\"{:x}-{}\"",
        stored.size,
        stored
            .blob
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("0")
    )) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    resp
}

/// Validate the four credential fields against what `uploadfile` issued; returns the env.
fn check_ticket(
    core: &Core,
    bucket: &str,
    path: &str,
    fields: &HashMap<String, String>,
) -> Result<String, (u16, &'static str, String)> {
    let get = |k: &str| fields.get(k).map(String::as_str).filter(|s| !s.is_empty());
    let (Some(key), Some(sig), Some(token), Some(meta)) = (
        get("key"),
        get("Signature"),
        get("x-cos-security-token"),
        get("x-cos-meta-fileid"),
    ) else {
        let missing: Vec<&str> = [
            "key",
            "Signature",
            "x-cos-security-token",
            "x-cos-meta-fileid",
        ]
        .into_iter()
        .filter(|k| get(k).is_none())
        .collect();
        return Err((
            400,
            "MalformedPOSTRequest",
            format!("missing form field(s): {}", missing.join(", ")),
        ));
    };
    let now = core.now();
    let w = core.world();
    let denied = |m: &str| Err((403, "AccessDenied", m.to_string()));
    let Some(t) = w.uploads.get(token) else {
        return denied("The security token is invalid.");
    };
    if t.bucket != bucket || t.path != path || key != t.path {
        return denied("The key does not match the upload credentials.");
    }
    if sig != t.authorization {
        return denied(
            "The request signature we calculated does not match the signature you provided.",
        );
    }
    if meta != t.cos_file_id {
        return denied("x-cos-meta-fileid does not match the upload credentials.");
    }
    if now > t.expires_at {
        return denied("Request has expired");
    }
    Ok(t.env.clone())
}

/// `GET /cos/{bucket}/{*path}?sign=..&t=..`: a signed, expiring object download.
pub async fn download(
    State(core): State<Shared>,
    Path((bucket, path)): Path<(String, String)>,
    Query(params): Query<HashMap<String, String>>,
    headers: axum::http::HeaderMap,
) -> Response {
    const EP: &str = "download";
    let fired = match pre_faults(&core, EP).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let resource = format!("{bucket}/{path}");
    let deny = |msg: &str| xml_reply(&core, EP, 403, "AccessDenied", msg, &resource);
    if fired.contains(&FaultAction::ExpiredUrl) {
        return deny("Request has expired");
    }
    let expires = params.get("t").and_then(|t| t.parse::<u64>().ok());
    let sign = params.get("sign");
    let (Some(expires), Some(sign)) = (expires, sign) else {
        return deny("Access Denied.");
    };
    if *sign != core.signer.url_signature(&bucket, &path, expires) {
        return deny(
            "The request signature we calculated does not match the signature you provided.",
        );
    }
    if core.now() > expires as f64 {
        return deny("Request has expired");
    }
    let object = {
        let w = core.world();
        if bucket == EXPORT_BUCKET {
            w.export_objects.get(&path).cloned()
        } else {
            w.envs
                .iter()
                .find(|(id, _)| bucket_for_env(id) == bucket)
                .and_then(|(_, e)| e.files.get(&path).cloned())
        }
    };
    let not_found = || {
        xml_reply(
            &core,
            EP,
            404,
            "NoSuchKey",
            "The specified key does not exist.",
            &resource,
        )
    };
    let Some(object) = object.filter(|_| !fired.contains(&FaultAction::NotFound)) else {
        return not_found();
    };
    let Ok(mut file) = tokio::fs::File::open(&object.blob).await else {
        return not_found();
    };
    let total = object.size;
    let range = match headers
        .get(header::RANGE)
        .map(|v| parse_range(v.to_str().unwrap_or_default(), total))
    {
        None => None,
        Some(Some(r)) => Some(r),
        Some(None) => {
            let mut resp = xml_reply(
                &core,
                EP,
                416,
                "InvalidRange",
                "The requested range is not satisfiable.",
                &resource,
            );
            if let Ok(v) = header::HeaderValue::from_str(&format!("bytes */{total}")) {
                resp.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return resp;
        }
    };
    let (start, size) = range.unwrap_or((0, total));
    if start > 0 {
        use tokio::io::AsyncSeekExt;
        if file.seek(std::io::SeekFrom::Start(start)).await.is_err() {
            return not_found();
        }
    }
    let file = file.take(size);
    let truncate = fired.iter().find_map(|f| match f {
        FaultAction::TruncateBody { keep_bytes } => {
            Some(keep_bytes.unwrap_or(size / 2).min(size.saturating_sub(1)))
        }
        _ => None,
    });
    let corrupt = fired.contains(&FaultAction::CorruptBody);
    let body = match truncate {
        Some(keep) => {
            let head = ReaderStream::new(file.take(keep));
            // Let hyper flush the head and the partial body before the connection dies, the way
            // a transfer broken mid-way looks to a client (an immediate error could take the
            // unflushed response head down with it).
            let tail = futures_util::stream::once(async {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                Err::<Bytes, std::io::Error>(std::io::Error::other("injected truncation"))
            });
            Body::from_stream(head.chain(tail))
        }
        None if corrupt => {
            let target = size / 2;
            let mut offset = 0u64;
            let stream = ReaderStream::new(file).map(move |chunk| {
                chunk.map(|c| {
                    let start = offset;
                    offset += c.len() as u64;
                    if (start..offset).contains(&target) {
                        let mut v = c.to_vec();
                        if let Some(b) = v.get_mut(usize::try_from(target - start).unwrap_or(0)) {
                            *b ^= 0x5a;
                        }
                        Bytes::from(v)
                    } else {
                        c
                    }
                })
            });
            Body::from_stream(stream)
        }
        None => match fired.iter().find_map(|f| match f {
            FaultAction::SlowBody { millis_per_chunk } => Some(*millis_per_chunk),
            _ => None,
        }) {
            Some(delay) => {
                let stream =
                    ReaderStream::with_capacity(file, 16 * 1024).then(move |chunk| async move {
                        tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
                        chunk
                    });
                Body::from_stream(stream)
            }
            None => Body::from_stream(ReaderStream::with_capacity(file, 256 * 1024)),
        },
    };
    let status = if range.is_some() { 206 } else { 200 };
    core.world().counters.answered(EP, status, None);
    let mut resp = raw_response(status, "application/octet-stream", body);
    if let Ok(v) = header::HeaderValue::from_str(&size.to_string()) {
        resp.headers_mut().insert(header::CONTENT_LENGTH, v);
    }
    resp.headers_mut().insert(
        header::ACCEPT_RANGES,
        header::HeaderValue::from_static("bytes"),
    );
    if range.is_some() {
        let last = (start + size).saturating_sub(1);
        if let Ok(v) = header::HeaderValue::from_str(&format!("bytes {start}-{last}/{total}")) {
            resp.headers_mut().insert(header::CONTENT_RANGE, v);
        }
    }
    resp
}

/// A single `bytes=a-b` / `bytes=a-` / `bytes=-n` range → (start, length); None if unsatisfiable
/// or malformed. Public for the fuzzer (`fuzz/fuzz_targets/emulator_request.rs`).
pub fn parse_range(value: &str, total: u64) -> Option<(u64, u64)> {
    let spec = value.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    let (start, end) = if a.is_empty() {
        let n: u64 = b.parse().ok()?;
        if n == 0 {
            return None;
        }
        (total.saturating_sub(n), total.checked_sub(1)?)
    } else {
        let start: u64 = a.parse().ok()?;
        let end = if b.is_empty() {
            total.checked_sub(1)?
        } else {
            b.parse::<u64>().ok()?.min(total.checked_sub(1)?)
        };
        (start, end)
    };
    if start > end || start >= total {
        return None;
    }
    Some((start, end - start + 1))
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Some((0, 10)));
        assert_eq!(parse_range("bytes=90-", 100), Some((90, 10)));
        assert_eq!(parse_range("bytes=-5", 100), Some((95, 5)));
        assert_eq!(parse_range("bytes=50-500", 100), Some((50, 50)));
        for bad in [
            "bytes=100-",
            "bytes=5-1",
            "items=0-1",
            "bytes=0-1,3-4",
            "bytes=-0",
            "bytes=x-",
        ] {
            assert_eq!(parse_range(bad, 100), None, "{bad}");
        }
        assert_eq!(parse_range("bytes=0-", 0), None);
    }
}
