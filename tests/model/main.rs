//! The forward pass and generation, one test binary: golden logits of real and converted
//! models ([`golden`], [`hf_golden`], [`real_models`]), batched sequences ([`batch`]),
//! repacked weights ([`repack`]), generation ([`generate`]) and speculative decoding
//! ([`speculate`]), LoRA adapters at load ([`lora`]), errors ([`errors`], [`hostile_cli`]) and
//! the model commands ([`cli`]).

mod batch;
mod cli;
mod errors;
mod generate;
mod golden;
mod hf_golden;
mod hostile_cli;
mod lora;
mod real_models;
mod repack;
mod repack_cache;
mod speculate;

#[path = "../cli_support/mod.rs"]
mod cli_support;
#[path = "../convert_support/mod.rs"]
mod convert_support;
#[path = "../hf_golden_support/mod.rs"]
mod hf_golden_support;
#[path = "../lora_adapter_support/mod.rs"]
mod lora_adapter_support;
#[path = "../lora_support/mod.rs"]
mod lora_support;
#[path = "../stories_support/mod.rs"]
mod stories_support;
