//! The executor's control flow against a fake engine: `servelab-zero-endpoint` as a `kind: command` server
//! (it starts in milliseconds and fails on request), so resume, fail-fast, a dying server, a server that
//! never gets ready, Ctrl-C, an escalated stop and leftovers are tested in seconds on any machine, inside
//! the default test run. Figures are never claimed from it: the real engine's tests are tests/vllm_cpu.rs
//! and tests/faults.rs.

use crate::common;
use common::{assert_nothing_left_in, jsonl};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const ZERO: &str = env!("CARGO_BIN_EXE_servelab-zero-endpoint");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A load spec against the fake engine; `faults` are extra endpoint flags, `extra` more top-level YAML.
fn spec(name: &str, port: u16, faults: &str, levels: &str, requests: u32, extra: &str) -> String {
    format!(
        "name: {name}\nengine:\n  kind: command\n  command: [\"{ZERO}\", \"--port\", \"{{{{ port }}}}\"{faults}]\n  port: {port}\n  ready_timeout: 3s\n  stop_timeout: 1s\ngrid:\n  concurrency: {levels}\nload:\n  concurrency: \"{{{{ concurrency }}}}\"\n  requests: {requests}\n  exact_requests: true\n  max_tokens: 8\n  prompt_tokens: 8\n  warmup: 1\n  server_warmup: 0s\nmeasure: {{memory: procfs}}\n{extra}"
    )
}

struct Case {
    _tmp: tempfile::TempDir,
    spec: PathBuf,
    out: PathBuf,
}

impl Case {
    fn new(text: &str) -> Case {
        let tmp = tempfile::tempdir().unwrap();
        let spec = tmp.path().join("spec.yaml");
        std::fs::write(&spec, text).unwrap();
        let out = tmp.path().join("out");
        Case { _tmp: tmp, spec, out }
    }

    fn command(&self, extra: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_servelab"));
        cmd.args(["run", self.spec.to_str().unwrap(), "--out", self.out.to_str().unwrap()]).args(extra);
        cmd
    }

    fn run(&self, extra: &[&str]) -> Output {
        let out = self.command(extra).output().unwrap();
        eprintln!("{}", String::from_utf8_lossy(&out.stderr));
        out
    }

    fn dir(&self, name: &str, id: &str) -> PathBuf {
        self.out.join(name).join(id)
    }
}

fn journal(dir: &Path) -> Vec<serde_json::Value> {
    jsonl(&dir.join("journal.jsonl"))
}

fn events<'a>(j: &'a [serde_json::Value], kind: &str) -> Vec<&'a serde_json::Value> {
    j.iter().filter(|e| e["event"] == kind).collect()
}

/// Measured (non-warmup) requests per committed (point, attempt), read the way `report` reads them.
fn committed_requests(dir: &Path) -> BTreeMap<(String, u64), usize> {
    let j = journal(dir);
    let done: BTreeSet<(String, u64)> = events(&j, "point_done")
        .iter()
        .map(|e| (e["point"].as_str().unwrap().to_owned(), e["attempt"].as_u64().unwrap()))
        .collect();
    let mut n = BTreeMap::new();
    for r in jsonl(&dir.join("requests.jsonl")).iter().filter(|r| r["warmup"] == false) {
        let key = (r["point"].as_str().unwrap().to_owned(), r["attempt"].as_u64().unwrap_or(0));
        if done.contains(&key) {
            *n.entry(key).or_insert(0) += 1;
        }
    }
    n
}

/// Starts the run (run id `r`), sends `sig` once its first point is committed, and returns the run folder
/// and servelab's exit code.
fn signal_after_first_point(case: &Case, name: &str, sig: nix::sys::signal::Signal) -> (PathBuf, Option<i32>) {
    let (mut child, dir) = start_until_first_point(case, name);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), sig).unwrap();
    (dir, child.wait().unwrap().code())
}

/// Starts the run (run id `r`) and returns once its first point is committed.
fn start_until_first_point(case: &Case, name: &str) -> (std::process::Child, PathBuf) {
    let child = case.command(&["--run-id", "r"]).stderr(Stdio::null()).spawn().unwrap();
    let dir = case.dir(name, "r");
    let deadline = Instant::now() + Duration::from_secs(30);
    while events(&journal(&dir), "point_done").is_empty() {
        assert!(Instant::now() < deadline, "the first point never finished");
        std::thread::sleep(Duration::from_millis(10));
    }
    (child, dir)
}

fn sweep_column(dir: &Path, column: &str) -> Vec<String> {
    let mut reader = csv::Reader::from_path(dir.join("concurrency_sweep.csv")).unwrap();
    let i = reader.headers().unwrap().iter().position(|h| h == column).unwrap();
    reader.records().map(|r| r.unwrap()[i].to_owned()).collect()
}

fn rerenders_byte_for_byte(dir: &Path) {
    rerender_the_same(dir, &["concurrency_sweep.csv", "sweep.json", "concurrency_sweep.md", "kv_cache_scaling.csv"]);
}

fn rerender_the_same(dir: &Path, names: &[&str]) {
    let before: Vec<Vec<u8>> = names.iter().map(|n| std::fs::read(dir.join(n)).unwrap()).collect();
    let out = Command::new(env!("CARGO_BIN_EXE_servelab")).arg("report").arg(dir).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for (n, b) in names.iter().zip(before) {
        assert!(std::fs::read(dir.join(n)).unwrap() == b, "{n} re-rendered differently");
    }
}

#[test]
fn a_run_commits_every_point_once_and_rerenders() {
    let port = free_port();
    let case = Case::new(
        &spec("ok", port, "", "[1, 4]", 12, "repeats: 2\n").replace("server_warmup: 0s", "server_warmup: 1s"),
    );
    let out = case.run(&["--run-id", "a"]);
    assert_eq!(out.status.code(), Some(0));
    let dir = case.dir("ok", "a");
    let j = journal(&dir);
    assert_eq!(events(&j, "server_start").len(), 1);
    assert_eq!(events(&j, "point_start").len(), 4);
    assert_eq!(events(&j, "point_done").len(), 4);
    assert!(committed_requests(&dir).values().all(|n| *n == 12));
    assert_eq!(sweep_column(&dir, "requests"), ["12", "12"]);
    rerenders_byte_for_byte(&dir);
    assert_nothing_left_in(&dir, port);
}

/// A closed loop of responses not streamed takes the window that opens once every stream has delivered
/// (metrics version 3), alike while it runs and when `report` renders its records again.
#[test]
fn a_non_streamed_closed_loop_records_metrics_version_3_and_rerenders() {
    let port = free_port();
    let text =
        spec("whole", port, "", "[4]", 48, "").replace("  max_tokens: 8\n", "  max_tokens: 8\n  stream: false\n");
    let case = Case::new(&text);
    assert_eq!(case.run(&["--run-id", "a"]).status.code(), Some(0));
    let dir = case.dir("whole", "a");
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(m["metrics_version"], 3);
    let md = std::fs::read_to_string(dir.join("concurrency_sweep.md")).unwrap();
    assert!(md.contains("whole rounds of c completions"), "{md}");
    rerenders_byte_for_byte(&dir);
    assert_nothing_left_in(&dir, port);

    // A run recorded under version 2 and resumed by this build goes on under version 2, so what it measured
    // before and after the resume means the same, live and re-rendered.
    let manifest = dir.join("manifest.json");
    let mut m: serde_json::Value = serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    m["metrics_version"] = serde_json::json!(2);
    std::fs::write(&manifest, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
    std::fs::write(&case.spec, text.replace("[4]", "[4, 8]")).unwrap();
    let resumed = case.run(&["--resume", dir.to_str().unwrap()]);
    assert_eq!(resumed.status.code(), Some(0));
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    assert_eq!(m["metrics_version"], 2);
    let md = std::fs::read_to_string(dir.join("concurrency_sweep.md")).unwrap();
    assert!(!md.contains("whole rounds of c completions"), "{md}");
    assert_eq!(sweep_column(&dir, "concurrency"), ["4", "8"]);
    rerenders_byte_for_byte(&dir);
    assert_nothing_left_in(&dir, port);
}

#[test]
fn an_existing_run_folder_is_never_merged_into_and_run_ids_stay_inside_out() {
    let port = free_port();
    let case = Case::new(&spec("once", port, "", "[1]", 4, ""));
    assert_eq!(case.run(&["--run-id", "a"]).status.code(), Some(0));
    let again = case.run(&["--run-id", "a"]);
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists; continue it with --resume"));
    for bad in ["../../x", "/tmp/x", "..", "a/b"] {
        let out = case.run(&["--run-id", bad]);
        assert_eq!(out.status.code(), Some(2), "--run-id {bad}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("is not a plain folder name"));
    }
    // Two runs without --run-id in the same second get two folders.
    assert_eq!(case.run(&[]).status.code(), Some(0));
    assert_eq!(case.run(&[]).status.code(), Some(0));
    let folders = std::fs::read_dir(case.out.join("once")).unwrap().count();
    assert_eq!(folders, 3);
}

#[test]
fn ctrl_c_stops_cleanly_and_resume_measures_nothing_twice() {
    let port = free_port();
    // Paced tokens (0.2 ms apart) make each point last long enough to be interrupted mid-run.
    let case = Case::new(&spec("intr", port, ", \"--itl-us\", \"200\"", "[4, 1]", 300, "repeats: 2\n"));
    let (dir, code) = signal_after_first_point(&case, "intr", nix::sys::signal::Signal::SIGINT);
    assert_eq!(code, Some(130));
    assert_nothing_left_in(&dir, port);
    let done_before = events(&journal(&dir), "point_done").iter().filter(|e| e["status"] == "ok").count();
    assert!(done_before < 4, "the interrupt came too late to test anything");

    let resumed = case.run(&["--resume", dir.to_str().unwrap()]);
    assert_eq!(resumed.status.code(), Some(0));
    let j = journal(&dir);
    let ok: Vec<&str> =
        events(&j, "point_done").iter().filter(|e| e["status"] == "ok").map(|e| e["point"].as_str().unwrap()).collect();
    assert_eq!(ok.len(), 4, "every point measured ok exactly once: {ok:?}");
    assert_eq!(ok.iter().collect::<BTreeSet<_>>().len(), 4);
    assert_eq!(events(&j, "server_start").len(), 2);
    assert_eq!(sweep_column(&dir, "requests"), ["300", "300"]);
    rerenders_byte_for_byte(&dir);
    assert_nothing_left_in(&dir, port);
}

#[test]
fn records_written_before_a_crash_are_not_counted_after_resume() {
    let port = free_port();
    let case = Case::new(&spec("crash", port, "", "[1, 2]", 30, ""));
    assert_eq!(case.run(&["--run-id", "c"]).status.code(), Some(0));
    let dir = case.dir("crash", "c");
    // As if the process died (or the disk filled) after the last point's records but before its journal
    // line: drop that line, and leave half a line behind.
    let text = std::fs::read_to_string(dir.join("journal.jsonl")).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    let last = lines.pop().unwrap();
    assert!(last.contains("point_done"));
    let mut torn = lines.join("\n");
    torn.push_str("\n{\"event\":\"point_do");
    std::fs::write(dir.join("journal.jsonl"), torn).unwrap();

    assert_eq!(case.run(&["--resume", dir.to_str().unwrap()]).status.code(), Some(0));
    // The point ran again under a new attempt; its stray records stay uncommitted.
    let attempts: Vec<u64> =
        events(&journal(&dir), "point_done").iter().map(|e| e["attempt"].as_u64().unwrap()).collect();
    assert_eq!(attempts, [0, 1]);
    assert!(committed_requests(&dir).values().all(|n| *n == 30));
    assert_eq!(sweep_column(&dir, "requests"), ["30", "30"]);
    assert!(dir.join("journal.jsonl.torn").exists(), "the torn line is set aside");
    rerenders_byte_for_byte(&dir);
}

#[test]
fn a_damaged_journal_is_an_error_not_an_empty_one() {
    let port = free_port();
    let case = Case::new(&spec("damaged", port, "", "[1]", 4, ""));
    assert_eq!(case.run(&["--run-id", "d"]).status.code(), Some(0));
    let dir = case.dir("damaged", "d");
    let mut bytes = std::fs::read(dir.join("journal.jsonl")).unwrap();
    bytes.splice(0..0, b"\xff\n".iter().copied());
    std::fs::write(dir.join("journal.jsonl"), bytes).unwrap();
    let out = case.run(&["--resume", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("journal.jsonl:1:1: invalid UTF-8"));
    assert_eq!(jsonl(&dir.join("points.jsonl")).len(), 1, "nothing was measured on top");
}

#[test]
fn a_server_that_dies_under_load_fails_its_point_and_the_rest_are_not_run() {
    let port = free_port();
    let case = Case::new(&spec("dies", port, ", \"--die-after\", \"20\"", "[1, 2]", 40, ""));
    let out = case.run(&["--run-id", "d"]);
    assert_eq!(out.status.code(), Some(3));
    let dir = case.dir("dies", "d");
    let points = jsonl(&dir.join("points.jsonl"));
    assert_eq!(points.len(), 2);
    assert_eq!(points[0]["status"], "failed");
    assert_eq!(points[0]["error"], "the server died during this point");
    assert_eq!(points[1]["status"], "failed");
    assert!(points[1]["error"].as_str().unwrap().starts_with("not run"));
    assert_nothing_left_in(&dir, port);
}

#[test]
fn fail_fast_stops_at_the_first_server_that_cannot_start() {
    let port = free_port();
    let text = spec("ff", port, ", \"{{ mode }}\"", "[1]", 4, "")
        .replace("grid:\n  concurrency: [1]\n", "grid:\n  mode: [--fail-start, --ok]\n  concurrency: [1]\n");
    let case = Case::new(&text);
    let out = case.run(&["--run-id", "f", "--fail-fast"]);
    assert_eq!(out.status.code(), Some(3));
    let dir = case.dir("ff", "f");
    assert_eq!(events(&journal(&dir), "server_start").len(), 1, "the second server never started");
    let startups = common::startups(&dir);
    assert_eq!(startups.len(), 1);
    assert_eq!(startups[0]["status"], "failed");
    assert!(startups[0]["error"].as_str().unwrap().contains("fake engine refused to start"));
    // Without --fail-fast the run goes on to the second server.
    let out = case.run(&["--run-id", "g"]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(events(&journal(&case.dir("ff", "g")), "server_start").len(), 2);
    assert_nothing_left_in(&case.dir("ff", "g"), port);
}

#[test]
fn a_server_that_never_gets_ready_fails_within_its_timeout() {
    let port = free_port();
    let case = Case::new(&spec("never", port, ", \"--never-ready\"", "[1]", 4, ""));
    let started = Instant::now();
    let out = case.run(&["--run-id", "n"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(started.elapsed() < Duration::from_secs(20));
    let dir = case.dir("never", "n");
    let s = &common::startups(&dir)[0];
    assert_eq!(s["status"], "failed");
    assert!(s["error"].as_str().unwrap().contains("ready"), "{}", s["error"]);
    assert_nothing_left_in(&dir, port);
}

#[test]
fn stop_escalates_and_ends_the_whole_process_group() {
    let port = free_port();
    let case = Case::new(&spec("group", port, ", \"--child\", \"--ignore-term\"", "[1]", 4, ""));
    assert_eq!(case.run(&["--run-id", "g"]).status.code(), Some(0));
    let dir = case.dir("group", "g");
    let s = &common::startups(&dir)[0];
    assert_eq!(s["stop"]["escalated"], true, "SIGTERM was ignored, so SIGKILL had to follow");
    assert!(s["pids"].as_array().unwrap().len() >= 2, "the child was seen in the server's tree");
    assert_nothing_left_in(&dir, port);
}

#[test]
fn compressed_raw_records_read_back_and_resume() {
    let port = free_port();
    let case = Case::new(&spec("gz", port, "", "[1, 2]", 8, ""));
    assert_eq!(case.run(&["--run-id", "z"]).status.code(), Some(0));
    let dir = case.dir("gz", "z");
    let out = Command::new(env!("CARGO_BIN_EXE_servelab")).arg("compress").arg(&dir).output().unwrap();
    assert!(out.status.success());
    assert!(dir.join("requests.jsonl.xz").exists() && !dir.join("requests.jsonl").exists());
    let server = std::fs::read_dir(dir.join("servers")).unwrap().next().unwrap().unwrap().path();
    assert!(server.join("startup.json.xz").exists() && !server.join("startup.json").exists());
    for doc in ["manifest.json", "plan.json"].map(|d| dir.join(d)).into_iter().chain([server.join("server.log")]) {
        let packed = doc.with_extension(format!("{}.xz", doc.extension().unwrap().to_str().unwrap()));
        assert!(packed.exists() && !doc.exists(), "{} is packed", doc.display());
    }
    rerenders_byte_for_byte(&dir);
    // A spec edit adds a level: the resumed run appends plain records beside the compressed ones.
    let mut f = std::fs::OpenOptions::new().write(true).truncate(true).open(&case.spec).unwrap();
    f.write_all(spec("gz", port, "", "[1, 2, 3]", 8, "").as_bytes()).unwrap();
    assert_eq!(case.run(&["--resume", dir.to_str().unwrap()]).status.code(), Some(0));
    assert_eq!(sweep_column(&dir, "requests"), ["8", "8", "8"]);
    assert!(dir.join("spec-1.yaml").exists(), "the earlier spec is kept");
    assert!(server.join("startup-1.json.xz").exists(), "the earlier start is kept, still packed");
    assert!(server.join("startup.json").exists() && !server.join("startup.json.xz").exists());
    assert!(server.join("server-1.log.xz").exists() && server.join("server.log").exists(), "the earlier log is kept");
    for (plain, packed) in [("manifest.json", "manifest.json.xz"), ("plan.json", "plan.json.xz")] {
        assert!(dir.join(plain).exists() && !dir.join(packed).exists(), "{plain} rewritten, one copy");
    }
    rerenders_byte_for_byte(&dir);
    // Another experiment's spec is refused (nothing written), unless --force.
    let other = Case::new(&spec("other", port, "", "[1]", 8, ""));
    let refused = other.run(&["--resume", dir.to_str().unwrap()]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("holds the experiment `gz`, but this spec is `other`"));
    assert!(!dir.join("spec-2.yaml").exists(), "the refused spec was not recorded");
}

#[test]
fn sigterm_and_sighup_stop_like_ctrl_c_and_a_clean_resume_exits_0() {
    for (sig, code) in [(nix::sys::signal::Signal::SIGTERM, 143), (nix::sys::signal::Signal::SIGHUP, 129)] {
        let port = free_port();
        let case = Case::new(&spec("term", port, ", \"--itl-us\", \"200\"", "[4, 1]", 300, "repeats: 2\n"));
        let (dir, got) = signal_after_first_point(&case, "term", sig);
        assert_eq!(got, Some(code), "{sig:?}: 128 + its number after a graceful stop");
        assert_nothing_left_in(&dir, port);
        let resumed = case.run(&["--resume", dir.to_str().unwrap()]);
        assert_eq!(resumed.status.code(), Some(0), "a resume that completes exits 0 whatever the earlier attempts");
        assert_nothing_left_in(&dir, port);
    }
}

#[test]
fn a_point_whose_requests_fail_fails_and_the_run_says_so() {
    let port = free_port();
    let case = Case::new(&spec("errors", port, ", \"--http-500\"", "[1]", 8, ""));
    let out = case.run(&["--run-id", "e"]);
    assert_eq!(out.status.code(), Some(3), "every request failed: not an ok run");
    let points = jsonl(&case.dir("errors", "e").join("points.jsonl"));
    assert_eq!(points[0]["status"], "failed");
    assert!(points[0]["error"].as_str().unwrap().contains("8 of 8 requests failed, more than max_error_rate 10%"));
    // The first error says why, on the console and in the record.
    let why = "the first: http_500: fake engine failure (--http-500)";
    assert!(points[0]["error"].as_str().unwrap().contains(why), "{}", points[0]["error"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains(why));
    // A known cause comes with its fix.
    let port = free_port();
    let case = Case::new(&spec("garbage", port, ", \"--garbage\"", "[1]", 4, ""));
    let out = case.run(&["--run-id", "g"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("fix: the endpoint does not serve OpenAI completions"));
}

#[test]
fn compare_flags_a_change_beyond_the_threshold_where_a_cell_has_one_repeat() {
    let port = free_port();
    let fast = Case::new(&spec("cmp", port, "", "[1]", 20, ""));
    assert_eq!(fast.run(&["--run-id", "a"]).status.code(), Some(0));
    let slow = Case::new(&spec("cmp", port, ", \"--itl-us\", \"2000\"", "[1]", 20, ""));
    assert_eq!(slow.run(&["--run-id", "b"]).status.code(), Some(0));
    let out = Command::new(env!("CARGO_BIN_EXE_servelab"))
        .args(["compare", "--fail-on-regression"])
        .arg(fast.dir("cmp", "a"))
        .arg(slow.dir("cmp", "b"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("**regression** (no interval: beyond the threshold)"), "{text}");
    assert_eq!(out.status.code(), Some(5));
}

#[test]
fn a_prompts_file_that_is_not_a_regular_file_is_refused_before_anything_runs() {
    let port = free_port();
    let case = Case::new(
        &spec("dz", port, "", "[1]", 4, "").replace("  warmup: 1\n", "  warmup: 1\n  prompts_file: /dev/zero\n"),
    );
    let out = Command::new(env!("CARGO_BIN_EXE_servelab")).arg("validate").arg(&case.spec).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/dev/zero is not a regular file"));
    let out = case.run(&["--run-id", "z"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(!case.out.join("dz").join("z").join("journal.jsonl").exists(), "no server was started");
}

#[test]
fn an_endless_sse_line_or_error_body_fails_the_request_instead_of_filling_memory() {
    for (fault, kind) in [("--endless-line", "stream"), ("--endless-error", "http_500")] {
        let port = free_port();
        let case = Case::new(&spec("endless", port, &format!(", \"{fault}\""), "[1]", 3, ""));
        let started = Instant::now();
        let out = case.run(&["--run-id", "e"]);
        assert_eq!(out.status.code(), Some(3), "{fault}: every request failed");
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{fault}: the requests ended without waiting for a timeout"
        );
        let requests = jsonl(&case.dir("endless", "e").join("requests.jsonl"));
        assert!(requests.iter().all(|r| r["error"]["kind"] == kind), "{fault}: {:?}", requests[0]["error"]);
        assert_nothing_left_in(&case.dir("endless", "e"), port);
    }
}

/// A server that streams valid events without end, garbage, or answers without a token: every request is a
/// `stream` error with the reason, never a figure; the endless one is cut at the event cap (not at the 300 s
/// request timeout) with its record bounded; the run exits 3 and no cell claims tokens/s.
#[test]
fn hostile_streams_are_failed_requests_never_figures() {
    for (fault, says) in [
        ("--endless-stream", "events for 8 tokens: servelab stopped reading"),
        ("--garbage", "not a JSON object"),
        ("--no-tokens", "without a token"),
    ] {
        let port = free_port();
        let case = Case::new(&spec("hostile", port, &format!(", \"{fault}\""), "[1]", 3, ""));
        let started = Instant::now();
        let out = case.run(&["--run-id", "h"]);
        assert_eq!(out.status.code(), Some(3), "{fault}: every request failed");
        assert!(started.elapsed() < Duration::from_secs(60), "{fault}: the requests ended without a timeout");
        let dir = case.dir("hostile", "h");
        let requests = jsonl(&dir.join("requests.jsonl"));
        for r in &requests {
            assert_eq!(r["error"]["kind"], "stream", "{fault}: {r}");
            assert!(r["error"]["message"].as_str().unwrap().contains(says), "{fault}: {}", r["error"]["message"]);
            assert!(r["chunk_us"].as_array().map_or(0, Vec::len) <= 8 + 32, "{fault}: the record is bounded");
        }
        let size = std::fs::metadata(dir.join("requests.jsonl")).unwrap().len();
        assert!(size < 1 << 20, "{fault}: requests.jsonl holds {size} bytes");
        let points = jsonl(&dir.join("points.jsonl"));
        assert!(points.iter().all(|p| p["status"] == "failed"), "{fault}: {points:?}");
        assert_nothing_left_in(&dir, port);
    }
}

/// A committed point whose records were lost (a truncated or edited folder) is refused by `report`, `compare`
/// and `--resume`, naming the point and the file — never rendered as a point of zero requests.
#[test]
fn a_committed_point_whose_records_are_gone_is_refused_not_rendered_as_zeros() {
    let port = free_port();
    let case = Case::new(&spec("lost", port, "", "[1, 2]", 6, ""));
    assert_eq!(case.run(&["--run-id", "r"]).status.code(), Some(0));
    let dir = case.dir("lost", "r");
    let first = events(&journal(&dir), "point_done")[0]["point"].as_str().unwrap().to_owned();
    let servelab = |args: &[&str]| Command::new(env!("CARGO_BIN_EXE_servelab")).args(args).output().unwrap();
    // Half of the first point's request records gone.
    let text = std::fs::read_to_string(dir.join("requests.jsonl")).unwrap();
    let mut dropped = 0;
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| {
            let drop = l.contains(&format!("\"point\":\"{first}\"")) && dropped < 3;
            dropped += usize::from(drop);
            !drop
        })
        .collect();
    assert_eq!(dropped, 3);
    std::fs::write(dir.join("requests.jsonl"), kept.join("\n") + "\n").unwrap();
    for args in [vec!["report", dir.to_str().unwrap()], vec!["compare", dir.to_str().unwrap(), dir.to_str().unwrap()]] {
        let out = servelab(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(&first) && err.contains("requests.jsonl"), "{args:?}: {err}");
    }
    let resumed = case.run(&["--resume", dir.to_str().unwrap()]);
    assert_eq!(resumed.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&resumed.stderr).contains(&first));
    let packed = servelab(&["compress", dir.to_str().unwrap()]);
    assert_ne!(packed.status.code(), Some(0), "compress rewrote a folder that lost records");
    assert!(String::from_utf8_lossy(&packed.stderr).contains(&first));
    assert!(dir.join("requests.jsonl").exists(), "nothing was rewritten");
    // The point's own record gone.
    std::fs::write(dir.join("requests.jsonl"), text).unwrap();
    let points = std::fs::read_to_string(dir.join("points.jsonl")).unwrap();
    let kept: Vec<&str> = points.lines().filter(|l| !l.contains(&format!("\"point\":\"{first}\""))).collect();
    std::fs::write(dir.join("points.jsonl"), kept.join("\n") + "\n").unwrap();
    let out = servelab(&["report", dir.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(&first) && err.contains("points.jsonl"), "{err}");
}

/// An open loop under `max_concurrency` against a server that takes its requests and never finishes them:
/// the timed phase ends near its duration plus the request timeout (not arrivals × timeout ÷ the cap), the
/// arrivals that found no free slot in time are recorded as not sent, and the cell is not delivered.
#[test]
fn an_open_loop_against_a_server_that_never_answers_ends_on_time() {
    let port = free_port();
    let text = format!(
        "name: stuck\nengine:\n  kind: command\n  command: [\"{ZERO}\", \"--port\", \"{{{{ port }}}}\", \"--itl-us\", \"5000000\"]\n  port: {port}\n  ready_timeout: 5s\n  stop_timeout: 1s\nload:\n  rate: 20\n  arrival: constant\n  max_concurrency: 2\n  duration: 1s\n  request_timeout: 2s\n  max_tokens: 8\n  prompt_tokens: 8\n  warmup: 0\n  server_warmup: 0s\nmeasure: {{memory: procfs}}\n"
    );
    let case = Case::new(&text);
    let started = Instant::now();
    let out = case.run(&["--run-id", "s"]);
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(3), "every request failed");
    assert!(took < Duration::from_secs(20), "the phase held on for {took:?}");
    let requests = jsonl(&case.dir("stuck", "s").join("requests.jsonl"));
    let measured: Vec<&serde_json::Value> = requests.iter().filter(|r| r["tail"] != true).collect();
    let kinds: BTreeMap<String, usize> = measured.iter().fold(BTreeMap::new(), |mut m, r| {
        *m.entry(r["error"]["kind"].as_str().unwrap_or("ok").to_owned()).or_insert(0) += 1;
        m
    });
    // Two slots: two requests time out at 2 s, two more take their slots and time out; the rest wait in vain.
    assert!(kinds.get("timeout").is_some_and(|n| (2..=4).contains(n)), "{kinds:?}");
    assert!(kinds.get("not_sent").is_some_and(|n| *n >= 10), "{kinds:?}");
    assert_eq!(measured.len(), 20, "every arrival of the schedule is recorded once");
    let md = std::fs::read_to_string(case.dir("stuck", "s").join("rate_sweep.md")).unwrap_or_default();
    assert!(md.contains("did not deliver") || md.is_empty(), "{md}");
}

/// Waits up to `limit` for every process holding one of `needles` to be gone; returns those left.
fn left_after(needles: &[String], limit: Duration) -> Vec<u32> {
    let deadline = Instant::now() + limit;
    loop {
        let left: Vec<u32> = needles.iter().flat_map(|n| common::processes_with(n)).collect();
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn server_needles(port: u16) -> Vec<String> {
    vec![format!("--port\0{port}"), format!("600.{port}"), format!("601.{port}")]
}

#[test]
fn a_descendant_that_leaves_the_group_and_session_is_stopped_too() {
    let port = free_port();
    // --escape: a helper that calls setsid and whose parent exits at once (an orphan in a group of its own).
    let case = Case::new(&spec("escape", port, ", \"--child\", \"--escape\"", "[1]", 4, ""));
    let out = case.run(&["--run-id", "e"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(left_after(&server_needles(port), Duration::ZERO), Vec::<u32>::new(), "nothing of the server remains");
    assert_nothing_left_in(&case.dir("escape", "e"), port);
    let startup = &common::startups(&case.dir("escape", "e"))[0];
    assert!(startup["pids"].as_array().unwrap().len() >= 3, "leader, child and the escaped helper: {startup}");
}

#[test]
fn servelab_killed_outright_takes_its_server_along() {
    let port = free_port();
    let case =
        Case::new(&spec("sigkill", port, ", \"--child\", \"--escape\", \"--itl-us\", \"200\"", "[4, 1]", 300, ""));
    let (_, code) = signal_after_first_point(&case, "sigkill", nix::sys::signal::Signal::SIGKILL);
    assert_eq!(code, None, "killed by a signal");
    // The leader gets SIGTERM from its parent-death signal; the watchdog stops the group and the helper.
    let left = left_after(&server_needles(port), Duration::from_secs(10));
    assert!(left.is_empty(), "left running after servelab was killed: {left:?}");
}

#[test]
fn a_second_signal_exits_at_once_and_the_server_still_goes() {
    let port = free_port();
    // The server ignores SIGTERM, so the graceful stop waits its stop_timeout (3 s) — the second Ctrl-C cuts it
    // short; the watchdog then kills what ignored the SIGTERM after the same grace.
    let extra = ", \"--child\", \"--ignore-term\", \"--itl-us\", \"200\"";
    let case =
        Case::new(&spec("twice", port, extra, "[4, 1]", 300, "").replace("stop_timeout: 1s", "stop_timeout: 3s"));
    let (mut child, _) = start_until_first_point(&case, "twice");
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let begin = Instant::now();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(130));
    assert!(begin.elapsed() < Duration::from_secs(2), "the second signal did not stop at once: {:?}", begin.elapsed());
    let left = left_after(&server_needles(port), Duration::from_secs(10));
    assert!(left.is_empty(), "left running: {left:?}");
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() { files_under(&p, out) } else { out.push(p) }
    }
}

#[test]
fn the_api_key_is_written_nowhere_even_when_the_server_echoes_it() {
    let port = free_port();
    let key = "sk-servelab-test-9f8e7d6c5b4a";
    let text = spec("secret", port, ", \"--http-500\"", "[1]", 4, "")
        .replace("  stop_timeout: 1s\n", "  stop_timeout: 1s\n  api_key_env: SERVELAB_TEST_KEY\n");
    let case = Case::new(&text);
    let out = case.command(&["--run-id", "k"]).env("SERVELAB_TEST_KEY", key).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    let dir = case.dir("secret", "k");
    let mut files = Vec::new();
    files_under(&dir, &mut files);
    assert!(files.len() > 8, "{files:?}");
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        assert!(memchr::memmem::find(&bytes, key.as_bytes()).is_none(), "the key is in {}", f.display());
    }
    let requests = std::fs::read_to_string(dir.join("requests.jsonl")).unwrap();
    assert!(requests.contains("Bearer [redacted]"), "the echo was recorded, redacted: {requests}");
    let group = common::startups(&dir)[0]["id"].as_str().unwrap().to_owned();
    let log = std::fs::read_to_string(dir.join("servers").join(group).join("server.log")).unwrap();
    assert!(log.contains("Bearer [redacted]"), "{log}");
    // A key too short to redact safely is refused before anything runs.
    let short = case.command(&["--run-id", "s"]).env("SERVELAB_TEST_KEY", "abc").output().unwrap();
    assert_eq!(short.status.code(), Some(2), "{}", String::from_utf8_lossy(&short.stderr));
    assert!(String::from_utf8_lossy(&short.stderr).contains("at least 8"));
}

#[test]
fn an_endless_server_log_is_kept_to_its_head_and_tail_and_the_run_goes_on() {
    let port = free_port();
    let case = Case::new(&spec("chatty", port, ", \"--endless-log\"", "[1, 2]", 50, ""));
    let begin = Instant::now();
    let out = case.run(&["--run-id", "c"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let dir = case.dir("chatty", "c");
    let group = common::startups(&dir)[0]["id"].as_str().unwrap().to_owned();
    let log = dir.join("servers").join(group).join("server.log");
    let size = std::fs::metadata(&log).unwrap().len();
    assert!(size <= (10 << 20) + 4096, "server.log is {size} bytes");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("bytes of the server's output left out here"), "the flood was drained, not blocked");
    assert!(begin.elapsed() < Duration::from_secs(60), "{:?}", begin.elapsed());
    assert_nothing_left_in(&dir, port);
}

#[test]
fn a_disk_that_fills_between_records_and_commit_exits_6_and_resume_counts_once() {
    let port = free_port();
    let case = Case::new(&spec("full", port, "", "[1, 2]", 30, ""));
    // The storage fault injector: the first journal line committing a point fails with ENOSPC, after that
    // point's requests were written.
    let out =
        case.command(&["--run-id", "f"]).env("SERVELAB_FAULT_ENOSPC", "journal.jsonl:point_done").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "{stderr}");
    assert!(stderr.contains("No space left on device"), "{stderr}");
    let dir = case.dir("full", "f");
    assert!(!jsonl(&dir.join("requests.jsonl")).is_empty(), "the point's records were written before the fault");
    assert!(events(&journal(&dir), "point_done").is_empty(), "and never committed");
    assert_eq!(case.run(&["--resume", dir.to_str().unwrap()]).status.code(), Some(0));
    assert!(committed_requests(&dir).values().all(|n| *n == 30));
    assert_eq!(sweep_column(&dir, "requests"), ["30", "30"], "30 requests per level, not 60");
    rerenders_byte_for_byte(&dir);
    assert_nothing_left_in(&dir, port);
}

#[test]
fn an_endless_models_answer_is_cut_at_its_cap_and_the_run_goes_on() {
    let port = free_port();
    let mut server = Command::new(ZERO)
        .args(["--port", &port.to_string(), "--endless-models"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the endpoint never listened");
        std::thread::sleep(Duration::from_millis(20));
    }
    let text = format!(
        "name: models\nengine: {{kind: external, base_url: 'http://127.0.0.1:{port}', model: zero}}\nload: {{requests: 4, max_tokens: 4, prompt_tokens: 4, warmup: 0, server_warmup: 0s}}\nmeasure: {{memory: procfs}}\n"
    );
    let case = Case::new(&text);
    let begin = Instant::now();
    let out = case.run(&["--run-id", "m"]);
    // Cleanup only: the endpoint may have exited already; what is tested is the run's outcome below.
    server.kill().ok();
    server.wait().ok();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(begin.elapsed() < Duration::from_secs(30), "{:?}", begin.elapsed());
    let startup = &common::startups(&case.dir("models", "m"))[0];
    assert!(startup["served_model"].is_null(), "an answer cut at 1 MiB is no answer: {}", startup["served_model"]);
}

/// An open-loop rate sweep with an SLO against the zero-latency endpoint: the schedule is pre-drawn (the same
/// seed gives the same scheduled times on a second run), each SLO phase holds at least 400 measured arrivals,
/// tail arrivals are marked, and the rate-sweep files re-render byte for byte. Timing-dependent verdicts
/// (lateness, attainment) are not asserted: they are data.
#[test]
fn an_open_loop_rate_sweep_draws_its_schedule_from_the_seed_and_reports_goodput() {
    let port = free_port();
    let text = format!(
        "name: open\nengine:\n  kind: command\n  command: [\"{ZERO}\", \"--port\", \"{{{{ port }}}}\"]\n  port: {port}\n  ready_timeout: 3s\n  stop_timeout: 1s\ngrid:\n  rate: [100, 400]\nload:\n  rate: \"{{{{ rate }}}}\"\n  duration: 1s\n  max_tokens: 4\n  prompt_tokens: 8\n  warmup: 1\n  server_warmup: 0s\nmeasure: {{memory: procfs}}\nslo: {{e2e: 2s}}\n"
    );
    let case = Case::new(&text);
    assert_eq!(case.run(&["--run-id", "a"]).status.code(), Some(0));
    assert_eq!(case.run(&["--run-id", "b"]).status.code(), Some(0));
    let scheduled = |run: &str| -> Vec<(String, u32, String)> {
        let text = std::fs::read_to_string(case.dir("open", run).join("requests.jsonl")).unwrap();
        text.lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|r| r["warmup"] == false)
            .map(|r| (r["point"].to_string(), r["index"].as_u64().unwrap() as u32, r["scheduled_s"].to_string()))
            .filter(|(_, i, _)| *i < 400)
            .collect()
    };
    let (a, b) = (scheduled("a"), scheduled("b"));
    assert_eq!(a.len(), 800, "two rates, each at least 400 measured arrivals (the SLO minimum)");
    let mut sorted_b = b.clone();
    sorted_b.sort();
    let mut sorted_a = a.clone();
    sorted_a.sort();
    assert_eq!(sorted_a, sorted_b, "the same seed, the same schedule");
    let dir = case.dir("open", "a");
    let csv = std::fs::read_to_string(dir.join("rate_sweep.csv")).unwrap();
    let rows: Vec<&str> = csv.lines().collect();
    assert!(
        rows[0].starts_with("rate,arrival,offered_rps,achieved_rps,lateness_p50_ms,lateness_p99_ms"),
        "{}",
        rows[0]
    );
    assert_eq!(rows.len(), 3, "{csv}");
    assert!(rows[1].starts_with("100,poisson,") && rows[2].starts_with("400,poisson,"), "{csv}");
    let md = std::fs::read_to_string(dir.join("rate_sweep.md")).unwrap();
    assert!(md.contains("SLO per request: e2e ≤ 2 s"), "{md}");
    assert!(!dir.join("concurrency_sweep.csv").exists(), "open-loop points are not a concurrency sweep");
    rerender_the_same(&dir, &["rate_sweep.csv", "rate_sweep.md", "rate_sweep.svg", "kv_cache_scaling.csv"]);
    // compare matches the open-loop cells of the two runs by rate and judges each on its intervals.
    let out = Command::new(env!("CARGO_BIN_EXE_servelab"))
        .args(["compare", dir.to_str().unwrap(), case.dir("open", "b").to_str().unwrap()])
        .output()
        .unwrap();
    let md = String::from_utf8_lossy(&out.stdout);
    assert!(md.contains("## Open loop"), "{md}");
    for rate in ["100 poisson", "400 poisson"] {
        for metric in ["goodput_rps", "attainment", "p95_e2e_s"] {
            assert!(md.contains(&format!("| {rate} | {metric} | ")), "{rate} {metric}: {md}");
        }
    }
    assert_eq!(md.matches("A: Sustainable rate").count() + md.matches("A: No tested rate").count(), 1, "{md}");
}

/// A rate search against an endpoint that streams at most 2 completions at once (about 10 ms each, so it
/// serves some 200/s): the ends first, then bisection, each probed rate a journaled point; a resume replays
/// the finished search without starting the server, and the report re-renders byte for byte. Which side of
/// the limit 200/s falls on is timing and is not asserted; 100/s sustaining and 800/s failing are far from it.
/// A rate search from 100 to 800 req/s (ladder 100, 200, 400, 800) against an endpoint that streams at most
/// 2 completions at once, about 10 ms each: it serves some 200/s.
fn search_spec(port: u16) -> String {
    format!(
        "name: search\nengine:\n  kind: command\n  command: [\"{ZERO}\", \"--port\", \"{{{{ port }}}}\", \"--capacity\", \"2\", \"--itl-us\", \"2000\"]\n  port: {port}\n  ready_timeout: 3s\n  stop_timeout: 1s\nload:\n  duration: 1s\n  max_tokens: 4\n  prompt_tokens: 8\n  server_warmup: 0s\nmeasure: {{memory: procfs}}\nslo: {{e2e: 60ms, attainment: 0.9}}\nsearch: {{rate: {{low: 100, high: 800, tolerance: 1}}}}\n"
    )
}

#[test]
fn a_rate_search_probes_the_ends_then_bisects_and_replays_on_resume() {
    let text = search_spec(free_port());
    let case = Case::new(&text);
    let out = case.run(&["--run-id", "a"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let dir = case.dir("search", "a");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("rate_search.json")).unwrap()).unwrap();
    let search = &json[0]["search"];
    assert_eq!(json[0]["plan"]["ladder"], serde_json::json!([100.0, 200.0, 400.0, 800.0]));
    let probes = search["probes"].as_array().unwrap();
    let rates: Vec<f64> = probes.iter().map(|p| p["rate"].as_f64().unwrap()).collect();
    let verdicts: Vec<&str> = probes.iter().map(|p| p["verdict"].as_str().unwrap()).collect();
    assert_eq!(rates[0], 100.0, "the lowest rate first: {search}");
    // A 2-core CI machine may fail to deliver even 100/s within 1 ms: the search then stops, and says so.
    if verdicts[0] == "sustains" {
        assert_eq!(rates[1], 800.0, "then the highest: {search}");
    }
    if verdicts.get(1) == Some(&"fails") {
        // 800/s is four times what the endpoint serves: whatever the client's lateness, its queue grows.
        assert_eq!(probes[1]["why"]["judgement"]["kind"], "rising", "{search}");
        let (mut lo, mut hi) = (100.0, 800.0);
        for (r, v) in rates.iter().zip(&verdicts).skip(2) {
            assert!(lo < *r && *r < hi, "a bisection probe inside the bracket: {search}");
            if *v == "sustains" { lo = *r } else { hi = *r }
        }
    }
    assert!(rates.len() <= 4 && search["stop"]["kind"].is_string() && search["next"].is_null(), "{search}");
    // Each probed rate is one journaled point, measured once; no other rung was run.
    let done = events(&journal(&dir), "point_done").len();
    assert_eq!(done, rates.len(), "{search}");
    let csv = std::fs::read_to_string(dir.join("rate_sweep.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + rates.len(), "{csv}");
    let md = std::fs::read_to_string(dir.join("rate_sweep.md")).unwrap();
    assert!(md.contains("### Search") && md.contains("Stopped: "), "{md}");
    let points = std::fs::read(dir.join("points.jsonl")).unwrap();
    let out = case.run(&["--resume", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not started"), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read(dir.join("points.jsonl")).unwrap(), points, "a finished search measures nothing more");
    rerender_the_same(
        &dir,
        &["rate_search.json", "rate_sweep.json", "rate_sweep.csv", "rate_sweep.md", "rate_sweep.svg"],
    );
}

/// Ctrl-C after the search's first point, then --resume: the search goes on from what was committed. The
/// first rate is not measured again, every probed rate is committed ok exactly once, and the report replays
/// the whole sequence.
#[test]
fn an_interrupted_rate_search_resumes_where_it_stopped() {
    let case = Case::new(&search_spec(free_port()));
    let (dir, code) = signal_after_first_point(&case, "search", nix::sys::signal::Signal::SIGINT);
    // 130; or 0 when the search ended at its first rate (a CI machine that did not deliver 100/s) before the
    // signal came: the resume then has nothing to do, and the assertions below still hold.
    assert!(matches!(code, Some(130) | Some(0)), "{code:?}");
    let ok_points = |dir: &Path| -> Vec<String> {
        events(&journal(dir), "point_done")
            .iter()
            .filter(|e| e["status"] == "ok")
            .map(|e| e["point"].as_str().unwrap().to_owned())
            .collect()
    };
    let before = ok_points(&dir);
    assert_eq!(before.len(), 1, "{before:?}");
    let out = case.run(&["--resume", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let after = ok_points(&dir);
    assert_eq!(after[0], before[0], "the first rate is kept, not measured again");
    let unique: BTreeSet<&String> = after.iter().collect();
    assert_eq!(unique.len(), after.len(), "each rate committed ok once: {after:?}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("rate_search.json")).unwrap()).unwrap();
    let probes = json[0]["search"]["probes"].as_array().unwrap();
    assert_eq!(probes.len(), after.len(), "every committed point is a probe of the replayed search: {json}");
    assert!(json[0]["search"]["next"].is_null(), "{json}");
    rerender_the_same(&dir, &["rate_search.json", "rate_sweep.csv", "rate_sweep.md"]);
}

/// `endpoint: chat` posts one user message per text prompt to /v1/chat/completions; the role-only first
/// chunk is a chunk but not the first token, so TTFT is the first `delta.content` and every token is counted.
#[test]
fn a_chat_run_sends_messages_and_times_the_first_content() {
    let port = free_port();
    let prompts = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(prompts.path(), "hello there\nwhat is a kv cache\n").unwrap();
    let case = Case::new(&format!(
        "name: chat\nengine:\n  kind: command\n  command: [\"{ZERO}\", \"--port\", \"{{{{ port }}}}\", \"--itl-us\", \"1000\"]\n  port: {port}\n  ready_timeout: 3s\n  stop_timeout: 1s\nload:\n  endpoint: chat\n  prompts_file: {}\n  concurrency: 2\n  requests: 8\n  exact_requests: true\n  max_tokens: 6\n  server_warmup: 0s\nmeasure: {{memory: procfs}}\n",
        prompts.path().display()
    ));
    let out = case.run(&["--run-id", "a"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let requests = jsonl(&case.dir("chat", "a").join("requests.jsonl"));
    let measured: Vec<_> = requests.iter().filter(|r| r["warmup"] == false).collect();
    assert_eq!(measured.len(), 8);
    for r in measured {
        assert!(r["error"].is_null(), "{r}");
        assert_eq!(r["completion_tokens"], 6, "{r}");
        // The role-only chunk, then six content chunks; gaps are counted from the first content chunk.
        assert_eq!((r["chunks"].as_u64(), r["chunk_gap_us"].as_array().map(Vec::len)), (Some(7), Some(5)), "{r}");
        let (start, first, end) =
            (r["start_s"].as_f64().unwrap(), r["first_token_s"].as_f64().unwrap(), r["end_s"].as_f64().unwrap());
        assert!(start < first && first < end, "{r}");
    }
    let sweep = std::fs::read_to_string(case.dir("chat", "a").join("concurrency_sweep.csv")).unwrap();
    assert!(!sweep.contains("differ"), "token counts agree with the server's: {sweep}");
}

/// Chat without a file of prompts sends exact-length text, which needs the model's tokenizer: an engine whose
/// model is not a local folder is refused with the fix.
#[test]
fn chat_without_text_prompts_is_refused_with_the_fix() {
    let case = Case::new(&format!(
        "name: c\nengine:\n  kind: command\n  command: [\"{ZERO}\"]\nload:\n  endpoint: chat\nmeasure: {{memory: procfs}}\n"
    ));
    let out =
        Command::new(env!("CARGO_BIN_EXE_servelab")).args(["validate", case.spec.to_str().unwrap()]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("`endpoint: chat` sends text") && err.contains("tokenizer.json"), "{err}");
    assert!(err.contains("prompts_file: FILE"), "{err}");
}

#[test]
fn rate_and_concurrency_together_are_refused_with_the_fix() {
    let case = Case::new(&format!(
        "name: both\nengine:\n  kind: command\n  command: [\"{ZERO}\"]\nload:\n  rate: 10\n  concurrency: 4\nmeasure: {{memory: procfs}}\n"
    ));
    let out =
        Command::new(env!("CARGO_BIN_EXE_servelab")).args(["validate", case.spec.to_str().unwrap()]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("`rate` (open loop) and `concurrency` (closed loop) both set the load"), "{err}");
    assert!(err.contains("max_concurrency"), "{err}");
}

/// Drawn lengths in an open loop: each request asks for its own drawn `max_tokens` (recorded with it) and its
/// prompt has the drawn length (recorded as `sent_tokens`); the same seed draws the same lengths again.
#[test]
fn an_open_loop_sends_the_drawn_lengths_of_each_request() {
    let port = free_port();
    let text = format!(
        "name: drawn\nengine:\n  kind: command\n  command: [\"{ZERO}\", \"--port\", \"{{{{ port }}}}\"]\n  port: {port}\n  ready_timeout: 3s\n  stop_timeout: 1s\nload:\n  rate: 200\n  duration: 1s\n  max_tokens: {{dist: uniform, min: 1, max: 9}}\n  prompt_tokens: {{dist: normal, mean: 40, sd: 10, min: 20, max: 60}}\n  warmup: 0\n  server_warmup: 0s\nmeasure: {{memory: procfs}}\n"
    );
    let lengths = |id: &str| {
        let case = Case::new(&text);
        assert!(case.run(&["--run-id", id]).status.success());
        let reqs = jsonl(&case.dir("drawn", id).join("requests.jsonl"));
        let got: Vec<(u64, u64, u64)> = reqs
            .iter()
            .filter(|r| r["tail"].is_null())
            .map(|r| {
                let asked = r["max_tokens"].as_u64().unwrap();
                assert_eq!(r["completion_tokens"].as_u64(), Some(asked), "{r}");
                (r["index"].as_u64().unwrap(), r["sent_tokens"].as_u64().unwrap(), asked)
            })
            .collect();
        got
    };
    let a = lengths("a");
    assert!(a.len() >= 150, "{}", a.len());
    assert!(a.iter().all(|&(_, p, o)| (20..=60).contains(&p) && (1..=9).contains(&o)));
    let distinct: BTreeSet<u64> = a.iter().map(|x| x.2).collect();
    assert_eq!(distinct.len(), 9, "every output length of 1..=9 drawn: {distinct:?}");
    let b = lengths("b");
    let common: Vec<_> = a.iter().filter(|x| b.iter().any(|y| y.0 == x.0)).collect();
    assert!(common.iter().all(|x| b.contains(x)), "the same seed draws the same lengths per request");
}

/// Four server configurations of the fake engine, each start taking `delay_ms`, on `--parallel` slots.
fn slots_spec(name: &str, port: u16, delay_ms: u32, faults: &str) -> String {
    let extra = format!(", \"--start-delay-ms\", \"{delay_ms}\", \"--capacity\", \"{{{{ capacity }}}}\"{faults}");
    spec(name, port, &extra, "[1, 2]", 8, "").replace("grid:\n", "grid:\n  capacity: [1, 2, 3, 4]\n")
}

/// (slot, start, end) of each server start, from the journal (RFC 3339 instants as seconds).
fn slot_intervals(dir: &Path) -> Vec<(u64, f64, f64)> {
    let j = journal(dir);
    let t = |e: &serde_json::Value| {
        chrono::DateTime::parse_from_rfc3339(e["at"].as_str().unwrap()).unwrap().timestamp_micros() as f64 / 1e6
    };
    let mut out = Vec::new();
    for s in events(&j, "server_start") {
        let end = events(&j, "server_end").into_iter().find(|e| e["group"] == s["group"]).expect("a server_end");
        assert_eq!(end["slot"], s["slot"], "a server ends on the slot it started on");
        out.push((s["slot"].as_u64().unwrap(), t(s), t(end)));
    }
    out
}

#[test]
fn four_slow_starts_share_two_slots_that_overlap_and_each_get_a_port() {
    let port = common::free_ports(3);
    let case = Case::new(&slots_spec("par", port, 1500, ""));
    assert_eq!(case.run(&["--run-id", "r", "--parallel", "2"]).status.code(), Some(0));
    let dir = case.dir("par", "r");
    let iv = slot_intervals(&dir);
    assert_eq!(iv.len(), 4);
    let per_slot = |k: u64| iv.iter().filter(|(s, _, _)| *s == k).count();
    assert_eq!((per_slot(0), per_slot(1)), (2, 2), "{iv:?}");
    // A slot runs one server at a time; the two slots run at the same time.
    for k in [0, 1] {
        let mut mine: Vec<_> = iv.iter().filter(|(s, _, _)| *s == k).collect();
        mine.sort_by(|a, b| a.1.total_cmp(&b.1));
        assert!(mine[0].2 <= mine[1].1, "slot {k} ran two servers at once: {mine:?}");
    }
    let overlap = iv.iter().any(|a| iv.iter().any(|b| a.0 != b.0 && a.1 < b.2 && b.1 < a.2));
    assert!(overlap, "the slots never ran at once: {iv:?}");
    let startups = common::startups(&dir);
    assert_eq!(startups.len(), 4);
    for s in &startups {
        let slot = s["slot"]["slot"].as_u64().unwrap();
        assert_eq!(s["slot"]["port"].as_u64().unwrap(), u64::from(port) + slot, "{s}");
        assert_eq!(s["slot"]["slots"], 2);
        assert!(s["base_url"].as_str().unwrap().ends_with(&format!(":{}", u64::from(port) + slot)));
    }
    assert_eq!(events(&journal(&dir), "point_done").iter().filter(|e| e["status"] == "ok").count(), 8);
    rerender_the_same(&dir, &["sweep.json", "concurrency_sweep.md", "kv_cache_scaling.csv"]);
    assert_nothing_left_in(&dir, port);
    assert_nothing_left_in(&dir, port + 1);
}

#[test]
fn a_group_keeps_its_id_on_any_slot_and_resume_takes_another_slot_count() {
    let port = common::free_ports(3);
    let case = Case::new(&slots_spec("ids", port, 600, ", \"--itl-us\", \"300\""));
    // Planned without slots, the ids a run with slots must use.
    let plan = Command::new(env!("CARGO_BIN_EXE_servelab"))
        .args(["plan", case.spec.to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    let plan: serde_json::Value = serde_json::from_slice(&plan.stdout).unwrap();
    let planned: BTreeSet<String> =
        plan["groups"].as_array().unwrap().iter().map(|g| g["id"].as_str().unwrap().to_owned()).collect();
    // Killed outright on two slots after its first point, resumed on one, then on three for nothing left.
    let mut child = case.command(&["--run-id", "r", "--parallel", "2"]).stderr(Stdio::null()).spawn().unwrap();
    let dir = case.dir("ids", "r");
    let deadline = Instant::now() + Duration::from_secs(30);
    while events(&journal(&dir), "point_done").is_empty() {
        assert!(Instant::now() < deadline, "the first point never finished");
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let before = events(&journal(&dir), "point_done").len();
    assert!(before < 8, "the kill came too late to test anything");
    let resumed = case.run(&["--resume", dir.to_str().unwrap()]);
    assert_eq!(resumed.status.code(), Some(0));
    let again = case.run(&["--resume", dir.to_str().unwrap(), "--parallel", "3"]);
    assert_eq!(again.status.code(), Some(0));
    let j = journal(&dir);
    let ok: Vec<&str> =
        events(&j, "point_done").iter().filter(|e| e["status"] == "ok").map(|e| e["point"].as_str().unwrap()).collect();
    assert_eq!(ok.len(), 8, "every point ok once: {ok:?}");
    assert_eq!(ok.iter().collect::<BTreeSet<_>>().len(), 8);
    let ran: BTreeSet<String> =
        events(&j, "server_start").iter().map(|e| e["group"].as_str().unwrap().to_owned()).collect();
    assert_eq!(ran, planned, "the groups run on slots are the plan's, by id");
    let sweeps: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("sweep.json")).unwrap()).unwrap();
    assert_eq!(sweeps.as_array().unwrap().len(), 4, "every group in the report");
    for p in [port, port + 1] {
        assert_nothing_left_in(&dir, p);
    }
}

#[test]
fn a_slot_whose_server_dies_fails_only_its_own_points() {
    let port = common::free_ports(3);
    // The first configuration's server dies under load; the other three finish.
    let text = slots_spec("die", port, 100, "")
        .replace("\"--capacity\"", "\"--die-after\", \"{{ 3 if capacity == 1 else 0 }}\", \"--capacity\"");
    let case = Case::new(&text);
    assert_eq!(case.run(&["--run-id", "r", "--parallel", "2"]).status.code(), Some(3));
    let dir = case.dir("die", "r");
    let points = jsonl(&dir.join("points.jsonl"));
    let failed: BTreeSet<&str> =
        points.iter().filter(|p| p["status"] == "failed").map(|p| p["group"].as_str().unwrap()).collect();
    assert_eq!(failed.len(), 1, "only the dying server's points fail: {failed:?}");
    let ok = points.iter().filter(|p| p["status"] == "ok").count();
    assert_eq!(ok, 6, "the other slots' points finish");
    // The report lists the failed points, with why, instead of leaving them out.
    let md = std::fs::read_to_string(dir.join("concurrency_sweep.md")).unwrap();
    let listed = md.split("## Points that failed").nth(1).expect("a section of failed points");
    for p in points.iter().filter(|p| p["status"] == "failed") {
        assert!(listed.contains(p["point"].as_str().unwrap()), "{listed}");
    }
    assert!(listed.contains("the server died during this point"), "{listed}");
    for p in [port, port + 1] {
        assert_nothing_left_in(&dir, p);
    }
}

#[test]
fn ctrl_c_stops_every_slots_server() {
    let port = common::free_ports(3);
    let case = Case::new(&slots_spec("sig", port, 200, ", \"--itl-us\", \"2000\""));
    let mut child = case.command(&["--run-id", "r", "--parallel", "2"]).stderr(Stdio::null()).spawn().unwrap();
    let dir = case.dir("sig", "r");
    let deadline = Instant::now() + Duration::from_secs(30);
    while events(&journal(&dir), "server_start").len() < 2 || events(&journal(&dir), "point_done").is_empty() {
        assert!(Instant::now() < deadline, "two slots never ran");
        std::thread::sleep(Duration::from_millis(10));
    }
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGINT).unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(130));
    let j = journal(&dir);
    assert_eq!(events(&j, "server_end").len(), events(&j, "server_start").len(), "every started server ended");
    for p in [port, port + 1] {
        assert_nothing_left_in(&dir, p);
    }
}

#[test]
fn a_command_that_ignores_its_port_is_refused_with_slots_before_anything_starts() {
    let port = common::free_ports(3);
    let text = spec("fixed", port, "", "[1]", 4, "").replace("\"{{ port }}\"", &format!("\"{port}\""));
    let text = text
        .replace("grid:\n", "grid:\n  capacity: [1, 2]\n")
        .replace("\"--port\", \"", "\"--capacity\", \"{{ capacity }}\", \"--port\", \"");
    let case = Case::new(&text);
    let out = case.run(&["--parallel", "2"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("{{ port }}"), "{err}");
    assert!(!case.out.join("fixed").exists() || events(&journal(&case.dir("fixed", "r")), "server_start").is_empty());
    // Ports from a template whose slots would meet: 1 + slot 1 is 2's own.
    let spread = slots_spec("meet", port, 0, "")
        .replace(&format!("  port: {port}\n"), &format!("  port: \"{{{{ {port} + capacity }}}}\"\n"));
    let out = Case::new(&spread).run(&["--parallel", "2"]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is both a slot of port"));
    // A server that needs two GPUs where one was lent.
    let tp2 = spec("tp2", port, ", \"--tensor-parallel-size\", \"2\"", "[1]", 4, "");
    let out = Case::new(&tp2).run(&["--gpus", "0"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs 2 GPUs and the run was lent 1"));
    // An endpoint servelab does not start has nothing to run side by side.
    let ext = format!(
        "name: ext\nengine:\n  kind: external\n  base_url: http://127.0.0.1:{port}\ngrid:\n  concurrency: [1, 2]\nload:\n  concurrency: \"{{{{ concurrency }}}}\"\n  requests: 4\nmeasure: {{memory: procfs}}\n"
    );
    let out = Case::new(&ext).run(&["--parallel", "2"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("external"));
}

/// On resume, a server reporting another vLLM is refused as soon as it is up: no point is measured or
/// journaled under the new version, the folder reads as before, and `--force` goes on.
#[test]
fn a_resumed_run_refuses_another_vllm_before_it_journals_anything() {
    let port = free_port();
    let tmp = tempfile::tempdir().unwrap();
    let version = tmp.path().join("version");
    std::fs::write(&version, "0.31.0\n").unwrap();
    let faults = format!(", \"--version-file\", \"{}\"", version.display());
    let case = Case::new(&spec("upgrade", port, &faults, "[1, 2]", 8, ""));
    assert_eq!(case.run(&["--run-id", "u"]).status.code(), Some(0));
    let dir = case.dir("upgrade", "u");
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["vllm_version"], "0.31.0");
    // A new level to measure, and vLLM upgraded in place (the command line, and so the ids, unchanged).
    std::fs::write(&case.spec, spec("upgrade", port, &faults, "[1, 2, 3]", 8, "")).unwrap();
    std::fs::write(&version, "0.32.0\n").unwrap();
    let server = std::fs::read_dir(dir.join("servers")).unwrap().next().unwrap().unwrap().path();
    let startup = std::fs::read(server.join("startup.json")).unwrap();
    let derived = std::fs::read(dir.join("concurrency_sweep.csv")).unwrap();
    let points = |dir: &Path| {
        let j = journal(dir);
        (events(&j, "point_start").len(), events(&j, "point_done").len())
    };
    let before = points(&dir);
    let out = case.run(&["--resume", dir.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("vLLM changed") && err.contains("0.31.0 → 0.32.0") && err.contains("--force"), "{err}");
    assert_eq!(points(&dir), before, "nothing was journaled under the new version");
    assert_eq!(std::fs::read(server.join("startup.json")).unwrap(), startup, "the earlier start is this group's");
    assert!(server.join("server-refused.log").exists(), "the refused start's log is kept aside");
    assert_eq!(std::fs::read(dir.join("concurrency_sweep.csv")).unwrap(), derived);
    assert!(processes_with_port(port).is_empty(), "the refused server was stopped");
    // --force resumes under the new version and measures the new level once.
    assert_eq!(case.run(&["--resume", dir.to_str().unwrap(), "--force"]).status.code(), Some(0));
    assert_eq!(sweep_column(&dir, "requests"), ["8", "8", "8"]);
    rerenders_byte_for_byte(&dir);
    assert_nothing_left_in(&dir, port);
}

fn processes_with_port(port: u16) -> Vec<u32> {
    common::processes_with(&format!("--port\0{port}"))
}

/// A report template with a misspelled variable is found in the preflight against synthetic records:
/// exit 2 in seconds, no run folder, no server; the built-in template copied unchanged passes.
#[test]
fn a_misspelled_report_template_is_refused_before_anything_starts() {
    let port = free_port();
    let tmp = tempfile::tempdir().unwrap();
    let folder = tmp.path().join("templates");
    std::fs::create_dir(&folder).unwrap();
    let builtin =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("templates/concurrency_sweep.md")).unwrap();
    std::fs::write(folder.join("concurrency_sweep.md"), &builtin).unwrap();
    let extra = format!("report: [concurrency_sweep]\ntemplates: {}\n", folder.display());
    let case = Case::new(&spec("tpl", port, "", "[1, 2]", 8, &extra));
    let validate =
        |case: &Case| Command::new(env!("CARGO_BIN_EXE_servelab")).arg("validate").arg(&case.spec).output().unwrap();
    let out = validate(&case);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let misspelled = builtin.replacen("{{ run.name }}", "{{ run.nmae }}", 1);
    assert_ne!(misspelled, builtin);
    std::fs::write(folder.join("concurrency_sweep.md"), misspelled).unwrap();
    let begun = Instant::now();
    let out = case.run(&["--run-id", "t"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("concurrency_sweep.md") && err.contains("run.nmae") && err.contains("undefined"), "{err}");
    assert!(begun.elapsed() < Duration::from_secs(10), "found in seconds");
    assert!(!case.out.exists(), "no run folder");
    assert!(processes_with_port(port).is_empty(), "no server");
    assert_eq!(validate(&case).status.code(), Some(2), "validate finds it too");
    // A templates folder that is not there is refused too (the built-in reports would be used silently).
    let missing = Case::new(&spec("tpl", port, "", "[1]", 8, "templates: /nonexistent/templates\n"));
    let out = missing.run(&[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a folder"));
}

/// A report that fails on the run's own data (here: only once the server reports a vLLM version, which
/// synthetic records lack) is an error during the run: exit 6, the points are committed, and once the
/// template is fixed `servelab report` renders them and `--resume` has nothing left to measure.
#[test]
fn a_report_error_during_the_run_exits_6_and_keeps_what_was_measured() {
    let port = free_port();
    let tmp = tempfile::tempdir().unwrap();
    let folder = tmp.path().join("templates");
    std::fs::create_dir(&folder).unwrap();
    let fails_on_real_data = "{% if run.vllm_version %}{{ no_such_variable }}{% endif %}ok\n";
    std::fs::write(folder.join("concurrency_sweep.md"), fails_on_real_data).unwrap();
    let extra = format!("report: [concurrency_sweep]\ntemplates: {}\n", folder.display());
    let case = Case::new(&spec("late", port, "", "[1, 2]", 8, &extra));
    let out = case.run(&["--run-id", "l"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "{err}");
    assert!(err.contains("cannot render the reports") && err.contains("no_such_variable"), "{err}");
    let dir = case.dir("late", "l");
    assert_eq!(events(&journal(&dir), "point_done").len(), 2, "what was measured is committed");
    assert!(committed_requests(&dir).values().all(|n| *n == 8));
    std::fs::write(folder.join("concurrency_sweep.md"), "fixed\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_servelab")).arg("report").arg(&dir).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read_to_string(dir.join("concurrency_sweep.md")).unwrap(), "fixed\n");
    assert_eq!(case.run(&["--resume", dir.to_str().unwrap()]).status.code(), Some(0));
    assert_eq!(events(&journal(&dir), "point_done").len(), 2, "nothing measured twice");
    assert_nothing_left_in(&dir, port);
}

/// `report` and `compress` that cannot write the run folder exit 7 (an I/O error outside a run), not 2.
#[test]
fn report_and_compress_that_cannot_write_exit_7() {
    let port = free_port();
    let case = Case::new(&spec("io", port, "", "[1]", 8, ""));
    assert_eq!(case.run(&["--run-id", "i"]).status.code(), Some(0));
    let dir = case.dir("io", "i");
    let servelab = |args: &[&str], fault: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_servelab"))
            .args(args)
            .arg(&dir)
            .env("SERVELAB_FAULT_ENOSPC", fault)
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (code, err) = servelab(&["report"], "concurrency_sweep.csv:concurrency");
    assert_eq!(code, Some(7), "{err}");
    assert!(err.contains("No space left on device") && err.contains("concurrency_sweep.csv"), "{err}");
    // The xz stream's magic bytes: the first packed file fails.
    let (code, err) = servelab(&["compress"], "requests.jsonl.xz:7zXZ");
    assert_eq!(code, Some(7), "{err}");
    assert!(err.contains("No space left on device"), "{err}");
    let (code, err) = servelab(&["compress"], "none:none");
    assert_eq!(code, Some(0), "{err}");
    rerenders_byte_for_byte(&dir);
}

/// Runs with the test-only failpoints of `record::failpoint` set (the tests are built with `--features
/// failpoints`; a release build has no such hooks).
#[cfg(feature = "failpoints")]
fn run_with_failpoints(case: &Case, failpoints: &str, extra: &[&str]) -> Output {
    let out = case.command(extra).env("SERVELAB_FAILPOINTS", failpoints).output().unwrap();
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    out
}

/// A sampler (GPU, /metrics, host) that panics would leave the point with fewer samples and no word: the
/// point fails with the panic message instead, and a resume measures it again.
#[cfg(feature = "failpoints")]
#[test]
fn a_panicking_sampler_fails_its_point_with_the_panic_message() {
    let port = free_port();
    let case = Case::new(&spec("sampler", port, "", "[1]", 4, ""));
    let out = run_with_failpoints(&case, "sampler-panic", &["--run-id", "s"]);
    assert_eq!(out.status.code(), Some(3), "a point without its samples is a failed point");
    let dir = case.dir("sampler", "s");
    let points = jsonl(&dir.join("points.jsonl"));
    assert_eq!(points[0]["status"], "failed");
    let error = points[0]["error"].as_str().unwrap();
    assert!(error.contains("the sampler failed: a load task panicked: failpoint `sampler-panic`"), "{error}");
    // Nothing else went wrong around the server, so its record carries no warnings key at all.
    assert!(common::startups(&dir)[0].get("warnings").is_none());
    assert_eq!(case.run(&["--resume", dir.to_str().unwrap()]).status.code(), Some(0));
    assert_eq!(sweep_column(&dir, "requests"), ["4"]);
    assert_nothing_left_in(&dir, port);
}

/// What protects a run without failing it — the subreaper, the watchdog, setting an earlier attempt's files
/// aside, the model's config.json — is never lost without a word: each failure is a warning on stderr and in
/// the server's startup.json, and the run goes on.
#[cfg(feature = "failpoints")]
#[test]
fn failed_safety_nets_are_warnings_on_stderr_and_in_startup_json() {
    let port = free_port();
    let model = tempfile::tempdir().unwrap();
    std::fs::write(model.path().join("config.json"), "not a model config").unwrap();
    let text = spec("nets", port, "", "[1]", 4, "")
        .replace("  port:", &format!("  model: {}\n  port:", model.path().display()));
    let case = Case::new(&text);
    // A failed point too, so that the resume starts the server again over the first attempt's files.
    let out = run_with_failpoints(&case, "subreaper,watchdog,sampler-panic", &["--run-id", "n"]);
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for said in [
        "warning: servelab could not become a child subreaper",
        "warning: the watchdog could not be started",
        "does not parse as a model config",
    ] {
        assert!(stderr.contains(said), "{said}: {stderr}");
    }
    let dir = case.dir("nets", "n");
    let warnings = common::startups(&dir)[0]["warnings"].clone();
    let warnings: Vec<&str> = warnings.as_array().unwrap().iter().map(|w| w.as_str().unwrap()).collect();
    assert_eq!(warnings.len(), 3, "{warnings:?}");
    assert!(warnings[0].contains("config.json does not parse as a model config"), "{warnings:?}");
    assert!(warnings[1].contains("child subreaper") && warnings[2].contains("watchdog"), "{warnings:?}");
    let out = run_with_failpoints(&case, "archive-rename,watchdog-gone", &["--resume", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("warning: cannot keep the earlier attempt's"), "{stderr}");
    assert!(stderr.contains("warning: the watchdog is gone"), "{stderr}");
    let startup = &common::startups(&dir)[0];
    let warnings = startup["warnings"].to_string();
    assert!(warnings.contains("startup.json as") && warnings.contains("server.log as"), "{warnings}");
    assert!(warnings.contains("the watchdog is gone"), "{warnings}");
    assert_nothing_left_in(&dir, port);
}

/// A chart or CSV that cannot be rendered fails `report` naming the file, and the file on disk is left as
/// it was: never a half-drawn chart or a CSV cut short.
#[cfg(feature = "failpoints")]
#[test]
fn a_chart_that_cannot_be_drawn_fails_the_report_naming_it() {
    let port = free_port();
    let case = Case::new(&spec("chart", port, "", "[1]", 4, ""));
    assert_eq!(case.run(&["--run-id", "c"]).status.code(), Some(0));
    let dir = case.dir("chart", "c");
    let before = std::fs::read(dir.join("concurrency_sweep.svg")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_servelab"))
        .args(["report", dir.to_str().unwrap()])
        .env("SERVELAB_FAILPOINTS", "chart-draw")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("cannot render kv_cache_scaling.svg: the chart could not be drawn"), "{stderr}");
    assert_eq!(std::fs::read(dir.join("concurrency_sweep.svg")).unwrap(), before);
}
