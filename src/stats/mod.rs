//! Statistics: pure functions of recorded data (fits now; quantiles, intervals and knees with the load).

pub mod fit;
#[cfg(test)]
mod fixtures;
pub mod knee;
pub mod kv;
pub mod prefix;
pub mod rate;
pub mod search;
pub mod session;
pub mod summary;
pub mod sweep;
pub mod trace;
pub mod tune;
pub mod window;
pub mod workload;

/// 1234567.8 → "1,234,568" (with `digits` decimals).
pub fn thousands(x: f64, digits: usize) -> String {
    let text = format!("{:.digits$}", x.abs());
    let (int, frac) =
        text.split_once('.').map(|(a, b)| (a.to_owned(), format!(".{b}"))).unwrap_or((text.clone(), String::new()));
    let mut out = String::new();
    for (i, ch) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    format!("{}{out}{frac}", if x < 0.0 { "-" } else { "" })
}

/// [`thousands`] without trailing zeros: 2.50 → "2.5", 4.00 → "4".
pub fn trimmed(x: f64, digits: usize) -> String {
    let t = thousands(x, digits);
    if t.contains('.') { t.trim_end_matches('0').trim_end_matches('.').to_owned() } else { t }
}

/// A duration for a sentence: "200 ms" below a second, "2 s" from there.
pub fn fmt_secs(s: f64) -> String {
    if s < 1.0 { format!("{} ms", trimmed(s * 1e3, 1)) } else { format!("{} s", trimmed(s, 2)) }
}
