//! AgentBench OS task files: set-up (`create.init` scripts run as separate processes, `start`
//! typed into the agent's shell) and `evaluation.check` scripts run in the task's sandbox.
//!
//! This is the one reader of AgentBench's OS task JSON in edgeact (the `eval os` command
//! converts these tasks for the runtime's judge). Script forms in the data: a string (bash
//! code), `{"code", "language"}` or `{"file", "language"}` with the file relative to the task
//! set's `scripts/<set>/` folder; languages `bash` (default), `python`, `c`, `c++`/`cpp`.

use std::fs::OpenOptions;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

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
                    read_script_file(dir, f)?
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
        if items.is_empty() {
            return Err(OsError::Task(format!("{}: no tasks in the file", path.display())));
        }
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
}

/// Largest script file a task's `file` field may name (AgentBench's largest is a few KiB).
pub const MAX_SCRIPT_FILE_BYTES: u64 = 1 << 20;

/// Largest task file read (AgentBench's largest set is well under 1 MiB).
pub const MAX_TASK_FILE_BYTES: u64 = 64 << 20;

/// Reads the script a task's `file` field names. Task files are data, possibly from someone
/// else, and the script's text ends up in the sandbox (and in the agent's shell history), so
/// the name must stay inside `scripts_dir`: a relative path without `..`, whose resolved
/// location (symbolic links followed) is still under the resolved `scripts_dir`, naming a
/// regular file of at most [`MAX_SCRIPT_FILE_BYTES`].
pub fn read_script_file(scripts_dir: &Path, name: &str) -> Result<String> {
    let relative = Path::new(name);
    let stays_inside = relative
        .components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    if name.is_empty() || !stays_inside {
        return Err(OsError::Task(format!(
            "script file {name:?} must be a relative path inside the task's scripts directory \
             (no leading `/`, no `..`)"
        )));
    }
    let root = scripts_dir.canonicalize().map_err(|e| {
        OsError::Task(format!(
            "scripts directory {} for script file {name:?}: {e} (AgentBench's layouts: \
             data/<set>.json uses scripts/<set>/, data/<N>/<name>.json uses scripts/<N>/)",
            scripts_dir.display()
        ))
    })?;
    let target = root
        .join(relative)
        .canonicalize()
        .map_err(|e| OsError::Task(format!("script file {name:?} in {}: {e}", root.display())))?;
    if !target.starts_with(&root) {
        return Err(OsError::Task(format!(
            "script file {name:?} leads outside the scripts directory {} (to {}) through a symbolic link",
            root.display(),
            target.display()
        )));
    }
    read_regular_file(&target, MAX_SCRIPT_FILE_BYTES, false)
        .map_err(|e| OsError::Task(format!("script file {name:?}: {e}")))
}

/// Reads a regular file of at most `cap` bytes as UTF-8. The file is opened non-blocking (so a
/// FIFO cannot hang the open) and its type checked on the open descriptor before any read, so
/// FIFOs, devices (`/dev/zero`), sockets and directories get a clear error instead of a hang
/// or an endless read. `follow_final_link: false` refuses a symbolic link as the last component.
pub fn read_regular_file(path: &Path, cap: u64, follow_final_link: bool) -> Result<String> {
    let mut flags = libc::O_NONBLOCK | libc::O_CLOEXEC;
    if !follow_final_link {
        flags |= libc::O_NOFOLLOW;
    }
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(path)
        .map_err(|e| OsError::Task(format!("open {}: {e}", path.display())))?;
    let meta = file
        .metadata()
        .map_err(|e| OsError::Task(format!("stat {}: {e}", path.display())))?;
    let kind = meta.file_type();
    if !kind.is_file() {
        let what = if kind.is_dir() {
            "a directory"
        } else if kind.is_fifo() {
            "a FIFO"
        } else if kind.is_char_device() || kind.is_block_device() {
            "a device"
        } else if kind.is_socket() {
            "a socket"
        } else {
            "not a regular file"
        };
        return Err(OsError::Task(format!(
            "{} is {what}; only regular files are read",
            path.display()
        )));
    }
    let too_big = |len: u64| OsError::Task(format!("{} is {len} bytes, over the {cap}-byte limit", path.display()));
    if meta.len() > cap {
        return Err(too_big(meta.len()));
    }
    // The file may grow after the check: read at most one byte past the cap to notice.
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(cap + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| OsError::Task(format!("read {}: {e}", path.display())))?;
    if bytes.len() as u64 > cap {
        return Err(too_big(bytes.len() as u64));
    }
    String::from_utf8(bytes).map_err(|e| OsError::Task(format!("{} is not UTF-8 text: {e}", path.display())))
}

fn read_text(path: &Path) -> Result<String> {
    // The task file is named by the user on the command line, so a symbolic link is followed.
    read_regular_file(path, MAX_TASK_FILE_BYTES, true)
}

fn read_json(path: &Path) -> Result<Value> {
    serde_json::from_str(&read_text(path)?).map_err(|e| OsError::Task(format!("{}: invalid JSON: {e}", path.display())))
}

/// Where a task file's script `file`s live, in AgentBench's two layouts: the dev set
/// `…/data/dev.json` → `…/scripts/dev/`, and the numbered sets `…/data/1/x.json` →
/// `…/scripts/1/` (AgentBench's `configs/tasks/os.yaml`). The first candidate that exists is
/// taken; when none does, the one the path's shape suggests (the error then names it).
pub fn default_scripts_dir(task_file: &Path) -> PathBuf {
    let candidates = scripts_dir_candidates(task_file);
    candidates.iter().find(|d| d.is_dir()).unwrap_or(&candidates[0]).clone()
}

/// The scripts directories [`default_scripts_dir`] considers, most likely first (never empty).
pub fn scripts_dir_candidates(task_file: &Path) -> Vec<PathBuf> {
    let stem = task_file
        .file_stem()
        .map(|s| s.to_os_string())
        .unwrap_or_else(|| "dev".into());
    let parent = match task_file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    // Resolved, so that `.` and `..` give real directory names.
    let parent = parent.canonicalize().unwrap_or(parent);
    let up = |d: &Path| d.parent().map(Path::to_path_buf).unwrap_or_else(|| d.join(".."));
    let dev_layout = up(&parent).join("scripts").join(&stem);
    let numbered_layout = parent.file_name().map(|set| up(&up(&parent)).join("scripts").join(set));
    let parent_is_data = parent.file_name().is_some_and(|n| n == "data");
    let grandparent_is_data = up(&parent).file_name().is_some_and(|n| n == "data");
    match numbered_layout {
        Some(numbered) if grandparent_is_data && !parent_is_data => vec![numbered, dev_layout],
        Some(numbered) => vec![dev_layout, numbered],
        None => vec![dev_layout],
    }
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
        // A file without tasks is an error (it scored 0 of 0).
        for (f, text) in [(&list, "[]"), (&lines, "\n \n")] {
            std::fs::write(f, text).unwrap();
            let e = OsTask::load_all(f, dir.path()).unwrap_err().to_string();
            assert!(e.contains("no tasks"), "{e}");
        }
    }

    /// A scripts directory holding `check/ok.sh`, beside a private file outside it.
    fn scripts_dir_with_secret_outside() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let top = tempfile::tempdir().unwrap();
        let scripts = top.path().join("scripts/dev");
        std::fs::create_dir_all(scripts.join("check")).unwrap();
        std::fs::write(scripts.join("check/ok.sh"), "exit 0").unwrap();
        let secret = top.path().join("secret");
        std::fs::write(&secret, "host secret").unwrap();
        (top, scripts, secret)
    }

    fn file_script(name: &str) -> Value {
        json!({"description": "d", "evaluation": {"check": {"file": name}}})
    }

    #[test]
    fn script_files_cannot_name_host_paths() {
        let (_top, scripts, secret) = scripts_dir_with_secret_outside();
        let ok = OsTask::from_json(&file_script("check/ok.sh"), Some(&scripts)).unwrap();
        assert_eq!(
            ok.evaluation,
            Evaluation::Check {
                scripts: vec![Some(Script::bash("exit 0"))],
                example: None
            }
        );
        // An absolute path and `..` are refused before anything is opened.
        for name in [
            secret.to_str().unwrap(),
            "/etc/passwd",
            "../secret",
            "check/../../secret",
            "",
        ] {
            let e = OsTask::from_json(&file_script(name), Some(&scripts))
                .unwrap_err()
                .to_string();
            assert!(e.contains("must be a relative path inside"), "{name}: {e}");
        }
        // A symbolic link inside the directory that leads out of it is refused too.
        std::os::unix::fs::symlink(&secret, scripts.join("check/escape.sh")).unwrap();
        std::os::unix::fs::symlink("/etc", scripts.join("etc")).unwrap();
        for name in ["check/escape.sh", "etc/passwd"] {
            let e = OsTask::from_json(&file_script(name), Some(&scripts))
                .unwrap_err()
                .to_string();
            assert!(e.contains("leads outside the scripts directory"), "{name}: {e}");
            assert!(!e.contains("host secret"));
        }
        // A link that stays inside is fine.
        std::os::unix::fs::symlink("ok.sh", scripts.join("check/alias.sh")).unwrap();
        assert!(OsTask::from_json(&file_script("check/alias.sh"), Some(&scripts)).is_ok());
        // A missing file names the file.
        let e = OsTask::from_json(&file_script("check/none.sh"), Some(&scripts))
            .unwrap_err()
            .to_string();
        assert!(e.contains("check/none.sh"), "{e}");
    }

    #[test]
    fn script_files_must_be_small_regular_files() {
        let (_top, scripts, _secret) = scripts_dir_with_secret_outside();
        // `/dev/zero` used to be read until memory ran out: refused as a device, inside the
        // directory (a bind mount or copy of it) as well as by path.
        let e = read_regular_file(Path::new("/dev/zero"), MAX_SCRIPT_FILE_BYTES, false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("is a device"), "{e}");
        std::os::unix::fs::symlink("/dev/zero", scripts.join("zero")).unwrap();
        assert!(OsTask::from_json(&file_script("zero"), Some(&scripts)).is_err());
        // A directory.
        let e = OsTask::from_json(&file_script("check"), Some(&scripts))
            .unwrap_err()
            .to_string();
        assert!(e.contains("is a directory"), "{e}");
        // Over the size cap.
        let big = vec![b'#'; MAX_SCRIPT_FILE_BYTES as usize + 1];
        std::fs::write(scripts.join("big.sh"), big).unwrap();
        let e = OsTask::from_json(&file_script("big.sh"), Some(&scripts))
            .unwrap_err()
            .to_string();
        assert!(e.contains("over the 1048576-byte limit"), "{e}");
        // Not UTF-8.
        std::fs::write(scripts.join("bin.sh"), [0xff, 0xfe]).unwrap();
        let e = OsTask::from_json(&file_script("bin.sh"), Some(&scripts))
            .unwrap_err()
            .to_string();
        assert!(e.contains("not UTF-8"), "{e}");
    }

    #[test]
    fn a_fifo_script_file_is_refused_without_hanging() {
        let (_top, scripts, _secret) = scripts_dir_with_secret_outside();
        let fifo = scripts.join("check/fifo.sh");
        match std::process::Command::new("mkfifo").arg(&fifo).status() {
            Ok(s) if s.success() => {}
            other => {
                eprintln!("skipped: cannot create a FIFO with mkfifo ({other:?})");
                return;
            }
        }
        // No writer ever opens it: a blocking open would wait forever.
        let e = OsTask::from_json(&file_script("check/fifo.sh"), Some(&scripts))
            .unwrap_err()
            .to_string();
        assert!(e.contains("is a FIFO"), "{e}");
        // The task file itself as a FIFO is refused the same way.
        let e = OsTask::load(&fifo, 0).unwrap_err().to_string();
        assert!(e.contains("is a FIFO"), "{e}");
    }

    #[test]
    fn scripts_dir_follows_both_agentbench_layouts() {
        let top = tempfile::tempdir().unwrap();
        let set = top.path().join("os_interaction");
        for d in ["data/1", "scripts/1", "scripts/dev"] {
            std::fs::create_dir_all(set.join(d)).unwrap();
        }
        let set = set.canonicalize().unwrap();
        // Dev layout: data/dev.json ↔ scripts/dev/.
        assert_eq!(default_scripts_dir(&set.join("data/dev.json")), set.join("scripts/dev"));
        // AgentBench's numbered sets: data/1/x.json ↔ scripts/1/.
        assert_eq!(default_scripts_dir(&set.join("data/1/x.json")), set.join("scripts/1"));
        // Relative and non-normalised paths resolve the same way.
        let odd = set.join("data/1/../1/x.json");
        assert_eq!(default_scripts_dir(&odd), set.join("scripts/1"));
        // Nothing there: the layout's guess, which the missing-directory error then names.
        assert_eq!(default_scripts_dir(&set.join("data/7/x.json")), set.join("scripts/7"));
        assert_eq!(
            default_scripts_dir(&set.join("data/test.json")),
            set.join("scripts/test")
        );
    }
}
