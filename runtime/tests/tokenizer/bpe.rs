//! Byte-level BPE: SmolLM2-135M-Instruct's tokenizer (GGUF fetched by
//! `scripts/fetch-smollm2.sh`) against Hugging Face `tokenizers` on the test corpus, plus small
//! synthetic vocabularies that need no download.

use edgeact_runtime::gguf::GgufFile;
use edgeact_runtime::tokenizer::bpe::byte_to_char_table;
use edgeact_runtime::tokenizer::{StreamDecoder, TokenType, Tokenizer, TokenizerKind, VocabConfig};
use serde_json::Value;

const SMOLLM2: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../.cache/models/SmolLM2-135M-Instruct.Q4_1.gguf"
);
const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/tokenizer/corpus.json");

fn smollm2() -> Option<Tokenizer> {
    if !std::path::Path::new(SMOLLM2).exists() {
        eprintln!("skipping: {SMOLLM2} is absent (run scripts/fetch-smollm2.sh)");
        return None;
    }
    let file = GgufFile::open(SMOLLM2).expect("open SmolLM2");
    Some(Tokenizer::from_gguf(&file).expect("load SmolLM2's tokenizer"))
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("an id list")
        .iter()
        .map(|x| x.as_u64().expect("an id") as u32)
        .collect()
}

fn corpus() -> Value {
    serde_json::from_str(&std::fs::read_to_string(CORPUS).expect("read corpus.json")).expect("parse corpus.json")
}

#[test]
fn tokenizer_bpe_smollm2_metadata_and_prompt() {
    let Some(tok) = smollm2() else { return };
    assert_eq!(tok.kind(), &TokenizerKind::Bpe { pre: "smollm".into() });
    assert_eq!(tok.n_vocab(), 49152);
    assert!(!tok.add_bos_default());
    assert_eq!(
        tok.encode("The capital of France is", false, false),
        [504, 3575, 282, 4649, 314]
    );
    // <|im_end|> (EOS) and <|endoftext|> end a generation; <|im_start|> does not.
    assert!(tok.is_eog(2) && tok.is_eog(0) && !tok.is_eog(1));
    assert_eq!(tok.token_type(1), Some(TokenType::Control));
    // The greedy continuation from the model README decodes to its text.
    let reply = [7042, 30, 198, 198, 504, 2988, 314, 42, 216, 34, 32, 33];
    assert_eq!(tok.decode(&reply), " Paris.\n\nThe answer is: 201");
    let mut stream = StreamDecoder::new(&tok);
    let streamed: String = reply.iter().map(|&id| stream.push(id)).collect();
    assert_eq!(streamed, " Paris.\n\nThe answer is: 201");
}

#[test]
fn tokenizer_bpe_smollm2_hf_corpus() {
    let Some(tok) = smollm2() else { return };
    let json = corpus();
    let texts = json["corpus"].as_array().expect("corpus");
    let want = json["smollm2"]["corpus"].as_array().expect("smollm2 ids");
    assert_eq!(texts.len(), want.len());
    let mut failures = Vec::new();
    for (text, want) in texts.iter().zip(want) {
        let text = text.as_str().expect("text");
        let want = ids(want);
        let got = tok.encode(text, false, false);
        if got != want {
            failures.push(format!("{text:?}: got {got:?}, want {want:?}"));
        } else if tok.decode(&got) != text {
            failures.push(format!("{text:?}: decodes back to {:?}", tok.decode(&got)));
        }
        // Streaming gives the same text, never a broken character on the way.
        let mut stream = StreamDecoder::new(&tok);
        let mut streamed = String::new();
        for &id in &got {
            streamed.push_str(&stream.push(id));
            assert!(text.starts_with(&streamed), "{text:?}: streamed {streamed:?}");
        }
        streamed.push_str(&stream.finish());
        assert_eq!(streamed, text);
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn tokenizer_bpe_smollm2_special_tokens() {
    let Some(tok) = smollm2() else { return };
    let json = corpus();
    for case in json["smollm2"]["special"].as_array().expect("special cases") {
        let text = case["text"].as_str().expect("text");
        assert_eq!(tok.encode(text, false, true), ids(&case["ids"]), "{text:?}");
        // Without special parsing the markers are ordinary text.
        let plain = tok.encode(text, false, false);
        assert!(plain.iter().all(|&id| id > 16), "{text:?}: {plain:?}");
    }
}

/// A byte-level vocabulary: the 256 byte characters, then `merges` applied in order.
fn tiny(pre: &str, merges: &[&str], extra: &[&str]) -> Tokenizer {
    let table = byte_to_char_table();
    let mut tokens: Vec<String> = table.iter().map(|c| c.to_string()).collect();
    for m in merges {
        tokens.push(m.replace(' ', ""));
    }
    tokens.extend(extra.iter().map(|s| s.to_string()));
    tokens.push("<|end|>".into());
    let mut types = vec![TokenType::Normal; tokens.len()];
    *types.last_mut().unwrap() = TokenType::Control;
    let eos = (tokens.len() - 1) as u32;
    Tokenizer::from_vocab(
        TokenizerKind::Bpe { pre: pre.into() },
        VocabConfig {
            tokens,
            scores: Vec::new(),
            types,
            merges: merges.iter().map(|s| s.to_string()).collect(),
            bos_id: None,
            eos_id: Some(eos),
            unk_id: None,
            eot_ids: Vec::new(),
            add_bos: false,
            add_space_prefix: false,
        },
    )
    .expect("tiny vocab")
}

#[test]
fn tokenizer_bpe_merge_order() {
    // Ranks decide, not length: "a b" (rank 0) beats "b c" (rank 1) in "abc".
    let tok = tiny("gpt2", &["a b", "b c", "ab c"], &[]);
    let ab = tok.token_id("ab").unwrap();
    let abc = tok.token_id("abc").unwrap();
    assert_eq!(tok.encode("abc", false, false), [abc]);
    assert_eq!(tok.encode("abx", false, false), [ab, u32::from(b'x')]);
    // Equal ranks: leftmost first, so "aaa" → "aa" + "a".
    let tok = tiny("gpt2", &["a a"], &[]);
    let aa = tok.token_id("aa").unwrap();
    let a = tok.token_id("a").unwrap();
    assert_eq!(tok.encode("aaa", false, false), [aa, a]);
    assert_eq!(tok.encode("aaaa", false, false), [aa, aa]);
    // " a" is one pre-tokenizer word: the space byte maps to 'Ġ'.
    let tok = tiny("gpt2", &["Ġ a"], &[]);
    assert_eq!(tok.encode(" a", false, false), [tok.token_id("Ġa").unwrap()]);
    assert_eq!(tok.decode(&tok.encode(" a b\n", false, false)), " a b\n");
}

#[test]
fn tokenizer_bpe_pre_tokenizers() {
    // GPT-2 keeps digit runs together; smollm splits every digit.
    let tok = tiny("gpt2", &["1 2"], &[]);
    assert_eq!(tok.encode("12", false, false), [tok.token_id("12").unwrap()]);
    let tok = tiny("smollm", &["1 2"], &[]);
    assert_eq!(tok.encode("12", false, false).len(), 2);
    // llama-bpe: a whole word in the vocabulary is taken as is, whatever the merges say.
    let tok = tiny("llama-bpe", &[], &["hello"]);
    assert_eq!(tok.encode("hello", false, false), [tok.token_id("hello").unwrap()]);
    let tok = tiny("gpt2", &[], &["hello"]);
    assert_eq!(tok.encode("hello", false, false).len(), 5);
}

#[test]
fn tokenizer_bpe_control_tokens_and_errors() {
    let tok = tiny("gpt2", &[], &[]);
    let end = tok.token_id("<|end|>").unwrap();
    assert_eq!(tok.encode("a<|end|>", false, true).last(), Some(&end));
    assert!(!tok.encode("a<|end|>", false, false).contains(&end));
    assert!(tok.is_eog(end));
    assert_eq!(tok.token_bytes(end), b"");

    let mut config = VocabConfig {
        tokens: vec!["a".into(), "b".into()],
        scores: Vec::new(),
        types: Vec::new(),
        merges: vec!["a c".into()],
        bos_id: None,
        eos_id: None,
        unk_id: None,
        eot_ids: Vec::new(),
        add_bos: false,
        add_space_prefix: false,
    };
    let err = Tokenizer::from_vocab(TokenizerKind::Bpe { pre: "gpt2".into() }, config.clone()).unwrap_err();
    assert!(err.to_string().contains("not in the vocabulary"), "{err}");
    config.merges.clear();
    let err = Tokenizer::from_vocab(TokenizerKind::Bpe { pre: "klingon".into() }, config).unwrap_err();
    assert!(err.to_string().contains("unsupported pre-tokenizer"), "{err}");
}

/// SmolLM2's vocabulary and merges with another `tokenizer.ggml.pre` preset.
fn smollm2_with_pre(pre: &str) -> Option<Tokenizer> {
    if !std::path::Path::new(SMOLLM2).exists() {
        eprintln!("skipping: {SMOLLM2} is absent (run scripts/fetch-smollm2.sh)");
        return None;
    }
    let file = GgufFile::open(SMOLLM2).expect("open SmolLM2");
    let strings = |key: &str| -> Vec<String> {
        let values = file.get_array(key).expect(key).expect(key);
        values
            .iter()
            .map(|v| v.as_str().expect("a string").to_string())
            .collect()
    };
    let types = file.get_array("tokenizer.ggml.token_type").unwrap().unwrap();
    let config = VocabConfig {
        tokens: strings("tokenizer.ggml.tokens"),
        scores: Vec::new(),
        types: types
            .iter()
            .map(|v| TokenType::from_id(v.as_i64().unwrap()).unwrap())
            .collect(),
        merges: strings("tokenizer.ggml.merges"),
        bos_id: None,
        eos_id: Some(2),
        unk_id: None,
        eot_ids: Vec::new(),
        add_bos: false,
        add_space_prefix: false,
    };
    Some(Tokenizer::from_vocab(TokenizerKind::Bpe { pre: pre.into() }, config).expect("tokenizer"))
}

/// The `gpt2` and `llama-bpe` presets on a real vocabulary, against HF `tokenizers` with the
/// same pre-tokenizer (for `llama-bpe`: Llama-3's split regex and `ignore_merges`).
#[test]
fn tokenizer_bpe_other_presets_hf_corpus() {
    let json = corpus();
    let texts = json["corpus"].as_array().expect("corpus");
    for pre in ["gpt2", "llama-bpe"] {
        let Some(tok) = smollm2_with_pre(pre) else { return };
        let want = json["smollm2"]["other_pre"][pre].as_array().expect("ids");
        let mut failures = Vec::new();
        for (text, want) in texts.iter().zip(want) {
            let text = text.as_str().expect("text");
            let got = tok.encode(text, false, false);
            if got != ids(want) {
                failures.push(format!("{pre} {text:?}: got {got:?}, want {:?}", ids(want)));
            }
            assert_eq!(tok.decode(&got), text);
        }
        assert!(
            failures.is_empty(),
            "{} mismatches:\n{}",
            failures.len(),
            failures.join("\n")
        );
    }
}
