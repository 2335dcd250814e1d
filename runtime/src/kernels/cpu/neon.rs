//! aarch64 NEON kernels (with the `dotprod` extension's `sdot` where the CPU has it).
//!
//! Q8_0, Q4_0, Q5_0, Q5_1 and F32 weights have vector kernels; the k-quants decode each super-block once
//! per tile with the scalar decoder and then run vector integer dots against every token;
//! F16, BF16 and Q4_1 use the scalar kernels (the type table's `neon_tile` column).
//!
//! Kernel `tile_<stem>` (with `_dotprod` for `sdot`) is the twin of `scalar::vec_dot_<stem>`:
//! `tile_f32_f32`, `tile_q4_0_q8_0`, `tile_q8_0_q8_0`, `tile_q5_0_q8_0`, `tile_q5_1_q8_1`,
//! `tile_q4_k_q8_k`, `tile_q5_k_q8_k`, `tile_q6_k_q8_k`.

// Kernel loops index several arrays (weights, per-token sums, scales) with one counter over
// const-generic bounds the compiler unrolls; iterator chains would only obscure that.
#![allow(clippy::needless_range_loop)]

use super::scalar;
use crate::quant::{GgmlType, QK_K};
use std::arch::aarch64::*;

fn f16_at(p: *const u8) -> f32 {
    // SAFETY: callers pass a pointer to a 2-byte scale inside a validated block.
    half::f16::from_bits(unsafe { p.cast::<u16>().read_unaligned() }).to_f32()
}

/// One weight row against up to 4 activation rows (see `avx2::tile`).
///
/// # Safety
/// NEON must be available (always true on aarch64); `w` and every `acts[t]` must hold whole
/// rows of `n` elements in the weight and activation formats of `ty`.
pub(super) unsafe fn tile(ty: GgmlType, n: usize, w: &[u8], acts: &[&[u8]], out: &mut [f32]) {
    if acts.len() > 4 {
        for (a, o) in acts.chunks(4).zip(out.chunks_mut(4)) {
            tile(ty, n, w, a, o);
        }
        return;
    }
    let dot = std::arch::is_aarch64_feature_detected!("dotprod");
    macro_rules! go {
        ($f:ident) => {
            match acts.len() {
                1 => $f::<1>(w.as_ptr(), std::array::from_fn(|t| acts[t].as_ptr()), n, out),
                2 => $f::<2>(w.as_ptr(), std::array::from_fn(|t| acts[t].as_ptr()), n, out),
                3 => $f::<3>(w.as_ptr(), std::array::from_fn(|t| acts[t].as_ptr()), n, out),
                _ => $f::<4>(w.as_ptr(), std::array::from_fn(|t| acts[t].as_ptr()), n, out),
            }
        };
    }
    match ty {
        GgmlType::F32 => go!(tile_f32_f32),
        GgmlType::Q8_0 if dot => go!(tile_q8_0_q8_0_dotprod),
        GgmlType::Q4_0 if dot => go!(tile_q4_0_q8_0_dotprod),
        GgmlType::Q8_0 => go!(tile_q8_0_q8_0),
        GgmlType::Q4_0 => go!(tile_q4_0_q8_0),
        GgmlType::Q5_0 if dot => go!(tile_q5_0_q8_0_dotprod),
        GgmlType::Q5_1 if dot => go!(tile_q5_1_q8_1_dotprod),
        GgmlType::Q5_0 => go!(tile_q5_0_q8_0),
        GgmlType::Q5_1 => go!(tile_q5_1_q8_1),
        GgmlType::Q4_K => go!(tile_q4_k_q8_k),
        GgmlType::Q5_K => go!(tile_q5_k_q8_k),
        GgmlType::Q6_K => go!(tile_q6_k_q8_k),
        _ => scalar::tile(ty, n, w, acts, out),
    }
}

#[target_feature(enable = "neon")]
unsafe fn tile_f32_f32<const T: usize>(w: *const u8, a: [*const u8; T], n: usize, out: &mut [f32]) {
    let mut acc = [vdupq_n_f32(0.0); T];
    let n4 = n / 4 * 4;
    let mut i = 0;
    while i < n4 {
        let wv = vld1q_f32(w.cast::<f32>().add(i));
        for t in 0..T {
            acc[t] = vfmaq_f32(acc[t], wv, vld1q_f32(a[t].cast::<f32>().add(i)));
        }
        i += 4;
    }
    for t in 0..T {
        let mut s = vaddvq_f32(acc[t]);
        for j in n4..n {
            s += w.cast::<f32>().add(j).read_unaligned() * a[t].cast::<f32>().add(j).read_unaligned();
        }
        out[t] = s;
    }
}

/// The 32 signed weights of a Q4_0 (`q - 8`) or Q8_0 block at `wb`, as two halves.
#[target_feature(enable = "neon")]
#[inline]
unsafe fn load_q(q4: bool, wb: *const u8) -> (int8x16_t, int8x16_t) {
    if q4 {
        let qs = vld1q_u8(wb.add(2));
        let lo = vreinterpretq_s8_u8(vandq_u8(qs, vdupq_n_u8(0x0f)));
        let hi = vreinterpretq_s8_u8(vshrq_n_u8::<4>(qs));
        (vsubq_s8(lo, vdupq_n_s8(8)), vsubq_s8(hi, vdupq_n_s8(8)))
    } else {
        (vld1q_s8(wb.add(2).cast()), vld1q_s8(wb.add(18).cast()))
    }
}

/// `sum(a * b)` of 16 i8 pairs into 4 i32 lanes, widening through i16 products.
#[target_feature(enable = "neon")]
#[inline]
unsafe fn dot16(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    let lo = vmull_s8(vget_low_s8(a), vget_low_s8(b));
    let hi = vmull_high_s8(a, b);
    vpadalq_s16(vpadalq_s16(acc, lo), hi)
}

/// A Q4_0 (`q4: true`) or Q8_0 kernel against Q8_0 activations, with `$dot` for the integer
/// dot of 16 byte pairs.
macro_rules! legacy_tile {
    ($name:ident, $feat:literal, $dot:path, q4: $q4:expr) => {
        #[target_feature(enable = $feat)]
        unsafe fn $name<const T: usize>(w: *const u8, a: [*const u8; T], n: usize, out: &mut [f32]) {
            let q4: bool = $q4;
            let wstride = if q4 { 18 } else { 34 };
            let mut acc = [vdupq_n_f32(0.0); T];
            for b in 0..n / 32 {
                let wb = w.add(b * wstride);
                let (q0, q1) = load_q(q4, wb);
                let dw = f16_at(wb);
                for t in 0..T {
                    let ab = a[t].add(b * 34);
                    let s = $dot(vdupq_n_s32(0), q0, vld1q_s8(ab.add(2).cast()));
                    let s = $dot(s, q1, vld1q_s8(ab.add(18).cast()));
                    acc[t] = vfmaq_n_f32(acc[t], vcvtq_f32_s32(s), dw * f16_at(ab));
                }
            }
            for t in 0..T {
                out[t] = vaddvq_f32(acc[t]);
            }
        }
    };
}

/// `sdot`: 4 lanes of `acc` each plus the dot of 4 i8 pairs. Inline assembly because the
/// `vdotq_s32` intrinsic is not yet stable.
#[target_feature(enable = "neon,dotprod")]
#[inline]
unsafe fn sdot(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    let mut r = acc;
    std::arch::asm!(
        "sdot {r:v}.4s, {a:v}.16b, {b:v}.16b",
        r = inout(vreg) r,
        a = in(vreg) a,
        b = in(vreg) b,
        options(pure, nomem, nostack, preserves_flags)
    );
    r
}

legacy_tile!(tile_q4_0_q8_0, "neon", dot16, q4: true);
legacy_tile!(tile_q4_0_q8_0_dotprod, "neon,dotprod", sdot, q4: true);
legacy_tile!(tile_q8_0_q8_0, "neon", dot16, q4: false);
legacy_tile!(tile_q8_0_q8_0_dotprod, "neon,dotprod", sdot, q4: false);

/// Byte i of a 16-byte vector selects byte i / 8 of a `qh` word (the table lookup below) and
/// tests bit i % 8 of it: the fifth bits of Q5 elements 0..16 (bytes 0, 1) and 16..32 (2, 3).
const Q5_PICK_LO: [u8; 16] = [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1];
const Q5_PICK_HI: [u8; 16] = [2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3];
const Q5_BIT: [u8; 16] = [1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128];

/// The 32 unsigned five-bit quants (0..32) of a Q5_0/Q5_1 block whose `qh` word is at `p`
/// (its 16 nibble bytes follow), as elements 0..16 and 16..32.
#[target_feature(enable = "neon")]
#[inline]
unsafe fn load_q5(p: *const u8) -> (uint8x16_t, uint8x16_t) {
    let qs = vld1q_u8(p.add(4));
    let qh = vreinterpretq_u8_u32(vdupq_n_u32(p.cast::<u32>().read_unaligned()));
    let bit = vld1q_u8(Q5_BIT.as_ptr());
    let b4 = vdupq_n_u8(0x10);
    // `vtst` gives 0xFF where the element's bit is set; keep 0x10 of it.
    let h0 = vandq_u8(vtstq_u8(vqtbl1q_u8(qh, vld1q_u8(Q5_PICK_LO.as_ptr())), bit), b4);
    let h1 = vandq_u8(vtstq_u8(vqtbl1q_u8(qh, vld1q_u8(Q5_PICK_HI.as_ptr())), bit), b4);
    (
        vorrq_u8(vandq_u8(qs, vdupq_n_u8(0x0f)), h0),
        vorrq_u8(vshrq_n_u8::<4>(qs), h1),
    )
}

/// Q5_0 against Q8_0 (`q5_1` false: weights `q - 16`) or Q5_1 against Q8_1 (weights `q`,
/// the min added as `m_w * s_a` per block).
macro_rules! q5_tile {
    ($name:ident, $feat:literal, $dot:path, q5_1: $q5_1:expr) => {
        #[target_feature(enable = $feat)]
        unsafe fn $name<const T: usize>(w: *const u8, a: [*const u8; T], n: usize, out: &mut [f32]) {
            let q5_1: bool = $q5_1;
            // Block strides and the offsets of `qh` (weights) and of the quants (activations).
            let (wstride, astride, qh_off, aq_off) = if q5_1 { (24, 36, 4, 4) } else { (22, 34, 2, 2) };
            let off = vdupq_n_s8(if q5_1 { 0 } else { 16 });
            let mut acc = [vdupq_n_f32(0.0); T];
            let mut mins = [0f32; T];
            for b in 0..n / 32 {
                let wb = w.add(b * wstride);
                let (q0, q1) = load_q5(wb.add(qh_off));
                // Quants are at most 31, so they are valid as i8.
                let q0 = vsubq_s8(vreinterpretq_s8_u8(q0), off);
                let q1 = vsubq_s8(vreinterpretq_s8_u8(q1), off);
                let dw = f16_at(wb);
                for t in 0..T {
                    let ab = a[t].add(b * astride);
                    let s = $dot(vdupq_n_s32(0), q0, vld1q_s8(ab.add(aq_off).cast()));
                    let s = $dot(s, q1, vld1q_s8(ab.add(aq_off + 16).cast()));
                    acc[t] = vfmaq_n_f32(acc[t], vcvtq_f32_s32(s), dw * f16_at(ab));
                    if q5_1 {
                        mins[t] += f16_at(wb.add(2)) * f16_at(ab.add(2));
                    }
                }
            }
            for t in 0..T {
                out[t] = vaddvq_f32(acc[t]) + mins[t];
            }
        }
    };
}

q5_tile!(tile_q5_0_q8_0, "neon", dot16, q5_1: false);
q5_tile!(tile_q5_0_q8_0_dotprod, "neon,dotprod", sdot, q5_1: false);
q5_tile!(tile_q5_1_q8_1, "neon", dot16, q5_1: true);
q5_tile!(tile_q5_1_q8_1_dotprod, "neon,dotprod", sdot, q5_1: true);

/// The k-quant kernels `tile_q4_k_q8_k`, `tile_q5_k_q8_k` and `tile_q6_k_q8_k`: one body
/// ([`tile_kquant_q8_k`]) for the three formats.
macro_rules! kquant_tile {
    ($name:ident, $ty:expr) => {
        #[target_feature(enable = "neon")]
        unsafe fn $name<const T: usize>(w: *const u8, a: [*const u8; T], n: usize, out: &mut [f32]) {
            tile_kquant_q8_k::<T>($ty, w, a, n, out)
        }
    };
}

kquant_tile!(tile_q4_k_q8_k, GgmlType::Q4_K);
kquant_tile!(tile_q5_k_q8_k, GgmlType::Q5_K);
kquant_tile!(tile_q6_k_q8_k, GgmlType::Q6_K);

/// k-quants: each super-block decoded once (scalar decoder), then per token and 16-element
/// group a widening integer dot times the group scale; mins through the Q8_K `bsums`.
#[target_feature(enable = "neon")]
unsafe fn tile_kquant_q8_k<const T: usize>(ty: GgmlType, w: *const u8, a: [*const u8; T], n: usize, out: &mut [f32]) {
    let bs = ty.type_size();
    let mut acc = [0f32; T];
    for b in 0..n / QK_K {
        let k = scalar::decode_kquant(ty, std::slice::from_raw_parts(w.add(b * bs), bs));
        for t in 0..T {
            let ab = a[t].add(b * 292);
            let dy = ab.cast::<f32>().read_unaligned();
            let y = ab.add(4);
            let mut sumi = vdupq_n_s32(0);
            for g in 0..16 {
                // Quants are at most 63, so they are valid as i8.
                let qv = vreinterpretq_s8_u8(vld1q_u8(k.q.as_ptr().add(16 * g)));
                let d = dot16(vdupq_n_s32(0), qv, vld1q_s8(y.add(16 * g).cast()));
                sumi = vmlaq_n_s32(sumi, d, k.sc[g]);
            }
            let bsums = y.add(QK_K).cast::<i16>();
            let mut summ = 0i32;
            for g in 0..16 {
                summ += k.mn[g] * bsums.add(g).read_unaligned() as i32;
            }
            acc[t] += k.d * dy * vaddvq_s32(sumi) as f32 - k.dm * dy * summ as f32;
        }
    }
    out[..T].copy_from_slice(&acc);
}
