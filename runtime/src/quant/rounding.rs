//! The integer conversions ggml's reference quantizers rely on, reproduced bit for bit.
//!
//! The k-quants round with a float trick rather than `roundf`, and the legacy formats convert
//! with C's truncating float-to-int cast. Both are emulated exactly (including what x86 does
//! for out-of-range inputs, where C leaves it undefined) so our bytes equal ggml's even for
//! degenerate rows whose scales overflow.

/// ggml's `nearest_int`: adds 1.5 * 2^23 so that the FPU's round-to-nearest-even lands the
/// integer in the low mantissa bits, then reads them back. Exact for |v| < 2^22; outside that
/// range (and for NaN) it returns the same wrapped value ggml does, which matters only for
/// rows whose intermediate scales have already overflowed.
#[inline(always)]
pub(crate) fn nearest_int(v: f32) -> i32 {
    let shifted = v + 12_582_912.0;
    (shifted.to_bits() & 0x007f_ffff) as i32 - 0x0040_0000
}

/// C's `(int32_t)v` as x86's `cvttss2si` computes it: truncation toward zero, and the
/// "integer indefinite" `i32::MIN` for NaN or out-of-range values (Rust's `as` saturates
/// instead, which would diverge from ggml on those rows).
#[inline(always)]
pub(crate) fn c_trunc_i32(v: f32) -> i32 {
    // `abs() < 2^31` is false for NaN too; -2^31 itself lands on i32::MIN either way.
    if v.abs() < 2_147_483_648.0 {
        v as i32
    } else {
        i32::MIN
    }
}

/// C's `(int8_t)v`: truncate to a 32-bit integer, keep the low byte.
#[inline(always)]
pub(crate) fn c_trunc_i8(v: f32) -> i8 {
    c_trunc_i32(v) as i8
}

/// C's `(int8_t)roundf(v)`: round half away from zero, then the truncating conversion above.
/// Computed with integer arithmetic because `f32::round` is a libm call on baseline x86-64,
/// and this runs on every activation. For |v| < 2^31, `v - trunc(v)` is exact; beyond that
/// (and for NaN) `roundf` returns `v` unchanged and the conversion yields `i32::MIN`.
#[inline(always)]
pub(crate) fn c_round_i8(v: f32) -> i8 {
    if v.abs() < 2_147_483_648.0 {
        let i = v as i32;
        let frac = v - i as f32;
        (i + (frac >= 0.5) as i32 - (frac <= -0.5) as i32) as i8
    } else {
        i32::MIN as i8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_int_rounds_half_to_even() {
        assert_eq!(nearest_int(0.5), 0);
        assert_eq!(nearest_int(1.5), 2);
        assert_eq!(nearest_int(2.5), 2);
        assert_eq!(nearest_int(-0.5), 0);
        assert_eq!(nearest_int(-1.5), -2);
        assert_eq!(nearest_int(-2.4999), -2);
        assert_eq!(nearest_int(63.49), 63);
        assert_eq!(nearest_int(4_194_303.0), 4_194_303);
        assert_eq!(nearest_int(-4_194_303.0), -4_194_303);
        // NaN reads back as 0 (quiet NaN mantissa 0x400000).
        assert_eq!(nearest_int(f32::NAN), 0);
    }

    #[test]
    fn c_casts_truncate_and_wrap() {
        assert_eq!(c_trunc_i8(8.99), 8);
        assert_eq!(c_trunc_i8(-0.7), 0);
        assert_eq!(c_trunc_i8(-127.9), -127);
        assert_eq!(c_trunc_i8(200.0), -56);
        assert_eq!(c_trunc_i8(f32::NAN), 0);
        assert_eq!(c_trunc_i8(f32::INFINITY), 0);
        assert_eq!(c_trunc_i32(3e9), i32::MIN);
    }

    #[test]
    fn c_round_matches_roundf_then_cast() {
        let reference = |v: f32| c_trunc_i8(v.round());
        let below_half = 0.5 - f32::EPSILON / 4.0;
        let specials = [
            0.5f32,
            -0.5,
            1.5,
            2.5,
            -2.5,
            below_half,
            -below_half,
            126.5,
            -127.5,
            127.49,
            -0.0,
        ];
        let large = [8_388_607.5f32, 8_388_609.0, 2.1e9, -2.1e9, 3e9, f32::NAN, f32::INFINITY];
        for v in specials.into_iter().chain(large) {
            assert_eq!(c_round_i8(v), reference(v), "{v}");
        }
        // Every float in [-300, 300] at a fine step, plus all the half-way points.
        for k in -600_000..=600_000 {
            let v = k as f32 * 0.0005;
            assert_eq!(c_round_i8(v), reference(v), "{v}");
            let h = (k / 1000) as f32 + 0.5;
            assert_eq!(c_round_i8(h), reference(h), "{h}");
        }
    }
}
