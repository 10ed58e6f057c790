//! The seam's in-process fake: no process, no port. It reads the same fault flags as
//! `servelab-zero-endpoint` from the group's argv, so one spec runs against the fake and against the real
//! executor with the zero endpoint, and both must leave the same journal:
//!   --fail-start     the start fails ("fake engine refused to start")
//!   --never-ready    the start fails as not ready
//!   --die-after N    the server dies once N completions were answered (its point fails, the rest are not run)
//!   --http-500       every request fails with HTTP 500
//!   --capacity N     at most N requests stream at once (throughput grows with concurrency up to N)
//!   --max-num-seqs N as vLLM's flag: at most N at once, in place of `--capacity` (so a tune over a vLLM flag
//!                    picks a configuration whose argv, and `recommended.yaml`, vLLM itself accepts)
//!   --start-delay-ms N   a start takes this long
//!   --peak CX,CY  a planted surface over the tuned flags `--x` and `--y` (absent: vLLM's defaults, factor
//!                 1): every time shrinks by 1 + height × exp(−d² / 2 width²), d the distance from the peak;
//!                 `--height H` (default 1), `--width W` (default 1.5)
//!                 (a coordinate `_`, as in `--peak 2,_`: that flag plays no part in the surface)
//!   --defaults x=0,y=0   the values the fake resolves for `--x`/`--y` when they are left out (vLLM's
//!                 defaults), and logs as vLLM does: "non-default args: {...}" for those given, "Defaulting x
//!                 to 0 for fake usage context." for those resolved
//!   --noise-pct P between-start noise: each start of a group is P% faster or slower (normal, drawn from
//!                 `--seed S`, the group and how many times it was started in this process), its repeats alike
//!   --phase-noise-pct Q  within-start noise: each measured phase of n requests is Q/√n % faster or slower
//!                 (normal, drawn from the start's own stream), so a short phase strays more than a full one
//! Records are synthetic and deterministic (1 ms per token); they exercise control flow and never stand
//! for a measurement.

use super::load::PointOutput;
use super::seam::{Driver, Engine, Measured};
// splitmix64, so a planted surface and its noise are the same on every machine.
use crate::draw::{normal, splitmix};
use crate::plan::{Point, ServerGroup};
use crate::probe::MemoryProbe;
use crate::record::{ErrorKind, PointRecord, RequestError, RequestRecord, ServerRecord, Status};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// A fake server: its record and how many completions it has answered.
pub struct FakeServer {
    record: ServerRecord,
    answered: u64,
    die_after: Option<u64>,
    http_500: bool,
    capacity: u32,
    /// How much faster than 1 ms a token this start serves (the planted surface and its start's noise).
    speed: f64,
    /// `--phase-noise-pct` and this start's stream to draw each phase's noise from.
    phase_noise: Option<(f64, u64)>,
}

fn arg_f64(argv: &[String], flag: &str) -> Option<f64> {
    argv.iter().position(|a| a == flag).and_then(|i| argv.get(i + 1)).and_then(|v| v.parse().ok())
}

/// Starts of each (seed, group) in this process, so each start draws its own noise.
static STARTS: std::sync::Mutex<std::collections::BTreeMap<(u64, String), u64>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

/// The planted surface at the group's flags times this start's noise (1 without `--peak`/`--noise-pct`), and
/// the start's stream for its phases' noise.
fn speed(argv: &[String]) -> (f64, u64) {
    let surface = match argv.iter().position(|a| a == "--peak").and_then(|i| argv.get(i + 1)) {
        Some(peak) => {
            let c: Vec<Option<f64>> = peak.split(',').map(|v| v.parse().ok()).collect();
            let at = |flag: &str, k: usize| match c.get(k) {
                Some(None) => None,
                at => arg_f64(argv, flag).map(|v| (v - at.copied().flatten().unwrap_or(0.0)).powi(2)),
            };
            let (dx, dy) = (at("--x", 0), at("--y", 1));
            let w = arg_f64(argv, "--width").unwrap_or(1.5);
            match dx.or(dy) {
                None => 1.0,
                Some(_) => {
                    let d2 = dx.unwrap_or(0.0) + dy.unwrap_or(0.0);
                    1.0 + arg_f64(argv, "--height").unwrap_or(1.0) * (-d2 / (2.0 * w * w)).exp()
                }
            }
        }
        None => 1.0,
    };
    let pct = arg_f64(argv, "--noise-pct").unwrap_or(0.0);
    let seed = arg(argv, "--seed").unwrap_or(0);
    let key = flags_key(argv);
    let n = {
        let mut starts = STARTS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = starts.entry((seed, key.clone())).or_insert(0);
        *n += 1;
        *n
    };
    let mut s = seed ^ n.wrapping_mul(0xA24B_AED4_963E_E407);
    for b in key.bytes() {
        s = splitmix(&mut s) ^ u64::from(b);
    }
    let z = normal(&mut s);
    (surface * (1.0 + pct / 100.0 * z).max(0.1), s)
}

/// What tells one configuration from another for the noise draw: its flags, not the binary's path or the port
/// (they differ between checkouts and slots, and a draw keyed on them made a planted test pass in one
/// checkout and fail in another).
fn flags_key(argv: &[String]) -> String {
    let mut key = String::new();
    let mut rest = argv.iter().skip(1);
    while let Some(a) = rest.next() {
        if a == "--port" {
            rest.next();
            continue;
        }
        key.push_str(a);
        key.push('\0');
    }
    key
}

/// The argv with `--defaults`' values added for the surface flags left out, and the startup log the fake
/// writes of them in vLLM's words.
fn resolved(argv: &[String]) -> (Vec<String>, String) {
    let mut argv = argv.to_vec();
    let mut given = Vec::new();
    for flag in ["x", "y"] {
        if let Some(v) = argv.iter().position(|a| a == &format!("--{flag}")).and_then(|i| argv.get(i + 1)) {
            given.push(format!("'{flag}': {v}"));
        }
    }
    let mut log =
        format!("(APIServer pid=0) INFO 01-01 00:00:00 [api_utils.py:1] non-default args: {{{}}}\n", given.join(", "));
    let defaults = argv.iter().position(|a| a == "--defaults").and_then(|i| argv.get(i + 1)).cloned();
    for (flag, v) in defaults.iter().flat_map(|d| d.split(',')).filter_map(|kv| kv.split_once('=')) {
        if !argv.iter().any(|a| a == &format!("--{flag}")) {
            log.push_str(&format!("(APIServer pid=0) DEBUG 01-01 00:00:00 [arg_utils.py:1] Defaulting {flag} to {v} for fake usage context.\n"));
            argv.extend([format!("--{flag}"), v.to_owned()]);
        }
    }
    (argv, log)
}

fn arg(argv: &[String], flag: &str) -> Option<u64> {
    argv.iter().position(|a| a == flag).and_then(|i| argv.get(i + 1)).and_then(|v| v.parse().ok())
}

pub struct FakeEngine<'a> {
    pub probe: Arc<dyn MemoryProbe>,
    pub interrupted: &'a AtomicBool,
}

impl Engine for FakeEngine<'_> {
    type Server = FakeServer;

    async fn start<'s>(&'s self, group: &'s ServerGroup, _dir: &'s Path) -> Result<FakeServer, ServerRecord> {
        let argv = &group.server.argv;
        let mut record = super::server::new_record(group, self.probe.as_ref(), None);
        if let Some(ms) = arg(argv, "--start-delay-ms") {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        let refuse = |record: &mut ServerRecord, why: &str| {
            record.status = Status::Failed;
            record.error = Some(why.to_owned());
        };
        if self.interrupted.load(Ordering::SeqCst) {
            record.status = Status::Interrupted;
            record.error = Some("stopped by Ctrl-C before the server was ready".to_owned());
            return Err(record);
        }
        if argv.iter().any(|a| a == "--fail-start") {
            refuse(&mut record, "exited with code 1 before it was ready: fake engine refused to start");
            return Err(record);
        }
        if argv.iter().any(|a| a == "--never-ready") {
            refuse(&mut record, "not ready within ready_timeout");
            return Err(record);
        }
        record.ready_s = Some(0.0);
        record.served_model = Some("zero".to_owned());
        let (resolved, log) = resolved(argv);
        record.log.args = crate::engine::logargs::parse(&log);
        let (speed, stream) = speed(&resolved);
        Ok(FakeServer {
            record,
            answered: 0,
            die_after: arg(argv, "--die-after"),
            http_500: argv.iter().any(|a| a == "--http-500"),
            capacity: arg(argv, "--max-num-seqs").or(arg(argv, "--capacity")).map_or(u32::MAX, |c| c.max(1) as u32),
            speed,
            phase_noise: arg_f64(argv, "--phase-noise-pct").map(|q| (q, stream)),
        })
    }

    async fn stop<'s>(&'s self, server: FakeServer, _group: &'s ServerGroup) -> ServerRecord {
        server.record
    }

    fn record<'s>(&self, server: &'s FakeServer) -> &'s ServerRecord {
        &server.record
    }
}

/// Drives fake servers; `measure_delay` makes each point take real time, so groups in flight at once
/// interleave.
pub struct FakeDriver {
    pub measure_delay: Duration,
}

impl Driver for FakeDriver {
    type Server = FakeServer;

    async fn warmup<'s>(
        &'s self,
        _server: &'s mut FakeServer,
        _group: &'s ServerGroup,
    ) -> Option<Result<usize, super::load::WarmupError>> {
        None
    }

    async fn measure<'s>(
        &'s self,
        server: &'s mut FakeServer,
        group: &'s ServerGroup,
        point: &'s Point,
        attempt: u32,
    ) -> Measured {
        tokio::time::sleep(self.measure_delay).await;
        let out = phase(server, group, point, attempt);
        let died = server.die_after.is_some_and(|n| server.answered >= n) && out.requests.iter().any(|r| !r.ok());
        Measured { out, died }
    }
}

/// One point's synthetic records: waves of `concurrency` requests of `max_tokens` tokens, 1 ms a token,
/// slowed by the waves a capacity below the concurrency needs; an open loop sends at its rate.
fn phase(server: &mut FakeServer, group: &ServerGroup, point: &Point, attempt: u32) -> PointOutput {
    let c = point.client.clone().expect("the schedule measures only points with a client");
    let tokens = c.max_tokens.max(1);
    let conc = c.concurrency.max(1);
    let slow = f64::from(conc.div_ceil(server.capacity.min(conc))) / server.speed;
    let e2e = f64::from(tokens) * 1e-3 * slow;
    let count = match (c.duration_s, c.rate()) {
        (Some(d), Some(r)) => (d * r).ceil() as u32,
        (Some(d), None) => ((d / e2e).ceil() as u32).max(1) * conc,
        (None, _) => c.requests.max(1),
    };
    let slow = match &mut server.phase_noise {
        Some((q, stream)) => slow / (1.0 + *q / 100.0 / f64::from(count).sqrt() * normal(stream)).max(0.1),
        None => slow,
    };
    let e2e = f64::from(tokens) * 1e-3 * slow;
    let mut requests = Vec::new();
    for index in 0..c.warmup + count {
        let warmup = index < c.warmup;
        let i = if warmup { index } else { index - c.warmup };
        let scheduled = match c.rate() {
            Some(r) => f64::from(i) / r,
            None => f64::from(i / conc) * e2e,
        };
        let mut r = RequestRecord {
            point: point.id.clone(),
            attempt,
            index,
            warmup,
            scheduled_s: scheduled,
            start_s: scheduled,
            first_token_s: Some(scheduled + 1e-3 * slow),
            end_s: scheduled + e2e,
            chunk_us: (1..tokens).map(|k| (k as f64 * 1e3 * slow) as u32).collect(),
            chunks: tokens,
            prompt_tokens: Some(c.prompt_tokens),
            completion_tokens: Some(tokens),
            sent_tokens: Some(c.prompt_tokens),
            http_status: Some(200),
            ..Default::default()
        };
        let dead = server.die_after.is_some_and(|n| server.answered >= n);
        if dead || server.http_500 {
            let (kind, status, message) = match dead {
                true => (ErrorKind::Connect, None, "connection refused"),
                false => (ErrorKind::Http(500), Some(500), "HTTP 500"),
            };
            r.first_token_s = None;
            r.chunk_us.clear();
            r.chunks = 0;
            r.completion_tokens = None;
            r.end_s = r.start_s;
            r.http_status = status;
            r.error = Some(RequestError { kind, message: message.to_owned() });
        } else {
            server.answered += 1;
        }
        requests.push(r);
    }
    let wall_s = requests.iter().filter(|r| !r.warmup).map(|r| r.end_s).fold(0.0, f64::max);
    let record = PointRecord {
        attempt,
        repeat: point.repeat,
        vars: point.vars.clone(),
        model: "zero".to_owned(),
        started_at: chrono::Local::now().to_rfc3339(),
        warmup_requests: c.warmup,
        ..PointRecord::measured(point.id.clone(), group.id.clone(), c.clone(), wall_s)
    };
    PointOutput { point: record, requests, samples: Vec::new() }
}

/// The most request records [`synthetic`] makes in all (a 10,000-point plan is rendered from a sample).
const SYNTHETIC_REQUESTS: usize = 50_000;

/// Records the plan could leave, made up without a server: every group started ok, with memory and KV
/// figures, and every load point measured ok with a few requests each. The preflight renders the user's
/// report templates against them, so a template that names a variable the reports do not have fails in
/// seconds, before any server starts. Never written anywhere and never a measurement.
pub(crate) fn synthetic(plan: &crate::plan::Plan) -> crate::record::Recorded {
    let mut rec = crate::record::Recorded {
        metrics_version: crate::record::manifest::METRICS_VERSION,
        ..crate::record::Recorded::default()
    };
    let mut budget = SYNTHETIC_REQUESTS;
    for (i, group) in plan.groups.iter().enumerate() {
        let mut record = super::server::new_record(group, &crate::probe::Procfs, None);
        let scale = (i + 1) as f64;
        let reading = |t_s| crate::record::memory::MemSample {
            t_s,
            device_used_mb: Some(1000.0 * scale),
            device_total_mb: Some(80_000.0),
            server_gpu_mb: Some(900.0 * scale),
            server_rss_mb: Some(500.0 * scale),
            server_pss_mb: Some(450.0 * scale),
            host_available_mb: Some(16_000.0),
            processes: 2,
            ..Default::default()
        };
        record.ready_s = Some(1.0);
        record.served_model = Some("synthetic".to_owned());
        record.version = Some("synthetic".to_owned());
        record.at_ready = Some(reading(1.0));
        record.timeline = vec![reading(0.5)];
        record.log.weights_gib = Some(0.5);
        record.log.model_load_s = Some(0.5);
        record.log.available_kv_gib = Some(scale);
        record.log.kv_cache_tokens = Some(1024 * (i as u64 + 1));
        record.log.max_concurrency_tokens = group.server.max_model_len;
        record.log.max_concurrency = Some(2.0 * scale);
        let mut server = FakeServer {
            record: record.clone(),
            answered: 0,
            die_after: None,
            http_500: false,
            capacity: u32::MAX,
            speed: 1.0,
            phase_noise: None,
        };
        rec.servers.push(record);
        for point in &group.points {
            let Some(c) = &point.client else { continue };
            // A few requests each, whatever the phase's length: the templates need figures, not precision.
            let mut c = c.clone();
            c.duration_s = None;
            c.requests = c.concurrency.saturating_mul(2).clamp(8, 256);
            c.warmup = c.warmup.min(1);
            let n = (c.requests + c.warmup) as usize;
            if n > budget {
                return rec;
            }
            budget -= n;
            let sample = Point { client: Some(c), ..point.clone() };
            let out = phase(&mut server, group, &sample, 0);
            rec.points.push(out.point);
            rec.requests.extend(out.requests);
        }
    }
    rec
}
