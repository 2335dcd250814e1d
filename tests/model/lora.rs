//! Issue #14 item 2: LoRA adapters applied at load (`LlamaModel::apply_lora`, `--lora`), in
//! llama.cpp's GGUF adapter format.
//!
//! The sharpened tiny checkpoint (`hf_golden_support`) is converted to F32, F16, Q8_0 and Q4_0
//! GGUF; adapters with random A and B are written here straight through the GGUF writer (the
//! layout llama.cpp's `convert_lora_to_gguf.py` writes: `<base>.lora_a` of ggml dims
//! `[n_in, r]`, `<base>.lora_b` of `[r, n_out]`, `adapter.lora.alpha`). The reference is a copy
//! of the base GGUF whose adapted matrices the test merged itself in f64 (`W + s·B·A`, written
//! F32): the adapter applied at load must give that model's logits.
//!
//! Run: `cargo test --test lora_runtime`

use crate::convert_support;
use crate::hf_golden_support;
use crate::lora_adapter_support;
use crate::lora_support;

use convert_support::{weights, FF, HEAD_DIM, HIDDEN, KV_HEADS, VOCAB};
use edgeact_quantize::{GgufWriter, Mix};
use edgeact_runtime::gguf::GgufFile;
use edgeact_runtime::model::{
    Activations, KvType, LlamaModel, Logits, LoraAdapter, MultiSession, RepackChoice, SeqChunk, Session, SessionOptions,
};
use edgeact_runtime::quant::GgmlType;
use lora_adapter_support::{adapter_pairs, encode, pair, write_adapter, write_merged};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};

const TOKENS: [u32; 12] = [1, 450, 4996, 17354, 1701, 29916, 432, 17204, 975, 278, 17366, 11203];

/// The converted base models, made once for all tests.
struct Bases {
    _dir: tempfile::TempDir,
    dir: PathBuf,
}

fn bases() -> &'static Bases {
    static BASES: OnceLock<Bases> = OnceLock::new();
    BASES.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        hf_golden_support::sharpened_ggufs(dir.path(), &[Mix::F32, Mix::F16, Mix::Q8_0, Mix::Q4_0]);
        Bases {
            dir: dir.path().to_path_buf(),
            _dir: dir,
        }
    })
}

fn base(mix: Mix) -> PathBuf {
    bases().dir.join(format!("tiny-{mix}.gguf"))
}

fn load(path: &Path) -> LlamaModel {
    LlamaModel::load(Arc::new(GgufFile::open(path).unwrap())).unwrap()
}

fn opts(activations: Activations) -> SessionOptions {
    SessionOptions {
        threads: 2,
        kv_type: KvType::F32,
        activations,
        ..SessionOptions::default()
    }
}

fn logits(model: LlamaModel, activations: Activations) -> Vec<f32> {
    Session::new(Arc::new(model), opts(activations))
        .unwrap()
        .eval_all_logits(&TOKENS)
        .unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(
        0.0,
        |m: f32, d| if d.is_nan() || m.is_nan() { f32::NAN } else { m.max(d) },
    )
}

/// Adapter applied at load vs the merged model, both run with `activations`.
fn applied_vs_merged(mix: Mix, ty: GgmlType, activations: Activations, bound: f32) {
    let tmp = tempfile::tempdir().unwrap();
    let pairs = adapter_pairs(100);
    let (alpha, user) = (Some(16.0), 0.75);
    let adapter_path = tmp.path().join("adapter.gguf");
    write_adapter(&adapter_path, &pairs, alpha, ty);
    let merged_path = tmp.path().join("merged.gguf");
    write_merged(&base(mix), &merged_path, &[(&pairs, alpha, user, ty)]);

    let mut model = load(&base(mix));
    let adapter = LoraAdapter::open(&adapter_path).unwrap();
    assert_eq!(model.apply_lora(&adapter, user).unwrap(), pairs.len());
    assert!(model.has_lora());
    let ours = logits(model, activations);
    let merged = logits(load(&merged_path), activations);
    let plain = logits(load(&base(mix)), activations);
    let d = max_diff(&ours, &merged);
    let effect = max_diff(&plain, &merged);
    eprintln!("{mix} base, {ty} adapter, {activations} activations: max |applied - merged| = {d:.3e} (adapter moves logits by {effect:.3})");
    assert!(effect > 0.05, "the adapter should change the logits (moved {effect})");
    assert!(
        d <= bound,
        "{mix}/{ty}: applied at load differs from merged by {d} > {bound}"
    );
}

#[test]
fn f32_base_applied_equals_merged() {
    applied_vs_merged(Mix::F32, GgmlType::F32, Activations::Quantized, 1e-4);
    applied_vs_merged(Mix::F32, GgmlType::F16, Activations::Quantized, 1e-4);
}

#[test]
fn f16_and_q8_0_bases_applied_equal_merged() {
    // F16 weights keep f32 activations in both arithmetics; the Q8_0 base is compared with f32
    // activations, where its dequantized weights are exactly the merged file's.
    applied_vs_merged(Mix::F16, GgmlType::F32, Activations::Quantized, 1e-4);
    applied_vs_merged(Mix::Q8_0, GgmlType::F16, Activations::F32, 1e-4);
    applied_vs_merged(Mix::Q4_0, GgmlType::F32, Activations::F32, 1e-4);
}

#[test]
fn scale_zero_is_the_base_exactly_and_alpha_missing_means_user_scale() {
    let tmp = tempfile::tempdir().unwrap();
    let pairs = adapter_pairs(7);
    let path = tmp.path().join("a.gguf");
    write_adapter(&path, &pairs, Some(32.0), GgmlType::F32);
    let mut model = load(&base(Mix::F32));
    model.apply_lora(&LoraAdapter::open(&path).unwrap(), 0.0).unwrap();
    let plain = logits(load(&base(Mix::F32)), Activations::Quantized);
    assert_eq!(
        logits(model, Activations::Quantized),
        plain,
        "scale 0 must leave the base exactly"
    );

    // No alpha: the scale is the user's, not divided by r.
    let no_alpha = tmp.path().join("no-alpha.gguf");
    write_adapter(&no_alpha, &pairs, None, GgmlType::F32);
    let adapter = LoraAdapter::open(&no_alpha).unwrap();
    assert_eq!(adapter.alpha(), 0.0);
    assert_eq!(adapter.scale_for(8, 0.5), 0.5);
    let with_alpha = LoraAdapter::open(&path).unwrap();
    assert_eq!(with_alpha.scale_for(8, 0.5), 0.5 * 32.0 / 8.0);
    let merged = tmp.path().join("merged.gguf");
    write_merged(&base(Mix::F32), &merged, &[(&pairs, None, 0.5, GgmlType::F32)]);
    let mut model = load(&base(Mix::F32));
    model.apply_lora(&adapter, 0.5).unwrap();
    let d = max_diff(
        &logits(model, Activations::Quantized),
        &logits(load(&merged), Activations::Quantized),
    );
    assert!(d <= 1e-4, "no-alpha adapter: {d}");
}

#[test]
fn two_adapters_add_up() {
    let tmp = tempfile::tempdir().unwrap();
    let first = adapter_pairs(300);
    // The second adapts some of the same matrices and others.
    let second = vec![
        pair("blk.0.attn_q.weight", 4, HIDDEN, HIDDEN, 400),
        pair("blk.1.attn_v.weight", 4, HIDDEN, KV_HEADS * HEAD_DIM, 401),
        pair("blk.1.ffn_gate.weight", 4, HIDDEN, FF, 402),
    ];
    let (p1, p2) = (tmp.path().join("one.gguf"), tmp.path().join("two.gguf"));
    write_adapter(&p1, &first, Some(16.0), GgmlType::F32);
    write_adapter(&p2, &second, Some(8.0), GgmlType::F16);
    let merged = tmp.path().join("merged.gguf");
    write_merged(
        &base(Mix::F32),
        &merged,
        &[
            (&first, Some(16.0), 1.0, GgmlType::F32),
            (&second, Some(8.0), -0.5, GgmlType::F16),
        ],
    );
    let mut model = load(&base(Mix::F32));
    model.apply_lora(&LoraAdapter::open(&p1).unwrap(), 1.0).unwrap();
    model.apply_lora(&LoraAdapter::open(&p2).unwrap(), -0.5).unwrap();
    let d = max_diff(
        &logits(model, Activations::Quantized),
        &logits(load(&merged), Activations::Quantized),
    );
    eprintln!("two adapters: max |applied - merged| = {d:.3e}");
    assert!(d <= 1e-4, "two adapters: {d}");
}

#[test]
fn repacked_q4_0_base_with_adapter() {
    let tmp = tempfile::tempdir().unwrap();
    let pairs = adapter_pairs(500);
    let path = tmp.path().join("a.gguf");
    write_adapter(&path, &pairs, Some(16.0), GgmlType::F32);
    let adapter = LoraAdapter::open(&path).unwrap();
    let with = |repack: bool, lora: bool| {
        let mut m = load(&base(Mix::Q4_0));
        if lora {
            m.apply_lora(&adapter, 1.0).unwrap();
        }
        if repack {
            m.repack(RepackChoice::All, 2, &mut |_, _| {}).unwrap();
        }
        logits(m, Activations::Quantized)
    };
    let mapped = with(false, true);
    let repacked = with(true, true);
    let plain_repacked = with(true, false);
    let d = max_diff(&mapped, &repacked);
    let effect = max_diff(&repacked, &plain_repacked);
    eprintln!("Q4_0 + adapter: max |repacked - mapped| = {d:.3e}, adapter effect {effect:.3}");
    assert!(
        effect > 0.05,
        "the adapter must act on the repacked model too ({effect})"
    );
    // The repacked kernels give the mapped ones' results (tests/model_repack.rs); the
    // adapter's terms are the same f32 matmuls in both.
    assert!(d <= 1e-3, "repacked vs mapped with adapter: {d}");
}

#[test]
fn batched_sequences_with_adapter_match_single_sessions() {
    let tmp = tempfile::tempdir().unwrap();
    let pairs = adapter_pairs(600);
    let path = tmp.path().join("a.gguf");
    write_adapter(&path, &pairs, Some(16.0), GgmlType::F32);
    let mut model = load(&base(Mix::F16));
    model.apply_lora(&LoraAdapter::open(&path).unwrap(), 1.0).unwrap();
    let model = Arc::new(model);
    let prompts: [&[u32]; 2] = [&TOKENS, &TOKENS[3..9]];
    let single: Vec<Vec<f32>> = prompts
        .iter()
        .map(|p| {
            Session::new(Arc::clone(&model), opts(Activations::F32))
                .unwrap()
                .eval_all_logits(p)
                .unwrap()
        })
        .collect();
    let mut multi = MultiSession::new(Arc::clone(&model), opts(Activations::F32), 2).unwrap();
    let out = multi
        .step(&[
            SeqChunk {
                seq: 0,
                tokens: prompts[0],
                logits: Logits::All,
            },
            SeqChunk {
                seq: 1,
                tokens: prompts[1],
                logits: Logits::All,
            },
        ])
        .unwrap();
    for (s, (o, r)) in out.iter().zip(&single).enumerate() {
        let d = max_diff(o, r);
        eprintln!("sequence {s}: max |batched - single| = {d:.3e}");
        assert!(d <= 1e-4, "sequence {s}: {d}");
    }
}

// ---- hostile and mismatched adapter files ----

/// Applies the adapter file at `path` to the F32 base; the error text, or None if it worked.
fn apply_error(path: &Path) -> Option<String> {
    let mut model = load(&base(Mix::F32));
    let result = LoraAdapter::open(path).and_then(|a| model.apply_lora(&a, 1.0));
    match result {
        Ok(_) => None,
        Err(e) => {
            assert!(!model.has_lora(), "a failed apply must attach nothing");
            Some(e.to_string())
        }
    }
}

fn expect_error(path: &Path, needles: &[&str]) {
    let msg = apply_error(path).unwrap_or_else(|| panic!("{} was accepted", path.display()));
    for n in needles {
        assert!(msg.contains(n), "error {msg:?} should mention {n:?}");
    }
    assert!(
        msg.contains(&path.display().to_string()),
        "error {msg:?} should name the file"
    );
}

#[test]
fn mismatched_adapters_are_refused_with_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let p = |name: &str| tmp.path().join(name);
    let good = pair("blk.0.attn_q.weight", 8, HIDDEN, HIDDEN, 1);

    // Wrong shape: an adapter for a wider model.
    write_adapter(
        &p("wide.gguf"),
        &[pair("blk.0.attn_q.weight", 8, 512, 512, 1)],
        Some(8.0),
        GgmlType::F32,
    );
    expect_error(&p("wide.gguf"), &["blk.0.attn_q.weight", "512", "256", "another model"]);
    // Output rows wrong only (K has 128 outputs here).
    write_adapter(
        &p("k.gguf"),
        &[pair("blk.0.attn_k.weight", 8, HIDDEN, HIDDEN, 1)],
        Some(8.0),
        GgmlType::F32,
    );
    expect_error(&p("k.gguf"), &["blk.0.attn_k.weight", "128"]);
    // Unknown tensor (a layer the model does not have), and a non-matrix target.
    write_adapter(
        &p("deep.gguf"),
        &[pair("blk.7.attn_q.weight", 8, HIDDEN, HIDDEN, 1)],
        None,
        GgmlType::F32,
    );
    expect_error(&p("deep.gguf"), &["blk.7.attn_q.weight", "does not have"]);
    write_adapter(
        &p("embd.gguf"),
        &[pair("token_embd.weight", 8, HIDDEN, VOCAB, 1)],
        None,
        GgmlType::F32,
    );
    expect_error(&p("embd.gguf"), &["token_embd.weight", "not supported"]);

    // Ranks of A and B differ (or A not transposed).
    let mut bad_rank = good.clone();
    bad_rank.b = weights(9, HIDDEN * 4);
    let q = "blk.0.attn_q.weight";
    write_raw_adapter(
        &p("ranks.gguf"),
        "llama",
        "lora",
        &[
            (
                format!("{q}.lora_a"),
                [HIDDEN as u64, 8],
                GgmlType::F32,
                encode(GgmlType::F32, &good.a),
            ),
            (
                format!("{q}.lora_b"),
                [4, HIDDEN as u64],
                GgmlType::F32,
                encode(GgmlType::F32, &bad_rank.b),
            ),
        ],
    );
    expect_error(&p("ranks.gguf"), &["rank 8", "rank 4"]);

    // A lonely A (and a lonely B).
    write_raw_adapter(
        &p("lonely.gguf"),
        "llama",
        "lora",
        &[(
            format!("{q}.lora_a"),
            [HIDDEN as u64, 8],
            GgmlType::F32,
            encode(GgmlType::F32, &good.a),
        )],
    );
    expect_error(&p("lonely.gguf"), &["blk.0.attn_q.weight.lora_a", "lora_b"]);

    // NaN in B.
    let mut nan = good.clone();
    nan.b[77] = f32::NAN;
    write_adapter(&p("nan.gguf"), &[nan], Some(8.0), GgmlType::F32);
    expect_error(&p("nan.gguf"), &["lora_b", "NaN"]);

    // Not an adapter: the base model itself, and a file of another adapter type.
    expect_error(&base(Mix::F32), &["not a LoRA adapter"]);
    write_raw_adapter(&p("cv.gguf"), "llama", "control_vector", &[]);
    expect_error(&p("cv.gguf"), &["adapter.type", "control_vector"]);

    // Another architecture.
    write_raw_adapter(
        &p("arch.gguf"),
        "gpt2",
        "lora",
        &[
            (
                format!("{q}.lora_a"),
                [HIDDEN as u64, 8],
                GgmlType::F32,
                encode(GgmlType::F32, &good.a),
            ),
            (
                format!("{q}.lora_b"),
                [8, HIDDEN as u64],
                GgmlType::F32,
                encode(GgmlType::F32, &good.b),
            ),
        ],
    );
    expect_error(&p("arch.gguf"), &["gpt2", "llama"]);

    // An unsupported tensor type (Q4_0 adapters are not a thing llama.cpp writes).
    let n = GgmlType::Q4_0.row_bytes(HIDDEN as u64).unwrap() as usize * 32;
    write_raw_adapter(
        &p("q4.gguf"),
        "llama",
        "lora",
        &[
            (format!("{q}.lora_a"), [HIDDEN as u64, 32], GgmlType::Q4_0, vec![0u8; n]),
            (format!("{q}.lora_b"), [32, HIDDEN as u64], GgmlType::Q4_0, vec![0u8; n]),
        ],
    );
    expect_error(&p("q4.gguf"), &["Q4_0", "F32"]);

    // Empty and truncated files, and a missing one.
    std::fs::write(p("empty.gguf"), b"").unwrap();
    expect_error(&p("empty.gguf"), &[]);
    let full = std::fs::read(p("nan.gguf")).unwrap();
    std::fs::write(p("cut.gguf"), &full[..full.len() / 2]).unwrap();
    expect_error(&p("cut.gguf"), &[]);
    expect_error(&p("missing.gguf"), &[]);

    // A non-finite user scale.
    write_adapter(&p("ok.gguf"), std::slice::from_ref(&good), Some(8.0), GgmlType::F32);
    let mut model = load(&base(Mix::F32));
    let e = model
        .apply_lora(&LoraAdapter::open(p("ok.gguf")).unwrap(), f32::NAN)
        .unwrap_err()
        .to_string();
    assert!(e.contains("finite"), "{e}");
    assert!(
        apply_error(&p("ok.gguf")).is_none(),
        "the well-formed adapter must load"
    );
}

/// Rank 0: the GGUF writer refuses zero dimensions, so the file is put together by hand
/// (GGUF v3: header, two string metadata values, two tensor entries, aligned data).
#[test]
fn rank_zero_is_refused() {
    fn string(out: &mut Vec<u8>, s: &str) {
        out.extend((s.len() as u64).to_le_bytes());
        out.extend(s.as_bytes());
    }
    let mut f = b"GGUF".to_vec();
    f.extend(3u32.to_le_bytes());
    f.extend(2u64.to_le_bytes()); // tensors
    f.extend(3u64.to_le_bytes()); // metadata
    for (k, v) in [
        ("general.type", "adapter"),
        ("general.architecture", "llama"),
        ("adapter.type", "lora"),
    ] {
        string(&mut f, k);
        f.extend(8u32.to_le_bytes());
        string(&mut f, v);
    }
    for (name, dims) in [
        ("blk.0.attn_q.weight.lora_a", [HIDDEN as u64, 0]),
        ("blk.0.attn_q.weight.lora_b", [0, HIDDEN as u64]),
    ] {
        string(&mut f, name);
        f.extend(2u32.to_le_bytes());
        for d in dims {
            f.extend(d.to_le_bytes());
        }
        f.extend(0u32.to_le_bytes()); // F32
        f.extend(0u64.to_le_bytes());
    }
    while !f.len().is_multiple_of(32) {
        f.push(0);
    }
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("rank0.gguf");
    std::fs::write(&path, &f).unwrap();
    // The GGUF reader itself refuses empty dimensions, naming the tensor.
    expect_error(&path, &["blk.0.attn_q.weight.lora_a", "dimension 0"]);
}

// ---- the command line ----

fn edgeact(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_edgeact"))
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

#[test]
fn cli_run_with_lora_and_a_bad_adapter() {
    let tmp = tempfile::tempdir().unwrap();
    let pairs = adapter_pairs(800);
    // A path holding ':' must still work, with and without a scale.
    let adapter = tmp.path().join("my:adapter.gguf");
    write_adapter(&adapter, &pairs, Some(16.0), GgmlType::F32);
    let model = base(Mix::F32);
    let run = |extra: &[&str]| {
        let mut args = vec![
            "run",
            "-m",
            model.to_str().unwrap(),
            "-p",
            "Once upon",
            "-n",
            "6",
            "--temp",
            "0",
            "--device",
            "cpu",
        ];
        args.extend_from_slice(extra);
        edgeact(&args)
    };
    let plain = run(&[]);
    assert!(plain.status.success(), "{}", String::from_utf8_lossy(&plain.stderr));
    let spec = format!("{}:0.5", adapter.display());
    let with = run(&["--lora", &spec]);
    let stderr = String::from_utf8_lossy(&with.stderr);
    assert!(with.status.success(), "{stderr}");
    assert!(
        stderr.contains("LoRA adapter") && stderr.contains("my:adapter.gguf") && stderr.contains("6 matrices"),
        "stderr should note the adapter: {stderr}"
    );
    assert!(stderr.contains("scale 0.5"), "{stderr}");
    // Scale 0 through the command line gives the base's text; the bare path (a ':' inside, no
    // scale) works too.
    let zero = run(&["--lora", &format!("{}:0", adapter.display())]);
    assert_eq!(zero.stdout, plain.stdout);
    let bare = run(&["--lora", adapter.to_str().unwrap()]);
    assert!(bare.status.success(), "{}", String::from_utf8_lossy(&bare.stderr));

    // A bad adapter: exit status 1 and a message naming the file and the tensor.
    let bad = tmp.path().join("bad.gguf");
    write_adapter(
        &bad,
        &[pair("blk.0.attn_q.weight", 8, 512, 512, 1)],
        None,
        GgmlType::F32,
    );
    let out = run(&["--lora", bad.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.contains("bad.gguf") && stderr.contains("blk.0.attn_q.weight"),
        "{stderr}"
    );
    // A model given as the adapter.
    let out = run(&["--lora", model.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("not a LoRA adapter"),
        "{stderr}"
    );
}

// ---- merged at conversion (`quantize --lora`) == applied at load (`lora convert` + `--lora`) ----

/// One PEFT adapter (all seven projections, both layers) taken both ways through the binary:
/// merged into the weights at conversion, and converted to a GGUF adapter applied at load on
/// the plain conversion. F32: the same sums in another order (bound 1e-4). Q8_0 / Q4_0: the
/// merged file quantizes `W + s·B·A`, the applied one adds the exact term to quantized `W`,
/// so they differ by the format's rounding: bounded by twice what the format itself moves the
/// unadapted model (quantized vs F32 base), measured in the same run.
#[test]
fn merged_at_convert_equals_applied_at_load() {
    let tmp = tempfile::tempdir().unwrap();
    let ck = tmp.path().join("ck");
    let peft = tmp.path().join("peft");
    std::fs::create_dir(&ck).unwrap();
    std::fs::create_dir(&peft).unwrap();
    hf_golden_support::write_sharpened_checkpoint(&ck);
    let mut spec = lora_support::AdapterSpec::new(HIDDEN, FF, KV_HEADS * HEAD_DIM, convert_support::LAYERS);
    spec.r = 8;
    spec.alpha = 16.0;
    spec.targets = [
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    ]
    .map(String::from)
    .to_vec();
    lora_support::write_peft_adapter(&peft, &spec);
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let ok = |args: &[String]| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = edgeact(&args);
        assert!(
            out.status.success(),
            "edgeact {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let adapter = tmp.path().join("adapter.gguf");
    ok(&[
        "lora".into(),
        "convert".into(),
        s(&peft),
        "-o".into(),
        s(&adapter),
        "--base".into(),
        s(&ck),
    ]);
    let adapter = LoraAdapter::open(&adapter).unwrap();
    let mut f32_base = Vec::new();
    for (ty, mix) in [("f32", Mix::F32), ("q8_0", Mix::Q8_0), ("q4_0", Mix::Q4_0)] {
        let merged = tmp.path().join(format!("merged-{ty}.gguf"));
        ok(&[
            "quantize".into(),
            s(&ck),
            "--lora".into(),
            s(&peft),
            "-o".into(),
            s(&merged),
            "--type".into(),
            ty.into(),
            "--threads".into(),
            "2".into(),
        ]);
        // f32 activations: the quantized formats' weights enter exactly as they dequantize.
        let plain = logits(load(&base(mix)), Activations::F32);
        let mut model = load(&base(mix));
        assert_eq!(model.apply_lora(&adapter, 1.0).unwrap(), 7 * convert_support::LAYERS);
        let applied = logits(model, Activations::F32);
        let merged = logits(load(&merged), Activations::F32);
        let d = max_diff(&applied, &merged);
        let effect = max_diff(&applied, &plain);
        if mix == Mix::F32 {
            f32_base = plain;
            eprintln!("F32: max |applied at load - merged at convert| = {d:.3e} (adapter effect {effect:.3})");
            assert!(effect > 0.05, "the adapter must change the logits ({effect})");
            assert!(d <= 1e-4, "F32: applied vs merged {d}");
        } else {
            let format = max_diff(&plain, &f32_base);
            eprintln!(
                "{ty}: max |applied at load - merged at convert| = {d:.3e}; the format alone moves the base by \
                 {format:.3e} (adapter effect {effect:.3})"
            );
            assert!(d <= 2.0 * format, "{ty}: applied vs merged {d} > 2 x {format}");
        }
    }
}

/// Writes an adapter GGUF by hand: the three header keys and `(name, ggml dims, type, bytes)`
/// tensors as given, for files `write_adapter` would never produce.
fn write_raw_adapter(path: &Path, arch: &str, adapter_type: &str, tensors: &[(String, [u64; 2], GgmlType, Vec<u8>)]) {
    let mut w = GgufWriter::new();
    w.set_str("general.type", "adapter").unwrap();
    w.set_str("general.architecture", arch).unwrap();
    w.set_str("adapter.type", adapter_type).unwrap();
    for (name, dims, ty, _) in tensors {
        w.add_tensor(name, dims, *ty).unwrap();
    }
    w.write_file(path, &[], |i, _, s| std::io::Write::write_all(s, &tensors[i].3))
        .unwrap();
}
