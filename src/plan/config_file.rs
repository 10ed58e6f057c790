//! `engine.config_file`: a vLLM config file (`vllm serve MODEL --config PATH`, YAML of flag values), read and
//! checked when the plan is built, so a missing or malformed file is an error at validate, before any server
//! starts. The server's id hashes the file's content (`ConfigFile::content`), not its path.

use super::check::at_point;
use super::{PlanError, key};
use crate::record::plan::ConfigFile;
use crate::spec::{Scalar, Seg};
use indexmap::IndexMap;
use std::io::Read;

/// A config file of vLLM flags is a few lines; anything larger is not one.
const MAX_BYTES: u64 = 1 << 20;

/// Keys servelab passes itself: the model is `engine.model`, the address `engine.host`/`engine.port` (where
/// servelab connects), and vLLM reads one config file only.
const RESERVED: [(&str, &str); 4] = [
    ("model", "`engine.model`"),
    ("host", "`engine.host`"),
    ("port", "`engine.port`"),
    ("config", "`engine.config_file` alone"),
];

/// A config file as read: where it is, its content's hash, and its flags in file order.
#[derive(Clone, Debug)]
pub struct Loaded {
    pub file: ConfigFile,
    pub flags: IndexMap<String, serde_json::Value>,
}

fn at() -> Vec<Seg> {
    key(&["engine", "config_file"])
}

/// A flag's name as vLLM's parser compares names: `_` and `-` alike, `no-x` the negation of `x`.
pub fn flag_key(name: &str) -> String {
    let name = name.trim_start_matches('-').replace('_', "-");
    name.strip_prefix("no-").map_or(name.clone(), str::to_owned)
}

/// Reads the file at `path` (relative to the directory servelab runs in) and checks what vLLM would refuse or
/// misread: not `.yaml`/`.yml` (vLLM refuses other names), unreadable, not YAML, not a mapping of flag names,
/// a `null` value (vLLM would pass the word `None`), or a key servelab passes itself.
pub fn read(path: &str, vars: &IndexMap<String, Scalar>) -> Result<Loaded, PlanError> {
    let here = at_point(vars);
    let fail = |message: String, fix: &str| PlanError::at(at(), message, fix);
    if !(path.ends_with(".yaml") || path.ends_with(".yml")) {
        return Err(fail(
            format!(
                "config file `{path}`{here} does not end in .yaml or .yml, and vLLM's --config refuses any other name"
            ),
            "rename the file to end in .yaml",
        ));
    }
    let bytes = read_bounded(path).map_err(|e| {
        fail(
            format!("cannot read config file `{path}`{here}: {e}"),
            "give the path of a vLLM config file (YAML of flag values), relative to the directory servelab runs in",
        )
    })?;
    let content = crate::record::short_hash(&bytes);
    let text = String::from_utf8(bytes)
        .map_err(|e| fail(format!("config file `{path}` is not UTF-8 text: {e}"), "save it as UTF-8 YAML"))?;
    let doc: serde_json::Value = serde_saphyr::from_str(&text).map_err(|e| {
        let place =
            e.location().filter(|l| l.line() > 0).map(|l| format!(" at line {}, column {}", l.line(), l.column()));
        let what = e.without_snippet().to_string();
        let what = what.lines().next().unwrap_or("invalid YAML").trim().to_owned();
        fail(
            format!("config file `{path}` is not YAML{}: {what}", place.unwrap_or_default()),
            "fix the file at that line (vLLM reads `flag-name: value` lines)",
        )
    })?;
    let serde_json::Value::Object(map) = doc else {
        return Err(fail(
            format!("config file `{path}` holds no mapping of flag names to values (vLLM would fail reading it)"),
            "write one `flag-name: value` per line, e.g. `max-num-seqs: 64`; `{}` for none",
        ));
    };
    for (name, value) in &map {
        if let Some((_, instead)) = RESERVED.iter().find(|(k, _)| flag_key(name) == *k) {
            return Err(fail(
                format!("config file `{path}` sets `{name}`, which servelab passes to vLLM itself"),
                &format!("remove `{name}` from the file; set it with {instead}"),
            ));
        }
        if value.is_null() {
            return Err(fail(
                format!("config file `{path}` gives `{name}` no value (vLLM would pass it the word `None`)"),
                &format!("remove the line `{name}:` (a flag left out keeps vLLM's default), or give it a value"),
            ));
        }
    }
    Ok(Loaded { file: ConfigFile { path: path.to_owned(), content }, flags: map.into_iter().collect() })
}

fn read_bounded(path: &str) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)?.take(MAX_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_BYTES {
        return Err(std::io::Error::other(format!("it is over {MAX_BYTES} bytes, too large for a file of flags")));
    }
    Ok(bytes)
}

/// Decision: a flag set both in the file and in `engine.args` (or `--config` in `engine.command`) is refused.
/// vLLM would let the command line win, so the file would say one value and the server run another.
pub fn conflicts(loaded: &Loaded, args: &[&str], command: &[String]) -> Result<(), PlanError> {
    let path = &loaded.file.path;
    if command.iter().any(|a| a == "--config" || a.starts_with("--config=")) {
        return Err(PlanError::at(
            key(&["engine", "command"]),
            "`command` passes `--config` and `engine.config_file` passes another; vLLM reads one config file",
            "keep one: `engine.config_file` (its content is part of the server's id) or `--config` in `command`",
        ));
    }
    for name in args {
        if let Some(file_name) = loaded.flags.keys().find(|k| flag_key(k) == flag_key(name)) {
            return Err(PlanError::at(
                key(&["engine", "args", name]),
                format!(
                    "`{name}` is set here and as `{file_name}` in config file `{path}`; vLLM would use this one and ignore the file's"
                ),
                format!("set it in one place: remove `{name}` from `engine.args`, or `{file_name}` from `{path}`"),
            ));
        }
    }
    Ok(())
}

/// The file's value of a flag, as text (a list's first item: `served-model-name` takes several names).
pub fn value(loaded: &Loaded, names: &[&str]) -> Option<String> {
    let (_, v) = loaded.flags.iter().find(|(k, _)| names.iter().any(|n| flag_key(n) == flag_key(k)))?;
    let v = match v {
        serde_json::Value::Array(items) => items.first()?,
        other => other,
    };
    Some(v.as_str().map_or_else(|| v.to_string(), str::to_owned))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(name: &str, text: &str) -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        (dir, path.to_string_lossy().into_owned())
    }

    fn message(name: &str, text: &str) -> String {
        let (_dir, path) = write(name, text);
        let e = read(&path, &IndexMap::new()).unwrap_err();
        assert_eq!(e.path, at());
        format!("{} / {}", e.message, e.fix)
    }

    #[test]
    fn a_file_vllm_would_refuse_or_misread_is_refused_with_the_fix() {
        assert!(message("c.json", "max-num-seqs: 4\n").contains("rename the file to end in .yaml"));
        assert!(message("c.yaml", "max-num-seqs: [4\n").contains("is not YAML"));
        assert!(message("c.yaml", "# only a comment\n").contains("no mapping of flag names"));
        assert!(message("c.yaml", "- 4\n").contains("no mapping of flag names"));
        assert!(message("c.yaml", "max-num-seqs:\n").contains("remove the line `max-num-seqs:`"));
        assert!(message("c.yml", "port: 9000\n").contains("set it with `engine.port`"));
        assert!(message("c.yml", "model: m\n").contains("set it with `engine.model`"));
        let e = read("no/such/dir/c.yaml", &IndexMap::new()).unwrap_err();
        assert!(e.message.contains("cannot read config file `no/such/dir/c.yaml`"), "{}", e.message);
    }

    #[test]
    fn a_flag_in_both_places_is_refused_whatever_its_spelling() {
        let (_dir, path) = write("c.yaml", "max_num_seqs: 4\nenable-prefix-caching: false\n");
        let loaded = read(&path, &IndexMap::new()).unwrap();
        assert_eq!(loaded.file.content, crate::record::short_hash(b"max_num_seqs: 4\nenable-prefix-caching: false\n"));
        for name in ["max-num-seqs", "no-enable-prefix-caching"] {
            let e = conflicts(&loaded, &[name], &[]).unwrap_err();
            assert_eq!(e.path, key(&["engine", "args", name]));
        }
        assert!(conflicts(&loaded, &["max-model-len"], &[]).is_ok());
        assert!(conflicts(&loaded, &[], &["vllm".into(), "--config".into(), "x.yaml".into()]).is_err());
        assert_eq!(value(&loaded, &["max-num-seqs"]).as_deref(), Some("4"));
    }
}
