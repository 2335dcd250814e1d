//! The namespace sandbox holds no host privilege (issue #12): root inside is an unprivileged
//! host uid range, kernel tunables and secrets under `/proc` are read-only or masked, PID 1 is
//! a fresh `bash` holding nothing of edgeact (memory, environment, descriptors), and the
//! host-root view masks the host's secret files.
//!
//! Each test reproduces an attack a review ran against the old sandbox (which mapped root to
//! host root and kept a fork of edgeact as PID 1) and shows it contained. Tests print why
//! they skip when the sandbox cannot start here or a prerequisite is missing.

use std::path::{Path, PathBuf};
use std::time::Duration;

use edgeact_tools::os::{OsSandbox, RootFs, SandboxConfig};

use crate::sandbox_support;
use sandbox_support::{marker, start, wait_until};

fn cfg() -> SandboxConfig {
    SandboxConfig {
        silence_timeout: Duration::from_secs(2),
        wall_timeout: Duration::from_secs(10),
        raw_terminal: false,
        ..Default::default()
    }
}

/// Host root mode only: as another user the sandbox never had host root to lose.
fn start_as_host_root(cfg: SandboxConfig) -> Option<OsSandbox> {
    let sb = start(cfg)?;
    if sb.host_id_base().is_none() {
        eprintln!("skipping: not running as host root, so the sandbox runs unprivileged anyway");
        return None;
    }
    Some(sb)
}

fn run(sb: &mut OsSandbox, cmd: &str) -> String {
    sb.run(cmd).unwrap().output
}

fn host_pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|d| d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect())
        .unwrap_or_default()
}

/// Host pid of the sandbox process whose argv[0] is `name` (started inside with
/// `(exec -a NAME sleep 60) &`).
fn host_pid_named(name: &str) -> Option<u32> {
    let mut found = None;
    wait_until(Duration::from_secs(5), || {
        found = host_pids().into_iter().find(|p| {
            std::fs::read(format!("/proc/{p}/cmdline"))
                .is_ok_and(|c| c.split(|b| *b == 0).next() == Some(name.as_bytes()))
        });
        found.is_some()
    });
    found
}

/// Host pid of PID 1 of the pid namespace that `member` (a host pid) is in.
fn host_pid_of_init(member: u32) -> Option<u32> {
    let ns = std::fs::read_link(format!("/proc/{member}/ns/pid")).ok()?;
    host_pids().into_iter().find(|p| {
        std::fs::read_link(format!("/proc/{p}/ns/pid")).is_ok_and(|n| n == ns)
            && std::fs::read_to_string(format!("/proc/{p}/status")).is_ok_and(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("NSpid:"))
                    .is_some_and(|l| l.split_whitespace().last() == Some("1"))
            })
    })
}

fn status_ids(pid: u32, key: &str) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .map(|l| l.split_whitespace().filter_map(|x| x.parse().ok()).collect())
        .unwrap_or_default()
}

#[test]
fn sandbox_priv_proc_sys_is_not_writable_and_the_host_is_unchanged() {
    let Some(mut sb) = start(cfg()) else { return };
    let path = "/proc/sys/kernel/printk_ratelimit";
    let Ok(before) = std::fs::read_to_string(path) else {
        eprintln!("skipping: {path} not readable here");
        return;
    };
    let other = before.trim().parse::<u64>().unwrap_or(5) + 1;
    let out = run(&mut sb, &format!("echo {other} > {path}; echo rc=$?"));
    assert!(out.contains("rc=1"), "the write must fail: {out:?}");
    assert_eq!(std::fs::read_to_string(path).unwrap(), before, "host value changed");
    // core_pattern (a pipe there runs a program as host root) and sysrq-trigger cannot even
    // be opened for writing.
    for f in [
        "/proc/sys/kernel/core_pattern",
        "/proc/sysrq-trigger",
        "/proc/sys/vm/drop_caches",
    ] {
        let out = run(
            &mut sb,
            &format!("(exec 3>{f}) 2>/dev/null && echo OPENED || echo REFUSED"),
        );
        assert!(out.contains("REFUSED") && !out.contains("OPENED"), "{f}: {out:?}");
    }
    // And the read-only mount cannot be made writable again.
    let out = run(&mut sb, "mount -o remount,rw /proc/sys 2>/dev/null; umount /proc/sys 2>/dev/null; (exec 3>/proc/sys/kernel/core_pattern) 2>/dev/null && echo OPENED || echo REFUSED");
    assert!(out.contains("REFUSED"), "{out:?}");
}

#[test]
fn sandbox_priv_kernel_files_in_proc_are_masked() {
    let Some(mut sb) = start(cfg()) else { return };
    let files = [
        "/proc/keys",
        "/proc/key-users",
        "/proc/kcore",
        "/proc/timer_list",
        "/proc/kmsg",
        "/proc/sched_debug",
    ];
    let cmd = files
        .iter()
        .map(|f| format!("[ -e {f} ] && echo \"{f} $(timeout 2 head -c 4096 {f} 2>/dev/null | wc -c)\";"))
        .collect::<String>();
    let out = run(&mut sb, &cmd);
    for line in out.lines() {
        assert!(line.ends_with(" 0"), "readable kernel file: {line:?} in {out:?}");
    }
    // Masked directories are empty; the tty driver list no longer stops `find /`.
    let out = run(&mut sb, "ls -A /proc/acpi /proc/scsi /proc/tty/driver 2>/dev/null | grep -v ':$' | grep -c . ; find /proc -maxdepth 3 2>&1 >/dev/null | grep -c 'Permission denied'");
    assert_eq!(out.lines().collect::<Vec<_>>(), ["0", "0"], "{out:?}");
}

#[test]
fn sandbox_priv_root_inside_is_an_unprivileged_host_uid() {
    let Some(mut sb) = start_as_host_root(cfg()) else {
        return;
    };
    let base = sb.host_id_base().unwrap();
    assert!(base >= 65536, "base {base}");
    let out = run(&mut sb, "id -u; cat /proc/self/uid_map /proc/self/gid_map");
    let lines: Vec<Vec<&str>> = out.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(lines[0], ["0"], "root inside: {out:?}");
    for map in &lines[1..] {
        assert_eq!(map[0], "0", "{out:?}");
        assert_ne!(map[1], "0", "root inside must not be host root: {out:?}");
        assert_eq!(map[1], base.to_string(), "{out:?}");
    }
    // A process inside, seen from the host, runs as the unprivileged uid.
    let name = marker();
    run(
        &mut sb,
        &format!("(exec -a {name} sleep 60) & touch /{name}.file /root/{name}.file"),
    );
    let pid = host_pid_named(&name).expect("the marker process is visible from the host");
    for key in ["Uid:", "Gid:"] {
        let ids = status_ids(pid, key);
        assert!(
            !ids.is_empty() && ids.iter().all(|&i| i == base),
            "{key} {ids:?}, base {base}"
        );
    }
    let caps = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(caps.contains("CapEff:\t0000000000000000") || base != 0, "{caps}");
    // A file root creates inside is owned by that uid on the host side (the upper layer).
    use std::os::unix::fs::MetadataExt;
    for f in [format!("/{name}.file"), format!("/root/{name}.file")] {
        let m = std::fs::metadata(format!("/proc/{pid}/root{f}")).unwrap();
        assert_eq!((m.uid(), m.gid()), (base, base), "{f}");
        assert!(!Path::new(&f).exists(), "{f} leaked to the host");
    }
    // Yet host root's files look root-owned inside (idmapped lower layer), and root inside
    // can still change them in its own copy.
    let out = run(
        &mut sb,
        "stat -c '%U %G' /etc/passwd /usr/bin; echo x >> /etc/passwd && echo WROTE; mkdir /opt/edgeact-made && echo MADE",
    );
    let out_lines: Vec<&str> = out.lines().collect();
    assert_eq!(out_lines, ["root root", "root root", "WROTE", "MADE"], "{out:?}");
}

#[test]
fn sandbox_priv_pid1_is_bash_holding_nothing_of_edgeact() {
    let Some(mut sb) = start(cfg()) else { return };
    // What a reader of PID 1 inside would have found of edgeact: its binary (memory, command
    // line) and its environment.
    let exe = std::env::current_exe().unwrap();
    let exe_name = exe.file_name().unwrap().to_string_lossy().to_string();
    let out = run(
        &mut sb,
        "ps -p 1 -o comm=; tr '\\0' ' ' < /proc/1/cmdline; echo; tr '\\0' '\\n' < /proc/1/environ | grep -c .",
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines, ["bash", "bash ", "0"], "{out:?}");
    // `[x]yz` matches "xyz" but not grep's own command line.
    let pattern = format!("[{}]{}", &exe_name[..1], &exe_name[1..]);
    let out = run(&mut sb, &format!("grep -c '{pattern}' /proc/1/maps; grep -la '{pattern}' /proc/[0-9]*/cmdline /proc/[0-9]*/environ /proc/[0-9]*/maps 2>/dev/null | wc -l"));
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["0", "0"],
        "edgeact visible inside: {out:?}"
    );
    // Host view of PID 1: bash, no environment, stdio on /dev/null or its own pipe, never the
    // test process's descriptors.
    let name = marker();
    run(&mut sb, &format!("(exec -a {name} sleep 60) &"));
    let Some(member) = host_pid_named(&name) else {
        panic!("marker process not visible from the host");
    };
    let init = host_pid_of_init(member).expect("PID 1 of the sandbox");
    let init_exe = std::fs::read_link(format!("/proc/{init}/exe")).unwrap();
    assert!(init_exe.ends_with("bash"), "{init_exe:?}");
    assert_eq!(std::fs::read(format!("/proc/{init}/environ")).unwrap(), b"");
    let maps = std::fs::read_to_string(format!("/proc/{init}/maps")).unwrap();
    assert!(!maps.contains(&exe_name), "PID 1 maps edgeact's binary");
    for fd in 0..3 {
        let theirs = std::fs::read_link(format!("/proc/{init}/fd/{fd}")).unwrap();
        let ours: Vec<PathBuf> = (0..3)
            .filter_map(|i| std::fs::read_link(format!("/proc/self/fd/{i}")).ok())
            .collect();
        let t = theirs.to_string_lossy();
        // (/dev/null may be our stdin too: sharing it leaks nothing.)
        assert!(
            t == "/dev/null" || !ours.contains(&theirs),
            "PID 1 fd {fd} is ours: {theirs:?}"
        );
        assert!(t == "/dev/null" || t.starts_with("pipe:"), "PID 1 fd {fd}: {t}");
    }
    let fds = std::fs::read_dir(format!("/proc/{init}/fd")).unwrap().count();
    assert_eq!(fds, 4, "PID 1 holds only its stdio and script pipe");
}

#[test]
fn sandbox_priv_output_through_pid1_descriptors_goes_nowhere() {
    let Some(mut sb) = start(cfg()) else { return };
    // The old PID 1 held edgeact's stdout: 50 MB written there reached the host's terminal
    // past the output cap. Now it is /dev/null, and stdin is PID 1's own pipe.
    let out = run(&mut sb, "head -c 50000000 /dev/zero > /proc/1/fd/1; echo rc=$?; head -c 50000000 /dev/zero > /proc/1/fd/2; echo X > /proc/1/fd/0; echo done");
    assert!(out.ends_with("done"), "{out:?}");
    assert!(out.len() < 200, "{out:?}");
    // PID 1 is still there, reaping.
    let out = run(&mut sb, "ps -p 1 -o comm=");
    assert_eq!(out, "bash");
}

#[test]
fn sandbox_priv_pid1_reaps_orphans() {
    let Some(mut sb) = start(cfg()) else { return };
    run(&mut sb, "for i in 1 2 3; do (sleep 0.1 &) ; done");
    let mut last = String::new();
    let reaped = wait_until(Duration::from_secs(10), || {
        last = run(&mut sb, "ps -eo stat= | grep -c '^Z'");
        last == "0"
    });
    assert!(reaped, "zombies left: {last:?}");
}

#[test]
fn sandbox_priv_host_view_masks_secret_files() {
    let Some(mut sb) = start(SandboxConfig {
        root: RootFs::HostReadOnly,
        ..cfg()
    }) else {
        return;
    };
    for f in ["/etc/shadow", "/etc/gshadow", "/etc/shadow-", "/etc/gshadow-"] {
        if !Path::new(f).exists() {
            eprintln!("note: {f} absent on this host");
            continue;
        }
        // Hashes are replaced by `*` (or, as an unprivileged user, the file stays unreadable).
        let out = run(
            &mut sb,
            &format!("cut -d: -f2 {f} 2>/dev/null | grep -v '^[*!]*$' | wc -l"),
        );
        assert_eq!(out, "0", "{f} shows password fields: {out:?}");
    }
    for secret in ["/etc/mysql/debian.cnf", "/etc/security/opasswd"] {
        if !Path::new(secret).exists() {
            eprintln!("note: {secret} absent on this host");
        }
        let out = run(&mut sb, &format!("cat {secret} 2>/dev/null | wc -c"));
        assert_eq!(out, "0", "{secret}: {out:?}");
    }
    for d in ["/etc/ssl/private", "/root", "/home", "/var/backups"] {
        let out = run(
            &mut sb,
            &format!("ls -A {d} 2>/dev/null | grep -v '^\\.bash\\|^\\.profile\\|^\\.inputrc' | wc -l"),
        );
        assert_eq!(out, "0", "{d}: {out:?}");
    }
}

/// The session keyring edgeact runs in (where a service keeps Kerberos tickets, say) is not the
/// sandbox's: its possessor can read and clear it whatever its ids, and neither the namespaces
/// nor the id change replace it. The shell and a script get a new, empty one each.
#[cfg(target_arch = "x86_64")]
#[test]
fn sandbox_priv_the_session_keyring_stays_outside() {
    use edgeact_tools::os::{Script, ScriptLanguage};
    // This thread's own session keyring; the sandbox's processes are forked from it.
    let name = std::ffi::CString::new(format!("edgeact-test-{}", marker())).unwrap();
    // SAFETY: keyctl(KEYCTL_JOIN_SESSION_KEYRING, name) with a valid C string.
    let outer = unsafe { libc::syscall(libc::SYS_keyctl, libc::KEYCTL_JOIN_SESSION_KEYRING, name.as_ptr()) };
    if outer < 0 {
        eprintln!(
            "skipping: keyrings are not available here ({})",
            std::io::Error::last_os_error()
        );
        return;
    }
    let Some(mut sb) = start(cfg()) else { return };
    // keyctl(KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, create = 0), syscall 250 on x86_64.
    let probe = "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n\
                 print('SESSION', libc.syscall(250, 0, -3, 0))\n";
    let r = sb
        .run_script(
            &Script {
                language: ScriptLanguage::Python,
                code: probe.into(),
            },
            &[],
        )
        .expect("run the probe");
    let out = String::from_utf8_lossy(&r.output).to_string();
    let Some(id) = out.split_whitespace().skip_while(|w| *w != "SESSION").nth(1) else {
        eprintln!("skipping: the probe did not run (no python3 in the sandbox?): {out:?}");
        return;
    };
    assert_ne!(id, outer.to_string(), "a script holds edgeact's session keyring");
    let shell = run(
        &mut sb,
        "python3 -c 'import ctypes; print(\"SESSION\", ctypes.CDLL(None).syscall(250, 0, -3, 0))'",
    );
    assert!(shell.contains("SESSION"), "{shell}");
    assert!(
        !shell.contains(&format!("SESSION {outer}")),
        "the shell holds edgeact's session keyring: {shell}"
    );
}

/// A device node kept on the host's root file system outside `/dev` (a chroot, container
/// storage under `/var/lib`) opened the host's device through `--rootfs host`'s overlay: the
/// root is `nodev` now. The node here is a harmless copy of `/dev/null`.
#[test]
fn sandbox_priv_device_nodes_of_the_host_view_do_not_open() {
    let dir = PathBuf::from(format!("/var/lib/edgeact-test-{}", marker()));
    if std::fs::create_dir(&dir).is_err() {
        eprintln!("skipping: cannot create {}", dir.display());
        return;
    }
    let node = dir.join("null");
    let made = std::process::Command::new("mknod")
        .arg(&node)
        .args(["c", "1", "3"])
        .status()
        .is_ok_and(|s| s.success())
        && std::process::Command::new("chmod")
            .arg("666")
            .arg(&node)
            .status()
            .is_ok_and(|s| s.success());
    let out = made.then(|| {
        start_as_host_root(SandboxConfig {
            root: RootFs::HostReadOnly,
            ..cfg()
        })
        .map(|mut sb| {
            run(
                &mut sb,
                &format!("echo x > {} && echo opened; echo end", node.display()),
            )
        })
    });
    let _ = std::fs::remove_dir_all(&dir);
    match out {
        None => eprintln!("skipping: mknod failed"),
        Some(None) => {}
        Some(Some(out)) => assert!(out.ends_with("end") && !out.contains("opened"), "{out:?}"),
    }
}

/// `tty_nr` of `/proc/<pid>/stat` (0: no controlling terminal).
fn tty_nr(pid: &str) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_comm = &stat[stat.rfind(')').unwrap() + 1..];
    after_comm.split_whitespace().nth(4).unwrap().parse().unwrap()
}

/// No process inside holds the controlling terminal edgeact runs on: PID 1 held it, and root
/// inside, which may ptrace PID 1, made it type commands into the user's shell outside
/// (TIOCSTI). Run again under `script`, so that edgeact has a terminal to lose.
#[test]
fn sandbox_priv_nothing_inside_has_edgeacts_terminal() {
    const CHILD: &str = "EDGEACT_TEST_ON_A_TERMINAL";
    if std::env::var_os(CHILD).is_none() {
        let cmd = format!(
            "{} privilege::sandbox_priv_nothing_inside_has_edgeacts_terminal --exact --nocapture --test-threads=1",
            std::env::current_exe().unwrap().display()
        );
        let out = std::process::Command::new("script")
            .args(["-qec", &cmd, "/dev/null"])
            .env(CHILD, "1")
            .stdin(std::process::Stdio::null())
            .output();
        let Ok(out) = out else {
            eprintln!("skipping: no `script` command to give the test a terminal");
            return;
        };
        let text = String::from_utf8_lossy(&out.stdout);
        if !text.contains("running 1 test") {
            eprintln!(
                "skipping: `script` could not run the test on a terminal: {text}{}",
                String::from_utf8_lossy(&out.stderr)
            );
            return;
        }
        assert!(
            out.status.success() && text.contains("1 passed"),
            "on a terminal:\n{text}"
        );
        eprintln!("on a terminal:\n{text}");
        return;
    }
    let terminal = tty_nr("self");
    if terminal == 0 {
        eprintln!("skipping: `script` gave no controlling terminal");
        return;
    }
    let Some(mut sb) = start(cfg()) else { return };
    assert_eq!(
        run(&mut sb, "awk '{print $7}' /proc/1/stat"),
        "0",
        "PID 1 has a terminal"
    );
    let all = run(
        &mut sb,
        "cat /proc/[0-9]*/stat | awk '{print $7}' | sort -u | tr '\\n' ' '",
    );
    assert!(!all.split_whitespace().any(|t| t == terminal.to_string()), "{all}");
}

/// A process inside that stops the script's processes as they are forked (their pids are
/// predictable) made the judge wait forever: a stopped child kept the report pipe open. The
/// script now times out as any other.
#[test]
fn sandbox_priv_a_stopped_script_cannot_hang_the_judge() {
    use edgeact_tools::os::Script;
    let Some(mut sb) = start(SandboxConfig {
        wall_timeout: Duration::from_secs(3),
        ..cfg()
    }) else {
        return;
    };
    // Stops every pid just after its own, forever, without forking (builtins only).
    run(
        &mut sb,
        "(b=$BASHPID; while :; do for ((p=b+1; p<b+40; p++)); do kill -STOP $p 2>/dev/null; done; done) &",
    );
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut last = None;
        for _ in 0..5 {
            last = Some(sb.run_script(&Script::bash("echo hi"), &[]).map(|r| r.code));
        }
        let _ = tx.send(last);
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(r) => eprintln!("last script: {r:?}"),
        Err(_) => panic!("run_script did not return within a minute (wall timeout 3 s)"),
    }
}
