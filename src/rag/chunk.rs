//! Splits page text into retrieval chunks. A chunk never crosses a page (it cites exactly
//! one) or a heading (it belongs to one section, whose heading path it keeps), never cuts
//! a sentence, and never splits a table row.

use super::extract::{PageText, is_table_row};

#[derive(Debug, Clone, PartialEq)]
pub struct ChunkDraft {
    pub page: u32,
    /// The headings above the chunk, outermost first ("Compressor service > Head bolts").
    pub section: String,
    pub text: String,
}

/// A sentence longer than this many chunk sizes is split at words after all: one that
/// long is extraction debris, not prose.
const RUNAWAY_SENTENCE: usize = 4;

/// Packs paragraphs (then sentences or table rows) into chunks of at most `max_chars`,
/// except that a single sentence or row longer than that stays whole.
pub fn chunk_pages(pages: &[PageText], max_chars: usize) -> Vec<ChunkDraft> {
    let mut out = Vec::new();
    // (level, heading): carried across pages, as a section runs on over a page break.
    let mut headings: Vec<(usize, String)> = Vec::new();
    for page in pages {
        let mut current = String::new();
        // Whether `current` holds more than headings.
        let mut has_body = false;
        let mut section = path(&headings);
        for para in page.text.split("\n\n").map(str::trim).filter(|p| !p.is_empty()) {
            let heading = heading(para);
            if let Some((level, title)) = &heading {
                // Consecutive headings stay together with the text they introduce.
                if has_body {
                    out.push(ChunkDraft {
                        page: page.number,
                        section: section.clone(),
                        text: std::mem::take(&mut current),
                    });
                }
                has_body = false;
                headings.retain(|(l, _)| l < level);
                headings.push((*level, title.to_string()));
                section = path(&headings);
            }
            let is_heading = heading.is_some();
            let para = heading.map_or(para, |(_, title)| title);
            for piece in pieces(para, max_chars) {
                if !current.is_empty() && current.len() + 2 + piece.len() > max_chars {
                    out.push(ChunkDraft {
                        page: page.number,
                        section: section.clone(),
                        text: std::mem::take(&mut current),
                    });
                    has_body = false;
                }
                if !current.is_empty() {
                    // Paragraphs stay paragraphs (a heading must not run into the sentence
                    // after it); a table's rows stay lines.
                    let row_after_row = is_table_row(piece) && current.lines().last().is_some_and(is_table_row);
                    current.push_str(if row_after_row { "\n" } else { "\n\n" });
                }
                current.push_str(piece);
                has_body |= !is_heading;
            }
        }
        if !current.is_empty() {
            out.push(ChunkDraft { page: page.number, section, text: current });
        }
    }
    out
}

fn path(headings: &[(usize, String)]) -> String {
    headings.iter().map(|(_, h)| h.as_str()).collect::<Vec<_>>().join(" > ")
}

/// A paragraph that is a heading, with its level: Markdown `#` marks, a numbered title
/// ("3.2 Head bolts" is level 2), or a short single line with no sentence punctuation
/// (plain text and PDF titles; level 1).
fn heading(para: &str) -> Option<(usize, &str)> {
    if para.contains('\n') || para.len() > 80 || is_table_row(para) {
        return None;
    }
    let marks = para.bytes().take_while(|&b| b == b'#').count();
    if (1..=6).contains(&marks) && para[marks..].starts_with(' ') {
        return Some((marks, para[marks..].trim()));
    }
    let words = para.split_whitespace().count();
    let first = para.chars().next()?;
    let ends_like_prose = para.ends_with(['.', '!', '?', ':', ';', ',']);
    if words > 8 || ends_like_prose || !(first.is_uppercase() || first.is_ascii_digit()) {
        return None;
    }
    let number = para.split_whitespace().next().filter(|n| {
        n.trim_end_matches('.').split('.').all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()))
    });
    match number {
        Some(n) if words > 1 => Some((n.trim_end_matches('.').split('.').count(), para)),
        Some(_) => None,
        None if para.chars().any(char::is_alphabetic) => Some((1, para)),
        None => None,
    }
}

/// Paragraphs no longer than `max`; longer ones split between table rows, or at
/// sentence ends; a runaway sentence at words.
fn pieces(para: &str, max: usize) -> Vec<&str> {
    if para.len() <= max {
        return vec![para];
    }
    if para.lines().all(is_table_row) {
        return para.lines().collect();
    }
    let mut out = Vec::new();
    for sentence in split_keep(para, |c| matches!(c, '.' | '!' | '?')) {
        if sentence.len() <= max * RUNAWAY_SENTENCE {
            out.push(sentence);
        } else {
            out.extend(split_words(sentence, max));
        }
    }
    out
}

fn split_keep(text: &str, is_end: impl Fn(char) -> bool) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if is_end(c) && chars.peek().is_some_and(|(_, n)| n.is_whitespace()) {
            out.push(text[start..i + c.len_utf8()].trim());
            start = i + c.len_utf8();
        }
    }
    let rest = text[start..].trim();
    if !rest.is_empty() {
        out.push(rest);
    }
    out
}

fn split_words(text: &str, max: usize) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut last_space = None;
    for (i, c) in text.char_indices() {
        if c.is_whitespace() {
            last_space = Some(i);
        }
        if i + c.len_utf8() - start > max {
            let cut = last_space.filter(|&s| s > start).unwrap_or(i);
            out.push(text[start..cut].trim());
            start = cut;
            last_space = None;
        }
    }
    out.push(text[start..].trim());
    out.retain(|s| !s.is_empty());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(number: u32, text: &str) -> PageText {
        PageText { number, text: text.into() }
    }

    #[test]
    fn chunks_stay_within_pages_and_size_and_keep_sentences() {
        let long = "The head bolts take 38 N·m. ".repeat(40);
        let pages = vec![page(1, "Intro text here.\n\nShort paragraph."), page(2, &long)];
        let chunks = chunk_pages(&pages, 200);
        assert_eq!(chunks[0].text, "Intro text here.\n\nShort paragraph.");
        assert!(chunks[1..].iter().all(|c| c.page == 2 && c.text.len() <= 200 && !c.text.is_empty()));
        assert!(chunks[1..].iter().all(|c| c.text.starts_with("The") && c.text.ends_with('.')), "{chunks:?}");
        let rejoined: usize = chunks[1..].iter().map(|c| c.text.split_whitespace().count()).sum();
        assert_eq!(rejoined, long.split_whitespace().count(), "no words lost");
    }

    #[test]
    fn a_long_sentence_stays_whole_and_only_debris_is_cut() {
        let sentence = format!("The {} bolts take 38 N·m.", "very ".repeat(60));
        let chunks = chunk_pages(&[page(1, &sentence)], 200);
        assert_eq!(chunks.len(), 1, "{chunks:?}");
        assert_eq!(chunks[0].text, sentence.trim());
        let pages = vec![page(1, &format!("{} tail", "x".repeat(900)))];
        let chunks = chunk_pages(&pages, 200);
        assert!(chunks.iter().all(|c| c.text.len() <= 200), "{chunks:?}");
        assert_eq!(chunks.iter().map(|c| c.text.len()).sum::<usize>(), 900 + " tail".len());
    }

    #[test]
    fn headings_make_sections_that_carry_over_pages() {
        let pages = vec![
            page(1, "# RTU-40 Manual\n\nRead the safety notes.\n\n## Compressor service\n\nHead bolts take 38 N·m."),
            page(2, "Leak test at 150 psi.\n\n3.2 Oil system\n\nOil capacity is 3.8 litres."),
        ];
        let chunks = chunk_pages(&pages, 700);
        let got: Vec<(u32, &str, &str)> =
            chunks.iter().map(|c| (c.page, c.section.as_str(), c.text.as_str())).collect();
        assert_eq!(
            got,
            vec![
                (1, "RTU-40 Manual", "RTU-40 Manual\n\nRead the safety notes."),
                (1, "RTU-40 Manual > Compressor service", "Compressor service\n\nHead bolts take 38 N·m."),
                (2, "RTU-40 Manual > Compressor service", "Leak test at 150 psi."),
                (
                    2,
                    // "3.2" is a second-level heading: it follows "Compressor service", not under it.
                    "RTU-40 Manual > 3.2 Oil system",
                    "3.2 Oil system\n\nOil capacity is 3.8 litres."
                ),
            ]
        );
    }

    #[test]
    fn table_rows_are_never_split() {
        let rows: Vec<String> = (0..30).map(|i| format!("Bolt M{i} | {} N·m | star pattern", 10 + i)).collect();
        let table = rows.join("\n");
        let chunks = chunk_pages(&[page(1, &table)], 200);
        assert!(chunks.len() > 1);
        for c in &chunks {
            assert!(c.text.lines().all(|l| rows.iter().any(|r| r == l)), "a row was cut: {:?}", c.text);
        }
        assert_eq!(chunks.iter().map(|c| c.text.lines().count()).sum::<usize>(), 30);
    }
}
