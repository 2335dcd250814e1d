//! The agent end to end, one test binary: the engine-backed agent ([`engine`]), `eval` on one
//! sequence and batched ([`eval_cli`], [`eval_batched`]), training-data export ([`export`]),
//! the OS commands' defaults ([`os_cli_defaults`]), the container backend
//! ([`sandbox_container`]) and real clients of `edgeact serve` ([`serve_clients`]).

mod engine;
mod eval_batched;
mod eval_cli;
mod export;
mod os_cli_defaults;
mod sandbox_container;
mod serve_clients;

#[path = "../cli_support/mod.rs"]
mod cli_support;
#[path = "../../tools/tests/sandbox/sandbox_support.rs"]
mod sandbox_support;
