//! Hugging Face Llama `config.json` to GGUF `llama.*` metadata, HF tensor names to GGUF names,
//! and the Q/K row permutation llama.cpp's rotary embedding expects.
//!
//! HF checkpoints store each attention head's rotary pairs as two halves (`x[i]`, `x[i+d/2]`,
//! the `rotate_half` convention); ggml's normal RoPE rotates adjacent pairs (`x[2i]`, `x[2i+1]`).
//! `convert_hf_to_gguf.py` therefore reorders the output rows of `q_proj` and `k_proj` per head;
//! [`permuted_row`] is that reordering, applied row by row while streaming.

use edgeact_runtime::gguf::Value;
use serde_json::Value as Json;
use std::path::Path;

/// `config.json` files larger than this are refused (real ones are a few KiB).
const MAX_CONFIG_BYTES: u64 = 16 << 20;

/// The hyper-parameters of a Llama-family model, from `config.json`.
#[derive(Clone, Debug, PartialEq)]
pub struct LlamaConfig {
    pub hidden_size: u32,
    pub intermediate_size: u32,
    pub n_layer: u32,
    pub n_head: u32,
    pub n_head_kv: u32,
    pub context_length: u32,
    pub rms_norm_eps: f32,
    pub rope_theta: f32,
    /// Linear RoPE scaling factor, if any.
    pub rope_linear_factor: Option<f32>,
    pub vocab_size: u32,
    pub tie_word_embeddings: bool,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
    pub pad_token_id: Option<u32>,
}

impl LlamaConfig {
    pub fn from_file(path: &Path) -> anyhow::Result<LlamaConfig> {
        let bytes = edgeact_runtime::files::read_regular(path, MAX_CONFIG_BYTES)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        let text = String::from_utf8(bytes).map_err(|_| anyhow::anyhow!("{} is not UTF-8", path.display()))?;
        LlamaConfig::from_json(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    pub fn from_json(text: &str) -> anyhow::Result<LlamaConfig> {
        let j: Json = serde_json::from_str(text).map_err(|e| anyhow::anyhow!("bad JSON: {e}"))?;
        if let Some(archs) = j.get("architectures").and_then(Json::as_array) {
            let ok = archs
                .iter()
                .filter_map(Json::as_str)
                .any(|a| a == "LlamaForCausalLM" || a == "MistralForCausalLM");
            if !ok {
                anyhow::bail!("architectures {archs:?}: only LlamaForCausalLM (and Mistral) checkpoints are supported");
            }
        }
        let int = |k: &str| -> anyhow::Result<Option<u32>> {
            match j.get(k) {
                None | Some(Json::Null) => Ok(None),
                Some(v) => v
                    .as_u64()
                    .and_then(|v| u32::try_from(v).ok())
                    .map(Some)
                    .ok_or_else(|| anyhow::anyhow!("{k} = {v} is not a positive 32-bit integer")),
            }
        };
        let req = |k: &str| -> anyhow::Result<u32> {
            match int(k)? {
                Some(0) => anyhow::bail!("{k} is 0"),
                Some(v) => Ok(v),
                None => anyhow::bail!("{k} is missing"),
            }
        };
        let float = |k: &str| -> anyhow::Result<Option<f32>> {
            match j.get(k) {
                None | Some(Json::Null) => Ok(None),
                Some(v) => v
                    .as_f64()
                    .map(|v| Some(v as f32))
                    .ok_or_else(|| anyhow::anyhow!("{k} = {v} is not a number")),
            }
        };
        let hidden_size = req("hidden_size")?;
        let n_head = req("num_attention_heads")?;
        let n_head_kv = int("num_key_value_heads")?.unwrap_or(n_head);
        if n_head_kv == 0 || hidden_size % n_head != 0 || n_head % n_head_kv != 0 {
            anyhow::bail!("hidden_size {hidden_size}, num_attention_heads {n_head}, num_key_value_heads {n_head_kv} are inconsistent");
        }
        if (hidden_size / n_head) % 2 != 0 {
            anyhow::bail!("head dimension {} is odd; RoPE needs pairs", hidden_size / n_head);
        }
        let rope_linear_factor = match j.get("rope_scaling") {
            None | Some(Json::Null) => None,
            Some(s) => {
                let ty = s
                    .get("type")
                    .or_else(|| s.get("rope_type"))
                    .and_then(Json::as_str)
                    .unwrap_or("");
                let factor = s.get("factor").and_then(Json::as_f64);
                match (ty, factor) {
                    ("linear", Some(f)) => Some(f as f32),
                    _ => anyhow::bail!("rope_scaling {s}: only linear scaling with a factor is supported"),
                }
            }
        };
        let eos = match j.get("eos_token_id") {
            // Some configs list several EOS ids; the first is the primary one.
            Some(Json::Array(a)) => a.first().and_then(Json::as_u64).and_then(|v| u32::try_from(v).ok()),
            _ => int("eos_token_id")?,
        };
        let cfg = LlamaConfig {
            hidden_size,
            intermediate_size: req("intermediate_size")?,
            n_layer: req("num_hidden_layers")?,
            n_head,
            n_head_kv,
            context_length: int("max_position_embeddings")?.unwrap_or(4096),
            rms_norm_eps: float("rms_norm_eps")?.unwrap_or(1e-6),
            rope_theta: float("rope_theta")?.unwrap_or(10000.0),
            rope_linear_factor,
            vocab_size: req("vocab_size")?,
            tie_word_embeddings: j.get("tie_word_embeddings").and_then(Json::as_bool).unwrap_or(false),
            bos_token_id: int("bos_token_id")?,
            eos_token_id: eos,
            pad_token_id: int("pad_token_id")?,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// The checks the runtime makes when it loads the converted file
    /// (`edgeact_runtime::model::LlamaConfig::from_gguf`), made here so a config the runtime
    /// would refuse is refused before hours of conversion rather than after.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.context_length == 0 {
            anyhow::bail!("max_position_embeddings is 0");
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 0.0) {
            anyhow::bail!("rope_theta {} is not a positive number", self.rope_theta);
        }
        if !(self.rms_norm_eps.is_finite() && self.rms_norm_eps >= 0.0) {
            anyhow::bail!("rms_norm_eps {} is not a non-negative number", self.rms_norm_eps);
        }
        if let Some(f) = self.rope_linear_factor {
            if !(f.is_finite() && f > 0.0) {
                anyhow::bail!("rope_scaling factor {f} is not a positive number");
            }
        }
        // Token ids are 32-bit signed in GGUF consumers (llama.cpp's llama_token).
        if self.vocab_size > i32::MAX as u32 {
            anyhow::bail!("vocab_size {} is larger than {}", self.vocab_size, i32::MAX);
        }
        Ok(())
    }

    pub fn head_dim(&self) -> u32 {
        self.hidden_size / self.n_head
    }

    /// The `llama.*` (and `general.architecture`) keys, in the order llama.cpp's converter
    /// writes them.
    pub fn metadata(&self) -> Vec<(String, Value)> {
        let mut m: Vec<(String, Value)> = vec![
            ("general.architecture".into(), Value::String("llama".into())),
            ("llama.vocab_size".into(), Value::U32(self.vocab_size)),
            ("llama.context_length".into(), Value::U32(self.context_length)),
            ("llama.embedding_length".into(), Value::U32(self.hidden_size)),
            ("llama.block_count".into(), Value::U32(self.n_layer)),
            ("llama.feed_forward_length".into(), Value::U32(self.intermediate_size)),
            ("llama.rope.dimension_count".into(), Value::U32(self.head_dim())),
            ("llama.attention.head_count".into(), Value::U32(self.n_head)),
            ("llama.attention.head_count_kv".into(), Value::U32(self.n_head_kv)),
            ("llama.rope.freq_base".into(), Value::F32(self.rope_theta)),
            (
                "llama.attention.layer_norm_rms_epsilon".into(),
                Value::F32(self.rms_norm_eps),
            ),
        ];
        if let Some(f) = self.rope_linear_factor {
            m.push(("llama.rope.scaling.type".into(), Value::String("linear".into())));
            m.push(("llama.rope.scaling.factor".into(), Value::F32(f)));
        }
        m
    }
}

/// What an HF tensor becomes in the GGUF file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapped {
    pub gguf_name: String,
    /// Permute the rows for RoPE with this many heads (Q: n_head, K: n_head_kv).
    pub permute_heads: Option<u32>,
    /// Sort key: token_embd, layers in order (fixed order inside a layer), output_norm, output.
    pub order: (u32, u32, u32),
}

/// The GGUF names (`blk.N.<name>.weight`) of every tensor a Llama transformer block has.
pub const BLOCK_TENSORS: [&str; 9] = [
    "attn_norm",
    "attn_q",
    "attn_k",
    "attn_v",
    "attn_output",
    "ffn_norm",
    "ffn_gate",
    "ffn_up",
    "ffn_down",
];

/// Maps an HF Llama tensor name; `Ok(None)` for tensors that carry no weights in GGUF
/// (`rotary_emb.inv_freq`), an error for names this converter does not know.
pub fn map_name(name: &str, cfg: &LlamaConfig) -> anyhow::Result<Option<Mapped>> {
    let fixed = |g: &str, order: (u32, u32, u32)| {
        Ok(Some(Mapped {
            gguf_name: g.into(),
            permute_heads: None,
            order,
        }))
    };
    match name {
        "model.embed_tokens.weight" => return fixed("token_embd.weight", (0, 0, 0)),
        "model.norm.weight" => return fixed("output_norm.weight", (2, 0, 0)),
        "lm_head.weight" => return fixed("output.weight", (3, 0, 0)),
        _ => {}
    }
    if name.ends_with("rotary_emb.inv_freq") {
        return Ok(None);
    }
    let rest = name
        .strip_prefix("model.layers.")
        .ok_or_else(|| anyhow::anyhow!("unknown tensor {name:?} (not a Llama weight)"))?;
    let (layer, suffix) = rest
        .split_once('.')
        .ok_or_else(|| anyhow::anyhow!("unknown tensor {name:?}"))?;
    let layer: u32 = layer
        .parse()
        .map_err(|_| anyhow::anyhow!("tensor {name:?}: bad layer number"))?;
    if layer >= cfg.n_layer {
        anyhow::bail!(
            "tensor {name:?}: layer {layer} but num_hidden_layers is {}",
            cfg.n_layer
        );
    }
    let (g, idx, permute) = match suffix {
        "input_layernorm.weight" => ("attn_norm.weight", 0, None),
        "self_attn.q_proj.weight" => ("attn_q.weight", 1, Some(cfg.n_head)),
        "self_attn.k_proj.weight" => ("attn_k.weight", 2, Some(cfg.n_head_kv)),
        "self_attn.v_proj.weight" => ("attn_v.weight", 3, None),
        "self_attn.o_proj.weight" => ("attn_output.weight", 4, None),
        "post_attention_layernorm.weight" => ("ffn_norm.weight", 5, None),
        "mlp.gate_proj.weight" => ("ffn_gate.weight", 6, None),
        "mlp.up_proj.weight" => ("ffn_up.weight", 7, None),
        "mlp.down_proj.weight" => ("ffn_down.weight", 8, None),
        _ => anyhow::bail!("unknown tensor {name:?} (biases and non-Llama layers are not supported)"),
    };
    Ok(Some(Mapped {
        gguf_name: format!("blk.{layer}.{g}"),
        permute_heads: permute,
        order: (1, layer, idx),
    }))
}

/// The source row that lands at output row `r` after the RoPE permutation of a
/// `[n_heads * head_dim, in]` weight: per head, rows `(half, i)` move to `(i, half)`.
pub fn permuted_row(r: usize, n_rows: usize, n_heads: usize) -> usize {
    let head_dim = n_rows / n_heads;
    let half = head_dim / 2;
    let (h, within) = (r / head_dim, r % head_dim);
    let (i, j) = (within / 2, within % 2);
    h * head_dim + j * half + i
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutation_matches_reshape_swapaxes() {
        // numpy: w.reshape(n_head, 2, hd/2, ...).swapaxes(1, 2).reshape(w.shape), n_head=2, hd=4.
        // Source rows [0..8): head 0 = [0 1 | 2 3], head 1 = [4 5 | 6 7] -> [0 2 1 3 4 6 5 7].
        let got: Vec<usize> = (0..8).map(|r| permuted_row(r, 8, 2)).collect();
        assert_eq!(got, [0, 2, 1, 3, 4, 6, 5, 7]);
        // It is a permutation for a GQA-sized K too.
        let mut rows: Vec<usize> = (0..96).map(|r| permuted_row(r, 96, 3)).collect();
        rows.sort();
        assert_eq!(rows, (0..96).collect::<Vec<_>>());
    }

    #[test]
    fn config_keys() {
        let cfg = LlamaConfig::from_json(
            r#"{"architectures":["LlamaForCausalLM"],"hidden_size":64,"intermediate_size":172,
            "num_hidden_layers":2,"num_attention_heads":8,"num_key_value_heads":4,"max_position_embeddings":512,
            "rms_norm_eps":1e-5,"rope_theta":500000.0,"rope_scaling":{"type":"linear","factor":4.0},"vocab_size":32000}"#,
        )
        .unwrap();
        assert_eq!(cfg.head_dim(), 8);
        let m = cfg.metadata();
        let get = |k: &str| m.iter().find(|(kk, _)| kk == k).map(|(_, v)| v.clone()).unwrap();
        assert_eq!(get("llama.attention.head_count_kv"), Value::U32(4));
        assert_eq!(get("llama.rope.freq_base"), Value::F32(500000.0));
        assert_eq!(get("llama.rope.scaling.factor"), Value::F32(4.0));
        assert_eq!(get("llama.context_length"), Value::U32(512));
        assert!(LlamaConfig::from_json(r#"{"architectures":["GPT2LMHeadModel"]}"#).is_err());
        assert!(LlamaConfig::from_json(r#"{"hidden_size":64,"num_attention_heads":3}"#).is_err());
        let err = LlamaConfig::from_json(
            r#"{"hidden_size":64,"intermediate_size":1,"num_hidden_layers":1,"num_attention_heads":8,"vocab_size":1,
            "rope_scaling":{"type":"yarn","factor":2}}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("linear"), "{err}");
    }

    /// Values the runtime refuses when it loads the converted file (issue #12): the converter
    /// used to accept them and write a file that could not be loaded.
    #[test]
    fn configs_the_runtime_refuses_are_refused() {
        let with = |extra: &str| {
            LlamaConfig::from_json(&format!(
                r#"{{"hidden_size":64,"intermediate_size":172,"num_hidden_layers":2,"num_attention_heads":8,
                "vocab_size":32000{extra}}}"#
            ))
        };
        with("").unwrap();
        for (extra, expect) in [
            (r#","vocab_size":4294967295"#, "vocab_size 4294967295"),
            (
                r#","rope_scaling":{"type":"linear","factor":0}"#,
                "rope_scaling factor 0",
            ),
            (
                r#","rope_scaling":{"type":"linear","factor":-2.0}"#,
                "rope_scaling factor -2",
            ),
            (r#","rms_norm_eps":-1e-6"#, "rms_norm_eps -0.000001"),
            (r#","rms_norm_eps":"small""#, "rms_norm_eps = \"small\" is not a number"),
            (r#","rope_theta":0"#, "rope_theta 0"),
            (r#","rope_theta":1e300"#, "rope_theta inf"),
            (r#","max_position_embeddings":0"#, "max_position_embeddings is 0"),
        ] {
            let err = with(extra).unwrap_err().to_string();
            assert!(err.contains(expect), "{extra}: {err}");
        }
    }

    #[test]
    fn names() {
        let cfg = LlamaConfig::from_json(
            r#"{"hidden_size":64,"intermediate_size":1,"num_hidden_layers":2,"num_attention_heads":8,"num_key_value_heads":2,"vocab_size":1}"#,
        )
        .unwrap();
        let m = map_name("model.layers.1.self_attn.k_proj.weight", &cfg)
            .unwrap()
            .unwrap();
        assert_eq!(
            (m.gguf_name.as_str(), m.permute_heads),
            ("blk.1.attn_k.weight", Some(2))
        );
        assert_eq!(
            map_name("model.layers.0.self_attn.rotary_emb.inv_freq", &cfg).unwrap(),
            None
        );
        assert!(map_name("model.layers.2.mlp.up_proj.weight", &cfg).is_err());
        assert!(map_name("transformer.h.0.attn.weight", &cfg).is_err());
    }
}
