//! The continuous-batching scheduler on stories260K: requests served together give exactly
//! what each gets alone through `generate`, cached prefixes are reused, clients that leave
//! free their sequence, the queue is bounded, bad requests are refused, shutdown drains.

use edgeact_runtime::batching::{Event, EventSink, Handle, Request, Scheduler, SchedulerOptions, SubmitError, Summary};
use edgeact_runtime::generate::{generate, GenerateOptions, StopReason};
use edgeact_runtime::gguf::GgufFile;
use edgeact_runtime::model::{LlamaModel, MultiSession, Session, SessionOptions};
use edgeact_runtime::sampler::{Sampler, SamplerConfig};
use edgeact_runtime::tokenizer::{StreamDecoder, Tokenizer};
use std::sync::{mpsc, Arc};
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

#[test]
fn a_full_queue_refuses_and_shutdown_drains() {
    let f = fixture();
    let sched = start(&f, 1, 1);
    let h = sched.handle();
    let (open, gate) = mpsc::channel();
    let (tx1, rx1) = mpsc::channel();
    h.submit(
        request(&f, PROMPTS[0], 5, SamplerConfig::greedy()),
        Box::new(Gate(gate, tx1)),
    )
    .unwrap();
    wait_until(&h, "the first request to run", |m| m.busy_sequences == 1);
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
