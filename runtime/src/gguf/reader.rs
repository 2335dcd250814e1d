//! Parsing and validating a GGUF file held in memory (normally a read-only mmap).
//!
//! Every count, length and offset read from the file is checked against the bytes that are
//! actually there before it is used, so a truncated or hostile file yields a [`GgufError`]
//! naming what is wrong instead of a panic, an abort or an out-of-range read. Memory is
//! bounded too: arrays are stored as typed vectors (about their size in the file), and the
//! whole parsed header may take at most twice the file size plus 1 MiB, charged before each
//! allocation, so a crafted file cannot make the reader allocate many times its own size.

use super::value::{Array, StringArray, Value, ValueType};
use super::GgufError;
use crate::quant::GgmlType;
use std::collections::HashMap;

pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// ggml tensors have at most four dimensions.
pub const MAX_DIMS: usize = 4;
/// Arrays of arrays are legal; this bounds the recursion a hostile file can ask for.
const MAX_ARRAY_DEPTH: usize = 8;
/// The parsed header may use at most twice the file's size plus this much memory. Arrays are
/// stored about as compactly as in the file, so only a file built to amplify (millions of
/// tiny keys or nested arrays) gets near it.
const MEMORY_SLACK: u64 = 1 << 20;
/// Memory per metadata entry besides its key text and value contents: the entry itself and
/// its index slot (a copy of the key plus the position, and the hash table's control byte).
const KV_ENTRY_BYTES: u64 =
    (std::mem::size_of::<(String, Value)>() + std::mem::size_of::<(String, usize)>() + 1) as u64;
/// The same for a tensor-table entry.
const TENSOR_ENTRY_BYTES: u64 = (std::mem::size_of::<TensorInfo>() + std::mem::size_of::<(String, usize)>() + 1) as u64;

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
        let memory_limit = (bytes.len() as u64).saturating_mul(2).saturating_add(MEMORY_SLACK);
        let mut cur = Cursor {
            bytes,
            pos: 0,
            memory_left: memory_limit,
            memory_limit,
        };
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
        cur.charge(n_kv.saturating_mul(KV_ENTRY_BYTES), "the metadata table")?;
        cur.charge(n_tensors.saturating_mul(TENSOR_ENTRY_BYTES), "the tensor table")?;

        let mut metadata = Vec::with_capacity(n_kv as usize);
        let mut key_index = HashMap::with_capacity(n_kv as usize);
        for _ in 0..n_kv {
            let key = cur.string("metadata key")?;
            // The key text is held twice: in the entry and in the index.
            cur.charge(2 * key.len() as u64, "metadata keys")?;
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
            cur.charge(2 * name.len() as u64, "tensor names")?;
            let n_dims = cur.u32("tensor dimension count")? as usize;
            if n_dims == 0 || n_dims > MAX_DIMS {
                return Err(GgufError::Invalid(format!(
                    "tensor {name:?} has {n_dims} dimensions (1..={MAX_DIMS} allowed)"
                )));
            }
            cur.charge(8 * n_dims as u64, "tensor dimensions")?;
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

    /// An estimate of the heap memory this header holds (vectors' capacities, strings, the
    /// two indexes), which parsing keeps within twice the file size plus 1 MiB.
    pub fn heap_bytes(&self) -> usize {
        use std::mem::size_of;
        let index_bytes = |capacity: usize| capacity * (size_of::<(String, usize)>() + 1);
        let metadata: usize = self.metadata.capacity() * size_of::<(String, Value)>()
            + self
                .metadata
                .iter()
                .map(|(k, v)| 2 * k.capacity() + v.heap_bytes())
                .sum::<usize>();
        let tensors: usize = self.tensors.capacity() * size_of::<TensorInfo>()
            + self
                .tensors
                .iter()
                .map(|t| 2 * t.name.capacity() + t.dims.capacity() * size_of::<u64>())
                .sum::<usize>();
        metadata + tensors + index_bytes(self.key_index.capacity()) + index_bytes(self.tensor_index.capacity())
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
    /// Memory the header may still allocate (see [`MEMORY_SLACK`]); charged before allocating.
    memory_left: u64,
    memory_limit: u64,
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

    /// Takes `bytes` from the memory budget, or fails naming what would exceed it.
    fn charge(&mut self, bytes: u64, what: &str) -> Result<(), GgufError> {
        if bytes > self.memory_left {
            return Err(GgufError::Invalid(format!(
                "{what} would need more memory than the {} bytes allowed for a {}-byte file's header",
                self.memory_limit,
                self.bytes.len()
            )));
        }
        self.memory_left -= bytes;
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
            ValueType::String => {
                let text = self.string(key)?;
                self.charge(text.len() as u64, "metadata strings")?;
                Value::String(text)
            }
            ValueType::Array => Value::Array(self.array_value(key, depth)?),
        })
    }

    /// An array (type id, count, elements), stored as one typed vector. The count is checked
    /// against the bytes left and the memory budget before anything is allocated.
    fn array_value(&mut self, key: &str, depth: usize) -> Result<Array, GgufError> {
        if depth >= MAX_ARRAY_DEPTH {
            return Err(GgufError::Invalid(format!(
                "metadata key {key:?}: arrays nested deeper than {MAX_ARRAY_DEPTH}"
            )));
        }
        let elem_id = self.u32(key)?;
        let elem = ValueType::from_id(elem_id)
            .ok_or_else(|| GgufError::Invalid(format!("metadata key {key:?}: unknown array element type {elem_id}")))?;
        let n = self.u64(key)?;
        let min_size = elem
            .scalar_size()
            .unwrap_or(if elem == ValueType::String { 8 } else { 12 }) as u64;
        self.check_count(n, min_size, &format!("metadata key {key:?}: array length"))?;
        let what = format!("metadata key {key:?}: array of {n} {elem:?}");
        // `check_count` bounded n by the file size, so it fits in usize.
        let count = n as usize;
        macro_rules! scalars {
            ($variant:ident, $t:ty) => {{
                const SIZE: usize = std::mem::size_of::<$t>();
                self.charge(n * SIZE as u64, &what)?;
                let raw = self.take(n * SIZE as u64, key)?;
                Array::$variant(
                    raw.chunks_exact(SIZE)
                        .map(|c| <$t>::from_le_bytes(c.try_into().unwrap_or([0; SIZE])))
                        .collect(),
                )
            }};
        }
        Ok(match elem {
            ValueType::U8 => scalars!(U8, u8),
            ValueType::I8 => scalars!(I8, i8),
            ValueType::U16 => scalars!(U16, u16),
            ValueType::I16 => scalars!(I16, i16),
            ValueType::U32 => scalars!(U32, u32),
            ValueType::I32 => scalars!(I32, i32),
            ValueType::F32 => scalars!(F32, f32),
            ValueType::U64 => scalars!(U64, u64),
            ValueType::I64 => scalars!(I64, i64),
            ValueType::F64 => scalars!(F64, f64),
            ValueType::Bool => {
                self.charge(n, &what)?;
                let raw = self.take(n, key)?;
                let mut items = Vec::with_capacity(count);
                for &b in raw {
                    match b {
                        0 | 1 => items.push(b == 1),
                        _ => return Err(GgufError::Invalid(format!("metadata key {key:?}: boolean byte {b}"))),
                    }
                }
                Array::Bool(items)
            }
            ValueType::String => {
                // First pass sizes the text so it is allocated once, exactly.
                let start = self.pos;
                let mut text_bytes: u64 = 0;
                for _ in 0..n {
                    let len = self.u64(key)?;
                    self.take(len, key)?;
                    text_bytes += len;
                }
                self.pos = start;
                let index_bytes = n * std::mem::size_of::<usize>() as u64;
                self.charge(text_bytes.saturating_add(index_bytes), &what)?;
                let mut items = StringArray::with_capacity(count, text_bytes as usize);
                for _ in 0..n {
                    let len = self.u64(key)?;
                    let at = self.pos;
                    let raw = self.take(len, key)?;
                    let s = std::str::from_utf8(raw).map_err(|_| {
                        GgufError::Invalid(format!("metadata key {key:?}: string at byte {at} is not valid UTF-8"))
                    })?;
                    items.push(s);
                }
                Array::String(items)
            }
            ValueType::Array => {
                self.charge(n.saturating_mul(std::mem::size_of::<Array>() as u64), &what)?;
                let mut items = Vec::with_capacity(count);
                for _ in 0..n {
                    items.push(self.array_value(key, depth + 1)?);
                }
                Array::Array(items)
            }
        })
    }
}
