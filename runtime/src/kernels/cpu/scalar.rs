//! The scalar kernels: the specification every SIMD path is tested against, and the fallback
//! on CPUs without one.
//!
//! Dot products follow ggml's formulation exactly: integer sums inside each block, then the
//! block's float scales applied once (`d_w * d_a * sumi`, minus the min terms for Q4_1 and the
//! k-quants), accumulated in f32 block by block. All inputs are raw bytes of any alignment.
//!
//! `vec_dot_<stem>` (stems from the type table, `table.rs`: `<weight>_<activation>`, e.g.
//! `vec_dot_q4_0_q8_0`) is the specification of the SIMD twins `tile_<stem>` in `avx2.rs`,
//! `avx512.rs` (`tile_<stem>_vnni`) and `neon.rs`, and `panel_<stem>` for repacked weights.

use super::types::DOT_MAX_T;
use crate::quant::blocks::{
    BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ5K, BlockQ5_0, BlockQ5_1, BlockQ6K, BlockQ8K, BlockQ8_0, BlockQ8_1,
};
use crate::quant::q5::unpack5;
use crate::quant::{bf16_to_f32, f16_to_f32, get_scale_min_k4, GgmlType, QK_K};
use bytemuck::Pod;
use half::f16;
use std::mem::size_of;

/// Iterates over the blocks of a byte row, copying each out (rows may be unaligned).
fn blocks<B: Pod>(bytes: &[u8]) -> impl Iterator<Item = B> + '_ {
    bytes.chunks_exact(size_of::<B>()).map(bytemuck::pod_read_unaligned)
}

fn f32_at(bytes: &[u8], i: usize) -> f32 {
    f32::from_le_bytes([bytes[4 * i], bytes[4 * i + 1], bytes[4 * i + 2], bytes[4 * i + 3]])
}

fn u16_at(bytes: &[u8], i: usize) -> u16 {
    u16::from_le_bytes([bytes[2 * i], bytes[2 * i + 1]])
}

/// Dot product of one weight row (`ty`) with one activation row in `act_type(ty)`, both `n`
/// elements. The caller has checked both lengths.
pub fn vec_dot(ty: GgmlType, n: usize, w: &[u8], a: &[u8]) -> f32 {
    match ty {
        GgmlType::F32 => vec_dot_f32_f32(n, w, a),
        GgmlType::F16 => vec_dot_f16_f32(n, w, a),
        GgmlType::BF16 => vec_dot_bf16_f32(n, w, a),
        GgmlType::Q4_0 => vec_dot_q4_0_q8_0(w, a),
        GgmlType::Q4_1 => vec_dot_q4_1_q8_1(w, a),
        GgmlType::Q8_0 => vec_dot_q8_0_q8_0(w, a),
        GgmlType::Q5_0 => vec_dot_q5_0_q8_0(w, a),
        GgmlType::Q5_1 => vec_dot_q5_1_q8_1(w, a),
        GgmlType::Q4_K => vec_dot_q4_k_q8_k(w, a),
        GgmlType::Q5_K => vec_dot_q5_k_q8_k(w, a),
        GgmlType::Q6_K => vec_dot_q6_k_q8_k(w, a),
        _ => unreachable!("QMatrix::new rejects {ty}"),
    }
}

/// One weight row against up to [`DOT_MAX_T`] activation rows (the tile interface the SIMD
/// paths share); `out[t]` receives the dot with `acts[t]`.
pub fn tile(ty: GgmlType, n: usize, w: &[u8], acts: &[&[u8]], out: &mut [f32]) {
    debug_assert!(acts.len() <= DOT_MAX_T && acts.len() == out.len());
    for (o, a) in out.iter_mut().zip(acts) {
        *o = vec_dot(ty, n, w, a);
    }
}

fn vec_dot_f32_f32(n: usize, w: &[u8], a: &[u8]) -> f32 {
    (0..n).map(|i| f32_at(w, i) * f32_at(a, i)).sum()
}

fn vec_dot_f16_f32(n: usize, w: &[u8], a: &[u8]) -> f32 {
    (0..n)
        .map(|i| f16_to_f32(f16::from_bits(u16_at(w, i))) * f32_at(a, i))
        .sum()
}

fn vec_dot_bf16_f32(n: usize, w: &[u8], a: &[u8]) -> f32 {
    (0..n)
        .map(|i| bf16_to_f32(half::bf16::from_bits(u16_at(w, i))) * f32_at(a, i))
        .sum()
}

fn vec_dot_q4_0_q8_0(w: &[u8], a: &[u8]) -> f32 {
    let mut sum = 0f32;
    for (x, y) in blocks::<BlockQ4_0>(w).zip(blocks::<BlockQ8_0>(a)) {
        let mut sumi = 0i32;
        for j in 0..16 {
            let lo = (x.qs[j] & 0x0f) as i32 - 8;
            let hi = (x.qs[j] >> 4) as i32 - 8;
            sumi += lo * y.qs[j] as i32 + hi * y.qs[j + 16] as i32;
        }
        sum += sumi as f32 * (f16_to_f32(x.d) * f16_to_f32(y.d));
    }
    sum
}

fn vec_dot_q4_1_q8_1(w: &[u8], a: &[u8]) -> f32 {
    let mut sum = 0f32;
    for (x, y) in blocks::<BlockQ4_1>(w).zip(blocks::<BlockQ8_1>(a)) {
        let mut sumi = 0i32;
        for j in 0..16 {
            sumi += (x.qs[j] & 0x0f) as i32 * y.qs[j] as i32 + (x.qs[j] >> 4) as i32 * y.qs[j + 16] as i32;
        }
        // y.s = d_y * sum(y.qs), so the min contributes m * s.
        sum += sumi as f32 * (f16_to_f32(x.d) * f16_to_f32(y.d)) + f16_to_f32(x.m) * f16_to_f32(y.s);
    }
    sum
}

fn vec_dot_q8_0_q8_0(w: &[u8], a: &[u8]) -> f32 {
    let mut sum = 0f32;
    for (x, y) in blocks::<BlockQ8_0>(w).zip(blocks::<BlockQ8_0>(a)) {
        let sumi: i32 = x.qs.iter().zip(&y.qs).map(|(&p, &q)| p as i32 * q as i32).sum();
        sum += sumi as f32 * (f16_to_f32(x.d) * f16_to_f32(y.d));
    }
    sum
}

/// Q5_0 against Q8_0: `w = d * (q - 16)` with the fifth bit of element j in bit j of `qh`.
fn vec_dot_q5_0_q8_0(w: &[u8], a: &[u8]) -> f32 {
    let mut sum = 0f32;
    for (x, y) in blocks::<BlockQ5_0>(w).zip(blocks::<BlockQ8_0>(a)) {
        let q = unpack5(&x.qs, x.qh);
        let sumi: i32 = q.iter().zip(&y.qs).map(|(&p, &v)| (p as i32 - 16) * v as i32).sum();
        sum += sumi as f32 * (f16_to_f32(x.d) * f16_to_f32(y.d));
    }
    sum
}

/// Q5_1 against Q8_1: `w = d * q + m`, the min folded in through `y.s = d_y * sum(y.qs)`.
fn vec_dot_q5_1_q8_1(w: &[u8], a: &[u8]) -> f32 {
    let mut sum = 0f32;
    for (x, y) in blocks::<BlockQ5_1>(w).zip(blocks::<BlockQ8_1>(a)) {
        let q = unpack5(&x.qs, x.qh);
        let sumi: i32 = q.iter().zip(&y.qs).map(|(&p, &v)| p as i32 * v as i32).sum();
        sum += sumi as f32 * (f16_to_f32(x.d) * f16_to_f32(y.d)) + f16_to_f32(x.m) * f16_to_f32(y.s);
    }
    sum
}

/// The shared k-quant tail: `sumi = sum_g sc[g] * dot(q, y) over group g` (16-element groups)
/// and `summ = sum_g mn[g] * bsums[g]`; the block adds `d*dy*sumi - dm*dy*summ`.
fn kquant_block(q: &[u8; QK_K], sc: &[i32; 16], mn: &[i32; 16], y: &BlockQ8K) -> (i32, i32) {
    let mut sumi = 0i32;
    let mut summ = 0i32;
    for g in 0..16 {
        let s: i32 = (0..16).map(|l| q[16 * g + l] as i32 * y.qs[16 * g + l] as i32).sum();
        sumi += sc[g] * s;
        summ += mn[g] * y.bsums[g] as i32;
    }
    (sumi, summ)
}

/// Q4_K/Q5_K: per 32-element sub-block j, `w = d * sc_j * q - dmin * m_j`.
fn q4k_scales(scales: &[u8; 12]) -> ([i32; 16], [i32; 16]) {
    let mut sc = [0i32; 16];
    let mut mn = [0i32; 16];
    for j in 0..8 {
        let (s, m) = get_scale_min_k4(j, scales);
        sc[2 * j] = s as i32;
        sc[2 * j + 1] = s as i32;
        mn[2 * j] = m as i32;
        mn[2 * j + 1] = m as i32;
    }
    (sc, mn)
}

/// A k-quant super-block decoded for the integer dot: unsigned quants, per-16-group scales and
/// mins, and the two float factors (`w = d * sc[g] * q - dm * mn[g]` per element of group g).
pub(crate) struct KDecoded {
    pub q: [u8; QK_K],
    pub sc: [i32; 16],
    pub mn: [i32; 16],
    pub d: f32,
    pub dm: f32,
}

/// Decodes super-block bytes `blk` of a Q4_K, Q5_K or Q6_K row.
pub(crate) fn decode_kquant(ty: GgmlType, blk: &[u8]) -> KDecoded {
    let mut q = [0u8; QK_K];
    match ty {
        GgmlType::Q4_K => {
            let x: BlockQ4K = bytemuck::pod_read_unaligned(blk);
            for j in 0..4 {
                for l in 0..32 {
                    q[64 * j + l] = x.qs[32 * j + l] & 0x0f;
                    q[64 * j + 32 + l] = x.qs[32 * j + l] >> 4;
                }
            }
            let (sc, mn) = q4k_scales(&x.scales);
            KDecoded {
                q,
                sc,
                mn,
                d: f16_to_f32(x.d),
                dm: f16_to_f32(x.dmin),
            }
        }
        GgmlType::Q5_K => {
            let x: BlockQ5K = bytemuck::pod_read_unaligned(blk);
            for j in 0..4 {
                for l in 0..32 {
                    let h_lo = (x.qh[l] >> (2 * j)) & 1;
                    let h_hi = (x.qh[l] >> (2 * j + 1)) & 1;
                    q[64 * j + l] = (x.qs[32 * j + l] & 0x0f) | (h_lo << 4);
                    q[64 * j + 32 + l] = (x.qs[32 * j + l] >> 4) | (h_hi << 4);
                }
            }
            let (sc, mn) = q4k_scales(&x.scales);
            KDecoded {
                q,
                sc,
                mn,
                d: f16_to_f32(x.d),
                dm: f16_to_f32(x.dmin),
            }
        }
        _ => {
            let x: BlockQ6K = bytemuck::pod_read_unaligned(blk);
            // Unsigned 6-bit q in 0..64; the -32 offset becomes a "min" of 32 * scale per group.
            for h in 0..2 {
                let (ql, qh) = (&x.ql[64 * h..], &x.qh[32 * h..]);
                let o = 128 * h;
                for l in 0..32 {
                    q[o + l] = (ql[l] & 0x0f) | ((qh[l] & 3) << 4);
                    q[o + 32 + l] = (ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4);
                    q[o + 64 + l] = (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4);
                    q[o + 96 + l] = (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4);
                }
            }
            let sc: [i32; 16] = std::array::from_fn(|g| x.scales[g] as i32);
            let mn: [i32; 16] = std::array::from_fn(|g| 32 * x.scales[g] as i32);
            let d = f16_to_f32(x.d);
            KDecoded { q, sc, mn, d, dm: d }
        }
    }
}

fn vec_dot_q4_k_q8_k(w: &[u8], a: &[u8]) -> f32 {
    vec_dot_kquant_q8_k(GgmlType::Q4_K, w, a)
}

fn vec_dot_q5_k_q8_k(w: &[u8], a: &[u8]) -> f32 {
    vec_dot_kquant_q8_k(GgmlType::Q5_K, w, a)
}

fn vec_dot_q6_k_q8_k(w: &[u8], a: &[u8]) -> f32 {
    vec_dot_kquant_q8_k(GgmlType::Q6_K, w, a)
}

/// Q4_K, Q5_K, Q6_K against Q8_K: each super-block decoded ([`decode_kquant`]), then one
/// integer dot per 16-element group.
fn vec_dot_kquant_q8_k(ty: GgmlType, w: &[u8], a: &[u8]) -> f32 {
    let bs = ty.type_size();
    let mut sum = 0f32;
    for (x, y) in w.chunks_exact(bs).zip(blocks::<BlockQ8K>(a)) {
        let k = decode_kquant(ty, x);
        let (sumi, summ) = kquant_block(&k.q, &k.sc, &k.mn, &y);
        sum += k.d * y.d * sumi as f32 - k.dm * y.d * summ as f32;
    }
    sum
}

// ---------------------------------------------------------------------------------------------
// Element-wise operations (the specification of the SIMD versions in `ops`).

/// `out[i] = x[i] * weight[i] / sqrt(mean(x^2) + eps)`.
pub fn rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let ss: f64 = x.iter().map(|&v| v as f64 * v as f64).sum();
    let scale = (1.0 / (ss / x.len().max(1) as f64 + eps as f64).sqrt()) as f32;
    for ((o, &v), &w) in out.iter_mut().zip(x).zip(weight) {
        *o = v * scale * w;
    }
}

/// `sum(a[i] * b[i])` with `a` in f16 (attention scores over an f16 KV cache).
pub fn dot_f16(a: &[f16], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(&x, &y)| f16_to_f32(x) * y).sum()
}

/// `scores[j] = rows[j * stride..][..q.len()] · q`.
pub fn dot_f16_rows(rows: &[f16], stride: usize, q: &[f32], scores: &mut [f32]) {
    for (j, s) in scores.iter_mut().enumerate() {
        *s = dot_f16(&rows[j * stride..j * stride + q.len()], q);
    }
}

/// `out = sum_j weights[j] * rows[j * stride..][..out.len()]`.
pub fn weighted_sum_f16_rows(rows: &[f16], stride: usize, weights: &[f32], out: &mut [f32]) {
    out.fill(0.0);
    for (j, &w) in weights.iter().enumerate() {
        axpy_f16(w, &rows[j * stride..j * stride + out.len()], out);
    }
}

/// `y[i] += alpha * x[i]`.
pub fn axpy_f16(alpha: f32, x: &[f16], y: &mut [f32]) {
    for (o, &v) in y.iter_mut().zip(x) {
        *o += alpha * f16_to_f32(v);
    }
}

/// Widens a row of f16.
pub fn f16_to_f32_row(src: &[f16], dst: &mut [f32]) {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = f16_to_f32(s);
    }
}

/// Narrows a row to f16 (nearest-even, as ggml).
pub fn f32_to_f16_row(src: &[f32], dst: &mut [f16]) {
    crate::quant::float::f32_to_f16_row(src, dst);
}

/// `x / (1 + e^-x)`.
#[inline]
pub fn silu1(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// In-place SiLU.
pub fn silu(x: &mut [f32]) {
    for v in x {
        *v = silu1(*v);
    }
}

/// `out[i] = silu(gate[i]) * up[i]`.
pub fn swiglu(gate: &[f32], up: &[f32], out: &mut [f32]) {
    for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
        *o = silu1(g) * u;
    }
}

/// In-place numerically stable softmax.
pub fn softmax(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        // All masked: no finite logit; leave a uniform distribution rather than NaNs.
        let u = 1.0 / x.len().max(1) as f32;
        x.iter_mut().for_each(|v| *v = u);
        return;
    }
    let mut sum = 0f64;
    for v in x.iter_mut() {
        let d = *v - max;
        // Below -88 the result is subnormal or zero, negligible beside the max's 1; skipping
        // `exp` there avoids libm's slow underflow path (weights far below the max are common
        // in attention).
        *v = if d < -88.0 { 0.0 } else { d.exp() };
        sum += *v as f64;
    }
    let inv = (1.0 / sum) as f32;
    x.iter_mut().for_each(|v| *v *= inv);
}
