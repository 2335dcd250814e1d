//! No process the namespace sandbox can see holds a secret that only edgeact holds, as
//! `eval os` holds a task's expected answer (issue #12: a scripted reply read it out of
//! `/proc/1/mem`, PID 1 being a fork of edgeact). A probe inside reads the memory of every
//! process it can, PID 1 included, and looks for the secret.
//!
//! Tests print why they skip when the sandbox cannot start here or has no python3.

use std::time::Duration;

use edgeact_tools::os::{RootFs, SandboxConfig, Script, ScriptLanguage};

use crate::sandbox_support;
use sandbox_support::{marker, start};

fn cfg() -> SandboxConfig {
    SandboxConfig {
        root: RootFs::HostReadOnly,
        silence_timeout: Duration::from_secs(2),
        wall_timeout: Duration::from_secs(20),
        raw_terminal: false,
        ..Default::default()
    }
}

#[test]
fn sandbox_processes_hold_no_secret_of_edgeact_memory() {
    // A string only this process holds, as `eval os` holds a task's expected answer: no
    // process visible inside, PID 1 included, may contain it in its memory. The needle is
    // typed in two halves so that the probe's own input never holds it whole.
    let (head, tail) = (marker(), marker());
    let secret = std::hint::black_box(format!("{head}{tail}"));
    let Some(mut sb) = start(cfg()) else { return };
    let probe = format!(
        r#"import os
needle = b"{head}" + b"{tail}"
hits, read = [], 0
for p in os.listdir("/proc"):
    if not p.isdigit() or int(p) == os.getpid():
        continue
    try:
        maps = open(f"/proc/{{p}}/maps").read().splitlines()
        mem = open(f"/proc/{{p}}/mem", "rb", 0)
    except OSError:
        continue
    for line in maps:
        f = line.split()
        if "r" not in f[1]:
            continue
        a, b = (int(x, 16) for x in f[0].split("-"))
        try:
            mem.seek(a)
            chunk = mem.read(min(b - a, 1 << 26))
        except (OSError, ValueError, OverflowError):
            continue
        read += len(chunk)
        if needle in chunk:
            hits.append(p)
            break
print("HITS", len(hits), hits, "READ", read)
"#
    );
    let r = sb
        .run_script(
            &Script {
                language: ScriptLanguage::Python,
                code: probe,
            },
            &[],
        )
        .expect("run the probe");
    let out = String::from_utf8_lossy(&r.output).to_string();
    if !out.contains("HITS") {
        eprintln!("skipping: the probe did not run (no python3 in the sandbox?): {out:?}");
        return;
    }
    eprintln!("probe: {out}");
    assert!(out.contains("HITS 0 []"), "edgeact's memory readable inside: {out:?}");
    assert!(!secret.is_empty());
}
