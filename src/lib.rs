//! servelab: declarative experiments for vLLM servers.
//!
//! Layers, bottom up (DESIGN §4; no module imports one above it): `record` (the run folder's format) →
//! `spec` → `plan` (pure expansion and grouping) → `load`, `probe`, `engine` → `run` (the executor) →
//! `stats` → `report` → `cli`.
pub mod cli;
pub mod engine;
pub mod exit;
pub mod load;
pub mod plan;
pub mod probe;
pub mod record;
pub mod report;
pub mod run;
pub mod schedule;
pub mod spec;
pub mod stats;
