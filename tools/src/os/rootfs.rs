//! A Debian root file system for `eval os`, built once with `debootstrap` and used read-only
//! as the sandbox's lower layer (`RootFs::Dir`), with the packages AgentBench's `default`
//! image installs on top of Ubuntu (`python3 python3-pip git vim curl wget unzip zip tree`).
//!
//! Cached under `$XDG_CACHE_HOME/edgeact/rootfs` (or `~/.cache/edgeact/rootfs`).

use std::path::{Path, PathBuf};
use std::process::Command;

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

/// Runs `debootstrap` into `dir.partial`, then renames it to `dir`. Needs root and the
/// `debootstrap` command (`apt-get install debootstrap`); downloads from the mirror.
pub fn build(dir: &Path, opts: &BuildOptions) -> Result<()> {
    if is_built(dir) {
        return Ok(());
    }
    let partial = dir.with_extension("partial");
    if partial.exists() {
        std::fs::remove_dir_all(&partial).map_err(|e| OsError::Task(format!("remove {}: {e}", partial.display())))?;
    }
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent).map_err(|e| OsError::Task(format!("create {}: {e}", parent.display())))?;
    }
    let mut include: Vec<String> = DEFAULT_PACKAGES.iter().map(|s| s.to_string()).collect();
    include.push("ca-certificates".into());
    include.push("procps".into());
    include.extend(opts.extra_packages.iter().cloned());
    let status = Command::new("debootstrap")
        .arg("--variant=minbase")
        .arg(format!("--include={}", include.join(",")))
        .arg(&opts.suite)
        .arg(&partial)
        .arg(&opts.mirror)
        .status()
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
