//! `servelab compare A B`: per metric and point, A against B with absolute and relative change, flagged
//! where the 95% intervals of the two runs do not overlap. A pure function of the two runs' analyses.

use crate::stats::kv::KvRow;
use crate::stats::rate::RateSweep;
use crate::stats::summary::ci95;
use crate::stats::sweep::{Cell, GroupSweep, RepeatStats};

#[derive(Clone, Copy, PartialEq)]
enum Better {
    Higher,
    Lower,
}

/// A compared metric: its name, which direction is better, and how to read it from a repeat.
type Metric = (&'static str, Better, fn(&RepeatStats) -> Option<f64>);

const METRICS: [Metric; 5] = [
    ("tok_s", Better::Higher, |r| Some(r.tok_s)),
    ("qps", Better::Higher, |r| Some(r.qps)),
    ("mean_e2e_s", Better::Lower, |r| r.e2e.map(|s| s.mean)),
    ("p95_e2e_s", Better::Lower, |r| r.e2e.map(|s| s.p95)),
    ("ttft_p50_s", Better::Lower, |r| r.ttft.map(|s| s.p50)),
];

pub struct Comparison {
    pub markdown: String,
    pub regressions: usize,
}

fn fmt(x: f64) -> String {
    if x.abs() >= 100.0 { format!("{x:.1}") } else { format!("{x:.4}") }
}

/// One metric of one cell; returns the table row and whether it is a significant regression.
fn metric_row((name, better, get): Metric, a: &Cell, b: &Cell, threshold: f64) -> Option<(String, bool)> {
    let (va, vb) = (get(a.head())?, get(b.head())?);
    let ia = ci95(&a.repeats.iter().filter_map(get).collect::<Vec<_>>());
    let ib = ci95(&b.repeats.iter().filter_map(get).collect::<Vec<_>>());
    Some(judged_row(&a.concurrency.to_string(), name, better, (va, ia), (vb, ib), threshold))
}

/// A row of the comparison table: `label`, the metric, A and B with their intervals, the change, and its
/// flag; and whether it is a significant regression.
fn judged_row(
    label: &str,
    name: &str,
    better: Better,
    (va, ia): (f64, Option<(f64, f64)>),
    (vb, ib): (f64, Option<(f64, f64)>),
    threshold: f64,
) -> (String, bool) {
    let delta = vb - va;
    let rel = if va != 0.0 { format!("{:+.1}%", 100.0 * delta / va) } else { "–".to_owned() };
    let worse = match better {
        Better::Higher => vb < va,
        Better::Lower => vb > va,
    };
    let (flag, regression) = match (ia, ib) {
        (Some((alo, ahi)), Some((blo, bhi))) if bhi < alo || blo > ahi => {
            (if worse { "**regression** (intervals apart)" } else { "improvement (intervals apart)" }, worse)
        }
        (Some(_), Some(_)) => ("within the intervals", false),
        // Without an interval a change can only be judged by its size: beyond the threshold it is flagged.
        _ if va != 0.0 && (delta / va).abs() > threshold => {
            let flag = if worse {
                "**regression** (no interval: beyond the threshold)"
            } else {
                "improvement (no interval: beyond the threshold)"
            };
            (flag, worse)
        }
        _ => ("no interval (fewer than 2 repeats), within the threshold", false),
    };
    let ci = |i: Option<(f64, f64)>| i.map(|(l, h)| format!("{}–{}", fmt(l), fmt(h))).unwrap_or_else(|| "–".to_owned());
    let signed = format!("{}{}", if delta >= 0.0 { "+" } else { "" }, fmt(delta));
    (
        format!(
            "| {label} | {name} | {} | {} | {} | {} | {signed} | {rel} | {flag} |",
            fmt(va),
            ci(ia),
            fmt(vb),
            ci(ib)
        ),
        regression,
    )
}

/// A group's sustainable-rate finding in the built-in templates' words (`rate_findings.md`).
fn sustainable_sentence(s: &RateSweep) -> String {
    super::markdown::environment(None)
        .render_str("{% import \"rate_findings.md\" as f %}{{ f.sustainable(s) }}", minijinja::context! { s })
        .unwrap_or_else(|e| format!("(the sustainable rate could not be worded: {e})"))
}

/// Open-loop cells matched by rate and arrival: goodput and p95 with their Student-t intervals over repeats,
/// attainment with the interval the rate report shows (Clopper–Pearson over the pooled requests, spanning the
/// Student-t interval over repeats where there are two or more; so one repeat of 400 requests is judged too);
/// then each group's sustainable-rate finding, A over B. Returns the regressions found.
fn rate_section(md: &mut String, a: &[RateSweep], b: &[RateSweep], threshold: f64) -> usize {
    let mut regressions = 0;
    putln!(
        md,
        "\n## Open loop\n\nCells matched by rate and arrival. A change is flagged when the two intervals do not overlap (attainment: the 95% interval of the rate report, Clopper–Pearson over the pooled requests spanning the Student-t interval over repeats where there are two or more; goodput and p95: Student-t 95% over repeats), or — without an interval — when it exceeds the threshold ({:.0}%).\n",
        threshold * 100.0
    );
    putln!(
        md,
        "| rate | metric | A | A 95% CI | B | B 95% CI | B − A | change | flag |\n|---:|---|---:|---|---:|---|---:|---:|---|"
    );
    for (ga, gb) in a.iter().zip(b) {
        for ca in &ga.cells {
            let label = format!("{} {}", crate::stats::trimmed(ca.rate, 3), ca.arrival);
            let Some(cb) = gb.cells.iter().find(|c| c.rate == ca.rate && c.arrival == ca.arrival) else {
                putln!(md, "| {label} | – | – | – | not in B | – | – | – | – |");
                continue;
            };
            let rows = [
                ("goodput_rps", Better::Higher, (ca.goodput_rps, ca.goodput_ci), (cb.goodput_rps, cb.goodput_ci)),
                (
                    "attainment",
                    Better::Higher,
                    (ca.attainment, Some(ca.attainment_ci)),
                    (cb.attainment, Some(cb.attainment_ci)),
                ),
                ("p95_e2e_s", Better::Lower, (ca.p95_e2e_s, ca.p95_e2e_ci), (cb.p95_e2e_s, cb.p95_e2e_ci)),
            ];
            for (name, better, va, vb) in rows {
                let (row, reg) = judged_row(&label, name, better, va, vb, threshold);
                regressions += usize::from(reg);
                putln!(md, "{row}");
            }
        }
        putln!(md, "\nA: {}  \nB: {}\n", sustainable_sentence(ga), sustainable_sentence(gb));
    }
    if a.len() != b.len() {
        putln!(
            md,
            "A has {} open-loop server configurations and B has {}; only the first {} were compared, in order.",
            a.len(),
            b.len(),
            a.len().min(b.len())
        );
    }
    regressions
}

/// What `compare` reads of one run.
pub struct Figures<'a> {
    pub kv: &'a [KvRow],
    pub sweeps: &'a [GroupSweep],
    pub rates: &'a [RateSweep],
}

/// A run's figures as `compare` reads them: re-derived from its raw records, with the version of the derive
/// code that rendered its derived files.
pub struct RunFigures {
    pub kv: Vec<KvRow>,
    pub sweeps: Vec<GroupSweep>,
    pub rates: Vec<RateSweep>,
    /// `derived_version` of its derived JSON files, if it has any.
    pub derived_version: Option<u64>,
    /// The manifest's `metrics_version`: what its figures mean.
    pub metrics_version: u32,
}

impl RunFigures {
    pub fn figures(&self) -> Figures<'_> {
        Figures { kv: &self.kv, sweeps: &self.sweeps, rates: &self.rates }
    }
}

/// Reads a run folder's raw records and derives what `compare` compares.
pub fn open(dir: &std::path::Path) -> Result<RunFigures, super::ReportError> {
    let (loaded, manifest, rec) = super::open_run(dir)?;
    let spec = &loaded.spec;
    let started = rec.started_servers();
    let sweeps = crate::stats::sweep::of_run(&rec, spec);
    let rates = crate::stats::rate::analyze(&rec.points, &rec.requests, spec.slo.as_ref());
    let derived_version = super::derive::version_in(dir);
    let metrics_version = manifest.metrics_version;
    Ok(RunFigures { kv: crate::stats::kv::rows(&started), sweeps, rates, derived_version, metrics_version })
}

/// `threshold`: the relative change flagged where a cell has no interval (one repeat), e.g. 0.10.
pub fn compare(a_name: &str, b_name: &str, a: Figures, b: Figures, threshold: f64) -> Comparison {
    let (a, b) = ((a.kv, a.sweeps, a.rates), (b.kv, b.sweeps, b.rates));
    let mut md = String::new();
    let mut regressions = 0;
    putln!(md, "# servelab compare\n\nA: `{a_name}`  \nB: `{b_name}`\n");
    if !a.1.is_empty() || !b.1.is_empty() {
        putln!(
            md,
            "## Load\n\nHeadline repeat of each cell; intervals are Student-t 95% over repeats. A change is flagged when the two intervals do not overlap, or — where a cell has no interval — when it exceeds the threshold ({:.0}%).\n",
            threshold * 100.0
        );
        putln!(
            md,
            "| concurrency | metric | A | A 95% CI | B | B 95% CI | B − A | change | flag |\n|---:|---|---:|---|---:|---|---:|---:|---|"
        );
        for (ga, gb) in a.1.iter().zip(b.1.iter()) {
            for ca in &ga.cells {
                let Some(cb) = gb
                    .cells
                    .iter()
                    .find(|c| c.label == ca.label)
                    .or_else(|| gb.cells.iter().find(|c| c.concurrency == ca.concurrency))
                else {
                    putln!(md, "| {} | – | – | – | not in B | – | – | – | – |", ca.concurrency);
                    continue;
                };
                for m in METRICS {
                    if let Some((row, reg)) = metric_row(m, ca, cb, threshold) {
                        regressions += usize::from(reg);
                        putln!(md, "{row}");
                    }
                }
            }
        }
        if a.1.len() != b.1.len() {
            putln!(
                md,
                "\nA has {} server configurations under load and B has {}; only the first {} were compared, in order.",
                a.1.len(),
                b.1.len(),
                a.1.len().min(b.1.len())
            );
        }
    }
    if !a.2.is_empty() || !b.2.is_empty() {
        regressions += rate_section(&mut md, a.2, b.2, threshold);
    }
    if !a.0.is_empty() || !b.0.is_empty() {
        putln!(
            md,
            "\n## Server starts\n\nOne start per length and run, so no intervals: changes are shown, not judged.\n"
        );
        putln!(md, "| max_model_len | metric | A | B | B − A | change |\n|---:|---|---:|---:|---:|---:|");
        for ra in a.0 {
            let Some(rb) = b.0.iter().find(|r| r.max_model_len == ra.max_model_len) else { continue };
            let pairs = [
                ("memory_mb", ra.mem_used_mb, rb.mem_used_mb),
                ("kv_cache_tokens", ra.kv_cache_tokens.map(|t| t as f64), rb.kv_cache_tokens.map(|t| t as f64)),
                ("max_concurrency", ra.max_concurrency, rb.max_concurrency),
                ("ready_s", ra.ready_s, rb.ready_s),
            ];
            for (name, va, vb) in pairs {
                if let (Some(va), Some(vb)) = (va, vb) {
                    let rel = if va != 0.0 { format!("{:+.1}%", 100.0 * (vb - va) / va) } else { "–".to_owned() };
                    putln!(
                        md,
                        "| {} | {name} | {} | {} | {} | {rel} |",
                        ra.max_model_len.unwrap_or(0),
                        fmt(va),
                        fmt(vb),
                        fmt(vb - va)
                    );
                }
            }
        }
    }
    putln!(md, "\n{regressions} significant regression{}.", if regressions == 1 { "" } else { "s" });
    Comparison { markdown: md, regressions }
}
