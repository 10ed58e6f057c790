//! One function per spec and run-folder command (`validate`, `plan`, `run`, `tune`, `report`, `compare`,
//! `compress`): each parses nothing and decides nothing, it calls the layer that does and prints what it says.

use super::args::{FolderArgs, SlotArgs, SpecArgs, load_and_plan};
use super::experiment::run_experiment;
use crate::exit::{self, Error};
use crate::plan;
use crate::record::io::write_atomic;
use crate::run;
use std::path::{Path, PathBuf};

/// `servelab validate`: the inputs and templates checked, then the size of what would run.
pub(super) fn validate(args: &SpecArgs) -> Result<i32, Error> {
    let (loaded, plan) = load_and_plan(args)?;
    let (loaded, plan) = (&loaded, &plan);
    for note in run::check_inputs(plan).map_err(|e| Error::Usage(e.to_string()))? {
        eprintln!("{note}");
    }
    run::check_templates(loaded, plan).map_err(|e| Error::Usage(e.to_string()))?;
    match &plan.tune {
        Some(t) => outln!(
            "ok: {}: a tune over {} configuration{} in at most {} server starts",
            args.spec.display(),
            t.configs.len(),
            if t.configs.len() == 1 { "" } else { "s" },
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
    Ok(exit::OK)
}

/// `servelab plan`: the run matrix as a table (with each server's predicted KV pool and, when slots are
/// lent, their assignment) or as JSON.
pub(super) fn plan(args: &SpecArgs, json: bool, gpu_memory: Option<&str>, slots: &SlotArgs) -> Result<i32, Error> {
    let (loaded, plan) = load_and_plan(args)?;
    let host = slots.host(&loaded.spec)?;
    let gpu = match gpu_memory.map(crate::run::capacity::parse_size).transpose() {
        Ok(g) => g.or_else(|| {
            use crate::probe::MemoryProbe as _;
            crate::probe::gpu::Nvml::init().ok().and_then(|n| n.cuda_total_bytes())
        }),
        Err(e) => return Err(Error::Usage(format!("--gpu-memory: {e}"))),
    };
    if json {
        let text = serde_json::to_string_pretty(&plan).map_err(|e| Error::Internal(e.to_string()))?;
        outln!("{text}");
        return Ok(exit::OK);
    }
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
    Ok(exit::OK)
}

/// `servelab run`: the whole plan, or with `--shard I/N` its share, into a run folder.
pub(super) fn run(
    args: &SpecArgs,
    folder: FolderArgs,
    fail_fast: bool,
    slots: &SlotArgs,
    shard: Option<crate::shard::Shard>,
) -> Result<i32, Error> {
    let (loaded, plan) = load_and_plan(args)?;
    let host = slots.host(&loaded.spec)?;
    let mut opts = folder.options(fail_fast, None, host);
    let Some(shard) = shard else { return run_experiment(&loaded, &plan, opts) };
    let (plan, of) = crate::shard::shard_plan(&loaded.spec, &plan, shard).map_err(|e| Error::Usage(e.to_string()))?;
    if opts.resume.is_none() && opts.run_id.is_none() {
        opts.run_id = Some(format!("shard-{}-of-{}", shard.index, shard.count));
    }
    opts.shard = Some(of);
    run_experiment(&loaded, &plan, opts)
}

/// `servelab tune`: a spec with a `tune:` section, run like `run` with a cap on server starts.
pub(super) fn tune(
    args: &SpecArgs,
    folder: FolderArgs,
    max_starts: Option<usize>,
    slots: &SlotArgs,
) -> Result<i32, Error> {
    let (loaded, plan) = load_and_plan(args)?;
    if plan.tune.is_none() {
        return Err(Error::Usage(format!(
            "{} has no `tune:` section; add one (README: \"servelab tune SPEC\"), or use `servelab run` for a sweep",
            args.spec.display()
        )));
    }
    let host = slots.host(&loaded.spec)?;
    run_experiment(&loaded, &plan, folder.options(false, max_starts, host))
}

/// `servelab report`: re-render a run's derived files, or with `--check` verify them (exit 8 on a difference).
pub(super) fn report(run: &Path, templates: Option<PathBuf>, check: bool) -> Result<i32, Error> {
    let usage = |e: crate::report::ReportError| Error::Usage(e.to_string());
    let (loaded, manifest, rec) = crate::report::open_run(run).map_err(usage)?;
    let templates = templates.or(loaded.spec.templates.as_ref().map(PathBuf::from));
    if check {
        let wrong = crate::report::check::check(run, &loaded.spec, &manifest, &rec, templates).map_err(usage)?;
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
    Ok(exit::OK)
}

/// `servelab compare`: two runs rendered by the same derive version, side by side; exit 5 on a regression
/// when asked.
pub(super) fn compare(a: &Path, b: &Path, fail_on_regression: bool, threshold: f64) -> Result<i32, Error> {
    let fa = crate::report::compare::open(a).map_err(|e| Error::Usage(e.to_string()))?;
    let fb = crate::report::compare::open(b).map_err(|e| Error::Usage(e.to_string()))?;
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
    if fa.metrics_version != fb.metrics_version {
        return Err(Error::Usage(format!(
            "{} was recorded under metrics version {} and {} under version {}: the same records give other \
             figures under each (docs/outputs.md), so a difference between them need not be the servers'; \
             compare runs recorded by one servelab",
            a.display(),
            fa.metrics_version,
            b.display(),
            fb.metrics_version
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
    Ok(exit::OK)
}

/// `servelab compress`: a readable run folder's raw records compressed in place.
pub(super) fn compress(run: &Path) -> Result<i32, Error> {
    crate::record::folder::read(run).map_err(|e| Error::Usage(e.to_string()))?;
    for (name, before, after) in crate::record::folder::compress(run).map_err(|e| Error::Output(e.to_string()))? {
        outln!("{name}: {before} → {after} bytes ({name}.xz)");
    }
    Ok(exit::OK)
}
