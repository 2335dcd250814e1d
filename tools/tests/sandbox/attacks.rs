//! Containment of the OS sandbox against what a model (or a hostile task) could type: writes
//! outside, network, fork bomb, CPU burn, a flood of output, killing the parent, reading host
//! secrets, undoing mounts, and processes left behind; and a root directory whose links lead
//! out to the host. Each attack is bounded in time.
//!
//! Each test prints why it skips when the sandbox cannot start on this machine.

use std::path::Path;
use std::time::{Duration, Instant};

use edgeact_tools::os::{EndReason, OsSandbox, RootFs, SandboxConfig, Script};

use crate::sandbox_support;
use sandbox_support::{marker, start, wait_until};

fn cfg() -> SandboxConfig {
    SandboxConfig {
        silence_timeout: Duration::from_secs(2),
        wall_timeout: Duration::from_secs(6),
        max_procs: 64,
        ..Default::default()
    }
}

/// Host processes whose command line contains `needle`.
fn host_procs_with(needle: &str) -> usize {
    let Ok(dir) = std::fs::read_dir("/proc") else { return 0 };
    dir.filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()))
        .filter(|e| {
            std::fs::read(e.path().join("cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(needle))
                .unwrap_or(false)
        })
        .count()
}

#[test]
fn sandbox_attack_write_outside() {
    let Some(mut sb) = start(cfg()) else { return };
    let m = marker();
    let passwd_before = std::fs::read("/etc/passwd").unwrap();
    let out = sb
        .run(&format!(
            "touch /usr/{m} /{m} && echo '{m}:x:0:0::/:/bin/sh' >> /etc/passwd && ls /usr/{m} && tail -1 /etc/passwd"
        ))
        .unwrap();
    assert!(
        out.output.contains(&format!("{m}:x:0:0")),
        "writes succeed inside: {:?}",
        out.output
    );
    assert!(!Path::new(&format!("/usr/{m}")).exists());
    assert!(!Path::new(&format!("/{m}")).exists());
    assert_eq!(std::fs::read("/etc/passwd").unwrap(), passwd_before);
    // A second sandbox starts from the pristine lower layer.
    let Some(mut other) = start(cfg()) else { return };
    let out = other.run(&format!("ls /usr/{m} 2>&1 | head -1")).unwrap();
    assert!(out.output.contains("No such file"), "{:?}", out.output);
}

#[test]
fn sandbox_attack_network() {
    let Some(mut sb) = start(cfg()) else { return };
    // Only a loopback device, and it is down.
    let out = sb
        .run("cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' '")
        .unwrap();
    assert!(out.output.starts_with("lo\r\n"), "{:?}", out.output);
    for target in ["127.0.0.1/3306", "1.1.1.1/53", "10.0.0.1/80"] {
        let out = sb
            .run(&format!(
                "(echo > /dev/tcp/{target}) 2>&1 && echo CONNECTED || echo REFUSED"
            ))
            .unwrap();
        assert!(
            out.output.contains("REFUSED") && !out.output.contains("CONNECTED\r"),
            "{target}: {:?}",
            out.output
        );
    }
}

#[test]
fn sandbox_attack_fork_bomb() {
    let Some(mut sb) = start(cfg()) else { return };
    let m = marker();
    let t = Instant::now();
    sb.run(&format!("bash -c 'f() {{ f | f & }}; f' {m} 2>/dev/null"))
        .unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let n = host_procs_with(&m);
    assert!(n <= 64, "{n} bomb processes despite max_procs = 64");
    let init_alive = host_procs_with(&m);
    drop(sb);
    assert!(
        wait_until(Duration::from_secs(5), || host_procs_with(&m) == 0),
        "bomb survived the sandbox ({init_alive} before drop)"
    );
    assert!(t.elapsed() < Duration::from_secs(20));
}

#[test]
fn sandbox_attack_cpu_burn() {
    let Some(mut sb) = start(SandboxConfig {
        cpu_seconds: 1,
        ..cfg()
    }) else {
        return;
    };
    let t = Instant::now();
    let r = sb.run_script(&Script::bash("while :; do :; done"), &[]).unwrap();
    // SIGXCPU (24) at the soft limit.
    assert_eq!(r.code, 128 + 24, "{r:?}");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    // A silent endless loop in the shell ends the observation after the silence rule; the
    // wall-clock limit bounds scripts.
    let Some(mut sb) = start(cfg()) else { return };
    let t = Instant::now();
    let r = sb.run_script(&Script::bash("sleep 100"), &[]).unwrap();
    assert_eq!(r.code, 124);
    assert!(t.elapsed() < Duration::from_secs(9));
}

#[test]
fn sandbox_attack_huge_output() {
    let Some(mut sb) = start(SandboxConfig {
        output_cap: 1 << 20,
        wall_timeout: Duration::from_secs(20),
        ..cfg()
    }) else {
        return;
    };
    let t = Instant::now();
    let out = sb.run("head -c 1000000000 /dev/zero | tr '\\0' x").unwrap();
    assert_eq!(out.end, EndReason::OutputCap);
    assert!(out.raw.len() <= 1 << 20);
    assert!(t.elapsed() < Duration::from_secs(15), "{:?}", t.elapsed());
    let out = sb.run("echo still-here").unwrap();
    assert!(out.output.contains("still-here\r\n"), "{:?}", out.output);
    let r = sb
        .run_script(&Script::bash("head -c 1000000000 /dev/zero"), &[])
        .unwrap();
    assert!(r.output.len() <= 1 << 20 && r.code != 0);
}

/// Output that arrives after an observation ended is shown with the next one, within the same
/// cap (leftover and new output together reached twice the cap).
#[test]
fn sandbox_attack_leftover_output_counts_against_the_cap() {
    let cap = 4096;
    let Some(mut sb) = start(SandboxConfig {
        output_cap: cap,
        ..cfg()
    }) else {
        return;
    };
    sb.run("(sleep 1; head -c 20000 /dev/zero | tr '\\0' a) &").unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let out = sb.run("head -c 20000 /dev/zero | tr '\\0' b").unwrap();
    assert!(out.raw.contains(&b'a'), "no leftover was shown: {}", out.raw.len());
    assert!(out.raw.len() <= cap, "{} bytes past a cap of {cap}", out.raw.len());
}

#[test]
fn sandbox_attack_kill_parent_and_everything() {
    let Some(mut sb) = start(cfg()) else { return };
    // The shell's parent is the namespace's init: immune to signals from inside (as host
    // root the kill is refused outright: PID 1 runs as another host user).
    let out = sb.run("echo $PPID; kill -9 $PPID; kill -9 1; echo survived").unwrap();
    assert!(out.output.starts_with("1\r\n"), "{:?}", out.output);
    assert!(out.output.contains("survived\r\n"), "{:?}", out.output);
    sb.run("sleep 300 &").unwrap();
    let out = sb.run("kill -9 -1; echo after").unwrap();
    assert!(out.output.contains("after\r\n"), "{:?}", out.output);
    let out = sb.run("pgrep -c sleep || true").unwrap();
    assert!(out.output.starts_with("0\r\n"), "{:?}", out.output);
    // Killing the shell itself ends the session cleanly.
    let out = sb.run("kill -9 $$").unwrap();
    assert_eq!(out.end, EndReason::ShellExited);
    assert!(sb.run("echo x").is_err());
}

#[test]
fn sandbox_attack_read_host_secrets() {
    let Some(mut sb) = start(cfg()) else { return };
    let out = sb
        .run("ls -A /root; ls -A /home | wc -l; ls -A /work 2>/dev/null | wc -l")
        .unwrap();
    assert!(
        out.output.starts_with(".bashrc  .inputrc  .profile\r\n0\r\n0\r\n"),
        "{:?}",
        out.output
    );
    let out = sb.run("cut -d: -f2 /etc/shadow | sort -u | tr '\\n' ' '").unwrap();
    assert!(!out.output.contains('$'), "password hashes visible: {:?}", out.output);
    // The masks cannot be undone from inside.
    let out = sb
        .run("umount /root 2>&1; umount -l /etc/shadow 2>&1; mount -t tmpfs x /mnt 2>&1; ls -A /root | wc -l")
        .unwrap();
    assert!(out.output.contains("3\r\n"), "{:?}", out.output);
    assert!(!out.output.contains("\r\n0\r\n"), "{:?}", out.output);
}

#[test]
fn sandbox_attack_process_left_behind() {
    let Some(mut sb) = start(cfg()) else { return };
    let m = marker();
    sb.run(&format!(
        "nohup bash -c 'sleep 1000; true' {m}-a >/dev/null 2>&1 & disown; setsid bash -c 'sleep 1000; true' {m}-b &"
    ))
    .unwrap();
    sb.run_script(
        &Script::bash(format!(
            "setsid bash -c 'sleep 1000; true' {m}-c >/dev/null 2>&1 < /dev/null &"
        )),
        &[],
    )
    .unwrap();
    assert!(
        wait_until(Duration::from_secs(3), || host_procs_with(&m) >= 3),
        "{}",
        host_procs_with(&m)
    );
    drop(sb);
    assert!(
        wait_until(Duration::from_secs(5), || host_procs_with(&m) == 0),
        "left behind: {}",
        host_procs_with(&m)
    );
}

#[test]
fn sandbox_attack_memory_hog() {
    let Some(mut sb) = start(SandboxConfig {
        memory_bytes: 256 << 20,
        ..cfg()
    }) else {
        return;
    };
    eprintln!("limits enforced by: {:?}", sb.enforcement());
    let t = Instant::now();
    // 2 GiB touched page by page: the memory cgroup kills it, or RLIMIT_AS refuses it.
    let r = sb
        .run_script(&Script::bash("python3 -c 'a = bytearray(2 << 30); print(len(a))'"), &[])
        .unwrap();
    assert_ne!(r.code, 0, "{:?}", String::from_utf8_lossy(&r.output));
    assert!(t.elapsed() < Duration::from_secs(6));
    let out = sb.run("echo fine").unwrap();
    assert!(out.output.contains("fine\r\n"), "{:?}", out.output);
}

/// A root directory is a file from outside too: one whose `etc` and `root` are absolute links
/// to host directories must not have the set-up write `/etc/hosts`, `/etc/hostname` or
/// `/root/.bashrc` into them. The set-up resolves its paths inside the root, as the sandbox
/// sees them (here the links then lead nowhere and the set-up fails; before, it wrote the
/// files on the host and the sandbox started): nothing is written outside either way.
#[test]
fn sandbox_attack_rootfs_links_lead_out() {
    use std::os::unix::fs::{symlink, PermissionsExt};
    // Only meaningful where a sandbox starts at all.
    if start(cfg()).is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (root, victim) = (dir.path().join("root"), dir.path().join("victim"));
    // The mount points the set-up needs before it writes, and a `bin/bash` (empty) that
    // `OsSandbox::start` asks for.
    for d in ["bin", "dev", "proc", "sys", "tmp"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::write(root.join("bin/bash"), "").unwrap();
    for d in ["etc", "home"] {
        std::fs::create_dir_all(victim.join(d)).unwrap();
        // Writable by whichever id the set-up runs as.
        std::fs::set_permissions(victim.join(d), std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    for p in [dir.path(), victim.as_path()] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    symlink(victim.join("etc"), root.join("etc")).unwrap();
    symlink(victim.join("home"), root.join("root")).unwrap();
    let started = OsSandbox::start(SandboxConfig {
        root: RootFs::Dir(root),
        ..cfg()
    });
    let written: Vec<_> = ["etc", "home"]
        .iter()
        .flat_map(|d| std::fs::read_dir(victim.join(d)).unwrap())
        .map(|e| e.unwrap().path())
        .collect();
    assert!(
        written.is_empty(),
        "set-up wrote on the host through the root's links: {written:?} (start: {:?})",
        started.err()
    );
}
