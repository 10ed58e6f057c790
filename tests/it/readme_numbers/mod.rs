//! Every number an example's README states, found in that example's own files.
//!
//! A README figure is supported when some number in the example's files equals it rounded to the figure's
//! precision: "2.28×" is supported by 2.2812, "1,009" by 1009.4, "25%" by 25 or by the fraction 0.25,
//! "171.7 ms" by 171.7 or by 0.1717 (seconds), "127.11 GiB" by its bytes; a range's unit ("205–240 ms") holds
//! for both ends. Signs are dropped (derived files write a difference with either sign). Dates (2026-12-01) and
//! dotted versions (0.26.0) must occur verbatim.
//!
//! A figure that comes from elsewhere — another example, git history, a spec sheet, a count worked out by hand
//! — is listed in an HTML comment `<!-- quoted: 503, 450 — where they come from -->` inside the paragraph, list
//! item or table that states it (no blank line between): the figures, an em dash, then their source in words
//! (not checked). A comment covers its own block only, and each number it lists must occur there, so the list
//! cannot go stale or excuse a figure elsewhere.
//! Skipped, because they are verbatim input rather than measurements: fenced code blocks, inline code
//! (flags, spec keys, file names, hashes) and link targets. A number glued to a letter (H200, p95, Qwen2.5,
//! 0.5B, run1) is a name, not a figure.

use std::path::Path;

use regex::Regex;

/// One figure of README prose.
#[derive(Debug, Clone)]
pub struct Figure {
    /// As written, e.g. `1,396` or `4.9`.
    pub text: String,
    /// 1-based line of the README.
    pub line: usize,
    value: f64,
    decimals: i32,
    /// What one unit of the figure is in other units the files may use: 25% is 0.25, 4.6 ms is 0.0046 s,
    /// 127.11 GiB is 127.11 × 2³⁰ bytes.
    scales: Vec<f64>,
    /// A date or a dotted version: matched as text.
    literal: bool,
}

/// A figure with the index of the block it stands in.
pub type Placed = (usize, Figure);

/// What an example's files hold: their text (for dates and versions) and every number in it, sorted.
pub struct Sources {
    text: String,
    numbers: Vec<f64>,
}

fn blank_matches(text: &mut String, re: &Regex, keep_from: impl Fn(&regex::Captures) -> usize) {
    let spans: Vec<(usize, usize)> = re
        .captures_iter(text)
        .map(|c| {
            let m = c.get(0).unwrap();
            (m.start() + keep_from(&c), m.end())
        })
        .collect();
    for (start, end) in spans {
        let blanked: String = text[start..end]
            .chars()
            .map(|c| if c == '\n' { "\n".to_owned() } else { " ".repeat(c.len_utf8()) })
            .collect();
        text.replace_range(start..end, &blanked);
    }
}

/// A number figure (not a date, not a version), its boundaries checked by the caller.
fn number_re() -> Regex {
    Regex::new(
        r"[0-9]{4}-[0-9]{2}-[0-9]{2}|[0-9]+(?:\.[0-9]+){2,}|[0-9]{1,3}(?:,[0-9]{3})+(?:\.[0-9]+)?|[0-9]+(?:\.[0-9]+)?",
    )
    .unwrap()
}

/// The unit written after a figure, or after the far end of a range it opens ("4.9–18.7%", "205–240 ms").
fn unit_after(rest: &str) -> Option<&str> {
    let rest = rest.trim_start_matches(' ');
    if let Some(far) = rest.strip_prefix('–') {
        let digits = far.trim_start_matches(|c: char| c.is_ascii_digit() || c == ',' || c == '.');
        return (digits.len() < far.len()).then_some(digits).and_then(unit_after);
    }
    let unit: String = rest.chars().take_while(|c| c.is_alphabetic() || *c == '%').collect();
    ["%", "ms", "µs", "s", "GiB", "MiB", "KiB", "GB", "MB"].into_iter().find(|u| *u == unit)
}

/// The other units a figure in `unit` may be stored in, as factors: the stored number is figure × factor.
fn scales_of(unit: &str) -> &'static [f64] {
    match unit {
        "%" => &[0.01],
        "ms" => &[1e-3],
        "µs" => &[1e-6, 1e-3],
        "s" => &[1e3],
        "GiB" => &[1_073_741_824.0, 1024.0],
        "MiB" => &[1_048_576.0, 1.0 / 1024.0],
        "KiB" => &[1024.0],
        "GB" => &[1e9, 1e3],
        "MB" => &[1e6],
        _ => &[],
    }
}

/// The figures of `text` (prose already stripped of what is skipped), with their lines.
fn figures_in(text: &str) -> Vec<Figure> {
    let re = number_re();
    let mut out = Vec::new();
    for m in re.find_iter(text) {
        let before: Vec<char> = text[..m.start()].chars().rev().take(2).collect();
        let after = text[m.end()..].chars().next();
        let glued = |c: Option<&char>| c.is_some_and(|c| c.is_alphanumeric() || *c == '_');
        // H200, p95, run1, Qwen2.5: a name. So is a number after a hyphen or a dot that follows a name
        // (gpu-0.26, tp2-2048).
        if glued(before.first())
            || (matches!(before.first(), Some('-' | '.' | '/')) && glued(before.get(1)))
            || after.is_some_and(char::is_alphabetic)
        {
            continue;
        }
        let t = m.as_str();
        let line = text[..m.start()].matches('\n').count() + 1;
        let literal = t.matches('.').count() > 1 || (t.len() == 10 && t.as_bytes()[4] == b'-');
        let plain = t.replace(',', "");
        let decimals = plain.split_once('.').map_or(0, |(_, d)| d.len() as i32);
        let scales = unit_after(&text[m.end()..]).map_or_else(Vec::new, |u| scales_of(u).to_vec());
        out.push(Figure {
            text: t.to_owned(),
            line,
            value: if literal { 0.0 } else { plain.parse().unwrap() },
            decimals,
            scales,
            literal,
        });
    }
    out
}

/// The README split into its checked figures and the figures its `quoted:` comments list, each with the block
/// (paragraph, list item run, table: lines between blank lines) it stands in.
pub fn readme_figures(readme: &str) -> (Vec<Placed>, Vec<Placed>) {
    let mut block_of_line = vec![0];
    let mut block = 0;
    for l in readme.lines() {
        if l.trim().is_empty() {
            block += 1;
        }
        block_of_line.push(block);
    }
    let in_blocks = |figures: Vec<Figure>, first_line: usize| -> Vec<Placed> {
        figures
            .into_iter()
            .map(|mut f| {
                f.line += first_line - 1;
                (block_of_line[f.line.min(block_of_line.len() - 1)], f)
            })
            .collect()
    };
    let mut prose = readme.to_owned();
    let mut quoted = Vec::new();
    let comment = Regex::new(r"(?s)<!--(.*?)-->").unwrap();
    for c in comment.captures_iter(readme) {
        let body = c.get(1).unwrap();
        if let Some(rest) = body.as_str().trim_start().strip_prefix("quoted:") {
            // The figures come first, then " — " and where they come from (free text, not checked).
            let list = rest.split('—').next().unwrap();
            let line = readme[..body.start()].matches('\n').count() + 1;
            quoted.extend(in_blocks(figures_in(list), line));
        }
    }
    blank_matches(&mut prose, &comment, |_| 0);
    blank_matches(&mut prose, &Regex::new(r"(?ms)^```.*?^```").unwrap(), |_| 0);
    blank_matches(&mut prose, &Regex::new(r"`[^`]*`").unwrap(), |_| 0);
    // A link's target, not its text: keep the `]`.
    blank_matches(&mut prose, &Regex::new(r"\]\([^)\s]*\)").unwrap(), |_| 1);
    (in_blocks(figures_in(&prose), 1), quoted)
}

impl Sources {
    /// From the files' texts, each marked whether it is CSV.
    fn from_texts(texts: &[(bool, String)]) -> Sources {
        let text = texts.iter().map(|(_, t)| t.as_str()).collect::<Vec<_>>().join("\n");
        let plain = Regex::new(r"[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?").unwrap();
        let grouped = Regex::new(r"[0-9]{1,3}(?:,[0-9]{3})+(?:\.[0-9]+)?").unwrap();
        let mut numbers: Vec<f64> = plain.find_iter(&text).filter_map(|m| m.as_str().parse().ok()).collect();
        // Thousands separators only outside CSV, where a comma separates fields.
        for (_, t) in texts.iter().filter(|(csv, _)| !csv) {
            numbers.extend(grouped.find_iter(t).filter_map(|m| m.as_str().replace(',', "").parse::<f64>().ok()));
        }
        numbers.sort_by(f64::total_cmp);
        Sources { text, numbers }
    }

    /// The derived files of an example folder (every `.md`, `.csv`, `.json` and `.txt` `servelab` wrote there,
    /// its README aside) and the raw records that are documents: `manifest.json`, `plan.json`, `spec.yaml`,
    /// each server's `startup*.json` (packed or not). The per-request, per-point and per-sample streams
    /// (`*.jsonl`) and the charts are left out: thousands of numbers would let almost any figure match.
    pub fn of_example(dir: &Path) -> Sources {
        fn walk(dir: &Path, out: &mut Vec<(bool, String)>) {
            let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
            entries.sort();
            for p in entries {
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                // The README is what is checked, never its own evidence.
                if p.is_dir() {
                    walk(&p, out);
                } else if name == "README.md" {
                    continue;
                } else if [".md", ".csv", ".json", ".txt", ".yaml"].iter().any(|e| name.ends_with(e)) {
                    out.push((name.ends_with(".csv"), std::fs::read_to_string(&p).unwrap()));
                } else if let Some(plain) = name.strip_suffix(".xz").filter(|n| n.ends_with(".json")) {
                    let (_, bytes) = servelab::record::io::read_doc(&p.with_file_name(plain)).unwrap().unwrap();
                    out.push((false, String::from_utf8(bytes).unwrap()));
                }
            }
        }
        let mut texts = Vec::new();
        walk(dir, &mut texts);
        Sources::from_texts(&texts)
    }

    fn has_near(&self, x: f64, tol: f64) -> bool {
        let i = self.numbers.partition_point(|v| *v < x - tol);
        self.numbers.get(i).is_some_and(|v| *v <= x + tol)
    }

    /// Whether some number here equals `f` at the precision `f` was written with.
    pub fn supports(&self, f: &Figure) -> bool {
        if f.literal {
            return self.text.contains(&f.text);
        }
        let tol = 0.5 * 10f64.powi(-f.decimals) * (1.0 + 1e-9);
        self.has_near(f.value, tol) || f.scales.iter().any(|k| self.has_near(f.value * k, tol * k))
    }
}

/// What is wrong with a README against its example's files: each figure neither found nor quoted in its own
/// block, and each quoted figure its block no longer states.
pub fn problems(readme: &str, sources: &Sources) -> Vec<String> {
    let (figures, quoted) = readme_figures(readme);
    let mut out = Vec::new();
    for (block, f) in &figures {
        if !quoted.iter().any(|(b, q)| b == block && q.text == f.text) && !sources.supports(f) {
            out.push(format!("line {}: {} is in none of the example's files and not quoted", f.line, f.text));
        }
    }
    for (block, q) in &quoted {
        if !figures.iter().any(|(b, f)| b == block && f.text == q.text) {
            out.push(format!(
                "line {}: a quoted: comment lists {}, which its paragraph does not state",
                q.line, q.text
            ));
        }
    }
    out
}
