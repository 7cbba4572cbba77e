//! The SmolLM2 tokenizer, rebuilt from the vocabulary a GGUF file carries.
//!
//! No `tokenizer.json` exists offline, so the byte-level BPE is assembled from
//! `tokenizer.ggml.{tokens,merges,token_type}`. The pre-tokenizer matches the
//! `smollm` pre-tokenizer type (the one SmolLM2 was trained with): every digit is
//! its own piece, then GPT-2 byte-level splitting without a prefix space.

use candle_core::quantized::gguf_file::{Content, Value};
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{BPE, Merges, Vocab};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::{AddedToken, Tokenizer};

use crate::model::ModelError;

const MODEL: &str = "smollm2 tokenizer";

/// `llama_token_type` value of control tokens (`<|im_start|>` and friends).
const TOKEN_TYPE_CONTROL: i64 = 3;

/// Encoder/decoder for one GGUF vocabulary.
pub struct GgufTokenizer {
    /// Recognises control-token text (`<|im_start|>` encodes to its single id).
    with_specials: Tokenizer,
    /// Treats control-token text as plain text, so message content cannot
    /// forge chat-template markers.
    literal: Tokenizer,
    control_ids: Vec<u32>,
    eos_id: Option<u32>,
}

impl GgufTokenizer {
    pub fn from_gguf(content: &Content) -> Result<Self, ModelError> {
        let model = metadata(content, "tokenizer.ggml.model")?.to_string().map_err(|e| ModelError::load(MODEL, e))?;
        if model != "gpt2" {
            return Err(ModelError::load(MODEL, format!("unsupported tokenizer model {model:?}")));
        }
        let tokens = string_array(metadata(content, "tokenizer.ggml.tokens")?)?;
        let merges: Merges = string_array(metadata(content, "tokenizer.ggml.merges")?)?
            .into_iter()
            .map(|m| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_owned(), b.to_owned()))
                    .ok_or_else(|| ModelError::load(MODEL, format!("malformed merge {m:?}")))
            })
            .collect::<Result<_, _>>()?;
        let types = metadata(content, "tokenizer.ggml.token_type")?
            .to_vec()
            .map_err(|e| ModelError::load(MODEL, e))?
            .iter()
            .map(integer)
            .collect::<Result<Vec<_>, _>>()?;
        if types.len() != tokens.len() {
            return Err(ModelError::load(MODEL, "token_type and tokens differ in length"));
        }
        let eos_id = content
            .metadata
            .get("tokenizer.ggml.eos_token_id")
            .map(integer)
            .transpose()?
            .and_then(|id| u32::try_from(id).ok());

        let mut vocab = Vocab::default();
        for (id, token) in tokens.iter().enumerate() {
            let id = u32::try_from(id).map_err(|e| ModelError::load(MODEL, e))?;
            vocab.insert(token.clone(), id);
        }
        // The BPE builder panics on a merge whose result is longer than every token (found
        // by fuzzing), so merges are checked first: both parts and the result are tokens.
        let mut joined = String::new();
        for (a, b) in &merges {
            joined.clear();
            joined.push_str(a);
            joined.push_str(b);
            if !(vocab.contains_key(a) && vocab.contains_key(b) && vocab.contains_key(&joined)) {
                return Err(ModelError::load(MODEL, format!("merge {a:?} + {b:?} is not made of vocabulary tokens")));
            }
        }
        let bpe = BPE::builder().vocab_and_merges(vocab, merges).build().map_err(|e| ModelError::load(MODEL, e))?;

        let mut tokenizer = Tokenizer::new(bpe);
        tokenizer.with_pre_tokenizer(Some(Sequence::new(vec![
            Digits::new(true).into(),
            ByteLevel::new(false, true, true).into(),
        ])));
        tokenizer.with_decoder(Some(ByteLevelDecoder::default()));

        let controls: Vec<(u32, &String)> = tokens
            .iter()
            .zip(&types)
            .enumerate()
            .filter(|(_, (_, ty))| **ty == TOKEN_TYPE_CONTROL)
            .map(|(id, (token, _))| (id as u32, token))
            .collect();
        tokenizer
            .add_special_tokens(controls.iter().map(|(_, t)| AddedToken::from(t.as_str(), true)))
            .map_err(|e| ModelError::load(MODEL, e))?;
        let control_ids = controls.iter().map(|(id, _)| *id).collect();

        let mut literal = tokenizer.clone();
        literal.set_encode_special_tokens(true);
        Ok(Self { with_specials: tokenizer, literal, control_ids, eos_id })
    }

    /// Encodes `text`; control-token text becomes the control token.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, ModelError> {
        encode_with(&self.with_specials, text)
    }

    /// Encodes `text` as plain text, even where it spells a control token.
    pub fn encode_literal(&self, text: &str) -> Result<Vec<u32>, ModelError> {
        encode_with(&self.literal, text)
    }

    /// Decodes `ids`, dropping control tokens.
    pub fn decode(&self, ids: &[u32]) -> Result<String, ModelError> {
        self.with_specials.decode(ids, true).map_err(|e| ModelError::inference(MODEL, e))
    }

    /// The id of a control token such as `<|im_start|>`.
    pub fn control_id(&self, token: &str) -> Result<u32, ModelError> {
        self.with_specials
            .token_to_id(token)
            .filter(|id| self.control_ids.contains(id))
            .ok_or_else(|| ModelError::load(MODEL, format!("vocabulary lacks control token {token}")))
    }

    /// Every control token id (chat markers, end of text, ...).
    pub fn control_ids(&self) -> &[u32] {
        &self.control_ids
    }

    pub fn eos_id(&self) -> Option<u32> {
        self.eos_id
    }
}

fn encode_with(tokenizer: &Tokenizer, text: &str) -> Result<Vec<u32>, ModelError> {
    tokenizer.encode_fast(text, false).map(|e| e.get_ids().to_vec()).map_err(|e| ModelError::input(MODEL, e))
}

fn metadata<'a>(content: &'a Content, key: &str) -> Result<&'a Value, ModelError> {
    content.metadata.get(key).ok_or_else(|| ModelError::load(MODEL, format!("GGUF metadata lacks {key}")))
}

fn string_array(value: &Value) -> Result<Vec<String>, ModelError> {
    value
        .to_vec()
        .map_err(|e| ModelError::load(MODEL, e))?
        .iter()
        .map(|v| v.to_string().cloned().map_err(|e| ModelError::load(MODEL, e)))
        .collect()
}

/// GGUF writers differ in the integer width they use for ids and types.
fn integer(value: &Value) -> Result<i64, ModelError> {
    Ok(match value {
        Value::U8(v) => i64::from(*v),
        Value::I8(v) => i64::from(*v),
        Value::U16(v) => i64::from(*v),
        Value::I16(v) => i64::from(*v),
        Value::U32(v) => i64::from(*v),
        Value::I32(v) => i64::from(*v),
        Value::I64(v) => *v,
        Value::U64(v) => i64::try_from(*v).map_err(|e| ModelError::load(MODEL, e))?,
        other => {
            return Err(ModelError::load(MODEL, format!("expected an integer, got {other:?}")));
        }
    })
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;

    fn string(s: &str) -> Vec<u8> {
        let mut out = (s.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(s.as_bytes());
        out
    }

    fn key_value(key: &str, value_type: u32, payload: Vec<u8>) -> Vec<u8> {
        [string(key), value_type.to_le_bytes().to_vec(), payload].concat()
    }

    fn array(item_type: u32, items: Vec<Vec<u8>>) -> Vec<u8> {
        [item_type.to_le_bytes().to_vec(), (items.len() as u64).to_le_bytes().to_vec(), items.concat()].concat()
    }

    /// A GGUF v3 file with no tensors and a GPT-2 style vocabulary.
    fn gguf(tokens: &[&str], merges: &[&str]) -> Content {
        const STRING: u32 = 8;
        const ARRAY: u32 = 9;
        const I32: u32 = 5;
        let kvs = [
            key_value("tokenizer.ggml.model", STRING, string("gpt2")),
            key_value("tokenizer.ggml.tokens", ARRAY, array(STRING, tokens.iter().map(|t| string(t)).collect())),
            key_value("tokenizer.ggml.merges", ARRAY, array(STRING, merges.iter().map(|m| string(m)).collect())),
            key_value(
                "tokenizer.ggml.token_type",
                ARRAY,
                array(
                    I32,
                    tokens
                        .iter()
                        .map(|t| (if t.starts_with("<|") { 3i32 } else { 1 }).to_le_bytes().to_vec())
                        .collect(),
                ),
            ),
        ];
        let mut bytes = b"GGUF".to_vec();
        bytes.extend(3u32.to_le_bytes());
        bytes.extend(0u64.to_le_bytes());
        bytes.extend((kvs.len() as u64).to_le_bytes());
        bytes.extend(kvs.concat());
        Content::read(&mut Cursor::new(bytes)).expect("a valid GGUF header")
    }

    #[test]
    fn rebuilds_merges_and_control_tokens() {
        let tok = GgufTokenizer::from_gguf(&gguf(&["a", "b", "ab", "<|im_end|>"], &["a b"])).unwrap();
        assert_eq!(tok.encode("ab").unwrap(), vec![2]);
        assert_eq!(tok.control_id("<|im_end|>").unwrap(), 3);
        assert_eq!(tok.decode(&[2, 0]).unwrap(), "aba");
    }

    #[test]
    fn refuses_merges_that_are_not_made_of_tokens() {
        // "a b" without "ab" in the vocabulary made the BPE builder panic.
        for merges in [&["a b"][..], &["a c"], &["ab"]] {
            let Err(e) = GgufTokenizer::from_gguf(&gguf(&["a", "b"], merges)) else { panic!("{merges:?} accepted") };
            assert!(e.to_string().contains("merge"), "{e}");
        }
    }
}
