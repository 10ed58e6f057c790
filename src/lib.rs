//! servelab: declarative experiments for vLLM servers.
//!
//! The flow (DESIGN §4): `spec` (parse, locate, validate) → `plan` (pure expansion and grouping) → `cli`.
pub mod cli;
pub mod engine;
pub mod exit;
pub mod load;
pub mod plan;
pub mod probe;
pub mod report;
pub mod run;
pub mod spec;
pub mod stats;
