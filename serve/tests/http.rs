//! The HTTP server in-process on 127.0.0.1 (an OS-chosen port) over stories260K (tiny, fast):
//! TGI and OpenAI endpoints, their error shapes, limits, cancellation, metrics and shutdown.
//! Set `EDGEACT_SHARED` to relocate the shared data directory.

use edgeact_agent::PromptFormat;
use edgeact_runtime::batching::{Scheduler, SchedulerOptions};
use edgeact_runtime::generate::{generate, GenerateOptions};
use edgeact_runtime::gguf::GgufFile;
use edgeact_runtime::model::{LlamaModel, MultiSession, Session, SessionOptions};
use edgeact_runtime::sampler::{Sampler, SamplerConfig};
use edgeact_runtime::tokenizer::{StreamDecoder, Tokenizer};
use edgeact_serve::{ChatPrompt, Engine, ServeOptions, Server};
use futures_util::StreamExt;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

const CTX: usize = 256;

fn model_path() -> PathBuf {
    let shared = std::env::var_os("EDGEACT_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared")));
    shared.join("models/stories260K/stories260K-f32-v3.gguf")
}

fn load() -> (Arc<LlamaModel>, Arc<Tokenizer>) {
    let path = model_path();
    let file = Arc::new(GgufFile::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())));
    let tok = Tokenizer::from_gguf(&file).unwrap();
    (Arc::new(LlamaModel::load(file).unwrap()), Arc::new(tok))
}

struct Harness {
    server: Option<Server>,
    scheduler: Scheduler,
    url: String,
    http: reqwest::Client,
    model: Arc<LlamaModel>,
    tok: Arc<Tokenizer>,
}

fn session_opts() -> SessionOptions {
    SessionOptions {
        n_ctx: CTX,
        threads: 1,
        ..Default::default()
    }
}

async fn start_with(parallel: usize, queue: usize, opts: ServeOptions) -> Harness {
    start_custom(parallel, queue, opts, &[], SchedulerOptions::default().prefill_chunk).await
}

/// A server whose generations also end (as on EOS) on the last token of each text of
/// `extra_stop`, and whose scheduler prefills at most `prefill_chunk` tokens a step.
async fn start_custom(
    parallel: usize,
    queue: usize,
    opts: ServeOptions,
    extra_stop: &[&str],
    prefill_chunk: usize,
) -> Harness {
    let (model, tok) = load();
    let session = MultiSession::new(Arc::clone(&model), session_opts(), parallel).unwrap();
    let sched = SchedulerOptions {
        queue_capacity: queue,
        prefill_chunk,
        ..Default::default()
    };
    let scheduler = Scheduler::start(session, Arc::clone(&tok), sched).unwrap();
    let mut engine = Engine::new(
        scheduler.handle(),
        Arc::clone(&tok),
        ChatPrompt::new(PromptFormat::Llama2),
        "stories260K",
    );
    for text in extra_stop {
        engine.stop_tokens.extend(tok.encode(text, false, false).last());
    }
    let server = Server::bind("127.0.0.1:0", engine, opts).await.unwrap();
    let url = format!("http://{}", server.local_addr());
    Harness {
        server: Some(server),
        scheduler,
        url,
        http: reqwest::Client::new(),
        model,
        tok,
    }
}

async fn start() -> Harness {
    start_with(2, 8, ServeOptions::default()).await
}

impl Harness {
    async fn post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.url))
            .json(body)
            .send()
            .await
            .unwrap();
        let status = r.status();
        let text = r.text().await.unwrap();
        let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {text:?}"));
        (status, v)
    }

    async fn post_raw(&self, path: &str, body: impl Into<reqwest::Body>) -> (StatusCode, String) {
        let r = self
            .http
            .post(format!("{}{path}", self.url))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        (r.status(), r.text().await.unwrap())
    }

    async fn get(&self, path: &str) -> (StatusCode, String) {
        let r = self.http.get(format!("{}{path}", self.url)).send().await.unwrap();
        (r.status(), r.text().await.unwrap())
    }

    /// The `data:` payloads of an SSE response.
    async fn sse(&self, path: &str, body: &Value) -> Vec<String> {
        let r = self
            .http
            .post(format!("{}{path}", self.url))
            .json(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let ct = r.headers()["content-type"].to_str().unwrap().to_string();
        assert!(ct.starts_with("text/event-stream"), "{ct}");
        sse_data(&r.text().await.unwrap())
    }

    async fn metric(&self, name: &str) -> u64 {
        let (_, text) = self.get("/metrics").await;
        metric_value(&text, name)
    }

    /// Greedy text of `prompt` from a plain session, the reference the server must equal.
    fn greedy(&self, prompt: &[u32], max_tokens: usize) -> String {
        self.alone(prompt, max_tokens, SamplerConfig::greedy())
    }

    /// The text of `prompt` generated by a plain session with `sampler`.
    fn alone(&self, prompt: &[u32], max_tokens: usize, sampler: SamplerConfig) -> String {
        let mut session = Session::new(Arc::clone(&self.model), session_opts()).unwrap();
        let mut sampler = Sampler::new(sampler);
        let mut decoder = StreamDecoder::new(&self.tok);
        let opts = GenerateOptions {
            max_tokens,
            stop_tokens: self.tok.eog_ids().to_vec(),
            stop_strings: Vec::new(),
        };
        generate(&mut session, &mut sampler, &mut decoder, prompt, &opts, &mut |_| {})
            .unwrap()
            .text
    }

    /// `ln softmax` of the model's logits after `tokens[..i]` at `tokens[i]`, for every
    /// `i >= 1`, from a plain session evaluating `tokens` alone.
    fn logprobs_alone(&self, tokens: &[u32]) -> Vec<f32> {
        let mut session = Session::new(Arc::clone(&self.model), session_opts()).unwrap();
        let logits = session.eval_all_logits(tokens).unwrap();
        let n_vocab = logits.len() / tokens.len();
        logits
            .chunks_exact(n_vocab)
            .zip(&tokens[1..])
            .map(|(row, &next)| log_softmax(row)[next as usize])
            .collect()
    }
}

fn log_softmax(row: &[f32]) -> Vec<f32> {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = row.iter().map(|&x| f64::from(x - max).exp()).sum();
    row.iter().map(|&x| x - max - sum.ln() as f32).collect()
}

impl Harness {
    /// TGI's error message of a refused request.
    async fn tgi_refusal(&self, path: &str, body: &Value) -> String {
        let (status, v) = self.post(path, body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body} -> {v}");
        assert_eq!(v["error_type"], "validation", "{v}");
        v["error"].as_str().unwrap().to_string()
    }
}

fn sse_data(body: &str) -> Vec<String> {
    body.lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|d| d.trim().to_string())
        .collect()
}

fn metric_value(text: &str, name: &str) -> u64 {
    let line = text
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("no {name} in\n{text}"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tgi_generate_is_greedy_generation_with_bos_and_details() {
    let h = start().await;
    let inputs = "Once upon a time, there was a little girl";
    let (status, v) = h
        .post(
            "/generate",
            &json!({"inputs": inputs, "parameters": {"max_new_tokens": 40, "do_sample": false, "details": true}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let prompt = h.tok.encode(inputs, true, true);
    assert_eq!(prompt[0], h.tok.bos_id().unwrap());
    let want = h.greedy(&prompt, 40);
    assert_eq!(v["generated_text"], want, "{v}");
    let d = &v["details"];
    let n = d["generated_tokens"].as_u64().unwrap() as usize;
    let tokens = d["tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), n, "{v}");
    assert!(
        ["length", "eos_token"].contains(&d["finish_reason"].as_str().unwrap()),
        "{v}"
    );
    assert_eq!(d["seed"], Value::Null, "greedy reports no seed: {v}");
    assert_eq!(d["prefill"], json!([]));
    for t in tokens {
        assert!(t["id"].is_u64() && t["text"].is_string() && t["logprob"].is_number() && t["special"].is_boolean());
        assert!(t["logprob"].as_f64().unwrap() <= 0.0);
    }
    let joined: String = tokens
        .iter()
        .filter(|t| t["special"] == false)
        .map(|t| t["text"].as_str().unwrap())
        .collect();
    assert_eq!(joined, want);

    // Without details: only the text, the same one (greedy is deterministic).
    let (_, v2) = h
        .post(
            "/generate",
            &json!({"inputs": inputs, "parameters": {"max_new_tokens": 40}}),
        )
        .await;
    assert_eq!(v2, json!({"generated_text": want}));

    // A short limit ends with `length`.
    let (_, v3) = h
        .post(
            "/generate",
            &json!({"inputs": inputs, "parameters": {"max_new_tokens": 3, "details": true}}),
        )
        .await;
    assert_eq!(v3["details"]["finish_reason"], "length");
    assert_eq!(v3["details"]["generated_tokens"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tgi_special_tokens_truncate_and_sampling_switch() {
    let h = start().await;
    // `</s><s>` inside inputs are the EOS/BOS ids (AgentBench's multi-turn prompts).
    let inputs = "[INST] hi [/INST] yo </s><s>[INST] Once upon a time [/INST]";
    let prompt = h.tok.encode(inputs, true, true);
    assert!(prompt.contains(&h.tok.eos_id().unwrap()));
    assert_eq!(prompt.iter().filter(|&&t| Some(t) == h.tok.bos_id()).count(), 2);
    let (_, v) = h
        .post(
            "/generate",
            &json!({"inputs": inputs, "parameters": {"max_new_tokens": 12}}),
        )
        .await;
    assert_eq!(v["generated_text"], h.greedy(&prompt, 12));

    // truncate keeps BOS and the last N - 1 input tokens.
    let long = "Once upon a time, there was a little girl named Lily. She loved to play outside in the sun.";
    let full = h.tok.encode(long, true, true);
    let n = 8;
    let mut kept = vec![full[0]];
    kept.extend_from_slice(&full[full.len() - (n - 1)..]);
    let (_, v) = h
        .post(
            "/generate",
            &json!({"inputs": long, "parameters": {"max_new_tokens": 10, "truncate": n}}),
        )
        .await;
    assert_eq!(v["generated_text"], h.greedy(&kept, 10), "truncate");

    // TGI 4cce843: temperature 0.7 with do_sample false samples (seeded: reproducible, seed
    // reported); a different seed gives (almost surely) a different text.
    let sampled = |seed: u64| {
        json!({"inputs": "Once upon a time", "parameters": {
            "max_new_tokens": 30, "do_sample": false, "temperature": 0.7, "seed": seed, "details": true}})
    };
    let (_, a) = h.post("/generate", &sampled(1)).await;
    let (_, b) = h.post("/generate", &sampled(1)).await;
    assert_eq!(a["generated_text"], b["generated_text"]);
    assert_eq!(a["details"]["seed"], 1);
    let mut differs = false;
    for seed in 2..6 {
        let (_, c) = h.post("/generate", &sampled(seed)).await;
        differs |= c["generated_text"] != a["generated_text"];
    }
    assert!(differs, "T = 0.7 must sample");
    let greedy = h.greedy(&h.tok.encode("Once upon a time", true, true), 30);
    let (_, g) = h
        .post(
            "/generate",
            &json!({"inputs": "Once upon a time", "parameters": {"max_new_tokens": 30, "temperature": 1.0}}),
        )
        .await;
    assert_eq!(
        g["generated_text"], greedy,
        "temperature 1.0 without do_sample is greedy"
    );

    // Stop sequence: TGI's generated_text ends with it.
    let stop = greedy.split_whitespace().nth(2).unwrap().to_string();
    let (_, s) = h
        .post(
            "/generate",
            &json!({"inputs": "Once upon a time", "parameters": {"max_new_tokens": 30, "stop": [stop], "details": true}}),
        )
        .await;
    assert_eq!(s["details"]["finish_reason"], "stop_sequence", "{s}");
    let text = s["generated_text"].as_str().unwrap();
    assert!(
        text.ends_with(&stop) && greedy.starts_with(text),
        "{text:?} vs {greedy:?}"
    );

    let (status, info) = h.get("/info").await;
    assert_eq!(status, StatusCode::OK);
    let info = json(&info);
    assert_eq!(info["max_total_tokens"], CTX);
    assert_eq!(info["model_id"], "stories260K");
    assert_eq!(h.get("/health").await.0, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tgi_stream_events_add_up_to_generated_text() {
    let h = start().await;
    for max in [1, 5, 60] {
        let events = h
            .sse(
                "/generate_stream",
                &json!({"inputs": "Once upon a time", "parameters": {"max_new_tokens": max}}),
            )
            .await;
        let events: Vec<Value> = events.iter().map(|e| json(e)).collect();
        let (last, rest) = events.split_last().unwrap();
        for e in rest {
            assert!(
                e["token"].is_object() && e["generated_text"].is_null() && e["details"].is_null(),
                "{e}"
            );
        }
        let text = last["generated_text"].as_str().unwrap();
        let joined: String = events
            .iter()
            .filter(|e| e["token"]["special"] == false)
            .map(|e| e["token"]["text"].as_str().unwrap())
            .collect();
        assert_eq!(joined, text);
        let d = &last["details"];
        assert_eq!(d["generated_tokens"].as_u64().unwrap() as usize, events.len());
        let want = h.greedy(&h.tok.encode("Once upon a time", true, true), max);
        assert_eq!(text, want);
        if max < 10 {
            assert_eq!(d["finish_reason"], "length");
        }
    }
    // Stop sequences: one that could start at the end of the output but never completes (its
    // held-back start is released at the end) and one that ends the generation (reported in
    // `generated_text`, so the tokens carry it too).
    let want = h.greedy(&h.tok.encode("Once upon a time", true, true), 8);
    let last_char = want.chars().last().unwrap();
    let middle: String = want.chars().skip(want.chars().count() / 2).take(3).collect();
    for (stop, reason) in [
        (format!("{last_char}\u{1}zz"), "length"),
        (middle.clone(), "stop_sequence"),
    ] {
        let events = h
            .sse(
                "/generate_stream",
                &json!({"inputs": "Once upon a time", "parameters": {"max_new_tokens": 8, "stop": [stop]}}),
            )
            .await;
        let events: Vec<Value> = events.iter().map(|e| json(e)).collect();
        let last = events.last().unwrap();
        assert_eq!(last["details"]["finish_reason"], reason, "{stop:?}");
        let text = last["generated_text"].as_str().unwrap();
        if reason == "length" {
            assert_eq!(text, want);
        } else {
            assert!(text.ends_with(&middle) && want.starts_with(text), "{text:?} {want:?}");
        }
        let joined: String = events
            .iter()
            .filter(|e| e["token"]["special"] == false)
            .map(|e| e["token"]["text"].as_str().unwrap())
            .collect();
        assert_eq!(joined, text, "{stop:?}");
    }
    // Multi-byte input and byte-fallback tokens: every event is valid JSON, texts add up.
    for inputs in ["Ünïcödé 😀 Once upon a time 日本", "😀😀😀"] {
        let events = h
            .sse(
                "/generate_stream",
                &json!({"inputs": inputs, "parameters": {"max_new_tokens": 40, "temperature": 1.5, "seed": 3}}),
            )
            .await;
        let events: Vec<Value> = events.iter().map(|e| json(e)).collect();
        let joined: String = events
            .iter()
            .filter(|e| e["token"]["special"] == false)
            .map(|e| e["token"]["text"].as_str().unwrap())
            .collect();
        assert_eq!(joined, events.last().unwrap()["generated_text"].as_str().unwrap());
    }
    // POST / with stream: true streams too; without, answers a list.
    let events = h
        .sse(
            "/",
            &json!({"inputs": "Once", "stream": true, "parameters": {"max_new_tokens": 3}}),
        )
        .await;
    assert_eq!(events.len(), 3);
    let (_, v) = h
        .post("/", &json!({"inputs": "Once", "parameters": {"max_new_tokens": 3}}))
        .await;
    assert!(v[0]["generated_text"].is_string(), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tgi_refuses_max_new_tokens_beyond_the_context() {
    let h = start().await;
    let inputs = "Once upon a time";
    let n = h.tok.encode(inputs, true, true).len();
    let room = CTX - n;
    let ask = |max_new_tokens: usize| json!({"inputs": inputs, "parameters": {"max_new_tokens": max_new_tokens, "details": true}});
    // Exactly the room left: served.
    let (s, v) = h.post("/generate", &ask(room)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(v["details"]["generated_tokens"].as_u64().unwrap() as usize <= room);
    // One more: TGI's refusal, word for word.
    let msg = h.tgi_refusal("/generate", &ask(room + 1)).await;
    assert_eq!(
        msg,
        format!(
            "`inputs` tokens + `max_new_tokens` must be <= {CTX}. Given: {n} `inputs` tokens and {} `max_new_tokens`",
            room + 1
        )
    );
    // Streaming validates the same way, before the stream starts.
    let msg = h.tgi_refusal("/generate_stream", &ask(room + 1)).await;
    assert!(msg.starts_with("`inputs` tokens + `max_new_tokens`"), "{msg}");
    // The default max_new_tokens (20) counts too.
    let words = (0..).map(|i| format!(" w{i}"));
    let mut long = String::from("Once");
    for w in words {
        long.push_str(&w);
        if h.tok.encode(&long, true, true).len() > CTX - 20 {
            break;
        }
    }
    let n_long = h.tok.encode(&long, true, true).len();
    let msg = h.tgi_refusal("/generate", &json!({"inputs": long})).await;
    assert!(
        msg.contains(&format!("Given: {n_long} `inputs` tokens and 20 `max_new_tokens`")),
        "{msg}"
    );

    // AgentBench's request scaled to this context (it sends truncate 3968 = 4096 - 128 and
    // max_new_tokens 128): the truncated prompt plus the generation fits exactly.
    let story = "Once upon a time there was a dog. ".repeat(40);
    assert!(h.tok.encode(&story, true, true).len() > CTX);
    let agentbench = |truncate: usize| {
        json!({"inputs": story, "parameters": {
            "max_new_tokens": 128, "do_sample": false, "temperature": 0.7, "truncate": truncate}})
    };
    let (s, v) = h.post("/generate", &agentbench(CTX - 128)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let msg = h.tgi_refusal("/generate", &agentbench(CTX - 127)).await;
    assert!(
        msg.contains(&format!("Given: {} `inputs` tokens and 128", CTX - 127)),
        "{msg}"
    );
    // `truncate` itself must stay below the context, as TGI's `max_input_length`.
    let msg = h
        .tgi_refusal("/generate", &json!({"inputs": "Once", "parameters": {"truncate": CTX}}))
        .await;
    assert_eq!(
        msg,
        format!(
            "`truncate` must be strictly positive and less than {}. Given: {CTX}",
            CTX - 1
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tgi_stop_token_reports_its_logprob() {
    // stories260K seldom emits EOS: "." is made a stop token of this server as well, so
    // generations end on a stop token (`eos_token`) within a few words.
    let chunk = SchedulerOptions::default().prefill_chunk;
    let h = start_custom(2, 8, ServeOptions::default(), &["Lily ran."], chunk).await;
    let dot = *h.tok.encode("Lily ran.", false, false).last().unwrap();
    assert_eq!(h.tok.token_bytes(dot), b".");
    let inputs = "Once upon a time";
    let prompt = h.tok.encode(inputs, true, true);
    // The stop token's log-probability as the model alone gives it after `prompt` and
    // `tokens` (every generated token but the stop token), decoded one at a time as the
    // server did (the f16 KV cache makes a one-pass evaluation differ by ~1e-3).
    let alone = |tokens: &[Value]| {
        let mut session = Session::new(Arc::clone(&h.model), session_opts()).unwrap();
        let mut logits = session.eval(&prompt).unwrap();
        for t in tokens {
            logits = session.eval(&[t["id"].as_u64().unwrap() as u32]).unwrap();
        }
        log_softmax(&logits)[dot as usize]
    };
    for seed in 0..4u64 {
        let body = json!({"inputs": inputs, "parameters": {
            "max_new_tokens": 100, "do_sample": true, "seed": seed, "details": true}});
        let (s, v) = h.post("/generate", &body).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["details"]["finish_reason"], "eos_token", "{v}");
        let tokens = v["details"]["tokens"].as_array().unwrap();
        let (last, rest) = tokens.split_last().unwrap();
        assert_eq!(last["id"], dot, "{v}");
        assert_eq!(last["special"], true);
        let want = alone(rest);
        let got = last["logprob"].as_f64().unwrap() as f32;
        assert!((got - want).abs() < 1e-3, "stop token logprob {got} vs {want} alone");
        assert!(got < 0.0, "{got}");
        // The stream's last event carries the stop token and its log-probability too.
        let events: Vec<Value> = h.sse("/generate_stream", &body).await.iter().map(|e| json(e)).collect();
        let (end, rest) = events.split_last().unwrap();
        assert_eq!(end["details"]["finish_reason"], "eos_token", "{end}");
        assert_eq!(end["token"]["id"], dot, "{end}");
        let streamed: Vec<Value> = rest.iter().map(|e| e["token"].clone()).collect();
        let want = alone(&streamed);
        let got = end["token"]["logprob"].as_f64().unwrap() as f32;
        assert!((got - want).abs() < 1e-3, "streamed {got} vs {want} alone");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tgi_decoder_input_details_scores_the_prompt() {
    let h = start().await;
    let inputs = "Once upon a time, there was a little girl named Lily.";
    let prompt = h.tok.encode(inputs, true, true);
    let want = h.logprobs_alone(&prompt);
    let body = json!({"inputs": inputs, "parameters": {"max_new_tokens": 6, "decoder_input_details": true}});
    // Twice: the second time the prompt is cached, and must still be scored whole.
    for round in 0..2 {
        let (s, v) = h.post("/generate", &body).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["generated_text"], h.greedy(&prompt, 6), "round {round}");
        // `details` comes with `decoder_input_details` alone, as TGI.
        let prefill = v["details"]["prefill"].as_array().unwrap();
        assert_eq!(prefill.len(), prompt.len(), "{v}");
        assert_eq!(
            prefill[0]["logprob"],
            Value::Null,
            "the first token has no logprob: {v}"
        );
        assert_eq!(prefill[0]["id"], prompt[0]);
        for (i, t) in prefill.iter().enumerate().skip(1) {
            assert_eq!(t["id"], prompt[i]);
            assert!(t["text"].is_string());
            let got = t["logprob"].as_f64().unwrap() as f32;
            assert!(
                (got - want[i - 1]).abs() < 1e-3,
                "round {round} token {i}: {got} vs {} alone",
                want[i - 1]
            );
        }
        assert_eq!(v["details"]["tokens"].as_array().unwrap().len(), 6);
    }
    // With truncate the scored prompt is the truncated one.
    let mut kept = vec![prompt[0]];
    kept.extend_from_slice(&prompt[prompt.len() - 5..]);
    let want = h.logprobs_alone(&kept);
    let (_, v) = h
        .post(
            "/generate",
            &json!({"inputs": inputs, "parameters": {"max_new_tokens": 2, "truncate": 6, "decoder_input_details": true}}),
        )
        .await;
    let prefill = v["details"]["prefill"].as_array().unwrap();
    let ids: Vec<u32> = prefill.iter().map(|t| t["id"].as_u64().unwrap() as u32).collect();
    assert_eq!(ids, kept);
    for (t, w) in prefill[1..].iter().zip(&want) {
        assert!((t["logprob"].as_f64().unwrap() as f32 - w).abs() < 1e-3, "{v}");
    }
    // Not with streaming (TGI's refusal).
    let msg = h.tgi_refusal("/generate_stream", &body).await;
    assert_eq!(
        msg,
        "`decoder_input_details` == true is not supported when streaming tokens"
    );

    // A prompt prefilled in pieces of 5 tokens, beside another request decoding: the same
    // scores, piece after piece.
    let h = start_custom(2, 8, ServeOptions::default(), &[], 5).await;
    let want = h.logprobs_alone(&prompt);
    let other = json!({"inputs": "Lily and Ben", "parameters": {"max_new_tokens": 40}});
    let busy = h.post("/generate", &other);
    let scored = h.post("/generate", &body);
    let ((s1, _), (s2, v)) = tokio::join!(busy, scored);
    assert_eq!((s1, s2), (StatusCode::OK, StatusCode::OK), "{v}");
    let prefill = v["details"]["prefill"].as_array().unwrap();
    assert_eq!(prefill.len(), prompt.len());
    for (i, (t, w)) in prefill[1..].iter().zip(&want).enumerate() {
        let got = t["logprob"].as_f64().unwrap() as f32;
        assert!((got - w).abs() < 1e-3, "token {}: {got} vs {w} alone", i + 1);
    }
    assert_eq!(v["generated_text"], h.greedy(&prompt, 6));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tgi_best_of_returns_the_likeliest_candidate() {
    let h = start_with(
        2,
        8,
        ServeOptions {
            default_seed: Some(40),
            ..Default::default()
        },
    )
    .await;
    let (_, info) = h.get("/info").await;
    assert_eq!(json(&info)["max_best_of"], 2);
    let ask = |params: Value| {
        let mut p = json!({"max_new_tokens": 24});
        for (k, v) in params.as_object().unwrap() {
            p[k] = v.clone();
        }
        json!({"inputs": "Once upon a time", "parameters": p})
    };
    // TGI's refusals.
    let msg = h.tgi_refusal("/generate", &ask(json!({"best_of": 2}))).await;
    assert_eq!(msg, "you must use sampling when `best_of` is > 1");
    let msg = h
        .tgi_refusal("/generate", &ask(json!({"best_of": 2, "do_sample": true, "seed": 3})))
        .await;
    assert_eq!(msg, "`seed` must not be set when `best_of` > 1");
    let msg = h
        .tgi_refusal("/generate", &ask(json!({"best_of": 3, "do_sample": true})))
        .await;
    assert_eq!(msg, "`best_of` must be > 0 and <= 2. Given: 3");
    let msg = h
        .tgi_refusal("/generate_stream", &ask(json!({"best_of": 2, "do_sample": true})))
        .await;
    assert_eq!(msg, "`best_of` != 1 is not supported when streaming tokens");

    // Two candidates at T = 1.5 with seeds 40 and 41 (the server's --seed, then the next).
    let (s, v) = h
        .post(
            "/generate",
            &ask(json!({"best_of": 2, "temperature": 1.5, "details": true, "decoder_input_details": true})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let d = &v["details"];
    let others = d["best_of_sequences"].as_array().unwrap();
    assert_eq!(others.len(), 1, "{v}");
    let other = &others[0];
    let mut seeds = [d["seed"].as_u64().unwrap(), other["seed"].as_u64().unwrap()];
    seeds.sort_unstable();
    assert_eq!(seeds, [40, 41]);
    let mean = |tokens: &Value| {
        let t = tokens.as_array().unwrap();
        t.iter().map(|t| t["logprob"].as_f64().unwrap()).sum::<f64>() / t.len() as f64
    };
    assert!(mean(&d["tokens"]) >= mean(&other["tokens"]), "{v}");
    for (seq, text) in [(d, &v["generated_text"]), (other, &other["generated_text"])] {
        let joined: String = seq["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["special"] == false)
            .map(|t| t["text"].as_str().unwrap())
            .collect();
        assert_eq!(&Value::String(joined), text);
        assert_eq!(
            seq["generated_tokens"].as_u64().unwrap() as usize,
            seq["tokens"].as_array().unwrap().len()
        );
        assert!(["length", "eos_token"].contains(&seq["finish_reason"].as_str().unwrap()));
    }
    // Every candidate reports the prompt's scores.
    let n_prompt = h.tok.encode("Once upon a time", true, true).len();
    assert_eq!(d["prefill"].as_array().unwrap().len(), n_prompt);
    assert_eq!(d["prefill"], other["prefill"]);
    // Each candidate is the generation its seed gives alone.
    let prompt = h.tok.encode("Once upon a time", true, true);
    for (seed, text) in [
        (d["seed"].as_u64().unwrap(), &v["generated_text"]),
        (other["seed"].as_u64().unwrap(), &other["generated_text"]),
    ] {
        let sampler = SamplerConfig {
            temperature: 1.5,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            typical_p: 1.0,
            repeat_penalty: 1.0,
            repeat_last_n: CTX,
            seed,
        };
        assert_eq!(text.as_str().unwrap(), h.alone(&prompt, 24, sampler), "seed {seed}");
    }
    // Without details: the chosen text only.
    let (_, plain) = h
        .post("/generate", &ask(json!({"best_of": 2, "temperature": 1.5})))
        .await;
    assert_eq!(plain, json!({"generated_text": v["generated_text"]}));

    // --max-best-of 1 turns it off.
    let off = start_with(
        1,
        4,
        ServeOptions {
            max_best_of: 1,
            ..Default::default()
        },
    )
    .await;
    let msg = off
        .tgi_refusal("/generate", &ask(json!({"best_of": 2, "do_sample": true})))
        .await;
    assert_eq!(msg, "`best_of` != 1 is not allowed for this endpoint");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tgi_typical_p_samples_from_the_typical_set() {
    let h = start().await;
    let prompt = h.tok.encode("Once upon a time", true, true);
    // typical_p alone switches sampling on (TGI's warper rule) at T = 1.
    for (typical_p, seed) in [(0.05f32, 1u64), (0.5, 2), (0.9, 3)] {
        let (s, v) = h
            .post(
                "/generate",
                &json!({"inputs": "Once upon a time", "parameters": {
                    "max_new_tokens": 30, "typical_p": typical_p, "seed": seed, "details": true}}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["details"]["seed"], seed, "sampling reports its seed: {v}");
        let sampler = SamplerConfig {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            typical_p,
            repeat_penalty: 1.0,
            repeat_last_n: CTX,
            seed,
        };
        assert_eq!(
            v["generated_text"].as_str().unwrap(),
            h.alone(&prompt, 30, sampler),
            "typical_p {typical_p}"
        );
    }
    let msg = h
        .tgi_refusal("/generate", &json!({"inputs": "x", "parameters": {"typical_p": 1.5}}))
        .await;
    assert_eq!(msg, "`typical_p` must be > 0.0 and <= 1.0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_chat_completions_and_models() {
    let h = start().await;
    let body = json!({
        "model": "whatever",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Tell me a story."}],
        "max_tokens": 16,
        "temperature": 0,
    });
    let (status, v) = h.post("/v1/chat/completions", &body).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    let content = v["choices"][0]["message"]["content"].as_str().unwrap().to_string();
    // The llama-2 rendering, tokenized as TGI did.
    let prompt = h.tok.encode(
        "[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nTell me a story. [/INST]",
        true,
        true,
    );
    assert_eq!(content, h.greedy(&prompt, 16));
    let u = &v["usage"];
    assert_eq!(u["prompt_tokens"].as_u64().unwrap() as usize, prompt.len());
    assert_eq!(
        u["total_tokens"].as_u64().unwrap(),
        u["prompt_tokens"].as_u64().unwrap() + u["completion_tokens"].as_u64().unwrap()
    );
    assert!(["stop", "length"].contains(&v["choices"][0]["finish_reason"].as_str().unwrap()));

    // Streamed: role chunk, content chunks, finish chunk with usage, [DONE].
    let mut sbody = body.clone();
    sbody["stream"] = json!(true);
    let data = h.sse("/v1/chat/completions", &sbody).await;
    assert_eq!(data.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = data[..data.len() - 1].iter().map(|d| json(d)).collect();
    assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk"));
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let streamed: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(streamed, content);
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], v["choices"][0]["finish_reason"]);
    let same_usage = |a: &Value, b: &Value| {
        for k in ["prompt_tokens", "completion_tokens", "total_tokens"] {
            assert_eq!(a[k], b[k], "{a} vs {b}");
        }
    };
    same_usage(&last["usage"], &v["usage"]);

    // stream_options.include_usage: a last chunk with no choices and the usage.
    sbody["stream_options"] = json!({"include_usage": true});
    let data = h.sse("/v1/chat/completions", &sbody).await;
    let u = json(&data[data.len() - 2]);
    assert_eq!(u["choices"], json!([]));
    same_usage(&u["usage"], &v["usage"]);
    // Every request after the first reuses the cached prompt prefix.
    assert!(u["usage"]["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap() > 0);

    // Completions.
    let (status, c) = h
        .post(
            "/v1/completions",
            &json!({"prompt": "Once upon a time", "max_tokens": 10, "temperature": 0.0}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{c}");
    assert_eq!(c["object"], "text_completion");
    let want = h.greedy(&h.tok.encode("Once upon a time", true, true), 10);
    assert_eq!(c["choices"][0]["text"], want);
    let data = h
        .sse(
            "/v1/completions",
            &json!({"prompt": "Once upon a time", "max_tokens": 10, "temperature": 0.0, "stream": true}),
        )
        .await;
    assert_eq!(data.last().unwrap(), "[DONE]");
    let streamed: String = data[..data.len() - 1]
        .iter()
        .map(|d| json(d)["choices"][0]["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(streamed, want);

    // Stop strings cut the text before the match; finish_reason "stop".
    let stop = want.split_whitespace().nth(2).unwrap();
    let (_, c) = h
        .post(
            "/v1/completions",
            &json!({"prompt": "Once upon a time", "max_tokens": 10, "temperature": 0.0, "stop": stop}),
        )
        .await;
    let text = c["choices"][0]["text"].as_str().unwrap();
    assert!(want.starts_with(text) && !text.contains(stop), "{text:?}");
    assert_eq!(c["choices"][0]["finish_reason"], "stop");

    let (status, m) = h.get("/v1/models").await;
    assert_eq!(status, StatusCode::OK);
    let m = json(&m);
    assert_eq!(m["object"], "list");
    assert_eq!(m["data"][0]["id"], "stories260K");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_4xx_in_each_api_shape() {
    let h = start_with(
        1,
        4,
        ServeOptions {
            body_limit: 4096,
            ..Default::default()
        },
    )
    .await;
    let tgi_err = |status: StatusCode, body: &str, want: u16| {
        assert_eq!(status.as_u16(), want, "{body}");
        let v = json(body);
        assert!(
            v["error"].is_string() && v["error_type"].is_string(),
            "TGI shape: {body}"
        );
    };
    let oai_err = |status: StatusCode, body: &str, want: u16| {
        assert_eq!(status.as_u16(), want, "{body}");
        let v = json(body);
        assert!(
            v["error"]["message"].is_string() && v["error"]["type"].is_string(),
            "OpenAI shape: {body}"
        );
        assert!(
            v["error"].get("param").is_some() && v["error"].get("code").is_some(),
            "{body}"
        );
    };
    // Malformed or out-of-range TGI requests: (route, raw body, status).
    let tgi_cases = [
        ("/generate", "not json", 400),
        ("/generate", r#"{"inputs": 5}"#, 422),
        (
            "/generate",
            r#"{"inputs": "x", "parameters": {"max_new_tokens": -1}}"#,
            422,
        ),
        (
            "/generate",
            r#"{"inputs": "x", "parameters": {"max_new_tokens": 0}}"#,
            422,
        ),
        ("/generate", r#"{"inputs": ""}"#, 422),
        ("/generate", r#"{"inputs": "x", "parameters": {"temperature": 0}}"#, 422),
        (
            "/generate_stream",
            r#"{"inputs": "x", "parameters": {"top_p": 2}}"#,
            422,
        ),
        // Beyond TGI's u32: refused, as TGI's deserializer does.
        (
            "/generate",
            r#"{"inputs": "x", "parameters": {"max_new_tokens": 1000000000000}}"#,
            422,
        ),
    ];
    for (route, body, want) in tgi_cases {
        let (s, b) = h.post_raw(route, body).await;
        tgi_err(s, &b, want);
    }
    // A stop string longer than 1024 bytes (held back while the output may still become it).
    let long_stop = "a".repeat(1025);
    let (s, b) = h
        .post(
            "/generate",
            &json!({"inputs": "x", "parameters": {"stop": [long_stop]}}),
        )
        .await;
    tgi_err(s, &b.to_string(), 422);
    assert!(b["error"].as_str().unwrap().contains("1024 bytes"), "{b}");
    // Longer than the context without truncate: refused; with truncate: served.
    let long = "Once upon a time there was a dog. ".repeat(40);
    let (s, b) = h.post("/generate", &json!({"inputs": long})).await;
    tgi_err(s, &b.to_string(), 422);
    assert!(
        b["error"].as_str().unwrap().contains(&format!("must be <= {CTX}")),
        "{b}"
    );
    let (s, b) = h
        .post(
            "/generate",
            &json!({"inputs": long, "parameters": {"truncate": 100, "max_new_tokens": 4}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    // Huge max_new_tokens is refused, as TGI does (`max_total_tokens`).
    let (s, b) = h
        .post(
            "/generate",
            &json!({"inputs": "Once", "parameters": {"max_new_tokens": 1_000_000_000u64, "details": true}}),
        )
        .await;
    tgi_err(s, &b.to_string(), 422);

    let chat = |extra: Value| {
        let mut b = json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4});
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    };
    // Malformed or out-of-range OpenAI requests: (route, body, status).
    let oai_cases = [
        ("/v1/chat/completions", "{".to_string(), 400),
        ("/v1/chat/completions", r#"{"messages": 5}"#.to_string(), 400),
        ("/v1/chat/completions", chat(json!({"n": 2})).to_string(), 400),
        ("/v1/chat/completions", chat(json!({"max_tokens": -5})).to_string(), 400),
        ("/v1/chat/completions", chat(json!({"temperature": 7})).to_string(), 400),
        ("/v1/chat/completions", chat(json!({"typical_p": 1.5})).to_string(), 400),
        ("/v1/chat/completions", json!({"messages": []}).to_string(), 400),
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": "assistant", "content": "x"}]}).to_string(),
            400,
        ),
        ("/v1/completions", json!({"prompt": ""}).to_string(), 400),
        (
            "/v1/chat/completions",
            chat(json!({"stop": "a".repeat(1025)})).to_string(),
            400,
        ),
    ];
    for (route, body, want) in oai_cases {
        let (s, b) = h.post_raw(route, body).await;
        oai_err(s, &b, want);
    }
    // The offending parameter is named.
    let (_, b) = h.post("/v1/chat/completions", &chat(json!({"n": 2}))).await;
    assert_eq!(b["error"]["param"], "n");
    let (s, b) = h.post("/v1/completions", &json!({"prompt": long})).await;
    oai_err(s, &b.to_string(), 400);
    assert_eq!(b["error"]["code"], "context_length_exceeded");
    // OpenAI's routes cap a huge max_tokens at the context instead (docs/serving.md).
    let (s, b) = h
        .post("/v1/chat/completions", &chat(json!({"max_tokens": 1_000_000_000u64})))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert!(b["usage"]["completion_tokens"].as_u64().unwrap() < CTX as u64);

    // Body over the limit: 413 in the API's shape.
    let big = format!(r#"{{"inputs": "{}"}}"#, "a".repeat(8192));
    let (s, b) = h.post_raw("/generate", big.clone()).await;
    tgi_err(s, &b, 413);
    let big = format!(r#"{{"prompt": "{}"}}"#, "a".repeat(8192));
    let (s, b) = h.post_raw("/v1/completions", big).await;
    oai_err(s, &b, 413);

    let (s, b) = h.get("/nope").await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{b}");
    // A route with the wrong method: 405 in the API's shape too.
    let (s, b) = h.get("/generate").await;
    tgi_err(s, &b, 405);
    let (s, b) = h.get("/v1/chat/completions").await;
    oai_err(s, &b, 405);
    // The server is still fine.
    let (s, _) = h.post("/generate", &json!({"inputs": "Once"})).await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logprobs_and_alternatives_in_both_apis() {
    let h = start().await;
    // Completions with `logprobs: 2` against TGI's details (`top_n_tokens: 2`) for the same
    // greedy generation: the same tokens, log-probabilities and alternatives.
    let (s, c) = h
        .post(
            "/v1/completions",
            &json!({"prompt": "Once upon a time", "max_tokens": 8, "temperature": 0, "logprobs": 2}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{c}");
    let (s, g) = h
        .post(
            "/generate",
            &json!({"inputs": "Once upon a time", "parameters": {"max_new_tokens": 8, "details": true, "top_n_tokens": 2}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{g}");
    let lp = &c["choices"][0]["logprobs"];
    let tgi = g["details"]["tokens"].as_array().unwrap();
    let tgi_top = g["details"]["top_tokens"].as_array().unwrap();
    assert_eq!(lp["tokens"].as_array().unwrap().len(), tgi.len(), "{c}");
    assert_eq!(tgi_top.len(), tgi.len(), "{g}");
    for (i, t) in tgi.iter().enumerate() {
        assert_eq!(lp["tokens"][i], t["text"], "{c} {g}");
        let (a, b) = (
            lp["token_logprobs"][i].as_f64().unwrap(),
            t["logprob"].as_f64().unwrap(),
        );
        assert!(a <= 0.0 && (a - b).abs() < 1e-4, "token {i}: {a} vs {b}");
        // Greedy: the chosen token is the likeliest alternative, with its log-probability.
        let alts = tgi_top[i].as_array().unwrap();
        assert_eq!(alts.len(), 2, "{g}");
        assert_eq!(alts[0]["id"], t["id"], "{g}");
        assert!(alts[0]["logprob"].as_f64().unwrap() >= alts[1]["logprob"].as_f64().unwrap());
        let top = lp["top_logprobs"][i].as_object().unwrap();
        assert!(!top.is_empty() && top.len() <= 2, "{c}");
        assert_eq!(top[t["text"].as_str().unwrap()].as_f64().unwrap(), a, "{c}");
    }
    // TGI's stream carries the same alternatives per event.
    let events = h
        .sse(
            "/generate_stream",
            &json!({"inputs": "Once upon a time", "parameters": {"max_new_tokens": 8, "top_n_tokens": 2}}),
        )
        .await;
    let streamed: Vec<Value> = events.iter().map(|e| json(e)["top_tokens"].clone()).collect();
    assert_eq!(&streamed, tgi_top, "streamed top_tokens differ");
    // Chat, whole and streamed: one entry per generated token, each with its bytes and
    // `top_logprobs` alternatives, the chosen one first (greedy).
    let chat = json!({"messages": [{"role": "user", "content": "Once"}], "max_tokens": 6, "temperature": 0,
                      "logprobs": true, "top_logprobs": 3});
    let (s, v) = h.post("/v1/chat/completions", &chat).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let content = v["choices"][0]["logprobs"]["content"].as_array().unwrap();
    assert_eq!(
        content.len() as u64,
        v["usage"]["completion_tokens"].as_u64().unwrap(),
        "{v}"
    );
    for e in content {
        assert!(e["logprob"].as_f64().unwrap() <= 0.0, "{e}");
        let bytes: Vec<u8> = e["bytes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b.as_u64().unwrap() as u8)
            .collect();
        assert_eq!(String::from_utf8_lossy(&bytes), e["token"].as_str().unwrap(), "{e}");
        let alts = e["top_logprobs"].as_array().unwrap();
        assert_eq!(alts.len(), 3, "{e}");
        assert_eq!(
            (&alts[0]["token"], &alts[0]["logprob"]),
            (&e["token"], &e["logprob"]),
            "{e}"
        );
    }
    let mut streamed = chat.clone();
    streamed["stream"] = json!(true);
    let events = h.sse("/v1/chat/completions", &streamed).await;
    let entries: Vec<Value> = events
        .iter()
        .filter(|e| e.as_str() != "[DONE]")
        .flat_map(|e| {
            json(e)["choices"][0]["logprobs"]["content"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .collect();
    assert_eq!(&entries, content, "streamed entries differ from the whole answer's");
    // Without the flags: null, and no top_tokens.
    let (_, v) = h
        .post(
            "/v1/chat/completions",
            &json!({"messages": [{"role": "user", "content": "Once"}], "max_tokens": 2}),
        )
        .await;
    assert!(v["choices"][0]["logprobs"].is_null(), "{v}");
    let (_, g) = h
        .post(
            "/generate",
            &json!({"inputs": "Once", "parameters": {"max_new_tokens": 2, "details": true}}),
        )
        .await;
    assert!(g["details"].get("top_tokens").is_none(), "{g}");
    // Out of range, or what is not supported: 400 (422 for TGI).
    for (path, body, param) in [
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "x"}], "logprobs": true, "top_logprobs": 21}),
            "top_logprobs",
        ),
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "x"}], "top_logprobs": 0}),
            "top_logprobs",
        ),
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "x"}], "logprobs": 1}),
            "logprobs",
        ),
        ("/v1/completions", json!({"prompt": "x", "logprobs": 6}), "logprobs"),
        ("/v1/completions", json!({"prompt": "x", "echo": true}), "echo"),
    ] {
        let (s, v) = h.post(path, &body).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}: {v}");
        assert_eq!(v["error"]["param"], param, "{body}: {v}");
    }
    let (s, v) = h
        .post("/generate", &json!({"inputs": "x", "parameters": {"top_n_tokens": 6}}))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["error"], "`top_n_tokens` must be >= 0 and <= 5. Given: 6", "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_503_once_the_batching_loop_has_ended() {
    let mut h = start().await;
    assert_eq!(h.get("/health").await.0, StatusCode::OK);
    // The loop ends (as after a panic in it): the server stays up but can answer nothing.
    h.scheduler.handle().abort();
    h.scheduler.join();
    assert_eq!(h.get("/health").await.0, StatusCode::SERVICE_UNAVAILABLE);
    let (s, b) = h.post("/generate", &json!({"inputs": "Once"})).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_key_is_required_except_for_health() {
    let h = start_with(
        1,
        4,
        ServeOptions {
            api_key: Some("sekrit".into()),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(h.get("/health").await.0, StatusCode::OK);
    let (s, b) = h.get("/metrics").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{b}");
    let (s, b) = h.post("/generate", &json!({"inputs": "Once"})).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(b["error"].is_string(), "{b}");
    let (s, b) = h.post("/v1/completions", &json!({"prompt": "Once"})).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(b["error"]["code"], "invalid_api_key");
    let wrong = h
        .http
        .get(format!("{}/v1/models", h.url))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let ok = h
        .http
        .post(format!("{}/generate", h.url))
        .bearer_auth("sekrit")
        .json(&json!({"inputs": "Once", "parameters": {"max_new_tokens": 2}}))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_and_count_http_responses() {
    let h = start().await;
    let (s, text) = h.get("/metrics").await;
    assert_eq!(s, StatusCode::OK);
    for name in [
        "edgeact_requests_total",
        "edgeact_requests_finished_total",
        "edgeact_generated_tokens_total",
        "edgeact_busy_sequences",
        "edgeact_queue_depth",
    ] {
        metric_value(&text, name);
    }
    let ct = h.http.get(format!("{}/metrics", h.url)).send().await.unwrap();
    assert_eq!(ct.headers()["content-type"], "text/plain; version=0.0.4");
    let before = h.metric("edgeact_generated_tokens_total").await;
    h.post(
        "/generate",
        &json!({"inputs": "Once", "parameters": {"max_new_tokens": 5}}),
    )
    .await;
    h.post_raw("/generate", "garbage").await;
    // The scheduler counts a request as finished just after sending its last event.
    wait_for(&h, "edgeact_requests_finished_total", |n| n >= 1).await;
    let (_, text) = h.get("/metrics").await;
    assert!(metric_value(&text, "edgeact_generated_tokens_total") > before);
    assert!(text.contains("edgeact_http_requests_total{code=\"2xx\"}"), "{text}");
    let four = text
        .lines()
        .find(|l| l.starts_with("edgeact_http_requests_total{code=\"4xx\"}"))
        .unwrap();
    assert!(!four.ends_with(" 0"), "{four}");
}

/// A long generation (EOS ignored, the whole context) for load tests.
fn long_chat(stream: bool) -> Value {
    json!({"messages": [{"role": "user", "content": "Tell me a story."}], "ignore_eos": true,
           "temperature": 0, "stream": stream})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queue_gets_429() {
    let h = start_with(1, 1, ServeOptions::default()).await;
    // One runs, one waits, the rest must be refused: a burst of 12 long requests.
    let mut tasks = Vec::new();
    for _ in 0..12 {
        let http = h.http.clone();
        let url = format!("{}/v1/chat/completions", h.url);
        tasks.push(tokio::spawn(async move {
            let r = http.post(url).json(&long_chat(false)).send().await.unwrap();
            (r.status(), r.text().await.unwrap())
        }));
    }
    let mut refused = 0;
    for t in tasks {
        let (s, b) = t.await.unwrap();
        match s {
            StatusCode::OK => {}
            StatusCode::TOO_MANY_REQUESTS => {
                refused += 1;
                let v = json(&b);
                assert!(v["error"]["message"].as_str().unwrap().contains("queue"), "{b}");
            }
            other => panic!("{other}: {b}"),
        }
    }
    assert!(refused >= 1, "no request was refused");
    assert_eq!(h.metric("edgeact_requests_rejected_total").await, refused);
    // TGI's shape for the same refusal.
    let mut tasks = Vec::new();
    for _ in 0..12 {
        let http = h.http.clone();
        let url = format!("{}/generate", h.url);
        tasks.push(tokio::spawn(async move {
            let body = json!({"inputs": "Once upon a time", "parameters": {"max_new_tokens": 250}});
            let r = http.post(url).json(&body).send().await.unwrap();
            (r.status(), r.text().await.unwrap())
        }));
    }
    let mut tgi_refused = 0;
    for t in tasks {
        let (s, b) = t.await.unwrap();
        if s == StatusCode::TOO_MANY_REQUESTS {
            tgi_refused += 1;
            assert_eq!(json(&b)["error_type"], "overloaded", "{b}");
        }
    }
    assert!(tgi_refused >= 1);
}

async fn wait_for(h: &Harness, name: &str, pred: impl Fn(u64) -> bool) -> u64 {
    let start = Instant::now();
    loop {
        let v = h.metric(name).await;
        if pred(v) {
            return v;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "{name} stuck at {v}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streaming_client_that_disconnects_frees_its_sequence() {
    let h = start_with(1, 4, ServeOptions::default()).await;
    // A generation may still end on its own before the hang-up is noticed (the model is tiny
    // and fast); count the rounds that were cancelled.
    let mut cancelled = 0;
    for _ in 0..10 {
        let before = h.metric("edgeact_requests_cancelled_total").await;
        let r = h
            .http
            .post(format!("{}/v1/chat/completions", h.url))
            .json(&long_chat(true))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let mut body = r.bytes_stream();
        // Read until a content chunk arrived (the generation is running), then hang up.
        let mut seen = String::new();
        while !seen.contains("\"content\":\"") || seen.matches("data:").count() < 3 {
            let chunk = body.next().await.unwrap().unwrap();
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
        drop(body);
        wait_for(&h, "edgeact_busy_sequences", |b| b == 0).await;
        if h.metric("edgeact_requests_cancelled_total").await > before {
            cancelled += 1;
            if cancelled == 3 {
                break;
            }
        }
    }
    assert!(cancelled >= 1, "no disconnect cancelled its generation");
    assert_eq!(h.metric("edgeact_queue_depth").await, 0);
    // The sequence serves the next request.
    let (s, _) = h.post("/generate", &json!({"inputs": "Once"})).await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_the_requests_in_flight() {
    let mut h = start_with(1, 8, ServeOptions::default()).await;
    // Three long requests wait behind a streaming one on the single sequence.
    let r = h
        .http
        .post(format!("{}/generate_stream", h.url))
        .json(&json!({"inputs": "Once upon a time", "parameters": {"max_new_tokens": 200}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let mut body = r.bytes_stream();
    let first = body.next().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("data:"));
    let mut waiting = Vec::new();
    for _ in 0..3 {
        let http = h.http.clone();
        let url = format!("{}/v1/chat/completions", h.url);
        waiting.push(tokio::spawn(async move {
            let r = http.post(url).json(&long_chat(false)).send().await.unwrap();
            (r.status(), r.text().await.unwrap())
        }));
    }
    wait_for(&h, "edgeact_requests_total", |n| n == 4).await;
    let server = h.server.take().unwrap();
    let url = h.url.clone();
    let stopping = tokio::spawn(server.shutdown());
    // The stream runs to its end, the queued requests are answered in full.
    let mut rest = String::from_utf8_lossy(&first).into_owned();
    while let Some(chunk) = body.next().await {
        rest.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
    }
    let events = sse_data(&rest);
    let last = json(events.last().unwrap());
    assert!(last["generated_text"].is_string(), "{rest}");
    for t in waiting {
        let (s, b) = t.await.unwrap();
        assert_eq!(s, StatusCode::OK, "{b}");
        assert_eq!(json(&b)["choices"][0]["finish_reason"], "length", "{b}");
    }
    tokio::time::timeout(Duration::from_secs(20), stopping)
        .await
        .expect("shutdown within its deadline")
        .unwrap()
        .unwrap();
    // The listener is closed and the scheduler's loop has ended.
    assert!(reqwest::get(format!("{url}/health")).await.is_err());
    h.scheduler.join();
}
