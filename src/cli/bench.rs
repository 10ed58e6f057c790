//! `servelab bench`: measure an existing endpoint with a spec built from flags, run through the normal run path.

use super::experiment::run_experiment;
use crate::exit::Error;
use crate::plan;
use crate::run::RunOptions;
use crate::spec;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Base URL of the endpoint, e.g. http://127.0.0.1:8000.
    #[arg(long)]
    pub url: String,
    /// Model name for requests (default: the first model /v1/models lists).
    #[arg(long)]
    pub model: Option<String>,
    /// Concurrency levels.
    #[arg(long, value_delimiter = ',', default_value = "1,4,8,16")]
    pub concurrency: Vec<u32>,
    /// Requests per level: max(requests, 4 × concurrency) unless --exact-requests.
    #[arg(long, default_value_t = 32)]
    pub requests: u32,
    #[arg(long)]
    pub exact_requests: bool,
    #[arg(long, default_value_t = 64)]
    pub max_tokens: u32,
    #[arg(long, default_value_t = 128)]
    pub prompt_tokens: u32,
    #[arg(long, default_value_t = 2)]
    pub warmup: u32,
    #[arg(long, default_value_t = 1)]
    pub repeats: u32,
    /// Token ids are drawn below this (default 1000: safe for any vocabulary).
    #[arg(long)]
    pub vocab_size: Option<u64>,
    /// Non-streaming requests (no TTFT).
    #[arg(long)]
    pub no_stream: bool,
    #[arg(long, default_value = "out")]
    pub out: PathBuf,
    #[arg(long)]
    pub run_id: Option<String>,
    /// How long one request may take before it counts as failed (shorter than `run`'s 300 s: an endpoint
    /// that hangs should not hold a quick check for minutes).
    #[arg(long, default_value = "60s", value_name = "DURATION")]
    pub request_timeout: String,
}

/// The spec `bench` runs: an external engine and a concurrency grid, built as a value (no YAML text is
/// pasted together, so no argument can inject a key), then written out as YAML and stored with the run
/// like any spec.
pub fn bench_spec(b: &BenchArgs) -> Result<String, Error> {
    let url = b.url.trim_end_matches('/').trim_end_matches("/v1");
    if !plan::server::is_http_url(url) {
        return Err(Error::Usage(format!(
            "--url {}: not an http:// URL; write e.g. --url http://127.0.0.1:8000",
            b.url
        )));
    }
    let mut engine = serde_json::json!({ "kind": "external", "base_url": url, "ready_path": "/v1/models" });
    if let Some(m) = &b.model {
        engine["model"] = m.as_str().into();
    }
    let value = serde_json::json!({
        "name": "bench",
        "description": format!("servelab bench against {url}"),
        "engine": engine,
        "grid": { "concurrency": b.concurrency },
        "repeats": b.repeats,
        "load": {
            "concurrency": "{{ concurrency }}",
            "requests": b.requests,
            "exact_requests": b.exact_requests,
            "max_tokens": b.max_tokens,
            "prompt_tokens": b.prompt_tokens,
            "warmup": b.warmup,
            "stream": !b.no_stream,
            "vocab_size": b.vocab_size.unwrap_or(1000),
            "request_timeout": b.request_timeout,
        },
        "measure": { "memory": "procfs" },
    });
    let spec: spec::Spec = serde_json::from_value(value).map_err(|e| Error::Usage(format!("bench: {e}")))?;
    serde_saphyr::to_string(&spec).map_err(|e| Error::Internal(format!("bench spec as YAML: {e}")))
}

/// `servelab bench`: the spec from the flags, planned and run like any other.
pub(super) fn bench(b: BenchArgs) -> Result<i32, Error> {
    let loaded = spec::load_str("servelab bench", &bench_spec(&b)?, &[])?;
    let plan = plan::build_located(&loaded)?;
    run_experiment(
        &loaded,
        &plan,
        RunOptions {
            out_root: b.out,
            run_id: b.run_id,
            resume: None,
            force: false,
            fail_fast: false,
            max_starts: None,
            host: plan::slots::Host::serial(),
            shard: None,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser as _;

    fn bench(args: &[&str]) -> BenchArgs {
        let mut argv = vec!["servelab", "bench"];
        argv.extend_from_slice(args);
        match Cli::parse_from(argv).command {
            Command::Bench(b) => b,
            _ => unreachable!(),
        }
    }

    #[test]
    fn bench_spec_is_a_value_that_round_trips_whatever_the_arguments_hold() {
        let model = "evil\"\nname: injected\n  x: {{ y }}";
        let b = bench(&["--url", "http://127.0.0.1:9/v1/", "--model", model, "--concurrency", "1,8", "--no-stream"]);
        let text = bench_spec(&b).unwrap();
        let loaded = spec::load_str("servelab bench", &text, &[]).unwrap();
        let s = &loaded.spec;
        assert_eq!(s.name, "bench");
        assert_eq!(s.engine.model.as_deref(), Some(model));
        assert_eq!(s.engine.base_url.as_deref(), Some("http://127.0.0.1:9"));
        assert_eq!(s.grid["concurrency"].len(), 2);
        let load = s.load.as_ref().unwrap();
        assert!(matches!(load.stream, spec::BoolOrTemplate::Bool(false)));
    }
}
