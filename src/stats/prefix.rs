//! Prefix caching: TTFT against the length of the prefix every prompt shares, per server configuration (e.g.
//! caching on and off), with the prefix-cache hit rate that explains it. Each cell's TTFT is the mean of its
//! repeats' TTFT medians with a Student-t 95% interval; two cells differ only when their intervals do not
//! overlap, else the report says no difference was shown.

use super::summary::{ci95, mean};
use super::sweep::GroupSweep;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PrefixRow {
    pub group: String,
    /// The server's grid values (`caching=true`).
    pub server: String,
    pub shared_prefix_tokens: u32,
    pub repeats: usize,
    pub ttft_p50_s: f64,
    pub ttft_ci: Option<(f64, f64)>,
    /// Hits over queries (tokens) of vLLM's prefix-cache counters over the cell's phases.
    pub hit_rate: Option<f64>,
}

/// Where one cell's TTFT interval lies against another's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Difference {
    /// The whole interval lies below the other's.
    Lower,
    /// The whole interval lies above the other's.
    Higher,
    /// The intervals overlap: no difference is claimed.
    Overlap,
    /// One of the cells has a single repeat: nothing is claimed.
    NoInterval,
}

/// A difference statement, built only by `findings` with the figures it compares.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PrefixFinding {
    /// One server: its longest shared prefix against none.
    AgainstNone {
        server: String,
        prefix_tokens: u32,
        ttft_ms: f64,
        none_ttft_ms: f64,
        /// `ttft_ms / none_ttft_ms`.
        ratio: f64,
        difference: Difference,
    },
    /// One shared-prefix length: the first server against another.
    Between {
        prefix_tokens: u32,
        first: String,
        first_ttft_ms: f64,
        other: String,
        other_ttft_ms: f64,
        /// `first_ttft_ms / other_ttft_ms`.
        ratio: f64,
        difference: Difference,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PrefixReport {
    pub rows: Vec<PrefixRow>,
    pub findings: Vec<PrefixFinding>,
}

pub fn analyze(groups: &[GroupSweep], server_of: &dyn Fn(&str) -> String) -> PrefixReport {
    let mut rows = Vec::new();
    for g in groups {
        for c in &g.cells {
            let medians: Vec<f64> = c.repeats.iter().filter_map(|r| r.ttft.map(|t| t.p50)).collect();
            if medians.is_empty() {
                continue;
            }
            let hits: f64 = c.repeats.iter().filter_map(|r| r.prefix_hits).sum();
            let queries: f64 = c.repeats.iter().filter_map(|r| r.prefix_queries).sum();
            rows.push(PrefixRow {
                group: g.group.clone(),
                server: server_of(&g.group),
                shared_prefix_tokens: c.shared_prefix_tokens,
                repeats: medians.len(),
                ttft_p50_s: mean(&medians),
                ttft_ci: ci95(&medians),
                hit_rate: (queries > 0.0).then(|| hits / queries),
            });
        }
    }
    rows.sort_by(|a, b| (&a.server, a.shared_prefix_tokens).cmp(&(&b.server, b.shared_prefix_tokens)));
    let findings = findings(&rows);
    PrefixReport { rows, findings }
}

/// Lower, higher or not shown apart, from the two intervals (without intervals nothing is claimed).
fn compare(a: &PrefixRow, b: &PrefixRow) -> Difference {
    match (a.ttft_ci, b.ttft_ci) {
        (Some(x), Some(y)) if x.1 < y.0 => Difference::Lower,
        (Some(x), Some(y)) if x.0 > y.1 => Difference::Higher,
        (Some(_), Some(_)) => Difference::Overlap,
        _ => Difference::NoInterval,
    }
}

/// The servers in the rows' order (rows are sorted by server).
fn servers(rows: &[PrefixRow]) -> Vec<&str> {
    let mut servers: Vec<&str> = rows.iter().map(|r| r.server.as_str()).collect();
    servers.dedup();
    servers
}

/// Per server, the longest shared prefix against none; per prefix length, the first server against each
/// other one.
fn findings(rows: &[PrefixRow]) -> Vec<PrefixFinding> {
    let mut out = Vec::new();
    let servers = servers(rows);
    for s in &servers {
        let mine: Vec<&PrefixRow> = rows.iter().filter(|r| r.server == *s).collect();
        let (Some(none), Some(long)) = (mine.iter().find(|r| r.shared_prefix_tokens == 0), mine.last()) else {
            continue;
        };
        if long.shared_prefix_tokens == 0 {
            continue;
        }
        out.push(PrefixFinding::AgainstNone {
            server: (*s).to_owned(),
            prefix_tokens: long.shared_prefix_tokens,
            ttft_ms: long.ttft_p50_s * 1e3,
            none_ttft_ms: none.ttft_p50_s * 1e3,
            ratio: long.ttft_p50_s / none.ttft_p50_s,
            difference: compare(long, none),
        });
    }
    if let Some(first) = servers.first() {
        for other in servers.iter().skip(1) {
            for a in rows.iter().filter(|r| r.server == *first && r.shared_prefix_tokens > 0) {
                let Some(b) =
                    rows.iter().find(|r| r.server == *other && r.shared_prefix_tokens == a.shared_prefix_tokens)
                else {
                    continue;
                };
                out.push(PrefixFinding::Between {
                    prefix_tokens: a.shared_prefix_tokens,
                    first: (*first).to_owned(),
                    first_ttft_ms: a.ttft_p50_s * 1e3,
                    other: (*other).to_owned(),
                    other_ttft_ms: b.ttft_p50_s * 1e3,
                    ratio: a.ttft_p50_s / b.ttft_p50_s,
                    difference: compare(a, b),
                });
            }
        }
    }
    out
}

/// Two figures agree when they differ by rounding alone.
fn same(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

impl PrefixReport {
    /// Checks every finding against the rows: the cells it names exist, its figures are theirs, its
    /// difference follows from their intervals (lower: the whole interval below the other's), and every pair
    /// the rules compare has its finding. Returns what disagrees.
    pub fn holds(&self) -> Vec<String> {
        let mut bad = Vec::new();
        let cell = |server: &str, tokens: u32| {
            self.rows.iter().find(|r| r.server == server && r.shared_prefix_tokens == tokens)
        };
        let apart = |a: &PrefixRow, b: &PrefixRow, d: Difference| match (a.ttft_ci, b.ttft_ci) {
            (Some((alo, ahi)), Some((blo, bhi))) => match d {
                Difference::Lower => ahi < blo,
                Difference::Higher => alo > bhi,
                Difference::Overlap => ahi >= blo && alo <= bhi,
                Difference::NoInterval => false,
            },
            _ => d == Difference::NoInterval,
        };
        for f in &self.findings {
            let (a, b, ms, ratio, d) = match f {
                PrefixFinding::AgainstNone { server, prefix_tokens, ttft_ms, none_ttft_ms, ratio, difference } => {
                    let longest =
                        self.rows.iter().filter(|r| r.server == *server).map(|r| r.shared_prefix_tokens).max();
                    if longest != Some(*prefix_tokens) {
                        bad.push(format!("{server}: {prefix_tokens} is not its longest shared prefix"));
                    }
                    (cell(server, *prefix_tokens), cell(server, 0), (*ttft_ms, *none_ttft_ms), *ratio, *difference)
                }
                PrefixFinding::Between {
                    prefix_tokens,
                    first,
                    first_ttft_ms,
                    other,
                    other_ttft_ms,
                    ratio,
                    difference,
                } => (
                    cell(first, *prefix_tokens),
                    cell(other, *prefix_tokens),
                    (*first_ttft_ms, *other_ttft_ms),
                    *ratio,
                    *difference,
                ),
            };
            let (Some(a), Some(b)) = (a, b) else {
                bad.push(format!("{f:?}: no such cells"));
                continue;
            };
            if !same(ms.0, a.ttft_p50_s * 1e3) || !same(ms.1, b.ttft_p50_s * 1e3) || !same(ratio, ms.0 / ms.1) {
                bad.push(format!("{f:?}: the cells' TTFT are {} and {} s", a.ttft_p50_s, b.ttft_p50_s));
            }
            if !apart(a, b, d) {
                bad.push(format!("{f:?}: the intervals {:?} and {:?} do not say {d:?}", a.ttft_ci, b.ttft_ci));
            }
        }
        // Every server with a cell without a shared prefix and one with has its statement.
        let servers = servers(&self.rows);
        for s in &servers {
            let with = self.rows.iter().any(|r| r.server == *s && r.shared_prefix_tokens > 0);
            let said =
                self.findings.iter().any(|f| matches!(f, PrefixFinding::AgainstNone { server, .. } if server == s));
            if with && cell(s, 0).is_some() != said {
                bad.push(format!("{s}: a shared prefix against none is {}said", if said { "" } else { "not " }));
            }
        }
        bad
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn row(server: &str, prefix: u32, ttft: f64, ci: Option<(f64, f64)>) -> PrefixRow {
        PrefixRow {
            group: server.into(),
            server: server.into(),
            shared_prefix_tokens: prefix,
            repeats: 3,
            ttft_p50_s: ttft,
            ttft_ci: ci,
            hit_rate: None,
        }
    }

    /// The findings as the built-in templates word them, one a line.
    fn words(findings: &[PrefixFinding]) -> Vec<String> {
        const TEXT: &str = "{% import \"cache_findings.md\" as k %}{% for p in ps %}{{ k.prefix(p) }}\n{% endfor %}";
        let text = crate::report::markdown::environment(None)
            .render_str(TEXT, minijinja::context! { ps => findings })
            .unwrap();
        text.lines().map(str::to_owned).collect()
    }

    #[test]
    fn findings_claim_a_difference_only_when_intervals_part() {
        let rows = vec![
            row("caching=false", 0, 0.100, Some((0.095, 0.105))),
            row("caching=false", 1024, 0.110, Some((0.100, 0.120))),
            row("caching=true", 0, 0.100, Some((0.095, 0.105))),
            row("caching=true", 1024, 0.040, Some((0.035, 0.045))),
        ];
        let report = PrefixReport { findings: findings(&rows), rows };
        assert!(report.holds().is_empty(), "{:?}", report.holds());
        let f = words(&report.findings);
        assert!(
            f[0].starts_with("caching=false") && f[0].ends_with("not shown to differ (the 95% intervals overlap)"),
            "{f:?}"
        );
        assert!(f[1].contains("0.40×") && f[1].ends_with("lower"), "{f:?}");
        assert_eq!(
            f[2],
            "shared prefix 1024: TTFT p50 110.0 ms with caching=false against 40.0 ms with caching=true (2.75×): \
             caching=false is higher than caching=true"
        );
        let one = [row("a", 0, 0.1, None), row("a", 64, 0.2, None)];
        assert!(words(&findings(&one))[0].ends_with("one repeat: no interval)"));
    }

    #[test]
    fn a_tampered_difference_does_not_hold() {
        let rows = vec![row("a", 0, 0.100, Some((0.095, 0.105))), row("a", 512, 0.050, Some((0.045, 0.055)))];
        let mut report = PrefixReport { findings: findings(&rows), rows };
        assert!(report.holds().is_empty());
        if let PrefixFinding::AgainstNone { difference, .. } = &mut report.findings[0] {
            *difference = Difference::Overlap;
        }
        assert!(!report.holds().is_empty(), "overlap claimed for parted intervals");
        report.findings.clear();
        assert!(!report.holds().is_empty(), "a comparison left unsaid");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        /// Whatever the cells, each statement holds against them, and its words carry its figures: "lower" and
        /// "higher" only where the intervals part, the ratio of the two TTFTs to two decimals.
        #[test]
        fn every_difference_statement_matches_its_cells(
            cells in proptest::collection::vec((0usize..2, 0u32..3, 0.01f64..0.5, proptest::option::of(0.0f64..0.05)), 1..8),
        ) {
            let mut rows: Vec<PrefixRow> = Vec::new();
            for (server, prefix, ttft, half) in cells {
                let (server, prefix) = (["caching=false", "caching=true"][server], prefix * 512);
                if rows.iter().any(|r| r.server == server && r.shared_prefix_tokens == prefix) {
                    continue;
                }
                rows.push(row(server, prefix, ttft, half.map(|h| (ttft - h, ttft + h))));
            }
            rows.sort_by(|a, b| (&a.server, a.shared_prefix_tokens).cmp(&(&b.server, b.shared_prefix_tokens)));
            let report = PrefixReport { findings: findings(&rows), rows };
            prop_assert!(report.holds().is_empty(), "{:?}", report.holds());
            for (f, text) in report.findings.iter().zip(words(&report.findings)) {
                let (a, b, d) = match f {
                    PrefixFinding::AgainstNone { server, prefix_tokens, difference, .. } => (
                        report.rows.iter().find(|r| r.server == *server && r.shared_prefix_tokens == *prefix_tokens),
                        report.rows.iter().find(|r| r.server == *server && r.shared_prefix_tokens == 0),
                        *difference,
                    ),
                    PrefixFinding::Between { prefix_tokens, first, other, difference, .. } => (
                        report.rows.iter().find(|r| r.server == *first && r.shared_prefix_tokens == *prefix_tokens),
                        report.rows.iter().find(|r| r.server == *other && r.shared_prefix_tokens == *prefix_tokens),
                        *difference,
                    ),
                };
                let (a, b) = (a.unwrap(), b.unwrap());
                let ratio = format!("({:.2}×", a.ttft_p50_s / b.ttft_p50_s);
                prop_assert!(text.contains(&ratio), "{} lacks {}", text, ratio);
                let parted = match (a.ttft_ci, b.ttft_ci) {
                    (Some(x), Some(y)) => x.1 < y.0 || x.0 > y.1,
                    _ => false,
                };
                let claims = text.ends_with("lower") || text.ends_with("higher")
                    || text.ends_with("lower than caching=true") || text.ends_with("higher than caching=true");
                prop_assert_eq!(parted, claims, "{} ({:?})", text, d);
            }
        }
    }
}
