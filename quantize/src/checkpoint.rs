//! Hugging Face checkpoints as one flat table of memory-mapped tensors.
//!
//! A [`Checkpoint`] is opened from a model directory (safetensors, single or sharded via
//! `model.safetensors.index.json`; else PyTorch `.bin`, single or sharded via
//! `pytorch_model.bin.index.json`). Every tensor is a contiguous, little-endian byte range of a
//! read-only mapping, so tensors are converted to f32 a few rows at a time and the model is never
//! copied into memory.

use crate::{pytorch, safetensors};
use edgeact_runtime::quant::{bf16_to_f32, f16_to_f32};
use memmap2::Mmap;
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

/// Why a checkpoint could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The OS error is part of the message, not a `source` (so `{:#}` prints it once).
    #[error("cannot read {path}: {cause}")]
    Io { path: PathBuf, cause: std::io::Error },
    #[error("{path}: {msg}")]
    Invalid { path: PathBuf, msg: String },
    #[error("no checkpoint in {0}: expected model.safetensors, model.safetensors.index.json, pytorch_model.bin or pytorch_model.bin.index.json")]
    NotFound(PathBuf),
    #[error("tensor {name:?} has dtype {dtype}; only F32, F16 and BF16 can be converted")]
    UnsupportedDtype { name: String, dtype: String },
    #[error("tensor {0:?} is not in the checkpoint")]
    MissingTensor(String),
    #[error("tensor {name:?} appears in both {first} and {second}")]
    Duplicate {
        name: String,
        first: PathBuf,
        second: PathBuf,
    },
}

impl CheckpointError {
    pub(crate) fn invalid(path: &Path, msg: impl Into<String>) -> CheckpointError {
        CheckpointError::Invalid {
            path: path.to_path_buf(),
            msg: msg.into(),
        }
    }
}

/// Element type of a checkpoint tensor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DType {
    F32,
    F16,
    BF16,
    /// Any other dtype (kept so unrelated tensors, e.g. integer buffers, do not stop the load;
    /// converting one is an error).
    Other {
        name: String,
        size: usize,
    },
}

impl DType {
    pub fn size(&self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 | DType::BF16 => 2,
            DType::Other { size, .. } => *size,
        }
    }

    pub fn name(&self) -> &str {
        match self {
            DType::F32 => "F32",
            DType::F16 => "F16",
            DType::BF16 => "BF16",
            DType::Other { name, .. } => name,
        }
    }
}

/// One tensor: its shape in PyTorch (row-major) order and where its bytes are.
#[derive(Clone, Debug)]
pub struct TensorMeta {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub(crate) file: usize,
    pub(crate) start: usize,
    pub(crate) len: usize,
}

impl TensorMeta {
    /// Where the tensor's bytes lie in its checkpoint file.
    pub fn byte_range(&self) -> std::ops::Range<usize> {
        self.start..self.start + self.len
    }

    pub fn n_elements(&self) -> usize {
        self.shape.iter().product()
    }

    /// Length of the last dimension (1 for a scalar).
    pub fn row_len(&self) -> usize {
        self.shape.last().copied().unwrap_or(1)
    }

    pub fn n_rows(&self) -> usize {
        self.n_elements() / self.row_len().max(1)
    }
}

/// A checkpoint file mapped read-only.
pub(crate) struct MappedFile {
    pub(crate) path: PathBuf,
    pub(crate) map: Mmap,
}

impl MappedFile {
    /// Drops the resident pages of `start..start + len` (best effort), so that a model many
    /// times larger than memory can stream through with a small resident set.
    pub(crate) fn release(&self, start: usize, len: usize) {
        if len == 0 || start.checked_add(len).is_none_or(|end| end > self.map.len()) {
            return;
        }
        // SAFETY: MADV_DONTNEED on a read-only, file-backed shared mapping only discards the
        // resident copies of the pages; later reads fault them back in from the file with the
        // same contents, so no reference into the mapping observes a change.
        let _ = unsafe {
            self.map
                .unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, len)
        };
    }
}

pub(crate) fn map_file(path: &Path) -> Result<MappedFile, CheckpointError> {
    let io = |source| CheckpointError::Io {
        path: path.to_path_buf(),
        cause: source,
    };
    // A FIFO would block the open and a device cannot be mapped sensibly: regular files only.
    let file = edgeact_runtime::files::open_regular(path).map_err(io)?;
    // SAFETY: the mapping is read-only and only read through bounds-checked slices; as with any
    // mmap loader we rely on the checkpoint not being truncated while we convert it.
    let map = unsafe { Mmap::map(&file) }.map_err(io)?;
    Ok(MappedFile {
        path: path.to_path_buf(),
        map,
    })
}

/// The tensors of one checkpoint (all shards).
pub struct Checkpoint {
    files: Vec<MappedFile>,
    tensors: Vec<TensorMeta>,
    index: HashMap<String, usize>,
}

impl Checkpoint {
    /// Opens the checkpoint in a Hugging Face model directory, preferring safetensors.
    pub fn open_dir(dir: &Path) -> Result<Checkpoint, CheckpointError> {
        let st_index = dir.join("model.safetensors.index.json");
        let st_single = dir.join("model.safetensors");
        let pt_index = dir.join("pytorch_model.bin.index.json");
        let pt_single = dir.join("pytorch_model.bin");
        if st_index.is_file() {
            Checkpoint::open_files(&shard_files(&st_index)?)
        } else if st_single.is_file() {
            Checkpoint::open_files(&[st_single])
        } else if pt_index.is_file() {
            Checkpoint::open_files(&shard_files(&pt_index)?)
        } else if pt_single.is_file() {
            Checkpoint::open_files(&[pt_single])
        } else {
            // Any lone *.safetensors file (some repos name it differently).
            let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
                .map_err(|source| CheckpointError::Io {
                    path: dir.to_path_buf(),
                    cause: source,
                })?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
                .collect();
            found.sort();
            if found.is_empty() {
                return Err(CheckpointError::NotFound(dir.to_path_buf()));
            }
            Checkpoint::open_files(&found)
        }
    }

    /// Opens checkpoint files (`.safetensors`, or PyTorch zip `.bin`, told apart by content).
    pub fn open_files(paths: &[PathBuf]) -> Result<Checkpoint, CheckpointError> {
        let mut ck = Checkpoint {
            files: Vec::new(),
            tensors: Vec::new(),
            index: HashMap::new(),
        };
        for path in paths {
            let mapped = map_file(path)?;
            let file_idx = ck.files.len();
            let tensors = if mapped.map.starts_with(b"PK\x03\x04") {
                pytorch::read_tensors(&mapped, file_idx)?
            } else {
                safetensors::read_tensors(&mapped, file_idx)?
            };
            ck.files.push(mapped);
            for t in tensors {
                if let Some(&prev) = ck.index.get(&t.name) {
                    return Err(CheckpointError::Duplicate {
                        name: t.name,
                        first: ck.files[ck.tensors[prev].file].path.clone(),
                        second: path.clone(),
                    });
                }
                ck.index.insert(t.name.clone(), ck.tensors.len());
                ck.tensors.push(t);
            }
        }
        Ok(ck)
    }

    pub fn tensors(&self) -> &[TensorMeta] {
        &self.tensors
    }

    pub fn get(&self, name: &str) -> Option<&TensorMeta> {
        self.index.get(name).map(|&i| &self.tensors[i])
    }

    pub fn require(&self, name: &str) -> Result<&TensorMeta, CheckpointError> {
        self.get(name)
            .ok_or_else(|| CheckpointError::MissingTensor(name.into()))
    }

    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        self.files.iter().map(|f| f.path.as_path())
    }

    /// Total bytes of tensor data.
    pub fn data_bytes(&self) -> u64 {
        self.tensors.iter().map(|t| t.len as u64).sum()
    }

    /// The raw little-endian bytes of a tensor.
    pub fn bytes(&self, t: &TensorMeta) -> &[u8] {
        // Ranges were checked against the mapping when the file was opened.
        &self.files[t.file].map[t.start..t.start + t.len]
    }

    /// Converts rows `first..first + out.len() / row_len` (rows = last dimension) to f32.
    pub fn read_rows_f32(&self, t: &TensorMeta, first_row: usize, out: &mut [f32]) -> Result<(), CheckpointError> {
        let row = t.row_len();
        let n_rows = out.len() / row.max(1);
        if !out.len().is_multiple_of(row.max(1)) || first_row + n_rows > t.n_rows() {
            return Err(CheckpointError::invalid(
                &self.files[t.file].path,
                format!("tensor {:?}: row range {first_row}+{n_rows} out of bounds", t.name),
            ));
        }
        let es = t.dtype.size();
        let bytes = &self.bytes(t)[first_row * row * es..(first_row + n_rows) * row * es];
        convert_to_f32(&t.dtype, &t.name, bytes, out)
    }
}

/// Little-endian F32/F16/BF16 bytes to f32.
pub fn convert_to_f32(dtype: &DType, name: &str, bytes: &[u8], out: &mut [f32]) -> Result<(), CheckpointError> {
    match dtype {
        DType::F32 => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        DType::F16 => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = f16_to_f32(half::f16::from_bits(u16::from_le_bytes([b[0], b[1]])));
            }
        }
        DType::BF16 => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = bf16_to_f32(half::bf16::from_bits(u16::from_le_bytes([b[0], b[1]])));
            }
        }
        DType::Other { name: dt, .. } => {
            return Err(CheckpointError::UnsupportedDtype {
                name: name.into(),
                dtype: dt.clone(),
            })
        }
    }
    Ok(())
}

/// The shard files named by a `*.index.json` (`weight_map` values), in sorted order.
fn shard_files(index: &Path) -> Result<Vec<PathBuf>, CheckpointError> {
    // A regular file (a FIFO would block), of a bounded size: a 70B model's index is ~70 KB.
    let bytes = edgeact_runtime::files::read_regular(index, 64 << 20).map_err(|source| CheckpointError::Io {
        path: index.to_path_buf(),
        cause: source,
    })?;
    let json: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| CheckpointError::invalid(index, format!("bad JSON: {e}")))?;
    let map = json
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| CheckpointError::invalid(index, "no \"weight_map\" object"))?;
    let dir = index.parent().unwrap_or(Path::new("."));
    let mut files = BTreeSet::new();
    for (name, file) in map {
        let file = file
            .as_str()
            .ok_or_else(|| CheckpointError::invalid(index, format!("weight_map[{name:?}] is not a string")))?;
        // Shards must be plain file names next to the index: no path tricks.
        if file.is_empty() || file.contains('/') || file.contains('\\') || file == "." || file == ".." {
            return Err(CheckpointError::invalid(index, format!("bad shard file name {file:?}")));
        }
        files.insert(dir.join(file));
    }
    if files.is_empty() {
        return Err(CheckpointError::invalid(index, "weight_map is empty"));
    }
    Ok(files.into_iter().collect())
}

impl Checkpoint {
    /// Drops the resident pages of a converted tensor so that the resident set stays small
    /// while a model many times larger than memory streams through (best effort).
    pub fn release(&self, t: &TensorMeta) {
        self.files[t.file].release(t.start, t.len);
    }
}
