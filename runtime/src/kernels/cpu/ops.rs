//! Element-wise operations of the forward pass: RMS norm, RoPE, softmax, SiLU/SwiGLU, f16
//! row conversions, and the f16 dot/axpy used for attention over an f16 KV cache.
//!
//! Each public function runs on the process-wide [`backend`](super::backend); the `*_with`
//! forms take an explicit path so tests can compare them with the [`scalar`] twins.
//!
//! # Panics
//! All functions panic if their slices' lengths disagree (a caller bug, like an out-of-range
//! index): these run hundreds of times per token and a `Result` would only be unwrapped.

use super::{backend, scalar, Backend};
use half::f16;

fn same_len(what: &str, a: usize, b: usize) {
    assert!(a == b, "{what}: lengths differ ({a} vs {b})");
}

/// `out[i] = x[i] * weight[i] / sqrt(mean(x^2) + eps)`.
pub fn rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    rms_norm_with(backend(), x, weight, eps, out)
}

/// [`rms_norm`] through an explicit path.
pub fn rms_norm_with(b: Backend, x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    same_len("rms_norm weight", x.len(), weight.len());
    same_len("rms_norm out", x.len(), out.len());
    match b {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the path is only chosen when available (checked here), lengths checked above.
        Backend::Avx2 | Backend::Avx512 if b.is_available() => unsafe { x86::rms_norm(x, weight, eps, out) },
        _ => scalar::rms_norm(x, weight, eps, out),
    }
}

/// `sum(a[i] * b[i])` with `a` in f16.
pub fn dot_f16(a: &[f16], b: &[f32]) -> f32 {
    dot_f16_with(backend(), a, b)
}

/// [`dot_f16`] through an explicit path.
pub fn dot_f16_with(bk: Backend, a: &[f16], b: &[f32]) -> f32 {
    same_len("dot_f16", a.len(), b.len());
    match bk {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: availability checked in the guard, lengths above.
        Backend::Avx2 | Backend::Avx512 if bk.is_available() => unsafe { x86::dot_f16(a, b) },
        _ => scalar::dot_f16(a, b),
    }
}

/// `y[i] += alpha * x[i]` with `x` in f16.
pub fn axpy_f16(alpha: f32, x: &[f16], y: &mut [f32]) {
    axpy_f16_with(backend(), alpha, x, y)
}

/// [`axpy_f16`] through an explicit path.
pub fn axpy_f16_with(bk: Backend, alpha: f32, x: &[f16], y: &mut [f32]) {
    same_len("axpy_f16", x.len(), y.len());
    match bk {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: availability checked in the guard, lengths above.
        Backend::Avx2 | Backend::Avx512 if bk.is_available() => unsafe { x86::axpy_f16(alpha, x, y) },
        _ => scalar::axpy_f16(alpha, x, y),
    }
}

/// Checks that `n` rows of `width` elements, `stride` apart, fit in `len` elements.
fn rows_fit(what: &str, len: usize, n: usize, stride: usize, width: usize) {
    let need = match n {
        0 => Some(0),
        n => (n - 1).checked_mul(stride).and_then(|x| x.checked_add(width)),
    };
    assert!(
        need.is_some_and(|need| need <= len),
        "{what}: {n} rows of {width} every {stride} do not fit in {len} elements"
    );
}

/// `scores[j] = rows[j] · q` for `j < scores.len()`, where row `j` is the `q.len()` f16
/// elements at `rows[j * stride..]`: one query against the cached keys of one head.
pub fn dot_f16_rows(rows: &[f16], stride: usize, q: &[f32], scores: &mut [f32]) {
    dot_f16_rows_with(backend(), rows, stride, q, scores)
}

/// [`dot_f16_rows`] through an explicit path.
pub fn dot_f16_rows_with(bk: Backend, rows: &[f16], stride: usize, q: &[f32], scores: &mut [f32]) {
    rows_fit("dot_f16_rows", rows.len(), scores.len(), stride, q.len());
    match bk {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: availability checked in the guard, row bounds above.
        Backend::Avx2 | Backend::Avx512 if bk.is_available() => unsafe { x86::dot_f16_rows(rows, stride, q, scores) },
        _ => scalar::dot_f16_rows(rows, stride, q, scores),
    }
}

/// `out = sum_j weights[j] * rows[j]` (overwriting `out`), where row `j` is the `out.len()`
/// f16 elements at `rows[j * stride..]`: attention weights applied to one head's cached values.
pub fn weighted_sum_f16_rows(rows: &[f16], stride: usize, weights: &[f32], out: &mut [f32]) {
    weighted_sum_f16_rows_with(backend(), rows, stride, weights, out)
}

/// [`weighted_sum_f16_rows`] through an explicit path.
pub fn weighted_sum_f16_rows_with(bk: Backend, rows: &[f16], stride: usize, weights: &[f32], out: &mut [f32]) {
    rows_fit("weighted_sum_f16_rows", rows.len(), weights.len(), stride, out.len());
    match bk {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: availability checked in the guard, row bounds above.
        Backend::Avx2 | Backend::Avx512 if bk.is_available() => unsafe {
            x86::weighted_sum_f16_rows(rows, stride, weights, out)
        },
        _ => scalar::weighted_sum_f16_rows(rows, stride, weights, out),
    }
}

/// [`dot_f16_rows`] for several query vectors against the same rows, each seeing its own
/// prefix of them: `scores[h * n + j] = rows[j] · qs[h * hd..(h + 1) * hd]` for `j < seen[h]`,
/// `n = scores.len() / seen.len()` (entries from `seen[h]` on are left as they are). The query
/// heads that share a KV head (grouped-query attention) and the queries of a block of prefill
/// tokens (each seeing the cache up to itself) are such vectors: each key row is widened from
/// f16 once for all of them instead of once per query (the widening, not the multiply, bounds
/// the per-query loop); every query's scores are bit-identical to its own [`dot_f16_rows`]
/// over its `seen[h]` rows.
pub fn dot_f16_rows_grouped(rows: &[f16], stride: usize, qs: &[f32], hd: usize, seen: &[usize], scores: &mut [f32]) {
    dot_f16_rows_grouped_with(backend(), rows, stride, qs, hd, seen, scores)
}

/// [`dot_f16_rows_grouped`] through an explicit path.
pub fn dot_f16_rows_grouped_with(
    bk: Backend,
    rows: &[f16],
    stride: usize,
    qs: &[f32],
    hd: usize,
    seen: &[usize],
    scores: &mut [f32],
) {
    let n = grouped_fit(
        "dot_f16_rows_grouped",
        rows.len(),
        stride,
        hd,
        qs.len(),
        seen,
        scores.len(),
    );
    match bk {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: availability checked in the guard, row bounds above.
        Backend::Avx2 | Backend::Avx512 if bk.is_available() => unsafe {
            x86::dot_f16_rows_grouped(rows, stride, qs, hd, seen, scores)
        },
        _ => {
            for ((q, s), &len) in qs.chunks_exact(hd).zip(scores.chunks_exact_mut(n.max(1))).zip(seen) {
                dot_f16_rows_with(bk, rows, stride, q, &mut s[..len]);
            }
        }
    }
}

/// [`weighted_sum_f16_rows`] for several weight vectors over the same rows, each over its own
/// prefix of them: `outs[h * hd..][..hd] = sum_{j < seen[h]} weights[h * n + j] * rows[j]`,
/// `n = weights.len() / seen.len()`, `hd = outs.len() / seen.len()`. Each value row is widened
/// once for all of them (see [`dot_f16_rows_grouped`]); every output is bit-identical to its
/// own [`weighted_sum_f16_rows`] over its `seen[h]` rows.
pub fn weighted_sum_f16_rows_grouped(rows: &[f16], stride: usize, weights: &[f32], seen: &[usize], outs: &mut [f32]) {
    weighted_sum_f16_rows_grouped_with(backend(), rows, stride, weights, seen, outs)
}

/// [`weighted_sum_f16_rows_grouped`] through an explicit path.
pub fn weighted_sum_f16_rows_grouped_with(
    bk: Backend,
    rows: &[f16],
    stride: usize,
    weights: &[f32],
    seen: &[usize],
    outs: &mut [f32],
) {
    let heads = seen.len().max(1);
    let hd = outs.len() / heads;
    let n = grouped_fit(
        "weighted_sum_f16_rows_grouped",
        rows.len(),
        stride,
        hd,
        outs.len(),
        seen,
        weights.len(),
    );
    if n == 0 {
        outs.fill(0.0);
        return;
    }
    match bk {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: availability checked in the guard, row bounds above.
        Backend::Avx2 | Backend::Avx512 if bk.is_available() => unsafe {
            x86::weighted_sum_f16_rows_grouped(rows, stride, weights, seen, outs)
        },
        _ => {
            for ((w, o), &len) in weights.chunks_exact(n).zip(outs.chunks_exact_mut(hd)).zip(seen) {
                weighted_sum_f16_rows_with(bk, rows, stride, &w[..len], o);
            }
        }
    }
}

/// Checks the grouped kernels' shapes: `seen.len()` heads of `width` elements in `vectors`
/// (queries or outputs), `per_head` elements (scores or weights) split evenly between the
/// heads, no head seeing more rows than its split holds, and the most rows any head sees
/// (`width` elements each, `stride` apart) fitting in `rows` elements. Returns the split.
fn grouped_fit(
    what: &str,
    rows: usize,
    stride: usize,
    width: usize,
    vectors: usize,
    seen: &[usize],
    per_head: usize,
) -> usize {
    let heads = seen.len();
    assert!(
        heads > 0 && width > 0 && vectors == heads * width,
        "{what}: {vectors} elements are not {heads} heads of {width}"
    );
    assert!(
        per_head.is_multiple_of(heads),
        "{what}: {per_head} elements do not split into {heads} heads"
    );
    let (n, most) = (per_head / heads, seen.iter().copied().max().unwrap_or(0));
    assert!(most <= n, "{what}: a head sees {most} rows but has {n} elements");
    rows_fit(what, rows, most, stride, width);
    n
}

/// Widens a row of f16 to f32.
pub fn f16_to_f32_row(src: &[f16], dst: &mut [f32]) {
    f16_to_f32_row_with(backend(), src, dst)
}

/// [`f16_to_f32_row`] through an explicit path.
pub fn f16_to_f32_row_with(bk: Backend, src: &[f16], dst: &mut [f32]) {
    same_len("f16_to_f32_row", src.len(), dst.len());
    match bk {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: availability checked in the guard, lengths above.
        Backend::Avx2 | Backend::Avx512 if bk.is_available() => unsafe { x86::f16_to_f32(src, dst) },
        _ => scalar::f16_to_f32_row(src, dst),
    }
}

/// Narrows a row of f32 to f16 (round to nearest even, as ggml).
pub fn f32_to_f16_row(src: &[f32], dst: &mut [f16]) {
    f32_to_f16_row_with(backend(), src, dst)
}

/// [`f32_to_f16_row`] through an explicit path.
pub fn f32_to_f16_row_with(bk: Backend, src: &[f32], dst: &mut [f16]) {
    same_len("f32_to_f16_row", src.len(), dst.len());
    match bk {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: availability checked in the guard, lengths above.
        Backend::Avx2 | Backend::Avx512 if bk.is_available() => unsafe { x86::f32_to_f16(src, dst) },
        _ => scalar::f32_to_f16_row(src, dst),
    }
}

/// In-place SiLU: `x / (1 + e^-x)`.
pub fn silu(x: &mut [f32]) {
    scalar::silu(x)
}

/// `out[i] = silu(gate[i]) * up[i]` (the Llama FFN activation).
pub fn swiglu(gate: &[f32], up: &[f32], out: &mut [f32]) {
    swiglu_with(backend(), gate, up, out)
}

/// [`swiglu`] through an explicit path. The x86 path evaluates `e^-|g|` with
/// [`exp_nonpositive`] in vector lanes (within a few ulp of the scalar specification's libm
/// `exp`): one libm call per element was 5 % of a 135M model's decode step, on one thread.
pub fn swiglu_with(b: Backend, gate: &[f32], up: &[f32], out: &mut [f32]) {
    same_len("swiglu up", gate.len(), up.len());
    same_len("swiglu out", gate.len(), out.len());
    match b {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the path is only chosen when available (checked here), lengths checked above.
        Backend::Avx2 | Backend::Avx512 if b.is_available() => unsafe { x86::swiglu(gate, up, out) },
        _ => scalar::swiglu(gate, up, out),
    }
}

/// Lanes of the partial results of [`max_f32`], [`sum_exp`] and [`exp_in_place`]: a single
/// running max or sum is one serial dependency chain; `LANES` independent ones are plain loops
/// that the compiler turns into SIMD (AVX2 inside the x86 wrappers, whose `target_feature`
/// lets it use 256-bit vectors; the crate's baseline is SSE2). Every path adds the same
/// elements in the same order, so the results are bit-identical across paths.
const LANES: usize = 8;

/// The largest non-NaN element of `x` (`-inf` for none).
pub fn max_f32(x: &[f32]) -> f32 {
    match backend() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the path is only chosen when available (checked here).
        b @ (Backend::Avx2 | Backend::Avx512) if b.is_available() => unsafe { x86::max_f32(x) },
        _ => max_lanes(x),
    }
}

/// `sum(e^((x[i] - shift) * scale))` over the non-NaN elements, `e^` by [`exp_nonpositive`]:
/// `shift` must be at least every element (the max) and `scale` positive, so each term is at
/// most 1. The normalizer of a softmax or a log-probability.
pub fn sum_exp(x: &[f32], shift: f32, scale: f32) -> f32 {
    match backend() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as in `max_f32`.
        b @ (Backend::Avx2 | Backend::Avx512) if b.is_available() => unsafe { x86::sum_exp(x, shift, scale) },
        _ => sum_exp_lanes(x, shift, scale),
    }
}

/// `x[i] = e^((x[i] - shift) * scale)` (as in [`sum_exp`], no NaN allowed); returns their sum.
pub fn exp_in_place(x: &mut [f32], shift: f32, scale: f32) -> f32 {
    match backend() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as in `max_f32`.
        b @ (Backend::Avx2 | Backend::Avx512) if b.is_available() => unsafe { x86::exp_in_place(x, shift, scale) },
        _ => exp_in_place_lanes(x, shift, scale),
    }
}

#[inline(always)]
fn max_lanes(x: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let mut chunks = x.chunks_exact(LANES);
    for c in &mut chunks {
        for (m, &v) in lanes.iter_mut().zip(c) {
            // `v > m` is false for a NaN `v`, which is skipped as `f32::max` skips it.
            *m = if v > *m { v } else { *m };
        }
    }
    chunks
        .remainder()
        .iter()
        .chain(&lanes)
        .copied()
        .fold(f32::NEG_INFINITY, f32::max)
}

#[inline(always)]
fn sum_exp_lanes(x: &[f32], shift: f32, scale: f32) -> f32 {
    // A NaN element's term is 0 by `exp_nonpositive` itself (no select that would keep the
    // loop from vectorizing).
    let term = |v: f32| exp_nonpositive((v - shift) * scale);
    let mut lanes = [0f32; LANES];
    let mut chunks = x.chunks_exact(LANES);
    for c in &mut chunks {
        for (s, &v) in lanes.iter_mut().zip(c) {
            *s += term(v);
        }
    }
    chunks.remainder().iter().map(|&v| term(v)).sum::<f32>() + lanes.iter().sum::<f32>()
}

#[inline(always)]
fn exp_in_place_lanes(x: &mut [f32], shift: f32, scale: f32) -> f32 {
    let mut lanes = [0f32; LANES];
    let mut chunks = x.chunks_exact_mut(LANES);
    for c in &mut chunks {
        for (s, v) in lanes.iter_mut().zip(c.iter_mut()) {
            *v = exp_nonpositive((*v - shift) * scale);
            *s += *v;
        }
    }
    let mut tail = 0f32;
    for v in chunks.into_remainder() {
        *v = exp_nonpositive((*v - shift) * scale);
        tail += *v;
    }
    tail + lanes.iter().sum::<f32>()
}

/// `silu(g) * u` with `e^-|g|` by [`exp_nonpositive`], branch-free so that a loop of it
/// vectorizes: `sigmoid(g)` is `1 / (1 + e)` for `g >= 0` and `e / (1 + e)` below, `e =
/// e^-|g|` (never overflows, unlike `e^-g` for very negative `g`).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn swiglu1(g: f32, u: f32) -> f32 {
    let e = exp_nonpositive(-g.abs());
    let numerator = if g >= 0.0 { 1.0 } else { e };
    g * (numerator / (1.0 + e)) * u
}

/// `e^x` for `x <= 0` within ~2 ulp (0 below -87, where `e^x` is subnormal or zero and
/// negligible beside the max's 1): `x = n ln2 + r`, `|r| <= ln2/2`, `e^r` by the degree-6
/// Cephes `expf` polynomial, `2^n` built in the exponent bits. Branch-free so that it
/// vectorizes; `n` is rounded with the 1.5 * 2^23 trick (the sum's low mantissa bits hold it).
/// A NaN gives 0 (the clamp's comparison is false for it), so it counts for nothing in a sum.
#[inline(always)]
pub fn exp_nonpositive(x: f32) -> f32 {
    const ROUND: f32 = 12_582_912.0; // 1.5 * 2^23
    let x = if x >= -87.0 { x } else { -87.0 };
    let t = x * std::f32::consts::LOG2_E + ROUND;
    let n = t - ROUND;
    // ln2 split in two (Cody-Waite) so that n * LN2_HI is exact.
    let r = x - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5; // Cephes: 5.0000001201e-1, which is 0.5 in f32
    let e_r = p * r * r + r + 1.0;
    // t's bits are 0x4B40_0000 + n for |n| < 2^22; 2^n has exponent field n + 127.
    let n_bits = t.to_bits().wrapping_sub(0x4B40_0000);
    let two_n = f32::from_bits(n_bits.wrapping_add(127) << 23);
    let y = e_r * two_n;
    if x <= -87.0 {
        0.0
    } else {
        y
    }
}

/// In-place softmax (max-subtracted; an all `-inf` row becomes uniform instead of NaN).
pub fn softmax(x: &mut [f32]) {
    scalar::softmax(x)
}

/// Precomputed RoPE rotations for the GGUF "normal" (Llama) layout: within each head,
/// adjacent pairs `(x[2i], x[2i+1])` are rotated by `theta = pos * freq_scale *
/// base^(-2i/head_dim)`. `freq_scale` is 1 without scaling, `1 / rope.scaling.factor` for
/// linear scaling.
#[derive(Debug, Clone)]
pub struct RopeTable {
    head_dim: usize,
    max_pos: usize,
    /// `[pos][i]` interleaved as (cos, sin), `head_dim / 2` pairs per position.
    cs: Vec<(f32, f32)>,
}

impl RopeTable {
    /// Tables for positions `0..max_pos`.
    ///
    /// # Panics
    /// If `head_dim` is odd or zero.
    pub fn new(head_dim: usize, base: f32, freq_scale: f32, max_pos: usize) -> RopeTable {
        assert!(
            head_dim > 0 && head_dim.is_multiple_of(2),
            "RoPE head_dim must be even, got {head_dim}"
        );
        let half = head_dim / 2;
        let inv: Vec<f64> = (0..half)
            .map(|i| (base as f64).powf(-2.0 * i as f64 / head_dim as f64))
            .collect();
        let mut cs = Vec::with_capacity(max_pos * half);
        for pos in 0..max_pos {
            for &f in &inv {
                let theta = pos as f64 * freq_scale as f64 * f;
                cs.push((theta.cos() as f32, theta.sin() as f32));
            }
        }
        RopeTable { head_dim, max_pos, cs }
    }

    pub fn head_dim(&self) -> usize {
        self.head_dim
    }

    /// Positions covered.
    pub fn max_pos(&self) -> usize {
        self.max_pos
    }
}

/// Rotates every head of `x` (`n_heads * head_dim` values of one token) for position `pos`.
///
/// # Panics
/// If `x.len()` is not a multiple of the table's `head_dim` or `pos >= max_pos`.
pub fn rope(table: &RopeTable, x: &mut [f32], pos: usize) {
    let hd = table.head_dim;
    assert!(
        x.len().is_multiple_of(hd),
        "rope: {} values is not a whole number of heads of {hd}",
        x.len()
    );
    assert!(
        pos < table.max_pos,
        "rope: position {pos} beyond the table's {}",
        table.max_pos
    );
    let cs = &table.cs[pos * hd / 2..(pos + 1) * hd / 2];
    for head in x.chunks_exact_mut(hd) {
        for (pair, &(c, s)) in head.chunks_exact_mut(2).zip(cs) {
            let (a, b) = (pair[0], pair[1]);
            pair[0] = a * c - b * s;
            pair[1] = a * s + b * c;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! AVX2/FMA/F16C bodies of the element-wise ops (also used by the AVX-512 path: these
    //! are memory-bound, so wider vectors gain little).
    use super::f16;
    use crate::kernels::cpu::avx2::hsum;
    use crate::kernels::cpu::prefetch::{kv_row, KV_AHEAD_ROWS};
    use std::arch::x86_64::*;

    /// # Safety
    /// AVX2+FMA available.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn max_f32(x: &[f32]) -> f32 {
        super::max_lanes(x)
    }

    /// # Safety
    /// AVX2+FMA available.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn sum_exp(x: &[f32], shift: f32, scale: f32) -> f32 {
        super::sum_exp_lanes(x, shift, scale)
    }

    /// # Safety
    /// AVX2+FMA available.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn exp_in_place(x: &mut [f32], shift: f32, scale: f32) -> f32 {
        super::exp_in_place_lanes(x, shift, scale)
    }

    /// A plain element-wise loop, which the compiler vectorizes with AVX2 here.
    ///
    /// # Safety
    /// AVX2+FMA available; equal lengths.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn swiglu(gate: &[f32], up: &[f32], out: &mut [f32]) {
        for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
            *o = super::swiglu1(g, u);
        }
    }

    /// # Safety
    /// AVX2+FMA+F16C available; equal lengths.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
        let n = x.len();
        let n8 = n / 8 * 8;
        let (mut s0, mut s1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let mut i = 0;
        while i + 16 <= n8 {
            let a = _mm256_loadu_ps(x.as_ptr().add(i));
            let b = _mm256_loadu_ps(x.as_ptr().add(i + 8));
            s0 = _mm256_fmadd_ps(a, a, s0);
            s1 = _mm256_fmadd_ps(b, b, s1);
            i += 16;
        }
        if i < n8 {
            let a = _mm256_loadu_ps(x.as_ptr().add(i));
            s0 = _mm256_fmadd_ps(a, a, s0);
        }
        let mut ss = hsum(_mm256_add_ps(s0, s1)) as f64;
        for &v in &x[n8..] {
            ss += v as f64 * v as f64;
        }
        let scale = (1.0 / (ss / n.max(1) as f64 + eps as f64).sqrt()) as f32;
        let sv = _mm256_set1_ps(scale);
        for i in (0..n8).step_by(8) {
            let v = _mm256_mul_ps(_mm256_loadu_ps(x.as_ptr().add(i)), sv);
            _mm256_storeu_ps(
                out.as_mut_ptr().add(i),
                _mm256_mul_ps(v, _mm256_loadu_ps(w.as_ptr().add(i))),
            );
        }
        for j in n8..n {
            out[j] = x[j] * scale * w[j];
        }
    }

    /// # Safety
    /// AVX2+FMA+F16C available; equal lengths.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_f16(a: &[f16], b: &[f32]) -> f32 {
        let n = a.len();
        let n16 = n / 16 * 16;
        let (mut s0, mut s1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        for i in (0..n16).step_by(16) {
            let x0 = _mm256_cvtph_ps(_mm_loadu_si128(a.as_ptr().add(i).cast()));
            let x1 = _mm256_cvtph_ps(_mm_loadu_si128(a.as_ptr().add(i + 8).cast()));
            s0 = _mm256_fmadd_ps(x0, _mm256_loadu_ps(b.as_ptr().add(i)), s0);
            s1 = _mm256_fmadd_ps(x1, _mm256_loadu_ps(b.as_ptr().add(i + 8)), s1);
        }
        let mut s = hsum(_mm256_add_ps(s0, s1));
        for j in n16..n {
            s += a[j].to_f32() * b[j];
        }
        s
    }

    /// # Safety
    /// AVX2+FMA+F16C available; equal lengths.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn axpy_f16(alpha: f32, x: &[f16], y: &mut [f32]) {
        let n = x.len();
        let n8 = n / 8 * 8;
        let av = _mm256_set1_ps(alpha);
        for i in (0..n8).step_by(8) {
            let xv = _mm256_cvtph_ps(_mm_loadu_si128(x.as_ptr().add(i).cast()));
            let p = y.as_mut_ptr().add(i);
            _mm256_storeu_ps(p, _mm256_fmadd_ps(av, xv, _mm256_loadu_ps(p)));
        }
        for j in n8..n {
            y[j] += alpha * x[j].to_f32();
        }
    }

    /// # Safety
    /// AVX2+FMA+F16C available; `scores.len()` rows of `q.len()` every `stride` fit in `rows`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_f16_rows(rows: &[f16], stride: usize, q: &[f32], scores: &mut [f32]) {
        let (hd, n) = (q.len(), scores.len());
        let row = |j: usize| &rows[j * stride..j * stride + hd];
        if !hd.is_multiple_of(8) {
            for (j, s) in scores.iter_mut().enumerate() {
                *s = dot_f16(row(j), q);
            }
            return;
        }
        // Four rows at a time: each 8 elements of the query are loaded once for four keys,
        // and the four sums are reduced together.
        let mut j = 0;
        while j + 4 <= n {
            let p: [*const f16; 4] = std::array::from_fn(|r| row(j + r).as_ptr());
            for &at in &p {
                kv_row(at.wrapping_add(KV_AHEAD_ROWS * stride).cast(), 2 * hd);
            }
            let mut acc = [_mm256_setzero_ps(); 4];
            for i in (0..hd).step_by(8) {
                let qv = _mm256_loadu_ps(q.as_ptr().add(i));
                for r in 0..4 {
                    let k = _mm256_cvtph_ps(_mm_loadu_si128(p[r].add(i).cast()));
                    acc[r] = _mm256_fmadd_ps(k, qv, acc[r]);
                }
            }
            // [a0+a1, a2+a3, b0+b1, b2+b3 | a4+a5, ...] twice over gives the four sums per
            // 128-bit half; the halves are then added.
            let h = _mm256_hadd_ps(_mm256_hadd_ps(acc[0], acc[1]), _mm256_hadd_ps(acc[2], acc[3]));
            let sums = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps::<1>(h));
            _mm_storeu_ps(scores.as_mut_ptr().add(j), sums);
            j += 4;
        }
        for (k, s) in scores.iter_mut().enumerate().skip(j) {
            *s = dot_f16(row(k), q);
        }
    }

    /// Rows per block of [`weighted_sum_f16_rows`]: 8 KiB of f16 at head size 128, resident
    /// in L1 while the block's column runs re-read it.
    const VALUE_BLOCK_ROWS: usize = 32;

    /// Rows widened per block by the grouped kernels, and the widest head they take (wider
    /// heads go head by head): a block is at most 16 KiB of f32, resident in L1.
    const GROUP_ROWS: usize = 16;
    const GROUP_MAX_HD: usize = 256;

    /// Widens rows `j0..j0 + count` (`hd` elements each, `stride` apart) into `buf`.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn widen_rows(rows: &[f16], stride: usize, j0: usize, count: usize, hd: usize, buf: &mut [f32]) {
        for r in 0..count {
            let src = rows.as_ptr().add((j0 + r) * stride);
            kv_row(src.wrapping_add(KV_AHEAD_ROWS * stride).cast(), 2 * hd);
            let dst = buf.as_mut_ptr().add(r * hd);
            for i in (0..hd).step_by(8) {
                _mm256_storeu_ps(dst.add(i), _mm256_cvtph_ps(_mm_loadu_si128(src.add(i).cast())));
            }
        }
    }

    /// # Safety
    /// AVX2+FMA+F16C available; `qs` holds `seen.len()` heads of `hd`, `scores` splits into as
    /// many of at least their `seen`, and the most rows any head sees fit in `rows`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_f16_rows_grouped(
        rows: &[f16],
        stride: usize,
        qs: &[f32],
        hd: usize,
        seen: &[usize],
        scores: &mut [f32],
    ) {
        let (heads, most) = (seen.len(), seen.iter().copied().max().unwrap_or(0));
        if most == 0 {
            return;
        }
        let n = scores.len() / heads;
        if !hd.is_multiple_of(8) || hd > GROUP_MAX_HD || heads == 1 {
            for ((q, s), &len) in qs.chunks_exact(hd).zip(scores.chunks_exact_mut(n)).zip(seen) {
                dot_f16_rows(rows, stride, q, &mut s[..len]);
            }
            return;
        }
        // Each head's whole blocks of four below its `seen` in `dot_f16_rows`'s multiply order
        // and reduction, reading the keys widened once (the widening is exact), and its last
        // rows one by one as there: each head's sums are its own.
        let mut buf = [0f32; 4 * GROUP_MAX_HD];
        let mut j = 0;
        while j + 4 <= most {
            widen_rows(rows, stride, j, 4, hd, &mut buf);
            for ((q, s), &len) in qs.chunks_exact(hd).zip(scores.chunks_exact_mut(n)).zip(seen) {
                if j + 4 > len {
                    continue;
                }
                let mut acc = [_mm256_setzero_ps(); 4];
                for i in (0..hd).step_by(8) {
                    let qv = _mm256_loadu_ps(q.as_ptr().add(i));
                    for (r, a) in acc.iter_mut().enumerate() {
                        *a = _mm256_fmadd_ps(_mm256_loadu_ps(buf.as_ptr().add(r * hd + i)), qv, *a);
                    }
                }
                let h = _mm256_hadd_ps(_mm256_hadd_ps(acc[0], acc[1]), _mm256_hadd_ps(acc[2], acc[3]));
                let sums = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps::<1>(h));
                _mm_storeu_ps(s.as_mut_ptr().add(j), sums);
            }
            j += 4;
        }
        for ((q, s), &len) in qs.chunks_exact(hd).zip(scores.chunks_exact_mut(n)).zip(seen) {
            for (k, v) in s.iter_mut().enumerate().take(len).skip(len / 4 * 4) {
                *v = dot_f16(&rows[k * stride..k * stride + hd], q);
            }
        }
    }

    /// # Safety
    /// AVX2+FMA+F16C available; `weights` and `outs` split into `seen.len()` heads, each
    /// head's weights at least one and at least its `seen`, and the most rows any head sees (of
    /// `outs.len() / seen.len()`, every `stride`) fit in `rows`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn weighted_sum_f16_rows_grouped(
        rows: &[f16],
        stride: usize,
        weights: &[f32],
        seen: &[usize],
        outs: &mut [f32],
    ) {
        let heads = seen.len();
        let (n, hd, most) = (
            weights.len() / heads,
            outs.len() / heads,
            seen.iter().copied().max().unwrap_or(0),
        );
        if !hd.is_multiple_of(8) || hd > GROUP_MAX_HD || heads == 1 {
            for ((w, o), &len) in weights.chunks_exact(n).zip(outs.chunks_exact_mut(hd)).zip(seen) {
                weighted_sum_f16_rows(rows, stride, &w[..len], o);
            }
            return;
        }
        // Each output element is the sum over its head's rows in `weighted_sum_f16_rows`'s
        // order (one FMA per row, from zero), kept in `outs` between blocks of widened rows:
        // bit-identical.
        outs.fill(0.0);
        let mut buf = [0f32; GROUP_ROWS * GROUP_MAX_HD];
        let mut j0 = 0;
        while j0 < most {
            let count = GROUP_ROWS.min(most - j0);
            widen_rows(rows, stride, j0, count, hd, &mut buf);
            for ((w, out), &len) in weights.chunks_exact(n).zip(outs.chunks_exact_mut(hd)).zip(seen) {
                let w = &w[j0..j0 + count.min(len.saturating_sub(j0))];
                if w.is_empty() {
                    continue;
                }
                add_weighted_rows(out, w, |r, c| _mm256_loadu_ps(buf.as_ptr().add(r * hd + c)), |_| {});
            }
            j0 += count;
        }
    }

    /// Adds `w[r]` times row `r` to the first `out.len() / 8 * 8` elements of `out` for every
    /// row `r` of `w`, one FMA per row and element, in row order: columns in runs of 64 whose
    /// sums stay in 8 registers across the rows (instead of a load and store of `out` per row),
    /// then runs of 8. `row(r, c)` gives row `r`'s 8 elements from column `c` as f32; `first(r)`
    /// runs once per row, before its first load.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn add_weighted_rows(
        out: &mut [f32],
        w: &[f32],
        row: impl Fn(usize, usize) -> __m256,
        first: impl Fn(usize),
    ) {
        let hd = out.len();
        let mut c = 0;
        while c + 64 <= hd {
            let o = out.as_mut_ptr().add(c);
            let mut acc: [__m256; 8] = std::array::from_fn(|i| _mm256_loadu_ps(o.add(8 * i)));
            for (r, &wr) in w.iter().enumerate() {
                if c == 0 {
                    first(r);
                }
                let a = _mm256_set1_ps(wr);
                for (i, s) in acc.iter_mut().enumerate() {
                    *s = _mm256_fmadd_ps(a, row(r, c + 8 * i), *s);
                }
            }
            for (i, s) in acc.iter().enumerate() {
                _mm256_storeu_ps(o.add(8 * i), *s);
            }
            c += 64;
        }
        while c + 8 <= hd {
            let o = out.as_mut_ptr().add(c);
            let mut acc = _mm256_loadu_ps(o);
            for (r, &wr) in w.iter().enumerate() {
                if c == 0 {
                    first(r);
                }
                acc = _mm256_fmadd_ps(_mm256_set1_ps(wr), row(r, c), acc);
            }
            _mm256_storeu_ps(o, acc);
            c += 8;
        }
    }

    /// # Safety
    /// AVX2+FMA+F16C available; `weights.len()` rows of `out.len()` every `stride` fit in `rows`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn weighted_sum_f16_rows(rows: &[f16], stride: usize, weights: &[f32], out: &mut [f32]) {
        let hd = out.len();
        let base = rows.as_ptr();
        // Rows in blocks of `VALUE_BLOCK_ROWS`, each through all of `add_weighted_rows`'
        // column runs, so a block's rows are read from memory by its first run only, from L1
        // by the others (runs over all rows streamed a whole head once per run: at hd 128 the
        // values took twice the keys' time). Between blocks the sums wait in `out` (stored and
        // reloaded exactly): each output element is still one FMA per row from zero, in row
        // order.
        let vector_cols = hd / 8 * 8;
        out[..vector_cols].fill(0.0);
        for j0 in (0..weights.len()).step_by(VALUE_BLOCK_ROWS) {
            let block = &weights[j0..weights.len().min(j0 + VALUE_BLOCK_ROWS)];
            // Each row is prefetched ahead, whole, before its first load (a prefetch never faults).
            let ahead = |j: usize| kv_row(base.wrapping_add((j0 + j + KV_AHEAD_ROWS) * stride).cast(), 2 * hd);
            let row = |j: usize, c: usize| _mm256_cvtph_ps(_mm_loadu_si128(base.add((j0 + j) * stride + c).cast()));
            add_weighted_rows(out, block, row, ahead);
        }
        for (col, o) in out.iter_mut().enumerate().skip(vector_cols) {
            *o = weights
                .iter()
                .enumerate()
                .map(|(j, &w)| w * rows[j * stride + col].to_f32())
                .sum();
        }
    }

    /// # Safety
    /// AVX2+FMA+F16C available; equal lengths.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn f16_to_f32(src: &[f16], dst: &mut [f32]) {
        let n8 = src.len() / 8 * 8;
        for i in (0..n8).step_by(8) {
            let v = _mm256_cvtph_ps(_mm_loadu_si128(src.as_ptr().add(i).cast()));
            _mm256_storeu_ps(dst.as_mut_ptr().add(i), v);
        }
        for j in n8..src.len() {
            dst[j] = src[j].to_f32();
        }
    }

    /// # Safety
    /// AVX2+FMA+F16C available; equal lengths.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn f32_to_f16(src: &[f32], dst: &mut [f16]) {
        let n8 = src.len() / 8 * 8;
        for i in (0..n8).step_by(8) {
            // Round to nearest even, as ggml's F16C path; NaN stays NaN (quiet).
            let h = _mm256_cvtps_ph::<{ _MM_FROUND_TO_NEAREST_INT }>(_mm256_loadu_ps(src.as_ptr().add(i)));
            _mm_storeu_si128(dst.as_mut_ptr().add(i).cast(), h);
        }
        crate::quant::float::f32_to_f16_row(&src[n8..], &mut dst[n8..]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_matches_libm_on_nonpositive_inputs() {
        let mut worst = 0f32;
        for i in 0..=200_000 {
            let x = -87.0 * i as f32 / 200_000.0;
            let (ours, libm) = (exp_nonpositive(x), x.exp());
            if x > -86.9 {
                worst = worst.max(((ours - libm) / libm).abs());
            }
        }
        assert!(worst < 3e-7, "worst relative error {worst}");
        assert_eq!(exp_nonpositive(0.0), 1.0);
        assert_eq!(exp_nonpositive(-100.0), 0.0);
        assert_eq!(exp_nonpositive(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_nonpositive(f32::NAN), 0.0);
    }

    #[test]
    fn lane_reductions_are_the_same_on_every_path() {
        for n in [0, 1, 7, 8, 9, 100, 3073, 49157] {
            let mut x: Vec<f32> = values(n, 11).iter().map(|v| v * 20.0).collect();
            if n > 8 {
                x[3] = f32::NAN;
                x[5] = f32::NEG_INFINITY;
            }
            let max = max_lanes(&x);
            let finite: Vec<f32> = x.iter().copied().filter(|v| !v.is_nan()).collect();
            assert_eq!(max, finite.iter().copied().fold(f32::NEG_INFINITY, f32::max), "n {n}");
            let sum = sum_exp_lanes(&x, max, 0.5);
            let want: f64 = finite.iter().map(|&v| ((v - max) as f64 * 0.5).exp()).sum();
            assert!(
                (sum as f64 - want).abs() <= 1e-5 * want.max(1.0),
                "n {n}: {sum} vs {want}"
            );
            let mut e = finite.clone();
            let total = exp_in_place_lanes(&mut e, max, 0.5);
            assert!(
                (total as f64 - want).abs() <= 1e-5 * want.max(1.0),
                "n {n}: {total} vs {want}"
            );
            #[cfg(target_arch = "x86_64")]
            if Backend::Avx2.is_available() {
                // SAFETY: AVX2 and FMA were just checked.
                unsafe {
                    assert_eq!(x86::max_f32(&x).to_bits(), max.to_bits());
                    assert_eq!(x86::sum_exp(&x, max, 0.5).to_bits(), sum.to_bits());
                    let mut e2 = finite.clone();
                    assert_eq!(x86::exp_in_place(&mut e2, max, 0.5).to_bits(), total.to_bits());
                    assert!(e2.iter().zip(&e).all(|(a, b)| a.to_bits() == b.to_bits()));
                }
            }
        }
    }

    #[test]
    fn swiglu_paths_match_the_scalar_specification() {
        let mut gate = values(1037, 3);
        gate.iter_mut()
            .enumerate()
            .for_each(|(i, g)| *g *= 1.0 + (i % 40) as f32);
        gate.extend_from_slice(&[0.0, -0.0, 1e-30, -1e-30, 88.0, -88.0, 200.0, -200.0, f32::MIN_POSITIVE]);
        let up = values(gate.len(), 4);
        let mut want = vec![0f32; gate.len()];
        scalar::swiglu(&gate, &up, &mut want);
        for b in Backend::ALL.into_iter().filter(|b| b.is_available()) {
            let mut got = vec![0f32; gate.len()];
            swiglu_with(b, &gate, &up, &mut got);
            for (i, (&o, &w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (o - w).abs() <= 1e-6 * w.abs() + 1e-30,
                    "{b:?} element {i}: g {} u {}: {o} vs {w}",
                    gate[i],
                    up[i]
                );
            }
        }
    }

    /// Deterministic values in about -2..2, f16-exact for the rows.
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                ((x >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
            })
            .collect()
    }

    /// The grouped attention kernels give each head exactly (bit for bit) what the per-head
    /// kernels give it over the rows it sees, on every path this CPU has: head widths inside
    /// and outside the grouped fast path (not a multiple of 8, wider than 256), ragged row
    /// counts, 1..8 heads, every head seeing all rows (grouped-query attention) or its own
    /// prefix (a block of prefill tokens: ends inside and at blocks of four, none at all);
    /// scores past a head's prefix are left as they were.
    #[test]
    fn grouped_attention_kernels_equal_the_per_head_ones() {
        for bk in Backend::ALL.into_iter().filter(|b| b.is_available()) {
            for hd in [8, 12, 64, 80, 128, 264] {
                for n in [1usize, 3, 4, 5, 16, 17, 33, 70] {
                    for heads in [1, 2, 3, 8] {
                        for causal in [false, true] {
                            let seen: Vec<usize> = (0..heads)
                                .map(|g| {
                                    if causal {
                                        n.saturating_sub(3 * (heads - 1 - g))
                                    } else {
                                        n
                                    }
                                })
                                .collect();
                            grouped_kernels_case(bk, hd, n, &seen);
                        }
                    }
                }
            }
        }
    }

    /// One case of [`grouped_attention_kernels_equal_the_per_head_ones`].
    fn grouped_kernels_case(bk: Backend, hd: usize, n: usize, seen: &[usize]) {
        let heads = seen.len();
        let stride = hd * 2 + 8; // two KV heads per cache row, plus padding
        let rows: Vec<f16> = values(n * stride, (hd * n) as u64)
            .into_iter()
            .map(f16::from_f32)
            .collect();
        let qs = values(heads * hd, 7 + heads as u64);
        let mut grouped = vec![f32::NAN; heads * n];
        dot_f16_rows_grouped_with(bk, &rows[hd..], stride, &qs, hd, seen, &mut grouped);
        let weights = values(heads * n, 11 + n as u64);
        let mut outs = vec![f32::NAN; heads * hd];
        weighted_sum_f16_rows_grouped_with(bk, &rows[hd..], stride, &weights, seen, &mut outs);
        let same = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
        for (g, &len) in seen.iter().enumerate() {
            let mut s = vec![0f32; len];
            dot_f16_rows_with(bk, &rows[hd..], stride, &qs[g * hd..(g + 1) * hd], &mut s);
            let head = &grouped[g * n..(g + 1) * n];
            assert!(same(&s, &head[..len]), "{bk} scores hd {hd} n {n} head {g} of {seen:?}");
            assert!(
                head[len..].iter().all(|v| v.is_nan()),
                "{bk} hd {hd} n {n}: scores past head {g}'s {len}"
            );
            let mut o = vec![0f32; hd];
            weighted_sum_f16_rows_with(bk, &rows[hd..], stride, &weights[g * n..g * n + len], &mut o);
            assert!(
                same(&o, &outs[g * hd..(g + 1) * hd]),
                "{bk} sums hd {hd} n {n} head {g} of {seen:?}"
            );
        }
    }
}
