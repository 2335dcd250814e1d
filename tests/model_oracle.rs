//! Parity of the Llama forward pass with llama.cpp (through `edgeact_oracle`) on the same GGUF
//! files: the real stories260K model in F32, and llama.cpp's own Q8_0 / Q4_0 quantizations of
//! it (so the quantized matmul paths are compared on real weights).
//!
//! Run: `GGML_NO_BACKTRACE=1 cargo test --features oracle --test model_oracle`
#![cfg(feature = "oracle")]

use edgeact_oracle as oracle;
use edgeact_runtime::gguf::GgufFile;
use edgeact_runtime::model::{LlamaModel, Session, SessionOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn stories() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/models/stories260K/stories260K-f32-v3.gguf")
}

fn ours(path: &Path) -> Session {
    let file = Arc::new(GgufFile::open(path).unwrap());
    let model = Arc::new(LlamaModel::load(file).unwrap());
    Session::new(model, SessionOptions::default()).unwrap()
}

fn argmax(x: &[f32]) -> u32 {
    oracle::argmax(x)
}

/// Greedy decoding with our session, stopping at EOS (id 2) like the oracle's `greedy`.
fn our_greedy(s: &mut Session, prompt: &[u32], n: usize) -> Vec<u32> {
    let mut logits = s.eval(prompt).unwrap();
    let mut out = Vec::new();
    for _ in 0..n {
        let t = argmax(&logits);
        out.push(t);
        if t == 2 {
            break;
        }
        logits = s.eval(&[t]).unwrap();
    }
    out
}

/// Largest |ours - llama.cpp| logit difference at each position of `tokens`.
fn per_position_diff(path: &Path, tokens: &[u32]) -> Vec<f32> {
    let model = oracle::Model::load(path).unwrap();
    let mut ctx = oracle::Context::new(&model, 512, 1).unwrap();
    let theirs = ctx.eval_all(tokens).unwrap();
    let mine = ours(path).eval_all_logits(tokens).unwrap();
    assert_eq!(theirs.len(), mine.len());
    let n_vocab = mine.len() / tokens.len();
    (0..tokens.len())
        .map(|i| {
            let r = i * n_vocab..(i + 1) * n_vocab;
            mine[r.clone()]
                .iter()
                .zip(&theirs[r])
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max)
        })
        .collect()
}

/// The sequence both implementations score: BOS plus llama.cpp's own greedy story.
fn reference_tokens(path: &Path, n: usize) -> Vec<u32> {
    let model = oracle::Model::load(path).unwrap();
    let mut ctx = oracle::Context::new(&model, 512, 1).unwrap();
    let mut toks = vec![1];
    toks.extend(ctx.greedy(&[1], n).unwrap());
    toks
}

fn check(path: &Path, bound: f32) {
    let model = oracle::Model::load(path).unwrap();
    let mut ctx = oracle::Context::new(&model, 512, 1).unwrap();
    let theirs = ctx.greedy(&[1], 64).unwrap();
    let mine = our_greedy(&mut ours(path), &[1], 64);
    assert_eq!(mine, theirs, "greedy 64 tokens differ on {}", path.display());

    let tokens = reference_tokens(path, 200);
    let diffs = per_position_diff(path, &tokens);
    let worst = diffs.iter().copied().fold(0.0, f32::max);
    eprintln!(
        "{}: worst per-position max |Δlogit| over {} positions = {worst:.2e}",
        path.display(),
        tokens.len()
    );
    for (i, d) in diffs.iter().enumerate() {
        assert!(
            *d <= bound,
            "position {i}: max |Δlogit| {d} > {bound} ({})",
            path.display()
        );
    }
}

/// F32 weights, F16 KV cache on both sides. Logits are ~±20; the two differ only by f32
/// summation order and by where K/V are rounded to F16: measured 3e-6 at position 0 (no
/// attention mixing yet) and 9.6e-3 worst over 201 positions; bound 2e-2.
#[test]
fn f32_model_matches_llama_cpp() {
    check(&stories(), 2e-2);
}

/// llama.cpp quantizes the model (ffn_down, 172 columns, stays F16); both then run the same
/// quantized weights. Greedy decoding must agree token for token. Logits: one Q8_0 row dot
/// equals ggml's `vec_dot` to 1e-6 and the F16 model agrees to 1.5e-2, yet the quantized
/// models differ by up to 0.37 (measured, 201 positions) against a quantization effect of
/// ~0.2 itself: in this 64-wide model one activation rounding flipped differently (llama.cpp
/// repacks Q4_0/Q8_0 for AVX2 and quantizes activations in its own layout) moves logits by
/// ~1e-1. The bound 0.5 still catches real defects (a wrong block layout or scale moves logits
/// by whole units and breaks greedy agreement within a few tokens).
#[test]
fn quantized_models_match_llama_cpp() {
    let dir = tempfile::tempdir().unwrap();
    for (ftype, name, bound) in [
        (oracle::Ftype::Q8_0, "q8_0", 0.5f32),
        (oracle::Ftype::Q4_0, "q4_0", 0.5),
    ] {
        let out = dir.path().join(format!("stories-{name}.gguf"));
        oracle::quantize_model(&stories(), &out, ftype, 1).unwrap();
        let file = GgufFile::open(&out).unwrap();
        let types: Vec<String> = file
            .tensors()
            .iter()
            .map(|t| format!("{}:{}", t.name, t.ty.name()))
            .collect();
        eprintln!("{name}: {}", types.join(" "));
        check(&out, bound);
    }
}
