//! `data_dir` persistence of the standalone emulator and seeding on start.

mod emulator_support;

use emulator_support::*;
use serde_json::json;
use tcb_backup::emulator::{EmulatorConfig, SeedSpec};

#[tokio::test]
async fn collections_and_files_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = EmulatorConfig::for_tests();
    cfg.data_dir = Some(dir.path().to_path_buf());
    cfg.seed = Some(SeedSpec {
        collections: 2,
        records_per_collection: 5,
        ..SeedSpec::default()
    });
    let e = emu_with(cfg.clone()).await;
    e.ctl()
        .insert_documents(&e.env, "mine", vec![json!({"_id":"x","日本":"語"})])
        .expect("insert");
    e.ctl()
        .put_file(&e.env, "keep/me.txt", b"kept")
        .expect("put");
    let seeded = e.ctl().documents(&e.env, "users").expect("seeded");
    e.handle.shutdown().await;

    let e = emu_with(cfg).await;
    assert_eq!(
        e.ctl().documents(&e.env, "mine"),
        Some(vec![json!({"_id":"x","日本":"語"})])
    );
    assert_eq!(e.ctl().documents(&e.env, "users"), Some(seeded));
    assert_eq!(
        e.ctl().read_file(&e.env, "keep/me.txt").as_deref(),
        Some(&b"kept"[..])
    );
    let mut names = e.ctl().collections(&e.env).expect("env");
    names.sort();
    assert_eq!(names, ["mine", "orders", "users"]);
}

#[tokio::test]
async fn demo_config_is_seeded_and_usable() {
    let e = emu_with(EmulatorConfig {
        time_scale: 0.0,
        ..EmulatorConfig::demo()
    })
    .await;
    let t = e.stable_token().await;
    for env in [&e.env, &e.env2] {
        let r = e
            .tcb("databasecollectionget", &t, json!({"env": env}))
            .await;
        assert_eq!(r["pager"]["Total"], 3, "{r}");
    }
    assert_ne!(
        e.ctl().documents(&e.env, "users"),
        e.ctl().documents(&e.env2, "users")
    );
}

#[tokio::test]
async fn standalone_banner_and_seed_options() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = tcb_backup::emulator::StandaloneOptions {
        listen: "127.0.0.1:0".parse().expect("addr"),
        data_dir: Some(dir.path().to_path_buf()),
        seed_collections: Some(4),
        seed_records: Some(7),
        config: None,
    };
    let (handle, banner) = tcb_backup::emulator::start_standalone(opts)
        .await
        .expect("start");
    let app = handle.apps()[0].clone();
    assert!(banner.contains(&handle.base_url()));
    assert!(banner.contains(&app.appid) && banner.contains(&app.secret));
    assert!(app.envs.iter().all(|e| banner.contains(e.as_str())));
    assert_eq!(
        handle
            .control()
            .collections(&app.envs[0])
            .map(|c| c.len())
            .ok(),
        Some(4)
    );
    assert_eq!(
        handle
            .control()
            .documents(&app.envs[0], "users")
            .map(|d| d.len()),
        Some(7)
    );
    handle.shutdown().await;
    assert!(dir.path().join("storage.json").exists());
}
