//! OS tasks: preparing the task's machine (init scripts, the `start` command typed into the
//! agent's shell), running the loop and judging with `match` or the `check` scripts.
//!
//! The machine is an `edgeact_tools::os::ShellSession`: the namespace sandbox (default) or a
//! Docker/Podman container (`--backend`); the agent types into its shell through [`ShellTool`]
//! and the judge runs the check scripts on it.

use crate::judge::judge_os;
use crate::tasks::OsTask;
use crate::{run_os, Event, LanguageModel, LoopLimits, Run, Tool};
use anyhow::{bail, Context};
use edgeact_tools::os::container::{self, DEFAULT_IMAGE};
use edgeact_tools::os::rootfs::BuildOptions;
use edgeact_tools::os::{
    rootfs, ContainerConfig, ContainerRuntime, ContainerSandbox, OsSandbox, RootFs, SandboxConfig, ShellSession,
};
use std::path::{Path, PathBuf};

/// The agent's [`Tool`] over a judged task's machine: each action is typed into its persistent
/// shell. Output that is not UTF-8 ends the run with an error, as it ended AgentBench's: its
/// harness decoded the shell's bytes strictly, the decode raised, and the task counted as failed
/// (as `eval` counts runs that end on an error). Unjudged `agent os` runs ([`SandboxMachine`])
/// show such output lossily and go on.
pub struct ShellTool<'a>(pub &'a mut dyn ShellSession);

impl Tool for ShellTool<'_> {
    fn execute(&mut self, code: &str) -> anyhow::Result<String> {
        let out = self.0.run(code)?;
        if !out.is_utf8() {
            bail!(
                "the command printed bytes that are not UTF-8, which AgentBench's harness could not decode (the task counts as failed there too): {:?}",
                edgeact_tools::os::truncate_os_output(&out.output)
            );
        }
        Ok(out.output)
    }
}

/// Prepares `machine` for `task`, runs the agent and judges its answer.
pub fn run_and_judge_on(
    machine: &mut dyn ShellSession,
    task: &OsTask,
    model: &mut dyn LanguageModel,
    limits: LoopLimits,
    on_event: &mut dyn FnMut(Event<'_>),
) -> anyhow::Result<(Run, bool)> {
    // Init scripts as separate processes, then `start` typed into the agent's own shell so its
    // effects (background jobs, cwd, variables) persist into the session.
    task.setup(machine)?;
    let run = run_os(
        model,
        &mut ShellTool(&mut *machine),
        &task.description,
        limits,
        on_event,
    )?;
    let ok = judge_os(run.answer.as_deref(), &task.evaluation, machine)?;
    Ok((run, ok))
}

/// Which isolation runs the agent's machine (`--backend`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Backend {
    /// Linux namespaces, no extra software (the default).
    #[default]
    Namespace,
    /// A Docker container (needs the docker CLI and a reachable daemon).
    Docker,
    /// A Podman container (daemonless).
    Podman,
}

impl Backend {
    pub const NAMES: [&'static str; 3] = ["namespace", "docker", "podman"];
}

impl std::str::FromStr for Backend {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "namespace" => Ok(Backend::Namespace),
            "docker" => Ok(Backend::Docker),
            "podman" => Ok(Backend::Podman),
            _ => Err(format!("unknown backend `{s}` (expected namespace, docker or podman)")),
        }
    }
}

/// `--rootfs`: the root file system the agent's machine shows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum RootfsChoice {
    /// The Debian root `edgeact rootfs build` makes in the cache (`built`, the default); built
    /// on first use when this process may (root, `debootstrap`), else a clear error.
    #[default]
    Built,
    /// The host's own files, read-only with private places masked (`host`): only on request,
    /// since the model then sees the host's software and configuration.
    Host,
    /// A root file system directory the user prepared.
    Dir(PathBuf),
}

/// Help text shared by the commands' `--rootfs` flags.
pub const ROOTFS_HELP: &str = "Root file system of the sandbox: `built` (default: the Debian root of \
`edgeact rootfs build`, built and cached on first use), `host` (the host's files read-only, private \
places masked) or a root directory (write `./host` for a directory named host)";

impl std::str::FromStr for RootfsChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "" => return Err("empty --rootfs: give `built`, `host` or a directory".into()),
            "built" | "cache" => RootfsChoice::Built,
            "host" => RootfsChoice::Host,
            dir => RootfsChoice::Dir(PathBuf::from(dir)),
        })
    }
}

impl RootfsChoice {
    /// Makes the choice usable by `backend` before any sandbox starts: the namespace sandbox's
    /// default root is built now if missing (once, progress on stderr), a directory is checked,
    /// and `host` is refused for containers (they run an image). The result names a directory
    /// or the host for the namespace sandbox; containers keep their import source.
    pub fn prepare(&self, backend: Backend) -> anyhow::Result<RootfsChoice> {
        match (self, backend) {
            (RootfsChoice::Host, Backend::Namespace) => Ok(RootfsChoice::Host),
            (RootfsChoice::Host, _) => bail!(
                "--rootfs host is for the namespace sandbox; --backend docker|podman runs an image \
                 (--image, or one imported from `--rootfs built` or `--rootfs DIR`)"
            ),
            (RootfsChoice::Built, Backend::Namespace) => Ok(RootfsChoice::Dir(ensure_built_root()?)),
            (RootfsChoice::Built, _) => Ok(RootfsChoice::Built),
            (RootfsChoice::Dir(dir), _) => {
                anyhow::ensure!(
                    dir.join("bin/bash").exists() || dir.join("usr/bin/bash").exists(),
                    "--rootfs {}: not a root file system (no bin/bash); give a directory made by \
                     `edgeact rootfs build --dir DIR`, or `--rootfs built` / `--rootfs host`",
                    dir.display()
                );
                Ok(self.clone())
            }
        }
    }

    /// The namespace sandbox's root for this choice (building the default one if needed).
    pub fn namespace_root(&self) -> anyhow::Result<RootFs> {
        Ok(match self.prepare(Backend::Namespace)? {
            RootfsChoice::Host => RootFs::HostReadOnly,
            RootfsChoice::Dir(d) => RootFs::Dir(d),
            RootfsChoice::Built => RootFs::Dir(rootfs::default_dir()),
        })
    }

    /// Where a container backend imports its default image from (`None`: the build cache).
    fn import_source(&self) -> Option<&Path> {
        match self {
            RootfsChoice::Dir(d) => Some(d),
            _ => None,
        }
    }
}

/// The cached Debian root, built now when missing and this process can build it.
pub fn ensure_built_root() -> anyhow::Result<PathBuf> {
    let dir = rootfs::default_dir();
    if rootfs::is_built(&dir) {
        return Ok(dir);
    }
    if let Some(why) = rootfs::build_blocker() {
        bail!(
            "no Debian root file system at {} yet, and {why}. Build it once with `edgeact rootfs build` \
             as root (needs debootstrap and a reachable Debian mirror), or run on the host's files \
             read-only with `--rootfs host`, or give a root directory with `--rootfs DIR`",
            dir.display()
        );
    }
    eprintln!(
        "edgeact: building the Debian root file system in {} (first use only; a few minutes, \
         progress below; `--rootfs host` skips it)",
        dir.display()
    );
    rootfs::build_with_progress(&dir, &BuildOptions::default(), &mut |line| {
        eprintln!("edgeact: rootfs: {line}")
    })
    .with_context(|| {
        format!(
            "building the root file system in {} (or run with `--rootfs host`)",
            dir.display()
        )
    })?;
    eprintln!("edgeact: root file system ready in {}", dir.display());
    Ok(dir)
}

/// Sandbox settings for the agent's machine.
#[derive(Clone, Debug, Default)]
pub struct MachineOptions {
    /// The root file system (namespace sandbox) or the import source of the default image
    /// (container backends); see [`RootfsChoice`].
    pub rootfs: RootfsChoice,
    /// Strip terminal escapes, `\r` and the prompt from observations (for models not trained
    /// on raw terminal output; AgentLM was).
    pub clean_output: bool,
    /// Namespace sandbox or container.
    pub backend: Backend,
    /// Container image (container backends only); default `edgeact/os-default`.
    pub image: Option<String>,
}

/// Starts the machine `backend` names. `base` carries the limits and the namespace root;
/// container backends take the same limits and run `image` (default [`DEFAULT_IMAGE`],
/// imported from `rootfs` or the `edgeact rootfs build` cache when missing).
pub fn start_session(
    backend: Backend,
    base: SandboxConfig,
    image: Option<&str>,
    rootfs: Option<&Path>,
) -> anyhow::Result<Box<dyn ShellSession + Send>> {
    // Ctrl-C or a kill must not leave sandbox temp dirs and cgroups behind (idempotent).
    edgeact_tools::os::cleanup_on_signals().context("installing the sandbox signal clean-up")?;
    let runtime = match backend {
        Backend::Namespace => {
            anyhow::ensure!(image.is_none(), "--image needs --backend docker or podman");
            return Ok(Box::new(OsSandbox::start(base).context("starting the OS sandbox")?));
        }
        Backend::Docker => ContainerRuntime::Docker,
        Backend::Podman => ContainerRuntime::Podman,
    };
    let mut cfg = ContainerConfig::new(runtime, image.unwrap_or(DEFAULT_IMAGE));
    cfg.shell = base.limits();
    cfg.memory_bytes = base.memory_bytes;
    cfg.max_procs = base.max_procs;
    cfg.tmpfs_bytes = base.tmpfs_bytes;
    cfg.hostname = base.hostname.clone();
    if image.is_none() && !container::image_present(&cfg)? {
        let dir = rootfs.map(Path::to_path_buf).unwrap_or_else(rootfs::default_dir);
        anyhow::ensure!(
            dir.join("bin/bash").exists() || dir.join("usr/bin/bash").exists(),
            "image {DEFAULT_IMAGE} is missing and there is no root file system at {} to import: run \
             `edgeact rootfs build` (or `{} build -t {DEFAULT_IMAGE} -f scripts/os-default.Dockerfile scripts`)",
            dir.display(),
            runtime.command_name()
        );
        eprintln!(
            "edgeact: importing {} as {} image {DEFAULT_IMAGE} (once)",
            dir.display(),
            runtime.command_name()
        );
        container::import_rootfs(&cfg, &dir).context("importing the root file system")?;
    }
    let sb =
        ContainerSandbox::start(cfg).with_context(|| format!("starting a {} container", runtime.command_name()))?;
    Ok(Box::new(sb))
}

/// A task's machine: a sandbox or container of `edgeact_tools::os`.
pub struct SandboxMachine {
    sandbox: Box<dyn ShellSession + Send>,
}

impl SandboxMachine {
    pub fn start(opts: &MachineOptions) -> anyhow::Result<SandboxMachine> {
        let mut cfg = SandboxConfig::default();
        if opts.backend == Backend::Namespace {
            cfg.root = opts.rootfs.namespace_root()?;
        }
        cfg.raw_terminal = !opts.clean_output;
        let sandbox = start_session(opts.backend, cfg, opts.image.as_deref(), opts.rootfs.import_source())?;
        Ok(SandboxMachine { sandbox })
    }
}

impl Tool for SandboxMachine {
    fn execute(&mut self, code: &str) -> anyhow::Result<String> {
        Ok(self.sandbox.run(code)?.output)
    }
}

/// Runs one OS task in a fresh sandbox.
pub fn run_and_judge(
    task: &OsTask,
    opts: &MachineOptions,
    model: &mut dyn LanguageModel,
    limits: LoopLimits,
    on_event: &mut dyn FnMut(Event<'_>),
) -> anyhow::Result<(Run, bool)> {
    let mut machine = SandboxMachine::start(opts)?;
    run_and_judge_on(machine.sandbox.as_mut(), task, model, limits, on_event)
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgeact_tools::os::{CommandOutput, EndReason, SandboxConfig, ScriptOutput, ShellLimits};

    /// A shell whose every command prints `raw`, its collection ending with `end`.
    struct Printing(Vec<u8>, EndReason);

    impl ShellSession for Printing {
        fn run(&mut self, _: &str) -> edgeact_tools::os::Result<CommandOutput> {
            Ok(CommandOutput {
                output: String::from_utf8_lossy(&self.0).into_owned(),
                raw: self.0.clone(),
                end: self.1,
            })
        }
        fn run_script(&mut self, _: &edgeact_tools::os::Script, _: &[&str]) -> edgeact_tools::os::Result<ScriptOutput> {
            unreachable!("the loop only types into the shell")
        }
        fn hostname(&self) -> &str {
            "fake"
        }
        fn limits(&self) -> ShellLimits {
            SandboxConfig::default().limits()
        }
    }

    #[test]
    fn judged_shell_output_must_be_utf8() {
        let run = |raw: &[u8], end| ShellTool(&mut Printing(raw.to_vec(), end)).execute("cat f");
        assert_eq!(run("é\r\n".as_bytes(), EndReason::Prompt).unwrap(), "é\r\n");
        let err = run(b"\x89PNG\r\n", EndReason::Prompt).unwrap_err().to_string();
        assert!(err.contains("not UTF-8") && err.contains("\u{fffd}PNG"), "{err}");
        // A character our output cap cut in two is not the command's fault.
        let cut = &"xé".as_bytes()[..2];
        assert!(run(cut, EndReason::Silence).is_err());
        assert_eq!(run(cut, EndReason::OutputCap).unwrap(), "x\u{fffd}");
    }
}
