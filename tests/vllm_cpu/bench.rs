//! `servelab bench` against `vllm bench serve` from the CPU venv: its flag table (docs/bench.md) against
//! vLLM's own `--help`, and both tools' results on one zero endpoint.

use crate::common::*;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

/// The flags of a `--help` text: `--name` at the start of an option line (two spaces in), and the `--no-x`
/// of a `--x, --no-x` pair.
fn help_flags(help: &str) -> BTreeSet<String> {
    let mut flags = BTreeSet::new();
    for line in help.lines() {
        let Some(rest) = line.strip_prefix("  --") else { continue };
        for part in format!("--{rest}").split(", ") {
            let name: String =
                part.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_').collect();
            if name.starts_with("--") && name.len() > 2 {
                flags.insert(name);
            }
            if !part.starts_with("--") {
                break;
            }
        }
    }
    flags
}

/// docs/bench.md's table: flag → status.
fn table() -> Vec<(String, String)> {
    let doc = std::fs::read_to_string(Path::new(ROOT).join("docs/bench.md")).unwrap();
    doc.lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let flag = cells.get(1)?.strip_prefix("`--")?.strip_suffix('`')?;
            Some((format!("--{flag}"), cells.get(2)?.to_string()))
        })
        .collect()
}

pub fn bench_flag_table_covers_vllm_bench_serve_help() {
    let out = Command::new(vllm_bin().join("vllm")).args(["bench", "serve", "--help=all"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let vllm = help_flags(&String::from_utf8_lossy(&out.stdout));
    assert!(vllm.len() > 80 && vllm.contains("--request-rate") && vllm.contains("--no-self-timed"), "{vllm:?}");
    let rows = table();
    let listed: BTreeSet<String> = rows.iter().map(|(f, _)| f.clone()).collect();
    let missing: Vec<_> = vllm.difference(&listed).collect();
    assert!(missing.is_empty(), "vllm bench serve flags missing from docs/bench.md's table: {missing:?}");
    let extra: Vec<_> = listed.difference(&vllm).collect();
    assert!(extra.is_empty(), "docs/bench.md lists flags vllm bench serve does not have: {extra:?}");
    let ours = Command::new(env!("CARGO_BIN_EXE_servelab")).args(["bench", "--help"]).output().unwrap();
    // clap's help: every `--name` it prints, aliases (`[aliases: --url]`) included.
    let ours: BTreeSet<String> = String::from_utf8_lossy(&ours.stdout)
        .split(|c: char| c.is_whitespace() || c == ',' || c == '[' || c == ']')
        .filter(|w| w.starts_with("--"))
        .map(|w| w.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '-').collect())
        .collect();
    for (flag, status) in &rows {
        assert!(["same", "different", "not supported"].contains(&status.as_str()), "{flag}: status `{status}`");
        if status != "not supported" {
            assert!(ours.contains(flag), "{flag} is marked {status} but `servelab bench --help` lacks it");
        }
    }
}

/// Starts the zero endpoint (the first token after 50 ms, then one every 10 ms: a request's time is the
/// endpoint's pacing, not either client's overhead or the endpoint's timer slop; a TTFT of a millisecond
/// would be the Python client's own overhead, several ms on 2 busy cores, against servelab's).
fn zero_endpoint(port: u16) -> std::process::Child {
    let child = Command::new(env!("CARGO_BIN_EXE_servelab-zero-endpoint"))
        .args(["--port", &port.to_string(), "--itl-us", "10000", "--ttft-us", "50000"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child
}

fn result(dir: &Path) -> serde_json::Map<String, serde_json::Value> {
    let files: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(files.len(), 1, "one result in {}: {files:?}", dir.display());
    serde_json::from_str(&std::fs::read_to_string(&files[0]).unwrap()).unwrap()
}

pub fn bench_and_vllm_bench_serve_agree_on_the_zero_endpoint() {
    let out = tempfile::tempdir().unwrap();
    let port = 18441;
    let mut zero = zero_endpoint(port);
    let url = format!("http://127.0.0.1:{port}");
    let shared = [
        "--backend",
        "openai",
        "--base-url",
        &url,
        "--model",
        "zero",
        "--dataset-name",
        "random",
        "--random-input-len",
        "32",
        "--random-output-len",
        "16",
        "--num-prompts",
        "60",
        "--max-concurrency",
        "4",
        "--ignore-eos",
        "--percentile-metrics",
        "ttft,tpot,itl,e2el",
        "--metric-percentiles",
        "50,99",
        "--goodput",
        "e2el:1000",
        "--save-result",
    ];
    let (vdir, sdir) = (out.path().join("vllm"), out.path().join("servelab"));
    let vllm = Command::new(vllm_bin().join("vllm"))
        .args(["bench", "serve", "--tokenizer", &format!("{ROOT}/models/tiny-llama")])
        .args(shared)
        .args(["--result-dir", vdir.to_str().unwrap()])
        .envs([("HF_HUB_OFFLINE", "1"), ("VLLM_NO_USAGE_STATS", "1"), ("DO_NOT_TRACK", "1")])
        .output()
        .unwrap();
    let ours = Command::new(env!("CARGO_BIN_EXE_servelab"))
        .args(["bench"])
        .args(shared)
        .args(["--result-dir", sdir.to_str().unwrap(), "--out", out.path().to_str().unwrap()])
        .output()
        .unwrap();
    zero.kill().ok();
    zero.wait().ok();
    assert!(vllm.status.success(), "{}", String::from_utf8_lossy(&vllm.stderr));
    assert_eq!(ours.status.code(), Some(0), "{}", String::from_utf8_lossy(&ours.stderr));
    let (v, s) = (result(&vdir), result(&sdir));
    let (vk, sk): (BTreeSet<_>, BTreeSet<_>) = (v.keys().collect(), s.keys().collect());
    assert_eq!(vk, sk, "the result keys differ");
    for k in ["completed", "failed", "total_output_tokens", "num_prompts", "max_concurrency", "request_rate"] {
        assert_eq!(v[k], s[k], "{k}");
    }
    assert_eq!(s["completed"], 60);
    assert_eq!(s["total_output_tokens"], 60 * 16);
    let num = |m: &serde_json::Map<String, serde_json::Value>, k: &str| m[k].as_f64().unwrap();
    for k in
        ["request_throughput", "output_throughput", "mean_e2el_ms", "mean_tpot_ms", "mean_itl_ms", "request_goodput"]
    {
        let (a, b) = (num(&v, k), num(&s, k));
        eprintln!("{k}: vllm {a:.3}, servelab {b:.3}");
        assert!((b / a - 1.0).abs() <= 0.25, "{k}: vllm {a}, servelab {b}: more than 25% apart");
    }
    let (a, b) = (num(&v, "mean_ttft_ms"), num(&s, "mean_ttft_ms"));
    eprintln!("mean_ttft_ms: vllm {a:.3}, servelab {b:.3}");
    assert!((b / a - 1.0).abs() <= 0.25 || (a - b).abs() <= 5.0, "mean TTFT: vllm {a} ms, servelab {b} ms");
}
