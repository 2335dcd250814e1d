//! Oracle tests for `edgeact_runtime::quant`: our scalar quantizers must produce exactly the
//! bytes of ggml's `ggml_quantize_chunk` (no importance matrix), and our dequantizers exactly
//! ggml's `to_float`, on random rows and on degenerate ones (zeros, constants, huge and tiny
//! magnitudes, one-signed rows, outliers).
//!
//! Run: `GGML_NO_BACKTRACE=1 cargo test --features oracle --test oracle quant::`.
//!
//! The k-quant comparison needs llama.cpp built without FMA contraction (`-ffp-contract=off`
//! in `CFLAGS`): ggml's reference quantizers are defined by unfused C arithmetic, and a fused
//! multiply-add inside the scale search flips a few blocks' choices (see the failure message).
#![cfg(feature = "oracle")]

use edgeact_runtime::quant::{dequantize_row, quantize_row, GgmlType};

/// The weight formats `ggml_quantize_chunk` and our `quantize_row` both support.
const TYPES: [GgmlType; 11] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
];

/// Reproducible rows from a seeded generator: uniform in (0, 1) and normal (Box-Muller).
struct Rng(rand::rngs::StdRng);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(rand::SeedableRng::seed_from_u64(seed))
    }
    fn next_u64(&mut self) -> u64 {
        rand::RngCore::next_u64(&mut self.0)
    }
    fn uniform(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 + 0.5) / (1u64 << 24) as f32
    }
    fn normal(&mut self) -> f32 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
    }
}

/// Named test matrices, each `n_rows x 512`.
fn cases() -> Vec<(String, Vec<f32>, usize)> {
    const N: usize = 512;
    let mut rng = Rng::new(0x05EE_D0F0_AC1E);
    let mut out = Vec::new();
    for sigma in [0.02f32, 1.0, 300.0] {
        let x: Vec<f32> = (0..64 * N).map(|_| rng.normal() * sigma).collect();
        out.push((format!("gaussian sigma {sigma}"), x, 64));
    }
    // Heavy tails (Cauchy-like) and weights with a few large outliers, as in real checkpoints.
    let x: Vec<f32> = (0..32 * N)
        .map(|_| (rng.uniform() - 0.5) / (rng.uniform() + 0.01))
        .collect();
    out.push(("heavy tails".into(), x, 32));
    let x: Vec<f32> = (0..32 * N)
        .map(|i| {
            if i % 97 == 0 {
                rng.normal() * 40.0
            } else {
                rng.normal() * 0.05
            }
        })
        .collect();
    out.push(("outliers".into(), x, 32));
    // Values on a coarse grid hit exact rounding ties in every format.
    let x: Vec<f32> = (0..32 * N)
        .map(|_| ((rng.next_u64() % 33) as f32 - 16.0) * 0.25)
        .collect();
    out.push(("grid ties".into(), x, 32));
    out.push(("zeros".into(), vec![0.0; 4 * N], 4));
    for c in [1.0f32, -3.5, 1e-3] {
        out.push((format!("constant {c}"), vec![c; 2 * N], 2));
    }
    for scale in [1e30f32, 1e-30, 1e20, 1e-10] {
        let x: Vec<f32> = (0..8 * N).map(|_| rng.normal() * scale).collect();
        out.push((format!("magnitude {scale:e}"), x, 8));
    }
    let x: Vec<f32> = (0..16 * N).map(|_| -rng.uniform() * 2.0).collect();
    out.push(("negative only".into(), x, 16));
    let x: Vec<f32> = (0..16 * N).map(|_| rng.uniform() * 2.0 + 1.0).collect();
    out.push(("positive only, offset".into(), x, 16));
    // A few sub-blocks zero, the rest not: exercises the zero sub-scale paths of the k-quants.
    let x: Vec<f32> = (0..8 * N)
        .map(|i| if (i / 32) % 3 == 0 { 0.0 } else { rng.normal() })
        .collect();
    out.push(("partly zero".into(), x, 8));
    out
}

fn ours(ty: GgmlType, x: &[f32]) -> Vec<u8> {
    let mut out = vec![0u8; ty.row_bytes(x.len() as u64).expect("whole blocks") as usize];
    quantize_row(ty, x, &mut out).expect("quantize_row");
    out
}

fn same_float(a: f32, b: f32) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

/// Quantizes every case with our code and with `ggml_quantize_chunk`; returns one line per
/// (type, case) whose bytes differ.
fn quantize_mismatches(types: &[GgmlType]) -> Vec<String> {
    let mut failures = Vec::new();
    for (name, x, rows) in cases() {
        let n_per_row = x.len() / rows;
        for &ty in types {
            let want = edgeact_oracle::quantize_chunk(ty.id(), &x, rows, n_per_row).expect("oracle quantize");
            let got = ours(ty, &x);
            assert_eq!(got.len(), want.len(), "{ty} {name}: size");
            let ts = ty.type_size();
            let bad: Vec<usize> = (0..got.len() / ts)
                .filter(|&b| got[b * ts..][..ts] != want[b * ts..][..ts])
                .collect();
            if !bad.is_empty() {
                failures.push(format!(
                    "{ty} {name}: {} of {} blocks differ (first: block {})",
                    bad.len(),
                    got.len() / ts,
                    bad[0]
                ));
            }
        }
    }
    failures
}

#[test]
fn float_and_legacy_quantize_match_ggml() {
    let types = [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::BF16,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
    ];
    let failures = quantize_mismatches(&types);
    assert!(failures.is_empty(), "mismatches:\n{}", failures.join("\n"));
}

#[test]
fn k_quants_quantize_match_ggml() {
    let failures = quantize_mismatches(&[GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K]);
    assert!(
        failures.is_empty(),
        "mismatches:\n{}\n\nThe oracle's ggml-quants.c was probably compiled with FMA contraction (gcc \
         -march=native defaults to -ffp-contract=fast), which changes the rounding inside make_qkx2_quants / \
         make_qx_quants. ggml's reference semantics (and upstream x86 builds, whose ggml-base gets no -march) are \
         unfused: rebuild the oracle with CFLAGS=\"-march=native -ffp-contract=off\".",
        failures.join("\n")
    );
}

#[test]
fn dequantize_matches_ggml_to_float() {
    let mut rng = Rng::new(42);
    // ggml's F32 has no `to_float` (it is the identity).
    for ty in TYPES.into_iter().filter(|&t| t != GgmlType::F32) {
        let n = 4096;
        // Well-formed blocks from a real quantization, then arbitrary bytes (every bit pattern
        // a file could hold, including NaN/inf scales).
        let x: Vec<f32> = (0..n).map(|_| rng.normal()).collect();
        let mut inputs = vec![ours(ty, &x)];
        inputs.push((0..inputs[0].len()).map(|_| rng.next_u64() as u8).collect());
        for bytes in inputs {
            let want = edgeact_oracle::dequantize_row(ty.id(), &bytes, n).expect("oracle to_float");
            let mut got = vec![0f32; n];
            dequantize_row(ty, &bytes, &mut got).expect("dequantize_row");
            let bad: Vec<usize> = (0..n).filter(|&i| !same_float(got[i], want[i])).collect();
            if let Some(&i) = bad.first() {
                panic!(
                    "{ty}: {} of {n} differ, first element {i}: ours {} ggml {}",
                    bad.len(),
                    got[i],
                    want[i]
                );
            }
        }
    }
}

/// Q8_K has no `ggml_quantize_chunk` path; on x86 the CPU backend's `from_float` for it is
/// `quantize_row_q8_K_ref` itself, so compare against that.
#[test]
fn q8_k_activations_match_ggml() {
    for (name, x, _) in cases() {
        let want = edgeact_oracle::from_float(GgmlType::Q8_K.id(), &x).expect("oracle from_float");
        // `quantize_row` runs the same `BlockQ8K::from_float` as `quantize_row_q8_k`. ggml leaves
        // the bsums of an all-zero block unwritten (the oracle's buffer is zeroed), so bytes
        // compare equal there too.
        let got = ours(GgmlType::Q8_K, &x);
        assert!(got == want, "Q8_K {name}: bytes differ");
    }
}

/// Every quantized type against ggml's `quantize_row_*_ref` compiled with unfused arithmetic
/// (`scripts/build-quant-ref.sh` builds it from the llama.cpp sources). This pins the
/// reference semantics independently of how the oracle library was compiled.
#[test]
#[ignore = "needs EDGEACT_QUANT_REF=<path to target/quant_ref from scripts/build-quant-ref.sh>"]
fn all_types_match_unfused_ggml_reference() {
    let exe = std::env::var_os("EDGEACT_QUANT_REF").expect("set EDGEACT_QUANT_REF (see scripts/build-quant-ref.sh)");
    let dir = tempfile::tempdir().expect("tempdir");
    let (input, output) = (dir.path().join("x.f32"), dir.path().join("y.bin"));
    let types = [
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q8_0,
        GgmlType::Q8_1,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
        GgmlType::Q8_K,
    ];
    let mut failures = Vec::new();
    for (name, x, _) in cases() {
        let bytes: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(&input, bytes).expect("write input");
        for ty in types {
            let status = std::process::Command::new(&exe)
                .arg(ty.id().to_string())
                .arg(&input)
                .arg(&output)
                .status()
                .expect("run quant_ref");
            assert!(status.success(), "quant_ref failed for {ty}");
            let want = std::fs::read(&output).expect("read output");
            if ours(ty, &x) != want {
                failures.push(format!("{ty} {name}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "differ from unfused ggml:\n{}",
        failures.join("\n")
    );
}
