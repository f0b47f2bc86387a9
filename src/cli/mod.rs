//! The `tcb-backup` command line: parsing (`args`), exit codes (`exit`), output conventions
//! (`output`), logging (`logging`), progress display (`progress`), tables (`table`), the
//! commands themselves (`commands`) and the self-contained demo (`demo`).
//!
//! `src/main.rs` only parses and calls [`run`]; everything testable lives here.

pub mod args;
pub mod bench;
pub mod commands;
pub mod daemon;
pub mod demo;
pub mod exit;
pub mod logging;
pub mod output;
pub mod progress;
pub mod restore_cmds;
pub mod show;
pub mod table;

pub use args::Cli;
pub use exit::{CliError, ExitStatus};
use output::Output;

/// Runs a parsed command line and returns the exit code.
pub fn run(cli: Cli) -> i32 {
    logging::init(cli.global.verbose, cli.global.log_format);
    let out = Output::new(cli.global.json);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let err = CliError::error(format!("cannot start the async runtime: {e}"));
            out.error(&err);
            return err.status.code();
        }
    };
    let result = runtime.block_on(commands::dispatch(cli, out));
    // Do not wait for stuck background tasks (e.g. an interrupted download) on the way out.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    match result {
        Ok(status) => status.code(),
        Err(err) => {
            out.error(&err);
            err.status.code()
        }
    }
}
