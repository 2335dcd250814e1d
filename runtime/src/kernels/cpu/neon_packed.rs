//! aarch64 NEON kernels over repacked weights ([`PackedMatrix`]: Q4_0, Q4_1, Q5_0, Q5_1,
//! Q8_0, Q4_K, Q5_K and Q6_K, the type table's `neon_panels` column), for every token count: decode
//! (one token) and batches (micro-tiles of up to [`TILE`] tokens, each loaded quant line used
//! for all of them).
//!
//! A 64-byte quant line (8 elements of 16 rows, 4 bytes per row lane, see `repack.rs`) is four
//! 128-bit *quarters* of 4 row lanes each, so one 128-bit vector of i32 holds the sums of 4
//! rows. Per quarter, the low and high nibbles are two vectors of unsigned quants (0..15, with
//! Q5's fifth or Q6_K's high bits 0..63, valid as i8; Q8_0: signed bytes); the activation
//! quad they meet (4 i8) is one 32-bit lane of a 16-byte load of the block's activations:
//!
//! - with the `dotprod` extension, `sdot` by element (`sdot v.4s, w.16b, y.4b[lane]`) adds,
//!   per row lane, the dot of its 4 weights with the selected quad: one instruction advances 4
//!   rows by 4 elements (the 128-bit twin of the AVX-512 kernels' `vpdpbusd`);
//! - without it, the quad is broadcast, `smull`/`smull2` give the 16 i16 products, one `addp`
//!   adds neighbours (each i16 then the sum of two products of one row, at most
//!   `2 * 63 * 128 = 16128` in magnitude for the unsigned quants of Q4, Q5 and Q6_K) and
//!   `sadalp` adds pairs into the 4 row lanes in i32. Q8_0's full-range i8 weights (products up
//!   to `128 * 128`) widen each product to i32 before adding (`saddlp`), so no i16 sum can
//!   overflow for any input.
//!
//! Q4_0's offset of 8 (Q5_0's 16) enters as the integer start `-8 * sum(y)` of each block's
//! row sums; Q5's (and Q5_K's) fifth bits are tested per quad (`cmtst`) and ORed in as 0x10; Q4_1's and
//! Q5_1's mins meet the Q8_1 `s` in one float FMA per block; Q8_0's stored `q + 128` is turned
//! back to signed `q` (one `eor`); the Q4_K/Q5_K sub-block scales and the Q6_K group scales
//! multiply the i32 sums (`mla`), Q4_K's/Q5_K's mins meet the Q8_K sums of 32 (`bsums` pairs) and
//! Q6_K's offset of 32 is `32 * sum(scale * bsum)` in i32. So every integer sum equals the
//! scalar specification's; only the order of the float additions differs (one FMA per block
//! and 4 rows, as the file-layout NEON kernels do per block).
//!
//! Registers (32 of 128 bits): decode and tiles of 2 tokens keep all 4 quarters live (a float
//! accumulator per quarter and token); tiles of 3 or 4 tokens run two quarters at a time.
//!
//! Which kernels run on a CPU is decided per call: `sdot` where
//! `is_aarch64_feature_detected!("dotprod")`, the widening multiplies elsewhere. Both are
//! generated from one body ([`panel_kernels`]) with the quad step as a parameter, and the tests
//! run both under qemu (`-cpu max` and `-cpu cortex-a72`, see docs/kernels.md).

// Kernel loops index per-token and per-quarter arrays with counters over const-generic bounds
// the compiler unrolls; iterator chains would only obscure that.
#![allow(clippy::needless_range_loop)]

use super::types::{q8_k_bsum, q8_k_sub_block_sum, PackedMatrix, SyncPtr, K_HEAD_LINES, PANEL_ROWS};
use super::ThreadPool;
use crate::quant::{GgmlType, QK_K};
use std::arch::aarch64::*;

/// Row lanes per 128-bit quarter of a quant line.
const QUARTER: usize = 4;
/// Quarters per line (panel rows / rows per quarter).
const QUARTERS: usize = PANEL_ROWS / QUARTER;
/// Tokens per micro-tile of the batch kernel.
const TILE: usize = 4;
/// Tokens per batch task: one task reuses its panel (about 36 KiB at 4096 columns) for every
/// tile of its tokens.
const TOKEN_CHUNK: usize = 64;

/// One token's activation row (Q8_0 for Q4_0, Q5_0 and Q8_0 weights, Q8_1 for Q4_1 and Q5_1,
/// Q8_K for Q4_K, Q5_K and Q6_K) prepared for the NEON kernels over repacked weights.
pub(super) struct PanelActivations {
    /// The i8 quants of every block, contiguous: 32 per Q8_0 block, 256 per Q8_K super-block.
    quants: Vec<i8>,
    /// Per block (Q8_0) or super-block (Q8_K): the activation scale.
    scales: Vec<f32>,
    /// Q8_0 activations: per block `-offset * sum(y)`, the start of each row's integer sum
    /// (the weights' offset: 8 for Q4_0, 16 for Q5_0, 0 for Q8_0, stored signed here). Q8_1
    /// (Q4_1, Q5_1): per block 0. Q8_K for Q4_K and Q5_K: per sub-block of 32, `sum(y)` (two `bsums`),
    /// which the mins multiply; for Q6_K: per group of 16, `sum(y)` (the `bsums`), for the
    /// offset of 32.
    sums: Vec<i32>,
    /// Q8_1 only: per block, its f16 `s = d * sum(y)` as f32, which the weights' min `m`
    /// multiplies (as ggml's dot product and the scalar specification use it).
    block_s: Vec<f32>,
}

impl PanelActivations {
    /// From one activation row in the partner format of weights of type `ty` (one of the
    /// table's `neon_panels` types; rows of other lengths give fewer blocks, and the kernels'
    /// callers guarantee the width).
    pub(super) fn new(ty: GgmlType, act: &[u8]) -> PanelActivations {
        let mut x = PanelActivations {
            quants: Vec::with_capacity(act.len()),
            scales: Vec::new(),
            sums: Vec::new(),
            block_s: Vec::new(),
        };
        let f16_at = |b: &[u8], at: usize| half::f16::from_le_bytes([b[at], b[at + 1]]).to_f32();
        if matches!(ty, GgmlType::Q4_K | GgmlType::Q5_K | GgmlType::Q6_K) {
            // Q8_K: f32 d, 256 quants, 16 i16 sums of 16 quants each.
            for blk in act.chunks_exact(292) {
                x.scales.push(f32::from_le_bytes([blk[0], blk[1], blk[2], blk[3]]));
                x.quants.extend(blk[4..260].iter().map(|&q| q as i8));
                if ty == GgmlType::Q6_K {
                    x.sums.extend((0..16).map(|i| q8_k_bsum(blk, i)));
                } else {
                    x.sums.extend((0..8).map(|j| q8_k_sub_block_sum(blk, j)));
                }
            }
        } else if matches!(ty, GgmlType::Q4_1 | GgmlType::Q5_1) {
            // Q8_1: f16 d, f16 s, 32 quants.
            for blk in act.chunks_exact(36) {
                x.scales.push(f16_at(blk, 0));
                x.block_s.push(f16_at(blk, 2));
                x.quants.extend(blk[4..].iter().map(|&q| q as i8));
                x.sums.push(0);
            }
        } else {
            // Q8_0: f16 d, 32 quants.
            let offset = match ty {
                GgmlType::Q4_0 => 8,
                GgmlType::Q5_0 => 16,
                _ => 0,
            };
            for blk in act.chunks_exact(34) {
                x.scales.push(f16_at(blk, 0));
                x.quants.extend(blk[2..].iter().map(|&q| q as i8));
                x.sums
                    .push(-offset * blk[2..].iter().map(|&q| q as i8 as i32).sum::<i32>());
            }
        }
        x
    }
}

/// Four f16 values at `p` as f32 (`fcvtl`, base ARMv8 NEON: exact, as `half::f16::to_f32`).
///
/// # Safety
/// 8 bytes must be readable at `p`.
#[target_feature(enable = "neon")]
#[inline]
unsafe fn f16x4_at(p: *const u8) -> float32x4_t {
    let h = vld1_u16(p.cast());
    let out: float32x4_t;
    // SAFETY: a register-only conversion of NEON registers.
    unsafe {
        std::arch::asm!(
            "fcvtl {o:v}.4s, {h:v}.4h",
            o = lateout(vreg) out,
            h = in(vreg) h,
            options(pure, nomem, nostack, preserves_flags)
        );
    }
    out
}

/// 4 row lanes of `acc` each plus the dot of their 4 i8 weights in `w` with quad `L` of `y`:
/// `sdot` by element. Inline assembly because the `vdotq_laneq_s32` intrinsic is not stable.
///
/// # Safety
/// The CPU must have the `dotprod` extension.
#[target_feature(enable = "neon,dotprod")]
#[inline]
unsafe fn sdot_quad<const L: usize>(acc: int32x4_t, w: int8x16_t, y: int8x16_t) -> int32x4_t {
    let mut r = acc;
    // SAFETY: a register-only instruction of the dotprod extension, which the caller checked.
    unsafe {
        std::arch::asm!(
            "sdot {r:v}.4s, {w:v}.16b, {y:v}.4b[{l}]",
            r = inout(vreg) r,
            w = in(vreg) w,
            y = in(vreg) y,
            l = const L,
            options(pure, nomem, nostack, preserves_flags)
        );
    }
    r
}

/// [`sdot_quad`] without `dotprod`, for weights of 0..=63 (Q4 nibbles, Q5's and Q6_K's
/// unsigned quants): the products in i16, neighbours added in i16 (at most `2 * 63 * 128 =
/// 16128`), pairs added into i32.
///
/// # Safety
/// NEON must be present (always on aarch64).
#[target_feature(enable = "neon")]
#[inline]
unsafe fn mull_quad_nibbles<const L: i32>(acc: int32x4_t, w: int8x16_t, y: int8x16_t) -> int32x4_t {
    let yq = vreinterpretq_s8_s32(vdupq_laneq_s32::<L>(vreinterpretq_s32_s8(y)));
    let lo = vmull_s8(vget_low_s8(w), vget_low_s8(yq));
    let hi = vmull_high_s8(w, yq);
    vpadalq_s16(acc, vpaddq_s16(lo, hi))
}

/// [`sdot_quad`] without `dotprod`, for any i8 weights: each i16 product widened to i32 before
/// any addition (`128 * 128` twice would overflow i16).
///
/// # Safety
/// NEON must be present (always on aarch64).
#[target_feature(enable = "neon")]
#[inline]
unsafe fn mull_quad_bytes<const L: i32>(acc: int32x4_t, w: int8x16_t, y: int8x16_t) -> int32x4_t {
    let yq = vreinterpretq_s8_s32(vdupq_laneq_s32::<L>(vreinterpretq_s32_s8(y)));
    let lo = vpaddlq_s16(vmull_s8(vget_low_s8(w), vget_low_s8(yq)));
    let hi = vpaddlq_s16(vmull_high_s8(w, yq));
    vaddq_s32(acc, vpaddq_s32(lo, hi))
}

/// The low and high nibbles of the 16 bytes at `p` (a quarter of a quant line) as i8.
///
/// # Safety
/// 16 bytes must be readable at `p`.
#[target_feature(enable = "neon")]
#[inline]
unsafe fn nibbles(p: *const u8) -> (int8x16_t, int8x16_t) {
    let q = vld1q_u8(p);
    (
        vreinterpretq_s8_u8(vandq_u8(q, vdupq_n_u8(0x0f))),
        vreinterpretq_s8_u8(vshrq_n_u8::<4>(q)),
    )
}

/// The 6-bit scales and mins of quarter `quarter` (4 rows) of a Q4_K or Q5_K super-block's
/// panel at `lines` (its first line), unpacked from its three lines of the file's packed bytes
/// (lines 1..4, see `repack.rs`): scales of sub-blocks 0..4, scales 4..8, mins 0..4, mins
/// 4..8; byte `k` of row lane `r` holds sub-block `4i + k`'s of row `r` (as
/// `quant::q4k_scales_mins_words` per row).
///
/// # Safety
/// The super-block's first 4 lines must be readable at `lines`; `quarter < 4`.
#[target_feature(enable = "neon")]
#[inline]
unsafe fn k_scales_and_mins(lines: *const u8, quarter: usize) -> [uint8x16_t; 4] {
    let [a, b, c] = [1, 2, 3].map(|i| vld1q_u8(lines.add(64 * i + 16 * quarter)));
    let low6 = vdupq_n_u8(0x3f);
    let top2 = |v: uint8x16_t| vshlq_n_u8::<4>(vshrq_n_u8::<6>(v));
    [
        vandq_u8(a, low6),
        vorrq_u8(vandq_u8(c, vdupq_n_u8(0x0f)), top2(a)),
        vandq_u8(b, low6),
        vorrq_u8(vshrq_n_u8::<4>(c), top2(b)),
    ]
}

/// Sub-block `j`'s scale and min of 4 rows as i32 lanes, from [`k_scales_and_mins`]: byte
/// `j % 4` of each row lane (`tbl`, whose out-of-range indices give zeros).
///
/// # Safety
/// NEON must be present (always on aarch64); `j < 8`.
#[target_feature(enable = "neon")]
#[inline]
unsafe fn sub_block_scale_and_min(scales_mins: &[uint8x16_t; 4], j: usize) -> (int32x4_t, int32x4_t) {
    let pick: [u32; 4] = std::array::from_fn(|k| (4 * k + j % 4) as u32 | 0xffff_ff00);
    let pick = vreinterpretq_u8_u32(vld1q_u32(pick.as_ptr()));
    let byte = |v: uint8x16_t| vreinterpretq_s32_u8(vqtbl1q_u8(v, pick));
    (byte(scales_mins[j / 4]), byte(scales_mins[2 + j / 4]))
}

/// The 4 i8 at `p` (one per row lane of a quarter) sign-extended to i32 lanes.
///
/// # Safety
/// 4 bytes must be readable at `p`, which must be 4-byte aligned.
#[target_feature(enable = "neon")]
#[inline]
unsafe fn row_bytes_i32_signed(p: *const u8) -> int32x4_t {
    let b = vreinterpret_s8_u32(vld1_dup_u32(p.cast()));
    vmovl_s16(vget_low_s16(vmovl_s8(b)))
}

/// Bit `k` of every byte of `fifth` (a quarter of a Q5 fifth-bit line) as 0x10: the fifth bit
/// of quad `k`'s quants, to OR into their nibbles.
///
/// # Safety
/// NEON must be present (always on aarch64).
#[target_feature(enable = "neon")]
#[inline]
unsafe fn fifth_bits(fifth: uint8x16_t, k: usize) -> int8x16_t {
    let set = vtstq_u8(fifth, vdupq_n_u8(1 << k));
    vreinterpretq_s8_u8(vandq_u8(set, vdupq_n_u8(0x10)))
}

/// The panel kernels for one quad step: `$nib` for unsigned weights of 0..=63, `$byte` for
/// full i8 weights; `$feat` the target features they need. Generates module `$module` with
/// `panel_<stem>` for every type with NEON panels (quarters `q0..q0 + Q` of panel `p` against
/// `T` tokens) and `run_tile` (one of them, stored).
macro_rules! panel_kernels {
    ($module:ident, $feat:literal, $nib:ident, $byte:ident) => {
        mod $module {
            #![allow(clippy::needless_range_loop)]
            use super::*;

            /// Quarters `q0..q0 + Q` of panel `p` of Q4_0, Q4_1 (`MIN`), Q5_0 (`FIFTH`) or Q5_1
            /// (both) rows against `T` whole activation rows: the nibbles (ORed with the fifth
            /// bits for Q5) are unsigned quants (0..31), each row sum starts at the token's
            /// `sums` (`-8 * sum(y)` for Q4_0, `-16 * sum(y)` for Q5_0, 0 with a min), and with
            /// `MIN` the rows' mins times the activation's `s` are added per block.
            ///
            /// # Safety
            /// The CPU must have `$feat`; every `xs[t]` must come from an activation row of
            /// `w.cols()` elements for `w.ty()`; `p < w.n_panels()`; `q0 + Q <= 4`.
            #[target_feature(enable = $feat)]
            #[inline]
            unsafe fn panel_nibbles<const T: usize, const Q: usize, const FIFTH: bool, const MIN: bool>(
                w: &PackedMatrix,
                xs: [&PanelActivations; T],
                p: usize,
                q0: usize,
            ) -> [[float32x4_t; Q]; T] {
                let mut acc = [[vdupq_n_f32(0.0); Q]; T];
                for b in 0..w.cols() / 32 {
                    let (sc, lines) = w.legacy_block(p, b);
                    let lp = lines.as_ptr().cast::<u8>();
                    // SAFETY (the loads below): block b's 32 quants, scale, sum (and `s`) exist
                    // in every xs[t] (the caller's width guarantee); the block has 4 lines (Q5:
                    // 5) of 64 bytes and 16 f16 scales (with a min: 32), of which quarter
                    // q0 + qq < 4 reads 16 bytes per line and 4 scales.
                    let y: [[int8x16_t; 2]; T] = std::array::from_fn(|t| {
                        let q = xs[t].quants.as_ptr().add(32 * b);
                        [vld1q_s8(q), vld1q_s8(q.add(16))]
                    });
                    for qq in 0..Q {
                        let at = 16 * (q0 + qq);
                        // Line v holds quads 2v (low nibbles) and 2v + 1 (high): lanes
                        // 2(v % 2) and 2(v % 2) + 1 of activation vector v / 2.
                        let mut q: [(int8x16_t, int8x16_t); 4] = std::array::from_fn(|v| nibbles(lp.add(64 * v + at)));
                        if FIFTH {
                            let fifth = vld1q_u8(lp.add(256 + at));
                            for (v, (lo, hi)) in q.iter_mut().enumerate() {
                                *lo = vorrq_s8(*lo, fifth_bits(fifth, 2 * v));
                                *hi = vorrq_s8(*hi, fifth_bits(fifth, 2 * v + 1));
                            }
                        }
                        let [(l0, h0), (l1, h1), (l2, h2), (l3, h3)] = q;
                        let dw = f16x4_at(sc.as_ptr().add(QUARTER * (q0 + qq)).cast());
                        let m = if MIN {
                            f16x4_at(sc.as_ptr().add(PANEL_ROWS + QUARTER * (q0 + qq)).cast())
                        } else {
                            vdupq_n_f32(0.0)
                        };
                        for t in 0..T {
                            let [y0, y1] = y[t];
                            let mut s = vdupq_n_s32(*xs[t].sums.get_unchecked(b));
                            s = $nib::<0>(s, l0, y0);
                            s = $nib::<1>(s, h0, y0);
                            s = $nib::<2>(s, l1, y0);
                            s = $nib::<3>(s, h1, y0);
                            s = $nib::<0>(s, l2, y1);
                            s = $nib::<1>(s, h2, y1);
                            s = $nib::<2>(s, l3, y1);
                            s = $nib::<3>(s, h3, y1);
                            let scale = vmulq_n_f32(dw, *xs[t].scales.get_unchecked(b));
                            acc[t][qq] = vfmaq_f32(acc[t][qq], vcvtq_f32_s32(s), scale);
                            if MIN {
                                acc[t][qq] = vfmaq_n_f32(acc[t][qq], m, *xs[t].block_s.get_unchecked(b));
                            }
                        }
                    }
                }
                acc
            }

            /// Quarters `q0..q0 + Q` of panel `p` of Q4_0 rows ([`panel_nibbles`]).
            ///
            /// # Safety
            /// As [`panel_nibbles`].
            #[target_feature(enable = $feat)]
            #[inline]
            pub(super) unsafe fn panel_q4_0_q8_0<const T: usize, const Q: usize>(
                w: &PackedMatrix,
                xs: [&PanelActivations; T],
                p: usize,
                q0: usize,
            ) -> [[float32x4_t; Q]; T] {
                panel_nibbles::<T, Q, false, false>(w, xs, p, q0)
            }

            /// Quarters `q0..q0 + Q` of panel `p` of Q4_1 rows ([`panel_nibbles`]).
            ///
            /// # Safety
            /// As [`panel_nibbles`].
            #[target_feature(enable = $feat)]
            #[inline]
            pub(super) unsafe fn panel_q4_1_q8_1<const T: usize, const Q: usize>(
                w: &PackedMatrix,
                xs: [&PanelActivations; T],
                p: usize,
                q0: usize,
            ) -> [[float32x4_t; Q]; T] {
                panel_nibbles::<T, Q, false, true>(w, xs, p, q0)
            }

            /// Quarters `q0..q0 + Q` of panel `p` of Q5_0 rows ([`panel_nibbles`]).
            ///
            /// # Safety
            /// As [`panel_nibbles`].
            #[target_feature(enable = $feat)]
            #[inline]
            pub(super) unsafe fn panel_q5_0_q8_0<const T: usize, const Q: usize>(
                w: &PackedMatrix,
                xs: [&PanelActivations; T],
                p: usize,
                q0: usize,
            ) -> [[float32x4_t; Q]; T] {
                panel_nibbles::<T, Q, true, false>(w, xs, p, q0)
            }

            /// Quarters `q0..q0 + Q` of panel `p` of Q5_1 rows ([`panel_nibbles`]).
            ///
            /// # Safety
            /// As [`panel_nibbles`].
            #[target_feature(enable = $feat)]
            #[inline]
            pub(super) unsafe fn panel_q5_1_q8_1<const T: usize, const Q: usize>(
                w: &PackedMatrix,
                xs: [&PanelActivations; T],
                p: usize,
                q0: usize,
            ) -> [[float32x4_t; Q]; T] {
                panel_nibbles::<T, Q, true, true>(w, xs, p, q0)
            }

            /// Quarters `q0..q0 + Q` of panel `p` of Q8_0 rows against `T` whole activation rows.
            ///
            /// # Safety
            /// As [`panel_nibbles`].
            #[target_feature(enable = $feat)]
            #[inline]
            pub(super) unsafe fn panel_q8_0_q8_0<const T: usize, const Q: usize>(
                w: &PackedMatrix,
                xs: [&PanelActivations; T],
                p: usize,
                q0: usize,
            ) -> [[float32x4_t; Q]; T] {
                let bias = vdupq_n_u8(0x80);
                let mut acc = [[vdupq_n_f32(0.0); Q]; T];
                for b in 0..w.cols() / 32 {
                    let (sc, lines) = w.legacy_block(p, b);
                    let lp = lines.as_ptr().cast::<u8>();
                    // SAFETY (the loads below): as in `panel_nibbles`, with 8 lines.
                    let y: [[int8x16_t; 2]; T] = std::array::from_fn(|t| {
                        let q = xs[t].quants.as_ptr().add(32 * b);
                        [vld1q_s8(q), vld1q_s8(q.add(16))]
                    });
                    for qq in 0..Q {
                        let at = 16 * (q0 + qq);
                        // Line k holds quad k, stored + 128: back to signed with one `eor`.
                        let q: [int8x16_t; 8] =
                            std::array::from_fn(|k| vreinterpretq_s8_u8(veorq_u8(vld1q_u8(lp.add(64 * k + at)), bias)));
                        let dw = f16x4_at(sc.as_ptr().add(QUARTER * (q0 + qq)).cast());
                        for t in 0..T {
                            let [y0, y1] = y[t];
                            let mut s = vdupq_n_s32(0);
                            s = $byte::<0>(s, q[0], y0);
                            s = $byte::<1>(s, q[1], y0);
                            s = $byte::<2>(s, q[2], y0);
                            s = $byte::<3>(s, q[3], y0);
                            s = $byte::<0>(s, q[4], y1);
                            s = $byte::<1>(s, q[5], y1);
                            s = $byte::<2>(s, q[6], y1);
                            s = $byte::<3>(s, q[7], y1);
                            let scale = vmulq_n_f32(dw, *xs[t].scales.get_unchecked(b));
                            acc[t][qq] = vfmaq_f32(acc[t][qq], vcvtq_f32_s32(s), scale);
                        }
                    }
                }
                acc
            }

            /// Quarters `q0..q0 + Q` of panel `p` of Q4_K rows ([`panel_kquant`]).
            ///
            /// # Safety
            /// As [`panel_kquant`].
            #[target_feature(enable = $feat)]
            #[inline]
            pub(super) unsafe fn panel_q4_k_q8_k<const T: usize, const Q: usize>(
                w: &PackedMatrix,
                xs: [&PanelActivations; T],
                p: usize,
                q0: usize,
            ) -> [[float32x4_t; Q]; T] {
                panel_kquant::<T, Q, false>(w, xs, p, q0)
            }

            /// Quarters `q0..q0 + Q` of panel `p` of Q5_K rows ([`panel_kquant`]).
            ///
            /// # Safety
            /// As [`panel_kquant`].
            #[target_feature(enable = $feat)]
            #[inline]
            pub(super) unsafe fn panel_q5_k_q8_k<const T: usize, const Q: usize>(
                w: &PackedMatrix,
                xs: [&PanelActivations; T],
                p: usize,
                q0: usize,
            ) -> [[float32x4_t; Q]; T] {
                panel_kquant::<T, Q, true>(w, xs, p, q0)
            }

            /// Quarters `q0..q0 + Q` of panel `p` of Q4_K rows (Q5_K with `FIFTH`: each
            /// sub-block's nibbles ORed with its fifth-bit line's bits, as Q5_0's) against `T`
            /// whole activation rows: the i32 sub-block sums times the 6-bit scales (`mla`), the
            /// mins times the Q8_K sums of 32, one FMA each with `d` and `dmin` per super-block.
            ///
            /// # Safety
            /// The CPU must have `$feat`; every `xs[t]` must come from a Q8_K row of
            /// `w.cols()` elements; `w.ty()` must be Q5_K with `FIFTH`, else Q4_K;
            /// `p < w.n_panels()`; `q0 + Q <= 4`.
            #[target_feature(enable = $feat)]
            #[inline]
            unsafe fn panel_kquant<const T: usize, const Q: usize, const FIFTH: bool>(
                w: &PackedMatrix,
                xs: [&PanelActivations; T],
                p: usize,
                q0: usize,
            ) -> [[float32x4_t; Q]; T] {
                // Lines per sub-block: 4 quant lines, plus Q5_K's fifth-bit line.
                let per_sub = if FIFTH { 5 } else { 4 };
                let mut acc = [[vdupq_n_f32(0.0); Q]; T];
                for b in 0..w.cols() / QK_K {
                    let block = if FIFTH {
                        w.q5_k_block(p, b)
                    } else {
                        w.q4_k_block(p, b)
                    };
                    let lp = block.as_ptr().cast::<u8>();
                    for qq in 0..Q {
                        let quarter = q0 + qq;
                        let scales_mins = k_scales_and_mins(lp, quarter);
                        let mut scaled = [vdupq_n_s32(0); T];
                        let mut mins = [vdupq_n_s32(0); T];
                        for j in 0..8 {
                            // SAFETY (the loads): the super-block's 36 (Q5_K: 44) lines, and in
                            // every xs[t] super-block b's quants and sums (the caller's guarantee).
                            let sub = lp.add(64 * (K_HEAD_LINES + per_sub * j) + 16 * quarter);
                            let mut q: [(int8x16_t, int8x16_t); 4] = std::array::from_fn(|v| nibbles(sub.add(64 * v)));
                            if FIFTH {
                                let fifth = vld1q_u8(sub.add(256));
                                for (v, (lo, hi)) in q.iter_mut().enumerate() {
                                    *lo = vorrq_s8(*lo, fifth_bits(fifth, 2 * v));
                                    *hi = vorrq_s8(*hi, fifth_bits(fifth, 2 * v + 1));
                                }
                            }
                            let [(l0, h0), (l1, h1), (l2, h2), (l3, h3)] = q;
                            let (sc, mn) = sub_block_scale_and_min(&scales_mins, j);
                            for t in 0..T {
                                let q = xs[t].quants.as_ptr().add(QK_K * b + 32 * j);
                                let (y0, y1) = (vld1q_s8(q), vld1q_s8(q.add(16)));
                                let mut s = vdupq_n_s32(0);
                                s = $nib::<0>(s, l0, y0);
                                s = $nib::<1>(s, h0, y0);
                                s = $nib::<2>(s, l1, y0);
                                s = $nib::<3>(s, h1, y0);
                                s = $nib::<0>(s, l2, y1);
                                s = $nib::<1>(s, h2, y1);
                                s = $nib::<2>(s, l3, y1);
                                s = $nib::<3>(s, h3, y1);
                                // |scale * sum| <= 63 * 32 * 31 * 128 per sub-block: 8 fit i32.
                                scaled[t] = vmlaq_s32(scaled[t], s, sc);
                                mins[t] = vmlaq_n_s32(mins[t], mn, *xs[t].sums.get_unchecked(8 * b + j));
                            }
                        }
                        let d = f16x4_at(lp.add(2 * QUARTER * quarter));
                        let dmin = f16x4_at(lp.add(32 + 2 * QUARTER * quarter));
                        for t in 0..T {
                            let dy = *xs[t].scales.get_unchecked(b);
                            acc[t][qq] = vfmaq_f32(acc[t][qq], vcvtq_f32_s32(scaled[t]), vmulq_n_f32(d, dy));
                            acc[t][qq] = vfmsq_f32(acc[t][qq], vcvtq_f32_s32(mins[t]), vmulq_n_f32(dmin, dy));
                        }
                    }
                }
                acc
            }

            /// Quarters `q0..q0 + Q` of panel `p` of Q6_K rows against `T` whole activation rows:
            /// per group of 16, the 6-bit quants (0..63, valid as i8) of its 4 quads from the
            /// two quant lines and the high line, the i32 group sums times the i8 group scales
            /// (`mla`), and the offset of 32 as `32 * sum(scale * bsum)` subtracted in i32.
            ///
            /// # Safety
            /// The CPU must have `$feat`; every `xs[t]` must come from a Q8_K row of
            /// `w.cols()` elements; `p < w.n_panels()`; `q0 + Q <= 4`.
            #[target_feature(enable = $feat)]
            #[inline]
            pub(super) unsafe fn panel_q6_k_q8_k<const T: usize, const Q: usize>(
                w: &PackedMatrix,
                xs: [&PanelActivations; T],
                p: usize,
                q0: usize,
            ) -> [[float32x4_t; Q]; T] {
                let (low, high) = (vdupq_n_u8(0x0f), vdupq_n_u8(0x30));
                let mut acc = [[vdupq_n_f32(0.0); Q]; T];
                for b in 0..w.cols() / QK_K {
                    let lp = w.q6_k_block(p, b).as_ptr().cast::<u8>();
                    for qq in 0..Q {
                        let quarter = q0 + qq;
                        let mut scaled = [vdupq_n_s32(0); T];
                        let mut offsets = [vdupq_n_s32(0); T];
                        for g in 0..16 {
                            // SAFETY (the loads): the super-block's 53 lines, and in every
                            // xs[t] super-block b's quants and sums (the caller's guarantee).
                            let group = lp.add(64 * (5 + 3 * g) + 16 * quarter);
                            let (q0v, q1v, hb) = (vld1q_u8(group), vld1q_u8(group.add(64)), vld1q_u8(group.add(128)));
                            // Quads 0..4 of the group (see repack.rs): byte shifts, no stray bits
                            // from neighbouring bytes.
                            let six = |nib: uint8x16_t, hi: uint8x16_t| {
                                vreinterpretq_s8_u8(vorrq_u8(nib, vandq_u8(hi, high)))
                            };
                            let q = [
                                six(vandq_u8(q0v, low), vshlq_n_u8::<4>(hb)),
                                six(vshrq_n_u8::<4>(q0v), vshlq_n_u8::<2>(hb)),
                                six(vandq_u8(q1v, low), hb),
                                six(vshrq_n_u8::<4>(q1v), vshrq_n_u8::<2>(hb)),
                            ];
                            // Group g's scale of the quarter's rows: line 1 + g / 4, bytes
                            // 16 * (g % 4) + 4 * quarter.., 4-aligned.
                            let sc = row_bytes_i32_signed(lp.add(64 * (1 + g / 4) + 16 * (g % 4) + QUARTER * quarter));
                            for t in 0..T {
                                let y = vld1q_s8(xs[t].quants.as_ptr().add(QK_K * b + 16 * g));
                                let mut s = vdupq_n_s32(0);
                                s = $nib::<0>(s, q[0], y);
                                s = $nib::<1>(s, q[1], y);
                                s = $nib::<2>(s, q[2], y);
                                s = $nib::<3>(s, q[3], y);
                                // |scale * sum| <= 128 * 16 * 63 * 128 per group: 16 fit i32.
                                scaled[t] = vmlaq_s32(scaled[t], s, sc);
                                offsets[t] = vmlaq_n_s32(offsets[t], sc, *xs[t].sums.get_unchecked(16 * b + g));
                            }
                        }
                        let d = f16x4_at(lp.add(2 * QUARTER * quarter));
                        for t in 0..T {
                            let total = vsubq_s32(scaled[t], vshlq_n_s32::<5>(offsets[t]));
                            let dy = vmulq_n_f32(d, *xs[t].scales.get_unchecked(b));
                            acc[t][qq] = vfmaq_f32(acc[t][qq], vcvtq_f32_s32(total), dy);
                        }
                    }
                }
                acc
            }

            /// Quarters `q0..q0 + Q` of panel `p` against `T` tokens, stored for the rows
            /// below `rows`: row `r` of token `t` to `out[t * stride + r - row0]`.
            ///
            /// # Safety
            /// As the panel kernel of `w.ty()` (which must have NEON panels); `row0 <= 16 * p`,
            /// `rows <= w.rows()`, and `out` must have room for every row `row0..rows` of every
            /// token at that stride.
            #[target_feature(enable = $feat)]
            #[allow(clippy::too_many_arguments)]
            pub(super) unsafe fn run_tile<const T: usize, const Q: usize>(
                w: &PackedMatrix,
                xs: [&PanelActivations; T],
                p: usize,
                q0: usize,
                out: *mut f32,
                stride: usize,
                row0: usize,
                rows: usize,
            ) {
                let res = match w.ty() {
                    GgmlType::Q4_0 => panel_q4_0_q8_0::<T, Q>(w, xs, p, q0),
                    GgmlType::Q8_0 => panel_q8_0_q8_0::<T, Q>(w, xs, p, q0),
                    GgmlType::Q4_1 => panel_q4_1_q8_1::<T, Q>(w, xs, p, q0),
                    GgmlType::Q5_0 => panel_q5_0_q8_0::<T, Q>(w, xs, p, q0),
                    GgmlType::Q5_1 => panel_q5_1_q8_1::<T, Q>(w, xs, p, q0),
                    GgmlType::Q4_K => panel_q4_k_q8_k::<T, Q>(w, xs, p, q0),
                    GgmlType::Q5_K => panel_q5_k_q8_k::<T, Q>(w, xs, p, q0),
                    GgmlType::Q6_K => panel_q6_k_q8_k::<T, Q>(w, xs, p, q0),
                    ty => unreachable!("choose_path sends only types with NEON panels here, not {ty}"),
                };
                for qq in 0..Q {
                    let r0 = PANEL_ROWS * p + QUARTER * (q0 + qq);
                    if r0 >= rows {
                        break;
                    }
                    let n = QUARTER.min(rows - r0);
                    for t in 0..T {
                        // SAFETY: rows r0..r0 + n of token t are inside `out` (the caller's
                        // guarantee).
                        let dst = out.add(t * stride + r0 - row0);
                        if n == QUARTER {
                            vst1q_f32(dst, res[t][qq]);
                        } else {
                            let mut tmp = [0f32; QUARTER];
                            vst1q_f32(tmp.as_mut_ptr(), res[t][qq]);
                            std::ptr::copy_nonoverlapping(tmp.as_ptr(), dst, n);
                        }
                    }
                }
            }
        }
    };
}

panel_kernels!(dotprod, "neon,dotprod", sdot_quad, sdot_quad);
panel_kernels!(plain, "neon", mull_quad_nibbles, mull_quad_bytes);

/// Whether this CPU runs the `sdot` kernels (the standard library caches the detection).
fn has_dotprod() -> bool {
    std::arch::is_aarch64_feature_detected!("dotprod")
}

/// One tile through the `sdot` kernels where the CPU has them, the widening multiplies else.
///
/// # Safety
/// As `run_tile` in the generated modules.
#[allow(clippy::too_many_arguments)]
#[inline]
unsafe fn run_tile<const T: usize, const Q: usize>(
    dot: bool,
    w: &PackedMatrix,
    xs: [&PanelActivations; T],
    p: usize,
    q0: usize,
    out: *mut f32,
    stride: usize,
    row0: usize,
    rows: usize,
) {
    // SAFETY: the `dotprod` kernels only where the CPU has the extension; the rest is the
    // caller's guarantee.
    unsafe {
        if dot {
            dotprod::run_tile::<T, Q>(w, xs, p, q0, out, stride, row0, rows)
        } else {
            plain::run_tile::<T, Q>(w, xs, p, q0, out, stride, row0, rows)
        }
    }
}

/// One token: `out[i] = row (16 * first_panel + i) of w . x` for the rows `out` covers.
///
/// # Safety
/// `w.ty()` must have NEON panels, `x` must come from an activation row of `w.cols()` elements
/// for `w.ty()`, and the rows must exist: `16 * first_panel + out.len() <= w.rows()`.
pub(super) unsafe fn matvec_packed(w: &PackedMatrix, x: &PanelActivations, first_panel: usize, out: &mut [f32]) {
    // SAFETY: the caller's guarantees, and `sdot` only where the CPU has it.
    unsafe { matvec_packed_on(has_dotprod(), w, x, first_panel, out) }
}

/// [`matvec_packed`] through the `sdot` kernels (`dot`) or the widening multiplies.
///
/// # Safety
/// As [`matvec_packed`]; with `dot`, the CPU must have the `dotprod` extension.
unsafe fn matvec_packed_on(dot: bool, w: &PackedMatrix, x: &PanelActivations, first_panel: usize, out: &mut [f32]) {
    debug_assert!(PANEL_ROWS * first_panel + out.len() <= w.rows());
    let row0 = PANEL_ROWS * first_panel;
    let rows = row0 + out.len();
    for p in first_panel..rows.div_ceil(PANEL_ROWS) {
        // All quarters at once: each line is read from memory once (decode streams weights).
        // SAFETY: the caller's guarantees; `out` covers rows row0..rows at stride 0 (one token).
        unsafe { run_tile::<1, QUARTERS>(dot, w, [x], p, 0, out.as_mut_ptr(), 0, row0, rows) };
    }
}

/// `out[t * rows + r] = w[r] . x[t]` for `xs.len()` tokens, as tasks of one panel and up to
/// [`TOKEN_CHUNK`] tokens on `pool`.
///
/// # Safety
/// `w.ty()` must have NEON panels, every `xs[t]` must come from an activation row of
/// `w.cols()` elements for `w.ty()`, and `out.len() == xs.len() * w.rows()`.
pub(super) unsafe fn matmul_packed(pool: &ThreadPool, w: &PackedMatrix, xs: &[PanelActivations], out: &mut [f32]) {
    // SAFETY: the caller's guarantees, and `sdot` only where the CPU has it.
    unsafe { matmul_packed_on(has_dotprod(), pool, w, xs, out) }
}

/// [`matmul_packed`] through the `sdot` kernels (`dot`) or the widening multiplies.
///
/// # Safety
/// As [`matmul_packed`]; with `dot`, the CPU must have the `dotprod` extension.
unsafe fn matmul_packed_on(dot: bool, pool: &ThreadPool, w: &PackedMatrix, xs: &[PanelActivations], out: &mut [f32]) {
    debug_assert_eq!(out.len(), xs.len() * w.rows());
    let rows = w.rows();
    let n_panels = w.n_panels();
    let n_chunks = xs.len().div_ceil(TOKEN_CHUNK);
    let outp = SyncPtr(out.as_mut_ptr());
    pool.run(n_panels * n_chunks, &|task| {
        // Chunk-major: threads working at the same time share the chunk's activations.
        let (c, p) = (task / n_panels, task % n_panels);
        let end = ((c + 1) * TOKEN_CHUNK).min(xs.len());
        let mut t0 = c * TOKEN_CHUNK;
        while t0 < end {
            let nt = TILE.min(end - t0);
            let tile = |i: usize| &xs[t0 + i];
            // SAFETY: the caller guarantees the type and the activation rows; tokens
            // t0..t0+nt and panel p's rows are inside `out`, and this task is their only writer.
            unsafe {
                let o = outp.get().add(t0 * rows);
                match nt {
                    1 => run_tile::<1, QUARTERS>(dot, w, [tile(0)], p, 0, o, rows, 0, rows),
                    2 => run_tile::<2, QUARTERS>(dot, w, [tile(0), tile(1)], p, 0, o, rows, 0, rows),
                    3 => {
                        for q0 in [0, 2] {
                            run_tile::<3, 2>(dot, w, std::array::from_fn(tile), p, q0, o, rows, 0, rows);
                        }
                    }
                    _ => {
                        for q0 in [0, 2] {
                            run_tile::<TILE, 2>(dot, w, std::array::from_fn(tile), p, q0, o, rows, 0, rows);
                        }
                    }
                }
            }
            t0 += nt;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::cpu::{quantize_activations, QMatrix};
    use crate::quant::quantize_row;
    use rand::{rngs::StdRng, Rng, SeedableRng};

    /// The `sdot` and the widening-multiply kernels compute the same integer sums and the same
    /// float steps in the same order, so their results are bit for bit equal, for every type,
    /// tile width and ragged panel. Runs where the CPU has dotprod (`qemu-aarch64 -cpu max`);
    /// both are also checked against the scalar specification in `kernels::cpu::tests`.
    #[test]
    fn sdot_and_plain_kernels_agree_bit_for_bit() {
        if !has_dotprod() {
            eprintln!("skipped: this CPU has no dotprod (run under qemu-aarch64 -cpu max)");
            return;
        }
        let mut rng = StdRng::seed_from_u64(13);
        let pool = ThreadPool::new(3);
        for (ty, rows, cols) in [
            (GgmlType::Q4_0, 37, 96),
            (GgmlType::Q4_1, 21, 64),
            (GgmlType::Q5_0, 30, 160),
            (GgmlType::Q5_1, 19, 96),
            (GgmlType::Q8_0, 35, 128),
            (GgmlType::Q4_K, 23, 512),
            (GgmlType::Q5_K, 21, 768),
            (GgmlType::Q6_K, 18, 512),
        ] {
            let floats: Vec<f32> = (0..rows * cols).map(|_| rng.random_range(-1.0..1.0)).collect();
            let mut data = vec![0u8; rows * ty.row_bytes(cols as u64).unwrap() as usize];
            quantize_row(ty, &floats, &mut data).unwrap();
            let w = PackedMatrix::new(&pool, &QMatrix::new(ty, rows, cols, &data).unwrap()).unwrap();
            for n_tokens in [1, 2, 3, 4, 5, 7, 9] {
                let x: Vec<f32> = (0..n_tokens * cols).map(|_| rng.random_range(-2.0..2.0)).collect();
                let q = quantize_activations(&pool, ty, &x, cols).unwrap();
                let xs: Vec<PanelActivations> = (0..n_tokens).map(|t| PanelActivations::new(ty, q.row(t))).collect();
                let product = |dot: bool| {
                    let mut out = vec![f32::NAN; n_tokens * rows];
                    // SAFETY: the CPU has dotprod (checked above); every type here has NEON
                    // panels, the activation rows are this matrix's width and `out` holds
                    // n_tokens * rows floats.
                    unsafe { matmul_packed_on(dot, &pool, &w, &xs, &mut out) };
                    out
                };
                let (sdot, plain) = (product(true), product(false));
                assert!(sdot.iter().all(|v| v.is_finite()), "{ty} {n_tokens}");
                let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&sdot), bits(&plain), "{ty} {rows}x{cols} tokens {n_tokens}");
                // Decode of a part of the panels (the runner's chunks) equals the batch's rows.
                for dot in [true, false] {
                    let first_panel = 1;
                    let mut part = vec![f32::NAN; rows - PANEL_ROWS];
                    // SAFETY: as above; rows 16.. exist (every shape has more than 16 rows).
                    unsafe { matvec_packed_on(dot, &w, &xs[0], first_panel, &mut part) };
                    assert_eq!(bits(&part), bits(&sdot[PANEL_ROWS..rows]), "{ty} decode dot={dot}");
                }
            }
        }
    }
}
