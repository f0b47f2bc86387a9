//! The `restore`, `check` and `forget` commands (arguments and implementation), on the
//! library code in [`crate::restore`], [`crate::verify`] and [`crate::retention`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, ValueEnum};
use serde::Serialize;
use tcb_state::{Engine, JobFilter, JobId, JobStatus, SubmitOptions, Workflow};
use time::OffsetDateTime;

use crate::archive::encrypt::Identities;
use crate::backup::catalog_store::SnapshotCatalog;
use crate::backup::service::{BackupService, DriveOutcome};
use crate::backup::setup::Prepared;
use crate::catalog::CatalogEntry;
use crate::client::ConflictMode;
use crate::config::CopyDestinationKind;
use crate::destination::copy::Destinations;
use crate::destination::plan::{build_destinations, CopyPlan};
use crate::restore::workflow::probe_target;
use crate::restore::{ImportOutcome, RestorePlan, RestoreRequest, RestoreWorkflow};
use crate::retention::forget::{
    forget, kept_entries, verify_unverified, CatalogHooks, DestinationForget, ForgetOptions,
    ForgetReport, RemoteCopies,
};
use crate::retention::{parse_duration, PolicyError, RetentionPolicy, DEFAULT_MIN_KEEP};
use crate::verify::check::record_report;
use crate::verify::test_restore::{run_test_restore_with_identity, Comparison};
use crate::verify::{check_entries_with, CheckOptions, DataRead, Verdict, VerificationStore};

use super::args::GlobalArgs;
use super::commands::{
    engine_error, interrupt_token, open_existing_store, open_service, setup_error,
};
use super::exit::{CliError, ExitStatus};
use super::output::Output;
use super::progress::{ProgressDisplay, ProgressMode};
use super::table::Table;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    /// Insert every record; existing `_id`s fail.
    Insert,
    /// Replace records with the same `_id`, insert the rest.
    Upsert,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Snapshot id (`<env>/<collection>/<export job id>`), a unique prefix, or the export job
    /// id. Without it, only unfinished restores (interrupted earlier) are resumed.
    pub snapshot: Option<String>,
    /// Target collection (default: `<collection>_restored_<UTC time>`, always new).
    #[arg(long, value_name = "NAME")]
    pub to_collection: Option<String>,
    /// Target environment (default: the snapshot's own).
    #[arg(long, value_name = "ENV")]
    pub env: Option<String>,
    #[arg(long, value_enum, default_value_t = ModeArg::Insert)]
    pub mode: ModeArg,
    /// Stop the import at the first failing record.
    #[arg(long)]
    pub stop_on_error: bool,
    /// Insert into a non-empty collection anyway.
    #[arg(long)]
    pub force: bool,
    /// Print the plan and stop.
    #[arg(long)]
    pub dry_run: bool,
    /// age identity file that decrypts an encrypted snapshot (default: the config's
    /// encryption.identity_file).
    #[arg(long, value_name = "FILE")]
    pub identity: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Also decompress, parse and count every snapshot.
    #[arg(long, conflicts_with = "read_data_subset")]
    pub read_data: bool,
    /// Read the data of this share of the snapshots (least recently read first), e.g. 10%.
    #[arg(long, value_name = "PERCENT")]
    pub read_data_subset: Option<String>,
    /// Restore the newest snapshot of each collection into a scratch collection and compare.
    #[arg(long)]
    pub test_restore: bool,
    /// Documents compared per test restore.
    #[arg(long, default_value_t = 20)]
    pub sample: usize,
    #[arg(long)]
    pub env: Option<String>,
    #[arg(long)]
    pub collection: Option<String>,
    /// age identity file that decrypts encrypted snapshots for --read-data and
    /// --test-restore (default: the config's encryption.identity_file).
    #[arg(long, value_name = "FILE")]
    pub identity: Option<PathBuf>,
}

/// The identity file a command uses: the flag, else the config's `encryption.identity_file`.
fn identity_file(flag: Option<PathBuf>, config: &crate::config::Config) -> Option<PathBuf> {
    flag.or_else(|| {
        config
            .encryption
            .as_ref()
            .and_then(|e| e.identity_file.clone())
    })
}

#[derive(Debug, Args)]
pub struct ForgetArgs {
    #[arg(long, default_value_t = 0)]
    pub keep_last: u32,
    #[arg(long, default_value_t = 0)]
    pub keep_hourly: u32,
    #[arg(long, default_value_t = 0)]
    pub keep_daily: u32,
    #[arg(long, default_value_t = 0)]
    pub keep_weekly: u32,
    #[arg(long, default_value_t = 0)]
    pub keep_monthly: u32,
    #[arg(long, default_value_t = 0)]
    pub keep_yearly: u32,
    /// Keep everything this close to the newest snapshot, e.g. 14d, 36h, 1y6m.
    #[arg(long, value_name = "DURATION")]
    pub keep_within: Option<String>,
    /// The floor: newest verified snapshots per collection that are always kept.
    #[arg(long, default_value_t = DEFAULT_MIN_KEEP)]
    pub keep_min: u32,
    /// Delete what the policy forgets (otherwise only show the plan).
    #[arg(long)]
    pub prune: bool,
    /// Show what would happen; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[arg(long)]
    pub env: Option<String>,
    #[arg(long)]
    pub collection: Option<String>,
}

fn now_utc() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

/// Registers the restore kind on an opened service.
fn register_restore(service: &BackupService, prepared: &Prepared) {
    crate::restore::setup::register_restore(
        &service.engine,
        service.clients(),
        &prepared.config,
        &prepared.settings.retry,
    );
}

fn unfinished_restores(engine: &Engine) -> Result<Vec<JobId>, CliError> {
    let filter = JobFilter {
        kind: Some(RestoreWorkflow::KIND.to_string()),
        active_only: true,
        ..JobFilter::default()
    };
    Ok(engine
        .list(&filter)
        .map_err(engine_error)?
        .into_iter()
        .map(|s| s.id)
        .collect())
}

fn catalog_entries(
    catalog: &SnapshotCatalog,
    env: Option<&str>,
    collection: Option<&str>,
) -> Result<Vec<CatalogEntry>, CliError> {
    Ok(catalog
        .list(env, collection)
        .map_err(|e| CliError::error(e.to_string()))?
        .into_iter()
        .map(|r| r.entry)
        .collect())
}

// ---------------------------------------------------------------- restore

#[derive(Serialize)]
struct RestoreResult {
    job: u64,
    status: String,
    error: Option<String>,
    outcome: Option<ImportOutcome>,
}

pub async fn restore(g: &GlobalArgs, a: RestoreArgs, out: Output) -> Result<ExitStatus, CliError> {
    let display = Arc::new(ProgressDisplay::new(ProgressMode::detect(out.is_json())));
    let (service, prepared) = open_service(&g.config, display.clone())?;
    register_restore(&service, &prepared);
    let Some(snapshot) = a.snapshot else {
        return resume_restores(&service, &display, out).await;
    };
    let record = service
        .catalog
        .find(&snapshot)
        .map_err(|e| CliError::error(e.to_string()))?;
    let entry = record.entry;
    let req = RestoreRequest {
        appid: None,
        env: a.env,
        to_collection: a.to_collection,
        mode: match a.mode {
            ModeArg::Insert => ConflictMode::Insert,
            ModeArg::Upsert => ConflictMode::Upsert,
        },
        stop_on_error: a.stop_on_error,
        force: a.force,
        identity_file: identity_file(a.identity, &prepared.config),
    };
    let mut plan =
        RestorePlan::new(&entry, &req, now_utc()).map_err(|e| CliError::error(e.to_string()))?;
    plan.check_env_in(&prepared.config.apps)
        .map_err(|e| CliError::error(e.to_string()))?;
    let client = service.clients().get(&plan.appid).cloned().ok_or_else(|| {
        CliError::error(format!(
            "app {} of snapshot {} is not in the configuration",
            plan.appid, entry.id
        ))
    })?;
    plan.target = probe_target(&client, &plan.env, &plan.collection)
        .await
        .map_err(|e| CliError::error(format!("checking the target collection: {e}")))?;
    if a.dry_run {
        out.document(&plan);
        out.text(&plan.to_string());
        if let Err(e) = plan.check_target() {
            out.text(&format!("this restore would be refused: {e}"));
        }
        return Ok(ExitStatus::Ok);
    }
    plan.check_target()
        .map_err(|e| CliError::error(e.to_string()))?;

    let mut jobs = unfinished_restores(&service.engine)?;
    if !jobs.is_empty() {
        out.text(&format!(
            "resuming {} unfinished restore(s) first: {}",
            jobs.len(),
            jobs.iter()
                .map(|j| j.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let label = format!("restore {} → {}/{}", entry.id, plan.env, plan.collection);
    let job = service
        .engine
        .submit::<RestoreWorkflow>(plan.into_state(&entry), SubmitOptions::label(label))
        .map_err(engine_error)?;
    out.message("restore_started", &serde_json::json!({ "job": job.0 }));
    jobs.push(job);
    let outcome = service
        .drive(&jobs, interrupt_token().cancelled_owned())
        .await
        .map_err(engine_error)?;
    display.finish_all();
    report_restore(&service, job, outcome, out)
}

/// `restore` without a snapshot: finish what an earlier (killed or interrupted) run left.
async fn resume_restores(
    service: &BackupService,
    display: &ProgressDisplay,
    out: Output,
) -> Result<ExitStatus, CliError> {
    let jobs = unfinished_restores(&service.engine)?;
    if jobs.is_empty() {
        out.text("no unfinished restore to resume");
        out.message("result", &serde_json::json!({ "resumed": [] }));
        return Ok(ExitStatus::Ok);
    }
    let outcome = service
        .drive(&jobs, interrupt_token().cancelled_owned())
        .await
        .map_err(engine_error)?;
    display.finish_all();
    let mut worst = ExitStatus::Ok;
    for job in jobs {
        let status = report_restore(service, job, outcome, out)?;
        if status != ExitStatus::Ok {
            worst = status;
        }
    }
    Ok(worst)
}

fn report_restore(
    service: &BackupService,
    job: JobId,
    outcome: DriveOutcome,
    out: Output,
) -> Result<ExitStatus, CliError> {
    let view = service
        .engine
        .job(job)
        .map_err(engine_error)?
        .ok_or_else(|| CliError::error(format!("job {job} disappeared")))?;
    let import: Option<ImportOutcome> = view
        .output
        .clone()
        .and_then(|o| serde_json::from_value(o).ok());
    let result = RestoreResult {
        job: job.0,
        status: view.summary.status.as_str().to_string(),
        error: view.summary.last_error.clone(),
        outcome: import.clone(),
    };
    out.message("result", &result);
    match &import {
        Some(o) => out.text(&format!(
            "restore job {job}: {} → {}/{}: {} records imported, {} failed (snapshot has {}){}{}",
            view.summary.status,
            o.env,
            o.collection,
            o.record_success,
            o.record_fail,
            o.expected_records,
            if o.restarted_import {
                "; the import was restarted after an interruption"
            } else {
                ""
            },
            o.cleanup_error
                .as_deref()
                .map(|e| format!("; uploaded file left in storage: {e}"))
                .unwrap_or_default()
        )),
        None => out.text(&format!(
            "restore job {job}: {}{}",
            view.summary.status,
            view.summary
                .last_error
                .as_deref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        )),
    }
    Ok(match (outcome, view.summary.status) {
        (DriveOutcome::Interrupted, _) => ExitStatus::Interrupted,
        (_, JobStatus::Succeeded) => ExitStatus::Ok,
        (_, JobStatus::PartiallyFailed) => ExitStatus::PartialFailure,
        _ => ExitStatus::Error,
    })
}

// ---------------------------------------------------------------- check

pub async fn check(g: &GlobalArgs, a: CheckArgs, out: Output) -> Result<ExitStatus, CliError> {
    let read = match (&a.read_data_subset, a.read_data) {
        (Some(p), _) => DataRead::parse_subset(p).map_err(CliError::error)?,
        (None, true) => DataRead::All,
        (None, false) => DataRead::None,
    };
    // A test restore needs the API (secrets); a file check does not.
    let (engine, catalog, service, config) = if a.test_restore {
        let display = Arc::new(ProgressDisplay::new(ProgressMode::detect(out.is_json())));
        let (service, prepared) = open_service(&g.config, display)?;
        register_restore(&service, &prepared);
        (
            service.engine.clone(),
            service.catalog.clone(),
            Some(service),
            prepared.config,
        )
    } else {
        let (engine, prepared) = open_existing_store(g)?;
        let catalog = SnapshotCatalog::new(engine.kv(SnapshotCatalog::NAMESPACE));
        (engine, catalog, None, prepared.config)
    };
    let store = VerificationStore::new(engine.kv(VerificationStore::NAMESPACE));
    let entries = catalog_entries(&catalog, a.env.as_deref(), a.collection.as_deref())?;
    let records = store.all().map_err(engine_error)?;
    // The key is read only when some encrypted snapshot's data will be read.
    let identity_path = identity_file(a.identity, &config);
    let needs_key = (read != DataRead::None || a.test_restore)
        && entries.iter().any(|e| e.manifest.encryption.is_some());
    let identities = match (&identity_path, needs_key) {
        (Some(path), true) => {
            Some(Identities::load(path).map_err(|e| CliError::error(e.to_string()))?)
        }
        _ => None,
    };
    let to_check = entries.clone();
    let report = tokio::task::spawn_blocking(move || {
        check_entries_with(
            &to_check,
            &records,
            CheckOptions { read },
            identities.as_ref(),
        )
    })
    .await
    .map_err(|e| CliError::error(format!("check task failed: {e}")))?;
    let now = now_utc();
    record_report(&store, &report, now).map_err(engine_error)?;

    let mut table = Table::new(&[("snapshot", false), ("data read", false), ("result", false)]);
    for e in &report.entries {
        table.row(vec![
            e.id.clone(),
            match (e.read_data, e.records) {
                (false, _) => "-".into(),
                (true, Some(n)) => format!("{n} records"),
                (true, None) => "not read".into(),
            },
            match (e.verdict, &e.error) {
                (Verdict::Passed, _) => "ok".into(),
                (Verdict::Inconclusive, err) => {
                    format!("COULD NOT CHECK: {}", err.as_deref().unwrap_or("unknown"))
                }
                (Verdict::Failed, err) => {
                    format!("FAILED: {}", err.as_deref().unwrap_or("unknown"))
                }
            },
        ]);
    }
    out.text(&table.render());
    out.message("check", &report);
    let inconclusive = report
        .entries
        .iter()
        .filter(|e| e.verdict == Verdict::Inconclusive)
        .count();
    if inconclusive > 0 {
        out.text(&format!(
            "{inconclusive} snapshot(s) could not be checked (not counted as failed; their last verdict stands)"
        ));
    }
    let mut failed = report.failures().count() - inconclusive;

    if let Some(service) = &service {
        // The newest snapshot of each env/collection.
        let mut newest: BTreeMap<(String, String), &CatalogEntry> = BTreeMap::new();
        for e in &entries {
            let key = (e.manifest.env.clone(), e.manifest.collection.clone());
            let replace = newest
                .get(&key)
                .is_none_or(|cur| cur.manifest.finished_at < e.manifest.finished_at);
            if replace {
                newest.insert(key, e);
            }
        }
        let interrupt = interrupt_token();
        for entry in newest.values() {
            if interrupt.is_cancelled() {
                return Ok(ExitStatus::Interrupted);
            }
            let Some(client) = service.clients().get(&entry.manifest.appid) else {
                out.text(&format!(
                    "test restore of {}: app {} is not configured; skipped",
                    entry.id, entry.manifest.appid
                ));
                failed += 1;
                continue;
            };
            let compare = Comparison {
                sample_size: a.sample,
                identity_file: identity_path.as_deref(),
            };
            match run_test_restore_with_identity(
                &engine,
                client,
                &store,
                entry,
                compare,
                now_utc(),
                interrupt.clone().cancelled_owned(),
            )
            .await
            {
                Ok(r) => {
                    out.message("test_restore", &r);
                    out.text(&format!(
                        "test restore of {} into {}: {} ({} of {} documents, {} compared){}",
                        r.snapshot_id,
                        r.scratch_collection,
                        if r.ok() { "ok" } else { "FAILED" },
                        r.restored_count,
                        r.expected_records,
                        r.sampled,
                        if r.ok() {
                            String::new()
                        } else {
                            format!(": {}", r.problems.join("; "))
                        }
                    ));
                    if let Some(e) = &r.drop_error {
                        out.text(&format!("warning: {e}"));
                    }
                    if !r.ok() {
                        failed += 1;
                    }
                }
                Err(e) => {
                    out.text(&format!("{e}"));
                    failed += 1;
                }
            }
        }
        if interrupt.is_cancelled() {
            return Ok(ExitStatus::Interrupted);
        }
    }
    match (failed, inconclusive) {
        (0, 0) => Ok(ExitStatus::Ok),
        (0, n) => Err(CliError::error(format!(
            "{n} snapshot(s) could not be checked; see above"
        ))),
        (f, 0) => Err(CliError::error(format!("{f} check(s) failed; see above"))),
        (f, n) => Err(CliError::error(format!(
            "{f} check(s) failed and {n} snapshot(s) could not be checked; see above"
        ))),
    }
}

// ---------------------------------------------------------------- forget

pub async fn forget_cmd(
    g: &GlobalArgs,
    a: ForgetArgs,
    out: Output,
) -> Result<ExitStatus, CliError> {
    let keep_within = match &a.keep_within {
        Some(text) => Some(parse_duration(text).map_err(|e| CliError::error(e.to_string()))?),
        None => None,
    };
    let policy = RetentionPolicy {
        keep_last: a.keep_last,
        keep_hourly: a.keep_hourly,
        keep_daily: a.keep_daily,
        keep_weekly: a.keep_weekly,
        keep_monthly: a.keep_monthly,
        keep_yearly: a.keep_yearly,
        keep_within,
        min_keep: a.keep_min,
    };
    let config = crate::backup::setup::load(&g.config).map_err(setup_error)?;
    let destination_policies = CopyPlan::from_config(&config).retention_policies();
    // Without rules on the command line, only the destinations' own policies apply.
    let local = match policy.validate() {
        Ok(()) => true,
        Err(PolicyError::Empty) if !destination_policies.is_empty() => false,
        Err(e) => return Err(CliError::error(e.to_string())),
    };
    let (engine, prepared) = open_existing_store(g)?;
    // Copies are only deleted with --prune; a plan needs no credentials.
    let destinations = if a.prune && !a.dry_run {
        forget_destinations(&prepared, &out)
    } else {
        Destinations::new()
    };
    let catalog = SnapshotCatalog::new(engine.kv(SnapshotCatalog::NAMESPACE));
    let store = VerificationStore::new(engine.kv(VerificationStore::NAMESPACE));
    let entries = catalog_entries(&catalog, a.env.as_deref(), a.collection.as_deref())?;
    let opts = ForgetOptions {
        policy,
        prune: a.prune,
        dry_run: a.dry_run,
    };
    let mut hooks = CatalogHooks::new(
        &engine,
        Some(RemoteCopies {
            destinations,
            runtime: tokio::runtime::Handle::current(),
        }),
    );
    let (report, destination_reports) = tokio::task::spawn_blocking(move || {
        let (report, records) = if local {
            let report = forget(&entries, &store, &opts, &mut hooks, now_utc())?;
            let records = store.all().map_err(|e| e.to_string())?;
            (report, records)
        } else {
            let (verified_now, records) =
                verify_unverified(&entries, &store, opts.dry_run, now_utc())?;
            let report = ForgetReport {
                verified_now,
                ..ForgetReport::default()
            };
            (report, records)
        };
        let kept = kept_entries(&entries, &report);
        let per_destination = hooks.forget_copies(
            &destination_policies,
            &kept,
            &records,
            opts.prune && !opts.dry_run,
        );
        Ok::<_, String>((report, per_destination))
    })
    .await
    .map_err(|e| CliError::error(format!("forget task failed: {e}")))?
    .map_err(CliError::error)?;

    #[derive(Serialize)]
    struct ForgetOutput<'a> {
        #[serde(flatten)]
        local: &'a ForgetReport,
        destinations: &'a [DestinationForget],
    }
    out.document(&ForgetOutput {
        local: &report,
        destinations: &destination_reports,
    });
    let mut table = Table::new(&[("snapshot", false), ("decision", false), ("why", false)]);
    for g in &report.plan.groups {
        for k in &g.keep {
            let why: Vec<String> = k.reasons.iter().map(|r| r.to_string()).collect();
            table.row(vec![k.candidate.id.clone(), "keep".into(), why.join(", ")]);
        }
        for f in &g.forget {
            let spared = report.spared.iter().find(|(id, _)| *id == f.candidate.id);
            let (decision, why) = match spared {
                Some((_, why)) => ("kept", format!("{}, but {why}", f.reason)),
                None if report.deleted => ("deleted", f.reason.to_string()),
                None => ("forget", f.reason.to_string()),
            };
            table.row(vec![f.candidate.id.clone(), decision.into(), why]);
        }
    }
    out.text(&table.render());
    let forgettable = report.plan.forget_ids().count();
    if !report.deleted && forgettable > 0 {
        out.text(&format!(
            "{forgettable} snapshot(s) would be deleted; run with --prune (and without --dry-run) to delete them"
        ));
    }
    let mut errors = report.errors.clone();
    for d in &destination_reports {
        print_destination_forget(d, &out);
        errors.extend(d.errors.iter().map(|e| format!("{}: {e}", d.destination)));
    }
    for e in &errors {
        out.text(&format!("error: {e}"));
    }
    if !errors.is_empty() {
        return Err(CliError::error(format!(
            "{} deletion(s) failed; they stay recorded and are retried by the next forget --prune",
            errors.len()
        )));
    }
    Ok(ExitStatus::Ok)
}

fn print_destination_forget(d: &DestinationForget, out: &Output) {
    let mut table = Table::new(&[("snapshot", false), ("decision", false), ("why", false)]);
    for g in &d.plan.groups {
        for k in &g.keep {
            let why: Vec<String> = k.reasons.iter().map(|r| r.to_string()).collect();
            table.row(vec![
                k.candidate.id.clone(),
                "keep copy".into(),
                why.join(", "),
            ]);
        }
        for f in &g.forget {
            let done = d.deleted.contains(&f.candidate.id);
            table.row(vec![
                f.candidate.id.clone(),
                if done { "copy deleted" } else { "forget copy" }.into(),
                f.reason.to_string(),
            ]);
        }
    }
    out.text(&format!("destination {}:", d.destination));
    if table.is_empty() {
        out.text("  no copies");
    } else {
        out.text(&table.render());
    }
}

/// The destinations `forget` can delete copies from: built from the configuration (S3 keys
/// read from their sources; a `cloudbase` destination needs the apps' secrets too). One that
/// cannot be built is left out with a warning: snapshots with copies there are then kept.
fn forget_destinations(prepared: &Prepared, out: &Output) -> Destinations {
    let config = &prepared.config;
    if config.destinations.is_empty() {
        return Destinations::new();
    }
    let needs_clients = config
        .destinations
        .iter()
        .any(|d| matches!(d.kind, CopyDestinationKind::CloudBase { .. }));
    let clients = if needs_clients {
        match crate::backup::setup::prepare(config) {
            Ok(p) => p.clients,
            Err(e) => {
                out.text(&format!(
                    "warning: cloudbase destinations are unreachable from this command: {e}"
                ));
                None
            }
        }
    } else {
        None
    };
    match build_destinations(config, clients.as_ref()) {
        Ok(d) => d,
        Err(e) => {
            out.text(&format!(
                "warning: {e}; snapshots with copies at destinations are kept"
            ));
            tracing::warn!(error = %e, "cannot build the destinations");
            Destinations::new()
        }
    }
}
