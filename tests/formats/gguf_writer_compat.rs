//! Compatibility of our GGUF reader and writer with the reference `gguf` Python package:
//! `tests/fixtures/convert/gguf-py-align64.gguf` was written by gguf-py 0.19.0
//! (`scripts/make-convert-fixtures.py gguf`) with every value type, nested arrays and
//! `general.alignment = 64`.

use edgeact_quantize::GgufWriter;
use edgeact_runtime::gguf::{Array, GgufFile, Item, Value};
use edgeact_runtime::quant::{dequantize_row, quantize_row, GgmlType};
use std::io::Write;
use std::path::PathBuf;

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/convert/gguf-py-align64.gguf")
}

fn floats(ty: GgmlType, data: &[u8], n: usize) -> Vec<f32> {
    let mut out = vec![0f32; n];
    dequantize_row(ty, data, &mut out).unwrap();
    out
}

#[test]
fn reads_every_value_type_written_by_gguf_py() {
    let f = GgufFile::open(fixture()).unwrap();
    assert_eq!(f.header().version, 3);
    assert_eq!(f.header().alignment, 64);
    assert_eq!(f.require_str("general.architecture").unwrap(), "llama");
    assert_eq!(f.get("general.alignment"), Some(&Value::U32(64)));
    assert_eq!(f.get("t.u8"), Some(&Value::U8(200)));
    assert_eq!(f.get("t.i8"), Some(&Value::I8(-100)));
    assert_eq!(f.get("t.u16"), Some(&Value::U16(60000)));
    assert_eq!(f.get("t.i16"), Some(&Value::I16(-30000)));
    assert_eq!(f.get("t.u32"), Some(&Value::U32(4_000_000_000)));
    assert_eq!(f.get("t.i32"), Some(&Value::I32(-2_000_000_000)));
    assert_eq!(f.get("t.f32"), Some(&Value::F32(1.5)));
    assert_eq!(f.get("t.u64"), Some(&Value::U64(18_000_000_000_000_000_000)));
    assert_eq!(f.get("t.i64"), Some(&Value::I64(-9_000_000_000_000_000_000)));
    assert_eq!(f.get("t.f64"), Some(&Value::F64(2.25)));
    assert_eq!(f.get("t.bool"), Some(&Value::Bool(true)));
    assert_eq!(f.get("t.str"), Some(&Value::String("héllo ✓".into())));
    // gguf-py stores Python ints in arrays as I32 and floats as F32.
    assert_eq!(f.get("t.arr_i32"), Some(&Value::Array(Array::I32(vec![1, -2, 3]))));
    let strs: Vec<&str> = f
        .get_array("t.arr_str")
        .unwrap()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(strs, ["a", "bb", ""]);
    assert_eq!(f.get("t.arr_f32"), Some(&Value::Array(Array::F32(vec![0.5, -0.25]))));
    assert_eq!(
        f.get("t.nested"),
        Some(&Value::Array(Array::Array(vec![
            Array::I32(vec![1, 2]),
            Array::I32(vec![3])
        ])))
    );
    let nested = f.get_array("t.nested_str").unwrap().unwrap();
    assert_eq!(nested.len(), 2);
    assert_eq!(nested.get(1), Some(Item::Array(&Array::strings(["z"]))));

    // Tensors: ggml-order dims, 64-byte aligned offsets, and the values the script stored.
    let names: Vec<&str> = f.tensors().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["f32_vec", "f16_mat", "q8_mat", "i32_3d"]);
    for t in f.tensors() {
        assert_eq!((f.header().data_offset + t.offset) % 64, 0, "{}", t.name);
    }
    let v = f.tensor("f32_vec").unwrap();
    assert_eq!(v.info.dims, [5]);
    assert_eq!(floats(GgmlType::F32, v.data, 5), [0.0, 0.5, 1.0, 1.5, 2.0]);
    let expect: Vec<f32> = (0..128).map(|i| (i as f32 - 64.0) / 8.0).collect();
    let v = f.tensor("f16_mat").unwrap();
    assert_eq!((v.info.dims.as_slice(), v.ty()), (&[64u64, 2][..], GgmlType::F16));
    assert_eq!(floats(GgmlType::F16, v.data, 128), expect);
    let v = f.tensor("q8_mat").unwrap();
    assert_eq!((v.info.dims.as_slice(), v.ty()), (&[64u64, 2][..], GgmlType::Q8_0));
    // gguf-py's numpy Q8_0 quantizer and ours are both ggml's reference: same bytes.
    let mut ours = vec![0u8; v.data.len()];
    quantize_row(GgmlType::Q8_0, &expect, &mut ours).unwrap();
    assert_eq!(ours, v.data);
    let v = f.tensor("i32_3d").unwrap();
    assert_eq!((v.info.dims.as_slice(), v.ty()), (&[4u64, 3, 2][..], GgmlType::I32));
    let ints: Vec<i32> = v
        .data
        .chunks_exact(4)
        .map(|c| i32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(ints, (0..24).collect::<Vec<_>>());
}

/// Copying the gguf-py file through our reader and writer reproduces it byte for byte:
/// same header encoding, same alignment and padding rules.
#[test]
fn rewriting_the_gguf_py_file_is_byte_identical() {
    let path = fixture();
    let f = GgufFile::open(&path).unwrap();
    let mut w = GgufWriter::new();
    for (k, v) in f.metadata() {
        w.set(k.clone(), v.clone()).unwrap();
    }
    for t in f.tensors() {
        w.add_tensor(t.name.clone(), &t.dims, t.ty).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("copy.gguf");
    w.write_file(&out, &[&path], |_, t, sink| {
        sink.write_all(f.tensor(&t.name).unwrap().data)
    })
    .unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&path).unwrap());
}
