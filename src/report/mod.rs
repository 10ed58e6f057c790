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
pub mod vllm_result;
pub mod workload_csv;

use crate::record::Recorded;
use crate::record::folder;
use crate::record::io::RecordError;
use crate::record::manifest::Manifest;
use crate::spec::{self, LoadedSpec, SpecError};
use std::path::Path;

/// Why a report could not be rendered, or a run folder not read back for one. Each names the template or
/// the file; the caller adds what was being done (a run, `servelab report`).
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The run folder's records (a damaged or incomplete folder).
    #[error("{0}")]
    Folder(#[from] RecordError),
    /// The spec stored in the run folder no longer loads.
    #[error("{0}")]
    Spec(#[from] SpecError),
    /// A template that does not compile or fails on this data (an undefined variable, a filter's error).
    #[error("template {name}: {source:#}; fix the template (built-in ones are templates/*.md)")]
    Template {
        name: String,
        #[source]
        source: minijinja::Error,
    },
    /// A CSV or chart writer that failed: nothing is written rather than a file cut short.
    #[error("cannot render {name}: {source}")]
    Render {
        name: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("template {name}: the report grew past 64 MiB; a template must not print unbounded data")]
    TooLarge { name: String },
    #[error("template {name}: its output is not UTF-8")]
    NotUtf8 {
        name: String,
        #[source]
        source: std::string::FromUtf8Error,
    },
}

/// A run folder read back for rendering: its spec (with the run's `--set` arguments), manifest and committed
/// records.
pub fn open_run(dir: &Path) -> Result<(LoadedSpec, Manifest, Recorded), ReportError> {
    let f = folder::read(dir)?;
    let spec_path = dir.join(folder::SPEC).display().to_string();
    let loaded = spec::load_str(&spec_path, &f.spec_text, &f.manifest.overrides)?;
    Ok((loaded, f.manifest, f.recorded))
}
