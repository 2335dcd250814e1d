//! `edgeact sandbox`: runs one command in the OS sandbox exactly as the agent's bash tool
//! would (fresh sandbox, the task's init scripts and `start` if given), prints the observation
//! as the tool reports it, and exits with the command's status.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use edgeact_agent::judge::judge_os;
use edgeact_agent::os::{start_session, Backend, RootfsChoice, ROOTFS_HELP};
use edgeact_tools::os::{truncate_os_output, EndReason, OsTask, RootFs, SandboxConfig};

#[derive(clap::Args)]
pub struct Args {
    /// AgentBench OS task file (one task object, or a list with --index). Its script `file`s
    /// are read from AgentBench's scripts folder beside it (`data/dev.json` → `scripts/dev/`,
    /// `data/N/x.json` → `scripts/N/`) and may not leave it.
    #[arg(long)]
    task: Option<PathBuf>,
    /// Index of the task when the file holds a list.
    #[arg(long, default_value_t = 0, requires = "task")]
    index: usize,
    /// Wall-clock limit of the command, seconds (at most a day).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    timeout: u64,
    /// Print raw terminal bytes (AgentBench's observation) instead of the cleaned text.
    #[arg(long)]
    raw: bool,
    #[arg(long, default_value = "built", help = ROOTFS_HELP)]
    rootfs: RootfsChoice,
    /// Isolation: the namespace sandbox (default), or a Docker/Podman container.
    #[arg(long, default_value = "namespace", value_parser = super::agent::backend_parser())]
    backend: Backend,
    /// Container image for --backend docker|podman (default edgeact/os-default, imported
    /// from the `edgeact rootfs build` root when missing).
    #[arg(long)]
    image: Option<String>,
    /// After the command, judge this answer as `eval os` does (match, or the check scripts run
    /// in this sandbox) and report the verdict.
    #[arg(long, requires = "task")]
    answer: Option<String>,
    /// The command: one argument is typed into the sandbox's shell as is (a command line, e.g.
    /// `-- 'ls | wc -l'`); several are shell-quoted one by one, so `-- bash -c 'echo a; echo b'`
    /// runs what it would in the user's own shell.
    #[arg(last = true, required = true)]
    cmd: Vec<String>,
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(a.timeout > 0, "--timeout must be positive");
    // The task file is read (and refused if it names host paths) before anything starts.
    let task = match &a.task {
        Some(p) => Some(OsTask::load(p, a.index).with_context(|| format!("load task {}", p.display()))?),
        None => None,
    };
    let rootfs = a.rootfs.prepare(a.backend)?;
    let root = match a.backend {
        Backend::Namespace => rootfs.namespace_root()?,
        // Containers run an image; the root is only its import source.
        _ => RootFs::HostReadOnly,
    };
    let cfg = SandboxConfig {
        root,
        wall_timeout: Duration::from_secs(a.timeout),
        raw_terminal: a.raw,
        ..Default::default()
    };
    let import_from = match &rootfs {
        RootfsChoice::Dir(d) if a.backend != Backend::Namespace => Some(d.clone()),
        _ => None,
    };
    let mut sb = start_session(a.backend, cfg, a.image.as_deref(), import_from.as_deref())?;
    if let Some(t) = &task {
        t.setup(sb.as_mut()).context("task set-up")?;
    }
    let code = command_line(&a.cmd);
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
        let ok = judge_os(Some(ans), &t.evaluation, sb.as_mut()).context("judging the answer")?;
        eprintln!("check: {}", if ok { "pass" } else { "fail" });
    }
    Ok(ExitCode::from(status))
}

/// The text typed into the shell for `sandbox -- ARGS`: a single argument is a command line and
/// is typed as is; several arguments are the words the user's shell already split, so each is
/// quoted to reach the sandbox's shell as the same word.
fn command_line(args: &[String]) -> String {
    match args {
        [one] => one.clone(),
        words => words.iter().map(|w| shell_quote(w)).collect::<Vec<_>>().join(" "),
    }
}

/// POSIX shell quoting: words of only safe characters stay bare (so the echoed command reads
/// naturally); anything else is single-quoted, a `'` inside written as `'\''`. The shell is
/// interactive bash, so characters it treats specially there only (`^` quick substitution,
/// `%` job specs, `=` assignments in the first word) are quoted as well.
fn shell_quote(word: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "_-+.,/:@".contains(c);
    if !word.is_empty() && word.chars().all(safe) {
        return word.to_string();
    }
    format!("'{}'", word.replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(words: &[&str]) -> String {
        command_line(&words.iter().map(|w| w.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn several_arguments_are_quoted_one_by_one() {
        // Was typed as `bash -c echo a b; echo c`: `bash -c echo` and then `echo c`.
        assert_eq!(line(&["bash", "-c", "echo a b; echo c"]), "bash -c 'echo a b; echo c'");
        assert_eq!(
            line(&["echo", "it's", "", "$HOME", "*"]),
            "echo 'it'\\''s' '' '$HOME' '*'"
        );
        assert_eq!(line(&["ls", "-la", "/tmp/x.txt"]), "ls -la /tmp/x.txt");
        assert_eq!(line(&["%1", "^a^b", "A=b"]), "'%1' '^a^b' 'A=b'");
    }

    #[test]
    fn one_argument_is_a_command_line() {
        assert_eq!(line(&["echo a b; echo c | wc -l"]), "echo a b; echo c | wc -l");
    }
}
