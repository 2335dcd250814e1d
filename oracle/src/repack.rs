//! llama.cpp's weight repacking without its AMX buffer type.
//!
//! llama.cpp repacks weights into "extra buffer types" at load. On a CPU with AMX the first of
//! them is ggml's AMX matmul, which crashed (SIGSEGV in `ggml_backend_amx_mul_mat`) in every
//! prompt batch on an Intel Xeon VM; the second, `CPU_REPACK`, holds the interleaved
//! AVX2/AVX-512 kernels llama.cpp uses on every other x86 CPU. Turning all extra buffer types
//! off would leave llama.cpp on its slow in-place path, an unfair reference, so on AMX CPUs the
//! oracle turns them off and places every weight `CPU_REPACK` can take there by name
//! (`tensor_buft_overrides`), as llama.cpp's own selection would without the AMX entry.

use super::{cstring, err, sys, Result};
use std::ffi::{CStr, CString};
use std::path::Path;

/// Whether the CPU has AMX-INT8 (CPUID leaf 7, EDX bit 25).
pub(crate) fn cpu_has_amx() -> bool {
    static AMX: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AMX.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            // SAFETY: CPUID leaf 7 exists on every x86_64 CPU that llama.cpp's build targets
            // (it reads it itself); on older ones the leaf reads as zeros.
            #[allow(unused_unsafe)]
            let amx = unsafe { std::arch::x86_64::__cpuid_count(7, 0) }.edx & (1 << 25) != 0;
            if amx {
                eprintln!(
                    "edgeact-oracle: AMX CPU: llama.cpp's AMX buffer type is left out (its matmul crashes), CPU_REPACK kept"
                );
            }
            amx
        }
        #[cfg(not(target_arch = "x86_64"))]
        false
    })
}

/// Tensor types `CPU_REPACK` repacks on an x86 CPU with AVX-512 (AMX CPUs all have it):
/// ggml's `ggml_repack_get_optimal_repack_type`. Any other type placed there aborts the load.
const REPACKED_ON_X86: [sys::ggml_type; 5] = [
    sys::GGML_TYPE_Q4_0,
    sys::GGML_TYPE_Q4_K,
    sys::GGML_TYPE_Q2_K,
    sys::GGML_TYPE_IQ4_NL,
    sys::GGML_TYPE_MXFP4,
];

/// The weights multiplied by a matrix product (never `token_embd`, read by row lookups).
const MATMUL_WEIGHTS: [&str; 7] = [
    "attn_q.weight",
    "attn_k.weight",
    "attn_v.weight",
    "attn_output.weight",
    "ffn_gate.weight",
    "ffn_up.weight",
    "ffn_down.weight",
];

/// A null-terminated `tensor_buft_overrides` array and the strings it points into; it must
/// outlive the `llama_model_load_from_file` call it is passed to.
pub(crate) struct Overrides {
    _patterns: Vec<CString>,
    entries: Vec<sys::llama_model_tensor_buft_override>,
}

impl Overrides {
    pub(crate) fn as_ptr(&self) -> *const sys::llama_model_tensor_buft_override {
        self.entries.as_ptr()
    }
}

/// The `CPU_REPACK` overrides for the model at `path`, or `None` when llama.cpp's CPU backend
/// has no such buffer type or the model has no tensor it would repack.
pub(crate) fn overrides(path: &Path) -> Result<Option<Overrides>> {
    let Some(buft) = cpu_repack_buffer_type() else {
        return Ok(None);
    };
    let names = repackable_tensors(path)?;
    let patterns = patterns(&names);
    if patterns.is_empty() {
        return Ok(None);
    }
    let patterns = patterns.iter().map(|p| cstring(p)).collect::<Result<Vec<_>>>()?;
    let mut entries: Vec<_> = patterns
        .iter()
        .map(|p| sys::llama_model_tensor_buft_override {
            pattern: p.as_ptr(),
            buft,
        })
        .collect();
    entries.push(sys::llama_model_tensor_buft_override {
        pattern: std::ptr::null(),
        buft: std::ptr::null_mut(),
    });
    Ok(Some(Overrides {
        _patterns: patterns,
        entries,
    }))
}

/// The CPU device's extra buffer type named `CPU_REPACK`.
fn cpu_repack_buffer_type() -> Option<sys::ggml_backend_buffer_type_t> {
    // SAFETY: registry lookups on the initialised backend; the proc address, when present, is
    // the function of the type ggml's header names for it; the list it returns is static and
    // null-terminated, and buffer type names are static NUL-terminated strings.
    unsafe {
        let dev = sys::ggml_backend_dev_by_type(sys::GGML_BACKEND_DEVICE_TYPE_CPU);
        if dev.is_null() {
            return None;
        }
        let reg = sys::ggml_backend_dev_backend_reg(dev);
        let get = sys::ggml_backend_reg_get_proc_address(reg, c"ggml_backend_dev_get_extra_bufts".as_ptr());
        if get.is_null() {
            return None;
        }
        let get: unsafe extern "C" fn(sys::ggml_backend_dev_t) -> *mut sys::ggml_backend_buffer_type_t =
            std::mem::transmute(get);
        let mut buft = get(dev);
        while !buft.is_null() && !(*buft).is_null() {
            if CStr::from_ptr(sys::ggml_backend_buft_name(*buft)).to_bytes() == b"CPU_REPACK" {
                return Some(*buft);
            }
            buft = buft.add(1);
        }
        None
    }
}

/// Names of the matmul weights in the GGUF at `path` that `CPU_REPACK` takes: a repacked
/// type, two dimensions, rows a multiple of 8 (the interleave).
fn repackable_tensors(path: &Path) -> Result<Vec<String>> {
    let p = cstring(
        path.to_str()
            .ok_or_else(|| super::OracleError("non-UTF-8 path".into()))?,
    )?;
    let mut meta: *mut sys::ggml_context = std::ptr::null_mut();
    let params = sys::gguf_init_params {
        no_alloc: true,
        ctx: &mut meta,
    };
    // SAFETY: NUL-terminated path; with no_alloc the context holds tensor metadata only.
    let gguf = unsafe { sys::gguf_init_from_file(p.as_ptr(), params) };
    if gguf.is_null() || meta.is_null() {
        // SAFETY: whichever of the two was made is freed once and not used again.
        unsafe {
            if !gguf.is_null() {
                sys::gguf_free(gguf);
            }
            if !meta.is_null() {
                sys::ggml_free(meta);
            }
        }
        return err(format!("ggml could not read {}", path.display()));
    }
    let mut names = Vec::new();
    // SAFETY: the gguf and ggml contexts are live until freed below; tensor ids are in range,
    // names are NUL-terminated and every named tensor has metadata in `meta`.
    unsafe {
        for id in 0..sys::gguf_get_n_tensors(gguf) {
            let name_ptr = sys::gguf_get_tensor_name(gguf, id);
            let name = CStr::from_ptr(name_ptr).to_string_lossy().into_owned();
            let is_matmul = name == "output.weight"
                || (name.starts_with("blk.") && MATMUL_WEIGHTS.iter().any(|w| name.ends_with(w)));
            if !is_matmul || !REPACKED_ON_X86.contains(&sys::gguf_get_tensor_type(gguf, id)) {
                continue;
            }
            let tensor = sys::ggml_get_tensor(meta, name_ptr);
            if !tensor.is_null() && sys::ggml_n_dims(tensor) == 2 && (*tensor).ne[1] % 8 == 0 {
                names.push(name);
            }
        }
        sys::gguf_free(gguf);
        sys::ggml_free(meta);
    }
    Ok(names)
}

/// Anchored regexes naming exactly `names`, one per tensor kind (`blk.(?:0|3|7).ffn_down.weight`)
/// so that a 7B model needs a handful of patterns, not one per tensor (llama.cpp compiles each
/// pattern once per tensor it checks).
fn patterns(names: &[String]) -> Vec<String> {
    let mut kinds: Vec<(String, Vec<String>)> = Vec::new();
    let mut exact = Vec::new();
    for name in names {
        let layered = name
            .strip_prefix("blk.")
            .and_then(|rest| rest.split_once('.'))
            .filter(|(layer, _)| layer.bytes().all(|b| b.is_ascii_digit()));
        match layered {
            Some((layer, kind)) => match kinds.iter_mut().find(|(k, _)| k == kind) {
                Some((_, layers)) => layers.push(layer.to_string()),
                None => kinds.push((kind.to_string(), vec![layer.to_string()])),
            },
            None => exact.push(format!("^{}$", escape(name))),
        }
    }
    kinds
        .into_iter()
        .map(|(kind, layers)| format!("^blk\\.(?:{})\\.{}$", layers.join("|"), escape(&kind)))
        .chain(exact)
        .collect()
}

/// `name` as a regex matching itself (tensor names hold letters, digits, `_` and `.`; anything
/// else is escaped too).
fn escape(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 8);
    for c in name.chars() {
        if !c.is_ascii_alphanumeric() && c != '_' {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_group_layers_by_kind_and_escape_the_rest() {
        let names: Vec<String> = [
            "blk.0.attn_q.weight",
            "blk.3.ffn_down.weight",
            "blk.12.attn_q.weight",
            "output.weight",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            patterns(&names),
            [
                r"^blk\.(?:0|12)\.attn_q\.weight$",
                r"^blk\.(?:3)\.ffn_down\.weight$",
                r"^output\.weight$",
            ]
        );
    }
}
