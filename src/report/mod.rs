//! Reports: pure functions from recorded data to bytes. Never calls the engine or the client.

pub mod charts;
pub mod check;
pub mod compare;
pub mod console;
pub mod context;
pub mod derive;
pub mod kv_csv;
pub mod markdown;
pub mod rate_csv;
pub mod sweep_csv;
pub mod tune_csv;
pub mod workload_csv;

use crate::record::Recorded;
use crate::record::folder;
use crate::record::manifest::Manifest;
use crate::spec::{self, LoadedSpec};
use std::path::Path;

/// A run folder read back for rendering: its spec (with the run's `--set` arguments), manifest and committed
/// records.
pub fn open_run(dir: &Path) -> Result<(LoadedSpec, Manifest, Recorded), String> {
    let f = folder::read(dir).map_err(|e| e.to_string())?;
    let spec_path = dir.join(folder::SPEC).display().to_string();
    let loaded = spec::load_str(&spec_path, &f.spec_text, &f.manifest.overrides).map_err(|e| e.to_string())?;
    Ok((loaded, f.manifest, f.recorded))
}
