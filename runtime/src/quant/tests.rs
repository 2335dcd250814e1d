//! Unit tests for the quantizers: round-trip error bounds, edge cases and error paths.
//! Byte identity with ggml is checked separately by `tests/quant_oracle.rs`.

use super::*;
use bytemuck::Zeroable;

/// Deterministic pseudo-random rows (xorshift64*, Box-Muller) so the tests need no RNG crate
/// and fail reproducibly.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn uniform(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 + 0.5) / (1u64 << 24) as f32
    }
    fn normal(&mut self) -> f32 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
    }
    fn normal_row(&mut self, n: usize, sigma: f32) -> Vec<f32> {
        (0..n).map(|_| self.normal() * sigma).collect()
    }
}

const QUANTIZED: [GgmlType; 10] = [
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q8_1,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
    GgmlType::Q8_K,
];

fn round_trip(ty: GgmlType, x: &[f32]) -> Vec<f32> {
    let mut bytes = vec![0u8; ty.row_bytes(x.len() as u64).unwrap() as usize];
    quantize_row(ty, x, &mut bytes).unwrap();
    let mut y = vec![0f32; x.len()];
    dequantize_row(ty, &bytes, &mut y).unwrap();
    y
}

fn rmse(x: &[f32], y: &[f32]) -> f32 {
    (x.iter().zip(y).map(|(a, b)| (a - b) * (a - b)).sum::<f32>() / x.len() as f32).sqrt()
}

/// Relative RMSE bound per type on Gaussian rows (measured values are roughly 60-80% of
/// these: Q4_0 0.10, Q4_1 0.09, Q4_K 0.08, Q5_K 0.04, Q6_K 0.02, Q8_0 0.004, Q8_K 0.007).
fn rel_rmse_bound(ty: GgmlType) -> f32 {
    match ty {
        GgmlType::Q4_0 => 0.13,
        GgmlType::Q4_1 | GgmlType::Q4_K => 0.11,
        GgmlType::Q5_K => 0.055,
        GgmlType::Q5_0 => 0.07,
        GgmlType::Q5_1 => 0.06,
        GgmlType::Q6_K => 0.03,
        GgmlType::Q8_0 | GgmlType::Q8_1 | GgmlType::F16 => 0.006,
        GgmlType::Q8_K => 0.009,
        GgmlType::BF16 => 0.005,
        _ => 0.0,
    }
}

#[test]
fn gaussian_round_trip_within_bounds() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for ty in QUANTIZED.into_iter().chain([GgmlType::F16, GgmlType::BF16]) {
        for sigma in [1e-3f32, 1.0, 50.0] {
            let x = rng.normal_row(4096, sigma);
            let y = round_trip(ty, &x);
            let rel = rmse(&x, &y) / sigma;
            assert!(rel < rel_rmse_bound(ty), "{ty} sigma {sigma}: relative rmse {rel}");
        }
    }
    let x = rng.normal_row(256, 3.0);
    assert_eq!(round_trip(GgmlType::F32, &x), x);
}

/// Per-block worst case of the symmetric 8-bit formats: half a step plus the f16 scale error.
#[test]
fn q8_max_error_is_half_a_step() {
    let mut rng = Rng(7);
    let x = rng.normal_row(1024, 2.0);
    for ty in [GgmlType::Q8_0, GgmlType::Q8_1, GgmlType::Q8_K] {
        let y = round_trip(ty, &x);
        for (xb, yb) in x.chunks(ty.block_size()).zip(y.chunks(ty.block_size())) {
            let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
            for (a, b) in xb.iter().zip(yb) {
                assert!((a - b).abs() <= amax / 127.0 * 0.56, "{ty}: {a} vs {b}");
            }
        }
    }
}

#[test]
fn q4_0_known_block() {
    // Extreme value -8 gives d = 1 exactly; every integer in -8..=7 is then represented exactly.
    let x: Vec<f32> = (0..32).map(|j| (j % 16) as f32 - 8.0).collect();
    let mut out = [BlockQ4_0::zeroed()];
    BlockQ4_0::from_float(&x, &mut out).unwrap();
    assert_eq!(out[0].d.to_f32(), 1.0);
    for (j, &q) in out[0].qs.iter().enumerate() {
        assert_eq!(q, (j as u8 % 16) | ((j as u8 % 16) << 4));
    }
    let mut y = [0f32; 32];
    BlockQ4_0::to_float(&out, &mut y).unwrap();
    assert_eq!(y.as_slice(), x.as_slice());
}

#[test]
fn q5_0_known_block() {
    // Extreme value -16 gives d = 1 exactly; every integer in -16..=15 is then represented
    // exactly, so every 5-bit pattern (and both values of each `qh` bit) occurs.
    let x: Vec<f32> = (0..32).map(|j| ((j * 7) % 32) as f32 - 16.0).collect();
    let mut out = [BlockQ5_0::zeroed()];
    BlockQ5_0::from_float(&x, &mut out).unwrap();
    assert_eq!(out[0].d.to_f32(), 1.0);
    let q: Vec<u32> = (0..32).map(|j| ((j * 7) % 32) as u32).collect();
    let qh: u32 = (0..32).map(|j| ((q[j] >> 4) & 1) << j).sum();
    assert_eq!(u32::from_le_bytes(out[0].qh), qh);
    for j in 0..16 {
        assert_eq!(out[0].qs[j] as u32, (q[j] & 15) | ((q[j + 16] & 15) << 4), "byte {j}");
    }
    let mut y = [0f32; 32];
    BlockQ5_0::to_float(&out, &mut y).unwrap();
    assert_eq!(y.as_slice(), x.as_slice());
}

#[test]
fn q5_1_known_block() {
    // min 3, max 34: d = 1 exactly and q = x - 3 covers 0..=31.
    let x: Vec<f32> = (0..32).map(|j| ((j * 11) % 32) as f32 + 3.0).collect();
    let mut out = [BlockQ5_1::zeroed()];
    BlockQ5_1::from_float(&x, &mut out).unwrap();
    assert_eq!((out[0].d.to_f32(), out[0].m.to_f32()), (1.0, 3.0));
    let q: Vec<u32> = (0..32).map(|j| ((j * 11) % 32) as u32).collect();
    let qh: u32 = (0..32).map(|j| ((q[j] >> 4) & 1) << j).sum();
    assert_eq!(u32::from_le_bytes(out[0].qh), qh);
    let mut y = [0f32; 32];
    BlockQ5_1::to_float(&out, &mut y).unwrap();
    assert_eq!(y.as_slice(), x.as_slice());
}

#[test]
fn q8_0_known_block() {
    // amax 127 gives d = 1 and exact integers; the activation quantizer rounds 2.5 half to
    // even (to 2) as ggml's x86 CPU backend does.
    let mut x = [0f32; 32];
    x[0] = 127.0;
    x[1] = -2.5;
    x[2] = 2.5;
    x[3] = -127.0;
    let mut out = [BlockQ8_0::zeroed()];
    quantize_row_q8_0(&x, &mut out).unwrap();
    assert_eq!(out[0].d.to_f32(), 1.0);
    assert_eq!(&out[0].qs[..5], &[127, -2, 2, -127, 0]);
}

#[test]
fn q8_1_sum_and_q8_k_bsums() {
    let mut rng = Rng(11);
    let x = rng.normal_row(512, 1.5);
    let mut b1 = vec![BlockQ8_1::zeroed(); 16];
    quantize_row_q8_1(&x, &mut b1).unwrap();
    for b in &b1 {
        let sum: i32 = b.qs.iter().map(|&q| q as i32).sum();
        let expect = f32_to_f16(sum as f32 * (b.d.to_f32()));
        // `s` uses the f32 scale before f16 rounding, so allow a one-ulp-of-f16 difference.
        assert!((b.s.to_f32() - expect.to_f32()).abs() <= expect.to_f32().abs() * 2e-3 + 1e-6);
    }
    let mut bk = vec![BlockQ8K::zeroed(); 2];
    quantize_row_q8_k(&x, &mut bk).unwrap();
    for b in &bk {
        for (g, s) in b.qs.chunks(16).zip(b.bsums) {
            assert_eq!(g.iter().map(|&q| q as i32).sum::<i32>(), s as i32);
        }
        // The value with the largest magnitude always maps to ±127.
        assert!(b.qs.iter().any(|&q| q == 127 || q == -127));
    }
}

#[test]
fn all_zero_rows_stay_zero() {
    let x = vec![0f32; 512];
    for ty in QUANTIZED {
        let y = round_trip(ty, &x);
        assert!(y.iter().all(|&v| v == 0.0), "{ty}");
    }
    // Q8_K: zero scale, zero quants and zero bsums even if the output held garbage before.
    let mut b = [BlockQ8K {
        d: 5.0,
        qs: [3; QK_K],
        bsums: [9; QK_K / 16],
    }];
    quantize_row_q8_k(&x[..256], &mut b).unwrap();
    assert_eq!((b[0].d, b[0].qs, b[0].bsums), (0.0, [0; QK_K], [0; QK_K / 16]));
}

#[test]
fn constant_and_one_signed_rows() {
    let mut rng = Rng(3);
    for ty in QUANTIZED {
        for c in [1.0f32, -0.37, 1234.5] {
            let x = vec![c; 512];
            let y = round_trip(ty, &x);
            for &v in &y {
                assert!((v - c).abs() <= c.abs() * 0.07, "{ty} constant {c}: got {v}");
            }
        }
        for sign in [1.0f32, -1.0] {
            let x: Vec<f32> = (0..1024).map(|_| sign * (rng.uniform() + 0.01)).collect();
            let y = round_trip(ty, &x);
            let rel = rmse(&x, &y) / (x.iter().map(|v| v * v).sum::<f32>() / 1024.0).sqrt();
            assert!(rel < rel_rmse_bound(ty), "{ty} sign {sign}: relative rmse {rel}");
        }
    }
}

#[test]
fn extreme_magnitudes_do_not_panic() {
    let mut rng = Rng(5);
    let base = rng.normal_row(512, 1.0);
    for ty in QUANTIZED {
        for scale in [1e30f32, 1e-30, 5e37, 1e-40] {
            let x: Vec<f32> = base.iter().map(|v| v * scale).collect();
            let y = round_trip(ty, &x);
            let tiny = scale < 1.0;
            // An f16 scale cannot hold 1e-30 (it flushes to zero): values come back as zero.
            // Q8_K keeps an f32 scale and so survives 1e-30.
            if tiny && ty != GgmlType::Q8_K {
                assert!(y.iter().all(|&v| v == 0.0 || v.abs() <= 5.0 * scale), "{ty} {scale}");
            }
            if ty == GgmlType::Q8_K && (scale == 1e-30 || scale == 1e30) {
                // Compare in units of `scale` so the squared error does not overflow.
                let y: Vec<f32> = y.iter().map(|v| v / scale).collect();
                assert!(rmse(&base, &y) < 0.009, "{ty} {scale}");
            }
        }
    }
}

#[test]
fn rejects_bad_lengths_and_non_finite() {
    let x = vec![0.5f32; 300];
    let mut dst = vec![0u8; 1000];
    assert_eq!(
        quantize_row(GgmlType::Q4_K, &x, &mut dst),
        Err(QuantError::RowLength {
            ty: GgmlType::Q4_K,
            len: 300,
            block: 256
        })
    );
    assert!(matches!(
        quantize_row(GgmlType::Q4_0, &x[..33], &mut dst),
        Err(QuantError::RowLength { .. })
    ));
    assert_eq!(
        quantize_row(GgmlType::Q4_0, &x[..64], &mut dst[..35]),
        Err(QuantError::Length {
            ty: GgmlType::Q4_0,
            what: "destination bytes",
            expected: 36,
            got: 35
        })
    );
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut y = vec![1.0f32; 64];
        y[41] = bad;
        for ty in QUANTIZE_TYPES {
            let n = if ty.block_size() == 256 { 0 } else { 64 };
            if n == 0 {
                continue;
            }
            let mut out = vec![0u8; ty.row_bytes(64).unwrap() as usize];
            assert_eq!(
                quantize_row(ty, &y, &mut out),
                Err(QuantError::NonFinite { index: 41 }),
                "{ty}"
            );
        }
        let mut z = vec![1.0f32; 256];
        z[200] = bad;
        let mut out = vec![0u8; 210];
        assert_eq!(
            quantize_row(GgmlType::Q6_K, &z, &mut out),
            Err(QuantError::NonFinite { index: 200 })
        );
    }
    // Q2_K has no quantizer here.
    assert!(matches!(
        quantize_row(GgmlType::Q2_K, &x[..256], &mut dst[..84]),
        Err(QuantError::Unsupported { .. })
    ));
    let mut out = vec![0f32; 256];
    assert!(matches!(
        dequantize_row(GgmlType::Q6_K, &dst[..209], &mut out),
        Err(QuantError::Length { .. })
    ));
    assert!(matches!(
        dequantize_row(GgmlType::Q6_K, &dst[..210], &mut out[..255]),
        Err(QuantError::RowLength { .. })
    ));
    let mut blocks = [BlockQ8_0::zeroed(); 2];
    assert!(matches!(
        quantize_row_q8_0(&x[..32], &mut blocks),
        Err(QuantError::Length { .. })
    ));
    let e = quantize_row(GgmlType::Q4_K, &x, &mut dst).unwrap_err().to_string();
    assert_eq!(e, "Q4_K: row of 300 elements is not a multiple of the block size 256");
}

#[test]
fn unaligned_buffers_give_the_same_bytes() {
    let mut rng = Rng(99);
    let x = rng.normal_row(256 * 20, 1.0);
    for ty in QUANTIZED {
        let n = ty.row_bytes(x.len() as u64).unwrap() as usize;
        let mut aligned = vec![0u64; n / 8 + 1];
        let aligned = &mut bytemuck::cast_slice_mut::<u64, u8>(&mut aligned)[..n];
        quantize_row(ty, &x, aligned).unwrap();
        let mut shifted = vec![0u8; n + 1];
        quantize_row(ty, &x, &mut shifted[1..]).unwrap();
        assert_eq!(&shifted[1..], &aligned[..], "{ty}");
        let (mut ya, mut yu) = (vec![0f32; x.len()], vec![0f32; x.len()]);
        dequantize_row(ty, aligned, &mut ya).unwrap();
        dequantize_row(ty, &shifted[1..], &mut yu).unwrap();
        assert_eq!(ya, yu, "{ty}");
    }
}

#[test]
fn q4k_scale_packing_round_trips() {
    let mut rng = Rng(17);
    for _ in 0..200 {
        let mut sc = [0u8; 8];
        let mut mn = [0u8; 8];
        for j in 0..8 {
            sc[j] = (rng.next_u64() % 64) as u8;
            mn[j] = (rng.next_u64() % 64) as u8;
        }
        let packed = pack_q4k_scales(&sc, &mn);
        assert_eq!(unpack_q4k_scales(&packed), (sc, mn));
        for j in 0..8 {
            assert_eq!(get_scale_min_k4(j, &packed), (sc[j], mn[j]));
        }
    }
    assert_eq!(get_scale_min_k4(8, &[0xFF; 12]), (0, 0));
}

#[test]
fn q4k_scale_words_equal_the_per_byte_spec_on_any_bytes() {
    // Any 12 bytes, spare bits set or not: the word version must mask exactly what
    // `get_scale_min_k4` masks.
    let mut rng = Rng(29);
    let mut cases: Vec<[u8; 12]> = vec![[0; 12], [0xFF; 12], [0xC0; 12], [0x3F; 12], [0x0F; 12], [0xF0; 12]];
    for _ in 0..500 {
        cases.push(std::array::from_fn(|_| rng.next_u64() as u8));
    }
    for q in cases {
        let (sc, mn) = unpack_q4k_scales(&q);
        for j in 0..8 {
            assert_eq!(get_scale_min_k4(j, &q), (sc[j], mn[j]), "{q:?} sub-block {j}");
        }
    }
}

#[test]
fn f16_and_bf16_rows_use_ggml_rounding() {
    let x = [1.0f32, -2.5, 65504.0, 1e-6, 3.3];
    let mut b = [0u8; 10];
    quantize_row(GgmlType::F16, &x, &mut b).unwrap();
    let bits: Vec<u16> = b.chunks(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
    assert_eq!(bits, [0x3C00, 0xC100, 0x7BFF, 0x0011, 0x429A]);
    quantize_row(GgmlType::BF16, &x, &mut b).unwrap();
    let bits: Vec<u16> = b.chunks(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
    assert_eq!(bits, [0x3F80, 0xC020, 0x4780, 0x3586, 0x4053]);
}

/// Blocks of `n` values that stress the restructured (vectorized) quantizers: Gaussian at
/// several scales, heavy tails, exact rounding ties on coarse grids, all zero, constants,
/// a single non-zero value, repeated extreme values (ties for the signed maximum, of both
/// signs), subnormals, values near f32::MAX, and, for the quantizers that accept them
/// directly, NaN and ±inf.
fn stress_blocks(n: usize, with_non_finite: bool) -> Vec<Vec<f32>> {
    let mut rng = Rng(0x5EED_BA5E);
    let mut out = Vec::new();
    for sigma in [0.02f32, 1.0, 300.0, 1e-30, 1e30, 1e-41] {
        for _ in 0..200 {
            out.push(rng.normal_row(n, sigma));
        }
    }
    for _ in 0..200 {
        out.push((0..n).map(|_| (rng.uniform() - 0.5) / (rng.uniform() + 0.01)).collect());
    }
    for step in [0.25f32, 0.5, 1.0, 1.0 / 3.0] {
        for _ in 0..200 {
            out.push((0..n).map(|_| ((rng.next_u64() % 33) as f32 - 16.0) * step).collect());
        }
    }
    out.push(vec![0.0; n]);
    out.push(vec![-0.0; n]);
    for c in [1.0f32, -3.5, 1e-3, f32::MAX, -f32::MAX, f32::MIN_POSITIVE, 1e-45] {
        out.push(vec![c; n]);
    }
    for i in 0..n {
        let mut one = vec![0.0f32; n];
        one[i] = if i % 2 == 0 { 2.5 } else { -7.0 };
        out.push(one);
        // The extreme magnitude twice, with opposite signs: the first one sets the sign.
        let mut tie = rng.normal_row(n, 0.1);
        tie[i] = -4.0;
        tie[(i * 7 + 3) % n] = 4.0;
        out.push(tie);
    }
    for _ in 0..100 {
        // Partly zero, partly huge: overflowing intermediate scales and sums.
        out.push(
            (0..n)
                .map(|_| match rng.next_u64() % 4 {
                    0 => 0.0,
                    1 => rng.normal() * 3e38,
                    _ => rng.normal(),
                })
                .collect(),
        );
    }
    if with_non_finite {
        for special in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            for _ in 0..50 {
                let mut x = rng.normal_row(n, 1.0);
                for _ in 0..=(rng.next_u64() % 3) {
                    x[(rng.next_u64() % n as u64) as usize] = special;
                }
                out.push(x);
            }
            let mut last = rng.normal_row(n, 1.0);
            last[n - 1] = special;
            out.push(last);
        }
    }
    out
}

fn same_bits(a: f32, b: f32) -> bool {
    a.to_bits() == b.to_bits()
}

#[test]
fn q4_0_and_q8_0_match_the_reference_loops() {
    for x in stress_blocks(32, true) {
        let mut q4 = [BlockQ4_0::zeroed()];
        BlockQ4_0::from_float(&x, &mut q4).unwrap();
        let (d, qs) = reference::q4_0_block(&x);
        assert_eq!(
            (q4[0].d.to_bits(), q4[0].qs),
            (f32_to_f16(d).to_bits(), qs),
            "Q4_0 {x:?}"
        );
        let mut q8 = [BlockQ8_0::zeroed()];
        BlockQ8_0::from_float(&x, &mut q8).unwrap();
        let (d, qs) = reference::q8_0_block(&x);
        assert_eq!(
            (q8[0].d.to_bits(), q8[0].qs),
            (f32_to_f16(d).to_bits(), qs),
            "Q8_0 {x:?}"
        );
    }
}

#[test]
fn k_quant_searches_match_the_reference_loops() {
    let mut rng = Rng(0xC0FFEE);
    // Eight sub-blocks at a time, as a Q4_K/Q5_K super-block fits them.
    for group in stress_blocks(32, true).chunks(8) {
        let n = group.len();
        let x: [[f32; 8]; 32] = std::array::from_fn(|i| std::array::from_fn(|j| group[j % n][i]));
        // Q4_K's weights (RMS plus magnitude) and arbitrary positive ones.
        let rms: [f32; 8] = std::array::from_fn(|j| (x.iter().map(|r| r[j] * r[j]).sum::<f32>() / 32.0).sqrt());
        let q4k_weights: [[f32; 8]; 32] = std::array::from_fn(|i| std::array::from_fn(|j| rms[j] + x[i][j].abs()));
        let random_weights: [[f32; 8]; 32] = std::array::from_fn(|_| std::array::from_fn(|_| rng.uniform() * 2.0));
        for weights in [q4k_weights, random_weights] {
            for (nmax, rmin, nstep) in [(15, -1.0f32, 20usize), (31, -0.5, 15)] {
                let mut fast = [[0u8; 8]; 32];
                let (scales, mins) = kquants::make_qkx2_quants(nmax, &x, &weights, &mut fast, rmin, 0.1, nstep);
                for j in 0..8 {
                    let xs: Vec<f32> = x.iter().map(|r| r[j]).collect();
                    let ws: Vec<f32> = weights.iter().map(|r| r[j]).collect();
                    let mut want = [0u8; 32];
                    let exp = reference::make_qkx2_quants(nmax, &xs, &ws, &mut want, rmin, 0.1, nstep as i32);
                    let got_l: Vec<u8> = fast.iter().map(|r| r[j]).collect();
                    assert!(
                        same_bits(scales[j], exp.0) && same_bits(mins[j], exp.1) && got_l == want,
                        "make_qkx2_quants nmax {nmax}: ({}, {}) vs {exp:?} on {xs:?}",
                        scales[j],
                        mins[j]
                    );
                }
            }
        }
    }
    for x in stress_blocks(16, true) {
        let x: &[f32; 16] = x.as_slice().try_into().unwrap();
        let mut fast = [0i8; 16];
        let mut want = [0i8; 16];
        let got = kquants::make_qx_quants(32, x, &mut fast);
        let exp = reference::make_qx_quants(32, x, &mut want);
        assert!(
            same_bits(got, exp) && fast == want,
            "make_qx_quants: {got} vs {exp} on {x:?}"
        );
    }
}

#[test]
fn q4_0_pairs_match_single_blocks() {
    // `BlockQ4_0::from_float` quantizes two blocks per step; an odd count exercises the tail.
    let x: Vec<f32> = stress_blocks(32, true).concat();
    let x = &x[..x.len() - 32];
    let mut pairs = vec![BlockQ4_0::zeroed(); x.len() / 32];
    BlockQ4_0::from_float(x, &mut pairs).unwrap();
    assert!(pairs.len() % 2 == 1);
    for (block, xs) in pairs.iter().zip(x.chunks_exact(32)) {
        let (d, qs) = reference::q4_0_block(xs);
        assert_eq!((block.d.to_bits(), block.qs), (f32_to_f16(d).to_bits(), qs), "{xs:?}");
    }
}

/// Every type through the portable build of the quantizer and dequantizer dispatch and
/// through each SIMD build this CPU runs (the same Rust compiled with AVX2 / AVX-512
/// enabled): the bytes and floats must be identical.
#[test]
fn simd_builds_match_the_portable_build() {
    // `quantize_row` rejects non-finite input; the few products that overflowed become f32::MAX.
    let x: Vec<f32> = stress_blocks(256, false)
        .concat()
        .into_iter()
        .map(|v| if v.is_finite() { v } else { f32::MAX })
        .collect();
    for ty in QUANTIZE_TYPES {
        let n = ty.row_bytes(x.len() as u64).unwrap() as usize;
        let mut portable = vec![0u8; n];
        quantize_checked(ty, &x, &mut portable).unwrap();
        let mut back = vec![0f32; x.len()];
        dequantize_checked(ty, &portable, &mut back).unwrap();
        let back_bits: Vec<u32> = back.iter().map(|v| v.to_bits()).collect();
        // Only x86 has other builds of the quantizers; elsewhere the list stays empty.
        #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
        let mut builds: Vec<(&str, Vec<u8>, Vec<u32>)> = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            let avx512 = is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512vl");
            if is_x86_feature_detected!("avx2") {
                let (mut q, mut f) = (vec![0u8; n], vec![0f32; x.len()]);
                // SAFETY: AVX2 support was just checked.
                unsafe {
                    quantize_checked_avx2(ty, &x, &mut q).unwrap();
                    dequantize_checked_avx2(ty, &portable, &mut f).unwrap();
                }
                builds.push(("avx2", q, f.iter().map(|v| v.to_bits()).collect()));
            }
            if avx512 {
                let (mut q, mut f) = (vec![0u8; n], vec![0f32; x.len()]);
                // SAFETY: AVX-512 F/BW/VL (and so AVX2) support was just checked.
                unsafe {
                    quantize_checked_avx512(ty, &x, &mut q).unwrap();
                    dequantize_checked_avx512(ty, &portable, &mut f).unwrap();
                }
                builds.push(("avx512", q, f.iter().map(|v| v.to_bits()).collect()));
            }
        }
        for (name, q, f) in builds {
            assert!(
                q == portable,
                "{ty}: {name} quantizer bytes differ from the portable build"
            );
            assert!(
                f == back_bits,
                "{ty}: {name} dequantizer differs from the portable build"
            );
        }
    }
}
