//! llama.cpp's GGUF LoRA adapter format, written from a PEFT adapter (what llama.cpp's
//! `convert_lora_to_gguf.py` produces and `llama_adapter_lora_init` loads):
//!
//! - metadata `general.architecture = llama`, `general.type = adapter`,
//!   `adapter.type = lora`, `adapter.lora.alpha` (f32);
//! - per adapted weight `<gguf name>.lora_a` with ggml dims `[in, r]` (PEFT's `r x in` `A`,
//!   unchanged) and `<gguf name>.lora_b` with dims `[r, out]` (PEFT's `out x r` `B`), F32 or
//!   F16. For `attn_q` / `attn_k` the rows of `lora_b` get the rotary permutation the base
//!   weight gets, so `B·A` is permuted like `W` (that is why q/k need the base's head counts).
//!
//! llama.cpp scales an adapter by `alpha / r` with `r` read from `lora_b` (and by 1 when alpha
//! is 0). rsLoRA's `alpha / sqrt(r)` is expressed through alpha: the file stores
//! `alpha * sqrt(r)`.

use super::merge::{check_pair_shape, expected_shape};
use super::peft::{LoraPair, PeftAdapter};
use crate::gguf_writer::{GgufWriter, TensorSink};
use crate::hf::{permuted_row, LlamaConfig};
use anyhow::{anyhow, bail};
use edgeact_runtime::gguf::Value;
use edgeact_runtime::quant::{quantize_row, GgmlType};
use std::io::Write;
use std::path::{Path, PathBuf};

/// What to write.
#[derive(Clone, Debug)]
pub struct AdapterOptions {
    /// F32 (llama.cpp's default) or F16.
    pub ty: GgmlType,
    /// The base model's config: head counts for the Q/K permutation, and shapes to check.
    pub base: Option<LlamaConfig>,
    /// `general.name` (default: the adapter directory's name).
    pub name: Option<String>,
}

/// What was written.
#[derive(Clone, Debug)]
pub struct AdapterReport {
    pub output: PathBuf,
    pub file_size: u64,
    /// lora_a / lora_b pairs.
    pub pairs: usize,
    /// `adapter.lora.alpha` as written.
    pub alpha: f32,
}

/// Reads the base model's `config.json` from a model directory or the file itself.
pub fn read_base_config(path: &Path) -> anyhow::Result<(LlamaConfig, PathBuf)> {
    let file = if path.is_dir() {
        path.join("config.json")
    } else {
        path.to_path_buf()
    };
    Ok((LlamaConfig::from_file(&file)?, file))
}

/// Writes `adapter` to `output` atomically; `protect` lists more files (besides the adapter's
/// own) that `output` may not name.
pub fn write_adapter_gguf(
    adapter: &PeftAdapter,
    output: &Path,
    opts: &AdapterOptions,
    protect: &[&Path],
) -> anyhow::Result<AdapterReport> {
    if !matches!(opts.ty, GgmlType::F32 | GgmlType::F16) {
        bail!("adapter tensors are written as F32 or F16, not {}", opts.ty);
    }
    let rotary = adapter.rotary_modules();
    match &opts.base {
        None if !rotary.is_empty() => bail!(
            "the adapter targets {}, whose lora_b rows get the rotary permutation of the base model's heads: pass the base model's directory or config.json with --base",
            rotary.iter().map(|m| m.hf_name()).collect::<Vec<_>>().join(" and ")
        ),
        None => {}
        Some(cfg) => {
            for p in &adapter.pairs {
                if p.layer >= cfg.n_layer {
                    bail!(
                        "adapter tensor {:?} adapts layer {}, but the base model has {} layers",
                        p.a_key,
                        p.layer,
                        cfg.n_layer
                    );
                }
                check_pair_shape(p, &expected_shape(cfg, p.module))?;
            }
        }
    }

    let mut w = GgufWriter::new();
    let alpha = adapter.config.gguf_alpha() as f32;
    let name = opts
        .name
        .clone()
        .or_else(|| {
            adapter
                .dir
                .canonicalize()
                .ok()?
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "adapter".into());
    w.set_str("general.architecture", "llama")?;
    w.set_str("general.type", "adapter")?;
    w.set_str("general.name", name)?;
    w.set(
        "general.file_type",
        Value::U32(if opts.ty == GgmlType::F16 { 1 } else { 0 }),
    )?;
    w.set_str("adapter.type", "lora")?;
    w.set("adapter.lora.alpha", Value::F32(alpha))?;
    w.set("general.quantization_version", Value::U32(2))?;

    // (pair, is lora_b) per declared tensor.
    let mut plan: Vec<(&LoraPair, bool)> = Vec::new();
    for p in &adapter.pairs {
        let base = p.gguf_weight_name();
        w.add_tensor(
            format!("{base}.lora_a"),
            &[p.in_features as u64, p.rank as u64],
            opts.ty,
        )?;
        w.add_tensor(
            format!("{base}.lora_b"),
            &[p.rank as u64, p.out_features as u64],
            opts.ty,
        )?;
        plan.push((p, false));
        plan.push((p, true));
    }

    let heads = |p: &LoraPair| -> Option<usize> {
        let cfg = opts.base.as_ref()?;
        match p.module {
            super::peft::Module::Q => Some(cfg.n_head as usize),
            super::peft::Module::K => Some(cfg.n_head_kv as usize),
            _ => None,
        }
    };
    let mut inputs: Vec<&Path> = adapter.files.iter().map(PathBuf::as_path).collect();
    inputs.extend_from_slice(protect);
    let ty = opts.ty;
    let summary = w.write_file(output, &inputs, |i, _decl, sink| -> anyhow::Result<()> {
        let (p, is_b) = plan[i];
        if !is_b {
            return write_rows(sink, ty, &p.a, p.in_features);
        }
        match heads(p) {
            None => write_rows(sink, ty, &p.b, p.rank),
            Some(n_heads) => {
                let mut permuted = vec![0f32; p.b.len()];
                for (r, row) in permuted.chunks_exact_mut(p.rank).enumerate() {
                    let from = permuted_row(r, p.out_features, n_heads);
                    row.copy_from_slice(&p.b[from * p.rank..(from + 1) * p.rank]);
                }
                write_rows(sink, ty, &permuted, p.rank)
            }
        }
    })?;
    Ok(AdapterReport {
        output: summary.path.unwrap_or_else(|| output.to_path_buf()),
        file_size: summary.file_size,
        pairs: adapter.pairs.len(),
        alpha,
    })
}

fn write_rows(sink: &mut TensorSink<'_>, ty: GgmlType, values: &[f32], row_len: usize) -> anyhow::Result<()> {
    let row_bytes = ty.row_bytes(row_len as u64).expect("F32/F16 rows") as usize;
    let mut buf = vec![0u8; row_bytes];
    for row in values.chunks_exact(row_len) {
        if ty == GgmlType::F16 {
            if let Some(x) = row.iter().find(|x| x.abs() > f32::from(half::f16::MAX)) {
                bail!("the value {x} does not fit F16: write the adapter as F32");
            }
        }
        quantize_row(ty, row, &mut buf).map_err(|e| anyhow!("cannot store as {ty}: {e}"))?;
        sink.write_all(&buf)?;
    }
    Ok(())
}
