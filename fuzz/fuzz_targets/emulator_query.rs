//! The emulator's query parser (the database-SDK syntax of export queries and
//! `databasequery`): arbitrary text gives a parsed query or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = tcb_backup::emulator::query::parse(text);
    }
});
