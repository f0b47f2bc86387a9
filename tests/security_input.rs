//! Security evidence on hostile input, through the real binary: path traversal and control
//! characters in env/collection names are refused (configured or discovered), plain http to a
//! non-loopback API host is refused, a config file readable by others draws a warning.

// Shared with the workflow tests (their file); its style lints are theirs.
#[allow(clippy::field_reassign_with_default)]
mod backup_support;
mod crash_support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use crash_support::{run, stderr, Fixture};

/// A config for one app with the given env id, collection list and api_base.
fn config(dir: &Path, env: &str, collections: &[&str], api_base: &str) -> PathBuf {
    let list: Vec<String> = collections
        .iter()
        .map(|c| serde_json::to_string(c).expect("json string is a toml string"))
        .collect();
    let text = format!(
        r#"
state_dir = "{state}"
[destination]
root = "{dest}"
[[apps]]
appid = "wxsecin0001aa55bb66"
secret_env = "TCB_TEST_SECRET_SECIN"
api_base = {api_base}
[[apps.envs]]
id = {env}
collections = [{list}]
"#,
        state = dir.join("state").display(),
        dest = dir.join("snapshots").display(),
        api_base = serde_json::to_string(api_base).expect("string"),
        env = serde_json::to_string(env).expect("string"),
        list = list.join(", "),
    );
    let path = dir.join("tcb-backup.toml");
    std::fs::write(&path, text).expect("write config");
    set_mode(&path, 0o600);
    path
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// `config check`, the secret given to the child alone (a process-wide `set_var` would race
/// with the other tests of this binary running in parallel).
async fn config_check(path: &Path) -> std::process::Output {
    let env = [("TCB_TEST_SECRET_SECIN", "secret-secin-0123456789abcdef")];
    run(path, &["config", "check"], &env, Duration::from_secs(30)).await
}

#[tokio::test]
async fn hostile_names_in_the_config_are_refused() {
    // (env, collections, the exact refusal: which name, escaped, and what is wrong with it)
    let cases: &[(&str, &[&str], &str)] = &[
        (
            "prod",
            &["../../etc"],
            r#"invalid collection name "../../etc": it contains the path separator '/'"#,
        ),
        (
            "prod",
            &["a/b"],
            r#"invalid collection name "a/b": it contains the path separator '/'"#,
        ),
        (
            "prod",
            &["a\\b"],
            r#"invalid collection name "a\\b": it contains the path separator '\\'"#,
        ),
        (
            "prod",
            &[".."],
            r#"invalid collection name "..": it contains "..""#,
        ),
        (
            "prod",
            &["bell\u{7}name"],
            r#"invalid collection name "bell\u{7}name": it contains a control character at character 5"#,
        ),
        (
            "prod",
            &["new\nline"],
            r#"invalid collection name "new\nline": it contains a control character at character 4"#,
        ),
        (
            "../prod",
            &["orders"],
            r#"invalid env id "../prod": it contains the path separator '/'"#,
        ),
        (
            "pr\u{1b}od",
            &["orders"],
            r#"invalid env id "pr\u{1b}od": it contains a control character at character 3"#,
        ),
    ];
    for (env, collections, refusal) in cases {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = config(dir.path(), env, collections, "https://api.weixin.qq.com");
        let out = config_check(&path).await;
        let err = stderr(&out);
        assert_eq!(
            out.status.code(),
            Some(10),
            "env {env:?} collections {collections:?} accepted: {err}"
        );
        assert!(
            err.contains(refusal),
            "the error should be {refusal:?}, got: {err}"
        );
        assert!(!dir.path().join("snapshots").exists());
    }
    // The same config with a clean name passes, so the refusals above are about the names.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = config(dir.path(), "prod", &["orders"], "https://api.weixin.qq.com");
    let out = config_check(&path).await;
    assert!(
        out.status.success(),
        "clean config refused: {}",
        stderr(&out)
    );
}

#[tokio::test]
async fn plain_http_is_refused_for_non_loopback_hosts() {
    for (base, ok) in [
        ("http://api.weixin.qq.com", false),
        ("http://10.0.0.7:8080", false),
        ("ftp://api.weixin.qq.com", false),
        ("https://api.weixin.qq.com", true),
        ("http://127.0.0.1:8780", true),
        ("http://[::1]:8780", true),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = config(dir.path(), "prod", &["orders"], base);
        let out = config_check(&path).await;
        assert_eq!(out.status.success(), ok, "{base}: {}", stderr(&out));
        if !ok {
            let err = stderr(&out);
            assert!(
                err.contains("https"),
                "{base}: the error should say https: {err}"
            );
        }
    }
}

/// A config file readable by other users draws a warning naming the file and the fix
/// (`config::config_permission_warning`, called whenever the config is loaded); a 0600 one
/// draws none.
#[tokio::test]
async fn world_readable_config_draws_a_warning() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = config(dir.path(), "prod", &["orders"], "https://api.weixin.qq.com");
    let out = config_check(&path).await;
    assert!(out.status.success());
    assert!(!stderr(&out).contains("other users"), "{}", stderr(&out));
    set_mode(&path, 0o644);
    let out = config_check(&path).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("other users"),
        "no warning for a 0644 config: {}",
        stderr(&out)
    );
}

/// A collection the server lists with a hostile name is refused on discovery: nothing is
/// written outside the destination, and the other collections are still backed up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_discovered_names_never_escape_the_destination() {
    let fx = Fixture::new("sed", 1, 2, 10, 0, 2).await;
    let env = fx.apps[0].envs[0].clone();
    let mut planted = Vec::new();
    for name in ["..", "../escape", "a/b", "ctl\u{7}x"] {
        if fx.emu.control().create_collection(&env, name).is_ok() {
            planted.push(name);
        }
    }
    if planted.is_empty() {
        eprintln!("SKIP: the emulator refuses every hostile collection name itself");
        return;
    }
    let out = fx.backup(&[], Duration::from_secs(120)).await;
    let text = format!("{}{}", stderr(&out), String::from_utf8_lossy(&out.stdout));
    // Only the destination and the state store exist beside the config.
    let mut top: Vec<String> = std::fs::read_dir(fx.dir.path())
        .expect("read dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    top.sort();
    assert_eq!(top, ["snapshots", "state", "tcb-backup.toml"], "{text}");
    for f in backup_support::walk(&fx.snapshots_dir()) {
        let rel = f.strip_prefix(fx.snapshots_dir()).expect("under the root");
        for part in rel.components() {
            let s = part.as_os_str().to_string_lossy();
            assert!(
                s != ".." && !s.chars().any(char::is_control),
                "hostile path written: {}",
                f.display()
            );
        }
    }
    // The clean collections made it.
    let found = backup_support::manifests(&fx.snapshots_dir());
    assert_eq!(found.len(), 2, "{text}");
    // Each refusal is reported by name, and the run does not pretend it all went well.
    assert_eq!(
        text.matches("invalid collection name").count(),
        planted.len(),
        "{text}"
    );
    assert_eq!(
        out.status.code(),
        Some(3),
        "partial failure exit code: {text}"
    );
    fx.emu.shutdown().await;
}
