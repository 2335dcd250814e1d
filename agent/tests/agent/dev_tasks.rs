//! Every OS dev task of AgentBench through the sandbox: its init scripts and `start` run, and
//! for check-type tasks the reference answer (the task's example script run in the same
//! sandbox) passes the check scripts while a wrong answer fails them.
//!
//! Dev data: `$EDGEACT_AGENTBENCH_DATA` (default: `../shared/agentbench/data` beside the checkout); skipped with a
//! printed reason when absent or when the sandbox cannot start here. Uses the host root
//! read-only, or the built root file system when `EDGEACT_TEST_ROOTFS` names one.

use edgeact_agent::judge::judge_os;
use std::path::PathBuf;
use std::time::Duration;

use edgeact_tools::os::task::{default_scripts_dir, Evaluation};
use edgeact_tools::os::{OsSandbox, OsTask, RootFs, SandboxConfig};

#[test]
fn sandbox_runs_agentbench_os_dev_tasks() {
    let base = std::env::var("EDGEACT_AGENTBENCH_DATA")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/agentbench/data").into());
    let path = PathBuf::from(base).join("os_interaction/data/dev.json");
    if !path.exists() {
        eprintln!("skipping: {} not found (set EDGEACT_AGENTBENCH_DATA)", path.display());
        return;
    }
    let root = std::env::var("EDGEACT_TEST_ROOTFS")
        .map(|d| RootFs::Dir(d.into()))
        .unwrap_or(RootFs::HostReadOnly);
    let tasks: Vec<serde_json::Value> = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let scripts = default_scripts_dir(&path);
    let (mut checked, mut set_up) = (0, 0);
    let mut failures = Vec::new();
    for (i, v) in tasks.iter().enumerate() {
        let task = OsTask::from_json(v, Some(&scripts)).unwrap_or_else(|e| panic!("task {i}: {e}"));
        let cfg = SandboxConfig {
            root: root.clone(),
            silence_timeout: Duration::from_secs(2),
            wall_timeout: Duration::from_secs(20),
            ..Default::default()
        };
        let mut sb = match OsSandbox::start(cfg) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("skipping: the sandbox cannot start on this machine: {e}");
                return;
            }
        };
        task.setup(&mut sb).unwrap_or_else(|e| panic!("task {i} set-up: {e}"));
        set_up += 1;
        let Evaluation::Check {
            example: Some(example), ..
        } = &task.evaluation
        else {
            continue;
        };
        let reference = sb.run_script(example, &[]).unwrap();
        let answer = String::from_utf8_lossy(&reference.output).trim().to_string();
        if reference.code != 0 {
            failures.push(format!(
                "task {i}: example script failed ({}): {answer:?}",
                reference.code
            ));
            continue;
        }
        // AgentBench's size-match.py does `int("4.0")` on du's "4.0K" and so rejects its own
        // reference answer; the data's bug, not the sandbox's.
        let size_match = v["evaluation"]["check"].to_string().contains("size-match.py");
        let accepted = judge_os(Some(&answer), &task.evaluation, &mut sb).unwrap();
        if accepted == size_match {
            failures.push(format!("task {i}: reference answer {answer:?} accepted = {accepted}"));
        }
        // Example scripts without output (they install a tool the check then tests) take no
        // answer, so only answer-comparing checks can reject a wrong one.
        if !answer.is_empty() && judge_os(Some("-12345"), &task.evaluation, &mut sb).unwrap() {
            failures.push(format!("task {i}: a wrong answer passed"));
        }
        checked += 1;
    }
    eprintln!("{set_up} dev tasks set up, {checked} check-type tasks judged");
    assert_eq!(set_up, tasks.len());
    assert!(failures.is_empty(), "{failures:#?}");
}
