//! CPU compute kernels: quantized matmul/matvec, element-wise ops and the thread pool.
//!
//! One dispatch point ([`backend`]) picks the instruction set once per process: the best the
//! CPU supports (`is_x86_feature_detected!`), unless `EDGEACT_KERNELS=scalar|avx2|avx512|neon`
//! forces one (tests and benches). Every entry point also has a `*_with(backend, ..)` form so
//! one process can compare paths. [`scalar`] is the specification the SIMD paths are tested
//! against.
//!
//! Layout, imports flowing one way (runner -> kernels -> leaves):
//! - leaves: [`backend`] (instruction-set paths, errors), [`table`] (one row of kernel facts
//!   per weight type), [`types`] (`QMatrix`, `PackedMatrix`, `Activations`, shared pointers);
//! - kernels: [`scalar`] (`vec_dot_<stem>`), `avx2`/`avx512`/`neon` (`tile_<stem>`),
//!   `avx2_packed`/`avx512_gemv`/`neon_packed` (`panel_<stem>`, repacked weights), [`repack`]
//!   (the panel layout), [`ops`] (element-wise), [`pool`];
//! - runner: [`dispatch`] ([`choose_path`], pure) and [`matmul`] (validation, activation
//!   quantization, one runner per [`MatmulPath`]). docs/kernels.md has the dispatch table.

// Leaves: shared types and facts, importing no kernel.
pub mod backend;
pub mod table;
pub mod types;

// Kernels: import the leaves (and `pool`), never the runner.
#[cfg(target_arch = "x86_64")]
mod amx;
#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx2_packed;
#[cfg(target_arch = "x86_64")]
mod avx2_repack;
#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(target_arch = "x86_64")]
mod avx512_gemv;
#[cfg(target_arch = "aarch64")]
mod neon;
#[cfg(target_arch = "aarch64")]
mod neon_packed;
pub mod ops;
pub mod pool;
#[cfg(target_arch = "x86_64")]
mod prefetch;
pub mod repack;
pub mod scalar;

// The runner: picks a path (`dispatch`) and calls the kernels.
/// Activation rounding to Q8_0/Q8_1 in vector lanes (the scalar quantizers are the spec).
mod act_quant;
pub mod dispatch;
/// Several matrices on the same activations in one pool job (q/k/v, gate/up).
pub mod group;
pub mod matmul;
/// A repacked matrix as bytes and mapped back (the model's repack cache).
mod packed_io;

pub use backend::{available_backends, backend, Backend, KernelError};
pub use dispatch::{choose_path, reads_repacked, repack_by_default, CpuFeatures, MatmulPath};
pub use group::try_matmul_group_as;
pub use matmul::{
    matmul, matmul_with, quantize_activations, try_matmul, try_matmul_as, try_matmul_with, vec_dot,
    QuantizedActivations,
};
pub use ops::{
    axpy_f16, dot_f16, dot_f16_rows, dot_f16_rows_grouped, exp_in_place, f16_to_f32_row, f32_to_f16_row, max_f32,
    rms_norm, rope, silu, softmax, sum_exp, swiglu, weighted_sum_f16_rows, weighted_sum_f16_rows_grouped, RopeTable,
};
pub use pool::{physical_cores, ThreadPool};
pub use repack::repack_supported;
pub use table::{act_type, kernel_type, repackable, supported, KernelType, KERNEL_TYPES, SUPPORTED};
pub use types::{Activations, PackedMatrix, QMatrix, DOT_MAX_T};

/// The CPU kernels this process runs, in words (for `run -v` and `bench`): the instruction-set
/// path, the CPU features beyond it that change the kernels and, on the x86 SIMD paths, where
/// the decode kernels prefetch: e.g. `avx512 (VNNI, AMX-INT8, prefetch l2)`.
pub fn describe() -> String {
    let path = backend();
    let cpu = CpuFeatures::detect();
    #[cfg(target_arch = "x86_64")]
    let prefetching =
        matches!(path, Backend::Avx2 | Backend::Avx512).then(|| format!("prefetch {}", prefetch::policy().name()));
    let mut extra: Vec<&str> = Vec::new();
    if path == Backend::Avx512 && cpu.avx512_vnni {
        extra.push("VNNI");
        if cpu.amx_int8 {
            extra.push("AMX-INT8");
        }
    }
    #[cfg(target_arch = "aarch64")]
    if path == Backend::Neon && std::arch::is_aarch64_feature_detected!("dotprod") {
        extra.push("dotprod");
    }
    // Where the decode kernels prefetch changes their speed (and can be forced), so a figure
    // says which ran.
    #[cfg(target_arch = "x86_64")]
    if let Some(p) = &prefetching {
        extra.push(p);
    }
    if extra.is_empty() {
        path.name().to_string()
    } else {
        format!("{} ({})", path.name(), extra.join(", "))
    }
}

#[cfg(test)]
mod tests;
