//! Text ↔ token ids for the two tokenizer families GGUF files carry:
//!
//! - `tokenizer.ggml.model = "llama"`: SentencePiece BPE (Llama-2 / AgentLM), see [`spm`];
//! - `tokenizer.ggml.model = "gpt2"`: GPT-2 style byte-level BPE with ranked merges and a
//!   pre-tokenizer regex chosen by `tokenizer.ggml.pre` (SmolLM2, Llama-3), see [`bpe`].
//!
//! One [`Tokenizer`] type hides the difference. Special tokens (control and user-defined
//! tokens) are split out of the text before the model sees it, the way llama.cpp and Hugging
//! Face `tokenizers` do; [`StreamDecoder`] turns generated ids back into text without ever
//! emitting a broken UTF-8 character.

// Byte-level BPE needs a regex engine for its pre-tokenizer; crates that never tokenize
// (`edgeact-quantize`) build without it.
#[cfg(feature = "tokenizer-bpe")]
pub mod bpe;
pub mod spm;
mod stream;

pub use stream::{StreamDecoder, TokenDecoder};

use crate::gguf::{GgufError, GgufFile};
use std::collections::HashMap;

/// Why a tokenizer could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error("the file has no tokenizer (metadata key \"tokenizer.ggml.model\" is missing)")]
    NoTokenizer,
    #[error("unsupported tokenizer model {0:?} (supported: \"llama\" = SentencePiece BPE, \"gpt2\" = byte-level BPE)")]
    UnsupportedModel(String),
    #[error(
        "unsupported pre-tokenizer {0:?} (tokenizer.ggml.pre; supported: default, gpt2, smollm, llama-bpe, llama3)"
    )]
    UnsupportedPre(String),
    #[error("invalid vocabulary: {0}")]
    InvalidVocab(String),
}

/// What a vocabulary entry is, with GGUF's `tokenizer.ggml.token_type` numbering.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TokenType {
    Normal,
    Unknown,
    /// BOS, EOS, `<|im_start|>`…: produced only from literal text when special parsing is on.
    Control,
    /// Added tokens that are always matched as a whole in the input text.
    UserDefined,
    Unused,
    /// SentencePiece byte-fallback tokens `<0xXX>`.
    Byte,
}

impl TokenType {
    pub fn from_id(id: i64) -> Option<TokenType> {
        Some(match id {
            1 => TokenType::Normal,
            2 => TokenType::Unknown,
            3 => TokenType::Control,
            4 => TokenType::UserDefined,
            5 => TokenType::Unused,
            6 => TokenType::Byte,
            _ => return None,
        })
    }
}

/// Which algorithm a [`Tokenizer`] runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenizerKind {
    /// SentencePiece BPE driven by piece scores.
    Spm,
    /// Byte-level BPE driven by merge ranks; `pre` names the pre-tokenizer (`tokenizer.ggml.pre`).
    Bpe { pre: String },
}

/// Everything needed to build a tokenizer without a GGUF file (tests, converters).
#[derive(Clone, Debug)]
pub struct VocabConfig {
    pub tokens: Vec<String>,
    /// One per token for SentencePiece (the merge priority); may be empty for byte-level BPE.
    pub scores: Vec<f32>,
    /// One per token; empty means every token is [`TokenType::Normal`].
    pub types: Vec<TokenType>,
    /// Byte-level BPE merges, `"left right"`, best first. Empty for SentencePiece.
    pub merges: Vec<String>,
    pub bos_id: Option<u32>,
    pub eos_id: Option<u32>,
    pub unk_id: Option<u32>,
    /// Extra end-of-generation ids (end-of-turn, end-of-message).
    pub eot_ids: Vec<u32>,
    pub add_bos: bool,
    /// SentencePiece's dummy prefix: a space is added in front of the text (and after every
    /// special token), as `add_dummy_prefix` does.
    pub add_space_prefix: bool,
}

/// A GGUF file's tokenizer. Cheap to share by reference; encoding does not mutate it.
pub struct Tokenizer {
    kind: TokenizerKind,
    tokens: Vec<String>,
    types: Vec<TokenType>,
    /// What each id decodes to (control tokens decode to nothing).
    bytes: Vec<Vec<u8>>,
    token_to_id: HashMap<String, u32>,
    /// Tokens that are split out of the input text as a whole, longest first.
    specials: Vec<(String, u32, TokenType)>,
    /// Bytes that start some special token: other positions skip the special scan.
    special_first: [bool; 256],
    bos: Option<u32>,
    eos: Option<u32>,
    eog: Vec<u32>,
    add_bos: bool,
    add_space_prefix: bool,
    model: Model,
}

/// Boxed: both models carry 256-entry byte tables inline.
enum Model {
    Spm(Box<spm::SpmModel>),
    #[cfg(feature = "tokenizer-bpe")]
    Bpe(Box<bpe::BpeModel>),
}

/// A piece of input text after special tokens were split out.
enum Fragment<'a> {
    Text(&'a str),
    Special(u32),
}

/// Texts of control tokens that end a turn in common chat formats (llama.cpp's EOG list).
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|eom_id|>",
    "<EOT>",
    "<|end_of_text|>",
];

fn str_array<'a>(file: &'a GgufFile, key: &str) -> Result<Option<Vec<&'a str>>, TokenizerError> {
    let Some(values) = file.get_array(key)? else {
        return Ok(None);
    };
    values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            v.as_str().ok_or_else(|| {
                TokenizerError::InvalidVocab(format!("{key}[{i}] is {:?}, not a string", v.value_type()))
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

fn opt_id(file: &GgufFile, key: &str) -> Result<Option<u32>, TokenizerError> {
    // Some converters write -1 for "no such token".
    if file.get(key).and_then(|v| v.as_i64()).is_some_and(|v| v < 0) {
        return Ok(None);
    }
    match file.get_u64(key)? {
        None => Ok(None),
        Some(v) => u32::try_from(v)
            .map(Some)
            .map_err(|_| TokenizerError::InvalidVocab(format!("{key} = {v} is not a token id"))),
    }
}

impl Tokenizer {
    /// Reads the tokenizer stored in a GGUF file's `tokenizer.ggml.*` metadata.
    pub fn from_gguf(file: &GgufFile) -> Result<Tokenizer, TokenizerError> {
        let model = file
            .get_str("tokenizer.ggml.model")?
            .ok_or(TokenizerError::NoTokenizer)?;
        let kind = match model {
            "llama" => TokenizerKind::Spm,
            "gpt2" => TokenizerKind::Bpe {
                pre: file.get_str("tokenizer.ggml.pre")?.unwrap_or("default").to_string(),
            },
            other => return Err(TokenizerError::UnsupportedModel(other.to_string())),
        };
        let tokens: Vec<String> = str_array(file, "tokenizer.ggml.tokens")?
            .ok_or_else(|| TokenizerError::InvalidVocab("tokenizer.ggml.tokens is missing".into()))?
            .into_iter()
            .map(str::to_string)
            .collect();
        let scores = match file.get_array("tokenizer.ggml.scores")? {
            None => Vec::new(),
            Some(values) => values
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    v.as_f64().map(|f| f as f32).ok_or_else(|| {
                        TokenizerError::InvalidVocab(format!("tokenizer.ggml.scores[{i}] is not a number"))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?,
        };
        let types = match file.get_array("tokenizer.ggml.token_type")? {
            None => Vec::new(),
            Some(values) => values
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    v.as_i64().and_then(TokenType::from_id).ok_or_else(|| {
                        TokenizerError::InvalidVocab(format!(
                            "tokenizer.ggml.token_type[{i}] = {v} is not a token type"
                        ))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?,
        };
        let merges: Vec<String> = match kind {
            TokenizerKind::Spm => Vec::new(),
            TokenizerKind::Bpe { .. } => str_array(file, "tokenizer.ggml.merges")?
                .ok_or_else(|| TokenizerError::InvalidVocab("tokenizer.ggml.merges is missing".into()))?
                .into_iter()
                .map(str::to_string)
                .collect(),
        };
        let mut eot_ids = Vec::new();
        for key in ["tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"] {
            eot_ids.extend(opt_id(file, key)?);
        }
        let is_spm = kind == TokenizerKind::Spm;
        let config = VocabConfig {
            tokens,
            scores,
            types,
            merges,
            bos_id: opt_id(file, "tokenizer.ggml.bos_token_id")?,
            eos_id: opt_id(file, "tokenizer.ggml.eos_token_id")?,
            unk_id: opt_id(file, "tokenizer.ggml.unknown_token_id")?,
            eot_ids,
            // llama.cpp's defaults when the keys are absent: SentencePiece adds BOS and the
            // dummy prefix, byte-level BPE does neither.
            add_bos: file.get_bool("tokenizer.ggml.add_bos_token")?.unwrap_or(is_spm),
            add_space_prefix: file.get_bool("tokenizer.ggml.add_space_prefix")?.unwrap_or(is_spm),
        };
        Tokenizer::from_vocab(kind, config)
    }

    /// Builds a tokenizer from an explicit vocabulary.
    pub fn from_vocab(kind: TokenizerKind, config: VocabConfig) -> Result<Tokenizer, TokenizerError> {
        let VocabConfig {
            tokens,
            scores,
            mut types,
            merges,
            bos_id,
            eos_id,
            unk_id,
            eot_ids,
            add_bos,
            add_space_prefix,
        } = config;
        let n = tokens.len();
        if n == 0 {
            return Err(TokenizerError::InvalidVocab("the vocabulary is empty".into()));
        }
        if u32::try_from(n).is_err() {
            return Err(TokenizerError::InvalidVocab(format!(
                "{n} tokens do not fit 32-bit ids"
            )));
        }
        if types.is_empty() {
            types = vec![TokenType::Normal; n];
        }
        if types.len() != n {
            return Err(TokenizerError::InvalidVocab(format!(
                "{n} tokens but {} token types",
                types.len()
            )));
        }
        for (name, id) in [("BOS", bos_id), ("EOS", eos_id), ("UNK", unk_id)]
            .into_iter()
            .chain(eot_ids.iter().map(|&id| ("EOT", Some(id))))
        {
            if let Some(id) = id {
                if id as usize >= n {
                    return Err(TokenizerError::InvalidVocab(format!(
                        "{name} id {id} is outside the vocabulary of {n} tokens"
                    )));
                }
            }
        }
        let mut token_to_id = HashMap::with_capacity(n);
        for (i, t) in tokens.iter().enumerate() {
            // Keep the first id of a duplicated text, so lookups are deterministic.
            token_to_id.entry(t.clone()).or_insert(i as u32);
        }
        let mut specials: Vec<(String, u32, TokenType)> = tokens
            .iter()
            .zip(&types)
            .enumerate()
            .filter(|(_, (t, ty))| {
                !t.is_empty() && matches!(ty, TokenType::Control | TokenType::UserDefined | TokenType::Unknown)
            })
            .map(|(i, (t, &ty))| (t.clone(), i as u32, ty))
            .collect();
        // Longest first, so "<|im_start|>" wins over a shorter token that is its prefix.
        specials.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.1.cmp(&b.1)));

        let mut special_first = [false; 256];
        for (text, _, _) in &specials {
            special_first[text.as_bytes()[0] as usize] = true;
        }

        let mut eog: Vec<u32> = eos_id.into_iter().chain(eot_ids).collect();
        for (text, id, ty) in &specials {
            if *ty == TokenType::Control && EOG_TEXTS.contains(&text.as_str()) {
                eog.push(*id);
            }
        }
        eog.sort_unstable();
        eog.dedup();

        let (model, bytes) = match &kind {
            TokenizerKind::Spm => {
                if scores.len() != n {
                    return Err(TokenizerError::InvalidVocab(format!(
                        "{n} tokens but {} scores (SentencePiece needs one score per token)",
                        scores.len()
                    )));
                }
                let bytes = spm::token_bytes(&tokens, &types);
                (
                    Model::Spm(Box::new(spm::SpmModel::new(scores, &tokens, &types, unk_id))),
                    bytes,
                )
            }
            #[cfg(feature = "tokenizer-bpe")]
            TokenizerKind::Bpe { pre } => {
                let model = bpe::BpeModel::new(pre, &merges, &token_to_id, unk_id)?;
                let bytes = bpe::token_bytes(&tokens, &types);
                (Model::Bpe(Box::new(model)), bytes)
            }
            #[cfg(not(feature = "tokenizer-bpe"))]
            TokenizerKind::Bpe { .. } => {
                let _ = merges;
                return Err(TokenizerError::UnsupportedModel(
                    "gpt2 (byte-level BPE: edgeact-runtime was built without its `tokenizer-bpe` feature)".into(),
                ));
            }
        };
        Ok(Tokenizer {
            kind,
            tokens,
            types,
            bytes,
            token_to_id,
            specials,
            special_first,
            bos: bos_id,
            eos: eos_id,
            eog,
            add_bos,
            add_space_prefix,
            model,
        })
    }

    /// Text to ids. `add_bos` puts the BOS id first (when the vocabulary has one).
    /// `parse_special`: literal control-token texts such as `"</s>"` or `"<|im_start|>"` become
    /// their ids; otherwise they are tokenized as ordinary text. User-defined tokens are always
    /// matched whole, as in llama.cpp.
    pub fn encode(&self, text: &str, add_bos: bool, parse_special: bool) -> Vec<u32> {
        let mut out = Vec::with_capacity(text.len() / 3 + 2);
        if add_bos {
            if let Some(bos) = self.bos {
                out.push(bos);
            }
        }
        // SentencePiece's dummy prefix goes in front of the text and of every text fragment
        // that follows a special token (llama.cpp and HF `tokenizers` agree on this).
        let mut prev_special = true;
        for fragment in self.split_specials(text, parse_special) {
            match fragment {
                Fragment::Special(id) => {
                    out.push(id);
                    prev_special = true;
                }
                Fragment::Text(t) => {
                    match &self.model {
                        Model::Spm(m) => {
                            m.encode(t, self.add_space_prefix && prev_special, &self.token_to_id, &mut out)
                        }
                        #[cfg(feature = "tokenizer-bpe")]
                        Model::Bpe(m) => m.encode(t, &self.token_to_id, &mut out),
                    }
                    prev_special = false;
                }
            }
        }
        out
    }

    /// Splits out the special tokens that apply (see [`Tokenizer::encode`]).
    fn split_specials<'a>(&self, text: &'a str, parse_special: bool) -> Vec<Fragment<'a>> {
        let mut fragments = Vec::new();
        let mut start = 0;
        let mut i = 0;
        let bytes = text.as_bytes();
        while i < bytes.len() {
            let hit = if self.special_first[bytes[i] as usize] && text.is_char_boundary(i) {
                self.specials.iter().find(|(s, _, ty)| {
                    (parse_special || *ty == TokenType::UserDefined) && bytes[i..].starts_with(s.as_bytes())
                })
            } else {
                None
            };
            match hit {
                Some((s, id, _)) => {
                    if start < i {
                        fragments.push(Fragment::Text(&text[start..i]));
                    }
                    fragments.push(Fragment::Special(*id));
                    i += s.len();
                    start = i;
                }
                None => i += 1,
            }
        }
        if start < text.len() {
            fragments.push(Fragment::Text(&text[start..]));
        }
        fragments
    }

    /// Ids to text: the concatenated [`Tokenizer::token_bytes`] (control tokens decode to
    /// nothing), invalid UTF-8 replaced by U+FFFD. For SentencePiece with the dummy prefix the
    /// first leading space is removed, so `decode(encode(t)) == t`.
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut bytes = Vec::new();
        for &id in ids {
            bytes.extend_from_slice(self.token_bytes(id));
        }
        if self.strips_leading_space() && bytes.first() == Some(&b' ') {
            bytes.remove(0);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Whether decoding drops the first space of the output (SentencePiece's dummy prefix).
    pub(crate) fn strips_leading_space(&self) -> bool {
        self.kind == TokenizerKind::Spm && self.add_space_prefix
    }

    /// The raw bytes a token stands for: `'▁'` becomes a space, a byte-fallback token `<0xXX>`
    /// one byte, a byte-level BPE token its original bytes. Control and unknown tokens, and ids
    /// outside the vocabulary, give no bytes.
    pub fn token_bytes(&self, id: u32) -> &[u8] {
        self.bytes.get(id as usize).map_or(&[], Vec::as_slice)
    }

    /// The token's text as stored in the vocabulary (`"▁Hello"`, `"<0x0A>"`, `"<|im_end|>"`).
    pub fn token_text(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }

    pub fn token_type(&self, id: u32) -> Option<TokenType> {
        self.types.get(id as usize).copied()
    }

    /// The id of a vocabulary entry's exact text.
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.token_to_id.get(text).copied()
    }

    pub fn kind(&self) -> &TokenizerKind {
        &self.kind
    }

    pub fn bos_id(&self) -> Option<u32> {
        self.bos
    }

    pub fn eos_id(&self) -> Option<u32> {
        self.eos
    }

    /// Whether the model expects BOS in front of a prompt (`tokenizer.ggml.add_bos_token`).
    pub fn add_bos_default(&self) -> bool {
        self.add_bos
    }

    pub fn n_vocab(&self) -> usize {
        self.tokens.len()
    }

    /// End of generation: EOS, EOT/EOM, and control tokens that end a turn (`<|im_end|>`…).
    pub fn is_eog(&self, id: u32) -> bool {
        self.eog.binary_search(&id).is_ok()
    }

    /// All end-of-generation ids (for a generation loop's stop list).
    pub fn eog_ids(&self) -> &[u32] {
        &self.eog
    }
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("kind", &self.kind)
            .field("n_vocab", &self.tokens.len())
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .field("eog", &self.eog)
            .field("add_bos", &self.add_bos)
            .finish()
    }
}

/// TGI's `truncate`: the prompt keeps its last `n` tokens in all. A leading BOS stays first
/// (Hugging Face tokenizers truncate the text's tokens on the left and then add BOS), so the
/// result is BOS plus the last `n - 1` tokens of the text.
pub fn truncate_left(prompt: &mut Vec<u32>, n: usize, bos: Option<u32>) {
    if prompt.len() <= n {
        return;
    }
    let has_bos = bos.is_some() && prompt.first().copied() == bos && n >= 1;
    if has_bos {
        let cut = prompt.len() - (n - 1);
        prompt.drain(1..cut);
    } else {
        let cut = prompt.len() - n;
        prompt.drain(..cut);
    }
}

#[cfg(test)]
mod truncate_tests {
    use super::truncate_left;

    #[test]
    fn truncation_keeps_bos_and_the_last_tokens() {
        let mut p = vec![1, 10, 11, 12, 13];
        truncate_left(&mut p, 3, Some(1));
        assert_eq!(p, vec![1, 12, 13]);
        let mut p = vec![1, 10, 11];
        truncate_left(&mut p, 3, Some(1));
        assert_eq!(p, vec![1, 10, 11]);
        let mut p = vec![10, 11, 12];
        truncate_left(&mut p, 2, None);
        assert_eq!(p, vec![11, 12]);
        let mut p = vec![1, 10, 11];
        truncate_left(&mut p, 1, Some(1));
        assert_eq!(p, vec![1]);
    }
}
