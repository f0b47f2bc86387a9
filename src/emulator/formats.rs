//! Export/import file formats (reference §9): JSON Lines (one object per line, `$date`
//! wrappers kept as stored) and CSV (header row of field names, then values). Import parsing is
//! strict about the key rules: no key starting/ending with `.`, no `..`, no duplicate or
//! ambiguous keys (`{"a":{"b":1},"a.b":2}`).

use std::fmt;
use std::io::{BufRead, Write};
use std::sync::Arc;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use super::query::{get_path, set_path, ParsedQuery};

/// Export/import file type (`file_type` 1/2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileType {
    Json,
    Csv,
}

/// Write an export file: projected documents as JSON Lines, or CSV with the `.field()` header.
pub fn write_export<W: Write>(
    out: &mut W,
    docs: impl IntoIterator<Item = Arc<Value>>,
    query: &ParsedQuery,
    file_type: FileType,
) -> std::io::Result<u64> {
    let mut n = 0u64;
    match file_type {
        FileType::Json => {
            for d in docs {
                serde_json::to_writer(&mut *out, &query.project(&d))?;
                out.write_all(b"\n")?;
                n += 1;
            }
        }
        FileType::Csv => {
            let fields = query.included_fields().unwrap_or_default();
            let header: Vec<String> = fields.iter().map(|f| csv_cell(f)).collect();
            out.write_all(header.join(",").as_bytes())?;
            out.write_all(b"\n")?;
            for d in docs {
                let row: Vec<String> = fields
                    .iter()
                    .map(|f| csv_cell(&cell_text(get_path(&d, f))))
                    .collect();
                out.write_all(row.join(",").as_bytes())?;
                out.write_all(b"\n")?;
                n += 1;
            }
        }
    }
    out.flush()?;
    Ok(n)
}

fn cell_text(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Object(m)) if m.len() == 1 && m.get("$date").is_some_and(Value::is_string) => m
            .get("$date")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        Some(other) => other.to_string(),
    }
}

fn csv_cell(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

// ---------------------------------------------------------------- strict JSON

struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("non-finite number"))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(Strict(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(k) = map.next_key::<String>()? {
            if out.contains_key(&k) {
                return Err(de::Error::custom(format!("duplicate key {k:?}")));
            }
            let Strict(v) = map.next_value()?;
            out.insert(k, v);
        }
        Ok(Value::Object(out))
    }
}

/// Parse one record, rejecting duplicate keys and breaking the key rules.
pub fn parse_record(line: &str) -> Result<Value, String> {
    let Strict(v) =
        serde_json::from_str::<Strict>(line).map_err(|e| format!("invalid JSON: {e}"))?;
    if !v.is_object() {
        return Err("record is not a JSON object".into());
    }
    check_keys(&v)?;
    Ok(v)
}

/// Key rules of the import guide, including ambiguity between nested and dotted keys.
pub fn check_keys(doc: &Value) -> Result<(), String> {
    let mut leaves: Vec<Vec<String>> = Vec::new();
    collect_leaves(doc, &mut Vec::new(), &mut leaves, 0)?;
    leaves.sort();
    for pair in leaves.windows(2) {
        if let [a, b] = pair {
            if b.starts_with(a) {
                return Err(format!("ambiguous key {:?}", a.join(".")));
            }
        }
    }
    Ok(())
}

fn collect_leaves(
    v: &Value,
    prefix: &mut Vec<String>,
    out: &mut Vec<Vec<String>>,
    depth: usize,
) -> Result<(), String> {
    if depth > 100 {
        return Err("record nested too deeply".into());
    }
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, child) in m {
                if k.is_empty() || k.starts_with('.') || k.ends_with('.') || k.contains("..") {
                    return Err(format!("invalid key {k:?}"));
                }
                let n = prefix.len();
                prefix.extend(k.split('.').map(str::to_string));
                collect_leaves(child, prefix, out, depth + 1)?;
                prefix.truncate(n);
            }
            Ok(())
        }
        _ => {
            out.push(prefix.clone());
            Ok(())
        }
    }
}

/// Parse a JSON Lines import file: one result per non-blank line.
pub fn parse_json_lines<R: BufRead>(reader: R) -> std::io::Result<Vec<Result<Value, String>>> {
    let mut out = Vec::new();
    for line in reader.lines() {
        let line = match line {
            Ok(l) => l,
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                out.push(Err("line is not valid UTF-8".to_string()));
                continue;
            }
            Err(e) => return Err(e),
        };
        let t = line.trim();
        if t.is_empty() {
            continue;
        }
        out.push(parse_record(t));
    }
    Ok(out)
}

/// Split CSV text into rows (RFC 4180 quoting, quoted newlines allowed).
pub fn csv_rows(text: &str) -> Result<Vec<Vec<String>>, String> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut cell = String::new();
    let mut chars = text.chars().peekable();
    let mut in_quotes = false;
    let mut any = false;
    while let Some(c) = chars.next() {
        any = true;
        if in_quotes {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    chars.next();
                    cell.push('"');
                } else {
                    in_quotes = false;
                }
            } else {
                cell.push(c);
            }
            continue;
        }
        match c {
            '"' if cell.is_empty() => in_quotes = true,
            ',' => row.push(std::mem::take(&mut cell)),
            '\r' => {}
            '\n' => {
                row.push(std::mem::take(&mut cell));
                rows.push(std::mem::take(&mut row));
                any = false;
            }
            other => cell.push(other),
        }
    }
    if in_quotes {
        return Err("unterminated quoted CSV field".into());
    }
    if any {
        row.push(cell);
        rows.push(row);
    }
    rows.retain(|r| !(r.len() == 1 && r.first().is_some_and(String::is_empty)));
    Ok(rows)
}

fn csv_value(text: &str) -> Value {
    match text {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        _ => {
            if let Ok(i) = text.parse::<i64>() {
                return Value::Number(i.into());
            }
            match text.parse::<f64>().ok().and_then(Number::from_f64) {
                Some(n)
                    if text.chars().any(|c| c.is_ascii_digit())
                        && !text.contains(char::is_alphabetic) =>
                {
                    Value::Number(n)
                }
                _ => Value::String(text.to_string()),
            }
        }
    }
}

/// Parse a CSV import file into records (empty cells are absent fields, dotted headers nest).
pub fn parse_csv(text: &str) -> Result<Vec<Result<Value, String>>, String> {
    let rows = csv_rows(text)?;
    let mut it = rows.into_iter();
    let header = it.next().ok_or("CSV file has no header row")?;
    let mut seen = std::collections::HashSet::new();
    for h in &header {
        if h.is_empty() || !seen.insert(h.as_str()) {
            return Err(format!("invalid or duplicate CSV column {h:?}"));
        }
    }
    let mut out = Vec::new();
    for row in it {
        if row.len() != header.len() {
            out.push(Err(format!(
                "row has {} values for {} columns",
                row.len(),
                header.len()
            )));
            continue;
        }
        let mut doc = Value::Object(Map::new());
        for (h, v) in header.iter().zip(row) {
            if !v.is_empty() {
                let value = if h == "_id" {
                    Value::String(v)
                } else {
                    csv_value(&v)
                };
                set_path(&mut doc, h, value);
            }
        }
        out.push(check_keys(&doc).map(|_| doc));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emulator::query::parse;
    use serde_json::json;

    #[test]
    fn strict_records() {
        assert!(parse_record(r#"{"a":1,"a":2}"#).is_err());
        assert!(parse_record(r#"{"a":{"b":1},"a.b":2}"#).is_err());
        assert!(parse_record(r#"{".a":1}"#).is_err());
        assert!(parse_record(r#"{"a..b":1}"#).is_err());
        assert!(parse_record("[1]").is_err());
        assert!(
            parse_record(r#"{"d":{"$date":"2018-08-31T17:30:00.882Z"},"x.y":1,"x.z":2}"#).is_ok()
        );
    }

    #[test]
    fn csv_export_and_import_round_trip() {
        let q = parse("db.collection('c').field({_id:true,name:true,'a.b':true}).get()")
            .unwrap_or_default();
        let docs = vec![Arc::new(json!({"_id":"1","name":"x, \"y\"","a":{"b":2}}))];
        let mut buf = Vec::new();
        write_export(&mut buf, docs, &q, FileType::Csv).unwrap_or_default();
        let text = String::from_utf8(buf).unwrap_or_default();
        assert_eq!(text, "_id,name,a.b\n1,\"x, \"\"y\"\"\",2\n");
        let recs = parse_csv(&text).unwrap_or_default();
        assert_eq!(
            recs,
            vec![Ok(json!({"_id":"1","name":"x, \"y\"","a":{"b":2}}))]
        );
    }
}
