//! Cluster job files: `servelab export slurm|k8s SPEC --shards N` writes what a cluster scheduler needs to run
//! a spec as N shards (`servelab run --shard I/N`, one per array task or Job index) and to merge them
//! (`servelab merge`). The scheduler is the cluster's own: servelab writes files and runs nothing. Every file
//! is a pure function of the spec and the flags (`slurm`, `k8s`); the CLI writes them.

pub mod k8s;
pub mod slurm;

use crate::plan::Plan;
use crate::spec::Spec;
use std::path::{Path, PathBuf};

#[derive(clap::Subcommand, Debug)]
pub enum Target {
    /// An sbatch job array (one shard per task), a merge job that runs `afterany` and checks for missing
    /// shards itself, and submit.sh that submits both.
    Slurm(SlurmArgs),
    /// An Indexed Job (JOB_COMPLETION_INDEX is the shard), a merge Job, the spec as a ConfigMap, and
    /// submit.sh that applies them in order.
    K8s(K8sArgs),
}

#[derive(clap::Args, Debug)]
pub struct Common {
    /// The experiment spec (YAML).
    pub spec: PathBuf,
    /// Override a spec value, passed on to every shard. Repeatable.
    #[arg(long = "set", value_name = "PATH=VALUE")]
    pub set: Vec<String>,
    /// How many shards (array tasks, Job indices).
    #[arg(long, value_name = "N")]
    pub shards: usize,
    /// Where the files are written.
    #[arg(long, value_name = "DIR", default_value = "cluster")]
    pub dir: PathBuf,
    /// Print the resources each job would ask for and write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// The servelab command on the nodes.
    #[arg(long, default_value = "servelab")]
    pub servelab: String,
    /// CPUs per shard (default: 8 per GPU, at least 4).
    #[arg(long, value_name = "N")]
    pub cpus_per_task: Option<u32>,
}

#[derive(clap::Args, Debug)]
pub struct SlurmArgs {
    #[command(flatten)]
    pub common: Common,
    /// The shared folder every node sees, where the shards' run folders and the merged one go (default: ./out,
    /// made absolute).
    #[arg(long, value_name = "PATH")]
    pub shared: Option<PathBuf>,
    /// `#SBATCH --partition`.
    #[arg(long)]
    pub partition: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct K8sArgs {
    #[command(flatten)]
    pub common: Common,
    /// The container image with servelab and the engine (vLLM).
    #[arg(long, default_value = "servelab:latest")]
    pub image: String,
    /// A ReadWriteMany PersistentVolumeClaim every pod mounts for the run folders.
    #[arg(long, default_value = "servelab-shared")]
    pub pvc: String,
    /// Where the claim is mounted in the pods.
    #[arg(long, default_value = "/shared")]
    pub mount: String,
    #[arg(long)]
    pub namespace: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{0}")]
    Spec(#[from] crate::spec::SpecError),
    #[error("{0}")]
    Shard(#[from] crate::shard::ShardError),
    /// A manifest value that YAML cannot write: a bug in servelab.
    #[error("cannot write a manifest as YAML (a bug in servelab, please report it): {0}")]
    Yaml(String),
    #[error("--shards must be at least 1")]
    NoShards,
    #[error("{what} {value:?} holds a character the job files cannot carry safely; {fix}")]
    Unsafe { what: &'static str, value: String, fix: &'static str },
    #[error("cannot make {path} absolute: {source}; run from a folder that exists, or give an absolute path")]
    Cwd {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// One shard's share, by the plan's estimate.
#[derive(Clone, Debug, PartialEq)]
pub struct ShardShare {
    pub index: usize,
    pub groups: usize,
    pub points: usize,
    pub estimate_s: f64,
}

/// What each job asks the scheduler for.
#[derive(Clone, Debug, PartialEq)]
pub struct Resources {
    pub name: String,
    pub shards: Vec<ShardShare>,
    /// GPUs per shard: the most any of the spec's servers needs (one server at a time per shard).
    pub gpus: u32,
    pub cpus: u32,
    /// A time limit per shard: twice the largest share's estimate plus 10 minutes, in whole minutes.
    pub minutes: u64,
}

/// The resources of `count` shards of the plan.
pub fn resources(spec: &Spec, plan: &Plan, count: usize, cpus: Option<u32>) -> Result<Resources, ExportError> {
    if count == 0 {
        return Err(ExportError::NoShards);
    }
    crate::shard::check_shardable(plan)?;
    let of = crate::shard::split(spec, plan, count);
    let costs = crate::plan::estimate::group_costs(spec, plan);
    let mut shards: Vec<ShardShare> =
        (0..count).map(|index| ShardShare { index, groups: 0, points: 0, estimate_s: 0.0 }).collect();
    for ((g, s), c) in plan.groups.iter().zip(&of).zip(costs) {
        shards[*s].groups += 1;
        shards[*s].points += g.points.len();
        shards[*s].estimate_s += c;
    }
    let uses_gpus = spec.engine.kind == crate::spec::EngineKind::Vllm || spec.engine.gpus.is_some();
    let gpus = match uses_gpus {
        true => plan.groups.iter().map(|g| crate::plan::slots::gpus_needed(spec.engine.gpus, g)).max().unwrap_or(1),
        false => 0,
    };
    let cpus = cpus.unwrap_or((8 * gpus).max(4));
    let longest = shards.iter().map(|s| s.estimate_s).fold(0.0, f64::max);
    let minutes = ((2.0 * longest) / 60.0).ceil() as u64 + 10;
    Ok(Resources { name: plan.name.clone(), shards, gpus, cpus, minutes })
}

/// The resources as `--dry-run` prints them.
pub fn describe(r: &Resources, per_task: &str) -> String {
    let mut out = String::new();
    putln!(
        out,
        "{} shards of {}; each {per_task}: {} GPU(s), {} CPUs, at most {} min",
        r.shards.len(),
        r.name,
        r.gpus,
        r.cpus,
        r.minutes
    );
    for s in &r.shards {
        putln!(
            out,
            "  shard {}/{}: {} server groups, {} points, estimated {}",
            s.index,
            r.shards.len(),
            s.groups,
            s.points,
            crate::plan::estimate::human(s.estimate_s)
        );
    }
    putln!(out, "  merge: 1 CPU, no GPU, after every shard (failed ones included)");
    out
}

/// Files to write (path, bytes) and what to print.
pub struct Export {
    pub files: Vec<(PathBuf, Vec<u8>)>,
    pub summary: String,
}

/// The spec planned as every shard will plan it, and its resources.
fn planned(c: &Common) -> Result<(crate::spec::LoadedSpec, Plan, Resources), ExportError> {
    let loaded = crate::spec::load_file(&c.spec, &c.set)?;
    let plan = crate::plan::build_located(&loaded)?;
    let r = resources(&loaded.spec, &plan, c.shards, c.cpus_per_task)?;
    Ok((loaded, plan, r))
}

pub fn export(target: &Target) -> Result<Export, ExportError> {
    let (common, per_task) = match target {
        Target::Slurm(a) => (&a.common, "array task"),
        Target::K8s(a) => (&a.common, "pod"),
    };
    let (loaded, _plan, r) = planned(common)?;
    if common.dry_run {
        return Ok(Export { files: Vec::new(), summary: describe(&r, per_task) });
    }
    let files = match target {
        Target::Slurm(a) => slurm::files(a, &r)?,
        Target::K8s(a) => k8s::files(a, &r, &loaded.source.text)?,
    };
    let names: Vec<String> = files.iter().map(|(p, _)| p.display().to_string()).collect();
    let summary = format!("{}wrote {}\n", describe(&r, per_task), names.join(", "));
    Ok(Export { files: files.into_iter().map(|(p, b)| (common.dir.join(p), b)).collect(), summary })
}

/// `s` in single quotes for a POSIX shell.
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// An absolute path (the jobs run elsewhere, from another folder).
pub fn absolute(p: &Path) -> Result<PathBuf, ExportError> {
    std::path::absolute(p).map_err(|source| ExportError::Cwd { path: p.display().to_string(), source })
}

/// The servelab arguments after `run` common to every shard: the spec and its overrides.
pub fn spec_args(spec: &str, set: &[String]) -> String {
    let mut out = sh_quote(spec);
    for s in set {
        put!(out, " --set {}", sh_quote(s));
    }
    out
}

#[cfg(test)]
mod tests;
