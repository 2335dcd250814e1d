//! libFuzzer target: `GgufFile::from_bytes` on arbitrary bytes must return an error or a file
//! whose every metadata value and tensor view can be read. Run with
//! `cargo +nightly fuzz run gguf_reader` from `fuzz/` (seed corpus in `corpus/gguf_reader`).
#![no_main]

#[path = "../touch.rs"]
mod touch;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    touch::parse_and_touch(data);
});
