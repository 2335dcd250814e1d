//! Continuous batching: many generation requests served by one [`MultiSession`].
//!
//! [`Scheduler::start`] moves the session to a thread of its own. Callers [`Handle::submit`] a
//! [`Request`] (prompt tokens, sampling, limits) with an [`EventSink`] that receives the
//! generated tokens and text as [`Event`]s. Every step of the loop runs one forward pass over
//! one new token of each decoding sequence plus prompt pieces of the requests being prefilled
//! (long prompts are split so they never stall the running decodes). A new request reuses the
//! longest cached prefix of a free sequence (agent clients resend the whole history each
//! turn), and a client that goes away (its sink refuses an event or reports itself closed)
//! cancels its generation and frees its sequence.
//!
//! With [`SchedulerOptions::speculate`] on, each decoding sequence also carries a
//! prompt-lookup draft ([`crate::speculate::find_draft`] over its prompt and generated tokens)
//! in its chunk of the step; the model's logits at every draft position are checked with the
//! single-sequence loop's acceptance rule ([`crate::speculate::choose`]: the sampler's own draw
//! at each position, the request's [`TokenFilter`] applied as for single tokens), accepted
//! tokens are streamed in order with every stop condition checked token by token, and the
//! sequence's cache is cut back past the first rejected position. Greedy output is the same
//! with and without; a seeded sampled request draws the same random numbers either way.
//!
//! The loop knows nothing of HTTP: `edgeact serve` and the in-process `eval --jobs` are both
//! clients of a [`Handle`].

mod metrics;
mod scheduler;

pub use metrics::{Metrics, MetricsSnapshot};
pub use scheduler::{Scheduler, DEFAULT_DRAFT_BUDGET, DEFAULT_PREFILL_CHUNK};

use crate::generate::StopReason;
use crate::model::MultiSession;
use crate::sampler::SamplerConfig;
use crate::speculate::SpeculateConfig;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};

/// Restricts which tokens may come next (constrained decoding), request by request.
pub trait TokenFilter: Send {
    /// The ids allowed next, or `None` for all; `remaining` is the rest of the token budget.
    fn allowed(&mut self, n_vocab: usize, remaining: usize) -> Option<Vec<u32>>;
    /// Records the token that was chosen.
    fn advance(&mut self, token: u32);
    /// Whether the output is complete (generation then ends with [`StopReason::Complete`]).
    fn is_done(&self) -> bool;
}

/// One generation request.
pub struct Request {
    /// The whole prompt (BOS included when the model wants one); must fit the context.
    pub prompt: Vec<u32>,
    pub sampler: SamplerConfig,
    /// Most tokens to generate (at least 1).
    pub max_tokens: usize,
    /// Tokens that end the generation (not decoded into the text).
    pub stop_tokens: Vec<u32>,
    /// Strings that end the generation; the text stops just before the earliest match.
    pub stop_strings: Vec<String>,
    /// Constrained decoding, if any.
    pub filter: Option<Box<dyn TokenFilter>>,
    /// Report the log-probability of every prompt token after the first
    /// ([`Summary::prompt_logprobs`], TGI's `decoder_input_details`). The whole prompt is then
    /// evaluated again, bypassing the prefix cache (a cached prefix has no logits), and every
    /// prompt position goes through the output projection: ask only when needed.
    pub prompt_logprobs: bool,
    /// Report, with each generated token, this many most likely tokens at its position and
    /// their log-probabilities ([`TokenEvent::top`], [`Summary::stop_top`]; OpenAI's
    /// `top_logprobs`, TGI's `top_n_tokens`). At most [`MAX_TOP_LOGPROBS`].
    pub top_logprobs: usize,
}

/// Most alternatives a request may ask for per token ([`Request::top_logprobs`]).
pub const MAX_TOP_LOGPROBS: usize = 20;

/// A token made by a request.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenEvent {
    pub id: u32,
    /// Text that became final with this token (possibly empty: an incomplete UTF-8 character
    /// or the possible start of a stop string is held back).
    pub text: String,
    /// Natural log of the probability the model gave this token (before sampling settings).
    pub logprob: f32,
    /// The [`Request::top_logprobs`] most likely tokens at this position with their
    /// log-probabilities, most likely first (empty when none were asked for).
    pub top: Vec<(u32, f32)>,
}

/// How a request ended.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    pub stop: StopReason,
    /// Held-back text released at the end (not part of any token event).
    pub tail: String,
    /// The whole generated text (the token events' text plus `tail`).
    pub text: String,
    pub prompt_tokens: usize,
    /// Prompt tokens whose keys and values were reused from an earlier request.
    pub cached_tokens: usize,
    pub generated_tokens: usize,
    /// Natural log of the probability of the stop token that ended the generation (when
    /// `stop` is [`StopReason::StopToken`]; that token gets no [`TokenEvent`]).
    pub stop_logprob: Option<f32>,
    /// The alternatives at the stop token's position ([`TokenEvent::top`]).
    pub stop_top: Vec<(u32, f32)>,
    /// With [`Request::prompt_logprobs`]: for each prompt token after the first, the natural
    /// log of the probability the model gave it after the tokens before it.
    pub prompt_logprobs: Option<Vec<f32>>,
    /// Steps that evaluated a generated token (and its draft) of this request: its decode
    /// passes, fewer than `generated_tokens` when drafts were accepted.
    pub decode_passes: usize,
    /// Draft tokens verified for this request, and those accepted.
    pub draft_tokens: usize,
    pub draft_accepted: usize,
    /// Milliseconds spent waiting for a sequence, prefilling, and decoding.
    pub queue_ms: f64,
    pub prefill_ms: f64,
    pub decode_ms: f64,
}

/// What a request's [`EventSink`] receives: tokens, then exactly one `Done` or `Failed`.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    Token(TokenEvent),
    Done(Summary),
    Failed(String),
}

/// Where a request's events go. Returning `false` from `send` (or `true` from `is_closed`)
/// means the client is gone: the generation is cancelled and its sequence freed.
pub trait EventSink: Send {
    fn send(&mut self, event: Event) -> bool;
    fn is_closed(&self) -> bool {
        false
    }
}

impl EventSink for mpsc::Sender<Event> {
    fn send(&mut self, event: Event) -> bool {
        mpsc::Sender::send(self, event).is_ok()
    }
}

/// Why a request was not accepted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    #[error("the request queue is full ({capacity} requests waiting); retry later")]
    QueueFull { capacity: usize },
    #[error("the server is shutting down")]
    ShuttingDown,
    #[error("{0}")]
    Invalid(String),
}

/// Sizes of a scheduler.
#[derive(Clone, Debug)]
pub struct SchedulerOptions {
    /// Requests that may wait for a free sequence before submissions are refused.
    pub queue_capacity: usize,
    /// Most prompt tokens one step prefills (the rest of a long prompt waits for later steps).
    pub prefill_chunk: usize,
    /// Prompt-lookup speculative decoding of every request (off by default: it spends step
    /// rows on guesses, which pays where the outputs copy their prompts, as agents' do).
    pub speculate: SpeculateConfig,
    /// Most draft tokens in one step over all sequences. Drafts only fill what the decodes
    /// and the prefill pieces leave of the batch, so under load they shrink first.
    pub draft_budget: usize,
}

impl Default for SchedulerOptions {
    fn default() -> Self {
        SchedulerOptions {
            queue_capacity: 64,
            prefill_chunk: DEFAULT_PREFILL_CHUNK,
            speculate: SpeculateConfig::off(),
            draft_budget: DEFAULT_DRAFT_BUDGET,
        }
    }
}

/// Fixed facts about the engine behind a [`Handle`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineInfo {
    /// Sequences decoded at once.
    pub parallel: usize,
    /// Context of each sequence.
    pub n_ctx: usize,
    pub n_vocab: usize,
    pub queue_capacity: usize,
}

pub(crate) enum Command {
    Submit(Box<Submission>),
    /// Wake the loop (shutdown requested).
    Wake,
    /// End everything now: in-flight requests fail.
    Abort,
}

pub(crate) struct Submission {
    pub request: Request,
    pub sink: Box<dyn EventSink>,
    pub submitted: std::time::Instant,
}

/// A cloneable client of a running [`Scheduler`].
#[derive(Clone)]
pub struct Handle {
    tx: mpsc::Sender<Command>,
    info: EngineInfo,
    metrics: Arc<Metrics>,
    accepting: Arc<AtomicBool>,
    waiting: Arc<AtomicUsize>,
    /// Whether the loop's thread still runs (cleared when it ends, by a panic too).
    running: Arc<AtomicBool>,
}

impl Handle {
    pub fn info(&self) -> &EngineInfo {
        &self.info
    }

    pub fn metrics(&self) -> MetricsSnapshot {
        self.metrics.snapshot()
    }

    /// Validates `request` and queues it; its events go to `sink`.
    pub fn submit(&self, request: Request, sink: Box<dyn EventSink>) -> Result<(), SubmitError> {
        if !self.accepting.load(Ordering::SeqCst) {
            return Err(SubmitError::ShuttingDown);
        }
        self.validate(&request).map_err(SubmitError::Invalid)?;
        // Reserve a queue place first so concurrent submitters cannot overfill it.
        let capacity = self.info.queue_capacity;
        if self
            .waiting
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |w| (w < capacity).then_some(w + 1))
            .is_err()
        {
            self.metrics.rejected();
            return Err(SubmitError::QueueFull { capacity });
        }
        let submission = Submission {
            request,
            sink,
            submitted: std::time::Instant::now(),
        };
        if self.tx.send(Command::Submit(Box::new(submission))).is_err() {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            return Err(SubmitError::ShuttingDown);
        }
        self.metrics.submitted();
        Ok(())
    }

    fn validate(&self, r: &Request) -> Result<(), String> {
        let info = &self.info;
        if r.prompt.is_empty() {
            return Err("the prompt is empty".into());
        }
        if let Some(&t) = r.prompt.iter().find(|&&t| t as usize >= info.n_vocab) {
            return Err(format!("token id {t} is outside the vocabulary of {}", info.n_vocab));
        }
        if r.prompt.len() >= info.n_ctx {
            return Err(format!(
                "the prompt has {} tokens; the context holds {} (prompt plus at least one new token)",
                r.prompt.len(),
                info.n_ctx
            ));
        }
        if r.max_tokens == 0 {
            return Err("at least one new token must be asked for".into());
        }
        if r.top_logprobs > MAX_TOP_LOGPROBS {
            return Err(format!(
                "at most {MAX_TOP_LOGPROBS} alternatives per token can be reported (asked for {})",
                r.top_logprobs
            ));
        }
        r.sampler.validate()
    }

    /// Whether the scheduler's loop still runs: `false` once it has ended (after a shutdown
    /// drained, an abort, or a panic), when nothing submitted would ever be answered.
    pub fn is_running(&self) -> bool {
        self.running.load(Ordering::SeqCst)
    }

    /// Stops accepting requests; the loop ends once the queued and running ones are done.
    pub fn shutdown(&self) {
        self.accepting.store(false, Ordering::SeqCst);
        let _ = self.tx.send(Command::Wake);
    }

    /// Stops accepting requests and ends the running ones now (they fail).
    pub fn abort(&self) {
        self.accepting.store(false, Ordering::SeqCst);
        let _ = self.tx.send(Command::Abort);
    }
}

/// Builds the handle side of a scheduler (used by [`Scheduler::start`]).
pub(crate) fn handle_for(
    session: &MultiSession,
    opts: &SchedulerOptions,
) -> (Handle, mpsc::Receiver<Command>, Arc<AtomicBool>, Arc<AtomicUsize>) {
    let (tx, rx) = mpsc::channel();
    let accepting = Arc::new(AtomicBool::new(true));
    let waiting = Arc::new(AtomicUsize::new(0));
    let metrics = Arc::new(Metrics::new(session.n_seqs()));
    let handle = Handle {
        tx,
        info: EngineInfo {
            parallel: session.n_seqs(),
            n_ctx: session.n_ctx(),
            n_vocab: session.model().config().vocab_size,
            queue_capacity: opts.queue_capacity,
        },
        metrics,
        accepting: Arc::clone(&accepting),
        waiting: Arc::clone(&waiting),
        running: Arc::new(AtomicBool::new(true)),
    };
    (handle, rx, accepting, waiting)
}

impl Handle {
    pub(crate) fn running_flag(&self) -> &Arc<AtomicBool> {
        &self.running
    }

    pub(crate) fn metrics_arc(&self) -> &Arc<Metrics> {
        &self.metrics
    }
}
