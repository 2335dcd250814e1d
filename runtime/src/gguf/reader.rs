//! Parsing and validating a GGUF file held in memory (normally a read-only mmap).
//!
//! Every count, length and offset read from the file is checked against the bytes that are
//! actually there before it is used, so a truncated or hostile file yields a [`GgufError`]
//! naming what is wrong instead of a panic, an abort or an out-of-range read.

use super::value::{Value, ValueType};
use super::GgufError;
use crate::quant::GgmlType;
use std::collections::HashMap;

pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// ggml tensors have at most four dimensions.
pub const MAX_DIMS: usize = 4;
/// Arrays of arrays are legal; this bounds the recursion a hostile file can ask for.
const MAX_ARRAY_DEPTH: usize = 8;

/// One entry of the tensor table.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// Dimensions in ggml order: `dims[0]` is the row length (contiguous elements).
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    /// Offset of the data relative to the start of the data section.
    pub offset: u64,
}

impl TensorInfo {
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }

    /// Bytes of tensor data (validated not to overflow when the file was parsed).
    pub fn n_bytes(&self) -> u64 {
        let rows: u64 = self.dims.iter().skip(1).product();
        self.ty.row_bytes(self.dims[0]).unwrap_or(0) * rows
    }

    /// Row length (elements) and number of rows when viewed as a 2-D matrix.
    pub fn as_matrix(&self) -> (usize, usize) {
        let cols = self.dims[0] as usize;
        let rows = self.dims.iter().skip(1).product::<u64>() as usize;
        (cols, rows)
    }
}

/// Everything before the tensor data: version, metadata and the tensor table.
#[derive(Clone, Debug)]
pub struct GgufHeader {
    pub version: u32,
    pub metadata: Vec<(String, Value)>,
    pub tensors: Vec<TensorInfo>,
    pub alignment: u64,
    /// Absolute file offset where the data section starts.
    pub data_offset: u64,
    key_index: HashMap<String, usize>,
    tensor_index: HashMap<String, usize>,
}

impl GgufHeader {
    /// Parses and validates the header of a complete GGUF file image.
    pub fn parse(bytes: &[u8]) -> Result<GgufHeader, GgufError> {
        let mut cur = Cursor { bytes, pos: 0 };
        let magic = cur.take(4, "magic")?;
        if magic != GGUF_MAGIC {
            return Err(GgufError::BadMagic([magic[0], magic[1], magic[2], magic[3]]));
        }
        let version = cur.u32("version")?;
        match version {
            2 | 3 => {}
            1 => {
                return Err(GgufError::Unsupported(
                    "GGUF version 1 (32-bit counts); convert it to v3 first".into(),
                ))
            }
            v if v.swap_bytes() <= 3 => {
                return Err(GgufError::Unsupported("big-endian GGUF files".into()));
            }
            v => return Err(GgufError::Unsupported(format!("GGUF version {v}"))),
        }
        let n_tensors = cur.u64("tensor count")?;
        let n_kv = cur.u64("metadata count")?;
        // Each KV takes at least 8 (key length) + 4 (type) + 1 bytes; each tensor info at least
        // 8 + 4 + 8 + 4 + 8. Counts beyond what the file can hold are rejected before allocating.
        cur.check_count(n_kv, 13, "metadata count")?;
        cur.check_count(n_tensors, 32, "tensor count")?;

        let mut metadata = Vec::with_capacity(n_kv as usize);
        let mut key_index = HashMap::with_capacity(n_kv as usize);
        for _ in 0..n_kv {
            let key = cur.string("metadata key")?;
            let ty_id = cur.u32("metadata value type")?;
            let ty = ValueType::from_id(ty_id)
                .ok_or_else(|| GgufError::Invalid(format!("metadata key {key:?} has unknown value type {ty_id}")))?;
            let value = cur.value(ty, &key, 0)?;
            if key_index.insert(key.clone(), metadata.len()).is_some() {
                return Err(GgufError::Invalid(format!("duplicate metadata key {key:?}")));
            }
            metadata.push((key, value));
        }

        let alignment = match key_index.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(&i) => {
                let v = metadata[i]
                    .1
                    .as_u64()
                    .ok_or_else(|| GgufError::Invalid("general.alignment is not an unsigned integer".into()))?;
                if v == 0 || !v.is_power_of_two() || v > 1 << 20 {
                    return Err(GgufError::Invalid(format!(
                        "general.alignment {v} is not a power of two in 1..=1048576"
                    )));
                }
                v
            }
        };

        let mut tensors = Vec::with_capacity(n_tensors as usize);
        let mut tensor_index = HashMap::with_capacity(n_tensors as usize);
        for _ in 0..n_tensors {
            let name = cur.string("tensor name")?;
            let n_dims = cur.u32("tensor dimension count")? as usize;
            if n_dims == 0 || n_dims > MAX_DIMS {
                return Err(GgufError::Invalid(format!(
                    "tensor {name:?} has {n_dims} dimensions (1..={MAX_DIMS} allowed)"
                )));
            }
            let mut dims = Vec::with_capacity(n_dims);
            for _ in 0..n_dims {
                dims.push(cur.u64("tensor dimension")?);
            }
            let ty_id = cur.u32("tensor type")?;
            let ty = GgmlType::from_id(ty_id).ok_or_else(|| GgufError::UnknownType {
                tensor: name.clone(),
                id: ty_id,
            })?;
            let offset = cur.u64("tensor offset")?;
            let info = TensorInfo { name, dims, ty, offset };
            validate_shape(&info)?;
            if offset % alignment != 0 {
                return Err(GgufError::Invalid(format!(
                    "tensor {:?} offset {offset} is not a multiple of the alignment {alignment}",
                    info.name
                )));
            }
            if tensor_index.insert(info.name.clone(), tensors.len()).is_some() {
                return Err(GgufError::Invalid(format!("duplicate tensor name {:?}", info.name)));
            }
            tensors.push(info);
        }

        let data_offset = align_up(cur.pos as u64, alignment);
        let file_len = bytes.len() as u64;
        if n_tensors > 0 && data_offset > file_len {
            return Err(GgufError::Truncated {
                what: "tensor data section".into(),
                need: data_offset,
                have: file_len,
            });
        }
        for t in &tensors {
            let end = data_offset
                .checked_add(t.offset)
                .and_then(|s| s.checked_add(t.n_bytes()));
            match end {
                Some(end) if end <= file_len => {}
                _ => {
                    return Err(GgufError::Truncated {
                        what: format!(
                            "data of tensor {:?} ({} bytes at data offset {})",
                            t.name,
                            t.n_bytes(),
                            t.offset
                        ),
                        need: end.unwrap_or(u64::MAX),
                        have: file_len,
                    })
                }
            }
        }
        Ok(GgufHeader {
            version,
            metadata,
            tensors,
            alignment,
            data_offset,
            key_index,
            tensor_index,
        })
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.key_index.get(key).map(|&i| &self.metadata[i].1)
    }

    pub fn tensor_info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }
}

fn validate_shape(t: &TensorInfo) -> Result<(), GgufError> {
    let mut n: u64 = 1;
    for &d in &t.dims {
        if d == 0 || d > i64::MAX as u64 {
            return Err(GgufError::Invalid(format!("tensor {:?} has dimension {d}", t.name)));
        }
        n = n
            .checked_mul(d)
            .filter(|&n| n <= i64::MAX as u64)
            .ok_or_else(|| GgufError::Invalid(format!("tensor {:?} element count overflows", t.name)))?;
    }
    let row = t.ty.row_bytes(t.dims[0]).ok_or_else(|| {
        GgufError::Invalid(format!(
            "tensor {:?}: row length {} is not a multiple of the {} block size {}",
            t.name,
            t.dims[0],
            t.ty,
            t.ty.block_size()
        ))
    })?;
    let rows: u64 = t.dims.iter().skip(1).product();
    row.checked_mul(rows)
        .ok_or_else(|| GgufError::Invalid(format!("tensor {:?} byte size overflows", t.name)))?;
    Ok(())
}

pub(crate) fn align_up(x: u64, alignment: u64) -> u64 {
    x.div_ceil(alignment) * alignment
}

/// A bounds-checked little-endian reader over the file image.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> u64 {
        (self.bytes.len() - self.pos) as u64
    }

    fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8], GgufError> {
        if n > self.remaining() {
            return Err(GgufError::Truncated {
                what: what.to_string(),
                need: (self.pos as u64).saturating_add(n),
                have: self.bytes.len() as u64,
            });
        }
        let s = &self.bytes[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], GgufError> {
        let s = self.take(N as u64, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u32(&mut self, what: &str) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// Rejects a count of items of at least `min_size` bytes each that cannot fit in the rest
    /// of the file, so no allocation is ever sized by an unchecked number.
    fn check_count(&self, count: u64, min_size: u64, what: &str) -> Result<(), GgufError> {
        if count.saturating_mul(min_size) > self.remaining() {
            return Err(GgufError::Invalid(format!(
                "{what} {count} cannot fit in the {} bytes left in the file",
                self.remaining()
            )));
        }
        Ok(())
    }

    fn string(&mut self, what: &str) -> Result<String, GgufError> {
        let len = self.u64(what)?;
        let raw = self.take(len, what)?;
        String::from_utf8(raw.to_vec())
            .map_err(|_| GgufError::Invalid(format!("{what} at byte {} is not valid UTF-8", self.pos as u64 - len)))
    }

    fn value(&mut self, ty: ValueType, key: &str, depth: usize) -> Result<Value, GgufError> {
        Ok(match ty {
            ValueType::U8 => Value::U8(self.array::<1>(key)?[0]),
            ValueType::I8 => Value::I8(self.array::<1>(key)?[0] as i8),
            ValueType::U16 => Value::U16(u16::from_le_bytes(self.array(key)?)),
            ValueType::I16 => Value::I16(i16::from_le_bytes(self.array(key)?)),
            ValueType::U32 => Value::U32(self.u32(key)?),
            ValueType::I32 => Value::I32(i32::from_le_bytes(self.array(key)?)),
            ValueType::F32 => Value::F32(f32::from_le_bytes(self.array(key)?)),
            ValueType::U64 => Value::U64(self.u64(key)?),
            ValueType::I64 => Value::I64(i64::from_le_bytes(self.array(key)?)),
            ValueType::F64 => Value::F64(f64::from_le_bytes(self.array(key)?)),
            ValueType::Bool => match self.array::<1>(key)?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => return Err(GgufError::Invalid(format!("metadata key {key:?}: boolean byte {b}"))),
            },
            ValueType::String => Value::String(self.string(key)?),
            ValueType::Array => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(GgufError::Invalid(format!(
                        "metadata key {key:?}: arrays nested deeper than {MAX_ARRAY_DEPTH}"
                    )));
                }
                let elem_id = self.u32(key)?;
                let elem = ValueType::from_id(elem_id).ok_or_else(|| {
                    GgufError::Invalid(format!("metadata key {key:?}: unknown array element type {elem_id}"))
                })?;
                let n = self.u64(key)?;
                let min_size = elem
                    .scalar_size()
                    .unwrap_or(if elem == ValueType::String { 8 } else { 12 }) as u64;
                self.check_count(n, min_size, &format!("metadata key {key:?}: array length"))?;
                let mut items = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    items.push(self.value(elem, key, depth + 1)?);
                }
                Value::Array(elem, items)
            }
        })
    }
}
