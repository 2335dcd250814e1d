//! A process holding a namespace sandbox leaves nothing on the host when a signal ends it
//! (issue #12): SIGTERM/SIGINT run the clean-up installed by `cleanup_on_signals`, and what a
//! SIGKILL leaves behind (temp dir, cgroups) is swept by the next start (`sweep_stale`),
//! which removes only paths whose owning process is gone.
//!
//! The holder is this test binary re-run as a child; tests skip with a printed reason when the
//! sandbox cannot start here.

use std::io::BufRead;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use edgeact_tools::os::{OsSandbox, SandboxConfig};

use crate::sandbox_support;
use sandbox_support::wait_until;

const HOLDER_ENV: &str = "EDGEACT_TEST_CLEANUP_HOLDER";

/// Run as a child by the tests below (does nothing otherwise): starts a sandbox, with the
/// signal clean-up when asked, prints its host paths, and waits to be killed.
#[test]
fn cleanup_holder_process() {
    let Ok(mode) = std::env::var(HOLDER_ENV) else { return };
    if mode == "signals" {
        edgeact_tools::os::cleanup_on_signals().expect("install the signal clean-up");
    }
    let cfg = SandboxConfig {
        silence_timeout: Duration::from_secs(2),
        ..Default::default()
    };
    let mut sb = match OsSandbox::start(cfg) {
        Ok(sb) => sb,
        Err(e) => {
            println!("NO-SANDBOX {e}");
            return;
        }
    };
    let _ = sb.run("sleep 1000 &");
    println!("PATH {}", sb.temp_dir().display());
    for d in sb.cgroup_dirs() {
        println!("PATH {}", d.display());
    }
    println!("READY");
    std::thread::sleep(Duration::from_secs(120));
}

/// Starts a holder child; returns it with the host paths its sandbox holds, or `None`
/// (skip) when the sandbox cannot start.
fn spawn_holder(mode: &str) -> Option<(Child, Vec<PathBuf>)> {
    let mut child = Command::new(std::env::current_exe().unwrap())
        // The test binary holds all sandbox tests; this one is `cleanup::cleanup_holder_process`.
        .args([
            "--exact",
            "cleanup::cleanup_holder_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(HOLDER_ENV, mode)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut paths = Vec::new();
    loop {
        match lines.next() {
            Some(Ok(l)) if l.contains("READY") => break,
            Some(Ok(l)) if l.contains("NO-SANDBOX") => {
                eprintln!("skipping: the sandbox cannot start on this machine: {l}");
                let _ = child.wait();
                return None;
            }
            Some(Ok(l)) => {
                // (libtest may print its "test ... " header on the same line.)
                if let Some((_, p)) = l.split_once("PATH ") {
                    paths.push(PathBuf::from(p));
                }
            }
            _ => panic!("the holder ended before its sandbox was ready"),
        }
    }
    std::thread::spawn(move || for _ in lines {});
    Some((child, paths))
}

fn send(child: &Child, signal: &str) {
    let ok = Command::new("kill")
        .args([format!("-{signal}"), child.id().to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill -{signal} {}", child.id());
}

fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        if Instant::now() > end {
            let _ = child.kill();
            panic!("the holder did not exit");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn assert_all_gone(paths: &[PathBuf], why: &str) {
    for p in paths {
        assert!(
            wait_until(Duration::from_secs(5), || !p.exists()),
            "{} left behind {why}",
            p.display()
        );
    }
}

#[test]
fn cleanup_sigterm_and_sigint_remove_temp_dir_and_cgroups() {
    for signal in ["TERM", "INT"] {
        let Some((mut child, paths)) = spawn_holder("signals") else {
            return;
        };
        assert!(!paths.is_empty() && paths.iter().all(|p| p.exists()), "{paths:?}");
        send(&child, signal);
        let st = wait_exit(&mut child);
        // The process still dies of the signal, as without the handler.
        let expected = if signal == "TERM" { 15 } else { 2 };
        assert_eq!(st.signal(), Some(expected), "{st:?}");
        assert_all_gone(&paths, &format!("after SIG{signal}"));
    }
}

#[test]
fn cleanup_sigkill_leftovers_are_swept_by_the_next_start() {
    let Some((mut child, paths)) = spawn_holder("plain") else {
        return;
    };
    send(&child, "KILL");
    wait_exit(&mut child);
    // SIGKILL runs no handler: the temp dir stays (the cgroups may too) until a sweep.
    let stage = paths
        .iter()
        .find(|p| p.starts_with(std::env::temp_dir()))
        .expect("the holder's temp dir")
        .clone();
    assert!(stage.exists(), "{}", stage.display());
    // The namespace's processes die with their parent (the kernel may take a moment to empty
    // the cgroups); sweeps remove what is left. Another test process's start may sweep too.
    let mut removed = Vec::new();
    let swept = wait_until(Duration::from_secs(10), || {
        removed.extend(edgeact_tools::os::sweep_stale());
        paths.iter().all(|p| !p.exists())
    });
    assert!(swept, "left after sweeps: {paths:?}, removed {removed:?}");
}

#[test]
fn cleanup_sweep_keeps_paths_of_live_processes() {
    // A temp dir named after a live owner (this process) survives a sweep.
    let live = std::env::temp_dir().join(format!("edgeact-sandbox-{}-00c0ffee", std::process::id()));
    std::fs::create_dir_all(&live).unwrap();
    let removed = edgeact_tools::os::sweep_stale();
    let kept = live.exists();
    let _ = std::fs::remove_dir(&live);
    assert!(kept && !removed.contains(&live), "{removed:?}");
    assert!(!Path::new(&live).exists());
}
