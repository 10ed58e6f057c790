//! The pre-flight capacity model: from the model folder's facts, the engine arguments and the GPU's memory,
//! what vLLM's V1 engine will give the KV cache and whether a server can start at all — before starting it.
//!
//! It follows vLLM's own steps (vllm/v1/worker/gpu_worker.py, `determine_available_memory`, vLLM 0.26):
//!   pool per GPU = gpu_memory_utilization × total − weights − peak activation − non-torch memory,
//! where `total` is what the CUDA runtime reports (NVML's total less its reserved memory), the weights are the
//! tensors of the safetensors files split over the tensor-parallel ranks, the peak activation is that of the
//! profile run (`profile_run`: one forward pass of `max_num_batched_tokens` tokens, then the sampler over
//! `min(max_num_seqs, max_num_batched_tokens)` rows of logits), and the non-torch memory (cuBLAS workspaces,
//! the CUDA graph pool's bookkeeping) is a constant. KV tokens are the pool over the bytes a token takes on one
//! rank, in whole blocks. Every term says where it came from; `--kv-cache-memory-bytes` skips all of them.

pub use crate::record::capacity::{Capacity, Knobs, ModelShape, Term};

pub const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
/// vLLM 0.26's default `--gpu-memory-utilization`.
pub const DEFAULT_UTIL: f64 = 0.92;
/// Non-torch memory vLLM 0.26 reported on an H200 (0.22 GiB in its "Actual usage is ..." line); on two ranks
/// the communication buffers add some 0.3 GiB per rank, which this constant does not model.
pub const NON_TORCH_BYTES: f64 = 0.22 * GIB;
/// GPUs with at least this much memory get vLLM's large-GPU scheduler defaults (8192 batched tokens, 1024
/// sequences: "Chunked prefill is enabled with max_num_batched_tokens=8192" on the H200); smaller ones 2048/256.
const LARGE_GPU_BYTES: f64 = 70.0 * GIB;

/// The knobs of a vLLM command line (`--flag value` or `--flag=value`).
pub fn knobs(argv: &[String]) -> Knobs {
    let get = |names: &[&str]| crate::record::capacity::flag(argv, names);
    let int = |names: &[&str]| get(names).and_then(|v| v.parse::<u64>().ok());
    Knobs {
        util: get(&["--gpu-memory-utilization"]).and_then(|v| v.parse().ok()),
        tp: int(&["--tensor-parallel-size", "-tp"]),
        max_num_seqs: int(&["--max-num-seqs"]),
        max_num_batched_tokens: int(&["--max-num-batched-tokens"]),
        kv_cache_memory_bytes: int(&["--kv-cache-memory-bytes"]),
        block_size: int(&["--block-size"]),
        max_model_len: int(&["--max-model-len"]),
    }
}

fn term(name: &str, bytes: f64, source: impl Into<String>) -> Term {
    Term { name: name.to_owned(), bytes, source: source.into() }
}

/// The prediction for one server configuration on a GPU whose CUDA-visible memory is `gpu_bytes`.
pub fn predict(m: &ModelShape, k: &Knobs, gpu_bytes: f64) -> Capacity {
    let tp = k.tp.unwrap_or(1).max(1);
    let large = gpu_bytes >= LARGE_GPU_BYTES;
    let batched = k.max_num_batched_tokens.unwrap_or(if large { 8192 } else { 2048 });
    let seqs = k.max_num_seqs.unwrap_or(if large { 1024 } else { 256 });
    let util = k.util.unwrap_or(DEFAULT_UTIL);
    let weights = m.weights_bytes as f64 / tp as f64;
    let requested = util * gpu_bytes;
    let mut terms = vec![term("requested", requested, format!("{util} × {:.2} GiB (CUDA total)", gpu_bytes / GIB))];
    terms.push(term("weights", weights, format!("safetensors tensors / {tp} rank(s)")));
    let pool = match k.kv_cache_memory_bytes {
        Some(b) => {
            terms.push(term("kv_cache_memory_bytes", b as f64, "--kv-cache-memory-bytes (no profiling)"));
            b as f64
        }
        None => {
            // The profile run's peak is the larger of the forward pass (the MLP's gate/up projection and its
            // activation dominate) and the sampler's logits (bf16 rows of the whole vocabulary).
            let mlp = batched * (2 * m.hidden + 3 * m.intermediate / tp) * m.dtype_bytes;
            let logits = seqs.min(batched) * m.vocab * m.dtype_bytes;
            let (act, why) = if mlp >= logits {
                (mlp, format!("forward pass of {batched} tokens: (2 × hidden + 3 × intermediate / tp) × dtype"))
            } else {
                (logits, format!("sampler logits: min({seqs} seqs, {batched} tokens) × vocab {} × dtype", m.vocab))
            };
            terms.push(term("peak_activation", act as f64, why));
            terms.push(term("non_torch", NON_TORCH_BYTES, "constant: vLLM 0.26 on an H200 reported 0.22 GiB"));
            requested - weights - act as f64 - NON_TORCH_BYTES
        }
    };
    let block = k.block_size.unwrap_or(16).max(1);
    let per_rank_token = (m.kv_bytes_per_token as f64 / tp as f64).max(1.0);
    let blocks = (pool.max(0.0) / (per_rank_token * block as f64)).floor() as u64;
    let kv_tokens = blocks * block;
    let len = k.max_model_len.or(m.max_position_embeddings);
    let cannot_start = if weights > requested {
        Some(format!("the weights ({:.2} GiB per GPU) exceed the requested {:.2} GiB", weights / GIB, requested / GIB))
    } else if pool <= 0.0 {
        Some(format!("no memory left for the KV cache ({:.2} GiB)", pool / GIB))
    } else {
        match len {
            Some(l) if kv_tokens < l => {
                Some(format!("the KV cache holds {kv_tokens} tokens, fewer than one request of max-model-len {l}"))
            }
            _ => None,
        }
    };
    Capacity {
        terms,
        pool_bytes: pool,
        kv_tokens,
        max_concurrency: len.map(|l| kv_tokens as f64 / l as f64),
        cannot_start,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kit's model: Qwen2.5-0.5B's shape (494,032,768 bf16 parameters, tied embeddings).
    fn qwen() -> ModelShape {
        ModelShape {
            weights_bytes: 494_032_768 * 2,
            kv_bytes_per_token: 12_288,
            hidden: 896,
            intermediate: 4864,
            vocab: 151_936,
            dtype_bytes: 2,
            max_position_embeddings: Some(32_768),
        }
    }

    fn argv(s: &str) -> Vec<String> {
        s.split(' ').map(str::to_owned).collect()
    }

    #[test]
    fn knobs_come_from_either_flag_form() {
        let k = knobs(&argv("serve m --max-model-len 4096 --gpu-memory-utilization=0.5 -tp 2"));
        assert_eq!((k.max_model_len, k.util, k.tp), (Some(4096), Some(0.5), Some(2)));
        assert_eq!(knobs(&argv("serve m --max-num-seqs-x 3")).max_num_seqs, None);
    }

    /// The terms against what vLLM 0.26 logged on an H200 (examples/h200-prefix-cache: "Free memory on device
    /// (139.29/139.8 GiB) ... Actual usage is 0.93 GiB for weight, 0.34 GiB for peak activation, 0.22 GiB for
    /// non-torch memory"; "Available KV cache memory: 127.11 GiB"; "GPU KV cache size: 11,107,024 tokens").
    #[test]
    fn the_h200_default_start_is_predicted_within_half_a_percent() {
        let c = predict(&qwen(), &Knobs { max_model_len: Some(4096), ..Default::default() }, 139.8 * GIB);
        let got = c.kv_tokens as f64;
        assert!((got / 11_107_024.0 - 1.0).abs() < 0.005, "{got} {:?}", c.terms);
        assert!(c.cannot_start.is_none());
        assert!((c.max_concurrency.unwrap() - 2711.68).abs() / 2711.68 < 0.005);
    }

    /// Two ranks (examples/h200x2-tp2: "Available KV cache memory: 127.31 GiB" per rank, 22,249,712 tokens):
    /// weights and KV heads split in two; the logits and the non-torch constant do not (the communication
    /// buffers TP adds are not modelled, which the 0.5% target leaves room for).
    #[test]
    fn the_h200_tp2_start_is_predicted_within_half_a_percent() {
        let k = Knobs { tp: Some(2), max_model_len: Some(2048), ..Default::default() };
        let c = predict(&qwen(), &k, 139.8 * GIB);
        assert!((c.kv_tokens as f64 / 22_249_712.0 - 1.0).abs() < 0.005, "{} {:?}", c.kv_tokens, c.terms);
    }

    #[test]
    fn a_pool_too_small_for_one_request_cannot_start() {
        let k = Knobs { util: Some(0.01), max_model_len: Some(32_768), ..Default::default() };
        let c = predict(&qwen(), &k, 139.8 * GIB);
        assert!(c.cannot_start.as_deref().unwrap().contains("no memory left"), "{c:?}");
        let k = Knobs { kv_cache_memory_bytes: Some(12_288 * 1000), max_model_len: Some(4096), ..Default::default() };
        let c = predict(&qwen(), &k, 139.8 * GIB);
        assert_eq!(c.kv_tokens, 992);
        assert!(c.cannot_start.as_deref().unwrap().contains("fewer than one request"), "{c:?}");
    }
}
