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
    // `abs() < 2^31` is false for NaN too; -2^31 itself lands on i32::MIN either way. Both
    // arms are computed (a select, not a branch) so loops over blocks vectorize.
    let saturated = v as i32;
    if v.abs() < 2_147_483_648.0 {
        saturated
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
    // Branch-free (both arms computed, then selected) so loops over blocks vectorize; the
    // wrapping add only matters in the discarded arm, where `v as i32` saturated.
    let i = v as i32;
    let frac = v - i as f32;
    let rounded = i.wrapping_add((frac >= 0.5) as i32 - (frac <= -0.5) as i32) as i8;
    if v.abs() < 2_147_483_648.0 {
        rounded
    } else {
        i32::MIN as i8
    }
}

/// Below this magnitude [`trunc_small`] and [`round_away_small`] are exact; the block
/// quantizers take their fast path only when every product is known to stay under it.
pub(crate) const SMALL_LIMIT: f32 = 2_097_152.0; // 2^21

/// `v` truncated toward zero, for `|v| < 2^22`, in float arithmetic only: baseline x86-64
/// (SSE2) has no vector form of Rust's saturating `as i32`, so loops using it stay scalar,
/// while these adds, compares and selects vectorize. Adding and removing 2^23 rounds `|v|`
/// to the nearest integer (exact below 2^23); one is taken off when that rounded up.
#[inline(always)]
pub(crate) fn trunc_small(v: f32) -> f32 {
    const TWO_23: f32 = 8_388_608.0;
    let a = v.abs();
    let r = (a + TWO_23) - TWO_23;
    let floor = if r > a { r - 1.0 } else { r };
    floor.copysign(v)
}

/// C's `roundf(v)` (half away from zero) for `|v| < 2^22`, as [`c_round_i8`] computes it
/// (`trunc(v)` plus a step when the exact fraction reaches one half), in float arithmetic.
#[inline(always)]
pub(crate) fn round_away_small(v: f32) -> f32 {
    let t = trunc_small(v);
    let frac = v - t;
    let up = if frac >= 0.5 { 1.0 } else { 0.0 };
    let down = if frac <= -0.5 { 1.0 } else { 0.0 };
    t + up - down
}

/// `nearest_int(v).clamp(lo, hi)` as an f32, clamping after the conversion: `nearest_int`
/// always returns an integer of magnitude at most 2^22, which converts exactly, so the float
/// clamp (min/max instructions) equals the integer one (which baseline SSE2 lacks).
#[inline(always)]
pub(crate) fn nearest_clamped(v: f32, lo: f32, hi: f32) -> f32 {
    let f = nearest_int(v) as f32;
    let f = if f < lo { lo } else { f };
    if f > hi {
        hi
    } else {
        f
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
    fn small_forms_match_the_c_conversions() {
        // The largest float below one half, both signs: `x + 0.5` would round it up to 1.
        let below_half = f32::from_bits(0x3eff_ffff);
        let mut values = vec![0.0f32, -0.0, 0.5, -0.5, 1.5, 2.5, -2.5, below_half, -below_half];
        values.extend([8.5f32, 16.5, 126.5, -127.5, 4_194_303.5, -4_194_303.5, 2_097_151.5]);
        for k in -2_000_000..=2_000_000 {
            values.push(k as f32 * 0.000_37);
        }
        let mut bits = 0x3f80_0000u32;
        for _ in 0..200_000 {
            bits = bits.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let v = f32::from_bits(bits);
            if v.abs() < 4_194_304.0 {
                values.push(v);
            }
        }
        for v in values {
            assert_eq!(trunc_small(v) as i32, c_trunc_i32(v), "trunc {v}");
            assert_eq!(round_away_small(v) as i32 as i8, c_round_i8(v), "round {v}");
            assert_eq!(round_away_small(v), v.round(), "round {v}");
            for (lo, hi) in [(0.0f32, 15.0f32), (-32.0, 31.0)] {
                let want = nearest_int(v).clamp(lo as i32, hi as i32) as f32;
                assert_eq!(nearest_clamped(v, lo, hi), want, "nearest {v}");
            }
        }
        for v in [f32::NAN, f32::INFINITY, -1e30, 1e30] {
            assert_eq!(nearest_clamped(v, 0.0, 15.0), nearest_int(v).clamp(0, 15) as f32, "{v}");
        }
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
