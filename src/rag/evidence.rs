//! Evidence: the sentences of the retrieved passages that answer the question, chosen by
//! meaning (the embedder already loaded for retrieval) and by the words and codes they
//! share with the question. Answers are built from evidence only, so a sentence that is
//! not evidence is never spoken.

use serde::{Deserialize, Serialize};

use super::retrieve::Passage;
use super::terms::{asked_codes, codes, facts, printed_as, terms, within_distance, words};
use super::{KnowledgeBase, RagError};

/// Weights of the evidence score beside the cosine similarity. Tuned on the
/// answer-quality benchmark (`fieldvox-eval`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvidenceConfig {
    /// Best score below which the question is taken as not answered by the manuals.
    pub min_score: f32,
    /// Weight of the share of the question's terms that the sentence (or its manual's title) has.
    pub term_weight: f32,
    /// Added when the sentence names a code the question asks about (E47, HX-FLT-0440);
    /// subtracted when the question names codes and the sentence has none of them.
    pub code_weight: f32,
    /// Added when the sentence states a number or a code: technicians ask for facts.
    pub fact_bonus: f32,
    /// Subtracted when the question asks in a unit (watts, psi) the sentence does not use.
    pub unit_weight: f32,
    /// Sentences handed to a language model.
    pub max_sentences: usize,
}

impl Default for EvidenceConfig {
    fn default() -> Self {
        Self {
            min_score: 0.81,
            term_weight: 0.35,
            code_weight: 0.35,
            fact_bonus: 0.05,
            unit_weight: 0.35,
            max_sentences: 3,
        }
    }
}

/// One sentence of one passage, scored against the question.
#[derive(Debug, Clone, PartialEq)]
pub struct Evidence {
    /// Index into the passages it came from.
    pub passage: usize,
    pub sentence: String,
    pub score: f32,
}

/// Abbreviations that end in a period without ending a sentence.
const ABBREVIATIONS: &[&str] = &["e.g.", "i.e.", "approx.", "fig.", "no.", "p.", "pp.", "vs.", "etc.", "min.", "max."];

/// Splits text into sentences at '.', '!' or '?' followed by whitespace, and at paragraph
/// breaks. "3.8 litres", "2,500 hours", "e.g. the" and "HX-FLT-0440" are never cut.
pub fn sentences(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for para in text.split("\n\n") {
        let para = para.split_whitespace().collect::<Vec<_>>().join(" ");
        let mut start = 0;
        let bytes = para.as_bytes();
        for (i, c) in para.char_indices() {
            if !matches!(c, '.' | '!' | '?') || bytes.get(i + 1).is_none_or(|b| *b != b' ') {
                continue;
            }
            let word_start = para[..i].rfind(' ').map_or(0, |w| w + 1);
            if c == '.' && ABBREVIATIONS.contains(&para[word_start..=i].to_lowercase().as_str()) {
                continue;
            }
            out.push(para[start..=i].trim().to_string());
            start = i + 1;
        }
        let rest = para[start..].trim();
        if !rest.is_empty() {
            out.push(rest.to_string());
        }
    }
    out.retain(|s| !s.is_empty());
    out
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = a.iter().map(|x| x * x).sum::<f32>().sqrt() * b.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 { dot / norm } else { 0.0 }
}

/// Units a question can ask in: the words a technician says, and how manuals print them
/// (symbols compared case-sensitively, so the article "a" is not amperes).
const UNITS: &[(&[&str], &[&str])] = &[
    (&["watt", "watts", "wattage", "kilowatt", "kilowatts"], &["W", "kW", "watt", "watts", "kilowatts"]),
    (&["volt", "volts", "voltage"], &["V", "VAC", "VDC", "volt", "volts"]),
    (&["amp", "amps", "ampere", "amperes", "amperage"], &["A", "amp", "amps", "amperes"]),
    (&["decibel", "decibels", "db", "dba"], &["dB", "dBA", "decibel", "decibels"]),
    (&["psi"], &["psi", "psig"]),
    (&["bar"], &["bar", "mbar"]),
    (&["kilogram", "kilograms", "kg", "pounds", "lb", "lbs"], &["kg", "lb", "lbs", "pounds", "kilograms"]),
    (&["rpm"], &["rpm", "RPM"]),
];

/// What the question asks for, in terms (computed once per question).
struct Asked {
    /// Each asked term with the word manuals print for it, if it is jargon.
    terms: Vec<(String, Option<&'static str>)>,
    /// Code keys of the question (letters and digits: "e47", "hxflt0440").
    codes: Vec<String>,
    /// How the manuals print the units the question asks in, one list per unit.
    units: Vec<&'static [&'static str]>,
}

impl Asked {
    fn new(question: &str) -> Self {
        // Words and real codes only: glued pairs like "40head" would dilute the coverage.
        let codes = asked_codes(question);
        let mut terms = words(question);
        terms.extend(codes.iter().cloned());
        let mut seen = std::collections::BTreeSet::new();
        terms.retain(|t| seen.insert(t.clone()));
        let terms = terms
            .into_iter()
            .map(|t| {
                let printed = printed_as(&t);
                (t, printed)
            })
            .collect();
        let said: Vec<String> = question.split(|c: char| !c.is_alphanumeric()).map(str::to_lowercase).collect();
        let units = UNITS
            .iter()
            .filter(|(spoken, _)| spoken.iter().any(|w| said.iter().any(|s| s == w)))
            .map(|u| u.1)
            .collect();
        Self { terms, codes, units }
    }
}

/// A manual's title as evidence sees it, read once per passage rather than per sentence.
struct Title {
    terms: Vec<String>,
    /// Code keys the title prints (the equipment id).
    codes: Vec<String>,
}

impl Title {
    fn new(title: &str) -> Self {
        Self { terms: terms(title), codes: codes(title).into_iter().map(|c| c.key).collect() }
    }
}

/// The evidence score of one sentence of a manual with `title`, with cosine `cos`.
fn score(config: &EvidenceConfig, asked: &Asked, title: &Title, sentence: &str, cos: f32) -> f32 {
    let title_terms = &title.terms;
    let sentence_terms = terms(sentence);
    let has = |t: &str| sentence_terms.iter().chain(title_terms).any(|s| s == t);
    let coverage = if asked.terms.is_empty() {
        0.0
    } else {
        let covered = asked.terms.iter().filter(|(t, printed)| has(t) || printed.is_some_and(has)).count();
        covered as f32 / asked.terms.len() as f32
    };
    // Codes the title already names (the equipment id) do not need repeating in the
    // sentence, nor do near misses of it ("rto4d" heard for "RTU-40").
    let wanted: Vec<&String> = asked
        .codes
        .iter()
        .filter(|c| !title_terms.contains(c) && !title.codes.iter().any(|t| within_distance(t, c, 2)))
        .collect();
    let code = if wanted.is_empty() {
        0.0
    } else if wanted.iter().any(|c| sentence_terms.contains(c)) {
        config.code_weight
    } else {
        -config.code_weight
    };
    let fact = if facts(sentence).is_empty() { 0.0 } else { config.fact_bonus };
    // Asked in watts, answered in anything else: not the answer.
    let printed: Vec<&str> = sentence.split(|c: char| !c.is_alphanumeric()).collect();
    let unit = if asked.units.iter().all(|forms| forms.iter().any(|f| printed.contains(f))) {
        0.0
    } else {
        -config.unit_weight
    };
    cos + config.term_weight * coverage + code + fact + unit
}

impl KnowledgeBase {
    /// Every sentence of `passages` scored against the question, best first.
    pub async fn evidence(
        &self,
        config: &EvidenceConfig,
        tenant: &str,
        question: &str,
        passages: &[Passage],
    ) -> Result<Vec<Evidence>, RagError> {
        let mut found: Vec<Evidence> = passages
            .iter()
            .enumerate()
            .flat_map(|(i, p)| {
                sentences(&p.text).into_iter().map(move |sentence| Evidence { passage: i, sentence, score: 0.0 })
            })
            // Headings and fragments are not answers.
            .filter(|e| e.sentence.split_whitespace().count() >= 4)
            .collect();
        if found.is_empty() {
            return Ok(found);
        }
        let texts = found.iter().map(|e| format!("{}: {}", passages[e.passage].title, e.sentence)).collect();
        let (asked_vector, vectors) =
            tokio::try_join!(self.embedder.embed_query(tenant, question), self.embedder.embed_cached(tenant, texts))?;
        let asked = Asked::new(question);
        let titles: Vec<Title> = passages.iter().map(|p| Title::new(&p.title)).collect();
        for (e, v) in found.iter_mut().zip(&vectors) {
            e.score = score(config, &asked, &titles[e.passage], &e.sentence, cosine(&asked_vector, v));
        }
        found.sort_by(|a, b| b.score.total_cmp(&a.score));
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentences_keep_decimals_units_codes_and_abbreviations() {
        let text = "Oil capacity is 3.8 litres. Change it every 2,500 hours, e.g. in spring! Part HX-FLT-0440 fits.\n\nWiring\n\nThe fuse is 3 A. Done";
        assert_eq!(
            sentences(text),
            vec![
                "Oil capacity is 3.8 litres.",
                "Change it every 2,500 hours, e.g. in spring!",
                "Part HX-FLT-0440 fits.",
                "Wiring",
                "The fuse is 3 A.",
                "Done",
            ]
        );
        assert_eq!(sentences("Torque is 38.5\nN·m here."), vec!["Torque is 38.5 N·m here."], "lines wrap");
    }

    fn scored(question: &str, title: &str, sentence: &str) -> f32 {
        score(&EvidenceConfig::default(), &Asked::new(question), &Title::new(title), sentence, 0.5)
    }

    #[test]
    fn shared_words_codes_and_facts_raise_the_score() {
        let q = "what does fault E47 mean on the RTU-40";
        let title = "RTU-40 Service Manual";
        let right = scored(q, title, "Fault code E47 means low oil pressure at the compressor.");
        let other_code = scored(q, title, "Fault code E12 means a failed discharge sensor.");
        let no_fact = scored(q, title, "Faults are shown on the display.");
        assert!(right > other_code + 0.5, "{right} vs {other_code}");
        assert!(right > no_fact, "{right} vs {no_fact}");
        // The equipment id lives in the title: a sentence need not repeat it, even misheard.
        let torque = scored("torque for the RTU-40 head bolts", title, "Tighten the head bolts to 38 N·m.");
        assert!(torque > 0.5 + 0.2, "{torque}");
        let near = scored("torque for the head bolts on the RTU-4", title, "Tighten the head bolts to 38 N·m.");
        assert!(near > 0.5 + 0.2, "a near miss of the equipment id is no other code: {near}");
        let other_code = scored("what does E58 mean on the RTU-40", title, "Fault code E12 means a failed sensor.");
        assert!(other_code < 0.5, "{other_code}");
        // Asked in watts: a sentence in volts is not the answer, one in W is.
        let heater = "how many watts is the crankcase heater";
        let volts = scored(heater, title, "The crankcase heater runs on 230 V.");
        let watts = scored(heater, title, "The crankcase heater is rated 90 W.");
        assert!(watts > volts + 0.3, "{watts} vs {volts}");
    }

    #[test]
    fn trade_jargon_counts_as_the_word_manuals_print() {
        let title = "RTU-40 Maintenance Guide";
        let (gas, medium) = ("what gas is the RTU-40 filled with", "what medium is the RTU-40 filled with");
        let refrigerant = "The RTU-40 uses R-454B refrigerant.";
        let jargon = scored(gas, title, refrigerant);
        let plain = scored(medium, title, refrigerant);
        assert!(jargon > plain + 0.05, "\"gas\" is the refrigerant: {jargon} vs {plain}");
        let other = scored(gas, title, "The RTU-40 uses eight pleated filters.");
        assert!(jargon > other + 0.05, "{jargon} vs {other}");
        // "flue gas" is still gas: the question's own word counts as before.
        let flue = scored("flue gas CO2 reading", "BW-9 Manual", "The flue gas CO2 reading should be 9.0 percent.");
        assert!(flue > 0.5 + 0.3, "{flue}");
    }
}
