//! Causal grouped-query attention of one token over the KV cache.

use super::kv_cache::Row;
use super::ops;

/// `x = softmax(x * scale)` in place, the attention weights of one head: max, then `exp` by
/// the vectorized `kernels::cpu::ops::exp_in_place` (lane partial sums). At depth 3072 a
/// decoded token runs this over 3072 scores for each head of each layer; libm's `expf` one
/// element at a time was a tenth of TinyLlama's attention time.
fn softmax_scaled(x: &mut [f32], scale: f32) {
    let max = ops::max_f32(x);
    if max == f32::NEG_INFINITY || max.is_nan() {
        // No finite score (or a NaN): the reference softmax's answer.
        x.iter_mut().for_each(|v| *v *= scale);
        ops::softmax(x);
        return;
    }
    let inv = 1.0 / ops::exp_in_place(x, max, scale);
    x.iter_mut().for_each(|v| *v *= inv);
}

/// `ln softmax(logits)` of one row of logits, computed once for every token it is asked about
/// (NaN logits count for nothing). Once per generated token over the whole vocabulary when a
/// server reports log-probabilities: vectorized max and sum of exponentials
/// (`kernels::cpu::ops`; a serial max and libm `exp` per entry cost ~0.25-0.4 ms per token at
/// 49152 entries).
pub(crate) struct LogSoftmax<'a> {
    logits: &'a [f32],
    max: f32,
    /// `ln sum(exp(logit - max))`.
    log_sum: f32,
}

impl<'a> LogSoftmax<'a> {
    pub(crate) fn of(logits: &'a [f32]) -> LogSoftmax<'a> {
        let max = ops::max_f32(logits);
        LogSoftmax {
            logits,
            max,
            log_sum: ops::sum_exp(logits, max, 1.0).ln(),
        }
    }

    /// The log-probability of token `id`.
    pub(crate) fn at(&self, id: u32) -> f32 {
        (self.logits[id as usize] - self.max) - self.log_sum
    }

    /// The `k` most likely tokens with their log-probabilities, most likely first, ties by
    /// lower id; NaN logits are never among them.
    pub(crate) fn top(&self, k: usize) -> Vec<(u32, f32)> {
        if k == 0 {
            return Vec::new();
        }
        let mut best: Vec<(u32, f32)> = Vec::with_capacity(k + 1);
        for (i, &l) in self.logits.iter().enumerate() {
            if l.is_nan() || (best.len() == k && l <= best[k - 1].1) {
                continue;
            }
            let at = best.partition_point(|&(_, b)| b >= l);
            best.insert(at, (i as u32, l));
            best.truncate(k);
        }
        best.into_iter().map(|(i, _)| (i, self.at(i))).collect()
    }
}

/// `ln softmax(logits)[id]`: the log-probability of token `id` ([`LogSoftmax::at`]).
pub(crate) fn log_softmax_at(logits: &[f32], id: u32) -> f32 {
    LogSoftmax::of(logits).at(id)
}

/// Attention of one query head of one token over positions `0..n_seen` of its KV head's
/// cached rows (`keys` and `values`, one `head_dim` row per position, as
/// `KvCache::keys` gives them): `out = softmax(q·K^T / sqrt(head_dim)) · V`. `q` and `out` are
/// `head_dim` wide; `scores` is scratch of at least `n_seen` elements.
pub(crate) fn attend_head(q: &[f32], keys: &Row, values: &Row, n_seen: usize, scores: &mut [f32], out: &mut [f32]) {
    let hd = q.len();
    let scale = 1.0 / (hd as f32).sqrt();
    let scores = &mut scores[..n_seen];
    match keys {
        Row::F16(k) => ops::dot_f16_rows(k, hd, q, scores),
        Row::F32(k) => {
            debug_assert!(k.len() >= n_seen * hd, "{n_seen} key rows of {hd}");
            for (s, k) in scores.iter_mut().zip(k.chunks_exact(hd)) {
                *s = k.iter().zip(q).map(|(a, b)| a * b).sum();
            }
        }
    }
    softmax_scaled(scores, scale);
    match values {
        Row::F16(v) => ops::weighted_sum_f16_rows(v, hd, scores, out),
        Row::F32(v) => {
            debug_assert!(v.len() >= n_seen * hd, "{n_seen} value rows of {hd}");
            out.fill(0.0);
            for (&a, v) in scores.iter().zip(v.chunks_exact(hd)) {
                for (y, x) in out.iter_mut().zip(v) {
                    *y += a * x;
                }
            }
        }
    }
}

/// [`attend_head`] for several query heads of one KV head at once (`head_dim` wide each): the
/// heads of a block of tokens of one sequence that read it (grouped-query attention: the
/// `n_heads / n_kv_heads` query heads of each token), `qs` and `out` holding them head after
/// head. Query head `i` (of `qs.len() / head_dim`) sees positions `0..seen[i]` of `keys` and
/// `values`, which hold at least the most any head sees; `scores` is scratch of at least
/// `seen.len()` times that. With an f16 cache each key and value row is widened once for the
/// whole block; every head's result is bit-identical to its own [`attend_head`].
pub(crate) fn attend_block(
    head_dim: usize,
    qs: &[f32],
    seen: &[usize],
    keys: &Row,
    values: &Row,
    scores: &mut [f32],
    out: &mut [f32],
) {
    let hd = head_dim;
    match (keys, values) {
        (Row::F16(k), Row::F16(v)) => {
            let n = seen.iter().copied().max().unwrap_or(0);
            let scores = &mut scores[..seen.len() * n];
            ops::dot_f16_rows_grouped(k, hd, qs, hd, seen, scores);
            let scale = 1.0 / (hd as f32).sqrt();
            for (s, &len) in scores.chunks_exact_mut(n.max(1)).zip(seen) {
                softmax_scaled(&mut s[..len], scale);
            }
            ops::weighted_sum_f16_rows_grouped(v, hd, scores, seen, out);
        }
        _ => {
            for ((qh, oh), &n_seen) in qs.chunks_exact(hd).zip(out.chunks_exact_mut(hd)).zip(seen) {
                attend_head(qh, keys, values, n_seen, scores, oh);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_log_probs_are_the_largest_in_order_with_their_log_probabilities() {
        let logits = [0.5f32, 3.0, f32::NAN, -1.0, 3.0, 2.0, f32::NEG_INFINITY];
        let norm = LogSoftmax::of(&logits);
        let top = norm.top(3);
        assert_eq!(top.iter().map(|t| t.0).collect::<Vec<_>>(), [1, 4, 5]);
        for (id, lp) in &top {
            assert_eq!(*lp, log_softmax_at(&logits, *id));
        }
        assert_eq!(norm.top(0), []);
        assert_eq!(norm.top(99).len(), 6, "NaN is never listed");
    }

    #[test]
    fn log_softmax_at_matches_the_f64_reference() {
        let reference = |l: &[f32], id: usize| {
            let max = l
                .iter()
                .copied()
                .filter(|x| !x.is_nan())
                .fold(f32::NEG_INFINITY, f32::max);
            let sum: f64 = l
                .iter()
                .filter(|x| !x.is_nan())
                .map(|&x| ((x - max) as f64).exp())
                .sum();
            (l[id] - max) as f64 - sum.ln()
        };
        for n in [1, 7, 8, 100, 49152, 49157] {
            let mut l: Vec<f32> = (0..n).map(|i| ((i * 7919 % 10007) as f32 - 5000.0) * 0.004).collect();
            if n > 8 {
                l[3] = f32::NAN;
                l[5] = f32::NEG_INFINITY;
            }
            if n % 8 != 0 {
                // The largest logit in the tail past the last full lane chunk.
                l[n - 1] = 40.0;
            }
            for id in [0, n / 2, n - 1] {
                let (ours, want) = (log_softmax_at(&l, id as u32), reference(&l, id));
                assert!(
                    (ours as f64 - want).abs() <= 1e-5 * want.abs().max(1.0),
                    "n {n} id {id}: {ours} vs {want}"
                );
            }
        }
        assert_eq!(log_softmax_at(&[2.0, f32::NEG_INFINITY], 0), 0.0);
    }

    /// A block of prefill tokens through [`attend_block`] gives every token's every head what
    /// [`attend_head`] gives it alone, bit for bit, with an f16 cache (the grouped kernels) and
    /// an f32 one (head by head), with and without grouped-query attention (several query
    /// heads per token), blocks whose tokens see 1..=n positions (each up to itself, as in a
    /// causal prefill) or all the same.
    #[test]
    fn a_block_of_tokens_attends_as_each_token_alone() {
        let values = |n: usize, seed: u32| -> Vec<f32> {
            (0..n as u32)
                .map(|i| ((i.wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8) % 2001) as f32 / 500.0 - 2.0)
                .collect()
        };
        for (group, hd) in [(1, 16), (4, 64), (2, 20), (2, 128)] {
            let n_pos = 23;
            let k32 = values(n_pos * hd, 1);
            let v32 = values(n_pos * hd, 2);
            let k16: Vec<half::f16> = k32.iter().map(|&x| half::f16::from_f32(x)).collect();
            let v16: Vec<half::f16> = v32.iter().map(|&x| half::f16::from_f32(x)).collect();
            let caches = [(Row::F16(&k16), Row::F16(&v16)), (Row::F32(&k32), Row::F32(&v32))];
            for seen in [
                vec![1, 2, 3, 4, 5, 6, 7, 8],
                vec![13, 14, 15],
                vec![23],
                vec![9, 9, 9, 9],
            ] {
                let qs = values(seen.len() * group * hd, 3 + group as u32);
                // One entry per query head: the positions its token sees.
                let head_seen: Vec<usize> = seen.iter().flat_map(|&n| std::iter::repeat_n(n, group)).collect();
                for (keys, vals) in &caches {
                    let mut scores = vec![0f32; seen.len() * group * n_pos];
                    let mut out = vec![f32::NAN; qs.len()];
                    attend_block(hd, &qs, &head_seen, keys, vals, &mut scores, &mut out);
                    for (i, q) in qs.chunks_exact(hd).enumerate() {
                        let mut alone = vec![f32::NAN; hd];
                        let mut s = vec![0f32; n_pos];
                        attend_head(q, keys, vals, head_seen[i], &mut s, &mut alone);
                        let block = &out[i * hd..(i + 1) * hd];
                        assert!(
                            alone.iter().zip(block).all(|(a, o)| a.to_bits() == o.to_bits()),
                            "group {group} hd {hd} seen {seen:?} head {i}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn softmax_scaled_matches_the_reference_softmax() {
        for n in [1, 7, 8, 9, 100, 3073] {
            let x: Vec<f32> = (0..n).map(|i| ((i * 7919 % 1000) as f32 - 500.0) * 0.05).collect();
            let mut ours = x.clone();
            softmax_scaled(&mut ours, 0.125);
            let mut reference: Vec<f32> = x.iter().map(|v| v * 0.125).collect();
            ops::softmax(&mut reference);
            for (a, b) in ours.iter().zip(&reference) {
                assert!((a - b).abs() <= 1e-6 * b.max(1e-3), "n {n}: {a} vs {b}");
            }
            assert!((ours.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        }
        // All masked: uniform, as the reference.
        let mut masked = vec![f32::NEG_INFINITY; 5];
        softmax_scaled(&mut masked, 0.5);
        assert!(masked.iter().all(|&v| (v - 0.2).abs() < 1e-7));
    }
}
