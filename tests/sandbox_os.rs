//! The OS sandbox: AgentBench terminal fidelity (prompt, title, echo dropped, 5 s silence),
//! persistence of the shell, task set-up and check scripts, and containment attacks.
//!
//! Needs Linux with namespaces (root in a container, or unprivileged user namespaces); each
//! test prints why it skips when the sandbox cannot start here.

use std::time::{Duration, Instant};

use edgeact_tools::os::{EndReason, OsSandbox, SandboxConfig, Script};

fn start(cfg: SandboxConfig) -> Option<OsSandbox> {
    match OsSandbox::start(cfg) {
        Ok(s) => Some(s),
        Err(e) => {
            eprintln!("skipping: the sandbox cannot start on this machine: {e}");
            None
        }
    }
}

fn quick() -> SandboxConfig {
    SandboxConfig {
        silence_timeout: Duration::from_secs(2),
        wall_timeout: Duration::from_secs(8),
        ..Default::default()
    }
}

#[test]
fn sandbox_terminal_matches_agentbench() {
    let Some(mut sb) = start(SandboxConfig::default()) else {
        return;
    };
    let host = sb.hostname().to_string();
    assert_eq!(host.len(), 12);
    assert!(host.bytes().all(|b| b.is_ascii_hexdigit()));
    let prompt = format!("\x1b]0;root@{host}: /\x07root@{host}:/# ");
    let out = sb.run("echo 3").unwrap();
    assert_eq!(out.end, EndReason::Prompt);
    assert!(out.output.starts_with("3\r\n"), "{:?}", out.output);
    assert!(out.output.contains(&prompt), "{:?}", out.output);
    // No output: just the title and the prompt.
    let out = sb.run("cd /").unwrap();
    assert!(out.output.starts_with("\x1b]0;root@"), "{:?}", out.output);
    // The shell persists between commands.
    sb.run("export EDGEACT_X=42; cd /tmp").unwrap();
    let out = sb.run("echo $EDGEACT_X; pwd; hostname; whoami").unwrap();
    assert!(
        out.output.starts_with(&format!("42\r\n/tmp\r\n{host}\r\nroot\r\n")),
        "{:?}",
        out.output
    );
    assert!(out.output.contains(&format!("root@{host}:/tmp# ")), "{:?}", out.output);
}

#[test]
fn sandbox_silence_rule_and_wall_timeout() {
    let Some(mut sb) = start(quick()) else { return };
    let t = Instant::now();
    let out = sb.run("sleep 4; echo late").unwrap();
    assert_eq!(out.end, EndReason::Silence, "{:?}", out.output);
    assert!(t.elapsed() >= Duration::from_secs(2) && t.elapsed() < Duration::from_secs(4));
    std::thread::sleep(Duration::from_secs(3));
    // Endless output: interrupted at the wall clock, the session survives.
    let t = Instant::now();
    let out = sb.run("while true; do echo y; sleep 0.1; done").unwrap();
    assert_eq!(out.end, EndReason::WallTimeout);
    // What the earlier command printed after its observation ended comes first.
    assert!(
        out.output.starts_with("late\r\n"),
        "{:?}",
        &out.output[..out.output.len().min(80)]
    );
    assert!(t.elapsed() < Duration::from_secs(14), "{:?}", t.elapsed());
    let out = sb.run("echo alive").unwrap();
    assert!(out.output.contains("alive\r\n"), "{:?}", out.output);
}

#[test]
fn sandbox_cleaned_mode() {
    let Some(mut sb) = start(SandboxConfig {
        raw_terminal: false,
        ..quick()
    }) else {
        return;
    };
    let out = sb.run("printf 'a\\nb\\n'; ls --color=always -d /tmp").unwrap();
    assert_eq!(out.output, "a\nb\n/tmp");
}

#[test]
fn sandbox_task_setup_and_check_scripts() {
    let Some(mut sb) = start(quick()) else { return };
    let r = sb
        .run_script(&Script::bash("echo \"args:$1,$2\"; exit 3"), &["x", "y z"])
        .unwrap();
    assert_eq!(r.code, 3);
    assert_eq!(String::from_utf8_lossy(&r.output), "args:x,y z\n");
    let py = Script {
        language: edgeact_tools::os::ScriptLanguage::Python,
        code: "import sys; print(int(sys.argv[1]) + 1)".into(),
    };
    let r = sb.run_script(&py, &["41"]).unwrap();
    assert_eq!(
        (r.code, String::from_utf8_lossy(&r.output).trim().to_string()),
        (0, "42".to_string())
    );
    // Scripts and the shell share one file system and one process namespace.
    sb.run_script(&Script::bash("mkdir -p /home && echo 123 > /home/.tmp"), &[])
        .unwrap();
    let out = sb.run("cat /home/.tmp").unwrap();
    assert!(out.output.starts_with("123\r\n"), "{:?}", out.output);
    sb.run("sleep 1000 &").unwrap();
    let r = sb.run_script(&Script::bash("pgrep -x sleep >/dev/null"), &[]).unwrap();
    assert_eq!(r.code, 0);
    let task = edgeact_tools::os::OsTask::from_json(
        &serde_json::json!({
            "description": "count", "create": {"init": {"code": "mkdir -p /home; touch /home/a /home/b"}},
            "start": "export HELLO=1",
            "evaluation": {"check": [null, {"language": "python", "code": "from sys import argv\nexit(0 if int(argv[1]) == int(argv[2]) else 1)"}],
                           "example": {"code": "ls /home | wc -l"}}
        }),
        None,
    )
    .unwrap();
    task.setup(&mut sb).unwrap();
    assert!(sb.run("echo $HELLO").unwrap().output.starts_with("1\r\n"));
    assert_eq!(task.check(&mut sb, Some("2")).unwrap(), Some(true));
    assert_eq!(task.check(&mut sb, Some("3")).unwrap(), Some(false));
    assert_eq!(task.check(&mut sb, None).unwrap(), Some(false));
}
