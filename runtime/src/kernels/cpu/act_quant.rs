//! Activation rounding to Q8_0 and Q8_1 (the partners of the 32-element weight formats) and
//! Q8_K (the k-quants' partner) for the matmul runner. The scalar specifications are
//! `quant::quantize_row_q8_0`/`q8_1` (ggml's x86 `quantize_row_q8_0`/`q8_1`: `id = 127 / amax`,
//! round half to even) and `quant::quantize_row_q8_k` (`iscale = -127 / max`, `max` the first
//! element of the largest magnitude, sums of 16 quants); on x86 with AVX2 each block is
//! rounded in vector lanes with the same arithmetic, so the bytes are identical. A block
//! holding a NaN, or whose `amax` or scale is not finite, takes the scalar path, which defines
//! those cases.
//!
//! Why: a small model's passes round a few hundred thousand elements each (SmolLM2, a 9-row
//! speculative pass: ~0.9 M), and the scalar loop, at ~3 ns per element on the caller's
//! thread while the workers wait, was about a sixth of such a pass.

#[cfg(target_arch = "x86_64")]
use super::backend::{backend, Backend};
use crate::quant::{
    f32_to_f16, quantize_row_q8_0, quantize_row_q8_1, quantize_row_q8_k, BlockQ8K, BlockQ8_0, BlockQ8_1, QuantError,
};

/// Rounds `x` (`32 * out.len()` floats) to Q8_0 blocks, as `quantize_row_q8_0`.
pub(super) fn row_q8_0(x: &[f32], out: &mut [BlockQ8_0]) -> Result<(), QuantError> {
    rounded_row(x, out, quantize_row_q8_0, |d, qs, _| BlockQ8_0 { d: f32_to_f16(d), qs })
}

/// Rounds `x` (`32 * out.len()` floats) to Q8_1 blocks, as `quantize_row_q8_1`.
pub(super) fn row_q8_1(x: &[f32], out: &mut [BlockQ8_1]) -> Result<(), QuantError> {
    rounded_row(x, out, quantize_row_q8_1, |d, qs, sum| BlockQ8_1 {
        d: f32_to_f16(d),
        s: f32_to_f16(sum as f32 * d),
        qs,
    })
}

/// Rounds `x` (`256 * out.len()` floats) to Q8_K blocks, as `quantize_row_q8_k`.
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
pub(super) fn row_q8_k(x: &[f32], out: &mut [BlockQ8K]) -> Result<(), QuantError> {
    #[cfg(target_arch = "x86_64")]
    if x.len() == crate::quant::QK_K * out.len() && backend() != Backend::Scalar {
        for (xs, y) in x.chunks_exact(crate::quant::QK_K).zip(out.chunks_exact_mut(1)) {
            // SAFETY: every non-scalar x86 backend has AVX2; `xs` holds 256 floats.
            match unsafe { x86::block_q8_k(xs) } {
                Some(block) => y[0] = block,
                None => quantize_row_q8_k(xs, y)?,
            }
        }
        return Ok(());
    }
    quantize_row_q8_k(x, out)
}

/// `x` rounded block by block into `out`: in vector lanes where the CPU has them, each block
/// assembled by `block` from `(amax / 127, quants, sum of quants)`, and by the scalar
/// specification `spec` for the blocks the lanes leave to it, on other CPUs, and for wrong
/// lengths (whose error it reports).
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
fn rounded_row<B>(
    x: &[f32],
    out: &mut [B],
    spec: fn(&[f32], &mut [B]) -> Result<(), QuantError>,
    block: impl Fn(f32, [i8; 32], i32) -> B,
) -> Result<(), QuantError> {
    #[cfg(target_arch = "x86_64")]
    if x.len() == 32 * out.len() && backend() != Backend::Scalar {
        for (xs, y) in x.chunks_exact(32).zip(out.chunks_exact_mut(1)) {
            // SAFETY: every non-scalar x86 backend has AVX2; `xs` holds 32 floats.
            match unsafe { x86::block(xs) } {
                Some((d, qs, sum)) => y[0] = block(d, qs, sum),
                None => spec(xs, y)?,
            }
        }
        return Ok(());
    }
    spec(x, out)
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use crate::quant::{BlockQ8K, QK_K};
    use bytemuck::Zeroable;
    use std::arch::x86_64::*;

    /// One block of 32 floats: `(amax / 127, quants, sum of quants)`, or `None` where the
    /// scalar path must decide (a NaN, a non-finite `amax` or `127 / amax`).
    ///
    /// With a finite `id` and no NaN, `|x * id| <= 127` up to one rounding of the product, so
    /// `cvtps2dq` (round half to even under the default MXCSR) gives the scalar path's
    /// `nearest_int` values, none of which needs its saturation.
    ///
    /// # Safety
    /// AVX2 must be present; `x` must hold at least 32 floats.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn block(x: &[f32]) -> Option<(f32, [i8; 32], i32)> {
        debug_assert!(x.len() >= 32);
        let v: [__m256; 4] = std::array::from_fn(|c| _mm256_loadu_ps(x.as_ptr().add(8 * c)));
        let amax = abs_max(&x[..32])?;
        let d = amax / 127.0;
        let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
        if !amax.is_finite() || !id.is_finite() {
            return None;
        }
        let scale = _mm256_set1_ps(id);
        let q: [__m256i; 4] = std::array::from_fn(|c| _mm256_cvtps_epi32(_mm256_mul_ps(v[c], scale)));
        let sum = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
        let mut sums = [0i32; 8];
        _mm256_storeu_si256(sums.as_mut_ptr().cast(), sum);
        let mut qs = [0i8; 32];
        _mm256_storeu_si256(qs.as_mut_ptr().cast(), bytes_in_order(q));
        Some((d, qs, sums.iter().sum()))
    }

    /// The largest magnitude among `x` (a multiple of 8 floats), or `None` if one is NaN.
    ///
    /// # Safety
    /// AVX2 must be present.
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn abs_max(x: &[f32]) -> Option<f32> {
        let sign = _mm256_set1_ps(-0.0);
        let mut amax = _mm256_setzero_ps();
        let mut unordered = 0;
        for c in x.chunks_exact(8) {
            let v = _mm256_loadu_ps(c.as_ptr());
            unordered |= _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_UNORD_Q>(v, v));
            amax = _mm256_max_ps(amax, _mm256_andnot_ps(sign, v));
        }
        if unordered != 0 {
            return None;
        }
        let mut lanes = [0f32; 8];
        _mm256_storeu_ps(lanes.as_mut_ptr(), amax);
        Some(lanes.iter().fold(0f32, |m, &a| m.max(a)))
    }

    /// The 32 i32 lanes of `q` (elements in order, each within i8) as 32 bytes in order:
    /// packs work per 128-bit lane, (q0, q1) -> [q0 lo, q1 lo, q0 hi, q1 hi] as i16, then the
    /// bytes of both pairs likewise; one dword permute restores element order.
    ///
    /// # Safety
    /// AVX2 must be present.
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn bytes_in_order(q: [__m256i; 4]) -> __m256i {
        let bytes = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
        _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7))
    }

    /// One Q8_K block of 256 floats, or `None` where the scalar path must decide (a NaN, a
    /// non-finite `amax` or `-127 / max`).
    ///
    /// With a finite `iscale` and no NaN, `|x * iscale| <= 127` up to two roundings (the
    /// division and the product), so `cvtps2dq` gives the scalar path's `nearest_int` values
    /// and its clamp to 127 never applies.
    ///
    /// # Safety
    /// AVX2 must be present; `x` must hold at least 256 floats.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn block_q8_k(x: &[f32]) -> Option<BlockQ8K> {
        debug_assert!(x.len() >= QK_K);
        let load = |c: usize| _mm256_loadu_ps(x.as_ptr().add(8 * c));
        let amax = abs_max(&x[..QK_K])?;
        if amax == 0.0 {
            return Some(BlockQ8K::zeroed());
        }
        if !amax.is_finite() {
            return None;
        }
        // The scalar path's `max`: the first element of the largest magnitude, with its sign.
        let (sign, target) = (_mm256_set1_ps(-0.0), _mm256_set1_ps(amax));
        let first = (0..QK_K / 8).find_map(|c| {
            let hits = _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_EQ_OQ>(_mm256_andnot_ps(sign, load(c)), target));
            (hits != 0).then(|| 8 * c + hits.trailing_zeros() as usize)
        })?;
        let iscale = -127.0 / x[first];
        if !iscale.is_finite() {
            return None;
        }
        let scale = _mm256_set1_ps(iscale);
        let mut y = BlockQ8K::zeroed();
        for k in 0..QK_K / 32 {
            let q: [__m256i; 4] = std::array::from_fn(|c| _mm256_cvtps_epi32(_mm256_mul_ps(load(4 * k + c), scale)));
            _mm256_storeu_si256(y.qs.as_mut_ptr().add(32 * k).cast(), bytes_in_order(q));
            // The sums of groups 2k and 2k + 1 (16 quants each): per 128-bit lane, two
            // horizontal adds leave each group's half-sums in dwords 0 and 1.
            let h = _mm256_hadd_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
            let h = _mm256_hadd_epi32(h, h);
            let sums = _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256::<1>(h));
            y.bsums[2 * k] = _mm_cvtsi128_si32(sums) as i16;
            y.bsums[2 * k + 1] = _mm_extract_epi32::<1>(sums) as i16;
        }
        y.d = 1.0 / iscale;
        Some(y)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::cpu::tests::random_floats;
    use crate::quant::QK_K;
    use bytemuck::Zeroable;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    /// Rows that exercise every case: random scales, ties (x * id landing on .5), zeros, a
    /// single non-zero, huge and subnormal amax, infinities and NaNs.
    fn rows() -> Vec<Vec<f32>> {
        let mut rng = StdRng::seed_from_u64(7);
        let mut rows: Vec<Vec<f32>> = [1e-3f32, 1.0, 37.5, 3e4, 1e30]
            .iter()
            .map(|&scale| random_floats(&mut rng, 256, scale))
            .collect();
        // amax 127: id = 1, so each value rounds as it is; ties both ways.
        let mut ties = vec![0f32; 64];
        ties[..10].copy_from_slice(&[127.0, 2.5, -2.5, 3.5, -3.5, 0.5, -0.5, 126.5, -1.5, 1.5]);
        rows.push(ties);
        rows.push(vec![0.0; 64]);
        rows.push((0..32).map(|i| if i == 7 { -3.0 } else { 0.0 }).collect());
        rows.push((0..32).map(|i| f32::from_bits(1 + i as u32)).collect());
        rows.push((0..32).map(|i| if i == 3 { f32::MAX } else { i as f32 }).collect());
        for special in [f32::INFINITY, f32::NEG_INFINITY, f32::NAN] {
            rows.push(
                (0..64)
                    .map(|i| if i == 40 { special } else { i as f32 - 20.0 })
                    .collect(),
            );
        }
        rows
    }

    #[test]
    fn rounding_matches_the_scalar_specification() {
        for x in rows() {
            let n = x.len() / 32;
            let (mut fast, mut spec) = (vec![BlockQ8_0::zeroed(); n], vec![BlockQ8_0::zeroed(); n]);
            row_q8_0(&x, &mut fast).unwrap();
            quantize_row_q8_0(&x, &mut spec).unwrap();
            assert_eq!(
                bytemuck::cast_slice::<_, u8>(&fast),
                bytemuck::cast_slice::<_, u8>(&spec),
                "{x:?}"
            );
            let (mut fast, mut spec) = (vec![BlockQ8_1::zeroed(); n], vec![BlockQ8_1::zeroed(); n]);
            row_q8_1(&x, &mut fast).unwrap();
            quantize_row_q8_1(&x, &mut spec).unwrap();
            assert_eq!(
                bytemuck::cast_slice::<_, u8>(&fast),
                bytemuck::cast_slice::<_, u8>(&spec),
                "{x:?}"
            );
        }
    }

    /// Q8_K rows: random scales, the first of two equal magnitudes deciding the sign, ties,
    /// zeros, subnormals, the largest finite value, infinities and NaNs.
    fn q8_k_rows() -> Vec<Vec<f32>> {
        let mut rng = StdRng::seed_from_u64(8);
        let mut rows: Vec<Vec<f32>> = [1e-3f32, 1.0, 37.5, 3e4, 1e30]
            .iter()
            .map(|&scale| random_floats(&mut rng, 512, scale))
            .collect();
        for (neg_at, pos_at) in [(3usize, 10usize), (10, 3), (200, 255)] {
            let mut x = random_floats(&mut rng, 256, 1.0);
            x[neg_at] = -5.0;
            x[pos_at] = 5.0;
            rows.push(x);
        }
        // max -127: iscale = 1, so each value rounds as it is; ties both ways.
        let mut ties = vec![0f32; 256];
        ties[..10].copy_from_slice(&[-127.0, 2.5, -2.5, 3.5, -3.5, 0.5, -0.5, 126.5, -1.5, 1.5]);
        rows.push(ties);
        rows.push(vec![0.0; 256]);
        rows.push((0..256).map(|i| if i == 77 { -3.0 } else { 0.0 }).collect());
        rows.push((0..256).map(|i| f32::from_bits(1 + i as u32)).collect());
        rows.push((0..256).map(|i| if i == 3 { f32::MAX } else { i as f32 }).collect());
        for special in [f32::INFINITY, f32::NEG_INFINITY, f32::NAN] {
            rows.push(
                (0..512)
                    .map(|i| if i == 300 { special } else { i as f32 - 200.0 })
                    .collect(),
            );
        }
        rows
    }

    #[test]
    fn q8_k_rounding_matches_the_scalar_specification() {
        for x in q8_k_rows() {
            let n = x.len() / QK_K;
            let (mut fast, mut spec) = (vec![BlockQ8K::zeroed(); n], vec![BlockQ8K::zeroed(); n]);
            row_q8_k(&x, &mut fast).unwrap();
            quantize_row_q8_k(&x, &mut spec).unwrap();
            assert_eq!(
                bytemuck::cast_slice::<_, u8>(&fast),
                bytemuck::cast_slice::<_, u8>(&spec),
                "{x:?}"
            );
        }
    }

    #[test]
    fn wrong_lengths_are_errors() {
        let mut out = vec![BlockQ8_0::zeroed(); 2];
        assert!(row_q8_0(&[0.0; 32], &mut out).is_err());
        let mut out = vec![BlockQ8_1::zeroed(); 1];
        assert!(row_q8_1(&[0.0; 48], &mut out).is_err());
        let mut out = vec![BlockQ8K::zeroed(); 1];
        assert!(row_q8_k(&[0.0; 512], &mut out).is_err());
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_vector_path_takes_finite_blocks_and_leaves_the_rest() {
        if !is_x86_feature_detected!("avx2") {
            return;
        }
        // SAFETY: AVX2 checked; 32 floats each.
        unsafe {
            assert!(x86::block(&[1.0; 32]).is_some());
            assert!(x86::block(&[0.0; 32]).is_some());
            let mut x = [1.0f32; 32];
            x[31] = f32::NAN;
            assert!(x86::block(&x).is_none());
            x[31] = f32::INFINITY;
            assert!(x86::block(&x).is_none());
            assert!(x86::block(&[f32::from_bits(1); 32]).is_none(), "127 / amax overflows");
            assert!(x86::block_q8_k(&[1.0; 256]).is_some());
            assert!(x86::block_q8_k(&[0.0; 256]).is_some());
            let mut x = [1.0f32; 256];
            x[255] = f32::NAN;
            assert!(x86::block_q8_k(&x).is_none());
            x[255] = f32::NEG_INFINITY;
            assert!(x86::block_q8_k(&x).is_none());
            assert!(
                x86::block_q8_k(&[f32::from_bits(1); 256]).is_none(),
                "-127 / max overflows"
            );
        }
    }
}
