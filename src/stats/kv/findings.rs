//! The KV findings built from the rows: the regime, the slope, the pools, the envelope and the picks, each
//! only where its predicate holds.

use super::*;

pub(super) fn arg_u64(argv: &[String], flag: &str) -> Option<u64> {
    argv.iter().position(|a| a == flag).and_then(|i| argv.get(i + 1)).and_then(|v| v.parse().ok())
}

/// Rounds a request up to whole KV blocks, as vLLM allocates them.
pub(super) fn blocks(tokens: u64, block: u64) -> u64 {
    tokens.div_ceil(block.max(1)) * block.max(1)
}

/// The rows the findings read: started, with a length and a memory reading.
pub(super) fn successful(all: &[KvRow]) -> Vec<&KvRow> {
    all.iter().filter(|r| r.status == Status::Ok && r.max_model_len.is_some() && r.mem_used_mb.is_some()).collect()
}

/// `request_len`: tokens per request (prompt + output) of the workload the throughput pick is for (4096
/// when the spec's `report_options.request_len` is unset).
pub fn findings(records: &[ServerRecord], request_len: Option<u64>) -> KvFindings {
    let block = records.iter().find_map(|r| r.cache_config_info.as_ref()?.get("block_size")?.parse::<u64>().ok());
    let argv = records.first().map(|r| r.argv.clone()).unwrap_or_default();
    let seqs = match arg_u64(&argv, "--max-num-seqs") {
        Some(n) => (n, SeqsSource::Flag),
        // The default depends on the device: large GPUs (H100/H200 class, 70 GiB and more) get 1024.
        None => match records.iter().find_map(|r| r.at_ready.as_ref()?.device_total_mb) {
            Some(total) if total >= 70.0 * 1024.0 => (DEFAULT_MAX_NUM_SEQS_LARGE_GPU, SeqsSource::LargeGpuDefault),
            _ => (DEFAULT_MAX_NUM_SEQS, SeqsSource::Default),
        },
    };
    findings_of(&rows(records), block, seqs, request_len)
}

/// The findings over rows, given the engine's KV block size and `--max-num-seqs` (what `findings` reads off
/// the records besides the rows).
pub fn findings_of(
    all: &[KvRow],
    block: Option<u64>,
    (max_num_seqs, seqs_source): (u64, SeqsSource),
    request_len: Option<u64>,
) -> KvFindings {
    let ok = successful(all);
    let xs: Vec<f64> = ok.iter().map(|r| r.max_model_len.unwrap_or(0) as f64).collect();
    let ys: Vec<f64> = ok.iter().map(|r| r.mem_used_mb.unwrap_or(0.0)).collect();
    let fit = fit::linear(&xs, &ys).map(|f| FitOut {
        slope_mb_per_token: f.slope,
        slope_bytes_per_token: f.slope * MIB,
        intercept_mb: f.intercept,
        r2: f.r2,
    });
    let (mem_min, mem_max) = (ys.iter().cloned().reduce(f64::min), ys.iter().cloned().reduce(f64::max));
    let spread = match (mem_min, mem_max) {
        (Some(a), Some(b)) if !ys.is_empty() => Some(100.0 * (b - a) / (ys.iter().sum::<f64>() / ys.len() as f64)),
        _ => None,
    };
    let kv_tokens: Vec<f64> = ok.iter().filter_map(|r| r.kv_cache_tokens.map(|t| t as f64)).collect();
    let tokens_fit = if kv_tokens.len() == xs.len() { fit::linear(&xs, &kv_tokens) } else { None };
    let theory = ok.iter().find_map(|r| r.theory_bytes_per_token);
    let engine = engine_bytes_per_token(&ok);
    let memory = match ok.first().map(|r| r.memory_source) {
        Some(Source::Procfs) => MemoryKind::ServerRss,
        Some(_) => MemoryKind::DeviceUsed,
        None => MemoryKind::Unknown,
    };
    let lengths: Vec<u64> = ok.iter().filter_map(|r| r.max_model_len).collect();
    let steps = steps(&ok, fit.as_ref());
    let regime = regime(&ok, &lengths, spread, (mem_min, mem_max), fit.as_ref());
    let (slope_reading, bytes_per_token_slope) = slope_reading(&regime, fit.as_ref(), tokens_fit);
    let granularity = granularity(&ok, &steps, block, engine.or(theory.map(|t| t as f64)), mem_max, fit.is_some());
    let mut f = KvFindings {
        lengths,
        failed: failed(all),
        memory,
        mem_min_mb: mem_min,
        mem_max_mb: mem_max,
        memory_spread_pct: spread,
        fit: fit.clone(),
        regime,
        steps,
        block_size: block,
        granularity,
        bytes_per_token_slope,
        bytes_per_token_engine: engine,
        bytes_per_token_theory: theory,
        slope_over_theory: bytes_per_token_slope.zip(theory).map(|(s, t)| s / t as f64),
        engine_over_theory: match (engine, theory) {
            (Some(e), Some(t)) if t > 0 => Some(e / t as f64),
            _ => None,
        },
        slope_reading,
        outside_pool: Vec::new(),
        bytes_per_token_outside: None,
        outside_over_theory: None,
        outside: None,
        max_num_seqs,
        max_num_seqs_source: seqs_source,
        margin: SAFETY_MARGIN,
        headroom_requests: HEADROOM_REQUESTS,
        request_lengths: Vec::new(),
        axis: Axis::MaxModelLen,
        envelope: Vec::new(),
        concurrent_4k: Vec::new(),
        safe_max_model_len: None,
        latency_pick: LatencyPick::NoneSafe,
        throughput_pick: ThroughputPick::NoneHolds { request_len: request_len.unwrap_or(DEFAULT_REQUEST_LEN) },
    };
    outside_pool(&mut f, &ok);
    envelope(&mut f, &ok, request_len.unwrap_or(DEFAULT_REQUEST_LEN));
    f
}

/// The starts that failed, with why.
fn failed(all: &[KvRow]) -> Vec<Failed> {
    all.iter()
        .filter(|r| r.status != Status::Ok)
        .map(|r| Failed {
            max_model_len: r.max_model_len.unwrap_or(0),
            status: r.status.as_str().to_owned(),
            error: r.error.clone(),
        })
        .collect()
}

/// The mean of the bytes per token the engine reported, over the starts that reported one.
fn engine_bytes_per_token(ok: &[&KvRow]) -> Option<f64> {
    ok.iter()
        .filter_map(|r| r.engine_bytes_per_token)
        .reduce(|a, b| a + b)
        .map(|s| s / ok.iter().filter(|r| r.engine_bytes_per_token.is_some()).count() as f64)
}

pub(super) fn steps(ok: &[&KvRow], fit: Option<&FitOut>) -> Vec<Step> {
    let Some(fit) = fit else { return Vec::new() };
    ok.windows(2)
        .map(|w| {
            let (a, b) = (w[0], w[1]);
            let (la, lb) = (a.max_model_len.unwrap_or(0), b.max_model_len.unwrap_or(0));
            Step {
                from: la,
                to: lb,
                delta_mb: b.mem_used_mb.unwrap_or(0.0) - a.mem_used_mb.unwrap_or(0.0),
                expected_mb: fit.slope_mb_per_token * (lb as f64 - la as f64),
            }
        })
        .collect()
}

pub(super) fn regime(
    ok: &[&KvRow],
    lengths: &[u64],
    spread: Option<f64>,
    (mem_min, mem_max): (Option<f64>, Option<f64>),
    fit: Option<&FitOut>,
) -> Regime {
    let (Some(spread), Some(fit)) = (spread, fit) else { return Regime::Insufficient };
    let tokens = ok.iter().filter_map(|r| r.kv_cache_tokens).collect::<Vec<_>>();
    let tokens_const = tokens.windows(2).all(|w| w[0] == w[1]);
    let (from, to) = (lengths.first().copied().unwrap_or(0), lengths.last().copied().unwrap_or(0));
    if spread < FLAT_SPREAD_PCT {
        Regime::Flat {
            spread_mb: mem_max.unwrap_or(0.0) - mem_min.unwrap_or(0.0),
            spread_pct: spread,
            max_spread_pct: FLAT_SPREAD_PCT,
            from,
            to,
            kv_tokens: tokens.first().copied().filter(|_| tokens_const),
        }
    } else if fit.slope_mb_per_token > 0.0 && fit.r2 >= LINEAR_MIN_R2 {
        Regime::Linear {
            mb_per_1k_tokens: fit.slope_mb_per_token * 1000.0,
            r2: fit.r2,
            min_r2: LINEAR_MIN_R2,
            from,
            to,
        }
    } else {
        Regime::Irregular { spread_pct: spread, slope_mb_per_token: fit.slope_mb_per_token, r2: fit.r2 }
    }
}

/// The slope read as bytes per KV token where the regime allows it.
pub(super) fn slope_reading(
    regime: &Regime,
    fit: Option<&FitOut>,
    tokens_fit: Option<fit::Fit>,
) -> (Option<SlopeReading>, Option<f64>) {
    match (regime, fit) {
        (Regime::Flat { .. }, _) => (Some(SlopeReading::Flat), None),
        (Regime::Irregular { .. }, _) => (Some(SlopeReading::NoSlope), None),
        (Regime::Linear { .. }, Some(fit)) => match tokens_fit.filter(|t| t.slope > 0.0) {
            // Memory per token of length divided by KV tokens per token of length = bytes per KV token.
            Some(tf) => {
                let per_kv_token = fit.slope_bytes_per_token / tf.slope;
                let reading = SlopeReading::PerKvToken {
                    bytes_per_length_token: fit.slope_bytes_per_token,
                    kv_tokens_per_length_token: tf.slope,
                    bytes_per_kv_token: per_kv_token,
                };
                (Some(reading), Some(per_kv_token))
            }
            None => (Some(SlopeReading::PerLengthToken), Some(fit.slope_bytes_per_token)),
        },
        _ => (None, None),
    }
}

/// Splits memory into the engine-reported KV pool and everything else (CUDA context, weights, the allocator's
/// cache, graph pools, buffers). Only for a linear regime, where the slope is read as bytes per KV token: the
/// part outside the pool should not move with the length, and when it does this says by how much.
pub(super) fn outside_pool(f: &mut KvFindings, ok: &[&KvRow]) {
    if !matches!(f.regime, Regime::Linear { .. }) {
        return;
    }
    let points: Vec<(u64, f64, f64)> = ok
        .iter()
        .filter_map(|r| Some((r.max_model_len?, r.mem_used_mb? - r.kv_cache_bytes? / MIB, r.kv_cache_tokens? as f64)))
        .collect();
    if points.len() != ok.len() || points.len() < 2 {
        return;
    }
    f.outside_pool = points.iter().map(|(l, o, _)| (*l, *o)).collect();
    let tokens: Vec<f64> = points.iter().map(|p| p.2).collect();
    let outside: Vec<f64> = points.iter().map(|p| p.1).collect();
    let Some(per_token) = fit::linear(&tokens, &outside).map(|fit| fit.slope * MIB) else { return };
    f.bytes_per_token_outside = Some(per_token);
    f.outside_over_theory = f.bytes_per_token_theory.map(|t| per_token / t as f64);
    f.outside = Some(Outside { moved_mb: outside[outside.len() - 1] - outside[0], bytes_per_kv_token: per_token });
}

pub(super) fn granularity(
    ok: &[&KvRow],
    steps: &[Step],
    block: Option<u64>,
    bytes_per_token: Option<f64>,
    mem_max: Option<f64>,
    has_fit: bool,
) -> Granularity {
    let tolerance = OFF_LINE_PCT / 100.0 * mem_max.unwrap_or(1.0).max(1.0);
    Granularity {
        block_size: block,
        block_kib: block.zip(bytes_per_token).map(|(b, bpt)| b as f64 * bpt / 1024.0),
        whole_blocks: block.is_some_and(|b| ok.iter().filter_map(|r| r.kv_cache_tokens).all(|t| t % b.max(1) == 0)),
        smallest_step_mb: steps.iter().map(|s| s.delta_mb.abs()).filter(|d| *d > 0.05).reduce(f64::min),
        off_line: has_fit
            .then(|| steps.iter().filter(|s| (s.delta_mb - s.expected_mb).abs() > tolerance).cloned().collect()),
        off_line_pct: OFF_LINE_PCT,
    }
}

/// The workload request length of the throughput pick when the spec gives none.
pub const DEFAULT_REQUEST_LEN: u64 = 4096;

impl KvFindings {
    /// Full-length requests the envelope row's pool holds (KV pool less the margin, in whole blocks).
    fn full(&self, e: &Envelope) -> u64 {
        (e.kv_tokens as f64 * (1.0 - self.margin)) as u64 / blocks(e.max_model_len, self.block_size.unwrap_or(16))
    }

    fn holding(e: &Envelope, requests: u64) -> Holding {
        Holding { max_model_len: e.max_model_len, setting: e.setting.clone(), requests }
    }
}

pub(super) fn envelope(f: &mut KvFindings, ok: &[&KvRow], request_len: u64) {
    let block = f.block_size.unwrap_or(16);
    let mut lengths: Vec<u64> = f.lengths.clone();
    lengths.push(FOUR_K);
    lengths.push(request_len);
    lengths.sort_unstable();
    lengths.dedup();
    f.request_lengths = lengths.clone();
    let (axis, settings) = axis_of(ok);
    f.axis = axis;
    for (r, setting) in ok.iter().zip(settings) {
        let (Some(m), Some(k)) = (r.max_model_len, r.kv_cache_tokens) else { continue };
        let usable = (k as f64 * (1.0 - f.margin)) as u64;
        let fits = lengths
            .iter()
            .filter(|l| **l <= m)
            .map(|l| (*l, (usable / blocks(*l, block)).min(f.max_num_seqs)))
            .collect();
        f.envelope.push(Envelope { max_model_len: m, setting, kv_tokens: k, fits });
    }
    f.concurrent_4k = f
        .envelope
        .iter()
        .filter_map(|e| e.fits.iter().find(|(l, _)| *l == FOUR_K).map(|(_, n)| KvFindings::holding(e, *n)))
        .collect();
    f.safe_max_model_len = f
        .envelope
        .iter()
        .filter(|e| {
            (e.kv_tokens as f64 * (1.0 - f.margin)) as u64 >= f.headroom_requests * blocks(e.max_model_len, block)
        })
        .map(|e| e.max_model_len)
        .max();
    f.latency_pick = match f.safe_max_model_len.and_then(|m| f.envelope.iter().find(|e| e.max_model_len == m)) {
        Some(e) if f.axis == Axis::MaxModelLen => LatencyPick::Length(KvFindings::holding(e, f.full(e))),
        Some(e) => {
            // The first row with the fewest and the first with the most full-length requests.
            let at = |pick: fn(u64, u64) -> bool| {
                f.envelope.iter().fold(None::<&Envelope>, |b, x| match b {
                    Some(b) if !pick(f.full(x), f.full(b)) => Some(b),
                    _ => Some(x),
                })
            };
            let (lo, hi) = (at(|x, b| x < b).unwrap_or(e), at(|x, b| x > b).unwrap_or(e));
            LatencyPick::Setting {
                max_model_len: e.max_model_len,
                fewest: KvFindings::holding(lo, f.full(lo)),
                most: KvFindings::holding(hi, f.full(hi)),
            }
        }
        None => LatencyPick::NoneSafe,
    };
    f.throughput_pick = throughput_pick(f, request_len);
}

/// The grid variables whose values differ among rows that share one max-model-len, and each row's values of
/// them; (MaxModelLen, empty settings) when the rows vary max-model-len (or there is one row).
pub(super) fn axis_of(ok: &[&KvRow]) -> (Axis, Vec<String>) {
    let lengths: std::collections::BTreeSet<Option<u64>> = ok.iter().map(|r| r.max_model_len).collect();
    if ok.len() < 2 || lengths.len() > 1 {
        return (Axis::MaxModelLen, vec![String::new(); ok.len()]);
    }
    let value = |r: &KvRow, k: &str| r.vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).unwrap_or_default();
    let names: Vec<String> = ok[0]
        .vars
        .iter()
        .map(|(k, _)| k.clone())
        .filter(|k| ok.iter().any(|r| value(r, k) != value(ok[0], k)))
        .collect();
    if names.is_empty() {
        // Starts of one configuration: told apart by their order.
        return (Axis::Starts, (1..=ok.len()).map(|i| i.to_string()).collect());
    }
    let settings = ok.iter().map(|r| names.iter().map(|k| value(r, k)).collect::<Vec<_>>().join(", ")).collect();
    (Axis::Settings { names }, settings)
}

/// The row whose pool holds the most concurrent requests of the workload's length, read off the envelope;
/// when every length holds the same number the length does not change capacity, and the pick is the longest
/// prompt needed.
pub(super) fn throughput_pick(f: &KvFindings, request_len: u64) -> ThroughputPick {
    let holds = |e: &Envelope| e.fits.iter().find(|(l, _)| *l == request_len).map(|(_, n)| *n);
    let best =
        f.envelope.iter().filter_map(|e| Some((e, holds(e)?))).max_by_key(|(e, n)| (*n, u64::MAX - e.max_model_len));
    let Some((e, n)) = best else {
        return ThroughputPick::NoneHolds { request_len };
    };
    if f.axis != Axis::MaxModelLen {
        return ThroughputPick::Setting { best: KvFindings::holding(e, n), request_len };
    }
    if f.envelope.iter().filter_map(holds).all(|m| m == n) {
        return ThroughputPick::SameAtEveryLength { requests: n, request_len };
    }
    ThroughputPick::Length { best: KvFindings::holding(e, n), request_len }
}
