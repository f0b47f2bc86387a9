//! `forget` on real files: unverified snapshots are checked first, a tampered one never counts
//! and is deleted, the rules keep what they say, `--prune` removes data file + manifest +
//! records (remote copies first), and without `--prune` nothing is touched.

mod snapshot_support;

use std::path::Path;

use snapshot_support::store_snapshot;
use tcb_backup::catalog::CatalogEntry;
use tcb_backup::retention::forget::{forget, ForgetHooks, ForgetOptions};
use tcb_backup::retention::{ForgetReason, RetentionPolicy};
use tcb_backup::verify::VerificationStore;
use tcb_state::{Engine, EngineOptions};
use time::macros::datetime;
use time::OffsetDateTime;

async fn store(root: &Path, collection: &str, job: u64, at: OffsetDateTime) -> CatalogEntry {
    let body = format!("{{\"_id\":\"{job}\",\"v\":1}}\n");
    store_snapshot(root, collection, job, at, body).await
}

#[derive(Default)]
struct Hooks {
    remote: Vec<String>,
    forgotten: Vec<String>,
}

impl ForgetHooks for Hooks {
    fn delete_remote_copies(&mut self, entry: &CatalogEntry) -> Result<(), String> {
        // The local files must still be there when the remote copies go.
        assert!(entry.data_path.exists());
        self.remote.push(entry.id.clone());
        Ok(())
    }
    fn begin_forget(&mut self, entry: &CatalogEntry) -> Result<(), String> {
        // Unlisted before any local file goes.
        assert!(entry.manifest_path.exists());
        self.forgotten.push(entry.id.clone());
        Ok(())
    }
    fn end_forget(&mut self, entry: &CatalogEntry) -> Result<(), String> {
        assert!(!entry.data_path.exists() && !entry.manifest_path.exists());
        Ok(())
    }
    fn unfinished(&mut self) -> Result<Vec<CatalogEntry>, String> {
        Ok(Vec::new())
    }
}

#[tokio::test]
async fn forget_verifies_plans_and_prunes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("snapshots");
    let mut entries = Vec::new();
    for (job, day) in [(1u64, 1u8), (2, 2), (3, 3), (4, 4)] {
        let at = datetime!(2026-12-01 02:00 UTC).replace_day(day).unwrap();
        entries.push(store(&root, "orders", job, at).await);
    }
    // The newest snapshot is corrupt: it must not use up keep-last.
    let newest = entries[3].clone();
    let mut bytes = std::fs::read(&newest.data_path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&newest.data_path, &bytes).unwrap();

    let engine = Engine::open(&dir.path().join("state"), EngineOptions::default()).unwrap();
    let records = VerificationStore::new(engine.kv(VerificationStore::NAMESPACE));
    let policy = RetentionPolicy {
        keep_last: 2,
        min_keep: 1,
        ..RetentionPolicy::default()
    };
    let now = datetime!(2026-12-05 00:00 UTC);

    // Without --prune: the plan, nothing deleted, but the checks are recorded.
    let mut hooks = Hooks::default();
    let opts = ForgetOptions {
        policy: policy.clone(),
        prune: false,
        dry_run: false,
    };
    let report = forget(&entries, &records, &opts, &mut hooks, now).unwrap();
    assert_eq!(report.verified_now.entries.len(), 4);
    assert!(!report.deleted);
    let g = &report.plan.groups[0];
    let kept: Vec<&str> = g.keep.iter().map(|k| k.candidate.id.as_str()).collect();
    assert_eq!(kept, vec!["prod/orders/3", "prod/orders/2"]);
    let forgot: Vec<(&str, ForgetReason)> = g
        .forget
        .iter()
        .map(|f| (f.candidate.id.as_str(), f.reason))
        .collect();
    assert_eq!(
        forgot,
        vec![
            ("prod/orders/4", ForgetReason::Failed),
            ("prod/orders/1", ForgetReason::NotSelected)
        ]
    );
    assert!(entries.iter().all(|e| e.data_path.exists()));
    let rec = records.get("prod/orders/4").unwrap().unwrap();
    assert_eq!(rec.last_check_ok, Some(false));
    assert!(rec.last_error.unwrap().contains("sha256"));

    // --dry-run with --prune: still nothing.
    let dry = ForgetOptions {
        prune: true,
        dry_run: true,
        ..opts.clone()
    };
    forget(&entries, &records, &dry, &mut hooks, now).unwrap();
    assert!(entries.iter().all(|e| e.data_path.exists()));
    assert!(hooks.remote.is_empty());

    // --prune: remote copies, then files, then records.
    let prune = ForgetOptions {
        prune: true,
        ..opts
    };
    let report = forget(&entries, &records, &prune, &mut hooks, now).unwrap();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.removed.len(), 2);
    assert_eq!(hooks.remote, vec!["prod/orders/4", "prod/orders/1"]);
    assert_eq!(hooks.forgotten, hooks.remote);
    for e in &entries[..1] {
        assert!(!e.data_path.exists() && !e.manifest_path.exists());
    }
    assert!(!newest.data_path.exists() && !newest.manifest_path.exists());
    for e in &entries[1..3] {
        assert!(e.data_path.exists() && e.manifest_path.exists());
    }
    assert!(records.get("prod/orders/1").unwrap().is_none());

    // An empty policy is refused rather than forgetting everything.
    let empty = ForgetOptions {
        policy: RetentionPolicy::default(),
        prune: true,
        dry_run: false,
    };
    let err = forget(&entries[1..3], &records, &empty, &mut hooks, now).unwrap_err();
    assert!(err.contains("no retention rule"), "{err}");
}

/// A destination's own retention (what `forget` and the daemon's scheduled forget apply after
/// the local policy): the copies it forgets are deleted there and their records dropped, the
/// local snapshots stay, and a copy at a destination that cannot be reached is kept with an
/// error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_retention_deletes_only_its_own_copies() {
    use std::sync::Arc;
    use tcb_backup::destination::copy::{CopyRecord, CopyRecords, Destinations};
    use tcb_backup::destination::local::LocalDir;
    use tcb_backup::destination::{key_for, Destination};
    use tcb_backup::retention::forget::{CatalogHooks, RemoteCopies};

    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("snapshots");
    let mut entries = Vec::new();
    for (job, day) in [(1u64, 1u8), (2, 2), (3, 3)] {
        let at = datetime!(2026-12-01 02:00 UTC).replace_day(day).unwrap();
        entries.push(store(&root, "orders", job, at).await);
    }
    let engine = Engine::open(&dir.path().join("state"), EngineOptions::default()).unwrap();
    let records = CopyRecords::new(engine.kv(CopyRecords::NAMESPACE));
    let nas_dir = dir.path().join("nas");
    let nas: Arc<dyn Destination> = Arc::new(LocalDir::new("nas", &nas_dir));
    for e in &entries {
        for dest in ["nas", "offsite"] {
            let data = nas
                .put_file(&key_for(&root, &e.data_path).unwrap(), &e.data_path)
                .await
                .unwrap();
            let manifest = nas
                .put_file(&key_for(&root, &e.manifest_path).unwrap(), &e.manifest_path)
                .await
                .unwrap();
            records
                .put(&CopyRecord {
                    snapshot_id: e.id.clone(),
                    destination: dest.into(),
                    data,
                    manifest,
                })
                .unwrap();
        }
    }
    let mut destinations = Destinations::new();
    destinations.insert(nas.clone());
    let hooks = CatalogHooks::new(
        &engine,
        Some(RemoteCopies {
            destinations,
            runtime: tokio::runtime::Handle::current(),
        }),
    );
    let keep_one = RetentionPolicy {
        keep_last: 1,
        min_keep: 1,
        ..RetentionPolicy::default()
    };
    let policies = vec![
        ("nas".to_string(), keep_one.clone()),
        ("offsite".to_string(), keep_one),
    ];
    let verification = VerificationStore::new(engine.kv(VerificationStore::NAMESPACE));
    let (_, checked) = tcb_backup::retention::forget::verify_unverified(
        &entries,
        &verification,
        false,
        datetime!(2026-12-05 00:00 UTC),
    )
    .unwrap();
    let local: Vec<_> = entries
        .iter()
        .map(|e| (e.data_path.clone(), e.manifest_path.clone()))
        .collect();
    let out = tokio::task::spawn_blocking(move || {
        hooks.forget_copies(&policies, &entries, &checked, true)
    })
    .await
    .unwrap();

    let nas_out = &out[0];
    assert_eq!(nas_out.destination, "nas");
    assert_eq!(nas_out.deleted, vec!["prod/orders/2", "prod/orders/1"]);
    assert!(nas_out.errors.is_empty(), "{:?}", nas_out.errors);
    for job in [1, 2] {
        let id = format!("prod/orders/{job}");
        assert!(records.get(&id, "nas").unwrap().is_none(), "{id} at nas");
    }
    let newest = records.get("prod/orders/3", "nas").unwrap().expect("kept");
    assert!(nas_dir.join(&newest.data.key).is_file());
    // "offsite" is not reachable from these hooks: its copies stay recorded, with errors.
    let offsite = &out[1];
    assert!(offsite.deleted.is_empty());
    assert_eq!(offsite.errors.len(), 2, "{:?}", offsite.errors);
    assert!(records.get("prod/orders/1", "offsite").unwrap().is_some());
    // The local snapshots are untouched.
    for (data, manifest) in &local {
        assert!(data.is_file() && manifest.is_file(), "{}", data.display());
    }
}

/// A "failed" verdict is confirmed right before deleting: a snapshot recorded as failed whose
/// files match the manifest now (a stale or wrong verdict) is kept; only a still-failing one
/// goes.
#[tokio::test]
async fn a_failed_verdict_is_rechecked_before_deleting() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("snapshots");
    let mut entries = Vec::new();
    for (job, day) in [(1u64, 1u8), (2, 2), (3, 3)] {
        let at = datetime!(2026-12-01 02:00 UTC).replace_day(day).unwrap();
        entries.push(store(&root, "orders", job, at).await);
    }
    let engine = Engine::open(&dir.path().join("state"), EngineOptions::default()).unwrap();
    let records = VerificationStore::new(engine.kv(VerificationStore::NAMESPACE));
    // 1 and 2 are recorded failed, though both are intact; 3 passed.
    for (id, ok) in [
        ("prod/orders/1", false),
        ("prod/orders/2", false),
        ("prod/orders/3", true),
    ] {
        records
            .update(id, |r| {
                r.last_check_ok = Some(ok);
                r.last_check_read_data = true;
            })
            .unwrap();
    }
    // 1 really is corrupt now; 2 is intact.
    std::fs::write(&entries[0].data_path, b"not zstd").unwrap();
    let opts = ForgetOptions {
        policy: RetentionPolicy {
            keep_last: 1,
            min_keep: 1,
            ..RetentionPolicy::default()
        },
        prune: true,
        dry_run: false,
    };
    let mut hooks = Hooks::default();
    let report = forget(
        &entries,
        &records,
        &opts,
        &mut hooks,
        datetime!(2026-12-05 00:00 UTC),
    )
    .unwrap();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let removed: Vec<&str> = report.removed.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(removed, vec!["prod/orders/1"]);
    assert!(!entries[0].data_path.exists() && !entries[0].manifest_path.exists());
    assert_eq!(report.spared.len(), 1, "{:?}", report.spared);
    assert_eq!(report.spared[0].0, "prod/orders/2");
    assert!(report.spared[0].1.contains("match the manifest"));
    assert!(entries[1].data_path.exists() && entries[1].manifest_path.exists());
    assert!(entries[2].data_path.exists());
    assert_eq!(hooks.forgotten, vec!["prod/orders/1"]);
}

/// A copy job that put the data object and is backing off before its manifest put has no copy
/// record yet: forgetting the snapshot cancels the job and deletes that object, so nothing is
/// orphaned at the destination and no job is left to fail on the missing files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forget_cancels_a_copy_under_way_and_deletes_what_it_put() {
    use std::sync::Arc;
    use tcb_backup::destination::copy::Destinations;
    use tcb_backup::destination::copy::{CopyPhase, CopyRecords, CopyState, CopyWorkflow};
    use tcb_backup::destination::local::LocalDir;
    use tcb_backup::destination::Destination;
    use tcb_backup::retention::forget::{CatalogHooks, RemoteCopies};
    use tcb_state::{JobStatus, KindLimits, SubmitOptions};

    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("snapshots");
    let mut entries = Vec::new();
    for (job, day) in [(1u64, 1u8), (2, 2)] {
        let at = datetime!(2026-12-01 02:00 UTC).replace_day(day).unwrap();
        entries.push(store(&root, "orders", job, at).await);
    }
    let engine = Engine::open(&dir.path().join("state"), EngineOptions::default()).unwrap();
    let nas_dir = dir.path().join("nas");
    let nas: Arc<dyn Destination> = Arc::new(LocalDir::new("nas", &nas_dir));
    let mut destinations = Destinations::new();
    destinations.insert(nas.clone());
    let records = CopyRecords::new(engine.kv(CopyRecords::NAMESPACE));
    engine.register(
        CopyWorkflow::new(destinations.clone(), records.clone()),
        KindLimits::new(1),
    );
    // The oldest snapshot's copy: data put, manifest not yet (waiting out a back-off).
    let old = &entries[0];
    let mut state = CopyState::new(old, &root, "nas").unwrap();
    let data = nas.put_file(&state.data_key, &old.data_path).await.unwrap();
    assert!(nas_dir.join(&data.key).is_file());
    state.phase = CopyPhase::Manifest { data: data.clone() };
    let job = engine
        .submit::<CopyWorkflow>(state, SubmitOptions::label("copy under way"))
        .unwrap();

    let store = VerificationStore::new(engine.kv(VerificationStore::NAMESPACE));
    let mut hooks = CatalogHooks::new(
        &engine,
        Some(RemoteCopies {
            destinations,
            runtime: tokio::runtime::Handle::current(),
        }),
    );
    let opts = ForgetOptions {
        policy: RetentionPolicy {
            keep_last: 1,
            min_keep: 1,
            ..RetentionPolicy::default()
        },
        prune: true,
        dry_run: false,
    };
    let report = tokio::task::spawn_blocking({
        let entries = entries.clone();
        move || {
            forget(
                &entries,
                &store,
                &opts,
                &mut hooks,
                datetime!(2026-12-05 00:00 UTC),
            )
        }
    })
    .await
    .unwrap()
    .unwrap();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.removed.len(), 1);
    assert!(!old.data_path.exists() && !old.manifest_path.exists());
    assert_eq!(
        engine.job(job).unwrap().unwrap().status(),
        JobStatus::Cancelled
    );
    assert!(
        !nas_dir.join(&data.key).exists(),
        "the data object is orphaned"
    );
    assert!(records.all().unwrap().is_empty());
    assert!(entries[1].data_path.exists());
}
