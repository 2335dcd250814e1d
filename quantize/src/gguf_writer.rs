//! A streaming GGUF v3 writer.
//!
//! The metadata and the whole tensor table (name, ggml-order dims, type) are declared up front,
//! because GGUF stores every tensor's offset in the header. Tensor data is then produced one
//! tensor at a time by a caller-supplied callback that writes into a [`TensorSink`]; the writer
//! checks the byte count, pads to `general.alignment`, and never holds more than one buffered
//! chunk, so a model far larger than memory can be written.
//!
//! [`GgufWriter::write_file`] writes to a temporary file in the destination directory and
//! renames it into place only on success (readers never see a half-written file), and refuses
//! to overwrite any of the given input paths (compared after canonicalisation).

use edgeact_runtime::gguf::{Array, Value, DEFAULT_ALIGNMENT, GGUF_MAGIC, MAX_DIMS};
use edgeact_runtime::quant::GgmlType;
use std::collections::HashSet;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use edgeact_runtime::files::{AtomicOutput, OutputError};

/// Why a GGUF file could not be written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The OS error is part of the message, not a `source` (so `{:#}` prints it once).
    #[error("{context}: {cause}")]
    Io { context: String, cause: io::Error },
    #[error("invalid GGUF contents: {0}")]
    Invalid(String),
    #[error("refusing to overwrite the input file {0}")]
    WouldOverwriteInput(PathBuf),
    /// The output path names something that is not a regular file (or a link to one).
    #[error("{0}")]
    BadOutput(String),
    /// The producer's error is a `source` (its own chain says why), not part of this message.
    #[error("tensor {tensor:?}")]
    Tensor {
        tensor: String,
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    #[error("tensor {tensor:?}: the producer wrote {got} bytes, the declared shape needs {expected}")]
    WrongSize { tensor: String, expected: u64, got: u64 },
}

impl From<OutputError> for WriteError {
    fn from(e: OutputError) -> WriteError {
        match e {
            OutputError::Io { context, cause } => WriteError::Io { context, cause },
            OutputError::WouldOverwriteInput(p) => WriteError::WouldOverwriteInput(p),
            OutputError::BadOutput(m) => WriteError::BadOutput(m),
        }
    }
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> WriteError {
    let context = context.into();
    move |cause| WriteError::Io { context, cause }
}

/// One declared tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorDecl {
    pub name: String,
    /// ggml order: `dims[0]` is the row length.
    pub dims: Vec<u64>,
    pub ty: GgmlType,
}

impl TensorDecl {
    /// Bytes of data for this tensor (validated when declared).
    pub fn n_bytes(&self) -> u64 {
        let rows: u64 = self.dims.iter().skip(1).product();
        self.ty.row_bytes(self.dims[0]).unwrap_or(0) * rows
    }

    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }
}

/// Where a tensor's bytes go: counts what is written so the writer can check it.
pub struct TensorSink<'a> {
    out: &'a mut dyn Write,
    written: u64,
    expected: u64,
}

impl TensorSink<'_> {
    /// Bytes the declared shape still needs.
    pub fn remaining(&self) -> u64 {
        self.expected.saturating_sub(self.written)
    }
}

impl Write for TensorSink<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // Over-long output is an error at once so a buggy producer cannot shift later tensors.
        if buf.len() as u64 > self.remaining() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "tensor data overflows its declared size ({} bytes more than the {} declared)",
                    buf.len() as u64 - self.remaining(),
                    self.expected
                ),
            ));
        }
        let n = self.out.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// What was written.
#[derive(Clone, Debug)]
pub struct WriteSummary {
    pub path: Option<PathBuf>,
    pub file_size: u64,
    pub data_offset: u64,
}

/// A GGUF file being assembled: metadata and tensor table first, data streamed by
/// [`GgufWriter::write_file`] / [`GgufWriter::write_to`].
#[derive(Clone, Debug, Default)]
pub struct GgufWriter {
    metadata: Vec<(String, Value)>,
    tensors: Vec<TensorDecl>,
    tensor_names: HashSet<String>,
}

impl GgufWriter {
    pub fn new() -> GgufWriter {
        GgufWriter::default()
    }

    /// Sets a metadata key (replacing an earlier value of the same key, keeping its position).
    /// `general.alignment` must be an unsigned integer that is a power of two.
    pub fn set(&mut self, key: impl Into<String>, value: Value) -> Result<(), WriteError> {
        let key = key.into();
        validate_value(&key, &value, 0)?;
        if key == "general.alignment" {
            let a = value
                .as_u64()
                .ok_or_else(|| WriteError::Invalid("general.alignment must be an unsigned integer".into()))?;
            if a == 0 || !a.is_power_of_two() || a > 1 << 20 {
                return Err(WriteError::Invalid(format!(
                    "general.alignment {a} is not a power of two in 1..=1048576"
                )));
            }
        }
        match self.metadata.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.metadata.push((key, value)),
        }
        Ok(())
    }

    /// Shorthand for `set(key, Value::String(..))`.
    pub fn set_str(&mut self, key: &str, value: impl Into<String>) -> Result<(), WriteError> {
        self.set(key, Value::String(value.into()))
    }

    /// Sets `general.alignment` (stored as u32, as llama.cpp writes it).
    pub fn set_alignment(&mut self, alignment: u32) -> Result<(), WriteError> {
        self.set("general.alignment", Value::U32(alignment))
    }

    pub fn metadata(&self) -> &[(String, Value)] {
        &self.metadata
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub fn tensors(&self) -> &[TensorDecl] {
        &self.tensors
    }

    /// The alignment of tensor data: `general.alignment` or 32.
    pub fn alignment(&self) -> u64 {
        self.get("general.alignment")
            .and_then(Value::as_u64)
            .unwrap_or(DEFAULT_ALIGNMENT)
    }

    /// Declares a tensor. `dims` are in ggml order (`dims[0]` = row length, which must be a
    /// whole number of `ty` blocks).
    pub fn add_tensor(&mut self, name: impl Into<String>, dims: &[u64], ty: GgmlType) -> Result<(), WriteError> {
        let name = name.into();
        if dims.is_empty() || dims.len() > MAX_DIMS {
            return Err(WriteError::Invalid(format!(
                "tensor {name:?} has {} dimensions (1..={MAX_DIMS} allowed)",
                dims.len()
            )));
        }
        let mut n: u64 = 1;
        for &d in dims {
            if d == 0 {
                return Err(WriteError::Invalid(format!("tensor {name:?} has a zero dimension")));
            }
            n = n
                .checked_mul(d)
                .filter(|&n| n <= i64::MAX as u64)
                .ok_or_else(|| WriteError::Invalid(format!("tensor {name:?}: element count overflows")))?;
        }
        let row = ty.row_bytes(dims[0]).ok_or_else(|| {
            WriteError::Invalid(format!(
                "tensor {name:?}: row length {} is not a multiple of the {ty} block size {}",
                dims[0],
                ty.block_size()
            ))
        })?;
        let rows: u64 = dims.iter().skip(1).product();
        row.checked_mul(rows)
            .ok_or_else(|| WriteError::Invalid(format!("tensor {name:?}: byte size overflows")))?;
        if !self.tensor_names.insert(name.clone()) {
            return Err(WriteError::Invalid(format!("duplicate tensor name {name:?}")));
        }
        self.tensors.push(TensorDecl {
            name,
            dims: dims.to_vec(),
            ty,
        });
        Ok(())
    }

    /// Writes the whole file to `path` atomically. `inputs` are the files the data is read
    /// from: `path` may not name any of them. `produce(index, decl, sink)` is called once per
    /// declared tensor, in declaration order, and must write exactly `decl.n_bytes()` bytes.
    pub fn write_file<F, E>(&self, path: &Path, inputs: &[&Path], produce: F) -> Result<WriteSummary, WriteError>
    where
        F: FnMut(usize, &TensorDecl, &mut TensorSink<'_>) -> Result<(), E>,
        E: Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    {
        let tmp = AtomicOutput::create(path, inputs)?;
        let mut out = BufWriter::with_capacity(1 << 20, tmp.file());
        let mut summary = self.write_to(&mut out, produce)?;
        out.flush()
            .map_err(io_err(format!("cannot write {}", tmp.dest().display())))?;
        drop(out);
        summary.path = Some(tmp.commit()?);
        Ok(summary)
    }

    /// Writes the file image to `out` (no atomicity; see [`GgufWriter::write_file`]).
    pub fn write_to<W, F, E>(&self, out: &mut W, mut produce: F) -> Result<WriteSummary, WriteError>
    where
        W: Write,
        F: FnMut(usize, &TensorDecl, &mut TensorSink<'_>) -> Result<(), E>,
        E: Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    {
        let alignment = self.alignment();
        let header = self.header_bytes(alignment);
        let mut pos = header.len() as u64;
        let io = |e| WriteError::Io {
            context: "cannot write the GGUF file".into(),
            cause: e,
        };
        out.write_all(&header).map_err(io)?;
        let data_offset = pos;
        for (i, t) in self.tensors.iter().enumerate() {
            let expected = t.n_bytes();
            let mut sink = TensorSink {
                out: &mut *out,
                written: 0,
                expected,
            };
            produce(i, t, &mut sink).map_err(|e| WriteError::Tensor {
                tensor: t.name.clone(),
                source: e.into(),
            })?;
            if sink.written != expected {
                return Err(WriteError::WrongSize {
                    tensor: t.name.clone(),
                    expected,
                    got: sink.written,
                });
            }
            pos += expected;
            let pad = align_up(pos, alignment) - pos;
            out.write_all(&vec![0u8; pad as usize]).map_err(io)?;
            pos += pad;
        }
        Ok(WriteSummary {
            path: None,
            file_size: pos,
            data_offset,
        })
    }

    /// Writes the file into memory (tests, fixtures).
    pub fn write_to_vec<F, E>(&self, produce: F) -> Result<Vec<u8>, WriteError>
    where
        F: FnMut(usize, &TensorDecl, &mut TensorSink<'_>) -> Result<(), E>,
        E: Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    {
        let mut v = Vec::new();
        self.write_to(&mut v, produce)?;
        Ok(v)
    }

    /// Magic, counts, metadata, tensor table and the padding up to the data section.
    fn header_bytes(&self, alignment: u64) -> Vec<u8> {
        let mut h = Vec::new();
        h.extend_from_slice(&GGUF_MAGIC);
        h.extend_from_slice(&3u32.to_le_bytes());
        h.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        h.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (key, value) in &self.metadata {
            put_str(&mut h, key);
            h.extend_from_slice(&(value.value_type() as u32).to_le_bytes());
            put_value(&mut h, value);
        }
        let mut offset = 0u64;
        for t in &self.tensors {
            put_str(&mut h, &t.name);
            h.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                h.extend_from_slice(&d.to_le_bytes());
            }
            h.extend_from_slice(&t.ty.id().to_le_bytes());
            h.extend_from_slice(&offset.to_le_bytes());
            offset = align_up(offset + t.n_bytes(), alignment);
        }
        let padded = align_up(h.len() as u64, alignment) as usize;
        h.resize(padded, 0);
        h
    }
}

fn align_up(x: u64, a: u64) -> u64 {
    x.div_ceil(a) * a
}

fn validate_value(key: &str, v: &Value, depth: usize) -> Result<(), WriteError> {
    // Arrays are typed (`Array`), so their elements always match; only the nesting is checked.
    if let Value::Array(items) = v {
        validate_array(key, items, depth)?;
    }
    Ok(())
}

fn validate_array(key: &str, items: &Array, depth: usize) -> Result<(), WriteError> {
    if depth >= 8 {
        return Err(WriteError::Invalid(format!(
            "metadata {key:?}: arrays nested too deeply"
        )));
    }
    if let Array::Array(inner) = items {
        for item in inner {
            validate_array(key, item, depth + 1)?;
        }
    }
    Ok(())
}

fn put_str(h: &mut Vec<u8>, s: &str) {
    h.extend_from_slice(&(s.len() as u64).to_le_bytes());
    h.extend_from_slice(s.as_bytes());
}

fn put_value(h: &mut Vec<u8>, v: &Value) {
    match v {
        Value::U8(x) => h.push(*x),
        Value::I8(x) => h.push(*x as u8),
        Value::U16(x) => h.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => h.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => h.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => h.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => h.extend_from_slice(&x.to_le_bytes()),
        Value::U64(x) => h.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => h.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => h.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => h.push(*x as u8),
        Value::String(s) => put_str(h, s),
        Value::Array(items) => {
            h.extend_from_slice(&(items.elem_type() as u32).to_le_bytes());
            h.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for item in items.iter() {
                put_value(h, &item.to_value());
            }
        }
    }
}

/// Builds a `Value::Array` of strings.
pub fn string_array<I, S>(items: I) -> Value
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    Value::Array(Array::strings(items.into_iter().map(Into::<String>::into)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgeact_runtime::gguf::{GgufFile, ValueType};

    fn sample() -> GgufWriter {
        let mut w = GgufWriter::new();
        w.set_str("general.architecture", "llama").unwrap();
        w.set("x.u8", Value::U8(7)).unwrap();
        w.set("x.i8", Value::I8(-7)).unwrap();
        w.set("x.u16", Value::U16(65535)).unwrap();
        w.set("x.i16", Value::I16(-300)).unwrap();
        w.set("x.u32", Value::U32(1 << 31)).unwrap();
        w.set("x.i32", Value::I32(-5)).unwrap();
        w.set("x.f32", Value::F32(0.5)).unwrap();
        w.set("x.bool", Value::Bool(true)).unwrap();
        w.set("x.u64", Value::U64(u64::MAX)).unwrap();
        w.set("x.i64", Value::I64(i64::MIN)).unwrap();
        w.set("x.f64", Value::F64(-1.25)).unwrap();
        w.set("x.strs", string_array(["a", "", "ü"])).unwrap();
        w.set("x.empty", Value::Array(Array::empty(ValueType::F32))).unwrap();
        w.set(
            "x.nested",
            Value::Array(Array::Array(vec![Array::I32(vec![1, 2]), Array::strings(["z"])])),
        )
        .unwrap();
        w.add_tensor("a", &[3], GgmlType::F32).unwrap();
        w.add_tensor("b", &[64, 2], GgmlType::Q8_0).unwrap();
        w.add_tensor("c", &[5, 1, 2], GgmlType::F16).unwrap();
        w
    }

    fn fill(i: usize, t: &TensorDecl, sink: &mut TensorSink<'_>) -> io::Result<()> {
        let bytes: Vec<u8> = (0..t.n_bytes()).map(|j| (j as usize * 7 + i) as u8).collect();
        // Write in two pieces to exercise streaming.
        let mid = bytes.len() / 2;
        sink.write_all(&bytes[..mid])?;
        sink.write_all(&bytes[mid..])
    }

    #[test]
    fn round_trip_through_reader() {
        for alignment in [None, Some(64u32), Some(1)] {
            let mut w = sample();
            if let Some(a) = alignment {
                w.set_alignment(a).unwrap();
            }
            let bytes = w.write_to_vec(fill).unwrap();
            let f = GgufFile::from_bytes(bytes).unwrap();
            assert_eq!(f.header().version, 3);
            assert_eq!(f.header().alignment, alignment.map_or(32, u64::from));
            assert_eq!(f.metadata(), w.metadata());
            assert_eq!(f.tensors().len(), 3);
            for (i, d) in w.tensors().iter().enumerate() {
                let v = f.tensor(&d.name).unwrap();
                assert_eq!(v.info.dims, d.dims);
                assert_eq!(v.info.ty, d.ty);
                assert_eq!(v.info.offset % f.header().alignment, 0);
                let expect: Vec<u8> = (0..d.n_bytes()).map(|j| (j as usize * 7 + i) as u8).collect();
                assert_eq!(v.data, &expect[..]);
            }
            assert_eq!(f.file_size() % f.header().alignment, 0);
        }
    }

    #[test]
    fn wrong_sizes_and_bad_declarations_are_errors() {
        let w = sample();
        let short = w.write_to_vec(|_, _, s: &mut TensorSink<'_>| s.write_all(&[1, 2]));
        assert!(matches!(short, Err(WriteError::WrongSize { .. })), "{short:?}");
        let long =
            w.write_to_vec(|_, t: &TensorDecl, s: &mut TensorSink<'_>| s.write_all(&vec![0; t.n_bytes() as usize + 1]));
        assert!(matches!(long, Err(WriteError::Tensor { .. })), "{long:?}");

        let mut w = GgufWriter::new();
        assert!(w.add_tensor("q", &[33], GgmlType::Q4_0).is_err());
        assert!(w.add_tensor("z", &[0, 4], GgmlType::F32).is_err());
        assert!(w.add_tensor("d", &[1, 1, 1, 1, 1], GgmlType::F32).is_err());
        assert!(w.add_tensor("o", &[u64::MAX / 2, 4], GgmlType::F32).is_err());
        w.add_tensor("t", &[4], GgmlType::F32).unwrap();
        assert!(w.add_tensor("t", &[4], GgmlType::F32).is_err());
        assert!(w.set_alignment(48).is_err());
        // A mistyped array cannot even be built.
        assert!(Array::from_values(ValueType::U8, [Value::String("x".into())]).is_err());
        let mut deep = Array::I32(vec![1]);
        for _ in 0..9 {
            deep = Array::Array(vec![deep]);
        }
        assert!(w.set("m", Value::Array(deep)).is_err());
    }

    #[test]
    fn write_file_is_atomic_and_protects_inputs() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.gguf");
        std::fs::write(&input, b"original").unwrap();
        let w = sample();
        // Writing over the input (also through a relative `./` path) is refused.
        let again = dir.path().join(".").join("in.gguf");
        let err = w.write_file(&again, &[&input], fill).unwrap_err();
        assert!(matches!(err, WriteError::WouldOverwriteInput(_)), "{err}");
        assert_eq!(std::fs::read(&input).unwrap(), b"original");

        // A failing producer leaves no output and no temporary file behind.
        let out = dir.path().join("out.gguf");
        let err = w
            .write_file(&out, &[&input], |i, t: &TensorDecl, s: &mut TensorSink<'_>| {
                if i == 1 {
                    Err(io::Error::other("boom"))
                } else {
                    fill(i, t, s)
                }
            })
            .unwrap_err();
        // The tensor in the message, the producer's error as its source.
        let why = std::error::Error::source(&err)
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.to_string().contains("\"b\"") && why.contains("boom"),
            "{err}: {why}"
        );
        assert!(!out.exists());
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "only the input should remain");

        let s = w.write_file(&out, &[&input], fill).unwrap();
        assert_eq!(s.file_size, std::fs::metadata(&out).unwrap().len());
        let f = GgufFile::open(&out).unwrap();
        assert_eq!(f.tensors().len(), 3);
    }
}
