//! Shared by tests/lora_runtime.rs and tests/lora_oracle.rs: LoRA adapters with random A and
//! B over the tiny checkpoint (`convert_support`), written as llama.cpp's GGUF adapter format
//! straight through the GGUF writer, and the reference they are checked against: a copy of a
//! base GGUF with the adapted matrices merged in f64.
#![allow(dead_code)]

use crate::convert_support::{f16_bytes, weights, FF, HEAD_DIM, HIDDEN, KV_HEADS, VOCAB};
use edgeact_quantize::GgufWriter;
use edgeact_runtime::gguf::{GgufFile, Value};
use edgeact_runtime::quant::{dequantize_row, GgmlType};
use std::collections::BTreeMap;
use std::path::Path;

/// One adapted matrix: its base name, rank, A (`r` rows of `n_in`) and B (`n_out` rows of `r`).
#[derive(Clone)]
pub struct Pair {
    pub target: String,
    pub rank: usize,
    pub n_in: usize,
    pub n_out: usize,
    pub a: Vec<f32>,
    pub b: Vec<f32>,
}

pub fn pair(target: &str, rank: usize, n_in: usize, n_out: usize, seed: u64) -> Pair {
    Pair {
        target: target.into(),
        rank,
        n_in,
        n_out,
        a: weights(seed, rank * n_in),
        b: weights(seed + 1000, n_out * rank),
    }
}

/// An adapter over most kinds of matrix (Q, K with its narrower output, O, up, down with its
/// wider input, the output projection), one pair of a different rank (scales are per pair).
pub fn adapter_pairs(seed: u64) -> Vec<Pair> {
    let kv = KV_HEADS * HEAD_DIM;
    vec![
        pair("blk.0.attn_q.weight", 8, HIDDEN, HIDDEN, seed),
        pair("blk.1.attn_k.weight", 8, HIDDEN, kv, seed + 1),
        pair("blk.0.attn_output.weight", 8, HIDDEN, HIDDEN, seed + 2),
        pair("blk.1.ffn_up.weight", 4, HIDDEN, FF, seed + 3),
        pair("blk.0.ffn_down.weight", 8, FF, HIDDEN, seed + 4),
        pair("output.weight", 8, HIDDEN, VOCAB, seed + 5),
    ]
}

pub fn encode(ty: GgmlType, v: &[f32]) -> Vec<u8> {
    match ty {
        GgmlType::F32 => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        GgmlType::F16 => f16_bytes(v),
        other => panic!("test adapters are F32 or F16, not {other}"),
    }
}

/// The values the adapter file holds for `v` once stored as `ty`.
pub fn stored(ty: GgmlType, v: &[f32]) -> Vec<f32> {
    match ty {
        GgmlType::F16 => v.iter().map(|&x| half::f16::from_f32(x).to_f32()).collect(),
        _ => v.to_vec(),
    }
}

/// Writes an adapter GGUF as llama.cpp's converter lays it out.
pub fn write_adapter(path: &Path, pairs: &[Pair], alpha: Option<f32>, ty: GgmlType) {
    let mut w = GgufWriter::new();
    w.set_str("general.type", "adapter").unwrap();
    w.set_str("general.architecture", "llama").unwrap();
    w.set_str("adapter.type", "lora").unwrap();
    if let Some(a) = alpha {
        w.set("adapter.lora.alpha", Value::F32(a)).unwrap();
    }
    let mut data = Vec::new();
    for p in pairs {
        w.add_tensor(format!("{}.lora_a", p.target), &[p.n_in as u64, p.rank as u64], ty)
            .unwrap();
        data.push(encode(ty, &p.a));
        w.add_tensor(format!("{}.lora_b", p.target), &[p.rank as u64, p.n_out as u64], ty)
            .unwrap();
        data.push(encode(ty, &p.b));
    }
    w.write_file(path, &[], |i, _, sink| std::io::Write::write_all(sink, &data[i]))
        .unwrap();
}

/// llama.cpp's scale rule: `user · alpha / r`, or `user` without alpha.
pub fn pair_scale(alpha: Option<f32>, rank: usize, user: f32) -> f64 {
    match alpha {
        Some(a) if a != 0.0 => user as f64 * a as f64 / rank as f64,
        _ => user as f64,
    }
}

/// A copy of `base` with `W + s·B·A` (in f64, written F32) for every pair of every adapter
/// `(pairs, alpha, user scale, adapter tensor type)`; other tensors are copied as they are.
pub fn write_merged(base: &Path, out: &Path, adapters: &[(&[Pair], Option<f32>, f32, GgmlType)]) {
    let file = GgufFile::open(base).unwrap();
    let mut deltas: BTreeMap<&str, Vec<(&Pair, f64, GgmlType)>> = BTreeMap::new();
    for &(pairs, alpha, user, ty) in adapters {
        for p in pairs {
            deltas
                .entry(p.target.as_str())
                .or_default()
                .push((p, pair_scale(alpha, p.rank, user), ty));
        }
    }
    let mut w = GgufWriter::new();
    for (k, v) in file.metadata() {
        w.set(k.clone(), v.clone()).unwrap();
    }
    let mut data: Vec<Vec<u8>> = Vec::new();
    for t in file.tensors() {
        let bytes = file.tensor_data(t);
        match deltas.get(t.name.as_str()) {
            None => {
                w.add_tensor(t.name.clone(), &t.dims, t.ty).unwrap();
                data.push(bytes.to_vec());
            }
            Some(list) => {
                let (cols, rows) = t.as_matrix();
                let rb = bytes.len() / rows;
                // The adapters' values as their files hold them, in f64.
                let terms: Vec<(&Pair, f64, Vec<f64>, Vec<f64>)> = list
                    .iter()
                    .map(|&(p, s, ty)| {
                        let f = |v: &[f32]| stored(ty, v).into_iter().map(f64::from).collect::<Vec<f64>>();
                        (p, s, f(&p.a), f(&p.b))
                    })
                    .collect();
                let mut merged = vec![0f32; rows * cols];
                let mut row = vec![0f32; cols];
                let mut acc = vec![0f64; cols];
                for r in 0..rows {
                    dequantize_row(t.ty, &bytes[r * rb..(r + 1) * rb], &mut row).unwrap();
                    acc.iter_mut().zip(&row).for_each(|(a, &w)| *a = w as f64);
                    for (p, s, a, b) in &terms {
                        for k in 0..p.rank {
                            let sb = s * b[r * p.rank + k];
                            for (acc, &av) in acc.iter_mut().zip(&a[k * p.n_in..(k + 1) * p.n_in]) {
                                *acc += sb * av;
                            }
                        }
                    }
                    for (m, &a) in merged[r * cols..(r + 1) * cols].iter_mut().zip(&acc) {
                        *m = a as f32;
                    }
                }
                w.add_tensor(t.name.clone(), &t.dims, GgmlType::F32).unwrap();
                data.push(encode(GgmlType::F32, &merged));
            }
        }
    }
    w.write_file(out, &[], |i, _, sink| std::io::Write::write_all(sink, &data[i]))
        .unwrap();
}
