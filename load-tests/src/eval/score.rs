//! Scoring one answer: the fact (numbers compared as numbers: "2,500" is not "500"), the
//! page cited, no fact of another tenant, no number or code missing from the cited pages.

use fieldvox::rag::terms::{facts, unsupported_facts};
use serde::Serialize;

use super::corpus::{Corpus, Question};

/// What the answerer says when no manual answers.
pub const NOT_FOUND: &str = "could not find";

/// A citation as the server sent it.
#[derive(Debug, Clone, PartialEq)]
pub struct Cited {
    pub title: String,
    pub page: u32,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Verdict {
    /// Answerable: every fact stated. Unanswerable: said it could not find it.
    pub right: bool,
    /// The first citation is the manual and page that hold the answer (answerable only).
    pub page_right: bool,
    /// Facts of another tenant's manuals that the asking tenant's manuals do not state.
    pub foreign: Vec<String>,
    /// Numbers and codes that the cited pages do not state.
    pub invented: Vec<String>,
}

/// True when `answer` states `fact`: numbers and codes by value, words as a phrase.
pub fn states(answer: &str, fact: &str) -> bool {
    let wanted = facts(fact);
    if wanted.is_empty() {
        let norm = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase();
        return norm(answer).contains(&norm(fact));
    }
    let said = facts(answer);
    wanted.iter().all(|f| said.contains(f))
}

pub fn judge(corpus: &Corpus, q: &Question, answer: &str, cited: &[Cited]) -> Verdict {
    let own: Vec<&str> = corpus
        .manuals
        .iter()
        .filter(|m| m.tenant == q.tenant)
        .flat_map(|m| m.pages.iter().map(String::as_str))
        .collect();
    let others: Vec<&str> = corpus
        .manuals
        .iter()
        .filter(|m| m.tenant != q.tenant)
        .flat_map(|m| m.pages.iter().map(String::as_str))
        .collect();
    let said = facts(answer);
    // The spoken source ("…, page 5") is the tenant's own citation, not a fact of another.
    let labels: Vec<String> = cited.iter().map(|c| format!("{}, page {}", c.title, c.page)).collect();
    let own_facts: std::collections::BTreeSet<String> =
        own.iter().copied().chain(labels.iter().map(String::as_str)).flat_map(facts).collect();
    let other_facts: std::collections::BTreeSet<String> = others.iter().flat_map(|p| facts(p)).collect();
    let foreign = said.iter().filter(|f| other_facts.contains(*f) && !own_facts.contains(*f)).cloned().collect();

    let mut sources: Vec<String> = Vec::new();
    for c in cited {
        if let Some(text) = corpus.page(&q.tenant, &c.title, c.page) {
            sources.push(text.to_string());
        }
        sources.push(format!("{}, page {}", c.title, c.page));
    }
    let sources: Vec<&str> = sources.iter().map(String::as_str).collect();
    let invented = unsupported_facts(answer, &sources);

    let (right, page_right) = if q.answerable() {
        let right = q.facts.iter().all(|f| states(answer, f));
        let page_right = cited.first().is_some_and(|c| Some(&c.title) == q.manual.as_ref() && Some(c.page) == q.page);
        (right, page_right)
    } else {
        (answer.to_lowercase().contains(NOT_FOUND), false)
    };
    Verdict { right, page_right, foreign, invented }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::corpus::{Kind, Manual};

    fn corpus() -> Corpus {
        let manual = |tenant: &str, pages: &[&str]| Manual {
            tenant: tenant.into(),
            equipment: "RTU-40".into(),
            title: format!("{tenant} manual"),
            file: String::new(),
            pages: pages.iter().map(|p| p.to_string()).collect(),
        };
        Corpus {
            manuals: vec![
                manual("a", &["Intro.", "Change the oil every 2,500 hours. Fault E47 means low oil pressure."]),
                manual("b", &["Change the oil every 3,000 hours. Fault E47 means fan failure."]),
            ],
            questions: Vec::new(),
            dialogues: Vec::new(),
        }
    }

    fn question(facts: &[&str], kind: Kind) -> Question {
        Question {
            id: "q".into(),
            tenant: "a".into(),
            text: "q".into(),
            facts: facts.iter().map(|f| f.to_string()).collect(),
            manual: (kind != Kind::Unanswerable).then(|| "a manual".into()),
            page: (kind != Kind::Unanswerable).then_some(2),
            kind,
            noisy: false,
        }
    }

    #[test]
    fn numbers_are_compared_as_numbers() {
        assert!(states("every 2,500 hours", "2,500"));
        assert!(states("every 2500 hours", "2,500"));
        assert!(!states("every 500 hours", "2,500"));
        assert!(!states("every 2,500 hours", "500"));
        assert!(states("Fault E47 means LOW OIL  pressure.", "low oil pressure"));
        assert!(states("order HX-FLT-0440", "HX-FLT-0440") && !states("order HX-FLT-0450", "HX-FLT-0440"));
    }

    #[test]
    fn verdicts_catch_wrong_pages_foreign_and_invented_facts() {
        let c = corpus();
        let page2 = [Cited { title: "a manual".into(), page: 2 }];
        let q = question(&["2,500"], Kind::Number);
        let good = judge(&c, &q, "Change the oil every 2,500 hours. From the a manual, page 2.", &page2);
        assert!(good.right && good.page_right && good.foreign.is_empty() && good.invented.is_empty(), "{good:?}");

        let wrong_page = judge(&c, &q, "every 2,500 hours", &[Cited { title: "a manual".into(), page: 1 }]);
        assert!(wrong_page.right && !wrong_page.page_right);
        assert_eq!(wrong_page.invented, vec!["2500"], "page 1 does not say it");

        let foreign = judge(&c, &q, "every 3,000 hours", &page2);
        assert!(!foreign.right);
        assert_eq!((foreign.foreign.clone(), foreign.invented.clone()), (vec!["3000".into()], vec!["3000".into()]));

        let nothing = question(&[], Kind::Unanswerable);
        assert!(judge(&c, &nothing, "I could not find that in your manuals.", &[]).right);
        assert!(!judge(&c, &nothing, "Every 2,500 hours.", &page2).right);
    }
}
