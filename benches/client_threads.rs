//! Client CPU per request at 1 and 2 client threads (`load.client_threads`), not a timed test: against
//! servelab-zero-endpoint on this machine, the same open-loop schedule (and the same closed loop) at each
//! thread count, alternated A B A B so drift in the machine's load falls on both. The client's CPU time is
//! this process's user + system time (/proc/self/stat) read around each phase alone.
//!
//!   cargo bench --bench client_threads     # writes bench/client-threads.md (scripts/bench/client-threads.sh)

use servelab::load::client::{self, Phase, RequestSpec};
use servelab::load::prompt::Workload;
use servelab::record::plan::{Arrival, OpenLoop};
use std::fmt::Write;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const PORT: u16 = 18611;
const TOKENS: u32 = 16;
const RATE: f64 = 2000.0;
const REQUESTS: u32 = 10_000;
const CONCURRENCY: u32 = 8;
const ROUNDS: usize = 3;

/// One phase's (CPU seconds, wall seconds, lateness p99 ms).
type Run = (f64, f64, f64);
/// A row: open loop or not, client threads, its phases.
type Row = (bool, u32, Vec<Run>);

/// This process's user + system CPU seconds (/proc reports clock ticks of USER_HZ = 100 on Linux).
fn cpu_s() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // Fields after the command name (which is in parentheses and may hold spaces): utime is the 14th field.
    let after = &stat[stat.rfind(')').expect("a command name") + 2..];
    let f: Vec<u64> = after.split(' ').skip(11).take(2).map(|x| x.parse().expect("a tick count")).collect();
    (f[0] + f[1]) as f64 / 100.0
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split(' ').take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn endpoint() -> Child {
    let bin = std::env::var_os("SERVELAB_ZERO_ENDPOINT")
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_servelab-zero-endpoint").into());
    let child = Command::new(bin)
        .args(["--port", &PORT.to_string(), "--threads", "1"])
        .stderr(Stdio::null())
        .spawn()
        .expect("start servelab-zero-endpoint");
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", PORT)).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

fn spec() -> Arc<RequestSpec> {
    Arc::new(RequestSpec {
        url: reqwest::Url::parse(&format!("http://127.0.0.1:{PORT}/v1/completions")).unwrap(),
        chat: false,
        model: "zero".into(),
        ignore_eos: true,
        stream: true,
        timeout: Duration::from_secs(60),
        workload: Arc::new(Workload::ids(1, 128, TOKENS, 4096)),
        record_max_tokens: false,
        api_key: None,
    })
}

fn phase(open: bool, threads: u32) -> Phase {
    Phase {
        point: "bench".into(),
        attempt: 0,
        requests: REQUESTS,
        duration: None,
        concurrency: if open { 0 } else { CONCURRENCY },
        warmup: false,
        salt: 2,
        open_loop: open.then_some(OpenLoop {
            rate: RATE,
            arrival: Arrival::Poisson,
            burstiness: None,
            min_requests: 0,
        }),
        schedule_seed: 7,
        threads,
    }
}

/// One phase: (CPU seconds, wall seconds, lateness p99 in ms for an open loop).
fn measure(rt: &tokio::runtime::Runtime, open: bool, threads: u32) -> Run {
    let (http, spec, phase) = (client::http_client(CONCURRENCY), spec(), phase(open, threads));
    rt.block_on(async {
        let (cpu0, t) = (cpu_s(), Instant::now());
        let r = client::run_phase(&http, &spec, &phase).await;
        let (cpu, wall) = (cpu_s() - cpu0, t.elapsed().as_secs_f64());
        let ok = r.records.iter().filter(|r| r.ok()).count();
        assert_eq!(ok as u32, REQUESTS, "every request must succeed");
        let mut late: Vec<f64> = r.records.iter().map(|r| (r.start_s - r.scheduled_s) * 1e3).collect();
        late.sort_by(f64::total_cmp);
        let p99 = if open { late[(late.len() * 99 / 100).min(late.len() - 1)] } else { f64::NAN };
        (cpu, wall, p99)
    })
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` and test discovery
    }
    let mut server = endpoint();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let load_before = loadavg();
    measure(&rt, false, 1); // warms the endpoint and the page cache; not counted
    let mut rows: Vec<Row> =
        [(true, 1), (true, 2), (false, 1), (false, 2)].into_iter().map(|(o, t)| (o, t, Vec::new())).collect();
    for _ in 0..ROUNDS {
        for (open, threads, runs) in &mut rows {
            runs.push(measure(&rt, *open, *threads));
            eprintln!("{} {threads}: {:?}", if *open { "open" } else { "closed" }, runs.last().unwrap());
        }
    }
    let load_after = loadavg();
    server.kill().ok(); // an endpoint that already exited needs nothing
    server.wait().ok();
    let out = std::env::var("SERVELAB_BENCH_MD")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/bench/client-threads.md").to_owned());
    std::fs::write(&out, render(&rows, &load_before, &load_after)).unwrap();
    eprintln!("wrote {out}");
}

fn render(rows: &[Row], before: &str, after: &str) -> String {
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let per_req = |runs: &[Run]| median(runs.iter().map(|r| r.0 / f64::from(REQUESTS) * 1e6).collect());
    let mut s = String::new();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    writeln!(s, "# Client CPU per request at 1 and 2 client threads\n").ok();
    writeln!(
        s,
        "Made by `scripts/bench/client-threads.sh` (`cargo bench --bench client_threads`) on {cores} cores shared with \
         other work (load average {before} before, {after} after: 1, 5, 15 minutes), {}. The client is this process; its CPU \
         time (user + system, /proc/self/stat) is read around each phase alone, against `servelab-zero-endpoint` \
         (one loop, same machine, not pinned). Each phase sends {REQUESTS} requests of 128 prompt ids and {TOKENS} \
         streamed tokens: the open loop on one Poisson schedule at {RATE} requests/s (seed 7, the same schedule \
         at every thread count), the closed loop at concurrency {CONCURRENCY}. Each row is the median of {ROUNDS} \
         phases, the rows alternated A B A B so the machine's drift falls on both; ratios are within this run. \
         One thread here is one single-threaded runtime for both loops (in `servelab run`, a closed loop at \
         `client_threads: 1` runs on servelab's own runtime instead).\n",
        chrono::Utc::now().format("%Y-%m-%d")
    ).ok();
    writeln!(s, "| loop | client threads | CPU µs per request | vs 1 thread | wall s | lateness p99 |").ok();
    writeln!(s, "|---|---:|---:|---:|---:|---:|").ok();
    for (open, threads, runs) in rows {
        let base = rows.iter().find(|r| r.0 == *open && r.1 == 1).map(|r| per_req(&r.2)).unwrap_or(f64::NAN);
        let wall = median(runs.iter().map(|r| r.1).collect());
        let late = if *open { format!("{:.3} ms", median(runs.iter().map(|r| r.2).collect())) } else { "-".into() };
        writeln!(
            s,
            "| {} | {threads} | {:.1} | {:.2}× | {wall:.2} | {late} |",
            if *open { "open" } else { "closed" },
            per_req(runs),
            per_req(runs) / base
        )
        .ok();
    }
    writeln!(
        s,
        "\nThe closed loop's figure is the client's work per request: a second thread costs what its own \
         runtime, connection pool and timer add. The open loop's is not work: its dispatcher yields in a loop \
         from 2 ms before each arrival (so that it sends on time without sleeping on tokio's 1 ms timer), and at \
         {RATE} requests/s every gap is shorter than that, so each dispatcher thread is busy for the whole phase \
         and the CPU per request is about threads × wall ÷ requests, whatever the requests cost. Lateness p99 is \
         shown, not judged: on these oversubscribed cores it is set by the machine. How far N threads scale \
         past one core's rate is not measured here ({cores} cores shared with the endpoint and other work); \
         that figure belongs to the H200 host."
    )
    .ok();
    s
}
