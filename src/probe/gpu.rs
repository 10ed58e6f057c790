//! GPU memory: NVML through nvml-wrapper (loads libnvidia-ml at runtime, so it builds and fails cleanly
//! without a driver), and `nvidia-smi` as the fallback.

use super::{MIB, MemoryProbe, ProbeError, Source};
use std::collections::BTreeSet;
use std::process::Command;

pub struct Nvml {
    nvml: nvml_wrapper::Nvml,
    /// Only these device indices (a slot's GPUs); every device when None.
    only: Option<BTreeSet<u32>>,
}

impl Nvml {
    pub fn init() -> Result<Self, ProbeError> {
        let nvml = nvml_wrapper::Nvml::init().map_err(ProbeError::Nvml)?;
        Ok(Nvml { nvml, only: None })
    }

    /// A probe that reads only these GPUs (NVML indices), so a slot's readings leave the other slots out.
    pub fn only(indices: &[u32]) -> Result<Self, ProbeError> {
        let mut n = Nvml::init()?;
        n.only = Some(indices.iter().copied().collect());
        Ok(n)
    }

    pub(super) fn handle(&self) -> &nvml_wrapper::Nvml {
        &self.nvml
    }

    fn devices(&self) -> Vec<nvml_wrapper::Device<'_>> {
        let count = self.nvml.device_count().unwrap_or(0);
        (0..count)
            .filter(|i| self.only.as_ref().is_none_or(|o| o.contains(i)))
            .filter_map(|i| self.nvml.device_by_index(i).ok())
            .collect()
    }
}

impl MemoryProbe for Nvml {
    fn source(&self) -> Source {
        Source::Nvml
    }

    fn for_gpus(&self, gpus: &[u32]) -> Option<Box<dyn MemoryProbe>> {
        Nvml::only(gpus).ok().map(|n| Box::new(n) as Box<dyn MemoryProbe>)
    }

    fn device(&self) -> Option<(f64, f64)> {
        let infos: Vec<_> = self.devices().iter().filter_map(|d| d.memory_info().ok()).collect();
        if infos.is_empty() {
            return None;
        }
        Some((infos.iter().map(|m| m.used as f64 / MIB).sum(), infos.iter().map(|m| m.total as f64 / MIB).sum()))
    }

    fn cuda_total_bytes(&self) -> Option<f64> {
        let devices = self.devices();
        let totals = devices.iter().filter_map(|d| d.memory_info().ok()).map(|m| m.total.saturating_sub(m.reserved));
        totals.min().map(|b| b as f64)
    }

    fn processes(&self, pids: &BTreeSet<u32>) -> Option<f64> {
        let mut total = 0u64;
        let mut seen = false;
        for device in self.devices() {
            for p in device.running_compute_processes().unwrap_or_default() {
                if let (true, nvml_wrapper::enums::device::UsedGpuMemory::Used(bytes)) =
                    (pids.contains(&p.pid), p.used_gpu_memory)
                {
                    total += bytes;
                    seen = true;
                }
            }
        }
        seen.then_some(total as f64 / MIB)
    }

    fn per_device(&self, pids: &BTreeSet<u32>) -> Vec<super::GpuReading> {
        let mut out = Vec::new();
        for (i, device) in self.devices().iter().enumerate() {
            let Ok(m) = device.memory_info() else { continue };
            let mine: Vec<u64> = device
                .running_compute_processes()
                .unwrap_or_default()
                .into_iter()
                .filter(|p| pids.contains(&p.pid))
                .filter_map(|p| match p.used_gpu_memory {
                    nvml_wrapper::enums::device::UsedGpuMemory::Used(b) => Some(b),
                    nvml_wrapper::enums::device::UsedGpuMemory::Unavailable => None,
                })
                .collect();
            out.push(super::GpuReading {
                index: i as u32,
                used_mb: m.used as f64 / MIB,
                total_mb: m.total as f64 / MIB,
                server_mb: (!mine.is_empty()).then(|| mine.iter().sum::<u64>() as f64 / MIB),
            });
        }
        out
    }

    fn clocks(&self) -> Option<(f64, u64)> {
        let devices = self.devices();
        let sm: Vec<f64> = devices
            .iter()
            .filter_map(|d| d.clock_info(nvml_wrapper::enum_wrappers::device::Clock::SM).ok())
            .map(f64::from)
            .collect();
        let reasons = devices.iter().filter_map(|d| d.current_throttle_reasons().ok()).fold(0u64, |a, r| a | r.bits());
        (!sm.is_empty()).then(|| (sm.iter().sum::<f64>() / sm.len() as f64, reasons))
    }

    fn utilization(&self) -> Option<f64> {
        let u: Vec<f64> =
            self.devices().iter().filter_map(|d| d.utilization_rates().ok()).map(|r| f64::from(r.gpu)).collect();
        (!u.is_empty()).then(|| u.iter().sum::<f64>() / u.len() as f64)
    }

    fn describe(&self) -> Option<String> {
        let names: Vec<String> = self.devices().iter().filter_map(|d| d.name().ok()).collect();
        let driver = self.nvml.sys_driver_version().unwrap_or_default();
        let cuda =
            self.nvml.sys_cuda_driver_version().map(|v| format!("{}.{}", v / 1000, v % 1000 / 10)).unwrap_or_default();
        Some(format!("{}; driver {driver}; CUDA {cuda}", names.join(", ")))
    }
}

pub struct NvidiaSmi;

impl NvidiaSmi {
    pub fn detect() -> Result<Self, ProbeError> {
        query(&["--query-gpu=memory.used,memory.total", "--format=csv,noheader,nounits"])
            .map(|_| NvidiaSmi)
            .ok_or(ProbeError::NvidiaSmi)
    }
}

fn query(args: &[&str]) -> Option<String> {
    let out = Command::new("nvidia-smi").args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Rows of numbers from nvidia-smi's `csv,noheader,nounits` output.
pub fn parse_csv_numbers(text: &str) -> Vec<Vec<f64>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split(',').filter_map(|c| c.trim().parse().ok()).collect())
        .collect()
}

impl MemoryProbe for NvidiaSmi {
    fn source(&self) -> Source {
        Source::NvidiaSmi
    }

    fn device(&self) -> Option<(f64, f64)> {
        let rows =
            parse_csv_numbers(&query(&["--query-gpu=memory.used,memory.total", "--format=csv,noheader,nounits"])?);
        let rows: Vec<&Vec<f64>> = rows.iter().filter(|r| r.len() == 2).collect();
        (!rows.is_empty()).then(|| (rows.iter().map(|r| r[0]).sum(), rows.iter().map(|r| r[1]).sum()))
    }

    fn utilization(&self) -> Option<f64> {
        let rows = parse_csv_numbers(&query(&["--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"])?);
        let u: Vec<f64> = rows.iter().filter_map(|r| r.first().copied()).collect();
        (!u.is_empty()).then(|| u.iter().sum::<f64>() / u.len() as f64)
    }

    fn processes(&self, pids: &BTreeSet<u32>) -> Option<f64> {
        let rows =
            parse_csv_numbers(&query(&["--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"])?);
        let mine: Vec<f64> =
            rows.iter().filter(|r| r.len() == 2 && pids.contains(&(r[0] as u32))).map(|r| r[1]).collect();
        (!mine.is_empty()).then(|| mine.iter().sum())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_nvidia_smi_csv() {
        assert_eq!(parse_csv_numbers("1234, 143771\n 5, 143771 \n"), vec![vec![1234.0, 143771.0], vec![5.0, 143771.0]]);
        assert_eq!(parse_csv_numbers("[N/A], 10\n"), vec![vec![10.0]]);
    }

    #[test]
    fn nvml_fails_cleanly_without_a_driver() {
        // On machines without a GPU this is an error, not a crash; with one, it answers.
        match Nvml::init() {
            Ok(n) => assert!(n.device().is_some()),
            Err(e) => assert!(e.to_string().contains("NVML")),
        }
    }
}
