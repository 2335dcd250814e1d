//! The Llama forward pass over weights used in place from a GGUF mapping, with a per-sequence
//! KV cache ([`Session`]).
//!
//! - [`LlamaConfig`]: hyper-parameters from the file's metadata.
//! - [`LlamaModel`]: checked weight handles (no weight is copied; embedding rows are
//!   dequantized on lookup; `output.weight` falls back to the tied `token_embd.weight`).
//! - [`MultiSession`]: the KV caches of many sequences and one forward pass over tokens of any
//!   of them (continuous batching).
//! - [`Session`]: one sequence; batched prefill and decode, on the CPU or a GPU.
//! - [`LoraAdapter`]: a LoRA adapter file (llama.cpp's GGUF format), attached to a model with
//!   [`LlamaModel::apply_lora`] and computed next to the base matmuls.

mod attention;
mod batch;
mod blocks;
mod config;
/// GPU forward pass with partial offload (CUDA backend).
#[cfg(feature = "cuda")]
pub mod cuda;
mod kv_cache;
mod lora;
mod ops;
pub mod repack_cache;
mod session;
mod weights;

pub(crate) use attention::{log_softmax_at, LogSoftmax};
pub use batch::{context_memory_bytes, Logits, MultiSession, SeqChunk, SessionOptions, MAX_BATCH, MAX_CONTEXT};
pub use config::{LlamaConfig, RopeScaling, SUPPORTED_ARCHITECTURES};
pub use kv_cache::KvType;
pub use lora::{LoraAdapter, LoraDelta, LoraPair, LORA_TENSOR_TYPES};
pub use ops::Activations;
pub use session::Session;
pub use weights::{CacheUse, LlamaModel, RepackChoice, RepackReport, Weight};

use crate::gguf::GgufError;
use crate::quant::GgmlType;

/// Why a model could not be loaded or evaluated.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error(
        "unsupported model architecture {0:?} (supported: {list})",
        list = SUPPORTED_ARCHITECTURES.join(", ")
    )]
    UnsupportedArchitecture(String),
    #[error("invalid model configuration: {0}")]
    Config(String),
    #[error("tensor {name:?} has shape {found:?}, expected {expected:?}")]
    TensorShape {
        name: String,
        expected: Vec<u64>,
        found: Vec<u64>,
    },
    #[error("tensor {name:?} has type {ty}, which {what} does not support")]
    TensorType {
        name: String,
        ty: GgmlType,
        what: &'static str,
    },
    #[error("tensor {0:?} is not supported: {1}")]
    UnsupportedTensor(String, &'static str),
    #[error("context full: {needed} positions needed, the session holds {n_ctx}")]
    ContextFull { needed: usize, n_ctx: usize },
    #[error("token id {token} is outside the vocabulary of {n_vocab}")]
    InvalidToken { token: u32, n_vocab: usize },
    #[error("nothing to evaluate (empty token list)")]
    EmptyInput,
    #[error("compute error: {0}")]
    Compute(String),
    #[error("invalid session options: {0}")]
    Options(String),
    #[error("LoRA adapter {file}: {msg}")]
    Lora { file: String, msg: String },
}
