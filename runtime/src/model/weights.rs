//! Locating and checking a Llama model's tensors in a GGUF file.
//!
//! Matrices are kept as byte ranges of the mapping, so loading a model costs no copy and no
//! dequantization; only the (tiny) RMSNorm weight vectors are converted to f32 up front.

use super::config::LlamaConfig;
use super::lora::{LoraAdapter, LoraDelta};
use super::ops::{self, QMatrix};
use super::repack_cache;
use super::ModelError;
use crate::gguf::GgufFile;
use crate::quant::GgmlType;
use std::ops::Range;
use std::sync::Arc;

/// A 2-D weight matrix inside the mapped file: `rows` output features of `cols` inputs.
#[derive(Clone, Debug)]
pub struct Weight {
    pub name: String,
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    /// Absolute byte range in the file image.
    pub range: Range<usize>,
    /// The repacked form (see [`LlamaModel::repack`]), used instead of the mapping's bytes.
    pub packed: Option<Arc<ops::PackedMatrix>>,
    /// LoRA terms added to this matrix's product (see [`LlamaModel::apply_lora`]); empty for
    /// an unadapted model, which then does no extra work.
    pub lora: Vec<Arc<LoraDelta>>,
}

/// Which matrices [`LlamaModel::repack`] copies into the panel layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepackChoice {
    /// The types whose repacked kernels measured faster on this CPU's kernel path
    /// (`kernels::cpu::repack_by_default`): the default at load.
    Measured,
    /// Every type with a repacked form (the kernel table's `repack` column): `--repack`.
    All,
}

/// What [`LlamaModel::repack`] or [`LlamaModel::repack_cached`] did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RepackReport {
    /// Matrices repacked (or mapped from the repack cache).
    pub tensors: usize,
    /// Bytes of repacked weights (in anonymous memory, or mapped from the cache).
    pub bytes: u64,
    /// Wall time of the repacking (0 when nothing was repacked).
    pub seconds: f64,
    /// What the repack cache did.
    pub cache: CacheUse,
}

/// The repack cache's part in a [`RepackReport`].
#[derive(Debug, Clone, Default, PartialEq)]
pub enum CacheUse {
    /// Not asked for, or nothing to repack.
    #[default]
    Unused,
    /// The repacked forms were mapped from this cache file.
    Loaded(std::path::PathBuf),
    /// A miss (the reason): repacked, and the cache file being written by a background thread
    /// (see [`LlamaModel::repack_cached`]).
    Writing { path: std::path::PathBuf, miss: String },
    /// A miss, repacked, but the cache could not be written (why).
    NotWritten { miss: String, error: String },
}

/// Whether `which` repacks `w` on this CPU's kernel path (and it is not repacked yet).
fn chosen_for_repacking(which: RepackChoice, w: &Weight) -> bool {
    w.packed.is_none()
        && match which {
            RepackChoice::Measured => ops::repack_by_default(ops::backend(), w.ty),
            RepackChoice::All => ops::repackable(w.ty),
        }
}

/// One transformer block's weights.
#[derive(Debug)]
pub(crate) struct Layer {
    pub attn_norm: Vec<f32>,
    pub wq: Weight,
    pub wk: Weight,
    pub wv: Weight,
    pub wo: Weight,
    pub ffn_norm: Vec<f32>,
    pub w_gate: Weight,
    pub w_up: Weight,
    pub w_down: Weight,
}

impl Layer {
    /// The seven matrices, in file order.
    pub(crate) fn matrices(&self) -> [&Weight; 7] {
        [
            &self.wq,
            &self.wk,
            &self.wv,
            &self.wo,
            &self.w_gate,
            &self.w_up,
            &self.w_down,
        ]
    }

    fn matrices_mut(&mut self) -> [&mut Weight; 7] {
        [
            &mut self.wq,
            &mut self.wk,
            &mut self.wv,
            &mut self.wo,
            &mut self.w_gate,
            &mut self.w_up,
            &mut self.w_down,
        ]
    }
}

/// A loaded Llama model: configuration plus checked handles to its weights in the mapping.
pub struct LlamaModel {
    file: Arc<GgufFile>,
    config: LlamaConfig,
    pub(crate) token_embd: Weight,
    pub(crate) output_norm: Vec<f32>,
    /// `output.weight`, or `token_embd.weight` when the embeddings are tied.
    pub(crate) output: Weight,
    pub(crate) layers: Vec<Layer>,
    /// The background write of the repack cache, if one is running.
    cache_writer: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Drop for LlamaModel {
    /// A cache write in progress completes first: a process that ends normally leaves a
    /// complete cache file (an interrupted write leaves only a temporary file).
    fn drop(&mut self) {
        self.finish_cache_write();
    }
}

impl LlamaModel {
    /// Checks every tensor the forward pass needs (presence, shape, type) and keeps handles to
    /// them. Fails with an error naming the tensor on the first problem.
    pub fn load(file: Arc<GgufFile>) -> Result<LlamaModel, ModelError> {
        let config = LlamaConfig::from_gguf(&file)?;
        let (dim, kv_dim, ffn, vocab) = (config.dim, config.kv_dim(), config.ffn_dim, config.vocab_size);
        if file.try_tensor("rope_freqs.weight").is_some() {
            return Err(ModelError::UnsupportedTensor(
                "rope_freqs.weight".into(),
                "per-dimension RoPE frequency factors (Llama 3.1 rope scaling) are not implemented",
            ));
        }
        let token_embd = matrix(&file, "token_embd.weight", vocab, dim, Use::Embedding)?;
        let output_norm = vector(&file, "output_norm.weight", dim)?;
        let output = match file.try_tensor("output.weight") {
            Some(_) => matrix(&file, "output.weight", vocab, dim, Use::Matmul)?,
            // Tied embeddings: the output projection reads token_embd, so it needs a matmul kernel.
            None => matrix(&file, "token_embd.weight", vocab, dim, Use::Matmul)?,
        };
        let mut layers = Vec::with_capacity(config.n_layers);
        for i in 0..config.n_layers {
            let m = |t: &str, rows, cols| matrix(&file, &format!("blk.{i}.{t}.weight"), rows, cols, Use::Matmul);
            layers.push(Layer {
                attn_norm: vector(&file, &format!("blk.{i}.attn_norm.weight"), dim)?,
                wq: m("attn_q", dim, dim)?,
                wk: m("attn_k", kv_dim, dim)?,
                wv: m("attn_v", kv_dim, dim)?,
                wo: m("attn_output", dim, dim)?,
                ffn_norm: vector(&file, &format!("blk.{i}.ffn_norm.weight"), dim)?,
                w_gate: m("ffn_gate", ffn, dim)?,
                w_up: m("ffn_up", ffn, dim)?,
                w_down: m("ffn_down", dim, ffn)?,
            });
        }
        Ok(LlamaModel {
            file,
            config,
            token_embd,
            output_norm,
            output,
            layers,
            cache_writer: std::sync::Mutex::new(None),
        })
    }

    /// Waits until the background write of the repack cache (if any) is done; benchmarks call
    /// it so that the write does not compete with what they measure.
    pub fn finish_cache_write(&self) {
        let writer = self.cache_writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(writer) = writer {
            // The thread reports its own failure through the caller's callback.
            let _ = writer.join();
        }
    }

    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    pub fn file(&self) -> &Arc<GgufFile> {
        &self.file
    }

    /// True when the output projection reuses the token embeddings.
    pub fn tied_embeddings(&self) -> bool {
        self.output.name == self.token_embd.name
    }

    /// Number of weights in all tensors of the file.
    pub fn n_params(&self) -> u64 {
        self.file.tensors().iter().map(|t| t.n_elements()).sum()
    }

    /// Bytes of tensor data in the file.
    pub fn weight_bytes(&self) -> u64 {
        self.file.tensors().iter().map(|t| t.n_bytes()).sum()
    }

    /// The most common matrix type, e.g. "Q4_0" (for bench tables).
    pub fn main_type(&self) -> GgmlType {
        let mut counts: Vec<(GgmlType, u64)> = Vec::new();
        for l in &self.layers {
            for w in l.matrices() {
                match counts.iter_mut().find(|(t, _)| *t == w.ty) {
                    Some((_, n)) => *n += (w.rows * w.cols) as u64,
                    None => counts.push((w.ty, (w.rows * w.cols) as u64)),
                }
            }
        }
        counts
            .into_iter()
            .max_by_key(|&(_, n)| n)
            .map(|(t, _)| t)
            .unwrap_or(self.output.ty)
    }

    /// A weight as a matrix view into the mapping.
    pub(crate) fn qmatrix<'a>(&'a self, w: &'a Weight) -> QMatrix<'a> {
        QMatrix {
            ty: w.ty,
            rows: w.rows,
            cols: w.cols,
            data: &self.file.bytes()[w.range.clone()],
            packed: w.packed.as_deref(),
        }
    }

    /// Repacks the matrices of the transformer blocks and the output projection chosen by
    /// `which` for the panel kernels (AVX2, AVX-512 VNNI, NEON; see `kernels::cpu::repack`),
    /// using `threads` threads, and reports progress
    /// after each matrix as `(bytes done, bytes to do)` of file bytes. This copies those
    /// weights out of the mapping into anonymous memory; nothing is repacked where the CPU
    /// has no kernel for repacked weights (which then keeps using the mapping). The mapping's
    /// pages of the repacked tensors are released, so resident memory holds one copy of
    /// those weights.
    pub fn repack(
        &mut self,
        which: RepackChoice,
        threads: usize,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<RepackReport, ModelError> {
        let start = std::time::Instant::now();
        if !ops::repack_supported() {
            return Ok(RepackReport::default());
        }
        let chosen = |w: &Weight| chosen_for_repacking(which, w);
        // The output projection too, also when it is the token embeddings: the embedding
        // lookup keeps reading its rows from the mapping, where a released page faults back
        // in from the page cache (a prompt touches a few rows of the table).
        let todo: u64 = self
            .layers
            .iter()
            .flat_map(Layer::matrices)
            .chain(std::iter::once(&self.output))
            .filter(|w| chosen(w))
            .map(|w| w.range.len() as u64)
            .sum();
        let pool = ops::ThreadPool::new(threads.max(1));
        let bytes = self.file.bytes();
        let mut report = RepackReport::default();
        let mut done = 0;
        let matrices = self
            .layers
            .iter_mut()
            .flat_map(Layer::matrices_mut)
            .chain(std::iter::once(&mut self.output));
        for w in matrices {
            if !chosen(w) {
                continue;
            }
            let m = QMatrix::new(w.ty, w.rows, w.cols, &bytes[w.range.clone()])
                .map_err(|e| ModelError::Compute(format!("{}: {e}", w.name)))?;
            let packed =
                ops::PackedMatrix::new(&pool, &m).map_err(|e| ModelError::Compute(format!("{}: {e}", w.name)))?;
            report.tensors += 1;
            report.bytes += packed.bytes() as u64;
            w.packed = Some(Arc::new(packed));
            // The mapped copy is no longer read; keep resident memory at one copy.
            self.file.release(w.range.clone());
            done += w.range.len() as u64;
            progress(done, todo);
        }
        if report.tensors > 0 {
            report.seconds = start.elapsed().as_secs_f64();
        }
        Ok(report)
    }

    /// [`LlamaModel::repack`] through the repack cache in `cache_dir` (see `repack_cache.rs`):
    /// the repacked forms are mapped from the model's cache file when it matches this model
    /// file and choice, else repacked and written there for the next start by a background
    /// thread (writing ~4 GB takes seconds: the model runs meanwhile), whose outcome (bytes
    /// written, or why not) goes to `written`; [`LlamaModel::finish_cache_write`] and dropping
    /// the model wait for it. A cache that cannot be read or written is never an error.
    pub fn repack_cached(
        &mut self,
        which: RepackChoice,
        threads: usize,
        cache_dir: &std::path::Path,
        progress: &mut dyn FnMut(u64, u64),
        written: Box<dyn FnOnce(Result<u64, String>) + Send>,
    ) -> Result<RepackReport, ModelError> {
        let start = std::time::Instant::now();
        let Some(source) = self.file.path().filter(|_| ops::repack_supported()) else {
            return self.repack(which, threads, progress);
        };
        let path = repack_cache::cache_path(cache_dir, source, which);
        let wanted: Vec<&Weight> = self
            .layers
            .iter()
            .flat_map(Layer::matrices)
            .chain(std::iter::once(&self.output))
            .filter(|w| chosen_for_repacking(which, w))
            .collect();
        if wanted.is_empty() {
            return Ok(RepackReport::default());
        }
        let miss = match repack_cache::load(&path, &self.file, &wanted) {
            Ok(forms) => {
                let names: Vec<String> = wanted.iter().map(|w| w.name.clone()).collect();
                let mut report = RepackReport {
                    cache: CacheUse::Loaded(path),
                    ..RepackReport::default()
                };
                let matrices = self
                    .layers
                    .iter_mut()
                    .flat_map(Layer::matrices_mut)
                    .chain(std::iter::once(&mut self.output));
                let mut forms = names.iter().zip(forms).peekable();
                for w in matrices {
                    let Some((_, form)) = forms.next_if(|(name, _)| **name == w.name) else {
                        continue;
                    };
                    report.tensors += 1;
                    report.bytes += form.bytes() as u64;
                    w.packed = Some(Arc::new(form));
                    self.file.release(w.range.clone());
                }
                report.seconds = start.elapsed().as_secs_f64();
                return Ok(report);
            }
            Err(miss) => miss,
        };
        let mut report = self.repack(which, threads, progress)?;
        let packed: Vec<&Weight> = self
            .layers
            .iter()
            .flat_map(Layer::matrices)
            .chain(std::iter::once(&self.output))
            .filter(|w| w.packed.is_some())
            .collect();
        report.seconds = start.elapsed().as_secs_f64();
        let snapshot = match repack_cache::Snapshot::of(&self.file, &packed) {
            Ok(s) => s,
            Err(error) => {
                report.cache = CacheUse::NotWritten { miss, error };
                return Ok(report);
            }
        };
        self.finish_cache_write();
        let target = path.clone();
        let spawned = std::thread::Builder::new()
            .name("edgeact-repack-cache".into())
            .spawn(move || written(repack_cache::store(&target, &snapshot)));
        report.cache = match spawned {
            Ok(handle) => {
                *self.cache_writer.get_mut().unwrap_or_else(|p| p.into_inner()) = Some(handle);
                CacheUse::Writing { path, miss }
            }
            Err(e) => CacheUse::NotWritten {
                miss,
                error: format!("cannot start the writer thread: {e}"),
            },
        };
        Ok(report)
    }

    /// Attaches `adapter` at `user_scale` to the matrices it adapts: from now on each of them
    /// computes `W·x + scale · B·(A·x)` with `scale = user_scale · alpha / r` (`user_scale` when
    /// the adapter has no alpha), the base weights untouched. Several adapters add up. Checks
    /// everything first (architecture, every target is a matrix of this model with the
    /// adapter's shape) and attaches nothing on an error. Returns the number of matrices
    /// adapted.
    pub fn apply_lora(&mut self, adapter: &LoraAdapter, user_scale: f32) -> Result<usize, ModelError> {
        let err = |msg: String| ModelError::Lora {
            file: adapter.source().to_string(),
            msg,
        };
        if !user_scale.is_finite() {
            return Err(err(format!("scale {user_scale} is not a finite number")));
        }
        if adapter.architecture() != self.config.architecture {
            return Err(err(format!(
                "made for architecture {:?}, the model is {:?}",
                adapter.architecture(),
                self.config.architecture
            )));
        }
        let mut planned = Vec::with_capacity(adapter.pairs().len());
        for pair in adapter.pairs() {
            let target = pair.target.as_str();
            if target == self.token_embd.name {
                return Err(err(format!(
                    "adapts {target}: LoRA on the token embeddings is not supported (merge it at conversion \
                     with `edgeact quantize --lora`)"
                )));
            }
            let Some(w) = self.matrices_mut().find(|w| w.name == target) else {
                return Err(err(if self.file.try_tensor(target).is_some() {
                    format!(
                        "adapts {target}, which is not a matrix a LoRA can apply to (attention and FFN projections and \
                         output.weight)"
                    )
                } else {
                    format!("adapts {target}, which this model does not have (an adapter for another model?)")
                }));
            };
            if pair.n_in() != w.cols || pair.n_out() != w.rows {
                return Err(err(format!(
                    "{target}: the adapter maps {} inputs to {} outputs (lora_a [{}, {r}], lora_b [{r}, {}]), the \
                     model's matrix {} to {} (an adapter for another model?)",
                    pair.n_in(),
                    pair.n_out(),
                    pair.n_in(),
                    pair.n_out(),
                    w.cols,
                    w.rows,
                    r = pair.rank(),
                )));
            }
            planned.push(Arc::new(adapter.delta(pair, user_scale)));
        }
        let n = planned.len();
        for (pair, delta) in adapter.pairs().iter().zip(planned) {
            if let Some(w) = self.matrices_mut().find(|w| w.name == pair.target) {
                w.lora.push(delta);
            }
        }
        Ok(n)
    }

    /// True when any matrix has a LoRA term attached.
    pub fn has_lora(&self) -> bool {
        !self.output.lora.is_empty()
            || self
                .layers
                .iter()
                .any(|l| layer_matrices(l).iter().any(|w| !w.lora.is_empty()))
    }

    /// Every matrix the forward pass multiplies with: the blocks' projections and the output.
    fn matrices_mut(&mut self) -> impl Iterator<Item = &mut Weight> {
        self.layers
            .iter_mut()
            .flat_map(|l| {
                [
                    &mut l.wq,
                    &mut l.wk,
                    &mut l.wv,
                    &mut l.wo,
                    &mut l.w_gate,
                    &mut l.w_up,
                    &mut l.w_down,
                ]
            })
            .chain(std::iter::once(&mut self.output))
    }

    /// Writes the embedding of `token` (checked `< vocab_size` by the caller) into `out`.
    pub(crate) fn embed(&self, token: u32, out: &mut [f32]) -> Result<(), ModelError> {
        let w = &self.token_embd;
        let row_bytes = (w.range.end - w.range.start) / w.rows;
        let start = w.range.start + token as usize * row_bytes;
        ops::dequantize_row(w.ty, &self.file.bytes()[start..start + row_bytes], out)
            .map_err(|e| ModelError::Compute(format!("token_embd.weight row {token}: {e}")))
    }
}

/// The seven projection matrices of a block.
pub(crate) fn layer_matrices(l: &Layer) -> [&Weight; 7] {
    [&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down]
}

/// What a matrix is read by, which decides the types it may have.
#[derive(Clone, Copy)]
enum Use {
    /// Rows dequantized one at a time.
    Embedding,
    /// The CPU matmul kernels.
    Matmul,
}

fn matrix(file: &GgufFile, name: &str, rows: usize, cols: usize, usage: Use) -> Result<Weight, ModelError> {
    let t = file.tensor(name)?;
    let expected = vec![cols as u64, rows as u64];
    if t.info.dims != expected {
        return Err(ModelError::TensorShape {
            name: name.into(),
            expected,
            found: t.info.dims.clone(),
        });
    }
    let ty = t.info.ty;
    match usage {
        Use::Embedding if !ops::embed_supports(ty) => {
            return Err(ModelError::TensorType {
                name: name.into(),
                ty,
                what: "embedding lookup (dequantize)",
            })
        }
        Use::Matmul => ops::check_matrix(ty, rows, cols, t.data).map_err(|e| match e {
            ops::KernelError::UnsupportedType(_) => ModelError::TensorType {
                name: name.into(),
                ty,
                what: "the CPU matmul",
            },
            other => ModelError::Config(format!("tensor {name:?}: {other}")),
        })?,
        _ => {}
    }
    let start = (file.header().data_offset + t.info.offset) as usize;
    Ok(Weight {
        name: name.into(),
        ty: t.info.ty,
        rows,
        cols,
        range: start..start + t.data.len(),
        packed: None,
        lora: Vec::new(),
    })
}

/// A 1-D norm weight, converted to f32 (a few KiB per layer).
fn vector(file: &GgufFile, name: &str, len: usize) -> Result<Vec<f32>, ModelError> {
    let t = file.tensor(name)?;
    if t.info.dims != [len as u64] {
        return Err(ModelError::TensorShape {
            name: name.into(),
            expected: vec![len as u64],
            found: t.info.dims.clone(),
        });
    }
    if !matches!(t.info.ty, GgmlType::F32 | GgmlType::F16) {
        return Err(ModelError::TensorType {
            name: name.into(),
            ty: t.info.ty,
            what: "a norm weight (F32/F16 only)",
        });
    }
    let mut out = vec![0f32; len];
    ops::dequantize_row(t.info.ty, t.data, &mut out)
        .map_err(|e| ModelError::Config(format!("tensor {name:?}: {e}")))?;
    Ok(out)
}
