//! Probes read the machine: memory (NVML, nvidia-smi, procfs) behind one trait, /metrics, model facts.
//! A probe only observes; deciding what a reading means belongs to `stats` and `report`.

pub mod gpu;
pub mod metrics;
pub mod model;
pub mod procfs;
pub mod topology;

pub use crate::record::memory::{GpuReading, MIB, MemSample, Source};
use crate::spec::MemorySource;
use std::collections::BTreeSet;

/// Why a GPU memory source cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(
        "NVML is not available: {0}; install the NVIDIA driver, or set `measure.memory: procfs` on a machine without GPUs"
    )]
    Nvml(#[source] nvml_wrapper::error::NvmlError),
    #[error("NVML: {0}")]
    NvmlQuery(#[source] nvml_wrapper::error::NvmlError),
    #[error(
        "nvidia-smi is not available (not on PATH, or it failed); install the NVIDIA driver, or set `measure.memory: auto` or `procfs`"
    )]
    NvidiaSmi,
}

/// A memory source. GPU probes answer `device` and `processes`; procfs answers neither (RSS is always read).
pub trait MemoryProbe: Send + Sync {
    fn source(&self) -> Source;
    /// (used, total) MiB summed over the GPUs.
    fn device(&self) -> Option<(f64, f64)>;
    /// GPU memory in MiB held by these processes.
    fn processes(&self, pids: &BTreeSet<u32>) -> Option<f64>;
    /// Per-GPU memory, with the share of these processes on each GPU.
    fn per_device(&self, _pids: &BTreeSet<u32>) -> Vec<GpuReading> {
        Vec::new()
    }
    /// SM clock in MHz (mean over the GPUs) and the clock-event ("throttle") reasons ORed over them (NVML's
    /// bitmask: 0x1 idle, 0x4 software power cap, 0x20 software thermal, 0x40 hardware thermal, ...).
    fn clocks(&self) -> Option<(f64, u64)> {
        None
    }
    /// GPU utilisation in percent, averaged over the GPUs (what `nvidia-smi dmon` shows as sm%).
    fn utilization(&self) -> Option<f64> {
        None
    }
    /// GPU name, driver and CUDA versions, for the manifest.
    fn describe(&self) -> Option<String> {
        None
    }
    /// The memory the CUDA runtime reports as total on the smallest GPU (NVML's total less the memory it
    /// reserves), in bytes: what vLLM multiplies by `--gpu-memory-utilization`.
    fn cuda_total_bytes(&self) -> Option<f64> {
        None
    }
    /// The same probe reading only these GPUs (NVML indices): a slot's server is measured on its own GPUs,
    /// never on its neighbours'. None where the probe has no GPUs to choose from.
    fn for_gpus(&self, _gpus: &[u32]) -> Option<Box<dyn MemoryProbe>> {
        None
    }
}

pub struct Procfs;

impl MemoryProbe for Procfs {
    fn source(&self) -> Source {
        Source::Procfs
    }
    fn device(&self) -> Option<(f64, f64)> {
        None
    }
    fn processes(&self, _: &BTreeSet<u32>) -> Option<f64> {
        None
    }
}

/// Picks the probe the spec asks for. `auto` takes NVML, then nvidia-smi, then procfs; an explicit GPU source
/// that does not answer is an error (the user asked for GPU figures and would otherwise get CPU ones).
pub fn select(wanted: MemorySource) -> Result<Box<dyn MemoryProbe>, ProbeError> {
    match wanted {
        MemorySource::Procfs => Ok(Box::new(Procfs)),
        MemorySource::Nvml => gpu::Nvml::init().map(|p| Box::new(p) as Box<dyn MemoryProbe>),
        MemorySource::NvidiaSmi => gpu::NvidiaSmi::detect().map(|p| Box::new(p) as Box<dyn MemoryProbe>),
        MemorySource::Auto => Ok(gpu::Nvml::init()
            .map(|p| Box::new(p) as Box<dyn MemoryProbe>)
            .or_else(|_| gpu::NvidiaSmi::detect().map(|p| Box::new(p) as Box<dyn MemoryProbe>))
            .unwrap_or_else(|_| Box::new(Procfs))),
    }
}

/// Reads everything at once for the given process tree. With per-GPU readings, the device figures are their
/// sums (every GPU, so tensor-parallel workers on each count).
pub fn sample(probe: &dyn MemoryProbe, pids: &BTreeSet<u32>, t_s: f64) -> MemSample {
    let (rss, pss) = procfs::tree_memory(pids);
    let gpus = probe.per_device(pids);
    let device = if gpus.is_empty() {
        probe.device()
    } else {
        Some((gpus.iter().map(|g| g.used_mb).sum(), gpus.iter().map(|g| g.total_mb).sum()))
    };
    MemSample {
        t_s,
        device_used_mb: device.map(|d| d.0),
        device_total_mb: device.map(|d| d.1),
        server_gpu_mb: if pids.is_empty() { None } else { probe.processes(pids) },
        server_rss_mb: (!pids.is_empty()).then_some(rss as f64 / MIB),
        server_pss_mb: (!pids.is_empty()).then_some(pss as f64 / MIB),
        host_available_mb: procfs::meminfo().map(|(_, avail)| avail as f64 / MIB),
        processes: pids.len(),
        gpus,
    }
}

/// Caps on HTTP bodies servelab reads (a misbehaving endpoint must not exhaust memory).
pub const MAX_SMALL_BODY: usize = 1 << 20;
/// /metrics pages of a large server run to a few hundred KiB.
pub const MAX_METRICS_BODY: usize = 16 << 20;

/// Reads a response body of at most `cap` bytes; a longer one is an error, and only cap + one chunk is read.
pub async fn body_capped(mut resp: reqwest::Response, cap: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| e.to_string())? {
        out.extend_from_slice(&chunk);
        if out.len() > cap {
            return Err(format!("the response body is longer than {cap} bytes; servelab stopped reading it"));
        }
    }
    Ok(out)
}

/// `body_capped` as JSON (Null when it is not JSON or too long).
pub async fn json_capped(resp: reqwest::Response, cap: usize) -> serde_json::Value {
    body_capped(resp, cap).await.ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
}

/// CPU time counters from /proc/stat: (total jiffies, steal jiffies).
pub fn cpu_times() -> Option<(u64, u64)> {
    cpu_times_of(&[])
}

/// `cpu_times` summed over these cores (a slot's), or of the whole host when `cores` is empty.
pub fn cpu_times_of(cores: &[usize]) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    parse_cpu_times(&text, cores)
}

fn parse_cpu_times(text: &str, cores: &[usize]) -> Option<(u64, u64)> {
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let counters = |rest: &str| -> Option<(u64, u64)> {
        let v: Vec<u64> = rest.split_whitespace().filter_map(|x| x.parse().ok()).collect();
        Some((v.iter().take(8).sum(), *v.get(7)?))
    };
    if cores.is_empty() {
        return counters(text.lines().next()?.strip_prefix("cpu ")?);
    }
    let mut total = (0, 0);
    for line in text.lines() {
        let Some((name, rest)) = line.split_once(' ') else { continue };
        let Some(n) = name.strip_prefix("cpu").and_then(|n| n.parse::<usize>().ok()) else { continue };
        if cores.contains(&n) {
            let (t, s) = counters(rest)?;
            total = (total.0 + t, total.1 + s);
        }
    }
    (total.0 > 0).then_some(total)
}

/// The 1-minute load average from /proc/loadavg.
pub fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg").ok()?.split_whitespace().next()?.parse().ok()
}

fn read_text(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Host name, OS (with kernel), CPU model and logical CPUs, for the manifest.
pub fn host_facts() -> (String, String, String, usize) {
    let host = read_text("/proc/sys/kernel/hostname").trim().to_owned();
    let os_release = read_text("/etc/os-release");
    let pretty =
        os_release.lines().find_map(|l| l.strip_prefix("PRETTY_NAME=")).unwrap_or("").trim_matches('"').to_owned();
    let kernel = read_text("/proc/sys/kernel/osrelease").trim().to_owned();
    let cpu = read_text("/proc/cpuinfo")
        .lines()
        .find_map(|l| l.strip_prefix("model name").map(|r| r.trim_start_matches([' ', '\t', ':']).to_owned()))
        .unwrap_or_default();
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    (host, format!("{pretty} (Linux {kernel})"), cpu, cpus)
}

#[cfg(test)]
mod tests {
    #[test]
    fn steal_is_read_on_a_slots_cores_alone() {
        let stat = "cpu  10 0 10 70 0 0 0 10 0 0\ncpu0 5 0 5 40 0 0 0 0 0 0\ncpu1 5 0 5 30 0 0 0 10 0 0\nintr 1\n";
        assert_eq!(super::parse_cpu_times(stat, &[]), Some((100, 10)));
        assert_eq!(super::parse_cpu_times(stat, &[1]), Some((50, 10)));
        assert_eq!(super::parse_cpu_times(stat, &[0]), Some((50, 0)));
        assert_eq!(super::parse_cpu_times(stat, &[7]), None);
    }

    use super::*;

    /// Replays per-GPU readings recorded from NVML on a two-GPU machine.
    struct Recorded(Vec<GpuReading>);

    impl MemoryProbe for Recorded {
        fn source(&self) -> Source {
            Source::Nvml
        }
        fn device(&self) -> Option<(f64, f64)> {
            None
        }
        fn processes(&self, _: &BTreeSet<u32>) -> Option<f64> {
            let s: Vec<f64> = self.0.iter().filter_map(|g| g.server_mb).collect();
            (!s.is_empty()).then(|| s.iter().sum())
        }
        fn per_device(&self, _: &BTreeSet<u32>) -> Vec<GpuReading> {
            self.0.clone()
        }
    }

    #[test]
    fn multi_gpu_readings_are_summed_and_kept_per_gpu() {
        let probe = Recorded(vec![
            GpuReading { index: 0, used_mb: 133_790.0, total_mb: 143_771.0, server_mb: Some(133_776.0) },
            GpuReading { index: 1, used_mb: 133_802.0, total_mb: 143_771.0, server_mb: Some(133_788.0) },
        ]);
        let s = sample(&probe, &[std::process::id()].into(), 1.5);
        assert_eq!(s.device_used_mb, Some(267_592.0));
        assert_eq!(s.device_total_mb, Some(287_542.0));
        assert_eq!(s.server_gpu_mb, Some(267_564.0));
        assert_eq!(s.gpus.len(), 2);
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<MemSample>(&json).unwrap(), s);
    }
}
