//! Real clients against `edgeact serve` (issue #13, items 4 and 5), each test starting its own
//! server on a loopback port (`--port 0`) and stopping it with SIGTERM (exit 0 expected):
//! - `curl`: /health, /info, /generate, /generate_stream and /v1/chat/completions streamed
//!   (`-N`), /v1/models, /metrics, a bad body;
//! - the `openai` Python SDK from PyPI (`scripts/serve-clients/openai_client.py`);
//! - AgentBench's TGIAgent, byte for byte (`scripts/serve-clients/agentbench_tgi_client.py`):
//!   a whole DB and a whole OS dev episode run by `edgeact eval --log` are replayed call by
//!   call through HTTP, FastChat 0.2.31's rendering of each history must equal edgeact's, the
//!   server must answer TGIAgent's exact request, and its greedy answers (and its T = 0.7
//!   seed-0 answer to the first call) must equal what `eval` generated in-process; scripted
//!   multi-turn episodes check the request shape over longer histories;
//! - a soak test (`scripts/serve-clients/soak.py`): 64 concurrent clients mixing streaming,
//!   cancellation and garbage; every valid request answered, the server up, RSS flat,
//!   busy sequences back to 0. `EDGEACT_SOAK_SECS` sets its length (default 30).
//!
//! The Python clients run in the venv `scripts/setup.sh` creates (`EDGEACT_PYCLIENTS`, default
//! `~/.cache/edgeact/pyclients`); without it those parts are skipped with a message (CI
//! creates it). Set `EDGEACT_SHARED` to relocate the shared data directory.

use crate::cli_support;

use cli_support::{fixture, os_rootfs, repo, smollm2, tiny_model};
use edgeact_agent::render::{
    db_initial_history, os_initial_history, render_llama2, trim_history, ChatTemplate, Message,
};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// The tests share two cores: one server under load at a time keeps the timings sane.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn client_script(name: &str) -> PathBuf {
    repo().join("scripts/serve-clients").join(name)
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
            "skipped the Python clients: no venv at {} (scripts/setup.sh creates it; EDGEACT_PYCLIENTS relocates it)",
            dir.display()
        );
        None
    }
}

fn have_curl() -> bool {
    let ok = Command::new("curl")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("skipped the curl checks: no curl");
    }
    ok
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs `cmd` to completion, killing it (and failing) after `limit`: a guard against hangs.
fn run_guarded(cmd: &mut Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"));
    // Drain both pipes while waiting so a chatty child never blocks on a full pipe.
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = std::io::Read::read_to_end(&mut out, &mut v);
        v
    });
    let t_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = std::io::Read::read_to_end(&mut err, &mut v);
        v
    });
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            let (o, e) = (t_out.join().unwrap(), t_err.join().unwrap());
            panic!(
                "{cmd:?} still running after {limit:?} (hung)\nstdout: {}\nstderr: {}",
                text(&o),
                text(&e)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Output {
        status,
        stdout: t_out.join().unwrap(),
        stderr: t_err.join().unwrap(),
    }
}

/// Runs a client script with the venv's Python; its output goes to the test log; fails the
/// test unless it exits 0.
fn python_client(py: &Path, script: &str, args: &[&str], limit: Duration) -> String {
    let out = run_guarded(Command::new(py).arg(client_script(script)).args(args), limit);
    let (o, e) = (text(&out.stdout), text(&out.stderr));
    eprintln!("--- {script} {}\n{o}{e}", args.join(" "));
    assert!(out.status.success(), "{script} failed ({}):\n{o}\n{e}", out.status);
    o
}

/// A running `edgeact serve` on 127.0.0.1 and an OS-chosen port.
struct Server {
    child: Child,
    url: String,
    log: Arc<Mutex<String>>,
    stopped: bool,
}

impl Server {
    fn start(model: &Path, extra: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_edgeact"))
            .arg("serve")
            .arg("-m")
            .arg(model)
            .args(["--host", "127.0.0.1", "--port", "0"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start edgeact serve");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(i) = line.find("listening on http://") {
                    let url = line[i + "listening on ".len()..]
                        .trim()
                        .trim_end_matches('/')
                        .to_string();
                    let _ = tx.send(url);
                }
                if let Ok(mut l) = sink.lock() {
                    l.push_str(&line);
                    l.push('\n');
                }
            }
        });
        let url = match rx.recv_timeout(Duration::from_secs(300)) {
            Ok(u) => u,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "edgeact serve printed no `listening on` line; stderr:\n{}",
                    log.lock().map(|l| l.clone()).unwrap_or_default()
                );
            }
        };
        assert!(url.starts_with("http://127.0.0.1:"), "{url}");
        Server {
            child,
            url,
            log,
            stopped: false,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// SIGTERM; the server must exit 0 within a minute.
    fn stop(mut self) {
        let pid = self.pid().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        let start = Instant::now();
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if start.elapsed() > Duration::from_secs(60) {
                panic!(
                    "edgeact serve still running 60 s after SIGTERM; stderr:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        self.stopped = true;
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(
            status.code(),
            Some(0),
            "exit after SIGTERM: {status}; stderr:\n{}",
            self.log()
        );
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if !self.stopped {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `curl -sS ARGS -w '\n%{http_code}'`: (body, status).
fn curl(args: &[&str]) -> (String, u16) {
    let out = run_guarded(
        Command::new("curl")
            .args(["-sS", "--max-time", "120"])
            .args(args)
            .args(["-w", "\n%{http_code}"]),
        Duration::from_secs(150),
    );
    assert!(out.status.success(), "curl {args:?}: {}", text(&out.stderr));
    let s = text(&out.stdout);
    let (body, code) = s.rsplit_once('\n').unwrap_or(("", &s));
    (body.to_string(), code.trim().parse().unwrap_or(0))
}

fn json_of(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// The `data:` payloads of an SSE body.
fn sse_data(body: &str) -> Vec<String> {
    body.lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|d| d.trim().to_string())
        .collect()
}

fn curl_checks(url: &str) {
    let (body, code) = curl(&[&format!("{url}/health")]);
    assert_eq!(code, 200, "/health: {body}");

    let (body, code) = curl(&[&format!("{url}/info")]);
    assert_eq!(code, 200, "/info: {body}");
    assert!(json_of(&body).is_object(), "{body}");

    let gen = r#"{"inputs":"Once upon a time","parameters":{"max_new_tokens":8}}"#;
    let ct = "Content-Type: application/json";
    let (body, code) = curl(&["-X", "POST", &format!("{url}/generate"), "-H", ct, "-d", gen]);
    assert_eq!(code, 200, "/generate: {body}");
    assert!(json_of(&body)["generated_text"].is_string(), "{body}");

    let (body, code) = curl(&[
        "-N",
        "-X",
        "POST",
        &format!("{url}/generate_stream"),
        "-H",
        ct,
        "-d",
        gen,
    ]);
    assert_eq!(code, 200, "/generate_stream: {body}");
    let events: Vec<Value> = sse_data(&body).iter().map(|d| json_of(d)).collect();
    assert!(!events.is_empty(), "{body}");
    assert!(events.last().unwrap()["generated_text"].is_string(), "{body}");
    assert!(events.iter().all(|e| e["token"].is_object()), "{body}");

    let chat = r#"{"messages":[{"role":"user","content":"Tell me a story."}],"max_tokens":8,"stream":true}"#;
    let (body, code) = curl(&["-N", &format!("{url}/v1/chat/completions"), "-H", ct, "-d", chat]);
    assert_eq!(code, 200, "/v1/chat/completions: {body}");
    let data = sse_data(&body);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{body}");
    assert!(data.len() >= 2, "{body}");
    for d in &data[..data.len() - 1] {
        assert_eq!(json_of(d)["object"], "chat.completion.chunk", "{body}");
    }

    let (body, code) = curl(&[&format!("{url}/v1/models")]);
    assert_eq!(code, 200, "/v1/models: {body}");
    assert!(!json_of(&body)["data"].as_array().expect("data").is_empty(), "{body}");

    let (body, code) = curl(&["-X", "POST", &format!("{url}/generate"), "-H", ct, "-d", "not json"]);
    assert!((400..500).contains(&code), "bad JSON: {code} {body}");
    let (body, code) = curl(&[
        &format!("{url}/v1/chat/completions"),
        "-H",
        ct,
        "-d",
        "{\"messages\": 5}",
    ]);
    assert!((400..500).contains(&code), "bad chat: {code} {body}");
    assert!(
        json_of(&body)["error"]["message"].is_string(),
        "OpenAI error shape: {body}"
    );

    let (body, code) = curl(&[&format!("{url}/metrics")]);
    assert_eq!(code, 200, "/metrics: {body}");
    assert!(body.contains("busy_sequences"), "{body}");
}

#[test]
fn curl_and_the_openai_sdk_against_stories260k() {
    let _g = serial();
    let server = Server::start(&tiny_model(), &["--parallel", "4", "--threads", "2", "--seed", "0"]);
    if have_curl() {
        curl_checks(&server.url);
    }
    if let Some(py) = venv_python() {
        python_client(
            &py,
            "openai_client.py",
            &["--url", &server.url],
            Duration::from_secs(600),
        );
    }
    server.stop();
}

#[test]
fn api_key_is_required_by_both_apis() {
    let _g = serial();
    let server = Server::start(
        &tiny_model(),
        &["--parallel", "2", "--threads", "2", "--api-key", "sekrit"],
    );
    let url = &server.url;
    if have_curl() {
        let gen = r#"{"inputs":"Once","parameters":{"max_new_tokens":2}}"#;
        let ct = "Content-Type: application/json";
        let (body, code) = curl(&["-X", "POST", &format!("{url}/generate"), "-H", ct, "-d", gen]);
        assert_eq!(code, 401, "/generate without a key: {body}");
        let (body, code) = curl(&[&format!("{url}/v1/models")]);
        assert_eq!(code, 401, "/v1/models without a key: {body}");
        assert!(json_of(&body)["error"]["message"].is_string(), "{body}");
        let (body, code) = curl(&[&format!("{url}/v1/models"), "-H", "Authorization: Bearer wrong"]);
        assert_eq!(code, 401, "/v1/models with a wrong key: {body}");
        let auth = "Authorization: Bearer sekrit";
        let (body, code) = curl(&[
            "-X",
            "POST",
            &format!("{url}/generate"),
            "-H",
            ct,
            "-H",
            auth,
            "-d",
            gen,
        ]);
        assert_eq!(code, 200, "/generate with the key: {body}");
    }
    if let Some(py) = venv_python() {
        python_client(
            &py,
            "openai_client.py",
            &["--url", url, "--api-key", "sekrit"],
            Duration::from_secs(600),
        );
    }
    server.stop();
}

/// One `eval` episode's model calls as the replay client reads them: per call, the trimmed
/// history the loop sent (rebuilt from the transcript's replies and observations the way the
/// loop builds it), edgeact's rendering of it, and the reply.
fn calls_from_log(initial: Vec<Message>, log: &Path) -> Vec<Value> {
    let mut history = initial;
    let mut calls = Vec::new();
    let body = std::fs::read_to_string(log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
    for line in body.lines() {
        let e: Value = serde_json::from_str(line).unwrap();
        assert!(e["task"].as_u64().unwrap_or(0) == 0, "one task expected: {line}");
        match e["event"].as_str() {
            Some("reply") => {
                let reply = e["reply"]["text"].as_str().unwrap().to_string();
                let sent = trim_history(&history);
                calls.push(json!({
                    "edgeact_prompt": render_llama2(&sent, &ChatTemplate::Eval),
                    "messages": sent,
                    "reply": reply,
                    "stats": e["reply"]["stats"],
                }));
                history.push(Message::agent(reply));
            }
            Some("observation") => history.push(Message::user(e["message"].as_str().unwrap())),
            _ => {}
        }
    }
    assert!(!calls.is_empty(), "no model call in {}:\n{body}", log.display());
    calls
}

fn db_task0_history() -> Vec<Message> {
    let line = std::fs::read_to_string(fixture("dbbench_dev.jsonl")).unwrap();
    let t: Value = serde_json::from_str(line.lines().next().unwrap()).unwrap();
    db_initial_history(
        t["description"].as_str().unwrap(),
        t["add_description"].as_str().unwrap_or(""),
    )
}

fn os_task_history(task: &Value) -> Vec<Message> {
    os_initial_history(task["description"].as_str().unwrap())
}

fn os_tasks() -> Vec<Value> {
    serde_json::from_str(&std::fs::read_to_string(fixture("os_interaction/data/dev.json")).unwrap()).unwrap()
}

/// Runs `edgeact eval PROTOCOL ARGS --log LOG`; `None` (printed) when the OS sandbox cannot
/// start on this machine.
fn eval_episode(protocol: &str, args: &[&str], log: &Path) -> Option<()> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_edgeact"));
    cmd.args(["eval", protocol]).args(args).arg("--log").arg(log);
    if protocol == "os" {
        cmd.args(["--rootfs", os_rootfs()]);
    }
    let out = run_guarded(&mut cmd, Duration::from_secs(900));
    let err = text(&out.stderr);
    if protocol == "os" && !out.status.success() && err.contains("starting the OS sandbox") {
        eprintln!("skipped the OS episode: the sandbox cannot start here: {err}");
        return None;
    }
    assert!(out.status.success(), "eval {protocol} {args:?}: {err}");
    // `eval` counts a run that stopped on an error as failed and still exits 0: its `end`
    // record says why, which is what a replay without model calls would otherwise hide.
    let body = std::fs::read_to_string(log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
    for line in body.lines() {
        let e: Value = serde_json::from_str(line).unwrap();
        if e["event"] == "end" {
            if let Some(why) = e["error"].as_str() {
                panic!("eval {protocol} {args:?}: the run stopped on an error: {why}\nstderr: {err}");
            }
        }
    }
    Some(())
}

struct Replay {
    label: String,
    calls_file: PathBuf,
    expect: &'static str,
}

fn write_calls(dir: &Path, label: &str, calls: Vec<Value>, expect: &'static str) -> Replay {
    let calls_file = dir.join(format!("{label}.calls.json"));
    std::fs::write(&calls_file, json!({"label": label, "calls": calls}).to_string()).unwrap();
    Replay {
        label: label.to_string(),
        calls_file,
        expect,
    }
}

/// Runs one DB and one OS dev episode (task 0) in-process with `eval`, greedy and T = 0.7
/// seed 0; returns the replays to run against a server of the same model.
fn model_episodes(dir: &Path, model: &Path, tag: &str, extra: &[&str]) -> Vec<Replay> {
    let model = model.to_str().unwrap();
    let db_tasks = fixture("dbbench_dev.jsonl");
    let os_file = fixture("os_interaction/data/dev.json");
    let os0 = os_task_history(&os_tasks()[0]);
    let mut out = Vec::new();
    for (protocol, tasks, initial) in [
        ("db", db_tasks.to_str().unwrap(), db_task0_history()),
        ("os", os_file.to_str().unwrap(), os0),
    ] {
        for (mode, flags, expect) in [
            ("greedy", vec!["--greedy"], "greedy"),
            ("sampled", vec!["--seeds", "1"], "sampled-first"),
        ] {
            let log = dir.join(format!("{tag}-{protocol}-{mode}.jsonl"));
            let mut args = vec!["-m", model, "--tasks", tasks, "--limit", "1", "--threads", "2"];
            args.extend_from_slice(&flags);
            args.extend_from_slice(extra);
            if eval_episode(protocol, &args, &log).is_none() {
                continue;
            }
            let calls = calls_from_log(initial.clone(), &log);
            out.push(write_calls(dir, &format!("{tag}-{protocol}-{mode}"), calls, expect));
        }
    }
    out
}

/// Scripted multi-turn episodes (three model calls each, with observations between them):
/// the request shape over longer `</s><s>` histories, whatever the model answers.
fn scripted_episodes(dir: &Path) -> Vec<Replay> {
    let mut out = Vec::new();
    let db_script = dir.join("db-script.jsonl");
    let db_replies = [
        "Let me look.\nAction: Operation\n```sql\nSELECT * FROM `US Ambassadors and Envoy Extraordinary to Colombia`;\n```",
        "Now the row.\nAction: Operation\n```sql\nSELECT `Presentation of Credentials` FROM `US Ambassadors and Envoy Extraordinary to Colombia` WHERE `Termination of Mission` = 'August 15, 2000';\n```",
        "Action: Answer\nFinal Answer: [\"March 19, 1998\"]",
    ];
    std::fs::write(
        &db_script,
        json!({"index": 0, "replies": db_replies}).to_string() + "\n",
    )
    .unwrap();
    let log = dir.join("scripted-db.jsonl");
    let db_tasks = fixture("dbbench_dev.jsonl");
    let args = [
        "--tasks",
        db_tasks.to_str().unwrap(),
        "--limit",
        "1",
        "--scripted",
        db_script.to_str().unwrap(),
    ];
    eval_episode("db", &args, &log).expect("db needs no sandbox");
    out.push(write_calls(
        dir,
        "scripted-db",
        calls_from_log(db_task0_history(), &log),
        "none",
    ));

    // OS dev task 6 (hidden files in /home), alone in a task file beside the dev scripts.
    let task6 = os_tasks()[6].clone();
    let os_file = dir.join("os-task6.json");
    std::fs::write(&os_file, json!([task6]).to_string()).unwrap();
    let os_script = dir.join("os-script.jsonl");
    let os_replies = [
        "Think: list them.\n\nAct: bash\n\n```bash\nls -a /home\n```",
        "Think: count.\n\nAct: bash\n\n```bash\nls -a /home | grep '^\\.' | wc -l\n```",
        "Think: 8\n\nAct: answer(8)",
    ];
    std::fs::write(
        &os_script,
        json!({"index": 0, "replies": os_replies}).to_string() + "\n",
    )
    .unwrap();
    let log = dir.join("scripted-os.jsonl");
    let scripts = fixture("os_interaction/scripts/dev");
    let args = [
        "--tasks",
        os_file.to_str().unwrap(),
        "--scripts",
        scripts.to_str().unwrap(),
        "--scripted",
        os_script.to_str().unwrap(),
    ];
    if eval_episode("os", &args, &log).is_some() {
        let calls = calls_from_log(os_task_history(&task6), &log);
        assert_eq!(calls.len(), 3, "{calls:?}");
        out.push(write_calls(dir, "scripted-os", calls, "none"));
    }
    out
}

fn replay_one(py: &Path, url: &str, r: &Replay, max_tokens: usize) {
    let mt = max_tokens.to_string();
    let calls = r.calls_file.to_str().unwrap();
    let args = [
        "replay",
        "--url",
        url,
        "--calls",
        calls,
        "--max-tokens",
        &mt,
        "--expect",
        r.expect,
    ];
    let out = python_client(py, "agentbench_tgi_client.py", &args, Duration::from_secs(1800));
    assert!(out.contains(&format!("tgi-replay: ok {}", r.label)), "{out}");
}

/// Replays every episode against `model` served with `server_args`. A sampled replay gets a
/// server of its own: its first call must be the server's first sight of that prompt, as it
/// was for `eval` (a prefix-cache hit evaluates the prompt's last token alone, which moves the
/// logits by float rounding and can move a T = 0.7 sample); the others share one server.
fn replay_all(py: &Path, model: &Path, server_args: &[&str], replays: &[Replay], max_tokens: usize) {
    for r in replays.iter().filter(|r| r.expect == "sampled-first") {
        let server = Server::start(model, server_args);
        replay_one(py, &server.url, r, max_tokens);
        server.stop();
    }
    let server = Server::start(model, server_args);
    for r in replays.iter().filter(|r| r.expect != "sampled-first") {
        replay_one(py, &server.url, r, max_tokens);
    }
    server.stop();
}

/// stories260K: 512-token context, so TGIAgent is configured with `max_tokens` 512 (truncate
/// 384 = eval's prompt limit, 512 - 128). Also the scripted multi-turn episodes.
#[test]
fn agentbench_tgi_client_replays_dev_episodes_stories260k() {
    let _g = serial();
    let Some(py) = venv_python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut replays = model_episodes(dir.path(), &tiny_model(), "stories260k", &[]);
    replays.extend(scripted_episodes(dir.path()));
    let server_args = ["--parallel", "2", "--threads", "2", "--seed", "0"];
    replay_all(&py, &tiny_model(), &server_args, &replays, 512);
}

/// SmolLM2-135M with AgentBench's llama-2 prompts (`--chat-template llama2`) and a 4096-token
/// context: TGIAgent's request exactly as the issue quotes it (`truncate` 3968).
#[test]
fn agentbench_tgi_client_replays_dev_episodes_smollm2() {
    let _g = serial();
    let Some(model) = smollm2() else {
        eprintln!("skipped: no SmolLM2 (scripts/fetch-smollm2.sh)");
        return;
    };
    let Some(py) = venv_python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let replays = model_episodes(
        dir.path(),
        &model,
        "smollm2",
        &["--chat-template", "llama2", "--ctx", "4096"],
    );
    let server_args = ["--parallel", "2", "--threads", "2", "--seed", "0", "--ctx", "4096"];
    replay_all(&py, &model, &server_args, &replays, 4096);
}

#[test]
fn soak_64_clients_streaming_cancelling_and_garbage() {
    let _g = serial();
    let Some(py) = venv_python() else { return };
    let secs = std::env::var("EDGEACT_SOAK_SECS").unwrap_or_else(|_| "30".into());
    let limit = Duration::from_secs(secs.parse::<u64>().expect("EDGEACT_SOAK_SECS: seconds") + 600);
    let server = Server::start(
        &tiny_model(),
        &["--parallel", "8", "--threads", "2", "--queue", "256", "--seed", "0"],
    );
    let pid = server.pid().to_string();
    let out = python_client(
        &py,
        "soak.py",
        &[
            "--url",
            &server.url,
            "--pid",
            &pid,
            "--seconds",
            &secs,
            "--clients",
            "64",
        ],
        limit,
    );
    assert!(out.contains("soak: ok"), "{out}");
    if have_curl() {
        let (body, code) = curl(&[&format!("{}/health", server.url)]);
        assert_eq!(code, 200, "/health after the soak: {body}");
    }
    server.stop();
}
