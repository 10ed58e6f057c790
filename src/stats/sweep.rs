//! From raw records to the sweep: per repeat figures, the headline repeat of each cell by the spec's policy,
//! intervals across repeats, efficiency against concurrency 1, validity flags, and the knee.

use super::summary::{Summary, ci95, summarize};
use crate::record::request::RequestRecord;
use crate::record::{PointRecord, SampleLine, Status};
use crate::spec::{KneeRules, RepeatPolicy};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Figures of one repeat of one cell.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RepeatStats {
    pub point: String,
    pub attempt: u32,
    pub repeat: u32,
    pub wall_s: f64,
    pub requests: usize,
    pub ok: usize,
    pub errors: BTreeMap<String, usize>,
    pub completion_tokens: u64,
    pub qps: f64,
    pub tok_s: f64,
    pub e2e: Option<Summary>,
    pub ttft: Option<Summary>,
    pub itl_p50_s: Option<f64>,
    pub mean_lag_s: f64,
    pub short_outputs: usize,
    pub server_generation_tokens: Option<f64>,
    pub server_mean_e2e_s: Option<f64>,
    pub server_mean_ttft_s: Option<f64>,
    pub prefix_hits: Option<f64>,
    pub waiting_max: Option<f64>,
    pub kv_usage_max: Option<f64>,
    pub preemptions: Option<f64>,
    pub gpu_util_pct: Option<f64>,
}

/// All repeats of one client configuration against one server.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Cell {
    pub group: String,
    pub concurrency: u32,
    pub max_tokens: u32,
    pub ignore_eos: bool,
    pub shared_prefix_tokens: u32,
    pub label: String,
    pub repeats: Vec<RepeatStats>,
    /// Index into `repeats` of the headline repeat.
    pub headline: usize,
    pub tok_s_ci: Option<(f64, f64)>,
    pub e2e_mean_ci: Option<(f64, f64)>,
    /// S(c) = tok_s(c) / tok_s(1) of the same server; None without a concurrency-1 cell.
    pub speedup: Option<f64>,
    /// S(c) / c.
    pub efficiency: Option<f64>,
    /// p95(c) / p95(1).
    pub p95_inflation: Option<f64>,
    pub notes: Vec<String>,
}

impl Cell {
    pub fn head(&self) -> &RepeatStats {
        &self.repeats[self.headline]
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Knee {
    /// The last level that still scaled, when a later one stopped scaling.
    pub throughput_knee: Option<u32>,
    /// Which rule found it: `efficiency` (scaling fell below the share of linear) or `gain` (a step gained
    /// too little).
    #[serde(default)]
    pub throughput_reason: Option<String>,
    pub throughput_finding: String,
    /// The first level where latency blew up.
    pub latency_knee: Option<u32>,
    pub latency_finding: String,
    /// The thresholds, in words.
    pub rule: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GroupSweep {
    pub group: String,
    pub cells: Vec<Cell>,
    pub knee: Knee,
    pub policy: RepeatPolicy,
}

fn repeat_stats(p: &PointRecord, reqs: &[&RequestRecord], samples: &[&SampleLine]) -> RepeatStats {
    let ok: Vec<&&RequestRecord> = reqs.iter().filter(|r| r.ok()).collect();
    let mut errors = BTreeMap::new();
    for r in reqs.iter().filter(|r| !r.ok()) {
        *errors.entry(r.error.as_ref().map(|e| String::from(e.kind)).unwrap_or_default()).or_insert(0) += 1;
    }
    let tokens = |r: &RequestRecord| u64::from(r.completion_tokens.unwrap_or(r.chunks));
    let completion_tokens: u64 = ok.iter().map(|r| tokens(r)).sum();
    let wall = p.wall_s.max(1e-9);
    let mut gaps: Vec<f64> = ok.iter().flat_map(|r| r.gaps_s()).collect();
    gaps.sort_by(|a, b| a.total_cmp(b));
    let delta = match (&p.before, &p.after) {
        (Some(b), Some(a)) => Some(crate::probe::metrics::delta(b, a)),
        _ => None,
    };
    let metric_max = |f: fn(&crate::probe::metrics::Snapshot) -> Option<f64>| {
        samples.iter().filter_map(|s| s.metrics.as_ref().and_then(f)).reduce(f64::max)
    };
    let utils: Vec<f64> = samples.iter().filter_map(|s| s.gpu_util_pct).collect();
    RepeatStats {
        point: p.point.clone(),
        attempt: p.attempt,
        repeat: p.repeat,
        wall_s: p.wall_s,
        requests: reqs.len(),
        ok: ok.len(),
        errors,
        completion_tokens,
        qps: ok.len() as f64 / wall,
        tok_s: completion_tokens as f64 / wall,
        e2e: summarize(ok.iter().map(|r| r.e2e_s())),
        ttft: summarize(ok.iter().filter_map(|r| r.ttft_s())),
        itl_p50_s: (!gaps.is_empty()).then(|| super::summary::percentile_sorted(&gaps, 50.0)),
        mean_lag_s: super::summary::mean(&ok.iter().map(|r| r.lag_s()).collect::<Vec<_>>()),
        short_outputs: if p.client.ignore_eos {
            ok.iter().filter(|r| tokens(r) < u64::from(p.client.max_tokens)).count()
        } else {
            0
        },
        server_generation_tokens: delta.as_ref().and_then(|d| d.generation_tokens),
        server_mean_e2e_s: delta.as_ref().and_then(|d| d.mean_e2e_s),
        server_mean_ttft_s: delta.as_ref().and_then(|d| d.mean_ttft_s),
        prefix_hits: delta.as_ref().and_then(|d| d.prefix_hits),
        waiting_max: metric_max(|m| m.waiting),
        kv_usage_max: metric_max(|m| m.kv_usage),
        preemptions: delta.as_ref().and_then(|d| d.preemptions),
        gpu_util_pct: (!utils.is_empty()).then(|| super::summary::mean(&utils)),
    }
}

/// The headline repeat: best or median by tokens/s (the lower median for an even count).
fn headline(repeats: &[RepeatStats], policy: RepeatPolicy) -> usize {
    let mut order: Vec<usize> = (0..repeats.len()).collect();
    order.sort_by(|a, b| repeats[*a].tok_s.total_cmp(&repeats[*b].tok_s));
    match policy {
        RepeatPolicy::Best => *order.last().unwrap_or(&0),
        RepeatPolicy::Median => order[(order.len().saturating_sub(1)) / 2],
    }
}

fn flags(cell: &Cell, gpu_sampled: bool, all_requests: &[&RequestRecord]) -> Vec<String> {
    let h = cell.head();
    let mut notes = Vec::new();
    if !h.errors.is_empty() {
        let kinds: Vec<String> = h.errors.iter().map(|(k, n)| format!("{k} {n}")).collect();
        notes.push(format!("errors: {} ({})", h.errors.values().sum::<usize>(), kinds.join(", ")));
    }
    if h.short_outputs > 0 {
        notes.push(format!("{} outputs shorter than max_tokens", h.short_outputs));
    }
    if let Some(e2e) = &h.e2e
        && h.mean_lag_s > 0.05 * e2e.mean
    {
        notes.push(format!("client lag: dispatch delay {:.0}% of e2e", 100.0 * h.mean_lag_s / e2e.mean));
    }
    let client_tokens: u64 = all_requests
        .iter()
        .filter(|r| r.point == h.point && r.attempt == h.attempt && !r.warmup)
        .map(|r| u64::from(r.completion_tokens.unwrap_or(r.chunks)))
        .sum();
    if let Some(server) = h.server_generation_tokens
        && (server - client_tokens as f64).abs() > 0.5
    {
        notes.push(format!("client/server tokens differ: {client_tokens} vs {server:.0}"));
    }
    if cell.shared_prefix_tokens == 0 && h.prefix_hits.is_some_and(|hits| hits > 0.0) {
        notes.push(format!(
            "warm prefix cache: {:.0} prompt tokens hit although prompts were unique",
            h.prefix_hits.unwrap_or(0.0)
        ));
    }
    if !gpu_sampled {
        notes.push("no GPU: gpu_util_pct not measured".to_owned());
    }
    notes
}

/// Groups points into cells per server group, in plan order.
pub fn analyze(
    points: &[PointRecord],
    requests: &[RequestRecord],
    samples: &[SampleLine],
    policy: RepeatPolicy,
    rules: &KneeRules,
) -> Vec<GroupSweep> {
    let measured: Vec<&RequestRecord> = requests.iter().filter(|r| !r.warmup).collect();
    let mut groups: Vec<GroupSweep> = Vec::new();
    for p in points.iter().filter(|p| p.status == Status::Ok) {
        let label = cell_label(p);
        let reqs: Vec<&RequestRecord> =
            measured.iter().copied().filter(|r| r.point == p.point && r.attempt == p.attempt).collect();
        let samps: Vec<&SampleLine> = samples.iter().filter(|s| s.point == p.point && s.attempt == p.attempt).collect();
        let stats = repeat_stats(p, &reqs, &samps);
        let gi = match groups.iter().position(|g| g.group == p.group) {
            Some(i) => i,
            None => {
                groups.push(GroupSweep { group: p.group.clone(), cells: Vec::new(), knee: no_knee(rules), policy });
                groups.len() - 1
            }
        };
        let cells = &mut groups[gi].cells;
        match cells.iter_mut().find(|c| c.label == label) {
            Some(c) => c.repeats.push(stats),
            None => cells.push(Cell {
                group: p.group.clone(),
                concurrency: p.client.concurrency,
                max_tokens: p.client.max_tokens,
                ignore_eos: p.client.ignore_eos,
                shared_prefix_tokens: p.client.shared_prefix_tokens,
                label,
                repeats: vec![stats],
                headline: 0,
                tok_s_ci: None,
                e2e_mean_ci: None,
                speedup: None,
                efficiency: None,
                p95_inflation: None,
                notes: Vec::new(),
            }),
        }
    }
    let gpu_sampled = points.iter().any(|p| p.gpu_sampled);
    for g in &mut groups {
        finish_group(g, policy, rules, gpu_sampled, &measured);
    }
    groups
}

/// Cells are told apart by their client configuration without the repeat.
fn cell_label(p: &PointRecord) -> String {
    let c = &p.client;
    format!(
        "c={} n={} max_tokens={} prompt={} prefix={} stream={} eos={}",
        c.concurrency, c.requests, c.max_tokens, c.prompt_tokens, c.shared_prefix_tokens, c.stream, c.ignore_eos
    )
}

fn finish_group(
    g: &mut GroupSweep,
    policy: RepeatPolicy,
    rules: &KneeRules,
    gpu_sampled: bool,
    measured: &[&RequestRecord],
) {
    for c in &mut g.cells {
        c.headline = headline(&c.repeats, policy);
        let tok: Vec<f64> = c.repeats.iter().map(|r| r.tok_s).collect();
        c.tok_s_ci = ci95(&tok);
        let e2e: Vec<f64> = c.repeats.iter().filter_map(|r| r.e2e.map(|s| s.mean)).collect();
        c.e2e_mean_ci = ci95(&e2e);
    }
    g.cells.sort_by_key(|c| c.concurrency);
    let base = g.cells.iter().find(|c| c.concurrency == 1).map(|c| (c.head().tok_s, c.head().e2e.map(|s| s.p95)));
    for c in &mut g.cells {
        if let Some((tok1, p95_1)) = base {
            c.speedup = (tok1 > 0.0).then(|| c.head().tok_s / tok1);
            c.efficiency = c.speedup.map(|s| s / f64::from(c.concurrency));
            c.p95_inflation = match (c.head().e2e, p95_1) {
                (Some(s), Some(p)) if p > 0.0 => Some(s.p95 / p),
                _ => None,
            };
        }
        c.notes = flags(c, gpu_sampled, measured);
    }
    g.knee = knee(&g.cells, rules);
    for c in &mut g.cells {
        if Some(c.concurrency) == g.knee.throughput_knee {
            c.notes.push("throughput knee".to_owned());
        }
        if Some(c.concurrency) == g.knee.latency_knee {
            c.notes.push("latency blows up here".to_owned());
        }
    }
}

fn no_knee(rules: &KneeRules) -> Knee {
    Knee {
        throughput_knee: None,
        throughput_reason: None,
        throughput_finding: String::new(),
        latency_knee: None,
        latency_finding: String::new(),
        rule: rule_text(rules),
    }
}

pub fn rule_text(r: &KneeRules) -> String {
    format!(
        "throughput stops scaling at the first level whose efficiency S(c)/c < {} or whose tokens/s gain over the previous level < {:.0}%; latency blows up at the first level whose p95 e2e > {}× the p95 at concurrency 1{}",
        r.efficiency_min,
        r.marginal_gain_min * 100.0,
        r.p95_inflation_max,
        if r.waiting_counts { ", or where the server had requests waiting" } else { "" }
    )
}

/// The knee over one server's levels, sorted by concurrency. "No knee within the tested range" is a finding.
pub fn knee(cells: &[Cell], rules: &KneeRules) -> Knee {
    let mut k = no_knee(rules);
    let range = match (cells.first(), cells.last()) {
        (Some(a), Some(b)) => format!("{}–{}", a.concurrency, b.concurrency),
        _ => "none".to_owned(),
    };
    for pair in cells.windows(2) {
        let (prev, cur) = (&pair[0], &pair[1]);
        let gain = if prev.head().tok_s > 0.0 { cur.head().tok_s / prev.head().tok_s - 1.0 } else { 0.0 };
        let eff_low = cur.efficiency.is_some_and(|e| e < rules.efficiency_min);
        if eff_low || gain < rules.marginal_gain_min {
            k.throughput_knee = Some(prev.concurrency);
            k.throughput_reason = Some(if eff_low { "efficiency" } else { "gain" }.to_owned());
            k.throughput_finding = if eff_low {
                format!(
                    "throughput stops scaling efficiently after concurrency {}: at {} the efficiency S(c)/c is {:.3} (< {}), although tokens/s still grew {:.0}%",
                    prev.concurrency,
                    cur.concurrency,
                    cur.efficiency.unwrap_or(0.0),
                    rules.efficiency_min,
                    gain * 100.0
                )
            } else {
                format!(
                    "throughput stops scaling after concurrency {}: going to {} gains {:.0}% tokens/s (< {:.0}%)",
                    prev.concurrency,
                    cur.concurrency,
                    gain * 100.0,
                    rules.marginal_gain_min * 100.0
                )
            };
            break;
        }
    }
    if k.throughput_knee.is_none() {
        k.throughput_finding = format!(
            "no throughput knee within the tested range ({range}): every step gained at least {:.0}% tokens/s",
            rules.marginal_gain_min * 100.0
        );
    }
    for c in cells {
        let inflated = c.p95_inflation.is_some_and(|x| x > rules.p95_inflation_max);
        let waiting = rules.waiting_counts && c.head().waiting_max.is_some_and(|w| w > 0.0);
        if inflated || waiting {
            k.latency_knee = Some(c.concurrency);
            k.latency_finding = if inflated {
                format!(
                    "latency blows up at concurrency {}: p95 e2e is {:.1}× that at concurrency 1 (> {}×)",
                    c.concurrency,
                    c.p95_inflation.unwrap_or(0.0),
                    rules.p95_inflation_max
                )
            } else {
                format!(
                    "latency blows up at concurrency {}: the server queued requests (up to {:.0} waiting)",
                    c.concurrency,
                    c.head().waiting_max.unwrap_or(0.0)
                )
            };
            break;
        }
    }
    if k.latency_knee.is_none() {
        k.latency_finding = format!("no latency blow-up within the tested range ({range})");
    }
    k
}

/// 3–5 rules of thumb, each computed from the sweep (never a fixed sentence with numbers filled in by hand).
pub fn rules_of_thumb(g: &GroupSweep, rules: &KneeRules) -> Vec<String> {
    let cells = &g.cells;
    let mut out = Vec::new();
    let (Some(first), Some(last)) = (cells.first(), cells.last()) else { return out };
    // The sweet spot: levels up to the throughput knee and below the latency knee that keep efficiency and
    // p95 within the rules.
    let upper =
        g.knee.throughput_knee.unwrap_or(u32::MAX).min(g.knee.latency_knee.map_or(u32::MAX, |k| k.saturating_sub(1)));
    let sweet: Vec<u32> = cells
        .iter()
        .filter(|c| c.concurrency <= upper)
        .filter(|c| {
            c.efficiency.is_some_and(|e| e >= rules.efficiency_min)
                && c.p95_inflation.is_none_or(|p| p <= rules.p95_inflation_max)
                && c.head().errors.is_empty()
        })
        .map(|c| c.concurrency)
        .collect();
    match (sweet.first(), sweet.last()) {
        (Some(a), Some(b)) if a != b => out.push(format!("Concurrency {a}–{b} is the sweet spot here: efficiency S(c)/c stays at or above {} and p95 e2e within {}× of sequential.", rules.efficiency_min, rules.p95_inflation_max)),
        (Some(a), _) => out.push(format!("Only concurrency {a} keeps efficiency at or above {} with p95 within {}× of sequential.", rules.efficiency_min, rules.p95_inflation_max)),
        _ => {}
    }
    if let Some(s) = last.speedup {
        out.push(format!(
            "Batching multiplies throughput by {s:.1}× from 1 to {} concurrent requests ({:.0} → {:.0} tokens/s).",
            last.concurrency,
            first.head().tok_s,
            last.head().tok_s
        ));
    }
    match g.knee.throughput_knee {
        Some(k) => {
            let after: Vec<String> = cells
                .iter()
                .filter(|c| c.concurrency > k)
                .map(|c| format!("{}: {:.0} tok/s", c.concurrency, c.head().tok_s))
                .collect();
            if g.knee.throughput_reason.as_deref() == Some("efficiency") {
                out.push(format!("Beyond concurrency {k}, throughput grows less than {}× as fast as concurrency ({}): more requests in flight buy throughput at a rising latency cost.", rules.efficiency_min, after.join(", ")));
            } else {
                out.push(format!("Beyond concurrency {k}, throughput stops scaling ({}).", after.join(", ")));
            }
        }
        None => out.push(format!(
            "Throughput was still scaling at concurrency {}: the knee lies beyond the tested range.",
            last.concurrency
        )),
    }
    match g.knee.latency_knee {
        Some(k) => {
            let c = cells.iter().find(|c| c.concurrency == k);
            let p95 = c.and_then(|c| c.head().e2e.map(|e| e.p95)).unwrap_or(f64::NAN);
            out.push(format!(
                "From concurrency {k}, p95 e2e blows up: {:.0} ms, {:.1}× sequential{}.",
                p95 * 1e3,
                c.and_then(|c| c.p95_inflation).unwrap_or(f64::NAN),
                if c.is_some_and(|c| c.head().waiting_max.unwrap_or(0.0) > 0.0) {
                    ", with requests queueing at the server"
                } else {
                    ""
                }
            ));
        }
        None => out.push(format!(
            "p95 e2e stays within {}× of sequential up to concurrency {} ({:.0} ms).",
            rules.p95_inflation_max,
            last.concurrency,
            last.head().e2e.map(|e| e.p95 * 1e3).unwrap_or(f64::NAN)
        )),
    }
    let knee_cell = g.knee.throughput_knee.and_then(|k| cells.iter().find(|c| c.concurrency == k)).unwrap_or(last);
    match knee_cell.head().gpu_util_pct {
        Some(u) => out.push(format!("GPU utilisation at concurrency {} (the knee, or the top of the range) averaged {u:.0}%.", knee_cell.concurrency)),
        None => out.push("No GPU was sampled in this run, so utilisation at the knee is not known; on a GPU, `nvidia-smi dmon` would show it.".to_owned()),
    }
    out.truncate(5);
    out
}
