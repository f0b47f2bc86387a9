//! Backup → restore → export again gives the same documents (dates, GeoPoints, nested objects,
//! unicode), the never-overwrite rule, and restore into another env.

mod restore_support;

use restore_support::*;
use tcb_backup::client::ConflictMode;
use tcb_backup::restore::{ImportOutcome, RestorePlan, RestoreRequest, RestoreWorkflow};
use tcb_state::{JobStatus, SubmitOptions};

async fn run_restore(
    engine: &tcb_state::Engine,
    entry: &tcb_backup::catalog::CatalogEntry,
    req: &RestoreRequest,
) -> (JobStatus, Option<ImportOutcome>, Option<String>) {
    let plan = RestorePlan::new(entry, req, time::OffsetDateTime::now_utc()).expect("plan");
    let id = engine
        .submit::<RestoreWorkflow>(plan.into_state(entry), SubmitOptions::label("restore"))
        .expect("submit");
    engine.run_until_idle().await.expect("run");
    let view = engine.job(id).expect("job").expect("exists");
    let outcome = view
        .output
        .map(|o| serde_json::from_value(o).expect("outcome"));
    (view.summary.status, outcome, view.summary.last_error)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_restore_export_gives_identical_documents() {
    let emu = start_emulator().await;
    let client = client(&emu);
    seed(&emu, ENV, "orders", tricky_documents(120));
    let dir = tempfile::tempdir().unwrap();
    let entry = backup(&emu, &client, &dir.path().join("snapshots"), ENV, "orders").await;
    assert_eq!(entry.manifest.records, 120);
    let engine = open_engine(&dir.path().join("state"), &client);

    let (status, outcome, err) = run_restore(&engine, &entry, &RestoreRequest::default()).await;
    assert_eq!(status, JobStatus::Succeeded, "{err:?}");
    let outcome = outcome.expect("output");
    assert!(
        outcome.collection.starts_with("orders_restored_"),
        "{}",
        outcome.collection
    );
    assert_eq!((outcome.record_success, outcome.record_fail), (120, 0));
    assert!(!outcome.restarted_import);
    assert_eq!(outcome.cleanup_error, None);

    // Export the restored collection again: the same documents, value for value.
    let (original, _) = export_records(&emu, &client, ENV, "orders").await;
    let (restored, _) = export_records(&emu, &client, ENV, &outcome.collection).await;
    let original = parse_lines(&original);
    let restored = parse_lines(&restored);
    assert_eq!(original.len(), 120);
    assert_eq!(original, restored);
    assert!(restored[7]["title"].as_str().unwrap().contains("😀"));
    assert!(restored[7]["createdAt"]["$date"].is_string());
    assert_eq!(restored[7]["location"]["type"], "Point");

    // The uploaded import file was removed from storage afterwards.
    assert!(emu
        .control()
        .files(ENV)
        .iter()
        .all(|(path, _)| !path.starts_with("tcb-backup-restore/")));

    // Never overwrite: the same (now non-empty) target refuses an insert restore...
    let req = RestoreRequest {
        to_collection: Some(outcome.collection.clone()),
        ..RestoreRequest::default()
    };
    let (status, _, err) = run_restore(&engine, &entry, &req).await;
    assert_eq!(status, JobStatus::Failed);
    let err = err.unwrap_or_default();
    assert!(
        err.contains("--mode upsert") && err.contains("120 documents"),
        "{err}"
    );
    // ...and accepts an upsert, which leaves the same documents.
    let req = RestoreRequest {
        mode: ConflictMode::Upsert,
        ..req
    };
    let (status, outcome2, err) = run_restore(&engine, &entry, &req).await;
    assert_eq!(status, JobStatus::Succeeded, "{err:?}");
    assert_eq!(outcome2.unwrap().record_success, 120);
    let mut docs = emu.control().documents(ENV, &outcome.collection).unwrap();
    sort_by_id(&mut docs);
    assert_eq!(docs, original);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_into_another_env_and_named_collection() {
    let emu = start_emulator().await;
    let client = client(&emu);
    seed(&emu, ENV, "users", tricky_documents(15));
    let dir = tempfile::tempdir().unwrap();
    let entry = backup(&emu, &client, &dir.path().join("snapshots"), ENV, "users").await;
    let engine = open_engine(&dir.path().join("state"), &client);
    // An existing but empty target is fine.
    emu.control()
        .create_collection(OTHER_ENV, "users_copy")
        .unwrap();
    let req = RestoreRequest {
        env: Some(OTHER_ENV.into()),
        to_collection: Some("users_copy".into()),
        ..RestoreRequest::default()
    };
    let (status, outcome, err) = run_restore(&engine, &entry, &req).await;
    assert_eq!(status, JobStatus::Succeeded, "{err:?}");
    assert_eq!(outcome.unwrap().env, OTHER_ENV);
    let mut docs = emu.control().documents(OTHER_ENV, "users_copy").unwrap();
    sort_by_id(&mut docs);
    let mut original = emu.control().documents(ENV, "users").unwrap();
    sort_by_id(&mut original);
    assert_eq!(docs, original);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_snapshot_is_never_uploaded() {
    let emu = start_emulator().await;
    let client = client(&emu);
    seed(&emu, ENV, "logs", tricky_documents(5));
    let dir = tempfile::tempdir().unwrap();
    let entry = backup(&emu, &client, &dir.path().join("snapshots"), ENV, "logs").await;
    let mut bytes = std::fs::read(&entry.data_path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&entry.data_path, &bytes).unwrap();
    let engine = open_engine(&dir.path().join("state"), &client);
    let uploads_before = emu.control().calls("uploadfile");
    let (status, _, err) = run_restore(&engine, &entry, &RestoreRequest::default()).await;
    assert_eq!(status, JobStatus::Failed);
    let err = err.unwrap_or_default();
    assert!(err.contains("snapshot check failed"), "{err}");
    assert_eq!(emu.control().calls("uploadfile"), uploads_before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_to_the_envs_cloudbase_storage_and_delete_it() {
    use std::sync::Arc;
    use tcb_backup::destination::cloudbase::CloudBaseStorage;
    use tcb_backup::destination::copy::{
        delete_copies, submit_copies, CopyRecords, CopyWorkflow, Destinations,
    };
    let emu = start_emulator().await;
    let client = client(&emu);
    seed(&emu, ENV, "orders", tricky_documents(30));
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("snapshots");
    let entry = backup(&emu, &client, &root, ENV, "orders").await;
    let engine = open_engine(&dir.path().join("state"), &client);
    let mut destinations = Destinations::new();
    destinations.insert(Arc::new(CloudBaseStorage::new(
        "cloud",
        client.clone(),
        OTHER_ENV,
        "tcb-backup",
    )));
    let records = CopyRecords::new(engine.kv(CopyRecords::NAMESPACE));
    engine.register(
        CopyWorkflow::new(destinations.clone(), records.clone()).with_retry(fast_retry()),
        tcb_state::KindLimits::new(1),
    );
    let jobs = submit_copies(&engine, &entry, &root, &["cloud".to_string()]).unwrap();
    engine.run_until_idle().await.unwrap();
    let view = engine.job(jobs[0]).unwrap().unwrap();
    assert_eq!(
        view.summary.status,
        JobStatus::Succeeded,
        "{:?}",
        view.summary.last_error
    );
    let data_name = entry.data_path.file_name().unwrap().to_str().unwrap();
    let stored = emu
        .control()
        .read_file(OTHER_ENV, &format!("tcb-backup/{ENV}/orders/{data_name}"))
        .expect("copied into storage");
    assert_eq!(stored, std::fs::read(&entry.data_path).unwrap());
    assert_eq!(
        delete_copies(&destinations, &records, &entry.id)
            .await
            .unwrap(),
        1
    );
    assert!(emu
        .control()
        .files(OTHER_ENV)
        .iter()
        .all(|(p, _)| !p.starts_with("tcb-backup/")));
}
