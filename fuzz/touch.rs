//! Shared by the `gguf_reader` fuzz target and `tests/gguf_hostile.rs`: parse a byte image
//! and touch everything a loader would (every metadata value, every tensor's bytes).

use edgeact_runtime::gguf::GgufFile;

/// Parses `bytes`; on success reads every value and tensor byte so that any out-of-bounds
/// view would be caught. Returns whether the file was accepted.
pub fn parse_and_touch(bytes: &[u8]) -> bool {
    let Ok(f) = GgufFile::from_bytes(bytes.to_vec()) else {
        return false;
    };
    let mut acc = 0u64;
    for (k, v) in f.metadata() {
        acc = acc.wrapping_add(k.len() as u64);
        acc = acc.wrapping_add(v.to_string().len() as u64);
        let _ = f.get_u64(k);
        let _ = f.get_str(k);
    }
    for info in f.tensors() {
        let v = f.tensor(&info.name).expect("listed tensors exist");
        assert_eq!(v.data.len() as u64, info.n_bytes());
        assert!(f.header().data_offset + info.offset + info.n_bytes() <= f.file_size());
        acc = acc.wrapping_add(v.data.iter().map(|&b| b as u64).sum::<u64>());
        let _ = info.as_matrix();
    }
    std::hint::black_box(acc);
    true
}
