//! servelab: declarative experiments for vLLM servers.
//!
//! The flow (DESIGN §4): `spec` (parse, locate, validate) → `plan` (pure expansion and grouping) → `cli`.
pub mod cli;
pub mod exit;
pub mod plan;
pub mod spec;
pub mod engine;
pub mod probe;
pub mod report;
pub mod run;
pub mod stats;
pub mod load;
