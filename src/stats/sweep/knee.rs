//! A group's cells finished: headlines, intervals, efficiencies, the knee and its notes, and the rules of
//! thumb.

use super::*;

pub(super) fn finish_group(
    g: &mut GroupSweep,
    policy: RepeatPolicy,
    rules: &KneeRules,
    gpu_sampled: bool,
    measured: &[&RequestRecord],
) {
    for c in &mut g.cells {
        c.headline = headline(&c.repeats, policy);
        c.mean = (policy == RepeatPolicy::Mean).then(|| mean_repeat(&c.repeats));
        let tok: Vec<f64> = c.repeats.iter().map(|r| r.tok_s).collect();
        c.tok_s_ci = ci95(&tok);
        let e2e: Vec<f64> = c.repeats.iter().filter_map(|r| r.e2e.map(|s| s.mean)).collect();
        c.e2e_mean_ci = ci95(&e2e);
        let p95: Vec<f64> = c.repeats.iter().filter_map(|r| r.e2e.map(|s| s.p95)).collect();
        c.p95_ci = ci95(&p95);
    }
    g.cells.sort_by_key(|c| c.concurrency);
    let base = g.cells.iter().find(|c| c.concurrency == 1).map(|c| (c.head().tok_s, c.head().e2e.map(|s| s.p95)));
    for i in 0..g.cells.len() {
        if i > 0 && g.cells[i - 1].concurrency != g.cells[i].concurrency {
            let (prev, cur) = (&g.cells[i - 1], &g.cells[i]);
            let scale = f64::from(cur.concurrency) / f64::from(prev.concurrency.max(1));
            let ratios: Vec<f64> = paired_ratios(prev, cur, |r| Some(r.tok_s)).iter().map(|r| r / scale).collect();
            let step = (!ratios.is_empty()).then(|| crate::stats::summary::mean(&ratios));
            let ci = ci95(&ratios);
            g.cells[i].step_efficiency = step;
            g.cells[i].step_efficiency_ci = ci;
        }
        let c = &mut g.cells[i];
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
    let cvs: Vec<f64> = g.cells.iter().filter_map(Cell::tok_s_cv).collect();
    g.noise_floor = (!cvs.is_empty()).then(|| {
        let mut sorted = cvs.clone();
        sorted.sort_by(|a, b| a.total_cmp(b));
        (crate::stats::summary::percentile_sorted(&sorted, 50.0), sorted[sorted.len() - 1])
    });
    let mut levels: Vec<u32> = g.cells.iter().map(|c| c.concurrency).collect();
    levels.dedup();
    // Cells at one concurrency that differ in another load setting (a shared-prefix axis, say) are not one
    // curve against concurrency: no knee is claimed.
    g.knee = if levels.len() < g.cells.len() { Knee::not_a_curve(rules) } else { knee(&g.cells, rules) };
    for c in &mut g.cells {
        if Some(c.concurrency) == g.knee.throughput_knee {
            c.notes.push(CellNote::ThroughputKnee);
        }
        if Some(c.concurrency) == g.knee.latency_knee {
            c.notes.push(CellNote::LatencyBlowsUp);
        }
        if Some(c.concurrency) == g.knee.operating_point {
            c.notes.push(CellNote::OperatingPoint);
        }
        if g.knee.borderline.contains(&c.concurrency) {
            if straddles_at(&g.knee, c.concurrency) {
                c.notes.push(CellNote::Borderline);
            }
            if let Latency::BorderlineQueued(q) = &g.knee.latency
                && q.at == c.concurrency
            {
                c.notes.push(CellNote::BorderlineQueued { repeats_waiting: q.repeats_waiting, repeats: q.repeats });
            }
        }
    }
}

/// Whether a finding of the knee at `level` is borderline because its interval straddles the threshold
/// (rather than because only some repeats queued).
pub(super) fn straddles_at(k: &Knee, level: u32) -> bool {
    let throughput = matches!(&k.throughput, Throughput::Borderline(s) if s.to == level);
    let latency = matches!(&k.latency, Latency::Borderline(i) if i.at == level);
    let operating = matches!(
        &k.operating,
        Some(Operating::Point { next: Some(m), .. } | Operating::NoPoint { first: m, .. })
            if m.borderline && m.level.concurrency == level
    );
    throughput || latency || operating
}

/// Rules of thumb, each a computed fact with its numbers (templates word them).
pub fn rules_of_thumb(g: &GroupSweep) -> Thumbs {
    let cells = &g.cells;
    let (Some(first), Some(last)) = (cells.first(), cells.last()) else { return Thumbs::default() };
    let growth = match (last.speedup, last.efficiency) {
        (Some(speedup), Some(efficiency)) => Some(Growth {
            from: first.concurrency,
            to: last.concurrency,
            speedup,
            efficiency,
            tok_s_from: first.head().tok_s,
            tok_s_to: last.head().tok_s,
        }),
        _ => None,
    };
    let steps = cells
        .windows(2)
        .filter_map(|p| {
            Some(StepEfficiency {
                from: p[0].concurrency,
                to: p[1].concurrency,
                efficiency: p[1].step_efficiency?,
                ci: p[1].step_efficiency_ci,
            })
        })
        .collect();
    let at = g.knee.operating_point.and_then(|k| cells.iter().find(|c| c.concurrency == k)).unwrap_or(last);
    let gpu = at.head().gpu_util_pct.map(|util_pct| GpuAt {
        concurrency: at.concurrency,
        util_pct,
        readings: at.head().gpu_util_readings,
    });
    Thumbs { growth, steps, noise_floor: g.noise_floor, gpu }
}
