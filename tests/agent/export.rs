//! `edgeact export agentinstruct` end to end (issue #14, item 3): `eval`/`agent --log`
//! transcripts of scripted runs (some judged right, some wrong) and of real models
//! (stories260K; SmolLM2 when `scripts/fetch-smollm2.sh` fetched it) are exported and checked:
//! AgentInstruct's schema and layout, loss flags, ids, `--only-correct` (exactly the runs the
//! judge accepted, per the eval's JSON report), `--task`, incomplete and malformed input, and
//! that the output never overwrites an input.
//!
//! Round trip: the conversation before the last reply, rendered, must be exactly the prompt
//! the model was given on its last turn (the transcript's `final_prompt`): with our renderer
//! (`render_llama2`, or the model's own template for `gguf` runs) after AgentBench's trimming
//! (for a trimmed run with the first message as the start record holds it, unstripped),
//! always; with FastChat 0.2.31's `llama-2` template (`scripts/serve-clients/
//! agentinstruct_render.py` in the venv `scripts/setup.sh` creates, `EDGEACT_PYCLIENTS`,
//! default `~/.cache/edgeact/pyclients`) for every run whose history was not trimmed; skipped
//! with a message without the venv. OS runs skip when the sandbox cannot start here.

use crate::cli_support;

use cli_support::{db_tasks, edgeact, fixture, os_rootfs, repo, smollm2, tiny_model, write_db_script};
use edgeact_agent::export::{history_before_last_reply, Row, Speaker};
use edgeact_agent::render::{trim_history, ChatTemplate};
use edgeact_agent::{FormatChoice, PromptFormat};
use serde_json::{json, Value};
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn read_jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{}: {e}: {l}", path.display())))
        .collect()
}

/// `edgeact export agentinstruct INPUTS -o OUT EXTRA...`.
fn export(inputs: &[&Path], out: &Path, extra: &[&str]) -> Output {
    let mut args: Vec<String> = vec!["export".into(), "agentinstruct".into()];
    args.extend(inputs.iter().map(|p| p.display().to_string()));
    args.extend(["-o".into(), out.display().to_string()]);
    args.extend(extra.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    edgeact(&refs)
}

/// Exports and reads the rows back; the command must succeed.
fn export_rows(inputs: &[&Path], out: &Path, extra: &[&str]) -> (Vec<Value>, String) {
    let o = export(inputs, out, extra);
    let stderr = text(&o.stderr);
    assert!(o.status.success(), "export {extra:?}: {stderr}");
    (read_jsonl(out), stderr)
}

/// `edgeact eval PROTOCOL ARGS --log LOG --json REPORT`: the report, or `None` (printed) when
/// the OS sandbox cannot start on this machine.
fn eval(protocol: &str, args: &[&str], log: &Path, report: &Path) -> Option<Value> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_edgeact"));
    cmd.args(["eval", protocol])
        .args(args)
        .arg("--log")
        .arg(log)
        .arg("--json")
        .arg(report);
    if protocol == "os" {
        cmd.args(["--rootfs", os_rootfs()]);
    }
    let out = cmd.output().expect("run edgeact");
    let err = text(&out.stderr);
    if protocol == "os" && !out.status.success() && err.contains("starting the OS sandbox") {
        eprintln!("skipped the OS runs: the sandbox cannot start here: {err}");
        return None;
    }
    assert!(out.status.success(), "eval {protocol} {args:?}: {err}");
    Some(serde_json::from_str(&std::fs::read_to_string(report).unwrap()).unwrap())
}

/// The ids the eval's report says the judge accepted (or all of them).
fn report_ids(report: &Value, only_correct: bool) -> BTreeSet<String> {
    let protocol = report["protocol"].as_str().unwrap();
    let several = report["seeds"].as_array().unwrap().len() > 1;
    report["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| !only_correct || r["correct"] == true)
        .map(|r| {
            let mut id = format!("{protocol}_{}", r["index"]);
            if several {
                id.push_str(&format!("_s{}", r["seed"]));
            }
            id
        })
        .collect()
}

fn ids(rows: &[Value]) -> BTreeSet<String> {
    rows.iter().map(|r| r["id"].as_str().unwrap().to_string()).collect()
}

/// AgentInstruct's schema: `{"conversations", "id"}`, turns `{"from", "loss", "value"}`,
/// human turns `loss: null`, gpt turns a boolean, alternating from a human turn, ending with
/// a reply of the agent.
fn check_schema(row: &Value) {
    let keys: BTreeSet<&str> = row.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, BTreeSet::from(["conversations", "id"]), "{row}");
    let turns = row["conversations"].as_array().unwrap();
    for (i, t) in turns.iter().enumerate() {
        let keys: BTreeSet<&str> = t.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, BTreeSet::from(["from", "loss", "value"]), "{t}");
        let expect = if i % 2 == 0 { "human" } else { "gpt" };
        assert_eq!(t["from"], expect, "turn {i} of {}", row["id"]);
        if expect == "human" {
            assert!(t["loss"].is_null(), "{t}");
        } else {
            assert!(t["loss"].is_boolean(), "{t}");
        }
        let v = t["value"].as_str().unwrap();
        assert_eq!(
            v,
            v.trim_matches(|c: char| c.is_whitespace()),
            "values are stored stripped: {v:?}"
        );
    }
    let last = turns.last().unwrap();
    assert_eq!(
        (last["from"].as_str(), last["loss"].as_bool()),
        (Some("gpt"), Some(true)),
        "{row}"
    );
}

/// The protocol's turns as AgentInstruct stores them: DB `instruction / Ok. / question`, OS
/// `instruction + one-shot question / 3 one-shot answers and 2 outputs / the task`, all with
/// `loss: false` on the gpt side; then only the agent's replies (`loss: true`).
fn check_layout(row: &Value) {
    check_schema(row);
    let turns = row["conversations"].as_array().unwrap();
    let id = row["id"].as_str().unwrap();
    let fixed = if id.starts_with("db_") {
        assert!(turns[0]["value"]
            .as_str()
            .unwrap()
            .starts_with("I will ask you a question, then you should help me operate a MySQL database"));
        assert_eq!(turns[1]["value"], "Ok.");
        3
    } else {
        let first = turns[0]["value"].as_str().unwrap();
        assert!(
            first.starts_with("You are an assistant that will act like a person"),
            "{first}"
        );
        assert!(
            first.ends_with("Now, my problem is:\n\ntell me how many files are in the directory \"/etc\"?"),
            "{first}"
        );
        assert_eq!(
            turns[5]["value"],
            "Think: Now I get the answer, it is 220.\n\nAct: answer(220)"
        );
        assert!(turns[6]["value"]
            .as_str()
            .unwrap()
            .starts_with("Now, I will start a new problem in a new OS. My problem is:\n\n"));
        7
    };
    for (i, t) in turns.iter().enumerate().filter(|(_, t)| t["from"] == "gpt") {
        assert_eq!(t["loss"], i >= fixed, "turn {i} of {id}");
    }
}

/// What a transcript says about one run: its `start` and `end` records.
struct LoggedRun {
    start: Value,
    end: Value,
}

/// The runs of a transcript by export id (as `eval`/`agent` tagged them).
fn logged_runs(log: &Path) -> HashMap<String, LoggedRun> {
    let mut starts: HashMap<(Option<u64>, Option<u64>), Value> = HashMap::new();
    let mut out = HashMap::new();
    let mut untagged = 0;
    for r in read_jsonl(log) {
        let key = (r["task"].as_u64(), r["seed"].as_u64());
        match r["event"].as_str() {
            Some("start") => {
                starts.insert(key, r);
            }
            Some("end") => {
                let start = starts.remove(&key).expect("end after start");
                let protocol = start["protocol"].as_str().unwrap().to_string();
                let mut id = match key.0 {
                    Some(t) => format!("{protocol}_{t}"),
                    None => {
                        untagged += 1;
                        format!("{protocol}_{}", untagged - 1)
                    }
                };
                if start["seeds"].as_u64().unwrap_or(1) > 1 {
                    id.push_str(&format!("_s{}", key.1.unwrap()));
                }
                out.insert(id, LoggedRun { start, end: r });
            }
            _ => {}
        }
    }
    out
}

/// The Python of the clients' venv, or `None` (with the reason printed) when it is missing.
fn venv_python() -> Option<PathBuf> {
    let dir = std::env::var_os("EDGEACT_PYCLIENTS")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/edgeact/pyclients")))?;
    let py = dir.join("bin/python");
    if py.is_file() {
        Some(py)
    } else {
        eprintln!(
            "skipped FastChat's round trip: no venv at {} (scripts/setup.sh creates it; EDGEACT_PYCLIENTS relocates it)",
            dir.display()
        );
        None
    }
}

/// FastChat's rendering of each exported row before its last reply, by id.
fn fastchat_prompts(py: &Path, data: &Path, system: Option<&str>) -> HashMap<String, String> {
    let mut cmd = Command::new(py);
    cmd.arg(repo().join("scripts/serve-clients/agentinstruct_render.py"))
        .arg("--data")
        .arg(data);
    if let Some(s) = system {
        cmd.arg("--system").arg(s);
    }
    let out = cmd.output().expect("run python");
    assert!(
        out.status.success(),
        "agentinstruct_render.py: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (
                v["id"].as_str().unwrap().to_string(),
                v["prompt"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The round trip for every exported row: the conversation before the last reply, trimmed as
/// AgentBench trims and rendered in the run's format with its system prompt, equals the
/// transcript's `final_prompt`; FastChat's rendering of the untrimmed conversation equals it
/// for the runs that were not trimmed. `model` resolves `gguf` runs' template. Returns how
/// many rows FastChat checked.
fn check_round_trip(data: &Path, log: &Path, model: Option<&Path>) -> usize {
    let runs = logged_runs(log);
    let rows = read_jsonl(data);
    assert!(!rows.is_empty());
    let mut by_system: HashMap<Option<String>, Vec<String>> = HashMap::new();
    for row in &rows {
        let id = row["id"].as_str().unwrap();
        let run = runs
            .get(id)
            .unwrap_or_else(|| panic!("{id} is not in {}", log.display()));
        let final_prompt = run.end["final_prompt"]
            .as_str()
            .unwrap_or_else(|| panic!("{id}: no final_prompt"));
        let system = run.start["system"].as_str().map(str::to_string);
        let template = system.clone().map_or(ChatTemplate::Eval, ChatTemplate::System);
        let parsed: Row = serde_json::from_value(row.clone()).unwrap();
        assert!(parsed.conversations.iter().any(|t| t.from == Speaker::Gpt));
        let before = history_before_last_reply(&parsed.conversations);
        let format = match run.start["chat_template"].as_str() {
            Some("llama2") => PromptFormat::Llama2,
            Some("gguf") => {
                let file = edgeact_runtime::gguf::GgufFile::open(model.expect("gguf runs need the model")).unwrap();
                PromptFormat::resolve(FormatChoice::Gguf, &file).unwrap()
            }
            other => panic!("{id}: format {other:?}"),
        };
        let trimmed = trim_history(&before).len() < before.len();
        let mut sent = before.clone();
        if trimmed {
            // AgentBench's `[NOTICE]` line follows the first message as the loop held it
            // (unstripped: the DB instruction ends with a newline), as the start record has it.
            sent[0] = serde_json::from_value(run.start["history"][0].clone()).unwrap();
        }
        let ours = format.render(&trim_history(&sent), &template).unwrap();
        assert_eq!(
            ours, final_prompt,
            "{id}: our rendering of the export differs from the prompt given"
        );
        if run.start["chat_template"] == "llama2" && !trimmed {
            by_system.entry(system).or_default().push(id.to_string());
        }
    }
    let Some(py) = venv_python() else { return 0 };
    let mut checked = 0;
    for (system, ids) in by_system {
        let prompts = fastchat_prompts(&py, data, system.as_deref());
        for id in ids {
            let final_prompt = runs[&id].end["final_prompt"].as_str().unwrap();
            assert_eq!(
                prompts[&id], final_prompt,
                "{id}: FastChat's rendering differs from the prompt given"
            );
            checked += 1;
        }
    }
    eprintln!("FastChat round trip: {checked} of {} rows", rows.len());
    checked
}

/// A `--scripted` file for the first `n` DB dev tasks: gold trajectories for the tasks in
/// `right`, wrong ones for the others (an operation, then an answer).
fn db_script(path: &Path, n: usize, right: impl Fn(usize) -> bool) -> Vec<Vec<String>> {
    write_db_script(path, &db_tasks()[..n], right, true)
}

#[test]
fn db_scripted_runs_export_with_layout_filters_and_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("script.jsonl");
    // Tasks 0..10: every third one wrong (SELECT-like and mutating tasks on both sides).
    let replies = db_script(&script, 10, |i| i % 3 != 1);
    let log = dir.path().join("db.jsonl");
    let report = eval(
        "db",
        &[
            "--tasks",
            fixture("dbbench_dev.jsonl").to_str().unwrap(),
            "--scripted",
            script.to_str().unwrap(),
            "--limit",
            "10",
            "--jobs",
            "2",
        ],
        &log,
        &dir.path().join("r.json"),
    )
    .unwrap();
    let log_before = std::fs::read(&log).unwrap();

    let data = dir.path().join("data.jsonl");
    let (rows, stderr) = export_rows(&[&log], &data, &[]);
    assert_eq!(ids(&rows), report_ids(&report, false));
    assert!(stderr.contains("wrote 10 row(s) (db 10)"), "{stderr}");
    // Rows come in task order although `--jobs 2` interleaved the runs.
    let order: Vec<&str> = rows.iter().map(|r| r["id"].as_str().unwrap()).collect();
    let expected: Vec<String> = (0..10).map(|i| format!("db_{i}")).collect();
    assert_eq!(order, expected);
    let tasks = db_tasks();
    for (i, row) in rows.iter().enumerate() {
        check_layout(row);
        let turns = row["conversations"].as_array().unwrap();
        // The task, the two scripted replies (stripped) and the SQL result in between.
        assert_eq!(
            turns[2]["value"].as_str().unwrap(),
            format!(
                "{}\n{}",
                tasks[i]["description"].as_str().unwrap(),
                tasks[i]["add_description"].as_str().unwrap()
            )
            .trim()
        );
        assert_eq!(turns.len(), 6, "{row}");
        assert_eq!(turns[3]["value"].as_str().unwrap(), replies[i][0].trim());
        assert_eq!(turns[5]["value"].as_str().unwrap(), replies[i][1].trim());
    }

    // --only-correct keeps exactly what the judge accepted.
    let correct = report_ids(&report, true);
    assert!(!correct.is_empty() && correct.len() < 10, "{correct:?}");
    let (rows, stderr) = export_rows(&[&log], &data, &["--only-correct"]);
    assert_eq!(ids(&rows), correct);
    assert!(
        stderr.contains(&format!("{} not judged correct", 10 - correct.len())),
        "{stderr}"
    );
    // --task filters by family.
    let (rows, stderr) = export_rows(&[&log], &data, &["--task", "os"]);
    assert!(rows.is_empty());
    assert!(stderr.contains("10 of the other family"), "{stderr}");
    let (rows, _) = export_rows(&[&log], &data, &["--task", "db", "--only-correct"]);
    assert_eq!(ids(&rows), correct);

    let (_, _) = export_rows(&[&log], &data, &[]);
    assert_eq!(check_round_trip(&data, &log, None) > 0, venv_python().is_some());
    assert_eq!(std::fs::read(&log).unwrap(), log_before, "the input changed");
}

#[test]
fn os_scripted_runs_export_raw_terminal_observations() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("os.jsonl");
    // As in eval_cli: tasks 0, 1, 2, 4, 6 answered right, 3 and 5 only "finish" (wrong);
    // task 6 runs a command first.
    let mut lines = String::new();
    for (i, r) in [
        (0, "Think: x\n\nAct: answer(1)"),
        (1, "Think: x\n\nAct: answer(log)"),
        (2, "Think: x\n\nAct: answer(.plain.log)"),
        (3, "Think: x\n\nAct: finish"),
        (4, "Think: x\n\nAct: answer(3)"),
        (5, "Think: x\n\nAct: finish"),
    ] {
        lines.push_str(&json!({"index": i, "replies": [r]}).to_string());
        lines.push('\n');
    }
    const T6_FIRST: &str = "Think: count\n\nAct: bash\n\n```bash\nls -a /home | grep '^\\.' | wc -l\n```";
    let t6 = [T6_FIRST, "Think: 8\n\nAct: answer(8)"];
    lines.push_str(&json!({"index": 6, "replies": t6}).to_string());
    lines.push('\n');
    std::fs::write(&script, lines).unwrap();
    let log = dir.path().join("os-log.jsonl");
    let Some(report) = eval(
        "os",
        &[
            "--tasks",
            fixture("os_interaction/data/dev.json").to_str().unwrap(),
            "--scripted",
            script.to_str().unwrap(),
            "--limit",
            "7",
        ],
        &log,
        &dir.path().join("r.json"),
    ) else {
        return;
    };
    let data = dir.path().join("data.jsonl");
    let (rows, _) = export_rows(&[&log], &data, &[]);
    assert_eq!(ids(&rows), report_ids(&report, false));
    for row in &rows {
        check_layout(row);
    }
    let t6 = rows.iter().find(|r| r["id"] == "os_6").unwrap()["conversations"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(t6.len(), 10);
    assert_eq!(t6[7]["value"], T6_FIRST);
    // The output as the model saw it: raw pty bytes (`\r\n`, the title escape, the prompt,
    // bash's erase-line when it redraws), stripped as AgentBench strips before rendering (a
    // prompt's trailing space goes, as in AgentInstruct's `root@…:/#` rows).
    let obs = t6[8]["value"].as_str().unwrap();
    let rest = obs
        .strip_prefix("The output of the OS:\n\n8\r\n\x1b]0;root@")
        .unwrap_or_else(|| panic!("{obs:?}"));
    assert!(
        rest.contains("\x07root@") && (rest.ends_with(":/#") || rest.ends_with(":/# \x1b[K")),
        "{rest:?}"
    );

    let correct = report_ids(&report, true);
    assert_eq!(correct.len(), 5, "{report}");
    let (rows, _) = export_rows(&[&log], &data, &["--only-correct", "--task", "os"]);
    assert_eq!(ids(&rows), correct);
    let (_, _) = export_rows(&[&log], &data, &[]);
    check_round_trip(&data, &log, None);
}

#[test]
fn tiny_model_runs_export_with_seed_ids_and_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model();
    let log = dir.path().join("db.jsonl");
    let report = eval(
        "db",
        &[
            "-m",
            model.to_str().unwrap(),
            "--tasks",
            fixture("dbbench_dev.jsonl").to_str().unwrap(),
            "--limit",
            "3",
            "--seeds",
            "2",
            "--jobs",
            "2",
            "--threads",
            "2",
            "--max-new-tokens",
            "24",
        ],
        &log,
        &dir.path().join("db.json"),
    )
    .unwrap();
    let data = dir.path().join("db-data.jsonl");
    let (rows, _) = export_rows(&[&log], &data, &[]);
    // Several seeds: ids carry `_sK`.
    assert_eq!(ids(&rows), report_ids(&report, false));
    assert!(rows.iter().all(|r| r["id"].as_str().unwrap().contains("_s")));
    for row in &rows {
        check_layout(row);
    }
    check_round_trip(&data, &log, None);

    let log = dir.path().join("os.jsonl");
    let Some(report) = eval(
        "os",
        &[
            "-m",
            model.to_str().unwrap(),
            "--tasks",
            fixture("os_interaction/data/dev.json").to_str().unwrap(),
            "--limit",
            "2",
            "--greedy",
            "--threads",
            "2",
            "--max-new-tokens",
            "24",
        ],
        &log,
        &dir.path().join("os.json"),
    ) else {
        return;
    };
    let data = dir.path().join("os-data.jsonl");
    let (rows, _) = export_rows(&[&log], &data, &[]);
    assert_eq!(ids(&rows), report_ids(&report, false));
    for row in &rows {
        check_layout(row);
    }
    check_round_trip(&data, &log, None);
}

/// SmolLM2 (ChatML in its GGUF): in AgentBench's llama-2 format the export round-trips through
/// FastChat; in its own template (`auto`) through that template. Skips without the model.
#[test]
fn smollm2_runs_round_trip_in_both_formats() {
    let Some(model) = smollm2() else {
        eprintln!("skipped: no SmolLM2 (scripts/fetch-smollm2.sh)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    for format in ["llama2", "auto"] {
        let log = dir.path().join(format!("{format}.jsonl"));
        let report = eval(
            "db",
            &[
                "-m",
                model.to_str().unwrap(),
                "--tasks",
                fixture("dbbench_dev.jsonl").to_str().unwrap(),
                "--limit",
                "2",
                "--greedy",
                "--threads",
                "2",
                "--max-new-tokens",
                "48",
                "--chat-template",
                format,
            ],
            &log,
            &dir.path().join(format!("{format}.json")),
        )
        .unwrap();
        let data = dir.path().join(format!("{format}-data.jsonl"));
        let (rows, _) = export_rows(&[&log], &data, &[]);
        assert_eq!(ids(&rows), report_ids(&report, false));
        for row in &rows {
            check_layout(row);
        }
        let start = &read_jsonl(&log)[0];
        assert_eq!(start["chat_template"], if format == "auto" { "gguf" } else { "llama2" });
        check_round_trip(&data, &log, Some(&model));
    }
}

/// `agent db` (one untagged run with the model card's system prompt): exported as `db_0`, not
/// judged so absent under `--only-correct`, and the round trip holds with the system prompt.
#[test]
fn agent_transcript_exports_with_its_system_prompt() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("agent.jsonl");
    let out = edgeact(&[
        "agent",
        "db",
        "-m",
        tiny_model().to_str().unwrap(),
        "--threads",
        "1",
        "--max-new-tokens",
        "48",
        "--table",
        fixture("sample_table.json").to_str().unwrap(),
        "--log",
        log.to_str().unwrap(),
        "How many gold medals did Norway win?",
    ]);
    assert!(matches!(out.status.code(), Some(0) | Some(2)), "{}", text(&out.stderr));
    let start = &read_jsonl(&log)[0];
    assert_eq!(start["system"], "You are a helpful, respectful and honest assistant.");
    let data = dir.path().join("data.jsonl");
    let (rows, _) = export_rows(&[&log], &data, &[]);
    assert_eq!(ids(&rows), BTreeSet::from(["db_0".to_string()]));
    check_layout(&rows[0]);
    check_round_trip(&data, &log, None);
    let (rows, stderr) = export_rows(&[&log], &data, &["--only-correct"]);
    assert!(rows.is_empty());
    assert!(stderr.contains("1 not judged correct"), "{stderr}");
}

#[test]
fn incomplete_and_malformed_transcripts_and_no_clobbering() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("script.jsonl");
    db_script(&script, 4, |_| true);
    let log = dir.path().join("db.jsonl");
    eval(
        "db",
        &[
            "--tasks",
            fixture("dbbench_dev.jsonl").to_str().unwrap(),
            "--scripted",
            script.to_str().unwrap(),
            "--limit",
            "4",
        ],
        &log,
        &dir.path().join("r.json"),
    )
    .unwrap();
    let body = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = body.lines().collect();

    // A crashed run (its end record missing) is skipped with a note; the others export.
    let crashed = dir.path().join("crashed.jsonl");
    let kept: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| !(l.contains("\"event\":\"end\"") && l.contains("\"task\":2,")))
        .collect();
    assert_eq!(kept.len(), lines.len() - 1);
    std::fs::write(&crashed, kept.join("\n") + "\n").unwrap();
    let data = dir.path().join("data.jsonl");
    let (rows, stderr) = export_rows(&[&crashed], &data, &[]);
    assert_eq!(
        ids(&rows),
        ["db_0", "db_1", "db_3"].iter().map(|s| s.to_string()).collect()
    );
    assert!(
        stderr.contains("db task 2 seed 0 has no end record") && stderr.contains("crashed.jsonl:"),
        "{stderr}"
    );

    // A malformed line is an error naming the file and line; nothing is written.
    let bad = dir.path().join("bad.jsonl");
    let mut broken: Vec<&str> = lines.clone();
    broken.insert(2, "{\"event\": \"reply\", \"task\": 0,");
    std::fs::write(&bad, broken.join("\n") + "\n").unwrap();
    let fresh = dir.path().join("fresh.jsonl");
    let o = export(&[&bad], &fresh, &[]);
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert!(
        err.contains(&format!("{}:3: not a JSON record", bad.display())),
        "{err}"
    );
    assert!(!fresh.exists());

    // The output may not be an input (nor a hard link to one); the input stays as it was.
    let o = export(&[&log], &log, &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("refusing to overwrite"), "{}", text(&o.stderr));
    let link = dir.path().join("link.jsonl");
    std::fs::hard_link(&log, &link).unwrap();
    let o = export(&[&log], &link, &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    assert_eq!(std::fs::read_to_string(&log).unwrap(), body);

    // An existing output is replaced whole, with no temporary file left beside it.
    std::fs::write(&data, "old\n").unwrap();
    let (rows, _) = export_rows(&[&log], &data, &[]);
    assert_eq!(rows.len(), 4);
    let leftovers: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("partial"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // Usage errors: no input, an unknown family.
    let o = edgeact(&["export", "agentinstruct", "-o", data.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let o = export(&[&log], &data, &["--task", "kg"]);
    assert_eq!(o.status.code(), Some(2));
}
