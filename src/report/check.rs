//! `servelab report --check RUN`: whether a run folder's derived files can be trusted without trusting their
//! prose. Three checks, each listing what disagrees:
//! 1. every derived file equals what the raw records give now (nothing edited by hand, nothing stale);
//! 2. the sweep's per-repeat counts and whole-phase rates, recomputed from the raw request records by a
//!    second, plainer path than `stats::sweep` (no window, no summaries: sums and divisions);
//! 3. every finding holds against its figures: the knee in `sweep.json` as written against that file's own
//!    cells (`Knee::holds`) and each cell's notes against its figures (`notes_hold`); the prefix-cache
//!    statements against the cells of that same file (`PrefixReport::holds`); the KV findings against the rows
//!    of the startup records (`KvFindings::holds`; they are in no JSON file, so they are recomputed from the
//!    records, and check 1 has already shown that the KV notes as written are the words of exactly these
//!    findings); every open-loop finding in `rate_sweep.json` against its cells (`RateSweep::holds`, which also
//!    holds goodput within the achieved rate), every probe and stop of `rate_search.json` against the search
//!    rule and the cells at the probed rates (`SearchState::holds`), and the decision in `tune.json` against
//!    that file's gain figures (`Decision::holds`, which holds the search's account against the full grid
//!    too: `Saved::holds`), and screening's counts and short-phase noise against the rows
//!    (`Screening::holds`).

use crate::record::Recorded;
use crate::record::manifest::Manifest;
use crate::spec::Spec;
use crate::stats::rate::RateSweep;
use crate::stats::search::SearchState;
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
    out.extend(tune_decision(dir));
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
    if let Some(written) = read_json::<Vec<GroupSweep>>(dir, "sweep.json", &mut out) {
        out.extend(sweep_holds(&written, spec, manifest, rec));
    }
    let rates = read_json::<Vec<RateSweep>>(dir, "rate_sweep.json", &mut out).unwrap_or_default();
    for g in &rates {
        for what in g.holds(spec.slo.as_ref()) {
            out.push(bad("rate_sweep.json", format!("group {}: {what}", g.group)));
        }
    }
    for s in read_json::<Vec<WrittenSearch>>(dir, "rate_search.json", &mut out).unwrap_or_default() {
        let cells = rates.iter().find(|g| g.group == s.group).map_or(&[][..], |g| &g.cells[..]);
        let target = spec.slo.as_ref().map(|s| s.attainment);
        for what in s.search.holds(&s.plan.ladder, cells, target) {
            out.push(bad("rate_search.json", format!("group {}: {what}", s.group)));
        }
    }
    Ok(out)
}

/// `sweep.json` as written: its counts against the raw records, its knee and cell notes against its cells,
/// and the prefix-cache statements drawn from it.
fn sweep_holds(written: &[GroupSweep], spec: &Spec, manifest: &Manifest, rec: &Recorded) -> Vec<Disagreement> {
    let mut out = plain_figures(written, rec);
    let precision = manifest.plan.precision.map(|p| p.rel_ci);
    for g in written {
        for what in g.knee.holds(&g.cells, &spec.knee) {
            out.push(bad("sweep.json", format!("group {}: {what}", g.group)));
        }
        for c in &g.cells {
            for what in crate::stats::sweep::notes_hold(c, &g.knee, precision) {
                out.push(bad("sweep.json", format!("group {}: {what}", g.group)));
            }
        }
    }
    let prefix = crate::stats::prefix::analyze(written, &|group: &str| super::derive::server_of(manifest, group));
    for what in prefix.holds() {
        out.push(bad("sweep.json", format!("prefix cache: {what}")));
    }
    out
}

/// The decision written in `tune.json` against the rows written beside it; nothing without a tune.
fn tune_decision(dir: &Path) -> Vec<Disagreement> {
    let mut out = Vec::new();
    if let Some(t) = read_json::<crate::stats::tune::TuneReport>(dir, "tune.json", &mut out) {
        out.extend(t.decision.holds(&t).into_iter().map(|what| bad("tune.json", what)));
        out.extend(t.screening.iter().flat_map(|s| s.holds(&t.rows)).map(|what| bad("tune.json", what)));
    }
    out
}

/// One group's entry of `rate_search.json`.
#[derive(serde::Deserialize)]
struct WrittenSearch {
    group: String,
    plan: crate::record::plan::RateSearchPlan,
    search: SearchState,
}

/// A derived JSON file as written; None when the run has none (a run without such points) or it cannot be
/// read or parsed (then said in `out`).
fn read_json<T: serde::de::DeserializeOwned>(dir: &Path, name: &str, out: &mut Vec<Disagreement>) -> Option<T> {
    match std::fs::read(dir.join(name)) {
        Ok(bytes) => match serde_json::from_slice::<T>(&bytes) {
            Ok(v) => Some(v),
            Err(e) => {
                out.push(bad(name, format!("does not parse: {e}")));
                None
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            out.push(bad(name, format!("cannot be read: {e}")));
            None
        }
    }
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
                let (plain, ok, tokens) = by_point.get(&key).map_or((0, 0, 0), |p| (p.requests, p.ok, p.tokens));
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
