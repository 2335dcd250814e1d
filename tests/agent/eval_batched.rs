//! `edgeact eval --jobs N` on the shared batching engine (greedy runs give the same per-task
//! results whatever N is) and `eval --endpoint URL[,URL...]` against fake TGI servers written
//! here (requests of AgentBench's shape, jobs spread round-robin over the URLs, HTTP errors and
//! unreachable servers reported per task).
//!
//! Set `EDGEACT_SHARED` to relocate the shared data directory (default: `../shared` beside the checkout).

use crate::cli_support;

use cli_support::{db_tasks, edgeact, fixture, smollm2, tiny_model};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// `eval db` on the dev set with `args` added; the JSON report and stderr.
pub(crate) fn eval_db(args: &[&str]) -> (Value, String) {
    eval_db_ending(args, true)
}

/// [`eval_db`] whose runs all end with an error: the report is written all the same, the
/// first error is on stderr, and the exit status is a failure.
fn eval_db_all_failing(args: &[&str]) -> (Value, String) {
    let (r, stderr) = eval_db_ending(args, false);
    assert!(stderr.contains("the first: "), "{stderr}");
    (r, stderr)
}

fn eval_db_ending(args: &[&str], success: bool) -> (Value, String) {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("r.json");
    let tasks = fixture("dbbench_dev.jsonl");
    let mut all = vec![
        "eval",
        "db",
        "--tasks",
        tasks.to_str().unwrap(),
        "--json",
        report.to_str().unwrap(),
    ];
    all.extend_from_slice(args);
    let out = edgeact(&all);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.success(), success, "{stderr}");
    let r = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    (r, stderr)
}

/// The per-task outcome fields that must not depend on --jobs (nor on speculation).
pub(crate) fn outcomes(r: &Value) -> Vec<Value> {
    r["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            json!({
                "index": x["index"], "status": x["status"], "answer": x["answer"], "correct": x["correct"],
                "error": x["error"], "model_calls": x["model_calls"], "generated_tokens": x["generated_tokens"],
            })
        })
        .collect()
}

fn jobs_give_the_same_results(model: &Path, extra: &[&str]) {
    let m = model.to_str().unwrap();
    let mut base = vec!["-m", m, "--greedy", "--threads", "2"];
    base.extend_from_slice(extra);
    let one = [base.as_slice(), &["--jobs", "1"]].concat();
    let three = [base.as_slice(), &["--jobs", "3"]].concat();
    let (r1, _) = eval_db(&one);
    let (r3, stderr) = eval_db(&three);
    assert!(stderr.contains("tasks/min"), "{stderr}");
    assert_eq!(r1["jobs"], 1);
    assert_eq!(r3["jobs"], 3);
    let (o1, o3) = (outcomes(&r1), outcomes(&r3));
    assert!(!o1.is_empty());
    for x in &o1 {
        assert!(x["error"].is_null(), "{x}");
    }
    assert_eq!(o1, o3);
    assert_eq!(r1["seeds"], r3["seeds"]);
}

#[test]
fn greedy_eval_is_the_same_with_one_and_three_jobs_stories260k() {
    jobs_give_the_same_results(&tiny_model(), &["--limit", "6"]);
}

/// SmolLM2 (quantized Q4_1 weights, ChatML): skips when `scripts/fetch-smollm2.sh` has not been run.
#[test]
fn greedy_eval_is_the_same_with_one_and_three_jobs_smollm2() {
    let Some(model) = smollm2() else {
        eprintln!("skipping: SmolLM2 is absent (run scripts/fetch-smollm2.sh)");
        return;
    };
    // f32 activations: with quantized ones, a row's logits depend in the last bits on how many
    // rows share its matmul, which SmolLM2 amplifies enough to pick another greedy token
    // sometimes (see tests/model_batch.rs and docs/serving.md).
    jobs_give_the_same_results(
        &model,
        &["--limit", "4", "--max-new-tokens", "32", "--activations", "f32"],
    );
}

/// A request the fake server received: which server, the JSON body.
type Log = Arc<Mutex<Vec<(usize, Value)>>>;

/// How a fake server answers.
#[derive(Clone, Copy)]
enum Mode {
    /// Plays a gold DB episode: an SQL operation, then the gold answer.
    Gold,
    /// HTTP 500 with a TGI error body.
    Fail,
}

fn read_request(stream: &mut TcpStream) -> Option<Value> {
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    if !line.starts_with("POST /generate ") {
        return Some(json!({"bad_request_line": line}));
    }
    let mut len = 0;
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().ok()?;
            }
        }
    }
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    serde_json::from_slice(&body).ok()
}

/// The reply a gold agent gives to `prompt` (the task is found by its table's name).
fn gold_reply(prompt: &str, tasks: &[Value]) -> String {
    let Some(t) = tasks
        .iter()
        .find(|t| prompt.contains(t["table"]["table_name"].as_str().unwrap()))
    else {
        return "Action: Answer\nFinal Answer: [\"unknown task\"]".into();
    };
    let table = t["table"]["table_name"].as_str().unwrap();
    // The DB history starts with two turns (instruction, "Ok."): the third [/INST] is the
    // observation of the operation.
    if prompt.matches("[/INST]").count() <= 2 {
        format!("Action: Operation\n```sql\nSELECT * FROM `{table}`;\n```")
    } else {
        format!("Action: Answer\nFinal Answer: {}", t["label"])
    }
}

/// Starts a fake TGI server number `id`; its base URL.
fn fake_tgi(id: usize, mode: Mode, log: Log, tasks: Arc<Vec<Value>>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let (log, tasks) = (Arc::clone(&log), Arc::clone(&tasks));
            std::thread::spawn(move || {
                let Some(req) = read_request(&mut stream) else { return };
                let prompt = req["inputs"].as_str().unwrap_or_default().to_string();
                log.lock().unwrap().push((id, req));
                // Slow enough that every job gets tasks.
                std::thread::sleep(Duration::from_millis(30));
                let (status, body) = match mode {
                    Mode::Gold => {
                        let text = gold_reply(&prompt, &tasks);
                        let body = json!({
                            "generated_text": text,
                            "details": {"finish_reason": "eos_token", "generated_tokens": 7, "seed": null},
                        });
                        ("200 OK", body)
                    }
                    Mode::Fail => (
                        "500 Internal Server Error",
                        json!({"error": "model overloaded", "error_type": "overloaded"}),
                    ),
                };
                let body = body.to_string();
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    url
}

#[test]
fn endpoint_drives_tgi_servers_round_robin_with_agentbench_requests() {
    let tasks: Arc<Vec<Value>> = Arc::new(db_tasks().into_iter().take(4).collect());
    let log: Log = Arc::default();
    let a = fake_tgi(0, Mode::Gold, Arc::clone(&log), Arc::clone(&tasks));
    let b = fake_tgi(1, Mode::Gold, Arc::clone(&log), Arc::clone(&tasks));
    let endpoints = format!("{a},{b}/");
    let (r, stderr) = eval_db(&["--endpoint", &endpoints, "--jobs", "2", "--limit", "4", "--greedy"]);
    assert_eq!(r["chat_template"], "llama2");
    assert_eq!(r["endpoint"], endpoints.as_str());
    for x in r["results"].as_array().unwrap() {
        assert!(x["error"].is_null(), "{x}\n{stderr}");
        assert_eq!(x["model_calls"], 2, "{x}");
        assert_eq!(x["correct"], true, "{x}");
        assert_eq!(x["generated_tokens"], 14, "{x}");
    }
    let log = log.lock().unwrap();
    assert_eq!(log.len(), 8);
    let mut by_task: std::collections::HashMap<String, Vec<usize>> = Default::default();
    for (server, req) in log.iter() {
        let inputs = req["inputs"].as_str().unwrap();
        // FastChat's llama-2 rendering, no system prompt (the server adds BOS).
        assert!(inputs.starts_with("[INST] "), "{inputs:.80}");
        assert!(inputs.ends_with(" [/INST]"), "{inputs:.80}");
        let p = &req["parameters"];
        assert_eq!(p["max_new_tokens"], 128);
        assert_eq!(p["do_sample"], false);
        assert_eq!(p["truncate"], 3968);
        assert!(p["seed"].is_u64(), "{p}");
        // Greedy: no temperature (the published runs sent 0.7, which TGI samples at).
        assert!(p.get("temperature").is_none(), "{p}");
        let table = tasks
            .iter()
            .map(|t| t["table"]["table_name"].as_str().unwrap())
            .find(|t| inputs.contains(t))
            .unwrap();
        by_task.entry(table.to_string()).or_default().push(*server);
    }
    // Both servers were used, and each task's calls went to its job's one server.
    assert!(log.iter().any(|(s, _)| *s == 0) && log.iter().any(|(s, _)| *s == 1));
    for (task, servers) in &by_task {
        assert!(servers.iter().all(|s| *s == servers[0]), "{task}: {servers:?}");
    }
}

#[test]
fn endpoint_sampled_requests_carry_the_published_temperature() {
    let tasks: Arc<Vec<Value>> = Arc::new(db_tasks().into_iter().take(1).collect());
    let log: Log = Arc::default();
    let a = fake_tgi(0, Mode::Gold, Arc::clone(&log), Arc::clone(&tasks));
    let (r, _) = eval_db(&["--endpoint", &a, "--limit", "1", "--max-new-tokens", "64"]);
    assert_eq!(r["results"][0]["correct"], true);
    let log = log.lock().unwrap();
    let p = &log[0].1["parameters"];
    assert!((p["temperature"].as_f64().unwrap() - 0.7).abs() < 1e-6, "{p}");
    assert_eq!(p["max_new_tokens"], 64);
}

#[test]
fn endpoint_errors_are_reported_per_task() {
    let tasks: Arc<Vec<Value>> = Arc::new(Vec::new());
    let log: Log = Arc::default();
    let failing = fake_tgi(0, Mode::Fail, Arc::clone(&log), tasks);
    let (r, _) = eval_db_all_failing(&["--endpoint", &failing, "--limit", "1", "--greedy"]);
    let err = r["results"][0]["error"].as_str().unwrap();
    assert!(err.contains("HTTP 500") && err.contains("model overloaded"), "{err}");
    // No retry after an error status.
    assert_eq!(log.lock().unwrap().len(), 1);
    // A closed port: connection errors are retried, then reported.
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let (r, stderr) = eval_db_all_failing(&["--endpoint", &closed, "--limit", "1", "--greedy"]);
    let err = r["results"][0]["error"].as_str().unwrap();
    assert!(err.contains("cannot reach") && err.contains("4 attempts"), "{err}");
    assert!(stderr.contains("retrying"), "{stderr}");
}

#[test]
fn endpoint_refuses_the_gguf_template_and_a_model() {
    let out = edgeact(&[
        "eval",
        "db",
        "--tasks",
        fixture("dbbench_dev.jsonl").to_str().unwrap(),
        "--endpoint",
        "http://127.0.0.1:9",
        "--chat-template",
        "gguf",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("--chat-template gguf needs a local model"), "{stderr}");
    let out = edgeact(&[
        "eval",
        "db",
        "--tasks",
        fixture("dbbench_dev.jsonl").to_str().unwrap(),
        "--endpoint",
        "http://127.0.0.1:9",
        "-m",
        tiny_model().to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
}
