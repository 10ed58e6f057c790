//! The pure half of `servelab merge`: whether the runs belong together, which run each server group's
//! records come from, and what is missing. No file is read here; the caller hands in what the folders hold.

use crate::record::manifest::Manifest;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

/// One run folder to merge, as read.
pub struct Part {
    pub path: PathBuf,
    pub manifest: Manifest,
    /// Committed point ids, and per point the latest time its attempts finished (`point_done.at`).
    pub points: BTreeMap<String, String>,
    /// Groups whose server this run started.
    pub servers: BTreeSet<String>,
}

impl Part {
    fn name(&self) -> String {
        let shard = self.manifest.shard.as_ref().map(|s| format!(" (shard {}/{})", s.index, s.count));
        format!("{}{}", self.path.display(), shard.unwrap_or_default())
    }
}

/// Which attempt wins where two runs measured the same group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Prefer {
    /// The run whose last point of that group finished last.
    Newest,
    /// This run, wherever it holds the group.
    Run(PathBuf),
}

impl std::str::FromStr for Prefer {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(if s == "newest" { Prefer::Newest } else { Prefer::Run(PathBuf::from(s)) })
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refusal {
    #[error("merge needs at least one run folder: `servelab merge --out DIR RUN...`")]
    Nothing,
    #[error(
        "{a} and {b} differ in {what} ({va} vs {vb}): their records are not one experiment's; merge only shards of \
         one spec run with one servelab and vLLM on one GPU model (re-run the odd shard with `servelab run SPEC \
         --shard I/N`)"
    )]
    Mismatch { what: &'static str, a: String, b: String, va: String, vb: String },
    #[error(
        "server group {group} was measured in {runs} (points {points}); say which attempt wins with --prefer newest \
         or --prefer RUN"
    )]
    Twice { group: String, runs: String, points: String },
    #[error("--prefer {0}: not one of the runs being merged; give one of the RUN paths as written, or `newest`")]
    UnknownPrefer(String),
}

/// The GPU models a manifest names (its `gpu` is "names; driver …; CUDA …"), without counts or versions: shards
/// on nodes with other drivers or GPU counts are still one experiment; another model is not.
pub fn gpu_models(gpu: Option<&str>) -> BTreeSet<String> {
    let names = gpu.and_then(|g| g.split(';').next()).unwrap_or_default();
    names.split(',').map(str::trim).filter(|n| !n.is_empty()).map(str::to_owned).collect()
}

/// The runs are shards of one experiment: one spec (text and `--set`s), one servelab, one vLLM where known,
/// one GPU model where known, one shard count, one meaning of the figures (`metrics_version`).
pub fn check_compatible(parts: &[Part]) -> Result<(), Refusal> {
    if parts.is_empty() {
        return Err(Refusal::Nothing);
    }
    type Key = (&'static str, fn(&Manifest) -> Option<String>);
    let keys: [Key; 7] = [
        ("spec", |m| Some(format!("{} {}", m.spec_hash, m.overrides.join(" ")).trim().to_owned())),
        ("experiment name", |m| Some(m.plan.name.clone())),
        ("servelab version", |m| Some(m.servelab_version.clone())),
        ("vLLM version", |m| m.vllm_version.clone()),
        ("GPU model", |m| {
            let models = gpu_models(m.gpu.as_deref());
            (!models.is_empty()).then(|| models.into_iter().collect::<Vec<_>>().join(", "))
        }),
        ("shard count", |m| m.shard.as_ref().map(|s| s.count.to_string())),
        // A resumed shard keeps the version it began with: its figures mean what they meant then.
        ("metrics version", |m| Some(m.metrics_version.to_string())),
    ];
    for (what, key) in keys {
        let mut seen: Option<(&Part, String)> = None;
        for p in parts {
            let Some(v) = key(&p.manifest) else { continue };
            match &seen {
                Some((a, va)) if *va != v => {
                    let (a, b, va) = (a.name(), p.name(), va.clone());
                    return Err(Refusal::Mismatch { what, a, b, va, vb: v });
                }
                Some(_) => {}
                None => seen = Some((p, v)),
            }
        }
    }
    Ok(())
}

/// For each group of the full plan (plan order) that some run holds: the index of the run its records come from.
pub fn owners(
    groups: &[(String, Vec<String>)],
    parts: &[Part],
    prefer: Option<&Prefer>,
) -> Result<BTreeMap<String, usize>, Refusal> {
    if let Some(Prefer::Run(r)) = prefer
        && !parts.iter().any(|p| &p.path == r)
    {
        return Err(Refusal::UnknownPrefer(r.display().to_string()));
    }
    let mut out = BTreeMap::new();
    for (group, points) in groups {
        let holders: Vec<usize> = (0..parts.len())
            .filter(|&i| parts[i].servers.contains(group) || points.iter().any(|p| parts[i].points.contains_key(p)))
            .collect();
        let winner = match (holders.as_slice(), prefer) {
            ([], _) => continue,
            ([one], _) => *one,
            (many, Some(Prefer::Run(r))) if many.iter().any(|&i| &parts[i].path == r) => {
                many.iter().copied().find(|&i| &parts[i].path == r).unwrap_or(many[0])
            }
            (many, Some(Prefer::Newest)) => newest(many, points, parts),
            (many, _) => return Err(twice(group, points, many, parts)),
        };
        out.insert(group.clone(), winner);
    }
    Ok(out)
}

/// The run among `many` whose last committed point of the group finished last (ties: the later run in order).
fn newest(many: &[usize], points: &[String], parts: &[Part]) -> usize {
    let last = |i: usize| {
        let times = points.iter().filter_map(|p| parts[i].points.get(p));
        times.filter_map(|t| chrono::DateTime::parse_from_rfc3339(t).ok()).max()
    };
    let mut best = many[0];
    for &i in &many[1..] {
        if last(i) >= last(best) {
            best = i;
        }
    }
    best
}

fn twice(group: &str, points: &[String], many: &[usize], parts: &[Part]) -> Refusal {
    let runs: Vec<String> = many.iter().map(|&i| parts[i].name()).collect();
    let both: Vec<&str> = points
        .iter()
        .filter(|p| many.iter().filter(|&&i| parts[i].points.contains_key(*p)).count() > 1)
        .map(String::as_str)
        .collect();
    let points =
        if both.is_empty() { "none committed twice; its server started in each".to_owned() } else { both.join(", ") };
    Refusal::Twice { group: group.to_owned(), runs: runs.join(" and "), points }
}

/// Shard indices of `0..count` no run holds (by the shards' own count), and the plan's points no owner
/// committed.
pub fn missing(
    groups: &[(String, Vec<String>)],
    parts: &[Part],
    owners: &BTreeMap<String, usize>,
) -> (Vec<usize>, Vec<String>) {
    let count = parts.iter().find_map(|p| p.manifest.shard.as_ref().map(|s| s.count));
    let held: BTreeSet<usize> = parts.iter().filter_map(|p| p.manifest.shard.as_ref().map(|s| s.index)).collect();
    let whole = parts.iter().any(|p| p.manifest.shard.is_none());
    let shards = match (count, whole) {
        (Some(n), false) => (0..n).filter(|i| !held.contains(i)).collect(),
        _ => Vec::new(),
    };
    let mut points = Vec::new();
    for (group, ids) in groups {
        let owner = owners.get(group).map(|&i| &parts[i]);
        points.extend(ids.iter().filter(|p| owner.is_none_or(|o| !o.points.contains_key(*p))).cloned());
    }
    (shards, points)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(gpu: Option<&str>, shard: Option<(usize, usize)>) -> Manifest {
        let text = include_str!("../../tests/fixtures/runs/batching-cpu/manifest.json");
        let mut m: Manifest = serde_json::from_str(text).unwrap();
        m.gpu = gpu.map(str::to_owned);
        m.shard = shard.map(|(index, count)| crate::record::manifest::ShardOf { index, count, groups: Vec::new() });
        m
    }

    fn part(name: &str, shard: Option<(usize, usize)>, points: &[(&str, &str)]) -> Part {
        Part {
            path: PathBuf::from(name),
            manifest: manifest(Some("NVIDIA H200; driver 1; CUDA 12.8"), shard),
            points: points.iter().map(|(p, t)| (p.to_string(), t.to_string())).collect(),
            servers: BTreeSet::new(),
        }
    }

    #[test]
    fn gpu_models_ignore_driver_versions_and_counts() {
        let m = gpu_models(Some("NVIDIA H200, NVIDIA H200; driver 570; CUDA 12.8"));
        assert_eq!(m, ["NVIDIA H200".to_owned()].into());
        assert!(gpu_models(None).is_empty());
    }

    #[test]
    fn another_gpu_model_or_shard_count_is_refused() {
        let a = part("a", Some((0, 2)), &[]);
        let mut b = part("b", Some((1, 2)), &[]);
        b.manifest.gpu = Some("NVIDIA H100 80GB HBM3; driver 570; CUDA 12.8".to_owned());
        let e = check_compatible(&[a, b]).unwrap_err();
        assert!(matches!(e, Refusal::Mismatch { what: "GPU model", .. }), "{e}");
        let (a, b) = (part("a", Some((0, 2)), &[]), part("b", Some((1, 3)), &[]));
        assert!(matches!(check_compatible(&[a, b]), Err(Refusal::Mismatch { what: "shard count", .. })));
        assert_eq!(check_compatible(&[]), Err(Refusal::Nothing));
        // A shard resumed by a build whose figures mean something else kept its own version.
        let (a, mut b) = (part("a", Some((0, 2)), &[]), part("b", Some((1, 2)), &[]));
        b.manifest.metrics_version = a.manifest.metrics_version + 1;
        assert!(matches!(check_compatible(&[a, b]), Err(Refusal::Mismatch { what: "metrics version", .. })));
    }

    #[test]
    fn a_group_in_two_runs_needs_prefer_and_newest_takes_the_later_attempt() {
        let groups = vec![("g".to_owned(), vec!["p1".to_owned(), "p2".to_owned()])];
        let a = part("a", None, &[("p1", "2026-01-01T10:00:00+00:00")]);
        let b = part("b", Some((0, 2)), &[("p1", "2026-01-01T09:00:00+01:00"), ("p2", "2026-01-01T09:30:00+00:00")]);
        let parts = [a, b];
        let e = owners(&groups, &parts, None).unwrap_err();
        assert!(e.to_string().contains("points p1;") || e.to_string().contains("points p1)"), "{e}");
        // b's last point finished at 09:30 UTC, a's at 10:00 UTC: a is the newest attempt.
        assert_eq!(owners(&groups, &parts, Some(&Prefer::Newest)).unwrap()["g"], 0);
        assert_eq!(owners(&groups, &parts, Some(&Prefer::Run(PathBuf::from("b")))).unwrap()["g"], 1);
        let unknown = owners(&groups, &parts, Some(&Prefer::Run(PathBuf::from("c"))));
        assert!(matches!(unknown, Err(Refusal::UnknownPrefer(_))));
    }

    #[test]
    fn missing_shards_and_points_are_named() {
        let groups =
            vec![("g".to_owned(), vec!["p1".to_owned(), "p2".to_owned()]), ("h".to_owned(), vec!["p3".to_owned()])];
        let parts = [part("a", Some((1, 3)), &[("p1", "t")])];
        let own = owners(&groups, &parts, None).unwrap();
        assert_eq!(missing(&groups, &parts, &own), (vec![0, 2], vec!["p2".to_owned(), "p3".to_owned()]));
    }
}
