//! Text Generation Inference's API as AgentBench's `TGIAgent` used it (TGI sha-4cce843):
//! `POST /generate`, `POST /generate_stream`, `POST /` (either, by `stream`), `GET /info`.
//!
//! Semantics kept from TGI: `inputs` is tokenized with BOS first and special-token texts
//! (`</s><s>`) parsed; `truncate` keeps the last tokens; sampling is on when `do_sample` is
//! true OR any warper is set (`temperature` ≠ 1, `top_k`, `top_p` < 1, `typical_p` < 1), so
//! `{"do_sample": false, "temperature": 0.7}` samples at T = 0.7; the repetition penalty looks
//! at the whole sequence; `max_new_tokens` defaults to 20 and `inputs` tokens +
//! `max_new_tokens` must fit the context (else 422, as TGI's `max_total_tokens`);
//! `generated_text` of a stop-sequence end includes the stop sequence; the seed is reported in
//! `details` when sampling; `best_of` runs that many candidates and answers the one with the
//! highest mean token log-probability; `decoder_input_details` scores the prompt.

use crate::app::AppState;
use crate::errors::{parse_body, Api, ApiError};
use crate::generation::{
    check_stop_lengths, collect, random_seed, submit, tgi_finish_reason, Completed, Engine, GenRequest,
};
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
    /// The request of the first candidate; the others differ only in their seed.
    gen: GenRequest,
    /// The seed of each candidate (one unless `best_of` > 1).
    seeds: Vec<u64>,
    /// Whether the sampling switch is on (seeds are reported in `details` only then).
    sampling: bool,
    /// `details` or `decoder_input_details` (TGI answers `details` for either).
    details: bool,
    /// `decoder_input_details`: `details.prefill` lists the prompt tokens and their logprobs.
    prefill: bool,
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

/// TGI's `validate_best_of` (plus its refusal of `best_of` with streaming): how many
/// candidates to generate.
fn check_best_of(best_of: Option<i64>, max_best_of: usize, stream: bool) -> Result<usize, ApiError> {
    let Some(n) = best_of else { return Ok(1) };
    if stream && n != 1 {
        return Err(ApiError::invalid(
            API,
            "`best_of` != 1 is not supported when streaming tokens",
        ));
    }
    if max_best_of <= 1 && n != 1 {
        return Err(ApiError::invalid(
            API,
            "`best_of` != 1 is not allowed for this endpoint",
        ));
    }
    if n < 1 || n as u64 > max_best_of as u64 {
        return Err(ApiError::invalid(
            API,
            format!("`best_of` must be > 0 and <= {max_best_of}. Given: {n}"),
        ));
    }
    Ok(n as usize)
}

fn check(state: &AppState, r: GenerateRequest, stream: bool) -> Result<Checked, ApiError> {
    let engine = &state.engine;
    let p = r.parameters.unwrap_or_default();
    let _ = p.watermark;
    let top_n = p.top_n_tokens.unwrap_or(0);
    if top_n as usize > MAX_TOP_N_TOKENS {
        return Err(ApiError::invalid(
            API,
            format!("`top_n_tokens` must be >= 0 and <= {MAX_TOP_N_TOKENS}. Given: {top_n}"),
        ));
    }
    let best_of = check_best_of(p.best_of, state.opts.max_best_of, stream)?;
    let prefill = p.decoder_input_details.unwrap_or(false);
    if stream && prefill {
        return Err(ApiError::invalid(
            API,
            "`decoder_input_details` == true is not supported when streaming tokens",
        ));
    }
    // TGI's router asks for a sampling parameter to be present (whatever its value).
    let sampling_asked = p.do_sample.unwrap_or(false)
        || p.temperature.is_some()
        || p.top_k.is_some()
        || p.top_p.is_some()
        || p.typical_p.is_some();
    if best_of > 1 && !sampling_asked {
        return Err(ApiError::invalid(API, "you must use sampling when `best_of` is > 1"));
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
    }
    let top_k = positive(p.top_k, "top_k")?;
    let max_new_tokens = positive(p.max_new_tokens, "max_new_tokens")?.unwrap_or(DEFAULT_MAX_NEW_TOKENS);
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
    check_stop_lengths(&stop).map_err(|m| ApiError::invalid(API, m))?;
    if best_of > 1 && p.seed.is_some() {
        return Err(ApiError::invalid(API, "`seed` must not be set when `best_of` > 1"));
    }
    if r.inputs.is_empty() {
        return Err(ApiError::invalid(API, "`inputs` cannot be empty"));
    }
    let n_ctx = engine.n_ctx();
    let max_input_length = n_ctx - 1;
    let truncate = positive(p.truncate, "truncate")?;
    if let Some(n) = truncate.filter(|&n| n > max_input_length) {
        return Err(ApiError::invalid(
            API,
            format!("`truncate` must be strictly positive and less than {max_input_length}. Given: {n}"),
        ));
    }

    let tok = &engine.tokenizer;
    let mut prompt = encode_tgi(tok, &r.inputs);
    if let Some(n) = truncate {
        truncate_left(&mut prompt, n, tok.bos_id());
    }
    // TGI validates the whole request against `--max-total-tokens` (here the context of a
    // sequence) instead of shortening the generation.
    if prompt.len() + max_new_tokens > n_ctx {
        return Err(ApiError::invalid(
            API,
            format!(
                "`inputs` tokens + `max_new_tokens` must be <= {n_ctx}. Given: {} `inputs` tokens and {max_new_tokens} `max_new_tokens`",
                prompt.len()
            ),
        )
        .with_code("context_length_exceeded"));
    }
    // TGI 4cce843: any warper switches sampling on, whatever `do_sample` says.
    let temperature = p.temperature.unwrap_or(1.0);
    let top_p = p.top_p.unwrap_or(1.0);
    let typical_p = p.typical_p.unwrap_or(1.0);
    let sampling =
        p.do_sample.unwrap_or(false) || temperature != 1.0 || top_k.is_some() || top_p < 1.0 || typical_p < 1.0;
    // One seed per candidate: TGI draws a random one for each (a request seed is refused with
    // `best_of` > 1); with `--seed S` the candidates get S, S + 1, ... (reproducible, distinct).
    let seeds: Vec<u64> = match (p.seed, state.opts.default_seed) {
        (Some(seed), _) => vec![seed],
        (None, Some(base)) => (0..best_of as u64).map(|i| base.wrapping_add(i)).collect(),
        (None, None) => (0..best_of).map(|_| random_seed()).collect(),
    };
    let sampler = SamplerConfig {
        temperature: if sampling { temperature } else { 0.0 },
        top_k: top_k.unwrap_or(0),
        top_p,
        min_p: 0.0,
        typical_p,
        repeat_penalty: p.repetition_penalty.unwrap_or(1.0),
        // TGI's penalty looks at every token of the sequence.
        repeat_last_n: n_ctx,
        seed: seeds[0],
    };
    Ok(Checked {
        gen: GenRequest {
            prompt,
            sampler,
            max_tokens: Some(max_new_tokens),
            stop_strings: stop,
            ignore_eos: false,
            prompt_logprobs: prefill,
            top_logprobs: top_n as usize,
        },
        seeds,
        sampling,
        details: p.details.unwrap_or(false) || prefill,
        prefill,
        prefix: p.return_full_text.unwrap_or(false).then_some(r.inputs),
    })
}

/// TGI's `--max-top-n-tokens` default.
const MAX_TOP_N_TOKENS: usize = 5;

/// TGI's `top_tokens` entries of one position.
fn top_tokens_json(engine: &Engine, top: &[(u32, f32)]) -> Vec<Value> {
    top.iter()
        .map(|&(id, logprob)| json!({"id": id, "text": engine.token_text(id), "logprob": logprob, "special": engine.is_special(id)}))
        .collect()
}

fn token_json(engine: &Engine, t: &TokenEvent) -> Value {
    json!({"id": t.id, "text": t.text, "logprob": t.logprob, "special": engine.is_special(t.id)})
}

/// The stop token that ended a generation (the scheduler sends no token event for it; its
/// log-probability comes with the summary).
fn stop_token_json(engine: &Engine, id: u32, logprob: Option<f32>) -> Value {
    json!({"id": id, "text": engine.token_text(id), "logprob": logprob, "special": true})
}

/// TGI's `details.prefill`: the prompt's tokens, the first without a log-probability.
fn prefill_json(engine: &Engine, prompt: &[u32], logprobs: &[f32]) -> Vec<Value> {
    prompt
        .iter()
        .enumerate()
        .map(|(i, &id)| {
            let logprob = i.checked_sub(1).and_then(|j| logprobs.get(j));
            json!({"id": id, "text": engine.token_text(id), "logprob": logprob})
        })
        .collect()
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

/// One finished candidate as TGI describes it.
struct Sequence {
    generated_text: String,
    finish_reason: &'static str,
    generated_tokens: usize,
    seed: Option<u64>,
    /// `details.tokens`, the stop token included.
    tokens: Vec<Value>,
    /// `details.top_tokens` (with `top_n_tokens`): per token of `tokens`, the alternatives.
    top_tokens: Vec<Vec<Value>>,
    /// Mean log-probability of its tokens: TGI's `best_of` picks the highest.
    mean_logprob: f32,
}

fn sequence(engine: &Engine, c: &Checked, seed: u64, done: &Completed) -> Sequence {
    let s = &done.summary;
    let mut tokens: Vec<Value> = done.tokens.iter().map(|t| token_json(engine, t)).collect();
    let mut logprobs: Vec<f32> = done.tokens.iter().map(|t| t.logprob).collect();
    let mut top_tokens: Vec<Vec<Value>> = done.tokens.iter().map(|t| top_tokens_json(engine, &t.top)).collect();
    if let StopReason::StopToken(id) = s.stop {
        tokens.push(stop_token_json(engine, id, s.stop_logprob));
        logprobs.extend(s.stop_logprob);
        top_tokens.push(top_tokens_json(engine, &s.stop_top));
    }
    if c.gen.top_logprobs == 0 {
        top_tokens.clear();
    }
    Sequence {
        generated_text: generated_text(c.prefix.as_deref(), s),
        finish_reason: tgi_finish_reason(&s.stop),
        generated_tokens: s.generated_tokens,
        seed: c.sampling.then_some(seed),
        tokens,
        top_tokens,
        mean_logprob: logprobs.iter().sum::<f32>() / logprobs.len().max(1) as f32,
    }
}

async fn run_generate(state: &AppState, r: GenerateRequest) -> Result<Value, ApiError> {
    let engine = &state.engine;
    let c = check(state, r, false)?;
    // `best_of` candidates run as that many sequences of the batching engine at once; only the
    // first scores the prompt (the others would compute the same `prefill`).
    let mut receivers = Vec::with_capacity(c.seeds.len());
    for (i, &seed) in c.seeds.iter().enumerate() {
        let mut gen = c.gen.clone();
        gen.sampler.seed = seed;
        gen.prompt_logprobs = c.prefill && i == 0;
        receivers.push(submit(engine, API, gen)?.0);
    }
    let done = futures_util::future::try_join_all(receivers.into_iter().map(|rx| collect(API, rx))).await?;
    let prefill = match done[0].summary.prompt_logprobs.as_deref() {
        Some(logprobs) if c.prefill => prefill_json(engine, &c.gen.prompt, logprobs),
        _ => Vec::new(),
    };
    let mut sequences: Vec<Sequence> = c
        .seeds
        .iter()
        .zip(&done)
        .map(|(&seed, d)| sequence(engine, &c, seed, d))
        .collect();
    // TGI's choice: the highest mean log-probability per token, the first on ties.
    let mut best = 0;
    for (i, s) in sequences.iter().enumerate() {
        if s.mean_logprob > sequences[best].mean_logprob {
            best = i;
        }
    }
    let chosen = sequences.remove(best);
    let mut out = json!({"generated_text": chosen.generated_text});
    if c.details {
        let mut details = json!({
            "finish_reason": chosen.finish_reason,
            "generated_tokens": chosen.generated_tokens,
            "seed": chosen.seed,
            "prefill": prefill,
            "tokens": chosen.tokens,
        });
        // As TGI, only with `top_n_tokens`.
        if !chosen.top_tokens.is_empty() {
            details["top_tokens"] = json!(chosen.top_tokens);
        }
        if c.seeds.len() > 1 {
            details["best_of_sequences"] = sequences
                .into_iter()
                .map(|s| {
                    json!({
                        "generated_text": s.generated_text,
                        "finish_reason": s.finish_reason,
                        "generated_tokens": s.generated_tokens,
                        "seed": s.seed,
                        "prefill": prefill,
                        "tokens": s.tokens,
                        "top_tokens": s.top_tokens,
                    })
                })
                .collect();
        }
        out["details"] = details;
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
    /// `top_n_tokens` > 0: each event carries `top_tokens`, as TGI's.
    top_n: bool,
}

impl TgiStream {
    fn token_event(&self, token: Value, top: &[(u32, f32)]) -> SseEvent {
        let mut e = json!({"token": token, "generated_text": null, "details": null});
        if self.top_n {
            e["top_tokens"] = json!(top_tokens_json(&self.engine, top));
        }
        data(&e)
    }
}

impl Translator for TgiStream {
    fn event(&mut self, event: Event) -> (Vec<SseEvent>, bool) {
        match event {
            Event::Token(t) => {
                let out = self
                    .pending
                    .replace(t)
                    .map(|p| self.token_event(token_json(&self.engine, &p), &p.top));
                (out.into_iter().collect(), false)
            }
            Event::Done(s) => {
                let mut out = Vec::new();
                // Text the scheduler held back until the end (an incomplete character, the
                // possible start of a stop string) and a stop sequence that ended the
                // generation go with the last generated token, so that the streamed texts add
                // up to `generated_text`.
                let mut held = s.tail.clone();
                if let StopReason::StopString(stop) = &s.stop {
                    held.push_str(stop);
                }
                let with_held = |mut p: TokenEvent| {
                    p.text.push_str(&held);
                    p
                };
                let (last, top) = match s.stop {
                    StopReason::StopToken(id) => {
                        if let Some(p) = self.pending.take().map(with_held) {
                            out.push(self.token_event(token_json(&self.engine, &p), &p.top));
                        }
                        (stop_token_json(&self.engine, id, s.stop_logprob), s.stop_top.clone())
                    }
                    _ => match self.pending.take().map(with_held) {
                        Some(p) => (token_json(&self.engine, &p), p.top),
                        None => (
                            json!({"id": 0, "text": held, "logprob": 0.0, "special": true}),
                            Vec::new(),
                        ),
                    },
                };
                let mut end = json!({
                    "token": last,
                    "generated_text": generated_text(self.prefix.as_deref(), &s),
                    "details": {
                        "finish_reason": tgi_finish_reason(&s.stop),
                        "generated_tokens": s.generated_tokens,
                        "seed": self.seed,
                    },
                });
                if self.top_n {
                    end["top_tokens"] = json!(top_tokens_json(&self.engine, &top));
                }
                out.push(data(&end));
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
    let c = check(state, r, true)?;
    let top_n = c.gen.top_logprobs > 0;
    let (rx, _) = submit(&state.engine, API, c.gen)?;
    let t = TgiStream {
        engine: state.engine.clone(),
        seed: c.sampling.then_some(c.seeds[0]),
        prefix: c.prefix,
        pending: None,
        top_n,
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
        "max_best_of": state.opts.max_best_of.max(1),
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
