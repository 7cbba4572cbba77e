//! The words and codes of manuals and questions, normalised so that what a technician
//! says matches what a manual prints: "E47", "e 47" and "E-47" are one code; "HX-FLT-0440"
//! and "HX FLT 0440" are one part number; "2,500" is the number 2500 and never "500".
//!
//! Used by the keyword index (terms), the vocabulary (codes) and the grounding check
//! (facts: numbers and codes).

use std::collections::BTreeSet;

/// Parts of a code are short ("HX", "FLT", "0440"); longer words are never glued on.
const MAX_CODE_PART: usize = 6;
/// At most this many parts make one code ("GK-4471-B", "HX-FLT-0440").
const MAX_CODE_PARTS: usize = 4;

/// Words too common to search on.
const STOPWORDS: &[&str] = &[
    "a", "an", "the", "is", "are", "was", "be", "been", "what", "which", "how", "when", "where", "why", "who", "for",
    "on", "of", "to", "in", "at", "by", "from", "with", "do", "does", "did", "i", "it", "its", "and", "or", "my", "me",
    "we", "you", "your", "should", "can", "could", "would", "will", "this", "that", "there", "these", "those", "so",
    "if", "then", "than", "as", "into", "about", "any", "some", "much", "many", "need", "use", "tell", "please", "s",
    "get", "go", "goes", "our", "us", "they", "them", "their", "have", "has", "had", "up", "out",
];

/// British spellings folded to the American ones Whisper writes.
const SPELLINGS: &[(&str, &str)] = &[
    ("litre", "liter"),
    ("litres", "liters"),
    ("metre", "meter"),
    ("metres", "meters"),
    ("colour", "color"),
    ("colours", "colors"),
    ("aluminium", "aluminum"),
    ("grey", "gray"),
];

/// Trade words technicians say for what manuals print: "gas" or "freon" for the
/// refrigerant, a valve that "blows off" or "pops off" for the relief valve. Only a
/// question gains the printed word beside its own ("flue gas" is gas too).
const JARGON: &[(&str, &str)] =
    &[("gas", "refrigerant"), ("freon", "refrigerant"), ("blow", "relief"), ("pop", "relief")];

/// The word a manual prints for a question's (folded) jargon word.
pub fn printed_as(term: &str) -> Option<&'static str> {
    JARGON.iter().find(|(said, _)| *said == term).map(|(_, printed)| *printed)
}

/// One run of letters and digits with what separated it from the previous run.
#[derive(Debug, Clone, PartialEq)]
struct Run<'a> {
    text: &'a str,
    /// Byte offset of `text` in the whole.
    start: usize,
    /// True when only '-', '/' or one space lies between this run and the previous one.
    joins_previous: bool,
}

/// Splits text into alphanumeric runs. Numbers keep their decimal point and lose their
/// thousands separators ("3.8", "2,500" → "2500"), so a decimal is one run.
fn runs(text: &str) -> Vec<Run<'_>> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let mut gap_start = 0;
    while i < text.len() {
        let c = text[i..].chars().next().unwrap_or(' ');
        if !c.is_alphanumeric() {
            i += c.len_utf8();
            continue;
        }
        let start = i;
        while i < text.len() {
            let c = text[i..].chars().next().unwrap_or(' ');
            if c.is_alphanumeric() {
                i += c.len_utf8();
                continue;
            }
            // "3.8" and "2,500" stay one run: a separator between digits.
            let digit_before = i > start && bytes[i - 1].is_ascii_digit();
            let digit_after = bytes.get(i + 1).is_some_and(u8::is_ascii_digit);
            if (c == '.' || c == ',') && digit_before && digit_after {
                i += 1;
                continue;
            }
            break;
        }
        let gap = &text[gap_start..start];
        let joins_previous = !out.is_empty() && (gap == " " || gap == "-" || gap == "/" || gap == " - ");
        out.push(Run { text: &text[start..i], start, joins_previous });
        gap_start = i;
    }
    out
}

fn has_digit(s: &str) -> bool {
    s.bytes().any(|b| b.is_ascii_digit())
}

fn has_letter(s: &str) -> bool {
    s.chars().any(char::is_alphabetic)
}

/// A number's canonical form: thousands separators dropped, decimal point kept
/// ("2,500" → "2500", "3.80" stays "3.80").
pub fn number_key(run: &str) -> String {
    let mut out = String::with_capacity(run.len());
    let chars: Vec<char> = run.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        if c == ',' {
            // "2,500": a comma followed by exactly three digits groups thousands.
            let digits_after = chars[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
            if digits_after == 3 {
                continue;
            }
            out.push('.');
            continue;
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// Lowercase with plural and spelling variants folded ("Filters" → "filter").
fn fold_word(word: &str) -> String {
    let lower = word.to_lowercase();
    let spelled = SPELLINGS.iter().find(|(b, _)| *b == lower).map_or(lower, |(_, a)| a.to_string());
    if spelled.len() > 3 && spelled.ends_with('s') && !spelled.ends_with("ss") && !has_digit(&spelled) {
        spelled[..spelled.len() - 1].to_string()
    } else {
        spelled
    }
}

/// Code keys made by gluing adjacent short runs: "HX FLT 0440" → "hxflt0440",
/// "e 47" → "e47". Only glued forms with both a letter and a digit count as codes.
fn glued_codes(runs: &[Run<'_>]) -> Vec<String> {
    let mut out = Vec::new();
    for start in 0..runs.len() {
        let mut key = String::new();
        for (n, run) in runs[start..].iter().enumerate().take(MAX_CODE_PARTS) {
            if run.text.chars().count() > MAX_CODE_PART || (n > 0 && !run.joins_previous) {
                break;
            }
            key.push_str(&number_key(run.text).replace('.', "p"));
            if n > 0 && has_digit(&key) && has_letter(&key) {
                out.push(key.clone());
            }
        }
    }
    out
}

/// Places in a text that may be a code said or heard apart ("e 47", "Bw9", "AHX220"):
/// byte ranges of one to four adjacent short runs whose glued key has a letter and a
/// digit, with that key. Longer spans first at each start.
pub fn code_spans(text: &str) -> Vec<(std::ops::Range<usize>, String)> {
    let runs = runs(text);
    let mut out = Vec::new();
    for start in 0..runs.len() {
        let mut key = String::new();
        let mut here = Vec::new();
        for (n, run) in runs[start..].iter().enumerate().take(MAX_CODE_PARTS) {
            if run.text.chars().count() > MAX_CODE_PART + 2 || (n > 0 && !run.joins_previous) {
                break;
            }
            key.push_str(&run.text.to_lowercase());
            if has_digit(&key) && has_letter(&key) {
                here.push((runs[start].start..run.start + run.text.len(), key.clone()));
            }
        }
        out.extend(here.into_iter().rev());
    }
    out
}

/// Keys of the codes a question names: printed codes ("E47", "HX-FLT-0440") and short
/// ones said apart or in lowercase ("e 47", "bw9": up to three letters, then digits).
pub fn asked_codes(text: &str) -> Vec<String> {
    let short_code = |k: &str| {
        let letters = k.bytes().take_while(u8::is_ascii_alphabetic).count();
        let digits = k.bytes().skip(letters).take_while(u8::is_ascii_digit).count();
        // "for 40" or "at 40" are words before a number, not codes.
        (1..=3).contains(&letters)
            && (1..=4).contains(&digits)
            && k.len() - letters - digits <= 1
            && !STOPWORDS.contains(&&k[..letters])
    };
    let mut out: Vec<String> = codes(text).into_iter().map(|c| c.key).collect();
    for (_, key) in code_spans(text) {
        // "FLT-0440" inside "HX-FLT-0440" is not a code of its own.
        if short_code(&key) && !out.iter().any(|k| k.contains(key.as_str())) {
            out.push(key);
        }
    }
    out
}

/// The words and numbers of a text, folded, without stopwords (no glued codes).
pub fn words(text: &str) -> Vec<String> {
    runs(text)
        .iter()
        .map(|r| if has_digit(r.text) { number_key(r.text).replace('.', "p") } else { fold_word(r.text) })
        .filter(|t| !STOPWORDS.contains(&t.as_str()))
        .collect()
}

/// The words of a text as said: lowercase, apostrophes and hyphens kept inside a word
/// ("what's", "uh-huh", "rtu-40"), nothing folded or dropped.
pub fn spoken_words(text: &str) -> Vec<String> {
    text.to_lowercase()
        .split(|c: char| !(c.is_alphanumeric() || c == '\'' || c == '-'))
        .map(|w| w.trim_matches(|c| c == '\'' || c == '-'))
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

/// Levenshtein distance, stopping early once it exceeds `max`.
pub fn within_distance(a: &str, b: &str, max: usize) -> bool {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    if a.len().abs_diff(b.len()) > max {
        return false;
    }
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut row = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            row[j + 1] = (prev[j] + usize::from(ca != cb)).min(prev[j + 1] + 1).min(row[j] + 1);
        }
        if row.iter().min().is_some_and(|&m| m > max) {
            return false;
        }
        prev = row;
    }
    prev[b.len()] <= max
}

/// Search terms of a text: folded words without stopwords, numbers, and glued codes.
/// Every term is lowercase letters and digits only (decimal points become 'p'), so any
/// keyword engine tokenizes it as one word.
pub fn terms(text: &str) -> Vec<String> {
    let mut out = words(text);
    out.extend(glued_codes(&runs(text)));
    out
}

/// The distinct search terms of a question, in order of first appearance.
pub fn query_terms(text: &str) -> Vec<String> {
    let mut seen = BTreeSet::new();
    terms(text).into_iter().filter(|t| seen.insert(t.clone())).collect()
}

/// What a keyword search for a question looks for: its terms, and the printed word for
/// each of its jargon words.
pub fn search_terms(text: &str) -> Vec<String> {
    let mut out = query_terms(text);
    for printed in out.iter().filter_map(|t| printed_as(t)).collect::<Vec<_>>() {
        if !out.iter().any(|t| t == printed) {
            out.push(printed.to_string());
        }
    }
    out
}

/// A code as printed in a manual ("HX-FLT-0440") and its key ("hxflt0440").
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Code {
    pub printed: String,
    pub key: String,
}

/// Codes printed in a manual: tokens of letters and digits joined by '-' or '/', with at
/// least one letter and one digit ("E47", "RTU-40", "HX-FLT-0440", "R-410A").
pub fn codes(text: &str) -> Vec<Code> {
    let mut out = Vec::new();
    for token in text.split(|c: char| c.is_whitespace() || matches!(c, ',' | ';' | ':' | '(' | ')' | '"' | '\'')) {
        let token = token.trim_matches(|c: char| !c.is_alphanumeric());
        if token.is_empty() || !has_digit(token) || !has_letter(token) {
            continue;
        }
        if !token.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '/') {
            continue;
        }
        // "40-ton" or "24-hour" are measurements, not codes: a code has an uppercase letter.
        if !token.chars().any(|c| c.is_ascii_uppercase()) {
            continue;
        }
        let key: String = token.chars().filter(char::is_ascii_alphanumeric).collect::<String>().to_lowercase();
        out.push(Code { printed: token.to_string(), key });
    }
    out
}

/// The facts a sentence states that must be backed by a source: numbers (canonical,
/// "2500", "3.8") and code keys ("e47", "hxflt0440"). Single digits spelled as words
/// are not facts; "1-3-2-4" yields its numbers.
pub fn facts(text: &str) -> BTreeSet<String> {
    let runs = runs(text);
    let mut out = BTreeSet::new();
    for run in &runs {
        if has_digit(run.text) {
            out.insert(number_key(run.text));
        }
    }
    for code in codes(text) {
        out.insert(code.key);
    }
    out
}

/// What a set of sources states: their facts, and the glued codes they print apart
/// ("HX 220" backs "HX220"). Built once per answer, checked per sentence.
#[derive(Debug, Clone, Default)]
pub struct KnownFacts {
    facts: BTreeSet<String>,
    /// Keys of the codes the sources print whole ("if2040c" of "IF-2040-C").
    printed: BTreeSet<String>,
}

impl KnownFacts {
    pub fn of<'a>(sources: impl IntoIterator<Item = &'a str>) -> Self {
        let mut known = Self::default();
        for source in sources {
            known.facts.extend(facts(source));
            known.facts.extend(glued_codes(&runs(source)));
            known.printed.extend(codes(source).into_iter().map(|c| c.key));
        }
        known
    }

    /// Facts of `claim` the sources do not state. A piece of a code the claim prints whole
    /// is judged as part of that code ("HX-220" is one fact, not also "220"; "R-454B" not
    /// also "454B"). A code that is only the start or the end of one the sources print
    /// ("2040-C" of "IF-2040-C") is a different part number, however much of it matches.
    pub fn unsupported(&self, claim: &str) -> Vec<String> {
        let code_keys: BTreeSet<String> = codes(claim).into_iter().map(|c| c.key).collect();
        facts(claim)
            .into_iter()
            .filter(|f| {
                let inside_code = code_keys.iter().any(|k| k.len() > f.len() && k.contains(f.as_str()));
                (!self.facts.contains(f) || self.cut_code(f)) && !inside_code
            })
            .collect()
    }

    /// Whether `key` is a printed code cut short, not printed whole anywhere itself.
    fn cut_code(&self, key: &str) -> bool {
        has_letter(key)
            && has_digit(key)
            && !self.printed.contains(key)
            && self.printed.iter().any(|k| k.len() > key.len() && (k.starts_with(key) || k.ends_with(key)))
    }
}

/// Facts of `claim` that none of `sources` states.
pub fn unsupported_facts(claim: &str, sources: &[&str]) -> Vec<String> {
    KnownFacts::of(sources.iter().copied()).unsupported(claim)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn has(terms: &[String], t: &str) -> bool {
        terms.iter().any(|x| x == t)
    }

    #[test]
    fn a_question_searches_the_printed_word_beside_its_jargon() {
        assert_eq!(search_terms("what gas is it filled with"), vec!["gas", "filled", "refrigerant"]);
        assert_eq!(search_terms("when will the valve pop off"), vec!["valve", "pop", "off", "relief"]);
        assert_eq!(search_terms("refrigerant gas"), vec!["refrigerant", "gas"], "no term twice");
        assert_eq!(search_terms("torque for E47"), query_terms("torque for E47"));
    }

    #[test]
    fn a_part_number_cut_short_is_not_backed_by_the_whole_one() {
        let source = ["The intake air filter part number is IF-2040-C."];
        assert_eq!(unsupported_facts("The part number is 2040-C.", &source), ["2040c"]);
        assert_eq!(unsupported_facts("The part number is IF-2040.", &source), ["if2040"]);
        assert!(unsupported_facts("The part number is IF-2040-C.", &source).is_empty());
        assert!(unsupported_facts("Order IF 2040 C.", &source).is_empty(), "the same code spoken apart");
        let refrigerant = ["The RTU-40 uses R-454B refrigerant."];
        assert!(
            unsupported_facts("It uses R-454B refrigerant.", &refrigerant).is_empty(),
            "the end of a code the claim prints whole is judged with it"
        );
        assert_eq!(unsupported_facts("It uses 454B refrigerant.", &refrigerant), ["454b"]);
        let spaced = ["Order filter HX 220 from stores."];
        assert!(
            unsupported_facts("Order the HX220.", &spaced).is_empty(),
            "a code printed apart still backs its glued form"
        );
    }

    #[test]
    fn spoken_and_printed_codes_share_a_term() {
        for (printed, spoken, key) in [
            ("Fault E47 means low oil pressure.", "what does e 47 mean", "e47"),
            ("Order filter HX-FLT-0440.", "part HX FLT 0440", "hxflt0440"),
            ("The BW-9 boiler", "on the Bw9", "bw9"),
            ("The BW-9 boiler", "on the bw 9", "bw9"),
            ("Gasket GK-4471-B", "gasket gk 4471 b", "gk4471b"),
        ] {
            let doc = terms(printed);
            let query = query_terms(spoken);
            assert!(has(&doc, key), "{printed:?} → {doc:?}");
            assert!(has(&query, key), "{spoken:?} → {query:?}");
        }
    }

    #[test]
    fn asked_codes_are_printed_or_short_spoken_codes() {
        assert_eq!(asked_codes("what does e 47 mean on the RTU-40 head bolts"), vec!["rtu40", "e47"]);
        assert_eq!(asked_codes("filter for the bw9 and HX-FLT-0440"), vec!["hxflt0440", "bw9"]);
        assert!(asked_codes("torque for 40 head bolts at 2,500 hours").is_empty());
    }

    #[test]
    fn numbers_keep_decimals_and_drop_thousands_separators() {
        let t = terms("Change the oil every 2,500 hours; it holds 3.8 litres.");
        assert!(has(&t, "2500") && has(&t, "3p8") && has(&t, "liter"), "{t:?}");
        assert!(!has(&t, "500") && !has(&t, "3") && !has(&t, "8"), "{t:?}");
        assert_eq!(number_key("2,500"), "2500");
        assert_eq!(number_key("0,75"), "0.75");
    }

    #[test]
    fn words_are_folded_and_stopwords_dropped() {
        let t = query_terms("How often do I replace the Filters and the filter?");
        assert_eq!(t, vec!["often", "replace", "filter"]);
        assert!(terms("metres").contains(&"meter".to_string()));
    }

    #[test]
    fn codes_are_printed_tokens_with_letters_and_digits() {
        let got: Vec<String> =
            codes("Fault E47 (see HX-FLT-0440), R-410A, a 40-ton unit, 38 N·m.").into_iter().map(|c| c.key).collect();
        assert_eq!(got, vec!["e47", "hxflt0440", "r410a"]);
    }

    #[test]
    fn invented_numbers_and_codes_are_caught() {
        let source = "Replace the intake air filter every 800 hours. Filter part number HX-FLT-0440.";
        assert!(unsupported_facts("Replace it every 800 hours.", &[source]).is_empty());
        assert!(unsupported_facts("Order HX-FLT-0440.", &[source]).is_empty());
        assert!(unsupported_facts("Order HX FLT 0440.", &[source]).is_empty(), "said apart");
        assert_eq!(unsupported_facts("Replace it every 200 hours.", &[source]), vec!["200"]);
        assert_eq!(unsupported_facts("Every 2,800 hours.", &[source]), vec!["2800"]);
        assert_eq!(unsupported_facts("Use HX-FLT-0450.", &[source]), vec!["hxflt0450"]);
        assert_eq!(unsupported_facts("Fault E12 is a sensor.", &[source]), vec!["e12"]);
        assert!(unsupported_facts("Fault 3.8 litres", &["holds 3.8 litres"]).is_empty());
        assert_eq!(unsupported_facts("holds 3.9 litres", &["holds 3.8 litres"]), vec!["3.9"]);
    }
}
