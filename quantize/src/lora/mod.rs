//! PEFT LoRA adapters: read a PEFT adapter directory ([`peft`]), merge it into the base
//! weights while the converter streams them ([`merge`], used by
//! [`crate::convert::convert_with_lora`]), or write it in llama.cpp's GGUF LoRA adapter
//! format for applying at load time ([`adapter_gguf`]).

pub mod adapter_gguf;
pub mod merge;
pub mod peft;

pub use adapter_gguf::{read_base_config, write_adapter_gguf, AdapterOptions, AdapterReport};
pub use merge::LoraMerge;
pub use peft::{LoraPair, Module, PeftAdapter, PeftConfig, Targets};
