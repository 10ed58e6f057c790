//! Opening a run folder: a new one (its id, spec, plan and manifest written before any server starts), or
//! the one being resumed, with what it committed and the check that its environment still matches; and the
//! checks that need no server (input files, ports, the API key).

use super::{RunError, RunOptions, model_facts};
use crate::plan::Plan;
use crate::plan::slots::{Host, Lease, Pool};
use crate::probe::{self, MemoryProbe};
use crate::record::Recorded;
use crate::record::folder::{self, MANIFEST, PLAN, SPEC};
use crate::record::io::{json_pretty, write_atomic};
use crate::record::manifest::Manifest;
use crate::spec::LoadedSpec;
use std::path::{Path, PathBuf};

fn prepare_manifest(loaded: &LoadedSpec, plan: &Plan, probe: &dyn MemoryProbe, run_id: String) -> Manifest {
    let (host, os, cpu, cpus) = probe::host_facts();
    Manifest {
        servelab_version: env!("CARGO_PKG_VERSION").to_owned(),
        git_commit: env!("SERVELAB_GIT_COMMIT").to_owned(),
        run_id,
        spec_file: loaded.source.file.clone(),
        spec_hash: crate::record::short_hash(loaded.source.text.as_bytes()),
        overrides: loaded.overrides.clone(),
        plan: plan.clone(),
        host,
        os,
        cpu,
        cpus,
        mem_total_mb: probe::procfs::meminfo().map(|(t, _)| t as f64 / crate::record::MIB),
        memory_source: probe.source().as_str().to_owned(),
        gpu: probe.describe(),
        vllm_version: None,
        engine_command: plan.groups.first().map(|g| g.server.argv.clone()).unwrap_or_default(),
        model_config_hash: None,
        started_at: chrono::Local::now().to_rfc3339(),
        ended_at: None,
        metrics_version: crate::record::manifest::METRICS_VERSION,
        tune_pruned: Default::default(),
        gpu_idle_mb: Default::default(),
        shard: None,
        shards: Vec::new(),
    }
}

/// A run id is one path component, so `--run-id` can never write outside `--out`.
pub fn check_run_id(id: &str) -> Result<(), RunError> {
    let ok = !id.is_empty()
        && id != "."
        && id != ".."
        && id.len() <= 128
        && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        return Ok(());
    }
    Err(RunError::refused(format!(
        "--run-id {id:?} is not a plain folder name; use letters, digits, '.', '_' and '-' only (not '..'), at \
         most 128 characters"
    )))
}

/// The folder of a new run: `--run-id` as given (which must not exist yet), or a timestamp with the first free
/// `-N` suffix, so two runs started in the same second never share a folder.
fn new_run_dir(out: &Path, run_id: Option<&str>) -> Result<(PathBuf, String), RunError> {
    let io = |source| RunError::Output { path: out.display().to_string(), source };
    std::fs::create_dir_all(out).map_err(io)?;
    if let Some(id) = run_id {
        check_run_id(id)?;
        let dir = out.join(id);
        return match std::fs::create_dir(&dir) {
            Ok(()) => Ok((dir, id.to_owned())),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(RunError::refused(format!(
                "the run folder {} already exists; continue it with --resume {}, or choose another --run-id",
                dir.display(),
                dir.display()
            ))),
            Err(e) => Err(io(e)),
        };
    }
    let stamp = chrono::Local::now().format("%Y%m%d-%H%M%S").to_string();
    for n in 1u32.. {
        let id = if n == 1 { stamp.clone() } else { format!("{stamp}-{n}") };
        match std::fs::create_dir(out.join(&id)) {
            Ok(()) => return Ok((out.join(&id), id)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io(e)),
        }
    }
    unreachable!("u32 run-id suffixes exhausted")
}

/// Writes what was asked (spec, plan, manifest) before any server starts, so an unwritable output is an error
/// that costs nothing. On resume, a spec that differs from the recorded one is kept as `spec-N.yaml` first.
fn prepare(dir: &Path, loaded: &LoadedSpec, plan: &Plan, manifest: &Manifest) -> Result<(), RunError> {
    std::fs::create_dir_all(dir.join("servers"))
        .map_err(|source| RunError::Output { path: dir.display().to_string(), source })?;
    let spec_path = dir.join(SPEC);
    if let Ok(old) = std::fs::read(&spec_path)
        && old != loaded.source.text.as_bytes()
    {
        let n = (1..).find(|n| !dir.join(format!("spec-{n}.yaml")).exists()).unwrap_or(1);
        write_atomic(&dir.join(format!("spec-{n}.yaml")), &old)?;
    }
    crate::record::io::write_doc(&dir.join(PLAN), &json_pretty(plan))?;
    write_atomic(&spec_path, loaded.source.text.as_bytes())?;
    crate::record::io::write_doc(&dir.join(MANIFEST), &json_pretty(manifest))?;
    Ok(())
}

/// The largest `prompts_file` servelab reads (it is held in memory whole).
pub const MAX_PROMPTS_FILE: u64 = 256 * 1024 * 1024;

/// Files the plan reads: each `prompts_file` must be a regular file (not `/dev/zero`, not a folder) of at
/// most `MAX_PROMPTS_FILE` bytes. Run by `validate` too.
pub fn check_inputs(plan: &Plan) -> Result<Vec<String>, RunError> {
    let files: std::collections::BTreeSet<&str> =
        plan.points().filter_map(|(_, p)| p.client.as_ref()?.prompts_file.as_deref()).collect();
    for f in files {
        let meta = std::fs::metadata(f).map_err(|e| {
            RunError::refused(format!("`load.prompts_file` {f}: {e}; give the path of a text file, one prompt a line (relative paths are relative to the folder servelab runs in)"))
        })?;
        if !meta.is_file() {
            return Err(RunError::refused(format!(
                "`load.prompts_file` {f} is not a regular file; give a text file, one prompt a line"
            )));
        }
        if meta.len() > MAX_PROMPTS_FILE {
            return Err(RunError::refused(format!(
                "`load.prompts_file` {f} is {} MiB, more than the {} MiB servelab reads; use fewer prompts",
                meta.len() / (1024 * 1024),
                MAX_PROMPTS_FILE / (1024 * 1024)
            )));
        }
    }
    super::load::check_workloads(plan).map_err(|e| RunError::Preflight(e.into()))
}

/// The spec's own report templates (`templates:`), rendered against synthetic records of this plan
/// (`fake::synthetic`) with strict undefined, so that a misspelled variable or a filter that does not exist
/// is found in seconds instead of after the first server start. Run by `validate` too.
pub fn check_templates(loaded: &LoadedSpec, plan: &Plan) -> Result<(), RunError> {
    let Some(dir) = &loaded.spec.templates else { return Ok(()) };
    let dir = PathBuf::from(dir);
    if !dir.is_dir() {
        return Err(RunError::refused(format!(
            "`templates:` {} is not a folder; give the folder of your report templates (relative to the folder              servelab runs in), or remove `templates:` to use the built-in ones",
            dir.display()
        )));
    }
    let spec = &loaded.spec;
    let rec = super::fake::synthetic(plan);
    let manifest = prepare_manifest(loaded, plan, &crate::probe::Procfs, "preflight".to_owned());
    // Synthetic records stand in for real ones only where the built-in templates render them cleanly; a
    // report they cannot exercise is left to the run rather than refused on made-up data.
    if crate::report::derive::derive(spec, &manifest, &rec, None).is_err() {
        return Ok(());
    }
    match crate::report::derive::derive(spec, &manifest, &rec, Some(dir.clone())) {
        Ok(_) => Ok(()),
        Err(source) => Err(RunError::Templates { dir: dir.display().to_string(), source: Box::new(source) }),
    }
}

/// Checks that need no server: input files, report templates, ports free, the API key present.
pub(super) fn preflight(
    plan: &Plan,
    loaded: &LoadedSpec,
    host: &Host,
    port_offset: usize,
) -> Result<Option<String>, RunError> {
    let spec = &loaded.spec;
    for note in check_inputs(plan)? {
        eprintln!("{note}");
    }
    check_templates(loaded, plan)?;
    if host.binds() && spec.engine.kind == crate::spec::EngineKind::External {
        return Err(RunError::refused(
            "--parallel and --gpus start servers side by side; an `external` engine is one endpoint servelab does \
             not start: run it without them"
                .to_owned(),
        ));
    }
    // Each (host, port) a slot may use, and the spec port it came from: two base ports that reach one port
    // through their slots would put two servers on it at once.
    let mut seen: std::collections::BTreeMap<(String, u16), u16> = Default::default();
    for g in plan.groups.iter().filter(|g| g.server.kind != crate::spec::EngineKind::External) {
        for server in slot_servers(loaded, host, g, port_offset)? {
            match seen.get(&(server.host.clone(), server.port)) {
                Some(base) if *base != g.server.port => {
                    return Err(RunError::refused(format!(
                        "port {} is both a slot of port {base} and a slot of port {}: two servers could listen \
                         there at once; space `engine.port` values at least --parallel/--gpus slots apart, or use \
                         one port for every group",
                        server.port, g.server.port
                    )));
                }
                Some(_) => {}
                None => {
                    seen.insert((server.host.clone(), server.port), g.server.port);
                    crate::engine::ready::check_port_free(&server.host, server.port)
                        .map_err(|e| RunError::refused(e.to_string()))?;
                }
            }
        }
    }
    match &spec.engine.api_key_env {
        Some(name) => {
            let key = std::env::var(name).map_err(|_| RunError::refused(format!("`engine.api_key_env` names the environment variable {name}, which is not set; export it (servelab reads the key from there and never writes it down)")))?;
            crate::record::io::forbid(&key).map_err(|e| RunError::refused(format!("{e} (from {name})")))?;
            Ok(Some(key))
        }
        None => Ok(None),
    }
}

/// Opens the run folder: a new one, or the one being resumed with what it committed so far.
pub(super) fn open_run(
    loaded: &LoadedSpec,
    plan: &Plan,
    opts: &RunOptions,
    probe: &dyn MemoryProbe,
) -> Result<(PathBuf, Manifest, Recorded), RunError> {
    let Some(dir) = &opts.resume else {
        let (dir, id) = new_run_dir(&opts.out_root.join(&plan.name), opts.run_id.as_deref())?;
        let mut fresh = prepare_manifest(loaded, plan, probe, id);
        fresh.shard = opts.shard.clone();
        prepare(&dir, loaded, plan, &fresh)?;
        let rec = Recorded { metrics_version: fresh.metrics_version, ..Recorded::default() };
        return Ok((dir, fresh, rec));
    };
    let old = folder::read(dir).map_err(|e| RunError::refused(format!("cannot resume {}: {e}", dir.display())))?;
    // Edits of the same experiment resume (new points are measured, done ones kept); another experiment's spec
    // would mix two experiments' records in one folder.
    if old.manifest.plan.name != plan.name && !opts.force {
        return Err(RunError::refused(format!(
            "{} holds the experiment `{}`, but this spec is `{}`; start a new run, or pass --force to add this experiment to that folder",
            dir.display(),
            old.manifest.plan.name,
            plan.name
        )));
    }
    check_same_shard(dir, old.manifest.shard.as_ref(), opts.shard.as_ref())?;
    let fresh = prepare_manifest(loaded, plan, probe, old.manifest.run_id.clone());
    let model_hash = plan.groups.iter().find_map(model_facts).map(|m| m.config_hash);
    let changes = fingerprint_changes(&old.manifest, &fresh, model_hash.as_deref());
    if !changes.is_empty() && !opts.force {
        return Err(RunError::refused(format!(
            "the environment changed since {} was recorded ({}); its figures would not be comparable. Start a new run, or pass --force to resume anyway",
            dir.display(),
            changes.join("; ")
        )));
    }
    let mut manifest = old.manifest.clone();
    manifest.plan = plan.clone();
    manifest.overrides = loaded.overrides.clone();
    manifest.spec_hash = fresh.spec_hash.clone();
    manifest.ended_at = None;
    manifest.shard = opts.shard.clone();
    prepare(dir, loaded, plan, &manifest)?;
    Ok((dir.clone(), manifest, old.recorded))
}

/// A shard resumes only as the same shard (I/N), and a whole run only whole: another share of the groups would
/// leave the folder holding a mix no merge can account for.
fn check_same_shard(
    dir: &Path,
    old: Option<&crate::record::manifest::ShardOf>,
    now: Option<&crate::record::manifest::ShardOf>,
) -> Result<(), RunError> {
    let name = |s: Option<&crate::record::manifest::ShardOf>| match s {
        Some(s) => format!("shard {}/{}", s.index, s.count),
        None => "a whole run (no --shard)".to_owned(),
    };
    if old.map(|s| (s.index, s.count)) == now.map(|s| (s.index, s.count)) {
        return Ok(());
    }
    let fix = match old {
        Some(s) => format!("resume it with --shard {}/{}", s.index, s.count),
        None => "resume it without --shard".to_owned(),
    };
    Err(RunError::refused(format!("{} holds {}, not {}; {fix}", dir.display(), name(old), name(now))))
}

/// What differs between the recorded environment and this one (servelab, GPU, model; vLLM is checked once a
/// server answers).
fn fingerprint_changes(old: &Manifest, now: &Manifest, model_hash: Option<&str>) -> Vec<String> {
    let mut changes = Vec::new();
    if old.servelab_version != now.servelab_version {
        changes.push(format!("servelab {} → {}", old.servelab_version, now.servelab_version));
    }
    if old.gpu != now.gpu {
        changes.push(format!("GPU {:?} → {:?}", old.gpu, now.gpu));
    }
    if let (Some(a), Some(b)) = (&old.model_config_hash, model_hash)
        && a != b
    {
        changes.push(format!("model config {a} → {b}"));
    }
    changes
}

/// The group's server as each slot would run it: its own port per slot, checked before anything starts
/// (a command that ignores `{{ port }}`, a group needing more GPUs than were lent).
fn slot_servers(
    loaded: &LoadedSpec,
    host: &Host,
    g: &crate::plan::ServerGroup,
    port_offset: usize,
) -> Result<Vec<crate::plan::ServerConfig>, RunError> {
    let spec = &loaded.spec;
    let located =
        |e: crate::plan::PlanError| RunError::refused(loaded.source.error_at(&e.path, e.message, e.fix).to_string());
    if !host.binds() {
        if port_offset == 0 {
            return Ok(vec![g.server.clone()]);
        }
        let lease = Lease { slot: port_offset, gpus: Vec::new(), cpus: Vec::new() };
        return Ok(vec![crate::plan::server::slotted(spec, g, &lease, false).map_err(located)?]);
    }
    let mut pool = Pool::new(host);
    let need = crate::plan::slots::gpus_needed(spec.engine.gpus, g);
    pool.lease(need)
        .map_err(|e| RunError::refused(format!("{e}; lend more with --gpus, or lower its parallel size")))?;
    let mut out = Vec::new();
    for slot in 0..pool.capacity() {
        let lease = Lease { slot: slot + port_offset, gpus: Vec::new(), cpus: Vec::new() };
        let s = crate::plan::server::slotted(spec, g, &lease, false).map_err(located)?;
        out.push(s);
    }
    Ok(out)
}
