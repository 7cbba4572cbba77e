//! Splitting text into clauses where espeak-ng does, remembering the punctuation that ends
//! each one. The espeak binary prints one line per clause but drops the punctuation, which
//! Piper voices were trained to hear (as `,` `.` `?` … phonemes), so it is recovered here.

/// How a clause ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Terminator {
    Period,
    Question,
    Exclamation,
    Comma,
    Colon,
    Semicolon,
    /// An ellipsis, a spaced dash, or the end of the text: a break with no phoneme.
    Plain,
}

impl Terminator {
    /// The phoneme Piper appends for this terminator, if any.
    pub fn phoneme(self) -> Option<char> {
        match self {
            Self::Period => Some('.'),
            Self::Question => Some('?'),
            Self::Exclamation => Some('!'),
            Self::Comma => Some(','),
            Self::Colon => Some(':'),
            Self::Semicolon => Some(';'),
            Self::Plain => None,
        }
    }

    /// Whether the clause closes a sentence (Piper synthesises sentences separately).
    pub fn ends_sentence(self) -> bool {
        matches!(self, Self::Period | Self::Question | Self::Exclamation)
    }

    /// Whether a space follows the punctuation inside a sentence, as in piper-phonemize.
    pub fn spaced(self) -> bool {
        matches!(self, Self::Comma | Self::Colon | Self::Semicolon)
    }

    fn from_punctuation(c: char) -> Option<Self> {
        Some(match c {
            '.' => Self::Period,
            '?' => Self::Question,
            '!' => Self::Exclamation,
            ',' => Self::Comma,
            ':' => Self::Colon,
            ';' => Self::Semicolon,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Clause {
    /// The clause text including its punctuation.
    pub text: String,
    pub terminator: Terminator,
}

/// Closing quotes and brackets that may sit between punctuation and the following space.
fn is_closer(c: char) -> bool {
    matches!(c, '"' | '\'' | ')' | ']' | '}' | '\u{2019}' | '\u{201D}' | '\u{00BB}')
}

/// Splits `text` into clauses the way espeak-ng's English reader does in the common cases:
/// `. , ? ! : ;` end a clause when followed by a space or the end (so "3.5" and "1,000" do
/// not), except a single `.` before a lowercase word ("e.g. the", "5 p.m. now"); an ellipsis
/// ends one even without a space after it, and so does a dash with spaces around it. Where
/// espeak still disagrees (it reads "e.g.," as one word), the caller notices by the count.
pub(super) fn split(text: &str) -> Vec<Clause> {
    let chars: Vec<char> = text.chars().collect();
    let mut clauses = Vec::new();
    let mut current = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\u{2026}' {
            current.push(c);
            push_clause(&mut clauses, &mut current, Terminator::Plain);
            i += 1;
            continue;
        }
        let spaced_dash = matches!(c, '\u{2013}' | '\u{2014}')
            && i > 0
            && chars[i - 1].is_whitespace()
            && chars.get(i + 1).is_none_or(|next| next.is_whitespace());
        if spaced_dash {
            current.push(c);
            push_clause(&mut clauses, &mut current, Terminator::Plain);
            i += 1;
            continue;
        }
        let Some(first) = Terminator::from_punctuation(c) else {
            current.push(c);
            i += 1;
            continue;
        };
        // Take the whole run of punctuation and closers, then decide whether it breaks.
        let start = i;
        while i < chars.len() && (Terminator::from_punctuation(chars[i]).is_some() || is_closer(chars[i])) {
            i += 1;
        }
        current.extend(&chars[start..i]);
        let dots = chars[start..i].iter().filter(|&&c| c == '.').count();
        let punctuation = chars[start..i].iter().filter(|&&c| !is_closer(c)).count();
        let next = chars.get(i).copied();
        // An ellipsis breaks even when a word follows it directly ("Wait...then").
        if dots > 1 && dots == punctuation && next.is_none_or(|c| c.is_whitespace() || c.is_alphabetic()) {
            push_clause(&mut clauses, &mut current, Terminator::Plain);
            continue;
        }
        // Like a `.` glued to a word, espeak reads "e.g.," and "etc.," without a break.
        let abbreviation_comma = chars[start] == '.' && chars.get(start + 1) == Some(&',');
        if next.is_some_and(|c| !c.is_whitespace()) || abbreviation_comma {
            continue;
        }
        if first == Terminator::Period && punctuation == 1 {
            let next_word = chars[i..].iter().find(|c| !c.is_whitespace());
            if next_word.is_some_and(|c| c.is_lowercase()) {
                continue;
            }
        }
        push_clause(&mut clauses, &mut current, first);
    }
    push_clause(&mut clauses, &mut current, Terminator::Plain);
    clauses
}

fn push_clause(clauses: &mut Vec<Clause>, current: &mut String, terminator: Terminator) {
    let text = current.trim();
    if !text.is_empty() {
        clauses.push(Clause { text: text.to_owned(), terminator });
    }
    current.clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ends(text: &str) -> Vec<(String, Terminator)> {
        split(text).into_iter().map(|c| (c.text, c.terminator)).collect()
    }

    #[test]
    fn breaks_at_spaced_punctuation_only() {
        use Terminator::*;
        assert_eq!(
            ends("Torque is 3.5 N·m; check 1,000 units: ok"),
            vec![
                ("Torque is 3.5 N·m;".to_owned(), Semicolon),
                ("check 1,000 units:".to_owned(), Colon),
                ("ok".to_owned(), Plain),
            ]
        );
        assert_eq!(
            ends("Use e.g. the wrench, then stop."),
            vec![("Use e.g. the wrench,".to_owned(), Comma), ("then stop.".to_owned(), Period)]
        );
        assert_eq!(
            ends("A spacer, i.e., the red one"),
            vec![("A spacer,".to_owned(), Comma), ("i.e., the red one".to_owned(), Plain)]
        );
        assert_eq!(
            ends("Wait...then go! Really?! Yes"),
            vec![
                ("Wait...".to_owned(), Plain),
                ("then go!".to_owned(), Exclamation),
                ("Really?!".to_owned(), Question),
                ("Yes".to_owned(), Plain),
            ]
        );
        assert_eq!(
            ends(r#"He said "stop." Then a – b"#),
            vec![(r#"He said "stop.""#.to_owned(), Period), ("Then a –".to_owned(), Plain), ("b".to_owned(), Plain),]
        );
        assert!(split("   ").is_empty());
    }
}
