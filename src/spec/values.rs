//! Value types of the spec that serde's derive cannot express without `untagged`: a number-or-template, a
//! grid scalar, an engine argument, a duration. Each has a hand-written `Deserialize` (one `visit_*` per YAML
//! shape it accepts), a `Serialize` back to the same shape, and a `JsonSchema`. `Scalar` lives in the record
//! layer (plans and records carry it) and is re-exported here.

pub use crate::record::values::Scalar;
use crate::record::values::ScalarVisitor;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

/// An integer, or a minijinja template that renders to one (`"{{ concurrency }}"`).
/// Kept signed so that a negative value reaches validation and gets its own message.
#[derive(Clone, Debug, PartialEq)]
pub enum IntOrTemplate {
    Int(i64),
    Template(String),
}

impl Serialize for IntOrTemplate {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            IntOrTemplate::Int(i) => s.serialize_i64(*i),
            IntOrTemplate::Template(t) => s.serialize_str(t),
        }
    }
}

struct IntVisitor;

impl Visitor<'_> for IntVisitor {
    type Value = IntOrTemplate;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an integer (or a template string that renders to one)")
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<IntOrTemplate, E> {
        Ok(IntOrTemplate::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<IntOrTemplate, E> {
        i64::try_from(v).map(IntOrTemplate::Int).map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &self))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<IntOrTemplate, E> {
        Ok(IntOrTemplate::Template(v.to_owned()))
    }
}

impl<'de> Deserialize<'de> for IntOrTemplate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(IntVisitor)
    }
}

impl JsonSchema for IntOrTemplate {
    fn schema_name() -> Cow<'static, str> {
        "IntOrTemplate".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "An integer, or a minijinja template over the grid variables that renders to one.",
            "type": ["integer", "string"]
        })
    }
}

/// A number, or a template that renders to one (`"{{ rate }}"`): request rates may be fractional.
#[derive(Clone, Debug, PartialEq)]
pub enum NumOrTemplate {
    Num(f64),
    Template(String),
}

impl Serialize for NumOrTemplate {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            NumOrTemplate::Num(x) => s.serialize_f64(*x),
            NumOrTemplate::Template(t) => s.serialize_str(t),
        }
    }
}

struct NumVisitor;

impl Visitor<'_> for NumVisitor {
    type Value = NumOrTemplate;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a number (or a template string that renders to one)")
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<NumOrTemplate, E> {
        Ok(NumOrTemplate::Num(v as f64))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<NumOrTemplate, E> {
        Ok(NumOrTemplate::Num(v as f64))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<NumOrTemplate, E> {
        Ok(NumOrTemplate::Num(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<NumOrTemplate, E> {
        Ok(NumOrTemplate::Template(v.to_owned()))
    }
}

impl<'de> Deserialize<'de> for NumOrTemplate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NumVisitor)
    }
}

impl JsonSchema for NumOrTemplate {
    fn schema_name() -> Cow<'static, str> {
        "NumOrTemplate".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A number, or a minijinja template over the grid variables that renders to one.",
            "type": ["number", "string"]
        })
    }
}

/// A boolean, or a template that renders to `true`/`false`.
#[derive(Clone, Debug, PartialEq)]
pub enum BoolOrTemplate {
    Bool(bool),
    Template(String),
}

impl Serialize for BoolOrTemplate {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            BoolOrTemplate::Bool(b) => s.serialize_bool(*b),
            BoolOrTemplate::Template(t) => s.serialize_str(t),
        }
    }
}

struct BoolVisitor;

impl Visitor<'_> for BoolVisitor {
    type Value = BoolOrTemplate;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("true, false or a template string")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<BoolOrTemplate, E> {
        Ok(BoolOrTemplate::Bool(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<BoolOrTemplate, E> {
        Ok(BoolOrTemplate::Template(v.to_owned()))
    }
}

impl<'de> Deserialize<'de> for BoolOrTemplate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(BoolVisitor)
    }
}

impl JsonSchema for BoolOrTemplate {
    fn schema_name() -> Cow<'static, str> {
        "BoolOrTemplate".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "true, false, or a minijinja template that renders to one of them.",
            "type": ["boolean", "string"]
        })
    }
}

/// An engine argument. Renders to argv: `k: v` → `--k v`; `true` → `--k`; `false` → `--no-k`;
/// `null` → omitted; a list → the flag repeated. Strings may be templates.
#[derive(Clone, Debug, PartialEq)]
pub enum ArgValue {
    Null,
    Scalar(Scalar),
    List(Vec<Scalar>),
}

impl Serialize for ArgValue {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            ArgValue::Null => s.serialize_unit(),
            ArgValue::Scalar(v) => v.serialize(s),
            ArgValue::List(items) => items.serialize(s),
        }
    }
}

struct ArgVisitor;

impl<'de> Visitor<'de> for ArgVisitor {
    type Value = ArgValue;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string, a number, a boolean, null, or a list of those")
    }
    fn visit_unit<E: de::Error>(self) -> Result<ArgValue, E> {
        Ok(ArgValue::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<ArgValue, E> {
        Ok(ArgValue::Null)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<ArgValue, E> {
        ScalarVisitor.visit_bool(v).map(ArgValue::Scalar)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<ArgValue, E> {
        ScalarVisitor.visit_i64(v).map(ArgValue::Scalar)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<ArgValue, E> {
        ScalarVisitor.visit_u64(v).map(ArgValue::Scalar)
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<ArgValue, E> {
        ScalarVisitor.visit_f64(v).map(ArgValue::Scalar)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<ArgValue, E> {
        ScalarVisitor.visit_str(v).map(ArgValue::Scalar)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ArgValue, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Scalar>()? {
            items.push(item);
        }
        Ok(ArgValue::List(items))
    }
}

impl<'de> Deserialize<'de> for ArgValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ArgVisitor)
    }
}

impl JsonSchema for ArgValue {
    fn schema_name() -> Cow<'static, str> {
        "ArgValue".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "`k: v` renders `--k v`; `k: true` renders `--k`; `k: false` renders `--no-k`; `k: null` is omitted; a list repeats the flag. Strings may be minijinja templates.",
            "anyOf": [
                {"type": ["string", "number", "boolean", "null"]},
                {"type": "array", "items": {"type": ["string", "number", "boolean"]}}
            ]
        })
    }
}

/// A duration written `600s`, `100ms`, `2m`, `1.5s`, or a bare number of seconds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Dur(pub Duration);

impl Dur {
    pub fn secs(s: u64) -> Self {
        Dur(Duration::from_secs(s))
    }
    pub fn millis(ms: u64) -> Self {
        Dur(Duration::from_millis(ms))
    }
}

/// Parses `600s`, `100ms`, `2m`, `1h`, `1.5s`, `30` (seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 =
        num.parse().map_err(|_| format!("`{text}` is not a duration; write it like 600s, 100ms, 2m or 1h"))?;
    let scale = match unit.trim() {
        "" | "s" | "sec" | "secs" => 1.0,
        "ms" => 1e-3,
        "us" | "µs" => 1e-6,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        other => return Err(format!("unknown duration unit `{other}` in `{text}`; use ms, s, m or h")),
    };
    let secs = value * scale;
    if !secs.is_finite() || secs > 1e9 {
        return Err(format!("`{text}` is out of range for a duration"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Formats a duration the way it is written in specs (`600s`, `100ms`, `1.5s`).
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1e3;
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else if ms.fract() == 0.0 {
        format!("{}ms", ms as u64)
    } else {
        format!("{}s", d.as_secs_f64())
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_duration(self.0))
    }
}

struct DurVisitor;

impl Visitor<'_> for DurVisitor {
    type Value = Dur;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a duration such as 600s, 100ms or 2m")
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Dur, E> {
        Ok(Dur::secs(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Dur, E> {
        u64::try_from(v).map(Dur::secs).map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Dur, E> {
        parse_duration(&v.to_string()).map(Dur).map_err(E::custom)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Dur, E> {
        parse_duration(v).map(Dur).map_err(E::custom)
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(DurVisitor)
    }
}

impl JsonSchema for Dur {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A duration: 600s, 100ms, 2m, 1h, or a number of seconds.",
            "anyOf": [
                {"type": "string", "pattern": "^\\s*[0-9.]+\\s*(ms|us|µs|s|sec|secs|m|min|h)?\\s*$"},
                {"type": "number", "minimum": 0}
            ]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_format_round_trip() {
        for (text, ms) in [("600s", 600_000), ("100ms", 100), ("2m", 120_000), ("1.5s", 1500), ("30", 30_000)] {
            let d = parse_duration(text).unwrap();
            assert_eq!(d.as_millis(), ms, "{text}");
            assert_eq!(parse_duration(&format_duration(d)).unwrap(), d);
        }
        assert!(parse_duration("10 parsecs").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("1e400s").is_err());
    }
}

/// A token length: a fixed number (or a template that renders to one), or a distribution drawn per request
/// (`{ dist: lognormal, mean: 256, sigma: 0.5, min: 16, max: 2048 }`).
#[derive(Clone, Debug, PartialEq)]
pub enum Length {
    Fixed(IntOrTemplate),
    Dist(DistSpec),
}

/// A length distribution as written; the planner checks that its kind has the fields it needs.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DistSpec {
    /// `fixed` (with `value`), `uniform` (`min`, `max`), `normal` (`mean`, `sd`) or `lognormal` (`mean`,
    /// `sigma`: the mean is the distribution's mean, not its median). Draws are clipped to `min` (default 1)
    /// and `max` (default: what the model's context leaves).
    pub dist: DistKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sd: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sigma: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<i64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DistKind {
    Fixed,
    Uniform,
    Normal,
    Lognormal,
}

impl Length {
    pub fn int(v: i64) -> Length {
        Length::Fixed(IntOrTemplate::Int(v))
    }
    /// The template of a fixed length written as one.
    pub fn template(&self) -> Option<&str> {
        match self {
            Length::Fixed(IntOrTemplate::Template(t)) => Some(t),
            _ => None,
        }
    }
}

impl Serialize for Length {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Length::Fixed(v) => v.serialize(s),
            Length::Dist(d) => d.serialize(s),
        }
    }
}

struct LengthVisitor;

impl<'de> Visitor<'de> for LengthVisitor {
    type Value = Length;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a number of tokens, a template, or a distribution such as {dist: uniform, min: 16, max: 512}")
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Length, E> {
        IntVisitor.visit_i64(v).map(Length::Fixed)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Length, E> {
        IntVisitor.visit_u64(v).map(Length::Fixed)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Length, E> {
        IntVisitor.visit_str(v).map(Length::Fixed)
    }
    fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Length, A::Error> {
        DistSpec::deserialize(de::value::MapAccessDeserializer::new(map)).map(Length::Dist)
    }
}

impl<'de> Deserialize<'de> for Length {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(LengthVisitor)
    }
}

impl JsonSchema for Length {
    fn schema_name() -> Cow<'static, str> {
        "Length".into()
    }
    fn json_schema(g: &mut SchemaGenerator) -> Schema {
        let dist = g.subschema_for::<DistSpec>();
        json_schema!({
            "description": "Tokens: an integer, a minijinja template that renders to one, or a distribution drawn per request.",
            "anyOf": [{ "type": ["integer", "string"] }, dist]
        })
    }
}
