//! Loading a GGUF model into the agent's [`EngineModel`]s (one shared weight mapping,
//! tokenizer and prompt format, one KV-cache session per worker) or [`BatchedModel`]s (one
//! continuous-batching engine whose sequences the workers share).

use crate::cmd::args::ModelArgs;
use anyhow::Context;
use edgeact_agent::{BatchedModel, EngineConfig, EngineModel, FormatChoice, PromptFormat};
use edgeact_runtime::batching::{Scheduler, SchedulerOptions};
use edgeact_runtime::gguf::GgufFile;
use edgeact_runtime::kernels::cuda::Backend;
use edgeact_runtime::model::{LlamaModel, MultiSession, SessionOptions};
use edgeact_runtime::speculate::SpeculateConfig;
use edgeact_runtime::tokenizer::Tokenizer;
use std::sync::Arc;

/// A loaded model that can open engine-backed agents.
pub struct LoadedModel {
    pub model: Arc<LlamaModel>,
    pub tokenizer: Arc<Tokenizer>,
    /// The mapped file (its chat template is read on demand).
    pub file: Arc<GgufFile>,
    args: ModelArgs,
    /// Chosen once at load time so every worker's session runs on the same device.
    backend: Backend,
}

impl LoadedModel {
    pub fn load(args: &ModelArgs) -> anyhow::Result<LoadedModel> {
        let backend = args.device.resolve()?;
        let (file, model): (Arc<GgufFile>, Arc<LlamaModel>) = args.load_model(matches!(backend, Backend::Cpu))?;
        let tokenizer =
            Tokenizer::from_gguf(&file).with_context(|| format!("tokenizer of {}", args.model.display()))?;
        Ok(LoadedModel {
            model,
            tokenizer: Arc::new(tokenizer),
            file,
            args: args.clone(),
            backend,
        })
    }

    /// The prompt format `choice` stands for with this model.
    pub fn prompt_format(&self, choice: FormatChoice) -> anyhow::Result<PromptFormat> {
        PromptFormat::resolve(choice, &self.file)
            .with_context(|| format!("--chat-template {} with {}", choice.name(), self.args.model.display()))
    }

    /// Whether sessions run on the CPU (the batching engine is CPU-only).
    pub fn on_cpu(&self) -> bool {
        matches!(self.backend, Backend::Cpu)
    }

    /// One continuous-batching engine of `n_seqs` sequences of `--ctx` tokens each, using
    /// `--threads` (default all cores), for [`BatchedModel`]s sharing the model.
    pub fn scheduler(&self, n_seqs: usize, speculate: SpeculateConfig) -> anyhow::Result<Scheduler> {
        let opts = SessionOptions {
            n_ctx: self.args.n_ctx(&self.model)?,
            threads: self.args.threads.unwrap_or(0),
            kv_type: self.args.kv_type,
            activations: self.args.activations.activations,
            ..Default::default()
        };
        let session = MultiSession::new(Arc::clone(&self.model), opts, n_seqs)?;
        let sched = SchedulerOptions {
            queue_capacity: SchedulerOptions::default().queue_capacity.max(n_seqs),
            speculate,
            ..Default::default()
        };
        Ok(Scheduler::start(session, Arc::clone(&self.tokenizer), sched)?)
    }

    /// An agent model on `scheduler`'s engine.
    pub fn batched(&self, scheduler: &Scheduler, config: EngineConfig) -> anyhow::Result<BatchedModel> {
        BatchedModel::new(scheduler.handle(), Arc::clone(&self.tokenizer), config)
    }

    /// A fresh session and engine; `threads` overrides `--threads` (jobs split the cores).
    pub fn engine(&self, config: EngineConfig, threads: Option<usize>) -> anyhow::Result<EngineModel> {
        let opts = SessionOptions {
            n_ctx: self.args.n_ctx(&self.model)?,
            threads: threads.or(self.args.threads).unwrap_or(0),
            kv_type: self.args.kv_type,
            activations: self.args.activations.activations,
            ..Default::default()
        };
        // On a GPU each session uploads its own copy of the offloaded weights.
        let session = self.args.device.session(&self.backend, Arc::clone(&self.model), opts)?;
        EngineModel::new(session, Arc::clone(&self.tokenizer), config)
    }
}
