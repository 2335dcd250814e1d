//! Compute kernels. [`cpu`]: the quantized matmul, element-wise ops and thread pool the CPU
//! forward pass runs on (scalar, AVX2, AVX-512 and NEON paths chosen at run time).

pub mod cpu;
/// CUDA backend: device selection and NVRTC-compiled GPU kernels (see `cuda/mod.rs`).
pub mod cuda;

pub use cpu::{matmul, KernelError, QMatrix, ThreadPool};
