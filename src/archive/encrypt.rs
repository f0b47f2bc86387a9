//! Optional encryption at rest with [age](https://age-encryption.org/v1): the stored bytes of a
//! snapshot are the zstd stream encrypted to one or more X25519 recipients.
//!
//! Writing needs only the recipients (public keys), so a backup machine never holds a key that
//! can read its own archive; reading the data back (`check --read-data`, `--test-restore`,
//! `restore`) needs an identity file. Encryption sits *below* compression in the writer and
//! *above* the file: the temp file only ever receives ciphertext, and the stored sha256 in the
//! manifest is the sha256 of the ciphertext (so the cheap check needs no key).
//!
//! Only native X25519 recipients (`age1…`) and identities (`AGE-SECRET-KEY-1…`) are accepted:
//! no passphrases (a daemon cannot type one), no plugins (they run programs), no SSH keys.

use std::fmt;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use age::x25519;

use super::ArchiveError;

/// What every age v1 file starts with (the header's version line).
pub const AGE_MAGIC: &[u8] = b"age-encryption.org/v1\n";
/// The manifest's name for this encryption format.
pub const AGE_FORMAT: &str = "age";
/// Largest identity or recipients file accepted (real ones are a few hundred bytes).
const MAX_KEY_FILE_BYTES: u64 = 1024 * 1024;

/// Parses one X25519 recipient (`age1…`). The error says what is wrong without echoing more
/// than the key's start (recipients are public, but a pasted secret key must not be printed).
pub fn parse_recipient(text: &str) -> Result<x25519::Recipient, String> {
    let text = text.trim();
    if text.starts_with("AGE-SECRET-KEY-") {
        return Err("this is a secret key (AGE-SECRET-KEY-…), not a recipient: put the public key (age1…, printed by `age-keygen -y`) here and the secret key in identity_file".into());
    }
    if text.starts_with("age1") && text.len() > 4 && !text.starts_with("age1pq") {
        return x25519::Recipient::from_str(text)
            .map_err(|e| format!("{:?} is not a valid age X25519 recipient: {e}", short(text)));
    }
    if text.starts_with("ssh-") {
        return Err("SSH keys are not supported as recipients: use an age X25519 key (age1…, from `age-keygen`)".into());
    }
    Err(format!(
        "{:?} is not an age X25519 recipient (expected a public key starting with \"age1\", from `age-keygen`)",
        short(text)
    ))
}

/// The start of a key, for messages.
fn short(text: &str) -> String {
    let mut s: String = text.chars().take(16).collect();
    if text.chars().count() > 16 {
        s.push('…');
    }
    s
}

/// Parses a recipients file in age's format: one recipient per line, `#` comments and blank
/// lines ignored. Errors carry the 1-based line.
pub fn parse_recipients_file(text: &str) -> Result<Vec<x25519::Recipient>, (usize, String)> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        out.push(parse_recipient(line).map_err(|e| (i + 1, e))?);
    }
    Ok(out)
}

/// Reads a small key file, refusing anything that is not a plain file of sane size.
fn read_key_file(path: &Path) -> io::Result<String> {
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    if meta.len() > MAX_KEY_FILE_BYTES {
        return Err(io::Error::other(format!(
            "{} bytes is larger than any key file",
            meta.len()
        )));
    }
    let bytes = std::fs::read(path)?;
    String::from_utf8(bytes).map_err(|_| io::Error::other("not UTF-8 text"))
}

/// Reads and parses a recipients file (see [`parse_recipients_file`]).
pub fn read_recipients_file(path: &Path) -> Result<Vec<x25519::Recipient>, String> {
    let text = read_key_file(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    parse_recipients_file(&text).map_err(|(line, e)| format!("{} line {line}: {e}", path.display()))
}

/// The public keys every new snapshot is encrypted to.
#[derive(Clone, PartialEq, Eq)]
pub struct Recipients {
    keys: Vec<x25519::Recipient>,
}

impl Recipients {
    /// `None` for an empty list: encrypting to nobody is never what was meant.
    pub fn new(keys: Vec<x25519::Recipient>) -> Option<Recipients> {
        let mut unique: Vec<x25519::Recipient> = Vec::with_capacity(keys.len());
        for k in keys {
            if !unique.contains(&k) {
                unique.push(k);
            }
        }
        (!unique.is_empty()).then_some(Recipients { keys: unique })
    }

    /// The recipients as `age1…` strings (what the manifest records).
    pub fn to_strings(&self) -> Vec<String> {
        self.keys.iter().map(|k| k.to_string()).collect()
    }

    fn encryptor(&self) -> Result<age::Encryptor, io::Error> {
        age::Encryptor::with_recipients(self.keys.iter().map(|k| k as &dyn age::Recipient))
            .map_err(|e| io::Error::other(format!("age: {e}")))
    }
}

impl fmt::Debug for Recipients {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.to_strings()).finish()
    }
}

/// Why an identity file cannot be used. Never contains key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("identity file {path}: cannot read: {message}")]
    Read { path: PathBuf, message: String },
    #[error("identity file {path} line {line}: {message}")]
    Invalid {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("identity file {path} holds no AGE-SECRET-KEY-1… line")]
    Empty { path: PathBuf },
}

/// The secret keys read from an identity file (`age-keygen` output). The keys stay in memory;
/// `Debug` shows only the file and the matching public keys.
#[derive(Clone)]
pub struct Identities {
    path: PathBuf,
    keys: Vec<x25519::Identity>,
}

impl Identities {
    /// Reads an identity file: `AGE-SECRET-KEY-1…` lines, `#` comments and blank lines ignored.
    /// Logs a warning if other users can read it.
    pub fn load(path: &Path) -> Result<Identities, IdentityError> {
        if let Some(warning) = crate::config::permission_warning(path) {
            tracing::warn!("{warning} (it holds the key that decrypts the backups)");
        }
        let text = read_key_file(path).map_err(|e| IdentityError::Read {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Self::parse(&text, path)
    }

    /// Parses identity file text; `path` is only used in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Identities, IdentityError> {
        let mut keys = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let invalid = |message: &str| IdentityError::Invalid {
                path: path.to_path_buf(),
                line: i + 1,
                message: message.to_string(),
            };
            if !line.starts_with("AGE-SECRET-KEY-1") {
                return Err(invalid(if line.starts_with("age1") {
                    "this is a recipient (public key), not an identity: the identity file holds the AGE-SECRET-KEY-1… line written by `age-keygen`"
                } else if line.starts_with("AGE-PLUGIN-") {
                    "plugin identities are not supported"
                } else {
                    "not an age X25519 identity (expected a line starting with AGE-SECRET-KEY-1)"
                }));
            }
            // The parser's own message never includes the key.
            let key = x25519::Identity::from_str(line)
                .map_err(|e| invalid(&format!("not a valid age identity: {e}")))?;
            keys.push(key);
        }
        if keys.is_empty() {
            return Err(IdentityError::Empty {
                path: path.to_path_buf(),
            });
        }
        Ok(Identities {
            path: path.to_path_buf(),
            keys,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The public keys of these identities.
    pub fn recipients(&self) -> Vec<String> {
        self.keys
            .iter()
            .map(|k| k.to_public().to_string())
            .collect()
    }
}

impl fmt::Debug for Identities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identities")
            .field("path", &self.path)
            .field("recipients", &self.recipients())
            .finish()
    }
}

/// Where the compressed stream goes: straight to the file, or through an age encryptor.
pub(crate) enum StoredWriter<W: Write> {
    Plain(W),
    Age(age::stream::StreamWriter<W>),
}

impl<W: Write> StoredWriter<W> {
    /// Writes the age header to `inner` right away when `recipients` is set, so the first
    /// bytes of the file are the header and never plaintext.
    pub(crate) fn new(inner: W, recipients: Option<&Recipients>) -> io::Result<StoredWriter<W>> {
        match recipients {
            None => Ok(StoredWriter::Plain(inner)),
            Some(r) => Ok(StoredWriter::Age(r.encryptor()?.wrap_output(inner)?)),
        }
    }

    /// Ends the stream (the final age chunk) and returns the file writer.
    pub(crate) fn finish(self) -> io::Result<W> {
        match self {
            StoredWriter::Plain(w) => Ok(w),
            StoredWriter::Age(w) => w.finish(),
        }
    }
}

impl<W: Write> Write for StoredWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            StoredWriter::Plain(w) => w.write(buf),
            StoredWriter::Age(w) => w.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            StoredWriter::Plain(w) => w.flush(),
            StoredWriter::Age(w) => w.flush(),
        }
    }
}

/// Starts decrypting the stored bytes `input` of the snapshot at `path` (for messages):
/// reads the age header and unwraps the file key with `identities`. The returned reader
/// yields the zstd stream; a truncated or altered file fails while reading it (age
/// authenticates every 64 KiB chunk and the end of the stream).
pub(crate) fn decrypting_reader<R: Read>(
    input: R,
    path: &Path,
    identities: Option<&Identities>,
    recipients: &[String],
) -> Result<age::stream::StreamReader<R>, ArchiveError> {
    let Some(identities) = identities else {
        return Err(ArchiveError::NeedsIdentity {
            path: path.to_path_buf(),
        });
    };
    let corrupt = |message: String| ArchiveError::Corrupt {
        path: path.to_path_buf(),
        message,
    };
    let decryptor = age::Decryptor::new(input).map_err(|e| match e {
        age::DecryptError::Io(io) if io.kind() == io::ErrorKind::UnexpectedEof => {
            corrupt("age header: the file ends inside the header (truncated)".into())
        }
        age::DecryptError::Io(io) if io.kind() != io::ErrorKind::InvalidData => ArchiveError::Io {
            path: path.to_path_buf(),
            action: "read",
            source: io,
        },
        other => corrupt(format!("age header: {other}")),
    })?;
    if decryptor.is_scrypt() {
        return Err(corrupt(
            "the file is encrypted with a passphrase, not to recipients; tcb-backup never writes such files".into(),
        ));
    }
    decryptor
        .decrypt(identities.keys.iter().map(|k| k as &dyn age::Identity))
        .map_err(|e| match e {
            age::DecryptError::NoMatchingKeys => ArchiveError::WrongIdentity {
                path: path.to_path_buf(),
                identity_file: identities.path.clone(),
                recipients: recipients.join(", "),
            },
            other => corrupt(format!("age: {other}")),
        })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A fixed test key pair (never used outside tests).
    pub(crate) fn test_identity() -> (String, String) {
        let id = x25519::Identity::generate();
        use age::secrecy::ExposeSecret;
        (
            id.to_string().expose_secret().to_string(),
            id.to_public().to_string(),
        )
    }

    #[test]
    fn recipients_parse_with_specific_errors() {
        let (secret, public) = test_identity();
        assert!(parse_recipient(&public).is_ok());
        let err = parse_recipient(&secret).unwrap_err();
        assert!(err.contains("secret key"), "{err}");
        // The secret never appears in the message.
        assert!(!err.contains(&secret[20..]), "{err}");
        assert!(parse_recipient("ssh-ed25519 AAAA")
            .unwrap_err()
            .contains("SSH"));
        assert!(parse_recipient("age1xyz")
            .unwrap_err()
            .contains("not a valid"));
        assert!(parse_recipient("hello").unwrap_err().contains("age1"));
        let text = format!("# team key\n\n{public}\nage1bad\n");
        assert_eq!(parse_recipients_file(&text).unwrap_err().0, 4);
        assert_eq!(
            parse_recipients_file(&format!("{public}\n")).unwrap().len(),
            1
        );
        // Duplicates collapse; an empty set is refused.
        let k = parse_recipient(&public).unwrap();
        assert_eq!(
            Recipients::new(vec![k.clone(), k]).unwrap().to_strings(),
            [public]
        );
        assert!(Recipients::new(vec![]).is_none());
    }

    #[test]
    fn identity_files_parse_without_leaking_keys() {
        let (secret, public) = test_identity();
        let p = Path::new("/keys/backup.key");
        let ids = Identities::parse(
            &format!("# created: today\n# public key: {public}\n{secret}\n"),
            p,
        )
        .unwrap();
        assert_eq!(ids.recipients(), std::slice::from_ref(&public));
        assert!(!format!("{ids:?}").contains(&secret));
        let err = Identities::parse(&format!("{public}\n"), p).unwrap_err();
        assert!(
            matches!(err, IdentityError::Invalid { line: 1, .. }),
            "{err}"
        );
        let bad = format!("{}x", &secret[..secret.len() - 1]);
        let err = Identities::parse(&bad, p).unwrap_err().to_string();
        assert!(err.contains("line 1") && !err.contains(&bad), "{err}");
        assert!(matches!(
            Identities::parse("# nothing\n", p),
            Err(IdentityError::Empty { .. })
        ));
        let err = Identities::load(Path::new("/nonexistent/key")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/key"), "{err}");
    }
}
