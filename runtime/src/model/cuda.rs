//! The Llama forward pass on a CUDA GPU, with partial offload.
//!
//! [`GpuForward`] uploads the weights of the first `gpu_layers` transformer blocks straight
//! from the GGUF mapping in their quantized form (no dequantized copy; a text progress line
//! for large uploads), keeps their KV cache on the GPU in f16, and runs those blocks with the
//! kernels of `kernels::cuda`. Remaining blocks run on the CPU kernels with a CPU KV cache
//! (of `--kv-type`), and the output projection runs on the GPU when every block does and it
//! fits as well, else on the CPU. Token embedding rows are
//! dequantized on the host (one row per token) and uploaded.
//!
//! By default as many blocks are offloaded as fit the GPU's free memory, after an estimate
//! that is printed on stderr; `gpu_layers` overrides it.
//!
//! LoRA terms of offloaded matrices ([`LlamaModel::apply_lora`]) are uploaded as F32 matrices
//! and computed with the same matmul kernel: `y += B'·(A'·x)`, where A' is A with its rank
//! padded to a multiple of 32 rows of zeros (the kernel's column granularity) and B' is
//! `scale · B` with as many columns (zero past the rank), so the padding adds exact zeros. An
//! adapted `output.weight` keeps the output projection on the CPU.

use super::blocks::CpuBlocks;
use super::kv_cache::{KvCache, KvType};
use super::lora::LoraDelta;
use super::ops::{self, Activations, RopeTable, ThreadPool};
use super::weights::{Layer, LlamaModel, Weight};
use super::{ModelError, RopeScaling};
use crate::kernels::cuda::{rope_table, Backend, CudaError, GpuBuffer, GpuContext, GpuMatrix, GPU_WEIGHT_TYPES};
use crate::quant::GgmlType;
use std::sync::Arc;

/// Memory left free on the GPU after the estimate (driver, kernels' stacks, fragmentation).
const HEADROOM: usize = 512 << 20;

/// Held by [`GpuForward::new`] from measuring the free memory through the uploads.
static OFFLOADING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// How to set up a [`GpuForward`].
#[derive(Clone, Debug)]
pub struct GpuOptions {
    /// Which GPU (`Backend::Cuda(info).ordinal`).
    pub ordinal: usize,
    /// Blocks to run on the GPU; `None` = as many as fit.
    pub gpu_layers: Option<usize>,
    /// Context length (positions the KV caches hold), already capped by the caller.
    pub n_ctx: usize,
    /// Most tokens per forward call (sizes the activation buffers).
    pub max_batch: usize,
    /// CPU threads for blocks left on the CPU.
    pub threads: usize,
    /// Activation arithmetic of the blocks left on the CPU (the GPU kernels always multiply
    /// f32 activations with dequantized weights).
    pub cpu_activations: Activations,
    /// KV cache element type of the blocks left on the CPU (`--kv-type`; the GPU's caches are
    /// f16).
    pub cpu_kv_type: KvType,
}

impl GpuOptions {
    /// Options for the GPU `backend` selected by `kernels::cuda::select_device`; `None` for
    /// the CPU backend.
    pub fn for_backend(backend: &Backend, n_ctx: usize, max_batch: usize, threads: usize) -> Option<GpuOptions> {
        match backend {
            Backend::Cpu => None,
            Backend::Cuda(info) => Some(GpuOptions {
                ordinal: info.ordinal,
                gpu_layers: None,
                n_ctx,
                max_batch,
                threads,
                cpu_activations: Activations::default(),
                cpu_kv_type: KvType::F16,
            }),
        }
    }
}

fn gpu_err(e: CudaError) -> ModelError {
    ModelError::Compute(format!("CUDA: {e}"))
}

struct GpuLayer {
    attn_norm: GpuBuffer<f32>,
    wq: GpuMatrix,
    wk: GpuMatrix,
    wv: GpuMatrix,
    wo: GpuMatrix,
    ffn_norm: GpuBuffer<f32>,
    w_gate: GpuMatrix,
    w_up: GpuMatrix,
    w_down: GpuMatrix,
    k_cache: GpuBuffer<u16>,
    v_cache: GpuBuffer<u16>,
    /// LoRA terms of wq, wk, wv, wo, w_gate, w_up, w_down (the order of `layer_weights`).
    lora: [Vec<GpuLora>; 7],
}

/// One LoRA term on the GPU (see the module comment): `b·(a·x) = scale · B·(A·x)`.
struct GpuLora {
    a: GpuMatrix,
    b: GpuMatrix,
}

/// The CUDA matmul's column granularity, to which LoRA ranks are padded.
const LORA_RANK_ALIGN: usize = 32;

/// Bytes of `d` once uploaded as padded F32 matrices.
fn lora_bytes(d: &LoraDelta) -> usize {
    let r = d.rank().next_multiple_of(LORA_RANK_ALIGN);
    4 * r * (d.a_matrix().cols + d.b_matrix().rows)
}

/// A LoRA term as the padded F32 matrices the GPU gets (see the module comment): A' (`r_pad`
/// rows of `n_in`) and `scale · B` padded to `r_pad` columns (`n_out` rows), and `r_pad`.
pub(super) fn padded_lora(d: &LoraDelta) -> Result<(Vec<f32>, Vec<f32>, usize), String> {
    let (am, bm) = (d.a_matrix(), d.b_matrix());
    let (r, r_pad) = (d.rank(), d.rank().next_multiple_of(LORA_RANK_ALIGN));
    let mut a = vec![0f32; r_pad * am.cols];
    for (k, row) in a.chunks_exact_mut(am.cols).take(r).enumerate() {
        ops::dequantize_row(am.ty, am.row(k), row).map_err(|e| e.to_string())?;
    }
    let mut b = vec![0f32; bm.rows * r_pad];
    let mut row = vec![0f32; r];
    for (i, out) in b.chunks_exact_mut(r_pad).enumerate() {
        ops::dequantize_row(bm.ty, bm.row(i), &mut row).map_err(|e| e.to_string())?;
        for (o, v) in out.iter_mut().zip(&row) {
            *o = d.scale() * v;
        }
    }
    Ok((a, b, r_pad))
}

/// Uploads one LoRA term as padded F32 matrices, the scale folded into B.
fn upload_lora(gpu: &GpuContext, d: &LoraDelta) -> Result<GpuLora, ModelError> {
    let fail = |e: String| ModelError::Compute(format!("uploading LoRA of {}: {e}", d.source()));
    let (a, b, r_pad) = padded_lora(d).map_err(fail)?;
    let up = |v: &[f32], rows, cols| {
        gpu.upload_matrix(GgmlType::F32, rows, cols, bytemuck::cast_slice(v))
            .map_err(|e| fail(e.to_string()))
    };
    Ok(GpuLora {
        a: up(&a, r_pad, d.a_matrix().cols)?,
        b: up(&b, d.b_matrix().rows, r_pad)?,
    })
}

/// `out += b·(a·x)` for each term, through the scratch buffers `mid` and `tmp`.
fn add_lora(
    g: &GpuContext,
    terms: &[GpuLora],
    x: &GpuBuffer<f32>,
    n: usize,
    out: &mut GpuBuffer<f32>,
    mid: &mut GpuBuffer<f32>,
    tmp: &mut GpuBuffer<f32>,
) -> Result<(), CudaError> {
    for t in terms {
        g.matmul(&t.a, &x.slice(..), n, &mut mid.slice_mut(..))?;
        g.matmul(&t.b, &mid.slice(..), n, &mut tmp.slice_mut(..))?;
        g.add_inplace(&mut out.slice_mut(..), &tmp.slice(..), n * t.b.rows)?;
    }
    Ok(())
}

/// Device activation buffers for up to `max_batch` tokens.
struct GpuScratch {
    x: GpuBuffer<f32>,
    xb: GpuBuffer<f32>,
    xb2: GpuBuffer<f32>,
    q: GpuBuffer<f32>,
    k: GpuBuffer<f32>,
    v: GpuBuffer<f32>,
    att: GpuBuffer<f32>,
    hb: GpuBuffer<f32>,
    hb2: GpuBuffer<f32>,
    hb3: GpuBuffer<f32>,
    logits: GpuBuffer<f32>,
    /// LoRA intermediates: `A·x` (padded rank) and `B·(A·x)` (one element when no adapter).
    lora_mid: GpuBuffer<f32>,
    lora_out: GpuBuffer<f32>,
}

/// A GPU (or GPU + CPU) forward pass for one sequence.
pub struct GpuForward {
    model: Arc<LlamaModel>,
    gpu: GpuContext,
    layers: Vec<GpuLayer>,
    /// Output norm and projection, present when every block is on the GPU.
    output: Option<(GpuBuffer<f32>, GpuMatrix)>,
    rope: GpuBuffer<f32>,
    n_ctx: usize,
    max_batch: usize,
    s: GpuScratch,
    tail: Option<CpuBlocks>,
}

fn weight_bytes(w: &Weight) -> usize {
    w.range.end - w.range.start
}

fn layer_weights(l: &Layer) -> [&Weight; 7] {
    [&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down]
}

/// Why block `l` cannot run on the GPU, if it cannot.
fn unsupported(l: &Layer) -> Option<String> {
    layer_weights(l)
        .into_iter()
        .find(|w| !GPU_WEIGHT_TYPES.contains(&w.ty))
        .map(|w| format!("{} is {}, which has no CUDA kernel", w.name, w.ty))
}

impl GpuForward {
    /// Opens the GPU, decides the number of offloaded blocks, and uploads their weights.
    pub fn new(model: Arc<LlamaModel>, opts: &GpuOptions) -> Result<GpuForward, ModelError> {
        let cfg = model.config().clone();
        let (dim, kv_dim, ffn) = (cfg.dim, cfg.kv_dim(), cfg.ffn_dim);
        if opts.n_ctx == 0 || opts.max_batch == 0 {
            return Err(ModelError::Options("GPU forward needs n_ctx and max_batch > 0".into()));
        }
        let gpu = GpuContext::open(opts.ordinal).map_err(gpu_err)?;
        let n_layers = cfg.n_layers;
        let kv_bytes = 2 * opts.n_ctx * kv_dim * 2;
        let per_layer: Vec<usize> = model
            .layers
            .iter()
            .map(|l| {
                layer_weights(l)
                    .iter()
                    .map(|w| weight_bytes(w) + w.lora.iter().map(|d| lora_bytes(d)).sum::<usize>())
                    .sum::<usize>()
                    + 2 * dim * 4
                    + kv_bytes
            })
            .collect();
        // An adapted output projection stays on the CPU, whose matmul adds its LoRA terms.
        let out_bytes = (GPU_WEIGHT_TYPES.contains(&model.output.ty) && model.output.lora.is_empty())
            .then(|| weight_bytes(&model.output) + dim * 4);
        let b = opts.max_batch;
        // Activations (x, xb, xb2, q, att; k, v; three FFN buffers), the logits of a whole chunk,
        // and the RoPE table.
        let scratch_bytes = 4 * (b * (5 * dim + 2 * kv_dim + 3 * ffn + cfg.vocab_size) + opts.n_ctx * cfg.head_dim);
        // Blocks that may go to the GPU at all: up to the first one with an unsupported type.
        let supported = model
            .layers
            .iter()
            .position(|l| unsupported(l).is_some())
            .unwrap_or(n_layers);
        // Sessions opened at once (`eval --jobs`) each measure the free memory: one at a time,
        // from the measurement through the uploads, so that each sees what the others took.
        let _one_at_a_time = OFFLOADING.lock().unwrap_or_else(|p| p.into_inner());
        let (free, total) = gpu.mem_info().map_err(gpu_err)?;
        let plan =
            plan_offload(opts.gpu_layers, &per_layer, supported, scratch_bytes, out_bytes, free).map_err(|n| {
                let why = unsupported(&model.layers[supported]).unwrap_or_default();
                ModelError::Options(format!(
                    "--gpu-layers {n}: only the first {supported} blocks can run on the GPU ({why})"
                ))
            })?;
        let (n_gpu, all_on_gpu, need) = (plan.blocks, plan.output, plan.bytes);
        if n_gpu > 0 && opts.n_ctx > gpu.max_attention_positions() {
            return Err(ModelError::Options(format!(
                "context of {} positions exceeds the CUDA attention kernel's limit of {} on this GPU; use a \
                 smaller --ctx (or --gpu-layers 0)",
                opts.n_ctx,
                gpu.max_attention_positions()
            )));
        }
        let out_bytes = out_bytes.unwrap_or(0);
        eprintln!(
            "edgeact: {}: offloading {n_gpu}/{n_layers} blocks{} — estimated {:.2} GiB of GPU memory ({:.2} GiB free \
             of {:.2} GiB; KV cache {:.0} MiB per block for {} positions)",
            gpu.info(),
            if all_on_gpu { " and the output layer" } else { "" },
            need as f64 / GIB,
            free as f64 / GIB,
            total as f64 / GIB,
            kv_bytes as f64 / (1u64 << 20) as f64,
            opts.n_ctx
        );
        if opts.gpu_layers.is_some() && need + HEADROOM > free {
            eprintln!("edgeact: warning: --gpu-layers {n_gpu} may not fit in the GPU's free memory");
        }

        let bytes = model.file().bytes();
        let upload = |w: &Weight| {
            gpu.upload_matrix(w.ty, w.rows, w.cols, &bytes[w.range.clone()])
                .map_err(|e| ModelError::Compute(format!("uploading {}: {e}", w.name)))
        };
        let mut progress =
            Progress::new(per_layer[..n_gpu].iter().sum::<usize>() + if all_on_gpu { out_bytes } else { 0 });
        let mut layers = Vec::with_capacity(n_gpu);
        for (i, l) in model.layers.iter().take(n_gpu).enumerate() {
            layers.push(GpuLayer {
                attn_norm: gpu.upload(&l.attn_norm).map_err(gpu_err)?,
                wq: upload(&l.wq)?,
                wk: upload(&l.wk)?,
                wv: upload(&l.wv)?,
                wo: upload(&l.wo)?,
                ffn_norm: gpu.upload(&l.ffn_norm).map_err(gpu_err)?,
                w_gate: upload(&l.w_gate)?,
                w_up: upload(&l.w_up)?,
                w_down: upload(&l.w_down)?,
                k_cache: gpu.zeros(opts.n_ctx * kv_dim).map_err(gpu_err)?,
                v_cache: gpu.zeros(opts.n_ctx * kv_dim).map_err(gpu_err)?,
                lora: {
                    let mut terms: [Vec<GpuLora>; 7] = Default::default();
                    for (slot, w) in terms.iter_mut().zip(layer_weights(l)) {
                        for d in &w.lora {
                            slot.push(upload_lora(&gpu, d)?);
                        }
                    }
                    terms
                },
            });
            progress.advance(per_layer[i], &format!("block {}/{n_gpu}", i + 1));
        }
        let output = if all_on_gpu {
            let o = (gpu.upload(&model.output_norm).map_err(gpu_err)?, upload(&model.output)?);
            progress.advance(out_bytes, "output");
            Some(o)
        } else {
            None
        };
        progress.finish();
        let freq_scale = match cfg.rope_scaling {
            RopeScaling::None => 1.0,
            RopeScaling::Linear { factor } => 1.0 / factor,
        };
        let rope = gpu
            .upload(&rope_table(cfg.head_dim, cfg.rope_freq_base, freq_scale, opts.n_ctx))
            .map_err(gpu_err)?;
        let z = |n: usize| gpu.zeros::<f32>(n).map_err(gpu_err);
        let lora_rank_max = model.layers[..n_gpu]
            .iter()
            .flat_map(layer_weights)
            .flat_map(|w| w.lora.iter().map(|d| d.rank().next_multiple_of(LORA_RANK_ALIGN)))
            .max()
            .unwrap_or(0);
        let s = GpuScratch {
            x: z(b * dim)?,
            xb: z(b * dim)?,
            xb2: z(b * dim)?,
            q: z(b * dim)?,
            k: z(b * kv_dim)?,
            v: z(b * kv_dim)?,
            att: z(b * dim)?,
            hb: z(b * ffn)?,
            hb2: z(b * ffn)?,
            hb3: z(b * ffn)?,
            logits: z(cfg.vocab_size * b)?,
            lora_mid: z(b * lora_rank_max)?,
            lora_out: z(if lora_rank_max > 0 {
                b * dim.max(ffn).max(kv_dim)
            } else {
                0
            })?,
        };
        let tail = (n_gpu < n_layers || output.is_none()).then(|| {
            CpuBlocks::new(
                ThreadPool::new(opts.threads.max(1)),
                opts.cpu_activations,
                RopeTable::new(cfg.head_dim, cfg.rope_freq_base, freq_scale, opts.n_ctx),
                vec![KvCache::new(
                    opts.cpu_kv_type,
                    n_layers - n_gpu,
                    opts.n_ctx,
                    cfg.n_kv_heads,
                    cfg.head_dim,
                )],
                n_gpu,
            )
        });
        Ok(GpuForward {
            model,
            gpu,
            layers,
            output,
            rope,
            n_ctx: opts.n_ctx,
            max_batch: b,
            s,
            tail,
        })
    }

    /// Blocks running on the GPU.
    pub fn gpu_layers(&self) -> usize {
        self.layers.len()
    }

    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    /// Runs `tokens` (ids already checked) at positions `pos0..`, in chunks of at most
    /// `max_batch`, and appends to `logits_out` the logits of positions `first_logit..` of
    /// this call (`None`: no logits).
    pub fn forward(
        &mut self,
        tokens: &[u32],
        pos0: usize,
        first_logit: Option<usize>,
        logits_out: &mut Vec<f32>,
    ) -> Result<(), ModelError> {
        if pos0 + tokens.len() > self.n_ctx {
            return Err(ModelError::ContextFull {
                needed: pos0 + tokens.len(),
                n_ctx: self.n_ctx,
            });
        }
        let mut done = 0;
        for chunk in tokens.chunks(self.max_batch) {
            let first = first_logit.map(|f| f.saturating_sub(done)).filter(|&f| f < chunk.len());
            self.chunk(chunk, pos0 + done, first, logits_out)?;
            done += chunk.len();
        }
        Ok(())
    }

    /// Evaluates `tokens` at positions `pos0..` and returns the last token's logits.
    pub fn eval(&mut self, tokens: &[u32], pos0: usize) -> Result<Vec<f32>, ModelError> {
        if tokens.is_empty() {
            return Err(ModelError::EmptyInput);
        }
        let n_vocab = self.model.config().vocab_size;
        if let Some(&token) = tokens.iter().find(|&&t| t as usize >= n_vocab) {
            return Err(ModelError::InvalidToken { token, n_vocab });
        }
        let mut out = Vec::with_capacity(n_vocab);
        self.forward(tokens, pos0, Some(tokens.len() - 1), &mut out)?;
        Ok(out)
    }

    fn chunk(
        &mut self,
        tokens: &[u32],
        pos0: usize,
        first: Option<usize>,
        out: &mut Vec<f32>,
    ) -> Result<(), ModelError> {
        let model = Arc::clone(&self.model);
        let cfg = model.config();
        let n = tokens.len();
        let dim = cfg.dim;
        let mut x = vec![0f32; n * dim];
        for (t, &tok) in tokens.iter().enumerate() {
            model.embed(tok, &mut x[t * dim..(t + 1) * dim])?;
        }
        self.gpu.upload_into(&x, &mut self.s.x).map_err(gpu_err)?;
        for l in 0..self.layers.len() {
            self.gpu_block(l, n, pos0).map_err(gpu_err)?;
        }
        let Some(first) = first else {
            if let Some(tail) = self.tail.as_mut() {
                x = self.gpu.download(&self.s.x, n * dim).map_err(gpu_err)?;
                tail.run(&model, &mut x, n, pos0)?;
            } else {
                self.gpu.synchronize().map_err(gpu_err)?;
            }
            return Ok(());
        };
        let rows = n - first;
        if let Some((norm, w)) = &self.output {
            let g = &self.gpu;
            let s = &mut self.s;
            let xs = s.x.slice(first * dim..n * dim);
            g.rms_norm(&xs, &norm.slice(..), &mut s.xb.slice_mut(..), rows, dim, cfg.rms_eps)
                .map_err(gpu_err)?;
            g.matmul(w, &s.xb.slice(..), rows, &mut s.logits.slice_mut(..))
                .map_err(gpu_err)?;
            out.extend(g.download(&s.logits, rows * cfg.vocab_size).map_err(gpu_err)?);
            return Ok(());
        }
        x = self.gpu.download(&self.s.x, n * dim).map_err(gpu_err)?;
        let tail = self
            .tail
            .as_mut()
            .ok_or_else(|| ModelError::Compute("no CPU path for the output".into()))?;
        tail.run(&model, &mut x, n, pos0)?;
        tail.logits(&model, &x, first, n, out)
    }

    /// One transformer block on the GPU over the chunk in `s.x`.
    fn gpu_block(&mut self, l: usize, n: usize, pos0: usize) -> Result<(), CudaError> {
        let cfg = self.model.config();
        let (dim, kv_dim, hd, ffn) = (cfg.dim, cfg.kv_dim(), cfg.head_dim, cfg.ffn_dim);
        let g = &self.gpu;
        let s = &mut self.s;
        let layer = &mut self.layers[l];
        g.rms_norm(
            &s.x.slice(..),
            &layer.attn_norm.slice(..),
            &mut s.xb.slice_mut(..),
            n,
            dim,
            cfg.rms_eps,
        )?;
        g.matmul(&layer.wq, &s.xb.slice(..), n, &mut s.q.slice_mut(..))?;
        g.matmul(&layer.wk, &s.xb.slice(..), n, &mut s.k.slice_mut(..))?;
        g.matmul(&layer.wv, &s.xb.slice(..), n, &mut s.v.slice_mut(..))?;
        add_lora(g, &layer.lora[0], &s.xb, n, &mut s.q, &mut s.lora_mid, &mut s.lora_out)?;
        add_lora(g, &layer.lora[1], &s.xb, n, &mut s.k, &mut s.lora_mid, &mut s.lora_out)?;
        add_lora(g, &layer.lora[2], &s.xb, n, &mut s.v, &mut s.lora_mid, &mut s.lora_out)?;
        let rope = self.rope.slice(..);
        g.rope(&mut s.q.slice_mut(..), &rope, self.n_ctx, n, cfg.n_heads, hd, pos0)?;
        g.rope(&mut s.k.slice_mut(..), &rope, self.n_ctx, n, cfg.n_kv_heads, hd, pos0)?;
        g.kv_store(
            &s.k.slice(..),
            &s.v.slice(..),
            &mut layer.k_cache.slice_mut(..),
            &mut layer.v_cache.slice_mut(..),
            n,
            kv_dim,
            pos0,
        )?;
        g.attention(
            &s.q.slice(..),
            &layer.k_cache.slice(..),
            &layer.v_cache.slice(..),
            &mut s.att.slice_mut(..),
            n,
            cfg.n_heads,
            cfg.n_kv_heads,
            hd,
            pos0,
        )?;
        g.matmul(&layer.wo, &s.att.slice(..), n, &mut s.xb2.slice_mut(..))?;
        add_lora(
            g,
            &layer.lora[3],
            &s.att,
            n,
            &mut s.xb2,
            &mut s.lora_mid,
            &mut s.lora_out,
        )?;
        g.add_inplace(&mut s.x.slice_mut(..), &s.xb2.slice(..), n * dim)?;
        g.rms_norm(
            &s.x.slice(..),
            &layer.ffn_norm.slice(..),
            &mut s.xb.slice_mut(..),
            n,
            dim,
            cfg.rms_eps,
        )?;
        g.matmul(&layer.w_gate, &s.xb.slice(..), n, &mut s.hb.slice_mut(..))?;
        g.matmul(&layer.w_up, &s.xb.slice(..), n, &mut s.hb2.slice_mut(..))?;
        add_lora(g, &layer.lora[4], &s.xb, n, &mut s.hb, &mut s.lora_mid, &mut s.lora_out)?;
        add_lora(
            g,
            &layer.lora[5],
            &s.xb,
            n,
            &mut s.hb2,
            &mut s.lora_mid,
            &mut s.lora_out,
        )?;
        g.swiglu(&s.hb.slice(..), &s.hb2.slice(..), &mut s.hb3.slice_mut(..), n * ffn)?;
        g.matmul(&layer.w_down, &s.hb3.slice(..), n, &mut s.xb2.slice_mut(..))?;
        add_lora(
            g,
            &layer.lora[6],
            &s.hb3,
            n,
            &mut s.xb2,
            &mut s.lora_mid,
            &mut s.lora_out,
        )?;
        g.add_inplace(&mut s.x.slice_mut(..), &s.xb2.slice(..), n * dim)
    }
}

const GIB: f64 = (1u64 << 30) as f64;

/// A one-line stderr progress bar for weight uploads of 1 GiB or more (small models load
/// in a blink and print nothing).
struct Progress {
    total: usize,
    done: usize,
    shown: bool,
}

impl Progress {
    fn new(total: usize) -> Progress {
        Progress {
            total,
            done: 0,
            shown: false,
        }
    }

    fn advance(&mut self, bytes: usize, what: &str) {
        self.done += bytes;
        if self.total < (1 << 30) {
            return;
        }
        let frac = self.done as f64 / self.total as f64;
        let filled = (frac * 30.0).round() as usize;
        eprint!(
            "\redgeact: uploading weights [{}{}] {:5.1}% {:.2}/{:.2} GiB ({what})   ",
            "#".repeat(filled.min(30)),
            " ".repeat(30 - filled.min(30)),
            frac * 100.0,
            self.done as f64 / GIB,
            self.total as f64 / GIB
        );
        self.shown = true;
    }

    fn finish(&self) {
        if self.shown {
            eprintln!();
        }
    }
}

/// What goes to the GPU: the first `blocks` blocks, the output layer when `output`, `bytes` of
/// GPU memory in all (scratch included).
#[derive(Debug, PartialEq, Eq)]
struct OffloadPlan {
    blocks: usize,
    output: bool,
    bytes: usize,
}

/// Decides the offload from sizes alone: `per_layer` bytes of each block (weights, LoRA, KV
/// cache), the first `supported` blocks having GPU kernels, `scratch` bytes of activations,
/// `output` bytes of the output layer (`None`: it stays on the CPU), `free` bytes on the GPU.
/// `asked` (`--gpu-layers`) overrides the block count (`Err(asked)` past `supported`); the
/// output goes only after every block and only where it fits as well, and otherwise runs on
/// the CPU.
fn plan_offload(
    asked: Option<usize>,
    per_layer: &[usize],
    supported: usize,
    scratch: usize,
    output: Option<usize>,
    free: usize,
) -> Result<OffloadPlan, usize> {
    let n_layers = per_layer.len();
    let mut used = scratch + HEADROOM;
    let mut fit = 0;
    while fit < supported && used + per_layer[fit] <= free {
        used += per_layer[fit];
        fit += 1;
    }
    let blocks = gpu_block_count(asked, n_layers, supported, fit)?;
    let block_bytes: usize = per_layer[..blocks].iter().sum();
    let output = output.filter(|&o| blocks == n_layers && block_bytes + scratch + o + HEADROOM <= free);
    Ok(OffloadPlan {
        blocks,
        output: output.is_some(),
        bytes: block_bytes + scratch + output.unwrap_or(0),
    })
}

/// How many of `n_layers` blocks go to the GPU: `asked` (`--gpu-layers`) capped at the block
/// count (`999` is the usual "all of them"), else the `fit` that memory allows; `Err(asked)`
/// when it asks for a block past the first one (`supported`) without a GPU kernel.
fn gpu_block_count(asked: Option<usize>, n_layers: usize, supported: usize, fit: usize) -> Result<usize, usize> {
    match asked {
        Some(n) if n.min(n_layers) > supported => Err(n),
        Some(n) => Ok(n.min(n_layers)),
        None => Ok(fit),
    }
}

#[cfg(test)]
mod block_count_tests {
    use super::{gpu_block_count, plan_offload, OffloadPlan, HEADROOM};

    #[test]
    fn the_output_layer_goes_to_the_gpu_only_where_it_fits() {
        const G: usize = 1 << 30;
        let blocks = [G; 4];
        // Room for every block and the output.
        let all = plan_offload(None, &blocks, 4, G, Some(G), 6 * G + HEADROOM).unwrap();
        assert_eq!(
            all,
            OffloadPlan {
                blocks: 4,
                output: true,
                bytes: 6 * G
            }
        );
        // Every block fits but the output does not: it stays on the CPU (it was uploaded
        // anyway and ran out of memory).
        let tight = plan_offload(None, &blocks, 4, G, Some(G), 5 * G + HEADROOM).unwrap();
        assert_eq!(
            tight,
            OffloadPlan {
                blocks: 4,
                output: false,
                bytes: 5 * G
            }
        );
        // Asked for every block on a GPU too small for the output as well: the same.
        let asked = plan_offload(Some(4), &blocks, 4, G, Some(G), 5 * G + HEADROOM).unwrap();
        assert_eq!(asked, tight);
        // Not every block on the GPU: the output runs where the last block ran.
        let part = plan_offload(None, &blocks, 4, G, Some(G), 3 * G + HEADROOM).unwrap();
        assert_eq!(
            part,
            OffloadPlan {
                blocks: 2,
                output: false,
                bytes: 3 * G
            }
        );
        // An output the GPU cannot compute (an unsupported type or LoRA-adapted).
        let cpu_out = plan_offload(None, &blocks, 4, G, None, 9 * G).unwrap();
        assert_eq!(
            cpu_out,
            OffloadPlan {
                blocks: 4,
                output: false,
                bytes: 5 * G
            }
        );
        // Block 2 has no GPU kernel.
        assert_eq!(plan_offload(Some(3), &blocks, 2, G, Some(G), 9 * G), Err(3));
        assert_eq!(plan_offload(None, &blocks, 2, G, Some(G), 9 * G).unwrap().blocks, 2);
    }

    #[test]
    fn gpu_layers_beyond_the_model_mean_all_of_them() {
        // Every block supported: any count past the model is all of it (it indexed one past
        // the last block and panicked).
        assert_eq!(gpu_block_count(Some(999), 5, 5, 2), Ok(5));
        assert_eq!(gpu_block_count(Some(3), 5, 5, 2), Ok(3));
        assert_eq!(gpu_block_count(None, 5, 5, 2), Ok(2));
        // Block 3 has no GPU kernel: up to 3 blocks, not more.
        assert_eq!(gpu_block_count(Some(3), 5, 3, 3), Ok(3));
        assert_eq!(gpu_block_count(Some(4), 5, 3, 3), Err(4));
        assert_eq!(gpu_block_count(Some(999), 5, 3, 3), Err(999));
    }
}
