//! Which instruction-set path the kernels run ([`Backend`], chosen once per process by
//! [`backend`]) and why a kernel call was refused ([`KernelError`]). A leaf: it imports no
//! kernel, so every kernel and the matmul runner can import it.

use super::table::supported_names;
use crate::quant::GgmlType;
use std::sync::OnceLock;

/// Why a kernel call was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KernelError {
    #[error("weight type {0} has no CPU matmul kernel (supported: {list})", list = supported_names())]
    UnsupportedType(GgmlType),
    #[error("{ty} matrix: {cols} columns is not a multiple of the block size {block}")]
    Columns { ty: GgmlType, cols: usize, block: usize },
    #[error("{ty} matrix {rows}x{cols} needs {expected} bytes, got {got}")]
    DataSize {
        ty: GgmlType,
        rows: usize,
        cols: usize,
        expected: usize,
        got: usize,
    },
    #[error("{what} has length {got}, expected {expected}")]
    Length {
        what: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("a repacked matrix must be the matrix it was made from (got {ty} {rows}x{cols})")]
    Packed { ty: GgmlType, rows: usize, cols: usize },
    #[error("stored panel form: {0}")]
    Stored(String),
    #[error("kernel path {0} is not supported by this CPU or build")]
    Unavailable(Backend),
    #[error("EDGEACT_KERNELS={0:?} is not one of scalar, avx2, avx512, neon")]
    BadBackendName(String),
    #[error("could not allocate {bytes} bytes for repacked weights: {reason}")]
    Allocation { bytes: usize, reason: String },
}

/// An instruction-set path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// Portable Rust; the specification.
    Scalar,
    /// AVX2 + FMA + F16C.
    Avx2,
    /// AVX-512 F/BW/VL (+ VNNI where present) on top of AVX2.
    Avx512,
    /// aarch64 NEON (+ dotprod where present).
    Neon,
}

// `Backend::is_available` indexes its table by discriminant.
const _: () = {
    let mut i = 0;
    while i < Backend::ALL.len() {
        assert!(
            Backend::ALL[i] as usize == i,
            "Backend::ALL must list the variants in order"
        );
        i += 1;
    }
};

impl Backend {
    pub const ALL: [Backend; 4] = [Backend::Scalar, Backend::Avx2, Backend::Avx512, Backend::Neon];

    pub fn name(self) -> &'static str {
        match self {
            Backend::Scalar => "scalar",
            Backend::Avx2 => "avx2",
            Backend::Avx512 => "avx512",
            Backend::Neon => "neon",
        }
    }

    /// Parses an `EDGEACT_KERNELS` value.
    pub fn from_name(s: &str) -> Result<Backend, KernelError> {
        Backend::ALL
            .into_iter()
            .find(|b| b.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| KernelError::BadBackendName(s.to_string()))
    }

    /// Whether this CPU (and this build's target) can run the path. Detected once: the
    /// element-wise kernels ask on every call (attention asks per cached position).
    pub fn is_available(self) -> bool {
        static AVAILABLE: OnceLock<[bool; Backend::ALL.len()]> = OnceLock::new();
        // `ALL` lists the variants in declaration order, so the discriminant is the index.
        AVAILABLE.get_or_init(|| Backend::ALL.map(Backend::detect_available))[self as usize]
    }

    fn detect_available(self) -> bool {
        match self {
            Backend::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Backend::Avx2 => {
                is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c")
            }
            #[cfg(target_arch = "x86_64")]
            Backend::Avx512 => {
                Backend::Avx2.detect_available()
                    && is_x86_feature_detected!("avx512f")
                    && is_x86_feature_detected!("avx512bw")
                    && is_x86_feature_detected!("avx512vl")
            }
            #[cfg(target_arch = "aarch64")]
            Backend::Neon => std::arch::is_aarch64_feature_detected!("neon"),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// The best path this CPU supports.
    pub fn detect() -> Backend {
        [Backend::Avx512, Backend::Avx2, Backend::Neon]
            .into_iter()
            .find(|b| b.is_available())
            .unwrap_or(Backend::Scalar)
    }

    /// `EDGEACT_KERNELS` if set (an error if it names an unknown or unavailable path),
    /// otherwise [`detect`](Self::detect).
    pub fn from_env() -> Result<Backend, KernelError> {
        match std::env::var("EDGEACT_KERNELS") {
            Ok(v) if !v.trim().is_empty() => {
                let b = Backend::from_name(&v)?;
                if b.is_available() {
                    Ok(b)
                } else {
                    Err(KernelError::Unavailable(b))
                }
            }
            _ => Ok(Backend::detect()),
        }
    }

    /// Tokens per tile in the prefill kernel.
    pub(crate) fn tile_tokens(self) -> usize {
        match self {
            Backend::Scalar => 1,
            _ => 4,
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Every path this CPU can run (scalar first).
pub fn available_backends() -> Vec<Backend> {
    Backend::ALL.into_iter().filter(|b| b.is_available()).collect()
}

/// The process-wide path, chosen once: `EDGEACT_KERNELS` or the best available. A bad
/// `EDGEACT_KERNELS` value is reported on stderr once and the detected path is used.
pub fn backend() -> Backend {
    static CHOSEN: OnceLock<Backend> = OnceLock::new();
    *CHOSEN.get_or_init(|| match Backend::from_env() {
        Ok(b) => b,
        Err(e) => {
            let b = Backend::detect();
            eprintln!("edgeact: {e}; using {b}");
            b
        }
    })
}
