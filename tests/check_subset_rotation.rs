//! `--read-data-subset` keeps rotating when a snapshot's data cannot be read: it rotates on the
//! last read attempt, not on the last pass, so an unreadable snapshot does not take a place
//! in every run (the daemon's `read_data_percent` uses the same selection).

mod snapshot_support;

use std::collections::BTreeSet;
use std::path::Path;

use snapshot_support::store_snapshot;
use tcb_backup::catalog::CatalogEntry;
use tcb_backup::verify::check::record_report;
use tcb_backup::verify::{check_entries, CheckOptions, DataRead, Verdict, VerificationStore};
use tcb_state::{Engine, EngineOptions};
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

async fn store(root: &Path, job: u64, at: OffsetDateTime) -> CatalogEntry {
    store_snapshot(root, "orders", job, at, format!("{{\"_id\":\"{job}\"}}\n")).await
}

#[tokio::test]
async fn subset_checks_cover_every_snapshot_with_one_unreadable() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("snapshots");
    let mut entries = Vec::new();
    for job in 1..=4u64 {
        let at = datetime!(2026-12-01 02:00 UTC) + Duration::days(job as i64);
        entries.push(store(&root, job, at).await);
    }
    // The first in id order is corrupt: its data read fails every time.
    std::fs::write(&entries[0].data_path, b"garbage").unwrap();
    let engine = Engine::open(&dir.path().join("state"), EngineOptions::default()).unwrap();
    let store = VerificationStore::new(engine.kv(VerificationStore::NAMESPACE));

    let mut read_per_run = Vec::new();
    for run in 0..3 {
        let now = datetime!(2026-12-10 00:00 UTC) + Duration::hours(run);
        let records = store.all().unwrap();
        let report = check_entries(
            &entries,
            &records,
            CheckOptions {
                read: DataRead::Subset(50.0),
            },
        );
        record_report(&store, &report, now).unwrap();
        let read: BTreeSet<String> = report
            .entries
            .iter()
            .filter(|e| e.read_data)
            .map(|e| e.id.clone())
            .collect();
        assert_eq!(read.len(), 2, "run {run}: {report:?}");
        let bad = report
            .entries
            .iter()
            .find(|e| e.id == entries[0].id)
            .unwrap();
        assert_eq!(bad.verdict, Verdict::Failed);
        read_per_run.push(read);
    }
    // Two runs at 50% read all four; the third starts over with the first run's.
    let covered: BTreeSet<String> = read_per_run[0].union(&read_per_run[1]).cloned().collect();
    let all: BTreeSet<String> = entries.iter().map(|e| e.id.clone()).collect();
    assert_eq!(covered, all);
    assert_eq!(read_per_run[2], read_per_run[0]);
    // The pass time is kept apart from the attempt time.
    let bad = store.get(&entries[0].id).unwrap().unwrap();
    assert_eq!(bad.last_data_verified_at, None);
    assert!(bad.last_data_read_at.is_some());
}
