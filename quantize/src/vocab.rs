//! The tokenizer of an HF model directory as GGUF `tokenizer.*` metadata.
//!
//! The primary source is SentencePiece's `tokenizer.model` (a `ModelProto` protobuf, decoded
//! by the small wire-format reader here: pieces are field 1 `{piece = 1, score = 2, type = 3}`,
//! special ids live in `trainer_spec` = field 2). Piece types map one to one onto GGUF token
//! types (normal 1, unknown 2, control 3, user-defined 4, unused 5, byte 6). `tokenizer.json`
//! (a byte-fallback BPE) is the fallback; its scores are derived from token order, see
//! [`Vocab::from_tokenizer_json`].

use crate::gguf_writer::string_array;
use edgeact_runtime::gguf::{Array, Value};
use serde_json::Value as Json;
use std::path::Path;

/// Tokenizer files larger than this are refused (real ones are tens of MiB at most).
const MAX_TOKENIZER_BYTES: u64 = 512 << 20;

/// Llama-2's chat format (`[INST]`, `<<SYS>>`), used when `tokenizer_config.json` has none.
pub const LLAMA2_CHAT_TEMPLATE: &str = "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}\
{% set system_message = '<<SYS>>\\n' + messages[0]['content'] | trim + '\\n<</SYS>>\\n\\n' %}\
{% else %}{% set loop_messages = messages %}{% set system_message = '' %}{% endif %}\
{% for message in loop_messages %}{% if loop.index0 == 0 %}{% set content = system_message + message['content'] %}\
{% else %}{% set content = message['content'] %}{% endif %}\
{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content | trim + ' [/INST]' }}\
{% elif message['role'] == 'assistant' %}{{ ' ' + content | trim + ' ' + eos_token }}{% endif %}{% endfor %}";

/// GGUF token types.
pub const TOKEN_NORMAL: i32 = 1;
pub const TOKEN_UNKNOWN: i32 = 2;
pub const TOKEN_CONTROL: i32 = 3;
pub const TOKEN_UNUSED: i32 = 5;
pub const TOKEN_BYTE: i32 = 6;

/// A vocabulary ready to be written as `tokenizer.ggml.*`.
#[derive(Clone, Debug, PartialEq)]
pub struct Vocab {
    pub tokens: Vec<String>,
    pub scores: Vec<f32>,
    pub types: Vec<i32>,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub unk: Option<u32>,
    pub pad: Option<u32>,
    pub add_bos: bool,
    pub add_eos: bool,
    pub chat_template: String,
}

/// A protobuf field: number and payload.
enum Field<'a> {
    Varint(u64),
    Fixed32([u8; 4]),
    Fixed64,
    Bytes(&'a [u8]),
}

/// Iterates over the fields of one protobuf message.
struct Fields<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Fields<'a> {
    fn new(buf: &'a [u8]) -> Fields<'a> {
        Fields { buf, pos: 0 }
    }

    fn varint(&mut self) -> anyhow::Result<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let Some(&b) = self.buf.get(self.pos) else {
                anyhow::bail!("truncated varint at byte {}", self.pos);
            };
            self.pos += 1;
            v |= ((b & 0x7f) as u64) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        anyhow::bail!("varint longer than 10 bytes at byte {}", self.pos)
    }

    fn take(&mut self, n: u64) -> anyhow::Result<&'a [u8]> {
        if n > (self.buf.len() - self.pos) as u64 {
            anyhow::bail!("field of {n} bytes at byte {} runs past the end", self.pos);
        }
        let s = &self.buf[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    fn next_field(&mut self) -> anyhow::Result<Option<(u64, Field<'a>)>> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let f = match key & 7 {
            0 => Field::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Field::Fixed64
            }
            2 => {
                let n = self.varint()?;
                Field::Bytes(self.take(n)?)
            }
            5 => Field::Fixed32(self.take(4)?.try_into().expect("4 bytes")),
            w => anyhow::bail!("unsupported protobuf wire type {w}"),
        };
        Ok(Some((key >> 3, f)))
    }
}

/// Special ids from the `TrainerSpec` (fields 40-43; defaults 0, 1, 2, -1).
fn trainer_ids(buf: &[u8]) -> anyhow::Result<[i64; 4]> {
    let mut ids = [0i64, 1, 2, -1];
    let mut f = Fields::new(buf);
    while let Some((n, v)) = f.next_field()? {
        if let (40..=43, Field::Varint(x)) = (n, v) {
            // int32 fields encode negatives as 10-byte two's complement varints.
            ids[(n - 40) as usize] = x as i64 as i32 as i64;
        }
    }
    Ok(ids)
}

impl Vocab {
    /// Decodes a SentencePiece `tokenizer.model`.
    pub fn from_sentencepiece(bytes: &[u8]) -> anyhow::Result<Vocab> {
        let mut tokens = Vec::new();
        let mut scores = Vec::new();
        let mut types = Vec::new();
        let mut ids = [0i64, 1, 2, -1];
        let mut f = Fields::new(bytes);
        while let Some((n, v)) = f.next_field()? {
            match (n, v) {
                (1, Field::Bytes(piece_msg)) => {
                    let (mut piece, mut score, mut ty) = (None, 0f32, 1i32);
                    let mut pf = Fields::new(piece_msg);
                    while let Some((pn, pv)) = pf.next_field()? {
                        match (pn, pv) {
                            (1, Field::Bytes(s)) => {
                                piece = Some(
                                    String::from_utf8(s.to_vec())
                                        .map_err(|_| anyhow::anyhow!("piece {} is not UTF-8", tokens.len()))?,
                                )
                            }
                            (2, Field::Fixed32(b)) => score = f32::from_le_bytes(b),
                            (3, Field::Varint(t)) => ty = t as i32,
                            _ => {}
                        }
                    }
                    if !(1..=6).contains(&ty) {
                        anyhow::bail!("piece {} has unknown type {ty}", tokens.len());
                    }
                    tokens.push(piece.ok_or_else(|| anyhow::anyhow!("piece {} has no text", tokens.len()))?);
                    scores.push(score);
                    types.push(ty);
                }
                (2, Field::Bytes(spec)) => ids = trainer_ids(spec)?,
                _ => {}
            }
        }
        if tokens.is_empty() {
            anyhow::bail!("no pieces: not a SentencePiece model");
        }
        let id = |v: i64| u32::try_from(v).ok().filter(|&v| (v as usize) < tokens.len());
        Ok(Vocab {
            unk: id(ids[0]),
            bos: id(ids[1]),
            eos: id(ids[2]),
            pad: id(ids[3]),
            tokens,
            scores,
            types,
            add_bos: true,
            add_eos: false,
            chat_template: LLAMA2_CHAT_TEMPLATE.into(),
        })
    }

    /// Reads a Hugging Face `tokenizer.json` holding a byte-fallback BPE (the Llama layout).
    /// Tokens and types are exact; scores are reconstructed as SentencePiece's BPE assigns
    /// them (`-rank` in id order over the normal pieces, 0 for special and byte tokens), which
    /// can differ from the original model for pieces it scored specially.
    pub fn from_tokenizer_json(text: &str) -> anyhow::Result<Vocab> {
        let j: Json = serde_json::from_str(text).map_err(|e| anyhow::anyhow!("bad JSON: {e}"))?;
        let model = j.get("model").ok_or_else(|| anyhow::anyhow!("no \"model\""))?;
        if model.get("type").and_then(Json::as_str) != Some("BPE") {
            anyhow::bail!("only BPE tokenizer.json models are supported");
        }
        let vocab = model
            .get("vocab")
            .and_then(Json::as_object)
            .ok_or_else(|| anyhow::anyhow!("model.vocab is not an object"))?;
        let added = j.get("added_tokens").and_then(Json::as_array);
        // Ids must be dense (checked below), so none can reach the number of entries: refused
        // before a 50-byte file with id 9999999 makes the table ten million entries long.
        let entries = vocab.len() + added.map_or(0, Vec::len);
        let mut by_id: Vec<Option<String>> = Vec::new();
        let mut place = |tok: &str, id: u64| -> anyhow::Result<()> {
            let id = usize::try_from(id).ok().filter(|&i| i < entries).ok_or_else(|| {
                anyhow::anyhow!("token {tok:?} has id {id}, beyond the {entries} entries of the vocabulary")
            })?;
            if by_id.len() <= id {
                by_id.resize(id + 1, None);
            }
            by_id[id] = Some(tok.to_string());
            Ok(())
        };
        for (tok, id) in vocab {
            place(
                tok,
                id.as_u64()
                    .ok_or_else(|| anyhow::anyhow!("token {tok:?} has a bad id"))?,
            )?;
        }
        let mut special = std::collections::HashSet::new();
        for t in added.into_iter().flatten() {
            let (Some(id), Some(content)) = (
                t.get("id").and_then(Json::as_u64),
                t.get("content").and_then(Json::as_str),
            ) else {
                continue;
            };
            place(content, id)?;
            if t.get("special").and_then(Json::as_bool).unwrap_or(false) {
                special.insert(id as usize);
            }
        }
        let unk_token = model.get("unk_token").and_then(Json::as_str);
        let mut tokens = Vec::with_capacity(by_id.len());
        let mut types = Vec::with_capacity(by_id.len());
        let mut scores = Vec::with_capacity(by_id.len());
        let mut rank = 0f32;
        let mut unk = None;
        for (id, tok) in by_id.into_iter().enumerate() {
            let tok = tok.ok_or_else(|| anyhow::anyhow!("token id {id} is missing from the vocabulary"))?;
            let is_byte = tok.len() == 6 && tok.starts_with("<0x") && tok.ends_with('>');
            let ty = if Some(tok.as_str()) == unk_token {
                unk = Some(id as u32);
                TOKEN_UNKNOWN
            } else if special.contains(&id) {
                TOKEN_CONTROL
            } else if is_byte {
                TOKEN_BYTE
            } else {
                TOKEN_NORMAL
            };
            if ty == TOKEN_NORMAL {
                scores.push(-rank);
                rank += 1.0;
            } else {
                scores.push(0.0);
            }
            tokens.push(tok);
            types.push(ty);
        }
        let find = |s: &str| tokens.iter().position(|t| t == s).map(|i| i as u32);
        Ok(Vocab {
            bos: find("<s>"),
            eos: find("</s>"),
            unk,
            pad: None,
            tokens,
            scores,
            types,
            add_bos: true,
            add_eos: false,
            chat_template: LLAMA2_CHAT_TEMPLATE.into(),
        })
    }

    /// Loads the tokenizer of a model directory: `tokenizer.model`, else `tokenizer.json`,
    /// then `tokenizer_config.json` (add_bos/add_eos, chat template, special token names).
    pub fn from_dir(dir: &Path) -> anyhow::Result<Vocab> {
        let spm = dir.join("tokenizer.model");
        let json = dir.join("tokenizer.json");
        let mut v = if spm.is_file() {
            let bytes = edgeact_runtime::files::read_regular(&spm, MAX_TOKENIZER_BYTES)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", spm.display()))?;
            Vocab::from_sentencepiece(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", spm.display()))?
        } else if json.is_file() {
            let bytes = edgeact_runtime::files::read_regular(&json, MAX_TOKENIZER_BYTES)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", json.display()))?;
            let text = String::from_utf8(bytes).map_err(|_| anyhow::anyhow!("{} is not UTF-8", json.display()))?;
            Vocab::from_tokenizer_json(&text).map_err(|e| anyhow::anyhow!("{}: {e}", json.display()))?
        } else {
            anyhow::bail!(
                "no tokenizer in {}: expected tokenizer.model or tokenizer.json (pass --no-tokenizer to convert the weights alone)",
                dir.display()
            );
        };
        let cfg_path = dir.join("tokenizer_config.json");
        if cfg_path.is_file() {
            let bytes = edgeact_runtime::files::read_regular(&cfg_path, MAX_TOKENIZER_BYTES)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", cfg_path.display()))?;
            let text = String::from_utf8(bytes).map_err(|_| anyhow::anyhow!("{} is not UTF-8", cfg_path.display()))?;
            let cfg: Json =
                serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{}: bad JSON: {e}", cfg_path.display()))?;
            v.apply_tokenizer_config(&cfg);
        }
        Ok(v)
    }

    fn apply_tokenizer_config(&mut self, cfg: &Json) {
        if let Some(b) = cfg.get("add_bos_token").and_then(Json::as_bool) {
            self.add_bos = b;
        }
        if let Some(b) = cfg.get("add_eos_token").and_then(Json::as_bool) {
            self.add_eos = b;
        }
        match cfg.get("chat_template") {
            Some(Json::String(t)) => self.chat_template = t.clone(),
            // A list of named templates: take "default" (or the first).
            Some(Json::Array(list)) => {
                let pick = list
                    .iter()
                    .find(|t| t.get("name").and_then(Json::as_str) == Some("default"))
                    .or_else(|| list.first());
                if let Some(t) = pick.and_then(|t| t.get("template")).and_then(Json::as_str) {
                    self.chat_template = t.to_string();
                }
            }
            _ => {}
        }
        // Special tokens named by content (a string or an AddedToken object).
        let id_of = |key: &str| -> Option<u32> {
            let v = cfg.get(key)?;
            let s = v.as_str().or_else(|| v.get("content").and_then(Json::as_str))?;
            self.tokens.iter().position(|t| t == s).map(|i| i as u32)
        };
        if let Some(id) = id_of("bos_token") {
            self.bos = Some(id);
        }
        if let Some(id) = id_of("eos_token") {
            self.eos = Some(id);
        }
        if let Some(id) = id_of("unk_token") {
            self.unk = Some(id);
        }
        if let Some(id) = id_of("pad_token") {
            self.pad = Some(id);
        }
    }

    /// Pads the vocabulary to `n` entries with unused `[PAD{i}]` tokens (a model whose
    /// embedding has more rows than the tokenizer has pieces), as llama.cpp's converter does.
    pub fn pad_to(&mut self, n: usize) {
        for i in self.tokens.len()..n {
            self.tokens.push(format!("[PAD{i}]"));
            self.scores.push(-1000.0);
            self.types.push(TOKEN_UNUSED);
        }
    }

    /// The `tokenizer.*` metadata entries.
    pub fn metadata(&self) -> Vec<(String, Value)> {
        let mut m: Vec<(String, Value)> = vec![
            ("tokenizer.ggml.model".into(), Value::String("llama".into())),
            ("tokenizer.ggml.pre".into(), Value::String("default".into())),
            (
                "tokenizer.ggml.tokens".into(),
                string_array(self.tokens.iter().cloned()),
            ),
            (
                "tokenizer.ggml.scores".into(),
                Value::Array(Array::F32(self.scores.clone())),
            ),
            (
                "tokenizer.ggml.token_type".into(),
                Value::Array(Array::I32(self.types.clone())),
            ),
        ];
        for (key, id) in [
            ("tokenizer.ggml.bos_token_id", self.bos),
            ("tokenizer.ggml.eos_token_id", self.eos),
            ("tokenizer.ggml.unknown_token_id", self.unk),
            ("tokenizer.ggml.padding_token_id", self.pad),
        ] {
            if let Some(id) = id {
                m.push((key.into(), Value::U32(id)));
            }
        }
        m.push(("tokenizer.ggml.add_bos_token".into(), Value::Bool(self.add_bos)));
        m.push(("tokenizer.ggml.add_eos_token".into(), Value::Bool(self.add_eos)));
        m.push((
            "tokenizer.chat_template".into(),
            Value::String(self.chat_template.clone()),
        ));
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_protobuf_is_an_error() {
        for bad in [
            &b"\x0a\xff\xff\xff\xff\x0f"[..],
            b"\x0a\x03\x0a\x05ab",
            b"\x0b",
            b"\x0a\x02\x18\x09",
            b"",
        ] {
            assert!(Vocab::from_sentencepiece(bad).is_err(), "{bad:?}");
        }
        // One piece "a" with score 0.5, type default, trainer spec bos_id = -1 (10-byte varint).
        let mut ok = vec![0x0a, 0x08, 0x0a, 0x01, b'a', 0x15];
        ok.extend_from_slice(&0.5f32.to_le_bytes());
        ok.extend_from_slice(&[0x12, 0x0c, 0xc8, 0x02]);
        ok.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
        let v = Vocab::from_sentencepiece(&ok).unwrap();
        assert_eq!(
            (v.tokens, v.scores, v.types),
            (vec!["a".to_string()], vec![0.5], vec![1])
        );
        assert_eq!((v.unk, v.bos, v.eos), (Some(0), None, None));
    }

    #[test]
    fn tokenizer_json_ids_beyond_its_entries_are_refused_before_allocating() {
        let err = Vocab::from_tokenizer_json(r#"{"model":{"type":"BPE","vocab":{"a":9999999}}}"#).unwrap_err();
        assert!(err.to_string().contains("id 9999999, beyond the 1 entries"), "{err}");
        // Dense ids, an added token among them: fine.
        let v = Vocab::from_tokenizer_json(
            r#"{"model":{"type":"BPE","vocab":{"a":0,"b":1}},"added_tokens":[{"id":2,"content":"<s>","special":true}]}"#,
        )
        .unwrap();
        assert_eq!((v.tokens.len(), v.bos), (3, Some(2)));
        // A gap in the ids (an added token repeating an id) is still an error of its own.
        let err = Vocab::from_tokenizer_json(
            r#"{"model":{"type":"BPE","vocab":{"a":0,"b":2}},"added_tokens":[{"id":0,"content":"a"}]}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("token id 1 is missing"), "{err}");
    }
}
