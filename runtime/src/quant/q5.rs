//! The 5-bit 32-element formats Q5_0 (`w = d * (q - 16)`) and Q5_1 (`w = d * q + m`),
//! bit-identical to ggml's `quantize_row_q5_{0,1}_ref` and `dequantize_row_q5_{0,1}`.
//!
//! llama.cpp's Q4_K_M mix falls back to them for tensors whose rows are not a multiple of 256
//! (Q4_K → Q5_0, Q5_K → Q5_1), and community GGUFs use them directly. Their matmul partners
//! are the Q8_0 (Q5_0) and Q8_1 (Q5_1) activations, as in ggml.
//!
//! As in `legacy`, arithmetic follows ggml's evaluation order with no fused multiply-add: a
//! differently rounded `x * id` can cross a rounding boundary and flip a quant.

use super::blocks::{BlockQ5_0, BlockQ5_1, QK5_0, QK5_1};
use super::float::{f16_to_f32, f32_to_f16};
use super::format::{BlockFormat, Codec};
use super::rounding::{c_trunc_i32, c_trunc_i8};
use super::types::GgmlType;

/// Splits 32 five-bit quants into the 16 nibble bytes (elements j and j + 16 share byte j)
/// and the little-endian `qh` word holding bit 4 of element j in bit j.
#[inline(always)]
fn pack5(q: &[u8; 32]) -> ([u8; 16], [u8; 4]) {
    let mut qs = [0u8; 16];
    let mut qh = 0u32;
    for j in 0..16 {
        let (lo, hi) = (q[j], q[j + 16]);
        qs[j] = (lo & 0x0f) | ((hi & 0x0f) << 4);
        qh |= ((lo as u32 & 0x10) >> 4) << j;
        qh |= ((hi as u32 & 0x10) >> 4) << (j + 16);
    }
    (qs, qh.to_le_bytes())
}

/// The 32 five-bit quants (0..32) of a block's `qs` and `qh`.
#[inline]
pub(crate) fn unpack5(qs: &[u8; 16], qh: [u8; 4]) -> [u8; 32] {
    let qh = u32::from_le_bytes(qh);
    let mut q = [0u8; 32];
    for j in 0..16 {
        q[j] = (qs[j] & 0x0f) | ((((qh >> j) & 1) as u8) << 4);
        q[j + 16] = (qs[j] >> 4) | ((((qh >> (j + 16)) & 1) as u8) << 4);
    }
    q
}

impl BlockFormat for BlockQ5_0 {
    const TYPE: GgmlType = GgmlType::Q5_0;
    const BLOCK: usize = QK5_0;
}

impl Codec for BlockQ5_0 {
    #[inline(always)]
    fn quantize_block(x: &[f32]) -> Self {
        // The signed value of largest magnitude (first on ties) maps to -16, the full range on
        // that side, as in Q4_0.
        let (mut amax, mut max) = (0.0f32, 0.0f32);
        for &v in &x[..QK5_0] {
            if amax < v.abs() {
                amax = v.abs();
                max = v;
            }
        }
        let d = max / -16.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        // `MIN(31, (int8_t)(x * id + 16.5f))` stored as uint8_t.
        let q: [u8; 32] = std::array::from_fn(|j| (c_trunc_i8(x[j] * id + 16.5) as i32).min(31) as u8);
        let (qs, qh) = pack5(&q);
        BlockQ5_0 {
            d: f32_to_f16(d),
            qh,
            qs,
        }
    }

    #[inline(always)]
    fn dequantize_block(&self, y: &mut [f32]) {
        let d = f16_to_f32(self.d);
        for (o, q) in y.iter_mut().zip(unpack5(&self.qs, self.qh)) {
            *o = (q as i32 - 16) as f32 * d;
        }
    }
}

impl BlockFormat for BlockQ5_1 {
    const TYPE: GgmlType = GgmlType::Q5_1;
    const BLOCK: usize = QK5_1;
}

impl Codec for BlockQ5_1 {
    #[inline(always)]
    fn quantize_block(x: &[f32]) -> Self {
        let (mut min, mut max) = (f32::MAX, -f32::MAX);
        for &v in &x[..QK5_1] {
            if v < min {
                min = v;
            }
            if v > max {
                max = v;
            }
        }
        let d = (max - min) / 31.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        // `(uint8_t)((x - min) * id + 0.5f)`: gcc converts through a 32-bit truncation and
        // keeps the low byte.
        let q: [u8; 32] = std::array::from_fn(|j| c_trunc_i32((x[j] - min) * id + 0.5) as u8);
        let (qs, qh) = pack5(&q);
        BlockQ5_1 {
            d: f32_to_f16(d),
            m: f32_to_f16(min),
            qh,
            qs,
        }
    }

    #[inline(always)]
    fn dequantize_block(&self, y: &mut [f32]) {
        let d = f16_to_f32(self.d);
        let m = f16_to_f32(self.m);
        for (o, q) in y.iter_mut().zip(unpack5(&self.qs, self.qh)) {
            *o = q as f32 * d + m;
        }
    }
}
