//! The prompt wording that makes SmolLM2-135M answer from manual passages.
//!
//! Tuned by hand against the real model with greedy decoding: a 135M model
//! follows a short, concrete instruction and copies facts best when the
//! question comes last, right before its turn to speak.

/// System prompt for grounded answers.
pub const DEFAULT_SYSTEM_PROMPT: &str = "You are a helpful assistant for field technicians. \
Answer the question using only the manual passages. Give the exact value from the passages in one short sentence.";

/// The user turn: numbered passages (`(source label, text)`), then the question.
pub fn grounded_user_message(passages: &[(String, String)], question: &str) -> String {
    let mut message = String::from("Manual passages:\n");
    for (i, (source, text)) in passages.iter().enumerate() {
        message.push_str(&format!("[{}] {}: {}\n", i + 1, source.trim(), text.trim()));
    }
    message.push_str(&format!("\nQuestion: {}", question.trim()));
    message
}
