//! GPT-2 style byte-level BPE (`tokenizer.ggml.model = "gpt2"`: SmolLM2, Llama-3, …).
//!
//! 1. A pre-tokenizer splits the text into words with one or more regexes, chosen by
//!    `tokenizer.ggml.pre`; every regex splits the pieces the previous one produced, and the
//!    text between matches is kept as pieces of its own (HF `tokenizers`' "isolated" split).
//! 2. Each word's UTF-8 bytes are mapped to printable characters with GPT-2's byte-to-unicode
//!    table (so a space is `'Ġ'`), one symbol per byte.
//! 3. The adjacent pair with the best (lowest) merge rank is merged, leftmost first on ties,
//!    until no listed merge applies; the symbols are the ids.

use super::{TokenType, TokenizerError};
use fancy_regex::Regex;
use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

/// GPT-2's pre-tokenizer regex (as in HF `tokenizers`' ByteLevel pre-tokenizer).
pub const GPT2_REGEX: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

/// Llama-3's pre-tokenizer regex (`tokenizer.ggml.pre = "llama-bpe"`).
pub const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Every digit on its own (StarCoder-family vocabularies such as SmolLM2).
pub const DIGITS_REGEX: &str = r"\p{N}";

/// The regexes (applied in order) and whether whole-word vocabulary hits skip the merges,
/// for a `tokenizer.ggml.pre` name.
pub fn pre_tokenizer_preset(pre: &str) -> Option<(&'static [&'static str], bool)> {
    Some(match pre {
        "default" | "gpt2" | "gpt-2" => (&[GPT2_REGEX], false),
        "smollm" | "starcoder" | "refact" => (&[DIGITS_REGEX, GPT2_REGEX], false),
        // Llama-3's HF tokenizer has `ignore_merges: true`.
        "llama-bpe" | "llama3" => (&[LLAMA3_REGEX], true),
        _ => return None,
    })
}

/// GPT-2's byte → printable character table: printable Latin-1 bytes stand for themselves,
/// the other 68 bytes take the code points from U+0100 on, in byte order.
pub fn byte_to_char_table() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut next = 256u32;
    for b in 0..=255u8 {
        let printable = matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        table[b as usize] = if printable {
            char::from(b)
        } else {
            let c = char::from_u32(next).expect("U+0100..U+0143 are valid chars");
            next += 1;
            c
        };
    }
    table
}

/// What each byte-level token decodes to: the inverse byte mapping of its characters.
pub(crate) fn token_bytes(tokens: &[String], types: &[TokenType]) -> Vec<Vec<u8>> {
    let char_to_byte: HashMap<char, u8> = byte_to_char_table()
        .iter()
        .enumerate()
        .map(|(b, &c)| (c, b as u8))
        .collect();
    tokens
        .iter()
        .zip(types)
        .map(|(t, ty)| match ty {
            TokenType::Normal | TokenType::Unused => {
                let mut out = Vec::with_capacity(t.len());
                for c in t.chars() {
                    match char_to_byte.get(&c) {
                        Some(&b) => out.push(b),
                        // Not produced by the byte mapping: keep the character itself.
                        None => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
                    }
                }
                out
            }
            TokenType::UserDefined => t.as_bytes().to_vec(),
            TokenType::Byte => super::spm::parse_byte_token(t).map(|b| vec![b]).unwrap_or_default(),
            TokenType::Control | TokenType::Unknown => Vec::new(),
        })
        .collect()
}

pub(crate) struct BpeModel {
    regexes: Vec<Regex>,
    ignore_merges: bool,
    /// (left id, right id) → (rank, merged id).
    merges: HashMap<(u32, u32), (u32, u32)>,
    byte_chars: [char; 256],
    /// The single-character token of each byte.
    byte_ids: [Option<u32>; 256],
    unk: Option<u32>,
}

/// A candidate merge; stale entries are detected when popped.
#[derive(PartialEq, Eq)]
struct Pair {
    rank: u32,
    left: usize,
    right: usize,
    left_id: u32,
    right_id: u32,
    merged: u32,
}

impl PartialOrd for Pair {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Pair {
    /// Max-heap order: lowest rank first, then the leftmost pair.
    fn cmp(&self, other: &Self) -> Ordering {
        other.rank.cmp(&self.rank).then_with(|| other.left.cmp(&self.left))
    }
}

#[derive(Clone, Copy)]
struct Symbol {
    id: u32,
    prev: Option<usize>,
    next: Option<usize>,
    alive: bool,
}

impl BpeModel {
    pub(crate) fn new(
        pre: &str,
        merges: &[String],
        token_to_id: &HashMap<String, u32>,
        unk: Option<u32>,
    ) -> Result<BpeModel, TokenizerError> {
        let (patterns, ignore_merges) =
            pre_tokenizer_preset(pre).ok_or_else(|| TokenizerError::UnsupportedPre(pre.to_string()))?;
        let regexes = patterns
            .iter()
            .map(|p| Regex::new(p).expect("the built-in pre-tokenizer regexes compile"))
            .collect();
        let byte_chars = byte_to_char_table();
        let mut byte_ids = [None; 256];
        for (b, c) in byte_chars.iter().enumerate() {
            byte_ids[b] = token_to_id.get(c.encode_utf8(&mut [0; 4]) as &str).copied();
        }
        let mut table = HashMap::with_capacity(merges.len());
        for (rank, line) in merges.iter().enumerate() {
            // Split at the first space after the first character (byte-level pieces never hold
            // a real space, but a defensive split keeps a leading one with the left side).
            let split = line
                .char_indices()
                .skip(1)
                .find(|&(_, c)| c == ' ')
                .map(|(i, _)| i)
                .ok_or_else(|| TokenizerError::InvalidVocab(format!("merge {rank} {line:?} has no space")))?;
            let (left, right) = (&line[..split], &line[split + 1..]);
            let id = |t: &str| {
                token_to_id.get(t).copied().ok_or_else(|| {
                    TokenizerError::InvalidVocab(format!(
                        "merge {rank} {line:?} refers to {t:?}, not in the vocabulary"
                    ))
                })
            };
            let merged = format!("{left}{right}");
            let key = (id(left)?, id(right)?);
            let value = (rank as u32, id(&merged)?);
            // The first (best-ranked) occurrence of a pair wins.
            table.entry(key).or_insert(value);
        }
        Ok(BpeModel {
            regexes,
            ignore_merges,
            merges: table,
            byte_chars,
            byte_ids,
            unk,
        })
    }

    /// The pre-tokenizer's words.
    pub(crate) fn pre_tokenize<'a>(&self, text: &'a str) -> Vec<&'a str> {
        let mut pieces = vec![text];
        for re in &self.regexes {
            let mut next = Vec::with_capacity(pieces.len() * 2);
            for piece in pieces {
                let mut last = 0;
                for m in re.find_iter(piece) {
                    // A backtracking-limit error leaves the rest of the piece whole.
                    let Ok(m) = m else { break };
                    if m.start() > last {
                        next.push(&piece[last..m.start()]);
                    }
                    if m.end() > m.start() {
                        next.push(m.as_str());
                    }
                    last = m.end();
                }
                if last < piece.len() {
                    next.push(&piece[last..]);
                }
            }
            pieces = next;
        }
        pieces
    }

    /// Encodes one text fragment (no special tokens in it) and appends the ids to `out`.
    pub(crate) fn encode(&self, text: &str, token_to_id: &HashMap<String, u32>, out: &mut Vec<u32>) {
        let mut mapped = String::new();
        for word in self.pre_tokenize(text) {
            if self.ignore_merges {
                mapped.clear();
                mapped.extend(word.bytes().map(|b| self.byte_chars[b as usize]));
                if let Some(&id) = token_to_id.get(&mapped) {
                    out.push(id);
                    continue;
                }
            }
            self.encode_word(word.as_bytes(), out);
        }
    }

    fn encode_word(&self, word: &[u8], out: &mut Vec<u32>) {
        let mut symbols: Vec<Symbol> = Vec::with_capacity(word.len());
        for &b in word {
            // Every byte has a token in a real byte-level vocabulary; otherwise UNK or nothing.
            let Some(id) = self.byte_ids[b as usize].or(self.unk) else {
                continue;
            };
            let i = symbols.len();
            symbols.push(Symbol {
                id,
                prev: i.checked_sub(1),
                next: None,
                alive: true,
            });
            if i > 0 {
                symbols[i - 1].next = Some(i);
            }
        }
        let mut heap = BinaryHeap::with_capacity(symbols.len());
        let try_add = |heap: &mut BinaryHeap<Pair>, symbols: &[Symbol], left: Option<usize>, right: Option<usize>| {
            let (Some(l), Some(r)) = (left, right) else { return };
            let (left_id, right_id) = (symbols[l].id, symbols[r].id);
            if let Some(&(rank, merged)) = self.merges.get(&(left_id, right_id)) {
                heap.push(Pair {
                    rank,
                    left: l,
                    right: r,
                    left_id,
                    right_id,
                    merged,
                });
            }
        };
        for i in 1..symbols.len() {
            try_add(&mut heap, &symbols, Some(i - 1), Some(i));
        }
        while let Some(p) = heap.pop() {
            let (l, r) = (symbols[p.left], symbols[p.right]);
            let valid = l.alive && r.alive && l.next == Some(p.right) && l.id == p.left_id && r.id == p.right_id;
            if !valid {
                continue;
            }
            symbols[p.left].id = p.merged;
            symbols[p.left].next = r.next;
            symbols[p.right].alive = false;
            if let Some(n) = r.next {
                symbols[n].prev = Some(p.left);
            }
            try_add(&mut heap, &symbols, symbols[p.left].prev, Some(p.left));
            try_add(&mut heap, &symbols, Some(p.left), symbols[p.left].next);
        }
        out.extend(symbols.iter().filter(|s| s.alive).map(|s| s.id));
    }
}
