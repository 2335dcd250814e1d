//! The Docker/Podman backend of the OS tool. The shell behaviours (terminal fidelity,
//! persistent shell, silence rule, wall clock, output cap, ^C-proof jobs, task scripts and
//! their timeout) are written once against [`ShellSession`] and run on both backends, the
//! namespace sandbox included; then the container's own guarantees (no network, pids limit,
//! removed on drop and when the CLI is killed, clear errors).
//!
//! Container tests need an engine and an image: `EDGEACT_TEST_CONTAINER=podman|docker` and
//! optionally `EDGEACT_TEST_IMAGE` (default `edgeact/os-default`, see
//! `scripts/setup-podman.sh`). Without them they print why they skip; the namespace runs skip
//! where the sandbox cannot start.

use edgeact_agent::judge::judge_os;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use edgeact_tools::os::{
    ContainerConfig, ContainerRuntime, ContainerSandbox, EndReason, OsSandbox, OsTask, SandboxConfig, Script,
    ScriptLanguage, ShellLimits, ShellSession,
};

use crate::sandbox_support;

/// The limits the behaviour checks expect: 2 s silence, 8 s wall clock, 64 KiB output cap.
fn quick_limits() -> ShellLimits {
    ShellLimits {
        wall_timeout: Duration::from_secs(8),
        silence_timeout: Duration::from_secs(2),
        output_cap: 64 << 10,
        raw_terminal: true,
    }
}

fn engine() -> Option<(ContainerRuntime, String)> {
    let rt = match std::env::var("EDGEACT_TEST_CONTAINER").as_deref() {
        Ok("podman") => ContainerRuntime::Podman,
        Ok("docker") => ContainerRuntime::Docker,
        Ok(other) => panic!("EDGEACT_TEST_CONTAINER must be podman or docker, not {other:?}"),
        Err(_) => {
            eprintln!("skipping: set EDGEACT_TEST_CONTAINER=podman|docker (and EDGEACT_TEST_IMAGE) to run");
            return None;
        }
    };
    let image = std::env::var("EDGEACT_TEST_IMAGE").unwrap_or_else(|_| "edgeact/os-default".into());
    Some((rt, image))
}

fn container_config(shell: ShellLimits) -> Option<ContainerConfig> {
    let (rt, image) = engine()?;
    let mut cfg = ContainerConfig::new(rt, image);
    cfg.shell = shell;
    Some(cfg)
}

/// A container with `shell` limits; `None` (skip) without an engine. With the engine
/// requested explicitly, failing to start is a test failure.
fn container(shell: ShellLimits) -> Option<ContainerSandbox> {
    Some(ContainerSandbox::start(container_config(shell)?).expect("start the container"))
}

/// A namespace sandbox with `shell` limits; `None` (skip) where namespaces are unavailable.
fn namespace(shell: ShellLimits) -> Option<OsSandbox> {
    let cfg = SandboxConfig {
        wall_timeout: shell.wall_timeout,
        silence_timeout: shell.silence_timeout,
        output_cap: shell.output_cap,
        raw_terminal: shell.raw_terminal,
        ..Default::default()
    };
    sandbox_support::start(cfg)
}

fn exists(cfg: &ContainerConfig, id: &str) -> bool {
    Command::new(cfg.runtime.command_name())
        .args(["container", "inspect", id])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run the engine")
        .success()
}

/// AgentBench's terminal: echo dropped, `\r\n`, title escape and prompt, 12-hex hostname,
/// and a shell whose cwd and variables persist.
fn check_terminal(sb: &mut dyn ShellSession) {
    let host = sb.hostname().to_string();
    assert_eq!(host.len(), 12);
    assert!(host.bytes().all(|b| b.is_ascii_hexdigit()));
    let prompt = format!("\x1b]0;root@{host}: /\x07root@{host}:/# ");
    let out = sb.run("echo 3").unwrap();
    assert_eq!(out.end, EndReason::Prompt);
    assert!(out.output.starts_with("3\r\n"), "{:?}", out.output);
    assert!(out.output.contains(&prompt), "{:?}", out.output);
    let out = sb.run("cd /").unwrap();
    assert!(out.output.starts_with("\x1b]0;root@"), "{:?}", out.output);
    sb.run("export EDGEACT_X=42; cd /tmp").unwrap();
    let out = sb.run("echo $EDGEACT_X; pwd; hostname; whoami").unwrap();
    assert!(
        out.output.starts_with(&format!("42\r\n/tmp\r\n{host}\r\nroot\r\n")),
        "{:?}",
        out.output
    );
    assert!(out.output.contains(&format!("root@{host}:/tmp# ")), "{:?}", out.output);
}

/// With [`quick_limits`]: the silence rule, late output shown first, the wall clock, the
/// output cap, and a job that ignores ^C; the session survives each.
fn check_limits(sb: &mut dyn ShellSession) {
    let t = Instant::now();
    let out = sb.run("sleep 4; echo late").unwrap();
    assert_eq!(out.end, EndReason::Silence, "{:?}", out.output);
    assert!(t.elapsed() >= Duration::from_secs(2) && t.elapsed() < Duration::from_secs(4));
    std::thread::sleep(Duration::from_secs(3));
    let t = Instant::now();
    let out = sb.run("while true; do echo y; sleep 0.1; done").unwrap();
    assert_eq!(out.end, EndReason::WallTimeout);
    assert!(
        out.output.starts_with("late\r\n"),
        "{:?}",
        &out.output[..out.output.len().min(80)]
    );
    assert!(t.elapsed() < Duration::from_secs(14), "{:?}", t.elapsed());
    let alive = sb.run("echo alive").unwrap();
    assert!(alive.output.contains("alive\r\n"), "{alive:?}");
    let out = sb.run("yes").unwrap();
    assert_eq!(out.end, EndReason::OutputCap);
    assert!(out.raw.len() <= 64 << 10);
    assert!(sb.run("echo alive").unwrap().output.contains("alive\r\n"));
    let out = sb
        .run("bash -c 'trap \"\" INT; while :; do sleep 0.2; echo t; done'")
        .unwrap();
    assert_eq!(out.end, EndReason::WallTimeout);
    let out = sb.run("echo after").unwrap();
    assert!(out.output.contains("after\r\n"), "{:?}", out.output);
}

fn check_cleaned(sb: &mut dyn ShellSession) {
    let out = sb.run("printf 'a\\nb\\n'; ls --color=always -d /tmp").unwrap();
    assert_eq!(out.output, "a\nb\n/tmp");
}

/// Task scripts: arguments, exit codes, python, stderr, one file system and process space
/// with the shell, and a whole task's set-up and check.
fn check_scripts(sb: &mut dyn ShellSession) {
    let r = sb
        .run_script(&Script::bash("echo \"args:$1,$2\"; exit 3"), &["x", "y z"])
        .unwrap();
    assert_eq!(r.code, 3);
    assert_eq!(String::from_utf8_lossy(&r.output), "args:x,y z\n");
    let py = Script {
        language: ScriptLanguage::Python,
        code: "import sys; print(int(sys.argv[1]) + 1)".into(),
    };
    let r = sb.run_script(&py, &["41"]).unwrap();
    assert_eq!(
        (r.code, String::from_utf8_lossy(&r.output).trim().to_string()),
        (0, "42".to_string())
    );
    let r = sb.run_script(&Script::bash("echo err >&2"), &[]).unwrap();
    assert_eq!(String::from_utf8_lossy(&r.output), "err\n");
    sb.run_script(&Script::bash("mkdir -p /home && echo 123 > /home/.tmp"), &[])
        .unwrap();
    let out = sb.run("cat /home/.tmp").unwrap();
    assert!(out.output.starts_with("123\r\n"), "{:?}", out.output);
    sb.run("sleep 1000 &").unwrap();
    let r = sb.run_script(&Script::bash("pgrep -x sleep >/dev/null"), &[]).unwrap();
    assert_eq!(r.code, 0);
    let task = OsTask::from_json(
        &serde_json::json!({
            "description": "count", "create": {"init": {"code": "mkdir -p /home; touch /home/a /home/b"}},
            "start": "export HELLO=1",
            "evaluation": {"check": [null, {"language": "python", "code": "from sys import argv\nexit(0 if int(argv[1]) == int(argv[2]) else 1)"}],
                           "example": {"code": "ls /home | wc -l"}}
        }),
        None,
    )
    .unwrap();
    task.setup(sb).unwrap();
    assert!(sb.run("echo $HELLO").unwrap().output.starts_with("1\r\n"));
    assert!(judge_os(Some("2"), &task.evaluation, sb).unwrap());
    assert!(!judge_os(Some("3"), &task.evaluation, sb).unwrap());
    assert!(!judge_os(None, &task.evaluation, sb).unwrap());
}

/// With a 2 s wall clock: a script past it gets code 124 and is stopped where it runs.
fn check_script_timeout(sb: &mut dyn ShellSession) {
    let t = Instant::now();
    let r = sb
        .run_script(&Script::bash("echo started; exec sleep 300"), &[])
        .unwrap();
    assert_eq!(r.code, 124, "{:?}", String::from_utf8_lossy(&r.output));
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert_eq!(String::from_utf8_lossy(&r.output), "started\n");
    // A killed process may take a moment to be reaped.
    let gone = (0..30).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        sb.run_script(&Script::bash("pgrep -x sleep"), &[]).unwrap().code == 1
    });
    assert!(gone, "the timed-out script still runs");
}

fn agentbench_limits() -> ShellLimits {
    ShellLimits {
        silence_timeout: Duration::from_secs(5),
        ..quick_limits()
    }
}

fn cleaned_limits() -> ShellLimits {
    ShellLimits {
        raw_terminal: false,
        ..quick_limits()
    }
}

fn short_wall_limits() -> ShellLimits {
    ShellLimits {
        wall_timeout: Duration::from_secs(2),
        ..quick_limits()
    }
}

/// One test per behaviour and backend.
macro_rules! on_both_backends {
    ($($check:ident with $limits:ident: $container_test:ident, $namespace_test:ident;)*) => {$(
        #[test]
        fn $container_test() {
            if let Some(mut sb) = container($limits()) {
                $check(&mut sb);
            }
        }
        #[test]
        fn $namespace_test() {
            if let Some(mut sb) = namespace($limits()) {
                $check(&mut sb);
            }
        }
    )*};
}

on_both_backends! {
    check_terminal with agentbench_limits: container_terminal_matches_agentbench, namespace_terminal_matches_agentbench;
    check_limits with quick_limits: container_silence_wall_clock_and_output_cap, namespace_silence_wall_clock_and_output_cap;
    check_cleaned with cleaned_limits: container_cleaned_mode, namespace_cleaned_mode;
    check_scripts with quick_limits: container_task_setup_and_check_scripts, namespace_task_setup_and_check_scripts;
    check_script_timeout with short_wall_limits: container_script_timeout_stops_the_script, namespace_script_timeout_stops_the_script;
}

/// A host that starts edgeact with SIGINT ignored (a background job of a non-interactive
/// shell does) must not hand that disposition to the sandbox, or a timeout's ^C cannot stop
/// `while true; do echo y; sleep 0.1; done` there. Reruns the limits check in a copy of this
/// test binary started with SIGINT and SIGQUIT ignored.
#[test]
fn namespace_limits_hold_when_the_host_ignores_sigint() {
    if std::env::var_os("EDGEACT_TEST_HOST_IGNORES_SIGINT").is_some() {
        return; // the copy: only the named test runs there
    }
    let out = Command::new("bash")
        .arg("-c")
        .arg(r#"trap '' INT QUIT; exec "$0" --exact sandbox_container::namespace_silence_wall_clock_and_output_cap"#)
        .arg(std::env::current_exe().unwrap())
        .env("EDGEACT_TEST_HOST_IGNORES_SIGINT", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 passed"));
}

#[test]
fn container_has_no_network_and_limits() {
    let Some(mut cfg) = container_config(quick_limits()) else {
        return;
    };
    cfg.max_procs = 64;
    let mut sb = ContainerSandbox::start(cfg).expect("start the container");
    // Only the loopback interface exists (2 header lines + lo).
    let r = sb
        .run_script(&Script::bash("tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '"), &[])
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&r.output), "lo\n");
    let r = sb
        .run_script(
            &Script {
                language: ScriptLanguage::Python,
                code: "import socket\ntry:\n socket.create_connection(('1.1.1.1', 80), timeout=3)\n print('connected')\nexcept OSError as e:\n print('refused', e.errno)".into(),
            },
            &[],
        )
        .unwrap();
    assert!(
        String::from_utf8_lossy(&r.output).starts_with("refused"),
        "{:?}",
        r.output
    );
    // The pids limit reaches the container's cgroup (v1 or v2 layout)...
    let r = sb
        .run_script(
            &Script::bash("cat /sys/fs/cgroup/pids/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids.max"),
            &[],
        )
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&r.output).trim(), "64");
    // ...and holds a fork loop back (the children wait, then exit before the script does, so
    // that the engine's own exec bookkeeping is not starved).
    let code = "import os, time\nkids = []\nfor i in range(100):\n    try:\n        pid = os.fork()\n    except OSError:\n        break\n    if pid == 0:\n        time.sleep(2)\n        os._exit(0)\n    kids.append(pid)\nprint(len(kids), flush=True)\nfor k in kids:\n    os.waitpid(k, 0)\n";
    let r = sb
        .run_script(
            &Script {
                language: ScriptLanguage::Python,
                code: code.into(),
            },
            &[],
        )
        .unwrap();
    let n: u32 = String::from_utf8_lossy(&r.output).trim().parse().unwrap_or(0);
    assert!((10..64).contains(&n), "{n} forks under --pids-limit 64: {:?}", r.output);
}

#[test]
fn container_is_removed_on_drop_and_when_the_cli_is_killed() {
    let Some(cfg) = container_config(quick_limits()) else {
        return;
    };
    let sb = ContainerSandbox::start(cfg.clone()).expect("start the container");
    let id = sb.id().to_string();
    assert!(exists(&cfg, &id));
    drop(sb);
    assert!(!exists(&cfg, &id), "container {id} outlived the sandbox");

    // SIGKILL of the CLI (no Drop, no signal handler): the watchdog removes the container.
    let label = "edgeact.sandbox=1";
    let list = || {
        let out = Command::new(cfg.runtime.command_name())
            .args(["ps", "-a", "-q", "--no-trunc", "--filter", &format!("label={label}")])
            .output()
            .expect("run the engine");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let before = list();
    let mut cli = Command::new(env!("CARGO_BIN_EXE_edgeact"))
        .args([
            "sandbox",
            "--backend",
            cfg.runtime.command_name(),
            "--image",
            &cfg.image,
            "--",
            "sleep 60",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t = Instant::now();
    let started = loop {
        let now = list();
        if let Some(id) = now.into_iter().find(|i| !before.contains(i)) {
            break id;
        }
        assert!(t.elapsed() < Duration::from_secs(60), "no container appeared");
        std::thread::sleep(Duration::from_millis(200));
    };
    std::thread::sleep(Duration::from_secs(1));
    cli.kill().unwrap();
    cli.wait().unwrap();
    let t = Instant::now();
    while exists(&cfg, &started) {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "container {started} outlived the killed CLI"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn missing_image_is_a_clear_error() {
    let Some((rt, _)) = engine() else { return };
    let cfg = ContainerConfig::new(rt, "edgeact/no-such-image:0");
    let e = ContainerSandbox::start(cfg).unwrap_err().to_string();
    assert!(e.contains("is not present"), "{e}");
}
