//! AVX2 + FMA kernels (no AVX-512, no VNNI) over repacked weights ([`PackedMatrix`]: Q4_0,
//! Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K), for every token count: decode (one token) and batches
//! (micro-tiles of up to [`TILE`] tokens, each loaded quant line used for all of them).
//!
//! A 64-byte quant line (8 elements of 16 rows) is two 256-bit halves of 8 row lanes each.
//! Per half, its low and high nibbles are two vectors of unsigned quants; `vpmaddubsw`
//! against the broadcast 4-byte activation quad gives, per row lane, two i16 sums of two
//! products, so each instruction advances 8 rows by 4 elements. The 8 `vpmaddubsw` results of
//! a 32-element group (a Q4_0 block, a Q4_K sub-block: 4 lines, low and high nibbles) are
//! summed as i16: each is at most `2 * 15 * 127 = 3810` (at least `-3840`) in magnitude, so
//! 8 of them stay within i16 and neither `vpmaddubsw` saturation nor wrapping can occur.
//! One `vpmaddwd` then folds the pairs into one i32 per row lane: with ones for Q4_0, with the
//! row's 6-bit sub-block scale in both halves of the lane for Q4_K (which multiplies the
//! group sum by its scale in the same instruction).
//!
//! Q4_0's offset of 8 enters as the integer start `-8 * sum(y)` of each block's row sums, and
//! the Q4_K mins as `vpmaddwd` of (min, min) pairs of two sub-blocks with the Q8_K sub-block
//! sums, so for both types every integer sum equals the scalar specification's; only the
//! order of the float additions differs.
//!
//! Q5_K: Q4_K with 5-bit quants (0..31, Q5_0's fifth bits ORed in per quad): a `vpmaddubsw`
//! pair is then up to `2 * 31 * 128 = 7936`, so each sub-block sums 4 of them (one half of
//! its lines) in i16 and folds each half with its own `vpmaddwd` by the (scale, scale) pairs.
//! It prefetches its lines four super-blocks ahead (`prefetch`): without, decode of a matrix
//! streaming from memory ran at about 16 GB/s against Q4_K's 27 (the vector work per line,
//! about 1.7x Q4_K's, left too few loads in flight) and lost to the file layout. The legacy
//! formats and Q6_K prefetch 4 KiB ahead, Q4_K only where the CPU's prefetch policy says
//! so (Intel; measured, see `prefetch`): one
//! token of Q4_K reads the panels of the two halves of its rows in pairs instead
//! ([`panel_pair_q4_k`], two streams as `avx512_gemv`'s k-quant decode; Q6_K measured no faster
//! so).
//!
//! Q6_K: per group of 16 elements and half, the two quant lines and the high-bit line give
//! the 6-bit quants of 4 element quads (0..63, one OR each); `vpmaddubsw` of a quad with the
//! activations is at most `2 * 63 * 128 = 16128` in magnitude per i16, so the two of one quant
//! line sum without overflow, and one `vpmaddwd` per quant line with the row's i8 group scale
//! in both halves of the lane gives `scale * sum(q * y)` in i32. The offset of 32 is
//! `vpmaddwd` of (32 * scale) pairs of two groups with the pairs of Q8_K `bsums`, subtracted
//! in integers before the one FMA with `d`.
//!
//! Registers (16 ymm): decode keeps both halves live (2 group sums, 2 float accumulators);
//! batches of 3 or more tokens run one half at a time (a group sum and a float accumulator
//! per token, plus the Q4_K super-block sums), so a tile of 4 tokens fits without spills.

// Kernel loops index per-token and per-half arrays with counters over const-generic bounds
// the compiler unrolls; iterator chains would only obscure that.
#![allow(clippy::needless_range_loop)]

use super::prefetch::{self, AHEAD_LINES, Q5K_AHEAD_LINES};
use super::types::{
    Line, PackedActivations, PackedMatrix, SyncPtr, K_HEAD_LINES, PANEL_ROWS, Q4K_LINES, Q5K_LINES, Q6K_LINES,
};
use super::ThreadPool;
use crate::quant::{GgmlType, QK_K};
use std::arch::x86_64::*;

/// Row lanes per 256-bit half of a quant line.
const HALF: usize = 8;
/// Tokens per micro-tile of the batch kernel.
const TILE: usize = 4;
/// Tokens per batch task: one task reuses its panel (about 36 KiB at 4096 columns, in L2) for
/// every tile of its tokens.
const TOKEN_CHUNK: usize = 64;

/// The i16 group sums of 8 row lanes (halves `h0..h0 + H` of each line) of the 4 quant
/// `lines` of a 32-element group against the activation quads of `T` tokens (8 quads each).
///
/// # Safety
/// AVX2 must be present; `lines` must point to 4 lines and every `quads[t]` to 8 u32.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn group_sums<const T: usize, const H: usize>(
    lines: *const Line,
    quads: [*const u32; T],
    h0: usize,
) -> [[__m256i; H]; T] {
    let low = _mm256_set1_epi8(0x0f);
    let mut acc = [[_mm256_setzero_si256(); H]; T];
    for v in 0..4 {
        for h in 0..H {
            let q = _mm256_load_si256(lines.add(v).cast::<u8>().add(32 * (h0 + h)).cast());
            let lo = _mm256_and_si256(q, low);
            let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(q), low);
            for t in 0..T {
                let ylo = _mm256_set1_epi32(quads[t].add(2 * v).read() as i32);
                let yhi = _mm256_set1_epi32(quads[t].add(2 * v + 1).read() as i32);
                // No saturation: see the module docs (|sum| <= 8 * 3840 < 32768).
                acc[t][h] = _mm256_add_epi16(acc[t][h], _mm256_maddubs_epi16(lo, ylo));
                acc[t][h] = _mm256_add_epi16(acc[t][h], _mm256_maddubs_epi16(hi, yhi));
            }
        }
    }
    acc
}

/// The 6-bit scales and mins of half `h` (8 rows) of a Q4_K or Q5_K super-block's panel,
/// unpacked from its three lines of the file's packed bytes (`lines[1..4]`, see `repack.rs`):
/// scales of sub-blocks 0..4, scales 4..8, mins 0..4, mins 4..8; byte `k` of lane `r` holds
/// sub-block `4i + k`'s of row `r` (as `quant::q4k_scales_mins_words` per row).
///
/// # Safety
/// AVX2 must be present; `lines` must point at a super-block's lines; `h < 2`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn k_scales_and_mins(lines: *const Line, h: usize) -> [__m256i; 4] {
    let [a, b, c] = [1, 2, 3].map(|i| _mm256_load_si256(lines.add(i).cast::<u8>().add(4 * HALF * h).cast()));
    let (low6, low4, top2) = (_mm256_set1_epi8(0x3f), _mm256_set1_epi8(0x0f), _mm256_set1_epi8(0x30));
    // 16-bit shifts: the bits that cross into the neighbouring byte are masked off.
    let high = |v: __m256i| _mm256_and_si256(_mm256_srli_epi16::<2>(v), top2);
    [
        _mm256_and_si256(a, low6),
        _mm256_or_si256(_mm256_and_si256(c, low4), high(a)),
        _mm256_and_si256(b, low6),
        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16::<4>(c), low4), high(b)),
    ]
}

/// From [`k_scales_and_mins`], i32 lanes holding the i16 pair of entries `a` and `b` (0..8
/// the scales of sub-blocks 0..8, 8..16 the mins) of each row, for `vpmaddwd`: one `vpshufb`.
///
/// # Safety
/// AVX2 must be present; `a` and `b` in the same vector (`a / 4 == b / 4`), both `< 16`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn byte_pairs_of(scales_mins: &[__m256i; 4], a: usize, b: usize) -> __m256i {
    // Per 128-bit lane, i32 lane `k` takes bytes `4k + a % 4` and `4k + b % 4`, each followed
    // by a zero byte (index bit 7 set).
    let at = |k: i32| ((4 * k + (a % 4) as i32) | ((4 * k + (b % 4) as i32) << 16)) | 0x8000_8000u32 as i32;
    _mm256_shuffle_epi8(
        scales_mins[a / 4],
        _mm256_setr_epi32(at(0), at(1), at(2), at(3), at(0), at(1), at(2), at(3)),
    )
}

/// Bit `k` of every byte of `high` moved to bit 4 (other bits left over, masked by the
/// caller): 16-bit shifts by at most 4, so no bit of a neighbouring byte reaches bit 4.
///
/// # Safety
/// AVX2 must be present; `k < 8`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn bit_to_4(high: __m256i, k: usize) -> __m256i {
    match k {
        0 => _mm256_slli_epi16::<4>(high),
        1 => _mm256_slli_epi16::<3>(high),
        2 => _mm256_slli_epi16::<2>(high),
        3 => _mm256_slli_epi16::<1>(high),
        4 => high,
        5 => _mm256_srli_epi16::<1>(high),
        6 => _mm256_srli_epi16::<2>(high),
        _ => _mm256_srli_epi16::<3>(high),
    }
}

/// The unsigned 5-bit quants (0..31) of half `hh` of quant line `v` of a Q5_0/Q5_1 block:
/// low and high nibbles (quads `2v` and `2v + 1`), ORed with the fifth bits of the block's
/// fifth-bit line (byte `i` of a lane holds the bit of element `4k + i` at bit `k`, see
/// `repack.rs`) moved to bit 4.
///
/// # Safety
/// AVX2 must be present; `lines` must point to the block's 5 lines, `v < 4` and `hh < 2`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn q5_half_quants(lines: *const Line, v: usize, hh: usize) -> (__m256i, __m256i) {
    let high = _mm256_load_si256(lines.add(4).cast::<u8>().add(32 * hh).cast());
    q5_half_quants_with(lines, high, v, hh)
}

/// [`q5_half_quants`] with half `hh` of the fifth-bit line already loaded (`high`).
///
/// # Safety
/// AVX2 must be present; `lines` must point to the block's 5 lines, `v < 4` and `hh < 2`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn q5_half_quants_with(lines: *const Line, high: __m256i, v: usize, hh: usize) -> (__m256i, __m256i) {
    let low = _mm256_set1_epi8(0x0f);
    let fifth = _mm256_set1_epi8(0x10);
    let q = _mm256_load_si256(lines.add(v).cast::<u8>().add(32 * hh).cast());
    let lo = _mm256_or_si256(_mm256_and_si256(q, low), _mm256_and_si256(bit_to_4(high, 2 * v), fifth));
    let hi = _mm256_or_si256(
        _mm256_and_si256(_mm256_srli_epi16::<4>(q), low),
        _mm256_and_si256(bit_to_4(high, 2 * v + 1), fifth),
    );
    (lo, hi)
}

/// The unsigned 4-bit quants (0..15) of half `hh` of quant line `v` of a Q4_1 block: its low
/// and high nibbles (quads `2v` and `2v + 1`).
///
/// # Safety
/// AVX2 must be present; `lines` must point to the block's 4 lines, `v < 4` and `hh < 2`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn nibble_half_quants(lines: *const Line, v: usize, hh: usize) -> (__m256i, __m256i) {
    let low = _mm256_set1_epi8(0x0f);
    let q = _mm256_load_si256(lines.add(v).cast::<u8>().add(32 * hh).cast());
    (
        _mm256_and_si256(q, low),
        _mm256_and_si256(_mm256_srli_epi16::<4>(q), low),
    )
}

/// Halves `h0..h0 + H` of panel `p` of Q8_0 (`Q8`), Q5_0/Q5_1 (`FIFTH`) or Q4_1 rows against
/// `T` whole activation rows. Q8_0: the stored `q + 128` back to signed `q`, whose sign moves
/// onto the activations (`vpmaddubsw` of `|q|` with `sign(y, q)`: each i16 pair at most
/// `2 * 128 * 127 = 32512`, so one `vpmaddwd` per quad), giving `sum(q * y)` directly. Q5:
/// unsigned 0..31 quants, each `vpmaddubsw` pair at most `2 * 31 * 127 = 7874`, so 4 quads sum
/// in i16 before one `vpmaddwd`, from the start `-16 * sum(y)` (Q5_0) or 0 (Q5_1); Q4_1 the
/// same with 0..15 nibbles. With `MIN` (Q4_1, Q5_1) the rows' mins times the activation's `s`
/// are added per block.
///
/// # Safety
/// AVX2, FMA and F16C must be present; every `xs[t]` must come from an activation row of
/// `w.cols()` elements for `w.ty()`; `p < w.n_panels()`; `h0 + H <= 2`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn panel_legacy<const T: usize, const H: usize, const Q8: bool, const FIFTH: bool, const MIN: bool>(
    w: &PackedMatrix,
    xs: [&PackedActivations; T],
    p: usize,
    h0: usize,
) -> [[__m256; H]; T] {
    let ones = _mm256_set1_epi16(1);
    let mut acc = [[_mm256_setzero_ps(); H]; T];
    for b in 0..w.cols() / 32 {
        let (sc, lines) = w.legacy_block(p, b);
        prefetch::legacy_block_of::<Q8, FIFTH>(lines, sc);
        let lp = lines.as_ptr();
        let quads: [*const u32; T] = std::array::from_fn(|t| xs[t].quads.as_ptr().add(8 * b));
        let y = |t: usize, k: usize| _mm256_set1_epi32(quads[t].add(k).read() as i32);
        let mut s32 = [[_mm256_setzero_si256(); H]; T];
        for h in 0..H {
            let hh = h0 + h;
            if Q8 {
                for k in 0..8 {
                    let u = _mm256_load_si256(lp.add(k).cast::<u8>().add(32 * hh).cast());
                    let q = _mm256_xor_si256(u, _mm256_set1_epi8(-128));
                    let magnitude = _mm256_sign_epi8(q, q);
                    for t in 0..T {
                        let pairs = _mm256_maddubs_epi16(magnitude, _mm256_sign_epi8(y(t, k), q));
                        s32[t][h] = _mm256_add_epi32(s32[t][h], _mm256_madd_epi16(pairs, ones));
                    }
                }
            } else {
                for half_block in 0..2 {
                    let mut s16 = [_mm256_setzero_si256(); T];
                    for v in 2 * half_block..2 * half_block + 2 {
                        let (lo, hi) = if FIFTH {
                            q5_half_quants(lp, v, hh)
                        } else {
                            nibble_half_quants(lp, v, hh)
                        };
                        for t in 0..T {
                            // No saturation: |4 pairs| <= 4 * 7874 < 32768 (Q4_1: 4 * 3810).
                            s16[t] = _mm256_add_epi16(s16[t], _mm256_maddubs_epi16(lo, y(t, 2 * v)));
                            s16[t] = _mm256_add_epi16(s16[t], _mm256_maddubs_epi16(hi, y(t, 2 * v + 1)));
                        }
                    }
                    for t in 0..T {
                        s32[t][h] = _mm256_add_epi32(s32[t][h], _mm256_madd_epi16(s16[t], ones));
                    }
                }
            }
        }
        for h in 0..H {
            let hh = h0 + h;
            let dw = _mm256_cvtph_ps(_mm_loadu_si128(sc.as_ptr().add(HALF * hh).cast()));
            for t in 0..T {
                let mut s = s32[t][h];
                if !Q8 {
                    s = _mm256_add_epi32(s, _mm256_set1_epi32(*xs[t].sums.get_unchecked(b)));
                }
                let scale = _mm256_mul_ps(dw, _mm256_set1_ps(*xs[t].scales.get_unchecked(b)));
                acc[t][h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), scale, acc[t][h]);
                if MIN {
                    let m = _mm256_cvtph_ps(_mm_loadu_si128(sc.as_ptr().add(PANEL_ROWS + HALF * hh).cast()));
                    acc[t][h] = _mm256_fmadd_ps(m, _mm256_set1_ps(*xs[t].block_s.get_unchecked(b)), acc[t][h]);
                }
            }
        }
    }
    acc
}

/// Halves `h0..h0 + H` of panel `p` of Q8_0 rows against `T` activation rows ([`panel_legacy`]).
///
/// # Safety
/// As [`panel_legacy`].
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn panel_q8_0_q8_0<const T: usize, const H: usize>(
    w: &PackedMatrix,
    xs: [&PackedActivations; T],
    p: usize,
    h0: usize,
) -> [[__m256; H]; T] {
    panel_legacy::<T, H, true, false, false>(w, xs, p, h0)
}

/// Halves `h0..h0 + H` of panel `p` of Q5_0 rows against `T` activation rows ([`panel_legacy`]).
///
/// # Safety
/// As [`panel_legacy`].
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn panel_q5_0_q8_0<const T: usize, const H: usize>(
    w: &PackedMatrix,
    xs: [&PackedActivations; T],
    p: usize,
    h0: usize,
) -> [[__m256; H]; T] {
    panel_legacy::<T, H, false, true, false>(w, xs, p, h0)
}

/// Halves `h0..h0 + H` of panel `p` of Q5_1 rows against `T` activation rows ([`panel_legacy`]).
///
/// # Safety
/// As [`panel_legacy`].
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn panel_q5_1_q8_1<const T: usize, const H: usize>(
    w: &PackedMatrix,
    xs: [&PackedActivations; T],
    p: usize,
    h0: usize,
) -> [[__m256; H]; T] {
    panel_legacy::<T, H, false, true, true>(w, xs, p, h0)
}

/// Halves `h0..h0 + H` of panel `p` of Q4_1 rows against `T` activation rows ([`panel_legacy`]).
///
/// # Safety
/// As [`panel_legacy`].
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn panel_q4_1_q8_1<const T: usize, const H: usize>(
    w: &PackedMatrix,
    xs: [&PackedActivations; T],
    p: usize,
    h0: usize,
) -> [[__m256; H]; T] {
    panel_legacy::<T, H, false, false, true>(w, xs, p, h0)
}

/// Halves `h0..h0 + H` of panel `p` of Q4_0 rows against `T` whole activation rows.
///
/// # Safety
/// AVX2, FMA and F16C must be present; every `xs[t]` must come from a Q8_0 row of
/// `w.cols()` elements; `p < w.n_panels()`; `h0 + H <= 2`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn panel_q4_0_q8_0<const T: usize, const H: usize>(
    w: &PackedMatrix,
    xs: [&PackedActivations; T],
    p: usize,
    h0: usize,
) -> [[__m256; H]; T] {
    let ones = _mm256_set1_epi16(1);
    let mut acc = [[_mm256_setzero_ps(); H]; T];
    for b in 0..w.cols() / 32 {
        let (sc, lines) = w.legacy_block(p, b);
        prefetch::legacy_block::<4>(lines, sc);
        let quads = std::array::from_fn(|t| xs[t].quads.as_ptr().add(8 * b));
        let s16 = group_sums::<T, H>(lines.as_ptr(), quads, h0);
        for h in 0..H {
            let dw = _mm256_cvtph_ps(_mm_loadu_si128(sc.as_ptr().add(HALF * (h0 + h)).cast()));
            for t in 0..T {
                let start = _mm256_set1_epi32(*xs[t].sums.get_unchecked(b));
                let s = _mm256_add_epi32(_mm256_madd_epi16(s16[t][h], ones), start);
                let scale = _mm256_mul_ps(dw, _mm256_set1_ps(*xs[t].scales.get_unchecked(b)));
                acc[t][h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), scale, acc[t][h]);
            }
        }
    }
    acc
}

/// Halves `h0..h0 + H` of panel `p` of Q4_K rows against `T` whole activation rows
/// ([`panel_kquant`]).
///
/// # Safety
/// As [`panel_kquant`].
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn panel_q4_k_q8_k<const T: usize, const H: usize>(
    w: &PackedMatrix,
    xs: [&PackedActivations; T],
    p: usize,
    h0: usize,
) -> [[__m256; H]; T] {
    panel_kquant::<T, H, false>(w, xs, p, h0)
}

/// Halves `h0..h0 + H` of panel `p` of Q5_K rows against `T` whole activation rows
/// ([`panel_kquant`]).
///
/// # Safety
/// As [`panel_kquant`].
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn panel_q5_k_q8_k<const T: usize, const H: usize>(
    w: &PackedMatrix,
    xs: [&PackedActivations; T],
    p: usize,
    h0: usize,
) -> [[__m256; H]; T] {
    panel_kquant::<T, H, true>(w, xs, p, h0)
}

/// Halves `h0..h0 + H` of panel `p` of Q4_K rows (Q5_K with `FIFTH`) against `T` whole
/// activation rows: per sub-block the i16 group sums times the row's 6-bit scale in one
/// `vpmaddwd`, the mins with the Q8_K sub-block sums, then one FMA each with `d` and `dmin`
/// per super-block.
///
/// # Safety
/// AVX2, FMA and F16C must be present; every `xs[t]` must come from a Q8_K row of
/// `w.cols()` elements; `w.ty()` must be Q5_K with `FIFTH`, else Q4_K; `p < w.n_panels()`;
/// `h0 + H <= 2`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn panel_kquant<const T: usize, const H: usize, const FIFTH: bool>(
    w: &PackedMatrix,
    xs: [&PackedActivations; T],
    p: usize,
    h0: usize,
) -> [[__m256; H]; T] {
    let mut acc = [[_mm256_setzero_ps(); H]; T];
    for b in 0..w.cols() / QK_K {
        let lines = if FIFTH { w.q5_k_block(p, b) } else { w.q4_k_block(p, b) };
        kquant_block::<T, H, FIFTH>(lines, xs, b, h0, &mut acc);
    }
    acc
}

/// Adds super-block `b` of a panel of Q4_K rows (Q5_K with `FIFTH`), its `lines`, against `T`
/// whole activation rows to `acc`: [`panel_kquant`]'s step.
///
/// # Safety
/// As [`panel_kquant`]; `lines` must be super-block `b`'s.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn kquant_block<const T: usize, const H: usize, const FIFTH: bool>(
    lines: &[Line],
    xs: [&PackedActivations; T],
    b: usize,
    h0: usize,
    acc: &mut [[__m256; H]; T],
) {
    // Lines per sub-block: 4 quant lines, plus Q5_K's fifth-bit line.
    let per_sub = if FIFTH { 5 } else { 4 };
    let lp = lines.as_ptr();
    let scales_mins: [[__m256i; 4]; H] = std::array::from_fn(|h| k_scales_and_mins(lp, h0 + h));
    // Q4_K prefetches only where the policy says so (`prefetch`).
    let prefetch_q4_k = !FIFTH && prefetch::policy().everywhere();
    let mut scaled = [[_mm256_setzero_si256(); H]; T];
    for j in 0..8 {
        let quads: [*const u32; T] = std::array::from_fn(|t| xs[t].quads.as_ptr().add(64 * b + 8 * j));
        let sub_lines = lp.add(K_HEAD_LINES + per_sub * j);
        if prefetch_q4_k {
            prefetch::share::<AHEAD_LINES, Q4K_LINES, 8>(lp, j);
        }
        if FIFTH {
            // Each of the super-block's lines once, four super-blocks ahead (5-6 per sub-block).
            prefetch::share::<Q5K_AHEAD_LINES, Q5K_LINES, 8>(lp, j);
            let sc: [__m256i; H] = std::array::from_fn(|h| byte_pairs_of(&scales_mins[h], j, j));
            let high: [__m256i; H] =
                std::array::from_fn(|h| _mm256_load_si256(sub_lines.add(4).cast::<u8>().add(32 * (h0 + h)).cast()));
            for half_block in 0..2 {
                let mut s16 = [[_mm256_setzero_si256(); H]; T];
                for v in 2 * half_block..2 * half_block + 2 {
                    let y: [[__m256i; 2]; T] = std::array::from_fn(|t| {
                        let q = quads[t].add(2 * v);
                        [
                            _mm256_set1_epi32(q.read() as i32),
                            _mm256_set1_epi32(q.add(1).read() as i32),
                        ]
                    });
                    for h in 0..H {
                        let (lo, hi) = q5_half_quants_with(sub_lines, high[h], v, h0 + h);
                        for t in 0..T {
                            // No saturation: |4 pairs| <= 4 * 7936 < 32768.
                            s16[t][h] = _mm256_add_epi16(s16[t][h], _mm256_maddubs_epi16(lo, y[t][0]));
                            s16[t][h] = _mm256_add_epi16(s16[t][h], _mm256_maddubs_epi16(hi, y[t][1]));
                        }
                    }
                }
                for t in 0..T {
                    for h in 0..H {
                        scaled[t][h] = _mm256_add_epi32(scaled[t][h], _mm256_madd_epi16(s16[t][h], sc[h]));
                    }
                }
            }
        } else {
            let s16 = group_sums::<T, H>(sub_lines, quads, h0);
            for h in 0..H {
                let sc = byte_pairs_of(&scales_mins[h], j, j);
                for t in 0..T {
                    // (scale, scale) x the two i16 halves: scale * group sum, exact in i32.
                    scaled[t][h] = _mm256_add_epi32(scaled[t][h], _mm256_madd_epi16(s16[t][h], sc));
                }
            }
        }
    }
    // Per token, the Q8_K sub-block sums of this super-block as i16 pairs (|sum| <= 4096).
    let y_pairs: [[i32; 4]; T] = std::array::from_fn(|t| {
        let s = xs[t].sums.as_ptr().add(8 * b);
        std::array::from_fn(|i| (s.add(2 * i).read() as u16 as u32 | ((s.add(2 * i + 1).read() as u32) << 16)) as i32)
    });
    for h in 0..H {
        let hh = h0 + h;
        let d = _mm256_cvtph_ps(_mm_load_si128(lp.cast::<u8>().add(16 * hh).cast()));
        let dmin = _mm256_cvtph_ps(_mm_load_si128(lp.cast::<u8>().add(32 + 16 * hh).cast()));
        let mut mins = [_mm256_setzero_si256(); T];
        for i in 0..4 {
            let m = byte_pairs_of(&scales_mins[h], 8 + 2 * i, 9 + 2 * i);
            for t in 0..T {
                mins[t] = _mm256_add_epi32(mins[t], _mm256_madd_epi16(m, _mm256_set1_epi32(y_pairs[t][i])));
            }
        }
        for t in 0..T {
            let dy = _mm256_set1_ps(*xs[t].scales.get_unchecked(b));
            acc[t][h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(scaled[t][h]), _mm256_mul_ps(d, dy), acc[t][h]);
            acc[t][h] = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(mins[t]), _mm256_mul_ps(dmin, dy), acc[t][h]);
        }
    }
}

/// Panels `ps[0]` and `ps[1]` of Q4_K rows (both halves) against one token, super-block by
/// super-block, so the weights stream from two places at once (as `avx512_gemv`'s k-quant
/// decode): per panel [`panel_kquant`]'s arithmetic.
///
/// # Safety
/// As [`panel_kquant`] for Q4_K, for both panels.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn panel_pair_q4_k(w: &PackedMatrix, x: &PackedActivations, ps: [usize; 2]) -> [[[__m256; 2]; 1]; 2] {
    let mut acc = [[[_mm256_setzero_ps(); 2]; 1]; 2];
    for b in 0..w.cols() / QK_K {
        for (p, acc) in ps.iter().zip(acc.iter_mut()) {
            kquant_block::<1, 2, false>(w.q4_k_block(*p, b), [x], b, 0, acc);
        }
    }
    acc
}

/// 8 i8 at `a` and 8 at `b` as i32 lanes holding the i16 pair `(a[r], b[r])` (sign-extended),
/// for `vpmaddwd`.
///
/// # Safety
/// AVX2 must be present; 8 bytes must be readable at `a` and at `b`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn signed_byte_pairs(a: *const u8, b: *const u8) -> __m256i {
    let a = _mm_loadl_epi64(a.cast());
    let b = _mm_loadl_epi64(b.cast());
    _mm256_cvtepi8_epi16(_mm_unpacklo_epi8(a, b))
}

/// Halves `h0..h0 + H` of panel `p` of Q6_K rows against `T` whole activation rows.
///
/// # Safety
/// AVX2, FMA and F16C must be present; every `xs[t]` must come from a Q8_K row of
/// `w.cols()` elements prepared for Q6_K; `p < w.n_panels()`; `h0 + H <= 2`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn panel_q6_k_q8_k<const T: usize, const H: usize>(
    w: &PackedMatrix,
    xs: [&PackedActivations; T],
    p: usize,
    h0: usize,
) -> [[__m256; H]; T] {
    let low = _mm256_set1_epi8(0x0f);
    let high = _mm256_set1_epi8(0x30);
    let mut acc = [[_mm256_setzero_ps(); H]; T];
    for b in 0..w.cols() / QK_K {
        let lines = w.q6_k_block(p, b);
        let lp = lines.as_ptr();
        // Byte `r` of half `h` of group `g`'s row bytes in the scale lines (1..5).
        let scale_bytes = |g: usize, h: usize| lp.add(1 + g / 4).cast::<u8>().add(16 * (g % 4) + HALF * h);
        let mut scaled = [[_mm256_setzero_si256(); H]; T];
        for g in 0..16 {
            prefetch::share::<AHEAD_LINES, Q6K_LINES, 16>(lp, g);
            let group = lp.add(5 + 3 * g).cast::<u8>();
            // The 16 rows' scales of the group, each byte doubled: (scale, scale) i16 pairs.
            let scales = _mm_load_si128(scale_bytes(g, 0).cast());
            for h in 0..H {
                let hh = h0 + h;
                let sc = _mm256_cvtepi8_epi16(if hh == 0 {
                    _mm_unpacklo_epi8(scales, scales)
                } else {
                    _mm_unpackhi_epi8(scales, scales)
                });
                let q0 = _mm256_load_si256(group.add(32 * hh).cast());
                let q1 = _mm256_load_si256(group.add(64 + 32 * hh).cast());
                let hb = _mm256_load_si256(group.add(128 + 32 * hh).cast());
                // Quads 0..4 of the group (see repack.rs); 16-bit shifts, stray bits masked.
                let q = [
                    _mm256_or_si256(
                        _mm256_and_si256(q0, low),
                        _mm256_and_si256(_mm256_slli_epi16::<4>(hb), high),
                    ),
                    _mm256_or_si256(
                        _mm256_and_si256(_mm256_srli_epi16::<4>(q0), low),
                        _mm256_and_si256(_mm256_slli_epi16::<2>(hb), high),
                    ),
                    _mm256_or_si256(_mm256_and_si256(q1, low), _mm256_and_si256(hb, high)),
                    _mm256_or_si256(
                        _mm256_and_si256(_mm256_srli_epi16::<4>(q1), low),
                        _mm256_and_si256(_mm256_srli_epi16::<2>(hb), high),
                    ),
                ];
                for t in 0..T {
                    let quads = xs[t].quads.as_ptr().add(64 * b + 4 * g);
                    let y = |k: usize| _mm256_set1_epi32(quads.add(k).read() as i32);
                    // No saturation: |each i16| <= 16128, two of them < 32768.
                    let s01 = _mm256_add_epi16(_mm256_maddubs_epi16(q[0], y(0)), _mm256_maddubs_epi16(q[1], y(1)));
                    let s23 = _mm256_add_epi16(_mm256_maddubs_epi16(q[2], y(2)), _mm256_maddubs_epi16(q[3], y(3)));
                    let s = _mm256_add_epi32(_mm256_madd_epi16(s01, sc), _mm256_madd_epi16(s23, sc));
                    scaled[t][h] = _mm256_add_epi32(scaled[t][h], s);
                }
            }
        }
        // Per token, the Q8_K group sums of this super-block as i16 pairs (|sum| <= 2048).
        let y_pairs: [[i32; 8]; T] = std::array::from_fn(|t| {
            let s = xs[t].sums.as_ptr().add(16 * b);
            std::array::from_fn(|i| {
                (s.add(2 * i).read() as u16 as u32 | ((s.add(2 * i + 1).read() as u32) << 16)) as i32
            })
        });
        for h in 0..H {
            let hh = h0 + h;
            let d = _mm256_cvtph_ps(_mm_load_si128(lp.cast::<u8>().add(16 * hh).cast()));
            let mut offsets = [_mm256_setzero_si256(); T];
            for i in 0..8 {
                // (32 * scale) of groups 2i and 2i + 1: within i16 (|32 * -128| = 4096).
                let m = _mm256_slli_epi16::<5>(signed_byte_pairs(scale_bytes(2 * i, hh), scale_bytes(2 * i + 1, hh)));
                for t in 0..T {
                    offsets[t] = _mm256_add_epi32(offsets[t], _mm256_madd_epi16(m, _mm256_set1_epi32(y_pairs[t][i])));
                }
            }
            for t in 0..T {
                let dy = _mm256_mul_ps(d, _mm256_set1_ps(*xs[t].scales.get_unchecked(b)));
                let total = _mm256_sub_epi32(scaled[t][h], offsets[t]);
                acc[t][h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(total), dy, acc[t][h]);
            }
        }
    }
    acc
}

/// Halves `h0..h0 + H` of panel `p` against `T` tokens, stored for the rows below `rows`:
/// row `r` of token `t` to `out[t * stride + r - row0]`.
///
/// # Safety
/// As [`panel_q4_0_q8_0`] / [`panel_legacy`] / [`panel_kquant`] / [`panel_q6_k_q8_k`] for `w.ty()`; `row0 <= 16 * p`, `rows <= w.rows()`, and
/// `out` must have room for every row `row0..rows` of every token at that stride.
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
unsafe fn run_tile<const T: usize, const H: usize>(
    w: &PackedMatrix,
    xs: [&PackedActivations; T],
    p: usize,
    h0: usize,
    out: *mut f32,
    stride: usize,
    row0: usize,
    rows: usize,
) {
    let res = tile_sums::<T, H>(w, xs, p, h0);
    store_tile::<T, H>(res, p, h0, out, stride, row0, rows);
}

/// Halves `h0..h0 + H` of panel `p` against `T` tokens: the kernel of `w.ty()`.
///
/// # Safety
/// As [`run_tile`].
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn tile_sums<const T: usize, const H: usize>(
    w: &PackedMatrix,
    xs: [&PackedActivations; T],
    p: usize,
    h0: usize,
) -> [[__m256; H]; T] {
    match w.ty() {
        GgmlType::Q4_0 => panel_q4_0_q8_0::<T, H>(w, xs, p, h0),
        GgmlType::Q8_0 => panel_q8_0_q8_0::<T, H>(w, xs, p, h0),
        GgmlType::Q5_0 => panel_q5_0_q8_0::<T, H>(w, xs, p, h0),
        GgmlType::Q5_1 => panel_q5_1_q8_1::<T, H>(w, xs, p, h0),
        GgmlType::Q4_1 => panel_q4_1_q8_1::<T, H>(w, xs, p, h0),
        GgmlType::Q4_K => panel_q4_k_q8_k::<T, H>(w, xs, p, h0),
        GgmlType::Q5_K => panel_q5_k_q8_k::<T, H>(w, xs, p, h0),
        _ => panel_q6_k_q8_k::<T, H>(w, xs, p, h0),
    }
}

/// Stores the sums `res` of halves `h0..h0 + H` of panel `p` for the rows below `rows`: row
/// `r` of token `t` to `out[t * stride + r - row0]`.
///
/// # Safety
/// As [`run_tile`].
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn store_tile<const T: usize, const H: usize>(
    res: [[__m256; H]; T],
    p: usize,
    h0: usize,
    out: *mut f32,
    stride: usize,
    row0: usize,
    rows: usize,
) {
    for h in 0..H {
        let r0 = PANEL_ROWS * p + HALF * (h0 + h);
        if r0 >= rows {
            break;
        }
        let n = HALF.min(rows - r0);
        for t in 0..T {
            let dst = out.add(t * stride + r0 - row0);
            if n == HALF {
                _mm256_storeu_ps(dst, res[t][h]);
            } else {
                let mut tmp = [0f32; HALF];
                _mm256_storeu_ps(tmp.as_mut_ptr(), res[t][h]);
                std::ptr::copy_nonoverlapping(tmp.as_ptr(), dst, n);
            }
        }
    }
}

/// One token: `out[i] = row (16 * first_panel + i) of w . x` for the rows `out` covers.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C, `x` must come from an activation row of
/// `w.cols()` elements for `w.ty()`, and the rows must exist:
/// `16 * first_panel + out.len() <= w.rows()`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn matvec_packed(w: &PackedMatrix, x: &PackedActivations, first_panel: usize, out: &mut [f32]) {
    debug_assert!(PANEL_ROWS * first_panel + out.len() <= w.rows());
    let row0 = PANEL_ROWS * first_panel;
    let rows = row0 + out.len();
    if w.ty() == GgmlType::Q4_K {
        // The panels of the two halves of the rows in pairs: two streams (`panel_pair_q4_k`).
        let n_panels = rows.div_ceil(PANEL_ROWS) - first_panel;
        let half = n_panels / 2;
        for i in 0..half {
            let ps = [first_panel + i, first_panel + half + i];
            let res = panel_pair_q4_k(w, x, ps);
            for (p, res) in ps.into_iter().zip(res) {
                store_tile::<1, 2>(res, p, 0, out.as_mut_ptr(), 0, row0, rows);
            }
        }
        if n_panels % 2 == 1 {
            run_tile::<1, 2>(w, [x], first_panel + n_panels - 1, 0, out.as_mut_ptr(), 0, row0, rows);
        }
        return;
    }
    for p in first_panel..rows.div_ceil(PANEL_ROWS) {
        // Both halves at once: each line is read from memory once (decode streams weights).
        run_tile::<1, 2>(w, [x], p, 0, out.as_mut_ptr(), 0, row0, rows);
    }
}

/// `out[t * rows + r] = w[r] . x[t]` for `xs.len()` tokens, as tasks of one panel and up to
/// [`TOKEN_CHUNK`] tokens on `pool`.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C, every `xs[t]` must come from an activation row of
/// `w.cols()` elements for `w.ty()`, and `out.len() == xs.len() * w.rows()`.
pub(super) unsafe fn matmul_packed(pool: &ThreadPool, w: &PackedMatrix, xs: &[PackedActivations], out: &mut [f32]) {
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
            // SAFETY: the caller guarantees the CPU features and activation rows; tokens
            // t0..t0+nt and panel p's rows are inside `out`, and this task is their only writer.
            unsafe {
                let o = outp.get().add(t0 * rows);
                match nt {
                    1 => run_tile::<1, 2>(w, [&xs[t0]], p, 0, o, rows, 0, rows),
                    2 => run_tile::<2, 2>(w, [&xs[t0], &xs[t0 + 1]], p, 0, o, rows, 0, rows),
                    3 => {
                        for h in 0..2 {
                            run_tile::<3, 1>(w, std::array::from_fn(|i| &xs[t0 + i]), p, h, o, rows, 0, rows);
                        }
                    }
                    _ => {
                        for h in 0..2 {
                            run_tile::<TILE, 1>(w, std::array::from_fn(|i| &xs[t0 + i]), p, h, o, rows, 0, rows);
                        }
                    }
                }
            }
            t0 += nt;
        }
    });
}
