//! AVX-512 kernels: a VNNI (`vpdpbusd`) panel matmul for prefill (AMX tiles where the CPU has
//! them), AVX2 kernels otherwise.
//!
//! Decode is bound by memory bandwidth, where 512-bit vectors gain nothing, so single tokens
//! and small batches use the AVX2 tile kernels (every AVX-512 CPU has AVX2/FMA/F16C;
//! `Backend::Avx512` requires them). With VNNI, the legacy formats' tiles (`vnni_legacy_tile!`:
//! `tile_q4_0_q8_0_vnni`, `tile_q4_1_q8_1_vnni`, `tile_q5_0_q8_0_vnni`, `tile_q5_1_q8_1_vnni`,
//! `tile_q8_0_q8_0_vnni`, twins of the AVX2 `tile_<stem>`) use 256-bit `vpdpbusd`.
//!
//! Prefill with VNNI (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K): a task unpacks a panel
//! of 16 weight rows once into unsigned 8-bit quants laid out "row-interleaved" (for each 4
//! consecutive elements, the 4 bytes of row 0, then of row 1, ... row 15: one 64-byte vector), plus
//! the scales (f32 `d` per block of the 32-element formats; for the k-quants the integer group
//! scales, whose products with the group sums are added in integers per super-block and
//! scaled by `d` once, as the scalar specification and the decode kernels do) and the group
//! offsets. One `vpdpbusd` then multiplies 4 elements of 16
//! rows with the same 4 activation bytes of one token (a broadcast), accumulating 16 row sums
//! at once; a micro-tile keeps the sums of 16 rows x `T` tokens in registers, so each
//! unpacked weight vector is loaded once per `T` tokens and each activation broadcast is
//! used for 16 rows. Offsets (Q4_0's 8, Q5_0's 16, Q8_0's +128 bias, the Q4_1/Q5_1 and k-quant
//! mins, Q6_K's 32) are applied per group through activation sums, as in the scalar
//! specification (Q4_0, Q8_0 and Q5 panels from the repacked form: as integer start values,
//! see `LegacyTables`; Q6_K's 32 always, and the Q4_K/Q5_K mins two groups per `vpdpwssd`, see
//! `KTables`).
//!
//! On CPUs with AMX-INT8 (`amx.rs`), the panels multiply on tiles instead: the k-quants in
//! `matmul_panels_amx` (each super-block of a panel rebuilt with its group scales folded into
//! the weights, so one super-block of 32 tokens x 16 rows is 16 tile products), the 32-element
//! formats in `micro_legacy_amx` (one tile product per block). The float steps after the
//! integer sums are `micro_k`'s and `micro_legacy`'s: the same bits.

// Kernel loops index several arrays (weights, per-token sums, scales) with one counter over
// const-generic bounds the compiler unrolls; iterator chains would only obscure that.
#![allow(clippy::needless_range_loop)]
// The AVX-512 intrinsics are stable since Rust 1.89, the workspace's minimum Rust version.

use super::amx;
use super::avx2::{self, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1};
use super::avx512_gemv;
use super::prefetch;
use super::table::act_type;
use super::types::{q8_k_bsum, q8_k_sub_block_sum, Line, PackedMatrix, QMatrix, SyncPtr, K_HEAD_LINES};
use super::ThreadPool;
use crate::quant::{GgmlType, QK_K};
use std::arch::x86_64::*;

/// Rows per panel (the 16 i32 lanes of a vector).
const PR: usize = 16;
/// Tokens per micro-tile: 3 live sets of `TT` vectors (group sums, super-block sums,
/// totals) plus temporaries fit the 32 vector registers.
const TT: usize = 8;
/// Tokens per task: a whole prefill chunk (the model's `MAX_BATCH`), so each panel is unpacked
/// once per matmul. Unpacking is not cheap (a 16-row panel scatters every 4-byte quad), and
/// 128-token tasks spent ~30 % of the matmul on it; with 512, 7B pp512 at 2 threads went from
/// 30.8 to 35.9 t/s (Q4_K_M) and 29.7 to 34.6 (Q4_0), although the activations then stream
/// from L3 rather than L2.
const TOK_CHUNK: usize = 512;

/// # Safety
/// The CPU must support AVX-512 F/BW/VL plus AVX2, FMA and F16C; `w` and every `acts[t]` must
/// hold whole rows of `n` elements in the weight and activation formats of `ty`.
pub(super) unsafe fn tile(ty: GgmlType, n: usize, w: &[u8], acts: &[&[u8]], out: &mut [f32]) {
    let vnni = acts.len() <= 4 && is_x86_feature_detected!("avx512vnni");
    let (wp, nb) = (w.as_ptr(), n / 32);
    let a = |t: usize| acts[t].as_ptr();
    // One direct call per token count (the tokens' pointers are a const-size array).
    macro_rules! by_tokens {
        ($kernel:ident) => {
            match acts.len() {
                1 => $kernel::<1>(wp, std::array::from_fn(a), nb, out),
                2 => $kernel::<2>(wp, std::array::from_fn(a), nb, out),
                3 => $kernel::<3>(wp, std::array::from_fn(a), nb, out),
                _ => $kernel::<4>(wp, std::array::from_fn(a), nb, out),
            }
        };
    }
    match ty {
        GgmlType::Q4_0 if vnni => by_tokens!(tile_q4_0_q8_0_vnni),
        GgmlType::Q5_0 if vnni => by_tokens!(tile_q5_0_q8_0_vnni),
        GgmlType::Q8_0 if vnni => by_tokens!(tile_q8_0_q8_0_vnni),
        GgmlType::Q4_1 if vnni => by_tokens!(tile_q4_1_q8_1_vnni),
        GgmlType::Q5_1 if vnni => by_tokens!(tile_q5_1_q8_1_vnni),
        _ => avx2::tile(ty, n, w, acts, out),
    }
}

/// A legacy-format tile kernel with 256-bit `vpdpbusd` (one instruction instead of AVX2's
/// `maddubs` + `madd`): `$quants` decodes the 32 quants of the weight block at `$wb` and
/// `$dot` multiplies them with one token's 32 activation bytes `$y` into 8 i32 sums (the
/// offset formats subtract theirs as a second `vpdpbusd` of the offset with -y: activations
/// are within +-127, so -y fits). With `$min` the weights carry an f16 min at byte 2 and the
/// activations are Q8_1, whose `s = d * sum(y)` the min multiplies per block; otherwise
/// activations are Q8_0.
macro_rules! vnni_legacy_tile {
    ($(#[$doc:meta])* $name:ident, $stride:expr, min: $min:literal,
     { $($setup:stmt;)* }, |$wb:ident| $quants:expr, |$q:ident, $y:ident| $dot:expr) => {
        $(#[$doc])*
        #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
        unsafe fn $name<const T: usize>(w: *const u8, a: [*const u8; T], nb: usize, out: &mut [f32]) {
            $($setup)*
            let (astride, aq) = if $min { (Q8_1, 4) } else { (Q8_0, 2) };
            let mut acc = [_mm256_setzero_ps(); T];
            let mut acc2 = [_mm256_setzero_ps(); T];
            let mut mins = [_mm256_setzero_ps(); T];
            let prefetch_rows = prefetch::file_rows(T);
            let mut b0 = 0;
            while b0 < nb {
                let cnt = (nb - b0).min(8);
                let dw = avx2::scales8(w.add(b0 * $stride), $stride, cnt);
                let mut prod = [[0f32; 8]; T];
                for t in 0..T {
                    let da = avx2::scales8(a[t].add(b0 * astride), astride, cnt);
                    _mm256_storeu_ps(prod[t].as_mut_ptr(), _mm256_mul_ps(dw, da));
                    if $min {
                        let mw = avx2::scales8(w.add(b0 * $stride + 2), $stride, cnt);
                        let sa = avx2::scales8(a[t].add(b0 * astride + 2), astride, cnt);
                        mins[t] = _mm256_fmadd_ps(mw, sa, mins[t]);
                    }
                }
                let block = |i: usize, acc: &mut [__m256; T]| {
                    if prefetch_rows {
                        prefetch::file_lines::<{ 8 * $stride }>(w.add(b0 * $stride), i);
                    }
                    let $wb = w.add((b0 + i) * $stride);
                    let $q = $quants;
                    for t in 0..T {
                        let $y = _mm256_loadu_si256(a[t].add((b0 + i) * astride + aq).cast());
                        let p: __m256i = $dot;
                        acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_broadcast_ss(&prod[t][i]), acc[t]);
                    }
                };
                // Two accumulators (even / odd blocks) halve the FMA dependency chain, which
                // bounds decode (T = 1) otherwise.
                let mut i = 0;
                while i + 1 < cnt {
                    block(i, &mut acc);
                    block(i + 1, &mut acc2);
                    i += 2;
                }
                if i < cnt {
                    block(i, &mut acc);
                }
                b0 += cnt;
            }
            for t in 0..T {
                out[t] = avx2::hsum(_mm256_add_ps(_mm256_add_ps(acc[t], acc2[t]), mins[t]));
            }
        }
    };
}

/// `vpdpbusd` of unsigned quants `q` with `y`, minus `offset * sum(y)`.
#[target_feature(enable = "avx2,avx512f,avx512vl,avx512vnni")]
#[inline]
unsafe fn dot_offset(q: __m256i, y: __m256i, offset: __m256i) -> __m256i {
    let p = _mm256_dpbusd_epi32(_mm256_setzero_si256(), q, y);
    _mm256_dpbusd_epi32(p, offset, _mm256_sub_epi8(_mm256_setzero_si256(), y))
}

/// The 32 quants of a Q5 block: the nibbles at `qs`, plus 16 where the bit of the `qh` word at
/// `qh` is set (AVX-512BW reads the word directly as a 32-lane byte mask).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
#[inline]
unsafe fn q5_quants(qh: *const u8, qs: *const u8) -> __m256i {
    let mask: __mmask32 = qh.cast::<u32>().read_unaligned();
    let nib = avx2::nibbles32(qs);
    _mm256_mask_add_epi8(nib, mask, nib, _mm256_set1_epi8(16))
}

vnni_legacy_tile!(
    /// Q4_0: nibbles, offset 8.
    tile_q4_0_q8_0_vnni, Q4_0, min: false, { let m8 = _mm256_set1_epi8(8); },
    |wb| avx2::nibbles32(wb.add(2)), |q, y| dot_offset(q, y, m8)
);
vnni_legacy_tile!(
    /// Q5_0: five-bit quants, offset 16.
    tile_q5_0_q8_0_vnni, Q5_0, min: false, { let m16 = _mm256_set1_epi8(16); },
    |wb| q5_quants(wb.add(2), wb.add(6)), |q, y| dot_offset(q, y, m16)
);
vnni_legacy_tile!(
    /// Q8_0: signed quants; |q| times y with q's sign moved onto y.
    tile_q8_0_q8_0_vnni, Q8_0, min: false, {},
    |wb| _mm256_loadu_si256(wb.add(2).cast()),
    |q, y| _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_sign_epi8(q, q), _mm256_sign_epi8(y, q))
);
vnni_legacy_tile!(
    /// Q4_1: nibbles and a min.
    tile_q4_1_q8_1_vnni, Q4_1, min: true, {},
    |wb| avx2::nibbles32(wb.add(4)), |q, y| _mm256_dpbusd_epi32(_mm256_setzero_si256(), q, y)
);
vnni_legacy_tile!(
    /// Q5_1: five-bit quants and a min.
    tile_q5_1_q8_1_vnni, Q5_1, min: true, {},
    |wb| q5_quants(wb.add(4), wb.add(8)), |q, y| _mm256_dpbusd_epi32(_mm256_setzero_si256(), q, y)
);

/// The 32-element formats (of the panel types, the table's `vnni_panels`), whose panels go
/// through [`micro_legacy`]; the others are the k-quants.
fn is_legacy(ty: GgmlType) -> bool {
    ty.block_size() == 32
}

/// Whether `ty`'s activations are Q8_1 (else Q8_0) among the 32-element formats.
fn has_min(ty: GgmlType) -> bool {
    act_type(ty) == GgmlType::Q8_1
}

/// Elements per scale group of the unpacked panel.
fn group(ty: GgmlType) -> usize {
    match ty {
        GgmlType::Q6_K => 16,
        _ => 32,
    }
}

/// A panel of up to 16 weight rows, unpacked for the VNNI micro-kernels.
struct Panel {
    /// `cols / 4` vectors of 64 bytes: element quad `k` of rows 0..16.
    q: Vec<u8>,
    /// Legacy: per block, 16 f32 (one per row): `d`.
    scf: Vec<f32>,
    /// k-quants: per group, 16 i32 (one per row): the group's scale. A super-block's group
    /// sums are multiplied by them and added in integers (exact, as the scalar specification
    /// and the decode kernel do), then scaled by `d` once.
    sci: Vec<i32>,
    /// k-quants: per super-block, 16 f32 `d`.
    dk: Vec<f32>,
    /// Legacy: per block, 16 f32 offsets, subtracted per unit of `d_y * sum(y)` (`8 d` for
    /// Q4_0, `16 d` for Q5_0, `128 d` for Q8_0, `-m` for Q4_1/Q5_1; see [`LegacyTables`] for
    /// when the integer starts replace the first three).
    /// Q4_K/Q5_K: per super-block, 4 pairs of i16 mins per row (groups 2k and 2k + 1, as i32
    /// lanes), for `vpdpwssd` with the paired group sums of [`KTables`]. Q6_K: none (its offset
    /// of 32 enters through the group sums' start, see [`KTables`]).
    mn: Vec<u32>,
    /// Q4_K/Q5_K: per super-block, 16 f32 `dmin`.
    dm: Vec<f32>,
}

impl Panel {
    /// Panel `pi` of `w` (rows `16 pi..`), unpacked from the repacked form when one is attached.
    ///
    /// # Safety
    /// The CPU must support AVX-512 F/BW/VL plus AVX2, FMA and F16C; `w.ty` must have VNNI
    /// panels and `pi` be one of `w`'s panels.
    unsafe fn unpacked(w: &QMatrix, pi: usize) -> Panel {
        let (ty, cols) = (w.ty, w.cols);
        let legacy = is_legacy(ty);
        let n_groups = cols / group(ty);
        // Per row: the legacy offsets per block; the Q4_K/Q5_K min pairs and dmin per super-block.
        let (n_mn, n_dm) = match ty {
            _ if legacy => (cols / 32, 0),
            GgmlType::Q6_K => (0, 0),
            _ => (cols / QK_K * 4, cols / QK_K),
        };
        let n_dk = if legacy { 0 } else { cols / QK_K };
        let mut p = Panel {
            q: vec![0u8; cols * PR],
            scf: vec![0f32; if legacy { n_groups * PR } else { 0 }],
            sci: vec![0i32; if legacy { 0 } else { n_groups * PR }],
            dk: vec![0f32; n_dk * PR],
            mn: vec![0u32; n_mn * PR],
            dm: vec![0f32; n_dm * PR],
        };
        let r0 = pi * PR;
        // SAFETY: the caller guarantees the CPU features; rows r0..r0+nr exist.
        unsafe {
            match w.packed {
                Some(packed) => unpack_packed_panel(packed, pi, &mut p),
                None => unpack_panel(w, r0, PR.min(w.rows - r0), &mut p),
            }
        };
        p
    }
}

/// Decodes one row's block `b` into unsigned quants `q` (the block's elements) and its
/// group scales / offsets for row lane `r` of the panel.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
unsafe fn unpack_block(ty: GgmlType, row: *const u8, b: usize, q: &mut [u8], p: &mut Panel, r: usize) {
    let f16 = |p: *const u8| half::f16::from_bits(p.cast::<u16>().read_unaligned()).to_f32();
    let m4 = _mm256_set1_epi8(0x0f);
    match ty {
        GgmlType::Q4_0 => {
            let blk = row.add(b * Q4_0);
            let d = f16(blk);
            let qs = _mm_loadu_si128(blk.add(2).cast());
            let v = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16::<4>(qs), qs), m4);
            _mm256_storeu_si256(q.as_mut_ptr().cast(), v);
            p.scf[b * PR + r] = d;
            p.mn[b * PR + r] = (8.0 * d).to_bits();
        }
        GgmlType::Q4_1 | GgmlType::Q5_1 => {
            let blk = row.add(b * if ty == GgmlType::Q4_1 { Q4_1 } else { Q5_1 });
            let (d, m) = (f16(blk), f16(blk.add(2)));
            let v = if ty == GgmlType::Q4_1 {
                avx2::nibbles32(blk.add(4))
            } else {
                q5_quants(blk.add(4), blk.add(8))
            };
            _mm256_storeu_si256(q.as_mut_ptr().cast(), v);
            p.scf[b * PR + r] = d;
            // The min adds m * s_y: an offset of -m.
            p.mn[b * PR + r] = (-m).to_bits();
        }
        GgmlType::Q5_0 => {
            let blk = row.add(b * Q5_0);
            let d = f16(blk);
            _mm256_storeu_si256(q.as_mut_ptr().cast(), q5_quants(blk.add(2), blk.add(6)));
            p.scf[b * PR + r] = d;
            p.mn[b * PR + r] = (16.0 * d).to_bits();
        }
        GgmlType::Q8_0 => {
            let blk = row.add(b * Q8_0);
            let d = f16(blk);
            // Bias to unsigned: q + 128, undone by an offset of 128 d per block.
            let v = _mm256_xor_si256(_mm256_loadu_si256(blk.add(2).cast()), _mm256_set1_epi8(-128));
            _mm256_storeu_si256(q.as_mut_ptr().cast(), v);
            p.scf[b * PR + r] = d;
            p.mn[b * PR + r] = (128.0 * d).to_bits();
        }
        GgmlType::Q4_K | GgmlType::Q5_K => {
            let (bs, qs_off) = if ty == GgmlType::Q4_K { (144, 16) } else { (176, 48) };
            let blk = row.add(b * bs);
            let (d, dmin) = (f16(blk), f16(blk.add(2)));
            let s = blk.add(4).cast::<[u8; 12]>().read_unaligned();
            let qh = _mm256_loadu_si256(blk.add(16).cast());
            for j in 0..4 {
                let v = _mm256_loadu_si256(blk.add(qs_off + 32 * j).cast());
                let mut lo = _mm256_and_si256(v, m4);
                let mut hi = _mm256_and_si256(_mm256_srli_epi16::<4>(v), m4);
                if ty == GgmlType::Q5_K {
                    let m16 = _mm256_set1_epi8(16);
                    let b0 = _mm256_set1_epi8(1 << (2 * j));
                    let b1 = _mm256_set1_epi8(2 << (2 * j));
                    lo = _mm256_or_si256(
                        lo,
                        _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(qh, b0), b0), m16),
                    );
                    hi = _mm256_or_si256(
                        hi,
                        _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(qh, b1), b1), m16),
                    );
                }
                _mm256_storeu_si256(q.as_mut_ptr().add(64 * j).cast(), lo);
                _mm256_storeu_si256(q.as_mut_ptr().add(64 * j + 32).cast(), hi);
            }
            let (scales, mins) = crate::quant::unpack_q4k_scales(&s);
            for (j, &sc) in scales.iter().enumerate() {
                p.sci[(b * 8 + j) * PR + r] = i32::from(sc);
            }
            // Groups 2k and 2k + 1 share an i32 lane.
            for k in 0..4 {
                p.mn[(b * 4 + k) * PR + r] = u32::from(mins[2 * k]) | (u32::from(mins[2 * k + 1]) << 16);
            }
            p.dk[b * PR + r] = d;
            p.dm[b * PR + r] = dmin;
        }
        GgmlType::Q6_K => {
            let blk = row.add(b * 210);
            let d = f16(blk.add(208));
            let m3 = _mm256_set1_epi8(0x30);
            for h in 0..2 {
                let lo = _mm256_loadu_si256(blk.add(64 * h).cast());
                let hi = _mm256_loadu_si256(blk.add(64 * h + 32).cast());
                let qh = _mm256_loadu_si256(blk.add(128 + 32 * h).cast());
                let c = [
                    _mm256_or_si256(
                        _mm256_and_si256(lo, m4),
                        _mm256_and_si256(_mm256_slli_epi16::<4>(qh), m3),
                    ),
                    _mm256_or_si256(
                        _mm256_and_si256(hi, m4),
                        _mm256_and_si256(_mm256_slli_epi16::<2>(qh), m3),
                    ),
                    _mm256_or_si256(
                        _mm256_and_si256(_mm256_srli_epi16::<4>(lo), m4),
                        _mm256_and_si256(qh, m3),
                    ),
                    _mm256_or_si256(
                        _mm256_and_si256(_mm256_srli_epi16::<4>(hi), m4),
                        _mm256_and_si256(_mm256_srli_epi16::<2>(qh), m3),
                    ),
                ];
                for (k, v) in c.iter().enumerate() {
                    _mm256_storeu_si256(q.as_mut_ptr().add(128 * h + 32 * k).cast(), *v);
                }
            }
            let sc = blk.add(192).cast::<[i8; 16]>().read_unaligned();
            for g in 0..16 {
                p.sci[(b * 16 + g) * PR + r] = sc[g] as i32;
            }
            p.dk[b * PR + r] = d;
        }
        _ => unreachable!("panel_supported"),
    }
}

/// Unpacks rows `r0..r0 + nr` (`nr <= 16`; missing rows stay zero) into `p`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
unsafe fn unpack_panel(w: &QMatrix, r0: usize, nr: usize, p: &mut Panel) {
    let ty = w.ty;
    let bsz = ty.block_size();
    let nb = w.cols / bsz;
    let mut q = vec![0u8; bsz];
    p.q.fill(0);
    p.scf.fill(0.0);
    p.sci.fill(0);
    p.dk.fill(0.0);
    p.mn.fill(0);
    p.dm.fill(0.0);
    let quads = bsz / 4;
    for r in 0..nr {
        let row = w.row(r0 + r).as_ptr();
        for b in 0..nb {
            unpack_block(ty, row, b, &mut q, p, r);
            // Scatter the block's quads to their row lane of each interleaved vector.
            let dst = p.q.as_mut_ptr().add((b * quads * PR + r) * 4).cast::<u32>();
            for k in 0..quads {
                dst.add(k * PR)
                    .write_unaligned(q.as_ptr().add(4 * k).cast::<u32>().read_unaligned());
            }
        }
    }
}

/// Unpacks panel `pi` of repacked weights into `p`: the quant lines are already
/// row-interleaved, so each splits into its low and high nibbles (two quads; Q5_0/Q5_1/Q5_K
/// raise them by their fifth bits, Q6_K ORs in the high bits from its high-bit line), and Q8_0's
/// lines are the quads as they are.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
unsafe fn unpack_packed_panel(w: &PackedMatrix, pi: usize, p: &mut Panel) {
    let low = _mm512_set1_epi8(0x0f);
    let f16 = |bits: u16| half::f16::from_bits(bits).to_f32();
    let split = |lines: &[Line], dst: *mut u8| {
        for (v, line) in lines.iter().enumerate() {
            let q = _mm512_load_si512(line.0.as_ptr().cast());
            _mm512_storeu_si512(dst.add(2 * v * 64).cast(), _mm512_and_si512(q, low));
            _mm512_storeu_si512(
                dst.add((2 * v + 1) * 64).cast(),
                _mm512_and_si512(_mm512_srli_epi16::<4>(q), low),
            );
        }
    };
    if is_legacy(w.ty()) {
        let ty = w.ty();
        for b in 0..w.cols() / 32 {
            let (sc, lines) = w.legacy_block(pi, b);
            let dst = p.q.as_mut_ptr().add(b * 8 * 64);
            match ty {
                GgmlType::Q4_0 | GgmlType::Q4_1 => split(lines, dst),
                // Already unsigned (q + 128) quads.
                GgmlType::Q8_0 => std::ptr::copy_nonoverlapping(lines.as_ptr().cast::<u8>(), dst, 8 * 64),
                _ => {
                    let high = _mm512_load_si512(lines[4].0.as_ptr().cast());
                    for v in 0..4 {
                        let (lo, hi) = avx512_gemv::q5_line_quants(&lines[v], high, v);
                        _mm512_storeu_si512(dst.add(2 * v * 64).cast(), lo);
                        _mm512_storeu_si512(dst.add((2 * v + 1) * 64).cast(), hi);
                    }
                }
            }
            for r in 0..PR {
                p.scf[b * PR + r] = f16(sc[r]);
                // Q4_1/Q5_1's mins as the float offset per unit of Q8_1's `s`, as
                // `unpack_block`; the other types' offsets are the integer starts of
                // `LegacyTables::exact`, so their `mn` stays unread.
                if has_min(ty) {
                    p.mn[b * PR + r] = (-f16(sc[PR + r])).to_bits();
                }
            }
        }
        return;
    }
    if w.ty() == GgmlType::Q6_K {
        for b in 0..w.cols() / QK_K {
            let lines = w.q6_k_block(pi, b);
            for g in 0..16 {
                let quads = avx512_gemv::q6_group_quants(&lines[5 + 3 * g..8 + 3 * g]);
                for (k, v) in quads.iter().enumerate() {
                    _mm512_storeu_si512(p.q.as_mut_ptr().add((b * 64 + 4 * g + k) * 64).cast(), *v);
                }
            }
            for r in 0..PR {
                let d = f16(u16::from_le_bytes([lines[0].0[2 * r], lines[0].0[2 * r + 1]]));
                let sc = |g: usize| lines[1 + g / 4].0[16 * (g % 4) + r] as i8 as i32;
                for g in 0..16 {
                    p.sci[(b * 16 + g) * PR + r] = sc(g);
                }
                p.dk[b * PR + r] = d;
            }
        }
        return;
    }
    let q5 = w.ty() == GgmlType::Q5_K;
    for b in 0..w.cols() / QK_K {
        let lines = if q5 { w.q5_k_block(pi, b) } else { w.q4_k_block(pi, b) };
        let dst = p.q.as_mut_ptr().add(b * 64 * 64);
        if q5 {
            // Each sub-block's 5 lines are a Q5_0 block's: the same quads as the decode kernel.
            for j in 0..8 {
                let sub = &lines[K_HEAD_LINES + 5 * j..K_HEAD_LINES + 5 + 5 * j];
                let high = _mm512_load_si512(sub[4].0.as_ptr().cast());
                for v in 0..4 {
                    let (lo, hi) = avx512_gemv::q5_line_quants(&sub[v], high, v);
                    _mm512_storeu_si512(dst.add((8 * j + 2 * v) * 64).cast(), lo);
                    _mm512_storeu_si512(dst.add((8 * j + 2 * v + 1) * 64).cast(), hi);
                }
            }
        } else {
            split(&lines[K_HEAD_LINES..], dst);
        }
        for r in 0..PR {
            let half_at = |at: usize| u16::from_le_bytes([lines[0].0[at], lines[0].0[at + 1]]);
            let (d, dmin) = (f16(half_at(2 * r)), f16(half_at(32 + 2 * r)));
            let (scales, mins) = crate::quant::unpack_q4k_scales(&PackedMatrix::k_packed_scales(lines, r));
            for (j, &sc) in scales.iter().enumerate() {
                p.sci[(b * 8 + j) * PR + r] = i32::from(sc);
            }
            // As `unpack_block`: groups 2k and 2k + 1 share an i32 lane.
            for k in 0..4 {
                p.mn[(b * 4 + k) * PR + r] = u32::from(mins[2 * k]) | (u32::from(mins[2 * k + 1]) << 16);
            }
            p.dk[b * PR + r] = d;
            p.dm[b * PR + r] = dmin;
        }
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
unsafe fn bcast32(p: *const u8) -> __m512i {
    _mm512_set1_epi32(p.cast::<i32>().read_unaligned())
}

/// Legacy micro-kernel: 16 rows x `T` tokens over all blocks. `y[t]` are activation rows of
/// `astride`-byte blocks (Q8_0 or Q8_1, quants at `aq`); for block `b` of token `t`,
/// `tabs.scale` is the activation scale `d_y`, `tabs.start` the integer start of the row sums
/// and `tabs.offset_sum` what the panel's float offsets multiply (unless `EXACT` without a
/// min: then the start holds the whole offset).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn micro_legacy<const T: usize, const FLOAT_OFFSET: bool>(
    p: &Panel,
    nb: usize,
    (astride, aq): (usize, usize),
    y: [*const u8; T],
    tabs: &LegacyTables,
    t0: usize,
) -> [__m512; T] {
    let at = |t: usize, b: usize| (t0 + t) * nb + b;
    let mut acc = [_mm512_setzero_ps(); T];
    for b in 0..nb {
        let mut s: [__m512i; T] = std::array::from_fn(|t| _mm512_set1_epi32(tabs.start[at(t, b)]));
        for k in 0..8 {
            let wv = _mm512_loadu_si512(p.q.as_ptr().add((b * 8 + k) * 64).cast());
            for t in 0..T {
                s[t] = _mm512_dpbusd_epi32(s[t], wv, bcast32(y[t].add(b * astride + aq + 4 * k)));
            }
        }
        let scv = _mm512_loadu_ps(p.scf.as_ptr().add(b * PR));
        let mnv = _mm512_loadu_ps(p.mn.as_ptr().add(b * PR).cast());
        for t in 0..T {
            let v = _mm512_mul_ps(_mm512_cvtepi32_ps(s[t]), _mm512_set1_ps(tabs.scale[at(t, b)]));
            acc[t] = _mm512_fmadd_ps(v, scv, acc[t]);
            if FLOAT_OFFSET {
                acc[t] = _mm512_fnmadd_ps(mnv, _mm512_set1_ps(tabs.offset_sum[at(t, b)]), acc[t]);
            }
        }
    }
    acc
}

/// k-quant micro-kernel: 16 rows x `T` tokens over all super-blocks; `y[t]` are Q8_K rows and
/// `tabs` their [`KTables`] entries, token `t` of the tile being token `t0 + t` of the matmul.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn micro_k<const T: usize, const G: usize>(
    p: &Panel,
    nsb: usize,
    y: [*const u8; T],
    tabs: &KTables,
    t0: usize,
) -> [__m512; T] {
    let gps = QK_K / G;
    let tab = |t: usize, sb: usize| tabs.0.as_ptr().add(((t0 + t) * nsb + sb) * KTables::per_super_block(G));
    let mut acc = [_mm512_setzero_ps(); T];
    for sb in 0..nsb {
        // Group sums times the group scales, added in integers: |scale * sum| * groups stays
        // below 2^28 for every k-quant (Q6_K: 127 * (63 * 127 * 16) * 16).
        let mut scaled = [_mm512_setzero_si512(); T];
        for g in 0..gps {
            // Q6_K's sums start at -32 * sum(y): its quants' offset, exact in integers.
            let mut s: [__m512i; T] = std::array::from_fn(|t| {
                if G == 16 {
                    _mm512_set1_epi32(tab(t, sb).add(g).read())
                } else {
                    _mm512_setzero_si512()
                }
            });
            for k in 0..G / 4 {
                let quad = sb * 64 + g * (G / 4) + k;
                let wv = _mm512_loadu_si512(p.q.as_ptr().add(quad * 64).cast());
                for t in 0..T {
                    s[t] = _mm512_dpbusd_epi32(s[t], wv, bcast32(y[t].add(sb * 292 + 4 + 4 * (quad - sb * 64))));
                }
            }
            let scv = _mm512_loadu_si512(p.sci.as_ptr().add((sb * gps + g) * PR).cast());
            for t in 0..T {
                scaled[t] = _mm512_add_epi32(scaled[t], _mm512_mullo_epi32(s[t], scv));
            }
        }
        let dkv = _mm512_loadu_ps(p.dk.as_ptr().add(sb * PR));
        if G == 16 {
            for t in 0..T {
                let dy = _mm512_set1_ps(y[t].add(sb * 292).cast::<f32>().read_unaligned());
                acc[t] = q6_k_super_block_step(acc[t], (scaled[t], dkv), dy);
            }
            continue;
        }
        // The mins times the group sums of y, two groups per i32 lane.
        let tab_sb: [*const i32; T] = std::array::from_fn(|t| tab(t, sb));
        let mut macc = [_mm512_setzero_si512(); T];
        for pr in 0..4 {
            let mv = _mm512_loadu_si512(p.mn.as_ptr().add((sb * 4 + pr) * PR).cast());
            for t in 0..T {
                macc[t] = dpwssd_broadcast(macc[t], mv, tab_sb[t].add(pr));
            }
        }
        let dmv = _mm512_loadu_ps(p.dm.as_ptr().add(sb * PR));
        for t in 0..T {
            let dy = _mm512_set1_ps(y[t].add(sb * 292).cast::<f32>().read_unaligned());
            acc[t] = k_super_block_step(acc[t], (scaled[t], dkv), (macc[t], dmv), dy);
        }
    }
    acc
}

/// One super-block's float step of Q4_K/Q5_K for 16 rows and one token: `acc + d_y (d scaled -
/// dmin mins)` (`scaled`: the scaled group sums, `mins`: the mins times the group sums of y).
/// Every VNNI kernel of the two types takes it (the prefill panels, on `vpdpbusd` or AMX tiles,
/// and the decode kernels), so a token gets the same bits from each. Scaling by `d_y` once,
/// after the difference, takes one multiply fewer per token than scaling both terms
/// (7B-shaped 4096 x 4096 x 256 tokens of prefill, one Zen 4 core: +1 %).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
pub(super) unsafe fn k_super_block_step(
    acc: __m512,
    (scaled, d): (__m512i, __m512),
    (mins, dmin): (__m512i, __m512),
    dy: __m512,
) -> __m512 {
    let v = _mm512_fnmadd_ps(
        _mm512_cvtepi32_ps(mins),
        dmin,
        _mm512_mul_ps(_mm512_cvtepi32_ps(scaled), d),
    );
    _mm512_fmadd_ps(v, dy, acc)
}

/// One super-block's float step of Q6_K for 16 rows and one token: `acc + (d d_y) scaled`
/// (`scaled`: the scaled group sums, its offset of 32 included). Every VNNI kernel of the type
/// takes it, as [`k_super_block_step`] for Q4_K/Q5_K, so a token gets the same bits from each.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
pub(super) unsafe fn q6_k_super_block_step(acc: __m512, (scaled, d): (__m512i, __m512), dy: __m512) -> __m512 {
    _mm512_fmadd_ps(_mm512_cvtepi32_ps(scaled), _mm512_mul_ps(d, dy), acc)
}

/// `acc + vpdpwssd(w, the i32 at p broadcast)` as one instruction with an embedded broadcast.
/// Written out because LLVM splits the intrinsic into `vpmaddwd` + `vpaddd` + a broadcast
/// load for CPUs it does not know to have a fast `vpdpwssd` (a generic build), which costs
/// the mins of the Q4_K/Q5_K panels 1.5 % of the prefill on Zen 4 (7B-shaped 4096 x 4096 x
/// 256 tokens, one core).
///
/// # Safety
/// AVX-512 VNNI must be available and `p` valid for reading an i32.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
unsafe fn dpwssd_broadcast(acc: __m512i, w: __m512i, p: *const i32) -> __m512i {
    let mut acc = acc;
    // SAFETY: the caller's contract (VNNI, `p` readable); the instruction reads 4 bytes at
    // `p` and writes only `acc`.
    unsafe {
        std::arch::asm!(
            "vpdpwssd {acc}, {w}, dword ptr [{p}]{{1to16}}",
            acc = inout(zmm_reg) acc,
            w = in(zmm_reg) w,
            p = in(reg) p,
            options(pure, readonly, nostack, preserves_flags),
        );
    }
    acc
}

/// The tile sums of one step of the AMX micro-kernels: a super-block of two token tiles
/// (`amx::Tiles::super_block`) or four blocks of one (`amx::Tiles::four_blocks`).
#[repr(C, align(64))]
struct PairSums([amx::TileSums; 4]);

/// Runs `steps` steps software-pipelined over two sum buffers: the tiles multiply step i + 1
/// (`multiply`) while the vector units scale step i's sums (`scale`).
#[inline(always)]
fn pipelined(
    steps: usize,
    sums: &mut [PairSums; 2],
    multiply: impl Fn(usize, &mut PairSums),
    mut scale: impl FnMut(usize, &PairSums),
) {
    if steps == 0 {
        return;
    }
    multiply(0, &mut sums[0]);
    for i in 0..steps {
        let (even, odd) = sums.split_at_mut(1);
        let (done, next) = if i % 2 == 0 {
            (&even[0], &mut odd[0])
        } else {
            (&odd[0], &mut even[0])
        };
        if i + 1 < steps {
            multiply(i + 1, next);
        }
        scale(i, done);
    }
}

/// The store mask of a panel's `nr` rows (all 16 but in a matrix's last panel).
pub(super) fn row_mask(nr: usize) -> __mmask16 {
    if nr >= 16 {
        0xffff
    } else {
        (1u16 << nr) - 1
    }
}

/// Bytes per activation block and where its quants start, for a 32-element weight type:
/// Q8_1 (`d`, `s`, quants) for Q4_1/Q5_1, else Q8_0 (`d`, quants).
fn legacy_act_layout(ty: GgmlType) -> (usize, usize) {
    if has_min(ty) {
        (Q8_1, 4)
    } else {
        (Q8_0, 2)
    }
}

/// Panels per task of [`matmul_panels_amx`]: each pair of token tiles is loaded once (into
/// L1) for this many panels instead of once per panel (7B-shaped 4096 x 4096, 256 tokens, one
/// core of a Sapphire Rapids class Xeon VM: 4 panels +3 % for Q4_K, +9 % for Q6_K over one).
const AMX_PANELS: usize = 4;

/// The k-quant prefill matmul on AMX tiles ([`matmul_panels`]' contract): each task takes up
/// to [`AMX_PANELS`] panels and a chunk of tokens; each super-block's integer sums come from
/// [`amx::Tiles::super_block`] over the panels rebuilt as [`amx::TileWeights`] (group scales
/// folded into the weights), and the float steps after them are [`micro_k`]'s, in its order:
/// the same sums and steps, so the same bits as the `vpdpbusd` panels.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn matmul_panels_amx(pool: &ThreadPool, w: &QMatrix, acts: &[u8], arb: usize, n_tokens: usize, out: &mut [f32]) {
    let (ty, rows, cols) = (w.ty, w.rows, w.cols);
    let nsb = cols / QK_K;
    // Q6_K's offset is folded into its tile weights: only the mins read the tables.
    let tabs = if ty == GgmlType::Q6_K {
        KTables(Vec::new())
    } else {
        KTables::new(ty, acts, arb, n_tokens, nsb)
    };
    let tile_acts = amx::TileActivations::from_q8_k(acts, arb, n_tokens, cols);
    let n_groups = rows.div_ceil(PR * AMX_PANELS);
    let n_chunks = n_tokens.div_ceil(TOK_CHUNK);
    let outp = SyncPtr(out.as_mut_ptr());
    let offset = if ty == GgmlType::Q6_K { 32 } else { 0 };
    pool.run(n_groups * n_chunks, &|task| {
        let (gi, ci) = (task / n_chunks, task % n_chunks);
        let panels = gi * AMX_PANELS..((gi + 1) * AMX_PANELS).min(rows.div_ceil(PR));
        // SAFETY (the whole task): the caller guarantees AVX-512 and AMX and the type; the
        // panels are `w`'s; tokens and rows are in range of `acts` and `out`, and this task
        // is the only writer of its rows' outputs.
        unsafe {
            let unpacked: Vec<Panel> = panels.clone().map(|pi| Panel::unpacked(w, pi)).collect();
            let np = unpacked.len();
            let tokens = ci * TOK_CHUNK..((ci + 1) * TOK_CHUNK).min(n_tokens);
            let n = tokens.len();
            let mut acc = vec![_mm512_setzero_ps(); n * np];
            let mut weights: Vec<amx::TileWeights> = (0..np).map(|_| amx::TileWeights::new()).collect();
            let mut sums = Box::new([PairSums([[0; 256]; 4]), PairSums([[0; 256]; 4])]);
            let first_tile = tokens.start / amx::TILE_ROWS;
            let pairs = n.div_ceil(2 * amx::TILE_ROWS);
            let tiles = amx::Tiles::configure(amx::TileShape::SuperBlocks);
            let g = group(ty);
            let scales_per_sb = PR * QK_K / g;
            for sb in 0..nsb {
                // This super-block of every panel as B tiles (8 KiB each, kept in L1 for all
                // the token tiles).
                for (p, tw) in unpacked.iter().zip(&mut weights) {
                    let q = p.q[sb * 4096..(sb + 1) * 4096]
                        .try_into()
                        .expect("a super-block of quads");
                    tw.build(q, &p.sci[sb * scales_per_sb..(sb + 1) * scales_per_sb], g, offset);
                }
                // Steps (pair of token tiles, panel).
                let multiply = |i: usize, sums: &mut PairSums| {
                    let tile = first_tile + 2 * (i / np);
                    let a = [tile_acts.super_block(tile, sb), tile_acts.super_block(tile + 1, sb)];
                    tiles.super_block(a, weights[i % np].as_ptr(), &mut sums.0);
                };
                pipelined(pairs * np, &mut sums, multiply, |i, done| {
                    let (pair, j) = (i / np, i % np);
                    let t0 = 2 * amx::TILE_ROWS * pair;
                    let acc = &mut acc[j * n + t0..(j * n + t0 + 2 * amx::TILE_ROWS).min((j + 1) * n)];
                    k_steps(
                        ty,
                        &unpacked[j],
                        sb,
                        done,
                        &tile_acts,
                        &tabs,
                        (tokens.start + t0, nsb),
                        acc,
                    );
                });
            }
            for (j, pi) in panels.enumerate() {
                let (r0, nr) = (pi * PR, PR.min(rows - pi * PR));
                let mask = row_mask(nr);
                for (t, v) in acc[j * n..(j + 1) * n].iter().enumerate() {
                    _mm512_mask_storeu_ps(outp.get().add((tokens.start + t) * rows + r0), mask, *v);
                }
            }
        }
    });
}

/// [`micro_k`]'s float steps for super-block `sb` of panel `p` and the tokens `t0..` of
/// `acc` (at most 32: two token tiles), from the tile sums of the super-block.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
#[allow(clippy::too_many_arguments)]
unsafe fn k_steps(
    ty: GgmlType,
    p: &Panel,
    sb: usize,
    sums: &PairSums,
    tile_acts: &amx::TileActivations,
    tabs: &KTables,
    (t0, nsb): (usize, usize),
    acc: &mut [__m512],
) {
    let dkv = _mm512_loadu_ps(p.dk.as_ptr().add(sb * PR));
    // Q6_K has no mins (its panel holds none to load).
    let mins = ty != GgmlType::Q6_K;
    let (dmv, mv) = if mins {
        let mv = std::array::from_fn(|pr| _mm512_loadu_si512(p.mn.as_ptr().add((sb * 4 + pr) * PR).cast()));
        (_mm512_loadu_ps(p.dm.as_ptr().add(sb * PR)), mv)
    } else {
        (_mm512_setzero_ps(), [_mm512_setzero_si512(); 4])
    };
    for (i, acc) in acc.iter_mut().enumerate() {
        let (lo, hi) = (&sums.0[2 * (i / 16)], &sums.0[2 * (i / 16) + 1]);
        let at = (i % 16) * 16;
        let lo = _mm512_loadu_si512(lo.as_ptr().add(at).cast());
        let hi = _mm512_loadu_si512(hi.as_ptr().add(at).cast());
        let scaled = _mm512_add_epi32(lo, _mm512_slli_epi32::<6>(hi));
        let dy = _mm512_set1_ps(tile_acts.scale(t0 + i, sb));
        if !mins {
            *acc = q6_k_super_block_step(*acc, (scaled, dkv), dy);
            continue;
        }
        let tab = tabs
            .0
            .as_ptr()
            .add(((t0 + i) * nsb + sb) * KTables::per_super_block(32));
        let mut macc = _mm512_setzero_si512();
        for pr in 0..4 {
            macc = dpwssd_broadcast(macc, mv[pr], tab.add(pr));
        }
        *acc = k_super_block_step(*acc, (scaled, dkv), (macc, dmv), dy);
    }
}

/// [`micro_legacy`] for one tile of 16 tokens starting at `t0` on AMX tiles: each block's
/// integer sums from one tile product (`a`: the tile's first block in a
/// [`amx::TileActivations`] of blocks), then the same float steps in the same order, so the
/// same bits. The tiles multiply the next four blocks while the vector units scale these.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn micro_legacy_amx<const FLOAT_OFFSET: bool>(
    (tiles, sums): (&amx::Tiles, &mut [PairSums; 2]),
    p: &Panel,
    nb: usize,
    a: *const u8,
    tabs: &LegacyTables,
    t0: usize,
) -> [__m512; 16] {
    let at = |t: usize, b: usize| (t0 + t) * nb + b;
    let mut acc = [_mm512_setzero_ps(); 16];
    let scale = |sums: &amx::TileSums, b: usize, acc: &mut [__m512; 16]| {
        let scv = _mm512_loadu_ps(p.scf.as_ptr().add(b * PR));
        let mnv = _mm512_loadu_ps(p.mn.as_ptr().add(b * PR).cast());
        for t in 0..16 {
            let s = _mm512_loadu_si512(sums.as_ptr().add(t * 16).cast());
            let s = _mm512_add_epi32(s, _mm512_set1_epi32(tabs.start[at(t, b)]));
            let v = _mm512_mul_ps(_mm512_cvtepi32_ps(s), _mm512_set1_ps(tabs.scale[at(t, b)]));
            acc[t] = _mm512_fmadd_ps(v, scv, acc[t]);
            if FLOAT_OFFSET {
                acc[t] = _mm512_fnmadd_ps(mnv, _mm512_set1_ps(tabs.offset_sum[at(t, b)]), acc[t]);
            }
        }
    };
    let bytes = amx::BLOCK_TILE_BYTES;
    let quads = nb / 4;
    let multiply = |q: usize, sums: &mut PairSums| {
        tiles.four_blocks(a.add(4 * q * bytes), p.q.as_ptr().add(4 * q * bytes), &mut sums.0);
    };
    pipelined(quads, sums, multiply, |q, done| {
        for (k, block_sums) in done.0.iter().enumerate() {
            scale(block_sums, 4 * q + k, &mut acc);
        }
    });
    for b in 4 * quads..nb {
        tiles.one_block(a.add(b * bytes), p.q.as_ptr().add(b * bytes), &mut sums[0].0[0]);
        scale(&sums[0].0[0], b, &mut acc);
    }
    acc
}

/// Per-super-block activation tables of the k-quant path, token-major (`t * nsb + sb`), made
/// once per matmul from the Q8_K `bsums` (sums of 16 quants).
/// Q4_K/Q5_K: 4 i32 per super-block, each the i16 pair of the sums of y over groups 2k and
/// 2k + 1 (32 elements each, |sum| <= 32 * 127), multiplied by the panel's paired mins in one
/// `vpdpwssd`. Q6_K: 16 i32 per super-block, -32 * the sum of each 16-element group: the start
/// of that group's sums, so the quants' offset of 32 costs no instruction of the micro-kernel.
struct KTables(Vec<i32>);

impl KTables {
    /// Entries per super-block for groups of `g` elements.
    const fn per_super_block(g: usize) -> usize {
        if g == 16 {
            16
        } else {
            4
        }
    }

    fn new(ty: GgmlType, acts: &[u8], arb: usize, n_tokens: usize, nsb: usize) -> KTables {
        let g = group(ty);
        let mut tabs = Vec::with_capacity(n_tokens * nsb * KTables::per_super_block(g));
        for row in acts.chunks_exact(arb).take(n_tokens) {
            for blk in row.chunks_exact(292).take(nsb) {
                if g == 16 {
                    tabs.extend((0..16).map(|i| -32 * q8_k_bsum(blk, i)));
                } else {
                    tabs.extend((0..4).map(|k| {
                        let sum = |j: usize| q8_k_sub_block_sum(blk, j) as i16 as u16 as u32;
                        (sum(2 * k) | (sum(2 * k + 1) << 16)) as i32
                    }));
                }
            }
        }
        KTables(tabs)
    }
}

/// Per-block activation tables of the legacy path, token-major (`t * nb + b`).
#[derive(Default)]
struct LegacyTables {
    /// Whether the weights' offset (8 for Q4_0, 16 for Q5_0, 128 for Q8_0's `q + 128`) enters
    /// exactly, as the integer start `-offset * sum(y)` of each block's row sums, instead of as
    /// a float offset times `d_y * sum(y)` (which cancels most of Q8_0's biased sum and loses
    /// its low bits, and costs an FMA per block and token). Set for panels built from the
    /// repacked form: Q8_0, Q4_1, Q5_0 and Q5_1, whose decode kernel
    /// (`avx512_gemv::panel_legacy`) computes the same integer sums and float steps, so a
    /// token gets the same result from either (Q4_1 and Q5_1 have no offset: their start is 0
    /// either way), and Q4_0 (its decode kernel has the same integer sums, its own float
    /// steps; 7B pp256 +8-10 %); the file layout keeps the float offset.
    exact: bool,
    /// `d_y` of every block.
    scale: Vec<f32>,
    /// The integer start of each block's row sums (0 unless `exact`).
    start: Vec<i32>,
    /// What the panel's float offsets `mn` multiply: `d_y * sum(y)` (Q8_0 activations) or, for
    /// Q8_1 (Q4_1/Q5_1), the block's own f16 `s`, as ggml's dot products use.
    offset_sum: Vec<f32>,
}

impl LegacyTables {
    fn new(ty: GgmlType, packed: bool, acts: &[u8], n_tokens: usize, nb: usize) -> LegacyTables {
        let f16 = |b: &[u8]| half::f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32();
        let min = has_min(ty);
        // Every legacy panel type, from the repacked form.
        let exact = packed;
        let offset = match ty {
            GgmlType::Q4_0 => 8,
            GgmlType::Q5_0 => 16,
            _ => 128,
        };
        let stride = if min { Q8_1 } else { Q8_0 };
        let mut tabs = LegacyTables {
            exact,
            ..LegacyTables::default()
        };
        for blk in acts.chunks_exact(stride).take(n_tokens * nb) {
            let d = f16(blk);
            tabs.scale.push(d);
            if min {
                tabs.offset_sum.push(f16(&blk[2..]));
                tabs.start.push(0);
            } else {
                let sum = blk[2..].iter().map(|&v| v as i8 as i32).sum::<i32>();
                tabs.offset_sum.push(d * sum as f32);
                tabs.start.push(if exact { -offset * sum } else { 0 });
            }
        }
        tabs
    }

    /// Whether the micro-kernel applies the panel's float offsets.
    fn float_offset(&self, ty: GgmlType) -> bool {
        !self.exact || has_min(ty)
    }
}

/// The per-token activation tables of one matmul, by weight family.
enum Tables {
    Legacy(LegacyTables),
    K(KTables),
}

/// Runs a micro-tile of `nt` tokens starting at `t0` for the panel at rows `r0..r0+nr` and
/// stores the 16 (or `nr`) results per token into `out[t * rows + r0..]`: a whole tile of 16
/// tokens of a 32-element format on AMX tiles when `amx` is given, else `nt <= TT` tokens with
/// `vpdpbusd`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
#[allow(clippy::too_many_arguments)]
unsafe fn run_micro(
    ty: GgmlType,
    p: &Panel,
    cols: usize,
    acts: &[u8],
    arb: usize,
    tabs: &Tables,
    t0: usize,
    nt: usize,
    r0: usize,
    nr: usize,
    rows: usize,
    out: *mut f32,
    amx: Option<(&amx::Tiles, &amx::TileActivations, &mut [PairSums; 2])>,
) {
    let mask = row_mask(nr);
    if let (Some((tiles, tile_acts, sums)), Tables::Legacy(tabs)) = (amx, tabs) {
        debug_assert!(nt == amx::TILE_ROWS && t0.is_multiple_of(amx::TILE_ROWS));
        let a = tile_acts.block(t0 / amx::TILE_ROWS, 0);
        let res = if tabs.float_offset(ty) {
            micro_legacy_amx::<true>((tiles, sums), p, cols / 32, a, tabs, t0)
        } else {
            micro_legacy_amx::<false>((tiles, sums), p, cols / 32, a, tabs, t0)
        };
        for (i, v) in res.iter().enumerate() {
            _mm512_mask_storeu_ps(out.add((t0 + i) * rows + r0), mask, *v);
        }
        return;
    }
    macro_rules! go {
        ($T:literal) => {{
            let y: [*const u8; $T] = std::array::from_fn(|i| acts.as_ptr().add((t0 + i) * arb));
            let res = match tabs {
                Tables::Legacy(tabs) => {
                    let act = legacy_act_layout(ty);
                    if tabs.float_offset(ty) {
                        micro_legacy::<$T, true>(p, cols / 32, act, y, tabs, t0)
                    } else {
                        micro_legacy::<$T, false>(p, cols / 32, act, y, tabs, t0)
                    }
                }
                Tables::K(tabs) if ty == GgmlType::Q6_K => micro_k::<$T, 16>(p, cols / QK_K, y, tabs, t0),
                Tables::K(tabs) => micro_k::<$T, 32>(p, cols / QK_K, y, tabs, t0),
            };
            for (i, v) in res.iter().enumerate() {
                _mm512_mask_storeu_ps(out.add((t0 + i) * rows + r0), mask, *v);
            }
        }};
    }
    match nt {
        1 => go!(1),
        2 => go!(2),
        3 => go!(3),
        4 => go!(4),
        5 => go!(5),
        6 => go!(6),
        7 => go!(7),
        _ => go!(8),
    }
}

/// The prefill matmul through VNNI panels: `out[t * rows + r] = w[r] . act[t]`, where `acts`
/// holds `n_tokens` rows of `arb` bytes in the partner format of `w.ty`.
///
/// # Safety
/// The CPU must support AVX-512 F/BW/VL/VNNI plus AVX2, FMA and F16C, the type table's
/// `vnni_panels` must hold for `w.ty`, `acts` must hold `n_tokens` activation rows of `w.cols` elements and
/// `out` must hold `n_tokens * w.rows` floats; `amx` requires [`amx::available`] (the panels
/// then run on AMX tiles: the k-quants all tokens, the 32-element formats whole tiles of 16).
pub(super) unsafe fn matmul_panels(
    pool: &ThreadPool,
    w: &QMatrix,
    acts: &[u8],
    arb: usize,
    n_tokens: usize,
    out: &mut [f32],
    amx: bool,
) {
    let ty = w.ty;
    let (rows, cols) = (w.rows, w.cols);
    if amx && !is_legacy(ty) {
        // SAFETY: the caller's contract.
        return unsafe { matmul_panels_amx(pool, w, acts, arb, n_tokens, out) };
    }
    let tabs = if is_legacy(ty) {
        Tables::Legacy(LegacyTables::new(ty, w.packed.is_some(), acts, n_tokens, cols / 32))
    } else {
        Tables::K(KTables::new(ty, acts, arb, n_tokens, cols / QK_K))
    };
    let n_panels = rows.div_ceil(PR);
    let n_chunks = n_tokens.div_ceil(TOK_CHUNK);
    let outp = SyncPtr(out.as_mut_ptr());
    // With AMX, the whole tiles of 16 tokens of the 32-element formats run on tiles.
    let tile_acts = amx.then(|| amx::TileActivations::from_blocks(acts, arb, n_tokens, cols, legacy_act_layout(ty)));
    pool.run(n_panels * n_chunks, &|task| {
        // Panel-major order: consecutive tasks of one thread reuse nothing, but each task's
        // unpacked panel serves its whole token chunk.
        let (pi, ci) = (task / n_chunks, task % n_chunks);
        let r0 = pi * PR;
        let nr = PR.min(rows - r0);
        // SAFETY: the caller guarantees the CPU features and the type; `pi` is a panel of `w`.
        let p = unsafe { Panel::unpacked(w, pi) };
        let t_end = ((ci + 1) * TOK_CHUNK).min(n_tokens);
        let mut t0 = ci * TOK_CHUNK;
        // This thread's tiles and sum buffers, with the activations laid out for them.
        let mut on_amx = tile_acts.as_ref().map(|tile_acts| {
            // SAFETY: the caller checked `amx::available` when `amx` is set.
            let tiles = unsafe { amx::Tiles::configure(amx::TileShape::Blocks) };
            let sums = Box::new([PairSums([[0; 256]; 4]), PairSums([[0; 256]; 4])]);
            (tiles, tile_acts, sums)
        });
        while t0 < t_end {
            let amx = on_amx
                .as_mut()
                .filter(|(_, tile_acts, _)| t0 / amx::TILE_ROWS < tile_acts.tiles())
                .map(|(tiles, tile_acts, sums)| (&*tiles, *tile_acts, &mut **sums));
            let nt = if amx.is_some() {
                amx::TILE_ROWS
            } else {
                TT.min(t_end - t0)
            };
            // SAFETY: tokens t0..t0+nt and rows r0..r0+nr are in range of `acts` and `out`;
            // this task is the only writer of those outputs.
            unsafe { run_micro(ty, &p, cols, acts, arb, &tabs, t0, nt, r0, nr, rows, outp.get(), amx) };
            t0 += nt;
        }
    });
}
