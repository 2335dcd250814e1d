//! Every CUDA kernel against the CPU reference (`quant::dequantize_row` and plain f32 math)
//! on random inputs. Needs a CUDA GPU plus NVRTC (see `scripts/fetch-nvrtc.sh`); without one
//! each test prints why it is skipped and passes.

use edgeact_runtime::kernels::cuda::{rope_table, GpuContext, GPU_WEIGHT_TYPES};
use edgeact_runtime::quant::{dequantize_row, f16_to_f32, f32_to_f16, quantize_row, GgmlType};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn gpu() -> Option<GpuContext> {
    if !crate::support::usable_gpu() {
        return None;
    }
    Some(GpuContext::open(0).unwrap_or_else(|e| panic!("a GPU was found but could not be opened: {e}")))
}

fn random(rng: &mut StdRng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-scale..scale)).collect()
}

/// Asserts |a - b| <= tol * (1 + |b|) elementwise.
fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol * (1.0 + w.abs()),
            "{what}[{i}]: gpu {g} vs cpu {w}"
        );
    }
}

#[test]
fn matvec_and_matmul_match_dequantized_reference() {
    let _one_at_a_time = crate::support::one_at_a_time();
    let Some(g) = gpu() else { return };
    let mut rng = StdRng::seed_from_u64(7);
    let (rows, cols) = (67, 512);
    for ty in GPU_WEIGHT_TYPES {
        let w = random(&mut rng, rows * cols, 1.0);
        let row_bytes = ty.row_bytes(cols as u64).unwrap() as usize;
        let mut bytes = vec![0u8; rows * row_bytes];
        quantize_row(ty, &w, &mut bytes).unwrap();
        let mut deq = vec![0f32; rows * cols];
        dequantize_row(ty, &bytes, &mut deq).unwrap();
        let m = g.upload_matrix(ty, rows, cols, &bytes).unwrap();
        for n_tok in [1usize, 5, 40] {
            let x = random(&mut rng, n_tok * cols, 1.0);
            let mut want = vec![0f32; n_tok * rows];
            for t in 0..n_tok {
                for r in 0..rows {
                    want[t * rows + r] = (0..cols).map(|k| deq[r * cols + k] * x[t * cols + k]).sum();
                }
            }
            let xd = g.upload(&x).unwrap();
            let mut yd = g.zeros::<f32>(n_tok * rows).unwrap();
            g.matmul(&m, &xd.slice(..), n_tok, &mut yd.slice_mut(..)).unwrap();
            let got = g.download(&yd, n_tok * rows).unwrap();
            assert_close(&format!("{} x{n_tok}", ty.name()), &got, &want, 1e-3);
        }
    }
}

#[test]
fn matrix_upload_rejects_bad_input() {
    let _one_at_a_time = crate::support::one_at_a_time();
    let Some(g) = gpu() else { return };
    assert!(g.upload_matrix(GgmlType::Q4_0, 2, 64, &[0u8; 10]).is_err());
    assert!(
        g.upload_matrix(GgmlType::BF16, 1, 32, &[0u8; 64]).is_err(),
        "BF16 has no kernel"
    );
    let m = g.upload_matrix(GgmlType::F32, 2, 32, &[0u8; 256]).unwrap();
    let x = g.zeros::<f32>(16).unwrap();
    let mut y = g.zeros::<f32>(2).unwrap();
    assert!(
        g.matmul(&m, &x.slice(..), 1, &mut y.slice_mut(..)).is_err(),
        "short x accepted"
    );
}

#[test]
fn elementwise_ops_match_cpu() {
    let _one_at_a_time = crate::support::one_at_a_time();
    let Some(g) = gpu() else { return };
    let mut rng = StdRng::seed_from_u64(11);
    let (rows, n) = (3, 1000);
    let x = random(&mut rng, rows * n, 3.0);
    let w = random(&mut rng, n, 1.0);

    // RMSNorm
    let mut want = vec![0f32; rows * n];
    for r in 0..rows {
        let xr = &x[r * n..(r + 1) * n];
        let ss: f64 = xr.iter().map(|&v| v as f64 * v as f64).sum();
        let s = (1.0 / (ss / n as f64 + 1e-5).sqrt()) as f32;
        for i in 0..n {
            want[r * n + i] = xr[i] * s * w[i];
        }
    }
    let (xd, wd) = (g.upload(&x).unwrap(), g.upload(&w).unwrap());
    let mut od = g.zeros::<f32>(rows * n).unwrap();
    g.rms_norm(&xd.slice(..), &wd.slice(..), &mut od.slice_mut(..), rows, n, 1e-5)
        .unwrap();
    assert_close("rms_norm", &g.download(&od, rows * n).unwrap(), &want, 1e-5);

    // SwiGLU
    let up = random(&mut rng, rows * n, 2.0);
    let want: Vec<f32> = x.iter().zip(&up).map(|(&a, &b)| a / (1.0 + (-a).exp()) * b).collect();
    let ud = g.upload(&up).unwrap();
    g.swiglu(&xd.slice(..), &ud.slice(..), &mut od.slice_mut(..), rows * n)
        .unwrap();
    assert_close("swiglu", &g.download(&od, rows * n).unwrap(), &want, 1e-5);

    // Residual add
    let mut sum = g.upload(&x).unwrap();
    g.add_inplace(&mut sum.slice_mut(..), &ud.slice(..), rows * n).unwrap();
    let want: Vec<f32> = x.iter().zip(&up).map(|(a, b)| a + b).collect();
    assert_close("add", &g.download(&sum, rows * n).unwrap(), &want, 0.0);

    // Softmax, including a fully masked row that must become uniform.
    let mut s = x.clone();
    s[2 * n..].fill(f32::NEG_INFINITY);
    let mut want = s.clone();
    for row in want.chunks_mut(n) {
        let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        if m == f32::NEG_INFINITY {
            row.fill(1.0 / n as f32);
            continue;
        }
        let total: f64 = row.iter().map(|&v| ((v - m).exp()) as f64).sum();
        row.iter_mut().for_each(|v| *v = (*v - m).exp() * (1.0 / total) as f32);
    }
    let mut sd = g.upload(&s).unwrap();
    g.softmax(&mut sd.slice_mut(..), rows, n).unwrap();
    assert_close("softmax", &g.download(&sd, rows * n).unwrap(), &want, 1e-5);
}

#[test]
fn rope_matches_cpu_table() {
    let _one_at_a_time = crate::support::one_at_a_time();
    let Some(g) = gpu() else { return };
    let mut rng = StdRng::seed_from_u64(3);
    let (n_tok, n_heads, hd, pos0, positions) = (4, 3, 64, 9, 32);
    let x = random(&mut rng, n_tok * n_heads * hd, 1.0);
    let table = rope_table(hd, 10000.0, 1.0, positions);
    let mut want = x.clone();
    for t in 0..n_tok {
        let pos = (pos0 + t) as f64;
        for h in 0..n_heads {
            for i in 0..hd / 2 {
                let theta = pos * 10000f64.powf(-2.0 * i as f64 / hd as f64);
                let (c, s) = (theta.cos() as f32, theta.sin() as f32);
                let o = (t * n_heads + h) * hd + 2 * i;
                let (a, b) = (x[o], x[o + 1]);
                want[o] = a * c - b * s;
                want[o + 1] = a * s + b * c;
            }
        }
    }
    let td = g.upload(&table).unwrap();
    let mut xd = g.upload(&x).unwrap();
    g.rope(
        &mut xd.slice_mut(..),
        &td.slice(..),
        positions,
        n_tok,
        n_heads,
        hd,
        pos0,
    )
    .unwrap();
    assert_close("rope", &g.download(&xd, x.len()).unwrap(), &want, 1e-5);
    // Positions past the table are refused.
    assert!(g
        .rope(&mut xd.slice_mut(..), &td.slice(..), positions, n_tok, n_heads, hd, 30)
        .is_err());
}

#[test]
fn kv_store_and_attention_match_cpu() {
    let _one_at_a_time = crate::support::one_at_a_time();
    let Some(g) = gpu() else { return };
    let mut rng = StdRng::seed_from_u64(5);
    // GQA: 8 query heads over 2 KV heads; 6 cached positions, then a chunk of 3 tokens.
    let (n_heads, n_kv, hd, pos0, n_tok, cap) = (8, 2, 64, 6, 3, 16);
    let (dim, kv_dim) = (n_heads * hd, n_kv * hd);
    let total = pos0 + n_tok;
    let k = random(&mut rng, total * kv_dim, 1.0);
    let v = random(&mut rng, total * kv_dim, 1.0);
    let q = random(&mut rng, n_tok * dim, 1.0);
    let mut kc = g.zeros::<u16>(cap * kv_dim).unwrap();
    let mut vc = g.zeros::<u16>(cap * kv_dim).unwrap();
    // Store in two steps, as prefill then the chunk would.
    for (p, n) in [(0, pos0), (pos0, n_tok)] {
        let kd = g.upload(&k[p * kv_dim..(p + n) * kv_dim]).unwrap();
        let vd = g.upload(&v[p * kv_dim..(p + n) * kv_dim]).unwrap();
        g.kv_store(
            &kd.slice(..),
            &vd.slice(..),
            &mut kc.slice_mut(..),
            &mut vc.slice_mut(..),
            n,
            kv_dim,
            p,
        )
        .unwrap();
    }
    let kh: Vec<f32> = k.iter().map(|&x| f16_to_f32(f32_to_f16(x))).collect();
    let vh: Vec<f32> = v.iter().map(|&x| f16_to_f32(f32_to_f16(x))).collect();
    let stored = g.download(&kc, total * kv_dim).unwrap();
    let stored: Vec<f32> = stored.iter().map(|&b| f16_to_f32(half::f16::from_bits(b))).collect();
    assert_close("kv_store", &stored, &kh, 0.0);

    let mut want = vec![0f32; n_tok * dim];
    for t in 0..n_tok {
        let seen = pos0 + t + 1;
        for h in 0..n_heads {
            let off = h / (n_heads / n_kv) * hd;
            let qh = &q[t * dim + h * hd..t * dim + (h + 1) * hd];
            let mut s: Vec<f32> = (0..seen)
                .map(|j| {
                    let kr = &kh[j * kv_dim + off..j * kv_dim + off + hd];
                    kr.iter().zip(qh).map(|(a, b)| a * b).sum::<f32>() / (hd as f32).sqrt()
                })
                .collect();
            let m = s.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let tot: f32 = s
                .iter_mut()
                .map(|x| {
                    *x = (*x - m).exp();
                    *x
                })
                .sum();
            for d in 0..hd {
                want[t * dim + h * hd + d] = (0..seen).map(|j| s[j] / tot * vh[j * kv_dim + off + d]).sum();
            }
        }
    }
    let qd = g.upload(&q).unwrap();
    let mut od = g.zeros::<f32>(n_tok * dim).unwrap();
    g.attention(
        &qd.slice(..),
        &kc.slice(..),
        &vc.slice(..),
        &mut od.slice_mut(..),
        n_tok,
        n_heads,
        n_kv,
        hd,
        pos0,
    )
    .unwrap();
    assert_close("attention", &g.download(&od, n_tok * dim).unwrap(), &want, 1e-4);
}
