//! The pre-flight capacity prediction as recorded (plan output and `startup.json`): the model's shape, the
//! engine's knobs, and each term of the KV pool with where it came from. `plan::capacity` computes it.

use serde::{Deserialize, Serialize};

/// What the model folder says (config.json and the safetensors headers).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelShape {
    pub weights_bytes: u64,
    pub kv_bytes_per_token: u64,
    pub hidden: u64,
    pub intermediate: u64,
    pub vocab: u64,
    pub dtype_bytes: u64,
    pub max_position_embeddings: Option<u64>,
}

/// The engine arguments the model reads (None: vLLM's default).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Knobs {
    pub util: Option<f64>,
    pub tp: Option<u64>,
    pub max_num_seqs: Option<u64>,
    pub max_num_batched_tokens: Option<u64>,
    pub kv_cache_memory_bytes: Option<u64>,
    pub block_size: Option<u64>,
    pub max_model_len: Option<u64>,
}

/// One term of the prediction, in bytes per GPU, and where it comes from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Term {
    pub name: String,
    pub bytes: f64,
    pub source: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Capacity {
    pub terms: Vec<Term>,
    /// KV pool per GPU.
    pub pool_bytes: f64,
    /// KV tokens the engine will report (whole blocks).
    pub kv_tokens: u64,
    /// Full-length requests the pool holds at max-model-len (vLLM's "Maximum concurrency").
    pub max_concurrency: Option<f64>,
    /// None: it starts; else why it cannot.
    pub cannot_start: Option<String>,
}

/// The value of a flag in a command line, written `--flag value` or `--flag=value` (the first of `names`
/// found); the one parser of engine flags in recorded argv.
pub fn flag(argv: &[String], names: &[&str]) -> Option<String> {
    argv.iter().enumerate().find_map(|(i, a)| {
        names.iter().find_map(|n| match a.strip_prefix(n) {
            Some("") => argv.get(i + 1).cloned(),
            Some(rest) => rest.strip_prefix('=').map(str::to_owned),
            None => None,
        })
    })
}

/// `--gpu-memory-utilization` of a command line, when given.
pub fn util_of(argv: &[String]) -> Option<f64> {
    flag(argv, &["--gpu-memory-utilization"])?.parse().ok()
}
