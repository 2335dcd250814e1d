//! AgentBench task files: the OS interaction JSON (`dev.json`: description, `create.init`,
//! `start`, `evaluation.match|check`) and dbbench JSONL lines, read the way the harness reads
//! them (scripts as `(language, code)`, `file` paths relative to the script directory).

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::Path;

/// A script: `language` is `bash` (default), `python`, `c` or `c++`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Script {
    pub language: String,
    pub code: String,
}

/// `evaluation.match`: the answer must equal `answer` or contain a match of `regex`
/// (after stripping when `strip`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MatchSpec {
    pub answer: Option<String>,
    pub regex: Option<String>,
    pub strip: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OsEvaluation {
    Match(MatchSpec),
    /// Scripts run in order with the answer and the previous outputs as arguments; `None`
    /// entries stand for `example`.
    Check {
        scripts: Vec<Option<Script>>,
        example: Option<Script>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OsTask {
    pub index: usize,
    pub description: String,
    /// `create.init`: run as separate processes before the agent starts.
    pub init: Vec<Script>,
    /// `start`: typed into the agent's own shell before the first turn.
    pub start: Option<Script>,
    pub evaluation: OsEvaluation,
    pub labels: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error("cannot read {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path}: invalid JSON: {source}")]
    Json { path: String, source: serde_json::Error },
    #[error("task {index}: {msg}")]
    Invalid { index: usize, msg: String },
}

fn read(path: &Path) -> Result<String, TaskError> {
    std::fs::read_to_string(path).map_err(|source| TaskError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// AgentBench's `load_script`: a string is bash code; an object has `language` (default
/// bash) and `file` (read from `script_dir`) or `code`.
fn load_script(v: &Value, script_dir: &Path, index: usize) -> Result<Option<Script>, TaskError> {
    let invalid = |msg: String| TaskError::Invalid { index, msg };
    match v {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(Script {
            language: "bash".into(),
            code: s.clone(),
        })),
        Value::Object(o) => {
            let language = match o.get("language") {
                None => "bash".to_string(),
                Some(Value::String(l)) => l.clone(),
                Some(other) => return Err(invalid(format!("script language is not a string: {other}"))),
            };
            if let Some(f) = o.get("file") {
                let f = f
                    .as_str()
                    .ok_or_else(|| invalid("script `file` is not a string".into()))?;
                let code = read(&script_dir.join(f))?;
                Ok(Some(Script { language, code }))
            } else if let Some(c) = o.get("code") {
                let code = c
                    .as_str()
                    .ok_or_else(|| invalid("script `code` is not a string".into()))?;
                Ok(Some(Script {
                    language,
                    code: code.to_string(),
                }))
            } else {
                Err(invalid("script object has neither `file` nor `code`".into()))
            }
        }
        other => Err(invalid(format!("invalid script object: {other}"))),
    }
}

/// Parses one OS task (`index` is its position in the file).
pub fn parse_os_task(item: &Value, index: usize, script_dir: &Path) -> Result<OsTask, TaskError> {
    let invalid = |msg: &str| TaskError::Invalid {
        index,
        msg: msg.to_string(),
    };
    let description = item
        .get("description")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("missing `description`"))?
        .to_string();
    // `"init" in item["create"]`: only an object can hold it (a list never does).
    let mut init = Vec::new();
    if let Some(i) = item
        .get("create")
        .and_then(|c| c.as_object())
        .and_then(|c| c.get("init"))
    {
        match i {
            Value::Array(list) => {
                for s in list {
                    init.extend(load_script(s, script_dir, index)?);
                }
            }
            other => init.extend(load_script(other, script_dir, index)?),
        }
    }
    let start = match item.get("start") {
        Some(s) => load_script(s, script_dir, index)?,
        None => None,
    };
    let ev = item
        .get("evaluation")
        .and_then(Value::as_object)
        .ok_or_else(|| invalid("missing `evaluation`"))?;
    let evaluation = if let Some(m) = ev.get("match") {
        match m {
            Value::String(s) => OsEvaluation::Match(MatchSpec {
                answer: Some(s.clone()),
                regex: None,
                strip: true,
            }),
            Value::Object(o) => OsEvaluation::Match(MatchSpec {
                answer: o.get("answer").and_then(Value::as_str).map(str::to_string),
                regex: o.get("regex").and_then(Value::as_str).map(str::to_string),
                // A dict without `strip` raised KeyError in the harness; treat it as false.
                strip: o.get("strip").and_then(Value::as_bool).unwrap_or(false),
            }),
            _ => return Err(invalid("`evaluation.match` must be a string or an object")),
        }
    } else if let Some(c) = ev.get("check") {
        let scripts = match c {
            Value::Array(list) => list
                .iter()
                .map(|s| load_script(s, script_dir, index))
                .collect::<Result<Vec<_>, _>>()?,
            other => vec![load_script(other, script_dir, index)?],
        };
        let example = match ev.get("example") {
            Some(e) => load_script(e, script_dir, index)?,
            None => None,
        };
        OsEvaluation::Check { scripts, example }
    } else {
        return Err(invalid("`evaluation` needs `match` or `check`"));
    };
    let labels = item
        .get("labels")
        .and_then(Value::as_array)
        .map(|l| l.iter().filter_map(|x| x.as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    Ok(OsTask {
        index,
        description,
        init,
        start,
        evaluation,
        labels,
    })
}

/// Reads an OS task file (`.json` list or object, or `.jsonl`).
pub fn load_os_tasks(path: &Path, script_dir: &Path) -> Result<Vec<OsTask>, TaskError> {
    let text = read(path)?;
    let json_err = |source| TaskError::Json {
        path: path.display().to_string(),
        source,
    };
    let items: Vec<Value> = if path.extension().is_some_and(|e| e == "jsonl") {
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(serde_json::from_str)
            .collect::<Result<_, _>>()
            .map_err(json_err)?
    } else {
        match serde_json::from_str(&text).map_err(json_err)? {
            Value::Array(a) => a,
            obj @ Value::Object(_) => vec![obj],
            _ => {
                return Err(TaskError::Invalid {
                    index: 0,
                    msg: "the file holds neither a list nor an object".into(),
                })
            }
        }
    };
    items
        .iter()
        .enumerate()
        .map(|(i, v)| parse_os_task(v, i, script_dir))
        .collect()
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
