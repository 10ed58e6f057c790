//! What the host can lend a run with slots: its GPUs as NVML names them (index, UUID, model, NUMA node),
//! how close each pair is, and its cores per NUMA node. Read once, before any slot starts; the slot model
//! itself (`plan::slots`) is pure and takes these as input.

use crate::record::plan::SlotGpu;

/// The host's cores per NUMA node from /sys (one node holding the cores this process may run on, when the
/// host has no NUMA information).
pub fn numa_nodes() -> Vec<Vec<usize>> {
    let allowed = allowed_cores();
    let mut nodes = Vec::new();
    for n in 0.. {
        let Ok(text) = std::fs::read_to_string(format!("/sys/devices/system/node/node{n}/cpulist")) else { break };
        let cores: Vec<usize> = parse_list(text.trim()).into_iter().filter(|c| allowed.contains(c)).collect();
        nodes.push(cores);
    }
    if nodes.iter().all(Vec::is_empty) {
        return vec![allowed];
    }
    nodes
}

/// The cores this process may run on (`taskset` narrows them).
fn allowed_cores() -> Vec<usize> {
    let n = std::thread::available_parallelism().map_or(1, usize::from);
    match nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)) {
        Ok(set) => (0..nix::sched::CpuSet::count()).filter(|&c| set.is_set(c).unwrap_or(false)).collect(),
        Err(_) => (0..n).collect(),
    }
}

/// "0-3,8,10-11" → [0, 1, 2, 3, 8, 10, 11]; malformed parts are left out.
pub fn parse_list(text: &str) -> Vec<usize> {
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<usize>(), b.parse::<usize>()) {
                    out.extend(a..=b.min(a + 4096));
                }
            }
            None => out.extend(part.parse::<usize>().ok()),
        }
    }
    out
}

/// The GPUs NVML sees, with the pairwise distance (NVML's topology level of their common ancestor: 0 on
/// one board, 10 one PCIe switch, 20 several, 30 one host bridge, 40 one NUMA node, 50 across sockets),
/// or why NVML cannot tell.
pub fn gpus() -> Result<(Vec<SlotGpu>, Vec<Vec<u8>>), super::ProbeError> {
    let n = super::gpu::Nvml::init()?;
    let nvml = n.handle();
    let count = nvml.device_count().map_err(super::ProbeError::NvmlQuery)?;
    let devices: Vec<_> = (0..count).filter_map(|i| nvml.device_by_index(i).ok().map(|d| (i, d))).collect();
    let gpus = devices
        .iter()
        .map(|(i, d)| SlotGpu {
            index: *i,
            uuid: d.uuid().ok(),
            name: d.name().ok(),
            numa_node: d.pci_info().ok().and_then(|p| numa_of(&p.bus_id)),
        })
        .collect();
    let distance = devices
        .iter()
        .map(|(_, a)| devices.iter().map(|(j, _)| nvml.device_by_index(*j).map_or(50, |b| level(a, b))).collect())
        .collect();
    Ok((gpus, distance))
}

fn level(a: &nvml_wrapper::Device<'_>, b: nvml_wrapper::Device<'_>) -> u8 {
    use nvml_wrapper::enum_wrappers::device::TopologyLevel as L;
    match a.topology_common_ancestor(b) {
        Ok(L::Internal) => 0,
        Ok(L::Single) => 10,
        Ok(L::Multiple) => 20,
        Ok(L::HostBridge) => 30,
        Ok(L::Node) => 40,
        Ok(L::System) | Err(_) => 50,
    }
}

/// The NUMA node of a PCI device, from /sys (NVML's bus id has an 8-digit domain, /sys a 4-digit one).
fn numa_of(bus_id: &str) -> Option<u32> {
    let id = bus_id.to_lowercase();
    let short = id.strip_prefix("0000").unwrap_or(&id);
    let text = std::fs::read_to_string(format!("/sys/bus/pci/devices/{short}/numa_node")).ok()?;
    text.trim().parse::<i64>().ok().and_then(|n| u32::try_from(n).ok())
}

#[cfg(test)]
mod tests {
    #[test]
    fn cpu_lists_parse_like_the_kernel_writes_them() {
        assert_eq!(super::parse_list("0-3,8,10-11\n".trim()), [0, 1, 2, 3, 8, 10, 11]);
        assert_eq!(super::parse_list("x,2"), [2]);
        assert!(!super::numa_nodes().iter().flatten().collect::<Vec<_>>().is_empty());
    }
}
