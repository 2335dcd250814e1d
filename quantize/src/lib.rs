//! edgeact's converter: Hugging Face checkpoints (safetensors, PyTorch `.bin`) to quantized
//! GGUF files, written by a streaming, atomic GGUF writer.
//!
//! - [`gguf_writer`]: the streaming GGUF v3 writer.
//! - [`checkpoint`]: safetensors / PyTorch checkpoints as mmap'ed tensors
//!   ([`safetensors`], [`pytorch`] with its [`pickle`] VM).
//! - [`hf`]: `config.json` → `llama.*` metadata, tensor names, the Q/K RoPE permutation.
//! - [`vocab`]: `tokenizer.model` / `tokenizer.json` → `tokenizer.*` metadata.
//! - [`mix`]: per-tensor type choice of each quantization mix (llama.cpp's rules).
//! - [`convert()`]: the streaming, multi-threaded conversion pipeline.

pub mod checkpoint;
pub mod convert;
pub mod gguf_writer;
pub mod hf;
pub mod mix;
pub mod pickle;
pub mod pytorch;
pub mod safetensors;
pub mod vocab;

pub use checkpoint::{Checkpoint, CheckpointError, DType, TensorMeta};
pub use convert::{convert, Options, Progress, Report, TypeStats};
pub use gguf_writer::{GgufWriter, TensorDecl, TensorSink, WriteError, WriteSummary};
pub use mix::Mix;
