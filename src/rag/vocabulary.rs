//! A tenant's vocabulary: the codes printed in its manuals (equipment ids, fault codes,
//! part numbers). Speech recognition mishears them ("HX-220" → "AHX220", "BW-9" → "Bw9",
//! "E47" → "e 47"); a transcript is corrected toward the codes the tenant really has.
//!
//! Digits are facts: a correction may change letters and separators, never a digit, so a
//! question about E48 is never turned into one about E47.

use std::collections::BTreeMap;

use super::terms::{code_spans, within_distance};

#[derive(Debug, Clone, Default)]
pub struct Vocabulary {
    /// Code key ("hxflt0440") → as printed ("HX-FLT-0440").
    by_key: BTreeMap<String, String>,
}

/// "rto4d" → "rto40": 'd' and 'o' that directly follow a digit become '0'.
fn zero_after_digits(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    let mut after_digit = false;
    for c in key.chars() {
        let zero = after_digit && matches!(c, 'd' | 'o');
        out.push(if zero { '0' } else { c });
        after_digit = c.is_ascii_digit() || zero;
    }
    out
}

fn digits(s: &str) -> String {
    s.chars().filter(char::is_ascii_digit).collect()
}

impl Vocabulary {
    pub fn new(printed: impl IntoIterator<Item = String>) -> Self {
        let by_key = printed
            .into_iter()
            .filter_map(|p| {
                let key: String = p.chars().filter(char::is_ascii_alphanumeric).collect::<String>().to_lowercase();
                let code = key.chars().any(|c| c.is_ascii_digit()) && key.chars().any(|c| c.is_ascii_alphabetic());
                code.then_some((key, p))
            })
            .collect();
        Self { by_key }
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// The printed code a heard key stands for: the same key, or (for keys of four or more
    /// characters) one edit away with the very same digits.
    fn lookup(&self, heard: &str) -> Option<&str> {
        self.lookup_key(heard).or_else(|| {
            // "forty" is often heard as "4D" or "4O": a 'd' or 'o' right after a digit is a 0.
            let zeroed = zero_after_digits(heard);
            (zeroed != heard).then(|| self.lookup_key(&zeroed)).flatten()
        })
    }

    fn lookup_key(&self, heard: &str) -> Option<&str> {
        if let Some(p) = self.by_key.get(heard) {
            return Some(p);
        }
        if heard.len() < 4 {
            return None;
        }
        let heard_digits = digits(heard);
        let mut found = self.by_key.iter().filter(|(k, _)| digits(k) == heard_digits && within_distance(k, heard, 1));
        // Two codes equally near: do not guess.
        match (found.next(), found.next()) {
            (Some((_, p)), None) => Some(p),
            _ => None,
        }
    }

    /// The transcript with every heard code replaced by the code as the manuals print it.
    pub fn correct(&self, transcript: &str) -> String {
        if self.is_empty() {
            return transcript.to_string();
        }
        let mut out = String::with_capacity(transcript.len());
        let mut done = 0;
        for (range, key) in code_spans(transcript) {
            if range.start < done {
                continue;
            }
            if let Some(printed) = self.lookup(&key) {
                out.push_str(&transcript[done..range.start]);
                out.push_str(printed);
                done = range.end;
            }
        }
        out.push_str(&transcript[done..]);
        out
    }

    /// Codes to prime speech recognition with, at most `max_chars` long.
    pub fn prompt(&self, max_chars: usize) -> String {
        let mut out = String::new();
        for printed in self.by_key.values() {
            if out.len() + printed.len() + 2 > max_chars {
                break;
            }
            if !out.is_empty() {
                out.push_str(", ");
            }
            out.push_str(printed);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocabulary() -> Vocabulary {
        Vocabulary::new(
            ["HX-220", "E47", "E12", "BW-9", "HX-FLT-0440", "RTU-40", "GK-4471-B", "Plant floor"].map(String::from),
        )
    }

    #[test]
    fn heard_codes_become_printed_codes() {
        let v = vocabulary();
        for (heard, fixed) in [
            ("What does e 47 mean?", "What does E47 mean?"),
            ("what does E-47 mean", "what does E47 mean"),
            ("filter for the AHX220", "filter for the HX-220"),
            ("pressure on the Bw9", "pressure on the BW-9"),
            ("the bw 9 boiler", "the BW-9 boiler"),
            ("part HX FLT 0440 please", "part HX-FLT-0440 please"),
            ("torque on the rtu 40 head bolts", "torque on the RTU-40 head bolts"),
            ("head bolts, on the rto 4d", "head bolts, on the RTU-40"),
            ("gasket gk 4471 b", "gasket GK-4471-B"),
        ] {
            assert_eq!(v.correct(heard), fixed, "{heard}");
        }
    }

    #[test]
    fn digits_and_unknown_words_are_never_changed() {
        let v = vocabulary();
        for same in ["what does E48 mean", "every 2,500 hours", "set it to 40 psi", "HX-230 service", "the sump hold"] {
            assert_eq!(v.correct(same), same);
        }
        assert_eq!(Vocabulary::default().correct("e 47"), "e 47");
        assert!(within_distance("ahx220", "hx220", 1) && !within_distance("ab220", "hx220", 1));
    }

    #[test]
    fn prompt_lists_codes_within_a_budget() {
        let v = vocabulary();
        let p = v.prompt(30);
        assert!(p.len() <= 30 && p.contains("BW-9"), "{p}");
        assert!(!p.contains("Plant floor"), "words without digits are not codes");
    }
}
