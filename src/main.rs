//! The `tcb-backup` binary: a thin shell over the library's CLI.
fn main() {}
