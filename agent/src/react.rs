//! The ReAct loops of AgentBench's OS and DB tasks, generic over the model
//! ([`LanguageModel`]) and the tool ([`Tool`]).
//!
//! Each model call sees the history after [`trim_history`]; replies are stored unstripped (the
//! renderer strips). OS: at most 8 model calls; a reply without a valid action ends the task
//! with answer `None`, as does the round limit. DB: the first reply, then up to 15 operations
//! each followed by another call; an `Operation` without a SQL block or a reply without
//! `Final Answer:` ends the task with an empty answer; after the 15th operation the last reply
//! is searched for a final answer, as the harness's `while … else` does.

use super::parse::{db_action_label, db_final_answer, db_sql_block, parse_db, parse_os, DbAction, OsAction, OsParse};
use super::render::{db_initial_history, db_observation, os_initial_history, os_observation, trim_history, Message};
use serde::{Deserialize, Serialize};

/// Which task protocol a model call belongs to (used by constrained decoding).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Os,
    Db,
}

/// Counters of one model call.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TurnStats {
    /// Tokens of the (possibly left-truncated) prompt.
    pub prompt_tokens: usize,
    /// Prompt tokens actually evaluated (the rest came from the KV cache).
    pub prefilled_tokens: usize,
    /// Prompt tokens dropped from the left to fit the limit.
    pub truncated_tokens: usize,
    pub generated_tokens: usize,
    pub prompt_ms: f64,
    pub gen_ms: f64,
    /// Why generation stopped (`eos`, `max_tokens`, `action_end`, `context_full`, `scripted`…).
    pub stop: String,
    /// Forward passes of the decode loop (0 where the model does not count them); fewer than
    /// the generated tokens when speculative decoding or jump-forward saved passes.
    #[serde(default)]
    pub forward_passes: usize,
    /// Draft tokens of speculative decoding the model accepted.
    #[serde(default)]
    pub draft_accepted: usize,
    /// Tokens appended because the protocol constraint admitted only them (jump-forward).
    #[serde(default)]
    pub forced_tokens: usize,
}

impl TurnStats {
    pub fn prompt_tps(&self) -> f64 {
        self.prefilled_tokens as f64 / (self.prompt_ms / 1e3).max(1e-9)
    }
    pub fn gen_tps(&self) -> f64 {
        self.generated_tokens as f64 / (self.gen_ms / 1e3).max(1e-9)
    }
}

/// What the loop asks of the model: the trimmed history, ending with a user turn.
pub struct ModelRequest<'a> {
    pub messages: &'a [Message],
    pub protocol: Protocol,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelReply {
    pub text: String,
    pub stats: TurnStats,
}

/// Something that answers a chat history with the agent's next message.
pub trait LanguageModel {
    fn reply(&mut self, request: &ModelRequest<'_>) -> anyhow::Result<ModelReply>;
}

/// A tool the agent acts through: OS (bash code in, raw terminal output out) or SQL (one
/// statement in, the rendered result or error text out). Failures of the tool itself (not of
/// the command) are errors and end the task.
pub trait Tool {
    fn execute(&mut self, input: &str) -> anyhow::Result<String>;
}

/// Replays fixed replies in order (for tests and `--scripted`); records every request.
#[derive(Clone, Debug, Default)]
pub struct ScriptedModel {
    replies: std::collections::VecDeque<String>,
    /// The trimmed histories the loop sent, one per call.
    pub requests: Vec<Vec<Message>>,
}

impl ScriptedModel {
    pub fn new<I, S>(replies: I) -> ScriptedModel
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        ScriptedModel {
            replies: replies.into_iter().map(Into::into).collect(),
            requests: Vec::new(),
        }
    }

    pub fn remaining(&self) -> usize {
        self.replies.len()
    }
}

impl LanguageModel for ScriptedModel {
    fn reply(&mut self, request: &ModelRequest<'_>) -> anyhow::Result<ModelReply> {
        self.requests.push(request.messages.to_vec());
        let text = self
            .replies
            .pop_front()
            .ok_or_else(|| anyhow::anyhow!("scripted model: no reply left for call {}", self.requests.len()))?;
        Ok(ModelReply {
            text,
            stats: TurnStats {
                stop: "scripted".into(),
                ..Default::default()
            },
        })
    }
}

/// Round limits (AgentBench: 8 OS model calls, 15 DB operations).
#[derive(Clone, Copy, Debug)]
pub struct LoopLimits {
    pub os_rounds: usize,
    pub db_operations: usize,
}

impl Default for LoopLimits {
    fn default() -> Self {
        LoopLimits {
            os_rounds: 8,
            db_operations: 15,
        }
    }
}

/// How a task's interaction ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// The agent committed an answer (OS `finish`/`answer`, DB `Final Answer:`).
    Completed,
    /// A reply matched no action (OS), or an operation had no SQL block / no final answer
    /// was given (DB).
    InvalidAction,
    /// The round limit was reached.
    RoundLimit,
}

/// The parsed action of one reply.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "protocol", rename_all = "lowercase")]
pub enum ParsedAction {
    Os(OsParse),
    Db { action: DbAction },
}

/// Progress notifications for live display.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event<'a> {
    /// A model reply and how it was parsed.
    Reply {
        round: usize,
        reply: &'a ModelReply,
        action: &'a ParsedAction,
    },
    /// The tool's raw output and the user turn made of it.
    Observation {
        round: usize,
        raw: &'a str,
        message: &'a str,
    },
}

/// One model call and what followed it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Step {
    pub reply: ModelReply,
    pub action: ParsedAction,
    /// The user turn made from the tool's output, if the action ran the tool.
    pub observation: Option<String>,
}

/// The result of one task's interaction.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Run {
    pub protocol: Protocol,
    pub status: Status,
    /// OS: `None` when no answer was committed (also for `finish`); DB: `Some` (possibly empty).
    pub answer: Option<String>,
    pub steps: Vec<Step>,
    /// The full (untrimmed) history at the end.
    pub history: Vec<Message>,
}

impl Run {
    /// Prompt tokens evaluated over all calls.
    pub fn prefilled_tokens(&self) -> usize {
        self.steps.iter().map(|s| s.reply.stats.prefilled_tokens).sum()
    }
    pub fn generated_tokens(&self) -> usize {
        self.steps.iter().map(|s| s.reply.stats.generated_tokens).sum()
    }
}

fn call(model: &mut dyn LanguageModel, history: &[Message], protocol: Protocol) -> anyhow::Result<ModelReply> {
    let trimmed = trim_history(history);
    model.reply(&ModelRequest {
        messages: &trimmed,
        protocol,
    })
}

/// Runs `input` with the tool and records the user turn made of its output (by `render`) in
/// the history, the step and the event stream.
fn observe(
    tool: &mut dyn Tool,
    input: &str,
    render: fn(&str) -> String,
    round: usize,
    step: &mut Step,
    history: &mut Vec<Message>,
    on_event: &mut dyn FnMut(Event<'_>),
) -> anyhow::Result<()> {
    let raw = tool.execute(input)?;
    let obs = render(&raw);
    on_event(Event::Observation {
        round,
        raw: &raw,
        message: &obs,
    });
    history.push(Message::user(obs.clone()));
    step.observation = Some(obs);
    Ok(())
}

/// Runs one OS task: `description` is the task text, `tool` a fresh shell in the task's machine.
pub fn run_os(
    model: &mut dyn LanguageModel,
    tool: &mut dyn Tool,
    description: &str,
    limits: LoopLimits,
    on_event: &mut dyn FnMut(Event<'_>),
) -> anyhow::Result<Run> {
    let mut history = os_initial_history(description);
    let mut steps: Vec<Step> = Vec::new();
    let mut status = Status::RoundLimit;
    let mut answer = None;
    for round in 0..limits.os_rounds {
        let reply = call(model, &history, Protocol::Os)?;
        history.push(Message::agent(reply.text.clone()));
        let parsed = parse_os(&reply.text);
        let action = ParsedAction::Os(parsed.clone());
        on_event(Event::Reply {
            round,
            reply: &reply,
            action: &action,
        });
        let mut step = Step {
            reply,
            action,
            observation: None,
        };
        match parsed.action {
            None => {
                status = Status::InvalidAction;
                steps.push(step);
                break;
            }
            Some(OsAction::Commit(a)) => {
                status = Status::Completed;
                answer = a;
                steps.push(step);
                break;
            }
            Some(OsAction::Bash(code)) => {
                observe(tool, &code, os_observation, round, &mut step, &mut history, on_event)?;
                steps.push(step);
            }
        }
    }
    Ok(Run {
        protocol: Protocol::Os,
        status,
        answer,
        steps,
        history,
    })
}

/// Runs one DB task against `tool` (a SQL executor whose table is already set up).
pub fn run_db(
    model: &mut dyn LanguageModel,
    tool: &mut dyn Tool,
    description: &str,
    add_description: &str,
    limits: LoopLimits,
    on_event: &mut dyn FnMut(Event<'_>),
) -> anyhow::Result<Run> {
    let mut history = db_initial_history(description, add_description);
    let mut steps: Vec<Step> = Vec::new();
    let mut operations = 0;
    let mut round = 0;
    let (status, answer) = loop {
        let reply = call(model, &history, Protocol::Db)?;
        history.push(Message::agent(reply.text.clone()));
        let action = ParsedAction::Db {
            action: parse_db(&reply.text),
        };
        on_event(Event::Reply {
            round,
            reply: &reply,
            action: &action,
        });
        let text = reply.text.clone();
        let mut step = Step {
            reply,
            action,
            observation: None,
        };
        if db_action_label(&text) == Some("Operation") && operations < limits.db_operations {
            let Some(sql) = db_sql_block(&text) else {
                steps.push(step);
                break (Status::InvalidAction, String::new());
            };
            observe(tool, &sql, db_observation, round, &mut step, &mut history, on_event)?;
            steps.push(step);
            operations += 1;
            round += 1;
            continue;
        }
        steps.push(step);
        match db_final_answer(&text) {
            Some(a) => break (Status::Completed, a.to_string()),
            None if operations >= limits.db_operations => break (Status::RoundLimit, String::new()),
            None => break (Status::InvalidAction, String::new()),
        }
    };
    Ok(Run {
        protocol: Protocol::Db,
        status,
        answer: Some(answer),
        steps,
        history,
    })
}
