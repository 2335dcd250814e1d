//! Chat templates: a conversation (`[Message]`) to the prompt string the model was trained on.
//!
//! Two sources:
//! - the GGUF's `tokenizer.chat_template` (a Hugging Face Jinja template), rendered with
//!   `minijinja` configured like `transformers`' `apply_chat_template` (trim/lstrip blocks,
//!   loop controls, `raise_exception`, Python string methods such as `.strip()`, `bos_token`,
//!   `eos_token`, `add_generation_prompt`);
//! - the built-in Llama-2 format of FastChat 0.2.31 (`llama-2` conversation template), which
//!   AgentBench used to prompt AgentLM and which is used when the file has no template:
//!   `[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{user} [/INST] {assistant} </s><s>[INST] {user} [/INST]`.
//!
//! The rendered string contains special-token texts (`</s><s>`, `<|im_start|>`), so it must be
//! tokenized with special parsing on.
//!
//! A template comes from the model file, so it is untrusted code: every render runs with a
//! budget ([`TemplateBudget`]) of engine fuel (instructions and data created), output bytes
//! and recursion depth, and stops with [`ChatError::Budget`] when it runs out instead of
//! spinning or allocating until the process is killed.

use crate::gguf::{GgufError, GgufFile};
use minijinja::syntax::SyntaxConfig;
use minijinja::{Environment, Error as JinjaError, ErrorKind, Value};
use std::collections::BTreeMap;

/// The system prompt of AgentLM's model card (the `agent` template); the AgentBench harness
/// itself used none (the `eval` template).
pub const AGENTLM_SYSTEM_PROMPT: &str = "You are a helpful, respectful and honest assistant.";

/// One turn of a conversation. Roles: `system`, `user`, `assistant` (`agent` is accepted as
/// an alias of `assistant` by the built-in Llama-2 template).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Message {
        Message {
            role: role.into(),
            content: content.into(),
        }
    }
    pub fn system(content: impl Into<String>) -> Message {
        Message::new("system", content)
    }
    pub fn user(content: impl Into<String>) -> Message {
        Message::new("user", content)
    }
    pub fn assistant(content: impl Into<String>) -> Message {
        Message::new("assistant", content)
    }
}

/// Why a template could not be loaded or rendered.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error("chat template does not compile: {0}")]
    Syntax(String),
    #[error("chat template failed to render: {0}")]
    Render(String),
    #[error("invalid conversation: {0}")]
    Conversation(String),
    #[error("unknown chat template {0:?} (built-in: llama-2, eval, agent)")]
    UnknownName(String),
    #[error("chat template exceeded its budget: {0}")]
    Budget(String),
}

/// Limits on one render of an untrusted Jinja template. Both scale with the size of the
/// conversation so a long agent history always fits, while a template that loops or multiplies
/// strings on its own runs out quickly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TemplateBudget {
    /// minijinja fuel: about one unit per instruction and per 64 bytes of data the template
    /// creates. Real chat templates spend a few hundred units per message.
    pub base_fuel: u64,
    /// Extra fuel per byte of message text.
    pub fuel_per_input_byte: u64,
    /// Output bytes allowed beyond the messages' own size.
    pub base_output_bytes: usize,
    /// Output bytes allowed per byte of message text (templates repeat a turn at most a few
    /// times, e.g. a system prompt folded into the first user turn).
    pub output_per_input_byte: usize,
    /// minijinja's recursion counter: each nested loop or condition counts 1, a macro call or
    /// include about 10. Real templates stay far below; runaway macro recursion stops here.
    pub recursion_limit: usize,
}

impl Default for TemplateBudget {
    fn default() -> TemplateBudget {
        TemplateBudget {
            base_fuel: 1_000_000,
            fuel_per_input_byte: 1,
            base_output_bytes: 1 << 20,
            output_per_input_byte: 8,
            recursion_limit: 200,
        }
    }
}

impl TemplateBudget {
    fn fuel_for(&self, input_bytes: usize) -> u64 {
        self.base_fuel
            .saturating_add(self.fuel_per_input_byte.saturating_mul(input_bytes as u64))
    }

    fn output_for(&self, input_bytes: usize) -> usize {
        self.base_output_bytes
            .saturating_add(self.output_per_input_byte.saturating_mul(input_bytes))
    }
}

/// Renders a Hugging Face Jinja chat template (`source`) over `messages` with the default
/// [`TemplateBudget`], `<s>`/`</s>` as the BOS/EOS texts and the generation prompt on. The
/// entry point for fuzzing untrusted templates: any template and conversation yields a string
/// or a [`ChatError`], within the budget.
pub fn render_template(source: &str, messages: &[Message]) -> Result<String, ChatError> {
    ChatTemplate::from_jinja(source, "<s>", "</s>")?.render(messages, true)
}

enum Kind {
    Jinja {
        env: Box<Environment<'static>>,
        source: String,
        bos: String,
        eos: String,
        budget: TemplateBudget,
    },
    /// FastChat's `llama-2`; `default_system` is used when the conversation has no system turn.
    Llama2 { default_system: Option<String> },
}

/// A chat template ready to render conversations.
pub struct ChatTemplate {
    kind: Kind,
}

const TEMPLATE_NAME: &str = "chat_template";

fn jinja_error(e: &JinjaError) -> String {
    // minijinja's Display holds the kind and detail; the alternate form adds the source line.
    let mut msg = e.to_string();
    if let Some(line) = e.line() {
        msg.push_str(&format!(" (template line {line})"));
    }
    msg
}

impl ChatTemplate {
    /// The file's `tokenizer.chat_template`, or the built-in Llama-2 template when it has none.
    /// `bos_token`/`eos_token` are the texts of the file's BOS/EOS tokens.
    pub fn from_gguf(file: &GgufFile) -> Result<ChatTemplate, ChatError> {
        let Some(source) = file.get_str("tokenizer.chat_template")? else {
            return Ok(ChatTemplate::llama2());
        };
        // Leniently, as the tokenizer reads the ids: a negative one (converters write -1 for
        // "no such token") or one outside the vocabulary is the empty text.
        let token_text = |key: &str| -> Result<String, ChatError> {
            let id = file.get(key).and_then(|v| v.as_u64());
            let (Some(id), Some(tokens)) = (id, file.get_array("tokenizer.ggml.tokens")?) else {
                return Ok(String::new());
            };
            Ok(usize::try_from(id)
                .ok()
                .and_then(|i| tokens.get(i))
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_string())
        };
        let bos = token_text("tokenizer.ggml.bos_token_id")?;
        let eos = token_text("tokenizer.ggml.eos_token_id")?;
        ChatTemplate::from_jinja(source, &bos, &eos)
    }

    /// Compiles a Hugging Face Jinja chat template.
    pub fn from_jinja(source: &str, bos_token: &str, eos_token: &str) -> Result<ChatTemplate, ChatError> {
        let mut env = Environment::new();
        let budget = TemplateBudget::default();
        env.set_recursion_limit(budget.recursion_limit);
        // transformers renders with trim_blocks and lstrip_blocks on; Jinja2 drops one
        // trailing newline of the template, as minijinja does by default.
        let syntax = SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .map_err(|e| ChatError::Syntax(jinja_error(&e)))?;
        env.set_syntax(syntax);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |msg: String| -> Result<Value, JinjaError> {
            Err(JinjaError::new(ErrorKind::InvalidOperation, msg))
        });
        env.add_template_owned(TEMPLATE_NAME, source.to_string())
            .map_err(|e| ChatError::Syntax(jinja_error(&e)))?;
        Ok(ChatTemplate {
            kind: Kind::Jinja {
                env: Box::new(env),
                source: source.to_string(),
                bos: bos_token.to_string(),
                eos: eos_token.to_string(),
                budget,
            },
        })
    }

    /// Replaces the render budget of a Jinja template (no effect on the built-in ones, which
    /// are not interpreted).
    pub fn with_budget(mut self, new_budget: TemplateBudget) -> ChatTemplate {
        if let Kind::Jinja { env, budget, .. } = &mut self.kind {
            env.set_recursion_limit(new_budget.recursion_limit);
            *budget = new_budget;
        }
        self
    }

    /// FastChat's `llama-2` format without a default system prompt (the AgentBench harness,
    /// named `eval`). A leading `system` message still becomes the `<<SYS>>` block.
    pub fn llama2() -> ChatTemplate {
        ChatTemplate {
            kind: Kind::Llama2 { default_system: None },
        }
    }

    /// FastChat's `llama-2` format with `system` used when the conversation has none.
    pub fn llama2_with_system(system: impl Into<String>) -> ChatTemplate {
        ChatTemplate {
            kind: Kind::Llama2 {
                default_system: Some(system.into()),
            },
        }
    }

    /// Built-in templates by name: `llama-2`/`eval` (no system prompt) and `agent` (AgentLM's
    /// model-card system prompt).
    pub fn named(name: &str) -> Result<ChatTemplate, ChatError> {
        match name {
            "llama-2" | "llama2" | "eval" => Ok(ChatTemplate::llama2()),
            "agent" => Ok(ChatTemplate::llama2_with_system(AGENTLM_SYSTEM_PROMPT)),
            other => Err(ChatError::UnknownName(other.to_string())),
        }
    }

    /// The Jinja source, for templates read from a file.
    pub fn source(&self) -> Option<&str> {
        match &self.kind {
            Kind::Jinja { source, .. } => Some(source),
            Kind::Llama2 { .. } => None,
        }
    }

    /// Renders a conversation; `add_generation_prompt` appends the opening of the assistant's
    /// turn so the model continues with its reply.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String, ChatError> {
        match &self.kind {
            Kind::Jinja {
                env, bos, eos, budget, ..
            } => {
                let msgs: Vec<Value> = messages
                    .iter()
                    .map(|m| {
                        let mut map = BTreeMap::new();
                        map.insert("role".to_string(), Value::from(m.role.as_str()));
                        map.insert("content".to_string(), Value::from(m.content.as_str()));
                        Value::from(map)
                    })
                    .collect();
                let mut ctx = BTreeMap::new();
                ctx.insert("messages".to_string(), Value::from(msgs));
                ctx.insert("add_generation_prompt".to_string(), Value::from(add_generation_prompt));
                ctx.insert("bos_token".to_string(), Value::from(bos.as_str()));
                ctx.insert("eos_token".to_string(), Value::from(eos.as_str()));
                let input_bytes = messages
                    .iter()
                    .map(|m| m.role.len() + m.content.len())
                    .fold(bos.len() + eos.len(), usize::saturating_add);
                // Fuel is per environment; each render gets a fresh tank sized for its input.
                let mut env = env.clone();
                env.set_fuel(Some(budget.fuel_for(input_bytes)));
                let template = env
                    .get_template(TEMPLATE_NAME)
                    .map_err(|e| ChatError::Render(jinja_error(&e)))?;
                let output_limit = budget.output_for(input_bytes);
                let mut out = CappedOutput {
                    bytes: Vec::new(),
                    limit: output_limit,
                    exceeded: false,
                };
                match template.render_captured_to(Value::from(ctx), &mut out) {
                    Ok(_) => {}
                    Err(_) if out.exceeded => {
                        return Err(ChatError::Budget(format!("output longer than {output_limit} bytes")))
                    }
                    Err(e) if e.kind() == ErrorKind::OutOfFuel => {
                        let at = e.line().map(|l| format!(" (template line {l})")).unwrap_or_default();
                        return Err(ChatError::Budget(format!(
                            "used all its {} units of fuel (instructions and data){at}",
                            budget.fuel_for(input_bytes)
                        )));
                    }
                    Err(e) if is_recursion_error(&e) => {
                        return Err(ChatError::Budget(format!(
                            "nested deeper than {} levels",
                            budget.recursion_limit
                        )))
                    }
                    Err(e) => return Err(ChatError::Render(jinja_error(&e))),
                }
                String::from_utf8(out.bytes).map_err(|_| ChatError::Render("the template wrote invalid UTF-8".into()))
            }
            Kind::Llama2 { default_system } => {
                render_llama2(messages, default_system.as_deref(), add_generation_prompt)
            }
        }
    }
}

/// The render target of a Jinja template: refuses to grow past `limit` bytes, so a template
/// cannot fill memory with output.
struct CappedOutput {
    bytes: Vec<u8>,
    limit: usize,
    exceeded: bool,
}

impl std::io::Write for CappedOutput {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.bytes.len().saturating_add(buf.len()) > self.limit {
            self.exceeded = true;
            return Err(std::io::Error::other("chat template output limit reached"));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// minijinja reports its recursion limit as a generic invalid operation.
fn is_recursion_error(e: &JinjaError) -> bool {
    e.kind() == ErrorKind::InvalidOperation && e.to_string().contains("recursion limit")
}

/// Checks that roles alternate user/assistant after an optional leading system message, then
/// renders with [`fastchat_llama2`].
fn render_llama2(
    messages: &[Message],
    default_system: Option<&str>,
    add_generation_prompt: bool,
) -> Result<String, ChatError> {
    let (system, turns) = match messages.first() {
        Some(m) if m.role == "system" => (Some(crate::py::strip(&m.content)), &messages[1..]),
        _ => (default_system, messages),
    };
    for (i, m) in turns.iter().enumerate() {
        let is_user = m.role == "user";
        let is_assistant = m.role == "assistant" || m.role == "agent";
        if (i % 2 == 0 && !is_user) || (i % 2 == 1 && !is_assistant) {
            return Err(ChatError::Conversation(format!(
                "message {} has role {:?}; after an optional system message the roles must alternate user, assistant, …",
                i + usize::from(turns.len() != messages.len()),
                m.role
            )));
        }
    }
    Ok(fastchat_llama2(
        system,
        turns.iter().map(|m| m.content.as_str()),
        add_generation_prompt,
    ))
}

/// FastChat 0.2.31 `Conversation.get_prompt` for `SeparatorStyle.LLAMA2` (roles `[INST]` /
/// `[/INST]` by position, separators `" "` and `" </s><s>"`), with every turn `.strip()`ped as
/// AgentBench's client does (the system prompt is used as given). The one Llama-2 renderer: chat templates and
/// the agent's prompts (`agent::render`) both come here. The string starts without BOS: the
/// tokenizer adds it, and turns `</s><s>` into the EOS/BOS special tokens.
pub fn fastchat_llama2<'a>(
    system: Option<&str>,
    turns: impl IntoIterator<Item = &'a str>,
    add_generation_prompt: bool,
) -> String {
    const ROLES: [&str; 2] = ["[INST]", "[/INST]"];
    const SEPS: [&str; 2] = [" ", " </s><s>"];
    let mut out = match system {
        Some(s) if !s.is_empty() => format!("[INST] <<SYS>>\n{s}\n<</SYS>>\n\n"),
        _ => "[INST] ".to_string(),
    };
    let mut n = 0;
    for (i, content) in turns.into_iter().enumerate() {
        let content = crate::py::strip(content);
        // FastChat treats an empty message like a missing one: only the role tag is written.
        if content.is_empty() {
            out.push_str(ROLES[i % 2]);
        } else if i == 0 {
            out.push_str(content);
            out.push(' ');
        } else {
            out.push_str(ROLES[i % 2]);
            out.push(' ');
            out.push_str(content);
            out.push_str(SEPS[i % 2]);
        }
        n = i + 1;
    }
    if add_generation_prompt {
        // FastChat appends an empty message for the reply, which writes the next role's tag.
        out.push_str(ROLES[n % 2]);
    }
    out
}

/// Tokenizes a rendered chat prompt: special-token texts become their ids, and BOS is added
/// when the model wants it (`add_bos_default`) unless the template already wrote it (HF
/// templates such as Llama-2-chat's start with `{{ bos_token }}`; a second BOS would shift the
/// model off its training format).
pub fn encode_prompt(tokenizer: &crate::tokenizer::Tokenizer, prompt: &str) -> Vec<u32> {
    let mut ids = tokenizer.encode(prompt, tokenizer.add_bos_default(), true);
    if let Some(bos) = tokenizer.bos_id() {
        if ids.len() >= 2 && ids[0] == bos && ids[1] == bos && tokenizer.add_bos_default() {
            ids.remove(0);
        }
    }
    ids
}
