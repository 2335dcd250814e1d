//! One module per subcommand; each exposes `Args` (clap) and `run`.

pub mod agent;
pub mod agent_model;
pub mod args;
pub mod bench;
pub mod chat;
pub mod eval;
pub mod export;
pub mod inspect;
pub mod lora;
pub mod perplexity;
pub mod pull;
pub mod quantize;
pub mod rootfs;
pub mod run;
pub mod sandbox;
pub mod serve;
