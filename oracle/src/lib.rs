//! A small safe API over llama.cpp/ggml (`llama-cpp-sys-2`), used only by tests and benches
//! as a reference implementation. Never linked into the release binary.
