//! Compute kernels. [`cpu`]: the quantized matmul, element-wise ops and thread pool the CPU
//! forward pass runs on (scalar, AVX2, AVX-512 and NEON paths chosen at run time).

pub mod cpu;

pub use cpu::{matmul, KernelError, QMatrix, ThreadPool};
