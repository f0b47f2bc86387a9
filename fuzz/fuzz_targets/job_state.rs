//! Persisted job-state decoding: the engine's job record and the state of every workflow the
//! engine persists (`backup.collection`, `backup.run`, `restore.collection`, `copy.snapshot`,
//! `daemon.maintenance`: what a restart reads back from the store) never panic on arbitrary
//! bytes, and a state that decodes encodes and decodes again to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tcb_backup::backup::{CollectionState, RunState};
use tcb_backup::daemon::maintenance::MaintenanceState;
use tcb_backup::destination::copy::CopyState;
use tcb_backup::restore::RestoreState;

/// Decodes `data` as `T`; if it decodes, the re-encoded value must decode to an equal one.
fn round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(
    data: &[u8],
) -> Option<T> {
    let st = serde_json::from_slice::<T>(data).ok()?;
    let bytes = serde_json::to_vec(&st).expect("a decoded state encodes");
    let back: T = serde_json::from_slice(&bytes).expect("and decodes again");
    assert_eq!(back, st);
    Some(st)
}

fuzz_target!(|data: &[u8]| {
    let _ = serde_json::from_slice::<tcb_state::JobRecord>(data);
    if let Some(st) = round_trip::<CollectionState>(data) {
        let _ = st.phase.name();
        let _ = st.phase.export();
    }
    let _ = serde_json::from_slice::<RunState>(data);
    let _ = round_trip::<RestoreState>(data);
    let _ = round_trip::<CopyState>(data);
    // No PartialEq: compare the re-encoded JSON instead.
    if let Ok(st) = serde_json::from_slice::<MaintenanceState>(data) {
        let once = serde_json::to_value(&st).expect("a decoded state encodes");
        let back: MaintenanceState =
            serde_json::from_value(once.clone()).expect("and decodes again");
        assert_eq!(serde_json::to_value(&back).expect("encodes"), once);
    }
});
