//! A location-aware YAML tree.
//!
//! The spec is parsed once into this tree so that every later error — a serde type error, a bad value found
//! by the planner, a `--set` override — can be pointed at the file, line and column it came from. The typed
//! [`crate::spec::Spec`] is then deserialized from the tree (through JSON), with the failing path mapped back
//! to a location here.

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;
use std::fmt;

/// Where a value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// 1-based line and column in the spec file.
    File { line: u64, column: u64 },
    /// A `--set path=value` argument on the command line.
    Override(String),
    /// Not known (for example a default value that the file did not spell out).
    Unknown,
}

#[derive(Clone, Debug)]
pub struct Node {
    pub origin: Origin,
    pub kind: Kind,
}

#[derive(Clone, Debug)]
pub enum Kind {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<Entry>),
}

#[derive(Clone, Debug)]
pub struct Entry {
    pub key: String,
    pub key_origin: Origin,
    pub value: Node,
}

/// One step of a path into the tree: a mapping key or a sequence index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    Index(usize),
}

impl fmt::Display for Seg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Seg::Key(k) => write!(f, "{k}"),
            Seg::Index(i) => write!(f, "[{i}]"),
        }
    }
}

/// Renders a path the way users write it: `load.concurrency`, `grid.max_model_len[2]`.
pub fn path_to_string(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

fn origin_of(loc: serde_saphyr::Location) -> Origin {
    if loc.line() == 0 { Origin::Unknown } else { Origin::File { line: loc.line(), column: loc.column() } }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let spanned: Spanned<Kind> = Spanned::deserialize(d)?;
        Ok(Node { origin: origin_of(spanned.referenced), kind: spanned.value })
    }
}

impl<'de> Deserialize<'de> for Kind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(KindVisitor)
    }
}

struct KindVisitor;

impl<'de> Visitor<'de> for KindVisitor {
    type Value = Kind;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Kind, E> {
        Ok(Kind::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Kind, E> {
        Ok(Kind::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Kind, E> {
        Ok(i64::try_from(v).map(Kind::Int).unwrap_or(Kind::Float(v as f64)))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Kind, E> {
        Ok(i64::try_from(v).map(Kind::Int).unwrap_or(Kind::Float(v as f64)))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Kind, E> {
        Ok(i64::try_from(v).map(Kind::Int).unwrap_or(Kind::Float(v as f64)))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Kind, E> {
        Ok(Kind::Float(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Kind, E> {
        Ok(Kind::Str(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Kind, E> {
        Ok(Kind::Str(v))
    }
    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Kind, E> {
        Ok(Kind::Str(String::from_utf8_lossy(v).into_owned()))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Kind, E> {
        Ok(Kind::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Kind, E> {
        Ok(Kind::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Kind, D::Error> {
        Kind::deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Kind, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Node>()? {
            items.push(item);
        }
        Ok(Kind::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Kind, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Node>()? {
            let value: Node = map.next_value()?;
            let name = match key.kind {
                Kind::Str(s) => s,
                Kind::Null => "null".to_owned(),
                Kind::Bool(b) => b.to_string(),
                Kind::Int(i) => i.to_string(),
                Kind::Float(f) => f.to_string(),
                // A custom error here would lose its place in the file; the key is kept, marked, and reported
                // with its line and column once the tree is read (`Node::complex_key`).
                Kind::Seq(_) | Kind::Map(_) => COMPLEX_KEY.to_owned(),
            };
            entries.push(Entry { key: name, key_origin: key.origin, value });
        }
        Ok(Kind::Map(entries))
    }
}

/// The name given to a mapping key that is a list or a mapping (`? [a, b]`), which no spec key can be.
const COMPLEX_KEY: &str = "\0complex key";

impl Node {
    /// Where the first key that is a list or a mapping lies, if any.
    pub fn complex_key(&self) -> Option<&Origin> {
        match &self.kind {
            Kind::Map(entries) => entries.iter().find_map(|e| match e.key == COMPLEX_KEY {
                true => Some(&e.key_origin),
                false => e.value.complex_key(),
            }),
            Kind::Seq(items) => items.iter().find_map(Node::complex_key),
            _ => None,
        }
    }

    pub fn new(origin: Origin, kind: Kind) -> Self {
        Node { origin, kind }
    }

    fn entry(&self, key: &str) -> Option<&Entry> {
        match &self.kind {
            Kind::Map(entries) => entries.iter().find(|e| e.key == key),
            _ => None,
        }
    }

    fn child(&self, seg: &Seg) -> Option<&Node> {
        match (seg, &self.kind) {
            (Seg::Key(k), _) => self.entry(k).map(|e| &e.value),
            (Seg::Index(i), Kind::Seq(items)) => items.get(*i),
            _ => None,
        }
    }

    /// The origin of the value at `path`, or of its deepest existing ancestor (a missing key is reported
    /// where it should have been written).
    pub fn locate_value(&self, path: &[Seg]) -> Origin {
        let mut node = self;
        for seg in path {
            match node.child(seg) {
                Some(child) => node = child,
                None => break,
            }
        }
        node.origin.clone()
    }

    /// Like [`Node::locate_value`], but when the path ends in a key that exists, points at the key itself.
    pub fn locate_key(&self, path: &[Seg]) -> Origin {
        let Some((Seg::Key(last), parent)) = path.split_last() else {
            return self.locate_value(path);
        };
        let mut node = self;
        for seg in parent {
            match node.child(seg) {
                Some(child) => node = child,
                None => return node.origin.clone(),
            }
        }
        match node.entry(last) {
            Some(entry) if entry.key_origin != Origin::Unknown => entry.key_origin.clone(),
            Some(entry) => entry.value.origin.clone(),
            None => node.origin.clone(),
        }
    }

    /// The keys of the mapping at `path`, for "did you mean" suggestions.
    pub fn keys_at(&self, path: &[Seg]) -> Vec<String> {
        let mut node = self;
        for seg in path {
            match node.child(seg) {
                Some(child) => node = child,
                None => return Vec::new(),
            }
        }
        match &node.kind {
            Kind::Map(entries) => entries.iter().map(|e| e.key.clone()).collect(),
            _ => Vec::new(),
        }
    }

    /// Sets the value at a dotted path, creating mappings on the way (`--set engine.model=/models/x`).
    /// A numeric segment indexes an existing list. Returns a message when the path cannot be followed.
    pub fn set_path(&mut self, path: &[Seg], value: Node) -> Result<(), String> {
        let Some((first, rest)) = path.split_first() else {
            *self = value;
            return Ok(());
        };
        if matches!(self.kind, Kind::Null) {
            self.kind = Kind::Map(Vec::new());
        }
        let origin = value.origin.clone();
        match (first, &mut self.kind) {
            (Seg::Key(k), Kind::Map(entries)) => {
                if let Some(entry) = entries.iter_mut().find(|e| &e.key == k) {
                    return entry.value.set_path(rest, value);
                }
                let mut child = Node::new(origin.clone(), Kind::Null);
                child.set_path(rest, value)?;
                entries.push(Entry { key: k.clone(), key_origin: origin, value: child });
                Ok(())
            }
            (Seg::Index(i), Kind::Seq(items)) => match items.get_mut(*i) {
                Some(item) => item.set_path(rest, value),
                None => Err(format!("index {i} is past the end of a list of {} items", items.len())),
            },
            (Seg::Index(_), _) => Err("an index can only follow a list".to_owned()),
            (Seg::Key(k), _) => Err(format!("`{k}` cannot be set inside a value that is not a mapping")),
        }
    }

    /// Converts to JSON, the form the typed spec is deserialized from.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value;
        match &self.kind {
            Kind::Null => Value::Null,
            Kind::Bool(b) => Value::Bool(*b),
            Kind::Int(i) => Value::from(*i),
            Kind::Float(f) => serde_json::Number::from_f64(*f).map(Value::Number).unwrap_or(Value::Null),
            Kind::Str(s) => Value::String(s.clone()),
            Kind::Seq(items) => Value::Array(items.iter().map(Node::to_json).collect()),
            Kind::Map(entries) => Value::Object(entries.iter().map(|e| (e.key.clone(), e.value.to_json())).collect()),
        }
    }

    /// Marks this node and everything under it as coming from `origin`.
    pub fn set_origin_deep(&mut self, origin: &Origin) {
        self.origin = origin.clone();
        match &mut self.kind {
            Kind::Seq(items) => items.iter_mut().for_each(|n| n.set_origin_deep(origin)),
            Kind::Map(entries) => entries.iter_mut().for_each(|e| {
                e.key_origin = origin.clone();
                e.value.set_origin_deep(origin);
            }),
            _ => {}
        }
    }
}

/// Splits `engine.args.max-model-len` or `grid.concurrency[0]` into segments.
pub fn parse_path(path: &str) -> Option<Vec<Seg>> {
    let mut segs = Vec::new();
    for part in path.split('.') {
        let (name, mut indexes) = match part.find('[') {
            Some(at) => (&part[..at], &part[at..]),
            None => (part, ""),
        };
        if name.is_empty() {
            return None;
        }
        segs.push(Seg::Key(name.to_owned()));
        while let Some(rest) = indexes.strip_prefix('[') {
            let close = rest.find(']')?;
            segs.push(Seg::Index(rest[..close].parse().ok()?));
            indexes = &rest[close + 1..];
        }
        if !indexes.is_empty() {
            return None;
        }
    }
    Some(segs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_locations_of_keys_and_values() {
        let node: Node = serde_saphyr::from_str("a: 1\nb:\n  c: [x, y]\n").unwrap();
        let path = parse_path("b.c[1]").unwrap();
        assert_eq!(node.locate_value(&path), Origin::File { line: 3, column: 10 });
        assert_eq!(node.locate_key(&parse_path("b.c").unwrap()), Origin::File { line: 3, column: 3 });
        // A missing key points at its parent mapping.
        assert!(matches!(node.locate_value(&parse_path("b.zzz").unwrap()), Origin::File { line: 3, .. }));
    }

    #[test]
    fn parses_paths() {
        assert_eq!(
            parse_path("grid.x[2]").unwrap(),
            vec![Seg::Key("grid".into()), Seg::Key("x".into()), Seg::Index(2)]
        );
        assert!(parse_path("a..b").is_none());
        assert!(parse_path("a[x]").is_none());
    }

    #[test]
    fn set_path_creates_mappings() {
        let mut node: Node = serde_saphyr::from_str("engine: {kind: vllm}\n").unwrap();
        let value = Node::new(Origin::Override("x".into()), Kind::Str("/m".into()));
        node.set_path(&parse_path("engine.model").unwrap(), value).unwrap();
        assert_eq!(node.to_json()["engine"]["model"], "/m");
    }
}
