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
//! - [`partial`]: the output's `.partial` file (removed on SIGINT/SIGTERM, stale ones swept)
//!   and the regular-file checks on inputs and outputs.

pub mod checkpoint;
pub mod convert;
pub mod gguf_writer;
pub mod hf;
pub mod mix;
pub mod partial;
pub mod pickle;
pub mod pytorch;
pub mod safetensors;
pub mod vocab;

pub use checkpoint::{Checkpoint, CheckpointError, DType, TensorMeta};
pub use convert::{convert, Options, Progress, Report, TypeStats};
pub use gguf_writer::{GgufWriter, TensorDecl, TensorSink, WriteError, WriteSummary};
pub use mix::Mix;
pub use partial::remove_partial_files_on_signal;
