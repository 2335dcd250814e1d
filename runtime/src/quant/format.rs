//! The block-format trait: one implementation per ggml block type, converting whole runs of
//! blocks to and from f32 (in the spirit of candle's `GgmlType`).

use super::types::GgmlType;
use super::QuantError;
use bytemuck::Pod;

/// A ggml quantized block type.
///
/// `from_float` is ggml's reference quantizer (`quantize_row_*_ref`) and `to_float` its
/// `dequantize_row_*`; both are bit-identical to ggml. They check lengths and return an error
/// rather than panicking. They do not reject NaN/Inf: activations are quantized on the hot
/// path, and such values flow through exactly as they do in ggml. [`super::quantize_row`]
/// is the checked entry point for weights.
pub trait BlockFormat: Pod + Codec {
    /// The ggml type id this block stores.
    const TYPE: GgmlType;
    /// Elements per block.
    const BLOCK: usize;

    /// Quantizes `xs` (exactly `ys.len() * BLOCK` values) into `ys`. Inlined everywhere so
    /// that `quantize_row`'s AVX2 build gets its own copy of the loops.
    #[inline(always)]
    fn from_float(xs: &[f32], ys: &mut [Self]) -> Result<(), QuantError> {
        check_lengths::<Self>(xs.len(), ys.len())?;
        for (x, y) in xs.chunks_exact(Self::BLOCK).zip(ys.iter_mut()) {
            *y = Self::quantize_block(x);
        }
        Ok(())
    }

    /// Dequantizes `xs` into `ys` (exactly `xs.len() * BLOCK` values). Inlined everywhere,
    /// as `from_float`, for `dequantize_row`'s SIMD builds.
    #[inline(always)]
    fn to_float(xs: &[Self], ys: &mut [f32]) -> Result<(), QuantError> {
        check_lengths::<Self>(ys.len(), xs.len())?;
        for (x, y) in xs.iter().zip(ys.chunks_exact_mut(Self::BLOCK)) {
            x.dequantize_block(y);
        }
        Ok(())
    }
}

/// The per-block conversions behind [`BlockFormat`]. Sealed (its module is private to the
/// crate) because the slices are not length-checked here: the checked `from_float`/`to_float`
/// hand over exact `chunks_exact` pieces, and nothing else can call these.
pub(crate) mod sealed {
    pub trait Codec: Sized {
        /// Quantizes one block from `x` (`BLOCK` values).
        fn quantize_block(x: &[f32]) -> Self;
        /// Dequantizes one block into `y` (`BLOCK` values).
        fn dequantize_block(&self, y: &mut [f32]);
    }
}
pub(crate) use sealed::Codec;

/// Checks that `n_floats` values make exactly `n_blocks` blocks of `B`.
pub(crate) fn check_lengths<B: BlockFormat>(n_floats: usize, n_blocks: usize) -> Result<(), QuantError> {
    if !n_floats.is_multiple_of(B::BLOCK) {
        return Err(QuantError::RowLength {
            ty: B::TYPE,
            len: n_floats,
            block: B::BLOCK,
        });
    }
    if n_floats / B::BLOCK != n_blocks {
        return Err(QuantError::Length {
            ty: B::TYPE,
            what: "blocks",
            expected: n_floats / B::BLOCK,
            got: n_blocks,
        });
    }
    Ok(())
}
