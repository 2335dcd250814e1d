//! How the agent's conversation becomes the model's prompt: the built-in FastChat `llama-2`
//! rendering that AgentBench used for AgentLM (byte-exact), or the model file's own Jinja chat
//! template (`tokenizer.chat_template`), for models trained on another format (SmolLM2's
//! ChatML, Llama-3, …).
//!
//! `auto` keeps AgentLM byte-exact and gives other models their own format: it picks the
//! built-in `llama-2` rendering when the file has no template or a Llama-2-style one (every
//! AgentLM/Llama-2-chat GGUF, including the template our converter writes when the checkpoint
//! has none), and the file's template otherwise.
//!
//! Both renderings see the same messages: contents `.strip()`ped as AgentBench's client did,
//! the agent's turns as `assistant`, and the system prompt of the [`ChatTemplate`] choice
//! (`eval`: none, so a Jinja template's own default applies; `agent`: the model-card prompt).

use super::render::{render_llama2, ChatTemplate, Message, Role};
use edgeact_runtime::chat::{self, ChatError};
use edgeact_runtime::gguf::{GgufError, GgufFile};
use edgeact_runtime::py;
use edgeact_runtime::tokenizer::Tokenizer;
use std::fmt;
use std::sync::Arc;

/// The user's choice of prompt format (`--chat-template`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FormatChoice {
    /// `llama2` unless the file carries a chat template that is not Llama-2-style.
    #[default]
    Auto,
    /// FastChat's `llama-2`, as AgentBench rendered AgentLM's conversations.
    Llama2,
    /// The file's `tokenizer.chat_template` (an error when it has none).
    Gguf,
}

impl FormatChoice {
    pub const NAMES: [&'static str; 3] = ["auto", "llama2", "gguf"];

    pub fn from_name(name: &str) -> Option<FormatChoice> {
        match name {
            "auto" => Some(FormatChoice::Auto),
            "llama2" | "llama-2" => Some(FormatChoice::Llama2),
            "gguf" => Some(FormatChoice::Gguf),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            FormatChoice::Auto => "auto",
            FormatChoice::Llama2 => "llama2",
            FormatChoice::Gguf => "gguf",
        }
    }
}

/// Why a prompt format could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum PromptFormatError {
    #[error("the model file has no tokenizer.chat_template (use the llama2 or auto format)")]
    NoTemplate,
    #[error("reading the chat template: {0}")]
    Gguf(#[from] GgufError),
    #[error(transparent)]
    Chat(#[from] ChatError),
}

/// How a conversation is rendered and tokenized.
#[derive(Clone)]
pub enum PromptFormat {
    /// FastChat's `llama-2` ([`render_llama2`]), tokenized with BOS first and `</s><s>` as
    /// special tokens, as the TGI server did.
    Llama2,
    /// A Jinja chat template, rendered with the generation prompt and tokenized with special
    /// tokens parsed and BOS as the model wants it ([`chat::encode_prompt`]).
    Jinja(Arc<chat::ChatTemplate>),
}

impl fmt::Debug for PromptFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PromptFormat::Llama2 => f.write_str("Llama2"),
            PromptFormat::Jinja(t) => f.debug_tuple("Jinja").field(&t.source().map_or(0, str::len)).finish(),
        }
    }
}

/// Whether a Jinja chat template writes Llama-2-chat's format (`[INST]`, `[/INST]` and a
/// `<<SYS>>` block). Mistral's `[INST]` templates have no `<<SYS>>` and are not matched.
pub fn is_llama2_like(source: &str) -> bool {
    ["[INST]", "[/INST]", "<<SYS>>"].iter().all(|m| source.contains(m))
}

impl PromptFormat {
    /// Resolves `choice` against a model file.
    pub fn resolve(choice: FormatChoice, file: &GgufFile) -> Result<PromptFormat, PromptFormatError> {
        let source = file.get_str("tokenizer.chat_template")?;
        match (choice, source) {
            (FormatChoice::Llama2, _) | (FormatChoice::Auto, None) => Ok(PromptFormat::Llama2),
            (FormatChoice::Auto, Some(s)) if is_llama2_like(s) => Ok(PromptFormat::Llama2),
            (FormatChoice::Gguf, None) => Err(PromptFormatError::NoTemplate),
            (_, Some(_)) => Ok(PromptFormat::Jinja(Arc::new(chat::ChatTemplate::from_gguf(file)?))),
        }
    }

    /// `llama2` or `gguf`.
    pub fn name(&self) -> &'static str {
        match self {
            PromptFormat::Llama2 => "llama2",
            PromptFormat::Jinja(_) => "gguf",
        }
    }

    /// The prompt string for `messages` (which alternate user, agent, … and end with a user
    /// turn), ready for the model to write the agent's next reply.
    pub fn render(&self, messages: &[Message], system: &ChatTemplate) -> Result<String, ChatError> {
        match self {
            PromptFormat::Llama2 => Ok(render_llama2(messages, system)),
            PromptFormat::Jinja(template) => {
                let mut msgs = Vec::with_capacity(messages.len() + 1);
                if let Some(s) = system.system().map(py::strip).filter(|s| !s.is_empty()) {
                    msgs.push(chat::Message::system(s));
                }
                msgs.extend(messages.iter().map(|m| {
                    let role = match m.role {
                        Role::User => "user",
                        Role::Agent => "assistant",
                    };
                    chat::Message::new(role, py::strip(&m.content))
                }));
                template.render(&msgs, true)
            }
        }
    }

    /// Tokenizes a prompt rendered by [`PromptFormat::render`].
    pub fn encode(&self, tokenizer: &Tokenizer, prompt: &str) -> Vec<u32> {
        match self {
            // AgentBench's server always put BOS first.
            PromptFormat::Llama2 => tokenizer.encode(prompt, true, true),
            PromptFormat::Jinja(_) => chat::encode_prompt(tokenizer, prompt),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHATML: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + \
        message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}\
        {{ '<|im_start|>assistant\\n' }}{% endif %}";

    #[test]
    fn llama2_detection() {
        assert!(!is_llama2_like(CHATML));
        assert!(is_llama2_like(
            "{{ bos_token + '[INST] ' + '<<SYS>>\\n' + s + '\\n<</SYS>>\\n\\n' + c + ' [/INST]' }}"
        ));
        // Mistral-instruct: [INST] without a system block.
        assert!(!is_llama2_like(
            "{{ bos_token }}{% for m in messages %}[INST] {{ m['content'] }} [/INST]{% endfor %}"
        ));
    }

    #[test]
    fn choice_names_round_trip() {
        for n in FormatChoice::NAMES {
            assert_eq!(FormatChoice::from_name(n).map(FormatChoice::name), Some(n));
        }
        assert_eq!(FormatChoice::from_name("chatml"), None);
    }

    #[test]
    fn jinja_rendering_strips_maps_roles_and_adds_system() {
        let f = PromptFormat::Jinja(Arc::new(chat::ChatTemplate::from_jinja(CHATML, "", "").unwrap()));
        let msgs = vec![
            Message::user("  q1\n"),
            Message::agent("Act: bash\n\n```bash\nls\n```\n"),
            Message::user(""),
        ];
        assert_eq!(
            f.render(&msgs, &ChatTemplate::Eval).unwrap(),
            "<|im_start|>user\nq1<|im_end|>\n<|im_start|>assistant\nAct: bash\n\n```bash\nls\n```<|im_end|>\n\
             <|im_start|>user\n<|im_end|>\n<|im_start|>assistant\n"
        );
        let with_sys = f.render(&msgs[..1], &ChatTemplate::Agent).unwrap();
        assert_eq!(
            with_sys,
            "<|im_start|>system\nYou are a helpful, respectful and honest assistant.<|im_end|>\n\
             <|im_start|>user\nq1<|im_end|>\n<|im_start|>assistant\n"
        );
        assert_eq!(f.name(), "gguf");
        assert_eq!(PromptFormat::Llama2.name(), "llama2");
    }

    #[test]
    fn llama2_format_is_the_fastchat_rendering() {
        let msgs = vec![Message::user("hi"), Message::agent("yo"), Message::user("x")];
        for sys in [ChatTemplate::Eval, ChatTemplate::Agent] {
            assert_eq!(
                PromptFormat::Llama2.render(&msgs, &sys).unwrap(),
                render_llama2(&msgs, &sys)
            );
        }
    }
}
