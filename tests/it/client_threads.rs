//! `load.client_threads` end to end against the zero endpoint (`kind: command`, which records every body it
//! receives): at 1, 2 and 3 threads, open and closed loop, every planned request is sent once (unique indices,
//! the exact count, as many distinct bodies at the endpoint), the records are in the order they were sent,
//! open-loop sends happen at or after their scheduled instant, and the totals equal one thread's.

use crate::common;
use common::{free_ports, jsonl};
use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

const ZERO: &str = env!("CARGO_BIN_EXE_servelab-zero-endpoint");

/// One point's measured records, by its `threads` grid value.
type ByThreads = BTreeMap<u64, Vec<serde_json::Value>>;

/// Runs a spec whose `load` is `load` (with `client_threads: "{{ threads }}"` over `threads`); returns the
/// records of each point and the bodies the endpoint received.
fn run(name: &str, load: &str, threads: &str, itl_us: u32) -> (ByThreads, Vec<serde_json::Value>) {
    let tmp = tempfile::tempdir().unwrap();
    let (spec_path, out, bodies) = (tmp.path().join("s.yaml"), tmp.path().join("out"), tmp.path().join("bodies"));
    let port = free_ports(1);
    let spec = format!(
        "name: {name}\nengine:\n  kind: command\n  command: [\"{ZERO}\", \"--port\", \"{{{{ port }}}}\", \"--record-bodies\", \"{}\", \"--itl-us\", \"{itl_us}\"]\n  port: {port}\n  ready_timeout: 3s\n  stop_timeout: 1s\ngrid:\n  threads: {threads}\nload:\n{load}  client_threads: \"{{{{ threads }}}}\"\n  max_tokens: 8\n  prompt_tokens: 16\n  vocab_size: 32000\n  warmup: 0\n  server_warmup: 0s\nmeasure: {{memory: procfs}}\n",
        bodies.display()
    );
    std::fs::write(&spec_path, spec).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_servelab"))
        .args(["run", spec_path.to_str().unwrap(), "--out", out.to_str().unwrap(), "--run-id", "r"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let dir = out.join(name).join("r");
    let threads_of: BTreeMap<String, u64> = jsonl(&dir.join("points.jsonl"))
        .iter()
        .map(|p| (p["point"].as_str().unwrap().to_owned(), p["vars"]["threads"].as_u64().unwrap()))
        .collect();
    let mut by = ByThreads::new();
    for r in jsonl(&dir.join("requests.jsonl")) {
        by.entry(threads_of[r["point"].as_str().unwrap()]).or_default().push(r);
    }
    let got = std::fs::read_to_string(&bodies).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let counts = threads.trim_matches(['[', ']']).split(',').map(|t| t.trim().parse().unwrap()).collect();
    cells_apart(&dir, &counts);
    (by, got)
}

/// Each thread count is a cell of its own in the reports, one repeat each, never pooled as repeats of one,
/// and the CSV's `client_threads` column tells the rows apart (as the table's column does for a closed loop).
fn cells_apart(dir: &std::path::Path, counts: &BTreeSet<u64>) {
    let csv = ["rate_sweep.csv", "concurrency_sweep.csv"].map(|f| dir.join(f)).into_iter().find(|p| p.exists());
    let csv = csv.expect("a sweep CSV");
    let mut reader = csv::Reader::from_path(&csv).unwrap();
    let header = reader.headers().unwrap().clone();
    let col = |k: &str| header.iter().position(|h| h == k).unwrap();
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), counts.len(), "one row per thread count: {rows:?}");
    assert!(rows.iter().all(|r| &r[col("repeats")] == "1"), "one repeat per cell: {rows:?}");
    let threads: BTreeSet<u64> = rows.iter().map(|r| r[col("client_threads")].parse().unwrap()).collect();
    assert_eq!(&threads, counts, "the rows' client_threads: {rows:?}");
    if csv.ends_with("concurrency_sweep.csv") {
        let md = std::fs::read_to_string(dir.join("concurrency_sweep.md")).unwrap();
        let c = rows[0][col("concurrency")].to_owned();
        assert!(md.contains("| concurrency | client threads |"), "{md}");
        assert!(counts.iter().all(|t| md.contains(&format!("\n| {c} | {t} |"))), "a row per count: {md}");
    }
}

fn f(r: &serde_json::Value, key: &str) -> f64 {
    r[key].as_f64().unwrap()
}

/// Records in the order they were sent: by index for a closed loop on one thread (servelab's own runtime,
/// whose workers may claim an index and send it a moment after another worker's later one), else by send
/// instant.
fn in_order(recs: &[serde_json::Value], closed_on_one: bool) -> bool {
    match closed_on_one {
        true => recs.windows(2).all(|w| w[0]["index"].as_u64() < w[1]["index"].as_u64()),
        false => recs.windows(2).all(|w| f(&w[0], "start_s") <= f(&w[1], "start_s")),
    }
}

/// Each index once and no other; records in the order they were sent; no error.
fn sent_once_in_order(recs: &[serde_json::Value], n: usize, closed_on_one: bool, what: &str) {
    let indices: BTreeSet<u64> = recs.iter().map(|r| r["index"].as_u64().unwrap()).collect();
    assert_eq!(recs.len(), n, "{what}: the planned count");
    assert_eq!(indices, (0..n as u64).collect(), "{what}: each index once");
    assert!(in_order(recs, closed_on_one), "{what}: records in send order");
    assert!(recs.iter().all(|r| r["error"].is_null() && r["completion_tokens"] == 8), "{what}: all complete");
}

/// Every body the endpoint received is a distinct prompt (prompts differ by index), one per record.
fn bodies_once(bodies: &[serde_json::Value], records: usize) {
    let prompts: BTreeSet<String> = bodies.iter().map(|b| b["prompt"].to_string()).collect();
    assert_eq!(bodies.len(), records, "one body per record");
    assert_eq!(prompts.len(), records, "no prompt sent twice");
}

#[test]
fn an_open_loop_on_1_2_3_threads_sends_each_arrival_once_on_its_schedule() {
    let n = 240;
    let load = format!("  rate: 400\n  arrival: constant\n  requests: {n}\n");
    let (by, bodies) = run("threads-open", &load, "[1, 2, 3]", 0);
    assert_eq!(by.keys().copied().collect::<Vec<_>>(), [1, 2, 3]);
    let schedule = |recs: &[serde_json::Value]| -> BTreeMap<u64, String> {
        recs.iter().map(|r| (r["index"].as_u64().unwrap(), format!("{:.9}", f(r, "scheduled_s")))).collect()
    };
    let one = schedule(&by[&1]);
    for (threads, recs) in &by {
        let what = format!("{threads} threads");
        sent_once_in_order(recs, n, false, &what);
        assert_eq!(schedule(recs), one, "{what}: the same schedule as one thread's");
        for r in recs {
            let late = f(r, "start_s") - f(r, "scheduled_s");
            // Never early; late by at most a second even on a loaded 2-core machine.
            assert!((0.0..1.0).contains(&late), "{what}: request {} sent {late} s after its time", r["index"]);
        }
        let tokens: u64 = recs.iter().map(|r| r["completion_tokens"].as_u64().unwrap()).sum();
        assert_eq!(tokens, 8 * n as u64, "{what}: totals equal one thread's");
    }
    bodies_once(&bodies, 3 * n);
}

#[test]
fn a_closed_loop_on_1_2_3_threads_sends_exactly_its_budget() {
    let n = 60;
    let load = format!("  concurrency: 6\n  requests: {n}\n  exact_requests: true\n");
    let (by, bodies) = run("threads-closed", &load, "[1, 2, 3]", 0);
    assert_eq!(by.keys().copied().collect::<Vec<_>>(), [1, 2, 3]);
    for (threads, recs) in &by {
        sent_once_in_order(recs, n, *threads == 1, &format!("{threads} threads"));
        let prompt: u64 = recs.iter().map(|r| r["sent_tokens"].as_u64().unwrap()).sum();
        assert_eq!(prompt, 16 * n as u64);
    }
    bodies_once(&bodies, 3 * n);
}

/// Phases by time on several threads (the open loop's tokens 20 ms apart, so requests are open when the duration
/// ends): tail requests keep the load on after the duration, and still every
/// index is used once (an open loop's measured ones before its tail ones: tail indices are taken as they are
/// sent; a closed loop decides tail or not when it claims an index, so two threads may claim across the
/// deadline in either order).
#[test]
fn phases_by_time_on_threads_number_every_request_once() {
    for (name, load, threads, itl_us) in [
        ("threads-open-time", "  rate: 200\n  duration: 1s\n", 2u64, 20_000),
        ("threads-closed-time", "  concurrency: 3\n  duration: 1s\n", 3, 2000),
    ] {
        let (by, bodies) = run(name, load, &format!("[{threads}]"), itl_us);
        let recs = &by[&threads];
        let n = recs.len();
        assert!(n > 20, "{name}: {n} requests in a second");
        let indices: BTreeSet<u64> = recs.iter().map(|r| r["index"].as_u64().unwrap()).collect();
        assert_eq!(indices, (0..n as u64).collect(), "{name}: each index once");
        let measured = recs.iter().filter(|r| r["tail"] != true).count() as u64;
        let open = name.contains("open");
        assert!(
            !open || recs.iter().all(|r| (r["tail"] == true) == (r["index"].as_u64().unwrap() >= measured)),
            "{name}: measured before tail"
        );
        // A tail arrival is due every few ms after the duration, and sent while a measured request is open. So
        // one must exist when a measured request stayed open well past the later of the duration and the last
        // measured send (a client stalled past every open request on a loaded machine has nothing to keep on).
        let measured_recs = || recs.iter().filter(|r| r["tail"] != true);
        let last_end = measured_recs().map(|r| f(r, "end_s")).fold(0.0, f64::max);
        let last_sent = measured_recs().map(|r| f(r, "start_s")).fold(1.0, f64::max);
        let kept_open = open && last_end > last_sent + 0.05;
        assert!(
            recs.iter().any(|r| r["tail"] == true) || !kept_open,
            "{name}: the load stays on after the duration (a measured request open until {last_end} s)"
        );
        assert!(!open || last_end > 1.05, "{name}: requests of 160 ms are open at the duration");
        assert!(in_order(recs, false), "{name}: send order");
        bodies_once(&bodies, n);
    }
}
