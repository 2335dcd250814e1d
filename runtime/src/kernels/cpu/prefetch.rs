//! Software prefetch for the x86 decode kernels over repacked weights (`avx2_packed`,
//! `avx512_gemv`) and, on Intel, over the file's layout (`avx2`'s and `avx512`'s tiles for one
//! token, [`file_lines`]). A panel's blocks, and the panels, lie one after another (as a
//! matrix's rows do in the file), so a kernel reads a fixed number of lines after the one it
//! reads now; prefetching there keeps more misses in flight than the hardware prefetchers
//! alone, which stop at 4 KiB boundaries.
//!
//! Where the lines go, and which kernels prefetch, is chosen once per process by CPU vendor
//! from measurement ([`Prefetch`], [`policy`]; `EDGEACT_PREFETCH=l1` or `l2` forces one, to
//! measure another CPU):
//!
//! - AMD (measured on one core of an EPYC Zen 4 VM, AVX-512 VNNI, streaming a 7B model from
//!   memory, against `scripts/membw.c`'s plain read of 34 GB/s in 2 MiB pages): Q4_0 decode
//!   read 26 GB/s without, 27.5-29 with 64 lines (4 KiB) ahead (tg 6.9 -> 7.3-7.7 t/s, 1
//!   thread); 32 lines gained nothing, 80-128 lines less, and prefetching to L2 only or
//!   non-temporally lost; on top of the L1 prefetch, one line in four twice as far ahead into
//!   L2 gains ([`Q4_0_L2_AHEAD_LINES`], [`legacy_block_ahead`]). Q6_K gains 3 % from it (7B
//!   Q4_K_M), Q4_K nothing at 64, 128 or 180 lines, so its kernels do not prefetch; Q5_K, with
//!   more vector work per line, needs four super-blocks ahead. With AVX-512 VNNI, one token of
//!   Q4_K, Q5_K or Q6_K reads two streams instead (`avx512_gemv`), which measured faster than
//!   one prefetched stream; Q5_K's and Q6_K's prefetch stays for batches. So: [`Prefetch::L1`].
//! - Intel (measured on a 2-core Xeon VM with AVX-512 VNNI and AMX, Sapphire Rapids class,
//!   `membw` 11-16 GB/s on one core): without prefetch the two-stream k-quant kernels read
//!   8-9 GB/s on one core against 11-12 with it (Q4_K, Q5_K, Q6_K alike, +25-35 %; 7B Q4_K_M
//!   tg 1.8-2.1 -> 2.5-3.1 t/s at 1 thread, 4.3-4.4 -> 5.9 at 2), and prefetching into L2
//!   rather than L1 reads Q4_0 faster (7B tg 6.1-6.5 -> 6.9-7.1 t/s at 2 threads; AVX2 path
//!   +13-18 % streaming on one core), other formats alike. So: [`Prefetch::L2`].
//!
//! ## One line at a time
//!
//! Every prefetch instruction reads the policy first ([`line`]: [`policy`]'s `OnceLock` is an
//! acquire load, which the compiler keeps inside the loop, so the machine code has the cell's
//! loads and a taken branch before each prefetch). Reading it once per call, the prefetches of a
//! step compiled to a tight loop that issued them back to back, and on the Intel VM one core
//! streamed 11008x4096 matrices from memory (scratch harness, 40 copies, best of 4) at 13.4-13.9
//! GB/s (Q4_K, Q6_K, Q5_K) against 16-18 now, with `membw` at 17-19; Q4_0 16.2 -> 17.1, Q8_0
//! 15.3 -> 16.1, the AVX2 path alike (Q4_0 13.7 -> 16.7). Whole 7B models, tg32, alternating
//! binaries: Q4_K_M 3.3-3.4 -> 3.9-4.3 t/s at 1 thread and 6.4-6.5 -> 7.6 at 2; Q4_0 4.1-4.2 ->
//! 4.3-4.4 and 7.8-7.9 -> 8.0-8.3 (docs/kernels.md "One prefetch at a time"). Other ways of spacing them measured less or nothing: one
//! prefetch beside each line's load (14 GB/s for Q4_K), a store and reload of the address
//! (15.5), a relaxed atomic flag read per line (14), every other line (11, as none), a whole
//! super-block at once (11.5). Why a load and a branch per prefetch beat the rest is not settled
//! (the VM exposes no performance counters); what is measured is that prefetches issued in
//! bursts hold back the demand loads. On AMD the other `l1` kernels go through the same code;
//! the one-token Q4_0 kernel, which runs only under [`Prefetch::L1`], prefetches one line
//! before each line it reads without reading the policy (a Zen 4 core streamed its matrices
//! at 24.0-24.9 GB/s against 23.0-23.3 with the read per line; `avx512_gemv`).

use super::types::{Line, Q5K_LINES};
use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0, _MM_HINT_T1};
use std::sync::OnceLock;

/// Lines ahead for every prefetching kernel but Q5_K's: 4 KiB.
pub(super) const AHEAD_LINES: usize = 64;
/// Lines ahead in [`avx512_gemv`](super::avx512_gemv)'s one-token Q4_0 kernel, which reads one
/// stream of panels under [`Prefetch::L1`]: 8 KiB (one Zen 4 core streaming 11008x4096
/// matrices from memory, alternating in one process: 64 lines 21.0-22.7 GB/s, 96 23.1-23.8,
/// 128 23.6-24.4, 192 23.8-24.9, 256 22.6-24.5).
pub(super) const Q4_0_AHEAD_LINES: usize = 128;
/// Lines ahead at which the same kernel also prefetches each block's first line into L2
/// (`prefetcht1`): 16 KiB, twice [`Q4_0_AHEAD_LINES`], so that a line is on its way to L2
/// before its L1 prefetch asks for it and more misses are in flight than L1's fill buffers
/// hold. One Zen 4 core, 7B Q4_0 tg32 at 1 thread, alternating: 6.72-6.87 t/s without,
/// 7.41-7.59 with (`scripts/membw.c` 32.4-33.4 GB/s between the runs). Every line's or every
/// other line's prefetch into L2 read slower than one per block (bursts again), and 192-384
/// lines ahead measured alike (docs/kernels.md "Q4_0 decode on one core").
pub(super) const Q4_0_L2_AHEAD_LINES: usize = 2 * Q4_0_AHEAD_LINES;
/// Lines ahead in each of [`Prefetch::q4_0_streams`]'s streams where there are several: 2 KiB
/// (Intel VM, 7B Q4_0 tg at 1 thread with four streams: 16-32 lines 4.18-4.29 t/s, 64 lines
/// 4.11-4.22, 128 lines 4.01-4.06, 8 lines 4.03-4.15; with the prefetches one line at a time,
/// 64 lines measured the same as 32: 4.35-4.54 against 4.26-4.56 t/s, six alternating pairs).
pub(super) const STREAM_AHEAD_LINES: usize = 32;
/// Lines ahead for Q5_K: four super-blocks. Without, one core decoded a matrix streaming from
/// memory at about 22 GB/s (AVX2: 16) against Q4_K's 27.
pub(super) const Q5K_AHEAD_LINES: usize = 4 * Q5K_LINES;

/// Bytes ahead for the decode kernels over the file's layout (`avx2`'s and `avx512`'s tiles
/// for one token, quantized and float): a matrix's rows lie one after another in the file, so
/// the stream runs on into the next row (7B Q4_K_M `--no-repack`, Intel VM, 1 thread: 2 KiB
/// 2.64-2.66 t/s, 4 KiB 2.82-2.83, 8 KiB 2.73-2.75).
pub(super) const FILE_AHEAD_BYTES: usize = 4096;

/// Whether a file-layout tile kernel for `tokens` tokens prefetches its rows ([`file_lines`]):
/// for one token (decode, which streams the weights; several tokens are compute-bound) where
/// the policy prefetches [everywhere](Prefetch::everywhere).
#[inline(always)]
pub(super) fn file_rows(tokens: usize) -> bool {
    tokens == 1 && policy().everywhere()
}

/// For a file-layout kernel whose loop reads `BYTES` contiguous bytes from `start` in steps
/// (at least `BYTES / 64` rounded up of them): prefetches the line of step `step`
/// [`FILE_AHEAD_BYTES`] ahead, one line per step, so that the steps of successive reads cover
/// every line. Past the matrix it only wastes a slot (a prefetch never faults).
#[inline(always)]
pub(super) fn file_lines<const BYTES: usize>(start: *const u8, step: usize) {
    if step < BYTES.div_ceil(64) {
        line(start.wrapping_add(FILE_AHEAD_BYTES + 64 * step).cast());
    }
}

/// Rows ahead that the attention kernels over the KV cache prefetch ([`kv_row`]).
pub(super) const KV_AHEAD_ROWS: usize = 16;

/// Prefetches the `bytes` from `row` on: one head's cached key or value row
/// [`KV_AHEAD_ROWS`] rows ahead of the one an attention kernel reads. Added when the cache was
/// position-major (one head's rows a whole KV row apart, a page each, where the hardware
/// prefetchers stop: 7B Q4_0 tg16 at depth 2048 +15 %); with the head-major cache (contiguous
/// rows) it still measured a little ahead of none (docs/kernels.md "The KV cache layout and the
/// attention kernels").
/// A prefetch never faults: rows past the cache only waste a slot.
#[inline(always)]
pub(super) fn kv_row(row: *const u8, bytes: usize) {
    let mut offset = 0;
    while offset < bytes {
        line(row.wrapping_add(offset).cast());
        offset += 64;
    }
}

/// Prefetches the lines of share `part` of `PARTS` of a block of `TOTAL` lines at `lines`,
/// `AHEAD` lines further on. Each share is one step of a kernel's loop, so the prefetches
/// spread over the block. A prefetch never faults, so past the last panel it only wastes a
/// slot (`wrapping_add`: the address may lie outside the lines).
#[inline(always)]
pub(super) fn share<const AHEAD: usize, const TOTAL: usize, const PARTS: usize>(lines: *const Line, part: usize) {
    for i in TOTAL * part / PARTS..TOTAL * (part + 1) / PARTS {
        line(lines.wrapping_add(AHEAD + i).cast());
    }
}

/// Prefetches the cache line at `p` where the [`policy`] says, reading the policy for this line
/// (a load and a branch before every prefetch instruction: see "One line at a time" above).
#[inline(always)]
fn line(p: *const i8) {
    let to_l2 = policy() == Prefetch::L2;
    // SAFETY: a prefetch is a hint: it never faults and reads nothing into the program.
    unsafe {
        if to_l2 {
            _mm_prefetch::<_MM_HINT_T1>(p)
        } else {
            _mm_prefetch::<_MM_HINT_T0>(p)
        }
    }
}

/// Prefetches a block of a 32-element format (its `N` lines and its row `scales`)
/// [`AHEAD_LINES`] ahead, the scales as many blocks ahead as the lines.
#[inline(always)]
pub(super) fn legacy_block<const N: usize>(lines: &[Line], scales: &[u16]) {
    legacy_block_ahead::<AHEAD_LINES, N>(lines, scales)
}

/// [`legacy_block`] `AHEAD` lines ahead; under [`Prefetch::L1`] also every fourth line
/// `2 * AHEAD` ahead into L2.
#[inline(always)]
pub(super) fn legacy_block_ahead<const AHEAD: usize, const N: usize>(lines: &[Line], scales: &[u16]) {
    if policy() == Prefetch::L1 {
        // As `Q4_0_L2_AHEAD_LINES`: one Zen 4 core streaming from memory, Q8_0 one token
        // +3-5 %, Q4_0 two tokens +4-8 %, four tokens +2-3 % (docs/kernels.md "Q4_0 decode on
        // one core").
        for i in (0..N).step_by(4) {
            // SAFETY: a prefetch is a hint: it never faults and reads nothing into the program.
            unsafe { _mm_prefetch::<_MM_HINT_T1>(lines.as_ptr().wrapping_add(2 * AHEAD + i).cast()) };
        }
    }
    share::<AHEAD, N, 1>(lines.as_ptr(), 0);
    let blocks_ahead = AHEAD / N;
    line(scales.as_ptr().wrapping_add(blocks_ahead * scales.len()).cast());
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

/// Where the decode kernels prefetch on this CPU (see the module documentation for the
/// measurements behind each).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prefetch {
    /// Into L1 (`prefetcht0`), in the kernels that measured faster with it: the 32-element
    /// formats, Q5_K, and Q6_K batches; one token of a k-quant reads two streams without.
    L1,
    /// Into L2 (`prefetcht1`), in every decode kernel over repacked weights, one token of a
    /// k-quant and Q4_K included.
    L2,
}

impl Prefetch {
    /// The name `EDGEACT_PREFETCH` takes.
    pub fn name(self) -> &'static str {
        match self {
            Prefetch::L1 => "l1",
            Prefetch::L2 => "l2",
        }
    }

    /// The policy measured for a CPUID vendor string: [`Prefetch::L2`] for Intel's, else
    /// [`Prefetch::L1`] (measured on AMD; the choice before vendors were told apart).
    fn for_vendor(vendor: &[u8; 12]) -> Prefetch {
        if vendor == INTEL {
            Prefetch::L2
        } else {
            Prefetch::L1
        }
    }

    /// How many panels one token of Q4_0 reads at once on AVX-512 VNNI, block by block, so
    /// that the weights stream from as many places (`avx512_gemv`): four on Intel, each
    /// prefetching [`STREAM_AHEAD_LINES`] ahead (7B tg at 1 thread 3.53-3.64 -> 4.06-4.29 t/s,
    /// the same as or faster than llama.cpp's AMX kernels, 3.99-4.01; eight streams 3.81-3.87);
    /// one on AMD, where two streams measured 2-5 % slower than one prefetched stream.
    pub(super) fn q4_0_streams(self) -> usize {
        match self {
            Prefetch::L1 => 1,
            Prefetch::L2 => 4,
        }
    }

    /// Whether the k-quant kernels that otherwise rely on two streams (one token) or on the
    /// hardware alone (Q4_K) prefetch too, and the file-layout tiles ([`file_lines`]).
    pub(super) fn everywhere(self) -> bool {
        self == Prefetch::L2
    }
}

/// The process-wide policy, chosen once: `EDGEACT_PREFETCH` (`l1` or `l2`) if set, else by
/// CPU vendor. An unknown value is reported on stderr once and the vendor's policy is used.
pub fn policy() -> Prefetch {
    static CHOSEN: OnceLock<Prefetch> = OnceLock::new();
    *CHOSEN.get_or_init(|| {
        let detected = Prefetch::for_vendor(&cpu_vendor());
        match std::env::var("EDGEACT_PREFETCH") {
            Ok(v) if !v.trim().is_empty() => {
                let named = [Prefetch::L1, Prefetch::L2]
                    .into_iter()
                    .find(|p| p.name().eq_ignore_ascii_case(v.trim()));
                named.unwrap_or_else(|| {
                    eprintln!(
                        "edgeact: EDGEACT_PREFETCH={v:?} is not one of l1, l2; using {}",
                        detected.name()
                    );
                    detected
                })
            }
            _ => detected,
        }
    })
}

/// Intel's CPUID vendor string.
const INTEL: &[u8; 12] = b"GenuineIntel";

/// Whether this CPU is an Intel one (`dispatch::CpuFeatures::intel`). Asked once: every
/// matmul call detects the CPU's features, and CPUID is slow (a VM exit under a hypervisor).
pub(super) fn intel() -> bool {
    static INTEL_CPU: OnceLock<bool> = OnceLock::new();
    *INTEL_CPU.get_or_init(|| &cpu_vendor() == INTEL)
}

/// The 12-byte CPUID vendor string (`GenuineIntel`, `AuthenticAMD`, ...).
fn cpu_vendor() -> [u8; 12] {
    // SAFETY: CPUID leaf 0 exists on every x86_64 CPU.
    #[allow(unused_unsafe)]
    let r = unsafe { std::arch::x86_64::__cpuid(0) };
    let mut v = [0u8; 12];
    v[..4].copy_from_slice(&r.ebx.to_le_bytes());
    v[4..8].copy_from_slice(&r.edx.to_le_bytes());
    v[8..].copy_from_slice(&r.ecx.to_le_bytes());
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_follows_the_vendor_measured() {
        assert_eq!(Prefetch::for_vendor(b"GenuineIntel"), Prefetch::L2);
        assert_eq!(Prefetch::for_vendor(b"AuthenticAMD"), Prefetch::L1);
        assert_eq!(Prefetch::for_vendor(b"HygonGenuine"), Prefetch::L1);
        assert!(Prefetch::L2.everywhere() && !Prefetch::L1.everywhere());
    }

    #[test]
    fn the_vendor_string_is_printable_ascii() {
        let v = cpu_vendor();
        assert!(v.iter().all(|b| b.is_ascii_graphic()), "{v:?}");
    }
}
