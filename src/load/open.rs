//! The open-loop dispatcher: requests leave at the absolute times of a pre-drawn schedule, whether or not the
//! server keeps up. Each record keeps its scheduled and its actual send time (the first poll of its task);
//! lateness is derived afterwards.
//!
//! A phase runs on a thread of its own, on a single-threaded runtime that holds its dispatcher, its requests
//! and their connections (a client of its own): nothing else is scheduled there, and no work-stealing moves
//! the dispatcher away from the requests it sends. On a shared multi-threaded runtime, a 2-core machine sent
//! 5–15% of arrivals at 100/s over 1 ms late; one core reads some 10,000 short streams a second
//! (bench/client.md), and a cell the thread cannot keep up with is flagged as not delivered.
//!
//! The dispatcher is a task on the same runtime as its requests, not a thread. tokio's timer is
//! millisecond-grained, so it sleeps on the timer until [`FINE`] before an arrival and then yields in a
//! loop: every yield lets the runtime run the requests in flight and poll its sockets, and the dispatcher
//! sees its time within one scheduler turn. A dispatch thread that slept and then spun (the first design)
//! competed with the runtime for the core: on one core, at 10,000 arrivals/s it spun all the time, the
//! runtime got half a core in time slices of milliseconds, and the client reached 1,600 requests/s; a thread
//! that only slept was woken up to 2 ms late behind the busy runtime thread.
//!
//! Like the closed loop, a phase by time keeps the load on after its duration — tail arrivals, drawn on from
//! the same stream and excluded from every figure — until every request sent in time has finished, so the
//! last measured requests do not finish on an emptying server.

use super::arrival;
use super::client::{Phase, PhaseResult, RequestSpec, body_of, one_request};
use crate::record::RequestRecord;
use crate::record::plan::OpenLoop;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// Closer to an arrival than this, the dispatcher yields instead of sleeping on tokio's (1 ms) timer.
const FINE: Duration = Duration::from_millis(2);
/// The longest single sleep, so that a tail arrival notices promptly that it is no longer needed.
const NAP: Duration = Duration::from_millis(50);
/// Arrivals sent back to back (a dispatcher behind its schedule) before it yields to the requests it sent.
const BURST: u32 = 64;

/// Runs one open-loop phase on a thread and runtime of its own. Dropping the future (Ctrl-C) tells the thread
/// to drop the phase, whose set of tasks aborts the requests in flight.
pub async fn run(spec: &Arc<RequestSpec>, phase: &Phase, o: &OpenLoop) -> PhaseResult {
    let (spec, phase, o) = (spec.clone(), phase.clone(), o.clone());
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    // Dropped with this future: the thread's select then ends the phase.
    let (_cancel_tx, cancel_rx) = tokio::sync::oneshot::channel::<()>();
    let spawned = std::thread::Builder::new().name("servelab-open-loop".into()).spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
        let pool = if phase.concurrency == 0 { 1024 } else { phase.concurrency };
        let http = super::client::http_client(pool);
        rt.block_on(async {
            tokio::select! {
                // why: a send fails only when the caller dropped the phase (Ctrl-C), which then wants nothing;
                // cancel_rx ends with a send or with its sender dropped, and both mean stop.
                r = run_here(&http, &spec, &phase, &o) => { done_tx.send(r).ok(); }
                _ = cancel_rx => {}
            }
        });
    });
    match spawned {
        Ok(_) => done_rx.await.unwrap_or_else(|_| empty()),
        Err(_) => empty(),
    }
}

fn empty() -> PhaseResult {
    PhaseResult {
        records: Vec::new(),
        wall_s: 0.0,
        t0: Instant::now(),
        panicked: Some("the open-loop thread ended without a result".to_owned()),
    }
}

/// One open-loop phase on the current runtime.
async fn run_here(http: &reqwest::Client, spec: &Arc<RequestSpec>, phase: &Phase, o: &OpenLoop) -> PhaseResult {
    let duration_s = phase.duration.map(|d| d.as_secs_f64());
    let mut sched = match spec.workload.trace_arrivals() {
        Some(at) => arrival::Schedule::given(at, o, phase.schedule_seed, duration_s),
        None => arrival::schedule(o, phase.schedule_seed, duration_s, phase.requests),
    };
    let d = Arc::new(Dispatch {
        http: http.clone(),
        spec: spec.clone(),
        phase: phase.clone(),
        cap: (phase.concurrency > 0).then(|| Arc::new(Semaphore::new(phase.concurrency as usize))),
        open: AtomicU32::new(sched.measured.len() as u32),
        t0: Instant::now(),
        // The phase's span: its duration, or up to its last measured arrival when an SLO's minimum extends it.
        send_by: phase.duration.map(|d| {
            let last = sched.measured.last().copied().unwrap_or(0.0);
            Instant::now() + d.max(Duration::from_secs_f64(last.max(0.0))) + spec.timeout
        }),
    });
    let mut tasks = JoinSet::new();
    let mut scratch = super::prompt::Scratch::default();
    let mut burst = 0;
    let measured = std::mem::take(&mut sched.measured);
    for (index, &at) in measured.iter().enumerate() {
        // Built before its time, while the dispatcher would only wait: a trace's prompts run to 100k ids.
        let body = body_of(&d.spec, &d.phase, index as u32, &mut scratch);
        d.wait_until(at, false, &mut burst).await;
        d.send(&mut tasks, index as u32, at, false, body).await;
    }
    if phase.duration.is_some() {
        // Every measured request ends by its timeout; the bound also holds if one never reports back.
        let tail_until = Instant::now() + spec.timeout;
        let mut index = measured.len() as u32;
        while d.open.load(Ordering::SeqCst) > 0 && Instant::now() < tail_until {
            let at = sched.next_tail();
            if !d.wait_until(at, true, &mut burst).await {
                break; // every measured request finished before this tail arrival was due
            }
            let body = body_of(&d.spec, &d.phase, index, &mut scratch);
            d.send(&mut tasks, index, at, true, body).await;
            index += 1;
        }
    }
    let mut records = Vec::with_capacity(tasks.len());
    let mut panicked = None;
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok(r) => records.push(r),
            Err(e) => panicked = panicked.or(Some(super::client::join_error(e))),
        }
    }
    records.sort_by_key(|r| r.index);
    let wall_s = records.iter().map(|r| r.end_s).fold(0.0, f64::max);
    PhaseResult { records, wall_s, t0: d.t0, panicked }
}

struct Dispatch {
    http: reqwest::Client,
    spec: Arc<RequestSpec>,
    phase: Phase,
    /// `max_concurrency`: an arrival waits for a free slot (and is late by that wait).
    cap: Option<Arc<Semaphore>>,
    /// Measured requests not finished yet.
    open: AtomicU32,
    t0: Instant,
    /// A phase by time ends by its duration plus the request timeout: an arrival still waiting for a
    /// `max_concurrency` slot then is recorded as not sent instead of holding the phase open.
    send_by: Option<Instant>,
}

impl Dispatch {
    /// Waits for a slot under a cap, then sends the request on a task of its own.
    async fn send(
        self: &Arc<Self>,
        tasks: &mut JoinSet<RequestRecord>,
        index: u32,
        at: f64,
        tail: bool,
        body: super::client::Built,
    ) {
        let scheduled = self.t0 + Duration::from_secs_f64(at);
        let permit = match (&self.cap, self.send_by) {
            (Some(s), Some(by)) => match tokio::time::timeout_at(by.into(), s.clone().acquire_owned()).await {
                Ok(p) => p.ok(),
                Err(_) => {
                    let d = self.clone();
                    tasks.spawn(async move { d.not_sent(index, scheduled, tail) });
                    return;
                }
            },
            (Some(s), None) => s.clone().acquire_owned().await.ok(),
            (None, _) => None,
        };
        let slot_s = self.cap.as_ref().map(|_| Instant::now().duration_since(self.t0).as_secs_f64());
        let d = self.clone();
        tasks.spawn(async move {
            let mut r = one_request(&d.http, &d.spec, &d.phase, index, body, d.t0, scheduled).await;
            drop(permit);
            r.slot_s = slot_s;
            r.tail = tail;
            if !tail {
                d.open.fetch_sub(1, Ordering::SeqCst);
            }
            r
        });
    }

    /// The record of an arrival that found every `max_concurrency` slot busy until the phase had to end.
    fn not_sent(&self, index: u32, scheduled: Instant, tail: bool) -> RequestRecord {
        if !tail {
            self.open.fetch_sub(1, Ordering::SeqCst);
        }
        let now = Instant::now().duration_since(self.t0).as_secs_f64();
        let cap = self.phase.concurrency;
        RequestRecord {
            point: self.phase.point.clone(),
            attempt: self.phase.attempt,
            index,
            warmup: self.phase.warmup,
            scheduled_s: scheduled.duration_since(self.t0).as_secs_f64(),
            start_s: now,
            end_s: now,
            tail,
            error: Some(crate::record::RequestError {
                kind: crate::record::ErrorKind::NotSent,
                message: format!(
                    "not sent: all {cap} max_concurrency slots stayed busy until the phase's end (duration + request_timeout)"
                ),
            }),
            ..Default::default()
        }
    }

    /// Sleeps on the timer until [`FINE`] before `at` (seconds from the phase start), then yields until it is
    /// due. An arrival already due returns at once, except every [`BURST`]th in a row, which yields first.
    /// False for a tail arrival once every measured request has finished.
    async fn wait_until(&self, at: f64, tail: bool, burst: &mut u32) -> bool {
        let at = self.t0 + Duration::from_secs_f64(at);
        let mut waited = false;
        loop {
            if tail && self.open.load(Ordering::SeqCst) == 0 {
                return false;
            }
            let now = Instant::now();
            if now >= at {
                break;
            }
            waited = true;
            match (at - now).checked_sub(FINE) {
                Some(left) if !left.is_zero() => tokio::time::sleep(left.min(NAP)).await,
                _ => tokio::task::yield_now().await,
            }
        }
        *burst = if waited { 0 } else { *burst + 1 };
        if *burst >= BURST {
            *burst = 0;
            tokio::task::yield_now().await;
        }
        true
    }
}
