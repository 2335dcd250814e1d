//! OS tasks: preparing the task's machine (init scripts, the `start` command typed into the
//! agent's shell), running the loop and judging with `match` or the `check` scripts.
//!
//! The machine is anything that is both the agent's shell ([`Tool`]) and a judge
//! [`ScriptRunner`]; the sandboxed implementation comes from `edgeact_tools::os`.

use edgeact_runtime::agent::judge::{judge_os, ScriptRunner};
use edgeact_runtime::agent::tasks::OsTask;
use edgeact_runtime::agent::{run_os, Event, LanguageModel, LoopLimits, Run, Tool};

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

/// Runs one OS task in a fresh sandbox.
pub fn run_and_judge(
    task: &OsTask,
    model: &mut dyn LanguageModel,
    limits: LoopLimits,
    on_event: &mut dyn FnMut(Event<'_>),
) -> anyhow::Result<(Run, bool)> {
    let _ = (task, model, limits, on_event);
    anyhow::bail!("OS tasks need the sandbox of edgeact_tools::os, which this build does not have yet")
}

/// The agent's shell for `edgeact agent os`.
pub struct OsTool;

impl OsTool {
    pub fn start_interactive() -> anyhow::Result<OsTool> {
        anyhow::bail!("`agent os` needs the sandbox of edgeact_tools::os, which this build does not have yet")
    }
}

impl Tool for OsTool {
    fn execute(&mut self, _input: &str) -> anyhow::Result<String> {
        anyhow::bail!("no sandbox")
    }
}
