//! OS task files for `eval os`: read by the tool crate's parser ([`edgeact_tools::os::OsTask`],
//! the one reader of AgentBench's OS task JSON) and handed to the runtime's loop and judge as
//! its plain [`OsTask`] (the runtime does not depend on the tool crate).

use anyhow::Context;
use edgeact_runtime::agent::tasks::{MatchSpec, OsEvaluation, OsTask, Script};
use edgeact_tools::os::task::{Evaluation, OsTask as ToolTask, Script as ToolScript};
use std::path::Path;

/// Reads every task of an OS task file (`.json` list or object, `.jsonl`); `file` scripts are
/// read from `scripts_dir`.
pub fn load_os_tasks(path: &Path, scripts_dir: &Path) -> anyhow::Result<Vec<OsTask>> {
    let tasks =
        ToolTask::load_all(path, scripts_dir).with_context(|| format!("reading OS tasks {}", path.display()))?;
    Ok(tasks.into_iter().enumerate().map(|(i, t)| to_runtime(i, t)).collect())
}

fn script(s: ToolScript) -> Script {
    Script {
        language: s.language.name().to_string(),
        code: s.code,
    }
}

/// The runtime's view of task `index`.
pub fn to_runtime(index: usize, t: ToolTask) -> OsTask {
    let evaluation = match t.evaluation {
        Evaluation::Match(m) => OsEvaluation::Match(MatchSpec {
            answer: m.answer,
            regex: m.regex,
            strip: m.strip,
        }),
        Evaluation::Check { scripts, example } => OsEvaluation::Check {
            scripts: scripts.into_iter().map(|s| s.map(script)).collect(),
            example: example.map(script),
        },
    };
    OsTask {
        index,
        description: t.description,
        init: t.init.into_iter().map(script).collect(),
        // `start` is typed into the agent's shell whatever its language.
        start: t.start.map(|code| Script {
            language: "bash".into(),
            code,
        }),
        evaluation,
    }
}
