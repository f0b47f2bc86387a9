//! The `tcb-backup` binary: a thin shell over the library's CLI (`tcb_backup::cli`).
use clap::Parser;

fn main() {
    let cli = tcb_backup::cli::Cli::parse();
    std::process::exit(tcb_backup::cli::run(cli));
}
