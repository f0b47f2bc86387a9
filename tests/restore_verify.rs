//! `check` (files, sha256, --read-data) and `check --test-restore` against the emulator, with
//! the results recorded per snapshot.

mod restore_support;

use std::collections::HashMap;

use restore_support::*;
use tcb_backup::verify::check::record_report;
use tcb_backup::verify::test_restore::run_test_restore;
use tcb_backup::verify::{check_entries, CheckOptions, DataRead, VerificationStore};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_and_test_restore_record_their_results() {
    let emu = start_emulator().await;
    let client = client(&emu);
    seed(&emu, ENV, "orders", tricky_documents(60));
    seed(&emu, ENV, "users", tricky_documents(8));
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("snapshots");
    let orders = backup(&emu, &client, &root, ENV, "orders").await;
    let users = backup(&emu, &client, &root, ENV, "users").await;
    let engine = open_engine(&dir.path().join("state"), &client);
    let store = VerificationStore::new(engine.kv(VerificationStore::NAMESPACE));
    let now = time::OffsetDateTime::now_utc();

    // --read-data on intact snapshots.
    let entries = vec![orders.clone(), users.clone()];
    let report = check_entries(
        &entries,
        &HashMap::new(),
        CheckOptions {
            read: DataRead::All,
        },
    );
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(report.entries[0].records, Some(60));
    record_report(&store, &report, now).unwrap();
    let rec = store.get(&orders.id).unwrap().unwrap();
    assert_eq!(rec.last_check_ok, Some(true));
    assert_eq!(rec.last_data_verified_at, Some(now));

    // Test restore: count and sample match, the scratch collection is gone afterwards.
    let result = run_test_restore(&engine, &client, &store, &orders, 10, now)
        .await
        .unwrap();
    assert!(result.ok(), "{result:?}");
    assert_eq!(result.restored_count, 60);
    assert_eq!(result.sampled, 10);
    assert_eq!(result.drop_error, None);
    assert!(!emu
        .control()
        .collections(ENV)
        .unwrap()
        .contains(&result.scratch_collection));
    let rec = store.get(&orders.id).unwrap().unwrap();
    assert_eq!(rec.last_test_restored_at, Some(now));
    assert_eq!(rec.last_test_restore_ok, Some(true));

    // The comparison names a document that differs from the snapshot's copy.
    let mut edited = emu.control().documents(ENV, "users").unwrap();
    sort_by_id(&mut edited);
    edited[0]["title"] = serde_json::json!("changed");
    let (count, problems) =
        tcb_backup::verify::compare_restored(&client, ENV, "users", 8, &edited[..2]).await;
    assert_eq!(count, 8);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("differs"), "{problems:?}");

    // A truncated data file fails the plain check, without reading the data.
    let bytes = std::fs::read(&users.data_path).unwrap();
    std::fs::write(&users.data_path, &bytes[..bytes.len() / 2]).unwrap();
    let report = check_entries(&entries, &HashMap::new(), CheckOptions::default());
    let failures: Vec<_> = report.failures().collect();
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0].id, users.id);
    assert!(
        failures[0].error.as_ref().unwrap().contains("size"),
        "{failures:?}"
    );
}
