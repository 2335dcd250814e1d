//! Our SentencePiece decoder against llama.cpp's own conversion of the same Llama-2
//! `tokenizer.model` (`../shared/models/llama2-tokenizer/ggml-vocab-llama-spm.gguf`).
//! Set `EDGEACT_SHARED` to relocate the shared data directory (default: `../shared` beside the checkout).

use edgeact_quantize::vocab::Vocab;
use edgeact_runtime::gguf::{GgufFile, Value};
use std::path::PathBuf;

fn shared() -> PathBuf {
    PathBuf::from(
        std::env::var("EDGEACT_SHARED").unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../shared").into()),
    )
    .join("models/llama2-tokenizer")
}

#[test]
fn sentencepiece_matches_llama_cpp_vocab() {
    let dir = shared();
    let v = Vocab::from_dir(&dir).unwrap();
    let reference = GgufFile::open(dir.join("ggml-vocab-llama-spm.gguf")).unwrap();
    let ours = v.metadata();
    let get = |k: &str| ours.iter().find(|(kk, _)| kk == k).map(|(_, v)| v).unwrap();
    for key in [
        "tokenizer.ggml.model",
        "tokenizer.ggml.pre",
        "tokenizer.ggml.tokens",
        "tokenizer.ggml.scores",
        "tokenizer.ggml.token_type",
        "tokenizer.ggml.bos_token_id",
        "tokenizer.ggml.eos_token_id",
        "tokenizer.ggml.unknown_token_id",
        "tokenizer.ggml.add_bos_token",
        "tokenizer.ggml.add_eos_token",
    ] {
        assert_eq!(Some(get(key)), reference.get(key), "{key}");
    }
    assert_eq!(v.tokens.len(), 32000);
    assert_eq!(v.pad, None);
    // No chat_template in tokenizer_config.json: the Llama-2 template is used.
    match get("tokenizer.chat_template") {
        Value::String(t) => assert!(t.contains("[INST]") && t.contains("<<SYS>>")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn tokenizer_json_fallback_matches_tokens_and_types() {
    let dir = shared();
    let v = Vocab::from_tokenizer_json(&std::fs::read_to_string(dir.join("tokenizer.json")).unwrap()).unwrap();
    let spm = Vocab::from_sentencepiece(&std::fs::read(dir.join("tokenizer.model")).unwrap()).unwrap();
    assert_eq!(v.tokens, spm.tokens);
    assert_eq!(v.types, spm.types);
    assert_eq!((v.bos, v.eos, v.unk), (Some(1), Some(2), Some(0)));
    // Scores agree except for the few pieces SentencePiece scored specially (-1e9).
    let differ = v.scores.iter().zip(&spm.scores).filter(|(a, b)| a != b).count();
    assert!(differ < 20, "{differ} scores differ");
}
