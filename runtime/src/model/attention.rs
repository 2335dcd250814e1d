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

/// Geometry of the attention heads.
#[derive(Clone, Copy)]
pub(crate) struct Heads {
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
}

/// Attention of query head `head` of one token that sees positions `0..n_seen` of the cache:
/// `out = softmax(q·K^T / sqrt(head_dim)) · V` over that head's KV head. `q` and `out` are
/// `head_dim` wide; `scores` is scratch of at least `n_seen` elements.
#[allow(clippy::too_many_arguments)]
pub(crate) fn attend_head(
    h: Heads,
    head: usize,
    q: &[f32],
    keys: &Row,
    values: &Row,
    n_seen: usize,
    scores: &mut [f32],
    out: &mut [f32],
) {
    let hd = h.head_dim;
    let kv_dim = h.n_kv_heads * hd;
    // Query heads are grouped: `group` consecutive query heads read the same KV head.
    let group = h.n_heads / h.n_kv_heads;
    let kv_off = (head / group) * hd;
    let scale = 1.0 / (hd as f32).sqrt();
    let scores = &mut scores[..n_seen];
    // Position j's head lies at `j * kv_dim + kv_off` of the cache rows.
    match keys {
        Row::F16(k) => ops::dot_f16_rows(&k[kv_off..], kv_dim, q, scores),
        Row::F32(k) => {
            for (j, s) in scores.iter_mut().enumerate() {
                let o = j * kv_dim + kv_off;
                *s = k[o..o + hd].iter().zip(q).map(|(a, b)| a * b).sum();
            }
        }
    }
    softmax_scaled(scores, scale);
    match values {
        Row::F16(v) => ops::weighted_sum_f16_rows(&v[kv_off..], kv_dim, scores, out),
        Row::F32(v) => {
            out.fill(0.0);
            for (j, &a) in scores.iter().enumerate() {
                let o = j * kv_dim + kv_off;
                for (y, x) in out.iter_mut().zip(&v[o..o + hd]) {
                    *y += a * x;
                }
            }
        }
    }
}

/// [`attend_head`] for the query heads of KV head `kv_head` of a block of tokens of one
/// sequence at once: `qs` and `out` hold, token after token, the `n_heads / n_kv_heads` query
/// heads that read this KV head (grouped-query attention); query head `i` (of `qs.len() /
/// head_dim`) sees positions `0..seen[i]` of the cache (its token's), and `keys`/`values` hold
/// at least the most any head sees; `scores` is scratch of at least `seen.len()` times that.
/// With an f16 cache each key and value row is widened once for the whole block (all its
/// tokens' heads); every head's result is bit-identical to its own [`attend_head`].
#[allow(clippy::too_many_arguments)]
pub(crate) fn attend_block(
    h: Heads,
    kv_head: usize,
    qs: &[f32],
    seen: &[usize],
    keys: &Row,
    values: &Row,
    scores: &mut [f32],
    out: &mut [f32],
) {
    let (hd, group) = (h.head_dim, h.n_heads / h.n_kv_heads);
    match (keys, values) {
        (Row::F16(k), Row::F16(v)) => {
            let (kv_dim, kv_off) = (h.n_kv_heads * hd, kv_head * hd);
            let n = seen.iter().copied().max().unwrap_or(0);
            let scores = &mut scores[..seen.len() * n];
            ops::dot_f16_rows_grouped(&k[kv_off..], kv_dim, qs, hd, seen, scores);
            let scale = 1.0 / (hd as f32).sqrt();
            for (s, &len) in scores.chunks_exact_mut(n.max(1)).zip(seen) {
                softmax_scaled(&mut s[..len], scale);
            }
            ops::weighted_sum_f16_rows_grouped(&v[kv_off..], kv_dim, scores, seen, out);
        }
        _ => {
            let per_head = qs.chunks_exact(hd).zip(out.chunks_exact_mut(hd)).zip(seen).enumerate();
            for (i, ((qh, oh), &n_seen)) in per_head {
                attend_head(h, kv_head * group + i % group, qh, keys, values, n_seen, scores, oh);
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
    /// an f32 one (head by head), with and without grouped-query attention, blocks whose tokens
    /// see 1..=n positions (each up to itself, as in a causal prefill) or all the same.
    #[test]
    fn a_block_of_tokens_attends_as_each_token_alone() {
        let values = |n: usize, seed: u32| -> Vec<f32> {
            (0..n as u32)
                .map(|i| ((i.wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8) % 2001) as f32 / 500.0 - 2.0)
                .collect()
        };
        for (n_heads, n_kv_heads, hd) in [(4, 4, 16), (8, 2, 64), (6, 3, 20), (2, 1, 128)] {
            let h = Heads {
                n_heads,
                n_kv_heads,
                head_dim: hd,
            };
            let (group, kv_dim, n_pos) = (n_heads / n_kv_heads, n_kv_heads * hd, 23);
            let k32 = values(n_pos * kv_dim, 1);
            let v32 = values(n_pos * kv_dim, 2);
            let k16: Vec<half::f16> = k32.iter().map(|&x| half::f16::from_f32(x)).collect();
            let v16: Vec<half::f16> = v32.iter().map(|&x| half::f16::from_f32(x)).collect();
            let caches = [(Row::F16(&k16), Row::F16(&v16)), (Row::F32(&k32), Row::F32(&v32))];
            for seen in [
                vec![1, 2, 3, 4, 5, 6, 7, 8],
                vec![13, 14, 15],
                vec![23],
                vec![9, 9, 9, 9],
            ] {
                for kv_head in 0..n_kv_heads {
                    let qs = values(seen.len() * group * hd, 3 + kv_head as u32);
                    // One entry per query head: the positions its token sees.
                    let head_seen: Vec<usize> = seen.iter().flat_map(|&n| std::iter::repeat_n(n, group)).collect();
                    for (keys, vals) in &caches {
                        let mut scores = vec![0f32; seen.len() * group * n_pos];
                        let mut out = vec![f32::NAN; qs.len()];
                        attend_block(h, kv_head, &qs, &head_seen, keys, vals, &mut scores, &mut out);
                        for (i, q) in qs.chunks_exact(hd).enumerate() {
                            let (b, g) = (i / group, i % group);
                            let mut alone = vec![f32::NAN; hd];
                            let mut s = vec![0f32; n_pos];
                            attend_head(h, kv_head * group + g, q, keys, vals, seen[b], &mut s, &mut alone);
                            let block = &out[i * hd..(i + 1) * hd];
                            assert!(
                                alone.iter().zip(block).all(|(a, o)| a.to_bits() == o.to_bits()),
                                "heads {n_heads}/{n_kv_heads} hd {hd} seen {seen:?} token {b} head {g}"
                            );
                        }
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
