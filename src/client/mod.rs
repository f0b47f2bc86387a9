//! CloudBase (WeChat tcb) HTTP API client: tokens, the database/storage endpoints a backup
//! needs, streaming downloads, typed and classified errors, and credential redaction.
//!
//! One [`CloudBaseClient`] per app, cloned into every job of that app: the clones share one
//! token cache, so concurrent jobs never race each other for tokens. See `docs/client.md`.

mod config;
mod error;
mod observer;
mod redact;
mod token;
mod transport;
mod types;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use serde_json::json;
use tracing::{debug, trace};
use url::Url;

pub use config::{
    AppCredentials, ClientClock, ClientConfig, FnClock, Secret, SharedClock, SystemClock,
    TokenMode, DEFAULT_API_BASE,
};
pub use error::{
    classify_errcode, classify_http_status, classify_token_errcode, errcode_meaning, ApiError,
    ApiErrorKind, ErrorClass, TOKEN_ENDPOINT_LEGACY, TOKEN_ENDPOINT_STABLE,
};
pub use observer::{ApiCall, ApiObserver, CallOutcome};
pub use redact::{redact, register_sensitive, REDACTED};
pub use transport::{check_url, is_loopback_host};
pub use types::{
    CollectionInfo, ConflictMode, DeleteResult, Download, DownloadLink, ExportRequest, FileType,
    ImportRequest, MigrateJobInfo, MigrateStatus, Pager, QueryPage,
};

use observer::ObserverSlot;
use token::{TokenCache, TokenHandle};
use transport::{
    cos_error_fields, endpoint_url, map_reqwest, parse_envelope, read_capped, read_error_body,
    Transport, MAX_ERROR_BODY_BYTES,
};
use types::{
    AddResponse, BatchDeleteResponse, BatchDownloadResponse, CollectionGetResponse, CountResponse,
    ExportResponse, QueryInfoResponse, QueryResponse, UploadFileResponse,
};

/// Most entries per `batchdownloadfile` / `batchdeletefile` call; longer lists are split.
pub const MAX_FILES_PER_BATCH: usize = 50;

/// Page size used when listing collections.
pub const COLLECTION_PAGE_SIZE: u64 = 100;

/// Upper bound on collection pages, against servers whose `Total` lies.
const MAX_COLLECTION_PAGES: usize = 1000;

/// Endpoint names of the non-JSON transfers, for errors.
pub const ENDPOINT_COS_UPLOAD: &str = "cos-upload";
/// See [`ENDPOINT_COS_UPLOAD`].
pub const ENDPOINT_DOWNLOAD: &str = "download";

/// A CloudBase API client for one app. Cheap to clone; clones share the token cache.
#[derive(Clone, Debug)]
pub struct CloudBaseClient {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    cfg: ClientConfig,
    appid: String,
    transport: Transport,
    tokens: TokenCache,
    /// Set after construction ([`CloudBaseClient::set_observer`]); read once per call.
    observer: std::sync::RwLock<ObserverSlot>,
}

impl CloudBaseClient {
    /// A client using the system clock.
    pub fn new(cfg: ClientConfig, creds: AppCredentials) -> Result<Self, ApiError> {
        Self::with_clock(cfg, creds, Arc::new(SystemClock))
    }

    /// A client whose token expiry follows `clock` (tests use a manual clock).
    pub fn with_clock(
        cfg: ClientConfig,
        creds: AppCredentials,
        clock: SharedClock,
    ) -> Result<Self, ApiError> {
        let config_err = |msg: &str| ApiError::new("client", ApiErrorKind::Config(msg.to_owned()));
        check_url(&cfg.api_base, cfg.allow_insecure_http)
            .map_err(|k| ApiError::new("client", k))?;
        if creds.appid.trim().is_empty() {
            return Err(config_err("appid is empty"));
        }
        if creds.secret.expose().is_empty() {
            return Err(config_err("secret is empty"));
        }
        if cfg.max_json_bytes == 0 {
            return Err(config_err("max_json_bytes must be positive"));
        }
        let transport = Transport::new(&cfg)?;
        let appid = creds.appid.clone();
        Ok(CloudBaseClient {
            inner: Arc::new(Inner {
                cfg,
                appid,
                transport,
                tokens: TokenCache::new(creds, clock),
                observer: std::sync::RwLock::new(ObserverSlot::default()),
            }),
        })
    }

    /// The app this client talks for.
    pub fn appid(&self) -> &str {
        &self.inner.appid
    }

    /// The configuration the client was built with.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.cfg
    }

    /// Installs `observer` on this client and every clone of it: from now on it sees each HTTP
    /// call (see [`ApiObserver`]). Replaces an earlier observer.
    pub fn set_observer(&self, observer: Arc<dyn ApiObserver>) {
        *self
            .inner
            .observer
            .write()
            .unwrap_or_else(|p| p.into_inner()) = ObserverSlot::new(Some(observer));
    }

    fn observer(&self) -> ObserverSlot {
        self.inner
            .observer
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Makes sure a valid token is cached and returns its expiry (never the token).
    pub async fn ensure_token(&self) -> Result<SystemTime, ApiError> {
        Ok(self.token().await?.expires_at)
    }

    /// How many token endpoint calls this client has made.
    pub fn token_fetches(&self) -> u64 {
        self.inner.tokens.fetches()
    }

    async fn token(&self) -> Result<TokenHandle, ApiError> {
        self.inner
            .tokens
            .get(
                &self.inner.transport,
                &self.inner.cfg.api_base,
                &self.observer(),
            )
            .await
    }

    /// One `/tcb/<endpoint>` call, with a single token refresh + retry on 40001/40014/42001.
    async fn call<T: DeserializeOwned>(
        &self,
        endpoint: &'static str,
        body: &serde_json::Value,
    ) -> Result<T, ApiError> {
        let mut refreshed = false;
        loop {
            let handle = self.token().await?;
            match self.call_once(endpoint, body, &handle).await {
                Err(err) if !refreshed && err.class() == ErrorClass::RefreshToken => {
                    debug!(
                        endpoint,
                        errcode = err.errcode(),
                        generation = handle.generation,
                        "token rejected; refreshing once and retrying"
                    );
                    self.inner.tokens.invalidate(handle.generation);
                    refreshed = true;
                }
                other => return other,
            }
        }
    }

    async fn call_once<T: DeserializeOwned>(
        &self,
        endpoint: &'static str,
        body: &serde_json::Value,
        handle: &TokenHandle,
    ) -> Result<T, ApiError> {
        let started = Instant::now();
        let result = self.call_http(endpoint, body, handle).await;
        self.observer().record(endpoint, started, &result);
        result
    }

    async fn call_http<T: DeserializeOwned>(
        &self,
        endpoint: &'static str,
        body: &serde_json::Value,
        handle: &TokenHandle,
    ) -> Result<T, ApiError> {
        let inner = &self.inner;
        let mut url = endpoint_url(&inner.cfg.api_base, &["tcb", endpoint])
            .map_err(|k| ApiError::new(endpoint, k))?;
        url.query_pairs_mut()
            .append_pair("access_token", handle.token.expose());
        let started = Instant::now();
        trace!(endpoint, "request");
        let resp = inner
            .transport
            .api
            .post(url)
            .json(body)
            .send()
            .await
            .map_err(|e| map_reqwest(endpoint, e))?;
        let status = resp.status();
        if !status.is_success() {
            debug!(endpoint, status = status.as_u16(), "HTTP error");
            return Err(ApiError::new(
                endpoint,
                ApiErrorKind::Http {
                    status: status.as_u16(),
                },
            ));
        }
        let bytes = read_capped(endpoint, resp, inner.transport.max_json_bytes).await?;
        let result = parse_envelope::<T>(endpoint, &bytes);
        let elapsed_ms = started.elapsed().as_millis() as u64;
        match &result {
            Ok(_) => debug!(endpoint, errcode = 0, elapsed_ms, "ok"),
            Err(e) => debug!(endpoint, errcode = e.errcode(), elapsed_ms, error = %e, "failed"),
        }
        result
    }

    /// `databasemigrateexport`: starts an export job, returns its `job_id`.
    pub async fn export(&self, env: &str, req: &ExportRequest) -> Result<u64, ApiError> {
        let body = json!({
            "env": env,
            "file_path": req.file_path,
            "file_type": req.file_type.code(),
            "query": req.query,
        });
        let r: ExportResponse = self.call("databasemigrateexport", &body).await?;
        Ok(r.job_id)
    }

    /// `databasemigratequeryinfo`: status of an export or import job.
    pub async fn query_migrate_job(
        &self,
        env: &str,
        job_id: u64,
    ) -> Result<MigrateJobInfo, ApiError> {
        let body = json!({ "env": env, "job_id": job_id });
        let r: QueryInfoResponse = self.call("databasemigratequeryinfo", &body).await?;
        Ok(r.into())
    }

    /// `databasemigrateimport`: starts an import job, returns its `job_id`.
    pub async fn import(&self, env: &str, req: &ImportRequest) -> Result<u64, ApiError> {
        let body = json!({
            "env": env,
            "collection_name": req.collection_name,
            "file_path": req.file_path,
            "file_type": req.file_type.code(),
            "stop_on_error": req.stop_on_error,
            "conflict_mode": req.conflict_mode.code(),
        });
        let r: ExportResponse = self.call("databasemigrateimport", &body).await?;
        Ok(r.job_id)
    }

    /// `databasecollectionget`, all pages. Fails (instead of looping or silently truncating)
    /// when the server returns an empty or repeated page before `pager.Total` is reached.
    pub async fn list_collections(&self, env: &str) -> Result<Vec<CollectionInfo>, ApiError> {
        const EP: &str = "databasecollectionget";
        let invalid = |msg: String| ApiError::new(EP, ApiErrorKind::InvalidResponse(msg));
        let mut out: Vec<CollectionInfo> = Vec::new();
        let mut names: HashSet<String> = HashSet::new();
        let mut offset: u64 = 0;
        for _ in 0..MAX_COLLECTION_PAGES {
            let body = json!({ "env": env, "limit": COLLECTION_PAGE_SIZE, "offset": offset });
            let page: CollectionGetResponse = self.call(EP, &body).await?;
            let returned = page.collections.len() as u64;
            let mut new_names = 0u64;
            for c in page.collections {
                if names.insert(c.name.clone()) {
                    out.push(c);
                    new_names += 1;
                }
            }
            offset += returned;
            let total = page.pager.and_then(|p| p.total);
            let page_limit = page
                .pager
                .map(|p| p.limit)
                .filter(|&l| l > 0)
                .unwrap_or(COLLECTION_PAGE_SIZE);
            match total {
                Some(total) if offset >= total => return Ok(out),
                Some(total) if returned == 0 => {
                    return Err(invalid(format!(
                        "empty page at offset {offset} although pager.Total is {total}"
                    )))
                }
                Some(total) if new_names == 0 => {
                    return Err(invalid(format!(
                    "page at offset {} repeated already listed collections (pager.Total {total})",
                    offset - returned
                )))
                }
                Some(_) => {}
                None if returned < page_limit || new_names == 0 => return Ok(out),
                None => {}
            }
        }
        Err(invalid(format!(
            "more than {MAX_COLLECTION_PAGES} pages of collections; giving up"
        )))
    }

    /// `databasecollectionadd`.
    pub async fn add_collection(&self, env: &str, name: &str) -> Result<(), ApiError> {
        let body = json!({ "env": env, "collection_name": name });
        let _: serde_json::Value = self.call("databasecollectionadd", &body).await?;
        Ok(())
    }

    /// `databasecollectiondelete`.
    pub async fn delete_collection(&self, env: &str, name: &str) -> Result<(), ApiError> {
        let body = json!({ "env": env, "collection_name": name });
        let _: serde_json::Value = self.call("databasecollectiondelete", &body).await?;
        Ok(())
    }

    /// `databaseadd`: runs an SDK `add` query, returns the inserted `_id`s.
    pub async fn database_add(&self, env: &str, query: &str) -> Result<Vec<String>, ApiError> {
        let body = json!({ "env": env, "query": query });
        let r: AddResponse = self.call("databaseadd", &body).await?;
        Ok(r.id_list)
    }

    /// `databasequery`: runs an SDK `get` query; each `data` string is parsed as JSON.
    pub async fn database_query(&self, env: &str, query: &str) -> Result<QueryPage, ApiError> {
        const EP: &str = "databasequery";
        let body = json!({ "env": env, "query": query });
        let r: QueryResponse = self.call(EP, &body).await?;
        let mut data = Vec::with_capacity(r.data.len());
        for (i, doc) in r.data.iter().enumerate() {
            let value = serde_json::from_str(doc).map_err(|e| {
                ApiError::new(
                    EP,
                    ApiErrorKind::InvalidResponse(format!("data[{i}] is not a JSON document: {e}")),
                )
            })?;
            data.push(value);
        }
        Ok(QueryPage {
            pager: r.pager,
            data,
        })
    }

    /// `databasecount`.
    pub async fn database_count(&self, env: &str, query: &str) -> Result<u64, ApiError> {
        let body = json!({ "env": env, "query": query });
        let r: CountResponse = self.call("databasecount", &body).await?;
        Ok(r.count)
    }

    /// `uploadfile` + the COS multipart POST. Returns the `file_id` (`cloud://...`).
    /// `body` is streamed; `len` must be its exact length.
    pub async fn upload_file(
        &self,
        env: &str,
        path: &str,
        body: reqwest::Body,
        len: u64,
    ) -> Result<String, ApiError> {
        let req = json!({ "env": env, "path": path });
        let creds: UploadFileResponse = self.call("uploadfile", &req).await?;
        let started = Instant::now();
        let result = self.cos_post(path, creds, body, len).await;
        self.observer()
            .record(ENDPOINT_COS_UPLOAD, started, &result);
        result
    }

    /// The COS multipart POST of [`Self::upload_file`].
    async fn cos_post(
        &self,
        path: &str,
        creds: UploadFileResponse,
        body: reqwest::Body,
        len: u64,
    ) -> Result<String, ApiError> {
        register_sensitive(&creds.token);
        register_sensitive(&creds.authorization);
        let ep = ENDPOINT_COS_UPLOAD;
        let url = Url::parse(&creds.url).map_err(|e| {
            ApiError::new(
                "uploadfile",
                ApiErrorKind::InvalidResponse(format!("upload url is not a URL: {e}")),
            )
        })?;
        check_url(&url, self.inner.cfg.allow_insecure_http).map_err(|k| ApiError::new(ep, k))?;
        let file_name = path
            .rsplit('/')
            .next()
            .filter(|s| !s.is_empty())
            .unwrap_or("file")
            .to_owned();
        // Field order matters to COS: the file part must come last.
        let form = reqwest::multipart::Form::new()
            .text("key", path.to_owned())
            .text("Signature", creds.authorization.clone())
            .text("x-cos-security-token", creds.token.clone())
            .text("x-cos-meta-fileid", creds.cos_file_id.clone())
            .part(
                "file",
                reqwest::multipart::Part::stream_with_length(body, len).file_name(file_name),
            );
        debug!(endpoint = ep, bytes = len, "uploading to COS");
        let resp = self
            .inner
            .transport
            .transfer
            .post(url)
            .multipart(form)
            .send()
            .await
            .map_err(|e| map_reqwest(ep, e))?;
        let status = resp.status();
        if status.is_success() {
            debug!(endpoint = ep, status = status.as_u16(), "upload done");
            return Ok(creds.file_id);
        }
        let body = read_error_body(resp, MAX_ERROR_BODY_BYTES).await;
        let kind = match cos_error_fields(&body) {
            Some((code, message)) => ApiErrorKind::Cos {
                status: status.as_u16(),
                code,
                message,
            },
            None => ApiErrorKind::Http {
                status: status.as_u16(),
            },
        };
        let err = ApiError::new(ep, kind);
        debug!(endpoint = ep, error = %err, "upload failed");
        Err(err)
    }

    /// `batchdownloadfile`: temporary download URLs for `(fileid, max_age_seconds)` pairs, in
    /// input order. Lists longer than [`MAX_FILES_PER_BATCH`] are split into several calls.
    pub async fn batch_download_file(
        &self,
        env: &str,
        files: &[(String, u64)],
    ) -> Result<Vec<DownloadLink>, ApiError> {
        let mut out = Vec::with_capacity(files.len());
        for chunk in files.chunks(MAX_FILES_PER_BATCH) {
            let list: Vec<_> = chunk
                .iter()
                .map(|(fileid, max_age)| json!({ "fileid": fileid, "max_age": max_age }))
                .collect();
            let body = json!({ "env": env, "file_list": list });
            let r: BatchDownloadResponse = self.call("batchdownloadfile", &body).await?;
            out.extend(r.file_list.into_iter().map(DownloadLink::from));
        }
        Ok(out)
    }

    /// `batchdeletefile`: per-file results, in input order; split like `batch_download_file`.
    pub async fn batch_delete_file(
        &self,
        env: &str,
        file_ids: &[String],
    ) -> Result<Vec<DeleteResult>, ApiError> {
        let mut out = Vec::with_capacity(file_ids.len());
        for chunk in file_ids.chunks(MAX_FILES_PER_BATCH) {
            let body = json!({ "env": env, "fileid_list": chunk });
            let r: BatchDeleteResponse = self.call("batchdeletefile", &body).await?;
            out.extend(r.delete_list.into_iter().map(DeleteResult::from));
        }
        Ok(out)
    }

    /// Streams a file URL (export `file_url` or a `download_url`). 403 → `UrlExpired`,
    /// 404 → `NotFound`, other non-2xx → `Http`. The body is never buffered whole.
    pub async fn download(&self, url: &str) -> Result<Download, ApiError> {
        let started = Instant::now();
        let result = self.download_start(url).await;
        self.observer().record(ENDPOINT_DOWNLOAD, started, &result);
        result
    }

    async fn download_start(&self, url: &str) -> Result<Download, ApiError> {
        let ep = ENDPOINT_DOWNLOAD;
        let url = Url::parse(url).map_err(|e| {
            ApiError::new(ep, ApiErrorKind::InvalidResponse(format!("not a URL: {e}")))
        })?;
        check_url(&url, self.inner.cfg.allow_insecure_http).map_err(|k| ApiError::new(ep, k))?;
        let resp = self
            .inner
            .transport
            .transfer
            .get(url)
            .send()
            .await
            .map_err(|e| map_reqwest(ep, e))?;
        let status = resp.status().as_u16();
        match status {
            200..=299 => {}
            403 => {
                debug!(endpoint = ep, status, "download URL refused (expired?)");
                return Err(ApiError::new(ep, ApiErrorKind::UrlExpired));
            }
            404 => return Err(ApiError::new(ep, ApiErrorKind::NotFound)),
            _ => return Err(ApiError::new(ep, ApiErrorKind::Http { status })),
        }
        debug!(
            endpoint = ep,
            status,
            content_length = resp.content_length(),
            "download started"
        );
        let content_length = resp.content_length();
        let stream = resp
            .bytes_stream()
            .map(|chunk| chunk.map_err(|e| map_reqwest(ENDPOINT_DOWNLOAD, e)));
        Ok(Download {
            content_length,
            stream: Box::pin(stream),
        })
    }
}
