//! `edgeact serve`: the model behind an HTTP server speaking TGI's and OpenAI's APIs
//! (`edgeact-serve`), `--parallel` sequences decoded together by the batching scheduler.

use super::args::ModelArgs;
use anyhow::{bail, Context};
use edgeact_agent::{FormatChoice, PromptFormat};
use edgeact_runtime::batching::{Scheduler, SchedulerOptions};
use edgeact_runtime::kernels::cuda::DeviceChoice;
use edgeact_runtime::model::MultiSession;
use edgeact_runtime::speculate::SpeculateConfig;
use edgeact_runtime::tokenizer::Tokenizer;
use edgeact_serve::{ChatPrompt, Engine, ServeOptions};
use std::process::ExitCode;
use std::sync::Arc;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// Address to listen on (loopback only unless changed).
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on (0: the OS picks one; the address is printed on stderr).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Sequences decoded at once, each with its own `--ctx`-token KV cache (memory is committed
    /// only as positions are used).
    #[arg(long, default_value_t = 4)]
    parallel: usize,
    /// Requests that may wait for a free sequence; more get 429.
    #[arg(long, default_value_t = 64)]
    queue: usize,
    /// Require `Authorization: Bearer KEY` on every route but /health.
    #[arg(long, value_name = "KEY")]
    api_key: Option<String>,
    /// Seed of requests that give none (default: a random seed per request, as TGI).
    #[arg(long)]
    seed: Option<u64>,
    /// Chat rendering of /v1/chat/completions: `llama2` (FastChat's llama-2, as AgentBench
    /// rendered AgentLM), `gguf` (the model's `tokenizer.chat_template`) or `auto` (llama2 when
    /// the model has no template or a Llama-2-style one, else gguf).
    #[arg(long, default_value = "auto", value_parser = FormatChoice::NAMES)]
    chat_template: String,
    /// Model name reported by /info and /v1/models (default: the file name without .gguf).
    #[arg(long)]
    model_id: Option<String>,
    /// Largest request body in bytes.
    #[arg(long, default_value_t = edgeact_serve::DEFAULT_BODY_LIMIT, value_parser = at_least_one)]
    max_body: usize,
    /// Seconds in-flight requests get to finish after SIGTERM / Ctrl-C before they are aborted.
    #[arg(long, default_value_t = 10)]
    shutdown_timeout: u64,
    /// Largest TGI `best_of` (candidates generated in parallel for one request; 1 refuses it).
    #[arg(long, default_value_t = edgeact_serve::DEFAULT_MAX_BEST_OF, value_parser = at_least_one)]
    max_best_of: usize,
    /// Prompt-lookup speculative decoding: each step also verifies tokens guessed from each
    /// request's own prompt and output (lossless; pays when replies copy their prompts, as
    /// agents' do; costs batch rows otherwise).
    #[arg(long)]
    speculate: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let m = &args.model;
    // The batching engine runs on the CPU.
    if matches!(m.device.device, DeviceChoice::Cuda(_)) || m.device.gpu_layers.is_some_and(|n| n > 0) {
        bail!("edgeact serve runs on the CPU (the batching engine has no GPU path yet); drop --device/--gpu-layers");
    }
    if args.parallel == 0 {
        bail!("--parallel must be at least 1");
    }
    if args.queue == 0 {
        bail!("--queue must be at least 1");
    }
    let (file, model) = m.load_model(true)?;
    let tokenizer = Arc::new(Tokenizer::from_gguf(&file).context("loading the tokenizer")?);
    let choice = FormatChoice::from_name(&args.chat_template).unwrap_or_default();
    let format = PromptFormat::resolve(choice, &file).with_context(|| format!("--chat-template {}", choice.name()))?;
    let opts = m.session_options(&model)?;
    let n_ctx = opts.n_ctx;
    let session = MultiSession::new(Arc::clone(&model), opts, args.parallel).context("setting up the sequences")?;
    let sched_opts = SchedulerOptions {
        queue_capacity: args.queue,
        speculate: if args.speculate {
            SpeculateConfig::default()
        } else {
            SpeculateConfig::off()
        },
        ..Default::default()
    };
    let mut scheduler = Scheduler::start(session, Arc::clone(&tokenizer), sched_opts)?;
    let model_id = args.model_id.clone().unwrap_or_else(|| {
        m.model
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model".into())
    });
    eprintln!(
        "edgeact serve: {model_id}: {} x {n_ctx}-token sequences, queue {}, chat template {}{}",
        args.parallel,
        args.queue,
        format.name(),
        if args.speculate { ", speculative decoding" } else { "" }
    );
    let engine = Engine::new(scheduler.handle(), tokenizer, ChatPrompt::new(format), model_id);
    let serve_opts = ServeOptions {
        api_key: args.api_key.clone(),
        default_seed: args.seed,
        body_limit: args.max_body,
        shutdown_grace: std::time::Duration::from_secs(args.shutdown_timeout),
        max_best_of: args.max_best_of,
    };
    let result = edgeact_serve::serve(engine, serve_opts, &args.host, args.port);
    // The server has shut the scheduler down (or aborted it); wait for its thread.
    scheduler.handle().shutdown();
    scheduler.join();
    result?;
    eprintln!("edgeact: server stopped");
    Ok(ExitCode::SUCCESS)
}

/// A count that must be at least 1 (`--max-body 0` made every POST a 413).
fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}
