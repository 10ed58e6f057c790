//! Statistics: pure functions of recorded data (fits now; quantiles, intervals and knees with the load).

pub mod fit;
pub mod kv;
pub mod summary;
pub mod sweep;
pub mod window;

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
