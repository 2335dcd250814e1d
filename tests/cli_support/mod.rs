//! Shared by the tests that drive the `edgeact` binary (`eval_cli`, `eval_batched`,
//! `serve_clients`): where the fixtures and models are, running the binary, the DB dev tasks
//! and the OS sandbox root to use.
//!
//! Set `EDGEACT_SHARED` to relocate the shared data directory (default: `../shared` beside the
//! checkout).
#![allow(dead_code)]

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn shared() -> PathBuf {
    std::env::var_os("EDGEACT_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("../shared"))
}

/// An agent fixture under `tests/fixtures/agent`.
pub fn fixture(name: &str) -> PathBuf {
    repo().join("tests/fixtures/agent").join(name)
}

/// stories260K (F32), the shared tiny model.
pub fn tiny_model() -> PathBuf {
    shared().join("models/stories260K/stories260K-f32-v3.gguf")
}

/// SmolLM2-135M-Instruct Q4_1 from `scripts/fetch-smollm2.sh` (repo `.cache/models/`, or
/// `~/.cache/models/`), if it was fetched.
pub fn smollm2() -> Option<PathBuf> {
    let name = "SmolLM2-135M-Instruct.Q4_1.gguf";
    let mut places = vec![repo().join(".cache/models").join(name)];
    if let Some(h) = std::env::var_os("HOME") {
        places.push(PathBuf::from(h).join(".cache/models").join(name));
    }
    places.into_iter().find(|p| p.is_file())
}

/// Runs the binary with `args` and waits for it.
pub fn edgeact(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_edgeact"))
        .args(args)
        .output()
        .expect("run edgeact")
}

/// The DB dev tasks of the fixture set.
pub fn db_tasks() -> Vec<Value> {
    std::fs::read_to_string(fixture("dbbench_dev.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The replies of a scripted DB trajectory for dev task `t`: a mutating task runs its gold
/// statement (`right`) or a harmless SELECT, then answers `[]`; any other task runs a SELECT,
/// then answers its labels (`right`) or labels with the first one changed. With `thoughts`,
/// free text and stray whitespace around the actions, as a model writes them.
pub fn db_replies(t: &Value, right: bool, thoughts: bool) -> Vec<String> {
    let table = t["table"]["table_name"].as_str().unwrap();
    if matches!(t["type"][0].as_str().unwrap(), "INSERT" | "UPDATE" | "DELETE") {
        let sql = if right {
            t["label"][0].as_str().unwrap().to_string()
        } else {
            format!("SELECT * FROM `{table}`")
        };
        if thoughts {
            vec![
                format!("I change the table.\nAction: Operation\n```sql\n{sql}\n```\n"),
                "Done.\nAction: Answer\nFinal Answer: []".to_string(),
            ]
        } else {
            vec![
                format!("Action: Operation\n```sql\n{sql}\n```"),
                "Action: Answer\nFinal Answer: []".to_string(),
            ]
        }
    } else {
        let mut labels: Vec<String> = serde_json::from_value(t["label"].clone()).unwrap();
        if !right {
            labels[0].push('?');
        }
        let select = format!("Let me look.\nAction: Operation\n```sql\nSELECT * FROM `{table}`;\n```");
        let answer = format!(
            "Action: Answer\nFinal Answer: {}",
            serde_json::to_string(&labels).unwrap()
        );
        if thoughts {
            vec![select, format!("  {answer}\n")]
        } else {
            vec![select, answer]
        }
    }
}

/// Writes a `--scripted` file of DB trajectories ([`db_replies`]) for `tasks`, task `i` right
/// where `right(i)`, and returns each task's replies.
pub fn write_db_script(
    path: &Path,
    tasks: &[Value],
    right: impl Fn(usize) -> bool,
    thoughts: bool,
) -> Vec<Vec<String>> {
    let mut out = String::new();
    let mut all = Vec::new();
    for (i, t) in tasks.iter().enumerate() {
        let replies = db_replies(t, right(i), thoughts);
        out.push_str(&json!({"index": i, "replies": replies}).to_string());
        out.push('\n');
        all.push(replies);
    }
    std::fs::write(path, out).unwrap();
    all
}

/// `--rootfs` for OS runs: the default built Debian root when `edgeact rootfs build` has made
/// it, else the host's files (so the test neither fails nor starts a download without it).
pub fn os_rootfs() -> &'static str {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")));
    match cache {
        Some(c) if c.join("edgeact/rootfs/.edgeact-rootfs").exists() => "built",
        _ => "host",
    }
}
