//! Model facts from a local config.json: the theoretical KV bytes per token,
//! 2 × layers × KV heads × head_dim × dtype bytes, or why the formula does not apply.

pub use crate::record::server::ModelFacts;
use serde_json::Value;

/// Why a model folder's facts or shape cannot be read; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("config.json is not JSON: {0}; point `engine.model` at a Hugging Face model folder")]
    ConfigNotJson(#[source] serde_json::Error),
    #[error("config.json has no {0}; the capacity model needs it")]
    MissingKey(&'static str),
    #[error("unknown KV dtype `{0}`; pass --kv-cache-dtype auto, fp8 or a float type")]
    UnknownKvDtype(String),
    /// Why the KV formula does not apply (MLA, sliding windows, missing shape keys).
    #[error("{0}")]
    NoKvFormula(String),
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {why}; the file is not a safetensors file, or it is damaged")]
    Safetensors { path: String, why: String },
    #[error("{0} holds no .safetensors file")]
    NoWeights(String),
}

fn dtype_bytes(dtype: &str) -> Option<u64> {
    let d = dtype.to_lowercase();
    match d.as_str() {
        "float32" | "fp32" | "float" => Some(4),
        "bfloat16" | "bf16" | "float16" | "fp16" | "half" => Some(2),
        _ if d.starts_with("fp8") || d.starts_with("int8") => Some(1),
        _ => None,
    }
}

/// `engine_dtype` is the `--dtype` arg and `kv_cache_dtype` the `--kv-cache-dtype` arg, when given.
pub fn from_config(
    config_text: &str,
    engine_dtype: Option<&str>,
    kv_cache_dtype: Option<&str>,
) -> Result<ModelFacts, ModelError> {
    let root: Value = serde_json::from_str(config_text).map_err(ModelError::ConfigNotJson)?;
    // Multimodal configs keep the language model under text_config.
    let cfg = root.get("text_config").filter(|v| v.is_object()).unwrap_or(&root);
    let int = |k: &str| cfg.get(k).and_then(Value::as_u64);
    let layers = int("num_hidden_layers");
    let heads = int("num_attention_heads");
    let kv_heads = int("num_key_value_heads").or(heads);
    let head_dim = int("head_dim").or_else(|| Some(int("hidden_size")? / heads.filter(|h| *h > 0)?));
    let model_dtype = cfg
        .get("dtype")
        .or(cfg.get("torch_dtype"))
        .or(root.get("torch_dtype"))
        .and_then(Value::as_str)
        .unwrap_or("bfloat16");
    let weights_dtype = engine_dtype.filter(|d| *d != "auto").unwrap_or(model_dtype);
    let kv_dtype = kv_cache_dtype.filter(|d| *d != "auto").unwrap_or(weights_dtype).to_owned();
    let kv_dtype_bytes = dtype_bytes(&kv_dtype).ok_or_else(|| ModelError::UnknownKvDtype(kv_dtype.clone()))?;
    let not_applicable = not_applicable(cfg);
    let theory = match (layers, kv_heads, head_dim, &not_applicable) {
        (Some(l), Some(k), Some(h), None) => Some(2 * l * k * h * kv_dtype_bytes),
        _ => None,
    };
    Ok(ModelFacts {
        config_hash: crate::record::short_hash(config_text.as_bytes()),
        model_type: cfg.get("model_type").and_then(Value::as_str).map(str::to_owned),
        layers,
        kv_heads,
        head_dim,
        max_position_embeddings: int("max_position_embeddings"),
        vocab_size: int("vocab_size").or_else(|| root.get("vocab_size").and_then(Value::as_u64)),
        kv_dtype,
        kv_dtype_bytes,
        theory_bytes_per_token: theory,
        theory_not_applicable: not_applicable,
    })
}

/// Why the full-attention formula would mislead for this architecture (vLLM's kv_cache_interface.py has
/// per-kind specs for these); flag rather than guess.
fn not_applicable(cfg: &Value) -> Option<String> {
    let get = |k: &str| cfg.get(k).filter(|v| !v.is_null());
    if get("kv_lora_rank").is_some() {
        return Some("theory not applicable: MLA (compressed latent KV)".into());
    }
    if let Some(types) = get("layer_types").and_then(Value::as_array)
        && types.iter().any(|t| t.as_str() != Some("full_attention"))
    {
        return Some("theory not applicable: hybrid or sliding-window layers (layer_types)".into());
    }
    if get("layers_block_type").is_some() || get("attn_layer_indices").is_some() {
        return Some("theory not applicable: hybrid attention/state-space model".into());
    }
    // Qwen2 configs carry sliding_window with use_sliding_window: false (full attention).
    let uses_window = get("use_sliding_window").and_then(Value::as_bool).unwrap_or(true);
    if get("sliding_window").is_some() && uses_window {
        return Some("theory not applicable: sliding-window attention".into());
    }
    None
}

/// A safetensors header larger than this is refused (the largest real ones are a few MB).
const MAX_HEADER_BYTES: u64 = 64 << 20;

/// Bytes of the tensors stored in one safetensors file, from its header alone (8 bytes of length, then JSON
/// naming each tensor's byte range): the file's data is never read.
pub fn safetensors_bytes(path: &std::path::Path) -> Result<u64, ModelError> {
    use std::io::Read;
    let name = path.display().to_string();
    let bad = |why: String| ModelError::Safetensors { path: name.clone(), why };
    let mut f = std::fs::File::open(path).map_err(|source| ModelError::Io { path: name.clone(), source })?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len).map_err(|e| bad(format!("no safetensors header: {e}")))?;
    let len = u64::from_le_bytes(len);
    if len > MAX_HEADER_BYTES {
        return Err(bad(format!("a safetensors header of {len} bytes is not plausible")));
    }
    let mut header = vec![0u8; len as usize];
    f.read_exact(&mut header).map_err(|e| bad(format!("truncated safetensors header: {e}")))?;
    let map: serde_json::Map<String, Value> =
        serde_json::from_slice(&header).map_err(|e| bad(format!("safetensors header is not JSON: {e}")))?;
    Ok(map
        .iter()
        .filter(|(k, _)| *k != "__metadata__")
        .filter_map(|(_, v)| {
            let o = v.get("data_offsets")?.as_array()?;
            Some(o.get(1)?.as_u64()?.saturating_sub(o.first()?.as_u64()?))
        })
        .sum())
}

/// The capacity model's view of a model folder: config.json's shape and the safetensors files' tensor bytes as
/// stored (a `--dtype` other than the stored one, and quantisation, are not modelled). Needs a full-attention
/// model (the KV formula).
pub fn shape(
    dir: &std::path::Path,
    facts: &ModelFacts,
    config_text: &str,
) -> Result<crate::record::capacity::ModelShape, ModelError> {
    let kv_bytes_per_token = facts.theory_bytes_per_token.ok_or_else(|| {
        ModelError::NoKvFormula(
            facts
                .theory_not_applicable
                .clone()
                .unwrap_or_else(|| "the KV formula needs layers, KV heads and head_dim".into()),
        )
    })?;
    let root: Value = serde_json::from_str(config_text).map_err(ModelError::ConfigNotJson)?;
    let cfg = root.get("text_config").filter(|v| v.is_object()).unwrap_or(&root);
    let int = |k: &'static str| cfg.get(k).and_then(Value::as_u64).ok_or(ModelError::MissingKey(k));
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
        .map_err(|source| ModelError::Io { path: dir.display().to_string(), source })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(ModelError::NoWeights(dir.display().to_string()));
    }
    let stored: u64 = files.iter().map(|p| safetensors_bytes(p)).sum::<Result<u64, ModelError>>()?;
    let model_dtype = cfg.get("dtype").or(cfg.get("torch_dtype")).and_then(Value::as_str).and_then(dtype_bytes);
    Ok(crate::record::capacity::ModelShape {
        weights_bytes: stored,
        kv_bytes_per_token,
        hidden: int("hidden_size")?,
        intermediate: int("intermediate_size")?,
        vocab: facts.vocab_size.ok_or(ModelError::MissingKey("vocab_size"))?,
        dtype_bytes: model_dtype.unwrap_or(2),
        max_position_embeddings: facts.max_position_embeddings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qwen25_05b_is_12288_bytes_per_token() {
        let cfg = r#"{"model_type":"qwen2","num_hidden_layers":24,"num_attention_heads":14,"num_key_value_heads":2,"hidden_size":896,"sliding_window":32768,"use_sliding_window":false,"torch_dtype":"bfloat16","max_position_embeddings":32768}"#;
        let f = from_config(cfg, None, None).unwrap();
        assert_eq!(f.head_dim, Some(64));
        assert_eq!(f.theory_bytes_per_token, Some(12_288));
        assert_eq!(from_config(cfg, None, Some("fp8")).unwrap().theory_bytes_per_token, Some(6_144));
    }

    #[test]
    fn tiny_llama_is_2048_bytes_per_token() {
        let cfg = r#"{"model_type":"llama","num_hidden_layers":4,"num_attention_heads":4,"num_key_value_heads":2,"head_dim":64,"hidden_size":256,"dtype":"bfloat16"}"#;
        assert_eq!(from_config(cfg, Some("bfloat16"), None).unwrap().theory_bytes_per_token, Some(2048));
        assert_eq!(from_config(cfg, Some("float32"), None).unwrap().theory_bytes_per_token, Some(4096));
    }

    #[test]
    fn flags_architectures_where_the_formula_misleads() {
        let mla = r#"{"num_hidden_layers":2,"num_attention_heads":4,"hidden_size":256,"kv_lora_rank":512}"#;
        assert!(from_config(mla, None, None).unwrap().theory_not_applicable.unwrap().contains("MLA"));
        let swa = r#"{"num_hidden_layers":2,"num_attention_heads":4,"hidden_size":256,"sliding_window":4096}"#;
        let f = from_config(swa, None, None).unwrap();
        assert!(f.theory_not_applicable.unwrap().contains("sliding"));
        assert_eq!(f.theory_bytes_per_token, None);
        let hybrid = r#"{"num_hidden_layers":2,"num_attention_heads":4,"hidden_size":256,"layer_types":["full_attention","linear_attention"]}"#;
        assert!(from_config(hybrid, None, None).unwrap().theory_not_applicable.is_some());
        assert!(from_config("not json", None, None).is_err());
    }

    #[test]
    fn safetensors_bytes_are_read_from_the_header_alone() {
        let dir = tempfile::tempdir().unwrap();
        let header = br#"{"__metadata__":{"format":"pt"},"a":{"dtype":"BF16","shape":[2,3],"data_offsets":[0,12]},"b":{"dtype":"F32","shape":[5],"data_offsets":[12,32]}}"#;
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header);
        bytes.extend_from_slice(&[0u8; 32]);
        let path = dir.path().join("model.safetensors");
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(safetensors_bytes(&path).unwrap(), 32);
        std::fs::write(&path, u64::MAX.to_le_bytes()).unwrap();
        assert!(safetensors_bytes(&path).unwrap_err().to_string().contains("not plausible"));
    }
}
