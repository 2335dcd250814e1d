//! The AgentBench OS/DB agent: protocol texts, history rendering and trimming, action parsers,
//! the ReAct loop over a [`react::LanguageModel`] and a [`react::Tool`], the engine-backed model
//! with KV-cache prefix reuse, protocol-constrained decoding, and the judges.
//!
//! Everything here follows `shared/docs/agent-protocol.md` (AgentBench `v0.1`/`AgentBench.old`
//! behaviour, the harness behind AgentLM's published scores).

pub mod parse;
pub mod protocol_text;
pub mod py;
pub mod render;

pub use parse::{parse_db, parse_os, DbAction, OsAction, OsParse};
pub use render::{ChatTemplate, Message, Role};
