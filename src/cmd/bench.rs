//! `edgeact bench`: prompt-processing (ppN) and text-generation (tgN) speed in the style of
//! llama-bench: each test is repeated `-r` times after one warm-up, and the table shows the
//! mean ± standard deviation of tokens/s.

use super::args::{load_model_with, ActivationsArg, DeviceArgs, RepackArg};
use anyhow::bail;
use edgeact_runtime::kernels::cuda::Backend;
use edgeact_runtime::model::{Activations, LlamaModel, SessionOptions};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

#[derive(clap::Args)]
pub struct Args {
    /// GGUF model file.
    #[arg(short = 'm', long)]
    model: PathBuf,
    /// Prompt lengths to test (comma-separated; 0 skips the pp test).
    #[arg(short = 'p', long = "n-prompt", value_delimiter = ',', default_value = "512")]
    n_prompt: Vec<usize>,
    /// Generation lengths to test (comma-separated; 0 skips the tg test).
    #[arg(short = 'n', long = "n-gen", value_delimiter = ',', default_value = "128")]
    n_gen: Vec<usize>,
    /// Thread counts to test (comma-separated; default: all cores).
    #[arg(short = 't', long, value_delimiter = ',')]
    threads: Vec<usize>,
    /// Repetitions of each test.
    #[arg(short = 'r', long, default_value_t = 3)]
    repetitions: usize,
    /// Skip the warm-up run.
    #[arg(long)]
    no_warmup: bool,
    /// Print JSON instead of the table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    device: DeviceArgs,
    #[command(flatten)]
    repack: RepackArg,
    #[command(flatten)]
    activations: ActivationsArg,
}

/// One line of results.
#[derive(serde::Serialize)]
struct Row {
    model: String,
    size_bytes: u64,
    params: u64,
    /// "CPU", or "CUDA" and the GPU's name.
    backend: String,
    /// Transformer blocks that ran on the GPU (0 on the CPU).
    n_gpu_layers: usize,
    threads: usize,
    test: String,
    n_prompt: usize,
    n_gen: usize,
    avg_ts: f64,
    stddev_ts: f64,
    samples_ts: Vec<f64>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.repetitions == 0 {
        bail!("-r must be at least 1");
    }
    let backend = args.device.resolve()?;
    let activations = args.activations.activations;
    let backend_name = match &backend {
        Backend::Cpu if activations == Activations::F32 => "CPU (f32 activations)".to_string(),
        Backend::Cpu => "CPU".to_string(),
        Backend::Cuda(g) => format!("CUDA {}", g.name),
    };
    let (_file, model) = load_model_with(&args.model, args.repack, args.threads.iter().copied().max())?;
    let threads = if args.threads.is_empty() {
        vec![std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)]
    } else {
        args.threads.clone()
    };
    if threads.contains(&0) {
        bail!("-t 0 is not a thread count");
    }
    let name = model_name(&model);
    let mut tests = Vec::new();
    for &p in args.n_prompt.iter().filter(|&&p| p > 0) {
        tests.push((format!("pp{p}"), p, 0));
    }
    for &n in args.n_gen.iter().filter(|&&n| n > 0) {
        tests.push((format!("tg{n}"), 0, n));
    }
    let max_ctx = model.config().max_context;
    if let Some((t, p, n)) = tests.iter().find(|(_, p, n)| p.saturating_add(*n) > max_ctx) {
        bail!(
            "test {t} needs {} positions; the model's context is {max_ctx}",
            p.saturating_add(*n)
        );
    }
    if !args.json {
        println!("| model | size | params | backend | ngl | threads | test | t/s |");
        println!("| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: |");
    }
    let mut rows = Vec::new();
    for &t in &threads {
        for (test, p, n) in &tests {
            let bench = Bench {
                model: &model,
                device: &args.device,
                backend: &backend,
                threads: t,
                activations,
            };
            let (samples, n_gpu_layers) = bench.measure(*p, *n, args.repetitions, !args.no_warmup)?;
            let (avg, sd) = mean_std(&samples);
            let row = Row {
                model: name.clone(),
                size_bytes: model.weight_bytes(),
                params: model.n_params(),
                backend: backend_name.clone(),
                n_gpu_layers,
                threads: t,
                test: test.clone(),
                n_prompt: *p,
                n_gen: *n,
                avg_ts: avg,
                stddev_ts: sd,
                samples_ts: samples,
            };
            if !args.json {
                println!(
                    "| {} | {:.2} GiB | {} | {} | {} | {} | {} | {:.2} ± {:.2} |",
                    row.model,
                    row.size_bytes as f64 / (1u64 << 30) as f64,
                    params_label(row.params),
                    row.backend,
                    row.n_gpu_layers,
                    row.threads,
                    row.test,
                    row.avg_ts,
                    row.stddev_ts
                );
            }
            rows.push(row);
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    }
    Ok(ExitCode::SUCCESS)
}

/// One model on one backend with one thread count.
struct Bench<'a> {
    model: &'a Arc<LlamaModel>,
    device: &'a DeviceArgs,
    backend: &'a Backend,
    threads: usize,
    activations: Activations,
}

impl Bench<'_> {
    /// Tokens/s of each repetition: `p` prompt tokens in one batched eval, or `n` tokens
    /// generated one at a time from an empty context (as llama-bench does), and the number of
    /// blocks the session ran on the GPU. Token ids are arbitrary; speed does not depend on them.
    fn measure(&self, p: usize, n: usize, reps: usize, warmup: bool) -> anyhow::Result<(Vec<f64>, usize)> {
        let opts = SessionOptions {
            n_ctx: (p + n).max(1),
            threads: self.threads,
            activations: self.activations,
            ..Default::default()
        };
        let mut session = self.device.session(self.backend, Arc::clone(self.model), opts)?;
        let vocab = self.model.config().vocab_size as u32;
        let tokens: Vec<u32> = (0..p.max(n) as u32).map(|i| (i * 7919 + 1) % vocab).collect();
        let mut samples = Vec::new();
        for rep in 0..reps + usize::from(warmup) {
            session.truncate(0);
            let start = Instant::now();
            if p > 0 {
                session.eval(&tokens[..p])?;
            } else {
                for &t in &tokens[..n] {
                    session.eval(&[t])?;
                }
            }
            let secs = start.elapsed().as_secs_f64();
            if !(warmup && rep == 0) {
                samples.push((p + n) as f64 / secs);
            }
        }
        Ok((samples, session.gpu_layers()))
    }
}

fn mean_std(x: &[f64]) -> (f64, f64) {
    let mean = x.iter().sum::<f64>() / x.len() as f64;
    if x.len() < 2 {
        return (mean, 0.0);
    }
    let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (x.len() - 1) as f64;
    (mean, var.sqrt())
}

/// "llama 7B Q4_0"-style name: architecture, size label, main weight type.
fn model_name(model: &LlamaModel) -> String {
    let file = model.file();
    let size = match file.get_str("general.size_label") {
        Ok(Some(s)) => s.to_string(),
        _ => params_label(model.n_params()),
    };
    format!("{} {} {}", model.config().architecture, size, model.main_type().name())
}

fn params_label(n: u64) -> String {
    let n = n as f64;
    if n >= 1e9 {
        format!("{:.2} B", n / 1e9)
    } else if n >= 1e6 {
        format!("{:.2} M", n / 1e6)
    } else {
        format!("{:.2} K", n / 1e3)
    }
}
