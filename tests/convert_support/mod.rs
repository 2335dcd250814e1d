//! Shared by the converter's integration tests: a tiny random Llama checkpoint (F16
//! safetensors, `config.json`, the shared Llama-2 `tokenizer.model`).
#![allow(dead_code)]

use edgeact_quantize::safetensors::to_bytes;
use edgeact_quantize::{convert, DType, Mix, Options};
use std::path::{Path, PathBuf};

pub const HIDDEN: usize = 256;
pub const FF: usize = 512;
pub const HEADS: usize = 4;
pub const KV_HEADS: usize = 2;
pub const LAYERS: usize = 2;
pub const VOCAB: usize = 32000;
pub const HEAD_DIM: usize = HIDDEN / HEADS;

pub fn shared_tokenizer() -> PathBuf {
    PathBuf::from(
        std::env::var("EDGEACT_SHARED").unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../shared").into()),
    )
    .join("models/llama2-tokenizer/tokenizer.model")
}

/// Deterministic pseudo-random weights, roughly uniform in ±0.05.
pub fn weights(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.1
        })
        .collect()
}

pub fn f16_bytes(v: &[f32]) -> Vec<u8> {
    v.iter()
        .flat_map(|&x| half::f16::from_f32(x).to_bits().to_le_bytes())
        .collect()
}

/// The tensors of the checkpoint (name, shape, values rounded to f16).
pub fn checkpoint_tensors(tied: bool) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let mut t = vec![("model.embed_tokens.weight".to_string(), vec![VOCAB, HIDDEN])];
    for l in 0..LAYERS {
        let p = format!("model.layers.{l}");
        t.push((format!("{p}.input_layernorm.weight"), vec![HIDDEN]));
        t.push((format!("{p}.self_attn.q_proj.weight"), vec![HIDDEN, HIDDEN]));
        t.push((
            format!("{p}.self_attn.k_proj.weight"),
            vec![KV_HEADS * HEAD_DIM, HIDDEN],
        ));
        t.push((
            format!("{p}.self_attn.v_proj.weight"),
            vec![KV_HEADS * HEAD_DIM, HIDDEN],
        ));
        t.push((format!("{p}.self_attn.o_proj.weight"), vec![HIDDEN, HIDDEN]));
        t.push((format!("{p}.post_attention_layernorm.weight"), vec![HIDDEN]));
        t.push((format!("{p}.mlp.gate_proj.weight"), vec![FF, HIDDEN]));
        t.push((format!("{p}.mlp.up_proj.weight"), vec![FF, HIDDEN]));
        t.push((format!("{p}.mlp.down_proj.weight"), vec![HIDDEN, FF]));
    }
    t.push(("model.norm.weight".into(), vec![HIDDEN]));
    if !tied {
        t.push(("lm_head.weight".into(), vec![VOCAB, HIDDEN]));
    }
    t.into_iter()
        .enumerate()
        .map(|(i, (n, shape))| {
            let v: Vec<f32> = weights(i as u64 + 1, shape.iter().product())
                .into_iter()
                .map(|x| half::f16::from_f32(x).to_f32())
                .collect();
            (n, shape, v)
        })
        .collect()
}

pub fn write_checkpoint(dir: &Path, tied: bool, poison: Option<&str>) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let mut tensors = checkpoint_tensors(tied);
    if let Some(name) = poison {
        let t = tensors.iter_mut().find(|t| t.0 == name).unwrap();
        t.2[HIDDEN + 3] = f32::NAN;
    }
    let st: Vec<(&str, DType, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(n, s, v)| (n.as_str(), DType::F16, s.clone(), f16_bytes(v)))
        .collect();
    std::fs::write(dir.join("model.safetensors"), to_bytes(&st)).unwrap();
    let config = format!(
        r#"{{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": {HIDDEN},
        "intermediate_size": {FF}, "num_hidden_layers": {LAYERS}, "num_attention_heads": {HEADS},
        "num_key_value_heads": {KV_HEADS}, "max_position_embeddings": 2048, "rms_norm_eps": 1e-05,
        "rope_theta": 10000.0, "rope_scaling": {{"type": "linear", "factor": 2.0}}, "vocab_size": {VOCAB},
        "tie_word_embeddings": {tied}, "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "float16"}}"#
    );
    std::fs::write(dir.join("config.json"), config).unwrap();
    std::fs::copy(shared_tokenizer(), dir.join("tokenizer.model")).unwrap();
    tensors
}

/// The checkpoint in `ck` converted by our converter, 2 threads, to each of `mixes`:
/// `dir/tiny-<mix>.gguf`, in the order given.
pub fn convert_to_mixes(ck: &Path, dir: &Path, mixes: &[Mix]) -> Vec<(Mix, PathBuf)> {
    mixes
        .iter()
        .map(|&mix| {
            let out = dir.join(format!("tiny-{mix}.gguf"));
            let mut opts = Options::new(mix);
            opts.threads = 2;
            convert(ck, &out, &opts, &mut edgeact_quantize::convert::Silent).unwrap();
            (mix, out)
        })
        .collect()
}
