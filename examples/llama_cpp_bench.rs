//! llama.cpp's speed on a GGUF, measured through the oracle member the way `edgeact bench`
//! measures ours (pp: one prompt of `-p` tokens in batches of 512; tg: `-n` single-token
//! decodes), so the two can be run side by side in one script:
//!
//! ```text
//! cargo run --release --features oracle --example llama_cpp_bench -- -m model.gguf -p 512 -n 128 -t 2 -r 3 -d 0,3072
//! ```
//!
//! `-d 0,3072` runs both tests at each context depth, as llama-bench's `-d` (and `edgeact
//! bench -d`): the KV cache first holds that many tokens (evaluated once, not timed; flash
//! attention as llama.cpp's default, on for the CPU), and rows read `pp512 @ d3072`.
//!
//! `--parallel 1,2,4,8` replaces the tg test by batched decode, as `edgeact bench --parallel`
//! runs it: for each P, rows `tgN xP` with the aggregate tokens/s of P sequences (a 2-token
//! prompt each, not timed) decoding N tokens together, one `llama_decode` of P tokens per step
//! ([`edgeact_oracle::BatchedContext`]).
//!
//! `--first-token` loads, evaluates a 2-token prompt, decodes one token and exits, for timing
//! exec -> first token from outside (scripts/bench-side-by-side.sh does).

use clap::Parser;
use std::path::PathBuf;

#[derive(Parser)]
struct Args {
    #[arg(short, long)]
    model: PathBuf,
    #[arg(short = 'p', long, default_value_t = 512)]
    n_prompt: usize,
    #[arg(short = 'n', long, default_value_t = 128)]
    n_gen: usize,
    #[arg(short, long, default_value_t = 2)]
    threads: usize,
    #[arg(short, long, default_value_t = 3)]
    repetitions: usize,
    /// Context depths (comma-separated): tokens already in the KV cache before each test.
    #[arg(short = 'd', long = "n-depth", value_delimiter = ',', default_value = "0")]
    n_depth: Vec<usize>,
    /// Keep the weights in the file mapping (llama-bench's `--no-repack`); by default
    /// llama.cpp repacks Q4_0/Q4_K weights for its CPU kernels at load time.
    #[arg(long, conflicts_with = "amx")]
    no_repack: bool,
    /// On AMX CPUs, llama.cpp's default untouched: its AMX buffer type too (left out
    /// otherwise, since its matmul crashed in every prompt batch on an Intel Xeon VM); for
    /// decode-only runs (`-p 0`).
    #[arg(long)]
    amx: bool,
    /// Batched decode of P sequences together for each P (comma-separated) instead of the
    /// single-sequence tg test.
    #[arg(long, value_delimiter = ',', value_name = "P,...")]
    parallel: Vec<usize>,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
    /// Only load the model, evaluate a 2-token prompt and decode one token, then exit: time
    /// the whole process for exec -> first token (as `edgeact run -p hi -n 1`).
    #[arg(long)]
    first_token: bool,
}

fn mean_std(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = if xs.len() > 1 {
        xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (mean, var.sqrt())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let buffers = match (args.no_repack, args.amx) {
        (true, _) => edgeact_oracle::WeightBuffers::Mapped,
        (false, true) => edgeact_oracle::WeightBuffers::RepackedWithAmx,
        (false, false) => edgeact_oracle::WeightBuffers::Repacked,
    };
    let model = edgeact_oracle::Model::load_into(&args.model, buffers)?;
    if args.first_token {
        let mut ctx = edgeact_oracle::Context::new(&model, 8, args.threads)?;
        ctx.bench(2, 1, 0)?;
        return Ok(());
    }
    if args.repetitions == 0 {
        anyhow::bail!("-r must be at least 1");
    }
    if !args.parallel.is_empty() && args.n_depth.iter().any(|&d| d > 0) {
        anyhow::bail!("-d applies to the single-sequence tests, not to --parallel");
    }
    // With --parallel the single-sequence context only runs the pp test.
    let single_gen = if args.parallel.is_empty() { args.n_gen } else { 0 };
    // (depth, pp samples, tg samples) for each depth.
    let mut by_depth = Vec::new();
    if args.n_prompt > 0 || single_gen > 0 {
        let max_depth = args.n_depth.iter().copied().max().unwrap_or(0);
        let n_ctx = max_depth + args.n_prompt.max(single_gen) + 1;
        let mut ctx = edgeact_oracle::Context::new(&model, n_ctx, args.threads)?;
        for &depth in &args.n_depth {
            // One warm-up run, as llama-bench does, so page faults of the mmap are not measured
            // (it also evaluates the depth, which later runs keep).
            ctx.bench(args.n_prompt.min(32), single_gen.min(4), depth)?;
            let (mut pp, mut tg) = (Vec::new(), Vec::new());
            for _ in 0..args.repetitions {
                let (p, g) = ctx.bench(args.n_prompt, single_gen, depth)?;
                pp.push(p);
                tg.push(g);
            }
            by_depth.push((depth, pp, tg));
        }
    }
    // (P, mean, standard deviation) of the aggregate tokens/s of each --parallel count.
    let mut batched = Vec::new();
    if args.n_gen > 0 {
        for &par in &args.parallel {
            let mut ctx = edgeact_oracle::BatchedContext::new(&model, par, args.n_gen + 2, args.threads)?;
            ctx.bench(args.n_gen.min(4))?;
            let samples = (0..args.repetitions)
                .map(|_| ctx.bench(args.n_gen))
                .collect::<Result<Vec<f64>, _>>()?;
            let (m, s) = mean_std(&samples);
            batched.push((par, m, s));
        }
    }
    let stats = |xs: &[f64]| if xs.is_empty() { (0.0, 0.0) } else { mean_std(xs) };
    let file = args
        .model
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = match buffers {
        edgeact_oracle::WeightBuffers::Mapped => format!("{file} (no repack)"),
        edgeact_oracle::WeightBuffers::RepackedWithAmx => format!("{file} (AMX)"),
        edgeact_oracle::WeightBuffers::Repacked => file,
    };
    let at = |d: usize| if d > 0 { format!(" @ d{d}") } else { String::new() };
    if args.json {
        // Top-level pp/tg: the first depth (as before -d existed); `depths`: every depth.
        let depth_json = |(d, pp, tg): &(usize, Vec<f64>, Vec<f64>)| {
            let ((ppm, pps), (tgm, tgs)) = (stats(pp), stats(tg));
            serde_json::json!({"n_depth": d, "pp": {"n": args.n_prompt, "tps_mean": ppm, "tps_std": pps},
                "tg": {"n": single_gen, "tps_mean": tgm, "tps_std": tgs}})
        };
        let first = by_depth
            .first()
            .map(depth_json)
            .unwrap_or_else(|| depth_json(&(0, vec![], vec![])));
        println!(
            "{}",
            serde_json::json!({"engine": "llama.cpp", "model": name, "threads": args.threads,
                "repack": !args.no_repack, "pp": first["pp"], "tg": first["tg"],
                "depths": by_depth.iter().map(depth_json).collect::<Vec<_>>(),
                "parallel": batched.iter().map(|&(par, m, s)| serde_json::json!(
                    {"n_parallel": par, "n": args.n_gen, "tps_mean": m, "tps_std": s})).collect::<Vec<_>>()})
        );
    } else {
        println!("| engine    | model | threads | test | t/s |");
        println!("| --------- | ----- | ------: | ---- | --: |");
        for (depth, pp, tg) in &by_depth {
            let ((ppm, pps), (tgm, tgs)) = (stats(pp), stats(tg));
            if args.n_prompt > 0 {
                println!(
                    "| llama.cpp | {name} | {} | pp{}{} | {ppm:.2} ± {pps:.2} |",
                    args.threads,
                    args.n_prompt,
                    at(*depth)
                );
            }
            if single_gen > 0 {
                println!(
                    "| llama.cpp | {name} | {} | tg{}{} | {tgm:.2} ± {tgs:.2} |",
                    args.threads,
                    args.n_gen,
                    at(*depth)
                );
            }
        }
        for (par, m, s) in &batched {
            println!(
                "| llama.cpp | {name} | {} | tg{} x{par} | {m:.2} ± {s:.2} |",
                args.threads, args.n_gen
            );
        }
    }
    Ok(())
}
