//! `kv_cache_scaling.csv` (reference experiment A): a pure function of the recorded server starts.
//! The first five columns are the seed's, exactly; servelab's extra columns follow.

use crate::run::record::ServerRecord;
use crate::stats::kv::rows;

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
