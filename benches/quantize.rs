//! Quantize throughput of our quantizers beside ggml's `ggml_quantize_chunk` (through
//! `edgeact_oracle`, no importance matrix) on the same 4096 x 256 matrix, one thread each,
//! reported as MiB/s of f32 input. Both sides allocate their output on every iteration (the
//! oracle returns a fresh `Vec`), so the figures compare the quantizers, not the allocator.
//!
//! Run: `cargo bench --features oracle --bench quantize`; the ratio ours / ggml of each type is
//! the ggml time divided by ours from the same run (docs/quantize.md#speed).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use edgeact_runtime::quant::{quantize_row, GgmlType};
use std::hint::black_box;
use std::time::Duration;

const ROWS: usize = 4096;
const COLS: usize = 256;

/// Gaussian-ish weights (sum of uniforms), deterministic.
fn matrix() -> Vec<f32> {
    let mut s = 0x1234_5678_9ABC_DEF0u64;
    let mut uniform = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 40) as f32 / (1u64 << 24) as f32
    };
    (0..ROWS * COLS)
        .map(|_| (0..4).map(|_| uniform()).sum::<f32>() - 2.0)
        .collect()
}

fn bench_quantize(c: &mut Criterion) {
    let x = matrix();
    let mut group = c.benchmark_group("quantize_4096x256");
    group.throughput(Throughput::Bytes((x.len() * 4) as u64));
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for ty in [
        GgmlType::Q4_0,
        GgmlType::Q8_0,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
    ] {
        let bytes = ROWS * ty.row_bytes(COLS as u64).expect("whole blocks") as usize;
        group.bench_function(BenchmarkId::new("edgeact", ty.name()), |b| {
            b.iter(|| {
                let mut dst = vec![0u8; bytes];
                quantize_row(ty, black_box(&x), &mut dst).expect("quantize");
                dst
            })
        });
        group.bench_function(BenchmarkId::new("ggml", ty.name()), |b| {
            b.iter(|| edgeact_oracle::quantize_chunk(ty.id(), black_box(&x), ROWS, COLS).expect("oracle"))
        });
    }
    group.finish();
}

criterion_group!(benches, bench_quantize);
criterion_main!(benches);
