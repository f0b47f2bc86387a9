//! `tcb-backup demo`: an in-process emulator, a temporary config, a full backup into
//! `./tcb-backup-demo/`, the summary, exit 0.

use super::args::{DemoArgs, GlobalArgs};
use super::exit::{CliError, ExitStatus};
use super::output::Output;

pub async fn run(_g: &GlobalArgs, _a: DemoArgs, _out: Output) -> Result<ExitStatus, CliError> {
    Err(CliError::error("demo: waiting for the emulator"))
}
