//! A session's conversation: the last few question-and-answer exchanges, bounded in
//! number and size, holding of each answer only what the user heard.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::protocol::ItemRole;

/// Bounds of the history a session keeps (profile `[conversation]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConversationConfig {
    /// Exchanges kept.
    pub max_turns: usize,
    /// Characters of questions and answers kept (≈ 4 per token), newest first.
    pub max_chars: usize,
    /// How a follow-up becomes a standalone question for retrieval.
    pub rewrite: Rewrite,
    /// Send `conversation.item.input_audio_transcription.delta` from the transcription
    /// run in the user's pauses.
    pub partial_transcripts: bool,
}

impl Default for ConversationConfig {
    fn default() -> Self {
        Self { max_turns: 4, max_chars: 1_600, rewrite: Rewrite::Terms, partial_transcripts: true }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rewrite {
    /// Carry the previous question's equipment and topic terms (no model call).
    Terms,
    /// Ask the profile's language model to rewrite the question (falls back to `Terms`).
    Llm,
    /// Every question is searched as it was asked (the baseline the benchmark compares to).
    Off,
}

/// One question and the answer to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Exchange {
    pub question_item: String,
    pub question: String,
    /// The question as retrieval saw it (a follow-up rewritten to stand alone).
    pub standalone: String,
    pub answer_item: String,
    /// What the user heard of the answer.
    pub answer: String,
    /// All of the answer that was said (sent), whether heard or not.
    pub said: String,
    /// Microseconds of answer audio sent (to map a heard duration onto the text).
    pub answer_audio_us: u64,
}

impl Exchange {
    /// Keeps the part of the answer heard in `heard_us` of its audio: speech runs at a
    /// steady pace, so the same fraction of its text, cut back to a word boundary.
    pub fn truncate(&mut self, heard_us: u64) {
        if self.answer_audio_us == 0 {
            // Cut short before any audio: nothing of it was heard.
            self.answer.clear();
            return;
        }
        self.answer = heard_part(&self.said, heard_us as f64 / self.answer_audio_us as f64);
    }
}

/// The first `fraction` of `text`, ending at a word boundary.
pub fn heard_part(text: &str, fraction: f64) -> String {
    let chars: Vec<char> = text.chars().collect();
    let keep = ((chars.len() as f64) * fraction.clamp(0.0, 1.0)).floor() as usize;
    if keep >= chars.len() {
        return text.to_string();
    }
    // A word cut in half was not heard.
    let cut = if chars.get(keep).is_some_and(|c| c.is_whitespace()) {
        keep
    } else {
        chars[..keep].iter().rposition(|c| c.is_whitespace()).unwrap_or(0)
    };
    chars[..cut].iter().collect::<String>().trim_end().to_string()
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct History {
    exchanges: VecDeque<Exchange>,
}

impl History {
    pub fn push(&mut self, exchange: Exchange, config: &ConversationConfig) {
        self.exchanges.push_back(exchange);
        while self.exchanges.len() > config.max_turns.max(1) {
            self.exchanges.pop_front();
        }
        // Oldest first out until the text fits; the newest exchange always stays.
        while self.exchanges.len() > 1 && self.chars() > config.max_chars {
            self.exchanges.pop_front();
        }
    }

    fn chars(&self) -> usize {
        self.exchanges.iter().map(|e| e.question.len() + e.said.len()).sum()
    }

    /// Oldest first.
    pub fn exchanges(&self) -> impl Iterator<Item = &Exchange> {
        self.exchanges.iter()
    }

    /// Truncates the answer with this item id (or response id) to what was heard.
    pub fn truncate(&mut self, item_id: &str, heard_us: u64) -> bool {
        match self.exchanges.iter_mut().find(|e| e.answer_item == item_id) {
            Some(e) => {
                e.truncate(heard_us);
                true
            }
            None => false,
        }
    }

    /// The text held for an item: a question, or the heard part of an answer.
    pub fn item(&self, item_id: &str) -> Option<(ItemRole, &str)> {
        self.exchanges.iter().find_map(|e| {
            if e.question_item == item_id {
                Some((ItemRole::User, e.question.as_str()))
            } else if e.answer_item == item_id {
                Some((ItemRole::Assistant, e.answer.as_str()))
            } else {
                None
            }
        })
    }

    pub fn len(&self) -> usize {
        self.exchanges.len()
    }

    pub fn is_empty(&self) -> bool {
        self.exchanges.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exchange(n: usize, answer: &str) -> Exchange {
        Exchange {
            question_item: format!("item_q{n}"),
            question: format!("question {n}"),
            standalone: format!("question {n}"),
            answer_item: format!("item_a{n}"),
            answer: answer.into(),
            said: answer.into(),
            answer_audio_us: 4_000_000,
        }
    }

    #[test]
    fn keeps_only_the_heard_words() {
        let text = "Replace the filter every ninety days.";
        assert_eq!(heard_part(text, 0.5), "Replace the filter");
        assert_eq!(heard_part(text, 0.0), "");
        assert_eq!(heard_part(text, 1.0), text);
        let mut e = exchange(1, text);
        e.truncate(1_000_000);
        assert_eq!(e.answer, "Replace");
        e.truncate(3_000_000);
        assert_eq!(e.answer, "Replace the filter every", "a later mark counts from the whole answer");
        e.truncate(10_000_000);
        assert_eq!(e.answer, text);
    }

    #[test]
    fn bounded_by_turns_and_size_newest_kept() {
        let config = ConversationConfig { max_turns: 2, max_chars: 60, ..ConversationConfig::default() };
        let mut h = History::default();
        for n in 0..3 {
            h.push(exchange(n, "short"), &config);
        }
        assert_eq!(h.len(), 2);
        assert_eq!(h.exchanges().next().map(|e| e.question.as_str()), Some("question 1"));
        h.push(exchange(3, &"long answer ".repeat(10)), &config);
        assert_eq!(h.len(), 1, "older exchanges leave when the text is over budget");
        assert!(h.truncate("item_a3", 2_000_000));
        assert!(!h.truncate("item_a9", 1));
    }
}
