//! Shared test helpers.

/// A temporary state directory. Prefers tmpfs (`/dev/shm`): these tests check the engine's
/// logic and its behaviour under process crashes, for which tmpfs behaves exactly like a disk
/// (a flushed write is in the kernel and survives the process), while fsync stalls on a busy
/// shared disk made the suites many times slower. Power loss is not tested anywhere. The
/// benchmark uses the real disk.
pub fn test_dir() -> tempfile::TempDir {
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(dir) = tempfile::Builder::new()
            .prefix("tcb-state-test-")
            .tempdir_in(shm)
        {
            return dir;
        }
    }
    tempfile::tempdir().expect("create a temporary directory")
}
