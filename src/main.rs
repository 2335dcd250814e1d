//! The `edgeact` command line: quantize, inspect, pull, run/chat, bench, perplexity, agent,
//! eval, export, sandbox, rootfs.

mod cmd;
mod hub;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "edgeact",
    version,
    about = "Run tool-using LLM agents (AgentLM) offline on one laptop or one consumer GPU"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Convert a Hugging Face checkpoint or a GGUF file to a quantized GGUF.
    Quantize(cmd::quantize::Args),
    /// Print a GGUF file's metadata and tensor table.
    Inspect(cmd::inspect::Args),
    /// PEFT LoRA adapters: `lora convert` writes one as a GGUF LoRA adapter.
    Lora(cmd::lora::Args),
    /// Download a Hugging Face model and quantize it in one step.
    Pull(cmd::pull::Args),
    /// Generate text from a prompt.
    Run(cmd::run::Args),
    /// Interactive chat with the model's chat template.
    Chat(cmd::chat::Args),
    /// Measure prompt and generation tokens/s (llama-bench style).
    Bench(cmd::bench::Args),
    /// Perplexity of a model on a text file.
    Perplexity(cmd::perplexity::Args),
    /// Run an agent on an AgentBench-style OS or DB task.
    Agent(cmd::agent::Args),
    /// Run AgentBench OS/DB task files and score them.
    Eval(cmd::eval::Args),
    /// Export `eval`/`agent --log` transcripts as training data (AgentInstruct rows).
    Export(cmd::export::Args),
    /// Run one command in the OS sandbox exactly as the agent's tool would.
    Sandbox(cmd::sandbox::Args),
    /// Build or inspect the cached Debian root filesystem used by `eval os`.
    Rootfs(cmd::rootfs::Args),
    /// Serve the model over HTTP (TGI- and OpenAI-compatible APIs).
    Serve(cmd::serve::Args),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Quantize(a) => cmd::quantize::run(a),
        Command::Inspect(a) => cmd::inspect::run(a),
        Command::Lora(a) => cmd::lora::run(a),
        Command::Pull(a) => cmd::pull::run(a),
        Command::Run(a) => cmd::run::run(a),
        Command::Chat(a) => cmd::chat::run(a),
        Command::Bench(a) => cmd::bench::run(a),
        Command::Perplexity(a) => cmd::perplexity::run(a),
        Command::Agent(a) => cmd::agent::run(a),
        Command::Eval(a) => cmd::eval::run(a),
        Command::Export(a) => cmd::export::run(a),
        Command::Sandbox(a) => cmd::sandbox::run(a),
        Command::Rootfs(a) => cmd::rootfs::run(a),
        Command::Serve(a) => cmd::serve::run(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
