//! Choosing the next token from logits: greedy, or temperature sampling with the usual
//! truncations, applied in llama.cpp's default order:
//!
//! 1. logit mask (optional, see below) — tokens not allowed are removed first;
//! 2. repetition penalty over the last `repeat_last_n` tokens of the history
//!    (positive logits divided by the penalty, negative ones multiplied);
//! 3. top-k; 4. top-p (nucleus); 5. min-p; 6. locally typical sampling (`typical_p`, on the
//!    distribution at the sampling temperature: TGI applies it last, after its temperature
//!    warper); 7. temperature; 8. draw from the softmax with a seeded, deterministic RNG. With
//!    `temperature <= 0` steps 3-8 become an argmax.
//!
//! # Logit mask hook (constrained decoding)
//! [`Sampler::sample_masked`] takes the list of token ids that may be produced (for example the
//! tokens that keep an agent's output inside its protocol); [`Sampler::sample_filtered`] takes a
//! predicate instead. Both return `None` when nothing is allowed. The mask is applied before
//! every other step, so truncations and the temperature only ever see allowed tokens.

/// Sampling parameters. The defaults are llama.cpp's.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplerConfig {
    /// 0 (or below) means greedy.
    pub temperature: f32,
    /// Keep the `top_k` most likely tokens; 0 disables.
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability sums to `top_p`; 1.0 disables.
    pub top_p: f32,
    /// Drop tokens less likely than `min_p` times the most likely one; 0.0 disables.
    pub min_p: f32,
    /// Locally typical sampling (Meister et al. 2022, Hugging Face's `TypicalLogitsWarper`):
    /// keep the tokens whose surprisal is closest to the distribution's entropy until their
    /// mass reaches `typical_p`; 1.0 disables.
    pub typical_p: f32,
    /// Repetition penalty; 1.0 disables.
    pub repeat_penalty: f32,
    /// How many of the most recent history tokens the penalty looks at (0: none).
    pub repeat_last_n: usize,
    pub seed: u64,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            typical_p: 1.0,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            seed: 0,
        }
    }
}

impl SamplerConfig {
    /// Deterministic argmax decoding.
    pub fn greedy() -> SamplerConfig {
        SamplerConfig {
            temperature: 0.0,
            ..Default::default()
        }
    }

    /// Rejects values that have no meaning (NaN, negative penalties, p outside 0..=1).
    pub fn validate(&self) -> Result<(), String> {
        if !self.temperature.is_finite() {
            return Err(format!("temperature {} is not a finite number", self.temperature));
        }
        if !(0.0..=1.0).contains(&self.top_p) {
            return Err(format!("top-p {} is not in 0..=1", self.top_p));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return Err(format!("min-p {} is not in 0..=1", self.min_p));
        }
        if !(0.0..=1.0).contains(&self.typical_p) {
            return Err(format!("typical-p {} is not in 0..=1", self.typical_p));
        }
        if !(self.repeat_penalty.is_finite() && self.repeat_penalty > 0.0) {
            return Err(format!("repeat penalty {} must be positive", self.repeat_penalty));
        }
        Ok(())
    }
}

/// SplitMix64: tiny, fast, and fully determined by the seed on every platform.
#[derive(Clone, Debug)]
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1) with 53 random bits.
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// A token sampler with its own RNG state.
#[derive(Clone, Debug)]
pub struct Sampler {
    config: SamplerConfig,
    rng: Rng,
}

/// A candidate token and its (possibly modified) logit.
#[derive(Clone, Copy, Debug)]
struct Cand {
    id: u32,
    logit: f32,
}

impl Sampler {
    pub fn new(config: SamplerConfig) -> Sampler {
        let rng = Rng(config.seed);
        Sampler { config, rng }
    }

    pub fn config(&self) -> &SamplerConfig {
        &self.config
    }

    /// Picks the next token. `history` is the sequence so far (prompt included); only its tail
    /// is used, by the repetition penalty. Returns `None` only for empty logits.
    pub fn sample(&mut self, logits: &[f32], history: &[u32]) -> Option<u32> {
        self.sample_filtered(logits, history, |_| true)
    }

    /// Like [`Sampler::sample`] but only ids in `allowed` can be chosen (ids outside the vocabulary
    /// are ignored). `None` when no allowed id is in the vocabulary.
    pub fn sample_masked(&mut self, logits: &[f32], history: &[u32], allowed: &[u32]) -> Option<u32> {
        self.sample_candidates(masked_candidates(logits, allowed), history)
    }

    /// Takes the random draw that choosing a token would take, without choosing one: a token
    /// forced by a constraint (jump-forward) is emitted unsampled, where the plain loop draws
    /// for it from a one-token mask, so the draws after it stay the plain loop's.
    pub fn skip_draw(&mut self) {
        if self.config.temperature > 0.0 {
            self.rng.next_f64();
        }
    }

    /// Like [`Sampler::sample`] but only ids for which `keep(id)` holds can be chosen.
    pub fn sample_filtered(&mut self, logits: &[f32], history: &[u32], keep: impl Fn(u32) -> bool) -> Option<u32> {
        let cands = (0..logits.len() as u32)
            .filter(|&id| keep(id))
            .map(|id| Cand {
                id,
                logit: logits[id as usize],
            })
            .collect();
        self.sample_candidates(cands, history)
    }

    fn sample_candidates(&mut self, c: Vec<Cand>, history: &[u32]) -> Option<u32> {
        if self.config.temperature <= 0.0 {
            return self.greedy_pick(c, history);
        }
        let dist = self.distribution_of(c, history);
        let r = self.rng.next_f64();
        let mut cum = 0.0;
        for &(id, pi) in &dist {
            cum += pi;
            if r < cum {
                return Some(id);
            }
        }
        dist.last().map(|&(id, _)| id)
    }

    /// The argmax after the repetition penalty (greedy decoding).
    fn greedy_pick(&self, mut c: Vec<Cand>, history: &[u32]) -> Option<u32> {
        c.retain(|x| !x.logit.is_nan());
        apply_repeat_penalty(&mut c, history, self.config.repeat_penalty, self.config.repeat_last_n);
        argmax(&c)
    }

    /// The distribution a sampling draw is taken from: every transform applied (penalty,
    /// top-k, top-p, min-p, typical, temperature), as (id, probability) pairs in descending order of
    /// probability (ties: lower id first). Empty when nothing is left.
    fn distribution_of(&self, mut c: Vec<Cand>, history: &[u32]) -> Vec<(u32, f64)> {
        // NaN logits would poison every comparison below; treat them as impossible.
        c.retain(|x| !x.logit.is_nan());
        if c.is_empty() {
            return Vec::new();
        }
        let cfg = &self.config;
        apply_repeat_penalty(&mut c, history, cfg.repeat_penalty, cfg.repeat_last_n);
        sort_desc(&mut c);
        if cfg.top_k > 0 && cfg.top_k < c.len() {
            c.truncate(cfg.top_k);
        }
        if cfg.top_p < 1.0 {
            let p = softmax(&c, 1.0);
            let mut cum = 0.0;
            let mut keep = c.len();
            for (i, pi) in p.iter().enumerate() {
                cum += pi;
                if cum >= cfg.top_p as f64 {
                    keep = i + 1;
                    break;
                }
            }
            c.truncate(keep);
        }
        if cfg.min_p > 0.0 {
            // p_i >= min_p * p_max  <=>  logit_i >= logit_max + ln(min_p)
            let threshold = c[0].logit + cfg.min_p.ln();
            let keep = c.iter().take_while(|x| x.logit >= threshold).count().max(1);
            c.truncate(keep);
        }
        if cfg.typical_p < 1.0 {
            keep_locally_typical(&mut c, cfg.typical_p, cfg.temperature);
        }
        let p = softmax(&c, cfg.temperature);
        c.iter().map(|x| x.id).zip(p).collect()
    }
}

/// Locally typical sampling with Hugging Face's `TypicalLogitsWarper` semantics, on the
/// candidates' distribution at `temperature` (TGI applies its temperature warper first): with
/// H the entropy of that distribution, candidates are ranked by |-ln p - H| (ascending) and
/// the shortest run of that ranking whose mass reaches `mass` is kept, plus any candidate tied
/// with its last score; so at least one token always stays. Keeps `c`'s order.
fn keep_locally_typical(c: &mut Vec<Cand>, mass: f32, temperature: f32) {
    if c.len() <= 1 {
        return;
    }
    let p = softmax(c, temperature);
    let entropy: f64 = -p.iter().filter(|&&pi| pi > 0.0).map(|&pi| pi * pi.ln()).sum::<f64>();
    // A candidate of probability 0 (a -inf logit) is as atypical as can be.
    let distance: Vec<f64> = p
        .iter()
        .map(|&pi| {
            if pi > 0.0 {
                (-pi.ln() - entropy).abs()
            } else {
                f64::INFINITY
            }
        })
        .collect();
    let mut order: Vec<usize> = (0..c.len()).collect();
    order.sort_by(|&a, &b| distance[a].total_cmp(&distance[b]));
    let mut cum = 0.0;
    // The first rank whose cumulative mass reaches `mass` (the last one if rounding never does).
    let mut last = order[order.len() - 1];
    for &i in &order {
        cum += p[i];
        if cum >= mass as f64 {
            last = i;
            break;
        }
    }
    let threshold = distance[last];
    let mut i = 0;
    c.retain(|_| {
        let keep = distance[i] <= threshold;
        i += 1;
        keep
    });
}

/// The ids of `allowed` inside the vocabulary, sorted and deduplicated, as candidates.
fn masked_candidates(logits: &[f32], allowed: &[u32]) -> Vec<Cand> {
    let mut cands: Vec<Cand> = allowed
        .iter()
        .filter(|&&id| (id as usize) < logits.len())
        .map(|&id| Cand {
            id,
            logit: logits[id as usize],
        })
        .collect();
    cands.sort_unstable_by_key(|c| c.id);
    cands.dedup_by_key(|c| c.id);
    cands
}

/// llama.cpp's penalty: each distinct recent token's logit is divided by the penalty when
/// positive and multiplied by it when negative (so it always becomes less likely).
fn apply_repeat_penalty(c: &mut [Cand], history: &[u32], penalty: f32, last_n: usize) {
    if penalty == 1.0 || last_n == 0 || history.is_empty() {
        return;
    }
    let recent = &history[history.len().saturating_sub(last_n)..];
    let mut seen: Vec<u32> = recent.to_vec();
    seen.sort_unstable();
    seen.dedup();
    for x in c.iter_mut() {
        if seen.binary_search(&x.id).is_ok() {
            x.logit = if x.logit > 0.0 {
                x.logit / penalty
            } else {
                x.logit * penalty
            };
        }
    }
}

/// Greedy decoding's choice over a row of logits: the highest, ties to the lowest id (what
/// [`Sampler`] picks at temperature 0 without penalties). 0 for an empty row.
pub fn greedy_token(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] {
            best = i;
        }
    }
    best as u32
}

/// The highest logit; ties go to the lowest id (as a plain argmax over the vocabulary would).
fn argmax(c: &[Cand]) -> Option<u32> {
    let mut best: Option<Cand> = None;
    for &x in c {
        match best {
            Some(b) if x.logit < b.logit || (x.logit == b.logit && x.id > b.id) => {}
            _ => best = Some(x),
        }
    }
    best.map(|b| b.id)
}

fn sort_desc(c: &mut [Cand]) {
    c.sort_unstable_by(|a, b| b.logit.total_cmp(&a.logit).then(a.id.cmp(&b.id)));
}

/// Probabilities of the candidates at `temperature` (> 0), in f64 so long tails do not lose
/// mass. The logits are divided by the temperature after subtracting the largest, so a tiny
/// temperature (even a subnormal one) tends to the argmax instead of overflowing to inf - inf.
fn softmax(c: &[Cand], temperature: f32) -> Vec<f64> {
    let max = c.iter().map(|x| x.logit).fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        // Every logit is -inf (fully masked by the model): fall back to uniform.
        return vec![1.0 / c.len() as f64; c.len()];
    }
    if max == f32::INFINITY {
        // +inf logits (a repetition penalty near 0 can make them) share all the mass.
        let n = c.iter().filter(|x| x.logit == f32::INFINITY).count() as f64;
        return c
            .iter()
            .map(|x| if x.logit == f32::INFINITY { 1.0 / n } else { 0.0 })
            .collect();
    }
    let t = temperature as f64;
    let e: Vec<f64> = c.iter().map(|x| ((x.logit - max) as f64 / t).exp()).collect();
    let sum: f64 = e.iter().sum();
    e.into_iter().map(|v| v / sum).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(temperature: f32) -> SamplerConfig {
        SamplerConfig {
            temperature,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            typical_p: 1.0,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            seed: 42,
        }
    }

    #[test]
    fn greedy_is_argmax_with_lowest_id_on_ties() {
        let mut s = Sampler::new(cfg(0.0));
        assert_eq!(s.sample(&[0.1, 3.0, -1.0, 3.0], &[]), Some(1));
        assert_eq!(s.sample(&[], &[]), None);
    }

    #[test]
    fn repeat_penalty_divides_positive_and_multiplies_negative() {
        let mut c = cfg(0.0);
        c.repeat_penalty = 2.0;
        let mut s = Sampler::new(c);
        // Token 0 (logit 3) seen -> 1.5 < token 1's 2.0.
        assert_eq!(s.sample(&[3.0, 2.0, -1.0], &[0]), Some(1));
        // Negative logits get more negative: token 2 (-1 -> -2) loses to token 0 (-1.5).
        assert_eq!(s.sample(&[-1.5, -3.0, -1.0], &[2]), Some(0));
        // Only the last `repeat_last_n` history tokens count.
        let mut c = cfg(0.0);
        c.repeat_penalty = 2.0;
        c.repeat_last_n = 1;
        let mut s = Sampler::new(c);
        assert_eq!(s.sample(&[3.0, 2.0, -1.0], &[0, 2]), Some(0));
    }

    #[test]
    fn a_tiny_temperature_or_penalty_tends_to_the_argmax_instead_of_overflowing() {
        let logits = [0.5f32, 3.0, -1.0, 2.9];
        for t in [1e-40f32, f32::MIN_POSITIVE, 1e-30, 1e-6] {
            let mut c = cfg(t);
            c.typical_p = if t < 1e-35 { 0.9 } else { 1.0 };
            let mut s = Sampler::new(c);
            assert!((0..200).all(|_| s.sample(&logits, &[]) == Some(1)), "temperature {t}");
        }
        // A penalty near 0 divides repeated positive logits to +inf: those share the mass.
        let mut c = cfg(1.0);
        c.repeat_penalty = 1e-39;
        let mut s = Sampler::new(c);
        let picks: Vec<u32> = (0..400).map(|_| s.sample(&logits, &[0, 3]).unwrap()).collect();
        assert!(picks.iter().all(|&id| id == 0 || id == 3), "{picks:?}");
        assert!(picks.contains(&0) && picks.contains(&3));
    }

    #[test]
    fn same_seed_same_tokens_and_distribution_follows_softmax() {
        let logits = [0.0f32, (2.0f32).ln(), (7.0f32).ln()]; // probabilities 0.1, 0.2, 0.7
        let draw = |seed| {
            let mut c = cfg(1.0);
            c.seed = seed;
            let mut s = Sampler::new(c);
            (0..20000).map(|_| s.sample(&logits, &[]).unwrap()).collect::<Vec<_>>()
        };
        let a = draw(7);
        assert_eq!(a, draw(7));
        assert_ne!(a, draw(8));
        let freq = |id| a.iter().filter(|&&x| x == id).count() as f64 / a.len() as f64;
        assert!((freq(0) - 0.1).abs() < 0.015, "{}", freq(0));
        assert!((freq(1) - 0.2).abs() < 0.015, "{}", freq(1));
        assert!((freq(2) - 0.7).abs() < 0.015, "{}", freq(2));
    }

    #[test]
    fn truncations_restrict_the_support() {
        let logits = [5.0f32, 4.0, 3.0, 2.0, 1.0];
        let support = |c: SamplerConfig| {
            let mut s = Sampler::new(c);
            let mut seen: Vec<u32> = (0..3000).map(|_| s.sample(&logits, &[]).unwrap()).collect();
            seen.sort_unstable();
            seen.dedup();
            seen
        };
        let mut c = cfg(5.0);
        c.top_k = 2;
        assert_eq!(support(c), vec![0, 1]);
        // probabilities at T=1 before temperature: 0.636, 0.234, 0.086, ... -> top-p 0.8 keeps 2.
        let mut c = cfg(5.0);
        c.top_p = 0.8;
        assert_eq!(support(c), vec![0, 1]);
        // min-p 0.1: keeps p >= 0.0636, i.e. ids 0, 1, 2.
        let mut c = cfg(5.0);
        c.min_p = 0.1;
        assert_eq!(support(c), vec![0, 1, 2]);
        // Without truncation a high temperature reaches every token.
        assert_eq!(support(cfg(5.0)), vec![0, 1, 2, 3, 4]);
    }

    /// The support of the distribution a draw is taken from.
    fn support_of(c: SamplerConfig, logits: &[f32]) -> Vec<u32> {
        let s = Sampler::new(c);
        let cands = (0..logits.len() as u32)
            .map(|id| Cand {
                id,
                logit: logits[id as usize],
            })
            .collect();
        let mut ids: Vec<u32> = s.distribution_of(cands, &[]).into_iter().map(|(id, _)| id).collect();
        ids.sort_unstable();
        ids
    }

    #[test]
    fn typical_keeps_tokens_closest_to_the_entropy() {
        // p = 1/2, 1/4, 1/8, 1/8: H = 1.75 ln 2; the distances |-ln p - H| are 0.75 ln 2,
        // 0.25 ln 2, 1.25 ln 2, 1.25 ln 2, so the ranking is 1 (mass 0.25), 0 (0.75), then 2
        // and 3 tied (1.0).
        let logits = [0.5f32.ln(), 0.25f32.ln(), 0.125f32.ln(), 0.125f32.ln()];
        let typical = |typical_p: f32| {
            let mut c = cfg(1.0);
            c.typical_p = typical_p;
            support_of(c, &logits)
        };
        // The most likely token is not the most typical one: a mass of 0.2 keeps token 1 alone.
        assert_eq!(typical(0.2), vec![1]);
        assert_eq!(typical(0.5), vec![0, 1]);
        // Reaching 0.8 needs token 2; token 3 ties with it and stays too.
        assert_eq!(typical(0.8), vec![0, 1, 2, 3]);
        assert_eq!(typical(1.0), vec![0, 1, 2, 3]);
        // Even a mass of 0 keeps one token.
        assert_eq!(typical(0.0), vec![1]);
        // The kept tokens' probabilities are renormalized (2/3 and 1/3 at typical_p 0.5).
        let mut c = cfg(1.0);
        c.typical_p = 0.5;
        let s = Sampler::new(c);
        let cands = logits
            .iter()
            .enumerate()
            .map(|(id, &logit)| Cand { id: id as u32, logit })
            .collect();
        let dist = s.distribution_of(cands, &[]);
        assert_eq!(dist.len(), 2);
        assert!((dist[0].1 - 2.0 / 3.0).abs() < 1e-6 && dist[0].0 == 0, "{dist:?}");
        assert!((dist[1].1 - 1.0 / 3.0).abs() < 1e-6 && dist[1].0 == 1, "{dist:?}");
    }

    #[test]
    fn typical_sees_the_distribution_at_the_sampling_temperature() {
        // At T = 0.5 the same logits give p ~ 0.727, 0.182, 0.045, 0.045 and H ~ 0.823: the
        // distances are ~0.50, 0.88, 2.27, 2.27, so the most typical token is now token 0
        // (TGI applies its temperature warper before the typical one).
        let logits = [0.5f32.ln(), 0.25f32.ln(), 0.125f32.ln(), 0.125f32.ln()];
        let mut c = cfg(0.5);
        c.typical_p = 0.2;
        assert_eq!(support_of(c.clone(), &logits), vec![0]);
        c.temperature = 1.0;
        assert_eq!(support_of(c, &logits), vec![1]);
        // After top-k 2 (p = 2/3, 1/3 at T = 1: H ~ 0.637, distances 0.23, 0.46) token 0 wins.
        let mut c = cfg(1.0);
        c.typical_p = 0.2;
        c.top_k = 2;
        assert_eq!(support_of(c, &logits), vec![0]);
        // Sampling draws only from the kept tokens.
        let mut c = cfg(1.0);
        c.typical_p = 0.2;
        let mut s = Sampler::new(c);
        assert!((0..200).all(|_| s.sample(&logits, &[]) == Some(1)));
    }

    #[test]
    fn mask_is_applied_before_everything() {
        let logits = [9.0f32, 1.0, 2.0, 0.5];
        let mut s = Sampler::new(cfg(0.0));
        assert_eq!(s.sample_masked(&logits, &[], &[1, 3, 99]), Some(1));
        assert_eq!(s.sample_masked(&logits, &[], &[99]), None);
        assert_eq!(s.sample_filtered(&logits, &[], |id| id >= 2), Some(2));
        let mut c = cfg(1.0);
        c.top_k = 1;
        let mut s = Sampler::new(c);
        for _ in 0..50 {
            assert_eq!(s.sample_masked(&logits, &[], &[3, 2]), Some(2));
        }
    }

    #[test]
    fn validate_rejects_nonsense() {
        assert!(SamplerConfig::default().validate().is_ok());
        let c = SamplerConfig {
            top_p: 1.5,
            ..Default::default()
        };
        assert!(c.validate().is_err());
        let c = SamplerConfig {
            repeat_penalty: 0.0,
            ..Default::default()
        };
        assert!(c.validate().is_err());
        let c = SamplerConfig {
            typical_p: 1.2,
            ..Default::default()
        };
        assert!(c.validate().is_err());
        for t in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            assert!(cfg(t).validate().is_err(), "{t}");
        }
    }
}
