//! Splits page text into retrieval chunks that never cross a page, so every chunk
//! cites exactly one page.

use super::extract::PageText;

#[derive(Debug, Clone, PartialEq)]
pub struct ChunkDraft {
    pub page: u32,
    pub text: String,
}

/// Packs paragraphs (then sentences, then words) into chunks of at most `max_chars`.
pub fn chunk_pages(pages: &[PageText], max_chars: usize) -> Vec<ChunkDraft> {
    let mut out = Vec::new();
    for page in pages {
        let mut current = String::new();
        for piece in pieces(&page.text, max_chars) {
            if !current.is_empty() && current.len() + 2 + piece.len() > max_chars {
                out.push(ChunkDraft { page: page.number, text: std::mem::take(&mut current) });
            }
            if !current.is_empty() {
                // Paragraphs stay paragraphs: a heading must not run into the sentence after it.
                current.push_str("\n\n");
            }
            current.push_str(piece);
        }
        if !current.is_empty() {
            out.push(ChunkDraft { page: page.number, text: current });
        }
    }
    out
}

/// Paragraphs no longer than `max`; longer ones split at sentence ends, then at words.
fn pieces(text: &str, max: usize) -> Vec<&str> {
    let mut out = Vec::new();
    for para in text.split("\n\n").map(str::trim).filter(|p| !p.is_empty()) {
        if para.len() <= max {
            out.push(para);
            continue;
        }
        for sentence in split_keep(para, |c| matches!(c, '.' | '!' | '?')) {
            if sentence.len() <= max {
                out.push(sentence);
            } else {
                out.extend(split_words(sentence, max));
            }
        }
    }
    out
}

/// Splits after each terminator that is followed by whitespace.
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

    #[test]
    fn chunks_stay_within_pages_and_size() {
        let long = "The head bolts take 38 N·m. ".repeat(40);
        let pages = vec![
            PageText { number: 1, text: "Intro.\n\nShort paragraph.".into() },
            PageText { number: 2, text: long.clone() },
        ];
        let chunks = chunk_pages(&pages, 200);
        assert_eq!(chunks[0], ChunkDraft { page: 1, text: "Intro.\n\nShort paragraph.".into() });
        assert!(chunks[1..].iter().all(|c| c.page == 2 && c.text.len() <= 200 && !c.text.is_empty()));
        let rejoined: usize = chunks[1..].iter().map(|c| c.text.split_whitespace().count()).sum();
        assert_eq!(rejoined, long.split_whitespace().count(), "no words lost");
    }

    #[test]
    fn unbroken_text_is_split_by_words_or_hard() {
        let pages = vec![PageText { number: 1, text: format!("{} tail", "x".repeat(450)) }];
        let chunks = chunk_pages(&pages, 200);
        assert!(chunks.iter().all(|c| c.text.len() <= 200), "{chunks:?}");
        assert_eq!(chunks.iter().map(|c| c.text.len()).sum::<usize>(), "x".repeat(450).len() + " tail".len());
    }
}
