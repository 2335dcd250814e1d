//! The temporary `.partial` file of an atomic write, and the paths a writer must never write
//! over or read from.
//!
//! A partial file is named after its destination (`.<name>.<random>.edgeact-partial` beside
//! `<name>`) and holds an exclusive `flock` for as long as it is written. So:
//! - SIGINT, SIGTERM and SIGHUP remove it (after [`remove_partial_files_on_signal`]), then
//!   end the process with the same signal;
//! - one left behind by a run that could not clean up (SIGKILL, power loss) is unlocked, and
//!   the next write to the same destination removes it ([`sweep_stale`]), while a live
//!   writer's file is locked and left alone.

use std::ffi::CString;
use std::fs::{File, Metadata};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicPtr, Ordering};

/// Suffix of every partial file.
pub const PARTIAL_SUFFIX: &str = ".edgeact-partial";

/// Paths the signal handler removes. A slot holds a leaked, NUL-terminated path (a few bytes
/// per written file, never freed so the handler can never read freed memory) or null.
const SLOTS: usize = 16;
static LIVE_PARTIALS: [AtomicPtr<libc::c_char>; SLOTS] = [const { AtomicPtr::new(std::ptr::null_mut()) }; SLOTS];

/// The prefix of the partial files of `dest_name`.
fn partial_prefix(dest_name: &std::ffi::OsStr) -> String {
    format!(".{}.", dest_name.to_string_lossy())
}

/// A partial file being written: locked, registered with the signal handler, and removed
/// when dropped unless [`PartialFile::persist`] renamed it into place.
pub struct PartialFile {
    /// Present until [`PartialFile::persist`] takes it.
    file: Option<tempfile::NamedTempFile>,
    slot: Option<usize>,
}

impl PartialFile {
    /// Creates the partial file for `dest` (an absolute path whose parent exists), first
    /// removing stale partial files of the same destination.
    pub fn create(dest: &Path) -> io::Result<PartialFile> {
        let dir = dest.parent().unwrap_or(Path::new("."));
        let name = dest
            .file_name()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the output has no file name"))?;
        sweep_stale(dest);
        // A concurrent writer's sweep may take the new file between its creation and its lock
        // (unlocked, it looks stale) and remove it: then the lock is refused or the name no
        // longer names this file, and a fresh one is made.
        for _ in 0..8 {
            // The mode any new file gets (0666 less the umask), not tempfile's private 0600:
            // the finished file is a model or a dataset for other users and services too.
            let file = tempfile::Builder::new()
                .prefix(&partial_prefix(name))
                .suffix(PARTIAL_SUFFIX)
                .permissions(std::fs::Permissions::from_mode(0o666))
                .tempfile_in(dir)?;
            let locked = match file.as_file().try_lock() {
                Ok(()) => true,
                Err(std::fs::TryLockError::WouldBlock) => false,
                Err(std::fs::TryLockError::Error(e)) => return Err(e),
            };
            let still_named = std::fs::symlink_metadata(file.path())
                .and_then(|m| Ok(same_file(&m, &file.as_file().metadata()?)))
                .unwrap_or(false);
            if locked && still_named {
                let slot = register(file.path());
                return Ok(PartialFile { file: Some(file), slot });
            }
        }
        Err(io::Error::other(
            "the partial file was removed as it was created, eight times (other runs sweeping the same destination)",
        ))
    }

    fn temp(&self) -> &tempfile::NamedTempFile {
        self.file.as_ref().expect("present until persisted")
    }

    pub fn as_file(&self) -> &File {
        self.temp().as_file()
    }

    pub fn path(&self) -> &Path {
        self.temp().path()
    }

    /// Renames the finished file to `dest`.
    pub fn persist(mut self, dest: &Path) -> io::Result<()> {
        self.unregister();
        let file = self.file.take().expect("present until persisted");
        file.persist(dest).map(|_| ()).map_err(|e| e.error)
    }

    fn unregister(&mut self) {
        if let Some(slot) = self.slot.take() {
            LIVE_PARTIALS[slot].store(std::ptr::null_mut(), Ordering::SeqCst);
        }
    }
}

impl Drop for PartialFile {
    fn drop(&mut self) {
        // The NamedTempFile removes the file itself; the handler must not remove a path that
        // might be reused later.
        self.unregister();
    }
}

/// Puts `path` in a free signal-handler slot (none when all are taken: that file is then only
/// cleaned up by drop and by the next run's sweep).
fn register(path: &Path) -> Option<usize> {
    let c = CString::new(path.as_os_str().as_bytes()).ok()?;
    let raw = c.into_raw();
    for (i, slot) in LIVE_PARTIALS.iter().enumerate() {
        if slot
            .compare_exchange(std::ptr::null_mut(), raw, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            return Some(i);
        }
    }
    // SAFETY: `raw` came from `CString::into_raw` just above and was not stored anywhere.
    drop(unsafe { CString::from_raw(raw) });
    None
}

extern "C" fn on_signal(sig: libc::c_int) {
    for slot in &LIVE_PARTIALS {
        let p = slot.load(Ordering::SeqCst);
        if !p.is_null() {
            // SAFETY: `p` is a leaked, never freed, NUL-terminated path; unlink is
            // async-signal-safe.
            unsafe { libc::unlink(p) };
        }
    }
    // SA_RESETHAND restored the default action; the signal is blocked until this handler
    // returns, so the re-raised one then ends the process as the original would have.
    // SAFETY: raise is async-signal-safe.
    unsafe { libc::raise(sig) };
}

/// Makes SIGINT, SIGTERM and SIGHUP remove the partial files being written, then end the
/// process with the same signal. For command-line use; call once.
pub fn remove_partial_files_on_signal() -> io::Result<()> {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: a zeroed sigaction with a plain handler, an empty mask and SA_RESETHAND is
        // valid; the handler only calls async-signal-safe functions.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
            sa.sa_flags = libc::SA_RESETHAND;
            libc::sigemptyset(&mut sa.sa_mask);
            if libc::sigaction(sig, &sa, std::ptr::null_mut()) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

/// Removes the partial files of `dest` that no live writer holds (left by a killed run).
/// Returns what was removed. Failures are ignored: a stale file only costs disk space.
pub fn sweep_stale(dest: &Path) -> Vec<PathBuf> {
    let (Some(dir), Some(name)) = (dest.parent(), dest.file_name()) else {
        return Vec::new();
    };
    let prefix = partial_prefix(name);
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let file_name = file_name.to_string_lossy();
        if !(file_name.starts_with(&prefix) && file_name.ends_with(PARTIAL_SUFFIX)) {
            continue;
        }
        let path = entry.path();
        // Only plain files are ours; never follow a link someone planted.
        if !std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_file()) {
            continue;
        }
        let Ok(f) = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&path)
        else {
            continue;
        };
        if f.try_lock().is_ok() && std::fs::remove_file(&path).is_ok() {
            removed.push(path);
        }
    }
    removed
}

/// True when `a` and `b` are the same file (same device and inode: also catches hard links).
pub fn same_file(a: &Metadata, b: &Metadata) -> bool {
    a.dev() == b.dev() && a.ino() == b.ino()
}

/// Why an output file could not be written.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// The OS error is part of the message, not a `source` (so `{:#}` prints it once).
    #[error("{context}: {cause}")]
    Io { context: String, cause: io::Error },
    #[error("refusing to overwrite the input file {0}")]
    WouldOverwriteInput(PathBuf),
    /// The output path names something that is not a regular file (or a link to one), or
    /// no file at all.
    #[error("{0}")]
    BadOutput(String),
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> OutputError {
    let context = context.into();
    move |cause| OutputError::Io { context, cause }
}

/// An output written atomically: a [`PartialFile`] beside the destination, renamed into place
/// by [`AtomicOutput::commit`] (removed if dropped before). The destination is checked first:
/// it may not be any of the run's inputs (by path, symbolic link or hard link), and an
/// existing destination must be a regular file.
pub struct AtomicOutput {
    dest: PathBuf,
    partial: PartialFile,
}

/// The absolute destination `path` names (an existing regular file, links resolved, or a new
/// name in an existing directory), unless it is one of `inputs` (by path, symbolic link or
/// hard link). For outputs written in place as a run goes (a transcript) as for
/// [`AtomicOutput`]s.
pub fn output_target(path: &Path, inputs: &[&Path]) -> Result<PathBuf, OutputError> {
    let dest = absolute_target(path)?;
    let dest_meta = std::fs::metadata(&dest).ok();
    for input in inputs {
        let same_path = input.canonicalize().is_ok_and(|canon| canon == dest);
        // A hard link to an input is the same file under another name.
        let same_inode = match (&dest_meta, std::fs::metadata(input)) {
            (Some(d), Ok(i)) => same_file(d, &i),
            _ => false,
        };
        if same_path || same_inode {
            return Err(OutputError::WouldOverwriteInput(input.to_path_buf()));
        }
    }
    Ok(dest)
}

impl AtomicOutput {
    pub fn create(path: &Path, inputs: &[&Path]) -> Result<AtomicOutput, OutputError> {
        let dest = output_target(path, inputs)?;
        let partial = PartialFile::create(&dest).map_err(io_err(format!(
            "cannot create a temporary file beside {}",
            dest.display()
        )))?;
        Ok(AtomicOutput { dest, partial })
    }

    /// The temporary file to write into.
    pub fn file(&self) -> &File {
        self.partial.as_file()
    }

    /// The resolved destination.
    pub fn dest(&self) -> &Path {
        &self.dest
    }

    /// Syncs the written data and renames it to the destination (a file it replaces keeps its
    /// permission bits), then syncs the directory so that the rename survives a crash; returns
    /// the destination.
    pub fn commit(self) -> Result<PathBuf, OutputError> {
        let dest = self.dest;
        let file = self.partial.as_file();
        if let Ok(old) = std::fs::metadata(&dest) {
            file.set_permissions(std::fs::Permissions::from_mode(old.mode() & 0o777))
                .map_err(io_err(format!("cannot set the permissions of {}", dest.display())))?;
        }
        file.sync_all()
            .map_err(io_err(format!("cannot sync {}", dest.display())))?;
        self.partial.persist(&dest).map_err(io_err(format!(
            "cannot rename the temporary file to {}",
            dest.display()
        )))?;
        // Best effort: some file systems refuse to sync a directory, and the file is in place.
        if let Some(dir) = dest.parent() {
            let _ = File::open(dir).and_then(|d| d.sync_all());
        }
        Ok(dest)
    }
}

/// The absolute destination `path` names: an existing regular file (links resolved) or a new
/// name in an existing directory.
fn absolute_target(path: &Path) -> Result<PathBuf, OutputError> {
    if let Ok(link) = std::fs::symlink_metadata(path) {
        let canon = path.canonicalize().map_err(|e| {
            OutputError::BadOutput(format!(
                "output path {} is {} that cannot be resolved: {e}",
                path.display(),
                super::file_kind(link.file_type())
            ))
        })?;
        let meta = std::fs::metadata(&canon).map_err(io_err(format!("output path {}", path.display())))?;
        if !meta.file_type().is_file() {
            return Err(OutputError::BadOutput(format!(
                "output path {} is {}; the output must be a regular file or not exist",
                path.display(),
                super::file_kind(meta.file_type())
            )));
        }
        return Ok(canon);
    }
    let name = path
        .file_name()
        .ok_or_else(|| OutputError::BadOutput(format!("output path {} has no file name", path.display())))?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let parent = parent
        .canonicalize()
        .map_err(io_err(format!("output directory {}", parent.display())))?;
    Ok(parent.join(name))
}
