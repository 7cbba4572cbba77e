//! HTML manuals to text: block elements become paragraphs, headings keep their level as
//! Markdown `#` marks (the chunker reads the heading path from them), table rows become
//! lines of tab-separated cells, and scripts, styles and the head are dropped.

/// Elements whose content is never text of the manual.
const SKIPPED: [&str; 5] = ["script", "style", "head", "noscript", "template"];
/// Elements that start and end a paragraph.
const BLOCKS: [&str; 18] = [
    "p",
    "div",
    "section",
    "article",
    "li",
    "ul",
    "ol",
    "table",
    "pre",
    "blockquote",
    "hr",
    "header",
    "footer",
    "main",
    "nav",
    "dl",
    "dt",
    "dd",
];

/// The text of an HTML document (any input: unclosed tags and stray `<` are text or ignored).
pub fn to_text(html: &str) -> String {
    let mut out = String::with_capacity(html.len() / 2);
    let mut rest = html;
    let mut skipping: Option<String> = None;
    let mut cell_in_row = 0usize;
    while let Some(lt) = rest.find('<') {
        if skipping.is_none() {
            push_text(&mut out, &rest[..lt]);
        }
        rest = &rest[lt..];
        if let Some(comment) = rest.strip_prefix("<!--") {
            rest = comment.find("-->").map_or("", |end| &comment[end + 3..]);
            continue;
        }
        // A `<` that does not start a tag ("a < b") is text.
        if !rest[1..].starts_with(|c: char| c.is_ascii_alphabetic() || c == '/' || c == '!') {
            if skipping.is_none() {
                out.push('<');
            }
            rest = &rest[1..];
            continue;
        }
        let Some(gt) = rest.find('>') else {
            if skipping.is_none() {
                push_text(&mut out, rest);
            }
            rest = "";
            break;
        };
        let tag = &rest[1..gt];
        rest = &rest[gt + 1..];
        let closing = tag.starts_with('/');
        let name: String = tag
            .trim_start_matches('/')
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect::<String>()
            .to_ascii_lowercase();
        if let Some(skipped) = &skipping {
            if closing && &name == skipped {
                skipping = None;
            }
            continue;
        }
        if !closing && SKIPPED.contains(&name.as_str()) && !tag.ends_with('/') {
            skipping = Some(name);
            continue;
        }
        match name.as_str() {
            "br" => out.push('\n'),
            "tr" if !closing => {
                cell_in_row = 0;
                out.push('\n');
            }
            "td" | "th" if !closing => {
                if cell_in_row > 0 {
                    out.push('\t');
                }
                cell_in_row += 1;
            }
            h if h.len() == 2 && h.starts_with('h') && h.as_bytes()[1].is_ascii_digit() => {
                out.push_str("\n\n");
                if !closing {
                    let level = usize::from(h.as_bytes()[1] - b'0').clamp(1, 6);
                    out.push_str(&"#".repeat(level));
                    out.push(' ');
                }
            }
            b if BLOCKS.contains(&b) => {
                // A table's rows are lines of one paragraph; other blocks are paragraphs.
                out.push_str("\n\n");
            }
            _ => {}
        }
    }
    if skipping.is_none() {
        push_text(&mut out, rest);
    }
    out
}

/// Appends text with its entities decoded and its line breaks as spaces (the markup,
/// not the source's line wrapping, says where lines break).
fn push_text(out: &mut String, text: &str) {
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        push_spaced(out, &rest[..amp]);
        rest = &rest[amp..];
        // Bytes, not a string slice: the twelfth byte may fall inside a character.
        let end = rest.bytes().take(12).position(|b| b == b';');
        match end.and_then(|end| entity(&rest[1..end]).map(|c| (c, end))) {
            Some((c, end)) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    push_spaced(out, rest);
}

fn push_spaced(out: &mut String, text: &str) {
    out.extend(text.chars().map(|c| if c == '\n' || c == '\r' || c == '\t' { ' ' } else { c }));
}

fn entity(name: &str) -> Option<char> {
    Some(match name {
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        "nbsp" => ' ',
        "deg" => '°',
        "middot" => '·',
        "plusmn" => '±',
        _ => {
            let code = match name.strip_prefix("#x").or_else(|| name.strip_prefix("#X")) {
                Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                None => name.strip_prefix('#')?.parse().ok()?,
            };
            char::from_u32(code).filter(|c| !c.is_control())?
        }
    })
}

#[cfg(test)]
mod tests {
    use crate::document::{DocumentKind, extract};

    #[test]
    fn headings_paragraphs_and_tables_survive() {
        let html = "<!DOCTYPE html><html><head><title>x</title><style>p{}</style></head><body>\
            <h2>Compressor service</h2><p>Head bolts: 38&nbsp;N&middot;m,\nstar pattern.</p>\
            <script>var a = '<p>';</script><!-- note -->\
            <table><tr><th>Part</th><th>Number</th></tr><tr><td>Head gasket</td><td>GK-4471-B</td></tr></table>\
            <p>R&amp;D &#x2013; &#8211; &bogus; a < b</p></body></html>";
        assert_eq!(DocumentKind::sniff(html.as_bytes()), Ok(DocumentKind::Html));
        let pages = extract(DocumentKind::Html, html.as_bytes()).unwrap();
        assert_eq!(pages.len(), 1);
        assert_eq!(
            pages[0].text,
            "## Compressor service\n\nHead bolts: 38 N·m, star pattern.\n\n\
             Part | Number\nHead gasket | GK-4471-B\n\nR&D – – &bogus; a < b"
        );
    }

    #[test]
    fn an_ampersand_before_a_wide_character_is_text() {
        // Found by fuzzing: the entity scan once sliced through 'ܻ' (two bytes).
        let text = "a &&&&&&&&&& u-\u{73b}&&& b";
        let mut out = String::new();
        super::push_text(&mut out, text);
        assert_eq!(out, text);
    }
}
