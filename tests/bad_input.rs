//! Every bad-input case of issue 2: the message names file:line:column, the key, and the fix; the binary
//! exits with the invalid-spec code. Messages are snapshot-tested so a change in wording is reviewed.

use servelab::{plan, spec};
use std::process::Command;

/// A minimal valid spec to break in one place.
const BASE: &str = "name: x\nengine:\n  model: m\n  args:\n    max-model-len: \"{{ max_model_len }}\"\ngrid:\n  max_model_len: [512, 1024]\n  concurrency: [1, 4]\nload:\n  concurrency: \"{{ concurrency }}\"\n  max_tokens: 64\n";

fn cases() -> Vec<(&'static str, String, Vec<String>)> {
    let with = |from: &str, to: &str| BASE.replacen(from, to, 1);
    vec![
        ("invalid YAML", with("engine:\n", "engine: {\n"), vec![]),
        ("invalid YAML: tab indentation", with("  model: m", "\tmodel: m"), vec![]),
        ("unknown key", with("  max_tokens: 64", "  max_tokns: 64"), vec![]),
        ("unknown top-level key", format!("{BASE}repeat: 3\n"), vec![]),
        ("wrong type", with("  max_tokens: 64", "  max_tokens: [64]"), vec![]),
        ("wrong type of repeats", format!("{BASE}repeats: three\n"), vec![]),
        ("empty grid axis", with("concurrency: [1, 4]", "concurrency: []"), vec![]),
        ("duplicate values in an axis", with("concurrency: [1, 4]", "concurrency: [1, 4, 4]"), vec![]),
        ("concurrency < 1 (grid)", with("concurrency: [1, 4]", "concurrency: [0, 4]"), vec![]),
        ("concurrency < 1 (literal)", with("\"{{ concurrency }}\"", "-2"), vec![]),
        ("repeats < 1", format!("{BASE}repeats: 0\n"), vec![]),
        ("requests < 1", format!("{BASE}  requests: 0\n"), vec![]),
        (
            "prompt_tokens + max_tokens > max_model_len",
            with("max_tokens: 64", "max_tokens: 500\n  prompt_tokens: 100"),
            vec![],
        ),
        ("template naming an undefined variable", with("{{ max_model_len }}", "{{ max_len }}"), vec![]),
        ("template that does not parse", with("{{ max_model_len }}", "{{ max_model_len"), vec![]),
        ("unknown engine kind", with("engine:\n", "engine:\n  kind: vlm\n"), vec![]),
        (
            "grid too large",
            with(
                "concurrency: [1, 4]",
                &format!("concurrency: [{}]", (1..=6000).map(|i| i.to_string()).collect::<Vec<_>>().join(", ")),
            ),
            vec![],
        ),
        ("missing required key", BASE.replacen("name: x\n", "", 1), vec![]),
        ("bad --set value", BASE.to_owned(), vec!["load.max_tokens=lots".to_owned()]),
        ("empty spec", "# only a comment\n".to_owned(), vec![]),
        ("grid axis used nowhere", with("  concurrency: [1, 4]\n", "  concurrency: [1, 4]\n  seed: [1, 2]\n"), vec![]),
        ("absurd concurrency", with("concurrency: [1, 4]", "concurrency: [1, 100000000]"), vec![]),
        ("absurd prompt_tokens", with("  max_tokens: 64", "  max_tokens: 64\n  prompt_tokens: 2000000000"), vec![]),
        (
            "https base_url",
            "name: x\nengine: {kind: external, base_url: 'https://example.invalid'}\ngrid:\n  concurrency: [1]\nload:\n  concurrency: \"{{ concurrency }}\"\n".to_owned(),
            vec![],
        ),
        ("NUL in an engine arg", with("  args:\n", "  args:\n    served-model-name: \"a\\0b\"\n"), vec![]),
        ("duration and requests", format!("{BASE}  duration: 5s\n  requests: 10\n"), vec![]),
        ("precision with repeats", format!("{BASE}repeats: 2\nprecision: {{rel_ci: 0.05}}\n"), vec![]),
        ("precision with repeat_policy best", format!("{BASE}repeat_policy: best\nprecision: {{rel_ci: 0.05}}\n"), vec![]),
        ("max_error_rate above 1", format!("{BASE}  max_error_rate: 2\n"), vec![]),
        (
            "length distribution without its shape",
            with("  max_tokens: 64", "  max_tokens: 64\n  prompt_tokens: {dist: lognormal, mean: 256}"),
            vec![],
        ),
        (
            "length distribution with another's field",
            with("  max_tokens: 64", "  max_tokens: {dist: uniform, min: 1, max: 64, sd: 3}"),
            vec![],
        ),
        ("unknown distribution", with("  max_tokens: 64", "  max_tokens: {dist: zipf, mean: 3}"), vec![]),
        ("missing dataset", format!("{BASE}  dataset: {{path: no-such-file.json, format: sharegpt}}\n"), vec![]),
        ("dataset of an unknown format", format!("{BASE}  dataset: {{path: x.json, format: csv}}\n"), vec![]),
        ("rate search with a closed loop", format!("{BASE}search: {{rate: {{low: 1, high: 8}}}}\n"), vec![]),
        ("a phase of 0 s", format!("{BASE}  duration: 0s\n"), vec![]),
        ("ready_timeout of 0 s", with("engine:\n", "engine:\n  ready_timeout: 0s\n"), vec![]),
        ("a host that is none", with("engine:\n", "engine:\n  host: \"not a host\"\n"), vec![]),
        (
            "a base_url that is not a URL",
            "name: x\nengine: {kind: external, base_url: 'not a url'}\ngrid:\n  concurrency: [1]\nload:\n  concurrency: \"{{ concurrency }}\"\n".to_owned(),
            vec![],
        ),
        (
            "a file:// base_url",
            "name: x\nengine: {kind: external, base_url: 'file:///etc/passwd'}\ngrid:\n  concurrency: [1]\nload:\n  concurrency: \"{{ concurrency }}\"\n".to_owned(),
            vec![],
        ),
        (
            "rate search with high below low",
            format!("{}search: {{rate: {{low: 8, high: 2}}}}\n", with("  concurrency: \"{{ concurrency }}\"\n", "")),
            vec![],
        ),
    ]
}

fn message(text: &str, overrides: &[String]) -> Option<String> {
    let loaded = match spec::load_str("bad.yaml", text, overrides) {
        Ok(l) => l,
        Err(e) => return Some(e.to_string()),
    };
    plan::build_located(&loaded).err().map(|e| e.to_string())
}

#[test]
fn the_base_spec_is_valid() {
    assert_eq!(message(BASE, &[]), None);
}

#[test]
fn every_bad_input_names_its_place_and_fix() {
    let mut all = String::new();
    for (name, text, overrides) in cases() {
        let msg = message(&text, &overrides).unwrap_or_else(|| panic!("case `{name}` was accepted"));
        let first = msg.lines().next().unwrap_or_default();
        if overrides.is_empty() {
            let place = first.split(": ").next().unwrap_or_default();
            let parts: Vec<&str> = place.split(':').collect();
            assert!(
                parts.len() == 3
                    && parts[0] == "bad.yaml"
                    && parts[1].parse::<u32>().is_ok()
                    && parts[2].parse::<u32>().is_ok(),
                "case `{name}` does not start with file:line:column: {msg}"
            );
        } else {
            assert!(first.contains("--set load.max_tokens=lots"), "{msg}");
        }
        assert!(msg.contains("\n  fix: "), "case `{name}` has no fix: {msg}");
        all.push_str(&format!("## {name}\n{msg}\n\n"));
    }
    insta::assert_snapshot!(all);
}

#[test]
fn the_binary_exits_with_the_invalid_spec_code() {
    let dir = tempfile::tempdir().unwrap();
    for (name, text, overrides) in cases() {
        let path = dir.path().join("bad.yaml");
        std::fs::write(&path, &text).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_servelab"));
        cmd.arg("validate").arg(&path);
        for o in &overrides {
            cmd.arg("--set").arg(o);
        }
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "case `{name}`: {stderr}");
        assert!(stderr.starts_with(&format!("error: {}", path.display())), "case `{name}`: {stderr}");
    }
}

#[test]
fn a_missing_file_is_an_invalid_spec_not_a_crash() {
    let out = Command::new(env!("CARGO_BIN_EXE_servelab")).args(["plan", "/nonexistent/spec.yaml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read the spec"));
}

#[test]
fn a_set_path_of_twenty_thousand_segments_is_an_error_not_a_stack_overflow() {
    let path = vec!["a"; 20_000].join(".");
    let msg = message(BASE, &[format!("{path}=1")]).expect("refused");
    assert!(msg.contains("at most 24 segments; this one has 20000"), "{msg}");
    assert!(msg.contains("\n  fix: "), "{msg}");
}
