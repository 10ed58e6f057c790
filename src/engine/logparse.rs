//! Facts from vLLM's startup log: weights, KV memory and tokens, maximum
//! concurrency, graph capture, engine init time, and the failure line when startup fails. Accepts the GPU and
//! CPU forms, one-line and two-line KV forms, and the `--kv-cache-memory-bytes` form of several versions.

pub use crate::record::server::LogFacts;
use regex::Regex;
use std::sync::LazyLock;

fn re(pattern: &str) -> Regex {
    Regex::new(pattern).expect("static regex")
}

static MODEL_LOADING: LazyLock<Regex> =
    LazyLock::new(|| re(r"Model loading took ([\d.]+) GiB(?: memory)? and ([\d.]+) seconds"));
static AVAILABLE_KV: LazyLock<Regex> = LazyLock::new(|| re(r"Available KV cache memory: ([\d.]+) GiB"));
static RESERVED_KV: LazyLock<Regex> = LazyLock::new(|| re(r"reserved ([\d.]+) GiB memory for KV Cache"));
static CPU_KV: LazyLock<Regex> = LazyLock::new(|| re(r"Explicitly set \(([\d.]+)/([\d.]+)\) GiB for KV cache"));
static KV_SIZE: LazyLock<Regex> = LazyLock::new(|| re(r"(?:(\w+) )?KV cache size: ([\d,]+) tokens"));
static MAX_CONC: LazyLock<Regex> =
    LazyLock::new(|| re(r"Maximum concurrency for ([\d,]+) tokens per request: ([\d.]+)x"));
static GRAPHS: LazyLock<Regex> = LazyLock::new(|| re(r"Graph capturing finished in (\d+) secs?, took (-?[\d.]+) GiB"));
/// vLLM 0.26's breakdown of the memory outside the KV pool ("Free memory on device (139.29/139.8 GiB) on
/// startup. Desired GPU memory utilization is (0.92, 128.62 GiB). Actual usage is 0.93 GiB for weight, 0.34 GiB
/// for peak activation, 0.22 GiB for non-torch memory, and 0.39 GiB for CUDAGraph memory.").
static BREAKDOWN: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"Free memory on device \(([\d.]+)/([\d.]+) GiB\) on startup\. Desired GPU memory utilization is \(([\d.]+), ([\d.]+) GiB\)\. Actual usage is ([\d.]+) GiB for weight, ([\d.]+) GiB for peak activation, ([\d.]+) GiB for non-torch memory, and ([\d.]+) GiB for CUDAGraph memory",
    )
});
static INIT: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"init engine \(profile, create kv cache, warmup model\) took ([\d.]+) s(?:econds)?(?: \(compilation: ([\d.]+) s\))?",
    )
});

/// Failure strings vLLM prints, most specific first (vllm.md "Failure strings to surface verbatim").
const FAILURES: [&str; 6] = [
    "To serve at least one request with the model",
    "No available memory for the cache blocks",
    "on startup is less than desired GPU memory utilization",
    "is greater than the derived max_model_len",
    "out of memory",
    "Engine core initialization failed",
];

/// Drops vLLM's prefix: `(EngineCore pid=1) INFO 11-28 15:02:58 [file.py:1] message` → `message`.
pub fn strip_prefix(line: &str) -> &str {
    match line.find("] ") {
        Some(at)
            if line[..at].contains('[')
                && (line.contains(" INFO ")
                    || line.contains(" WARNING ")
                    || line.contains(" ERROR ")
                    || line.contains(" DEBUG ")) =>
        {
            &line[at + 2..]
        }
        _ => line,
    }
}

fn num<T: std::str::FromStr>(text: &str) -> Option<T> {
    text.replace(',', "").parse().ok()
}

pub fn parse(log: &str) -> LogFacts {
    let mut f = LogFacts::default();
    for raw in log.lines() {
        let line = strip_prefix(raw).trim();
        let before = f.clone();
        if let Some(c) = MODEL_LOADING.captures(line) {
            f.weights_gib = f.weights_gib.or(num(&c[1]));
            f.model_load_s = f.model_load_s.or(num(&c[2]));
        }
        if let Some(c) = BREAKDOWN.captures(line) {
            f.cuda_total_gib = f.cuda_total_gib.or(num(&c[2]));
            f.requested_gib = f.requested_gib.or(num(&c[4]));
            f.activation_gib = f.activation_gib.or(num(&c[6]));
            f.non_torch_gib = f.non_torch_gib.or(num(&c[7]));
            f.cudagraph_gib = f.cudagraph_gib.or(num(&c[8]));
        }
        if let Some(c) = AVAILABLE_KV.captures(line) {
            f.available_kv_gib = f.available_kv_gib.or(num(&c[1]));
        }
        if let Some(c) = RESERVED_KV.captures(line) {
            f.reserved_kv_gib = f.reserved_kv_gib.or(num(&c[1]));
        }
        if let Some(c) = CPU_KV.captures(line) {
            f.cpu_kv_gib = f.cpu_kv_gib.or(num(&c[1]));
            f.cpu_node_gib = f.cpu_node_gib.or(num(&c[2]));
        }
        if let Some(c) = KV_SIZE.captures(line) {
            f.kv_device = f.kv_device.or(c.get(1).map(|m| m.as_str().to_owned()));
            f.kv_cache_tokens = f.kv_cache_tokens.or(num(&c[2]));
        }
        if let Some(c) = MAX_CONC.captures(line) {
            f.max_concurrency_tokens = f.max_concurrency_tokens.or(num(&c[1]));
            f.max_concurrency = f.max_concurrency.or(num(&c[2]));
        }
        if let Some(c) = GRAPHS.captures(line) {
            f.graph_capture_s = f.graph_capture_s.or(num(&c[1]));
            f.graph_capture_gib = f.graph_capture_gib.or(num(&c[2]));
        }
        if let Some(c) = INIT.captures(line) {
            f.init_engine_s = f.init_engine_s.or(num(&c[1]));
            f.compile_s = f.compile_s.or(c.get(2).and_then(|m| num(m.as_str())));
        }
        if f != before {
            f.lines.push(line.to_owned());
        }
    }
    f.kv_gib = f.reserved_kv_gib.or(f.available_kv_gib).or(f.cpu_kv_gib);
    f.args = super::logargs::parse(log);
    f
}

/// vLLM's own reason for a failed start: the last line with a known failure string, else the last line that
/// looks like an error. Traceback frames are skipped.
pub fn failure_line(log: &str) -> Option<String> {
    // Warnings and info lines are not failures, whatever words they hold.
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| !l.contains(" WARNING ") && !l.contains(" INFO ") && !l.contains(" DEBUG "))
        .map(|l| strip_prefix(l).trim())
        .filter(|l| !l.is_empty())
        .collect();
    let known = FAILURES.iter().find_map(|pat| lines.iter().rev().find(|l| l.contains(pat)));
    let generic = || {
        lines.iter().rev().find(|l| {
            !l.starts_with("File ")
                && !l.starts_with("Traceback")
                && !l.starts_with("For further information")
                && (l.contains("Error") || l.contains("error:") || l.contains("Exception"))
        })
    };
    let line = known.or_else(generic)?;
    Some(shorten(line.trim_start_matches("Value error, "), 300))
}

/// Cuts a long message at the last sentence end within `max` characters (vLLM's messages put the fact
/// first and the caveats after).
pub fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let head: String = text.chars().take(max).collect();
    match head.rfind(". ") {
        Some(at) if at > max / 3 => head[..=at].to_owned(),
        _ => format!("{head}…"),
    }
}

/// The last `n` lines of a log, for error messages.
pub fn tail(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memory_breakdown_of_vllm_0_26_is_read() {
        let line = "(EngineCore pid=1603) INFO 12-01 23:20:01 [gpu_worker.py:600] Free memory on device (139.29/139.8 GiB) on startup. Desired GPU memory utilization is (0.92, 128.62 GiB). Actual usage is 0.93 GiB for weight, 0.34 GiB for peak activation, 0.22 GiB for non-torch memory, and 0.39 GiB for CUDAGraph memory. Replace gpu_memory_utilization config with `--kv-cache-memory=135920823399` (126.59 GiB) to fit into requested memory.";
        let f = parse(line);
        assert_eq!(
            (f.cuda_total_gib, f.requested_gib, f.activation_gib, f.non_torch_gib, f.cudagraph_gib),
            (Some(139.8), Some(128.62), Some(0.34), Some(0.22), Some(0.39))
        );
        assert_eq!(failure_line(line), None, "an INFO line of a good start is no failure");
    }

    #[test]
    fn gpu_two_line_form_with_graphs() {
        let log = "(EngineCore_DP0 pid=1) INFO 06-01 10:00:00 [gpu_model_runner.py:1] Model loading took 0.9276 GiB and 1.52 seconds\n\
(EngineCore_DP0 pid=1) INFO 06-01 10:00:10 [gpu_worker.py:1] Available KV cache memory: 118.21 GiB\n\
(EngineCore_DP0 pid=1) INFO 06-01 10:00:10 [kv_cache_utils.py:1] GPU KV cache size: 10,328,704 tokens\n\
(EngineCore_DP0 pid=1) INFO 06-01 10:00:10 [kv_cache_utils.py:1] Maximum concurrency for 4,096 tokens per request: 2521.66x\n\
(EngineCore_DP0 pid=1) INFO 06-01 10:00:20 [gpu_model_runner.py:1] Graph capturing finished in 9 secs, took 0.56 GiB\n\
(EngineCore_DP0 pid=1) INFO 06-01 10:00:20 [core.py:1] init engine (profile, create kv cache, warmup model) took 21.34 seconds (compilation: 12.10 s)\n";
        let f = parse(log);
        assert_eq!(f.weights_gib, Some(0.9276));
        assert_eq!(f.available_kv_gib, Some(118.21));
        assert_eq!(f.kv_gib, Some(118.21));
        assert_eq!(f.kv_device.as_deref(), Some("GPU"));
        assert_eq!(f.kv_cache_tokens, Some(10_328_704));
        assert_eq!(f.max_concurrency_tokens, Some(4096));
        assert_eq!(f.max_concurrency, Some(2521.66));
        assert_eq!((f.graph_capture_s, f.graph_capture_gib), (Some(9.0), Some(0.56)));
        assert_eq!((f.init_engine_s, f.compile_s), (Some(21.34), Some(12.10)));
        assert_eq!(f.lines.len(), 6);
    }

    #[test]
    fn kv_cache_memory_bytes_form_and_old_phrasing() {
        let log = "INFO 01-01 00:00:00 [gpu_worker.py:1] Model loading took 0.93 GiB memory and 2.0 seconds\n\
INFO 01-01 00:00:01 [gpu_worker.py:1] Skipping memory profiling; reserved 0.19 GiB memory for KV Cache as specified by kv_cache_memory_bytes config\n\
INFO 01-01 00:00:01 [kv_cache_utils.py:1] KV cache size: 16,384 tokens\n\
INFO 01-01 00:00:01 [core.py:1] init engine (profile, create kv cache, warmup model) took 3.5 s\n";
        let f = parse(log);
        assert_eq!(f.weights_gib, Some(0.93));
        assert_eq!(f.reserved_kv_gib, Some(0.19));
        assert_eq!(f.kv_gib, Some(0.19));
        assert_eq!(f.kv_device, None);
        assert_eq!(f.kv_cache_tokens, Some(16_384));
        assert_eq!(f.init_engine_s, Some(3.5));
    }

    #[test]
    fn recorded_cpu_log() {
        let log = include_str!("../../tests/fixtures/logs/cpu-0.32-kv-bytes-256mib.log");
        let f = parse(log);
        assert_eq!((f.cpu_kv_gib, f.cpu_node_gib), (Some(0.25), Some(12.46)));
        assert_eq!(f.kv_device.as_deref(), Some("CPU"));
        assert_eq!(f.kv_cache_tokens, Some(131_072));
        assert_eq!((f.max_concurrency_tokens, f.max_concurrency), (Some(2048), Some(64.0)));
        assert_eq!(f.init_engine_s, Some(0.48));
    }

    #[test]
    fn recorded_h200_logs_of_vllm_026() {
        // Default memory utilisation: the profiled budget in GiB, two-line KV form, CUDA graphs, compilation.
        let f = parse(include_str!("../../tests/fixtures/logs/gpu-0.26-h200-default-util-512.log"));
        assert_eq!(f.weights_gib, Some(0.93));
        assert_eq!(f.available_kv_gib, Some(127.11));
        assert_eq!((f.kv_device.as_deref(), f.kv_cache_tokens), (Some("GPU"), Some(11_107_024)));
        assert_eq!((f.max_concurrency_tokens, f.max_concurrency), (Some(512), Some(21693.41)));
        assert_eq!((f.graph_capture_s, f.graph_capture_gib), (Some(5.0), Some(0.39)));
        assert_eq!((f.init_engine_s, f.compile_s), (Some(38.79), Some(16.36)));
        // --kv-cache-memory-bytes: the "reserved ... as specified by kv_cache_memory_bytes" form, no profiling.
        let f = parse(include_str!("../../tests/fixtures/logs/gpu-0.26-h200-kv-bytes-16384.log"));
        assert_eq!(f.reserved_kv_gib, Some(3.0));
        assert_eq!(f.available_kv_gib, None);
        assert_eq!(f.kv_gib, Some(3.0));
        assert_eq!(f.kv_cache_tokens, Some(262_144));
        assert_eq!((f.max_concurrency_tokens, f.max_concurrency), (Some(16_384), Some(16.0)));
        assert_eq!(failure_line(include_str!("../../tests/fixtures/logs/gpu-0.26-h200-kv-bytes-16384.log")), None);
    }

    #[test]
    fn recorded_cpu_failure_surfaces_vllms_line() {
        let log = include_str!("../../tests/fixtures/logs/cpu-0.32-max-model-len-too-large.log");
        let failure = failure_line(log).unwrap();
        assert!(
            failure.starts_with("User-specified max_model_len (16384) is greater than the derived max_model_len"),
            "{failure}"
        );
    }

    #[test]
    fn gpu_failure_strings() {
        let log = "ERROR 01-01 [core.py:1] ValueError: To serve at least one request with the models's max seq len (32768), (0.38 GiB KV cache is needed, which is larger than the available KV cache memory (0.19 GiB). Based on the available memory, the estimated maximum model length is 16384.\n\
RuntimeError: Engine core initialization failed. See root cause above.\n";
        assert!(failure_line(log).unwrap().contains("To serve at least one request"));
    }
}
