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

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PrefixReport {
    pub rows: Vec<PrefixRow>,
    pub findings: Vec<String>,
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
fn compare(a: &PrefixRow, b: &PrefixRow) -> &'static str {
    match (a.ttft_ci, b.ttft_ci) {
        (Some(x), Some(y)) if x.1 < y.0 => "lower",
        (Some(x), Some(y)) if x.0 > y.1 => "higher",
        (Some(_), Some(_)) => "not shown to differ (the 95% intervals overlap)",
        _ => "not compared (one repeat: no interval)",
    }
}

/// "{a} is lower/higher than {b}", or why no difference is claimed.
fn verdict(a: &PrefixRow, b: &PrefixRow) -> String {
    match compare(a, b) {
        side @ ("lower" | "higher") => format!("{} is {side} than {}", a.server, b.server),
        other => other.to_owned(),
    }
}

fn ms(x: f64) -> String {
    format!("{:.1} ms", x * 1e3)
}

/// Per server, the longest shared prefix against none; per prefix length, the first server against each
/// other one.
fn findings(rows: &[PrefixRow]) -> Vec<String> {
    let mut out = Vec::new();
    let mut servers: Vec<&str> = rows.iter().map(|r| r.server.as_str()).collect();
    servers.dedup();
    for s in &servers {
        let mine: Vec<&PrefixRow> = rows.iter().filter(|r| r.server == *s).collect();
        let (Some(none), Some(long)) = (mine.iter().find(|r| r.shared_prefix_tokens == 0), mine.last()) else {
            continue;
        };
        if long.shared_prefix_tokens == 0 {
            continue;
        }
        out.push(format!(
            "{s}: TTFT p50 with a {}-token shared prefix is {} ({:.2}× the {} without one): {}",
            long.shared_prefix_tokens,
            ms(long.ttft_p50_s),
            long.ttft_p50_s / none.ttft_p50_s,
            ms(none.ttft_p50_s),
            compare(long, none)
        ));
    }
    if let Some(first) = servers.first() {
        for other in servers.iter().skip(1) {
            for a in rows.iter().filter(|r| r.server == *first && r.shared_prefix_tokens > 0) {
                let Some(b) =
                    rows.iter().find(|r| r.server == *other && r.shared_prefix_tokens == a.shared_prefix_tokens)
                else {
                    continue;
                };
                out.push(format!(
                    "shared prefix {}: TTFT p50 {} with {first} against {} with {other} ({:.2}×): {}",
                    a.shared_prefix_tokens,
                    ms(a.ttft_p50_s),
                    ms(b.ttft_p50_s),
                    a.ttft_p50_s / b.ttft_p50_s,
                    verdict(a, b)
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn findings_claim_a_difference_only_when_intervals_part() {
        let rows = [
            row("caching=false", 0, 0.100, Some((0.095, 0.105))),
            row("caching=false", 1024, 0.110, Some((0.100, 0.120))),
            row("caching=true", 0, 0.100, Some((0.095, 0.105))),
            row("caching=true", 1024, 0.040, Some((0.035, 0.045))),
        ];
        let f = findings(&rows);
        assert!(
            f[0].starts_with("caching=false") && f[0].ends_with("not shown to differ (the 95% intervals overlap)"),
            "{f:?}"
        );
        assert!(f[1].contains("0.40×") && f[1].ends_with("lower"), "{f:?}");
        assert!(
            f[2].starts_with("shared prefix 1024") && f[2].ends_with("caching=false is higher than caching=true"),
            "{f:?}"
        );
        let one = [row("a", 0, 0.1, None), row("a", 64, 0.2, None)];
        assert!(findings(&one)[0].ends_with("one repeat: no interval)"));
    }
}
