//! The AgentBench OS and DB protocol texts that AgentLM was trained and evaluated on, kept
//! byte for byte.
//!
//! These strings come from AgentBench (THUDM, Apache-2.0; `src/server/tasks/os_interaction/task.py`
//! and `src/server/tasks/dbbench/__init__.py`, identical to THUDM/AgentTuning `AgentBench.old/`).
//! The long texts live as files under `texts/`, copied unchanged from the AgentBench extraction
//! in `shared/agentbench/protocol/`; the short glue strings are below. They are protocol
//! constants: changing a single byte changes what the model sees, so tests compare them with the
//! reference files.
//!
//! Copyright THUDM (AgentBench), licensed under the Apache License, Version 2.0.

/// First user message of every OS task (before `Now, my problem is:\n\n` + question).
pub const OS_INSTRUCTION: &str = include_str!("texts/os_instruction.txt");

/// The one-shot exchange as JSON (`[{role, content}, …]`): its first user content is appended
/// to the instruction, the rest are injected as history.
pub const OS_ONE_SHOT_JSON: &str = include_str!("texts/os_one_shot.json");

/// First user message of every DB task (the agent's canned reply is [`DB_ACK`]).
pub const DB_INSTRUCTION: &str = include_str!("texts/db_instruction.txt");

/// Appended to the OS instruction before the one-shot question.
pub const OS_PROBLEM_PREFIX: &str = "Now, my problem is:\n\n";

/// Prefix of the user message that states the real OS task after the one-shot example.
pub const OS_NEW_PROBLEM_PREFIX: &str = "Now, I will start a new problem in a new OS. My problem is:\n\n";

/// Prefix of an OS observation.
pub const OS_OUTPUT_PREFIX: &str = "The output of the OS:\n\n";

/// The OS observation when the command printed nothing.
pub const OS_OUTPUT_EMPTY: &str = "The output of the OS is empty.";

/// Appended after the first [`OS_TRUNCATE_KEEP`] characters of an OS output longer than
/// [`OS_TRUNCATE_OVER`] characters.
pub const OS_TRUNCATED_NOTE: &str = "\n[truncated because the output is too long]";
pub const OS_TRUNCATE_OVER: usize = 800;
pub const OS_TRUNCATE_KEEP: usize = 780;

/// Appended after the first [`DB_TRUNCATE_AT`] characters of a longer DB result.
pub const DB_TRUNCATED_NOTE: &str = "[TRUNCATED]";
pub const DB_TRUNCATE_AT: usize = 800;

/// The agent's canned reply to the DB instruction.
pub const DB_ACK: &str = "Ok.";

/// The system prompt fixed by the AgentLM model card (used by the `agent` template).
pub const MODEL_CARD_SYSTEM_PROMPT: &str = "You are a helpful, respectful and honest assistant.";

/// History trimming: the segment budget and the notice appended to the first message.
pub const TRIM_SEGMENT_THRESHOLD: usize = 3500;

/// `\n\n[NOTICE] {n} messages are omitted.`
pub fn omitted_notice(n: usize) -> String {
    format!("\n\n[NOTICE] {n} messages are omitted.")
}
