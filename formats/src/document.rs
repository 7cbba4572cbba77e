//! Text extraction from uploaded manuals, page by page.
//!
//! The type comes from the bytes, never from the file name: a PNG renamed `.pdf` is an
//! image. PDF pages are real pages; plain text, Markdown and HTML are one page unless
//! they contain form feeds (`\f`), which printers and `pdftotext` use as page breaks.
//! Pages with no text (a scan without a text layer) are reported by number.

/// Why an upload yields no pages.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DocumentError {
    #[error("unsupported document type ({0}): send PDF, HTML, Markdown or plain text")]
    UnsupportedType(String),
    #[error("document could not be read: {0}")]
    Invalid(String),
    #[error("document has no extractable text (a scan without a text layer, or an empty file)")]
    Empty,
    #[error("document has {pages} pages; the limit is {limit}")]
    TooManyPages { pages: u32, limit: u32 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocumentKind {
    Pdf,
    Html,
    Markdown,
    Text,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PageText {
    /// 1-based page number, as printed in citations.
    pub number: u32,
    pub text: String,
}

/// What a manual yields: the pages with text, and the numbers of those without.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Extracted {
    pub pages: Vec<PageText>,
    /// Pages with no text layer (or nothing readable on them), by number.
    pub blank_pages: Vec<u32>,
    /// Pages in the document, blank ones included.
    pub page_count: u32,
}

/// Magic numbers of formats an admin might upload by mistake, for a precise refusal.
const KNOWN_BINARIES: [(&[u8], &str); 8] = [
    (b"\x89PNG\r\n\x1a\n", "PNG image"),
    (b"\xff\xd8\xff", "JPEG image"),
    (b"GIF8", "GIF image"),
    (b"II*\x00", "TIFF image"),
    (b"MM\x00*", "TIFF image"),
    (b"PK\x03\x04", "ZIP archive (Word, Excel)"),
    (b"\xd0\xcf\x11\xe0", "Office 97 document"),
    (b"\x1f\x8b", "gzip archive"),
];

impl DocumentKind {
    /// Sniffs the content: PDF by its header (which may follow a little junk, as readers
    /// allow), HTML by its tags, Markdown by its headings or tables, else UTF-8 text.
    pub fn sniff(bytes: &[u8]) -> Result<Self, DocumentError> {
        let head = &bytes[..bytes.len().min(1024)];
        if head.windows(5).any(|w| w == b"%PDF-") {
            return Ok(DocumentKind::Pdf);
        }
        if let Some((_, name)) = KNOWN_BINARIES.iter().find(|(magic, _)| bytes.starts_with(magic)) {
            return Err(DocumentError::UnsupportedType((*name).to_string()));
        }
        let text = std::str::from_utf8(bytes).ok().filter(|_| !head.contains(&0));
        let Some(text) = text else {
            return Err(DocumentError::UnsupportedType("binary data that is neither PDF nor UTF-8 text".into()));
        };
        let lower: String = text.trim_start_matches('\u{feff}').trim_start().chars().take(512).collect();
        let lower = lower.to_ascii_lowercase();
        if lower.starts_with("<!doctype html") || lower.starts_with("<html") || lower.contains("<body") {
            return Ok(DocumentKind::Html);
        }
        let markdown = text.lines().take(200).any(|l| {
            let l = l.trim_start();
            (l.starts_with('#') && l.trim_start_matches('#').starts_with(' ')) || is_table_row(l)
        });
        Ok(if markdown { DocumentKind::Markdown } else { DocumentKind::Text })
    }
}

/// Extracts the text of every page, refusing documents over `max_pages`; blocking (PDF
/// parsing can take a while).
pub fn extract_limited(kind: DocumentKind, bytes: &[u8], max_pages: u32) -> Result<Extracted, DocumentError> {
    extract_paced(kind, bytes, max_pages, &mut || {})
}

/// [`extract_limited`], calling `pace` before each PDF page is read: a caller sharing the
/// cores with more urgent work can wait there.
pub fn extract_paced(
    kind: DocumentKind,
    bytes: &[u8],
    max_pages: u32,
    pace: &mut dyn FnMut(),
) -> Result<Extracted, DocumentError> {
    let raw: Vec<String> = match kind {
        DocumentKind::Pdf => extract_pdf(bytes, max_pages, pace)?,
        DocumentKind::Text | DocumentKind::Markdown | DocumentKind::Html => {
            let text =
                std::str::from_utf8(bytes).map_err(|e| DocumentError::Invalid(format!("not UTF-8 text: {e}")))?;
            let text = if kind == DocumentKind::Html { crate::html::to_text(text) } else { text.to_string() };
            let pages: Vec<String> = text.split('\u{c}').map(str::to_string).collect();
            if pages.len() > max_pages as usize {
                return Err(DocumentError::TooManyPages { pages: pages.len() as u32, limit: max_pages });
            }
            pages
        }
    };
    let mut out = Extracted { page_count: raw.len() as u32, ..Extracted::default() };
    for (i, text) in raw.into_iter().enumerate() {
        let number = i as u32 + 1;
        let text = if kind == DocumentKind::Pdf { normalize(&unwrap_lines(&text)) } else { normalize(&text) };
        if text.is_empty() {
            out.blank_pages.push(number);
        } else {
            out.pages.push(PageText { number, text });
        }
    }
    if out.pages.is_empty() {
        return Err(DocumentError::Empty);
    }
    Ok(out)
}

/// The pages with text, with no page limit.
pub fn extract(kind: DocumentKind, bytes: &[u8]) -> Result<Vec<PageText>, DocumentError> {
    extract_limited(kind, bytes, u32::MAX).map(|e| e.pages)
}

/// Opens a PDF and checks its page tree and page count (the quick part of extraction,
/// done before an upload is accepted).
pub fn count_pdf_pages(bytes: &[u8], max_pages: u32) -> Result<u32, DocumentError> {
    with_pdf(bytes, max_pages, |_, count| Ok(count))
}

/// Runs `read` on the parsed, checked document and its page count.
fn with_pdf<T>(
    bytes: &[u8],
    max_pages: u32,
    read: impl FnOnce(&lopdf::Document, u32) -> Result<T, DocumentError> + std::panic::UnwindSafe,
) -> Result<T, DocumentError> {
    let header = bytes.windows(5).take(1024).position(|w| w == b"%PDF-");
    let Some(header) = header else {
        return Err(DocumentError::Invalid("missing %PDF- header".into()));
    };
    let bytes = &bytes[header..];
    let invalid = |e: lopdf::Error| DocumentError::Invalid(e.to_string());
    // The PDF parser panics on some malformed files; a broken upload must not take a worker down.
    match std::panic::catch_unwind(|| {
        let mut doc = lopdf::Document::load_mem(bytes).map_err(invalid)?;
        if doc.is_encrypted() {
            // Permission-only encryption (an empty user password), which manuals often have.
            doc.decrypt("").map_err(invalid)?;
        }
        refuse_page_loops(&doc)?;
        let count = doc.get_pages().len() as u32;
        if count > max_pages {
            return Err(DocumentError::TooManyPages { pages: count, limit: max_pages });
        }
        read(&doc, count)
    }) {
        Ok(result) => result,
        Err(_) => Err(DocumentError::Invalid("malformed PDF structure".into())),
    }
}

fn extract_pdf(bytes: &[u8], max_pages: u32, pace: &mut dyn FnMut()) -> Result<Vec<String>, DocumentError> {
    let mut pace = std::panic::AssertUnwindSafe(pace);
    // Parsed once: checked, counted, then read page by page.
    with_pdf(bytes, max_pages, move |doc, count| {
        // The whole wrapper, not its field, must move in to count as unwind safe.
        let pace = &mut pace;
        Ok((1..=count)
            .map(|page| {
                (pace.0)();
                let mut text = String::new();
                // A page the extractor cannot read counts as one without text (reported).
                match pdf_extract::output_doc_page(doc, &mut pdf_extract::PlainTextOutput::new(&mut text), page) {
                    Ok(()) => text,
                    Err(_) => String::new(),
                }
            })
            .collect())
    })
}

/// Deepest page tree accepted (real documents nest a few levels).
const MAX_PAGE_TREE_DEPTH: usize = 64;

/// The text extractor follows each page's `/Parent` chain for inherited attributes and
/// would loop forever on a chain that returns to itself (found by fuzzing), so such
/// files are refused first.
fn refuse_page_loops(doc: &lopdf::Document) -> Result<(), DocumentError> {
    for page in doc.page_iter() {
        let mut node = page;
        let mut depth = 0;
        while let Ok(parent) = doc.get_dictionary(node).and_then(|d| d.get(b"Parent")).and_then(|p| p.as_reference()) {
            depth += 1;
            if parent == page || depth > MAX_PAGE_TREE_DEPTH {
                return Err(DocumentError::Invalid("the page tree loops back on itself".into()));
            }
            node = parent;
        }
    }
    Ok(())
}

/// Width from which a line that ends without punctuation is taken as wrapped, not as a
/// heading or a table row.
const WRAPPED_LINE_CHARS: usize = 50;

/// PDF text comes line by line, often with a blank line after each: lines that continue a
/// sentence (the next starts in lower case, or the line is a full-width one with no
/// closing punctuation) are joined back, so a paragraph is a paragraph again.
fn unwrap_lines(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut last = "";
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let ends_sentence = last.ends_with(['.', '!', '?', ':', ';']);
        let continues = line.starts_with(|c: char| c.is_lowercase())
            || (last.chars().count() >= WRAPPED_LINE_CHARS && !ends_sentence);
        if !out.is_empty() {
            out.push_str(if continues && !ends_sentence { " " } else { "\n\n" });
        }
        out.push_str(line);
        last = line;
    }
    out
}

/// A line of a table: cells between `|` (Markdown; tables as normalised) or tabs.
pub fn is_table_row(line: &str) -> bool {
    let line = line.trim();
    (line.starts_with('|') && line.matches('|').count() >= 2)
        || line.contains(" | ")
        || (line.contains('\t') && line.len() > 2)
}

/// Collapses runs of spaces and drops control characters; paragraph breaks stay, and so
/// do the line breaks between a table's rows (a row is a unit of meaning).
fn normalize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let text: String =
        text.chars().map(|c| if c.is_control() && !matches!(c, '\n' | '\t') { ' ' } else { c }).collect();
    for para in text.split("\n\n") {
        let lines: Vec<&str> = para.lines().filter(|l| !l.trim().is_empty()).collect();
        let rows = lines.iter().filter(|l| is_table_row(l)).count();
        let joined = if rows >= 2 && rows * 2 >= lines.len() {
            let row = |l: &str| l.replace('\t', " | ").split_whitespace().collect::<Vec<_>>().join(" ");
            lines.iter().map(|l| row(l)).collect::<Vec<_>>().join("\n")
        } else {
            para.split_whitespace().collect::<Vec<_>>().join(" ")
        };
        if joined.is_empty() {
            continue;
        }
        if !out.is_empty() {
            out.push_str("\n\n");
        }
        out.push_str(&joined);
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal valid PDF with one text line per page (Helvetica), for tests.
    pub fn make_pdf(pages: &[&str]) -> Vec<u8> {
        let n = pages.len();
        let mut objects: Vec<String> = Vec::new();
        objects.push("<< /Type /Catalog /Pages 2 0 R >>".into());
        let kids: Vec<String> = (0..n).map(|i| format!("{} 0 R", 4 + 2 * i)).collect();
        objects.push(format!("<< /Type /Pages /Kids [{}] /Count {n} >>", kids.join(" ")));
        objects.push("<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>".into());
        for (i, text) in pages.iter().enumerate() {
            objects.push(format!(
                "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >> /Contents {} 0 R >>",
                5 + 2 * i
            ));
            let escaped = text.replace('\\', "\\\\").replace('(', "\\(").replace(')', "\\)");
            let stream = format!("BT /F1 12 Tf 72 700 Td ({escaped}) Tj ET");
            objects.push(format!("<< /Length {} >>\nstream\n{stream}\nendstream", stream.len()));
        }
        let mut out = b"%PDF-1.4\n".to_vec();
        let mut offsets = Vec::new();
        for (i, obj) in objects.iter().enumerate() {
            offsets.push(out.len());
            out.extend_from_slice(format!("{} 0 obj\n{obj}\nendobj\n", i + 1).as_bytes());
        }
        let xref = out.len();
        out.extend_from_slice(format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes());
        for o in offsets {
            out.extend_from_slice(format!("{o:010} 00000 n \n").as_bytes());
        }
        out.extend_from_slice(
            format!("trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n", objects.len() + 1).as_bytes(),
        );
        out
    }

    #[test]
    fn pdf_pages_keep_their_numbers() {
        let pdf = make_pdf(&["Safety notes", "", "Head bolts: 38 N m, part GK-4471-B"]);
        let pages = extract(DocumentKind::sniff(&pdf).unwrap(), &pdf).unwrap();
        assert_eq!(pages.len(), 2, "{pages:?}");
        assert_eq!(pages[0].number, 1);
        assert_eq!(pages[1].number, 3);
        assert!(pages[1].text.contains("GK-4471-B"), "{:?}", pages[1].text);
    }

    #[test]
    fn the_type_comes_from_the_bytes_not_the_name() {
        let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";
        // No name is even asked for: a PNG renamed `.pdf` is an image, a PDF named `.txt` a PDF.
        assert_eq!(DocumentKind::sniff(png), Err(DocumentError::UnsupportedType("PNG image".into())));
        assert_eq!(DocumentKind::sniff(&make_pdf(&["x"])), Ok(DocumentKind::Pdf));
        assert_eq!(DocumentKind::sniff(b"# Compressor\n\nText."), Ok(DocumentKind::Markdown));
        assert_eq!(DocumentKind::sniff(b"| a | b |\n| 1 | 2 |"), Ok(DocumentKind::Markdown));
        assert_eq!(DocumentKind::sniff(b"\n  <!DOCTYPE html><p>x"), Ok(DocumentKind::Html));
        assert_eq!(DocumentKind::sniff(b"Plain #1 text"), Ok(DocumentKind::Text));
    }

    #[test]
    fn pages_without_text_are_reported_and_limits_hold() {
        let pdf = make_pdf(&["one", "", "three", ""]);
        let got = extract_limited(DocumentKind::Pdf, &pdf, 10).unwrap();
        assert_eq!((got.page_count, got.blank_pages), (4, vec![2, 4]));
        assert_eq!(got.pages.iter().map(|p| p.number).collect::<Vec<_>>(), vec![1, 3]);
        assert_eq!(
            extract_limited(DocumentKind::Pdf, &pdf, 3),
            Err(DocumentError::TooManyPages { pages: 4, limit: 3 })
        );
        assert_eq!(
            extract_limited(DocumentKind::Text, b"a\x0cb\x0cc", 2),
            Err(DocumentError::TooManyPages { pages: 3, limit: 2 })
        );
        assert_eq!(extract_limited(DocumentKind::Pdf, &make_pdf(&["", ""]), 10), Err(DocumentError::Empty));
    }

    #[test]
    fn table_rows_stay_lines_and_prose_is_joined() {
        let text = "Torque\ttable\nHead bolts\t38 N m\nValve cover\t12  N m\n\nA wrapped\nsentence.";
        let pages = extract(DocumentKind::Text, text.as_bytes()).unwrap();
        assert_eq!(pages[0].text, "Torque | table\nHead bolts | 38 N m\nValve cover | 12 N m\n\nA wrapped sentence.");
    }

    #[test]
    fn text_form_feeds_are_page_breaks() {
        let pages = extract(DocumentKind::Text, b"one\n\n  two   words\x0cpage two").unwrap();
        assert_eq!(
            pages,
            vec![
                PageText { number: 1, text: "one\n\ntwo words".into() },
                PageText { number: 2, text: "page two".into() },
            ]
        );
    }

    #[test]
    fn a_page_that_is_its_own_parent_is_refused_not_looped_on() {
        // Same length as "/Parent 2 0 R", so the cross-reference offsets stay right.
        let pdf = String::from_utf8(make_pdf(&["one", "two"])).unwrap().replacen("/Parent 2 0 R", "/Parent 4 0 R", 1);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(extract(DocumentKind::Pdf, pdf.as_bytes())));
        // Hang guard only: before the check, extraction never returned.
        let result = rx.recv_timeout(std::time::Duration::from_secs(120)).expect("extraction returns");
        assert_eq!(result, Err(DocumentError::Invalid("the page tree loops back on itself".into())));
    }

    #[test]
    fn bad_documents_are_clear_errors() {
        assert!(matches!(DocumentKind::sniff(b"PK\x03\x04rest"), Err(DocumentError::UnsupportedType(_))));
        assert!(matches!(DocumentKind::sniff(b"text\0with a NUL"), Err(DocumentError::UnsupportedType(_))));
        assert!(matches!(extract(DocumentKind::Pdf, b"%PDF-1.4 garbage"), Err(DocumentError::Invalid(_))));
        assert!(matches!(extract(DocumentKind::Pdf, b"hello"), Err(DocumentError::Invalid(_))));
        let mut truncated = make_pdf(&["text"]);
        truncated.truncate(truncated.len() / 2);
        assert!(matches!(
            extract(DocumentKind::Pdf, &truncated),
            Err(DocumentError::Invalid(_) | DocumentError::Empty)
        ));
        assert!(matches!(extract(DocumentKind::Text, &[0xff, 0xfe]), Err(DocumentError::Invalid(_))));
        assert!(matches!(extract(DocumentKind::Markdown, b"  \n "), Err(DocumentError::Empty)));
    }
}
