//! [`EngineModel`]: the [`LanguageModel`] over our own forward pass ([`Session`]) and
//! [`Tokenizer`], with KV-cache prefix reuse across turns and optional constrained decoding.
//!
//! Each call renders the whole trimmed history in the configured [`PromptFormat`] (the
//! llama-2 template, tokenized with BOS first and `</s><s>` as special tokens like the TGI
//! server did, or the model's Jinja template), left-truncates it to the prompt limit, keeps
//! the longest common token prefix with what the session already holds and prefills only the
//! rest. Any template whose rendering of earlier turns does not change when turns are added
//! (llama-2, ChatML, Llama-3, …) therefore reuses the cache across turns. Generation ends at
//! end-of-generation, the token limit, or (when constrained) as soon as the action is complete.

use super::constrain::{Constraint, MaskCache};
use super::prompt::PromptFormat;
use super::react::{LanguageModel, ModelReply, ModelRequest, TurnStats};
use super::render::{ChatTemplate, Message};
use edgeact_runtime::generate::common_prefix;
use edgeact_runtime::model::Session;
use edgeact_runtime::sampler::{Sampler, SamplerConfig};
use edgeact_runtime::speculate::{self, DecodeEnd, DecodeHooks, DecodeStats, SpeculateConfig};
use edgeact_runtime::tokenizer::Tokenizer;
use std::sync::Arc;
use std::time::Instant;

/// How the engine renders prompts and generates replies.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// The system prompt choice (`eval`: none, `agent`: the model card's).
    pub template: ChatTemplate,
    /// How the conversation is rendered: AgentBench's llama-2 (default) or a Jinja template.
    pub format: PromptFormat,
    /// AgentBench: 128.
    pub max_new_tokens: usize,
    /// AgentBench: 4096 - 128 = 3968 (also capped by the session's context minus
    /// `max_new_tokens`).
    pub max_prompt_tokens: usize,
    /// Reuse the cached KV prefix between calls (off only to measure its effect).
    pub reuse_prefix: bool,
    /// Mask tokens that would leave the protocol's reply shapes.
    pub constrained: bool,
    pub sampler: SamplerConfig,
    /// Prompt-lookup speculative decoding and jump-forward of forced tokens (on by default;
    /// `--no-speculate` turns it off). Greedy replies are the same either way.
    pub speculate: SpeculateConfig,
}

impl EngineConfig {
    /// The published evaluation settings: no system prompt, T = 0.7 pure temperature
    /// sampling (TGI applied no top-k/top-p), unconstrained.
    pub fn eval(seed: u64) -> EngineConfig {
        EngineConfig {
            template: ChatTemplate::Eval,
            format: PromptFormat::Llama2,
            max_new_tokens: 128,
            max_prompt_tokens: 3968,
            reuse_prefix: true,
            constrained: false,
            sampler: SamplerConfig {
                temperature: 0.7,
                top_k: 0,
                top_p: 1.0,
                min_p: 0.0,
                typical_p: 1.0,
                repeat_penalty: 1.0,
                repeat_last_n: 0,
                seed,
            },
            speculate: SpeculateConfig::default(),
        }
    }

    /// Interactive defaults: model-card system prompt, greedy, constrained.
    pub fn agent() -> EngineConfig {
        EngineConfig {
            template: ChatTemplate::Agent,
            constrained: true,
            sampler: SamplerConfig {
                temperature: 0.0,
                ..EngineConfig::eval(0).sampler
            },
            ..EngineConfig::eval(0)
        }
    }
}

/// A [`LanguageModel`] backed by a model session.
pub struct EngineModel {
    session: Session,
    tokenizer: Arc<Tokenizer>,
    sampler: Sampler,
    config: EngineConfig,
    /// Called with each piece of text as it is generated (live display).
    on_text: Option<TextSink>,
    /// Decode counts over every reply so far.
    decode_totals: DecodeStats,
    /// The constraint's allowed-token sets by automaton state (one vocabulary: this model's).
    masks: MaskCache,
}

/// Receives generated text pieces as they are decoded.
type TextSink = Box<dyn FnMut(&str) + Send>;

/// A conversation rendered, tokenized and left-truncated for one model call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PromptTokens {
    /// The prompt as the model sees it (BOS first when the format wants one).
    pub tokens: Vec<u32>,
    /// Tokens dropped from the left to fit the limit.
    pub truncated: usize,
}

/// Checks `config` against a context of `n_ctx` tokens per sequence (sampler settings valid,
/// room for a prompt and the new tokens).
pub fn check_config(config: &EngineConfig, n_ctx: usize) -> anyhow::Result<()> {
    config
        .sampler
        .validate()
        .map_err(|e| anyhow::anyhow!("invalid sampler settings: {e}"))?;
    if config.max_new_tokens == 0 {
        anyhow::bail!("max_new_tokens must be at least 1");
    }
    if n_ctx <= config.max_new_tokens {
        anyhow::bail!(
            "context of {} tokens leaves no room for a prompt and {} new tokens",
            n_ctx,
            config.max_new_tokens
        );
    }
    Ok(())
}

/// The prompt token limit in effect: the configured one, capped by the context `n_ctx` minus
/// the new tokens.
pub fn prompt_limit(config: &EngineConfig, n_ctx: usize) -> usize {
    config
        .max_prompt_tokens
        .min(n_ctx.saturating_sub(config.max_new_tokens))
        .max(1)
}

/// The one prompt-building path of the engine-backed models ([`EngineModel`],
/// [`super::batched::BatchedModel`]): renders `messages` in the configured format, tokenizes
/// and keeps BOS plus the last [`prompt_limit`] - 1 tokens (TGI's `truncate`: its tokenizer cut
/// the text's tokens on the left, then added BOS).
pub fn build_prompt(
    config: &EngineConfig,
    tokenizer: &Tokenizer,
    n_ctx: usize,
    messages: &[Message],
) -> anyhow::Result<PromptTokens> {
    let prompt = config.format.render(messages, &config.template)?;
    let mut tokens = config.format.encode(tokenizer, &prompt);
    let n = tokens.len();
    edgeact_runtime::tokenizer::truncate_left(&mut tokens, prompt_limit(config, n_ctx), tokenizer.bos_id());
    let truncated = n - tokens.len();
    if tokens.is_empty() {
        anyhow::bail!("the prompt tokenized to nothing");
    }
    Ok(PromptTokens { tokens, truncated })
}

impl EngineModel {
    pub fn new(session: Session, tokenizer: Arc<Tokenizer>, config: EngineConfig) -> anyhow::Result<EngineModel> {
        check_config(&config, session.n_ctx())?;
        Ok(EngineModel {
            sampler: Sampler::new(config.sampler.clone()),
            session,
            tokenizer,
            config,
            on_text: None,
            decode_totals: DecodeStats::default(),
            masks: MaskCache::default(),
        })
    }

    /// Streams generated text pieces to `f`.
    pub fn set_on_text(&mut self, f: impl FnMut(&str) + Send + 'static) {
        self.on_text = Some(Box::new(f));
    }

    /// Starts a new random stream (e.g. per task and seed).
    pub fn reseed(&mut self, seed: u64) {
        self.config.sampler.seed = seed;
        self.sampler = Sampler::new(self.config.sampler.clone());
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    pub fn session(&self) -> &Session {
        &self.session
    }

    /// The prompt token limit in effect: the configured one, capped by the context.
    pub fn prompt_limit(&self) -> usize {
        prompt_limit(&self.config, self.session.n_ctx())
    }

    /// Forward passes, tokens, accepted drafts and forced tokens over every reply so far.
    pub fn decode_totals(&self) -> DecodeStats {
        self.decode_totals
    }
}

/// Why a reply ended, as the engine's hooks see it.
enum ReplyStop {
    Eos,
    ActionEnd,
}

/// The engine's per-token work inside the decode loop: the protocol constraint (with its mask
/// cached per automaton state), live text, the reply's tokens.
struct ReplyHooks<'a> {
    tokenizer: &'a Tokenizer,
    constraint: Option<Constraint>,
    /// Allowed ids by automaton state (the engine's, kept across replies).
    masks: &'a mut MaskCache,
    n_vocab: usize,
    generated: Vec<u32>,
    stream: edgeact_runtime::tokenizer::StreamDecoder<'a>,
    on_text: Option<&'a mut TextSink>,
}

impl ReplyHooks<'_> {
    /// The constraint's mask now (cached per automaton state).
    fn mask(&mut self, remaining: usize) -> Option<&[u32]> {
        let c = self.constraint.as_ref()?;
        let tk = self.tokenizer;
        Some(
            self.masks
                .allowed(c, self.n_vocab, |id| tk.token_bytes(id), tk.eog_ids(), remaining),
        )
    }
}

impl DecodeHooks for ReplyHooks<'_> {
    type Stop = ReplyStop;

    fn allowed(&mut self, remaining: usize) -> Option<Vec<u32>> {
        self.mask(remaining).map(<[u32]>::to_vec)
    }

    /// Exactly one allowed token is forced (the mask is needed for the next choice anyway,
    /// so finding it costs nothing extra).
    fn forced(&mut self, remaining: usize) -> Option<u32> {
        match self.mask(remaining)? {
            [only] => Some(*only),
            _ => None,
        }
    }

    fn push(&mut self, tok: u32) -> Option<ReplyStop> {
        if self.tokenizer.is_eog(tok) {
            return Some(ReplyStop::Eos);
        }
        self.generated.push(tok);
        if let Some(f) = self.on_text.as_mut() {
            let piece = self.stream.push(tok);
            if !piece.is_empty() {
                f(&piece);
            }
        }
        if let Some(c) = self.constraint.as_mut() {
            c.advance(self.tokenizer.token_bytes(tok));
            if c.is_done() {
                // Only EOS could follow: skip evaluating it.
                return Some(ReplyStop::ActionEnd);
            }
        }
        None
    }
}

impl LanguageModel for EngineModel {
    fn reply(&mut self, request: &ModelRequest<'_>) -> anyhow::Result<ModelReply> {
        let PromptTokens { tokens, truncated } =
            build_prompt(&self.config, &self.tokenizer, self.session.n_ctx(), request.messages)?;
        let reuse = if self.config.reuse_prefix {
            common_prefix(self.session.tokens(), &tokens)
        } else {
            0
        };
        // At least one token must be evaluated to get the next-token logits.
        let reuse = reuse.min(tokens.len() - 1);
        self.session.truncate(reuse);
        let t0 = Instant::now();
        let logits = self.session.eval(&tokens[reuse..])?;
        let prompt_ms = t0.elapsed().as_secs_f64() * 1e3;

        let t1 = Instant::now();
        let tokenizer = Arc::clone(&self.tokenizer);
        let mut hooks = ReplyHooks {
            tokenizer: &tokenizer,
            constraint: self.config.constrained.then(|| Constraint::new(request.protocol)),
            masks: &mut self.masks,
            n_vocab: logits.len(),
            generated: Vec::new(),
            stream: edgeact_runtime::tokenizer::StreamDecoder::new(&tokenizer),
            on_text: self.on_text.as_mut(),
        };
        let (end, decode) = speculate::decode(
            &mut self.session,
            &mut self.sampler,
            &tokens,
            logits,
            self.config.max_new_tokens,
            &self.config.speculate,
            &mut hooks,
        )?;
        let stop = match end {
            DecodeEnd::Hook(ReplyStop::Eos) => "eos",
            DecodeEnd::Hook(ReplyStop::ActionEnd) => "action_end",
            DecodeEnd::MaxTokens => "max_tokens",
            DecodeEnd::ContextFull => "context_full",
            DecodeEnd::NoCandidates => "no_candidates",
        };
        let rest = hooks.stream.finish();
        if let Some(f) = hooks.on_text.as_mut() {
            if !rest.is_empty() {
                f(&rest);
            }
        }
        let generated = hooks.generated;
        self.decode_totals.add(&decode);
        let gen_ms = t1.elapsed().as_secs_f64() * 1e3;
        Ok(ModelReply {
            // As the server's detokenizer did: the reply decoded on its own, so SentencePiece's
            // leading space of the first piece is dropped.
            text: self.tokenizer.decode(&generated),
            stats: TurnStats {
                prompt_tokens: tokens.len(),
                prefilled_tokens: tokens.len() - reuse,
                truncated_tokens: truncated,
                generated_tokens: generated.len(),
                prompt_ms,
                gen_ms,
                stop: stop.to_string(),
                forward_passes: decode.passes,
                draft_accepted: decode.accepted,
                forced_tokens: decode.forced,
            },
        })
    }
}
