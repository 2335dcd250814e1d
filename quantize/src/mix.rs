//! Quantization mixes: which ggml type each tensor gets for a requested file type, following
//! llama.cpp's `llama_tensor_get_type` (src/llama-quant.cpp) for Llama models without an
//! importance matrix.
//!
//! | tensor                                  | f32 | f16 | q8_0 | q4_0 | q4_k_m |
//! |-----------------------------------------|-----|-----|------|------|--------|
//! | 1-D (norms), names not ending in weight | F32 | F32 | F32  | F32  | F32    |
//! | output.weight (or tied token_embd)      | F32 | F16 | Q8_0 | Q6_K | Q6_K   |
//! | token_embd.weight (untied)              | F32 | F16 | Q8_0 | Q4_0 | Q4_K   |
//! | attn_v, layers `use_more_bits` picks    | F32 | F16 | Q8_0 | Q4_0 | Q6_K   |
//! | ffn_down, layers `use_more_bits` picks  | F32 | F16 | Q8_0 | Q4_0 | Q6_K   |
//! | every other 2-D weight                  | F32 | F16 | Q8_0 | Q4_0 | Q4_K   |
//!
//! `use_more_bits(i, n) = i < n/8 || i >= 7n/8 || (i - n/8) % 3 == 2`. For 80-layer Llamas
//! (70B) attn_v goes Q4_K → Q5_K. When a row length is not a multiple of the block size:
//! output/tied embedding → Q8_0; otherwise Q4_K → Q5_0, Q5_K → Q5_1, Q6_K → Q8_0, and F16 when
//! even the fallback does not fit (so stories260K's 64-wide rows get Q5_0 in q4_k_m).

use edgeact_runtime::quant::{GgmlType, QUANTIZE_TYPES};
use std::fmt;
use std::str::FromStr;

/// A requested output file type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mix {
    F32,
    F16,
    Q8_0,
    Q4_0,
    Q4KM,
}

impl Mix {
    pub const ALL: [Mix; 5] = [Mix::F32, Mix::F16, Mix::Q8_0, Mix::Q4_0, Mix::Q4KM];

    /// `general.file_type` (`enum llama_ftype`).
    pub fn file_type(self) -> u32 {
        match self {
            Mix::F32 => 0,
            Mix::F16 => 1,
            Mix::Q4_0 => 2,
            Mix::Q8_0 => 7,
            Mix::Q4KM => 15,
        }
    }

    /// The default type of quantizable tensors.
    pub fn base_type(self) -> GgmlType {
        match self {
            Mix::F32 => GgmlType::F32,
            Mix::F16 => GgmlType::F16,
            Mix::Q8_0 => GgmlType::Q8_0,
            Mix::Q4_0 => GgmlType::Q4_0,
            Mix::Q4KM => GgmlType::Q4_K,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Mix::F32 => "f32",
            Mix::F16 => "f16",
            Mix::Q8_0 => "q8_0",
            Mix::Q4_0 => "q4_0",
            Mix::Q4KM => "q4_k_m",
        }
    }
}

impl fmt::Display for Mix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Mix {
    type Err = String;
    fn from_str(s: &str) -> Result<Mix, String> {
        Mix::ALL
            .into_iter()
            .find(|m| m.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("unknown type {s:?} (expected one of f32, f16, q8_0, q4_0, q4_k_m)"))
    }
}

fn use_more_bits(i: i64, n: i64) -> bool {
    i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2
}

/// Chooses tensor types in file order (llama.cpp counts attn_v / ffn_down tensors as it goes).
#[derive(Clone, Debug)]
pub struct MixPlanner {
    mix: Mix,
    n_layer: i64,
    n_attn_v: i64,
    tied_embeddings: bool,
    i_attn_v: i64,
    i_ffn_down: i64,
}

impl MixPlanner {
    /// `names`: every tensor name of the output file (to count attn_v tensors and see whether
    /// `output.weight` exists).
    pub fn new<'a>(mix: Mix, n_layer: u32, names: impl IntoIterator<Item = &'a str>) -> MixPlanner {
        let mut n_attn_v = 0;
        let mut has_output = false;
        for n in names {
            n_attn_v += n.contains("attn_v.weight") as i64;
            has_output |= n == "output.weight";
        }
        MixPlanner {
            mix,
            n_layer: n_layer as i64,
            n_attn_v,
            tied_embeddings: !has_output,
            i_attn_v: 0,
            i_ffn_down: 0,
        }
    }

    /// The type for the next tensor. `keep` is what a tensor that must not be quantized stays
    /// as (F32 for checkpoint inputs, the source type for GGUF inputs).
    pub fn choose(&mut self, name: &str, dims: &[u64], keep: GgmlType) -> Result<GgmlType, String> {
        let quantizable = dims.len() >= 2 && name.ends_with("weight") && !name.contains("_norm.weight");
        if !quantizable {
            return Ok(keep);
        }
        let base = self.mix.base_type();
        if matches!(base, GgmlType::F32 | GgmlType::F16) {
            return Ok(base);
        }
        let nx = dims[0];
        let mut ty = base;
        if name == "output.weight" || (self.tied_embeddings && name == "token_embd.weight") {
            if !nx.is_multiple_of(ty.block_size() as u64) {
                ty = GgmlType::Q8_0;
            } else if ty != GgmlType::Q8_0 {
                ty = GgmlType::Q6_K;
            }
        } else if name.contains("attn_v.weight") {
            if self.mix == Mix::Q4KM && use_more_bits(self.i_attn_v, self.n_attn_v) {
                ty = GgmlType::Q6_K;
            }
            // llama.cpp's LLM_TYPE_70B (80 layers for Llama): 8 heads share attn_v.
            if self.n_layer == 80 && matches!(ty, GgmlType::Q3_K | GgmlType::Q4_K) {
                ty = GgmlType::Q5_K;
            }
            self.i_attn_v += 1;
        } else if name.contains("ffn_down") {
            if self.mix == Mix::Q4KM && use_more_bits(self.i_ffn_down, self.n_layer) {
                ty = GgmlType::Q6_K;
            }
            self.i_ffn_down += 1;
        }
        // Row lengths that are not whole blocks fall back as llama.cpp's tensor_type_fallback.
        if !nx.is_multiple_of(ty.block_size() as u64) {
            let fb = match ty {
                GgmlType::Q4_K => GgmlType::Q5_0,
                GgmlType::Q5_K => GgmlType::Q5_1,
                GgmlType::Q6_K => GgmlType::Q8_0,
                other => other,
            };
            ty = if !nx.is_multiple_of(fb.block_size() as u64) {
                GgmlType::F16
            } else {
                fb
            };
        }
        // Every type the rules above can pick has a quantizer; this guards future rules.
        if !QUANTIZE_TYPES.contains(&ty) {
            return Err(format!(
                "tensor {name:?} (row length {nx}): llama.cpp's choice {ty} cannot be written by edgeact; \
                 use --type q4_0 or q8_0"
            ));
        }
        Ok(ty)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(mix: Mix, n_layer: u32, tied: bool, nx: u64) -> Vec<(String, GgmlType)> {
        let mut names = vec!["token_embd.weight".to_string()];
        for i in 0..n_layer {
            for t in crate::hf::BLOCK_TENSORS {
                names.push(format!("blk.{i}.{t}.weight"));
            }
        }
        names.push("output_norm.weight".into());
        if !tied {
            names.push("output.weight".into());
        }
        let mut p = MixPlanner::new(mix, n_layer, names.iter().map(String::as_str));
        names
            .iter()
            .map(|n| {
                let dims: Vec<u64> = if n.contains("norm") { vec![nx] } else { vec![nx, 512] };
                (n.clone(), p.choose(n, &dims, GgmlType::F32).unwrap())
            })
            .collect()
    }

    #[test]
    fn q4_k_m_matches_llama_cpp_for_32_layers() {
        let p = plan(Mix::Q4KM, 32, false, 4096);
        let ty = |n: &str| p.iter().find(|(x, _)| x == n).unwrap().1;
        assert_eq!(ty("token_embd.weight"), GgmlType::Q4_K);
        assert_eq!(ty("output.weight"), GgmlType::Q6_K);
        assert_eq!(ty("output_norm.weight"), GgmlType::F32);
        assert_eq!(ty("blk.0.attn_norm.weight"), GgmlType::F32);
        // use_more_bits(i, 32): i < 4, i >= 28, (i - 4) % 3 == 2.
        let more: Vec<u32> = (0..32)
            .filter(|&i| ty(&format!("blk.{i}.attn_v.weight")) == GgmlType::Q6_K)
            .collect();
        assert_eq!(more, [0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31]);
        for i in 0..32 {
            assert_eq!(
                ty(&format!("blk.{i}.ffn_down.weight")),
                ty(&format!("blk.{i}.attn_v.weight"))
            );
            for t in ["attn_q", "attn_k", "attn_output", "ffn_gate", "ffn_up"] {
                assert_eq!(ty(&format!("blk.{i}.{t}.weight")), GgmlType::Q4_K);
            }
        }
    }

    #[test]
    fn tied_embeddings_and_fallbacks() {
        let p = plan(Mix::Q4_0, 2, true, 4096);
        assert_eq!(p[0], ("token_embd.weight".into(), GgmlType::Q6_K));
        let p = plan(Mix::Q8_0, 2, true, 4096);
        assert!(p.iter().all(|(n, t)| *t
            == if n.contains("norm") {
                GgmlType::F32
            } else {
                GgmlType::Q8_0
            }));
        // Rows of 64 (a multiple of 32, not 256): output falls back to Q8_0, q4_0 is fine.
        let p = plan(Mix::Q4_0, 2, false, 64);
        assert_eq!(p.last().unwrap().1, GgmlType::Q8_0);
        // ... and q4_k_m falls back as llama.cpp's tensor_type_fallback: Q4_K → Q5_0 (other
        // weights), Q6_K → Q8_0 (attn_v/ffn_down picked by use_more_bits, 1 layer: all),
        // output → Q8_0; rows of 64 are whole Q5_0/Q8_0 blocks.
        let p = plan(Mix::Q4KM, 1, false, 64);
        let ty = |n: &str| p.iter().find(|(x, _)| x == n).unwrap().1;
        assert_eq!(ty("token_embd.weight"), GgmlType::Q5_0);
        assert_eq!(ty("blk.0.attn_q.weight"), GgmlType::Q5_0);
        assert_eq!(ty("blk.0.ffn_up.weight"), GgmlType::Q5_0);
        assert_eq!(ty("blk.0.attn_v.weight"), GgmlType::Q8_0);
        assert_eq!(ty("blk.0.ffn_down.weight"), GgmlType::Q8_0);
        assert_eq!(ty("output.weight"), GgmlType::Q8_0);
        // 80 layers: attn_v goes Q4_K → Q5_K, whose fallback for short rows is Q5_1.
        let mut planner = MixPlanner::new(Mix::Q4KM, 80, (0..80).map(|_| "blk.1.attn_v.weight"));
        let mut v = Vec::new();
        for _ in 0..80 {
            v.push(planner.choose("blk.1.attn_v.weight", &[64, 64], GgmlType::F32).unwrap());
        }
        assert!(v.contains(&GgmlType::Q5_1) && v.contains(&GgmlType::Q8_0), "{v:?}");
        // Rows of 48 fit no quantized block: F16.
        let mut planner = MixPlanner::new(Mix::Q8_0, 1, ["x.weight"]);
        assert_eq!(
            planner.choose("x.weight", &[48, 2], GgmlType::F32).unwrap(),
            GgmlType::F16
        );
        assert_eq!(plan(Mix::F16, 1, false, 64)[1].1, GgmlType::F32);
        assert_eq!(plan(Mix::F16, 1, false, 64)[2].1, GgmlType::F16);
    }
}
