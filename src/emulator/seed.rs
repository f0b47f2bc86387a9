//! Deterministic seed data: collections × records from a seeded RNG, with `$date` dates, nested
//! objects, arrays, GeoPoints, unicode and mixed document sizes (a few large ones).

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::clock::iso_millis;

/// What to seed.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct SeedSpec {
    pub collections: u32,
    pub records_per_collection: u64,
    pub seed: u64,
    /// Envs to seed (`None` = every env of every app).
    pub envs: Option<Vec<String>>,
    /// Share of documents (0..1) that get a large (2–16 KiB) text field.
    pub large_fraction: f64,
    /// Generate documents on the fly instead of storing them (read-only collections whose
    /// exports stream from the generator: benchmarks with huge collections need no RAM).
    pub synthetic: bool,
}

impl Default for SeedSpec {
    fn default() -> Self {
        SeedSpec {
            collections: 3,
            records_per_collection: 200,
            seed: 20_240_601,
            envs: None,
            large_fraction: 0.05,
            synthetic: false,
        }
    }
}

const NAMES: &[&str] = &[
    "users",
    "orders",
    "products",
    "events",
    "messages",
    "sessions",
    "payments",
    "reviews",
    "inventory",
    "coupons",
];

/// Name of the i-th seeded collection.
pub fn collection_name(i: u32) -> String {
    match NAMES.get(i as usize) {
        Some(n) => (*n).to_string(),
        None => format!("collection_{i:03}"),
    }
}

/// FNV-1a, stable across Rust releases (unlike `DefaultHasher`).
pub fn stable_hash(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

const PEOPLE: &[&str] = &[
    "张伟",
    "王芳",
    "Zoë",
    "Łukasz",
    "José",
    "Ørjan",
    "佐藤",
    "Анна",
    "🙂 emoji",
    "O'Brien \"Q\"",
];
const CITIES: &[&str] = &["深圳", "上海", "北京", "Zürich", "São Paulo", "Москва"];
const TAGS: &[&str] = &[
    "cloud",
    "database",
    "vip",
    "新用户",
    "beta",
    "a,b",
    "line\nbreak",
];

/// Streaming generator of seeded documents: the same (seed, env, collection) always yields
/// the same documents, without holding them in memory.
#[derive(Clone, Debug)]
pub struct DocGen {
    rng: StdRng,
    next: u64,
    total: u64,
    large_fraction: f64,
}

impl DocGen {
    pub fn new(seed: u64, env: &str, collection: &str, total: u64, large_fraction: f64) -> Self {
        DocGen {
            rng: StdRng::seed_from_u64(
                seed ^ stable_hash(env) ^ stable_hash(collection).rotate_left(17),
            ),
            next: 0,
            total,
            large_fraction,
        }
    }
}

fn pick<'a>(rng: &mut StdRng, items: &[&'a str]) -> &'a str {
    items
        .get(rng.gen_range(0..items.len().max(1)))
        .copied()
        .unwrap_or_default()
}

impl Iterator for DocGen {
    type Item = Value;

    fn next(&mut self) -> Option<Value> {
        if self.next >= self.total {
            return None;
        }
        let i = self.next;
        self.next += 1;
        let rng = &mut self.rng;
        let base_ms: i64 = 1_700_000_000_000;
        let id = format!("{:032x}", rng.gen::<u128>());
        let tags: Vec<&str> = (0..rng.gen_range(0..4)).map(|_| pick(rng, TAGS)).collect();
        let large = rng.gen::<f64>() < self.large_fraction;
        let note_len = if large {
            rng.gen_range(2048..16384)
        } else {
            rng.gen_range(0..200)
        };
        const NOTE_CHARS: [char; 8] = ['a', 'b', '中', 'é', ' ', '文', 'z', '\u{1F600}'];
        let note: String = (0..note_len)
            .map(|k: usize| {
                NOTE_CHARS[(k.wrapping_mul(7).wrapping_add(i as usize)) % NOTE_CHARS.len()]
            })
            .collect();
        Some(json!({
            "_id": id,
            "seq": i,
            "name": format!("{}-{i}", pick(rng, PEOPLE)),
            "age": rng.gen_range(16..90),
            "score": (rng.gen_range(0.0..100.0f64) * 100.0).round() / 100.0,
            "active": rng.gen_bool(0.7),
            "createdAt": {"$date": iso_millis(base_ms + rng.gen_range(0..400_000_000_000i64))},
            "tags": tags,
            "address": {
                "city": pick(rng, CITIES),
                "zip": format!("{:06}", rng.gen_range(0..999_999)),
                "lines": ["Room 1", "栋 2"],
            },
            "location": {"type": "Point", "coordinates": [
                (rng.gen_range(-180.0..180.0f64) * 1e4).round() / 1e4,
                (rng.gen_range(-90.0..90.0f64) * 1e4).round() / 1e4,
            ]},
            "note": note,
            "optional": if rng.gen_bool(0.2) { Value::Null } else { json!({"nested": {"deep": [1, 2.5, "three"]}}) },
        }))
    }
}

/// The documents of one seeded collection.
pub fn generate(spec: &SeedSpec, env: &str, collection: &str) -> Vec<Value> {
    DocGen::new(
        spec.seed,
        env,
        collection,
        spec.records_per_collection,
        spec.large_fraction,
    )
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_varied() {
        let spec = SeedSpec {
            records_per_collection: 50,
            large_fraction: 0.2,
            ..SeedSpec::default()
        };
        let a = generate(&spec, "env", "users");
        assert_eq!(a, generate(&spec, "env", "users"));
        assert_ne!(a, generate(&spec, "env2", "users"));
        assert_eq!(a.len(), 50);
        assert!(a
            .iter()
            .any(|d| d["note"].as_str().is_some_and(|s| s.len() > 2048)));
        assert!(a
            .iter()
            .all(|d| d["createdAt"]["$date"].is_string() && d["_id"].is_string()));
    }
}
