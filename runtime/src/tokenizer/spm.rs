//! SentencePiece BPE, the Llama-2 tokenizer.
//!
//! Spaces become `'▁'` (U+2581) and, with the dummy-prefix rule, one `'▁'` goes in front of
//! the text. The text starts as one symbol per character; the adjacent pair whose merged text
//! is a vocabulary piece with the highest score is merged (ties: the leftmost pair), until no
//! pair merges. This is how SentencePiece's BPE model and llama.cpp encode: the priority is
//! the score of the merged piece, not a merge list. A character that is not a piece becomes
//! its UTF-8 bytes as `<0xXX>` byte-fallback tokens (or UNK without them).

use super::TokenType;
use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

/// The space marker SentencePiece uses inside pieces.
pub const SPACE_MARKER: char = '\u{2581}';

pub(crate) struct SpmModel {
    scores: Vec<f32>,
    /// Pieces a merge may produce (normal, user-defined and unused pieces; never control,
    /// unknown or byte tokens, which SentencePiece does not build from text).
    mergeable: Vec<bool>,
    byte_ids: [Option<u32>; 256],
    unk: Option<u32>,
}

/// A candidate merge of two adjacent symbols.
struct Bigram {
    score: f32,
    left: usize,
    right: usize,
    /// Byte length of the merged text; a stale entry (one side already merged elsewhere)
    /// no longer matches it.
    size: usize,
}

impl PartialEq for Bigram {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Bigram {}
impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Bigram {
    /// Max-heap order: higher score first, then the leftmost pair.
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then_with(|| other.left.cmp(&self.left))
    }
}

#[derive(Clone, Copy)]
struct Symbol {
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

/// Parses `<0xXX>` into its byte.
pub(crate) fn parse_byte_token(text: &str) -> Option<u8> {
    let hex = text.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

/// What each SentencePiece token decodes to.
pub(crate) fn token_bytes(tokens: &[String], types: &[TokenType]) -> Vec<Vec<u8>> {
    tokens
        .iter()
        .zip(types)
        .map(|(t, ty)| match ty {
            TokenType::Normal | TokenType::Unused => t.replace(SPACE_MARKER, " ").into_bytes(),
            TokenType::UserDefined => t.as_bytes().to_vec(),
            TokenType::Byte => parse_byte_token(t).map(|b| vec![b]).unwrap_or_default(),
            TokenType::Control | TokenType::Unknown => Vec::new(),
        })
        .collect()
}

impl SpmModel {
    pub(crate) fn new(scores: Vec<f32>, tokens: &[String], types: &[TokenType], unk: Option<u32>) -> SpmModel {
        let mut byte_ids = [None; 256];
        for (i, (t, ty)) in tokens.iter().zip(types).enumerate() {
            if *ty == TokenType::Byte {
                if let Some(b) = parse_byte_token(t) {
                    byte_ids[b as usize].get_or_insert(i as u32);
                }
            }
        }
        let mergeable = types
            .iter()
            .map(|ty| matches!(ty, TokenType::Normal | TokenType::UserDefined | TokenType::Unused))
            .collect();
        SpmModel {
            scores,
            mergeable,
            byte_ids,
            unk,
        }
    }

    fn piece_id(&self, piece: &str, token_to_id: &HashMap<String, u32>) -> Option<u32> {
        token_to_id
            .get(piece)
            .copied()
            .filter(|&id| self.mergeable[id as usize])
    }

    /// Encodes one text fragment (no special tokens in it) and appends the ids to `out`.
    pub(crate) fn encode(&self, text: &str, add_prefix: bool, token_to_id: &HashMap<String, u32>, out: &mut Vec<u32>) {
        if text.is_empty() {
            return;
        }
        let mut s = String::with_capacity(text.len() + 3 * (text.len() / 4 + 2));
        if add_prefix {
            s.push(SPACE_MARKER);
        }
        for c in text.chars() {
            s.push(if c == ' ' { SPACE_MARKER } else { c });
        }

        let mut symbols: Vec<Symbol> = Vec::with_capacity(s.len());
        for (start, c) in s.char_indices() {
            let i = symbols.len();
            symbols.push(Symbol {
                start,
                len: c.len_utf8(),
                prev: i.checked_sub(1),
                next: None,
            });
            if i > 0 {
                symbols[i - 1].next = Some(i);
            }
        }

        let mut heap = BinaryHeap::with_capacity(symbols.len());
        let try_add = |heap: &mut BinaryHeap<Bigram>, symbols: &[Symbol], left: Option<usize>, right: Option<usize>| {
            let (Some(l), Some(r)) = (left, right) else { return };
            let (a, b) = (symbols[l], symbols[r]);
            let piece = &s[a.start..b.start + b.len];
            if let Some(id) = self.piece_id(piece, token_to_id) {
                heap.push(Bigram {
                    score: self.scores[id as usize],
                    left: l,
                    right: r,
                    size: piece.len(),
                });
            }
        };
        for i in 1..symbols.len() {
            try_add(&mut heap, &symbols, Some(i - 1), Some(i));
        }

        while let Some(bigram) = heap.pop() {
            let (l, r) = (bigram.left, bigram.right);
            let (left, right) = (symbols[l], symbols[r]);
            if left.len == 0 || right.len == 0 || left.len + right.len != bigram.size {
                continue; // stale: one side was merged into something else meanwhile
            }
            symbols[l].len += right.len;
            symbols[r].len = 0;
            symbols[l].next = right.next;
            if let Some(n) = right.next {
                symbols[n].prev = Some(l);
            }
            try_add(&mut heap, &symbols, symbols[l].prev, Some(l));
            try_add(&mut heap, &symbols, Some(l), symbols[l].next);
        }

        let mut cur = Some(0);
        while let Some(i) = cur {
            let sym = symbols[i];
            let piece = &s[sym.start..sym.start + sym.len];
            match self.piece_id(piece, token_to_id) {
                Some(id) => out.push(id),
                None => {
                    // Byte fallback; a vocabulary without byte tokens gives one UNK instead.
                    let bytes = piece.as_bytes();
                    if bytes.iter().all(|&b| self.byte_ids[b as usize].is_some()) {
                        out.extend(bytes.iter().filter_map(|&b| self.byte_ids[b as usize]));
                    } else if let Some(unk) = self.unk {
                        out.push(unk);
                    }
                }
            }
            cur = sym.next;
        }
    }
}
