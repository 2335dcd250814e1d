//! The CPU matmul's type table: one row per weight type with a kernel, stating its kernel
//! facts (like ggml-cpu's `type_traits_cpu`). Everything that asks "does type X have ..."
//! ([`supported`], [`act_type`], [`repackable`], the dispatch in `dispatch.rs`, the error
//! text of [`KernelError::UnsupportedType`](super::KernelError)) reads this table, so adding a
//! type starts here (see docs/kernels.md).
//!
//! The format facts (elements and bytes per block) stay with the format owner, `crate::quant`
//! ([`GgmlType::block_size`], [`GgmlType::type_size`]); [`KernelType::block_size`] and
//! [`KernelType::block_bytes`] only forward to it.
//!
//! Kernel names share the row's [`stem`](KernelType::stem) `<weight>_<activation>`: the scalar
//! specification is `scalar::vec_dot_<stem>`, the SIMD twins `tile_<stem>` in `avx2.rs` and
//! `neon.rs`, `tile_<stem>_vnni` in `avx512.rs` and `panel_<stem>` in the kernels for repacked
//! weights (`avx2_packed.rs`, `avx512_gemv.rs`, `neon_packed.rs`), so `grep -rn q4_0_q8_0 runtime/src/kernels/cpu` finds all of Q4_0's kernels.
//! A test below checks that every kernel the table claims exists under that name.

use crate::quant::GgmlType;

/// The kernel facts of one weight type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelType {
    pub ty: GgmlType,
    /// The activation format the weight rows are multiplied with (ggml's `vec_dot_type`):
    /// activations are quantized to it once per matmul. `F32` for float weights.
    pub act: GgmlType,
    /// Name stem of this type's kernels: `<weight>_<activation>` in lower case.
    pub stem: &'static str,
    /// AVX2 tile kernel (`avx2::tile_<stem>`); every row has one, and the AVX-512 path uses
    /// it wherever it has nothing better.
    pub avx2_tile: bool,
    /// AVX-512 VNNI 256-bit tile kernel for up to 4 tokens (`avx512::tile_<stem>_vnni`).
    pub vnni_tile: bool,
    /// AVX-512 VNNI prefill panels (`avx512::matmul_panels`), from the file layout or the
    /// repacked one.
    pub vnni_panels: bool,
    /// Has a repacked (panel) form, [`PackedMatrix`](super::PackedMatrix), with kernels
    /// `panel_<stem>` in `avx2_packed.rs` (AVX2, any token count) and `avx512_gemv.rs`
    /// (VNNI decode).
    pub repack: bool,
    /// NEON tile kernel (`neon::tile_<stem>`, with a `_dotprod` variant for the legacy
    /// formats); without one, NEON runs the scalar specification.
    pub neon_tile: bool,
    /// NEON kernels for the repacked form (`neon_packed::panel_<stem>`, `sdot` and plain
    /// variants); implies `repack`. Without them NEON reads the file layout even when a
    /// repacked form is attached.
    pub neon_panels: bool,
}

impl KernelType {
    /// Elements per block (the format's, from `crate::quant`).
    pub const fn block_size(&self) -> usize {
        self.ty.block_size()
    }

    /// Bytes per block (the format's, from `crate::quant`).
    pub const fn block_bytes(&self) -> usize {
        self.ty.type_size()
    }
}

/// A row of [`KERNEL_TYPES`]; `const` so the table reads as one line per type.
#[allow(clippy::too_many_arguments)]
const fn row(
    ty: GgmlType,
    act: GgmlType,
    stem: &'static str,
    vnni_tile: bool,
    vnni_panels: bool,
    repack: bool,
    neon_tile: bool,
    neon_panels: bool,
) -> KernelType {
    KernelType {
        ty,
        act,
        stem,
        avx2_tile: true,
        vnni_tile,
        vnni_panels,
        repack,
        neon_tile,
        neon_panels,
    }
}

use GgmlType as G;

/// Every weight type the CPU matmul takes, in the order errors list them.
#[rustfmt::skip]
pub const KERNEL_TYPES: [KernelType; 11] = [
    //   weight   activation  stem          vnni_tile vnni_panels repack neon_tile neon_panels
    row(G::F32,  G::F32,  "f32_f32",   false, false, false, true,  false),
    row(G::F16,  G::F32,  "f16_f32",   false, false, false, false, false),
    row(G::BF16, G::F32,  "bf16_f32",  false, false, false, false, false),
    row(G::Q8_0, G::Q8_0, "q8_0_q8_0", true,  true,  true,  true,  true),
    row(G::Q4_0, G::Q8_0, "q4_0_q8_0", true,  true,  true,  true,  true),
    row(G::Q4_1, G::Q8_1, "q4_1_q8_1", true,  true,  true,  false, true),
    row(G::Q5_0, G::Q8_0, "q5_0_q8_0", true,  true,  true,  true,  true),
    row(G::Q5_1, G::Q8_1, "q5_1_q8_1", true,  true,  true,  true,  true),
    row(G::Q4_K, G::Q8_K, "q4_k_q8_k", false, true,  true,  true,  true),
    row(G::Q5_K, G::Q8_K, "q5_k_q8_k", false, true,  true,  true,  true),
    row(G::Q6_K, G::Q8_K, "q6_k_q8_k", false, true,  true,  true,  true),
];

/// Weight types with a matmul kernel (the first column of [`KERNEL_TYPES`]).
pub const SUPPORTED: [GgmlType; KERNEL_TYPES.len()] = {
    let mut types = [GgmlType::F32; KERNEL_TYPES.len()];
    let mut i = 0;
    while i < types.len() {
        types[i] = KERNEL_TYPES[i].ty;
        i += 1;
    }
    types
};

/// Index into [`KERNEL_TYPES`] by GGUF type id (`u8::MAX`: no kernel), so a lookup is one
/// load: the runner asks per call and the panels per micro-tile.
const ROW_OF_ID: [u8; 64] = {
    let mut rows = [u8::MAX; 64];
    let mut i = 0;
    while i < KERNEL_TYPES.len() {
        rows[KERNEL_TYPES[i].ty.id() as usize] = i as u8;
        i += 1;
    }
    rows
};

/// The table row of `ty`, or `None` if the CPU matmul has no kernel for it.
pub fn kernel_type(ty: GgmlType) -> Option<&'static KernelType> {
    let row = *ROW_OF_ID.get(ty.id() as usize)?;
    KERNEL_TYPES.get(row as usize)
}

/// Whether the matmul has a kernel for weights of type `ty` (check at model load).
pub fn supported(ty: GgmlType) -> bool {
    kernel_type(ty).is_some()
}

/// The activation format paired with weights of type `ty` (`F32` for float weights and for
/// types without a kernel).
pub fn act_type(ty: GgmlType) -> GgmlType {
    kernel_type(ty).map_or(GgmlType::F32, |k| k.act)
}

/// Whether [`PackedMatrix::new`](super::PackedMatrix::new) takes weights of type `ty`.
pub fn repackable(ty: GgmlType) -> bool {
    kernel_type(ty).is_some_and(|k| k.repack)
}

/// Whether the NEON kernels for repacked weights (`neon_packed`) take weights of type `ty`
/// (the table's `neon_panels` column): only then does NEON read a repacked form.
pub fn neon_panels(ty: GgmlType) -> bool {
    kernel_type(ty).is_some_and(|k| k.neon_panels)
}

/// Whether the AVX-512 VNNI prefill panels take weights of type `ty` (the CPU check is the
/// dispatcher's).
pub fn vnni_panels(ty: GgmlType) -> bool {
    kernel_type(ty).is_some_and(|k| k.vnni_panels)
}

/// "F32, F16, ...": the supported types, for error messages.
pub fn supported_names() -> String {
    SUPPORTED.map(|t| t.name()).join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stems_name_weight_and_activation() {
        for k in KERNEL_TYPES {
            let want = format!("{}_{}", k.ty.name(), k.act.name()).to_lowercase();
            assert_eq!(k.stem, want, "{}", k.ty);
            assert_eq!(k.act.block_size() % k.block_size(), 0, "{}: blocks must line up", k.ty);
        }
    }

    #[test]
    fn lookups_read_the_table() {
        assert!(supported(GgmlType::Q4_0) && supported(GgmlType::BF16));
        assert!(!supported(GgmlType::Q8_K) && !supported(GgmlType::Q2_K) && !supported(GgmlType::I8));
        assert_eq!(act_type(GgmlType::Q5_1), GgmlType::Q8_1);
        assert_eq!(act_type(GgmlType::Q6_K), GgmlType::Q8_K);
        assert_eq!(act_type(GgmlType::F16), GgmlType::F32);
        assert_eq!(act_type(GgmlType::Q3_K), GgmlType::F32);
        let repacked: Vec<_> = SUPPORTED.into_iter().filter(|&t| repackable(t)).collect();
        assert_eq!(
            repacked,
            [
                GgmlType::Q8_0,
                GgmlType::Q4_0,
                GgmlType::Q4_1,
                GgmlType::Q5_0,
                GgmlType::Q5_1,
                GgmlType::Q4_K,
                GgmlType::Q5_K,
                GgmlType::Q6_K
            ]
        );
        assert!(!vnni_panels(GgmlType::F32) && vnni_panels(GgmlType::Q6_K));
        let neon: Vec<_> = SUPPORTED.into_iter().filter(|&t| neon_panels(t)).collect();
        assert_eq!(neon, repacked, "NEON reads every repacked type");
        for k in KERNEL_TYPES {
            assert!(!k.neon_panels || k.repack, "{}: NEON panels need a repacked form", k.ty);
        }
        assert_eq!(
            supported_names(),
            "F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K"
        );
    }

    /// Every kernel the table claims exists under its stem's name, so one grep for a stem finds
    /// the scalar specification and every SIMD twin, and the table cannot drift from the code.
    #[test]
    fn every_claimed_kernel_exists_under_its_name() {
        let has = |src: &str, name: String| {
            // A definition, or (macro-generated kernels) the name as the macro's first argument.
            ["fn {}<", "fn {}(", "!({},", "    {},"]
                .iter()
                .any(|pattern| src.contains(&pattern.replace("{}", &name)))
        };
        let (scalar, avx2, avx512, neon) = (
            include_str!("scalar.rs"),
            include_str!("avx2.rs"),
            include_str!("avx512.rs"),
            include_str!("neon.rs"),
        );
        let (avx2_packed, avx512_gemv) = (include_str!("avx2_packed.rs"), include_str!("avx512_gemv.rs"));
        let neon_packed = include_str!("neon_packed.rs");
        for k in KERNEL_TYPES {
            let s = k.stem;
            assert!(has(scalar, format!("vec_dot_{s}")), "scalar vec_dot_{s}");
            assert_eq!(has(avx2, format!("tile_{s}")), k.avx2_tile, "avx2 tile_{s}");
            assert_eq!(
                has(avx512, format!("tile_{s}_vnni")),
                k.vnni_tile,
                "avx512 tile_{s}_vnni"
            );
            assert_eq!(has(neon, format!("tile_{s}")), k.neon_tile, "neon tile_{s}");
            assert_eq!(
                has(avx2_packed, format!("panel_{s}")),
                k.repack,
                "avx2_packed panel_{s}"
            );
            assert_eq!(
                has(avx512_gemv, format!("panel_{s}")),
                k.repack,
                "avx512_gemv panel_{s}"
            );
            assert_eq!(
                has(neon_packed, format!("panel_{s}")),
                k.neon_panels,
                "neon_packed panel_{s}"
            );
        }
    }
}
