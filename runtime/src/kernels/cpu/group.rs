//! Several matrices times the same activations: the attention block's q, k and v projections,
//! the FFN's gate and up. Each [`try_matmul_as`] call rounds the activations and runs its own
//! pool job, whose wake-up and final wait cost microseconds: for a 135M model's decode step
//! that is a large share of each matvec (its k and v matrices are ~80 KB, a few microseconds of
//! streaming). A group rounds the activations once and runs the decode tasks of all its
//! matrices in one pool job; paths that schedule their own work (prefill tiles and panels) run
//! one matrix after another, as separate calls do. Results are bit-identical to separate calls.

use super::dispatch::{choose_path, CpuFeatures, MatmulPath};
use super::matmul::{checked_call, decode_plan, quantize_activations, try_matmul_as, Call, Plan};
use super::table::act_type;
use super::types::{Activations, QMatrix};
use super::{Backend, KernelError, ThreadPool};
use crate::quant::GgmlType;

/// `out_i[t * rows_i + r] = w_i[r] · x[t]` for every `(w_i, out_i)` of `parts`, as
/// [`try_matmul_as`] on each, with one activation rounding and one pool job where the paths
/// allow it (decode: one token, or the few of a batched step or a speculation check).
pub fn try_matmul_group_as(
    backend: Backend,
    activations: Activations,
    pool: &ThreadPool,
    parts: &mut [(&QMatrix, &mut [f32])],
    x: &[f32],
    n_tokens: usize,
) -> Result<(), KernelError> {
    let mut matrices = Vec::with_capacity(parts.len());
    for (w, out) in parts.iter_mut() {
        // `None`: nothing to compute for this part (its output is final); the group then
        // simply runs as separate calls.
        matrices.extend(checked_call(backend, w, x, n_tokens, out)?);
    }
    let cpu = CpuFeatures::detect();
    let paths: Vec<MatmulPath> = matrices
        .iter()
        .map(|w| choose_path(backend, cpu, w.ty, w.packed.is_some(), n_tokens))
        .collect();
    // Rounded activations are shared only when every matrix takes the same partner format;
    // the exact arithmetic (f32 activations against dequantized rows) has no rounding to share.
    let fusable = parts.len() > 1
        && matrices.len() == parts.len()
        && activations == Activations::Quantized
        && paths.iter().all(|p| p.is_decode())
        && matrices.iter().all(|w| act_type(w.ty) == act_type(matrices[0].ty));
    if !fusable {
        for (w, out) in parts.iter_mut() {
            try_matmul_as(backend, activations, pool, w, x, n_tokens, out)?;
        }
        return Ok(());
    }
    let first = &matrices[0];
    let quantized = quantize_activations(pool, first.ty, x, first.cols);
    let (acts, arb): (&[u8], usize) = match &quantized {
        Some(q) => (q.bytes(), q.row_bytes()),
        None => (bytemuck::cast_slice(x), first.cols * 4),
    };
    debug_assert_eq!(act_type(first.ty) == GgmlType::F32, quantized.is_none());
    let calls: Vec<Call> = matrices
        .iter()
        .map(|w| Call {
            backend,
            pool,
            w,
            acts,
            arb,
            n_tokens,
        })
        .collect();
    let mut plans = Vec::with_capacity(calls.len());
    for ((call, (_, out)), path) in calls.iter().zip(parts.iter_mut()).zip(paths) {
        // SAFETY: `checked_call` checked that `backend` is available and the lengths of `x`
        // (so of `acts`, rounded from it) and `out`; `path` is `choose_path`'s for this
        // backend, this CPU and this matrix.
        match unsafe { decode_plan(call, path, out) } {
            Ok(plan) => plans.push(plan),
            Err(_) => unreachable!("decode paths have plans"),
        }
    }
    run_together(pool, &plans);
    Ok(())
}

/// Every task of every plan in one pool job (tasks are claimed in order, so the first plan's
/// tasks start first).
fn run_together(pool: &ThreadPool, plans: &[Plan]) {
    let mut starts = Vec::with_capacity(plans.len());
    let mut total = 0;
    for p in plans {
        starts.push(total);
        total += p.n_tasks;
    }
    pool.run(total, &|i| {
        // The last plan starting at or before task i (empty plans share its start).
        let p = starts.partition_point(|&s| s <= i) - 1;
        (plans[p].task)(i - starts[p]);
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::cpu::tests::{random_floats, raw_row};
    use crate::kernels::cpu::{available_backends, repackable, try_matmul_as, PackedMatrix};
    use rand::rngs::StdRng;
    use rand::SeedableRng;
    use GgmlType as G;

    /// A `rows` x `cols` matrix of `ty` from random quants and finite scales.
    fn matrix_bytes(rng: &mut StdRng, ty: GgmlType, rows: usize, cols: usize) -> Vec<u8> {
        (0..rows).flat_map(|_| raw_row(rng, ty, cols, 1.0, false)).collect()
    }

    /// The group's outputs equal separate calls bit for bit: every backend, file layout and
    /// repacked, a Q4_K_M-style mix (Q4_K beside Q6_K: one rounding for both), a mix of
    /// partner formats (no sharing), decode token counts and a prefill count, ragged rows.
    #[test]
    fn group_equals_separate_calls() {
        let cols = 512;
        let mixes: [&[(GgmlType, usize)]; 4] = [
            &[(G::Q4_0, 96), (G::Q4_0, 32), (G::Q4_0, 32)],
            &[(G::Q4_K, 80), (G::Q4_K, 16), (G::Q6_K, 23)],
            &[(G::Q4_1, 40), (G::Q8_0, 33)],
            &[(G::F16, 17), (G::F32, 20)],
        ];
        let mut rng = StdRng::seed_from_u64(3);
        for backend in available_backends() {
            for threads in [1, 3] {
                let pool = ThreadPool::new(threads);
                for (m, mix) in mixes.iter().enumerate() {
                    let data: Vec<Vec<u8>> = mix
                        .iter()
                        .map(|&(ty, rows)| matrix_bytes(&mut rng, ty, rows, cols))
                        .collect();
                    let plain: Vec<QMatrix> = mix
                        .iter()
                        .zip(&data)
                        .map(|(&(ty, rows), d)| QMatrix::new(ty, rows, cols, d).expect("matrix"))
                        .collect();
                    let packed: Vec<Option<PackedMatrix>> = plain
                        .iter()
                        .map(|w| repackable(w.ty).then(|| PackedMatrix::new(&pool, w).expect("repack")))
                        .collect();
                    let repacked: Vec<QMatrix> = plain
                        .iter()
                        .zip(&packed)
                        .map(|(w, p)| match p {
                            Some(p) => w.with_packed(p).expect("packed form"),
                            None => *w,
                        })
                        .collect();
                    for ws in [&plain, &repacked] {
                        for n_tokens in [1, 2, 5, 16, 40] {
                            let x = random_floats(&mut rng, n_tokens * cols, 1.0);
                            let mut want: Vec<Vec<f32>> = ws.iter().map(|w| vec![0.0; n_tokens * w.rows]).collect();
                            for (w, o) in ws.iter().zip(&mut want) {
                                try_matmul_as(backend, Activations::Quantized, &pool, w, &x, n_tokens, o)
                                    .expect("separate");
                            }
                            let mut got: Vec<Vec<f32>> = ws.iter().map(|w| vec![f32::NAN; n_tokens * w.rows]).collect();
                            let mut parts: Vec<(&QMatrix, &mut [f32])> = ws
                                .iter()
                                .zip(got.iter_mut())
                                .map(|(w, o)| (w, o.as_mut_slice()))
                                .collect();
                            try_matmul_group_as(backend, Activations::Quantized, &pool, &mut parts, &x, n_tokens)
                                .expect("group");
                            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                                let same = g.iter().zip(w).all(|(a, b)| a.to_bits() == b.to_bits());
                                assert!(
                                    same,
                                    "{backend:?} {threads} threads, mix {m} matrix {i}, {n_tokens} tokens"
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn group_checks_every_part() {
        let pool = ThreadPool::new(2);
        let mut rng = StdRng::seed_from_u64(4);
        let data = matrix_bytes(&mut rng, G::Q4_0, 16, 64);
        let w = QMatrix::new(G::Q4_0, 16, 64, &data).expect("matrix");
        let x = random_floats(&mut rng, 64, 1.0);
        let (mut a, mut b) = (vec![0f32; 16], vec![0f32; 15]);
        let mut parts: Vec<(&QMatrix, &mut [f32])> = vec![(&w, &mut a), (&w, &mut b)];
        let err = try_matmul_group_as(Backend::Scalar, Activations::Quantized, &pool, &mut parts, &x, 1);
        assert!(matches!(err, Err(KernelError::Length { what: "out", .. })), "{err:?}");
        let mut parts: Vec<(&QMatrix, &mut [f32])> = vec![];
        try_matmul_group_as(Backend::Scalar, Activations::Quantized, &pool, &mut parts, &x, 1).expect("empty group");
    }
}
