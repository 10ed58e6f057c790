//! Reading a run folder back: the spec (with the run's `--set` arguments), the manifest, and every raw
//! record, in the order the run wrote them.

use super::Recorded;
use super::manifest::Manifest;
use crate::spec::{self, LoadedSpec};
use std::path::Path;

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

fn jsonl<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Vec<T>, String> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    read(path)?
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| serde_json::from_str(l).map_err(|e| format!("{}:{}: {e}", path.display(), i + 1)))
        .collect()
}

pub fn read_run(dir: &Path) -> Result<(LoadedSpec, Manifest, Recorded), String> {
    let manifest: Manifest = serde_json::from_str(&read(&dir.join("manifest.json"))?)
        .map_err(|e| format!("{}: {e}", dir.join("manifest.json").display()))?;
    let spec_path = dir.join("spec.yaml");
    let loaded = spec::load_str(&spec_path.display().to_string(), &read(&spec_path)?, &manifest.overrides)
        .map_err(|e| e.to_string())?;
    let mut rec = Recorded::default();
    for group in &manifest.plan.groups {
        let path = dir.join("servers").join(&group.id).join("startup.json");
        if path.exists() {
            rec.servers.push(serde_json::from_str(&read(&path)?).map_err(|e| format!("{}: {e}", path.display()))?);
        }
    }
    rec.points = jsonl(&dir.join("points.jsonl"))?;
    rec.requests = jsonl(&dir.join("requests.jsonl"))?;
    rec.samples = jsonl(&dir.join("samples.jsonl"))?;
    Ok((loaded, manifest, rec))
}
