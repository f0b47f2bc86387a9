//! The `[daemon]`, `[daemon.alerts]` and `[[schedules]]` sections: defaults, overrides, and
//! every problem reported at its key path (secrets never echoed).

use std::collections::HashMap;
use std::time::Duration;

use tcb_backup::daemon::settings::{
    exposed_listener_warning, from_config, from_config_text, AlertEvent, AlertFormat, EnvLookup,
    OverlapPolicy, ProcessEnv, ScheduleTask,
};

struct Env(HashMap<&'static str, &'static str>);
impl EnvLookup for Env {
    fn var(&self, name: &str) -> Option<String> {
        self.0.get(name).map(|v| v.to_string())
    }
}

fn env() -> Env {
    Env(HashMap::from([
        (
            "HOOK",
            "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=SECRETKEY",
        ),
        ("TOKEN", "tok"),
    ]))
}

#[test]
fn defaults_without_sections() {
    let s = from_config_text("", &env()).unwrap();
    assert_eq!(s.listen.to_string(), "127.0.0.1:9817");
    assert_eq!(s.schedules.len(), 1);
    let d = &s.schedules[0];
    assert_eq!(d.name, "default");
    assert_eq!(d.schedule.cron().as_str(), "0 0 2 * * * *");
    assert_eq!(d.schedule.time_zone_name(), "Asia/Shanghai");
    assert_eq!(d.overlap, OverlapPolicy::Skip);
    assert_eq!(d.catch_up_window, Duration::from_secs(12 * 3600));
    assert!(s.status_token.is_none() && s.alerts.webhook.is_none());
}

#[test]
fn full_sections_with_overrides() {
    let text = r#"
[daemon]
listen = "127.0.0.1:9900"
status_token_env = "TOKEN"
catch_up_window = "6h"
overlap = "queue"
jitter = "5m"
stale_factor = 2

[daemon.alerts]
webhook_url_env = "HOOK"
format = "wecom"
on = ["failure", "stale"]

[[schedules]]
name = "nightly"
cron = "0 0 2 * * * *"

[[schedules]]
name = "orders-hourly"
cron = "15 * * * *"
time_zone = "UTC"
envs = ["prod-1"]
collections = ["orders"]
overlap = "skip"
jitter = "0s"
"#;
    let s = from_config_text(text, &env()).unwrap();
    assert_eq!(s.listen.port(), 9900);
    assert_eq!(s.status_token.as_ref().unwrap().0, "tok");
    assert_eq!(s.stale_factor, 2.0);
    assert_eq!(s.alerts.format, AlertFormat::Wecom);
    assert_eq!(s.alerts.on, [AlertEvent::Failure, AlertEvent::Stale]);
    assert!(
        !format!("{s:?}").contains("SECRETKEY"),
        "Debug must not print the URL"
    );
    let (a, b) = (&s.schedules[0], &s.schedules[1]);
    assert_eq!(
        (a.overlap, a.jitter),
        (OverlapPolicy::Queue, Duration::from_secs(300))
    );
    assert_eq!(a.catch_up_window, Duration::from_secs(6 * 3600));
    assert_eq!((b.overlap, b.jitter), (OverlapPolicy::Skip, Duration::ZERO));
    assert!(
        b.covers("prod-1", "orders") && !b.covers("prod-1", "users") && !b.covers("dev", "orders")
    );
    assert!(a.covers("anything", "at-all"));
}

#[test]
fn every_problem_at_its_location() {
    let text = r#"
[daemon]
listen = "nowhere"
overlap = "sometimes"
jitter = "soon"
colour = "blue"

[daemon.alerts]
webhook_url_env = "MISSING_VAR"
format = "slack"

[[schedules]]
name = "bad cron"
cron = "0 0 2 * * 8 *"

[[schedules]]
name = "x"
cron = "0 0 2 * * 1 *"
time_zone = "Mars/Olympus"

[[schedules]]
name = "x"
cron = "@daily"
"#;
    let err = from_config_text(text, &env()).unwrap_err();
    let problems: Vec<String> = err.problems.iter().map(|p| p.to_string()).collect();
    let has = |needle: &str| {
        assert!(
            problems.iter().any(|p| p.contains(needle)),
            "no problem containing {needle:?} in {problems:#?}"
        )
    };
    has("daemon.listen: `nowhere` is not an address");
    has("daemon.overlap: `sometimes` is not an overlap policy");
    has("daemon.jitter:");
    has("daemon.colour: unknown key");
    has("daemon.alerts.webhook_url_env: environment variable `MISSING_VAR` is not set");
    has("daemon.alerts.format: `slack`");
    has("schedules[0].name: `bad cron` is not a valid schedule name");
    has("schedules[1].time_zone: unknown time zone `Mars/Olympus`");
    has("schedules[2].name: schedule `x` is defined twice");
    // The cron error of a schedule with a valid name points at the field.
    let err = from_config_text(
        "[[schedules]]\nname = \"n\"\ncron = \"0 0 2 * * 8 *\"\n",
        &env(),
    )
    .unwrap_err();
    assert_eq!(
        err.problems[0].to_string(),
        "schedules[0].cron: field 6 (day of week) `8`: out of range 0–6"
    );
}

/// `stale_factor` is a number from 1 to 100: a huge one (which used to overflow the freshness
/// arithmetic and panic the daemon) is a config error at its key, like a small one.
#[test]
fn stale_factor_is_bounded() {
    for bad in ["1e300", "0.5", "101", "\"2\"", "nan", "inf"] {
        let err =
            from_config_text(&format!("[daemon]\nstale_factor = {bad}\n"), &env()).unwrap_err();
        assert_eq!(
            err.problems[0].to_string().split(" (line").next().unwrap(),
            "daemon.stale_factor: must be a number from 1.0 to 100",
            "{bad}"
        );
    }
    for (good, want) in [("1", 1.0), ("100", 100.0), ("1.25", 1.25)] {
        let s = from_config_text(&format!("[daemon]\nstale_factor = {good}\n"), &env()).unwrap();
        assert_eq!(s.stale_factor, want);
    }
}

#[test]
fn check_and_forget_tasks() {
    let text = r#"
[[schedules]]
name = "weekly-check"
cron = "@weekly"
task = "check"
envs = ["prod-1"]
[schedules.check]
read_data_subset = "10%"
test_restore = true
sample = 5

[[schedules]]
name = "full-read"
task = "check"
check = { read_data = true }

[[schedules]]
name = "retention"
cron = "0 0 5 * * * *"
task = "forget"
[schedules.forget]
keep_last = 3
keep_daily = 14
keep_within = "30d"
keep_min = 2
prune = true
"#;
    let s = from_config_text(text, &env()).unwrap();
    let ScheduleTask::Check(c) = &s.schedules[0].task else {
        panic!("{:?}", s.schedules[0].task)
    };
    assert_eq!(
        (c.read_data_percent, c.test_restore, c.sample),
        (Some(10.0), true, 5)
    );
    // A check schedule never sets a collection's expected backup interval.
    assert!(!s.schedules[0].covers("prod-1", "orders"));
    assert!(s.schedules[0].selects("prod-1", "orders"));
    let ScheduleTask::Check(c) = &s.schedules[1].task else {
        panic!()
    };
    assert_eq!(
        (c.read_data_percent, c.test_restore, c.sample),
        (Some(100.0), false, 20)
    );
    let ScheduleTask::Forget(f) = &s.schedules[2].task else {
        panic!()
    };
    assert!(f.prune);
    assert_eq!(
        (f.policy.keep_last, f.policy.keep_daily, f.policy.min_keep),
        (3, 14, 2)
    );
    assert_eq!(f.policy.keep_within, Some(Duration::from_secs(30 * 86_400)));

    let bad = r#"
[[schedules]]
name = "a"
task = "vacuum"

[[schedules]]
name = "b"
task = "forget"

[[schedules]]
name = "c"
task = "forget"
forget = { prune = true, keep_min = 0, keep_weekly = -1 }

[[schedules]]
name = "d"
check = { read_data = true }

[[schedules]]
name = "e"
task = "check"
check = { read_data = true, read_data_subset = "5%", colour = 1 }

[[schedules]]
name = "f"
task = "check"
check = { read_data_subset = "250%" }
"#;
    let err = from_config_text(bad, &env()).unwrap_err();
    let problems: Vec<String> = err.problems.iter().map(|p| p.to_string()).collect();
    let has = |needle: &str| {
        assert!(
            problems.iter().any(|p| p.contains(needle)),
            "no problem containing {needle:?} in {problems:#?}"
        )
    };
    has("schedules[0].task: `vacuum` is not a schedule task");
    has("schedules[1].forget: missing: a forget schedule needs a retention policy");
    has("schedules[2].forget.keep_weekly: must be a whole number");
    has("schedules[2].forget: --keep-min must be at least 1");
    has("schedules[3].check: only allowed with task = \"check\"");
    has("schedules[4].check.read_data: give either");
    has("schedules[4].check.colour: unknown key");
    has("schedules[5].check.read_data_subset:");
}

/// Schedules are checked against the apps and envs of the whole file: `config check` and the
/// daemon's start (and reload) refuse a schedule naming what is not configured.
#[test]
fn schedules_naming_unknown_envs_or_collections_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let base = r#"
[[apps]]
appid = "wx1234567890abcdef"
secret_env = "SOME_SECRET"

[[apps.envs]]
id = "prod-1"
collections = ["orders", "users"]

[[apps.envs]]
id = "logs-1"
discover = { include = ["log_*"], exclude = ["log_tmp*"] }
"#;
    let load = |schedules: &str| {
        let text = format!("{base}{schedules}");
        tcb_backup::config::load_str(&text, &dir.path().join("t.toml"), dir.path())
    };
    load(
        r#"
[[schedules]]
name = "ok"
envs = ["prod-1", "logs-1"]
collections = ["orders", "log_2026"]
"#,
    )
    .expect("listed and glob-matched collections are fine");
    let err = load(
        r#"
[[schedules]]
name = "typos"
envs = ["prod-1", "prod-2"]
collections = ["orders", "oders"]

[[schedules]]
name = "glob"
envs = ["logs-1"]
collections = ["log_tmp1", "log_ok"]

[[schedules]]
name = "all-envs"
collections = ["nowhere"]
"#,
    )
    .unwrap_err();
    let text = err.to_string();
    for needle in [
        "schedules[0].envs[1]",
        "env `prod-2` is not configured",
        "schedules[0].collections[1]",
        "collection `oders` is neither listed in nor matched by the discover globs of env(s) prod-1, prod-2",
        "schedules[1].collections[0]",
        "schedules[2].collections[0]",
        "any configured env",
    ] {
        assert!(text.contains(needle), "{needle:?} not in {text}");
    }
    assert!(!text.contains("schedules[1].collections[1]"), "{text}");
    assert_eq!(err.problems.len(), 4, "{text}");
    // The location comes with its line.
    assert!(
        err.problems.iter().all(|p| p.line.is_some()),
        "{:#?}",
        err.problems
    );
}

/// The status token and the webhook URL come from an environment variable, a file (relative
/// to the config file) or, with a warning, inline; the raw `[daemon]` table the loaded
/// configuration keeps never prints them.
#[test]
fn daemon_secrets_from_env_file_or_inline_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "file-token\n").unwrap();
    std::fs::write(
        dir.path().join("hook"),
        "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=FILEKEY\n",
    )
    .unwrap();
    #[cfg(unix)]
    for f in ["token", "hook"] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path().join(f), std::fs::Permissions::from_mode(0o600))
            .unwrap();
    }
    let apps = r#"
[[apps]]
appid = "wx1234567890abcdef"
secret_env = "SOME_SECRET"

[[apps.envs]]
id = "prod-1"
collections = ["orders"]
"#;
    let load = |daemon: &str| {
        let text = format!("{apps}{daemon}");
        tcb_backup::config::load_str(&text, &dir.path().join("t.toml"), dir.path()).unwrap()
    };

    // From files, relative to the config file's directory: no warning.
    let config = load(
        "[daemon]\nstatus_token_file = \"token\"\n[daemon.alerts]\nwebhook_url_file = \"hook\"\n",
    );
    let s = from_config(&config, &ProcessEnv).unwrap();
    assert_eq!(s.status_token.unwrap().0, "file-token");
    assert!(s.alerts.webhook.unwrap().0.ends_with("key=FILEKEY"));
    assert!(s.warnings.is_empty(), "{:?}", s.warnings);

    // Inline: still works, but each secret gets a warning (which does not repeat it).
    let config = load(
        "[daemon]\nstatus_token = \"INLINETOKEN\"\n[daemon.alerts]\nwebhook_url = \"https://example.com/hook?key=INLINEKEY\"\n",
    );
    let s = from_config(&config, &ProcessEnv).unwrap();
    assert_eq!(s.status_token.as_ref().unwrap().0, "INLINETOKEN");
    let warnings: Vec<String> = s.warnings.iter().map(|w| w.to_string()).collect();
    assert_eq!(
        warnings,
        [
            "daemon.status_token: is a secret written in the config file: move it to `status_token_env` (an environment variable) or `status_token_file` (a file of mode 0600)",
            "daemon.alerts.webhook_url: is a secret written in the config file: move it to `webhook_url_env` (an environment variable) or `webhook_url_file` (a file of mode 0600)",
        ]
    );
    // The configuration's Debug (which a log line or a panic message could show) redacts them.
    let debug = format!("{config:?}");
    assert!(debug.contains("RawDaemonTable"), "{debug}");
    assert!(
        !debug.contains("INLINETOKEN") && !debug.contains("INLINEKEY"),
        "{debug}"
    );

    // Two sources for one secret, or a file that is missing: a problem at the key, no secret.
    let err = from_config_text(
        "[daemon]\nstatus_token = \"INLINETOKEN\"\nstatus_token_env = \"TOKEN\"\n",
        &env(),
    )
    .unwrap_err();
    assert_eq!(
        err.problems[0].to_string(),
        "daemon.status_token: give only one of `status_token_env`, `status_token_file` or `status_token`"
    );
    let missing = dir.path().join("absent");
    let err = from_config_text(
        &format!(
            "[daemon.alerts]\nwebhook_url_file = \"{}\"\n",
            missing.display()
        ),
        &env(),
    )
    .unwrap_err();
    let text = err.problems[0].to_string();
    assert!(
        text.starts_with(&format!(
            "daemon.alerts.webhook_url_file: cannot read {}",
            missing.display()
        )),
        "{text}"
    );
}

/// A listener other hosts can reach and no token: a warning at start naming the address and
/// the fix; loopback, or a token, needs none.
#[test]
fn an_exposed_listener_without_a_token_is_warned_about() {
    let w = exposed_listener_warning("0.0.0.0:9817".parse().unwrap(), false).unwrap();
    assert_eq!(
        w,
        "the status listener on 0.0.0.0:9817 is reachable from other hosts and needs no token: anyone who can reach it can read the jobs, the catalog and the metrics; set [daemon] status_token_env (or status_token_file), or listen on 127.0.0.1 behind a reverse proxy"
    );
    assert!(exposed_listener_warning("192.168.1.5:9817".parse().unwrap(), false).is_some());
    assert!(exposed_listener_warning("[::]:9817".parse().unwrap(), false).is_some());
    assert_eq!(
        exposed_listener_warning("0.0.0.0:9817".parse().unwrap(), true),
        None
    );
    assert_eq!(
        exposed_listener_warning("127.0.0.1:9817".parse().unwrap(), false),
        None
    );
    assert_eq!(
        exposed_listener_warning("[::1]:9817".parse().unwrap(), false),
        None
    );
}
