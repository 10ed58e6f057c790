//! `servelab bench --save-result`: the result JSON of `vllm bench serve` (vLLM 0.32.0's `serve.py`), derived
//! from one point's request records. Keys and formulas follow vLLM's where the metric is the same, so a
//! script that reads vLLM's file reads this one; docs/bench.md lists what differs.

use crate::record::RequestRecord;
use serde_json::{Map, Value, json};

/// One objective of `--goodput`: a request is good when its metric is at most `ms`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Goodput {
    pub metric: GoodputMetric,
    pub ms: f64,
}

/// The metrics `--goodput` takes (vLLM's `ttft`, `tpot`, `e2el`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GoodputMetric {
    Ttft,
    Tpot,
    E2el,
}

impl Goodput {
    /// `ttft:200` → TTFT within 200 ms. The error says what vLLM accepts.
    pub fn parse(text: &str) -> Result<Goodput, String> {
        let (k, v) = text.split_once(':').ok_or_else(|| format!("`{text}` is not KEY:VALUE (e.g. ttft:200)"))?;
        let metric = match k.trim() {
            "ttft" => GoodputMetric::Ttft,
            "tpot" => GoodputMetric::Tpot,
            "e2el" => GoodputMetric::E2el,
            other => return Err(format!("`{other}` is not a goodput metric; use ttft, tpot or e2el")),
        };
        let ms: f64 = v.trim().parse().map_err(|_| format!("`{v}` is not a number of milliseconds"))?;
        if !ms.is_finite() || ms < 0.0 {
            return Err(format!("`{v}`: the objective must be a non-negative number of milliseconds"));
        }
        Ok(Goodput { metric, ms })
    }
}

/// What the result says of the benchmark's setup (vLLM's "Setup" and "Traffic" keys).
#[derive(Clone, Debug)]
pub struct Setup {
    pub backend: String,
    /// `--label` (None: null, as vLLM writes it).
    pub label: Option<String>,
    /// `--metadata KEY=VALUE` pairs, added as keys.
    pub metadata: Vec<(String, String)>,
    pub model_id: String,
    pub num_prompts: u32,
    /// None: `inf` (every request at once).
    pub request_rate: Option<f64>,
    pub burstiness: f64,
    pub max_concurrency: Option<u32>,
    /// `--percentile-metrics`: of `ttft`, `tpot`, `itl`, `e2el`, `client_queue_time`.
    pub percentile_metrics: Vec<String>,
    /// `--metric-percentiles`, e.g. `[99.0]`.
    pub percentiles: Vec<f64>,
    pub goodput: Vec<Goodput>,
}

/// One successful request's figures in seconds, as vLLM's `RequestFuncOutput` holds them.
struct Done {
    input: u64,
    output: u64,
    start: f64,
    ttft: Option<f64>,
    latency: f64,
    itl: Vec<f64>,
    queue: f64,
}

fn done(r: &RequestRecord) -> Done {
    let ttft = r.first_token_s.map(|f| f - r.start_s);
    let mut itl = Vec::with_capacity(r.chunk_us.len());
    let mut last = 0u32;
    for &us in &r.chunk_us {
        itl.push(f64::from(us.saturating_sub(last)) / 1e6);
        last = us;
    }
    // vLLM's latency ends at the last chunk that carried a choice, not at the stream's end ([DONE]).
    let latency = match (r.first_token_s, r.chunk_us.last()) {
        (Some(f), Some(&us)) => f + f64::from(us) / 1e6 - r.start_s,
        (Some(f), None) => f - r.start_s,
        (None, _) => r.end_s - r.start_s,
    };
    Done {
        // vLLM 0.32 takes the prompt's length from the server's usage too, where the server sends it.
        input: u64::from(r.prompt_tokens.or(r.sent_tokens).unwrap_or(0)),
        // vLLM counts the server's usage, else the text's tokens; without usage, each content chunk is one.
        output: u64::from(r.completion_tokens.unwrap_or(r.chunks)),
        start: r.start_s,
        ttft,
        latency,
        itl,
        queue: r.start_s - r.scheduled_s,
    }
}

/// numpy's default percentile (linear interpolation between closest ranks); 0 for no values, as vLLM's
/// `np.percentile(values or 0, p)`.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let pos = p / 100.0 * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() { 0.0 } else { v.iter().sum::<f64>() / v.len() as f64 }
}

/// numpy's `std` (population, ddof 0).
fn std(v: &[f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let m = mean(v);
    (v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / v.len() as f64).sqrt()
}

/// vLLM's key for a percentile: `99` → `p99`, `99.9` → `p99.9`.
fn p_word(p: f64) -> String {
    if p.fract() == 0.0 { format!("{}", p as i64) } else { format!("{p}") }
}

/// `mean_X_ms`, `median_X_ms`, `std_X_ms` and `pN_X_ms` of values in seconds.
fn metric(out: &mut Map<String, Value>, name: &str, values: &[f64], percentiles: &[f64]) {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    out.insert(format!("mean_{name}_ms"), json!(mean(values) * 1000.0));
    out.insert(format!("median_{name}_ms"), json!(percentile(&sorted, 50.0) * 1000.0));
    out.insert(format!("std_{name}_ms"), json!(std(values) * 1000.0));
    for &p in percentiles {
        out.insert(format!("p{}_{name}_ms", p_word(p)), json!(percentile(&sorted, p) * 1000.0));
    }
}

/// vLLM's peak figures: output tokens (one per content chunk) and requests in flight, by whole second from
/// the first request's start.
fn peaks(done: &[Done]) -> (f64, u64) {
    let Some(t0) = done.iter().map(|d| d.start).min_by(f64::total_cmp) else { return (0.0, 0) };
    let end = done.iter().map(|d| d.start + d.latency).fold(t0, f64::max);
    let seconds = ((end - t0).ceil() as usize).saturating_add(1).min(1 << 24);
    let (mut tokens, mut busy) = (vec![0u64; seconds], vec![0u64; seconds]);
    for d in done {
        if let Some(ttft) = d.ttft {
            let mut t = d.start + ttft;
            for step in std::iter::once(0.0).chain(d.itl.iter().copied()) {
                t += step;
                if let Some(slot) = tokens.get_mut((t - t0) as usize) {
                    *slot += 1;
                }
            }
        }
        let (a, b) = ((d.start - t0) as usize, (d.start + d.latency - t0) as usize);
        for slot in busy.iter_mut().take(b + 1).skip(a) {
            *slot += 1;
        }
    }
    (tokens.into_iter().max().unwrap_or(0) as f64, busy.into_iter().max().unwrap_or(0))
}

/// vLLM's TPOT of one request: the time after the first token over the tokens after it (None for one token).
fn tpot(d: &Done) -> Option<f64> {
    match d.ttft {
        Some(t) if d.output > 1 => Some((d.latency - t) / (d.output - 1) as f64),
        _ => None,
    }
}

/// Requests meeting every `--goodput` objective (vLLM counts a missing TTFT or TPOT as 0).
fn good(ok: &[Done], goodput: &[Goodput]) -> usize {
    let meets = |d: &Done, g: &Goodput| {
        let v = match g.metric {
            GoodputMetric::Ttft => d.ttft.unwrap_or(0.0),
            GoodputMetric::Tpot => tpot(d).unwrap_or(0.0),
            GoodputMetric::E2el => d.latency,
        };
        g.ms / 1000.0 >= v
    };
    ok.iter().filter(|d| goodput.iter().all(|g| meets(d, g))).count()
}

/// vLLM's "Setup" keys, the `--metadata` pairs, then its "Traffic" keys.
fn setup_keys(out: &mut Map<String, Value>, setup: &Setup, started_at: &str) {
    let date = chrono::DateTime::parse_from_rfc3339(started_at)
        .map_or_else(|_| started_at.to_owned(), |d| d.format("%Y%m%d-%H%M%S").to_string());
    for (k, v) in [
        ("date", json!(date)),
        ("endpoint_type", json!(setup.backend)),
        ("backend", json!(setup.backend)),
        ("label", json!(setup.label)),
        ("model_id", json!(setup.model_id)),
        ("tokenizer_id", Value::Null),
        ("num_prompts", json!(setup.num_prompts)),
    ] {
        out.insert(k.to_owned(), v);
    }
    for (k, v) in &setup.metadata {
        out.insert(k.clone(), json!(v));
    }
    out.insert("request_rate".into(), setup.request_rate.map_or(json!("inf"), |r| json!(r)));
    out.insert("burstiness".into(), json!(setup.burstiness));
    out.insert("max_concurrency".into(), json!(setup.max_concurrency));
}

/// The result JSON of one point: `requests` are its requests (warmup and tail are left out here),
/// `started_at` its record's RFC 3339 start (vLLM's `date`).
pub fn vllm_result(started_at: &str, requests: &[&RequestRecord], setup: &Setup) -> Value {
    let measured: Vec<&RequestRecord> = requests.iter().copied().filter(|r| !r.warmup && !r.tail).collect();
    let ok: Vec<Done> = measured.iter().filter(|r| r.error.is_none()).map(|r| done(r)).collect();
    // vLLM times the benchmark from before the first request is dispatched to after the last returns.
    let t0 = measured.iter().map(|r| r.scheduled_s).fold(f64::INFINITY, f64::min);
    let t1 = measured.iter().map(|r| r.end_s).fold(f64::NEG_INFINITY, f64::max);
    let duration = if t1 > t0 { t1 - t0 } else { 0.0 };
    let per_s = |x: f64| if duration > 0.0 { x / duration } else { 0.0 };
    let total_input: u64 = ok.iter().map(|d| d.input).sum();
    let total_output: u64 = ok.iter().map(|d| d.output).sum();
    let (max_tokens_per_s, max_in_flight) = peaks(&ok);
    let latencies: Vec<f64> = measured.iter().map(|r| if r.error.is_none() { done(r).latency } else { 0.0 }).collect();
    let mut out = Map::new();
    setup_keys(&mut out, setup, started_at);
    for (k, v) in [
        ("duration", json!(duration)),
        ("completed", json!(ok.len())),
        ("failed", json!(measured.len() - ok.len())),
        ("total_input_tokens", json!(total_input)),
        ("total_output_tokens", json!(total_output)),
        ("request_throughput", json!(per_s(ok.len() as f64))),
        (
            "request_goodput",
            if setup.goodput.is_empty() { Value::Null } else { json!(per_s(good(&ok, &setup.goodput) as f64)) },
        ),
        ("output_throughput", json!(per_s(total_output as f64))),
        ("total_token_throughput", json!(per_s((total_input + total_output) as f64))),
        ("latencies", json!(latencies)),
        ("queue_times", json!(measured.iter().map(|r| r.start_s - r.scheduled_s).collect::<Vec<_>>())),
        ("max_output_tokens_per_s", json!(max_tokens_per_s)),
        ("max_concurrent_requests", json!(max_in_flight)),
        // Audio seconds per second: vLLM's formula, with no audio input.
        ("rtfx", json!(0.0)),
    ] {
        out.insert(k.to_owned(), v);
    }
    let series: [(&str, Vec<f64>); 5] = [
        ("ttft", ok.iter().filter_map(|d| d.ttft).collect()),
        ("tpot", ok.iter().filter_map(tpot).collect()),
        ("itl", ok.iter().flat_map(|d| d.itl.iter().copied()).collect()),
        ("e2el", ok.iter().map(|d| d.latency).collect()),
        ("client_queue_time", ok.iter().map(|d| d.queue).collect()),
    ];
    for (name, values) in &series {
        // vLLM reports the client's queue only under a cap.
        let queued = *name != "client_queue_time" || setup.max_concurrency.is_some();
        if queued && setup.percentile_metrics.iter().any(|m| m == name) {
            metric(&mut out, name, values, &setup.percentiles);
        }
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_is_numpys_linear_interpolation() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile(&v, 50.0), 2.5);
        assert!((percentile(&v, 99.0) - 3.97).abs() < 1e-12);
        assert_eq!(percentile(&v, 0.0), 1.0);
        assert_eq!(percentile(&v, 100.0), 4.0);
        assert_eq!(percentile(&[], 99.0), 0.0);
        assert_eq!(p_word(99.0), "99");
        assert_eq!(p_word(99.9), "99.9");
        assert!((std(&[1.0, 3.0]) - 1.0).abs() < 1e-12);
    }

    fn req(start: f64, first: f64, chunk_us: &[u32], tokens: u32) -> RequestRecord {
        RequestRecord {
            scheduled_s: start,
            start_s: start,
            first_token_s: Some(first),
            end_s: first + f64::from(*chunk_us.last().unwrap_or(&0)) / 1e6,
            chunk_us: chunk_us.to_vec(),
            chunks: chunk_us.len() as u32 + 1,
            prompt_tokens: Some(10),
            completion_tokens: Some(tokens),
            ..RequestRecord::default()
        }
    }

    fn setup(goodput: Vec<Goodput>) -> Setup {
        Setup {
            backend: "openai".into(),
            label: None,
            metadata: vec![("tp".into(), "1".into())],
            model_id: "m".into(),
            num_prompts: 3,
            request_rate: None,
            burstiness: 1.0,
            max_concurrency: Some(2),
            percentile_metrics: vec!["ttft".into(), "tpot".into(), "itl".into(), "e2el".into()],
            percentiles: vec![50.0, 99.9],
            goodput,
        }
    }

    #[test]
    fn the_result_follows_vllms_formulas() {
        // Two requests of 3 tokens (ITLs 10 ms, 20 ms and 30 ms, 30 ms), one failed, one warmup; a's stream
        // ends 70 ms after its last token, which vLLM's latency leaves out (but the duration keeps).
        let a = RequestRecord { end_s: 0.2, ..req(0.0, 0.1, &[10_000, 30_000], 3) };
        let b = req(0.5, 0.7, &[30_000, 60_000], 3);
        let failed = RequestRecord {
            error: Some(crate::record::RequestError { kind: crate::record::ErrorKind::Connect, message: "x".into() }),
            end_s: 0.2,
            ..req(0.0, 0.0, &[], 0)
        };
        let warm = RequestRecord { warmup: true, ..req(-1.0, -0.9, &[], 3) };
        let good = vec![Goodput { metric: GoodputMetric::Ttft, ms: 150.0 }];
        let v = vllm_result("2026-12-07T03:26:40+00:00", &[&a, &b, &failed, &warm], &setup(good));
        assert_eq!(v["date"], "20261207-032640");
        assert_eq!(v["tp"], "1");
        assert_eq!((v["completed"].as_u64(), v["failed"].as_u64()), (Some(2), Some(1)));
        assert_eq!(v["total_input_tokens"], 20);
        assert_eq!(v["total_output_tokens"], 6);
        let duration = 0.76; // first scheduled 0.0, last end 0.7 + 0.06
        assert!((v["duration"].as_f64().unwrap() - duration).abs() < 1e-9);
        assert!((v["request_throughput"].as_f64().unwrap() - 2.0 / duration).abs() < 1e-9);
        assert!((v["request_goodput"].as_f64().unwrap() - 1.0 / duration).abs() < 1e-9, "only a's TTFT is ≤ 150 ms");
        assert!((v["mean_ttft_ms"].as_f64().unwrap() - 150.0).abs() < 1e-9);
        // TPOT = (e2el − ttft) / (tokens − 1): 15 ms and 30 ms.
        assert!((v["mean_tpot_ms"].as_f64().unwrap() - 22.5).abs() < 1e-9);
        assert!((v["median_itl_ms"].as_f64().unwrap() - 25.0).abs() < 1e-9);
        assert!(v.get("p99.9_itl_ms").is_some() && v.get("p50_e2el_ms").is_some());
        assert!(v.get("mean_client_queue_time_ms").is_none(), "not asked for");
        assert_eq!(v["latencies"].as_array().unwrap().len(), 3);
        assert!((v["latencies"][0].as_f64().unwrap() - 0.13).abs() < 1e-9, "a's E2EL ends at its last token");
        assert!((v["mean_e2el_ms"].as_f64().unwrap() - 195.0).abs() < 1e-9, "130 ms and 260 ms");
    }

    #[test]
    fn goodput_parses_vllms_objectives_and_refuses_others() {
        assert_eq!(Goodput::parse("ttft:200"), Ok(Goodput { metric: GoodputMetric::Ttft, ms: 200.0 }));
        assert_eq!(Goodput::parse("e2el:1.5").map(|g| g.ms), Ok(1.5));
        assert!(Goodput::parse("itl:3").unwrap_err().contains("ttft, tpot or e2el"));
        assert!(Goodput::parse("ttft").is_err());
        assert!(Goodput::parse("tpot:-1").is_err());
    }
}
