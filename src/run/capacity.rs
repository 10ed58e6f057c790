//! The capacity prediction for a server group: the model folder's shape (read here) through the pure model of
//! `plan::capacity`.

use crate::plan::ServerGroup;
use crate::plan::capacity::{self, Capacity};
use crate::probe::model::ModelFacts;
use std::path::Path;

/// Why a group has no capacity prediction (said on `servelab plan`'s capacity lines).
#[derive(Debug, thiserror::Error)]
pub enum NoPrediction {
    #[error("the model is not a local folder")]
    NotLocal,
    #[error("no config.json facts")]
    NoFacts,
    #[error("cannot read config.json: {0}")]
    Config(#[source] std::io::Error),
    #[error("{0}")]
    Model(#[from] crate::probe::model::ModelError),
}

/// The prediction for `group` on a GPU of `gpu_bytes` (CUDA total), or why there is none.
pub fn predict(group: &ServerGroup, facts: Option<&ModelFacts>, gpu_bytes: f64) -> Result<Capacity, NoPrediction> {
    let dir = group.server.model.as_deref().map(Path::new).filter(|d| d.is_dir()).ok_or(NoPrediction::NotLocal)?;
    let facts = facts.ok_or(NoPrediction::NoFacts)?;
    let text = std::fs::read_to_string(dir.join("config.json")).map_err(NoPrediction::Config)?;
    let shape = crate::probe::model::shape(dir, facts, &text)?;
    Ok(capacity::predict(&shape, &capacity::knobs(&group.server.argv), gpu_bytes))
}

/// Why a size given on the command line (`plan --gpu-memory`) does not read as one.
#[derive(Debug, thiserror::Error)]
pub enum SizeError {
    #[error("`{0}` is not a size; write e.g. 139.8GiB")]
    NotANumber(String),
    #[error("unknown unit `{unit}` in `{text}`; use GiB, GB, MiB or MB")]
    Unit { unit: String, text: String },
    #[error("`{0}` must be above 0")]
    NotPositive(String),
}

/// `139.8GiB`, `141GB`, `512MiB` or a plain number of bytes.
pub fn parse_size(text: &str) -> Result<f64, SizeError> {
    let t = text.trim();
    let split = t.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let x: f64 = num.trim().parse().map_err(|_| SizeError::NotANumber(text.to_owned()))?;
    let scale = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => capacity::GIB,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        other => return Err(SizeError::Unit { unit: other.to_owned(), text: text.to_owned() }),
    };
    (x.is_finite() && x > 0.0).then_some(x * scale).ok_or_else(|| SizeError::NotPositive(text.to_owned()))
}

fn gib(b: f64) -> String {
    format!("{:.2} GiB", b / capacity::GIB)
}

/// The capacity section of `servelab plan`: per server group, the predicted KV pool and tokens, the maximum
/// concurrency at its max-model-len, and whether it can start; the first group's terms with their sources.
pub fn render(plan: &crate::plan::Plan, gpu_bytes: Option<f64>) -> String {
    let groups: Vec<&ServerGroup> =
        plan.groups.iter().filter(|g| g.server.kind == crate::spec::EngineKind::Vllm).collect();
    if groups.is_empty() {
        return String::new();
    }
    let Some(gpu) = gpu_bytes else {
        return "\ncapacity: no GPU seen; `--gpu-memory 139.8GiB` (the total the CUDA runtime reports) predicts the KV pool without one\n".to_owned();
    };
    let mut out = format!("\ncapacity (predicted on {}; vLLM 0.26's memory model, src/plan/capacity.rs):\n", gib(gpu));
    let mut terms = None;
    for g in groups {
        let facts = super::model_facts(g);
        match predict(g, facts.as_ref(), gpu) {
            Ok(c) => {
                let conc = c.max_concurrency.map(|m| format!(", {m:.1} requests at full length")).unwrap_or_default();
                let verdict = c.cannot_start.as_deref().map(|w| format!("; CANNOT START: {w}")).unwrap_or_default();
                putln!(out, "  {}  KV pool {} per GPU, {} tokens{conc}{verdict}", g.id, gib(c.pool_bytes), c.kv_tokens);
                terms.get_or_insert(c.terms);
            }
            Err(e) => {
                putln!(out, "  {}  no prediction: {e}", g.id);
            }
        }
    }
    for t in terms.unwrap_or_default() {
        putln!(out, "    {:<22} {:>10}  {}", t.name, gib(t.bytes), t.source);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_in_binary_and_decimal_units() {
        assert_eq!(parse_size("139.8GiB").unwrap(), 139.8 * capacity::GIB);
        assert_eq!(parse_size("141 GB").unwrap(), 141e9);
        assert_eq!(parse_size("1024").unwrap(), 1024.0);
        assert!(parse_size("lots").unwrap_err().to_string().contains("139.8GiB"));
        assert!(parse_size("3 TiB").unwrap_err().to_string().contains("unknown unit"));
    }
}
