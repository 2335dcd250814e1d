//! The small numeric operations the forward pass is built from, one function per op.
//!
//! Thin adapters over `kernels::cpu`: the forward only ever calls these names, so this file is
//! the single place where the CPU kernels are chosen (and where another backend would branch).

use crate::kernels::cpu as k;
use crate::quant::{GgmlType, QuantError};
use half::f16;

pub use crate::kernels::cpu::{
    backend, repack_by_default, repack_supported, repackable, Activations, KernelError, PackedMatrix, QMatrix,
    RopeTable, ThreadPool,
};

/// Checks that a weight can go through the matmul (type has a kernel, bytes match the shape).
pub fn check_matrix(ty: GgmlType, rows: usize, cols: usize, data: &[u8]) -> Result<(), KernelError> {
    QMatrix::new(ty, rows, cols, data).map(|_| ())
}

/// Types whose rows [`dequantize_row`] can convert (embedding lookup, norm weights).
pub fn embed_supports(ty: GgmlType) -> bool {
    crate::quant::QUANTIZE_TYPES.contains(&ty)
}

/// Converts one row of `ty` elements to f32.
pub fn dequantize_row(ty: GgmlType, bytes: &[u8], out: &mut [f32]) -> Result<(), QuantError> {
    crate::quant::dequantize_row(ty, bytes, out)
}

/// `out[t * rows + r] = w[r] · x[t]` for every token `t` of the batch.
pub fn matmul(
    pool: &ThreadPool,
    activations: Activations,
    w: &QMatrix,
    x: &[f32],
    n_tokens: usize,
    out: &mut [f32],
) -> Result<(), KernelError> {
    k::try_matmul_as(k::backend(), activations, pool, w, x, n_tokens, out)
}

/// [`matmul`] of several matrices on the same activations (`out_i` for `w_i`): one activation
/// rounding and, for decode, one pool job for all of them; results equal separate calls.
pub fn matmul_group(
    pool: &ThreadPool,
    activations: Activations,
    parts: &mut [(&QMatrix, &mut [f32])],
    x: &[f32],
    n_tokens: usize,
) -> Result<(), KernelError> {
    k::try_matmul_group_as(k::backend(), activations, pool, parts, x, n_tokens)
}

/// `out = x / rms(x) * w`.
pub fn rms_norm(out: &mut [f32], x: &[f32], w: &[f32], eps: f32) {
    k::rms_norm(x, w, eps, out)
}

/// Rotates adjacent pairs of every head of `x` for position `pos` (GGUF's Llama layout).
pub fn rope(table: &RopeTable, x: &mut [f32], pos: usize) {
    k::rope(table, x, pos)
}

/// In-place softmax.
pub fn softmax(x: &mut [f32]) {
    k::softmax(x)
}

/// The largest non-NaN element (`-inf` for none).
pub fn max_f32(x: &[f32]) -> f32 {
    k::max_f32(x)
}

/// `sum(e^((x[i] - shift) * scale))` over the non-NaN elements, `shift` at least the max.
pub fn sum_exp(x: &[f32], shift: f32, scale: f32) -> f32 {
    k::sum_exp(x, shift, scale)
}

/// `x[i] = e^((x[i] - shift) * scale)`, `shift` at least the max; returns the sum.
pub fn exp_in_place(x: &mut [f32], shift: f32, scale: f32) -> f32 {
    k::exp_in_place(x, shift, scale)
}

/// `out = silu(gate) * up`, element-wise.
pub fn swiglu(gate: &[f32], up: &[f32], out: &mut [f32]) {
    k::swiglu(gate, up, out)
}

pub fn f32_to_f16_row(src: &[f32], dst: &mut [f16]) {
    k::f32_to_f16_row(src, dst)
}

/// `scores[j] = rows[j * stride..][..q.len()] · q` with the rows in half precision.
pub fn dot_f16_rows(rows: &[f16], stride: usize, q: &[f32], scores: &mut [f32]) {
    k::dot_f16_rows(rows, stride, q, scores)
}

/// [`dot_f16_rows`] for the `seen.len()` queries in `qs` (the query heads of one KV head, for
/// a block of tokens), query `h` over the first `seen[h]` rows (`scores` holds the same number
/// per query), each key row widened once for all of them.
pub fn dot_f16_rows_grouped(rows: &[f16], stride: usize, qs: &[f32], hd: usize, seen: &[usize], scores: &mut [f32]) {
    k::dot_f16_rows_grouped(rows, stride, qs, hd, seen, scores)
}

/// [`weighted_sum_f16_rows`] for the `seen.len()` weight vectors in `weights` (the same number
/// each), vector `h` over the first `seen[h]` rows into head vector `h` of `outs`, each value
/// row widened once for all of them.
pub fn weighted_sum_f16_rows_grouped(rows: &[f16], stride: usize, weights: &[f32], seen: &[usize], outs: &mut [f32]) {
    k::weighted_sum_f16_rows_grouped(rows, stride, weights, seen, outs)
}

/// `out = sum_j weights[j] * rows[j * stride..][..out.len()]` with the rows in half precision.
pub fn weighted_sum_f16_rows(rows: &[f16], stride: usize, weights: &[f32], out: &mut [f32]) {
    k::weighted_sum_f16_rows(rows, stride, weights, out)
}
