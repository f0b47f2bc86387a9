//! The command line grammar (clap derive). Restic-like vocabulary: `init`, `backup`,
//! `snapshots`, `show`, `jobs`, `retry`, `cancel`, `catalog rebuild`, `config check`, `demo`,
//! `emulator`. Parsing only; the commands live in `cli::commands`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Durable, verified backups of WeChat CloudBase (tcb) document collections.
#[derive(Debug, Parser)]
#[command(name = "tcb-backup", version, about, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command accepts.
#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// Configuration file.
    #[arg(
        long,
        global = true,
        env = "TCB_BACKUP_CONFIG",
        default_value = "tcb-backup.toml",
        value_name = "PATH"
    )]
    pub config: PathBuf,
    /// Machine-readable output on stdout: one JSON document, or JSON lines with a `message_type`.
    #[arg(long, global = true)]
    pub json: bool,
    /// More log output on stderr (-v info, -vv debug, -vvv trace). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Log line format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write a commented example configuration file.
    Init(InitArgs),
    /// Configuration commands.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Back up collections: first resumes unfinished jobs, then runs a new backup.
    Backup(BackupArgs),
    /// List the snapshots in the catalog, newest first.
    Snapshots(SnapshotsArgs),
    /// Show one snapshot (by snapshot id) or one job (by job id) with its history.
    Show(ShowArgs),
    /// List active and failed jobs.
    Jobs(JobsArgs),
    /// Retry a failed job (and resume its run).
    Retry(JobArg),
    /// Cancel a job (a run cancels its unfinished collections).
    Cancel(JobArg),
    /// Catalog maintenance.
    #[command(subcommand)]
    Catalog(CatalogCommand),
    /// Start an in-process emulator and back it up into ./tcb-backup-demo/.
    Demo(DemoArgs),
    /// Serve the CloudBase emulator until Ctrl-C.
    Emulator(EmulatorArgs),
    /// Restore a snapshot into a collection (a new one by default).
    Restore(super::restore_cmds::RestoreArgs),
    /// Verify stored snapshots (files, sha256, optionally data and a test restore).
    Check(super::restore_cmds::CheckArgs),
    /// Apply a retention policy per env+collection (--prune deletes).
    Forget(super::restore_cmds::ForgetArgs),
    /// Run the configured schedules unattended until SIGTERM/SIGINT (SIGHUP reloads).
    Daemon(super::daemon::DaemonArgs),
    /// Schedule commands.
    #[command(subcommand)]
    Schedule(super::daemon::ScheduleCommand),
    /// Benchmark against the in-process emulator; prints each figure beside its limit.
    Bench(super::bench::BenchArgs),
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Overwrite an existing file.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Load the configuration and report every problem with its location.
    Check,
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Only these environments (repeatable).
    #[arg(long = "env", value_name = "ENV")]
    pub envs: Vec<String>,
    /// Only these collections (repeatable).
    #[arg(long = "collection", value_name = "NAME", num_args = 1..)]
    pub collections: Vec<String>,
    /// Every configured environment and collection (the default when no filter is given).
    #[arg(long, conflicts_with_all = ["envs", "collections"])]
    pub all: bool,
    /// Only finish unfinished jobs; start no new run.
    #[arg(long)]
    pub resume_only: bool,
}

#[derive(Debug, Args)]
pub struct SnapshotsArgs {
    #[arg(long)]
    pub env: Option<String>,
    #[arg(long)]
    pub collection: Option<String>,
    /// Show at most this many (newest first).
    #[arg(long)]
    pub limit: Option<usize>,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// A snapshot id (as printed by `snapshots`) or a job id (a number).
    pub id: String,
}

#[derive(Debug, Args)]
pub struct JobsArgs {
    /// Also list succeeded and cancelled jobs.
    #[arg(long)]
    pub all: bool,
}

#[derive(Debug, Args)]
pub struct JobArg {
    /// The job id (a number, as printed by `jobs`).
    pub job: String,
}

#[derive(Debug, Subcommand)]
pub enum CatalogCommand {
    /// Recreate the catalog from the manifests on disk.
    Rebuild,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Where the demo writes its config, state and snapshots.
    #[arg(long, default_value = "tcb-backup-demo")]
    pub dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct EmulatorArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8780")]
    pub listen: SocketAddr,
    /// Keep the emulator's data in this directory.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Seed this many collections per environment.
    #[arg(long)]
    pub seed_collections: Option<u32>,
    /// Seed this many records per collection.
    #[arg(long)]
    pub seed_records: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn grammar_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn backup_filters_parse() {
        let cli = Cli::try_parse_from([
            "tcb-backup",
            "--json",
            "backup",
            "--env",
            "prod",
            "--collection",
            "a",
            "b",
        ])
        .unwrap();
        assert!(cli.global.json);
        match cli.command {
            Command::Backup(b) => {
                assert_eq!(b.envs, vec!["prod"]);
                assert_eq!(b.collections, vec!["a", "b"]);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn all_conflicts_with_filters() {
        assert!(Cli::try_parse_from(["tcb-backup", "backup", "--all", "--env", "x"]).is_err());
    }
}
