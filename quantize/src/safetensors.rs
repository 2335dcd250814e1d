//! The safetensors format: an 8-byte little-endian header length, a JSON header mapping tensor
//! names to `{dtype, shape, data_offsets}`, then the data. The header is validated completely
//! (sizes, bounds, overlaps) before any tensor is used, so a hostile or truncated file is a
//! clear error.

use crate::checkpoint::{CheckpointError, DType, MappedFile, TensorMeta};

/// Headers larger than this are refused (real ones are well under 1 MB; the official
/// implementation uses the same 100 MB limit).
const MAX_HEADER: u64 = 100_000_000;

pub(crate) fn read_tensors(file: &MappedFile, file_idx: usize) -> Result<Vec<TensorMeta>, CheckpointError> {
    parse(&file.map, &file.path, file_idx)
}

/// Validates a whole safetensors file image held in memory and returns its tensor table
/// (tests and the `safetensors_header` fuzz target; files are read through [`read_tensors`]).
pub fn parse_bytes(bytes: &[u8]) -> Result<Vec<TensorMeta>, CheckpointError> {
    parse(bytes, std::path::Path::new("<memory>"), 0)
}

fn parse(bytes: &[u8], path: &std::path::Path, file_idx: usize) -> Result<Vec<TensorMeta>, CheckpointError> {
    let bad = |msg: String| CheckpointError::invalid(path, format!("not a valid safetensors file: {msg}"));
    if bytes.len() < 8 {
        return Err(bad(format!("{} bytes is too short for the header length", bytes.len())));
    }
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
    if n > MAX_HEADER || n > bytes.len() as u64 - 8 {
        return Err(bad(format!(
            "header length {n} exceeds the file ({} bytes) or the {MAX_HEADER}-byte limit",
            bytes.len()
        )));
    }
    let header = &bytes[8..8 + n as usize];
    let data_start = 8 + n as usize;
    let data_len = bytes.len() - data_start;
    let json: serde_json::Value =
        serde_json::from_slice(header).map_err(|e| bad(format!("header is not JSON: {e}")))?;
    let obj = json
        .as_object()
        .ok_or_else(|| bad("header is not a JSON object".into()))?;
    let mut out = Vec::with_capacity(obj.len());
    for (name, entry) in obj {
        if name == "__metadata__" {
            continue;
        }
        let e = entry
            .as_object()
            .ok_or_else(|| bad(format!("entry {name:?} is not an object")))?;
        let dtype_name = e
            .get("dtype")
            .and_then(|d| d.as_str())
            .ok_or_else(|| bad(format!("tensor {name:?} has no dtype")))?;
        let dtype =
            parse_dtype(dtype_name).ok_or_else(|| bad(format!("tensor {name:?}: unknown dtype {dtype_name:?}")))?;
        let shape: Vec<usize> = e
            .get("shape")
            .and_then(|s| s.as_array())
            .ok_or_else(|| bad(format!("tensor {name:?} has no shape")))?
            .iter()
            .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
            .collect::<Option<_>>()
            .ok_or_else(|| bad(format!("tensor {name:?}: shape is not a list of sizes")))?;
        let offs: Vec<u64> = e
            .get("data_offsets")
            .and_then(|s| s.as_array())
            .and_then(|a| a.iter().map(|v| v.as_u64()).collect::<Option<Vec<u64>>>())
            .filter(|a| a.len() == 2)
            .ok_or_else(|| bad(format!("tensor {name:?}: data_offsets is not [begin, end]")))?;
        let (begin, end) = (offs[0], offs[1]);
        if begin > end || end > data_len as u64 {
            return Err(bad(format!(
                "tensor {name:?}: data_offsets [{begin}, {end}] outside the {data_len} data bytes (truncated file?)"
            )));
        }
        let expected = shape
            .iter()
            .try_fold(dtype.size() as u64, |acc, &d| acc.checked_mul(d as u64))
            .ok_or_else(|| bad(format!("tensor {name:?}: size overflows")))?;
        if end - begin != expected {
            return Err(bad(format!(
                "tensor {name:?}: shape {shape:?} of {} needs {expected} bytes, data_offsets give {}",
                dtype.name(),
                end - begin
            )));
        }
        out.push(TensorMeta {
            name: name.clone(),
            dtype,
            shape,
            file: file_idx,
            start: data_start + begin as usize,
            len: (end - begin) as usize,
        });
    }
    // Overlapping tensors mean a corrupt or crafted file.
    let mut ranges: Vec<(usize, usize, &str)> = out
        .iter()
        .map(|t| (t.start, t.start + t.len, t.name.as_str()))
        .collect();
    ranges.sort();
    for w in ranges.windows(2) {
        if w[1].0 < w[0].1 {
            return Err(bad(format!("tensors {:?} and {:?} overlap", w[0].2, w[1].2)));
        }
    }
    Ok(out)
}

fn parse_dtype(s: &str) -> Option<DType> {
    let other = |name: &str, size| DType::Other {
        name: name.into(),
        size,
    };
    Some(match s {
        "F32" => DType::F32,
        "F16" => DType::F16,
        "BF16" => DType::BF16,
        "F64" | "I64" | "U64" => other(s, 8),
        "I32" | "U32" => other(s, 4),
        "I16" | "U16" => other(s, 2),
        "I8" | "U8" | "BOOL" | "F8_E4M3" | "F8_E5M2" => other(s, 1),
        _ => return None,
    })
}

/// Serialises tensors as a safetensors file image (tests and fixture generation).
pub fn to_bytes(tensors: &[(&str, DType, Vec<usize>, Vec<u8>)]) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    let mut offset = 0usize;
    for (name, dtype, shape, data) in tensors {
        header.insert(
            name.to_string(),
            serde_json::json!({"dtype": dtype.name(), "shape": shape, "data_offsets": [offset, offset + data.len()]}),
        );
        offset += data.len();
    }
    let mut h = serde_json::to_vec(&serde_json::Value::Object(header)).expect("JSON");
    // Pad the header with spaces so the data starts 8-byte aligned, as the official writer does.
    while !(8 + h.len()).is_multiple_of(8) {
        h.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + h.len() + offset);
    out.extend_from_slice(&(h.len() as u64).to_le_bytes());
    out.extend_from_slice(&h);
    for (_, _, _, data) in tensors {
        out.extend_from_slice(data);
    }
    out
}
