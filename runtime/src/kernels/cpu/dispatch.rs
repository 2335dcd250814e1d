//! Which kernels a matmul runs: [`choose_path`], a pure function of the instruction-set path,
//! the CPU's extra features, the weight type, whether a repacked form is attached and the
//! token count. The runners (one per [`MatmulPath`]) are in `matmul.rs`; the per-type facts
//! the choice reads are in `table.rs`. docs/kernels.md has the whole table.

use super::table::{neon_panels, repackable, vnni_panels};
use super::Backend;
use crate::quant::GgmlType;

/// Most tokens the repacked VNNI decode kernel takes at once (a batch of decodes of several
/// sequences): each weight panel is read from memory once for all of them, and each token's
/// result is the one it gets alone. Larger chunks (prefill) go to the panel GEMM.
pub const SMALL_BATCH: usize = 16;

/// Smallest token count for the VNNI prefill panels on the file layout; below it the tile
/// kernels win.
pub const PANEL_MIN_TOKENS: usize = 16;

/// CPU features beyond what a [`Backend`] guarantees that change the choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuFeatures {
    /// AVX-512 VNNI (`vpdpbusd`): the repacked decode kernel and the prefill panels.
    pub avx512_vnni: bool,
    /// AMX-INT8 tiles, granted by the OS and not turned off by `EDGEACT_AMX=off`: the prefill
    /// panels multiply on them (`avx512::matmul_panels_amx` for the k-quants,
    /// `avx512::micro_legacy_amx` for the 32-element formats); the path stays the same
    /// [`MatmulPath`].
    pub amx_int8: bool,
    /// An Intel CPU (CPUID vendor `GenuineIntel`), where the decode kernels prefetch to L2 and
    /// everywhere (`prefetch::Prefetch`) and Q6_K's AVX2 panels measured faster than the file
    /// layout in decode too, so Q6_K is repacked on the `avx2` path as well
    /// ([`repack_by_default`]).
    pub intel: bool,
}

impl CpuFeatures {
    /// This CPU's features (detected once per process).
    pub fn detect() -> CpuFeatures {
        #[cfg(target_arch = "x86_64")]
        {
            CpuFeatures {
                avx512_vnni: is_x86_feature_detected!("avx512vnni"),
                amx_int8: super::amx::available(),
                intel: super::prefetch::intel(),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            CpuFeatures::default()
        }
    }
}

/// The kernels one matmul call runs. The `Packed*` paths read the repacked weights
/// ([`PackedMatrix`](super::PackedMatrix)), the others the file's layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MatmulPath {
    /// Repacked weights, 1..=[`SMALL_BATCH`] tokens, AVX-512 VNNI: `avx512_gemv::matvec_packed`
    /// (each panel read once for all tokens).
    PackedDecodeVnni,
    /// Repacked weights, one token, AVX2 (or AVX-512 without VNNI): `avx2_packed::matvec_packed`.
    PackedDecodeAvx2,
    /// Repacked weights, more than [`SMALL_BATCH`] tokens, AVX-512 VNNI: the prefill panels
    /// (`avx512::matmul_panels`) unpacked from the repacked form.
    PackedPanelsVnni,
    /// Repacked weights, 2 or more tokens, AVX2 (or AVX-512 without VNNI): micro-tiles of
    /// `avx2_packed::matmul_packed`.
    PackedTilesAvx2,
    /// Repacked weights of a type with NEON panels (the table's `neon_panels`), one token, NEON:
    /// `neon_packed::matvec_packed` (`sdot` where the CPU has dotprod).
    PackedDecodeNeon,
    /// Repacked weights of a type with NEON panels, 2 or more tokens, NEON: micro-tiles of
    /// `neon_packed::matmul_packed`.
    PackedTilesNeon,
    /// File layout, at least [`PANEL_MIN_TOKENS`] tokens, AVX-512 VNNI and a type with panels:
    /// `avx512::matmul_panels`.
    FilePanelsVnni,
    /// File layout, one token: the path's tile kernel per row, rows split over the pool.
    FileDecode,
    /// File layout, several tokens: blocks of rows x tokens, each row times up to the path's
    /// tile width of tokens per kernel call.
    FileTiles,
}

impl MatmulPath {
    /// Whether the path is a decode path: one token (or up to [`SMALL_BATCH`] over the VNNI
    /// panels), every task a chunk of rows for all tokens (`matmul::decode_plan` makes its
    /// tasks), so that several matrices' tasks can share one pool job (`group.rs`).
    pub fn is_decode(self) -> bool {
        matches!(
            self,
            MatmulPath::FileDecode
                | MatmulPath::PackedDecodeVnni
                | MatmulPath::PackedDecodeAvx2
                | MatmulPath::PackedDecodeNeon
        )
    }

    /// Whether the path reads the repacked form.
    pub fn is_packed(self) -> bool {
        matches!(
            self,
            MatmulPath::PackedDecodeVnni
                | MatmulPath::PackedDecodeAvx2
                | MatmulPath::PackedPanelsVnni
                | MatmulPath::PackedTilesAvx2
                | MatmulPath::PackedDecodeNeon
                | MatmulPath::PackedTilesNeon
        )
    }
}

/// The path for `n_tokens` (at least 1) activation rows against weights of type `ty`, with or
/// without a repacked form attached, on `backend` (which the caller has checked is available:
/// the x86 paths are only chosen for `Avx2`/`Avx512`, which exist only on x86-64).
///
/// Repacked weights go to the AVX-512 VNNI kernels where the path is avx512 and the CPU has
/// VNNI, to the AVX2 ones for avx2 (and avx512 without VNNI), and on NEON to `neon_packed`
/// for the types with NEON panels (the table's `neon_panels`: today every repacked type);
/// scalar ignores the repacked form and reads the file layout.
pub fn choose_path(backend: Backend, cpu: CpuFeatures, ty: GgmlType, packed: bool, n_tokens: usize) -> MatmulPath {
    let x86_simd = matches!(backend, Backend::Avx2 | Backend::Avx512);
    let vnni = backend == Backend::Avx512 && cpu.avx512_vnni;
    if x86_simd && packed && repackable(ty) {
        return match (vnni, n_tokens) {
            (true, n) if n <= SMALL_BATCH => MatmulPath::PackedDecodeVnni,
            (true, _) => MatmulPath::PackedPanelsVnni,
            (false, 1) => MatmulPath::PackedDecodeAvx2,
            (false, _) => MatmulPath::PackedTilesAvx2,
        };
    }
    if backend == Backend::Neon && packed && neon_panels(ty) {
        return if n_tokens == 1 {
            MatmulPath::PackedDecodeNeon
        } else {
            MatmulPath::PackedTilesNeon
        };
    }
    if vnni && n_tokens >= PANEL_MIN_TOKENS && vnni_panels(ty) {
        return MatmulPath::FilePanelsVnni;
    }
    if n_tokens == 1 {
        MatmulPath::FileDecode
    } else {
        MatmulPath::FileTiles
    }
}

/// Whether `backend` on this CPU reads the repacked form of weights of type `ty` when one is
/// attached (for every token count alike): what `--repack` should repack, so that no weights
/// are copied that the kernels then ignore (scalar reads none; a type added to the table with
/// x86 panels but no NEON ones would be read on x86 only).
pub fn reads_repacked(backend: Backend, ty: GgmlType) -> bool {
    choose_path(backend, CpuFeatures::detect(), ty, true, 1).is_packed()
}

/// Whether weights of type `ty` are repacked at load unless the user says otherwise
/// (`--repack` / `--no-repack`): where the kernels for the repacked form measured faster than
/// the file-layout kernels, in decode and in prefill, at 1 and 2 threads (7B Q4_0 and Q4_K_M
/// random-weight files; the figures and the command are in docs/kernels.md "Default path").
/// Only the x86 SIMD paths have been measured: NEON has kernels for the repacked form
/// (`neon_packed`, every repacked type), but no ARM machine was at hand to time them (qemu's
/// timings say nothing about a real core), so on NEON nothing is repacked by default and
/// `--repack` forces it.
///
/// Measured so far: Q4_0 and Q4_K everywhere they have panels (AVX2: 1.6-2.4x prefill and
/// 1.2-1.8x decode; AVX-512 VNNI: decode 1.1-1.4x, prefill equal or faster). Q8_0 too (AVX2:
/// decode 1.1-1.7x, prefill 1.5-1.7x; VNNI: decode 1.1-2.5x, prefill 1.0-1.2x, the same
/// micro-kernel fed by a copy instead of the per-row unpacking). Q4_1 too (AVX2: decode
/// 2.2-3.1x, prefill 2.1-2.8x; VNNI: decode 2.4-4.7x, prefill 1.05-1.13x; criterion, see
/// docs/kernels.md "Q4_1 panels"). Q5_K too (AVX2: decode 1.2-2.4x, prefill 1.6-2.7x, with
/// its kernel's prefetch; VNNI: decode 1.5-2.4x, prefill 1.03-1.24x; criterion and an
/// interleaved harness, see docs/kernels.md "Q5_K panels"). Q6_K, Q5_0 and Q5_1 only with
/// AVX-512 VNNI (Q6_K: decode 1.1-1.9x, prefill 1.02-1.04x; Q5: decode 1.1-3.8x, prefill
/// 1.05-1.3x for Q5_0 and about equal for Q5_1); their AVX2 kernels (also AVX-512 without
/// VNNI) win prefill by 1.3-2.5x but on AMD decode of a large matrix only ties the file
/// layout (Zen 4: Q6_K 0.95-1.2x, Q5 0.9-1.1x: more vector work per element than Q4_0), so
/// there the mapping is kept. On Intel ([`CpuFeatures::intel`]) Q6_K's AVX2 panels win decode
/// as well (7B Q4_K_M with `EDGEACT_KERNELS=avx2` on the Intel VM: tg 3.49-3.55 -> 3.70-3.82
/// t/s at 1 thread, 6.37-6.38 -> 6.74-7.01 at 2, pp128 16.9-17.5 -> 18.7-19.3 at 2), so Q6_K
/// is repacked there on every x86 SIMD path; Q5_0 and Q5_1 were not measured on Intel and keep
/// the AMD choice.
pub fn repack_by_default(backend: Backend, ty: GgmlType) -> bool {
    repack_by_default_on(backend, CpuFeatures::detect(), ty)
}

/// [`repack_by_default`] for a CPU with features `cpu`.
pub fn repack_by_default_on(backend: Backend, cpu: CpuFeatures, ty: GgmlType) -> bool {
    let x86_simd = matches!(backend, Backend::Avx2 | Backend::Avx512);
    let vnni = backend == Backend::Avx512 && cpu.avx512_vnni;
    match ty {
        GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q4_K | GgmlType::Q5_K | GgmlType::Q8_0 => x86_simd,
        GgmlType::Q6_K => vnni || (x86_simd && cpu.intel),
        GgmlType::Q5_0 | GgmlType::Q5_1 => vnni,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use GgmlType as G;
    use MatmulPath as P;

    const VNNI: CpuFeatures = CpuFeatures {
        avx512_vnni: true,
        amx_int8: false,
        intel: false,
    };
    const NO_VNNI: CpuFeatures = CpuFeatures {
        avx512_vnni: false,
        amx_int8: false,
        intel: false,
    };

    #[test]
    fn default_repacking_only_where_a_repacked_kernel_exists() {
        for backend in [Backend::Scalar, Backend::Avx2, Backend::Avx512, Backend::Neon] {
            for cpu in [VNNI, NO_VNNI] {
                for ty in crate::kernels::cpu::SUPPORTED {
                    if repack_by_default_on(backend, cpu, ty) {
                        assert!(repackable(ty), "{ty} has no repacked form");
                        assert!(
                            choose_path(backend, cpu, ty, true, 1).is_packed(),
                            "{backend} {cpu:?} {ty}: repacked by default but never read"
                        );
                    }
                }
            }
        }
        assert!(repack_by_default_on(Backend::Avx512, NO_VNNI, G::Q4_0));
        assert!(repack_by_default_on(Backend::Avx2, VNNI, G::Q4_K));
        assert!(repack_by_default_on(Backend::Avx2, NO_VNNI, G::Q8_0));
        assert!(repack_by_default_on(Backend::Avx512, VNNI, G::Q8_0));
        for ty in [G::Q6_K, G::Q5_0, G::Q5_1] {
            assert!(repack_by_default_on(Backend::Avx512, VNNI, ty), "{ty}");
            assert!(!repack_by_default_on(Backend::Avx512, NO_VNNI, ty), "{ty}");
            assert!(!repack_by_default_on(Backend::Avx2, VNNI, ty), "{ty}");
        }
        // Q6_K's AVX2 panels win decode on Intel only; Q5_0 and Q5_1 were measured on AMD.
        let intel = CpuFeatures { intel: true, ..NO_VNNI };
        for backend in [Backend::Avx2, Backend::Avx512] {
            assert!(repack_by_default_on(backend, intel, G::Q6_K), "{backend}");
            assert!(!repack_by_default_on(backend, intel, G::Q5_0), "{backend}");
            assert!(!repack_by_default_on(backend, intel, G::Q5_1), "{backend}");
        }
        assert!(!repack_by_default_on(Backend::Scalar, intel, G::Q6_K));
        assert!(!repack_by_default_on(Backend::Neon, intel, G::Q6_K));
        for (backend, cpu) in [
            (Backend::Avx512, VNNI),
            (Backend::Avx512, NO_VNNI),
            (Backend::Avx2, NO_VNNI),
        ] {
            for ty in [G::Q4_1, G::Q5_K] {
                assert!(repack_by_default_on(backend, cpu, ty), "{backend} {cpu:?} {ty}");
            }
        }
        for ty in [G::Q4_1, G::Q5_K] {
            assert!(!repack_by_default_on(Backend::Scalar, VNNI, ty), "{ty}");
            assert!(!repack_by_default_on(Backend::Neon, VNNI, ty), "{ty}");
        }
        assert!(!repack_by_default_on(Backend::Scalar, VNNI, G::Q4_0));
        assert!(!repack_by_default_on(Backend::Neon, VNNI, G::Q4_0));
        // NEON has panel kernels, but nothing measured on ARM hardware: the file layout stays.
        for ty in crate::kernels::cpu::SUPPORTED {
            assert!(!repack_by_default_on(Backend::Neon, NO_VNNI, ty), "{ty}");
        }
    }

    #[test]
    fn repacked_weights_on_x86_simd_paths() {
        for ty in [G::Q4_0, G::Q4_1, G::Q5_0, G::Q5_1, G::Q8_0, G::Q4_K, G::Q5_K, G::Q6_K] {
            assert_eq!(choose_path(Backend::Avx512, VNNI, ty, true, 1), P::PackedDecodeVnni);
            assert_eq!(
                choose_path(Backend::Avx512, VNNI, ty, true, SMALL_BATCH),
                P::PackedDecodeVnni
            );
            assert_eq!(
                choose_path(Backend::Avx512, VNNI, ty, true, SMALL_BATCH + 1),
                P::PackedPanelsVnni
            );
            assert_eq!(choose_path(Backend::Avx512, VNNI, ty, true, 512), P::PackedPanelsVnni);
            // Without VNNI, AVX-512 runs the AVX2 kernels; and avx2 never uses VNNI.
            for (b, cpu) in [
                (Backend::Avx512, NO_VNNI),
                (Backend::Avx2, VNNI),
                (Backend::Avx2, NO_VNNI),
            ] {
                assert_eq!(choose_path(b, cpu, ty, true, 1), P::PackedDecodeAvx2, "{b} {cpu:?}");
                assert_eq!(choose_path(b, cpu, ty, true, 2), P::PackedTilesAvx2, "{b} {cpu:?}");
                assert_eq!(choose_path(b, cpu, ty, true, 512), P::PackedTilesAvx2, "{b} {cpu:?}");
            }
        }
    }

    #[test]
    fn scalar_ignores_the_repacked_form() {
        for cpu in [VNNI, NO_VNNI] {
            for ty in crate::kernels::cpu::SUPPORTED {
                assert_eq!(choose_path(Backend::Scalar, cpu, ty, true, 1), P::FileDecode, "{ty}");
                assert_eq!(choose_path(Backend::Scalar, cpu, ty, true, 64), P::FileTiles, "{ty}");
            }
            assert_eq!(choose_path(Backend::Scalar, cpu, G::Q8_0, false, 512), P::FileTiles);
        }
    }

    #[test]
    fn neon_reads_the_repacked_form_of_types_with_neon_panels() {
        for cpu in [VNNI, NO_VNNI] {
            for ty in [G::Q4_0, G::Q4_1, G::Q5_0, G::Q5_1, G::Q8_0, G::Q4_K, G::Q5_K, G::Q6_K] {
                assert!(neon_panels(ty), "{ty}");
                assert_eq!(
                    choose_path(Backend::Neon, cpu, ty, true, 1),
                    P::PackedDecodeNeon,
                    "{ty}"
                );
                for n in [2, 3, 16, 17, 512] {
                    assert_eq!(
                        choose_path(Backend::Neon, cpu, ty, true, n),
                        P::PackedTilesNeon,
                        "{ty} {n}"
                    );
                }
                assert_eq!(choose_path(Backend::Neon, cpu, ty, false, 1), P::FileDecode, "{ty}");
                assert_eq!(choose_path(Backend::Neon, cpu, ty, false, 64), P::FileTiles, "{ty}");
            }
            // No NEON panels (nor a repacked form): a packed flag alone changes nothing.
            for ty in [G::F32, G::F16, G::BF16] {
                assert!(!neon_panels(ty), "{ty}");
                assert_eq!(choose_path(Backend::Neon, cpu, ty, true, 1), P::FileDecode, "{ty}");
                assert_eq!(choose_path(Backend::Neon, cpu, ty, true, 64), P::FileTiles, "{ty}");
            }
        }
    }

    #[test]
    fn file_layout_panels_need_vnni_enough_tokens_and_a_panel_type() {
        let b = Backend::Avx512;
        for ty in [G::Q4_0, G::Q4_1, G::Q5_0, G::Q5_1, G::Q8_0, G::Q4_K, G::Q5_K, G::Q6_K] {
            assert_eq!(
                choose_path(b, VNNI, ty, false, PANEL_MIN_TOKENS),
                P::FilePanelsVnni,
                "{ty}"
            );
            assert_eq!(
                choose_path(b, VNNI, ty, false, PANEL_MIN_TOKENS - 1),
                P::FileTiles,
                "{ty}"
            );
            assert_eq!(choose_path(b, VNNI, ty, false, 1), P::FileDecode, "{ty}");
            assert_eq!(choose_path(b, NO_VNNI, ty, false, 512), P::FileTiles, "{ty}");
            assert_eq!(choose_path(Backend::Avx2, VNNI, ty, false, 512), P::FileTiles, "{ty}");
        }
        for ty in [G::F32, G::F16, G::BF16] {
            assert_eq!(choose_path(b, VNNI, ty, false, 512), P::FileTiles, "{ty}");
        }
    }

    #[test]
    fn only_repacked_paths_read_the_repacked_form() {
        for b in Backend::ALL {
            for cpu in [VNNI, NO_VNNI] {
                for ty in crate::kernels::cpu::SUPPORTED {
                    for n in [1, 2, 15, 16, 17, 512] {
                        let p = choose_path(b, cpu, ty, false, n);
                        assert!(!p.is_packed(), "{b} {ty} {n}: {p:?} without a repacked form");
                        let p = choose_path(b, cpu, ty, true, n);
                        let reads = match b {
                            Backend::Avx2 | Backend::Avx512 => repackable(ty),
                            Backend::Neon => neon_panels(ty),
                            Backend::Scalar => false,
                        };
                        assert_eq!(p.is_packed(), reads, "{b} {ty} {n}: {p:?}");
                        if cpu.avx512_vnni == CpuFeatures::detect().avx512_vnni {
                            assert_eq!(reads_repacked(b, ty), reads, "{b} {ty}");
                        }
                    }
                }
            }
        }
    }
}
