//! Files of untrusted origin and files we write. Inputs: regular files only, opened without
//! blocking on a FIFO or reading a device (the GGUF loader, the converter's readers). Outputs
//! ([`partial`]): written atomically beside the destination, never over an input, removed on
//! SIGINT/SIGTERM/SIGHUP (the converter, `lora convert`, `export`).

pub mod partial;

pub use partial::{AtomicOutput, OutputError};

use std::fs::{File, FileType};
use std::io;
use std::path::{Path, PathBuf};

/// edgeact's cache folder `sub` (`cuda` for compiled kernels, `panels` for the repack cache):
/// `$EDGEACT_CACHE_DIR/<sub>`, else `$XDG_CACHE_HOME/edgeact/<sub>`, else
/// `$HOME/.cache/edgeact/<sub>`; `None` when none of them is set (an empty value counts as unset).
pub fn cache_dir(sub: &str) -> Option<PathBuf> {
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    let base = env("EDGEACT_CACHE_DIR")
        .or_else(|| env("XDG_CACHE_HOME").map(|d| d.join("edgeact")))
        .or_else(|| env("HOME").map(|h| h.join(".cache").join("edgeact")))?;
    Some(base.join(sub))
}

/// What a file type is, in words, for error messages (`a FIFO (named pipe)`, `a directory`, ...).
pub fn file_kind(ty: FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if ty.is_fifo() {
            return "a FIFO (named pipe)";
        }
        if ty.is_char_device() {
            return "a character device";
        }
        if ty.is_block_device() {
            return "a block device";
        }
        if ty.is_socket() {
            return "a socket";
        }
    }
    if ty.is_file() {
        "a regular file"
    } else if ty.is_dir() {
        "a directory"
    } else if ty.is_symlink() {
        "a symbolic link"
    } else {
        "not a regular file"
    }
}

/// The error [`open_regular`] wraps in an [`io::Error`] of kind `InvalidInput` when the path is
/// not a regular file (find it with `get_ref()` and `downcast_ref`).
#[derive(Debug, thiserror::Error)]
#[error("{} is {kind}, not a regular file", path.display())]
pub struct NotRegularFile {
    pub path: PathBuf,
    pub kind: &'static str,
}

/// Opens `path` for reading only if it is a regular file (or a symlink to one). The type is
/// checked on the open descriptor, so a path swapped for a FIFO in between cannot slip
/// through; on Unix the open itself does not block (`O_NONBLOCK`), so a FIFO with no writer is
/// reported instead of hanging.
pub fn open_regular(path: &Path) -> io::Result<File> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // Only the open is affected for regular files, whose reads never block.
        options.custom_flags(libc::O_NONBLOCK);
    }
    let file = options.open(path)?;
    let ty = file.metadata()?.file_type();
    if !ty.is_file() {
        let not_regular = NotRegularFile {
            path: path.to_path_buf(),
            kind: file_kind(ty),
        };
        return Err(io::Error::new(io::ErrorKind::InvalidInput, not_regular));
    }
    Ok(file)
}

/// Reads a regular file of at most `max` bytes as UTF-8 text (task files, transcripts,
/// prompts): a FIFO is refused instead of waited on, a device instead of read without end.
pub fn read_regular_text(path: &Path, max: u64) -> io::Result<String> {
    String::from_utf8(read_regular(path, max)?).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is not UTF-8 text", path.display()),
        )
    })
}

/// Reads a regular file of at most `max` bytes (config and tokenizer files).
pub fn read_regular(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let file = open_regular(path)?;
    let mut out = Vec::new();
    file.take(max + 1).read_to_end(&mut out)?;
    if out.len() as u64 > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is larger than {} MiB", path.display(), max >> 20),
        ));
    }
    Ok(out)
}
