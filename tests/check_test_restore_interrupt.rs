//! `check --test-restore` interrupted mid-restore: the restore job is cancelled (so nothing
//! resumes it later into a collection nobody drops) and the scratch collection is dropped.

mod restore_support;

use restore_support::*;
use tcb_backup::verify::test_restore::{run_test_restore_with_identity, Comparison};
use tcb_backup::verify::VerificationStore;
use tcb_state::JobFilter;

fn scratch_collections(emu: &tcb_backup::emulator::EmulatorHandle) -> Vec<String> {
    emu.control()
        .collections(ENV)
        .unwrap()
        .into_iter()
        .filter(|c| c.contains("_verify_"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_test_restore_cancels_its_job_and_drops_the_scratch_collection() {
    let emu = start_emulator().await;
    let client = client(&emu);
    seed(&emu, ENV, "orders", tricky_documents(30));
    let dir = tempfile::tempdir().unwrap();
    let orders = backup(&emu, &client, &dir.path().join("snapshots"), ENV, "orders").await;
    let engine = open_engine(&dir.path().join("state"), &client);
    let store = VerificationStore::new(engine.kv(VerificationStore::NAMESPACE));

    // Interrupt as soon as the restore has created its scratch collection (checked after
    // every committed transition, no timer).
    let mut events = engine.subscribe();
    let watched = &emu;
    let seen = std::sync::atomic::AtomicBool::new(false);
    let interrupt = async {
        while scratch_collections(watched).is_empty() {
            if events.recv().await.is_err() {
                return;
            }
        }
        seen.store(true, std::sync::atomic::Ordering::SeqCst);
    };
    let err = run_test_restore_with_identity(
        &engine,
        &client,
        &store,
        &orders,
        Comparison {
            sample_size: 5,
            identity_file: None,
        },
        time::OffsetDateTime::now_utc(),
        interrupt,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        seen.load(std::sync::atomic::Ordering::SeqCst),
        "interrupted with the scratch collection created"
    );
    assert!(err.contains("interrupted"), "{err}");
    assert!(err.contains("dropped"), "{err}");
    assert!(scratch_collections(&emu).is_empty());
    let active = engine
        .list(&JobFilter {
            active_only: true,
            ..JobFilter::default()
        })
        .unwrap();
    assert!(active.is_empty(), "{active:?}");
    // Nothing resumes it: running the engine again creates no scratch collection.
    engine.run_until_idle().await.unwrap();
    assert!(scratch_collections(&emu).is_empty());
}
