use super::*;
use proptest::prelude::*;
use time::macros::datetime;

fn cand(id: &str, coll: &str, time: OffsetDateTime, standing: Standing) -> Candidate {
    Candidate {
        id: id.to_string(),
        env: "prod".into(),
        collection: coll.into(),
        time,
        standing,
    }
}

fn kept_ids(p: &RetentionPlan) -> Vec<String> {
    p.groups
        .iter()
        .flat_map(|g| g.keep.iter().map(|k| k.candidate.id.clone()))
        .collect()
}

#[test]
fn durations_parse_and_reject_nonsense() {
    assert_eq!(
        parse_duration("36h").unwrap(),
        Duration::from_secs(36 * 3600)
    );
    assert_eq!(
        parse_duration("1y6m").unwrap(),
        Duration::from_secs((365 + 180) * 86_400)
    );
    assert_eq!(
        parse_duration("2w1d").unwrap(),
        Duration::from_secs(15 * 86_400)
    );
    for bad in ["", "14", "d", "3x", "1.5d", "-1d", "99999999999999999999y"] {
        assert!(parse_duration(bad).is_err(), "{bad}");
    }
}

#[test]
fn empty_policy_and_zero_floor_are_refused() {
    let p = RetentionPolicy {
        min_keep: 1,
        ..Default::default()
    };
    assert_eq!(p.validate(), Err(PolicyError::Empty));
    let p = RetentionPolicy {
        keep_last: 2,
        min_keep: 0,
        ..Default::default()
    };
    assert_eq!(p.validate(), Err(PolicyError::ZeroFloor));
    let p = RetentionPolicy {
        keep_within: Some(Duration::from_secs(1)),
        min_keep: 1,
        ..Default::default()
    };
    assert_eq!(p.validate(), Ok(()));
}

#[test]
fn daily_keeps_newest_of_each_day_and_failed_ones_do_not_count() {
    let policy = RetentionPolicy {
        keep_daily: 2,
        min_keep: 1,
        ..Default::default()
    };
    let c = vec![
        cand("a", "o", datetime!(2026-12-01 01:00 UTC), Standing::Counted),
        cand("b", "o", datetime!(2026-12-01 23:00 UTC), Standing::Counted),
        cand("c", "o", datetime!(2026-12-02 05:00 UTC), Standing::Counted),
        // The newest day only has a broken snapshot: it does not use up a daily slot.
        cand("d", "o", datetime!(2026-12-03 05:00 UTC), Standing::Failed),
        cand(
            "e",
            "o",
            datetime!(2026-12-03 06:00 UTC),
            Standing::Unverified,
        ),
    ];
    let plan = plan(&policy, &c);
    let g = &plan.groups[0];
    let kept: Vec<&str> = g.keep.iter().map(|k| k.candidate.id.as_str()).collect();
    assert_eq!(kept, vec!["e", "c", "b"]);
    let forgot: Vec<(&str, ForgetReason)> = g
        .forget
        .iter()
        .map(|f| (f.candidate.id.as_str(), f.reason))
        .collect();
    assert_eq!(
        forgot,
        vec![
            ("d", ForgetReason::Failed),
            ("a", ForgetReason::NotSelected)
        ]
    );
    assert!(g.keep[1].reasons.contains(&KeepReason::Floor));
    assert!(g.keep[0].reasons.contains(&KeepReason::Unverified));
}

#[test]
fn a_group_without_counted_snapshots_is_left_alone() {
    let policy = RetentionPolicy {
        keep_last: 1,
        min_keep: 1,
        ..Default::default()
    };
    let c = vec![
        cand("a", "o", datetime!(2026-12-01 01:00 UTC), Standing::Failed),
        cand("b", "o", datetime!(2026-12-02 01:00 UTC), Standing::Failed),
        cand("c", "u", datetime!(2026-12-02 01:00 UTC), Standing::Counted),
        cand("d", "u", datetime!(2026-12-03 01:00 UTC), Standing::Counted),
    ];
    let plan = plan(&policy, &c);
    assert_eq!(kept_ids(&plan), vec!["b", "a", "d"]);
    assert_eq!(plan.forget_ids().collect::<Vec<_>>(), vec!["c"]);
}

#[test]
fn within_is_measured_from_the_newest_counted_snapshot() {
    let policy = RetentionPolicy {
        keep_within: Some(Duration::from_secs(2 * 86_400)),
        min_keep: 1,
        ..Default::default()
    };
    // A long outage: the newest snapshot is a year old; "now" plays no part.
    let c = vec![
        cand("a", "o", datetime!(2025-01-01 00:00 UTC), Standing::Counted),
        cand("b", "o", datetime!(2025-01-03 00:00 UTC), Standing::Counted),
        cand("c", "o", datetime!(2025-01-04 00:00 UTC), Standing::Counted),
    ];
    let plan = plan(&policy, &c);
    assert_eq!(kept_ids(&plan), vec!["c", "b"]);
}

#[test]
fn weeks_are_iso_weeks_across_the_year_end() {
    let policy = RetentionPolicy {
        keep_weekly: 2,
        min_keep: 1,
        ..Default::default()
    };
    // 2026-12-31 (Thu) and 2027-01-03 (Sun) are both in ISO week 2026-W53.
    let c = vec![
        cand("a", "o", datetime!(2026-12-27 12:00 UTC), Standing::Counted), // W52
        cand("b", "o", datetime!(2026-12-31 12:00 UTC), Standing::Counted), // W53
        cand("c", "o", datetime!(2027-01-03 12:00 UTC), Standing::Counted), // W53
    ];
    let plan = plan(&policy, &c);
    assert_eq!(kept_ids(&plan), vec!["c", "a"]);
}

// ---- property test against an independent reference model ----

/// The rules restated per snapshot, without the streaming pass: a counted snapshot is kept
/// by a bucket rule iff it is the newest counted one of its bucket and fewer than N buckets
/// with counted snapshots are newer than its own.
fn model(policy: &RetentionPolicy, all: &[Candidate]) -> BTreeSet<String> {
    let mut kept = BTreeSet::new();
    let groups: BTreeSet<(String, String)> = all
        .iter()
        .map(|c| (c.env.clone(), c.collection.clone()))
        .collect();
    for (env, coll) in groups {
        let members: Vec<&Candidate> = all
            .iter()
            .filter(|c| c.env == env && c.collection == coll)
            .collect();
        let counted: Vec<&Candidate> = members
            .iter()
            .copied()
            .filter(|c| c.standing == Standing::Counted)
            .collect();
        if counted.is_empty() {
            kept.extend(members.iter().map(|c| c.id.clone()));
            continue;
        }
        let later = |a: &Candidate, b: &Candidate| (a.time, &a.id) > (b.time, &b.id);
        let newest_time = counted.iter().map(|c| c.time).max();
        for s in &counted {
            let rank = counted.iter().filter(|o| later(o, s)).count() as u64;
            let mut keep = rank < u64::from(policy.keep_last) || rank < u64::from(policy.min_keep);
            if let (Some(w), Some(n)) = (policy.keep_within, newest_time) {
                keep |= n - s.time <= w;
            }
            let rules: [(u32, BucketFn); 5] = [
                (policy.keep_hourly, hour_key),
                (policy.keep_daily, day_key),
                (policy.keep_weekly, week_key),
                (policy.keep_monthly, month_key),
                (policy.keep_yearly, year_key),
            ];
            for (n, key) in rules {
                let mine = key(s.time);
                let newest_in_bucket = !counted.iter().any(|o| key(o.time) == mine && later(o, s));
                let newer_buckets: BTreeSet<_> = counted
                    .iter()
                    .map(|o| key(o.time))
                    .filter(|k| *k > mine)
                    .collect();
                keep |= newest_in_bucket && (newer_buckets.len() as u64) < u64::from(n);
            }
            if keep {
                kept.insert(s.id.clone());
            }
        }
        kept.extend(
            members
                .iter()
                .filter(|c| c.standing == Standing::Unverified)
                .map(|c| c.id.clone()),
        );
    }
    kept
}

fn standing() -> impl Strategy<Value = Standing> {
    prop_oneof![
        6 => Just(Standing::Counted),
        2 => Just(Standing::Failed),
        1 => Just(Standing::Unverified),
    ]
}

prop_compose! {
    fn timeline()(
        raw in prop::collection::vec(
            // minutes over ~3 years, a few collections, dense enough for shared buckets
            (0i64..(3 * 366 * 24 * 60), 0usize..3, standing()), 0..60)
    ) -> Vec<Candidate> {
        let base = datetime!(2025-06-15 00:00 UTC);
        raw.into_iter().enumerate().map(|(i, (minutes, coll, standing))| Candidate {
            id: format!("s{i:03}"),
            env: "prod".into(),
            collection: ["orders", "users", "logs"][coll].into(),
            time: base + time::Duration::minutes(minutes),
            standing,
        }).collect()
    }
}

prop_compose! {
    fn policy()(
        keep_last in 0u32..5, keep_hourly in 0u32..4, keep_daily in 0u32..8,
        keep_weekly in 0u32..6, keep_monthly in 0u32..14, keep_yearly in 0u32..3,
        within_hours in prop::option::of(0u64..2000), min_keep in 1u32..4,
    ) -> RetentionPolicy {
        RetentionPolicy { keep_last, keep_hourly, keep_daily, keep_weekly, keep_monthly,
            keep_yearly, keep_within: within_hours.map(|h| Duration::from_secs(h * 3600)), min_keep }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn plan_matches_the_reference_model(policy in policy(), c in timeline()) {
        let p = plan(&policy, &c);
        let kept: BTreeSet<String> = kept_ids(&p).into_iter().collect();
        prop_assert_eq!(&kept, &model(&policy, &c));

        // Every snapshot is decided exactly once.
        let forgotten: BTreeSet<String> = p.forget_ids().map(String::from).collect();
        prop_assert!(kept.is_disjoint(&forgotten));
        prop_assert_eq!(kept.len() + forgotten.len(), c.len());

        for g in &p.groups {
            let counted_total = c.iter().filter(|x| x.env == g.env && x.collection == g.collection
                && x.standing == Standing::Counted).count();
            let counted_kept = g.keep.iter()
                .filter(|k| k.candidate.standing == Standing::Counted).count();
            // Never below the floor.
            prop_assert!(counted_kept >= counted_total.min(policy.min_keep as usize));
            for f in &g.forget {
                // Unverified snapshots are never deleted; nothing is deleted from a group
                // without a counted snapshot.
                prop_assert!(f.candidate.standing != Standing::Unverified);
                prop_assert!(counted_total > 0);
            }
            for k in &g.keep {
                // A failed snapshot is only kept when the whole group is left alone.
                if k.candidate.standing == Standing::Failed {
                    prop_assert_eq!(counted_total, 0);
                }
            }
        }
    }

    #[test]
    fn failed_and_unverified_snapshots_never_change_what_counted_ones_get(
        policy in policy(), c in timeline()
    ) {
        let only_counted: Vec<Candidate> =
            c.iter().filter(|x| x.standing == Standing::Counted).cloned().collect();
        let with_noise = plan(&policy, &c);
        let without = plan(&policy, &only_counted);
        let counted_kept = |p: &RetentionPlan| -> BTreeSet<String> {
            p.groups.iter().flat_map(|g| g.keep.iter())
                .filter(|k| k.candidate.standing == Standing::Counted)
                .map(|k| k.candidate.id.clone()).collect()
        };
        prop_assert_eq!(counted_kept(&with_noise), counted_kept(&without));
    }

    #[test]
    fn input_order_does_not_matter(policy in policy(), c in timeline()) {
        let mut reversed = c.clone();
        reversed.reverse();
        prop_assert_eq!(plan(&policy, &c), plan(&policy, &reversed));
    }
}
