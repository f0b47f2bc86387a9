//! The `[daemon]`, `[daemon.alerts]` and `[[schedules]]` sections: defaults, overrides, and
//! every problem reported at its key path (secrets never echoed).

use std::collections::HashMap;
use std::time::Duration;

use tcb_backup::daemon::settings::{
    from_config_text, AlertEvent, AlertFormat, EnvLookup, OverlapPolicy,
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
