//! One sequence being evaluated: its KV cache, the tokens cached so far, and the forward pass
//! of [`super::batch`] (embedding → the blocks of [`super::blocks`] → output norm and
//! projection) in chunks of up to the batch size, or the GPU forward when one is chosen.

use super::batch::{Logits, MultiSession, SeqChunk, SessionOptions};
use super::weights::LlamaModel;
use super::ModelError;
use std::sync::Arc;

/// A KV cache plus position for one sequence of one model.
pub struct Session {
    /// The CPU forward over this one sequence (sequence 0); the tokens cached are its tokens
    /// also when a GPU forward evaluates them.
    cpu: MultiSession,
    /// The GPU forward, when the session runs on CUDA (see [`Session::with_backend`]).
    #[cfg(feature = "cuda")]
    gpu: Option<super::cuda::GpuForward>,
}

impl Session {
    pub fn new(model: Arc<LlamaModel>, opts: SessionOptions) -> Result<Session, ModelError> {
        Ok(Session {
            cpu: MultiSession::new(model, opts, 1)?,
            #[cfg(feature = "cuda")]
            gpu: None,
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
        #[cfg(feature = "cuda")]
        let kv_type = opts.kv_type;
        #[allow(unused_mut)]
        let mut session = Session::new(Arc::clone(&model), opts)?;
        #[cfg(feature = "cuda")]
        if let Some(mut g) = super::cuda::GpuOptions::for_backend(
            backend,
            session.n_ctx(),
            session.cpu.batch_size(),
            session.n_threads(),
        ) {
            g.gpu_layers = gpu_layers;
            g.cpu_activations = session.cpu.activations();
            g.cpu_kv_type = kv_type;
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
        self.cpu.model()
    }

    /// Context length of this session (positions the cache holds).
    pub fn n_ctx(&self) -> usize {
        self.cpu.n_ctx()
    }

    pub fn n_threads(&self) -> usize {
        self.cpu.n_threads()
    }

    /// Bytes held by the KV cache.
    pub fn kv_bytes(&self) -> usize {
        self.cpu.kv_bytes()
    }

    /// Tokens whose keys and values are cached, in order (position i holds `tokens()[i]`).
    pub fn tokens(&self) -> &[u32] {
        self.cpu.tokens(0)
    }

    /// Forgets positions `>= n` so that evaluation continues at position `n` (prefix reuse).
    pub fn truncate(&mut self, n: usize) {
        self.cpu.truncate(0, n);
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
        let n_vocab = self.model().config().vocab_size;
        if let Some(&token) = tokens.iter().find(|&&t| t as usize >= n_vocab) {
            return Err(ModelError::InvalidToken { token, n_vocab });
        }
        let needed = self.tokens().len() + tokens.len();
        if needed > self.n_ctx() {
            return Err(ModelError::ContextFull {
                needed,
                n_ctx: self.n_ctx(),
            });
        }
        let batch_size = self.cpu.batch_size();
        let n_chunks = tokens.len().div_ceil(batch_size);
        let mut logits = Vec::new();
        for (i, chunk) in tokens.chunks(batch_size).enumerate() {
            let chunk_want = match want {
                Logits::All => Logits::All,
                _ if i + 1 == n_chunks => Logits::Last,
                _ => Logits::None,
            };
            let out = self.forward(chunk, chunk_want)?;
            if logits.is_empty() {
                logits = out;
            } else {
                logits.extend_from_slice(&out);
            }
        }
        Ok(logits)
    }

    /// Runs one chunk (validated: ids in range, fits the context) and returns the requested
    /// logits.
    fn forward(&mut self, tokens: &[u32], want: Logits) -> Result<Vec<f32>, ModelError> {
        #[cfg(feature = "cuda")]
        if let Some(g) = self.gpu.as_mut() {
            let first = match want {
                Logits::None => None,
                Logits::Last => Some(tokens.len() - 1),
                Logits::All => Some(0),
            };
            let mut out = Vec::new();
            g.forward(tokens, self.cpu.tokens(0).len(), first, &mut out)?;
            // The GPU holds the keys and values; the CPU side only records the tokens.
            self.cpu.record(0, tokens);
            return Ok(out);
        }
        let mut out = self.cpu.step(&[SeqChunk {
            seq: 0,
            tokens,
            logits: want,
        }])?;
        Ok(out.pop().unwrap_or_default())
    }
}
