//! A PEFT LoRA adapter directory: `adapter_config.json` plus `adapter_model.safetensors` (or
//! `adapter_model.bin`, the `torch.save` zip format), read through the checkpoint readers.
//!
//! PEFT saves, for each adapted `nn.Linear` of the base model, two matrices:
//! `base_model.model.<module path>.lora_A.weight` (`r x in`) and `...lora_B.weight`
//! (`out x r`); the adapted layer computes `W x + scale * B (A x)` with
//! `scale = lora_alpha / r`, or `lora_alpha / sqrt(r)` with `use_rslora`. The adapter is small
//! (a few MiB to a few hundred), so it is read whole, as f32, and checked completely (shapes,
//! ranks, pairs, finite values) before anything is written.

use crate::checkpoint::Checkpoint;
use anyhow::{anyhow, bail, Context};
use serde_json::Value as Json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// `adapter_config.json` files larger than this are refused (real ones are about 1 KiB).
const MAX_CONFIG_BYTES: u64 = 16 << 20;

/// A Llama projection a LoRA pair can adapt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Module {
    Q,
    K,
    V,
    O,
    Gate,
    Up,
    Down,
}

impl Module {
    pub const ALL: [Module; 7] = [
        Module::Q,
        Module::K,
        Module::V,
        Module::O,
        Module::Gate,
        Module::Up,
        Module::Down,
    ];

    /// The PEFT / Hugging Face module name (`q_proj`, ...).
    pub fn hf_name(self) -> &'static str {
        match self {
            Module::Q => "q_proj",
            Module::K => "k_proj",
            Module::V => "v_proj",
            Module::O => "o_proj",
            Module::Gate => "gate_proj",
            Module::Up => "up_proj",
            Module::Down => "down_proj",
        }
    }

    /// `self_attn` or `mlp`.
    fn hf_parent(self) -> &'static str {
        match self {
            Module::Q | Module::K | Module::V | Module::O => "self_attn",
            Module::Gate | Module::Up | Module::Down => "mlp",
        }
    }

    /// The GGUF tensor name without the `blk.N.` prefix and `.weight` suffix.
    pub fn gguf_name(self) -> &'static str {
        match self {
            Module::Q => "attn_q",
            Module::K => "attn_k",
            Module::V => "attn_v",
            Module::O => "attn_output",
            Module::Gate => "ffn_gate",
            Module::Up => "ffn_up",
            Module::Down => "ffn_down",
        }
    }

    /// Q and K get the rotary row permutation in GGUF (see [`crate::hf::permuted_row`]).
    pub fn is_rotary(self) -> bool {
        matches!(self, Module::Q | Module::K)
    }

    pub fn from_hf_name(name: &str) -> Option<Module> {
        Module::ALL.into_iter().find(|m| m.hf_name() == name)
    }
}

/// Why a module name cannot be a target: the embeddings and the output head are refused with
/// their own message, anything else is unknown.
fn unsupported_target(name: &str) -> String {
    match name {
        "embed_tokens" | "lm_head" => format!(
            "LoRA on {name} is not supported (only the attention and MLP projections: {})",
            supported_list()
        ),
        _ => format!(
            "unknown target module {name:?} (a Llama adapter can target {})",
            supported_list()
        ),
    }
}

fn supported_list() -> String {
    Module::ALL.map(Module::hf_name).join(", ")
}

/// `target_modules` of the config.
#[derive(Clone, Debug, PartialEq)]
pub enum Targets {
    /// Module names, or dotted suffixes of module paths (PEFT matches `name == entry` or
    /// `name.ends_with("." + entry)`).
    List(Vec<String>),
    /// A regular expression over full module paths, or PEFT's `all-linear`; the tensors
    /// present are then the only statement of what is adapted.
    Pattern(String),
}

/// The keys of `adapter_config.json` the adapter's arithmetic depends on.
#[derive(Clone, Debug, PartialEq)]
pub struct PeftConfig {
    pub r: usize,
    pub lora_alpha: f64,
    pub target_modules: Targets,
    pub fan_in_fan_out: bool,
    pub use_rslora: bool,
}

impl PeftConfig {
    /// Parses and checks `adapter_config.json`. Keys other than the ones modelled are
    /// tolerated, except those that change what the tensors mean (DoRA, per-module rank or
    /// alpha patterns, full modules saved beside the adapter, other PEFT methods).
    pub fn from_json(text: &str) -> anyhow::Result<PeftConfig> {
        let j: Json = serde_json::from_str(text).map_err(|e| anyhow!("bad JSON: {e}"))?;
        let obj = j.as_object().ok_or_else(|| anyhow!("not a JSON object"))?;
        if let Some(t) = obj.get("peft_type").filter(|v| !v.is_null()) {
            let t = t.as_str().ok_or_else(|| anyhow!("peft_type {t} is not a string"))?;
            if !t.eq_ignore_ascii_case("lora") {
                bail!("peft_type {t:?}: only LORA adapters are supported");
            }
        }
        let flag = |k: &str| -> anyhow::Result<bool> {
            match obj.get(k) {
                None | Some(Json::Null) => Ok(false),
                Some(Json::Bool(b)) => Ok(*b),
                Some(v) => bail!("{k} = {v} is not true or false"),
            }
        };
        if flag("use_dora")? {
            bail!("use_dora = true: DoRA adapters (a magnitude vector per module) are not supported");
        }
        for k in ["rank_pattern", "alpha_pattern"] {
            match obj.get(k) {
                None | Some(Json::Null) => {}
                Some(Json::Object(m)) if m.is_empty() => {}
                Some(v) => bail!("{k} = {v}: per-module ranks or alphas are not supported"),
            }
        }
        match obj.get("modules_to_save") {
            None | Some(Json::Null) => {}
            Some(Json::Array(a)) if a.is_empty() => {}
            Some(v) => bail!(
                "modules_to_save = {v}: adapters that carry whole trained modules beside the LoRA matrices are not supported"
            ),
        }
        let r = match obj.get("r") {
            None | Some(Json::Null) => bail!("r (the LoRA rank) is missing"),
            Some(v) => v
                .as_u64()
                .filter(|&r| r > 0 && r <= u32::MAX as u64)
                .ok_or_else(|| anyhow!("r = {v} is not a positive integer"))? as usize,
        };
        let lora_alpha = match obj.get("lora_alpha") {
            None | Some(Json::Null) => bail!("lora_alpha is missing"),
            Some(v) => v
                .as_f64()
                .filter(|a| a.is_finite())
                .ok_or_else(|| anyhow!("lora_alpha = {v} is not a finite number"))?,
        };
        if lora_alpha == 0.0 {
            // PEFT would add nothing; llama.cpp reads alpha 0 as "no alpha" (scale 1), so the
            // two would disagree: refuse rather than pick one.
            bail!("lora_alpha is 0: the adapter would change nothing");
        }
        let target_modules = match obj.get("target_modules") {
            None | Some(Json::Null) => bail!("target_modules is missing"),
            Some(Json::String(s)) => Targets::Pattern(s.clone()),
            Some(Json::Array(a)) => {
                let mut names = Vec::with_capacity(a.len());
                for v in a {
                    let s = v
                        .as_str()
                        .ok_or_else(|| anyhow!("target_modules entry {v} is not a string"))?;
                    let last = s.rsplit('.').next().unwrap_or(s);
                    if Module::from_hf_name(last).is_none() {
                        bail!("target_modules: {}", unsupported_target(last));
                    }
                    names.push(s.to_string());
                }
                if names.is_empty() {
                    bail!("target_modules is empty");
                }
                Targets::List(names)
            }
            Some(v) => bail!("target_modules = {v} is neither a list of module names nor a string"),
        };
        let config = PeftConfig {
            r,
            lora_alpha,
            target_modules,
            fan_in_fan_out: flag("fan_in_fan_out")?,
            use_rslora: flag("use_rslora")?,
        };
        // Both numbers are stored and used as f32 (the merge's factor, a GGUF adapter's
        // `adapter.lora.alpha`): a finite f64 beyond f32's range would become inf there.
        for (what, v) in [("alpha / r", config.scale(1.0)), ("lora_alpha", config.gguf_alpha())] {
            let f = v as f32;
            if !f.is_finite() || f == 0.0 {
                bail!("lora_alpha = {lora_alpha:e}: {what} = {v:e} is not a finite non-zero f32");
            }
        }
        Ok(config)
    }

    /// The `adapter.lora.alpha` that makes llama.cpp's `alpha / r` equal PEFT's scale:
    /// `lora_alpha`, or `lora_alpha * sqrt(r)` with rsLoRA.
    pub fn gguf_alpha(&self) -> f64 {
        if self.use_rslora {
            self.lora_alpha * (self.r as f64).sqrt()
        } else {
            self.lora_alpha
        }
    }

    /// The factor `B·A` is multiplied by: `user_scale * alpha / r`, or
    /// `user_scale * alpha / sqrt(r)` with rsLoRA.
    pub fn scale(&self, user_scale: f64) -> f64 {
        let r = self.r as f64;
        let per_rank = if self.use_rslora { r.sqrt() } else { r };
        user_scale * self.lora_alpha / per_rank
    }

    /// Whether `target_modules` names the module at `path` (`model.layers.3.self_attn.q_proj`).
    fn targets(&self, path: &str) -> bool {
        match &self.target_modules {
            Targets::List(names) => names.iter().any(|n| path == n || path.ends_with(&format!(".{n}"))),
            Targets::Pattern(_) => true,
        }
    }
}

/// One adapted weight: `A` (`rank x in_features`) and `B` (`out_features x rank`), row-major.
#[derive(Clone, Debug)]
pub struct LoraPair {
    pub layer: u32,
    pub module: Module,
    pub rank: usize,
    pub in_features: usize,
    pub out_features: usize,
    pub a: Vec<f32>,
    pub b: Vec<f32>,
    /// The adapter's key of `A` (for messages).
    pub a_key: String,
}

impl LoraPair {
    /// The base checkpoint's tensor this pair adapts (`model.layers.N.self_attn.q_proj.weight`).
    pub fn hf_weight_name(&self) -> String {
        hf_weight_name(self.layer, self.module)
    }

    /// The GGUF name of the adapted tensor (`blk.N.attn_q.weight`).
    pub fn gguf_weight_name(&self) -> String {
        format!("blk.{}.{}.weight", self.layer, self.module.gguf_name())
    }
}

pub fn hf_weight_name(layer: u32, module: Module) -> String {
    format!(
        "model.layers.{layer}.{}.{}.weight",
        module.hf_parent(),
        module.hf_name()
    )
}

/// A PEFT LoRA adapter read whole and checked.
#[derive(Debug)]
pub struct PeftAdapter {
    pub dir: PathBuf,
    pub config: PeftConfig,
    /// Sorted by layer, then module (q, k, v, o, gate, up, down).
    pub pairs: Vec<LoraPair>,
    /// The files read (the converter never writes over them).
    pub files: Vec<PathBuf>,
    /// Things worth telling the user that do not stop the conversion.
    pub notes: Vec<String>,
}

/// Whether an adapter key is `A` or `B`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Half {
    A,
    B,
}

impl PeftAdapter {
    /// Reads `dir/adapter_config.json` and `dir/adapter_model.safetensors` (else
    /// `dir/adapter_model.bin`).
    pub fn open(dir: &Path) -> anyhow::Result<PeftAdapter> {
        let meta = std::fs::metadata(dir).with_context(|| format!("cannot read the adapter {}", dir.display()))?;
        if !meta.is_dir() {
            bail!(
                "the adapter {} is not a directory (a PEFT adapter is a directory with adapter_config.json and adapter_model.safetensors or adapter_model.bin)",
                dir.display()
            );
        }
        let config_path = dir.join("adapter_config.json");
        if !config_path.exists() {
            bail!(
                "{} has no adapter_config.json (a PEFT adapter directory holds adapter_config.json and adapter_model.safetensors or adapter_model.bin)",
                dir.display()
            );
        }
        let bytes = edgeact_runtime::files::read_regular(&config_path, MAX_CONFIG_BYTES)
            .map_err(|e| anyhow!("cannot read {}: {e}", config_path.display()))?;
        let text = String::from_utf8(bytes).map_err(|_| anyhow!("{} is not UTF-8", config_path.display()))?;
        let config = PeftConfig::from_json(&text).map_err(|e| anyhow!("{}: {e}", config_path.display()))?;

        let weights = ["adapter_model.safetensors", "adapter_model.bin"]
            .map(|n| dir.join(n))
            .into_iter()
            .find(|p| p.exists())
            .ok_or_else(|| {
                anyhow!(
                    "{} has no adapter_model.safetensors or adapter_model.bin",
                    dir.display()
                )
            })?;
        let ck = Checkpoint::open_files(std::slice::from_ref(&weights))?;

        let mut notes = Vec::new();
        if config.fan_in_fan_out {
            // PEFT itself resets the flag for nn.Linear targets (it only applies to GPT-2's
            // Conv1D): the matrices are stored as usual, which the shape checks confirm.
            notes.push(
                "adapter_config.json sets fan_in_fan_out, which PEFT ignores for a Llama's nn.Linear projections; the matrices are read in the usual (r x in, out x r) layout".into(),
            );
        }

        // (layer, module) -> the keys and tensors of A and B.
        let mut halves: BTreeMap<(u32, Module), [Option<String>; 2]> = BTreeMap::new();
        for t in ck.tensors() {
            let (layer, module, half) = parse_key(&t.name)?;
            if !config.targets(&format!(
                "model.layers.{layer}.{}.{}",
                module.hf_parent(),
                module.hf_name()
            )) {
                bail!(
                    "adapter tensor {:?} adapts {}, which target_modules in adapter_config.json does not list",
                    t.name,
                    module.hf_name()
                );
            }
            let slot = &mut halves.entry((layer, module)).or_default()[half as usize];
            if slot.is_some() {
                bail!("adapter tensor {:?} appears twice", t.name);
            }
            *slot = Some(t.name.clone());
        }
        if halves.is_empty() {
            bail!("{} holds no LoRA tensors", weights.display());
        }

        let mut pairs = Vec::with_capacity(halves.len());
        for ((layer, module), [a_key, b_key]) in halves {
            let (a_key, b_key) = match (a_key, b_key) {
                (Some(a), Some(b)) => (a, b),
                (Some(a), None) => bail!("adapter tensor {a:?} (lora_A) has no matching lora_B"),
                (None, Some(b)) => bail!("adapter tensor {b:?} (lora_B) has no matching lora_A"),
                (None, None) => unreachable!("an entry is made by one of its halves"),
            };
            let a_meta = ck.require(&a_key)?;
            let b_meta = ck.require(&b_key)?;
            if a_meta.shape.len() != 2 || b_meta.shape.len() != 2 {
                bail!(
                    "adapter tensors {a_key:?} {:?} and {b_key:?} {:?} must be matrices",
                    a_meta.shape,
                    b_meta.shape
                );
            }
            let (rank, in_features) = (a_meta.shape[0], a_meta.shape[1]);
            let (out_features, b_rank) = (b_meta.shape[0], b_meta.shape[1]);
            if rank != config.r || b_rank != config.r {
                bail!(
                    "rank mismatch: adapter tensor {a_key:?} has shape {:?} and {b_key:?} {:?}, but adapter_config.json says r = {}",
                    a_meta.shape,
                    b_meta.shape,
                    config.r
                );
            }
            if in_features == 0 || out_features == 0 {
                bail!("adapter tensor {a_key:?} or {b_key:?} is empty");
            }
            let read = |meta: &crate::TensorMeta| -> anyhow::Result<Vec<f32>> {
                let mut v = vec![0f32; meta.n_elements()];
                ck.read_rows_f32(meta, 0, &mut v)?;
                if let Some(i) = v.iter().position(|x| !x.is_finite()) {
                    let cols = meta.shape[1];
                    bail!(
                        "adapter tensor {:?} has a non-finite value ({}) at row {}, column {}",
                        meta.name,
                        v[i],
                        i / cols,
                        i % cols
                    );
                }
                Ok(v)
            };
            pairs.push(LoraPair {
                layer,
                module,
                rank,
                in_features,
                out_features,
                a: read(a_meta)?,
                b: read(b_meta)?,
                a_key,
            });
        }
        Ok(PeftAdapter {
            dir: dir.to_path_buf(),
            config,
            pairs,
            files: vec![config_path, weights],
            notes,
        })
    }

    /// The pair that adapts `model.layers.{layer}.<module>.weight`.
    pub fn pair(&self, layer: u32, module: Module) -> Option<&LoraPair> {
        self.pairs.iter().find(|p| p.layer == layer && p.module == module)
    }

    /// The rotary modules (q_proj, k_proj) the adapter has tensors for.
    pub fn rotary_modules(&self) -> Vec<Module> {
        let mut m: Vec<Module> = self.pairs.iter().map(|p| p.module).filter(|m| m.is_rotary()).collect();
        m.sort();
        m.dedup();
        m
    }
}

/// Parses `[base_model.model.]model.layers.N.(self_attn|mlp).<module>.lora_(A|B).weight`;
/// every other key is a clear error.
fn parse_key(key: &str) -> anyhow::Result<(u32, Module, Half)> {
    let name = key.strip_prefix("base_model.model.").unwrap_or(key);
    if name.contains("lora_embedding_") {
        bail!("adapter tensor {key:?}: {}", unsupported_target("embed_tokens"));
    }
    if name.contains("lora_magnitude_vector") {
        bail!("adapter tensor {key:?}: DoRA adapters are not supported");
    }
    let (module_path, half) = if let Some(p) = name.strip_suffix(".lora_A.weight") {
        (p, Half::A)
    } else if let Some(p) = name.strip_suffix(".lora_B.weight") {
        (p, Half::B)
    } else if name.ends_with(".bias") {
        bail!("adapter tensor {key:?}: LoRA biases are not supported (a Llama's projections have none)");
    } else {
        bail!("adapter tensor {key:?} is not a LoRA matrix (lora_A / lora_B): full trained weights in an adapter are not supported");
    };
    if module_path == "lm_head" || module_path.ends_with("embed_tokens") {
        let which = module_path.rsplit('.').next().unwrap_or(module_path);
        bail!("adapter tensor {key:?}: {}", unsupported_target(which));
    }
    let parse = || -> Option<(u32, &str, &str)> {
        let rest = module_path.strip_prefix("model.layers.")?;
        let mut parts = rest.split('.');
        let layer: u32 = parts.next()?.parse().ok()?;
        let parent = parts.next()?;
        let module = parts.next()?;
        parts.next().is_none().then_some((layer, parent, module))
    };
    let Some((layer, parent, module_name)) = parse() else {
        bail!("adapter tensor {key:?} does not adapt a Llama layer (model.layers.N.self_attn|mlp.<module>)");
    };
    let module = Module::from_hf_name(module_name)
        .ok_or_else(|| anyhow!("adapter tensor {key:?}: {}", unsupported_target(module_name)))?;
    if module.hf_parent() != parent {
        bail!(
            "adapter tensor {key:?}: {module_name} belongs to {}, not {parent}",
            module.hf_parent()
        );
    }
    Ok((layer, module, half))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(extra: &str) -> anyhow::Result<PeftConfig> {
        PeftConfig::from_json(&format!(
            r#"{{"peft_type":"LORA","r":8,"lora_alpha":16,"target_modules":["q_proj","v_proj"],"lora_dropout":0.05,
            "bias":"none","task_type":"CAUSAL_LM"{extra}}}"#
        ))
    }

    #[test]
    fn config_scale_rules() {
        let c = cfg("").unwrap();
        assert_eq!(
            (c.r, c.lora_alpha, c.use_rslora, c.fan_in_fan_out),
            (8, 16.0, false, false)
        );
        assert_eq!(c.scale(1.0), 2.0);
        assert_eq!(c.scale(0.5), 1.0);
        let rs = cfg(r#","use_rslora":true"#).unwrap();
        assert!((rs.scale(1.0) - 16.0 / 8f64.sqrt()).abs() < 1e-12);
        assert_eq!(
            cfg(r#","target_modules":"all-linear""#).unwrap().target_modules,
            Targets::Pattern("all-linear".into())
        );
    }

    #[test]
    fn config_errors_are_clear() {
        for (extra, expect) in [
            (
                r#","target_modules":["q_proj","rotary"]"#,
                "unknown target module \"rotary\"",
            ),
            (
                r#","target_modules":["embed_tokens"]"#,
                "LoRA on embed_tokens is not supported",
            ),
            (r#","target_modules":["lm_head"]"#, "LoRA on lm_head is not supported"),
            (r#","r":0"#, "r = 0 is not a positive integer"),
            (r#","r":null"#, "r (the LoRA rank) is missing"),
            (r#","lora_alpha":"x""#, "lora_alpha = \"x\""),
            (r#","lora_alpha":0"#, "lora_alpha is 0"),
            (
                r#","lora_alpha":1e39"#,
                "lora_alpha = 1e39: lora_alpha = 1e39 is not a finite",
            ),
            (r#","lora_alpha":1e-50"#, "alpha / r = 1.24"),
            (
                r#","lora_alpha":3e38,"use_rslora":true"#,
                "lora_alpha = 3e38: lora_alpha = 8.48",
            ),
            (r#","use_dora":true"#, "DoRA"),
            (r#","rank_pattern":{"q_proj":4}"#, "per-module"),
            (r#","modules_to_save":["lm_head"]"#, "modules_to_save"),
            (r#","peft_type":"IA3""#, "only LORA"),
            (r#","use_rslora":"yes""#, "use_rslora = \"yes\" is not true or false"),
        ] {
            let err = cfg(extra).unwrap_err().to_string();
            assert!(err.contains(expect), "{extra}: {err}");
        }
    }

    #[test]
    fn keys() {
        let (l, m, h) = parse_key("base_model.model.model.layers.12.mlp.down_proj.lora_B.weight").unwrap();
        assert!((l, m) == (12, Module::Down) && h == Half::B);
        for (key, expect) in [
            (
                "base_model.model.model.embed_tokens.lora_embedding_A",
                "LoRA on embed_tokens",
            ),
            ("base_model.model.lm_head.lora_A.weight", "LoRA on lm_head"),
            (
                "base_model.model.model.layers.0.self_attn.rotary.lora_A.weight",
                "unknown target module \"rotary\"",
            ),
            (
                "base_model.model.model.layers.0.mlp.q_proj.lora_A.weight",
                "belongs to self_attn",
            ),
            ("base_model.model.lm_head.weight", "not a LoRA matrix"),
            ("base_model.model.model.layers.0.self_attn.q_proj.lora_B.bias", "biases"),
        ] {
            let err = parse_key(key).unwrap_err().to_string();
            assert!(err.contains(expect) && err.contains(key), "{key}: {err}");
        }
    }
}
