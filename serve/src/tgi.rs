//! Text Generation Inference's API as AgentBench's `TGIAgent` used it (TGI sha-4cce843):
//! `POST /generate`, `POST /generate_stream`, `POST /` (either, by `stream`), `GET /info`.
//!
//! Semantics kept from TGI: `inputs` is tokenized with BOS first and special-token texts
//! (`</s><s>`) parsed; `truncate` keeps the last tokens; sampling is on when `do_sample` is
//! true OR any warper is set (`temperature` ≠ 1, `top_k`, `top_p` < 1), so
//! `{"do_sample": false, "temperature": 0.7}` samples at T = 0.7; the repetition penalty looks
//! at the whole sequence; `max_new_tokens` defaults to 20; `generated_text` of a stop-sequence
//! end includes the stop sequence; the seed is reported in `details` when sampling.

use crate::app::AppState;
use crate::errors::{parse_body, Api, ApiError};
use crate::generation::{collect, random_seed, submit, tgi_finish_reason, Engine, GenRequest};
use crate::prompt::encode_tgi;
use crate::stream::{data, sse, Translator};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::response::sse::Event as SseEvent;
use axum::response::{IntoResponse, Response};
use axum::Json;
use edgeact_runtime::batching::{Event, Summary, TokenEvent};
use edgeact_runtime::generate::StopReason;
use edgeact_runtime::sampler::SamplerConfig;
use edgeact_runtime::tokenizer::truncate_left;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

/// TGI's default `max_new_tokens`.
pub const DEFAULT_MAX_NEW_TOKENS: usize = 20;
/// Most stop sequences per request.
pub const MAX_STOP_SEQUENCES: usize = 16;

const API: Api = Api::Tgi;

#[derive(Deserialize)]
pub struct GenerateRequest {
    inputs: String,
    #[serde(default)]
    parameters: Option<Parameters>,
    /// Only read by `POST /`.
    #[serde(default)]
    stream: bool,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct Parameters {
    best_of: Option<i64>,
    decoder_input_details: Option<bool>,
    details: Option<bool>,
    do_sample: Option<bool>,
    max_new_tokens: Option<i64>,
    repetition_penalty: Option<f32>,
    return_full_text: Option<bool>,
    seed: Option<u64>,
    stop: Option<Vec<String>>,
    temperature: Option<f32>,
    top_k: Option<i64>,
    top_p: Option<f32>,
    truncate: Option<i64>,
    typical_p: Option<f32>,
    watermark: Option<bool>,
    top_n_tokens: Option<u32>,
}

/// A request validated as TGI's router does.
struct Checked {
    gen: GenRequest,
    /// Reported in `details` when sampling.
    seed: Option<u64>,
    details: bool,
    /// `return_full_text`: the inputs, to put before the generated text.
    prefix: Option<String>,
}

/// A count parameter: at least 1 and, as TGI's `u32` fields, at most 2^32 - 1.
fn positive(v: Option<i64>, name: &str) -> Result<Option<usize>, ApiError> {
    match v {
        Some(n) if n <= 0 => Err(ApiError::invalid(API, format!("`{name}` must be strictly positive"))),
        Some(n) if n > i64::from(u32::MAX) => Err(ApiError::invalid(
            API,
            format!("`{name}` must be at most {} (got {n})", u32::MAX),
        )),
        Some(n) => Ok(Some(n as usize)),
        None => Ok(None),
    }
}

fn check(engine: &Engine, default_seed: Option<u64>, r: GenerateRequest) -> Result<Checked, ApiError> {
    let p = r.parameters.unwrap_or_default();
    let _ = (p.decoder_input_details, p.watermark, p.top_n_tokens);
    if r.inputs.is_empty() {
        return Err(ApiError::invalid(API, "`inputs` cannot be empty"));
    }
    if p.best_of.is_some_and(|b| b > 1) {
        return Err(ApiError::invalid(API, "`best_of` > 1 is not supported by this server"));
    }
    if let Some(t) = p.temperature {
        if !(t > 0.0 && t.is_finite()) {
            return Err(ApiError::invalid(API, "`temperature` must be strictly positive"));
        }
    }
    if let Some(rp) = p.repetition_penalty {
        if !(rp > 0.0 && rp.is_finite()) {
            return Err(ApiError::invalid(API, "`repetition_penalty` must be strictly positive"));
        }
    }
    if let Some(tp) = p.top_p {
        if !(tp > 0.0 && tp <= 1.0) {
            return Err(ApiError::invalid(API, "`top_p` must be > 0.0 and <= 1.0"));
        }
    }
    if let Some(tp) = p.typical_p {
        if !(tp > 0.0 && tp <= 1.0) {
            return Err(ApiError::invalid(API, "`typical_p` must be > 0.0 and <= 1.0"));
        }
        if tp < 1.0 {
            return Err(ApiError::invalid(API, "`typical_p` is not supported by this server"));
        }
    }
    let top_k = positive(p.top_k, "top_k")?;
    let max_new_tokens = positive(p.max_new_tokens, "max_new_tokens")?.unwrap_or(DEFAULT_MAX_NEW_TOKENS);
    let truncate = positive(p.truncate, "truncate")?;
    let stop = p.stop.unwrap_or_default();
    if stop.len() > MAX_STOP_SEQUENCES {
        return Err(ApiError::invalid(
            API,
            format!(
                "`stop` supports up to {MAX_STOP_SEQUENCES} stop sequences. Given: {}",
                stop.len()
            ),
        ));
    }
    if stop.iter().any(String::is_empty) {
        return Err(ApiError::invalid(API, "`stop` sequences cannot be empty"));
    }

    let tok = &engine.tokenizer;
    let mut prompt = encode_tgi(tok, &r.inputs);
    if let Some(n) = truncate {
        truncate_left(&mut prompt, n, tok.bos_id());
    }
    // TGI 4cce843: any warper switches sampling on, whatever `do_sample` says.
    let temperature = p.temperature.unwrap_or(1.0);
    let top_p = p.top_p.unwrap_or(1.0);
    let sampling = p.do_sample.unwrap_or(false) || temperature != 1.0 || top_k.is_some() || top_p < 1.0;
    let seed = p.seed.or(default_seed).unwrap_or_else(random_seed);
    let sampler = SamplerConfig {
        temperature: if sampling { temperature } else { 0.0 },
        top_k: top_k.unwrap_or(0),
        top_p,
        min_p: 0.0,
        repeat_penalty: p.repetition_penalty.unwrap_or(1.0),
        // TGI's penalty looks at every token of the sequence.
        repeat_last_n: engine.n_ctx(),
        seed,
    };
    Ok(Checked {
        gen: GenRequest {
            prompt,
            sampler,
            max_tokens: Some(max_new_tokens),
            stop_strings: stop,
            ignore_eos: false,
        },
        seed: sampling.then_some(seed),
        details: p.details.unwrap_or(false),
        prefix: p.return_full_text.unwrap_or(false).then_some(r.inputs),
    })
}

fn token_json(engine: &Engine, t: &TokenEvent) -> Value {
    json!({"id": t.id, "text": t.text, "logprob": t.logprob, "special": engine.is_special(t.id)})
}

/// The stop token that ended a generation: the scheduler sends no event for it, so its
/// log-probability is not known (reported as 0).
fn stop_token_json(engine: &Engine, id: u32) -> Value {
    json!({"id": id, "text": engine.token_text(id), "logprob": 0.0, "special": true})
}

/// The whole generated text as TGI reports it (a stop sequence included).
fn generated_text(prefix: Option<&str>, s: &Summary) -> String {
    let mut text = prefix.unwrap_or_default().to_string();
    text.push_str(&s.text);
    if let StopReason::StopString(stop) = &s.stop {
        text.push_str(stop);
    }
    text
}

async fn run_generate(state: &AppState, r: GenerateRequest) -> Result<Value, ApiError> {
    let engine = &state.engine;
    let c = check(engine, state.opts.default_seed, r)?;
    let (rx, _) = submit(engine, API, c.gen)?;
    let done = collect(API, rx).await?;
    let s = &done.summary;
    let mut out = json!({"generated_text": generated_text(c.prefix.as_deref(), s)});
    if c.details {
        let mut tokens: Vec<Value> = done.tokens.iter().map(|t| token_json(engine, t)).collect();
        if let StopReason::StopToken(id) = s.stop {
            tokens.push(stop_token_json(engine, id));
        }
        out["details"] = json!({
            "finish_reason": tgi_finish_reason(&s.stop),
            "generated_tokens": s.generated_tokens,
            "seed": c.seed,
            "prefill": [],
            "tokens": tokens,
        });
    }
    Ok(out)
}

/// `POST /generate`.
pub async fn generate(State(state): State<Arc<AppState>>, body: Result<Bytes, BytesRejection>) -> Response {
    let r: GenerateRequest = match parse_body(API, body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    match run_generate(&state, r).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

/// Builds TGI's stream events: each token is sent when the next one arrives, so the last
/// one can carry `generated_text` and `details`, as TGI's final event does.
struct TgiStream {
    engine: Engine,
    seed: Option<u64>,
    prefix: Option<String>,
    pending: Option<TokenEvent>,
}

impl TgiStream {
    fn token_event(&self, token: Value) -> SseEvent {
        data(&json!({"token": token, "generated_text": null, "details": null}))
    }
}

impl Translator for TgiStream {
    fn event(&mut self, event: Event) -> (Vec<SseEvent>, bool) {
        match event {
            Event::Token(t) => {
                let out = self
                    .pending
                    .replace(t)
                    .map(|p| self.token_event(token_json(&self.engine, &p)));
                (out.into_iter().collect(), false)
            }
            Event::Done(s) => {
                let mut out = Vec::new();
                let last = match s.stop {
                    StopReason::StopToken(id) => {
                        if let Some(p) = self.pending.take() {
                            out.push(self.token_event(token_json(&self.engine, &p)));
                        }
                        stop_token_json(&self.engine, id)
                    }
                    _ => match self.pending.take() {
                        Some(p) => token_json(&self.engine, &p),
                        None => json!({"id": 0, "text": "", "logprob": 0.0, "special": true}),
                    },
                };
                out.push(data(&json!({
                    "token": last,
                    "generated_text": generated_text(self.prefix.as_deref(), &s),
                    "details": {
                        "finish_reason": tgi_finish_reason(&s.stop),
                        "generated_tokens": s.generated_tokens,
                        "seed": self.seed,
                    },
                })));
                (out, true)
            }
            Event::Failed(msg) => (vec![data(&ApiError::internal(API, msg).stream_payload())], true),
        }
    }

    fn closed(&mut self) -> Vec<SseEvent> {
        vec![data(
            &ApiError::internal(API, "the generation ended without a result").stream_payload(),
        )]
    }
}

fn start_stream(state: &AppState, r: GenerateRequest) -> Result<Response, ApiError> {
    let c = check(&state.engine, state.opts.default_seed, r)?;
    let (rx, _) = submit(&state.engine, API, c.gen)?;
    let t = TgiStream {
        engine: state.engine.clone(),
        seed: c.seed,
        prefix: c.prefix,
        pending: None,
    };
    Ok(sse(rx, t).into_response())
}

/// `POST /generate_stream`.
pub async fn generate_stream(State(state): State<Arc<AppState>>, body: Result<Bytes, BytesRejection>) -> Response {
    let r: GenerateRequest = match parse_body(API, body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    start_stream(&state, r).unwrap_or_else(IntoResponse::into_response)
}

/// `POST /`: `/generate_stream` when `stream` is true, else `/generate` answered as a list.
pub async fn compat(State(state): State<Arc<AppState>>, body: Result<Bytes, BytesRejection>) -> Response {
    let r: GenerateRequest = match parse_body(API, body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    if r.stream {
        return start_stream(&state, r).unwrap_or_else(IntoResponse::into_response);
    }
    match run_generate(&state, r).await {
        Ok(v) => Json(json!([v])).into_response(),
        Err(e) => e.into_response(),
    }
}

/// `GET /info`.
pub async fn info(State(state): State<Arc<AppState>>) -> Json<Value> {
    let e = &state.engine;
    let i = e.handle.info();
    Json(json!({
        "model_id": e.model_id,
        "model_sha": null,
        "model_dtype": "gguf",
        "model_device_type": e.device,
        "model_pipeline_tag": "text-generation",
        "max_concurrent_requests": i.parallel + i.queue_capacity,
        "max_best_of": 1,
        "max_stop_sequences": MAX_STOP_SEQUENCES,
        "max_input_length": i.n_ctx - 1,
        "max_total_tokens": i.n_ctx,
        "max_batch_total_tokens": i.n_ctx * i.parallel,
        "max_waiting_tokens": 0,
        "waiting_served_ratio": 0.0,
        "validation_workers": 1,
        "parallel": i.parallel,
        "queue_capacity": i.queue_capacity,
        "chat_template": e.chat.name(),
        "version": env!("CARGO_PKG_VERSION"),
        "sha": null,
        "docker_label": null,
    }))
}
