//! The open-loop dispatcher: requests leave at the absolute times of a pre-drawn schedule, whether or not the
//! server keeps up. A thread of its own (not a tokio task: tokio's timer is millisecond-grained, and a
//! dispatcher task behind its schedule competes with the requests it sent) sleeps until each arrival, with
//! a timer slack of 1 ns, and spawns the request onto the runtime. Each record keeps its scheduled and its actual send time; lateness is
//! derived afterwards.
//!
//! Like the closed loop, a phase by time keeps the load on after its duration — tail arrivals, drawn on from
//! the same stream and excluded from every figure — until every request sent in time has finished, so the
//! last measured requests do not finish on an emptying server.

use super::arrival;
use super::client::{Phase, PhaseResult, RequestSpec, body_of, one_request};
use crate::record::RequestRecord;
use crate::record::plan::OpenLoop;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

/// The thread sleeps (timer slack 1 ns) until this long before an arrival, then spins: a kernel wakeup
/// takes tens of microseconds, and a longer spin would take a single core from the requests.
const SPIN: Duration = Duration::from_micros(100);
/// The longest single sleep, so that a cancelled phase stops its thread promptly.
const NAP: Duration = Duration::from_millis(50);

pub async fn run(http: &reqwest::Client, spec: &Arc<RequestSpec>, phase: &Phase, o: &OpenLoop) -> PhaseResult {
    let sched = arrival::schedule(o, phase.schedule_seed, phase.duration.map(|d| d.as_secs_f64()), phase.requests);
    let d = Arc::new(Dispatcher {
        http: http.clone(),
        spec: spec.clone(),
        phase: Arc::new(phase.clone()),
        cap: (phase.concurrency > 0).then(|| Arc::new(Semaphore::new(phase.concurrency as usize))),
        open: AtomicU32::new(sched.measured.len() as u32),
        cancelled: AtomicBool::new(false),
        by_time: phase.duration.is_some(),
        runtime: tokio::runtime::Handle::current(),
        t0: Instant::now(),
    });
    // Dropping this future (Ctrl-C) stops the thread (the guard) and aborts the requests in flight (the set).
    let _guard = Cancel(d.clone());
    let (tx, rx) = tokio::sync::oneshot::channel();
    let thread = d.clone();
    let spawned = std::thread::Builder::new().name("servelab-dispatch".into()).spawn(move || {
        // Linux lets a sleeping thread oversleep by its timer slack (50 µs by default).
        let _ = nix::sys::prctl::set_timerslack(1);
        let _ = tx.send(thread.dispatch(sched));
    });
    let mut tasks = match spawned {
        Ok(_) => rx.await.unwrap_or_default(),
        Err(_) => JoinSet::new(),
    };
    let mut records = Vec::with_capacity(tasks.len());
    while let Some(r) = tasks.join_next().await {
        if let Ok(r) = r {
            records.push(r);
        }
    }
    records.sort_by_key(|r| r.index);
    let wall_s = records.iter().map(|r| r.end_s).fold(0.0, f64::max);
    PhaseResult { records, wall_s, t0: d.t0 }
}

struct Cancel(Arc<Dispatcher>);

impl Drop for Cancel {
    fn drop(&mut self) {
        self.0.cancelled.store(true, Ordering::SeqCst);
    }
}

struct Dispatcher {
    http: reqwest::Client,
    spec: Arc<RequestSpec>,
    phase: Arc<Phase>,
    /// `max_concurrency`: an arrival waits for a free slot (and is late by that wait).
    cap: Option<Arc<Semaphore>>,
    /// Measured requests not finished yet.
    open: AtomicU32,
    cancelled: AtomicBool,
    by_time: bool,
    runtime: tokio::runtime::Handle,
    t0: Instant,
}

impl Dispatcher {
    /// On its own thread: sends every measured arrival at its time, then (a phase by time) tail arrivals
    /// until every measured request has finished.
    /// Cancelled, it returns an empty set: dropping the one it had aborts the requests it sent.
    fn dispatch(self: &Arc<Self>, mut sched: arrival::Schedule) -> JoinSet<RequestRecord> {
        let mut tasks = JoinSet::new();
        let mut ids = Vec::new();
        let measured = std::mem::take(&mut sched.measured);
        for (index, &at) in measured.iter().enumerate() {
            if !self.send(&mut tasks, index as u32, at, false, &mut ids) {
                return JoinSet::new();
            }
        }
        let mut index = measured.len() as u32;
        // Every measured request ends by its timeout; the bound also holds if one never reports back.
        let tail_until = Instant::now() + self.spec.timeout;
        while self.by_time && self.open.load(Ordering::SeqCst) > 0 && Instant::now() < tail_until {
            if !self.send(&mut tasks, index, sched.next_tail(), true, &mut ids) {
                if self.cancelled.load(Ordering::SeqCst) {
                    return JoinSet::new();
                }
                break; // every measured request finished before this tail arrival was due
            }
            index += 1;
        }
        tasks
    }

    /// Waits for the arrival's time (and a slot under a cap), then sends it on a task of its own. False when
    /// the phase was cancelled, or a tail arrival is no longer needed.
    fn send(
        self: &Arc<Self>,
        tasks: &mut JoinSet<RequestRecord>,
        index: u32,
        at: f64,
        tail: bool,
        ids: &mut Vec<u32>,
    ) -> bool {
        let body = body_of(&self.spec, &self.phase, index, ids);
        let scheduled = self.t0 + Duration::from_secs_f64(at);
        if self.wait_until(scheduled, tail).is_none() {
            return false;
        }
        let permit: Option<OwnedSemaphorePermit> = match &self.cap {
            Some(s) => match self.runtime.block_on(s.clone().acquire_owned()) {
                Ok(p) => Some(p),
                Err(_) => return false,
            },
            None => None,
        };
        let d = self.clone();
        tasks.spawn_on(
            async move {
                let mut r = one_request(&d.http, &d.spec, &d.phase, index, body, d.t0, scheduled).await;
                drop(permit);
                r.tail = tail;
                if !tail {
                    d.open.fetch_sub(1, Ordering::SeqCst);
                }
                r
            },
            &self.runtime,
        );
        true
    }

    /// Sleeps until [`SPIN`] before `at` (in naps of at most [`NAP`]), then spins. None when cancelled, or for
    /// a tail arrival once every measured request has finished.
    fn wait_until(&self, at: Instant, tail: bool) -> Option<()> {
        loop {
            if self.cancelled.load(Ordering::SeqCst) || (tail && self.open.load(Ordering::SeqCst) == 0) {
                return None;
            }
            let now = Instant::now();
            if now >= at {
                return Some(());
            }
            match (at - now).checked_sub(SPIN) {
                Some(left) if !left.is_zero() => std::thread::sleep(left.min(NAP)),
                _ => std::hint::spin_loop(),
            }
        }
    }
}
