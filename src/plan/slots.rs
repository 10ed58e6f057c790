//! Slots: where server groups run at the same time. A pure model of what the host lends a run — GPUs (with
//! how close each pair is and the NUMA node each hangs off) or N CPU slots — and of how groups take and give
//! back a share of it. The executor leases from a [`Pool`] when it starts a group and releases when the group
//! ends; `servelab plan` replays the same pool over the plan's estimated costs ([`assign`]) to show which
//! group would run where and the wall time. Nothing here reads NVML or /sys: the host is an input.
//!
//! A lease's values (port offset, GPUs, cores) are execution-time values: they never enter a group's or a
//! point's id, so a group has one id whichever slot runs it, serially or in parallel.

use super::{Plan, ServerGroup};
use serde::Serialize;

pub use crate::record::plan::SlotGpu as Gpu;

/// What a run may use at once.
#[derive(Clone, Debug, PartialEq)]
pub enum Lend {
    /// One server at a time, on whatever the engine picks (no binding): servelab's behaviour without flags.
    Serial,
    /// `--parallel N`: N slots for engines without GPUs, the host's cores split between them.
    Parallel(usize),
    /// `--gpus`: these GPUs, each server taking as many as it needs.
    Gpus(Vec<Gpu>),
}

/// The host as the slots see it.
#[derive(Clone, Debug, PartialEq)]
pub struct Host {
    pub lend: Lend,
    /// `distance[i][j]` between the i-th and j-th GPU of `lend` (NVML's common-ancestor level: 0 the same
    /// board or NVLink, higher is farther); empty when unknown.
    pub distance: Vec<Vec<u8>>,
    /// The host's cores per NUMA node (one node when unknown).
    pub nodes: Vec<Vec<usize>>,
    /// At most this many groups at once (`--max-parallel`).
    pub max_parallel: Option<usize>,
}

impl Host {
    pub fn serial() -> Host {
        Host { lend: Lend::Serial, distance: Vec::new(), nodes: Vec::new(), max_parallel: None }
    }

    /// Whether slot values (port, GPUs, cores) are applied at all.
    pub fn binds(&self) -> bool {
        self.lend != Lend::Serial
    }
}

/// One group's share of the host while it runs.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Lease {
    /// 0.. below the pool's capacity; the server's port is the spec's plus this.
    pub slot: usize,
    pub gpus: Vec<Gpu>,
    /// Cores its server and its client threads are pinned to (empty: not pinned).
    pub cpus: Vec<usize>,
}

/// A group asks for more GPUs than the run was lent: it can never start.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("a server needs {need} GPUs and the run was lent {have}")]
pub struct NeverFits {
    pub need: u32,
    pub have: usize,
}

/// The host's free slots and GPUs.
#[derive(Clone, Debug)]
pub struct Pool {
    host: Host,
    slot_free: Vec<bool>,
    gpu_free: Vec<bool>,
    /// Cores of each slot (Parallel) or of each GPU (Gpus).
    cores: Vec<Vec<usize>>,
}

impl Pool {
    pub fn new(host: &Host) -> Pool {
        let all: Vec<usize> = host.nodes.iter().flatten().copied().collect();
        let (units, cores) = match &host.lend {
            Lend::Serial => (1, vec![Vec::new()]),
            Lend::Parallel(n) => {
                let n = (*n).max(1);
                (n, (0..n).map(|k| share(&all, k, n)).collect())
            }
            Lend::Gpus(gpus) => (gpus.len(), gpu_cores(gpus, &host.nodes)),
        };
        let slots = host.max_parallel.map_or(units, |m| m.clamp(1, units.max(1)));
        let gpus = match &host.lend {
            Lend::Gpus(g) => g.len(),
            _ => 0,
        };
        Pool { host: host.clone(), slot_free: vec![true; slots.max(1)], gpu_free: vec![true; gpus], cores }
    }

    /// Groups that may run at once.
    pub fn capacity(&self) -> usize {
        self.slot_free.len()
    }

    /// A share for a group that needs `need` GPUs (ignored without `--gpus`), or None while it does not fit.
    pub fn lease(&mut self, need: u32) -> Result<Option<Lease>, NeverFits> {
        if let Lend::Gpus(gpus) = &self.host.lend
            && need as usize > gpus.len()
        {
            return Err(NeverFits { need, have: gpus.len() });
        }
        let Some(slot) = self.slot_free.iter().position(|f| *f) else { return Ok(None) };
        let lease = match &self.host.lend {
            Lend::Serial => Lease { slot, gpus: Vec::new(), cpus: Vec::new() },
            Lend::Parallel(_) => Lease { slot, gpus: Vec::new(), cpus: self.cores[slot].clone() },
            Lend::Gpus(gpus) => {
                let Some(set) = self.closest_free(need.max(1) as usize) else { return Ok(None) };
                for &i in &set {
                    self.gpu_free[i] = false;
                }
                let mut cpus: Vec<usize> = set.iter().flat_map(|&i| self.cores[i].clone()).collect();
                cpus.sort_unstable();
                cpus.dedup();
                Lease { slot, gpus: set.iter().map(|&i| gpus[i].clone()).collect(), cpus }
            }
        };
        self.slot_free[slot] = false;
        Ok(Some(lease))
    }

    pub fn release(&mut self, lease: &Lease) {
        if let Some(f) = self.slot_free.get_mut(lease.slot) {
            *f = true;
        }
        if let Lend::Gpus(gpus) = &self.host.lend {
            for g in &lease.gpus {
                if let Some(i) = gpus.iter().position(|x| x.index == g.index) {
                    self.gpu_free[i] = true;
                }
            }
        }
    }

    /// `need` free GPUs, as close together as the distances say (the largest pairwise distance first, then
    /// the lowest indices); None while fewer are free.
    fn closest_free(&self, need: usize) -> Option<Vec<usize>> {
        let free: Vec<usize> = (0..self.gpu_free.len()).filter(|&i| self.gpu_free[i]).collect();
        if free.len() < need {
            return None;
        }
        let spread = |set: &[usize]| -> u8 {
            let d = &self.host.distance;
            let mut worst = 0;
            for (k, &a) in set.iter().enumerate() {
                for &b in &set[k + 1..] {
                    worst = worst.max(d.get(a).and_then(|r| r.get(b)).copied().unwrap_or(0));
                }
            }
            worst
        };
        // Hosts have at most a few dozen GPUs; past 16 free ones the first `need` do.
        if free.len() > 16 {
            return Some(free[..need].to_vec());
        }
        let mut best: Option<(u8, Vec<usize>)> = None;
        for set in combinations(&free, need) {
            let s = spread(&set);
            if best.as_ref().is_none_or(|(b, _)| s < *b) {
                best = Some((s, set));
            }
        }
        best.map(|(_, set)| set)
    }
}

/// The k-th of n near-equal contiguous shares of `all` (one core each, round robin, when n exceeds them).
fn share(all: &[usize], k: usize, n: usize) -> Vec<usize> {
    if all.is_empty() {
        return Vec::new();
    }
    if n > all.len() {
        return vec![all[k % all.len()]];
    }
    all[k * all.len() / n..(k + 1) * all.len() / n].to_vec()
}

/// Each GPU's cores: its NUMA node's cores split between the GPUs on that node (node 0 when unknown).
fn gpu_cores(gpus: &[Gpu], nodes: &[Vec<usize>]) -> Vec<Vec<usize>> {
    let node_of = |g: &Gpu| g.numa_node.map(|n| n as usize).filter(|n| *n < nodes.len()).unwrap_or(0);
    gpus.iter()
        .map(|g| {
            let node = node_of(g);
            let peers: Vec<u32> = gpus.iter().filter(|o| node_of(o) == node).map(|o| o.index).collect();
            let rank = peers.iter().position(|i| *i == g.index).unwrap_or(0);
            nodes.get(node).map_or(Vec::new(), |cores| share(cores, rank, peers.len()))
        })
        .collect()
}

/// Every `k`-subset of `items`, in lexicographic order.
fn combinations(items: &[usize], k: usize) -> Vec<Vec<usize>> {
    let mut out = Vec::new();
    let mut idx: Vec<usize> = (0..k).collect();
    if k > items.len() {
        return out;
    }
    loop {
        out.push(idx.iter().map(|&i| items[i]).collect());
        let Some(i) = (0..k).rev().find(|&i| idx[i] != i + items.len() - k) else { break };
        idx[i] += 1;
        for j in i + 1..k {
            idx[j] = idx[j - 1] + 1;
        }
    }
    out
}

/// NVML's level for GPUs behind one PCIe switch (or closer): neighbours that share its bandwidth.
pub const SWITCH: u8 = 10;

/// Whether any GPU of `mine` shares a PCIe switch (or a board) with a GPU of `others` (other slots' GPUs, in
/// use at the same time): their transfers share one link, so a figure of `mine` may be a contended one.
pub fn shares_switch(host: &Host, mine: &[Gpu], others: &[Gpu]) -> bool {
    let Lend::Gpus(gpus) = &host.lend else { return false };
    let at = |g: &Gpu| gpus.iter().position(|x| x.index == g.index);
    mine.iter().filter_map(at).any(|a| {
        others.iter().filter_map(at).any(|b| host.distance.get(a).and_then(|r| r.get(b)).is_some_and(|d| *d <= SWITCH))
    })
}

/// GPUs a group's server needs: `engine.gpus`, else `--tensor-parallel-size` × `--pipeline-parallel-size`
/// from its command line.
pub fn gpus_needed(spec_gpus: Option<u32>, group: &ServerGroup) -> u32 {
    if let Some(n) = spec_gpus {
        return n.max(1);
    }
    let argv = &group.server.argv;
    let flag = |names: &[&str]| -> u32 {
        crate::record::capacity::flag(argv, names).and_then(|v| v.parse().ok()).unwrap_or(1)
    };
    (flag(&["--tensor-parallel-size", "-tp"]) * flag(&["--pipeline-parallel-size", "-pp"])).max(1)
}

/// Where one group would run, and when, by the plan's estimate.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Placed {
    pub group: String,
    pub lease: Lease,
    pub start_s: f64,
    pub end_s: f64,
}

/// The plan replayed on the pool: each group in plan order takes the first share that fits when one frees
/// up (a smaller group may pass a larger one that is waiting, as the executor lets it).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Assignment {
    pub placed: Vec<Placed>,
    pub slots: usize,
    pub wall_s: f64,
    pub serial_s: f64,
}

/// `costs[i]`: the estimated seconds of `plan.groups[i]` (start, points, stop).
pub fn assign(plan: &Plan, host: &Host, spec_gpus: Option<u32>, costs: &[f64]) -> Result<Assignment, NeverFits> {
    let mut pool = Pool::new(host);
    let mut pending: Vec<usize> = (0..plan.groups.len()).collect();
    let mut running: Vec<(f64, Lease)> = Vec::new();
    let mut placed = Vec::new();
    let mut now = 0.0_f64;
    while !pending.is_empty() {
        let mut i = 0;
        while i < pending.len() {
            let g = &plan.groups[pending[i]];
            match pool.lease(gpus_needed(spec_gpus, g))? {
                Some(lease) => {
                    let end = now + costs.get(pending[i]).copied().unwrap_or(0.0);
                    placed.push(Placed { group: g.id.clone(), lease: lease.clone(), start_s: now, end_s: end });
                    running.push((end, lease));
                    pending.remove(i);
                }
                None => i += 1,
            }
        }
        // The next group to end frees its share.
        let Some(k) = (0..running.len()).min_by(|&a, &b| running[a].0.total_cmp(&running[b].0)) else { break };
        let (end, lease) = running.remove(k);
        now = now.max(end);
        pool.release(&lease);
    }
    let wall_s = placed.iter().map(|p| p.end_s).fold(0.0, f64::max);
    Ok(Assignment { placed, slots: pool.capacity(), wall_s, serial_s: costs.iter().sum() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpu(index: u32, node: u32) -> Gpu {
        Gpu { index, uuid: None, name: Some("H200".into()), numa_node: Some(node) }
    }

    fn host(lend: Lend, cores: usize) -> Host {
        Host { lend, distance: Vec::new(), nodes: vec![(0..cores).collect()], max_parallel: None }
    }

    #[test]
    fn parallel_slots_split_the_cores_and_give_them_back() {
        let mut pool = Pool::new(&host(Lend::Parallel(2), 16));
        let a = pool.lease(1).unwrap().unwrap();
        let b = pool.lease(1).unwrap().unwrap();
        assert_eq!((a.slot, b.slot), (0, 1));
        assert_eq!(a.cpus, (0..8).collect::<Vec<_>>());
        assert_eq!(b.cpus, (8..16).collect::<Vec<_>>());
        assert_eq!(pool.lease(1).unwrap(), None, "both slots are taken");
        pool.release(&a);
        assert_eq!(pool.lease(1).unwrap().unwrap().slot, 0);
    }

    #[test]
    fn more_slots_than_cores_share_cores_round_robin() {
        let mut pool = Pool::new(&host(Lend::Parallel(3), 2));
        let cpus: Vec<Vec<usize>> = (0..3).map(|_| pool.lease(1).unwrap().unwrap().cpus).collect();
        assert_eq!(cpus, [vec![0], vec![1], vec![0]]);
    }

    #[test]
    fn max_parallel_caps_the_slots() {
        let mut h = host(Lend::Gpus((0..8).map(|i| gpu(i, 0)).collect()), 64);
        h.max_parallel = Some(3);
        let mut pool = Pool::new(&h);
        assert_eq!(pool.capacity(), 3);
        for _ in 0..3 {
            assert!(pool.lease(1).unwrap().is_some());
        }
        assert_eq!(pool.lease(1).unwrap(), None);
    }

    #[test]
    fn a_tp2_group_gets_two_gpus_that_share_a_link() {
        // GPUs 0-1 and 2-3 are pairs; across pairs the distance is larger.
        let mut h = host(Lend::Gpus((0..4).map(|i| gpu(i, 0)).collect()), 8);
        h.distance = (0..4).map(|i| (0..4).map(|j| if i / 2 == j / 2 { 0 } else { 3 }).collect()).collect();
        let mut pool = Pool::new(&h);
        let one = pool.lease(1).unwrap().unwrap();
        assert_eq!(one.gpus[0].index, 0);
        let two = pool.lease(2).unwrap().unwrap();
        let got: Vec<u32> = two.gpus.iter().map(|g| g.index).collect();
        assert_eq!(got, [2, 3], "1 and 2 are free too, but 2-3 share a link");
        assert_eq!(pool.lease(2).unwrap(), None, "only GPU 1 is left");
        assert_eq!(pool.lease(9), Err(NeverFits { need: 9, have: 4 }));
    }

    #[test]
    fn gpu_slots_get_cores_of_their_own_numa_node() {
        let gpus = vec![gpu(0, 0), gpu(1, 0), gpu(2, 1), gpu(3, 1)];
        let h = Host {
            lend: Lend::Gpus(gpus),
            distance: Vec::new(),
            nodes: vec![(0..8).collect(), (8..16).collect()],
            max_parallel: None,
        };
        let mut pool = Pool::new(&h);
        let cpus: Vec<Vec<usize>> = (0..4).map(|_| pool.lease(1).unwrap().unwrap().cpus).collect();
        assert_eq!(cpus, [vec![0, 1, 2, 3], vec![4, 5, 6, 7], vec![8, 9, 10, 11], vec![12, 13, 14, 15]]);
    }

    #[test]
    fn neighbours_behind_one_switch_are_found_and_far_ones_are_not() {
        let mut h = host(Lend::Gpus((0..4).map(|i| gpu(i, 0)).collect()), 8);
        h.distance = (0..4).map(|i| (0..4).map(|j| if i / 2 == j / 2 { 10 } else { 40 }).collect()).collect();
        assert!(shares_switch(&h, &[gpu(0, 0)], &[gpu(1, 0)]));
        assert!(!shares_switch(&h, &[gpu(0, 0)], &[gpu(2, 0), gpu(3, 0)]));
        assert!(!shares_switch(&host(Lend::Parallel(2), 2), &[gpu(0, 0)], &[gpu(1, 0)]));
    }

    #[test]
    fn combinations_are_complete_and_ordered() {
        assert_eq!(combinations(&[1, 2, 3], 2), [vec![1, 2], vec![1, 3], vec![2, 3]]);
        assert_eq!(combinations(&[1, 2], 3), Vec::<Vec<usize>>::new());
    }
}
