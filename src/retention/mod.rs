//! Retention: which snapshots `tcb-backup forget` keeps and which it may delete.
//!
//! A pure function from (policy, snapshots) to a plan; deleting is the caller's business
//! ([`prune`] holds the file side). The rules follow the familiar restic shape — keep the last
//! N, the newest snapshot of each of the last N hours/days/weeks/months/years, everything
//! within a duration of the newest snapshot — applied per env+collection, with three safety
//! rules on top:
//!
//! - only **counted** snapshots (the backup succeeded and a verification passed) satisfy a rule;
//!   a snapshot that failed verification never does, so `--keep-last 3` cannot keep three
//!   broken files and delete the good one before them;
//! - **unverified** snapshots are never deleted (they have not been judged yet; `forget`
//!   verifies before planning), and a group without any counted snapshot is left untouched;
//! - the newest `min_keep` counted snapshots are always kept, whatever the rules say.
//!
//! Calendar buckets are UTC; weeks are ISO weeks. `keep_within` is measured back from the
//! group's newest counted snapshot, not from "now", so a backup outage does not make old
//! snapshots expire.

pub mod forget;
pub mod prune;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// What the operator asked to keep. `None`/0 for a rule means "not used".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionPolicy {
    #[serde(default)]
    pub keep_last: u32,
    #[serde(default)]
    pub keep_hourly: u32,
    #[serde(default)]
    pub keep_daily: u32,
    #[serde(default)]
    pub keep_weekly: u32,
    #[serde(default)]
    pub keep_monthly: u32,
    #[serde(default)]
    pub keep_yearly: u32,
    #[serde(default, with = "opt_secs")]
    pub keep_within: Option<Duration>,
    /// The floor: this many newest counted snapshots per group survive any policy.
    #[serde(default = "default_min_keep")]
    pub min_keep: u32,
}

impl Default for RetentionPolicy {
    /// No rule (invalid until one is set) and the default floor.
    fn default() -> Self {
        RetentionPolicy {
            keep_last: 0,
            keep_hourly: 0,
            keep_daily: 0,
            keep_weekly: 0,
            keep_monthly: 0,
            keep_yearly: 0,
            keep_within: None,
            min_keep: DEFAULT_MIN_KEEP,
        }
    }
}

fn default_min_keep() -> u32 {
    DEFAULT_MIN_KEEP
}

/// The default floor.
pub const DEFAULT_MIN_KEEP: u32 = 1;

mod opt_secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;
    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&d.as_secs()),
            None => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_secs))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error(
        "no retention rule given (use --keep-last, --keep-daily, --keep-weekly, --keep-monthly, --keep-yearly, --keep-hourly or --keep-within): refusing to forget everything"
    )]
    Empty,
    #[error("--keep-min must be at least 1: a retention run never deletes every snapshot")]
    ZeroFloor,
    #[error("invalid duration {0:?}: expected e.g. 36h, 14d, 2w, 6m (30 days), 1y (365 days) or combinations like 1d12h")]
    BadDuration(String),
}

impl RetentionPolicy {
    /// Refuses a policy that would keep nothing but the floor by accident.
    pub fn validate(&self) -> Result<(), PolicyError> {
        if self.min_keep == 0 {
            return Err(PolicyError::ZeroFloor);
        }
        let any_rule = self.keep_last
            + self.keep_hourly
            + self.keep_daily
            + self.keep_weekly
            + self.keep_monthly
            + self.keep_yearly
            > 0
            || self.keep_within.is_some();
        if any_rule {
            Ok(())
        } else {
            Err(PolicyError::Empty)
        }
    }
}

/// Parses `--keep-within` durations: one or more `<n><unit>` with units `h` (hours), `d` (days),
/// `w` (weeks), `m` (30-day months) and `y` (365-day years), e.g. `1y6m`, `14d`, `36h`.
pub fn parse_duration(text: &str) -> Result<Duration, PolicyError> {
    let bad = || PolicyError::BadDuration(text.to_string());
    let mut total: u64 = 0;
    let mut number = String::new();
    let mut any = false;
    for c in text.trim().chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let n: u64 = number.parse().map_err(|_| bad())?;
        number.clear();
        let unit: u64 = match c {
            'h' => 3600,
            'd' => 86_400,
            'w' => 7 * 86_400,
            'm' => 30 * 86_400,
            'y' => 365 * 86_400,
            _ => return Err(bad()),
        };
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
        any = true;
    }
    if !number.is_empty() || !any {
        return Err(bad());
    }
    Ok(Duration::from_secs(total))
}

/// Whether a snapshot may satisfy a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Standing {
    /// Successful and verified: counts toward the rules.
    Counted,
    /// Not verified yet: never counted, never deleted.
    Unverified,
    /// The backup or a verification failed: never counted; deleted once a counted snapshot
    /// exists in the group.
    Failed,
}

/// One snapshot as retention sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Candidate {
    pub id: String,
    pub env: String,
    pub collection: String,
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    pub standing: Standing,
}

/// Why a snapshot is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeepReason {
    Last,
    Hourly,
    Daily,
    Weekly,
    Monthly,
    Yearly,
    Within,
    /// The minimum-keep floor.
    Floor,
    /// Not verified yet.
    Unverified,
    /// Nothing in its group is counted: the group is left alone.
    NoCountedSnapshot,
}

impl fmt::Display for KeepReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeepReason::Last => "last",
            KeepReason::Hourly => "hourly",
            KeepReason::Daily => "daily",
            KeepReason::Weekly => "weekly",
            KeepReason::Monthly => "monthly",
            KeepReason::Yearly => "yearly",
            KeepReason::Within => "within",
            KeepReason::Floor => "floor",
            KeepReason::Unverified => "unverified",
            KeepReason::NoCountedSnapshot => "no verified snapshot in group",
        })
    }
}

/// Why a snapshot may be deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ForgetReason {
    /// Counted, but no rule keeps it.
    NotSelected,
    /// Failed; a counted snapshot of the group exists.
    Failed,
}

impl fmt::Display for ForgetReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ForgetReason::NotSelected => "no rule keeps it",
            ForgetReason::Failed => "failed (never counted)",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Kept {
    pub candidate: Candidate,
    pub reasons: BTreeSet<KeepReason>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Forgotten {
    pub candidate: Candidate,
    pub reason: ForgetReason,
}

/// The decision for one env+collection, newest first in both lists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupPlan {
    pub env: String,
    pub collection: String,
    pub keep: Vec<Kept>,
    pub forget: Vec<Forgotten>,
}

/// The whole decision, groups ordered by (env, collection).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct RetentionPlan {
    pub groups: Vec<GroupPlan>,
}

impl RetentionPlan {
    pub fn forget_ids(&self) -> impl Iterator<Item = &str> {
        self.groups
            .iter()
            .flat_map(|g| g.forget.iter().map(|f| f.candidate.id.as_str()))
    }
}

/// Calendar bucket keys (UTC).
fn hour_key(t: OffsetDateTime) -> (i32, u16, u8) {
    let t = t.to_offset(time::UtcOffset::UTC);
    (t.year(), t.ordinal(), t.hour())
}
fn day_key(t: OffsetDateTime) -> (i32, u16, u8) {
    let t = t.to_offset(time::UtcOffset::UTC);
    (t.year(), t.ordinal(), 0)
}
fn week_key(t: OffsetDateTime) -> (i32, u16, u8) {
    let (y, w, _) = t.to_offset(time::UtcOffset::UTC).to_iso_week_date();
    (y, u16::from(w), 0)
}
fn month_key(t: OffsetDateTime) -> (i32, u16, u8) {
    let t = t.to_offset(time::UtcOffset::UTC);
    (t.year(), u16::from(u8::from(t.month())), 0)
}
fn year_key(t: OffsetDateTime) -> (i32, u16, u8) {
    (t.to_offset(time::UtcOffset::UTC).year(), 0, 0)
}

type BucketFn = fn(OffsetDateTime) -> (i32, u16, u8);

/// Newest first; ties broken by id (descending) so the order is total and stable.
fn newest_first(a: &Candidate, b: &Candidate) -> std::cmp::Ordering {
    b.time.cmp(&a.time).then_with(|| b.id.cmp(&a.id))
}

/// Decides every group. Candidates may come in any order; ids are assumed unique.
pub fn plan(policy: &RetentionPolicy, candidates: &[Candidate]) -> RetentionPlan {
    let mut groups: BTreeMap<(&str, &str), Vec<&Candidate>> = BTreeMap::new();
    for c in candidates {
        groups
            .entry((c.env.as_str(), c.collection.as_str()))
            .or_default()
            .push(c);
    }
    RetentionPlan {
        groups: groups
            .into_iter()
            .map(|((env, collection), mut members)| {
                members.sort_by(|a, b| newest_first(a, b));
                plan_group(policy, env, collection, &members)
            })
            .collect(),
    }
}

fn plan_group(
    policy: &RetentionPolicy,
    env: &str,
    collection: &str,
    members: &[&Candidate],
) -> GroupPlan {
    let mut reasons: Vec<BTreeSet<KeepReason>> = vec![BTreeSet::new(); members.len()];
    let counted: Vec<usize> = (0..members.len())
        .filter(|&i| {
            members
                .get(i)
                .is_some_and(|c| c.standing == Standing::Counted)
        })
        .collect();

    if counted.is_empty() {
        for r in reasons.iter_mut() {
            r.insert(KeepReason::NoCountedSnapshot);
        }
    } else {
        // One pass newest → oldest per bucket rule: the first (newest) counted snapshot seen
        // in a bucket represents it, until the rule has N buckets.
        let bucket_rules: [(u32, BucketFn, KeepReason); 5] = [
            (policy.keep_hourly, hour_key, KeepReason::Hourly),
            (policy.keep_daily, day_key, KeepReason::Daily),
            (policy.keep_weekly, week_key, KeepReason::Weekly),
            (policy.keep_monthly, month_key, KeepReason::Monthly),
            (policy.keep_yearly, year_key, KeepReason::Yearly),
        ];
        for (n, key, reason) in bucket_rules {
            let mut left = n;
            let mut last_bucket = None;
            for &i in &counted {
                if left == 0 {
                    break;
                }
                let Some(c) = members.get(i) else { continue };
                let bucket = key(c.time);
                if last_bucket != Some(bucket) {
                    last_bucket = Some(bucket);
                    left -= 1;
                    if let Some(r) = reasons.get_mut(i) {
                        r.insert(reason);
                    }
                }
            }
        }
        let newest = counted
            .first()
            .and_then(|&i| members.get(i))
            .map(|c| c.time);
        for (rank, &i) in counted.iter().enumerate() {
            let Some(c) = members.get(i) else { continue };
            let Some(r) = reasons.get_mut(i) else {
                continue;
            };
            if (rank as u64) < u64::from(policy.keep_last) {
                r.insert(KeepReason::Last);
            }
            if (rank as u64) < u64::from(policy.min_keep) {
                r.insert(KeepReason::Floor);
            }
            if let (Some(within), Some(newest)) = (policy.keep_within, newest) {
                if newest - c.time <= within {
                    r.insert(KeepReason::Within);
                }
            }
        }
        for (i, c) in members.iter().enumerate() {
            if c.standing == Standing::Unverified {
                if let Some(r) = reasons.get_mut(i) {
                    r.insert(KeepReason::Unverified);
                }
            }
        }
    }

    let mut keep = Vec::new();
    let mut forget = Vec::new();
    for (c, r) in members.iter().zip(reasons) {
        if r.is_empty() {
            let reason = if c.standing == Standing::Failed {
                ForgetReason::Failed
            } else {
                ForgetReason::NotSelected
            };
            forget.push(Forgotten {
                candidate: (*c).clone(),
                reason,
            });
        } else {
            keep.push(Kept {
                candidate: (*c).clone(),
                reasons: r,
            });
        }
    }
    GroupPlan {
        env: env.to_string(),
        collection: collection.to_string(),
        keep,
        forget,
    }
}

#[cfg(test)]
mod tests;
