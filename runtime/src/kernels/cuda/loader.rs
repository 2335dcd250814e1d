//! Loading `libcuda` and `libnvrtc` without panicking.
//!
//! cudarc (`dynamic-loading`) opens the libraries lazily by bare name and panics when they are
//! missing, so every GPU entry point calls [`ensure_driver`] / [`ensure_nvrtc`] first. NVRTC
//! often lives outside the loader's path (a pip wheel, a toolkit not on `LD_LIBRARY_PATH`):
//! `EDGEACT_NVRTC_PATH` names its directory, and the libraries found there are opened by full
//! path and kept open. glibc then resolves cudarc's later `dlopen("libnvrtc.so.12")` to the
//! already loaded object through its SONAME, so no environment change is needed at run time.

use super::CudaError;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Environment variable naming a directory that holds `libnvrtc.so*`.
pub const NVRTC_PATH_ENV: &str = "EDGEACT_NVRTC_PATH";

/// Libraries opened from `EDGEACT_NVRTC_PATH`, kept open for the life of the process.
static PRELOADED: OnceLock<Result<Vec<libloading::Library>, String>> = OnceLock::new();
static DRIVER: OnceLock<Result<i32, String>> = OnceLock::new();
static NVRTC: OnceLock<Result<(i32, i32), String>> = OnceLock::new();

/// Opens the NVRTC libraries in `EDGEACT_NVRTC_PATH` (builtins first: libnvrtc loads them by
/// name when it compiles). An unset variable is not an error.
fn preload_nvrtc_dir() -> Result<(), String> {
    let r = PRELOADED.get_or_init(|| {
        let Some(dir) = std::env::var_os(NVRTC_PATH_ENV) else {
            return Ok(Vec::new());
        };
        let dir = PathBuf::from(dir);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map_err(|e| format!("{NVRTC_PATH_ENV}={}: {e}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| is_nvrtc_file(p))
            .collect();
        // Builtins before the compiler itself, then a stable order.
        files.sort_by_key(|p| (!p.to_string_lossy().contains("builtins"), p.clone()));
        let mut libs = Vec::new();
        for f in &files {
            // SAFETY: loading NVIDIA's NVRTC runs its (trusted, side-effect free) initialisers;
            // the handle is kept open for the whole process, so no symbol outlives it.
            match unsafe { libloading::Library::new(f) } {
                Ok(lib) => libs.push(lib),
                Err(e) => return Err(format!("cannot load {}: {e}", f.display())),
            }
        }
        if !files.iter().any(|p| !p.to_string_lossy().contains("builtins")) {
            return Err(format!("no libnvrtc.so* in {NVRTC_PATH_ENV}={}", dir.display()));
        }
        Ok(libs)
    });
    r.as_ref().map(|_| ()).map_err(Clone::clone)
}

/// `libnvrtc.so*` and `libnvrtc-builtins.so*`, but not the toolkit's `*.alt.so*` variants
/// (a second copy of the same SONAME that would shadow the one cudarc expects).
fn is_nvrtc_file(p: &Path) -> bool {
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    name.starts_with("libnvrtc") && name.contains(".so") && !name.contains("alt")
}

/// Makes sure libcuda can be loaded and is CUDA 12 or newer; returns the driver version
/// (e.g. 12040). Cached after the first call.
pub fn ensure_driver() -> Result<i32, CudaError> {
    let r = DRIVER.get_or_init(|| {
        // SAFETY: only tries to open the library (libloading); no symbol is called.
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            return Err(String::new());
        }
        let mut v = 0i32;
        // SAFETY: libcuda is loadable (checked above), so cudarc resolves the symbol instead of
        // panicking; cuDriverGetVersion only writes the int it is given.
        let rc = unsafe { cudarc::driver::sys::cuDriverGetVersion(&mut v) };
        if rc != cudarc::driver::sys::CUresult::CUDA_SUCCESS {
            return Err(format!("cuDriverGetVersion failed: {rc:?}"));
        }
        Ok(v)
    });
    match r {
        Ok(v) if *v >= 12000 => Ok(*v),
        Ok(v) => Err(CudaError::DriverTooOld {
            found: format!("{}.{}", v / 1000, v % 1000 / 10),
        }),
        Err(e) if e.is_empty() => Err(CudaError::DriverMissing),
        Err(e) => Err(CudaError::Driver {
            context: String::new(),
            message: e.clone(),
        }),
    }
}

/// Makes sure libnvrtc (12.x) can be loaded, from `EDGEACT_NVRTC_PATH` or the loader's path;
/// returns its version. Cached after the first call.
pub fn ensure_nvrtc() -> Result<(i32, i32), CudaError> {
    let r = NVRTC.get_or_init(|| {
        let preload = preload_nvrtc_dir();
        // SAFETY: only tries to open the library (libloading); no symbol is called.
        if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
            return Err(match preload {
                Err(e) => format!(" ({e})"),
                Ok(()) => match std::env::var_os(NVRTC_PATH_ENV) {
                    Some(d) => format!(" in {NVRTC_PATH_ENV}={}", Path::new(&d).display()),
                    None => format!(" on the library path ({NVRTC_PATH_ENV} is not set)"),
                },
            });
        }
        let (mut major, mut minor) = (0i32, 0i32);
        // SAFETY: libnvrtc is loadable (checked above); nvrtcVersion only writes the two ints.
        let rc = unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) };
        if rc != cudarc::nvrtc::sys::nvrtcResult::NVRTC_SUCCESS {
            return Err(format!(" (nvrtcVersion failed: {rc:?})"));
        }
        Ok((major, minor))
    });
    match r {
        Ok((major, minor)) if *major >= 12 => Ok((*major, *minor)),
        Ok((major, minor)) => Err(CudaError::NvrtcTooOld {
            found: format!("{major}.{minor}"),
        }),
        Err(where_) => Err(CudaError::NvrtcMissing { where_: where_.clone() }),
    }
}

/// [`ensure_driver`] and [`ensure_nvrtc`], and that the driver can load what this NVRTC writes
/// ([`nvrtc_readable_by`]): what running kernels needs.
pub fn ensure_toolchain() -> Result<(), CudaError> {
    nvrtc_readable_by(ensure_driver()?, ensure_nvrtc()?)
}

/// Whether the driver (`cuDriverGetVersion`, e.g. 12020) can load PTX from NVRTC
/// `(major, minor)`: PTX carries its ISA version, and a driver only JIT-compiles the ISA of
/// its own CUDA version or older (CUDA's minor-version compatibility covers binaries, not
/// PTX), so NVRTC 12.4's modules fail on a 12.2 driver with `CUDA_ERROR_UNSUPPORTED_PTX_VERSION`.
pub fn nvrtc_readable_by(driver: i32, (major, minor): (i32, i32)) -> Result<(), CudaError> {
    if major * 1000 + minor * 10 <= driver {
        return Ok(());
    }
    Err(CudaError::NvrtcNewerThanDriver {
        nvrtc: format!("{major}.{minor}"),
        driver: format!("{}.{}", driver / 1000, driver % 1000 / 10),
        driver_minor: driver % 1000 / 10,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nvrtc_newer_than_the_driver_is_refused_with_both_versions() {
        assert!(nvrtc_readable_by(12040, (12, 4)).is_ok());
        assert!(nvrtc_readable_by(12080, (12, 4)).is_ok());
        assert!(nvrtc_readable_by(13000, (12, 9)).is_ok());
        let e = nvrtc_readable_by(12020, (12, 4)).unwrap_err().to_string();
        assert!(
            e.contains("NVRTC 12.4") && e.contains("driver (12.2)") && e.contains("12.2.*"),
            "{e}"
        );
        assert!(nvrtc_readable_by(12090, (13, 0)).is_err());
    }
}
