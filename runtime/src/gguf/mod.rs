//! GGUF v2/v3 files: a validated header over a read-only memory map, with zero-copy tensor
//! views. Spec: `docs/gguf.md` in ggml-org/ggml.

mod reader;
mod value;

pub use reader::{GgufHeader, TensorInfo, DEFAULT_ALIGNMENT, GGUF_MAGIC, MAX_DIMS};
pub use value::{Array, ArrayIter, Item, StringArray, Value, ValueType};

use crate::quant::GgmlType;
use memmap2::Mmap;
use std::fs::File;
use std::path::{Path, PathBuf};

/// Why a GGUF file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    /// The OS error is part of the message, not a `source` (so `{:#}` prints it once).
    #[error("cannot read {path}: {cause}")]
    Io { path: PathBuf, cause: std::io::Error },
    #[error("not a GGUF file (magic bytes {0:02x?}, expected \"GGUF\")")]
    BadMagic([u8; 4]),
    #[error("unsupported: {0}")]
    Unsupported(String),
    #[error("file truncated: {what} needs {need} bytes, the file has {have}")]
    Truncated { what: String, need: u64, have: u64 },
    #[error("tensor {tensor:?} has unknown ggml type id {id}")]
    UnknownType { tensor: String, id: u32 },
    #[error("invalid GGUF: {0}")]
    Invalid(String),
    #[error("metadata key {0:?} is missing")]
    MissingKey(String),
    #[error("metadata key {key:?} should be {expected}, found {found}")]
    WrongType {
        key: String,
        expected: &'static str,
        found: String,
    },
    #[error("tensor {0:?} is not in the file")]
    MissingTensor(String),
    #[error("{path} is {kind}, not a regular file; give the path of a model file")]
    NotAFile { path: PathBuf, kind: &'static str },
}

/// Opens `path` for reading only if it is a regular file (or a symlink to one); see
/// [`crate::files::open_regular`].
pub fn open_regular_file(path: &Path) -> Result<File, GgufError> {
    crate::files::open_regular(path).map_err(|source| {
        match source
            .get_ref()
            .and_then(|e| e.downcast_ref::<crate::files::NotRegularFile>())
        {
            Some(not_regular) => GgufError::NotAFile {
                path: path.to_path_buf(),
                kind: not_regular.kind,
            },
            None => GgufError::Io {
                path: path.to_path_buf(),
                cause: source,
            },
        }
    })
}

enum Storage {
    Mapped(Mmap),
    Owned(Vec<u8>),
}

/// An open GGUF file: the validated header plus the file bytes (mapped, never copied).
pub struct GgufFile {
    storage: Storage,
    header: GgufHeader,
    path: Option<PathBuf>,
}

/// A tensor's table entry and its bytes inside the mapping.
#[derive(Clone, Copy, Debug)]
pub struct TensorView<'a> {
    pub info: &'a TensorInfo,
    pub data: &'a [u8],
}

impl TensorView<'_> {
    pub fn ty(&self) -> GgmlType {
        self.info.ty
    }
    pub fn name(&self) -> &str {
        &self.info.name
    }
}

impl GgufFile {
    /// Maps `path` read-only and validates its header and tensor table.
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile, GgufError> {
        let path = path.as_ref();
        let io = |cause| GgufError::Io {
            path: path.to_path_buf(),
            cause,
        };
        let file = open_regular_file(path)?;
        // SAFETY: the mapping is read-only. Like every mmap-based loader (llama.cpp included) we
        // rely on the file not being truncated or rewritten in place while it is mapped; our own
        // writers only ever replace files by rename, which leaves this mapping intact.
        let mmap = unsafe { Mmap::map(&file) }.map_err(io)?;
        let header = GgufHeader::parse(&mmap)?;
        Ok(GgufFile {
            storage: Storage::Mapped(mmap),
            header,
            path: Some(path.to_path_buf()),
        })
    }

    /// Validates an in-memory file image (tests, fuzzing).
    pub fn from_bytes(bytes: Vec<u8>) -> Result<GgufFile, GgufError> {
        let header = GgufHeader::parse(&bytes)?;
        Ok(GgufFile {
            storage: Storage::Owned(bytes),
            header,
            path: None,
        })
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    pub fn header(&self) -> &GgufHeader {
        &self.header
    }

    /// The whole file image.
    pub fn bytes(&self) -> &[u8] {
        match &self.storage {
            Storage::Mapped(m) => m,
            Storage::Owned(v) => v,
        }
    }

    /// Tells the kernel this process no longer needs `range` of the mapping (a tensor that was
    /// copied elsewhere, e.g. repacked), so its pages stop counting towards our resident
    /// memory. Reading the range again still works: the pages fault back in from the file.
    /// Only whole pages inside the range are released; a no-op for in-memory images.
    pub fn release(&self, range: std::ops::Range<usize>) {
        #[cfg(unix)]
        if let Storage::Mapped(m) = &self.storage {
            const PAGE: usize = 4096;
            let start = range.start.next_multiple_of(PAGE);
            let end = range.end.min(m.len()) / PAGE * PAGE;
            if start < end {
                // SAFETY: the mapping is read-only and shared, so MADV_DONTNEED only drops this
                // process's page-table entries; a later read faults the same file bytes back
                // in, so no slice borrowed from the mapping ever sees different contents.
                // Failure only means the pages stay resident.
                let _ = unsafe { m.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, end - start) };
            }
        }
        #[cfg(not(unix))]
        let _ = range;
    }

    pub fn file_size(&self) -> u64 {
        self.bytes().len() as u64
    }

    pub fn metadata(&self) -> &[(String, Value)] {
        &self.header.metadata
    }

    pub fn tensors(&self) -> &[TensorInfo] {
        &self.header.tensors
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.header.get(key)
    }

    pub fn get_u64(&self, key: &str) -> Result<Option<u64>, GgufError> {
        self.typed(key, "an unsigned integer", Value::as_u64)
    }

    pub fn get_f32(&self, key: &str) -> Result<Option<f32>, GgufError> {
        self.typed(key, "a number", |v| v.as_f64().map(|f| f as f32))
    }

    pub fn get_bool(&self, key: &str) -> Result<Option<bool>, GgufError> {
        self.typed(key, "a boolean", Value::as_bool)
    }

    pub fn get_str(&self, key: &str) -> Result<Option<&str>, GgufError> {
        self.typed(key, "a string", Value::as_str)
    }

    pub fn get_array(&self, key: &str) -> Result<Option<&Array>, GgufError> {
        self.typed(key, "an array", Value::as_array)
    }

    /// Like [`GgufFile::get_u64`] but the key must exist.
    pub fn require_u64(&self, key: &str) -> Result<u64, GgufError> {
        self.get_u64(key)?.ok_or_else(|| GgufError::MissingKey(key.into()))
    }

    pub fn require_str(&self, key: &str) -> Result<&str, GgufError> {
        self.get_str(key)?.ok_or_else(|| GgufError::MissingKey(key.into()))
    }

    fn typed<'a, T>(
        &'a self,
        key: &str,
        expected: &'static str,
        conv: impl Fn(&'a Value) -> Option<T>,
    ) -> Result<Option<T>, GgufError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => conv(v).map(Some).ok_or_else(|| GgufError::WrongType {
                key: key.into(),
                expected,
                found: format!("{:?}", v.value_type()),
            }),
        }
    }

    /// The bytes of a tensor listed in this file's table.
    pub fn tensor_data(&self, info: &TensorInfo) -> &[u8] {
        // Bounds were validated against the file length when the header was parsed.
        let start = (self.header.data_offset + info.offset) as usize;
        &self.bytes()[start..start + info.n_bytes() as usize]
    }

    pub fn tensor(&self, name: &str) -> Result<TensorView<'_>, GgufError> {
        let info = self
            .header
            .tensor_info(name)
            .ok_or_else(|| GgufError::MissingTensor(name.into()))?;
        Ok(TensorView {
            info,
            data: self.tensor_data(info),
        })
    }

    pub fn try_tensor(&self, name: &str) -> Option<TensorView<'_>> {
        self.tensor(name).ok()
    }
}
