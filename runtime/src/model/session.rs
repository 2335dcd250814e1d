//! One sequence being evaluated: its KV cache, the tokens cached so far, and the forward pass
//! (embedding → the blocks of [`super::blocks`] → output norm and projection), in chunks of up
//! to [`MAX_BATCH`] tokens.

use super::blocks::{sized, CpuBlocks};
use super::kv_cache::{KvCache, KvType};
use super::ops::{Activations, RopeTable, ThreadPool};
use super::weights::LlamaModel;
use super::{ModelError, RopeScaling};
use std::sync::Arc;

/// Largest number of tokens pushed through the matmuls at once.
pub const MAX_BATCH: usize = 512;

/// Hard ceiling on a session's context, whatever the model file claims (16 Mi tokens, far
/// beyond any model this runtime loads); the memory check below usually binds first.
pub const MAX_CONTEXT: usize = 1 << 24;

/// Bytes a session of `n_ctx` positions allocates up front: the KV cache (keys and values of
/// every layer) and the RoPE table (a cos/sin pair of f32 per position and dimension pair).
/// `None` when the product overflows.
pub fn context_memory_bytes(cfg: &super::LlamaConfig, n_ctx: usize, kv_type: KvType) -> Option<u64> {
    let elem: u64 = match kv_type {
        KvType::F16 => 2,
        KvType::F32 => 4,
    };
    let kv = (cfg.n_layers as u64)
        .checked_mul(n_ctx as u64)?
        .checked_mul(cfg.kv_dim() as u64)?
        .checked_mul(elem)?
        .checked_mul(2)?;
    let rope = (n_ctx as u64).checked_mul(cfg.head_dim as u64)?.checked_mul(4)?;
    kv.checked_add(rope)
}

/// Memory the kernel says a new allocation can get (`MemAvailable` plus free swap), or `None`
/// where that cannot be read (then no check is made).
fn available_memory_bytes() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = meminfo.lines().find(|l| l.starts_with(name))?;
        let kib: u64 = line[name.len()..].trim().trim_end_matches("kB").trim().parse().ok()?;
        kib.checked_mul(1024)
    };
    Some(field("MemAvailable:")?.saturating_add(field("SwapFree:").unwrap_or(0)))
}

fn gib(bytes: u64) -> String {
    format!("{:.2} GiB", bytes as f64 / (1u64 << 30) as f64)
}

/// Refuses a context the process could not hold, before anything is allocated: over
/// [`MAX_CONTEXT`], an overflowing size, or more memory than is available.
fn check_context_fits(cfg: &super::LlamaConfig, n_ctx: usize, kv_type: KvType) -> Result<(), ModelError> {
    if n_ctx > MAX_CONTEXT {
        return Err(ModelError::Options(format!(
            "context length {n_ctx} is above the limit of {MAX_CONTEXT} tokens; use a smaller --ctx"
        )));
    }
    let need = context_memory_bytes(cfg, n_ctx, kv_type).ok_or_else(|| {
        ModelError::Options(format!(
            "the KV cache for a {n_ctx}-token context overflows a 64-bit size"
        ))
    })?;
    if let Some(available) = available_memory_bytes() {
        if need > available {
            return Err(ModelError::Options(format!(
                "a {n_ctx}-token context needs {} for the KV cache, more than the {} of memory available; \
                 use a smaller --ctx",
                gib(need),
                gib(available)
            )));
        }
    }
    Ok(())
}

/// How to set up a [`Session`].
#[derive(Clone, Debug)]
pub struct SessionOptions {
    /// Context length in tokens; 0 means the model's maximum. Larger values are capped at the
    /// model's maximum (see [`Session::n_ctx`]).
    pub n_ctx: usize,
    /// Worker threads for the matmuls; 0 means all available cores.
    pub threads: usize,
    pub kv_type: KvType,
    /// Tokens per prefill chunk, 1..=[`MAX_BATCH`].
    pub batch_size: usize,
    /// How the CPU matmuls treat activations: quantized like ggml (default, fast) or f32
    /// against dequantized weights (the GPU kernels' arithmetic).
    pub activations: Activations,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            n_ctx: 0,
            threads: 0,
            kv_type: KvType::F16,
            batch_size: MAX_BATCH,
            activations: Activations::Quantized,
        }
    }
}

/// Which positions of a batch need logits.
#[derive(Clone, Copy, PartialEq)]
enum Logits {
    None,
    Last,
    All,
}

/// A KV cache plus position for one sequence of one model.
pub struct Session {
    model: Arc<LlamaModel>,
    n_ctx: usize,
    batch_size: usize,
    /// Every block runs here unless a GPU forward takes the sequence.
    blocks: CpuBlocks,
    tokens: Vec<u32>,
    /// The residual stream of the chunk being evaluated, reused between calls.
    x: Vec<f32>,
    /// The GPU forward, when the session runs on CUDA (see [`Session::with_backend`]).
    #[cfg(feature = "cuda")]
    gpu: Option<super::cuda::GpuForward>,
}

impl Session {
    pub fn new(model: Arc<LlamaModel>, opts: SessionOptions) -> Result<Session, ModelError> {
        let cfg = model.config();
        let n_ctx = if opts.n_ctx == 0 {
            cfg.max_context
        } else {
            opts.n_ctx.min(cfg.max_context)
        };
        check_context_fits(cfg, n_ctx, opts.kv_type)?;
        if opts.batch_size == 0 || opts.batch_size > MAX_BATCH {
            return Err(ModelError::Options(format!(
                "batch size {} is not in 1..={MAX_BATCH}",
                opts.batch_size
            )));
        }
        // More workers than CPUs only adds contention (and tens of thousands of threads fail to
        // spawn), so a larger request is clamped; the CLI says so when it does.
        let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let threads = if opts.threads == 0 {
            cpus
        } else {
            opts.threads.min(cpus)
        };
        let cache = KvCache::new(opts.kv_type, cfg.n_layers, n_ctx, cfg.kv_dim());
        let freq_scale = match cfg.rope_scaling {
            RopeScaling::None => 1.0,
            RopeScaling::Linear { factor } => 1.0 / factor,
        };
        let rope = RopeTable::new(cfg.head_dim, cfg.rope_freq_base, freq_scale, n_ctx);
        Ok(Session {
            blocks: CpuBlocks::new(ThreadPool::new(threads), opts.activations, rope, cache, 0),
            n_ctx,
            batch_size: opts.batch_size,
            tokens: Vec::new(),
            x: Vec::new(),
            #[cfg(feature = "cuda")]
            gpu: None,
            model,
        })
    }

    /// Like [`Session::new`], but runs the forward pass on `backend` (from
    /// `kernels::cuda::select_device`). On a GPU the first `gpu_layers` blocks (`None`: as many
    /// as fit, estimate printed) run there and the rest on the CPU; KV caches live with their
    /// blocks. The CPU backend is exactly [`Session::new`].
    pub fn with_backend(
        model: Arc<LlamaModel>,
        opts: SessionOptions,
        backend: &crate::kernels::cuda::Backend,
        gpu_layers: Option<usize>,
    ) -> Result<Session, ModelError> {
        #[allow(unused_mut)]
        let mut session = Session::new(Arc::clone(&model), opts)?;
        #[cfg(feature = "cuda")]
        if let Some(mut g) =
            super::cuda::GpuOptions::for_backend(backend, session.n_ctx, session.batch_size, session.n_threads())
        {
            g.gpu_layers = gpu_layers;
            g.cpu_activations = session.blocks.activations;
            session.gpu = Some(super::cuda::GpuForward::new(model, &g)?);
        }
        #[cfg(not(feature = "cuda"))]
        if let crate::kernels::cuda::Backend::Cuda(_) = backend {
            let _ = (model, gpu_layers);
            return Err(ModelError::Options("this build has no CUDA support".into()));
        }
        Ok(session)
    }

    /// Transformer blocks running on the GPU (0 on the CPU backend).
    pub fn gpu_layers(&self) -> usize {
        #[cfg(feature = "cuda")]
        if let Some(g) = &self.gpu {
            return g.gpu_layers();
        }
        0
    }

    pub fn model(&self) -> &Arc<LlamaModel> {
        &self.model
    }

    /// Context length of this session (positions the cache holds).
    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    pub fn n_threads(&self) -> usize {
        self.blocks.pool.n_threads()
    }

    /// Bytes held by the KV cache.
    pub fn kv_bytes(&self) -> usize {
        self.blocks.cache.bytes()
    }

    /// Tokens whose keys and values are cached, in order (position i holds `tokens()[i]`).
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Forgets positions `>= n` so that evaluation continues at position `n` (prefix reuse).
    pub fn truncate(&mut self, n: usize) {
        self.tokens.truncate(n);
    }

    /// Evaluates `tokens` after the cached ones and returns the logits of the last one.
    pub fn eval(&mut self, tokens: &[u32]) -> Result<Vec<f32>, ModelError> {
        self.eval_with(tokens, Logits::Last)
    }

    /// Like [`Session::eval`] but returns the logits of every position, row-major
    /// `tokens.len() x vocab_size`.
    pub fn eval_all_logits(&mut self, tokens: &[u32]) -> Result<Vec<f32>, ModelError> {
        self.eval_with(tokens, Logits::All)
    }

    fn eval_with(&mut self, tokens: &[u32], want: Logits) -> Result<Vec<f32>, ModelError> {
        if tokens.is_empty() {
            return Err(ModelError::EmptyInput);
        }
        let n_vocab = self.model.config().vocab_size;
        if let Some(&token) = tokens.iter().find(|&&t| t as usize >= n_vocab) {
            return Err(ModelError::InvalidToken { token, n_vocab });
        }
        let needed = self.tokens.len() + tokens.len();
        if needed > self.n_ctx {
            return Err(ModelError::ContextFull {
                needed,
                n_ctx: self.n_ctx,
            });
        }
        let mut logits = Vec::with_capacity(if want == Logits::All {
            tokens.len() * n_vocab
        } else {
            n_vocab
        });
        let n_chunks = tokens.len().div_ceil(self.batch_size);
        for (i, chunk) in tokens.chunks(self.batch_size).enumerate() {
            let chunk_want = match want {
                Logits::All => Logits::All,
                _ if i + 1 == n_chunks => Logits::Last,
                _ => Logits::None,
            };
            self.forward(chunk, chunk_want, &mut logits)?;
            self.tokens.extend_from_slice(chunk);
        }
        Ok(logits)
    }

    /// Runs one chunk (validated: ids in range, fits the context) and appends the requested
    /// logits to `logits_out`.
    fn forward(&mut self, tokens: &[u32], want: Logits, logits_out: &mut Vec<f32>) -> Result<(), ModelError> {
        #[cfg(feature = "cuda")]
        if let Some(g) = self.gpu.as_mut() {
            let first = match want {
                Logits::None => None,
                Logits::Last => Some(tokens.len() - 1),
                Logits::All => Some(0),
            };
            return g.forward(tokens, self.tokens.len(), first, logits_out);
        }
        let model = Arc::clone(&self.model);
        let dim = model.config().dim;
        let n = tokens.len();
        let pos0 = self.tokens.len();
        let x = sized(&mut self.x, n * dim);
        for (t, &tok) in tokens.iter().enumerate() {
            model.embed(tok, &mut x[t * dim..(t + 1) * dim])?;
        }
        self.blocks.run(&model, x, n, pos0)?;
        match want {
            Logits::None => Ok(()),
            Logits::Last => self.blocks.logits(&model, x, n - 1, n, logits_out),
            Logits::All => self.blocks.logits(&model, x, 0, n, logits_out),
        }
    }
}
