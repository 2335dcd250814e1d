//! What a sandbox leaves on the host (its temp dir and cgroups) is removed when the sandbox
//! is dropped, when the process is ended by SIGINT/SIGTERM/SIGHUP (after
//! [`cleanup_on_signals`]), and otherwise by the next start, which sweeps what dead
//! processes left behind.
//!
//! Every such path is named `edgeact-sandbox-<pid>-<hex>` (temp dir) or `edgeact-<pid>-<hex>`
//! (cgroup), `<pid>` being the owning process: a sweep removes only paths whose owner is gone.

use std::io;
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Mutex, Once};
use std::time::Duration;

use super::sys;

/// Prefix of a sandbox's temp dir (followed by `<pid>-<hex>`).
pub(crate) const STAGE_PREFIX: &str = "edgeact-sandbox-";
/// Prefix of a sandbox's cgroup directories (followed by `<pid>-<hex>`).
pub(crate) const CGROUP_PREFIX: &str = "edgeact-";
/// Where sandbox cgroups are made (v2, then v1 controllers).
pub(crate) const CGROUP_PARENTS: &[&str] = &["/sys/fs/cgroup", "/sys/fs/cgroup/pids", "/sys/fs/cgroup/memory"];

/// What one live sandbox holds on the host.
struct Held {
    stage: PathBuf,
    cgroups: Vec<PathBuf>,
    /// Host pids to kill first (the namespace's init, the intermediate process).
    pids: Vec<libc::pid_t>,
}

static LIVE: Mutex<Vec<Held>> = Mutex::new(Vec::new());
/// Write end of the pipe the signal handler writes the signal number to (-1: not set up).
static SIGNAL_PIPE: AtomicI32 = AtomicI32::new(-1);
static INSTALL: Once = Once::new();
static SWEEP: Once = Once::new();

/// Records a sandbox's host paths, so a signal can remove them.
pub(crate) fn register(stage: &Path, cgroups: &[PathBuf]) {
    if let Ok(mut live) = LIVE.lock() {
        live.push(Held {
            stage: stage.to_path_buf(),
            cgroups: cgroups.to_vec(),
            pids: Vec::new(),
        });
    }
}

/// Records the processes of a registered sandbox (killed before its paths are removed).
pub(crate) fn set_pids(stage: &Path, pids: &[libc::pid_t]) {
    if let Ok(mut live) = LIVE.lock() {
        if let Some(h) = live.iter_mut().find(|h| h.stage == stage) {
            h.pids = pids.iter().copied().filter(|p| *p > 0).collect();
        }
    }
}

/// Forgets a sandbox (its owner has removed everything).
pub(crate) fn unregister(stage: &Path) {
    if let Ok(mut live) = LIVE.lock() {
        live.retain(|h| h.stage != stage);
    }
}

/// Removes a cgroup directory once its processes are gone (they die with the namespace's
/// init). `kill_stragglers` (our own sandbox only): `cgroup.kill` ends any that linger.
/// Gives up after about a second.
pub(crate) fn remove_cgroup(dir: &Path, kill_stragglers: bool) {
    for attempt in 0..50 {
        if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
            return;
        }
        if kill_stragglers && attempt == 10 {
            let _ = std::fs::write(dir.join("cgroup.kill"), "1");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

extern "C" fn on_signal(sig: libc::c_int) {
    let fd = SIGNAL_PIPE.load(Ordering::Relaxed);
    if fd >= 0 {
        let b = sig as u8;
        // SAFETY: write(2) is async-signal-safe; `b` is a live stack byte.
        unsafe { libc::write(fd, (&b as *const u8).cast(), 1) };
    }
}

/// Makes SIGINT, SIGTERM and SIGHUP remove every live sandbox's temp dir and cgroups (its
/// processes are killed first) before the process dies of the signal as it would have.
/// Call it once, early, in a program that starts sandboxes (the CLI's `sandbox`, `agent os`
/// and `eval os` commands); later calls do nothing. The handler only writes to a pipe; the
/// clean-up runs on a thread of its own.
pub fn cleanup_on_signals() -> io::Result<()> {
    let mut result = Ok(());
    INSTALL.call_once(|| result = install());
    result
}

fn install() -> io::Result<()> {
    let (r, w) = sys::pipe()?;
    let watcher = std::thread::Builder::new()
        .name("edgeact-sandbox-signals".into())
        .spawn(move || {
            let mut b = [0u8; 1];
            loop {
                match sys::read(std::os::fd::AsRawFd::as_raw_fd(&r), &mut b) {
                    Ok(1) => break,
                    Ok(_) => return,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => return,
                }
            }
            clean_all();
            let sig = libc::c_int::from(b[0]);
            // SAFETY: restoring the default action and re-raising ends the process the way
            // the signal would have without a handler.
            unsafe {
                libc::signal(sig, libc::SIG_DFL);
                libc::raise(sig);
            }
        })?;
    drop(watcher);
    SIGNAL_PIPE.store(std::os::fd::IntoRawFd::into_raw_fd(w) as RawFd, Ordering::Relaxed);
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: a zeroed sigaction with a plain handler and an empty mask is valid;
        // `on_signal` only makes an async-signal-safe write.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            if libc::sigaction(sig, &sa, std::ptr::null_mut()) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

/// Kills every live sandbox and removes what it holds on the host.
fn clean_all() {
    let held: Vec<Held> = match LIVE.lock() {
        Ok(mut live) => std::mem::take(&mut *live),
        Err(_) => return,
    };
    for h in &held {
        for &p in &h.pids {
            let _ = sys::kill(p, libc::SIGKILL);
        }
    }
    for h in &held {
        for d in &h.cgroups {
            remove_cgroup(d, true);
        }
        let _ = std::fs::remove_dir_all(&h.stage);
    }
}

/// The owner pid in `<prefix><pid>-<hex>`, if `name` has that form.
fn owner_pid(name: &str, prefix: &str) -> Option<libc::pid_t> {
    let rest = name.strip_prefix(prefix)?;
    let (pid, id) = rest.split_once('-')?;
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    pid.parse::<libc::pid_t>().ok().filter(|p| *p > 0)
}

/// Whether process `pid` exists (EPERM: it exists, owned by someone else).
fn alive(pid: libc::pid_t) -> bool {
    match sys::kill(pid, 0) {
        Ok(()) => true,
        Err(e) => e.raw_os_error() != Some(libc::ESRCH),
    }
}

/// Removes sandbox temp dirs (under `temp`) and cgroups (under `cgroup_parents`) whose owning
/// process is gone. Returns the paths removed.
pub(crate) fn sweep_stale_in(temp: &Path, cgroup_parents: &[&Path]) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if let Ok(dir) = std::fs::read_dir(temp) {
        for e in dir.flatten() {
            let name = e.file_name();
            let Some(pid) = name.to_str().and_then(|n| owner_pid(n, STAGE_PREFIX)) else {
                continue;
            };
            use std::os::unix::fs::MetadataExt;
            // Only our own user's directories, never a symlink.
            let ours = std::fs::symlink_metadata(e.path()).is_ok_and(|m| m.is_dir() && m.uid() == me);
            if ours && !alive(pid) && std::fs::remove_dir_all(e.path()).is_ok() {
                removed.push(e.path());
            }
        }
    }
    for parent in cgroup_parents {
        let Ok(dir) = std::fs::read_dir(parent) else { continue };
        for e in dir.flatten() {
            let name = e.file_name();
            let Some(pid) = name.to_str().and_then(|n| owner_pid(n, CGROUP_PREFIX)) else {
                continue;
            };
            // A stale cgroup is empty (the sandbox's processes die with their owner): an
            // rmdir removes it, and never disturbs one whose owner this process cannot see.
            if !alive(pid) && e.path().is_dir() && std::fs::remove_dir(e.path()).is_ok() {
                removed.push(e.path());
            }
        }
    }
    removed
}

/// [`sweep_stale_in`] over the real temp dir and cgroup hierarchy, once per process.
pub(crate) fn sweep_stale_once() {
    SWEEP.call_once(|| {
        let parents: Vec<&Path> = CGROUP_PARENTS.iter().map(Path::new).collect();
        sweep_stale_in(&std::env::temp_dir(), &parents);
    });
}

/// Removes sandbox temp dirs and cgroups left by processes that are gone (e.g. killed by
/// SIGKILL); also done by the first sandbox start of each process. Returns what was removed.
pub fn sweep_stale() -> Vec<PathBuf> {
    let parents: Vec<&Path> = CGROUP_PARENTS.iter().map(Path::new).collect();
    sweep_stale_in(&std::env::temp_dir(), &parents)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_pid_parses_only_our_names() {
        assert_eq!(owner_pid("edgeact-sandbox-123-00ff", STAGE_PREFIX), Some(123));
        assert_eq!(
            owner_pid("edgeact-sandbox-00ff", STAGE_PREFIX),
            None,
            "old names have no owner"
        );
        assert_eq!(owner_pid("edgeact-sandbox-12x-00ff", STAGE_PREFIX), None);
        assert_eq!(owner_pid("edgeact-sandbox-0-00ff", STAGE_PREFIX), None);
        assert_eq!(owner_pid("edgeact-7-zz", CGROUP_PREFIX), None);
        assert_eq!(owner_pid("edgeact-7-ab", CGROUP_PREFIX), Some(7));
    }

    #[test]
    fn sweep_removes_only_dead_owners() {
        let top = tempfile::tempdir().unwrap();
        // A pid that existed and is gone: a child we waited for.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let stale = top.path().join(format!("{STAGE_PREFIX}{dead}-abcdef"));
        let live = top.path().join(format!("{STAGE_PREFIX}{}-abcdef", std::process::id()));
        let unowned = top.path().join(format!("{STAGE_PREFIX}abcdef0123456789"));
        for d in [&stale, &live, &unowned] {
            std::fs::create_dir(d).unwrap();
        }
        std::fs::write(stale.join("leftover"), "x").unwrap();
        let removed = sweep_stale_in(top.path(), &[]);
        if alive(dead as libc::pid_t) {
            eprintln!("skipping the dead-owner check: pid {dead} was reused");
        } else {
            assert_eq!(removed, vec![stale.clone()]);
            assert!(!stale.exists());
        }
        assert!(live.exists(), "a live owner's directory is kept");
        assert!(unowned.exists(), "a name without an owner pid is kept");
    }
}
