//! The generation loop: evaluate the prompt (reusing the session's cached prefix), then
//! sample → evaluate → stream text until end-of-sequence, a stop string, the token limit or a
//! full context.
//!
//! Text is streamed through a [`TokenDecoder`] (the tokenizer's UTF-8-safe stream decoder) and
//! then a [`StopMatcher`], which holds back text while it could still be the start of a stop
//! string, so the caller never sees any part of a stop string.

use crate::model::{ModelError, Session};
use crate::sampler::Sampler;
use crate::speculate::{self, DecodeEnd, DecodeHooks, DecodeStats, SpeculateConfig};
use std::time::{Duration, Instant};

/// The decoder trait lives with the tokenizer (a leaf); re-exported here for callers that
/// name it `generate::TokenDecoder`.
pub use crate::tokenizer::TokenDecoder;

/// Limits and stop conditions of one generation.
#[derive(Clone, Debug)]
pub struct GenerateOptions {
    /// Most tokens to generate.
    pub max_tokens: usize,
    /// Tokens that end the generation (normally EOS; chat models may add end-of-turn ids).
    /// They are not decoded into the text.
    pub stop_tokens: Vec<u32>,
    /// Strings that end the generation; the text stops just before the earliest match.
    pub stop_strings: Vec<String>,
}

/// Why generation ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// A token of [`GenerateOptions::stop_tokens`] was sampled.
    StopToken(u32),
    /// The text reached this stop string.
    StopString(String),
    /// The token budget (`-n`) was used up.
    MaxTokens,
    /// The session's context has no room for another token.
    ContextFull,
    /// The sampler had nothing to choose from.
    NoCandidates,
    /// Constrained decoding found the output complete (nothing but its end could follow).
    Complete,
    /// The client went away or the server stopped.
    Cancelled,
}

impl std::fmt::Display for StopReason {
    /// Why generation ended, in words for people (`end of turn`, `token limit`, ...).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StopReason::StopToken(_) => f.write_str("end of turn"),
            StopReason::StopString(s) => write!(f, "stop string {s:?}"),
            StopReason::MaxTokens => f.write_str("token limit"),
            StopReason::ContextFull => f.write_str("context full"),
            StopReason::NoCandidates => f.write_str("no token left to sample"),
            StopReason::Complete => f.write_str("output complete"),
            StopReason::Cancelled => f.write_str("cancelled"),
        }
    }
}

/// What a generation produced.
#[derive(Clone, Debug)]
pub struct Generation {
    /// Every sampled token, including a final stop token and the tokens of a stop string.
    pub tokens: Vec<u32>,
    /// The streamed text (without stop tokens or the stop string).
    pub text: String,
    pub stop: StopReason,
    /// Prompt length, and how many prompt tokens were actually evaluated (the rest were
    /// reused from the session's cache).
    pub n_prompt: usize,
    pub n_prompt_evaluated: usize,
    pub n_generated: usize,
    pub prompt_time: Duration,
    /// Time from the first sampled token to the end.
    pub gen_time: Duration,
    /// Forward passes, drafted/accepted draft tokens of the decode loop.
    pub decode: DecodeStats,
}

impl Generation {
    /// Evaluated prompt tokens per second.
    pub fn prompt_tps(&self) -> f64 {
        self.n_prompt_evaluated as f64 / self.prompt_time.as_secs_f64().max(1e-9)
    }
    /// Generated tokens per second.
    pub fn gen_tps(&self) -> f64 {
        self.n_generated as f64 / self.gen_time.as_secs_f64().max(1e-9)
    }
}

/// Holds back streamed text that could be the beginning of a stop string.
#[derive(Clone, Debug, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    pending: String,
}

impl StopMatcher {
    /// Empty stop strings are ignored (they would match everywhere).
    pub fn new(stops: &[String]) -> StopMatcher {
        StopMatcher {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            pending: String::new(),
        }
    }

    /// Adds text; returns the text that is now safe to emit and, if a stop string matched,
    /// which one (then nothing after its start is ever emitted).
    pub fn push(&mut self, piece: &str) -> (String, Option<String>) {
        self.pending.push_str(piece);
        let earliest = self
            .stops
            .iter()
            .filter_map(|s| self.pending.find(s.as_str()).map(|i| (i, s)))
            .min_by_key(|&(i, _)| i);
        if let Some((i, s)) = earliest {
            let s = s.clone();
            let out = self.pending[..i].to_string();
            self.pending.clear();
            return (out, Some(s));
        }
        // Keep the longest suffix that is a proper prefix of some stop string (so shorter
        // than the longest one: the suffixes checked are bounded by the stops, not the text).
        let longest = self.stops.iter().map(String::len).max().unwrap_or(0);
        let mut keep_from = self.pending.len();
        for (i, _) in self.pending.char_indices().rev() {
            if self.pending.len() - i >= longest {
                break;
            }
            let suffix = &self.pending[i..];
            if self.stops.iter().any(|s| s.starts_with(suffix)) {
                keep_from = i;
            }
        }
        let out = self.pending[..keep_from].to_string();
        self.pending.drain(..keep_from);
        (out, None)
    }

    /// The held-back text, once the stream ended without a match.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }
}

/// Length of the longest common prefix of two token lists (how much of a cached sequence a
/// new prompt can reuse).
pub fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// What [`generate`] does with each chosen token: stop tokens, streaming, stop strings.
struct TextHooks<'a> {
    opts: &'a GenerateOptions,
    decoder: &'a mut dyn TokenDecoder,
    stops: StopMatcher,
    on_text: &'a mut dyn FnMut(&str),
    tokens: Vec<u32>,
    text: String,
}

impl TextHooks<'_> {
    fn emit(&mut self, s: &str) {
        if !s.is_empty() {
            (self.on_text)(s);
            self.text.push_str(s);
        }
    }
}

impl DecodeHooks for TextHooks<'_> {
    type Stop = StopReason;

    fn allowed(&mut self, _remaining: usize) -> Option<Vec<u32>> {
        None
    }

    fn push(&mut self, tok: u32) -> Option<StopReason> {
        self.tokens.push(tok);
        if self.opts.stop_tokens.contains(&tok) {
            return Some(StopReason::StopToken(tok));
        }
        let (out, hit) = self.stops.push(&self.decoder.push(tok));
        self.emit(&out);
        hit.map(StopReason::StopString)
    }
}

/// Generates a continuation of `prompt` (the full sequence, BOS included). The session's cached
/// tokens that agree with `prompt` are reused; the rest of the cache is discarded. `on_text`
/// receives the text as it becomes final.
///
/// Afterwards the session holds the prompt and the generated tokens except the last one (which
/// was sampled but never evaluated); with speculation, draft positions past the end are
/// dropped.
pub fn generate(
    session: &mut Session,
    sampler: &mut Sampler,
    decoder: &mut dyn TokenDecoder,
    prompt: &[u32],
    opts: &GenerateOptions,
    on_text: &mut dyn FnMut(&str),
) -> Result<Generation, ModelError> {
    generate_speculative(
        session,
        sampler,
        decoder,
        prompt,
        opts,
        &SpeculateConfig::off(),
        on_text,
    )
}

/// [`generate`] with prompt-lookup speculative decoding as `speculate` sets it (`run
/// --speculate`; see [`crate::speculate`]): greedy output is the same as without, sampled
/// output has the same distribution; [`Generation::decode`] counts the forward passes saved.
pub fn generate_speculative(
    session: &mut Session,
    sampler: &mut Sampler,
    decoder: &mut dyn TokenDecoder,
    prompt: &[u32],
    opts: &GenerateOptions,
    speculate: &SpeculateConfig,
    on_text: &mut dyn FnMut(&str),
) -> Result<Generation, ModelError> {
    if prompt.is_empty() {
        return Err(ModelError::EmptyInput);
    }
    let common = common_prefix(session.tokens(), prompt);
    // The last prompt token is always evaluated: its logits choose the first new token.
    let keep = common.min(prompt.len() - 1);
    session.truncate(keep);
    let start = Instant::now();
    let logits = session.eval(&prompt[keep..])?;
    let prompt_time = start.elapsed();

    let gen_start = Instant::now();
    let mut hooks = TextHooks {
        opts,
        decoder,
        stops: StopMatcher::new(&opts.stop_strings),
        on_text,
        tokens: Vec::new(),
        text: String::new(),
    };
    let (end, decode) = speculate::decode(session, sampler, prompt, logits, opts.max_tokens, speculate, &mut hooks)?;
    let stop = match end {
        DecodeEnd::Hook(reason) => reason,
        DecodeEnd::MaxTokens => StopReason::MaxTokens,
        DecodeEnd::ContextFull => StopReason::ContextFull,
        DecodeEnd::NoCandidates => StopReason::NoCandidates,
    };
    if !matches!(stop, StopReason::StopString(_)) {
        let tail = hooks.decoder.finish();
        let (out, hit) = hooks.stops.push(&tail);
        hooks.emit(&out);
        if hit.is_none() {
            let rest = hooks.stops.finish();
            hooks.emit(&rest);
        }
    }
    let TextHooks { tokens, text, .. } = hooks;
    Ok(Generation {
        n_generated: tokens.len(),
        tokens,
        text,
        stop,
        n_prompt: prompt.len(),
        n_prompt_evaluated: prompt.len() - keep,
        prompt_time,
        gen_time: gen_start.elapsed(),
        decode,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&str]) -> (String, Option<String>) {
        let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
        let mut m = StopMatcher::new(&stops);
        let mut out = String::new();
        for p in pieces {
            let (o, hit) = m.push(p);
            out.push_str(&o);
            if hit.is_some() {
                return (out, hit);
            }
        }
        out.push_str(&m.finish());
        (out, None)
    }

    #[test]
    fn stop_string_split_across_pieces_is_never_emitted() {
        let stops = vec!["\nObservation:".to_string()];
        let mut m = StopMatcher::new(&stops);
        assert_eq!(m.push("ls -l"), ("ls -l".into(), None));
        assert_eq!(m.push("\nObs"), (String::new(), None));
        assert_eq!(m.push("erva"), (String::new(), None));
        assert_eq!(m.push("tion: x"), (String::new(), Some("\nObservation:".into())));
    }

    #[test]
    fn held_back_text_is_released_when_it_stops_matching() {
        assert_eq!(run(&["STOP"], &["a S", "T", "x b"]), ("a STx b".into(), None));
        assert_eq!(run(&["STOP"], &["a ST"]), ("a ST".into(), None));
        assert_eq!(run(&["STOP"], &["xSTOPy"]), ("x".into(), Some("STOP".into())));
    }

    #[test]
    fn earliest_of_several_stop_strings_wins() {
        assert_eq!(run(&["bc", "ab"], &["zabc"]), ("z".into(), Some("ab".into())));
        assert_eq!(run(&[], &["hello ", "world"]), ("hello world".into(), None));
        assert_eq!(run(&[""], &["hello"]), ("hello".into(), None));
    }

    #[test]
    fn multibyte_text_is_split_on_char_boundaries() {
        assert_eq!(run(&["éa"], &["xé", "é", "b"]), ("xééb".into(), None));
        assert_eq!(run(&["éa"], &["xé", "éa"]), ("xé".into(), Some("éa".into())));
    }
}
