//! Parity with llama.cpp/ggml (the `oracle` feature), one test binary: block formats
//! ([`quant`]), kernels ([`kernels`]), GGUF files ([`gguf`], [`convert`]), logits and greedy
//! output ([`model`], [`real_models`], [`bench_shapes`]) and LoRA adapters ([`lora`]).
#![cfg(feature = "oracle")]

mod bench_shapes;
mod convert;
mod gguf;
mod kernels;
mod lora;
mod model;
mod quant;
mod real_models;

#[path = "../convert_support/mod.rs"]
mod convert_support;
#[path = "../hf_golden_support/mod.rs"]
mod hf_golden_support;
#[path = "../lora_adapter_support/mod.rs"]
mod lora_adapter_support;
#[path = "../stories_support/mod.rs"]
mod stories_support;
