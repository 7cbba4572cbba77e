//! An admin's upload, typed by its bytes (PDF, HTML, Markdown, text, or refused): pages of
//! normalized text numbered from 1 with the blank ones listed, or a typed refusal. The
//! first byte sets the page limit.
#![no_main]

use std::sync::Once;

use fieldvox_formats::document::{DocumentKind, extract_limited};
use libfuzzer_sys::fuzz_target;

static QUIET_PANICS: Once = Once::new();

fuzz_target!(|data: &[u8]| {
    // The PDF parser panics on some malformed files and extraction catches that (a broken
    // upload is refused, not fatal). libFuzzer's panic hook would abort even on a caught
    // panic, so it is replaced; a panic that escapes `extract` still aborts (libfuzzer-sys
    // catches it around every input) and is reported as a crash.
    QUIET_PANICS.call_once(|| std::panic::set_hook(Box::new(|_| {})));
    let [pick, bytes @ ..] = data else { return };
    let max_pages = u32::from(*pick).max(1);
    let Ok(kind) = DocumentKind::sniff(bytes) else { return };
    let Ok(extracted) = extract_limited(kind, bytes, max_pages) else { return };
    let pages = &extracted.pages;
    assert!(!pages.is_empty());
    assert!(extracted.page_count <= max_pages);
    assert_eq!(pages.len() + extracted.blank_pages.len(), extracted.page_count as usize);
    let mut last = 0;
    for page in pages {
        assert!(page.number > last, "page numbers must increase");
        last = page.number;
        assert!(!page.text.is_empty() && page.text.trim() == page.text);
        assert!(!page.text.contains("\n\n\n") && !page.text.contains("  "));
    }
});
