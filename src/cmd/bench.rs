//! `edgeact bench`: prompt-processing (ppN) and text-generation (tgN) speed in the style of
//! llama-bench: each test is repeated `-r` times after one warm-up, and the table shows the
//! mean ± standard deviation of tokens/s.
//!
//! `-d 0,1024,3072` measures each test at a context depth, as llama-bench's `-d`: the KV cache
//! first holds `d` tokens (evaluated once per test, not timed; each repetition truncates back to
//! them), then the pp prompt or the tg decodes follow them. Rows read `pp512 @ d3072`.
//!
//! `--parallel 1,2,4,...` turns each tgN test into batched-decode tests `tgN xP`: P sequences
//! of one [`MultiSession`] each get a 2-token prompt (BOS and a token of their own, not
//! timed), then decode N tokens together, one [`MultiSession::step`] of P single-token chunks
//! per generated position (greedy); the row's t/s is the aggregate P * N / seconds.

use super::args::{load_model_with, ActivationsArg, DeviceArgs, LoadStats, LoraArgs, RepackArg};
use anyhow::bail;
use edgeact_runtime::kernels::cuda::Backend;
use edgeact_runtime::model::{Activations, LlamaModel, Logits, MultiSession, SeqChunk, SessionOptions, MAX_BATCH};
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
    /// Thread counts to test (comma-separated; 0 or default: all cores; more than the CPUs:
    /// clamped, each count measured once).
    #[arg(short = 't', long, value_delimiter = ',')]
    threads: Vec<usize>,
    /// Context depths (comma-separated): each test runs after this many tokens already in the
    /// KV cache (filled first, not timed), as llama-bench's `-d`.
    #[arg(short = 'd', long = "n-depth", value_delimiter = ',', default_value = "0")]
    n_depth: Vec<usize>,
    /// Repetitions of each test.
    #[arg(short = 'r', long, default_value_t = 3)]
    repetitions: usize,
    /// Skip the warm-up run.
    #[arg(long)]
    no_warmup: bool,
    /// Batched decode: for each count P (comma-separated), replace each tgN test by `tgN xP`,
    /// P sequences decoding together (aggregate tokens/s; CPU only).
    #[arg(long, value_delimiter = ',', value_name = "P,...")]
    parallel: Vec<usize>,
    /// Print JSON instead of the table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    device: DeviceArgs,
    #[command(flatten)]
    repack: RepackArg,
    #[command(flatten)]
    activations: ActivationsArg,
    #[command(flatten)]
    lora: LoraArgs,
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
    /// Tokens in the KV cache before the timed part (`-d`).
    n_depth: usize,
    /// Sequences decoding together (1 for the pp and plain tg tests).
    n_parallel: usize,
    avg_ts: f64,
    stddev_ts: f64,
    samples_ts: Vec<f64>,
    /// What loading the model took (the same for every row of a run).
    load: LoadStats,
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
    let (_file, model, load) = load_model_with(
        &args.model,
        args.repack,
        &args.lora,
        args.threads.iter().copied().max(),
        matches!(backend, Backend::Cpu),
    )?;
    // A first run writes the repack cache in the background: not while measuring.
    model.finish_cache_write();
    // The counts as run (0: every core; more than the CPUs: clamped with a note), each once:
    // a row names the threads it measured.
    let mut threads: Vec<usize> = Vec::new();
    for t in if args.threads.is_empty() {
        vec![0]
    } else {
        args.threads.clone()
    } {
        let used = super::args::thread_count(Some(t));
        if !threads.contains(&used) {
            threads.push(used);
        }
    }
    if !args.parallel.is_empty() {
        if let Backend::Cuda(g) = &backend {
            bail!(
                "--parallel: batched multi-sequence decode runs on the CPU, not on {} (use --device cpu)",
                g.name
            );
        }
        if let Some(&p) = args.parallel.iter().find(|&&p| p == 0 || p > MAX_BATCH) {
            bail!("--parallel {p}: the number of sequences must be in 1..={MAX_BATCH}");
        }
    }
    if !args.parallel.is_empty() && args.n_depth.iter().any(|&d| d > 0) {
        bail!("-d: depths apply to the single-sequence tests, not to --parallel");
    }
    let name = model_name(&model);
    let tests = plan_tests(&args.n_prompt, &args.n_gen, &args.n_depth, &args.parallel);
    if tests.is_empty() {
        bail!("nothing to measure: -p and -n are all 0");
    }
    let max_ctx = model.config().max_context;
    // A --parallel test also holds its untimed prompt.
    let positions = |t: &Test| {
        let prompt = if !args.parallel.is_empty() && t.n_gen > 0 {
            PARALLEL_PROMPT
        } else {
            0
        };
        t.n_depth
            .saturating_add(t.n_prompt)
            .saturating_add(t.n_gen)
            .saturating_add(prompt)
    };
    if let Some(t) = tests.iter().find(|t| positions(t) > max_ctx) {
        bail!(
            "test {} needs {} positions; the model's context is {max_ctx}",
            t.name,
            positions(t)
        );
    }
    if !args.json {
        eprintln!("{}", load.summary());
        println!("| model | size | params | backend | ngl | threads | test | t/s |");
        println!("| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: |");
    }
    let mut rows = Vec::new();
    for &t in &threads {
        for test in &tests {
            let bench = Bench {
                model: &model,
                device: &args.device,
                backend: &backend,
                threads: t,
                activations,
            };
            let (samples, n_gpu_layers) = if args.parallel.is_empty() || test.n_gen == 0 {
                bench.measure(test, args.repetitions, !args.no_warmup)?
            } else {
                (
                    bench.measure_parallel(test.n_parallel, test.n_gen, args.repetitions, !args.no_warmup)?,
                    0,
                )
            };
            let (avg, sd) = mean_std(&samples);
            let row = Row {
                model: name.clone(),
                size_bytes: model.weight_bytes(),
                params: model.n_params(),
                backend: backend_name.clone(),
                n_gpu_layers,
                threads: t,
                test: test.name.clone(),
                n_prompt: test.n_prompt,
                n_gen: test.n_gen,
                n_depth: test.n_depth,
                n_parallel: test.n_parallel,
                avg_ts: avg,
                stddev_ts: sd,
                samples_ts: samples,
                load: load.clone(),
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

/// One table row to measure: `pp512`, `tg128`, `tg128 @ d3072`, `tg32 x4`.
#[derive(Clone, Debug, PartialEq)]
struct Test {
    name: String,
    n_prompt: usize,
    n_gen: usize,
    n_depth: usize,
    n_parallel: usize,
}

/// The tests in llama-bench's order: for each depth, every pp test then every tg test (each tg
/// test replaced by its `--parallel` variants when those are asked for). Zero lengths are skipped;
/// depth 0 adds no ` @ d0` to the name.
fn plan_tests(n_prompt: &[usize], n_gen: &[usize], n_depth: &[usize], parallel: &[usize]) -> Vec<Test> {
    let mut tests = Vec::new();
    let mut depths = n_depth.to_vec();
    if depths.is_empty() {
        depths.push(0);
    }
    for &d in &depths {
        let suffix = if d > 0 { format!(" @ d{d}") } else { String::new() };
        let test = |name: String, n_prompt, n_gen, n_parallel| Test {
            name: name + &suffix,
            n_prompt,
            n_gen,
            n_depth: d,
            n_parallel,
        };
        for &p in n_prompt.iter().filter(|&&p| p > 0) {
            tests.push(test(format!("pp{p}"), p, 0, 1));
        }
        for &n in n_gen.iter().filter(|&&n| n > 0) {
            if parallel.is_empty() {
                tests.push(test(format!("tg{n}"), 0, n, 1));
            } else {
                tests.extend(parallel.iter().map(|&par| test(format!("tg{n} x{par}"), 0, n, par)));
            }
        }
    }
    tests
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
    /// generated one at a time (as llama-bench does), after `test.n_depth` tokens already in the
    /// cache, and the number of blocks the session ran on the GPU. The depth is evaluated once
    /// (not timed); each repetition truncates the cache back to it. Token ids are arbitrary;
    /// speed does not depend on them.
    fn measure(&self, test: &Test, reps: usize, warmup: bool) -> anyhow::Result<(Vec<f64>, usize)> {
        let (p, n, depth) = (test.n_prompt, test.n_gen, test.n_depth);
        let opts = SessionOptions {
            n_ctx: (depth + p + n).max(1),
            threads: self.threads,
            activations: self.activations,
            ..Default::default()
        };
        let mut session = self.device.exact_session(self.backend, Arc::clone(self.model), opts)?;
        let vocab = self.model.config().vocab_size as u32;
        let token = |i: usize| ((i as u32).wrapping_mul(7919).wrapping_add(1)) % vocab;
        if depth > 0 {
            let context: Vec<u32> = (0..depth).map(|i| token(i + 1_000_003)).collect();
            session.eval(&context)?;
        }
        let tokens: Vec<u32> = (0..p.max(n)).map(token).collect();
        let mut samples = Vec::new();
        for rep in 0..reps + usize::from(warmup) {
            session.truncate(depth);
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

    /// Aggregate tokens/s of each repetition of `par` sequences decoding `n` tokens together
    /// on the CPU: each sequence is prefilled with its [`parallel_prompt`] (not timed), then
    /// `n` steps each evaluate one token of every sequence in one forward pass, the next tokens
    /// chosen greedily. The warm-up decodes at most 4 tokens (it only faults the mapping in).
    fn measure_parallel(&self, par: usize, n: usize, reps: usize, warmup: bool) -> anyhow::Result<Vec<f64>> {
        let opts = SessionOptions {
            n_ctx: PARALLEL_PROMPT + n,
            threads: self.threads,
            activations: self.activations,
            ..Default::default()
        };
        let mut session = MultiSession::new(Arc::clone(self.model), opts, par)?;
        if par > session.batch_size() {
            bail!(
                "--parallel {par} is more than the batch size of {}",
                session.batch_size()
            );
        }
        let vocab = self.model.config().vocab_size as u32;
        let bos = match self.model.file().get_u64("tokenizer.ggml.bos_token_id") {
            Ok(Some(b)) if b < u64::from(vocab) => b as u32,
            _ => 1 % vocab,
        };
        let mut next = vec![0u32; par];
        let mut samples = Vec::new();
        for rep in 0..reps + usize::from(warmup) {
            let is_warmup = warmup && rep == 0;
            let steps = if is_warmup { n.min(4) } else { n };
            for (seq, tok) in next.iter_mut().enumerate() {
                session.truncate(seq, 0);
                let prompt = parallel_prompt(bos, seq, vocab);
                let logits = session.step(&[SeqChunk {
                    seq,
                    tokens: &prompt,
                    logits: Logits::Last,
                }])?;
                *tok = argmax(&logits[0]);
            }
            let start = Instant::now();
            for _ in 0..steps {
                let chunks: Vec<SeqChunk<'_>> = next
                    .iter()
                    .enumerate()
                    .map(|(seq, tok)| SeqChunk {
                        seq,
                        tokens: std::slice::from_ref(tok),
                        logits: Logits::Last,
                    })
                    .collect();
                let logits = session.step(&chunks)?;
                for (tok, l) in next.iter_mut().zip(&logits) {
                    *tok = argmax(l);
                }
            }
            let secs = start.elapsed().as_secs_f64().max(1e-9);
            if !is_warmup {
                samples.push((par * n) as f64 / secs);
            }
        }
        Ok(samples)
    }
}

/// Prompt tokens each sequence of a `--parallel` test gets before its timed decode: BOS and a
/// token of its own, so the sequences differ.
const PARALLEL_PROMPT: usize = 2;

/// The `--parallel` prompt of sequence `seq` (the same ids as the llama.cpp oracle's batched
/// bench uses).
fn parallel_prompt(bos: u32, seq: usize, vocab: u32) -> [u32; PARALLEL_PROMPT] {
    [bos, (seq as u32).wrapping_mul(7919).wrapping_add(1) % vocab]
}

/// Index of the largest value (the first on ties, as greedy sampling picks).
fn argmax(x: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in x.iter().enumerate() {
        if v > x[best] {
            best = i;
        }
    }
    best as u32
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_tests_follow_llama_bench_names_and_order() {
        let names = |t: Vec<Test>| t.into_iter().map(|t| (t.name, t.n_depth)).collect::<Vec<_>>();
        assert_eq!(
            names(plan_tests(&[512], &[128], &[0, 3072], &[])),
            [
                ("pp512".to_string(), 0),
                ("tg128".to_string(), 0),
                ("pp512 @ d3072".to_string(), 3072),
                ("tg128 @ d3072".to_string(), 3072)
            ]
        );
        // No depth given means depth 0; zero lengths are skipped.
        assert_eq!(names(plan_tests(&[0], &[16], &[], &[])), [("tg16".to_string(), 0)]);
        let par = plan_tests(&[], &[32], &[0], &[1, 4]);
        assert_eq!(
            par.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
            ["tg32 x1", "tg32 x4"]
        );
        assert_eq!(par[1].n_parallel, 4);
    }
}
