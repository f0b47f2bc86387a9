//! Comparing a restored document with the snapshot's copy when the two may spell the same
//! value differently.
//!
//! The reference (docs: wechat-api.md §6 and §9) leaves open how `databasequery` renders dates
//! and numbers: export files use `{"$date": "<ISO 8601>"}` and numbers like `0.0`, while
//! EJSON-speaking APIs answer `{"$date": {"$numberLong": "<ms>"}}`, `{"$numberLong": "…"}`,
//! `{"$numberInt": "…"}`, `{"$numberDouble": "…"}`. Both readings are accepted: each side is
//! brought to one canonical form before comparing — a date becomes `{"$date": <ms>}`, a
//! number wrapper its number, and an integral float (`0.0`) the integer. Anything else
//! (GeoPoints, unknown `$` wrappers) is compared as it is, never re-typed.

use serde_json::{Map, Number, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Whether `a` and `b` are the same document once both are in canonical form.
pub fn same_document(a: &Value, b: &Value) -> bool {
    canonical(a) == canonical(b)
}

/// The canonical form of `v` (see the module docs).
pub fn canonical(v: &Value) -> Value {
    match v {
        Value::Number(n) => Value::Number(canonical_number(n)),
        Value::Array(items) => Value::Array(items.iter().map(canonical).collect()),
        Value::Object(map) => {
            if let Some(unwrapped) = unwrap_single(map) {
                return unwrapped;
            }
            Value::Object(
                map.iter()
                    .map(|(k, v)| (k.clone(), canonical(v)))
                    .collect::<Map<_, _>>(),
            )
        }
        other => other.clone(),
    }
}

/// `0.0` → `0`; other numbers as they are.
fn canonical_number(n: &Number) -> Number {
    match n.as_f64() {
        Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 9.0e15 => Number::from(f as i64),
        _ => n.clone(),
    }
}

/// The canonical value of a one-key EJSON wrapper, or `None` when `map` is not one (or its
/// content does not parse: then it is compared as it is).
fn unwrap_single(map: &Map<String, Value>) -> Option<Value> {
    if map.len() != 1 {
        return None;
    }
    let (key, inner) = map.iter().next()?;
    match key.as_str() {
        "$date" => date_millis(inner).map(|ms| {
            let mut m = Map::new();
            m.insert("$date".into(), Value::Number(Number::from(ms)));
            Value::Object(m)
        }),
        "$numberLong" | "$numberInt" => inner
            .as_str()?
            .trim()
            .parse::<i64>()
            .ok()
            .map(|n| Value::Number(Number::from(n))),
        "$numberDouble" => {
            let f: f64 = inner.as_str()?.trim().parse().ok()?;
            Number::from_f64(f).map(|n| Value::Number(canonical_number(&n)))
        }
        _ => None,
    }
}

/// Milliseconds since the epoch of a `$date` value: an ISO 8601 string, `{"$numberLong": ms}`,
/// or a plain number of milliseconds.
fn date_millis(inner: &Value) -> Option<i64> {
    match inner {
        Value::String(text) => {
            let t = OffsetDateTime::parse(text, &Rfc3339).ok()?;
            i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
        }
        Value::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
                .map(|f| f as i64)
        }),
        Value::Object(wrapped) if wrapped.len() == 1 => {
            wrapped.get("$numberLong")?.as_str()?.trim().parse().ok()
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn both_date_spellings_are_the_same_date() {
        let export = json!({"_id": "a", "due": {"$date": "2019-09-09T00:00:00.000Z"}});
        let ejson = json!({"_id": "a", "due": {"$date": {"$numberLong": "1567987200000"}}});
        assert!(same_document(&export, &ejson));
        let plain_ms = json!({"_id": "a", "due": {"$date": 1567987200000i64}});
        assert!(same_document(&export, &plain_ms));
        // A different instant is a difference.
        let later = json!({"_id": "a", "due": {"$date": {"$numberLong": "1567987200001"}}});
        assert!(!same_document(&export, &later));
        // Offsets are instants too.
        let offset = json!({"_id": "a", "due": {"$date": "2019-09-09T08:00:00+08:00"}});
        assert!(same_document(&export, &offset));
    }

    #[test]
    fn integral_floats_and_number_wrappers_are_numbers() {
        let a = json!({"n": 0.0, "m": 12.0, "list": [1.0, {"deep": 3.0}]});
        let b =
            json!({"n": 0, "m": {"$numberLong": "12"}, "list": [{"$numberInt": "1"}, {"deep": 3}]});
        assert!(same_document(&a, &b));
        assert!(same_document(
            &json!({"x": 2.5}),
            &json!({"x": {"$numberDouble": "2.5"}})
        ));
        assert!(!same_document(&json!({"x": 2.5}), &json!({"x": 2})));
        assert!(!same_document(&json!({"x": 1}), &json!({"x": "1"})));
    }

    #[test]
    fn other_values_are_compared_as_they_are() {
        let geo = json!({"loc": {"type": "Point", "coordinates": [113.0, 23.5]}});
        assert!(same_document(
            &geo,
            &json!({"loc": {"type": "Point", "coordinates": [113, 23.5]}})
        ));
        assert!(!same_document(
            &geo,
            &json!({"loc": {"type": "Point", "coordinates": [23.5, 113]}})
        ));
        // An unknown wrapper, or a date that does not parse, is never re-typed.
        let odd = json!({"v": {"$oid": "5f1"}});
        assert!(same_document(&odd, &odd.clone()));
        assert!(!same_document(&odd, &json!({"v": "5f1"})));
        let bad_date = json!({"d": {"$date": "yesterday"}});
        assert!(same_document(&bad_date, &bad_date.clone()));
        assert!(!same_document(&bad_date, &json!({"d": {"$date": 0}})));
        // Key order never mattered.
        assert!(same_document(
            &json!({"a": 1, "b": 2}),
            &json!({"b": 2, "a": 1})
        ));
    }
}
