//! The command line: parse arguments, dispatch, map outcomes to exit codes. Logic lives in the modules.
//!
//! `args.rs` holds the flags several commands share, `commands.rs` one function per spec and run-folder
//! command, `bench.rs` `servelab bench` (`bench_result.rs` its `--save-result`), `shards.rs` `merge` and `export`, `experiment.rs` running a plan
//! (runtime, signals, exit code).

use crate::exit::{self, Error};
use crate::spec;
use clap::{Parser, Subcommand};
use std::io::Write as _;
use std::path::PathBuf;

/// `print!` that gives up quietly when stdout is closed (`servelab plan spec.yaml | head`: a closed pipe is not
/// an error of servelab's, and `print!` would panic on it) and fails the command on any other write error
/// (`servelab schema > /dev/full`), with exit 7.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::emit(format_args!($($arg)*))?
    };
}

macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::cli::emit(format_args!("{}\n", format_args!($($arg)*)))?
    };
}

pub(crate) fn emit(args: std::fmt::Arguments<'_>) -> Result<(), Error> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_fmt(args).and_then(|()| stdout.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(Error::Output(format!("cannot write the output to stdout: {e}")))
        }
        _ => Ok(()),
    }
}

mod args;
mod bench;
mod bench_result;
mod commands;
mod experiment;
mod shards;

pub use args::{FolderArgs, SlotArgs, SpecArgs, load_and_plan};
pub use bench::{BenchArgs, bench_spec};

#[derive(Parser, Debug)]
#[command(
    name = "servelab",
    version,
    about = "Declarative experiments for vLLM servers: what each --max-model-len commits, and how much concurrency a GPU serves before latency blows up."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Check a spec: parse, render every point, report the first problem with file:line:column.
    Validate(SpecArgs),
    /// Print the run matrix: server groups, points, server starts and an estimated wall time.
    Plan {
        #[command(flatten)]
        args: SpecArgs,
        /// Print the plan as JSON.
        #[arg(long)]
        json: bool,
        /// Predict each server's KV pool for a GPU of this much memory as the CUDA runtime reports it (e.g.
        /// `139.8GiB` for an H200) instead of asking NVML.
        #[arg(long, value_name = "SIZE")]
        gpu_memory: Option<String>,
        #[command(flatten)]
        slots: SlotArgs,
    },
    /// Run the experiment against real servers; outputs go to out/<name>/<run-id>/.
    Run {
        #[command(flatten)]
        args: SpecArgs,
        #[command(flatten)]
        folder: FolderArgs,
        #[command(flatten)]
        slots: SlotArgs,
        /// Stop at the first failed point (the default goes on and reports).
        #[arg(long)]
        fail_fast: bool,
        /// Run only shard I of N: a share of the server groups, greedy by estimated cost (docs/slurm.md), into a
        /// run folder of its own (default run id `shard-I-of-N`); `servelab merge` joins the shards.
        #[arg(long, value_name = "I/N")]
        shard: Option<crate::shard::Shard>,
    },
    /// Join shards of one run (`run --shard I/N`) into one run folder and derive every report from it; says
    /// which shards or points are missing, and exits 3 when any are (the folder is still written).
    Merge {
        /// The merged run folder (replaced when it is an earlier merge).
        #[arg(long)]
        out: PathBuf,
        /// The shards' run folders.
        #[arg(required = true)]
        runs: Vec<PathBuf>,
        /// Where two runs measured the same server group: `newest` (the attempt that finished last) or the
        /// path of the run that wins.
        #[arg(long, value_name = "newest|RUN")]
        prefer: Option<crate::shard::owners::Prefer>,
    },
    /// Write cluster job files that run a spec as N shards and merge them: `slurm` (an sbatch job array and an
    /// `afterany` merge job) or `k8s` (an Indexed Job and a merge Job).
    Export {
        #[command(subcommand)]
        target: crate::cluster::Target,
    },
    /// Find the engine configuration that serves a spec's workload best under its objective (`tune:`), in few
    /// server starts; then measure the winner and vLLM's defaults again. A run folder like `run`'s.
    Tune {
        #[command(flatten)]
        args: SpecArgs,
        #[command(flatten)]
        folder: FolderArgs,
        /// Start at most this many servers now, then stop (exit 0); `--resume` goes on later.
        #[arg(long, value_name = "N")]
        max_starts: Option<usize>,
        #[command(flatten)]
        slots: SlotArgs,
    },
    /// Measure an existing OpenAI-compatible endpoint with the same client and `vllm bench serve`'s flags
    /// (docs/bench.md), no spec needed.
    Bench(Box<BenchArgs>),
    /// Re-render every derived artifact (CSVs, markdown, SVGs) of a run from its recorded data.
    Report {
        /// The run folder, e.g. out/kv-scaling-cpu/20261128-151000.
        run: PathBuf,
        /// Templates overriding the built-in ones (and the spec's `templates:`), file by file.
        #[arg(long)]
        templates: Option<PathBuf>,
        /// Write nothing; check instead that every derived file equals what the raw records give, that the
        /// sweep's counts and rates agree with a plainer recomputation, and that every finding's predicate
        /// holds against its figures. Exits 8 with a list of what disagrees.
        #[arg(long)]
        check: bool,
    },
    /// Compress a run folder's raw records in place (`requests.jsonl` → `requests.jsonl.xz`, likewise points
    /// and samples; an older `.gz` is folded in); `report`, `compare` and `--resume` read every form.
    Compress {
        /// The run folder.
        run: PathBuf,
    },
    /// Compare two runs: a markdown table per metric and point, flagged where the 95% intervals part.
    Compare {
        a: PathBuf,
        b: PathBuf,
        /// Exit with code 5 when B is significantly worse than A somewhere (for CI gating).
        #[arg(long)]
        fail_on_regression: bool,
        /// Where a cell has no interval (one repeat), a relative change beyond this is flagged (0.10 = 10%).
        #[arg(long, default_value_t = 0.10)]
        threshold: f64,
    },
    /// Print the JSON schema of experiment specs.
    Schema,
}

fn run(cli: Cli) -> Result<i32, Error> {
    match cli.command {
        Command::Validate(args) => commands::validate(&args),
        Command::Plan { args, json, gpu_memory, slots } => commands::plan(&args, json, gpu_memory.as_deref(), &slots),
        Command::Run { args, folder, fail_fast, slots, shard } => {
            commands::run(&args, folder, fail_fast, &slots, shard)
        }
        Command::Merge { out, runs, prefer } => shards::merge(&out, &runs, prefer.as_ref()),
        Command::Export { target } => shards::export(&target).map(|()| exit::OK),
        Command::Tune { args, folder, max_starts, slots } => commands::tune(&args, folder, max_starts, &slots),
        Command::Bench(b) => bench::bench(*b),
        Command::Report { run, templates, check } => commands::report(&run, templates, check),
        Command::Compare { a, b, fail_on_regression, threshold } => {
            commands::compare(&a, &b, fail_on_regression, threshold)
        }
        Command::Compress { run } => commands::compress(&run),
        Command::Schema => {
            out!("{}", spec::schema::schema_json());
            Ok(exit::OK)
        }
    }
}

/// Entry point: returns the process exit code. A panic is a bug and exits with the internal-error code.
pub fn main() -> i32 {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == crate::engine::process::WATCHDOG_ARG) {
        let rest: Vec<String> = args[2..].iter().map(|a| a.to_string_lossy().into_owned()).collect();
        return crate::engine::process::watchdog_main(&rest);
    }
    let cli = Cli::parse();
    match std::panic::catch_unwind(|| run(cli)) {
        Ok(Ok(code)) => code,
        Ok(Err(e)) => {
            eprintln!("error: {e}");
            e.code()
        }
        Err(_) => {
            eprintln!("error: servelab panicked; this is a bug, please report it with the spec that caused it");
            exit::INTERNAL
        }
    }
}
