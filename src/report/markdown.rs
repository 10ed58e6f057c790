//! Markdown from minijinja templates. The built-in templates are `templates/*.md`, compiled in so the binary
//! works from any folder; a folder given by the spec (`templates:`) or `--templates` overrides them file by
//! file. Filters format numbers; they never compute findings.

use crate::stats::thousands;
use minijinja::{Environment, Error, ErrorKind, Value};
use std::path::PathBuf;

pub const REPORTS: [(&str, &str); 3] = [
    ("kv_cache_scaling_notes.md", include_str!("../../templates/kv_cache_scaling_notes.md")),
    ("batching_benchmark.md", include_str!("../../templates/batching_benchmark.md")),
    ("concurrency_sweep.md", include_str!("../../templates/concurrency_sweep.md")),
];

fn num(v: &Value) -> Option<f64> {
    if v.is_none() || v.is_undefined() {
        return None;
    }
    f64::try_from(v.clone()).ok().filter(|x| x.is_finite())
}

/// `{{ x | num(1) }}`: fixed decimals with thousands separators; "–" for a missing value.
fn f_num(v: Value, digits: Option<usize>) -> String {
    num(&v).map(|x| thousands(x, digits.unwrap_or(0))).unwrap_or_else(|| "–".to_owned())
}

/// `{{ x | fixed(3) }}`: fixed decimals, no separators (for machine-style lines).
fn f_fixed(v: Value, digits: Option<usize>) -> String {
    num(&v).map(|x| format!("{x:.*}", digits.unwrap_or(0))).unwrap_or_default()
}

/// `{{ bytes | bytes }}`: 1073741824 → "1.00 GiB".
fn f_bytes(v: Value) -> String {
    let Some(b) = num(&v) else { return "–".to_owned() };
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut x = b;
    let mut i = 0;
    while x.abs() >= 1024.0 && i < units.len() - 1 {
        x /= 1024.0;
        i += 1;
    }
    if i == 0 { format!("{x:.0} B") } else { format!("{x:.2} {}", units[i]) }
}

/// `{{ fraction | pct }}`: 0.123 → "12.3%".
fn f_pct(v: Value, digits: Option<usize>) -> String {
    num(&v).map(|x| format!("{:.*}%", digits.unwrap_or(1), x * 100.0)).unwrap_or_else(|| "–".to_owned())
}

/// `{{ seconds | duration }}`: 0.0123 → "12.3 ms", 2.5 → "2.50 s", 125 → "2m 05s".
fn f_duration(v: Value) -> String {
    let Some(s) = num(&v) else { return "–".to_owned() };
    if s < 1e-3 {
        format!("{:.0} µs", s * 1e6)
    } else if s < 1.0 {
        format!("{:.1} ms", s * 1e3)
    } else if s < 60.0 {
        format!("{s:.2} s")
    } else {
        format!("{}m {:02}s", (s / 60.0) as u64, (s % 60.0).round() as u64)
    }
}

/// `{{ text | sentence }}`: the first letter upper-cased, the rest untouched (unlike `capitalize`).
fn f_sentence(v: Value) -> String {
    let text = v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string());
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => text,
    }
}

pub fn environment(override_dir: Option<PathBuf>) -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    env.set_keep_trailing_newline(true);
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.add_filter("num", f_num);
    env.add_filter("bytes", f_bytes);
    env.add_filter("pct", f_pct);
    env.add_filter("duration", f_duration);
    env.add_filter("sentence", f_sentence);
    env.add_filter("fixed", f_fixed);
    env.set_loader(move |name: &str| {
        if let Some(dir) = &override_dir {
            let path = dir.join(name);
            if path.is_file() {
                return std::fs::read_to_string(&path).map(Some).map_err(|e| {
                    Error::new(ErrorKind::InvalidOperation, format!("cannot read template {}: {e}", path.display()))
                });
            }
        }
        Ok(REPORTS.iter().find(|(n, _)| *n == name).map(|(_, t)| (*t).to_owned()))
    });
    env
}

pub fn render(env: &Environment<'_>, name: &str, ctx: &impl serde::Serialize) -> Result<String, String> {
    let template = env.get_template(name).map_err(|e| format!("template {name}: {e:#}"))?;
    template.render(ctx).map_err(|e| format!("template {name}: {e:#}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_format_numbers() {
        assert_eq!(thousands(1234567.89, 1), "1,234,567.9");
        assert_eq!(thousands(-999.0, 0), "-999");
        assert_eq!(f_bytes(Value::from(1073741824u64)), "1.00 GiB");
        assert_eq!(f_bytes(Value::from(512)), "512 B");
        assert_eq!(f_pct(Value::from(0.1234), None), "12.3%");
        assert_eq!(f_duration(Value::from(0.0123)), "12.3 ms");
        assert_eq!(f_duration(Value::from(2.5)), "2.50 s");
        assert_eq!(f_duration(Value::from(125.0)), "2m 05s");
        assert_eq!(f_num(Value::from(()), Some(2)), "–");
        assert_eq!(f_sentence(Value::from("flat: the KV pool")), "Flat: the KV pool");
    }
}
