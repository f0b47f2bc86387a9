use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::stream;
use proptest::prelude::*;
use time::macros::datetime;

use super::*;
use crate::naming::snapshot_paths;

#[derive(Debug, thiserror::Error)]
#[error("connection reset by peer")]
struct FakeDownloadError;

fn paths_in(root: &Path) -> SnapshotPaths {
    snapshot_paths(
        root,
        "prod-1",
        "orders",
        datetime!(2026-12-03 02:00:00 UTC),
        100000012,
    )
    .unwrap()
}

fn chunks(data: &[u8], sizes: &[usize]) -> Vec<Result<Bytes, FakeDownloadError>> {
    let mut out = Vec::new();
    let mut rest = data;
    let mut i = 0;
    while !rest.is_empty() {
        let n = sizes
            .get(i % sizes.len().max(1))
            .copied()
            .unwrap_or(7)
            .max(1);
        let (a, b) = rest.split_at(n.min(rest.len()));
        out.push(Ok(Bytes::copy_from_slice(a)));
        rest = b;
        i += 1;
    }
    out
}

async fn write(
    data: &[u8],
    sizes: &[usize],
    root: &Path,
    opts: ArchiveOptions,
) -> Result<ArchiveSummary, ArchiveError> {
    write_snapshot(stream::iter(chunks(data, sizes)), &paths_in(root), opts).await
}

fn sha_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Everything under `root`, relative, sorted.
fn listing(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                stack.push(p.clone());
            } else {
                out.push(p.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

const SAMPLE: &[u8] = b"{\"_id\":\"a\",\"n\":1}\n{\"_id\":\"b\",\"d\":{\"$date\":\"2018-08-31T17:30:00.882Z\"}}\n\n{\"_id\":\"c\",\"s\":\"\xe8\xae\xa2\xe5\x8d\x95\"}\n";

#[tokio::test]
async fn stores_the_export_unmodified_and_verifiably() {
    let dir = tempfile::tempdir().unwrap();
    let progress_calls = Arc::new(AtomicU64::new(0));
    let last_records = Arc::new(AtomicU64::new(0));
    let (calls, last) = (progress_calls.clone(), last_records.clone());
    let opts = ArchiveOptions {
        expected_records: Some(3),
        progress: Some(Arc::new(move |p: ArchiveProgress| {
            calls.fetch_add(1, Ordering::SeqCst);
            last.store(p.records, Ordering::SeqCst);
        })),
        ..ArchiveOptions::default()
    };
    let summary = write(SAMPLE, &[5, 1, 13], dir.path(), opts).await.unwrap();
    let paths = paths_in(dir.path());
    assert_eq!(summary.records, 3);
    assert_eq!(summary.bytes_raw, SAMPLE.len() as u64);
    assert_eq!(summary.sha256_raw, sha_hex(SAMPLE));
    let stored = std::fs::read(&paths.data).unwrap();
    assert_eq!(summary.bytes_stored, stored.len() as u64);
    assert_eq!(summary.sha256_stored, sha_hex(&stored));
    assert_eq!(zstd::decode_all(&stored[..]).unwrap(), SAMPLE);
    assert!(progress_calls.load(Ordering::SeqCst) >= 1);
    assert_eq!(last_records.load(Ordering::SeqCst), 3);
    assert_eq!(
        listing(dir.path()),
        vec!["prod-1/orders/20261203T020000Z-100000012.jsonl.zst".to_string()]
    );

    let mut manifest = crate::manifest::tests::sample();
    manifest.records = summary.records;
    manifest.bytes_raw = summary.bytes_raw;
    manifest.bytes_stored = summary.bytes_stored;
    manifest.sha256_raw = summary.sha256_raw.clone();
    manifest.sha256_stored = summary.sha256_stored.clone();
    assert_eq!(
        summarize_existing(&paths.data, ExportFileType::Json).unwrap(),
        summary
    );
    let check = verify_snapshot(&paths.data, &manifest, true).unwrap();
    assert_eq!(check.data.unwrap().records, 3);
    verify_snapshot(&paths.data, &manifest, false).unwrap();

    let lines: Vec<Vec<u8>> = SnapshotLines::open(&paths.data)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0], b"{\"_id\":\"a\",\"n\":1}");

    // Tampering is detected, cheaply (stored sha) and deeply (content).
    let mut bad = manifest.clone();
    bad.records = 4;
    let err = verify_snapshot(&paths.data, &bad, true).unwrap_err();
    assert!(
        err.to_string()
            .contains("record count is 3, the manifest says 4"),
        "{err}"
    );
    assert!(verify_snapshot(&paths.data, &bad, false).is_ok());
    let mut corrupted = stored.clone();
    let middle = corrupted.len() / 2;
    corrupted[middle] ^= 0xff;
    std::fs::write(&paths.data, &corrupted).unwrap();
    let err = verify_snapshot(&paths.data, &manifest, false).unwrap_err();
    assert!(
        matches!(
            err,
            ArchiveError::Mismatch {
                what: "stored sha256",
                ..
            }
        ),
        "{err}"
    );
    assert!(inspect_snapshot(&paths.data, true, ExportFileType::Json).is_err());
}

#[tokio::test]
async fn accepts_crlf_bom_blank_lines_and_no_final_newline() {
    let dir = tempfile::tempdir().unwrap();
    let data = b"\xEF\xBB\xBF{\"a\":1}\r\n\r\n  \n{\"b\":2}";
    let s = write(data, &[3], dir.path(), ArchiveOptions::default())
        .await
        .unwrap();
    assert_eq!(s.records, 2);
}

#[tokio::test]
async fn empty_export_is_zero_records() {
    let dir = tempfile::tempdir().unwrap();
    let s = write_snapshot(
        stream::iter(Vec::<Result<Bytes, FakeDownloadError>>::new()),
        &paths_in(dir.path()),
        ArchiveOptions {
            expected_records: Some(0),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!((s.records, s.bytes_raw), (0, 0));
    assert_eq!(s.sha256_raw, sha_hex(b""));
}

async fn assert_fails_cleanly(
    data: &[u8],
    opts: ArchiveOptions,
    check: impl Fn(&ArchiveError) -> bool,
) -> ArchiveError {
    let dir = tempfile::tempdir().unwrap();
    let err = write(data, &[4, 9], dir.path(), opts).await.unwrap_err();
    assert!(check(&err), "unexpected error: {err}");
    // No temp file and nothing under the final name.
    assert_eq!(listing(dir.path()), Vec::<String>::new(), "after {err}");
    err
}

#[tokio::test]
async fn invalid_json_line_is_reported_with_its_number() {
    let err = assert_fails_cleanly(
        b"{\"a\":1}\n{\"a\":2,}\n{\"a\":3}\n",
        ArchiveOptions::default(),
        |e| matches!(e, ArchiveError::InvalidJson { line: 2, .. }),
    )
    .await;
    assert!(
        err.to_string()
            .starts_with("export line 2 is not valid JSON"),
        "{err}"
    );
    assert!(!err.to_string().contains("line 1 column"), "{err}");
}

#[tokio::test]
async fn truncated_export_is_refused() {
    assert_fails_cleanly(
        b"{\"a\":1}\n{\"a\":\"trunc",
        ArchiveOptions::default(),
        |e| matches!(e, ArchiveError::InvalidJson { line: 2, .. }),
    )
    .await;
    assert_fails_cleanly(b"[1,2]\n", ArchiveOptions::default(), |e| {
        matches!(e, ArchiveError::NotAnObject { line: 1 })
    })
    .await;
    assert_fails_cleanly(b"{\"a\":1} x\n", ArchiveOptions::default(), |e| {
        matches!(e, ArchiveError::InvalidJson { line: 1, .. })
    })
    .await;
    assert_fails_cleanly(b"{\"a\":\"\xff\"}\n", ArchiveOptions::default(), |e| {
        matches!(e, ArchiveError::InvalidJson { line: 1, .. })
    })
    .await;
}

#[tokio::test]
async fn count_mismatch_names_both_numbers() {
    let err = assert_fails_cleanly(
        SAMPLE,
        ArchiveOptions {
            expected_records: Some(5),
            ..Default::default()
        },
        |e| {
            matches!(
                e,
                ArchiveError::CountMismatch {
                    expected: 5,
                    actual: 3
                }
            )
        },
    )
    .await;
    assert_eq!(
        err.to_string(),
        "the export has 3 records but the server reported 5"
    );
    assert_fails_cleanly(
        b"",
        ArchiveOptions {
            expected_records: Some(1),
            ..Default::default()
        },
        |e| matches!(e, ArchiveError::CountMismatch { .. }),
    )
    .await;
}

#[tokio::test]
async fn overlong_line_is_refused() {
    let mut data = b"{\"a\":1}\n{\"s\":\"".to_vec();
    data.extend(std::iter::repeat_n(b'x', 100));
    data.extend(b"\"}\n");
    assert_fails_cleanly(
        &data,
        ArchiveOptions {
            max_line_bytes: 64,
            ..Default::default()
        },
        |e| matches!(e, ArchiveError::LineTooLong { line: 2, limit: 64 }),
    )
    .await;
}

#[tokio::test]
async fn download_error_removes_the_temp_file_and_keeps_the_source() {
    let dir = tempfile::tempdir().unwrap();
    let items: Vec<Result<Bytes, FakeDownloadError>> = vec![
        Ok(Bytes::from_static(b"{\"a\":1}\n{\"a\"")),
        Err(FakeDownloadError),
    ];
    let err = write_snapshot(
        stream::iter(items),
        &paths_in(dir.path()),
        ArchiveOptions::default(),
    )
    .await
    .unwrap_err();
    match &err {
        ArchiveError::Source { bytes, source } => {
            assert_eq!(*bytes, 12);
            assert!(source.downcast_ref::<FakeDownloadError>().is_some());
        }
        other => panic!("unexpected {other}"),
    }
    assert!(err.is_retryable());
    assert_eq!(listing(dir.path()), Vec::<String>::new());
}

#[tokio::test]
async fn never_overwrites_an_existing_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let paths = paths_in(dir.path());
    std::fs::create_dir_all(&paths.dir).unwrap();
    std::fs::write(&paths.data, b"precious").unwrap();
    let err = write(SAMPLE, &[8], dir.path(), ArchiveOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, ArchiveError::AlreadyExists { .. }), "{err}");
    assert!(!err.is_retryable());
    assert_eq!(std::fs::read(&paths.data).unwrap(), b"precious");
    assert_eq!(std::fs::read_dir(&paths.dir).unwrap().count(), 1);
}

#[tokio::test]
async fn publishing_refuses_a_file_that_appeared_meanwhile() {
    let dir = tempfile::tempdir().unwrap();
    let temp = fsutil::TempFile::create(dir.path(), "x").unwrap();
    let dest = dir.path().join("x");
    std::fs::write(&dest, b"other").unwrap();
    let err = temp.persist_noclobber(&dest).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
    assert_eq!(std::fs::read(&dest).unwrap(), b"other");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[tokio::test]
async fn rejects_out_of_range_zstd_level() {
    let dir = tempfile::tempdir().unwrap();
    for level in [0, 20, -1] {
        let err = write(
            SAMPLE,
            &[8],
            dir.path(),
            ArchiveOptions {
                zstd_level: level,
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
        assert!(matches!(err, ArchiveError::InvalidLevel(l) if l == level));
    }
    let s = write(
        SAMPLE,
        &[8],
        dir.path(),
        ArchiveOptions {
            zstd_level: 19,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(s.records, 3);
}

#[cfg(unix)]
#[tokio::test]
async fn files_are_0600_and_new_directories_0700() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("backups");
    write(SAMPLE, &[8], &root, ArchiveOptions::default())
        .await
        .unwrap();
    let paths = paths_in(&root);
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&paths.data), 0o600);
    assert_eq!(mode(&paths.dir), 0o700);
    assert_eq!(mode(&root.join("prod-1")), 0o700);
    assert_eq!(mode(&root), 0o700);
}

/// Records with awkward content: escapes, unicode, nested objects, long strings.
fn record_strategy() -> impl Strategy<Value = String> {
    (
        any::<u32>(),
        "[a-z\\\\\"\u{4e00}-\u{4e10} ]{0,40}",
        0usize..3,
    )
        .prop_map(|(n, s, depth)| {
            let mut v = serde_json::json!({ "_id": n.to_string(), "s": s });
            for _ in 0..depth {
                v = serde_json::json!({ "nested": v, "arr": [1, 2.5, null, true] });
            }
            v.to_string()
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Any split of the input into chunks gives the same records, and a broken line is
    /// reported with the same line number wherever the boundaries fall.
    #[test]
    fn chunk_boundaries_do_not_matter(
        records in proptest::collection::vec(record_strategy(), 0..20),
        sizes in proptest::collection::vec(1usize..40, 1..8),
        crlf in any::<bool>(),
        final_newline in any::<bool>(),
        broken in proptest::option::of(0usize..20),
    ) {
        let sep = if crlf { "\r\n" } else { "\n" };
        let mut lines = records.clone();
        let broken = broken.filter(|b| *b < lines.len());
        if let Some(b) = broken {
            lines[b].push_str(",}");
        }
        let mut text = lines.join(sep);
        if final_newline && !text.is_empty() {
            text.push_str(sep);
        }
        let data = text.as_bytes();
        let mut checker = LineChecker::new(ExportFileType::Json, 1 << 20);
        let mut result = Ok(());
        for chunk in chunks(data, &sizes) {
            result = checker.feed(&chunk.unwrap());
            if result.is_err() { break; }
        }
        if result.is_ok() {
            result = checker.finish();
        }
        match broken {
            None => {
                prop_assert!(result.is_ok(), "{:?}", result);
                prop_assert_eq!(checker.records(), records.len() as u64);
            }
            Some(b) => match result {
                Err(ArchiveError::InvalidJson { line, .. }) => prop_assert_eq!(line, b as u64 + 1),
                other => prop_assert!(false, "expected InvalidJson, got {:?}", other),
            },
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// End to end through the writer thread and the file: stored bytes decompress to the input.
    #[test]
    fn written_snapshots_round_trip(
        records in proptest::collection::vec(record_strategy(), 0..30),
        sizes in proptest::collection::vec(1usize..64, 1..6),
    ) {
        let text: String = records.iter().map(|r| format!("{r}\n")).collect();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let summary = rt
            .block_on(write(text.as_bytes(), &sizes, dir.path(), ArchiveOptions {
                expected_records: Some(records.len() as u64),
                ..Default::default()
            }))
            .unwrap();
        let stored = std::fs::read(paths_in(dir.path()).data).unwrap();
        prop_assert_eq!(zstd::decode_all(&stored[..]).unwrap(), text.as_bytes());
        prop_assert_eq!(summary.sha256_raw, sha_hex(text.as_bytes()));
    }
}

#[cfg(target_os = "linux")]
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// A 200 MiB export (generated on the fly, never held in memory) leaves the peak RSS flat.
/// The measurement runs in a child process (this test binary, running only
/// `large_export_child`) so that tests running in parallel cannot disturb the peak RSS.
/// Size can be overridden with TCB_ARCHIVE_BIG_MIB.
#[cfg(target_os = "linux")]
#[test]
fn large_export_keeps_memory_flat() {
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new(exe)
        .args([
            "--exact",
            "archive::tests::large_export_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("TCB_ARCHIVE_CHILD", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("1 passed"), "child did not run:\n{stdout}");
}

#[cfg(target_os = "linux")]
#[test]
#[ignore = "run in its own process by large_export_keeps_memory_flat"]
fn large_export_child() {
    if std::env::var_os("TCB_ARCHIVE_CHILD").is_none() {
        return;
    }
    let mib: u64 = std::env::var("TCB_ARCHIVE_BIG_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let target = mib * 1024 * 1024;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let rss_before = status_kib("VmRSS:");

    let record_len = 200u64;
    let total_records = target / record_len;
    let chunk_records = 300u64;
    let source = stream::unfold(0u64, move |next| async move {
        if next >= total_records {
            return None;
        }
        let end = (next + chunk_records).min(total_records);
        let mut chunk = Vec::with_capacity(((end - next) * record_len) as usize);
        for i in next..end {
            let line = format!("{{\"_id\":\"{i:032x}\",\"n\":{i},\"pad\":\"");
            chunk.extend_from_slice(line.as_bytes());
            let pad = record_len as usize - line.len() - 3;
            chunk.extend(std::iter::repeat_n(b'a' + (i % 26) as u8, pad));
            chunk.extend_from_slice(b"\"}\n");
        }
        Some((Ok::<_, FakeDownloadError>(Bytes::from(chunk)), end))
    });
    let dir = tempfile::tempdir().unwrap();
    let summary = rt
        .block_on(write_snapshot(
            source,
            &paths_in(dir.path()),
            ArchiveOptions {
                zstd_level: 3,
                expected_records: Some(total_records),
                ..Default::default()
            },
        ))
        .unwrap();
    assert_eq!(summary.bytes_raw, total_records * record_len);
    let peak = status_kib("VmHWM:");
    let growth_mib = peak.saturating_sub(rss_before) / 1024;
    println!("peak RSS growth: {growth_mib} MiB for a {mib} MiB export");
    assert!(
        growth_mib < 32,
        "peak RSS grew by {growth_mib} MiB for a {mib} MiB export"
    );
    // The stored file reads back completely, streaming.
    let lines = SnapshotLines::open(&paths_in(dir.path()).data)
        .unwrap()
        .try_fold(0u64, |n, line| line.map(|_| n + 1))
        .unwrap();
    assert_eq!(lines, total_records);
}

/// Dropping the write future mid-download (a cancelled task) removes the temp file and
/// publishes nothing. Dropping the runtime waits for the writer thread, so the check that
/// follows sees its final state.
#[test]
fn cancelled_write_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let (started_tx, started_rx) = std::sync::mpsc::channel::<()>();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let mut first = Vec::new();
    while first.len() < 2 * PROGRESS_EVERY_BYTES as usize {
        first.extend_from_slice(b"{\"padding\":\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"}\n");
    }
    let source =
        stream::iter(vec![Ok::<_, FakeDownloadError>(Bytes::from(first))]).chain(stream::pending());
    let task = rt.spawn(async move {
        let opts = ArchiveOptions {
            progress: Some(Arc::new(move |_| {
                let _ = started_tx.send(());
            })),
            ..Default::default()
        };
        write_snapshot(source, &paths_in(&root), opts).await
    });
    // The writer has created its temp file and processed the first chunk.
    started_rx.recv().unwrap();
    let temp_files = listing(dir.path());
    assert_eq!(temp_files.len(), 1, "{temp_files:?}");
    assert!(temp_files[0].contains("/.tmp-"), "{temp_files:?}");
    task.abort();
    drop(rt);
    assert_eq!(listing(dir.path()), Vec::<String>::new());
}
