//! Markdown from minijinja templates. The built-in templates are `templates/*.md`, compiled in so the binary
//! works from any folder; a folder given by the spec (`templates:`) or `--templates` overrides them file by
//! file. Filters format numbers; they never compute findings.

use super::ReportError;
use crate::stats::thousands;
use minijinja::{Environment, Error, ErrorKind, Value};
use std::path::PathBuf;

/// The reports, and the partials they include (`workload.md`, no report of its own).
pub const REPORTS: [(&str, &str); 13] = [
    ("findings.md", include_str!("../../templates/findings.md")),
    ("rate_findings.md", include_str!("../../templates/rate_findings.md")),
    ("cache_findings.md", include_str!("../../templates/cache_findings.md")),
    ("kv_cache_scaling_notes.md", include_str!("../../templates/kv_cache_scaling_notes.md")),
    ("batching_benchmark.md", include_str!("../../templates/batching_benchmark.md")),
    ("concurrency_sweep.md", include_str!("../../templates/concurrency_sweep.md")),
    ("rate_sweep.md", include_str!("../../templates/rate_sweep.md")),
    ("workload.md", include_str!("../../templates/workload.md")),
    ("prefix_cache.md", include_str!("../../templates/prefix_cache.md")),
    ("tune.md", include_str!("../../templates/tune.md")),
    ("recommended.yaml", include_str!("../../templates/recommended.yaml")),
    ("trace_replay.md", include_str!("../../templates/trace_replay.md")),
    ("sessions.md", include_str!("../../templates/sessions.md")),
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

/// `{{ fraction | signed_pct }}`: 0.123 → "+12.3%", −0.05 → "-5.0%".
fn f_signed_pct(v: Value, digits: Option<usize>) -> String {
    num(&v).map(|x| format!("{:+.*}%", digits.unwrap_or(1), x * 100.0)).unwrap_or_else(|| "–".to_owned())
}

/// `{{ seconds | secs }}`: a duration for a sentence, "200 ms" below a second, "2.5 s" from there.
fn f_secs(v: Value) -> String {
    num(&v).map(crate::stats::fmt_secs).unwrap_or_else(|| "–".to_owned())
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

/// `{{ x | signed(1) }}`: fixed decimals with the sign always shown (+3.0, -1.5); empty for a missing value.
fn f_signed(v: Value, digits: Option<usize>) -> String {
    num(&v).map(|x| format!("{x:+.*}", digits.unwrap_or(0))).unwrap_or_default()
}

/// `{{ x | plain }}`: the shortest form that reads back the same number (2.0 → "2", 2.5 → "2.5").
fn f_plain(v: Value) -> String {
    num(&v).map(|x| format!("{x}")).unwrap_or_else(|| "–".to_owned())
}

/// `{{ rate | trimmed(2) }}`: at most that many decimals, trailing zeros dropped, thousands separated
/// (1234.50 → "1,234.5").
fn f_trimmed(v: Value, digits: Option<usize>) -> String {
    num(&v).map(|x| crate::stats::trimmed(x, digits.unwrap_or(0))).unwrap_or_else(|| "–".to_owned())
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
    env.add_filter("signed_pct", f_signed_pct);
    env.add_filter("secs", f_secs);
    env.add_filter("duration", f_duration);
    env.add_filter("sentence", f_sentence);
    env.add_filter("fixed", f_fixed);
    env.add_filter("plain", f_plain);
    env.add_filter("trimmed", f_trimmed);
    env.add_filter("signed", f_signed);
    env.set_fuel(Some(REPORT_FUEL));
    // Printing a huge sequence and chained `replace` are single instructions that fuel does not bound.
    crate::plan::render::guard(&mut env, MAX_REPORT_BYTES, MAX_PRINTED_ITEMS);
    env.set_loader(move |name: &str| {
        if let Some(dir) = &override_dir
            && let Some(text) = override_template(dir, name)?
        {
            return Ok(Some(text));
        }
        Ok(REPORTS.iter().find(|(n, _)| *n == name).map(|(_, t)| (*t).to_owned()))
    });
    env
}

/// Bounds a report template's work (loops over `range(10**9)`); the built-in reports of the largest committed
/// example (an H200 sweep, 7 cells × 5 repeats) fit with a wide margin (report tests re-render every example).
const REPORT_FUEL: u64 = 5_000_000;
/// The most items a printed sequence or map may have.
const MAX_PRINTED_ITEMS: usize = 1_000_000;
/// A rendered report larger than this is an error (`{{ [1] * 10**9 }}` would otherwise fill memory).
const MAX_REPORT_BYTES: usize = 64 << 20;
/// A template file larger than this is refused unread.
const MAX_TEMPLATE_BYTES: u64 = 1 << 20;

/// A template from the override folder: `name` must be a plain file name inside it (an `include` of
/// `/proc/self/environ` or `../secret` is refused), a regular file of at most 1 MiB; None when absent.
fn override_template(dir: &std::path::Path, name: &str) -> Result<Option<String>, Error> {
    let refuse = |why: String| Error::new(ErrorKind::InvalidOperation, format!("template `{name}`: {why}"));
    let plain = std::path::Path::new(name).components().all(|c| matches!(c, std::path::Component::Normal(_)));
    if !plain {
        return Err(refuse("templates are loaded by plain names inside the templates folder".to_owned()));
    }
    let path = dir.join(name);
    if !path.exists() {
        return Ok(None);
    }
    let (Ok(real), Ok(root)) = (path.canonicalize(), dir.canonicalize()) else { return Ok(None) };
    if !real.starts_with(&root) {
        return Err(refuse(format!("{} leads outside the templates folder {}", path.display(), dir.display())));
    }
    match crate::record::io::read_capped(&real, MAX_TEMPLATE_BYTES) {
        Ok(bytes) => String::from_utf8(bytes).map(Some).map_err(|_| refuse("not UTF-8".to_owned())),
        Err(crate::record::io::CappedError::TooLong) => Err(refuse("larger than 1 MiB".to_owned())),
        Err(crate::record::io::CappedError::NotAFile) => Err(refuse("not a regular file".to_owned())),
        Err(crate::record::io::CappedError::Io(e)) => Err(refuse(format!("cannot read {}: {e}", path.display()))),
    }
}

/// Output that refuses to grow past [`MAX_REPORT_BYTES`].
#[derive(Default)]
struct Capped {
    bytes: Vec<u8>,
    overflowed: bool,
}

impl std::io::Write for Capped {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.bytes.len() + buf.len() > MAX_REPORT_BYTES {
            self.overflowed = true;
            return Err(std::io::Error::other("the report grew past 64 MiB"));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub fn render(env: &Environment<'_>, name: &str, ctx: &impl serde::Serialize) -> Result<String, ReportError> {
    let failed = |source| ReportError::Template { name: name.to_owned(), source };
    let template = env.get_template(name).map_err(failed)?;
    let mut out = Capped::default();
    let result = template.render_captured_to(ctx, &mut out);
    if out.overflowed {
        return Err(ReportError::TooLarge { name: name.to_owned() });
    }
    result.map_err(failed)?;
    String::from_utf8(out.bytes).map_err(|source| ReportError::NotUtf8 { name: name.to_owned(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_templates_cannot_read_outside_their_folder_or_run_away() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
        write("environ.md", "{% include '/proc/self/environ' %}");
        write("up.md", "{% include '../x.md' %}");
        write("loop.md", "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}");
        write("bomb.md", "{{ [1] * 10**9 }}");
        write("grow.md", "{{ ('x' * 10000000) | replace('x', 'xxxxxxxxxx') | replace('x', 'xxxxxxxxxx') }}");
        std::os::unix::fs::symlink("/etc/hostname", dir.path().join("link.md")).unwrap();
        let env = environment(Some(dir.path().to_owned()));
        let ctx = minijinja::context! {};
        let err = |name: &str| {
            render(&env, name, &ctx).err().map(|e| e.to_string()).unwrap_or_else(|| panic!("{name} rendered"))
        };
        assert!(err("environ.md").contains("plain names inside the templates folder"), "{}", err("environ.md"));
        assert!(err("up.md").contains("plain names"), "{}", err("up.md"));
        assert!(err("link.md").contains("leads outside the templates folder"), "{}", err("link.md"));
        assert!(err("loop.md").contains("fuel"), "{}", err("loop.md"));
        assert!(err("bomb.md").contains("1000000000 items"), "{}", err("bomb.md"));
        assert!(err("grow.md").contains("over 64 MiB"), "{}", err("grow.md"));
        write("fine.md", "{{ 'a-b' | replace('-', '+') }}");
        assert_eq!(render(&env, "fine.md", &ctx).unwrap(), "a+b");
    }

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
