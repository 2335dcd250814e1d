//! edgeact's converter: Hugging Face checkpoints (safetensors, PyTorch `.bin`) to quantized
//! GGUF files, written by a streaming, atomic GGUF writer.
//!
//! - [`gguf_writer`]: the streaming GGUF v3 writer.
//! - [`checkpoint`]: safetensors / PyTorch checkpoints as mmap'ed tensors
//!   ([`safetensors`], [`pytorch`] with its [`pickle`] VM).
//! - [`hf`]: `config.json` → `llama.*` metadata, tensor names, the Q/K RoPE permutation.
//! - [`vocab`]: `tokenizer.model` / `tokenizer.json` → `tokenizer.*` metadata.
//! - [`mix`]: per-tensor type choice of each quantization mix (llama.cpp's rules).
//! - [`convert()`]: the streaming, multi-threaded conversion pipeline
//!   ([`convert_with_lora`] merges a PEFT LoRA adapter on the way).
//! - [`lora`]: PEFT LoRA adapters (read, merge at conversion, llama.cpp's GGUF adapter format).
//!
//! Outputs are written through `edgeact_runtime::files::AtomicOutput` (a `.partial` file beside
//! the destination, removed on SIGINT/SIGTERM, never over an input).
//! - [`torch_save`]: writes the `torch.save` zip format (tests and fixtures).

pub mod checkpoint;
pub mod convert;
pub mod gguf_writer;
pub mod hf;
pub mod lora;
pub mod mix;
pub mod pickle;
pub mod pytorch;
pub mod safetensors;
pub mod torch_save;
pub mod vocab;

pub use checkpoint::{Checkpoint, CheckpointError, DType, TensorMeta};
pub use convert::{convert, convert_with_lora, Options, Progress, Report, TypeStats};
pub use gguf_writer::{GgufWriter, TensorDecl, TensorSink, WriteError, WriteSummary};
pub use mix::Mix;
