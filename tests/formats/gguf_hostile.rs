//! Hostile and truncated GGUF files: the reader must answer every one with a clean `Err` (or,
//! for harmless changes, a file whose every view is in bounds), never a panic or an
//! out-of-bounds read. Also runs the `fuzz/` target's check over its seed corpus, so the fuzz
//! harness is exercised on stable without cargo-fuzz.

#[path = "../../fuzz/touch.rs"]
mod touch;

use edgeact_quantize::gguf_writer::string_array;
use edgeact_quantize::GgufWriter;
use edgeact_runtime::gguf::{GgufError, GgufFile, Value};
use edgeact_runtime::quant::GgmlType;
use std::io::Write;
use std::path::PathBuf;

fn valid() -> Vec<u8> {
    let mut w = GgufWriter::new();
    w.set_str("general.architecture", "llama").unwrap();
    w.set_alignment(64).unwrap();
    w.set("tok", string_array(["a", "bc", "<s>"])).unwrap();
    w.set("n", Value::U32(3)).unwrap();
    w.add_tensor("tf32", &[4], GgmlType::F32).unwrap();
    w.add_tensor("tq8", &[32, 2], GgmlType::Q8_0).unwrap();
    w.add_tensor("tf16", &[3, 2], GgmlType::F16).unwrap();
    w.write_to_vec(|i, t, s| s.write_all(&vec![i as u8 + 1; t.n_bytes() as usize]))
        .unwrap()
}

fn find(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len()).position(|w| w == needle).unwrap() + needle.len()
}

fn parse(bytes: &[u8]) -> Result<GgufFile, GgufError> {
    GgufFile::from_bytes(bytes.to_vec())
}

#[test]
fn every_truncation_is_an_error() {
    let bytes = valid();
    let f = parse(&bytes).unwrap();
    let data_end = f
        .tensors()
        .iter()
        .map(|t| f.header().data_offset + t.offset + t.n_bytes())
        .max()
        .unwrap() as usize;
    for len in 0..bytes.len() {
        let r = parse(&bytes[..len]);
        if len < data_end {
            assert!(r.is_err(), "prefix of {len} bytes accepted");
        } else {
            // Only trailing padding was cut.
            assert!(touch::parse_and_touch(&bytes[..len]));
        }
    }
}

#[test]
fn huge_counts_and_lengths() {
    let base = valid();
    let patch = |at: usize, v: &[u8]| {
        let mut b = base.clone();
        b[at..at + v.len()].copy_from_slice(v);
        b
    };
    // Tensor count and metadata count (bytes 8..16 and 16..24).
    for v in [u64::MAX, 1 << 40, 1000] {
        assert!(parse(&patch(8, &v.to_le_bytes())).is_err(), "tensor count {v}");
        assert!(parse(&patch(16, &v.to_le_bytes())).is_err(), "kv count {v}");
    }
    // The string array's length, and a key's string length.
    let arr_len_at = find(&base, b"tok") + 4 + 4;
    assert!(parse(&patch(arr_len_at, &u64::MAX.to_le_bytes())).is_err());
    assert!(parse(&patch(24, &u64::MAX.to_le_bytes())).is_err());
    assert!(parse(&patch(24, &(u64::MAX - 3).to_le_bytes())).is_err());
}

#[test]
fn bad_alignment_unknown_type_and_overflowing_dims() {
    let base = valid();
    let patch = |at: usize, v: &[u8]| {
        let mut b = base.clone();
        b[at..at + v.len()].copy_from_slice(v);
        b
    };
    let align_at = find(&base, b"general.alignment") + 4;
    for a in [0u32, 48, 3, 1 << 31] {
        let err = parse(&patch(align_at, &a.to_le_bytes()))
            .err()
            .expect("bad alignment accepted");
        assert!(err.to_string().contains("alignment"), "{err}");
    }
    // Tensor "tq8": n_dims u32, dims u64 x2, type u32, offset u64.
    let t = find(&base, b"tq8");
    let (dims_at, type_at, off_at) = (t + 4, t + 4 + 16, t + 4 + 16 + 4);
    match parse(&patch(type_at, &4u32.to_le_bytes())) {
        Err(GgufError::UnknownType { tensor, id: 4 }) => assert_eq!(tensor, "tq8"),
        other => panic!("{:?}", other.err()),
    }
    assert!(parse(&patch(type_at, &u32::MAX.to_le_bytes())).is_err());
    for dims in [[u64::MAX, 2], [32, u64::MAX], [1 << 40, 1 << 40], [32, 0], [33, 2]] {
        let mut b = base.clone();
        b[dims_at..dims_at + 8].copy_from_slice(&dims[0].to_le_bytes());
        b[dims_at + 8..dims_at + 16].copy_from_slice(&dims[1].to_le_bytes());
        assert!(parse(&b).is_err(), "dims {dims:?} accepted");
    }
    assert!(parse(&patch(t, &0u32.to_le_bytes())).is_err(), "0 dims");
    assert!(parse(&patch(t, &5u32.to_le_bytes())).is_err(), "5 dims");
    // Misaligned and out-of-file offsets.
    assert!(parse(&patch(off_at, &1u64.to_le_bytes())).is_err());
    assert!(parse(&patch(off_at, &(u64::MAX - 63).to_le_bytes())).is_err());
    assert!(parse(&patch(off_at, &(1u64 << 20).to_le_bytes())).is_err());
    // Bad magic, versions, value type, boolean byte.
    assert!(matches!(parse(&patch(0, b"GGUG")), Err(GgufError::BadMagic(_))));
    for v in [0u32, 1, 4, 0x0300_0000] {
        assert!(parse(&patch(4, &v.to_le_bytes())).is_err(), "version {v}");
    }
    let n_type_at = find(&base, b"\x01\x00\x00\x00\x00\x00\x00\x00n");
    assert!(parse(&patch(n_type_at, &13u32.to_le_bytes())).is_err());
}

#[test]
fn single_byte_mutations_never_panic() {
    let base = valid();
    let header_len = parse(&base).unwrap().header().data_offset as usize;
    for pos in 0..header_len {
        for v in [0x00u8, 0xff, 0x80, 0x7f, 0x01, base[pos] ^ 0x10] {
            let mut b = base.clone();
            b[pos] = v;
            touch::parse_and_touch(&b);
        }
    }
}

#[test]
fn fuzz_seed_corpus() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/gguf_reader");
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let bytes = std::fs::read(e.unwrap().path()).unwrap();
        assert!(touch::parse_and_touch(&bytes));
        for len in (0..bytes.len()).step_by(13) {
            touch::parse_and_touch(&bytes[..len]);
        }
        n += 1;
    }
    assert!(n >= 2, "seed corpus missing");
}

/// A tensor-less GGUF v3 image from raw metadata entries: (key, value type id, encoded value).
fn raw_metadata_file(entries: &[(String, u32, Vec<u8>)]) -> Vec<u8> {
    let mut b = b"GGUF".to_vec();
    b.extend(3u32.to_le_bytes());
    b.extend(0u64.to_le_bytes());
    b.extend((entries.len() as u64).to_le_bytes());
    for (key, ty, payload) in entries {
        b.extend((key.len() as u64).to_le_bytes());
        b.extend(key.as_bytes());
        b.extend(ty.to_le_bytes());
        b.extend(payload);
    }
    b
}

/// An encoded array value: element type id, count, then the elements' bytes.
fn array_payload(elem: u32, count: u64, elements: &[u8]) -> Vec<u8> {
    let mut p = elem.to_le_bytes().to_vec();
    p.extend(count.to_le_bytes());
    p.extend(elements);
    p
}

#[test]
fn big_arrays_cost_about_their_file_size() {
    // 8 MiB of u8, 1 Mi empty strings and 1 Mi i32: each element used to become a 32-byte
    // `Value` (u8: 32x the file) plus a heap string each.
    let n = 1u64 << 20;
    let entries = vec![
        (
            "bytes".to_string(),
            9,
            array_payload(0, 8 * n, &vec![7u8; 8 * n as usize]),
        ),
        (
            "strings".to_string(),
            9,
            array_payload(8, n, &vec![0u8; 8 * n as usize]),
        ),
        ("ints".to_string(), 9, array_payload(5, n, &vec![1u8; 4 * n as usize])),
    ];
    let bytes = raw_metadata_file(&entries);
    let file_len = bytes.len();
    let f = parse(&bytes).expect("a valid file");
    let heap = f.header().heap_bytes();
    assert!(
        heap <= 2 * file_len,
        "{heap} bytes of header for a {file_len}-byte file"
    );
    let bytes_array = f.get_array("bytes").unwrap().unwrap();
    assert_eq!(bytes_array.len(), 8 * n as usize);
    assert_eq!(bytes_array.get(5).and_then(|v| v.as_u64()), Some(7));
    let strings = f.get_array("strings").unwrap().unwrap();
    assert_eq!(strings.len(), n as usize);
    assert_eq!(strings.get(0).and_then(|v| v.as_str()), Some(""));
    assert_eq!(
        f.get_array("ints").unwrap().unwrap().get(3).and_then(|v| v.as_i64()),
        Some(0x01010101)
    );
}

#[test]
fn array_count_beyond_the_file_is_an_error() {
    for (elem, size) in [(0u32, 1u64), (6, 4), (8, 8), (9, 12)] {
        // Claims 2^40 elements with 64 bytes behind it.
        let bytes = raw_metadata_file(&[("a".into(), 9, array_payload(elem, 1 << 40, &[0u8; 64]))]);
        let err = parse(&bytes)
            .err()
            .unwrap_or_else(|| panic!("element type {elem} (size {size}) accepted"));
        assert!(err.to_string().contains("cannot fit"), "{err}");
    }
}

#[test]
fn nested_array_bomb_is_refused_by_the_memory_budget() {
    // 2 Mi empty inner arrays: 12 bytes each in the file, a whole `Array` each in memory.
    let n = 2u64 << 20;
    let mut inner = Vec::with_capacity(12 * n as usize);
    for _ in 0..n {
        inner.extend(5u32.to_le_bytes());
        inner.extend(0u64.to_le_bytes());
    }
    let bytes = raw_metadata_file(&[("nest".into(), 9, array_payload(9, n, &inner))]);
    match parse(&bytes) {
        Err(e) => assert!(e.to_string().contains("memory"), "{e}"),
        Ok(f) => assert!(f.header().heap_bytes() <= 2 * bytes.len() + (1 << 20)),
    }
}

#[test]
fn millions_of_tiny_keys_are_refused_by_the_memory_budget() {
    // Each ~20-byte entry (short key, u8 value) costs an entry and an index slot in memory.
    let entries: Vec<(String, u32, Vec<u8>)> = (0..1_000_000u32).map(|i| (format!("k{i}"), 0, vec![1])).collect();
    let bytes = raw_metadata_file(&entries);
    let err = parse(&bytes).err().expect("refused");
    assert!(err.to_string().contains("memory"), "{err}");
}
