//! The command line: parse arguments, dispatch, map outcomes to exit codes. Logic lives in the modules.

use crate::exit::{self, Error};
use crate::plan::{self, Plan};
use crate::record::io::write_atomic;
use crate::run::{self, RunError, RunOptions};
use crate::spec::{self, LoadedSpec, SpecError};
use clap::{Parser, Subcommand};
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicI32;
use std::sync::atomic::{AtomicBool, Ordering};

/// `print!` that gives up quietly when stdout is closed (`servelab plan spec.yaml | head`: a closed pipe is not
/// an error of servelab's, and `print!` would panic on it) and fails the command on any other write error
/// (`servelab schema > /dev/full`), with exit 7.
macro_rules! out {
    ($($arg:tt)*) => {
        emit(format_args!($($arg)*))?
    };
}

macro_rules! outln {
    ($($arg:tt)*) => {
        emit(format_args!("{}\n", format_args!($($arg)*)))?
    };
}

fn emit(args: std::fmt::Arguments<'_>) -> Result<(), Error> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_fmt(args).and_then(|()| stdout.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(Error::Output(format!("cannot write the output to stdout: {e}")))
        }
        _ => Ok(()),
    }
}

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

#[derive(clap::Args, Debug)]
pub struct SpecArgs {
    /// The experiment spec (YAML).
    pub spec: PathBuf,
    /// Override a spec value, e.g. `--set engine.model=/models/qwen` (the value is YAML). Repeatable.
    #[arg(long = "set", value_name = "PATH=VALUE")]
    pub set: Vec<String>,
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
    /// Measure an existing OpenAI-compatible endpoint with the same client, no spec needed.
    Bench(BenchArgs),
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
    fn host(&self, spec: &spec::Spec) -> Result<plan::slots::Host, Error> {
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
    fn options(self, fail_fast: bool, max_starts: Option<usize>, host: plan::slots::Host) -> RunOptions {
        let FolderArgs { out, run_id, resume, force } = self;
        RunOptions { out_root: out, run_id, resume, force, fail_fast, max_starts, host, shard: None }
    }
}

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Base URL of the endpoint, e.g. http://127.0.0.1:8000.
    #[arg(long)]
    pub url: String,
    /// Model name for requests (default: the first model /v1/models lists).
    #[arg(long)]
    pub model: Option<String>,
    /// Concurrency levels.
    #[arg(long, value_delimiter = ',', default_value = "1,4,8,16")]
    pub concurrency: Vec<u32>,
    /// Requests per level: max(requests, 4 × concurrency) unless --exact-requests.
    #[arg(long, default_value_t = 32)]
    pub requests: u32,
    #[arg(long)]
    pub exact_requests: bool,
    #[arg(long, default_value_t = 64)]
    pub max_tokens: u32,
    #[arg(long, default_value_t = 128)]
    pub prompt_tokens: u32,
    #[arg(long, default_value_t = 2)]
    pub warmup: u32,
    #[arg(long, default_value_t = 1)]
    pub repeats: u32,
    /// Token ids are drawn below this (default 1000: safe for any vocabulary).
    #[arg(long)]
    pub vocab_size: Option<u64>,
    /// Non-streaming requests (no TTFT).
    #[arg(long)]
    pub no_stream: bool,
    #[arg(long, default_value = "out")]
    pub out: PathBuf,
    #[arg(long)]
    pub run_id: Option<String>,
    /// How long one request may take before it counts as failed (shorter than `run`'s 300 s: an endpoint
    /// that hangs should not hold a quick check for minutes).
    #[arg(long, default_value = "60s", value_name = "DURATION")]
    pub request_timeout: String,
}

/// The spec `bench` runs: an external engine and a concurrency grid, built as a value (no YAML text is
/// pasted together, so no argument can inject a key), then written out as YAML and stored with the run
/// like any spec.
pub fn bench_spec(b: &BenchArgs) -> Result<String, Error> {
    let url = b.url.trim_end_matches('/').trim_end_matches("/v1");
    if !plan::server::is_http_url(url) {
        return Err(Error::Usage(format!(
            "--url {}: not an http:// URL; write e.g. --url http://127.0.0.1:8000",
            b.url
        )));
    }
    let mut engine = serde_json::json!({ "kind": "external", "base_url": url, "ready_path": "/v1/models" });
    if let Some(m) = &b.model {
        engine["model"] = m.as_str().into();
    }
    let value = serde_json::json!({
        "name": "bench",
        "description": format!("servelab bench against {url}"),
        "engine": engine,
        "grid": { "concurrency": b.concurrency },
        "repeats": b.repeats,
        "load": {
            "concurrency": "{{ concurrency }}",
            "requests": b.requests,
            "exact_requests": b.exact_requests,
            "max_tokens": b.max_tokens,
            "prompt_tokens": b.prompt_tokens,
            "warmup": b.warmup,
            "stream": !b.no_stream,
            "vocab_size": b.vocab_size.unwrap_or(1000),
            "request_timeout": b.request_timeout,
        },
        "measure": { "memory": "procfs" },
    });
    let spec: spec::Spec = serde_json::from_value(value).map_err(|e| Error::Usage(format!("bench: {e}")))?;
    serde_saphyr::to_string(&spec).map_err(|e| Error::Internal(format!("bench spec as YAML: {e}")))
}

/// Loads a spec and plans it, pointing planner errors at their place in the spec.
pub fn load_and_plan(args: &SpecArgs) -> Result<(LoadedSpec, Plan), SpecError> {
    let loaded = spec::load_file(&args.spec, &args.set)?;
    let plan = plan::build_located(&loaded)?;
    Ok((loaded, plan))
}

fn run(cli: Cli) -> Result<i32, Error> {
    match cli.command {
        Command::Validate(args) => {
            let (loaded, plan) = load_and_plan(&args)?;
            let (loaded, plan) = (&loaded, &plan);
            for note in run::check_inputs(plan).map_err(|e| Error::Usage(e.to_string()))? {
                eprintln!("{note}");
            }
            run::check_templates(loaded, plan).map_err(|e| Error::Usage(e.to_string()))?;
            match &plan.tune {
                Some(t) => outln!(
                    "ok: {}: a tune over {} configurations in at most {} server starts",
                    args.spec.display(),
                    t.configs.len(),
                    t.starts
                ),
                None => outln!(
                    "ok: {}: {} grid points, {} runs, {} server starts",
                    args.spec.display(),
                    plan.grid_points,
                    plan.runs(),
                    plan.server_starts()
                ),
            }
        }
        Command::Plan { args, json, gpu_memory, slots } => {
            let (loaded, plan) = load_and_plan(&args)?;
            let host = slots.host(&loaded.spec)?;
            let gpu = match gpu_memory.as_deref().map(crate::run::capacity::parse_size).transpose() {
                Ok(g) => g.or_else(|| {
                    use crate::probe::MemoryProbe as _;
                    crate::probe::gpu::Nvml::init().ok().and_then(|n| n.cuda_total_bytes())
                }),
                Err(e) => return Err(Error::Usage(format!("--gpu-memory: {e}"))),
            };
            if json {
                let text = serde_json::to_string_pretty(&plan).map_err(|e| Error::Internal(e.to_string()))?;
                outln!("{text}");
            } else {
                out!("{}", plan::table::render(&plan));
                out!("{}", crate::run::capacity::render(&plan, gpu));
                if host.binds() {
                    let a = plan::slots::assign(
                        &plan,
                        &host,
                        loaded.spec.engine.gpus,
                        &plan::estimate::group_costs(&loaded.spec, &plan),
                    )
                    .map_err(|e| Error::Usage(format!("{e}; lend more with --gpus, or lower its parallel size")))?;
                    out!("{}", plan::table::slots(&plan, &a));
                }
            }
        }
        Command::Run { args, folder, fail_fast, slots, shard } => {
            let (loaded, plan) = load_and_plan(&args)?;
            let host = slots.host(&loaded.spec)?;
            let mut opts = folder.options(fail_fast, None, host);
            let Some(shard) = shard else { return run_experiment(&loaded, &plan, opts) };
            let (plan, of) =
                crate::shard::shard_plan(&loaded.spec, &plan, shard).map_err(|e| Error::Usage(e.to_string()))?;
            if opts.resume.is_none() && opts.run_id.is_none() {
                opts.run_id = Some(format!("shard-{}-of-{}", shard.index, shard.count));
            }
            opts.shard = Some(of);
            return run_experiment(&loaded, &plan, opts);
        }
        Command::Merge { out, runs, prefer } => return merge(&out, &runs, prefer.as_ref()),
        Command::Export { target } => export(&target)?,
        Command::Tune { args, folder, max_starts, slots } => {
            let (loaded, plan) = load_and_plan(&args)?;
            if plan.tune.is_none() {
                return Err(Error::Usage(format!(
                    "{} has no `tune:` section; add one (README: \"servelab tune SPEC\"), or use `servelab run` for a sweep",
                    args.spec.display()
                )));
            }
            let host = slots.host(&loaded.spec)?;
            return run_experiment(&loaded, &plan, folder.options(false, max_starts, host));
        }
        Command::Bench(b) => {
            let loaded = spec::load_str("servelab bench", &bench_spec(&b)?, &[])?;
            let plan = plan::build_located(&loaded)?;
            return run_experiment(
                &loaded,
                &plan,
                RunOptions {
                    out_root: b.out,
                    run_id: b.run_id,
                    resume: None,
                    force: false,
                    fail_fast: false,
                    max_starts: None,
                    host: plan::slots::Host::serial(),
                    shard: None,
                },
            );
        }
        Command::Report { run, templates, check } => {
            let usage = |e: crate::report::ReportError| Error::Usage(e.to_string());
            let (loaded, manifest, rec) = crate::report::open_run(&run).map_err(usage)?;
            let templates = templates.or(loaded.spec.templates.as_ref().map(PathBuf::from));
            if check {
                let wrong =
                    crate::report::check::check(&run, &loaded.spec, &manifest, &rec, templates).map_err(usage)?;
                for d in &wrong {
                    outln!("{}: {}", run.join(&d.file).display(), d.what);
                }
                if !wrong.is_empty() {
                    return Ok(exit::CHECK_FAILED);
                }
                outln!("ok: every derived file of {} follows from its raw records", run.display());
                return Ok(exit::OK);
            }
            let (files, _) = crate::report::derive::derive(&loaded.spec, &manifest, &rec, templates).map_err(usage)?;
            for (name, bytes) in &files {
                write_atomic(&run.join(name), bytes).map_err(|e| Error::Output(e.to_string()))?;
            }
            let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
            outln!("re-rendered {} files in {}: {}", files.len(), run.display(), names.join(", "));
        }
        Command::Compare { a, b, fail_on_regression, threshold } => {
            let fa = crate::report::compare::open(&a).map_err(|e| Error::Usage(e.to_string()))?;
            let fb = crate::report::compare::open(&b).map_err(|e| Error::Usage(e.to_string()))?;
            if fa.derived_version != fb.derived_version {
                let v = |x: Option<u64>| x.map_or("none".to_owned(), |v| v.to_string());
                return Err(Error::Usage(format!(
                    "{} was rendered by derive version {} and {} by version {}: their reports may say different \
                     things of the same records; re-render both with `servelab report RUN`, then compare",
                    a.display(),
                    v(fa.derived_version),
                    b.display(),
                    v(fb.derived_version)
                )));
            }
            let c = crate::report::compare::compare(
                &a.display().to_string(),
                &b.display().to_string(),
                fa.figures(),
                fb.figures(),
                threshold,
            );
            out!("{}", c.markdown);
            if fail_on_regression && c.regressions > 0 {
                return Ok(exit::REGRESSION);
            }
        }
        Command::Compress { run } => {
            crate::record::folder::read(&run).map_err(|e| Error::Usage(e.to_string()))?;
            for (name, before, after) in
                crate::record::folder::compress(&run).map_err(|e| Error::Output(e.to_string()))?
            {
                outln!("{name}: {before} → {after} bytes ({name}.xz)");
            }
        }
        Command::Schema => out!("{}", spec::schema::schema_json()),
    }
    Ok(exit::OK)
}

/// `servelab export`: the job files written (shell scripts executable), then what each job asks for.
fn export(target: &crate::cluster::Target) -> Result<(), Error> {
    let e = crate::cluster::export(target).map_err(|e| Error::Usage(e.to_string()))?;
    let io = |path: &std::path::Path, e: std::io::Error| Error::Output(format!("{}: {e}", path.display()));
    for (path, bytes) in &e.files {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
        }
        write_atomic(path, bytes).map_err(|e| Error::Output(e.to_string()))?;
        if path.extension().is_some_and(|x| x == "sh") {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).map_err(|e| io(path, e))?;
        }
    }
    out!("{}", e.summary);
    Ok(())
}

/// `servelab merge`: what is missing is said before anything is written; an incomplete merge is written all
/// the same (what was measured is worth reading) and exits 3.
fn merge(out: &std::path::Path, runs: &[PathBuf], prefer: Option<&crate::shard::owners::Prefer>) -> Result<i32, Error> {
    let p = crate::shard::merge::prepare(runs, prefer).map_err(|e| Error::Usage(e.to_string()))?;
    let list = |v: &[String]| {
        if v.len() > 8 { format!("{} … ({} in all)", v[..8].join(", "), v.len()) } else { v.join(", ") }
    };
    if !p.missing_shards.is_empty() {
        let shards: Vec<String> = p.missing_shards.iter().map(usize::to_string).collect();
        eprintln!(
            "missing shards: {} (re-run each with `servelab run SPEC --shard I/N`, then merge again)",
            shards.join(", ")
        );
    }
    if !p.missing_points.is_empty() {
        eprintln!("missing points: {}", list(&p.missing_points));
    }
    if !p.failed_points.is_empty() {
        eprintln!("failed points (latest attempt): {} (re-run their shard with --resume)", list(&p.failed_points));
    }
    let files = p.write(out).map_err(|e| match e {
        crate::shard::merge::MergeError::Out { .. } | crate::shard::merge::MergeError::Write(_) => {
            Error::Output(e.to_string())
        }
        other => Error::Usage(other.to_string()),
    })?;
    outln!("merged {} runs into {}: {} derived files ({})", p.runs(), out.display(), files.len(), files.join(", "));
    Ok(if p.complete() { exit::OK } else { exit::POINT_FAILED })
}

/// One shutdown path for SIGINT (Ctrl-C), SIGTERM (CI cancel, `timeout`), SIGHUP (a closed terminal) and
/// SIGQUIT: the first stops gracefully (in-flight requests cancelled, the server stopped, partial reports
/// written; the run then exits 128 + the signal's number), the second stops at once — every process
/// carrying this servelab's marker is killed (engine::process::kill_marked), so nothing is left behind. Messages go through `writeln!` on stderr, which cannot panic when
/// the terminal is gone.
async fn shutdown_on_signals(interrupted: Arc<AtomicBool>, which: Arc<AtomicI32>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term), Ok(mut hup), Ok(mut quit)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
        signal(SignalKind::quit()),
    ) else {
        note(format_args!("warning: cannot listen for signals; Ctrl-C will not stop the run cleanly\n"));
        return;
    };
    let mut next = async || -> i32 {
        tokio::select! {
            // why: recv() gives None only once its listener is dropped, which these never are while they wait.
            _ = int.recv() => 2,
            _ = term.recv() => 15,
            _ = hup.recv() => 1,
            _ = quit.recv() => 3,
        }
    };
    let first = next().await;
    which.store(first, Ordering::SeqCst);
    interrupted.store(true, Ordering::SeqCst);
    note(format_args!(
        "interrupted (signal {first}): cancelling in-flight requests, stopping the server, writing partial reports (again to stop at once)\n"
    ));
    let second = next().await;
    crate::engine::process::kill_marked();
    note(format_args!("interrupted twice: killed the server's processes\n"));
    std::process::exit(128 + second);
}

/// A line on stderr where a panic would cost more than the line: in the signal task (a panic there ends the
/// second signal's handling) and after an interrupted run (its exit code must still come out).
fn note(args: std::fmt::Arguments) {
    #[expect(clippy::let_underscore_must_use, reason = "a failed write to stderr has nowhere else to be reported")]
    let _: std::io::Result<()> = std::io::stderr().write_fmt(args);
}

/// Runs the plan on a tokio runtime; Ctrl-C stops the current server before exiting with 130.
fn run_experiment(loaded: &LoadedSpec, plan: &Plan, opts: RunOptions) -> Result<i32, Error> {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| Error::Internal(e.to_string()))?;
    let interrupted = Arc::new(AtomicBool::new(false));
    let signal = Arc::new(AtomicI32::new(0));
    runtime.spawn(shutdown_on_signals(interrupted.clone(), signal.clone()));
    let outcome = runtime.block_on(run::execute(loaded, plan, &opts, &interrupted)).map_err(|e| match e {
        // Before any server started: nothing ran.
        RunError::Output { .. }
        | RunError::Record(_)
        | RunError::Probe(_)
        | RunError::Preflight(_)
        | RunError::Report(_)
        | RunError::Templates { .. }
        | RunError::VllmChanged { .. } => Error::Usage(e.to_string()),
        RunError::Internal(msg) => Error::Internal(msg),
        RunError::HttpClient(_) => Error::Internal(e.to_string()),
        RunError::DuringRun(inner) => Error::RunIo(inner.to_string()),
    })?;
    out!("{}", crate::report::console::after_run(&loaded.spec, &outcome.manifest, &outcome.dir, &outcome.recorded));
    if outcome.interrupted {
        let sig = signal.load(Ordering::SeqCst);
        note(format_args!("interrupted; what was measured is in {}\n", outcome.dir.display()));
        return Ok(if sig > 0 { 128 + sig } else { exit::INTERRUPTED });
    }
    let servers = outcome.recorded.servers.len();
    let (failed_servers, failed_points) = (outcome.failed_servers(), outcome.failed_points());
    eprintln!(
        "{} of {servers} server starts ok, {failed_points} load points failed; outputs in {}",
        servers - failed_servers,
        outcome.dir.display()
    );
    Ok(if failed_servers + failed_points > 0 { exit::POINT_FAILED } else { exit::OK })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn bench(args: &[&str]) -> BenchArgs {
        let mut argv = vec!["servelab", "bench"];
        argv.extend_from_slice(args);
        match Cli::parse_from(argv).command {
            Command::Bench(b) => b,
            _ => unreachable!(),
        }
    }

    #[test]
    fn bench_spec_is_a_value_that_round_trips_whatever_the_arguments_hold() {
        let model = "evil\"\nname: injected\n  x: {{ y }}";
        let b = bench(&["--url", "http://127.0.0.1:9/v1/", "--model", model, "--concurrency", "1,8", "--no-stream"]);
        let text = bench_spec(&b).unwrap();
        let loaded = spec::load_str("servelab bench", &text, &[]).unwrap();
        let s = &loaded.spec;
        assert_eq!(s.name, "bench");
        assert_eq!(s.engine.model.as_deref(), Some(model));
        assert_eq!(s.engine.base_url.as_deref(), Some("http://127.0.0.1:9"));
        assert_eq!(s.grid["concurrency"].len(), 2);
        let load = s.load.as_ref().unwrap();
        assert!(matches!(load.stream, spec::BoolOrTemplate::Bool(false)));
    }
}
