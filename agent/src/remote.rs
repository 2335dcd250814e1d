//! `eval --endpoint`: a [`LanguageModel`] that asks a running TGI-compatible server (TGI
//! itself, or `edgeact serve`) for each reply, the way AgentBench's TGI client drove the
//! servers AgentLM was evaluated on: the history rendered with FastChat's `llama-2`
//! template, `POST {url}/generate` with `{"inputs": prompt, "parameters": {...}}`, the reply
//! read from `generated_text`. The server tokenizes (BOS first) and left-truncates.

use crate::render::render_llama2;
use crate::{ChatTemplate, LanguageModel, ModelReply, ModelRequest, TurnStats};
use anyhow::{anyhow, bail};
use serde_json::{json, Value};
use std::io::Read;
use std::time::{Duration, Instant};

/// Longest response body read (a reply of 128 tokens with details is a few KiB).
const MAX_RESPONSE_BYTES: u64 = 16 << 20;

/// How replies are asked for.
#[derive(Clone, Debug)]
pub struct RemoteConfig {
    /// System prompt choice of the llama-2 rendering (`eval`: none).
    pub template: ChatTemplate,
    /// AgentBench: 128.
    pub max_new_tokens: usize,
    /// Prompt tokens the server keeps (left truncation); AgentBench: 4096 - 128 = 3968.
    pub truncate: usize,
    /// `None`: greedy (`do_sample: false`, no temperature). `Some(t)`: the published request,
    /// `do_sample: false` with `temperature: t`, which TGI samples at T = t.
    pub temperature: Option<f32>,
    /// Attempts after a connection error (not after a timeout or an HTTP error status).
    pub retries: usize,
    /// Wait before the first retry; doubled each time.
    pub backoff: Duration,
    /// Whole-request limit.
    pub timeout: Duration,
}

impl RemoteConfig {
    /// The published evaluation request (T = 0.7), or greedy.
    pub fn eval(greedy: bool) -> RemoteConfig {
        RemoteConfig {
            template: ChatTemplate::Eval,
            max_new_tokens: 128,
            truncate: 3968,
            temperature: (!greedy).then_some(0.7),
            retries: 3,
            backoff: Duration::from_millis(500),
            timeout: Duration::from_secs(120),
        }
    }
}

/// A [`LanguageModel`] served by one TGI-compatible endpoint.
pub struct RemoteModel {
    agent: ureq::Agent,
    /// The server's base URL, without a trailing slash.
    url: String,
    config: RemoteConfig,
    seed: u64,
    /// Calls since the last [`RemoteModel::reseed`].
    calls: u64,
}

/// The `--endpoint` value as a list of base URLs (comma-separated; `http://` assumed when no
/// scheme is given; trailing slashes dropped).
pub fn parse_endpoints(list: &str) -> anyhow::Result<Vec<String>> {
    let urls: Vec<String> = list
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(|u| {
            let u = u.trim_end_matches('/');
            if u.starts_with("http://") || u.starts_with("https://") {
                u.to_string()
            } else {
                format!("http://{u}")
            }
        })
        .collect();
    if urls.is_empty() {
        bail!("--endpoint needs at least one URL (URL[,URL...])");
    }
    Ok(urls)
}

/// The TGI `finish_reason` as the engine's stop names.
fn stop_name(finish_reason: &str) -> String {
    match finish_reason {
        "eos_token" => "eos".into(),
        "length" => "max_tokens".into(),
        "stop_sequence" => "stop_string".into(),
        other => other.into(),
    }
}

impl RemoteModel {
    pub fn new(url: &str, config: RemoteConfig) -> RemoteModel {
        let agent = ureq::Agent::config_builder()
            // Error statuses are reported with the server's message.
            .http_status_as_error(false)
            .timeout_global(Some(config.timeout))
            .build()
            .into();
        RemoteModel {
            agent,
            url: url.trim_end_matches('/').to_string(),
            config,
            seed: 0,
            calls: 0,
        }
    }

    /// Seeds the next calls (per task and sampling seed).
    pub fn reseed(&mut self, seed: u64) {
        self.seed = seed;
        self.calls = 0;
    }

    /// The request body of a call with `prompt`: the task seed on the first call, then mixed
    /// with the call number (so turns do not repeat one random stream).
    pub fn body(&self, prompt: &str) -> Value {
        let k = self.calls;
        let seed = if k == 0 {
            self.seed
        } else {
            self.seed ^ k.wrapping_mul(0xD1B5_4A32_D192_ED03).rotate_left(17)
        };
        let mut params = json!({
            "max_new_tokens": self.config.max_new_tokens,
            "do_sample": false,
            "truncate": self.config.truncate,
            "seed": seed,
            "details": true,
        });
        if let Some(t) = self.config.temperature {
            params["temperature"] = json!(t);
        }
        json!({"inputs": prompt, "parameters": params})
    }

    /// POSTs `body` to `{url}/generate`, retrying connection errors; the parsed response.
    fn post(&self, body: &str) -> anyhow::Result<Value> {
        let url = format!("{}/generate", self.url);
        let mut wait = self.config.backoff;
        let mut attempt = 0;
        let resp = loop {
            let sent = self
                .agent
                .post(&url)
                .header("Content-Type", "application/json")
                .send(body);
            match sent {
                Ok(r) => break r,
                Err(e) if attempt < self.config.retries && connection_error(&e) => {
                    attempt += 1;
                    eprintln!(
                        "edgeact: {url}: {e}; retrying in {:.1} s ({attempt}/{})",
                        wait.as_secs_f64(),
                        self.config.retries
                    );
                    std::thread::sleep(wait);
                    wait *= 2;
                }
                Err(e) if connection_error(&e) => bail!("cannot reach {url} ({} attempts): {e}", attempt + 1),
                // A timeout is not retried: the server may still be generating the answer,
                // and asking again would only add the same work to a slow server's queue.
                Err(e) => bail!("{url}: {e}"),
            }
        };
        let status = resp.status().as_u16();
        let mut bytes = Vec::new();
        resp.into_body()
            .into_reader()
            .take(MAX_RESPONSE_BYTES)
            .read_to_end(&mut bytes)
            .map_err(|e| anyhow!("reading the response of {url}: {e}"))?;
        let text = String::from_utf8_lossy(&bytes);
        if status != 200 {
            // TGI answers errors as {"error": "...", "error_type": "..."}.
            let msg = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_string))
                .unwrap_or_else(|| text.chars().take(500).collect());
            bail!("{url} answered HTTP {status}: {msg}");
        }
        serde_json::from_str(&text).map_err(|e| anyhow!("{url} answered with invalid JSON ({e}): {:.200}", text))
    }
}

impl LanguageModel for RemoteModel {
    fn reply(&mut self, request: &ModelRequest<'_>) -> anyhow::Result<ModelReply> {
        let prompt = render_llama2(request.messages, &self.config.template);
        let body = self.body(&prompt).to_string();
        self.calls += 1;
        let t0 = Instant::now();
        let v = self.post(&body)?;
        let ms = t0.elapsed().as_secs_f64() * 1e3;
        // TGI's /generate answers an object; some servers wrap it in a one-element list.
        let v = match v {
            Value::Array(mut a) if a.len() == 1 => a.remove(0),
            v => v,
        };
        let text = v
            .get("generated_text")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                anyhow!(
                    "{}/generate answered without generated_text: {:.200}",
                    self.url,
                    v.to_string()
                )
            })?
            .to_string();
        let details = v.get("details");
        let count = |k: &str| {
            details
                .and_then(|d| d.get(k))
                .and_then(Value::as_u64)
                .map(|n| n as usize)
        };
        let prompt_tokens = details
            .and_then(|d| d.get("prefill"))
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        Ok(ModelReply {
            text,
            stats: TurnStats {
                // Unknown unless the server lists the prefill tokens.
                prompt_tokens,
                prefilled_tokens: prompt_tokens,
                truncated_tokens: 0,
                generated_tokens: count("generated_tokens").unwrap_or(0),
                // The server's time, prefill and generation together.
                prompt_ms: 0.0,
                gen_ms: ms,
                stop: details
                    .and_then(|d| d.get("finish_reason"))
                    .and_then(Value::as_str)
                    .map_or_else(|| "remote".to_string(), stop_name),
                ..Default::default()
            },
        })
    }
}

/// Whether `e` is a failure to reach the server or a connection it dropped (down, restarting),
/// which another attempt may get past.
fn connection_error(e: &ureq::Error) -> bool {
    use std::io::ErrorKind::*;
    match e {
        ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => true,
        ureq::Error::Io(io) => matches!(
            io.kind(),
            ConnectionRefused | ConnectionReset | ConnectionAborted | NotConnected | BrokenPipe | UnexpectedEof
        ),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server that takes the request and never answers: one attempt, failed at the timeout.
    /// A port nobody listens on: every retry is made.
    #[test]
    fn timeouts_are_not_retried_but_refused_connections_are() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = std::sync::Arc::clone(&accepted);
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for conn in listener.incoming().flatten() {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                held.push(conn);
            }
        });
        let config = RemoteConfig {
            timeout: Duration::from_millis(500),
            backoff: Duration::from_millis(10),
            retries: 3,
            ..RemoteConfig::eval(true)
        };
        let m = RemoteModel::new(&url, config.clone());
        let t = std::time::Instant::now();
        let err = m.post("{}").unwrap_err().to_string();
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}: {err}", t.elapsed());
        assert!(!err.contains("cannot reach"), "{err}");
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1, "{err}");

        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", closed.local_addr().unwrap());
        drop(closed);
        let err = RemoteModel::new(&url, config).post("{}").unwrap_err().to_string();
        assert!(err.contains("cannot reach") && err.contains("(4 attempts)"), "{err}");
    }

    #[test]
    fn endpoint_lists() {
        assert_eq!(
            parse_endpoints("localhost:8080, http://a:1/,https://b").unwrap(),
            vec!["http://localhost:8080", "http://a:1", "https://b"]
        );
        assert!(parse_endpoints(" , ").is_err());
    }

    #[test]
    fn request_bodies() {
        let mut m = RemoteModel::new("http://x", RemoteConfig::eval(true));
        m.reseed(7);
        let b = m.body("[INST] q [/INST]");
        assert_eq!(b["inputs"], "[INST] q [/INST]");
        let p = &b["parameters"];
        assert_eq!(p["max_new_tokens"], 128);
        assert_eq!(p["do_sample"], false);
        assert_eq!(p["truncate"], 3968);
        assert_eq!(p["seed"], 7);
        assert!(p.get("temperature").is_none());
        let m = RemoteModel::new("http://x", RemoteConfig::eval(false));
        let t = m.body("p")["parameters"]["temperature"].as_f64().unwrap();
        assert!((t - 0.7).abs() < 1e-6);
        assert_eq!(stop_name("length"), "max_tokens");
        assert_eq!(stop_name("eos_token"), "eos");
    }
}
