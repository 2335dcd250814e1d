//! LoRA adapters applied at load time, in llama.cpp's GGUF adapter format.
//!
//! An adapter file is a GGUF with `general.type = "adapter"`, `adapter.type = "lora"`,
//! `general.architecture` of the base model, `adapter.lora.alpha` (f32; missing or 0 means "no
//! alpha scaling", as llama.cpp reads it), and for each adapted base matrix `W` (`rows` outputs of
//! `cols` inputs, ggml dims `[cols, rows]`) two tensors: `<W's name>.lora_a` with ggml dims
//! `[cols, r]` (r rows of `cols` elements) and `<W's name>.lora_b` with dims `[r, rows]`.
//!
//! Applied, the matrix computes `W·x + scale · B·(A·x)` with `scale = user_scale · alpha / r`
//! (`user_scale` when alpha is 0): two extra low-rank matmuls next to the base one, so the base
//! weights stay untouched in the mapping (one base serves any number of adapters, repacked or
//! not). Adapter tensors are read in place from their own mapping with the CPU matmul kernels.

use super::ops::{self, Activations, QMatrix, ThreadPool};
use super::ModelError;
use crate::gguf::GgufFile;
use crate::quant::GgmlType;
use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

/// Tensor types an adapter's A and B matrices may have.
pub const LORA_TENSOR_TYPES: [GgmlType; 4] = [GgmlType::F32, GgmlType::F16, GgmlType::BF16, GgmlType::Q8_0];

const SUFFIX_A: &str = ".lora_a";
const SUFFIX_B: &str = ".lora_b";

/// One of an adapter's matrices inside its file: `rows` rows of `cols` elements of `ty`.
#[derive(Clone, Debug)]
struct LoraTensor {
    name: String,
    ty: GgmlType,
    rows: usize,
    cols: usize,
    /// Absolute byte range in the adapter's file image.
    range: Range<usize>,
}

/// The A/B pair of one adapted base matrix.
#[derive(Clone, Debug)]
pub struct LoraPair {
    /// Name of the base matrix, e.g. `blk.3.attn_q.weight`.
    pub target: String,
    a: LoraTensor,
    b: LoraTensor,
}

impl LoraPair {
    /// Inputs of the base matrix (columns of A).
    pub fn n_in(&self) -> usize {
        self.a.cols
    }
    /// Outputs of the base matrix (rows of B).
    pub fn n_out(&self) -> usize {
        self.b.rows
    }
    pub fn rank(&self) -> usize {
        self.a.rows
    }
}

/// A checked LoRA adapter file (no base model needed yet; see `LlamaModel::apply_lora`).
pub struct LoraAdapter {
    file: Arc<GgufFile>,
    source: String,
    architecture: String,
    alpha: f32,
    pairs: Vec<LoraPair>,
}

impl std::fmt::Debug for LoraAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoraAdapter")
            .field("source", &self.source)
            .field("architecture", &self.architecture)
            .field("alpha", &self.alpha)
            .field("pairs", &self.pairs.len())
            .finish()
    }
}

fn lora_err(source: &str, msg: impl Into<String>) -> ModelError {
    ModelError::Lora {
        file: source.to_string(),
        msg: msg.into(),
    }
}

impl LoraAdapter {
    /// Maps and checks an adapter file.
    pub fn open(path: impl AsRef<Path>) -> Result<LoraAdapter, ModelError> {
        let path = path.as_ref();
        let source = path.display().to_string();
        let file = GgufFile::open(path).map_err(|e| lora_err(&source, e.to_string()))?;
        LoraAdapter::from_file(Arc::new(file), source)
    }

    /// Checks an already opened adapter file; `source` names it in errors.
    pub fn from_file(file: Arc<GgufFile>, source: impl Into<String>) -> Result<LoraAdapter, ModelError> {
        let source = source.into();
        let err = |msg: String| lora_err(&source, msg);
        let str_key = |key: &str| file.get_str(key).map_err(|e| err(e.to_string()));
        match str_key("general.type")? {
            Some("adapter") => {}
            Some(other) => {
                return Err(err(format!(
                    "general.type is {other:?}, not \"adapter\": this is not a LoRA adapter file (models go after -m)"
                )))
            }
            None => {
                return Err(err(
                    "general.type is missing: this is not a LoRA adapter file (models go after -m)".into(),
                ))
            }
        }
        match str_key("adapter.type")? {
            Some("lora") => {}
            other => {
                return Err(err(format!(
                    "adapter.type is {}, only \"lora\" adapters are supported",
                    other.map_or("missing".to_string(), |s| format!("{s:?}"))
                )))
            }
        }
        let architecture = str_key("general.architecture")?
            .ok_or_else(|| err("general.architecture is missing".into()))?
            .to_string();
        let alpha = file
            .get_f32("adapter.lora.alpha")
            .map_err(|e| err(e.to_string()))?
            .unwrap_or(0.0);
        if !alpha.is_finite() {
            return Err(err(format!("adapter.lora.alpha is {alpha}, not a finite number")));
        }

        // Pair the tensors by base name; anything else in the file is an error (a model file
        // given as an adapter, or a format we do not know).
        let mut halves: BTreeMap<String, (Option<LoraTensor>, Option<LoraTensor>)> = BTreeMap::new();
        let data_offset = file.header().data_offset;
        for info in file.tensors() {
            let (target, is_a) = if let Some(t) = info.name.strip_suffix(SUFFIX_A) {
                (t, true)
            } else if let Some(t) = info.name.strip_suffix(SUFFIX_B) {
                (t, false)
            } else {
                return Err(err(format!(
                    "tensor {:?} is not a LoRA tensor (names end in {SUFFIX_A} or {SUFFIX_B})",
                    info.name
                )));
            };
            if info.dims.len() != 2 {
                return Err(err(format!(
                    "tensor {:?} has {} dimensions {:?}, expected 2",
                    info.name,
                    info.dims.len(),
                    info.dims
                )));
            }
            let dim = |d: u64| {
                usize::try_from(d).map_err(|_| err(format!("tensor {:?}: dimension {d} too large", info.name)))
            };
            let (cols, rows) = (dim(info.dims[0])?, dim(info.dims[1])?);
            if rows == 0 || cols == 0 {
                return Err(err(format!(
                    "tensor {:?} has an empty dimension {:?} (rank 0?)",
                    info.name, info.dims
                )));
            }
            if !LORA_TENSOR_TYPES.contains(&info.ty) {
                return Err(err(format!(
                    "tensor {:?} has type {}; adapter tensors may be {}",
                    info.name,
                    info.ty,
                    LORA_TENSOR_TYPES.map(|t| t.name()).join(", ")
                )));
            }
            let start =
                usize::try_from(data_offset + info.offset).map_err(|_| err("tensor offset too large".into()))?;
            let data = file.tensor_data(info);
            ops::check_matrix(info.ty, rows, cols, data).map_err(|e| err(format!("tensor {:?}: {e}", info.name)))?;
            check_finite(info.ty, cols, data).map_err(|row| {
                err(format!(
                    "tensor {:?} holds a NaN or infinite value in row {row}",
                    info.name
                ))
            })?;
            let t = LoraTensor {
                name: info.name.clone(),
                ty: info.ty,
                rows,
                cols,
                range: start..start + data.len(),
            };
            let entry = halves.entry(target.to_string()).or_default();
            if is_a {
                entry.0 = Some(t);
            } else {
                entry.1 = Some(t);
            }
        }
        let mut pairs = Vec::with_capacity(halves.len());
        for (target, halves) in halves {
            let (a, b) = match halves {
                (Some(a), Some(b)) => (a, b),
                (Some(_), None) => {
                    return Err(err(format!(
                        "{target}{SUFFIX_A} has no {target}{SUFFIX_B} (a LoRA pair needs both)"
                    )))
                }
                (None, Some(_)) => {
                    return Err(err(format!(
                        "{target}{SUFFIX_B} has no {target}{SUFFIX_A} (a LoRA pair needs both)"
                    )))
                }
                (None, None) => continue,
            };
            // A is [n_in, r] (r rows), B is [r, n_out] (r columns).
            if a.rows != b.cols {
                return Err(err(format!(
                    "{target}: {} has rank {} (dims [{}, {}]) but {} has rank {} (dims [{}, {}]); expected lora_a \
                     [n_in, r] and lora_b [r, n_out]",
                    a.name, a.rows, a.cols, a.rows, b.name, b.cols, b.cols, b.rows
                )));
            }
            pairs.push(LoraPair { target, a, b });
        }
        if pairs.is_empty() {
            return Err(err("the file holds no LoRA tensors".into()));
        }
        Ok(LoraAdapter {
            file,
            source,
            architecture,
            alpha,
            pairs,
        })
    }

    /// The name errors and notes use for this adapter (its path).
    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn architecture(&self) -> &str {
        &self.architecture
    }

    /// `adapter.lora.alpha` (0 when the file has none).
    pub fn alpha(&self) -> f32 {
        self.alpha
    }

    /// The adapted matrices.
    pub fn pairs(&self) -> &[LoraPair] {
        &self.pairs
    }

    /// The ranks of the pairs, smallest and largest.
    pub fn rank_range(&self) -> (usize, usize) {
        let ranks = self.pairs.iter().map(LoraPair::rank);
        (ranks.clone().min().unwrap_or(0), ranks.max().unwrap_or(0))
    }

    /// The factor of `B·A` for a pair of rank `rank` at `user_scale`: llama.cpp's rule,
    /// `user_scale · alpha / rank`, or `user_scale` when alpha is 0.
    pub fn scale_for(&self, rank: usize, user_scale: f32) -> f32 {
        if self.alpha == 0.0 {
            user_scale
        } else {
            user_scale * self.alpha / rank as f32
        }
    }

    /// The delta of `pair` (one of [`LoraAdapter::pairs`]) at `user_scale`.
    pub(crate) fn delta(&self, pair: &LoraPair, user_scale: f32) -> LoraDelta {
        LoraDelta {
            file: Arc::clone(&self.file),
            source: self.source.clone(),
            a: pair.a.clone(),
            b: pair.b.clone(),
            scale: self.scale_for(pair.rank(), user_scale),
        }
    }
}

/// The first row of a `cols`-wide matrix holding a non-finite value, as `Err(row)`.
fn check_finite(ty: GgmlType, cols: usize, data: &[u8]) -> Result<(), usize> {
    // `check_matrix` checked that `data` is whole rows of this width.
    let row_bytes = ty.row_bytes(cols as u64).map_or(data.len(), |b| b as usize).max(1);
    let mut row = vec![0f32; cols];
    for (r, bytes) in data.chunks_exact(row_bytes).enumerate() {
        if ops::dequantize_row(ty, bytes, &mut row).is_err() || row.iter().any(|v| !v.is_finite()) {
            return Err(r);
        }
    }
    Ok(())
}

/// One adapter's low-rank term on one base matrix: `out += scale · B·(A·x)`.
pub struct LoraDelta {
    file: Arc<GgufFile>,
    source: String,
    a: LoraTensor,
    b: LoraTensor,
    scale: f32,
}

impl std::fmt::Debug for LoraDelta {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoraDelta")
            .field("source", &self.source)
            .field("a", &self.a.name)
            .field("b", &self.b.name)
            .field("rank", &self.rank())
            .field("scale", &self.scale)
            .finish()
    }
}

impl LoraDelta {
    pub fn rank(&self) -> usize {
        self.a.rows
    }

    pub fn scale(&self) -> f32 {
        self.scale
    }

    /// The adapter file this delta comes from.
    pub fn source(&self) -> &str {
        &self.source
    }

    fn matrix<'a>(&'a self, t: &LoraTensor) -> QMatrix<'a> {
        QMatrix {
            ty: t.ty,
            rows: t.rows,
            cols: t.cols,
            data: &self.file.bytes()[t.range.clone()],
            packed: None,
        }
    }

    /// A (`rank` rows of the base matrix's inputs) as a matrix view.
    pub fn a_matrix(&self) -> QMatrix<'_> {
        self.matrix(&self.a)
    }

    /// B (the base matrix's outputs, `rank` columns) as a matrix view.
    pub fn b_matrix(&self) -> QMatrix<'_> {
        self.matrix(&self.b)
    }

    /// Adds `scale · B·(A·x)` to `out` for the `n` rows of `x`, with the threaded matmul in f32
    /// arithmetic (the activations are not quantized: the delta is small and its rank short).
    pub(crate) fn add_to(&self, pool: &ThreadPool, x: &[f32], n: usize, out: &mut [f32]) -> Result<(), ModelError> {
        if self.scale == 0.0 {
            return Ok(());
        }
        let fail = |what: &LoraTensor, e: ops::KernelError| {
            ModelError::Compute(format!("LoRA {} ({}): {e}", what.name, self.source))
        };
        let mut mid = vec![0f32; n * self.rank()];
        ops::matmul(pool, Activations::F32, &self.a_matrix(), x, n, &mut mid).map_err(|e| fail(&self.a, e))?;
        let mut delta = vec![0f32; out.len()];
        ops::matmul(pool, Activations::F32, &self.b_matrix(), &mid, n, &mut delta).map_err(|e| fail(&self.b, e))?;
        for (o, d) in out.iter_mut().zip(&delta) {
            *o += self.scale * d;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A GGUF v3 image with string metadata and F32 tensors `(name, ggml dims, values)`.
    fn gguf(meta: &[(&str, &str)], alpha: Option<f32>, tensors: &[(&str, [u64; 2], Vec<f32>)]) -> Vec<u8> {
        fn string(out: &mut Vec<u8>, s: &str) {
            out.extend((s.len() as u64).to_le_bytes());
            out.extend(s.as_bytes());
        }
        let mut f = b"GGUF".to_vec();
        f.extend(3u32.to_le_bytes());
        f.extend((tensors.len() as u64).to_le_bytes());
        f.extend((meta.len() as u64 + alpha.is_some() as u64).to_le_bytes());
        for (k, v) in meta {
            string(&mut f, k);
            f.extend(8u32.to_le_bytes());
            string(&mut f, v);
        }
        if let Some(a) = alpha {
            string(&mut f, "adapter.lora.alpha");
            f.extend(6u32.to_le_bytes());
            f.extend(a.to_le_bytes());
        }
        let mut offset = 0u64;
        for (name, dims, values) in tensors {
            string(&mut f, name);
            f.extend(2u32.to_le_bytes());
            dims.iter().for_each(|d| f.extend(d.to_le_bytes()));
            f.extend(0u32.to_le_bytes());
            f.extend(offset.to_le_bytes());
            offset += (values.len() * 4).next_multiple_of(32) as u64;
        }
        while !f.len().is_multiple_of(32) {
            f.push(0);
        }
        for (_, _, values) in tensors {
            values.iter().for_each(|v| f.extend(v.to_le_bytes()));
            while !f.len().is_multiple_of(32) {
                f.push(0);
            }
        }
        f
    }

    const META: [(&str, &str); 3] = [
        ("general.type", "adapter"),
        ("general.architecture", "llama"),
        ("adapter.type", "lora"),
    ];

    fn open(image: Vec<u8>) -> Result<LoraAdapter, ModelError> {
        LoraAdapter::from_file(Arc::new(GgufFile::from_bytes(image).unwrap()), "test.gguf")
    }

    #[test]
    fn delta_is_scale_times_b_times_a_x() {
        // n_in 3, r 2, n_out 4.
        let a = vec![1.0, 2.0, 3.0, -1.0, 0.5, 0.25];
        let b = vec![1.0, 0.0, 0.0, 1.0, 2.0, -2.0, 0.5, 0.5];
        let image = gguf(
            &META,
            Some(4.0),
            &[
                ("blk.0.attn_q.weight.lora_a", [3, 2], a.clone()),
                ("blk.0.attn_q.weight.lora_b", [2, 4], b.clone()),
            ],
        );
        let adapter = open(image).unwrap();
        assert_eq!(adapter.alpha(), 4.0);
        assert_eq!(adapter.rank_range(), (2, 2));
        let p = &adapter.pairs()[0];
        assert_eq!(
            (p.target.as_str(), p.n_in(), p.n_out(), p.rank()),
            ("blk.0.attn_q.weight", 3, 4, 2)
        );
        let delta = adapter.delta(p, 0.5);
        assert_eq!(delta.scale(), 0.5 * 4.0 / 2.0);
        let pool = ThreadPool::new(2);
        let x = [1.0f32, -2.0, 0.5, 0.0, 1.0, 2.0];
        let mut out = vec![10.0f32; 8];
        delta.add_to(&pool, &x, 2, &mut out).unwrap();
        for t in 0..2 {
            let xt = &x[t * 3..t * 3 + 3];
            let ax: Vec<f32> = (0..2).map(|k| (0..3).map(|c| a[k * 3 + c] * xt[c]).sum()).collect();
            for r in 0..4 {
                let bax: f32 = (0..2).map(|k| b[r * 2 + k] * ax[k]).sum();
                let want = 10.0 + 1.0 * bax;
                assert!(
                    (out[t * 4 + r] - want).abs() < 1e-5,
                    "token {t} row {r}: {} vs {want}",
                    out[t * 4 + r]
                );
            }
        }
        // Scale 0 adds nothing at all.
        let mut out = vec![10.0f32; 8];
        adapter.delta(p, 0.0).add_to(&pool, &x, 2, &mut out).unwrap();
        assert_eq!(out, vec![10.0; 8]);
    }

    #[test]
    fn no_alpha_means_the_user_scale() {
        let image = gguf(
            &META,
            None,
            &[
                ("output.weight.lora_a", [3, 2], vec![0.0; 6]),
                ("output.weight.lora_b", [2, 4], vec![0.0; 8]),
            ],
        );
        let adapter = open(image).unwrap();
        assert_eq!(adapter.scale_for(2, 0.75), 0.75);
        assert_eq!(adapter.delta(&adapter.pairs()[0], 0.75).scale(), 0.75);
    }

    #[test]
    fn malformed_adapters_name_the_problem() {
        let err = |image: Vec<u8>| open(image).unwrap_err().to_string();
        let a = ("blk.0.attn_q.weight.lora_a", [3, 2], vec![0.0; 6]);
        let b = ("blk.0.attn_q.weight.lora_b", [2, 4], vec![0.0; 8]);
        assert!(err(gguf(&META, None, std::slice::from_ref(&a))).contains("has no blk.0.attn_q.weight.lora_b"));
        assert!(err(gguf(&META, None, std::slice::from_ref(&b))).contains("has no blk.0.attn_q.weight.lora_a"));
        let b3 = ("blk.0.attn_q.weight.lora_b", [3, 4], vec![0.0; 12]);
        assert!(err(gguf(&META, None, &[a.clone(), b3])).contains("rank 2"));
        let odd = ("blk.0.attn_q.weight", [3, 2], vec![0.0; 6]);
        assert!(err(gguf(&META, None, &[a.clone(), b.clone(), odd])).contains("not a LoRA tensor"));
        let mut nan = b.clone();
        nan.2[5] = f32::NAN;
        assert!(err(gguf(&META, None, &[a.clone(), nan])).contains("NaN"));
        assert!(err(gguf(&META, Some(f32::INFINITY), &[a.clone(), b.clone()])).contains("alpha"));
        assert!(err(gguf(&META, None, &[])).contains("no LoRA tensors"));
        let model = [("general.type", "model"), ("general.architecture", "llama")];
        assert!(err(gguf(&model, None, &[a.clone(), b.clone()])).contains("not a LoRA adapter"));
        let cv = [
            ("general.type", "adapter"),
            ("general.architecture", "llama"),
            ("adapter.type", "cvec"),
        ];
        assert!(err(gguf(&cv, None, &[a, b])).contains("\"cvec\""));
    }
    /// The CUDA forward's padded F32 form of a term (`model::cuda::padded_lora`) gives the same
    /// `scale · B·(A·x)` (checked here on the CPU: no GPU is needed to check the padding).
    #[cfg(feature = "cuda")]
    #[test]
    fn cuda_padded_form_is_the_same_term() {
        let (n_in, r, n_out) = (64usize, 3usize, 5usize);
        let a: Vec<f32> = (0..r * n_in).map(|i| ((i * 37 % 23) as f32 - 11.0) / 16.0).collect();
        let b: Vec<f32> = (0..n_out * r).map(|i| ((i * 13 % 7) as f32 - 3.0) / 4.0).collect();
        let image = gguf(
            &META,
            Some(6.0),
            &[
                ("blk.0.attn_q.weight.lora_a", [n_in as u64, r as u64], a.clone()),
                ("blk.0.attn_q.weight.lora_b", [r as u64, n_out as u64], b.clone()),
            ],
        );
        let adapter = open(image).unwrap();
        // scale = 0.25 * 6 / 3 = 0.5: a scale left out of B would show.
        let delta = adapter.delta(&adapter.pairs()[0], 0.25);
        assert_eq!(delta.scale(), 0.5);
        let (pa, pb, r_pad) = crate::model::cuda::padded_lora(&delta).unwrap();
        assert_eq!((r_pad, pa.len(), pb.len()), (32, 32 * n_in, n_out * 32));
        let x: Vec<f32> = (0..n_in).map(|i| (i as f32 * 0.37).sin()).collect();
        let mul = |m: &[f32], rows: usize, cols: usize, v: &[f32]| -> Vec<f64> {
            (0..rows)
                .map(|i| (0..cols).map(|c| m[i * cols + c] as f64 * v[c] as f64).sum())
                .collect()
        };
        let padded_mid: Vec<f32> = mul(&pa, r_pad, n_in, &x).into_iter().map(|v| v as f32).collect();
        let padded = mul(&pb, n_out, r_pad, &padded_mid);
        let mid: Vec<f32> = mul(&a, r, n_in, &x).into_iter().map(|v| v as f32).collect();
        let want: Vec<f64> = mul(&b, n_out, r, &mid)
            .into_iter()
            .map(|v| v * delta.scale() as f64)
            .collect();
        for (p, w) in padded.iter().zip(&want) {
            assert!((p - w).abs() < 1e-5, "{p} vs {w}");
        }
    }
}
