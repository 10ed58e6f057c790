//! Faults on real vLLM for CPU: a killed engine core, a server that never becomes ready, a bad flag, a busy
//! port, an unreachable external endpoint, an unwritable output folder, --fail-fast, a double Ctrl-C, and an
//! interrupted run resumed (also after a spec edit). After each, no process of any server remains.

mod common;
use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const ENV: &str =
    "  env: {VLLM_HOST_IP: 127.0.0.1, HF_HUB_OFFLINE: '1', VLLM_NO_USAGE_STATS: '1', DO_NOT_TRACK: '1'}\n";

fn journal(dir: &Path) -> Vec<serde_json::Value> {
    jsonl(&dir.join("journal.jsonl"))
}

fn starts(dir: &Path) -> usize {
    journal(dir).iter().filter(|e| e["event"] == "server_start").count()
}

/// A load spec over two server configurations (max-model-len) and two client levels.
fn load_spec(name: &str, port: u16, levels: &str, requests: u32, extra_engine: &str) -> String {
    format!(
        "name: {name}\nengine:\n  model: models/tiny-llama\n  port: {port}\n{extra_engine}  args:\n    max-model-len: \"{{{{ max_model_len }}}}\"\n    kv-cache-memory-bytes: 268435456\n    dtype: bfloat16\n    enforce-eager: true\n{ENV}  ready_timeout: 300s\ngrid:\n  max_model_len: [1024, 2048]\n  concurrency: {levels}\nload:\n  concurrency: \"{{{{ concurrency }}}}\"\n  requests: {requests}\n  exact_requests: true\n  max_tokens: 32\n  prompt_tokens: 32\n  warmup: 1\nmeasure: {{memory: procfs}}\n"
    )
}

/// The pid of a process of `comm` prefix that descends from `ancestor`.
fn descendant_named(ancestor: u32, comm: &str) -> Option<u32> {
    let table = servelab::probe::procfs::process_table();
    let parent: BTreeMap<u32, u32> = table.iter().map(|e| (e.pid, e.ppid)).collect();
    table.iter().map(|e| e.pid).find(|p| {
        let name = std::fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default();
        let mut cur = *p;
        let mut descends = false;
        for _ in 0..16 {
            match parent.get(&cur) {
                Some(&pp) if pp == ancestor => {
                    descends = true;
                    break;
                }
                Some(&pp) if pp > 1 => cur = pp,
                _ => break,
            }
        }
        descends && name.trim().starts_with(comm)
    })
}

fn metric(port: u16, name: &str) -> Option<f64> {
    let out = Command::new("curl")
        .args(["-sf", "--max-time", "2", &format!("http://127.0.0.1:{port}/metrics")])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    servelab::probe::metrics::sum(&servelab::probe::metrics::parse(&text), name)
}

fn engine_core_killed_during_load_fails_the_point_and_the_run_goes_on() {
    let _lock = ONE_SERVER_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let bin = vllm_bin();
    let out = tempfile::tempdir().unwrap();
    let port = free_ports(1);
    let spec_path = out.path().join("spec.yaml");
    std::fs::write(&spec_path, load_spec("kill", port, "[4]", 400, "")).unwrap();
    let child = run_command(&bin, &spec_path, out.path()).stderr(Stdio::piped()).spawn().unwrap();
    // Wait until the first server is under load, then SIGKILL its engine core.
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut killed = None;
    while Instant::now() < deadline && killed.is_none() {
        std::thread::sleep(Duration::from_millis(300));
        if metric(port, "vllm:num_requests_running").unwrap_or(0.0) > 0.0
            && let Some(core) = descendant_named(child.id(), "VLLM::EngineCor")
        {
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(core as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
            killed = Some(core);
        }
    }
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(killed.is_some(), "never saw the engine core under load: {stderr}");
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    let dir = out.path().join("kill/r");
    let points = jsonl(&dir.join("points.jsonl"));
    assert_eq!(points.len(), 2, "{points:?}");
    assert_eq!(points[0]["status"], "failed");
    assert!(points[0]["error"].as_str().unwrap().contains("died"), "{}", points[0]);
    assert_eq!(points[1]["status"], "ok", "the next server configuration started and measured");
    let requests = jsonl(&dir.join("requests.jsonl"));
    let first = points[0]["point"].as_str().unwrap();
    let errors = requests.iter().filter(|r| r["point"] == first && !r["error"].is_null()).count();
    assert!(errors > 0, "the requests cut off by the dead engine are recorded as errors");
    assert_eq!(starts(&dir), 2);
    assert_nothing_left_in(&dir, port);
}

fn a_bad_flag_and_a_server_that_never_gets_ready_fail_their_points_and_the_run_goes_on() {
    let _lock = ONE_SERVER_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let bin = vllm_bin();
    let out = tempfile::tempdir().unwrap();
    let port = free_ports(1);
    // bad: vLLM rejects the flag and exits; hang: readiness polls a path that never answers 200; ok: measured.
    // The timeout is twice a CPU start's usual ~35 s: at 45 s, the ok server once missed it on a busy CI machine.
    let spec = format!(
        "name: faults\nengine:\n  model: models/tiny-llama\n  port: {port}\n  ready_path: \"{{{{ '/never' if mode == 'hang' else '/health' }}}}\"\n  ready_timeout: 90s\n  args:\n    max-model-len: 1024\n    kv-cache-memory-bytes: 268435456\n    dtype: bfloat16\n    enforce-eager: true\n    no-such-flag: \"{{{{ true if mode == 'bad' else none }}}}\"\n{ENV}grid:\n  mode: [bad, hang, ok]\nmeasure: {{memory: procfs}}\nreport: [kv_cache_scaling_notes]\n"
    );
    let run = run_spec(&bin, &spec, out.path());
    assert_eq!(run.code, 3, "{}", run.stderr);
    let statuses: Vec<String> = run.rows.iter().map(|r| run.col(r, "status")).collect();
    assert_eq!(statuses.iter().filter(|s| *s == "ok").count(), 1, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| *s == "failed").count(), 2, "{statuses:?}");
    let notes = std::fs::read_to_string(run.dir.join("kv_cache_scaling_notes.md")).unwrap();
    assert!(
        notes.contains("unrecognized arguments: --no-such-flag"),
        "vLLM's own failure line is in the report:\n{notes}"
    );
    assert!(notes.contains("not ready after 90 s"), "{notes}");
    let startup = startups(&run.dir);
    let hang = startup.iter().find(|s| s["vars"]["mode"] == "hang").unwrap();
    assert!(hang["log_tail"].as_str().is_some_and(|t| !t.is_empty()), "the never-ready error carries the log tail");
    assert!(run.stderr.contains("last lines of") || hang["error"].as_str().unwrap().contains("not ready"));
    assert_nothing_left(&run, port);
}

fn fail_fast_stops_at_the_first_failure() {
    let _lock = ONE_SERVER_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let bin = vllm_bin();
    let out = tempfile::tempdir().unwrap();
    let port = free_ports(1);
    let spec = format!(
        "name: failfast\nengine:\n  model: models/tiny-llama\n  port: {port}\n  args:\n    max-model-len: \"{{{{ max_model_len }}}}\"\n    kv-cache-memory-bytes: 268435456\n    enforce-eager: true\n{ENV}grid:\n  max_model_len: [16384, 1024]\nmeasure: {{memory: procfs}}\n"
    );
    let run = run_spec_args(&bin, &spec, out.path(), &["--fail-fast"]);
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert_eq!(starts(&run.dir), 1, "the server after the failure was never started");
    assert_eq!(run.rows.len(), 1);
    assert_nothing_left(&run, port);
}

fn problems_found_before_any_server_starts() {
    let _lock = ONE_SERVER_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let bin = vllm_bin();
    let out = tempfile::tempdir().unwrap();
    // A busy port: a clear error, exit 2, nothing started.
    // The port is the bound listener's own, so nothing can take it between the check and the run.
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let run = run_spec(&bin, &spec("busy", port, "[1024]", "268435456"), out.path());
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains(&format!("port {port} on 127.0.0.1 is already in use")), "{}", run.stderr);
    assert_eq!(starts(&run.dir), 0);
    drop(listener);
    // An output folder that cannot be written: an error before any server starts.
    let spec_path = out.path().join("spec2.yaml");
    std::fs::write(&spec_path, spec("unwritable", free_ports(1), "[1024]", "268435456")).unwrap();
    let begin = Instant::now();
    let o = Command::new(env!("CARGO_BIN_EXE_servelab"))
        .args(["run", spec_path.to_str().unwrap(), "--out", "/proc/servelab-cannot-write-here"])
        .env("PATH", servelab_path(&bin))
        .current_dir(ROOT)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("cannot write the run's output"), "{stderr}");
    assert!(begin.elapsed() < Duration::from_secs(10), "no server was started");
    // An external endpoint nobody answers: the point fails with a clear error, exit 3.
    let port = free_ports(1);
    let ext = format!(
        "name: ext\nengine: {{kind: external, base_url: 'http://127.0.0.1:{port}'}}\nload: {{requests: 2, max_tokens: 4, prompt_tokens: 4}}\n"
    );
    let run = run_spec(&bin, &ext, out.path());
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(run.stderr.contains(&format!("http://127.0.0.1:{port}/health is unreachable")), "{}", run.stderr);
}

fn double_ctrl_c_kills_the_server_group_at_once() {
    let _lock = ONE_SERVER_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let bin = vllm_bin();
    let out = tempfile::tempdir().unwrap();
    let port = free_ports(1);
    let spec_path = out.path().join("spec.yaml");
    std::fs::write(&spec_path, spec("twice", port, "[1024]", "268435456")).unwrap();
    let child = run_command(&bin, &spec_path, out.path()).stderr(Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline
        && descendant_named(child.id(), "vllm").is_none()
        && descendant_named(child.id(), "python").is_none()
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    // A group of several processes to kill: the engine core has been spawned and has loaded the weights. Not
    // earlier: a process still reading its libraries from disk can take seconds to die even of SIGKILL (the
    // kernel delivers it after the read), which would time the kernel, not servelab.
    let servers = out.path().join("twice/r/servers");
    let loaded = || {
        let logs = std::fs::read_dir(&servers).into_iter().flatten().flatten().map(|e| e.path().join("server.log"));
        logs.into_iter().any(|l| std::fs::read_to_string(l).is_ok_and(|t| t.contains("Loading weights took")))
    };
    let core =
        wait_until(Duration::from_secs(120), || descendant_named(child.id(), "VLLM::EngineCor").is_some() && loaded());
    assert!(core, "the server's engine core did not load the weights within 120 s");
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let begin = Instant::now();
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(130), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(begin.elapsed() < Duration::from_secs(5));
    // The group's last processes are reaped by the kernel just after servelab exits.
    wait_until(Duration::from_secs(5), || nothing_left_in(&out.path().join("twice/r"), port));
    assert_nothing_left_in(&out.path().join("twice/r"), port);
}

fn an_interrupted_run_resumes_without_measuring_anything_twice() {
    let _lock = ONE_SERVER_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let bin = vllm_bin();
    let out = tempfile::tempdir().unwrap();
    let port = free_ports(1);
    let key = "sk-servelab-test-7f3a9c";
    let spec_text = load_spec("resume", port, "[1, 2]", 6, "  api_key_env: SERVELAB_TEST_API_KEY\n");
    let spec_path = out.path().join("spec.yaml");
    std::fs::write(&spec_path, &spec_text).unwrap();
    let dir = out.path().join("resume/r");
    let run = |extra: &[&str]| {
        let mut cmd = run_command(&bin, &spec_path, out.path());
        cmd.args(extra).env("SERVELAB_TEST_API_KEY", key).stderr(Stdio::piped()).stdout(Stdio::piped());
        cmd
    };
    // 1. Interrupt once the first server configuration is done and the second has started.
    let child = run(&[]).spawn().unwrap();
    let second_started = wait_until(Duration::from_secs(300), || starts(&dir) >= 2 && ok_points(&dir).len() >= 2);
    assert!(second_started, "the first server's points and the second start did not happen within 300 s");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGINT).unwrap();
    let first = child.wait_with_output().unwrap();
    assert_eq!(first.status.code(), Some(130), "{}", String::from_utf8_lossy(&first.stderr));
    let done_before: BTreeSet<String> = journal(&dir)
        .iter()
        .filter(|e| e["event"] == "point_done" && e["status"] == "ok")
        .map(|e| e["point"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(done_before.len(), 2, "the first server's two points were measured before the interrupt");
    // 2. Resume: only the second server starts, only its points run.
    let second = run(&["--resume", dir.to_str().unwrap()]).output().unwrap();
    assert_eq!(second.status.code(), Some(0), "{}", String::from_utf8_lossy(&second.stderr));
    assert_eq!(starts(&dir), 3, "2 starts before the interrupt + 1 on resume");
    let ok: Vec<String> = journal(&dir)
        .iter()
        .filter(|e| e["event"] == "point_done" && e["status"] == "ok")
        .map(|e| e["point"].as_str().unwrap().to_owned())
        .collect();
    let unique: BTreeSet<&String> = ok.iter().collect();
    assert_eq!(ok.len(), unique.len(), "no finished point ran again");
    assert_eq!(unique.len(), 4);
    // The final CSVs hold the whole grid, as an uninterrupted run would.
    let plan = Command::new(env!("CARGO_BIN_EXE_servelab"))
        .args(["plan", "--json", spec_path.to_str().unwrap()])
        .current_dir(ROOT)
        .output()
        .unwrap();
    let plan: serde_json::Value = serde_json::from_slice(&plan.stdout).unwrap();
    let planned: BTreeSet<String> = plan["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["points"].as_array().unwrap().iter().map(|p| p["id"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(unique.into_iter().cloned().collect::<BTreeSet<_>>(), planned);
    for g in plan["groups"].as_array().unwrap() {
        let csv =
            std::fs::read_to_string(dir.join(format!("concurrency_sweep-{}.csv", g["id"].as_str().unwrap()))).unwrap();
        let levels: Vec<&str> = csv.lines().skip(1).map(|l| l.split(',').next().unwrap()).collect();
        assert_eq!(levels, ["1", "2"], "{csv}");
    }
    let kv = std::fs::read_to_string(dir.join("kv_cache_scaling.csv")).unwrap();
    assert_eq!(kv.lines().count(), 3, "{kv}");
    // 3. Edit the spec (a new level): only the new points run, one start per server configuration.
    std::fs::write(&spec_path, spec_text.replace("concurrency: [1, 2]", "concurrency: [1, 2, 3]")).unwrap();
    let third = run(&["--resume", dir.to_str().unwrap()]).output().unwrap();
    assert_eq!(third.status.code(), Some(0), "{}", String::from_utf8_lossy(&third.stderr));
    assert_eq!(starts(&dir), 5);
    let ok_now = journal(&dir).iter().filter(|e| e["event"] == "point_done" && e["status"] == "ok").count();
    assert_eq!(ok_now, 6, "only the two new points were measured");
    // 4. A changed environment is refused unless --force.
    let manifest_path = dir.join("manifest.json");
    let mut manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest_path).unwrap()).unwrap();
    manifest["servelab_version"] = serde_json::json!("0.0.0-other");
    std::fs::write(&manifest_path, manifest.to_string()).unwrap();
    let refused = run(&["--resume", dir.to_str().unwrap()]).output().unwrap();
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--force"));
    let forced = run(&["--resume", dir.to_str().unwrap(), "--force"]).output().unwrap();
    assert_eq!(forced.status.code(), Some(0), "{}", String::from_utf8_lossy(&forced.stderr));
    assert_eq!(starts(&dir), 5, "everything was measured: nothing started");
    // The API key authenticated every request and was written nowhere.
    let requests = jsonl(&dir.join("requests.jsonl"));
    assert!(requests.iter().all(|r| r["error"].is_null()), "authenticated requests succeed");
    for entry in walk(&dir) {
        let bytes = std::fs::read(&entry).unwrap();
        assert!(!String::from_utf8_lossy(&bytes).contains(key), "the API key leaked into {}", entry.display());
    }
    assert_nothing_left_in(&dir, port);
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.file_type().unwrap().is_dir() {
            files.extend(walk(&e.path()));
        } else {
            files.push(e.path());
        }
    }
    files
}

fn main() {
    vllm_main(vec![
        (
            "engine_core_killed_during_load_fails_the_point_and_the_run_goes_on",
            engine_core_killed_during_load_fails_the_point_and_the_run_goes_on,
        ),
        (
            "a_bad_flag_and_a_server_that_never_gets_ready_fail_their_points_and_the_run_goes_on",
            a_bad_flag_and_a_server_that_never_gets_ready_fail_their_points_and_the_run_goes_on,
        ),
        ("fail_fast_stops_at_the_first_failure", fail_fast_stops_at_the_first_failure),
        ("problems_found_before_any_server_starts", problems_found_before_any_server_starts),
        ("double_ctrl_c_kills_the_server_group_at_once", double_ctrl_c_kills_the_server_group_at_once),
        (
            "an_interrupted_run_resumes_without_measuring_anything_twice",
            an_interrupted_run_resumes_without_measuring_anything_twice,
        ),
    ]);
}
