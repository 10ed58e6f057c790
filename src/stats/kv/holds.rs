//! The KV findings checked again against their rows by a second, plainer path.

use super::*;

/// Two figures agree when they differ by rounding alone (the checks recompute them by other sums).
pub(super) fn same(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-6 * a.abs().max(b.abs()).max(1.0)
}

/// Slope and R² by the textbook sums, a second path beside `fit::linear`; None for fewer than two distinct x.
pub(super) fn plain_line(points: &[(f64, f64)]) -> Option<(f64, f64)> {
    let n = points.len() as f64;
    let (sx, sy) = points.iter().fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
    let (mx, my) = (sx / n, sy / n);
    let (mut sxx, mut syy, mut sxy) = (0.0, 0.0, 0.0);
    for (x, y) in points {
        sxx += (x - mx) * (x - mx);
        syy += (y - my) * (y - my);
        sxy += (x - mx) * (y - my);
    }
    (sxx > 0.0).then(|| (sxy / sxx, if syy > 0.0 { sxy * sxy / (sxx * syy) } else { 1.0 }))
}

impl KvFindings {
    /// Checks every finding against the rows it was drawn from by a second, plainer path: the spread, the line,
    /// the pools' request counts and the safe length are recomputed from the rows, each regime's and each
    /// pick's predicate is tested on them, and each "most" or "fewest" is checked to be so. Returns what
    /// disagrees.
    pub fn holds(&self, all: &[KvRow], request_len: Option<u64>) -> Vec<String> {
        let mut bad = Vec::new();
        let ok = successful(all);
        let mem: Vec<f64> = ok.iter().filter_map(|r| r.mem_used_mb).collect();
        let lens: Vec<u64> = ok.iter().filter_map(|r| r.max_model_len).collect();
        let points: Vec<(f64, f64)> = lens.iter().zip(&mem).map(|(l, m)| (*l as f64, *m)).collect();
        let line = plain_line(&points);
        let (lo, hi) =
            (mem.iter().copied().fold(f64::INFINITY, f64::min), mem.iter().copied().fold(f64::MIN, f64::max));
        let spread = 100.0 * (hi - lo) / (mem.iter().sum::<f64>() / mem.len().max(1) as f64);
        let (from, to) = (lens.first().copied().unwrap_or(0), lens.last().copied().unwrap_or(0));
        let tokens: Vec<u64> = ok.iter().filter_map(|r| r.kv_cache_tokens).collect();
        match (&self.regime, line) {
            (Regime::Insufficient, None) => {}
            (Regime::Flat { spread_mb, spread_pct, max_spread_pct, from: a, to: b, kv_tokens }, Some(_)) => {
                let flat = spread < *max_spread_pct;
                if !flat || !same(*spread_pct, spread) || !same(*spread_mb, hi - lo) {
                    bad.push(format!(
                        "flat: memory spread {spread:.3}% ({:.1} MiB) against {max_spread_pct}%",
                        hi - lo
                    ));
                }
                let one = tokens.first().copied().filter(|t| tokens.iter().all(|x| x == t));
                if (*a, *b) != (from, to) || *kv_tokens != one {
                    bad.push(format!(
                        "flat: lengths {a}–{b} and capacity {kv_tokens:?}; the rows give {from}–{to}, {one:?}"
                    ));
                }
            }
            (Regime::Linear { mb_per_1k_tokens, r2, min_r2, from: a, to: b }, Some((slope, plain_r2))) => {
                if spread < FLAT_SPREAD_PCT || !(slope > 0.0 && plain_r2 >= *min_r2) {
                    bad.push(format!("linear: spread {spread:.3}%, slope {slope:.6} MiB/token, R² {plain_r2:.4}"));
                }
                if !same(*mb_per_1k_tokens, slope * 1000.0) || !same(*r2, plain_r2) || (*a, *b) != (from, to) {
                    bad.push(format!("linear: {mb_per_1k_tokens:.3} MiB per 1,000 tokens, R² {r2:.4}; the rows give {:.3}, {plain_r2:.4}", slope * 1000.0));
                }
            }
            (Regime::Irregular { spread_pct, slope_mb_per_token, r2 }, Some((slope, plain_r2))) => {
                if spread < FLAT_SPREAD_PCT || (slope > 0.0 && plain_r2 >= LINEAR_MIN_R2) {
                    bad.push(format!("irregular: spread {spread:.3}%, slope {slope:.6} MiB/token, R² {plain_r2:.4}"));
                }
                if !same(*spread_pct, spread) || !same(*slope_mb_per_token, slope) || !same(*r2, plain_r2) {
                    bad.push("irregular: its figures are not the rows'".to_owned());
                }
            }
            (r, l) => bad.push(format!("{r:?} where the rows' line is {l:?}")),
        }
        if let Some(SlopeReading::PerKvToken {
            bytes_per_length_token,
            kv_tokens_per_length_token,
            bytes_per_kv_token,
        }) = &self.slope_reading
        {
            let tpoints: Vec<(f64, f64)> = lens.iter().zip(&tokens).map(|(l, t)| (*l as f64, *t as f64)).collect();
            let per = plain_line(&tpoints).map(|(s, _)| s).filter(|_| tokens.len() == lens.len());
            let mem_slope = line.map(|(s, _)| s * MIB);
            if per.is_none_or(|p| !same(p, *kv_tokens_per_length_token))
                || mem_slope.is_none_or(|m| !same(m, *bytes_per_length_token))
                || !same(*bytes_per_kv_token, bytes_per_length_token / kv_tokens_per_length_token)
            {
                bad.push(format!("bytes per KV token {bytes_per_kv_token:.1} is not the memory slope over the capacity slope {mem_slope:?}/{per:?}"));
            }
        }
        bad.extend(self.granularity_holds(&ok, line.map(|(s, _)| s), hi));
        bad.extend(self.envelope_holds(&ok, request_len));
        bad
    }

    /// Whole blocks, the steps off the line and the memory outside the pool, from the rows.
    fn granularity_holds(&self, ok: &[&KvRow], slope: Option<f64>, mem_max: f64) -> Vec<String> {
        let mut bad = Vec::new();
        let g = &self.granularity;
        let whole =
            g.block_size.is_some_and(|b| ok.iter().all(|r| r.kv_cache_tokens.is_none_or(|t| t % b.max(1) == 0)));
        if g.whole_blocks != whole {
            bad.push(format!("whole blocks: {} claimed, the capacities say {whole}", g.whole_blocks));
        }
        let tolerance = g.off_line_pct / 100.0 * mem_max.max(1.0);
        let off: Option<Vec<(u64, u64)>> = slope.map(|slope| {
            ok.windows(2)
                .filter_map(|w| {
                    let (a, b) = (w[0].max_model_len?, w[1].max_model_len?);
                    let delta = w[1].mem_used_mb? - w[0].mem_used_mb?;
                    ((delta - slope * (b as f64 - a as f64)).abs() > tolerance).then_some((a, b))
                })
                .collect()
        });
        let claimed = g.off_line.as_ref().map(|s| s.iter().map(|s| (s.from, s.to)).collect::<Vec<_>>());
        if claimed != off {
            bad.push(format!("steps off the line {claimed:?}; the rows give {off:?}"));
        }
        if let Some(o) = &self.outside {
            let outside: Vec<f64> = ok.iter().filter_map(|r| Some(r.mem_used_mb? - r.kv_cache_bytes? / MIB)).collect();
            let moved = outside.last().zip(outside.first()).map(|(l, f)| l - f);
            if !matches!(self.regime, Regime::Linear { .. }) || moved.is_none_or(|m| !same(m, o.moved_mb)) {
                bad.push(format!("memory outside the pool moved {:.1} MiB; the rows give {moved:?}", o.moved_mb));
            }
        }
        bad
    }

    /// Request counts, the safe length and the picks, from each row's KV tokens.
    fn envelope_holds(&self, ok: &[&KvRow], request_len: Option<u64>) -> Vec<String> {
        let mut bad = Vec::new();
        let block = self.block_size.unwrap_or(16).max(1);
        let whole = |t: u64| t.div_ceil(block) * block;
        // (max-model-len, usable KV tokens) of each row with a capacity.
        let pools: Vec<(u64, u64)> = ok
            .iter()
            .filter_map(|r| Some((r.max_model_len?, (r.kv_cache_tokens? as f64 * (1.0 - self.margin)) as u64)))
            .collect();
        let fits = |(m, usable): (u64, u64), len: u64| (len <= m).then(|| (usable / whole(len)).min(self.max_num_seqs));
        let four_k: Vec<u64> = pools.iter().filter_map(|p| fits(*p, FOUR_K)).collect();
        if self.concurrent_4k.iter().map(|h| h.requests).collect::<Vec<_>>() != four_k {
            bad.push(format!("concurrent 4K requests {:?}; the pools hold {four_k:?}", self.concurrent_4k));
        }
        let safe = pools.iter().filter(|(m, u)| *u >= self.headroom_requests * whole(*m)).map(|p| p.0).max();
        if self.safe_max_model_len != safe {
            bad.push(format!("safe max-model-len {:?}; the pools give {safe:?}", self.safe_max_model_len));
        }
        let full: Vec<u64> = pools.iter().map(|(m, u)| u / whole(*m)).collect();
        let one_length = ok.len() > 1 && ok.iter().all(|r| r.max_model_len == ok[0].max_model_len);
        match &self.latency_pick {
            LatencyPick::NoneSafe if safe.is_none() => {}
            LatencyPick::Length(h) if !one_length => {
                let at = pools.iter().position(|p| Some(p.0) == safe);
                if Some(h.max_model_len) != safe || at.map(|i| full[i]) != Some(h.requests) {
                    bad.push(format!("latency pick {h:?}; the safe length is {safe:?}"));
                }
            }
            LatencyPick::Setting { max_model_len, fewest, most } if one_length => {
                let (min, max) = (full.iter().min().copied(), full.iter().max().copied());
                if Some(*max_model_len) != safe || Some(fewest.requests) != min || Some(most.requests) != max {
                    bad.push(format!("latency pick: {fewest:?} and {most:?}; the pools hold {min:?} to {max:?}"));
                }
            }
            p => bad.push(format!("latency pick {p:?} where the safe length is {safe:?}")),
        }
        let len = request_len.unwrap_or(DEFAULT_REQUEST_LEN);
        let held: Vec<(u64, u64)> = pools.iter().filter_map(|p| Some((p.0, fits(*p, len)?))).collect();
        let most = held.iter().map(|h| h.1).max();
        let claim = |h: &Holding| Some(h.requests) == most && held.contains(&(h.max_model_len, h.requests));
        match &self.throughput_pick {
            ThroughputPick::NoneHolds { request_len } if held.is_empty() && *request_len == len => {}
            ThroughputPick::Setting { best, request_len } if one_length && *request_len == len && claim(best) => {}
            ThroughputPick::SameAtEveryLength { requests, request_len }
                if !one_length && *request_len == len && held.iter().all(|h| h.1 == *requests) && !held.is_empty() => {}
            ThroughputPick::Length { best, request_len }
                if !one_length
                    && *request_len == len
                    && claim(best)
                    && held.iter().any(|h| h.1 != best.requests)
                    && held.iter().filter(|h| Some(h.1) == most).all(|h| h.0 >= best.max_model_len) => {}
            p => bad.push(format!("throughput pick {p:?}; the pools hold {held:?} requests of {len} tokens")),
        }
        bad
    }
}
