//! Config parsing: any text must give a Config or a list of located problems, never a panic.
//! (`load_str` only validates; it never reads secrets or runs `secret_command`.)
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = tcb_backup::config::load_str(
            text,
            Path::new("/fuzz/tcb-backup.toml"),
            Path::new("/fuzz"),
        );
    }
});
