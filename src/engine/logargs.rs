//! vLLM's engine arguments from its startup log: "non-default args: {...}" (what the command line set), the
//! engine's "with config: k=v, ..." line, and the lines that name a value vLLM resolved itself
//! ("Chunked prefill is enabled with max_num_batched_tokens=N", and at DEBUG "Defaulting max_num_seqs to N
//! for ... usage context"). Only scalars are kept; containers and objects are skipped, not guessed at.

use super::logparse::strip_prefix;
use crate::record::server::{EngineArgs, LogValue};
use regex::Regex;
use std::collections::BTreeMap;
use std::sync::LazyLock;

static CHUNKED: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"Chunked prefill is enabled with max_num_batched_tokens=(\d+)").expect("static regex")
});
static DEFAULTING: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^Defaulting (\w+) to (\S+) for .*usage context").expect("static regex"));

const NON_DEFAULT: &str = "non-default args: ";
const CONFIG: &str = " with config: ";

/// The engine arguments the log states; None where it states none (an older log, an engine not vLLM).
pub fn parse(log: &str) -> Option<EngineArgs> {
    let mut a = EngineArgs::default();
    for raw in log.lines() {
        let line = strip_prefix(raw).trim();
        if let Some(at) = line.find(NON_DEFAULT) {
            let dict = &line[at + NON_DEFAULT.len()..];
            for (k, v) in items(dict.trim().trim_start_matches('{').trim_end_matches('}'), ':') {
                let key = k.trim().trim_matches(['\'', '"']).to_owned();
                a.non_default.entry(key).or_insert(v);
            }
        } else if line.starts_with("Initializing a V1 LLM engine")
            && let Some(at) = line.find(CONFIG)
        {
            for (k, v) in items(&line[at + CONFIG.len()..], '=') {
                a.resolved.entry(k.trim().to_owned()).or_insert(v);
            }
        } else if let Some(c) = CHUNKED.captures(line) {
            if let Some(v) = LogValue::of_python(&c[1]) {
                a.resolved.insert("max_num_batched_tokens".to_owned(), v);
            }
        } else if let Some(c) = DEFAULTING.captures(line)
            && let Some(v) = LogValue::of_python(&c[2])
        {
            a.resolved.insert(c[1].to_owned(), v);
        }
    }
    (a != EngineArgs::default()).then_some(a)
}

/// The scalar `key<sep>value` items of a Python-printed list at its top level (commas inside brackets,
/// parentheses and quotes do not split).
fn items(text: &str, sep: char) -> BTreeMap<String, LogValue> {
    let mut out = BTreeMap::new();
    for item in split_top(text) {
        let Some((k, v)) = split_once_top(item, sep) else { continue };
        if let Some(v) = LogValue::of_python(v) {
            out.entry(k.trim().to_owned()).or_insert(v);
        }
    }
    out
}

/// `text` split at its top-level commas.
fn split_top(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut quote, mut start) = (0i32, None::<char>, 0);
    for (i, c) in text.char_indices() {
        match (quote, c) {
            (Some(q), _) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, '[' | '{' | '(' | '<') => depth += 1,
            (None, ']' | '}' | ')' | '>') => depth -= 1,
            (None, ',') if depth == 0 => {
                out.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&text[start..]);
    out
}

/// `item` split at the first `sep` outside quotes.
fn split_once_top(item: &str, sep: char) -> Option<(&str, &str)> {
    let mut quote = None::<char>;
    for (i, c) in item.char_indices() {
        match (quote, c) {
            (Some(q), _) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, _) if c == sep => return Some((&item[..i], &item[i + c.len_utf8()..])),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::server::ArgSource;

    #[test]
    fn the_cpu_log_gives_its_command_line_and_its_engine_config() {
        let a = parse(include_str!("../../tests/fixtures/logs/cpu-0.32-kv-bytes-256mib.log")).unwrap();
        assert_eq!(a.non_default.get("max_model_len"), Some(&LogValue::Int(2048)));
        assert_eq!(a.non_default.get("enforce_eager"), Some(&LogValue::Bool(true)));
        assert_eq!(a.non_default.get("model"), Some(&LogValue::Text("/work/main/models/tiny-llama".into())));
        assert_eq!(a.value("enable-prefix-caching"), Some((&LogValue::Bool(true), ArgSource::Resolved)));
        assert_eq!(a.value("--max-model-len"), Some((&LogValue::Int(2048), ArgSource::NonDefault)));
        assert_eq!(a.resolved.get("tensor_parallel_size"), Some(&LogValue::Int(1)));
        assert_eq!(a.resolved.get("dtype"), Some(&LogValue::Text("torch.bfloat16".into())));
        assert!(!a.resolved.contains_key("compilation_config"), "containers are skipped");
        // vLLM 0.32 on CPU says nothing of these at INFO: not read, not guessed.
        assert_eq!(a.value("max-num-seqs"), None);
        assert_eq!(a.value("max-num-batched-tokens"), None);
    }

    #[test]
    fn the_gpu_log_gives_the_batched_tokens_it_resolved() {
        let a = parse(include_str!("../../tests/fixtures/logs/gpu-0.26-h200-default-util-512.log")).unwrap();
        assert_eq!(a.value("max-num-batched-tokens"), Some((&LogValue::Int(8192), ArgSource::Resolved)));
        assert_eq!(a.value("max-model-len"), Some((&LogValue::Int(512), ArgSource::NonDefault)));
    }

    #[test]
    fn debug_lines_name_the_defaults_of_the_usage_context() {
        let log = "(APIServer pid=1) DEBUG 12-07 01:30:32 [arg_utils.py:3182] Defaulting max_num_seqs to 256 for OPENAI_API_SERVER usage context.\n\
                   INFO 12-07 [api_utils.py:286] non-default args: {'model_tag': 'm', 'max_num_seqs': 64, 'x': {'a': 1, 'b': [1, 2]}, 'y': 'a, b'}";
        let a = parse(log).unwrap();
        assert_eq!(a.resolved.get("max_num_seqs"), Some(&LogValue::Int(256)));
        assert_eq!(a.value("max-num-seqs"), Some((&LogValue::Int(64), ArgSource::NonDefault)), "the command line's");
        assert_eq!(a.non_default.get("y"), Some(&LogValue::Text("a, b".into())));
        assert!(!a.non_default.contains_key("x") && !a.non_default.contains_key("b"));
        assert_eq!(parse("Model loading took 0.93 GiB and 2.0 seconds"), None, "a log without arguments");
    }

    /// The head of a real vLLM 0.32 CPU start at `VLLM_LOGGING_LEVEL=DEBUG` (no `--max-num-seqs`,
    /// `--max-num-batched-tokens`): it names the values it defaulted to for the API server.
    #[test]
    fn a_debug_cpu_log_names_its_batch_defaults() {
        let a = parse(include_str!("../../tests/fixtures/logs/cpu-0.32-debug-defaults-head.log")).unwrap();
        assert_eq!(a.value("max-num-seqs"), Some((&LogValue::Int(128), ArgSource::Resolved)));
        assert_eq!(a.value("max-num-batched-tokens"), Some((&LogValue::Int(2048), ArgSource::Resolved)));
        assert_eq!(a.value("max-model-len"), Some((&LogValue::Int(512), ArgSource::NonDefault)));
    }

    #[test]
    fn values_compare_as_a_spec_writes_them() {
        assert!(LogValue::Int(256).same_as("256") && !LogValue::Int(256).same_as("257"));
        assert!(LogValue::Bool(true).same_as("true") && LogValue::Float(0.9).same_as("0.90"));
        assert!(LogValue::Text("auto".into()).same_as("auto"));
        let json = serde_json::to_string(&[LogValue::Int(3), LogValue::Bool(false), LogValue::None]).unwrap();
        assert_eq!(json, "[3,false,null]");
        let back: Vec<LogValue> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, [LogValue::Int(3), LogValue::Bool(false), LogValue::None]);
    }
}
