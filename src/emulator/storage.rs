//! Cloud storage of each env and the fake COS's credentials: file ids
//! (`cloud://<env>.<bucket>/<path>`), blobs on disk (so downloads stream and big exports do not
//! live in memory), signed expiring download URLs, and the upload credentials `uploadfile` hands
//! out for the multipart POST.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rand::Rng;
use sha2::{Digest, Sha256};

/// Bucket that holds export results behind `file_url` (a Tencent-owned bucket in production).
pub const EXPORT_BUCKET: &str = "tcb-mongodb-data-1254135806";

/// One stored object.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredFile {
    pub blob: PathBuf,
    pub size: u64,
}

/// The env's storage bucket name (`7465-<env>-<appid number>` shape).
pub fn bucket_for_env(env: &str) -> String {
    format!("7465-{env}-1258717764")
}

pub fn file_id(env: &str, path: &str) -> String {
    format!("cloud://{env}.{}/{path}", bucket_for_env(env))
}

/// `cloud://<env>.<bucket>/<path>` → (env, bucket, path).
pub fn parse_file_id(id: &str) -> Option<(String, String, String)> {
    let rest = id.strip_prefix("cloud://")?;
    let (host, path) = rest.split_once('/')?;
    let (env, bucket) = host.split_once('.')?;
    if env.is_empty() || bucket.is_empty() || path.is_empty() {
        return None;
    }
    Some((env.to_string(), bucket.to_string(), path.to_string()))
}

/// A storage path is acceptable: relative, no `..` segment, no control characters.
pub fn valid_storage_path(path: &str) -> bool {
    !path.is_empty()
        && path.len() <= 1024
        && !path.starts_with('/')
        && !path.chars().any(char::is_control)
        && !path
            .split('/')
            .any(|s| s == ".." || s == "." || s.is_empty())
}

/// Where blobs live: a private temp directory, or `<data_dir>/blobs`.
#[derive(Debug)]
pub struct BlobDir {
    root: PathBuf,
    counter: AtomicU64,
    temporary: bool,
}

impl BlobDir {
    pub fn open(data_dir: Option<&Path>) -> std::io::Result<Self> {
        let (root, temporary) = match data_dir {
            Some(d) => (d.join("blobs"), false),
            None => {
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or(0);
                let tag: u32 = rand::thread_rng().gen();
                (
                    std::env::temp_dir().join(format!(
                        "tcb-emulator-{}-{nanos}-{tag:08x}",
                        std::process::id()
                    )),
                    true,
                )
            }
        };
        std::fs::create_dir_all(&root)?;
        let start = std::fs::read_dir(&root)
            .map(|it| it.count() as u64)
            .unwrap_or(0);
        Ok(BlobDir {
            root,
            counter: AtomicU64::new(start + 1),
            temporary,
        })
    }

    /// A fresh, unused blob path.
    pub fn new_blob(&self) -> PathBuf {
        loop {
            let n = self.counter.fetch_add(1, Ordering::Relaxed);
            let p = self.root.join(format!("blob-{n:010}"));
            if !p.exists() {
                return p;
            }
        }
    }

    /// Remove the directory if it is a private temp dir.
    pub fn cleanup(&self) {
        if self.temporary {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}

/// Signs download URLs and upload credentials with a per-process key.
#[derive(Debug)]
pub struct Signer {
    key: [u8; 32],
}

impl Default for Signer {
    fn default() -> Self {
        Signer {
            key: rand::thread_rng().gen(),
        }
    }
}

impl Signer {
    pub fn sign(&self, parts: &[&str]) -> String {
        let mut h = Sha256::new();
        h.update(self.key);
        for p in parts {
            h.update((p.len() as u64).to_le_bytes());
            h.update(p.as_bytes());
        }
        hex::encode(h.finalize()).chars().take(40).collect()
    }

    /// Signature of a download URL valid until `expires` (virtual unix seconds).
    pub fn url_signature(&self, bucket: &str, path: &str, expires: u64) -> String {
        self.sign(&["download", bucket, path, &expires.to_string()])
    }
}

/// `<base>/cos/<bucket>/<path>` with every path segment percent-encoded.
pub fn object_url(base: &str, bucket: &str, path: &str) -> String {
    let mut out = format!(
        "{}/cos/{}",
        base.trim_end_matches('/'),
        encode_segment(bucket)
    );
    for seg in path.split('/') {
        out.push('/');
        out.push_str(&encode_segment(seg));
    }
    out
}

/// A signed download URL: `<object url>?sign=...&t=<expiry>`.
pub fn signed_url(base: &str, signer: &Signer, bucket: &str, path: &str, expires: u64) -> String {
    format!(
        "{}?sign={}&t={expires}",
        object_url(base, bucket, path),
        signer.url_signature(bucket, path, expires)
    )
}

fn encode_segment(seg: &str) -> String {
    let mut out = String::new();
    for b in seg.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Credentials handed out by `uploadfile`, checked by the COS POST.
#[derive(Clone, Debug, PartialEq)]
pub struct UploadTicket {
    pub env: String,
    pub bucket: String,
    pub path: String,
    pub token: String,
    pub authorization: String,
    pub cos_file_id: String,
    pub expires_at: f64,
}

impl UploadTicket {
    pub fn issue(signer: &Signer, env: &str, path: &str, now: f64, ttl: u64) -> Self {
        let bucket = bucket_for_env(env);
        let mut rng = rand::thread_rng();
        let token: String = (0..3)
            .map(|_| format!("{:032x}", rng.gen::<u128>()))
            .collect();
        let start = now.max(0.0) as u64;
        let end = start + ttl;
        let ak = format!("AKID{:032X}", rng.gen::<u128>());
        let sig = signer.sign(&["upload", &bucket, path, &token, &end.to_string()]);
        let authorization = format!(
            "q-sign-algorithm=sha1&q-ak={ak}&q-sign-time={start};{end}&q-key-time={start};{end}&q-header-list=&q-url-param-list=&q-signature={sig}"
        );
        let cos_file_id = format!(
            "HDze32/qZENCwWi5N5akgoHSRzgPfLBzOBNIcXqqGwZTN+{:016x}",
            rng.gen::<u64>()
        );
        UploadTicket {
            env: env.to_string(),
            bucket,
            path: path.to_string(),
            token,
            authorization,
            cos_file_id,
            expires_at: now + ttl as f64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_ids_round_trip() {
        let id = file_id("test2-4a89da", "dir/A.png");
        assert_eq!(
            id,
            "cloud://test2-4a89da.7465-test2-4a89da-1258717764/dir/A.png"
        );
        assert_eq!(
            parse_file_id(&id),
            Some((
                "test2-4a89da".into(),
                "7465-test2-4a89da-1258717764".into(),
                "dir/A.png".into()
            ))
        );
        assert_eq!(parse_file_id("cloud://nodot/x"), None);
        assert!(!valid_storage_path("../etc/passwd"));
        assert!(!valid_storage_path("/abs"));
        assert!(valid_storage_path("backups/2024 01/x.json"));
        assert_eq!(
            object_url("http://h", "b", "a b/ü"),
            "http://h/cos/b/a%20b/%C3%BC"
        );
    }
}
