//! The namespace sandbox started by an ordinary user (unprivileged mode: the sandbox's user
//! namespace maps root inside to the caller). Run as host root, as CI runs, each test runs
//! itself again as uid and gid 65534 from a copy of this test binary in a directory of that
//! user's, so the mode is tested wherever the tests run; run as another user, it runs as is.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use edgeact_tools::os::{OsSandbox, RootFs, SandboxConfig, Script};

use crate::sandbox_support::{marker, start};

/// The ordinary user the tests run as when started as root (`nobody` on most systems).
const ORDINARY_ID: u32 = 65534;

fn cfg() -> SandboxConfig {
    SandboxConfig {
        silence_timeout: Duration::from_secs(2),
        wall_timeout: Duration::from_secs(10),
        raw_terminal: false,
        root: RootFs::HostReadOnly,
        ..Default::default()
    }
}

fn run(sb: &mut OsSandbox, cmd: &str) -> String {
    sb.run(cmd).unwrap().output
}

/// Runs `body` as an ordinary user: here when this process is not root; as root, runs the test
/// `name` (its path in this binary) in a copy of the binary as [`ORDINARY_ID`] and asserts that
/// it ran and passed there.
fn as_ordinary_user(name: &str, body: impl FnOnce()) {
    let euid = std::fs::metadata("/proc/self").expect("/proc/self").uid();
    if euid != 0 {
        return body();
    }
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("sandbox-tests");
    std::fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::chown(dir.path(), Some(ORDINARY_ID), Some(ORDINARY_ID)).unwrap();
    if !reachable_by_others(dir.path()) {
        eprintln!("skipping: {} is not reachable by other users", dir.path().display());
        return;
    }
    let out = Command::new(&exe)
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .current_dir(dir.path())
        .env("HOME", dir.path())
        .env("TMPDIR", dir.path())
        .uid(ORDINARY_ID)
        .gid(ORDINARY_ID)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{name} as uid {ORDINARY_ID}:\n{text}");
    // The copy skips when the sandbox cannot start: that is a failure wherever the user may
    // create user namespaces (a start broken for ordinary users would pass otherwise).
    if text.contains("skipping: the sandbox cannot start") {
        let userns = Command::new("unshare")
            .args(["-U", "-r", "-m", "true"])
            .uid(ORDINARY_ID)
            .gid(ORDINARY_ID)
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            !userns,
            "the sandbox did not start as uid {ORDINARY_ID}, who may create user namespaces:\n{text}"
        );
    }
    assert!(
        text.contains("1 passed"),
        "{name} did not run as uid {ORDINARY_ID}:\n{text}"
    );
    eprintln!("{name} as uid {ORDINARY_ID}:\n{text}");
}

/// Whether every directory above `dir` lets others through (a test binary under a private home
/// cannot run as another user).
fn reachable_by_others(dir: &Path) -> bool {
    dir.ancestors()
        .skip(1)
        .all(|d| std::fs::metadata(d).is_ok_and(|m| m.mode() & 0o001 != 0))
}

/// The mounts the sandbox made (the masks over private places, the read-only root, `/proc`'s
/// masks) were made in a mount namespace of the sandbox's own user namespace, so its root could
/// undo them: `umount /home` showed the host's homes. They are locked now.
#[test]
fn sandbox_unpriv_set_up_mounts_cannot_be_undone() {
    as_ordinary_user("unprivileged::sandbox_unpriv_set_up_mounts_cannot_be_undone", || {
        let Some(mut sb) = start(cfg()) else { return };
        assert!(sb.host_id_base().is_none(), "not the unprivileged mode");
        assert_eq!(run(&mut sb, "id -u"), "0");
        for masked in ["/home", "/root", "/proc/kcore", "/proc/sys", "/"] {
            let out = run(
                &mut sb,
                &format!("umount {masked} 2>/dev/null && echo undone; umount -l {masked} 2>/dev/null && echo undone; echo tried"),
            );
            assert_eq!(out, "tried", "{masked}: {out:?}");
        }
        for d in ["/home", "/root"] {
            let out = run(
                &mut sb,
                &format!("ls -A {d} | grep -v '^\\.bash\\|^\\.profile\\|^\\.inputrc' | wc -l"),
            );
            assert_eq!(out, "0", "{d}: {out:?}");
        }
        let out = run(&mut sb, "mount -o remount,rw / 2>/dev/null && echo rw; echo tried");
        assert_eq!(out, "tried");
        let out = run(
            &mut sb,
            "mount -o remount,rw /proc/sys 2>/dev/null && echo rw; echo tried",
        );
        assert_eq!(out, "tried");
    });
}

/// Scripts (check scripts, `--answer`) join the namespaces the shell lives in: they see what
/// the shell wrote and are root there too.
#[test]
fn sandbox_unpriv_scripts_run_beside_the_shell() {
    as_ordinary_user("unprivileged::sandbox_unpriv_scripts_run_beside_the_shell", || {
        let Some(mut sb) = start(cfg()) else { return };
        let m = marker();
        run(&mut sb, &format!("echo {m} > /tmp/shared"));
        let shell_ns = run(&mut sb, "readlink /proc/self/ns/mnt /proc/self/ns/user");
        let r = sb
            .run_script(
                &Script::bash("cat /tmp/shared; id -u; readlink /proc/self/ns/mnt /proc/self/ns/user"),
                &[],
            )
            .unwrap();
        assert_eq!(r.code, 0, "{r:?}");
        let out = String::from_utf8_lossy(&r.output).replace("\r\n", "\n");
        assert_eq!(
            out.trim(),
            format!("{m}\n0\n{}", shell_ns.replace("\r\n", "\n")),
            "{out:?}"
        );
    });
}

/// Overlayfs refuses the host's `/` as an ordinary user's lower layer, so the host view is a
/// recursive bind of it, which brought every host submount with its own flags: `/sys` and the
/// cgroup trees were writable, as was any disk mounted below `/` that the user may write.
/// Every mount of the view is read-only now.
#[test]
fn sandbox_unpriv_host_view_is_read_only_down_to_every_submount() {
    as_ordinary_user(
        "unprivileged::sandbox_unpriv_host_view_is_read_only_down_to_every_submount",
        || {
            let Some(mut sb) = start(cfg()) else { return };
            let writable = run(
                &mut sb,
                r"awk '$5 ~ /^\/sys/ {print $5, $6}' /proc/self/mountinfo | grep -v ' ro' ; echo end",
            );
            assert_eq!(writable, "end", "writable host mounts: {writable:?}");
            // Where overlayfs takes the host's `/` for an ordinary user, the root is a writable
            // upper layer instead (and the host's submounts are not in it).
            if sb.enforcement().iter().any(|e| e.contains("read-only bind")) {
                assert_eq!(run(&mut sb, "touch /etc/x 2>/dev/null || echo refused"), "refused");
            }
        },
    );
}
