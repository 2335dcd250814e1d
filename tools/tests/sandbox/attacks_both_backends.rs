//! The host-privilege attacks of issue #12 run against both OS backends: the namespace
//! sandbox and the container (Podman/Docker) one. A model's shell must not change kernel
//! tunables of the host (`/proc/sys`, core_pattern, sysrq), read the host's kernel secrets
//! under `/proc`, or find edgeact (its command line, environment or descriptors) as PID 1:
//! PID 1 is `bash`, as in AgentBench's containers.
//!
//! Container runs need `EDGEACT_TEST_CONTAINER=podman|docker` and an image
//! (`EDGEACT_TEST_IMAGE`, default `edgeact/os-default`, see `scripts/setup-podman.sh`);
//! without them, and where the namespace sandbox cannot start, tests print why they skip.

use std::time::Duration;

use edgeact_tools::os::{
    ContainerConfig, ContainerRuntime, ContainerSandbox, OsSandbox, RootFs, SandboxConfig, ShellLimits, ShellSession,
};

use crate::sandbox_support;

/// Cleaned output (no escapes, `\r` or prompt), short timeouts.
fn limits() -> ShellLimits {
    ShellLimits {
        wall_timeout: Duration::from_secs(10),
        silence_timeout: Duration::from_secs(2),
        output_cap: 64 << 10,
        raw_terminal: false,
    }
}

fn container() -> Option<ContainerSandbox> {
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
    let mut cfg = ContainerConfig::new(rt, image);
    cfg.shell = limits();
    Some(ContainerSandbox::start(cfg).expect("start the container"))
}

fn namespace() -> Option<OsSandbox> {
    let l = limits();
    let cfg = SandboxConfig {
        root: RootFs::HostReadOnly,
        wall_timeout: l.wall_timeout,
        silence_timeout: l.silence_timeout,
        output_cap: l.output_cap,
        raw_terminal: l.raw_terminal,
        ..Default::default()
    };
    sandbox_support::start(cfg)
}

/// Output of `code` in the shell, always ending in a newline.
fn sh(sb: &mut dyn ShellSession, code: &str) -> String {
    let mut out = sb.run(code).expect("run a command").output;
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out
}

fn read_host(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The review wrote `/proc/sys/kernel/printk_ratelimit` of the host from inside, and opened
/// `core_pattern` (a pipe there runs a file as host root) for writing.
fn check_proc_sys_is_read_only(sb: &mut dyn ShellSession) {
    let ratelimit = read_host("/proc/sys/kernel/printk_ratelimit");
    let core = read_host("/proc/sys/kernel/core_pattern");
    let out = sh(
        sb,
        // Never a new value: on a sandbox that failed, the host would keep it. Rewriting the
        // current value, or opening without writing, shows the access just as well.
        "v=$(cat /proc/sys/kernel/printk_ratelimit); echo $v > /proc/sys/kernel/printk_ratelimit && echo WROTE-RATELIMIT; \
         ( exec 3>>/proc/sys/kernel/core_pattern ) 2>/dev/null && echo OPENED-CORE; \
         [ -e /proc/sysrq-trigger ] && ( exec 3>>/proc/sysrq-trigger ) 2>/dev/null && echo OPENED-SYSRQ; \
         ( exec 3>>/proc/sys/vm/drop_caches ) 2>/dev/null && echo OPENED-DROP-CACHES; \
         cat /proc/sys/kernel/ostype; echo done",
    );
    for w in ["WROTE-RATELIMIT", "OPENED-CORE", "OPENED-SYSRQ", "OPENED-DROP-CACHES"] {
        assert!(!out.contains(w), "{w}: {out:?}");
    }
    assert!(out.contains("Linux\ndone\n"), "reading tunables still works: {out:?}");
    assert_eq!(read_host("/proc/sys/kernel/printk_ratelimit"), ratelimit);
    assert_eq!(read_host("/proc/sys/kernel/core_pattern"), core);
}

/// Kernel memory, keyrings and timers of the host: masked (empty) or unreadable.
fn check_proc_secrets_are_masked(sb: &mut dyn ShellSession) {
    let out = sh(
        sb,
        "for f in /proc/keys /proc/kcore /proc/timer_list /proc/kmsg /proc/sched_debug; do \
           [ -e $f ] && echo \"$f $(timeout 2 head -c 4096 $f 2>/dev/null | wc -c)\"; done; echo done",
    );
    assert!(out.contains("done\n"), "{out:?}");
    for line in out.lines().filter(|l| l.starts_with("/proc/")) {
        assert!(line.ends_with(" 0"), "readable: {line:?} in {out:?}");
    }
}

/// PID 1 is `bash` holding nothing of the process that started the sandbox: not its command
/// line, not its environment (a secret set here before the start), not its terminal.
fn check_pid1_is_bash_without_our_state(sb: &mut dyn ShellSession, secret_name: &str) {
    let me = std::env::current_exe().unwrap();
    let me = me.file_name().unwrap().to_string_lossy().to_string();
    // `x[y]z...`: a pattern that matches the name but not grep's own command line.
    let mut chars = me.chars();
    let (first, second) = (chars.next().unwrap(), chars.next().unwrap());
    let me = format!("{first}[{second}]{}", chars.as_str());
    let out = sh(
        sb,
        &format!(
            "ps -p 1 -o comm=; tr '\\0' ' ' < /proc/1/cmdline; echo; \
             cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' '\\n' | grep -c '{me}'; \
             cat /proc/[0-9]*/environ 2>/dev/null | tr '\\0' '\\n' | grep -c '^{secret_name}='"
        ),
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.first(), Some(&"bash"), "PID 1: {out:?}");
    assert!(lines.get(1).is_some_and(|l| l.starts_with("bash")), "{out:?}");
    assert_eq!(
        lines.get(2..4),
        Some(&["0", "0"][..]),
        "edgeact visible inside: {out:?}"
    );
    // Output written to PID 1's descriptors does not come back past the cap nor stop the shell.
    let out = sh(
        sb,
        "head -c 5000000 /dev/zero > /proc/1/fd/1 2>/dev/null; head -c 5000000 /dev/zero > /proc/1/fd/2 2>/dev/null; echo done",
    );
    assert!(
        out.ends_with("done\n") && out.len() < 4096,
        "{:?}",
        &out[..out.len().min(200)]
    );
}

/// The environment variable set before each sandbox starts (a sandbox forked from this
/// process would inherit it).
const SECRET_ENV: &str = "EDGEACT_TEST_HOST_SECRET";

fn set_secret() {
    std::env::set_var(SECRET_ENV, format!("s{:08x}", rand::random::<u32>()));
}

macro_rules! on_both_backends {
    ($($check:ident: $container_test:ident, $namespace_test:ident;)*) => {$(
        #[test]
        fn $container_test() {
            set_secret();
            if let Some(mut sb) = container() {
                $check(&mut sb);
            }
        }
        #[test]
        fn $namespace_test() {
            set_secret();
            if let Some(mut sb) = namespace() {
                $check(&mut sb);
            }
        }
    )*};
}

fn check_pid1(sb: &mut dyn ShellSession) {
    check_pid1_is_bash_without_our_state(sb, SECRET_ENV);
}

on_both_backends! {
    check_proc_sys_is_read_only: container_proc_sys_is_read_only, namespace_proc_sys_is_read_only;
    check_proc_secrets_are_masked: container_proc_secrets_are_masked, namespace_proc_secrets_are_masked;
    check_pid1: container_pid1_is_bash_without_our_state, namespace_pid1_is_bash_without_our_state;
}
