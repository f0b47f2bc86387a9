//! Streaming snapshot writer and verifier.
//!
//! [`write_snapshot`] turns an export download (a stream of byte chunks) into a durable,
//! verified data file: every line is parsed as JSON and counted, sha256 is computed over the raw
//! export and over the stored bytes, the export is compressed with zstd *unmodified* (so it can
//! be re-imported as is) into a hidden temp file beside its final name, fsynced, published
//! without ever replacing an existing file, and the directory is fsynced. On any error, or if
//! the future is dropped, the temp file is removed: a file under a snapshot name is always
//! complete. The CPU and file work runs on a blocking thread fed through a bounded channel, so
//! memory stays flat whatever the size of the export.
//!
//! With [`ArchiveOptions::encryption`] set, the zstd stream is encrypted with age before it
//! reaches the temp file (see [`encrypt`]): no plaintext byte is ever written to disk, and the
//! stored sha256 is the ciphertext's.
//!
//! [`verify_snapshot`] re-checks a stored file against its manifest, and [`SnapshotLines`] /
//! [`SnapshotReader`] stream the content of a stored snapshot back (for restore and checks),
//! decrypting it with an identity when the manifest says it is encrypted.

pub mod encrypt;
pub mod fsutil;
mod lines;

use std::fmt;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::manifest::{ExportFileType, Manifest, ManifestEncryption};
use crate::naming::SnapshotPaths;
use encrypt::{Identities, Recipients, StoredWriter};
use lines::LineChecker;

/// Default longest accepted line (one record) of an export.
pub const DEFAULT_MAX_LINE_BYTES: usize = 64 * 1024 * 1024;
/// Default zstd level: fast, and already a good ratio on JSON.
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;
/// zstd levels accepted (levels above 19 need very large windows and memory).
pub const ZSTD_LEVELS: std::ops::RangeInclusive<i32> = 1..=19;

/// Chunks in flight between the download and the writer thread; with typical 8–64 KiB chunks
/// this keeps a few hundred KiB buffered at most.
const CHANNEL_CAPACITY: usize = 16;
/// How often (in raw bytes) the progress callback is called.
const PROGRESS_EVERY_BYTES: u64 = 256 * 1024;
const IO_BUFFER: usize = 128 * 1024;

/// Progress of one snapshot write, reported from the writer thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ArchiveProgress {
    pub bytes_raw: u64,
    pub records: u64,
}

/// Called with the progress so far (roughly every 256 KiB, and once at the end).
pub type ProgressCallback = Arc<dyn Fn(ArchiveProgress) + Send + Sync>;

/// How to write a snapshot.
#[derive(Clone)]
pub struct ArchiveOptions {
    pub zstd_level: i32,
    /// The record count the server reported (`record_success`); a different count is an error.
    pub expected_records: Option<u64>,
    pub max_line_bytes: usize,
    pub file_type: ExportFileType,
    pub progress: Option<ProgressCallback>,
    /// Encrypt the stored bytes to these age recipients (`paths.data` should then carry the
    /// encrypted suffix, see [`SnapshotPaths::with_encryption`]).
    pub encryption: Option<Arc<Recipients>>,
}

impl Default for ArchiveOptions {
    fn default() -> Self {
        ArchiveOptions {
            zstd_level: DEFAULT_ZSTD_LEVEL,
            expected_records: None,
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
            file_type: ExportFileType::Json,
            progress: None,
            encryption: None,
        }
    }
}

impl fmt::Debug for ArchiveOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ArchiveOptions")
            .field("zstd_level", &self.zstd_level)
            .field("expected_records", &self.expected_records)
            .field("max_line_bytes", &self.max_line_bytes)
            .field("file_type", &self.file_type)
            .field("progress", &self.progress.is_some())
            .field("encryption", &self.encryption)
            .finish()
    }
}

/// What was stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ArchiveSummary {
    pub bytes_raw: u64,
    pub bytes_stored: u64,
    pub records: u64,
    /// Lowercase hex.
    pub sha256_raw: String,
    /// Lowercase hex.
    pub sha256_stored: String,
}

/// Why a snapshot could not be written or verified.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The download stream failed; `source` is the stream's own error (downcast it to tell an
    /// expired URL from a network error).
    #[error("export download failed after {bytes} bytes: {source}")]
    Source {
        bytes: u64,
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    #[error("export line {line} is not valid JSON: {message}")]
    InvalidJson { line: u64, message: String },
    #[error("export line {line} is not a JSON object (each line must be one record)")]
    NotAnObject { line: u64 },
    #[error("export line {line} is longer than {limit} bytes")]
    LineTooLong { line: u64, limit: usize },
    #[error("the export has {actual} records but the server reported {expected}")]
    CountMismatch { expected: u64, actual: u64 },
    #[error("{path} already exists; refusing to overwrite an existing snapshot")]
    AlreadyExists { path: PathBuf },
    #[error("zstd level {0} is out of range (1 to 19)")]
    InvalidLevel(i32),
    #[error("{path}: cannot {action}: {source}")]
    Io {
        path: PathBuf,
        action: &'static str,
        source: io::Error,
    },
    #[error("{path} is corrupt: {message}")]
    Corrupt { path: PathBuf, message: String },
    #[error(
        "{path} does not match its manifest: {what} is {actual}, the manifest says {expected}"
    )]
    Mismatch {
        path: PathBuf,
        what: &'static str,
        expected: String,
        actual: String,
    },
    #[error("snapshot writer thread failed: {0}")]
    Worker(String),
    #[error(
        "{path} is encrypted (age): reading its data needs the identity file; set encryption.identity_file in the config or pass --identity FILE"
    )]
    NeedsIdentity { path: PathBuf },
    #[error(
        "{path}: the identity file {identity_file} holds none of the keys this snapshot was encrypted to ({recipients})"
    )]
    WrongIdentity {
        path: PathBuf,
        identity_file: PathBuf,
        recipients: String,
    },
}

impl ArchiveError {
    /// Whether fetching the export again may succeed. Content errors count as retryable too: a
    /// corrupt or truncated download looks exactly like them, and a retry budget bounds the rest.
    pub fn is_retryable(&self) -> bool {
        !matches!(
            self,
            ArchiveError::AlreadyExists { .. } | ArchiveError::InvalidLevel(_)
        )
    }
}

enum Message {
    Chunk(Bytes),
    /// The stream ended normally. A channel closed without it means "abort".
    Finish,
}

/// Writes the export `stream` to `paths.data` (see the module docs). The destination
/// directory is created (0700) if needed; `paths.data` must not exist yet.
pub async fn write_snapshot<S, E>(
    stream: S,
    paths: &SnapshotPaths,
    opts: ArchiveOptions,
) -> Result<ArchiveSummary, ArchiveError>
where
    S: Stream<Item = Result<Bytes, E>>,
    E: std::error::Error + Send + Sync + 'static,
{
    if !ZSTD_LEVELS.contains(&opts.zstd_level) {
        return Err(ArchiveError::InvalidLevel(opts.zstd_level));
    }
    let (tx, rx) = mpsc::channel::<Message>(CHANNEL_CAPACITY);
    let dir = paths.dir.clone();
    let dest = paths.data.clone();
    let worker = tokio::task::spawn_blocking(move || write_blocking(rx, &dir, &dest, &opts));

    let mut stream = std::pin::pin!(stream);
    let mut received: u64 = 0;
    let mut source_error = None;
    while let Some(item) = stream.next().await {
        match item {
            Ok(chunk) => {
                received += chunk.len() as u64;
                if tx.send(Message::Chunk(chunk)).await.is_err() {
                    break; // the writer failed; its error is reported below
                }
            }
            Err(e) => {
                source_error = Some(e);
                break;
            }
        }
    }
    if source_error.is_none() {
        // Fails only if the writer already stopped with an error, reported below.
        let _ = tx.send(Message::Finish).await;
    }
    drop(tx);
    let outcome = worker
        .await
        .map_err(|e| ArchiveError::Worker(e.to_string()))?;
    match source_error {
        Some(e) => Err(ArchiveError::Source {
            bytes: received,
            source: Box::new(e),
        }),
        None => outcome,
    }
}

/// Counts and hashes whatever passes through it.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        let written = buf.get(..n).unwrap_or(buf);
        self.hasher.update(written);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn write_blocking(
    mut rx: mpsc::Receiver<Message>,
    dir: &Path,
    dest: &Path,
    opts: &ArchiveOptions,
) -> Result<ArchiveSummary, ArchiveError> {
    let io_err = |path: &Path, action| {
        let path = path.to_path_buf();
        move |source| ArchiveError::Io {
            path,
            action,
            source,
        }
    };
    fsutil::create_private_dir_all(dir).map_err(io_err(dir, "create directory"))?;
    if std::fs::symlink_metadata(dest).is_ok() {
        return Err(ArchiveError::AlreadyExists {
            path: dest.to_path_buf(),
        });
    }
    let final_name = dest
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("snapshot");
    let temp =
        fsutil::TempFile::create(dir, final_name).map_err(io_err(dir, "create temp file"))?;
    let temp_path = temp.path().to_path_buf();
    let write_err = |source| ArchiveError::Io {
        path: temp_path.clone(),
        action: "write temp file",
        source,
    };

    let file_sink = HashingWriter {
        inner: BufWriter::with_capacity(IO_BUFFER, temp.file()),
        hasher: Sha256::new(),
        bytes: 0,
    };
    // Hashing sits below encryption: the stored sha256 is that of the bytes on disk.
    let sink = StoredWriter::new(file_sink, opts.encryption.as_deref())
        .map_err(io_err(&temp_path, "start age encryption"))?;
    let mut encoder = zstd::stream::write::Encoder::new(sink, opts.zstd_level)
        .map_err(io_err(&temp_path, "start zstd"))?;
    encoder
        .include_checksum(true)
        .map_err(io_err(&temp_path, "configure zstd"))?;
    let mut checker = LineChecker::new(opts.file_type, opts.max_line_bytes);
    let mut raw_hasher = Sha256::new();
    let mut bytes_raw: u64 = 0;
    let mut next_progress = PROGRESS_EVERY_BYTES;
    let report = |bytes_raw, records| {
        if let Some(progress) = &opts.progress {
            progress(ArchiveProgress { bytes_raw, records });
        }
    };

    loop {
        match rx.blocking_recv() {
            Some(Message::Chunk(chunk)) => {
                checker.feed(&chunk)?;
                raw_hasher.update(&chunk);
                encoder.write_all(&chunk).map_err(&write_err)?;
                crate::faultpoint::hit("download.mid_stream");
                bytes_raw += chunk.len() as u64;
                if bytes_raw >= next_progress {
                    report(bytes_raw, checker.records());
                    next_progress = bytes_raw + PROGRESS_EVERY_BYTES;
                }
            }
            Some(Message::Finish) => break,
            // The download failed or the task was cancelled: drop the temp file.
            None => return Err(ArchiveError::Worker("input aborted".into())),
        }
    }
    checker.finish()?;
    let records = checker.records();
    if let Some(expected) = opts.expected_records {
        if expected != records {
            return Err(ArchiveError::CountMismatch {
                expected,
                actual: records,
            });
        }
    }
    let (hasher, bytes_stored) = {
        let mut sink = encoder
            .finish()
            .and_then(StoredWriter::finish)
            .map_err(&write_err)?;
        sink.flush().map_err(&write_err)?;
        (sink.hasher, sink.bytes)
    };
    temp.file()
        .sync_all()
        .map_err(io_err(&temp_path, "fsync temp file"))?;
    crate::faultpoint::hit("archive.before_rename");
    temp.persist_noclobber(dest).map_err(|e| {
        if e.kind() == io::ErrorKind::AlreadyExists {
            ArchiveError::AlreadyExists {
                path: dest.to_path_buf(),
            }
        } else {
            ArchiveError::Io {
                path: dest.to_path_buf(),
                action: "move the temp file into place",
                source: e,
            }
        }
    })?;
    crate::faultpoint::hit("archive.after_rename");
    // The collection and env directories may be new too: their own entries must survive a
    // crash as well, so sync up to the destination root.
    for d in dir.ancestors().take(3) {
        if d.as_os_str().is_empty() {
            break;
        }
        fsutil::sync_dir(d).map_err(io_err(d, "fsync directory"))?;
    }
    report(bytes_raw, records);
    Ok(ArchiveSummary {
        bytes_raw,
        bytes_stored,
        records,
        sha256_raw: hex::encode(raw_hasher.finalize()),
        sha256_stored: hex::encode(hasher.finalize()),
    })
}

/// Counts and hashes whatever is read through it.
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(buf.get(..n).unwrap_or_default());
        self.bytes += n as u64;
        Ok(n)
    }
}

/// What a stored snapshot file contains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotCheck {
    pub bytes_stored: u64,
    pub sha256_stored: String,
    /// Present when the data was decompressed and parsed.
    pub data: Option<DataCheck>,
}

/// The decompressed content of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataCheck {
    pub bytes_raw: u64,
    pub sha256_raw: String,
    pub records: u64,
}

/// Hashes a stored (unencrypted) snapshot and, with `read_data`, decompresses it, checks
/// every line and counts the records — in one pass, with flat memory.
pub fn inspect_snapshot(
    path: &Path,
    read_data: bool,
    file_type: ExportFileType,
) -> Result<SnapshotCheck, ArchiveError> {
    inspect_stored(path, read_data, file_type, None, None)
}

/// [`inspect_snapshot`] for a file that may be encrypted (`encryption` from its manifest);
/// reading the data of an encrypted file needs `identities`, hashing it does not.
fn inspect_stored(
    path: &Path,
    read_data: bool,
    file_type: ExportFileType,
    encryption: Option<&ManifestEncryption>,
    identities: Option<&Identities>,
) -> Result<SnapshotCheck, ArchiveError> {
    let file = File::open(path).map_err(|source| ArchiveError::Io {
        path: path.to_path_buf(),
        action: "open",
        source,
    })?;
    let mut reader = HashingReader {
        inner: io::BufReader::with_capacity(IO_BUFFER, file),
        hasher: Sha256::new(),
        bytes: 0,
    };
    let read_err = |source| ArchiveError::Io {
        path: path.to_path_buf(),
        action: "read",
        source,
    };
    let data = if read_data {
        let corrupt = |message: String| ArchiveError::Corrupt {
            path: path.to_path_buf(),
            message,
        };
        let mut content =
            SnapshotReader::from_reader(Box::new(&mut reader), path, encryption, identities)?;
        let mut checker = LineChecker::new(file_type, DEFAULT_MAX_LINE_BYTES);
        let mut raw_hasher = Sha256::new();
        let mut bytes_raw = 0u64;
        let mut buf = vec![0u8; IO_BUFFER];
        loop {
            let n = match content.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(corrupt(e.to_string())),
            };
            let chunk = buf.get(..n).unwrap_or_default();
            checker.feed(chunk).map_err(|e| corrupt(e.to_string()))?;
            raw_hasher.update(chunk);
            bytes_raw += n as u64;
        }
        checker.finish().map_err(|e| corrupt(e.to_string()))?;
        drop(content);
        Some(DataCheck {
            bytes_raw,
            sha256_raw: hex::encode(raw_hasher.finalize()),
            records: checker.records(),
        })
    } else {
        None
    };
    // Hash whatever follows the zstd frame too (or everything, without read_data).
    io::copy(&mut reader, &mut io::sink()).map_err(read_err)?;
    Ok(SnapshotCheck {
        bytes_stored: reader.bytes,
        sha256_stored: hex::encode(reader.hasher.finalize()),
        data,
    })
}

/// The summary of a snapshot file that is already stored (read completely). For resuming after
/// a crash between publishing the data file and recording it: instead of downloading again
/// (which would fail with [`ArchiveError::AlreadyExists`]), check the existing file's record
/// count against the server's and record it.
pub fn summarize_existing(
    path: &Path,
    file_type: ExportFileType,
) -> Result<ArchiveSummary, ArchiveError> {
    let check = inspect_snapshot(path, true, file_type)?;
    let data = check.data.ok_or_else(|| ArchiveError::Corrupt {
        path: path.to_path_buf(),
        message: "content was not read".into(),
    })?;
    Ok(ArchiveSummary {
        bytes_raw: data.bytes_raw,
        bytes_stored: check.bytes_stored,
        records: data.records,
        sha256_raw: data.sha256_raw,
        sha256_stored: check.sha256_stored,
    })
}

/// Checks the snapshot file at `path` against `manifest`: size and sha256 of the stored file,
/// and with `read_data` also the raw size, raw sha256 and record count. An encrypted snapshot's
/// data cannot be read this way: use [`verify_snapshot_with`] and an identity.
pub fn verify_snapshot(
    path: &Path,
    manifest: &Manifest,
    read_data: bool,
) -> Result<SnapshotCheck, ArchiveError> {
    verify_snapshot_with(path, manifest, read_data, None)
}

/// [`verify_snapshot`], decrypting with `identities` when the manifest says the file is
/// encrypted and `read_data` is set. Without `read_data` no identity is needed.
pub fn verify_snapshot_with(
    path: &Path,
    manifest: &Manifest,
    read_data: bool,
    identities: Option<&Identities>,
) -> Result<SnapshotCheck, ArchiveError> {
    let check = inspect_stored(
        path,
        read_data,
        manifest.file_type,
        manifest.encryption.as_ref(),
        identities,
    )?;
    let mismatch = |what, expected: String, actual: String| {
        if expected == actual {
            Ok(())
        } else {
            Err(ArchiveError::Mismatch {
                path: path.to_path_buf(),
                what,
                expected,
                actual,
            })
        }
    };
    mismatch(
        "stored size",
        manifest.bytes_stored.to_string(),
        check.bytes_stored.to_string(),
    )?;
    mismatch(
        "stored sha256",
        manifest.sha256_stored.clone(),
        check.sha256_stored.clone(),
    )?;
    if let Some(data) = &check.data {
        mismatch(
            "record count",
            manifest.records.to_string(),
            data.records.to_string(),
        )?;
        mismatch(
            "raw size",
            manifest.bytes_raw.to_string(),
            data.bytes_raw.to_string(),
        )?;
        mismatch(
            "raw sha256",
            manifest.sha256_raw.clone(),
            data.sha256_raw.clone(),
        )?;
    }
    Ok(check)
}

/// The decompressed (and, for an encrypted snapshot, decrypted) content of a stored snapshot
/// file, as a plain reader with flat memory. At the end of the zstd stream it reads the rest of
/// the stored stream too, so an encrypted file's final chunk is authenticated (a file cut at a
/// chunk boundary fails instead of ending early). Errors say whether decryption or
/// decompression failed.
pub struct SnapshotReader<'a> {
    decoder: zstd::stream::read::Decoder<'static, io::BufReader<Box<dyn Read + Send + 'a>>>,
    encrypted: bool,
    drained: bool,
}

impl<'a> SnapshotReader<'a> {
    /// Opens the data file at `path` as described by `manifest`.
    pub fn open(
        path: &Path,
        manifest: &Manifest,
        identities: Option<&Identities>,
    ) -> Result<SnapshotReader<'static>, ArchiveError> {
        let file = File::open(path).map_err(|source| ArchiveError::Io {
            path: path.to_path_buf(),
            action: "open",
            source,
        })?;
        let file = io::BufReader::with_capacity(IO_BUFFER, file);
        SnapshotReader::from_reader(
            Box::new(file),
            path,
            manifest.encryption.as_ref(),
            identities,
        )
    }

    fn from_reader(
        stored: Box<dyn Read + Send + 'a>,
        path: &Path,
        encryption: Option<&ManifestEncryption>,
        identities: Option<&Identities>,
    ) -> Result<SnapshotReader<'a>, ArchiveError> {
        let compressed: Box<dyn Read + Send + 'a> = match encryption {
            None => stored,
            Some(e) => Box::new(encrypt::decrypting_reader(
                stored,
                path,
                identities,
                &e.recipients,
            )?),
        };
        let decoder =
            zstd::stream::read::Decoder::new(compressed).map_err(|source| ArchiveError::Io {
                path: path.to_path_buf(),
                action: "start zstd",
                source,
            })?;
        Ok(SnapshotReader {
            decoder,
            encrypted: encryption.is_some(),
            drained: false,
        })
    }

    fn describe(&self, e: io::Error) -> io::Error {
        // age reports a failed authentication as InvalidData and a cut as UnexpectedEof; under
        // it, the zstd stream cannot be damaged without age noticing first.
        let age_failure = self.encrypted
            && matches!(
                e.kind(),
                io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof
            );
        if age_failure {
            io::Error::new(
                e.kind(),
                format!("age: decryption failed ({e}): the file was altered or truncated"),
            )
        } else {
            io::Error::new(e.kind(), format!("zstd: {e}"))
        }
    }
}

impl Read for SnapshotReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.decoder.read(buf).map_err(|e| self.describe(e))?;
        if n == 0 && !buf.is_empty() && !self.drained {
            self.drained = true;
            // Authenticates the end of an age stream; for a plain file it only reads what
            // follows the frame (the stored sha256 covers that).
            io::copy(self.decoder.get_mut(), &mut io::sink()).map_err(|e| self.describe(e))?;
        }
        Ok(n)
    }
}

/// Streams the non-empty lines of a stored snapshot (each without its line break), for
/// restore and content checks. Lines longer than [`DEFAULT_MAX_LINE_BYTES`] are an error.
pub struct SnapshotLines {
    path: PathBuf,
    reader: io::BufReader<SnapshotReader<'static>>,
    line_no: u64,
    done: bool,
}

impl SnapshotLines {
    /// Opens an unencrypted snapshot file.
    pub fn open(path: &Path) -> Result<SnapshotLines, ArchiveError> {
        let file = File::open(path).map_err(|source| ArchiveError::Io {
            path: path.to_path_buf(),
            action: "open",
            source,
        })?;
        let reader = SnapshotReader::from_reader(Box::new(file), path, None, None)?;
        Ok(SnapshotLines::new(path, reader))
    }

    /// Opens the snapshot at `path` as its manifest describes it (decrypting with
    /// `identities` if it is encrypted).
    pub fn open_snapshot(
        path: &Path,
        manifest: &Manifest,
        identities: Option<&Identities>,
    ) -> Result<SnapshotLines, ArchiveError> {
        let reader = SnapshotReader::open(path, manifest, identities)?;
        Ok(SnapshotLines::new(path, reader))
    }

    fn new(path: &Path, reader: SnapshotReader<'static>) -> SnapshotLines {
        SnapshotLines {
            path: path.to_path_buf(),
            reader: io::BufReader::with_capacity(IO_BUFFER, reader),
            line_no: 0,
            done: false,
        }
    }

    fn next_line(&mut self) -> Result<Option<Vec<u8>>, ArchiveError> {
        use io::BufRead;
        loop {
            let mut line = Vec::new();
            let limit = DEFAULT_MAX_LINE_BYTES as u64 + 2;
            let n = (&mut self.reader)
                .take(limit)
                .read_until(b'\n', &mut line)
                .map_err(|e| ArchiveError::Corrupt {
                    path: self.path.clone(),
                    message: e.to_string(),
                })?;
            if n == 0 {
                return Ok(None);
            }
            self.line_no += 1;
            if line.last() == Some(&b'\n') {
                line.pop();
            } else if n as u64 == limit {
                return Err(ArchiveError::LineTooLong {
                    line: self.line_no,
                    limit: DEFAULT_MAX_LINE_BYTES,
                });
            }
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            if line.iter().all(|b| b.is_ascii_whitespace()) {
                continue;
            }
            return Ok(Some(line));
        }
    }
}

impl Iterator for SnapshotLines {
    type Item = Result<Vec<u8>, ArchiveError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.next_line() {
            Ok(Some(line)) => Some(Ok(line)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

#[cfg(test)]
mod encrypt_tests;
#[cfg(test)]
mod tests;
