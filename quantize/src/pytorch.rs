//! PyTorch `.bin` checkpoints (the zip format of `torch.save` since 1.6): `<prefix>/data.pkl`
//! holds the state dict as a pickle whose tensors reference storages by persistent id; each
//! storage is the uncompressed zip entry `<prefix>/data/<key>`. Tensors are mapped straight
//! out of the zip file (entries must be stored, which `torch.save` always does), never copied.

use crate::checkpoint::{CheckpointError, DType, MappedFile, TensorMeta};
use crate::pickle::{self, PVal};
use std::collections::HashMap;
use std::io::{Cursor, Read};

pub(crate) fn read_tensors(file: &MappedFile, file_idx: usize) -> Result<Vec<TensorMeta>, CheckpointError> {
    let path = &file.path;
    let bad = |msg: String| CheckpointError::invalid(path, format!("PyTorch checkpoint: {msg}"));
    let bytes: &[u8] = &file.map;
    let mut zip = zip::ZipArchive::new(Cursor::new(bytes)).map_err(|e| bad(format!("not a valid zip archive: {e}")))?;

    // Where each entry's (stored) data lies in the file.
    let mut entries: HashMap<String, (usize, usize)> = HashMap::new();
    let mut pkl_name = None;
    for i in 0..zip.len() {
        let f = zip.by_index_raw(i).map_err(|e| bad(format!("zip entry {i}: {e}")))?;
        let name = f.name().to_string();
        if name.ends_with("data.pkl") && !name.contains("/data/") {
            pkl_name = Some(name.clone());
        }
        let stored = f.compression() == zip::CompressionMethod::Stored;
        // A stored entry's data is its compressed bytes; the zip crate does not check that the
        // recorded uncompressed size agrees, and a larger one would let a tensor run on into
        // the next entry or the central directory.
        if stored && f.compressed_size() != f.size() {
            return Err(bad(format!(
                "zip entry {name:?} is stored uncompressed but records {} bytes of data and {} uncompressed",
                f.compressed_size(),
                f.size()
            )));
        }
        let start = f.data_start().and_then(|s| usize::try_from(s).ok());
        let size = usize::try_from(f.size()).ok();
        if let (true, Some(start), Some(size)) = (stored, start, size) {
            if start.checked_add(size).is_some_and(|end| end <= bytes.len()) {
                entries.insert(name, (start, size));
            }
        }
    }
    let pkl_name = pkl_name.ok_or_else(|| bad("no data.pkl entry (a legacy, pre-1.6 torch.save file?)".into()))?;
    let prefix = &pkl_name[..pkl_name.len() - "data.pkl".len()];
    if let Some(&(s, n)) = entries.get(&format!("{prefix}byteorder")) {
        if &bytes[s..s + n] != b"little" {
            return Err(bad("big-endian checkpoints are not supported".into()));
        }
    }
    let mut pkl = Vec::new();
    zip.by_name(&pkl_name)
        .map_err(|e| bad(format!("{pkl_name}: {e}")))?
        .take(pickle::MAX_PROGRAM + 1)
        .read_to_end(&mut pkl)
        .map_err(|e| bad(format!("{pkl_name}: {e}")))?;
    if pkl.len() as u64 > pickle::MAX_PROGRAM {
        return Err(bad(format!(
            "{pkl_name} is larger than {} MiB (a state dict's pickle is a few MiB at most)",
            pickle::MAX_PROGRAM >> 20
        )));
    }
    let root = pickle::load(&pkl).map_err(|e| bad(format!("{pkl_name}: {e}")))?;
    let PVal::Dict(items) = root else {
        return Err(bad(format!("{pkl_name} does not hold a state dict")));
    };

    let mut out = Vec::new();
    for (k, v) in items {
        let (
            PVal::Str(name),
            PVal::Tensor {
                storage_key,
                dtype,
                offset,
                shape,
                stride,
            },
        ) = (k, v)
        else {
            continue; // non-tensor entries (e.g. version counters) carry no weights
        };
        let dtype = storage_dtype(&dtype);
        // Only contiguous row-major tensors are mapped directly.
        let mut expect = 1usize;
        for (d, s) in shape.iter().zip(&stride).rev() {
            if *d > 1 && *s != expect {
                return Err(bad(format!(
                    "tensor {name:?} is not contiguous (stride {stride:?}, shape {shape:?})"
                )));
            }
            expect = expect.saturating_mul(*d);
        }
        let entry = format!("{prefix}data/{storage_key}");
        let &(start, size) = entries
            .get(&entry)
            .ok_or_else(|| bad(format!("tensor {name:?}: storage {entry} is missing or compressed")))?;
        let es = dtype.size();
        let n: Option<usize> = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        let range = n
            .and_then(|n| n.checked_mul(es))
            .and_then(|len| offset.checked_mul(es).map(|o| (o, len)))
            .filter(|&(o, len)| o.checked_add(len).is_some_and(|end| end <= size));
        let Some((o, len)) = range else {
            return Err(bad(format!(
                "tensor {name:?} (shape {shape:?}, offset {offset}) lies outside its {size}-byte storage"
            )));
        };
        out.push(TensorMeta {
            name,
            dtype,
            shape,
            file: file_idx,
            start: start + o,
            len,
        });
    }
    Ok(out)
}

/// `torch.FloatStorage` etc. to our dtype.
fn storage_dtype(name: &str) -> DType {
    let other = |size| DType::Other {
        name: name.to_string(),
        size,
    };
    match name {
        "FloatStorage" => DType::F32,
        "HalfStorage" => DType::F16,
        "BFloat16Storage" => DType::BF16,
        "DoubleStorage" | "LongStorage" => other(8),
        "IntStorage" => other(4),
        "ShortStorage" => other(2),
        _ => other(1),
    }
}
