//! A phase on several OS threads (`load.client_threads`): each thread has a single-threaded tokio runtime and
//! whatever it sets up for itself (its HTTP client: a connection pool belongs to the runtime that opened its
//! connections), then runs its share. Every thread sets up first; the caller then takes the phase's origin
//! `t0` and hands it to all of them, so that no thread's start-up is counted against the schedule and every
//! record of the phase has the same origin.

use std::future::Future;
use std::time::Instant;
use tokio::sync::oneshot;

/// Runs `run(k, setup(k), t0)` for k in 0..n, each on a thread of its own; returns each thread's result in
/// thread order, or why it gave none. Dropping the returned future (Ctrl-C) tells every thread to drop its
/// share, which aborts the requests it holds.
pub async fn on_threads<S, T, Setup, Run, Fut>(
    n: u32,
    name: &str,
    setup: Setup,
    run: Run,
) -> (Instant, Vec<Result<T, String>>)
where
    Setup: Fn(u32) -> S + Send + Sync + Clone + 'static,
    Run: Fn(u32, S, Instant) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = T> + 'static,
    T: Send + 'static,
{
    let mut threads = Vec::with_capacity(n as usize);
    // Dropped with this future: each thread's select then ends its share.
    let mut cancels = Vec::with_capacity(n as usize);
    for k in 0..n {
        let (ready_tx, ready_rx) = oneshot::channel::<()>();
        let (go_tx, go_rx) = oneshot::channel::<Instant>();
        let (done_tx, done_rx) = oneshot::channel::<T>();
        let (cancel_tx, cancel_rx) = oneshot::channel::<()>();
        let (setup, run) = (setup.clone(), run.clone());
        let spawned = std::thread::Builder::new().name(format!("{name}-{k}")).spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            let state = {
                let _in_runtime = rt.enter();
                setup(k)
            };
            // why: a failed send means the caller is gone (Ctrl-C) and wants nothing; the go and cancel
            // channels then end too, and the thread returns.
            ready_tx.send(()).ok();
            rt.block_on(async move {
                let Ok(t0) = go_rx.await else { return };
                tokio::select! {
                    // why: the share's records go back on done_tx; a failed send means the caller stopped
                    // waiting (cancelled) and counts this share as not run, so nothing is lost silently. A
                    // fired cancel drops the share for the same reason.
                    r = run(k, state, t0) => { done_tx.send(r).ok(); }
                    _ = cancel_rx => {}
                }
            });
        });
        cancels.push(cancel_tx);
        threads.push(
            spawned.map(|_| (ready_rx, go_tx, done_rx)).map_err(|e| format!("{name} thread {k} could not start: {e}")),
        );
    }
    let mut waiting = Vec::with_capacity(threads.len());
    for (k, t) in threads.into_iter().enumerate() {
        waiting.push(match t {
            Ok((ready, go, done)) => match ready.await {
                Ok(()) => Ok((go, done)),
                Err(_) => Err(format!("{name} thread {k} could not build its runtime")),
            },
            Err(e) => Err(e),
        });
    }
    let t0 = Instant::now();
    let mut results = Vec::with_capacity(waiting.len());
    for w in waiting {
        results.push(w.and_then(|(go, done)| {
            go.send(t0).map_err(|_| format!("{name} thread ended before it started")).map(|()| done)
        }));
    }
    let mut out = Vec::with_capacity(results.len());
    for (k, r) in results.into_iter().enumerate() {
        out.push(match r {
            Ok(done) => done.await.map_err(|_| format!("{name} thread {k} ended without a result")),
            Err(e) => Err(e),
        });
    }
    drop(cancels);
    (t0, out)
}

/// Thread `k`'s share of `total` slots split as evenly as possible over `n` threads (the first ones get one
/// more when it does not divide).
pub fn share(total: u32, n: u32, k: u32) -> u32 {
    let n = n.max(1);
    total / n + u32::from(k < total % n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up_and_differ_by_at_most_one() {
        for total in 0..20 {
            for n in 1..6 {
                let s: Vec<u32> = (0..n).map(|k| share(total, n, k)).collect();
                assert_eq!(s.iter().sum::<u32>(), total);
                assert!(s.iter().max().unwrap() - s.iter().min().unwrap() <= 1);
            }
        }
    }

    #[test]
    fn every_thread_runs_once_from_one_origin() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let (t0, out) = rt.block_on(on_threads(
            3,
            "test",
            |k| k * 10,
            |k, s, t0| async move { (k, s, t0, std::thread::current().name().map(str::to_owned)) },
        ));
        let out: Vec<_> = out.into_iter().map(Result::unwrap).collect();
        assert_eq!(out.iter().map(|o| (o.0, o.1)).collect::<Vec<_>>(), [(0, 0), (1, 10), (2, 20)]);
        assert!(out.iter().all(|o| o.2 == t0));
        assert_eq!(out[2].3.as_deref(), Some("test-2"));
    }
}
