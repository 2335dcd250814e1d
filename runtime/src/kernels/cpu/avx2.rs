//! AVX2 + FMA + F16C kernels (x86-64 since Haswell / Zen 1).
//!
//! Every kernel computes one weight row against `T` activation rows at once (`T` a const
//! generic, 1 for decode): each weight block is loaded and unpacked into registers once and
//! then multiplied with the matching block of all `T` tokens, which is what makes prefill a
//! real matrix-matrix kernel rather than `T` separate matvecs.
//!
//! Integer products use `maddubs` (u8 x i8 -> i16 pairs) and `madd` (i16 x i16 -> i32 pairs).
//! Signed weights (Q4_0, Q8_0) go through the sign trick `|w| * sign(y, w)`; the k-quants are
//! unpacked to unsigned 4/5/6-bit values with their offsets folded into a per-group "min"
//! applied through the Q8_K `bsums`, so one generic loop serves Q4_K, Q5_K and Q6_K.
//!
//! Kernel `tile_<stem>` (e.g. `tile_q4_0_q8_0`; the stems are the type table's, `table.rs`) is
//! the twin of the scalar specification `scalar::vec_dot_<stem>`; the macro-generated ones are
//! named in their macro invocations below.

// Kernel loops index several arrays (weights, per-token sums, scales) with one counter over
// const-generic bounds the compiler unrolls; iterator chains would only obscure that.
#![allow(clippy::needless_range_loop)]

use super::prefetch;
use super::scalar;
use crate::quant::{GgmlType, QK_K};
use std::arch::x86_64::*;

/// f16 bits at `p` (any alignment) to f32. Reads 4 bytes: `p + 2..p + 4` must be readable
/// too (true for every scale except Q6_K's, which ends its block; see [`h2f_last`]).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn h2f(p: *const u8) -> f32 {
    // A 32-bit `vmovd` load: loading just the u16 compiles to `vpinsrw` into whatever register
    // is free, a false dependency that chained every block to the accumulator (3x slower).
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(p.cast::<i32>().read_unaligned())))
}

/// f16 bits at `p` to f32, reading exactly 2 bytes.
#[inline]
unsafe fn h2f_last(p: *const u8) -> f32 {
    half::f16::from_bits(p.cast::<u16>().read_unaligned()).to_f32()
}

#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(super) unsafe fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn load256(p: *const u8) -> __m256i {
    _mm256_loadu_si256(p.cast())
}

/// Block strides in bytes (also the AVX-512 kernels').
pub(super) const Q4_0: usize = 18;
pub(super) const Q4_1: usize = 20;
pub(super) const Q5_0: usize = 22;
pub(super) const Q5_1: usize = 24;
pub(super) const Q8_0: usize = 34;
pub(super) const Q8_1: usize = 36;
const Q8_K: usize = 292;

/// One weight row (`w`, `nb` blocks) against `T` activation rows: `out[t] = w . a[t]`.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C; `w` and every `a[t]` must hold `nb` blocks of the
/// weight and activation formats of `ty`.
pub(super) unsafe fn tile(ty: GgmlType, n: usize, w: &[u8], acts: &[&[u8]], out: &mut [f32]) {
    macro_rules! go {
        ($f:ident, $nb:expr) => {{
            let nb = $nb;
            match acts.len() {
                1 => $f::<1>(w.as_ptr(), std::array::from_fn(|t| acts[t].as_ptr()), nb, out),
                2 => $f::<2>(w.as_ptr(), std::array::from_fn(|t| acts[t].as_ptr()), nb, out),
                3 => $f::<3>(w.as_ptr(), std::array::from_fn(|t| acts[t].as_ptr()), nb, out),
                4 => $f::<4>(w.as_ptr(), std::array::from_fn(|t| acts[t].as_ptr()), nb, out),
                _ => {
                    for (a, o) in acts.chunks(4).zip(out.chunks_mut(4)) {
                        tile(ty, n, w, a, o);
                    }
                }
            }
        }};
    }
    match ty {
        GgmlType::F32 => go!(tile_f32_f32, n),
        GgmlType::F16 => go!(tile_f16_f32, n),
        GgmlType::BF16 => go!(tile_bf16_f32, n),
        GgmlType::Q4_0 => go!(tile_q4_0_q8_0, n / 32),
        GgmlType::Q4_1 => go!(tile_q4_1_q8_1, n / 32),
        GgmlType::Q8_0 => go!(tile_q8_0_q8_0, n / 32),
        GgmlType::Q5_0 => go!(tile_q5_0_q8_0, n / 32),
        GgmlType::Q5_1 => go!(tile_q5_1_q8_1, n / 32),
        GgmlType::Q4_K => go!(tile_q4_k_q8_k, n / QK_K),
        GgmlType::Q5_K => go!(tile_q5_k_q8_k, n / QK_K),
        GgmlType::Q6_K => go!(tile_q6_k_q8_k, n / QK_K),
        _ => scalar::tile(ty, n, w, acts, out),
    }
}

// --- float weights -------------------------------------------------------------------------

/// Shared body of the float kernels: `load(i)` gives 8 weights starting at element `i`, each
/// `$elem_bytes` bytes wide.
macro_rules! float_tile {
    ($name:ident, $elem_bytes:expr, $load:expr, $scalar:expr) => {
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn $name<const T: usize>(w: *const u8, a: [*const u8; T], n: usize, out: &mut [f32]) {
            // Two accumulators per token (even / odd 8-element steps) halve the FMA dependency
            // chain, which bounds a single token on rows already in cache.
            let mut acc = [_mm256_setzero_ps(); T];
            let mut acc2 = [_mm256_setzero_ps(); T];
            let step = |i: usize, acc: &mut [__m256; T]| {
                let wv: __m256 = $load(w, i);
                for t in 0..T {
                    let av = _mm256_loadu_ps(a[t].cast::<f32>().add(i));
                    acc[t] = _mm256_fmadd_ps(wv, av, acc[t]);
                }
            };
            let n8 = n / 8 * 8;
            let prefetch_rows = prefetch::file_rows(T);
            let mut i = 0;
            while i + 16 <= n8 {
                // One prefetch per 64 bytes of weights: every step of f32, every other of f16.
                if prefetch_rows && (i * $elem_bytes) % 64 < 16 * $elem_bytes {
                    prefetch::file_lines::<64>(w.add(i * $elem_bytes), 0);
                }
                step(i, &mut acc);
                step(i + 8, &mut acc2);
                i += 16;
            }
            if i < n8 {
                step(i, &mut acc);
            }
            for t in 0..T {
                let mut s = hsum(_mm256_add_ps(acc[t], acc2[t]));
                for j in n8..n {
                    s += $scalar(w, j) * a[t].cast::<f32>().add(j).read_unaligned();
                }
                out[t] = s;
            }
        }
    };
}

float_tile!(
    tile_f32_f32,
    4,
    |w: *const u8, i| _mm256_loadu_ps(w.cast::<f32>().add(i)),
    |w: *const u8, j| w.cast::<f32>().add(j).read_unaligned()
);
float_tile!(
    tile_f16_f32,
    2,
    |w: *const u8, i| _mm256_cvtph_ps(_mm_loadu_si128(w.add(2 * i).cast())),
    |w: *const u8, j| h2f_last(w.add(2 * j))
);
float_tile!(
    tile_bf16_f32,
    2,
    |w: *const u8, i| _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(_mm_loadu_si128(
        w.add(2 * i).cast()
    )))),
    |w: *const u8, j| f32::from_bits((w.add(2 * j).cast::<u16>().read_unaligned() as u32) << 16)
);

// --- legacy 32-element blocks --------------------------------------------------------------

/// Signed weights `q` (i8) times `y`: 8 i32 lanes, each the sum of 4 products.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn dot_signed(abs_q: __m256i, q: __m256i, y: __m256i) -> __m256i {
    let p = _mm256_maddubs_epi16(abs_q, _mm256_sign_epi8(y, q));
    _mm256_madd_epi16(p, _mm256_set1_epi16(1))
}

/// The f16 at `p + i * stride` for `i < count` (zeros beyond) as 8 f32 lanes. Converting 8
/// block scales at once keeps the conversion off the accumulation chain; a one-lane
/// conversion compiles to `vpinsrw` into a live register, a false dependency that made the
/// legacy kernels three times slower.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(super) unsafe fn scales8(p: *const u8, stride: usize, count: usize) -> __m256 {
    let mut h = _mm_setzero_si128();
    macro_rules! lane {
        ($i:literal) => {
            if $i < count {
                h = _mm_insert_epi16::<$i>(h, p.add($i * stride).cast::<i16>().read_unaligned() as i32);
            }
        };
    }
    lane!(0);
    lane!(1);
    lane!(2);
    lane!(3);
    lane!(4);
    lane!(5);
    lane!(6);
    lane!(7);
    _mm256_cvtph_ps(h)
}

/// A legacy kernel whose weights become 32 signed i8 quants per block (Q4_0, Q5_0, Q8_0; Q8_0
/// activations): `$quants` is an expression of `$wb`, the block's first byte (its f16 scale),
/// evaluated inside the kernel with `$setup`'s constants in scope. Products go through the
/// sign trick ([`dot_signed`]).
macro_rules! signed_legacy_tile {
    ($(#[$doc:meta])* $name:ident, $stride:expr, { $($setup:stmt;)* }, |$wb:ident| $quants:expr) => {
        $(#[$doc])*
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn $name<const T: usize>(w: *const u8, a: [*const u8; T], nb: usize, out: &mut [f32]) {
            $($setup)*
            let mut acc = [_mm256_setzero_ps(); T];
            let mut acc2 = [_mm256_setzero_ps(); T];
            let prefetch_rows = prefetch::file_rows(T);
            let mut b0 = 0;
            while b0 < nb {
                let cnt = (nb - b0).min(8);
                let dw = scales8(w.add(b0 * $stride), $stride, cnt);
                let mut prod = [[0f32; 8]; T];
                for t in 0..T {
                    let da = scales8(a[t].add(b0 * Q8_0), Q8_0, cnt);
                    _mm256_storeu_ps(prod[t].as_mut_ptr(), _mm256_mul_ps(dw, da));
                }
                let block = |i: usize, acc: &mut [__m256; T]| {
                    if prefetch_rows {
                        prefetch::file_lines::<{ 8 * $stride }>(w.add(b0 * $stride), i);
                    }
                    let $wb = w.add((b0 + i) * $stride);
                    let q = $quants;
                    let aq = _mm256_sign_epi8(q, q);
                    for t in 0..T {
                        let p = dot_signed(aq, q, load256(a[t].add((b0 + i) * Q8_0 + 2)));
                        acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_broadcast_ss(&prod[t][i]), acc[t]);
                    }
                };
                // Two accumulators (even / odd blocks) halve the FMA dependency chain.
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
                out[t] = hsum(_mm256_add_ps(acc[t], acc2[t]));
            }
        }
    };
}

/// A legacy kernel with a per-block min (Q4_1, Q5_1; Q8_1 activations): `$quants` gives the
/// block's 32 unsigned quants from `$wb` (f16 `d` at byte 0, f16 `m` at byte 2); they go
/// through `maddubs`, and the min enters as `m_w * s_a` per block.
macro_rules! min_legacy_tile {
    ($(#[$doc:meta])* $name:ident, $stride:expr, { $($setup:stmt;)* }, |$wb:ident| $quants:expr) => {
        $(#[$doc])*
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn $name<const T: usize>(w: *const u8, a: [*const u8; T], nb: usize, out: &mut [f32]) {
            $($setup)*
            let ones = _mm256_set1_epi16(1);
            let mut acc = [_mm256_setzero_ps(); T];
            // sum over blocks of m_w * s_a, 8 blocks per vector.
            let mut mins = [_mm256_setzero_ps(); T];
            let prefetch_rows = prefetch::file_rows(T);
            let mut b0 = 0;
            while b0 < nb {
                let cnt = (nb - b0).min(8);
                let dw = scales8(w.add(b0 * $stride), $stride, cnt);
                let mw = scales8(w.add(b0 * $stride + 2), $stride, cnt);
                let mut prod = [[0f32; 8]; T];
                for t in 0..T {
                    let da = scales8(a[t].add(b0 * Q8_1), Q8_1, cnt);
                    let sa = scales8(a[t].add(b0 * Q8_1 + 2), Q8_1, cnt);
                    _mm256_storeu_ps(prod[t].as_mut_ptr(), _mm256_mul_ps(dw, da));
                    mins[t] = _mm256_fmadd_ps(mw, sa, mins[t]);
                }
                for i in 0..cnt {
                    if prefetch_rows {
                        prefetch::file_lines::<{ 8 * $stride }>(w.add(b0 * $stride), i);
                    }
                    let $wb = w.add((b0 + i) * $stride);
                    let q = $quants;
                    for t in 0..T {
                        let y = load256(a[t].add((b0 + i) * Q8_1 + 4));
                        let p = _mm256_madd_epi16(_mm256_maddubs_epi16(q, y), ones);
                        acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_broadcast_ss(&prod[t][i]), acc[t]);
                    }
                }
                b0 += cnt;
            }
            for t in 0..T {
                out[t] = hsum(_mm256_add_ps(acc[t], mins[t]));
            }
        }
    };
}

signed_legacy_tile!(
    /// Q4_0: nibbles minus 8.
    tile_q4_0_q8_0, Q4_0, { let m8 = _mm256_set1_epi8(8); }, |wb| _mm256_sub_epi8(nibbles32(wb.add(2)), m8)
);
signed_legacy_tile!(
    /// Q8_0: the quants as stored.
    tile_q8_0_q8_0, Q8_0, {}, |wb| load256(wb.add(2))
);
min_legacy_tile!(
    /// Q4_1: the nibbles.
    tile_q4_1_q8_1, Q4_1, {}, |wb| nibbles32(wb.add(4))
);

// --- 5-bit legacy blocks -------------------------------------------------------------------

/// 0xFF in byte i where bit i of the little-endian u32 at `p` is set, 0 elsewhere: the fifth
/// bits of a Q5 block spread to its 32 element lanes (byte i of a vector is element i, as the
/// nibble unpacking below orders them).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(super) unsafe fn q5_high_bits(p: *const u8) -> __m256i {
    let bits = _mm256_set1_epi32(p.cast::<i32>().read_unaligned());
    // Byte i takes byte i / 8 of the word, then tests bit i % 8 of it.
    let pick = _mm256_setr_epi64x(0, 0x0101_0101_0101_0101, 0x0202_0202_0202_0202, 0x0303_0303_0303_0303);
    let bit = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
    let v = _mm256_and_si256(_mm256_shuffle_epi8(bits, pick), bit);
    _mm256_cmpeq_epi8(v, bit)
}

/// The 32 low nibbles of a 16-byte `qs` at `p`: elements 0..16 from the low nibbles, 16..32
/// from the high ones.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(super) unsafe fn nibbles32(p: *const u8) -> __m256i {
    let qs = _mm_loadu_si128(p.cast());
    _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16::<4>(qs), qs), _mm256_set1_epi8(0x0f))
}

signed_legacy_tile!(
    /// Q5_0 against Q8_0. `q - 16` as i8 is the nibble when the fifth bit is set and the
    /// nibble with 0xF0 or-ed in (nibble - 16) when it is not, so one `andnot` + `or` yields
    /// the signed weights.
    tile_q5_0_q8_0, Q5_0, { let hi4 = _mm256_set1_epi8(0xf0u8 as i8); },
    |wb| _mm256_or_si256(nibbles32(wb.add(6)), _mm256_andnot_si256(q5_high_bits(wb.add(2)), hi4))
);
min_legacy_tile!(
    /// Q5_1: unsigned quants, the nibble | 0x10 where the fifth bit is set.
    tile_q5_1_q8_1, Q5_1, { let b4 = _mm256_set1_epi8(0x10); },
    |wb| _mm256_or_si256(nibbles32(wb.add(8)), _mm256_and_si256(q5_high_bits(wb.add(4)), b4))
);

// --- k-quants ------------------------------------------------------------------------------
//
// A super-block is processed in four 64-element steps: the step's weights are unpacked once
// into two vectors of 32 unsigned quants plus their i16 scale vectors, then multiplied with
// the matching 64 activations of every token into per-token i32 sums, so registers hold
// 4 weight vectors and T sums and nothing spills. Offsets (Q4_K/Q5_K mins, Q6_K's -32) are
// applied per super-block through the Q8_K `bsums`: `acc += d*dy*sumi - dm*dy*(mins . bsums)`.

/// The shared k-quant loop body for super-block `$b`. `$step` is an expression of `$j`
/// (0..4) returning `(q0, q1, s0, s1)`: elements `64j..64j+32` and `64j+32..64j+64` as u8
/// quants and, for each, the i16 scales of its two 16-element groups (low 128-bit half:
/// first group). A macro so the const-generic token loops are always inlined and unrolled.
macro_rules! kquant_superblock {
    ($T:expr, $a:expr, $b:expr, $acc:expr, $d:expr, $dm:expr, $mins:expr, |$j:ident| $step:expr) => {{
        let mut sumi = [_mm256_setzero_si256(); $T];
        for $j in 0..4 {
            let (q0, q1, s0, s1) = $step;
            for t in 0..$T {
                let y = $a[t].add($b * Q8_K + 4 + 64 * $j);
                let p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(q0, load256(y)), s0);
                let p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(q1, load256(y.add(32))), s1);
                sumi[t] = _mm256_add_epi32(sumi[t], _mm256_add_epi32(p0, p1));
            }
        }
        for t in 0..$T {
            let ab = $a[t].add($b * Q8_K);
            let dy = ab.cast::<f32>().read_unaligned();
            let summ = _mm256_madd_epi16(load256(ab.add(4 + QK_K)), $mins);
            $acc[t] = _mm256_fmadd_ps(_mm256_set1_ps($d * dy), _mm256_cvtepi32_ps(sumi[t]), $acc[t]);
            $acc[t] = _mm256_fnmadd_ps(_mm256_set1_ps($dm * dy), _mm256_cvtepi32_ps(summ), $acc[t]);
        }
    }};
}

/// The eight 6-bit scales and mins of a Q4_K/Q5_K block (12 bytes at `p`) as two u64, byte
/// `j` for sub-block `j` ([`crate::quant::q4k_scales_mins_words`]).
#[inline(always)]
unsafe fn q4k_scales_mins(p: *const u8) -> (u64, u64) {
    crate::quant::q4k_scales_mins_words(&p.cast::<[u8; 12]>().read_unaligned())
}

/// Eight u8 values (one per 32-element sub-block) as the 16 per-group i16 values
/// `[v0, v0, v1, v1, ..., v7, v7]`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn dup_groups(v: u64) -> __m256i {
    let w = _mm_cvtepu8_epi16(_mm_cvtsi64_si128(v as i64));
    _mm256_set_m128i(_mm_unpackhi_epi16(w, w), _mm_unpacklo_epi16(w, w))
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile_q4_k_q8_k<const T: usize>(w: *const u8, a: [*const u8; T], nb: usize, out: &mut [f32]) {
    let m4 = _mm256_set1_epi8(0x0f);
    let mut acc = [_mm256_setzero_ps(); T];
    let prefetch_rows = prefetch::file_rows(T);
    for b in 0..nb {
        let wb = w.add(b * 144);
        let (sc, mn) = q4k_scales_mins(wb.add(4));
        let mins = dup_groups(mn);
        let (d, dm) = (h2f(wb), h2f(wb.add(2)));
        kquant_superblock!(T, a, b, acc, d, dm, mins, |j| {
            if prefetch_rows {
                prefetch::file_lines::<144>(wb, j);
            }
            let v = load256(wb.add(16 + 32 * j));
            (
                _mm256_and_si256(v, m4),
                _mm256_and_si256(_mm256_srli_epi16::<4>(v), m4),
                _mm256_set1_epi16(((sc >> (16 * j)) & 0xff) as i16),
                _mm256_set1_epi16(((sc >> (16 * j + 8)) & 0xff) as i16),
            )
        });
    }
    for t in 0..T {
        out[t] = hsum(acc[t]);
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile_q5_k_q8_k<const T: usize>(w: *const u8, a: [*const u8; T], nb: usize, out: &mut [f32]) {
    let m4 = _mm256_set1_epi8(0x0f);
    let m16 = _mm256_set1_epi8(16);
    let mut acc = [_mm256_setzero_ps(); T];
    let prefetch_rows = prefetch::file_rows(T);
    for b in 0..nb {
        let wb = w.add(b * 176);
        let (sc, mn) = q4k_scales_mins(wb.add(4));
        let mins = dup_groups(mn);
        let (d, dm) = (h2f(wb), h2f(wb.add(2)));
        // Sub-block k takes bit k of qh[l] as its fifth bit (value 16).
        let qh = load256(wb.add(16));
        kquant_superblock!(T, a, b, acc, d, dm, mins, |j| {
            if prefetch_rows {
                prefetch::file_lines::<176>(wb, j);
            }
            let v = load256(wb.add(48 + 32 * j));
            let bit0 = _mm256_set1_epi8(1 << (2 * j));
            let bit1 = _mm256_set1_epi8(2 << (2 * j));
            let h0 = _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(qh, bit0), bit0), m16);
            let h1 = _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(qh, bit1), bit1), m16);
            (
                _mm256_or_si256(_mm256_and_si256(v, m4), h0),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16::<4>(v), m4), h1),
                _mm256_set1_epi16(((sc >> (16 * j)) & 0xff) as i16),
                _mm256_set1_epi16(((sc >> (16 * j + 8)) & 0xff) as i16),
            )
        });
    }
    for t in 0..T {
        out[t] = hsum(acc[t]);
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile_q6_k_q8_k<const T: usize>(w: *const u8, a: [*const u8; T], nb: usize, out: &mut [f32]) {
    let m4 = _mm256_set1_epi8(0x0f);
    let m3 = _mm256_set1_epi8(0x30);
    let mut acc = [_mm256_setzero_ps(); T];
    let prefetch_rows = prefetch::file_rows(T);
    for b in 0..nb {
        let wb = w.add(b * 210);
        // The -32 offset of every quant becomes a per-group min of 32 * scale.
        let sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(wb.add(192).cast()));
        let mins = _mm256_slli_epi16::<5>(sc16);
        let d = h2f_last(wb.add(208));
        // Scale vector of 32-element chunk k: groups 2k (low half) and 2k+1 (high half).
        // Scale vector of 32-element chunk k: groups 2k (low half) and 2k+1 (high half),
        // shuffled out of the sign-extended scales (chunks 0..4 from scales 0..8, 4..8 from
        // 8..16; `shuffle_epi8` works within 128-bit halves, so each half is duplicated).
        let lo8 = _mm256_permute2x128_si256::<0x00>(sc16, sc16);
        let hi8 = _mm256_permute2x128_si256::<0x11>(sc16, sc16);
        let scv = |k: usize| {
            let kk = (k % 4) as i16;
            let idx = _mm256_set_m128i(
                _mm_set1_epi16(((4 * kk + 3) << 8) | (4 * kk + 2)),
                _mm_set1_epi16(((4 * kk + 1) << 8) | (4 * kk)),
            );
            _mm256_shuffle_epi8(if k < 4 { lo8 } else { hi8 }, idx)
        };
        kquant_superblock!(T, a, b, acc, d, d, mins, |j| {
            if prefetch_rows {
                prefetch::file_lines::<210>(wb, j);
            }
            // Step j covers chunks 2j, 2j+1 of half h = j / 2: chunk 4h+0/1 are the low
            // nibbles of ql[64h..+32] / ql[64h+32..+32] with qh bits 0-1 / 2-3, chunks
            // 4h+2/3 the high nibbles with qh bits 4-5 / 6-7.
            let h = j / 2;
            let lo = load256(wb.add(64 * h));
            let hi = load256(wb.add(64 * h + 32));
            let qh = load256(wb.add(128 + 32 * h));
            let (q0, q1) = if j % 2 == 0 {
                (
                    _mm256_or_si256(
                        _mm256_and_si256(lo, m4),
                        _mm256_and_si256(_mm256_slli_epi16::<4>(qh), m3),
                    ),
                    _mm256_or_si256(
                        _mm256_and_si256(hi, m4),
                        _mm256_and_si256(_mm256_slli_epi16::<2>(qh), m3),
                    ),
                )
            } else {
                (
                    _mm256_or_si256(
                        _mm256_and_si256(_mm256_srli_epi16::<4>(lo), m4),
                        _mm256_and_si256(qh, m3),
                    ),
                    _mm256_or_si256(
                        _mm256_and_si256(_mm256_srli_epi16::<4>(hi), m4),
                        _mm256_and_si256(_mm256_srli_epi16::<2>(qh), m3),
                    ),
                )
            };
            (q0, q1, scv(2 * j), scv(2 * j + 1))
        });
    }
    for t in 0..T {
        out[t] = hsum(acc[t]);
    }
}
