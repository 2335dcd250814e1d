//! Merging an adapter into the base weights while they stream through the converter:
//! row `i` of an adapted weight becomes `W[i] + scale * B[i] · A` (in f32), computed for the
//! source row before the Q/K rotary permutation moves it, so the merged weight is permuted
//! exactly as the base weight is. Only the adapter is held whole.

use super::peft::{LoraPair, Module, PeftAdapter};
use crate::hf::LlamaConfig;
use anyhow::{bail, Context};
use std::path::Path;

/// An adapter to merge at conversion and the scale it is merged with.
#[derive(Debug)]
pub struct LoraMerge {
    pub adapter: PeftAdapter,
    /// `--lora-scale`: multiplies the adapter's own `alpha / r` (or `alpha / sqrt(r)`).
    pub user_scale: f64,
}

impl LoraMerge {
    /// Reads the PEFT adapter in `dir`; `user_scale` must be finite.
    pub fn open(dir: &Path, user_scale: f64) -> anyhow::Result<LoraMerge> {
        if !user_scale.is_finite() {
            bail!("the LoRA scale {user_scale} is not a finite number");
        }
        let adapter =
            PeftAdapter::open(dir).with_context(|| format!("cannot read the LoRA adapter {}", dir.display()))?;
        let merge = LoraMerge { adapter, user_scale };
        // The merge multiplies in f32: a factor beyond its range would make every adapted row
        // inf or NaN (and the conversion fail later, blaming the base weights).
        if !(merge.scale() as f32).is_finite() {
            bail!(
                "the LoRA scale {user_scale} times the adapter's alpha / r ({}) is {:e}, beyond f32's range",
                merge.adapter.config.scale(1.0),
                merge.scale()
            );
        }
        Ok(merge)
    }

    /// The factor `B·A` is added with.
    pub fn scale(&self) -> f64 {
        self.adapter.config.scale(self.user_scale)
    }

    /// Checks every pair against the base model's config and tensor shapes: each must adapt a
    /// tensor the base has (`base_shape` gives its `[out, in]` shape, `None` when absent).
    pub fn check_against_base(
        &self,
        cfg: &LlamaConfig,
        base_shape: impl Fn(&str) -> Option<Vec<usize>>,
    ) -> anyhow::Result<()> {
        for p in &self.adapter.pairs {
            let base = p.hf_weight_name();
            let Some(shape) = base_shape(&base) else {
                bail!(
                    "adapter tensor {:?} adapts {base}, which the base checkpoint does not have (it has {} layers)",
                    p.a_key,
                    cfg.n_layer
                );
            };
            check_pair_shape(p, &shape)?;
        }
        Ok(())
    }
}

/// The `[out, in]` shape a Llama with this config has for `module`.
pub fn expected_shape(cfg: &LlamaConfig, module: Module) -> [usize; 2] {
    let h = cfg.hidden_size as usize;
    let kv = (cfg.n_head_kv * cfg.head_dim()) as usize;
    let ff = cfg.intermediate_size as usize;
    match module {
        Module::Q | Module::O => [h, h],
        Module::K | Module::V => [kv, h],
        Module::Gate | Module::Up => [ff, h],
        Module::Down => [h, ff],
    }
}

/// A pair fits a weight of `shape` (`[out, in]`) when `A` is `r x in` and `B` is `out x r`.
pub fn check_pair_shape(p: &LoraPair, shape: &[usize]) -> anyhow::Result<()> {
    if shape.len() != 2 || shape[1] != p.in_features || shape[0] != p.out_features {
        bail!(
            "adapter tensor {:?} is for another shape: lora_A is {} x {} and lora_B {} x {} (a {} x {} update), but {} is {:?}",
            p.a_key,
            p.rank,
            p.in_features,
            p.out_features,
            p.rank,
            p.out_features,
            p.in_features,
            p.hf_weight_name(),
            shape
        );
    }
    Ok(())
}

/// Adds `scale * B[row] · A` to `out` (one row of the weight, `in_features` long).
pub fn add_delta_row(p: &LoraPair, scale: f32, row: usize, out: &mut [f32]) {
    debug_assert_eq!(out.len(), p.in_features);
    let b_row = &p.b[row * p.rank..(row + 1) * p.rank];
    for (k, &b) in b_row.iter().enumerate() {
        let coef = scale * b;
        if coef == 0.0 {
            continue;
        }
        let a_row = &p.a[k * p.in_features..(k + 1) * p.in_features];
        for (o, &a) in out.iter_mut().zip(a_row) {
            *o += coef * a;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delta_row_is_b_times_a() {
        // A = [[1, 2, 3], [4, 5, 6]] (r = 2, in = 3), B = [[1, 0], [0.5, -1]] (out = 2).
        let p = LoraPair {
            layer: 0,
            module: Module::V,
            rank: 2,
            in_features: 3,
            out_features: 2,
            a: vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
            b: vec![1.0, 0.0, 0.5, -1.0],
            a_key: "a".into(),
        };
        let mut row = vec![10.0, 20.0, 30.0];
        add_delta_row(&p, 2.0, 1, &mut row);
        // 2 * (0.5 * [1 2 3] - [4 5 6]) = [-7, -8, -9]
        assert_eq!(row, [3.0, 12.0, 21.0]);
        assert!(check_pair_shape(&p, &[2, 3]).is_ok());
        let err = check_pair_shape(&p, &[2, 4]).unwrap_err().to_string();
        assert!(err.contains("another shape") && err.contains("[2, 4]"), "{err}");
    }
}
