//! Names that end up in file paths and export queries, and the on-disk layout of snapshots.
//!
//! Env ids and collection names come from the config file and from the API (collection
//! discovery), so they are untrusted: each becomes a directory name under the destination root
//! and is interpolated into an export query (`db.collection("NAME").get()`). [`validate_name`]
//! refuses anything that could escape the destination tree, hide a file, break the query string
//! or confuse a terminal. CloudBase does not document its own naming rules, so letters of any
//! script, digits and the usual punctuation (`_`, `-`, `.`, `$`, ...) are accepted.
//!
//! Layout: `<root>/<env>/<collection>/<UTC time>-<job_id>.jsonl.zst` (`.jsonl.zst.age` when
//! encrypted) plus `<UTC time>-<job_id>.manifest.json` beside it, the time formatted as
//! `20261203T020000Z`.

use std::fmt;
use std::path::{Path, PathBuf};

use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time, UtcOffset};

/// Longest accepted name, in UTF-8 bytes. File systems allow 255 bytes per path component;
/// the snapshot file names live in their own component, so 128 leaves ample room.
pub const MAX_NAME_BYTES: usize = 128;

/// Suffix of a snapshot's data file (zstd-compressed JSON Lines, the export stored unmodified).
pub const DATA_SUFFIX: &str = ".jsonl.zst";
/// Suffix of an encrypted data file: the zstd stream encrypted with age.
pub const ENCRYPTED_DATA_SUFFIX: &str = ".jsonl.zst.age";
/// Suffix of the manifest written beside each data file.
pub const MANIFEST_SUFFIX: &str = ".manifest.json";
/// Prefix of temporary files; the leading dot keeps them out of every listing of snapshots.
pub const TEMP_PREFIX: &str = ".tmp-";

/// What exactly is wrong with a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameProblem {
    Empty,
    TooLong { bytes: usize, max: usize },
    PathSeparator(char),
    DotDot,
    LeadingDot,
    TrailingDot,
    ControlCharacter { position: usize },
    Whitespace { position: usize },
    InvisibleCharacter { position: usize, codepoint: u32 },
    ForbiddenCharacter { position: usize, ch: char },
}

impl fmt::Display for NameProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NameProblem::Empty => write!(f, "it is empty"),
            NameProblem::TooLong { bytes, max } => {
                write!(f, "it is {bytes} bytes long, the limit is {max} bytes")
            }
            NameProblem::PathSeparator(c) => {
                write!(f, "it contains the path separator {c:?}")
            }
            NameProblem::DotDot => write!(f, "it contains \"..\""),
            NameProblem::LeadingDot => write!(f, "it starts with '.' (hidden or special file name)"),
            NameProblem::TrailingDot => write!(f, "it ends with '.'"),
            NameProblem::ControlCharacter { position } => {
                write!(f, "it contains a control character at character {position}")
            }
            NameProblem::Whitespace { position } => {
                write!(f, "it contains whitespace at character {position}")
            }
            NameProblem::InvisibleCharacter { position, codepoint } => write!(
                f,
                "it contains the invisible character U+{codepoint:04X} at character {position}"
            ),
            NameProblem::ForbiddenCharacter { position, ch } => write!(
                f,
                "it contains {ch:?} at character {position}, which is not allowed in file names or export queries"
            ),
        }
    }
}

/// A refused name: which kind of name, the name itself (escaped), and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} {name:?}: {problem}")]
pub struct NameError {
    /// "env id", "collection name", ...
    pub kind: String,
    pub name: String,
    pub problem: NameProblem,
}

/// Characters with no visible glyph that could make two different names look identical or
/// reorder text on a terminal (zero-width, bidi controls, BOM).
fn is_invisible(c: char) -> bool {
    matches!(
        c as u32,
        0x00AD | 0x200B..=0x200F | 0x202A..=0x202E | 0x2060..=0x2064 | 0x2066..=0x2069 | 0xFEFF
    )
}

/// Checks a name that becomes a path component and part of an export query. `kind` names the
/// thing in the error ("env id", "collection name").
pub fn validate_name(kind: &str, name: &str) -> Result<(), NameError> {
    let fail = |problem| {
        Err(NameError {
            kind: kind.to_string(),
            name: name.to_string(),
            problem,
        })
    };
    if name.is_empty() {
        return fail(NameProblem::Empty);
    }
    if name.len() > MAX_NAME_BYTES {
        return fail(NameProblem::TooLong {
            bytes: name.len(),
            max: MAX_NAME_BYTES,
        });
    }
    for (position, c) in name.chars().enumerate() {
        let position = position + 1;
        if c == '/' || c == '\\' {
            return fail(NameProblem::PathSeparator(c));
        }
        if c.is_control() {
            return fail(NameProblem::ControlCharacter { position });
        }
        if c.is_whitespace() {
            return fail(NameProblem::Whitespace { position });
        }
        if is_invisible(c) {
            return fail(NameProblem::InvisibleCharacter {
                position,
                codepoint: c as u32,
            });
        }
        // Quotes and backticks would break the JS-syntax export query; the rest are refused by
        // some file systems (Windows, SMB shares) that a destination root may live on.
        if matches!(c, '"' | '\'' | '`' | ':' | '*' | '?' | '<' | '>' | '|') {
            return fail(NameProblem::ForbiddenCharacter { position, ch: c });
        }
    }
    if name.contains("..") {
        return fail(NameProblem::DotDot);
    }
    if name.starts_with('.') {
        return fail(NameProblem::LeadingDot);
    }
    if name.ends_with('.') {
        return fail(NameProblem::TrailingDot);
    }
    Ok(())
}

/// [`validate_name`] for a CloudBase environment id.
pub fn validate_env_id(env: &str) -> Result<(), NameError> {
    validate_name("env id", env)
}

/// [`validate_name`] for a collection name.
pub fn validate_collection_name(collection: &str) -> Result<(), NameError> {
    validate_name("collection name", collection)
}

/// Formats a timestamp (converted to UTC, truncated to seconds) as `20261203T020000Z`: sortable,
/// and free of ':' so it is a valid file name everywhere.
pub fn format_snapshot_time(time: OffsetDateTime) -> String {
    let t = time.to_offset(UtcOffset::UTC);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// Parses the output of [`format_snapshot_time`]; `None` for anything else.
pub fn parse_snapshot_time(text: &str) -> Option<OffsetDateTime> {
    let b = text.as_bytes();
    if b.len() != 16 || b.get(8) != Some(&b'T') || b.get(15) != Some(&b'Z') {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<u32> {
        let part = text.get(range)?;
        if !part.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        part.parse().ok()
    };
    let year = i32::try_from(num(0..4)?).ok()?;
    let month = Month::try_from(u8::try_from(num(4..6)?).ok()?).ok()?;
    let day = u8::try_from(num(6..8)?).ok()?;
    let hour = u8::try_from(num(9..11)?).ok()?;
    let minute = u8::try_from(num(11..13)?).ok()?;
    let second = u8::try_from(num(13..15)?).ok()?;
    let date = Date::from_calendar_date(year, month, day).ok()?;
    let time = Time::from_hms(hour, minute, second).ok()?;
    Some(PrimitiveDateTime::new(date, time).assume_utc())
}

/// Where one snapshot lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotPaths {
    /// `<root>/<env>/<collection>`
    pub dir: PathBuf,
    /// `<dir>/<stem>.jsonl.zst`, or `<dir>/<stem>.jsonl.zst.age` when encrypted
    pub data: PathBuf,
    /// `<dir>/<stem>.manifest.json`
    pub manifest: PathBuf,
    /// `<UTC time>-<job_id>`
    pub stem: String,
}

impl SnapshotPaths {
    /// File name of the data file (what the manifest records as `data_file`).
    pub fn data_file_name(&self) -> String {
        format!("{}{}", self.stem, self.data_suffix())
    }

    /// Whether the data file is the encrypted variant.
    pub fn is_encrypted(&self) -> bool {
        self.data
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(is_encrypted_data_file)
    }

    fn data_suffix(&self) -> &'static str {
        if self.is_encrypted() {
            ENCRYPTED_DATA_SUFFIX
        } else {
            DATA_SUFFIX
        }
    }

    /// The same snapshot with its data file named for encrypted (`.jsonl.zst.age`) or plain
    /// (`.jsonl.zst`) content.
    pub fn with_encryption(mut self, encrypted: bool) -> SnapshotPaths {
        let suffix = if encrypted {
            ENCRYPTED_DATA_SUFFIX
        } else {
            DATA_SUFFIX
        };
        self.data = self.dir.join(format!("{}{suffix}", self.stem));
        self
    }

    /// Both possible data file names of this snapshot (plain, encrypted).
    pub fn data_file_names(&self) -> [String; 2] {
        [
            format!("{}{DATA_SUFFIX}", self.stem),
            format!("{}{ENCRYPTED_DATA_SUFFIX}", self.stem),
        ]
    }
}

/// The paths of the snapshot of `env`/`collection` from export job `job_id` started at `time`.
/// Both names are validated first, so the result always stays inside `root`.
pub fn snapshot_paths(
    root: &Path,
    env: &str,
    collection: &str,
    time: OffsetDateTime,
    job_id: u64,
) -> Result<SnapshotPaths, NameError> {
    validate_env_id(env)?;
    validate_collection_name(collection)?;
    let dir = root.join(env).join(collection);
    let stem = format!("{}-{job_id}", format_snapshot_time(time));
    Ok(SnapshotPaths {
        data: dir.join(format!("{stem}{DATA_SUFFIX}")),
        manifest: dir.join(format!("{stem}{MANIFEST_SUFFIX}")),
        dir,
        stem,
    })
}

/// Splits a snapshot stem `<UTC time>-<job_id>` into its parts.
pub fn parse_stem(stem: &str) -> Option<(OffsetDateTime, u64)> {
    let (time, job) = stem.split_once('-')?;
    if job.is_empty() || !job.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    Some((parse_snapshot_time(time)?, job.parse().ok()?))
}

/// Recognises a data file name (`<stem>.jsonl.zst` or `<stem>.jsonl.zst.age`) and returns
/// its stem.
pub fn data_file_stem(file_name: &str) -> Option<&str> {
    let stem = file_name
        .strip_suffix(DATA_SUFFIX)
        .or_else(|| file_name.strip_suffix(ENCRYPTED_DATA_SUFFIX))?;
    parse_stem(stem).map(|_| stem)
}

/// Whether a data file name is the encrypted variant (`.jsonl.zst.age`).
pub fn is_encrypted_data_file(file_name: &str) -> bool {
    file_name.ends_with(ENCRYPTED_DATA_SUFFIX)
}

/// Recognises a manifest file name (`<stem>.manifest.json`) and returns its stem.
pub fn manifest_file_stem(file_name: &str) -> Option<&str> {
    let stem = file_name.strip_suffix(MANIFEST_SUFFIX)?;
    parse_stem(stem).map(|_| stem)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn problem(name: &str) -> NameProblem {
        match validate_name("collection name", name) {
            Err(e) => e.problem,
            Ok(()) => panic!("{name:?} was accepted"),
        }
    }

    #[test]
    fn accepts_ordinary_and_unicode_names() {
        for name in [
            "orders",
            "test2-4a89da",
            "user_profiles",
            "a.b",
            "订单",
            "données",
            "x$y",
            "A1",
        ] {
            assert_eq!(validate_name("collection name", name), Ok(()), "{name}");
        }
        assert!(validate_name("x", &"a".repeat(MAX_NAME_BYTES)).is_ok());
    }

    #[test]
    fn refuses_dangerous_names_with_specific_problems() {
        assert_eq!(problem(""), NameProblem::Empty);
        assert_eq!(
            problem(&"a".repeat(MAX_NAME_BYTES + 1)),
            NameProblem::TooLong {
                bytes: MAX_NAME_BYTES + 1,
                max: MAX_NAME_BYTES
            }
        );
        assert_eq!(problem("a/b"), NameProblem::PathSeparator('/'));
        assert_eq!(problem("a\\b"), NameProblem::PathSeparator('\\'));
        assert_eq!(problem(".."), NameProblem::DotDot);
        assert_eq!(problem("a..b"), NameProblem::DotDot);
        assert_eq!(problem(".hidden"), NameProblem::LeadingDot);
        assert_eq!(problem("."), NameProblem::LeadingDot);
        assert_eq!(problem("trail."), NameProblem::TrailingDot);
        assert_eq!(
            problem("a\0b"),
            NameProblem::ControlCharacter { position: 2 }
        );
        assert_eq!(
            problem("ab\n"),
            NameProblem::ControlCharacter { position: 3 }
        );
        assert_eq!(
            problem("a\u{7f}"),
            NameProblem::ControlCharacter { position: 2 }
        );
        assert_eq!(problem("a b"), NameProblem::Whitespace { position: 2 });
        assert_eq!(
            problem("ab\u{202e}c"),
            NameProblem::InvisibleCharacter {
                position: 3,
                codepoint: 0x202E
            }
        );
        assert_eq!(
            problem("x\")"),
            NameProblem::ForbiddenCharacter {
                position: 2,
                ch: '"'
            }
        );
        assert!(matches!(
            problem("c:x"),
            NameProblem::ForbiddenCharacter { ch: ':', .. }
        ));
    }

    #[test]
    fn error_message_names_the_kind_the_name_and_the_problem() {
        let err = validate_env_id("prod/../x").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("env id"), "{text}");
        assert!(text.contains("prod/../x"), "{text}");
        assert!(text.contains("path separator"), "{text}");
        // Control characters are shown escaped, never raw.
        let text = validate_env_id("a\u{1b}[31m").unwrap_err().to_string();
        assert!(!text.contains('\u{1b}'), "{text}");
    }

    #[test]
    fn time_format_round_trips() {
        let t = datetime!(2026-12-03 02:00:00 UTC);
        assert_eq!(format_snapshot_time(t), "20261203T020000Z");
        assert_eq!(parse_snapshot_time("20261203T020000Z"), Some(t));
        // Converted to UTC and truncated to seconds.
        let local = datetime!(2026-12-03 10:00:00.75 +8);
        assert_eq!(format_snapshot_time(local), "20261203T020000Z");
        for bad in [
            "",
            "20261203T020000",
            "20261303T020000Z",
            "2026120xT020000Z",
            "20261203 020000Z",
            "+0261203T020000Z",
        ] {
            assert_eq!(parse_snapshot_time(bad), None, "{bad}");
        }
    }

    #[test]
    fn layout_of_a_snapshot() {
        let t = datetime!(2026-12-03 02:00:00 UTC);
        let p = snapshot_paths(Path::new("/backups"), "prod-1", "orders", t, 100000012).unwrap();
        assert_eq!(p.dir, Path::new("/backups/prod-1/orders"));
        assert_eq!(
            p.data,
            Path::new("/backups/prod-1/orders/20261203T020000Z-100000012.jsonl.zst")
        );
        assert_eq!(
            p.manifest,
            Path::new("/backups/prod-1/orders/20261203T020000Z-100000012.manifest.json")
        );
        assert_eq!(p.data_file_name(), "20261203T020000Z-100000012.jsonl.zst");
        assert_eq!(
            data_file_stem("20261203T020000Z-100000012.jsonl.zst"),
            Some("20261203T020000Z-100000012")
        );
        assert_eq!(
            manifest_file_stem("20261203T020000Z-100000012.manifest.json"),
            Some("20261203T020000Z-100000012")
        );
        assert_eq!(
            parse_stem("20261203T020000Z-100000012"),
            Some((t, 100000012))
        );
        assert_eq!(data_file_stem("notes.jsonl.zst"), None);
        // The encrypted variant.
        let e = p.clone().with_encryption(true);
        assert_eq!(
            e.data,
            Path::new("/backups/prod-1/orders/20261203T020000Z-100000012.jsonl.zst.age")
        );
        assert!(e.is_encrypted() && !p.is_encrypted());
        assert_eq!(
            e.data_file_name(),
            "20261203T020000Z-100000012.jsonl.zst.age"
        );
        assert_eq!(e.manifest, p.manifest);
        assert_eq!(e.clone().with_encryption(false), p);
        assert_eq!(
            data_file_stem("20261203T020000Z-100000012.jsonl.zst.age"),
            Some("20261203T020000Z-100000012")
        );
        assert!(is_encrypted_data_file("x.jsonl.zst.age"));
        assert_eq!(data_file_stem("20261203T020000Z-1.jsonl.age"), None);
        assert_eq!(data_file_stem("notes.jsonl.zst.age"), None);
        assert_eq!(parse_stem("20261203T020000Z-"), None);
        assert_eq!(parse_stem("20261203T020000Z-+1"), None);
    }

    #[test]
    fn layout_refuses_bad_names() {
        let t = datetime!(2026-12-03 02:00:00 UTC);
        let err = snapshot_paths(Path::new("/b"), "prod", "../etc", t, 1).unwrap_err();
        assert_eq!(err.kind, "collection name");
        let err = snapshot_paths(Path::new("/b"), "", "c", t, 1).unwrap_err();
        assert_eq!(err.kind, "env id");
    }
}
