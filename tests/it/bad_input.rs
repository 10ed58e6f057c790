//! Every bad-input case: the message names file:line:column, the key, and the fix; the binary
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
        ("client_threads < 1", format!("{BASE}  client_threads: 0\n"), vec![]),
        ("client_threads above the closed loop's concurrency", format!("{BASE}  client_threads: 2\n"), vec![]),
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
        ("complex mapping key", format!("{BASE}? [a, b]\n: 1\n"), vec![]),
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

/// Every dataset problem, and a corrupt tokenizer.json, stops `validate` and `run` with exit 2 before any server
/// starts (a start would be exit 3: no `vllm` is on this path), naming the file and, where there is one, the line.
#[test]
fn dataset_problems_are_found_before_any_server_starts() {
    let dir = tempfile::tempdir().unwrap();
    let model = crate::common::word_model(dir.path());
    let long: String = (0..40).map(|i| format!("w{} ", i % 100)).collect();
    let mut over_cap = vec![b'a'; (16 << 20) + 8];
    over_cap.push(b'\n');
    let cases: Vec<(&str, Vec<u8>, &str, &str)> = vec![
        ("empty", Vec::new(), "jsonl", "is empty"),
        ("line over the cap", over_cap, "jsonl", "line 1 is longer than 16 MiB"),
        ("invalid UTF-8", b"{\"prompt\": \"w1 \xff\xfe\", \"output_tokens\": 3}\n".to_vec(), "jsonl", "line 1, column"),
        (
            "bad JSON",
            b"{\"prompt\": \"w1\", \"output_tokens\": 3}\n{\"prompt\": \n".to_vec(),
            "jsonl",
            "line 2, column",
        ),
        (
            "no usable entry",
            b"{\"prompt\": \"  \", \"output_tokens\": 3}\n{\"prompt\": \"w1\", \"output_tokens\": 0}\n".to_vec(),
            "jsonl",
            "no usable entry (2 left out)",
        ),
        (
            "negative output length",
            b"{\"prompt\": \"w1\", \"output_tokens\": -4}\n".to_vec(),
            "jsonl",
            "line 1, column",
        ),
        (
            "fractional output length",
            b"{\"prompt\": \"w1\", \"output_tokens\": 2.5}\n".to_vec(),
            "jsonl",
            "line 1, column",
        ),
        (
            "every prompt too long",
            format!("{{\"prompt\": \"{long}\", \"output_tokens\": 3}}\n").into_bytes(),
            "jsonl",
            "longer than max-model-len 32 allows",
        ),
        ("ShareGPT that is not an array", b"{\"conversations\": []}".to_vec(), "sharegpt", "a JSON array"),
        (
            "ShareGPT of odd records only",
            b"[1, null, {\"conversations\": 3}]".to_vec(),
            "sharegpt",
            "no usable entry (3 left out)",
        ),
    ];
    let spec = |data: &std::path::Path, format: &str| {
        format!(
            "name: d\nengine:\n  model: {}\n  port: 1\n  args:\n    max-model-len: 32\nload:\n  max_tokens: 4\n  prompt_tokens: 4\n  dataset: {{path: {}, format: {format}}}\n",
            model.display(),
            data.display()
        )
    };
    for (name, bytes, format, expect) in cases {
        let data = dir.path().join(format!("{}.data", name.replace(' ', "-")));
        std::fs::write(&data, &bytes).unwrap();
        let path = dir.path().join("spec.yaml");
        std::fs::write(&path, spec(&data, format)).unwrap();
        let runs = dir.path().join("runs");
        for cmd in ["validate", "run"] {
            let mut c = Command::new(env!("CARGO_BIN_EXE_servelab"));
            c.args([cmd, path.to_str().unwrap()]);
            if cmd == "run" {
                c.arg("--out").arg(&runs);
            }
            let out = c.output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{cmd}, case `{name}`: {stderr}");
            assert!(
                stderr.contains(&data.display().to_string()) && stderr.contains(expect),
                "{cmd}, case `{name}`: {stderr}"
            );
        }
    }
    assert!(!dir.path().join("runs").exists(), "no run folder is made");
    // Odd ShareGPT records beside good ones are left out and counted, not a reason to refuse the file.
    let data = dir.path().join("mixed.json");
    std::fs::write(
        &data,
        r#"[7, {"conversations": [{"from": "human", "value": "w1 w2"}, {"from": "gpt", "value": "w3"}]}]"#,
    )
    .unwrap();
    let path = dir.path().join("spec.yaml");
    std::fs::write(&path, spec(&data, "sharegpt")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_servelab")).args(["validate", path.to_str().unwrap()]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("1 usable entries, 1 left out while reading"), "{stderr}");
    // A corrupt tokenizer.json is found as early.
    std::fs::write(model.join("tokenizer.json"), b"{\"model\": ").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_servelab")).args(["validate", path.to_str().unwrap()]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("cannot load tokenizer") && stderr.contains("tokenizer.json"), "{stderr}");
}
