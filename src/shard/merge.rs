//! `servelab merge --out DIR RUN...`: the shards' committed records unioned into one run folder, every report
//! derived from it by the same function `servelab report` uses. Which run each group comes from, and whether
//! the runs belong together, is decided in `owners` before anything is written; the folder is built beside
//! DIR and renamed into place, so a failed merge leaves no half-written result.

use super::owners::{self, Part, Prefer, Refusal};
use crate::record::Recorded;
use crate::record::folder::{self, JOURNAL, MANIFEST, PLAN, POINTS, REQUESTS, SAMPLES, SPEC};
use crate::record::io::{RecordError, append_jsonl, json_pretty, write_atomic};
use crate::record::journal::{Entry, Journal};
use crate::record::manifest::{Manifest, ShardEnv};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    #[error(
        "cannot read {run} as a run folder: {source}; give folders that `servelab run` wrote (out/<name>/<run-id>)"
    )]
    Read {
        run: String,
        #[source]
        source: RecordError,
    },
    #[error("{0}")]
    Refused(#[from] Refusal),
    #[error("the spec recorded in the shards no longer plans: {0}")]
    Spec(#[from] crate::spec::SpecError),
    #[error("{0}")]
    Write(#[from] RecordError),
    #[error(
        "cannot write the merged folder {path}: {source}; check that its parent is writable, or choose another --out"
    )]
    Out {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} exists and is not a folder `servelab merge` wrote; choose another --out, or move it away")]
    Exists(String),
    #[error(
        "cannot render the merged folder's reports: {0}; the records are merged, `servelab report DIR` re-renders them once it is fixed"
    )]
    Report(#[from] crate::report::ReportError),
}

struct Read {
    part: Part,
    folder: folder::RunFolder,
    entries: Vec<Entry>,
}

fn entry_group(e: &Entry) -> &str {
    match e {
        Entry::ServerStart { group, .. }
        | Entry::ServerEnd { group, .. }
        | Entry::PointStart { group, .. }
        | Entry::PointDone { group, .. } => group,
    }
}

fn read_run(path: &Path) -> Result<Read, MergeError> {
    let err = |source| MergeError::Read { run: path.display().to_string(), source };
    let folder = folder::read(path).map_err(err)?;
    let entries = Journal::new(path).read().map_err(err)?;
    let mut points = BTreeMap::new();
    for e in &entries {
        if let Entry::PointDone { point, at, .. } = e {
            points.insert(point.clone(), at.clone());
        }
    }
    let servers = folder.recorded.servers.iter().map(|s| s.id.clone()).collect();
    let part = Part { path: path.to_path_buf(), manifest: folder.manifest.clone(), points, servers };
    Ok(Read { part, folder, entries })
}

/// The runs in a fixed order whatever order they were named in: by shard index (whole runs first), run id, path.
fn read_all(runs: &[PathBuf]) -> Result<Vec<Read>, MergeError> {
    let mut all = runs.iter().map(|r| read_run(r)).collect::<Result<Vec<_>, _>>()?;
    all.sort_by(|a, b| {
        let key = |r: &Read| (r.part.manifest.shard.as_ref().map(|s| s.index), r.part.manifest.run_id.clone());
        key(a).cmp(&key(b)).then_with(|| a.part.path.cmp(&b.part.path))
    });
    Ok(all)
}

/// The runs read and checked, each group's owner chosen, and what is missing: everything a merge knows before
/// it writes anything.
pub struct Prepared {
    all: Vec<Read>,
    plan: crate::plan::Plan,
    groups: Vec<(String, Vec<String>)>,
    owners: BTreeMap<String, usize>,
    /// Shard indices of `0..N` no run given holds.
    pub missing_shards: Vec<usize>,
    /// The plan's points no run committed.
    pub missing_points: Vec<String>,
    /// Points whose latest attempt failed.
    pub failed_points: Vec<String>,
}

/// Reads `runs`, refuses runs that are not one experiment's or that measured a group twice (unless `prefer`
/// says which wins), and finds what is missing.
pub fn prepare(runs: &[PathBuf], prefer: Option<&Prefer>) -> Result<Prepared, MergeError> {
    let all = read_all(runs)?;
    // `--prefer RUN` names a run however it is written (`./a`, `a/`, an absolute path): the run it is.
    let same = |a: &Path, b: &Path| a == b || std::fs::canonicalize(a).ok() == std::fs::canonicalize(b).ok();
    let prefer = match prefer {
        Some(Prefer::Run(r)) => {
            Some(Prefer::Run(runs.iter().find(|p| same(p, r)).cloned().unwrap_or_else(|| r.clone())))
        }
        other => other.cloned(),
    };
    let prefer = prefer.as_ref();
    let parts: Vec<Part> = all.iter().map(|r| clone_part(&r.part)).collect();
    owners::check_compatible(&parts)?;
    let first = &all[0];
    let spec_path = first.part.path.join(SPEC).display().to_string();
    let loaded = crate::spec::load_str(&spec_path, &first.folder.spec_text, &first.folder.manifest.overrides)?;
    let plan = crate::plan::build_located(&loaded)?;
    let groups: Vec<(String, Vec<String>)> =
        plan.groups.iter().map(|g| (g.id.clone(), g.points.iter().map(|p| p.id.clone()).collect())).collect();
    let owners = owners::owners(&groups, &parts, prefer)?;
    let (missing_shards, missing_points) = owners::missing(&groups, &parts, &owners);
    let failed_points = failed(&all, &owners, &groups);
    Ok(Prepared { all, plan, groups, owners, missing_shards, missing_points, failed_points })
}

impl Prepared {
    pub fn runs(&self) -> usize {
        self.all.len()
    }

    /// Whether every point of the plan was merged and its latest attempt measured ok.
    pub fn complete(&self) -> bool {
        self.missing_shards.is_empty() && self.missing_points.is_empty() && self.failed_points.is_empty()
    }

    /// Writes the merged folder to `out` and derives every report from it; returns the derived files' names.
    pub fn write(&self, out: &Path) -> Result<Vec<String>, MergeError> {
        let stage = staging(out)?;
        let id = out.file_name().map_or_else(|| "merged".to_owned(), |n| n.to_string_lossy().into_owned());
        let manifest = merged_manifest(&self.all, &self.plan, &self.owners, &self.groups, id);
        write_folder(&stage, &self.all, &self.groups, &self.owners, &manifest)?;
        let (loaded, manifest, rec) = crate::report::open_run(&stage)?;
        let templates = loaded.spec.templates.as_ref().map(PathBuf::from);
        let (files, _) = crate::report::derive::derive(&loaded.spec, &manifest, &rec, templates)?;
        for (name, bytes) in &files {
            write_atomic(&stage.join(name), bytes)?;
        }
        replace(&stage, out)?;
        Ok(files.into_iter().map(|(n, _)| n).collect())
    }
}

fn clone_part(p: &Part) -> Part {
    Part { path: p.path.clone(), manifest: p.manifest.clone(), points: p.points.clone(), servers: p.servers.clone() }
}

/// Points of the owned groups whose latest attempt (in their owner's journal) failed.
fn failed(all: &[Read], owners: &BTreeMap<String, usize>, groups: &[(String, Vec<String>)]) -> Vec<String> {
    let mut out = Vec::new();
    for (group, points) in groups {
        let Some(&i) = owners.get(group) else { continue };
        let j = &all[i].folder.journal;
        out.extend(points.iter().filter(|p| j.attempts.contains_key(*p) && !j.done.contains(*p)).cloned());
    }
    out
}

/// The merged manifest: the first run's fingerprint, the whole plan, and each run's environment.
fn merged_manifest(
    all: &[Read],
    plan: &crate::plan::Plan,
    owners: &BTreeMap<String, usize>,
    groups: &[(String, Vec<String>)],
    run_id: String,
) -> Manifest {
    let mut m = all[0].folder.manifest.clone();
    let hosts: BTreeSet<&str> = all.iter().map(|r| r.folder.manifest.host.as_str()).collect();
    m.run_id = run_id;
    m.plan = plan.clone();
    m.host = hosts.into_iter().collect::<Vec<_>>().join(", ");
    m.vllm_version = all.iter().find_map(|r| r.folder.manifest.vllm_version.clone());
    m.model_config_hash = all.iter().find_map(|r| r.folder.manifest.model_config_hash.clone());
    m.engine_command = plan.groups.first().map(|g| g.server.argv.clone()).unwrap_or_default();
    m.started_at = all.iter().map(|r| r.folder.manifest.started_at.clone()).min().unwrap_or_default();
    let ends: Option<Vec<String>> = all.iter().map(|r| r.folder.manifest.ended_at.clone()).collect();
    m.ended_at = ends.and_then(|e| e.into_iter().max());
    m.tune_pruned = Default::default();
    m.gpu_idle_mb = Default::default();
    m.shard = None;
    m.shards = all
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let f = &r.folder.manifest;
            let owned = groups.iter().filter(|(g, _)| owners.get(g) == Some(&i)).map(|(g, _)| g.clone()).collect();
            ShardEnv {
                index: f.shard.as_ref().map(|s| s.index),
                count: f.shard.as_ref().map(|s| s.count),
                run_id: f.run_id.clone(),
                host: f.host.clone(),
                gpu: f.gpu.clone(),
                cpus: f.cpus,
                vllm_version: f.vllm_version.clone(),
                started_at: f.started_at.clone(),
                ended_at: f.ended_at.clone(),
                groups: owned,
            }
        })
        .collect();
    m
}

/// The raw records of the owned groups, in plan order (as one serial run writes them), with their journal lines
/// and server folders.
fn write_folder(
    dir: &Path,
    all: &[Read],
    groups: &[(String, Vec<String>)],
    owners: &BTreeMap<String, usize>,
    manifest: &Manifest,
) -> Result<(), MergeError> {
    write_atomic(&dir.join(SPEC), all[0].folder.spec_text.as_bytes())?;
    crate::record::io::write_doc(&dir.join(PLAN), &json_pretty(&manifest.plan))?;
    crate::record::io::write_doc(&dir.join(MANIFEST), &json_pretty(manifest))?;
    let mut journal = Vec::new();
    for (i, r) in all.iter().enumerate() {
        journal.extend(r.entries.iter().filter(|e| owners.get(entry_group(e)) == Some(&i)).cloned());
    }
    append_jsonl(&dir.join(JOURNAL), &journal, true)?;
    let mut rec = Recorded::default();
    for (group, points) in groups {
        let Some(&i) = owners.get(group) else { continue };
        let from = &all[i].folder.recorded;
        let ids: BTreeSet<&str> = points.iter().map(String::as_str).collect();
        rec.points.extend(from.points.iter().filter(|p| &p.group == group).cloned());
        rec.requests.extend(from.requests.iter().filter(|r| ids.contains(r.point.as_str())).cloned());
        rec.samples.extend(from.samples.iter().filter(|s| ids.contains(s.point.as_str())).cloned());
        copy_server(&all[i].part.path, dir, group)?;
    }
    append_jsonl(&dir.join(POINTS), &rec.points, false)?;
    append_jsonl(&dir.join(REQUESTS), &rec.requests, false)?;
    append_jsonl(&dir.join(SAMPLES), &rec.samples, true)?;
    Ok(())
}

/// `servers/<group>/` of the owning run, file by file (startup records in any form, the server's log).
fn copy_server(from_run: &Path, to_run: &Path, group: &str) -> Result<(), MergeError> {
    let (from, to) = (folder::server_dir(from_run, group), folder::server_dir(to_run, group));
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| MergeError::Out { path, source }
    };
    let Ok(files) = std::fs::read_dir(&from) else { return Ok(()) };
    std::fs::create_dir_all(&to).map_err(io(&to))?;
    for f in files {
        let f = f.map_err(io(&from))?.path();
        if let (true, Some(name)) = (f.is_file(), f.file_name()) {
            std::fs::copy(&f, to.join(name)).map_err(io(&f))?;
        }
    }
    Ok(())
}

/// An empty folder beside `out` to build the merge in.
fn staging(out: &Path) -> Result<PathBuf, MergeError> {
    let name = out.file_name().map_or_else(|| "merged".into(), |n| n.to_string_lossy().into_owned());
    let parent = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let stage = parent.join(format!(".{name}.merging-{}", std::process::id()));
    let io = |source| MergeError::Out { path: stage.display().to_string(), source };
    if stage.exists() {
        std::fs::remove_dir_all(&stage).map_err(io)?;
    }
    std::fs::create_dir_all(stage.join("servers")).map_err(io)?;
    Ok(stage)
}

/// Moves the staged folder to `out`. An `out` that exists is replaced only when it is an earlier merge (its
/// manifest lists shards) or empty: a merge job run again after a shard was re-run writes the new result.
fn replace(stage: &Path, out: &Path) -> Result<(), MergeError> {
    let io = |source| MergeError::Out { path: out.display().to_string(), source };
    if out.exists() {
        let empty = std::fs::read_dir(out).map(|mut d| d.next().is_none()).unwrap_or(false);
        let merged = folder::read_manifest(out).is_ok_and(|m| !m.shards.is_empty());
        if !empty && !merged {
            return Err(MergeError::Exists(out.display().to_string()));
        }
        std::fs::remove_dir_all(out).map_err(io)?;
    }
    std::fs::rename(stage, out).map_err(io)
}
