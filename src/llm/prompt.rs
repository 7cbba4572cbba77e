//! The grounded prompt: labelled passages with their sources, then the question. One
//! wording for every provider, tuned against the smallest model we ship (see
//! `local::grounded`), which bigger models follow just as well.

use super::local::grounded_user_message;
use super::{AnswerRequest, ChatMessage, Role};
use crate::rag::retrieve::Passage;

/// A passage's source as it is cited in the prompt and spoken in answers.
pub fn source_label(p: &Passage) -> String {
    format!("{}, page {}", p.title, p.page)
}

pub fn messages(req: &AnswerRequest) -> Vec<ChatMessage> {
    let passages: Vec<(String, String)> = req.passages.iter().map(|p| (source_label(p), p.text.clone())).collect();
    vec![
        ChatMessage { role: Role::System, content: req.system_prompt.clone() },
        ChatMessage { role: Role::User, content: grounded_user_message(&passages, &req.question) },
    ]
}
