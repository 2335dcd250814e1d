//! The AgentBench OS (bash) and DB (SQL) agents, as AgentLM was trained and evaluated.
//!
//! - Protocol: the instruction and one-shot texts ([`protocol_text`]), history rendering and
//!   trimming in FastChat's `llama-2` format ([`render`]) or the model's own chat template
//!   ([`prompt`]), action parsers ([`parse`]) and protocol-constrained decoding ([`constrain`]).
//! - The ReAct loop over a [`react::LanguageModel`] and a [`react::Tool`] ([`react`]); language
//!   models: one KV-cache session with prefix reuse ([`engine`]), a sequence of a shared
//!   continuous-batching engine ([`batched`]), a TGI-compatible server ([`remote`]), fixed
//!   replies ([`scripted`]).
//! - Tools over `edgeact_tools`: the OS task's sandboxed machine ([`os`]) and the DB task's SQL
//!   table ([`sql`]).
//! - Tasks and judging: task files ([`tasks`]; OS tasks are `edgeact_tools::os::OsTask`, the one
//!   parser), the judges ([`judge`]) and the JSONL transcript of `--log` ([`transcript`]).
//! - Training data: transcripts exported as AgentInstruct rows ([`export`]).
//!
//! Everything follows `docs/agent-protocol.md` (AgentBench `v0.1`/`AgentBench.old` behaviour,
//! the harness behind AgentLM's published scores).

pub mod batched;
pub mod constrain;
pub mod engine;
pub mod export;
pub mod judge;
pub mod os;
pub mod parse;
pub mod prompt;
pub mod protocol_text;
pub mod react;
pub mod remote;
pub mod render;
pub mod scripted;
pub mod sql;
pub mod tasks;
pub mod transcript;

pub use batched::BatchedModel;
pub use engine::{build_prompt, EngineConfig, EngineModel, PromptTokens};
pub use parse::{parse_db, parse_os, DbAction, OsAction, OsParse};
pub use prompt::{FormatChoice, PromptFormat};
pub use react::{
    run_db, run_os, Event, LanguageModel, LoopLimits, ModelReply, ModelRequest, Protocol, Run, ScriptedModel, Status,
    Tool, TurnStats,
};
pub use render::{ChatTemplate, Message, Role};
