//! Glue between the runtime's agent loop (`edgeact_runtime::agent`), the tool executors
//! (`edgeact_tools`) and the `agent`/`eval` commands: tool adapters, model setup, scripted
//! replies, remote TGI-compatible servers (`eval --endpoint`) and the JSONL transcript.

pub mod model;
pub mod os;
pub mod remote;
pub mod scripted;
pub mod sql;
pub mod tasks;
pub mod transcript;
