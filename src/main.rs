//! The `tcb-backup` binary: a thin shell over the library's CLI (`tcb_backup::cli`).
use clap::Parser;

fn main() {
    // Everything this tool writes (snapshots, manifests, the state store, sled's own files) is
    // user data or describes it: nobody but the owner may read it, whatever the caller's umask.
    // SAFETY: umask only swaps the process's file-creation mask; it cannot fail.
    unsafe {
        libc::umask(0o077);
    }
    let cli = tcb_backup::cli::Cli::parse();
    std::process::exit(tcb_backup::cli::run(cli));
}
