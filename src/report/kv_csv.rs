//! `kv_cache_scaling.csv` (reference experiment A): a pure function of the recorded server starts.
//! The first five columns are the seed's, exactly; servelab's extra columns follow.

use crate::probe::Source;
use crate::run::record::{ServerRecord, Status};

pub const COLUMNS: [&str; 15] = [
    "max_model_len",
    "gpu_mem_used_mb",
    "delta_mb_from_prev",
    "bytes_per_token_est",
    "notes",
    "memory_source",
    "server_mem_mb",
    "kv_cache_tokens",
    "kv_cache_bytes",
    "max_concurrency",
    "engine_bytes_per_token",
    "theory_bytes_per_token",
    "weights_gib",
    "ready_s",
    "status",
];

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

fn row(r: &ServerRecord, prev: &mut Option<(u64, f64)>) -> KvRow {
    let mem = mem_used(r);
    let mut notes = Vec::new();
    let (mut delta_mb, mut est) = (None, None);
    match (mem, r.max_model_len, *prev) {
        (Some(m), Some(len), Some((plen, pm))) => {
            delta_mb = Some(m - pm);
            if len != plen {
                est = Some((m - pm) * 1024.0 * 1024.0 / (len as f64 - plen as f64));
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
    }
}

fn f(v: Option<f64>, decimals: usize) -> String {
    v.map(|x| format!("{x:.decimals$}")).unwrap_or_default()
}

fn u(v: Option<u64>) -> String {
    v.map(|x| x.to_string()).unwrap_or_default()
}

/// The CSV bytes.
pub fn render(records: &[ServerRecord]) -> Vec<u8> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let _ = w.write_record(COLUMNS);
    for r in rows(records) {
        let _ = w.write_record([
            u(r.max_model_len),
            f(r.mem_used_mb, 1),
            f(r.delta_mb, 1),
            f(r.bytes_per_token_est, 1),
            r.notes.join("; "),
            r.memory_source.as_str().to_owned(),
            f(r.server_mem_mb, 1),
            u(r.kv_cache_tokens),
            f(r.kv_cache_bytes, 0),
            f(r.max_concurrency, 2),
            f(r.engine_bytes_per_token, 1),
            u(r.theory_bytes_per_token),
            f(r.weights_gib, 4),
            f(r.ready_s, 2),
            r.status.as_str().to_owned(),
        ]);
    }
    w.into_inner().unwrap_or_default()
}
