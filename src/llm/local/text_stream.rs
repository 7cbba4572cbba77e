//! Turns generated ids into text pieces as soon as they are whole UTF-8.
//!
//! One byte-level token may hold half of a multi-byte character, so the ids
//! generated so far are decoded together and only the new suffix is emitted,
//! holding back while the text ends in an incomplete character.

use crate::models::ModelError;
use fieldvox_formats::gguf_tokenizer::GgufTokenizer;

/// What lossy UTF-8 decoding leaves where a character is still incomplete.
const INCOMPLETE: char = char::REPLACEMENT_CHARACTER;

#[derive(Default)]
pub struct TextStream {
    ids: Vec<u32>,
    emitted: usize,
}

impl TextStream {
    /// Adds one id; returns the text that became complete, if any.
    pub fn push(&mut self, tok: &GgufTokenizer, id: u32) -> Result<Option<String>, ModelError> {
        self.ids.push(id);
        let text = tok.decode(&self.ids)?;
        if text.ends_with(INCOMPLETE) {
            return Ok(None);
        }
        Ok(self.take_new(&text))
    }

    /// What is left once generation ends, without a dangling partial character.
    pub fn finish(&mut self, tok: &GgufTokenizer) -> Result<Option<String>, ModelError> {
        let text = tok.decode(&self.ids)?;
        Ok(self.take_new(text.trim_end_matches(INCOMPLETE)))
    }

    fn take_new(&mut self, text: &str) -> Option<String> {
        let piece = text.get(self.emitted..).filter(|p| !p.is_empty())?.to_owned();
        self.emitted = text.len();
        Some(piece)
    }
}
