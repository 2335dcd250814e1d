//! Shared by the namespace sandbox's integration tests: start a sandbox or skip with the
//! reason, unique markers, and polling with a limit.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use edgeact_tools::os::{OsSandbox, SandboxConfig};

/// Starts a sandbox, or prints why it cannot start here and returns `None` (the test skips).
pub fn start(cfg: SandboxConfig) -> Option<OsSandbox> {
    match OsSandbox::start(cfg) {
        Ok(s) => Some(s),
        Err(e) => {
            eprintln!("skipping: the sandbox cannot start on this machine: {e}");
            None
        }
    }
}

/// A string no file or process holds by chance.
pub fn marker() -> String {
    format!("edgeact{:08x}", rand::random::<u32>())
}

/// Polls `f` every 50 ms until it holds or `limit` has passed; returns its last answer.
pub fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}
