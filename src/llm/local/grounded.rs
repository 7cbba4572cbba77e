//! The prompt wording that makes SmolLM2-135M answer from manual passages.
//!
//! Chosen by scoring wordings against the real model with greedy decoding (6
//! questions x 3 passage orders/sets): a short role plus "copy the relevant fact",
//! passages labelled as excerpts, and the bare question last did best. The model
//! is small: it still misses paraphrased questions ("Which gasket do I need?").

/// System prompt for grounded answers.
pub const DEFAULT_SYSTEM_PROMPT: &str = "You answer technicians' questions from service manual excerpts. \
Copy the relevant fact from the excerpt.";

/// The user turn: numbered passages (`(source label, text)`), a blank line, then the question.
pub fn grounded_user_message(passages: &[(String, String)], question: &str) -> String {
    let mut message = String::new();
    for (i, (source, text)) in passages.iter().enumerate() {
        message.push_str(&format!("Excerpt [{}] ({}): {}\n", i + 1, source.trim(), text.trim()));
    }
    if !message.is_empty() {
        message.push('\n');
    }
    message.push_str(question.trim());
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_passages_and_puts_the_question_last() {
        let passages = [
            ("Manual A, page 1".to_owned(), " Torque is 38 N·m.\n".to_owned()),
            ("Manual B, page 2".to_owned(), "Uses R-410A.".to_owned()),
        ];
        assert_eq!(
            grounded_user_message(&passages, "What torque? "),
            "Excerpt [1] (Manual A, page 1): Torque is 38 N·m.\n\
             Excerpt [2] (Manual B, page 2): Uses R-410A.\n\nWhat torque?"
        );
        assert_eq!(grounded_user_message(&[], "What torque?"), "What torque?");
    }
}
