//! AgentBench tasks as the loop and the judges use them: dbbench JSONL lines (read here) and
//! OS interaction tasks (description, `create.init`, `start`, `evaluation.match|check`).
//!
//! OS task files have one parser, [`edgeact_tools::os::OsTask`] (the tool crate owns it because
//! the sandbox runs the same scripts and confines their `file` references); its types are
//! re-exported here so the agent's callers need one import.

pub use edgeact_tools::os::task::{Evaluation, MatchSpec, OsTask, Script, ScriptLanguage};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::Path;

/// Reads every task of an OS task file (`.json` list or object, `.jsonl`); `file` scripts are
/// read from `scripts_dir`.
pub fn load_os_tasks(path: &Path, scripts_dir: &Path) -> anyhow::Result<Vec<OsTask>> {
    OsTask::load_all(path, scripts_dir).map_err(|e| anyhow::anyhow!("reading OS tasks {}: {e}", path.display()))
}

/// The largest task file read (AgentBench's dbbench dev set is under 1 MiB).
pub const MAX_TASK_FILE_BYTES: u64 = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// The causes are part of the messages, not `source`s (so `{:#}` prints them once).
    #[error("cannot read {path}: {cause}")]
    Io { path: String, cause: std::io::Error },
    #[error("{path}: invalid JSON: {cause}")]
    Json { path: String, cause: serde_json::Error },
    #[error("{path}: no tasks in the file")]
    Empty { path: String },
}

fn read(path: &Path) -> Result<String, TaskError> {
    edgeact_runtime::files::read_regular_text(path, MAX_TASK_FILE_BYTES).map_err(|cause| TaskError::Io {
        path: path.display().to_string(),
        cause,
    })
}

/// One dbbench task (a line of `dev.jsonl`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DbTask {
    pub description: String,
    #[serde(default)]
    pub add_description: String,
    /// Expected answer values (SELECT-like types); for INSERT/UPDATE the gold SQL.
    #[serde(default)]
    pub label: Vec<Value>,
    /// `str()` of the gold table-hash query's result, for INSERT/DELETE/UPDATE.
    #[serde(default)]
    pub answer_md5: Option<String>,
    #[serde(rename = "type", default)]
    pub types: Vec<String>,
    /// `{table_name, table_info: {columns, rows}}`, handed to the SQL executor.
    pub table: Value,
    /// Gold SQL, where the data has it (`{query, length}`).
    #[serde(default)]
    pub sql: Option<Value>,
}

impl DbTask {
    /// `type[0]`, the category the accuracy is reported under.
    pub fn kind(&self) -> &str {
        self.types.first().map_or("other", String::as_str)
    }

    /// Judged by the table hash (INSERT/DELETE/UPDATE) rather than the answer.
    pub fn is_mutation(&self) -> bool {
        matches!(self.kind(), "INSERT" | "DELETE" | "UPDATE")
    }

    pub fn table_name(&self) -> Option<&str> {
        self.table.get("table_name").and_then(Value::as_str)
    }
}

/// Reads a dbbench file (`.jsonl`, or a `.json` list).
pub fn load_db_tasks(path: &Path) -> Result<Vec<DbTask>, TaskError> {
    let text = read(path)?;
    let tasks: Vec<DbTask> = if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(&text).map_err(|cause| TaskError::Json {
            path: path.display().to_string(),
            cause,
        })?
    } else {
        // Each line is parsed alone: its error names the file's line.
        text.lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(n, l)| {
                serde_json::from_str(l).map_err(|cause| TaskError::Json {
                    path: format!("{}:{}", path.display(), n + 1),
                    cause,
                })
            })
            .collect::<Result<_, _>>()?
    };
    if tasks.is_empty() {
        return Err(TaskError::Empty {
            path: path.display().to_string(),
        });
    }
    Ok(tasks)
}
