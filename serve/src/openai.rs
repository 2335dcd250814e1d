//! OpenAI's API: `POST /v1/chat/completions`, `POST /v1/completions` (both with
//! `stream: true` as server-sent `chunk`s ending in `data: [DONE]`) and `GET /v1/models`.
//!
//! One choice per request (`n` > 1 is refused). Sampling follows OpenAI's defaults
//! (`temperature` 1, `top_p` 1; `temperature: 0` is greedy); `top_k`, `min_p`, `typical_p`,
//! `repetition_penalty` and `ignore_eos` are accepted as extensions; `logprobs` reports the chosen
//! tokens' log-probabilities and up to 20 (completions: 5) alternatives (`echo` is refused);
//! `frequency_penalty`, `presence_penalty` and other fields are accepted and ignored.

use crate::app::AppState;
use crate::errors::{parse_body, Api, ApiError};
use crate::generation::{
    check_stop_lengths, collect, openai_finish_reason, random_seed, response_id, submit, unix_time, Engine, GenRequest,
};
use crate::prompt::encode_completion;
use crate::stream::{data, sse, Translator};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::response::sse::Event as SseEvent;
use axum::response::{IntoResponse, Response};
use axum::Json;
use edgeact_runtime::batching::{Event, Summary, TokenEvent};
use edgeact_runtime::chat::Message;
use edgeact_runtime::sampler::SamplerConfig;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

const API: Api = Api::OpenAi;
/// Most stop strings per request.
pub const MAX_STOP: usize = 16;

#[derive(Deserialize)]
#[serde(untagged)]
enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize, Default)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

/// The fields both endpoints share.
#[derive(Deserialize, Default)]
#[serde(default)]
struct Common {
    model: Option<String>,
    max_tokens: Option<i64>,
    max_completion_tokens: Option<i64>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    top_k: Option<i64>,
    min_p: Option<f32>,
    typical_p: Option<f32>,
    repetition_penalty: Option<f32>,
    stop: Option<Stop>,
    seed: Option<u64>,
    n: Option<i64>,
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
    /// llama.cpp's extension: keep generating after EOS.
    ignore_eos: Option<bool>,
    /// Chat: `true`/`false`; completions: how many alternatives per token (0 to 5).
    logprobs: Option<Value>,
    top_logprobs: Option<i64>,
    /// Completions: the prompt before the completion (not supported).
    echo: Option<bool>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Deserialize)]
struct Part {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
}

#[derive(Deserialize)]
struct ChatMessage {
    role: String,
    #[serde(default)]
    content: Option<Content>,
}

#[derive(Deserialize)]
struct ChatRequest {
    messages: Vec<ChatMessage>,
    #[serde(flatten)]
    common: Common,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Prompt {
    Text(String),
    Texts(Vec<String>),
}

#[derive(Deserialize)]
struct CompletionRequest {
    prompt: Prompt,
    #[serde(flatten)]
    common: Common,
}

/// Sampling, limits and streaming of a request, validated.
struct Settings {
    sampler: SamplerConfig,
    max_tokens: Option<usize>,
    stop: Vec<String>,
    stream: bool,
    include_usage: bool,
    ignore_eos: bool,
    /// Report each generated token's log-probability and this many alternatives.
    logprobs: Option<usize>,
    model: String,
}

/// Whether `logprobs` asks for the chosen tokens' log-probabilities, and how many alternatives
/// per token: chat's `logprobs: true` with `top_logprobs` 0 to 20, completions' `logprobs` 0 to 5.
fn wants_logprobs(kind: Kind, c: &Common) -> Result<Option<usize>, ApiError> {
    match kind {
        Kind::Chat => {
            let on = match &c.logprobs {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => *b,
                Some(v) => {
                    return Err(ApiError::invalid_param(
                        API,
                        "logprobs",
                        format!("logprobs must be true or false (got {v})"),
                    ))
                }
            };
            match c.top_logprobs {
                Some(k) if !(0..=20).contains(&k) => Err(ApiError::invalid_param(
                    API,
                    "top_logprobs",
                    format!("top_logprobs must be between 0 and 20 (got {k})"),
                )),
                Some(_) if !on => Err(ApiError::invalid_param(
                    API,
                    "top_logprobs",
                    "top_logprobs needs logprobs: true",
                )),
                k => Ok(on.then_some(k.unwrap_or(0) as usize)),
            }
        }
        Kind::Completion => {
            if c.echo == Some(true) {
                return Err(ApiError::invalid_param(API, "echo", "echo is not supported"));
            }
            match &c.logprobs {
                None | Some(Value::Null) => Ok(None),
                Some(v) => match v.as_i64() {
                    Some(k @ 0..=5) => Ok(Some(k as usize)),
                    _ => Err(ApiError::invalid_param(
                        API,
                        "logprobs",
                        format!("logprobs must be an integer between 0 and 5 (got {v})"),
                    )),
                },
            }
        }
    }
}

fn settings(engine: &Engine, default_seed: Option<u64>, kind: Kind, c: Common) -> Result<Settings, ApiError> {
    let logprobs = wants_logprobs(kind, &c)?;
    if let Some(n) = c.n {
        if n != 1 {
            return Err(ApiError::invalid_param(
                API,
                "n",
                format!("n = {n} is not supported: this server returns exactly one choice (n = 1)"),
            ));
        }
    }
    let max_tokens = match c.max_completion_tokens.or(c.max_tokens) {
        Some(m) if m < 1 => {
            return Err(ApiError::invalid_param(
                API,
                "max_tokens",
                format!("max_tokens must be at least 1 (got {m})"),
            ))
        }
        Some(m) if m > i64::from(u32::MAX) => {
            return Err(ApiError::invalid_param(
                API,
                "max_tokens",
                format!("max_tokens must be at most {} (got {m})", u32::MAX),
            ))
        }
        Some(m) => Some(m as usize),
        None => None,
    };
    let temperature = c.temperature.unwrap_or(1.0);
    if !(0.0..=2.0).contains(&temperature) {
        return Err(ApiError::invalid_param(
            API,
            "temperature",
            format!("temperature must be between 0 and 2 (got {temperature})"),
        ));
    }
    let top_p = c.top_p.unwrap_or(1.0);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(ApiError::invalid_param(
            API,
            "top_p",
            format!("top_p must be > 0 and <= 1 (got {top_p})"),
        ));
    }
    let top_k = match c.top_k {
        Some(k) if k < 0 => return Err(ApiError::invalid_param(API, "top_k", "top_k must not be negative")),
        Some(k) => usize::try_from(k).unwrap_or(usize::MAX),
        None => 0,
    };
    let min_p = c.min_p.unwrap_or(0.0);
    if !(0.0..=1.0).contains(&min_p) {
        return Err(ApiError::invalid_param(API, "min_p", "min_p must be between 0 and 1"));
    }
    let typical_p = c.typical_p.unwrap_or(1.0);
    if !(typical_p > 0.0 && typical_p <= 1.0) {
        return Err(ApiError::invalid_param(
            API,
            "typical_p",
            "typical_p must be > 0 and <= 1",
        ));
    }
    let repeat_penalty = c.repetition_penalty.unwrap_or(1.0);
    if !(repeat_penalty > 0.0 && repeat_penalty.is_finite()) {
        return Err(ApiError::invalid_param(
            API,
            "repetition_penalty",
            "repetition_penalty must be positive",
        ));
    }
    let stop = match c.stop {
        None => Vec::new(),
        Some(Stop::One(s)) => vec![s],
        Some(Stop::Many(v)) => v,
    };
    if stop.len() > MAX_STOP {
        return Err(ApiError::invalid_param(
            API,
            "stop",
            format!("at most {MAX_STOP} stop strings are supported (got {})", stop.len()),
        ));
    }
    check_stop_lengths(&stop).map_err(|m| ApiError::invalid_param(API, "stop", m))?;
    let stop: Vec<String> = stop.into_iter().filter(|s| !s.is_empty()).collect();
    let sampler = SamplerConfig {
        temperature,
        top_k,
        top_p,
        min_p,
        typical_p,
        repeat_penalty,
        repeat_last_n: engine.n_ctx(),
        seed: c.seed.or(default_seed).unwrap_or_else(random_seed),
    };
    Ok(Settings {
        sampler,
        max_tokens,
        stop,
        stream: c.stream.unwrap_or(false),
        include_usage: c.stream_options.is_some_and(|o| o.include_usage),
        ignore_eos: c.ignore_eos.unwrap_or(false),
        logprobs,
        model: c.model.unwrap_or_else(|| engine.model_id.clone()),
    })
}

/// The `logprobs` of a choice for `tokens` (chat: `content` entries with the token's text, bytes
/// and alternatives; completions: parallel `tokens`, `token_logprobs` and `top_logprobs`), or
/// null when not asked for.
fn logprobs_json(engine: &Engine, kind: Kind, asked: bool, tokens: &[TokenEvent]) -> Value {
    if !asked {
        return Value::Null;
    }
    let bytes = |id: u32| -> Vec<u8> {
        match engine.tokenizer.token_bytes(id) {
            [] => engine.token_text(id).into_bytes(),
            b => b.to_vec(),
        }
    };
    match kind {
        Kind::Chat => json!({"content": tokens.iter().map(|t| json!({
            "token": engine.token_text(t.id),
            "logprob": t.logprob,
            "bytes": bytes(t.id),
            "top_logprobs": t.top.iter().map(|&(id, logprob)| json!({
                "token": engine.token_text(id),
                "logprob": logprob,
                "bytes": bytes(id),
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>()}),
        Kind::Completion => json!({
            "tokens": tokens.iter().map(|t| engine.token_text(t.id)).collect::<Vec<_>>(),
            "token_logprobs": tokens.iter().map(|t| t.logprob).collect::<Vec<_>>(),
            // One object per token, alternative texts to log-probabilities (the legacy shape;
            // alternatives with the same text keep the likelier).
            "top_logprobs": tokens.iter().map(|t| {
                let mut m = serde_json::Map::new();
                for &(id, logprob) in t.top.iter().rev() {
                    m.insert(engine.token_text(id), json!(logprob));
                }
                Value::Object(m)
            }).collect::<Vec<_>>(),
            "text_offset": null,
        }),
    }
}

fn usage(s: &Summary) -> Value {
    json!({
        "prompt_tokens": s.prompt_tokens,
        "completion_tokens": s.generated_tokens,
        "total_tokens": s.prompt_tokens + s.generated_tokens,
        "prompt_tokens_details": {"cached_tokens": s.cached_tokens},
    })
}

fn message_text(i: usize, m: ChatMessage) -> Result<Message, ApiError> {
    let content = match m.content {
        None => String::new(),
        Some(Content::Text(t)) => t,
        Some(Content::Parts(parts)) => {
            let mut text = String::new();
            for p in parts {
                if p.kind != "text" {
                    return Err(ApiError::invalid_param(
                        API,
                        "messages",
                        format!(
                            "message {i}: content parts of type {:?} are not supported (text only)",
                            p.kind
                        ),
                    ));
                }
                text.push_str(&p.text.unwrap_or_default());
            }
            text
        }
    };
    // OpenAI's newer name for the system role.
    let role = if m.role == "developer" {
        "system".to_string()
    } else {
        m.role
    };
    Ok(Message::new(role, content))
}

/// Which endpoint a response or chunk belongs to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Chat,
    Completion,
}

struct Meta {
    kind: Kind,
    id: String,
    created: u64,
    model: String,
}

impl Meta {
    fn new(kind: Kind, model: String) -> Meta {
        let prefix = match kind {
            Kind::Chat => "chatcmpl",
            Kind::Completion => "cmpl",
        };
        Meta {
            kind,
            id: response_id(prefix),
            created: unix_time(),
            model,
        }
    }

    fn object(&self, chunk: bool) -> &'static str {
        match (self.kind, chunk) {
            (Kind::Chat, false) => "chat.completion",
            (Kind::Chat, true) => "chat.completion.chunk",
            (Kind::Completion, _) => "text_completion",
        }
    }

    fn wrap(&self, chunk: bool, choices: Value) -> Value {
        json!({
            "id": self.id,
            "object": self.object(chunk),
            "created": self.created,
            "model": self.model,
            "system_fingerprint": null,
            "choices": choices,
        })
    }

    /// A streamed choice with new text (or, for chat, the opening role) and maybe the end.
    fn chunk(&self, text: Option<&str>, role: bool, finish: Option<&str>) -> Value {
        self.chunk_with(text, role, finish, Value::Null)
    }

    /// [`Meta::chunk`] with the `logprobs` of the tokens it carries.
    fn chunk_with(&self, text: Option<&str>, role: bool, finish: Option<&str>, logprobs: Value) -> Value {
        let choice = match self.kind {
            Kind::Chat => {
                let mut delta = json!({});
                if role {
                    delta["role"] = json!("assistant");
                }
                if let Some(t) = text {
                    delta["content"] = json!(t);
                }
                json!({"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish})
            }
            Kind::Completion => {
                json!({"index": 0, "text": text.unwrap_or_default(), "logprobs": logprobs, "finish_reason": finish})
            }
        };
        self.wrap(true, json!([choice]))
    }
}

struct OpenAiStream {
    meta: Meta,
    include_usage: bool,
    /// `Some` when the client asked for log-probabilities: every token then gets a chunk (with
    /// its text, possibly empty while held back) carrying its entry.
    logprobs: Option<Engine>,
}

impl Translator for OpenAiStream {
    fn start(&mut self) -> Vec<SseEvent> {
        match self.meta.kind {
            Kind::Chat => vec![data(&self.meta.chunk(Some(""), true, None))],
            Kind::Completion => Vec::new(),
        }
    }

    fn event(&mut self, event: Event) -> (Vec<SseEvent>, bool) {
        let done = SseEvent::default().data("[DONE]");
        match event {
            Event::Token(t) => match &self.logprobs {
                Some(engine) => {
                    let lp = logprobs_json(engine, self.meta.kind, true, std::slice::from_ref(&t));
                    (vec![data(&self.meta.chunk_with(Some(&t.text), false, None, lp))], false)
                }
                None if t.text.is_empty() => (Vec::new(), false),
                None => (vec![data(&self.meta.chunk(Some(&t.text), false, None))], false),
            },
            Event::Done(s) => {
                let mut out = Vec::new();
                if !s.tail.is_empty() {
                    out.push(data(&self.meta.chunk(Some(&s.tail), false, None)));
                }
                let mut last = self.meta.chunk(None, false, Some(openai_finish_reason(&s.stop)));
                if self.include_usage {
                    out.push(data(&last));
                    let mut u = self.meta.wrap(true, json!([]));
                    u["usage"] = usage(&s);
                    out.push(data(&u));
                } else {
                    // llama.cpp's server also puts the usage on the last chunk.
                    last["usage"] = usage(&s);
                    out.push(data(&last));
                }
                out.push(done);
                (out, true)
            }
            Event::Failed(msg) => (vec![data(&ApiError::internal(API, msg).stream_payload()), done], true),
        }
    }

    fn closed(&mut self) -> Vec<SseEvent> {
        vec![
            data(&ApiError::internal(API, "the generation ended without a result").stream_payload()),
            SseEvent::default().data("[DONE]"),
        ]
    }
}

async fn respond(state: &AppState, kind: Kind, prompt: Vec<u32>, s: Settings) -> Result<Response, ApiError> {
    let gen = GenRequest {
        prompt,
        sampler: s.sampler,
        max_tokens: s.max_tokens,
        stop_strings: s.stop,
        ignore_eos: s.ignore_eos,
        prompt_logprobs: false,
        top_logprobs: s.logprobs.unwrap_or(0),
    };
    let (rx, _) = submit(&state.engine, API, gen)?;
    let meta = Meta::new(kind, s.model);
    if s.stream {
        let t = OpenAiStream {
            meta,
            include_usage: s.include_usage,
            logprobs: s.logprobs.map(|_| state.engine.clone()),
        };
        return Ok(sse(rx, t).into_response());
    }
    let done = collect(API, rx).await?;
    let sum = &done.summary;
    let finish = openai_finish_reason(&sum.stop);
    let logprobs = logprobs_json(&state.engine, kind, s.logprobs.is_some(), &done.tokens);
    let choice = match kind {
        Kind::Chat => json!({
            "index": 0,
            "message": {"role": "assistant", "content": sum.text},
            "logprobs": logprobs,
            "finish_reason": finish,
        }),
        Kind::Completion => json!({"index": 0, "text": sum.text, "logprobs": logprobs, "finish_reason": finish}),
    };
    let mut body = meta.wrap(false, json!([choice]));
    body["usage"] = usage(sum);
    Ok(Json(body).into_response())
}

async fn chat_inner(state: &AppState, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    let r: ChatRequest = parse_body(API, body)?;
    let engine = &state.engine;
    let s = settings(engine, state.opts.default_seed, Kind::Chat, r.common)?;
    if r.messages.is_empty() {
        return Err(ApiError::invalid_param(API, "messages", "messages must not be empty"));
    }
    let messages = r
        .messages
        .into_iter()
        .enumerate()
        .map(|(i, m)| message_text(i, m))
        .collect::<Result<Vec<_>, _>>()?;
    let prompt = engine
        .chat
        .encode(&engine.tokenizer, &messages)
        .map_err(|e| ApiError::invalid_param(API, "messages", format!("cannot render the chat template: {e}")))?;
    respond(state, Kind::Chat, prompt, s).await
}

/// `POST /v1/chat/completions`.
pub async fn chat_completions(State(state): State<Arc<AppState>>, body: Result<Bytes, BytesRejection>) -> Response {
    chat_inner(&state, body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn completions_inner(state: &AppState, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    let r: CompletionRequest = parse_body(API, body)?;
    let engine = &state.engine;
    let s = settings(engine, state.opts.default_seed, Kind::Completion, r.common)?;
    let text = match r.prompt {
        Prompt::Text(t) => t,
        Prompt::Texts(mut v) if v.len() == 1 => v.remove(0),
        Prompt::Texts(v) => {
            return Err(ApiError::invalid_param(
                API,
                "prompt",
                format!("one prompt per request is supported (got {})", v.len()),
            ))
        }
    };
    if text.is_empty() {
        return Err(ApiError::invalid_param(API, "prompt", "the prompt is empty"));
    }
    let prompt = encode_completion(&engine.tokenizer, &text);
    respond(state, Kind::Completion, prompt, s).await
}

/// `POST /v1/completions`.
pub async fn completions(State(state): State<Arc<AppState>>, body: Result<Bytes, BytesRejection>) -> Response {
    completions_inner(&state, body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// `GET /v1/models`.
pub async fn models(State(state): State<Arc<AppState>>) -> Json<Value> {
    Json(json!({
        "object": "list",
        "data": [{
            "id": state.engine.model_id,
            "object": "model",
            "created": state.started,
            "owned_by": "edgeact",
        }],
    }))
}
