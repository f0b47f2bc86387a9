//! Persisted job-state decoding: the engine's job record and the backup workflows' states
//! (what a restart reads back from the store) never panic on arbitrary bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tcb_backup::backup::{CollectionState, RunState};

fuzz_target!(|data: &[u8]| {
    let _ = serde_json::from_slice::<tcb_state::JobRecord>(data);
    if let Ok(st) = serde_json::from_slice::<CollectionState>(data) {
        let _ = st.phase.name();
        let _ = st.phase.export();
        let bytes = serde_json::to_vec(&st).expect("a decoded state encodes");
        let back: CollectionState = serde_json::from_slice(&bytes).expect("and decodes again");
        assert_eq!(back, st);
    }
    let _ = serde_json::from_slice::<RunState>(data);
});
