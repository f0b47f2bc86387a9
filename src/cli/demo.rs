//! `tcb-backup demo`: starts the emulator in-process with seeded collections (two of them tens
//! of MB, so the progress bars move), writes a config pointing at it into the demo directory
//! (`./tcb-backup-demo/` by default, state store inside), backs everything up, prints the
//! summary and where the files are. Running it again makes new snapshots next to the old ones.

use std::path::Path;
use std::sync::Arc;

use serde_json::json;

use crate::archive::fsutil::{sync_dir, TempFile};
use crate::backup::state::RunSelection;
use crate::emulator::{self, EmulatorConfig, SeedSpec};

use super::args::{DemoArgs, GlobalArgs};
use super::commands::{finish_backup, open_service, run_backup};
use super::exit::{CliError, ExitStatus};
use super::output::Output;
use super::progress::{ProgressDisplay, ProgressMode};

/// The file (in the demo directory, mode 0600) the demo config reads the emulator app's secret
/// from. A file rather than an environment variable: setting one in a running multi-threaded
/// process is not sound, and a file is how a real deployment should keep it anyway.
const SECRET_FILE: &str = "demo-secret";

/// Big collections added on top of the seeded ones: (env index, name, records, payload bytes).
const BIG: &[(usize, &str, usize, usize)] =
    &[(0, "event_log", 30_000, 700), (1, "audit_log", 15_000, 600)];

pub async fn run(_g: &GlobalArgs, a: DemoArgs, out: Output) -> Result<ExitStatus, CliError> {
    let dir = &a.dir;
    create_private_dir(dir)?;
    let dir = dir
        .canonicalize()
        .map_err(|e| CliError::error(format!("{}: {e}", dir.display())))?;

    let mut cfg = EmulatorConfig::demo();
    // Virtual seconds per real second: the big exports take a few real seconds.
    cfg.time_scale = 4.0;
    cfg.seed = Some(SeedSpec {
        collections: 5,
        records_per_collection: 2_000,
        large_fraction: 0.03,
        ..SeedSpec::default()
    });
    let emu = emulator::start(cfg, ([127, 0, 0, 1], 0).into())
        .await
        .map_err(|e| CliError::error(format!("demo: {e}")))?;
    let app = emu
        .apps()
        .first()
        .cloned()
        .ok_or_else(|| CliError::error("demo: the emulator has no app"))?;
    for &(env_index, name, records, payload) in BIG {
        let Some(env) = app.envs.get(env_index) else {
            continue;
        };
        let docs = (0..records)
            .map(|i| {
                let kind = ["login", "purchase", "refund", "share"].get(i % 4).copied();
                json!({
                    "_id": format!("{name}-{i:08}"),
                    "seq": i,
                    "kind": kind,
                    "at": { "$date": format!("2026-11-{:02}T{:02}:{:02}:00.000Z", 1 + i % 28, i % 24, i % 60) },
                    "payload": "交易记录 event data ".repeat(payload / 24 + 1),
                })
            })
            .collect();
        emu.control()
            .insert_documents(env, name, docs)
            .map_err(|e| CliError::error(format!("demo: seeding {name}: {e}")))?;
    }

    write_private(&dir, SECRET_FILE, app.secret.as_bytes())?;
    let config_path = dir.join("tcb-backup.toml");
    write_private(
        &dir,
        "tcb-backup.toml",
        demo_config(&emu.base_url(), &app.appid, &app.envs).as_bytes(),
    )?;
    out.text(&format!(
        "demo: emulator at {} (app {}, envs {}); config {}",
        emu.base_url(),
        app.appid,
        app.envs.join(", "),
        config_path.display()
    ));
    out.message(
        "demo",
        &json!({ "emulator": emu.base_url(), "config": config_path, "dir": dir }),
    );

    let display = Arc::new(ProgressDisplay::new(ProgressMode::detect(out.is_json())));
    let result = async {
        let (service, prepared) = open_service(&config_path, display.clone())?;
        let selection = RunSelection {
            envs: vec![],
            collections: vec![],
        };
        let summary = run_backup(&service, &prepared, selection, false, &display, out).await?;
        finish_backup(&summary, &display, out)
    }
    .await;
    emu.shutdown().await;
    let status = result?;
    out.text(&format!(
        "\nfiles:    {}\nstate:    {}\nconfig:   {}\nnext:     tcb-backup --config {} snapshots\n          (the emulator has stopped; `demo` again makes new snapshots)",
        dir.join("snapshots").display(),
        dir.join("state").display(),
        config_path.display(),
        config_path.display()
    ));
    Ok(status)
}

fn demo_config(base_url: &str, appid: &str, envs: &[String]) -> String {
    let mut text = format!(
        r#"# Written by `tcb-backup demo`: backs up the in-process emulator the demo starts.
state_dir = "state"

[destination]
root = "snapshots"
zstd_level = 3

[concurrency]
global = 4
per_app = 4

[poll]
initial_interval = "250ms"
max_interval = "2s"

[[apps]]
appid = "{appid}"
secret_file = "{SECRET_FILE}"
api_base = "{base_url}"
"#
    );
    for env in envs {
        text.push_str(&format!(
            "\n[[apps.envs]]\nid = \"{env}\"\ndiscover = {{ include = [\"*\"] }}\n"
        ));
    }
    text
}

/// Writes `dir/name` with mode 0600, whole or not at all (temp file, fsync, rename, directory
/// fsync), replacing an earlier demo's.
fn write_private(dir: &Path, name: &str, content: &[u8]) -> Result<(), CliError> {
    use std::io::Write;
    let path = dir.join(name);
    let failed =
        |e: std::io::Error| CliError::error(format!("cannot write {}: {e}", path.display()));
    let tmp = TempFile::create(dir, name).map_err(failed)?;
    tmp.file().write_all(content).map_err(failed)?;
    tmp.file().sync_all().map_err(failed)?;
    tmp.persist_replacing(&path).map_err(failed)?;
    sync_dir(dir).map_err(failed)
}

fn create_private_dir(dir: &Path) -> Result<(), CliError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| CliError::error(format!("cannot create {}: {e}", dir.display())))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    }
    Ok(())
}
