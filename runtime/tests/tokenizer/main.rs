//! Tokenizer tests, one binary: SentencePiece against llama.cpp's vectors and Hugging Face
//! `tokenizers` ([`spm`]), GPT-2 BPE ([`bpe`]), round trips on random text ([`roundtrip`]),
//! malformed vocabularies ([`errors`]) and UTF-8-safe streaming ([`stream`]).

mod bpe;
mod errors;
mod roundtrip;
mod spm;
mod stream;
