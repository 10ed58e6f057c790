//! Memory readings as recorded in `startup.json`: where a figure came from, one reading, one GPU's reading.

use serde::{Deserialize, Serialize};

/// Where a memory figure came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    Nvml,
    NvidiaSmi,
    Procfs,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Nvml => "nvml",
            Source::NvidiaSmi => "nvidia-smi",
            Source::Procfs => "procfs",
        }
    }
}

/// Bytes in a MiB: every `_mb` figure servelab records is in MiB.
pub const MIB: f64 = 1024.0 * 1024.0;

/// One GPU's reading: device-wide memory, the server's processes on it, utilisation.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GpuReading {
    pub index: u32,
    pub used_mb: f64,
    pub total_mb: f64,
    /// Memory of the server's processes on this GPU (NVML per process).
    pub server_mb: Option<f64>,
}

/// One reading. Device figures are GPU-wide (None on CPU); server figures cover the server's process tree.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MemSample {
    /// Seconds since the server was started (0 for a baseline).
    pub t_s: f64,
    pub device_used_mb: Option<f64>,
    pub device_total_mb: Option<f64>,
    /// GPU memory of the server's processes (NVML / nvidia-smi per process).
    pub server_gpu_mb: Option<f64>,
    /// RSS and PSS summed over the server's process tree.
    pub server_rss_mb: Option<f64>,
    pub server_pss_mb: Option<f64>,
    /// The machine's available memory (MemAvailable).
    pub host_available_mb: Option<f64>,
    pub processes: usize,
    /// Per GPU (device figures above are their sums); empty on CPU.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gpus: Vec<GpuReading>,
}
