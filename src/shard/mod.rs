//! Shards of a run: `servelab run SPEC --shard I/N` measures a deterministic share of the plan's server groups
//! into a run folder of its own, and `servelab merge` (`merge`) unions the shards' records into one folder.
//! The share is a pure function of the spec, so every array task of a cluster job computes the same split
//! without talking to the others.

pub mod merge;
pub mod owners;

use crate::plan::Plan;
use crate::record::manifest::ShardOf;

/// `--shard I/N` as given on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ShardError {
    #[error("--shard {0}: write the shard as I/N with 0 ≤ I < N, e.g. --shard 0/4 for the first of four")]
    Syntax(String),
    #[error(
        "--shard cannot split a spec with `{0}:`: its server starts are sequential decisions, each chosen from what \
         the ones before measured; run it whole (`servelab {1} SPEC`, with --gpus or --parallel for slots), or \
         remove `{0}:` and shard the grid"
    )]
    Sequential(&'static str, &'static str),
}

impl std::str::FromStr for Shard {
    type Err = ShardError;
    fn from_str(s: &str) -> Result<Self, ShardError> {
        let bad = || ShardError::Syntax(s.to_owned());
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let index: usize = i.trim().parse().map_err(|_| bad())?;
        let count: usize = n.trim().parse().map_err(|_| bad())?;
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// Which shard each group goes to (same order as `groups`): the groups sorted by estimated cost, largest first,
/// ties by id; each in turn to the shard with the least estimated cost so far (ties: the lowest index).
/// Deterministic for a given spec; adding or changing a group may move others to another shard.
pub fn assign(groups: &[(&str, f64)], count: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..groups.len()).collect();
    order.sort_by(|&a, &b| groups[b].1.total_cmp(&groups[a].1).then_with(|| groups[a].0.cmp(groups[b].0)));
    let mut load = vec![0.0f64; count.max(1)];
    let mut out = vec![0; groups.len()];
    for i in order {
        let mut best = 0;
        for (s, l) in load.iter().enumerate() {
            if *l < load[best] {
                best = s;
            }
        }
        load[best] += groups[i].1;
        out[i] = best;
    }
    out
}

/// Refuses specs whose groups cannot be measured apart: a tune or a rate search decides each start from the
/// ones before.
pub fn check_shardable(plan: &Plan) -> Result<(), ShardError> {
    if plan.tune.is_some() {
        return Err(ShardError::Sequential("tune", "tune"));
    }
    if plan.search.is_some() {
        return Err(ShardError::Sequential("search", "run"));
    }
    Ok(())
}

/// The shard of each of the plan's groups, by the plan's own estimate.
pub fn split(spec: &crate::spec::Spec, plan: &Plan, count: usize) -> Vec<usize> {
    let costs = crate::plan::estimate::group_costs(spec, plan);
    let groups: Vec<(&str, f64)> = plan.groups.iter().map(|g| g.id.as_str()).zip(costs).collect();
    assign(&groups, count)
}

/// The plan of one shard: only its groups (plan order kept), its estimate recomputed for them; and the record
/// of which shard it is, for the manifest.
pub fn shard_plan(spec: &crate::spec::Spec, plan: &Plan, shard: Shard) -> Result<(Plan, ShardOf), ShardError> {
    check_shardable(plan)?;
    let of = split(spec, plan, shard.count);
    let mut out = plan.clone();
    out.groups = plan.groups.iter().zip(&of).filter(|(_, s)| **s == shard.index).map(|(g, _)| g.clone()).collect();
    out.estimate = crate::plan::estimate::wall_time(spec, &out.groups, plan.search.as_ref());
    let groups = out.groups.iter().map(|g| g.id.clone()).collect();
    Ok((out, ShardOf { index: shard.index, count: shard.count, groups }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_syntax_is_i_of_n() {
        assert_eq!("1/4".parse::<Shard>(), Ok(Shard { index: 1, count: 4 }));
        for bad in ["4/4", "1", "a/2", "0/0", "-1/2"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
    }

    #[test]
    fn greedy_takes_the_largest_first_and_breaks_ties_by_id() {
        let g = [("a", 10.0), ("b", 30.0), ("c", 20.0), ("d", 20.0), ("e", 5.0)];
        // Taken b, c, d (c before d by id), a, e: b → 0; c → 1; d → 1 (20 < 30); a → 0 (30 < 40); e → 0 (40 = 40:
        // the lowest index).
        assert_eq!(assign(&g, 2), vec![0, 0, 1, 1, 0]);
        // The input order does not matter, only (cost, id).
        let mut r = g;
        r.reverse();
        let mut again = assign(&r, 2);
        again.reverse();
        assert_eq!(again, assign(&g, 2));
    }

    #[test]
    fn every_group_goes_to_exactly_one_shard_and_empty_shards_are_allowed() {
        let g = [("a", 1.0), ("b", 1.0)];
        assert_eq!(assign(&g, 3), vec![0, 1]);
        assert_eq!(assign(&g, 1), vec![0, 0]);
    }
}
