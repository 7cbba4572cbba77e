//! An admin's upload, named as PDF, plain text, Markdown, nothing, HTML or Word (the first
//! byte picks the file name; the last two are refused as unsupported types): pages of
//! normalized text numbered from 1, or a typed refusal.
#![no_main]

use std::sync::Once;

use fieldvox_formats::document::{DocumentKind, extract};
use libfuzzer_sys::fuzz_target;

static QUIET_PANICS: Once = Once::new();

fuzz_target!(|data: &[u8]| {
    // The PDF parser panics on some malformed files and extraction catches that (a broken
    // upload is refused, not fatal). libFuzzer's panic hook would abort even on a caught
    // panic, so it is replaced; a panic that escapes `extract` still aborts (libfuzzer-sys
    // catches it around every input) and is reported as a crash.
    QUIET_PANICS.call_once(|| std::panic::set_hook(Box::new(|_| {})));
    let [pick, bytes @ ..] = data else { return };
    let names = ["manual.pdf", "manual.txt", "manual.md", "manual", "manual.html", "manual.docx"];
    let name = names[usize::from(*pick) % names.len()];
    let Ok(kind) = DocumentKind::detect(name, bytes) else { return };
    let Ok(pages) = extract(kind, bytes) else { return };
    assert!(!pages.is_empty());
    let mut last = 0;
    for page in &pages {
        assert!(page.number > last, "page numbers must increase");
        last = page.number;
        assert!(!page.text.is_empty() && page.text.trim() == page.text);
        assert!(!page.text.contains("\n\n\n") && !page.text.contains("  "));
    }
});
