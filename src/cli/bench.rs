//! `servelab bench`: measure an existing endpoint with `vllm bench serve`'s flags. The flags build a spec value
//! (no YAML text is pasted together, so no argument can inject a key) that runs through the normal run path;
//! `--save-result` then derives vLLM's result JSON from the run's records (docs/bench.md).

use super::experiment::run_plan;
use crate::exit::Error;
use crate::plan;
use crate::run::RunOptions;
use crate::spec;
use serde_json::{Value, json};
use std::path::PathBuf;

/// `--backend`: vLLM's request functions that servelab's client speaks (`vllm` is `openai`).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Vllm,
    Openai,
    #[value(name = "openai-chat")]
    OpenaiChat,
}

/// `--dataset-name`: where prompts come from.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DatasetName {
    /// Seeded random prompts of `--random-input-len` tokens.
    Random,
    /// A ShareGPT JSON file (`--dataset-path`).
    Sharegpt,
    /// JSON lines of `{"prompt", "output_tokens"}` (`--dataset-path`).
    Custom,
    /// servelab only: replay a Mooncake trace (`--dataset-path`) at its timestamps.
    Mooncake,
}

/// `servelab bench`'s flags: `vllm bench serve`'s names and meanings where they overlap (docs/bench.md has
/// the table); the older names stay as aliases.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Server or API base URL, e.g. http://127.0.0.1:8000 (default: http://HOST:PORT).
    #[arg(long, visible_alias = "url")]
    pub base_url: Option<String>,
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    /// API endpoint: /v1/completions or /v1/chat/completions.
    #[arg(long, default_value = "/v1/completions")]
    pub endpoint: String,
    /// `vllm` and `openai` post completions, `openai-chat` chat completions.
    #[arg(long, value_enum, default_value = "openai")]
    pub backend: Backend,
    /// Model name for requests (default: the first model /v1/models lists).
    #[arg(long)]
    pub model: Option<String>,
    /// Requests per second (Poisson, or gamma with --burstiness); `inf` sends every request at once, up to
    /// --max-concurrency in flight (a mooncake trace: at its timestamps; a finite rate paces its requests).
    #[arg(long, default_value = "inf")]
    pub request_rate: f64,
    /// Shape of gamma inter-arrival times with a finite --request-rate: 1 is Poisson, below 1 burstier.
    #[arg(long, default_value_t = 1.0)]
    pub burstiness: f64,
    /// At most this many requests in flight; a comma list runs one point per value.
    #[arg(long, visible_alias = "concurrency", value_delimiter = ',')]
    pub max_concurrency: Vec<u32>,
    /// Requests per point, exactly (default 1000).
    #[arg(long, visible_alias = "requests")]
    pub num_prompts: Option<u32>,
    /// Requests sent before measuring, excluded from every figure.
    #[arg(long, visible_alias = "warmup", default_value_t = 0)]
    pub num_warmups: u32,
    #[arg(long, value_enum, default_value = "random")]
    pub dataset_name: DatasetName,
    /// The dataset file (sharegpt, custom) or trace (mooncake).
    #[arg(long)]
    pub dataset_path: Option<String>,
    /// Prompt tokens of the random dataset.
    #[arg(long, visible_aliases = ["input-len", "prompt-tokens"], default_value_t = 1024)]
    pub random_input_len: u32,
    /// Output tokens of the random dataset.
    #[arg(long, visible_aliases = ["output-len", "max-tokens"], default_value_t = 128)]
    pub random_output_len: u32,
    /// Tokens every random prompt shares at its start, before its --random-input-len own tokens.
    #[arg(long, default_value_t = 0)]
    pub random_prefix_len: u32,
    /// Random lengths are drawn uniformly from [floor(len·(1−r)), ceil(len·(1+r))]; r in [0, 1).
    #[arg(long, default_value_t = 0.0)]
    pub random_range_ratio: f64,
    /// Ask the server to ignore end-of-sequence, so every request generates its full output length.
    #[arg(long)]
    pub ignore_eos: bool,
    /// Metrics with percentiles in the result: of ttft, tpot, itl, e2el, client_queue_time.
    #[arg(long, default_value = "ttft,tpot,itl")]
    pub percentile_metrics: String,
    /// Percentiles of those metrics, comma-separated.
    #[arg(long, default_value = "99")]
    pub metric_percentiles: String,
    /// Objectives for goodput in ms, e.g. `--goodput ttft:200 tpot:50` (of ttft, tpot, e2el).
    #[arg(long, num_args = 1..)]
    pub goodput: Vec<String>,
    /// Seed of the prompts, lengths and arrivals.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Write vLLM's result JSON, one file per point.
    #[arg(long)]
    pub save_result: bool,
    /// Folder of the result JSON (default: the current directory).
    #[arg(long)]
    pub result_dir: Option<PathBuf>,
    /// Name of the result JSON (default: vLLM's `{backend}-{rate}qps[-concurrency{N}]-{model}-{date}.json`).
    #[arg(long)]
    pub result_filename: Option<String>,
    /// The result's label and the prefix of its file name (default: --backend).
    #[arg(long)]
    pub label: Option<String>,
    /// KEY=VALUE pairs saved in the result JSON.
    #[arg(long, num_args = 1..)]
    pub metadata: Vec<String>,
    /// Accepted: servelab shows no progress bar (one line per point).
    #[arg(long)]
    pub disable_tqdm: bool,
    /// servelab: accepted for older command lines; --num-prompts is always exact.
    #[arg(long, hide = true)]
    pub exact_requests: bool,
    /// servelab: repeats of each point (--save-result needs 1).
    #[arg(long, default_value_t = 1)]
    pub repeats: u32,
    /// servelab: token ids of random prompts are drawn below this (default 1000: safe for any vocabulary).
    #[arg(long)]
    pub vocab_size: Option<u64>,
    /// servelab: non-streaming requests (no TTFT).
    #[arg(long)]
    pub no_stream: bool,
    /// servelab: the folder that receives the run folder.
    #[arg(long, default_value = "out")]
    pub out: PathBuf,
    #[arg(long)]
    pub run_id: Option<String>,
    /// servelab: OS threads the client runs on (`load.client_threads`); a comma list runs one point per value.
    #[arg(long, value_delimiter = ',')]
    pub client_threads: Vec<u32>,
    /// servelab: how long one request may take before it counts as failed.
    #[arg(long, default_value = "60s", value_name = "DURATION")]
    pub request_timeout: String,
}

const PERCENTILE_METRICS: [&str; 5] = ["ttft", "tpot", "itl", "e2el", "client_queue_time"];

fn usage(text: String) -> Error {
    Error::Usage(text)
}

/// `--base-url`, else `http://HOST:PORT`, without a trailing `/` or `/v1`.
fn base_url(b: &BenchArgs) -> Result<String, Error> {
    let given = b.base_url.clone().unwrap_or_else(|| format!("http://{}:{}", b.host, b.port));
    let url = given.trim_end_matches('/').trim_end_matches("/v1").to_owned();
    if !plan::server::is_http_url(&url) {
        return Err(usage(format!(
            "--base-url {given}: not an http:// URL; write e.g. --base-url http://127.0.0.1:8000"
        )));
    }
    Ok(url)
}

/// `completions` or `chat`, from `--backend` and `--endpoint` (vLLM's chat backend needs the chat endpoint).
fn endpoint(b: &BenchArgs) -> Result<&'static str, Error> {
    let chat_path = match b.endpoint.trim_end_matches('/') {
        "/v1/completions" => false,
        "/v1/chat/completions" => true,
        other => {
            return Err(usage(format!(
                "--endpoint {other}: servelab posts to /v1/completions or /v1/chat/completions under --base-url"
            )));
        }
    };
    match (b.backend, chat_path) {
        (Backend::OpenaiChat, _) => Ok("chat"),
        (_, true) => Err(usage(
            "--endpoint /v1/chat/completions needs --backend openai-chat (as in vllm bench serve)".to_owned(),
        )),
        _ => Ok("completions"),
    }
}

/// The random dataset's lengths, vLLM 0.32's ranges: uniform integers in [floor(len·(1−r)), ceil(len·(1+r))]
/// (outputs at least 1); a fixed length when r is 0.
fn random_lengths(b: &BenchArgs) -> Result<(Value, Value), Error> {
    let r = b.random_range_ratio;
    if !(0.0..1.0).contains(&r) {
        return Err(usage(format!("--random-range-ratio {r}: must be in [0, 1), as in vllm bench serve")));
    }
    // The prefix comes on top of the drawn input length, as vLLM's total is prefix_len + the draw.
    let range = |len: u32, floor1: bool| {
        let lo = (f64::from(len) * (1.0 - r)).floor() as u32;
        let hi = (f64::from(len) * (1.0 + r)).ceil() as u32;
        let (lo, hi) =
            if floor1 { (lo.max(1), hi.max(1)) } else { (lo + b.random_prefix_len, hi + b.random_prefix_len) };
        if r == 0.0 { json!(lo) } else { json!({ "dist": "uniform", "min": lo, "max": hi }) }
    };
    if (f64::from(b.random_input_len) * (1.0 - r)).floor() + f64::from(b.random_prefix_len) < 1.0 {
        return Err(usage(format!(
            "--random-input-len {} with --random-range-ratio {r} can draw an empty prompt; raise the length or lower the ratio",
            b.random_input_len
        )));
    }
    Ok((range(b.random_input_len, false), range(b.random_output_len, true)))
}

/// The percentiles of `--metric-percentiles`, each in [0, 100].
pub(super) fn percentiles(b: &BenchArgs) -> Result<Vec<f64>, Error> {
    b.metric_percentiles
        .split(',')
        .map(|p| match p.trim().parse::<f64>() {
            Ok(v) if (0.0..=100.0).contains(&v) => Ok(v),
            _ => Err(usage(format!("--metric-percentiles: `{p}` is not a percentile in [0, 100]"))),
        })
        .collect()
}

/// The metrics of `--percentile-metrics`, each one servelab derives.
pub(super) fn percentile_metrics(b: &BenchArgs) -> Result<Vec<String>, Error> {
    b.percentile_metrics
        .split(',')
        .map(|m| {
            let m = m.trim();
            if PERCENTILE_METRICS.contains(&m) {
                Ok(m.to_owned())
            } else {
                Err(usage(format!("--percentile-metrics: `{m}` is not one of {}", PERCENTILE_METRICS.join(", "))))
            }
        })
        .collect()
}

/// The prompt source of `load`: random lengths, a dataset, or a trace (which also sets the arrivals).
fn prompts(b: &BenchArgs, load: &mut serde_json::Map<String, Value>) -> Result<(), Error> {
    let path = || {
        b.dataset_path.clone().ok_or_else(|| {
            usage(format!("--dataset-name {:?} needs --dataset-path FILE", b.dataset_name).to_lowercase())
        })
    };
    match b.dataset_name {
        DatasetName::Random => {
            let (input, output) = random_lengths(b)?;
            load.insert("prompt_tokens".into(), input);
            load.insert("max_tokens".into(), output);
            load.insert("vocab_size".into(), json!(b.vocab_size.unwrap_or(1000)));
            load.insert("shared_prefix_tokens".into(), json!(b.random_prefix_len));
        }
        _ if b.random_prefix_len > 0 => {
            return Err(usage("--random-prefix-len is for --dataset-name random".to_owned()));
        }
        DatasetName::Sharegpt | DatasetName::Custom => {
            let format = if b.dataset_name == DatasetName::Sharegpt { "sharegpt" } else { "jsonl" };
            let samples = b.num_prompts.unwrap_or(1000);
            load.insert("dataset".into(), json!({ "path": path()?, "format": format, "samples": samples }));
        }
        DatasetName::Mooncake => {
            load.insert("trace".into(), json!({ "path": path()?, "format": "mooncake" }));
        }
    }
    Ok(())
}

/// How requests arrive: all at once (closed loop of `--max-concurrency`, or of every request), at
/// `--request-rate`, or at a trace's timestamps (a trace under `--request-rate` is sent at that rate, in trace
/// order); the grid is one point per `--max-concurrency` value.
fn arrivals(b: &BenchArgs, load: &mut serde_json::Map<String, Value>) -> Result<Value, Error> {
    let requests = b.num_prompts.unwrap_or(1000);
    if requests == 0 {
        return Err(usage("--num-prompts must be at least 1".to_owned()));
    }
    let caps = &b.max_concurrency;
    if caps.contains(&0) {
        return Err(usage("--max-concurrency must be at least 1".to_owned()));
    }
    if !(b.burstiness.is_finite() && b.burstiness > 0.0) {
        return Err(usage(format!("--burstiness {}: must be a positive number", b.burstiness)));
    }
    let all_at_once = b.request_rate.is_infinite() && b.request_rate > 0.0;
    if b.dataset_name == DatasetName::Mooncake {
        if b.num_prompts.is_some() {
            return Err(usage(
                "--dataset-name mooncake sends every request of the trace once: drop --num-prompts (a spec's \
                 `load.trace.start` and `duration` cut a window of it)"
                    .to_owned(),
            ));
        }
        // Without --request-rate the trace's timestamps pace it; with one, that rate's schedule (below).
        if all_at_once {
            if caps.is_empty() {
                return Ok(json!({}));
            }
            load.insert("max_concurrency".into(), json!("{{ max_concurrency }}"));
            return Ok(json!({ "max_concurrency": caps }));
        }
    } else {
        load.insert("requests".into(), json!(requests));
        load.insert("exact_requests".into(), json!(true));
    }
    if all_at_once {
        // vLLM sends every request at once and lets --max-concurrency hold the rest back: a closed loop.
        load.insert("concurrency".into(), json!("{{ concurrency }}"));
        let levels = if caps.is_empty() { vec![requests] } else { caps.clone() };
        return Ok(json!({ "concurrency": levels }));
    }
    if b.request_rate.is_nan() || b.request_rate <= 0.0 {
        return Err(usage(format!("--request-rate {}: must be positive, or inf", b.request_rate)));
    }
    load.insert("rate".into(), json!(b.request_rate));
    if b.burstiness != 1.0 {
        load.insert("arrival".into(), json!("gamma"));
        load.insert("burstiness".into(), json!(b.burstiness));
    }
    if caps.is_empty() {
        // One point: a grid of one rate, so the report has its axis.
        load.insert("rate".into(), json!("{{ rate }}"));
        return Ok(json!({ "rate": [b.request_rate] }));
    }
    load.insert("max_concurrency".into(), json!("{{ max_concurrency }}"));
    Ok(json!({ "max_concurrency": caps }))
}

/// `--client-threads 1,2,4`: a grid axis over `load.client_threads`, one point per value (per other point).
fn client_threads(b: &BenchArgs, load: &mut serde_json::Map<String, Value>, grid: &mut Value) -> Result<(), Error> {
    if b.client_threads.is_empty() {
        return Ok(());
    }
    if b.client_threads.contains(&0) {
        return Err(usage("--client-threads must be at least 1".to_owned()));
    }
    load.insert("client_threads".into(), json!("{{ client_threads }}"));
    grid["client_threads"] = json!(b.client_threads);
    Ok(())
}

/// The spec `bench` runs, as a value: an external engine, the load the flags describe, and a grid of one
/// point per `--max-concurrency` value.
pub fn bench_spec_value(b: &BenchArgs) -> Result<Value, Error> {
    let url = base_url(b)?;
    let mut engine = json!({ "kind": "external", "base_url": url, "ready_path": "/v1/models" });
    if let Some(m) = &b.model {
        engine["model"] = m.as_str().into();
    }
    let mut load = serde_json::Map::new();
    load.insert("endpoint".into(), json!(endpoint(b)?));
    let mut grid = arrivals(b, &mut load)?;
    client_threads(b, &mut load, &mut grid)?;
    prompts(b, &mut load)?;
    for (k, v) in [
        ("warmup", json!(b.num_warmups)),
        // vLLM warms nothing up but --num-warmups.
        ("server_warmup", json!("0s")),
        ("ignore_eos", json!(b.ignore_eos)),
        ("stream", json!(!b.no_stream)),
        ("seed", json!(b.seed)),
        ("request_timeout", json!(b.request_timeout)),
    ] {
        load.insert(k.into(), v);
    }
    Ok(json!({
        "name": "bench",
        "description": format!("servelab bench against {url}"),
        "engine": engine,
        "grid": grid,
        "repeats": b.repeats,
        "load": load,
        "measure": { "memory": "procfs" },
    }))
}

/// The spec `bench` runs, checked against the spec's types and written out as YAML, to be stored with the
/// run like any spec.
pub fn bench_spec(b: &BenchArgs) -> Result<String, Error> {
    let spec: spec::Spec =
        serde_json::from_value(bench_spec_value(b)?).map_err(|e| Error::Usage(format!("bench: {e}")))?;
    serde_saphyr::to_string(&spec).map_err(|e| Error::Internal(format!("bench spec as YAML: {e}")))
}

/// `servelab bench`: the spec from the flags, planned and run like any other; then, with `--save-result`,
/// vLLM's result JSON of each point.
pub(super) fn bench(b: BenchArgs) -> Result<i32, Error> {
    let save = super::bench_result::Save::from_args(&b)?;
    let loaded = spec::load_str("servelab bench", &bench_spec(&b)?, &[])?;
    let plan = plan::build_located(&loaded)?;
    let opts = RunOptions::serial(b.out.clone(), b.run_id.clone());
    let (code, dir) = run_plan(&loaded, &plan, opts)?;
    if let (Some(save), Some(dir)) = (save, dir) {
        save.write(&dir)?;
    }
    Ok(code)
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
            Command::Bench(b) => *b,
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

    fn value(args: &[&str]) -> Value {
        bench_spec_value(&bench(args)).unwrap()
    }

    fn refused(args: &[&str]) -> String {
        match bench_spec_value(&bench(args)) {
            Err(Error::Usage(m)) => m,
            other => panic!("{args:?} gave {other:?}"),
        }
    }

    /// The spec a value stands for plans (no file is needed for the random dataset).
    fn plans(v: &Value) {
        let spec: spec::Spec = serde_json::from_value(v.clone()).unwrap();
        let text = serde_saphyr::to_string(&spec).unwrap();
        let loaded = spec::load_str("servelab bench", &text, &[]).unwrap();
        plan::build_located(&loaded).unwrap();
    }

    #[test]
    fn vllms_defaults_send_every_prompt_at_once() {
        let v = value(&[]);
        assert_eq!(v["engine"]["base_url"], "http://127.0.0.1:8000");
        assert_eq!(v["grid"], json!({ "concurrency": [1000] }));
        let load = &v["load"];
        assert_eq!((load["requests"].clone(), load["exact_requests"].clone()), (json!(1000), json!(true)));
        assert_eq!((load["prompt_tokens"].clone(), load["max_tokens"].clone()), (json!(1024), json!(128)));
        assert_eq!((load["ignore_eos"].clone(), load["warmup"].clone()), (json!(false), json!(0)));
        assert_eq!(load["server_warmup"], "0s");
        assert!(load.get("rate").is_none());
        plans(&v);
    }

    #[test]
    fn a_finite_rate_is_an_open_loop_capped_by_max_concurrency() {
        let v = value(&["--request-rate", "20", "--burstiness", "0.5", "--max-concurrency", "4,16", "--seed", "7"]);
        let load = &v["load"];
        assert_eq!(load["rate"], 20.0);
        assert_eq!((load["arrival"].clone(), load["burstiness"].clone()), (json!("gamma"), json!(0.5)));
        assert_eq!(load["max_concurrency"], "{{ max_concurrency }}");
        assert_eq!(v["grid"], json!({ "max_concurrency": [4, 16] }));
        assert_eq!(load["seed"], 7);
        assert!(load.get("concurrency").is_none());
        plans(&v);
        let poisson = value(&["--request-rate", "5"]);
        assert!(poisson["load"].get("arrival").is_none(), "burstiness 1 is Poisson, servelab's default");
        assert_eq!(poisson["grid"], json!({ "rate": [5.0] }));
        plans(&poisson);
        assert!(refused(&["--request-rate", "0"]).contains("positive"));
    }

    #[test]
    fn random_range_ratio_draws_vllms_ranges() {
        let v = value(&["--random-input-len", "100", "--random-output-len", "3", "--random-range-ratio", "0.25"]);
        assert_eq!(v["load"]["prompt_tokens"], json!({ "dist": "uniform", "min": 75, "max": 125 }));
        // floor(3 × 0.75) = 2, ceil(3 × 1.25) = 4.
        assert_eq!(v["load"]["max_tokens"], json!({ "dist": "uniform", "min": 2, "max": 4 }));
        plans(&v);
        let prefixed =
            value(&["--random-input-len", "100", "--random-prefix-len", "20", "--random-range-ratio", "0.25"]);
        assert_eq!(prefixed["load"]["prompt_tokens"], json!({ "dist": "uniform", "min": 95, "max": 145 }));
        assert_eq!(prefixed["load"]["shared_prefix_tokens"], 20);
        plans(&prefixed);
        assert!(refused(&["--random-range-ratio", "1"]).contains("[0, 1)"));
        assert!(refused(&["--random-input-len", "1", "--random-range-ratio", "0.5"]).contains("empty prompt"));
        // The old names are aliases.
        let old = value(&["--prompt-tokens", "32", "--max-tokens", "8", "--requests", "12", "--warmup", "1"]);
        assert_eq!((old["load"]["prompt_tokens"].clone(), old["load"]["max_tokens"].clone()), (json!(32), json!(8)));
        assert_eq!((old["load"]["requests"].clone(), old["load"]["warmup"].clone()), (json!(12), json!(1)));
    }

    #[test]
    fn datasets_chat_and_traces_map_to_their_spec_keys() {
        let v = value(&["--dataset-name", "sharegpt", "--dataset-path", "sg.json", "--num-prompts", "50"]);
        assert_eq!(v["load"]["dataset"], json!({ "path": "sg.json", "format": "sharegpt", "samples": 50 }));
        let v = value(&["--dataset-name", "custom", "--dataset-path", "c.jsonl"]);
        assert_eq!(v["load"]["dataset"]["format"], "jsonl");
        assert!(refused(&["--dataset-name", "custom"]).contains("--dataset-path"));
        let v = value(&["--dataset-name", "mooncake", "--dataset-path", "t.jsonl", "--max-concurrency", "8"]);
        assert_eq!(v["load"]["trace"], json!({ "path": "t.jsonl", "format": "mooncake" }));
        assert!(v["load"].get("requests").is_none() && v["load"].get("rate").is_none());
        assert_eq!(v["grid"], json!({ "max_concurrency": [8] }));
        let m = ["--dataset-name", "mooncake", "--dataset-path", "t.jsonl"];
        // --request-rate paces the trace's requests instead of its timestamps (the planner's tests check the
        // plan it makes; tests/it/trace.rs the arrivals).
        let paced = value(&[&m[..], &["--request-rate", "5", "--burstiness", "0.5"]].concat());
        assert_eq!(
            (paced["load"]["rate"].clone(), paced["load"]["burstiness"].clone()),
            (json!("{{ rate }}"), json!(0.5))
        );
        assert_eq!(paced["load"]["arrival"], "gamma");
        assert_eq!(paced["grid"], json!({ "rate": [5.0] }));
        assert!(paced["load"].get("requests").is_none(), "every request of the trace, once");
        assert!(refused(&[&m[..], &["--num-prompts", "5"]].concat()).contains("--num-prompts"));
        let chat = value(&["--backend", "openai-chat", "--endpoint", "/v1/chat/completions"]);
        assert_eq!(chat["load"]["endpoint"], "chat");
        assert_eq!(value(&["--backend", "vllm"])["load"]["endpoint"], "completions");
        assert!(refused(&["--endpoint", "/v1/chat/completions"]).contains("openai-chat"));
        assert!(refused(&["--endpoint", "/v1/embeddings"]).contains("/v1/completions"));
        assert_eq!(value(&["--host", "10.0.0.2", "--port", "9"])["engine"]["base_url"], "http://10.0.0.2:9");
    }

    #[test]
    fn client_threads_is_a_grid_axis_over_load_client_threads() {
        let b = bench(&["--request-rate", "50", "--client-threads", "1,2,4", "--num-prompts", "10"]);
        let loaded = spec::load_str("servelab bench", &bench_spec(&b).unwrap(), &[]).unwrap();
        let plan = plan::build_located(&loaded).unwrap();
        let threads: Vec<u32> =
            plan.groups.iter().flat_map(|g| &g.points).map(|p| p.client.as_ref().unwrap().client_threads).collect();
        assert_eq!(threads, [1, 2, 4], "one point per value");
        assert!(bench_spec(&bench(&["--client-threads", "0"])).is_err());
        // A closed loop cannot hold more threads than requests in flight: the planner says so.
        let over = bench(&["--max-concurrency", "2", "--client-threads", "4"]);
        let loaded = spec::load_str("servelab bench", &bench_spec(&over).unwrap(), &[]).unwrap();
        assert!(plan::build_located(&loaded).is_err());
    }
}
