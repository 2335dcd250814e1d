//! `edgeact pull` against a fake Hugging Face Hub: a tiny HTTP/1.1 server on 127.0.0.1 (std
//! only, one thread, stops by itself) serving a tiny random Llama checkpoint in the Hub's URL
//! layout. Covers conversion, resume with `Range`, a server ignoring `Range`, sha256
//! rejection, the 401 hint, bearer tokens and a `.gguf` taken as is. No internet needed.

use crate::convert_support;

use edgeact_runtime::gguf::GgufFile;
use edgeact_runtime::quant::GgmlType;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One request as the server saw it.
#[derive(Clone, Debug)]
struct Seen {
    path: String,
    range: Option<String>,
    auth: Option<String>,
}

#[derive(Default)]
struct Behaviour {
    /// URL path (no query) → body.
    files: HashMap<String, Vec<u8>>,
    /// Paths whose first request is cut after half the body (connection closed).
    cut_first: HashSet<String>,
    /// Answer every request with 200 and the whole body.
    ignore_range: bool,
    /// Require `Authorization: Bearer TOKEN`, else 401.
    token: Option<String>,
    /// Paths whose first request gets a legal but short answer: half the body, with a
    /// Content-Length saying so.
    short_first: HashSet<String>,
    /// Paths whose first request gets half the body, then nothing (the connection held open).
    stall_first: HashSet<String>,
    /// Paths answered with their body twice over (more than the listing says).
    oversize: HashSet<String>,
}

struct Hub {
    url: String,
    log: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Hub {
    fn requests(&self, suffix: &str) -> Vec<Seen> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.path.ends_with(suffix))
            .cloned()
            .collect()
    }
}

/// A repository file: name, contents, whether it is an LFS file (gets a sha256), and a
/// digest to advertise instead of the real one.
struct RepoFile<'a> {
    name: &'a str,
    data: Vec<u8>,
    lfs: bool,
    fake_sha: Option<String>,
}

fn file(name: &str, data: Vec<u8>, lfs: bool) -> RepoFile<'_> {
    RepoFile {
        name,
        data,
        lfs,
        fake_sha: None,
    }
}

fn sha_hex(d: &[u8]) -> String {
    Sha256::digest(d).iter().map(|b| format!("{b:02x}")).collect()
}

/// Adds `repo` at revision `main` to the served files.
fn add_repo(b: &mut Behaviour, repo: &str, files: Vec<RepoFile>) {
    let siblings: Vec<serde_json::Value> = files
        .iter()
        .map(|f| {
            let mut s = serde_json::json!({"rfilename": f.name, "size": f.data.len()});
            if f.lfs {
                let sha = f.fake_sha.clone().unwrap_or_else(|| sha_hex(&f.data));
                s["lfs"] = serde_json::json!({"sha256": sha, "size": f.data.len()});
            }
            s
        })
        .collect();
    let info = serde_json::json!({"id": repo, "sha": "0123", "siblings": siblings});
    b.files.insert(
        format!("/api/models/{repo}/revision/main"),
        info.to_string().into_bytes(),
    );
    for f in files {
        b.files.insert(format!("/{repo}/resolve/main/{}", f.name), f.data);
    }
}

fn serve(b: Behaviour) -> Hub {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let log = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let (log2, stop2) = (log.clone(), stop.clone());
    let thread = std::thread::spawn(move || {
        // Bounded: stops when the test ends (Drop) or after two minutes regardless.
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut cut_done = HashSet::new();
        while !stop2.load(Ordering::SeqCst) && Instant::now() < deadline {
            match listener.accept() {
                Ok((conn, _)) => {
                    let _ = handle(conn, &b, &log2, &mut cut_done);
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    Hub {
        url,
        log,
        stop,
        thread: Some(thread),
    }
}

/// Serves one request and closes the connection.
fn handle(
    conn: TcpStream,
    b: &Behaviour,
    log: &Mutex<Vec<Seen>>,
    cut_done: &mut HashSet<String>,
) -> std::io::Result<()> {
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let target = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let path = target.split('?').next().unwrap().to_string();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let seen = Seen {
        path: path.clone(),
        range: headers.get("range").cloned(),
        auth: headers.get("authorization").cloned(),
    };
    log.lock().unwrap().push(seen.clone());
    let mut w = conn;
    let reply = |w: &mut TcpStream, status: &str, extra: &str, body: &[u8]| -> std::io::Result<()> {
        write!(
            w,
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n",
            body.len()
        )?;
        w.write_all(body)?;
        w.flush()
    };
    if let Some(t) = &b.token {
        if seen.auth.as_deref() != Some(format!("Bearer {t}").as_str()) {
            return reply(&mut w, "401 Unauthorized", "", b"{\"error\":\"gated\"}");
        }
    }
    let Some(body) = b.files.get(&path) else {
        return reply(&mut w, "404 Not Found", "", b"{\"error\":\"not found\"}");
    };
    if b.oversize.contains(&path) {
        return reply(&mut w, "200 OK", "", &body.repeat(2));
    }
    if b.short_first.contains(&path) && cut_done.insert(path.clone()) {
        return reply(&mut w, "200 OK", "", &body[..body.len() / 2]);
    }
    // Promises the whole file and sends half of it.
    let send_half = |w: &mut TcpStream| -> std::io::Result<()> {
        write!(
            w,
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )?;
        w.write_all(&body[..body.len() / 2])?;
        w.flush()
    };
    if b.stall_first.contains(&path) && cut_done.insert(path.clone()) {
        send_half(&mut w)?;
        // The connection stays open, silent, long after the client should have given up.
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(60));
            drop(w);
        });
        return Ok(());
    }
    if b.cut_first.contains(&path) && cut_done.insert(path.clone()) {
        // Then hang up.
        send_half(&mut w)?;
        return w.shutdown(std::net::Shutdown::Both);
    }
    let from = seen
        .range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse::<usize>().ok());
    match from {
        Some(n) if !b.ignore_range && n < body.len() => {
            let extra = format!("Content-Range: bytes {n}-{}/{}\r\n", body.len() - 1, body.len());
            reply(&mut w, "206 Partial Content", &extra, &body[n..])
        }
        _ => reply(&mut w, "200 OK", "", body),
    }
}

fn pull(hub: &Hub, home: &Path, cwd: &Path, args: &[&str], token: Option<&str>) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_edgeact"));
    c.arg("pull")
        .args(args)
        .arg("-q")
        .current_dir(cwd)
        .env("HF_ENDPOINT", &hub.url)
        .env("HF_HOME", home)
        .env_remove("HF_TOKEN");
    if let Some(t) = token {
        c.env("HF_TOKEN", t);
    }
    c.output().unwrap()
}

/// The partial downloads in a cache directory.
fn parts(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".part"))
                .collect()
        })
        .unwrap_or_default()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The tiny checkpoint's files, read back from a directory written by `convert_support`.
fn tiny_files(dir: &Path) -> Vec<RepoFile<'static>> {
    convert_support::write_checkpoint(dir, false, None);
    let read = |n: &str| std::fs::read(dir.join(n)).unwrap();
    vec![
        file("README.md", b"# tiny\n".to_vec(), false),
        file("config.json", read("config.json"), false),
        file("tokenizer.model", read("tokenizer.model"), true),
        file("model.safetensors", read("model.safetensors"), true),
    ]
}

/// A minimal valid GGUF v3: no tensors, one string key.
fn tiny_gguf() -> Vec<u8> {
    let mut v = b"GGUF".to_vec();
    v.extend(3u32.to_le_bytes());
    v.extend(0u64.to_le_bytes());
    v.extend(1u64.to_le_bytes());
    let key = b"general.architecture";
    v.extend((key.len() as u64).to_le_bytes());
    v.extend(key);
    v.extend(8u32.to_le_bytes()); // string
    v.extend(5u64.to_le_bytes());
    v.extend(b"llama");
    v
}

#[test]
fn pull_converts_resumes_and_reuses_the_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let files = tiny_files(&src);
    let st_len = files[3].data.len();
    let mut b = Behaviour::default();
    add_repo(&mut b, "test/tiny", files);
    b.cut_first.insert("/test/tiny/resolve/main/model.safetensors".into());
    let hub = serve(b);
    let home = tmp.path().join("hf");

    let o = pull(&hub, &home, tmp.path(), &["test/tiny", "--type", "q8_0"], None);
    assert!(o.status.success(), "{}", stderr(&o));
    // Default output name, in the current directory.
    let out = tmp.path().join("tiny.q8_0.gguf");
    let g = GgufFile::open(&out).unwrap();
    assert_eq!(g.get_str("general.architecture").unwrap(), Some("llama"));
    assert_eq!(g.tensor("blk.0.attn_q.weight").unwrap().info.ty, GgmlType::Q8_0);
    assert_eq!(g.tensor("output.weight").unwrap().info.ty, GgmlType::Q8_0);
    assert!(g.get_array("tokenizer.ggml.tokens").is_ok());

    // The first request was cut at half; the second asked for the rest.
    let reqs = hub.requests("/model.safetensors");
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    assert_eq!(reqs[0].range, None);
    assert_eq!(
        reqs[1].range.as_deref(),
        Some(format!("bytes={}-", st_len / 2).as_str())
    );
    assert!(hub.requests("/README.md").is_empty(), "README.md is not needed");
    let cache = home.join("edgeact/test/tiny/main");
    assert_eq!(
        std::fs::metadata(cache.join("model.safetensors")).unwrap().len(),
        st_len as u64
    );
    assert!(parts(&cache).is_empty(), "{:?}", parts(&cache));

    // A second pull verifies the cached LFS files and does not download them again.
    let o = pull(
        &hub,
        &home,
        tmp.path(),
        &["test/tiny", "--type", "f16", "-o", "b.gguf"],
        None,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(hub.requests("/model.safetensors").len(), 2);
    assert_eq!(hub.requests("/tokenizer.model").len(), 1);
    let g = GgufFile::open(tmp.path().join("b.gguf")).unwrap();
    assert_eq!(g.tensor("blk.0.attn_q.weight").unwrap().info.ty, GgmlType::F16);
}

#[test]
fn wrong_sha256_is_rejected_and_deleted() {
    let tmp = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let mut f = file("model.gguf", data, true);
    f.fake_sha = Some("0".repeat(64));
    let mut b = Behaviour::default();
    add_repo(&mut b, "test/bad", vec![f]);
    let hub = serve(b);
    let home = tmp.path().join("hf");
    let o = pull(&hub, &home, tmp.path(), &["test/bad"], None);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains("sha256 mismatch"), "{e}");
    let cache = home.join("edgeact/test/bad/main");
    assert!(!cache.join("model.gguf").exists() && parts(&cache).is_empty());
    assert!(!tmp.path().join("model.gguf").exists());
}

#[test]
fn gated_repo_hints_at_hf_token_and_sends_it() {
    let tmp = tempfile::tempdir().unwrap();
    let gguf = tiny_gguf();
    let mut b = Behaviour {
        token: Some("hf_secret".into()),
        ..Default::default()
    };
    add_repo(
        &mut b,
        "test/gated",
        vec![
            file("README.md", b"x".to_vec(), false),
            file("tiny.gguf", gguf.clone(), true),
        ],
    );
    let hub = serve(b);
    let home = tmp.path().join("hf");
    let o = pull(&hub, &home, tmp.path(), &["test/gated"], None);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains("401") && e.contains("HF_TOKEN"), "{e}");

    // The token file under HF_HOME is used when HF_TOKEN is unset.
    std::fs::create_dir_all(&home).unwrap();
    std::fs::write(home.join("token"), "hf_secret\n").unwrap();
    let o = pull(&hub, &home, tmp.path(), &["test/gated", "-o", "g.gguf"], None);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read(tmp.path().join("g.gguf")).unwrap(), gguf);

    // A wrong HF_TOKEN overrides the file and is reported as refused.
    let o = pull(
        &hub,
        &home,
        tmp.path(),
        &["test/gated", "-o", "h.gguf"],
        Some("hf_wrong"),
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("refused"), "{}", stderr(&o));
}

#[test]
fn single_gguf_is_taken_as_is_even_if_the_server_ignores_range() {
    let tmp = tempfile::tempdir().unwrap();
    let mut gguf = tiny_gguf();
    // Padding after the metadata keeps it a valid file and makes the cut worth resuming.
    gguf.resize(gguf.len() + 50_000, 0);
    let mut b = Behaviour {
        ignore_range: true,
        ..Default::default()
    };
    add_repo(&mut b, "test/ready", vec![file("ready-Q4_0.gguf", gguf.clone(), true)]);
    b.cut_first.insert("/test/ready/resolve/main/ready-Q4_0.gguf".into());
    let hub = serve(b);
    let home = tmp.path().join("hf");
    let o = pull(&hub, &home, tmp.path(), &["test/ready", "--type", "q8_0"], None);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read(tmp.path().join("ready-Q4_0.gguf")).unwrap(), gguf);
    let reqs = hub.requests("/ready-Q4_0.gguf");
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    assert!(reqs[1].range.is_some(), "the retry asks for the rest");
}

/// A short but well-formed answer is resumed (it was taken as the whole file, then deleted for
/// its size); a stalled body is retried from where it stopped (it hung forever); a body longer
/// than the listing is refused without writing past the listed size.
#[test]
fn short_stalled_and_oversized_downloads() {
    let tmp = tempfile::tempdir().unwrap();
    let mut gguf = tiny_gguf();
    gguf.resize(gguf.len() + 50_000, 0);
    let path = "/test/ready/resolve/main/ready-Q4_0.gguf";
    for case in ["short", "stall", "oversize"] {
        let mut b = Behaviour::default();
        add_repo(&mut b, "test/ready", vec![file("ready-Q4_0.gguf", gguf.clone(), true)]);
        match case {
            "short" => b.short_first.insert(path.into()),
            "stall" => b.stall_first.insert(path.into()),
            _ => b.oversize.insert(path.into()),
        };
        let hub = serve(b);
        let home = tmp.path().join(format!("hf-{case}"));
        let cwd = tmp.path().join(case);
        std::fs::create_dir_all(&cwd).unwrap();
        let mut c = Command::new(env!("CARGO_BIN_EXE_edgeact"));
        c.args(["pull", "test/ready", "--type", "q8_0", "-q"])
            .current_dir(&cwd)
            .env("HF_ENDPOINT", &hub.url)
            .env("HF_HOME", &home)
            .env("EDGEACT_PULL_STALL_SECS", "1")
            .env_remove("HF_TOKEN");
        let started = Instant::now();
        let o = c.output().unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{case}: {:?}",
            started.elapsed()
        );
        let reqs = hub.requests("/ready-Q4_0.gguf");
        if case == "oversize" {
            assert!(
                !o.status.success() && stderr(&o).contains("sent more than the"),
                "{}",
                stderr(&o)
            );
            assert_eq!(reqs.len(), 1, "a broken server is not asked again: {reqs:?}");
            continue;
        }
        assert!(o.status.success(), "{case}: {}", stderr(&o));
        assert_eq!(std::fs::read(cwd.join("ready-Q4_0.gguf")).unwrap(), gguf, "{case}");
        assert_eq!(reqs.len(), 2, "{case}: {reqs:?}");
        let half = format!("bytes={}-", gguf.len() / 2);
        assert!(
            reqs[1..].iter().all(|r| r.range.as_deref() == Some(half.as_str())),
            "{case}: {reqs:?}"
        );
    }
}

/// A branch that moved: files the new listing does not name, and a partial download of other
/// contents, are removed from the revision's cache before the pull, so the conversion reads
/// the new commit's files only and nothing stale is resumed.
#[test]
fn a_moved_branch_leaves_nothing_stale_in_the_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let ck = tmp.path().join("ck");
    std::fs::create_dir_all(&ck).unwrap();
    let home = tmp.path().join("hf");
    let cache = home.join("edgeact/test/tiny/main");
    std::fs::create_dir_all(&cache).unwrap();
    // What an earlier commit left: a shard index that would win over model.safetensors, and a
    // part of the weights' earlier contents.
    std::fs::write(cache.join("model.safetensors.index.json"), b"{\"weight_map\": {}}").unwrap();
    std::fs::write(cache.join("model.safetensors.0123456789abcdef.part"), vec![7u8; 1000]).unwrap();
    let mut b = Behaviour::default();
    add_repo(&mut b, "test/tiny", tiny_files(&ck));
    let hub = serve(b);
    let o = pull(&hub, &home, tmp.path(), &["test/tiny", "--type", "f16"], None);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!cache.join("model.safetensors.index.json").exists());
    assert!(parts(&cache).is_empty(), "{:?}", parts(&cache));
    let reqs = hub.requests("/model.safetensors");
    assert_eq!(reqs.len(), 1, "nothing resumed: {reqs:?}");
    assert_eq!(reqs[0].range, None);
    let g = GgufFile::open(tmp.path().join("tiny.f16.gguf")).unwrap();
    assert!(g.tensor("blk.0.attn_q.weight").is_ok());
}

#[test]
fn missing_repo_and_file_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let mut b = Behaviour::default();
    add_repo(
        &mut b,
        "test/two",
        vec![file("a.gguf", tiny_gguf(), true), file("b.gguf", tiny_gguf(), true)],
    );
    let hub = serve(b);
    let home = tmp.path().join("hf");
    let o = pull(&hub, &home, tmp.path(), &["test/nope"], None);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("404"), "{}", stderr(&o));
    let o = pull(&hub, &home, tmp.path(), &["test/two"], None);
    assert!(stderr(&o).contains("--file"), "{}", stderr(&o));
    let o = pull(&hub, &home, tmp.path(), &["test/two", "--file", "b.gguf"], None);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(tmp.path().join("b.gguf").exists());
    let o = pull(&hub, &home, tmp.path(), &["../x"], None);
    assert!(stderr(&o).contains("invalid repository"), "{}", stderr(&o));
    // Nothing listens here any more: a network error, not a panic.
    drop(hub);
    let dead = Hub {
        url: "http://127.0.0.1:9".into(),
        log: Default::default(),
        stop: Default::default(),
        thread: None,
    };
    let o = pull(&dead, &home, tmp.path(), &["test/two"], None);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("network error"), "{}", stderr(&o));
}

/// The quickstart's `EDGEACT_MODEL=agentlm-7b` path with a reachable Hub: it pulls
/// THUDM/agentlm-7b (here the tiny checkpoint under that name), converts it to Q4_K_M, says
/// which model runs, and runs the chat turn and the `agent db` episode on it.
#[test]
fn quickstart_pulls_agentlm_when_the_hub_answers() {
    if Command::new("curl").arg("--version").output().is_err() {
        eprintln!("skipped: curl is not installed (the quickstart's Hub check needs it)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let mut b = Behaviour::default();
    add_repo(&mut b, "THUDM/agentlm-7b", tiny_files(&src));
    let hub = serve(b);
    let models = tmp.path().join("models");
    let quickstart = |hub_url: &str| {
        Command::new("bash")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/quickstart.sh"))
            .env("EDGEACT_MODEL", "agentlm-7b")
            .env("EDGEACT_BIN", env!("CARGO_BIN_EXE_edgeact"))
            .env("EDGEACT_MODELS_DIR", &models)
            .env("EDGEACT_THREADS", "2")
            .env("HF_ENDPOINT", hub_url)
            .env("HF_HOME", tmp.path().join("hf"))
            .env_remove("HF_TOKEN")
            .output()
            .unwrap()
    };
    let o = quickstart(&hub.url);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}\n{}", stderr(&o));
    let gguf = models.join("agentlm-7b.q4_k_m.gguf");
    assert!(
        out.contains(&format!("== model: {} (AgentLM-7B, Q4_K_M)", gguf.display())),
        "{out}"
    );
    assert!(!out.contains("SmolLM2"), "fell back: {out}");
    assert!(out.contains("== agent episode wall time"), "{out}");
    assert!(stderr(&o).contains("tok/s"), "no speed line: {}", stderr(&o));
    let g = GgufFile::open(&gguf).unwrap();
    assert_eq!(g.tensor("blk.0.attn_q.weight").unwrap().info.ty, GgmlType::Q4_K);
    assert_eq!(hub.requests("/model.safetensors").len(), 1);

    // A second run uses the pulled file, even with the Hub gone.
    drop(hub);
    let o = quickstart("http://127.0.0.1:9");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}\n{}", stderr(&o));
    assert!(out.contains("== using the AgentLM-7B pulled earlier"), "{out}");
}
