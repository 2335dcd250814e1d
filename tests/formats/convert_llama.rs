//! End to end: a tiny random Llama checkpoint (F16 safetensors + config.json + the shared
//! Llama-2 `tokenizer.model`), converted by `edgeact quantize` to every type and read back with
//! our GGUF reader: metadata, tensor types of each mix, the Q/K RoPE permutation, values,
//! requantizing a GGUF, `edgeact inspect`, and the error paths.

use edgeact_runtime::gguf::{GgufFile, Value};
use edgeact_runtime::quant::{dequantize_row, GgmlType};
use std::path::Path;
use std::process::Command;

use crate::convert_support;
use convert_support::*;

fn edgeact(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_edgeact")).args(args).output().unwrap()
}

fn quantize(input: &Path, out: &Path, ty: &str) -> std::process::Output {
    edgeact(&[
        "quantize",
        input.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--type",
        ty,
        "--threads",
        "2",
    ])
}

fn floats(f: &GgufFile, name: &str) -> Vec<f32> {
    let v = f.tensor(name).unwrap();
    let mut out = vec![0f32; v.info.n_elements() as usize];
    dequantize_row(v.ty(), v.data, &mut out).unwrap();
    out
}

fn ty(f: &GgufFile, name: &str) -> GgmlType {
    f.tensor(name).unwrap().ty()
}

fn rel_rmse(a: &[f32], b: &[f32]) -> f64 {
    let e: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
    let s: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum();
    (e / s).sqrt()
}

#[test]
fn converts_to_every_type() {
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("tiny-llama");
    std::fs::create_dir(&ck).unwrap();
    let src = write_checkpoint(&ck, false, None);
    let source = |n: &str| &src.iter().find(|t| t.0 == n).unwrap().2;

    for (mix, file_type, tol) in [
        ("f32", 0, 0.0),
        ("f16", 1, 0.0),
        ("q8_0", 7, 0.01),
        ("q4_0", 2, 0.12),
        ("q4_k_m", 15, 0.12),
    ] {
        let out = dir.path().join(format!("tiny-{mix}.gguf"));
        let o = quantize(&ck, &out, mix);
        assert!(o.status.success(), "{mix}: {}", String::from_utf8_lossy(&o.stderr));
        let summary = String::from_utf8_lossy(&o.stdout);
        assert!(summary.contains("bits/weight") && summary.contains("rmse"), "{summary}");
        let f = GgufFile::open(&out).unwrap();

        // Metadata.
        assert_eq!(f.require_str("general.architecture").unwrap(), "llama");
        assert_eq!(f.require_str("general.name").unwrap(), "tiny-llama");
        for (k, v) in [
            ("general.file_type", file_type),
            ("general.quantization_version", 2),
            ("llama.context_length", 2048),
            ("llama.embedding_length", HIDDEN as u64),
            ("llama.block_count", LAYERS as u64),
            ("llama.feed_forward_length", FF as u64),
            ("llama.attention.head_count", HEADS as u64),
            ("llama.attention.head_count_kv", KV_HEADS as u64),
            ("llama.rope.dimension_count", HEAD_DIM as u64),
            ("llama.vocab_size", VOCAB as u64),
            ("tokenizer.ggml.bos_token_id", 1),
            ("tokenizer.ggml.eos_token_id", 2),
            ("tokenizer.ggml.unknown_token_id", 0),
        ] {
            assert_eq!(f.require_u64(k).unwrap(), v, "{mix}: {k}");
        }
        assert_eq!(f.get_f32("llama.rope.freq_base").unwrap(), Some(10000.0));
        assert_eq!(f.get_f32("llama.attention.layer_norm_rms_epsilon").unwrap(), Some(1e-5));
        assert_eq!(f.require_str("llama.rope.scaling.type").unwrap(), "linear");
        assert_eq!(f.get_f32("llama.rope.scaling.factor").unwrap(), Some(2.0));
        assert_eq!(f.require_str("tokenizer.ggml.model").unwrap(), "llama");
        assert_eq!(f.get_array("tokenizer.ggml.tokens").unwrap().unwrap().len(), VOCAB);
        assert_eq!(f.get_bool("tokenizer.ggml.add_bos_token").unwrap(), Some(true));
        assert!(f.require_str("tokenizer.chat_template").unwrap().contains("[INST]"));

        // Tensor table: llama.cpp names, ggml dims, file order.
        assert_eq!(f.tensors().len(), 3 + 9 * LAYERS);
        assert_eq!(f.tensors()[0].name, "token_embd.weight");
        assert_eq!(f.tensors()[1].name, "blk.0.attn_norm.weight");
        assert_eq!(f.tensors().last().unwrap().name, "output.weight");
        assert_eq!(
            f.tensor("blk.1.attn_k.weight").unwrap().info.dims,
            [HIDDEN as u64, (KV_HEADS * HEAD_DIM) as u64]
        );
        assert_eq!(
            f.tensor("blk.0.ffn_down.weight").unwrap().info.dims,
            [FF as u64, HIDDEN as u64]
        );
        assert_eq!(ty(&f, "output_norm.weight"), GgmlType::F32);
        assert_eq!(ty(&f, "blk.1.ffn_norm.weight"), GgmlType::F32);

        // Types of the mix (use_more_bits(i, 2) picks layer 1 only).
        let expect = |name: &str| -> GgmlType {
            match mix {
                "f32" => GgmlType::F32,
                "f16" => GgmlType::F16,
                "q8_0" => GgmlType::Q8_0,
                "q4_0" if name == "output.weight" => GgmlType::Q6_K,
                "q4_0" => GgmlType::Q4_0,
                _ if name == "output.weight" => GgmlType::Q6_K,
                _ if name == "blk.1.attn_v.weight" || name == "blk.1.ffn_down.weight" => GgmlType::Q6_K,
                _ => GgmlType::Q4_K,
            }
        };
        for t in f.tensors().iter().filter(|t| t.dims.len() == 2) {
            assert_eq!(t.ty, expect(&t.name), "{mix}: {}", t.name);
        }

        // Values: plain tensors equal the source (within the format's error).
        for (g, h) in [
            ("token_embd.weight", "model.embed_tokens.weight"),
            ("blk.1.ffn_down.weight", "model.layers.1.mlp.down_proj.weight"),
            ("output_norm.weight", "model.norm.weight"),
        ] {
            let r = rel_rmse(source(h), &floats(&f, g));
            assert!(r <= tol, "{mix} {g}: relative RMSE {r}");
        }
        // Q and K rows are permuted per head: GGUF row (head, i, pair) = HF row (head, pair, i).
        if mix == "f32" {
            for (g, h, heads) in [
                ("blk.0.attn_q.weight", "model.layers.0.self_attn.q_proj.weight", HEADS),
                (
                    "blk.1.attn_k.weight",
                    "model.layers.1.self_attn.k_proj.weight",
                    KV_HEADS,
                ),
            ] {
                let out = floats(&f, g);
                let inp = source(h);
                for head in 0..heads {
                    for i in 0..HEAD_DIM / 2 {
                        for pair in 0..2 {
                            let dst_row = head * HEAD_DIM + 2 * i + pair;
                            let src_row = head * HEAD_DIM + pair * (HEAD_DIM / 2) + i;
                            assert_eq!(
                                out[dst_row * HIDDEN..(dst_row + 1) * HIDDEN],
                                inp[src_row * HIDDEN..(src_row + 1) * HIDDEN],
                                "{g} row {dst_row}"
                            );
                        }
                    }
                }
            }
        }
    }

    // Requantizing our F16 GGUF to q4_0 gives the same types as converting directly, and
    // Q6_K output weights; metadata is carried over.
    let f16 = dir.path().join("tiny-f16.gguf");
    let re = dir.path().join("tiny-re-q4_0.gguf");
    let o = quantize(&f16, &re, "q4_0");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let a = GgufFile::open(&re).unwrap();
    let b = GgufFile::open(dir.path().join("tiny-q4_0.gguf")).unwrap();
    for (x, y) in a.tensors().iter().zip(b.tensors()) {
        assert_eq!((&x.name, x.ty, &x.dims), (&y.name, y.ty, &y.dims));
        // Source values were f16 already, so both paths quantize identical floats.
        assert_eq!(
            a.tensor(&x.name).unwrap().data,
            b.tensor(&y.name).unwrap().data,
            "{}",
            x.name
        );
    }
    assert_eq!(a.require_u64("general.file_type").unwrap(), 2);
    assert_eq!(a.get_array("tokenizer.ggml.scores").unwrap().unwrap().len(), VOCAB);
    // Requantizing a Q8_0 file (dequantize → quantize) works too.
    let o = quantize(
        &dir.path().join("tiny-q8_0.gguf"),
        &dir.path().join("tiny-q8-q4km.gguf"),
        "q4_k_m",
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // Refuses to overwrite its input.
    let o = quantize(&f16, &dir.path().join(".").join("tiny-f16.gguf"), "q4_0");
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("refusing to overwrite"));

    // `edgeact inspect`, text and JSON.
    let o = edgeact(&["inspect", re.to_str().unwrap()]);
    assert!(o.status.success());
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("blk.1.attn_v.weight") && text.contains("[String; 32000]"),
        "{text}"
    );
    let o = edgeact(&["inspect", "--json", re.to_str().unwrap()]);
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["tensors"].as_array().unwrap().len(), 3 + 9 * LAYERS);
    assert_eq!(j["metadata"]["tokenizer.ggml.tokens"]["value"]["len"], 32000);
    assert_eq!(j["tensors"][0]["type"], "Q4_0");
}

#[test]
fn tied_embeddings_get_the_output_type() {
    let dir = tempfile::tempdir().unwrap();
    write_checkpoint(dir.path(), true, None);
    let out = dir.path().join("tied.gguf");
    let o = quantize(dir.path(), &out, "q4_0");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let f = GgufFile::open(&out).unwrap();
    assert!(f.try_tensor("output.weight").is_none());
    assert_eq!(ty(&f, "token_embd.weight"), GgmlType::Q6_K);
    assert_eq!(ty(&f, "blk.0.attn_q.weight"), GgmlType::Q4_0);
}

#[test]
fn bad_inputs_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    write_checkpoint(dir.path(), true, Some("model.layers.1.mlp.up_proj.weight"));
    let out = dir.path().join("x.gguf");
    let o = quantize(dir.path(), &out, "q8_0");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("blk.1.ffn_up.weight") && err.contains("non-finite") && err.contains("row 1, column 3"),
        "{err}"
    );
    assert!(!out.exists(), "no partial output");

    // No tokenizer: an error mentioning --no-tokenizer, which then works.
    std::fs::remove_file(dir.path().join("tokenizer.model")).unwrap();
    write_checkpoint(dir.path(), true, None);
    std::fs::remove_file(dir.path().join("tokenizer.model")).unwrap();
    let o = quantize(dir.path(), &out, "q8_0");
    assert!(String::from_utf8_lossy(&o.stderr).contains("--no-tokenizer"));
    let o = edgeact(&[
        "quantize",
        dir.path().to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "-t",
        "f16",
        "--no-tokenizer",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let f = GgufFile::open(&out).unwrap();
    assert!(f.get("tokenizer.ggml.tokens").is_none());
    assert_eq!(f.get("general.file_type"), Some(&Value::U32(1)));

    // Unknown type names and missing inputs.
    let o = quantize(dir.path(), &out, "q3_k");
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown type"));
    let o = quantize(&dir.path().join("nope"), &out, "q8_0");
    assert!(!o.status.success());
}
