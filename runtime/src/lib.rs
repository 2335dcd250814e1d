//! edgeact's runtime: everything needed to run a Llama-family GGUF model and an agent on it.
//!
//! - [`gguf`]: memory-mapped, validated GGUF files with zero-copy tensor views.
//! - [`quant`]: ggml block formats with scalar reference quantize/dequantize.
//! - `kernels`: CPU (scalar, AVX2, AVX-512, NEON) and CUDA compute kernels.
//! - `model`: the Llama forward pass and KV cache.
//! - `tokenizer`, `sampler`, `chat`: text in, tokens out.
//! - `agent`: the AgentBench ReAct loop.

pub mod agent;
pub mod batching;
pub mod chat;
pub mod files;
pub mod generate;
pub mod gguf;
pub mod kernels;
pub mod model;
pub mod quant;
pub mod sampler;
pub mod tokenizer;
