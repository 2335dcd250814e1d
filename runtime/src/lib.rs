//! edgeact's runtime: everything needed to run a Llama-family GGUF model.
//!
//! - [`gguf`]: memory-mapped, validated GGUF files with zero-copy tensor views.
//! - [`quant`]: ggml block formats with scalar reference quantize/dequantize.
//! - `kernels`: CPU (scalar, AVX2, AVX-512, NEON) and CUDA compute kernels.
//! - `model`: the Llama forward pass and KV cache.
//! - `tokenizer`, `sampler`, `chat`: text in, tokens out.
//! - `generate`, `batching`: one sequence, or many on one continuous-batching engine.
//! - `speculate`: the single-sequence decode loop, with prompt-lookup drafts and jump-forward.
//! - [`py`]: Python built-ins AgentBench applies to texts (`str.strip`, a safe literal `eval`),
//!   shared by the chat templates and the agent crate's judges.

pub mod batching;
pub mod chat;
pub mod files;
pub mod generate;
pub mod gguf;
pub mod kernels;
pub mod model;
pub mod py;
pub mod quant;
pub mod sampler;
pub mod speculate;
pub mod tokenizer;
