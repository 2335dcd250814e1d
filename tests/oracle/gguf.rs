//! Our GGUF reader on files written by ggml's own writer (`gguf_write_to_file` through the
//! oracle): every metadata type ggml writes, string arrays, and quantized tensor bytes.
#![cfg(feature = "oracle")]

use edgeact_oracle::{write_gguf, GgufTensor, KvValue};
use edgeact_runtime::gguf::{GgufFile, Value};
use edgeact_runtime::quant::{quantize_row, GgmlType};

#[test]
fn reads_a_file_written_by_ggml() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ggml.gguf");

    let f32_data: Vec<f32> = (0..6 * 32).map(|i| (i as f32 * 0.37).sin()).collect();
    let f32_bytes: Vec<u8> = f32_data.iter().flat_map(|v| v.to_le_bytes()).collect();
    let q_src: Vec<f32> = (0..4 * 256).map(|i| (i as f32 * 0.11).cos() * 3.0).collect();
    let mut q4k = vec![0u8; 4 * GgmlType::Q4_K.row_bytes(256).unwrap() as usize];
    quantize_row(GgmlType::Q4_K, &q_src, &mut q4k).unwrap();
    let mut q8 = vec![0u8; 4 * GgmlType::Q8_0.row_bytes(256).unwrap() as usize];
    quantize_row(GgmlType::Q8_0, &q_src, &mut q8).unwrap();

    let kvs = [
        ("general.architecture", KvValue::Str("llama".into())),
        ("t.u8", KvValue::U8(200)),
        ("t.i8", KvValue::I8(-100)),
        ("t.u16", KvValue::U16(60000)),
        ("t.i16", KvValue::I16(-30000)),
        ("t.u32", KvValue::U32(4_000_000_000)),
        ("t.i32", KvValue::I32(-2_000_000_000)),
        ("t.f32", KvValue::F32(1.5)),
        ("t.bool", KvValue::Bool(true)),
        ("t.u64", KvValue::U64(u64::MAX - 1)),
        ("t.i64", KvValue::I64(i64::MIN + 1)),
        ("t.f64", KvValue::F64(-2.25)),
        ("t.arr_i32", KvValue::ArrI32(vec![1, -2, 3])),
        ("t.arr_f32", KvValue::ArrF32(vec![0.5, -0.25])),
        (
            "t.arr_str",
            KvValue::ArrStr(vec!["▁a".into(), "<0x0A>".into(), "".into()]),
        ),
    ];
    let tensors = [
        GgufTensor {
            name: "w.f32",
            ty: GgmlType::F32.id(),
            dims: &[32, 6],
            data: &f32_bytes,
        },
        GgufTensor {
            name: "w.q4k",
            ty: GgmlType::Q4_K.id(),
            dims: &[256, 4],
            data: &q4k,
        },
        GgufTensor {
            name: "w.q8",
            ty: GgmlType::Q8_0.id(),
            dims: &[256, 2, 2],
            data: &q8,
        },
    ];
    write_gguf(&path, &kvs, &tensors).unwrap();

    let file = GgufFile::open(&path).unwrap();
    assert_eq!(file.header().version, 3);
    assert_eq!(file.get_str("general.architecture").unwrap(), Some("llama"));
    assert_eq!(file.get("t.u8"), Some(&Value::U8(200)));
    assert_eq!(file.get("t.i8"), Some(&Value::I8(-100)));
    assert_eq!(file.get("t.u16"), Some(&Value::U16(60000)));
    assert_eq!(file.get("t.i16"), Some(&Value::I16(-30000)));
    assert_eq!(file.get("t.u32"), Some(&Value::U32(4_000_000_000)));
    assert_eq!(file.get("t.i32"), Some(&Value::I32(-2_000_000_000)));
    assert_eq!(file.get("t.f32"), Some(&Value::F32(1.5)));
    assert_eq!(file.get("t.bool"), Some(&Value::Bool(true)));
    assert_eq!(file.get("t.u64"), Some(&Value::U64(u64::MAX - 1)));
    assert_eq!(file.get("t.i64"), Some(&Value::I64(i64::MIN + 1)));
    assert_eq!(file.get("t.f64"), Some(&Value::F64(-2.25)));
    let ints: Vec<i64> = file
        .get_array("t.arr_i32")
        .unwrap()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    assert_eq!(ints, [1, -2, 3]);
    let floats: Vec<f64> = file
        .get_array("t.arr_f32")
        .unwrap()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(floats, [0.5, -0.25]);
    let strs: Vec<&str> = file
        .get_array("t.arr_str")
        .unwrap()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(strs, ["▁a", "<0x0A>", ""]);

    let t = file.tensor("w.f32").unwrap();
    assert_eq!(
        (t.ty(), t.info.dims.as_slice(), t.data),
        (GgmlType::F32, &[32u64, 6][..], &f32_bytes[..])
    );
    let t = file.tensor("w.q4k").unwrap();
    assert_eq!(
        (t.ty(), t.info.dims.as_slice(), t.data),
        (GgmlType::Q4_K, &[256u64, 4][..], &q4k[..])
    );
    let t = file.tensor("w.q8").unwrap();
    assert_eq!(
        (t.ty(), t.info.dims.as_slice(), t.data),
        (GgmlType::Q8_0, &[256u64, 2, 2][..], &q8[..])
    );
    assert_eq!(t.info.offset % file.header().alignment, 0);
}
