//! The OS commands' defaults and inputs, through the binary: `sandbox`, `agent os` and
//! `eval os` run on the built Debian root unless `--rootfs host` is asked for (and say how to
//! get either when it is missing), `sandbox -- ARGS` quotes its arguments, task files cannot
//! make the CLI read host paths, and AgentBench's numbered `data/N/x.json` ↔ `scripts/N/`
//! layout is found.
//!
//! Tests that need the namespace sandbox print why they skip when it cannot start here; the
//! ones that need the built root skip when `edgeact rootfs build` has not been run.

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn edgeact() -> Command {
    Command::new(env!("CARGO_BIN_EXE_edgeact"))
}

/// Runs `cmd` to completion; a run still going after `limit` is killed and fails the test
/// (a guard against hangs, e.g. a FIFO opened for reading, not a speed measurement).
fn run_guarded(cmd: &mut Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run edgeact");
    let start = Instant::now();
    while child.try_wait().expect("wait for edgeact").is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().expect("collect output");
            panic!(
                "edgeact still running after {limit:?} (hung); stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().expect("collect output")
}

fn run(cmd: &mut Command) -> Output {
    run_guarded(cmd, Duration::from_secs(180))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `Some(reason)` when the failed run's error says the sandbox itself could not start here.
fn sandbox_unavailable(out: &Output) -> Option<String> {
    let err = text(&out.stderr);
    (!out.status.success() && err.contains("starting the OS sandbox")).then_some(err)
}

/// The built root's directory, as the binary computes it with this environment.
fn built_root() -> Option<PathBuf> {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    let dir = cache.join("edgeact/rootfs");
    dir.join(".edgeact-rootfs").exists().then_some(dir)
}

fn is_root() -> bool {
    // The effective uid of this test process, from /proc (no unsafe needed).
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

#[test]
fn sandbox_quotes_each_of_several_arguments() {
    // Used to be typed as `bash -c echo a b; echo c`: an empty line, then `c`.
    let out = run(edgeact().args(["sandbox", "--rootfs", "host", "--", "bash", "-c", "echo a b; echo c"]));
    if let Some(why) = sandbox_unavailable(&out) {
        eprintln!("skipped: {why}");
        return;
    }
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("a b\nc\n"), "{stdout:?}");
    // Quotes, `$` and globs inside an argument reach the command as the user wrote them.
    let out = run(edgeact().args([
        "sandbox", "--rootfs", "host", "--", "printf", "[%s]\\n", "it's", "$HOME", "*", "",
    ]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("[it's]\n[$HOME]\n[*]\n[]\n"), "{stdout:?}");
    // A single argument is a command line, typed as is.
    let out = run(edgeact().args(["sandbox", "--rootfs", "host", "--", "echo a b; echo c"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("a b\nc\n"), "{}", text(&out.stdout));
}

#[test]
fn sandbox_defaults_to_the_built_root_and_host_is_explicit() {
    let Some(root) = built_root() else {
        eprintln!("skipped: no built root (run `edgeact rootfs build`)");
        return;
    };
    // The build marker sits at the top of the built root only.
    let probe = "test -e /.edgeact-rootfs && echo on-built-root || echo on-host";
    let out = run(edgeact().args(["sandbox", "--", probe]));
    if let Some(why) = sandbox_unavailable(&out) {
        eprintln!("skipped: {why}");
        return;
    }
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("on-built-root"), "{}", text(&out.stdout));
    if !Path::new("/.edgeact-rootfs").exists() {
        let out = run(edgeact().args(["sandbox", "--rootfs", "host", "--", probe]));
        assert!(text(&out.stdout).contains("on-host"), "{}", text(&out.stdout));
    }
    // `--rootfs DIR` takes a root directory; `built` names the default one.
    let dir = root.to_str().unwrap();
    for choice in [dir, "built"] {
        let out = run(edgeact().args(["sandbox", "--rootfs", choice, "--", probe]));
        assert!(
            text(&out.stdout).contains("on-built-root"),
            "{choice}: {}",
            text(&out.stdout)
        );
    }
}

/// An empty cache and a PATH without debootstrap: nothing can build the root.
fn without_root<'a>(cmd: &'a mut Command, empty: &Path) -> &'a mut Command {
    cmd.env("XDG_CACHE_HOME", empty).env("PATH", empty)
}

#[test]
fn a_missing_root_is_a_clear_error_naming_both_ways_out() {
    let empty = tempfile::tempdir().unwrap();
    let tasks = fixture("os_interaction/data/dev.json");
    let attempts: [&[&str]; 3] = [
        &["sandbox", "--", "true"],
        &[
            "eval",
            "os",
            "--tasks",
            tasks.to_str().unwrap(),
            "--scripted",
            "/nonexistent",
        ],
        &["agent", "os", "-m", "/nonexistent.gguf", "count the files"],
    ];
    for args in attempts {
        let out = run(without_root(edgeact().args(args), empty.path()));
        assert!(!out.status.success(), "{args:?}");
        let err = text(&out.stderr);
        assert!(err.contains("no Debian root file system at"), "{args:?}: {err}");
        assert!(err.contains("edgeact rootfs build"), "{args:?}: {err}");
        assert!(err.contains("--rootfs host"), "{args:?}: {err}");
    }
    // Nothing was created in the cache, and `eval db` does not need a root at all.
    assert!(std::fs::read_dir(empty.path()).unwrap().next().is_none());
    let out = run(without_root(
        edgeact().args([
            "eval",
            "db",
            "--tasks",
            fixture("dbbench_dev.jsonl").to_str().unwrap(),
            "--scripted",
            "/nonexistent",
        ]),
        empty.path(),
    ));
    assert!(!text(&out.stderr).contains("root file system"), "{}", text(&out.stderr));
    // A directory that is not a root, and `host` for a container backend, are refused clearly.
    let out = run(edgeact().args(["sandbox", "--rootfs", empty.path().to_str().unwrap(), "--", "true"]));
    assert!(
        text(&out.stderr).contains("not a root file system"),
        "{}",
        text(&out.stderr)
    );
    let out = run(edgeact().args(["sandbox", "--backend", "podman", "--rootfs", "host", "--", "true"]));
    assert!(
        text(&out.stderr).contains("--rootfs host is for the namespace sandbox"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_missing_root_is_built_on_first_use_with_progress_then_cached() {
    if !is_root() {
        eprintln!("skipped: building a root needs root");
        return;
    }
    let cache = tempfile::tempdir().unwrap();
    let bin = tempfile::tempdir().unwrap();
    // A stand-in for debootstrap (no network here): prints progress and leaves a tree.
    let fake = bin.path().join("debootstrap");
    std::fs::write(
        &fake,
        "#!/bin/sh\necho 'I: Retrieving InRelease (fake)'\necho 'W: a warning' >&2\nmkdir -p \"$4/etc\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", bin.path().display(), std::env::var("PATH").unwrap_or_default());
    let first = run(edgeact()
        .args(["sandbox", "--", "true"])
        .env("XDG_CACHE_HOME", cache.path())
        .env("PATH", &path));
    let err = text(&first.stderr);
    assert!(err.contains("building the Debian root file system in"), "{err}");
    assert!(err.contains("edgeact: rootfs: I: Retrieving InRelease (fake)"), "{err}");
    assert!(err.contains("edgeact: rootfs: W: a warning"), "{err}");
    assert!(err.contains("root file system ready"), "{err}");
    // Progress stays off stdout (stdout is the command's observation).
    assert!(!text(&first.stdout).contains("Retrieving"));
    let root = cache.path().join("edgeact/rootfs");
    assert!(root.join(".edgeact-rootfs").exists(), "not cached: {err}");
    // The stand-in tree has no bash, so the sandbox refuses it; a second run reuses the cache.
    assert!(err.contains("not a root file system"), "{err}");
    let second = run(edgeact()
        .args(["sandbox", "--", "true"])
        .env("XDG_CACHE_HOME", cache.path())
        .env("PATH", &path));
    assert!(!text(&second.stderr).contains("building"), "{}", text(&second.stderr));
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/agent")
        .join(name)
}

/// Writes a one-task file whose init script is `{"file": file}`, beside `scripts/t/`.
fn task_naming(dir: &Path, file: &str) -> PathBuf {
    std::fs::create_dir_all(dir.join("data")).unwrap();
    std::fs::create_dir_all(dir.join("scripts/t")).unwrap();
    let task = json!({"description": "d", "create": {"init": {"file": file}}, "evaluation": {"match": "1"}});
    let path = dir.join("data/t.json");
    std::fs::write(&path, json!([task]).to_string()).unwrap();
    path
}

#[test]
fn task_files_cannot_make_the_cli_read_host_paths() {
    let top = tempfile::tempdir().unwrap();
    let secret = top.path().join("secret");
    std::fs::write(&secret, "edgeact-host-secret-7f3a").unwrap();
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let set = top.path().join("set");
    let fifo = set.join("scripts/t/fifo.sh");
    let cases: Vec<(&str, &str)> = vec![
        (secret.to_str().unwrap(), "must be a relative path inside"),
        ("../../secret", "must be a relative path inside"),
        ("/dev/zero", "must be a relative path inside"),
        ("escape.sh", "leads outside the scripts directory"),
        ("zero.sh", "leads outside the scripts directory"),
        ("fifo.sh", "is a FIFO"),
        ("big.sh", "over the 1048576-byte limit"),
    ];
    let path = task_naming(&set, "x");
    let scripts = set.join("scripts/t");
    std::os::unix::fs::symlink(&secret, scripts.join("escape.sh")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", scripts.join("zero.sh")).unwrap();
    std::fs::write(scripts.join("big.sh"), vec![b'#'; (1 << 20) + 1]).unwrap();
    let have_fifo = Command::new("mkfifo").arg(&fifo).status().is_ok_and(|s| s.success());
    for (file, why) in cases {
        if file == "fifo.sh" && !have_fifo {
            eprintln!("skipped the FIFO case: mkfifo failed");
            continue;
        }
        task_naming(&set, file);
        // Both commands that read task files: `sandbox --task` (a user's shell) and `eval os`.
        let sandbox = run_guarded(
            edgeact().args([
                "sandbox",
                "--rootfs",
                "host",
                "--task",
                path.to_str().unwrap(),
                "--",
                "history",
            ]),
            Duration::from_secs(60),
        );
        let eval = run_guarded(
            edgeact().args([
                "eval",
                "os",
                "--rootfs",
                "host",
                "--tasks",
                path.to_str().unwrap(),
                "--scripted",
                "/nonexistent",
            ]),
            Duration::from_secs(60),
        );
        for (name, out) in [("sandbox", &sandbox), ("eval os", &eval)] {
            let err = text(&out.stderr);
            assert!(!out.status.success(), "{name} {file}: accepted");
            assert!(err.contains(why), "{name} {file}: {err}");
            let all = format!("{}{err}", text(&out.stdout));
            assert!(
                !all.contains("edgeact-host-secret"),
                "{name} {file}: the secret leaked: {all}"
            );
        }
    }
}

#[test]
fn eval_os_finds_agentbench_numbered_layout_scripts() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("replies.jsonl");
    let count = "Think: count\n\nAct: bash\n\n```bash\nwc -l < /root/notes.txt\n```";
    let replies = [
        json!({"index": 0, "replies": [count, "Think: 3\n\nAct: answer(3)"]}),
        json!({"index": 1, "replies": [count, "Think: 4\n\nAct: answer(4)"]}),
        json!({"index": 2, "replies": ["Think: x\n\nAct: answer(alpha)"]}),
    ];
    std::fs::write(&script, replies.map(|r| r.to_string()).join("\n") + "\n").unwrap();
    let report = dir.path().join("r.json");
    // The built root when there is one (the default), the host's files otherwise.
    let rootfs = if built_root().is_some() { "built" } else { "host" };
    let out = run(edgeact().args([
        "eval",
        "os",
        "--rootfs",
        rootfs,
        "--tasks",
        fixture("os_agentbench_layout/data/1/notes.json").to_str().unwrap(),
        "--scripted",
        script.to_str().unwrap(),
        "--json",
        report.to_str().unwrap(),
    ]));
    let err = text(&out.stderr);
    // The scripts are read before any sandbox starts: the old `data/scripts/notes` guess
    // failed here whether or not a sandbox can run.
    assert!(!err.contains("scripts directory"), "{err}");
    let r: Value = match std::fs::read_to_string(&report) {
        Ok(t) => serde_json::from_str(&t).unwrap(),
        Err(_) if err.contains("starting the OS sandbox") => {
            eprintln!("skipped the judged part: {err}");
            return;
        }
        Err(e) => panic!("no report ({e}): {err}"),
    };
    assert!(out.status.success(), "{err}");
    let verdicts: Vec<(u64, bool)> = r["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            assert!(x["error"].is_null(), "{x}");
            (x["index"].as_u64().unwrap(), x["correct"].as_bool().unwrap())
        })
        .collect();
    // Init, example and check scripts all came from scripts/1/.
    assert_eq!(verdicts, vec![(0, true), (1, false), (2, true)], "{r}");

    // `sandbox --task` finds the same directory and judges with its check scripts.
    let out = run(edgeact().args([
        "sandbox",
        "--rootfs",
        rootfs,
        "--task",
        fixture("os_agentbench_layout/data/1/notes.json").to_str().unwrap(),
        "--answer",
        "3",
        "--",
        "head -1 /root/notes.txt",
    ]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("alpha"), "{}", text(&out.stdout));
    assert!(text(&out.stderr).contains("check: pass"), "{}", text(&out.stderr));
}

/// The temp dirs (`edgeact-sandbox-<pid>-<hex>`) a process with this pid holds.
fn sandbox_temp_dirs_of(pid: u32) -> Vec<PathBuf> {
    let prefix = format!("edgeact-sandbox-{pid}-");
    std::fs::read_dir(std::env::temp_dir())
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

/// `edgeact sandbox` ended by SIGTERM (or Ctrl-C's SIGINT) removes its temp dir: the CLI
/// installs the sandbox's signal clean-up before starting it.
#[test]
fn sandbox_cli_killed_by_a_signal_leaves_no_temp_dir() {
    for signal in ["TERM", "INT"] {
        let mut child = edgeact()
            .args(["sandbox", "--rootfs", "host", "--timeout", "60", "--", "sleep 50"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run edgeact sandbox");
        let pid = child.id();
        let start = Instant::now();
        while sandbox_temp_dirs_of(pid).is_empty() && start.elapsed() < Duration::from_secs(30) {
            if child.try_wait().expect("wait").is_some() {
                let out = child.wait_with_output().expect("output");
                eprintln!("skipped: the sandbox did not start here: {}", text(&out.stderr));
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let held = sandbox_temp_dirs_of(pid);
        assert!(!held.is_empty(), "no sandbox temp dir appeared for pid {pid}");
        // Give the command a moment to be typed, so the sandbox is fully up.
        std::thread::sleep(Duration::from_millis(300));
        let status = Command::new("kill")
            .args([format!("-{signal}"), pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
        let start = Instant::now();
        while child.try_wait().expect("wait").is_none() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "SIG{signal} did not end edgeact"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        for dir in &held {
            assert!(!dir.exists(), "SIG{signal} left {} behind", dir.display());
        }
    }
}
