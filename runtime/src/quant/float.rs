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
///
/// Integer arithmetic on the bits, inlined: the block quantizers convert one scale per block,
/// and a call into `half` (which picks its F16C path at run time) costs as much as quantizing
/// a Q4_0 block. Tested against `half` on a sweep of all bit patterns.
#[inline(always)]
pub fn f32_to_f16(x: f32) -> f16 {
    let bits = x.to_bits();
    let sign = ((bits >> 16) & 0x8000) as u16;
    let abs = bits & 0x7fff_ffff;
    let magnitude = if abs > 0x7f80_0000 {
        0x7e00
    } else if abs >= 0x4780_0000 {
        // 65536 and above (and infinity): past the largest f16 even after rounding.
        0x7c00
    } else if abs >= 0x3880_0000 {
        // Normal in f16 (from 2^-14): rebias the exponent in place (127 - 15 = 112), then
        // drop 13 mantissa bits rounding to nearest even; a carry moves into the exponent
        // and, from 65520 up, yields exactly the infinity pattern.
        let rebased = abs - (112 << 23);
        round_shift_even(rebased, 13)
    } else if abs >= 0x3300_0000 {
        // Subnormal in f16 (2^-25 up to 2^-14): the value in units of 2^-24, rounded to
        // nearest even (exactly 2^-25 ties to 0; the top rounds up to the smallest normal).
        let mantissa = (abs & 0x007f_ffff) | 0x0080_0000;
        round_shift_even(mantissa, 126 - (abs >> 23))
    } else {
        0
    };
    f16::from_bits(sign | magnitude as u16)
}

/// `value >> shift` (`1 <= shift <= 24`) rounded to nearest, ties to even.
#[inline(always)]
fn round_shift_even(value: u32, shift: u32) -> u32 {
    let kept = value >> shift;
    let rest = value & ((1 << shift) - 1);
    let half = 1 << (shift - 1);
    kept + (rest > half || (rest == half && kept & 1 == 1)) as u32
}

/// f16 to f32 (exact; every f16 is representable). A NaN keeps its payload and gets the
/// quiet bit, as F16C's `vcvtph2ps` (and so `half`, and ggml on x86) converts it.
///
/// Integer arithmetic and selects, inlined, so that row conversions vectorize (a call per
/// value into `half` made F16 input the slowest step of requantizing a GGUF). Tested against
/// `half` on all 65536 inputs.
#[inline(always)]
pub fn f16_to_f32(x: f16) -> f32 {
    let h = x.to_bits() as u32;
    let sign = (h & 0x8000) << 16;
    let exponent = h & 0x7c00;
    let mantissa = h & 0x03ff;
    // Normal: rebias the exponent (127 - 15 = 112) with the mantissa moved up 13 bits.
    let normal = ((h & 0x7fff) << 13) + (112 << 23);
    // Infinity and NaN: the top exponent, the payload kept, NaN made quiet.
    let special = 0x7f80_0000 | (mantissa << 13) | if mantissa != 0 { 0x0040_0000 } else { 0 };
    // Zero and subnormals: mantissa * 2^-24, exact in f32.
    let small = (mantissa as f32 * (1.0 / 16_777_216.0)).to_bits();
    let magnitude = if exponent == 0x7c00 {
        special
    } else if exponent == 0 {
        small
    } else {
        normal
    };
    f32::from_bits(sign | magnitude)
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
    fn f16_to_f32_matches_half_on_every_input() {
        for bits in 0..=u16::MAX {
            let h = f16::from_bits(bits);
            let want = h.to_f32().to_bits();
            // `half` may take a software path that keeps a signalling NaN signalling; the F16C
            // instruction (and ggml on x86) quiets it, which is what we return.
            let want = if h.is_nan() { want | 0x0040_0000 } else { want };
            assert_eq!(f16_to_f32(h).to_bits(), want, "{bits:#06x}");
        }
    }

    #[test]
    fn f16_conversion_matches_half_on_a_bit_pattern_sweep() {
        let mut bits = 0u32;
        loop {
            let x = f32::from_bits(bits);
            let want = if x.is_nan() {
                ((bits >> 16) & 0x8000) as u16 | 0x7E00
            } else {
                f16::from_f32(x).to_bits()
            };
            assert_eq!(f32_to_f16(x).to_bits(), want, "{bits:#010x}");
            match bits.checked_add(61) {
                Some(next) => bits = next,
                None => break,
            }
        }
        // Every boundary region exactly, both signs.
        for base in [0x3300_0000u32, 0x3880_0000, 0x4780_0000, 0x477f_e000, 0x7f80_0000, 0] {
            for off in 0..70_000u32 {
                for b in [base.wrapping_add(off), base.wrapping_sub(off)] {
                    for b in [b, b | 0x8000_0000] {
                        let x = f32::from_bits(b);
                        if !x.is_nan() {
                            assert_eq!(f32_to_f16(x).to_bits(), f16::from_f32(x).to_bits(), "{b:#010x}");
                        }
                    }
                }
            }
        }
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
