//! One repeat's figures from its raw records, the mean of a cell's repeats, the headline repeat, and the
//! host summary of a group.

use super::*;

/// NVML's utilisation covers a trailing sample period: readings this soon after the window opens still see
/// the ramp-up before it, so they are left out.
pub(super) const NVML_TRAILING_S: f64 = 0.5;
/// Fewer GPU readings than this in the window give no utilisation figure.
pub(super) const MIN_GPU_READINGS: usize = 10;

pub(super) fn repeat_stats(
    p: &PointRecord,
    all: &[&RequestRecord],
    samples: &[&SampleLine],
    metrics_version: u32,
) -> RepeatStats {
    let tail_requests = all.iter().filter(|r| r.tail).count();
    let reqs: Vec<&RequestRecord> = all.iter().copied().filter(|r| !r.tail).collect();
    let ok_all: Vec<&RequestRecord> = reqs.iter().copied().filter(|r| r.ok()).collect();
    let errors = errors_by_kind(&reqs);
    let tokens = |r: &RequestRecord| u64::from(r.completion_tokens.unwrap_or(r.chunks));
    let completion_tokens: u64 = ok_all.iter().map(|r| tokens(r)).sum();
    let wall = p.wall_s.max(1e-9);
    let (phase_tok_s, phase_qps) = (completion_tokens as f64 / wall, ok_all.len() as f64 / wall);
    let steady = window::steady(&p.client, &reqs, metrics_version);
    // Throughput over the window; latency over the requests started inside it (else the whole phase).
    let (tok_s, qps, ok) = match &steady {
        Some(w) => (
            ok_all.iter().map(|r| window::tokens_in(r, w)).sum::<f64>() / w.len_s(),
            w.completions as f64 / w.len_s(),
            ok_all.iter().copied().filter(|r| w.contains(r.start_s)).collect::<Vec<_>>(),
        ),
        None => (phase_tok_s, phase_qps, ok_all.clone()),
    };
    let mut itl = Vec::new();
    ok.iter().for_each(|r| window::itl_samples(r, &mut itl));
    itl.sort_by(|a, b| a.total_cmp(b));
    let delta = match (&p.before, &p.after) {
        (Some(b), Some(a)) => Some(crate::probe::metrics::delta(b, a)),
        _ => None,
    };
    let metric_max = |f: fn(&crate::probe::metrics::Snapshot) -> Option<f64>| {
        samples.iter().filter_map(|s| s.metrics.as_ref().and_then(f)).reduce(f64::max)
    };
    let utils = gpu_utils(p, samples, steady.as_ref());
    // The gap covers every request the server saw between the quiet snapshots: tails included.
    let seen: Vec<&RequestRecord> = all.iter().copied().filter(|r| r.ok()).collect();
    let client_e2e = crate::stats::summary::mean(&seen.iter().map(|r| r.e2e_s()).collect::<Vec<_>>());
    let client_ttft = crate::stats::summary::mean(&seen.iter().filter_map(|r| r.ttft_s()).collect::<Vec<_>>());
    let gap = |client: f64, server: Option<f64>| server.filter(|_| client.is_finite()).map(|s| client - s);
    RepeatStats {
        point: p.point.clone(),
        attempt: p.attempt,
        repeat: p.repeat,
        wall_s: p.wall_s,
        requests: reqs.len(),
        ok: ok_all.len(),
        errors,
        completion_tokens,
        qps,
        tok_s,
        e2e: summarize(ok.iter().map(|r| r.e2e_s())),
        ttft: summarize(ok.iter().filter_map(|r| r.ttft_s())),
        itl_p50_s: (!itl.is_empty()).then(|| crate::stats::summary::percentile_sorted(&itl, 50.0)),
        itl_per_token: !ok.is_empty() && ok.iter().all(|r| window::has_chunk_tokens(r)),
        tpot: summarize(ok.iter().filter_map(|r| window::tpot_s(r))),
        mean_lag_s: crate::stats::summary::mean(&ok.iter().map(|r| r.lag_s()).collect::<Vec<_>>()),
        short_outputs: if p.client.ignore_eos {
            ok_all.iter().filter(|r| tokens(r) < u64::from(p.client.max_tokens)).count()
        } else {
            0
        },
        server_generation_tokens: delta.as_ref().and_then(|d| d.generation_tokens),
        server_mean_e2e_s: delta.as_ref().and_then(|d| d.mean_e2e_s),
        server_mean_ttft_s: delta.as_ref().and_then(|d| d.mean_ttft_s),
        prefix_hits: delta.as_ref().and_then(|d| d.prefix_hits),
        prefix_queries: delta.as_ref().and_then(|d| d.prefix_queries),
        waiting_max: metric_max(|m| m.waiting),
        kv_usage_max: metric_max(|m| m.kv_usage),
        preemptions: delta.as_ref().and_then(|d| d.preemptions),
        gpu_util_pct: (utils.len() >= MIN_GPU_READINGS).then(|| crate::stats::summary::mean(&utils)),
        gpu_util_readings: utils.len(),
        window_s: steady.map(|w| w.len_s()),
        phase_tok_s,
        phase_qps,
        ttft_gap_s: gap(client_ttft, delta.as_ref().and_then(|d| d.mean_ttft_s)),
        e2e_gap_s: gap(client_e2e, delta.as_ref().and_then(|d| d.mean_e2e_s)),
        tail_requests,
        beside: p.beside.unwrap_or(0),
        steal_pct_max: p
            .beside
            .and_then(|_| samples.iter().filter_map(|s| s.host.as_ref()?.steal_pct).reduce(f64::max)),
        switch_shared: p.switch_shared.unwrap_or(false),
    }
}

/// Failed requests by the kind of their error.
fn errors_by_kind(reqs: &[&RequestRecord]) -> BTreeMap<String, usize> {
    let mut errors = BTreeMap::new();
    for r in reqs.iter().filter(|r| !r.ok()) {
        *errors.entry(r.error.as_ref().map(|e| String::from(e.kind)).unwrap_or_default()).or_insert(0) += 1;
    }
    errors
}

/// The GPU utilisation readings of a repeat: inside the steady window (past NVML's trailing period), or the
/// whole phase without one.
fn gpu_utils(p: &PointRecord, samples: &[&SampleLine], steady: Option<&window::Window>) -> Vec<f64> {
    match steady {
        Some(w) => samples
            .iter()
            .filter(|s| {
                let t = s.t_s - p.samples_offset_s;
                t >= w.open_s + NVML_TRAILING_S && t <= w.close_s
            })
            .filter_map(|s| s.gpu_util_pct)
            .collect(),
        None => samples.iter().filter_map(|s| s.gpu_util_pct).collect(),
    }
}

/// The mean of a cell's repeats, as one repeat: the headline under the `mean` policy.
pub(super) fn mean_repeat(reps: &[RepeatStats]) -> RepeatStats {
    let m = |f: &dyn Fn(&RepeatStats) -> Option<f64>| {
        let v: Vec<f64> = reps.iter().filter_map(f).filter(|x| x.is_finite()).collect();
        (!v.is_empty()).then(|| crate::stats::summary::mean(&v))
    };
    let summary = |f: &dyn Fn(&RepeatStats) -> Option<Summary>| {
        let v: Vec<Summary> = reps.iter().filter_map(f).collect();
        (!v.is_empty()).then(|| {
            let a = |g: fn(&Summary) -> f64| crate::stats::summary::mean(&v.iter().map(g).collect::<Vec<_>>());
            Summary {
                n: v.iter().map(|s| s.n).sum(),
                mean: a(|s| s.mean),
                p50: a(|s| s.p50),
                p95: a(|s| s.p95),
                p99: a(|s| s.p99),
                stddev: a(|s| s.stddev),
                min: v.iter().map(|s| s.min).fold(f64::INFINITY, f64::min),
                max: v.iter().map(|s| s.max).fold(f64::NEG_INFINITY, f64::max),
            }
        })
    };
    let mut errors = BTreeMap::new();
    for r in reps {
        for (k, n) in &r.errors {
            *errors.entry(k.clone()).or_insert(0) += n;
        }
    }
    let first = &reps[0];
    RepeatStats {
        point: first.point.clone(),
        attempt: first.attempt,
        repeat: first.repeat,
        wall_s: m(&|r| Some(r.wall_s)).unwrap_or(0.0),
        requests: reps.iter().map(|r| r.requests).sum::<usize>() / reps.len(),
        ok: reps.iter().map(|r| r.ok).sum::<usize>() / reps.len(),
        errors,
        completion_tokens: reps.iter().map(|r| r.completion_tokens).sum::<u64>() / reps.len() as u64,
        qps: m(&|r| Some(r.qps)).unwrap_or(0.0),
        tok_s: m(&|r| Some(r.tok_s)).unwrap_or(0.0),
        e2e: summary(&|r| r.e2e),
        ttft: summary(&|r| r.ttft),
        itl_p50_s: m(&|r| r.itl_p50_s),
        itl_per_token: reps.iter().all(|r| r.itl_per_token),
        tpot: summary(&|r| r.tpot),
        mean_lag_s: m(&|r| Some(r.mean_lag_s)).unwrap_or(0.0),
        short_outputs: reps.iter().map(|r| r.short_outputs).sum(),
        server_generation_tokens: None,
        server_mean_e2e_s: m(&|r| r.server_mean_e2e_s),
        server_mean_ttft_s: m(&|r| r.server_mean_ttft_s),
        prefix_hits: m(&|r| r.prefix_hits),
        prefix_queries: m(&|r| r.prefix_queries),
        waiting_max: reps.iter().filter_map(|r| r.waiting_max).reduce(f64::max),
        kv_usage_max: reps.iter().filter_map(|r| r.kv_usage_max).reduce(f64::max),
        preemptions: m(&|r| r.preemptions),
        gpu_util_pct: m(&|r| r.gpu_util_pct),
        gpu_util_readings: reps.iter().map(|r| r.gpu_util_readings).sum(),
        window_s: m(&|r| r.window_s),
        phase_tok_s: m(&|r| Some(r.phase_tok_s)).unwrap_or(0.0),
        phase_qps: m(&|r| Some(r.phase_qps)).unwrap_or(0.0),
        ttft_gap_s: m(&|r| r.ttft_gap_s),
        e2e_gap_s: m(&|r| r.e2e_gap_s),
        tail_requests: reps.iter().map(|r| r.tail_requests).sum(),
        beside: reps.iter().map(|r| r.beside).max().unwrap_or(0),
        steal_pct_max: reps.iter().filter_map(|r| r.steal_pct_max).reduce(f64::max),
        switch_shared: reps.iter().any(|r| r.switch_shared),
    }
}

/// The headline repeat: best or median by tokens/s (the lower median for an even count).
pub(super) fn headline(repeats: &[RepeatStats], policy: RepeatPolicy) -> usize {
    let mut order: Vec<usize> = (0..repeats.len()).collect();
    order.sort_by(|a, b| repeats[*a].tok_s.total_cmp(&repeats[*b].tok_s));
    match policy {
        RepeatPolicy::Best => *order.last().unwrap_or(&0),
        RepeatPolicy::Median | RepeatPolicy::Mean => order[(order.len().saturating_sub(1)) / 2],
    }
}

/// NVML clock-event reasons that say nothing about the measurement: GPU idle (0x1), application clocks
/// setting (0x2).
pub(super) const BENIGN_THROTTLE: u64 = 0x1 | 0x2;

pub(super) fn add_host(h: &mut HostSummary, samples: &[&SampleLine]) {
    for r in samples.iter().filter_map(|s| s.host.as_ref()) {
        h.readings += 1;
        let max = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(x), Some(y)) => Some(x.max(y)),
            (x, y) => x.or(y),
        };
        let min = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(x), Some(y)) => Some(x.min(y)),
            (x, y) => x.or(y),
        };
        h.steal_pct_max = max(h.steal_pct_max, r.steal_pct);
        h.load1_max = max(h.load1_max, r.load1);
        h.sm_clock_mhz_min = min(h.sm_clock_mhz_min, r.sm_clock_mhz);
        h.sm_clock_mhz_max = max(h.sm_clock_mhz_max, r.sm_clock_mhz);
        h.throttle_reasons |= r.throttle_reasons.unwrap_or(0) & !BENIGN_THROTTLE;
    }
}

/// Cells are told apart by their client configuration without the repeat.
pub(super) fn cell_label(p: &PointRecord) -> String {
    let c = &p.client;
    let size = match c.duration_s {
        Some(d) => format!("d={d}s"),
        None => format!("n={}", c.requests),
    };
    // Client threads change the client, not the load: a cell of its own, named only when above 1 so that
    // earlier runs keep their labels.
    let threads = if c.client_threads > 1 { format!(" client_threads={}", c.client_threads) } else { String::new() };
    format!(
        "c={} {size} max_tokens={} prompt={} prefix={} stream={} eos={}{threads}",
        c.concurrency, c.max_tokens, c.prompt_tokens, c.shared_prefix_tokens, c.stream, c.ignore_eos
    )
}
