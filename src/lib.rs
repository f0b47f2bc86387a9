//! tcb-backup: durable, verified backups of WeChat CloudBase document collections.
//!
//! The library holds everything the `tcb-backup` binary does; `src/main.rs` only parses the
//! command line and calls into [`cli`]. See `docs/ARCHITECTURE.md` for the map.
pub mod archive;
pub mod backup;
pub mod bench;
pub mod catalog;
pub mod cli;
pub mod client;
pub mod config;
pub mod daemon;
pub mod data_refs;
pub mod destination;
pub mod emulator;
pub mod faultpoint;
pub mod manifest;
pub mod naming;
pub mod restore;
pub mod retention;
pub mod schedule;
pub mod verify;
