//! KV-scaling rows and findings: pure functions of the recorded server starts.

use crate::record::{MIB, Source};
use crate::record::{ServerRecord, Status};

/// One row's numbers before formatting.
#[derive(Clone, Debug, PartialEq)]
pub struct KvRow {
    pub max_model_len: Option<u64>,
    /// GPU: device-wide used MiB at ready. CPU: the server tree's RSS MiB.
    pub mem_used_mb: Option<f64>,
    pub delta_mb: Option<f64>,
    pub bytes_per_token_est: Option<f64>,
    pub notes: Vec<String>,
    pub memory_source: Source,
    pub server_mem_mb: Option<f64>,
    pub kv_cache_tokens: Option<u64>,
    pub kv_cache_bytes: Option<f64>,
    pub max_concurrency: Option<f64>,
    pub engine_bytes_per_token: Option<f64>,
    pub theory_bytes_per_token: Option<u64>,
    pub weights_gib: Option<f64>,
    pub ready_s: Option<f64>,
    pub status: Status,
    /// The capacity model's KV tokens, predicted before the start.
    pub predicted_kv_tokens: Option<u64>,
    /// `--gpu-memory-utilization` as given (None: vLLM's default).
    pub util: Option<f64>,
    /// The server's grid values (variable, value), to tell rows apart when they share a max-model-len.
    pub vars: Vec<(String, String)>,
}

fn mem_used(r: &ServerRecord) -> Option<f64> {
    let s = r.at_ready.as_ref()?;
    match r.memory_source {
        Source::Procfs => s.server_rss_mb,
        _ => s.device_used_mb,
    }
}

fn server_mem(r: &ServerRecord) -> Option<f64> {
    let s = r.at_ready.as_ref()?;
    match r.memory_source {
        Source::Procfs => s.server_rss_mb,
        _ => s.server_gpu_mb,
    }
}

/// Rows sorted by max-model-len (the smallest is the baseline); deltas compare with the previous row that
/// has a memory reading.
pub fn rows(records: &[ServerRecord]) -> Vec<KvRow> {
    let mut sorted: Vec<&ServerRecord> = records.iter().collect();
    sorted.sort_by_key(|r| r.max_model_len.unwrap_or(u64::MAX));
    let mut prev: Option<(u64, f64)> = None;
    sorted.iter().map(|r| row(r, &mut prev)).collect()
}

/// Memory above the run's idle baseline on a slot's GPUs at its start that says they were not idle.
const NOT_IDLE_MB: f64 = 256.0;

/// "slot 1 of 4 (port 8001; GPU 2 NVIDIA H200; cores 4,5,6,7), beside other servers": where it ran.
fn slot_note(s: &crate::record::server::SlotRecord) -> String {
    let mut parts = vec![format!("port {}", s.port)];
    if !s.gpus.is_empty() {
        let gpus: Vec<String> = s
            .gpus
            .iter()
            .map(|g| match &g.name {
                Some(n) => format!("{} {n}", g.index),
                None => g.index.to_string(),
            })
            .collect();
        parts.push(format!("GPU {}", gpus.join(", ")));
    }
    if !s.cpus.is_empty() {
        parts.push(format!("cores {}", s.cpus.iter().map(usize::to_string).collect::<Vec<_>>().join(",")));
    }
    format!("slot {} of {} ({}), beside other servers", s.slot, s.slots, parts.join("; "))
}

fn row(r: &ServerRecord, prev: &mut Option<(u64, f64)>) -> KvRow {
    let mem = mem_used(r);
    let mut notes = Vec::new();
    let (mut delta_mb, mut est) = (None, None);
    match (mem, r.max_model_len, *prev) {
        (Some(m), Some(len), Some((plen, pm))) => {
            delta_mb = Some(m - pm);
            if len != plen {
                est = Some((m - pm) * MIB / (len as f64 - plen as f64));
            }
        }
        (Some(_), Some(_), None) => notes.push("baseline (first row)".to_owned()),
        _ => {}
    }
    if let (Some(m), Some(len)) = (mem, r.max_model_len) {
        *prev = Some((len, m));
    }
    if r.memory_source == Source::Procfs && mem.is_some() {
        notes.push("CPU engine: gpu_mem_used_mb is the server process tree's RSS".to_owned());
    }
    if let Some(na) = r.model.as_ref().and_then(|m| m.theory_not_applicable.clone()) {
        notes.push(na);
    }
    if r.release.as_ref().is_some_and(|c| !c.released) {
        notes.push("memory not back at the idle baseline after stop".to_owned());
    }
    if let Some(s) = r.slot.as_ref().filter(|s| s.slots > 1) {
        notes.push(slot_note(s));
    }
    // A slot's GPUs must be as idle at its start as before any slot started.
    if let (Some(idle), Some(at_start)) = (r.slot.as_ref().and_then(|s| s.idle_mb), r.baseline.device_used_mb)
        && at_start - idle > NOT_IDLE_MB
    {
        notes.push(format!("its GPUs held {:.0} MiB more at its start than before any slot started", at_start - idle));
    }
    if let Some(e) = &r.error {
        notes.push(format!("{}: {e}", r.status.as_str()));
    }
    let kv_bytes = r.kv_cache_bytes();
    let tokens = r.kv_cache_tokens();
    KvRow {
        max_model_len: r.max_model_len,
        mem_used_mb: mem,
        delta_mb,
        bytes_per_token_est: est,
        notes,
        memory_source: r.memory_source,
        server_mem_mb: server_mem(r),
        kv_cache_tokens: tokens,
        kv_cache_bytes: kv_bytes.map(|b| b.0),
        max_concurrency: r.max_concurrency(),
        engine_bytes_per_token: match (kv_bytes, tokens) {
            (Some((b, _)), Some(t)) if t > 0 => Some(b / t as f64),
            _ => None,
        },
        theory_bytes_per_token: r.model.as_ref().and_then(|m| m.theory_bytes_per_token),
        weights_gib: r.log.weights_gib,
        ready_s: r.ready_s,
        status: r.status,
        predicted_kv_tokens: r.predicted.as_ref().map(|c| c.kv_tokens),
        util: crate::record::capacity::util_of(&r.argv),
        vars: r.vars.iter().map(|(k, v)| (k.clone(), v.to_string())).collect(),
    }
}

use super::fit;
use serde::Serialize;

/// Room kept free in the KV pool when judging what fits.
pub const SAFETY_MARGIN: f64 = 0.10;
/// A max-model-len is "safe" when the pool holds this many full-length requests.
pub const HEADROOM_REQUESTS: u64 = 4;
/// vLLM's default `--max-num-seqs` (H200 default 1024, ../shared/reference/vllm.md; 256 on smaller devices).
pub const DEFAULT_MAX_NUM_SEQS: u64 = 256;
pub const DEFAULT_MAX_NUM_SEQS_LARGE_GPU: u64 = 1024;

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FitOut {
    pub slope_mb_per_token: f64,
    pub slope_bytes_per_token: f64,
    pub intercept_mb: f64,
    pub r2: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Step {
    pub from: u64,
    pub to: u64,
    pub delta_mb: f64,
    /// What the fitted line predicts for this step.
    pub expected_mb: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Envelope {
    pub max_model_len: u64,
    /// The values of the axis the rows vary when it is not max-model-len (`KvFindings::axis`), e.g. "0.05".
    pub setting: String,
    pub kv_tokens: u64,
    /// (request tokens, concurrent requests that fit).
    pub fits: Vec<(u64, u64)>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct KvFindings {
    pub lengths: Vec<u64>,
    pub failed: Vec<(u64, String)>,
    pub memory_label: String,
    pub mem_min_mb: Option<f64>,
    pub mem_max_mb: Option<f64>,
    pub memory_spread_pct: Option<f64>,
    pub fit: Option<FitOut>,
    /// flat | linear | irregular | insufficient
    pub regime: String,
    pub regime_statement: String,
    pub regime_evidence: String,
    pub steps: Vec<Step>,
    pub block_size: Option<u64>,
    pub granularity: String,
    pub bytes_per_token_slope: Option<f64>,
    pub bytes_per_token_engine: Option<f64>,
    pub bytes_per_token_theory: Option<u64>,
    pub slope_over_theory: Option<f64>,
    pub engine_over_theory: Option<f64>,
    pub bytes_per_token_note: String,
    /// (max-model-len, memory less the engine-reported KV pool, MiB) for each successful length.
    pub outside_pool: Vec<(u64, f64)>,
    /// Slope of `outside_pool` per KV token: what the rest of the server adds to (or takes from) the memory
    /// slope. Memory = pool + outside, so this is exactly the slope's departure from the pool's own growth.
    pub bytes_per_token_outside: Option<f64>,
    pub outside_over_theory: Option<f64>,
    pub outside_note: String,
    pub max_num_seqs: u64,
    pub max_num_seqs_source: String,
    pub margin: f64,
    pub request_lengths: Vec<u64>,
    /// The grid variables the successful rows differ in when they share one max-model-len (e.g. "util"); empty
    /// when the rows vary max-model-len, so the envelope, the picks and their words follow the length.
    pub axis: String,
    pub envelope: Vec<Envelope>,
    pub concurrent_4k: String,
    pub safe_max_model_len: Option<u64>,
    pub safe_rule: String,
    pub latency_pick: String,
    pub throughput_pick: String,
}

fn arg_u64(argv: &[String], flag: &str) -> Option<u64> {
    argv.iter().position(|a| a == flag).and_then(|i| argv.get(i + 1)).and_then(|v| v.parse().ok())
}

/// Rounds a request up to whole KV blocks, as vLLM allocates them.
fn blocks(tokens: u64, block: u64) -> u64 {
    tokens.div_ceil(block.max(1)) * block.max(1)
}

/// `request_len`: tokens per request (prompt + output) of the workload the throughput pick is for (4096
/// when the spec's `report_options.request_len` is unset).
pub fn findings(records: &[ServerRecord], request_len: Option<u64>) -> KvFindings {
    let all = rows(records);
    let ok: Vec<&KvRow> =
        all.iter().filter(|r| r.status == Status::Ok && r.max_model_len.is_some() && r.mem_used_mb.is_some()).collect();
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
    let block = records.iter().find_map(|r| r.cache_config_info.as_ref()?.get("block_size")?.parse::<u64>().ok());
    let argv = records.first().map(|r| r.argv.clone()).unwrap_or_default();
    let (max_num_seqs, seqs_source) = match arg_u64(&argv, "--max-num-seqs") {
        Some(n) => (n, "from --max-num-seqs".to_owned()),
        // The default depends on the device: large GPUs (H100/H200 class, 70 GiB and more) get 1024.
        None => match records.iter().find_map(|r| r.at_ready.as_ref()?.device_total_mb) {
            Some(total) if total >= 70.0 * 1024.0 => (
                DEFAULT_MAX_NUM_SEQS_LARGE_GPU,
                "vLLM's default on GPUs of 70 GiB and more, the H100/H200 class; set --max-num-seqs to change it"
                    .to_owned(),
            ),
            _ => (
                DEFAULT_MAX_NUM_SEQS,
                "vLLM's default outside H100/H200-class GPUs, which get 1024; set --max-num-seqs to change it"
                    .to_owned(),
            ),
        },
    };
    let theory = ok.iter().find_map(|r| r.theory_bytes_per_token);
    let engine = ok
        .iter()
        .filter_map(|r| r.engine_bytes_per_token)
        .reduce(|a, b| a + b)
        .map(|s| s / ok.iter().filter(|r| r.engine_bytes_per_token.is_some()).count() as f64);
    let memory_label = match ok.first().map(|r| r.memory_source) {
        Some(Source::Procfs) => "the server process tree's RSS (CPU engine)".to_owned(),
        Some(_) => "device-wide GPU memory used at ready".to_owned(),
        None => "memory".to_owned(),
    };
    let mut f = KvFindings {
        lengths: ok.iter().filter_map(|r| r.max_model_len).collect(),
        failed: all
            .iter()
            .filter(|r| r.status != Status::Ok)
            .map(|r| (r.max_model_len.unwrap_or(0), r.notes.last().cloned().unwrap_or_default()))
            .collect(),
        memory_label,
        mem_min_mb: mem_min,
        mem_max_mb: mem_max,
        memory_spread_pct: spread,
        fit: fit.clone(),
        regime: String::new(),
        regime_statement: String::new(),
        regime_evidence: String::new(),
        steps: steps(&ok, fit.as_ref()),
        block_size: block,
        granularity: String::new(),
        bytes_per_token_slope: None,
        bytes_per_token_engine: engine,
        bytes_per_token_theory: theory,
        slope_over_theory: None,
        engine_over_theory: match (engine, theory) {
            (Some(e), Some(t)) if t > 0 => Some(e / t as f64),
            _ => None,
        },
        bytes_per_token_note: String::new(),
        outside_pool: Vec::new(),
        bytes_per_token_outside: None,
        outside_over_theory: None,
        outside_note: String::new(),
        max_num_seqs,
        max_num_seqs_source: seqs_source,
        margin: SAFETY_MARGIN,
        request_lengths: Vec::new(),
        axis: String::new(),
        envelope: Vec::new(),
        concurrent_4k: String::new(),
        safe_max_model_len: None,
        safe_rule: format!(
            "the largest max-model-len that started and whose KV pool, less a {:.0}% margin, holds {HEADROOM_REQUESTS} full-length requests",
            SAFETY_MARGIN * 100.0
        ),
        latency_pick: String::new(),
        throughput_pick: String::new(),
    };
    regime(&mut f, &ok, tokens_fit);
    outside_pool(&mut f, &ok);
    granularity(&mut f, &ok);
    envelope(&mut f, &ok, request_len.unwrap_or(DEFAULT_REQUEST_LEN));
    f
}

fn steps(ok: &[&KvRow], fit: Option<&FitOut>) -> Vec<Step> {
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

fn regime(f: &mut KvFindings, ok: &[&KvRow], tokens_fit: Option<fit::Fit>) {
    let (Some(spread), Some(fit)) = (f.memory_spread_pct, f.fit.clone()) else {
        f.regime = "insufficient".into();
        f.regime_statement = "not enough successful lengths to tell how memory scales (two or more are needed)".into();
        return;
    };
    let tokens = ok.iter().filter_map(|r| r.kv_cache_tokens).collect::<Vec<_>>();
    let tokens_const = tokens.windows(2).all(|w| w[0] == w[1]);
    let (lo, hi) = (f.lengths.first().copied().unwrap_or(0), f.lengths.last().copied().unwrap_or(0));
    if spread < 2.0 {
        f.regime = "flat".into();
        f.regime_statement =
            "flat: the KV pool is sized by memory utilisation (or a fixed KV size), not by max-model-len".into();
        f.regime_evidence = format!(
            "memory varied by {:.1} MiB ({spread:.2}%) from max-model-len {lo} to {hi}{}; what changes with the length is how many full-length requests the pool holds",
            f.mem_max_mb.unwrap_or(0.0) - f.mem_min_mb.unwrap_or(0.0),
            if tokens_const && !tokens.is_empty() {
                format!(", while the KV capacity stayed at {} tokens", super::thousands(tokens[0] as f64, 0))
            } else {
                String::new()
            }
        );
        f.bytes_per_token_note = "memory does not move with the length here, so the slope measures nothing about KV bytes; the engine's figure and the theory still apply".into();
    } else if fit.slope_mb_per_token > 0.0 && fit.r2 >= 0.9 {
        f.regime = "linear".into();
        f.regime_statement = "linear: the KV budget follows the length".into();
        f.regime_evidence = format!(
            "memory rose {:.1} MiB per 1,000 tokens of max-model-len (R² {:.4}) from {lo} to {hi}",
            fit.slope_mb_per_token * 1000.0,
            fit.r2
        );
        // Memory per token of length divided by KV tokens per token of length = bytes per KV token.
        if let Some(tf) = tokens_fit.filter(|t| t.slope > 0.0) {
            let per_kv_token = fit.slope_bytes_per_token / tf.slope;
            f.bytes_per_token_slope = Some(per_kv_token);
            f.slope_over_theory = f.bytes_per_token_theory.map(|t| per_kv_token / t as f64);
            f.bytes_per_token_note = format!(
                "the slope is {:.0} bytes per token of max-model-len; the KV capacity grew {:.1} tokens per token of max-model-len, so memory grew {per_kv_token:.0} bytes per KV token",
                fit.slope_bytes_per_token, tf.slope
            );
        } else {
            f.bytes_per_token_slope = Some(fit.slope_bytes_per_token);
            f.slope_over_theory = f.bytes_per_token_theory.map(|t| fit.slope_bytes_per_token / t as f64);
            f.bytes_per_token_note = "the slope is bytes per token of max-model-len, which equals bytes per KV token only when one length's worth of KV is allocated per token".into();
        }
    } else {
        f.regime = "irregular".into();
        f.regime_statement = "irregular: memory moved with the length, but not along a line".into();
        f.regime_evidence =
            format!("memory spread {spread:.1}%, fit slope {:.3} MiB/token, R² {:.3}", fit.slope_mb_per_token, fit.r2);
        f.bytes_per_token_note = "no reliable slope".into();
    }
}

/// Splits memory into the engine-reported KV pool and everything else (CUDA context, weights, the allocator's
/// cache, graph pools, buffers). Only for a linear regime, where the slope is read as bytes per KV token: the
/// part outside the pool should not move with the length, and when it does this says by how much.
fn outside_pool(f: &mut KvFindings, ok: &[&KvRow]) {
    if f.regime != "linear" {
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
    let listed =
        points.iter().map(|(l, o, _)| format!("{} MiB at {l}", super::thousands(*o, 1))).collect::<Vec<_>>().join(", ");
    let (first, last) = (outside[0], outside[outside.len() - 1]);
    f.outside_note = format!(
        "memory outside the KV pool (memory less the engine-reported pool): {listed}; it moved {:+.1} MiB from the shortest to the longest length, {per_token:+.0} bytes per KV token by least squares, which is exactly how far the slope of memory sits from the pool's own growth",
        last - first
    );
}

fn granularity(f: &mut KvFindings, ok: &[&KvRow]) {
    let nonzero: Vec<f64> = f.steps.iter().map(|s| s.delta_mb.abs()).filter(|d| *d > 0.05).collect();
    let smallest = nonzero.iter().cloned().reduce(f64::min);
    let block = match (f.block_size, f.bytes_per_token_engine.or(f.bytes_per_token_theory.map(|t| t as f64))) {
        (Some(b), Some(bpt)) => {
            format!("KV capacity comes in blocks of {b} tokens ({:.0} KiB each)", b as f64 * bpt / 1024.0)
        }
        (Some(b), None) => format!("KV capacity comes in blocks of {b} tokens"),
        _ => "the block size was not reported".to_owned(),
    };
    let quantised = ok.iter().filter_map(|r| r.kv_cache_tokens).all(|t| f.block_size.is_none_or(|b| t % b == 0));
    let jumps: Vec<String> = f
        .steps
        .iter()
        .filter(|s| (s.delta_mb - s.expected_mb).abs() > 0.01 * f.mem_max_mb.unwrap_or(1.0).max(1.0))
        .map(|s| format!("{}→{}: {:+.1} MiB where the line predicts {:+.1}", s.from, s.to, s.delta_mb, s.expected_mb))
        .collect();
    f.granularity = format!(
        "{block}{}; {}{}",
        if quantised && f.block_size.is_some() {
            " and every measured capacity is a whole number of blocks"
        } else {
            ""
        },
        match smallest {
            Some(s) => format!("the smallest memory step between lengths was {s:.1} MiB"),
            None => "no memory step between lengths".to_owned(),
        },
        if jumps.is_empty() {
            "; no step departs from the fitted line by more than 1% of memory".to_owned()
        } else {
            format!("; steps off the line: {}", jumps.join("; "))
        }
    );
}

/// The workload request length of the throughput pick when the spec gives none.
pub const DEFAULT_REQUEST_LEN: u64 = 4096;

fn envelope(f: &mut KvFindings, ok: &[&KvRow], request_len: u64) {
    let block = f.block_size.unwrap_or(16);
    let mut lengths: Vec<u64> = f.lengths.clone();
    lengths.push(4096);
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
    let label = |e: &Envelope| match f.axis.is_empty() {
        true => format!("max-model-len {}", e.max_model_len),
        false => format!("{} {}", f.axis, e.setting),
    };
    let for_4k: Vec<String> = f
        .envelope
        .iter()
        .filter_map(|e| e.fits.iter().find(|(l, _)| *l == 4096).map(|(_, n)| format!("{}: {n}", label(e))))
        .collect();
    f.concurrent_4k = if for_4k.is_empty() {
        "no successful max-model-len of 4096 or more in this run, so none serves 4K requests".to_owned()
    } else {
        format!(
            "concurrent 4K-token requests that fit (KV pool less {:.0}%, capped by max-num-seqs {}): {}",
            f.margin * 100.0,
            f.max_num_seqs,
            for_4k.join("; ")
        )
    };
    f.safe_max_model_len = f
        .envelope
        .iter()
        .filter(|e| {
            (e.kv_tokens as f64 * (1.0 - f.margin)) as u64 >= HEADROOM_REQUESTS * blocks(e.max_model_len, block)
        })
        .map(|e| e.max_model_len)
        .max();
    let full = |e: &Envelope| (e.kv_tokens as f64 * (1.0 - f.margin)) as u64 / blocks(e.max_model_len, block);
    f.latency_pick = match f.safe_max_model_len.and_then(|m| f.envelope.iter().find(|e| e.max_model_len == m)) {
        Some(e) if f.axis.is_empty() => format!(
            "max-model-len {} (the largest safe one): long prompts fit, and the pool still holds {} full-length requests; keep concurrency below the latency knee of the sweep",
            e.max_model_len,
            full(e)
        ),
        Some(e) => {
            let at = |pick: fn(u64, u64) -> bool| {
                f.envelope.iter().fold(None::<&Envelope>, |b, x| match b {
                    Some(b) if !pick(full(x), full(b)) => Some(b),
                    _ => Some(x),
                })
            };
            let (lo, hi) = (at(|x, b| x < b).unwrap_or(e), at(|x, b| x > b).unwrap_or(e));
            format!(
                "every start has max-model-len {}, the largest safe one here; {} sets the pool, which has room for {} full-length requests at {} {} and {} at {} {} (KV pool less {:.0}%; max-num-seqs {} caps how many run at once); keep concurrency below the latency knee of the sweep",
                e.max_model_len,
                f.axis,
                full(lo),
                f.axis,
                lo.setting,
                full(hi),
                f.axis,
                hi.setting,
                f.margin * 100.0,
                f.max_num_seqs
            )
        }
        None => "no length in this run is safe by the rule above: give the KV pool more memory or use shorter lengths"
            .to_owned(),
    };
    f.throughput_pick = throughput_pick(f, request_len);
}

/// The grid variables whose values differ among rows that share one max-model-len, and each row's values of
/// them; ("", empty settings) when the rows vary max-model-len (or there is one row).
fn axis_of(ok: &[&KvRow]) -> (String, Vec<String>) {
    let lengths: std::collections::BTreeSet<Option<u64>> = ok.iter().map(|r| r.max_model_len).collect();
    if ok.len() < 2 || lengths.len() > 1 {
        return (String::new(), vec![String::new(); ok.len()]);
    }
    let value = |r: &KvRow, k: &str| r.vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).unwrap_or_default();
    let names: Vec<&str> = ok[0]
        .vars
        .iter()
        .map(|(k, _)| k.as_str())
        .filter(|k| ok.iter().any(|r| value(r, k) != value(ok[0], k)))
        .collect();
    if names.is_empty() {
        // Starts of one configuration: told apart by their order.
        return ("start".to_owned(), (1..=ok.len()).map(|i| i.to_string()).collect());
    }
    let settings = ok.iter().map(|r| names.iter().map(|k| value(r, k)).collect::<Vec<_>>().join(", ")).collect();
    (names.join(", "), settings)
}

/// The length whose pool holds the most concurrent requests of the workload's length, read off the envelope;
/// in the flat regime the length does not change capacity, so the pick is the longest prompt needed.
fn throughput_pick(f: &KvFindings, request_len: u64) -> String {
    let holds = |e: &Envelope| e.fits.iter().find(|(l, _)| *l == request_len).map(|(_, n)| *n);
    let best =
        f.envelope.iter().filter_map(|e| Some((e, holds(e)?))).max_by_key(|(e, n)| (*n, u64::MAX - e.max_model_len));
    let Some((e, n)) = best else {
        return format!("no successful max-model-len holds a request of {request_len} tokens in this run");
    };
    let all_equal = f.envelope.iter().filter_map(holds).all(|m| m == n);
    if !f.axis.is_empty() {
        return format!(
            "{} {}: of the settings measured (all at max-model-len {}), its pool holds the most concurrent requests of {request_len} tokens ({n}, KV pool less {:.0}%, capped by max-num-seqs {})",
            f.axis,
            e.setting,
            e.max_model_len,
            f.margin * 100.0,
            f.max_num_seqs
        );
    }
    if f.regime == "flat" || all_equal {
        return format!(
            "max-model-len does not change capacity here ({n} concurrent requests of {request_len} tokens fit at every length that allows them, capped by max-num-seqs {}): choose it by the longest prompt you need",
            f.max_num_seqs
        );
    }
    format!(
        "max-model-len {}: of the lengths measured, its pool holds the most concurrent requests of {request_len} tokens ({n}, KV pool less {:.0}%, capped by max-num-seqs {})",
        e.max_model_len,
        f.margin * 100.0,
        f.max_num_seqs
    )
}

#[cfg(test)]
mod pick_tests {
    use super::*;

    fn with_envelope(regime: &str, envelope: Vec<Envelope>) -> KvFindings {
        let mut f = findings(&[], None);
        f.regime = regime.to_owned();
        f.envelope = envelope;
        f
    }

    #[test]
    fn the_throughput_pick_is_the_length_whose_pool_holds_the_most_requests_of_the_workload() {
        // Linear regime: a longer max-model-len bought a bigger pool, so it holds more 1K requests.
        let f = with_envelope(
            "linear",
            vec![
                Envelope { max_model_len: 1024, setting: String::new(), kv_tokens: 4096, fits: vec![(1024, 3)] },
                Envelope {
                    max_model_len: 4096,
                    setting: String::new(),
                    kv_tokens: 16384,
                    fits: vec![(1024, 14), (4096, 3)],
                },
            ],
        );
        let pick = throughput_pick(&f, 1024);
        assert!(pick.starts_with("max-model-len 4096:") && pick.contains("(14,"), "{pick}");
        // The same pools under a flat regime: the length does not change capacity.
        let flat = with_envelope(
            "flat",
            vec![
                Envelope { max_model_len: 1024, setting: String::new(), kv_tokens: 16384, fits: vec![(1024, 14)] },
                Envelope {
                    max_model_len: 4096,
                    setting: String::new(),
                    kv_tokens: 16384,
                    fits: vec![(1024, 14), (4096, 3)],
                },
            ],
        );
        assert!(throughput_pick(&flat, 1024).starts_with("max-model-len does not change capacity here (14"));
        assert!(throughput_pick(&flat, 8192).starts_with("no successful max-model-len holds"));
    }
}
