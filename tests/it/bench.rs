//! `servelab bench`'s flag table and its result JSON, without vLLM: the table's accepted flags against
//! `servelab bench --help`, and vLLM's result keys derived from a recorded run.

use servelab::report::vllm_result::{Goodput, Setup, vllm_result};
use std::path::Path;
use std::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

#[test]
fn every_flag_the_bench_table_marks_same_or_different_is_accepted() {
    let doc = std::fs::read_to_string(Path::new(ROOT).join("docs/bench.md")).unwrap();
    let help = Command::new(env!("CARGO_BIN_EXE_servelab")).args(["bench", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    let accepted = |flag: &str| {
        help.split(|c: char| c.is_whitespace() || c == ',' || c == '[' || c == ']')
            .any(|w| w.trim_end_matches(|c: char| !c.is_ascii_alphanumeric()) == flag)
    };
    let mut rows = 0;
    for line in doc.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let Some(flag) = cells.get(1).and_then(|c| c.strip_prefix('`')).and_then(|c| c.strip_suffix('`')) else {
            continue;
        };
        rows += 1;
        match cells[2] {
            "same" | "different" => assert!(accepted(flag), "{flag} is marked {} but not accepted", cells[2]),
            "not supported" => assert!(!accepted(flag), "{flag} is accepted but marked not supported"),
            other => panic!("{flag}: status `{other}`"),
        }
    }
    assert!(rows > 90, "the table has {rows} rows");
}

#[test]
fn the_result_json_of_a_recorded_run_has_vllms_keys_and_its_counts() {
    let dir = Path::new(ROOT).join("tests/fixtures/runs/batching-cpu");
    let (_, _, rec) = servelab::report::open_run(&dir).unwrap();
    let point = &rec.points[0];
    let requests: Vec<_> =
        rec.requests.iter().filter(|r| r.point == point.point && r.attempt == point.attempt).collect();
    let setup = Setup {
        backend: "openai".into(),
        label: None,
        metadata: Vec::new(),
        model_id: point.model.clone(),
        num_prompts: point.client.requests,
        request_rate: None,
        burstiness: 1.0,
        max_concurrency: Some(point.client.concurrency),
        percentile_metrics: ["ttft", "tpot", "itl", "e2el"].map(String::from).to_vec(),
        percentiles: vec![99.0],
        goodput: vec![Goodput::parse("e2el:100000").unwrap()],
    };
    let v = vllm_result(&point.started_at, &requests, &setup);
    let measured: Vec<_> = requests.iter().filter(|r| !r.warmup && !r.tail).collect();
    let ok: Vec<_> = measured.iter().filter(|r| r.error.is_none()).collect();
    assert_eq!(v["completed"], ok.len());
    assert_eq!(v["failed"], measured.len() - ok.len());
    let output: u64 = ok.iter().map(|r| u64::from(r.completion_tokens.unwrap())).sum();
    assert_eq!(v["total_output_tokens"], output);
    assert_eq!(v["request_goodput"], v["request_throughput"], "every request is within 100 s");
    let keys = [
        "date",
        "endpoint_type",
        "backend",
        "label",
        "model_id",
        "tokenizer_id",
        "num_prompts",
        "request_rate",
        "burstiness",
        "max_concurrency",
        "duration",
        "completed",
        "failed",
        "total_input_tokens",
        "total_output_tokens",
        "request_throughput",
        "request_goodput",
        "output_throughput",
        "total_token_throughput",
        "latencies",
        "queue_times",
        "max_output_tokens_per_s",
        "max_concurrent_requests",
        "rtfx",
    ];
    let mut want: Vec<String> = keys.map(String::from).to_vec();
    for m in ["ttft", "tpot", "itl", "e2el"] {
        want.extend(["mean", "median", "std", "p99"].map(|s| format!("{s}_{m}_ms")));
    }
    let got: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    assert_eq!(got, want);
    let e2el = v["mean_e2el_ms"].as_f64().unwrap();
    assert!(e2el > v["mean_ttft_ms"].as_f64().unwrap() && e2el > 0.0);
}
