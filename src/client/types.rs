//! Request and result types of the CloudBase endpoints, plus the lenient wire shapes the
//! responses are parsed into (missing optional fields default, wrong types are errors).

use std::fmt;
use std::pin::Pin;

use bytes::Bytes;
use futures_util::Stream;
use serde::{Deserialize, Deserializer};

use super::error::ApiError;

/// Export/import file format; sent as a number on the wire.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum FileType {
    /// JSON Lines (`file_type: 1`).
    #[default]
    Json,
    /// CSV (`file_type: 2`), needs `.field({...})` in the query.
    Csv,
}

impl FileType {
    /// The wire value.
    pub fn code(self) -> u8 {
        match self {
            FileType::Json => 1,
            FileType::Csv => 2,
        }
    }
}

/// Import conflict handling; sent as a number on the wire.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum ConflictMode {
    /// `conflict_mode: 1`: always insert; duplicate `_id`s fail.
    #[default]
    Insert,
    /// `conflict_mode: 2`: update by `_id`, insert otherwise.
    Upsert,
}

impl ConflictMode {
    /// The wire value.
    pub fn code(self) -> u8 {
        match self {
            ConflictMode::Insert => 1,
            ConflictMode::Upsert => 2,
        }
    }
}

/// Body of `databasemigrateexport` (minus `env`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExportRequest {
    pub file_path: String,
    pub file_type: FileType,
    /// Database-SDK query, e.g. `db.collection("orders").get()`.
    pub query: String,
}

/// Body of `databasemigrateimport` (minus `env`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ImportRequest {
    pub collection_name: String,
    pub file_path: String,
    pub file_type: FileType,
    pub stop_on_error: bool,
    pub conflict_mode: ConflictMode,
}

/// State of a migrate (export/import) job. Serialises as the wire string.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(from = "String", into = "String")]
pub enum MigrateStatus {
    Success,
    Fail,
    /// Any other status string (`waiting`, `reading`, `writing`, `migrating`, or unknown
    /// future values), kept verbatim.
    Running(String),
}

impl MigrateStatus {
    /// Maps the wire string: only `success` and `fail` are terminal.
    pub fn from_wire(status: &str) -> Self {
        match status {
            "success" => MigrateStatus::Success,
            "fail" => MigrateStatus::Fail,
            other => MigrateStatus::Running(other.to_owned()),
        }
    }

    pub fn is_terminal(&self) -> bool {
        !matches!(self, MigrateStatus::Running(_))
    }
}

impl From<String> for MigrateStatus {
    fn from(s: String) -> Self {
        MigrateStatus::from_wire(&s)
    }
}

impl From<MigrateStatus> for String {
    fn from(s: MigrateStatus) -> Self {
        s.to_string()
    }
}

impl fmt::Display for MigrateStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MigrateStatus::Success => f.write_str("success"),
            MigrateStatus::Fail => f.write_str("fail"),
            MigrateStatus::Running(s) => f.write_str(s),
        }
    }
}

/// Result of `databasemigratequeryinfo`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MigrateJobInfo {
    pub status: MigrateStatus,
    pub record_success: u64,
    pub record_fail: u64,
    /// `err_msg` or `error_msg`, whichever the server sent non-empty (`err_msg` preferred).
    pub message: Option<String>,
    /// Download URL of an export file; `None` when absent or empty.
    pub file_url: Option<String>,
}

/// One collection from `databasecollectionget`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct CollectionInfo {
    pub name: String,
    #[serde(default, deserialize_with = "lenient_u64")]
    pub count: u64,
    #[serde(default, deserialize_with = "lenient_u64")]
    pub size: u64,
    #[serde(default, deserialize_with = "lenient_u64")]
    pub index_count: u64,
    #[serde(default, deserialize_with = "lenient_u64")]
    pub index_size: u64,
}

/// The capitalised `pager` object of list/query responses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
pub struct Pager {
    #[serde(rename = "Offset", default, deserialize_with = "lenient_u64")]
    pub offset: u64,
    #[serde(rename = "Limit", default, deserialize_with = "lenient_u64")]
    pub limit: u64,
    #[serde(rename = "Total", default, deserialize_with = "lenient_opt_u64")]
    pub total: Option<u64>,
}

/// Result of `databasequery`: the documents parsed out of their JSON strings.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryPage {
    pub pager: Option<Pager>,
    pub data: Vec<serde_json::Value>,
}

/// One entry of `batchdownloadfile`'s `file_list`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DownloadLink {
    pub fileid: String,
    /// `None` when the server sent no or an empty URL (then `status` is non-zero).
    pub download_url: Option<String>,
    /// 0 = ok; otherwise an errcode such as -503003.
    pub status: i64,
    pub errmsg: String,
}

/// One entry of `batchdeletefile`'s `delete_list`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeleteResult {
    pub fileid: String,
    /// 0 = deleted; otherwise an errcode.
    pub status: i64,
    pub errmsg: String,
}

/// A streaming file download. The body is never buffered as a whole.
pub struct Download {
    /// `Content-Length`, when the server sent one.
    pub content_length: Option<u64>,
    /// The body, chunk by chunk.
    pub stream: Pin<Box<dyn Stream<Item = Result<Bytes, ApiError>> + Send + 'static>>,
}

impl fmt::Debug for Download {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Download")
            .field("content_length", &self.content_length)
            .finish_non_exhaustive()
    }
}

// ---- wire shapes (private to the client) ----

#[derive(Debug, Deserialize)]
pub(crate) struct ExportResponse {
    #[serde(deserialize_with = "lenient_u64")]
    pub job_id: u64,
}

#[derive(Debug, Deserialize)]
pub(crate) struct QueryInfoResponse {
    pub status: String,
    #[serde(default, deserialize_with = "lenient_u64")]
    pub record_success: u64,
    #[serde(default, deserialize_with = "lenient_u64")]
    pub record_fail: u64,
    #[serde(default, deserialize_with = "lenient_opt_string")]
    pub err_msg: Option<String>,
    #[serde(default, deserialize_with = "lenient_opt_string")]
    pub error_msg: Option<String>,
    #[serde(default, deserialize_with = "lenient_opt_string")]
    pub file_url: Option<String>,
}

impl From<QueryInfoResponse> for MigrateJobInfo {
    fn from(r: QueryInfoResponse) -> Self {
        let non_empty = |s: Option<String>| s.filter(|s| !s.is_empty());
        MigrateJobInfo {
            status: MigrateStatus::from_wire(&r.status),
            record_success: r.record_success,
            record_fail: r.record_fail,
            message: non_empty(r.err_msg).or(non_empty(r.error_msg)),
            file_url: non_empty(r.file_url),
        }
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct CollectionGetResponse {
    #[serde(default)]
    pub collections: Vec<CollectionInfo>,
    #[serde(default)]
    pub pager: Option<Pager>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct AddResponse {
    pub id_list: Vec<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct QueryResponse {
    #[serde(default)]
    pub pager: Option<Pager>,
    pub data: Vec<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct CountResponse {
    #[serde(deserialize_with = "lenient_u64")]
    pub count: u64,
}

#[derive(Deserialize)]
pub(crate) struct UploadFileResponse {
    pub url: String,
    pub token: String,
    pub authorization: String,
    pub file_id: String,
    pub cos_file_id: String,
}

impl fmt::Debug for UploadFileResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UploadFileResponse")
            .field("file_id", &self.file_id)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct BatchDownloadResponse {
    pub file_list: Vec<WireDownloadLink>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct WireDownloadLink {
    #[serde(default)]
    pub fileid: String,
    #[serde(default, deserialize_with = "lenient_opt_string")]
    pub download_url: Option<String>,
    #[serde(default, deserialize_with = "lenient_i64")]
    pub status: i64,
    #[serde(default, deserialize_with = "lenient_opt_string")]
    pub errmsg: Option<String>,
}

impl From<WireDownloadLink> for DownloadLink {
    fn from(w: WireDownloadLink) -> Self {
        DownloadLink {
            fileid: w.fileid,
            download_url: w.download_url.filter(|u| !u.is_empty()),
            status: w.status,
            errmsg: w.errmsg.unwrap_or_default(),
        }
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct BatchDeleteResponse {
    pub delete_list: Vec<WireDeleteEntry>,
}

/// The reference's field table says strings, its example objects: accept both.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum WireDeleteEntry {
    Object {
        #[serde(default)]
        fileid: String,
        #[serde(default, deserialize_with = "lenient_i64")]
        status: i64,
        #[serde(default, deserialize_with = "lenient_opt_string")]
        errmsg: Option<String>,
    },
    Bare(String),
}

impl From<WireDeleteEntry> for DeleteResult {
    fn from(w: WireDeleteEntry) -> Self {
        match w {
            WireDeleteEntry::Object {
                fileid,
                status,
                errmsg,
            } => DeleteResult {
                fileid,
                status,
                errmsg: errmsg.unwrap_or_default(),
            },
            WireDeleteEntry::Bare(fileid) => DeleteResult {
                fileid,
                status: 0,
                errmsg: "ok".to_owned(),
            },
        }
    }
}

/// A token endpoint's success body.
#[derive(Deserialize)]
pub(crate) struct TokenResponse {
    pub access_token: String,
    #[serde(deserialize_with = "lenient_u64")]
    pub expires_in: u64,
}

// ---- lenient number/string parsing ----
// The reference documents numbers; a server (or proxy) that sends "123" should not break a
// backup, but anything that is not a number at all is an error.

#[derive(Deserialize)]
#[serde(untagged)]
enum NumOrString {
    U(u64),
    I(i64),
    F(f64),
    S(String),
}

fn num_to_i128<E: serde::de::Error>(v: NumOrString) -> Result<i128, E> {
    match v {
        NumOrString::U(u) => Ok(i128::from(u)),
        NumOrString::I(i) => Ok(i128::from(i)),
        NumOrString::F(f) if f.fract() == 0.0 && f.abs() < 9.0e18 => Ok(f as i128),
        NumOrString::F(f) => Err(E::custom(format!("expected an integer, got {f}"))),
        NumOrString::S(s) => s
            .trim()
            .parse::<i128>()
            .map_err(|_| E::custom("expected an integer, got a non-numeric string")),
    }
}

pub(crate) fn lenient_u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let v = num_to_i128::<D::Error>(NumOrString::deserialize(d)?)?;
    u64::try_from(v)
        .map_err(|_| serde::de::Error::custom(format!("{v} is not a non-negative integer")))
}

pub(crate) fn lenient_i64<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    let v = num_to_i128::<D::Error>(NumOrString::deserialize(d)?)?;
    i64::try_from(v).map_err(|_| serde::de::Error::custom(format!("{v} is out of range")))
}

fn lenient_opt_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let v: Option<NumOrString> = Option::deserialize(d)?;
    match v {
        None => Ok(None),
        Some(v) => {
            let v = num_to_i128::<D::Error>(v)?;
            u64::try_from(v)
                .map(Some)
                .map_err(|_| serde::de::Error::custom(format!("{v} is not a non-negative integer")))
        }
    }
}

/// `null` → `None`; a string → `Some`; anything else is an error.
fn lenient_opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Option::<String>::deserialize(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_info_accepts_either_message_field() {
        let a: QueryInfoResponse =
            serde_json::from_str(r#"{"status":"success","record_success":3,"record_fail":0,"err_msg":"done","file_url":"https://x/y"}"#).unwrap();
        let a = MigrateJobInfo::from(a);
        assert_eq!(a.status, MigrateStatus::Success);
        assert_eq!(a.message.as_deref(), Some("done"));
        let b: QueryInfoResponse = serde_json::from_str(
            r#"{"status":"reading","record_success":"0","error_msg":"导出完成.","file_url":""}"#,
        )
        .unwrap();
        let b = MigrateJobInfo::from(b);
        assert_eq!(b.status, MigrateStatus::Running("reading".into()));
        assert_eq!(b.message.as_deref(), Some("导出完成."));
        assert_eq!(b.file_url, None);
        let c: QueryInfoResponse =
            serde_json::from_str(r#"{"status":"weird","err_msg":"","error_msg":"x"}"#).unwrap();
        assert_eq!(MigrateJobInfo::from(c).message.as_deref(), Some("x"));
    }

    #[test]
    fn wrong_types_are_errors() {
        assert!(serde_json::from_str::<ExportResponse>(r#"{"job_id":"abc"}"#).is_err());
        assert!(serde_json::from_str::<ExportResponse>(r#"{"job_id":-5}"#).is_err());
        assert!(serde_json::from_str::<ExportResponse>(r#"{"job_id":1.5}"#).is_err());
        assert!(serde_json::from_str::<ExportResponse>(r#"{}"#).is_err());
        assert_eq!(
            serde_json::from_str::<ExportResponse>(r#"{"job_id":100071736}"#)
                .unwrap()
                .job_id,
            100071736
        );
        assert!(serde_json::from_str::<QueryInfoResponse>(r#"{"status":5}"#).is_err());
    }

    #[test]
    fn delete_list_accepts_objects_and_strings() {
        let r: BatchDeleteResponse = serde_json::from_str(
            r#"{"delete_list":[{"fileid":"cloud://a","status":0,"errmsg":"ok"},"cloud://b",{"fileid":"cloud://c","status":-503003,"errmsg":"nf"}]}"#,
        )
        .unwrap();
        let v: Vec<DeleteResult> = r.delete_list.into_iter().map(Into::into).collect();
        assert_eq!(v[1].fileid, "cloud://b");
        assert_eq!(v[2].status, -503003);
    }

    #[test]
    fn migrate_status_round_trips_as_its_wire_string() {
        let s = serde_json::to_string(&MigrateStatus::Running("reading".into())).unwrap();
        assert_eq!(s, "\"reading\"");
        let back: MigrateStatus = serde_json::from_str("\"success\"").unwrap();
        assert_eq!(back, MigrateStatus::Success);
    }

    #[test]
    fn pager_uses_capitalised_keys() {
        let p: Pager = serde_json::from_str(r#"{"Offset":0,"Limit":10,"Total":2}"#).unwrap();
        assert_eq!(p.total, Some(2));
        assert_eq!(p.limit, 10);
    }
}
