//! `fieldvox-eval`: the answer-quality benchmark. Ingests several tenants' manuals (as
//! PDFs) into a real server with the real models, asks every question typed and spoken
//! (by voices that are not the server's, some over background noise), and scores each
//! answer: the fact, the page cited, no fact of another tenant, nothing invented. Then the
//! follow-ups: two-turn dialogues asked in one session, the follow-up ("and what's its
//! part number?") once the first answer has played out, both answers scored the same way.

pub mod corpus;
pub mod score;
pub mod voice;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use fieldvox::app::App;
use fieldvox::auth::{Role, TokenKeys};
use fieldvox::config::Config;
use fieldvox::rag::ingest::NewManual;
use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::report::Percentiles;
use corpus::{Corpus, Dialogue, Question};
use score::{Cited, Verdict, judge};
use voice::Voice;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "fieldvox-eval",
    about = "Answer-quality benchmark: asks every question of the corpus typed and spoken, \
             against a real fieldvox server with the real models, and scores the answers"
)]
pub struct EvalArgs {
    /// Folder with corpus.toml, questions.toml, dialogues.toml and manuals/.
    #[arg(long, default_value = "load-tests/eval")]
    pub corpus: PathBuf,
    /// Pipeline profiles directory.
    #[arg(long, default_value = "pipelines")]
    pub pipelines: PathBuf,
    /// Profiles to compare, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "field-assistant,extractive")]
    pub profiles: Vec<String>,
    /// Voices that ask the spoken questions (espeak-ng:<voice> or flite:<voice>).
    #[arg(long, value_delimiter = ',', default_value = "espeak-ng:en-us+f3,flite:slt")]
    pub voices: Vec<Voice>,
    /// Background noise (RMS dBFS) under the questions marked noisy, asked by the first voice.
    #[arg(long, default_value_t = -35.0, allow_hyphen_values = true)]
    pub noise_dbfs: f32,
    /// Ask typed questions only.
    #[arg(long, conflicts_with = "spoken_only")]
    pub typed_only: bool,
    /// Ask spoken questions only.
    #[arg(long)]
    pub spoken_only: bool,
    /// Ask every Nth question and every Nth dialogue only (a quick subset).
    #[arg(long, default_value_t = 1)]
    pub every: usize,
    /// The follow-up dialogues (dialogues.toml: a question, then a follow-up that leans on
    /// it, in one session): asked as the questions are (typed and/or spoken, by the same
    /// voices), typed only, or skipped.
    #[arg(long, value_enum, default_value_t = DialogueModes::All)]
    pub dialogues: DialogueModes,
    /// Ask the dialogues only, not the questions.
    #[arg(long)]
    pub dialogues_only: bool,
    /// Write every answer with its verdict as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// Which ways the follow-up dialogues are asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DialogueModes {
    /// As the questions are: typed unless --spoken-only, spoken unless --typed-only.
    All,
    /// Typed only, however the questions are asked.
    Typed,
    /// Not at all.
    Skip,
}

impl EvalArgs {
    fn dialogues_typed(&self) -> bool {
        match self.dialogues {
            DialogueModes::All => !self.spoken_only,
            DialogueModes::Typed => true,
            DialogueModes::Skip => false,
        }
    }

    fn dialogues_spoken(&self) -> bool {
        self.dialogues == DialogueModes::All && !self.typed_only
    }
}

/// How a question was asked.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Mode {
    Typed,
    Spoken { voice: String, noisy: bool },
}

impl Mode {
    fn group(&self) -> &'static str {
        match self {
            Mode::Typed => "typed",
            Mode::Spoken { noisy: false, .. } => "spoken",
            Mode::Spoken { noisy: true, .. } => "spoken, noise",
        }
    }

    /// The voice, for spoken questions.
    fn voice(&self) -> Option<&str> {
        match self {
            Mode::Typed => None,
            Mode::Spoken { voice, .. } => Some(voice),
        }
    }
}

/// One question asked once.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub profile: String,
    pub question: String,
    pub mode: Mode,
    pub transcript: Option<String>,
    pub answer: String,
    pub cited: Vec<(String, u32)>,
    pub verdict: Verdict,
    pub voice_to_voice_ms: Option<f64>,
}

/// The scores of one group of outcomes.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Summary {
    pub asked: usize,
    pub right: usize,
    pub answerable: usize,
    pub page_right: usize,
    pub unanswerable: usize,
    pub not_found_right: usize,
    pub foreign: usize,
    pub invented: usize,
    pub voice_to_voice_p50_ms: f64,
}

impl Summary {
    pub fn of<'a>(outcomes: impl IntoIterator<Item = &'a Outcome>, corpus: &Corpus) -> Self {
        let outcomes: Vec<&Outcome> = outcomes.into_iter().collect();
        let answerable = |o: &&&Outcome| corpus.questions.iter().any(|q| q.id == o.question && q.answerable());
        let latencies = outcomes.iter().filter_map(|o| o.voice_to_voice_ms).collect();
        Self {
            asked: outcomes.len(),
            right: outcomes.iter().filter(|o| o.verdict.right).count(),
            answerable: outcomes.iter().filter(answerable).count(),
            page_right: outcomes.iter().filter(answerable).filter(|o| o.verdict.page_right).count(),
            unanswerable: outcomes.iter().filter(|o| !answerable(o)).count(),
            not_found_right: outcomes.iter().filter(|o| !answerable(o) && o.verdict.right).count(),
            foreign: outcomes.iter().filter(|o| !o.verdict.foreign.is_empty()).count(),
            invented: outcomes.iter().filter(|o| !o.verdict.invented.is_empty()).count(),
            voice_to_voice_p50_ms: Percentiles::of(latencies).p50,
        }
    }

    pub fn right_pct(&self) -> f64 {
        pct(self.right, self.asked)
    }

    pub fn page_pct(&self) -> f64 {
        pct(self.page_right, self.answerable)
    }
}

fn pct(n: usize, of: usize) -> f64 {
    if of == 0 { 0.0 } else { 100.0 * n as f64 / of as f64 }
}

/// One dialogue asked once: its first question, then the follow-up in the same session.
#[derive(Debug, Clone, Serialize)]
pub struct DialogueOutcome {
    pub profile: String,
    pub dialogue: String,
    pub mode: Mode,
    pub first: Outcome,
    pub follow_up: Outcome,
}

/// The scores of one group of dialogues.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct DialogueSummary {
    pub dialogues: usize,
    /// First questions answered right (for context: the follow-up leans on them).
    pub first_right: usize,
    pub follow_up_right: usize,
    /// Follow-ups whose answer is in the tenant's manuals.
    pub follow_up_answerable: usize,
    /// Of those, the ones whose first citation is the right manual and page.
    pub follow_up_page_right: usize,
    /// Answers, to either question, carrying another tenant's fact.
    pub foreign: usize,
    /// Answers, to either question, carrying a number or code the cited pages do not state.
    pub invented: usize,
    pub follow_up_voice_to_voice_p50_ms: f64,
}

impl DialogueSummary {
    pub fn of<'a>(outcomes: impl IntoIterator<Item = &'a DialogueOutcome>, corpus: &Corpus) -> Self {
        let mut s = Self::default();
        let mut latencies: Vec<f64> = Vec::new();
        for o in outcomes {
            let answerable = corpus.dialogues.iter().any(|d| d.id == o.dialogue && d.follow_up.answerable());
            s.dialogues += 1;
            s.first_right += usize::from(o.first.verdict.right);
            s.follow_up_right += usize::from(o.follow_up.verdict.right);
            if answerable {
                s.follow_up_answerable += 1;
                s.follow_up_page_right += usize::from(o.follow_up.verdict.page_right);
            }
            for answer in [&o.first, &o.follow_up] {
                s.foreign += usize::from(!answer.verdict.foreign.is_empty());
                s.invented += usize::from(!answer.verdict.invented.is_empty());
            }
            latencies.extend(o.follow_up.voice_to_voice_ms);
        }
        s.follow_up_voice_to_voice_p50_ms = Percentiles::of(latencies).p50;
        s
    }

    pub fn follow_up_right_pct(&self) -> f64 {
        pct(self.follow_up_right, self.dialogues)
    }

    pub fn follow_up_page_pct(&self) -> f64 {
        pct(self.follow_up_page_right, self.follow_up_answerable)
    }
}

pub struct EvalReport {
    pub outcomes: Vec<Outcome>,
    /// (profile, mode group) → summary.
    pub summaries: BTreeMap<(String, String), Summary>,
    pub dialogues: Vec<DialogueOutcome>,
    /// (profile, mode group) → summary of the dialogues.
    pub dialogue_summaries: BTreeMap<(String, String), DialogueSummary>,
}

impl EvalReport {
    /// Markdown tables: one row per profile and way of asking, for the questions, then
    /// (when dialogues were asked) for the follow-up questions.
    pub fn table(&self) -> String {
        let mut out = String::new();
        if !self.summaries.is_empty() || self.dialogue_summaries.is_empty() {
            out.push_str(&self.questions_table());
        }
        if !self.dialogue_summaries.is_empty() {
            if !out.is_empty() {
                out.push('\n');
            }
            out.push_str(&self.follow_up_table());
        }
        out
    }

    fn follow_up_table(&self) -> String {
        let mut out = String::from(
            "Follow-up questions (two-turn dialogues, one session each: the follow-up leans on the first question)\n\n\
             | profile | dialogues | follow-up right | follow-up right page | first question right | another tenant's fact (either answer) | invented number or code (either answer) | follow-up voice-to-voice p50 |\n\
             | --- | --- | --- | --- | --- | --- | --- | --- |\n",
        );
        for ((profile, group), s) in &self.dialogue_summaries {
            out.push_str(&format!(
                "| `{profile}` {group} | {} | **{}/{} ({:.0} %)** | {}/{} ({:.0} %) | {}/{} | {} | {} | {:.0} ms |\n",
                s.dialogues,
                s.follow_up_right,
                s.dialogues,
                s.follow_up_right_pct(),
                s.follow_up_page_right,
                s.follow_up_answerable,
                s.follow_up_page_pct(),
                s.first_right,
                s.dialogues,
                s.foreign,
                s.invented,
                s.follow_up_voice_to_voice_p50_ms
            ));
        }
        out
    }

    fn questions_table(&self) -> String {
        let mut out = String::from(
            "| profile | asked | right | right page | said \"not found\" when right to | another tenant's fact | invented number or code | voice-to-voice p50 |\n\
             | --- | --- | --- | --- | --- | --- | --- | --- |\n",
        );
        for ((profile, group), s) in &self.summaries {
            out.push_str(&format!(
                "| `{profile}` {group} | {} | **{}/{} ({:.0} %)** | {}/{} ({:.0} %) | {}/{} | {} | {} | {:.0} ms |\n",
                s.asked,
                s.right,
                s.asked,
                s.right_pct(),
                s.page_right,
                s.answerable,
                s.page_pct(),
                s.not_found_right,
                s.unanswerable,
                s.foreign,
                s.invented,
                s.voice_to_voice_p50_ms
            ));
        }
        out
    }
}

/// A spoken question, ready to stream.
struct Recording {
    question: usize,
    mode: Mode,
    samples: Vec<f32>,
}

/// A spoken dialogue, both questions, ready to stream.
struct DialogueRecording {
    dialogue: usize,
    mode: Mode,
    first: Vec<f32>,
    follow_up: Vec<f32>,
}

pub async fn run(args: EvalArgs) -> anyhow::Result<EvalReport> {
    let mut corpus = Corpus::load(&args.corpus)?;
    let every = args.every.max(1);
    corpus.questions =
        corpus.questions.into_iter().enumerate().filter(|(i, _)| i % every == 0).map(|(_, q)| q).collect();
    corpus.dialogues =
        corpus.dialogues.into_iter().enumerate().filter(|(i, _)| i % every == 0).map(|(_, d)| d).collect();
    if args.dialogues_only {
        if args.dialogues == DialogueModes::Skip {
            bail!("--dialogues-only with --dialogues skip asks nothing");
        }
        corpus.questions.clear();
    }
    if args.dialogues == DialogueModes::Skip {
        corpus.dialogues.clear();
    }

    let data = tempfile::Builder::new().prefix("fieldvox-eval-").tempdir()?;
    let server = start_server(&args, &corpus, data.path().to_path_buf()).await?;
    let result = ask_all(&args, &corpus, server.addr, &server.keys).await;
    // The server (and its index) must be gone before its data directory is removed:
    // sessions that were closing still hold the app for a moment after serving stops.
    let _ = server.stop.send(());
    let _ = server.task.await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::sync::Arc::strong_count(&server.app) > 1 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if std::sync::Arc::strong_count(&server.app) > 1 {
        let kept = data.keep();
        tracing::warn!(dir = %kept.display(), "the server still runs; its data directory is left in place");
    } else {
        drop(server.app);
        drop(data);
    }
    let (outcomes, dialogues) = result?;

    let mut summaries = BTreeMap::new();
    for profile in &args.profiles {
        for group in ["typed", "spoken", "spoken, noise"] {
            let of = outcomes.iter().filter(|o| &o.profile == profile && o.mode.group() == group);
            let s = Summary::of(of, &corpus);
            if s.asked > 0 {
                summaries.insert((profile.clone(), group.to_string()), s);
            }
        }
        for voice in &args.voices {
            let voice = voice.to_string();
            let of = outcomes.iter().filter(|o| {
                &o.profile == profile && o.mode.group() == "spoken" && o.mode.voice() == Some(voice.as_str())
            });
            let s = Summary::of(of, &corpus);
            if s.asked > 0 && args.voices.len() > 1 {
                summaries.insert((profile.clone(), format!("spoken by {voice}")), s);
            }
        }
    }
    let mut dialogue_summaries = BTreeMap::new();
    for profile in &args.profiles {
        for group in ["typed", "spoken"] {
            let of = dialogues.iter().filter(|o| &o.profile == profile && o.mode.group() == group);
            let s = DialogueSummary::of(of, &corpus);
            if s.dialogues > 0 {
                dialogue_summaries.insert((profile.clone(), group.to_string()), s);
            }
        }
        for voice in &args.voices {
            let voice = voice.to_string();
            let of = dialogues.iter().filter(|o| &o.profile == profile && o.mode.voice() == Some(voice.as_str()));
            let s = DialogueSummary::of(of, &corpus);
            if s.dialogues > 0 && args.voices.len() > 1 {
                dialogue_summaries.insert((profile.clone(), format!("spoken by {voice}")), s);
            }
        }
    }
    if let Some(path) = &args.json {
        // Every answer with its verdict: the questions, and the dialogues (both answers each).
        #[derive(Serialize)]
        struct Answers<'a> {
            questions: &'a [Outcome],
            dialogues: &'a [DialogueOutcome],
        }
        let answers = Answers { questions: &outcomes, dialogues: &dialogues };
        std::fs::write(path, serde_json::to_vec_pretty(&answers)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(EvalReport { outcomes, summaries, dialogues, dialogue_summaries })
}

/// Every question, typed and as recorded, to every profile; then every dialogue likewise.
async fn ask_all(
    args: &EvalArgs,
    corpus: &Corpus,
    addr: SocketAddr,
    keys: &TokenKeys,
) -> anyhow::Result<(Vec<Outcome>, Vec<DialogueOutcome>)> {
    let recordings = if args.typed_only { Vec::new() } else { record(args, corpus)? };
    let dialogue_recordings = if args.dialogues_spoken() { record_dialogues(args, corpus)? } else { Vec::new() };
    let typed_dialogues = if args.dialogues_typed() { corpus.dialogues.len() } else { 0 };
    eprintln!(
        "{} questions typed, {} recordings; {} dialogues typed, {} dialogue recordings",
        if args.spoken_only { 0 } else { corpus.questions.len() },
        recordings.len(),
        typed_dialogues,
        dialogue_recordings.len()
    );

    let mut outcomes = Vec::new();
    let mut dialogues = Vec::new();
    for profile in &args.profiles {
        for (i, q) in corpus.questions.iter().enumerate().filter(|_| !args.spoken_only) {
            let outcome = ask(addr, keys, profile, corpus, q, Mode::Typed, None).await?;
            progress(&outcome, i + 1, corpus.questions.len());
            outcomes.push(outcome);
        }
        for (n, r) in recordings.iter().enumerate() {
            let q = &corpus.questions[r.question];
            let outcome = ask(addr, keys, profile, corpus, q, r.mode.clone(), Some(&r.samples)).await?;
            progress(&outcome, n + 1, recordings.len());
            outcomes.push(outcome);
        }
        for (i, d) in corpus.dialogues.iter().enumerate().filter(|_| args.dialogues_typed()) {
            let outcome = ask_dialogue(addr, keys, profile, corpus, d, Mode::Typed, None).await?;
            progress_dialogue(&outcome, i + 1, typed_dialogues);
            dialogues.push(outcome);
        }
        for (n, r) in dialogue_recordings.iter().enumerate() {
            let d = &corpus.dialogues[r.dialogue];
            let speech = Some([r.first.as_slice(), r.follow_up.as_slice()]);
            let outcome = ask_dialogue(addr, keys, profile, corpus, d, r.mode.clone(), speech).await?;
            progress_dialogue(&outcome, n + 1, dialogue_recordings.len());
            dialogues.push(outcome);
        }
    }
    Ok((outcomes, dialogues))
}

fn progress(o: &Outcome, n: usize, of: usize) {
    let mark = if o.verdict.right { "ok " } else { "BAD" };
    let heard = o.transcript.as_deref().map(|t| format!(" heard {t:?}")).unwrap_or_default();
    eprintln!("[{n}/{of}] {mark} {} {} {:?}{heard} → {:?}", o.profile, o.question, o.mode, o.answer);
}

/// The follow-up's mark leads: it is what the dialogue measures.
fn progress_dialogue(o: &DialogueOutcome, n: usize, of: usize) {
    let mark = |a: &Outcome| if a.verdict.right { "ok" } else { "BAD" };
    let heard = |a: &Outcome| a.transcript.as_deref().map(|t| format!(" heard {t:?}")).unwrap_or_default();
    eprintln!(
        "[{n}/{of}] {:<3} {} {} {:?}: first {}{} → {:?}; follow-up {}{} → {:?}",
        mark(&o.follow_up),
        o.profile,
        o.dialogue,
        o.mode,
        mark(&o.first),
        heard(&o.first),
        o.first.answer,
        mark(&o.follow_up),
        heard(&o.follow_up),
        o.follow_up.answer
    );
}

/// The benchmark's server, and how to stop it.
struct Server {
    addr: SocketAddr,
    keys: TokenKeys,
    app: std::sync::Arc<App>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

/// A fieldvox server on an ephemeral loopback port with every manual ingested (as PDF).
async fn start_server(args: &EvalArgs, corpus: &Corpus, data: PathBuf) -> anyhow::Result<Server> {
    let mut config = Config::default();
    config.data.dir = data;
    config.server.shutdown_grace_ms = 1_000;
    config.pipelines.dir = args.pipelines.clone();
    // A loopback server of its own: a secret nobody else knows.
    config.auth.jwt_secret = Some(format!("eval-{}", uuid::Uuid::new_v4().simple()));
    // One user asks every question back to back: fair-use limits would only get in the way.
    config.limits = fieldvox::limits::LimitsConfig::off();
    let app = tokio::task::spawn_blocking(move || App::build(config)).await??;
    for m in &corpus.manuals {
        let req = NewManual {
            tenant: m.tenant.clone(),
            equipment: m.equipment.clone(),
            title: Some(m.title.clone()),
            filename: m.file.replace(".txt", ".pdf"),
            uploaded_by: "fieldvox-eval".into(),
        };
        app.kb
            .ingest(req, corpus::pdf(&m.pages), &Default::default(), None)
            .await
            .with_context(|| format!("ingesting {}", m.file))?;
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let keys = TokenKeys::new(app.config.auth.signing_secret());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = app.clone();
    let task = tokio::spawn(async move {
        let shutdown = async move {
            let _ = stopped.await;
        };
        if let Err(e) = fieldvox::http::serve(serving, listener, shutdown).await {
            tracing::error!(error = %e, "eval server stopped");
        }
    });
    Ok(Server { addr, keys, app, stop, task })
}

/// Every question in every voice, and the noisy ones again over noise (first voice).
fn record(args: &EvalArgs, corpus: &Corpus) -> anyhow::Result<Vec<Recording>> {
    let Some(first) = args.voices.first() else { bail!("--voices is empty") };
    let mut out = Vec::new();
    for (i, q) in corpus.questions.iter().enumerate() {
        for v in &args.voices {
            let samples = v.speak(&q.text)?;
            out.push(Recording { question: i, mode: Mode::Spoken { voice: v.to_string(), noisy: false }, samples });
        }
        if q.noisy {
            let mut samples = first.speak(&q.text)?;
            voice::add_noise(&mut samples, args.noise_dbfs, i as u64 + 1);
            out.push(Recording { question: i, mode: Mode::Spoken { voice: first.to_string(), noisy: true }, samples });
        }
    }
    Ok(out)
}

/// Every dialogue in every voice (no noise: the noisy variants are the questions').
fn record_dialogues(args: &EvalArgs, corpus: &Corpus) -> anyhow::Result<Vec<DialogueRecording>> {
    let mut out = Vec::new();
    for (i, d) in corpus.dialogues.iter().enumerate() {
        for v in &args.voices {
            out.push(DialogueRecording {
                dialogue: i,
                mode: Mode::Spoken { voice: v.to_string(), noisy: false },
                first: v.speak(&d.first.text)?,
                follow_up: v.speak(&d.follow_up.text)?,
            });
        }
    }
    Ok(out)
}

/// Longest wait for one answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(120);
/// Sample rate of the answer audio the eval asks for (PCM16 mono): its length is its duration.
const OUTPUT_RATE: u32 = 16_000;
/// Pause between an answer played out and the next question of the session: longer than the
/// server's echo tail (600 ms), so a spoken follow-up is neither echo nor barge-in.
const PAUSE_AFTER_ANSWER: Duration = Duration::from_millis(800);
/// Longest the eval waits for an answer to play out before the next question.
const MAX_PLAYOUT_WAIT: Duration = Duration::from_secs(60);

/// One question of a session: the question, and its recording when it is spoken.
struct Ask<'a> {
    question: &'a Question,
    speech: Option<&'a [f32]>,
}

/// Asks one question in a fresh session and scores the answer.
async fn ask(
    addr: SocketAddr,
    keys: &TokenKeys,
    profile: &str,
    corpus: &Corpus,
    q: &Question,
    mode: Mode,
    speech: Option<&[f32]>,
) -> anyhow::Result<Outcome> {
    let outcomes = converse(addr, keys, profile, corpus, &[Ask { question: q, speech }], &mode).await?;
    outcomes.into_iter().next().context("no answer collected")
}

/// Asks a dialogue in a fresh session, its first question then the follow-up (typed, or
/// spoken as these two recordings), and scores both answers.
async fn ask_dialogue(
    addr: SocketAddr,
    keys: &TokenKeys,
    profile: &str,
    corpus: &Corpus,
    d: &Dialogue,
    mode: Mode,
    speech: Option<[&[f32]; 2]>,
) -> anyhow::Result<DialogueOutcome> {
    let [first_q, follow_up_q] = d.questions();
    let [first_speech, follow_up_speech] = match speech {
        Some([first, follow_up]) => [Some(first), Some(follow_up)],
        None => [None, None],
    };
    let turns =
        [Ask { question: &first_q, speech: first_speech }, Ask { question: &follow_up_q, speech: follow_up_speech }];
    let outcomes = converse(addr, keys, profile, corpus, &turns, &mode).await?;
    let Ok([first, follow_up]) = <[Outcome; 2]>::try_from(outcomes) else {
        bail!("dialogue {}: not every question got an outcome", d.id);
    };
    Ok(DialogueOutcome { profile: profile.to_string(), dialogue: d.id.clone(), mode, first, follow_up })
}

/// When the next question of a session may be asked: once the answer's audio has played
/// out at the client (which, as the server assumes, plays it in real time from its first
/// frame) and a pause after it, as a technician who listens to the answer would. Asking
/// sooner would cut the answer short: the server would keep only the part "heard".
fn next_question_at(first_audio: Option<tokio::time::Instant>, audio_bytes: usize) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    let audio = Duration::from_secs_f64(audio_bytes as f64 / (2.0 * f64::from(OUTPUT_RATE)));
    let played_out = first_audio.map_or(now, |t| t + audio).clamp(now, now + MAX_PLAYOUT_WAIT);
    played_out + PAUSE_AFTER_ANSWER
}

/// Asks the questions one after another in one session, each once the previous answer has
/// played out (so a follow-up leans on what came before), and scores every answer.
async fn converse(
    addr: SocketAddr,
    keys: &TokenKeys,
    profile: &str,
    corpus: &Corpus,
    turns: &[Ask<'_>],
    mode: &Mode,
) -> anyhow::Result<Vec<Outcome>> {
    let Some(opening) = turns.first() else { return Ok(Vec::new()) };
    let mut req = format!("ws://{addr}/v1/realtime").into_client_request()?;
    let token = keys.mint("eval", &opening.question.tenant, Role::Technician, 3600);
    req.headers_mut().insert("authorization", format!("Bearer {token}").parse()?);
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.context("connecting to the eval server")?;
    let update = json!({"type": "session.update", "session": {
        "pipeline": profile, "input_audio_format": "pcm16", "input_sample_rate": voice::RATE,
        "output_audio_format": "pcm16", "output_sample_rate": OUTPUT_RATE}});
    ws.send(Message::text(update.to_string())).await?;
    let mut outcomes = Vec::with_capacity(turns.len());
    let mut next_at: Option<tokio::time::Instant> = None;
    for turn in turns {
        let q = turn.question;
        if let Some(at) = next_at.take() {
            tokio::time::sleep_until(at).await;
        }
        match turn.speech {
            None => {
                let ask = json!({"type": "conversation.item.create", "item": {"text": q.text}});
                ws.send(Message::text(ask.to_string())).await?;
            }
            Some(samples) => {
                // Speech then 1.5 s of silence, four times faster than real time: end of
                // speech is counted in samples, not wall time.
                let mut audio = samples.to_vec();
                audio.extend(std::iter::repeat_n(0.0, voice::RATE as usize * 3 / 2));
                let mut bytes = Vec::new();
                fieldvox::audio::pcm::encode_pcm16(&audio, &mut bytes);
                for frame in bytes.chunks(640) {
                    ws.send(Message::binary(frame.to_vec())).await?;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }
        let (mut transcript, mut answer, mut cited, mut v2v) = (None, String::new(), Vec::new(), None);
        let mut first_audio: Option<tokio::time::Instant> = None;
        let mut audio_bytes = 0usize;
        let deadline = tokio::time::Instant::now() + ANSWER_TIMEOUT;
        loop {
            let Ok(Some(msg)) = tokio::time::timeout_at(deadline, ws.next()).await else {
                bail!("no answer to {} ({profile}, {mode:?}) within {ANSWER_TIMEOUT:?}", q.id);
            };
            let text = match msg? {
                Message::Text(text) => text,
                Message::Binary(pcm) => {
                    // Answer audio: timed, so the next question waits until it has played out.
                    if first_audio.is_none() {
                        first_audio = Some(tokio::time::Instant::now());
                    }
                    audio_bytes += pcm.len();
                    continue;
                }
                _ => continue,
            };
            let event: Value = serde_json::from_str(&text)?;
            match event["type"].as_str().unwrap_or_default() {
                "conversation.item.input_audio_transcription.completed" => {
                    let heard = event["transcript"].as_str().unwrap_or_default().to_string();
                    let empty = heard.trim().is_empty();
                    transcript = Some(heard);
                    if empty {
                        break; // nothing heard: no response follows
                    }
                }
                "response.citations" => {
                    cited = event["citations"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|c| Cited {
                            title: c["title"].as_str().unwrap_or_default().into(),
                            page: c["page"].as_u64().unwrap_or(0) as u32,
                        })
                        .collect();
                }
                "response.done" => {
                    answer = event["text"].as_str().unwrap_or_default().to_string();
                    v2v = event["timings"]["voice_to_voice_ms"].as_f64();
                    break;
                }
                "error" => tracing::warn!(question = %q.id, error = %event["error"], "server error"),
                _ => {}
            }
        }
        next_at = Some(next_question_at(first_audio, audio_bytes));
        let verdict = judge(corpus, q, &answer, &cited);
        outcomes.push(Outcome {
            profile: profile.to_string(),
            question: q.id.clone(),
            mode: mode.clone(),
            transcript,
            answer,
            cited: cited.into_iter().map(|c| (c.title, c.page)).collect(),
            verdict,
            voice_to_voice_ms: v2v,
        });
    }
    let _ = ws.close(None).await;
    Ok(outcomes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dialogues_follow_the_ways_of_asking_unless_told() {
        let args = |extra: &[&str]| {
            let mut argv = vec!["fieldvox-eval"];
            argv.extend_from_slice(extra);
            EvalArgs::parse_from(argv)
        };
        let all = args(&[]);
        assert_eq!(all.dialogues, DialogueModes::All);
        assert!(all.dialogues_typed() && all.dialogues_spoken());
        let typed_only = args(&["--typed-only"]);
        assert!(typed_only.dialogues_typed() && !typed_only.dialogues_spoken());
        let spoken_only = args(&["--spoken-only"]);
        assert!(!spoken_only.dialogues_typed() && spoken_only.dialogues_spoken());
        let typed = args(&["--spoken-only", "--dialogues", "typed"]);
        assert!(typed.dialogues_typed() && !typed.dialogues_spoken());
        let skip = args(&["--dialogues", "skip"]);
        assert!(!skip.dialogues_typed() && !skip.dialogues_spoken());
        assert!(args(&["--dialogues-only"]).dialogues_only);
    }

    fn outcome(question: String, right: bool) -> Outcome {
        Outcome {
            profile: "field-assistant".into(),
            question,
            mode: Mode::Typed,
            transcript: None,
            answer: String::new(),
            cited: Vec::new(),
            verdict: Verdict { right, page_right: right, ..Verdict::default() },
            voice_to_voice_ms: Some(500.0),
        }
    }

    #[test]
    fn follow_ups_are_summarised_and_tabled() {
        let corpus = Corpus::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("eval")).unwrap();
        let dialogue = |id: &str, first: bool, follow_up: bool| DialogueOutcome {
            profile: "field-assistant".into(),
            dialogue: id.into(),
            mode: Mode::Typed,
            first: outcome(format!("{id}/first"), first),
            follow_up: outcome(format!("{id}/follow-up"), follow_up),
        };
        let outcomes = [
            dialogue("acme-rtu40-filter-part", true, true),
            // Its follow-up has no answer in the tenant's manuals: no page to get right.
            dialogue("cobalt-rtu40-e58", true, true),
            dialogue("borealis-rtu40-filter-part", false, false),
        ];
        let s = DialogueSummary::of(&outcomes, &corpus);
        assert_eq!((s.dialogues, s.first_right, s.follow_up_right), (3, 2, 2));
        assert_eq!((s.follow_up_answerable, s.follow_up_page_right), (2, 1));
        assert_eq!((s.foreign, s.invented), (0, 0));
        let report = EvalReport {
            outcomes: Vec::new(),
            summaries: BTreeMap::new(),
            dialogues: outcomes.to_vec(),
            dialogue_summaries: BTreeMap::from([(("field-assistant".to_string(), "typed".to_string()), s)]),
        };
        let table = report.table();
        assert!(table.starts_with("Follow-up questions"), "no question table without questions:\n{table}");
        assert!(
            table.contains("| `field-assistant` typed | 3 | **2/3 (67 %)** | 1/2 (50 %) | 2/3 | 0 | 0 | 500 ms |"),
            "{table}"
        );
    }

    #[test]
    fn the_next_question_waits_for_the_answer_to_play_out() {
        let now = tokio::time::Instant::now();
        let second = Duration::from_secs(1);
        let no_audio = next_question_at(None, 0);
        assert!(no_audio >= now + PAUSE_AFTER_ANSWER && no_audio < now + PAUSE_AFTER_ANSWER + second);
        // 3 s of 16 kHz PCM16, its first frame received now.
        let three_seconds = next_question_at(Some(now), 3 * 2 * OUTPUT_RATE as usize);
        let expected = now + 3 * second + PAUSE_AFTER_ANSWER;
        assert!(three_seconds >= expected && three_seconds < expected + second);
        let endless = next_question_at(Some(now), 1_000 * 2 * OUTPUT_RATE as usize);
        assert!(endless <= tokio::time::Instant::now() + MAX_PLAYOUT_WAIT + PAUSE_AFTER_ANSWER);
    }
}
