//! Hyper-parameters of a Llama-family model, read from a GGUF file's `<arch>.*` metadata.

use super::ModelError;
use crate::gguf::GgufFile;

/// `general.architecture` values whose GGUF tensors, metadata keys and forward pass are exactly
/// Llama's. "mistral" is written by some third-party converters for Mistral-7B, which has Llama's
/// shape; its 4096-token sliding window is not applied, so contexts beyond 4096 tokens differ
/// from the reference for that model.
pub const SUPPORTED_ARCHITECTURES: &[&str] = &["llama", "mistral"];

/// Tensors every transformer block has: attention and FFN norms, Q, K, V, O, gate, up, down.
const TENSORS_PER_BLOCK: usize = 9;

/// How RoPE positions are scaled for context extension.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RopeScaling {
    None,
    /// Positions are divided by `factor` ("linear" / position interpolation).
    Linear {
        factor: f32,
    },
}

/// Shape and numeric constants of a Llama model.
#[derive(Clone, Debug, PartialEq)]
pub struct LlamaConfig {
    pub architecture: String,
    /// Longest context the model was trained for (`context_length`).
    pub max_context: usize,
    /// Embedding width (`embedding_length`).
    pub dim: usize,
    pub n_layers: usize,
    /// Hidden width of the SwiGLU feed-forward block.
    pub ffn_dim: usize,
    pub n_heads: usize,
    /// Key/value heads; `n_heads / n_kv_heads` query heads share one (grouped-query attention).
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub vocab_size: usize,
    pub rope_freq_base: f32,
    pub rope_scaling: RopeScaling,
    pub rms_eps: f32,
}

impl LlamaConfig {
    /// Reads and checks the hyper-parameters. Tensor shapes are checked by
    /// [`super::LlamaModel::load`].
    pub fn from_gguf(file: &GgufFile) -> Result<LlamaConfig, ModelError> {
        let arch = file.require_str("general.architecture")?.to_string();
        if !SUPPORTED_ARCHITECTURES.contains(&arch.as_str()) {
            return Err(ModelError::UnsupportedArchitecture(arch));
        }
        let key = |k: &str| format!("{arch}.{k}");
        let req = |k: &str| -> Result<usize, ModelError> {
            let v = file.require_u64(&key(k))?;
            usize::try_from(v).map_err(|_| ModelError::Config(format!("{} = {v} is too large", key(k))))
        };
        let max_context = req("context_length")?;
        let dim = req("embedding_length")?;
        let n_layers = req("block_count")?;
        let ffn_dim = req("feed_forward_length")?;
        let n_heads = req("attention.head_count")?;
        let n_kv_heads = match file.get_u64(&key("attention.head_count_kv"))? {
            Some(v) => usize::try_from(v)
                .map_err(|_| ModelError::Config(format!("{} = {v} is too large", key("attention.head_count_kv"))))?,
            None => n_heads,
        };
        for (name, v) in [
            ("context_length", max_context),
            ("embedding_length", dim),
            ("block_count", n_layers),
            ("feed_forward_length", ffn_dim),
            ("attention.head_count", n_heads),
            ("attention.head_count_kv", n_kv_heads),
        ] {
            if v == 0 {
                return Err(ModelError::Config(format!("{} is 0", key(name))));
            }
        }
        if dim % n_heads != 0 {
            return Err(ModelError::Config(format!(
                "embedding_length {dim} is not a multiple of head_count {n_heads}"
            )));
        }
        if n_heads % n_kv_heads != 0 {
            return Err(ModelError::Config(format!(
                "head_count {n_heads} is not a multiple of head_count_kv {n_kv_heads}"
            )));
        }
        let head_dim = dim / n_heads;
        if head_dim % 2 != 0 {
            return Err(ModelError::Config(format!(
                "head size {head_dim} is odd; RoPE needs pairs"
            )));
        }
        if let Some(rot) = file.get_u64(&key("rope.dimension_count"))? {
            if rot as usize != head_dim {
                return Err(ModelError::Config(format!(
                    "rope.dimension_count {rot} differs from the head size {head_dim} (partial RoPE is not supported)"
                )));
            }
        }
        let rope_freq_base = file.get_f32(&key("rope.freq_base"))?.unwrap_or(10000.0);
        let rope_scaling = Self::rope_scaling(file, &arch)?;
        let rms_eps = file.get_f32(&key("attention.layer_norm_rms_epsilon"))?.unwrap_or(1e-5);
        if !(rope_freq_base.is_finite() && rope_freq_base > 0.0) {
            return Err(ModelError::Config(format!(
                "rope.freq_base {rope_freq_base} is not positive"
            )));
        }
        if !(rms_eps.is_finite() && rms_eps >= 0.0) {
            return Err(ModelError::Config(format!(
                "layer_norm_rms_epsilon {rms_eps} is invalid"
            )));
        }
        let vocab_size = Self::vocab_size(file, &arch)?;
        Self::check_counts_against_file(file, &arch, n_layers, vocab_size)?;
        Ok(LlamaConfig {
            architecture: arch,
            max_context,
            dim,
            n_layers,
            ffn_dim,
            n_heads,
            n_kv_heads,
            head_dim,
            vocab_size,
            rope_freq_base,
            rope_scaling,
            rms_eps,
        })
    }

    /// Counts that size allocations are checked against what the file actually holds, so a
    /// hostile header (say `block_count` = 10^8) is an error here rather than a huge
    /// allocation when the layers are loaded.
    fn check_counts_against_file(
        file: &GgufFile,
        arch: &str,
        n_layers: usize,
        vocab_size: usize,
    ) -> Result<(), ModelError> {
        let blocks_present = file.tensors().len() / TENSORS_PER_BLOCK;
        if n_layers > blocks_present {
            return Err(ModelError::Config(format!(
                "{arch}.block_count is {n_layers}, but the file's {} tensors can hold at most {blocks_present} \
                 blocks ({TENSORS_PER_BLOCK} tensors each): the tensors of blocks {blocks_present}.. are missing",
                file.tensors().len()
            )));
        }
        if vocab_size == 0 {
            return Err(ModelError::Config("the vocabulary is empty".into()));
        }
        if let Some(tokens) = file.get_array("tokenizer.ggml.tokens")? {
            if tokens.len() != vocab_size {
                return Err(ModelError::Config(format!(
                    "the vocabulary size is {vocab_size}, but tokenizer.ggml.tokens lists {} tokens",
                    tokens.len()
                )));
            }
        }
        Ok(())
    }

    /// Width of one position's keys (or values) across all KV heads.
    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }

    fn rope_scaling(file: &GgufFile, arch: &str) -> Result<RopeScaling, ModelError> {
        let ty = file.get_str(&format!("{arch}.rope.scaling.type"))?;
        let factor = file.get_f32(&format!("{arch}.rope.scaling.factor"))?;
        // Older files carry only the legacy linear key.
        let legacy = file.get_f32(&format!("{arch}.rope.scale_linear"))?;
        let linear = |f: f32| -> Result<RopeScaling, ModelError> {
            if !(f.is_finite() && f > 0.0) {
                return Err(ModelError::Config(format!("rope scaling factor {f} is not positive")));
            }
            Ok(if f == 1.0 {
                RopeScaling::None
            } else {
                RopeScaling::Linear { factor: f }
            })
        };
        match ty {
            None | Some("none") => match (ty, legacy) {
                (None, Some(f)) => linear(f),
                _ => Ok(RopeScaling::None),
            },
            Some("linear") => linear(factor.or(legacy).unwrap_or(1.0)),
            Some(other) => Err(ModelError::Config(format!(
                "rope scaling type {other:?} is not supported (only \"none\" and \"linear\")"
            ))),
        }
    }

    /// The vocabulary size: the explicit key, else the tokenizer's token list, else the rows of
    /// the output (or embedding) matrix.
    fn vocab_size(file: &GgufFile, arch: &str) -> Result<usize, ModelError> {
        if let Some(v) = file.get_u64(&format!("{arch}.vocab_size"))? {
            return usize::try_from(v).map_err(|_| ModelError::Config(format!("{arch}.vocab_size = {v} is too large")));
        }
        if let Some(tokens) = file.get_array("tokenizer.ggml.tokens")? {
            return Ok(tokens.len());
        }
        for name in ["output.weight", "token_embd.weight"] {
            if let Some(t) = file.try_tensor(name) {
                if t.info.dims.len() == 2 {
                    return Ok(t.info.dims[1] as usize);
                }
            }
        }
        Err(ModelError::Config(
            "cannot tell the vocabulary size: no vocab_size key, token list or token_embd.weight".into(),
        ))
    }
}
