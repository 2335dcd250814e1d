//! Parity of the Llama forward pass with llama.cpp (through `edgeact_oracle`) on the same GGUF
//! files: greedy decoding must agree token for token and every position's logits must agree
//! within a stated bound.
//!
//! - stories260K (a real, trained 64-wide model) in F32, and llama.cpp's own Q8_0 / Q4_0
//!   quantizations of it (so the quantized matmul paths are compared on real weights);
//! - the converter tests' tiny random checkpoint, as is and sharpened (`hf_golden_support`),
//!   converted from safetensors by *our* converter to F16, Q8_0, Q4_0 and Q4_K_M.
//!
//! How far two correct implementations can be apart is measured here rather than guessed: every
//! check also prints llama.cpp's own spread, its logits for the same tokens evaluated as one
//! batch versus one token at a time (different matmul kernels and attention summation order,
//! the same weights). The quantized models amplify tiny float differences: once an activation
//! lands on the other side of a Q8 rounding boundary, stories260K's logits move by ~0.1, and
//! later positions inherit it through the KV cache. Where our logits differ from llama.cpp's and why:
//! - ggml rounds the activations of F16-weight matmuls to F16 (`vec_dot_type` F16); we keep
//!   them in f32. Llama.cpp's Q8_0/Q4_0 mixes keep stories260K's ffn_down (172 columns) in F16,
//!   which alone moved position 0 by 0.16; with those tensors widened to F32 position 0 agrees
//!   to 2.4e-6 (`widened_quantized_models_agree_before_attention`).
//! - llama.cpp's CPU flash attention rounds Q to F16 and accumulates softmax·V in an F16
//!   buffer; we use f32. This is ~1e-6 relative, but after a few positions it flips an
//!   activation quant (the same happens between llama.cpp's own batch and single-token runs).
//! - Activation quantization itself is identical: we quantize activations exactly as ggml's
//!   x86 CPU backend (`quant::legacy::quantize_act_q8_0`, checked byte for byte below).
//!
//! Run: `GGML_NO_BACKTRACE=1 cargo test --features oracle --test oracle model::`
#![cfg(feature = "oracle")]

use crate::convert_support;
use crate::hf_golden_support;

use edgeact_oracle as oracle;
use edgeact_quantize::{GgufWriter, Mix};
use edgeact_runtime::gguf::GgufFile;
use edgeact_runtime::model::{LlamaModel, Session, SessionOptions};
use edgeact_runtime::quant::{quantize_row_q8_0, quantize_row_q8_1, BlockQ8_0, BlockQ8_1, GgmlType};
use std::io::Write;
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

/// Largest |a - b| at each position (NaN if either side has one).
fn per_position(a: &[f32], b: &[f32], n_vocab: usize) -> Vec<f32> {
    assert_eq!(a.len(), b.len());
    a.chunks(n_vocab)
        .zip(b.chunks(n_vocab))
        .map(|(x, y)| {
            x.iter().zip(y).map(|(p, q)| (p - q).abs()).fold(0.0, |m: f32, d| {
                if d.is_nan() || m.is_nan() {
                    f32::NAN
                } else {
                    m.max(d)
                }
            })
        })
        .collect()
}

fn worst(d: &[f32]) -> f32 {
    d.iter().copied().fold(
        0.0,
        |m: f32, x| if x.is_nan() || m.is_nan() { f32::NAN } else { m.max(x) },
    )
}

/// Per-position differences: (ours vs llama.cpp batch, llama.cpp batch vs one token at a time).
fn diffs(path: &Path, tokens: &[u32]) -> (Vec<f32>, Vec<f32>) {
    let model = oracle::Model::load(path).unwrap();
    let n_vocab = model.n_vocab();
    let mut ctx = oracle::Context::new(&model, 512, 1).unwrap();
    let batch = ctx.eval_all(tokens).unwrap();
    ctx.clear();
    let single: Vec<f32> = tokens.iter().flat_map(|&t| ctx.eval(&[t]).unwrap()).collect();
    let mine = ours(path).eval_all_logits(tokens).unwrap();
    (
        per_position(&mine, &batch, n_vocab),
        per_position(&batch, &single, n_vocab),
    )
}

/// The sequence both implementations score: BOS plus llama.cpp's own greedy continuation.
fn reference_tokens(path: &Path, n: usize) -> Vec<u32> {
    let model = oracle::Model::load(path).unwrap();
    let mut ctx = oracle::Context::new(&model, 512, 1).unwrap();
    let mut toks = vec![1];
    toks.extend(ctx.greedy(&[1], n).unwrap());
    toks
}

/// Bounds on max |Δlogit| against llama.cpp: at position 0 (no attention mixing yet) and at
/// every position.
#[derive(Clone, Copy)]
struct Bound {
    pos0: f32,
    all: f32,
}

fn check_logits(path: &Path, what: &str, n: usize, bound: Bound) {
    let tokens = reference_tokens(path, n);
    let (d, spread) = diffs(path, &tokens);
    eprintln!(
        "{what}: max |Δlogit| vs llama.cpp: position 0 {:.2e}, worst of {} positions {:.2e} \
         (llama.cpp batch vs single-token: {:.2e})",
        d[0],
        tokens.len(),
        worst(&d),
        worst(&spread)
    );
    assert!(
        d[0] <= bound.pos0,
        "{what}: position 0: max |Δlogit| {} > {}",
        d[0],
        bound.pos0
    );
    for (i, x) in d.iter().enumerate() {
        assert!(
            *x <= bound.all,
            "{what}: position {i}: max |Δlogit| {x} > {}",
            bound.all
        );
    }
}

/// Greedy 64 tokens from BOS must be identical. On a mismatch the message says by how much
/// llama.cpp preferred its own token at the first differing step, which tells a near-tie
/// (within the logit bounds) from a real defect.
fn check_greedy(path: &Path, what: &str) {
    let model = oracle::Model::load(path).unwrap();
    let mut ctx = oracle::Context::new(&model, 512, 1).unwrap();
    let theirs = ctx.greedy(&[1], 64).unwrap();
    let mine = our_greedy(&mut ours(path), &[1], 64);
    if let Some(i) = mine.iter().zip(&theirs).position(|(a, b)| a != b) {
        ctx.clear();
        let mut prefix = vec![1];
        prefix.extend(&theirs[..i]);
        let l = ctx.eval(&prefix).unwrap();
        let margin = l[theirs[i] as usize] - l[mine[i] as usize];
        panic!(
            "{what}: greedy differs at step {i}: ours {} llama.cpp {}; llama.cpp's logit margin for its \
             token is {margin:.3e}\n ours   {mine:?}\n theirs {theirs:?}",
            mine[i], theirs[i]
        );
    }
    assert_eq!(mine, theirs, "{what}: greedy 64 tokens differ (length)");
}

/// F32 weights, F16 KV cache on both sides. Logits are ~±20; the two differ only by f32
/// summation order and by llama.cpp's flash attention rounding Q and the softmax·V sum to F16:
/// measured 2.9e-6 at position 0 and 9.6e-3 worst over 201 positions (llama.cpp batch vs
/// single-token: 2.6e-2); bound 1e-4 at position 0 and 2e-2 overall.
#[test]
fn f32_model_matches_llama_cpp() {
    check_greedy(&stories(), "stories F32");
    check_logits(&stories(), "stories F32", 200, Bound { pos0: 1e-4, all: 2e-2 });
}

/// llama.cpp quantizes the model (ffn_down, 172 columns, stays F16); both then run the same
/// quantized weights. Greedy decoding must agree token for token. Logits, worst over 201
/// positions: measured 0.374 (Q8_0) and 0.344 (Q4_0) with the AVX-512 kernels, 0.409 / 0.352
/// with the scalar ones; llama.cpp's own batch vs single-token spread on the same file is 0.40
/// and 0.43, i.e. the two implementations are as far apart as llama.cpp is from itself, and no
/// tighter bound can be justified for this model (it is what one activation quant rounded
/// differently does to a 64-wide model; the tiny models below are held far tighter). Position
/// 0 differs by 0.16 / 0.26 only because ggml rounds ffn_down's input to F16 (see the widened
/// test). Bound 0.5, 1.15x llama.cpp's own spread: a wrong block layout or scale moves logits
/// by whole units and breaks greedy agreement at once.
#[test]
fn quantized_models_match_llama_cpp() {
    let dir = tempfile::tempdir().unwrap();
    for (ftype, name) in [(oracle::Ftype::Q8_0, "q8_0"), (oracle::Ftype::Q4_0, "q4_0")] {
        let out = dir.path().join(format!("stories-{name}.gguf"));
        oracle::quantize_model(&stories(), &out, ftype, 1).unwrap();
        check_greedy(&out, &format!("stories {name}"));
        check_logits(&out, &format!("stories {name}"), 200, Bound { pos0: 0.5, all: 0.5 });
    }
}

/// Rewrites `src` with every F16 tensor stored as F32 (exactly), so that neither side rounds
/// those matmuls' activations to F16.
fn widen_f16(src: &Path, dst: &Path) {
    let f = GgufFile::open(src).unwrap();
    let mut w = GgufWriter::new();
    for (k, v) in f.metadata() {
        if k != "general.alignment" {
            w.set(k.clone(), v.clone()).unwrap();
        }
    }
    for t in f.tensors() {
        let ty = if t.ty == GgmlType::F16 { GgmlType::F32 } else { t.ty };
        w.add_tensor(t.name.clone(), &t.dims, ty).unwrap();
    }
    w.write_file(dst, &[src], |_, decl, sink| -> std::io::Result<()> {
        let t = f.tensor(&decl.name).unwrap();
        if t.info.ty == GgmlType::F16 {
            for c in t.data.chunks_exact(2) {
                let x = half::f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32();
                sink.write_all(&x.to_le_bytes())?;
            }
        } else {
            sink.write_all(t.data)?;
        }
        Ok(())
    })
    .unwrap();
}

/// The quantized stories models with their F16 tensors widened to F32: position 0 (no
/// attention mixing) then differs only by f32 summation order inside the quantized matmuls,
/// measured 2.4e-6 (Q8_0) and 1.9e-6 (Q4_0) on logits of ~±20, against 0.16 / 0.26 before
/// widening. Bound 1e-4: an activation quant rounded differently moves this model's logits by
/// ~0.1 (the first one, at position 6 of the widened Q8_0 run, by 0.15), so this checks that
/// our Q8_0 activations and integer dot products equal ggml's. Later
/// positions: measured 0.31 / 0.29 (AVX-512), 0.34 / 0.29 (scalar); llama.cpp's own spread
/// 0.44 / 0.36; bound 0.5 as above.
#[test]
fn widened_quantized_models_agree_before_attention() {
    let dir = tempfile::tempdir().unwrap();
    for (ftype, name) in [(oracle::Ftype::Q8_0, "q8_0"), (oracle::Ftype::Q4_0, "q4_0")] {
        let q = dir.path().join(format!("stories-{name}.gguf"));
        oracle::quantize_model(&stories(), &q, ftype, 1).unwrap();
        let wide = dir.path().join(format!("stories-{name}-wide.gguf"));
        widen_f16(&q, &wide);
        check_greedy(&wide, &format!("stories {name} widened"));
        check_logits(
            &wide,
            &format!("stories {name} widened"),
            200,
            Bound { pos0: 1e-4, all: 0.5 },
        );
    }
}

/// The tiny checkpoint (plain or sharpened) converted by our converter to each issue-#3 type.
fn tiny_models(dir: &Path, sharpened: bool) -> Vec<(Mix, PathBuf)> {
    let mixes = [Mix::F16, Mix::Q8_0, Mix::Q4_0, Mix::Q4KM];
    if sharpened {
        return hf_golden_support::sharpened_ggufs(dir, &mixes);
    }
    let ck = dir.join("ck");
    std::fs::create_dir(&ck).unwrap();
    convert_support::write_checkpoint(&ck, false, None);
    convert_support::convert_to_mixes(&ck, dir, &mixes)
}

/// Issue #3 item 7: the converter tests' tiny random checkpoint (2 layers, 256 wide, vocabulary
/// 32000) converted from safetensors by our converter to F16, Q8_0, Q4_0 and Q4_K_M. Greedy 64
/// tokens identical to llama.cpp's, every position's logits within the bounds below.
///
/// Its logits are small (±0.068) and nearly flat: llama.cpp's top-2 gap along its greedy path
/// is never below 9.9e-5 (Q4_K_M) to 1.8e-4 (F16), while the two implementations differ by
/// less than half that, so greedy agreement is meaningful. The bounds are llama.cpp's own
/// batch vs single-token spread on the same file, rounded up (measured: F16 1.3e-5, Q8_0
/// 2.6e-4, Q4_0 and Q4_K_M 2.0e-4); for F16 that spread is also what ggml's rounding of the
/// matmul inputs to F16 gives: 2^-11 of logits of 0.068 = 3.3e-5.
#[test]
fn tiny_converted_models_match_llama_cpp() {
    let dir = tempfile::tempdir().unwrap();
    for (mix, path) in tiny_models(dir.path(), false) {
        // Position 0 of the quantized models: the same integer dot products, only f32 summation
        // order differs (measured 1.1e-8 to 2.1e-8; bound 1e-6, well below the ~5e-5 that an
        // activation quant rounded differently causes here, as at Q8_0's worst position). All
        // positions: measured F16 1.4e-5, Q8_0 4.8e-5, Q4_0 2.6e-8, Q4_K_M 1.1e-6.
        let bound = match mix {
            Mix::F16 => Bound {
                pos0: 3.3e-5,
                all: 3.3e-5,
            },
            _ => Bound { pos0: 1e-6, all: 3e-4 },
        };
        check_greedy(&path, &format!("tiny {mix}"));
        check_logits(&path, &format!("tiny {mix}"), 64, bound);
    }
}

/// The same checkpoint sharpened (`hf_golden_support`: logits ±2.2, attention scores of a few
/// units), so attention and the quantized matmuls' rounding matter as in a real model. Greedy
/// is not compared: this random model has near-ties (llama.cpp's top-2 gap 7e-3 to 1.6e-2 where
/// Q4_0 / Q4_K_M paths part) that are within both implementations' quantization noise; F16
/// and Q8_0 happen to agree for 64 tokens. Logit bounds as above, from llama.cpp's own spread
/// (measured: F16 9.1e-3, Q8_0 6.4e-2, Q4_0 7.3e-2, Q4_K_M 0.10).
#[test]
fn tiny_sharpened_models_match_llama_cpp() {
    let dir = tempfile::tempdir().unwrap();
    for (mix, path) in tiny_models(dir.path(), true) {
        // Position 0: F16 measured 1.15e-3 (ggml's F16 rounding of matmul inputs, 2^-11 of
        // logits of 2.2 is 1.1e-3 per layer's worth; bound 3e-3); quantized 3.6e-7 to 4.8e-7
        // (f32 summation order only; bound 1e-5). All positions: measured F16 7.8e-3, Q8_0
        // 3.4e-2, Q4_0 4.6e-2, Q4_K_M 3.9e-2.
        let bound = match mix {
            Mix::F16 => Bound {
                pos0: 3e-3,
                all: 1.5e-2,
            },
            Mix::Q8_0 | Mix::Q4_0 => Bound { pos0: 1e-5, all: 0.1 },
            _ => Bound { pos0: 1e-5, all: 0.15 },
        };
        check_logits(&path, &format!("tiny sharpened {mix}"), 64, bound);
    }
}

/// Our activation quantizers (Q8_0 for Q4_0/Q8_0 weights, Q8_1 for Q4_1) produce exactly the
/// bytes of ggml's CPU `from_float` on this machine, on rows of several scales and on rows
/// built to hit rounding ties (where the reference quantizer's `roundf` would differ).
#[test]
fn activation_quantizers_equal_ggml_cpu() {
    let mut s = 0x243F_6A88_85A3_08D3u64;
    let mut rnd = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    };
    let n = 32 * 4096;
    let mut rows: Vec<Vec<f32>> = [1.0f32, 1e-3, 37.0, 1e4]
        .iter()
        .map(|&scale| (0..n).map(|_| (rnd() + rnd() + rnd()) * scale).collect())
        .collect();
    // Ties: amax 127 in every block (d = id = 1) and halves everywhere else.
    rows.push(
        (0..n)
            .map(|i| {
                if i % 32 == 0 {
                    127.0
                } else {
                    ((rnd() * 250.0) as i32) as f32 + 0.5
                }
            })
            .collect(),
    );
    // All-zero and single-value blocks.
    rows.push(
        (0..n)
            .map(|i| if i % 64 < 32 { 0.0 } else { (i % 64 == 40) as u8 as f32 })
            .collect(),
    );
    for x in &rows {
        let mut q0 = vec![
            BlockQ8_0 {
                d: half::f16::ZERO,
                qs: [0; 32]
            };
            n / 32
        ];
        quantize_row_q8_0(x, &mut q0).unwrap();
        let ours: Vec<u8> = q0
            .iter()
            .flat_map(|b| b.d.to_le_bytes().into_iter().chain(b.qs.iter().map(|&q| q as u8)))
            .collect();
        assert!(
            ours == oracle::from_float(GgmlType::Q8_0.id(), x).unwrap(),
            "Q8_0 activations differ from ggml's"
        );

        let mut q1 = vec![
            BlockQ8_1 {
                d: half::f16::ZERO,
                s: half::f16::ZERO,
                qs: [0; 32]
            };
            n / 32
        ];
        quantize_row_q8_1(x, &mut q1).unwrap();
        let ours: Vec<u8> = q1
            .iter()
            .flat_map(|b| {
                b.d.to_le_bytes()
                    .into_iter()
                    .chain(b.s.to_le_bytes())
                    .chain(b.qs.iter().map(|&q| q as u8))
            })
            .collect();
        assert!(
            ours == oracle::from_float(GgmlType::Q8_1.id(), x).unwrap(),
            "Q8_1 activations differ from ggml's"
        );
    }
}
