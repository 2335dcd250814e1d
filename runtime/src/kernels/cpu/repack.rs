//! Q4_0 and Q4_K weights re-laid out in panels of 16 rows ("repacked"), for the AVX-512 VNNI
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
//! in place from the mapping, so it is opt-in (`--repack`).
//!
//! Quants, for both types: a *quant line* covers 8 consecutive elements of a block of the 16
//! rows of a panel (rows `16p..16p+16`, missing rows zero): in lane `r` (bytes `4r..4r+4`),
//! byte `i` holds element `i` in its low nibble and element `4 + i` in its high nibble (the
//! unsigned 0..15 quants of the file).
//!
//! Q4_0, for panel `p` and block `b` of `nb`: `scales[(p * nb + b) * 16 + r]` is the f16 scale
//! of row `16p + r`, and `lines[(p * nb + b) * 4 + v]` the quant line of elements `8v..8v+8`.
//!
//! Q4_K, for panel `p` and super-block `b`: [`Q4K_LINES`] lines from
//! `lines[(p * nb + b) * Q4K_LINES]`: one line of the 16 f16 `d` then the 16 f16 `dmin`, two of
//! the 6-bit sub-block scales as bytes (`[sub-block][row]`), two of the mins (same order),
//! then the 32 quant lines of elements `8v..8v+8`.

use super::table::repackable;
use super::types::{Line, PackedMatrix, QMatrix, SyncPtr, PANEL_ROWS, Q4K_LINES};
use super::{KernelError, ThreadPool};
use crate::quant::GgmlType;

/// The quant line of elements `8v..8v+8` of row lane `r`, from the row's unsigned quants
/// `q(e)` of the block.
fn put_quant_line(line: &mut Line, r: usize, v: usize, q: impl Fn(usize) -> u8) {
    for i in 0..4 {
        line.0[4 * r + i] = q(8 * v + i) | (q(8 * v + 4 + i) << 4);
    }
}

/// The inverse of [`put_quant_line`]: element `e` of lane `r` of a block's quant lines.
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
    /// Repacks a Q4_0 or Q4_K matrix (panels spread over the pool).
    pub fn new(pool: &ThreadPool, w: &QMatrix) -> Result<PackedMatrix, KernelError> {
        if !repackable(w.ty) {
            return Err(KernelError::UnsupportedType(w.ty));
        }
        let w = QMatrix::new(w.ty, w.rows, w.cols, w.data)?;
        let q4_0 = w.ty == GgmlType::Q4_0;
        let nb = w.cols / w.ty.block_size();
        let n_panels = w.rows.div_ceil(PANEL_ROWS);
        let lines_per_block = if q4_0 { 4 } else { Q4K_LINES };
        let mut scales = vec![0u16; if q4_0 { n_panels * nb * PANEL_ROWS } else { 0 }];
        let mut lines = vec![Line([0; 64]); n_panels * nb * lines_per_block];
        let (sp, lp) = (SyncPtr(scales.as_mut_ptr()), SyncPtr(lines.as_mut_ptr()));
        pool.run(n_panels, &|p| {
            let n_lines = nb * lines_per_block;
            // SAFETY: panel p owns lines[p*n_lines..(p+1)*n_lines] and (Q4_0) its nb*16 scales,
            // which no other task touches; both vectors outlive the pool's `run`.
            let ls = unsafe { std::slice::from_raw_parts_mut(lp.get().add(p * n_lines), n_lines) };
            let sc = if q4_0 {
                // SAFETY: as above.
                unsafe { std::slice::from_raw_parts_mut(sp.get().add(p * nb * PANEL_ROWS), nb * PANEL_ROWS) }
            } else {
                &mut []
            };
            for r in 0..PANEL_ROWS.min(w.rows - p * PANEL_ROWS) {
                let row = w.row(p * PANEL_ROWS + r);
                for b in 0..nb {
                    if q4_0 {
                        let blk = &row[b * 18..(b + 1) * 18];
                        sc[b * PANEL_ROWS + r] = u16::from_le_bytes([blk[0], blk[1]]);
                        let q = |e: usize| {
                            if e < 16 {
                                blk[2 + e] & 0x0f
                            } else {
                                blk[2 + e - 16] >> 4
                            }
                        };
                        for v in 0..4 {
                            put_quant_line(&mut ls[b * 4 + v], r, v, q);
                        }
                    } else {
                        pack_q4k_block(
                            &row[b * 144..(b + 1) * 144],
                            &mut ls[b * Q4K_LINES..(b + 1) * Q4K_LINES],
                            r,
                        );
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
    let q = |e: usize| {
        let byte = blk[16 + 32 * (e / 64) + e % 32];
        if e % 64 < 32 {
            byte & 0x0f
        } else {
            byte >> 4
        }
    };
    for v in 0..32 {
        put_quant_line(&mut lines[5 + v], r, v, q);
    }
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
    fn only_q4_0_and_q4_k_are_repacked() {
        let pool = ThreadPool::new(1);
        let data = vec![0u8; 34];
        let w = QMatrix::new(GgmlType::Q8_0, 1, 32, &data).unwrap();
        assert!(matches!(
            PackedMatrix::new(&pool, &w),
            Err(KernelError::UnsupportedType(_))
        ));
    }
}
