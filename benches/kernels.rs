//! CPU kernel benchmarks: our quantized matvec (decode) and batched matmul (prefill) on
//! Llama-2-7B shapes at 1 and 2 threads, and, with `--features oracle`, ggml's CPU `vec_dot`
//! for the same decode work in the same run.
//!
//! Run: `cargo bench --bench kernels` (ours only) or
//! `cargo bench --features oracle --bench kernels` (side by side). Filter with criterion's
//! usual argument, e.g. `-- matvec/Q4_K`. `EDGEACT_KERNELS=avx2` forces a kernel path.
//!
//! The ggml side is `edgeact_oracle::MulMat`: ggml's own CPU `mul_mat` on a graph built once
//! and computed on a persistent ggml thread pool with the same thread count, activations in
//! f32 (ggml quantizes them inside the op, as ours does), so both sides do the same work. Its
//! weights are in a plain CPU buffer, so ggml does not repack them (llama.cpp's model loader
//! would); `edgeact-repacked` is ours on weights repacked as `--repack` does (Q4_0, Q4_1, Q5_0,
//! Q5_1, Q8_0, Q4_K, Q5_K and Q6_K, x86 CPUs with AVX2 or AVX-512).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use edgeact_runtime::kernels::cpu::{matmul, repack_supported, repackable, PackedMatrix, QMatrix, ThreadPool};
use edgeact_runtime::quant::{quantize_row, GgmlType};
use std::hint::black_box;
use std::time::Duration;

const COLS: usize = 4096;

/// Deterministic pseudo-Gaussian values (sum of uniforms from xorshift).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed | 1;
    let mut uniform = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 40) as f32 / (1u64 << 24) as f32
    };
    (0..n).map(|_| (0..4).map(|_| uniform()).sum::<f32>() - 2.0).collect()
}

fn weights(ty: GgmlType, rows: usize) -> Vec<u8> {
    let x = values(rows * COLS, 0x5eed ^ rows as u64);
    let mut w = vec![0u8; rows * ty.row_bytes(COLS as u64).expect("whole blocks") as usize];
    quantize_row(ty, &x, &mut w).expect("quantize weights");
    w
}

fn configure<'a>(c: &'a mut Criterion, name: &str) -> criterion::BenchmarkGroup<'a, criterion::measurement::WallTime> {
    let mut g = c.benchmark_group(name);
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    g
}

fn bench_matvec(c: &mut Criterion) {
    let pools = [ThreadPool::new(1), ThreadPool::new(2)];
    let x = values(COLS, 7);
    let mut g = configure(c, "matvec");
    for ty in [
        GgmlType::Q4_0,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
        GgmlType::Q8_0,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q4_1,
    ] {
        for rows in [4096usize, 11008] {
            let wb = weights(ty, rows);
            let w = QMatrix::new(ty, rows, COLS, &wb).expect("matrix");
            let packed = repacked(&pools[1], &w);
            g.throughput(Throughput::Bytes(wb.len() as u64));
            for pool in &pools {
                let id = format!("{}/{rows}x{COLS}/t{}", ty.name(), pool.n_threads());
                let mut out = vec![0f32; rows];
                g.bench_function(BenchmarkId::new("edgeact", &id), |b| {
                    b.iter(|| matmul(pool, &w, black_box(&x), 1, &mut out))
                });
                if let Some(packed) = &packed {
                    let wp = w.with_packed(packed).expect("packed form of w");
                    g.bench_function(BenchmarkId::new("edgeact-repacked", &id), |b| {
                        b.iter(|| matmul(pool, &wp, black_box(&x), 1, &mut out))
                    });
                }
                #[cfg(feature = "oracle")]
                g.bench_function(BenchmarkId::new("ggml", &id), |b| {
                    let mut mm = ggml_mul_mat(ty, &wb, rows, 1, pool.n_threads());
                    b.iter(|| black_box(mm.compute(black_box(&x)).expect("ggml mul_mat").len()))
                });
            }
        }
    }
    g.finish();
}

fn bench_prefill(c: &mut Criterion) {
    const TOKENS: usize = 512;
    let pools = [ThreadPool::new(1), ThreadPool::new(2)];
    let x = values(TOKENS * COLS, 11);
    let mut g = configure(c, "prefill");
    for ty in [
        GgmlType::Q4_0,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
        GgmlType::Q8_0,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q4_1,
    ] {
        let rows = 4096;
        let wb = weights(ty, rows);
        let w = QMatrix::new(ty, rows, COLS, &wb).expect("matrix");
        let packed = repacked(&pools[1], &w);
        g.throughput(Throughput::Elements((2 * rows * COLS * TOKENS) as u64));
        for pool in &pools {
            let id = format!("{}/{rows}x{COLS}x{TOKENS}/t{}", ty.name(), pool.n_threads());
            let mut out = vec![0f32; rows * TOKENS];
            g.bench_function(BenchmarkId::new("edgeact", &id), |b| {
                b.iter(|| matmul(pool, &w, black_box(&x), TOKENS, &mut out))
            });
            if let Some(packed) = &packed {
                let wp = w.with_packed(packed).expect("packed form of w");
                g.bench_function(BenchmarkId::new("edgeact-repacked", &id), |b| {
                    b.iter(|| matmul(pool, &wp, black_box(&x), TOKENS, &mut out))
                });
            }
            #[cfg(feature = "oracle")]
            g.bench_function(BenchmarkId::new("ggml", &id), |b| {
                let mut mm = ggml_mul_mat(ty, &wb, rows, TOKENS, pool.n_threads());
                b.iter(|| black_box(mm.compute(black_box(&x)).expect("ggml mul_mat").len()))
            });
        }
    }
    g.finish();
}

/// `w` repacked for the x86 SIMD kernels, where this CPU and type have them.
fn repacked(pool: &ThreadPool, w: &QMatrix) -> Option<PackedMatrix> {
    (repack_supported() && repackable(w.ty)).then(|| PackedMatrix::new(pool, w).expect("repack"))
}

#[cfg(feature = "oracle")]
fn ggml_mul_mat(ty: GgmlType, w: &[u8], rows: usize, n_tokens: usize, threads: usize) -> edgeact_oracle::MulMat {
    edgeact_oracle::MulMat::new(ty.id(), w, rows, COLS, n_tokens, threads).expect("ggml mul_mat graph")
}

criterion_group!(benches, bench_matvec, bench_prefill);
criterion_main!(benches);
