//! The grounded prompt: the evidence sentences, labelled with their sources, then the
//! question. One wording for every provider, tuned against the smallest model we ship
//! (see `local::grounded`), which bigger models follow just as well. Only the sentences
//! that matter are sent: a small model reads a long prompt slowly and is distracted by it.

use super::local::grounded_user_message;
use super::{AnswerRequest, ChatMessage, Role};
use crate::rag::retrieve::Passage;

/// A passage's source as it is cited in the prompt and spoken in answers.
pub fn source_label(p: &Passage) -> String {
    format!("{}, page {}", p.title, p.page)
}

/// The spoken source that closes every answer: "From the RTU-40 Service Manual, page 3."
pub fn source_sentence(p: &Passage) -> String {
    let the = if p.title.to_lowercase().starts_with("the ") { "" } else { "the " };
    format!("From {the}{}.", source_label(p))
}

/// Evidence grouped by passage (best passage first), each group's sentences in evidence order.
pub fn excerpts(req: &AnswerRequest) -> Vec<(String, String)> {
    let mut groups: Vec<(usize, Vec<&str>)> = Vec::new();
    for e in &req.evidence {
        match groups.iter_mut().find(|(p, _)| *p == e.passage) {
            Some((_, sentences)) => sentences.push(&e.sentence),
            None => groups.push((e.passage, vec![&e.sentence])),
        }
    }
    groups
        .into_iter()
        .filter_map(|(p, sentences)| Some((source_label(req.passages.get(p)?), sentences.join(" "))))
        .collect()
}

/// The system prompt, the conversation so far (so a follow-up reads in context), then
/// the evidence and the question.
pub fn messages(req: &AnswerRequest) -> Vec<ChatMessage> {
    let mut messages = vec![ChatMessage { role: Role::System, content: req.system_prompt.clone() }];
    for (question, answer) in &req.history {
        messages.push(ChatMessage { role: Role::User, content: question.clone() });
        messages.push(ChatMessage { role: Role::Assistant, content: answer.clone() });
    }
    messages.push(ChatMessage { role: Role::User, content: grounded_user_message(&excerpts(req), &req.question) });
    messages
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rag::evidence::Evidence;
    use uuid::Uuid;

    #[test]
    fn excerpts_group_the_best_sentences_by_source() {
        let passage = |title: &str, page| Passage {
            chunk_id: Uuid::nil(),
            manual_id: Uuid::nil(),
            title: title.into(),
            page,
            text: String::new(),
            score: 0.5,
        };
        let e = |passage, sentence: &str| Evidence { passage, sentence: sentence.into(), score: 1.0 };
        let req = AnswerRequest {
            system_prompt: "s".into(),
            question: "q".into(),
            passages: vec![passage("A", 1), passage("The B Guide", 2)],
            evidence: vec![e(1, "B one."), e(0, "A one."), e(1, "B two.")],
            max_tokens: 10,
            history: vec![("Earlier?".into(), "Earlier answer.".into())],
        };
        assert_eq!(
            excerpts(&req),
            vec![
                ("The B Guide, page 2".to_string(), "B one. B two.".to_string()),
                ("A, page 1".into(), "A one.".into())
            ]
        );
        assert_eq!(source_sentence(&req.passages[1]), "From The B Guide, page 2.");
        assert_eq!(source_sentence(&req.passages[0]), "From the A, page 1.");
        let m = messages(&req);
        let roles: Vec<Role> = m.iter().map(|m| m.role).collect();
        assert_eq!(roles, vec![Role::System, Role::User, Role::Assistant, Role::User], "history before the question");
        assert_eq!(m[2].content, "Earlier answer.");
    }
}
