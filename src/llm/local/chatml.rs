//! ChatML prompt ids for SmolLM2, fitted into the context window.
//!
//! Each message is `<|im_start|>{role}\n{content}<|im_end|>\n`, followed by the
//! generation header `<|im_start|>assistant\n`. Markers are inserted as ids and
//! content is encoded literally, so passage text cannot open or close a turn.
//! When the conversation is too long, the leading system message stays and the
//! most recent messages are kept; the oldest kept message loses its beginning.

use crate::llm::{ChatMessage, Role};
use crate::models::ModelError;
use fieldvox_formats::gguf_tokenizer::GgufTokenizer;

const MODEL: &str = "smollm2";

fn role_name(role: Role) -> &'static str {
    match role {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
    }
}

/// One message's ids, kept in parts so its content can be cut from the front.
struct EncodedMessage {
    header: Vec<u32>,
    content: Vec<u32>,
    footer: Vec<u32>,
}

impl EncodedMessage {
    fn new(tok: &GgufTokenizer, message: &ChatMessage) -> Result<Self, ModelError> {
        let im_start = tok.control_id("<|im_start|>")?;
        let im_end = tok.control_id("<|im_end|>")?;
        let mut header = vec![im_start];
        header.extend(tok.encode_literal(&format!("{}\n", role_name(message.role)))?);
        let content = tok.encode_literal(&message.content)?;
        let mut footer = vec![im_end];
        footer.extend(tok.encode_literal("\n")?);
        Ok(Self { header, content, footer })
    }

    fn len(&self) -> usize {
        self.header.len() + self.content.len() + self.footer.len()
    }

    /// The message with only the last `keep` content tokens.
    fn tail(self, keep: usize) -> Vec<u32> {
        let skip = self.content.len().saturating_sub(keep);
        let mut ids = self.header;
        ids.extend_from_slice(&self.content[skip..]);
        ids.extend(self.footer);
        ids
    }

    fn into_ids(self) -> Vec<u32> {
        let keep = self.content.len();
        self.tail(keep)
    }
}

/// A conversation's ids, and how many of them are the system message: the same for
/// every turn of a profile, so an engine can keep their KV cache between calls.
#[derive(Debug)]
pub struct Prompt {
    pub ids: Vec<u32>,
    pub pinned: usize,
}

/// Prompt ids for `messages`, at most `budget` long.
///
/// Errors with [`ModelError::Input`] when there are no messages, or when the
/// system message and the headers alone leave no room for the last message.
pub fn prompt_ids(tok: &GgufTokenizer, messages: &[ChatMessage], budget: usize) -> Result<Prompt, ModelError> {
    let Some(last) = messages.last() else {
        return Err(ModelError::input(MODEL, "no messages to answer"));
    };
    let (pinned, rest) = match messages.split_first() {
        Some((first, rest)) if first.role == Role::System && !rest.is_empty() => (Some(first), rest),
        _ => (None, messages),
    };

    let mut generation = vec![tok.control_id("<|im_start|>")?];
    generation.extend(tok.encode_literal("assistant\n")?);
    let system = pinned.map(|m| EncodedMessage::new(tok, m)).transpose()?;
    let fixed = generation.len() + system.as_ref().map_or(0, EncodedMessage::len);

    let last_encoded = EncodedMessage::new(tok, last)?;
    let last_overhead = last_encoded.header.len() + last_encoded.footer.len();
    if budget.checked_sub(fixed + last_overhead).is_none_or(|room| room == 0) {
        return Err(ModelError::input(
            MODEL,
            format!(
                "the system prompt and chat headers need {} tokens; the context leaves {budget}",
                fixed + last_overhead + 1
            ),
        ));
    }

    // Newest first: whole messages while they fit, then the tail of the one that does not.
    let mut room = budget - fixed;
    let mut kept: Vec<Vec<u32>> = Vec::new();
    let mut pending = Some(last_encoded);
    let mut older = rest[..rest.len() - 1].iter().rev();
    while let Some(message) = pending.take() {
        let len = message.len();
        if len <= room {
            room -= len;
            kept.push(message.into_ids());
            pending = older.next().map(|m| EncodedMessage::new(tok, m)).transpose()?;
        } else {
            let overhead = message.header.len() + message.footer.len();
            if room > overhead {
                kept.push(message.tail(room - overhead));
            }
            tracing::debug!(kept_messages = kept.len(), "prompt truncated to the context");
            break;
        }
    }

    let mut ids = system.map(EncodedMessage::into_ids).unwrap_or_default();
    let pinned = ids.len();
    for message in kept.into_iter().rev() {
        ids.extend(message);
    }
    ids.extend(generation);
    Ok(Prompt { ids, pinned })
}
