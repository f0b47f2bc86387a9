//! The manifest written beside every snapshot data file.
//!
//! A manifest describes one snapshot completely (what was exported, how many records, sizes and
//! checksums, when), so the catalog can be rebuilt from the destination tree alone. It is plain
//! JSON, written atomically (temp file, fsync, rename, fsync dir, mode 0600) and parsed strictly:
//! an unknown `format_version` or an unknown field is an error naming the file, never a guess.
//! It never contains a secret or an access token: only the fields below.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::naming::{self, NameError};

/// The manifest format this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// The version of tcb-backup recorded in manifests.
pub const TOOL_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Format of an export file (the API's `file_type`: 1 = JSON Lines, 2 = CSV).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ExportFileType {
    #[default]
    Json,
    Csv,
}

impl ExportFileType {
    /// The number the export API takes as `file_type`.
    pub fn api_code(self) -> u8 {
        match self {
            ExportFileType::Json => 1,
            ExportFileType::Csv => 2,
        }
    }
}

/// Everything known about one stored snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format_version: u32,
    pub tool_version: String,
    pub appid: String,
    pub env: String,
    pub collection: String,
    /// The export query exactly as sent.
    pub query: String,
    pub file_type: ExportFileType,
    pub export_job_id: u64,
    /// Non-empty lines (JSON records) in the export; for CSV, lines after the header.
    pub records: u64,
    /// Size of the export as downloaded.
    pub bytes_raw: u64,
    /// Size of the stored (zstd) data file.
    pub bytes_stored: u64,
    /// Lowercase hex sha256 of the export as downloaded.
    pub sha256_raw: String,
    /// Lowercase hex sha256 of the stored data file.
    pub sha256_stored: String,
    /// When the backup of this collection started (before the export was created).
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    /// When the data file was durably stored.
    #[serde(with = "time::serde::rfc3339")]
    pub finished_at: OffsetDateTime,
    /// When the export job was seen finished, if known; `export_ready_at - started_at`
    /// approximates how long the server took, which plans the first poll of the next run.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub export_ready_at: Option<OffsetDateTime>,
    /// When the export was created, written only when that was well after `started_at` (the
    /// collection waited for an export slot, or a restart came between): the export's duration
    /// then runs from here. Absent in the common case, so older versions still read the file.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub export_created_at: Option<OffsetDateTime>,
    /// File name (no directory) of the data file in the manifest's directory.
    pub data_file: String,
    /// Set when the export was byte-identical to the previous snapshot's (skip unchanged):
    /// `data_file` is then the data file that snapshot stored, shared instead of stored again,
    /// and this is that snapshot's id. `bytes_stored`/`sha256_stored` describe the shared file.
    /// Absent in the manifests of snapshots that stored their own file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_reused_from: Option<String>,
    /// Present when the data file is encrypted (then `bytes_stored` and `sha256_stored` are
    /// those of the ciphertext, and `data_file` ends in `.jsonl.zst.age`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<ManifestEncryption>,
}

/// How a snapshot's data file is encrypted. Only public information: the format and the
/// recipients (public keys) it was encrypted to, so an operator can tell which identity
/// decrypts it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestEncryption {
    /// `"age"`: the age v1 format (age-encryption.org/v1), X25519 recipients, applied to the
    /// zstd stream.
    pub format: String,
    /// The `age1…` recipients the file was encrypted to.
    pub recipients: Vec<String>,
}

impl ManifestEncryption {
    /// The encryption of a file written for `recipients`.
    pub fn age(recipients: &crate::archive::encrypt::Recipients) -> ManifestEncryption {
        ManifestEncryption {
            format: crate::archive::encrypt::AGE_FORMAT.to_string(),
            recipients: recipients.to_strings(),
        }
    }
}

/// Why a manifest could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest {path}: cannot {action}: {source}")]
    Io {
        path: PathBuf,
        action: &'static str,
        source: std::io::Error,
    },
    #[error("manifest {path}: not a valid manifest: {message}")]
    Malformed { path: PathBuf, message: String },
    #[error(
        "manifest {path}: format_version {found} is not supported (this tcb-backup reads version {FORMAT_VERSION}); upgrade tcb-backup"
    )]
    UnsupportedVersion { path: PathBuf, found: String },
    #[error("manifest {path}: {source}")]
    InvalidName { path: PathBuf, source: NameError },
    #[error("manifest {path}: field {field}: {message}")]
    InvalidField {
        path: PathBuf,
        field: &'static str,
        message: String,
    },
}

/// Largest manifest accepted; real ones are well under 4 KiB plus the query.
const MAX_MANIFEST_BYTES: u64 = 1024 * 1024;

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// What the workflow knows about a snapshot besides what the archive writer measured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    pub appid: String,
    pub env: String,
    pub collection: String,
    pub query: String,
    pub file_type: ExportFileType,
    pub export_job_id: u64,
    pub started_at: OffsetDateTime,
    pub export_ready_at: Option<OffsetDateTime>,
    pub export_created_at: Option<OffsetDateTime>,
}

impl Manifest {
    /// The manifest of a snapshot stored at `paths` (current format and tool version).
    pub fn for_snapshot(
        info: SnapshotInfo,
        summary: &crate::archive::ArchiveSummary,
        paths: &naming::SnapshotPaths,
        finished_at: OffsetDateTime,
    ) -> Manifest {
        Manifest {
            format_version: FORMAT_VERSION,
            tool_version: TOOL_VERSION.to_string(),
            appid: info.appid,
            env: info.env,
            collection: info.collection,
            query: info.query,
            file_type: info.file_type,
            export_job_id: info.export_job_id,
            records: summary.records,
            bytes_raw: summary.bytes_raw,
            bytes_stored: summary.bytes_stored,
            sha256_raw: summary.sha256_raw.clone(),
            sha256_stored: summary.sha256_stored.clone(),
            started_at: info.started_at,
            finished_at,
            export_ready_at: info.export_ready_at,
            export_created_at: info.export_created_at,
            data_file: paths.data_file_name(),
            encryption: None,
            data_reused_from: None,
        }
    }

    /// Checks the invariants that serde cannot: names, checksums, data file name, times.
    /// `path` is only used in error messages.
    pub fn validate(&self, path: &Path) -> Result<(), ManifestError> {
        let invalid = |field: &'static str, message: String| ManifestError::InvalidField {
            path: path.to_path_buf(),
            field,
            message,
        };
        if self.format_version != FORMAT_VERSION {
            return Err(ManifestError::UnsupportedVersion {
                path: path.to_path_buf(),
                found: self.format_version.to_string(),
            });
        }
        for (kind, name) in [("env id", &self.env), ("collection name", &self.collection)] {
            naming::validate_name(kind, name).map_err(|source| ManifestError::InvalidName {
                path: path.to_path_buf(),
                source,
            })?;
        }
        if self.appid.is_empty() {
            return Err(invalid("appid", "is empty".into()));
        }
        for (field, value) in [
            ("sha256_raw", &self.sha256_raw),
            ("sha256_stored", &self.sha256_stored),
        ] {
            if !is_sha256_hex(value) {
                return Err(invalid(
                    field,
                    format!("{value:?} is not 64 lowercase hex digits"),
                ));
            }
        }
        if naming::data_file_stem(&self.data_file).is_none() {
            return Err(invalid(
                "data_file",
                format!(
                    "{:?} is not a snapshot data file name (<UTC time>-<job id>{} or {})",
                    self.data_file,
                    naming::DATA_SUFFIX,
                    naming::ENCRYPTED_DATA_SUFFIX
                ),
            ));
        }
        let encrypted_name = naming::is_encrypted_data_file(&self.data_file);
        match &self.encryption {
            None if encrypted_name => {
                return Err(invalid(
                    "encryption",
                    format!(
                        "is missing but the data file {:?} is encrypted",
                        self.data_file
                    ),
                ))
            }
            None => {}
            Some(_) if !encrypted_name => {
                return Err(invalid(
                    "data_file",
                    format!(
                        "{:?} does not end in {} although the manifest says it is encrypted",
                        self.data_file,
                        naming::ENCRYPTED_DATA_SUFFIX
                    ),
                ))
            }
            Some(e) => {
                if e.format != crate::archive::encrypt::AGE_FORMAT {
                    return Err(invalid(
                        "encryption",
                        format!(
                            "format {:?} is not supported (this tcb-backup reads \"{}\")",
                            e.format,
                            crate::archive::encrypt::AGE_FORMAT
                        ),
                    ));
                }
                if e.recipients.is_empty() {
                    return Err(invalid("encryption", "lists no recipients".into()));
                }
                for r in &e.recipients {
                    crate::archive::encrypt::parse_recipient(r)
                        .map_err(|m| invalid("encryption", format!("recipient: {m}")))?;
                }
            }
        }
        if self.finished_at < self.started_at {
            return Err(invalid(
                "finished_at",
                "is earlier than started_at".to_string(),
            ));
        }
        Ok(())
    }

    /// Parses and validates manifest JSON; `path` is only used in error messages.
    pub fn from_json(bytes: &[u8], path: &Path) -> Result<Manifest, ManifestError> {
        let malformed = |message: String| ManifestError::Malformed {
            path: path.to_path_buf(),
            message,
        };
        // The version decides how to read the rest, so look at it before the strict parse:
        // a newer manifest should say "upgrade", not "unknown field".
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| malformed(e.to_string()))?;
        let Some(object) = value.as_object() else {
            return Err(malformed("not a JSON object".into()));
        };
        match object.get("format_version") {
            None => return Err(malformed("missing field `format_version`".into())),
            Some(v) if v.as_u64() != Some(u64::from(FORMAT_VERSION)) => {
                return Err(ManifestError::UnsupportedVersion {
                    path: path.to_path_buf(),
                    found: v.to_string(),
                })
            }
            Some(_) => {}
        }
        let manifest: Manifest =
            serde_json::from_value(value).map_err(|e| malformed(e.to_string()))?;
        manifest.validate(path)?;
        Ok(manifest)
    }

    /// Pretty JSON with a trailing newline.
    pub fn to_json(&self) -> Vec<u8> {
        // Serialising plain strings, numbers and RFC 3339 times cannot fail.
        let mut out = serde_json::to_vec_pretty(self).unwrap_or_default();
        out.push(b'\n');
        out
    }

    /// True when the data file is shared with an earlier, identical snapshot.
    pub fn is_reference(&self) -> bool {
        self.data_reused_from.is_some()
    }

    /// The data file's path, given the manifest's own path.
    pub fn data_path(&self, manifest_path: &Path) -> PathBuf {
        manifest_path
            .parent()
            .unwrap_or_else(|| Path::new(""))
            .join(&self.data_file)
    }

    /// How long the server took to produce the export, if recorded: from its creation (or
    /// the collection's start, when it was created right away) until it was seen finished.
    pub fn export_duration(&self) -> Option<std::time::Duration> {
        let ready = self.export_ready_at?;
        (ready - self.export_created_at.unwrap_or(self.started_at))
            .try_into()
            .ok()
    }
}

/// Reads and validates the manifest at `path`.
pub fn read_manifest(path: &Path) -> Result<Manifest, ManifestError> {
    let io = |action, source| ManifestError::Io {
        path: path.to_path_buf(),
        action,
        source,
    };
    let meta = fs::metadata(path).map_err(|e| io("read metadata", e))?;
    if meta.len() > MAX_MANIFEST_BYTES {
        return Err(ManifestError::Malformed {
            path: path.to_path_buf(),
            message: format!(
                "{} bytes is larger than any manifest ({MAX_MANIFEST_BYTES} bytes max)",
                meta.len()
            ),
        });
    }
    let bytes = fs::read(path).map_err(|e| io("read", e))?;
    Manifest::from_json(&bytes, path)
}

/// Writes `manifest` to `path` atomically: a temp file in the same directory (0600), fsync,
/// rename over `path` (re-writing the same snapshot's manifest is harmless), fsync the directory.
/// The manifest is validated first so an invalid one is never written.
pub fn write_manifest(path: &Path, manifest: &Manifest) -> Result<(), ManifestError> {
    manifest.validate(path)?;
    let io = |action, source| ManifestError::Io {
        path: path.to_path_buf(),
        action,
        source,
    };
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let file_name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("manifest");
    let temp = crate::archive::fsutil::TempFile::create(dir, file_name)
        .map_err(|e| io("create temp file", e))?;
    let write = |temp: &crate::archive::fsutil::TempFile| -> std::io::Result<()> {
        let mut file = temp.file();
        file.write_all(&manifest.to_json())?;
        file.sync_all()
    };
    write(&temp).map_err(|e| io("write temp file", e))?;
    crate::faultpoint::hit("manifest.before_rename");
    temp.persist_replacing(path)
        .map_err(|e| io("rename temp file into place", e))?;
    crate::archive::fsutil::sync_dir(dir).map_err(|e| io("fsync directory", e))?;
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use time::macros::datetime;

    pub(crate) fn sample() -> Manifest {
        Manifest {
            format_version: FORMAT_VERSION,
            tool_version: TOOL_VERSION.into(),
            appid: "wx0123456789abcdef".into(),
            env: "prod-1a2b3c".into(),
            collection: "orders".into(),
            query: "db.collection(\"orders\").get()".into(),
            file_type: ExportFileType::Json,
            export_job_id: 100000012,
            records: 3,
            bytes_raw: 120,
            bytes_stored: 80,
            sha256_raw: "a".repeat(64),
            sha256_stored: "b".repeat(64),
            started_at: datetime!(2026-12-03 02:00:00 UTC),
            finished_at: datetime!(2026-12-03 02:00:09.5 UTC),
            export_ready_at: Some(datetime!(2026-12-03 02:00:07 UTC)),
            export_created_at: None,
            data_file: "20261203T020000Z-100000012.jsonl.zst".into(),
            encryption: None,
            data_reused_from: None,
        }
    }

    fn encrypted_sample() -> Manifest {
        let (_, public) = crate::archive::encrypt::tests::test_identity();
        Manifest {
            data_file: "20261203T020000Z-100000012.jsonl.zst.age".into(),
            encryption: Some(ManifestEncryption {
                format: "age".into(),
                recipients: vec![public],
            }),
            ..sample()
        }
    }

    #[test]
    fn export_duration_runs_from_the_exports_creation_when_recorded() {
        let mut m = sample();
        // Created right away: from the start (02:00:00) to seen finished (02:00:07).
        assert_eq!(m.export_duration(), Some(std::time::Duration::from_secs(7)));
        // Created after waiting for an export slot: the wait is not export time.
        m.export_created_at = Some(datetime!(2026-12-03 02:00:05 UTC));
        assert_eq!(m.export_duration(), Some(std::time::Duration::from_secs(2)));
        let text = serde_json::to_string(&m).unwrap();
        assert!(text.contains("\"export_created_at\":\"2026-12-03T02:00:05Z\""));
        // Absent when not set, so older versions (which refuse unknown fields) still read it.
        m.export_created_at = None;
        assert!(!serde_json::to_string(&m)
            .unwrap()
            .contains("export_created_at"));
        // Never a negative duration.
        m.export_created_at = Some(datetime!(2026-12-03 02:00:08 UTC));
        assert_eq!(m.export_duration(), None);
    }

    #[test]
    fn encryption_is_recorded_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("20261203T020000Z-100000012.manifest.json");
        let m = encrypted_sample();
        write_manifest(&path, &m).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        let recipient = &m.encryption.as_ref().unwrap().recipients[0];
        assert!(
            text.contains("\"encryption\"")
                && text.contains("\"format\": \"age\"")
                && text.contains(recipient.as_str()),
            "{text}"
        );
        assert_eq!(read_manifest(&path).unwrap(), m);
        // An unencrypted manifest has no `encryption` key at all (older readers accept it).
        assert!(!String::from_utf8(sample().to_json())
            .unwrap()
            .contains("encryption"));

        let p = Path::new("/d/x.manifest.json");
        let check = |m: Manifest, needle: &str| {
            let err = m.validate(p).unwrap_err().to_string();
            assert!(err.contains(needle), "expected {needle:?} in {err}");
        };
        // Name and flag must agree, both ways.
        check(
            Manifest {
                encryption: None,
                ..encrypted_sample()
            },
            "encryption: is missing",
        );
        check(
            Manifest {
                data_file: sample().data_file,
                ..encrypted_sample()
            },
            "does not end in .jsonl.zst.age",
        );
        let with = |f: &dyn Fn(&mut ManifestEncryption)| {
            let mut m = encrypted_sample();
            if let Some(e) = m.encryption.as_mut() {
                f(e);
            }
            m
        };
        check(with(&|e| e.format = "gpg".into()), "format \"gpg\"");
        check(with(&|e| e.recipients.clear()), "no recipients");
        check(
            with(&|e| e.recipients = vec!["age1nope".into()]),
            "recipient",
        );
        // Unknown fields inside `encryption` are refused like everywhere else.
        let mut v = serde_json::to_value(encrypted_sample()).unwrap();
        v["encryption"]["cipher"] = "x".into();
        let err = Manifest::from_json(v.to_string().as_bytes(), p).unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
    }

    #[test]
    fn round_trip_and_atomic_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("20261203T020000Z-100000012.manifest.json");
        let m = sample();
        write_manifest(&path, &m).unwrap();
        assert_eq!(read_manifest(&path).unwrap(), m);
        let text = fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("\"started_at\": \"2026-12-03T02:00:00Z\""),
            "{text}"
        );
        assert_eq!(m.export_duration(), Some(std::time::Duration::from_secs(7)));
        assert_eq!(m.data_path(&path), dir.path().join(&m.data_file));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        // Rewriting is allowed and leaves no temp file behind.
        write_manifest(&path, &m).unwrap();
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn unknown_format_version_is_a_clear_error() {
        let mut v = serde_json::to_value(sample()).unwrap();
        v["format_version"] = 2.into();
        v["new_field"] = "x".into();
        let err =
            Manifest::from_json(v.to_string().as_bytes(), Path::new("/d/m.json")).unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(err, ManifestError::UnsupportedVersion { .. }),
            "{text}"
        );
        assert!(
            text.contains("/d/m.json") && text.contains("upgrade"),
            "{text}"
        );
    }

    #[test]
    fn malformed_manifests_name_the_file() {
        let p = Path::new("/d/x.manifest.json");
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"{not json".to_vec(), "not a valid manifest"),
            (b"[]".to_vec(), "not a JSON object"),
            (b"{}".to_vec(), "format_version"),
            (
                {
                    let mut v = serde_json::to_value(sample()).unwrap();
                    v["extra"] = 1.into();
                    v.to_string().into_bytes()
                },
                "unknown field",
            ),
            (
                {
                    let mut v = serde_json::to_value(sample()).unwrap();
                    v.as_object_mut().unwrap().remove("records");
                    v.to_string().into_bytes()
                },
                "records",
            ),
            (
                {
                    let mut v = serde_json::to_value(sample()).unwrap();
                    v["collection"] = "../x".into();
                    v.to_string().into_bytes()
                },
                "collection name",
            ),
            (
                {
                    let mut v = serde_json::to_value(sample()).unwrap();
                    v["sha256_stored"] = "XYZ".into();
                    v.to_string().into_bytes()
                },
                "sha256_stored",
            ),
            (
                {
                    let mut v = serde_json::to_value(sample()).unwrap();
                    v["data_file"] = "../../etc/passwd".into();
                    v.to_string().into_bytes()
                },
                "data_file",
            ),
            (
                {
                    let mut v = serde_json::to_value(sample()).unwrap();
                    v["started_at"] = "yesterday".into();
                    v.to_string().into_bytes()
                },
                "not a valid manifest",
            ),
        ];
        for (bytes, needle) in cases {
            let err = Manifest::from_json(&bytes, p).unwrap_err().to_string();
            assert!(err.contains("/d/x.manifest.json"), "{err}");
            assert!(err.contains(needle), "expected {needle:?} in {err}");
        }
    }

    #[test]
    fn missing_or_huge_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.manifest.json");
        assert!(matches!(
            read_manifest(&missing),
            Err(ManifestError::Io { .. })
        ));
        let huge = dir.path().join("huge.manifest.json");
        fs::write(&huge, vec![b' '; (MAX_MANIFEST_BYTES + 1) as usize]).unwrap();
        assert!(matches!(
            read_manifest(&huge),
            Err(ManifestError::Malformed { .. })
        ));
    }

    #[test]
    fn invalid_manifest_is_never_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.manifest.json");
        let mut m = sample();
        m.env = "a/b".into();
        assert!(write_manifest(&path, &m).is_err());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
