//! `edgeact lora convert`: a PEFT LoRA adapter directory to llama.cpp's GGUF LoRA adapter
//! format, to apply at load time over an unchanged base model (docs/quantize.md, "LoRA
//! adapters").

use anyhow::Context;
use edgeact_quantize::lora::{read_base_config, write_adapter_gguf, AdapterOptions, PeftAdapter};
use edgeact_runtime::quant::GgmlType;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: LoraCommand,
}

#[derive(clap::Subcommand)]
pub enum LoraCommand {
    /// Write a PEFT adapter (adapter_config.json + adapter_model.safetensors or .bin) as a
    /// GGUF LoRA adapter.
    Convert(ConvertArgs),
}

#[derive(clap::Args)]
pub struct ConvertArgs {
    /// The PEFT adapter directory.
    pub adapter: PathBuf,
    /// Output .gguf file (written atomically, never over an input).
    #[arg(short, long)]
    pub output: PathBuf,
    /// The base model's directory or its config.json: the head counts for the Q/K rotary
    /// permutation (required when q_proj or k_proj is adapted) and the shapes to check.
    #[arg(long, value_name = "BASE_DIR|config.json")]
    pub base: Option<PathBuf>,
    /// Tensor type: f32 (as llama.cpp's converter by default) or f16.
    #[arg(short = 't', long = "type", default_value = "f32", value_parser = parse_type)]
    pub ty: GgmlType,
    /// general.name to record (default: the adapter directory's name).
    #[arg(long)]
    pub name: Option<String>,
    /// Print nothing on success.
    #[arg(short, long)]
    pub quiet: bool,
}

fn parse_type(s: &str) -> Result<GgmlType, String> {
    match s.to_ascii_lowercase().as_str() {
        "f32" => Ok(GgmlType::F32),
        "f16" => Ok(GgmlType::F16),
        _ => Err(format!("unknown adapter type {s:?} (expected f32 or f16)")),
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        LoraCommand::Convert(a) => convert(a),
    }
}

fn convert(args: ConvertArgs) -> anyhow::Result<ExitCode> {
    edgeact_runtime::files::partial::remove_partial_files_on_signal().context("cannot install the signal handlers")?;
    let adapter = PeftAdapter::open(&args.adapter)
        .with_context(|| format!("cannot read the LoRA adapter {}", args.adapter.display()))?;
    for note in &adapter.notes {
        eprintln!("note: {note}");
    }
    let (base, base_file) = match &args.base {
        Some(p) => {
            let (cfg, file) = read_base_config(p).context("cannot read the base model's config")?;
            (Some(cfg), Some(file))
        }
        None => (None, None),
    };
    let opts = AdapterOptions {
        ty: args.ty,
        base,
        name: args.name.clone(),
    };
    let protect: Vec<&Path> = base_file.iter().map(PathBuf::as_path).collect();
    let report = write_adapter_gguf(&adapter, &args.output, &opts, &protect)
        .with_context(|| format!("cannot write {}", args.output.display()))?;
    if !args.quiet {
        println!(
            "wrote {} ({}, {} lora_a/lora_b pairs, adapter.lora.alpha {}, {} bytes)",
            report.output.display(),
            args.ty,
            report.pairs,
            report.alpha,
            report.file_size
        );
    }
    Ok(ExitCode::SUCCESS)
}
