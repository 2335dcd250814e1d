//! Compiling the kernel modules with NVRTC, once per source and GPU architecture.
//!
//! Two caches, both keyed by a hash of (full source, compile options) and the target
//! architecture: an in-process map (a module is compiled at most once per process), and PTX
//! files under the cache directory (`$EDGEACT_CACHE_DIR`, else `$XDG_CACHE_HOME/edgeact`, else
//! `~/.cache/edgeact`, in `cuda/`) so later runs skip the compile (24 module compiles took
//! 6.5 s here with NVRTC 12.4). A cached PTX file the driver rejects is recompiled by [`recompile`].

use super::loader::ensure_nvrtc;
use super::{full_source, CudaError, SOURCES};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

/// NVRTC options shared by every module (besides the architecture). Part of the cache key.
const OPTIONS: &[&str] = &["--std=c++17", "--fmad=true"];

/// PTX of one kernel module for one architecture.
#[derive(Debug)]
pub struct CompiledModule {
    pub name: String,
    /// `compute_XY` version the PTX targets, e.g. 89.
    pub arch: u32,
    /// Hash of the source and options (the cache key, with `arch`).
    pub hash: u64,
    pub ptx: String,
    /// True when the PTX came from the disk cache rather than NVRTC.
    pub from_disk: bool,
}

type Key = (String, u64, u32);

fn memory_cache() -> &'static Mutex<HashMap<Key, Arc<CompiledModule>>> {
    static CACHE: OnceLock<Mutex<HashMap<Key, Arc<CompiledModule>>>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

/// FNV-1a, 64-bit: a stable (across builds and platforms) hash for cache file names. Not for
/// security; a collision would only load a wrong cache file, and the names include the module.
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for &b in p.iter() {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        // Separator so ("ab", "c") and ("a", "bc") differ.
        h ^= 0xff;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Directory of the on-disk PTX cache, or `None` when no home/cache directory is known.
pub fn cache_dir() -> Option<PathBuf> {
    crate::files::cache_dir("cuda")
}

/// The NVRTC version, loading the library first (see [`super::ensure_nvrtc`]).
pub fn nvrtc_version() -> Result<(i32, i32), CudaError> {
    ensure_nvrtc()
}

/// The newest `compute_XY` NVRTC can target that is not newer than `arch` (PTX for an older
/// virtual architecture is JIT-compiled by the driver for newer GPUs).
fn target_arch(arch: u32) -> Result<u32, CudaError> {
    let mut n = 0i32;
    // SAFETY: NVRTC is loaded (ensure_nvrtc succeeded before this is called); the call only
    // writes `n`.
    let rc = unsafe { cudarc::nvrtc::sys::nvrtcGetNumSupportedArchs(&mut n) };
    if rc != cudarc::nvrtc::sys::nvrtcResult::NVRTC_SUCCESS || n <= 0 {
        return Ok(arch);
    }
    let mut archs = vec![0i32; n as usize];
    // SAFETY: `archs` has room for the `n` entries NVRTC reported.
    let rc = unsafe { cudarc::nvrtc::sys::nvrtcGetSupportedArchs(archs.as_mut_ptr()) };
    if rc != cudarc::nvrtc::sys::nvrtcResult::NVRTC_SUCCESS {
        return Ok(arch);
    }
    archs
        .iter()
        .filter(|&&a| a > 0 && a as u32 <= arch)
        .max()
        .map(|&a| a as u32)
        .ok_or_else(|| {
            CudaError::Invalid(format!(
                "GPU architecture sm_{arch} is older than anything this NVRTC supports ({archs:?})"
            ))
        })
}

/// Compiles (or fetches from a cache) module `name` of [`SOURCES`] for `compute_{arch}`
/// (e.g. 86 for sm_86).
pub fn compile_module(name: &str, arch: u32) -> Result<Arc<CompiledModule>, CudaError> {
    get(name, arch, false)
}

/// Like [`compile_module`] but ignores both caches and overwrites them (used when the driver
/// rejects a cached PTX file, e.g. one written by a newer NVRTC than the driver understands).
pub fn recompile(name: &str, arch: u32) -> Result<Arc<CompiledModule>, CudaError> {
    get(name, arch, true)
}

/// Compiles every module of [`SOURCES`] for `compute_{arch}`.
pub fn compile_all(arch: u32) -> Result<Vec<Arc<CompiledModule>>, CudaError> {
    SOURCES.iter().map(|(name, _)| compile_module(name, arch)).collect()
}

fn get(name: &str, arch: u32, fresh: bool) -> Result<Arc<CompiledModule>, CudaError> {
    let src = full_source(name).ok_or_else(|| CudaError::Invalid(format!("no CUDA kernel module named {name:?}")))?;
    let opts = OPTIONS.join(" ");
    let hash = fnv1a(&[src.as_bytes(), opts.as_bytes()]);
    let key = (name.to_string(), hash, arch);
    if !fresh {
        if let Some(m) = memory_cache().lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
            return Ok(Arc::clone(m));
        }
    }
    let file = cache_dir().map(|d| d.join(format!("{name}-{hash:016x}-sm{arch}.ptx")));
    let disk = match (&file, fresh) {
        (Some(f), false) => std::fs::read_to_string(f).ok().filter(|p| p.contains(".entry")),
        _ => None,
    };
    let module = match disk {
        Some(ptx) => CompiledModule {
            name: name.into(),
            arch,
            hash,
            ptx,
            from_disk: true,
        },
        None => {
            let ptx = nvrtc_compile(name, &src, arch)?;
            if let Some(f) = &file {
                store(f, &ptx);
            }
            CompiledModule {
                name: name.into(),
                arch,
                hash,
                ptx,
                from_disk: false,
            }
        }
    };
    let module = Arc::new(module);
    memory_cache()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(key, Arc::clone(&module));
    Ok(module)
}

fn nvrtc_compile(name: &str, src: &str, arch: u32) -> Result<String, CudaError> {
    ensure_nvrtc()?;
    let target = target_arch(arch)?;
    let mut options: Vec<String> = OPTIONS.iter().map(|s| s.to_string()).collect();
    options.push(format!("--gpu-architecture=compute_{target}"));
    let opts = cudarc::nvrtc::CompileOptions {
        options,
        name: Some(format!("{name}.cu")),
        ..Default::default()
    };
    match cudarc::nvrtc::compile_ptx_with_opts(src, opts) {
        Ok(ptx) => Ok(ptx.to_src()),
        Err(cudarc::nvrtc::CompileError::CompileError { log, .. }) => Err(CudaError::Compile {
            module: format!("{name}.cu (compute_{target})"),
            log: log.to_string_lossy().into_owned(),
        }),
        Err(e) => Err(CudaError::Compile {
            module: format!("{name}.cu (compute_{target})"),
            log: format!("{e:?}"),
        }),
    }
}

/// Writes the PTX atomically (temp file + rename) so a concurrent reader never sees half a
/// file. Failures only cost a recompile next time, so they are reported once and ignored.
fn store(path: &PathBuf, ptx: &str) {
    let write = || -> std::io::Result<()> {
        let Some(dir) = path.parent() else {
            return Ok(());
        };
        std::fs::create_dir_all(dir)?;
        // A temporary name of its own per writer (threads of one process compile at once too).
        let mut tmp = tempfile::Builder::new().prefix(".ptx").tempfile_in(dir)?;
        std::io::Write::write_all(&mut tmp, ptx.as_bytes())?;
        tmp.persist(path).map(|_| ()).map_err(|e| e.error)
    };
    if let Err(e) = write() {
        static WARNED: OnceLock<()> = OnceLock::new();
        WARNED.get_or_init(|| eprintln!("edgeact: cannot write the CUDA kernel cache {}: {e}", path.display()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_stable_and_separates_parts() {
        assert_eq!(fnv1a(&[b"abc"]), fnv1a(&[b"abc"]));
        assert_ne!(fnv1a(&[b"ab", b"c"]), fnv1a(&[b"a", b"bc"]));
        assert_ne!(fnv1a(&[b"abc"]), fnv1a(&[b"abd"]));
    }

    #[test]
    fn unknown_module_is_an_error() {
        assert!(matches!(compile_module("nope", 80), Err(CudaError::Invalid(_))));
    }
}
