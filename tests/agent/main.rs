//! The agent end to end, one test binary: the engine-backed agent ([`engine`]), `eval` on one
//! sequence and batched ([`eval_cli`], [`eval_batched`]), training-data export ([`export`]),
//! the OS commands' defaults ([`os_cli_defaults`]), the container backend
//! ([`sandbox_container`]), real clients of `edgeact serve` ([`serve_clients`]) and
//! speculative decoding on the batched engine ([`batched_speculate`]).

mod batched_speculate;
mod engine;
mod eval_batched;
mod eval_cli;
mod export;
mod os_cli_defaults;
mod sandbox_container;
mod serve_clients;

#[path = "../cli_support/mod.rs"]
mod cli_support;
#[path = "../convert_support/mod.rs"]
mod convert_support;
#[path = "../hf_golden_support/mod.rs"]
mod hf_golden_support;
#[path = "../../tools/tests/sandbox/sandbox_support.rs"]
mod sandbox_support;
