//! Real models against llama.cpp (through `edgeact_oracle`): stories260K quantized by
//! `edgeact quantize` and by llama.cpp's own quantizer, each decoded by both engines (a table of
//! how many of the golden 20 greedy ids survive); `edgeact perplexity` against the same method
//! computed by llama.cpp; SmolLM2-135M-Instruct Q4_1 first-step logits of both engines.
//!
//! Run: `GGML_NO_BACKTRACE=1 cargo test --features oracle --test oracle real_models:: -- --nocapture`
#![cfg(feature = "oracle")]

use crate::stories_support;
use edgeact_oracle as oracle;
use edgeact_runtime::gguf::GgufFile;
use edgeact_runtime::model::{LlamaModel, Session, SessionOptions};
use edgeact_runtime::quant::GgmlType;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

const STORIES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../shared/models/stories260K/stories260K-f32-v3.gguf"
);
const GOLDEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/models/stories260K/golden.json");
const SMOLLM2: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/.cache/models/SmolLM2-135M-Instruct.Q4_1.gguf"
);
const TEXT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/real/tinystories.txt");
/// Perplexity context: stories260K's own context is 512; 128 gives several chunks from a
/// 3 KB text so the estimate averages over more than one evaluation.
const PPL_CTX: usize = 128;
const THREADS: usize = 2;

fn golden_ids() -> Vec<u32> {
    let text = std::fs::read_to_string(GOLDEN).expect("read golden.json");
    let v: serde_json::Value = serde_json::from_str(&text).expect("golden.json parses");
    v["first_20_generated_ids"]
        .as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect()
}

fn ours_greedy(path: &Path, prompt: &[u32], n: usize) -> Result<Vec<u32>, String> {
    let file = GgufFile::open(path).map_err(|e| e.to_string())?;
    let model = Arc::new(LlamaModel::load(Arc::new(file)).map_err(|e| e.to_string())?);
    let mut s = Session::new(model, SessionOptions::default()).map_err(|e| e.to_string())?;
    let mut logits = s.eval(prompt).map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = oracle::argmax(&logits);
        out.push(t);
        logits = s.eval(&[t]).map_err(|e| e.to_string())?;
    }
    Ok(out)
}

fn llama_greedy(path: &Path, prompt: &[u32], n: usize) -> Result<Vec<u32>, String> {
    let model = oracle::Model::load(path).map_err(|e| e.to_string())?;
    let mut ctx = oracle::Context::new(&model, 256, THREADS).map_err(|e| e.to_string())?;
    ctx.greedy(prompt, n).map_err(|e| e.to_string())
}

fn edgeact_quantize(ty: &str, out: &Path) -> Result<(), String> {
    let res = Command::new(env!("CARGO_BIN_EXE_edgeact"))
        .args(["quantize", STORIES, "-o"])
        .arg(out)
        .args(["--type", ty, "-q"])
        .output()
        .map_err(|e| e.to_string())?;
    if res.status.success() {
        Ok(())
    } else {
        let err = String::from_utf8_lossy(&res.stderr);
        Err(err.lines().last().unwrap_or("failed").to_string())
    }
}

/// "k/20" ids equal to golden, or the reason there is no figure.
fn cell(r: &Result<Vec<u32>, String>, golden: &[u32]) -> String {
    match r {
        Ok(ids) => format!("{}/20", ids.iter().zip(golden).filter(|(a, b)| a == b).count()),
        Err(e) => format!("n/a ({})", e.chars().take(60).collect::<String>()),
    }
}

/// Whether two GGUF files hold the same tensors with the same types and bytes.
fn same_tensors(a: &Path, b: &Path) -> bool {
    let (Ok(fa), Ok(fb)) = (GgufFile::open(a), GgufFile::open(b)) else {
        return false;
    };
    let ta = fa.tensors();
    ta.len() == fb.tensors().len()
        && ta
            .iter()
            .all(|info| match (fa.tensor(&info.name), fb.tensor(&info.name)) {
                (Ok(x), Ok(y)) => x.info.ty == y.info.ty && x.info.dims == y.info.dims && x.data == y.data,
                _ => false,
            })
}

#[test]
fn stories260k_quantized_greedy_table() {
    let golden = golden_ids();
    let dir = tempfile::tempdir().unwrap();
    let types = [
        ("Q8_0", "q8_0", oracle::Ftype::Q8_0),
        ("Q4_0", "q4_0", oracle::Ftype::Q4_0),
        ("Q4_K_M", "q4_k_m", oracle::Ftype::Q4KM),
    ];
    println!("stories260K, greedy from [BOS]: ids of the first 20 equal to golden.json");
    println!("| type | quantizer | edgeact engine | llama.cpp engine | tensors = llama.cpp's |");
    println!("|---|---|---|---|---|");
    let mut q8 = None;
    for (name, ours_ty, ftype) in types {
        let ours_path = dir.path().join(format!("edgeact-{ours_ty}.gguf"));
        let theirs_path = dir.path().join(format!("llamacpp-{ours_ty}.gguf"));
        let ours_made = edgeact_quantize(ours_ty, &ours_path);
        let theirs_made =
            oracle::quantize_model(Path::new(STORIES), &theirs_path, ftype, THREADS).map_err(|e| e.to_string());
        let identical = ours_made.is_ok() && theirs_made.is_ok() && same_tensors(&ours_path, &theirs_path);
        let mut rows = Vec::new();
        for (who, path, made) in [
            ("edgeact", &ours_path, &ours_made),
            ("llama.cpp", &theirs_path, &theirs_made),
        ] {
            let (by_ours, by_llama) = match made {
                Ok(()) => (ours_greedy(path, &[1], 20), llama_greedy(path, &[1], 20)),
                Err(e) => (Err(format!("not written: {e}")), Err(format!("not written: {e}"))),
            };
            println!(
                "| {name} | {who} | {} | {} | {} |",
                cell(&by_ours, &golden),
                cell(&by_llama, &golden),
                if who == "edgeact" {
                    if identical {
                        "yes"
                    } else {
                        "no"
                    }
                } else {
                    ""
                }
            );
            rows.push((by_ours, by_llama));
        }
        if name == "Q8_0" {
            q8 = Some(rows);
        }
    }
    // Q8_0 is exact on this model whoever quantizes and whoever decodes (stable: the weakest
    // first-20 margin in F32 is far above Q8_0's error).
    let q8 = q8.unwrap();
    for (i, (by_ours, by_llama)) in q8.into_iter().enumerate() {
        let who = ["edgeact", "llama.cpp"][i];
        assert_eq!(
            by_ours.expect("edgeact engine on Q8_0"),
            golden,
            "{who}-quantized Q8_0, edgeact engine"
        );
        assert_eq!(
            by_llama.expect("llama.cpp engine on Q8_0"),
            golden,
            "{who}-quantized Q8_0, llama.cpp engine"
        );
    }
}

/// Issue #6: stories260K (64-wide rows, so Q4_K_M falls back to Q5_0/Q8_0/F16 per tensor)
/// quantized to Q4_K_M by `edgeact quantize` and by `llama_model_quantize`. The tensors must be
/// byte-identical, so our engine gives the same ids on both files; prints how many of the first
/// 20 greedy ids match golden.json for each quantizer (and for the llama.cpp engine).
#[test]
fn stories260k_q4_k_m_same_bytes_and_ids_as_llama_cpp() {
    let golden = golden_ids();
    let dir = tempfile::tempdir().unwrap();
    let ours_path = dir.path().join("edgeact-q4_k_m.gguf");
    let theirs_path = dir.path().join("llamacpp-q4_k_m.gguf");
    edgeact_quantize("q4_k_m", &ours_path).expect("edgeact quantize q4_k_m");
    oracle::quantize_model(Path::new(STORIES), &theirs_path, oracle::Ftype::Q4KM, THREADS)
        .expect("llama_model_quantize Q4_K_M");
    let (fa, fb) = (
        GgufFile::open(&ours_path).unwrap(),
        GgufFile::open(&theirs_path).unwrap(),
    );
    let mut q5 = 0;
    for info in fb.tensors() {
        let (x, y) = (fa.tensor(&info.name).unwrap(), fb.tensor(&info.name).unwrap());
        assert_eq!(
            (x.info.ty, &x.info.dims),
            (y.info.ty, &y.info.dims),
            "{}: type/shape",
            info.name
        );
        assert!(x.data == y.data, "{} ({}): bytes differ", info.name, x.info.ty);
        q5 += (y.info.ty.name() == "Q5_0") as usize;
    }
    assert_eq!(fa.tensors().len(), fb.tensors().len());
    assert!(
        q5 > 0,
        "llama.cpp's Q4_K_M has no Q5_0 tensor: the fallback was not exercised"
    );
    let ours = ours_greedy(&ours_path, &[1], 20).expect("edgeact engine, edgeact file");
    let theirs = ours_greedy(&theirs_path, &[1], 20).expect("edgeact engine, llama.cpp file");
    let llama = llama_greedy(&theirs_path, &[1], 20).expect("llama.cpp engine, llama.cpp file");
    let count = |ids: &[u32]| ids.iter().zip(&golden).filter(|(a, b)| a == b).count();
    println!(
        "stories260K Q4_K_M ({q5} Q5_0 tensors), first 20 greedy ids equal to golden: edgeact-quantized {}/20, \
         llama.cpp-quantized {}/20 (edgeact engine); llama.cpp engine on llama.cpp's file {}/20",
        count(&ours),
        count(&theirs),
        count(&llama)
    );
    assert_eq!(ours, theirs, "same bytes must give the same ids");
}

/// Q5_0 and Q5_1 weights in the forward pass: our engine and llama.cpp's decode the same 20
/// greedy ids from stories260K with all 2-D weights in that type, and their logits at position
/// 0 agree to f32 summation order (no F16 tensor, and no attention mixing yet: see
/// `oracle model::`'s widened test; later positions drift by ~0.1 once llama.cpp's F16 attention
/// rounding flips an activation quant, as for every quantized type).
#[test]
fn stories260k_q5_weights_decode_as_llama_cpp() {
    let golden = golden_ids();
    let dir = tempfile::tempdir().unwrap();
    for ty in [GgmlType::Q5_0, GgmlType::Q5_1] {
        let path = dir.path().join(format!("stories-{ty}.gguf"));
        stories_support::stories_all(Path::new(STORIES), ty, &path);
        let ours = ours_greedy(&path, &[1], 20).expect("edgeact engine");
        let llama = llama_greedy(&path, &[1], 20).expect("llama.cpp engine");
        let file = GgufFile::open(&path).unwrap();
        assert_eq!(file.tensor("blk.0.attn_q.weight").unwrap().info.ty, ty);
        // Position-0 logits of both engines.
        let model = Arc::new(LlamaModel::load(Arc::new(file)).unwrap());
        let mut s = Session::new(model, SessionOptions::default()).unwrap();
        let a = s.eval(&[1]).unwrap();
        let m = oracle::Model::load(&path).unwrap();
        let mut ctx = oracle::Context::new(&m, 64, THREADS).unwrap();
        let b = ctx.eval(&[1]).unwrap();
        let diff = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
        let count = |ids: &[u32]| ids.iter().zip(&golden).filter(|(a, b)| a == b).count();
        println!(
            "stories260K all-{ty}: first 20 greedy ids equal to golden: edgeact {}/20, llama.cpp {}/20; \
             max |logit difference| at position 0 {diff:.2e}",
            count(&ours),
            count(&llama)
        );
        assert_eq!(ours, llama, "{ty}: greedy ids differ between the engines");
        assert!(diff < 1e-4, "{ty}: position-0 logits differ by {diff}");
    }
}

/// `edgeact perplexity`'s final estimate, parsed from its stdout.
fn edgeact_ppl(model: &Path) -> f64 {
    let res = Command::new(env!("CARGO_BIN_EXE_edgeact"))
        .args(["perplexity", "-m"])
        .arg(model)
        .args([
            "-f",
            TEXT,
            "--ctx",
            &PPL_CTX.to_string(),
            "--threads",
            &THREADS.to_string(),
        ])
        .output()
        .expect("spawn edgeact perplexity");
    let out = String::from_utf8_lossy(&res.stdout);
    assert!(
        res.status.success(),
        "edgeact perplexity failed: {}",
        String::from_utf8_lossy(&res.stderr)
    );
    let line = out
        .lines()
        .find(|l| l.starts_with("Final estimate: PPL = "))
        .unwrap_or_else(|| panic!("no final estimate in: {out}"));
    line["Final estimate: PPL = ".len()..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// The same method through llama.cpp: tokens with BOS, chunks of `PPL_CTX` each from an empty
/// cache with BOS as first token, the second half of each chunk scored by log-softmax in f64.
fn llama_ppl(model: &Path) -> (f64, usize) {
    let text = std::fs::read_to_string(TEXT).expect("read fixture");
    let m = oracle::Model::load(model).expect("llama.cpp loads the model");
    let tokens = m.tokenize(&text, true, false).unwrap();
    let n_vocab = m.n_vocab();
    let mut ctx = oracle::Context::new(&m, PPL_CTX, THREADS).unwrap();
    let n_chunks = tokens.len() / PPL_CTX;
    assert!(n_chunks >= 2, "fixture too short: {} tokens", tokens.len());
    let (mut sum, mut count) = (0f64, 0usize);
    for c in 0..n_chunks {
        let mut chunk = tokens[c * PPL_CTX..(c + 1) * PPL_CTX].to_vec();
        chunk[0] = m.bos();
        ctx.clear();
        let logits = ctx.eval_all(&chunk).unwrap();
        for j in PPL_CTX / 2..PPL_CTX - 1 {
            let row = &logits[j * n_vocab..(j + 1) * n_vocab];
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
            let lse = row.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln() + max;
            sum += lse - row[chunk[j + 1] as usize] as f64;
            count += 1;
        }
    }
    ((sum / count as f64).exp(), tokens.len())
}

#[test]
fn stories260k_perplexity_matches_llama_cpp() {
    let dir = tempfile::tempdir().unwrap();
    let q8 = dir.path().join("edgeact-q8_0.gguf");
    edgeact_quantize("q8_0", &q8).expect("edgeact quantize q8_0");
    for (name, path) in [("F32", PathBuf::from(STORIES)), ("Q8_0 (edgeact quantize)", q8)] {
        let ours = edgeact_ppl(&path);
        let (theirs, n_tokens) = llama_ppl(&path);
        let rel = (ours - theirs).abs() / theirs;
        println!(
            "stories260K {name}, {n_tokens} tokens, ctx {PPL_CTX}: edgeact PPL {ours:.4}, llama.cpp PPL {theirs:.4} \
             ({:.3} % apart)",
            rel * 100.0
        );
        assert!(
            rel <= 0.005,
            "{name}: perplexity {ours} vs llama.cpp {theirs} differ by more than 0.5 %"
        );
    }
}

#[test]
fn smollm2_q4_1_first_step_logits_vs_llama_cpp() {
    let path = PathBuf::from(SMOLLM2);
    if !path.is_file() {
        eprintln!("skipped: {SMOLLM2} is absent; run scripts/fetch-smollm2.sh first");
        return;
    }
    let prompt = [504u32, 3575, 282, 4649, 314];
    let m = oracle::Model::load(&path).unwrap();
    let mut ctx = oracle::Context::new(&m, 64, THREADS).unwrap();
    let theirs = ctx.eval(&prompt).unwrap();
    let file = GgufFile::open(&path).unwrap();
    let model = Arc::new(LlamaModel::load(Arc::new(file)).unwrap());
    let mut s = Session::new(model, SessionOptions::default()).unwrap();
    let ours = s.eval(&prompt).unwrap();
    let max_diff = ours
        .iter()
        .zip(&theirs)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    let mut order: Vec<usize> = (0..theirs.len()).collect();
    order.sort_by(|&a, &b| theirs[b].total_cmp(&theirs[a]));
    let mut top5_diff = 0f32;
    for &i in &order[..5] {
        println!(
            "SmolLM2 step 0: id {i}: llama.cpp {:.4} edgeact {:.4}",
            theirs[i], ours[i]
        );
        top5_diff = top5_diff.max((theirs[i] - ours[i]).abs());
    }
    println!(
        "SmolLM2 step 0: max |Δlogit| top-5 {top5_diff:.4}, over all {} logits {max_diff:.4}",
        ours.len()
    );
    // The F32 KV cache shows how much of the gap is the cache's F16 rounding (printed only).
    let mut s32 = Session::new(
        s.model().clone(),
        SessionOptions {
            kv_type: edgeact_runtime::model::KvType::F32,
            ..Default::default()
        },
    )
    .unwrap();
    let ours32 = s32.eval(&prompt).unwrap();
    let max32 = ours32
        .iter()
        .zip(&theirs)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    println!("SmolLM2 step 0 with edgeact's F32 KV cache: max |Δlogit| over all logits {max32:.4}");
    let mut ctx2 = oracle::Context::new(&m, 64, THREADS).unwrap();
    let g_theirs = ctx2.greedy(&prompt, 12).unwrap();
    let mut g_ours = Vec::new();
    let mut logits = ours;
    for _ in 0..12 {
        let t = oracle::argmax(&logits);
        g_ours.push(t);
        logits = s.eval(&[t]).unwrap();
    }
    println!("SmolLM2 greedy: llama.cpp {g_theirs:?}\n                edgeact   {g_ours:?}");
    // Both engines quantize activations (Q8_1/Q8_0) but differ in summation order and in how
    // attention rounds Q and the softmax weights (ggml converts them to F16 for the F16 KV dot
    // products); on this small Q4_1 model that moves top logits by up to ~0.35 (measured 0.34),
    // the same order as the 0.37 `oracle model::` measures on stories260K Q8_0. A wrong op moves
    // them by whole units and changes the argmax.
    assert_eq!(g_ours, g_theirs, "greedy continuations differ");
    assert!(
        top5_diff <= 0.5,
        "SmolLM2 top-5 logits differ from llama.cpp by {top5_diff}"
    );
}
