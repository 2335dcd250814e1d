//! Random texts (mixed scripts, emoji, whitespace, control characters and special-token
//! markers) never make the tokenizers panic, and decode(encode(t)) == t without special
//! parsing; with special parsing every marker becomes exactly one id.

use edgeact_runtime::gguf::GgufFile;
use edgeact_runtime::tokenizer::{StreamDecoder, Tokenizer};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const LLAMA_VOCAB: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/models/llama2-tokenizer/ggml-vocab-llama-spm.gguf"
);
const SMOLLM2: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../.cache/models/SmolLM2-135M-Instruct.Q4_1.gguf"
);

const PIECES: &[&str] = &[
    "a",
    "the",
    " ",
    "  ",
    "\t",
    "\n",
    "\r\n",
    "é",
    "ß",
    "中",
    "文",
    "😀",
    "👍🏽",
    "\u{200d}",
    "\u{0301}",
    "0",
    "42",
    "½",
    "'s",
    "'LL",
    "!",
    "...",
    "<",
    ">",
    "</s>",
    "<s>",
    "<|im_start|>",
    "<|im_end|>",
    "\u{1b}[K",
    "\u{0}",
    "\u{7f}",
    "\u{10FFFF}",
    "\u{FFFD}",
    "▁",
    "Ġ",
    "ﬁ",
];

fn random_text(rng: &mut StdRng) -> String {
    let n = rng.random_range(0..24);
    (0..n).map(|_| PIECES[rng.random_range(0..PIECES.len())]).collect()
}

/// `spm`: SentencePiece reads a literal `'▁'` in the input as a space (as SentencePiece and
/// HF do), so it decodes to one.
fn check(tok: &Tokenizer, markers: &[(&str, u32)], spm: bool) {
    let mut rng = StdRng::seed_from_u64(0x5eed);
    for _ in 0..2000 {
        let text = random_text(&mut rng);
        let ids = tok.encode(&text, false, false);
        let text = if spm { text.replace('▁', " ") } else { text };
        assert_eq!(tok.decode(&ids), text, "{ids:?}");
        let mut stream = StreamDecoder::new(tok);
        let mut streamed: String = ids.iter().map(|&id| stream.push(id)).collect();
        streamed.push_str(&stream.finish());
        assert_eq!(streamed, text);

        let special = tok.encode(&text, true, true);
        for (marker, id) in markers {
            assert_eq!(
                special.iter().filter(|&&x| x == *id).count(),
                text.matches(marker).count() + usize::from(Some(*id) == tok.bos_id()),
                "{text:?}: {special:?}"
            );
        }
    }
}

#[test]
fn tokenizer_roundtrip_llama2() {
    let file = GgufFile::open(LLAMA_VOCAB).expect("open llama vocab");
    let tok = Tokenizer::from_gguf(&file).expect("tokenizer");
    check(&tok, &[("</s>", 2), ("<s>", 1)], true);
}

#[test]
fn tokenizer_roundtrip_smollm2() {
    if !std::path::Path::new(SMOLLM2).exists() {
        eprintln!("skipping: {SMOLLM2} is absent (run scripts/fetch-smollm2.sh)");
        return;
    }
    let file = GgufFile::open(SMOLLM2).expect("open SmolLM2");
    let tok = Tokenizer::from_gguf(&file).expect("tokenizer");
    check(&tok, &[("<|im_start|>", 1), ("<|im_end|>", 2)], false);
}
