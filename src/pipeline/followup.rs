//! Follow-up questions. "And what's its part number?" names nothing to search for: the
//! thing it asks about is in the previous question. Retrieval gets a standalone question
//! instead — rewritten by the profile's language model when it has one that can, or, for
//! every profile as the fallback, the question with the previous question's codes and
//! topic words carried over.

use crate::llm::{ChatMessage, Role};
use crate::rag::terms;
use crate::session::history::Exchange;

/// Words that point back at something said before.
const REFERRING: &[&str] = &[
    "it", "its", "it's", "itself", "that", "this", "these", "those", "they", "them", "their", "theirs", "one", "ones",
    "same", "there", "he", "she", "him", "her",
];
/// Openings of a question that continues the previous one.
const CONTINUING: &[&str] = &["and", "also", "then", "plus"];
/// "What about …", "how about …".
const ABOUT: &[&str] = &["what about", "how about", "and for", "what of"];
/// Words of a question that say what is asked, not what it is about: never carried.
const ASKING: &[&str] = &[
    "often",
    "long",
    "much",
    "many",
    "replace",
    "replaced",
    "replacing",
    "change",
    "changed",
    "check",
    "checked",
    "set",
    "tighten",
    "tightened",
    "torque",
    "number",
    "part",
    "mean",
    "means",
    "interval",
    "every",
    "size",
    "rating",
    "rated",
    "capacity",
    "value",
    "spec",
    "specs",
    "kind",
    "type",
    "give",
    "know",
    "want",
    "say",
    "said",
];
/// A question longer than this (content words) is taken to stand on its own.
const SHORT: usize = 6;

/// Whether `question` leans on the previous exchange.
pub fn is_follow_up(question: &str, previous: &Exchange) -> bool {
    let lower = question.to_lowercase();
    let tokens = terms::spoken_words(question);
    let referring = tokens.iter().any(|t| REFERRING.contains(&t.as_str()));
    let continuing = tokens.first().is_some_and(|t| CONTINUING.contains(&t.as_str()))
        || ABOUT.iter().any(|a| lower.trim_start().starts_with(a));
    let names_equipment = !terms::asked_codes(question).is_empty();
    let short = terms::words(question).len() <= SHORT;
    // "What's the part number?" after a question about the RTU-40 filter is about it too.
    let previous_named = !terms::asked_codes(&previous.standalone).is_empty();
    short && (referring || continuing || (!names_equipment && previous_named))
}

/// The question retrieval should search for, carrying the previous question's codes and
/// topic words when this one is a follow-up (no model call).
pub fn by_terms(question: &str, previous: Option<&Exchange>) -> String {
    let Some(previous) = previous.filter(|p| is_follow_up(question, p)) else {
        return question.to_string();
    };
    let have: Vec<String> = terms::query_terms(question);
    // "What about the oil filter?" names its own topic and takes only the equipment;
    // "how do I clean it?" and "what's the part number?" take the topic too.
    let referring = terms::spoken_words(question).iter().any(|t| REFERRING.contains(&t.as_str()));
    let own_topic = terms::words(question).iter().any(|w| !ASKING.contains(&w.as_str()));
    let carry_topic = referring || !own_topic;
    // A follow-up that names a code of its own kind asks about that one instead ("What
    // about E58?" after E47, "and the HX-220?" after the RTU-40): the previous code of that
    // kind stays behind, or its sentence would answer.
    let own_kinds: Vec<String> = terms::codes(question).iter().map(|c| code_kind(&c.printed)).collect();
    let previous_codes = terms::codes(&previous.standalone);
    let mut carried: Vec<String> = Vec::new();
    for code in &previous_codes {
        let replaced = own_kinds.contains(&code_kind(&code.printed));
        if !have.contains(&code.key) && !carried.contains(&code.printed) && !replaced {
            carried.push(code.printed.clone());
        }
    }
    for word in terms::spoken_words(&previous.standalone).into_iter().filter(|_| carry_topic) {
        let folded = terms::words(&word);
        let Some(key) = folded.first() else { continue };
        let code_part = previous_codes.iter().any(|c| c.key.contains(key.as_str()));
        if have.contains(key) || ASKING.contains(&word.as_str()) || code_part || carried.contains(&word) {
            continue;
        }
        carried.push(word);
    }
    if carried.is_empty() {
        return question.to_string();
    }
    format!("{} ({})", question.trim_end(), carried.join(" "))
}

/// A code's kind by its form, runs of letters, digits and separators collapsed: "E47" and
/// "E58" are `a9`, "RTU-40" and "HX-220" are `a-9`, "GK-4471-B" is `a-9-a`.
fn code_kind(printed: &str) -> String {
    let mut kind = String::new();
    for c in printed.chars() {
        let class = match c {
            c if c.is_alphabetic() => 'a',
            c if c.is_numeric() => '9',
            _ => '-',
        };
        if !kind.ends_with(class) {
            kind.push(class);
        }
    }
    kind
}

/// Characters a rewritten question may have; longer is a model rambling.
const MAX_REWRITE_CHARS: usize = 240;

/// The prompt asking a language model for the standalone question.
pub fn rewrite_messages(question: &str, history: &[&Exchange]) -> Vec<ChatMessage> {
    let mut dialogue = String::new();
    for e in history {
        dialogue.push_str(&format!("Technician: {}\nAssistant: {}\n", e.question, e.answer));
    }
    vec![
        ChatMessage {
            role: Role::System,
            content: "Rewrite the technician's last question so it can be understood without the conversation: \
                      name the equipment and the part or topic it refers to. Reply with the question only."
                .into(),
        },
        ChatMessage { role: Role::User, content: format!("{dialogue}Last question: {question}\nRewritten question:") },
    ]
}

/// A model's rewrite, if it looks like one question (not empty, one line, not rambling).
pub fn accept_rewrite(text: &str) -> Option<String> {
    let line = text.trim().trim_matches('"').trim();
    let ok = !line.is_empty() && !line.contains('\n') && line.len() <= MAX_REWRITE_CHARS;
    ok.then(|| line.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn previous(question: &str) -> Exchange {
        Exchange {
            question_item: "item_q".into(),
            question: question.into(),
            standalone: question.into(),
            answer_item: "item_a".into(),
            answer: String::new(),
            said: String::new(),
            answer_audio_us: 0,
        }
    }

    #[test]
    fn a_follow_up_carries_the_equipment_and_topic() {
        let p = previous("How often do I replace the intake filter on the RTU-40?");
        let q = by_terms("and what's its part number?", Some(&p));
        assert_eq!(q, "and what's its part number? (RTU-40 intake filter)");
        assert_eq!(by_terms("What about the oil filter?", Some(&p)), "What about the oil filter? (RTU-40)");
        assert_eq!(by_terms("How do I clean it?", Some(&p)), "How do I clean it? (RTU-40 intake filter)");
        assert_eq!(by_terms("What's the part number?", Some(&p)), "What's the part number? (RTU-40 intake filter)");
    }

    #[test]
    fn a_follow_up_naming_its_own_code_leaves_the_previous_one_of_that_kind() {
        let p = previous("What does fault code E47 mean on the RTU-40?");
        assert_eq!(by_terms("What about E58?", Some(&p)), "What about E58? (RTU-40)");
        let p = previous("What torque for the head bolts on the RTU-40?");
        assert_eq!(by_terms("And on the HX-220?", Some(&p)), "And on the HX-220?");
        assert_eq!(code_kind("GK-4471-B"), "a-9-a");
    }

    #[test]
    fn a_question_that_stands_alone_is_left_as_it_is() {
        let p = previous("How often do I replace the intake filter on the RTU-40?");
        let own = "What torque for the compressor head bolts on the HX-220?";
        assert_eq!(by_terms(own, Some(&p)), own);
        assert_eq!(by_terms("and what's its part number?", None), "and what's its part number?");
        let long = "What is the refrigerant charge of the condenser circuit when the unit ships from the factory";
        assert_eq!(by_terms(long, Some(&p)), long);
    }

    #[test]
    fn a_rewrite_must_be_one_short_question() {
        assert_eq!(
            accept_rewrite(" \"What is the RTU-40 intake filter part number?\" ").as_deref(),
            Some("What is the RTU-40 intake filter part number?")
        );
        assert_eq!(accept_rewrite(""), None);
        assert_eq!(accept_rewrite("Sure!\nHere it is"), None);
    }
}
