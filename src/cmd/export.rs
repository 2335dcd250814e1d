//! `edgeact export agentinstruct`: `eval`/`agent --log` transcripts as AgentInstruct training
//! rows (the conversion is `edgeact_agent::export`; this module parses flags and prints).

use anyhow::{bail, Context};
use edgeact_agent::export::{export_files, write_rows, ExportOptions};
use edgeact_agent::Protocol;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    format: Format,
}

#[derive(clap::Subcommand)]
enum Format {
    /// THUDM/AgentInstruct's schema: `{"conversations": [{"from", "loss", "value"}], "id"}`
    /// per line, the agent's replies with `loss: true`.
    Agentinstruct(AgentInstructArgs),
}

#[derive(clap::Args)]
struct AgentInstructArgs {
    /// Transcripts written by `eval --log` or `agent --log` (JSON Lines).
    #[arg(required = true)]
    transcripts: Vec<PathBuf>,
    /// Output file (JSON Lines), written atomically; never one of the inputs.
    #[arg(short = 'o', long)]
    output: PathBuf,
    /// Keep only the runs the judge accepted (AgentTuning's reward filter); `agent` runs,
    /// which nothing judged, are left out.
    #[arg(long)]
    only_correct: bool,
    /// Keep only one task family.
    #[arg(long, value_parser = ["os", "db"])]
    task: Option<String>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let Format::Agentinstruct(a) = args.format;
    let protocol = match a.task.as_deref() {
        None => None,
        Some("os") => Some(Protocol::Os),
        Some("db") => Some(Protocol::Db),
        Some(other) => bail!("unknown task family {other:?} (os or db)"),
    };
    let options = ExportOptions {
        only_correct: a.only_correct,
        protocol,
    };
    let export = export_files(&a.transcripts, options)?;
    for note in &export.notes {
        eprintln!("edgeact: {note}");
    }
    edgeact_runtime::files::partial::remove_partial_files_on_signal().context("cannot install the signal handlers")?;
    write_rows(&a.output, &export.rows, &a.transcripts)?;
    let families: Vec<String> = export.rows_by_family.iter().map(|(f, n)| format!("{f} {n}")).collect();
    let mut skipped = Vec::new();
    if export.incomplete > 0 {
        skipped.push(format!("{} incomplete", export.incomplete));
    }
    if export.not_correct > 0 {
        skipped.push(format!("{} not judged correct", export.not_correct));
    }
    if export.other_family > 0 {
        skipped.push(format!("{} of the other family", export.other_family));
    }
    eprintln!(
        "wrote {} row(s){} to {}{}",
        export.rows.len(),
        if families.is_empty() {
            String::new()
        } else {
            format!(" ({})", families.join(", "))
        },
        a.output.display(),
        if skipped.is_empty() {
            String::new()
        } else {
            format!("; left out: {}", skipped.join(", "))
        }
    );
    Ok(ExitCode::SUCCESS)
}
