//! A Debian root file system for `eval os`, built once with `debootstrap` and used read-only
//! as the sandbox's lower layer (`RootFs::Dir`), with the packages AgentBench's `default`
//! image installs on top of Ubuntu (`python3 python3-pip git vim curl wget unzip zip tree`).
//!
//! Cached under `$XDG_CACHE_HOME/edgeact/rootfs` (or `~/.cache/edgeact/rootfs`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::{OsError, Result};

/// Packages of AgentBench's `default` image (`res/dockerfiles/default`).
pub const DEFAULT_PACKAGES: &[&str] = &[
    "python3",
    "python3-pip",
    "git",
    "vim",
    "curl",
    "wget",
    "unzip",
    "zip",
    "tree",
];

/// Build options.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// Debian suite.
    pub suite: String,
    /// Mirror URL.
    pub mirror: String,
    /// Extra packages besides [`DEFAULT_PACKAGES`].
    pub extra_packages: Vec<String>,
}

impl Default for BuildOptions {
    fn default() -> Self {
        Self {
            suite: "bookworm".into(),
            mirror: "http://deb.debian.org/debian".into(),
            extra_packages: Vec::new(),
        }
    }
}

/// `$XDG_CACHE_HOME/edgeact/rootfs`, else `$HOME/.cache/edgeact/rootfs`.
pub fn default_dir() -> PathBuf {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/var/cache"));
    cache.join("edgeact").join("rootfs")
}

/// Whether `dir` holds a finished build (the marker is written last).
pub fn is_built(dir: &Path) -> bool {
    dir.join(".edgeact-rootfs").exists()
}

/// Why [`build`] cannot run here (`None` when it can): it needs root and `debootstrap`.
pub fn build_blocker() -> Option<String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        return Some("building it needs root (debootstrap creates device nodes and chroots)".into());
    }
    if find_in_path("debootstrap").is_none() {
        return Some("`debootstrap` is not installed (apt-get install debootstrap)".into());
    }
    None
}

fn find_in_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// Runs `debootstrap` into `dir.partial`, then renames it to `dir`. Needs root and the
/// `debootstrap` command (`apt-get install debootstrap`); downloads from the mirror.
/// debootstrap's output goes to this process's stderr.
pub fn build(dir: &Path, opts: &BuildOptions) -> Result<()> {
    build_with_progress(dir, opts, &mut |line| eprintln!("{line}"))
}

/// [`build`], handing each line debootstrap prints (stdout and stderr, in arrival order) to
/// `on_line` instead, so a caller can show progress without mixing it into its own stdout.
/// Builds of the same `dir` by several processes are serialised by a lock file beside it; a
/// process that waited finds the finished root and returns.
pub fn build_with_progress(dir: &Path, opts: &BuildOptions, on_line: &mut dyn FnMut(&str)) -> Result<()> {
    if is_built(dir) {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent).map_err(|e| OsError::Task(format!("create {}: {e}", parent.display())))?;
    }
    let _lock = BuildLock::acquire(&dir.with_extension("lock"))?;
    if is_built(dir) {
        return Ok(());
    }
    // A build killed earlier left its partial tree: start over.
    let partial = dir.with_extension("partial");
    if partial.exists() {
        on_line(&format!("removing the unfinished build {}", partial.display()));
        std::fs::remove_dir_all(&partial).map_err(|e| OsError::Task(format!("remove {}: {e}", partial.display())))?;
    }
    let mut include: Vec<String> = DEFAULT_PACKAGES.iter().map(|s| s.to_string()).collect();
    include.push("ca-certificates".into());
    include.push("procps".into());
    include.extend(opts.extra_packages.iter().cloned());
    let status = run_reporting_lines(
        Command::new("debootstrap")
            .arg("--variant=minbase")
            .arg(format!("--include={}", include.join(",")))
            .arg(&opts.suite)
            .arg(&partial)
            .arg(&opts.mirror),
        on_line,
    )
    .map_err(|e| OsError::Task(format!("run debootstrap (apt-get install debootstrap): {e}")))?;
    if !status.success() {
        return Err(OsError::Task(format!(
            "debootstrap failed with {status}; see {}/debootstrap/debootstrap.log",
            partial.display()
        )));
    }
    // Apt caches are not needed at run time.
    let _ = std::fs::remove_dir_all(partial.join("var/cache/apt/archives"));
    std::fs::write(
        partial.join(".edgeact-rootfs"),
        format!("{} {}\n", opts.suite, include.join(",")),
    )
    .map_err(|e| OsError::Task(format!("write marker: {e}")))?;
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| OsError::Task(format!("remove {}: {e}", dir.display())))?;
    }
    std::fs::rename(&partial, dir).map_err(|e| OsError::Task(format!("rename to {}: {e}", dir.display())))?;
    Ok(())
}

/// Runs `cmd` with stdin from /dev/null, passing every line of its stdout and stderr to
/// `on_line` (one reader thread per stream, lines forwarded in arrival order).
fn run_reporting_lines(cmd: &mut Command, on_line: &mut dyn FnMut(&str)) -> std::io::Result<std::process::ExitStatus> {
    use std::io::{BufRead, BufReader};
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let forward = |stream: Box<dyn std::io::Read + Send>, tx: std::sync::mpsc::Sender<String>| {
        std::thread::spawn(move || {
            for line in BufReader::new(stream).split(b'\n').map_while(|l| l.ok()) {
                if tx.send(String::from_utf8_lossy(&line).into_owned()).is_err() {
                    break;
                }
            }
        })
    };
    let readers = [
        child.stdout.take().map(|s| forward(Box::new(s), tx.clone())),
        child.stderr.take().map(|s| forward(Box::new(s), tx.clone())),
    ];
    drop(tx);
    // Ends when both streams are closed.
    for line in rx {
        on_line(line.trim_end_matches('\r'));
    }
    for reader in readers.into_iter().flatten() {
        let _ = reader.join();
    }
    child.wait()
}

/// An exclusive `flock` on a lock file, released when dropped (or when the process dies).
struct BuildLock {
    _file: std::fs::File,
}

impl BuildLock {
    fn acquire(path: &Path) -> Result<BuildLock> {
        use std::os::fd::AsRawFd;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(|e| OsError::Task(format!("open the build lock {}: {e}", path.display())))?;
        loop {
            // SAFETY: the descriptor is open for the whole call; flock has no memory arguments.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
            if rc == 0 {
                return Ok(BuildLock { _file: file });
            }
            let err = std::io::Error::last_os_error();
            if err.kind() != std::io::ErrorKind::Interrupted {
                return Err(OsError::Task(format!("lock {}: {err}", path.display())));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_output_lines_of_both_streams_reach_the_callback() {
        let mut lines = Vec::new();
        let status = run_reporting_lines(
            Command::new("sh").args(["-c", "echo I: Retrieving; echo W: warning >&2; exit 3"]),
            &mut |l| lines.push(l.to_string()),
        )
        .unwrap();
        assert_eq!(status.code(), Some(3));
        lines.sort();
        assert_eq!(lines, ["I: Retrieving", "W: warning"]);
    }

    #[test]
    fn a_built_root_is_not_rebuilt() {
        let top = tempfile::tempdir().unwrap();
        let dir = top.path().join("rootfs");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join(".edgeact-rootfs"), "bookworm\n").unwrap();
        let mut lines = 0;
        // No debootstrap runs (none may be installed): the marker says it is done.
        build_with_progress(&dir, &BuildOptions::default(), &mut |_| lines += 1).unwrap();
        assert_eq!(lines, 0);
    }
}
