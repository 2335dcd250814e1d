//! AMX-INT8 tiles (Intel Xeon since Sapphire Rapids) for the prefill panels: one tile product
//! (`tdpbssd`, `tdpbsud`) multiplies 16 tokens x `k` activation bytes by `k` x 16 rows of
//! weight bytes into 16 x 16 i32 sums, the work of `4 k` `vpdpbusd` (one core of a Sapphire
//! Rapids class Xeon VM measured 3.3 T int8 multiply-adds per second this way against 0.41 T
//! with `vpdpbusd`). The B operand is the layout of the VNNI panels (`avx512::Panel::q`: each 4
//! consecutive elements of 16 rows in one 64-byte line):
//!
//! - the 32-element formats ([`TileShape::Blocks`]) multiply the panel's unsigned quants as
//!   they are, one block of 32 elements per product ([`Tiles::four_blocks`]);
//! - the k-quants ([`TileShape::SuperBlocks`]) multiply [`TileWeights`]: each super-block of
//!   the panel rebuilt with its group scales folded into the weights, two signed bytes per
//!   weight, so that a super-block is 4 steps of 64 elements without per-group work
//!   ([`Tiles::super_block`]).
//!
//! The activations are laid out once per matmul as A tiles ([`TileActivations`]). The
//! micro-kernels in `avx512.rs` compute the integer sums of the VNNI ones and the same float
//! steps after them, so both give the same bits.
//!
//! Rust has no stable AMX intrinsics (nor feature detection for them), so the instructions are
//! inline assembly here and detection reads CPUID. Linux hands out the 8 KiB tile state only
//! on request (`arch_prctl(ARCH_REQ_XCOMP_PERM)`, Linux 5.16+): without it the first tile
//! instruction faults, so [`available`] asks once per process and says no if the kernel
//! refuses. `EDGEACT_AMX=off` turns the tiles off (to measure the VNNI panels on the same CPU).

use std::arch::asm;
use std::sync::OnceLock;

/// Rows of a tile (and of the 16 x 16 i32 result).
pub(super) const TILE_ROWS: usize = 16;

/// Whether the prefill panels may use AMX-INT8 tiles in this process: CPUID has AMX-TILE and
/// AMX-INT8, the OS granted the tile state, and `EDGEACT_AMX` is not `off`/`0`. Decided once.
pub(super) fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        let off = std::env::var("EDGEACT_AMX").is_ok_and(|v| matches!(v.trim(), "off" | "0"));
        !off && cpu_has_amx_int8() && os_grants_tile_state()
    })
}

fn cpu_has_amx_int8() -> bool {
    use std::arch::x86_64::{__cpuid, __cpuid_count};
    // CPUID leaf 7, sub-leaf 0, EDX: bit 24 AMX-TILE, bit 25 AMX-INT8.
    // SAFETY: CPUID exists on every x86_64 CPU (newer Rust marks these intrinsics safe; the
    // workspace's minimum Rust, 1.89, does not).
    #[allow(unused_unsafe)]
    let (max_leaf, edx) = unsafe { (__cpuid(0).eax, __cpuid_count(7, 0).edx) };
    if max_leaf < 7 {
        return false;
    }
    edx & (1 << 24) != 0 && edx & (1 << 25) != 0
}

#[cfg(target_os = "linux")]
fn os_grants_tile_state() -> bool {
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: arch_prctl with this code only asks for a permission; it reads and writes no
    // memory of ours. A kernel without it (before 5.16) returns an error.
    unsafe { libc::syscall(libc::SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0 }
}

#[cfg(not(target_os = "linux"))]
fn os_grants_tile_state() -> bool {
    false
}

/// What a thread's tiles multiply: the k-quants' super-blocks in steps of 64 elements
/// ([`Tiles::super_block`]), or the 32-element blocks of the other formats
/// ([`Tiles::blocks`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TileShape {
    SuperBlocks,
    Blocks,
}

impl TileShape {
    /// Elements per tile product.
    fn k(self) -> usize {
        match self {
            TileShape::SuperBlocks => 64,
            TileShape::Blocks => 32,
        }
    }
}

/// The palette-1 tile configuration: tiles 0-3 16 x 16 i32 sums, 4-5 16 tokens x `k` activation
/// bytes, 6-7 `k / 4` lines of 64 weight bytes (`k` of the [`TileShape`]).
#[repr(C, align(64))]
struct TileConfig([u8; 64]);

impl TileConfig {
    fn new(shape: TileShape) -> TileConfig {
        let k = shape.k();
        let mut c = [0u8; 64];
        c[0] = 1; // palette
        for i in 0..8 {
            let (rows, bytes_per_row) = match i {
                0..=3 => (TILE_ROWS, 64),
                4 | 5 => (TILE_ROWS, k),
                _ => (k / 4, 64),
            };
            // Bytes per row of tile i at 16 + 2 i, rows at 48 + i.
            c[16 + 2 * i..18 + 2 * i].copy_from_slice(&(bytes_per_row as u16).to_le_bytes());
            c[48 + i] = rows as u8;
        }
        TileConfig(c)
    }
}

/// The 16 x 16 i32 sums of one tile product: `[t * 16 + r]` for token `t`, row `r`.
pub(super) type TileSums = [i32; 256];

/// Bytes of one A tile (16 tokens x 64 activation bytes) or B tile (16 lines of 64 bytes) of
/// [`TileShape::SuperBlocks`].
pub(super) const TILE_BYTES: usize = 1024;

/// Bytes of one A tile (16 tokens x 32 activation bytes) or B tile (8 lines of 64 bytes) of
/// [`TileShape::Blocks`]: a block of 16 rows of the VNNI panel.
pub(super) const BLOCK_TILE_BYTES: usize = 512;

/// Bytes of a super-block (256 elements) of a [`TileWeights`] panel: 4 steps of 64 elements,
/// each a low and a high B tile.
const SUPER_BLOCK_BYTES: usize = 8 * TILE_BYTES;

/// The tiles of this thread, configured for one [`TileShape`], released on drop (so that a
/// thread which has finished its panels carries no tile state through context switches).
pub(super) struct Tiles(TileShape);

impl Tiles {
    /// Configures this thread's tiles for `shape`.
    ///
    /// # Safety
    /// [`available`] must have returned true.
    pub(super) unsafe fn configure(shape: TileShape) -> Tiles {
        let cfg = TileConfig::new(shape);
        // SAFETY: the caller checked AMX and the OS grant; `cfg` is a valid palette-1
        // configuration (rows <= 16, bytes per row <= 64) aligned to 64 bytes.
        unsafe { asm!("ldtilecfg [{}]", in(reg) cfg.0.as_ptr(), options(nostack, readonly)) };
        Tiles(shape)
    }

    /// Four consecutive 32-element blocks for one tile of 16 tokens: `sums[j][16 t + r]` = the
    /// sum over the block's elements of `a` (i8, token `t`) times `b` (u8, row `r`).
    ///
    /// `a` is the first block's A tile in a [`TileActivations`] of blocks (the others follow
    /// it, 512 bytes each), `b` the first block's 8 lines of a VNNI panel (the others follow).
    ///
    /// # Safety
    /// `a` and `b` must point to 2 KiB of readable memory.
    #[inline(always)]
    pub(super) unsafe fn four_blocks(&self, a: *const u8, b: *const u8, sums: &mut [TileSums; 4]) {
        debug_assert_eq!(self.0, TileShape::Blocks);
        // SAFETY: the tiles are configured for blocks; the caller guarantees the bytes the
        // loads read, and `sums` holds the 4 KiB the stores write.
        unsafe {
            asm!(
                "tilezero tmm0",
                "tilezero tmm1",
                "tilezero tmm2",
                "tilezero tmm3",
                // Block j: A rows of 32 bytes at +512 j, B lines of 64 bytes at +512 j; two A
                // and two B tiles alternate, so a load does not wait for the product before.
                "tileloadd tmm4, [{a} + {row} * 1]",
                "tileloadd tmm6, [{b} + {line} * 1]",
                "tdpbsud tmm0, tmm4, tmm6",
                "tileloadd tmm5, [{a} + {row} * 1 + 512]",
                "tileloadd tmm7, [{b} + {line} * 1 + 512]",
                "tdpbsud tmm1, tmm5, tmm7",
                "tileloadd tmm4, [{a} + {row} * 1 + 1024]",
                "tileloadd tmm6, [{b} + {line} * 1 + 1024]",
                "tdpbsud tmm2, tmm4, tmm6",
                "tileloadd tmm5, [{a} + {row} * 1 + 1536]",
                "tileloadd tmm7, [{b} + {line} * 1 + 1536]",
                "tdpbsud tmm3, tmm5, tmm7",
                "tilestored [{c} + {line} * 1], tmm0",
                "tilestored [{c} + {line} * 1 + 1024], tmm1",
                "tilestored [{c} + {line} * 1 + 2048], tmm2",
                "tilestored [{c} + {line} * 1 + 3072], tmm3",
                a = in(reg) a,
                b = in(reg) b,
                c = in(reg) sums.as_mut_ptr(),
                row = in(reg) 32usize,
                line = in(reg) 64usize,
                options(nostack),
            )
        };
    }

    /// [`Tiles::four_blocks`] for one block.
    ///
    /// # Safety
    /// `a` and `b` must point to 512 bytes of readable memory.
    #[inline(always)]
    pub(super) unsafe fn one_block(&self, a: *const u8, b: *const u8, sums: &mut TileSums) {
        debug_assert_eq!(self.0, TileShape::Blocks);
        // SAFETY: as `four_blocks`, for one block.
        unsafe {
            asm!(
                "tilezero tmm0",
                "tileloadd tmm4, [{a} + {row} * 1]",
                "tileloadd tmm6, [{b} + {line} * 1]",
                "tdpbsud tmm0, tmm4, tmm6",
                "tilestored [{c} + {line} * 1], tmm0",
                a = in(reg) a,
                b = in(reg) b,
                c = in(reg) sums.as_mut_ptr(),
                row = in(reg) 32usize,
                line = in(reg) 64usize,
                options(nostack),
            )
        };
    }

    /// One super-block of 256 elements for two tiles of 16 tokens: `sums[2 i]` and
    /// `sums[2 i + 1]` receive, for token tile `i`, the products with the low and the high
    /// weight bytes (`TileWeights`): the exact super-block sum of token `t` and row `r` is
    /// `sums[2 i][16 t + r] + 64 * sums[2 i + 1][16 t + r]`.
    ///
    /// `a[i]` is the super-block's first A tile of token tile `i` in a [`TileActivations`]
    /// (four tiles follow one another), `b` the super-block's 8 KiB of a [`TileWeights`].
    ///
    /// # Safety
    /// `a[0]`, `a[1]` must point to 4 KiB, `b` to 8 KiB of readable memory.
    #[inline(always)]
    pub(super) unsafe fn super_block(&self, a: [*const u8; 2], b: *const u8, sums: &mut [TileSums; 4]) {
        debug_assert_eq!(self.0, TileShape::SuperBlocks);
        // SAFETY: the tiles are configured (`configure`); the caller guarantees the bytes the
        // loads read, and `sums` holds the 4 KiB the stores write.
        unsafe {
            asm!(
                "tilezero tmm0",
                "tilezero tmm1",
                "tilezero tmm2",
                "tilezero tmm3",
                // Step k: A tiles at +1024 k, the low and high B tiles at +2048 k, +2048 k + 1024.
                "tileloadd tmm4, [{a0} + {line} * 1]",
                "tileloadd tmm5, [{a1} + {line} * 1]",
                "tileloadd tmm6, [{b} + {line} * 1]",
                "tileloadd tmm7, [{b} + {line} * 1 + 1024]",
                "tdpbssd tmm0, tmm4, tmm6",
                "tdpbssd tmm1, tmm4, tmm7",
                "tdpbssd tmm2, tmm5, tmm6",
                "tdpbssd tmm3, tmm5, tmm7",
                "tileloadd tmm4, [{a0} + {line} * 1 + 1024]",
                "tileloadd tmm5, [{a1} + {line} * 1 + 1024]",
                "tileloadd tmm6, [{b} + {line} * 1 + 2048]",
                "tileloadd tmm7, [{b} + {line} * 1 + 3072]",
                "tdpbssd tmm0, tmm4, tmm6",
                "tdpbssd tmm1, tmm4, tmm7",
                "tdpbssd tmm2, tmm5, tmm6",
                "tdpbssd tmm3, tmm5, tmm7",
                "tileloadd tmm4, [{a0} + {line} * 1 + 2048]",
                "tileloadd tmm5, [{a1} + {line} * 1 + 2048]",
                "tileloadd tmm6, [{b} + {line} * 1 + 4096]",
                "tileloadd tmm7, [{b} + {line} * 1 + 5120]",
                "tdpbssd tmm0, tmm4, tmm6",
                "tdpbssd tmm1, tmm4, tmm7",
                "tdpbssd tmm2, tmm5, tmm6",
                "tdpbssd tmm3, tmm5, tmm7",
                "tileloadd tmm4, [{a0} + {line} * 1 + 3072]",
                "tileloadd tmm5, [{a1} + {line} * 1 + 3072]",
                "tileloadd tmm6, [{b} + {line} * 1 + 6144]",
                "tileloadd tmm7, [{b} + {line} * 1 + 7168]",
                "tdpbssd tmm0, tmm4, tmm6",
                "tdpbssd tmm1, tmm4, tmm7",
                "tdpbssd tmm2, tmm5, tmm6",
                "tdpbssd tmm3, tmm5, tmm7",
                "tilestored [{c} + {line} * 1], tmm0",
                "tilestored [{c} + {line} * 1 + 1024], tmm1",
                "tilestored [{c} + {line} * 1 + 2048], tmm2",
                "tilestored [{c} + {line} * 1 + 3072], tmm3",
                a0 = in(reg) a[0],
                a1 = in(reg) a[1],
                b = in(reg) b,
                c = in(reg) sums.as_mut_ptr(),
                line = in(reg) 64usize,
                options(nostack),
            )
        };
    }
}

/// The activations of one matmul laid out as A tiles, so that a tile load reads its bytes in
/// a row: Q8_K activations per tile of 16 tokens (the token count rounded up to an even number
/// of tiles, the missing tokens zero) and step of 64 elements, 16 rows of 64 quant bytes
/// ([`TileShape::SuperBlocks`]); Q8_0/Q8_1 activations per whole tile of 16 tokens and block,
/// 16 rows of 32 quant bytes ([`TileShape::Blocks`]).
pub(super) struct TileActivations {
    bytes: Vec<u8>,
    steps: usize,
    step_bytes: usize,
    /// The Q8_K scale `d` of every token and super-block, token-major.
    scales: Vec<f32>,
    super_blocks: usize,
}

impl TileActivations {
    /// Lays out `n_tokens` Q8_K rows of `cols` elements, `arb` bytes apart in `acts`.
    pub(super) fn from_q8_k(acts: &[u8], arb: usize, n_tokens: usize, cols: usize) -> TileActivations {
        const Q8_K: usize = 292; // f32 d, 256 quants, 16 i16 sums
        let steps = cols / 64;
        let tiles = n_tokens.div_ceil(2 * TILE_ROWS) * 2;
        let mut bytes = vec![0u8; tiles * steps * TILE_BYTES];
        let super_blocks = cols / 256;
        let mut scales = Vec::with_capacity(n_tokens * super_blocks);
        for (t, row) in acts.chunks_exact(arb).take(n_tokens).enumerate() {
            for (sb, blk) in row.chunks_exact(Q8_K).take(super_blocks).enumerate() {
                scales.push(f32::from_le_bytes([blk[0], blk[1], blk[2], blk[3]]));
                for k in 0..4 {
                    let at = ((t / TILE_ROWS * steps + sb * 4 + k) * TILE_ROWS + t % TILE_ROWS) * 64;
                    bytes[at..at + 64].copy_from_slice(&blk[4 + 64 * k..4 + 64 * (k + 1)]);
                }
            }
        }
        TileActivations {
            bytes,
            steps,
            step_bytes: TILE_BYTES,
            scales,
            super_blocks,
        }
    }

    /// Lays out the first `n_tokens / 16 * 16` of `n_tokens` rows of 32-element blocks of
    /// `block_bytes` bytes (quants at `quants`: Q8_0's 2, Q8_1's 4), `arb` bytes apart in
    /// `acts`, of `cols` elements each.
    pub(super) fn from_blocks(
        acts: &[u8],
        arb: usize,
        n_tokens: usize,
        cols: usize,
        (block_bytes, quants): (usize, usize),
    ) -> TileActivations {
        let steps = cols / 32;
        let tiles = n_tokens / TILE_ROWS;
        let mut bytes = vec![0u8; tiles * steps * BLOCK_TILE_BYTES];
        for (t, row) in acts.chunks_exact(arb).take(tiles * TILE_ROWS).enumerate() {
            for (b, blk) in row.chunks_exact(block_bytes).take(steps).enumerate() {
                let at = ((t / TILE_ROWS * steps + b) * TILE_ROWS + t % TILE_ROWS) * 32;
                bytes[at..at + 32].copy_from_slice(&blk[quants..quants + 32]);
            }
        }
        TileActivations {
            bytes,
            steps,
            step_bytes: BLOCK_TILE_BYTES,
            scales: Vec::new(),
            super_blocks: 0,
        }
    }

    /// Whole tiles of 16 tokens held.
    pub(super) fn tiles(&self) -> usize {
        self.bytes.len() / (self.steps * self.step_bytes).max(1)
    }

    /// The A tile of block `b` for token tile `tile` (of a layout made by
    /// [`TileActivations::from_blocks`]); the tile's later blocks follow it.
    pub(super) fn block(&self, tile: usize, b: usize) -> *const u8 {
        debug_assert_eq!(self.step_bytes, BLOCK_TILE_BYTES);
        self.bytes[(tile * self.steps + b) * BLOCK_TILE_BYTES..].as_ptr()
    }

    /// The Q8_K scale `d` of token `t`'s super-block `sb`.
    pub(super) fn scale(&self, t: usize, sb: usize) -> f32 {
        self.scales[t * self.super_blocks + sb]
    }

    /// The first A tile of super-block `sb` for token tile `tile`.
    pub(super) fn super_block(&self, tile: usize, sb: usize) -> *const u8 {
        debug_assert_eq!(self.step_bytes, TILE_BYTES);
        self.bytes[(tile * self.steps + sb * 4) * TILE_BYTES..].as_ptr()
    }
}

/// One super-block (256 elements) of a panel of 16 rows of k-quant weights laid out as B
/// tiles: 4 steps of 64 elements, each a low and a high tile. Each quant times its group scale
/// (minus Q6_K's offset of 32 first), `w = s (q - offset)` with `|w| <= 4096`, is split into
/// two signed bytes `w = lo + 64 hi` (`lo` in -32..=31, `hi` in -64..=64), so that the
/// super-block's integer sum is two tile products and a shift, without a multiply by the
/// group scales per group and token.
#[repr(C, align(64))]
pub(super) struct TileWeights([u8; SUPER_BLOCK_BYTES]);

impl TileWeights {
    pub(super) fn new() -> TileWeights {
        TileWeights([0; SUPER_BLOCK_BYTES])
    }

    /// Builds the super-block from its row-interleaved quads `q` (for each 4 consecutive
    /// elements, 4 unsigned bytes of each of 16 rows: 64 lines of 64 bytes) and its group
    /// scales `scales` (16 i32 per group of `group` elements, `|scale| <= 128`), subtracting
    /// `offset` from each quant.
    ///
    /// # Safety
    /// The CPU must support AVX-512 F/BW.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) unsafe fn build(&mut self, q: &[u8; 4096], scales: &[i32], group: usize, offset: i16) {
        use std::arch::x86_64::*;
        assert!(scales.len() == 16 * 256 / group);
        // Byte j of a line belongs to row j / 4: i16 lane l of the low half to row l / 4,
        // of the high half to row 8 + l / 4.
        let spread_lo = _mm512_set_epi16(
            7, 7, 7, 7, 6, 6, 6, 6, 5, 5, 5, 5, 4, 4, 4, 4, 3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0,
        );
        let spread_hi = _mm512_add_epi16(spread_lo, _mm512_set1_epi16(8));
        let (off, bias, low6) = (_mm512_set1_epi16(offset), _mm512_set1_epi16(32), _mm512_set1_epi16(63));
        let lines_per_group = group / 4;
        let mut sc = (_mm512_setzero_si512(), _mm512_setzero_si512());
        for line in 0..64 {
            if line % lines_per_group == 0 {
                // SAFETY: 16 scales per group, checked above.
                let s = _mm512_loadu_si512(scales.as_ptr().add(line / lines_per_group * 16).cast());
                let s16 = _mm512_castsi256_si512(_mm512_cvtepi32_epi16(s));
                sc = (
                    _mm512_permutexvar_epi16(spread_lo, s16),
                    _mm512_permutexvar_epi16(spread_hi, s16),
                );
            }
            // SAFETY: `line < 64`, so its 64 bytes lie in `q`.
            let v = _mm512_loadu_si512(q.as_ptr().add(line * 64).cast());
            let split = |half: __m256i, s: __m512i| {
                let w = _mm512_mullo_epi16(_mm512_sub_epi16(_mm512_cvtepu8_epi16(half), off), s);
                let lo = _mm512_sub_epi16(_mm512_and_si512(_mm512_add_epi16(w, bias), low6), bias);
                let hi = _mm512_srai_epi16::<6>(_mm512_sub_epi16(w, lo));
                (_mm512_cvtepi16_epi8(lo), _mm512_cvtepi16_epi8(hi))
            };
            let (lo0, hi0) = split(_mm512_castsi512_si256(v), sc.0);
            let (lo1, hi1) = split(_mm512_extracti64x4_epi64::<1>(v), sc.1);
            // Line `line` is line `line % 16` of step `line / 16`: low tile, then high tile.
            let at = (line / 16) * 2 * TILE_BYTES + (line % 16) * 64;
            let dst = self.0.as_mut_ptr();
            // SAFETY: `at + TILE_BYTES + 64 <= SUPER_BLOCK_BYTES`.
            _mm512_storeu_si512(
                dst.add(at).cast(),
                _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo0), lo1),
            );
            _mm512_storeu_si512(
                dst.add(at + TILE_BYTES).cast(),
                _mm512_inserti64x4::<1>(_mm512_castsi256_si512(hi0), hi1),
            );
        }
    }

    /// The 8 KiB of tiles.
    pub(super) fn as_ptr(&self) -> *const u8 {
        self.0.as_ptr()
    }
}

impl Drop for Tiles {
    fn drop(&mut self) {
        // SAFETY: the tiles were configured, so AMX is there and permitted.
        unsafe { asm!("tilerelease", options(nostack, nomem)) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Row-interleaved quads of 16 rows x `cols` random quants below `max`.
    fn quads(seed: u64, cols: usize, max: u8) -> Vec<u8> {
        let mut s = seed;
        (0..cols * 16)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 33) % max as u64) as u8
            })
            .collect()
    }

    /// Quant `k` of row `r` in row-interleaved quads.
    fn quant(q: &[u8], r: usize, k: usize) -> i32 {
        q[(k / 4) * 64 + 4 * r + k % 4] as i32
    }

    #[test]
    fn block_sums_are_the_byte_dot_products() {
        if !available() {
            eprintln!("skipped: no AMX-INT8 on this CPU (or not granted by the OS)");
            return;
        }
        // 1..=9 blocks: whole runs of four and every remainder; 16 tokens.
        for nb in 1..=9 {
            let cols = 32 * nb;
            let q = quads(nb as u64, cols, 255);
            let (block_bytes, quant_at) = (36, 4); // Q8_1's layout
            let arb = nb * block_bytes + 3;
            let acts: Vec<u8> = (0..16 * arb).map(|i| (i * 53 % 256) as u8).collect();
            let a = TileActivations::from_blocks(&acts, arb, 17, cols, (block_bytes, quant_at));
            assert_eq!(a.tiles(), 1);
            // SAFETY: AMX is available.
            let tiles = unsafe { Tiles::configure(TileShape::Blocks) };
            let mut sums = vec![[0i32; 256]; nb];
            let mut b = 0;
            while b < nb {
                let (a, w) = (a.block(0, b), q[b * 512..].as_ptr());
                // SAFETY: the blocks' A tiles and panel lines lie in `a` and `q`.
                unsafe {
                    if nb - b >= 4 {
                        let four: &mut [TileSums; 4] = (&mut sums[b..b + 4]).try_into().expect("four");
                        tiles.four_blocks(a, w, four);
                        b += 4;
                    } else {
                        tiles.one_block(a, w, &mut sums[b]);
                        b += 1;
                    }
                }
            }
            for (b, sums) in sums.iter().enumerate() {
                for t in 0..16 {
                    for r in 0..16 {
                        let want: i32 = (32 * b..32 * (b + 1))
                            .map(|k| {
                                let y = acts[t * arb + b * block_bytes + quant_at + k % 32] as i8 as i32;
                                y * quant(&q, r, k)
                            })
                            .sum();
                        assert_eq!(sums[16 * t + r], want, "nb={nb} b={b} t={t} r={r}");
                    }
                }
            }
        }
    }

    #[test]
    fn super_block_sums_are_the_scaled_integer_dot_products() {
        if !available() {
            eprintln!("skipped: no AMX-INT8 on this CPU (or not granted by the OS)");
            return;
        }
        // Q4_K-like (4-bit quants, scales 0..=63, groups of 32), Q5_K-like, and Q6_K-like
        // (6-bit quants minus 32, signed scales down to -128, groups of 16), with the extremes.
        let cols = 512;
        for (max, group, offset, scale) in [
            (
                16u8,
                32usize,
                0i16,
                (|g: usize, r: usize| ((g * 7 + r * 13) % 64) as i32) as fn(usize, usize) -> i32,
            ),
            (32, 32, 0, |g, r| {
                if (g + r) % 3 == 0 {
                    63
                } else {
                    ((g * 5 + r) % 64) as i32
                }
            }),
            (64, 16, 32, |g, r| {
                if (g + r) % 4 == 0 {
                    -128
                } else {
                    ((g * 11 + r * 3) % 256) as i32 - 128
                }
            }),
        ] {
            let mut q = quads(max as u64, cols, max);
            q[..64].fill(max - 1);
            q[64..128].fill(0);
            let scales: Vec<i32> = (0..cols / group)
                .flat_map(|g| (0..16).map(move |r| scale(g, r)))
                .collect();
            let w: Vec<TileWeights> = (0..cols / 256)
                .map(|sb| {
                    let mut w = TileWeights::new();
                    let q = q[sb * 4096..(sb + 1) * 4096].try_into().expect("4 KiB");
                    let per_sb = 16 * 256 / group;
                    // SAFETY: every AMX CPU has AVX-512 F/BW.
                    unsafe { w.build(q, &scales[sb * per_sb..(sb + 1) * per_sb], group, offset) };
                    w
                })
                .collect();
            let n_tokens = 21; // one full tile and a ragged one
            let arb = cols / 256 * 292 + 7;
            let mut acts = vec![0u8; n_tokens * arb];
            for (i, a) in acts.iter_mut().enumerate() {
                *a = (i * 71 % 256) as u8;
            }
            acts[4..68].fill(0x80); // -128
            let a = TileActivations::from_q8_k(&acts, arb, n_tokens, cols);
            // SAFETY: AMX is available.
            let tiles = unsafe { Tiles::configure(TileShape::SuperBlocks) };
            for sb in 0..cols / 256 {
                let mut sums = [[0i32; 256]; 4];
                // SAFETY: the pointers address a super-block of two token tiles and of the panel.
                unsafe { tiles.super_block([a.super_block(0, sb), a.super_block(1, sb)], w[sb].as_ptr(), &mut sums) };
                for t in 0..n_tokens {
                    for r in 0..16 {
                        let want: i32 = (sb * 256..(sb + 1) * 256)
                            .map(|k| {
                                let y = acts[t * arb + sb * 292 + 4 + k % 256] as i8 as i32;
                                y * scale(k / group, r) * (quant(&q, r, k) - offset as i32)
                            })
                            .sum();
                        let (i, at) = (t / 16, (t % 16) * 16 + r);
                        let got = sums[2 * i][at] + 64 * sums[2 * i + 1][at];
                        assert_eq!(got, want, "max={max} sb={sb} t={t} r={r}");
                    }
                }
            }
        }
    }
}
