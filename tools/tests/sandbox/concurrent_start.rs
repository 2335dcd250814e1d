//! Many sandboxes starting at once on a loaded machine, as `eval os --jobs 8` starts them.
//!
//! During a start the intermediate process (`I` and the init's pid) and the init (`R` once the
//! shell runs) report on one pipe. The pid message was once two writes, so under load the
//! init's `R` could land between its tag and its pid: the parent read a garbage pid, failed the
//! start, sent SIGKILL to that pid (any host process) and waited forever for a sandbox that was
//! never killed (seen as a hung `eval os --jobs 8`). And `R` may come before `I`. Every start
//! here must succeed and answer within a deadline; a hang fails the test instead of blocking.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use edgeact_tools::os::{OsSandbox, SandboxConfig};

const THREADS: usize = 6;
const STARTS_PER_THREAD: usize = 6;

#[test]
fn concurrent_starts_under_load_all_succeed() {
    let cfg = || SandboxConfig {
        silence_timeout: Duration::from_secs(2),
        wall_timeout: Duration::from_secs(10),
        raw_terminal: false,
        ..Default::default()
    };
    // Skip where no sandbox can start at all (not root, no user namespaces).
    if crate::sandbox_support::start(cfg()).is_none() {
        return;
    }
    // Busy threads keep the cores contended, so the starting processes get preempted.
    let stop = Arc::new(AtomicBool::new(false));
    let burners: Vec<_> = (0..2)
        .map(|_| {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut x = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                }
            })
        })
        .collect();
    let (tx, rx) = mpsc::channel();
    for t in 0..THREADS {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for i in 0..STARTS_PER_THREAD {
                let result = OsSandbox::start(cfg()).and_then(|mut sb| sb.run("echo started-$((20 + 22))"));
                let answer = result.map(|out| out.output).map_err(|e| e.to_string());
                if tx.send((t, i, answer)).is_err() {
                    return;
                }
            }
        });
    }
    drop(tx);
    let mut failures = Vec::new();
    for _ in 0..THREADS * STARTS_PER_THREAD {
        match rx.recv_timeout(Duration::from_secs(120)) {
            Ok((_, _, Ok(out))) if out.contains("started-42") => {}
            Ok((t, i, other)) => failures.push(format!("thread {t} start {i}: {other:?}")),
            Err(e) => {
                failures.push(format!("a start or its first command did not finish: {e}"));
                break;
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    for b in burners {
        b.join().unwrap();
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
