//! Trace replay end to end against the zero endpoint (`kind: command`, milliseconds per start): a window of
//! the Mooncake conversation trace (tests/fixtures/mooncake-window.jsonl, its first 90 s) is sent once per
//! request, in trace order, on the trace's schedule, and the prompts the endpoint received (it records the
//! bodies, `--record-bodies`) share exactly the prefixes the trace's `hash_ids` say. The expected prefixes are
//! computed here from the fixture alone, not with servelab's code.

use crate::common;
use common::{free_ports, jsonl};
use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

const ZERO: &str = env!("CARGO_BIN_EXE_servelab-zero-endpoint");
const SPEEDUP: f64 = 30.0;

fn fixture() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mooncake-window.jsonl").display().to_string()
}

struct Entry {
    t_ms: f64,
    input: u32,
    output: u32,
    ids: Vec<u64>,
}

fn entries() -> Vec<Entry> {
    std::fs::read_to_string(fixture())
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            Entry {
                t_ms: v["timestamp"].as_f64().unwrap(),
                input: v["input_length"].as_u64().unwrap() as u32,
                output: v["output_length"].as_u64().unwrap() as u32,
                ids: v["hash_ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect(),
            }
        })
        .collect()
}

/// What the ids say two prompts share: equal leading 512-token blocks, the last of them min(length).
fn expected_shared(a: &Entry, b: &Entry) -> u32 {
    let mut shared = 0;
    for (i, (x, y)) in a.ids.iter().zip(&b.ids).enumerate() {
        if x != y {
            break;
        }
        let left = |e: &Entry| e.input.saturating_sub(512 * i as u32).min(512);
        shared += left(a).min(left(b));
        if left(a) != left(b) {
            break;
        }
    }
    shared
}

fn lcp(a: &[u32], b: &[u32]) -> u32 {
    a.iter().zip(b).take_while(|(x, y)| x == y).count() as u32
}

/// The prompts received (tokens, max_tokens): lengths as the trace's, prefixes exactly the ids'. A body is
/// matched to its entry by (prompt length, max_tokens); an entry whose pair is not unique is left out of the
/// pairwise check.
fn check_prefixes(got: &[(Vec<u32>, u32)], want: &[Entry]) {
    assert_eq!(got.len(), want.len(), "each request reached the endpoint once");
    let mut by_key: HashMap<(u32, u32), Vec<usize>> = HashMap::new();
    for (i, e) in want.iter().enumerate() {
        by_key.entry((e.input, e.output)).or_default().push(i);
    }
    let mut entry_of = vec![None; got.len()];
    for (b, (ids, max)) in got.iter().enumerate() {
        let same = &by_key[&(ids.len() as u32, *max)];
        if same.len() == 1 {
            entry_of[b] = Some(same[0]);
        }
    }
    let matched: Vec<(usize, usize)> = entry_of.iter().enumerate().filter_map(|(b, e)| e.map(|e| (b, e))).collect();
    assert!(matched.len() >= want.len() - 2, "{} of {} matched", matched.len(), want.len());
    let mut sharing = 0;
    for (k, &(b1, e1)) in matched.iter().enumerate() {
        for &(b2, e2) in &matched[k + 1..] {
            let (have, should) = (lcp(&got[b1].0, &got[b2].0), expected_shared(&want[e1], &want[e2]));
            assert_eq!(have, should, "entries {e1} and {e2}");
            sharing += u32::from(should > 512);
        }
    }
    assert!(sharing >= 10, "the window has conversations sharing more than the first block: {sharing}");
}

fn spec(port: u16, bodies: &Path) -> String {
    format!(
        "name: trace\nengine:\n  kind: command\n  command: [\"{ZERO}\", \"--port\", \"{{{{ port }}}}\", \"--record-bodies\", \"{}\"]\n  port: {port}\n  ready_timeout: 3s\n  stop_timeout: 1s\nload:\n  trace: {{ path: \"{}\", speedup: {SPEEDUP} }}\n  vocab_size: 32000\n  warmup: 0\n  server_warmup: 0s\nmeasure: {{memory: procfs}}\n",
        bodies.display(),
        fixture()
    )
}

/// The token-id prompts the zero endpoint received, with their max_tokens.
fn sent_ids(bodies: &Path) -> Vec<(Vec<u32>, u32)> {
    std::fs::read_to_string(bodies)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let ids = v["prompt"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
            (ids, v["max_tokens"].as_u64().unwrap() as u32)
        })
        .collect()
}

/// The measured records of a replay, by index: each index once, without errors, with the trace's output
/// length (request `i` is the window's `i`th entry), and sent in index order.
fn by_index(dir: &Path, want: &[Entry]) -> Vec<serde_json::Value> {
    let mut recs: Vec<serde_json::Value> = jsonl(&dir.join("requests.jsonl"));
    recs.retain(|r| r["warmup"] == false);
    assert_eq!(recs.len(), want.len(), "every request of the window");
    let at = |r: &serde_json::Value, k: &str| r[k].as_f64().unwrap();
    recs.sort_by(|a, b| {
        at(a, "start_s").total_cmp(&at(b, "start_s")).then(a["index"].as_u64().cmp(&b["index"].as_u64()))
    });
    for (i, r) in recs.iter().enumerate() {
        assert_eq!(r["index"].as_u64(), Some(i as u64), "sent once each, in trace order: {r}");
        assert!(r["error"].is_null(), "{r}");
        assert_eq!(r["max_tokens"].as_u64(), Some(u64::from(want[i].output)), "{r}");
    }
    recs
}

/// Arrivals on a rate's schedule: the first at 0, in index order, the mean gap 1/rate within `tolerance`, and
/// not the trace's own gaps.
fn on_the_rate(recs: &[serde_json::Value], want: &[Entry], rate: f64, tolerance: f64) {
    let at: Vec<f64> = recs.iter().map(|r| r["scheduled_s"].as_f64().unwrap()).collect();
    assert_eq!(at[0], 0.0);
    assert!(at.windows(2).all(|w| w[0] <= w[1]), "the schedule runs in trace order");
    let mean_gap = at[at.len() - 1] / (at.len() - 1) as f64;
    assert!((mean_gap * rate - 1.0).abs() < tolerance, "mean gap {mean_gap} s at {rate}/s");
    let trace_span = (want[want.len() - 1].t_ms - want[0].t_ms) / 1e3;
    assert!(at[at.len() - 1] < trace_span / 10.0, "the timestamps ({trace_span} s) are not used");
}

#[test]
fn a_trace_window_is_sent_once_in_order_with_exactly_the_ids_prefixes() {
    let tmp = tempfile::tempdir().unwrap();
    let (spec_path, out, bodies) = (tmp.path().join("s.yaml"), tmp.path().join("out"), tmp.path().join("bodies"));
    std::fs::write(&spec_path, spec(free_ports(1), &bodies)).unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_servelab"))
        .args(["run", spec_path.to_str().unwrap(), "--out", out.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    assert!(stderr.contains("trace ") && stderr.contains("260 requests"), "the window is announced: {stderr}");
    let dir = std::fs::read_dir(out.join("trace")).unwrap().next().unwrap().unwrap().path();
    let want = entries();

    // Every request of the window once, on the trace's schedule, sent in that order.
    let mut recs: Vec<serde_json::Value> = jsonl(&dir.join("requests.jsonl"));
    recs.retain(|r| r["warmup"] == false);
    assert_eq!(recs.len(), want.len());
    let mut seen = vec![0; want.len()];
    for r in &recs {
        let i = r["index"].as_u64().unwrap() as usize;
        seen[i] += 1;
        assert!(r["error"].is_null(), "{r}");
        let at = (want[i].t_ms - want[0].t_ms) / 1e3 / SPEEDUP;
        assert!((r["scheduled_s"].as_f64().unwrap() - at).abs() < 1e-6, "request {i}: {r}");
        assert_eq!(r["max_tokens"].as_u64(), Some(u64::from(want[i].output)));
        assert_eq!(r["completion_tokens"].as_u64(), Some(u64::from(want[i].output)));
    }
    assert!(seen.iter().all(|n| *n == 1), "each index once: {seen:?}");
    recs.sort_by(|a, b| a["start_s"].as_f64().unwrap().total_cmp(&b["start_s"].as_f64().unwrap()));
    let order: Vec<f64> = recs.iter().map(|r| r["scheduled_s"].as_f64().unwrap()).collect();
    assert!(order.windows(2).all(|w| w[0] <= w[1]), "sent in trace order");

    check_prefixes(&sent_ids(&bodies), &want);

    // The report: the replay's row, its bound, and the server's counters said to be missing (the zero
    // endpoint does not count prefix hits).
    let md = std::fs::read_to_string(dir.join("rate_sweep.md")).unwrap();
    assert!(md.contains("## Trace replay") && md.contains("not counted") && md.contains("(16, vLLM's default"), "{md}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("trace_replay.json")).unwrap()).unwrap();
    let replay = &json[0];
    assert_eq!(replay["requests"], 260, "{json}");
    assert_eq!(replay["trace"]["requests"], 260);
    assert!(replay["bound"].as_f64().unwrap() > 0.05, "{replay}");
}

/// On the chat endpoint a trace is sent as text: one word of the model's tokenizer per token (here words
/// w0..w4999 of a word-level tokenizer, one token each), so the messages the endpoint received share exactly
/// the words the ids say; the bound recorded with the point is counted on those tokens (the model folder's
/// template adds none before the message, so it equals the ids' bound).
#[test]
fn a_trace_on_the_chat_endpoint_sends_messages_sharing_exactly_the_ids_words() {
    use tokenizers::Tokenizer;
    use tokenizers::models::wordlevel::WordLevel;
    use tokenizers::pre_tokenizers::whitespace::WhitespaceSplit;
    let tmp = tempfile::tempdir().unwrap();
    let (spec_path, out, bodies) = (tmp.path().join("s.yaml"), tmp.path().join("out"), tmp.path().join("bodies"));
    let model = tmp.path().join("model");
    std::fs::create_dir_all(&model).unwrap();
    let vocab = (0..5000).map(|i| (format!("w{i}"), i)).collect();
    let mut tok = Tokenizer::new(WordLevel::builder().vocab(vocab).unk_token("w0".into()).build().unwrap());
    tok.with_pre_tokenizer(Some(WhitespaceSplit));
    tok.save(model.join("tokenizer.json"), false).unwrap();
    let template = "{% for message in messages %}{{ message['content'] }}\n{% endfor %}";
    std::fs::write(model.join("tokenizer_config.json"), serde_json::json!({ "chat_template": template }).to_string())
        .unwrap();
    let text = spec(free_ports(1), &bodies)
        .replace("  kind: command\n", &format!("  kind: command\n  model: {}\n", model.display()))
        .replace("  vocab_size: 32000\n", "  endpoint: chat\n");
    std::fs::write(&spec_path, text).unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_servelab"))
        .args(["run", spec_path.to_str().unwrap(), "--out", out.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    let dir = std::fs::read_dir(out.join("trace")).unwrap().next().unwrap().unwrap().path();
    let want = entries();
    let mut recs: Vec<serde_json::Value> = jsonl(&dir.join("requests.jsonl"));
    recs.retain(|r| r["warmup"] == false);
    let mut seen = vec![0; want.len()];
    for r in &recs {
        assert!(r["error"].is_null(), "{r}");
        seen[r["index"].as_u64().unwrap() as usize] += 1;
    }
    assert!(seen.iter().all(|n| *n == 1), "each index once: {seen:?}");
    let got: Vec<(Vec<u32>, u32)> = std::fs::read_to_string(&bodies)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let messages = v["messages"].as_array().unwrap();
            assert_eq!(messages.len(), 1, "{l}");
            let words = messages[0]["content"].as_str().unwrap().split_whitespace();
            let ids = words.map(|w| w.strip_prefix('w').unwrap().parse().unwrap()).collect();
            (ids, v["max_tokens"].as_u64().unwrap() as u32)
        })
        .collect();
    check_prefixes(&got, &want);
    let points: Vec<serde_json::Value> = jsonl(&dir.join("points.jsonl"));
    let sent = &points[0]["trace_sent"];
    let by_ids = &points[0]["client"]["trace"]["bounds"];
    assert_eq!(sent.as_array().map(Vec::len), Some(5), "{}", points[0]);
    assert_eq!(sent, by_ids, "no template tokens before the message: the ids' bound");
    assert!(sent[0]["hit_tokens"].as_u64().unwrap() > 0);
    assert_eq!(points[0]["trace_sent_template"], true, "the model folder's template was rendered");
    // The report says what each bound is counted on: the tokens sent, the uncapped one the ids.
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("trace_replay.json")).unwrap()).unwrap();
    assert_eq!(json[0]["bound_on"], serde_json::json!({ "kind": "sent_tokens", "template": true }), "{json}");
    assert_eq!(json[0]["bound_ids"], json[0]["bound"], "equal here: the template adds nothing before the message");
    let md = std::fs::read_to_string(dir.join("rate_sweep.md")).unwrap();
    assert!(md.contains("; tokens sent) |"), "{md}");
    assert!(md.contains("On the chat endpoint the bound is counted on the tokens sent"), "{md}");
    assert!(
        md.contains("rendered with the chat template") && md.contains("tokenized with the model's tokenizer"),
        "{md}"
    );
    assert!(md.contains("The bound without caps stays counted on the trace's `hash_ids`"), "{md}");
}

#[test]
fn a_hostile_trace_stops_validate_with_its_line_and_the_fix() {
    let tmp = tempfile::tempdir().unwrap();
    let trace = tmp.path().join("t.jsonl");
    let good = std::fs::read_to_string(fixture()).unwrap().lines().take(3).collect::<Vec<_>>().join("\n");
    for (text, says) in [
        (format!("{good}\n{{\"timestamp\": 1}}\n"), "line 4: missing field"),
        (format!("{good}\ngarbage\n"), "line 4: expected value"),
        (String::new(), "holds no request"),
    ] {
        std::fs::write(&trace, text).unwrap();
        let spec = tmp.path().join("s.yaml");
        std::fs::write(
            &spec,
            format!(
                "name: t\nengine:\n  kind: command\n  command: [\"{ZERO}\"]\nload:\n  trace: {{ path: \"{}\" }}\n",
                trace.display()
            ),
        )
        .unwrap();
        let out =
            Command::new(env!("CARGO_BIN_EXE_servelab")).args(["validate", spec.to_str().unwrap()]).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains(says) && err.contains("load.trace.path"), "{says}: {err}");
    }
}

/// Under `max_concurrency`, an arrival that finds every slot busy waits, and the record says how long: the
/// report splits lateness into that wait and the client's own. Slow streams (2 ms a token, 50 tokens) under a
/// cap of 1 make most arrivals wait.
#[test]
fn max_concurrency_waits_are_told_apart_from_client_lateness() {
    let tmp = tempfile::tempdir().unwrap();
    let (spec_path, out) = (tmp.path().join("s.yaml"), tmp.path().join("out"));
    let port = free_ports(1);
    let text = format!(
        "name: capped\nengine:\n  kind: command\n  command: [\"{ZERO}\", \"--port\", \"{{{{ port }}}}\", \"--itl-us\", \"2000\"]\n  port: {port}\n  ready_timeout: 3s\n  stop_timeout: 1s\nload:\n  trace: {{ path: \"{}\", speedup: 10, duration: 10, max_input_tokens: 600, max_output_tokens: 50 }}\n  max_concurrency: 1\n  warmup: 0\n  server_warmup: 0s\nmeasure: {{memory: procfs}}\n",
        fixture()
    );
    std::fs::write(&spec_path, text).unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_servelab"))
        .args(["run", spec_path.to_str().unwrap(), "--out", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let dir = std::fs::read_dir(out.join("capped")).unwrap().next().unwrap().unwrap().path();
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("trace_replay.json")).unwrap()).unwrap();
    let r = &json[0];
    let n = r["requests"].as_u64().unwrap();
    assert_eq!((r["cap"].as_u64(), r["errors"].as_u64(), r["not_sent"].as_u64()), (Some(1), Some(0), Some(0)), "{r}");
    assert!(r["waited"].as_u64().unwrap() * 2 > n, "most arrivals waited for the one slot: {r}");
    let (wait, client) = (r["cap_wait"]["p99"].as_f64().unwrap(), r["client_late"]["p99"].as_f64().unwrap());
    assert!(wait > 0.05 && client < wait / 5.0, "the wait is the cap's, not the client's: {r}");
    let recs = jsonl(&dir.join("requests.jsonl"));
    assert!(recs.iter().filter(|r| r["warmup"] == false).all(|r| r["slot_s"].is_f64()), "each record keeps slot_s");
}

/// Trace keys are grid axes like any load key: one spec replays a window at several speedups and caps.
#[test]
fn trace_keys_are_grid_axes() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = tmp.path().join("s.yaml");
    std::fs::write(
        &spec,
        format!(
            "name: t\nengine:\n  kind: command\n  command: [\"{ZERO}\"]\ngrid:\n  speedup: [1, 2]\n  cap: [512, 1024]\nload:\n  trace: {{ path: \"{}\", speedup: \"{{{{ speedup }}}}\", max_input_tokens: \"{{{{ cap }}}}\", duration: 30 }}\n",
            fixture()
        ),
    )
    .unwrap();
    let out =
        Command::new(env!("CARGO_BIN_EXE_servelab")).args(["plan", spec.to_str().unwrap(), "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let traces: Vec<&serde_json::Value> =
        plan["groups"][0]["points"].as_array().unwrap().iter().map(|p| &p["client"]["trace"]).collect();
    assert_eq!(traces.len(), 4);
    let speedups: Vec<f64> = traces.iter().map(|t| t["speedup"].as_f64().unwrap()).collect();
    assert_eq!(speedups, [1.0, 1.0, 2.0, 2.0]);
    assert_eq!(traces[0]["max_input_tokens"], 512);
    assert_eq!(traces[1]["max_input_tokens"], 1024);
    assert!(traces.iter().all(|t| t["requests"] == 87), "the window of 30 s holds 87 requests");
}

/// Under `rate`, the window's requests go in trace order at that rate instead of at their timestamps: each
/// once, with its lengths and its `hash_ids` prefixes, and the report says which schedule lateness is measured
/// against. `arrival: constant` makes the schedule exact (request `i` at i/100 s); the bench test below draws
/// gamma arrivals.
#[test]
fn a_trace_under_a_rate_is_sent_in_trace_order_on_the_rates_schedule() {
    let tmp = tempfile::tempdir().unwrap();
    let (spec_path, out, bodies) = (tmp.path().join("s.yaml"), tmp.path().join("out"), tmp.path().join("bodies"));
    let text = spec(free_ports(1), &bodies)
        .replace(&format!(", speedup: {SPEEDUP} }}"), " }\n  rate: 100\n  arrival: constant");
    assert!(text.contains("rate: 100"), "{text}");
    std::fs::write(&spec_path, text).unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_servelab"))
        .args(["run", spec_path.to_str().unwrap(), "--out", out.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    assert!(stderr.contains("sent in trace order at 100 requests/s (constant arrivals"), "{stderr}");
    let dir = std::fs::read_dir(out.join("trace")).unwrap().next().unwrap().unwrap().path();
    let want = entries();
    let recs = by_index(&dir, &want);
    on_the_rate(&recs, &want, 100.0, 1e-9);
    let at = |r: &serde_json::Value, k: &str| r[k].as_f64().unwrap();
    assert!(recs.iter().enumerate().all(|(i, r)| (at(r, "scheduled_s") - i as f64 / 100.0).abs() < 1e-9));
    check_prefixes(&sent_ids(&bodies), &want);

    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("trace_replay.json")).unwrap()).unwrap();
    let r = &json[0];
    assert_eq!(
        r["pace"],
        serde_json::json!({ "kind": "rate", "rate": 100.0, "arrival": "constant", "burstiness": null })
    );
    assert_eq!(r["trace"]["schedule"], "rate");
    // Lateness is against the rate's schedule (the records' scheduled_s, checked above), not the timestamps.
    let late = recs.iter().map(|r| at(r, "start_s") - at(r, "scheduled_s")).fold(0.0, f64::max);
    assert!((r["late"]["max"].as_f64().unwrap() - late).abs() < 1e-9, "{r}");
    let md = std::fs::read_to_string(dir.join("rate_sweep.md")).unwrap();
    assert!(md.contains("| 100.00/s, constant, in trace order |"), "{md}");
}

/// `servelab bench --dataset-name mooncake --request-rate R --burstiness B`: the same, through bench's flags,
/// with gamma arrivals (burstiness 2: more regular than Poisson, the mean of 259 gaps within 4.4% per sd).
#[test]
fn bench_sends_a_mooncake_trace_at_its_request_rate() {
    let tmp = tempfile::tempdir().unwrap();
    let (port, bodies) = (free_ports(1), tmp.path().join("bodies"));
    let mut zero = Command::new(ZERO)
        .args(["--port", &port.to_string(), "--record-bodies", bodies.to_str().unwrap()])
        .spawn()
        .unwrap();
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = tmp.path().join("out");
    let run = Command::new(env!("CARGO_BIN_EXE_servelab"))
        .args(["bench", "--base-url", &format!("http://127.0.0.1:{port}"), "--dataset-name", "mooncake"])
        .args(["--dataset-path", &fixture(), "--request-rate", "200", "--burstiness", "2", "--seed", "5"])
        .args(["--vocab-size", "32000", "--out", out.to_str().unwrap(), "--run-id", "paced"])
        .args(["--save-result", "--result-dir", tmp.path().to_str().unwrap(), "--result-filename", "r.json"])
        .output()
        .unwrap();
    zero.kill().ok();
    zero.wait().ok();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let want = entries();
    let recs = by_index(&out.join("bench/paced"), &want);
    on_the_rate(&recs, &want, 200.0, 0.2);
    check_prefixes(&sent_ids(&bodies), &want);
    let result: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tmp.path().join("r.json")).unwrap()).unwrap();
    assert_eq!((result["request_rate"].as_f64(), result["num_prompts"].as_u64()), (Some(200.0), Some(260)));
    assert_eq!(result["burstiness"].as_f64(), Some(2.0));
}

/// `rate` paces a trace instead of its timestamps, so `speedup` beside it, or `arrival`/`burstiness` without
/// it, would be dropped silently: each is an error naming the key.
#[test]
fn a_trace_refuses_speedup_beside_rate_and_arrival_shapes_without_it() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = tmp.path().join("s.yaml");
    for (load, key, says) in [
        ("  trace: { path: \"P\", speedup: 2 }\n  rate: 5\n", "load.trace.speedup", "`rate` replaces them"),
        ("  trace: { path: \"P\" }\n  arrival: gamma\n  burstiness: 0.5\n", "load.arrival", "add `rate: N`"),
        ("  trace: { path: \"P\" }\n  rate: 5\n  concurrency: 2\n", "load.concurrency", "remove it"),
    ] {
        let load = load.replace('P', &fixture());
        std::fs::write(&spec, format!("name: t\nengine:\n  kind: command\n  command: [\"{ZERO}\"]\nload:\n{load}"))
            .unwrap();
        let out =
            Command::new(env!("CARGO_BIN_EXE_servelab")).args(["validate", spec.to_str().unwrap()]).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{load}: {err}");
        assert!(err.contains(key) && err.contains(says), "{load}: {err}");
    }
    std::fs::write(
        &spec,
        format!(
            "name: t\nengine:\n  kind: command\n  command: [\"{ZERO}\"]\nload:\n  trace: {{ path: \"{}\" }}\n  rate: 5\n  arrival: gamma\n  burstiness: 0.5\n  max_concurrency: 4\n",
            fixture()
        ),
    )
    .unwrap();
    let out =
        Command::new(env!("CARGO_BIN_EXE_servelab")).args(["plan", spec.to_str().unwrap(), "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let c = &plan["groups"][0]["points"][0]["client"];
    assert_eq!(c["trace"]["schedule"], "rate");
    assert_eq!(
        c["open_loop"],
        serde_json::json!({ "rate": 5.0, "arrival": "gamma", "burstiness": 0.5, "min_requests": 0 })
    );
    assert_eq!((c["requests"].as_u64(), c["concurrency"].as_u64()), (Some(260), Some(4)), "every request, once");
}
