//! The Llama transformer block on the CPU, written once. [`CpuBlocks`] owns what the blocks
//! need (thread pool, activation arithmetic, RoPE table, the KV cache of its layers) and runs
//! layers `first_layer..` over a residual stream: all of them for a CPU [`super::Session`],
//! the ones left after the offloaded range for the CUDA forward.
//!
//! Each block is batched: a chunk of rows goes through every matmul at once (weights are
//! streamed once per chunk), then each row attends causally over its own sequence's cache,
//! which already holds the chunk's earlier positions of that sequence. The rows of one chunk
//! may belong to different sequences (each a [`RowPos`]: which KV cache, which position), so
//! the decode steps of many sequences and prefill pieces share one pass over the weights.

use super::attention;
use super::kv_cache::KvCache;
use super::ops::{self, Activations, RopeTable, ThreadPool};
use super::weights::{Layer, LlamaModel, Weight};
use super::ModelError;
use std::sync::Mutex;

/// Multiply-adds below which attention runs on the calling thread.
const PARALLEL_ATTENTION_WORK: usize = 1 << 16;

/// Query heads one attention work item takes at most (when the query heads per KV head are
/// fewer, that many tokens' heads): each cached key and value row is widened from f16 once
/// for all of them, and read from memory once per item. Measured (2 threads, Intel VM): 7B
/// Q4_K_M pp512 (one query head per KV head) 8 -> 79-80 t/s, 16 -> 81-82, 32 -> 85, 64 ->
/// 79-82; TinyLlama Q4_0 pp512 at depth 3072 (8 per KV head) 8 -> 75, 32 -> 97-98, 128 ->
/// 99-103, 256 -> 99-100. A larger item also needs more score scratch (this many rows of the
/// context length).
const QUERIES_PER_ITEM: usize = 32;

/// The chunk's rows cut into runs of at most `most` consecutive rows of the same sequence.
fn token_blocks(rows: &[RowPos], most: usize) -> Vec<std::ops::Range<usize>> {
    let mut blocks: Vec<std::ops::Range<usize>> = Vec::new();
    for (t, row) in rows.iter().enumerate() {
        match blocks.last_mut() {
            Some(b) if b.len() < most && rows[b.start].seq == row.seq => b.end = t + 1,
            _ => blocks.push(t..t + 1),
        }
    }
    blocks
}

/// Activation buffers for one chunk, reused between calls.
#[derive(Default)]
struct Scratch {
    xb: Vec<f32>,
    xb2: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    att: Vec<f32>,
    hb: Vec<f32>,
    hb2: Vec<f32>,
    hb3: Vec<f32>,
}

/// `buf` resized to `n` (reusing its allocation), as a slice.
pub(super) fn sized(buf: &mut Vec<f32>, n: usize) -> &mut [f32] {
    buf.resize(n, 0.0);
    &mut buf[..n]
}

/// Where one row of a chunk belongs: the sequence (index of its KV cache) and its position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct RowPos {
    pub seq: usize,
    pub pos: usize,
}

/// The CPU side of a forward pass: layers `first_layer..` of the model and the KV caches of
/// the sequences it runs.
pub(super) struct CpuBlocks {
    pub(super) pool: ThreadPool,
    pub(super) activations: Activations,
    rope: RopeTable,
    /// One cache per sequence: keys and values of layers `first_layer..` (cache layer 0 is
    /// model layer `first_layer`).
    pub(super) caches: Vec<KvCache>,
    first_layer: usize,
    scratch: Scratch,
    /// The row positions [`CpuBlocks::run`] builds (the GPU forward's one-sequence chunks).
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    rows: Vec<RowPos>,
}

impl CpuBlocks {
    pub(super) fn new(
        pool: ThreadPool,
        activations: Activations,
        rope: RopeTable,
        caches: Vec<KvCache>,
        first_layer: usize,
    ) -> CpuBlocks {
        CpuBlocks {
            pool,
            activations,
            rope,
            caches,
            first_layer,
            scratch: Scratch::default(),
            rows: Vec::new(),
        }
    }

    /// Runs blocks `first_layer..` over the residual stream `x` (`n` rows of `dim`) of the
    /// first sequence's tokens at positions `pos0..`, storing their keys and values.
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    pub(super) fn run(&mut self, model: &LlamaModel, x: &mut [f32], n: usize, pos0: usize) -> Result<(), ModelError> {
        let mut rows = std::mem::take(&mut self.rows);
        rows.clear();
        rows.extend((0..n).map(|t| RowPos { seq: 0, pos: pos0 + t }));
        let result = self.run_rows(model, x, &rows);
        self.rows = rows;
        result
    }

    /// Runs blocks `first_layer..` over the residual stream `x`, one `dim`-wide row per entry
    /// of `rows`, storing each row's keys and values in its sequence's cache. Rows of one
    /// sequence must come in increasing positions, and every position below a row's must be
    /// cached already or be an earlier row of the chunk (causality).
    pub(super) fn run_rows(&mut self, model: &LlamaModel, x: &mut [f32], rows: &[RowPos]) -> Result<(), ModelError> {
        let n = rows.len();
        let mut s = std::mem::take(&mut self.scratch);
        let mut result = Ok(());
        for (l, layer) in model.layers.iter().enumerate().skip(self.first_layer) {
            let cache_layer = l - self.first_layer;
            result = self
                .attention_block(model, cache_layer, layer, x, rows, &mut s)
                .and_then(|()| self.ffn_block(model, layer, x, n, &mut s));
            if result.is_err() {
                break;
            }
        }
        // Scratch buffers go back even after an error so the next call reuses them.
        self.scratch = s;
        result
    }

    /// The final norm and output projection of rows `first..n` of `x`, appended to `out`.
    pub(super) fn logits(
        &mut self,
        model: &LlamaModel,
        x: &[f32],
        first: usize,
        n: usize,
        out: &mut Vec<f32>,
    ) -> Result<(), ModelError> {
        let cfg = model.config();
        let (dim, rows) = (cfg.dim, n - first);
        let xb = sized(&mut self.scratch.xb, rows * dim);
        rms_norm_rows(xb, &x[first * dim..n * dim], &model.output_norm, cfg.rms_eps, dim);
        let start = out.len();
        out.resize(start + rows * cfg.vocab_size, 0.0);
        matmul(
            &self.pool,
            self.activations,
            model,
            &model.output,
            xb,
            rows,
            &mut out[start..],
        )
    }

    /// `x += Wo · attention(rope(Wq·norm(x)), cache)` for the chunk, storing its K/V first.
    fn attention_block(
        &mut self,
        model: &LlamaModel,
        cache_layer: usize,
        layer: &Layer,
        x: &mut [f32],
        rows: &[RowPos],
        s: &mut Scratch,
    ) -> Result<(), ModelError> {
        let cfg = model.config();
        let (dim, kv_dim, hd) = (cfg.dim, cfg.kv_dim(), cfg.head_dim);
        let n = rows.len();
        let xb = sized(&mut s.xb, n * dim);
        rms_norm_rows(xb, x, &layer.attn_norm, cfg.rms_eps, dim);
        let q = sized(&mut s.q, n * dim);
        let k = sized(&mut s.k, n * kv_dim);
        let v = sized(&mut s.v, n * kv_dim);
        let mut qkv = [(&layer.wq, &mut *q), (&layer.wk, &mut *k), (&layer.wv, &mut *v)];
        matmul_group(&self.pool, self.activations, model, &mut qkv, xb, n)?;
        for (t, row) in rows.iter().enumerate() {
            ops::rope(&self.rope, &mut q[t * dim..(t + 1) * dim], row.pos);
            ops::rope(&self.rope, &mut k[t * kv_dim..(t + 1) * kv_dim], row.pos);
            self.caches[row.seq].store(
                cache_layer,
                row.pos,
                &k[t * kv_dim..(t + 1) * kv_dim],
                &v[t * kv_dim..(t + 1) * kv_dim],
            );
        }
        let n_seen_max = rows.iter().map(|r| r.pos + 1).max().unwrap_or(0);
        let n_seen_sum: usize = rows.iter().map(|r| r.pos + 1).sum();
        let caches = &self.caches;
        let att = sized(&mut s.att, n * dim);
        // One work item per (KV head, block of tokens): the `group` query heads that share a
        // KV head, for as many consecutive tokens of one sequence as make
        // [`QUERIES_PER_ITEM`], so each cached key and value row is widened from f16 once for
        // all of them. Tasks take items strided so that the causal prefill's longer rows
        // spread over all threads; each output slot (token, KV head) is written by one item
        // only. Items run in the order (KV head, block): a task's next item reads the same
        // cached keys and values, which are then still in its core's cache (one head's K and
        // V at depth 3000 is ~1 MB); (token, head) order re-read them from L3 or memory for
        // every item.
        let group = cfg.n_heads / cfg.n_kv_heads;
        let blocks = token_blocks(rows, (QUERIES_PER_ITEM / group).max(1));
        let slots: Vec<Mutex<&mut [f32]>> = att.chunks_mut(group * hd).map(Mutex::new).collect();
        let q: &[f32] = q;
        let n_items = cfg.n_kv_heads * blocks.len();
        let most_tokens = blocks.iter().map(|b| b.len()).max().unwrap_or(0);
        // Waking the workers costs more than a small attention (short contexts, tiny models).
        let work = n_seen_sum * cfg.n_heads * hd;
        let n_tasks = if work < PARALLEL_ATTENTION_WORK {
            1
        } else {
            self.pool.n_threads().min(n_items)
        };
        let task_fn = |task: usize| {
            let mut scores = vec![0f32; most_tokens * group * n_seen_max];
            let (mut qs, mut out, mut seen) = (Vec::new(), Vec::new(), Vec::new());
            for item in (task..n_items).step_by(n_tasks) {
                let (kv_head, block) = (item / blocks.len(), &blocks[item % blocks.len()]);
                let seq = rows[block.start].seq;
                // Causal mask: row t's query heads see its sequence's cache up to and including
                // itself.
                seen.clear();
                seen.extend(
                    rows[block.clone()]
                        .iter()
                        .flat_map(|r| std::iter::repeat_n(r.pos + 1, group)),
                );
                qs.clear();
                for t in block.clone() {
                    let first = t * dim + kv_head * group * hd;
                    qs.extend_from_slice(&q[first..first + group * hd]);
                }
                out.resize(qs.len(), 0.0);
                let n_seen = seen.iter().copied().max().unwrap_or(0);
                let keys = caches[seq].keys(cache_layer, kv_head, n_seen);
                let values = caches[seq].values(cache_layer, kv_head, n_seen);
                attention::attend_block(hd, &qs, &seen, &keys, &values, &mut scores, &mut out);
                for (t, o) in block.clone().zip(out.chunks_exact(group * hd)) {
                    let mut slot = slots[t * cfg.n_kv_heads + kv_head]
                        .lock()
                        .unwrap_or_else(|p| p.into_inner());
                    slot.copy_from_slice(o);
                }
            }
        };
        if n_tasks == 1 {
            task_fn(0);
        } else {
            self.pool.run(n_tasks, &task_fn);
        }
        drop(slots);
        let out = sized(&mut s.xb2, n * dim);
        matmul(&self.pool, self.activations, model, &layer.wo, att, n, out)?;
        add_in_place(x, out);
        Ok(())
    }

    /// `x += W_down · (silu(W_gate·norm(x)) * W_up·norm(x))` for the chunk.
    fn ffn_block(
        &mut self,
        model: &LlamaModel,
        layer: &Layer,
        x: &mut [f32],
        n: usize,
        s: &mut Scratch,
    ) -> Result<(), ModelError> {
        let cfg = model.config();
        let (dim, ffn) = (cfg.dim, cfg.ffn_dim);
        let xb = sized(&mut s.xb, n * dim);
        rms_norm_rows(xb, x, &layer.ffn_norm, cfg.rms_eps, dim);
        let gate = sized(&mut s.hb, n * ffn);
        let up = sized(&mut s.hb2, n * ffn);
        let mut gate_up = [(&layer.w_gate, &mut *gate), (&layer.w_up, &mut *up)];
        matmul_group(&self.pool, self.activations, model, &mut gate_up, xb, n)?;
        let act = sized(&mut s.hb3, n * ffn);
        swiglu_chunks(&self.pool, gate, up, act);
        let out = sized(&mut s.xb2, n * dim);
        matmul(&self.pool, self.activations, model, &layer.w_down, act, n, out)?;
        add_in_place(x, out);
        Ok(())
    }
}

/// Elements of FFN activation below which it runs on the calling thread (a decode step's).
const PARALLEL_SWIGLU_ELEMENTS: usize = 1 << 15;

/// `act = silu(gate) * up`, element-wise, in chunks spread over the pool for a prefill chunk
/// (on one thread it was ~2 % of a 7B prefill, with the other threads idle).
fn swiglu_chunks(pool: &ThreadPool, gate: &[f32], up: &[f32], act: &mut [f32]) {
    if act.len() < PARALLEL_SWIGLU_ELEMENTS {
        ops::swiglu(gate, up, act);
        return;
    }
    let per = PARALLEL_SWIGLU_ELEMENTS;
    let slots: Vec<Mutex<&mut [f32]>> = act.chunks_mut(per).map(Mutex::new).collect();
    pool.run(slots.len(), &|i| {
        let mut out = slots[i].lock().unwrap_or_else(|p| p.into_inner());
        let range = i * per..i * per + out.len();
        ops::swiglu(&gate[range.clone()], &up[range], &mut out);
    });
}

/// RMSNorm of each `dim`-wide row of `x` into `out`.
fn rms_norm_rows(out: &mut [f32], x: &[f32], w: &[f32], eps: f32, dim: usize) {
    for (o, xi) in out.chunks_exact_mut(dim).zip(x.chunks_exact(dim)) {
        ops::rms_norm(o, xi, w, eps);
    }
}

/// The residual connection.
fn add_in_place(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

/// Weight matrices that read the same activations (q/k/v, gate/up) times the chunk: as
/// [`matmul`] on each, in one pool job where the kernels allow it.
fn matmul_group(
    pool: &ThreadPool,
    activations: Activations,
    model: &LlamaModel,
    parts: &mut [(&Weight, &mut [f32])],
    x: &[f32],
    n: usize,
) -> Result<(), ModelError> {
    let matrices: Vec<_> = parts.iter().map(|(w, _)| model.qmatrix(w)).collect();
    let mut kernel_parts: Vec<_> = matrices
        .iter()
        .zip(parts.iter_mut())
        .map(|(m, (_, out))| (m, &mut **out))
        .collect();
    ops::matmul_group(pool, activations, &mut kernel_parts, x, n).map_err(|e| {
        let names: Vec<&str> = parts.iter().map(|(w, _)| w.name.as_str()).collect();
        ModelError::Compute(format!("{}: {e}", names.join(", ")))
    })?;
    for (w, out) in parts.iter_mut() {
        add_lora_terms(pool, w, x, n, out)?;
    }
    Ok(())
}

/// One weight matrix times the chunk's activations, plus the matrix's LoRA terms if it has any,
/// naming the tensor on failure.
pub(super) fn matmul(
    pool: &ThreadPool,
    activations: Activations,
    model: &LlamaModel,
    w: &Weight,
    x: &[f32],
    n: usize,
    out: &mut [f32],
) -> Result<(), ModelError> {
    ops::matmul(pool, activations, &model.qmatrix(w), x, n, out)
        .map_err(|e| ModelError::Compute(format!("{}: {e}", w.name)))?;
    add_lora_terms(pool, w, x, n, out)
}

/// `out += scale · B·(A·x)` for each LoRA adapter attached to `w` (none for an unadapted model).
fn add_lora_terms(pool: &ThreadPool, w: &Weight, x: &[f32], n: usize, out: &mut [f32]) -> Result<(), ModelError> {
    for delta in &w.lora {
        delta.add_to(pool, x, n, out)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_blocks_cut_runs_of_one_sequence() {
        let rows: Vec<RowPos> = [(0, 5), (0, 6), (0, 7), (1, 0), (1, 1), (0, 8), (2, 3), (2, 4), (2, 5)]
            .iter()
            .map(|&(seq, pos)| RowPos { seq, pos })
            .collect();
        assert_eq!(token_blocks(&rows, 2), vec![0..2, 2..3, 3..5, 5..6, 6..8, 8..9]);
        assert_eq!(token_blocks(&rows, 8), vec![0..3, 3..5, 5..6, 6..9]);
        assert_eq!(token_blocks(&rows, 1).len(), rows.len());
        assert!(token_blocks(&[], 4).is_empty());
    }
}
