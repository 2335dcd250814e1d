//! `edgeact perplexity`: perplexity of a model on a text file, by llama.cpp's method: the
//! tokenized text is cut into chunks of `--ctx` tokens, each chunk is evaluated from an empty
//! cache (its first token replaced by BOS when the model adds one), and only the second half of
//! each chunk is scored, so every scored token has at least `ctx/2` tokens of context.

use super::args::ModelArgs;
use anyhow::{bail, Context};
use edgeact_runtime::tokenizer::Tokenizer;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// Text file to score.
    #[arg(short = 'f', long)]
    file: PathBuf,
    /// Score at most this many chunks (default: all).
    #[arg(long)]
    chunks: Option<usize>,
}

pub fn run(mut args: Args) -> anyhow::Result<ExitCode> {
    // llama.cpp's perplexity default context (512) unless --ctx names one.
    args.model.default_ctx = Some(512);
    if args.chunks == Some(0) {
        bail!("--chunks 0 would score nothing");
    }
    // wikitext-2's test set is 1.3 MB; far more would not be scored in a sitting.
    let text = edgeact_runtime::files::read_regular_text(&args.file, 1 << 30)
        .with_context(|| format!("reading {}", args.file.display()))?;
    let (file, model, mut session) = args.model.open()?;
    let tok = Tokenizer::from_gguf(&file).context("loading the tokenizer")?;
    let n_ctx = session.n_ctx();
    if n_ctx < 4 {
        bail!("--ctx {n_ctx} is too small to score anything");
    }
    let add_bos = tok.add_bos_default();
    let tokens = tok.encode(&text, add_bos, false);
    let mut n_chunks = tokens.len() / n_ctx;
    if let Some(c) = args.chunks {
        n_chunks = n_chunks.min(c);
    }
    if n_chunks == 0 {
        bail!(
            "{} has {} tokens; at least --ctx {n_ctx} are needed for one chunk",
            args.file.display(),
            tokens.len()
        );
    }
    eprintln!(
        "perplexity: {} tokens, {n_chunks} chunks of {n_ctx}, scoring the last {} tokens of each",
        tokens.len(),
        n_ctx - 1 - n_ctx / 2
    );
    let n_vocab = model.config().vocab_size;
    let first = n_ctx / 2;
    let (mut sum_nll, mut sum_nll2, mut count) = (0f64, 0f64, 0usize);
    let start = Instant::now();
    let mut out = std::io::stdout().lock();
    for c in 0..n_chunks {
        let mut chunk = tokens[c * n_ctx..(c + 1) * n_ctx].to_vec();
        if let (true, Some(bos)) = (add_bos, tok.bos_id()) {
            chunk[0] = bos;
        }
        session.truncate(0);
        let logits = session.eval_all_logits(&chunk)?;
        for j in first..n_ctx - 1 {
            let row = &logits[j * n_vocab..(j + 1) * n_vocab];
            let nll = -log_softmax_at(row, chunk[j + 1] as usize);
            sum_nll += nll;
            sum_nll2 += nll * nll;
            count += 1;
        }
        write!(out, "[{}]{:.4},", c + 1, (sum_nll / count as f64).exp())?;
        out.flush()?;
    }
    writeln!(out)?;
    let mean = sum_nll / count as f64;
    let var = (sum_nll2 / count as f64 - mean * mean).max(0.0);
    let ppl = mean.exp();
    // Error of exp(mean) from the standard error of the mean NLL (first-order propagation).
    let err = ppl * (var / (count as f64 - 1.0).max(1.0)).sqrt();
    writeln!(out, "Final estimate: PPL = {ppl:.4} +/- {err:.4}")?;
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "perplexity: {} tokens evaluated in {secs:.2} s ({:.2} t/s)",
        n_chunks * n_ctx,
        (n_chunks * n_ctx) as f64 / secs
    );
    Ok(ExitCode::SUCCESS)
}

/// `log(softmax(row)[i])`, computed in f64 with the max subtracted.
fn log_softmax_at(row: &[f32], i: usize) -> f64 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = row.iter().map(|&v| (v as f64 - max).exp()).sum();
    row[i] as f64 - max - sum.ln()
}
