//! Oracle tests for `edgeact_runtime::kernels::cpu`: for every weight type with a matmul
//! kernel, our dot product of a weight row with an activation row equals ggml's CPU
//! `vec_dot` on the same bytes (activations quantized once by ggml's own `from_float`),
//! within float rounding, on every kernel path this CPU runs (scalar, AVX2, AVX-512, NEON).
//!
//! Run: `GGML_NO_BACKTRACE=1 cargo test --features oracle --test oracle kernels::`.
#![cfg(feature = "oracle")]

use edgeact_runtime::kernels::cpu::{act_type, available_backends, vec_dot, Backend};
use edgeact_runtime::quant::{dequantize_row, quantize_row, GgmlType};

const TYPES: [GgmlType; 11] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q8_0,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
];

/// xorshift64* with a sum-of-uniforms bell shape; `scale` varies per 32 elements so blocks
/// get different scales.
fn row(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut u = move || {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        (s.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32 / (1u64 << 24) as f32
    };
    (0..n)
        .map(|i| ((0..3).map(|_| u()).sum::<f32>() - 1.5) * scale * (1 + i / 32 % 4) as f32)
        .collect()
}

/// ggml's activation bytes converted to what our kernel takes for this weight type:
/// unchanged for the quantized partners, little-endian f32 for float weights (ggml pairs
/// F16/BF16 weights with F16/BF16 activations; we widen those exact values).
/// ggml activation bytes as f32 (F32 rows have no `to_float` in ggml: they are f32 already).
fn ggml_to_f32(ty: u32, bytes: &[u8], n: usize) -> Vec<f32> {
    if ty == GgmlType::F32.id() {
        return bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
    }
    edgeact_oracle::dequantize_row(ty, bytes, n).expect("widen activations")
}

fn our_activations(ty: GgmlType, ggml_act_ty: u32, ggml_act: &[u8], n: usize) -> Vec<u8> {
    if act_type(ty) != GgmlType::F32 {
        assert_eq!(
            act_type(ty).id(),
            ggml_act_ty,
            "{ty}: activation type differs from ggml's"
        );
        return ggml_act.to_vec();
    }
    let f = ggml_to_f32(ggml_act_ty, ggml_act, n);
    f.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn check(ty: GgmlType, n: usize, wx: &[f32], ax: &[f32], what: &str) {
    let mut w = vec![0u8; ty.row_bytes(n as u64).unwrap() as usize];
    quantize_row(ty, wx, &mut w).unwrap();
    let ggml_act_ty = edgeact_oracle::vec_dot_type(ty.id()).unwrap();
    let ggml_act = edgeact_oracle::from_float(ggml_act_ty, ax).unwrap();
    let expected = edgeact_oracle::vec_dot(ty.id(), n, &w, &ggml_act).unwrap() as f64;
    let ours_act = our_activations(ty, ggml_act_ty, &ggml_act, n);

    // Float rounding scale: the sum of |w_i * a_i| over the dequantized operands.
    let mut wd = vec![0f32; n];
    dequantize_row(ty, &w, &mut wd).unwrap();
    let mut ad = vec![0f32; n];
    dequantize_row(act_type(ty), &ours_act, &mut ad).unwrap();
    let l1: f64 = wd.iter().zip(&ad).map(|(a, b)| (*a as f64 * *b as f64).abs()).sum();
    let tol = 3e-5 * l1 + 1e-5;
    for b in available_backends() {
        let got = vec_dot(b, ty, n, &w, &ours_act).unwrap() as f64;
        assert!(
            (got - expected).abs() <= tol,
            "{ty} n={n} {what} [{b}]: ours {got} vs ggml {expected} (tol {tol})"
        );
    }
}

#[test]
fn vec_dot_matches_ggml() {
    let paths: Vec<&str> = available_backends().iter().map(|b| b.name()).collect();
    eprintln!("kernel paths tested: {paths:?}");
    if !available_backends().contains(&Backend::Avx512) {
        eprintln!("AVX-512 path skipped: this CPU lacks AVX-512 F/BW/VL");
    }
    for ty in TYPES {
        let bs = ty.block_size().max(act_type(ty).block_size()).max(256);
        for (i, n) in [bs, 3 * bs, 4096, 11008].into_iter().enumerate() {
            if n % bs != 0 {
                continue;
            }
            for (j, scale) in [1.0f32, 0.01, 50.0].into_iter().enumerate() {
                let seed = (i * 10 + j) as u64;
                check(ty, n, &row(n, seed, scale), &row(n, seed + 1000, 1.0), "random");
            }
        }
        // Edge rows: zeros, constant, one outlier per block, alternating extremes.
        let n = 2 * bs;
        let zeros = vec![0f32; n];
        let constant = vec![0.75f32; n];
        let outliers: Vec<f32> = (0..n)
            .map(|i| if i % 32 == 5 { 300.0 } else { 0.01 * (i % 7) as f32 })
            .collect();
        let extremes: Vec<f32> = (0..n).map(|i| if i % 2 == 0 { 1000.0 } else { -1000.0 }).collect();
        let act = row(n, 99, 1.0);
        for (name, w) in [
            ("zeros", &zeros),
            ("constant", &constant),
            ("outliers", &outliers),
            ("extremes", &extremes),
        ] {
            check(ty, n, w, &act, name);
            check(ty, n, &act, w, &format!("activations {name}"));
        }
    }
}
