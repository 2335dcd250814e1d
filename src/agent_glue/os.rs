//! OS tasks: preparing the task's machine (init scripts, the `start` command typed into the
//! agent's shell), running the loop and judging with `match` or the `check` scripts.
//!
//! The machine is anything that is both the agent's shell ([`Tool`]) and a judge
//! [`ScriptRunner`]; the sandboxed implementation comes from `edgeact_tools::os`.

use anyhow::{bail, Context};
use edgeact_runtime::agent::judge::{judge_os, ScriptRunner};
use edgeact_runtime::agent::tasks::{OsTask, Script};
use edgeact_runtime::agent::{run_os, Event, LanguageModel, LoopLimits, Run, Tool};
use edgeact_tools::os::{OsSandbox, RootFs, SandboxConfig, Script as ToolScript, ScriptLanguage};
use std::path::PathBuf;

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

/// Sandbox settings for the agent's machine.
#[derive(Clone, Debug, Default)]
pub struct MachineOptions {
    /// A prepared root file system (`edgeact rootfs build`); default: the host's, read-only.
    pub rootfs: Option<PathBuf>,
    /// Strip terminal escapes, `\r` and the prompt from observations (for models not trained
    /// on raw terminal output; AgentLM was).
    pub clean_output: bool,
}

/// A task's machine: the sandbox of `edgeact_tools::os`.
pub struct SandboxMachine {
    sandbox: OsSandbox,
}

impl SandboxMachine {
    pub fn start(opts: &MachineOptions) -> anyhow::Result<SandboxMachine> {
        let mut cfg = SandboxConfig::default();
        if let Some(dir) = &opts.rootfs {
            cfg.root = RootFs::Dir(dir.clone());
        }
        cfg.raw_terminal = !opts.clean_output;
        let sandbox = OsSandbox::start(cfg).context("starting the OS sandbox")?;
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
