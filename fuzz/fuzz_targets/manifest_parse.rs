//! Manifest parsing: strict, with clear errors, never a panic; whatever parses re-serialises
//! and parses back to the same manifest.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use tcb_backup::manifest::Manifest;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("/fuzz/x.manifest.json");
    if let Ok(m) = Manifest::from_json(data, path) {
        let again = Manifest::from_json(&m.to_json(), path).expect("a parsed manifest re-parses");
        assert_eq!(again, m);
    }
});
