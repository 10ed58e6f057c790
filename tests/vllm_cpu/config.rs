//! `recommended.yaml` as `servelab tune` writes it, handed to real vLLM through `engine.config_file`: vLLM
//! takes it with `--config` and resolves every flag to the value the file says.

use crate::common::*;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

/// A tune through the executor's in-process fake, with vLLM's flag names: its fake server caps requests in
/// flight at `--max-num-seqs` (else at `--capacity`, the defaults' 2 here), so with 8 in flight the search's
/// `max-num-seqs: 8` serves about 4× the defaults on every start and the tune recommends it. The
/// configuration's other flags are the kinds a config file carries: numbers, a string, a bare flag, a `no-`
/// flag.
const TUNE: &str = r#"name: rec
engine:
  model: models/tiny-llama
  command: [vllm, --capacity, "2", --noise-pct, "2", --seed, "3", serve, "{{ model }}"]
  args:
    max-model-len: 512
    dtype: bfloat16
    enforce-eager: true
    kv-cache-memory-bytes: 268435456
    enable-prefix-caching: false
tune:
  space:
    max-num-seqs: [1, 8]
  objective: throughput
  p95_budget: 30s
  budget: {starts: 6}
  confirm_repeats: 1
  confirm_starts: 2
repeats: 1
load:
  concurrency: 8
  requests: 16
  exact_requests: true
  max_tokens: 8
  prompt_tokens: 8
  warmup: 0
  server_warmup: 0s
"#;

/// Runs the tune above on the fake seam; returns the run folder, which holds `recommended.yaml`.
fn tune_on_the_fake(out: &Path) -> PathBuf {
    let spec = out.join("tune.yaml");
    std::fs::write(&spec, TUNE).unwrap();
    let loaded = servelab::spec::load_file(&spec, &[]).unwrap_or_else(|e| panic!("{e}"));
    let plan = servelab::plan::build_located(&loaded).unwrap_or_else(|e| panic!("{e}"));
    let opts = servelab::run::RunOptions::serial(out.join("tune"), Some("r".to_owned()));
    let seam = servelab::run::Seam { fake: true, fake_delay: Duration::from_millis(1), interrupt_after: None };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let outcome = rt.block_on(servelab::run::execute_on(&loaded, &plan, &opts, &AtomicBool::new(false), &seam));
    outcome.unwrap_or_else(|e| panic!("{e}"));
    out.join("tune/rec/r")
}

/// vLLM's startup line `non-default args: {...}` (its parsed arguments that differ from its defaults), as
/// (name, Python repr) pairs; values here are scalars, so a `, '` or the closing brace ends each.
fn non_default_args(log: &str) -> Vec<(String, String)> {
    let line = log.lines().find(|l| l.contains("non-default args: {")).expect("vLLM logged its non-default args");
    let dict = &line[line.find("non-default args: {").unwrap() + "non-default args: {".len()..];
    let dict = dict.trim_end().strip_suffix('}').expect("the dict ends the line");
    let re = regex::Regex::new(r"'([a-z0-9_]+)': ('[^']*'|[^,]+)").unwrap();
    re.captures_iter(dict).map(|c| (c[1].to_owned(), c[2].trim().to_owned())).collect()
}

/// What vLLM's non-default args must say for one line of the config file: the name with `_`, the value as
/// Python prints it; `no-x: true` is `x` resolved to False.
fn expected(name: &str, value: &serde_json::Value) -> (String, String) {
    let python = |v: &serde_json::Value| match v {
        serde_json::Value::Bool(true) => "True".to_owned(),
        serde_json::Value::Bool(false) => "False".to_owned(),
        serde_json::Value::String(s) => format!("'{s}'"),
        other => other.to_string(),
    };
    match (name.strip_prefix("no-"), value) {
        (Some(base), serde_json::Value::Bool(true)) => (base.replace('-', "_"), "False".to_owned()),
        _ => (name.replace('-', "_"), python(value)),
    }
}

pub fn a_recommended_yaml_from_tune_configures_vllm_as_written() {
    let _lock = ONE_SERVER_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let bin = vllm_bin();
    let out = tempfile::tempdir().unwrap();
    let tuned = tune_on_the_fake(out.path());
    let t: serde_json::Value = serde_json::from_slice(&std::fs::read(tuned.join("tune.json")).unwrap()).unwrap();
    assert_eq!(t["decision"]["kind"], "recommended", "{}", t["decision"]);
    let recommended = tuned.join("recommended.yaml");
    let text = std::fs::read_to_string(&recommended).unwrap();
    eprintln!("recommended.yaml as servelab wrote it:\n{text}");
    let flags: indexmap::IndexMap<String, serde_json::Value> = serde_saphyr::from_str(&text).unwrap();
    assert_eq!(flags.get("max-num-seqs"), Some(&serde_json::json!(8)), "the tuned flag is in the file: {text}");
    assert!(!flags.contains_key("port") && !flags.contains_key("host"), "{text}");
    assert!(flags.len() >= 6, "every flag of the pick's command line: {text}");

    let port = 18571;
    let spec = format!(
        "name: cfg\nengine:\n  model: models/tiny-llama\n  port: {port}\n  config_file: {}\n  env: {{VLLM_HOST_IP: 127.0.0.1, HF_HUB_OFFLINE: '1', VLLM_NO_USAGE_STATS: '1', DO_NOT_TRACK: '1'}}\n  ready_timeout: 300s\nmeasure: {{memory: procfs}}\n",
        recommended.display()
    );
    let run = run_spec(&bin, &spec, out.path());
    assert_eq!(run.code, 0, "{}", run.stderr);
    let start = startups(&run.dir).pop().unwrap();
    let argv: Vec<&str> = start["argv"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    let at = argv.iter().position(|a| *a == "--config").expect("--config on vLLM's command line");
    assert_eq!(argv[at + 1], recommended.to_str().unwrap());
    let server = std::fs::read_dir(run.dir.join("servers")).unwrap().next().unwrap().unwrap().path();
    let resolved = non_default_args(&std::fs::read_to_string(server.join("server.log")).unwrap());
    eprintln!("vLLM's non-default args: {resolved:?}");
    for (name, value) in &flags {
        let (key, want) = expected(name, value);
        let got = resolved.iter().find(|(k, _)| *k == key).map(|(_, v)| v.as_str());
        assert_eq!(got, Some(want.as_str()), "`{name}: {value}` of recommended.yaml, as vLLM resolved `{key}`");
    }
    assert_nothing_left(&run, port);
}
