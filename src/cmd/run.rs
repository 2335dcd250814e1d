//! `edgeact run`: generate text from a prompt, streaming it to stdout, with speed figures on
//! stderr. Also holds the model/device flags shared by `run`, `chat`, `bench` and `perplexity`.

use anyhow::{bail, Context};
use edgeact_runtime::chat::Message;
use edgeact_runtime::generate::{generate, GenerateOptions, Generation};
use edgeact_runtime::gguf::GgufFile;
use edgeact_runtime::model::{KvType, LlamaModel, Session, SessionOptions};
use edgeact_runtime::sampler::{Sampler, SamplerConfig};
use edgeact_runtime::tokenizer::{StreamDecoder, Tokenizer};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

/// `--ctx` default of `run` and `chat` (Llama-2's training context).
pub const DEFAULT_CTX: usize = 4096;

/// Where the model runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Device {
    Auto,
    Cpu,
    Cuda(usize),
}

impl std::str::FromStr for Device {
    type Err = String;
    fn from_str(s: &str) -> Result<Device, String> {
        match s {
            "auto" => Ok(Device::Auto),
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda(0)),
            _ => match s.strip_prefix("cuda:").map(str::parse) {
                Some(Ok(n)) => Ok(Device::Cuda(n)),
                _ => Err(format!("unknown device {s:?} (auto, cpu, cuda or cuda:N)")),
            },
        }
    }
}

/// `--device` and `--gpu-layers`, shared by every command that runs the model.
#[derive(clap::Args, Clone, Debug)]
pub struct DeviceArgs {
    /// Compute device: auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: Device,
    /// Layers to offload to the GPU (0: none).
    #[arg(long, default_value_t = 0)]
    pub gpu_layers: usize,
}

impl DeviceArgs {
    /// The device to use; only the CPU exists in this build, so CUDA requests are errors.
    pub fn resolve(&self) -> anyhow::Result<Device> {
        match self.device {
            Device::Cuda(n) => {
                bail!("--device cuda:{n}: the CUDA backend is not available in this build; use --device cpu")
            }
            Device::Auto | Device::Cpu if self.gpu_layers > 0 => {
                bail!(
                    "--gpu-layers {} needs the CUDA backend, which is not available in this build",
                    self.gpu_layers
                )
            }
            _ => Ok(Device::Cpu),
        }
    }
}

/// Model, context and thread flags shared by `run`, `chat` and `perplexity`.
#[derive(clap::Args, Clone, Debug)]
pub struct ModelArgs {
    /// GGUF model file.
    #[arg(short = 'm', long)]
    pub model: PathBuf,
    /// Context length in tokens (capped at the model's maximum).
    #[arg(short = 'c', long = "ctx", default_value_t = DEFAULT_CTX)]
    pub ctx: usize,
    /// CPU threads (default: all cores).
    #[arg(short = 't', long)]
    pub threads: Option<usize>,
    /// KV cache element type: f16 or f32.
    #[arg(long, default_value = "f16")]
    pub kv_type: KvType,
    #[command(flatten)]
    pub device: DeviceArgs,
}

/// Opens and checks a model file.
pub fn load_model(path: &Path) -> anyhow::Result<(Arc<GgufFile>, Arc<LlamaModel>)> {
    let file = Arc::new(GgufFile::open(path).with_context(|| format!("opening {}", path.display()))?);
    let model = LlamaModel::load(Arc::clone(&file)).with_context(|| format!("loading {}", path.display()))?;
    Ok((file, Arc::new(model)))
}

impl ModelArgs {
    /// Loads the model and opens a session with these flags, warning when the context is capped.
    pub fn open(&self) -> anyhow::Result<(Arc<GgufFile>, Arc<LlamaModel>, Session)> {
        self.device.resolve()?;
        let (file, model) = load_model(&self.model)?;
        let max = model.config().max_context;
        let n_ctx = match self.ctx {
            0 => bail!("--ctx 0 is not a context length"),
            // The default quietly shrinks to small models; an explicit value says so.
            n if n > max && n != DEFAULT_CTX => {
                eprintln!("note: --ctx {n} is above the model's maximum; using {max}");
                max
            }
            n => n.min(max),
        };
        let opts = SessionOptions {
            n_ctx,
            threads: self.threads.unwrap_or(0),
            kv_type: self.kv_type,
            ..Default::default()
        };
        let session = Session::new(Arc::clone(&model), opts)?;
        Ok((file, model, session))
    }
}

/// Sampling flags shared by `run` and `chat`.
#[derive(clap::Args, Clone, Debug)]
pub struct SamplingArgs {
    /// Temperature; 0 means greedy.
    #[arg(long = "temp", default_value_t = 0.8)]
    pub temp: f32,
    /// Top-k truncation (0 disables).
    #[arg(long, default_value_t = 40)]
    pub top_k: usize,
    /// Top-p (nucleus) truncation (1.0 disables).
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f32,
    /// Min-p truncation (0.0 disables).
    #[arg(long, default_value_t = 0.05)]
    pub min_p: f32,
    /// Repetition penalty (1.0 disables).
    #[arg(long, default_value_t = 1.0)]
    pub repeat_penalty: f32,
    /// Tokens of history the repetition penalty looks at.
    #[arg(long, default_value_t = 64)]
    pub repeat_last_n: usize,
    /// RNG seed (default: from the clock).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Stop when the output contains this string (repeatable).
    #[arg(long = "stop")]
    pub stop: Vec<String>,
}

impl SamplingArgs {
    pub fn sampler(&self) -> anyhow::Result<Sampler> {
        let seed = self.seed.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0)
        });
        let cfg = SamplerConfig {
            temperature: self.temp,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repeat_penalty: self.repeat_penalty,
            repeat_last_n: self.repeat_last_n,
            seed,
        };
        cfg.validate()
            .map_err(|e| anyhow::anyhow!("invalid sampling flags: {e}"))?;
        Ok(Sampler::new(cfg))
    }
}

/// Ids that end a turn: EOS and every end-of-generation token the tokenizer knows.
pub fn stop_tokens(tok: &Tokenizer) -> Vec<u32> {
    let mut ids: Vec<u32> = (0..tok.n_vocab() as u32).filter(|&id| tok.is_eog(id)).collect();
    if let Some(eos) = tok.eos_id() {
        if !ids.contains(&eos) {
            ids.push(eos);
        }
    }
    ids
}

/// Prints the speed line llama.cpp users expect, on stderr.
pub fn print_timings(g: &Generation) {
    eprintln!();
    eprintln!(
        "prompt: {} tokens ({} evaluated) in {:.2} s = {:.2} t/s | generation: {} tokens in {:.2} s = {:.2} t/s | stop: {:?}",
        g.n_prompt,
        g.n_prompt_evaluated,
        g.prompt_time.as_secs_f64(),
        g.prompt_tps(),
        g.n_generated,
        g.gen_time.as_secs_f64(),
        g.gen_tps(),
        g.stop
    );
}

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// Prompt text.
    #[arg(short = 'p', long, default_value = "")]
    prompt: String,
    /// Tokens to generate.
    #[arg(short = 'n', long = "n-predict", default_value_t = 128)]
    n_predict: usize,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// Wrap the prompt in the model's chat template (one user turn).
    #[arg(long)]
    chat: bool,
    /// System prompt for --chat.
    #[arg(long)]
    system: Option<String>,
    /// Keep generating after end-of-sequence tokens.
    #[arg(long)]
    ignore_eos: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (file, _model, mut session) = args.model.open()?;
    let tok = Tokenizer::from_gguf(&file).context("loading the tokenizer")?;
    let mut sampler = args.sampling.sampler()?;
    let prompt = if args.chat {
        let mut messages = Vec::new();
        if let Some(s) = &args.system {
            messages.push(Message::system(s.as_str()));
        }
        messages.push(Message::user(args.prompt.as_str()));
        super::chat::encode_chat(&file, &tok, &messages)?
    } else {
        if args.system.is_some() {
            bail!("--system needs --chat");
        }
        tok.encode(&args.prompt, tok.add_bos_default(), false)
    };
    if prompt.is_empty() {
        bail!("the prompt is empty and the model adds no BOS token; give -p");
    }
    let opts = GenerateOptions {
        max_tokens: args.n_predict,
        stop_tokens: if args.ignore_eos { Vec::new() } else { stop_tokens(&tok) },
        stop_strings: args.sampling.stop.clone(),
    };
    // From BOS alone the first token's SentencePiece space is dropped (as llama.cpp prints a
    // fresh text); after a prompt it is kept, since the text continues the prompt.
    let mut decoder = if prompt.len() == 1 && Some(prompt[0]) == tok.bos_id() {
        StreamDecoder::new(&tok)
    } else {
        StreamDecoder::after_prompt(&tok)
    };
    let mut stdout = std::io::stdout();
    let g = generate(&mut session, &mut sampler, &mut decoder, &prompt, &opts, &mut |s| {
        let _ = stdout.write_all(s.as_bytes());
        let _ = stdout.flush();
    })?;
    println!();
    print_timings(&g);
    Ok(ExitCode::SUCCESS)
}
