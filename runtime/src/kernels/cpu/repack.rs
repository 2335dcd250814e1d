//! Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K and Q6_K weights re-laid out in panels of 16 rows
//! ("repacked"), for the AVX-512 VNNI kernels (`avx512_gemv`, the VNNI prefill panels), the
//! AVX2 ones (`avx2_packed`, which also serve AVX-512 CPUs without VNNI) and the NEON ones
//! (`neon_packed`: a line is four 128-bit quarters of 4 row lanes, each `sdot` by element
//! against one activation quad advancing 4 rows).
//!
//! In the file's layout each row's blocks are contiguous, so a `vpdpbusd` lane sees elements
//! of one block and every block needs its own horizontal scale handling. Repacked, one 64-byte
//! line holds 8 elements of the same block of 16 rows (4 bytes per row lane), so one
//! `vpdpbusd` against 4 broadcast activation bytes advances 16 row sums at once and the 16 row
//! scales of a block are one vector. This roughly triples the decode kernel's speed per core
//! (the file layout leaves one core at about 14 GB/s, below what it can read), which is why
//! llama.cpp repacks Q4_0 by default too. With AVX2 only, a line is two 256-bit halves of 8
//! row lanes, each `vpmaddubsw` against the broadcast quad advancing 8 rows at once.
//!
//! The price is a copy: the repacked weights live in anonymous memory instead of being used
//! in place from the mapping (pages not shared with other processes). Repacking is a nibble
//! shuffle (Q8_0, Q5's fifth bits: a copy) on all threads: this file's scalar functions are
//! the specification, `avx2_repack` writes whole panels' nibble lines in vector lanes
//! ([`VectorPlan`]); which types are repacked by default is decided by
//! `dispatch::repack_by_default`.
//!
//! Quants, for every type but Q8_0: a *quant line* covers 8 consecutive elements of a block of the 16
//! rows of a panel (rows `16p..16p+16`, missing rows zero): in lane `r` (bytes `4r..4r+4`),
//! byte `i` holds element `i` in its low nibble and element `4 + i` in its high nibble (the
//! unsigned 0..15 quants of the file; Q6_K: their low 4 bits).
//!
//! Q4_0, for panel `p` and block `b` of `nb`: `scales[(p * nb + b) * 16 + r]` is the f16 scale
//! of row `16p + r`, and `lines[(p * nb + b) * 4 + v]` the quant line of elements `8v..8v+8`.
//!
//! Q4_1: the 4 quant lines of Q4_0, and 32 scales per block as Q5_1's (`d`, then the min `m`).
//!
//! Q5_0 and Q5_1, for panel `p` and block `b`: 5 lines from `lines[(p * nb + b) * 5]`: the 4
//! quant lines of the low 4 bits, as Q4_0's, then a *fifth-bit line*: in lane `r`, byte `i`
//! holds at bit `k` the fifth bit of element `4k + i` (quad `k`: the low nibbles of quant line
//! `k / 2` for even `k`, the high ones for odd). So one test of bit `k` (AVX-512) or one shift
//! of bit `k` to bit 4 (AVX2) lines up with quad `k`'s nibbles.
//! Scales as Q4_0's, Q5_1 with 32 per block: `scales[(p * nb + b) * 32 + r]` is `d` and
//! `scales[(p * nb + b) * 32 + 16 + r]` the min `m` of row `16p + r`.
//!
//! Q8_0, for panel `p` and block `b`: scales as Q4_0's, and 8 lines from `lines[(p * nb + b) *
//! 8]`, line `k` holding quad `k` (elements `4k..4k+4`) of the 16 rows, lane `r` the 4 quants of
//! row `16p + r` biased to unsigned (`q + 128`, i.e. `q ^ 0x80`): the u8 operand `vpdpbusd`
//! takes as it is, the bias undone by the start value `-128 * sum(y)`.
//!
//! Q4_K, for panel `p` and super-block `b`: [`Q4K_LINES`] lines from
//! `lines[(p * nb + b) * Q4K_LINES]`: one line of the 16 f16 `d` then the 16 f16 `dmin`; three
//! lines of the file's 12 bytes of packed 6-bit scales and mins, lane `r` of line `1 + i`
//! holding bytes `4i..4i+4` of row `16p + r`'s (the kernels unpack them per super-block, as
//! `quant::q4k_scales_mins_words` does: byte `k` of lane `r` of `A & 63` is the scale of
//! sub-block `k`, of `(C & 15) | ((A >> 2) & 48)` of sub-block `4 + k`, with `A`, `B`, `C`
//! the three lines and `B`, `C >> 4` giving the mins alike); then the 32 quant lines of
//! elements `8v..8v+8`. So a super-block's panel is exactly its 16 rows' file bytes (the
//! scales unpacked to bytes took a line more: 2.8 % more to read per token).
//!
//! Q5_K, for panel `p` and super-block `b`: [`Q5K_LINES`] lines from
//! `lines[(p * nb + b) * Q5K_LINES]`: Q4_K's first 4 lines (`d`/`dmin`, scales and mins), then
//! per sub-block `j` of 32 elements 5 lines from `4 + 5j`, laid out as a Q5_0 block: the 4 quant
//! lines of elements `32j + 8v..32j + 8v + 8` (low 4 bits) and a fifth-bit line, whose lane `r`
//! byte `i` holds at bit `k` the fifth bit of element `32j + 4k + i`. So a sub-block's quants
//! come out of the same per-quad bit test (AVX-512, NEON) or shift (AVX2) as Q5_0's, and its
//! scale and min are Q4_K's. (The file keeps the fifth bit of element `32j + l` at bit `j` of
//! `qh[l]`; packing moves bit `j` of four `qh` bytes at a time.)
//!
//! Q6_K, for panel `p` and super-block `b`: [`Q6K_LINES`] lines from
//! `lines[(p * nb + b) * Q6K_LINES]`: one line whose first 32 bytes are the 16 f16 `d`, four
//! of the i8 group scales as bytes (`[group][row]`: group `g` of row `r` at line `1 + g / 4`,
//! byte `16 * (g % 4) + r`), then per group `g` of 16 elements three lines from `5 + 3g`: the
//! quant lines of elements `16g..16g+8` and `16g+8..16g+16` holding the low 4 bits of the
//! unsigned 6-bit quants (0..63, the file's `q + 32`), and a *high line*: in lane `r`, byte
//! `i` holds in bits `2k..2k+2` the high 2 bits of element `16g + 4k + i`. So
//! `(high << (4 - 2k)) & 0x30` (a right shift by 2 for `k = 3`) lines up with quad `k` of the
//! group's low nibbles, and one OR gives the 6-bit quants of 4 elements of 16 rows.

use super::table::repackable;
use super::types::{
    legacy_lines, legacy_scales, Line, LineBuf, PackedMatrix, PanelBuf, QMatrix, SyncPtr, K_HEAD_LINES, PANEL_ROWS,
    Q4K_LINES, Q5K_LINES, Q6K_LINES,
};
use super::{KernelError, ThreadPool};
use crate::quant::GgmlType;

/// Lane `r` of a quant line from the 8 file bytes at `bytes[..8]` that hold its elements in
/// one nibble half: elements `i` and `4 + i` of the line come from bytes `i` and `4 + i`, low
/// nibbles when `high` is false, else high nibbles (the file keeps element `e` and `e + 16`
/// (Q4_0), `e + 32` (Q4_K) or `e + 64` (Q6_K's low 4 bits) in the two nibbles of one byte). Four lanes' bytes at once as a
/// u32: this is the whole cost of repacking, so it must run at memory speed.
#[inline(always)]
fn put_lane(line: &mut Line, r: usize, bytes: &[u8], high: bool) {
    let bytes = u64::from_le_bytes(*bytes.first_chunk::<8>().expect("8 file bytes"));
    let (lo, hi) = (bytes as u32, (bytes >> 32) as u32);
    let word = if high {
        ((lo >> 4) & 0x0f0f_0f0f) | (hi & 0xf0f0_f0f0)
    } else {
        (lo & 0x0f0f_0f0f) | ((hi & 0x0f0f_0f0f) << 4)
    };
    line.0[4 * r..4 * r + 4].copy_from_slice(&word.to_le_bytes());
}

/// The low 4 bits of `nibble` to bit 0 of bytes 0..4 (bit `i` to bit `8i`): one multiply, whose
/// 4 shifted copies (by 0, 7, 14, 21) do not overlap, so no carries.
#[inline(always)]
fn spread_quad_bits(nibble: u32) -> u32 {
    ((nibble & 0x0f).wrapping_mul(0x0020_4081)) & 0x0101_0101
}

/// The inverse of [`spread_quad_bits`]: bit 0 of bytes 0..4 of `bytes` to bits 0..4.
fn gather_quad_bits(bytes: u32) -> u32 {
    let b = bytes & 0x0101_0101;
    (b | b >> 7 | b >> 14 | b >> 21) & 0x0f
}

/// The inverse of [`put_lane`]: element `e` of lane `r` of a block's quant lines.
fn quant_of(lines: &[Line], r: usize, e: usize) -> u8 {
    let byte = lines[e / 8].0[4 * r + e % 4];
    if e % 8 < 4 {
        byte & 0x0f
    } else {
        byte >> 4
    }
}

/// Whether this CPU runs kernels for repacked weights: x86-64 with AVX2, FMA and F16C (the
/// AVX2 kernels of `avx2_packed`; AVX-512 VNNI CPUs use `avx512_gemv` and the VNNI panels), and
/// aarch64 (NEON, `neon_packed`, for the types with NEON panels; which types a path reads in
/// packed form: `dispatch::reads_repacked`). Elsewhere nothing is repacked.
pub fn repack_supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        super::Backend::Avx2.is_available()
    }
    #[cfg(target_arch = "aarch64")]
    {
        super::Backend::Neon.is_available()
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        false
    }
}

/// Lines and f16 scales per panel and block of a type with a panel form (k-quants keep their
/// scales in lines).
pub(super) fn per_block(ty: GgmlType) -> (usize, usize) {
    match ty {
        GgmlType::Q4_K => (Q4K_LINES, 0),
        GgmlType::Q5_K => (Q5K_LINES, 0),
        GgmlType::Q6_K => (Q6K_LINES, 0),
        ty => (legacy_lines(ty), legacy_scales(ty)),
    }
}

impl PackedMatrix {
    /// Repacks a matrix of a type with a panel form (the type table's `repack` column; panels
    /// spread over the pool).
    pub fn new(pool: &ThreadPool, w: &QMatrix) -> Result<PackedMatrix, KernelError> {
        PackedMatrix::packed(pool, w, VectorPlan::of(w).as_ref())
    }

    /// [`PackedMatrix::new`], whole panels' nibble quant lines written by the vector path
    /// where `vector` describes them (`Some` only where the CPU has AVX2).
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
    fn packed(pool: &ThreadPool, w: &QMatrix, vector: Option<&VectorPlan>) -> Result<PackedMatrix, KernelError> {
        if !repackable(w.ty) {
            return Err(KernelError::UnsupportedType(w.ty));
        }
        let w = QMatrix::new(w.ty, w.rows, w.cols, w.data)?;
        let nb = w.cols / w.ty.block_size();
        let n_panels = w.rows.div_ceil(PANEL_ROWS);
        let (lines_per_block, scales_per_block) = per_block(w.ty);
        let mut scales = PanelBuf::<u16>::zeroed(n_panels * nb * scales_per_block)?;
        // Zeroed: the lanes of missing rows in the last panel stay zero.
        let mut lines = LineBuf::zeroed(n_panels * nb * lines_per_block)?;
        let (sp, lp) = (SyncPtr(scales.as_mut_ptr()), SyncPtr(lines.as_mut_ptr()));
        let (block_bytes, n_scales) = (w.ty.type_size(), nb * scales_per_block);
        pool.run(n_panels, &|p| {
            let n_lines = nb * lines_per_block;
            // SAFETY: panel p owns lines[p*n_lines..(p+1)*n_lines] and (32-element formats)
            // its nb * scales_per_block scales, which no other task touches; both buffers
            // outlive the pool's `run`.
            let ls = unsafe { std::slice::from_raw_parts_mut(lp.get().add(p * n_lines), n_lines) };
            // SAFETY: as above (an empty slice for the k-quants).
            let sc = unsafe { std::slice::from_raw_parts_mut(sp.get().add(p * n_scales), n_scales) };
            let n_rows = PANEL_ROWS.min(w.rows - p * PANEL_ROWS);
            #[cfg(target_arch = "x86_64")]
            if let (Some(plan), PANEL_ROWS) = (vector, n_rows) {
                let rows: [&[u8]; PANEL_ROWS] = std::array::from_fn(|r| w.row(p * PANEL_ROWS + r));
                // SAFETY: a `VectorPlan` is made only where the CPU has AVX2.
                unsafe { super::avx2_repack::pack_nibble_chunks(&rows, block_bytes, ls, lines_per_block, plan) };
                for b in 0..nb {
                    let (lines, scales) = block_parts(ls, sc, b, (lines_per_block, scales_per_block));
                    for (r, row) in rows.iter().enumerate() {
                        pack_block_rest(w.ty, &row[b * block_bytes..(b + 1) * block_bytes], lines, scales, r);
                    }
                }
                return;
            }
            for r in 0..n_rows {
                for (b, blk) in w.row(p * PANEL_ROWS + r).chunks_exact(block_bytes).enumerate() {
                    let (lines, scales) = block_parts(ls, sc, b, (lines_per_block, scales_per_block));
                    pack_block_rest(w.ty, blk, lines, scales, r);
                    pack_block_nibbles(w.ty, blk, lines, r);
                }
            }
        });
        Ok(PackedMatrix {
            ty: w.ty,
            rows: w.rows,
            cols: w.cols,
            scales,
            lines,
        })
    }

    /// Row `r` back in the file's bytes (the inverse of the repacking; for tests).
    pub fn row_bytes(&self, r: usize) -> Vec<u8> {
        let (p, lane) = (r / PANEL_ROWS, r % PANEL_ROWS);
        let nb = self.cols / self.ty.block_size();
        let bs = self.ty.type_size();
        let mut out = vec![0u8; nb * bs];
        for (b, blk) in out.chunks_exact_mut(bs).enumerate() {
            if self.ty == GgmlType::Q6_K {
                let lines = self.q6_k_block(p, b);
                let q = |e: usize| q6_of(lines, lane, e);
                for n in 0..2 {
                    let e0 = 128 * n;
                    for l in 0..32 {
                        blk[64 * n + l] = (q(e0 + l) & 0x0f) | (q(e0 + 64 + l) << 4);
                        blk[64 * n + 32 + l] = (q(e0 + 32 + l) & 0x0f) | (q(e0 + 96 + l) << 4);
                        blk[128 + 32 * n + l] = (q(e0 + l) >> 4)
                            | ((q(e0 + 32 + l) >> 4) << 2)
                            | ((q(e0 + 64 + l) >> 4) << 4)
                            | ((q(e0 + 96 + l) >> 4) << 6);
                    }
                }
                for g in 0..16 {
                    blk[192 + g] = lines[1 + g / 4].0[16 * (g % 4) + lane];
                }
                blk[208..210].copy_from_slice(&lines[0].0[2 * lane..2 * lane + 2]);
            } else if matches!(self.ty, GgmlType::Q4_K | GgmlType::Q5_K) {
                let q5 = self.ty == GgmlType::Q5_K;
                let lines = if q5 {
                    self.q5_k_block(p, b)
                } else {
                    self.q4_k_block(p, b)
                };
                blk[..2].copy_from_slice(&lines[0].0[2 * lane..2 * lane + 2]);
                blk[2..4].copy_from_slice(&lines[0].0[32 + 2 * lane..32 + 2 * lane + 2]);
                blk[4..16].copy_from_slice(&PackedMatrix::k_packed_scales(lines, lane));
                // Sub-block j's quant lines start at 4 + 4j (Q4_K) or 4 + 5j (Q5_K).
                let per_sub = if q5 { 5 } else { 4 };
                let nibble = |e: usize| quant_of(&lines[K_HEAD_LINES + per_sub * (e / 32)..], lane, e % 32);
                let qs_at = if q5 { 48 } else { 16 };
                for c in 0..4 {
                    for i in 0..32 {
                        blk[qs_at + 32 * c + i] = nibble(64 * c + i) | (nibble(64 * c + 32 + i) << 4);
                    }
                }
                if q5 {
                    // qh[l] bit j: the fifth bit of element 32j + l, at bit l / 4 of byte l % 4
                    // of the lane in sub-block j's fifth-bit line.
                    for (l, qh) in blk[16..48].iter_mut().enumerate() {
                        *qh = (0..8).fold(0u8, |qh, j| {
                            let bits = lines[K_HEAD_LINES + 4 + 5 * j].0[4 * lane + l % 4];
                            qh | (((bits >> (l / 4)) & 1) << j)
                        });
                    }
                }
            } else {
                let (sc, lines) = self.legacy_block(p, b);
                blk[..2].copy_from_slice(&sc[lane].to_le_bytes());
                let lane_bytes =
                    |line: &Line| -> [u8; 4] { line.0[4 * lane..4 * lane + 4].try_into().expect("4 bytes") };
                // Where the nibbles start: after d (Q4_0), d and m (Q4_1), d and qh (Q5_0), d, m
                // and qh (Q5_1).
                let qs_at = match self.ty {
                    GgmlType::Q8_0 => {
                        for (k, line) in lines.iter().enumerate() {
                            let q = u32::from_le_bytes(lane_bytes(line)) ^ 0x8080_8080;
                            blk[2 + 4 * k..6 + 4 * k].copy_from_slice(&q.to_le_bytes());
                        }
                        continue;
                    }
                    GgmlType::Q4_1 => 4,
                    GgmlType::Q5_0 => 6,
                    GgmlType::Q5_1 => 8,
                    _ => 2,
                };
                let fifth_bits = matches!(self.ty, GgmlType::Q5_0 | GgmlType::Q5_1);
                if matches!(self.ty, GgmlType::Q4_1 | GgmlType::Q5_1) {
                    blk[2..4].copy_from_slice(&sc[PANEL_ROWS + lane].to_le_bytes());
                }
                if fifth_bits {
                    let bits = u32::from_le_bytes(lane_bytes(&lines[4]));
                    let qh = (0..8).fold(0u32, |qh, k| qh | gather_quad_bits(bits >> k) << (4 * k));
                    blk[qs_at - 4..qs_at].copy_from_slice(&qh.to_le_bytes());
                }
                for e in 0..16 {
                    blk[qs_at + e] = quant_of(lines, lane, e) | (quant_of(lines, lane, e + 16) << 4);
                }
            }
        }
        out
    }
}

/// Writes row lane `r` of everything of one block but its nibble quant lines into its panel
/// `scales` and `lines` (the nibble lines: [`pack_block_nibbles`], or the vector path for whole
/// panels). 32-element formats (see [`pack_legacy_rest`]): the scales, Q5_0/Q5_1's fifth-bit
/// line, all of Q8_0. Q4_K (144 file bytes) and Q5_K (176: `d`, `dmin`, 12 scale bytes,
/// `qh[32]`, `qs[128]`): `d`/`dmin`, scale and min lines, Q5_K its fifth-bit lines; Q6_K (210):
/// its `d`, scale and high lines.
#[inline(always)]
fn pack_block_rest(ty: GgmlType, blk: &[u8], lines: &mut [Line], scales: &mut [u16], r: usize) {
    match ty {
        GgmlType::Q4_K => pack_k_scales(blk, lines, r),
        GgmlType::Q5_K => {
            pack_k_scales(blk, lines, r);
            pack_q5k_fifth_bits(blk, lines, r);
        }
        GgmlType::Q6_K => pack_q6k_scales_and_high_bits(blk, lines, r),
        ty => pack_legacy_rest(ty, blk, lines, scales, r),
    }
}

/// Writes row lane `r` of the nibble quant lines of one block (see [`pack_block_rest`]);
/// [`VectorPlan`] says the same for the vector path.
fn pack_block_nibbles(ty: GgmlType, blk: &[u8], lines: &mut [Line], r: usize) {
    match ty {
        GgmlType::Q4_K => pack_k_quants(&blk[16..144], &mut lines[K_HEAD_LINES..], 4, r),
        GgmlType::Q5_K => pack_k_quants(&blk[48..176], &mut lines[K_HEAD_LINES..], 5, r),
        GgmlType::Q6_K => pack_q6k_low_bits(blk, lines, r),
        ty => {
            if let Some(qs_at) = legacy_nibbles_at(ty) {
                let qs = &blk[qs_at..qs_at + 16];
                for (v, line) in lines[..4].iter_mut().enumerate() {
                    put_lane(line, r, &qs[8 * (v % 2)..], v >= 2);
                }
            }
        }
    }
}

/// Where a 32-element format's 16 nibble bytes start: after `d` (Q4_0), `d` and `m` (Q4_1),
/// `d` and `qh` (Q5_0), `d`, `m` and `qh` (Q5_1); Q8_0 has none.
fn legacy_nibbles_at(ty: GgmlType) -> Option<usize> {
    match ty {
        GgmlType::Q4_0 => Some(2),
        GgmlType::Q4_1 => Some(4),
        GgmlType::Q5_0 => Some(6),
        GgmlType::Q5_1 => Some(8),
        _ => None,
    }
}

/// Writes row lane `r` of one block of a 32-element format but its nibble lines into its panel
/// `scales` and `lines` (see the module docs). Q4_0 (18 bytes: f16 `d`, 16 bytes holding elements `e` and
/// `e + 16` in the low and high nibble of byte `e`), Q4_1 (20: `d`, `m`, nibbles), Q5_0 (22:
/// `d`, the u32 `qh` of fifth bits, then the nibbles as Q4_0), Q5_1 (24: `d`, `m`, `qh`,
/// nibbles), Q8_0 (34: `d`, 32 i8).
#[inline(always)]
fn pack_legacy_rest(ty: GgmlType, blk: &[u8], lines: &mut [Line], scales: &mut [u16], r: usize) {
    scales[r] = u16::from_le_bytes([blk[0], blk[1]]);
    match ty {
        GgmlType::Q8_0 => {
            // Quad k of the block, biased to unsigned (q + 128) four bytes at a time.
            for (k, line) in lines.iter_mut().enumerate() {
                let q = u32::from_le_bytes(blk[2 + 4 * k..6 + 4 * k].try_into().expect("4 quants"));
                line.0[4 * r..4 * r + 4].copy_from_slice(&(q ^ 0x8080_8080).to_le_bytes());
            }
        }
        GgmlType::Q4_1 | GgmlType::Q5_1 => scales[PANEL_ROWS + r] = u16::from_le_bytes([blk[2], blk[3]]),
        _ => {}
    }
    if let (GgmlType::Q5_0 | GgmlType::Q5_1, Some(qs_at)) = (ty, legacy_nibbles_at(ty)) {
        // Quad k's 4 fifth bits (a nibble of `qh`, just before the nibbles) to bit k of the
        // lane's 4 bytes.
        let qh = u32::from_le_bytes(blk[qs_at - 4..qs_at].try_into().expect("4 qh bytes"));
        let bits = (0..8).fold(0u32, |bits, k| bits | spread_quad_bits(qh >> (4 * k)) << k);
        lines[4].0[4 * r..4 * r + 4].copy_from_slice(&bits.to_le_bytes());
    }
}

/// Writes row lane `r` of the first 16 bytes of a Q4_K or Q5_K super-block (f16 `d`, `dmin`,
/// the 12 bytes of packed 6-bit scales and mins, as they are) into its [`K_HEAD_LINES`].
fn pack_k_scales(blk: &[u8], lines: &mut [Line], r: usize) {
    lines[0].0[2 * r..2 * r + 2].copy_from_slice(&blk[0..2]);
    lines[0].0[32 + 2 * r..32 + 2 * r + 2].copy_from_slice(&blk[2..4]);
    for (i, line) in lines[1..K_HEAD_LINES].iter_mut().enumerate() {
        line.0[4 * r..4 * r + 4].copy_from_slice(&blk[4 + 4 * i..8 + 4 * i]);
    }
}

/// Writes row lane `r` of the 128 nibble bytes `qs` of a Q4_K or Q5_K super-block into the
/// quant lines of its 8 sub-blocks, which start every `per_sub` lines of `lines`. File order:
/// 32 bytes per 64 elements, low nibbles the first 32, high nibbles the next.
fn pack_k_quants(qs: &[u8], lines: &mut [Line], per_sub: usize, r: usize) {
    for v in 0..32 {
        let (chunk, at) = (v / 8, 8 * (v % 8));
        put_lane(
            &mut lines[per_sub * (v / 4) + v % 4],
            r,
            &qs[32 * chunk + at % 32..],
            at >= 32,
        );
    }
}

/// Q5_K's fifth-bit lines, one after each sub-block's 4 quant lines.
fn pack_q5k_fifth_bits(blk: &[u8], lines: &mut [Line], r: usize) {
    // Quad k of every sub-block is qh bytes 4k..4k+4 (element 32j + 4k + i at bit j of
    // qh[4k + i]): bit j of each byte to bit k of the lane's bytes, four bytes at a time.
    let qh: [u32; 8] =
        std::array::from_fn(|k| u32::from_le_bytes(blk[16 + 4 * k..20 + 4 * k].try_into().expect("4 qh bytes")));
    for j in 0..8 {
        let bits = (0..8).fold(0u32, |bits, k| bits | ((qh[k] >> j) & 0x0101_0101) << k);
        lines[K_HEAD_LINES + 4 + 5 * j].0[4 * r..4 * r + 4].copy_from_slice(&bits.to_le_bytes());
    }
}

// Q6_K super-blocks (210 file bytes: `ql[128]`, `qh[64]`, i8 `scales[16]`, f16 `d`). In the
// file, each 128-element half `n` keeps element `128n + 32j + l` (`j < 4`, `l < 32`) in nibble
// `j / 2` of `ql[64n + 32(j % 2) + l]` and in bits `2j..2j+2` of `qh[32n + l]`.

/// Q6_K's `d`, scale and high lines.
fn pack_q6k_scales_and_high_bits(blk: &[u8], lines: &mut [Line], r: usize) {
    let qh = &blk[128..192];
    lines[0].0[2 * r..2 * r + 2].copy_from_slice(&blk[208..210]);
    for (g, &sc) in blk[192..208].iter().enumerate() {
        lines[1 + g / 4].0[16 * (g % 4) + r] = sc;
    }
    for (g, group) in lines[5..].chunks_exact_mut(3).enumerate() {
        let (n, j) = (g / 8, (g % 8) / 2);
        // Four elements' 2-bit fields at once: quad k of the group is qh bytes base+4k..+4.
        let base = 32 * n + 16 * (g % 2);
        let mut word = 0u32;
        for k in 0..4 {
            let q = &qh[base + 4 * k..base + 4 * k + 4];
            let bits = u32::from_le_bytes([q[0], q[1], q[2], q[3]]);
            word |= ((bits >> (2 * j)) & 0x0303_0303) << (2 * k);
        }
        group[2].0[4 * r..4 * r + 4].copy_from_slice(&word.to_le_bytes());
    }
}

/// Q6_K's two quant lines (low 4 bits) per group of 16 elements.
fn pack_q6k_low_bits(blk: &[u8], lines: &mut [Line], r: usize) {
    let ql = &blk[..128];
    for (g, group) in lines[5..].chunks_exact_mut(3).enumerate() {
        // Both quant lines of elements 16g..16g+16 lie in one 32-element chunk `j` of half `n`.
        let (n, j) = (g / 8, (g % 8) / 2);
        for (half, line) in group[..2].iter_mut().enumerate() {
            let at = 64 * n + 32 * (j % 2) + 16 * (g % 2) + 8 * half;
            put_lane(line, r, &ql[at..], j >= 2);
        }
    }
}

/// How the vector path (`avx2_repack`) writes the nibble quant lines of a whole panel: in
/// steps of `blocks` blocks (1 for the k-quants, 2 for the 32-element formats), each step
/// `chunks`. Made on x86 with AVX2 only (NEON repacks with the scalar path).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(super) struct VectorPlan {
    pub(super) blocks: usize,
    pub(super) chunks: Vec<NibbleChunk>,
}

/// 32 nibble bytes of a step's blocks, two runs of 16 at the file offsets `at` (from the
/// step's first block), and the step's lines their 8 words go to (`lines_per_block * block +
/// line in the block`), in the order the vector path makes them: the low-nibble word of the
/// chunk's 8-byte group 0 ([`put_lane`] with `high` false), its high-nibble word, then groups
/// 1, 2 and 3 likewise.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(super) struct NibbleChunk {
    pub(super) at: [usize; 2],
    pub(super) lines: [usize; 8],
}

impl VectorPlan {
    /// The plan for `w`'s type, mirroring [`pack_block_nibbles`]; `None` where the CPU has no
    /// AVX2, or the type no nibble lines (Q8_0), or a row an odd number of blocks of a 32-element
    /// format.
    fn of(w: &QMatrix) -> Option<VectorPlan> {
        #[cfg(target_arch = "x86_64")]
        if super::Backend::Avx2.is_available() {
            let (block_bytes, nb) = (w.ty.type_size(), w.cols / w.ty.block_size());
            let lines_per_block = per_block(w.ty).0;
            return match w.ty {
                GgmlType::Q4_K => Some(VectorPlan::k_quants(16, 4)),
                GgmlType::Q5_K => Some(VectorPlan::k_quants(48, 5)),
                GgmlType::Q6_K => Some(VectorPlan::q6_k()),
                ty => legacy_nibbles_at(ty)
                    .filter(|_| nb % 2 == 0)
                    .map(|qs_at| VectorPlan::legacy(qs_at, block_bytes, lines_per_block)),
            };
        }
        let _ = w;
        None
    }

    /// Q4_K's (`qs` at byte 16, 4 lines per sub-block) or Q5_K's (48, 5): chunk `c` is
    /// `qs[32c..32c + 32]`, whose 8-byte group `g` makes line `v = 8c + g` (low nibbles) and
    /// `v = 8c + 4 + g` (high) of the quant lines, at `4 + per_sub * (v / 4) + v % 4`.
    #[cfg(target_arch = "x86_64")]
    fn k_quants(qs_at: usize, per_sub: usize) -> VectorPlan {
        let line = |v: usize| K_HEAD_LINES + per_sub * (v / 4) + v % 4;
        let chunks = (0..4)
            .map(|c| NibbleChunk {
                at: [qs_at + 32 * c, qs_at + 32 * c + 16],
                lines: std::array::from_fn(|d| line(8 * c + 4 * (d % 2) + d / 2)),
            })
            .collect();
        VectorPlan { blocks: 1, chunks }
    }

    /// Q6_K: chunk `(n, m)` is `ql[64n + 32m..][..32]`, whose 8-byte group `q` makes quant line
    /// `q % 2` of group `8n + 2m + q / 2` (low nibbles) and of group `8n + 2m + 4 + q / 2` (high).
    #[cfg(target_arch = "x86_64")]
    fn q6_k() -> VectorPlan {
        let chunks = (0..4)
            .map(|i| {
                let (n, m) = (i / 2, i % 2);
                NibbleChunk {
                    at: [64 * n + 32 * m, 64 * n + 32 * m + 16],
                    lines: std::array::from_fn(|d| {
                        let q = d / 2;
                        let group = 8 * n + 2 * m + 4 * (d % 2) + q / 2;
                        5 + 3 * group + q % 2
                    }),
                }
            })
            .collect();
        VectorPlan { blocks: 1, chunks }
    }

    /// The 32-element formats: one chunk of two blocks' 16 nibble bytes; group 0 of a block
    /// makes its quant lines 0 (low nibbles) and 2 (high), group 1 lines 1 and 3.
    #[cfg(target_arch = "x86_64")]
    fn legacy(qs_at: usize, block_bytes: usize, lines_per_block: usize) -> VectorPlan {
        let lines = std::array::from_fn(|d| lines_per_block * (d / 4) + [0, 2, 1, 3][d % 4]);
        let chunk = NibbleChunk {
            at: [qs_at, block_bytes + qs_at],
            lines,
        };
        VectorPlan {
            blocks: 2,
            chunks: vec![chunk],
        }
    }
}

/// Block `b`'s lines and (32-element formats) scales in a panel's `lines` and `scales`, with
/// `per_block` lines and scales per block.
#[inline(always)]
fn block_parts<'a>(
    lines: &'a mut [Line],
    scales: &'a mut [u16],
    b: usize,
    (n_lines, n_scales): (usize, usize),
) -> (&'a mut [Line], &'a mut [u16]) {
    (
        &mut lines[b * n_lines..(b + 1) * n_lines],
        &mut scales[b * n_scales..(b + 1) * n_scales],
    )
}

/// The inverse of [`pack_q6k_low_bits`] and [`pack_q6k_scales_and_high_bits`] for one element: the unsigned 6-bit quant of element `e`
/// of lane `r` of a super-block's lines.
fn q6_of(lines: &[Line], r: usize, e: usize) -> u8 {
    let (g, k, i) = (e / 16, (e % 16) / 4, e % 4);
    let group = &lines[5 + 3 * g..8 + 3 * g];
    let low = quant_of(&group[..2], r, e % 16);
    let high = (group[2].0[4 * r + i] >> (2 * k)) & 3;
    low | (high << 4)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{rngs::StdRng, Rng, SeedableRng};

    #[test]
    fn repacking_round_trips_every_row() {
        let mut rng = StdRng::seed_from_u64(5);
        let pool = ThreadPool::new(2);
        for (ty, rows, cols) in [
            (GgmlType::Q4_0, 1, 32),
            (GgmlType::Q4_0, 16, 64),
            (GgmlType::Q4_0, 37, 96),
            (GgmlType::Q4_0, 48, 256),
            (GgmlType::Q4_K, 1, 256),
            (GgmlType::Q4_K, 21, 512),
            (GgmlType::Q4_K, 32, 256),
            (GgmlType::Q5_K, 1, 256),
            (GgmlType::Q5_K, 16, 256),
            (GgmlType::Q5_K, 21, 512),
            (GgmlType::Q5_K, 37, 768),
            (GgmlType::Q5_K, 19, 4096),
            (GgmlType::Q6_K, 1, 256),
            (GgmlType::Q6_K, 16, 256),
            (GgmlType::Q6_K, 19, 768),
            (GgmlType::Q6_K, 33, 4096),
            (GgmlType::Q8_0, 1, 32),
            (GgmlType::Q8_0, 16, 64),
            (GgmlType::Q8_0, 37, 96),
            (GgmlType::Q8_0, 19, 512),
            (GgmlType::Q5_0, 1, 32),
            (GgmlType::Q5_0, 16, 64),
            (GgmlType::Q5_0, 37, 160),
            (GgmlType::Q5_0, 21, 512),
            (GgmlType::Q5_1, 1, 32),
            (GgmlType::Q5_1, 16, 96),
            (GgmlType::Q5_1, 37, 64),
            (GgmlType::Q5_1, 23, 512),
            (GgmlType::Q4_1, 1, 32),
            (GgmlType::Q4_1, 16, 96),
            (GgmlType::Q4_1, 37, 64),
            (GgmlType::Q4_1, 23, 512),
        ] {
            let data: Vec<u8> = (0..rows * ty.row_bytes(cols as u64).unwrap() as usize)
                .map(|_| rng.random())
                .collect();
            let w = QMatrix::new(ty, rows, cols, &data).unwrap();
            let p = PackedMatrix::new(&pool, &w).unwrap();
            for r in 0..rows {
                assert_eq!(p.row_bytes(r), w.row(r), "{ty} {rows}x{cols} row {r}");
            }
            // Whole panels hold exactly the file's bytes, which decode reads once per token
            // (but Q6_K's, whose `d` fill half a line: 1 % more).
            if rows % PANEL_ROWS == 0 && ty != GgmlType::Q6_K {
                assert_eq!(p.bytes(), data.len(), "{ty} {rows}x{cols}");
            }
        }
    }

    /// The vector path writes the same lines as the scalar specification: random bytes (any
    /// pattern is a valid block to repack), whole panels and a ragged last one, 1 and 3 threads.
    #[test]
    fn vector_repacking_matches_the_scalar_path() {
        let mut rng = StdRng::seed_from_u64(11);
        let Some(_) = VectorPlan::of(&QMatrix::new(GgmlType::Q4_K, 1, 256, &[0; 144]).unwrap()) else {
            eprintln!("skipped: no vector repacking on this CPU (x86-64 AVX2)");
            return;
        };
        for threads in [1, 3] {
            let pool = ThreadPool::new(threads);
            for ty in [
                GgmlType::Q4_K,
                GgmlType::Q5_K,
                GgmlType::Q6_K,
                GgmlType::Q4_0,
                GgmlType::Q4_1,
                GgmlType::Q5_0,
                GgmlType::Q5_1,
                GgmlType::Q8_0,
            ] {
                // 768 columns: an odd number of 256-element blocks; 96: of 32-element ones.
                for (rows, cols) in [(16, 256), (32, 768), (37, 512), (48, 4096), (32, 96)] {
                    if cols % ty.block_size() != 0 {
                        continue;
                    }
                    let data: Vec<u8> = (0..rows * ty.row_bytes(cols as u64).unwrap() as usize)
                        .map(|_| rng.random())
                        .collect();
                    let w = QMatrix::new(ty, rows, cols, &data).unwrap();
                    let vector = PackedMatrix::new(&pool, &w).unwrap();
                    let scalar = PackedMatrix::packed(&pool, &w, None).unwrap();
                    assert!(
                        vector.scales.as_bytes() == scalar.scales.as_bytes(),
                        "{ty} {rows}x{cols} scales"
                    );
                    assert!(
                        vector.lines.as_bytes() == scalar.lines.as_bytes(),
                        "{ty} {rows}x{cols}, {threads} threads"
                    );
                }
            }
        }
    }

    #[test]
    fn only_types_with_a_panel_form_are_repacked() {
        let pool = ThreadPool::new(1);
        // Float weights have no panel form.
        let data = vec![0u8; 2 * 256];
        let w = QMatrix::new(GgmlType::F16, 1, 256, &data).unwrap();
        assert!(matches!(
            PackedMatrix::new(&pool, &w),
            Err(KernelError::UnsupportedType(_))
        ));
    }
}
