//! servelab: declarative experiments for vLLM servers.
//!
//! Layers, bottom up (no module imports one above it; docs/architecture.md): `record` (the run folder's format)
//! and `draw` (seeded draws) →
//! `spec` → `plan` (pure expansion and grouping) → `load`, `probe`, `engine` → `run` (the executor) →
//! `stats` → `report` → `shard` (shares of a run, and merging them) →
//! `cluster` (Slurm and Kubernetes job files) → `cli`.
// Functions of tens of lines: clippy counts code lines (not comments) against 80 (clippy.toml); the few
// allowed past it are listed, with why, in docs/architecture.md.
#![warn(clippy::too_many_lines)]

/// `write!` into a `String` without a `Result` to drop: appending to a `String` cannot fail (only a `Display`
/// implementation that returns an error could, and servelab's never do), so text builders need no error path.
macro_rules! put {
    ($out:expr, $($arg:tt)*) => {
        $out.push_str(&format!($($arg)*))
    };
}

/// `writeln!` into a `String`, as `put!`.
macro_rules! putln {
    ($out:expr, $($arg:tt)*) => {{
        $out.push_str(&format!($($arg)*));
        $out.push('\n');
    }};
}

pub mod cli;
pub mod cluster;
pub mod draw;
pub mod engine;
pub mod exit;
pub mod load;
pub mod plan;
pub mod probe;
pub mod record;
pub mod report;
pub mod run;
pub mod schedule;
pub mod shard;
pub mod spec;
pub mod stats;
