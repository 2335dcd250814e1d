//! Streaming detokenization on a tiny SentencePiece vocabulary with byte-fallback tokens, so
//! every way of splitting a UTF-8 character across tokens can be fed in.

use edgeact_runtime::tokenizer::{StreamDecoder, TokenType, Tokenizer, TokenizerKind, VocabConfig};

/// Ids: 0 `<unk>`, 1 `<s>`, 2 `</s>`, 3..259 `<0x00>`..`<0xFF>`, 259 `▁`, 260 `▁hi`, 261 `é`,
/// 262 `hi` (SentencePiece only reaches `▁hi` through a piece `hi`).
fn tiny() -> Tokenizer {
    let mut tokens = vec!["<unk>".to_string(), "<s>".into(), "</s>".into()];
    let mut types = vec![TokenType::Unknown, TokenType::Control, TokenType::Control];
    for b in 0..=255u8 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(TokenType::Byte);
    }
    for t in ["▁", "▁hi", "é", "hi"] {
        tokens.push(t.into());
        types.push(TokenType::Normal);
    }
    let scores = (0..tokens.len()).map(|i| -(i as f32)).collect();
    Tokenizer::from_vocab(
        TokenizerKind::Spm,
        VocabConfig {
            tokens,
            scores,
            types,
            merges: Vec::new(),
            bos_id: Some(1),
            eos_id: Some(2),
            unk_id: Some(0),
            eot_ids: Vec::new(),
            add_bos: true,
            add_space_prefix: true,
        },
    )
    .expect("tiny vocab")
}

fn byte(b: u8) -> u32 {
    3 + u32::from(b)
}

#[test]
fn tokenizer_stream_holds_split_characters() {
    let tok = tiny();
    // "中" = E4 B8 AD arrives one byte per token.
    let mut s = StreamDecoder::after_prompt(&tok);
    assert_eq!(s.push(byte(0xE4)), "");
    assert!(s.has_pending());
    assert_eq!(s.push(byte(0xB8)), "");
    assert_eq!(s.push(byte(0xAD)), "中");
    assert!(!s.has_pending());
    // A 4-byte emoji after text: the text comes out at once, the emoji when complete.
    assert_eq!(s.push(260), " hi");
    let emoji = "😀".as_bytes();
    for &b in &emoji[..3] {
        assert_eq!(s.push(byte(b)), "");
    }
    assert_eq!(s.push(byte(emoji[3])), "😀");
    assert_eq!(s.finish(), "");
}

#[test]
fn tokenizer_stream_replaces_only_definitely_invalid_bytes() {
    let tok = tiny();
    let mut s = StreamDecoder::after_prompt(&tok);
    // 0xFF can never occur in UTF-8: replaced at once.
    assert_eq!(s.push(byte(0xFF)), "\u{FFFD}");
    // A lead byte followed by a non-continuation: the lead byte is invalid, the rest is kept.
    assert_eq!(s.push(byte(0xE4)), "");
    assert_eq!(s.push(260), "\u{FFFD} hi");
    // E4 B8 then "é": one replacement for the truncated sequence, as from_utf8_lossy does.
    assert_eq!(s.push(byte(0xE4)), "");
    assert_eq!(s.push(byte(0xB8)), "");
    assert_eq!(s.push(261), "\u{FFFD}é");
    // An incomplete character at the very end becomes U+FFFD only at finish.
    assert_eq!(s.push(byte(0xF0)), "");
    assert_eq!(s.push(byte(0x9F)), "");
    assert_eq!(s.finish(), "\u{FFFD}");
    assert_eq!(s.finish(), "");
}

#[test]
fn tokenizer_stream_equals_decode_for_all_splits() {
    let tok = tiny();
    let text = "a€b😀c\u{10FFFF}";
    // Every byte as a byte token, with invalid bytes spliced in at every position.
    let base: Vec<u32> = text.bytes().map(byte).collect();
    for pos in 0..=base.len() {
        for bad in [0x80u8, 0xC0, 0xE2, 0xF4, 0xFF] {
            let mut ids = base.clone();
            ids.insert(pos, byte(bad));
            let mut s = StreamDecoder::after_prompt(&tok);
            let mut streamed: String = ids.iter().map(|&id| s.push(id)).collect();
            streamed.push_str(&s.finish());
            let bytes: Vec<u8> = ids.iter().flat_map(|&id| tok.token_bytes(id).to_vec()).collect();
            assert_eq!(streamed, String::from_utf8_lossy(&bytes), "bad byte {bad:#x} at {pos}");
        }
    }
}

#[test]
fn tokenizer_stream_leading_space_rule() {
    let tok = tiny();
    // A sequence decoded from its start drops the dummy-prefix space once, like decode().
    let ids = tok.encode("hi hi", true, false);
    assert_eq!(ids, [1, 260, 260]);
    let mut s = StreamDecoder::new(&tok);
    let out: Vec<String> = ids.iter().map(|&id| s.push(id)).collect();
    assert_eq!(out, ["", "hi", " hi"]);
    assert_eq!(tok.decode(&ids), "hi hi");
    // Continuing a prompt keeps the space of the first generated token.
    let mut s = StreamDecoder::after_prompt(&tok);
    assert_eq!(s.push(260), " hi");
    // Control tokens print nothing.
    assert_eq!(s.push(2), "");
}

#[test]
fn tokenizer_spm_byte_fallback_and_unk() {
    let tok = tiny();
    // "x" is no piece: byte fallback; "é" is a piece.
    assert_eq!(tok.encode("x", false, false), [259, byte(b'x')]);
    assert_eq!(tok.encode("é", false, false), [259, 261]);
    assert_eq!(tok.decode(&tok.encode("x€é", true, false)), "x€é");
}
