//! Text extraction from uploaded manuals, page by page.
//!
//! PDF pages are real pages. Plain text and Markdown are one page unless they contain
//! form feeds (`\f`), which printers and `pdftotext` use as page breaks.

/// Why an upload yields no pages.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DocumentError {
    #[error("unsupported document type {0:?}: send PDF, plain text or Markdown")]
    UnsupportedType(String),
    #[error("document could not be read: {0}")]
    Invalid(String),
    #[error("document has no extractable text")]
    Empty,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocumentKind {
    Pdf,
    Text,
    Markdown,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PageText {
    /// 1-based page number, as printed in citations.
    pub number: u32,
    pub text: String,
}

impl DocumentKind {
    /// From the file name's extension, falling back to the content's magic bytes.
    pub fn detect(filename: &str, bytes: &[u8]) -> Result<Self, DocumentError> {
        let ext = filename.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()).unwrap_or_default();
        match ext.as_str() {
            "pdf" => Ok(DocumentKind::Pdf),
            "txt" | "text" => Ok(DocumentKind::Text),
            "md" | "markdown" => Ok(DocumentKind::Markdown),
            _ if bytes.starts_with(b"%PDF-") => Ok(DocumentKind::Pdf),
            "" if std::str::from_utf8(bytes).is_ok() => Ok(DocumentKind::Text),
            _ => Err(DocumentError::UnsupportedType(filename.to_string())),
        }
    }
}

/// Extracts the text of every page; blocking (PDF parsing can take a while).
pub fn extract(kind: DocumentKind, bytes: &[u8]) -> Result<Vec<PageText>, DocumentError> {
    let pages: Vec<String> = match kind {
        DocumentKind::Pdf => extract_pdf(bytes)?,
        DocumentKind::Text | DocumentKind::Markdown => {
            let text =
                std::str::from_utf8(bytes).map_err(|e| DocumentError::Invalid(format!("not UTF-8 text: {e}")))?;
            text.split('\u{c}').map(str::to_string).collect()
        }
    };
    let pages: Vec<PageText> = pages
        .into_iter()
        .enumerate()
        .map(|(i, text)| PageText { number: i as u32 + 1, text: normalize(&text) })
        .filter(|p| !p.text.is_empty())
        .collect();
    if pages.is_empty() {
        return Err(DocumentError::Empty);
    }
    Ok(pages)
}

fn extract_pdf(bytes: &[u8]) -> Result<Vec<String>, DocumentError> {
    if !bytes.starts_with(b"%PDF-") {
        return Err(DocumentError::Invalid("missing %PDF- header".into()));
    }
    let invalid = |e: lopdf::Error| DocumentError::Invalid(e.to_string());
    // The PDF parser panics on some malformed files; a broken upload must not take a worker down.
    match std::panic::catch_unwind(|| {
        // Parsed once: checked, then read page by page, as pdf-extract's own
        // `extract_text_from_mem_by_pages` does (up to the first page it cannot read).
        let mut doc = lopdf::Document::load_mem(bytes).map_err(invalid)?;
        if doc.is_encrypted() {
            // Permission-only encryption (an empty user password), which manuals often have.
            doc.decrypt("").map_err(invalid)?;
        }
        refuse_page_loops(&doc)?;
        Ok((1..)
            .map_while(|page| {
                let mut text = String::new();
                pdf_extract::output_doc_page(&doc, &mut pdf_extract::PlainTextOutput::new(&mut text), page)
                    .ok()
                    .map(|()| text)
            })
            .collect())
    }) {
        Ok(result) => result,
        Err(_) => Err(DocumentError::Invalid("malformed PDF structure".into())),
    }
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

/// Collapses runs of spaces, keeps paragraph breaks, drops control characters.
fn normalize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for para in text.split("\n\n") {
        let joined: Vec<&str> = para.split_whitespace().collect();
        if joined.is_empty() {
            continue;
        }
        if !out.is_empty() {
            out.push_str("\n\n");
        }
        out.push_str(&joined.join(" "));
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
        let pages = extract(DocumentKind::detect("m.pdf", &pdf).unwrap(), &pdf).unwrap();
        assert_eq!(pages.len(), 2, "{pages:?}");
        assert_eq!(pages[0].number, 1);
        assert_eq!(pages[1].number, 3);
        assert!(pages[1].text.contains("GK-4471-B"), "{:?}", pages[1].text);
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
        assert!(matches!(DocumentKind::detect("x.docx", b"PK.."), Err(DocumentError::UnsupportedType(_))));
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
