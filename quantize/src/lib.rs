//! edgeact's converter: Hugging Face checkpoints (safetensors, PyTorch `.bin`) to quantized
//! GGUF files, written by a streaming, atomic GGUF writer.
//!
//! - [`gguf_writer`]: the streaming GGUF v3 writer.
//! - [`checkpoint`]: safetensors / PyTorch checkpoints as mmap'ed tensors
//!   ([`safetensors`], [`pytorch`] with its [`pickle`] VM).

pub mod checkpoint;
pub mod gguf_writer;
pub mod pickle;
pub mod pytorch;
pub mod safetensors;

pub use checkpoint::{Checkpoint, CheckpointError, DType, TensorMeta};
pub use gguf_writer::{GgufWriter, TensorDecl, TensorSink, WriteError, WriteSummary};
pub mod convert;
pub mod hf;
pub mod mix;
pub mod vocab;

pub use convert::{convert, Options, Progress, Report, TypeStats};
pub use mix::Mix;
