//! Shared by tests/model_hf_golden.rs and tests/model_oracle.rs: the converter tests' tiny
//! random Llama checkpoint (`convert_support`), "sharpened" so that it behaves more like a real
//! model. Its weights are all ~0.05, which leaves attention uniform (RoPE would not matter)
//! and logits ~0.05; here norm weights become 1 + 8w (in [0.6, 1.4]) and the q/k projections
//! are scaled by 4 (attention scores of a few units, logits of about ±2).
//! scripts/make-hf-golden.py builds the same weights (its `sharpen`) for the golden logits.
#![allow(dead_code)]

use crate::convert_support::{convert_to_mixes, f16_bytes, write_checkpoint};
use edgeact_quantize::safetensors::to_bytes;
use edgeact_quantize::{DType, Mix};
use std::path::{Path, PathBuf};

/// Rescales one tensor in place, in f32 arithmetic rounded to f16 (as the Python script).
pub fn sharpen(name: &str, v: &mut [f32]) {
    let f = |x: f32| half::f16::from_f32(x).to_f32();
    if name.ends_with("norm.weight") {
        v.iter_mut().for_each(|x| *x = f(1.0 + 8.0 * *x));
    } else if name.ends_with("q_proj.weight") || name.ends_with("k_proj.weight") {
        v.iter_mut().for_each(|x| *x = f(4.0 * *x));
    }
}

/// Writes the sharpened checkpoint (untied output; F16 safetensors, `config.json` and
/// `tokenizer.model` as `write_checkpoint` has them) into `dir` and returns its tensors.
pub fn write_sharpened_checkpoint(dir: &Path) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let mut tensors = write_checkpoint(dir, false, None);
    for (name, _, values) in tensors.iter_mut() {
        sharpen(name, values);
    }
    let st: Vec<(&str, DType, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(n, s, v)| (n.as_str(), DType::F16, s.clone(), f16_bytes(v)))
        .collect();
    std::fs::write(dir.join("model.safetensors"), to_bytes(&st)).unwrap();
    tensors
}

/// The sharpened checkpoint (in `dir/ck`) converted by our converter, 2 threads, to each of
/// `mixes`: `dir/tiny-<mix>.gguf`, in the order given.
pub fn sharpened_ggufs(dir: &Path, mixes: &[Mix]) -> Vec<(Mix, PathBuf)> {
    let ck = dir.join("ck");
    std::fs::create_dir(&ck).unwrap();
    write_sharpened_checkpoint(&ck);
    convert_to_mixes(&ck, dir, mixes)
}
