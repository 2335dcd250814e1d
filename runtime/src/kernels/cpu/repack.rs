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

use super::matmul::{QMatrix, SyncPtr};
use super::{KernelError, ThreadPool};
use crate::quant::GgmlType;

/// Rows per panel: the 16 i32 lanes of a 512-bit vector (two 256-bit vectors with AVX2).
pub const PANEL_ROWS: usize = 16;

/// One 64-byte line, aligned for 512-bit (and aligned 256-bit) loads.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
pub(super) struct Line(pub(super) [u8; 64]);

/// Lines per panel and Q4_K super-block: `d`/`dmin`, 2 of scales, 2 of mins, 32 of quants.
pub(super) const Q4K_LINES: usize = 37;

/// A Q4_0 or Q4_K matrix in the panel layout (see the module docs).
pub struct PackedMatrix {
    ty: GgmlType,
    rows: usize,
    cols: usize,
    /// Q4_0 only: the f16 block scales.
    scales: Vec<u16>,
    lines: Vec<Line>,
}

/// Whether [`PackedMatrix::new`] takes weights of type `ty`.
pub fn repackable(ty: GgmlType) -> bool {
    matches!(ty, GgmlType::Q4_0 | GgmlType::Q4_K)
}

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

impl std::fmt::Debug for PackedMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackedMatrix")
            .field("ty", &self.ty)
            .field("rows", &self.rows)
            .field("cols", &self.cols)
            .finish()
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

/// One token's activation row (Q8_0 for Q4_0 weights, Q8_K for Q4_K) prepared for
/// the kernels for repacked weights.
#[cfg(target_arch = "x86_64")]
pub(super) struct PackedActivations {
    /// The quads (4 quants each) of every block, as little-endian u32.
    pub(super) quads: Vec<u32>,
    /// Per block (Q8_0) or super-block (Q8_K): the activation scale.
    pub(super) scales: Vec<f32>,
    /// Q8_0: per block, `-8 * sum(y)`, the start of each row's integer sum.
    /// Q8_K: per sub-block of 32, `sum(y)` (from `bsums`), paired with the mins.
    pub(super) sums: Vec<i32>,
}

#[cfg(target_arch = "x86_64")]
impl PackedActivations {
    /// From one activation row in the partner format of weights of type `ty`.
    pub(super) fn new(ty: GgmlType, act: &[u8]) -> PackedActivations {
        let quads_of = |q: &[u8]| {
            q.chunks_exact(4)
                .map(|q| u32::from_le_bytes([q[0], q[1], q[2], q[3]]))
                .collect::<Vec<_>>()
        };
        let mut x = PackedActivations {
            quads: Vec::new(),
            scales: Vec::new(),
            sums: Vec::new(),
        };
        if ty == GgmlType::Q4_0 {
            for blk in act.chunks_exact(34) {
                x.scales.push(half::f16::from_le_bytes([blk[0], blk[1]]).to_f32());
                x.sums.push(-8 * blk[2..].iter().map(|&q| q as i8 as i32).sum::<i32>());
                x.quads.extend(quads_of(&blk[2..]));
            }
        } else {
            // Q8_K: f32 d, 256 quants, 16 i16 sums of 16 quants each.
            for blk in act.chunks_exact(292) {
                x.scales.push(f32::from_le_bytes([blk[0], blk[1], blk[2], blk[3]]));
                x.quads.extend(quads_of(&blk[4..260]));
                let bsum = |i: usize| i16::from_le_bytes([blk[260 + 2 * i], blk[261 + 2 * i]]) as i32;
                x.sums.extend((0..8).map(|j| bsum(2 * j) + bsum(2 * j + 1)));
            }
        }
        x
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

    pub fn ty(&self) -> GgmlType {
        self.ty
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Bytes held (about the file's bytes for the same weights).
    pub fn bytes(&self) -> usize {
        self.scales.len() * 2 + self.lines.len() * 64
    }

    // Only the x86 kernels walk panels; elsewhere the repacked form is never read.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(super) fn n_panels(&self) -> usize {
        self.rows.div_ceil(PANEL_ROWS)
    }

    /// Q4_0 block `b` of panel `p`: its 16 f16 scales and its 4 quant lines.
    pub(super) fn q4_0_block(&self, p: usize, b: usize) -> (&[u16], &[Line]) {
        let i = p * (self.cols / 32) + b;
        (
            &self.scales[i * PANEL_ROWS..(i + 1) * PANEL_ROWS],
            &self.lines[i * 4..(i + 1) * 4],
        )
    }

    /// Q4_K super-block `b` of panel `p`: its [`Q4K_LINES`] lines.
    pub(super) fn q4_k_block(&self, p: usize, b: usize) -> &[Line] {
        let i = p * (self.cols / 256) + b;
        &self.lines[i * Q4K_LINES..(i + 1) * Q4K_LINES]
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

#[cfg(test)]
mod matmul_tests {
    use super::super::{available_backends, matmul_with, Backend};
    use super::*;
    use crate::quant::quantize_row;
    use rand::{rngs::StdRng, Rng, SeedableRng};

    /// The kernels for repacked weights (decode and the prefill panels) against the scalar
    /// specification on the file layout, over row counts that end mid-panel, token counts on
    /// both sides of the decode/prefill split, and extreme quants.
    #[test]
    fn repacked_matmul_matches_scalar() {
        if !repack_supported() {
            eprintln!("skipped: this CPU has no kernel for repacked weights (needs x86-64 AVX2+FMA+F16C)");
            return;
        }
        let mut rng = StdRng::seed_from_u64(21);
        let pools = [ThreadPool::new(1), ThreadPool::new(3)];
        let shapes = [
            (GgmlType::Q4_0, 16, 32),
            (GgmlType::Q4_0, 37, 64),
            (GgmlType::Q4_0, 50, 4096),
            (GgmlType::Q4_0, 7, 352),
            (GgmlType::Q4_K, 16, 256),
            (GgmlType::Q4_K, 37, 512),
            (GgmlType::Q4_K, 20, 4096),
            // A full first half and a partial second half of the last panel (AVX2: 8 rows each).
            (GgmlType::Q4_0, 28, 128),
            (GgmlType::Q4_0, 172, 64),
            (GgmlType::Q4_K, 12, 768),
        ];
        for (ty, rows, cols) in shapes {
            let xs: Vec<f32> = (0..rows * cols).map(|_| rng.random_range(-1.0..1.0)).collect();
            let row_bytes = ty.row_bytes(cols as u64).unwrap() as usize;
            let mut data = vec![0u8; rows * row_bytes];
            quantize_row(ty, &xs, &mut data).unwrap();
            // Row 1: every nibble 0, row 2: every nibble 15 (Q4_0: scale 0.5; Q4_K: largest
            // 6-bit scales and mins, d = 0.5, dmin = 0.25).
            for (r, fill) in [(1usize, 0x00u8), (2, 0xff)] {
                if r < rows {
                    let row = &mut data[r * row_bytes..(r + 1) * row_bytes];
                    for blk in row.chunks_exact_mut(ty.type_size()) {
                        blk[..2].copy_from_slice(&half::f16::from_f32(0.5).to_le_bytes());
                        if ty == GgmlType::Q4_0 {
                            blk[2..].fill(fill);
                        } else {
                            blk[2..4].copy_from_slice(&half::f16::from_f32(0.25).to_le_bytes());
                            blk[4..16].fill(0xff);
                            blk[16..].fill(fill);
                        }
                    }
                }
            }
            let plain = QMatrix::new(ty, rows, cols, &data).unwrap();
            let packed = PackedMatrix::new(&pools[1], &plain).unwrap();
            let w = plain.with_packed(&packed).unwrap();
            // Token counts: decode, tiles of 2, 3 and 4 (AVX2: 4) with every tail, the VNNI
            // small-batch kernel's groups of 4 up to its limit of 16, and token chunks (AVX2:
            // 64) with tails.
            for n_tokens in [1, 2, 3, 4, 5, 7, 8, 16, 17, 40, 67, 130] {
                let mut x: Vec<f32> = (0..n_tokens * cols).map(|_| rng.random_range(-3.0..3.0)).collect();
                // Extreme activations: a constant row quantizes to all -127/-128 or all 127, the
                // largest products, against the all-15 weight row.
                x[..cols].fill(-2.5);
                if n_tokens > 2 {
                    x[2 * cols..3 * cols].fill(2.5);
                }
                let mut expected = vec![0f32; n_tokens * rows];
                matmul_with(Backend::Scalar, &pools[0], &plain, &x, n_tokens, &mut expected);
                for b in available_backends() {
                    for pool in &pools {
                        let mut got = vec![f32::NAN; n_tokens * rows];
                        matmul_with(b, pool, &w, &x, n_tokens, &mut got);
                        // Integer block sums are exact; only float summation order differs.
                        for (i, (&g, &e)) in got.iter().zip(&expected).enumerate() {
                            assert!(
                                (g - e).abs() <= 1e-4 * (1.0 + e.abs()),
                                "{ty} {b} {rows}x{cols} tokens {n_tokens} threads {} i {i}: {g} vs {e}",
                                pool.n_threads()
                            );
                        }
                        // A batch of decodes (several sequences' tokens) on the VNNI kernel:
                        // each token's products are exactly the ones it gets alone.
                        if b == Backend::Avx512 && is_x86_feature_detected!("avx512vnni") && n_tokens <= 16 {
                            for t in 0..n_tokens {
                                let mut alone = vec![f32::NAN; rows];
                                matmul_with(b, pool, &w, &x[t * cols..(t + 1) * cols], 1, &mut alone);
                                assert_eq!(
                                    &got[t * rows..(t + 1) * rows],
                                    &alone[..],
                                    "{ty} {rows}x{cols} token {t} of {n_tokens}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    /// Which form each path reads: the packed form of matrix A attached to matrix B of the
    /// same shape (a misuse, which only shape checks can catch) gives A's products on the x86
    /// SIMD paths, so those really run the packed kernels, and B's on the scalar path.
    #[test]
    fn simd_paths_read_the_repacked_form() {
        if !repack_supported() {
            eprintln!("skipped: this CPU has no kernel for repacked weights (needs x86-64 AVX2+FMA+F16C)");
            return;
        }
        let mut rng = StdRng::seed_from_u64(8);
        let pool = ThreadPool::new(2);
        for (ty, rows, cols) in [(GgmlType::Q4_0, 24, 64), (GgmlType::Q4_K, 24, 256)] {
            let quantized = |rng: &mut StdRng| {
                let xs: Vec<f32> = (0..rows * cols).map(|_| rng.random_range(-1.0..1.0)).collect();
                let mut data = vec![0u8; rows * ty.row_bytes(cols as u64).unwrap() as usize];
                quantize_row(ty, &xs, &mut data).unwrap();
                data
            };
            let (da, db) = (quantized(&mut rng), quantized(&mut rng));
            let a = QMatrix::new(ty, rows, cols, &da).unwrap();
            let b = QMatrix::new(ty, rows, cols, &db).unwrap();
            let packed_a = PackedMatrix::new(&pool, &a).unwrap();
            let mixed = b.with_packed(&packed_a).unwrap();
            for n_tokens in [1, 6] {
                let x: Vec<f32> = (0..n_tokens * cols).map(|_| rng.random_range(-1.0..1.0)).collect();
                let product = |b: Backend, w: &QMatrix| {
                    let mut out = vec![0f32; n_tokens * rows];
                    matmul_with(b, &pool, w, &x, n_tokens, &mut out);
                    out
                };
                let (want_a, want_b) = (product(Backend::Scalar, &a), product(Backend::Scalar, &b));
                let close =
                    |g: &[f32], e: &[f32]| g.iter().zip(e).all(|(g, e)| (g - e).abs() <= 1e-4 * (1.0 + e.abs()));
                assert!(close(&product(Backend::Scalar, &mixed), &want_b), "{ty} scalar");
                for backend in [Backend::Avx2, Backend::Avx512]
                    .into_iter()
                    .filter(|b| b.is_available())
                {
                    let got = product(backend, &mixed);
                    assert!(
                        close(&got, &want_a),
                        "{ty} {backend} tokens {n_tokens}: not the packed form"
                    );
                    assert!(
                        !close(&got, &want_b),
                        "{ty} {backend} tokens {n_tokens}: read the file layout"
                    );
                }
            }
        }
    }

    #[test]
    fn a_packed_form_of_another_matrix_is_refused() {
        let pool = ThreadPool::new(1);
        let data = vec![0u8; 2 * 18];
        let a = QMatrix::new(GgmlType::Q4_0, 2, 32, &data).unwrap();
        let b = QMatrix::new(GgmlType::Q4_0, 1, 64, &data).unwrap();
        let packed = PackedMatrix::new(&pool, &a).unwrap();
        assert!(matches!(b.with_packed(&packed), Err(KernelError::Packed { .. })));
        let data = vec![0u8; 144];
        let k = QMatrix::new(GgmlType::Q4_K, 1, 256, &data).unwrap();
        assert!(matches!(k.with_packed(&packed), Err(KernelError::Packed { .. })));
    }
}
