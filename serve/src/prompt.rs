//! Token prompts built from what clients send: TGI's `inputs` string (BOS first, `</s><s>`
//! as special tokens, optionally left-truncated), OpenAI's prompt string, and OpenAI's chat
//! messages rendered with the chosen chat template.

use edgeact_agent::PromptFormat;
use edgeact_runtime::chat::{self, ChatTemplate, Message};
use edgeact_runtime::tokenizer::Tokenizer;
use std::sync::Arc;

/// How chat messages become a prompt: a template to render them and the matching tokenization.
#[derive(Clone)]
pub struct ChatPrompt {
    format: PromptFormat,
    template: Arc<ChatTemplate>,
}

impl ChatPrompt {
    /// The rendering of a resolved `--chat-template` choice: FastChat `llama-2` (a leading
    /// system message becomes the `<<SYS>>` block) or the file's Jinja template.
    pub fn new(format: PromptFormat) -> ChatPrompt {
        let template = match &format {
            PromptFormat::Llama2 => Arc::new(ChatTemplate::llama2()),
            PromptFormat::Jinja(t) => Arc::clone(t),
        };
        ChatPrompt { format, template }
    }

    /// `llama2` or `gguf`.
    pub fn name(&self) -> &'static str {
        self.format.name()
    }

    /// The token ids of `messages`, ready for the assistant's reply.
    pub fn encode(&self, tokenizer: &Tokenizer, messages: &[Message]) -> Result<Vec<u32>, chat::ChatError> {
        let text = self.template.render(messages, true)?;
        Ok(self.format.encode(tokenizer, &text))
    }
}

/// TGI's tokenization of `inputs`: BOS first (as the Llama-2 tokenizer TGI ran), special-token
/// texts such as `</s><s>` parsed into their ids (the [`PromptFormat::Llama2`] encoding).
pub fn encode_tgi(tokenizer: &Tokenizer, inputs: &str) -> Vec<u32> {
    PromptFormat::Llama2.encode(tokenizer, inputs)
}

/// A completion prompt: BOS when the model wants one, special-token texts parsed.
pub fn encode_completion(tokenizer: &Tokenizer, prompt: &str) -> Vec<u32> {
    chat::encode_prompt(tokenizer, prompt)
}
