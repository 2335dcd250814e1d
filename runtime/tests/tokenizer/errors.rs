//! Broken or missing tokenizer metadata gives a clear error, never a panic. The GGUF files
//! are written by hand here (header + key/value pairs, no tensors).

use edgeact_runtime::gguf::GgufFile;
use edgeact_runtime::tokenizer::{Tokenizer, TokenizerError};

enum V {
    Str(&'static str),
    U32(u32),
    I32(i32),
    Bool(bool),
    Strs(Vec<&'static str>),
    F32s(Vec<f32>),
    I32s(Vec<i32>),
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// A GGUF v3 image with these metadata pairs.
fn gguf(kvs: &[(&str, V)]) -> GgufFile {
    let mut out = b"GGUF".to_vec();
    out.extend_from_slice(&3u32.to_le_bytes());
    out.extend_from_slice(&0u64.to_le_bytes());
    out.extend_from_slice(&(kvs.len() as u64).to_le_bytes());
    for (key, v) in kvs {
        put_str(&mut out, key);
        match v {
            V::Str(s) => {
                out.extend_from_slice(&8u32.to_le_bytes());
                put_str(&mut out, s);
            }
            V::U32(x) => {
                out.extend_from_slice(&4u32.to_le_bytes());
                out.extend_from_slice(&x.to_le_bytes());
            }
            V::I32(x) => {
                out.extend_from_slice(&5u32.to_le_bytes());
                out.extend_from_slice(&x.to_le_bytes());
            }
            V::Bool(b) => {
                out.extend_from_slice(&7u32.to_le_bytes());
                out.push(u8::from(*b));
            }
            V::Strs(items) => {
                out.extend_from_slice(&9u32.to_le_bytes());
                out.extend_from_slice(&8u32.to_le_bytes());
                out.extend_from_slice(&(items.len() as u64).to_le_bytes());
                for s in items {
                    put_str(&mut out, s);
                }
            }
            V::F32s(items) => {
                out.extend_from_slice(&9u32.to_le_bytes());
                out.extend_from_slice(&6u32.to_le_bytes());
                out.extend_from_slice(&(items.len() as u64).to_le_bytes());
                for x in items {
                    out.extend_from_slice(&x.to_le_bytes());
                }
            }
            V::I32s(items) => {
                out.extend_from_slice(&9u32.to_le_bytes());
                out.extend_from_slice(&5u32.to_le_bytes());
                out.extend_from_slice(&(items.len() as u64).to_le_bytes());
                for x in items {
                    out.extend_from_slice(&x.to_le_bytes());
                }
            }
        }
    }
    out.resize(out.len().div_ceil(32) * 32, 0);
    GgufFile::from_bytes(out).expect("valid GGUF")
}

fn err(kvs: &[(&str, V)]) -> String {
    match Tokenizer::from_gguf(&gguf(kvs)) {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

fn spm_tokens() -> V {
    V::Strs(vec!["<unk>", "<s>", "</s>", "▁a"])
}

#[test]
fn tokenizer_errors_missing_or_unknown_model() {
    let e = Tokenizer::from_gguf(&gguf(&[("general.architecture", V::Str("llama"))])).unwrap_err();
    assert!(matches!(e, TokenizerError::NoTokenizer), "{e}");
    let e = err(&[("tokenizer.ggml.model", V::Str("wordpiece"))]);
    assert!(e.contains("unsupported tokenizer model \"wordpiece\""), "{e}");
    let e = err(&[("tokenizer.ggml.model", V::U32(3))]);
    assert!(e.contains("tokenizer.ggml.model") && e.contains("string"), "{e}");
}

#[test]
fn tokenizer_errors_bad_vocab() {
    let e = err(&[("tokenizer.ggml.model", V::Str("llama"))]);
    assert!(e.contains("tokenizer.ggml.tokens is missing"), "{e}");
    let e = err(&[
        ("tokenizer.ggml.model", V::Str("llama")),
        ("tokenizer.ggml.tokens", V::Strs(vec![])),
    ]);
    assert!(e.contains("empty"), "{e}");
    let e = err(&[
        ("tokenizer.ggml.model", V::Str("llama")),
        ("tokenizer.ggml.tokens", V::F32s(vec![1.0])),
    ]);
    assert!(e.contains("not a string"), "{e}");
    let e = err(&[
        ("tokenizer.ggml.model", V::Str("llama")),
        ("tokenizer.ggml.tokens", spm_tokens()),
        ("tokenizer.ggml.scores", V::F32s(vec![0.0; 3])),
    ]);
    assert!(e.contains("4 tokens but 3 scores"), "{e}");
    let e = err(&[
        ("tokenizer.ggml.model", V::Str("llama")),
        ("tokenizer.ggml.tokens", spm_tokens()),
        ("tokenizer.ggml.scores", V::F32s(vec![0.0; 4])),
        ("tokenizer.ggml.token_type", V::I32s(vec![2, 3, 3, 9])),
    ]);
    assert!(e.contains("token_type[3] = 9"), "{e}");
    let e = err(&[
        ("tokenizer.ggml.model", V::Str("llama")),
        ("tokenizer.ggml.tokens", spm_tokens()),
        ("tokenizer.ggml.scores", V::F32s(vec![0.0; 4])),
        ("tokenizer.ggml.bos_token_id", V::U32(4)),
    ]);
    assert!(e.contains("BOS id 4 is outside the vocabulary of 4 tokens"), "{e}");
}

#[test]
fn tokenizer_errors_bpe() {
    let e = err(&[
        ("tokenizer.ggml.model", V::Str("gpt2")),
        ("tokenizer.ggml.tokens", V::Strs(vec!["a", "b"])),
    ]);
    assert!(e.contains("tokenizer.ggml.merges is missing"), "{e}");
    let e = err(&[
        ("tokenizer.ggml.model", V::Str("gpt2")),
        ("tokenizer.ggml.pre", V::Str("mystery")),
        ("tokenizer.ggml.tokens", V::Strs(vec!["a", "b"])),
        ("tokenizer.ggml.merges", V::Strs(vec![])),
    ]);
    assert!(e.contains("unsupported pre-tokenizer \"mystery\""), "{e}");
    let e = err(&[
        ("tokenizer.ggml.model", V::Str("gpt2")),
        ("tokenizer.ggml.tokens", V::Strs(vec!["a", "b"])),
        ("tokenizer.ggml.merges", V::Strs(vec!["ab"])),
    ]);
    assert!(e.contains("has no space"), "{e}");
}

#[test]
fn tokenizer_minimal_spm_from_gguf() {
    let file = gguf(&[
        ("tokenizer.ggml.model", V::Str("llama")),
        ("tokenizer.ggml.tokens", spm_tokens()),
        ("tokenizer.ggml.scores", V::F32s(vec![0.0, 0.0, 0.0, -1.0])),
        ("tokenizer.ggml.token_type", V::I32s(vec![2, 3, 3, 1])),
        ("tokenizer.ggml.bos_token_id", V::U32(1)),
        ("tokenizer.ggml.eos_token_id", V::U32(2)),
        ("tokenizer.ggml.unknown_token_id", V::U32(0)),
        ("tokenizer.ggml.add_bos_token", V::Bool(true)),
        // Some converters write -1 for "none": treated as absent, not as an error.
        ("tokenizer.ggml.eot_token_id", V::I32(-1)),
    ]);
    let tok = Tokenizer::from_gguf(&file).unwrap();
    // "▁a" is a piece; "▁b" is not and there are no byte tokens: one UNK per unknown piece.
    assert_eq!(tok.encode("a", true, false), [1, 3]);
    assert_eq!(tok.encode("a b", false, false), [3, 0, 0]);
    assert!(tok.add_bos_default() && tok.is_eog(2));
    assert_eq!(tok.eog_ids(), [2]);
}

#[test]
fn chat_template_reads_a_negative_or_foreign_token_id_as_no_token() {
    use edgeact_runtime::chat::{ChatTemplate, Message};
    let template = "{{ bos_token }}[{% for m in messages %}{{ m['content'] }}{% endfor %}]{{ eos_token }}";
    for (bos, eos) in [
        (V::I32(-1), V::U32(2)),
        (V::U32(99), V::I32(-1)),
        (V::Str("x"), V::U32(2)),
    ] {
        let file = gguf(&[
            ("tokenizer.ggml.model", V::Str("llama")),
            ("tokenizer.ggml.tokens", spm_tokens()),
            ("tokenizer.ggml.bos_token_id", bos),
            ("tokenizer.ggml.eos_token_id", eos),
            ("tokenizer.chat_template", V::Str(template)),
        ]);
        let t = ChatTemplate::from_gguf(&file).unwrap();
        let text = t.render(&[Message::user("hi")], false).unwrap();
        assert!(text == "[hi]</s>" || text == "[hi]", "{text:?}");
    }
}

#[test]
fn tokenizer_and_template_are_shareable_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Tokenizer>();
    assert_send_sync::<edgeact_runtime::chat::ChatTemplate>();
}
