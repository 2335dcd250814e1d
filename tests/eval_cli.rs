//! End-to-end tests of `edgeact eval` and `edgeact agent` through the binary: scripted gold
//! trajectories on the DB and OS dev sets are judged right (wrong ones wrong), and the real
//! engine (stories260K) completes the DB loop.
//!
//! Set `EDGEACT_SHARED` to relocate the shared data directory (default: `../shared` beside the checkout).

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/agent")
        .join(name)
}

fn tiny_model() -> PathBuf {
    PathBuf::from(
        std::env::var("EDGEACT_SHARED").unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../shared").into()),
    )
    .join("models/stories260K/stories260K-f32-v3.gguf")
}

fn edgeact(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_edgeact"))
        .args(args)
        .output()
        .expect("run edgeact")
}

fn db_tasks() -> Vec<Value> {
    std::fs::read_to_string(fixture("dbbench_dev.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Writes a `--scripted` file: per task, one SQL operation and a final answer.
fn write_script(path: &Path, tasks: &[Value], gold: bool) {
    let mut out = String::new();
    for (i, t) in tasks.iter().enumerate() {
        let kind = t["type"][0].as_str().unwrap();
        let table = t["table"]["table_name"].as_str().unwrap();
        let replies = if matches!(kind, "INSERT" | "UPDATE" | "DELETE") {
            // The label is the gold statement; a wrong run leaves the table untouched.
            let sql = if gold {
                t["label"][0].as_str().unwrap().to_string()
            } else {
                format!("SELECT * FROM `{table}`")
            };
            vec![
                format!("Action: Operation\n```sql\n{sql}\n```"),
                "Action: Answer\nFinal Answer: []".to_string(),
            ]
        } else {
            let mut labels: Vec<String> = serde_json::from_value(t["label"].clone()).unwrap();
            if !gold {
                labels[0].push('?');
            }
            vec![
                format!("Let me look.\nAction: Operation\n```sql\nSELECT * FROM `{table}`;\n```"),
                format!(
                    "Action: Answer\nFinal Answer: {}",
                    serde_json::to_string(&labels).unwrap()
                ),
            ]
        };
        out.push_str(&json!({"index": i, "replies": replies}).to_string());
        out.push('\n');
    }
    std::fs::write(path, out).unwrap();
}

fn run_eval_db(script: &Path, report: &Path) -> Value {
    let out = edgeact(&[
        "eval",
        "db",
        "--tasks",
        fixture("dbbench_dev.jsonl").to_str().unwrap(),
        "--scripted",
        script.to_str().unwrap(),
        "--jobs",
        "2",
        "--json",
        report.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_str(&std::fs::read_to_string(report).unwrap()).unwrap()
}

#[test]
fn eval_db_scripted_gold_scores_full_and_wrong_scores_zero() {
    let dir = tempfile::tempdir().unwrap();
    let tasks = db_tasks();
    write_script(&dir.path().join("gold.jsonl"), &tasks, true);
    let r = run_eval_db(&dir.path().join("gold.jsonl"), &dir.path().join("gold.json"));
    let results = r["results"].as_array().unwrap();
    assert_eq!(results.len(), 60);
    for x in results {
        // A task whose table the executor refuses (an empty column name) errors; every
        // other gold trajectory must be judged right, mutations by the table hash.
        assert!(
            x["correct"].as_bool().unwrap() || x["error"].is_string(),
            "task {} judged wrong: {x}",
            x["index"]
        );
    }
    let by_type = &r["seeds"][0]["by_type"];
    assert_eq!(by_type["INSERT"]["pass"], 20);
    assert_eq!(by_type["UPDATE"]["pass"], 20);
    assert!(by_type["SELECT"]["pass"].as_u64().unwrap() >= 19);
    assert!(results.iter().filter(|x| x["error"].is_string()).count() <= 1);

    write_script(&dir.path().join("wrong.jsonl"), &tasks, false);
    let r = run_eval_db(&dir.path().join("wrong.jsonl"), &dir.path().join("wrong.json"));
    assert_eq!(r["score_mean"].as_f64().unwrap(), 0.0);
    assert!(r["results"].as_array().unwrap().iter().all(|x| x["correct"] == false));
}

#[test]
fn agent_db_with_tiny_model_completes_the_loop() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("t.jsonl");
    let out = edgeact(&[
        "agent",
        "db",
        "-m",
        tiny_model().to_str().unwrap(),
        "--threads",
        "1",
        "--table",
        fixture("sample_table.json").to_str().unwrap(),
        "--log",
        log.to_str().unwrap(),
        "How many gold medals did Norway win?",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // 0: the agent committed an answer; 2: it ended otherwise (round limit, invalid action).
    assert!(matches!(out.status.code(), Some(0) | Some(2)), "{stderr}");
    assert!(!stderr.contains("error:"), "{stderr}");
    let events: Vec<Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events[0]["event"], "start");
    assert_eq!(events.last().unwrap()["event"], "end");
    let replies: Vec<&Value> = events.iter().filter(|e| e["event"] == "reply").collect();
    assert!(!replies.is_empty());
    // Constrained decoding (the default) makes every reply a valid DB action.
    for r in &replies {
        let kind = r["action"]["action"]["kind"].as_str().unwrap();
        assert!(kind == "operation" || kind == "answer", "{r}");
        assert!(r["reply"]["stats"]["prefilled_tokens"].as_u64().unwrap() > 0);
    }
    assert!(stderr.contains("prefilled"), "{stderr}");
}

#[test]
fn eval_db_with_tiny_model_runs_and_reports() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("r.json");
    let out = edgeact(&[
        "eval",
        "db",
        "-m",
        tiny_model().to_str().unwrap(),
        "--tasks",
        fixture("dbbench_dev.jsonl").to_str().unwrap(),
        "--limit",
        "2",
        "--seeds",
        "2",
        "--max-new-tokens",
        "16",
        "--threads",
        "1",
        "--json",
        report.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let results = r["results"].as_array().unwrap();
    assert_eq!(results.len(), 4);
    assert_eq!(r["seeds"].as_array().unwrap().len(), 2);
    for x in results {
        assert!(x["error"].is_null(), "{x}");
        assert!(x["prefilled_tokens"].as_u64().unwrap() > 0);
    }
}

#[test]
fn eval_os_scripted_answers_judged_in_sandbox() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("os.jsonl");
    // Tasks 0-6: match tasks answered right, task 6 (6 hidden files + `.` and `..`, judged
    // against its example script's `8`) right, the two `calc` tasks only "finish" (wrong).
    let replies = [
        (0, "Think: x\n\nAct: answer(1)"),
        (1, "Think: x\n\nAct: answer(log)"),
        (2, "Think: x\n\nAct: answer(.plain.log)"),
        (3, "Think: x\n\nAct: finish"),
        (4, "Think: x\n\nAct: answer(3)"),
        (5, "Think: x\n\nAct: finish"),
    ];
    let mut text = String::new();
    for (i, r) in replies {
        text.push_str(&json!({"index": i, "replies": [r]}).to_string());
        text.push('\n');
    }
    let t6 = [
        "Think: count\n\nAct: bash\n\n```bash\nls -a /home | grep '^\\.' | wc -l\n```",
        "Think: 8\n\nAct: answer(8)",
    ];
    text.push_str(&json!({"index": 6, "replies": t6}).to_string());
    text.push('\n');
    std::fs::write(&script, text).unwrap();
    let report = dir.path().join("r.json");
    let out = edgeact(&[
        "eval",
        "os",
        "--tasks",
        fixture("os_interaction/data/dev.json").to_str().unwrap(),
        "--scripted",
        script.to_str().unwrap(),
        "--limit",
        "7",
        "--json",
        report.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let correct: Vec<u64> = r["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["correct"] == true)
        .map(|x| x["index"].as_u64().unwrap())
        .collect();
    assert_eq!(correct, vec![0, 1, 2, 4, 6], "{r}");
}
