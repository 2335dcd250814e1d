//! The 32-element "legacy" formats: Q4_0, Q4_1 (weights) and Q8_0, Q8_1 (weights and the
//! activation partners of Q4_0/Q8_0 and Q4_1), bit-identical to ggml's `quantize_row_*_ref`.
//!
//! Arithmetic is written in ggml's evaluation order with no fused multiply-add, because a
//! different rounding of `x * id` can move a value across a rounding boundary and flip a quant.

use super::blocks::{BlockQ4_0, BlockQ4_1, BlockQ8_0, BlockQ8_1, QK4_0, QK4_1, QK8_0, QK8_1};
use super::float::{f16_to_f32, f32_to_f16};
use super::format::{BlockFormat, Codec};
use super::rounding::{c_round_i8, c_trunc_i8};
use super::types::GgmlType;

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
        for (j, &q) in self.qs.iter().enumerate() {
            y[j] = ((q & 0x0F) as i32 - 8) as f32 * d;
            y[j + QK4_0 / 2] = ((q >> 4) as i32 - 8) as f32 * d;
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
        for (j, &q) in self.qs.iter().enumerate() {
            y[j] = (q & 0x0F) as f32 * d + m;
            y[j + QK4_1 / 2] = (q >> 4) as f32 * d + m;
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
