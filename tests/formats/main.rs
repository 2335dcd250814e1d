//! Model files in and out, one test binary: the converter on checkpoints ([`convert_checkpoint`],
//! [`convert_llama`], [`convert_vocab`]) and hostile ones ([`convert_hostile`]), LoRA adapters
//! merged and converted ([`convert_lora`]), GGUF files written for llama.cpp
//! ([`gguf_writer_compat`]) and hostile GGUF files and chat templates read ([`gguf_hostile`],
//! [`hostile_chat_template`]), and `edgeact pull` ([`pull_hub`]).

mod convert_checkpoint;
mod convert_hostile;
mod convert_llama;
mod convert_lora;
mod convert_vocab;
mod gguf_hostile;
mod gguf_writer_compat;
mod hostile_chat_template;
mod pull_hub;

#[path = "../convert_support/mod.rs"]
mod convert_support;
#[path = "../lora_support/mod.rs"]
mod lora_support;
