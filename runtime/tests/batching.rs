//! The continuous-batching scheduler on stories260K: requests served together give exactly
//! what each gets alone through `generate`, cached prefixes are reused, clients that leave
//! free their sequence, the queue is bounded, bad requests are refused, shutdown drains;
//! speculative decoding inside the scheduler changes no output (greedy, seeded sampling,
//! constrained, stop strings, full contexts, drafts cut by the step budget) and rolls the
//! KV cache back correctly.

use edgeact_runtime::batching::{
    Event, EventSink, Handle, MetricsSnapshot, Request, Scheduler, SchedulerOptions, SubmitError, Summary, TokenFilter,
};
use edgeact_runtime::generate::{generate, GenerateOptions, StopReason};
use edgeact_runtime::gguf::GgufFile;
use edgeact_runtime::model::{LlamaModel, Logits, MultiSession, SeqChunk, Session, SessionOptions};
use edgeact_runtime::sampler::{Sampler, SamplerConfig};
use edgeact_runtime::speculate::SpeculateConfig;
use edgeact_runtime::tokenizer::{StreamDecoder, Tokenizer};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

struct Fixture {
    model: Arc<LlamaModel>,
    tok: Arc<Tokenizer>,
}

fn fixture() -> Fixture {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/models/stories260K/stories260K-f32-v3.gguf"
    );
    let file = Arc::new(GgufFile::open(path).unwrap());
    Fixture {
        tok: Arc::new(Tokenizer::from_gguf(&file).unwrap()),
        model: Arc::new(LlamaModel::load(file).unwrap()),
    }
}

fn opts() -> SessionOptions {
    SessionOptions {
        n_ctx: 256,
        threads: 2,
        ..Default::default()
    }
}

fn start(f: &Fixture, parallel: usize, queue: usize) -> Scheduler {
    let ms = MultiSession::new(f.model.clone(), opts(), parallel).unwrap();
    let o = SchedulerOptions {
        queue_capacity: queue,
        ..Default::default()
    };
    Scheduler::start(ms, f.tok.clone(), o).unwrap()
}

fn request(f: &Fixture, text: &str, max_tokens: usize, sampler: SamplerConfig) -> Request {
    Request {
        prompt: f.tok.encode(text, true, false),
        sampler,
        max_tokens,
        stop_tokens: f.tok.eos_id().into_iter().collect(),
        stop_strings: vec![],
        filter: None,
        prompt_logprobs: false,
        top_logprobs: 0,
    }
}

/// Submits and collects: the token ids, the streamed text and the summary.
fn run(h: &Handle, r: Request) -> (Vec<u32>, String, Summary) {
    let (tx, rx) = mpsc::channel();
    h.submit(r, Box::new(tx)).unwrap();
    collect(&rx)
}

fn collect(rx: &mpsc::Receiver<Event>) -> (Vec<u32>, String, Summary) {
    let (mut ids, mut text) = (Vec::new(), String::new());
    loop {
        match rx.recv_timeout(Duration::from_secs(60)).expect("an event") {
            Event::Token(t) => {
                ids.push(t.id);
                assert!(t.logprob <= 0.0 && t.logprob.is_finite(), "logprob {}", t.logprob);
                text.push_str(&t.text);
            }
            Event::Done(s) => {
                text.push_str(&s.tail);
                assert_eq!(text, s.text, "streamed pieces and the summary text agree");
                return (ids, text, s);
            }
            Event::Failed(e) => panic!("request failed: {e}"),
        }
    }
}

/// The same request through the single-sequence `generate` loop.
fn alone(f: &Fixture, text: &str, max_tokens: usize, sampler: SamplerConfig, stops: &[&str]) -> (Vec<u32>, String) {
    let mut s = Session::new(f.model.clone(), opts()).unwrap();
    let mut sampler = Sampler::new(sampler);
    let mut dec = StreamDecoder::new(&f.tok);
    let g = generate(
        &mut s,
        &mut sampler,
        &mut dec,
        &f.tok.encode(text, true, false),
        &GenerateOptions {
            max_tokens,
            stop_tokens: f.tok.eos_id().into_iter().collect(),
            stop_strings: stops.iter().map(|s| s.to_string()).collect(),
        },
        &mut |_| {},
    )
    .unwrap();
    let mut ids = g.tokens;
    if matches!(g.stop, StopReason::StopToken(_)) {
        ids.pop();
    }
    (ids, g.text)
}

const PROMPTS: [&str; 4] = [
    "Once upon a time",
    "Lily and Ben",
    "The cat sat",
    "One day, a little bird",
];

fn sampled(seed: u64) -> SamplerConfig {
    SamplerConfig {
        temperature: 0.8,
        seed,
        ..Default::default()
    }
}

#[test]
fn concurrent_requests_equal_their_solo_runs() {
    let f = fixture();
    let sched = start(&f, 3, 16);
    let h = sched.handle();
    // Four requests on three sequences: one waits, all run interleaved.
    let threads: Vec<_> = PROMPTS
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let h = h.clone();
            let r = request(
                &f,
                p,
                40 + 10 * i,
                if i % 2 == 0 {
                    SamplerConfig::greedy()
                } else {
                    sampled(i as u64)
                },
            );
            std::thread::spawn(move || run(&h, r))
        })
        .collect();
    for (i, t) in threads.into_iter().enumerate() {
        let (ids, text, summary) = t.join().unwrap();
        let cfg = if i % 2 == 0 {
            SamplerConfig::greedy()
        } else {
            sampled(i as u64)
        };
        let (want_ids, want_text) = alone(&f, PROMPTS[i], 40 + 10 * i, cfg, &[]);
        assert_eq!(ids, want_ids, "request {i} tokens");
        assert_eq!(text, want_text, "request {i} text");
        assert_eq!(
            summary.generated_tokens,
            ids.len() + usize::from(matches!(summary.stop, StopReason::StopToken(_)))
        );
    }
    let m = h.metrics();
    assert_eq!((m.requests, m.finished, m.busy_sequences, m.queue_depth), (4, 4, 0, 0));
    assert!(m.steps > 0 && m.generated_tokens > 0);
    sched.shutdown();
}

#[test]
fn stop_strings_end_generation_like_generate() {
    let f = fixture();
    let sched = start(&f, 2, 4);
    let (_, text, s) = run(
        &sched.handle(),
        Request {
            stop_strings: vec![" the".into()],
            ..request(&f, PROMPTS[0], 100, SamplerConfig::greedy())
        },
    );
    let (_, want) = alone(&f, PROMPTS[0], 100, SamplerConfig::greedy(), &[" the"]);
    assert_eq!(s.stop, StopReason::StopString(" the".into()));
    assert_eq!(text, want);
    assert!(!text.contains(" the"));
}

#[test]
fn a_resent_history_reuses_the_cached_prefix() {
    let f = fixture();
    let sched = start(&f, 2, 4);
    let h = sched.handle();
    let r1 = request(&f, PROMPTS[0], 30, SamplerConfig::greedy());
    let mut next = r1.prompt.clone();
    let (first, _, s1) = run(&h, r1);
    assert_eq!(s1.cached_tokens, 0);
    // The next turn: the old prompt, the reply, and more (as agent clients send).
    next.extend(&first);
    next.extend(f.tok.encode(" And then", false, false));
    let r = Request {
        prompt: next.clone(),
        ..request(&f, "", 20, SamplerConfig::greedy())
    };
    let n_prompt = r.prompt.len();
    let (ids, _, s2) = run(&h, r);
    // Everything but the reply's last token (sampled, never evaluated) comes from the cache.
    assert_eq!(s2.cached_tokens, s1.prompt_tokens + first.len() - 1);
    assert_eq!(s2.prompt_tokens, n_prompt);
    let mut solo = Session::new(f.model.clone(), opts()).unwrap();
    let mut logits = solo.eval(&next).unwrap();
    let mut want = Vec::new();
    for _ in 0..20 {
        let t = Sampler::new(SamplerConfig::greedy()).sample(&logits, &[]).unwrap();
        if Some(t) == f.tok.eos_id() {
            break;
        }
        want.push(t);
        logits = solo.eval(&[t]).unwrap();
    }
    assert_eq!(ids, want, "reusing the cache changes nothing");
    let m = h.metrics();
    assert_eq!(m.prefix_hits, 1);
    assert_eq!(m.cached_tokens, s2.cached_tokens as u64);
    assert_eq!(
        m.prefilled_tokens,
        (s1.prompt_tokens + n_prompt - s2.cached_tokens) as u64
    );
}

/// Accepts `n` tokens, then reports the client gone.
struct LeavesAfter(usize, mpsc::Sender<()>);
impl EventSink for LeavesAfter {
    fn send(&mut self, e: Event) -> bool {
        if let Event::Token(_) = e {
            if self.0 == 0 {
                let _ = self.1.send(());
                return false;
            }
            self.0 -= 1;
        }
        true
    }
}

fn wait_until(h: &Handle, what: &str, cond: impl Fn(&edgeact_runtime::batching::MetricsSnapshot) -> bool) {
    let t0 = Instant::now();
    while !cond(&h.metrics()) {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what}: {:?}",
            h.metrics()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_client_that_leaves_frees_its_sequence() {
    let f = fixture();
    let sched = start(&f, 1, 4);
    let h = sched.handle();
    let (tx, rx) = mpsc::channel();
    h.submit(
        request(&f, PROMPTS[1], 200, SamplerConfig::greedy()),
        Box::new(LeavesAfter(3, tx)),
    )
    .unwrap();
    rx.recv_timeout(Duration::from_secs(30)).unwrap();
    wait_until(&h, "the cancellation", |m| m.cancelled == 1 && m.busy_sequences == 0);
    assert_eq!(h.metrics().generated_tokens, 4);
    // The one sequence serves the next request.
    let (ids, _, _) = run(&h, request(&f, PROMPTS[2], 10, SamplerConfig::greedy()));
    assert_eq!(ids, alone(&f, PROMPTS[2], 10, SamplerConfig::greedy(), &[]).0);
}

/// Blocks the loop inside its first `send` until released.
struct Gate(mpsc::Receiver<()>, mpsc::Sender<Event>);
impl EventSink for Gate {
    fn send(&mut self, e: Event) -> bool {
        let _ = self.0.recv();
        self.1.send(e).is_ok()
    }
}

/// A one-sequence scheduler with a queue of one, running a 5-token request whose loop is held
/// inside each token event until `open` sends (its events arrive on the receiver).
fn one_gated_request(f: &Fixture) -> (Scheduler, Handle, mpsc::Sender<()>, mpsc::Receiver<Event>) {
    let sched = start(f, 1, 1);
    let h = sched.handle();
    let (open, gate) = mpsc::channel();
    let (tx1, rx1) = mpsc::channel();
    h.submit(
        request(f, PROMPTS[0], 5, SamplerConfig::greedy()),
        Box::new(Gate(gate, tx1)),
    )
    .unwrap();
    wait_until(&h, "the first request to run", |m| m.busy_sequences == 1);
    (sched, h, open, rx1)
}

#[test]
fn a_full_queue_refuses_and_shutdown_drains() {
    let f = fixture();
    let (sched, h, open, rx1) = one_gated_request(&f);
    let (tx2, rx2) = mpsc::channel();
    h.submit(request(&f, PROMPTS[1], 5, SamplerConfig::greedy()), Box::new(tx2))
        .unwrap();
    let (tx3, _rx3) = mpsc::channel();
    let refused = h.submit(request(&f, PROMPTS[2], 5, SamplerConfig::greedy()), Box::new(tx3));
    assert_eq!(refused, Err(SubmitError::QueueFull { capacity: 1 }));
    assert_eq!(h.metrics().rejected, 1);
    // Shutdown: no new requests, but the running and the queued one finish.
    h.shutdown();
    let (tx4, _rx4) = mpsc::channel();
    assert_eq!(
        h.submit(request(&f, PROMPTS[3], 5, SamplerConfig::greedy()), Box::new(tx4)),
        Err(SubmitError::ShuttingDown)
    );
    for _ in 0..10 {
        let _ = open.send(());
    }
    assert_eq!(collect(&rx1).2.generated_tokens, 5);
    assert_eq!(collect(&rx2).2.generated_tokens, 5);
    sched.shutdown();
}

/// A client that can leave while its request is queued.
struct Leaves(Arc<std::sync::atomic::AtomicBool>);
impl EventSink for Leaves {
    fn send(&mut self, _: Event) -> bool {
        !self.is_closed()
    }
    fn is_closed(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[test]
fn a_queued_request_whose_client_left_frees_its_queue_place_at_once() {
    let f = fixture();
    let (sched, h, open, rx1) = one_gated_request(&f);
    // The loop is held inside the first request's first token; the second request queues and
    // its client leaves.
    let gone = Arc::new(std::sync::atomic::AtomicBool::new(false));
    h.submit(
        request(&f, PROMPTS[1], 5, SamplerConfig::greedy()),
        Box::new(Leaves(gone.clone())),
    )
    .unwrap();
    gone.store(true, std::sync::atomic::Ordering::SeqCst);
    // One token later (the first request still running), its place is free again.
    open.send(()).unwrap();
    wait_until(&h, "the abandoned request to be dropped", |m| {
        m.cancelled == 1 && m.queue_depth == 0
    });
    assert_eq!(h.metrics().busy_sequences, 1);
    let (tx3, rx3) = mpsc::channel();
    h.submit(request(&f, PROMPTS[2], 5, SamplerConfig::greedy()), Box::new(tx3))
        .expect("a free queue place");
    for _ in 0..10 {
        let _ = open.send(());
    }
    assert_eq!(collect(&rx1).2.generated_tokens, 5);
    let (ids, _, _) = collect(&rx3);
    assert_eq!(ids, alone(&f, PROMPTS[2], 5, SamplerConfig::greedy(), &[]).0);
    sched.shutdown();
}

#[test]
fn more_sequences_than_a_step_holds_are_refused_at_start() {
    let f = fixture();
    let small = SessionOptions {
        batch_size: 4,
        ..opts()
    };
    let ms = MultiSession::new(f.model.clone(), small, 8).unwrap();
    let err = Scheduler::start(ms, f.tok.clone(), SchedulerOptions::default())
        .err()
        .expect("refused");
    assert!(
        err.to_string()
            .contains("8 sequences decode together but a step holds 4 tokens"),
        "{err}"
    );
}

#[test]
fn bad_requests_are_refused_with_a_reason() {
    let f = fixture();
    let sched = start(&f, 1, 4);
    let h = sched.handle();
    let submit = |r: Request| {
        let (tx, _rx) = mpsc::channel();
        match h.submit(r, Box::new(tx)) {
            Err(SubmitError::Invalid(m)) => m,
            other => panic!("expected a refusal, got {other:?}"),
        }
    };
    let base = || request(&f, "Once", 5, SamplerConfig::greedy());
    assert!(submit(Request {
        prompt: vec![],
        ..base()
    })
    .contains("empty"));
    assert!(submit(Request {
        prompt: vec![1; 256],
        ..base()
    })
    .contains("context"));
    assert!(submit(Request {
        prompt: vec![1, 100_000],
        ..base()
    })
    .contains("vocabulary"));
    assert!(submit(Request {
        max_tokens: 0,
        ..base()
    })
    .contains("at least one"));
    let nan = SamplerConfig {
        temperature: f32::NAN,
        ..SamplerConfig::greedy()
    };
    assert!(submit(Request { sampler: nan, ..base() }).contains("NaN"));
    assert!(submit(Request {
        top_logprobs: 21,
        ..base()
    })
    .contains("at most 20 alternatives"));
    // A prompt that fills the context but one position: two tokens (the second is sampled
    // from the last position's logits and never evaluated), then "context full".
    let (ids, _, s) = run(
        &h,
        Request {
            prompt: vec![1; 255],
            ..request(&f, "", 50, SamplerConfig::greedy())
        },
    );
    assert_eq!((ids.len(), s.stop), (2, StopReason::ContextFull));
}

// ---- Speculative decoding in the scheduler (issue #16 item 4, #13 item 6) ----

/// Prompts whose continuations copy from them (stories260K repeats itself), so drafts are
/// proposed and accepted, and different lengths for a ragged batch.
const COPYING: [&str; 4] = [
    "Once upon a time there was a cat. The cat was big. Once upon a time there was a cat. The",
    "Lily and Ben went to the park. Lily and Ben",
    "The dog ran. The dog ran. The dog",
    "One day, a little bird sat on a tree. One day, a little bird",
];

fn speculating(max_draft: usize, budget: usize) -> SchedulerOptions {
    SchedulerOptions {
        speculate: SpeculateConfig {
            max_draft,
            min_ngram: 1,
            ..SpeculateConfig::default()
        },
        draft_budget: budget,
        ..Default::default()
    }
}

/// A request's outcome: ids, streamed text, stop, tokens counted, and the filter's log.
type Outcome = (Vec<u32>, String, StopReason, usize, Vec<String>);

/// The calls a filter received, in order.
type CallLog = Arc<Mutex<Vec<String>>>;

/// Submits every request at once (in order, so admission is the same on every run) to a
/// scheduler with `parallel` sequences and `batch_size`-token steps; their outcomes and the
/// metrics after.
fn serve_all(
    f: &Fixture,
    parallel: usize,
    batch_size: usize,
    opts: SchedulerOptions,
    requests: Vec<(Request, Option<CallLog>)>,
) -> (Vec<Outcome>, Vec<Summary>, MetricsSnapshot) {
    let ms = MultiSession::new(f.model.clone(), SessionOptions { batch_size, ..opts_() }, parallel).unwrap();
    let sched = Scheduler::start(
        ms,
        f.tok.clone(),
        SchedulerOptions {
            queue_capacity: 16,
            ..opts
        },
    )
    .unwrap();
    let h = sched.handle();
    let mut waiting = Vec::new();
    for (r, log) in requests {
        let (tx, rx) = mpsc::channel();
        h.submit(r, Box::new(tx)).unwrap();
        waiting.push((rx, log));
    }
    let mut outcomes = Vec::new();
    let mut summaries = Vec::new();
    for (rx, log) in waiting {
        let (ids, text, s) = collect(&rx);
        let log = log.map(|l| l.lock().unwrap().clone()).unwrap_or_default();
        outcomes.push((ids, text, s.stop.clone(), s.generated_tokens, log));
        summaries.push(s);
    }
    let m = h.metrics();
    sched.shutdown();
    (outcomes, summaries, m)
}

fn opts_() -> SessionOptions {
    opts()
}

/// A stateful constraint that records every call: bans the last token chosen and every id
/// congruent to the number of tokens so far (mod 7), and is complete after a full stop.
struct Picky {
    n: usize,
    last: Option<u32>,
    done: bool,
    stop: u32,
    log: CallLog,
}

impl TokenFilter for Picky {
    fn allowed(&mut self, n_vocab: usize, remaining: usize) -> Option<Vec<u32>> {
        self.log.lock().unwrap().push(format!("allowed {remaining}"));
        let n = self.n;
        Some(
            (0..n_vocab as u32)
                .filter(|&t| Some(t) != self.last && t as usize % 7 != n % 7)
                .collect(),
        )
    }
    fn advance(&mut self, token: u32) {
        self.log.lock().unwrap().push(format!("advance {token}"));
        self.n += 1;
        self.last = Some(token);
        self.done |= token == self.stop;
    }
    fn is_done(&self) -> bool {
        self.done
    }
}

/// The ragged mix: greedy requests of different lengths, one with a stop string, one
/// constrained by [`Picky`], one that must stop at its context.
fn mixed_requests(f: &Fixture, sampler: impl Fn(usize) -> SamplerConfig) -> Vec<(Request, Option<CallLog>)> {
    let mut out = Vec::new();
    for (i, p) in COPYING.iter().enumerate() {
        out.push((request(f, p, 30 + 17 * i, sampler(i)), None));
    }
    out.push((
        Request {
            stop_strings: vec!["park".into()],
            ..request(f, COPYING[1], 80, sampler(4))
        },
        None,
    ));
    let log = Arc::new(Mutex::new(Vec::new()));
    let stop = *f.tok.encode(".", false, false).last().unwrap();
    out.push((
        Request {
            filter: Some(Box::new(Picky {
                n: 0,
                last: None,
                done: false,
                stop,
                log: Arc::clone(&log),
            })),
            ..request(f, COPYING[2], 60, sampler(5))
        },
        Some(log),
    ));
    // 230 prompt tokens in a 256-token context: ends with "context full" after 26 tokens.
    let mut long = f.tok.encode(COPYING[0], true, false);
    while long.len() < 230 {
        long.extend_from_within(1..long.len().min(231 - long.len()));
    }
    long.truncate(230);
    out.push((
        Request {
            prompt: long,
            ..request(f, "", 100, sampler(6))
        },
        None,
    ));
    out
}

fn check_speculation_is_lossless(sampler: impl Fn(usize) -> SamplerConfig + Copy, greedy: bool) {
    let f = fixture();
    // Several draft sizes and budgets: whole drafts, drafts cut by the step budget, and a
    // batch so small that drafts only get the rows the decodes and prefill leave.
    for (max_draft, budget, batch) in [(8, 64, 512), (8, 3, 512), (4, 24, 5)] {
        let (plain, _, m0) = serve_all(&f, 3, batch, SchedulerOptions::default(), mixed_requests(&f, sampler));
        assert_eq!((m0.draft_tokens, m0.draft_accepted), (0, 0));
        assert!(plain.iter().any(|o| o.2 == StopReason::ContextFull), "{plain:?}");
        if greedy {
            assert!(plain.iter().any(|o| o.2 == StopReason::StopString("park".into())));
        }
        assert!(!plain[5].4.is_empty(), "the filter was consulted");
        let (spec, summaries, m) = serve_all(
            &f,
            3,
            batch,
            speculating(max_draft, budget),
            mixed_requests(&f, sampler),
        );
        for (i, (p, s)) in plain.iter().zip(&spec).enumerate() {
            assert_eq!(
                p, s,
                "request {i}, max_draft {max_draft}, budget {budget}, batch {batch}"
            );
        }
        assert!(m.draft_accepted > 0, "no draft was accepted: {m:?}");
        assert!(m.draft_tokens >= m.draft_accepted);
        assert!(
            m.steps < m0.steps,
            "speculation saved no step: {} vs {} (max_draft {max_draft}, budget {budget}, batch {batch})",
            m.steps,
            m0.steps
        );
        assert_eq!(m.generated_tokens, m0.generated_tokens);
        let verified: usize = summaries.iter().map(|s| s.draft_tokens).sum();
        let accepted: usize = summaries.iter().map(|s| s.draft_accepted).sum();
        assert_eq!((verified as u64, accepted as u64), (m.draft_tokens, m.draft_accepted));
        for s in &summaries {
            // Every decode pass yields at least one token; accepted drafts add theirs.
            assert!(s.decode_passes + s.draft_accepted <= s.generated_tokens, "{s:?}");
        }
        let text = m.to_prometheus();
        assert!(text.contains(&format!("edgeact_draft_tokens_total {}\n", m.draft_tokens)));
        assert!(text.contains(&format!("edgeact_draft_tokens_accepted_total {}\n", m.draft_accepted)));
    }
}

#[test]
fn greedy_speculation_in_a_ragged_batch_changes_no_output() {
    check_speculation_is_lossless(|_| SamplerConfig::greedy(), true);
}

#[test]
fn seeded_sampling_with_speculation_draws_the_same_tokens() {
    // The acceptance rule draws exactly as the plain loop does (one draw per token from the
    // request's own stream), so with the same logits a seeded request gives the same tokens.
    check_speculation_is_lossless(|i| sampled(100 + i as u64), false);
    // And the seed matters.
    let f = fixture();
    let one = |seed| {
        let (o, _, _) = serve_all(
            &f,
            1,
            512,
            speculating(8, 24),
            vec![(request(&f, COPYING[0], 60, sampled(seed)), None)],
        );
        o[0].0.clone()
    };
    assert_eq!(one(3), one(3));
    assert!((4..8).any(|s| one(s) != one(3)), "the seed changes nothing");
}

#[test]
fn a_sequence_rolled_back_continues_as_if_never_extended() {
    // The scheduler drops rejected draft positions with `MultiSession::truncate`: evaluating
    // after the cut must give what a sequence that never saw those tokens gives.
    let f = fixture();
    let prompt = f.tok.encode(COPYING[1], true, false);
    let mut ms = MultiSession::new(f.model.clone(), opts(), 2).unwrap();
    fn chunk(seq: usize, tokens: &[u32], logits: Logits) -> SeqChunk<'_> {
        SeqChunk { seq, tokens, logits }
    }
    ms.step(&[chunk(0, &prompt, Logits::None), chunk(1, &prompt[..4], Logits::None)])
        .unwrap();
    // A "draft" of four tokens, all rows scored, then cut back to one.
    let draft = [prompt[1], prompt[2], prompt[3], prompt[4]];
    let rows = ms.step(&[chunk(0, &draft, Logits::All)]).unwrap();
    let n_vocab = rows[0].len() / draft.len();
    ms.truncate(0, prompt.len() + 1);
    assert_eq!(ms.tokens(0).len(), prompt.len() + 1);
    let after = ms
        .step(&[
            chunk(0, &[prompt[5]], Logits::Last),
            chunk(1, &prompt[4..6], Logits::Last),
        ])
        .unwrap();
    let mut solo = Session::new(f.model.clone(), opts()).unwrap();
    let first = solo.eval(&[prompt.as_slice(), &draft[..1]].concat()).unwrap();
    assert_eq!(&rows[0][..n_vocab], first.as_slice(), "the kept row");
    let want = solo.eval(&[prompt[5]]).unwrap();
    assert_eq!(after[0], want, "logits after the rollback");
    // The rolled-back positions were overwritten: sequence 1 is unaffected throughout.
    let mut other = Session::new(f.model.clone(), opts()).unwrap();
    assert_eq!(after[1], other.eval(&prompt[..6]).unwrap());
}

/// Events of several requests in the one order the scheduler sent them, tagged by request.
struct Tagged(usize, mpsc::Sender<(usize, Event)>);

impl EventSink for Tagged {
    fn send(&mut self, event: Event) -> bool {
        self.1.send((self.0, event)).is_ok()
    }
}

/// Prompt pieces go to the oldest request first, also after a request ahead of them ended:
/// retiring one moved the newest request into its place, which then took every step's prefill
/// budget while the older one waited.
#[test]
fn an_older_prompt_is_not_overtaken_after_a_request_ends() {
    let f = fixture();
    let ms = MultiSession::new(f.model.clone(), opts(), 3).unwrap();
    let o = SchedulerOptions {
        queue_capacity: 4,
        prefill_chunk: 8,
        ..Default::default()
    };
    let sched = Scheduler::start(ms, f.tok.clone(), o).unwrap();
    let h = sched.handle();
    let long = "Once upon a time there was a little girl named Lily. She liked to play outside. ".repeat(3);
    let (tx, rx) = mpsc::channel();
    // C: a short prompt and 2 tokens, so it ends while A is still prefilling; A, then D: long.
    for (tag, text, max_tokens) in [(0, "Once", 2), (1, long.as_str(), 4), (2, long.as_str(), 4)] {
        let r = request(&f, text, max_tokens, SamplerConfig::greedy());
        h.submit(r, Box::new(Tagged(tag, tx.clone()))).unwrap();
    }
    drop(tx);
    let mut first_tokens = Vec::new();
    for (tag, e) in rx.iter() {
        if matches!(e, Event::Token(_)) && !first_tokens.contains(&tag) {
            first_tokens.push(tag);
        }
    }
    sched.shutdown();
    assert_eq!(first_tokens, [0, 1, 2], "first tokens in this order of requests");
}

/// Every generated token is the prompt's next token, a decode pass's own choice, or an accepted
/// draft token, also when a stop string ends the request on a drafted token (that token is the
/// pass's own choice, not also an accepted draft).
#[test]
fn every_generated_token_is_a_pass_or_an_accepted_draft() {
    let f = fixture();
    for stop in ["park", "went", "Ben", "."] {
        let mut r = request(&f, COPYING[1], 40, SamplerConfig::greedy());
        r.stop_strings = vec![stop.to_string()];
        let (_, summaries, _) = serve_all(&f, 1, 64, speculating(8, 64), vec![(r, None)]);
        let s = &summaries[0];
        assert_eq!(
            s.generated_tokens,
            s.decode_passes + s.draft_accepted + 1,
            "stop string {stop:?}: {s:?}"
        );
    }
}
