//! Q4_0, Q4_K and Q6_K weights re-laid out in panels of 16 rows ("repacked"), for the AVX-512 VNNI
//! kernels (`avx512_gemv`, the VNNI prefill panels) and the AVX2 ones (`avx2_packed`, which
//! also serve AVX-512 CPUs without VNNI).
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
//! shuffle of 4 bytes at a time on all threads, so it runs at about the speed memory is
//! touched; which types are repacked by default is decided by `dispatch::repack_by_default`.
//!
//! Quants, for every type: a *quant line* covers 8 consecutive elements of a block of the 16
//! rows of a panel (rows `16p..16p+16`, missing rows zero): in lane `r` (bytes `4r..4r+4`),
//! byte `i` holds element `i` in its low nibble and element `4 + i` in its high nibble (the
//! unsigned 0..15 quants of the file; Q6_K: their low 4 bits).
//!
//! Q4_0, for panel `p` and block `b` of `nb`: `scales[(p * nb + b) * 16 + r]` is the f16 scale
//! of row `16p + r`, and `lines[(p * nb + b) * 4 + v]` the quant line of elements `8v..8v+8`.
//!
//! Q4_K, for panel `p` and super-block `b`: [`Q4K_LINES`] lines from
//! `lines[(p * nb + b) * Q4K_LINES]`: one line of the 16 f16 `d` then the 16 f16 `dmin`, two of
//! the 6-bit sub-block scales as bytes (`[sub-block][row]`), two of the mins (same order),
//! then the 32 quant lines of elements `8v..8v+8`.
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
use super::types::{Line, LineBuf, PackedMatrix, QMatrix, SyncPtr, PANEL_ROWS, Q4K_LINES, Q6K_LINES};
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
/// AVX2 kernels of `avx2_packed`; AVX-512 VNNI CPUs use `avx512_gemv` and the VNNI panels).
/// Elsewhere (NEON, scalar) nothing is repacked.
pub fn repack_supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        super::Backend::Avx2.is_available()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

impl PackedMatrix {
    /// Repacks a Q4_0, Q4_K or Q6_K matrix (panels spread over the pool).
    pub fn new(pool: &ThreadPool, w: &QMatrix) -> Result<PackedMatrix, KernelError> {
        if !repackable(w.ty) {
            return Err(KernelError::UnsupportedType(w.ty));
        }
        let w = QMatrix::new(w.ty, w.rows, w.cols, w.data)?;
        let q4_0 = w.ty == GgmlType::Q4_0;
        let nb = w.cols / w.ty.block_size();
        let n_panels = w.rows.div_ceil(PANEL_ROWS);
        let lines_per_block = match w.ty {
            GgmlType::Q4_0 => 4,
            GgmlType::Q4_K => Q4K_LINES,
            _ => Q6K_LINES,
        };
        let mut scales = vec![0u16; if q4_0 { n_panels * nb * PANEL_ROWS } else { 0 }];
        // Zeroed: the lanes of missing rows in the last panel stay zero.
        let mut lines = LineBuf::zeroed(n_panels * nb * lines_per_block)?;
        let (sp, lp) = (SyncPtr(scales.as_mut_ptr()), SyncPtr(lines.as_mut_ptr()));
        pool.run(n_panels, &|p| {
            let n_lines = nb * lines_per_block;
            // SAFETY: panel p owns lines[p*n_lines..(p+1)*n_lines] and (Q4_0) its nb*16 scales,
            // which no other task touches; both buffers outlive the pool's `run`.
            let ls = unsafe { std::slice::from_raw_parts_mut(lp.get().add(p * n_lines), n_lines) };
            let sc = if q4_0 {
                // SAFETY: as above.
                unsafe { std::slice::from_raw_parts_mut(sp.get().add(p * nb * PANEL_ROWS), nb * PANEL_ROWS) }
            } else {
                &mut []
            };
            for r in 0..PANEL_ROWS.min(w.rows - p * PANEL_ROWS) {
                let row = w.row(p * PANEL_ROWS + r);
                if q4_0 {
                    for ((blk, lines), scale) in row
                        .chunks_exact(18)
                        .zip(ls.chunks_exact_mut(4))
                        .zip(sc.chunks_exact_mut(PANEL_ROWS))
                    {
                        pack_q4_0_block(blk, lines, &mut scale[r], r);
                    }
                } else if w.ty == GgmlType::Q4_K {
                    for (blk, lines) in row.chunks_exact(144).zip(ls.chunks_exact_mut(Q4K_LINES)) {
                        pack_q4k_block(blk, lines, r);
                    }
                } else {
                    for (blk, lines) in row.chunks_exact(210).zip(ls.chunks_exact_mut(Q6K_LINES)) {
                        pack_q6k_block(blk, lines, r);
                    }
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
        let mut out = vec![0u8; nb * self.ty.type_size()];
        for b in 0..nb {
            if self.ty == GgmlType::Q4_0 {
                let (sc, lines) = self.q4_0_block(p, b);
                let blk = &mut out[b * 18..(b + 1) * 18];
                blk[..2].copy_from_slice(&sc[lane].to_le_bytes());
                for e in 0..16 {
                    blk[2 + e] = quant_of(lines, lane, e) | (quant_of(lines, lane, e + 16) << 4);
                }
            } else if self.ty == GgmlType::Q6_K {
                let lines = self.q6_k_block(p, b);
                let blk = &mut out[b * 210..(b + 1) * 210];
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
            } else {
                let lines = self.q4_k_block(p, b);
                let blk = &mut out[b * 144..(b + 1) * 144];
                blk[..2].copy_from_slice(&lines[0].0[2 * lane..2 * lane + 2]);
                blk[2..4].copy_from_slice(&lines[0].0[32 + 2 * lane..32 + 2 * lane + 2]);
                let sc: [u8; 8] = std::array::from_fn(|j| lines[1 + j / 4].0[(j % 4) * 16 + lane]);
                let mn: [u8; 8] = std::array::from_fn(|j| lines[3 + j / 4].0[(j % 4) * 16 + lane]);
                blk[4..16].copy_from_slice(&crate::quant::pack_q4k_scales(&sc, &mn));
                let quants = &lines[5..];
                for c in 0..4 {
                    for i in 0..32 {
                        blk[16 + 32 * c + i] =
                            quant_of(quants, lane, 64 * c + i) | (quant_of(quants, lane, 64 * c + 32 + i) << 4);
                    }
                }
            }
        }
        out
    }
}

/// Writes row lane `r` of one Q4_0 block (18 file bytes: f16 scale, 16 bytes holding elements
/// `e` and `e + 16` in the low and high nibble of byte `e`) into its scale and 4 quant lines.
fn pack_q4_0_block(blk: &[u8], lines: &mut [Line], scale: &mut u16, r: usize) {
    *scale = u16::from_le_bytes([blk[0], blk[1]]);
    let qs = &blk[2..18];
    for (v, line) in lines.iter_mut().enumerate() {
        put_lane(line, r, &qs[8 * (v % 2)..], v >= 2);
    }
}

/// Writes row lane `r` of one Q4_K super-block (144 file bytes) into its panel lines.
fn pack_q4k_block(blk: &[u8], lines: &mut [Line], r: usize) {
    lines[0].0[2 * r..2 * r + 2].copy_from_slice(&blk[0..2]);
    lines[0].0[32 + 2 * r..32 + 2 * r + 2].copy_from_slice(&blk[2..4]);
    let packed: &[u8; 12] = blk[4..16].try_into().expect("12 scale bytes");
    let (sc, mn) = crate::quant::unpack_q4k_scales(packed);
    for j in 0..8 {
        lines[1 + j / 4].0[(j % 4) * 16 + r] = sc[j];
        lines[3 + j / 4].0[(j % 4) * 16 + r] = mn[j];
    }
    // File order: 32 bytes per 64 elements, low nibbles the first 32, high nibbles the next.
    for (v, line) in lines[5..].iter_mut().enumerate() {
        let (chunk, at) = (v / 8, 8 * (v % 8));
        put_lane(line, r, &blk[16 + 32 * chunk + at % 32..], at >= 32);
    }
}

/// Writes row lane `r` of one Q6_K super-block (210 file bytes: `ql[128]`, `qh[64]`, i8
/// `scales[16]`, f16 `d`) into its panel lines. In the file, each 128-element half `n` keeps
/// element `128n + 32j + l` (`j < 4`, `l < 32`) in nibble `j / 2` of `ql[64n + 32(j % 2) + l]`
/// and in bits `2j..2j+2` of `qh[32n + l]`.
fn pack_q6k_block(blk: &[u8], lines: &mut [Line], r: usize) {
    let (ql, qh) = (&blk[..128], &blk[128..192]);
    lines[0].0[2 * r..2 * r + 2].copy_from_slice(&blk[208..210]);
    for (g, &sc) in blk[192..208].iter().enumerate() {
        lines[1 + g / 4].0[16 * (g % 4) + r] = sc;
    }
    for (g, group) in lines[5..].chunks_exact_mut(3).enumerate() {
        // Both quant lines and the high line of elements 16g..16g+16 lie in one 32-element
        // chunk `j` of half `n`.
        let (n, j) = (g / 8, (g % 8) / 2);
        for (half, line) in group[..2].iter_mut().enumerate() {
            let at = 64 * n + 32 * (j % 2) + 16 * (g % 2) + 8 * half;
            put_lane(line, r, &ql[at..], j >= 2);
        }
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

/// The inverse of [`pack_q6k_block`] for one element: the unsigned 6-bit quant of element `e`
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
            (GgmlType::Q6_K, 1, 256),
            (GgmlType::Q6_K, 16, 256),
            (GgmlType::Q6_K, 19, 768),
            (GgmlType::Q6_K, 33, 4096),
        ] {
            let data: Vec<u8> = (0..rows * ty.row_bytes(cols as u64).unwrap() as usize)
                .map(|_| rng.random())
                .collect();
            let w = QMatrix::new(ty, rows, cols, &data).unwrap();
            let p = PackedMatrix::new(&pool, &w).unwrap();
            for r in 0..rows {
                assert_eq!(p.row_bytes(r), w.row(r), "{ty} {rows}x{cols} row {r}");
            }
        }
    }

    #[test]
    fn only_types_with_a_panel_form_are_repacked() {
        let pool = ThreadPool::new(1);
        let data = vec![0u8; 34];
        let w = QMatrix::new(GgmlType::Q8_0, 1, 32, &data).unwrap();
        assert!(matches!(
            PackedMatrix::new(&pool, &w),
            Err(KernelError::UnsupportedType(_))
        ));
    }
}
