//! CUDA tests, one binary: NVRTC compilation of every kernel (runs without a GPU when libnvrtc
//! is found), kernels against the CPU path and the offloaded model (skip without a GPU).

mod compile;
mod kernels;
mod model;
