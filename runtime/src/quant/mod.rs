//! Quantized block formats: type ids, block layouts, and the scalar reference quantize and
//! dequantize routines (bit-identical to ggml's reference quantizers).
//!
//! - [`quantize_row`] / [`dequantize_row`]: type-dispatched, length- and NaN-checked entry
//!   points over raw tensor bytes (the converter and loader use these).
//! - [`quantize_row_q8_0`], [`quantize_row_q8_1`], [`quantize_row_q8_k`]: the activation
//!   quantizers the matmul kernels pair with Q4_0/Q5_0/Q8_0, Q4_1/Q5_1 and the k-quants.
//! - [`BlockFormat`]: one implementation per block struct (`from_float` / `to_float`).
//! - [`float`]: f16/bf16 conversions with ggml's rounding; [`get_scale_min_k4`] and
//!   [`unpack_q4k_scales`] for kernels reading Q4_K/Q5_K scales.

pub mod blocks;
pub mod float;
pub mod format;
pub mod kquants;
pub mod legacy;
pub mod q5;
#[cfg(test)]
mod reference;
mod rounding;
pub mod types;

pub use blocks::{
    BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ5K, BlockQ5_0, BlockQ5_1, BlockQ6K, BlockQ8K, BlockQ8_0, BlockQ8_1,
};
pub use float::{bf16_to_f32, f16_to_f32, f32_to_bf16, f32_to_f16};
pub use format::BlockFormat;
pub use kquants::{get_scale_min_k4, pack_q4k_scales, q4k_scales_mins_words, unpack_q4k_scales};
pub use types::{GgmlType, QK_K};

use std::mem::size_of;
use thiserror::Error;

/// Why a row could not be quantized or dequantized.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum QuantError {
    /// The row length is not a whole number of blocks.
    #[error("{ty}: row of {len} elements is not a multiple of the block size {block}")]
    RowLength { ty: GgmlType, len: usize, block: usize },
    /// A buffer has the wrong size for the row.
    #[error("{ty}: {what} has length {got}, expected {expected}")]
    Length {
        ty: GgmlType,
        what: &'static str,
        expected: usize,
        got: usize,
    },
    /// The source holds NaN or ±inf at this element index (of the row passed in); weights like
    /// that would silently poison a whole block, so the caller should name the tensor and stop.
    #[error("non-finite value at element {index}")]
    NonFinite { index: usize },
    /// The type has no scalar implementation here.
    #[error("{ty}: {op} is not supported")]
    Unsupported { ty: GgmlType, op: &'static str },
}

/// Quantizes activations to Q8_0 (the partner of Q4_0 and Q8_0 weights) as ggml's x86 CPU
/// backend does for its matmuls (`127 / amax`, round half to even; see
/// [`legacy::quantize_act_q8_0`]), which differs from the reference `quantize_row_q8_0_ref`
/// (what [`quantize_row`] writes for Q8_0 weights) on rare ties. `x.len()` must be
/// `32 * out.len()`. NaN/Inf are not rejected.
pub fn quantize_row_q8_0(x: &[f32], out: &mut [BlockQ8_0]) -> Result<(), QuantError> {
    legacy::quantize_act_q8_0(x, out)
}

/// Quantizes activations to Q8_1 (Q8_0 plus `s = d * sum(q)`, the partner of Q4_1) as ggml's
/// x86 CPU backend does ([`legacy::quantize_act_q8_1`]). `x.len()` must be `32 * out.len()`.
pub fn quantize_row_q8_1(x: &[f32], out: &mut [BlockQ8_1]) -> Result<(), QuantError> {
    legacy::quantize_act_q8_1(x, out)
}

/// Quantizes activations to Q8_K (the partner of the k-quants; f32 scale, 16-element
/// `bsums`), as ggml's `quantize_row_q8_K_ref`. `x.len()` must be `256 * out.len()`.
pub fn quantize_row_q8_k(x: &[f32], out: &mut [BlockQ8K]) -> Result<(), QuantError> {
    BlockQ8K::from_float(x, out)
}

/// The types [`quantize_row`] accepts.
pub const QUANTIZE_TYPES: [GgmlType; 13] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q8_1,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
    GgmlType::Q8_K,
];

/// Quantizes `src` (one or more whole rows) into `dst` in type `ty`'s on-disk layout, exactly
/// as ggml's `ggml_quantize_chunk` without an importance matrix.
///
/// Errors: `src.len()` not a multiple of the block size, `dst.len()` not the matching byte
/// count, a non-finite value in `src` ([`QuantError::NonFinite`]; `dst` may then be partly
/// written), or a type without a quantizer (see [`QUANTIZE_TYPES`]). `dst` may have any
/// alignment.
pub fn quantize_row(ty: GgmlType, src: &[f32], dst: &mut [u8]) -> Result<(), QuantError> {
    if !QUANTIZE_TYPES.contains(&ty) {
        return Err(QuantError::Unsupported { ty, op: "quantize" });
    }
    let expected = expected_bytes(ty, src.len())?;
    if dst.len() != expected {
        return Err(QuantError::Length {
            ty,
            what: "destination bytes",
            expected,
            got: dst.len(),
        });
    }
    quantize_dispatch(ty, src, dst)
}

/// The widest build of [`quantize_checked`] this CPU runs.
fn quantize_dispatch(ty: GgmlType, src: &[f32], dst: &mut [u8]) -> Result<(), QuantError> {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vl")
        {
            // SAFETY: `quantize_checked_avx512` only lets the compiler use AVX-512 F/BW/VL
            // (and AVX2) for the portable code, and the CPU was just found to support them.
            return unsafe { quantize_checked_avx512(ty, src, dst) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: as above, for AVX2.
            return unsafe { quantize_checked_avx2(ty, src, dst) };
        }
    }
    quantize_checked(ty, src, dst)
}

/// [`quantize_checked`] compiled with AVX-512 F/BW/VL enabled (16 lanes, mask registers);
/// see [`quantize_checked_avx2`].
///
/// # Safety
/// The CPU must support AVX-512 F, BW and VL, and AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,avx512f,avx512bw,avx512vl")]
unsafe fn quantize_checked_avx512(ty: GgmlType, src: &[f32], dst: &mut [u8]) -> Result<(), QuantError> {
    quantize_checked(ty, src, dst)
}

/// [`quantize_checked`] compiled with AVX2 enabled: the same Rust, so the same float
/// operations in the same order (Rust never contracts `a * b + c` into an FMA), vectorized
/// 8 lanes wide instead of baseline x86-64's 4. Tested against the portable build in
/// `tests::simd_builds_match_the_portable_build`.
///
/// # Safety
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn quantize_checked_avx2(ty: GgmlType, src: &[f32], dst: &mut [u8]) -> Result<(), QuantError> {
    quantize_checked(ty, src, dst)
}

/// The non-finite check and quantizer dispatch of [`quantize_row`] after its length checks. Everything it calls down to
/// the per-block loops is `#[inline(always)]`, so each build of it (portable, AVX2) carries
/// its own vectorized copy of the loops.
#[inline(always)]
fn quantize_checked(ty: GgmlType, src: &[f32], dst: &mut [u8]) -> Result<(), QuantError> {
    // A piece at a time, checked for NaN/inf and then quantized while its values are still
    // in the L1 cache (a separate pass over the whole row first cost a tenth of Q4_0's time).
    const PIECE: usize = 8192;
    let piece_bytes = PIECE / ty.block_size() * ty.type_size();
    for (i, (x, y)) in src.chunks(PIECE).zip(dst.chunks_mut(piece_bytes)).enumerate() {
        if let Some(index) = first_non_finite(x) {
            return Err(QuantError::NonFinite {
                index: i * PIECE + index,
            });
        }
        quantize_piece(ty, x, y)?;
    }
    Ok(())
}

/// The type dispatch of [`quantize_checked`] for one piece (whole blocks).
#[inline(always)]
fn quantize_piece(ty: GgmlType, src: &[f32], dst: &mut [u8]) -> Result<(), QuantError> {
    match ty {
        GgmlType::F32 => {
            for (d, s) in dst.chunks_exact_mut(4).zip(src) {
                d.copy_from_slice(&s.to_le_bytes());
            }
        }
        GgmlType::F16 => {
            for (d, &s) in dst.chunks_exact_mut(2).zip(src) {
                d.copy_from_slice(&f32_to_f16(s).to_bits().to_le_bytes());
            }
        }
        GgmlType::BF16 => {
            for (d, &s) in dst.chunks_exact_mut(2).zip(src) {
                d.copy_from_slice(&f32_to_bf16(s).to_bits().to_le_bytes());
            }
        }
        GgmlType::Q4_0 => quantize_blocks::<BlockQ4_0>(src, dst)?,
        GgmlType::Q4_1 => quantize_blocks::<BlockQ4_1>(src, dst)?,
        GgmlType::Q5_0 => quantize_blocks::<BlockQ5_0>(src, dst)?,
        GgmlType::Q5_1 => quantize_blocks::<BlockQ5_1>(src, dst)?,
        GgmlType::Q8_0 => quantize_blocks::<BlockQ8_0>(src, dst)?,
        GgmlType::Q8_1 => quantize_blocks::<BlockQ8_1>(src, dst)?,
        GgmlType::Q4_K => quantize_blocks::<BlockQ4K>(src, dst)?,
        GgmlType::Q5_K => quantize_blocks::<BlockQ5K>(src, dst)?,
        GgmlType::Q6_K => quantize_blocks::<BlockQ6K>(src, dst)?,
        GgmlType::Q8_K => quantize_blocks::<BlockQ8K>(src, dst)?,
        _ => return Err(QuantError::Unsupported { ty, op: "quantize" }),
    }
    Ok(())
}

/// Dequantizes `src` (type `ty`'s bytes for `dst.len()` elements) into `dst`, exactly as
/// ggml's `to_float`. Supports the [`QUANTIZE_TYPES`]. `src` may have any alignment.
pub fn dequantize_row(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<(), QuantError> {
    if !QUANTIZE_TYPES.contains(&ty) {
        return Err(QuantError::Unsupported { ty, op: "dequantize" });
    }
    let expected = expected_bytes(ty, dst.len())?;
    if src.len() != expected {
        return Err(QuantError::Length {
            ty,
            what: "source bytes",
            expected,
            got: src.len(),
        });
    }
    dequantize_dispatch(ty, src, dst)
}

/// The widest build of [`dequantize_checked`] this CPU runs (as [`quantize_dispatch`]).
fn dequantize_dispatch(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<(), QuantError> {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vl")
        {
            // SAFETY: the function only lets the compiler use AVX-512 F/BW/VL (and AVX2) for
            // the portable code, and the CPU was just found to support them.
            return unsafe { dequantize_checked_avx512(ty, src, dst) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: as above, for AVX2.
            return unsafe { dequantize_checked_avx2(ty, src, dst) };
        }
    }
    dequantize_checked(ty, src, dst)
}

/// [`dequantize_checked`] with AVX-512 F/BW/VL enabled.
///
/// # Safety
/// The CPU must support AVX-512 F, BW and VL, and AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,avx512f,avx512bw,avx512vl")]
unsafe fn dequantize_checked_avx512(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<(), QuantError> {
    dequantize_checked(ty, src, dst)
}

/// [`dequantize_checked`] with AVX2 enabled.
///
/// # Safety
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn dequantize_checked_avx2(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<(), QuantError> {
    dequantize_checked(ty, src, dst)
}

/// The type dispatch of [`dequantize_row`] after its checks, inlined into each build.
#[inline(always)]
fn dequantize_checked(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<(), QuantError> {
    match ty {
        GgmlType::F32 => {
            for (d, s) in dst.iter_mut().zip(src.chunks_exact(4)) {
                *d = f32::from_le_bytes([s[0], s[1], s[2], s[3]]);
            }
        }
        GgmlType::F16 => {
            for (d, s) in dst.iter_mut().zip(src.chunks_exact(2)) {
                *d = f16_to_f32(half::f16::from_bits(u16::from_le_bytes([s[0], s[1]])));
            }
        }
        GgmlType::BF16 => {
            for (d, s) in dst.iter_mut().zip(src.chunks_exact(2)) {
                *d = bf16_to_f32(half::bf16::from_bits(u16::from_le_bytes([s[0], s[1]])));
            }
        }
        GgmlType::Q4_0 => dequantize_blocks::<BlockQ4_0>(src, dst)?,
        GgmlType::Q4_1 => dequantize_blocks::<BlockQ4_1>(src, dst)?,
        GgmlType::Q5_0 => dequantize_blocks::<BlockQ5_0>(src, dst)?,
        GgmlType::Q5_1 => dequantize_blocks::<BlockQ5_1>(src, dst)?,
        GgmlType::Q8_0 => dequantize_blocks::<BlockQ8_0>(src, dst)?,
        GgmlType::Q8_1 => dequantize_blocks::<BlockQ8_1>(src, dst)?,
        GgmlType::Q4_K => dequantize_blocks::<BlockQ4K>(src, dst)?,
        GgmlType::Q5_K => dequantize_blocks::<BlockQ5K>(src, dst)?,
        GgmlType::Q6_K => dequantize_blocks::<BlockQ6K>(src, dst)?,
        GgmlType::Q8_K => dequantize_blocks::<BlockQ8K>(src, dst)?,
        _ => return Err(QuantError::Unsupported { ty, op: "dequantize" }),
    }
    Ok(())
}

/// The index of the first NaN or ±inf in `x`. Scans 256-value chunks with a branch-free OR
/// (which vectorizes) and looks for the index only in a chunk that has one.
#[inline(always)]
fn first_non_finite(x: &[f32]) -> Option<usize> {
    const EXPONENT: u32 = 0x7f80_0000;
    x.chunks(256).enumerate().find_map(|(c, chunk)| {
        let any = chunk
            .iter()
            .fold(false, |acc, v| acc | (v.to_bits() & EXPONENT == EXPONENT));
        if any {
            chunk.iter().position(|v| !v.is_finite()).map(|i| c * 256 + i)
        } else {
            None
        }
    })
}

/// Bytes of `n` elements of `ty`, or the row-length error.
fn expected_bytes(ty: GgmlType, n: usize) -> Result<usize, QuantError> {
    let block = ty.block_size();
    if !n.is_multiple_of(block) {
        return Err(QuantError::RowLength { ty, len: n, block });
    }
    Ok(n / block * ty.type_size())
}

/// Blocks converted per step when a byte buffer is not aligned for the block struct.
const STAGING_BLOCKS: usize = 16;

/// Quantizes into raw bytes: in place when `dst` is aligned for `B`, else through a small
/// aligned staging buffer (tensor data in a file need not be aligned).
#[inline(always)]
fn quantize_blocks<B: BlockFormat>(src: &[f32], dst: &mut [u8]) -> Result<(), QuantError> {
    if let Ok(blocks) = bytemuck::try_cast_slice_mut::<u8, B>(dst) {
        return B::from_float(src, blocks);
    }
    let mut staging = [B::zeroed(); STAGING_BLOCKS];
    for (x, out) in src
        .chunks(STAGING_BLOCKS * B::BLOCK)
        .zip(dst.chunks_mut(STAGING_BLOCKS * size_of::<B>()))
    {
        let blocks = &mut staging[..x.len() / B::BLOCK];
        B::from_float(x, blocks)?;
        out.copy_from_slice(bytemuck::cast_slice(blocks));
    }
    Ok(())
}

/// Dequantizes from raw bytes, copying unaligned blocks out first.
#[inline(always)]
fn dequantize_blocks<B: BlockFormat>(src: &[u8], dst: &mut [f32]) -> Result<(), QuantError> {
    if let Ok(blocks) = bytemuck::try_cast_slice::<u8, B>(src) {
        return B::to_float(blocks, dst);
    }
    for (bytes, y) in src.chunks_exact(size_of::<B>()).zip(dst.chunks_exact_mut(B::BLOCK)) {
        let block: B = bytemuck::pod_read_unaligned(bytes);
        B::to_float(std::slice::from_ref(&block), y)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
