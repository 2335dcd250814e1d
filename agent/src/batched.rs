//! [`BatchedModel`]: the [`LanguageModel`] over one sequence slot of a shared continuous-batching
//! engine ([`edgeact_runtime::batching::Scheduler`]), so many agents (e.g. `eval --jobs N`) decode
//! together in one forward pass per step.
//!
//! The prompt is built exactly as [`EngineModel`](super::EngineModel) builds it
//! ([`build_prompt`]: render, tokenize, left-truncate), and generation follows the same rules:
//! end-of-generation ends the reply (not part of the text), so do the token limit, a full
//! context and, when constrained, the completed action ([`Constraint`] through a
//! [`TokenFilter`]). The scheduler reuses the longest cached prefix of a free sequence by
//! itself, so turns of one agent (and the shared instruction prompt of all agents) are not
//! prefilled again. With greedy decoding the replies equal [`EngineModel`](super::EngineModel)'s.
//! Speculative decoding is the engine's choice ([`SchedulerOptions::speculate`]
//! (edgeact_runtime::batching::SchedulerOptions)); it changes no greedy reply, and
//! [`EngineConfig::speculate`] is not consulted here.
//!
//! Sampling: every call starts a fresh random stream seeded from the task seed (set by
//! [`BatchedModel::reseed`]) and the call's number within the task, since a request carries
//! its own sampler; [`EngineModel`](super::EngineModel) continues one stream across a task's
//! calls instead, so sampled (not greedy) replies of the two differ.

use super::constrain::{Constraint, MaskCache};
use super::engine::{build_prompt, check_config, EngineConfig, PromptTokens};
use super::react::{LanguageModel, ModelReply, ModelRequest, TurnStats};
use edgeact_runtime::batching::{Event, Handle, Request, Summary, TokenFilter};
use edgeact_runtime::generate::StopReason;
use edgeact_runtime::tokenizer::Tokenizer;
use std::sync::{mpsc, Arc};

/// Receives generated text pieces as they are decoded.
type TextSink = Box<dyn FnMut(&str) + Send>;

/// A [`LanguageModel`] whose calls are requests to a shared batching engine.
pub struct BatchedModel {
    handle: Handle,
    tokenizer: Arc<Tokenizer>,
    config: EngineConfig,
    /// Calls since the last [`BatchedModel::reseed`] (each gets its own sampling seed).
    calls: u64,
    on_text: Option<TextSink>,
}

/// [`Constraint`] as the scheduler's per-request [`TokenFilter`]: the same allowed sets as
/// [`EngineModel`](super::EngineModel) computes (end-of-generation ids once the reply may end).
pub struct ConstraintFilter {
    constraint: Constraint,
    tokenizer: Arc<Tokenizer>,
    masks: MaskCache,
}

impl ConstraintFilter {
    pub fn new(constraint: Constraint, tokenizer: Arc<Tokenizer>) -> ConstraintFilter {
        ConstraintFilter {
            constraint,
            tokenizer,
            masks: MaskCache::default(),
        }
    }
}

impl TokenFilter for ConstraintFilter {
    fn allowed(&mut self, n_vocab: usize, remaining: usize) -> Option<Vec<u32>> {
        let tk = &self.tokenizer;
        let ids = self.masks.allowed(
            &self.constraint,
            n_vocab,
            |id| tk.token_bytes(id),
            tk.eog_ids(),
            remaining,
        );
        Some(ids.to_vec())
    }

    fn advance(&mut self, token: u32) {
        self.constraint.advance(self.tokenizer.token_bytes(token));
    }

    fn is_done(&self) -> bool {
        self.constraint.is_done()
    }
}

/// The [`TurnStats::stop`] name of a scheduler stop reason (the names
/// [`EngineModel`](super::EngineModel) uses).
pub fn stop_name(stop: &StopReason) -> &'static str {
    match stop {
        StopReason::StopToken(_) => "eos",
        StopReason::StopString(_) => "stop_string",
        StopReason::MaxTokens => "max_tokens",
        StopReason::ContextFull => "context_full",
        StopReason::NoCandidates => "no_candidates",
        StopReason::Complete => "action_end",
        StopReason::Cancelled => "cancelled",
    }
}

impl BatchedModel {
    /// A model sending its calls to `handle`'s engine (whose sequences must hold a prompt and
    /// `config.max_new_tokens`).
    pub fn new(handle: Handle, tokenizer: Arc<Tokenizer>, config: EngineConfig) -> anyhow::Result<BatchedModel> {
        check_config(&config, handle.info().n_ctx)?;
        Ok(BatchedModel {
            handle,
            tokenizer,
            config,
            calls: 0,
            on_text: None,
        })
    }

    /// Streams generated text pieces to `f`.
    pub fn set_on_text(&mut self, f: impl FnMut(&str) + Send + 'static) {
        self.on_text = Some(Box::new(f));
    }

    /// Starts a new random stream (e.g. per task and seed).
    pub fn reseed(&mut self, seed: u64) {
        self.config.sampler.seed = seed;
        self.calls = 0;
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The sampling seed of the next call: the task seed for the first call, then mixed with
    /// the call number.
    fn call_seed(&self) -> u64 {
        let k = self.calls;
        if k == 0 {
            self.config.sampler.seed
        } else {
            self.config.sampler.seed ^ k.wrapping_mul(0xD1B5_4A32_D192_ED03).rotate_left(17)
        }
    }

    /// Submits `tokens` and waits for the end; the generated ids (end-of-generation excluded)
    /// and the scheduler's summary.
    fn generate(
        &mut self,
        tokens: Vec<u32>,
        filter: Option<Box<dyn TokenFilter>>,
    ) -> anyhow::Result<(Vec<u32>, Summary)> {
        let mut sampler = self.config.sampler.clone();
        sampler.seed = self.call_seed();
        self.calls += 1;
        let (tx, rx) = mpsc::channel();
        let request = Request {
            prompt: tokens,
            sampler,
            max_tokens: self.config.max_new_tokens,
            stop_tokens: self.tokenizer.eog_ids().to_vec(),
            stop_strings: Vec::new(),
            filter,
            prompt_logprobs: false,
            top_logprobs: 0,
        };
        self.handle
            .submit(request, Box::new(tx))
            .map_err(|e| anyhow::anyhow!("batching engine refused the request: {e}"))?;
        let mut ids = Vec::new();
        loop {
            match rx.recv() {
                Ok(Event::Token(t)) => {
                    ids.push(t.id);
                    if let Some(f) = self.on_text.as_mut() {
                        if !t.text.is_empty() {
                            f(&t.text);
                        }
                    }
                }
                Ok(Event::Done(summary)) => {
                    if let Some(f) = self.on_text.as_mut() {
                        if !summary.tail.is_empty() {
                            f(&summary.tail);
                        }
                    }
                    return Ok((ids, summary));
                }
                Ok(Event::Failed(msg)) => anyhow::bail!("batching engine: {msg}"),
                Err(_) => anyhow::bail!("batching engine stopped before the reply was complete"),
            }
        }
    }
}

impl LanguageModel for BatchedModel {
    fn reply(&mut self, request: &ModelRequest<'_>) -> anyhow::Result<ModelReply> {
        let n_ctx = self.handle.info().n_ctx;
        let PromptTokens { tokens, truncated } = build_prompt(&self.config, &self.tokenizer, n_ctx, request.messages)?;
        let n_prompt = tokens.len();
        let filter = self.config.constrained.then(|| {
            Box::new(ConstraintFilter::new(
                Constraint::new(request.protocol),
                Arc::clone(&self.tokenizer),
            )) as Box<dyn TokenFilter>
        });
        let (generated, summary) = self.generate(tokens, filter)?;
        Ok(ModelReply {
            // As EngineModel (and the server's detokenizer): the reply decoded on its own.
            text: self.tokenizer.decode(&generated),
            stats: TurnStats {
                prompt_tokens: n_prompt,
                prefilled_tokens: summary.prompt_tokens.saturating_sub(summary.cached_tokens),
                truncated_tokens: truncated,
                generated_tokens: generated.len(),
                prompt_ms: summary.prefill_ms,
                gen_ms: summary.decode_ms,
                stop: stop_name(&summary.stop).to_string(),
                // The engine steps that evaluated this reply's tokens, and its accepted drafts
                // (the batched engine has no jump-forward: nothing is forced).
                forward_passes: summary.decode_passes,
                draft_accepted: summary.draft_accepted,
                ..Default::default()
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::{db_initial_history, os_initial_history, Message};
    use crate::{EngineModel, Protocol};
    use edgeact_runtime::batching::{Scheduler, SchedulerOptions};
    use edgeact_runtime::gguf::GgufFile;
    use edgeact_runtime::model::{LlamaModel, MultiSession, Session, SessionOptions};
    use edgeact_runtime::speculate::SpeculateConfig;
    use std::path::PathBuf;

    fn load() -> (Arc<LlamaModel>, Arc<Tokenizer>) {
        let shared = std::env::var("EDGEACT_SHARED")
            .map(PathBuf::from)
            .unwrap_or_else(|_| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared")));
        let path = shared.join("models/stories260K/stories260K-f32-v3.gguf");
        let file = Arc::new(GgufFile::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())));
        let tok = Tokenizer::from_gguf(&file).unwrap();
        (Arc::new(LlamaModel::load(file).unwrap()), Arc::new(tok))
    }

    fn opts() -> SessionOptions {
        SessionOptions {
            n_ctx: 512,
            threads: 1,
            ..Default::default()
        }
    }

    fn config(constrained: bool, max_new: usize) -> EngineConfig {
        let mut c = EngineConfig::eval(0);
        c.sampler.temperature = 0.0;
        c.constrained = constrained;
        c.max_new_tokens = max_new;
        c
    }

    /// Two-turn conversations (the second turn extends the first): DB and OS, whose instruction
    /// prompts are left-truncated in a 512-token context, and a short story prompt.
    fn conversations() -> Vec<(Protocol, Vec<Vec<Message>>)> {
        let db = db_initial_history(
            "How many gold medals did Norway win?",
            "The name of this table is medals.",
        );
        let mut db2 = db.clone();
        db2.push(Message::agent("Action: Operation\n```sql\nSELECT * FROM medals\n```"));
        db2.push(Message::user("[('Norway', 3)]"));
        let os = os_initial_history("How many files are in /etc?");
        let mut os2 = os.clone();
        os2.push(Message::agent(
            "Think: count\n\nAct: bash\n\n```bash\nls /etc | wc -l\n```",
        ));
        os2.push(Message::user("The output of the OS:\n\n220"));
        let story = vec![Message::user(
            "Once upon a time there was a little girl named Lily. She",
        )];
        let mut story2 = story.clone();
        story2.push(Message::agent("liked to play in the park."));
        story2.push(Message::user("One day she saw a big dog."));
        vec![
            (Protocol::Db, vec![db, db2]),
            (Protocol::Os, vec![os, os2]),
            (Protocol::Db, vec![story, story2]),
        ]
    }

    fn engine_replies(m: &(Arc<LlamaModel>, Arc<Tokenizer>), cfg: &EngineConfig) -> Vec<Vec<ModelReply>> {
        conversations()
            .into_iter()
            .map(|(protocol, turns)| {
                let session = Session::new(Arc::clone(&m.0), opts()).unwrap();
                let mut e = EngineModel::new(session, Arc::clone(&m.1), cfg.clone()).unwrap();
                reply_to_each(&mut e, protocol, &turns)
            })
            .collect()
    }

    /// The model's reply to each conversation prefix in `turns`, in order.
    fn reply_to_each(model: &mut impl LanguageModel, protocol: Protocol, turns: &[Vec<Message>]) -> Vec<ModelReply> {
        turns
            .iter()
            .map(|msgs| {
                model
                    .reply(&ModelRequest {
                        messages: msgs,
                        protocol,
                    })
                    .unwrap()
            })
            .collect()
    }

    fn scheduler(m: &(Arc<LlamaModel>, Arc<Tokenizer>), parallel: usize) -> Scheduler {
        speculating_scheduler(m, parallel, false)
    }

    fn speculating_scheduler(m: &(Arc<LlamaModel>, Arc<Tokenizer>), parallel: usize, speculate: bool) -> Scheduler {
        let session = MultiSession::new(Arc::clone(&m.0), opts(), parallel).unwrap();
        let opts = SchedulerOptions {
            speculate: if speculate {
                SpeculateConfig::default()
            } else {
                SpeculateConfig::off()
            },
            ..Default::default()
        };
        Scheduler::start(session, Arc::clone(&m.1), opts).unwrap()
    }

    fn check_same(engine: &[Vec<ModelReply>], batched: &[Vec<ModelReply>]) {
        assert_eq!(engine.len(), batched.len());
        for (e, b) in engine.iter().zip(batched) {
            for (e, b) in e.iter().zip(b) {
                assert_eq!(e.text, b.text);
                assert_eq!(e.stats.stop, b.stats.stop, "{:?}", e.text);
                assert_eq!(e.stats.prompt_tokens, b.stats.prompt_tokens);
                assert_eq!(e.stats.truncated_tokens, b.stats.truncated_tokens);
                assert_eq!(e.stats.generated_tokens, b.stats.generated_tokens);
            }
        }
    }

    fn same_replies_as_engine(constrained: bool, speculate: bool) {
        let m = load();
        let cfg = config(constrained, 48);
        let engine = engine_replies(&m, &cfg);
        // One model on a one-sequence engine, in turn.
        let sched = speculating_scheduler(&m, 1, speculate);
        let mut b = BatchedModel::new(sched.handle(), Arc::clone(&m.1), cfg.clone()).unwrap();
        let sequential: Vec<Vec<ModelReply>> = conversations()
            .into_iter()
            .map(|(protocol, turns)| reply_to_each(&mut b, protocol, &turns))
            .collect();
        check_same(&engine, &sequential);
        assert!(engine[0][0].stats.truncated_tokens > 0);
        // The second turn of an untruncated conversation reuses the first turn's cached prompt.
        let story2 = &sequential[2][1].stats;
        assert!(story2.prefilled_tokens < story2.prompt_tokens, "{story2:?}");
        sched.shutdown();
        // Three models at once on a three-sequence engine (decoded in the same steps).
        let sched = speculating_scheduler(&m, 3, speculate);
        let concurrent: Vec<Vec<ModelReply>> = std::thread::scope(|s| {
            let workers: Vec<_> = conversations()
                .into_iter()
                .map(|(protocol, turns)| {
                    let mut b = BatchedModel::new(sched.handle(), Arc::clone(&m.1), cfg.clone()).unwrap();
                    s.spawn(move || reply_to_each(&mut b, protocol, &turns))
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).collect()
        });
        check_same(&engine, &concurrent);
        let m = sched.handle().metrics();
        assert_eq!(m.draft_tokens > 0, speculate, "{m:?}");
        sched.shutdown();
    }

    #[test]
    fn greedy_replies_equal_the_engine_model() {
        same_replies_as_engine(false, false);
    }

    #[test]
    fn constrained_replies_equal_the_engine_model() {
        same_replies_as_engine(true, false);
    }

    #[test]
    fn speculating_engine_replies_equal_the_engine_model() {
        same_replies_as_engine(false, true);
        same_replies_as_engine(true, true);
    }

    #[test]
    fn summary_text_is_the_decoded_reply_and_stops_are_named() {
        let m = load();
        let sched = scheduler(&m, 1);
        let mut b = BatchedModel::new(sched.handle(), Arc::clone(&m.1), config(false, 40)).unwrap();
        for (_, turns) in conversations() {
            let PromptTokens { tokens, .. } = build_prompt(&b.config, &m.1, 512, &turns[0]).unwrap();
            let (ids, summary) = b.generate(tokens, None).unwrap();
            assert_eq!(summary.text, m.1.decode(&ids));
            assert!(["eos", "max_tokens"].contains(&stop_name(&summary.stop)));
        }
        // A context too small for the prompt and the new tokens is refused up front.
        assert!(BatchedModel::new(sched.handle(), Arc::clone(&m.1), config(false, 512)).is_err());
        sched.shutdown();
    }
}
