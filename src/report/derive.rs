//! Every derived artifact of a run — CSVs, sweep.json, markdown, SVGs — as a pure function of what the run
//! recorded (spec, manifest, server records, points, requests, samples). `servelab run` calls it after every
//! point; `servelab report` calls it on the files, which is why the two agree byte for byte.

use super::context::{self, Context, KvContext, RateContext};
use super::{charts, kv_csv, markdown, rate_csv, sweep_csv};
use crate::record::manifest::Manifest;
use crate::record::{Recorded, ServerRecord};
use crate::spec::{ReportKind, Spec};
use crate::stats::kv;
use crate::stats::sweep::{self, GroupSweep};
use std::path::PathBuf;

pub type Files = Vec<(String, Vec<u8>)>;

use crate::record::io::json_pretty;

/// The reports to render: the spec's list, or by default what the data supports.
fn reports(spec: &Spec, has_kv: bool, has_sweep: bool, has_rates: bool) -> Vec<ReportKind> {
    if !spec.report.is_empty() {
        return spec.report.clone();
    }
    if spec.tune.is_some() {
        return vec![ReportKind::Tune];
    }
    let mut r = Vec::new();
    if has_kv && !has_sweep && !has_rates {
        r.push(ReportKind::KvCacheScalingNotes);
    }
    if has_sweep {
        r.push(ReportKind::ConcurrencySweep);
    }
    if has_rates {
        r.push(ReportKind::RateSweep);
    }
    r
}

/// The group's search replayed over what it recorded (the same function the executor asked as it ran).
fn search_of(manifest: &Manifest, rec: &Recorded, spec: &Spec, group: &str) -> Option<context::SearchContext> {
    let plan = manifest.plan.search.clone()?;
    let g = manifest.plan.groups.iter().find(|g| g.id == group)?;
    let rules = crate::stats::search::Rules { slo: spec.slo.as_ref(), precision: manifest.plan.precision };
    Some(context::SearchContext { state: crate::stats::search::replay_recorded(g, rec, &rules), plan })
}

/// Server groups of the plan with a load point that `pick` selects (each gets its own sweep files when
/// there are several).
fn groups_with(manifest: &Manifest, pick: impl Fn(&crate::record::plan::ClientConfig) -> bool) -> usize {
    manifest.plan.groups.iter().filter(|g| g.points.iter().any(|p| p.client.as_ref().is_some_and(&pick))).count()
}

/// The version of this derive code, written into every derived JSON file as `derived_version`. Bumped in
/// the commit that changes any derived byte (and every committed example is re-rendered in that commit);
/// never a clock, so a re-render of the same records is byte for byte the same. `compare` refuses two runs
/// whose derived files carry different versions.
pub const DERIVED_VERSION: u32 = 14;

/// The key every derived JSON file carries.
pub const VERSION_KEY: &str = "derived_version";

/// `value` as pretty JSON with `derived_version` first: at the top of an object, or first in each object
/// of an array (so `sweep.json[0]` still reads as before).
fn stamped<T: serde::Serialize>(value: &T) -> Vec<u8> {
    let stamp = |v: serde_json::Value| match v {
        serde_json::Value::Object(map) => {
            let mut out = serde_json::Map::new();
            out.insert(VERSION_KEY.to_owned(), DERIVED_VERSION.into());
            out.extend(map);
            serde_json::Value::Object(out)
        }
        other => other,
    };
    let value = match serde_json::to_value(value) {
        Ok(serde_json::Value::Array(items)) => serde_json::Value::Array(items.into_iter().map(stamp).collect()),
        Ok(other) => stamp(other),
        Err(_) => serde_json::Value::Null,
    };
    json_pretty(&value)
}

/// The `derived_version` of a run folder's derived JSON files: None when it has none (a startup-only run,
/// or derived files rendered before the stamp existed).
pub fn version_in(dir: &std::path::Path) -> Option<u64> {
    ["sweep.json", "rate_sweep.json", "rate_search.json", "tune.json"].iter().find_map(|name| {
        let bytes = std::fs::read(dir.join(name)).ok()?;
        let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
        let first = if v.is_array() { v.get(0)?.clone() } else { v };
        first.get(VERSION_KEY)?.as_u64()
    })
}

/// Why a derived file could not be rendered, naming it.
fn failed(name: &str, e: impl std::error::Error + Send + Sync + 'static) -> super::ReportError {
    super::ReportError::Render { name: name.to_owned(), source: Box::new(e) }
}

/// A derived file rendered in memory, or why it could not be (CSV and chart writers return their errors, so
/// a report is never written with a file cut short).
fn rendered<T: Into<Vec<u8>>, E: std::error::Error + Send + Sync + 'static>(
    name: &str,
    r: Result<T, E>,
) -> Result<(String, Vec<u8>), super::ReportError> {
    r.map(|bytes| (name.to_owned(), bytes.into())).map_err(|e| failed(name, e))
}

/// A server group as the prefix-cache report names it: its grid values (`caching=true`), else its id.
pub fn server_of(manifest: &Manifest, group: &str) -> String {
    let g = manifest.plan.groups.iter().find(|g| g.id == group);
    let vars = g.map(|g| crate::record::values::vars_text(&g.vars, " ")).unwrap_or_default();
    if vars.is_empty() { format!("server {group}") } else { vars }
}

/// Server groups of the plan that run load points.
pub fn load_groups(manifest: &Manifest) -> usize {
    groups_with(manifest, |_| true)
}

pub fn derive(
    spec: &Spec,
    manifest: &Manifest,
    rec: &Recorded,
    templates: Option<PathBuf>,
) -> Result<(Files, Vec<GroupSweep>), super::ReportError> {
    let mut files = Vec::new();
    // External endpoints were not started here: they have no startup memory to report.
    let started = rec.started_servers();
    let kv_ctx = if started.is_empty() { None } else { Some(kv_files(&started, spec, &mut files)?) };
    let mut sweeps = sweep::of_run(rec, spec);
    let missed = match manifest.plan.precision {
        Some(p) => sweep::note_precision(&mut sweeps, p.rel_ci),
        None => vec![Vec::new(); sweeps.len()],
    };
    let gpu_sampled = rec.points.iter().any(|p| p.gpu_sampled);
    let mut sweep_ctx = Vec::new();
    for (i, g) in sweeps.iter().enumerate() {
        // Named by the plan, not by what was measured so far, so a run never leaves unsuffixed files behind.
        let suffix = if load_groups(manifest) > 1 { format!("-{}", g.group) } else { String::new() };
        sweep_files(g, &suffix, &mut files)?;
        let mut ctx = context::sweep(g, sweep::rules_of_thumb(g), gpu_sampled, &suffix);
        ctx.imprecise = missed.get(i).cloned().unwrap_or_default();
        sweep_ctx.push(ctx);
    }
    if !sweeps.is_empty() {
        files.push(("sweep.json".to_owned(), stamped(&sweeps)));
    }
    let rate_ctx = rate_files(spec, manifest, rec, &mut files)?;
    let searches: Vec<_> = rate_ctx.iter().filter_map(|r| Some((&r.sweep.group, r.search.as_ref()?))).collect();
    if !searches.is_empty() {
        let json: Vec<_> = searches
            .iter()
            .map(|(g, s)| serde_json::json!({ "group": g, "plan": s.plan, "search": s.state }))
            .collect();
        files.push(("rate_search.json".to_owned(), stamped(&json)));
    }
    let prefix = crate::stats::prefix::analyze(&sweeps, &|group: &str| server_of(manifest, group));
    if spec.report.contains(&ReportKind::PrefixCache) && !prefix.rows.is_empty() {
        files.push(rendered("prefix_cache.csv", super::workload_csv::render_prefix(&prefix.rows))?);
        files.push(rendered("prefix_cache.svg", charts::prefix(&prefix.rows))?);
    }
    let workload = crate::stats::workload::rows(&rec.points, &rec.requests);
    if !workload.is_empty() {
        files.push(rendered("workload.csv", super::workload_csv::render(&workload))?);
    }
    let tune = crate::stats::tune::analyze(spec, &manifest.plan, rec, &manifest.tune_pruned);
    if let Some(t) = &tune {
        files.push(rendered("tune.csv", super::tune_csv::render(t))?);
        files.push(rendered("tune_pareto.svg", charts::pareto(&t.pareto))?);
        files.push(("tune.json".to_owned(), stamped(t)));
    }
    let traces = crate::stats::trace::analyze(&rec.points, &rec.requests, &rec.servers, spec.slo.as_ref());
    if !traces.is_empty() {
        files.push(("trace_replay.json".to_owned(), stamped(&traces)));
    }
    let sessions = crate::stats::session::analyze(&rec.points, &rec.requests);
    if !sessions.is_empty() {
        files.push(("sessions.json".to_owned(), stamped(&sessions)));
    }
    let policy = format!("{:?}", spec.repeat_policy).to_lowercase();
    let (failed_closed, failed_open) = context::failed_points(&rec.points);
    let ctx = Context {
        run: context::run_info(
            manifest,
            spec.description.clone(),
            &spec.name,
            spec.planned_repeats().max(1) as u32,
            &policy,
        ),
        kv: kv_ctx,
        sweeps: sweep_ctx,
        rates: rate_ctx,
        traces,
        sessions,
        workload,
        prefix,
        tune,
        failed_closed,
        failed_open,
    };
    markdown_files(spec, &ctx, templates, &mut files)?;
    Ok((files, sweeps))
}

/// The open-loop rate sweeps' files (`rate_sweep.json`, a CSV and a chart per group), and their contexts with
/// the search of each group that ran one.
fn rate_files(
    spec: &Spec,
    manifest: &Manifest,
    rec: &Recorded,
    files: &mut Files,
) -> Result<Vec<RateContext>, super::ReportError> {
    let mut rate_ctx = Vec::new();
    let rate_groups = crate::stats::rate::analyze(&rec.points, &rec.requests, spec.slo.as_ref());
    let several = groups_with(manifest, |c| c.open_loop.is_some()) > 1;
    if !rate_groups.is_empty() {
        // The cells with the findings drawn from them, so `report --check` can hold each finding against the
        // figures it was drawn from, as sweep.json does for the concurrency sweep.
        files.push(("rate_sweep.json".to_owned(), stamped(&rate_groups)));
    }
    for r in rate_groups {
        let suffix = if several { format!("-{}", r.group) } else { String::new() };
        files.push(rendered(&format!("rate_sweep{suffix}.csv"), rate_csv::render(&r))?);
        files.push(rendered(&format!("rate_sweep{suffix}.svg"), charts::rate_sweep(&r))?);
        let search = search_of(manifest, rec, spec, &r.group);
        rate_ctx.push(RateContext { sweep: r, chart: format!("rate_sweep{suffix}.svg"), search });
    }
    Ok(rate_ctx)
}

/// A concurrency sweep's files: its CSV, its batching summary when it has one, its chart.
fn sweep_files(g: &GroupSweep, suffix: &str, files: &mut Files) -> Result<(), super::ReportError> {
    files.push(rendered(&format!("concurrency_sweep{suffix}.csv"), sweep_csv::render(g))?);
    if let Some(bytes) =
        sweep_csv::render_batching(g).map_err(|e| failed(&format!("batching_summary{suffix}.csv"), e))?
    {
        files.push((format!("batching_summary{suffix}.csv"), bytes));
    }
    files.push(rendered(&format!("concurrency_sweep{suffix}.svg"), charts::sweep(g))?);
    Ok(())
}

/// The KV files of the started servers (CSV, per-GPU CSV, chart), and what the notes report on them.
fn kv_files(started: &[ServerRecord], spec: &Spec, files: &mut Files) -> Result<KvContext, super::ReportError> {
    files.push(rendered("kv_cache_scaling.csv", kv_csv::render(started))?);
    if let Some(bytes) = kv_csv::render_per_gpu(started).map_err(|e| failed("kv_cache_scaling_gpus.csv", e))? {
        files.push(("kv_cache_scaling_gpus.csv".to_owned(), bytes));
    }
    let findings = kv::findings(started, spec.report_options.request_len);
    let rows = kv::rows(started);
    let mem: Vec<(u64, f64)> = rows.iter().filter_map(|r| Some((r.max_model_len?, r.mem_used_mb?))).collect();
    let tokens: Vec<(u64, u64)> = rows.iter().filter_map(|r| Some((r.max_model_len?, r.kv_cache_tokens?))).collect();
    files.push(rendered("kv_cache_scaling.svg", charts::kv_scaling(&findings, &mem, &tokens))?);
    Ok(KvContext { rows: context::kv_rows(&rows), findings, chart: "kv_cache_scaling.svg".to_owned() })
}

/// The markdown reports the spec asks for (or the data supports), each once its figures exist.
fn markdown_files(
    spec: &Spec,
    ctx: &Context,
    templates: Option<PathBuf>,
    files: &mut Files,
) -> Result<(), super::ReportError> {
    let env = markdown::environment(templates);
    for kind in reports(spec, ctx.kv.is_some(), !ctx.sweeps.is_empty(), !ctx.rates.is_empty()) {
        let name = match kind {
            ReportKind::RateSweep if !ctx.rates.is_empty() => "rate_sweep.md",
            ReportKind::KvCacheScalingNotes if ctx.kv.is_some() => "kv_cache_scaling_notes.md",
            ReportKind::BatchingBenchmark if !ctx.sweeps.is_empty() => "batching_benchmark.md",
            ReportKind::ConcurrencySweep if !ctx.sweeps.is_empty() => "concurrency_sweep.md",
            ReportKind::PrefixCache if !ctx.sweeps.is_empty() => "prefix_cache.md",
            ReportKind::Tune if ctx.tune.is_some() => "tune.md",
            _ => continue, // nothing measured yet for this report
        };
        files.push((name.to_owned(), markdown::render(&env, name, ctx)?.into_bytes()));
    }
    // The tune's recommendation as a config file `vllm serve --config` takes.
    if ctx.tune.as_ref().is_some_and(|t| t.deploy.is_some()) {
        files.push(("recommended.yaml".to_owned(), markdown::render(&env, "recommended.yaml", ctx)?.into_bytes()));
    }
    Ok(())
}
