//! What both APIs share: the engine behind the server (scheduler handle, tokenizer, chat
//! rendering), submitting a validated request, and waiting for its events.

use crate::errors::{Api, ApiError};
use crate::prompt::ChatPrompt;
use edgeact_runtime::batching::{Event, EventSink, Handle, Request, Summary, TokenEvent};
use edgeact_runtime::generate::StopReason;
use edgeact_runtime::sampler::SamplerConfig;
use edgeact_runtime::tokenizer::{TokenType, Tokenizer};
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

/// Longest stop string a request may give, in bytes: the text held back while it may still be
/// one grows with it, and each generated token is checked against what is held.
pub const MAX_STOP_BYTES: usize = 1024;

/// Refuses a stop string longer than [`MAX_STOP_BYTES`] (the message names the limit).
pub fn check_stop_lengths(stop: &[String]) -> Result<(), String> {
    match stop.iter().find(|s| s.len() > MAX_STOP_BYTES) {
        Some(s) => Err(format!(
            "stop strings may be at most {MAX_STOP_BYTES} bytes long (got {})",
            s.len()
        )),
        None => Ok(()),
    }
}

/// The model side of the server: a running scheduler and what is needed to build its prompts.
#[derive(Clone)]
pub struct Engine {
    pub handle: Handle,
    pub tokenizer: Arc<Tokenizer>,
    pub chat: ChatPrompt,
    /// The name reported as `model_id` / `model` (the file name by default).
    pub model_id: String,
    /// Where the model runs (`cpu`, `cuda:0`, ...), for `/info`.
    pub device: String,
    /// Ids that end a generation (EOS and end-of-turn tokens).
    pub stop_tokens: Vec<u32>,
}

impl Engine {
    pub fn new(handle: Handle, tokenizer: Arc<Tokenizer>, chat: ChatPrompt, model_id: impl Into<String>) -> Engine {
        let stop_tokens = tokenizer.eog_ids().to_vec();
        Engine {
            handle,
            tokenizer,
            chat,
            model_id: model_id.into(),
            device: "cpu".into(),
            stop_tokens,
        }
    }

    /// Context of each sequence.
    pub fn n_ctx(&self) -> usize {
        self.handle.info().n_ctx
    }

    /// Whether `id` is a special (control) token, for TGI's `special` flag.
    pub fn is_special(&self, id: u32) -> bool {
        matches!(self.tokenizer.token_type(id), Some(TokenType::Control)) || self.stop_tokens.contains(&id)
    }

    /// The text of a token as TGI shows it in `details` (the stop token's `</s>`, ...).
    pub fn token_text(&self, id: u32) -> String {
        let bytes = self.tokenizer.token_bytes(id);
        if bytes.is_empty() {
            self.tokenizer.token_text(id).unwrap_or_default().to_string()
        } else {
            String::from_utf8_lossy(bytes).into_owned()
        }
    }
}

/// Sends a request's events into a channel; a dropped receiver (the client went away) cancels it.
struct ChannelSink(UnboundedSender<Event>);

impl EventSink for ChannelSink {
    fn send(&mut self, event: Event) -> bool {
        self.0.send(event).is_ok()
    }
    fn is_closed(&self) -> bool {
        self.0.is_closed()
    }
}

/// A request checked at the edge, ready for the scheduler.
#[derive(Clone)]
pub struct GenRequest {
    pub prompt: Vec<u32>,
    pub sampler: SamplerConfig,
    /// `None`: until the context is full.
    pub max_tokens: Option<usize>,
    pub stop_strings: Vec<String>,
    /// Keep generating after EOS (llama.cpp's `ignore_eos`).
    pub ignore_eos: bool,
    /// Score the prompt's tokens (TGI's `decoder_input_details`; bypasses the prefix cache).
    pub prompt_logprobs: bool,
    /// Alternatives reported per generated token (OpenAI's `top_logprobs`, TGI's `top_n_tokens`).
    pub top_logprobs: usize,
}

/// Checks the prompt against the context, caps `max_tokens` to the room left (the TGI routes
/// have already refused a request that does not fit, as TGI does), and queues the request. Its events arrive on the returned channel; dropping it cancels the generation.
pub fn submit(engine: &Engine, api: Api, r: GenRequest) -> Result<(UnboundedReceiver<Event>, usize), ApiError> {
    let n_ctx = engine.n_ctx();
    if r.prompt.is_empty() {
        return Err(ApiError::invalid(api, "the prompt is empty"));
    }
    if r.prompt.len() >= n_ctx {
        let hint = match api {
            Api::Tgi => " (shorten the input or set `truncate`)",
            Api::OpenAi => " (shorten the messages)",
        };
        return Err(ApiError::invalid(
            api,
            format!(
                "the prompt has {} tokens but the context of {n_ctx} tokens must also hold at least one new token{hint}",
                r.prompt.len()
            ),
        )
        .with_code("context_length_exceeded"));
    }
    let room = n_ctx - r.prompt.len();
    let max_tokens = r.max_tokens.map_or(room, |m| m.min(room));
    let prompt_tokens = r.prompt.len();
    let request = Request {
        prompt: r.prompt,
        sampler: r.sampler,
        max_tokens,
        stop_tokens: if r.ignore_eos {
            Vec::new()
        } else {
            engine.stop_tokens.clone()
        },
        stop_strings: r.stop_strings,
        filter: None,
        prompt_logprobs: r.prompt_logprobs,
        top_logprobs: r.top_logprobs,
    };
    let (tx, rx) = unbounded_channel();
    engine
        .handle
        .submit(request, Box::new(ChannelSink(tx)))
        .map_err(|e| ApiError::submit(api, e))?;
    Ok((rx, prompt_tokens))
}

/// A finished generation: its token events and summary.
pub struct Completed {
    pub tokens: Vec<TokenEvent>,
    pub summary: Summary,
}

/// Waits for a request's events to end. If the caller's future is dropped (the client
/// disconnected), the receiver goes with it and the scheduler cancels the generation.
pub async fn collect(api: Api, mut rx: UnboundedReceiver<Event>) -> Result<Completed, ApiError> {
    let mut tokens = Vec::new();
    while let Some(event) = rx.recv().await {
        match event {
            Event::Token(t) => tokens.push(t),
            Event::Done(summary) => return Ok(Completed { tokens, summary }),
            Event::Failed(msg) => return Err(ApiError::internal(api, msg)),
        }
    }
    Err(ApiError::internal(api, "the generation ended without a result"))
}

/// TGI's `finish_reason`.
pub fn tgi_finish_reason(stop: &StopReason) -> &'static str {
    match stop {
        StopReason::MaxTokens | StopReason::ContextFull => "length",
        StopReason::StopString(_) => "stop_sequence",
        _ => "eos_token",
    }
}

/// OpenAI's `finish_reason`.
pub fn openai_finish_reason(stop: &StopReason) -> &'static str {
    match stop {
        StopReason::MaxTokens | StopReason::ContextFull => "length",
        _ => "stop",
    }
}

/// A fresh random seed (for requests that give none and a server started without `--seed`).
pub fn random_seed() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

/// Seconds since the Unix epoch (OpenAI's `created`).
pub fn unix_time() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A short unique id for OpenAI responses.
pub fn response_id(prefix: &str) -> String {
    format!("{prefix}-{:016x}", random_seed())
}
