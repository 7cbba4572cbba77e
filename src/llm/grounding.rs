//! Grounded by construction: a generated sentence may only state numbers, units and codes
//! that the evidence it was given states. A sentence that invents one is never spoken; the
//! turn falls back to the best evidence sentence. Repeats and sentences cut off by the
//! token limit are never spoken either.

use crate::rag::terms::{KnownFacts, facts};

/// Why a generated sentence is not spoken.
#[derive(Debug, Clone, PartialEq)]
pub enum Rejection {
    /// States facts (numbers, codes) that no source states.
    Unsupported(Vec<String>),
    /// Says again what was already said.
    Repeated,
    /// Cut off by the token limit, stating these facts (perhaps none) when it was.
    Cut(Vec<String>),
}

impl Rejection {
    /// Whether the answer lost a fact it was giving: that fact is then read from the
    /// evidence instead. A repeat or a cut lead-in loses nothing.
    pub fn lost_a_fact(&self) -> bool {
        match self {
            Rejection::Unsupported(_) => true,
            Rejection::Cut(facts) => !facts.is_empty(),
            Rejection::Repeated => false,
        }
    }
}

/// Checks each sentence of one generated answer against its sources.
pub struct Grounding {
    known: KnownFacts,
    said: Vec<String>,
}

fn comparable(sentence: &str) -> String {
    sentence.chars().filter(|c| c.is_alphanumeric()).flat_map(char::to_lowercase).collect()
}

impl Grounding {
    /// `sources`: the evidence sentences and the source labels the model saw.
    pub fn new(sources: Vec<String>) -> Self {
        Self { known: KnownFacts::of(sources.iter().map(String::as_str)), said: Vec::new() }
    }

    pub fn check(&mut self, sentence: &str) -> Result<(), Rejection> {
        let key = comparable(sentence);
        if !key.is_empty() && self.said.contains(&key) {
            return Err(Rejection::Repeated);
        }
        let invented = self.known.unsupported(sentence);
        if !invented.is_empty() {
            return Err(Rejection::Unsupported(invented));
        }
        self.said.push(key);
        Ok(())
    }

    /// Checks what is left when the model stops: cut unless it ends a sentence.
    pub fn check_rest(&mut self, rest: &str) -> Result<(), Rejection> {
        if !is_whole(rest) {
            return Err(Rejection::Cut(facts(rest).into_iter().collect()));
        }
        self.check(rest)
    }
}

/// True when generated text ends a sentence (not cut off by the token limit).
fn is_whole(sentence: &str) -> bool {
    sentence.trim_end().ends_with(['.', '!', '?'])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_with_an_invented_number_is_rejected() {
        let mut g = Grounding::new(vec![
            "Replace the intake air filter every 800 hours.".into(),
            "HX-220 Field Service Manual, page 2".into(),
        ]);
        assert_eq!(g.check("Replace it every 200 hours."), Err(Rejection::Unsupported(vec!["200".into()])));
        assert_eq!(g.check("Fault E47 is a cooling fault."), Err(Rejection::Unsupported(vec!["e47".into()])));
        assert_eq!(g.check("Replace the filter every 800 hours."), Ok(()));
        assert_eq!(g.check("Replace the filter every 800 hours!"), Err(Rejection::Repeated));
        assert_eq!(g.check("See the HX-220 manual, page 2."), Ok(()), "sources' labels back their codes");
    }

    #[test]
    fn cut_sentences_are_not_whole() {
        assert!(is_whole("It is 38 N·m."));
        assert!(!is_whole("It is 38 N·m in a star pat"));
    }

    #[test]
    fn a_cut_or_invented_fact_is_lost_but_a_repeat_or_cut_lead_in_is_not() {
        let mut g = Grounding::new(vec!["The intake air filter part number is IF-2040-C.".into()]);
        let cut = g.check_rest("The part number is IF-2040").unwrap_err();
        assert_eq!(cut, Rejection::Cut(vec!["2040".into(), "if2040".into()]));
        assert!(cut.lost_a_fact());
        let lead_in = g.check_rest("The manual has a section on").unwrap_err();
        assert!(!lead_in.lost_a_fact());
        assert!(g.check("The part number is 2040-C.").unwrap_err().lost_a_fact(), "a part number cut short");
        assert_eq!(g.check_rest("The part number is IF-2040-C."), Ok(()));
        assert!(!g.check("The part number is IF-2040-C!").unwrap_err().lost_a_fact(), "a repeat");
    }
}
