//! The CUDA backend: device discovery and selection, and the GPU kernels of the Llama forward
//! pass, written in header-free CUDA C and compiled by NVRTC at first use.
//!
//! Nothing CUDA is needed to build or run edgeact: with the `cuda` feature (on by default)
//! `cudarc` loads `libcuda` and `libnvrtc` at run time, and every entry point first probes for
//! them ([`probe`]) so that a machine without a GPU gets a clean [`CudaError`] (and `--device
//! auto` falls back to the CPU) instead of cudarc's panic.
//!
//! - [`select_device`]: the `--device auto|cpu|cuda[:N]` decision, logged on one line.
//! - [`probe`]: driver/NVRTC presence and the GPUs found ([`CudaAvailability`]).
//! - [`SOURCES`] and (with the feature) `compile`: the kernel sources and the NVRTC compiler
//!   with its in-process and on-disk PTX caches (keyed by source hash and GPU arch).
//! - `GpuContext` (feature `cuda`): a device, its stream and the loaded kernels, with one
//!   checked launcher per kernel (matvec/matmul over Q4_0, Q4_1, Q4_K, Q5_K, Q6_K, Q8_0, F16, F32
//!   weights, RMSNorm, RoPE, SwiGLU, softmax, residual add, KV store, attention).
//!
//! Library search: the system loader's path, plus `EDGEACT_NVRTC_PATH` (a directory holding
//! `libnvrtc.so*`, e.g. what `scripts/fetch-nvrtc.sh` prints) for NVRTC.

mod select;

pub use select::{probe, select_device, Backend, CudaAvailability, DeviceChoice, GpuInfo};

#[cfg(feature = "cuda")]
mod compile;
#[cfg(feature = "cuda")]
mod context;
#[cfg(test)]
mod host_check;
#[cfg(test)]
mod host_emu;
#[cfg(feature = "cuda")]
mod loader;

#[cfg(feature = "cuda")]
pub use compile::{compile_all, compile_module, nvrtc_version, CompiledModule};
#[cfg(feature = "cuda")]
pub use context::{rope_table, GpuBuffer, GpuContext, GpuMatrix, GPU_WEIGHT_TYPES};
#[cfg(feature = "cuda")]
pub use loader::{ensure_driver, ensure_nvrtc, ensure_toolchain, nvrtc_readable_by};

/// Why the CUDA backend cannot be used or a GPU operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CudaError {
    #[error("this build of edgeact has no CUDA support (rebuild with the `cuda` feature)")]
    NotCompiled,
    #[error("the CUDA driver library (libcuda) was not found: no NVIDIA driver is installed")]
    DriverMissing,
    #[error("CUDA driver {found} is too old: CUDA 12.0 or newer is needed")]
    DriverTooOld { found: String },
    #[error(
        "NVRTC (libnvrtc.so.12) was not found{where_}: install the CUDA runtime compiler \
         (e.g. `scripts/fetch-nvrtc.sh`) and set EDGEACT_NVRTC_PATH to its directory"
    )]
    NvrtcMissing { where_: String },
    #[error("NVRTC {found} is not supported: NVRTC 12 or newer is needed")]
    NvrtcTooOld { found: String },
    #[error(
        "NVRTC {nvrtc} is newer than the CUDA driver ({driver}), which cannot load the PTX it \
         writes: use an NVRTC no newer than the driver (e.g. `NVRTC_WHEEL_VERSION=12.{driver_minor}.* \
         scripts/fetch-nvrtc.sh`, EDGEACT_NVRTC_PATH) or update the driver"
    )]
    NvrtcNewerThanDriver {
        nvrtc: String,
        driver: String,
        driver_minor: i32,
    },
    #[error("no CUDA device found{0}")]
    NoDevice(String),
    #[error("CUDA device {ordinal} does not exist ({count} device(s) found)")]
    BadOrdinal { ordinal: usize, count: usize },
    #[error("invalid device {0:?}: expected auto, cpu, cuda or cuda:N")]
    BadChoice(String),
    #[error("CUDA driver error{context}: {message}")]
    Driver { context: String, message: String },
    #[error("NVRTC could not compile {module}:\n{log}")]
    Compile { module: String, log: String },
    #[error("{0}")]
    Invalid(String),
    #[error("out of GPU memory: {0}")]
    OutOfMemory(String),
}

impl CudaError {
    /// A driver error with a note of what was being done.
    #[cfg(feature = "cuda")]
    pub(crate) fn driver(context: impl std::fmt::Display, e: cudarc::driver::DriverError) -> CudaError {
        let message = e.to_string();
        if message.contains("OUT_OF_MEMORY") {
            return CudaError::OutOfMemory(format!("{context}: {message}"));
        }
        CudaError::Driver {
            context: format!(" ({context})"),
            message,
        }
    }
}

/// The kernel sources, as `(module name, CUDA C)` before the prelude is prepended. Every
/// module is compiled separately so a change to one does not invalidate the others' cache.
pub const SOURCES: &[(&str, &str)] = &[
    ("matvec", include_str!("matvec.cu")),
    ("matmul", include_str!("matmul.cu")),
    ("ops", include_str!("ops.cu")),
    ("attention", include_str!("attention.cu")),
];

/// Shared definitions prepended to every module (types, half conversion, reductions, and the
/// weight-format accessors).
pub const PRELUDE: &str = concat!(include_str!("prelude.cuh"), "\n", include_str!("quant.cuh"), "\n");

/// The full source NVRTC compiles for module `name`, or `None` for an unknown name.
pub fn full_source(name: &str) -> Option<String> {
    SOURCES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, src)| format!("{PRELUDE}\n// ---- {name}.cu ----\n{src}"))
}
