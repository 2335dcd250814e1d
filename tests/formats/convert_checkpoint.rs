//! Checkpoint readers: safetensors (written here) and PyTorch `.bin` (committed fixtures
//! written by `torch.save`, see `scripts/make-convert-fixtures.py`), single and sharded, plus
//! hostile and truncated files.

use edgeact_quantize::safetensors::to_bytes;
use edgeact_quantize::{Checkpoint, DType};
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/convert/tiny-pytorch")
}

fn base() -> Vec<f32> {
    (0..24).map(|i| i as f32 / 4.0 - 2.0).collect()
}

fn read_all(ck: &Checkpoint, name: &str) -> Vec<f32> {
    let t = ck.require(name).unwrap();
    let mut out = vec![0f32; t.n_elements()];
    ck.read_rows_f32(t, 0, &mut out).unwrap();
    out
}

#[test]
fn pytorch_single_file() {
    let ck = Checkpoint::open_files(&[fixtures().join("single.bin")]).unwrap();
    let names: Vec<&str> = ck.tensors().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["a.f32", "b.f16", "c.bf16", "d.view", "e.vec"]);
    for (name, dtype) in [("a.f32", DType::F32), ("b.f16", DType::F16), ("c.bf16", DType::BF16)] {
        let t = ck.require(name).unwrap();
        assert_eq!((t.dtype.clone(), t.shape.clone()), (dtype, vec![4, 6]), "{name}");
        assert_eq!(read_all(&ck, name), base(), "{name}");
    }
    // A view at storage offset 6 of a.f32's storage.
    let t = ck.require("d.view").unwrap();
    assert_eq!(t.shape, [2, 6]);
    assert_eq!(read_all(&ck, "d.view"), &base()[6..18]);
    assert_eq!(read_all(&ck, "e.vec"), [1.0, -1.0, 0.5]);
    // Reading a row range.
    let t = ck.require("b.f16").unwrap();
    let mut two = vec![0f32; 12];
    ck.read_rows_f32(t, 2, &mut two).unwrap();
    assert_eq!(two, &base()[12..]);
    assert!(ck.read_rows_f32(t, 3, &mut two).is_err());
}

#[test]
fn pytorch_sharded_directory() {
    let ck = Checkpoint::open_dir(&fixtures()).unwrap();
    assert_eq!(ck.tensors().len(), 4);
    assert_eq!(ck.paths().count(), 2);
    assert_eq!(read_all(&ck, "c.bf16"), base());
    assert_eq!(read_all(&ck, "e.vec"), [1.0, -1.0, 0.5]);
}

#[test]
fn pytorch_truncated_files_are_errors() {
    let bytes = std::fs::read(fixtures().join("single.bin")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("t.bin");
    for len in (0..bytes.len()).step_by(7) {
        std::fs::write(&p, &bytes[..len]).unwrap();
        // Either the zip directory is gone (error) or, if only trailing bytes were cut, every
        // tensor that is returned must still be readable.
        if let Ok(ck) = Checkpoint::open_files(std::slice::from_ref(&p)) {
            for t in ck.tensors() {
                let mut out = vec![0f32; t.n_elements()];
                ck.read_rows_f32(t, 0, &mut out).unwrap();
            }
        }
    }
}

#[test]
fn pytorch_stored_entry_claiming_more_data_than_it_holds_is_an_error() {
    let mut bytes = std::fs::read(fixtures().join("single.bin")).unwrap();
    // The central directory record of a storage entry (`.../data/<key>`): raise its recorded
    // uncompressed size (offset 24) past its stored bytes, so a tensor would run on into the
    // next entry.
    let record = (0..bytes.len() - 46)
        .find(|&i| {
            let name_len = u16::from_le_bytes([bytes[i + 28], bytes[i + 29]]) as usize;
            bytes[i..i + 4] == [0x50, 0x4b, 0x01, 0x02]
                && bytes
                    .get(i + 46..i + 46 + name_len)
                    .is_some_and(|n| n.ends_with(b"/data/0"))
        })
        .expect("a storage entry's central directory record");
    let size = u32::from_le_bytes(bytes[record + 24..record + 28].try_into().unwrap());
    bytes[record + 24..record + 28].copy_from_slice(&(size + 64).to_le_bytes());
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "t.bin", &bytes);
    let err = Checkpoint::open_files(std::slice::from_ref(&p))
        .map(|_| ())
        .unwrap_err();
    assert!(err.to_string().contains("stored uncompressed"), "{err}");
}

fn le_f32(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}
fn le_f16(v: &[f32]) -> Vec<u8> {
    v.iter()
        .flat_map(|&x| half::f16::from_f32(x).to_bits().to_le_bytes())
        .collect()
}
fn le_bf16(v: &[f32]) -> Vec<u8> {
    v.iter()
        .flat_map(|&x| half::bf16::from_f32(x).to_bits().to_le_bytes())
        .collect()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn safetensors_single_and_sharded() {
    let dir = tempfile::tempdir().unwrap();
    let b = base();
    let single = to_bytes(&[
        ("x", DType::F32, vec![4, 6], le_f32(&b)),
        ("y", DType::F16, vec![2, 12], le_f16(&b)),
        ("z", DType::BF16, vec![24], le_bf16(&b)),
    ]);
    write(dir.path(), "model.safetensors", &single);
    let ck = Checkpoint::open_dir(dir.path()).unwrap();
    for n in ["x", "y", "z"] {
        assert_eq!(read_all(&ck, n), b, "{n}");
    }
    assert_eq!(ck.require("y").unwrap().shape, [2, 12]);

    let sharded = tempfile::tempdir().unwrap();
    write(
        sharded.path(),
        "model-00001-of-00002.safetensors",
        &to_bytes(&[("x", DType::F32, vec![4, 6], le_f32(&b))]),
    );
    write(
        sharded.path(),
        "model-00002-of-00002.safetensors",
        &to_bytes(&[("z", DType::BF16, vec![24], le_bf16(&b))]),
    );
    let index = r#"{"metadata": {}, "weight_map": {"x": "model-00001-of-00002.safetensors", "z": "model-00002-of-00002.safetensors"}}"#;
    write(sharded.path(), "model.safetensors.index.json", index.as_bytes());
    let ck = Checkpoint::open_dir(sharded.path()).unwrap();
    assert_eq!(ck.tensors().len(), 2);
    assert_eq!(read_all(&ck, "z"), b);

    // An index pointing outside the directory is refused.
    write(
        sharded.path(),
        "model.safetensors.index.json",
        br#"{"weight_map": {"x": "../evil.safetensors"}}"#,
    );
    let err = Checkpoint::open_dir(sharded.path()).err().unwrap().to_string();
    assert!(err.contains("bad shard file name"), "{err}");
}

#[test]
fn hostile_safetensors_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let good = to_bytes(&[
        ("x", DType::F32, vec![2, 3], le_f32(&[1.0; 6])),
        ("y", DType::F16, vec![4], le_f16(&[2.0; 4])),
    ]);
    // Every truncation of a valid file is an error, never a panic.
    for len in 0..good.len() {
        let p = write(dir.path(), "t.safetensors", &good[..len]);
        assert!(Checkpoint::open_files(&[p]).is_err(), "prefix {len} accepted");
    }
    let p = write(dir.path(), "ok.safetensors", &good);
    assert!(Checkpoint::open_files(&[p]).is_ok());

    let header = |json: &str| {
        let mut v = (json.len() as u64).to_le_bytes().to_vec();
        v.extend_from_slice(json.as_bytes());
        v.extend_from_slice(&[0u8; 64]);
        v
    };
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (u64::MAX.to_le_bytes().to_vec(), "header length"),
        (header("[1,2]"), "not a JSON object"),
        (header("{not json"), "not JSON"),
        (
            header(r#"{"x":{"dtype":"F32","shape":[4],"data_offsets":[0,8]}}"#),
            "needs 16 bytes",
        ),
        (
            header(r#"{"x":{"dtype":"F32","shape":[4],"data_offsets":[60,76]}}"#),
            "outside",
        ),
        (
            header(r#"{"x":{"dtype":"F32","shape":[4],"data_offsets":[8,0]}}"#),
            "outside",
        ),
        (
            header(r#"{"x":{"dtype":"Q9","shape":[4],"data_offsets":[0,16]}}"#),
            "unknown dtype",
        ),
        (
            header(r#"{"x":{"dtype":"F32","shape":[-4],"data_offsets":[0,16]}}"#),
            "shape",
        ),
        (
            header(r#"{"x":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,16]}}"#),
            "overflows",
        ),
        (
            header(
                r#"{"x":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"y":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}}"#,
            ),
            "overlap",
        ),
    ];
    for (bytes, want) in cases {
        let p = write(dir.path(), "bad.safetensors", &bytes);
        let err = Checkpoint::open_files(&[p]).err().expect(want).to_string();
        assert!(err.contains(want), "{err:?} should mention {want:?}");
    }
    // Unsupported dtypes load, but converting one is an error naming the tensor.
    let p = write(
        dir.path(),
        "i64.safetensors",
        &to_bytes(&[(
            "ids",
            DType::Other {
                name: "I64".into(),
                size: 8,
            },
            vec![2],
            vec![0; 16],
        )]),
    );
    let ck = Checkpoint::open_files(&[p]).unwrap();
    let t = ck.require("ids").unwrap();
    let err = ck.read_rows_f32(t, 0, &mut [0.0; 2]).unwrap_err().to_string();
    assert!(err.contains("\"ids\"") && err.contains("I64"), "{err}");
}
