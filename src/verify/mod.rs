//! Verification of stored snapshots (`tcb-backup check`) and where its results are kept.
//!
//! - [`check`]: every catalog entry's files are present and agree with the manifest (size,
//!   sha256); with `--read-data` (or a rotating `--read-data-subset=P%`) also decompressed,
//!   parsed and counted
//! - [`test_restore`]: restore a snapshot into a scratch collection, compare the count and a
//!   sample of documents with the snapshot, drop the scratch collection
//! - [`ejson`]: the canonical form documents are compared in (a date or a number may be
//!   spelled two ways)
//! - [`records`]: the last verified / test-restored times per snapshot (kv namespace
//!   `verification`), which also decide whether retention may count a snapshot

pub mod check;
pub mod ejson;
pub mod records;
pub mod test_restore;

pub use check::{
    check_entries, check_entries_with, check_entry, check_entry_with, select_subset, CheckFailure,
    CheckOptions, CheckReport, DataRead, EntryCheck, Verdict,
};
pub use records::{VerificationRecord, VerificationStore};
pub use test_restore::{compare_restored, scratch_collection_name, TestRestoreResult};
