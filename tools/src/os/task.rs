//! AgentBench OS task files: set-up (`create.init` scripts run as separate processes, `start`
//! typed into the agent's shell) and `evaluation.check` scripts run in the task's sandbox.
//!
//! Script forms in the data: a string (bash code), `{"code", "language"}` or `{"file",
//! "language"}` with the file relative to the task set's `scripts/<set>/` folder; languages
//! `bash` (default), `python`, `c`, `c++`/`cpp`.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{OsError, OsSandbox, Result};

/// Language of a task script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScriptLanguage {
    /// `bash -c`.
    Bash,
    /// `python3 -c`.
    Python,
    /// Compiled with `gcc` inside the sandbox.
    C,
    /// Compiled with `g++` inside the sandbox.
    Cpp,
}

/// A script with its source code loaded.
#[derive(Debug, Clone)]
pub struct Script {
    /// Interpreter or compiler.
    pub language: ScriptLanguage,
    /// Source code.
    pub code: String,
}

impl Script {
    /// A bash script.
    pub fn bash(code: impl Into<String>) -> Self {
        Self {
            language: ScriptLanguage::Bash,
            code: code.into(),
        }
    }

    /// Parses one script entry; `file` entries are read from `scripts_dir`.
    pub fn from_json(v: &Value, scripts_dir: Option<&Path>) -> Result<Self> {
        match v {
            Value::String(s) => Ok(Self::bash(s.clone())),
            Value::Object(o) => {
                let language = match o.get("language").and_then(Value::as_str).unwrap_or("bash") {
                    "bash" | "sh" => ScriptLanguage::Bash,
                    "python" | "python3" => ScriptLanguage::Python,
                    "c" => ScriptLanguage::C,
                    "c++" | "cpp" => ScriptLanguage::Cpp,
                    other => return Err(OsError::Task(format!("unknown script language {other:?}"))),
                };
                let code = if let Some(c) = o.get("code").and_then(Value::as_str) {
                    c.to_string()
                } else if let Some(f) = o.get("file").and_then(Value::as_str) {
                    let dir = scripts_dir
                        .ok_or_else(|| OsError::Task(format!("script file {f:?} needs a scripts directory")))?;
                    let p = dir.join(f);
                    std::fs::read_to_string(&p).map_err(|e| OsError::Task(format!("read {}: {e}", p.display())))?
                } else {
                    return Err(OsError::Task(format!("script without code or file: {v}")));
                };
                Ok(Self { language, code })
            }
            other => Err(OsError::Task(format!("invalid script entry: {other}"))),
        }
    }
}

/// How a task is judged.
#[derive(Debug, Clone)]
pub enum Evaluation {
    /// Compare the answer with a string or regex (judged by the agent's judge).
    Match(Value),
    /// Run scripts in the task's sandbox; every one must exit 0. `None` = the example script.
    Check {
        /// The check list.
        scripts: Vec<Option<Script>>,
        /// `evaluation.example`.
        example: Option<Script>,
    },
}

/// One OS task.
#[derive(Debug, Clone)]
pub struct OsTask {
    /// The question shown to the model.
    pub description: String,
    /// `create.init` scripts, run before the agent starts.
    pub init: Vec<Script>,
    /// Typed into the agent's shell before it starts.
    pub start: Option<String>,
    /// How the answer is judged.
    pub evaluation: Evaluation,
}

impl OsTask {
    /// Parses a task object. `scripts_dir` resolves `file` references (e.g.
    /// `data/os_interaction/scripts/dev`).
    pub fn from_json(v: &Value, scripts_dir: Option<&Path>) -> Result<Self> {
        let description = v
            .get("description")
            .and_then(Value::as_str)
            .ok_or_else(|| OsError::Task("task has no description".into()))?
            .to_string();
        let mut init = Vec::new();
        if let Some(i) = v.get("create").and_then(|c| c.get("init")) {
            match i {
                Value::Null => {}
                Value::Array(a) => {
                    for s in a {
                        init.push(Script::from_json(s, scripts_dir)?);
                    }
                }
                s => init.push(Script::from_json(s, scripts_dir)?),
            }
        }
        let start = match v.get("start") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            // A start given as a script object: only its code is typed.
            Some(other) => Some(Script::from_json(other, scripts_dir)?.code),
        };
        let ev = v
            .get("evaluation")
            .ok_or_else(|| OsError::Task("task has no evaluation".into()))?;
        let evaluation = if let Some(m) = ev.get("match") {
            Evaluation::Match(m.clone())
        } else if let Some(c) = ev.get("check") {
            let example = match ev.get("example") {
                None | Some(Value::Null) => None,
                Some(e) => Some(Script::from_json(e, scripts_dir)?),
            };
            let list: Vec<Value> = match c {
                Value::Array(a) => a.clone(),
                other => vec![other.clone()],
            };
            let mut scripts = Vec::new();
            for s in &list {
                scripts.push(if s.is_null() {
                    None
                } else {
                    Some(Script::from_json(s, scripts_dir)?)
                });
            }
            Evaluation::Check { scripts, example }
        } else {
            return Err(OsError::Task("evaluation has neither match nor check".into()));
        };
        Ok(Self {
            description,
            init,
            start,
            evaluation,
        })
    }

    /// Reads a task file (one object, or a list and an index).
    pub fn load(path: &Path, index: usize) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| OsError::Task(format!("read {}: {e}", path.display())))?;
        let v: Value = serde_json::from_str(&text).map_err(|e| OsError::Task(format!("{}: {e}", path.display())))?;
        let obj = match &v {
            Value::Array(a) => a
                .get(index)
                .ok_or_else(|| OsError::Task(format!("no task {index} in {}", path.display())))?,
            other => other,
        };
        Self::from_json(obj, Some(&default_scripts_dir(path)))
    }

    /// Set-up as the harness did: every init script as a separate process (exit codes not
    /// checked), then `start` typed into the agent's shell (its output discarded).
    pub fn setup(&self, sb: &mut OsSandbox) -> Result<()> {
        for s in &self.init {
            sb.run_script(s, &[])?;
        }
        if let Some(start) = &self.start {
            sb.run(start)?;
        }
        Ok(())
    }

    /// Runs the check scripts with the answer (`"None"` when there is none) and each previous
    /// script's output as arguments; `Ok(None)` for match-type tasks.
    pub fn check(&self, sb: &mut OsSandbox, answer: Option<&str>) -> Result<Option<bool>> {
        let Evaluation::Check { scripts, example } = &self.evaluation else {
            return Ok(None);
        };
        let mut params: Vec<String> = vec![answer.unwrap_or("None").to_string()];
        for s in scripts {
            let script = match s {
                Some(s) => s,
                None => example
                    .as_ref()
                    .ok_or_else(|| OsError::Task("check uses a missing example script".into()))?,
            };
            let refs: Vec<&str> = params.iter().map(|s| s.as_str()).collect();
            let out = sb.run_script(script, &refs)?;
            if !out.success() {
                return Ok(Some(false));
            }
            params.push(String::from_utf8_lossy(&out.output).into_owned());
        }
        Ok(Some(true))
    }
}

/// `…/os_interaction/data/dev.json` → `…/os_interaction/scripts/dev`.
pub fn default_scripts_dir(task_file: &Path) -> PathBuf {
    let stem = task_file.file_stem().and_then(|s| s.to_str()).unwrap_or("dev");
    let set = task_file.parent().and_then(|d| d.parent()).unwrap_or(Path::new("."));
    set.join("scripts").join(stem)
}
