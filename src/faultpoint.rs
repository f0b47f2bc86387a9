//! Named crash points for the reliability tests (`tests/crash_*.rs`).
//!
//! A durable step of the backup workflow calls [`hit`] with a stable name at the moment a crash
//! would be most damaging (between a side effect and the commit that records it, between a
//! write and its rename, in the middle of a download). When the process was started with
//! `TCB_BACKUP_FAULTPOINT=<name>[:<n>]`, the n-th hit (default: the first) of that point kills
//! the process on the spot: no destructor, no flush, no unwinding — the same as a `kill -9`
//! from the workflow's point of view. The tests then restart the binary and check that nothing
//! was lost or duplicated.
//!
//! The mechanism is compiled only into debug builds (`cfg(debug_assertions)`, which is what
//! `cargo test` builds the binary with) or builds with the `faultpoints` cargo feature. In a
//! release build without that feature [`hit`] is an empty inline function and the variable is
//! never read.

/// The environment variable naming the point to crash at: `name` or `name:n` (n-th hit, from 1).
pub const ENV_VAR: &str = "TCB_BACKUP_FAULTPOINT";

/// The points every plain backup passes, in the order it passes them (the crash matrix's
/// sequence test crashes at each in turn on one backup).
pub const BACKUP_POINTS: &[&str] = &[
    "backup.before_step.start",
    "backup.before_step.token_acquired",
    "backup.after_export_call",
    "backup.before_step.export_created",
    "backup.before_step.polling",
    "download.mid_stream",
    "archive.before_rename",
    "archive.after_rename",
    "backup.before_step.downloaded",
    "manifest.before_rename",
    "backup.after_manifest",
    "backup.after_catalog",
    // Hit 1: the run's first step (discovery); hit 2: after every child finished.
    "run.before_step",
];

/// The record step's points that only some backups pass: an unchanged export (its duplicate
/// download removed) and a backup with `[[destinations]]` (its copies submitted).
pub const RECORD_POINTS: &[&str] = &[
    "backup.after_duplicate_removed",
    "backup.after_copies_submitted",
];

/// The `copy.snapshot` workflow's points (src/destination/copy.rs).
pub const COPY_POINTS: &[&str] = &[
    "copy.after_data_put",
    "copy.after_manifest_put",
    "copy.after_record",
];

/// The `restore.collection` workflow's points (src/restore/workflow.rs).
pub const RESTORE_POINTS: &[&str] = &[
    // Verify → PrepareTarget committed: the repeat checks the target again.
    "restore.before_step.prepare_target",
    "restore.after_create_collection",
    "restore.mid_upload",
    "restore.after_upload",
    "restore.after_import_mark",
    "restore.after_import_call",
    // Poll committed with the import job id: the repeat polls that import, starts none.
    "restore.before_step.poll",
    "restore.after_file_deleted",
    "restore.after_mark_removed",
    // A failure after the upload committed (Abandon), the upload not yet deleted: the repeat
    // deletes it and fails with the committed reason.
    "restore.before_step.abandon",
];

/// `forget --prune` deleting one snapshot, in the order it passes them
/// (src/retention/forget.rs, src/retention/prune.rs).
pub const FORGET_POINTS: &[&str] = &[
    "forget.after_remote_copies",
    "forget.after_mark",
    "forget.after_manifest_removed",
    "forget.after_files_removed",
];

/// The declared groups; a point belongs to exactly one.
const GROUPS: &[&[&str]] = &[
    BACKUP_POINTS,
    RECORD_POINTS,
    COPY_POINTS,
    RESTORE_POINTS,
    FORGET_POINTS,
];

/// Every point the code base declares (the groups above, in that order), for the crash
/// matrix's coverage check and the docs.
pub fn points() -> impl Iterator<Item = &'static str> {
    GROUPS.iter().flat_map(|group| group.iter().copied())
}

/// Whether `name` is a declared point.
pub fn is_declared(name: &str) -> bool {
    points().any(|p| p == name)
}

/// Marks the named point; kills the process (SIGKILL) if it is the armed one (test builds only).
#[inline]
pub fn hit(name: &str) {
    #[cfg(any(debug_assertions, feature = "faultpoints"))]
    armed::hit(name);
    #[cfg(not(any(debug_assertions, feature = "faultpoints")))]
    let _ = name;
}

/// [`hit`] for `prefix.detail` (e.g. the step about to run), built only when a point is armed.
#[inline]
pub fn hit_at(prefix: &str, detail: &str) {
    #[cfg(any(debug_assertions, feature = "faultpoints"))]
    armed::hit_at(prefix, detail);
    #[cfg(not(any(debug_assertions, feature = "faultpoints")))]
    let _ = (prefix, detail);
}

/// Whether this build honours [`ENV_VAR`] at all.
pub const fn enabled() -> bool {
    cfg!(any(debug_assertions, feature = "faultpoints"))
}

/// Parses `name[:n]`; `None` for an empty name or a count that is not a positive number.
pub fn parse_spec(spec: &str) -> Option<(String, u64)> {
    let spec = spec.trim();
    let (name, nth) = match spec.rsplit_once(':') {
        Some((name, n)) => (name, n.trim().parse::<u64>().ok().filter(|n| *n > 0)?),
        None => (spec, 1),
    };
    if name.is_empty() {
        return None;
    }
    Some((name.to_string(), nth))
}

#[cfg(any(debug_assertions, feature = "faultpoints"))]
mod armed {
    use std::io::Write;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;

    struct Armed {
        name: String,
        nth: u64,
        hits: AtomicU64,
    }

    fn armed() -> Option<&'static Armed> {
        static ARMED: OnceLock<Option<Armed>> = OnceLock::new();
        ARMED
            .get_or_init(|| {
                let spec = std::env::var(super::ENV_VAR).ok()?;
                let (name, nth) = super::parse_spec(&spec)?;
                Some(Armed {
                    name,
                    nth,
                    hits: AtomicU64::new(0),
                })
            })
            .as_ref()
    }

    pub fn hit(name: &str) {
        if let Some(a) = armed() {
            if a.name == name {
                count(a);
            }
        }
    }

    pub fn hit_at(prefix: &str, detail: &str) {
        if let Some(a) = armed() {
            let matches = a
                .name
                .strip_prefix(prefix)
                .and_then(|rest| rest.strip_prefix('.'))
                == Some(detail);
            if matches {
                count(a);
            }
        }
    }

    fn count(a: &Armed) {
        let n = a.hits.fetch_add(1, Ordering::SeqCst) + 1;
        if n == a.nth {
            // One line on stderr so a test can tell this crash from any other death.
            let _ = writeln!(std::io::stderr(), "faultpoint {} hit {n}: killing", a.name);
            // SIGKILL, as `kill -9` would: no handler, no destructor, no flush, no core dump.
            // SAFETY: kill(2) on our own pid has no memory-safety precondition.
            unsafe {
                libc::kill(libc::getpid(), libc::SIGKILL);
            }
            // Unreachable in practice (SIGKILL cannot be caught); never carry on past the point.
            std::process::abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse() {
        assert_eq!(parse_spec("a.b"), Some(("a.b".into(), 1)));
        assert_eq!(parse_spec("a.b:3"), Some(("a.b".into(), 3)));
        assert_eq!(parse_spec("a.b:0"), None);
        assert_eq!(parse_spec("a.b:x"), None);
        assert_eq!(parse_spec(":2"), None);
        assert_eq!(parse_spec(""), None);
    }

    #[test]
    fn no_point_is_declared_twice() {
        let all: Vec<&str> = points().collect();
        let mut unique = all.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), all.len(), "a point is declared twice");
    }

    /// The per-phase points (`hit_at(prefix, phase.name())`): each prefix, with the source that
    /// names the phases.
    const PER_PHASE: &[(&str, &str)] = &[
        ("backup.before_step", include_str!("backup/state.rs")),
        ("restore.before_step", include_str!("restore/workflow.rs")),
    ];

    /// Every declared point is hit somewhere: by name, or (a per-phase point) by `hit_at` with
    /// its prefix, for a phase that exists.
    #[test]
    fn every_declared_point_is_hit_in_the_source() {
        let sources = [
            include_str!("backup/collection.rs"),
            include_str!("backup/run.rs"),
            include_str!("archive.rs"),
            include_str!("manifest.rs"),
            include_str!("destination/copy.rs"),
            include_str!("restore/workflow.rs"),
            include_str!("restore/upload.rs"),
            include_str!("retention/forget.rs"),
            include_str!("retention/prune.rs"),
        ]
        .concat();
        for point in points() {
            let per_phase = PER_PHASE.iter().find_map(|(prefix, names)| {
                let phase = point.strip_prefix(prefix)?.strip_prefix('.')?;
                Some((prefix, phase, names))
            });
            if let Some((prefix, phase, names)) = per_phase {
                assert!(
                    sources.contains(&format!("hit_at(\"{prefix}\", ")),
                    "{point}: nothing calls hit_at(\"{prefix}\", ..)"
                );
                assert!(
                    names.contains(&format!("=> \"{phase}\"")),
                    "{point}: {phase} is not a phase name"
                );
                continue;
            }
            assert!(
                sources.contains(&format!("hit(\"{point}\")")),
                "{point} is declared but never hit"
            );
        }
    }

    #[test]
    fn unarmed_points_do_nothing() {
        // The test process never sets the variable; a hit must simply return.
        hit("backup.after_catalog");
        hit_at("backup.before_step", "polling");
    }
}
