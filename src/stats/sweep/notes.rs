//! A cell's notes: built where their predicates hold (`flags`, `gap_note`) and checked again (`notes_hold`).

use super::*;

/// CPU steal on a slot's cores at or above this share of their time flags a cell as contended.
pub(super) const STEAL_CONTENDED_PCT: f64 = 5.0;

/// Prompts no two of which share a prefix: random ones without `shared_prefix_tokens`.
fn prompts_unique(cell: &Cell) -> bool {
    cell.shared_prefix_tokens == 0 && !cell.shared_by_design
}

pub(super) fn flags(cell: &Cell, gpu_sampled: bool, all_requests: &[&RequestRecord]) -> Vec<CellNote> {
    let h = cell.head();
    let mut notes = Vec::new();
    if !h.errors.is_empty() {
        let by_kind = h.errors.iter().map(|(k, n)| (k.clone(), *n)).collect();
        notes.push(CellNote::Errors { total: h.errors.values().sum::<usize>(), by_kind });
    }
    if h.short_outputs > 0 {
        notes.push(CellNote::ShortOutputs { n: h.short_outputs });
    }
    let lagged = h.e2e.as_ref().is_some_and(|e2e| h.mean_lag_s > 0.05 * e2e.mean);
    if let Some(e2e) = h.e2e.as_ref().filter(|_| lagged) {
        notes.push(CellNote::ClientLag { pct: 100.0 * h.mean_lag_s / e2e.mean });
    }
    let beside = cell.repeats.iter().map(|r| r.beside).max().unwrap_or(0);
    if beside > 0 {
        notes.push(CellNote::Beside { servers: beside });
        if lagged {
            notes.push(CellNote::ContendedLag);
        }
        let steal = cell.repeats.iter().filter_map(|r| r.steal_pct_max).reduce(f64::max);
        if let Some(steal_pct) = steal.filter(|s| *s >= STEAL_CONTENDED_PCT) {
            notes.push(CellNote::ContendedSteal { steal_pct });
        }
        if cell.repeats.iter().any(|r| r.switch_shared) {
            notes.push(CellNote::ContendedSwitch);
        }
    }
    for r in &cell.repeats {
        let client: u64 = all_requests
            .iter()
            .filter(|q| q.point == r.point && q.attempt == r.attempt && !q.warmup)
            .map(|q| u64::from(q.completion_tokens.unwrap_or(q.chunks)))
            .sum();
        if let Some(server) = r.server_generation_tokens
            && (server - client as f64).abs() > 0.5
        {
            notes.push(CellNote::TokensDiffer { repeat: r.repeat, client, server });
        }
    }
    if let Some(hits) = h.prefix_hits.filter(|hits| prompts_unique(cell) && *hits > 0.0) {
        notes.push(CellNote::WarmPrefix { hits });
    }
    let whole = cell.repeats.iter().filter(|r| r.window_s.is_none()).count();
    if whole > 0 {
        notes.push(CellNote::WindowTooShort {
            repeats: whole,
            of: cell.repeats.len(),
            min_completions: window::min_completions(cell.concurrency),
        });
    }
    if h.itl_p50_s.is_some() && !h.itl_per_token {
        notes.push(CellNote::PerChunkItl);
    }
    if !gpu_sampled {
        notes.push(CellNote::NoGpu);
    } else if h.gpu_util_pct.is_none() {
        notes.push(CellNote::FewGpuReadings { min: MIN_GPU_READINGS });
    }
    if let Some(n) = gap_note(h) {
        notes.push(n);
    }
    notes
}

/// A client-server gap above max(5 ms, 5%) of vLLM's own mean, with what it is.
pub(super) fn gap_note(h: &RepeatStats) -> Option<CellNote> {
    let (gap, server) = (h.e2e_gap_s?, h.server_mean_e2e_s?);
    if gap.abs() <= (0.005f64).max(0.05 * server) {
        return None;
    }
    let before_first = h.ttft_gap_s.unwrap_or(0.0);
    let cause = if gap < 0.0 {
        GapCause::ServerLonger
    } else if h.mean_lag_s > 0.5 * gap.abs() {
        GapCause::ClientLag
    } else if before_first > 0.5 * gap {
        GapCause::Frontend
    } else {
        GapCause::Transport
    };
    Some(CellNote::Gap { gap_ms: gap * 1e3, pct: 100.0 * gap / server, before_first_ms: before_first * 1e3, cause })
}

/// Checks each note of a cell as written against the cell's own figures and the group's knee, by the
/// predicates alone: every note's numbers and condition, and every knee level's note present. Returns what
/// disagrees. (Notes drawn from records the cell does not carry — the client's token count, whether a GPU
/// was sampled — are checked for what the cell does carry.)
pub fn notes_hold(c: &Cell, knee: &Knee, precision: Option<f64>) -> Vec<String> {
    let h = c.head();
    let mut bad = Vec::new();
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0);
    let beside = c.repeats.iter().map(|r| r.beside).max().unwrap_or(0);
    let lag_pct = h.e2e.filter(|e| h.mean_lag_s > 0.05 * e.mean).map(|e| 100.0 * h.mean_lag_s / e.mean);
    for n in &c.notes {
        let ok = match n {
            CellNote::Errors { total, by_kind } => {
                *total > 0
                    && *total == h.errors.values().sum::<usize>()
                    && by_kind.iter().all(|(k, n)| h.errors.get(k) == Some(n))
                    && by_kind.len() == h.errors.len()
            }
            CellNote::ShortOutputs { n } => *n > 0 && *n == h.short_outputs,
            CellNote::ClientLag { pct } => lag_pct.is_some_and(|p| close(p, *pct)),
            CellNote::Beside { servers } => *servers > 0 && *servers == beside,
            CellNote::ContendedLag => beside > 0 && lag_pct.is_some(),
            CellNote::ContendedSteal { steal_pct } => {
                beside > 0
                    && *steal_pct >= STEAL_CONTENDED_PCT
                    && c.repeats.iter().filter_map(|r| r.steal_pct_max).reduce(f64::max) == Some(*steal_pct)
            }
            CellNote::ContendedSwitch => beside > 0 && c.repeats.iter().any(|r| r.switch_shared),
            CellNote::TokensDiffer { repeat, client, server } => {
                (server - *client as f64).abs() > 0.5
                    && c.repeats.iter().any(|r| r.repeat == *repeat && r.server_generation_tokens == Some(*server))
            }
            CellNote::WarmPrefix { hits } => prompts_unique(c) && *hits > 0.0 && h.prefix_hits == Some(*hits),
            CellNote::WindowTooShort { repeats, of, .. } => {
                *repeats > 0
                    && *of == c.repeats.len()
                    && *repeats == c.repeats.iter().filter(|r| r.window_s.is_none()).count()
            }
            CellNote::PerChunkItl => h.itl_p50_s.is_some() && !h.itl_per_token,
            CellNote::NoGpu => h.gpu_util_pct.is_none(),
            CellNote::FewGpuReadings { min } => h.gpu_util_pct.is_none() && h.gpu_util_readings < *min,
            CellNote::Gap { gap_ms, pct, before_first_ms, cause } => {
                gap_holds(h, (*gap_ms, *pct, *before_first_ms), *cause, close)
            }
            CellNote::PrecisionMissed { halfwidth_pct, repeats, target_pct } => {
                precision.is_some_and(|t| close(t * 100.0, *target_pct))
                    && *halfwidth_pct > *target_pct
                    && *repeats == c.repeats.len()
                    && c.tok_s_rel_halfwidth().is_some_and(|x| close(x * 100.0, *halfwidth_pct))
            }
            CellNote::ThroughputKnee => knee.throughput_knee == Some(c.concurrency),
            CellNote::LatencyBlowsUp => knee.latency_knee == Some(c.concurrency),
            CellNote::OperatingPoint => knee.operating_point == Some(c.concurrency),
            CellNote::Borderline => knee.borderline.contains(&c.concurrency) && straddles_at(knee, c.concurrency),
            CellNote::BorderlineQueued { repeats_waiting, repeats } => {
                let waited = c.repeats.iter().filter(|r| r.waiting_max.is_some_and(|w| w > 0.0)).count();
                knee.borderline.contains(&c.concurrency)
                    && *repeats_waiting == waited
                    && *repeats == c.repeats.len()
                    && waited > 0
                    && waited < *repeats
            }
        };
        if !ok {
            bad.push(format!("concurrency {}: the note {n:?} does not hold against its figures", c.concurrency));
        }
    }
    for what in missing_notes(c, knee, precision, lag_pct, beside) {
        bad.push(format!("concurrency {}: {what} without its note", c.concurrency));
    }
    bad
}

/// The notes a cell's figures call for that it does not carry.
fn missing_notes(
    c: &Cell,
    knee: &Knee,
    precision: Option<f64>,
    lag_pct: Option<f64>,
    beside: usize,
) -> Vec<&'static str> {
    let h = c.head();
    let has = |f: fn(&CellNote) -> bool| c.notes.iter().any(f);
    let missing = [
        (!h.errors.is_empty() && !has(|n| matches!(n, CellNote::Errors { .. })), "errors"),
        (h.short_outputs > 0 && !has(|n| matches!(n, CellNote::ShortOutputs { .. })), "short outputs"),
        (lag_pct.is_some() && !has(|n| matches!(n, CellNote::ClientLag { .. })), "client lag"),
        (beside > 0 && !has(|n| matches!(n, CellNote::Beside { .. })), "other servers up"),
        (
            c.repeats.iter().any(|r| r.window_s.is_none()) && !has(|n| matches!(n, CellNote::WindowTooShort { .. })),
            "a window too short",
        ),
        (knee.throughput_knee == Some(c.concurrency) && !has(|n| matches!(n, CellNote::ThroughputKnee)), "the knee"),
        (knee.latency_knee == Some(c.concurrency) && !has(|n| matches!(n, CellNote::LatencyBlowsUp)), "the blow-up"),
        (
            knee.operating_point == Some(c.concurrency) && !has(|n| matches!(n, CellNote::OperatingPoint)),
            "the operating point",
        ),
        (
            knee.borderline.contains(&c.concurrency)
                && !has(|n| matches!(n, CellNote::Borderline | CellNote::BorderlineQueued { .. })),
            "borderline",
        ),
        (
            precision.is_some_and(|t| c.tok_s_rel_halfwidth().is_some_and(|x| x > t))
                && !has(|n| matches!(n, CellNote::PrecisionMissed { .. })),
            "the precision missed",
        ),
    ];
    missing.iter().filter(|(m, _)| *m).map(|(_, what)| *what).collect()
}

/// A gap note's figures and cause from the repeat's own gap, plainly.
fn gap_holds(
    h: &RepeatStats,
    (gap_ms, pct, before_first_ms): (f64, f64, f64),
    cause: GapCause,
    close: impl Fn(f64, f64) -> bool,
) -> bool {
    match (h.e2e_gap_s, h.server_mean_e2e_s) {
        (Some(gap), Some(server)) => {
            let first = h.ttft_gap_s.unwrap_or(0.0);
            let plain = if gap < 0.0 {
                GapCause::ServerLonger
            } else if h.mean_lag_s > gap.abs() / 2.0 {
                GapCause::ClientLag
            } else if first > gap / 2.0 {
                GapCause::Frontend
            } else {
                GapCause::Transport
            };
            gap.abs() > (0.005f64).max(0.05 * server)
                && close(gap_ms, gap * 1e3)
                && close(pct, 100.0 * gap / server)
                && close(before_first_ms, first * 1e3)
                && cause == plain
        }
        _ => false,
    }
}
