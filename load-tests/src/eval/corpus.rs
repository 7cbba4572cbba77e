//! The benchmark's data: manuals of several tenants (text pages, turned into real PDFs
//! before ingest so extraction is exercised) and questions with the facts a right answer
//! states, the manual and page that hold them, or none when no manual answers; and
//! two-turn dialogues, a question then a follow-up that leans on it, scored the same way.

use std::path::Path;

use anyhow::{Context, bail};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manual {
    pub tenant: String,
    pub equipment: String,
    pub title: String,
    /// Under `manuals/`; pages are separated by form feeds.
    pub file: String,
    /// Filled in by `load`: the text of each page.
    #[serde(skip)]
    pub pages: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Number,
    Decimal,
    Code,
    Part,
    Paraphrase,
    Unit,
    Unanswerable,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Question {
    pub id: String,
    pub tenant: String,
    pub text: String,
    /// Every one must appear in a right answer; numbers are compared as numbers.
    pub facts: Vec<String>,
    pub manual: Option<String>,
    pub page: Option<u32>,
    pub kind: Kind,
    #[serde(default)]
    pub noisy: bool,
}

impl Question {
    pub fn answerable(&self) -> bool {
        self.kind != Kind::Unanswerable
    }
}

/// One question of a dialogue: a `Question` of the dialogue's tenant, without an id.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Turn {
    pub text: String,
    /// Every one must appear in a right answer; numbers are compared as numbers.
    pub facts: Vec<String>,
    pub manual: Option<String>,
    pub page: Option<u32>,
    pub kind: Kind,
}

impl Turn {
    pub fn answerable(&self) -> bool {
        self.kind != Kind::Unanswerable
    }
}

/// Two questions asked in one session: the first stands alone (it names the equipment),
/// the follow-up leans on it ("and what's its part number?") and is ambiguous without it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dialogue {
    pub id: String,
    pub tenant: String,
    pub first: Turn,
    pub follow_up: Turn,
}

impl Dialogue {
    /// The first question and the follow-up as questions to ask and score like any other
    /// (ids `<dialogue>/first` and `<dialogue>/follow-up`).
    pub fn questions(&self) -> [Question; 2] {
        let question = |turn: &Turn, part: &str| Question {
            id: format!("{}/{part}", self.id),
            tenant: self.tenant.clone(),
            text: turn.text.clone(),
            facts: turn.facts.clone(),
            manual: turn.manual.clone(),
            page: turn.page,
            kind: turn.kind,
            noisy: false,
        };
        [question(&self.first, "first"), question(&self.follow_up, "follow-up")]
    }
}

#[derive(Debug, Clone)]
pub struct Corpus {
    pub manuals: Vec<Manual>,
    pub questions: Vec<Question>,
    /// From `dialogues.toml`; none when the folder has no such file.
    pub dialogues: Vec<Dialogue>,
}

#[derive(Deserialize)]
struct ManualsFile {
    manual: Vec<Manual>,
}

#[derive(Deserialize)]
struct QuestionsFile {
    question: Vec<Question>,
}

#[derive(Deserialize)]
struct DialoguesFile {
    #[serde(default)]
    dialogue: Vec<Dialogue>,
}

impl Corpus {
    /// Reads `corpus.toml`, `questions.toml`, `dialogues.toml` (if there is one) and the
    /// manuals under `dir`, and checks that every answerable question, of the dialogues
    /// too, names a page that exists.
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        let read = |name: &str| {
            std::fs::read_to_string(dir.join(name)).with_context(|| format!("reading {}", dir.join(name).display()))
        };
        let mut manuals = toml::from_str::<ManualsFile>(&read("corpus.toml")?).context("corpus.toml")?.manual;
        for m in &mut manuals {
            m.pages = read(&format!("manuals/{}", m.file))?.split('\u{c}').map(str::to_string).collect();
        }
        let questions = toml::from_str::<QuestionsFile>(&read("questions.toml")?).context("questions.toml")?.question;
        for q in &questions {
            check(q, &manuals)?;
        }
        let dialogues = if dir.join("dialogues.toml").exists() {
            toml::from_str::<DialoguesFile>(&read("dialogues.toml")?).context("dialogues.toml")?.dialogue
        } else {
            Vec::new()
        };
        {
            let mut ids = std::collections::BTreeSet::new();
            for d in &dialogues {
                if !ids.insert(d.id.as_str()) {
                    bail!("dialogue {} appears twice in dialogues.toml", d.id);
                }
                for q in d.questions() {
                    check(&q, &manuals)?;
                }
            }
        }
        Ok(Self { manuals, questions, dialogues })
    }

    /// The text of a tenant's manual page, if it exists.
    pub fn page(&self, tenant: &str, title: &str, page: u32) -> Option<&str> {
        let m = self.manuals.iter().find(|m| m.tenant == tenant && m.title == title)?;
        m.pages.get(page.checked_sub(1)? as usize).map(String::as_str)
    }
}

/// An answerable question must name a manual of its tenant and a page that exists.
fn check(q: &Question, manuals: &[Manual]) -> anyhow::Result<()> {
    if let (Some(title), Some(page)) = (&q.manual, q.page) {
        let Some(m) = manuals.iter().find(|m| m.tenant == q.tenant && &m.title == title) else {
            bail!("question {}: tenant {} has no manual {title:?}", q.id, q.tenant);
        };
        if page == 0 || page as usize > m.pages.len() {
            bail!("question {}: {title:?} has no page {page}", q.id);
        }
    } else if q.answerable() {
        bail!("question {} is answerable but names no manual and page", q.id);
    }
    Ok(())
}

/// Characters per line of the generated PDF pages.
const LINE_CHARS: usize = 88;

/// A text PDF (Helvetica, WinAnsi) with one PDF page per manual page: paragraphs wrap
/// at word boundaries and are separated by an empty line, as office tools print them.
pub fn pdf(pages: &[String]) -> Vec<u8> {
    let mut objects: Vec<Vec<u8>> = vec![
        b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(),
        Vec::new(), // the page tree, once the pages are numbered
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>".to_vec(),
    ];
    let mut kids = Vec::new();
    for text in pages {
        let mut stream = b"BT /F1 10 Tf 13 TL 56 790 Td\n".to_vec();
        for para in text.split("\n\n").map(str::trim).filter(|p| !p.is_empty()) {
            for line in wrap(&para.split_whitespace().collect::<Vec<_>>().join(" "), LINE_CHARS) {
                stream.push(b'(');
                stream.extend(win_ansi(&line));
                stream.extend(b") Tj T*\n");
            }
            stream.extend(b"T*\n");
        }
        stream.extend(b"ET");
        let content = objects.len() + 1;
        let mut c = format!("<< /Length {} >>\nstream\n", stream.len()).into_bytes();
        c.extend(stream);
        c.extend(b"\nendstream");
        objects.push(c);
        kids.push(objects.len() + 1);
        objects.push(
            format!(
                "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 842] /Contents {content} 0 R \
                 /Resources << /Font << /F1 3 0 R >> >> >>"
            )
            .into_bytes(),
        );
    }
    let kids: Vec<String> = kids.iter().map(|k| format!("{k} 0 R")).collect();
    objects[1] = format!("<< /Type /Pages /Kids [{}] /Count {} >>", kids.join(" "), pages.len()).into_bytes();

    let mut out = b"%PDF-1.4\n".to_vec();
    let mut offsets = Vec::new();
    for (i, body) in objects.iter().enumerate() {
        offsets.push(out.len());
        out.extend(format!("{} 0 obj\n", i + 1).bytes());
        out.extend(body);
        out.extend(b"\nendobj\n");
    }
    let xref = out.len();
    out.extend(format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).bytes());
    for o in offsets {
        out.extend(format!("{o:010} 00000 n \n").bytes());
    }
    out.extend(format!("trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n", objects.len() + 1).bytes());
    out
}

fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = vec![String::new()];
    for word in text.split(' ') {
        let line = lines.last_mut().expect("one line");
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            lines.push(word.to_string());
        } else {
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
    }
    lines
}

/// A PDF string literal's bytes: WinAnsi for Latin-1 characters, escapes for delimiters.
fn win_ansi(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '(' | ')' | '\\' => out.extend([b'\\', c as u8]),
            c if (c as u32) < 0x100 => out.push(c as u32 as u8),
            _ => out.push(b'?'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_corpus_loads_and_every_page_exists() {
        let corpus = Corpus::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("eval")).unwrap();
        assert!(corpus.questions.len() >= 40);
        let tenants: std::collections::BTreeSet<&str> = corpus.manuals.iter().map(|m| m.tenant.as_str()).collect();
        assert!(tenants.len() >= 3);
        for q in corpus.questions.iter().filter(|q| q.answerable()) {
            let page = corpus.page(&q.tenant, q.manual.as_deref().unwrap(), q.page.unwrap()).unwrap();
            for f in &q.facts {
                assert!(page.to_lowercase().contains(&f.to_lowercase()), "{}: {f:?} not on its page", q.id);
            }
        }
    }

    #[test]
    fn shipped_dialogues_load_and_every_fact_is_on_its_page() {
        let corpus = Corpus::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("eval")).unwrap();
        assert!(corpus.dialogues.len() >= 12);
        let tenants: std::collections::BTreeSet<&str> = corpus.dialogues.iter().map(|d| d.tenant.as_str()).collect();
        assert!(tenants.len() >= 3);
        for d in &corpus.dialogues {
            assert!(d.first.answerable(), "{}: the follow-up leans on a first question that has an answer", d.id);
            for q in d.questions() {
                let (Some(title), Some(page)) = (q.manual.as_deref(), q.page) else {
                    assert!(!q.answerable() && q.facts.is_empty(), "{}", q.id);
                    continue;
                };
                let page = corpus.page(&q.tenant, title, page).unwrap();
                assert!(!q.facts.is_empty(), "{}: an answerable question states a fact", q.id);
                for f in &q.facts {
                    assert!(page.to_lowercase().contains(&f.to_lowercase()), "{}: {f:?} not on its page", q.id);
                }
            }
        }
    }

    #[test]
    fn pdf_pages_extract_back_to_their_text() {
        let pages = vec![
            "Head bolts\n\nTighten the compressor head bolts to 38 N·m (star pattern).".to_string(),
            "Oil capacity is 3.8 litres at 20 °C.".to_string(),
        ];
        let got = fieldvox::rag::extract::extract(fieldvox::rag::extract::DocumentKind::Pdf, &pdf(&pages)).unwrap();
        assert_eq!(got.len(), 2);
        assert!(got[0].text.contains("38 N·m (star pattern)"), "{:?}", got[0].text);
        assert!(got[1].text.contains("3.8 litres at 20 °C"), "{:?}", got[1].text);
    }
}
