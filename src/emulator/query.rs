//! A small, defensive parser and evaluator for the database-SDK JavaScript subset that the
//! `query` fields of `/tcb/*` carry (reference §2, §6, §12.C.12, §12.D.16):
//!
//! `[const P = db.Geo.Point;] db.collection("x")[.doc(id)][.where({...})][.orderBy(f, dir)]*
//!  [.skip(n)][.limit(n)][.field({...})].get()|.count()|.remove()|.update({data})|.set({data})|.add({data})`
//!
//! `where` supports plain equality (top-level and dotted fields, nested objects are flattened to
//! dotted paths, arrays match by containment) and the commands `_.eq/neq/gt/gte/lt/lte/in/nin/
//! exists/and/or` plus `.and()/.or()` chains. Values: JS object/array literals with bare or quoted
//! keys, single/double-quoted strings, numbers, booleans, null, `new Date("ISO"|ms)` and
//! `new db.Geo.Point(lng, lat)` (GeoJSON). Anything else is rejected with a [`QueryError`];
//! hostile input (deep nesting, huge numbers, garbage) never panics.

use std::collections::HashMap;
use std::fmt;

use serde_json::{json, Map, Number, Value};

use super::clock::{iso_millis, parse_iso_millis};

const MAX_DEPTH: usize = 64;
const MAX_QUERY_BYTES: usize = 32 * 1024 * 1024;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueryError(pub String);

impl fmt::Display for QueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for QueryError {}

fn err<T>(msg: impl Into<String>) -> Result<T, QueryError> {
    Err(QueryError(msg.into()))
}

/// A filter condition on one field.
#[derive(Clone, Debug, PartialEq)]
pub enum Cond {
    Eq(Value),
    Ne(Value),
    Gt(Value),
    Gte(Value),
    Lt(Value),
    Lte(Value),
    In(Vec<Value>),
    Nin(Vec<Value>),
    Exists(bool),
    And(Vec<Cond>),
    Or(Vec<Cond>),
}

/// What the statement does at the end of its chain.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    Get,
    Count,
    Remove,
    Update(Map<String, Value>),
    Set(Value),
    Add(Vec<Value>),
}

#[derive(Clone, Debug, PartialEq, Default)]
pub struct ParsedQuery {
    pub collection: String,
    pub doc_id: Option<String>,
    pub filter: Vec<(String, Cond)>,
    pub order_by: Vec<(String, bool)>,
    pub skip: Option<u64>,
    pub limit: Option<u64>,
    /// `.field({...})` in source order: (path, included).
    pub fields: Option<Vec<(String, bool)>>,
    pub action: Option<Action>,
}

// ---------------------------------------------------------------- tokenizer

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Num(String),
    Punct(char),
}

fn tokenize(src: &str) -> Result<Vec<Tok>, QueryError> {
    if src.len() > MAX_QUERY_BYTES {
        return err("query too long");
    }
    let chars: Vec<char> = src.chars().collect();
    let mut toks = Vec::new();
    let mut i = 0;
    while let Some(&c) = chars.get(i) {
        if c.is_whitespace() {
            i += 1;
        } else if c == '/' && chars.get(i + 1) == Some(&'/') {
            while chars.get(i).is_some_and(|&c| c != '\n') {
                i += 1;
            }
        } else if c == '/' && chars.get(i + 1) == Some(&'*') {
            i += 2;
            loop {
                match chars.get(i) {
                    None => return err("unterminated comment"),
                    Some('*') if chars.get(i + 1) == Some(&'/') => {
                        i += 2;
                        break;
                    }
                    Some(_) => i += 1,
                }
            }
        } else if c.is_alphabetic() || c == '_' || c == '$' {
            let start = i;
            while chars
                .get(i)
                .is_some_and(|c| c.is_alphanumeric() || *c == '_' || *c == '$')
            {
                i += 1;
            }
            toks.push(Tok::Ident(
                chars.get(start..i).unwrap_or_default().iter().collect(),
            ));
        } else if c.is_ascii_digit()
            || (c == '.' && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit()))
        {
            let start = i;
            while chars
                .get(i)
                .is_some_and(|c| c.is_ascii_alphanumeric() || *c == '.')
                || (chars.get(i).is_some_and(|c| *c == '+' || *c == '-')
                    && i > start
                    && chars.get(i - 1).is_some_and(|p| *p == 'e' || *p == 'E'))
            {
                i += 1;
            }
            toks.push(Tok::Num(
                chars.get(start..i).unwrap_or_default().iter().collect(),
            ));
        } else if c == '"' || c == '\'' {
            let quote = c;
            i += 1;
            let mut s = String::new();
            loop {
                match chars.get(i) {
                    None => return err("unterminated string literal"),
                    Some(&ch) if ch == quote => {
                        i += 1;
                        break;
                    }
                    Some('\\') => {
                        let esc = chars.get(i + 1).copied();
                        i += 2;
                        match esc {
                            Some('n') => s.push('\n'),
                            Some('t') => s.push('\t'),
                            Some('r') => s.push('\r'),
                            Some('b') => s.push('\u{8}'),
                            Some('f') => s.push('\u{c}'),
                            Some('0') => s.push('\0'),
                            Some('u') => {
                                let hex: String =
                                    chars.get(i..i + 4).unwrap_or_default().iter().collect();
                                let code = u32::from_str_radix(&hex, 16)
                                    .map_err(|_| QueryError("bad \\u escape".into()))?;
                                s.push(char::from_u32(code).unwrap_or('\u{fffd}'));
                                i += 4;
                            }
                            Some(other) => s.push(other),
                            None => return err("unterminated string literal"),
                        }
                    }
                    Some(&ch) => {
                        s.push(ch);
                        i += 1;
                    }
                }
            }
            toks.push(Tok::Str(s));
        } else if "(){}[],:.;=-+".contains(c) {
            toks.push(Tok::Punct(c));
            i += 1;
        } else {
            return err(format!("unexpected character {c:?} in query"));
        }
    }
    Ok(toks)
}

// ---------------------------------------------------------------- syntax tree

#[derive(Clone, Debug)]
enum Node {
    Str(String),
    Num(Number),
    Bool(bool),
    Null,
    Obj(Vec<(String, Node)>),
    Arr(Vec<Node>),
    /// `[new] a.b.c[(args)](.m(args))*`
    Ref {
        is_new: bool,
        path: Vec<String>,
        args: Option<Vec<Node>>,
        chain: Vec<(String, Vec<Node>)>,
    },
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
    depth: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(&Tok::Punct(c)) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: char) -> Result<(), QueryError> {
        if self.eat(c) {
            Ok(())
        } else {
            err(format!("expected '{c}' at token {}", self.pos))
        }
    }

    fn ident(&mut self) -> Result<String, QueryError> {
        match self.next() {
            Some(Tok::Ident(s)) => Ok(s),
            _ => err(format!(
                "expected a name at token {}",
                self.pos.saturating_sub(1)
            )),
        }
    }

    fn args(&mut self) -> Result<Vec<Node>, QueryError> {
        self.expect('(')?;
        let mut out = Vec::new();
        while !self.eat(')') {
            out.push(self.expr()?);
            if !self.eat(',') {
                self.expect(')')?;
                break;
            }
        }
        Ok(out)
    }

    fn expr(&mut self) -> Result<Node, QueryError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return err("query nested too deeply");
        }
        let r = self.expr_inner();
        self.depth -= 1;
        r
    }

    fn expr_inner(&mut self) -> Result<Node, QueryError> {
        match self.next() {
            Some(Tok::Str(s)) => Ok(Node::Str(s)),
            Some(Tok::Num(n)) => Ok(Node::Num(parse_number(&n, false)?)),
            Some(Tok::Punct('-')) => match self.next() {
                Some(Tok::Num(n)) => Ok(Node::Num(parse_number(&n, true)?)),
                _ => err("expected a number after '-'"),
            },
            Some(Tok::Punct('{')) => {
                let mut fields = Vec::new();
                while !self.eat('}') {
                    let key = match self.next() {
                        Some(Tok::Ident(s)) | Some(Tok::Str(s)) | Some(Tok::Num(s)) => s,
                        _ => return err("expected an object key"),
                    };
                    self.expect(':')?;
                    fields.push((key, self.expr()?));
                    if !self.eat(',') {
                        self.expect('}')?;
                        break;
                    }
                }
                Ok(Node::Obj(fields))
            }
            Some(Tok::Punct('[')) => {
                let mut items = Vec::new();
                while !self.eat(']') {
                    items.push(self.expr()?);
                    if !self.eat(',') {
                        self.expect(']')?;
                        break;
                    }
                }
                Ok(Node::Arr(items))
            }
            Some(Tok::Ident(first)) => {
                let is_new = first == "new";
                let mut path = vec![if is_new { self.ident()? } else { first }];
                if !is_new && path.len() == 1 {
                    match path.first().map(String::as_str) {
                        Some("true") => return Ok(Node::Bool(true)),
                        Some("false") => return Ok(Node::Bool(false)),
                        Some("null") | Some("undefined") => return Ok(Node::Null),
                        _ => {}
                    }
                }
                let mut args = None;
                let mut chain = Vec::new();
                loop {
                    if args.is_none() && self.peek() == Some(&Tok::Punct('(')) {
                        args = Some(self.args()?);
                    } else if self.eat('.') {
                        let name = self.ident()?;
                        if args.is_none() {
                            path.push(name);
                        } else {
                            let a = self.args()?;
                            chain.push((name, a));
                        }
                    } else {
                        break;
                    }
                }
                Ok(Node::Ref {
                    is_new,
                    path,
                    args,
                    chain,
                })
            }
            other => err(format!("unexpected token {other:?}")),
        }
    }
}

fn parse_number(text: &str, negative: bool) -> Result<Number, QueryError> {
    let full = if negative {
        format!("-{text}")
    } else {
        text.to_string()
    };
    if let Ok(i) = full.parse::<i64>() {
        return Ok(Number::from(i));
    }
    match full.parse::<f64>() {
        Ok(f) if f.is_finite() => {
            Number::from_f64(f).ok_or_else(|| QueryError(format!("bad number {full}")))
        }
        _ => err(format!("bad number {full}")),
    }
}

// ---------------------------------------------------------------- interpretation

enum Expr {
    Val(Value),
    Cond(Cond),
}

struct Interp {
    aliases: HashMap<String, Vec<String>>,
}

impl Interp {
    fn resolve(&self, path: &[String]) -> Vec<String> {
        let mut out = Vec::new();
        if let Some((head, rest)) = path.split_first() {
            match self.aliases.get(head) {
                Some(target) => out.extend(target.iter().cloned()),
                None => out.push(head.clone()),
            }
            out.extend(rest.iter().cloned());
        }
        out
    }

    fn expr(&self, node: &Node) -> Result<Expr, QueryError> {
        Ok(match node {
            Node::Str(s) => Expr::Val(Value::String(s.clone())),
            Node::Num(n) => Expr::Val(Value::Number(n.clone())),
            Node::Bool(b) => Expr::Val(Value::Bool(*b)),
            Node::Null => Expr::Val(Value::Null),
            Node::Arr(items) => {
                let mut out = Vec::with_capacity(items.len());
                for i in items {
                    out.push(self.value(i)?);
                }
                Expr::Val(Value::Array(out))
            }
            Node::Obj(fields) => {
                let mut map = Map::new();
                for (k, v) in fields {
                    map.insert(k.clone(), self.value(v)?);
                }
                Expr::Val(Value::Object(map))
            }
            Node::Ref {
                is_new,
                path,
                args,
                chain,
            } => {
                let path = self.resolve(path);
                let names: Vec<&str> = path.iter().map(String::as_str).collect();
                let args = args.as_deref().unwrap_or_default();
                let base = match names.as_slice() {
                    ["Date"] if *is_new => Expr::Val(date_value(args, self)?),
                    [.., "Point"] => Expr::Val(self.geo_point(args)?),
                    ["db", "command", op] => Expr::Cond(self.command(op, args)?),
                    _ => return err(format!("unsupported expression {}", path.join("."))),
                };
                let mut cur = base;
                for (m, margs) in chain {
                    let Expr::Cond(c) = cur else {
                        return err(format!("unsupported method .{m}() on a value"));
                    };
                    let mut parts = vec![c];
                    for a in margs {
                        parts.push(self.cond(a)?);
                    }
                    cur = Expr::Cond(match m.as_str() {
                        "and" => Cond::And(parts),
                        "or" => Cond::Or(parts),
                        other => return err(format!("unsupported command chain .{other}()")),
                    });
                }
                cur
            }
        })
    }

    fn value(&self, node: &Node) -> Result<Value, QueryError> {
        match self.expr(node)? {
            Expr::Val(v) => Ok(v),
            Expr::Cond(_) => err("a query command is not allowed here"),
        }
    }

    fn cond(&self, node: &Node) -> Result<Cond, QueryError> {
        match self.expr(node)? {
            Expr::Cond(c) => Ok(c),
            Expr::Val(v) => Ok(Cond::Eq(v)),
        }
    }

    fn geo_point(&self, args: &[Node]) -> Result<Value, QueryError> {
        match args {
            [lng, lat] => {
                let lng = self.value(lng)?;
                let lat = self.value(lat)?;
                match (lng.as_f64(), lat.as_f64()) {
                    (Some(x), Some(y))
                        if (-180.0..=180.0).contains(&x) && (-90.0..=90.0).contains(&y) =>
                    {
                        Ok(json!({"type": "Point", "coordinates": [lng, lat]}))
                    }
                    _ => err("Geo.Point needs longitude in [-180,180] and latitude in [-90,90]"),
                }
            }
            _ => err("Geo.Point takes two numbers"),
        }
    }

    fn command(&self, op: &str, args: &[Node]) -> Result<Cond, QueryError> {
        let one = || -> Result<Value, QueryError> {
            match args {
                [a] => self.value(a),
                _ => err(format!("_.{op}() takes one argument")),
            }
        };
        let list = || -> Result<Vec<Value>, QueryError> {
            match one()? {
                Value::Array(a) => Ok(a),
                _ => err(format!("_.{op}() takes an array")),
            }
        };
        let conds = || -> Result<Vec<Cond>, QueryError> {
            let nodes: Vec<&Node> = match args {
                [Node::Arr(items)] => items.iter().collect(),
                _ => args.iter().collect(),
            };
            nodes.into_iter().map(|n| self.cond(n)).collect()
        };
        Ok(match op {
            "eq" => Cond::Eq(one()?),
            "neq" => Cond::Ne(one()?),
            "gt" => Cond::Gt(one()?),
            "gte" => Cond::Gte(one()?),
            "lt" => Cond::Lt(one()?),
            "lte" => Cond::Lte(one()?),
            "in" => Cond::In(list()?),
            "nin" => Cond::Nin(list()?),
            "exists" => match one()? {
                Value::Bool(b) => Cond::Exists(b),
                _ => return err("_.exists() takes a boolean"),
            },
            "and" => Cond::And(conds()?),
            "or" => Cond::Or(conds()?),
            other => return err(format!("unsupported command _.{other}()")),
        })
    }

    fn filter(
        &self,
        node: &Node,
        prefix: &str,
        out: &mut Vec<(String, Cond)>,
    ) -> Result<(), QueryError> {
        let Node::Obj(fields) = node else {
            return err(".where() takes an object");
        };
        if fields.is_empty() && !prefix.is_empty() {
            out.push((
                prefix.trim_end_matches('.').to_string(),
                Cond::Eq(json!({})),
            ));
        }
        for (k, v) in fields {
            let path = format!("{prefix}{k}");
            match v {
                Node::Obj(_) => self.filter(v, &format!("{path}."), out)?,
                other => out.push((path, self.cond(other)?)),
            }
        }
        Ok(())
    }
}

fn date_value(args: &[Node], interp: &Interp) -> Result<Value, QueryError> {
    let millis = match args {
        [a] => match interp.value(a)? {
            Value::String(s) => {
                parse_iso_millis(&s).ok_or_else(|| QueryError(format!("bad date {s:?}")))?
            }
            Value::Number(n) => n
                .as_i64()
                .or_else(|| n.as_f64().map(|f| f as i64))
                .ok_or_else(|| QueryError("bad date".into()))?,
            _ => return err("new Date() takes a string or a number"),
        },
        _ => return err("new Date() needs exactly one argument"),
    };
    Ok(json!({"$date": iso_millis(millis)}))
}

fn u64_arg(name: &str, args: &[Node]) -> Result<u64, QueryError> {
    match args {
        [Node::Num(n)] => n
            .as_u64()
            .ok_or_else(|| QueryError(format!(".{name}() takes a non-negative integer"))),
        _ => err(format!(".{name}() takes a non-negative integer")),
    }
}

fn str_arg(name: &str, args: &[Node]) -> Result<String, QueryError> {
    match args {
        [Node::Str(s)] => Ok(s.clone()),
        _ => err(format!(".{name}() takes a string")),
    }
}

fn data_arg(name: &str, args: &[Node], interp: &Interp) -> Result<Value, QueryError> {
    match args {
        [node] => match interp.value(node)? {
            Value::Object(mut m) => m
                .remove("data")
                .ok_or_else(|| QueryError(format!(".{name}() needs {{data: ...}}"))),
            _ => err(format!(".{name}() takes an object {{data: ...}}")),
        },
        _ => err(format!(".{name}() takes one argument")),
    }
}

/// Parse a query statement.
pub fn parse(src: &str) -> Result<ParsedQuery, QueryError> {
    let toks = tokenize(src)?;
    let mut p = Parser {
        toks,
        pos: 0,
        depth: 0,
    };
    let mut interp = Interp {
        aliases: HashMap::new(),
    };
    interp
        .aliases
        .insert("_".into(), vec!["db".into(), "command".into()]);
    let mut statement = None;
    while p.peek().is_some() {
        if p.eat(';') {
            continue;
        }
        if matches!(p.peek(), Some(Tok::Ident(k)) if k == "const" || k == "let" || k == "var") {
            p.pos += 1;
            let name = p.ident()?;
            p.expect('=')?;
            let mut target = vec![p.ident()?];
            while p.eat('.') {
                target.push(p.ident()?);
            }
            let resolved = interp.resolve(&target);
            interp.aliases.insert(name, resolved);
            continue;
        }
        if statement.is_some() {
            return err("only one database statement is allowed");
        }
        statement = Some(p.expr()?);
    }
    let Some(Node::Ref {
        is_new: false,
        path,
        args: Some(args),
        chain,
    }) = statement
    else {
        return err("query must be a db.collection(...) statement");
    };
    if interp.resolve(&path) != ["db", "collection"] {
        return err("query must start with db.collection(...)");
    }
    let mut q = ParsedQuery {
        collection: str_arg("collection", &args)?,
        ..ParsedQuery::default()
    };
    for (name, args) in &chain {
        if q.action.is_some() {
            return err(format!(".{name}() after the end of the statement"));
        }
        match name.as_str() {
            "doc" => q.doc_id = Some(str_arg("doc", args)?),
            "where" => match args.as_slice() {
                [node] => interp.filter(node, "", &mut q.filter)?,
                _ => return err(".where() takes one object"),
            },
            "orderBy" => match args.as_slice() {
                [Node::Str(f), Node::Str(dir)] => {
                    let asc = match dir.as_str() {
                        "asc" => true,
                        "desc" => false,
                        _ => return err(".orderBy() direction must be 'asc' or 'desc'"),
                    };
                    q.order_by.push((f.clone(), asc));
                }
                _ => return err(".orderBy() takes a field name and 'asc'|'desc'"),
            },
            "skip" => q.skip = Some(u64_arg("skip", args)?),
            "limit" => q.limit = Some(u64_arg("limit", args)?),
            "field" => match args.as_slice() {
                [Node::Obj(fields)] => {
                    let mut out = Vec::new();
                    for (k, v) in fields {
                        let on = match v {
                            Node::Bool(b) => *b,
                            Node::Num(n) => n.as_f64().is_some_and(|f| f != 0.0),
                            _ => return err(".field() values must be true/false"),
                        };
                        out.push((k.clone(), on));
                    }
                    q.fields = Some(out);
                }
                _ => return err(".field() takes an object"),
            },
            "get" | "count" | "remove" if !args.is_empty() => {
                return err(format!(".{name}() takes no arguments"))
            }
            "get" => q.action = Some(Action::Get),
            "count" => q.action = Some(Action::Count),
            "remove" => q.action = Some(Action::Remove),
            "update" => match data_arg("update", args, &interp)? {
                Value::Object(m) => q.action = Some(Action::Update(m)),
                _ => return err(".update() data must be an object"),
            },
            "set" => match data_arg("set", args, &interp)? {
                v @ Value::Object(_) => q.action = Some(Action::Set(v)),
                _ => return err(".set() data must be an object"),
            },
            "add" => match data_arg("add", args, &interp)? {
                Value::Array(items) => q.action = Some(Action::Add(items)),
                v @ Value::Object(_) => q.action = Some(Action::Add(vec![v])),
                _ => return err(".add() data must be an object or an array"),
            },
            other => return err(format!("unsupported method .{other}()")),
        }
    }
    Ok(q)
}

pub use super::query_eval::{compare_values, get_path, set_path};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_example_parses() {
        let q = parse("const Point = db.Geo.Point;db.collection('geo').where({name:'x',age:_.gt(10).and(_.lt(20)),loc:new Point(113,23),array:[1,2]}).limit(10).skip(1).orderBy('age','asc').orderBy('name','desc').field({name:true}).get()").unwrap_or_default();
        assert_eq!(q.collection, "geo");
        assert_eq!(q.filter.len(), 4);
        assert_eq!(q.limit, Some(10));
        assert_eq!(q.skip, Some(1));
        assert_eq!(
            q.order_by,
            vec![("age".into(), true), ("name".into(), false)]
        );
        assert_eq!(q.action, Some(Action::Get));
        let doc = json!({"_id":"1","name":"x","age":15,"loc":{"type":"Point","coordinates":[113,23]},"array":[1,2]});
        assert!(q.matches(&doc));
        assert!(!q.matches(&json!({"name":"x","age":25})));
        assert_eq!(q.project(&doc), json!({"_id":"1","name":"x"}));
    }

    #[test]
    fn equality_dotted_nested_and_arrays() {
        let q = parse(r#"db.collection("c").where({"a.b": 1, c: {d: "x"}, tags: "t"}).get()"#)
            .unwrap_or_default();
        assert!(q.matches(&json!({"a":{"b":1.0},"c":{"d":"x"},"tags":["s","t"]})));
        assert!(!q.matches(&json!({"a":{"b":2},"c":{"d":"x"},"tags":["t"]})));
    }

    #[test]
    fn data_values() {
        let q = parse(r#"db.collection("geo").add({data:[{due:new Date("2019-09-09"),location:new db.Geo.Point(113,23),n:-1.5,s:'it\'s',u:"\u4e2d"}]})"#).unwrap_or_default();
        let Some(Action::Add(items)) = q.action else {
            panic!("no add")
        };
        assert_eq!(items[0]["due"], json!({"$date":"2019-09-09T00:00:00.000Z"}));
        assert_eq!(items[0]["location"]["coordinates"], json!([113, 23]));
        assert_eq!(items[0]["s"], "it's");
        assert_eq!(items[0]["u"], "中");
    }

    #[test]
    fn hostile_inputs_are_errors() {
        let deep = format!(
            "db.collection('a').where({}{})",
            "{a:".repeat(500),
            "}".repeat(500)
        );
        for bad in [
            "",
            "db",
            "db.collection(",
            "db.collection(1).get()",
            "db.collection('a').get(1)",
            "db.collection('a').nope()",
            "db.collection('a').where(_.gt(1)).get()",
            "'unterminated",
            "db.collection('a').limit(-1).get()",
            "db.collection('a').limit(1e999).get()",
            "process.exit()",
            "db.collection('a').get().get()",
            deep.as_str(),
            "\u{0}",
            "db.collection('a').where({a: new Date('nope')}).get()",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should fail");
        }
    }

    proptest::proptest! {
        #[test]
        fn never_panics(s in ".{0,200}") {
            let _ = parse(&s);
        }

        #[test]
        fn never_panics_on_query_like(s in "(db|\\.|collection|where|\\(|\\)|\\{|\\}|'a'|:|,|_|gt|1|-|new|Date|Point|\\[|\\])*") {
            let _ = parse(&s);
        }
    }
}
