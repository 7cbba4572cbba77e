//! The grounded prompt: numbered passages with their sources, then the question.

use super::{AnswerRequest, ChatMessage, Role};
use crate::rag::retrieve::Passage;

/// A passage's source as it is cited in the prompt and spoken in answers.
pub fn source_label(p: &Passage) -> String {
    format!("{}, page {}", p.title, p.page)
}

pub fn user_message(passages: &[Passage], question: &str) -> String {
    let mut out = String::from("Manual passages:\n");
    for (i, p) in passages.iter().enumerate() {
        out.push_str(&format!("[{}] {}: {}\n", i + 1, source_label(p), p.text));
    }
    out.push_str(&format!("\nQuestion: {question}"));
    out
}

pub fn messages(req: &AnswerRequest) -> Vec<ChatMessage> {
    vec![
        ChatMessage { role: Role::System, content: req.system_prompt.clone() },
        ChatMessage { role: Role::User, content: user_message(&req.passages, &req.question) },
    ]
}
