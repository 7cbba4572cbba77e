//! Text to IPA phonemes the way piper-phonemize produces them: espeak-ng IPA per clause,
//! stress marks kept, language-switch flags dropped, the clause punctuation appended as a
//! phoneme (followed by a space after `,` `:` `;`), and the result grouped into sentences.

use std::time::Instant;

use super::clauses::{self, Clause, Terminator};
use super::espeak;
use crate::models::ModelError;

/// Phonemes of `text`, one string per sentence. Blank text gives no sentences.
pub(super) fn sentences(text: &str, voice: &str) -> Result<Vec<String>, ModelError> {
    espeak::check_voice(voice)?;
    let started = Instant::now();
    let text = espeak::clean_text(text);
    let clauses = clauses::split(&text);
    if clauses.is_empty() {
        return Ok(Vec::new());
    }
    let phonemes = match aligned(&espeak::ipa_clauses(&text, voice)?, &clauses) {
        Some(phonemes) => phonemes,
        None => {
            // espeak broke the text elsewhere than expected (as after "Stop! !"): ask
            // sentence by sentence, so a disagreement only costs that sentence its commas.
            tracing::debug!(clauses = clauses.len(), "espeak clause breaks differ, phonemizing per sentence");
            let mut phonemes = Vec::with_capacity(clauses.len());
            for sentence in clauses.split_inclusive(|c| c.terminator.ends_sentence()) {
                let text: Vec<&str> = sentence.iter().map(|c| c.text.as_str()).collect();
                let lines = espeak::ipa_clauses(&text.join(" "), voice)?;
                match aligned(&lines, sentence) {
                    Some(clause_phonemes) => phonemes.extend(clause_phonemes),
                    None => {
                        let last = sentence.last().map_or(Terminator::Plain, |c| c.terminator);
                        phonemes.push((lines.join(" "), last));
                    }
                }
            }
            phonemes
        }
    };
    let sentences = assemble(&phonemes);
    tracing::debug!(
        elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
        clauses = clauses.len(),
        sentences = sentences.len(),
        "phonemized text"
    );
    Ok(sentences)
}

/// Pairs espeak's clause lines with the splitter's terminators, if they are one to one.
/// espeak sometimes prints an empty last line (after a closing quote); it carries nothing.
fn aligned(lines: &[String], clauses: &[Clause]) -> Option<Vec<(String, Terminator)>> {
    let mut lines = lines;
    while lines.len() > clauses.len()
        && let Some((last, rest)) = lines.split_last()
        && last.trim().is_empty()
    {
        lines = rest;
    }
    (lines.len() == clauses.len()).then(|| lines.iter().cloned().zip(clauses.iter().map(|c| c.terminator)).collect())
}

/// Joins each clause's phonemes with its punctuation and cuts sentences at `.` `?` `!`.
fn assemble(clauses: &[(String, Terminator)]) -> Vec<String> {
    let mut sentences = Vec::new();
    let mut sentence = String::new();
    for &(ref ipa, terminator) in clauses {
        let ipa = strip_language_flags(ipa);
        let ipa = ipa.trim();
        if !ipa.is_empty() {
            if !sentence.is_empty() && !sentence.ends_with(' ') {
                sentence.push(' ');
            }
            sentence.push_str(ipa);
            if let Some(punctuation) = terminator.phoneme() {
                sentence.push(punctuation);
                if terminator.spaced() {
                    sentence.push(' ');
                }
            }
        }
        if terminator.ends_sentence() {
            finish(&mut sentences, &mut sentence);
        }
    }
    finish(&mut sentences, &mut sentence);
    sentences
}

fn finish(sentences: &mut Vec<String>, sentence: &mut String) {
    let done = sentence.trim_end();
    if !done.is_empty() {
        sentences.push(done.to_owned());
    }
    sentence.clear();
}

/// Removes espeak's `(fr)`-style markers around words it read in another language.
fn strip_language_flags(ipa: &str) -> String {
    let mut out = String::with_capacity(ipa.len());
    let mut in_flag = false;
    for c in ipa.chars() {
        match (in_flag, c) {
            (false, '(') => in_flag = true,
            (true, ')') => in_flag = false,
            (false, c) => out.push(c),
            (true, _) => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn punctuation_and_sentences_follow_piper() {
        let got = sentences("Check the seal, then stop. Is it tight? Mr. Smith knows", "en-us").unwrap();
        assert!(got[0].contains(", ") && got[0].ends_with('.'), "{got:?}");
        assert!(got[0].contains("ˈ"), "stress marks kept: {got:?}");
        assert!(got[1].ends_with('?'), "{got:?}");
        // espeak ends a clause after "Mr." as after any period, so Piper does too.
        assert_eq!(got.len(), 4, "{got:?}");
        assert!(!got[3].contains('(') && got[3].contains("smˈɪθ"), "{got:?}");
    }

    #[test]
    fn disagreeing_clause_breaks_cost_only_their_sentence() {
        // espeak reads the lone "!" aloud inside the next clause; the splitter ends a clause there.
        let got = sentences("Check it, then go. Stop! ! Go now. Done, finally.", "en-us").unwrap();
        assert!(got.first().is_some_and(|s| s.contains(", ") && s.ends_with('.')), "{got:?}");
        assert!(got.last().is_some_and(|s| s.contains(", ") && s.ends_with('.')), "{got:?}");
        assert!(got.iter().any(|s| s.contains("nˈaʊ")), "{got:?}");
        // A closing quote at the very end makes espeak print an empty extra clause.
        let quoted = sentences("He said: \"Go.\"", "en-us").unwrap();
        assert_eq!(quoted, vec!["hiː sˈɛd: ɡˈoʊ."]);
    }

    #[test]
    fn language_flags_are_dropped() {
        assert_eq!(strip_language_flags("(fr)kʁwasɑ̃(en) ænd"), "kʁwasɑ̃ ænd");
    }
}
