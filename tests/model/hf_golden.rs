//! Our forward pass against golden logits from Hugging Face `transformers`
//! (`LlamaForCausalLM` in float32, eager attention), computed from the tiny random safetensors
//! checkpoint the converter tests build (`convert_support::write_checkpoint`: 2 layers, 256
//! wide, 4 query / 2 KV heads, linear RoPE scaling x2, vocabulary 32000), with its norm
//! weights and q/k projections rescaled (`hf_golden_support::sharpen`) so that attention and
//! RoPE matter.
//!
//! The fixture `tests/fixtures/hf_golden/tiny_logits.json` is made by
//! `scripts/make-hf-golden.py`; it holds, for each of 18 positions, the logits of every 61st
//! vocabulary id (plus the last) and the 16 largest logits with their ids. Here the checkpoint
//! is converted with our converter to F32 and F16 GGUF, run with an F32 and an F16 KV cache,
//! and every stored logit is compared.
//!
//! Run: `cargo test --test model_hf_golden`

use crate::convert_support;
use crate::hf_golden_support;
use convert_support::*;
use hf_golden_support::write_sharpened_checkpoint;

use edgeact_quantize::{convert, Mix, Options};
use edgeact_runtime::gguf::GgufFile;
use edgeact_runtime::model::{KvType, LlamaModel, Session, SessionOptions};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Deserialize)]
struct Golden {
    tensor_sha256_f16: BTreeMap<String, String>,
    tokens: Vec<u32>,
    vocab: usize,
    sampled_ids: Vec<usize>,
    positions: Vec<Position>,
}

#[derive(Deserialize)]
struct Position {
    sampled: Vec<f32>,
    top: Vec<(usize, f32)>,
}

fn golden() -> Golden {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf_golden/tiny_logits.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let g: Golden = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(g.positions.len(), g.tokens.len());
    for p in &g.positions {
        assert_eq!(p.sampled.len(), g.sampled_ids.len());
    }
    g
}

/// Largest |ours - HF| over the stored logits of each position (NaN if any of ours is NaN).
/// `ours` is `positions x vocab`.
fn per_position_diff(g: &Golden, ours: &[f32]) -> Vec<f32> {
    assert_eq!(ours.len(), g.positions.len() * g.vocab, "logit count");
    g.positions
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let row = &ours[i * g.vocab..(i + 1) * g.vocab];
            let sampled = g.sampled_ids.iter().zip(&p.sampled).map(|(&id, &v)| (id, v));
            sampled
                .chain(p.top.iter().copied())
                .map(|(id, v)| (row[id] - v).abs())
                // Not `f32::max`, which would drop a NaN.
                .fold(
                    0.0,
                    |m: f32, d| if d.is_nan() || m.is_nan() { f32::NAN } else { m.max(d) },
                )
        })
        .collect()
}

/// The positions whose difference exceeds `bound` (NaN counts as exceeding).
fn failures(diffs: &[f32], bound: f32) -> Vec<(usize, f32)> {
    diffs
        .iter()
        .copied()
        .enumerate()
        .filter(|&(_, d)| d.is_nan() || d > bound)
        .collect()
}

fn our_logits(path: &Path, kv_type: KvType, tokens: &[u32]) -> Vec<f32> {
    let file = Arc::new(GgufFile::open(path).unwrap());
    let model = Arc::new(LlamaModel::load(file).unwrap());
    let opts = SessionOptions {
        threads: 2,
        kv_type,
        ..SessionOptions::default()
    };
    Session::new(model, opts).unwrap().eval_all_logits(tokens).unwrap()
}

/// Converts the sharpened tiny checkpoint to `mix` in `dir`, after checking it is the one the
/// fixture was made from (the Python script rebuilds it from the same generator).
fn converted(g: &Golden, dir: &Path, mix: Mix) -> PathBuf {
    let ck = dir.join("ck");
    if !ck.exists() {
        std::fs::create_dir(&ck).unwrap();
        let tensors = write_sharpened_checkpoint(&ck);
        assert_eq!(tensors.len(), g.tensor_sha256_f16.len());
        for (name, _, values) in &tensors {
            let digest: String = Sha256::digest(f16_bytes(values))
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            assert_eq!(
                Some(&digest),
                g.tensor_sha256_f16.get(name),
                "{name}: the checkpoint differs from the one the fixture was computed from \
                 (rerun scripts/make-hf-golden.py after changing tests/convert_support)"
            );
        }
    }
    let out = dir.join(format!("tiny-{mix}.gguf"));
    let mut opts = Options::new(mix);
    opts.threads = 2;
    convert(&ck, &out, &opts, &mut edgeact_quantize::convert::Silent).unwrap();
    out
}

/// Runs one configuration and checks every position against `bound`.
fn check(g: &Golden, path: &Path, kv_type: KvType, what: &str, bound: f32) {
    let diffs = per_position_diff(g, &our_logits(path, kv_type, &g.tokens));
    let worst = diffs.iter().copied().fold(0.0, f32::max);
    eprintln!("{what}: worst per-position max |Δlogit| vs HF float32 = {worst:.3e} (bound {bound:.1e})");
    let bad = failures(&diffs, bound);
    assert!(
        bad.is_empty(),
        "{what}: positions (index, max |Δlogit|) over {bound}: {bad:?}"
    );
}

// Bounds. The logits of the sharpened model lie in [-2.24, 2.11] (HF). The checkpoint's weights
// are f16 values, so our F32 and our F16 conversions both hold exactly HF's weights (F16
// conversion is lossless here): the F16 model differs only in how our F16 kernels sum, and is
// held to the same bounds. For scale: HF itself moves the logits by 2.16 without the RoPE
// scaling factor and by 0.039 with rms_norm_eps 1e-6 instead of 1e-5.

/// F32 KV cache: the only differences are f32 rounding (summation order of the 256- and
/// 512-long dots, rsqrt/exp/sin/cos implementations). A length-n dot with random-signed
/// rounding errors is off by ~sqrt(n) * 2^-24 = 1.3e-6 relative (n = 512), ~3e-6 on logits of
/// 2.2, and softmax over scores of a few units adds a gain of a few. Measured: 6.2e-6 (AVX-512,
/// AVX2 kernels), 5.4e-6 (scalar); the bound is 3x that, 1e-5 of the logit range.
const F32_KV_BOUND: f32 = 2e-5;

/// F16 KV cache (the default): K and V are rounded to f16 (relative 2^-11 = 4.9e-4 each).
/// Attention scores |q.k|/sqrt(64) reach ~10 here (std ~3.4), so a key's rounding moves a
/// score by up to ~5e-3 and its softmax weight by ~5e-3 relative; V's rounding adds 4.9e-4 of
/// |V|. Carried to logits of 2.2 with gain ~1 that is ~1e-2 if every error lined up, which is
/// the bound. Measured: 2.3e-3 (AVX-512, AVX2), 2.4e-3 (scalar), 4x below.
const F16_KV_BOUND: f32 = 1e-2;

#[test]
fn f32_and_f16_conversions_match_transformers() {
    let g = golden();
    let dir = tempfile::tempdir().unwrap();
    for mix in [Mix::F32, Mix::F16] {
        let path = converted(&g, dir.path(), mix);
        check(&g, &path, KvType::F32, &format!("{mix} weights, F32 KV"), F32_KV_BOUND);
        check(&g, &path, KvType::F16, &format!("{mix} weights, F16 KV"), F16_KV_BOUND);
    }
}

/// The comparison itself: one stored logit moved by just over the bound (in a sampled id, and
/// in a top-k entry) must be reported at that position, and only there.
#[test]
fn one_logit_off_by_more_than_the_bound_fails() {
    let g = golden();
    // A perfect "ours" built from the fixture itself (unstored ids hold 0; they are not read).
    let mut ours = vec![0f32; g.positions.len() * g.vocab];
    for (i, p) in g.positions.iter().enumerate() {
        for (&id, &v) in g.sampled_ids.iter().zip(&p.sampled) {
            ours[i * g.vocab + id] = v;
        }
        for &(id, v) in &p.top {
            ours[i * g.vocab + id] = v;
        }
    }
    assert!(failures(&per_position_diff(&g, &ours), 0.0).is_empty());
    for bound in [F32_KV_BOUND, F16_KV_BOUND] {
        let (pos, id) = (7, g.sampled_ids[100]);
        let mut bad = ours.clone();
        bad[pos * g.vocab + id] += bound * 1.5;
        let f = failures(&per_position_diff(&g, &bad), bound);
        assert_eq!(f.iter().map(|x| x.0).collect::<Vec<_>>(), vec![pos]);

        let (pos, id) = (11, g.positions[11].top[3].0);
        let mut bad = ours.clone();
        bad[pos * g.vocab + id] -= bound * 1.5;
        let f = failures(&per_position_diff(&g, &bad), bound);
        assert_eq!(f.iter().map(|x| x.0).collect::<Vec<_>>(), vec![pos]);

        let mut bad = ours.clone();
        bad[3 * g.vocab + g.sampled_ids[0]] = f32::NAN;
        assert_eq!(failures(&per_position_diff(&g, &bad), bound).len(), 1);
    }
}
