//! `fieldvox-eval`: the answer-quality benchmark. Ingests several tenants' manuals (as
//! PDFs) into a real server with the real models, asks every question typed and spoken
//! (by voices that are not the server's, some over background noise), and scores each
//! answer: the fact, the page cited, no fact of another tenant, nothing invented.

pub mod corpus;
pub mod score;
pub mod voice;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use fieldvox::app::App;
use fieldvox::auth::{Role, TokenKeys};
use fieldvox::config::Config;
use fieldvox::rag::ingest::IngestRequest;
use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::report::Percentiles;
use corpus::{Corpus, Question};
use score::{Cited, Verdict, judge};
use voice::Voice;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "fieldvox-eval",
    about = "Answer-quality benchmark: asks every question of the corpus typed and spoken, \
             against a real fieldvox server with the real models, and scores the answers"
)]
pub struct EvalArgs {
    /// Folder with corpus.toml, questions.toml and manuals/.
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
    /// Ask every Nth question only (a quick subset).
    #[arg(long, default_value_t = 1)]
    pub every: usize,
    /// Write every answer with its verdict as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
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

pub struct EvalReport {
    pub outcomes: Vec<Outcome>,
    /// (profile, mode group) → summary.
    pub summaries: BTreeMap<(String, String), Summary>,
}

impl EvalReport {
    /// A Markdown table: one row per profile and way of asking.
    pub fn table(&self) -> String {
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

pub async fn run(args: EvalArgs) -> anyhow::Result<EvalReport> {
    let mut corpus = Corpus::load(&args.corpus)?;
    let every = args.every.max(1);
    corpus.questions =
        corpus.questions.into_iter().enumerate().filter(|(i, _)| i % every == 0).map(|(_, q)| q).collect();

    let data = tempfile::Builder::new().prefix("fieldvox-eval-").tempdir()?;
    let server = start_server(&args, &corpus, data.path().to_path_buf()).await?;
    let result = ask_all(&args, &corpus, server.addr, &server.keys).await;
    // The server (and its index) must be gone before its data directory is removed.
    let _ = server.stop.send(());
    let _ = server.task.await;
    drop(data);
    let outcomes = result?;

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
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&outcomes)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(EvalReport { outcomes, summaries })
}

/// Every question, typed and as recorded, to every profile.
async fn ask_all(args: &EvalArgs, corpus: &Corpus, addr: SocketAddr, keys: &TokenKeys) -> anyhow::Result<Vec<Outcome>> {
    let recordings = if args.typed_only { Vec::new() } else { record(args, corpus)? };
    eprintln!(
        "{} questions typed, {} recordings",
        if args.spoken_only { 0 } else { corpus.questions.len() },
        recordings.len()
    );

    let mut outcomes = Vec::new();
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
    }
    Ok(outcomes)
}

fn progress(o: &Outcome, n: usize, of: usize) {
    let mark = if o.verdict.right { "ok " } else { "BAD" };
    let heard = o.transcript.as_deref().map(|t| format!(" heard {t:?}")).unwrap_or_default();
    eprintln!("[{n}/{of}] {mark} {} {} {:?}{heard} → {:?}", o.profile, o.question, o.mode, o.answer);
}

/// The benchmark's server, and how to stop it.
struct Server {
    addr: SocketAddr,
    keys: TokenKeys,
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
    let app = tokio::task::spawn_blocking(move || App::build(config)).await??;
    for m in &corpus.manuals {
        let req = IngestRequest {
            tenant: m.tenant.clone(),
            equipment: m.equipment.clone(),
            title: Some(m.title.clone()),
            filename: m.file.replace(".txt", ".pdf"),
            bytes: corpus::pdf(&m.pages),
        };
        app.kb.ingest(req, None).await.with_context(|| format!("ingesting {}", m.file))?;
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let keys = TokenKeys::new(app.config.auth.signing_secret());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let shutdown = async move {
            let _ = stopped.await;
        };
        if let Err(e) = fieldvox::http::serve(app, listener, shutdown).await {
            tracing::error!(error = %e, "eval server stopped");
        }
    });
    Ok(Server { addr, keys, stop, task })
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

/// Longest wait for one answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(120);

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
    let mut req = format!("ws://{addr}/v1/realtime").into_client_request()?;
    let token = keys.mint("eval", &q.tenant, Role::Technician, 3600);
    req.headers_mut().insert("authorization", format!("Bearer {token}").parse()?);
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.context("connecting to the eval server")?;
    let update = json!({"type": "session.update", "session": {
        "pipeline": profile, "input_audio_format": "pcm16", "input_sample_rate": voice::RATE,
        "output_audio_format": "pcm16", "output_sample_rate": 16000}});
    ws.send(Message::text(update.to_string())).await?;
    match speech {
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
    let deadline = tokio::time::Instant::now() + ANSWER_TIMEOUT;
    loop {
        let Ok(Some(msg)) = tokio::time::timeout_at(deadline, ws.next()).await else {
            bail!("no answer to {} ({profile}, {mode:?}) within {ANSWER_TIMEOUT:?}", q.id);
        };
        let Message::Text(text) = msg? else { continue };
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
    let _ = ws.close(None).await;
    let verdict = judge(corpus, q, &answer, &cited);
    Ok(Outcome {
        profile: profile.to_string(),
        question: q.id.clone(),
        mode,
        transcript,
        answer,
        cited: cited.into_iter().map(|c| (c.title, c.page)).collect(),
        verdict,
        voice_to_voice_ms: v2v,
    })
}
