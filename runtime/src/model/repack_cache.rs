//! The repack cache: the panel form of a model's repacked matrices, written to a file once and
//! mapped at later starts instead of repacked again.
//!
//! Repacking writes ~4 GB of fresh anonymous memory for a 7B model, which the kernel must zero
//! before we fill it (on a VM whose host backs guest memory lazily that is most of the repack
//! time); a mapped cache file is already in the page cache, so a warm start costs what the
//! mapped model file costs. One file per model path, in [`default_dir`]: a miss (no file, an
//! older format, another source file, a damaged file) repacks and rewrites it, atomically. The
//! source is recognised by its size, modification time and a hash of its tensor table and of
//! the first and last bytes of every cached tensor; a file edited in place within the same
//! second, size and sampled bytes would go unnoticed, as for any mtime-keyed cache.
//!
//! Format (little-endian): a 64-byte header (magic, [`VERSION`], entry count, source size,
//! mtime, source hash, table length), the entry table (per matrix: name, type, rows, cols, and
//! the offsets of its lines and scales), then each matrix's lines and scales at page-aligned
//! offsets (a large matrix's at 2 MiB ones).

use super::weights::{RepackChoice, Weight};
use crate::gguf::GgufFile;
use crate::kernels::cpu::PackedMatrix;
use crate::quant::GgmlType;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 16] = b"edgeact-panels\0\0";
/// Bump when a panel layout (`kernels::cpu::repack`) or this format changes: older files are
/// then misses and get rewritten.
const VERSION: u32 = 2;
const HEADER: usize = 64;
/// Data offsets are page-aligned: each matrix maps from its own pages.
const PAGE: u64 = 4096;
/// Lines or scales of a matrix this large start at a 2 MiB boundary, where the page cache's large folios
/// start: the kernel then maps all of it with huge pages (fewer TLB misses while the kernels
/// stream the weights, as for repacked memory). The gaps are holes in a sparse file.
const HUGE: u64 = 2 << 20;

/// The cache folder: `panels` in edgeact's cache folder ([`crate::files::cache_dir`]).
pub fn default_dir() -> Option<PathBuf> {
    crate::files::cache_dir("panels")
}

/// The cache file for the model at `source` repacked as `which` inside `dir`: the model's file
/// name, a hash of its absolute path (two models of the same name in different folders do not
/// collide) and the choice (`--repack` and the default keep a file each).
pub fn cache_path(dir: &Path, source: &Path, which: RepackChoice) -> PathBuf {
    let absolute = std::fs::canonicalize(source).unwrap_or_else(|_| source.to_path_buf());
    let stem = source.file_stem().map(|s| s.to_string_lossy()).unwrap_or_default();
    let hash = fnv1a(FNV_OFFSET, absolute.as_os_str().as_encoded_bytes());
    let choice = match which {
        RepackChoice::Measured => "default",
        RepackChoice::All => "all",
    };
    dir.join(format!("{stem}-{hash:016x}.{choice}.panels"))
}

/// Maps the repacked forms of `wanted` from the cache file at `path`, in order. `Err` says why
/// the cache cannot be used (a miss: the caller repacks and rewrites it).
pub(super) fn load(path: &Path, source: &GgufFile, wanted: &[&Weight]) -> Result<Vec<PackedMatrix>, String> {
    // A regular file only, opened without blocking (a FIFO planted there must not hang us).
    let mut file = crate::files::open_regular(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => "no cache file yet".to_string(),
        _ => format!("cannot open it: {e}"),
    })?;
    let meta = file.metadata().map_err(|e| e.to_string())?;
    trusted(&meta)?;
    let mut header = [0u8; HEADER];
    file.read_exact(&mut header)
        .map_err(|_| "shorter than its header".to_string())?;
    if &header[..16] != MAGIC {
        return Err("not a repack cache file".into());
    }
    let u32_at = |i: usize| u32::from_le_bytes(header[i..i + 4].try_into().expect("4 bytes"));
    let u64_at = |i: usize| u64::from_le_bytes(header[i..i + 8].try_into().expect("8 bytes"));
    if u32_at(16) != VERSION {
        return Err(format!("format {} (this build writes {VERSION})", u32_at(16)));
    }
    let id = SourceId::of(source, wanted)?;
    if [u64_at(24), u64_at(32), u64_at(40), u64_at(48)] != id.words() {
        return Err("made from another version of the model file".into());
    }
    let (count, table_len) = (u32_at(20) as usize, u64_at(56));
    let file_len = meta.len();
    if table_len > file_len.saturating_sub(HEADER as u64) {
        return Err("entry table beyond the end of the file".into());
    }
    let mut table = vec![0u8; table_len as usize];
    file.read_exact(&mut table).map_err(|e| e.to_string())?;
    let entries = parse_table(&table, count)?;
    wanted
        .iter()
        .map(|w| {
            let e = entries
                .iter()
                .find(|e| e.name == w.name && e.ty == w.ty && e.rows == w.rows && e.cols == w.cols)
                .ok_or_else(|| format!("has no {} {} {}x{}", w.name, w.ty, w.rows, w.cols))?;
            PackedMatrix::map_file(&file, w.ty, w.rows, w.cols, e.lines_at, e.scales_at)
                .map_err(|err| format!("{}: {err}", w.name))
        })
        .collect()
}

/// What [`store`] writes: the repacked matrices (shared with the model, which keeps running
/// on them) and the identity of their source, taken while the model file was at hand.
pub(super) struct Snapshot {
    id: SourceId,
    matrices: Vec<(String, std::sync::Arc<PackedMatrix>)>,
}

impl Snapshot {
    /// The repacked forms of `weights` (each must have one) and their source's identity.
    pub(super) fn of(source: &GgufFile, weights: &[&Weight]) -> Result<Snapshot, String> {
        let id = SourceId::of(source, weights)?;
        let matrices = weights
            .iter()
            .map(|w| match &w.packed {
                Some(p) => Ok((w.name.clone(), std::sync::Arc::clone(p))),
                None => Err(format!("{} is not repacked", w.name)),
            })
            .collect::<Result<_, String>>()?;
        Ok(Snapshot { id, matrices })
    }
}

/// Writes `snapshot` to `path`, atomically: a partial file in the same folder
/// (`files::partial`), renamed over `path` once complete. Returns the file's length.
pub(super) fn store(path: &Path, snapshot: &Snapshot) -> Result<u64, String> {
    let dir = path.parent().ok_or("the cache path has no folder")?;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let Snapshot { id, matrices } = snapshot;
    // The table first, to know where the data starts.
    let mut table = Vec::new();
    let table_len: usize = matrices.iter().map(|(name, _)| 4 + name.len() + 4 + 8 * 5).sum();
    let mut at = (HEADER + table_len) as u64;
    let mut places = Vec::with_capacity(matrices.len());
    // Bytes of data, without the holes between matrices (a sparse file's gaps take no space).
    let mut data_bytes = 0;
    for (name, form) in matrices {
        let (lines, scales) = form.stored_bytes();
        data_bytes += (lines.len() + scales.len()) as u64;
        let align = |len: usize| if len as u64 >= HUGE / 2 { HUGE } else { PAGE };
        let lines_at = at.next_multiple_of(align(lines.len()));
        let scales_at = (lines_at + lines.len() as u64).next_multiple_of(align(scales.len()));
        at = scales_at + scales.len() as u64;
        table.extend_from_slice(&(name.len() as u32).to_le_bytes());
        table.extend_from_slice(name.as_bytes());
        table.extend_from_slice(&form.ty().id().to_le_bytes());
        for v in [form.rows() as u64, form.cols() as u64, lines_at, scales_at, 0] {
            table.extend_from_slice(&v.to_le_bytes());
        }
        places.push((lines_at, scales_at));
    }
    debug_assert_eq!(table.len(), table_len);
    let mut header = Vec::with_capacity(HEADER);
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&VERSION.to_le_bytes());
    header.extend_from_slice(&(matrices.len() as u32).to_le_bytes());
    for v in id.words() {
        header.extend_from_slice(&v.to_le_bytes());
    }
    header.extend_from_slice(&(table_len as u64).to_le_bytes());
    debug_assert_eq!(header.len(), HEADER);
    leaves_room(dir, data_bytes)?;

    // Locked while written, removed on a signal or by the next write if this one is killed.
    let tmp = crate::files::partial::PartialFile::create(path)
        .map_err(|e| format!("cannot write in {}: {e}", dir.display()))?;
    let io = |e: std::io::Error| format!("writing {}: {e}", path.display());
    {
        let mut out = BufWriter::with_capacity(1 << 20, tmp.as_file());
        out.write_all(&header).map_err(io)?;
        out.write_all(&table).map_err(io)?;
        for ((_, form), (lines_at, scales_at)) in matrices.iter().zip(places) {
            let (lines, scales) = form.stored_bytes();
            out.seek(SeekFrom::Start(lines_at)).map_err(io)?;
            out.write_all(lines).map_err(io)?;
            out.seek(SeekFrom::Start(scales_at)).map_err(io)?;
            out.write_all(scales).map_err(io)?;
        }
        out.flush().map_err(io)?;
    }
    // The last matrix may end in a hole (no scales): give the file its full length.
    tmp.as_file().set_len(at).map_err(io)?;
    // The mode `trusted` accepts, whatever the umask (0664 under a umask of 002 would make
    // every later start refuse the file and write it again); on disk before it is named, so
    // that a crash cannot leave a complete-looking cache with missing data under its name.
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))
            .map_err(io)?;
    }
    tmp.as_file().sync_all().map_err(io)?;
    tmp.persist(path)
        .map_err(|e| format!("cannot rename into {}: {e}", path.display()))?;
    Ok(at)
}

/// The cache holds weights the model runs: a file someone else could have written (another
/// user's, or group- or world-writable, as in a shared `EDGEACT_CACHE_DIR=/tmp`) is not used.
fn trusted(meta: &std::fs::Metadata) -> Result<(), String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        // SAFETY: geteuid has no preconditions and cannot fail.
        let me = unsafe { libc::geteuid() };
        if meta.uid() != me {
            return Err(format!("owned by user {}, not by this one ({me})", meta.uid()));
        }
        if meta.mode() & 0o022 != 0 {
            return Err(format!("writable by others (mode {:o})", meta.mode() & 0o777));
        }
    }
    #[cfg(not(unix))]
    let _ = meta;
    Ok(())
}

/// A cache is worth less than the user's last free disk space: writing `bytes` into `dir` must
/// leave at least as much free again, and 1 GiB.
fn leaves_room(dir: &Path, bytes: u64) -> Result<(), String> {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let Ok(c_dir) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
            return Ok(());
        };
        // SAFETY: statvfs only writes the struct it is given, and `c_dir` is a valid C string
        // that outlives the call.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statvfs(c_dir.as_ptr(), &mut st) } != 0 {
            return Ok(());
        }
        let free = st.f_bavail as u64 * st.f_frsize as u64;
        let reserve = (1u64 << 30).max(bytes);
        if free < bytes.saturating_add(reserve) {
            return Err(format!(
                "{:.1} GiB would leave less than {:.1} GiB free on {} ({:.1} GiB free)",
                gib(bytes),
                gib(reserve),
                dir.display(),
                gib(free)
            ));
        }
    }
    #[cfg(not(unix))]
    let _ = (dir, bytes);
    Ok(())
}

fn gib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 30) as f64
}

/// One row of the entry table.
struct Entry {
    name: String,
    ty: GgmlType,
    rows: usize,
    cols: usize,
    lines_at: u64,
    scales_at: u64,
}

/// The entry table, every field checked for being readable (offsets and sizes are checked
/// against the file when mapped).
fn parse_table(table: &[u8], count: usize) -> Result<Vec<Entry>, String> {
    let damaged = || "damaged entry table".to_string();
    let mut rest = table;
    let mut take = |n: usize| -> Result<&[u8], String> {
        if rest.len() < n {
            return Err(damaged());
        }
        let (head, tail) = rest.split_at(n);
        rest = tail;
        Ok(head)
    };
    let mut entries = Vec::new();
    for _ in 0..count {
        let name_len = u32::from_le_bytes(take(4)?.try_into().map_err(|_| damaged())?) as usize;
        let name = String::from_utf8(take(name_len)?.to_vec()).map_err(|_| damaged())?;
        let ty = u32::from_le_bytes(take(4)?.try_into().map_err(|_| damaged())?);
        let ty = GgmlType::from_id(ty).ok_or_else(damaged)?;
        let mut v = [0u64; 5];
        for x in &mut v {
            *x = u64::from_le_bytes(take(8)?.try_into().map_err(|_| damaged())?);
        }
        let size = |x: u64| usize::try_from(x).map_err(|_| damaged());
        entries.push(Entry {
            name,
            ty,
            rows: size(v[0])?,
            cols: size(v[1])?,
            lines_at: v[2],
            scales_at: v[3],
        });
    }
    Ok(entries)
}

/// What identifies the source file a cache was made from.
struct SourceId {
    size: u64,
    mtime_secs: u64,
    mtime_nanos: u64,
    hash: u64,
}

impl SourceId {
    fn of(source: &GgufFile, weights: &[&Weight]) -> Result<SourceId, String> {
        let path = source.path().ok_or("an in-memory model has no file to cache for")?;
        let meta = std::fs::metadata(path).map_err(|e| format!("cannot stat {}: {e}", path.display()))?;
        let bytes = source.bytes();
        // The file at the path now must be the one mapped (same size at least): one replaced
        // since the model was opened would tag the old weights' panels with its own identity.
        if meta.len() != bytes.len() as u64 {
            return Err(format!("{} changed since it was opened", path.display()));
        }
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .unwrap_or_default();
        let mut hash = FNV_OFFSET;
        for w in weights {
            hash = fnv1a(hash, w.name.as_bytes());
            for v in [
                w.ty.id() as u64,
                w.rows as u64,
                w.cols as u64,
                w.range.start as u64,
                w.range.end as u64,
            ] {
                hash = fnv1a(hash, &v.to_le_bytes());
            }
            let data = &bytes[w.range.clone()];
            let n = data.len().min(64);
            hash = fnv1a(hash, &data[..n]);
            hash = fnv1a(hash, &data[data.len() - n..]);
        }
        Ok(SourceId {
            size: meta.len(),
            mtime_secs: mtime.as_secs(),
            mtime_nanos: u64::from(mtime.subsec_nanos()),
            hash,
        })
    }

    fn words(&self) -> [u64; 4] {
        [self.size, self.mtime_secs, self.mtime_nanos, self.hash]
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a over `bytes`, continuing from `hash`.
fn fnv1a(mut hash: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        hash = (hash ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cache_never_takes_the_last_free_space() {
        let dir = tempfile::tempdir().unwrap();
        assert!(leaves_room(dir.path(), 0).is_ok() || cfg!(not(unix)));
        let err = leaves_room(dir.path(), u64::MAX / 2).unwrap_err();
        assert!(err.contains("would leave less than"), "{err}");
    }

    #[test]
    fn cache_names_differ_by_folder_and_choice() {
        let dir = Path::new("/cache");
        let a = cache_path(dir, Path::new("/models/a/m.gguf"), RepackChoice::Measured);
        let b = cache_path(dir, Path::new("/models/b/m.gguf"), RepackChoice::Measured);
        let all = cache_path(dir, Path::new("/models/a/m.gguf"), RepackChoice::All);
        assert!(a != b && a != all && b != all);
        assert!(a.to_string_lossy().ends_with(".default.panels"), "{}", a.display());
        assert!(all.file_name().unwrap().to_string_lossy().starts_with("m-"));
    }
}
