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
use super::format::{BlockFormat, Codec};
use super::rounding::{c_round_i8, c_trunc_i8, nearest_int};
use super::types::GgmlType;
use super::QuantError;

/// The signed value with the largest magnitude (the first one on ties), as ggml's symmetric
/// formats pick it, and that magnitude.
#[inline]
fn signed_absmax(x: &[f32]) -> (f32, f32) {
    let (mut amax, mut max) = (0.0f32, 0.0f32);
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    (amax, max)
}

/// `MAX(amax, fabsf(v))` over the block with C's `a > b ? a : b`, so a NaN propagates the
/// way it does in ggml.
#[inline]
fn absmax(x: &[f32]) -> f32 {
    x.iter()
        .fold(0.0f32, |amax, &v| if amax > v.abs() { amax } else { v.abs() })
}

/// `MIN(15, (int8_t)v)` converted to `uint8_t`, as the 4-bit formats store a nibble.
#[inline]
fn nibble(v: f32) -> u32 {
    (c_trunc_i8(v) as i32).min(15) as u8 as u32
}

impl BlockFormat for BlockQ4_0 {
    const TYPE: GgmlType = GgmlType::Q4_0;
    const BLOCK: usize = QK4_0;
}

impl Codec for BlockQ4_0 {
    fn quantize_block(x: &[f32]) -> Self {
        let (_, max) = signed_absmax(&x[..QK4_0]);
        // Scale so that the extreme value maps to -8 (the full nibble range on that side).
        let d = max / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut qs = [0u8; QK4_0 / 2];
        for (j, q) in qs.iter_mut().enumerate() {
            let lo = nibble(x[j] * id + 8.5);
            let hi = nibble(x[j + QK4_0 / 2] * id + 8.5);
            *q = (lo | (hi << 4)) as u8;
        }
        BlockQ4_0 { d: f32_to_f16(d), qs }
    }

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
            *q = (lo | (hi << 4)) as u8;
        }
        BlockQ4_1 {
            d: f32_to_f16(d),
            m: f32_to_f16(min),
            qs,
        }
    }

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
#[inline]
fn quantize_q8_32(x: &[f32]) -> (f32, [i8; 32]) {
    let amax = absmax(&x[..32]);
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut qs = [0i8; 32];
    for (q, &v) in qs.iter_mut().zip(x) {
        *q = c_round_i8(v * id);
    }
    (d, qs)
}

impl BlockFormat for BlockQ8_0 {
    const TYPE: GgmlType = GgmlType::Q8_0;
    const BLOCK: usize = QK8_0;
}

impl Codec for BlockQ8_0 {
    fn quantize_block(x: &[f32]) -> Self {
        let (d, qs) = quantize_q8_32(x);
        BlockQ8_0 { d: f32_to_f16(d), qs }
    }

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
    let amax = absmax(&x[..32]);
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
            let d = absmax(xs) / 127.0;
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
