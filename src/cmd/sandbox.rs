//! `edgeact sandbox`: runs one command in the OS sandbox exactly as the agent's bash tool
//! would (fresh sandbox, the task's init scripts and `start` if given), prints the observation
//! as the tool reports it, and exits with the command's status.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use crate::agent_glue::os::{start_session, Backend};
use anyhow::Context;
use edgeact_tools::os::{rootfs, truncate_os_output, EndReason, OsTask, RootFs, SandboxConfig};

#[derive(clap::Args)]
pub struct Args {
    /// AgentBench OS task file (one task object, or a list with --index).
    #[arg(long)]
    task: Option<PathBuf>,
    /// Index of the task when the file holds a list.
    #[arg(long, default_value_t = 0)]
    index: usize,
    /// Wall-clock limit of the command, seconds.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
    /// Print raw terminal bytes (AgentBench's observation) instead of the cleaned text.
    #[arg(long)]
    raw: bool,
    /// Root file system directory (default: the host root read-only; `--rootfs cache` uses
    /// the one `edgeact rootfs build` made).
    #[arg(long)]
    rootfs: Option<String>,
    /// Isolation: the namespace sandbox (default), or a Docker/Podman container.
    #[arg(long, value_enum, default_value_t = Backend::Namespace)]
    backend: Backend,
    /// Container image for --backend docker|podman (default edgeact/os-default, imported
    /// from the `edgeact rootfs build` root when missing).
    #[arg(long)]
    image: Option<String>,
    /// After the command, run the task's check scripts with this answer and report the verdict.
    #[arg(long)]
    answer: Option<String>,
    /// The bash code to type into the sandbox's shell.
    #[arg(last = true, required = true)]
    cmd: Vec<String>,
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    let root = match a.rootfs.as_deref() {
        // Containers run an image: their default import source is the rootfs cache.
        _ if a.backend != Backend::Namespace => RootFs::HostReadOnly,
        None => RootFs::HostReadOnly,
        Some("cache") => {
            let d = rootfs::default_dir();
            anyhow::ensure!(
                rootfs::is_built(&d),
                "no root file system at {}: run `edgeact rootfs build`",
                d.display()
            );
            RootFs::Dir(d)
        }
        Some(d) => RootFs::Dir(PathBuf::from(d)),
    };
    anyhow::ensure!(a.timeout > 0, "--timeout must be positive");
    let cfg = SandboxConfig {
        root,
        wall_timeout: Duration::from_secs(a.timeout),
        raw_terminal: a.raw,
        ..Default::default()
    };
    let task = match &a.task {
        Some(p) => Some(OsTask::load(p, a.index).with_context(|| format!("load task {}", p.display()))?),
        None => None,
    };
    let import_from = match a.rootfs.as_deref() {
        Some("cache") | None => None,
        Some(d) => Some(PathBuf::from(d)),
    };
    let mut sb = start_session(a.backend, cfg, a.image.as_deref(), import_from.as_deref())?;
    if let Some(t) = &task {
        t.setup(sb.as_mut()).context("task set-up")?;
    }
    let code = a.cmd.join(" ");
    let out = sb.run(&code).context("run the command")?;
    let text = if out.output.is_empty() {
        "The output of the OS is empty.".to_string()
    } else {
        format!("The output of the OS:\n\n{}", truncate_os_output(&out.output))
    };
    println!("{text}");
    let status = match out.end {
        EndReason::Prompt => {
            // The shell is idle: ask it for the command's status (not shown to any model).
            let st = sb.run("echo $?").context("read the exit status")?;
            let st = edgeact_tools::os::clean_terminal_output(&String::from_utf8_lossy(&st.raw));
            st.trim().parse::<u8>().unwrap_or(1)
        }
        EndReason::Silence => {
            eprintln!(
                "(the command was still running after {} s of silence)",
                sb.limits().silence_timeout.as_secs()
            );
            124
        }
        EndReason::WallTimeout => {
            eprintln!("(interrupted after {} s)", a.timeout);
            124
        }
        EndReason::OutputCap => {
            eprintln!("(interrupted: output over {} bytes)", sb.limits().output_cap);
            1
        }
        EndReason::ShellExited => {
            eprintln!("(the shell exited)");
            1
        }
    };
    if let (Some(t), Some(ans)) = (&task, &a.answer) {
        match t.check(sb.as_mut(), Some(ans)).context("run the check scripts")? {
            Some(ok) => eprintln!("check: {}", if ok { "pass" } else { "fail" }),
            None => eprintln!("check: this task is judged by match, not scripts"),
        }
    }
    Ok(ExitCode::from(status))
}
