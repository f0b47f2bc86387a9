//! The `[daemon]`, `[daemon.alerts]` and `[[schedules]]` sections: defaults, overrides, and
//! every problem reported at its key path (secrets never echoed).

use std::collections::HashMap;
use std::time::Duration;

use tcb_backup::daemon::settings::{
    from_config_text, AlertEvent, AlertFormat, EnvLookup, OverlapPolicy, ScheduleTask,
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
