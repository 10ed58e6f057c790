//! The flags several commands share: the spec and its overrides, the slots lent to server groups, and the run
//! folder.

use crate::exit::Error;
use crate::plan::{self, Plan};
use crate::run::RunOptions;
use crate::spec::{self, LoadedSpec, SpecError};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct SpecArgs {
    /// The experiment spec (YAML).
    pub spec: PathBuf,
    /// Override a spec value, e.g. `--set engine.model=/models/qwen` (the value is YAML). Repeatable.
    #[arg(long = "set", value_name = "PATH=VALUE")]
    pub set: Vec<String>,
}

/// Server groups side by side (`run` and `plan`); without these a run is serial and binds nothing.
#[derive(clap::Args, Debug, Default)]
pub struct SlotArgs {
    /// Run server groups at once on these GPUs (`0,1,2,3` or `all`), each server on as many as its tensor ×
    /// pipeline parallel size (or `engine.gpus`), with a port and cores of its own.
    #[arg(long, value_name = "LIST|all", conflicts_with = "parallel")]
    pub gpus: Option<String>,
    /// Run N server groups at once without GPUs (vLLM on CPU, `kind: command`), the host's cores split
    /// between them.
    #[arg(long, value_name = "N")]
    pub parallel: Option<usize>,
    /// At most this many server groups at once.
    #[arg(long, value_name = "N")]
    pub max_parallel: Option<usize>,
}

impl SlotArgs {
    /// The host the flags lend: read from NVML and /sys here, so the plan and the executor stay pure of it.
    pub(super) fn host(&self, spec: &spec::Spec) -> Result<plan::slots::Host, Error> {
        use plan::slots::{Host, Lend};
        let nodes = crate::probe::topology::numa_nodes();
        let (lend, distance) = match (&self.gpus, self.parallel) {
            (None, None) => return Ok(Host::serial()),
            (None, Some(0)) => return Err(Error::Usage("--parallel must be at least 1".to_owned())),
            (None, Some(n)) => (Lend::Parallel(n), Vec::new()),
            (Some(list), _) => {
                let (gpus, distance) = lent_gpus(list)?;
                let mut models: Vec<&str> = gpus.iter().filter_map(|g| g.name.as_deref()).collect();
                models.dedup();
                if models.len() > 1 && !spec.engine.allow_mixed_gpus {
                    return Err(Error::Usage(format!(
                        "--gpus {list} mixes GPU models ({}): their figures are not comparable; list GPUs of one \
                         model, or set `engine.allow_mixed_gpus: true`",
                        models.join(", ")
                    )));
                }
                (Lend::Gpus(gpus), distance)
            }
        };
        if self.max_parallel == Some(0) {
            return Err(Error::Usage("--max-parallel must be at least 1".to_owned()));
        }
        Ok(Host { lend, distance, nodes, max_parallel: self.max_parallel })
    }
}

/// `--gpus all` or `--gpus 0,2`: the GPUs with what NVML says of them; a list without NVML is taken as it
/// is (indices only, topology unknown), `all` needs NVML.
fn lent_gpus(list: &str) -> Result<(Vec<plan::slots::Gpu>, Vec<Vec<u8>>), Error> {
    let known = crate::probe::topology::gpus();
    if list == "all" {
        return known
            .map_err(|e| Error::Usage(format!("--gpus all: {e}; list the GPUs by index instead (--gpus 0,1)")));
    }
    let mut wanted = Vec::new();
    for part in list.split(',') {
        let i: u32 = part.trim().parse().map_err(|_| {
            Error::Usage(format!("--gpus {list}: `{part}` is not a GPU index; write `--gpus 0,1,2,3` or `--gpus all`"))
        })?;
        if wanted.contains(&i) {
            return Err(Error::Usage(format!("--gpus {list}: GPU {i} is listed twice")));
        }
        wanted.push(i);
    }
    let Ok((gpus, distance)) = known else {
        let gpus = wanted.iter().map(|&index| plan::slots::Gpu { index, uuid: None, name: None, numa_node: None });
        return Ok((gpus.collect(), Vec::new()));
    };
    let pos: Vec<usize> = wanted
        .iter()
        .map(|i| {
            gpus.iter()
                .position(|g| g.index == *i)
                .ok_or_else(|| Error::Usage(format!("--gpus {list}: NVML sees no GPU {i} (it sees {})", gpus.len())))
        })
        .collect::<Result<_, _>>()?;
    let sub = pos.iter().map(|&a| pos.iter().map(|&b| distance[a][b]).collect()).collect();
    Ok((pos.iter().map(|&a| gpus[a].clone()).collect(), sub))
}

/// Where a run's folder goes, or which folder it continues (`run` and `tune`).
#[derive(clap::Args, Debug)]
pub struct FolderArgs {
    /// Folder that receives runs.
    #[arg(long, default_value = "out")]
    pub out: PathBuf,
    /// Name of the run folder (default: the start time, YYYYMMDD-HHMMSS).
    #[arg(long)]
    pub run_id: Option<String>,
    /// Continue an earlier run folder: points already measured (by content hash) are skipped, so after an
    /// edit of the spec only new or changed points run (a tune goes on from what it measured).
    #[arg(long, value_name = "RUN_DIR")]
    pub resume: Option<PathBuf>,
    /// Resume even though servelab, vLLM, the GPU or the model changed, or into another experiment's folder.
    #[arg(long)]
    pub force: bool,
}

impl FolderArgs {
    pub(super) fn options(self, fail_fast: bool, max_starts: Option<usize>, host: plan::slots::Host) -> RunOptions {
        let FolderArgs { out, run_id, resume, force } = self;
        RunOptions { out_root: out, run_id, resume, force, fail_fast, max_starts, host, shard: None }
    }
}

/// Loads a spec and plans it, pointing planner errors at their place in the spec.
pub fn load_and_plan(args: &SpecArgs) -> Result<(LoadedSpec, Plan), SpecError> {
    let loaded = spec::load_file(&args.spec, &args.set)?;
    let plan = plan::build_located(&loaded)?;
    Ok((loaded, plan))
}
