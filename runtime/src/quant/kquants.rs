//! The k-quant super-block formats (256 weights): Q4_K, Q5_K, Q6_K for weights and Q8_K for
//! activations, bit-identical to ggml's `quantize_row_{q4,q5,q6,q8}_K_ref` (what
//! `ggml_quantize_chunk` runs when no importance matrix is given).
//!
//! Q4_K/Q5_K fit an affine `scale * q - min` per 32-weight sub-block with a small weighted
//! least-squares search over candidate scales (`make_qkx2_quants`); Q6_K fits a symmetric
//! scale per 16-weight sub-block (`make_qx_quants`). The sub-block scales are then themselves
//! quantized to 6 or 8 bits against one f16 super-scale, and the weights re-quantized against
//! the scales actually stored. Every float operation follows ggml's order, unfused, because
//! the searches compare errors and a one-ulp difference can change which candidate wins.

use super::blocks::{BlockQ4K, BlockQ5K, BlockQ6K, BlockQ8K, K_SCALE_SIZE};
use super::float::{f16_to_f32, f32_to_f16};
use super::format::{BlockFormat, Codec};
use super::rounding::nearest_int;
use super::types::{GgmlType, QK_K};
use bytemuck::Zeroable;

/// Below this group magnitude ggml treats a group as all zeros.
const GROUP_MAX_EPS: f32 = 1e-15;

/// Weighted affine fit of `x` to `scale * L + min` with `L` in `0..=nmax` (ggml's
/// `make_qkx2_quants`, squared error). Tries `nstep + 1` inverse scales
/// `(rmin + rdelta * is + nmax) / (max - min)` and keeps the best least-squares solution.
/// Writes the quants to `l`, returns `(scale, -min)` (the stored min is positive).
#[allow(clippy::too_many_arguments)]
fn make_qkx2_quants(
    nmax: i32,
    x: &[f32],
    weights: &[f32],
    l: &mut [u8],
    laux: &mut [u8],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
) -> (f32, f32) {
    let n = x.len();
    let (x, weights, l, laux) = (&x[..n], &weights[..n], &mut l[..n], &mut laux[..n]);
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        let w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    // The min is subtracted, so it is never allowed above zero.
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        l.fill(0);
        return (0.0, -min);
    }
    let nmax_f = nmax as f32;
    let mut iscale = nmax_f / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0.0f32;
    for i in 0..n {
        let q = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
        l[i] = q as u8;
        let diff = scale * q as f32 + min - x[i];
        best_error += weights[i] * (diff * diff);
    }
    for is in 0..=nstep {
        iscale = (rmin + rdelta * is as f32 + nmax_f) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0.0f32, 0.0f32, 0.0f32);
        for i in 0..n {
            let q = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
            laux[i] = q as u8;
            let w = weights[i];
            let qf = q as f32;
            sum_l += w * qf;
            sum_l2 += w * qf * qf;
            sum_xl += w * qf * x[i];
        }
        let det = sum_w * sum_l2 - sum_l * sum_l;
        if det > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0.0f32;
            for i in 0..n {
                let diff = this_scale * laux[i] as f32 + this_min - x[i];
                cur_error += weights[i] * (diff * diff);
            }
            if cur_error < best_error {
                l.copy_from_slice(laux);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// Symmetric fit of `x` to `scale * (L - nmax)` with `L - nmax` in `-nmax..nmax`, weights
/// `x^2` (ggml's `make_qx_quants` with `rmse_type == 1` and no importance weights, the only
/// form Q6_K uses). Tries 18 perturbed scales around `-nmax / max`. Writes `L` to `l`, returns
/// the scale (its sign follows the extreme value's).
fn make_qx_quants(nmax: i32, x: &[f32], l: &mut [i8]) -> f32 {
    let n = x.len();
    let l = &mut l[..n];
    let (mut max, mut amax) = (0.0f32, 0.0f32);
    for &v in x {
        let ax = v.abs();
        if ax > amax {
            amax = ax;
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        l.fill(0);
        return 0.0;
    }
    let nmax_f = nmax as f32;
    let quant = |iscale: f32, v: f32| nearest_int(iscale * v).clamp(-nmax, nmax - 1);
    let mut iscale = -nmax_f / max;
    let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
    for (q, &v) in l.iter_mut().zip(x) {
        let li = quant(iscale, v);
        *q = (li + nmax) as i8;
        let w = v * v;
        let lf = li as f32;
        sumlx += w * v * lf;
        suml2 += w * lf * lf;
    }
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in -9..=9 {
        if is == 0 {
            continue;
        }
        iscale = -(nmax_f + 0.1 * is as f32) / max;
        sumlx = 0.0;
        suml2 = 0.0;
        for &v in x {
            let w = v * v;
            let lf = quant(iscale, v) as f32;
            sumlx += w * v * lf;
            suml2 += w * lf * lf;
        }
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            for (q, &v) in l.iter_mut().zip(x) {
                *q = (quant(iscale, v) + nmax) as i8;
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// Sub-block `j`'s 6-bit scale and min from the 12 packed bytes of a Q4_K/Q5_K block
/// (ggml's `get_scale_min_k4`). Sub-blocks 0..4 sit in the low 6 bits of bytes 0..4 (scales)
/// and 4..8 (mins); sub-blocks 4..8 keep their low 4 bits in bytes 8..12 and their top 2 bits
/// in the spare high bits of bytes 0..8. Returns `(0, 0)` for `j >= 8`.
#[inline]
pub fn get_scale_min_k4(j: usize, q: &[u8; K_SCALE_SIZE]) -> (u8, u8) {
    match j {
        0..4 => (q[j] & 63, q[j + 4] & 63),
        4..8 => (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        ),
        _ => (0, 0),
    }
}

/// All eight 6-bit `(scales, mins)` of a Q4_K/Q5_K block, for kernels.
pub fn unpack_q4k_scales(scales: &[u8; K_SCALE_SIZE]) -> ([u8; 8], [u8; 8]) {
    let mut sc = [0u8; 8];
    let mut mn = [0u8; 8];
    for j in 0..8 {
        (sc[j], mn[j]) = get_scale_min_k4(j, scales);
    }
    (sc, mn)
}

/// Packs eight 6-bit scales and mins (values above 63 are masked) into the 12-byte layout
/// [`get_scale_min_k4`] reads.
pub fn pack_q4k_scales(sc: &[u8; 8], mn: &[u8; 8]) -> [u8; K_SCALE_SIZE] {
    let mut q = [0u8; K_SCALE_SIZE];
    for j in 0..8 {
        let (ls, lm) = (sc[j] & 63, mn[j] & 63);
        if j < 4 {
            q[j] = ls;
            q[j + 4] = lm;
        } else {
            q[j + 4] = (ls & 0xF) | ((lm & 0xF) << 4);
            q[j - 4] |= (ls >> 4) << 6;
            q[j] |= (lm >> 4) << 6;
        }
    }
    q
}

/// The shared first half of Q4_K and Q5_K: per 32-weight sub-block affine fits, 6-bit
/// quantization of the scales and mins, then the weights re-quantized against the stored
/// scales. Returns `(d, dmin, packed scales, L)` with `L` in `0..=nmax`.
fn quantize_affine_superblock(
    x: &[f32],
    nmax: i32,
    rmin: f32,
    nstep: i32,
) -> (half::f16, half::f16, [u8; K_SCALE_SIZE], [u8; QK_K]) {
    let x = &x[..QK_K];
    let mut l = [0u8; QK_K];
    let mut laux = [0u8; 32];
    let mut weights = [0f32; 32];
    let mut scales = [0f32; QK_K / 32];
    let mut mins = [0f32; QK_K / 32];
    let (mut max_scale, mut max_min) = (0.0f32, 0.0f32);
    for j in 0..QK_K / 32 {
        let xs = &x[32 * j..32 * j + 32];
        let mut sum_x2 = 0.0f32;
        for &v in xs {
            sum_x2 += v * v;
        }
        // Weight each value by the group's RMS plus its own magnitude: large weights matter more.
        let av_x = (sum_x2 / 32.0).sqrt();
        for (w, &v) in weights.iter_mut().zip(xs) {
            *w = av_x + v.abs();
        }
        let (scale, min) = make_qkx2_quants(
            nmax,
            xs,
            &weights,
            &mut l[32 * j..32 * j + 32],
            &mut laux,
            rmin,
            0.1,
            nstep,
        );
        scales[j] = scale;
        mins[j] = min;
        if scale > max_scale {
            max_scale = scale;
        }
        if min > max_min {
            max_min = min;
        }
    }
    let inv_scale = if max_scale > 0.0 { 63.0 / max_scale } else { 0.0 };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let mut ls = [0u8; 8];
    let mut lm = [0u8; 8];
    for j in 0..QK_K / 32 {
        // ggml stores nearest_int into a uint8_t before clamping: keep that wrap.
        ls[j] = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        lm[j] = (nearest_int(inv_min * mins[j]) as u8).min(63);
    }
    let packed = pack_q4k_scales(&ls, &lm);
    let d = f32_to_f16(max_scale / 63.0);
    let dmin = f32_to_f16(max_min / 63.0);
    for j in 0..QK_K / 32 {
        let (sc, m) = get_scale_min_k4(j, &packed);
        let dj = f16_to_f32(d) * sc as f32;
        // A zero sub-scale keeps the fit's quants (they dequantize to -min regardless).
        if dj == 0.0 {
            continue;
        }
        let dm = f16_to_f32(dmin) * m as f32;
        for ii in 0..32 {
            l[32 * j + ii] = nearest_int((x[32 * j + ii] + dm) / dj).clamp(0, nmax) as u8;
        }
    }
    (d, dmin, packed, l)
}

impl BlockFormat for BlockQ4K {
    const TYPE: GgmlType = GgmlType::Q4_K;
    const BLOCK: usize = QK_K;
}

impl Codec for BlockQ4K {
    fn quantize_block(x: &[f32]) -> Self {
        let (d, dmin, scales, l) = quantize_affine_superblock(x, 15, -1.0, 20);
        let mut qs = [0u8; QK_K / 2];
        // Each 64-weight chunk: 32 bytes, low nibbles the first 32 weights, high the next 32.
        for (q, lc) in qs.chunks_exact_mut(32).zip(l.chunks_exact(64)) {
            for i in 0..32 {
                q[i] = lc[i] | (lc[i + 32] << 4);
            }
        }
        BlockQ4K { d, dmin, scales, qs }
    }

    fn dequantize_block(&self, y: &mut [f32]) {
        let d = f16_to_f32(self.d);
        let min = f16_to_f32(self.dmin);
        for (c, (q, yc)) in self.qs.chunks_exact(32).zip(y.chunks_exact_mut(64)).enumerate() {
            let (sc1, m1) = get_scale_min_k4(2 * c, &self.scales);
            let (sc2, m2) = get_scale_min_k4(2 * c + 1, &self.scales);
            let (d1, m1) = (d * sc1 as f32, min * m1 as f32);
            let (d2, m2) = (d * sc2 as f32, min * m2 as f32);
            for i in 0..32 {
                yc[i] = d1 * (q[i] & 0xF) as f32 - m1;
                yc[i + 32] = d2 * (q[i] >> 4) as f32 - m2;
            }
        }
    }
}

impl BlockFormat for BlockQ5K {
    const TYPE: GgmlType = GgmlType::Q5_K;
    const BLOCK: usize = QK_K;
}

impl Codec for BlockQ5K {
    fn quantize_block(x: &[f32]) -> Self {
        let (d, dmin, scales, l) = quantize_affine_superblock(x, 31, -0.5, 15);
        let mut qs = [0u8; QK_K / 2];
        let mut qh = [0u8; QK_K / 8];
        // As Q4_K for the low 4 bits; the fifth bit of chunk c's two halves goes to bits 2c
        // and 2c+1 of qh[i].
        for (c, (q, lc)) in qs.chunks_exact_mut(32).zip(l.chunks_exact(64)).enumerate() {
            for i in 0..32 {
                let (l1, l2) = (lc[i], lc[i + 32]);
                qh[i] |= ((l1 >> 4) << (2 * c)) | ((l2 >> 4) << (2 * c + 1));
                q[i] = (l1 & 0xF) | ((l2 & 0xF) << 4);
            }
        }
        BlockQ5K {
            d,
            dmin,
            scales,
            qh,
            qs,
        }
    }

    fn dequantize_block(&self, y: &mut [f32]) {
        let d = f16_to_f32(self.d);
        let min = f16_to_f32(self.dmin);
        for (c, (q, yc)) in self.qs.chunks_exact(32).zip(y.chunks_exact_mut(64)).enumerate() {
            let (sc1, m1) = get_scale_min_k4(2 * c, &self.scales);
            let (sc2, m2) = get_scale_min_k4(2 * c + 1, &self.scales);
            let (d1, m1) = (d * sc1 as f32, min * m1 as f32);
            let (d2, m2) = (d * sc2 as f32, min * m2 as f32);
            for i in 0..32 {
                let h1 = ((self.qh[i] >> (2 * c)) & 1) << 4;
                let h2 = ((self.qh[i] >> (2 * c + 1)) & 1) << 4;
                yc[i] = d1 * ((q[i] & 0xF) | h1) as f32 - m1;
                yc[i + 32] = d2 * ((q[i] >> 4) | h2) as f32 - m2;
            }
        }
    }
}

impl BlockFormat for BlockQ6K {
    const TYPE: GgmlType = GgmlType::Q6_K;
    const BLOCK: usize = QK_K;
}

impl Codec for BlockQ6K {
    fn quantize_block(x: &[f32]) -> Self {
        let x = &x[..QK_K];
        let mut l = [0i8; QK_K];
        let mut scales = [0f32; QK_K / 16];
        let (mut max_scale, mut max_abs_scale) = (0.0f32, 0.0f32);
        for (ib, s) in scales.iter_mut().enumerate() {
            *s = make_qx_quants(32, &x[16 * ib..16 * ib + 16], &mut l[16 * ib..16 * ib + 16]);
            if s.abs() > max_abs_scale {
                max_abs_scale = s.abs();
                max_scale = *s;
            }
        }
        if max_abs_scale < GROUP_MAX_EPS {
            return BlockQ6K::zeroed();
        }
        // Sub-scales become int8 against one f16 super-scale; the largest maps to -128.
        let iscale = -128.0 / max_scale;
        let d = f32_to_f16(1.0 / iscale);
        let mut sc = [0i8; QK_K / 16];
        for (q, &s) in sc.iter_mut().zip(&scales) {
            *q = nearest_int(iscale * s).min(127) as i8;
        }
        for j in 0..QK_K / 16 {
            let dj = f16_to_f32(d) * sc[j] as f32;
            if dj == 0.0 {
                continue;
            }
            for ii in 0..16 {
                l[16 * j + ii] = (nearest_int(x[16 * j + ii] / dj).clamp(-32, 31) + 32) as i8;
            }
        }
        let mut ql = [0u8; QK_K / 2];
        let mut qh = [0u8; QK_K / 4];
        // Each 128-weight half: 64 bytes of ql (two nibbles each) and 32 of qh (four 2-bit
        // high parts each), weights i, i+32, i+64, i+96 sharing position i.
        for h in 0..2 {
            let lh = &l[128 * h..128 * h + 128];
            for i in 0..32 {
                let q = [lh[i] as u8, lh[i + 32] as u8, lh[i + 64] as u8, lh[i + 96] as u8];
                ql[64 * h + i] = (q[0] & 0xF) | ((q[2] & 0xF) << 4);
                ql[64 * h + i + 32] = (q[1] & 0xF) | ((q[3] & 0xF) << 4);
                qh[32 * h + i] = (q[0] >> 4) | ((q[1] >> 4) << 2) | ((q[2] >> 4) << 4) | ((q[3] >> 4) << 6);
            }
        }
        BlockQ6K { ql, qh, scales: sc, d }
    }

    fn dequantize_block(&self, y: &mut [f32]) {
        let d = f16_to_f32(self.d);
        for h in 0..2 {
            let ql = &self.ql[64 * h..64 * h + 64];
            let qh = &self.qh[32 * h..32 * h + 32];
            let sc = &self.scales[8 * h..8 * h + 8];
            let yh = &mut y[128 * h..128 * h + 128];
            for i in 0..32 {
                let is = i / 16;
                let q1 = ((ql[i] & 0xF) | ((qh[i] & 3) << 4)) as i32 - 32;
                let q2 = ((ql[i + 32] & 0xF) | (((qh[i] >> 2) & 3) << 4)) as i32 - 32;
                let q3 = ((ql[i] >> 4) | (((qh[i] >> 4) & 3) << 4)) as i32 - 32;
                let q4 = ((ql[i + 32] >> 4) | (((qh[i] >> 6) & 3) << 4)) as i32 - 32;
                yh[i] = d * sc[is] as f32 * q1 as f32;
                yh[i + 32] = d * sc[is + 2] as f32 * q2 as f32;
                yh[i + 64] = d * sc[is + 4] as f32 * q3 as f32;
                yh[i + 96] = d * sc[is + 6] as f32 * q4 as f32;
            }
        }
    }
}

impl BlockFormat for BlockQ8K {
    const TYPE: GgmlType = GgmlType::Q8_K;
    const BLOCK: usize = QK_K;
}

impl Codec for BlockQ8K {
    fn quantize_block(x: &[f32]) -> Self {
        let x = &x[..QK_K];
        let (mut max, mut amax) = (0.0f32, 0.0f32);
        for &v in x {
            if v.abs() > amax {
                amax = v.abs();
                max = v;
            }
        }
        let mut y = BlockQ8K::zeroed();
        // ggml leaves `bsums` untouched for an all-zero block; zero is the only correct value.
        if amax == 0.0 {
            return y;
        }
        // -127 rather than -128 keeps every quant symmetric (ggml's SIMD dot products need it).
        let iscale = -127.0 / max;
        for (q, &v) in y.qs.iter_mut().zip(x) {
            *q = nearest_int(iscale * v).min(127) as i8;
        }
        for (s, g) in y.bsums.iter_mut().zip(y.qs.chunks_exact(16)) {
            *s = g.iter().map(|&q| q as i32).sum::<i32>() as i16;
        }
        y.d = 1.0 / iscale;
        y
    }

    fn dequantize_block(&self, y: &mut [f32]) {
        for (o, &q) in y.iter_mut().zip(&self.qs) {
            *o = self.d * q as f32;
        }
    }
}
