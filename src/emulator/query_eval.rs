//! Evaluation of parsed queries against documents: dotted paths, MongoDB-like equality and
//! comparison (arrays match by containment, numbers compare by value), a total order for
//! `orderBy`, and `.field()` projection.

use std::cmp::Ordering;

use serde_json::{Map, Value};

use super::query::{Cond, ParsedQuery};

/// The value at a dotted path (array elements by numeric segment).
pub fn get_path<'a>(doc: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = doc;
    for seg in path.split('.') {
        cur = match cur {
            Value::Object(m) => m.get(seg)?,
            Value::Array(a) => a.get(seg.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(cur)
}

/// Set a dotted path, creating intermediate objects.
pub fn set_path(doc: &mut Value, path: &str, value: Value) {
    let mut cur = doc;
    let segs: Vec<&str> = path.split('.').collect();
    let Some((last, init)) = segs.split_last() else {
        return;
    };
    for seg in init {
        if !cur.is_object() {
            *cur = Value::Object(Map::new());
        }
        let Value::Object(m) = cur else { return };
        cur = m
            .entry(seg.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
    }
    if !cur.is_object() {
        *cur = Value::Object(Map::new());
    }
    if let Value::Object(m) = cur {
        m.insert(last.to_string(), value);
    }
}

fn values_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| values_equal(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| values_equal(v, w)))
        }
        _ => a == b,
    }
}

fn type_rank(v: &Value) -> u8 {
    match v {
        Value::Null => 1,
        Value::Number(_) => 2,
        Value::String(_) => 3,
        Value::Object(m) if m.contains_key("$date") => 9,
        Value::Object(_) => 4,
        Value::Array(_) => 5,
        Value::Bool(_) => 8,
    }
}

/// Total order over values (missing < null < numbers < strings < objects < arrays < bools < dates).
pub fn compare_values(a: Option<&Value>, b: Option<&Value>) -> Ordering {
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(x), Some(y)) => {
            let (rx, ry) = (type_rank(x), type_rank(y));
            if rx != ry {
                return rx.cmp(&ry);
            }
            match (x, y) {
                (Value::Number(p), Value::Number(q)) => p
                    .as_f64()
                    .partial_cmp(&q.as_f64())
                    .unwrap_or(Ordering::Equal),
                (Value::String(p), Value::String(q)) => p.cmp(q),
                (Value::Bool(p), Value::Bool(q)) => p.cmp(q),
                (Value::Object(p), Value::Object(q)) if rx == 9 => {
                    compare_values(p.get("$date"), q.get("$date"))
                }
                _ => x.to_string().cmp(&y.to_string()),
            }
        }
    }
}

fn comparable(a: &Value, b: &Value) -> bool {
    type_rank(a) == type_rank(b) && matches!(type_rank(a), 2 | 3 | 8 | 9)
}

fn cond_matches(v: Option<&Value>, cond: &Cond) -> bool {
    // An array field matches a scalar condition when any element does (MongoDB semantics).
    let any_elem = |f: &dyn Fn(&Value) -> bool| match v {
        Some(Value::Array(items)) => f(v.unwrap_or(&Value::Null)) || items.iter().any(f),
        Some(x) => f(x),
        None => false,
    };
    let eq = |x: &Value| {
        if x.is_null() && v.is_none() {
            return true;
        }
        any_elem(&|e| values_equal(e, x))
    };
    match cond {
        Cond::Eq(x) => eq(x),
        Cond::Ne(x) => !eq(x),
        Cond::Gt(x) => {
            any_elem(&|e| comparable(e, x) && compare_values(Some(e), Some(x)) == Ordering::Greater)
        }
        Cond::Gte(x) => {
            any_elem(&|e| comparable(e, x) && compare_values(Some(e), Some(x)) != Ordering::Less)
        }
        Cond::Lt(x) => {
            any_elem(&|e| comparable(e, x) && compare_values(Some(e), Some(x)) == Ordering::Less)
        }
        Cond::Lte(x) => {
            any_elem(&|e| comparable(e, x) && compare_values(Some(e), Some(x)) != Ordering::Greater)
        }
        Cond::In(list) => list.iter().any(eq),
        Cond::Nin(list) => !list.iter().any(eq),
        Cond::Exists(b) => v.is_some() == *b,
        Cond::And(cs) => cs.iter().all(|c| cond_matches(v, c)),
        Cond::Or(cs) => cs.iter().any(|c| cond_matches(v, c)),
    }
}

impl ParsedQuery {
    /// Does a document satisfy `.doc()` and `.where()`?
    pub fn matches(&self, doc: &Value) -> bool {
        if let Some(id) = &self.doc_id {
            if doc.get("_id").and_then(Value::as_str) != Some(id.as_str()) {
                return false;
            }
        }
        self.filter
            .iter()
            .all(|(path, cond)| cond_matches(get_path(doc, path), cond))
    }

    /// Ordering by the `.orderBy()` clauses, in order.
    pub fn compare(&self, a: &Value, b: &Value) -> Ordering {
        for (field, asc) in &self.order_by {
            let o = compare_values(get_path(a, field), get_path(b, field));
            if o != Ordering::Equal {
                return if *asc { o } else { o.reverse() };
            }
        }
        Ordering::Equal
    }

    /// Fields switched on by `.field()`, in source order (None without `.field()`).
    pub fn included_fields(&self) -> Option<Vec<String>> {
        let fields = self.fields.as_ref()?;
        let on: Vec<String> = fields
            .iter()
            .filter(|(_, b)| *b)
            .map(|(f, _)| f.clone())
            .collect();
        if on.is_empty() {
            None
        } else {
            Some(on)
        }
    }

    /// Apply `.field()` projection (include-list, or exclude-list when all are false).
    pub fn project(&self, doc: &Value) -> Value {
        let Some(fields) = &self.fields else {
            return doc.clone();
        };
        if let Some(on) = self.included_fields() {
            let mut out = Value::Object(Map::new());
            let id_off = fields.iter().any(|(f, b)| f == "_id" && !*b);
            if !id_off {
                if let Some(id) = doc.get("_id") {
                    set_path(&mut out, "_id", id.clone());
                }
            }
            for f in on {
                if let Some(v) = get_path(doc, &f) {
                    set_path(&mut out, &f, v.clone());
                }
            }
            out
        } else {
            let mut out = doc.clone();
            for (f, _) in fields {
                remove_path(&mut out, f);
            }
            out
        }
    }
}

fn remove_path(doc: &mut Value, path: &str) {
    match path.split_once('.') {
        None => {
            if let Value::Object(m) = doc {
                m.remove(path);
            }
        }
        Some((head, rest)) => {
            if let Some(child) = doc.get_mut(head) {
                remove_path(child, rest);
            }
        }
    }
}
