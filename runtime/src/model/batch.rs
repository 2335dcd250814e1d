//! Many sequences of one model evaluated together ([`MultiSession`]): each sequence has its own
//! KV cache and position, and one [`MultiSession::step`] runs a chunk of tokens from any of them
//! (one new token of each decoding sequence, pieces of prompts being prefilled) through a
//! single forward pass, so every weight matrix is read once per step for the whole batch.
//!
//! A single-sequence [`super::Session`] is this with one sequence.

use super::blocks::{sized, CpuBlocks, RowPos};
use super::kv_cache::{KvCache, KvType};
use super::ops::{Activations, RopeTable, ThreadPool};
use super::weights::LlamaModel;
use super::{ModelError, RopeScaling};
use std::sync::Arc;

/// Largest number of tokens pushed through the matmuls at once.
pub const MAX_BATCH: usize = 512;

/// Hard ceiling on a sequence's context, whatever the model file claims (16 Mi tokens, far
/// beyond any model this runtime loads); the memory check below usually binds first.
pub const MAX_CONTEXT: usize = 1 << 24;

/// Bytes one sequence of `n_ctx` positions allocates up front: the KV cache (keys and values
/// of every layer) and the RoPE table (a cos/sin pair of f32 per position and dimension pair).
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

/// Refuses contexts the process could not hold, before anything is allocated: over
/// [`MAX_CONTEXT`], an overflowing size, or more memory than is available for `n_seqs`
/// sequences of `n_ctx` positions.
fn check_context_fits(
    cfg: &super::LlamaConfig,
    n_ctx: usize,
    n_seqs: usize,
    kv_type: KvType,
) -> Result<(), ModelError> {
    if n_ctx > MAX_CONTEXT {
        return Err(ModelError::Options(format!(
            "context length {n_ctx} is above the limit of {MAX_CONTEXT} tokens; use a smaller --ctx"
        )));
    }
    let need = context_memory_bytes(cfg, n_ctx, kv_type)
        .and_then(|b| b.checked_mul(n_seqs as u64))
        .ok_or_else(|| {
            ModelError::Options(format!(
                "the KV cache for {n_seqs} x {n_ctx}-token contexts overflows a 64-bit size"
            ))
        })?;
    if let Some(available) = available_memory_bytes() {
        if need > available {
            let what = if n_seqs == 1 {
                format!("a {n_ctx}-token context")
            } else {
                format!("{n_seqs} sequences of {n_ctx} tokens")
            };
            return Err(ModelError::Options(format!(
                "{what} need {} for the KV cache, more than the {} of memory available; \
                 use a smaller --ctx{}",
                gib(need),
                gib(available),
                if n_seqs == 1 { "" } else { " or --parallel" }
            )));
        }
    }
    Ok(())
}

/// How to set up a [`MultiSession`] (or a [`super::Session`]).
#[derive(Clone, Debug)]
pub struct SessionOptions {
    /// Context length in tokens, per sequence; 0 means the model's maximum. Larger values are
    /// capped at the model's maximum.
    pub n_ctx: usize,
    /// Worker threads for the matmuls; 0 means all available cores.
    pub threads: usize,
    pub kv_type: KvType,
    /// Most tokens in one forward pass, 1..=[`MAX_BATCH`].
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

/// Which positions of a chunk need logits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logits {
    None,
    Last,
    All,
}

/// Tokens of one sequence to evaluate after the ones it has cached.
#[derive(Clone, Copy, Debug)]
pub struct SeqChunk<'a> {
    pub seq: usize,
    pub tokens: &'a [u32],
    pub logits: Logits,
}

/// The KV caches of `n_seqs` sequences of one model and the batched forward pass over them.
pub struct MultiSession {
    model: Arc<LlamaModel>,
    n_ctx: usize,
    batch_size: usize,
    blocks: CpuBlocks,
    /// Tokens cached per sequence (position i of sequence s holds `seqs[s][i]`).
    seqs: Vec<Vec<u32>>,
    /// The residual stream of the chunk being evaluated, reused between calls.
    x: Vec<f32>,
    /// The rows of `x` whose logits are wanted, gathered.
    picked: Vec<f32>,
    rows: Vec<RowPos>,
}

impl MultiSession {
    /// Sets up `n_seqs` empty sequences of `opts.n_ctx` positions each. KV memory is reserved
    /// up front but only touched (committed) as positions are written.
    pub fn new(model: Arc<LlamaModel>, opts: SessionOptions, n_seqs: usize) -> Result<MultiSession, ModelError> {
        let cfg = model.config();
        if n_seqs == 0 {
            return Err(ModelError::Options("at least one sequence is needed".into()));
        }
        let n_ctx = if opts.n_ctx == 0 {
            cfg.max_context
        } else {
            opts.n_ctx.min(cfg.max_context)
        };
        check_context_fits(cfg, n_ctx, n_seqs, opts.kv_type)?;
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
        let caches = (0..n_seqs)
            .map(|_| KvCache::new(opts.kv_type, cfg.n_layers, n_ctx, cfg.n_kv_heads, cfg.head_dim))
            .collect();
        let freq_scale = match cfg.rope_scaling {
            RopeScaling::None => 1.0,
            RopeScaling::Linear { factor } => 1.0 / factor,
        };
        let rope = RopeTable::new(cfg.head_dim, cfg.rope_freq_base, freq_scale, n_ctx);
        Ok(MultiSession {
            blocks: CpuBlocks::new(ThreadPool::new(threads), opts.activations, rope, caches, 0),
            n_ctx,
            batch_size: opts.batch_size,
            seqs: vec![Vec::new(); n_seqs],
            x: Vec::new(),
            picked: Vec::new(),
            rows: Vec::new(),
            model,
        })
    }

    pub fn model(&self) -> &Arc<LlamaModel> {
        &self.model
    }

    /// Number of sequences.
    pub fn n_seqs(&self) -> usize {
        self.seqs.len()
    }

    /// Positions each sequence's cache holds.
    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    /// Most tokens one [`MultiSession::step`] takes.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    pub fn n_threads(&self) -> usize {
        self.blocks.pool.n_threads()
    }

    #[cfg_attr(not(feature = "cuda"), allow(dead_code))] // the GPU forward's CPU layers
    pub(super) fn activations(&self) -> Activations {
        self.blocks.activations
    }

    /// Bytes reserved by the KV caches of all sequences.
    pub fn kv_bytes(&self) -> usize {
        self.blocks.caches.iter().map(KvCache::bytes).sum()
    }

    /// Tokens cached for `seq`, in order.
    pub fn tokens(&self, seq: usize) -> &[u32] {
        &self.seqs[seq]
    }

    /// Forgets positions `>= n` of `seq` so that it continues at position `n` (prefix reuse).
    pub fn truncate(&mut self, seq: usize, n: usize) {
        self.seqs[seq].truncate(n);
    }

    /// Records tokens evaluated elsewhere (the GPU forward keeps their keys and values).
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    pub(super) fn record(&mut self, seq: usize, tokens: &[u32]) {
        self.seqs[seq].extend_from_slice(tokens);
    }

    /// Checks a step before anything changes: sequences exist and appear once, chunks are
    /// non-empty, ids are in the vocabulary, the contexts and the batch have room.
    fn check(&self, chunks: &[SeqChunk<'_>]) -> Result<(), ModelError> {
        let n_vocab = self.model.config().vocab_size;
        let mut seen = vec![false; self.seqs.len()];
        let mut total = 0usize;
        for c in chunks {
            if c.seq >= self.seqs.len() {
                return Err(ModelError::Options(format!(
                    "sequence {} does not exist (the session has {})",
                    c.seq,
                    self.seqs.len()
                )));
            }
            if std::mem::replace(&mut seen[c.seq], true) {
                return Err(ModelError::Options(format!(
                    "sequence {} appears twice in one step",
                    c.seq
                )));
            }
            if c.tokens.is_empty() {
                return Err(ModelError::EmptyInput);
            }
            if let Some(&token) = c.tokens.iter().find(|&&t| t as usize >= n_vocab) {
                return Err(ModelError::InvalidToken { token, n_vocab });
            }
            let needed = self.seqs[c.seq].len() + c.tokens.len();
            if needed > self.n_ctx {
                return Err(ModelError::ContextFull {
                    needed,
                    n_ctx: self.n_ctx,
                });
            }
            total += c.tokens.len();
        }
        if total == 0 {
            return Err(ModelError::EmptyInput);
        }
        if total > self.batch_size {
            return Err(ModelError::Options(format!(
                "{total} tokens in one step, more than the batch size of {}",
                self.batch_size
            )));
        }
        Ok(())
    }

    /// Evaluates every chunk after its sequence's cached tokens in one forward pass, and
    /// returns for each chunk the logits it asked for (`Last`: `vocab` values, `All`: one row
    /// per token, `None`: empty). On error nothing is cached.
    pub fn step(&mut self, chunks: &[SeqChunk<'_>]) -> Result<Vec<Vec<f32>>, ModelError> {
        self.check(chunks)?;
        let model = Arc::clone(&self.model);
        let cfg = model.config();
        let (dim, n_vocab) = (cfg.dim, cfg.vocab_size);
        let mut rows = std::mem::take(&mut self.rows);
        rows.clear();
        for c in chunks {
            let pos0 = self.seqs[c.seq].len();
            rows.extend((0..c.tokens.len()).map(|t| RowPos {
                seq: c.seq,
                pos: pos0 + t,
            }));
        }
        let n = rows.len();
        let x = sized(&mut self.x, n * dim);
        for (t, &tok) in chunks.iter().flat_map(|c| c.tokens).enumerate() {
            model.embed(tok, &mut x[t * dim..(t + 1) * dim])?;
        }
        let result = self.blocks.run_rows(&model, x, &rows);
        self.rows = rows;
        result?;
        // Rows that need logits go through the output projection together (it is the largest
        // matrix: one pass over it for the whole step).
        let mut wanted = Vec::new();
        let mut first = 0;
        for c in chunks {
            let end = first + c.tokens.len();
            match c.logits {
                Logits::None => {}
                Logits::Last => wanted.push(end - 1),
                Logits::All => wanted.extend(first..end),
            }
            first = end;
        }
        let mut logits = Vec::with_capacity(wanted.len() * n_vocab);
        if !wanted.is_empty() {
            let mut picked = std::mem::take(&mut self.picked);
            picked.clear();
            for &r in &wanted {
                picked.extend_from_slice(&self.x[r * dim..(r + 1) * dim]);
            }
            let result = self.blocks.logits(&model, &picked, 0, wanted.len(), &mut logits);
            self.picked = picked;
            result?;
        }
        let out = if chunks.len() == 1 {
            vec![logits]
        } else {
            let mut rest = logits.as_slice();
            chunks
                .iter()
                .map(|c| {
                    let k = match c.logits {
                        Logits::None => 0,
                        Logits::Last => 1,
                        Logits::All => c.tokens.len(),
                    };
                    let (mine, tail) = rest.split_at(k * n_vocab);
                    rest = tail;
                    mine.to_vec()
                })
                .collect()
        };
        for c in chunks {
            self.seqs[c.seq].extend_from_slice(c.tokens);
        }
        Ok(out)
    }
}
