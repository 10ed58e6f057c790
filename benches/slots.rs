//! Benchmark of slots (not a timed test): the same four-configuration spec run one group after the other and
//! on `--parallel 2`, in the order serial, parallel, serial, parallel, so drift falls on both. The engine is
//! `servelab-zero-endpoint` with a start that takes 2 s (`--start-delay-ms`), as a server start dominates a
//! real sweep; each group then measures two short points.
//!
//!   cargo bench --bench slots            # writes bench/slots.md
//!
//! Figures: wall time of each run, the ratio parallel / serial, and, from each run's journal, the busy
//! interval of every slot (server_start to server_end).
#![expect(clippy::let_underscore_must_use, reason = "writes into a String cannot fail")]

use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

const DELAY_MS: u32 = 2000;

fn spec(port: u16) -> String {
    let zero = env!("CARGO_BIN_EXE_servelab-zero-endpoint");
    format!(
        "name: slots\nengine:\n  kind: command\n  command: [\"{zero}\", \"--port\", \"{{{{ port }}}}\", \"--start-delay-ms\", \"{DELAY_MS}\", \"--capacity\", \"{{{{ capacity }}}}\", \"--itl-us\", \"1000\"]\n  port: {port}\n  ready_timeout: 30s\n  stop_timeout: 2s\ngrid:\n  capacity: [1, 2, 3, 4]\n  concurrency: [1, 2]\nload:\n  concurrency: \"{{{{ concurrency }}}}\"\n  requests: 8\n  exact_requests: true\n  max_tokens: 16\n  prompt_tokens: 8\n  warmup: 1\n  server_warmup: 0s\nmeasure: {{memory: procfs}}\n"
    )
}

/// (slot, start, end) of each server start in a run folder's journal, seconds from the first start.
fn intervals(dir: &Path) -> Vec<(u64, f64, f64)> {
    let text = std::fs::read_to_string(dir.join("journal.jsonl")).unwrap_or_default();
    let events: Vec<serde_json::Value> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let t = |e: &serde_json::Value| {
        chrono::DateTime::parse_from_rfc3339(e["at"].as_str().unwrap_or_default())
            .map_or(0.0, |d| d.timestamp_micros() as f64 / 1e6)
    };
    let starts: Vec<&serde_json::Value> = events.iter().filter(|e| e["event"] == "server_start").collect();
    let t0 = starts.iter().map(|e| t(e)).fold(f64::INFINITY, f64::min);
    let end_of = |g: &serde_json::Value| events.iter().find(|e| e["event"] == "server_end" && e["group"] == *g).map(t);
    starts
        .iter()
        .map(|s| {
            let slot = s["slot"].as_u64().unwrap_or(0);
            // A serial run writes no server_end: its next start (or the last point) ends it.
            let end = end_of(&s["group"]).unwrap_or(f64::NAN);
            (slot, t(s) - t0, end - t0)
        })
        .collect()
}

fn run(root: &Path, id: &str, extra: &[&str]) -> (f64, PathBuf) {
    let spec_path = root.join("spec.yaml");
    let out = root.join("out");
    let started = Instant::now();
    let status = Command::new(env!("CARGO_BIN_EXE_servelab"))
        .args([
            "run",
            spec_path.to_str().unwrap_or_default(),
            "--out",
            out.to_str().unwrap_or_default(),
            "--run-id",
            id,
        ])
        .args(extra)
        .stderr(std::process::Stdio::null())
        .status();
    let wall = started.elapsed().as_secs_f64();
    assert!(status.is_ok_and(|s| s.success()), "servelab run {id} failed");
    (wall, out.join("slots").join(id))
}

fn main() {
    let tmp = tempfile::tempdir().expect("a temporary folder");
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map_or(18600, |a| a.port());
    std::fs::write(tmp.path().join("spec.yaml"), spec(port)).expect("the spec");
    let mut rows = Vec::new();
    for (k, (id, extra)) in [
        ("serial-1", &[][..]),
        ("parallel-1", &["--parallel", "2"][..]),
        ("serial-2", &[][..]),
        ("parallel-2", &["--parallel", "2"][..]),
    ]
    .into_iter()
    .enumerate()
    {
        let (wall, dir) = run(tmp.path(), id, extra);
        eprintln!("{id}: {wall:.2} s");
        rows.push((k, id, wall, intervals(&dir)));
    }
    let wall = |prefix: &str| -> Vec<f64> { rows.iter().filter(|r| r.1.starts_with(prefix)).map(|r| r.2).collect() };
    let (serial, parallel) = (wall("serial"), wall("parallel"));
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let mut s = String::new();
    let _ = writeln!(s, "# Slots: four server groups, serial and on `--parallel 2`\n");
    let _ = writeln!(
        s,
        "`cargo bench --bench slots` (rewrites this file). Four configurations of `servelab-zero-endpoint` whose start \
         takes {DELAY_MS} ms, each measuring two short points (8 requests at concurrency 1 and 2, 16 tokens at 1 ms \
         a token), run serial, parallel, serial, parallel on a {}-core machine. Wall time is the whole \
         `servelab run` process. What it shows is the scheduling, not a server's figures.\n",
        std::thread::available_parallelism().map_or(1, usize::from)
    );
    let _ = writeln!(s, "| run | wall s | slots busy (slot: start–end s from the first start) |");
    let _ = writeln!(s, "|---|---:|---|");
    for (_, id, w, iv) in &rows {
        let busy: Vec<String> = iv
            .iter()
            .map(|(slot, a, b)| if b.is_nan() { format!("{slot}: {a:.2}–") } else { format!("{slot}: {a:.2}–{b:.2}") })
            .collect();
        let _ = writeln!(s, "| {id} | {w:.2} | {} |", busy.join(", "));
    }
    let _ = writeln!(
        s,
        "\nMean wall time: serial {:.2} s, parallel {:.2} s; parallel / serial = **{:.2}** (two slots: 0.5 would be \
         perfect; starts and stops overlap, the client and the endpoints share the cores).",
        mean(&serial),
        mean(&parallel),
        mean(&parallel) / mean(&serial)
    );
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/slots.md");
    std::fs::write(&path, s).expect("bench/slots.md");
    eprintln!("wrote {}", path.display());
}
