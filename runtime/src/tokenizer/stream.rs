//! Streaming detokenization: generated ids in, text out as soon as it is complete.
//!
//! A token may end in the middle of a UTF-8 character (byte-fallback tokens, byte-level BPE),
//! so bytes are held until the character is complete. Bytes become U+FFFD only once they are
//! definitely invalid (a byte that can never start or continue the pending sequence), or at
//! [`StreamDecoder::finish`]. The replacement follows `String::from_utf8_lossy` (one U+FFFD
//! per maximal invalid subsequence), so the whole stream equals [`Tokenizer::decode`].

use super::Tokenizer;

/// Turns tokens into text incrementally (a token may end in the middle of a UTF-8 character,
/// so the decoder may return nothing for it and more for the next one). `generate` streams its
/// text through one; [`StreamDecoder`] is the tokenizer's.
pub trait TokenDecoder {
    /// Text completed by `token`.
    fn push(&mut self, token: u32) -> String;
    /// Whatever is still buffered at the end of the stream.
    fn finish(&mut self) -> String;
}

/// Incremental decoder over one [`Tokenizer`].
pub struct StreamDecoder<'a> {
    tokenizer: &'a Tokenizer,
    pending: Vec<u8>,
    /// SentencePiece's dummy prefix: drop one leading space of the stream's first text.
    strip_space: bool,
}

impl<'a> StreamDecoder<'a> {
    /// Decodes a sequence from its start, like [`Tokenizer::decode`]: for SentencePiece with
    /// the dummy prefix the first token's leading space is dropped (llama.cpp / HF do the same
    /// when detokenizing a sequence), so `"▁Hello"` first prints `"Hello"`.
    pub fn new(tokenizer: &'a Tokenizer) -> StreamDecoder<'a> {
        StreamDecoder {
            tokenizer,
            pending: Vec::new(),
            strip_space: tokenizer.strips_leading_space(),
        }
    }

    /// Decodes tokens that continue an already printed prompt: every space is kept
    /// (`"The capital of France is"` + `"▁Paris"` must print `" Paris"`).
    pub fn after_prompt(tokenizer: &'a Tokenizer) -> StreamDecoder<'a> {
        StreamDecoder {
            tokenizer,
            pending: Vec::new(),
            strip_space: false,
        }
    }

    /// Feeds one token; returns the text it completes (possibly empty).
    pub fn push(&mut self, id: u32) -> String {
        let bytes = self.tokenizer.token_bytes(id);
        if bytes.is_empty() {
            return String::new();
        }
        self.pending.extend_from_slice(bytes);
        if self.strip_space {
            if self.pending.first() == Some(&b' ') {
                self.pending.remove(0);
            }
            self.strip_space = false;
        }
        self.drain(false)
    }

    /// Flushes held bytes at the end of the stream (an incomplete character becomes U+FFFD).
    pub fn finish(&mut self) -> String {
        self.drain(true)
    }

    /// Whether bytes of an incomplete character are being held.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    fn drain(&mut self, at_end: bool) -> String {
        let mut text = String::new();
        let mut rest: &[u8] = &self.pending;
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    text.push_str(s);
                    rest = &[];
                    break;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    // The first `valid_up_to` bytes were just validated, so this never fails.
                    text.push_str(std::str::from_utf8(&rest[..valid]).unwrap_or_default());
                    match e.error_len() {
                        Some(bad) => {
                            text.push(char::REPLACEMENT_CHARACTER);
                            rest = &rest[valid + bad..];
                        }
                        // A character cut short by the end of the buffer: it may still be
                        // completed by the next token.
                        None if !at_end => {
                            rest = &rest[valid..];
                            break;
                        }
                        None => {
                            text.push(char::REPLACEMENT_CHARACTER);
                            rest = &[];
                            break;
                        }
                    }
                }
            }
        }
        let keep = rest.len();
        let drop = self.pending.len() - keep;
        self.pending.drain(..drop);
        text
    }
}

impl TokenDecoder for StreamDecoder<'_> {
    fn push(&mut self, token: u32) -> String {
        StreamDecoder::push(self, token)
    }
    fn finish(&mut self) -> String {
        StreamDecoder::finish(self)
    }
}
