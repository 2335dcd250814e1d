//! Lossless speculative decoding without a draft model, and jump-forward of forced tokens:
//! the one decode loop of single-sequence generation (`generate`, the agent's engine).
//!
//! - **Prompt lookup (n-gram drafts).** Agent replies copy file names, values and protocol
//!   phrases out of the prompt and earlier turns. At each step [`find_draft`] looks for the most
//!   recent earlier occurrence of the last n tokens (n from [`SpeculateConfig::max_ngram`] down
//!   to [`SpeculateConfig::min_ngram`]) in prompt + generated history and proposes the tokens
//!   that followed it. The chosen-but-unevaluated token and the draft are evaluated in ONE
//!   forward pass with logits for every position; each draft token is then checked against the
//!   model's own distribution at its position, and the first rejected one is replaced by a
//!   token drawn from the model, so every pass yields at least one token. Rejected positions
//!   are dropped from the KV cache with `Session::truncate`.
//! - **Acceptance rule.** At each verified position the sampler draws the token exactly as the
//!   plain loop would (same distribution after every transform: mask, penalty, top-k/p, min-p,
//!   temperature; same seeded random stream, one draw per emitted token), and the draft token is
//!   accepted when the draw equals it; otherwise the draw is emitted in its place and the rest
//!   of the draft is dropped. For a deterministic draft this is the standard speculative rule
//!   (the draft `d` is accepted with probability `p(d)`, and on rejection the token has law
//!   `p(x)/(1 - p(d))` for `x ≠ d`), so the output distribution is exactly the model's; and
//!   since the draws are the plain loop's draws, a seeded run gives the same tokens with and
//!   without speculation whenever the logits are the same. Greedy is the special case where the
//!   draw is the argmax.
//! - **Jump-forward.** When the caller's constraint admits exactly one token
//!   ([`DecodeHooks::forced`]), it is appended without consulting the model, and so are the
//!   tokens forced after it; the run is evaluated as one chunk together with the next step.
//!   Each forced token still takes its random draw ([`Sampler::skip_draw`]), as the plain loop
//!   draws it from a one-token mask, so seeded runs stay the same.
//!
//! Stop tokens, stop strings, the token budget and the context limit act exactly as in the
//! plain loop, token by token (the hooks see every token in order and can stop at any). The
//! session afterwards holds a prefix of prompt + generated tokens whose KV entries are the
//! model's: draft positions past a stop are truncated; tokens forced at the very end may be
//! left unevaluated (the next call's prefix reuse evaluates them if needed).
//!
//! With `Activations::Quantized` on the file-layout kernels a row's result is not bit-identical
//! between a one-token pass and a multi-token pass (docs/serving.md, "batching & numerics"),
//! so a near-tie argmax may differ with and without speculation, as with prefix caching.

use crate::model::{ModelError, Session};
use crate::sampler::Sampler;

/// How drafts are proposed. `enabled: false` gives the plain one-token-per-pass loop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpeculateConfig {
    /// Propose n-gram drafts (and evaluate forced runs as one chunk).
    pub enabled: bool,
    /// Most draft tokens verified in one pass.
    pub max_draft: usize,
    /// Longest suffix searched for first.
    pub max_ngram: usize,
    /// Shortest suffix that may seed a draft.
    pub min_ngram: usize,
}

impl SpeculateConfig {
    /// The plain loop: no drafts.
    pub fn off() -> SpeculateConfig {
        SpeculateConfig {
            enabled: false,
            ..SpeculateConfig::default()
        }
    }
}

impl Default for SpeculateConfig {
    /// On, with the settings measured in docs/agent.md ("Speculative decoding and
    /// jump-forward").
    fn default() -> Self {
        SpeculateConfig {
            enabled: true,
            max_draft: 8,
            max_ngram: 4,
            min_ngram: 2,
        }
    }
}

/// The draft the history proposes: the (up to `max_draft`) tokens that followed the most
/// recent earlier occurrence of the longest suffix of `history` (between `max_ngram` and
/// `min_ngram` tokens) found again in it. Empty when no suffix recurs.
pub fn find_draft(history: &[u32], cfg: &SpeculateConfig, max_draft: usize) -> Vec<u32> {
    let len = history.len();
    if max_draft == 0 {
        return Vec::new();
    }
    for n in (cfg.min_ngram.max(1)..=cfg.max_ngram).rev() {
        if len <= n {
            continue;
        }
        let suffix = &history[len - n..];
        // Candidates start before the suffix itself, most recent first.
        for start in (0..len - n).rev() {
            if &history[start..start + n] == suffix {
                let from = start + n;
                let to = (from + max_draft).min(len);
                return history[from..to].to_vec();
            }
        }
    }
    Vec::new()
}

/// The token chosen at one position given the model's logits there and, optionally, a draft
/// token: `(token, accepted)` where `accepted` says the token is the draft. The token is the
/// sampler's own draw (see the module's acceptance rule). `None` when the sampler has nothing to
/// choose from.
pub fn choose(
    sampler: &mut Sampler,
    logits: &[f32],
    history: &[u32],
    allowed: Option<&[u32]>,
    draft: Option<u32>,
) -> Option<(u32, bool)> {
    let tok = match allowed {
        Some(ids) => sampler.sample_masked(logits, history, ids),
        None => sampler.sample(logits, history),
    }?;
    Some((tok, Some(tok) == draft))
}

/// What the caller of [`decode`] does with each token: apply its constraint, stream text, and
/// decide when to stop.
pub trait DecodeHooks {
    /// Why the caller stopped (its own stop reasons).
    type Stop;
    /// The ids allowed next (`None`: all), with `remaining` tokens left in the budget.
    fn allowed(&mut self, remaining: usize) -> Option<Vec<u32>>;
    /// The one token the constraint admits next, if it admits exactly one.
    fn forced(&mut self, remaining: usize) -> Option<u32> {
        let _ = remaining;
        None
    }
    /// Takes the next token of the output; `Some` ends the generation (the token counts as
    /// generated, whether or not the caller keeps it, as a stop token).
    fn push(&mut self, token: u32) -> Option<Self::Stop>;
}

/// How a [`decode`] loop ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeEnd<S> {
    /// A hook stopped it.
    Hook(S),
    MaxTokens,
    ContextFull,
    NoCandidates,
}

/// Counts of one decode loop.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DecodeStats {
    /// Tokens chosen (pushed to the hooks), stop tokens included.
    pub tokens: usize,
    /// Forward passes run during decoding (the prompt's not counted).
    pub passes: usize,
    /// Draft tokens proposed and verified.
    pub drafted: usize,
    /// Draft tokens the model accepted.
    pub accepted: usize,
    /// Tokens appended because the constraint admitted only them.
    pub forced: usize,
}

impl DecodeStats {
    /// Forward passes per generated token (1.0 without speculation, less with it).
    pub fn passes_per_token(&self) -> f64 {
        self.passes as f64 / self.tokens.max(1) as f64
    }

    /// Adds another loop's counts.
    pub fn add(&mut self, o: &DecodeStats) {
        self.tokens += o.tokens;
        self.passes += o.passes;
        self.drafted += o.drafted;
        self.accepted += o.accepted;
        self.forced += o.forced;
    }
}

/// The decode loop after a prompt: `logits` are the next-token logits after `prompt` (which the
/// session has evaluated), at most `max_tokens` tokens are chosen. See the module docs.
pub fn decode<H: DecodeHooks>(
    session: &mut Session,
    sampler: &mut Sampler,
    prompt: &[u32],
    logits: Vec<f32>,
    max_tokens: usize,
    cfg: &SpeculateConfig,
    hooks: &mut H,
) -> Result<(DecodeEnd<H::Stop>, DecodeStats), ModelError> {
    let mut run = Run {
        sampler,
        hooks,
        history: prompt.to_vec(),
        stats: DecodeStats::default(),
        max_tokens,
        draft_len: cfg.max_draft,
    };
    let end = run.decode(session, logits, cfg)?;
    Ok((end, run.stats))
}

struct Run<'a, H: DecodeHooks> {
    sampler: &'a mut Sampler,
    hooks: &'a mut H,
    /// Prompt and every token chosen so far.
    history: Vec<u32>,
    stats: DecodeStats,
    max_tokens: usize,
    /// The next draft's length: grows (doubling, up to `max_draft`) while drafts are
    /// accepted whole, shrinks to one past the accepted part on a rejection, so verification
    /// rows are not spent where the history stops predicting the reply.
    draft_len: usize,
}

impl<H: DecodeHooks> Run<'_, H> {
    fn remaining(&self) -> usize {
        self.max_tokens - self.stats.tokens
    }

    /// Chooses the next token at a position with `logits` (verifying `draft` when given).
    fn choose(&mut self, logits: &[f32], draft: Option<u32>) -> Option<(u32, bool)> {
        let allowed = self.hooks.allowed(self.remaining());
        choose(self.sampler, logits, &self.history, allowed.as_deref(), draft)
    }

    /// Appends a chosen token; `Some` when the generation ends with it.
    fn take(&mut self, token: u32) -> Option<DecodeEnd<H::Stop>> {
        self.stats.tokens += 1;
        self.history.push(token);
        if let Some(stop) = self.hooks.push(token) {
            return Some(DecodeEnd::Hook(stop));
        }
        (self.stats.tokens >= self.max_tokens).then_some(DecodeEnd::MaxTokens)
    }

    fn decode(
        &mut self,
        session: &mut Session,
        mut logits: Vec<f32>,
        cfg: &SpeculateConfig,
    ) -> Result<DecodeEnd<H::Stop>, ModelError> {
        let n_ctx = session.n_ctx();
        let vocab = logits.len();
        // A token already chosen (and taken) by the last verification, not yet evaluated.
        let mut carried: Option<u32> = None;
        loop {
            let token = match carried.take() {
                Some(t) => t,
                None => {
                    if self.stats.tokens >= self.max_tokens {
                        return Ok(DecodeEnd::MaxTokens);
                    }
                    let Some((t, _)) = self.choose(&logits, None) else {
                        return Ok(DecodeEnd::NoCandidates);
                    };
                    if let Some(end) = self.take(t) {
                        return Ok(end);
                    }
                    t
                }
            };
            // Chosen tokens not yet evaluated: `token`, then any forced run.
            let mut pending = vec![token];
            loop {
                // The plain loop checks for room before evaluating each token.
                if session.tokens().len() + pending.len() > n_ctx {
                    return Ok(DecodeEnd::ContextFull);
                }
                if !cfg.enabled {
                    break;
                }
                let Some(f) = self.hooks.forced(self.remaining()) else {
                    break;
                };
                self.stats.forced += 1;
                // One draw per emitted token, as the plain loop takes for this one.
                self.sampler.skip_draw();
                if let Some(end) = self.take(f) {
                    return Ok(end);
                }
                pending.push(f);
            }
            let base = session.tokens().len();
            let room = n_ctx - base - pending.len();
            // Leave a token of the budget for the one the model adds after the draft.
            let budget = self.remaining().saturating_sub(1).min(room);
            let draft = if cfg.enabled {
                find_draft(&self.history, cfg, self.draft_len.min(budget))
            } else {
                Vec::new()
            };
            self.stats.passes += 1;
            if draft.is_empty() {
                logits = session.eval(&pending)?;
                continue;
            }
            let mut chunk = pending.clone();
            chunk.extend_from_slice(&draft);
            let rows = session.eval_all_logits(&chunk)?;
            self.stats.drafted += draft.len();
            let first_row = pending.len() - 1;
            let row = |j: usize| &rows[(first_row + j) * vocab..(first_row + j + 1) * vocab];
            let mut all_accepted = true;
            for (j, &d) in draft.iter().enumerate() {
                // Positions after draft[j - 1] are evaluated; draft[j] is the candidate.
                let keep = base + pending.len() + j;
                let Some((t, accepted)) = self.choose(row(j), Some(d)) else {
                    session.truncate(keep);
                    return Ok(DecodeEnd::NoCandidates);
                };
                if accepted {
                    self.stats.accepted += 1;
                }
                if let Some(end) = self.take(t) {
                    session.truncate(keep);
                    return Ok(end);
                }
                if !accepted {
                    session.truncate(keep);
                    carried = Some(t);
                    all_accepted = false;
                    self.draft_len = j + 1;
                    break;
                }
            }
            if all_accepted {
                logits = row(draft.len()).to_vec();
                self.draft_len = (self.draft_len * 2).min(cfg.max_draft);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampler::SamplerConfig;

    fn cfg(max_ngram: usize, min_ngram: usize) -> SpeculateConfig {
        SpeculateConfig {
            enabled: true,
            max_draft: 8,
            max_ngram,
            min_ngram,
        }
    }

    #[test]
    fn draft_follows_the_most_recent_longest_match() {
        // "1 2 3 4 5 ... 1 2 3 9 ... 1 2 3": the 3-gram's most recent occurrence is followed by 9.
        let h = [1, 2, 3, 4, 5, 1, 2, 3, 9, 7, 1, 2, 3];
        assert_eq!(find_draft(&h, &cfg(3, 1), 8), vec![9, 7, 1, 2, 3]);
        assert_eq!(find_draft(&h, &cfg(3, 1), 2), vec![9, 7]);
        // The longer suffix wins over a more recent shorter one.
        let h = [5, 6, 7, 8, 0, 7, 1, 6, 7];
        assert_eq!(find_draft(&h, &cfg(2, 1), 3), vec![8, 0, 7]);
        assert_eq!(find_draft(&h, &cfg(1, 1), 3), vec![1, 6, 7]);
        // No recurring suffix of at least min_ngram tokens: no draft.
        assert!(find_draft(&[1, 2, 3, 4], &cfg(3, 1), 8).is_empty());
        assert!(find_draft(&[1, 2, 9, 2], &cfg(3, 2), 8).is_empty());
        assert!(find_draft(&[], &cfg(3, 1), 8).is_empty());
        assert!(find_draft(&[1, 1, 1], &cfg(3, 1), 0).is_empty());
        // A run continues itself.
        assert_eq!(find_draft(&[4, 4, 4], &cfg(2, 1), 8), vec![4]);
    }

    fn sampling(seed: u64) -> Sampler {
        Sampler::new(SamplerConfig {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            typical_p: 1.0,
            repeat_penalty: 1.0,
            repeat_last_n: 0,
            seed,
        })
    }

    /// Pearson's chi-square of `counts` against `probs` (counts of tokens 0..n).
    fn chi_square(counts: &[usize], probs: &[f64]) -> f64 {
        let n: usize = counts.iter().sum();
        counts
            .iter()
            .zip(probs)
            .map(|(&c, &p)| {
                let e = p * n as f64;
                (c as f64 - e).powi(2) / e
            })
            .sum()
    }

    #[test]
    fn acceptance_rule_reproduces_the_target_distribution() {
        // Probabilities 0.1, 0.2, 0.3, 0.4 at T = 1; a draft of each token in turn (likely,
        // unlikely, and one outside the mask) must leave the output distribution unchanged.
        let logits: Vec<f32> = [1.0f32, 2.0, 3.0, 4.0].iter().map(|p| p.ln()).collect();
        let target = [0.1, 0.2, 0.3, 0.4];
        let draws = 40_000;
        for draft in [0u32, 3, 2] {
            let mut s = sampling(11 + draft as u64);
            let mut counts = [0usize; 4];
            let mut accepted = 0;
            for _ in 0..draws {
                let (t, acc) = choose(&mut s, &logits, &[], None, Some(draft)).unwrap();
                counts[t as usize] += 1;
                accepted += acc as usize;
            }
            // 3 degrees of freedom: P(chi2 > 25) < 1e-5.
            let chi = chi_square(&counts, &target);
            assert!(chi < 25.0, "draft {draft}: counts {counts:?}, chi-square {chi}");
            let rate = accepted as f64 / draws as f64;
            assert!(
                (rate - target[draft as usize]).abs() < 0.01,
                "draft {draft}: acceptance {rate}"
            );
        }
        // With a mask {1, 3} the target is 1/3, 2/3 and a draft outside the mask is never taken.
        let mut s = sampling(5);
        let mut counts = [0usize; 4];
        for _ in 0..draws {
            let (t, acc) = choose(&mut s, &logits, &[], Some(&[1, 3]), Some(2)).unwrap();
            assert!(!acc);
            counts[t as usize] += 1;
        }
        assert_eq!(counts[0] + counts[2], 0);
        let chi = chi_square(&[counts[1], counts[3]], &[0.2 / 0.6, 0.4 / 0.6]);
        assert!(chi < 20.0, "masked: {counts:?}, chi-square {chi}");
    }

    #[test]
    fn the_test_can_fail_a_wrong_rule() {
        // Always accepting the draft is the obvious wrong rule: its histogram is far off.
        let counts = [40_000usize, 0, 0, 0];
        assert!(chi_square(&counts, &[0.1, 0.2, 0.3, 0.4]) > 1000.0);
    }

    #[test]
    fn greedy_accepts_exactly_the_argmax() {
        let mut s = Sampler::new(SamplerConfig::greedy());
        let logits = [0.5f32, 2.0, 1.0];
        assert_eq!(choose(&mut s, &logits, &[], None, Some(1)), Some((1, true)));
        assert_eq!(choose(&mut s, &logits, &[], None, Some(2)), Some((1, false)));
        assert_eq!(choose(&mut s, &logits, &[], Some(&[0, 2]), Some(2)), Some((2, true)));
        assert_eq!(choose(&mut s, &logits, &[], None, None), Some((1, false)));
        assert_eq!(choose(&mut s, &[], &[], None, Some(0)), None);
    }

    #[test]
    fn seeded_draws_are_the_plain_samplers_draws() {
        // Whatever the drafts, the emitted tokens are the tokens the plain sampler draws with
        // the same seed: speculation changes how many passes are made, never what is sampled.
        let logits: Vec<f32> = (0..50).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
        let plain: Vec<u32> = {
            let mut s = sampling(3);
            (0..200).map(|_| s.sample(&logits, &[]).unwrap()).collect()
        };
        let mut s = sampling(3);
        let drafted: Vec<u32> = (0..200)
            .map(|i| choose(&mut s, &logits, &[], None, Some(i % 50)).unwrap().0)
            .collect();
        assert_eq!(drafted, plain);
        let mut other = sampling(4);
        let reseeded: Vec<u32> = (0..200).map(|_| other.sample(&logits, &[]).unwrap()).collect();
        assert_ne!(reseeded, plain);
    }
}
