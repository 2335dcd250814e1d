//! `edgeact pull OWNER/REPO`: download a Hugging Face model into the cache (resumable,
//! sha256-verified) and convert it to a quantized GGUF in one step; a repository `.gguf` file
//! is downloaded and copied as is.

use crate::hub::{self, Hub, Selection};
use anyhow::Context;
use edgeact_quantize::{convert, Mix, Options, Progress};
use edgeact_runtime::gguf::GgufFile;
use edgeact_runtime::quant::GgmlType;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// Hugging Face repository, OWNER/NAME.
    pub repo: String,
    /// Quantization mix: f32, f16, q8_0, q4_0 or q4_k_m (ignored for a .gguf download).
    #[arg(short = 't', long = "type", default_value = "q4_k_m", value_parser = parse_mix)]
    pub ty: Mix,
    /// Output .gguf file (default: {repo-name}.{type}.gguf, or the .gguf file's own name).
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Branch, tag or commit.
    #[arg(long, default_value = "main")]
    pub revision: String,
    /// Take this .gguf file of the repository as is instead of converting the checkpoint.
    #[arg(long)]
    pub file: Option<String>,
    /// Quantization threads (0 = all cores).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// No progress bars.
    #[arg(short, long)]
    pub quiet: bool,
}

fn parse_mix(s: &str) -> Result<Mix, String> {
    s.parse()
}

struct Bar(ProgressBar);

impl Progress for Bar {
    fn start(&mut self, total: u64, _n: usize) {
        self.0.set_length(total);
    }
    fn tensor(&mut self, index: usize, name: &str, ty: GgmlType) {
        self.0.set_message(format!("[{}] {name} → {ty}", index + 1));
    }
    fn advance(&mut self, n: u64) {
        self.0.inc(n);
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    // The conversion's partial output goes with Ctrl-C, as `quantize`'s (downloads keep their
    // `.part` files on purpose: the next pull resumes them).
    edgeact_runtime::files::partial::remove_partial_files_on_signal().context("cannot install the signal handlers")?;
    hub::validate_repo(&args.repo)?;
    hub::validate_revision(&args.revision)?;
    let hub = Hub::from_env(args.quiet)?;
    let files = hub.list_files(&args.repo, &args.revision)?;
    let selection = hub::select(&files, args.file.as_deref())?;
    let dir = hub.cache_dir(&args.repo, &args.revision);
    for stale in hub.prune(&dir, &files)? {
        if !args.quiet {
            eprintln!(
                "removed {} (not in {} at {} any more)",
                stale.display(),
                args.repo,
                args.revision
            );
        }
    }
    let repo_name = args.repo.rsplit('/').next().unwrap_or(&args.repo);
    match selection {
        Selection::Gguf(file) => {
            let src = hub.download(&args.repo, &args.revision, &file, &dir)?;
            let base = Path::new(&file.name).file_name().unwrap_or_default();
            let out = args.output.unwrap_or_else(|| PathBuf::from(base));
            // Refuse a file our reader cannot open before putting it where the user asked.
            GgufFile::open(&src).with_context(|| format!("{} is not a valid GGUF file", file.name))?;
            place(&src, &out)?;
            if !args.quiet {
                eprintln!("{} → {} (as is; --type does not apply)", file.name, out.display());
            }
        }
        Selection::Checkpoint(list) => {
            for f in &list {
                hub.download(&args.repo, &args.revision, f, &dir)?;
            }
            let out = args
                .output
                .unwrap_or_else(|| PathBuf::from(format!("{repo_name}.{}.gguf", args.ty.name())));
            let opts = Options {
                mix: args.ty,
                threads: args.threads,
                name: Some(repo_name.to_string()),
                no_tokenizer: false,
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
            let report = convert(&dir, &out, &opts, &mut Bar(bar.clone()))
                .with_context(|| format!("cannot convert {} (downloaded to {})", args.repo, dir.display()))?;
            bar.finish_and_clear();
            if !args.quiet {
                eprintln!(
                    "{} → {} ({}, {:.2} bits/weight)",
                    args.repo,
                    out.display(),
                    args.ty,
                    report.bits_per_weight()
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Puts the cached file at `out`: a hard link when possible (no second copy of gigabytes),
/// else a copy, made under a temporary name beside `out` and renamed over it, so that a failed
/// link or copy (another file system, a full disk) leaves an existing `out` as it was.
fn place(src: &Path, out: &Path) -> anyhow::Result<()> {
    if out.exists() && std::fs::canonicalize(src).ok() == std::fs::canonicalize(out).ok() {
        return Ok(());
    }
    let mut tmp = out.as_os_str().to_owned();
    tmp.push(format!(".{}.tmp", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    let placed = std::fs::hard_link(src, &tmp)
        .or_else(|_| std::fs::copy(src, &tmp).map(|_| ()))
        .and_then(|()| std::fs::rename(&tmp, out));
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("cannot put {} at {}", src.display(), out.display()));
    }
    Ok(())
}
