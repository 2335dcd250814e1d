//! The Llama-2 SentencePiece tokenizer against reference ids: llama.cpp's vocab test
//! (`ggml-vocab-llama-spm.gguf.inp/.out`), the 68 shared vectors, and Hugging Face
//! `tokenizers` on the test corpus (`tests/fixtures/tokenizer/corpus.json`).

use edgeact_runtime::gguf::GgufFile;
use edgeact_runtime::tokenizer::{StreamDecoder, TokenType, Tokenizer, TokenizerKind};
use serde_json::Value;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/models/llama2-tokenizer");
const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/tokenizer/corpus.json");

fn llama2() -> Tokenizer {
    let file = GgufFile::open(format!("{DIR}/ggml-vocab-llama-spm.gguf")).expect("open the vocab GGUF");
    Tokenizer::from_gguf(&file).expect("load the Llama-2 tokenizer")
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("an id list")
        .iter()
        .map(|x| x.as_u64().expect("an id") as u32)
        .collect()
}

fn read_json(path: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {path}: {e}")))
        .unwrap_or_else(|e| panic!("parse {path}: {e}"))
}

/// Encodes `text` without and with BOS and checks both, plus the decode round trip.
fn check(tok: &Tokenizer, text: &str, want: &[u32], failures: &mut Vec<String>) {
    let got = tok.encode(text, false, false);
    if got != want {
        failures.push(format!("{text:?}: got {got:?}, want {want:?}"));
        return;
    }
    let with_bos = tok.encode(text, true, false);
    if with_bos.first() != Some(&1) || with_bos[1..] != *want {
        failures.push(format!("{text:?} with BOS: got {with_bos:?}"));
    }
    let back = tok.decode(&with_bos);
    if back != text {
        failures.push(format!("{text:?}: decodes back to {back:?}"));
    }
}

#[test]
fn tokenizer_spm_metadata() {
    let tok = llama2();
    assert_eq!(tok.kind(), &TokenizerKind::Spm);
    assert_eq!(tok.n_vocab(), 32000);
    assert_eq!(tok.bos_id(), Some(1));
    assert_eq!(tok.eos_id(), Some(2));
    assert!(tok.add_bos_default());
    assert!(tok.is_eog(2));
    assert!(!tok.is_eog(1) && !tok.is_eog(13));
    assert_eq!(tok.token_type(1), Some(TokenType::Control));
    assert_eq!(tok.token_text(15043), Some("▁Hello"));
    assert_eq!(tok.token_id("▁Hello"), Some(15043));
}

#[test]
fn tokenizer_spm_llama_cpp_vocab_test() {
    let tok = llama2();
    let inp = std::fs::read_to_string(format!("{DIR}/ggml-vocab-llama-spm.gguf.inp")).expect("read .inp");
    let out = std::fs::read_to_string(format!("{DIR}/ggml-vocab-llama-spm.gguf.out")).expect("read .out");
    let mut inputs: Vec<&str> = inp.split("\n__ggml_vocab_test__\n").collect();
    // The file ends with the separator, which leaves one empty string after the last input.
    assert_eq!(inputs.pop(), Some(""));
    let outputs: Vec<&str> = out.split('\n').collect();
    assert_eq!(inputs.len(), 46);
    assert!(outputs.len() >= inputs.len());
    let mut failures = Vec::new();
    for (text, line) in inputs.iter().zip(&outputs) {
        let want: Vec<u32> = line.split_whitespace().map(|s| s.parse().expect("an id")).collect();
        check(&tok, text, &want, &mut failures);
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn tokenizer_spm_shared_vectors() {
    let tok = llama2();
    let json = read_json(&format!("{DIR}/llama2-tokenizer-vectors.json"));
    let vectors = json["vectors"].as_array().expect("vectors");
    assert_eq!(vectors.len(), 68);
    let mut failures = Vec::new();
    for v in vectors {
        check(&tok, v["text"].as_str().expect("text"), &ids(&v["ids"]), &mut failures);
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn tokenizer_spm_bos_spot_checks() {
    let tok = llama2();
    assert_eq!(tok.encode("Hello world", true, false), [1, 15043, 3186]);
    assert_eq!(tok.encode(" Hello", true, false), [1, 29871, 15043]);
    assert_eq!(tok.encode("", true, false), [1]);
    assert_eq!(tok.encode("", false, false), Vec::<u32>::new());
}

#[test]
fn tokenizer_spm_hf_corpus() {
    let tok = llama2();
    let json = read_json(CORPUS);
    let corpus = json["corpus"].as_array().expect("corpus");
    let want = json["llama2"]["corpus"].as_array().expect("llama2 ids");
    assert_eq!(corpus.len(), want.len());
    let mut failures = Vec::new();
    for (text, want) in corpus.iter().zip(want) {
        check(&tok, text.as_str().expect("text"), &ids(want), &mut failures);
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn tokenizer_spm_special_tokens() {
    let tok = llama2();
    let json = read_json(CORPUS);
    for case in json["llama2"]["special"].as_array().expect("special cases") {
        let text = case["text"].as_str().expect("text");
        assert_eq!(tok.encode(text, false, true), ids(&case["ids"]), "{text:?}");
    }
    // Without special parsing "</s>" is plain text.
    let plain = tok.encode("a</s>", false, false);
    assert!(!plain.contains(&2), "{plain:?}");
    assert_eq!(tok.decode(&plain), "a</s>");
    // The AgentLM chat format as TGI tokenized it: BOS, then `</s><s>` as EOS and BOS.
    let prompt = "[INST] hi [/INST] Hello! </s><s>[INST] ls [/INST]";
    let ids = tok.encode(prompt, true, true);
    assert_eq!(ids[0], 1);
    assert_eq!(ids.iter().filter(|&&i| i == 2).count(), 1);
    assert_eq!(ids.iter().filter(|&&i| i == 1).count(), 2);
}

#[test]
fn tokenizer_spm_token_bytes() {
    let tok = llama2();
    assert_eq!(tok.token_bytes(3), [0x00]); // <0x00>
    assert_eq!(tok.token_bytes(13), b"\n"); // <0x0A>
    assert_eq!(tok.token_bytes(29871), b" "); // ▁
    assert_eq!(tok.token_bytes(15043), b" Hello");
    assert_eq!(tok.token_bytes(1), b""); // <s>
    assert_eq!(tok.token_bytes(2), b""); // </s>
    assert_eq!(tok.token_bytes(99_999), b""); // out of range
    assert_eq!(tok.decode(&[99_999, 15043]), "Hello");
}

#[test]
fn tokenizer_spm_stream_matches_decode() {
    let tok = llama2();
    let json = read_json(CORPUS);
    for text in json["corpus"].as_array().expect("corpus") {
        let text = text.as_str().expect("text");
        let ids = tok.encode(text, true, false);
        let mut stream = StreamDecoder::new(&tok);
        let mut streamed = String::new();
        for &id in &ids {
            let piece = stream.push(id);
            // Whatever was emitted so far is a prefix of the final text: nothing broken leaks.
            streamed.push_str(&piece);
            assert!(text.starts_with(&streamed), "{text:?}: streamed {streamed:?}");
        }
        streamed.push_str(&stream.finish());
        assert_eq!(streamed, tok.decode(&ids));
        assert_eq!(streamed, text);
    }
    // After a prompt, the first generated token keeps its space.
    let mut cont = StreamDecoder::after_prompt(&tok);
    assert_eq!(cont.push(15043), " Hello");
}
