//! AVX-512 VNNI matrix-vector products (decode) over repacked weights ([`PackedMatrix`]: Q4_0,
//! Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K): 16 rows per 512-bit vector, one `vpdpbusd` per 4
//! elements of 16 rows.
//!
//! Q4_0, per block of 32 elements and panel of 16 rows: 4 line loads, 8 nibble masks (the
//! high nibbles in place, their sums shifted back once), 8 `vpdpbusd` against broadcast
//! activation quads, then one conversion and one FMA with the 16 row scales times the
//! activation scale. Q4_0's offset of 8 enters exactly, as the
//! integer start value `-8 * sum(y)` of each block's row sums.
//!
//! Q8_0, Q4_1, Q5_0 and Q5_1 ([`panel_legacy`]), per block: 8 quads of unsigned quants (Q8_0's
//! stored `q + 128` as they are; Q4_1's nibbles; Q5's nibbles raised by 16 where the element's
//! fifth bit is set, one byte test per quad), 8 `vpdpbusd` from the start `-128 * sum(y)` or
//! `-16 * sum(y)` (0 for Q4_1 and Q5_1, whose min `m` times Q8_1's `s` is one more FMA per
//! block).
//!
//! Q4_K, per super-block of 256: the same per sub-block of 32, whose integer sums are
//! multiplied by the 16 rows' 6-bit scales and summed in integers, then one FMA with `d`; the
//! mins times the activation's sub-block sums (from Q8_K's `bsums`) give the `dmin` term.
//!
//! Q5_K, per super-block: Q4_K's arithmetic, with each sub-block's quads raised by 16 where
//! the element's fifth bit is set (Q5_0's per-quad byte test, [`q5_line_quants`]); 1..=16
//! tokens in groups of up to 4 sharing each unpacked sub-block.
//!
//! Q6_K, per group of 16 elements: two quant lines and the high-bit line give, with one OR
//! each, the unsigned 6-bit quants of the 4 element quads ([`q6_group_quants`]); 4 `vpdpbusd`
//! from the start value `-32 * sum(y)` of the group (Q8_K's `bsums`: Q6_K's offset of 32,
//! exactly), times the 16 rows' i8 group scales, summed in integers, then one FMA with `d`.
//!
//! So for every type the integer sums equal the scalar specification's.
//!
//! One token of Q4_K, Q5_K or Q6_K reads a task's panels in pairs, one from each half of its
//! rows ([`kquant_panels`]: super-block `b` of panel `i`, then of panel `half + i`), so the
//! weights stream from two places at once. Streaming 7B-sized matrices from memory on one core
//! of the test VM (AMD EPYC Zen 4), this read Q4_K at 27-30 GB/s against 21-24 one panel
//! after another, Q6_K at 29-32 against 26-27 and Q5_K at ~32 against ~25 (their prefetch then
//! off), with `scripts/membw.c` at 33 (docs/kernels.md "Two streams"). The legacy formats keep
//! one stream and their prefetch, which measured as fast. On Intel the two streams prefetch
//! too ([`prefetch::Prefetch::everywhere`]: one core read them 25-35 % faster so).
//!
//! On Intel one token of Q4_0 reads four panels at once ([`panels_q4_0_q8_0`],
//! [`prefetch::Prefetch::q4_0_streams`]), each stream prefetched 32 lines ahead: 7B tg at 1
//! thread 3.5-3.6 -> 4.1-4.3 t/s on a Sapphire Rapids-class VM (docs/kernels.md "Four streams
//! for Q4_0 on Intel"); elsewhere it keeps one prefetched stream ([`q4_0_panel_one_token`]).

use super::avx512::{k_super_block_step, q6_k_super_block_step, row_mask};
use super::prefetch::{self, AHEAD_LINES, Q4_0_AHEAD_LINES, Q4_0_L2_AHEAD_LINES, Q5K_AHEAD_LINES, STREAM_AHEAD_LINES};
use super::types::{Line, PackedActivations, PackedMatrix, K_HEAD_LINES, PANEL_ROWS, Q4K_LINES, Q5K_LINES, Q6K_LINES};
use crate::quant::GgmlType;
use crate::quant::QK_K;
use std::arch::x86_64::*;

/// `out[t * stride + r] = row r of w . xs[t]` for the `n_rows` rows from panel `first_panel`
/// on, and every token of `xs` (decode: one token; a small batch of decodes: a few). Each
/// panel's weights come from memory once and stay in cache for the other tokens, and every
/// token's sums are the ones it gets alone, whatever the batch. One token of Q4_0 reads
/// `q4_0_streams` (1, 2 or 4; [`prefetch::Prefetch::q4_0_streams`]) panels at a time, with the
/// same bits for each.
///
/// # Safety
/// The CPU must support AVX-512 F/BW/VL/VNNI and F16C, each of `xs` must come from an
/// activation row of `w.cols()` elements for `w.ty()`, the rows must exist
/// (`16 * first_panel + n_rows <= w.rows()`), and `out` must be valid for writes at
/// `t * stride + r` for every token `t` and row `r` in range.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) unsafe fn matvec_packed(
    w: &PackedMatrix,
    xs: &[PackedActivations],
    first_panel: usize,
    n_rows: usize,
    out: *mut f32,
    stride: usize,
    q4_0_streams: usize,
) {
    debug_assert!(PANEL_ROWS * first_panel + n_rows <= w.rows());
    let n_panels = n_rows.div_ceil(PANEL_ROWS);
    // Stores the 16 (or, in the last panel, fewer) sums of panel `i` of the range for token `t`.
    let store = |t: usize, i: usize, total: __m512| {
        let mask = row_mask(n_rows - i * PANEL_ROWS);
        _mm512_mask_storeu_ps(out.add(t * stride + PANEL_ROWS * (first_panel + i)), mask, total)
    };
    // One token, `N` panels at a time, from `N` places: panels i, q + i, ..., (N - 1) q + i of
    // the range (q = n_panels / N), block by block, then the last n_panels mod N one by one.
    macro_rules! in_streams {
        ($n:literal, $kernel:ident) => {{
            let q = n_panels / $n;
            for i in 0..q {
                let ps: [usize; $n] = std::array::from_fn(|j| j * q + i);
                let sums = $kernel::<$n>(w, &xs[0], ps.map(|p| first_panel + p));
                ps.iter().zip(sums).for_each(|(&p, total)| store(0, p, total));
            }
            for p in $n * q..n_panels {
                let [total] = $kernel::<1>(w, &xs[0], [first_panel + p]);
                store(0, p, total);
            }
            return;
        }};
    }
    if xs.len() == 1 {
        match (w.ty(), q4_0_streams) {
            // The k-quants in pairs (see the module documentation).
            (GgmlType::Q4_K | GgmlType::Q5_K | GgmlType::Q6_K, _) => in_streams!(2, kquant_panels),
            (GgmlType::Q4_0, 1) => {
                for i in 0..n_panels {
                    store(0, i, q4_0_panel_one_token(w, &xs[0], first_panel + i));
                }
                return;
            }
            (GgmlType::Q4_0, 4) => in_streams!(4, panels_q4_0_q8_0),
            (GgmlType::Q4_0, 2) => in_streams!(2, panels_q4_0_q8_0),
            _ => {}
        }
    }
    for i in 0..n_panels {
        let p = first_panel + i;
        // Groups of up to 4 tokens share each unpacked weight line (every type but Q4_K).
        macro_rules! by_groups {
            ($kernel:ident) => {{
                let mut t0 = 0;
                while t0 < xs.len() {
                    let g = &xs[t0..(t0 + 4).min(xs.len())];
                    let put = |res: &[__m512]| res.iter().enumerate().for_each(|(t, &v)| store(t0 + t, i, v));
                    match g.len() {
                        4 => put(&$kernel::<4>(w, g, p)),
                        3 => put(&$kernel::<3>(w, g, p)),
                        2 => put(&$kernel::<2>(w, g, p)),
                        _ => put(&$kernel::<1>(w, g, p)),
                    }
                    t0 += g.len();
                }
            }};
        }
        match w.ty() {
            GgmlType::Q4_0 => by_groups!(panel_q4_0_q8_0),
            GgmlType::Q8_0 => by_groups!(panel_q8_0_q8_0),
            GgmlType::Q5_0 => by_groups!(panel_q5_0_q8_0),
            GgmlType::Q5_1 => by_groups!(panel_q5_1_q8_1),
            GgmlType::Q4_1 => by_groups!(panel_q4_1_q8_1),
            GgmlType::Q6_K => by_groups!(panel_q6_k_q8_k),
            GgmlType::Q5_K => by_groups!(panel_q5_k_q8_k),
            _ => {
                for (t, x) in xs.iter().enumerate() {
                    store(t, i, panel_q4_k_q8_k::<1>(w, x, [p])[0]);
                }
            }
        }
    }
}

/// `N` panels (`ps`) of a k-quant matrix (Q4_K, Q5_K or Q6_K) against one token, super-block
/// by super-block.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn kquant_panels<const N: usize>(w: &PackedMatrix, x: &PackedActivations, ps: [usize; N]) -> [__m512; N] {
    match w.ty() {
        GgmlType::Q4_K => panel_q4_k_q8_k::<N>(w, x, ps),
        GgmlType::Q5_K => panels_q5_k_q8_k::<N>(w, x, ps),
        _ => panels_q6_k_q8_k::<N>(w, x, ps),
    }
}

/// The integer sums of 16 rows' quant `lines` (8 elements each) against the activation
/// `quads` (two per line), starting from `start`.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[inline]
unsafe fn line_sums(lines: &[Line], quads: &[u32], start: __m512i) -> __m512i {
    let low = _mm512_set1_epi8(0x0f);
    // Two independent chains (low and high nibbles) halve the `vpdpbusd` latency chain.
    let mut sum_lo = start;
    let mut sum_hi = _mm512_setzero_si512();
    for (v, line) in lines.iter().enumerate() {
        let q = _mm512_load_si512(line.0.as_ptr().cast());
        let lo = _mm512_and_si512(q, low);
        let hi = _mm512_and_si512(_mm512_srli_epi16::<4>(q), low);
        sum_lo = _mm512_dpbusd_epi32(sum_lo, lo, _mm512_set1_epi32(quads[2 * v] as i32));
        sum_hi = _mm512_dpbusd_epi32(sum_hi, hi, _mm512_set1_epi32(quads[2 * v + 1] as i32));
    }
    _mm512_add_epi32(sum_lo, sum_hi)
}

/// One panel of Q4_0 rows against the whole activation rows of `T` tokens (`xs[..T]`): each
/// line of weights is loaded and unpacked once for all of them. Per token the arithmetic is
/// the same for every `T` (integer sums, then two alternating float accumulators), so a token
/// gets the same result alone or in a batch.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
unsafe fn panel_q4_0_q8_0<const T: usize>(w: &PackedMatrix, xs: &[PackedActivations], p: usize) -> [__m512; T] {
    let [sums] = q4_0_panels::<T, 1>(w, xs, [p]);
    sums
}

/// One panel of Q4_0 rows against one token where that token reads one stream of panels
/// ([`prefetch::Prefetch::L1`], so its prefetches go to L1): [`q4_0_panels`]'s arithmetic
/// for `T` = `N` = 1 (the same bits), two blocks per step so both accumulators stay in
/// registers, over pointers into slices checked once per call, each line prefetched
/// [`Q4_0_AHEAD_LINES`] ahead just before a line is read, and each block's first line
/// [`Q4_0_L2_AHEAD_LINES`] ahead into L2.
///
/// Decode of one sequence is this loop. Through [`q4_0_panels`] (each block's slices indexed
/// and bounds-checked, its prefetches in one burst after a policy read, the accumulator picked
/// by the block's parity and kept in memory) one Zen 4 core ran it at 45 GB/s with the weights
/// in cache against 59 so, and streamed 7B-sized matrices from memory at 21.4-21.6 GB/s
/// against 24.0-24.9 (docs/kernels.md "Q4_0 decode on one core"). Batches keep
/// [`q4_0_panels`]: written this way for 2 and 4 tokens, they ran slower.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn q4_0_panel_one_token(w: &PackedMatrix, x: &PackedActivations, p: usize) -> __m512 {
    let blocks = w.cols() / 32;
    assert!(x.quads.len() >= 8 * blocks && x.sums.len() >= blocks && x.scales.len() >= blocks);
    // 16 f16 scales and 4 lines per block, `blocks` blocks.
    let (scales, lines) = w.legacy_panel(p);
    let panel = Q4_0Blocks {
        lines: lines.as_ptr(),
        scales: scales.as_ptr(),
        quads: x.quads.as_ptr(),
        sums: x.sums.as_ptr(),
        y_scales: x.scales.as_ptr(),
    };
    let (mut even, mut odd) = (_mm512_setzero_ps(), _mm512_setzero_ps());
    for b in (0..blocks.saturating_sub(1)).step_by(2) {
        // One line of scales holds two blocks'; 16 blocks ahead measured as 8 and better than
        // 32 or 64 (a few per cent).
        _mm_prefetch::<_MM_HINT_T0>(panel.scales.wrapping_add(16 * (b + 16)).cast());
        // Each block's first line twice as far ahead into L2: see `Q4_0_L2_AHEAD_LINES`.
        _mm_prefetch::<_MM_HINT_T1>(panel.lines.wrapping_add(4 * b + Q4_0_L2_AHEAD_LINES).cast());
        _mm_prefetch::<_MM_HINT_T1>(panel.lines.wrapping_add(4 * b + 4 + Q4_0_L2_AHEAD_LINES).cast());
        // SAFETY (both): b + 1 < blocks, checked above for the activations.
        even = panel.block(b, even);
        odd = panel.block(b + 1, odd);
    }
    if blocks % 2 == 1 {
        // SAFETY: as above.
        even = panel.block(blocks - 1, even);
    }
    _mm512_add_ps(even, odd)
}

/// One panel of Q4_0 blocks (4 lines and 16 f16 scales each) and one token's Q8_0 blocks (8
/// quads, the start sum and the scale each), from their first blocks on.
struct Q4_0Blocks {
    lines: *const Line,
    scales: *const u16,
    quads: *const u32,
    sums: *const i32,
    y_scales: *const f32,
}

impl Q4_0Blocks {
    /// Block `b`'s integer sums times its scales, added to `acc`.
    ///
    /// # Safety
    /// AVX-512 F/BW/VNNI and F16C (inlined into a function that has them); block `b` exists
    /// on both sides.
    #[inline(always)]
    unsafe fn block(&self, b: usize, acc: __m512) -> __m512 {
        let lines = self.lines.add(4 * b);
        let quads = self.quads.add(8 * b);
        let low = _mm512_set1_epi8(0x0f);
        let high = _mm512_set1_epi8(0xf0u8 as i8);
        let mut sum_lo = _mm512_set1_epi32(*self.sums.add(b));
        // High nibbles in place, as in `q4_0_panels`.
        let mut sum_hi16 = _mm512_setzero_si512();
        for v in 0..4 {
            _mm_prefetch::<_MM_HINT_T0>(lines.wrapping_add(Q4_0_AHEAD_LINES + v).cast());
            let q = _mm512_load_si512(lines.add(v).cast());
            sum_lo = _mm512_dpbusd_epi32(
                sum_lo,
                _mm512_and_si512(q, low),
                _mm512_set1_epi32(*quads.add(2 * v) as i32),
            );
            sum_hi16 = _mm512_dpbusd_epi32(
                sum_hi16,
                _mm512_and_si512(q, high),
                _mm512_set1_epi32(*quads.add(2 * v + 1) as i32),
            );
        }
        let dw = _mm512_cvtph_ps(_mm256_loadu_si256(self.scales.add(16 * b).cast()));
        let sums = _mm512_add_epi32(sum_lo, _mm512_srai_epi32::<4>(sum_hi16));
        let scale = _mm512_mul_ps(dw, _mm512_set1_ps(*self.y_scales.add(b)));
        _mm512_fmadd_ps(_mm512_cvtepi32_ps(sums), scale, acc)
    }
}

/// `N` panels of Q4_0 rows (`ps`) against one token, block by block, each panel with
/// [`panel_q4_0_q8_0`]'s arithmetic (the same bits): the weights stream from `N` places.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
unsafe fn panels_q4_0_q8_0<const N: usize>(w: &PackedMatrix, x: &PackedActivations, ps: [usize; N]) -> [__m512; N] {
    q4_0_panels::<1, N>(w, std::slice::from_ref(x), ps).map(|[sums]| sums)
}

/// `N` panels of Q4_0 rows (`ps`) against `T` tokens (`xs[..T]`), block by block: the kernel
/// of [`panel_q4_0_q8_0`] (`N` = 1) and [`panels_q4_0_q8_0`] (`T` = 1). One panel prefetches
/// [`AHEAD_LINES`] ahead, each of several [`STREAM_AHEAD_LINES`].
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn q4_0_panels<const T: usize, const N: usize>(
    w: &PackedMatrix,
    xs: &[PackedActivations],
    ps: [usize; N],
) -> [[__m512; T]; N] {
    let xs = &xs[..T];
    let low = _mm512_set1_epi8(0x0f);
    let high = _mm512_set1_epi8(0xf0u8 as i8);
    let mut acc = [[[_mm512_setzero_ps(); 2]; T]; N];
    for b in 0..w.cols() / 32 {
        for (&p, acc) in ps.iter().zip(acc.iter_mut()) {
            let (sc, lines) = w.legacy_block(p, b);
            if N == 1 {
                prefetch::legacy_block::<4>(lines, sc);
            } else {
                prefetch::legacy_block_ahead::<STREAM_AHEAD_LINES, 4>(lines, sc);
            }
            let mut sum_lo: [__m512i; T] = std::array::from_fn(|t| _mm512_set1_epi32(xs[t].sums[b]));
            // The high nibbles stay in place (16 * q: one AND per line, no shift), so their
            // chain sums 16 times their products and one exact shift per block takes it back.
            // Streaming 11008x4096 at 1 thread: +2-5 % (8 of 8 pairs); Q4_K's `line_sums`
            // measured slower so.
            let mut sum_hi16 = [_mm512_setzero_si512(); T];
            for (v, line) in lines.iter().enumerate() {
                let q = _mm512_load_si512(line.0.as_ptr().cast());
                let lo = _mm512_and_si512(q, low);
                let hi16 = _mm512_and_si512(q, high);
                for t in 0..T {
                    let quads = &xs[t].quads[b * 8..b * 8 + 8];
                    sum_lo[t] = _mm512_dpbusd_epi32(sum_lo[t], lo, _mm512_set1_epi32(quads[2 * v] as i32));
                    sum_hi16[t] = _mm512_dpbusd_epi32(sum_hi16[t], hi16, _mm512_set1_epi32(quads[2 * v + 1] as i32));
                }
            }
            let dw = _mm512_cvtph_ps(_mm256_loadu_si256(sc.as_ptr().cast()));
            for t in 0..T {
                let sums = _mm512_add_epi32(sum_lo[t], _mm512_srai_epi32::<4>(sum_hi16[t]));
                let scale = _mm512_mul_ps(dw, _mm512_set1_ps(xs[t].scales[b]));
                acc[t][b & 1] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sums), scale, acc[t][b & 1]);
            }
        }
    }
    acc.map(|acc| acc.map(|[even, odd]| _mm512_add_ps(even, odd)))
}

/// The unsigned 5-bit quants (0..31) of quads `2v` and `2v + 1` of a Q5_0/Q5_1 block of 16
/// rows: the low and high nibbles of quant line `v`, plus 16 where the element's fifth bit is
/// set in the block's fifth-bit line `high` (byte `i` of a lane holds the bit of element
/// `4k + i` at bit `k`, see `repack.rs`): one byte test per quad gives the mask.
///
/// # Safety
/// The CPU must support AVX-512 F/BW; `v < 4`.
#[target_feature(enable = "avx512f,avx512bw")]
#[inline]
pub(super) unsafe fn q5_line_quants(line: &Line, high: __m512i, v: usize) -> (__m512i, __m512i) {
    let low = _mm512_set1_epi8(0x0f);
    let sixteen = _mm512_set1_epi8(16);
    let q = _mm512_load_si512(line.0.as_ptr().cast());
    let lo = _mm512_and_si512(q, low);
    let hi = _mm512_and_si512(_mm512_srli_epi16::<4>(q), low);
    let m_lo = _mm512_test_epi8_mask(high, _mm512_set1_epi8(1 << (2 * v)));
    let m_hi = _mm512_test_epi8_mask(high, _mm512_set1_epi8((2u8 << (2 * v)) as i8));
    (
        _mm512_mask_add_epi8(lo, m_lo, lo, sixteen),
        _mm512_mask_add_epi8(hi, m_hi, hi, sixteen),
    )
}

/// Quads `2v` and `2v + 1` (unsigned quants) of a block of a 32-element format of 16 rows:
/// Q8_0's two lines as stored (q + 128), Q5's (`FIFTH`) quant line `v` with its fifth bits,
/// Q4_1's quant line `v` split into its nibbles.
#[target_feature(enable = "avx512f,avx512bw")]
#[inline]
unsafe fn legacy_quads<const Q8: bool, const FIFTH: bool>(
    lines: &[Line],
    high: __m512i,
    v: usize,
) -> (__m512i, __m512i) {
    if Q8 {
        (
            _mm512_load_si512(lines[2 * v].0.as_ptr().cast()),
            _mm512_load_si512(lines[2 * v + 1].0.as_ptr().cast()),
        )
    } else if FIFTH {
        q5_line_quants(&lines[v], high, v)
    } else {
        let low = _mm512_set1_epi8(0x0f);
        let q = _mm512_load_si512(lines[v].0.as_ptr().cast());
        (
            _mm512_and_si512(q, low),
            _mm512_and_si512(_mm512_srli_epi16::<4>(q), low),
        )
    }
}

/// One panel of Q8_0 (`Q8`), Q5_0/Q5_1 (`FIFTH`) or Q4_1 rows against `T` tokens, as
/// [`panel_q4_0_q8_0`]: each block's 8 quads are unpacked once for all tokens, whose integer
/// sums start from their `sums` (the offset: `-128 * sum(y)` for Q8_0's stored q + 128, `-16 *
/// sum(y)` for Q5_0, 0 for Q4_1 and Q5_1) and so equal the scalar specification's. With `MIN`
/// (Q4_1, Q5_1) the rows' mins times
/// the activation's `s` are added per block. The float steps per block are those of the
/// prefill panels (`avx512::micro_legacy`: `(sum * d_y) * d`, then the min), in one
/// accumulator, so a token's result is bit-identical whether a chunk of up to 16 tokens
/// (this kernel) or a longer one (the panels) computes it.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
unsafe fn panel_legacy<const T: usize, const Q8: bool, const FIFTH: bool, const MIN: bool>(
    w: &PackedMatrix,
    xs: &[PackedActivations],
    p: usize,
) -> [__m512; T] {
    let xs = &xs[..T];
    let mut acc = [_mm512_setzero_ps(); T];
    for b in 0..w.cols() / 32 {
        let (sc, lines) = w.legacy_block(p, b);
        prefetch::legacy_block_of::<Q8, FIFTH>(lines, sc);
        let high = if FIFTH {
            _mm512_load_si512(lines[4].0.as_ptr().cast())
        } else {
            _mm512_setzero_si512()
        };
        let mut sum_lo: [__m512i; T] = std::array::from_fn(|t| _mm512_set1_epi32(xs[t].sums[b]));
        let mut sum_hi = [_mm512_setzero_si512(); T];
        for v in 0..4 {
            let (qa, qb) = legacy_quads::<Q8, FIFTH>(lines, high, v);
            for t in 0..T {
                let quads = &xs[t].quads[b * 8..b * 8 + 8];
                sum_lo[t] = _mm512_dpbusd_epi32(sum_lo[t], qa, _mm512_set1_epi32(quads[2 * v] as i32));
                sum_hi[t] = _mm512_dpbusd_epi32(sum_hi[t], qb, _mm512_set1_epi32(quads[2 * v + 1] as i32));
            }
        }
        let dw = _mm512_cvtph_ps(_mm256_loadu_si256(sc.as_ptr().cast()));
        for t in 0..T {
            let sums = _mm512_add_epi32(sum_lo[t], sum_hi[t]);
            let v = _mm512_mul_ps(_mm512_cvtepi32_ps(sums), _mm512_set1_ps(xs[t].scales[b]));
            acc[t] = _mm512_fmadd_ps(v, dw, acc[t]);
            if MIN {
                let m = _mm512_cvtph_ps(_mm256_loadu_si256(sc.as_ptr().add(16).cast()));
                acc[t] = _mm512_fmadd_ps(m, _mm512_set1_ps(xs[t].block_s[b]), acc[t]);
            }
        }
    }
    acc
}

/// One panel of Q8_0 rows against `T` tokens (see [`panel_legacy`]).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn panel_q8_0_q8_0<const T: usize>(w: &PackedMatrix, xs: &[PackedActivations], p: usize) -> [__m512; T] {
    panel_legacy::<T, true, false, false>(w, xs, p)
}

/// One panel of Q5_0 rows against `T` tokens (see [`panel_legacy`]).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn panel_q5_0_q8_0<const T: usize>(w: &PackedMatrix, xs: &[PackedActivations], p: usize) -> [__m512; T] {
    panel_legacy::<T, false, true, false>(w, xs, p)
}

/// One panel of Q5_1 rows against `T` tokens (see [`panel_legacy`]).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn panel_q5_1_q8_1<const T: usize>(w: &PackedMatrix, xs: &[PackedActivations], p: usize) -> [__m512; T] {
    panel_legacy::<T, false, true, true>(w, xs, p)
}

/// One panel of Q4_1 rows against `T` tokens (see [`panel_legacy`]).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn panel_q4_1_q8_1<const T: usize>(w: &PackedMatrix, xs: &[PackedActivations], p: usize) -> [__m512; T] {
    panel_legacy::<T, false, false, true>(w, xs, p)
}

/// `N` panels of Q4_K rows (`ps`) against the whole activation row, super-block by
/// super-block: each panel's arithmetic is the same for every `N`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn panel_q4_k_q8_k<const N: usize>(w: &PackedMatrix, x: &PackedActivations, ps: [usize; N]) -> [__m512; N] {
    let prefetch = prefetch::policy().everywhere();
    let mut acc = [_mm512_setzero_ps(); N];
    for b in 0..w.cols() / 256 {
        let quads = &x.quads[b * 64..b * 64 + 64];
        let dy = _mm512_set1_ps(x.scales[b]);
        for (p, acc) in ps.iter().zip(acc.iter_mut()) {
            let lines = w.q4_k_block(*p, b);
            // Line 0 (`d`, `dmin`) first, so the super-block's lines are read in address order
            // (streaming 11008x4096 at 1 thread: 27.3 -> 28.4 GB/s; docs/kernels.md).
            let dd = _mm512_load_si512(lines[0].0.as_ptr().cast());
            let scales_mins = k_scales_and_mins(lines);
            let mut scaled = _mm512_setzero_si512();
            let mut mins = _mm512_setzero_si512();
            for j in 0..8 {
                if prefetch {
                    prefetch::share::<AHEAD_LINES, Q4K_LINES, 8>(lines.as_ptr(), j);
                }
                let sums = line_sums(
                    &lines[K_HEAD_LINES + 4 * j..K_HEAD_LINES + 4 + 4 * j],
                    &quads[8 * j..8 * j + 8],
                    _mm512_setzero_si512(),
                );
                let (sc, mn) = sub_block_scale_and_min(&scales_mins, j);
                scaled = _mm512_add_epi32(scaled, _mm512_mullo_epi32(sums, sc));
                let y_sum = _mm512_set1_epi32(x.sums[b * 8 + j]);
                mins = _mm512_add_epi32(mins, _mm512_mullo_epi32(mn, y_sum));
            }
            let d = _mm512_cvtph_ps(_mm512_castsi512_si256(dd));
            let dmin = _mm512_cvtph_ps(_mm512_extracti64x4_epi64::<1>(dd));
            *acc = k_super_block_step(*acc, (scaled, d), (mins, dmin), dy);
        }
    }
    acc
}

/// One panel of Q5_K rows against the whole activation rows of `T` tokens (`xs[..T]`): per
/// sub-block, its 8 quads of unsigned 5-bit quants (the quant lines' nibbles plus the fifth
/// bits, as a Q5_0 block's) are unpacked once for all tokens; each token's integer sums are
/// multiplied by the 16 rows' 6-bit scales and summed in integers, its sub-block sums times the
/// mins likewise, and the float steps per super-block are [`panel_q4_k_q8_k`]'s (and the
/// prefill micro-kernel's), the same for every `T`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn panel_q5_k_q8_k<const T: usize>(w: &PackedMatrix, xs: &[PackedActivations], p: usize) -> [__m512; T] {
    let xs = &xs[..T];
    let mut acc = [_mm512_setzero_ps(); T];
    for b in 0..w.cols() / QK_K {
        q5_k_block::<T, true>(w.q5_k_block(p, b), xs, b, &mut acc);
    }
    acc
}

/// `N` panels of Q5_K rows (`ps`) against one token's activation row, super-block by
/// super-block (two streams, as [`panel_q4_k_q8_k`]), with [`panel_q5_k_q8_k`]'s arithmetic.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn panels_q5_k_q8_k<const N: usize>(w: &PackedMatrix, x: &PackedActivations, ps: [usize; N]) -> [__m512; N] {
    let prefetch = prefetch::policy().everywhere();
    let mut acc = [[_mm512_setzero_ps(); 1]; N];
    for b in 0..w.cols() / QK_K {
        for (p, acc) in ps.iter().zip(acc.iter_mut()) {
            let (lines, x) = (w.q5_k_block(*p, b), std::slice::from_ref(x));
            if prefetch {
                q5_k_block::<1, true>(lines, x, b, acc);
            } else {
                q5_k_block::<1, false>(lines, x, b, acc);
            }
        }
    }
    acc.map(|[a]| a)
}

/// Adds super-block `b` of a panel of Q5_K rows, its `lines`, against `T` tokens to `acc`
/// ([`panel_q5_k_q8_k`]'s step); `PREFETCH` reads [`Q5K_AHEAD_LINES`] ahead.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
unsafe fn q5_k_block<const T: usize, const PREFETCH: bool>(
    lines: &[Line],
    xs: &[PackedActivations],
    b: usize,
    acc: &mut [__m512; T],
) {
    let scales_mins = k_scales_and_mins(lines);
    let mut scaled = [_mm512_setzero_si512(); T];
    let mut mins = [_mm512_setzero_si512(); T];
    for j in 0..8 {
        if PREFETCH {
            // Each of the super-block's lines once, four super-blocks ahead (5-6 per sub-block).
            prefetch::share::<Q5K_AHEAD_LINES, Q5K_LINES, 8>(lines.as_ptr(), j);
        }
        let sub = &lines[K_HEAD_LINES + 5 * j..K_HEAD_LINES + 5 + 5 * j];
        let high = _mm512_load_si512(sub[4].0.as_ptr().cast());
        let mut sum_lo = [_mm512_setzero_si512(); T];
        let mut sum_hi = [_mm512_setzero_si512(); T];
        for v in 0..4 {
            let (qa, qb) = q5_line_quants(&sub[v], high, v);
            for t in 0..T {
                let quads = &xs[t].quads[64 * b + 8 * j..64 * b + 8 * j + 8];
                sum_lo[t] = _mm512_dpbusd_epi32(sum_lo[t], qa, _mm512_set1_epi32(quads[2 * v] as i32));
                sum_hi[t] = _mm512_dpbusd_epi32(sum_hi[t], qb, _mm512_set1_epi32(quads[2 * v + 1] as i32));
            }
        }
        // |scale * sum| <= 63 * 32 * 31 * 128 per sub-block: 8 of them fit i32.
        let (sc, mn) = sub_block_scale_and_min(&scales_mins, j);
        for t in 0..T {
            let sums = _mm512_add_epi32(sum_lo[t], sum_hi[t]);
            scaled[t] = _mm512_add_epi32(scaled[t], _mm512_mullo_epi32(sums, sc));
            let y_sum = _mm512_set1_epi32(xs[t].sums[b * 8 + j]);
            mins[t] = _mm512_add_epi32(mins[t], _mm512_mullo_epi32(mn, y_sum));
        }
    }
    let dd = _mm512_load_si512(lines[0].0.as_ptr().cast());
    let d = _mm512_cvtph_ps(_mm512_castsi512_si256(dd));
    let dmin = _mm512_cvtph_ps(_mm512_extracti64x4_epi64::<1>(dd));
    for t in 0..T {
        let dy = _mm512_set1_ps(xs[t].scales[b]);
        acc[t] = k_super_block_step(acc[t], (scaled[t], d), (mins[t], dmin), dy);
    }
}

/// The 6-bit scales and mins of the 16 rows of a Q4_K or Q5_K super-block, unpacked from its
/// three lines of the file's packed bytes (`lines[1..4]`, see `repack.rs`): scales of
/// sub-blocks 0..4, scales 4..8, mins 0..4, mins 4..8; byte `k` of lane `r` holds sub-block
/// `4i + k`'s of row `r` (as `quant::q4k_scales_mins_words` per row).
///
/// # Safety
/// The CPU must support AVX-512 F/BW; `lines` must hold at least 4 lines.
#[target_feature(enable = "avx512f,avx512bw")]
#[inline]
unsafe fn k_scales_and_mins(lines: &[Line]) -> [__m512i; 4] {
    let [a, b, c] = [1, 2, 3].map(|i| _mm512_load_si512(lines[i].0.as_ptr().cast()));
    let (low6, low4, top2) = (_mm512_set1_epi8(0x3f), _mm512_set1_epi8(0x0f), _mm512_set1_epi8(0x30));
    // 16-bit shifts: the bits that cross into the neighbouring byte are masked off.
    let high = |v: __m512i| _mm512_and_si512(_mm512_srli_epi16::<2>(v), top2);
    [
        _mm512_and_si512(a, low6),
        _mm512_or_si512(_mm512_and_si512(c, low4), high(a)),
        _mm512_and_si512(b, low6),
        _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16::<4>(c), low4), high(b)),
    ]
}

/// Sub-block `j`'s scale and min of 16 rows as i32 lanes, from [`k_scales_and_mins`]: byte
/// `j % 4` of each lane, one `vpshufb` each.
///
/// # Safety
/// The CPU must support AVX-512 F/BW; `j < 8`.
#[target_feature(enable = "avx512f,avx512bw")]
#[inline]
unsafe fn sub_block_scale_and_min(scales_mins: &[__m512i; 4], j: usize) -> (__m512i, __m512i) {
    // Per 128-bit lane, i32 lane `k` takes byte `4k + j % 4` and three zeros (index bit 7 set).
    let at = |k: i32| (4 * k + (j % 4) as i32) | 0x8080_8000u32 as i32;
    let pick = _mm512_set4_epi32(at(3), at(2), at(1), at(0));
    (
        _mm512_shuffle_epi8(scales_mins[j / 4], pick),
        _mm512_shuffle_epi8(scales_mins[2 + j / 4], pick),
    )
}

/// The unsigned 6-bit quants (0..63) of the 4 element quads of one Q6_K group of 16 rows,
/// from its two quant lines and its high-bit line (`group[..3]`, see `repack.rs`): quad `k`
/// is the low or high nibbles of quant line `k / 2`, ORed with bits `2k..2k+2` of the high
/// line moved to bits 4..6.
///
/// # Safety
/// The CPU must support AVX-512 F/BW; `group` must hold at least 3 lines.
#[target_feature(enable = "avx512f,avx512bw")]
#[inline]
pub(super) unsafe fn q6_group_quants(group: &[Line]) -> [__m512i; 4] {
    let low = _mm512_set1_epi8(0x0f);
    let high = _mm512_set1_epi8(0x30);
    let q0 = _mm512_load_si512(group[0].0.as_ptr().cast());
    let q1 = _mm512_load_si512(group[1].0.as_ptr().cast());
    let h = _mm512_load_si512(group[2].0.as_ptr().cast());
    // 16-bit shifts: the bits that cross into the neighbouring byte are masked off.
    [
        _mm512_or_si512(
            _mm512_and_si512(q0, low),
            _mm512_and_si512(_mm512_slli_epi16::<4>(h), high),
        ),
        _mm512_or_si512(
            _mm512_and_si512(_mm512_srli_epi16::<4>(q0), low),
            _mm512_and_si512(_mm512_slli_epi16::<2>(h), high),
        ),
        _mm512_or_si512(_mm512_and_si512(q1, low), _mm512_and_si512(h, high)),
        _mm512_or_si512(
            _mm512_and_si512(_mm512_srli_epi16::<4>(q1), low),
            _mm512_and_si512(_mm512_srli_epi16::<2>(h), high),
        ),
    ]
}

/// One panel of Q6_K rows against the whole activation rows of `T` tokens (`xs[..T]`); a
/// token gets the same result alone or in a batch.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn panel_q6_k_q8_k<const T: usize>(w: &PackedMatrix, xs: &[PackedActivations], p: usize) -> [__m512; T] {
    let xs = &xs[..T];
    let mut acc = [_mm512_setzero_ps(); T];
    for b in 0..w.cols() / QK_K {
        q6_k_block::<T, true>(w.q6_k_block(p, b), xs, b, &mut acc);
    }
    acc
}

/// Adds super-block `b` of a panel of Q6_K rows, its `lines`, against `T` tokens (`xs[..T]`)
/// to `acc` ([`panel_q6_k_q8_k`]'s step): each group's quants are unpacked once for all
/// tokens, and per token the arithmetic is the same for every `T`. `PREFETCH` reads the lines
/// [`AHEAD_LINES`] ahead (one stream of panels; two need no prefetch).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
unsafe fn q6_k_block<const T: usize, const PREFETCH: bool>(
    lines: &[Line],
    xs: &[PackedActivations],
    b: usize,
    acc: &mut [__m512; T],
) {
    // Line 0 (`d`) first, so the lines are read in address order (as Q4_K's).
    let d = _mm512_cvtph_ps(_mm256_load_si256(lines[0].0.as_ptr().cast()));
    let mut scaled = [_mm512_setzero_si512(); T];
    for g in 0..16 {
        if PREFETCH {
            prefetch::share::<AHEAD_LINES, Q6K_LINES, 16>(lines.as_ptr(), g);
        }
        let q = q6_group_quants(&lines[5 + 3 * g..8 + 3 * g]);
        let sc = _mm512_cvtepi8_epi32(_mm_load_si128(lines[1 + g / 4].0.as_ptr().add(16 * (g % 4)).cast()));
        for t in 0..T {
            let quads = &xs[t].quads[64 * b + 4 * g..64 * b + 4 * g + 4];
            // The offset of 32 as the start: the sum is exactly sum((q - 32) * y).
            let mut sum = _mm512_set1_epi32(-32 * xs[t].sums[16 * b + g]);
            for k in 0..4 {
                sum = _mm512_dpbusd_epi32(sum, q[k], _mm512_set1_epi32(quads[k] as i32));
            }
            scaled[t] = _mm512_add_epi32(scaled[t], _mm512_mullo_epi32(sum, sc));
        }
    }
    for t in 0..T {
        acc[t] = q6_k_super_block_step(acc[t], (scaled[t], d), _mm512_set1_ps(xs[t].scales[b]));
    }
}

/// `N` panels of Q6_K rows (`ps`) against one token's activation row, super-block by
/// super-block, with [`panel_q6_k_q8_k`]'s arithmetic.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn panels_q6_k_q8_k<const N: usize>(w: &PackedMatrix, x: &PackedActivations, ps: [usize; N]) -> [__m512; N] {
    let prefetch = prefetch::policy().everywhere();
    let mut acc = [[_mm512_setzero_ps(); 1]; N];
    for b in 0..w.cols() / QK_K {
        for (p, acc) in ps.iter().zip(acc.iter_mut()) {
            let (lines, x) = (w.q6_k_block(*p, b), std::slice::from_ref(x));
            if prefetch {
                q6_k_block::<1, true>(lines, x, b, acc);
            } else {
                q6_k_block::<1, false>(lines, x, b, acc);
            }
        }
    }
    acc.map(|[a]| a)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::cpu::{CpuFeatures, QMatrix, ThreadPool};
    use crate::quant::quantize_row;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    /// One token of Q4_0 gets the same bits read one, two or four panels at a time (one:
    /// `q4_0_panel_one_token`, two blocks per step; several: `q4_0_panels`), over ranges from
    /// several first panels, of every panel count (so every remainder) and ending mid-panel,
    /// with an odd and an even number of blocks per row.
    #[test]
    fn q4_0_streams_give_the_same_bits() {
        if !CpuFeatures::detect().avx512_vnni {
            eprintln!("skipped: this CPU has no AVX-512 VNNI");
            return;
        }
        for cols in [96, 128] {
            q4_0_streams_agree(cols);
        }
    }

    fn q4_0_streams_agree(cols: usize) {
        let mut rng = StdRng::seed_from_u64(40 + cols as u64);
        let rows = 16 * 10 + 5;
        let w: Vec<f32> = (0..rows * cols).map(|_| rng.random_range(-1.0..1.0)).collect();
        let mut data = vec![0u8; rows * GgmlType::Q4_0.row_bytes(cols as u64).unwrap() as usize];
        quantize_row(GgmlType::Q4_0, &w, &mut data).unwrap();
        let plain = QMatrix::new(GgmlType::Q4_0, rows, cols, &data).unwrap();
        let packed = PackedMatrix::new(&ThreadPool::new(1), &plain).unwrap();
        let x: Vec<f32> = (0..cols).map(|_| rng.random_range(-3.0..3.0)).collect();
        let mut act = vec![0u8; GgmlType::Q8_0.row_bytes(cols as u64).unwrap() as usize];
        quantize_row(GgmlType::Q8_0, &x, &mut act).unwrap();
        let xs = [PackedActivations::new(GgmlType::Q4_0, &act)];
        for first_panel in [0, 1, 3] {
            for n_rows in 1..=rows - PANEL_ROWS * first_panel {
                let products = |streams: usize| {
                    let mut out = vec![f32::NAN; rows];
                    // SAFETY: AVX-512 VNNI checked above; the activations come from a row of
                    // `cols` elements; the rows exist and `out` holds all of them.
                    unsafe { matvec_packed(&packed, &xs, first_panel, n_rows, out.as_mut_ptr(), 0, streams) };
                    out.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
                };
                let one = products(1);
                let range = PANEL_ROWS * first_panel..PANEL_ROWS * first_panel + n_rows;
                assert!(one[range].iter().all(|&v| !f32::from_bits(v).is_nan()));
                for streams in [2, 4] {
                    assert_eq!(
                        products(streams),
                        one,
                        "{streams} streams from panel {first_panel}, {n_rows} rows, {cols} columns"
                    );
                }
            }
        }
    }
}
