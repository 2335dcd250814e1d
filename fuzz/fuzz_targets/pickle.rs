//! libFuzzer target: the converter's pickle VM (`edgeact_quantize::pickle::load`, which reads
//! the `data.pkl` of PyTorch `.bin` checkpoints) on arbitrary bytes must return a value or an
//! error within its budgets: no panic, no stack overflow, no unbounded memory. Seed corpus in
//! `corpus/pickle` (a `torch.save` state dict and small hand-written programs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    // 16 MiB instead of 256 MiB keeps bomb-like inputs quick; the checks are the same.
    if let Ok(value) = edgeact_quantize::pickle::load_with_budget(data, 16 << 20) {
        // Dropping walks the whole value: it must be shallow enough for the stack.
        std::hint::black_box(&value);
    }
});
