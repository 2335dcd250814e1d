//! Causal grouped-query attention of one token over the KV cache.

use super::kv_cache::Row;
use super::ops;

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
    scores.iter_mut().for_each(|s| *s *= scale);
    ops::softmax(scores);
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
