//! Document collections of one env: documents are JSON objects in their export form (`$date`
//! wrappers, GeoJSON points, string `_id`s), kept in insertion order and indexed by `_id`.
//! Documents are `Arc`-shared so an export can snapshot a collection without copying it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use rand::Rng;
use serde_json::Value;

use super::query::ParsedQuery;
use super::seed::DocGen;

/// A read-only collection whose documents come from the seed generator on demand.
#[derive(Clone, Debug, PartialEq)]
pub struct Synthetic {
    pub env: String,
    pub name: String,
    pub seed: u64,
    pub records: u64,
    pub large_fraction: f64,
    pub estimated_bytes: u64,
}

impl Synthetic {
    pub fn new(env: &str, name: &str, seed: u64, records: u64, large_fraction: f64) -> Self {
        let mut s = Synthetic {
            env: env.to_string(),
            name: name.to_string(),
            seed,
            records,
            large_fraction,
            estimated_bytes: 0,
        };
        let sample = records.min(200);
        let sampled: u64 = s
            .generator()
            .take(sample as usize)
            .map(|d| doc_size(&d) as u64)
            .sum();
        s.estimated_bytes = sampled
            .checked_div(sample)
            .unwrap_or(0)
            .saturating_mul(records);
        s
    }

    pub fn generator(&self) -> DocGen {
        DocGen::new(
            self.seed,
            &self.env,
            &self.name,
            self.records,
            self.large_fraction,
        )
    }
}

#[derive(Clone, Debug, Default)]
pub struct Collection {
    docs: BTreeMap<u64, (Arc<Value>, usize)>,
    ids: HashMap<String, u64>,
    next_seq: u64,
    bytes: u64,
    synthetic: Option<Synthetic>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InsertError {
    NotAnObject,
    BadId,
    Duplicate(String),
    ReadOnly,
}

impl std::fmt::Display for InsertError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InsertError::NotAnObject => f.write_str("record is not a JSON object"),
            InsertError::BadId => f.write_str("_id must be a non-empty string"),
            InsertError::Duplicate(id) => {
                write!(f, "duplicate key error: _id {id:?} already exists")
            }
            InsertError::ReadOnly => f.write_str("synthetic collections are read-only"),
        }
    }
}

/// Filter, order, skip and limit a stream of documents. Without `orderBy` only the requested
/// window is ever held in memory.
pub fn select_from(
    docs: impl Iterator<Item = Arc<Value>>,
    q: &ParsedQuery,
    limit: Option<u64>,
) -> Vec<Arc<Value>> {
    let skip = usize::try_from(q.skip.unwrap_or(0)).unwrap_or(usize::MAX);
    let take = limit.map_or(usize::MAX, |l| usize::try_from(l).unwrap_or(usize::MAX));
    let hits = docs.filter(|d| q.matches(d));
    if q.order_by.is_empty() {
        return hits.skip(skip).take(take).collect();
    }
    let mut all: Vec<Arc<Value>> = hits.collect();
    all.sort_by(|a, b| q.compare(a, b));
    all.into_iter().skip(skip).take(take).collect()
}

/// A fresh 32-hex document id.
pub fn new_doc_id() -> String {
    let n: u128 = rand::thread_rng().gen();
    format!("{n:032x}")
}

fn doc_size(doc: &Value) -> usize {
    serde_json::to_vec(doc).map(|v| v.len()).unwrap_or(0)
}

/// Ensure `_id` is present (generated if missing) and a non-empty string.
pub fn normalize_id(doc: &mut Value) -> Result<String, InsertError> {
    let Value::Object(map) = doc else {
        return Err(InsertError::NotAnObject);
    };
    match map.get("_id") {
        None => {
            let id = new_doc_id();
            map.insert("_id".into(), Value::String(id.clone()));
            Ok(id)
        }
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(_) => Err(InsertError::BadId),
    }
}

impl Collection {
    pub fn synthetic(spec: Synthetic) -> Self {
        Collection {
            synthetic: Some(spec),
            ..Collection::default()
        }
    }

    pub fn synthetic_spec(&self) -> Option<&Synthetic> {
        self.synthetic.as_ref()
    }

    pub fn len(&self) -> u64 {
        match &self.synthetic {
            Some(s) => s.records,
            None => self.ids.len() as u64,
        }
    }

    pub fn bytes(&self) -> u64 {
        match &self.synthetic {
            Some(s) => s.estimated_bytes,
            None => self.bytes,
        }
    }

    pub fn get(&self, id: &str) -> Option<&Arc<Value>> {
        let seq = self.ids.get(id)?;
        self.docs.get(seq).map(|(d, _)| d)
    }

    #[cfg(test)]
    pub fn contains(&self, id: &str) -> bool {
        self.ids.contains_key(id)
    }

    /// Insert a new document (`_id` generated when missing); duplicate `_id` is an error.
    pub fn insert(&mut self, mut doc: Value) -> Result<String, InsertError> {
        if self.synthetic.is_some() {
            return Err(InsertError::ReadOnly);
        }
        let id = normalize_id(&mut doc)?;
        if self.ids.contains_key(&id) {
            return Err(InsertError::Duplicate(id));
        }
        let size = doc_size(&doc);
        let seq = self.next_seq;
        self.next_seq += 1;
        self.docs.insert(seq, (Arc::new(doc), size));
        self.ids.insert(id.clone(), seq);
        self.bytes += size as u64;
        Ok(id)
    }

    /// Replace the document with the same `_id` in place, or insert it.
    pub fn put(&mut self, mut doc: Value) -> Result<String, InsertError> {
        if self.synthetic.is_some() {
            return Err(InsertError::ReadOnly);
        }
        let id = normalize_id(&mut doc)?;
        match self.ids.get(&id).copied() {
            Some(seq) => {
                let size = doc_size(&doc);
                if let Some((old, old_size)) = self.docs.get_mut(&seq) {
                    self.bytes = self.bytes.saturating_sub(*old_size as u64) + size as u64;
                    *old = Arc::new(doc);
                    *old_size = size;
                }
                Ok(id)
            }
            None => self.insert(doc),
        }
    }

    pub fn remove(&mut self, id: &str) -> bool {
        match self.ids.remove(id) {
            Some(seq) => {
                if let Some((_, size)) = self.docs.remove(&seq) {
                    self.bytes = self.bytes.saturating_sub(size as u64);
                }
                true
            }
            None => false,
        }
    }

    /// Every document, in storage order (generated on the fly for synthetic collections).
    pub fn iter(&self) -> Box<dyn Iterator<Item = Arc<Value>> + '_> {
        match &self.synthetic {
            Some(s) => Box::new(s.generator().map(Arc::new)),
            None => Box::new(self.docs.values().map(|(d, _)| Arc::clone(d))),
        }
    }

    /// Documents matching the query's filter, ordered, with skip/limit applied (no projection).
    pub fn select(&self, q: &ParsedQuery, limit: Option<u64>) -> Vec<Arc<Value>> {
        match (&q.doc_id, &self.synthetic) {
            (Some(id), None) => select_from(self.get(id).cloned().into_iter(), q, limit),
            _ => select_from(self.iter(), q, limit),
        }
    }

    /// Number of documents matching the filter (ignoring skip/limit).
    pub fn count(&self, q: &ParsedQuery) -> u64 {
        if q.filter.is_empty() && q.doc_id.is_none() {
            return self.len();
        }
        self.iter().filter(|d| q.matches(d)).count() as u64
    }

    /// Deterministic index statistics for `databasecollectionget`.
    pub fn index_size(&self) -> u64 {
        let raw = 16_384 + self.len() * 48;
        raw.div_ceil(4096) * 4096
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn insert_put_remove_track_size() {
        let mut c = Collection::default();
        let id = c.insert(json!({"a":1})).unwrap_or_default();
        assert_eq!(id.len(), 32);
        assert_eq!(
            c.insert(json!({"_id": id.clone()})),
            Err(InsertError::Duplicate(id.clone()))
        );
        assert_eq!(c.insert(json!({"_id": 5})), Err(InsertError::BadId));
        let before = c.bytes();
        c.put(json!({"_id": id.clone(), "a": "longer value"}))
            .unwrap_or_default();
        assert!(c.bytes() > before);
        assert!(c.remove(&id));
        assert_eq!((c.len(), c.bytes()), (0, 0));
    }
}
