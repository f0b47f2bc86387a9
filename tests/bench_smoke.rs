//! Smoke test of `tcb-backup bench`: the tiny `smoke` scenario runs every part in-process and
//! its report has the expected structure and counts. Timings are never asserted.

use tcb_backup::bench::{run_in_process, BenchOptions, BenchReport, Scenario, ScenarioReport};

fn value(r: &ScenarioReport, name: &str) -> f64 {
    r.figure(name)
        .unwrap_or_else(|| panic!("{}: no figure {name:?} in {:#?}", r.scenario, r.figures))
        .value
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn smoke_scenario_reports_every_part() {
    let reports = run_in_process(&[Scenario::Smoke], &BenchOptions::default())
        .await
        .expect("smoke benchmark runs");
    let names: Vec<&str> = reports.iter().map(|r| r.scenario.as_str()).collect();
    assert_eq!(
        names,
        [
            "smoke-fanout",
            "smoke-polling",
            "smoke-tokens",
            "smoke-datapath",
            "smoke-engine"
        ]
    );
    for r in &reports {
        assert!(!r.figures.is_empty(), "{}", r.scenario);
        for f in &r.figures {
            assert!(
                f.value.is_finite(),
                "{}: {} = {}",
                r.scenario,
                f.name,
                f.value
            );
            assert_eq!(
                f.ok.is_some(),
                f.limit.is_some(),
                "{}: {}",
                r.scenario,
                f.name
            );
        }
    }
    let by = |name: &str| reports.iter().find(|r| r.scenario == name).expect(name);

    let fanout = by("smoke-fanout");
    assert_eq!(value(fanout, "token calls (run)"), 1.0);
    let in_flight = value(fanout, "exports in flight (peak)");
    assert!((1.0..=6.0).contains(&in_flight), "{in_flight}");
    assert!(value(fanout, "status calls per export") >= 1.0);
    assert!(fanout
        .figure("wall time")
        .and_then(|f| f.limit.as_ref())
        .is_some());
    assert!(value(fanout, "one-by-one (estimated)") > 0.0);

    // The polling figures run on a virtual clock: deterministic, so the limits of issue 4 are
    // asserted (with the default `[poll]` settings users get): for a 60 s export, at most 16
    // status calls and a lag of at most 20 % without history, 4 and 10 % with it.
    let polling = by("smoke-polling");
    for (what, max_calls, max_lag) in [("no history", 16.0, 20.0), ("with history", 4.0, 10.0)] {
        let calls = polling
            .figure(&format!("1 min export, {what}: status calls"))
            .expect("status calls");
        assert!(
            (1.0..=max_calls).contains(&calls.value) && calls.ok == Some(true),
            "{what}: {calls:?}"
        );
        let lag = polling
            .figure(&format!("1 min export, {what}: detection lag"))
            .expect("detection lag");
        // Exact virtual time: completion is never seen before it happens.
        assert!(
            (0.0..=max_lag).contains(&lag.value) && lag.ok == Some(true),
            "{what}: {lag:?}"
        );
    }

    let tokens = by("smoke-tokens");
    assert_eq!(value(tokens, "collections backed up"), 4.0);
    assert_eq!(value(tokens, "token calls per app (worst app)"), 1.0);
    assert_eq!(
        value(tokens, "token endpoint calls seen by the emulator"),
        1.0
    );

    let data = by("smoke-datapath");
    assert!(value(data, "export size") > 0.5, "about 1 MiB");
    assert!(value(data, "records") > 0.0);
    let ratio = value(data, "compression (stored / raw)");
    assert!(ratio > 0.0 && ratio < 1.0, "{ratio}");

    let engine = by("smoke-engine");
    assert!(value(engine, "durable transitions") > 0.0);
    assert!(engine.figure("resume 100 in-flight jobs").is_some());

    // Rendering names every scenario and every figure.
    let report = BenchReport::new("tcb-backup bench --scenario smoke".into(), reports.clone());
    let text = report.to_text();
    for r in &reports {
        assert!(text.contains(&r.scenario), "{text}");
        for f in &r.figures {
            assert!(text.contains(&f.name), "{text}");
        }
    }
    let json = serde_json::to_value(&report).expect("serializes");
    assert_eq!(json["scenarios"].as_array().map(Vec::len), Some(5));
}

#[test]
fn scenario_names_parse() {
    assert_eq!(Scenario::parse("default").expect("default").len(), 5);
    assert!(Scenario::parse("all")
        .expect("all")
        .contains(&Scenario::DataPath1G));
    assert_eq!(
        Scenario::parse("fanout").expect("fanout"),
        vec![Scenario::Fanout]
    );
    assert!(Scenario::parse("nope").is_err());
}
