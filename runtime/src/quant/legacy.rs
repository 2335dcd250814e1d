//! The 32-element "legacy" formats: Q4_0, Q4_1 (weights) and Q8_0, Q8_1 (weights and the
//! activation partners of Q4_0/Q8_0 and Q4_1), bit-identical to ggml's `quantize_row_*_ref`.
//!
//! Arithmetic is written in ggml's evaluation order with no fused multiply-add, because a
//! different rounding of `x * id` can move a value across a rounding boundary and flip a quant.
//!
//! Activations are quantized by [`quantize_act_q8_0`] / [`quantize_act_q8_1`] instead, which
//! follow ggml's x86 CPU backend (the `from_float` its matmuls use) rather than the reference.

use super::blocks::{BlockQ4_0, BlockQ4_1, BlockQ8_0, BlockQ8_1, QK4_0, QK4_1, QK8_0, QK8_1};
use super::float::{f16_to_f32, f32_to_f16};
use super::format::{check_lengths, BlockFormat, Codec};
use super::rounding::{c_round_i8, c_trunc_i8, nearest_int, round_away_small, SMALL_LIMIT};
use super::types::GgmlType;
use super::QuantError;

/// Whether `v` is a NaN, as an integer compare on the bits (vectorizes without branches).
#[inline(always)]
fn nan_bit(v: f32) -> u32 {
    ((v.to_bits() & 0x7fff_ffff) > 0x7f80_0000) as u32
}

/// `b` if it is larger than `a`, else `a` (x86 `maxps` semantics: a NaN `b` is skipped).
#[inline(always)]
fn max_skip_nan(a: f32, b: f32) -> f32 {
    if a < b {
        b
    } else {
        a
    }
}

/// The signed value with the largest magnitude, the first one on ties, exactly as ggml's
/// `if (amax < fabsf(v)) { amax = fabsf(v); max = v; }` scan picks it (NaN is never taken;
/// an all-zero block keeps the initial `+0.0`): the first value whose magnitude is the
/// block's maximum, which is the last one the sequential scan updates to.
///
/// The maximum magnitude comes from a halving tree of lane-wise maxima (each level one
/// vector instruction; the maximum of non-NaN values does not depend on the order); then
/// whether `+amax` and `-amax` occur, as OR reductions. Only when both occur does the order
/// matter, and only then is the block scanned.
#[inline(always)]
fn signed_absmax32(x: &[f32; 32]) -> f32 {
    let mut m = [0.0f32; 16];
    for k in 0..16 {
        m[k] = max_skip_nan(max_skip_nan(0.0, x[k].abs()), x[k + 16].abs());
    }
    for k in 0..8 {
        m[k] = max_skip_nan(m[k], m[k + 8]);
    }
    for k in 0..4 {
        m[k] = max_skip_nan(m[k], m[k + 4]);
    }
    for k in 0..2 {
        m[k] = max_skip_nan(m[k], m[k + 2]);
    }
    let amax = max_skip_nan(m[0], m[1]);
    let (mut positive, mut negative) = (0u32, 0u32);
    for &v in x {
        positive |= (v == amax) as u32;
        negative |= (v == -amax) as u32;
    }
    if amax == 0.0 {
        return 0.0;
    }
    if positive != 0 && negative != 0 {
        return x.iter().copied().find(|v| v.abs() == amax).unwrap_or(0.0);
    }
    // One sign only: set the sign bit arithmetically, since a branch on the sign of random
    // data would be mispredicted half the time.
    f32::from_bits(amax.to_bits() | (negative << 31))
}

/// `MAX(amax, fabsf(v))` over the block with C's `a > b ? a : b`, so a NaN propagates the
/// way it does in ggml (the result is the largest magnitude after the last NaN, or NaN if
/// the block ends with one), and whether the block holds a NaN. Finite blocks take a
/// lane-wise maximum that vectorizes; blocks holding a NaN take the sequential fold, whose
/// order then matters.
#[inline(always)]
fn absmax32(x: &[f32; 32]) -> (f32, bool) {
    let mut lanes = [0.0f32; 8];
    let mut nan = 0u32;
    for c in 0..4 {
        for k in 0..8 {
            let v = x[8 * c + k];
            let a = v.abs();
            nan |= nan_bit(v);
            lanes[k] = if lanes[k] > a { lanes[k] } else { a };
        }
    }
    if nan != 0 {
        let amax = x
            .iter()
            .fold(0.0f32, |amax, &v| if amax > v.abs() { amax } else { v.abs() });
        return (amax, true);
    }
    (lanes.iter().fold(0.0f32, |m, &a| if m > a { m } else { a }), false)
}

/// The first 32 values of a block as a fixed-size array (the checked `from_float` hands
/// over exact `chunks_exact` pieces), so the loops over it carry no bounds checks.
#[inline(always)]
fn block32(x: &[f32]) -> &[f32; 32] {
    x[..32].try_into().expect("a 32-element block")
}

/// `MIN(15, (int8_t)v)` converted to `uint8_t`, as the 4-bit formats store a nibble.
#[inline(always)]
fn nibble(v: f32) -> u8 {
    (c_trunc_i8(v) as i32).min(15) as u8
}

impl BlockFormat for BlockQ4_0 {
    const TYPE: GgmlType = GgmlType::Q4_0;
    const BLOCK: usize = QK4_0;

    /// As the default, but two blocks per step: each block is one long dependency chain
    /// (maximum, then the scale's division, then the quants), and putting two independent
    /// chains side by side lets the CPU overlap them.
    #[inline(always)]
    fn from_float(xs: &[f32], ys: &mut [Self]) -> Result<(), QuantError> {
        check_lengths::<Self>(xs.len(), ys.len())?;
        let mut x_pairs = xs.chunks_exact(2 * QK4_0);
        let mut y_pairs = ys.chunks_exact_mut(2);
        for (x, y) in (&mut x_pairs).zip(&mut y_pairs) {
            let (a, b) = (block32(&x[..QK4_0]), block32(&x[QK4_0..]));
            let (max_a, max_b) = (signed_absmax32(a), signed_absmax32(b));
            y[0] = q4_0_with_max(a, max_a);
            y[1] = q4_0_with_max(b, max_b);
        }
        for (x, y) in x_pairs.remainder().chunks_exact(QK4_0).zip(y_pairs.into_remainder()) {
            *y = Self::quantize_block(x);
        }
        Ok(())
    }
}

/// Q4_0 of one block given its signed maximum ([`signed_absmax32`]).
#[inline(always)]
fn q4_0_with_max(x: &[f32; 32], max: f32) -> BlockQ4_0 {
    // Scale so that the extreme value maps to -8 (the full nibble range on that side).
    let d = max / -8.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut q = [0u8; QK4_0];
    // With a normal `d`, `max * id` is -8 within rounding and |x * id| <= |max * id| (rounding
    // is monotonic), so every finite `v = x * id + 8.5` lies in [0.25, 16.75]: there C's
    // truncation is the floor, computed by rounding with 2^23 (exact below 2^22) and stepping
    // down where that rounded up, all in vector-friendly float and integer arithmetic. A NaN
    // element becomes 0 (C converts it to 0x80000000, whose low byte is 0). Other blocks (a
    // subnormal `d`, whose reciprocal is inexact or infinite) take the exact C emulation.
    if (max * id).abs() <= 8.25 {
        const TWO_23: f32 = 8_388_608.0;
        for (q, &xv) in q.iter_mut().zip(x) {
            let v = xv * id + 8.5;
            let shifted = v + TWO_23;
            let rounded = shifted.to_bits().wrapping_sub(TWO_23.to_bits()) as i32;
            let floor = rounded - ((shifted - TWO_23) > v) as i32;
            let floor = if v.is_nan() { 0 } else { floor };
            *q = floor.min(15) as u8;
        }
    } else {
        for (q, &v) in q.iter_mut().zip(x) {
            *q = nibble(v * id + 8.5);
        }
    }
    // ggml ORs `xi1 << 4` into a uint8_t: an out-of-range nibble keeps its low 8 bits.
    let (lo, hi) = q.split_at(QK4_0 / 2);
    let mut qs = [0u8; QK4_0 / 2];
    for ((out, &l), &h) in qs.iter_mut().zip(lo).zip(hi) {
        *out = l | (h << 4);
    }
    BlockQ4_0 { d: f32_to_f16(d), qs }
}

impl Codec for BlockQ4_0 {
    #[inline(always)]
    fn quantize_block(x: &[f32]) -> Self {
        let x = block32(x);
        q4_0_with_max(x, signed_absmax32(x))
    }

    #[inline(always)]
    fn dequantize_block(&self, y: &mut [f32]) {
        let d = f16_to_f32(self.d);
        // Halves as slices of known length: no bounds checks, so the loop vectorizes.
        let (lo, hi) = y[..QK4_0].split_at_mut(QK4_0 / 2);
        for ((l, h), &q) in lo.iter_mut().zip(hi.iter_mut()).zip(&self.qs) {
            *l = ((q & 0x0F) as i32 - 8) as f32 * d;
            *h = ((q >> 4) as i32 - 8) as f32 * d;
        }
    }
}

impl BlockFormat for BlockQ4_1 {
    const TYPE: GgmlType = GgmlType::Q4_1;
    const BLOCK: usize = QK4_1;
}

impl Codec for BlockQ4_1 {
    #[inline(always)]
    fn quantize_block(x: &[f32]) -> Self {
        let (mut min, mut max) = (f32::MAX, -f32::MAX);
        for &v in &x[..QK4_1] {
            if v < min {
                min = v;
            }
            if v > max {
                max = v;
            }
        }
        let d = (max - min) / 15.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut qs = [0u8; QK4_1 / 2];
        for (j, q) in qs.iter_mut().enumerate() {
            let lo = nibble((x[j] - min) * id + 0.5);
            let hi = nibble((x[j + QK4_1 / 2] - min) * id + 0.5);
            *q = lo | (hi << 4);
        }
        BlockQ4_1 {
            d: f32_to_f16(d),
            m: f32_to_f16(min),
            qs,
        }
    }

    #[inline(always)]
    fn dequantize_block(&self, y: &mut [f32]) {
        let d = f16_to_f32(self.d);
        let m = f16_to_f32(self.m);
        let (lo, hi) = y[..QK4_1].split_at_mut(QK4_1 / 2);
        for ((l, h), &q) in lo.iter_mut().zip(hi.iter_mut()).zip(&self.qs) {
            *l = (q & 0x0F) as f32 * d + m;
            *h = (q >> 4) as f32 * d + m;
        }
    }
}

/// The common Q8_0/Q8_1 step: scale so the largest magnitude maps to 127, round half away
/// from zero (`roundf`). Returns the f32 scale and the quants.
#[inline(always)]
fn quantize_q8_32(x: &[f32]) -> (f32, [i8; 32]) {
    let x = block32(x);
    let (amax, has_nan) = absmax32(x);
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut qs = [0i8; 32];
    // As in Q4_0: small products take the float-only rounding, the rest the exact C one.
    if !has_nan && (amax * id).abs() < SMALL_LIMIT {
        for (q, &v) in qs.iter_mut().zip(x) {
            *q = nearest_int(round_away_small(v * id)) as i8;
        }
    } else {
        for (q, &v) in qs.iter_mut().zip(x) {
            *q = c_round_i8(v * id);
        }
    }
    (d, qs)
}

impl BlockFormat for BlockQ8_0 {
    const TYPE: GgmlType = GgmlType::Q8_0;
    const BLOCK: usize = QK8_0;
}

impl Codec for BlockQ8_0 {
    #[inline(always)]
    fn quantize_block(x: &[f32]) -> Self {
        let (d, qs) = quantize_q8_32(x);
        BlockQ8_0 { d: f32_to_f16(d), qs }
    }

    #[inline(always)]
    fn dequantize_block(&self, y: &mut [f32]) {
        let d = f16_to_f32(self.d);
        for (o, &q) in y.iter_mut().zip(&self.qs) {
            *o = q as f32 * d;
        }
    }
}

impl BlockFormat for BlockQ8_1 {
    const TYPE: GgmlType = GgmlType::Q8_1;
    const BLOCK: usize = QK8_1;
}

impl Codec for BlockQ8_1 {
    #[inline(always)]
    fn quantize_block(x: &[f32]) -> Self {
        let (d, qs) = quantize_q8_32(x);
        // `s` uses the unrounded f32 scale, as ggml does, so kernels can fold Q4_1's min in.
        let sum: i32 = qs.iter().map(|&q| q as i32).sum();
        BlockQ8_1 {
            d: f32_to_f16(d),
            s: f32_to_f16(sum as f32 * d),
            qs,
        }
    }

    /// ggml has no `to_float` for Q8_1; this is the natural `d * q` for tests and debugging.
    #[inline(always)]
    fn dequantize_block(&self, y: &mut [f32]) {
        let d = f16_to_f32(self.d);
        for (o, &q) in y.iter_mut().zip(&self.qs) {
            *o = q as f32 * d;
        }
    }
}

/// `_mm256_round_ps(v, _MM_ROUND_NEAREST)` (half to even) followed by `_mm256_cvtps_epi32`
/// and the saturating packs to i8, as ggml's x86 activation quantizers store a quant. NaN and
/// |v| >= 2^31 convert to the "integer indefinite" `i32::MIN`, which saturates to -128.
#[inline(always)]
fn round_even_sat_i8(v: f32) -> i8 {
    // Anything beyond ±256 saturates anyway; clamping first keeps `nearest_int` exact. Both
    // arms are computed so the loop has no data-dependent branch.
    let q = nearest_int(v.clamp(-256.0, 256.0)).clamp(-128, 127) as i8;
    if v.abs() < 2_147_483_648.0 {
        q
    } else {
        i8::MIN
    }
}

/// One 32-element activation block as ggml's CPU backend quantizes activations on x86
/// (`quantize_row_q8_0`/`quantize_row_q8_1` in ggml-cpu/arch/x86/quants.c, AVX/AVX2, also
/// used by its repacked Q4_0 path): `id = 127 / amax` (not the reference `1 / (amax / 127)`,
/// which differs in the last bit for some `amax`) and round half to even (not `roundf`).
/// Returns the f32 scale `amax / 127` and the quants.
#[inline]
fn quantize_act_q8_32(x: &[f32]) -> (f32, [i8; 32]) {
    let x = block32(x);
    let (amax, _) = absmax32(x);
    let d = amax / 127.0;
    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
    let mut qs = [0i8; 32];
    for (q, &v) in qs.iter_mut().zip(x) {
        *q = round_even_sat_i8(v * id);
    }
    (d, qs)
}

fn check_act_lengths(ty: GgmlType, n_floats: usize, n_blocks: usize) -> Result<(), QuantError> {
    if !n_floats.is_multiple_of(32) {
        return Err(QuantError::RowLength {
            ty,
            len: n_floats,
            block: 32,
        });
    }
    if n_floats / 32 != n_blocks {
        return Err(QuantError::Length {
            ty,
            what: "blocks",
            expected: n_floats / 32,
            got: n_blocks,
        });
    }
    Ok(())
}

/// Quantizes activations to Q8_0 exactly as ggml's x86 CPU backend does (its `from_float` for
/// Q8_0, which its Q4_0/Q8_0 matmuls use), so that our quantized matmuls see the same integer
/// activations as llama.cpp's. Weights keep the reference quantizer ([`BlockFormat::from_float`],
/// what `llama-quantize` writes). `x.len()` must be `32 * out.len()`; NaN/Inf are not rejected.
pub fn quantize_act_q8_0(x: &[f32], out: &mut [BlockQ8_0]) -> Result<(), QuantError> {
    check_act_lengths(GgmlType::Q8_0, x.len(), out.len())?;
    for (x, y) in x.chunks_exact(QK8_0).zip(out.iter_mut()) {
        let (d, qs) = quantize_act_q8_32(x);
        *y = BlockQ8_0 { d: f32_to_f16(d), qs };
    }
    Ok(())
}

/// Quantizes activations to Q8_1 (the partner of Q4_1) as ggml's x86 CPU `quantize_row_q8_1`:
/// the quants of [`quantize_act_q8_0`] plus `s = d * sum(q)` from the unrounded f32 scale.
pub fn quantize_act_q8_1(x: &[f32], out: &mut [BlockQ8_1]) -> Result<(), QuantError> {
    check_act_lengths(GgmlType::Q8_1, x.len(), out.len())?;
    for (x, y) in x.chunks_exact(QK8_1).zip(out.iter_mut()) {
        let (d, qs) = quantize_act_q8_32(x);
        let sum: i32 = qs.iter().map(|&q| q as i32).sum();
        *y = BlockQ8_1 {
            d: f32_to_f16(d),
            s: f32_to_f16(sum as f32 * d),
            qs,
        };
    }
    Ok(())
}

#[cfg(test)]
mod act_tests {
    use super::*;
    use bytemuck::Zeroable;

    fn act_q8_0(x: &[f32]) -> BlockQ8_0 {
        let mut b = [BlockQ8_0 {
            d: f32_to_f16(0.0),
            qs: [0; 32],
        }];
        quantize_act_q8_0(x, &mut b).unwrap();
        b[0]
    }

    #[test]
    fn ties_round_to_even_unlike_the_weight_quantizer() {
        // amax 127: d = id = 1, so x * id is exactly x.
        let mut x = [0f32; 32];
        x[..8].copy_from_slice(&[127.0, 2.5, -2.5, 3.5, -3.5, 0.5, -0.5, 126.5]);
        assert_eq!(&act_q8_0(&x).qs[..8], &[127, 2, -2, 4, -4, 0, 0, 126]);
        // The reference (weights) still rounds half away from zero.
        let mut w = [BlockQ8_0::zeroed(); 1];
        BlockQ8_0::from_float(&x, &mut w).unwrap();
        assert_eq!(&w[0].qs[..8], &[127, 3, -3, 4, -4, 1, -1, 127]);
    }

    #[test]
    fn scale_is_127_over_amax() {
        // Find an amax where 127/amax and 1/(amax/127) differ, then a value whose product lands
        // on different sides of a rounding boundary under the two: the activation quantizer
        // must follow 127/amax.
        let mut found = false;
        'outer: for i in 0..100_000u32 {
            let amax = 1.0 + i as f32 * 1.37e-5;
            let (id_act, id_ref) = (127.0 / amax, 1.0 / (amax / 127.0));
            if id_act == id_ref {
                continue;
            }
            for k in 1..126 {
                // Walk a few ulps around the value that maps to k + 0.5.
                let mut v = (k as f32 + 0.5) / id_act;
                for _ in 0..8 {
                    let (a, r) = (v * id_act, v * id_ref);
                    if a.round_ties_even() != r.round_ties_even() {
                        let mut x = [0f32; 32];
                        x[0] = amax;
                        x[1] = v;
                        assert_eq!(act_q8_0(&x).qs[1] as f32, a.round_ties_even(), "amax {amax} v {v}");
                        found = true;
                        break 'outer;
                    }
                    v = f32::from_bits(v.to_bits() + 1);
                }
            }
        }
        assert!(found, "no amax where the two scales disagree was found");
    }

    #[test]
    fn q8_1_sum_and_degenerate_rows() {
        let x: Vec<f32> = (0..64).map(|i| (i as f32 - 31.5) * 0.37).collect();
        let mut b = [BlockQ8_1::zeroed(); 2];
        quantize_act_q8_1(&x, &mut b).unwrap();
        for (blk, xs) in b.iter().zip(x.chunks(32)) {
            let d = absmax32(xs.try_into().unwrap()).0 / 127.0;
            let sum: i32 = blk.qs.iter().map(|&q| q as i32).sum();
            assert_eq!(blk.s, f32_to_f16(sum as f32 * d));
            assert_eq!(blk.qs, act_q8_0(xs).qs);
        }
        // Zeros stay zero; NaN and infinities give defined bytes, not a panic.
        assert_eq!(act_q8_0(&[0.0; 32]).qs, [0; 32]);
        let mut x = [1.0f32; 32];
        x[3] = f32::NAN;
        let _ = act_q8_0(&x);
        x[3] = f32::INFINITY;
        let q = act_q8_0(&x);
        assert_eq!(q.qs[0], 0, "1 * (127 / inf) = 0");
        assert_eq!(q.qs[3], i8::MIN, "inf * 0 = NaN converts to the indefinite integer");
        // Lengths are checked.
        let mut one = [BlockQ8_0::zeroed(); 1];
        assert!(matches!(
            quantize_act_q8_0(&[0.0; 33], &mut one),
            Err(QuantError::RowLength { .. })
        ));
        assert!(matches!(
            quantize_act_q8_0(&[0.0; 64], &mut one),
            Err(QuantError::Length { .. })
        ));
    }
}
