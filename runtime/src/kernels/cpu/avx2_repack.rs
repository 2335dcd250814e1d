//! Repacking in AVX2 lanes: the nibble quant lines of a whole 16-row panel, byte-identical to
//! `repack.rs`'s `put_lane` (the specification), which still writes everything else (scales,
//! fifth-bit and Q6_K high lines) and the ragged last panel of a matrix.
//!
//! Why: the scalar path makes 4 bytes of one line per 8 file bytes, one row at a time, so a
//! row scatters 4-byte stores over a block's lines; 7B Q4_K_M repacking spent ~0.9 s of its
//! ~1.9 s (2 threads) there, the rest mostly the kernel zeroing fresh pages. Here one 32-byte
//! load of a row makes that row's 8 words of a chunk at once ([`chunk_words`]); 8 rows' words,
//! transposed ([`transpose8`]), are 8 half lines, each stored whole.

use super::repack::VectorPlan;
use super::types::{Line, PANEL_ROWS};
use std::arch::x86_64::*;

/// `put_lane`'s words of the four 8-byte groups of `x`: dword `2g` the low-nibble word of
/// group `g`, dword `2g + 1` its high-nibble word.
///
/// # Safety
/// AVX2 must be present.
#[target_feature(enable = "avx2")]
unsafe fn chunk_words(x: __m256i) -> __m256i {
    let nibble = _mm256_set1_epi8(0x0f);
    let low = _mm256_and_si256(x, nibble);
    let high = _mm256_and_si256(_mm256_srli_epi64::<4>(x), nibble);
    // In each 64-bit group, the nibbles of bytes 4..8 moved up beside those of bytes 0..4: the
    // low 32 bits are the word (bits 28..32 of `low`/`high` are zero, so nothing spills down).
    let low_words = _mm256_or_si256(low, _mm256_srli_epi64::<28>(low));
    let high_words = _mm256_or_si256(high, _mm256_srli_epi64::<28>(high));
    _mm256_blend_epi32::<0b1010_1010>(low_words, _mm256_slli_epi64::<32>(high_words))
}

/// The 8x8 transpose of 32-bit elements: `out[d]` holds dword `d` of `rows[0..8]`.
///
/// # Safety
/// AVX2 must be present.
#[target_feature(enable = "avx2")]
unsafe fn transpose8(r: [__m256i; 8]) -> [__m256i; 8] {
    let t: [__m256i; 8] = std::array::from_fn(|i| {
        let (a, b) = (r[2 * (i / 2)], r[2 * (i / 2) + 1]);
        if i % 2 == 0 {
            _mm256_unpacklo_epi32(a, b)
        } else {
            _mm256_unpackhi_epi32(a, b)
        }
    });
    // u[4h + c]: dwords c and c + 4 of rows 4h..4h+4 (one per 128-bit half).
    let u: [__m256i; 8] = std::array::from_fn(|i| {
        let (h, c) = (i / 4, i % 4);
        let (a, b) = (t[4 * h + c / 2], t[4 * h + 2 + c / 2]);
        if c % 2 == 0 {
            _mm256_unpacklo_epi64(a, b)
        } else {
            _mm256_unpackhi_epi64(a, b)
        }
    });
    std::array::from_fn(|d| {
        let (a, b) = (u[d % 4], u[4 + d % 4]);
        if d < 4 {
            _mm256_permute2x128_si256::<0x20>(a, b)
        } else {
            _mm256_permute2x128_si256::<0x31>(a, b)
        }
    })
}

/// Writes the nibble quant lines `plan` describes for every block of one whole panel: `rows`
/// are the panel's 16 rows in the file layout (`block_bytes` per block), `lines` its lines
/// (`lines_per_block` per block, as many blocks as the rows have, a multiple of the plan's step).
///
/// # Safety
/// AVX2 must be present.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn pack_nibble_chunks(
    rows: &[&[u8]; PANEL_ROWS],
    block_bytes: usize,
    lines: &mut [Line],
    lines_per_block: usize,
    plan: &VectorPlan,
) {
    let step_lines = plan.blocks * lines_per_block;
    for (step, step_lines) in lines.chunks_exact_mut(step_lines).enumerate() {
        let base = step * plan.blocks * block_bytes;
        for chunk in &plan.chunks {
            let [lo, hi] = chunk.at.map(|at| base + at);
            for half in 0..2 {
                let words: [__m256i; 8] = std::array::from_fn(|i| {
                    let row = rows[8 * half + i];
                    let (lo, hi) = (&row[lo..lo + 16], &row[hi..hi + 16]);
                    // SAFETY: `lo` and `hi` hold 16 bytes each (the slices above are
                    // bounds-checked).
                    let x = unsafe { _mm256_loadu2_m128i(hi.as_ptr().cast(), lo.as_ptr().cast()) };
                    chunk_words(x)
                });
                for (column, &line) in transpose8(words).iter().zip(&chunk.lines) {
                    let lanes = &mut step_lines[line].0[32 * half..32 * half + 32];
                    // SAFETY: `lanes` holds 32 bytes (bounds-checked above).
                    unsafe { _mm256_storeu_si256(lanes.as_mut_ptr().cast(), *column) };
                }
            }
        }
    }
}
