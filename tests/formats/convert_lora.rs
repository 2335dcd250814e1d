//! PEFT LoRA adapters (issue #14): merged at conversion (`edgeact quantize --lora`) and written
//! in llama.cpp's GGUF adapter format (`edgeact lora convert`), on the tiny random checkpoint
//! of `tests/convert_support` with random adapters from `tests/lora_support` (safetensors and
//! `torch.save` .bin). Every merged value is checked against an f64 reference computed here
//! (base + scale · B·A, then the rotary row order), every error case for its message and for
//! leaving no output behind, and the merged weights against `scripts/lora-reference.py`
//! (numpy) when the Python venv of `scripts/setup.sh` is there.

use edgeact_quantize::lora::{read_base_config, write_adapter_gguf, AdapterOptions, LoraMerge, PeftAdapter};
use edgeact_quantize::{convert_with_lora, Checkpoint, DType, Mix, Options};
use edgeact_runtime::gguf::{GgufFile, Value};
use edgeact_runtime::quant::{dequantize_row, GgmlType};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::convert_support;
use crate::lora_support;
use convert_support::*;
use lora_support::*;

type Base = Vec<(String, Vec<usize>, Vec<f32>)>;

/// A tiny checkpoint (tied embeddings, so no 32000-row output matrix) in `root/base`.
fn base_model(root: &Path) -> (PathBuf, Base) {
    let dir = root.join("base");
    std::fs::create_dir(&dir).unwrap();
    let tensors = write_checkpoint(&dir, true, None);
    (dir, tensors)
}

fn spec() -> AdapterSpec {
    AdapterSpec::new(HIDDEN, FF, KV_HEADS * HEAD_DIM, LAYERS)
}

fn f32_opts() -> Options {
    let mut o = Options::new(Mix::F32);
    o.no_tokenizer = true;
    o.name = Some("merged".into());
    o
}

fn merge(base: &Path, adapter: &Path, out: &Path, user_scale: f64, mix: Mix) -> anyhow::Result<usize> {
    let lora = LoraMerge::open(adapter, user_scale)?;
    let mut o = f32_opts();
    o.mix = mix;
    let report = convert_with_lora(base, out, &o, Some(&lora), &mut edgeact_quantize::convert::Silent)?;
    Ok(report.lora_merged)
}

fn floats(f: &GgufFile, name: &str) -> Vec<f32> {
    let v = f.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    let mut out = vec![0f32; v.info.n_elements() as usize];
    dequantize_row(v.ty(), v.data, &mut out).unwrap();
    out
}

fn gguf_name(hf: &str) -> String {
    // model.layers.N.self_attn.q_proj.weight -> blk.N.attn_q.weight
    let rest = hf.strip_prefix("model.layers.").unwrap();
    let (layer, rest) = rest.split_once('.').unwrap();
    let module = rest.split('.').nth(1).unwrap();
    let g = match module {
        "q_proj" => "attn_q",
        "k_proj" => "attn_k",
        "v_proj" => "attn_v",
        "o_proj" => "attn_output",
        "gate_proj" => "ffn_gate",
        "up_proj" => "ffn_up",
        "down_proj" => "ffn_down",
        m => panic!("{m}"),
    };
    format!("blk.{layer}.{g}.weight")
}

/// Rotary heads of a weight in GGUF: Q has HEADS, K has KV_HEADS, others none.
fn rotary_heads(hf: &str) -> Option<usize> {
    if hf.contains("q_proj") {
        Some(HEADS)
    } else if hf.contains("k_proj") {
        Some(KV_HEADS)
    } else {
        None
    }
}

/// base + scale · B·A in f64, rows in GGUF order.
fn reference(base: &[f32], p: &WrittenPair, scale: f64) -> Vec<f64> {
    let (out, inn, r) = (p.out_features, p.in_features, p.r);
    let mut merged = vec![0f64; out * inn];
    for i in 0..out {
        for j in 0..inn {
            let mut d = 0f64;
            for k in 0..r {
                d += p.b[i * r + k] as f64 * p.a[k * inn + j] as f64;
            }
            merged[i * inn + j] = base[i * inn + j] as f64 + scale * d;
        }
    }
    match rotary_heads(&p.base_name) {
        None => merged,
        Some(heads) => rotary_order(out, heads)
            .into_iter()
            .flat_map(|src| merged[src * inn..(src + 1) * inn].to_vec())
            .collect(),
    }
}

/// Checks every adapted tensor of `file` against the reference and every other tensor against
/// the base (the merge must touch exactly the adapted weights).
fn check_merged(file: &Path, base: &Base, pairs: &[WrittenPair], scale: f64) {
    let f = GgufFile::open(file).unwrap();
    for p in pairs {
        let base_values = &base.iter().find(|t| t.0 == p.base_name).unwrap().2;
        let want = reference(base_values, p, scale);
        let got = floats(&f, &gguf_name(&p.base_name));
        assert_eq!(got.len(), want.len());
        let mut max_err = 0f64;
        let mut max_delta = 0f64;
        let unmerged = reference(base_values, p, 0.0);
        for ((g, w), u) in got.iter().zip(&want).zip(&unmerged) {
            max_err = max_err.max((*g as f64 - w).abs());
            max_delta = max_delta.max((w - u).abs());
        }
        assert!(
            max_err < 2e-6,
            "{}: max error {max_err:e} vs the f64 reference",
            p.base_name
        );
        // The update is large enough that a missing or wrongly scaled merge cannot pass.
        assert!(
            max_delta > 1e-2,
            "{}: update too small to test ({max_delta})",
            p.base_name
        );
    }
    // Untouched tensors are the base values (permuted for Q/K).
    for (name, shape, values) in base {
        if pairs.iter().any(|p| &p.base_name == name) || !name.starts_with("model.layers.") || shape.len() != 2 {
            continue;
        }
        let got = floats(&f, &gguf_name(name));
        let want: Vec<f32> = match rotary_heads(name) {
            None => values.clone(),
            Some(h) => rotary_order(shape[0], h)
                .into_iter()
                .flat_map(|src| values[src * shape[1]..(src + 1) * shape[1]].to_vec())
                .collect(),
        };
        assert_eq!(got, want, "{name} must not change");
    }
}

#[test]
fn merged_f32_matches_an_f64_reference_for_safetensors_and_bin() {
    let tmp = tempfile::tempdir().unwrap();
    let (base, tensors) = base_model(tmp.path());
    for (format, dtype) in [(Format::Safetensors, DType::F32), (Format::Bin, DType::F16)] {
        let mut s = spec();
        s.format = format;
        s.dtype = dtype.clone();
        s.layers = vec![1];
        s.targets = ["q_proj", "k_proj", "v_proj", "up_proj", "down_proj"]
            .map(String::from)
            .to_vec();
        let adapter = tmp.path().join(format!("adapter-{format:?}"));
        let pairs = write_peft_adapter(&adapter, &s);
        let out = tmp.path().join(format!("merged-{format:?}.gguf"));
        let n = merge(&base, &adapter, &out, 1.0, Mix::F32).unwrap();
        assert_eq!(n, pairs.len(), "{format:?}");
        check_merged(&out, &tensors, &pairs, s.scale());
    }
}

#[test]
fn rslora_and_lora_scale_change_the_scale() {
    let tmp = tempfile::tempdir().unwrap();
    let (base, tensors) = base_model(tmp.path());
    let mut s = spec();
    s.layers = vec![0];
    s.targets = vec!["q_proj".into(), "k_proj".into(), "gate_proj".into()];
    s.r = 9;
    s.alpha = 12.0;

    // alpha / r, times --lora-scale.
    let plain = tmp.path().join("plain");
    let pairs = write_peft_adapter(&plain, &s);
    let out = tmp.path().join("scaled.gguf");
    merge(&base, &plain, &out, 0.5, Mix::F32).unwrap();
    check_merged(&out, &tensors, &pairs, 0.5 * 12.0 / 9.0);

    // rsLoRA: alpha / sqrt(r), times a negative --lora-scale (subtracting the adapter).
    s.use_rslora = true;
    let rs = tmp.path().join("rslora");
    let pairs = write_peft_adapter(&rs, &s);
    let out = tmp.path().join("rslora.gguf");
    merge(&base, &rs, &out, -1.5, Mix::F32).unwrap();
    check_merged(&out, &tensors, &pairs, -1.5 * 12.0 / 3.0);
}

/// The files in `dir` besides `keep` (an error must leave no output and no partial file).
fn leftovers(dir: &Path, keep: &[&str]) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !keep.contains(&n.as_str()))
        .collect()
}

#[test]
fn adapter_errors_are_clear_and_leave_no_output() {
    let tmp = tempfile::tempdir().unwrap();
    let (base, _) = base_model(tmp.path());
    let mut small = spec();
    small.layers = vec![0];
    small.targets = vec!["q_proj".into(), "v_proj".into()];

    type Edit = Box<dyn Fn(&mut AdapterSpec, &mut Vec<AdapterTensor>)>;
    let cases: Vec<(&str, Edit, Vec<&str>)> = vec![
        (
            "shape",
            Box::new(|_, t| {
                // lora_A of q_proj for a 128-wide input: the base's q_proj takes 256.
                let a = t.iter_mut().find(|t| t.0.contains("q_proj.lora_A")).unwrap();
                a.1 = vec![4, 128];
                a.2.truncate(4 * 128);
            }),
            vec!["q_proj.lora_A.weight", "another shape", "[256, 256]"],
        ),
        (
            "unknown-target",
            Box::new(|s, _| s.targets.push("rotary_proj".into())),
            vec!["unknown target module \"rotary_proj\""],
        ),
        (
            "embeddings",
            Box::new(|_, t| {
                t.push((
                    "base_model.model.model.embed_tokens.lora_embedding_A".into(),
                    vec![4, VOCAB],
                    vec![0.0; 4 * VOCAB],
                ))
            }),
            vec!["lora_embedding_A", "LoRA on embed_tokens is not supported"],
        ),
        (
            "a-without-b",
            Box::new(|_, t| t.retain(|t| !t.0.contains("v_proj.lora_B"))),
            vec!["v_proj.lora_A.weight", "(lora_A) has no matching lora_B"],
        ),
        (
            "rank",
            Box::new(|s, _| s.r = 8),
            vec!["rank mismatch", "q_proj.lora_A.weight", "r = 8"],
        ),
        (
            "nan",
            Box::new(|_, t| t.iter_mut().find(|t| t.0.contains("v_proj.lora_B")).unwrap().2[5] = f32::NAN),
            vec!["v_proj.lora_B.weight", "non-finite value (NaN) at row 1, column 1"],
        ),
        (
            "inf",
            Box::new(|_, t| t.iter_mut().find(|t| t.0.contains("q_proj.lora_A")).unwrap().2[3] = f32::INFINITY),
            vec!["q_proj.lora_A.weight", "non-finite value (inf) at row 0, column 3"],
        ),
        (
            "no-base-tensor",
            Box::new(|_, t| {
                for x in t.iter_mut() {
                    x.0 = x.0.replace("layers.0.", "layers.5.");
                }
            }),
            vec![
                "layers.5.self_attn",
                "which the base checkpoint does not have (it has 2 layers)",
            ],
        ),
        (
            "not-in-targets",
            Box::new(|s, _| s.targets.retain(|t| t != "v_proj")),
            vec![
                "v_proj.lora_A.weight",
                "target_modules in adapter_config.json does not list",
            ],
        ),
    ];
    for (name, edit, expect) in cases {
        let dir = tmp.path().join(name);
        let mut s = small.clone();
        let mut tensors = adapter_tensors(&adapter_pairs(&s));
        edit(&mut s, &mut tensors);
        write_adapter_files(&dir, &s, &tensors);
        let out = tmp.path().join(format!("{name}.gguf"));
        let err = format!("{:#}", merge(&base, &dir, &out, 1.0, Mix::Q4KM).unwrap_err());
        for e in expect {
            assert!(err.contains(e), "{name}: {err:?} lacks {e:?}");
        }
        assert!(!out.exists(), "{name}: output written");
    }

    // No adapter_config.json.
    let dir = tmp.path().join("no-config");
    write_peft_adapter(&dir, &small);
    std::fs::remove_file(dir.join("adapter_config.json")).unwrap();
    let err = format!("{:#}", LoraMerge::open(&dir, 1.0).unwrap_err());
    assert!(err.contains("has no adapter_config.json"), "{err}");

    // A GGUF input cannot take an adapter: convert the base first, then try to merge into it.
    let gguf = tmp.path().join("base.gguf");
    edgeact_quantize::convert(&base, &gguf, &f32_opts(), &mut edgeact_quantize::convert::Silent).unwrap();
    let ok = tmp.path().join("ok");
    write_peft_adapter(&ok, &small);
    let out = tmp.path().join("from-gguf.gguf");
    let err = format!("{:#}", merge(&gguf, &ok, &out, 1.0, Mix::Q4_0).unwrap_err());
    assert!(
        err.contains("is a GGUF file") && err.contains("f16/f32 Hugging Face checkpoint"),
        "{err}"
    );
    assert!(!out.exists());
    // A non-finite --lora-scale.
    let err = LoraMerge::open(&ok, f64::NAN).unwrap_err().to_string();
    assert!(err.contains("not a finite number"), "{err}");
    // A finite one whose product with alpha / r is beyond f32 (the merge's arithmetic).
    let err = LoraMerge::open(&ok, 1e300).unwrap_err().to_string();
    assert!(err.contains("beyond f32's range"), "{err}");

    let mut names: Vec<String> = leftovers(tmp.path(), &["base", "base.gguf"]);
    names.retain(|n| n.ends_with(".gguf") || n.contains("partial"));
    assert!(names.is_empty(), "left behind: {names:?}");
}

#[test]
fn broken_adapter_files_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = spec();
    s.layers = vec![0];
    let dir = tmp.path().join("adapter");
    write_peft_adapter(&dir, &s);
    let open_err = |d: &Path| format!("{:#}", PeftAdapter::open(d).unwrap_err());

    // Not a directory (e.g. a GGUF adapter passed to --lora).
    let file = dir.join("adapter_config.json");
    assert!(open_err(&file).contains("is not a directory"));
    // A truncated weights file.
    let weights = dir.join("adapter_model.safetensors");
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() - 100]).unwrap();
    let err = open_err(&dir);
    assert!(
        err.contains("adapter_model.safetensors") && err.contains("truncated"),
        "{err}"
    );
    // No weights at all.
    std::fs::remove_file(&weights).unwrap();
    assert!(open_err(&dir).contains("has no adapter_model.safetensors or adapter_model.bin"));
    // A config that is not JSON, or lacks r.
    std::fs::write(&weights, &bytes).unwrap();
    std::fs::write(&file, "{not json").unwrap();
    let err = open_err(&dir);
    assert!(err.contains("adapter_config.json") && err.contains("bad JSON"), "{err}");
    std::fs::write(&file, r#"{"lora_alpha": 8, "target_modules": ["q_proj"]}"#).unwrap();
    assert!(open_err(&dir).contains("r (the LoRA rank) is missing"));
}

fn adapter_options(ty: GgmlType, base: &Path) -> AdapterOptions {
    AdapterOptions {
        ty,
        base: Some(read_base_config(base).unwrap().0),
        name: None,
    }
}

#[test]
fn lora_convert_writes_llama_cpp_adapter_gguf() {
    let tmp = tempfile::tempdir().unwrap();
    let (base, _) = base_model(tmp.path());
    let mut s = spec();
    s.targets = [
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
    s.r = 6;
    s.alpha = 16.0;
    let dir = tmp.path().join("adapter");
    let pairs = write_peft_adapter(&dir, &s);
    let adapter = PeftAdapter::open(&dir).unwrap();

    for ty in [GgmlType::F32, GgmlType::F16] {
        let out = tmp.path().join(format!("adapter-{ty}.gguf"));
        let report = write_adapter_gguf(&adapter, &out, &adapter_options(ty, &base), &[]).unwrap();
        assert_eq!(report.pairs, pairs.len());
        let f = GgufFile::open(&out).unwrap();
        assert_eq!(f.get_str("general.architecture").unwrap(), Some("llama"));
        assert_eq!(f.get_str("general.type").unwrap(), Some("adapter"));
        assert_eq!(f.get_str("adapter.type").unwrap(), Some("lora"));
        assert_eq!(f.get("adapter.lora.alpha"), Some(&Value::F32(16.0)));
        assert_eq!(f.tensors().len(), 2 * pairs.len());
        for p in &pairs {
            let g = gguf_name(&p.base_name);
            let a = f.tensor(&format!("{g}.lora_a")).unwrap();
            let b = f.tensor(&format!("{g}.lora_b")).unwrap();
            // ggml dims: lora_a [in, r], lora_b [r, out] (what llama_adapter_lora_init checks).
            assert_eq!(a.info.dims, [p.in_features as u64, p.r as u64], "{g}");
            assert_eq!(b.info.dims, [p.r as u64, p.out_features as u64], "{g}");
            assert_eq!((a.ty(), b.ty()), (ty, ty));
            let round = |v: &[f32]| -> Vec<f32> {
                v.iter()
                    .map(|&x| {
                        if ty == GgmlType::F16 {
                            half::f16::from_f32(x).to_f32()
                        } else {
                            x
                        }
                    })
                    .collect()
            };
            assert_eq!(floats(&f, &format!("{g}.lora_a")), round(&p.a), "{g}.lora_a");
            let want_b: Vec<f32> = match rotary_heads(&p.base_name) {
                None => p.b.clone(),
                Some(h) => rotary_order(p.out_features, h)
                    .into_iter()
                    .flat_map(|src| p.b[src * p.r..(src + 1) * p.r].to_vec())
                    .collect(),
            };
            assert_eq!(floats(&f, &format!("{g}.lora_b")), round(&want_b), "{g}.lora_b");
            if rotary_heads(&p.base_name).is_some() {
                assert_ne!(want_b, p.b, "{g}: the permutation must move rows");
            }
        }
    }

    // rsLoRA is expressed through alpha: llama.cpp scales by alpha / r.
    let mut rs = s.clone();
    rs.use_rslora = true;
    rs.r = 4;
    let rs_dir = tmp.path().join("rs");
    write_peft_adapter(&rs_dir, &rs);
    let out = tmp.path().join("rs.gguf");
    let report = write_adapter_gguf(
        &PeftAdapter::open(&rs_dir).unwrap(),
        &out,
        &adapter_options(GgmlType::F32, &base),
        &[],
    )
    .unwrap();
    assert_eq!(report.alpha, 32.0); // 16 * sqrt(4): 32 / 4 = 16 / sqrt(4)
    let f = GgufFile::open(&out).unwrap();
    assert_eq!(f.get("adapter.lora.alpha"), Some(&Value::F32(32.0)));

    // Q/K need the base's head counts; v/o/mlp alone do not.
    let no_base = AdapterOptions {
        ty: GgmlType::F32,
        base: None,
        name: None,
    };
    let out = tmp.path().join("no-base.gguf");
    let err = write_adapter_gguf(&adapter, &out, &no_base, &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("q_proj and k_proj") && err.contains("--base"), "{err}");
    assert!(!out.exists());
    let mut vo = s.clone();
    vo.targets = vec!["v_proj".into(), "down_proj".into()];
    let vo_dir = tmp.path().join("vo");
    write_peft_adapter(&vo_dir, &vo);
    write_adapter_gguf(&PeftAdapter::open(&vo_dir).unwrap(), &out, &no_base, &[]).unwrap();
    assert_eq!(GgufFile::open(&out).unwrap().tensors().len(), 4 * LAYERS);

    // An adapter for another model's shapes is refused against --base.
    let mut wide = s.clone();
    wide.ff = FF * 2;
    wide.targets = vec!["up_proj".into()];
    let wide_dir = tmp.path().join("wide");
    write_peft_adapter(&wide_dir, &wide);
    let out = tmp.path().join("wide.gguf");
    let err = write_adapter_gguf(
        &PeftAdapter::open(&wide_dir).unwrap(),
        &out,
        &adapter_options(GgmlType::F32, &base),
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("up_proj.lora_A.weight") && err.contains("another shape"),
        "{err}"
    );
    assert!(!out.exists());
    // The output may not be one of the adapter's files.
    let err = write_adapter_gguf(
        &adapter,
        &dir.join("adapter_model.safetensors"),
        &adapter_options(GgmlType::F32, &base),
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("refusing to overwrite the input"), "{err}");
}

fn edgeact(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_edgeact")).args(args).output().unwrap()
}

#[test]
fn cli_quantize_lora_and_lora_convert() {
    let tmp = tempfile::tempdir().unwrap();
    let (base, _) = base_model(tmp.path());
    let mut s = spec();
    s.format = Format::Bin;
    s.layers = vec![0];
    let dir = tmp.path().join("adapter");
    write_peft_adapter(&dir, &s);
    let p = |p: &Path| p.to_str().unwrap().to_string();

    let out = tmp.path().join("merged.gguf");
    let o = edgeact(&[
        "quantize",
        &p(&base),
        "--lora",
        &p(&dir),
        "--lora-scale",
        "0.75",
        "-o",
        &p(&out),
        "--type",
        "q4_k_m",
    ]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout.contains("into 5 tensors (scale 1.5)"), "{stdout}");
    let f = GgufFile::open(&out).unwrap();
    assert_eq!(f.tensor("blk.0.attn_q.weight").unwrap().ty(), GgmlType::Q4_K);

    // A GGUF input with --lora is refused, and nothing is written.
    let again = tmp.path().join("again.gguf");
    let o = edgeact(&["quantize", &p(&out), "--lora", &p(&dir), "-o", &p(&again)]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && stderr.contains("is a GGUF file"), "{stderr}");
    assert!(!again.exists());
    // --lora-scale without --lora is a usage error.
    let o = edgeact(&["quantize", &p(&base), "--lora-scale", "2", "-o", &p(&again)]);
    assert!(!o.status.success());

    let adapter_out = tmp.path().join("adapter.gguf");
    let o = edgeact(&[
        "lora",
        "convert",
        &p(&dir),
        "-o",
        &p(&adapter_out),
        "--base",
        &p(&base.join("config.json")),
        "--type",
        "f16",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let f = GgufFile::open(&adapter_out).unwrap();
    assert_eq!(f.get_str("general.type").unwrap(), Some("adapter"));
    assert_eq!(f.tensor("blk.0.attn_k.weight.lora_b").unwrap().ty(), GgmlType::F16);
    let o = edgeact(&["lora", "convert", &p(&dir), "-o", &p(&tmp.path().join("x.gguf"))]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && stderr.contains("--base"), "{stderr}");
}

/// The Python of `scripts/setup.sh`'s venv with numpy, or `None` (the reason printed).
fn numpy_python() -> Option<PathBuf> {
    let dir = std::env::var_os("EDGEACT_PYCLIENTS")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/edgeact/pyclients")))?;
    let py = dir.join("bin/python");
    let ok = py.is_file()
        && Command::new(&py)
            .args(["-c", "import numpy"])
            .output()
            .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!(
            "skipped the numpy reference: no venv with numpy at {} (scripts/setup.sh creates it; EDGEACT_PYCLIENTS relocates it)",
            dir.display()
        );
        return None;
    }
    Some(py)
}

#[test]
fn numpy_reference_agrees_with_the_merged_weights() {
    let Some(py) = numpy_python() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let (base, _) = base_model(tmp.path());
    let mut s = spec();
    s.targets = ["q_proj", "k_proj", "o_proj", "gate_proj"].map(String::from).to_vec();
    s.use_rslora = true;
    s.dtype = DType::BF16;
    let dir = tmp.path().join("adapter");
    write_peft_adapter(&dir, &s);
    let out = tmp.path().join("merged.gguf");
    merge(&base, &dir, &out, 0.8, Mix::F32).unwrap();

    let reference = tmp.path().join("reference.safetensors");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/lora-reference.py");
    let o = Command::new(py)
        .arg(script)
        .args([&base, &dir, &reference])
        .args(["--scale", "0.8"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let ck = Checkpoint::open_files(std::slice::from_ref(&reference)).unwrap();
    let f = GgufFile::open(&out).unwrap();
    assert_eq!(ck.tensors().len(), 4 * LAYERS, "one merged tensor per adapted weight");
    for t in ck.tensors() {
        let mut want = vec![0f32; t.n_elements()];
        ck.read_rows_f32(t, 0, &mut want).unwrap();
        let got = floats(&f, &t.name);
        let max = got.iter().zip(&want).map(|(g, w)| (g - w).abs()).fold(0f32, f32::max);
        assert!(max < 2e-6, "{}: max difference {max:e} from numpy", t.name);
    }
}
