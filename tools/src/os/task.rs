//! AgentBench OS task files: set-up (`create.init` scripts run as separate processes, `start`
//! typed into the agent's shell) and `evaluation.check` scripts run in the task's sandbox.
//!
//! This is the one reader of AgentBench's OS task JSON in edgeact (the `eval os` command
//! converts these tasks for the runtime's judge). Script forms in the data: a string (bash
//! code), `{"code", "language"}` or `{"file", "language"}` with the file relative to the task
//! set's `scripts/<set>/` folder; languages `bash` (default), `python`, `c`, `c++`/`cpp`.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{OsError, Result, ShellSession};

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
#[derive(Debug, Clone, PartialEq, Eq)]
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

    /// Parses one script entry as AgentBench's `load_script` does: a string is bash code; an
    /// object has `language` (default bash) and `file` (read from `scripts_dir`; it wins over
    /// `code`) or `code`. `null` is no script.
    pub fn from_json(v: &Value, scripts_dir: Option<&Path>) -> Result<Option<Self>> {
        match v {
            Value::Null => Ok(None),
            Value::String(s) => Ok(Some(Self::bash(s.clone()))),
            Value::Object(o) => {
                let language = match o.get("language") {
                    None => ScriptLanguage::Bash,
                    Some(Value::String(l)) => ScriptLanguage::from_name(l).ok_or_else(|| {
                        OsError::Task(format!("unknown script language {l:?} (bash, python, c, c++)"))
                    })?,
                    Some(other) => return Err(OsError::Task(format!("script language is not a string: {other}"))),
                };
                let code = if let Some(f) = o.get("file") {
                    let f = f
                        .as_str()
                        .ok_or_else(|| OsError::Task(format!("script `file` is not a string: {f}")))?;
                    let dir = scripts_dir
                        .ok_or_else(|| OsError::Task(format!("script file {f:?} needs a scripts directory")))?;
                    let p = dir.join(f);
                    std::fs::read_to_string(&p).map_err(|e| OsError::Task(format!("read {}: {e}", p.display())))?
                } else if let Some(c) = o.get("code") {
                    c.as_str()
                        .ok_or_else(|| OsError::Task(format!("script `code` is not a string: {c}")))?
                        .to_string()
                } else {
                    return Err(OsError::Task(format!(
                        "script object has neither `file` nor `code`: {v}"
                    )));
                };
                Ok(Some(Self { language, code }))
            }
            other => Err(OsError::Task(format!("invalid script entry: {other}"))),
        }
    }
}

impl ScriptLanguage {
    /// The names the task data uses (`sh`, `python3` and `cpp` accepted as aliases).
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "bash" | "sh" => ScriptLanguage::Bash,
            "python" | "python3" => ScriptLanguage::Python,
            "c" => ScriptLanguage::C,
            "c++" | "cpp" => ScriptLanguage::Cpp,
            _ => return None,
        })
    }

    /// The canonical name (`bash`, `python`, `c`, `c++`).
    pub fn name(self) -> &'static str {
        match self {
            ScriptLanguage::Bash => "bash",
            ScriptLanguage::Python => "python",
            ScriptLanguage::C => "c",
            ScriptLanguage::Cpp => "c++",
        }
    }
}

/// `evaluation.match`: the answer must equal `answer`, or else contain a match of `regex`
/// (after `.strip()` when `strip`). A plain string in the data means `{answer, strip: true}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchSpec {
    /// The exact expected answer.
    pub answer: Option<String>,
    /// A Python regular expression searched in the answer.
    pub regex: Option<String>,
    /// Strip whitespace from the answer first.
    pub strip: bool,
}

/// How a task is judged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Evaluation {
    /// Compare the answer with a string or regex (judged by the agent's judge).
    Match(MatchSpec),
    /// Run scripts in the task's sandbox with the answer and the previous outputs as arguments;
    /// every one must exit 0. `None` = the example script.
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
    /// `create.init` scripts, run as separate processes before the agent starts.
    pub init: Vec<Script>,
    /// `start`: typed into the agent's shell before it starts (a script object's code).
    pub start: Option<String>,
    /// How the answer is judged.
    pub evaluation: Evaluation,
}

impl OsTask {
    /// Parses a task object as the harness reads it. `scripts_dir` resolves `file` references
    /// (e.g. `data/os_interaction/scripts/dev`).
    pub fn from_json(v: &Value, scripts_dir: Option<&Path>) -> Result<Self> {
        let description = v
            .get("description")
            .and_then(Value::as_str)
            .ok_or_else(|| OsError::Task("task has no description".into()))?
            .to_string();
        // `create.init`: one script or a list (null entries skipped); `create.local` names an
        // image the harness never read.
        let mut init = Vec::new();
        match v.get("create").and_then(|c| c.get("init")) {
            Some(Value::Array(list)) => {
                for s in list {
                    init.extend(Script::from_json(s, scripts_dir)?);
                }
            }
            Some(other) => init.extend(Script::from_json(other, scripts_dir)?),
            None => {}
        }
        let start = match v.get("start") {
            // Only the code is typed, whatever language the object names.
            Some(s) => Script::from_json(s, scripts_dir)?.map(|s| s.code),
            None => None,
        };
        let ev = v
            .get("evaluation")
            .and_then(Value::as_object)
            .ok_or_else(|| OsError::Task("task has no `evaluation` object".into()))?;
        let evaluation = if let Some(m) = ev.get("match") {
            let text = |k: &str| m.get(k).and_then(Value::as_str).map(str::to_string);
            Evaluation::Match(match m {
                Value::String(s) => MatchSpec {
                    answer: Some(s.clone()),
                    regex: None,
                    strip: true,
                },
                Value::Object(o) => MatchSpec {
                    answer: text("answer"),
                    regex: text("regex"),
                    // The harness read `strip` with `[]`: absent was a KeyError (a failed
                    // judgement); taken as false here.
                    strip: o.get("strip").and_then(Value::as_bool).unwrap_or(false),
                },
                other => {
                    return Err(OsError::Task(format!(
                        "`evaluation.match` must be a string or an object: {other}"
                    )))
                }
            })
        } else if let Some(c) = ev.get("check") {
            let example = match ev.get("example") {
                Some(e) => Script::from_json(e, scripts_dir)?,
                None => None,
            };
            let scripts = match c {
                Value::Array(list) => list
                    .iter()
                    .map(|s| Script::from_json(s, scripts_dir))
                    .collect::<Result<Vec<_>>>()?,
                other => vec![Script::from_json(other, scripts_dir)?],
            };
            Evaluation::Check { scripts, example }
        } else {
            return Err(OsError::Task("evaluation has neither `match` nor `check`".into()));
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
        let v = read_json(path)?;
        let obj = match &v {
            Value::Array(a) => a
                .get(index)
                .ok_or_else(|| OsError::Task(format!("no task {index} in {}", path.display())))?,
            other => other,
        };
        Self::from_json(obj, Some(&default_scripts_dir(path)))
    }

    /// Reads every task of a file: a `.json` list (or a single object) or `.jsonl` lines, with
    /// `file` scripts relative to `scripts_dir`.
    pub fn load_all(path: &Path, scripts_dir: &Path) -> Result<Vec<Self>> {
        let items: Vec<Value> = if path.extension().is_some_and(|e| e == "jsonl") {
            read_text(path)?
                .lines()
                .enumerate()
                .filter(|(_, l)| !l.trim().is_empty())
                .map(|(n, l)| {
                    serde_json::from_str(l)
                        .map_err(|e| OsError::Task(format!("{}:{}: invalid JSON: {e}", path.display(), n + 1)))
                })
                .collect::<Result<_>>()?
        } else {
            match read_json(path)? {
                Value::Array(a) => a,
                obj @ Value::Object(_) => vec![obj],
                _ => {
                    return Err(OsError::Task(format!(
                        "{}: holds neither a list of tasks nor a task",
                        path.display()
                    )))
                }
            }
        };
        items
            .iter()
            .enumerate()
            .map(|(i, v)| {
                Self::from_json(v, Some(scripts_dir))
                    .map_err(|e| OsError::Task(format!("{} task {i}: {e}", path.display())))
            })
            .collect()
    }

    /// Set-up as the harness did: every init script as a separate process (exit codes not
    /// checked), then `start` typed into the agent's shell (its output discarded).
    pub fn setup(&self, sb: &mut dyn ShellSession) -> Result<()> {
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
    pub fn check(&self, sb: &mut dyn ShellSession, answer: Option<&str>) -> Result<Option<bool>> {
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

fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| OsError::Task(format!("read {}: {e}", path.display())))
}

fn read_json(path: &Path) -> Result<Value> {
    serde_json::from_str(&read_text(path)?).map_err(|e| OsError::Task(format!("{}: invalid JSON: {e}", path.display())))
}

/// `…/os_interaction/data/dev.json` → `…/os_interaction/scripts/dev`.
pub fn default_scripts_dir(task_file: &Path) -> PathBuf {
    let stem = task_file.file_stem().and_then(|s| s.to_str()).unwrap_or("dev");
    let set = task_file.parent().and_then(|d| d.parent()).unwrap_or(Path::new("."));
    set.join("scripts").join(stem)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn script_forms() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.py"), "print(1)").unwrap();
        let d = Some(dir.path());
        assert_eq!(Script::from_json(&json!(null), d).unwrap(), None);
        assert_eq!(Script::from_json(&json!("ls"), d).unwrap(), Some(Script::bash("ls")));
        // `file` wins over `code`, as in the harness's `load_script`.
        let s = Script::from_json(&json!({"language": "python", "file": "a.py", "code": "x"}), d)
            .unwrap()
            .unwrap();
        assert_eq!((s.language, s.code.as_str()), (ScriptLanguage::Python, "print(1)"));
        let s = Script::from_json(&json!({"code": "echo"}), None).unwrap().unwrap();
        assert_eq!(s, Script::bash("echo"));
        for bad in [
            json!({"language": "ruby", "code": "x"}),
            json!({"language": 3, "code": "x"}),
            json!({"language": "bash"}),
            json!({"file": "a.py"}),
            json!(5),
        ] {
            assert!(Script::from_json(&bad, None).is_err(), "{bad}");
        }
        for l in ["bash", "python", "c", "c++"] {
            assert_eq!(ScriptLanguage::from_name(l).map(ScriptLanguage::name), Some(l));
        }
    }

    #[test]
    fn task_fields() {
        let t = OsTask::from_json(
            &json!({"description": "d", "create": {"local": "default", "init": ["a", null, {"code": "b"}]},
                    "start": {"language": "python", "code": "sleep 1 &"},
                    "evaluation": {"match": "42"}}),
            None,
        )
        .unwrap();
        assert_eq!(t.init, vec![Script::bash("a"), Script::bash("b")]);
        assert_eq!(t.start.as_deref(), Some("sleep 1 &"));
        let want = MatchSpec {
            answer: Some("42".into()),
            regex: None,
            strip: true,
        };
        assert_eq!(t.evaluation, Evaluation::Match(want));
        let t = OsTask::from_json(
            &json!({"description": "d", "create": {"init": "x"},
                    "evaluation": {"match": {"regex": "^a$"}}}),
            None,
        )
        .unwrap();
        assert_eq!(t.init, vec![Script::bash("x")]);
        assert_eq!(
            t.evaluation,
            Evaluation::Match(MatchSpec {
                answer: None,
                regex: Some("^a$".into()),
                strip: false
            })
        );
        let t = OsTask::from_json(
            &json!({"description": "d", "evaluation": {"check": [null, "c"], "example": "e"}}),
            None,
        )
        .unwrap();
        assert_eq!(
            t.evaluation,
            Evaluation::Check {
                scripts: vec![None, Some(Script::bash("c"))],
                example: Some(Script::bash("e"))
            }
        );
        for bad in [
            json!({"evaluation": {"match": "1"}}),
            json!({"description": "d"}),
            json!({"description": "d", "evaluation": {}}),
            json!({"description": "d", "evaluation": {"match": 3}}),
        ] {
            assert!(OsTask::from_json(&bad, None).is_err(), "{bad}");
        }
    }

    #[test]
    fn load_all_reads_lists_objects_and_jsonl() {
        let dir = tempfile::tempdir().unwrap();
        let task = json!({"description": "d", "evaluation": {"match": "1"}});
        let list = dir.path().join("t.json");
        std::fs::write(&list, json!([task, task]).to_string()).unwrap();
        assert_eq!(OsTask::load_all(&list, dir.path()).unwrap().len(), 2);
        let one = dir.path().join("one.json");
        std::fs::write(&one, task.to_string()).unwrap();
        assert_eq!(OsTask::load_all(&one, dir.path()).unwrap().len(), 1);
        let lines = dir.path().join("t.jsonl");
        std::fs::write(&lines, format!("{task}\n\n{task}\n")).unwrap();
        assert_eq!(OsTask::load_all(&lines, dir.path()).unwrap().len(), 2);
        // Errors name the file and the task.
        std::fs::write(&list, json!([task, {"description": "x"}]).to_string()).unwrap();
        let e = OsTask::load_all(&list, dir.path()).unwrap_err().to_string();
        assert!(e.contains("t.json task 1"), "{e}");
        std::fs::write(&lines, "{\n").unwrap();
        let e = OsTask::load_all(&lines, dir.path()).unwrap_err().to_string();
        assert!(e.contains("t.jsonl:1"), "{e}");
    }
}
