//! OS tasks: preparing the task's machine (init scripts, the `start` command typed into the
//! agent's shell), running the loop and judging with `match` or the `check` scripts.
//!
//! The machine is anything that is both the agent's shell ([`Tool`]) and a judge
//! [`ScriptRunner`]; the implementations come from `edgeact_tools::os`: the namespace sandbox
//! (default) or a Docker/Podman container (`--backend`).

use anyhow::{bail, Context};
use edgeact_runtime::agent::judge::{judge_os, ScriptRunner};
use edgeact_runtime::agent::tasks::{OsTask, Script};
use edgeact_runtime::agent::{run_os, Event, LanguageModel, LoopLimits, Run, Tool};
use edgeact_tools::os::container::{self, DEFAULT_IMAGE};
use edgeact_tools::os::{
    rootfs, ContainerConfig, ContainerRuntime, ContainerSandbox, OsSandbox, RootFs, SandboxConfig,
    Script as ToolScript, ScriptLanguage, ShellSession,
};
use std::path::{Path, PathBuf};

/// A task's machine: the agent's persistent shell plus independent script runs.
pub trait OsMachine: Tool + ScriptRunner {}
impl<T: Tool + ScriptRunner> OsMachine for T {}

/// Prepares `machine` for `task`, runs the agent and judges its answer.
pub fn run_and_judge_on<M: OsMachine>(
    machine: &mut M,
    task: &OsTask,
    model: &mut dyn LanguageModel,
    limits: LoopLimits,
    on_event: &mut dyn FnMut(Event<'_>),
) -> anyhow::Result<(Run, bool)> {
    // Init scripts run as separate processes; the harness ignored their exit codes.
    for s in &task.init {
        machine.run_script(s, &[])?;
    }
    // `start` is typed into the agent's own shell (whatever its language), so its effects
    // (background jobs, cwd, variables) persist into the session.
    if let Some(s) = &task.start {
        machine.execute(&s.code)?;
    }
    let run = run_os(model, machine, &task.description, limits, on_event)?;
    let ok = judge_os(run.answer.as_deref(), &task.evaluation, machine)?;
    Ok((run, ok))
}

/// Which isolation runs the agent's machine (`--backend`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// Linux namespaces, no extra software (the default).
    #[default]
    Namespace,
    /// A Docker container (needs the docker CLI and a reachable daemon).
    Docker,
    /// A Podman container (daemonless).
    Podman,
}

/// Sandbox settings for the agent's machine.
#[derive(Clone, Debug, Default)]
pub struct MachineOptions {
    /// A prepared root file system (`edgeact rootfs build`); default: the host's, read-only.
    /// Container backends import it as their default image when that is missing.
    pub rootfs: Option<PathBuf>,
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
        if let (Some(dir), Backend::Namespace) = (&opts.rootfs, opts.backend) {
            cfg.root = RootFs::Dir(dir.clone());
        }
        cfg.raw_terminal = !opts.clean_output;
        let sandbox = start_session(opts.backend, cfg, opts.image.as_deref(), opts.rootfs.as_deref())?;
        Ok(SandboxMachine { sandbox })
    }
}

impl Tool for SandboxMachine {
    fn execute(&mut self, code: &str) -> anyhow::Result<String> {
        Ok(self.sandbox.run(code)?.output)
    }
}

impl ScriptRunner for SandboxMachine {
    fn run_script(&mut self, script: &Script, args: &[String]) -> anyhow::Result<(i32, String)> {
        let language = match script.language.as_str() {
            "bash" | "sh" => ScriptLanguage::Bash,
            "python" | "python3" => ScriptLanguage::Python,
            "c" => ScriptLanguage::C,
            "c++" | "cpp" => ScriptLanguage::Cpp,
            other => bail!("unsupported script language {other:?} (bash, python, c, c++)"),
        };
        let s = ToolScript {
            language,
            code: script.code.clone(),
        };
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = self.sandbox.run_script(&s, &refs)?;
        Ok((out.code, String::from_utf8_lossy(&out.output).into_owned()))
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
    run_and_judge_on(&mut machine, task, model, limits, on_event)
}
