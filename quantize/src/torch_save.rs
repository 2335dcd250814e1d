//! Writes a flat state dict in the zip format of `torch.save` (PyTorch 1.6 and later), for
//! tests and fixture generation: the converter only reads this format ([`crate::pytorch`]).
//!
//! The archive holds `archive/data.pkl` (a protocol-2 pickle of a dict from names to
//! `torch._utils._rebuild_tensor_v2(storage, 0, shape, stride, False, OrderedDict())`, each
//! storage a persistent id `('storage', torch.XStorage, key, 'cpu', numel)`),
//! `archive/byteorder` (`little`), `archive/version` and one stored (uncompressed) entry
//! `archive/data/<key>` per tensor, as `torch.save` lays them out.

use crate::checkpoint::DType;
use std::io::{Cursor, Write};

/// Serialises `(name, dtype, shape, little-endian bytes)` tensors as a `torch.save` zip image.
/// Only F32, F16 and BF16 are written; each tensor gets its own storage.
pub fn to_bytes(tensors: &[(&str, DType, Vec<usize>, Vec<u8>)]) -> std::io::Result<Vec<u8>> {
    let mut pkl = vec![0x80, 2, b'}', b'('];
    for (key, (name, dtype, shape, data)) in tensors.iter().enumerate() {
        let storage = match dtype {
            DType::F32 => "FloatStorage",
            DType::F16 => "HalfStorage",
            DType::BF16 => "BFloat16Storage",
            DType::Other { name, .. } => {
                return Err(std::io::Error::other(format!(
                    "tensor {name:?}: dtype {} cannot be written",
                    dtype.name()
                )))
            }
        };
        let numel: usize = shape.iter().product();
        if numel * dtype.size() != data.len() {
            return Err(std::io::Error::other(format!(
                "tensor {name:?}: shape {shape:?} needs {} bytes, {} given",
                numel * dtype.size(),
                data.len()
            )));
        }
        put_str(&mut pkl, name);
        pkl.extend_from_slice(b"ctorch._utils\n_rebuild_tensor_v2\n(");
        // The persistent id of the storage.
        pkl.push(b'(');
        put_str(&mut pkl, "storage");
        pkl.extend_from_slice(format!("ctorch\n{storage}\n").as_bytes());
        put_str(&mut pkl, &key.to_string());
        put_str(&mut pkl, "cpu");
        put_int(&mut pkl, numel as u64);
        pkl.extend_from_slice(b"tQ");
        put_int(&mut pkl, 0);
        put_tuple(&mut pkl, shape);
        // Row-major strides.
        let mut stride = vec![1usize; shape.len()];
        for i in (0..shape.len().saturating_sub(1)).rev() {
            stride[i] = stride[i + 1] * shape[i + 1];
        }
        put_tuple(&mut pkl, &stride);
        pkl.push(0x89); // NEWFALSE: requires_grad
        pkl.extend_from_slice(b"ccollections\nOrderedDict\n)R");
        pkl.extend_from_slice(b"tR");
    }
    pkl.extend_from_slice(b"u.");

    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let stored = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    let mut entry = |name: &str, data: &[u8]| -> std::io::Result<()> {
        zip.start_file(name, stored).map_err(std::io::Error::other)?;
        zip.write_all(data)
    };
    entry("archive/data.pkl", &pkl)?;
    entry("archive/byteorder", b"little")?;
    for (key, (_, _, _, data)) in tensors.iter().enumerate() {
        entry(&format!("archive/data/{key}"), data)?;
    }
    entry("archive/version", b"3\n")?;
    Ok(zip.finish().map_err(std::io::Error::other)?.into_inner())
}

/// BINUNICODE.
fn put_str(p: &mut Vec<u8>, s: &str) {
    p.push(b'X');
    p.extend_from_slice(&(s.len() as u32).to_le_bytes());
    p.extend_from_slice(s.as_bytes());
}

/// BININT for what fits in an i32, else LONG1 with 8 bytes.
fn put_int(p: &mut Vec<u8>, v: u64) {
    if v <= i32::MAX as u64 {
        p.push(b'J');
        p.extend_from_slice(&(v as i32).to_le_bytes());
    } else {
        p.extend_from_slice(&[0x8a, 8]);
        p.extend_from_slice(&v.to_le_bytes());
    }
}

fn put_tuple(p: &mut Vec<u8>, items: &[usize]) {
    p.push(b'(');
    for &i in items {
        put_int(p, i as u64);
    }
    p.push(b't');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Checkpoint;

    #[test]
    fn round_trips_through_the_pytorch_reader() {
        let a: Vec<f32> = (0..12).map(|i| i as f32 * 0.5 - 2.0).collect();
        let a_bytes: Vec<u8> = a.iter().flat_map(|x| x.to_le_bytes()).collect();
        let h: Vec<u8> = a
            .iter()
            .flat_map(|&x| half::f16::from_f32(x).to_bits().to_le_bytes())
            .collect();
        let bytes = to_bytes(&[
            ("x.weight", DType::F32, vec![3, 4], a_bytes),
            ("y.weight", DType::F16, vec![12], h),
        ])
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.bin");
        std::fs::write(&p, bytes).unwrap();
        let ck = Checkpoint::open_files(std::slice::from_ref(&p)).unwrap();
        for (name, shape) in [("x.weight", vec![3, 4]), ("y.weight", vec![12])] {
            let t = ck.require(name).unwrap();
            assert_eq!(t.shape, shape);
            let mut out = vec![0f32; 12];
            ck.read_rows_f32(t, 0, &mut out).unwrap();
            assert_eq!(out, a, "{name}");
        }
        assert!(to_bytes(&[("z", DType::F32, vec![2], vec![0; 4])]).is_err());
    }
}
