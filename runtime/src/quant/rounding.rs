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
    if v.is_nan() || !(-2_147_483_648.0..2_147_483_648.0).contains(&v) {
        i32::MIN
    } else {
        v as i32
    }
}

/// C's `(int8_t)v`: truncate to a 32-bit integer, keep the low byte.
#[inline(always)]
pub(crate) fn c_trunc_i8(v: f32) -> i8 {
    c_trunc_i32(v) as i8
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
}
