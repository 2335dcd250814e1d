//! libFuzzer target: the converter's safetensors reader on an arbitrary file image must return
//! an error or a tensor table whose every tensor lies inside the file, sized by its shape and
//! dtype, without overlaps. Seed corpus in `corpus/safetensors_header`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(tensors) = edgeact_quantize::safetensors::parse_bytes(data) else {
        return;
    };
    let mut ranges = Vec::with_capacity(tensors.len());
    for t in &tensors {
        let range = t.byte_range();
        assert!(
            range.start <= range.end && range.end <= data.len(),
            "tensor {:?} lies past the file",
            t.name
        );
        let elements = t
            .shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .expect("size overflows");
        assert_eq!(
            elements.checked_mul(t.dtype.size()),
            Some(range.len()),
            "tensor {:?}",
            t.name
        );
        std::hint::black_box(&data[range.clone()]);
        if !range.is_empty() {
            ranges.push((range.start, range.end));
        }
    }
    ranges.sort_unstable();
    for w in ranges.windows(2) {
        assert!(w[0].1 <= w[1].0, "overlapping tensors accepted");
    }
});
