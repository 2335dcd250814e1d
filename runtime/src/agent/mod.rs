//! The AgentBench OS/DB agent: protocol texts, history rendering and trimming, action parsers,
//! the ReAct loop over a [`react::LanguageModel`] and a [`react::Tool`], the engine-backed model
//! with KV-cache prefix reuse ([`engine`]) and its twin on a shared continuous-batching engine
//! ([`batched`]), in AgentBench's llama-2 format or the model's own chat template
//! ([`prompt`]), protocol-constrained decoding ([`constrain`]),
//! task files ([`tasks`]) and the judges ([`judge`]).
//!
//! Everything here follows `shared/docs/agent-protocol.md` (AgentBench `v0.1`/`AgentBench.old`
//! behaviour, the harness behind AgentLM's published scores).

pub mod batched;
pub mod constrain;
pub mod engine;
pub mod judge;
pub mod parse;
pub mod prompt;
pub mod protocol_text;
pub mod py;
pub mod react;
pub mod render;
pub mod tasks;

pub use batched::BatchedModel;
pub use engine::{build_prompt, EngineConfig, EngineModel, PromptTokens};
pub use parse::{parse_db, parse_os, DbAction, OsAction, OsParse};
pub use prompt::{FormatChoice, PromptFormat};
pub use react::{
    run_db, run_os, Event, LanguageModel, LoopLimits, ModelReply, ModelRequest, Protocol, Run, ScriptedModel, Status,
    Tool, TurnStats,
};
pub use render::{ChatTemplate, Message, Role};
