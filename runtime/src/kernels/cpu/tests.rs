//! Every SIMD path against the scalar specification (random and edge inputs), and the scalar
//! specification against an f64 dot of the dequantized operands.

use super::dispatch::SMALL_BATCH;
use super::table::SUPPORTED;
use super::*;
use crate::quant::{dequantize_row, f32_to_f16, quantize_row, GgmlType};
use half::f16;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn simd_backends() -> Vec<Backend> {
    let v: Vec<Backend> = available_backends()
        .into_iter()
        .filter(|&b| b != Backend::Scalar)
        .collect();
    for b in Backend::ALL {
        if b != Backend::Scalar && !v.contains(&b) {
            eprintln!("skipping kernel path {b}: not supported by this CPU/target");
        }
    }
    v
}

fn put_f16(bytes: &mut [u8], at: usize, v: f32) {
    bytes[at..at + 2].copy_from_slice(&f32_to_f16(v).to_bits().to_le_bytes());
}

/// Byte offsets of the f16 scale fields of each block type (the rest of a block may be any
/// bytes; scales must be finite for a meaningful comparison).
fn scale_offsets(ty: GgmlType) -> &'static [usize] {
    match ty {
        GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => &[0],
        GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q8_1 | GgmlType::Q4_K | GgmlType::Q5_K => &[0, 2],
        GgmlType::Q6_K => &[208],
        _ => &[],
    }
}

/// A row of `n` elements of `ty` made of random bytes with finite random scales: covers every
/// quant value, including ones no quantizer emits (e.g. -128 in Q8_0 weights).
pub(super) fn raw_row(rng: &mut StdRng, ty: GgmlType, n: usize, scale: f32, act: bool) -> Vec<u8> {
    match ty {
        GgmlType::F32 => (0..n)
            .flat_map(|_| (rng.random_range(-1.0f32..1.0) * scale).to_le_bytes())
            .collect(),
        GgmlType::F16 => (0..n)
            .flat_map(|_| {
                f32_to_f16(rng.random_range(-1.0f32..1.0) * scale)
                    .to_bits()
                    .to_le_bytes()
            })
            .collect(),
        GgmlType::BF16 => (0..n)
            .flat_map(|_| {
                crate::quant::f32_to_bf16(rng.random_range(-1.0f32..1.0) * scale)
                    .to_bits()
                    .to_le_bytes()
            })
            .collect(),
        _ => {
            let bs = ty.type_size();
            let mut v: Vec<u8> = (0..n / ty.block_size() * bs).map(|_| rng.random()).collect();
            for blk in v.chunks_exact_mut(bs) {
                if ty == GgmlType::Q8_K {
                    blk[0..4].copy_from_slice(&(rng.random_range(0.001f32..1.0) * scale).to_le_bytes());
                    // The kernels read the group sums from `bsums`; keep them true.
                    for g in 0..16 {
                        let sum: i32 = blk[4 + 16 * g..4 + 16 * (g + 1)].iter().map(|&b| b as i8 as i32).sum();
                        blk[260 + 2 * g..262 + 2 * g].copy_from_slice(&(sum as i16).to_le_bytes());
                    }
                }
                // Activation quantizers emit -127..=127 for Q8_0/Q8_1 (the sign trick the SIMD
                // kernels share with ggml relies on it), so raw activations avoid -128.
                if matches!(ty, GgmlType::Q8_1) || (ty == GgmlType::Q8_0 && act) {
                    blk.iter_mut().filter(|b| **b == 0x80).for_each(|b| *b = 0x81);
                }
                for &o in scale_offsets(ty) {
                    put_f16(blk, o, rng.random_range(-1.0f32..1.0) * scale);
                }
                if ty == GgmlType::Q8_1 {
                    // Keep `s = d * sum(q)` consistent, as the quantizer writes it.
                    let d = f16::from_bits(u16::from_le_bytes([blk[0], blk[1]])).to_f32();
                    let sum: i32 = blk[4..].iter().map(|&b| b as i8 as i32).sum();
                    put_f16(blk, 2, d * sum as f32);
                }
            }
            v
        }
    }
}

pub(super) fn random_floats(rng: &mut StdRng, n: usize, scale: f32) -> Vec<f32> {
    // Vary the magnitude per 32-element stretch so blocks get different scales.
    (0..n)
        .map(|i| rng.random_range(-1.0f32..1.0) * scale * (1.0 + (i / 32 % 5) as f32))
        .collect()
}

fn dequant(ty: GgmlType, bytes: &[u8], n: usize) -> Vec<f64> {
    let mut out = vec![0f32; n];
    dequantize_row(ty, bytes, &mut out).unwrap();
    out.into_iter().map(f64::from).collect()
}

/// Tolerance for two f32 evaluations of the same dot product in different orders.
fn tol(w: &[f64], a: &[f64]) -> f64 {
    let l1: f64 = w.iter().zip(a).map(|(x, y)| (x * y).abs()).sum();
    2e-5 * l1 + 1e-6
}

fn check_vec_dot(rng: &mut StdRng, ty: GgmlType, n: usize, w: &[u8], a: &[u8], what: &str) {
    let aty = act_type(ty);
    let wd = dequant(ty, w, n);
    let ad = dequant(aty, a, n);
    let exact: f64 = wd.iter().zip(&ad).map(|(x, y)| x * y).sum();
    let mut t = tol(&wd, &ad);
    if matches!(ty, GgmlType::Q4_1 | GgmlType::Q5_1) {
        // The min term uses Q8_1's `s`, d * sum(q) rounded to f16 (as in ggml), not the exact sum.
        let h = |b: &[u8], o: usize| f16::from_bits(u16::from_le_bytes([b[o], b[o + 1]])).to_f32() as f64;
        t += w
            .chunks_exact(ty.type_size())
            .zip(a.chunks_exact(36))
            .map(|(x, y)| (h(x, 2) * h(y, 2)).abs() * 1e-3)
            .sum::<f64>();
    }
    let s = vec_dot(Backend::Scalar, ty, n, w, a).unwrap() as f64;
    assert!(
        (s - exact).abs() <= t,
        "{ty} n={n} {what}: scalar {s} vs exact {exact} (tol {t})"
    );
    for b in simd_backends() {
        let v = vec_dot(b, ty, n, w, a).unwrap() as f64;
        assert!((v - s).abs() <= t, "{ty} n={n} {what}: {b} {v} vs scalar {s} (tol {t})");
    }
    let _ = rng;
}

#[test]
fn vec_dot_simd_matches_scalar_random_and_raw() {
    let mut rng = StdRng::seed_from_u64(1);
    for ty in SUPPORTED {
        let aty = act_type(ty);
        let bs = ty.block_size().max(aty.block_size()).max(32);
        // One block, an odd number of blocks, and a model-sized row.
        for n in [bs, 3 * bs, 4096, 4096 + 2 * bs + 7 * (ty.block_size() == 1) as usize] {
            for scale in [1.0f32, 1e-3, 100.0] {
                // Quantized from floats, as in a real model.
                let xs = random_floats(&mut rng, n, scale);
                let mut w = vec![0u8; ty.row_bytes(n as u64).unwrap() as usize];
                quantize_row(ty, &xs, &mut w).unwrap();
                let ys = random_floats(&mut rng, n, 1.0);
                let mut a = vec![0u8; aty.row_bytes(n as u64).unwrap() as usize];
                quantize_row(aty, &ys, &mut a).unwrap();
                check_vec_dot(&mut rng, ty, n, &w, &a, "quantized");
                // Raw random bytes on both sides.
                let w = raw_row(&mut rng, ty, n, scale, false);
                let a = raw_row(&mut rng, aty, n, 1.0, true);
                check_vec_dot(&mut rng, ty, n, &w, &a, "raw");
            }
        }
    }
}

#[test]
fn vec_dot_edge_blocks() {
    let mut rng = StdRng::seed_from_u64(2);
    for ty in SUPPORTED {
        let aty = act_type(ty);
        let n = 3 * ty.block_size().max(aty.block_size()).max(32);
        let zeros = vec![0f32; n];
        // Every quant at its extreme value. (Not much larger: Q8_1's `s = d * sum(q)` is an
        // f16 and overflows to inf near 65504, in ggml too.)
        let big: Vec<f32> = (0..n).map(|i| if i % 3 == 0 { -1000.0 } else { 1000.0 }).collect();
        let ramp: Vec<f32> = (0..n).map(|i| i as f32 - n as f32 / 2.0).collect();
        for (wname, wx) in [("zeros", &zeros), ("max", &big), ("ramp", &ramp)] {
            for (aname, ax) in [("zeros", &zeros), ("max", &big), ("ramp", &ramp)] {
                let mut w = vec![0u8; ty.row_bytes(n as u64).unwrap() as usize];
                quantize_row(ty, wx, &mut w).unwrap();
                let mut a = vec![0u8; aty.row_bytes(n as u64).unwrap() as usize];
                quantize_row(aty, ax, &mut a).unwrap();
                check_vec_dot(&mut rng, ty, n, &w, &a, &format!("w {wname} x {aname}"));
            }
        }
        // Extreme quant values: every weight byte 0x00, then 0xFF, then 0x80.
        for fill in [0x00u8, 0xff, 0x80] {
            let mut w = raw_row(&mut rng, ty, n, 1.0, false);
            if ty.block_size() > 1 {
                let offs = scale_offsets(ty);
                for blk in w.chunks_exact_mut(ty.type_size()) {
                    for (i, b) in blk.iter_mut().enumerate() {
                        if !offs.iter().any(|&o| i == o || i == o + 1) {
                            *b = fill;
                        }
                    }
                }
            }
            let a = raw_row(&mut rng, aty, n, 1.0, true);
            check_vec_dot(&mut rng, ty, n, &w, &a, &format!("fill {fill:#x}"));
        }
    }
}

#[test]
fn matmul_paths_agree_over_token_counts_and_threads() {
    let mut rng = StdRng::seed_from_u64(3);
    let pools = [ThreadPool::new(1), ThreadPool::new(3)];
    for ty in SUPPORTED {
        let cols = 2 * ty.block_size().max(act_type(ty).block_size()).max(32) + 32 * (ty.block_size() == 32) as usize;
        let rows = 37; // not a multiple of the row block
        let xs = random_floats(&mut rng, rows * cols, 0.5);
        let mut wb = vec![0u8; rows * ty.row_bytes(cols as u64).unwrap() as usize];
        quantize_row(ty, &xs, &mut wb).unwrap();
        let w = QMatrix::new(ty, rows, cols, &wb).unwrap();
        // 1..=9 tokens, a non-multiple of the 4-token tile, past one 32-token block, and past one
        // 512-token task of the AVX-512 panel path (which starts at 16 tokens).
        for n_tokens in (1..=9).chain([13, 45, 150, 530]) {
            let x = random_floats(&mut rng, n_tokens * cols, 1.0);
            let mut reference = vec![0f32; n_tokens * rows];
            matmul_with(Backend::Scalar, &pools[0], &w, &x, n_tokens, &mut reference);
            // The scalar matmul is the per-token vec_dot on the quantized activations.
            let q = quantize_activations(&pools[0], ty, &x, cols);
            for t in [0, n_tokens - 1] {
                let a: Vec<u8> = match &q {
                    Some(q) => q.row(t).to_vec(),
                    None => bytemuck::cast_slice(&x[t * cols..(t + 1) * cols]).to_vec(),
                };
                for r in [0, rows - 1] {
                    let d = vec_dot(Backend::Scalar, ty, cols, w.row(r), &a).unwrap();
                    assert_eq!(d, reference[t * rows + r], "{ty} t={t} r={r}");
                }
            }
            for b in available_backends() {
                for pool in &pools {
                    let mut out = vec![f32::NAN; n_tokens * rows];
                    matmul_with(b, pool, &w, &x, n_tokens, &mut out);
                    for (i, (&o, &e)) in out.iter().zip(&reference).enumerate() {
                        let t = 1e-4 * (1.0 + e.abs());
                        assert!(
                            (o - e).abs() <= t,
                            "{ty} {b} threads={} n_tokens={n_tokens} i={i}: {o} vs {e}",
                            pool.n_threads()
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn f32_activations_multiply_dequantized_rows() {
    let mut rng = StdRng::seed_from_u64(5);
    let pools = [ThreadPool::new(1), ThreadPool::new(3)];
    for ty in SUPPORTED {
        let cols = 2 * ty.block_size().max(32) + 32 * (ty.block_size() == 32) as usize;
        let rows = 37; // not a multiple of the row block
        let xs = random_floats(&mut rng, rows * cols, 0.5);
        let mut wb = vec![0u8; rows * ty.row_bytes(cols as u64).unwrap() as usize];
        quantize_row(ty, &xs, &mut wb).unwrap();
        let plain = QMatrix::new(ty, rows, cols, &wb).unwrap();
        let packed = repackable(ty).then(|| PackedMatrix::new(&pools[0], &plain).unwrap());
        let w = match &packed {
            Some(p) => plain.with_packed(p).unwrap(),
            None => plain,
        };
        let wd: Vec<Vec<f64>> = (0..rows).map(|r| dequant(ty, plain.row(r), cols)).collect();
        for n_tokens in [1, 2, 5, 9, 45] {
            // Activations far from any 8-bit grid: quantizing them would miss the bound below.
            let x = random_floats(&mut rng, n_tokens * cols, 1.0);
            for b in available_backends() {
                for pool in &pools {
                    let mut out = vec![f32::NAN; n_tokens * rows];
                    try_matmul_as(b, Activations::F32, pool, &w, &x, n_tokens, &mut out).unwrap();
                    for t in 0..n_tokens {
                        let xt: Vec<f64> = x[t * cols..(t + 1) * cols].iter().map(|&v| v as f64).collect();
                        for (r, wr) in wd.iter().enumerate() {
                            let exact: f64 = wr.iter().zip(&xt).map(|(a, b)| a * b).sum();
                            let got = out[t * rows + r] as f64;
                            assert!(
                                (got - exact).abs() <= tol(wr, &xt),
                                "{ty} {b} threads={} n_tokens={n_tokens} t={t} r={r}: {got} vs {exact}",
                                pool.n_threads()
                            );
                        }
                    }
                }
            }
        }
        // Float weights have nothing to dequantize: both arithmetics are the same call.
        if act_type(ty) == GgmlType::F32 {
            let x = random_floats(&mut rng, 3 * cols, 1.0);
            let (mut a, mut q) = (vec![0f32; 3 * rows], vec![0f32; 3 * rows]);
            try_matmul_as(Backend::Scalar, Activations::F32, &pools[0], &w, &x, 3, &mut a).unwrap();
            try_matmul_as(Backend::Scalar, Activations::Quantized, &pools[0], &w, &x, 3, &mut q).unwrap();
            assert_eq!(a, q, "{ty}");
        }
    }
    // Shapes are checked as for the quantized arithmetic.
    let w = QMatrix::new(GgmlType::Q4_0, 2, 32, &[0; 36]).unwrap();
    let pool = &pools[0];
    let mut out = [0f32; 2];
    assert!(try_matmul_as(Backend::Scalar, Activations::F32, pool, &w, &[0.0; 31], 1, &mut out).is_err());
    assert!(try_matmul_as(
        Backend::Scalar,
        Activations::F32,
        pool,
        &w,
        &[0.0; 32],
        1,
        &mut out[..1]
    )
    .is_err());
    assert_eq!("f32".parse::<Activations>(), Ok(Activations::F32));
    assert_eq!("quantized".parse::<Activations>(), Ok(Activations::Quantized));
    assert!("q4".parse::<Activations>().is_err());
}

#[test]
fn bad_shapes_are_errors() {
    let pool = ThreadPool::new(1);
    let data = vec![0u8; 2 * 18];
    assert!(matches!(
        QMatrix::new(GgmlType::Q4_0, 2, 33, &data),
        Err(KernelError::Columns { .. })
    ));
    assert!(matches!(
        QMatrix::new(GgmlType::Q4_0, 3, 32, &data),
        Err(KernelError::DataSize { .. })
    ));
    assert!(matches!(
        QMatrix::new(GgmlType::Q2_K, 1, 256, &[0; 84]),
        Err(KernelError::UnsupportedType(_))
    ));
    assert!(QMatrix::new(GgmlType::Q4_0, usize::MAX, 32, &data).is_err());
    let w = QMatrix::new(GgmlType::Q4_0, 2, 32, &data).unwrap();
    let mut out = vec![0f32; 2];
    assert!(matches!(
        try_matmul(&pool, &w, &[0.0; 31], 1, &mut out),
        Err(KernelError::Length { .. })
    ));
    assert!(matches!(
        try_matmul(&pool, &w, &[0.0; 32], 1, &mut out[..1]),
        Err(KernelError::Length { .. })
    ));
    assert!(try_matmul(&pool, &w, &[1.0; 32], 1, &mut out).is_ok());
    assert!(vec_dot(Backend::Scalar, GgmlType::Q4_0, 32, &data[..18], &[0; 33]).is_err());
    assert!(matches!(
        Backend::from_name("sse9"),
        Err(KernelError::BadBackendName(_))
    ));
    assert_eq!(Backend::from_name("AVX2").unwrap(), Backend::Avx2);
}

#[test]
fn elementwise_simd_matches_scalar() {
    let mut rng = StdRng::seed_from_u64(4);
    for n in [0usize, 1, 7, 8, 9, 31, 128, 4099] {
        let x: Vec<f32> = (0..n).map(|_| rng.random_range(-4.0f32..4.0)).collect();
        let y: Vec<f32> = (0..n).map(|_| rng.random_range(-4.0f32..4.0)).collect();
        let h: Vec<f16> = y.iter().map(|&v| f32_to_f16(v)).collect();
        let mut r0 = vec![0f32; n];
        scalar::rms_norm(&x, &y, 1e-5, &mut r0);
        let d0 = scalar::dot_f16(&h, &x);
        let mut a0 = x.clone();
        scalar::axpy_f16(0.3, &h, &mut a0);
        for b in simd_backends() {
            let mut r = vec![0f32; n];
            ops::rms_norm_with(b, &x, &y, 1e-5, &mut r);
            for (p, q) in r.iter().zip(&r0) {
                assert!((p - q).abs() <= 1e-5 * (1.0 + q.abs()), "rms_norm {b} n={n}");
            }
            let d = ops::dot_f16_with(b, &h, &x);
            assert!(
                (d - d0).abs() <= 1e-4 * (1.0 + n as f32),
                "dot_f16 {b} n={n}: {d} vs {d0}"
            );
            let mut a = x.clone();
            ops::axpy_f16_with(b, 0.3, &h, &mut a);
            for (p, q) in a.iter().zip(&a0) {
                assert!((p - q).abs() <= 1e-6 * (1.0 + q.abs()), "axpy_f16 {b} n={n}");
            }
            let mut back = vec![0f32; n];
            ops::f16_to_f32_row_with(b, &h, &mut back);
            let mut h2 = vec![f16::ZERO; n];
            ops::f32_to_f16_row_with(b, &x, &mut h2);
            let mut h0 = vec![f16::ZERO; n];
            scalar::f32_to_f16_row(&x, &mut h0);
            assert_eq!(h2, h0, "f32_to_f16 {b} n={n}");
            assert!(
                back.iter().zip(&h).all(|(&f, &g)| f == g.to_f32()),
                "f16_to_f32 {b} n={n}"
            );
        }
    }
}

#[test]
fn attention_row_ops_match_scalar() {
    let mut rng = StdRng::seed_from_u64(6);
    // Head sizes: odd, one 8-run, runs of 8 past 64, 64 and 128 (the real ones); row counts
    // around the 4-row groups and past one and two 32-row blocks of the weighted sum; strides
    // wider than the head (the kernels take any).
    for hd in [7usize, 8, 24, 64, 72, 128] {
        for n in [0usize, 1, 3, 4, 5, 9, 33, 65] {
            let stride = hd * 3 + 8;
            let len = if n == 0 { 0 } else { (n - 1) * stride + hd };
            let rows: Vec<f16> = (0..len).map(|_| f32_to_f16(rng.random_range(-3.0f32..3.0))).collect();
            let q: Vec<f32> = (0..hd).map(|_| rng.random_range(-2.0f32..2.0)).collect();
            let w: Vec<f32> = (0..n).map(|_| rng.random_range(0.0f32..1.0)).collect();
            let mut s0 = vec![f32::NAN; n];
            scalar::dot_f16_rows(&rows, stride, &q, &mut s0);
            let mut o0 = vec![f32::NAN; hd];
            scalar::weighted_sum_f16_rows(&rows, stride, &w, &mut o0);
            // The scalar form is the per-row dot / axpy it is defined by.
            for j in 0..n {
                assert_eq!(s0[j], scalar::dot_f16(&rows[j * stride..j * stride + hd], &q));
            }
            for b in simd_backends() {
                let mut s = vec![f32::NAN; n];
                ops::dot_f16_rows_with(b, &rows, stride, &q, &mut s);
                for (j, (x, y)) in s.iter().zip(&s0).enumerate() {
                    assert!(
                        (x - y).abs() <= 1e-4 * (1.0 + hd as f32),
                        "dot_f16_rows {b} hd={hd} n={n} j={j}: {x} vs {y}"
                    );
                }
                let mut o = vec![f32::NAN; hd];
                ops::weighted_sum_f16_rows_with(b, &rows, stride, &w, &mut o);
                for (c, (x, y)) in o.iter().zip(&o0).enumerate() {
                    assert!(
                        (x - y).abs() <= 1e-5 * (1.0 + n as f32),
                        "weighted_sum {b} hd={hd} n={n} col={c}: {x} vs {y}"
                    );
                }
            }
        }
    }
    // Rows that do not fit are a caller bug, caught before any access.
    let short = vec![f16::ZERO; 20];
    let caught = std::panic::catch_unwind(|| {
        let mut s = [0f32; 2];
        ops::dot_f16_rows(&short, 16, &[0.0; 8], &mut s)
    });
    assert!(caught.is_err());
}

#[test]
fn rope_softmax_swiglu_semantics() {
    let hd = 8;
    let table = RopeTable::new(hd, 10000.0, 0.5, 16);
    let mut x: Vec<f32> = (0..2 * hd).map(|i| i as f32 * 0.25 - 1.0).collect();
    let orig = x.clone();
    rope(&table, &mut x, 5);
    for h in 0..2 {
        for i in 0..hd / 2 {
            let theta = 5.0 * 0.5 * 10000f64.powf(-2.0 * i as f64 / hd as f64);
            let (a, b) = (orig[h * hd + 2 * i] as f64, orig[h * hd + 2 * i + 1] as f64);
            let e0 = a * theta.cos() - b * theta.sin();
            let e1 = a * theta.sin() + b * theta.cos();
            assert!((x[h * hd + 2 * i] as f64 - e0).abs() < 1e-5);
            assert!((x[h * hd + 2 * i + 1] as f64 - e1).abs() < 1e-5);
        }
    }
    let mut p0 = orig.clone();
    rope(&table, &mut p0, 0);
    assert_eq!(p0, orig, "position 0 is the identity");

    let mut s = vec![1.0f32, 2.0, 3.0, f32::NEG_INFINITY];
    softmax(&mut s);
    let z = 1f32.exp() + 2f32.exp() + 3f32.exp();
    assert!((s[2] - 3f32.exp() / z).abs() < 1e-6 && s[3] == 0.0);
    let mut masked = vec![f32::NEG_INFINITY; 4];
    softmax(&mut masked);
    assert!(masked.iter().all(|&v| v == 0.25));

    let g = [-2.0f32, 0.0, 3.0];
    let u = [1.0f32, 5.0, -2.0];
    let mut o = [0f32; 3];
    swiglu(&g, &u, &mut o);
    for i in 0..3 {
        assert!((o[i] - g[i] / (1.0 + (-g[i]).exp()) * u[i]).abs() < 1e-6);
    }
    let mut sx = g;
    silu(&mut sx);
    assert!((sx[2] - 3.0 / (1.0 + (-3f32).exp())).abs() < 1e-6);
}

/// The matmul over repacked weights (the runner's `Packed*` paths).
mod repacked_matmul {
    use super::*;

    /// Per output `t * rows + r`: the sum over blocks of `|block b of row r . block b of
    /// token t|` (scalar specification, quantized activations), the scale of the float
    /// rounding in a sum of block terms, whatever their order.
    fn block_magnitudes(pool: &ThreadPool, w: &QMatrix, x: &[f32], n_tokens: usize) -> Vec<f32> {
        let q = quantize_activations(pool, w.ty, x, w.cols).expect("quantized weights");
        let (bs, wb) = (w.ty.block_size(), w.ty.type_size());
        let ab = act_type(w.ty).type_size() * bs / act_type(w.ty).block_size();
        let mut out = vec![0f32; n_tokens * w.rows];
        for t in 0..n_tokens {
            for r in 0..w.rows {
                let (row, act) = (w.row(r), q.row(t));
                out[t * w.rows + r] = (0..w.cols / bs)
                    .map(|b| {
                        let dot = vec_dot(
                            Backend::Scalar,
                            w.ty,
                            bs,
                            &row[b * wb..(b + 1) * wb],
                            &act[b * ab..(b + 1) * ab],
                        );
                        dot.expect("one block").abs()
                    })
                    .sum();
            }
        }
        out
    }

    /// The kernels for repacked weights (decode and the prefill panels) against the scalar
    /// specification on the file layout, over row counts that end mid-panel, token counts on
    /// both sides of the decode/prefill split, and extreme quants.
    #[test]
    fn repacked_matmul_matches_scalar() {
        if !repack_supported() {
            eprintln!("skipped: this CPU has no kernel for repacked weights (needs x86-64 AVX2+FMA+F16C, or aarch64)");
            return;
        }
        let mut rng = StdRng::seed_from_u64(21);
        let pools = [ThreadPool::new(1), ThreadPool::new(3)];
        let shapes = [
            (GgmlType::Q4_0, 16, 32),
            (GgmlType::Q4_0, 37, 64),
            (GgmlType::Q4_0, 50, 4096),
            (GgmlType::Q4_0, 7, 352),
            (GgmlType::Q4_K, 16, 256),
            (GgmlType::Q4_K, 37, 512),
            (GgmlType::Q4_K, 20, 4096),
            // A full first half and a partial second half of the last panel (AVX2: 8 rows each).
            (GgmlType::Q4_0, 28, 128),
            (GgmlType::Q4_0, 172, 64),
            (GgmlType::Q4_K, 12, 768),
            // Q6_K: 1, 2, 3 and 16 super-blocks, rows ending mid-panel and mid-half.
            (GgmlType::Q6_K, 16, 256),
            (GgmlType::Q6_K, 37, 512),
            (GgmlType::Q6_K, 12, 768),
            (GgmlType::Q6_K, 20, 4096),
            (GgmlType::Q6_K, 3, 256),
            // The 32-element formats: 1, 2, 3, 11 and 16 blocks, rows ending mid-panel and
            // mid-half (AVX2: 8 rows).
            (GgmlType::Q8_0, 16, 32),
            (GgmlType::Q8_0, 37, 64),
            (GgmlType::Q8_0, 12, 96),
            (GgmlType::Q8_0, 20, 512),
            (GgmlType::Q8_0, 3, 352),
            (GgmlType::Q5_0, 16, 32),
            (GgmlType::Q5_0, 37, 64),
            (GgmlType::Q5_0, 12, 96),
            (GgmlType::Q5_0, 20, 512),
            (GgmlType::Q5_0, 3, 352),
            (GgmlType::Q5_1, 16, 32),
            (GgmlType::Q5_1, 37, 64),
            (GgmlType::Q5_1, 12, 96),
            (GgmlType::Q5_1, 20, 512),
            (GgmlType::Q5_1, 3, 352),
            (GgmlType::Q4_1, 16, 32),
            (GgmlType::Q4_1, 37, 64),
            (GgmlType::Q4_1, 12, 96),
            (GgmlType::Q4_1, 20, 512),
            (GgmlType::Q4_1, 3, 352),
            // Every block count 1..=16 of the NEON panel types once more (Q4_K: 1..=4 and 16
            // super-blocks), with rows ending in every quarter of a panel (NEON: 4 rows each).
            (GgmlType::Q4_0, 5, 96),
            (GgmlType::Q4_0, 18, 128),
            (GgmlType::Q4_0, 31, 160),
            (GgmlType::Q4_0, 9, 192),
            (GgmlType::Q4_0, 14, 224),
            (GgmlType::Q4_0, 33, 256),
            (GgmlType::Q4_0, 6, 288),
            (GgmlType::Q4_0, 19, 320),
            (GgmlType::Q4_0, 10, 384),
            (GgmlType::Q4_0, 23, 416),
            (GgmlType::Q4_0, 13, 448),
            (GgmlType::Q4_0, 26, 480),
            (GgmlType::Q4_0, 17, 512),
            (GgmlType::Q8_0, 6, 128),
            (GgmlType::Q8_0, 23, 160),
            (GgmlType::Q8_0, 9, 224),
            (GgmlType::Q8_0, 14, 288),
            (GgmlType::Q8_0, 33, 448),
            (GgmlType::Q4_K, 6, 1024),
            (GgmlType::Q4_K, 33, 256),
            (GgmlType::Q4_K, 3, 512),
            // Q5_K: 1, 2, 3, 4, 5, 8 and 16 super-blocks, rows ending mid-panel, mid-half (AVX2) and
            // in every quarter (NEON).
            (GgmlType::Q5_K, 16, 256),
            (GgmlType::Q5_K, 37, 512),
            (GgmlType::Q5_K, 12, 768),
            (GgmlType::Q5_K, 6, 1024),
            (GgmlType::Q5_K, 20, 4096),
            (GgmlType::Q5_K, 3, 256),
            (GgmlType::Q5_K, 30, 512),
            (GgmlType::Q5_K, 9, 1280),
            (GgmlType::Q5_K, 25, 2048),
            // Single-token k-quant decode walks the panels of a task's two halves in pairs:
            // odd and even panel counts, the partial last panel alone or in the second half.
            (GgmlType::Q4_K, 100, 256),
            (GgmlType::Q4_K, 90, 512),
            (GgmlType::Q5_K, 100, 512),
            (GgmlType::Q5_K, 90, 256),
            (GgmlType::Q6_K, 100, 512),
            (GgmlType::Q6_K, 90, 256),
        ];
        for (ty, rows, cols) in shapes {
            let xs: Vec<f32> = (0..rows * cols).map(|_| rng.random_range(-1.0..1.0)).collect();
            let row_bytes = ty.row_bytes(cols as u64).unwrap() as usize;
            let mut data = vec![0u8; rows * row_bytes];
            quantize_row(ty, &xs, &mut data).unwrap();
            // Row 1: every nibble 0, row 2: every nibble 15 (Q4_0: scale 0.5; Q4_K: largest
            // 6-bit scales and mins, d = 0.5, dmin = 0.25; Q5_K the same with every quant 0 or
            // 31). Q6_K: d = 0.5 and row 1 every quant
            // 0 with scales -128, row 2 every quant 63 with scales 127, row 3 every quant 63
            // with scales -128. Q5_0/Q5_1: every quant 0 (row 1) or 31 (row 2), d = 0.5 (Q5_1:
            // m = -0.25); Q4_1 every nibble 0 or 15, d = 0.5, m = -0.25. Q8_0: d = 0.5 and every
            // quant -128 (row 1, which no quantizer writes), 127 (row 2) or -127 (row 3).
            // Rows 4 and 5: random quants with every f16 scale (and min) the largest finite
            // (65504) or a subnormal (3 * 2^-24), so the kernels' f16 conversions are checked
            // at both ends (the k-quant prefill panels once summed each group in f32, 1.6e-4 off
            // the scalar result for Q6_K at d = 65504; they now add in integers as it does).
            for (r, scale) in [(4usize, 65504.0f32), (5, 3.0 * 2f32.powi(-24))] {
                if r < rows {
                    let row = &mut data[r * row_bytes..(r + 1) * row_bytes];
                    for blk in row.chunks_exact_mut(ty.type_size()) {
                        for &o in scale_offsets(ty) {
                            blk[o..o + 2].copy_from_slice(&half::f16::from_f32(scale).to_le_bytes());
                        }
                    }
                }
            }
            for (r, fill) in [(1usize, 0x00u8), (2, 0xff), (3, 0xff)] {
                if r < rows && (r < 3 || matches!(ty, GgmlType::Q6_K | GgmlType::Q8_0)) {
                    let row = &mut data[r * row_bytes..(r + 1) * row_bytes];
                    for blk in row.chunks_exact_mut(ty.type_size()) {
                        if ty == GgmlType::Q6_K {
                            blk[..192].fill(fill);
                            blk[192..208].fill(if r == 2 { 127 } else { 0x80 });
                            blk[208..].copy_from_slice(&half::f16::from_f32(0.5).to_le_bytes());
                            continue;
                        }
                        blk[..2].copy_from_slice(&half::f16::from_f32(0.5).to_le_bytes());
                        match ty {
                            GgmlType::Q4_0 | GgmlType::Q5_0 => blk[2..].fill(fill),
                            GgmlType::Q8_0 => blk[2..].fill([0x80, 0x7f, 0x81][r - 1]),
                            GgmlType::Q4_1 | GgmlType::Q5_1 => {
                                blk[2..4].copy_from_slice(&half::f16::from_f32(-0.25).to_le_bytes());
                                blk[4..].fill(fill);
                            }
                            _ => {
                                blk[2..4].copy_from_slice(&half::f16::from_f32(0.25).to_le_bytes());
                                blk[4..16].fill(0xff);
                                blk[16..].fill(fill);
                            }
                        }
                    }
                }
            }
            let plain = QMatrix::new(ty, rows, cols, &data).unwrap();
            let packed = PackedMatrix::new(&pools[1], &plain).unwrap();
            let w = plain.with_packed(&packed).unwrap();
            // Token counts: decode, tiles of 2, 3 and 4 (AVX2: 4) with every tail, the VNNI
            // small-batch kernel's groups of 4 up to its limit of 16, and token chunks (AVX2:
            // 64) with tails.
            for n_tokens in [1, 2, 3, 4, 5, 7, 8, 16, 17, 40, 67, 130] {
                let mut x: Vec<f32> = (0..n_tokens * cols).map(|_| rng.random_range(-3.0..3.0)).collect();
                // Extreme activations: a constant row quantizes to all -127/-128 or all 127, the
                // largest products, against the all-15 weight row.
                x[..cols].fill(-2.5);
                if n_tokens > 2 {
                    x[2 * cols..3 * cols].fill(2.5);
                }
                let mut expected = vec![0f32; n_tokens * rows];
                matmul_with(Backend::Scalar, &pools[0], &plain, &x, n_tokens, &mut expected);
                let magnitude = block_magnitudes(&pools[0], &plain, &x, n_tokens);
                for b in available_backends() {
                    for pool in &pools {
                        let mut got = vec![f32::NAN; n_tokens * rows];
                        matmul_with(b, pool, &w, &x, n_tokens, &mut got);
                        // Integer block sums are exact; only float summation order differs,
                        // whose error scales with the blocks' terms (which can cancel out).
                        for (i, (&g, &e)) in got.iter().zip(&expected).enumerate() {
                            assert!(
                                (g - e).abs() <= 1e-4 * (1.0 + e.abs()) + 4e-6 * magnitude[i],
                                "{ty} {b} {rows}x{cols} tokens {n_tokens} threads {} i {i}: {g} vs {e}",
                                pool.n_threads()
                            );
                        }
                        // A batch of decodes (several sequences' tokens) on the VNNI kernel:
                        // each token's products are exactly the ones it gets alone. Every type
                        // but Q4_0 also in the prefill panels, which repeat the decode kernel's
                        // integer sums and float steps.
                        let exact_panels = ty != GgmlType::Q4_0;
                        if b == Backend::Avx512
                            && CpuFeatures::detect().avx512_vnni
                            && (n_tokens <= SMALL_BATCH || exact_panels)
                        {
                            for t in 0..n_tokens {
                                let mut alone = vec![f32::NAN; rows];
                                matmul_with(b, pool, &w, &x[t * cols..(t + 1) * cols], 1, &mut alone);
                                assert_eq!(
                                    &got[t * rows..(t + 1) * rows],
                                    &alone[..],
                                    "{ty} {rows}x{cols} token {t} of {n_tokens}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    /// Which form each path reads: the packed form of matrix A attached to matrix B of the
    /// same shape (a misuse, which only shape checks can catch) gives A's products on the x86
    /// SIMD paths, so those really run the packed kernels, and B's on the scalar path.
    #[test]
    fn simd_paths_read_the_repacked_form() {
        if !repack_supported() {
            eprintln!("skipped: this CPU has no kernel for repacked weights (needs x86-64 AVX2+FMA+F16C, or aarch64)");
            return;
        }
        let mut rng = StdRng::seed_from_u64(8);
        let pool = ThreadPool::new(2);
        for (ty, rows, cols) in [
            (GgmlType::Q4_0, 24, 64),
            (GgmlType::Q4_K, 24, 256),
            (GgmlType::Q5_K, 24, 512),
            (GgmlType::Q6_K, 24, 512),
            (GgmlType::Q8_0, 24, 64),
            (GgmlType::Q5_0, 24, 96),
            (GgmlType::Q5_1, 24, 64),
            (GgmlType::Q4_1, 24, 96),
        ] {
            let quantized = |rng: &mut StdRng| {
                let xs: Vec<f32> = (0..rows * cols).map(|_| rng.random_range(-1.0..1.0)).collect();
                let mut data = vec![0u8; rows * ty.row_bytes(cols as u64).unwrap() as usize];
                quantize_row(ty, &xs, &mut data).unwrap();
                data
            };
            let (da, db) = (quantized(&mut rng), quantized(&mut rng));
            let a = QMatrix::new(ty, rows, cols, &da).unwrap();
            let b = QMatrix::new(ty, rows, cols, &db).unwrap();
            let packed_a = PackedMatrix::new(&pool, &a).unwrap();
            let mixed = b.with_packed(&packed_a).unwrap();
            for n_tokens in [1, 6, 20] {
                let x: Vec<f32> = (0..n_tokens * cols).map(|_| rng.random_range(-1.0..1.0)).collect();
                let product = |b: Backend, w: &QMatrix| {
                    let mut out = vec![0f32; n_tokens * rows];
                    matmul_with(b, &pool, w, &x, n_tokens, &mut out);
                    out
                };
                let (want_a, want_b) = (product(Backend::Scalar, &a), product(Backend::Scalar, &b));
                let close =
                    |g: &[f32], e: &[f32]| g.iter().zip(e).all(|(g, e)| (g - e).abs() <= 1e-4 * (1.0 + e.abs()));
                assert!(close(&product(Backend::Scalar, &mixed), &want_b), "{ty} scalar");
                for backend in [Backend::Avx2, Backend::Avx512, Backend::Neon]
                    .into_iter()
                    .filter(|b| b.is_available())
                {
                    let got = product(backend, &mixed);
                    // NEON reads the packed form of the types with NEON panels only.
                    let (want, other, what) = if reads_repacked(backend, ty) {
                        (&want_a, &want_b, "read the file layout")
                    } else {
                        (&want_b, &want_a, "read the packed form")
                    };
                    assert!(close(&got, want), "{ty} {backend} tokens {n_tokens}: {what}");
                    assert!(!close(&got, other), "{ty} {backend} tokens {n_tokens}: {what}");
                }
            }
        }
    }

    #[test]
    fn a_packed_form_of_another_matrix_is_refused() {
        let pool = ThreadPool::new(1);
        let data = vec![0u8; 2 * 18];
        let a = QMatrix::new(GgmlType::Q4_0, 2, 32, &data).unwrap();
        let b = QMatrix::new(GgmlType::Q4_0, 1, 64, &data).unwrap();
        let packed = PackedMatrix::new(&pool, &a).unwrap();
        assert!(matches!(b.with_packed(&packed), Err(KernelError::Packed { .. })));
        let data = vec![0u8; 144];
        let k = QMatrix::new(GgmlType::Q4_K, 1, 256, &data).unwrap();
        assert!(matches!(k.with_packed(&packed), Err(KernelError::Packed { .. })));
    }
}

/// The prefill panels on AMX tiles give the bits of the `vpdpbusd` panels (the same integer
/// sums and float steps), for the k-quants and the 32-element formats, from the file layout
/// and the repacked form, over row counts that end mid-panel and mid-group of panels, and
/// token counts around the 16-token tiles, their pairs and the 512-token chunks.
#[cfg(target_arch = "x86_64")]
#[test]
fn amx_panels_give_the_bits_of_the_vnni_panels() {
    if !super::amx::available() || !CpuFeatures::detect().avx512_vnni {
        eprintln!("skipped: no AMX-INT8 (or not granted by the OS) on this CPU");
        return;
    }
    let mut rng = StdRng::seed_from_u64(41);
    let pools = [ThreadPool::new(1), ThreadPool::new(3)];
    for (ty, rows, cols) in [
        (GgmlType::Q4_K, 37, 512),
        (GgmlType::Q4_K, 150, 256),
        (GgmlType::Q5_K, 70, 768),
        (GgmlType::Q6_K, 37, 512),
        (GgmlType::Q6_K, 16, 256),
        // The 32-element formats: whole runs of four blocks and remainders of 1-3.
        (GgmlType::Q4_0, 37, 352),
        (GgmlType::Q4_0, 16, 32),
        (GgmlType::Q8_0, 20, 128),
        (GgmlType::Q4_1, 16, 96),
        (GgmlType::Q5_0, 37, 64),
        (GgmlType::Q5_1, 12, 512),
    ] {
        let xs = random_floats(&mut rng, rows * cols, 0.5);
        let mut wb = vec![0u8; rows * ty.row_bytes(cols as u64).unwrap() as usize];
        quantize_row(ty, &xs, &mut wb).unwrap();
        // Extreme quants and scales in the first row.
        let rb = ty.row_bytes(cols as u64).unwrap() as usize;
        wb[..rb].copy_from_slice(&raw_row(&mut rng, ty, cols, 1.0, false));
        let file = QMatrix::new(ty, rows, cols, &wb).unwrap();
        let packed = PackedMatrix::new(&pools[0], &file).unwrap();
        for n_tokens in [16, 17, 31, 32, 33, 45, 150, 530] {
            let x = random_floats(&mut rng, n_tokens * cols, 1.0);
            let q = quantize_activations(&pools[0], ty, &x, cols).expect("quantized activations");
            for (w, form) in [(file, "file"), (file.with_packed(&packed).unwrap(), "packed")] {
                for pool in &pools {
                    let run = |amx: bool| {
                        let mut out = vec![f32::NAN; n_tokens * rows];
                        // SAFETY: AVX-512 VNNI and AMX checked above (AVX-512 F/BW/VL with
                        // them), the type has VNNI panels, the shapes match.
                        unsafe {
                            super::avx512::matmul_panels(pool, &w, q.bytes(), q.row_bytes(), n_tokens, &mut out, amx)
                        };
                        out
                    };
                    let (tiles, vnni) = (run(true), run(false));
                    for (i, (a, b)) in tiles.iter().zip(&vnni).enumerate() {
                        assert_eq!(
                            a.to_bits(),
                            b.to_bits(),
                            "{ty} {form} rows={rows} n={n_tokens} i={i}: {a} vs {b}"
                        );
                    }
                }
            }
        }
    }
}
