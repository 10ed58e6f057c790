//! The experiment spec: reading YAML with locations, `--set` overrides, typed deserialization, and the
//! errors that point back at the source. Knows no processes and no clock.

pub mod error;
pub mod model;
pub mod node;
pub mod schema;
pub mod values;

pub use error::SpecError;
pub use model::*;
pub use node::{Origin, Seg};
pub use values::{ArgValue, BoolOrTemplate, DistKind, DistSpec, Dur, IntOrTemplate, Length, NumOrTemplate, Scalar};

use error::{closest, one_of};
use node::{Kind, Node, parse_path, path_to_string};
use std::path::Path;

/// Specs larger than this are surely not hand-written experiment files.
const MAX_SPEC_BYTES: usize = 1 << 20;

/// Where a spec came from, kept to point errors found later (by the planner) at their source.
#[derive(Clone, Debug)]
pub struct SpecSource {
    pub file: String,
    pub text: String,
    pub tree: Node,
}

impl SpecSource {
    /// An error about the value at `path`.
    pub fn error_at(&self, path: &[Seg], message: impl Into<String>, fix: impl Into<String>) -> SpecError {
        SpecError::new(&self.file, self.tree.locate_value(path), &path_to_string(path), message, fix)
            .with_source(&self.text)
    }

    /// An error about the key at the end of `path` (an unknown key, a misnamed variable).
    pub fn error_at_key(&self, path: &[Seg], message: impl Into<String>, fix: impl Into<String>) -> SpecError {
        SpecError::new(&self.file, self.tree.locate_key(path), &path_to_string(path), message, fix)
            .with_source(&self.text)
    }
}

#[derive(Clone, Debug)]
pub struct LoadedSpec {
    pub spec: Spec,
    pub source: SpecSource,
    /// The `--set` arguments applied, in order (recorded so a run can be re-rendered).
    pub overrides: Vec<String>,
}

/// Reads and parses a spec file, applying `--set path=value` overrides.
pub fn load_file(path: &Path, overrides: &[String]) -> Result<LoadedSpec, SpecError> {
    let file = path.display().to_string();
    use crate::record::io::{CappedError, read_capped, utf8_error_place};
    let bytes = read_capped(path, MAX_SPEC_BYTES as u64).map_err(|e| {
        let (msg, fix) = match e {
            CappedError::Io(e) => (format!("cannot read the spec: {e}"), "check the path".to_owned()),
            CappedError::NotAFile => {
                ("the spec is not a regular file".to_owned(), "give the path of a YAML file".to_owned())
            }
            CappedError::TooLong => (
                format!("the spec is longer than {MAX_SPEC_BYTES} bytes, surely a mistake"),
                "give the path of the experiment's YAML file".to_owned(),
            ),
        };
        SpecError::new(&file, Origin::Unknown, "", msg, fix)
    })?;
    if let Some((line, column)) = utf8_error_place(&bytes) {
        return Err(SpecError::new(
            &file,
            Origin::File { line: line as u64, column: column as u64 },
            "",
            "the spec is not UTF-8 text: an invalid byte here",
            "save it as UTF-8",
        ));
    }
    let text = String::from_utf8(bytes).unwrap_or_default();
    load_str(&file, &text, overrides)
}

/// Parses spec text; `file` is only used in messages.
pub fn load_str(file: &str, text: &str, overrides: &[String]) -> Result<LoadedSpec, SpecError> {
    let tree = parse_tree(file, text)?;
    let mut source = SpecSource { file: file.to_owned(), text: text.to_owned(), tree };
    for arg in overrides {
        apply_override(&mut source, arg)?;
    }
    let spec = deserialize(&source)?;
    Ok(LoadedSpec { spec, source, overrides: overrides.to_vec() })
}

fn parse_tree(file: &str, text: &str) -> Result<Node, SpecError> {
    let empty = |msg: &str| {
        SpecError::new(
            file,
            Origin::File { line: 1, column: 1 },
            "",
            msg,
            "start from one of the specs in experiments/, e.g. experiments/cpu/kv_scaling.yaml",
        )
    };
    if text.len() > MAX_SPEC_BYTES {
        return Err(empty(&format!(
            "the spec is {} bytes; a spec over {MAX_SPEC_BYTES} bytes is surely a mistake",
            text.len()
        )));
    }
    if text.trim().is_empty() {
        return Err(empty("the spec is empty"));
    }
    let tree: Node =
        serde_saphyr::from_str_with_options(text, parse_options()).map_err(|e| yaml_error(file, text, &e))?;
    if let Some(at) = tree.complex_key() {
        return Err(SpecError::new(
            file,
            at.clone(),
            "",
            "a mapping key must be a plain name, not a list or a mapping (`? [a, b]` or `{a: 1}: ...`)",
            "write the key as a plain name, e.g. `max-model-len:`",
        )
        .with_source(text));
    }
    match tree.kind {
        Kind::Map(_) => Ok(tree),
        Kind::Null => Err(empty("the spec has no content (only comments?)")),
        _ => Err(SpecError::new(
            file,
            tree.origin.clone(),
            "",
            "the spec must be a mapping of keys (name, engine, grid, load, ...)",
            "start from one of the specs in experiments/",
        )
        .with_source(text)),
    }
}

/// Specs nest five levels at most; a low depth limit keeps hostile input far from the stack's end.
const MAX_DEPTH: usize = 24;

fn parse_options() -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_depth = MAX_DEPTH;
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    // YAML 1.2 core booleans only: `y`, `no`, `on` stay strings (a grid of [x, y, z] must not hold `true`).
    options.strict_booleans = true;
    options
}

fn yaml_error(file: &str, text: &str, e: &serde_saphyr::Error) -> SpecError {
    let origin = match e.location() {
        Some(loc) if loc.line() > 0 => Origin::File { line: loc.line(), column: loc.column() },
        _ => Origin::Unknown,
    };
    let message = e.without_snippet().to_string();
    let message = message.lines().next().unwrap_or("invalid YAML").trim().to_owned();
    SpecError::new(
        file,
        origin,
        "",
        format!("invalid YAML: {message}"),
        "fix the YAML syntax at this place (indentation, a missing `:` or an unclosed quote or bracket)",
    )
    .with_source(text)
}

fn apply_override(source: &mut SpecSource, arg: &str) -> Result<(), SpecError> {
    let origin = Origin::Override(arg.to_owned());
    let usage = |msg: String| {
        SpecError::new(
            &source.file,
            origin.clone(),
            "",
            msg,
            "write it as `--set path.to.key=value`, e.g. `--set engine.model=/models/qwen`",
        )
    };
    let Some((path_text, value_text)) = arg.split_once('=') else {
        return Err(usage(format!("`{arg}` has no `=`")));
    };
    let path = parse_path(path_text.trim()).ok_or_else(|| usage(format!("`{path_text}` is not a key path")))?;
    // The same bound as for the file: a path of thousands of segments would nest values past the stack's end.
    if path.len() > MAX_DEPTH {
        return Err(usage(format!("`--set` paths have at most {MAX_DEPTH} segments; this one has {}", path.len())));
    }
    // The value is YAML, so `--set repeats=3` is a number and `--set grid.c=[1,2]` a list; anything that is
    // not valid YAML on its own is taken as a plain string.
    let mut value = match serde_saphyr::from_str_with_options::<Node>(value_text, parse_options()) {
        Ok(node) => node,
        Err(_) => Node::new(Origin::Unknown, Kind::Str(value_text.to_owned())),
    };
    value.set_origin_deep(&origin);
    source.tree.set_path(&path, value).map_err(|msg| usage(format!("cannot set `{path_text}`: {msg}")))
}

fn deserialize(source: &SpecSource) -> Result<Spec, SpecError> {
    let json = source.tree.to_json();
    serde_path_to_error::deserialize::<_, Spec>(json).map_err(|e| {
        let path: Vec<Seg> = e
            .path()
            .iter()
            .filter_map(|seg| match seg {
                serde_path_to_error::Segment::Map { key } => Some(Seg::Key(key.clone())),
                serde_path_to_error::Segment::Seq { index } => Some(Seg::Index(*index)),
                _ => None,
            })
            .collect();
        serde_error(source, path, &e.inner().to_string())
    })
}

/// Turns serde's message into one that says what to do.
fn serde_error(source: &SpecSource, mut path: Vec<Seg>, message: &str) -> SpecError {
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let (name, expected) = split_expected(rest);
        // serde reports the unknown key without it in the path; point at the key itself.
        if path.last() != Some(&Seg::Key(name.to_owned())) {
            path.push(Seg::Key(name.to_owned()));
        }
        let fix = match closest(name, expected.iter().copied()) {
            Some(best) => format!("did you mean `{best}`? (known keys here: {})", one_of(&expected)),
            None => format!("remove it, or use one of {}", one_of(&expected)),
        };
        return source.error_at_key(&path, format!("unknown key `{name}`"), fix);
    }
    if let Some(rest) = message.strip_prefix("unknown variant `") {
        let (name, expected) = split_expected(rest);
        let fix = match closest(name, expected.iter().copied()) {
            Some(best) => format!("did you mean `{best}`? (one of {})", one_of(&expected)),
            None => format!("use one of {}", one_of(&expected)),
        };
        return source.error_at(&path, format!("unknown value `{name}`"), fix);
    }
    if let Some(rest) = message.strip_prefix("missing field `") {
        let name = rest.split('`').next().unwrap_or(rest);
        let key = path_to_string(&path);
        let fix = if key.is_empty() {
            format!("add `{name}:` at the top level")
        } else {
            format!("add `{name}:` under `{key}`")
        };
        return source.error_at(&path, format!("missing required key `{name}`"), fix);
    }
    if let Some(rest) = message.strip_prefix("invalid type: ") {
        let (found, expected) = rest.split_once(", expected ").unwrap_or((rest, "another type"));
        let expected = match expected {
            "i8" | "i16" | "i32" | "i64" | "u8" | "u16" | "u32" | "u64" | "usize" => "an integer",
            "f32" | "f64" => "a number",
            other => other,
        };
        return source.error_at(
            &path,
            format!("wrong type: found {found}, expected {expected}"),
            format!("write {expected} here"),
        );
    }
    if let Some(rest) = message.strip_prefix("invalid value: ") {
        let (found, expected) = rest.split_once(", expected ").unwrap_or((rest, "another value"));
        return source.error_at(&path, format!("invalid value: {found}"), format!("write {expected} here"));
    }
    source.error_at(&path, message.to_owned(), "see `servelab schema` for what this key accepts")
}

/// Splits "name`, expected one of `a`, `b`" into ("name", ["a", "b"]).
fn split_expected(rest: &str) -> (&str, Vec<&str>) {
    let (name, tail) = rest.split_once('`').unwrap_or((rest, ""));
    let expected = tail.split('`').skip(1).step_by(2).collect();
    (name, expected)
}
