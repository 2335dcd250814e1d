//! PEFT LoRA adapters for tests: random `A` (`r x in`) and `B` (`out x r`) with a known
//! `lora_alpha` and `r`, written in PEFT's layout (`adapter_config.json` plus
//! `adapter_model.safetensors` or `adapter_model.bin` in `torch.save`'s zip format) for a
//! Llama of the given shapes (e.g. `tests/convert_support`'s tiny checkpoint).
//!
//! Use: `let pairs = write_peft_adapter(dir, &AdapterSpec::new(HIDDEN, FF, KV_HEADS * HEAD_DIM, LAYERS))`;
//! `pairs` holds the values as stored (rounded to the dtype written), so a test can compute
//! what a merged or applied adapter must give. [`adapter_tensors`] + [`write_adapter_files`]
//! let a test change the tensors (drop, poison, reshape) before writing.
#![allow(dead_code)]

use edgeact_quantize::safetensors::to_bytes;
use edgeact_quantize::{torch_save, DType};
use std::path::Path;

/// How the adapter's weights are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Safetensors,
    /// `adapter_model.bin`, the zip format of `torch.save`.
    Bin,
}

/// What to write.
#[derive(Clone, Debug)]
pub struct AdapterSpec {
    pub r: usize,
    pub alpha: f64,
    pub use_rslora: bool,
    /// PEFT module names (`q_proj`, `k_proj`, ... `down_proj`).
    pub targets: Vec<String>,
    /// The layers that get a pair for every target.
    pub layers: Vec<u32>,
    pub format: Format,
    /// F32, F16 or BF16.
    pub dtype: DType,
    pub seed: u64,
    /// The base model's shapes.
    pub hidden: usize,
    pub ff: usize,
    pub kv_dim: usize,
    /// Raw JSON members appended to adapter_config.json (`, "key": value`).
    pub extra_config: String,
}

impl AdapterSpec {
    /// r = 4, alpha = 8, q/k/v/o/down_proj on every layer, F32 safetensors.
    pub fn new(hidden: usize, ff: usize, kv_dim: usize, n_layers: usize) -> AdapterSpec {
        AdapterSpec {
            r: 4,
            alpha: 8.0,
            use_rslora: false,
            targets: ["q_proj", "k_proj", "v_proj", "o_proj", "down_proj"]
                .map(String::from)
                .to_vec(),
            layers: (0..n_layers as u32).collect(),
            format: Format::Safetensors,
            dtype: DType::F32,
            seed: 7,
            hidden,
            ff,
            kv_dim,
            extra_config: String::new(),
        }
    }

    /// `[out, in]` of a target module's weight.
    pub fn module_shape(&self, module: &str) -> [usize; 2] {
        let (h, ff, kv) = (self.hidden, self.ff, self.kv_dim);
        match module {
            "q_proj" | "o_proj" => [h, h],
            "k_proj" | "v_proj" => [kv, h],
            "gate_proj" | "up_proj" => [ff, h],
            "down_proj" => [h, ff],
            other => panic!("no shape for module {other:?}"),
        }
    }

    /// PEFT's scale without a user factor: alpha / r, or alpha / sqrt(r) with rsLoRA.
    pub fn scale(&self) -> f64 {
        if self.use_rslora {
            self.alpha / (self.r as f64).sqrt()
        } else {
            self.alpha / self.r as f64
        }
    }
}

/// One adapted weight as written.
#[derive(Clone, Debug)]
pub struct WrittenPair {
    pub layer: u32,
    pub module: String,
    /// `model.layers.N.self_attn.q_proj.weight`
    pub base_name: String,
    pub r: usize,
    pub in_features: usize,
    pub out_features: usize,
    /// Row-major `r x in`.
    pub a: Vec<f32>,
    /// Row-major `out x r`.
    pub b: Vec<f32>,
}

/// One adapter tensor: PEFT key, shape, values.
pub type AdapterTensor = (String, Vec<usize>, Vec<f32>);

fn parent(module: &str) -> &'static str {
    match module {
        "q_proj" | "k_proj" | "v_proj" | "o_proj" => "self_attn",
        _ => "mlp",
    }
}

/// Deterministic values in ±`amp`.
fn random(seed: u64, n: usize, amp: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0xD1B5_4A32_D192_ED03) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 2.0 * amp
        })
        .collect()
}

fn round_to(dtype: &DType, v: f32) -> f32 {
    match dtype {
        DType::F16 => half::f16::from_f32(v).to_f32(),
        DType::BF16 => half::bf16::from_f32(v).to_f32(),
        _ => v,
    }
}

/// The pairs of `spec` (values already rounded to `spec.dtype`).
pub fn adapter_pairs(spec: &AdapterSpec) -> Vec<WrittenPair> {
    let mut out = Vec::new();
    let mut seed = spec.seed.wrapping_mul(1000);
    for &layer in &spec.layers {
        for module in &spec.targets {
            let [o, i] = spec.module_shape(module);
            seed += 2;
            let round = |v: Vec<f32>| v.into_iter().map(|x| round_to(&spec.dtype, x)).collect();
            out.push(WrittenPair {
                layer,
                module: module.clone(),
                base_name: format!("model.layers.{layer}.{}.{module}.weight", parent(module)),
                r: spec.r,
                in_features: i,
                out_features: o,
                a: round(random(seed, spec.r * i, 0.1)),
                b: round(random(seed + 1, o * spec.r, 0.1)),
            });
        }
    }
    out
}

/// The tensors PEFT would save for `pairs` (keys `base_model.model.<path>.lora_A.weight`).
pub fn adapter_tensors(pairs: &[WrittenPair]) -> Vec<AdapterTensor> {
    let mut t = Vec::new();
    for p in pairs {
        let path = p.base_name.strip_suffix(".weight").expect("a weight name");
        t.push((
            format!("base_model.model.{path}.lora_A.weight"),
            vec![p.r, p.in_features],
            p.a.clone(),
        ));
        t.push((
            format!("base_model.model.{path}.lora_B.weight"),
            vec![p.out_features, p.r],
            p.b.clone(),
        ));
    }
    t
}

/// `adapter_config.json` as PEFT writes it (plus `spec.extra_config`).
pub fn config_json(spec: &AdapterSpec) -> String {
    let targets: Vec<String> = spec.targets.iter().map(|t| format!("{t:?}")).collect();
    format!(
        r#"{{"alpha_pattern": {{}}, "base_model_name_or_path": "tiny-llama", "bias": "none", "fan_in_fan_out": false,
  "inference_mode": true, "init_lora_weights": true, "layers_to_transform": null, "lora_alpha": {alpha},
  "lora_dropout": 0.05, "modules_to_save": null, "peft_type": "LORA", "r": {r}, "rank_pattern": {{}},
  "revision": null, "target_modules": [{targets}], "task_type": "CAUSAL_LM", "use_dora": false,
  "use_rslora": {rs}{extra}}}"#,
        alpha = spec.alpha,
        r = spec.r,
        targets = targets.join(", "),
        rs = spec.use_rslora,
        extra = spec.extra_config
    )
}

fn le_bytes(dtype: &DType, v: &[f32]) -> Vec<u8> {
    match dtype {
        DType::F32 => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        DType::F16 => v
            .iter()
            .flat_map(|&x| half::f16::from_f32(x).to_bits().to_le_bytes())
            .collect(),
        DType::BF16 => v
            .iter()
            .flat_map(|&x| half::bf16::from_f32(x).to_bits().to_le_bytes())
            .collect(),
        other => panic!("cannot write {other:?}"),
    }
}

/// Writes `adapter_config.json` (from `spec`) and the weights file holding `tensors`.
pub fn write_adapter_files(dir: &Path, spec: &AdapterSpec, tensors: &[AdapterTensor]) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("adapter_config.json"), config_json(spec)).unwrap();
    let entries: Vec<(&str, DType, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(k, s, v)| (k.as_str(), spec.dtype.clone(), s.clone(), le_bytes(&spec.dtype, v)))
        .collect();
    match spec.format {
        Format::Safetensors => std::fs::write(dir.join("adapter_model.safetensors"), to_bytes(&entries)).unwrap(),
        Format::Bin => std::fs::write(dir.join("adapter_model.bin"), torch_save::to_bytes(&entries).unwrap()).unwrap(),
    }
}

/// Writes the adapter `spec` describes into `dir` and returns its pairs.
pub fn write_peft_adapter(dir: &Path, spec: &AdapterSpec) -> Vec<WrittenPair> {
    let pairs = adapter_pairs(spec);
    write_adapter_files(dir, spec, &adapter_tensors(&pairs));
    pairs
}

/// The rotary row order of a weight with `n_heads` heads: entry `r` is the source row that
/// lands at row `r`. It is numpy's `w.reshape(n_heads, 2, hd // 2, -1).swapaxes(1, 2)` done on
/// the row indices (independently of the converter's `permuted_row`).
pub fn rotary_order(n_rows: usize, n_heads: usize) -> Vec<usize> {
    let hd = n_rows / n_heads;
    let half = hd / 2;
    // Index [head][pair half][i] of the (n_heads, 2, half) view, read in (head, i, pair half) order.
    let view = |head: usize, which: usize, i: usize| head * hd + which * half + i;
    let mut order = Vec::with_capacity(n_rows);
    for head in 0..n_heads {
        for i in 0..half {
            for which in 0..2 {
                order.push(view(head, which, i));
            }
        }
    }
    order
}
