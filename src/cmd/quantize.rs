//! `edgeact quantize`: convert a Hugging Face Llama checkpoint directory (safetensors or
//! PyTorch `.bin`, with `config.json` and a tokenizer) or requantize a GGUF file, with a
//! progress bar and a closing summary (sizes, bits per weight, time, RMSE per tensor type).
//! `--lora DIR` merges a PEFT LoRA adapter into the weights on the way (docs/quantize.md).

use anyhow::Context;
use edgeact_quantize::lora::LoraMerge;
use edgeact_quantize::{convert_with_lora, Mix, Options, Progress, Report};
use edgeact_runtime::quant::GgmlType;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// Hugging Face model directory, or a .gguf file to requantize.
    pub input: PathBuf,
    /// Output .gguf file: written atomically beside it, never over an input, and only where
    /// a regular file or nothing is (a FIFO, device or directory is refused).
    #[arg(short, long)]
    pub output: PathBuf,
    /// Quantization mix: f32, f16, q8_0, q4_0 or q4_k_m.
    #[arg(short = 't', long = "type", default_value = "q4_k_m", value_parser = parse_mix)]
    pub ty: Mix,
    /// Quantization threads (0 = all cores; more than the CPUs is clamped, with a note).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// general.name to record (default: the input's name).
    #[arg(long)]
    pub name: Option<String>,
    /// Convert the weights without tokenizer metadata (the model cannot tokenize text then).
    #[arg(long)]
    pub no_tokenizer: bool,
    /// A PEFT LoRA adapter directory (adapter_config.json, adapter_model.safetensors or .bin)
    /// to merge into the weights before quantization; the input must be an HF directory.
    #[arg(long, value_name = "ADAPTER_DIR")]
    pub lora: Option<PathBuf>,
    /// Multiplies the adapter's own scale (lora_alpha / r, or lora_alpha / sqrt(r) with rsLoRA).
    #[arg(
        long,
        value_name = "S",
        default_value_t = 1.0,
        requires = "lora",
        allow_negative_numbers = true
    )]
    pub lora_scale: f64,
    /// No progress bar.
    #[arg(short, long)]
    pub quiet: bool,
}

fn parse_mix(s: &str) -> Result<Mix, String> {
    s.parse()
}

struct Bar {
    bar: ProgressBar,
}

impl Progress for Bar {
    fn start(&mut self, total: u64, _n: usize) {
        self.bar.set_length(total);
    }
    fn tensor(&mut self, index: usize, name: &str, ty: GgmlType) {
        self.bar.set_message(format!("[{}] {name} → {ty}", index + 1));
    }
    fn advance(&mut self, n: u64) {
        self.bar.inc(n);
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    // Ctrl-C or a SIGTERM mid-conversion removes the partial output instead of leaving
    // hundreds of MB behind.
    edgeact_runtime::files::partial::remove_partial_files_on_signal().context("cannot install the signal handlers")?;
    let opts = Options {
        mix: args.ty,
        threads: super::args::thread_count(Some(args.threads)),
        name: args.name.clone(),
        no_tokenizer: args.no_tokenizer,
    };
    let bar = if args.quiet {
        ProgressBar::hidden()
    } else {
        let b = ProgressBar::new(0);
        b.set_style(
            ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {percent:>3}% {msg}")
                .expect("static template")
                .progress_chars("=> "),
        );
        b
    };
    let lora = match &args.lora {
        Some(dir) => {
            let l = LoraMerge::open(dir, args.lora_scale)?;
            for note in &l.adapter.notes {
                eprintln!("note: {note}");
            }
            Some(l)
        }
        None => None,
    };
    let mut progress = Bar { bar: bar.clone() };
    let report = convert_with_lora(&args.input, &args.output, &opts, lora.as_ref(), &mut progress)
        .with_context(|| format!("cannot convert {}", args.input.display()))?;
    bar.finish_and_clear();
    if !args.quiet {
        // The file is written; a closed stdout (`| head`) must not turn success into an error.
        let mut out = std::io::stdout().lock();
        if let Some(l) = &lora {
            let _ = writeln!(
                out,
                "merged the LoRA adapter {} into {} tensors (scale {})",
                l.adapter.dir.display(),
                report.lora_merged,
                l.scale()
            );
        }
        let _ = print_summary(&mut out, &report, args.ty);
    }
    Ok(ExitCode::SUCCESS)
}

fn size(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= 1024.0 * 1024.0 * 1024.0 {
        format!("{:.2} GiB", b / (1024.0 * 1024.0 * 1024.0))
    } else if b >= 1024.0 * 1024.0 {
        format!("{:.2} MiB", b / (1024.0 * 1024.0))
    } else {
        format!("{:.1} KiB", b / 1024.0)
    }
}

fn print_summary(out: &mut impl Write, r: &Report, mix: Mix) -> std::io::Result<()> {
    writeln!(out, "wrote {} ({mix})", r.output.display())?;
    writeln!(
        out,
        "input {} → output {} | {:.3} bits/weight over {} weights | {:.1} s",
        size(r.input_bytes),
        size(r.output_bytes),
        r.bits_per_weight(),
        r.elements,
        r.elapsed.as_secs_f64()
    )?;
    writeln!(
        out,
        "{:<6} {:>7} {:>14} {:>12} {:>12} {:>10}",
        "type", "tensors", "weights", "size", "rmse", "rel.rmse"
    )?;
    for t in &r.per_type {
        writeln!(
            out,
            "{:<6} {:>7} {:>14} {:>12} {:>12.3e} {:>9.3}%",
            t.ty.name(),
            t.tensors,
            t.elements,
            size(t.bytes),
            t.rmse(),
            t.relative_rmse() * 100.0
        )?;
    }
    Ok(())
}
