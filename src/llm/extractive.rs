//! The extractive answerer: no language model, it reads out the sentences of the best
//! passage that share the most words with the question, with their source.

use super::prompt::source_label;
use crate::rag::retrieve::Passage;

const STOPWORDS: &[&str] = &[
    "a", "an", "the", "is", "are", "what", "which", "how", "for", "on", "of", "to", "in", "do", "does", "i", "it",
    "and", "or", "with", "my", "me", "should", "can", "be", "at", "by", "this", "that",
];

fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric() && c != '-')
        .map(str::to_lowercase)
        .filter(|w| !w.is_empty() && !STOPWORDS.contains(&w.as_str()))
        .collect()
}

pub fn answer(question: &str, passages: &[Passage]) -> String {
    let Some(best) = passages.first() else {
        return "I could not find that in your manuals.".to_string();
    };
    let asked = words(question);
    let sentences: Vec<&str> =
        best.text.split_inclusive(['.', '!', '?']).map(str::trim).filter(|s| !s.is_empty()).collect();
    let overlap = |s: &str| words(s).iter().filter(|w| asked.contains(w)).count();
    let top = sentences.iter().copied().max_by_key(|s| overlap(s)).unwrap_or(best.text.as_str());
    // Keep the sentence after the best one when it continues the instruction.
    let pos = sentences.iter().position(|s| *s == top).unwrap_or(0);
    let mut chosen = top.to_string();
    if let Some(next) = sentences.get(pos + 1)
        && overlap(next) > 0
    {
        chosen.push(' ');
        chosen.push_str(next);
    }
    format!("According to {}: {}", source_label(best), chosen)
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    #[test]
    fn reads_the_matching_sentence_with_its_source() {
        let p = Passage {
            chunk_id: Uuid::nil(),
            manual_id: Uuid::nil(),
            title: "RTU-40 Service Manual".into(),
            page: 12,
            text: "Check the belt. The compressor head bolts are tightened to 38 N·m. Use a star pattern.".into(),
            score: 0.8,
        };
        let a = answer("What torque for the compressor head bolts?", &[p]);
        assert_eq!(
            a,
            "According to RTU-40 Service Manual, page 12: The compressor head bolts are tightened to 38 N·m."
        );
        assert_eq!(answer("anything", &[]), "I could not find that in your manuals.");
    }
}
