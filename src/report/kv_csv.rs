//! `kv_cache_scaling.csv` (reference experiment A): a pure function of the recorded server starts.
//! The first five columns are the seed's, exactly; servelab's extra columns follow.

use crate::record::ServerRecord;
use crate::stats::kv::{RowNote, rows};

pub const COLUMNS: [&str; 16] = [
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
    "predicted_kv_tokens",
];

fn f(v: Option<f64>, decimals: usize) -> String {
    v.map(|x| format!("{x:.decimals$}")).unwrap_or_default()
}

fn u(v: Option<u64>) -> String {
    v.map(|x| x.to_string()).unwrap_or_default()
}

/// A row's note in words: "slot 1 of 4 (port 8001; GPU 2 NVIDIA H200; cores 4,5,6,7), beside other servers".
pub fn note_text(n: &RowNote) -> String {
    match n {
        RowNote::Baseline => "baseline (first row)".to_owned(),
        RowNote::CpuRss => "CPU engine: gpu_mem_used_mb is the server process tree's RSS".to_owned(),
        RowNote::TheoryNotApplicable { why } => why.clone(),
        RowNote::NotReleased => "memory not back at the idle baseline after stop".to_owned(),
        RowNote::Slot { slot, slots, port, gpus, cpus } => {
            let mut parts = vec![format!("port {port}")];
            if !gpus.is_empty() {
                let gpus: Vec<String> = gpus
                    .iter()
                    .map(|(index, name)| match name {
                        Some(n) => format!("{index} {n}"),
                        None => index.to_string(),
                    })
                    .collect();
                parts.push(format!("GPU {}", gpus.join(", ")));
            }
            if !cpus.is_empty() {
                parts.push(format!("cores {}", cpus.iter().map(usize::to_string).collect::<Vec<_>>().join(",")));
            }
            format!("slot {slot} of {slots} ({}), beside other servers", parts.join("; "))
        }
        RowNote::NotIdle { extra_mb } => {
            format!("its GPUs held {extra_mb:.0} MiB more at its start than before any slot started")
        }
        RowNote::Error { status, error } => format!("{}: {error}", status.as_str()),
    }
}

/// A row's notes in words, "; " between them.
pub fn notes_text(notes: &[RowNote]) -> String {
    notes.iter().map(note_text).collect::<Vec<_>>().join("; ")
}

/// The CSV bytes.
pub fn render(records: &[ServerRecord]) -> Result<Vec<u8>, csv::Error> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(COLUMNS)?;
    for r in rows(records) {
        w.write_record([
            u(r.max_model_len),
            f(r.mem_used_mb, 1),
            f(r.delta_mb, 1),
            f(r.bytes_per_token_est, 1),
            notes_text(&r.notes),
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
            u(r.predicted_kv_tokens),
        ])?;
    }
    w.into_inner().map_err(|e| csv::Error::from(e.into_error()))
}

/// `kv_cache_scaling_gpus.csv`: per GPU, device-wide used MiB and the server's own MiB at ready, for runs whose
/// memory came from NVML (one pair of columns per GPU, e.g. two under tensor parallelism). None on CPU runs.
pub fn render_per_gpu(records: &[ServerRecord]) -> Result<Option<Vec<u8>>, csv::Error> {
    let Some(n) = records.iter().filter_map(|r| r.at_ready.as_ref()).map(|s| s.gpus.len()).max().filter(|n| *n > 0)
    else {
        return Ok(None);
    };
    let mut sorted: Vec<&ServerRecord> = records.iter().collect();
    sorted.sort_by_key(|r| r.max_model_len.unwrap_or(u64::MAX));
    let mut header = vec!["max_model_len".to_owned()];
    for i in 0..n {
        header.extend([format!("gpu{i}_used_mb"), format!("gpu{i}_server_mb")]);
    }
    header.extend(["used_mb_sum".to_owned(), "server_mb_sum".to_owned(), "status".to_owned()]);
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(&header)?;
    for r in sorted {
        let gpus = r.at_ready.as_ref().map(|s| s.gpus.clone()).unwrap_or_default();
        let mut row = vec![u(r.max_model_len)];
        for i in 0..n {
            let g = gpus.iter().find(|g| g.index as usize == i);
            row.extend([f(g.map(|g| g.used_mb), 1), f(g.and_then(|g| g.server_mb), 1)]);
        }
        row.push(f(r.at_ready.as_ref().and_then(|s| s.device_used_mb), 1));
        row.push(f(r.at_ready.as_ref().and_then(|s| s.server_gpu_mb), 1));
        row.push(r.status.as_str().to_owned());
        w.write_record(&row)?;
    }
    w.into_inner().map(Some).map_err(|e| csv::Error::from(e.into_error()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{GpuReading, MemSample, Source};

    fn record(len: u64, gpus: Vec<(f64, f64)>) -> ServerRecord {
        let text = format!(
            r#"{{"id":"g{len}","vars":{{}},"argv":["vllm"],"env":{{}},"base_url":"http://127.0.0.1:8000","status":"ok","error":null,"log_tail":null,"started_at":"t","ready_s":100.0,"max_model_len":{len},"served_max_model_len":null,"memory_source":"nvml","baseline":{{"t_s":0.0,"device_used_mb":0.0,"device_total_mb":null,"server_gpu_mb":null,"server_rss_mb":null,"server_pss_mb":null,"host_available_mb":null,"processes":0}},"at_ready":null,"timeline":[],"log":{{"weights_gib":null,"model_load_s":null,"available_kv_gib":null,"reserved_kv_gib":null,"cpu_kv_gib":null,"cpu_node_gib":null,"kv_device":null,"kv_cache_tokens":null,"max_concurrency_tokens":null,"max_concurrency":null,"graph_capture_s":null,"graph_capture_gib":null,"init_engine_s":null,"compile_s":null,"kv_gib":null,"lines":[]}},"cache_config_info":null,"version":null,"model":null,"stop":null,"release":null,"pids":[]}}"#
        );
        let mut r: ServerRecord = serde_json::from_str(&text).unwrap();
        let readings: Vec<GpuReading> = gpus
            .iter()
            .enumerate()
            .map(|(i, (used, mine))| GpuReading {
                index: i as u32,
                used_mb: *used,
                total_mb: 143_771.0,
                server_mb: Some(*mine),
            })
            .collect();
        r.at_ready = Some(MemSample {
            device_used_mb: Some(readings.iter().map(|g| g.used_mb).sum()),
            server_gpu_mb: Some(readings.iter().filter_map(|g| g.server_mb).sum()),
            gpus: readings,
            ..MemSample::default()
        });
        assert_eq!(r.memory_source, Source::Nvml);
        r
    }

    #[test]
    fn per_gpu_columns_from_recorded_nvml_readings() {
        let records = [
            record(32768, vec![(133_800.0, 133_786.0), (133_812.0, 133_798.0)]),
            record(2048, vec![(133_790.0, 133_776.0), (133_802.0, 133_788.0)]),
        ];
        let csv = String::from_utf8(render_per_gpu(&records).unwrap().unwrap()).unwrap();
        assert_eq!(
            csv,
            "max_model_len,gpu0_used_mb,gpu0_server_mb,gpu1_used_mb,gpu1_server_mb,used_mb_sum,server_mb_sum,status\n\
2048,133790.0,133776.0,133802.0,133788.0,267592.0,267564.0,ok\n\
32768,133800.0,133786.0,133812.0,133798.0,267612.0,267584.0,ok\n"
        );
        // The summed figure is what kv_cache_scaling.csv reports.
        assert!(String::from_utf8(render(&records).unwrap()).unwrap().contains("2048,267592.0,"));
        let cpu = record(1024, vec![]);
        assert_eq!(cpu.tensor_parallel_size(), 1);
        assert!(render_per_gpu(&[cpu]).unwrap().is_none(), "no per-GPU file without GPU readings");
    }
}

#[cfg(test)]
mod tensor_parallel {
    use crate::engine::logparse;
    use crate::record::ServerRecord;

    /// Recorded on two H200s with --tensor-parallel-size 2 (vLLM 0.26): the log gives each rank's KV GiB and
    /// the total token capacity; bytes per KV token must come out at the model's 12,288, not half of it.
    #[test]
    fn engine_bytes_per_token_counts_every_rank() {
        let log = logparse::parse(include_str!("../../tests/fixtures/logs/gpu-0.26-h200x2-tp2-2048.log"));
        assert_eq!((log.available_kv_gib, log.kv_cache_tokens), (Some(127.31), Some(22_249_712)));
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/h200x2-tp2/tp2/servers/a7d6fedd910b");
        let mut r: ServerRecord = crate::record::folder::read_startup(&dir).unwrap().unwrap();
        r.log = log;
        assert_eq!(r.tensor_parallel_size(), 2);
        let (bytes, how) = r.kv_cache_bytes().unwrap();
        assert_eq!(how, "log GiB");
        let per_token = bytes / r.kv_cache_tokens().unwrap() as f64;
        assert!((per_token / 12_288.0 - 1.0).abs() < 0.01, "{per_token}");
    }
}

#[cfg(test)]
mod note_tests {
    use super::*;

    #[test]
    fn row_notes_are_worded_with_their_figures() {
        let slot = RowNote::Slot {
            slot: 1,
            slots: 4,
            port: 8001,
            gpus: vec![(2, Some("NVIDIA H200".to_owned()))],
            cpus: vec![4, 5, 6, 7],
        };
        assert_eq!(
            notes_text(&[RowNote::Baseline, slot, RowNote::NotIdle { extra_mb: 300.4 }]),
            "baseline (first row); slot 1 of 4 (port 8001; GPU 2 NVIDIA H200; cores 4,5,6,7), beside other servers; \
             its GPUs held 300 MiB more at its start than before any slot started"
        );
    }
}
