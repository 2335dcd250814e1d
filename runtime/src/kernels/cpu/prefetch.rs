//! Software prefetch for the x86 decode kernels over repacked weights (`avx2_packed`,
//! `avx512_gemv`). A panel's blocks, and the panels, lie one after another, so a kernel reads
//! a fixed number of lines after the one it reads now; prefetching there keeps more misses in
//! flight than the hardware prefetchers alone, which stop at 4 KiB boundaries.
//!
//! Measured on one core of this VM (AMD EPYC, AVX-512 VNNI) streaming a 7B model from memory,
//! against `scripts/membw.c`'s plain read of 34 GB/s in 2 MiB pages: Q4_0 decode read 26 GB/s
//! without, 27.5-29 with 64 lines (4 KiB) ahead (tg 6.9 -> 7.3-7.7 t/s, 1 thread); 32 lines
//! gained nothing, 80-128 lines less, and prefetching to L2 only or non-temporally lost.
//! Q6_K gains 3 % from it (7B Q4_K_M), Q4_K nothing at 64, 128 or 180 lines, so its kernels do
//! not prefetch; Q5_K, with more vector work per line, needs four super-blocks ahead. With
//! AVX-512 VNNI, one token of Q4_K, Q5_K or Q6_K reads two streams instead (`avx512_gemv`),
//! which measured faster than one prefetched stream; Q5_K's and Q6_K's prefetch stays for
//! batches.

use super::types::Line;
use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};

/// Lines ahead for every prefetching kernel but Q5_K's: 4 KiB.
pub(super) const AHEAD_LINES: usize = 64;
/// Lines ahead for Q5_K: four super-blocks of 45 lines. Without, one core decoded a matrix
/// streaming from memory at about 22 GB/s (AVX2: 16) against Q4_K's 27.
pub(super) const Q5K_AHEAD_LINES: usize = 180;

/// Prefetches the lines of share `part` of `PARTS` of a block of `TOTAL` lines at `lines`,
/// `AHEAD` lines further on. Each share is one step of a kernel's loop, so the prefetches
/// spread over the block. A prefetch never faults, so past the last panel it only wastes a
/// slot (`wrapping_add`: the address may lie outside the lines).
#[inline(always)]
pub(super) fn share<const AHEAD: usize, const TOTAL: usize, const PARTS: usize>(lines: *const Line, part: usize) {
    for i in TOTAL * part / PARTS..TOTAL * (part + 1) / PARTS {
        // SAFETY: a prefetch is a hint: it never faults and reads nothing into the program.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(lines.wrapping_add(AHEAD + i).cast()) };
    }
}

/// Prefetches a block of a 32-element format (its `N` lines and its row `scales`)
/// [`AHEAD_LINES`] ahead, the scales as many blocks ahead as the lines.
#[inline(always)]
pub(super) fn legacy_block<const N: usize>(lines: &[Line], scales: &[u16]) {
    share::<AHEAD_LINES, N, 1>(lines.as_ptr(), 0);
    let blocks_ahead = AHEAD_LINES / N;
    // SAFETY: as in `share`.
    unsafe { _mm_prefetch::<_MM_HINT_T0>(scales.as_ptr().wrapping_add(blocks_ahead * scales.len()).cast()) };
}

/// [`legacy_block`] for the format flags of the shared legacy kernels: Q8_0's 8 lines, Q5_0's
/// and Q5_1's 5 (`FIFTH`), Q4_1's 4.
#[inline(always)]
pub(super) fn legacy_block_of<const Q8: bool, const FIFTH: bool>(lines: &[Line], scales: &[u16]) {
    match (Q8, FIFTH) {
        (true, _) => legacy_block::<8>(lines, scales),
        (false, true) => legacy_block::<5>(lines, scales),
        (false, false) => legacy_block::<4>(lines, scales),
    }
}
