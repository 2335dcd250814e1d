//! Quantized block formats: type ids, block layouts, and the scalar reference quantize and
//! dequantize routines (bit-identical to ggml's reference quantizers).

pub mod blocks;
pub mod types;

pub use types::{GgmlType, QK_K};
