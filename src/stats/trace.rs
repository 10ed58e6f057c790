//! Trace replays: per replayed point, its lateness against the trace's schedule split into the wait for a
//! `max_concurrency` slot and the client's own, its latency distributions, goodput and attainment under the
//! spec's SLO, and the prefix-cache hit rate the server counted beside the bound the window's own blocks
//! allow. Typed values only; templates/trace_replay.md words them.

use super::rate::{clopper_pearson, meets};
use super::summary::percentile_sorted;
use super::window;
use crate::record::trace::TracePlan;
use crate::record::{PointRecord, RequestRecord, Status};
use crate::spec::Slo;
use serde::{Deserialize, Serialize};

/// Percentiles of one figure, seconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    pub n: usize,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl Spread {
    pub fn of(mut xs: Vec<f64>) -> Spread {
        xs.retain(|x| x.is_finite());
        xs.sort_by(f64::total_cmp);
        let p = |q| if xs.is_empty() { 0.0 } else { percentile_sorted(&xs, q) };
        Spread { n: xs.len(), p50: p(50.0), p90: p(90.0), p99: p(99.0), max: xs.last().copied().unwrap_or(0.0) }
    }
}

/// What paced a replay's arrivals, and so what its lateness is measured against.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Pace {
    /// The trace's timestamps divided by `speedup`.
    Timestamps { speedup: f64 },
    /// `load.rate`'s schedule, pre-drawn from the seed: the window's requests in trace order, one per arrival;
    /// the timestamps unused.
    Rate { rate: f64, arrival: crate::record::plan::Arrival, burstiness: Option<f64> },
}

/// What a replay's `bound` is counted on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BoundOn {
    /// The trace's `hash_ids` (the completions endpoint's token-id prompts are built from them exactly).
    HashIds,
    /// The token ids of the prompts as sent on the chat endpoint: each message rendered with the chat template
    /// (`template: true`; false when none was found: the message's tokens alone), then tokenized.
    SentTokens { template: Option<bool> },
}

/// One replay of a trace window (one point's latest attempt).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Replay {
    pub group: String,
    /// The point's grid values, as the reports write them (`caching=true`).
    pub vars: String,
    pub point: String,
    pub repeat: u32,
    pub trace: TracePlan,
    /// What paced the arrivals: lateness is against this schedule.
    pub pace: Pace,
    /// `max_concurrency` (0: none).
    pub cap: u32,
    /// Requests of the window recorded, and those never sent (every slot busy until the phase's end).
    pub requests: usize,
    pub not_sent: usize,
    pub errors: usize,
    /// Lateness against the trace's schedule: in all, waiting for a slot, and the client's own.
    pub late: Spread,
    pub cap_wait: Spread,
    pub client_late: Spread,
    /// Requests that waited for a slot at all (over 1 ms).
    pub waited: usize,
    pub ttft: Spread,
    pub tpot: Spread,
    pub itl: Spread,
    pub e2e: Spread,
    /// Over the replay: from its first scheduled arrival to its last end.
    pub span_s: f64,
    pub met: usize,
    pub attainment: f64,
    pub attainment_ci: (f64, f64),
    pub goodput_rps: f64,
    /// The server's prefix-cache hit rate over the replay (hit tokens over queried tokens), when it counts them.
    pub hit_rate: Option<f64>,
    /// The KV block size the bound is counted in: the server's (from /metrics), else vLLM's default of 16.
    pub block_size: u32,
    /// Whether `block_size` is the server's own.
    pub block_size_known: bool,
    /// The bound of the window as replayed (after caps), counted on `bound_on`.
    pub bound: Option<f64>,
    pub bound_on: BoundOn,
    /// The bound after caps counted on the trace's `hash_ids` (`bound` itself on the completions endpoint).
    pub bound_ids: Option<f64>,
    /// The bound without caps, always on the trace's `hash_ids`: prompts longer than the caps are never sent,
    /// so never rendered or tokenized. Against `bound_ids`, what capping costs the cache on one basis.
    pub bound_uncapped: Option<f64>,
}

/// Every trace replay of the run, in the order points were committed (latest attempt of each, failed ones
/// left out).
pub fn analyze(
    points: &[PointRecord],
    requests: &[RequestRecord],
    servers: &[crate::record::ServerRecord],
    slo: Option<&Slo>,
) -> Vec<Replay> {
    let latest = |p: &PointRecord| !points.iter().any(|q| q.point == p.point && q.attempt > p.attempt);
    points
        .iter()
        .filter(|p| p.status == Status::Ok && p.client.trace.is_some() && latest(p))
        .filter_map(|p| {
            let reqs: Vec<&RequestRecord> = requests
                .iter()
                .filter(|r| r.point == p.point && r.attempt == p.attempt && !r.warmup && !r.tail)
                .collect();
            // The group's latest start that reported its cache configuration.
            let block = servers
                .iter()
                .rev()
                .filter(|s| s.id == p.group)
                .find_map(|s| s.cache_config_info.as_ref()?.get("block_size")?.parse::<u32>().ok());
            replay(p, &reqs, block, slo)
        })
        .collect()
}

fn replay(p: &PointRecord, reqs: &[&RequestRecord], block: Option<u32>, slo: Option<&Slo>) -> Option<Replay> {
    let trace = p.client.trace.clone()?;
    let sent: Vec<&&RequestRecord> =
        reqs.iter().filter(|r| r.error.as_ref().is_none_or(|e| e.kind != crate::record::ErrorKind::NotSent)).collect();
    let ok: Vec<&&RequestRecord> = reqs.iter().filter(|r| r.ok()).collect();
    let mut itl = Vec::new();
    for r in &ok {
        window::itl_samples(r, &mut itl);
    }
    let first = reqs.iter().map(|r| r.scheduled_s).fold(f64::INFINITY, f64::min);
    let last = reqs.iter().map(|r| r.end_s).fold(f64::NEG_INFINITY, f64::max);
    let span_s = (last - first).max(0.0);
    let met = reqs.iter().filter(|r| meets(r, slo)).count();
    let hit_rate = server_hit_rate(p);
    let size = block.unwrap_or(crate::record::tracefile::VLLM_BLOCK);
    let bound_ids = trace.bound_at(size, true).and_then(|b| b.rate());
    Some(Replay {
        group: p.group.clone(),
        vars: crate::record::values::vars_text(&p.vars, " "),
        point: p.point.clone(),
        repeat: p.repeat,
        cap: p.client.concurrency,
        requests: reqs.len(),
        not_sent: reqs.len() - sent.len(),
        errors: reqs.len() - ok.len(),
        late: Spread::of(sent.iter().map(|r| r.lag_s().max(0.0)).collect()),
        cap_wait: Spread::of(sent.iter().map(|r| r.cap_wait_s()).collect()),
        client_late: Spread::of(sent.iter().map(|r| r.client_late_s().max(0.0)).collect()),
        waited: sent.iter().filter(|r| r.cap_wait_s() > 1e-3).count(),
        ttft: Spread::of(ok.iter().filter_map(|r| r.ttft_s()).collect()),
        tpot: Spread::of(ok.iter().filter_map(|r| window::tpot_s(r)).collect()),
        itl: Spread::of(itl),
        e2e: Spread::of(ok.iter().map(|r| r.e2e_s()).collect()),
        span_s,
        met,
        attainment: if reqs.is_empty() { 0.0 } else { met as f64 / reqs.len() as f64 },
        attainment_ci: clopper_pearson(met, reqs.len()),
        goodput_rps: if span_s > 0.0 { met as f64 / span_s } else { 0.0 },
        hit_rate,
        block_size: block.unwrap_or(crate::record::tracefile::VLLM_BLOCK),
        block_size_known: block.is_some(),
        // On the chat endpoint the bound counted on the prompts as sent (template and tokenizer included).
        bound: match &p.trace_sent {
            Some(sent) => sent.iter().find(|b| b.block_size == size).and_then(|b| b.rate()),
            None => bound_ids,
        },
        bound_on: match p.trace_sent {
            Some(_) => BoundOn::SentTokens { template: p.trace_sent_template },
            None => BoundOn::HashIds,
        },
        bound_ids,
        bound_uncapped: trace.bound_at(size, false).and_then(|b| b.rate()),
        pace: pace(p, &trace),
        trace,
    })
}

/// What paced a replay: the plan's open loop under a rate's schedule, else the timestamps.
fn pace(p: &PointRecord, trace: &TracePlan) -> Pace {
    match (trace.schedule, &p.client.open_loop) {
        (crate::record::trace::TraceSchedule::Rate, Some(o)) => {
            Pace::Rate { rate: o.rate, arrival: o.arrival, burstiness: o.burstiness }
        }
        _ => Pace::Timestamps { speedup: trace.speedup },
    }
}

/// The prefix-cache hit rate the server's counters give over a point's measured phase (hits over queries
/// between its before and after snapshots); None without both snapshots or without a query.
pub(crate) fn server_hit_rate(p: &PointRecord) -> Option<f64> {
    let d = crate::probe::metrics::delta(p.before.as_ref()?, p.after.as_ref()?);
    match (d.prefix_hits, d.prefix_queries) {
        (Some(h), Some(q)) if q > 0.0 => Some(h / q),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(index: u32, scheduled: f64, slot: Option<f64>, start: f64) -> RequestRecord {
        RequestRecord {
            point: "p".into(),
            index,
            scheduled_s: scheduled,
            slot_s: slot,
            start_s: start,
            first_token_s: Some(start + 0.1),
            end_s: start + 0.5,
            completion_tokens: Some(5),
            ..Default::default()
        }
    }

    #[test]
    fn lateness_splits_into_the_cap_wait_and_the_client() {
        let reqs = [req(0, 0.0, Some(0.0), 0.0001), req(1, 1.0, Some(1.5), 1.5002), req(2, 2.0, None, 2.01)];
        let refs: Vec<&RequestRecord> = reqs.iter().collect();
        let mut p = PointRecord { model: "m".into(), ..PointRecord::measured("p", "g", Default::default(), 1.0) };
        p.client.trace = Some(TracePlan {
            path: "t".into(),
            format: Default::default(),
            content: "c".into(),
            speedup: 1.0,
            schedule: Default::default(),
            select: Default::default(),
            requests: 3,
            found: crate::record::trace::WindowFound {
                span_s: 2.0,
                capped_input: 0,
                capped_output: 0,
                input_tokens_uncapped: 10,
                bounds: vec![
                    crate::record::trace::PrefixBound { block_size: 16, hit_tokens: 4, prompt_tokens: 8 },
                    crate::record::trace::PrefixBound { block_size: 128, hit_tokens: 0, prompt_tokens: 8 },
                ],
                bounds_uncapped: Vec::new(),
            },
        });
        let r = replay(&p, &refs, None, None).unwrap();
        assert_eq!((r.requests, r.waited, r.met), (3, 1, 3));
        assert!((r.cap_wait.max - 0.5).abs() < 1e-9 && (r.client_late.max - 0.01).abs() < 1e-9, "{r:?}");
        assert!((r.late.max - 0.5002).abs() < 1e-9);
        assert_eq!((r.bound, r.bound_uncapped, r.hit_rate), (Some(0.5), None, None));
        assert!((r.goodput_rps - 3.0 / 2.51).abs() < 1e-9);
        let cpu = replay(&p, &refs, Some(128), None).unwrap();
        assert_eq!(
            (cpu.block_size, cpu.block_size_known, cpu.bound),
            (128, true, Some(0.0)),
            "the server's block size"
        );
        assert_eq!(
            (r.pace.clone(), r.bound_on, r.bound_ids),
            (Pace::Timestamps { speedup: 1.0 }, BoundOn::HashIds, Some(0.5))
        );

        // Under a rate's schedule the report says so; on the chat endpoint the bound is the prompts' as sent,
        // the ids' one kept beside it.
        let o = crate::record::plan::OpenLoop {
            rate: 7.0,
            arrival: crate::record::plan::Arrival::Poisson,
            burstiness: None,
            min_requests: 0,
        };
        p.client.open_loop = Some(o);
        p.client.trace.as_mut().unwrap().schedule = crate::record::trace::TraceSchedule::Rate;
        p.trace_sent =
            Some(vec![crate::record::trace::PrefixBound { block_size: 16, hit_tokens: 2, prompt_tokens: 8 }]);
        p.trace_sent_template = Some(true);
        let chat = replay(&p, &refs, None, None).unwrap();
        assert_eq!(
            chat.pace,
            Pace::Rate { rate: 7.0, arrival: crate::record::plan::Arrival::Poisson, burstiness: None }
        );
        assert_eq!(
            (chat.bound, chat.bound_on, chat.bound_ids),
            (Some(0.25), BoundOn::SentTokens { template: Some(true) }, Some(0.5))
        );
    }
}
