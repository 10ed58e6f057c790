//! The integration tests, one binary: each module used to be a test binary of its own, and each linked the
//! whole dependency graph again (minutes on a 2-core CI). The tests that start real vLLM, and the scenario
//! table, stay binaries of their own (`harness = false`: they decide at run time whether they can run).

#[path = "../common/mod.rs"]
mod common;

mod bad_input;
mod bench;
mod cli;
mod client_threads;
mod fake_engine;
mod fuzz;
mod layers;
mod plan;
mod readme_numbers;
mod report;
mod session;
mod shards;
mod trace;
mod tune;
mod tune_replay;
mod tune_seam;
mod zero_endpoint;
