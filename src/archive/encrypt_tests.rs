//! Encrypted snapshots: the writer never puts plaintext on disk, the stored bytes are what the
//! manifest records, and every way of reading them back fails cleanly on a wrong key, a missing
//! key, a cut or an altered byte.

use std::sync::Mutex;

use futures_util::stream;
use time::macros::datetime;

use super::encrypt::{Identities, Recipients, AGE_MAGIC};
use super::*;
use crate::naming::snapshot_paths;

/// A key pair generated for the test: (identity file text, recipients).
fn key_pair() -> (String, Recipients) {
    let (secret, public) = super::encrypt::tests::test_identity();
    let recipient = encrypt::parse_recipient(&public).unwrap();
    (
        format!("# test key\n{secret}\n"),
        Recipients::new(vec![recipient]).unwrap(),
    )
}

fn identities(text: &str) -> Identities {
    Identities::parse(text, Path::new("/test/identity.txt")).unwrap()
}

fn encrypted_paths(root: &Path) -> SnapshotPaths {
    snapshot_paths(
        root,
        "prod-1",
        "orders",
        datetime!(2026-12-03 02:00:00 UTC),
        100000012,
    )
    .unwrap()
    .with_encryption(true)
}

/// A record carrying an unmistakable plaintext marker and hard-to-compress filler, so that
/// the compressed stream is large enough to reach the file while the write is in progress.
fn export(records: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for i in 0..records {
        let filler: String = (0..96)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                char::from(b'a' + (x % 26) as u8)
            })
            .collect();
        out.extend_from_slice(
            format!(
                "{{\"_id\":\"id{i:06}\",\"secret\":\"PLAINTEXT-MARKER\",\"f\":\"{filler}\"}}\n"
            )
            .as_bytes(),
        );
    }
    out
}

fn manifest_for(summary: &ArchiveSummary, paths: &SnapshotPaths, r: &Recipients) -> Manifest {
    let mut m = crate::manifest::tests::sample();
    m.records = summary.records;
    m.bytes_raw = summary.bytes_raw;
    m.bytes_stored = summary.bytes_stored;
    m.sha256_raw = summary.sha256_raw.clone();
    m.sha256_stored = summary.sha256_stored.clone();
    m.data_file = paths.data_file_name();
    m.encryption = Some(ManifestEncryption::age(r));
    m
}

async fn write_encrypted(
    data: &[u8],
    root: &Path,
    recipients: &Recipients,
    progress: Option<ProgressCallback>,
) -> (SnapshotPaths, ArchiveSummary) {
    let paths = encrypted_paths(root);
    let chunks: Vec<Result<Bytes, std::io::Error>> = data
        .chunks(7919)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let opts = ArchiveOptions {
        encryption: Some(Arc::new(recipients.clone())),
        progress,
        ..ArchiveOptions::default()
    };
    let summary = write_snapshot(stream::iter(chunks), &paths, opts)
        .await
        .expect("encrypted snapshot written");
    (paths, summary)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn no_plaintext_ever_reaches_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let (_, recipients) = key_pair();
    // ~2.6 MB raw. The temp file is looked at from inside the writer, while it is written.
    let data = export(20_000);
    let seen: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let dir_path = encrypted_paths(dir.path()).dir;
    let observer = seen.clone();
    let progress: ProgressCallback = Arc::new(move |_p| {
        let Ok(entries) = std::fs::read_dir(&dir_path) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(crate::naming::TEMP_PREFIX) {
                if let Ok(bytes) = std::fs::read(e.path()) {
                    observer.lock().unwrap().push(bytes);
                }
            }
        }
    });
    let (paths, summary) = write_encrypted(&data, dir.path(), &recipients, Some(progress)).await;

    let snapshots = seen.lock().unwrap();
    // Some observations caught the temp file with content already flushed to it.
    let non_empty: Vec<&Vec<u8>> = snapshots.iter().filter(|b| !b.is_empty()).collect();
    assert!(
        non_empty.len() >= 2,
        "the temp file was observed with content {} times",
        non_empty.len()
    );
    for bytes in &non_empty {
        assert!(
            bytes.starts_with(AGE_MAGIC),
            "temp file starts with {:?}",
            &bytes[..bytes.len().min(24)]
        );
        assert!(!contains(bytes, b"PLAINTEXT-MARKER"));
        assert!(
            !contains(bytes, &[0x28, 0xb5, 0x2f, 0xfd]),
            "a zstd frame header"
        );
    }
    let stored = std::fs::read(&paths.data).unwrap();
    assert!(stored.starts_with(AGE_MAGIC));
    assert!(!contains(&stored, b"PLAINTEXT-MARKER"));
    assert!(paths.data.to_string_lossy().ends_with(".jsonl.zst.age"));
    // The summary describes the ciphertext (stored) and the export (raw).
    assert_eq!(summary.sha256_stored, hex::encode(Sha256::digest(&stored)));
    assert_eq!(summary.bytes_stored, stored.len() as u64);
    assert_eq!(summary.sha256_raw, hex::encode(Sha256::digest(&data)));
    assert_eq!(summary.records, 20_000);
    // Only the published file is left.
    let names: Vec<_> = std::fs::read_dir(&paths.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, [paths.data_file_name()]);
}

#[tokio::test]
async fn encrypted_snapshot_reads_back_with_the_identity_only() {
    let dir = tempfile::tempdir().unwrap();
    let (key, recipients) = key_pair();
    let (other_key, _) = key_pair();
    let data = export(300);
    let (paths, summary) = write_encrypted(&data, dir.path(), &recipients, None).await;
    let m = manifest_for(&summary, &paths, &recipients);
    m.validate(Path::new("/m.json")).unwrap();
    let ids = identities(&key);

    // The cheap check needs no key.
    let cheap = verify_snapshot(&paths.data, &m, false).unwrap();
    assert_eq!(cheap.sha256_stored, summary.sha256_stored);
    // Reading the data needs one, and says how to give it.
    let err = verify_snapshot(&paths.data, &m, true).unwrap_err();
    assert!(matches!(err, ArchiveError::NeedsIdentity { .. }), "{err}");
    assert!(err.to_string().contains("--identity"), "{err}");
    // The wrong key names the identity file and the recipients.
    let err =
        verify_snapshot_with(&paths.data, &m, true, Some(&identities(&other_key))).unwrap_err();
    assert!(matches!(err, ArchiveError::WrongIdentity { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("/test/identity.txt") && text.contains(&recipients.to_strings()[0]),
        "{text}"
    );
    // The right key: content, count and raw sha256 all agree.
    let full = verify_snapshot_with(&paths.data, &m, true, Some(&ids)).unwrap();
    assert_eq!(full.data.unwrap().records, 300);
    let lines: Vec<Vec<u8>> = SnapshotLines::open_snapshot(&paths.data, &m, Some(&ids))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(lines.len(), 300);
    let mut rejoined = lines.join(&b'\n');
    rejoined.push(b'\n');
    assert_eq!(rejoined, data);
    let mut plain = Vec::new();
    SnapshotReader::open(&paths.data, &m, Some(&ids))
        .unwrap()
        .read_to_end(&mut plain)
        .unwrap();
    assert_eq!(plain, data);
}

/// Every way of reading an altered file back: an error, never a panic, never a success.
fn assert_unreadable(path: &Path, m: &Manifest, ids: &Identities, what: &str) {
    let verify = verify_snapshot_with(path, m, true, Some(ids));
    assert!(verify.is_err(), "{what}: verify passed");
    let lines: Result<Vec<_>, _> =
        SnapshotLines::open_snapshot(path, m, Some(ids)).and_then(|l| l.collect());
    let mut plain = Vec::new();
    let read = SnapshotReader::open(path, m, Some(ids))
        .map_err(|e| e.to_string())
        .and_then(|mut r| r.read_to_end(&mut plain).map_err(|e| e.to_string()));
    assert!(
        lines.is_err() || read.is_err(),
        "{what}: the content read back without error"
    );
    if let Err(e) = read {
        assert!(
            e.contains("age") || e.contains("truncated") || e.contains("zstd"),
            "{what}: {e}"
        );
    }
}

#[tokio::test]
async fn truncated_or_altered_ciphertext_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let (key, recipients) = key_pair();
    let ids = identities(&key);
    // Several 64 KiB age chunks.
    let data = export(6_000);
    let (paths, summary) = write_encrypted(&data, dir.path(), &recipients, None).await;
    let m = manifest_for(&summary, &paths, &recipients);
    let good = std::fs::read(&paths.data).unwrap();
    let header_len = good
        .windows(4)
        .position(|w| w == b"\n---")
        .map(|p| p + 1 + good[p + 1..].iter().position(|&b| b == b'\n').unwrap() + 1)
        .unwrap();
    let body = header_len + 16; // the payload nonce
    let chunk = 64 * 1024 + 16;
    assert!(good.len() > body + 2 * chunk, "needs several chunks");
    let target = dir.path().join("damaged.jsonl.zst.age");
    let mut cases: Vec<(String, Vec<u8>)> = vec![
        ("empty".into(), Vec::new()),
        ("inside the header".into(), good[..header_len / 2].to_vec()),
        ("after the header".into(), good[..header_len].to_vec()),
        ("after the nonce".into(), good[..body].to_vec()),
        ("at a chunk boundary".into(), good[..body + chunk].to_vec()),
        ("mid chunk".into(), good[..body + chunk + 1000].to_vec()),
        ("last byte".into(), good[..good.len() - 1].to_vec()),
    ];
    for pos in [
        10,
        header_len - 5,
        body + 100,
        body + chunk + 7,
        good.len() - 3,
    ] {
        let mut bad = good.clone();
        bad[pos] ^= 0x01;
        cases.push((format!("bit flipped at {pos}"), bad));
    }
    let mut extended = good.clone();
    extended.extend_from_slice(b"appended");
    cases.push(("bytes appended".into(), extended));
    for (what, bytes) in cases {
        std::fs::write(&target, &bytes).unwrap();
        assert_unreadable(&target, &m, &ids, &what);
    }
    // A cut in the body is reported as such.
    std::fs::write(&target, &good[..body + chunk]).unwrap();
    let err = verify_snapshot_with(&target, &m, true, Some(&ids))
        .unwrap_err()
        .to_string();
    assert!(err.contains("truncated"), "{err}");
    // And the original still reads.
    assert!(verify_snapshot_with(&paths.data, &m, true, Some(&ids)).is_ok());
}

#[tokio::test]
async fn a_plain_file_labelled_encrypted_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (key, recipients) = key_pair();
    let plain_paths = encrypted_paths(dir.path()).with_encryption(false);
    let data = export(10);
    let chunks = vec![Ok::<_, std::io::Error>(Bytes::from(data))];
    let summary = write_snapshot(
        stream::iter(chunks),
        &plain_paths,
        ArchiveOptions::default(),
    )
    .await
    .unwrap();
    let m = manifest_for(&summary, &plain_paths, &recipients);
    let err = verify_snapshot_with(&plain_paths.data, &m, true, Some(&identities(&key)))
        .unwrap_err()
        .to_string();
    assert!(err.contains("age header"), "{err}");
}
