//! `servelab report --check RUN`: whether a run folder's derived files can be trusted without trusting their
//! prose. Three checks, each listing what disagrees:
//! 1. every derived file equals what the raw records give now (nothing edited by hand, nothing stale);
//! 2. the sweep's per-repeat counts and whole-phase rates, recomputed from the raw request records by a
//!    second, plainer path than `stats::sweep` (no window, no summaries: sums and divisions);
//! 3. every finding holds against its figures: the knee in `sweep.json` as written against that file's own
//!    cells (`Knee::holds`), the prefix-cache statements against the cells of that same file
//!    (`PrefixReport::holds`), and the KV findings against the rows of the startup records (`KvFindings::holds`;
//!    they are in no JSON file, so they are recomputed from the records, and check 1 has already shown that
//!    the KV notes as written are the words of exactly these findings).

use crate::record::Recorded;
use crate::record::manifest::Manifest;
use crate::spec::Spec;
use crate::stats::sweep::GroupSweep;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One disagreement: the file it is in, and what.
#[derive(Clone, Debug, PartialEq)]
pub struct Disagreement {
    pub file: String,
    pub what: String,
}

fn bad(file: &str, what: String) -> Disagreement {
    Disagreement { file: file.to_owned(), what }
}

/// The KV findings of the started servers against their rows.
fn kv_holds(spec: &Spec, rec: &Recorded) -> Vec<Disagreement> {
    let started = rec.started_servers();
    if started.is_empty() {
        return Vec::new();
    }
    let request_len = spec.report_options.request_len;
    let findings = crate::stats::kv::findings(&started, request_len);
    let rows = crate::stats::kv::rows(&started);
    findings.holds(&rows, request_len).into_iter().map(|what| bad("kv_cache_scaling_notes.md", what)).collect()
}

/// Runs the three checks; an error only when the records themselves cannot be derived.
pub fn check(
    dir: &Path,
    spec: &Spec,
    manifest: &Manifest,
    rec: &Recorded,
    templates: Option<PathBuf>,
) -> Result<Vec<Disagreement>, super::ReportError> {
    let (files, _) = super::derive::derive(spec, manifest, rec, templates)?;
    let mut out = Vec::new();
    for (name, bytes) in &files {
        match crate::record::io::read_capped(&dir.join(name), 1 << 30) {
            Ok(on_disk) if on_disk == *bytes => {}
            Ok(_) => {
                out.push(bad(name, "differs from what the raw records give (`servelab report` re-renders it)".into()))
            }
            Err(e) => out.push(bad(name, format!("cannot be read: {e:?}"))),
        }
    }
    out.extend(kv_holds(spec, rec));
    let written = match std::fs::read(dir.join("sweep.json")) {
        Ok(bytes) => match serde_json::from_slice::<Vec<GroupSweep>>(&bytes) {
            Ok(groups) => groups,
            Err(e) => {
                out.push(bad("sweep.json", format!("does not parse: {e}")));
                return Ok(out);
            }
        },
        // A run without load points has no sweep.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => {
            out.push(bad("sweep.json", format!("cannot be read: {e}")));
            return Ok(out);
        }
    };
    out.extend(plain_figures(&written, rec));
    for g in &written {
        for what in g.knee.holds(&g.cells, &spec.knee) {
            out.push(bad("sweep.json", format!("group {}: {what}", g.group)));
        }
    }
    let prefix = crate::stats::prefix::analyze(&written, &|group: &str| super::derive::server_of(manifest, group));
    for what in prefix.holds() {
        out.push(bad("sweep.json", format!("prefix cache: {what}")));
    }
    Ok(out)
}

/// What the raw records give for one repeat, by sums alone.
#[derive(Default)]
struct Plain {
    requests: usize,
    ok: usize,
    tokens: u64,
}

/// Each repeat's request count, successes, tokens and whole-phase rates against the raw records.
fn plain_figures(groups: &[GroupSweep], rec: &Recorded) -> Vec<Disagreement> {
    let mut by_point: BTreeMap<(&str, u32), Plain> = BTreeMap::new();
    for r in rec.requests.iter().filter(|r| !r.warmup && !r.tail) {
        let p = by_point.entry((r.point.as_str(), r.attempt)).or_default();
        p.requests += 1;
        if r.ok() {
            p.ok += 1;
            p.tokens += u64::from(r.completion_tokens.unwrap_or(r.chunks));
        }
    }
    let walls: BTreeMap<(&str, u32), f64> =
        rec.points.iter().map(|p| ((p.point.as_str(), p.attempt), p.wall_s)).collect();
    let mut out = Vec::new();
    for g in groups {
        for c in &g.cells {
            for r in &c.repeats {
                let key = (r.point.as_str(), r.attempt);
                let plain = by_point.get(&key).unwrap_or(&Plain::default()).requests;
                let p = by_point.get(&key);
                let (ok, tokens) = p.map_or((0, 0), |p| (p.ok, p.tokens));
                let place = format!("group {} point {} attempt {}", g.group, r.point, r.attempt);
                if r.requests != plain || r.ok != ok || r.completion_tokens != tokens {
                    out.push(bad(
                        "sweep.json",
                        format!(
                            "{place}: {} requests, {} ok, {} tokens written; the records hold {plain}, {ok}, {tokens}",
                            r.requests, r.ok, r.completion_tokens
                        ),
                    ));
                }
                let Some(wall) = walls.get(&key) else {
                    out.push(bad("sweep.json", format!("{place}: no such point in points.jsonl")));
                    continue;
                };
                let tok_s = tokens as f64 / wall.max(1e-9);
                if (r.phase_tok_s - tok_s).abs() > 1e-6 * tok_s.max(1.0) {
                    out.push(bad(
                        "sweep.json",
                        format!("{place}: whole-phase {:.3} tok/s written; the records give {tok_s:.3}", r.phase_tok_s),
                    ));
                }
            }
        }
    }
    out
}
