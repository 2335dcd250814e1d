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

#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error("cannot read {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path}: invalid JSON: {source}")]
    Json { path: String, source: serde_json::Error },
}

fn read(path: &Path) -> Result<String, TaskError> {
    std::fs::read_to_string(path).map_err(|source| TaskError::Io {
        path: path.display().to_string(),
        source,
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
    let json_err = |source| TaskError::Json {
        path: path.display().to_string(),
        source,
    };
    if path.extension().is_some_and(|e| e == "json") {
        return serde_json::from_str(&text).map_err(json_err);
    }
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).map_err(json_err))
        .collect()
}
