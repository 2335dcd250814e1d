//! IEEE half (`f16`) and brain-float (`bf16`) conversions with ggml's exact rounding rules.
//!
//! ggml converts f32 to f16 with round-to-nearest-even (its software path and F16C agree) and
//! turns every NaN into the canonical quiet NaN `sign | 0x7E00`. f32 to bf16 also rounds to
//! nearest even, but keeps the NaN's top payload bits and forces the quiet bit
//! (`ggml_compute_fp32_to_bf16`). `half` rounds the same way for finite values; NaN is handled
//! here explicitly so the stored bits never depend on which code path `half` picked at run time.

use half::{bf16, f16};

/// f32 to f16 exactly as ggml's `GGML_FP32_TO_FP16`: nearest-even, overflow to ±inf, NaN to
/// the canonical quiet NaN with the input's sign.
#[inline]
pub fn f32_to_f16(x: f32) -> f16 {
    if x.is_nan() {
        let sign = ((x.to_bits() >> 16) & 0x8000) as u16;
        return f16::from_bits(sign | 0x7E00);
    }
    f16::from_f32(x)
}

/// f16 to f32 (exact; every f16 is representable).
#[inline]
pub fn f16_to_f32(x: f16) -> f32 {
    x.to_f32()
}

/// f32 to bf16 exactly as ggml's `ggml_compute_fp32_to_bf16`: nearest-even on the dropped 16
/// bits (so large finite values may round up to ±inf), NaN truncated with the quiet bit forced.
#[inline]
pub fn f32_to_bf16(x: f32) -> bf16 {
    let u = x.to_bits();
    if u & 0x7fff_ffff > 0x7f80_0000 {
        return bf16::from_bits(((u >> 16) as u16) | 0x40);
    }
    // Adding 0x7fff plus the lowest kept bit rounds half-way cases to the even neighbour;
    // wrapping is impossible because the largest finite |x| plus the bias stays below 2^32.
    let rounded = u.wrapping_add(0x7fff + ((u >> 16) & 1));
    bf16::from_bits((rounded >> 16) as u16)
}

/// bf16 to f32 (exact: the bf16 bits are the f32's top half).
#[inline]
pub fn bf16_to_f32(x: bf16) -> f32 {
    f32::from_bits((x.to_bits() as u32) << 16)
}

/// Converts a row of f32 to f16 (`ggml_fp32_to_fp16_row`). Converts
/// `min(src.len(), dst.len())` values: the kernels call this on tails whose lengths they have
/// already checked, so it stays infallible.
pub fn f32_to_f16_row(src: &[f32], dst: &mut [f16]) {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = f32_to_f16(s);
    }
}

/// Converts a row of f32 to bf16 (`ggml_fp32_to_bf16_row_ref`), `min(src.len(), dst.len())`
/// values as [`f32_to_f16_row`].
pub fn f32_to_bf16_row(src: &[f32], dst: &mut [bf16]) {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = f32_to_bf16(s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_rounds_to_nearest_even_and_canonicalises_nan() {
        // 1 + 2^-11 is exactly half-way between 1 and the next f16; ties go to the even (1.0).
        assert_eq!(f32_to_f16(1.0 + f32::powi(2.0, -11)).to_bits(), 0x3C00);
        // 1 + 3*2^-11 is half-way between two odd/even neighbours; it rounds up to even 0x3C02.
        assert_eq!(f32_to_f16(1.0 + 3.0 * f32::powi(2.0, -11)).to_bits(), 0x3C02);
        assert_eq!(f32_to_f16(65520.0).to_bits(), 0x7C00, "65520 rounds to +inf");
        assert_eq!(f32_to_f16(65519.0).to_bits(), 0x7BFF);
        assert_eq!(f32_to_f16(-1e30).to_bits(), 0xFC00);
        assert_eq!(f32_to_f16(f32::from_bits(0x7FC1_2345)).to_bits(), 0x7E00);
        assert_eq!(f32_to_f16(f32::from_bits(0xFF80_0001)).to_bits(), 0xFE00);
        // Smallest f16 subnormal survives; half of it ties to even (zero).
        assert_eq!(f32_to_f16(f32::powi(2.0, -24)).to_bits(), 0x0001);
        assert_eq!(f32_to_f16(f32::powi(2.0, -25)).to_bits(), 0x0000);
        assert_eq!(f16_to_f32(f16::from_bits(0x3555)), 0.333_251_95);
    }

    #[test]
    fn bf16_matches_ggml_rule() {
        assert_eq!(f32_to_bf16(1.0).to_bits(), 0x3F80);
        // Exactly half-way: 0x3F808000 ties to even 0x3F80, 0x3F818000 ties up to 0x3F82.
        assert_eq!(f32_to_bf16(f32::from_bits(0x3F80_8000)).to_bits(), 0x3F80);
        assert_eq!(f32_to_bf16(f32::from_bits(0x3F81_8000)).to_bits(), 0x3F82);
        assert_eq!(f32_to_bf16(f32::from_bits(0x3F80_8001)).to_bits(), 0x3F81);
        // Signalling NaN keeps its top payload and gets the quiet bit.
        assert_eq!(f32_to_bf16(f32::from_bits(0x7F81_0000)).to_bits(), 0x7FC1);
        assert_eq!(f32_to_bf16(f32::from_bits(0xFFC0_0001)).to_bits(), 0xFFC0);
        // The largest finite f32 rounds up to infinity, as in ggml.
        assert_eq!(f32_to_bf16(f32::MAX).to_bits(), 0x7F80);
        assert_eq!(f32_to_bf16(f32::INFINITY).to_bits(), 0x7F80);
        let mut row = [bf16::ZERO; 2];
        f32_to_bf16_row(&[1.0, -2.0], &mut row);
        assert_eq!(row.map(|v| v.to_bits()), [0x3F80, 0xC000]);
        let mut row16 = [f16::ZERO; 2];
        f32_to_f16_row(&[1.0, -2.0, 3.0], &mut row16);
        assert_eq!(row16.map(|v| v.to_bits()), [0x3C00, 0xC000]);
        for bits in [0x0000u16, 0x8000, 0x3F80, 0xC2F7, 0x0001, 0x7F7F] {
            assert_eq!(f32_to_bf16(bf16_to_f32(bf16::from_bits(bits))).to_bits(), bits);
        }
    }
}
