//! Byte layouts of the quantized blocks, identical to ggml's `ggml-common.h`.
//!
//! Every struct is `#[repr(C)]`, padding-free and `Pod`, so a tensor's bytes in the mmap can be
//! viewed as a slice of blocks with `bytemuck::try_cast_slice` (no copy, no `unsafe`).
//! Scales are stored as IEEE half (`half::f16`) exactly as ggml stores `ggml_half`.

use super::types::QK_K;
use bytemuck::{Pod, Zeroable};
use half::f16;

/// Elements per block of the "legacy" formats.
pub const QK4_0: usize = 32;
pub const QK4_1: usize = 32;
pub const QK8_0: usize = 32;
pub const QK8_1: usize = 32;
pub const QK5_0: usize = 32;
pub const QK5_1: usize = 32;
/// Bytes of packed 6-bit scales/mins in a Q4_K/Q5_K super-block.
pub const K_SCALE_SIZE: usize = 12;

/// 32 weights: `w = d * (q - 8)`, q in 0..16; low nibbles hold elements 0..16, high 16..32.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ4_0 {
    pub d: f16,
    pub qs: [u8; QK4_0 / 2],
}

/// 32 weights: `w = d * q + m`, q in 0..16.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ4_1 {
    pub d: f16,
    pub m: f16,
    pub qs: [u8; QK4_1 / 2],
}

/// 32 weights: `w = d * (q - 16)`, q in 0..32: the low 4 bits as in Q4_0 (low nibbles hold
/// elements 0..16, high nibbles 16..32), the fifth bit of element j in bit j of the
/// little-endian u32 `qh` (bytes, not a `u32`, so the block stays 22 bytes with no padding).
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ5_0 {
    pub d: f16,
    pub qh: [u8; 4],
    pub qs: [u8; QK5_0 / 2],
}

/// 32 weights: `w = d * q + m`, q in 0..32, bits laid out as [`BlockQ5_0`].
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ5_1 {
    pub d: f16,
    pub m: f16,
    pub qh: [u8; 4],
    pub qs: [u8; QK5_1 / 2],
}

/// 32 weights: `w = d * q`, q in -127..=127.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ8_0 {
    pub d: f16,
    pub qs: [i8; QK8_0],
}

/// Q8_0 plus `s = d * sum(q)` (the activation partner of Q4_1).
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ8_1 {
    pub d: f16,
    pub s: f16,
    pub qs: [i8; QK8_1],
}

/// 256 weights in 8 sub-blocks of 32: `w = d * sc * q - dmin * m`, 6-bit sc/m packed in
/// `scales`, 4-bit q.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ4K {
    pub d: f16,
    pub dmin: f16,
    pub scales: [u8; K_SCALE_SIZE],
    pub qs: [u8; QK_K / 2],
}

/// As Q4_K with a fifth bit per weight in `qh`.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ5K {
    pub d: f16,
    pub dmin: f16,
    pub scales: [u8; K_SCALE_SIZE],
    pub qh: [u8; QK_K / 8],
    pub qs: [u8; QK_K / 2],
}

/// 256 weights in 16 sub-blocks of 16: `w = d * scales[i] * (q - 32)`, 6-bit q split into
/// 4 low bits (`ql`) and 2 high bits (`qh`).
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ6K {
    pub ql: [u8; QK_K / 2],
    pub qh: [u8; QK_K / 4],
    pub scales: [i8; QK_K / 16],
    pub d: f16,
}

/// The activation partner of the k-quants: 256 int8 values, an f32 scale and the sums of
/// each group of 16.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ8K {
    pub d: f32,
    pub qs: [i8; QK_K],
    pub bsums: [i16; QK_K / 16],
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::GgmlType;
    use std::mem::size_of;

    #[test]
    fn sizes_match_ggml() {
        assert_eq!(size_of::<BlockQ4_0>(), GgmlType::Q4_0.type_size());
        assert_eq!(size_of::<BlockQ4_1>(), GgmlType::Q4_1.type_size());
        assert_eq!(size_of::<BlockQ5_0>(), GgmlType::Q5_0.type_size());
        assert_eq!(size_of::<BlockQ5_1>(), GgmlType::Q5_1.type_size());
        assert_eq!(size_of::<BlockQ8_0>(), GgmlType::Q8_0.type_size());
        assert_eq!(size_of::<BlockQ8_1>(), GgmlType::Q8_1.type_size());
        assert_eq!(size_of::<BlockQ4K>(), GgmlType::Q4_K.type_size());
        assert_eq!(size_of::<BlockQ5K>(), GgmlType::Q5_K.type_size());
        assert_eq!(size_of::<BlockQ6K>(), GgmlType::Q6_K.type_size());
        assert_eq!(size_of::<BlockQ8K>(), GgmlType::Q8_K.type_size());
    }
}
