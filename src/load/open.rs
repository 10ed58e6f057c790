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
use super::client::{Built, Phase, PhaseResult, RequestSpec, body_of, one_request};
use crate::record::RequestRecord;
use crate::record::plan::OpenLoop;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;

/// Closer to an arrival than this, the dispatcher yields instead of sleeping on tokio's (1 ms) timer.
const FINE: Duration = Duration::from_millis(2);
/// The longest single sleep, so that a tail arrival notices promptly that it is no longer needed.
const NAP: Duration = Duration::from_millis(50);
/// Arrivals sent back to back (a dispatcher behind its schedule) before it yields to the requests it sent.
const BURST: u32 = 64;

/// Bodies a builder thread keeps ready ahead of its dispatcher. Memory is bounded by this many bodies (plus
/// the one being built): 32 × ~7 bytes per prompt token, 2.2 MB at the Mooncake trace's mean of 14k tokens,
/// 28 MB if every body were its longest (126k tokens).
const AHEAD: usize = 32;

/// Runs one open-loop phase on `phase.threads` threads (1 unless `load.client_threads` asks for more), each
/// with a runtime, a client and a body builder of its own; arrival `i` of the pre-drawn schedule goes to
/// thread `i mod N`. Dropping the future (Ctrl-C) tells the threads to drop the phase, whose sets of tasks
/// abort the requests in flight.
pub async fn run(spec: &Arc<RequestSpec>, phase: &Phase, o: &OpenLoop) -> PhaseResult {
    let n = phase.threads.max(1);
    let duration_s = phase.duration.map(|d| d.as_secs_f64());
    let mut sched = match spec.workload.trace_arrivals() {
        Some(at) => arrival::Schedule::given(at, o, phase.schedule_seed, duration_s),
        None => arrival::schedule(o, phase.schedule_seed, duration_s, phase.requests),
    };
    let measured: Arc<Vec<f64>> = Arc::new(std::mem::take(&mut sched.measured));
    let common = Arc::new(Common {
        spec: spec.clone(),
        phase: phase.clone(),
        cap: (phase.concurrency > 0).then(|| Arc::new(Semaphore::new(phase.concurrency as usize))),
        open: AtomicU32::new(measured.len() as u32),
        tail: Mutex::new((sched, measured.len() as u32)),
    });
    let pool = if phase.concurrency == 0 { 1024 } else { phase.concurrency };
    let (c, m) = (common.clone(), measured.clone());
    let setup = move |k: u32| {
        let http = super::client::http_client(super::threads::share(pool, n, k).max(1));
        (http, builder(&c, &m, k, n))
    };
    let run = move |k: u32, (http, bodies), t0: Instant| {
        let (common, measured) = (common.clone(), measured.clone());
        async move {
            let d = Arc::new(Dispatch::new(http, common, &measured, t0));
            d.run(&measured, k, n, bodies).await
        }
    };
    let (t0, results) = super::threads::on_threads(n, "servelab-open-loop", setup, run).await;
    super::client::merge(t0, results)
}

/// Builds the bodies of thread `k`'s share on a thread of its own, in the order its dispatcher sends them, at
/// most [`AHEAD`] ahead: a trace's prompts run to 100k token ids (~0.7 MB of JSON), and building one on the
/// dispatcher's thread held back the request it had just started (bench/trace-lateness.md). None (the
/// dispatcher then builds each body itself) when the thread cannot start.
fn builder(c: &Arc<Common>, measured: &Arc<Vec<f64>>, k: u32, n: u32) -> Option<mpsc::Receiver<Built>> {
    let (tx, rx) = mpsc::channel(AHEAD);
    let (c, len) = (c.clone(), measured.len());
    let spawned = std::thread::Builder::new().name(format!("servelab-bodies-{k}")).spawn(move || {
        let mut scratch = super::prompt::Scratch::default();
        for index in (k as usize..len).step_by(n as usize) {
            let body = body_of(&c.spec, &c.phase, index as u32, &mut scratch);
            if tx.blocking_send(body).is_err() {
                return; // the dispatcher is gone (the phase was dropped)
            }
        }
    });
    spawned.ok().map(|_| rx)
}

/// What the threads of one open-loop phase share.
struct Common {
    spec: Arc<RequestSpec>,
    phase: Phase,
    /// `max_concurrency`, across every thread: an arrival waits for a free slot (and is late by that wait).
    cap: Option<Arc<Semaphore>>,
    /// Measured requests not finished yet.
    open: AtomicU32,
    /// Tail arrivals, drawn on from the schedule's stream by whichever thread is free, and the next index.
    tail: Mutex<(arrival::Schedule, u32)>,
}

/// One thread's dispatcher.
struct Dispatch {
    http: reqwest::Client,
    c: Arc<Common>,
    t0: Instant,
    /// A phase by time ends by its duration plus the request timeout: an arrival still waiting for a
    /// `max_concurrency` slot then is recorded as not sent instead of holding the phase open.
    send_by: Option<Instant>,
}

impl Dispatch {
    fn new(http: reqwest::Client, c: Arc<Common>, measured: &[f64], t0: Instant) -> Dispatch {
        // The phase's span: its duration, or up to its last measured arrival when an SLO's minimum extends it.
        let send_by = c.phase.duration.map(|d| {
            let last = measured.last().copied().unwrap_or(0.0);
            t0 + d.max(Duration::from_secs_f64(last.max(0.0))) + c.spec.timeout
        });
        Dispatch { http, c, t0, send_by }
    }

    /// Sends thread `k`'s share of the measured arrivals (every `n`th from the `k`th), then tail arrivals while
    /// measured requests are open (a phase by time), and returns every record.
    async fn run(
        self: &Arc<Self>,
        measured: &[f64],
        k: u32,
        n: u32,
        mut bodies: Option<mpsc::Receiver<Built>>,
    ) -> (Vec<RequestRecord>, Option<String>) {
        let (spec, phase) = (&self.c.spec, &self.c.phase);
        let mut tasks = JoinSet::new();
        let mut scratch = super::prompt::Scratch::default();
        let mut burst = 0;
        for index in (k as usize..measured.len()).step_by(n as usize) {
            let built = match bodies.as_mut() {
                Some(rx) => rx.recv().await,
                None => None,
            };
            let body = built.unwrap_or_else(|| body_of(spec, phase, index as u32, &mut scratch));
            let at = measured[index];
            self.wait_until(at, false, &mut burst).await;
            self.send(&mut tasks, index as u32, at, false, body).await;
        }
        drop(bodies);
        if phase.duration.is_some() {
            // Every measured request ends by its timeout; the bound also holds if one never reports back.
            let tail_until = Instant::now() + spec.timeout;
            while self.c.open.load(Ordering::SeqCst) > 0 && Instant::now() < tail_until {
                let at = self.c.tail.lock().unwrap_or_else(std::sync::PoisonError::into_inner).0.next_tail();
                if !self.wait_until(at, true, &mut burst).await {
                    break; // every measured request finished before this tail arrival was due
                }
                let index = {
                    let mut t = self.c.tail.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    t.1 += 1;
                    t.1 - 1
                };
                let body = body_of(spec, phase, index, &mut scratch);
                self.send(&mut tasks, index, at, true, body).await;
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
        (records, panicked)
    }
    /// Waits for a slot under a cap, then sends the request on a task of its own.
    async fn send(self: &Arc<Self>, tasks: &mut JoinSet<RequestRecord>, index: u32, at: f64, tail: bool, body: Built) {
        let scheduled = self.t0 + Duration::from_secs_f64(at);
        let permit = match (&self.c.cap, self.send_by) {
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
        let slot_s = self.c.cap.as_ref().map(|_| Instant::now().duration_since(self.t0).as_secs_f64());
        let d = self.clone();
        tasks.spawn(async move {
            let mut r = one_request(&d.http, &d.c.spec, &d.c.phase, index, body, d.t0, scheduled).await;
            drop(permit);
            r.slot_s = slot_s;
            r.tail = tail;
            if !tail {
                d.c.open.fetch_sub(1, Ordering::SeqCst);
            }
            r
        });
    }

    /// The record of an arrival that found every `max_concurrency` slot busy until the phase had to end.
    fn not_sent(&self, index: u32, scheduled: Instant, tail: bool) -> RequestRecord {
        if !tail {
            self.c.open.fetch_sub(1, Ordering::SeqCst);
        }
        let now = Instant::now().duration_since(self.t0).as_secs_f64();
        let cap = self.c.phase.concurrency;
        RequestRecord {
            point: self.c.phase.point.clone(),
            attempt: self.c.phase.attempt,
            index,
            warmup: self.c.phase.warmup,
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
            if tail && self.c.open.load(Ordering::SeqCst) == 0 {
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
