//! End-to-end tests of `edgeact eval` and `edgeact agent` through the binary: scripted gold
//! trajectories on the DB and OS dev sets are judged right (wrong ones wrong), and the real
//! engine (stories260K) completes the DB loop.
//!
//! Set `EDGEACT_SHARED` to relocate the shared data directory (default: `../shared` beside the checkout).

use crate::cli_support;

use cli_support::{db_tasks, edgeact, fixture, os_rootfs, tiny_model, write_db_script};
use serde_json::{json, Value};
use std::path::Path;

/// Writes a `--scripted` file: per task, one SQL operation and a final answer.
fn write_script(path: &Path, tasks: &[Value], gold: bool) {
    write_db_script(path, tasks, |_| gold, false);
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
        // Every gold trajectory is judged right, mutations by the table hash. Task 5's table
        // (an empty column name) is not created, as on AgentBench's MySQL: its query fails
        // but the run goes on to the gold answer.
        assert!(x["error"].is_null(), "task {}: {x}", x["index"]);
        assert!(x["correct"].as_bool().unwrap(), "task {} judged wrong: {x}", x["index"]);
    }
    let by_type = &r["seeds"][0]["by_type"];
    assert_eq!(by_type["INSERT"]["pass"], 20);
    assert_eq!(by_type["UPDATE"]["pass"], 20);
    assert_eq!(by_type["SELECT"]["pass"], 20);

    write_script(&dir.path().join("wrong.jsonl"), &tasks, false);
    let r = run_eval_db(&dir.path().join("wrong.jsonl"), &dir.path().join("wrong.json"));
    assert_eq!(r["score_mean"].as_f64().unwrap(), 0.0);
    assert!(r["results"].as_array().unwrap().iter().all(|x| x["correct"] == false));
}

/// `agent db` on the sample table with `model` and `extra` flags: the process output, its
/// stderr and the `--log` transcript's records.
fn agent_db(model: &Path, extra: &[&str]) -> (std::process::Output, String, Vec<Value>) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("t.jsonl");
    let table = fixture("sample_table.json");
    let mut args = vec![
        "agent",
        "db",
        "-m",
        model.to_str().unwrap(),
        "--threads",
        "1",
        "--table",
        table.to_str().unwrap(),
        "--log",
        log.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    args.push("How many gold medals did Norway win?");
    let out = edgeact(&args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    // 0: the agent committed an answer; 2: it ended otherwise (round limit, invalid action).
    assert!(matches!(out.status.code(), Some(0) | Some(2)), "{stderr}");
    assert!(!stderr.contains("error:"), "{stderr}");
    let events: Vec<Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (out, stderr, events)
}

#[test]
fn agent_db_with_tiny_model_completes_the_loop() {
    let (_, stderr, events) = agent_db(&tiny_model(), &[]);
    assert_eq!(events[0]["event"], "start");
    // stories260K has no chat template: `auto` renders AgentBench's llama-2 format.
    assert_eq!(events[0]["chat_template"], "llama2");
    assert!(
        stderr.contains("prompt format llama2 (--chat-template auto)"),
        "{stderr}"
    );
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
fn chat_template_flag_errors_and_choices() {
    let table = fixture("sample_table.json");
    let base = |flag: &str| {
        edgeact(&[
            "agent",
            "db",
            "-m",
            tiny_model().to_str().unwrap(),
            "--threads",
            "1",
            "--max-new-tokens",
            "8",
            "--table",
            table.to_str().unwrap(),
            "--chat-template",
            flag,
            "Q?",
        ])
    };
    // `gguf` on a file without a template is refused with the reason, before any generation.
    let out = base("gguf");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no tokenizer.chat_template"), "{stderr}");
    // An unknown name is a usage error listing the choices.
    let out = base("chatml");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("auto") && stderr.contains("llama2") && stderr.contains("gguf"),
        "{stderr}"
    );
    // `eval` reports the resolved format.
    let r = eval_db_tiny(&[
        "--limit",
        "1",
        "--greedy",
        "--max-new-tokens",
        "4",
        "--chat-template",
        "llama2",
    ]);
    assert_eq!(r["chat_template"], "llama2");
}

/// The quickstart's model: SmolLM2 (ChatML) gets its own template under the default `auto`.
/// Skips when `scripts/fetch-smollm2.sh` has not been run.
#[test]
fn agent_db_with_smollm2_uses_its_chatml_template() {
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join(".cache/models/SmolLM2-135M-Instruct.Q4_1.gguf");
    if !model.exists() {
        eprintln!("skipping: {} is absent (run scripts/fetch-smollm2.sh)", model.display());
        return;
    }
    let (_, stderr, events) = agent_db(&model, &["--max-new-tokens", "32"]);
    assert!(stderr.contains("prompt format gguf (--chat-template auto)"), "{stderr}");
    assert_eq!(events[0]["chat_template"], "gguf");
}

/// `eval db` on the dev set with stories260K and `extra` flags; returns the JSON report.
fn eval_db_tiny(extra: &[&str]) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("r.json");
    let model = tiny_model();
    let tasks = fixture("dbbench_dev.jsonl");
    let mut args = vec![
        "eval",
        "db",
        "-m",
        model.to_str().unwrap(),
        "--tasks",
        tasks.to_str().unwrap(),
        "--threads",
        "1",
        "--json",
        report.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let out = edgeact(&args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap()
}

#[test]
fn eval_db_with_tiny_model_runs_and_reports() {
    let r = eval_db_tiny(&["--limit", "2", "--seeds", "2", "--max-new-tokens", "16"]);
    let results = r["results"].as_array().unwrap();
    assert_eq!(results.len(), 4);
    assert_eq!(r["seeds"].as_array().unwrap().len(), 2);
    // No model template: `auto` used AgentBench's llama-2 format.
    assert_eq!(r["chat_template"], "llama2");
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
        (5, "Think: x\n\nAct: finish"),
    ];
    let mut text = String::new();
    for (i, r) in replies {
        text.push_str(&json!({"index": i, "replies": [r]}).to_string());
        text.push('\n');
    }
    // Task 4 answered right, but after a command that printed a byte that is not UTF-8:
    // AgentBench's harness raised on decoding it and counted the task as failed.
    let t4 = [
        "Think: x\n\nAct: bash\n\n```bash\nprintf 'a\\377b\\n'\n```",
        "Think: x\n\nAct: answer(3)",
    ];
    text.push_str(&json!({"index": 4, "replies": t4}).to_string());
    text.push('\n');
    let t6 = [
        "Think: count\n\nAct: bash\n\n```bash\nls -a /home | grep '^\\.' | wc -l\n```",
        "Think: 8\n\nAct: answer(8)",
    ];
    text.push_str(&json!({"index": 6, "replies": t6}).to_string());
    text.push('\n');
    std::fs::write(&script, text).unwrap();
    let report = dir.path().join("r.json");
    let log = dir.path().join("os-log.jsonl");
    let out = edgeact(&[
        "eval",
        "os",
        "--rootfs",
        os_rootfs(),
        "--log",
        log.to_str().unwrap(),
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
    assert_eq!(correct, vec![0, 1, 2, 6], "{r}");
    let t4 = &r["results"][4];
    assert_eq!(t4["index"], 4);
    assert!(t4["error"].as_str().unwrap().contains("not UTF-8"), "{t4}");
    // The observation holds the raw terminal bytes AgentInstruct's traces show: output, `\r\n`,
    // the title escape and the prompt, and no bracketed-paste switches (`\x1b[?2004h`/`l`),
    // which the traces never contain.
    let obs: Vec<String> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["event"] == "observation")
        .map(|e| e["message"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(obs.len(), 1);
    let rest = obs[0]
        .strip_prefix("The output of the OS:\n\n8\r\n\x1b]0;root@")
        .unwrap_or_else(|| panic!("{:?}", obs[0]));
    assert!(rest.contains("\x07root@") && rest.contains(":/# "), "{rest:?}");
    assert!(!obs[0].contains("\x1b[?2004"), "{:?}", obs[0]);
}

/// `--log` and `--json` never overwrite the run's inputs (they were opened with
/// `File::create`: `--log model.gguf` cut the mapped model to 0 bytes), nor each other, and are
/// refused before the run.
#[test]
fn eval_outputs_never_overwrite_the_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let tasks_src = fixture("dbbench_dev.jsonl");
    let tasks = dir.path().join("tasks.jsonl");
    std::fs::copy(&tasks_src, &tasks).unwrap();
    let script = dir.path().join("gold.jsonl");
    write_script(&script, &db_tasks(), true);
    let (t, s) = (tasks.to_str().unwrap(), script.to_str().unwrap());
    let report = dir.path().join("r.json");
    let r = report.to_str().unwrap();
    for (flag, target, extra, why) in [
        ("--log", t, None, "refusing to overwrite the input"),
        ("--json", t, None, "refusing to overwrite the input"),
        ("--log", s, None, "refusing to overwrite the input"),
        ("--json", r, Some(("--log", r)), "--json and --log name the same file"),
    ] {
        let before = std::fs::read(target).ok();
        let mut args = vec!["eval", "db", "--tasks", t, "--scripted", s, flag, target];
        if let Some((f, v)) = extra {
            args.extend([f, v]);
        }
        let out = edgeact(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(why), "{args:?}: {err}");
        assert!(std::fs::read(target).ok() == before, "{args:?} changed {target}");
    }
    // Elsewhere they are written, the report atomically.
    let log = dir.path().join("runs.jsonl");
    let out = edgeact(&[
        "eval",
        "db",
        "--tasks",
        t,
        "--scripted",
        s,
        "--json",
        r,
        "--log",
        log.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(serde_json::from_str::<Value>(&std::fs::read_to_string(&report).unwrap()).is_ok());
    assert!(std::fs::metadata(&log).unwrap().len() > 0);
}

/// Flags of the local model have no effect on `--endpoint` runs: refused, not ignored (the
/// report said `constrained: true` for a run that was not).
#[test]
fn endpoint_runs_refuse_the_local_models_flags() {
    let tasks = fixture("dbbench_dev.jsonl");
    for flag in [
        &["--constrain"][..],
        &["--ctx", "512"],
        &["--repack"],
        &["--lora", "a.gguf"],
        &["-t", "2"],
        &["--no-speculate"],
    ] {
        let mut args = vec![
            "eval",
            "db",
            "--tasks",
            tasks.to_str().unwrap(),
            "--endpoint",
            "http://127.0.0.1:1",
        ];
        args.extend_from_slice(flag);
        let out = edgeact(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("cannot be used with"),
            "{flag:?}: {err}"
        );
    }
}

/// Task and reply files are regular files of bounded size: a FIFO was waited on forever and
/// `/dev/zero` read until memory ran out. A task file without tasks is an error (it scored
/// 0 of 0 and exited 0), and a bad line is named by its line number (every line was "line 1").
#[test]
fn task_inputs_must_be_regular_nonempty_files_and_errors_name_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let empty = dir.path().join("empty.jsonl");
    std::fs::write(&empty, "\n\n").unwrap();
    let bad = dir.path().join("bad.jsonl");
    let good = std::fs::read_to_string(fixture("dbbench_dev.jsonl")).unwrap();
    std::fs::write(&bad, format!("{}\n\n{{bad\n", good.lines().next().unwrap())).unwrap();
    let scripted = dir.path().join("s.jsonl");
    std::fs::write(&scripted, "").unwrap();
    let run = |tasks: &Path, replies: &Path| {
        let t = std::time::Instant::now();
        let out = edgeact(&[
            "eval",
            "db",
            "--tasks",
            tasks.to_str().unwrap(),
            "--scripted",
            replies.to_str().unwrap(),
        ]);
        assert!(t.elapsed() < std::time::Duration::from_secs(30), "{tasks:?}: hung");
        assert!(!out.status.success(), "{tasks:?} {replies:?} accepted");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    assert!(run(&fifo, &scripted).contains("FIFO"));
    assert!(run(Path::new("/dev/zero"), &scripted).contains("character device"));
    assert!(run(&empty, &scripted).contains("no tasks"));
    let err = run(&bad, &scripted);
    assert!(err.contains("bad.jsonl:3: invalid JSON"), "{err}");
    assert!(run(&fixture("dbbench_dev.jsonl"), &fifo).contains("FIFO"));
}
