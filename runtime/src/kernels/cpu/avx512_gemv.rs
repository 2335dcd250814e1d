//! AVX-512 VNNI matrix-vector products (decode) over repacked Q4_0 and Q4_K weights
//! ([`PackedMatrix`]): 16 rows per 512-bit vector, one `vpdpbusd` per 8 elements of 16 rows.
//!
//! Q4_0, per block of 32 elements and panel of 16 rows: 4 line loads, 8 nibble masks/shifts,
//! 8 `vpdpbusd` against broadcast activation quads, then one conversion and one FMA with the
//! 16 row scales times the activation scale. Q4_0's offset of 8 enters exactly, as the
//! integer start value `-8 * sum(y)` of each block's row sums.
//!
//! Q4_K, per super-block of 256: the same per sub-block of 32, whose integer sums are
//! multiplied by the 16 rows' 6-bit scales and summed in integers, then one FMA with `d`; the
//! mins times the activation's sub-block sums (from Q8_K's `bsums`) give the `dmin` term.
//! So for both types the integer sums equal the scalar specification's.

use super::repack::{Line, PackedActivations, PackedMatrix, PANEL_ROWS};
use crate::quant::GgmlType;
use std::arch::x86_64::*;

/// `out[i] = row (16 * first_panel + i) of w . x` for the rows `out` covers.
///
/// # Safety
/// The CPU must support AVX-512 F/BW/VL/VNNI and F16C, `x` must come from an activation row of
/// `w.cols()` elements for `w.ty()`, and the rows must exist:
/// `16 * first_panel + out.len() <= w.rows()`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) unsafe fn matvec_packed(w: &PackedMatrix, x: &PackedActivations, first_panel: usize, out: &mut [f32]) {
    debug_assert!(PANEL_ROWS * first_panel + out.len() <= w.rows());
    for (i, o) in out.chunks_mut(PANEL_ROWS).enumerate() {
        let p = first_panel + i;
        let total = if w.ty() == GgmlType::Q4_0 {
            panel_q4_0(w, x, p)
        } else {
            panel_q4_k(w, x, p)
        };
        let mask: __mmask16 = if o.len() == PANEL_ROWS {
            !0
        } else {
            (1u16 << o.len()) - 1
        };
        _mm512_mask_storeu_ps(o.as_mut_ptr(), mask, total);
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

/// One panel of Q4_0 rows against the whole activation row.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn panel_q4_0(w: &PackedMatrix, x: &PackedActivations, p: usize) -> __m512 {
    let mut acc = [_mm512_setzero_ps(); 2];
    for b in 0..w.cols() / 32 {
        let (sc, lines) = w.q4_0_block(p, b);
        let sums = line_sums(lines, &x.quads[b * 8..b * 8 + 8], _mm512_set1_epi32(x.sums[b]));
        let dw = _mm512_cvtph_ps(_mm256_loadu_si256(sc.as_ptr().cast()));
        let scale = _mm512_mul_ps(dw, _mm512_set1_ps(x.scales[b]));
        acc[b & 1] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sums), scale, acc[b & 1]);
    }
    _mm512_add_ps(acc[0], acc[1])
}

/// One panel of Q4_K rows against the whole activation row.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn panel_q4_k(w: &PackedMatrix, x: &PackedActivations, p: usize) -> __m512 {
    let mut acc = _mm512_setzero_ps();
    for b in 0..w.cols() / 256 {
        let lines = w.q4_k_block(p, b);
        // Sub-block j's 16 row bytes of a scale or min line, widened to i32 lanes.
        let byte_lanes = |line: usize, j: usize| {
            _mm512_cvtepu8_epi32(_mm_loadu_si128(lines[line].0.as_ptr().add((j % 4) * 16).cast()))
        };
        let quads = &x.quads[b * 64..b * 64 + 64];
        let mut scaled = _mm512_setzero_si512();
        let mut mins = _mm512_setzero_si512();
        for j in 0..8 {
            let sums = line_sums(
                &lines[5 + 4 * j..9 + 4 * j],
                &quads[8 * j..8 * j + 8],
                _mm512_setzero_si512(),
            );
            scaled = _mm512_add_epi32(scaled, _mm512_mullo_epi32(sums, byte_lanes(1 + j / 4, j)));
            let y_sum = _mm512_set1_epi32(x.sums[b * 8 + j]);
            mins = _mm512_add_epi32(mins, _mm512_mullo_epi32(byte_lanes(3 + j / 4, j), y_sum));
        }
        let dd = _mm512_load_si512(lines[0].0.as_ptr().cast());
        let dy = _mm512_set1_ps(x.scales[b]);
        let d = _mm512_mul_ps(_mm512_cvtph_ps(_mm512_castsi512_si256(dd)), dy);
        let dmin = _mm512_mul_ps(_mm512_cvtph_ps(_mm512_extracti64x4_epi64::<1>(dd)), dy);
        acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(scaled), d, acc);
        acc = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(mins), dmin, acc);
    }
    acc
}
