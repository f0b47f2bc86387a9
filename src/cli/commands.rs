//! The commands. Each returns the exit status to end with, or a [`CliError`] carrying one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tcb_state::{Engine, EngineError, JobFilter, JobId, JobStatus};
use tokio_util::sync::CancellationToken;

use crate::backup::catalog_store::SnapshotCatalog;
use crate::backup::listing::{annotate, status_of, SnapshotListing};
use crate::backup::report::{collection_row, RunReport};
use crate::backup::service::{BackupService, DriveOutcome};
use crate::backup::setup::{self, Prepared, SetupError};
use crate::backup::state::RunSelection;
use crate::destination::plan::{copies_settled, CatchUp, CopyLine, CopyStatus};

use super::args::{
    BackupArgs, CatalogCommand, Cli, Command, ConfigCommand, EmulatorArgs, GlobalArgs, InitArgs,
    JobArg, JobsArgs, ShowArgs, SnapshotsArgs,
};
use super::exit::{CliError, ExitStatus};
use super::output::Output;
use super::progress::{ProgressDisplay, ProgressMode};
use super::show::{self, JobDocument, JobLine, ShowOutput};
use super::table::{human_bytes, human_duration, Table};

pub async fn dispatch(cli: Cli, out: Output) -> Result<ExitStatus, CliError> {
    let g = cli.global;
    match cli.command {
        Command::Init(a) => init(&g, a, out),
        Command::Config(ConfigCommand::Check) => config_check(&g, out),
        Command::Backup(a) => backup(&g, a, out).await,
        Command::Snapshots(a) => snapshots(&g, a, out),
        Command::Show(a) => show(&g, a, out),
        Command::Jobs(a) => jobs(&g, a, out),
        Command::Retry(a) => retry(&g, a, out).await,
        Command::Cancel(a) => cancel(&g, a, out),
        Command::Catalog(CatalogCommand::Rebuild) => catalog_rebuild(&g, out),
        Command::Demo(a) => super::demo::run(&g, a, out).await,
        Command::Emulator(a) => emulator(a, out).await,
        Command::Restore(a) => super::restore_cmds::restore(&g, a, out).await,
        Command::Check(a) => super::restore_cmds::check(&g, a, out).await,
        Command::Forget(a) => super::restore_cmds::forget_cmd(&g, a, out).await,
        Command::Daemon(a) => super::daemon::daemon(&g, a, out).await,
        Command::Schedule(c) => super::daemon::schedule(&g, c, out),
        Command::Bench(a) => super::bench::run(a, out).await,
    }
}

// ---------------------------------------------------------------- shared helpers

pub(crate) fn setup_error(e: SetupError) -> CliError {
    match e {
        SetupError::Missing(m) => CliError::missing(m),
        SetupError::Invalid(m) => CliError::new(ExitStatus::ConfigOrStoreMissing, m),
        SetupError::Credentials(m) => CliError::credentials(m),
        SetupError::Other(m) => CliError::error(m),
    }
}

pub(crate) fn engine_error(e: EngineError) -> CliError {
    match e {
        EngineError::Locked { .. } => CliError::new(ExitStatus::StoreLocked, e.to_string()),
        other => CliError::error(other.to_string()),
    }
}

/// Opens the store of an existing configuration, refusing to create one (read-only commands).
pub(crate) fn open_existing_store(g: &GlobalArgs) -> Result<(Engine, Prepared), CliError> {
    let config = setup::load(&g.config).map_err(setup_error)?;
    let prepared = setup::prepare_offline(&config).map_err(setup_error)?;
    if !prepared.state_dir.exists() {
        return Err(CliError::missing(format!(
            "no state store at {}: nothing has been backed up with this configuration yet (run `tcb-backup backup`)",
            prepared.state_dir.display()
        )));
    }
    let engine =
        Engine::open(&prepared.state_dir, prepared.engine_options.clone()).map_err(engine_error)?;
    Ok((engine, prepared))
}

/// Opens the store of a configuration, creating it when it is missing: `catalog rebuild` works
/// from the files alone, and a lost state directory is the main reason to run it.
fn open_or_create_store(g: &GlobalArgs) -> Result<(Engine, Prepared), CliError> {
    let config = setup::load(&g.config).map_err(setup_error)?;
    let prepared = setup::prepare_offline(&config).map_err(setup_error)?;
    if !prepared.state_dir.exists() {
        tracing::info!(
            state_dir = %prepared.state_dir.display(),
            "no state store: creating an empty one to rebuild the catalog into"
        );
    }
    let engine =
        Engine::open(&prepared.state_dir, prepared.engine_options.clone()).map_err(engine_error)?;
    Ok((engine, prepared))
}

/// Opens the full service (clients, workflows) of the configuration.
pub(crate) fn open_service(
    config_path: &Path,
    progress: Arc<ProgressDisplay>,
) -> Result<(BackupService, Prepared), CliError> {
    let config = setup::load(config_path).map_err(setup_error)?;
    let prepared = setup::prepare(&config).map_err(setup_error)?;
    let service = prepared.open(progress).map_err(engine_error)?;
    Ok((service, prepared))
}

/// Cancels `token` on Ctrl-C / SIGINT (and SIGTERM on unix).
pub(crate) fn interrupt_token() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            match signal(SignalKind::terminate()) {
                Ok(mut term) => {
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => {}
                        _ = term.recv() => {}
                    }
                }
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
        t.cancel();
    });
    token
}

fn parse_job(text: &str) -> Result<JobId, CliError> {
    text.trim().parse::<u64>().map(JobId).map_err(|_| {
        CliError::error(format!(
            "{text:?} is not a job id (job ids are numbers, see `tcb-backup jobs`)"
        ))
    })
}

// ---------------------------------------------------------------- init / config

fn init(g: &GlobalArgs, a: InitArgs, out: Output) -> Result<ExitStatus, CliError> {
    let path = &g.config;
    if path.exists() && !a.force {
        return Err(CliError::error(format!(
            "{} already exists; use --force to overwrite it",
            path.display()
        )));
    }
    std::fs::write(path, crate::config::example_toml())
        .map_err(|e| CliError::error(format!("cannot write {}: {e}", path.display())))?;
    #[derive(Serialize)]
    struct Init<'a> {
        config: &'a Path,
    }
    out.document(&Init { config: path });
    out.text(&format!(
        "wrote {}: edit the apps, envs and secret sources, then run `tcb-backup config check`",
        path.display()
    ));
    Ok(ExitStatus::Ok)
}

fn config_check(g: &GlobalArgs, out: Output) -> Result<ExitStatus, CliError> {
    let config = setup::load(&g.config).map_err(setup_error)?;
    let prepared = setup::prepare_offline(&config).map_err(setup_error)?;
    let summary = prepared.describe();
    out.document(&summary);
    out.text(&format!("{}: ok", g.config.display()));
    out.text(&summary.to_text());
    Ok(ExitStatus::Ok)
}

// ---------------------------------------------------------------- backup

/// The `summary` message of a backup.
#[derive(Debug, Serialize)]
pub struct BackupSummary {
    pub status: &'static str,
    pub interrupted: bool,
    pub resumed_runs: Vec<u64>,
    pub runs: Vec<RunReport>,
    pub succeeded: usize,
    pub failed: usize,
    pub unfinished: usize,
    pub destination: PathBuf,
    /// Token endpoint calls per app in this process.
    pub token_fetches: BTreeMap<String, u64>,
    /// Where the off-site copies of this backup's snapshots stand.
    pub copies: Vec<CopyLine>,
    pub copies_pending: usize,
    pub copies_failed: usize,
    /// Copies of earlier snapshots restarted or resubmitted at the start.
    pub copies_caught_up: CatchUp,
    /// Parts of the selection that matched nothing (a `--collection` no selected env lists).
    pub warnings: Vec<String>,
}

pub(crate) async fn backup(
    g: &GlobalArgs,
    a: BackupArgs,
    out: Output,
) -> Result<ExitStatus, CliError> {
    let selection = RunSelection {
        envs: a.envs,
        collections: a.collections,
    };
    // A mistyped --env or --collection is reported before any secret is fetched.
    let config = setup::load(&g.config).map_err(setup_error)?;
    let offline = setup::prepare_offline(&config).map_err(setup_error)?;
    offline
        .plan
        .check_selection(&selection)
        .map_err(CliError::error)?;
    let display = Arc::new(ProgressDisplay::new(ProgressMode::detect(out.is_json())));
    let (service, prepared) = open_service(&g.config, display.clone())?;
    let summary = run_backup(&service, &prepared, selection, a.resume_only, &display, out).await?;
    finish_backup(&summary, &display, out)
}

/// Resumes unfinished runs, then (unless they already cover `selection`) runs a new one.
pub(crate) async fn run_backup(
    service: &BackupService,
    prepared: &Prepared,
    selection: RunSelection,
    resume_only: bool,
    display: &ProgressDisplay,
    out: Output,
) -> Result<BackupSummary, CliError> {
    let warnings = prepared
        .plan
        .check_selection(&selection)
        .map_err(CliError::error)?;
    for w in &warnings {
        tracing::warn!("{w}");
    }
    prepared
        .preflight(service, &selection)
        .await
        .map_err(setup_error)?;
    let interrupt = interrupt_token();
    // Copies that failed or wait out a back-off are tried again now.
    let copies_caught_up = service.catch_up_copies().map_err(CliError::error)?;
    let unfinished = service.unfinished_runs().map_err(engine_error)?;
    let mut runs = unfinished.clone();
    let mut covered = false;
    for run in &unfinished {
        if service.selection_of(*run).map_err(engine_error)?.as_ref() == Some(&selection) {
            covered = true;
        }
    }
    let mut interrupted = false;
    if !unfinished.is_empty() {
        display.println(&format!(
            "resuming {} unfinished run(s): {}",
            unfinished.len(),
            unfinished
                .iter()
                .map(|r| r.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
        out.message(
            "resume",
            &serde_json::json!({ "runs": unfinished.iter().map(|r| r.0).collect::<Vec<_>>() }),
        );
        let outcome = service
            .drive_with_copies(&unfinished, interrupt.clone().cancelled_owned())
            .await
            .map_err(engine_error)?;
        interrupted = outcome == DriveOutcome::Interrupted;
    }
    if !interrupted && !covered && !resume_only {
        let run = service.submit_run(selection).map_err(engine_error)?;
        out.message("run_started", &serde_json::json!({ "run": run.0 }));
        runs.push(run);
        let outcome = service
            .drive_with_copies(&[run], interrupt.clone().cancelled_owned())
            .await
            .map_err(engine_error)?;
        interrupted = outcome == DriveOutcome::Interrupted;
    } else if !interrupted
        && unfinished.is_empty()
        && (copies_caught_up != CatchUp::default()
            || !copies_settled(&service.engine).map_err(CliError::error)?)
    {
        // Nothing to back up, but copies to finish: restarted or submitted by the catch-up,
        // or left running by a process that died (the catch-up leaves those alone).
        let outcome = service
            .drive_with_copies(&[], interrupt.clone().cancelled_owned())
            .await
            .map_err(engine_error)?;
        interrupted = outcome == DriveOutcome::Interrupted;
    }
    let mut reports = Vec::new();
    for run in &runs {
        reports.push(service.report(*run).map_err(engine_error)?);
    }
    let succeeded = reports.iter().map(|r| r.succeeded).sum();
    let failed = reports.iter().map(|r| r.failed).sum();
    let unfinished_jobs = reports.iter().map(|r| r.unfinished).sum();
    let status = if interrupted {
        "interrupted"
    } else if failed == 0 && unfinished_jobs == 0 {
        "succeeded"
    } else if succeeded > 0 {
        "partially-failed"
    } else {
        "failed"
    };
    let snapshot_ids: Vec<String> = reports
        .iter()
        .flat_map(|r| r.collections.iter())
        .filter_map(|row| row.snapshot_id.clone())
        .collect();
    let copies = service.copy_lines(&snapshot_ids).map_err(CliError::error)?;
    let copies_pending = copies
        .iter()
        .filter(|c| c.status == CopyStatus::Pending)
        .count();
    let copies_failed = copies
        .iter()
        .filter(|c| c.status == CopyStatus::Failed)
        .count();
    Ok(BackupSummary {
        warnings,
        copies,
        copies_pending,
        copies_failed,
        copies_caught_up,
        status,
        interrupted,
        resumed_runs: unfinished.iter().map(|r| r.0).collect(),
        runs: reports,
        succeeded,
        failed,
        unfinished: unfinished_jobs,
        destination: prepared.destination.clone(),
        token_fetches: service.clients().token_fetches().into_iter().collect(),
    })
}

/// Prints the summary (table or JSON line) and picks the exit status.
pub(crate) fn finish_backup(
    summary: &BackupSummary,
    display: &ProgressDisplay,
    out: Output,
) -> Result<ExitStatus, CliError> {
    for run in &summary.runs {
        for row in &run.collections {
            let target = crate::backup::progress::Target {
                appid: row.appid.clone(),
                env: row.env.clone(),
                collection: row.collection.clone(),
            };
            let ok = row.status == JobStatus::Succeeded;
            let msg = if ok {
                format!(
                    "{} records, {}",
                    row.records.unwrap_or(0),
                    human_bytes(row.bytes_stored.unwrap_or(0))
                )
            } else {
                row.status.to_string()
            };
            display.finish(&target, ok, &msg);
        }
    }
    display.finish_all();
    out.message("summary", summary);
    if !out.is_json() {
        let mut table = Table::new(&[
            ("ENV", false),
            ("COLLECTION", false),
            ("STATUS", false),
            ("RECORDS", true),
            ("SIZE", true),
            ("STORED", true),
            ("TIME", true),
            ("SNAPSHOT / ERROR", false),
        ]);
        for run in &summary.runs {
            for row in &run.collections {
                let opt = |v: Option<u64>, f: fn(u64) -> String| v.map(f).unwrap_or_default();
                table.row(vec![
                    row.env.clone(),
                    row.collection.clone(),
                    row.status.to_string(),
                    opt(row.records, |n| n.to_string()),
                    opt(row.bytes, human_bytes),
                    opt(row.bytes_stored, human_bytes),
                    human_duration(Duration::from_secs_f64(row.seconds.max(0.0))),
                    row.snapshot_id
                        .clone()
                        .or_else(|| row.error.clone().map(|e| truncate(&e, 120)))
                        .unwrap_or_else(|| row.phase.clone()),
                ]);
            }
        }
        if !table.is_empty() {
            out.text(&table.render());
        }
        for run in &summary.runs {
            if let Some(err) = &run.error {
                if run.collections.is_empty() || run.status == JobStatus::Failed {
                    out.text(&format!("run {}: {err}", run.run));
                }
            }
        }
        out.text(&format!(
            "{}: {} succeeded, {} failed{}; snapshots under {}",
            summary.status,
            summary.succeeded,
            summary.failed,
            if summary.unfinished > 0 {
                format!(
                    ", {} unfinished (they resume on the next `tcb-backup backup`)",
                    summary.unfinished
                )
            } else {
                String::new()
            },
            summary.destination.display()
        ));
        print_copy_lines(summary, &out);
    }
    Ok(match summary.status {
        "interrupted" => ExitStatus::Interrupted,
        "succeeded" => ExitStatus::Ok,
        "partially-failed" => ExitStatus::PartialFailure,
        _ => ExitStatus::Error,
    })
}

/// The copies part of a backup's text summary: a count line, and a line per copy that is not
/// done.
fn print_copy_lines(summary: &BackupSummary, out: &Output) {
    if summary.copies.is_empty() {
        return;
    }
    let copied = summary.copies.len() - summary.copies_pending - summary.copies_failed;
    out.text(&format!(
        "copies: {copied} done, {} pending, {} failed{}",
        summary.copies_pending,
        summary.copies_failed,
        if summary.copies_pending + summary.copies_failed > 0 {
            " (the snapshots are stored locally; copies are retried with back-off and by the next `tcb-backup backup`)"
        } else {
            ""
        }
    ));
    for c in summary
        .copies
        .iter()
        .filter(|c| c.status != CopyStatus::Copied)
    {
        out.text(&format!(
            "  {} → {}: {}{}",
            c.snapshot_id,
            c.destination,
            c.status,
            c.error
                .as_deref()
                .map(|e| format!(": {}", truncate(e, 160)))
                .unwrap_or_default()
        ));
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max).collect();
        t.push('…');
        t
    }
}

// ---------------------------------------------------------------- snapshots / show

fn snapshots(g: &GlobalArgs, a: SnapshotsArgs, out: Output) -> Result<ExitStatus, CliError> {
    // While the daemon holds the store, ask it instead.
    let engine = match open_existing_store(g) {
        Ok((engine, _)) => engine,
        Err(e) if e.status == ExitStatus::StoreLocked => {
            return super::daemon::remote_snapshots(g, a, out, e)
        }
        Err(e) => return Err(e),
    };
    let catalog = SnapshotCatalog::new(engine.kv(SnapshotCatalog::NAMESPACE));
    let scan = catalog
        .list_with_damaged(a.env.as_deref(), a.collection.as_deref())
        .map_err(|e| CliError::error(e.to_string()))?;
    let list = annotate(&engine, scan.records).map_err(engine_error)?;
    print_snapshots(list, a.limit, "", &out);
    // On stderr in both modes: `--json` keeps its array shape (scripts parse stdout), and the
    // exit code says the listing is incomplete.
    for d in &scan.damaged {
        eprintln!(
            "tcb-backup: warning: catalog record {} skipped: {} (run `tcb-backup catalog rebuild`)",
            d.id, d.reason
        );
    }
    Ok(if scan.damaged.is_empty() {
        ExitStatus::Ok
    } else {
        ExitStatus::PartialFailure
    })
}

/// Prints the `snapshots` listing (newest first, at most `limit`): one JSON document, or a
/// table. `source` is appended to the count line (e.g. where the list came from).
pub(crate) fn print_snapshots(
    mut list: Vec<SnapshotListing>,
    limit: Option<usize>,
    source: &str,
    out: &Output,
) {
    if let Some(n) = limit {
        list.truncate(n);
    }
    out.document(&list);
    if !out.is_json() {
        let mut t = Table::new(&[
            ("ID", false),
            ("TIME (UTC)", false),
            ("ENV", false),
            ("COLLECTION", false),
            ("RECORDS", true),
            ("SIZE", true),
            ("STORED", true),
            ("COPIES", false),
            ("VERIFIED", false),
            ("TEST-RESTORED", false),
        ]);
        for listing in &list {
            let (s, status) = (&listing.record, &listing.status);
            let m = s.manifest();
            t.row(vec![
                s.id().to_string(),
                s.time_text(),
                m.env.clone(),
                m.collection.clone(),
                m.records.to_string(),
                human_bytes(m.bytes_raw),
                if m.is_reference() {
                    "unchanged".to_string()
                } else {
                    human_bytes(m.bytes_stored)
                },
                status.copies_text(),
                status.verified_text(),
                status.test_restored_text(),
            ]);
        }
        out.text(&t.render());
        out.text(&format!("{} snapshot(s){source}", list.len()));
    }
}

fn show(g: &GlobalArgs, a: ShowArgs, out: Output) -> Result<ExitStatus, CliError> {
    // While the daemon holds the store, ask it instead.
    let engine = match open_existing_store(g) {
        Ok((engine, _)) => engine,
        Err(e) if e.status == ExitStatus::StoreLocked => {
            return super::daemon::remote_show(g, a, out, e)
        }
        Err(e) => return Err(e),
    };
    let catalog = SnapshotCatalog::new(engine.kv(SnapshotCatalog::NAMESPACE));
    let query = a.id.trim();
    // A number is an engine job id when such a job exists, else an export job id.
    let job_by_id = match query.parse::<u64>() {
        Ok(n) => engine.job(JobId(n)).map_err(engine_error)?,
        Err(_) => None,
    };
    let (snapshot, job) = match job_by_id {
        Some(v) => {
            let snapshot = collection_row(&v)
                .snapshot_id
                .and_then(|id| catalog.get(&id).ok().flatten());
            (snapshot, Some(v))
        }
        None => {
            let snapshot = catalog
                .find(query)
                .map_err(|e| CliError::error(format!("{e} (see `tcb-backup snapshots`)")))?;
            let job = match snapshot.job {
                Some(j) => engine.job(JobId(j)).map_err(engine_error)?,
                None => None,
            };
            (Some(snapshot), job)
        }
    };
    if snapshot.is_none() && job.is_none() {
        return Err(CliError::error(format!(
            "no snapshot or job {:?} (see `tcb-backup snapshots` and `tcb-backup jobs --all`)",
            a.id
        )));
    }
    let snapshot_status = match &snapshot {
        Some(s) => Some(status_of(&engine, s.id()).map_err(engine_error)?),
        None => None,
    };
    let result = ShowOutput {
        snapshot,
        snapshot_status,
        job: job.as_ref().map(JobDocument::from),
    };
    out.document(&result);
    if !out.is_json() {
        show::print(&result, &out);
    }
    Ok(ExitStatus::Ok)
}

// ---------------------------------------------------------------- jobs / retry / cancel

fn jobs(g: &GlobalArgs, a: JobsArgs, out: Output) -> Result<ExitStatus, CliError> {
    // While the daemon holds the store, ask it instead.
    let engine = match open_existing_store(g) {
        Ok((engine, _)) => engine,
        Err(e) if e.status == ExitStatus::StoreLocked => {
            return super::daemon::remote_jobs(g, a, out, e)
        }
        Err(e) => return Err(e),
    };
    let list = if a.all {
        engine.list(&JobFilter::default()).map_err(engine_error)?
    } else {
        let mut active = engine
            .list(&JobFilter {
                active_only: true,
                ..JobFilter::default()
            })
            .map_err(engine_error)?;
        let failed = engine
            .list(&JobFilter {
                statuses: vec![JobStatus::Failed, JobStatus::PartiallyFailed],
                ..JobFilter::default()
            })
            .map_err(engine_error)?;
        active.extend(failed);
        active
    };
    print_jobs(list, "", &out);
    Ok(ExitStatus::Ok)
}

/// Prints the `jobs` listing (newest first): one JSON document of [`JobLine`]s, or a table.
/// `note` is printed under the table (e.g. where the list came from).
pub(crate) fn print_jobs(mut list: Vec<tcb_state::JobSummary>, note: &str, out: &Output) {
    list.sort_by_key(|s| std::cmp::Reverse(s.id.0));
    list.dedup_by_key(|s| s.id.0);
    let lines: Vec<JobLine> = list.iter().map(JobLine::from).collect();
    out.document(&lines);
    if !out.is_json() {
        let mut t = Table::new(&[
            ("JOB", true),
            ("KIND", false),
            ("STATUS", false),
            ("PARENT", true),
            ("LABEL", false),
            ("LAST ERROR", false),
        ]);
        for s in &list {
            t.row(vec![
                s.id.to_string(),
                s.kind.clone(),
                s.status.to_string(),
                s.parent.map(|p| p.to_string()).unwrap_or_default(),
                s.label.clone(),
                s.last_error
                    .as_deref()
                    .map(|e| truncate(e, 100))
                    .unwrap_or_default(),
            ]);
        }
        out.text(&t.render());
        if !note.is_empty() {
            out.text(note);
        }
    }
}

async fn retry(g: &GlobalArgs, a: JobArg, out: Output) -> Result<ExitStatus, CliError> {
    let id = parse_job(&a.job)?;
    let display = Arc::new(ProgressDisplay::new(ProgressMode::detect(out.is_json())));
    let (service, _) = open_service(&g.config, display.clone())?;
    service.engine.retry(id).map_err(engine_error)?;
    // Retrying a collection reopens its finished run, which then ends by the new outcome:
    // drive that run to its end too, and report it.
    let reopened = service
        .engine
        .job(id)
        .map_err(engine_error)?
        .and_then(|v| v.summary.parent)
        .map(|p| service.engine.job(p))
        .transpose()
        .map_err(engine_error)?
        .flatten()
        .filter(|p| !p.status().is_terminal())
        .map(|p| p.id());
    out.message(
        "retry",
        &serde_json::json!({ "job": id.0, "reopened_run": reopened.map(|r| r.0) }),
    );
    let mut until_done = vec![id];
    until_done.extend(reopened);
    let outcome = service
        .drive(&until_done, interrupt_token().cancelled_owned())
        .await
        .map_err(engine_error)?;
    display.finish_all();
    // The exit code is the retried job's; the reopened run's outcome is reported beside it.
    let mut final_status = JobStatus::Failed;
    for job in until_done {
        let view = service
            .engine
            .job(job)
            .map_err(engine_error)?
            .ok_or_else(|| CliError::error(format!("job {job} disappeared")))?;
        out.message(
            "result",
            &serde_json::json!({ "job": job.0, "status": view.summary.status.as_str(), "error": view.summary.last_error }),
        );
        out.text(&format!(
            "{} {job}: {}{}",
            if job == id { "job" } else { "its run" },
            view.summary.status,
            view.summary
                .last_error
                .as_deref()
                .filter(|_| view.summary.status != JobStatus::Succeeded)
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        ));
        if job == id {
            final_status = view.summary.status;
        }
    }
    Ok(match (outcome, final_status) {
        (DriveOutcome::Interrupted, _) => ExitStatus::Interrupted,
        (_, JobStatus::Succeeded) => ExitStatus::Ok,
        (_, JobStatus::PartiallyFailed) => ExitStatus::PartialFailure,
        _ => ExitStatus::Error,
    })
}

fn cancel(g: &GlobalArgs, a: JobArg, out: Output) -> Result<ExitStatus, CliError> {
    let id = parse_job(&a.job)?;
    let (engine, _) = open_existing_store(g)?;
    engine.cancel(id).map_err(engine_error)?;
    let status = engine
        .job(id)
        .map_err(engine_error)?
        .map(|v| v.summary.status);
    out.document(&serde_json::json!({ "job": id.0, "status": status.map(|s| s.as_str()) }));
    out.text(&format!(
        "job {id}: cancellation requested{}",
        status.map(|s| format!(" (now {s})")).unwrap_or_default()
    ));
    Ok(ExitStatus::Ok)
}

// ---------------------------------------------------------------- catalog

fn catalog_rebuild(g: &GlobalArgs, out: Output) -> Result<ExitStatus, CliError> {
    let (engine, prepared) = open_or_create_store(g)?;
    let catalog = SnapshotCatalog::new(engine.kv(SnapshotCatalog::NAMESPACE));
    let result = catalog
        .rebuild(&prepared.destination)
        .map_err(|e| CliError::error(e.to_string()))?;
    out.document(&result);
    if !out.is_json() {
        out.text(&format!(
            "catalog rebuilt from {}: {} snapshot(s), {} removed, {} problem(s)",
            prepared.destination.display(),
            result.entries,
            result.removed,
            result.problems.len()
        ));
        for id in &result.damaged_replaced {
            out.text(&format!(
                "  damaged record {id}: replaced from its manifest"
            ));
        }
        for id in &result.damaged_removed {
            out.text(&format!("  damaged record {id}: removed (no manifest)"));
        }
        for p in &result.problems {
            out.text(&format!("  problem: {p}"));
        }
    }
    Ok(if result.problems.is_empty() {
        ExitStatus::Ok
    } else {
        ExitStatus::PartialFailure
    })
}

// ---------------------------------------------------------------- emulator

async fn emulator(a: EmulatorArgs, out: Output) -> Result<ExitStatus, CliError> {
    let opts = crate::emulator::StandaloneOptions {
        listen: a.listen,
        data_dir: a.data,
        seed_collections: a.seed_collections,
        seed_records: a.seed_records,
        config: None,
    };
    // The banner is what a user copies into a config, so it goes to stdout, never to the logs.
    crate::emulator::run_standalone(opts, |banner| {
        out.message("emulator", banner);
        out.text(&banner.to_text());
    })
    .await
    .map_err(|e| CliError::error(e.to_string()))?;
    Ok(ExitStatus::Ok)
}
