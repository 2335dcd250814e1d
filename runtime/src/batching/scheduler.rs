//! The batching loop: admit queued requests into free sequences, build one step of decodes
//! (each with its speculative draft, when on) and prefill pieces, run it, sample and verify,
//! stream events, retire finished or abandoned requests.

use super::{
    handle_for, Command, Event, EventSink, Handle, Metrics, Request, SchedulerOptions, Submission, Summary, TokenEvent,
    TokenFilter,
};
use crate::generate::{common_prefix, StopMatcher, StopReason};
use crate::model::{Logits, ModelError, MultiSession, SeqChunk};
use crate::sampler::Sampler;
use crate::speculate::{self, SpeculateConfig};
use crate::tokenizer::{StreamDecoder, Tokenizer};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Instant;

/// Prompt tokens prefilled per step by default: large enough to keep prefill efficient, small
/// enough that running decodes wait little for a new request's prompt.
pub const DEFAULT_PREFILL_CHUNK: usize = 256;

/// Draft tokens verified per step over all sequences by default. Each draft row costs a
/// row of every matmul (and of the output projection), which on a CPU is not free beyond a
/// few rows; 24 leaves 8 agents about 3 rows each. On the DB dev episodes (SmolLM2, 8 jobs)
/// the adaptive draft lengths averaged ~14 draft rows a step, and a budget of 64 was no faster.
pub const DEFAULT_DRAFT_BUDGET: usize = 24;

/// The thread running the loop; [`Scheduler::handle`] gives clients.
pub struct Scheduler {
    handle: Handle,
    thread: Option<JoinHandle<()>>,
}

impl Scheduler {
    /// Starts the loop on its own thread, serving requests with `session`'s sequences.
    pub fn start(
        session: MultiSession,
        tokenizer: Arc<Tokenizer>,
        opts: SchedulerOptions,
    ) -> Result<Scheduler, ModelError> {
        if opts.prefill_chunk == 0 {
            return Err(ModelError::Options("the prefill chunk must be at least 1 token".into()));
        }
        // Every decoding sequence puts a token in each step: more sequences than a step holds
        // would make a full house fail every request at once.
        if session.n_seqs() > session.batch_size() {
            return Err(ModelError::Options(format!(
                "{} sequences decode together but a step holds {} tokens: use at most {} sequences",
                session.n_seqs(),
                session.batch_size(),
                session.batch_size()
            )));
        }
        let (handle, rx, _accepting, waiting) = handle_for(&session, &opts);
        let metrics = Arc::clone(handle.metrics_arc());
        let running = Arc::clone(handle.running_flag());
        let thread = std::thread::Builder::new()
            .name("edgeact-batch".into())
            .spawn(move || {
                // Cleared however the loop ends, unwinding from a panic included.
                struct Ended(Arc<AtomicBool>);
                impl Drop for Ended {
                    fn drop(&mut self) {
                        self.0.store(false, Ordering::SeqCst);
                    }
                }
                let _ended = Ended(running);
                let mut l = Loop {
                    session,
                    tokenizer: &tokenizer,
                    rx,
                    waiting,
                    metrics,
                    prefill_chunk: opts.prefill_chunk,
                    speculate: opts.speculate,
                    draft_budget: opts.draft_budget,
                    queue: VecDeque::new(),
                    active: Vec::new(),
                    last_used: Vec::new(),
                    clock: 0,
                    draining: false,
                };
                l.last_used = vec![0; l.session.n_seqs()];
                l.run();
            })
            .map_err(|e| ModelError::Options(format!("cannot start the batching thread: {e}")))?;
        Ok(Scheduler {
            handle,
            thread: Some(thread),
        })
    }

    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// Stops accepting requests and waits for the queued and running ones to finish.
    pub fn shutdown(mut self) {
        self.handle.shutdown();
        self.join();
    }

    /// Waits for the loop to end (after [`Handle::shutdown`] or [`Handle::abort`]).
    pub fn join(&mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.handle.abort();
            self.join();
        }
    }
}

/// A request holding a sequence.
struct Active<'t> {
    seq: usize,
    prompt: Vec<u32>,
    /// Prompt tokens cached so far (prefill is done when this reaches `prompt.len()`).
    prefilled: usize,
    cached: usize,
    sampler: Sampler,
    filter: Option<Box<dyn TokenFilter>>,
    decoder: StreamDecoder<'t>,
    stops: StopMatcher,
    max_tokens: usize,
    stop_tokens: Vec<u32>,
    generated: Vec<u32>,
    /// Sampled and not yet evaluated.
    pending: Option<u32>,
    /// The next draft's length: doubles (up to the configured maximum) while drafts are
    /// accepted whole, drops to one past the accepted part on a rejection (as the
    /// single-sequence loop's).
    draft_len: usize,
    /// Steps that evaluated this request's generated tokens; draft tokens verified, accepted.
    decode_passes: usize,
    draft_tokens: usize,
    draft_accepted: usize,
    /// Log-probabilities of the prompt's tokens after the first, when the request asked.
    prompt_logprobs: Option<Vec<f32>>,
    /// The log-probability of the stop token that ended the generation, and the alternatives
    /// at its position.
    stop_logprob: Option<f32>,
    stop_top: Vec<(u32, f32)>,
    /// Alternatives reported per token ([`Request::top_logprobs`]).
    top_logprobs: usize,
    text: String,
    sink: Box<dyn EventSink>,
    submitted: Instant,
    admitted: Instant,
    first_token: Option<Instant>,
}

struct Loop<'t> {
    session: MultiSession,
    tokenizer: &'t Tokenizer,
    rx: mpsc::Receiver<Command>,
    waiting: Arc<AtomicUsize>,
    metrics: Arc<Metrics>,
    prefill_chunk: usize,
    speculate: SpeculateConfig,
    draft_budget: usize,
    queue: VecDeque<Box<Submission>>,
    active: Vec<Active<'t>>,
    /// Logical time each sequence was last released (least recently used is reused first).
    last_used: Vec<u64>,
    clock: u64,
    draining: bool,
}

/// How a request's run ends.
enum End {
    Stop(StopReason),
    Cancelled,
    Failed(String),
}

impl<'t> Loop<'t> {
    fn run(&mut self) {
        loop {
            // Block only when there is nothing to compute.
            let idle = self.active.is_empty() && self.queue.is_empty();
            if idle && self.draining {
                return;
            }
            let first = if idle {
                match self.rx.recv() {
                    Ok(c) => Some(c),
                    Err(_) => return,
                }
            } else {
                None
            };
            for c in first.into_iter().chain(std::iter::from_fn(|| self.rx.try_recv().ok())) {
                match c {
                    Command::Submit(s) => self.queue.push_back(s),
                    Command::Wake => self.draining = true,
                    Command::Abort => {
                        self.abort_all();
                        return;
                    }
                }
            }
            self.drop_abandoned();
            self.admit();
            self.metrics.set_gauges(self.queue.len(), self.active.len());
            if !self.active.is_empty() {
                self.step();
            }
        }
    }

    fn abort_all(&mut self) {
        for mut s in std::mem::take(&mut self.queue) {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            s.sink.send(Event::Failed("the server is shutting down".into()));
            self.metrics.ended(true, false);
        }
        for i in (0..self.active.len()).rev() {
            self.retire(i, End::Failed("the server is shutting down".into()));
        }
        self.metrics.set_gauges(0, 0);
    }

    /// Drops queued requests whose client left, freeing their queue places at once (not when
    /// a sequence frees up, which can take a whole generation: until then new requests would
    /// be refused as if the queue were full).
    fn drop_abandoned(&mut self) {
        let before = self.queue.len();
        self.queue.retain(|s| !s.sink.is_closed());
        for _ in self.queue.len()..before {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            self.metrics.ended(true, false);
        }
    }

    /// Moves queued requests into free sequences, each into the free one holding the longest
    /// prefix of its prompt (ties: the least recently used).
    fn admit(&mut self) {
        while !self.queue.is_empty() && self.active.len() < self.session.n_seqs() {
            let Some(mut s) = self.queue.pop_front() else { break };
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            let busy: Vec<usize> = self.active.iter().map(|a| a.seq).collect();
            let prompt = std::mem::take(&mut s.request.prompt);
            // Prompt log-probabilities need the logits of every position, so such a request
            // reuses nothing: it takes the least recently used sequence, sparing the caches
            // other requests may reuse.
            let reuse = !s.request.prompt_logprobs;
            let Some((seq, common)) = (0..self.session.n_seqs())
                .filter(|q| !busy.contains(q))
                .map(|q| (q, common_prefix(self.session.tokens(q), &prompt)))
                .max_by_key(|&(q, common)| (if reuse { common } else { 0 }, std::cmp::Reverse(self.last_used[q])))
            else {
                break;
            };
            // The last prompt token is always evaluated: its logits choose the first new token.
            let keep = if reuse { common.min(prompt.len() - 1) } else { 0 };
            self.session.truncate(seq, keep);
            self.metrics.admitted(prompt.len(), keep);
            let Submission {
                request,
                sink,
                submitted,
            } = *s;
            let Request {
                sampler,
                max_tokens,
                stop_tokens,
                stop_strings,
                filter,
                prompt_logprobs,
                top_logprobs,
                ..
            } = request;
            self.active.push(Active {
                seq,
                prompt,
                prefilled: keep,
                cached: keep,
                sampler: Sampler::new(sampler),
                filter,
                decoder: StreamDecoder::new(self.tokenizer),
                stops: StopMatcher::new(&stop_strings),
                max_tokens,
                stop_tokens,
                generated: Vec::new(),
                pending: None,
                draft_len: self.speculate.max_draft,
                decode_passes: 0,
                draft_tokens: 0,
                draft_accepted: 0,
                prompt_logprobs: prompt_logprobs.then(Vec::new),
                stop_logprob: None,
                stop_top: Vec::new(),
                top_logprobs,
                text: String::new(),
                sink,
                submitted,
                admitted: Instant::now(),
                first_token: None,
            });
        }
    }

    /// One forward pass: a token of every decoding request, then prompt pieces (oldest request
    /// first) up to the prefill chunk and the batch size, then the decoding requests' drafts in
    /// what is left of the batch and the draft budget.
    fn step(&mut self) {
        // Requests whose client left are dropped before computing anything for them.
        for i in (0..self.active.len()).rev() {
            if self.active[i].sink.is_closed() {
                self.retire(i, End::Cancelled);
            }
        }
        if self.active.is_empty() {
            return;
        }
        let batch = self.session.batch_size();
        let n_decode = self.active.iter().filter(|a| a.pending.is_some()).count();
        let mut budget = self.prefill_chunk.min(batch.saturating_sub(n_decode));
        // Prompt pieces: (request, end of the piece).
        let mut pieces = Vec::new();
        let mut n_prefill = 0;
        for (i, a) in self.active.iter().enumerate() {
            if a.pending.is_some() || a.prefilled == a.prompt.len() || budget == 0 {
                continue;
            }
            let take = (a.prompt.len() - a.prefilled).min(budget);
            budget -= take;
            n_prefill += take;
            pieces.push((i, a.prefilled + take));
        }
        // The decoding requests' tokens: the pending one, then the draft.
        let mut decodes: Vec<(usize, Vec<u32>)> = self
            .active
            .iter()
            .enumerate()
            .filter_map(|(i, a)| a.pending.map(|t| (i, vec![t])))
            .collect();
        if self.speculate.enabled {
            let room = batch.saturating_sub(n_decode + n_prefill).min(self.draft_budget);
            self.add_drafts(&mut decodes, room);
        }
        let mut chunks: Vec<SeqChunk<'_>> = Vec::new();
        let mut owners = Vec::new();
        for (i, tokens) in &decodes {
            chunks.push(SeqChunk {
                seq: self.active[*i].seq,
                tokens,
                logits: if tokens.len() > 1 { Logits::All } else { Logits::Last },
            });
            owners.push(*i);
        }
        for &(i, end) in &pieces {
            let a = &self.active[i];
            chunks.push(SeqChunk {
                seq: a.seq,
                tokens: &a.prompt[a.prefilled..end],
                logits: if a.prompt_logprobs.is_some() {
                    Logits::All
                } else if end == a.prompt.len() {
                    Logits::Last
                } else {
                    Logits::None
                },
            });
            owners.push(i);
        }
        let lens: Vec<usize> = chunks.iter().map(|c| c.tokens.len()).collect();
        // Cached tokens of each chunk's sequence before the step.
        let bases: Vec<usize> = chunks.iter().map(|c| self.session.tokens(c.seq).len()).collect();
        let result = self.session.step(&chunks);
        drop(chunks);
        let logits = match result {
            Ok(l) => l,
            Err(e) => {
                let msg = format!("model error: {e}");
                owners.sort_unstable();
                for &i in owners.iter().rev() {
                    self.retire(i, End::Failed(msg.clone()));
                }
                return;
            }
        };
        self.metrics.step(n_prefill);
        let mut ended = Vec::new();
        for (k, ((&i, logits), len)) in owners.iter().zip(logits).zip(lens).enumerate() {
            let a = &mut self.active[i];
            if a.pending.is_some() {
                // The pending token and its draft: verify, keep the accepted part.
                let draft = &decodes[k].1[1..];
                if let Some(end) = self.verify(i, &logits, draft, bases[k]) {
                    ended.push((i, end));
                }
                continue;
            }
            let start = a.prefilled;
            a.prefilled += len;
            if logits.is_empty() {
                continue;
            }
            // A prompt chunk with the logits of every position: row j (position start + j)
            // scores the prompt token after it; the prompt's last row chooses the first new token.
            let mut logits = logits.as_slice();
            if let Some(scores) = a.prompt_logprobs.as_mut() {
                let n_vocab = logits.len() / len;
                for (j, row) in logits.chunks_exact(n_vocab).enumerate() {
                    if let Some(&next) = a.prompt.get(start + j + 1) {
                        scores.push(crate::model::log_softmax_at(row, next));
                    }
                }
                if a.prefilled < a.prompt.len() {
                    continue;
                }
                logits = &logits[(len - 1) * n_vocab..];
            }
            if a.first_token.is_none() {
                a.first_token = Some(Instant::now());
            }
            let history = self.session.tokens(a.seq);
            if let Next::End(end) = sample_next(a, history, self.session.n_ctx(), logits, None, &self.metrics) {
                ended.push((i, end));
            }
        }
        ended.sort_unstable_by_key(|&(i, _)| i);
        for (i, end) in ended.into_iter().rev() {
            self.retire(i, end);
        }
    }

    /// Appends to each decoding request's tokens (`decodes`: request, `[pending]`) the draft
    /// its history proposes, at most `room` draft tokens in all. When the drafts want more,
    /// every request's draft is cut to a common length (the largest that fits; the leftover
    /// rows go to the earliest requests), so no request's speculation starves another's.
    fn add_drafts(&self, decodes: &mut [(usize, Vec<u32>)], room: usize) {
        if room == 0 {
            return;
        }
        let n_ctx = self.session.n_ctx();
        let mut drafts: Vec<Vec<u32>> = decodes
            .iter()
            .map(|(i, tokens)| {
                let a = &self.active[*i];
                let cached = self.session.tokens(a.seq);
                // Room in the context after the pending token, and in the token budget after
                // the token the model adds behind the draft.
                let ctx_room = n_ctx.saturating_sub(cached.len() + 1);
                let remaining = a.max_tokens - a.generated.len();
                let max = a.draft_len.min(ctx_room).min(remaining.saturating_sub(1));
                if max == 0 {
                    return Vec::new();
                }
                let mut history = Vec::with_capacity(cached.len() + 1);
                history.extend_from_slice(cached);
                history.extend_from_slice(tokens);
                speculate::find_draft(&history, &self.speculate, max)
            })
            .collect();
        let wanted: usize = drafts.iter().map(Vec::len).sum();
        if wanted > room {
            let fits = |cap: usize| drafts.iter().map(|d| d.len().min(cap)).sum::<usize>() <= room;
            let mut cap = 0;
            while fits(cap + 1) {
                cap += 1;
            }
            let mut spare = room - drafts.iter().map(|d| d.len().min(cap)).sum::<usize>();
            for d in &mut drafts {
                let extra = usize::from(spare > 0 && d.len() > cap);
                spare -= extra;
                d.truncate(cap + extra);
            }
        }
        for ((_, tokens), draft) in decodes.iter_mut().zip(drafts) {
            tokens.extend(draft);
        }
    }

    /// Chooses request `i`'s tokens after a step that evaluated its pending token followed by
    /// `draft` (`logits`: one row per evaluated token, or the last row without a draft;
    /// `base`: tokens cached before the step). Each draft token is checked with the
    /// single-sequence loop's rule; the first one the model does not choose ends the check
    /// (the model's choice replaces it), and the cache is cut back to the tokens actually
    /// generated. `Some` when the request ends.
    fn verify(&mut self, i: usize, logits: &[f32], draft: &[u32], base: usize) -> Option<End> {
        let a = &mut self.active[i];
        a.pending = None;
        a.decode_passes += 1;
        a.draft_tokens += draft.len();
        let n_ctx = self.session.n_ctx();
        let n_vocab = logits.len() / (draft.len() + 1);
        let mut accepted = 0;
        let mut end = None;
        for j in 0..=draft.len() {
            // Row j follows the pending token and the first j draft tokens.
            let evaluated = base + 1 + j;
            let row = &logits[j * n_vocab..(j + 1) * n_vocab];
            let history = &self.session.tokens(a.seq)[..evaluated];
            match sample_next(a, history, n_ctx, row, draft.get(j).copied(), &self.metrics) {
                Next::End(e) => {
                    end = Some(e);
                    break;
                }
                // Already evaluated: the next row chooses the token after it.
                Next::Accepted => accepted += 1,
                Next::Pending => break,
            }
        }
        let a = &mut self.active[i];
        a.draft_accepted += accepted;
        if !draft.is_empty() {
            a.draft_len = if accepted == draft.len() {
                (a.draft_len * 2).min(self.speculate.max_draft)
            } else {
                accepted + 1
            };
            self.metrics.drafts(draft.len(), accepted);
        }
        // Keep the pending token and the accepted draft tokens; drop what was rejected.
        self.session.truncate(a.seq, base + 1 + accepted);
        end
    }

    /// Ends request `i`: flushes its text, sends its last event, frees its sequence (whose
    /// cached tokens stay for prefix reuse).
    /// Callers retire in descending index order: `active` keeps the order of admission (the
    /// prefill pieces go to the oldest request first), so later indices shift down.
    fn retire(&mut self, i: usize, end: End) {
        let mut a = self.active.remove(i);
        self.clock += 1;
        self.last_used[a.seq] = self.clock;
        let now = Instant::now();
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
        // Counted before the last event goes out, so a client that reads the metrics right
        // after its answer sees itself counted (and the sequence free).
        match end {
            End::Failed(msg) => {
                self.metrics.ended(false, true);
                self.metrics.set_gauges(self.queue.len(), self.active.len());
                a.sink.send(Event::Failed(msg));
            }
            End::Cancelled => {
                self.metrics.ended(true, false);
                self.metrics.set_gauges(self.queue.len(), self.active.len());
            }
            End::Stop(stop) => {
                let mut tail = String::new();
                if !matches!(stop, StopReason::StopString(_)) {
                    let (out, hit) = a.stops.push(&a.decoder.finish());
                    tail.push_str(&out);
                    if hit.is_none() {
                        tail.push_str(&a.stops.finish());
                    }
                }
                a.text.push_str(&tail);
                let first = a.first_token.unwrap_or(now);
                let summary = Summary {
                    stop,
                    tail,
                    text: std::mem::take(&mut a.text),
                    prompt_tokens: a.prompt.len(),
                    cached_tokens: a.cached,
                    generated_tokens: a.generated.len(),
                    stop_logprob: a.stop_logprob,
                    stop_top: std::mem::take(&mut a.stop_top),
                    prompt_logprobs: a.prompt_logprobs.take(),
                    decode_passes: a.decode_passes,
                    draft_tokens: a.draft_tokens,
                    draft_accepted: a.draft_accepted,
                    queue_ms: ms(a.admitted - a.submitted),
                    prefill_ms: ms(first - a.admitted),
                    decode_ms: ms(now - first),
                };
                self.metrics.ended(false, false);
                self.metrics.set_gauges(self.queue.len(), self.active.len());
                a.sink.send(Event::Done(summary));
            }
        }
    }
}

/// What [`sample_next`] did with the token it chose.
enum Next {
    /// The request ends.
    End(End),
    /// The token is the draft token, already evaluated after `history`.
    Accepted,
    /// The token is to be evaluated next step ([`Active::pending`]).
    Pending,
}

/// Chooses request `a`'s next token from `logits`, the model's scores after `history` (the
/// tokens evaluated before it), and streams it; `draft` is the token already evaluated at this
/// position, accepted when the sampler's choice equals it ([`speculate::choose`]). The stop
/// conditions are checked on every token whether drafted or not.
fn sample_next(
    a: &mut Active<'_>,
    history: &[u32],
    n_ctx: usize,
    logits: &[f32],
    draft: Option<u32>,
    metrics: &Metrics,
) -> Next {
    let remaining = a.max_tokens - a.generated.len();
    let allowed = a.filter.as_mut().and_then(|f| f.allowed(logits.len(), remaining));
    let Some((tok, accepted)) = speculate::choose(&mut a.sampler, logits, history, allowed.as_deref(), draft) else {
        return Next::End(End::Stop(StopReason::NoCandidates));
    };
    a.generated.push(tok);
    metrics.generated(1);
    let scores = crate::model::LogSoftmax::of(logits);
    let (logprob, top) = (scores.at(tok), scores.top(a.top_logprobs));
    if a.stop_tokens.contains(&tok) {
        a.stop_logprob = Some(logprob);
        a.stop_top = top;
        return Next::End(End::Stop(StopReason::StopToken(tok)));
    }
    let (text, hit) = a.stops.push(&a.decoder.push(tok));
    a.text.push_str(&text);
    let event = TokenEvent {
        id: tok,
        text,
        logprob,
        top,
    };
    if !a.sink.send(Event::Token(event)) {
        return Next::End(End::Cancelled);
    }
    if let Some(s) = hit {
        return Next::End(End::Stop(StopReason::StopString(s)));
    }
    if let Some(f) = a.filter.as_mut() {
        f.advance(tok);
        if f.is_done() {
            return Next::End(End::Stop(StopReason::Complete));
        }
    }
    if a.generated.len() >= a.max_tokens {
        return Next::End(End::Stop(StopReason::MaxTokens));
    }
    if history.len() >= n_ctx {
        return Next::End(End::Stop(StopReason::ContextFull));
    }
    if accepted {
        Next::Accepted
    } else {
        a.pending = Some(tok);
        Next::Pending
    }
}
