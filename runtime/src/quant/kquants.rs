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
use super::rounding::{nearest_clamped, nearest_int};
use super::types::{GgmlType, QK_K};
use bytemuck::Zeroable;

/// Below this group magnitude ggml treats a group as all zeros.
const GROUP_MAX_EPS: f32 = 1e-15;

/// Sub-blocks (32 weights each) of a Q4_K/Q5_K super-block.
const SUBS: usize = QK_K / 32;

/// One value per sub-block of a super-block: the lanes of the vectorized fits below.
type Lanes = [f32; SUBS];

/// Weighted affine fits of the eight 32-weight sub-blocks of a super-block, each to
/// `scale * L + min` with `L` in `0..=nmax` (ggml's `make_qkx2_quants`, squared error, run on
/// every sub-block). `x[i][j]` and `weights[i][j]` are element `i` of sub-block `j`. Each fit
/// starts from the inverse scale `nmax / (max - min)` and tries `nstep + 1` more,
/// `(rmin + rdelta * is + nmax) / (max - min)`, keeping the one with the smallest weighted
/// error; ggml lets a better candidate's min feed the next candidates' scales, so the
/// candidates stay in sequence. Writes the quants to `l[i][j]`, returns each sub-block's
/// `(scale, -min)` (the stored min is positive).
///
/// ggml fits the sub-blocks one after another, each a chain of serial float additions whose
/// order fixes the bits, so it runs at the latency of those additions. Here the sub-blocks
/// are the lanes of fixed-size arrays: each lane performs exactly ggml's operations in ggml's
/// order (identical bits), and the loops over lanes vectorize. `reference::make_qkx2_quants`
/// keeps ggml's structure and is tested against this one.
#[inline(always)]
pub(super) fn make_qkx2_quants(
    nmax: i32,
    x: &[Lanes; 32],
    weights: &[Lanes; 32],
    l: &mut [[u8; SUBS]; 32],
    rmin: f32,
    rdelta: f32,
    nstep: usize,
) -> (Lanes, Lanes) {
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = weights[0];
    let mut sum_x: Lanes = std::array::from_fn(|j| sum_w[j] * x[0][j]);
    for (xi, wi) in x.iter().zip(weights).skip(1) {
        for j in 0..SUBS {
            let v = xi[j];
            min[j] = if v < min[j] { v } else { min[j] };
            max[j] = if v > max[j] { v } else { max[j] };
            sum_w[j] += wi[j];
            sum_x[j] += wi[j] * v;
        }
    }
    for m in &mut min {
        // The min is subtracted, so it is never allowed above zero.
        if *m > 0.0 {
            *m = 0.0;
        }
    }
    // Flat sub-blocks (ggml returns early for them) run through the search harmlessly (their
    // NaN and infinite candidates are never better) and are overwritten at the end.
    let flat: [bool; SUBS] = std::array::from_fn(|j| max[j] == min[j]);
    let flat_min = min;
    let nmax_f = nmax as f32;
    let quant = |iscale: f32, v: f32, min: f32| nearest_clamped(iscale * (v - min), 0.0, nmax_f);
    let mut iscale: Lanes = std::array::from_fn(|j| nmax_f / (max[j] - min[j]));
    let mut scale: Lanes = std::array::from_fn(|j| 1.0 / iscale[j]);
    let mut best_error = [0f32; SUBS];
    for (xi, wi) in x.iter().zip(weights) {
        for j in 0..SUBS {
            let diff = scale[j] * quant(iscale[j], xi[j], min[j]) + min[j] - xi[j];
            best_error[j] += wi[j] * (diff * diff);
        }
    }
    // The quants of the best candidate so far are recomputed at the end from its inverse
    // scale and the min it was computed with.
    let mut best_iscale = iscale;
    let mut best_min = min;
    let mut laux = [[0f32; SUBS]; 32];
    for is in 0..=nstep {
        for j in 0..SUBS {
            iscale[j] = (rmin + rdelta * is as f32 + nmax_f) / (max[j] - min[j]);
        }
        let mut sum_l = [0f32; SUBS];
        let mut sum_l2 = [0f32; SUBS];
        let mut sum_xl = [0f32; SUBS];
        for ((xi, wi), qi) in x.iter().zip(weights).zip(laux.iter_mut()) {
            for j in 0..SUBS {
                let q = quant(iscale[j], xi[j], min[j]);
                qi[j] = q;
                let w = wi[j];
                sum_l[j] += w * q;
                sum_l2[j] += w * q * q;
                sum_xl[j] += w * q * xi[j];
            }
        }
        let mut this_scale = [0f32; SUBS];
        let mut this_min = [0f32; SUBS];
        let mut fits = [false; SUBS];
        for j in 0..SUBS {
            let det = sum_w[j] * sum_l2[j] - sum_l[j] * sum_l[j];
            let mut sc = (sum_w[j] * sum_xl[j] - sum_x[j] * sum_l[j]) / det;
            let mut mn = (sum_l2[j] * sum_x[j] - sum_l[j] * sum_xl[j]) / det;
            if mn > 0.0 {
                mn = 0.0;
                sc = sum_xl[j] / sum_l2[j];
            }
            this_scale[j] = sc;
            this_min[j] = mn;
            fits[j] = det > 0.0;
        }
        let mut cur_error = [0f32; SUBS];
        for ((xi, wi), qi) in x.iter().zip(weights).zip(laux.iter()) {
            for j in 0..SUBS {
                let diff = this_scale[j] * qi[j] + this_min[j] - xi[j];
                cur_error[j] += wi[j] * (diff * diff);
            }
        }
        for j in 0..SUBS {
            if fits[j] && cur_error[j] < best_error[j] {
                best_error[j] = cur_error[j];
                scale[j] = this_scale[j];
                best_iscale[j] = iscale[j];
                best_min[j] = min[j];
                min[j] = this_min[j];
            }
        }
    }
    for (xi, li) in x.iter().zip(l.iter_mut()) {
        for j in 0..SUBS {
            li[j] = if flat[j] {
                0
            } else {
                quant(best_iscale[j], xi[j], best_min[j]) as u8
            };
        }
    }
    for j in 0..SUBS {
        if flat[j] {
            scale[j] = 0.0;
            min[j] = flat_min[j];
        }
    }
    (scale, min.map(|m| -m))
}

/// Candidate scales [`make_qx_quants`] evaluates side by side, one per lane: the initial
/// scale and 18 steps, padded to a multiple of 8.
const SEARCH_LANES: usize = 24;

/// Symmetric fit of a 16-weight sub-block to `scale * (L - nmax)` with `L - nmax` in
/// `-nmax..nmax`, weights `x^2` (ggml's `make_qx_quants` with `rmse_type == 1` and no
/// importance weights, the only form Q6_K uses). Tries 18 perturbed scales around
/// `-nmax / max`. Writes `L` to `l`, returns the scale (its sign follows the extreme value's).
/// As [`make_qkx2_quants`], the candidates are evaluated as lanes (each summing in ggml's
/// element order) and chosen in ggml's order.
#[inline(always)]
pub(super) fn make_qx_quants(nmax: i32, x: &[f32; 16], l: &mut [i8; 16]) -> f32 {
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
    // Lane 0 is the initial `-nmax / max`; lanes 1..=18 are is = -9..=-1, 1..=9; the spare
    // lanes repeat lane 0 and are never chosen.
    const CANDIDATES: usize = 19;
    let mut iscale = [-nmax_f / max; SEARCH_LANES];
    for (s, is) in iscale[1..CANDIDATES].iter_mut().zip((-9..=-1).chain(1..=9)) {
        *s = -(nmax_f + 0.1 * is as f32) / max;
    }
    let mut quants = [[0f32; SEARCH_LANES]; 16];
    let mut sumlx = [0f32; SEARCH_LANES];
    let mut suml2 = [0f32; SEARCH_LANES];
    for (&v, q_row) in x.iter().zip(quants.iter_mut()) {
        let w = v * v;
        let wv = w * v;
        for k in 0..SEARCH_LANES {
            let q = nearest_clamped(iscale[k] * v, -nmax_f, nmax_f - 1.0);
            q_row[k] = q;
            sumlx[k] += wv * q;
            suml2[k] += w * q * q;
        }
    }
    let mut scale = if suml2[0] != 0.0 { sumlx[0] / suml2[0] } else { 0.0 };
    let mut best = scale * sumlx[0];
    let mut chosen = 0;
    for k in 1..CANDIDATES {
        if suml2[k] > 0.0 && sumlx[k] * sumlx[k] > best * suml2[k] {
            chosen = k;
            scale = sumlx[k] / suml2[k];
            best = scale * sumlx[k];
        }
    }
    for (q, q_row) in l.iter_mut().zip(quants.iter()) {
        *q = (q_row[chosen] as i32 + nmax) as i8;
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

/// All eight 6-bit `(scales, mins)` of a Q4_K/Q5_K block, for kernels: what
/// [`get_scale_min_k4`] gives for `j = 0..8`.
pub fn unpack_q4k_scales(scales: &[u8; K_SCALE_SIZE]) -> ([u8; 8], [u8; 8]) {
    let (sc, mn) = q4k_scales_mins_words(scales);
    (sc.to_le_bytes(), mn.to_le_bytes())
}

/// [`unpack_q4k_scales`] as two little-endian u64 (byte `j`: sub-block `j`), four sub-blocks per
/// u32 step instead of one byte at a time: scales 0..4 are the low 6 bits of bytes 0..4, mins
/// 0..4 of bytes 4..8; scales/mins 4..8 take their low 4 bits from the nibbles of bytes 8..12
/// and their top 2 bits from the spare top bits of bytes 0..4 / 4..8 (each shift's bits that
/// cross into a neighbouring byte are masked off).
#[inline(always)]
pub fn q4k_scales_mins_words(scales: &[u8; K_SCALE_SIZE]) -> (u64, u64) {
    let word = |i: usize| u32::from_le_bytes([scales[4 * i], scales[4 * i + 1], scales[4 * i + 2], scales[4 * i + 3]]);
    let (w0, w1, w2) = (word(0), word(1), word(2));
    let sc_lo = w0 & 0x3f3f_3f3f;
    let mn_lo = w1 & 0x3f3f_3f3f;
    let sc_hi = (w2 & 0x0f0f_0f0f) | (((w0 >> 6) & 0x0303_0303) << 4);
    let mn_hi = ((w2 >> 4) & 0x0f0f_0f0f) | (((w1 >> 6) & 0x0303_0303) << 4);
    (
        u64::from(sc_lo) | (u64::from(sc_hi) << 32),
        u64::from(mn_lo) | (u64::from(mn_hi) << 32),
    )
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
#[inline(always)]
fn quantize_affine_superblock(
    x: &[f32],
    nmax: i32,
    rmin: f32,
    nstep: usize,
) -> (half::f16, half::f16, [u8; K_SCALE_SIZE], [u8; QK_K]) {
    let x: &[f32; QK_K] = x[..QK_K].try_into().expect("a 256-element block");
    // Sub-block j's element i at [i][j]: the sub-blocks become the lanes of the fits.
    let mut xt = [[0f32; SUBS]; 32];
    for (j, xs) in x.chunks_exact(32).enumerate() {
        for (row, &v) in xt.iter_mut().zip(xs) {
            row[j] = v;
        }
    }
    let mut sum_x2 = [0f32; SUBS];
    for row in &xt {
        for j in 0..SUBS {
            sum_x2[j] += row[j] * row[j];
        }
    }
    // Weight each value by its sub-block's RMS plus its own magnitude: large weights matter more.
    let av_x: Lanes = sum_x2.map(|s| (s / 32.0).sqrt());
    let weights: [Lanes; 32] = xt.map(|row| std::array::from_fn(|j| av_x[j] + row[j].abs()));
    let mut lt = [[0u8; SUBS]; 32];
    let (scales, mins) = make_qkx2_quants(nmax, &xt, &weights, &mut lt, rmin, 0.1, nstep);
    let (mut max_scale, mut max_min) = (0.0f32, 0.0f32);
    for (&scale, &min) in scales.iter().zip(&mins) {
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
    for j in 0..SUBS {
        // ggml stores nearest_int into a uint8_t before clamping: keep that wrap.
        ls[j] = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        lm[j] = (nearest_int(inv_min * mins[j]) as u8).min(63);
    }
    let packed = pack_q4k_scales(&ls, &lm);
    let d = f32_to_f16(max_scale / 63.0);
    let dmin = f32_to_f16(max_min / 63.0);
    let mut l = [0u8; QK_K];
    for (j, (xs, lj)) in x.chunks_exact(32).zip(l.chunks_exact_mut(32)).enumerate() {
        let (sc, m) = get_scale_min_k4(j, &packed);
        let dj = f16_to_f32(d) * sc as f32;
        // A zero sub-scale keeps the fit's quants (they dequantize to -min regardless).
        if dj == 0.0 {
            for (q, row) in lj.iter_mut().zip(&lt) {
                *q = row[j];
            }
            continue;
        }
        let dm = f16_to_f32(dmin) * m as f32;
        for (q, &v) in lj.iter_mut().zip(xs) {
            *q = nearest_int((v + dm) / dj).clamp(0, nmax) as u8;
        }
    }
    (d, dmin, packed, l)
}

impl BlockFormat for BlockQ4K {
    const TYPE: GgmlType = GgmlType::Q4_K;
    const BLOCK: usize = QK_K;
}

impl Codec for BlockQ4K {
    #[inline(always)]
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

    #[inline(always)]
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
    #[inline(always)]
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

    #[inline(always)]
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
    #[inline(always)]
    fn quantize_block(x: &[f32]) -> Self {
        let x: &[f32; QK_K] = x[..QK_K].try_into().expect("a 256-element block");
        let mut l = [0i8; QK_K];
        let mut scales = [0f32; QK_K / 16];
        let (mut max_scale, mut max_abs_scale) = (0.0f32, 0.0f32);
        for ((s, xs), ls) in scales.iter_mut().zip(x.chunks_exact(16)).zip(l.chunks_exact_mut(16)) {
            let xs: &[f32; 16] = xs.try_into().expect("16-element chunk");
            let ls: &mut [i8; 16] = ls.try_into().expect("16-element chunk");
            *s = make_qx_quants(32, xs, ls);
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
        for ((&scj, xs), ls) in sc.iter().zip(x.chunks_exact(16)).zip(l.chunks_exact_mut(16)) {
            let dj = f16_to_f32(d) * scj as f32;
            if dj == 0.0 {
                continue;
            }
            for (q, &v) in ls.iter_mut().zip(xs) {
                *q = (nearest_int(v / dj).clamp(-32, 31) + 32) as i8;
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

    #[inline(always)]
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
    #[inline(always)]
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

    #[inline(always)]
    fn dequantize_block(&self, y: &mut [f32]) {
        for (o, &q) in y.iter_mut().zip(&self.qs) {
            *o = self.d * q as f32;
        }
    }
}
