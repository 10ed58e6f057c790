//! Multi-turn sessions end to end against the zero endpoint, which records every chat body it receives
//! (`--record-bodies`) and answers each with a first token that is the FNV-1a hash of the body: an answer no
//! client can make up. The checks here read only the endpoint's recorded bodies and servelab's records, and
//! recompute the answers with their own hash.

use crate::common;
use common::{chat_messages, free_ports, jsonl, word_model};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

const ZERO: &str = env!("CARGO_BIN_EXE_servelab-zero-endpoint");

/// The zero endpoint's answer to `body`, recomputed here.
fn answer_to(body: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    let hash = body.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    let n = v["max_tokens"].as_u64().unwrap();
    let mut a = format!(" x{hash:016x}");
    (1..n).for_each(|i| a.push_str(&format!(" w{i}")));
    a
}

struct Ran {
    dir: PathBuf,
    bodies: Vec<String>,
    stderr: String,
    ok: bool,
}

/// Runs `load` (indented YAML under `load:`) against the zero endpoint with `zero_args`.
fn run(load: &str, zero_args: &str) -> Ran {
    let tmp = tempfile::tempdir().unwrap().keep();
    let (spec_path, out, bodies) = (tmp.join("s.yaml"), tmp.join("out"), tmp.join("bodies"));
    let model = word_model(&tmp);
    let port = free_ports(1);
    let spec = format!(
        "name: sessions\nengine:\n  kind: command\n  model: {}\n  command: [\"{ZERO}\", \"--port\", \"{{{{ port }}}}\", \"--record-bodies\", \"{}\"{zero_args}]\n  port: {port}\n  ready_timeout: 3s\n  stop_timeout: 1s\nload:\n  endpoint: chat\n  warmup: 0\n  server_warmup: 0s\n{load}measure: {{memory: procfs}}\n",
        model.display(),
        bodies.display(),
    );
    std::fs::write(&spec_path, spec).unwrap();
    let r = Command::new(env!("CARGO_BIN_EXE_servelab"))
        .args(["run", spec_path.to_str().unwrap(), "--out", out.to_str().unwrap(), "--run-id", "a"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&r.stderr).into_owned();
    let bodies = std::fs::read_to_string(&bodies).unwrap_or_default().lines().map(str::to_owned).collect();
    Ran { dir: out.join("sessions/a"), bodies, stderr, ok: r.status.success() }
}

/// The measured records by session id, each session's in turn order.
fn by_session(dir: &Path) -> BTreeMap<u64, Vec<serde_json::Value>> {
    let mut out: BTreeMap<u64, Vec<serde_json::Value>> = BTreeMap::new();
    for r in jsonl(&dir.join("requests.jsonl")).into_iter().filter(|r| r["warmup"] == false) {
        out.entry(r["session"]["id"].as_u64().expect("a session's request names its session")).or_default().push(r);
    }
    for recs in out.values_mut() {
        recs.sort_by_key(|r| r["session"]["turn"].as_u64().unwrap());
    }
    out
}

/// Every body received: user and assistant messages alternate from a user message; each turn after the first
/// is the previous turn's body's messages, then the endpoint's real answer to that body, verbatim, then a new
/// user message. Returns how many bodies were later turns.
fn assert_histories(bodies: &[String]) -> usize {
    let mut by_history: HashMap<Vec<(String, String)>, &String> = HashMap::new();
    for b in bodies {
        by_history.insert(chat_messages(b), b);
    }
    let mut later = 0;
    for b in bodies {
        let m = chat_messages(b);
        assert!(m.len() % 2 == 1, "a turn ends with its user message: {b}");
        for (i, (role, _)) in m.iter().enumerate() {
            assert_eq!(role, if i % 2 == 0 { "user" } else { "assistant" }, "{b}");
        }
        if m.len() == 1 {
            continue;
        }
        later += 1;
        let before =
            by_history.get(&m[..m.len() - 2]).unwrap_or_else(|| panic!("no earlier turn sent {:?}", &m[..m.len() - 2]));
        assert_eq!(m[m.len() - 2].1, answer_to(before), "the previous answer, verbatim: {b}");
    }
    later
}

/// Closed loop: two sessions in flight, five sessions of one to four turns. Every session's turns are
/// numbered 1.. in order, each sent after its previous turn ended plus the think time, every later turn
/// carries the real earlier answers, and the report has its sessions section.
#[test]
fn sessions_resend_the_real_answers_turn_after_turn() {
    let ran = run(
        "  concurrency: 2\n  max_tokens: 4\n  sessions: { count: 5, turns: {dist: uniform, min: 1, max: 4}, user_tokens: {dist: uniform, min: 3, max: 9}, think_time: 20ms }\n",
        "",
    );
    assert!(ran.ok, "{}", ran.stderr);
    let sessions = by_session(&ran.dir);
    assert_eq!(sessions.keys().copied().collect::<Vec<_>>(), (0..5).collect::<Vec<_>>());
    let mut turns_seen = std::collections::BTreeSet::new();
    for recs in sessions.values() {
        turns_seen.insert(recs.len());
        assert!((1..=4).contains(&recs.len()));
        for (i, r) in recs.iter().enumerate() {
            assert!(r["error"].is_null(), "{r}");
            assert_eq!(r["session"]["turn"].as_u64(), Some(i as u64 + 1), "{r}");
            assert_eq!(r["completion_tokens"].as_u64(), Some(4), "{r}");
            if i > 0 {
                let (prev_end, start) = (recs[i - 1]["end_s"].as_f64().unwrap(), r["start_s"].as_f64().unwrap());
                assert!(start >= prev_end + 0.020, "think time kept: {prev_end} → {start}");
                assert!((r["scheduled_s"].as_f64().unwrap() - (prev_end + 0.020)).abs() < 1e-3, "{r}");
                let (before, now) = (recs[i - 1]["sent_tokens"].as_u64().unwrap(), r["sent_tokens"].as_u64().unwrap());
                assert!(now > before + 4, "the history grows by an answer and a message: {before} → {now}");
            }
        }
    }
    let records: usize = sessions.values().map(Vec::len).sum();
    assert_eq!(ran.bodies.len(), records, "each turn reached the endpoint once");
    assert_eq!(assert_histories(&ran.bodies), records - 5);
    assert!(turns_seen.len() > 1, "the drawn turn counts vary: {turns_seen:?}");
    let md = std::fs::read_to_string(ran.dir.join("concurrency_sweep.md")).unwrap();
    assert!(md.contains("## Sessions") && md.contains("By turn number"), "{md}");
    let check =
        Command::new(env!("CARGO_BIN_EXE_servelab")).args(["report", "--check"]).arg(&ran.dir).output().unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stdout));
    // The per-turn table: one row per turn number seen, counting every record of that turn.
    let stats: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ran.dir.join("sessions.json")).unwrap()).unwrap();
    let rows = stats[0]["by_turn"].as_array().unwrap();
    for row in rows {
        let t = row["turn"].as_u64().unwrap();
        let n = sessions.values().filter(|recs| recs.len() as u64 >= t).count();
        assert_eq!(row["requests"].as_u64(), Some(n as u64), "{row}");
        assert_eq!(row["ttft"]["n"].as_u64(), Some(n as u64), "{row}");
    }
    assert_eq!(rows.len(), *turns_seen.last().unwrap());
}

/// Open loop: sessions arrive at a rate; `max_concurrency` caps sessions (not requests) in flight.
#[test]
fn sessions_arrive_by_rate_and_the_cap_holds_sessions_in_flight() {
    let ran = run(
        "  rate: 40\n  max_concurrency: 2\n  max_tokens: 3\n  sessions: { count: 8, turns: 3, user_tokens: 5, think_time: 10ms }\n",
        ", \"--itl-us\", \"2000\"",
    );
    assert!(ran.ok, "{}", ran.stderr);
    let sessions = by_session(&ran.dir);
    assert_eq!(sessions.len(), 8);
    let mut spans = Vec::new();
    for recs in sessions.values() {
        assert_eq!(recs.len(), 3);
        assert!(recs.iter().all(|r| r["error"].is_null()));
        spans.push((recs[0]["start_s"].as_f64().unwrap(), recs[2]["end_s"].as_f64().unwrap()));
    }
    for &(s, _) in &spans {
        let in_flight = spans.iter().filter(|&&(a, b)| a <= s && s < b).count();
        assert!(in_flight <= 2, "at most 2 sessions in flight at {s}: {spans:?}");
    }
    assert_eq!(assert_histories(&ran.bodies), 16);
    let md = std::fs::read_to_string(ran.dir.join("rate_sweep.md")).unwrap();
    assert!(md.contains("## Sessions"), "{md}");
}

/// A turn that fails ends its session: nothing of that session is sent after it.
#[test]
fn a_failed_turn_ends_its_session() {
    let ran = run(
        "  concurrency: 3\n  max_tokens: {dist: uniform, min: 1, max: 40}\n  request_timeout: 150ms\n  max_error_rate: 1.0\n  sessions: { count: 9, turns: 4, user_tokens: 4 }\n",
        ", \"--itl-us\", \"10000\"",
    );
    assert!(ran.ok, "{}", ran.stderr);
    let sessions = by_session(&ran.dir);
    let mut ended_early = 0;
    for recs in sessions.values() {
        let failed: Vec<usize> = (0..recs.len()).filter(|&i| !recs[i]["error"].is_null()).collect();
        assert!(failed.iter().all(|&i| i + 1 == recs.len()), "only the last turn failed: {recs:?}");
        assert_eq!(recs.len() == 4, failed.is_empty() || failed == [3], "{recs:?}");
        ended_early += usize::from(recs.len() < 4);
    }
    assert!(ended_early > 0, "some turn timed out (max_tokens up to 40 at 10 ms a token, 150 ms allowed)");
}

/// What `validate` says of a sessions spec (nothing starts): `engine` (indented YAML, the model is the word
/// model) and `load` (indented YAML under `load:`).
fn validate(engine: &str, load: &str) -> (Option<i32>, String) {
    let tmp = tempfile::tempdir().unwrap();
    let spec = tmp.path().join("s.yaml");
    let model = word_model(tmp.path());
    let text =
        format!("name: s\nengine:\n  model: {}\n{engine}load:\n{load}measure: {{memory: procfs}}\n", model.display());
    std::fs::write(&spec, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_servelab")).args(["validate", spec.to_str().unwrap()]).output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Sessions resend a chat history: on the completions endpoint they are refused, with the fix.
#[test]
fn sessions_without_the_chat_endpoint_are_refused_with_the_fix() {
    let (code, err) = validate(&format!("  kind: command\n  command: [\"{ZERO}\"]\n"), "  sessions: { count: 2 }\n");
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("`load.endpoint` is not `chat`") && err.contains("endpoint: chat"), "{err}");
}

/// What `validate` says of a sessions spec on a vLLM engine of max-model-len 512 (nothing starts).
fn validate_vllm(load: &str) -> (Option<i32>, String) {
    validate("  args: {max-model-len: 512}\n", &format!("  endpoint: chat\n{load}"))
}

/// Keys that size or shape the phase otherwise, and a session too long for the context, are refused with
/// the fix before anything starts; a session that fits is valid.
#[test]
fn sessions_that_cannot_run_as_asked_are_refused_with_the_fix() {
    let cases = [
        ("  duration: 10s\n  sessions: { count: 4 }\n", "`duration` and `sessions.count` both size"),
        ("  requests: 8\n  sessions: { count: 4 }\n", "`requests` does not go with `sessions`"),
        ("  shared_prefix_tokens: 16\n  sessions: { count: 4 }\n", "`shared_prefix_tokens` does not go with"),
        ("  sessions: { count: 4, turns: 1001 }\n", "more than servelab sends (1000)"),
        (
            "  max_tokens: 64\n  sessions: { count: 4, turns: 4, user_tokens: 100 }\n",
            "holds 656 tokens by its last turn, more than max-model-len 512",
        ),
    ];
    for (load, want) in cases {
        let (code, err) = validate_vllm(load);
        assert_eq!(code, Some(2), "{load}: {err}");
        assert!(err.contains(want) && err.contains("fix"), "{load}: {err}");
    }
    let (code, err) = validate_vllm("  max_tokens: 16\n  sessions: { count: 4, turns: 3, user_tokens: 100 }\n");
    assert_eq!(code, Some(0), "{err}");
}
