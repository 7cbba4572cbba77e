//! Splits streamed LLM text into sentences, so speech can start after the first one.
//! The very first chunk may end earlier: at a clause (comma, colon), or, once it has a
//! few words, before a word that starts a new phrase ("that", "in", "and" ...). A short
//! first chunk is synthesized sooner, and time to first audio is what the user feels;
//! a small local model writes about 20 tokens a second, so waiting for a whole first
//! sentence costs more than a second.

/// Accumulates text deltas and yields complete sentences.
#[derive(Debug, Default)]
pub struct SentenceSplitter {
    buf: String,
    emitted: bool,
}

/// A first clause shorter than this is not worth speaking on its own.
const MIN_FIRST_CLAUSE: usize = 16;
/// Words the first chunk needs before it may end at a phrase boundary.
const MIN_FIRST_WORDS: usize = 5;
/// Words that usually start a new phrase: a natural place for a breath.
const PHRASE_STARTS: &[&str] = &[
    "that", "which", "and", "but", "so", "because", "in", "on", "at", "to", "with", "for", "using", "are", "is", "was",
];

/// Abbreviations that end in a period without ending a sentence.
const ABBREVIATIONS: &[&str] =
    &["e.g.", "i.e.", "approx.", "fig.", "no.", "p.", "pp.", "vs.", "etc.", "mr.", "dr.", "st."];

impl SentenceSplitter {
    /// Adds a delta; returns every sentence it completed.
    pub fn push(&mut self, delta: &str) -> Vec<String> {
        self.buf.push_str(delta);
        let mut out = Vec::new();
        while let Some(end) = self.boundary() {
            let sentence: String = self.buf.drain(..end).collect();
            let sentence = sentence.trim();
            if !sentence.is_empty() {
                out.push(sentence.to_string());
                self.emitted = true;
            }
        }
        out
    }

    /// Whatever is left when the stream ends.
    pub fn finish(&mut self) -> Option<String> {
        let rest = std::mem::take(&mut self.buf);
        let rest = rest.trim();
        (!rest.is_empty()).then(|| rest.to_string())
    }

    /// Byte index just past a sentence end followed by whitespace, if any.
    fn boundary(&self) -> Option<usize> {
        self.sentence_end().or_else(|| if self.emitted { None } else { self.phrase_start() })
    }

    /// Before the first phrase-starting word that follows `MIN_FIRST_WORDS` words and is
    /// itself complete (followed by whitespace).
    fn phrase_start(&self) -> Option<usize> {
        let mut words = 0;
        let mut start = None;
        for (i, c) in self.buf.char_indices() {
            let boundary = c.is_whitespace();
            match (start, boundary) {
                (None, false) => start = Some(i),
                (Some(s), true) => {
                    words += 1;
                    let word = self.buf[s..i].to_ascii_lowercase();
                    if words > MIN_FIRST_WORDS && PHRASE_STARTS.contains(&word.as_str()) {
                        return Some(s);
                    }
                    start = None;
                }
                _ => {}
            }
        }
        None
    }

    fn sentence_end(&self) -> Option<usize> {
        let bytes = self.buf.as_bytes();
        for (i, c) in self.buf.char_indices() {
            let clause = !self.emitted && i >= MIN_FIRST_CLAUSE && matches!(c, ',' | ':');
            if !clause && !matches!(c, '.' | '!' | '?' | ';' | '\n') {
                continue;
            }
            let next = i + c.len_utf8();
            if c == '\n' {
                return Some(next);
            }
            // Need the following character to know whether this ends a sentence.
            let &after = bytes.get(next)?;
            if !after.is_ascii_whitespace() {
                continue; // "38.5", "1,000", "e.g.x"
            }
            if c == '.' {
                let word_start = self.buf[..i].rfind(char::is_whitespace).map_or(0, |w| w + 1);
                let word = self.buf[word_start..next].to_ascii_lowercase();
                if ABBREVIATIONS.contains(&word.as_str()) {
                    continue;
                }
                // "Step 3. Remove" is a sentence; a lone initial like "J. Smith" is not worth splitting.
                if word.len() == 2 && word.as_bytes()[0].is_ascii_alphabetic() {
                    continue;
                }
            }
            return Some(next);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_streamed_text() {
        let mut s = SentenceSplitter::default();
        let mut got = Vec::new();
        for d in ["Tighten the", " bolts to 38.5 N·m. Use a", " star pattern, e.g. 1-3-2-4! Then", " check"] {
            got.extend(s.push(d));
        }
        assert_eq!(got, vec!["Tighten the bolts to 38.5 N·m.", "Use a star pattern, e.g. 1-3-2-4!"]);
        assert_eq!(s.finish().as_deref(), Some("Then check"));
    }

    #[test]
    fn only_the_first_chunk_may_end_at_a_clause() {
        let mut s = SentenceSplitter::default();
        let got = s.push("According to the manual, page 3: bolts take 38 N·m, in a star pattern. Next, check it. ");
        assert_eq!(
            got,
            vec!["According to the manual,", "page 3: bolts take 38 N·m, in a star pattern.", "Next, check it."]
        );
        assert_eq!(SentenceSplitter::default().push("Yes, 38 N·m. "), vec!["Yes, 38 N·m."], "too short to split");
    }

    #[test]
    fn a_long_first_sentence_breaks_before_a_phrase() {
        let mut s = SentenceSplitter::default();
        let mut got = Vec::new();
        for w in "The RTU-40 service manual states that the head bolts are torqued to 38 N·m in a star pattern. Then"
            .split_inclusive(' ')
        {
            got.extend(s.push(w));
        }
        assert_eq!(
            got,
            vec!["The RTU-40 service manual states", "that the head bolts are torqued to 38 N·m in a star pattern."]
        );
        // Short first sentences are left whole.
        assert_eq!(
            SentenceSplitter::default().push("It is 38 N·m in a star pattern. "),
            vec!["It is 38 N·m in a star pattern."]
        );
        assert_eq!(s.finish().as_deref(), Some("Then"));
        assert_eq!(s.finish(), None);
    }

    #[test]
    fn waits_for_the_character_after_a_period() {
        let mut s = SentenceSplitter::default();
        assert!(s.push("Pressure is 3.").is_empty());
        assert_eq!(s.push("5 bar. Done"), vec!["Pressure is 3.5 bar."]);
    }
}
