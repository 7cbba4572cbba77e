//! One turn: question (speech or text) → transcript → retrieval → streamed answer →
//! sentence-by-sentence speech, with per-stage timings. Speech for the first sentence
//! starts while the answerer is still writing the rest.

use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use tokio::sync::mpsc;

use super::Pipeline;
use super::cancel::Cancel;
use super::followup;
use super::profile::{Profile, Rewrite};
use super::providers::{Speech, StageError, TtsProvider};
use crate::audio::opus::OpusPackets;
use crate::audio::pcm::{encode_pcm16, rms_dbfs};
use crate::audio::resample::resample;
use crate::error::ErrorCode;
use crate::llm::AnswerRequest;
use crate::llm::extractive;
use crate::llm::grounding::{Grounding, Rejection};
use crate::llm::prompt::{source_label, source_sentence};
use crate::metrics::{Metrics, Stage};
use crate::models::ModelError;
use crate::rag::evidence::Evidence;
use crate::rag::retrieve::{Passage, RetrievalTimings};
use crate::rag::{KnowledgeBase, RagError};
use crate::session::dialect::Outbox;
use crate::session::history::Exchange;
use crate::session::playback::Playback;
use crate::session::protocol::{
    AudioFormat, Citation, ErrorBody, ItemInfo, ItemRole, ResponseStatus, ServerEvent, Timings, answer_item_id,
};
use crate::store::TurnEntry;
use crate::voice::sentences::SentenceSplitter;
use crate::workers::{PoolError, fair};

/// Output audio is sent in frames of this many milliseconds.
const AUDIO_FRAME_MS: usize = 100;

pub enum Question {
    /// Speech being transcribed on a task of its own: started in the user's pause, or
    /// when the utterance ended. A cancelled turn aborts it.
    Transcribing(SttTask),
    Text(String),
}

/// What a turn has established, for the session's history: written as the turn goes,
/// read by the session when the turn ends or is cut short.
#[derive(Debug, Default)]
pub struct TurnRecord {
    /// The question as heard, and as retrieval saw it.
    pub question: Mutex<Option<(String, String)>>,
    /// Everything the answer has said so far.
    pub said: Mutex<String>,
    /// The sources the answer cites, once known.
    pub citations: Mutex<Vec<Citation>>,
    /// `response.created` was sent (so a `response.done` is owed).
    created: std::sync::atomic::AtomicBool,
}

impl TurnRecord {
    pub fn created(&self) -> bool {
        self.created.load(std::sync::atomic::Ordering::Acquire)
    }

    fn heard(&self, question: &str, standalone: &str) {
        if let Ok(mut q) = self.question.lock() {
            *q = Some((question.to_string(), standalone.to_string()));
        }
    }

    fn said(&self, text: &str) {
        if let Ok(mut said) = self.said.lock() {
            said.push_str(text);
        }
    }
}

/// A transcription running on its own task.
pub type SttTask = tokio::task::JoinHandle<Result<String, StageError>>;

/// Everything a turn needs from its session.
pub struct TurnContext {
    pub tenant: String,
    /// Subject of the session's token, and the session: the turn is recorded under them.
    pub user: String,
    pub session: uuid::Uuid,
    /// Seconds of speech the question was (0 for a typed one).
    pub audio_in_secs: f64,
    pub equipment: Option<String>,
    pub pipeline: Arc<Pipeline>,
    pub kb: KnowledgeBase,
    pub metrics: Metrics,
    pub out: Outbox,
    /// The user item this turn answers (its transcript is reported under this id).
    pub item_id: String,
    pub output_rate: u32,
    /// PCM16 frames of 100 ms, or Opus packets of 20 ms.
    pub output_format: AudioFormat,
    /// Set by the session on barge-in, `response.cancel` or when it ends.
    pub cancel: Cancel,
    /// Tags this turn's audio so the writer can drop it once cancelled.
    pub audio_seq: u64,
    pub playback: Arc<Playback>,
    pub response_id: String,
    /// The conversation before this turn, oldest first.
    pub history: Vec<Exchange>,
    pub record: Arc<TurnRecord>,
}

fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

impl TurnContext {
    async fn send(&self, event: ServerEvent) {
        self.out.event(&event).await;
    }

    fn cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }
}

/// Runs one turn to its `response.done` (or to nothing, if the audio held no words).
/// `ended_at` is when the user stopped speaking (or the typed question arrived).
pub async fn run(ctx: TurnContext, question: Question, ended_at: Instant) {
    let _in_flight = ctx.metrics.turn_in_flight();
    let mut timings = Timings::default();
    let question = match question {
        Question::Text(text) => text,
        Question::Transcribing(task) => {
            // A cancelled turn stops the transcription too, not just waiting for it.
            let abort = task.abort_handle();
            let done = async move { task.await.unwrap_or(Err(StageError::Pool(PoolError::Stopped("stt")))) };
            let heard = transcript(&ctx, &mut timings, done).await;
            if ctx.cancelled() {
                abort.abort();
            }
            match heard {
                Some(t) => t,
                None => return,
            }
        }
    };
    if ctx.cancelled() {
        return;
    }
    let response_id = ctx.response_id.clone();
    ctx.send(ServerEvent::ResponseCreated { response_id: response_id.clone() }).await;
    ctx.record.created.store(true, std::sync::atomic::Ordering::Release);
    let item = ItemInfo {
        id: answer_item_id(&response_id),
        role: ItemRole::Assistant,
        response_id: Some(response_id.clone()),
    };
    ctx.send(ServerEvent::ItemCreated { item }).await;

    let outcome = respond(&ctx, &question, ended_at, &mut timings).await;
    timings.total_ms = ms_since(ended_at);
    let Outcome { status, text, error } = outcome;
    ctx.metrics.turn_finished(status_name(status));
    tracing::info!(
        %response_id, status = ?status, error = ?error.as_ref().map(|e| e.code.as_str()), stt_ms = ?timings.stt_ms,
        retrieval_ms = ?timings.retrieval_ms, llm_first_token_ms = ?timings.llm_first_token_ms,
        tts_first_audio_ms = ?timings.tts_first_audio_ms, voice_to_voice_ms = ?timings.voice_to_voice_ms, "turn done"
    );
    let error_code = error.as_ref().map(|e| e.code.as_str().to_string());
    record(&ctx, status, error_code, &question, &text, &timings);
    ctx.send(ServerEvent::ResponseDone { response_id, status, text, timings, error }).await;
}

/// Writes the turn to the metadata store for review and usage, off the turn's path: a
/// store that is slow or down never delays the answer (it is logged instead).
fn record(
    ctx: &TurnContext,
    status: ResponseStatus,
    error: Option<String>,
    transcript: &str,
    answer: &str,
    timings: &Timings,
) {
    let at = crate::auth::now_secs();
    let entry = TurnEntry {
        id: uuid::Uuid::new_v4(),
        tenant: ctx.tenant.clone(),
        user: ctx.user.clone(),
        session: ctx.session,
        at,
        day: TurnEntry::day_of(at),
        status: status_name(status).to_string(),
        error,
        transcript: transcript.to_string(),
        answer: answer.to_string(),
        citations: ctx.record.citations.lock().map(|c| c.clone()).unwrap_or_default(),
        timings: timings.clone(),
        audio_in_secs: ctx.audio_in_secs,
        audio_out_secs: ctx.playback.sent_us() as f64 / 1e6,
    };
    let store = ctx.kb.store.clone();
    fair::spawn(async move {
        if let Err(e) = store.record_turn(&entry).await {
            tracing::warn!(error = %e, turn = %entry.id, "turn not recorded");
        }
    });
}

fn status_name(status: ResponseStatus) -> &'static str {
    match status {
        ResponseStatus::Completed => "completed",
        ResponseStatus::Cancelled => "cancelled",
        ResponseStatus::Failed => "failed",
    }
}

/// How a response ended: exactly one per `response.created`.
struct Outcome {
    status: ResponseStatus,
    text: String,
    error: Option<ErrorBody>,
}

impl Outcome {
    fn cancelled(text: String) -> Self {
        Outcome { status: ResponseStatus::Cancelled, text, error: None }
    }

    fn failed(text: String, error: ErrorBody) -> Self {
        Outcome { status: ResponseStatus::Failed, text, error: Some(error) }
    }
}

/// From the question to the last audio frame: standalone question, retrieval, evidence,
/// the answer spoken, citations.
async fn respond(ctx: &TurnContext, question: &str, ended_at: Instant, timings: &mut Timings) -> Outcome {
    let profile = &ctx.pipeline.profile;
    let Some(standalone) = ctx.cancel.unless_cancelled(standalone_question(ctx, question)).await else {
        return Outcome::cancelled(String::new());
    };
    if standalone != question {
        tracing::info!(%question, %standalone, "follow-up question rewritten for retrieval");
    }
    ctx.record.heard(question, &standalone);
    let found = search(&ctx.kb, &ctx.tenant, ctx.equipment.as_deref(), &standalone, profile);
    let Some(found) = ctx.cancel.unless_cancelled(found).await else {
        return Outcome::cancelled(String::new());
    };
    let (passages, evidence) = match found {
        Ok((passages, evidence, rt)) => {
            timings.embed_ms = Some(rt.embed_ms);
            timings.retrieval_ms = Some(rt.search_ms);
            ctx.metrics.stage(Stage::Embed, rt.embed_ms);
            ctx.metrics.stage(Stage::Retrieval, rt.search_ms);
            (passages, evidence)
        }
        Err(e) => {
            tracing::warn!(error = %e, "retrieval failed");
            let error = fail(ctx, e.code(), e.retry_after(), "searching the manuals failed").await;
            let text = apologise(ctx, ended_at, timings).await;
            return Outcome::failed(text, error);
        }
    };
    if let Some(best) = evidence.first() {
        tracing::debug!(score = best.score, sentence = %best.sentence, "best evidence");
    }
    // The model answers the standalone question: a follow-up's "its" is resolved by the
    // topic carried into it, not left to the smallest model to read out of the history.
    let req = answer_request(profile, &standalone, &passages, evidence, &ctx.history);
    let (outcome, cited) = answer(ctx, req, ended_at, timings).await;
    let citations = cited
        .iter()
        .filter_map(|&i| passages.get(i))
        .map(|p| Citation { manual_id: p.manual_id.to_string(), title: p.title.clone(), page: p.page, score: p.score })
        .collect::<Vec<_>>();
    if let Ok(mut recorded) = ctx.record.citations.lock() {
        recorded.clone_from(&citations);
    }
    ctx.send(ServerEvent::Citations { response_id: ctx.response_id.clone(), citations }).await;
    outcome
}

/// Longest a language model may take to rewrite a follow-up before the terms are used.
const REWRITE_TIMEOUT: Duration = Duration::from_secs(3);
const REWRITE_TOKENS: usize = 48;

/// The question as retrieval should see it: a follow-up made to stand alone.
async fn standalone_question(ctx: &TurnContext, question: &str) -> String {
    if let Some(standalone) = standalone_by_terms(&ctx.pipeline, question, &ctx.history) {
        return standalone;
    }
    let history: Vec<&Exchange> = ctx.history.iter().collect();
    let messages = followup::rewrite_messages(question, &history);
    let rewrite = ctx.pipeline.llm.complete(messages, REWRITE_TOKENS, ctx.cancel.flag());
    match tokio::time::timeout(REWRITE_TIMEOUT, rewrite).await {
        Ok(Ok(text)) => match followup::accept_rewrite(&text) {
            Some(rewritten) => return rewritten,
            None => tracing::info!(%text, "language model rewrite not usable; carrying terms"),
        },
        Ok(Err(e)) => tracing::warn!(error = %e, "follow-up rewrite failed; carrying terms"),
        Err(_) => tracing::warn!("follow-up rewrite timed out; carrying terms"),
    }
    followup::by_terms(question, ctx.history.last())
}

/// The standalone question when no language model is asked for it: the question itself,
/// or a follow-up with the previous question's terms carried. `None` when the profile has
/// its model rewrite this follow-up.
pub(super) fn standalone_by_terms(pipeline: &Pipeline, question: &str, history: &[Exchange]) -> Option<String> {
    let conversation = &pipeline.profile.conversation;
    let Some(previous) = history.last().filter(|_| conversation.rewrite != Rewrite::Off) else {
        return Some(question.to_string());
    };
    let model_rewrites = conversation.rewrite == Rewrite::Llm
        && pipeline.llm.is_generative()
        && followup::is_follow_up(question, previous);
    (!model_rewrites).then(|| followup::by_terms(question, Some(previous)))
}

/// The tenant's passages for a standalone question and their evidence sentences, best first.
pub(super) async fn search(
    kb: &KnowledgeBase,
    tenant: &str,
    equipment: Option<&str>,
    standalone: &str,
    profile: &Profile,
) -> Result<(Vec<Passage>, Vec<Evidence>, RetrievalTimings), RagError> {
    let (passages, timings) = kb.retrieve(tenant, equipment, standalone, &profile.retrieval).await?;
    let evidence = kb.evidence(&profile.evidence, tenant, standalone, &passages).await?;
    Ok((passages, evidence, timings))
}

/// What a turn would find for a typed question: its passages and the sentences it would
/// answer from (`POST /v1/search`).
pub async fn lookup(
    kb: &KnowledgeBase,
    tenant: &str,
    equipment: Option<&str>,
    question: &str,
    pipeline: &Pipeline,
) -> Result<(Vec<Passage>, Vec<Evidence>, RetrievalTimings), RagError> {
    let question = as_printed(kb, tenant, question.to_string()).await;
    search(kb, tenant, equipment, &question, &pipeline.profile).await
}

/// A transcript with the codes the recogniser misheard ("AHX220") written as the
/// tenant's manuals print them ("HX-220"); as heard if the vocabulary is unavailable.
pub(super) async fn as_printed(kb: &KnowledgeBase, tenant: &str, transcript: String) -> String {
    match kb.vocabulary(tenant).await {
        Ok(vocabulary) => vocabulary.correct(&transcript),
        Err(e) => {
            tracing::warn!(error = %e, "vocabulary unavailable; transcript left as heard");
            transcript
        }
    }
}

/// Characters of the tenant's codes given to speech recognition as context.
const HINT_CHARS: usize = 300;

/// The words to prime speech recognition with: the tenant's codes, when the profile asks.
pub async fn transcription_hint(kb: &KnowledgeBase, tenant: &str, pipeline: &Pipeline) -> String {
    if !pipeline.profile.stt.vocabulary_hint {
        return String::new();
    }
    match kb.vocabulary(tenant).await {
        Ok(v) => v.prompt(HINT_CHARS),
        Err(e) => {
            tracing::warn!(error = %e, "vocabulary unavailable; transcribing without a hint");
            String::new()
        }
    }
}

/// Waits for the transcription and reports it; `None` when there is nothing to answer.
/// For a speculative transcription the time measured is only what the pause did not hide,
/// including the search it started on what it heard (`speculation::Prepare`).
async fn transcript(
    ctx: &TurnContext,
    timings: &mut Timings,
    transcription: impl Future<Output = Result<String, StageError>>,
) -> Option<String> {
    let started = Instant::now();
    let result = ctx.cancel.unless_cancelled(transcription).await?;
    let stt_ms = ms_since(started);
    timings.stt_ms = Some(stt_ms);
    ctx.metrics.stage(Stage::Stt, stt_ms);
    let transcript = match result {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(error = %e, "transcription failed");
            let error = fail(ctx, e.code(), e.retry_after(), "speech recognition failed").await;
            ctx.metrics.turn_finished("failed");
            record(ctx, ResponseStatus::Failed, Some(error.code.as_str().to_string()), "", "", timings);
            return None;
        }
    };
    let transcript = as_printed(&ctx.kb, &ctx.tenant, transcript).await;
    let item_id = ctx.item_id.clone();
    ctx.send(ServerEvent::TranscriptionCompleted { item_id, transcript: transcript.clone() }).await;
    if transcript.trim().is_empty() {
        tracing::debug!("utterance had no words; no response");
        ctx.metrics.turn_finished("no_speech");
        return None;
    }
    Some(transcript)
}

/// Reports a failure as an `error` event; returns it for the `response.done` that follows.
async fn fail(ctx: &TurnContext, code: ErrorCode, retry_after: Option<Duration>, message: &str) -> ErrorBody {
    ctx.metrics.error(code);
    let error = ErrorBody::new(code, message).retry_after(retry_after);
    ctx.send(ServerEvent::Error { error: error.clone() }).await;
    error
}

/// How an answer's text came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerKind {
    /// The best evidence sentence, read out.
    Extractive,
    /// Written by a language model, every sentence checked against the evidence.
    Generated,
    /// The model's first sentence failed the grounding check (or the model failed): the
    /// best evidence sentence was read out instead.
    Fallback,
    /// Nothing in the tenant's manuals answers the question.
    NotFound,
}

impl AnswerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AnswerKind::Extractive => "extractive",
            AnswerKind::Generated => "generated",
            AnswerKind::Fallback => "fallback",
            AnswerKind::NotFound => "not_found",
        }
    }
}

/// What the answerer gets: the evidence above the profile's calibrated cut (none: nothing
/// in the manuals answers the question), at most its number of sentences. One definition
/// for the turn and for reading its prompt ahead.
pub(super) fn answer_request(
    profile: &Profile,
    question: &str,
    passages: &[Passage],
    mut evidence: Vec<Evidence>,
    history: &[Exchange],
) -> AnswerRequest {
    evidence.retain(|e| e.score >= profile.evidence.min_score);
    evidence.truncate(profile.evidence.max_sentences);
    AnswerRequest {
        system_prompt: profile.llm.system_prompt.clone(),
        question: question.to_string(),
        passages: passages.to_vec(),
        evidence,
        max_tokens: profile.llm.max_tokens,
        history: history.iter().map(|e| (e.question.clone(), e.answer.clone())).collect(),
    }
}

/// Streams the answer's text and speech; returns how it ended and the passages it cites
/// (indexes into `req.passages`, the answer's own source first).
async fn answer(
    ctx: &TurnContext,
    req: AnswerRequest,
    ended_at: Instant,
    timings: &mut Timings,
) -> (Outcome, Vec<usize>) {
    let profile = &ctx.pipeline.profile;
    let llm_started = Instant::now();
    let (sentence_tx, sentence_rx) = mpsc::channel::<String>(16);
    let speaker = fair::spawn(speak(SpeakContext::of(ctx), sentence_rx));
    let mut said = Said::new(ctx, &sentence_tx);

    let mut llm_error = None;
    let kind = if req.evidence.is_empty() {
        // Nothing to ground an answer in: say so rather than let a model guess.
        said.say(&profile.llm.no_answer).await;
        AnswerKind::NotFound
    } else if !ctx.pipeline.llm.is_generative() {
        if let Some(text) = extractive::answer(&req) {
            said.say(&text).await;
        }
        AnswerKind::Extractive
    } else {
        let (kind, error) = generate(ctx, &req, &mut said).await;
        llm_error = error;
        kind
    };
    if let Some(ms) = said.first {
        timings.llm_first_token_ms = Some((ms - llm_started).as_secs_f64() * 1000.0);
        ctx.metrics.stage(Stage::LlmFirstToken, timings.llm_first_token_ms.unwrap_or_default());
    }
    said.finish().await;
    let text = std::mem::take(&mut said.text);
    drop(said);
    drop(sentence_tx);
    ctx.metrics.answer(kind.as_str());
    let cited = match kind {
        AnswerKind::NotFound => Vec::new(),
        AnswerKind::Extractive | AnswerKind::Fallback => {
            req.evidence.first().map(|e| vec![e.passage]).unwrap_or_default()
        }
        AnswerKind::Generated => {
            let mut cited: Vec<usize> = Vec::new();
            for e in &req.evidence {
                if !cited.contains(&e.passage) {
                    cited.push(e.passage);
                }
            }
            cited
        }
    };

    let spoken = speaker.await;
    if ctx.cancelled() {
        return (Outcome::cancelled(text), cited);
    }
    match spoken {
        Ok(Ok(Some(first_audio))) => {
            let tts_ms = (first_audio - llm_started).as_secs_f64() * 1000.0;
            let v2v = (first_audio - ended_at).as_secs_f64() * 1000.0;
            timings.tts_first_audio_ms = Some(tts_ms);
            timings.voice_to_voice_ms = Some(v2v);
            ctx.metrics.stage(Stage::TtsFirstAudio, tts_ms);
            ctx.metrics.stage(Stage::VoiceToVoice, v2v);
        }
        Ok(Ok(None)) => {}
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "speech synthesis failed");
            let error = fail(ctx, e.code(), e.retry_after(), "speech synthesis failed").await;
            return (Outcome::failed(text, error), cited);
        }
        Err(e) => {
            tracing::error!(error = %e, "speech task stopped");
            let error = fail(ctx, ErrorCode::Internal, None, "speech synthesis stopped").await;
            return (Outcome::failed(text, error), cited);
        }
    }
    if let Some(e) = llm_error.filter(|_| text.is_empty()) {
        let error = fail(ctx, e.code(), e.retry_after(), "answer generation failed").await;
        return (Outcome::failed(text, error), cited);
    }
    (Outcome { status: ResponseStatus::Completed, text, error: None }, cited)
}

/// What the answer has said so far: each sentence goes out as a text delta and to speech.
struct Said<'a> {
    ctx: &'a TurnContext,
    response_id: &'a str,
    sentences: &'a mpsc::Sender<String>,
    text: String,
    /// When the first sentence was ready.
    first: Option<Instant>,
    /// Cuts what is said into pieces for speech: the first may end at a clause, so the
    /// first audio comes before a long sentence is synthesized whole.
    speech: SentenceSplitter,
}

impl<'a> Said<'a> {
    fn new(ctx: &'a TurnContext, sentences: &'a mpsc::Sender<String>) -> Self {
        Self {
            ctx,
            response_id: &ctx.response_id,
            sentences,
            text: String::new(),
            first: None,
            speech: SentenceSplitter::default(),
        }
    }

    async fn say(&mut self, sentence: &str) {
        if self.ctx.cancelled() || sentence.trim().is_empty() {
            return;
        }
        self.first.get_or_insert_with(Instant::now);
        let delta = if self.text.is_empty() { sentence.to_string() } else { format!(" {sentence}") };
        self.text.push_str(&delta);
        self.ctx.record.said(&delta);
        self.ctx.send(ServerEvent::TextDelta { response_id: self.response_id.to_string(), delta }).await;
        for piece in self.speech.push(&format!("{sentence} ")) {
            let _ = self.sentences.send(piece).await;
        }
    }

    /// Sends what is left to speech.
    async fn finish(&mut self) {
        if let Some(rest) = self.speech.finish() {
            let _ = self.sentences.send(rest).await;
        }
    }
}

/// Logs a generated sentence the grounding check stops.
fn logged(check: Result<(), Rejection>) -> Result<(), Rejection> {
    if let Err(why) = &check {
        tracing::info!(reason = ?why, "generated sentence not grounded; not spoken");
    }
    check
}

/// Runs the language model and speaks what passes the grounding check. Returns how the
/// answer was made and the model's own failure, if it failed.
async fn generate(ctx: &TurnContext, req: &AnswerRequest, said: &mut Said<'_>) -> (AnswerKind, Option<StageError>) {
    let (text_tx, mut text_rx) = mpsc::channel::<String>(64);
    let producer = {
        let llm = ctx.pipeline.llm.clone();
        let cancel = ctx.cancel.flag();
        let req = req.clone();
        fair::spawn(async move { llm.stream(req, text_tx, cancel).await })
    };
    let mut sources: Vec<String> = req.evidence.iter().map(|e| e.sentence.clone()).collect();
    sources.extend(req.passages.iter().map(source_label));
    let mut grounding = Grounding::new(sources);
    let mut splitter = SentenceSplitter::default();
    let mut stopped = None;
    'stream: while let Some(piece) = text_rx.recv().await {
        if ctx.cancelled() {
            break;
        }
        for sentence in splitter.push(&piece) {
            if let Err(why) = logged(grounding.check(&sentence)) {
                stopped = Some(why);
                break 'stream;
            }
            said.say(&sentence).await;
        }
    }
    // Stop the model: dropping the receiver ends its stream at the next token.
    drop(text_rx);
    if stopped.is_none()
        && let Some(rest) = splitter.finish()
    {
        match logged(grounding.check_rest(&rest)) {
            Ok(()) => said.say(&rest).await,
            Err(why) => stopped = Some(why),
        }
    }
    let llm_error = match producer.await {
        Ok(Ok(())) => None,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "answer generation failed");
            Some(StageError::Llm(e))
        }
        Err(e) => {
            tracing::error!(error = %e, "answer task stopped");
            Some(StageError::Pool(PoolError::Stopped("llm")))
        }
    };
    if ctx.cancelled() {
        return (AnswerKind::Generated, llm_error);
    }
    if said.text.is_empty() || stopped.as_ref().is_some_and(Rejection::lost_a_fact) {
        // Nothing trustworthy was written, or the model was stopped as it gave a fact (a
        // lead-in alone answers nothing): read the best evidence.
        if let Some(text) = extractive::answer(req) {
            said.say(&text).await;
        }
        return (AnswerKind::Fallback, llm_error);
    }
    if let Some(best) = req.evidence.first().and_then(|e| req.passages.get(e.passage)) {
        said.say(&source_sentence(best)).await;
    }
    (AnswerKind::Generated, llm_error)
}

/// One sentence's speech as the client's frames, written into `bytes` (cleared first):
/// each frame's place in it and the samples it holds. PCM16 of [`AUDIO_FRAME_MS`], or
/// Opus packets of 20 ms.
fn frames(
    format: AudioFormat,
    rate: u32,
    opus: &mut Option<OpusPackets>,
    samples: &[f32],
    bytes: &mut Vec<u8>,
) -> Result<Vec<(Range<usize>, usize)>, StageError> {
    bytes.clear();
    match format {
        AudioFormat::Pcm16 => {
            encode_pcm16(samples, bytes);
            let frame_bytes = (rate as usize * AUDIO_FRAME_MS / 1000 * 2).max(2);
            let len = bytes.len();
            let frame = |start: usize| {
                let end = (start + frame_bytes).min(len);
                (start..end, (end - start) / 2)
            };
            Ok((0..len).step_by(frame_bytes).map(frame).collect())
        }
        AudioFormat::Opus => {
            let encoder = match opus {
                Some(encoder) => encoder,
                None => opus.insert(OpusPackets::new(rate).map_err(|e| ModelError::load("opus encoder", e))?),
            };
            let per_packet = encoder.frame_samples();
            let packets = encoder.encode(samples, bytes).map_err(|e| ModelError::inference("opus encoder", e))?;
            Ok(packets.into_iter().map(|p| (p, per_packet)).collect())
        }
    }
}

/// Sentences synthesizing at once per turn: the one being sent and the next.
const SYNTHESIS_AHEAD: usize = 2;

type Synthesis = std::pin::Pin<Box<dyn Future<Output = Result<Speech, StageError>> + Send>>;

struct SpeakContext {
    tts: Arc<TtsProvider>,
    out: Outbox,
    cancel: Cancel,
    audio_seq: u64,
    playback: Arc<Playback>,
    output_rate: u32,
    output_format: AudioFormat,
    response_id: String,
}

impl SpeakContext {
    fn of(ctx: &TurnContext) -> Self {
        Self {
            tts: ctx.pipeline.tts.clone(),
            out: ctx.out.clone(),
            cancel: ctx.cancel.clone(),
            audio_seq: ctx.audio_seq,
            playback: ctx.playback.clone(),
            output_rate: ctx.output_rate,
            output_format: ctx.output_format,
            response_id: ctx.response_id.clone(),
        }
    }
}

/// What a technician hears when the manuals cannot be searched: never silence.
const APOLOGY: &str = "Sorry, I can't reach the manuals right now. Please ask again in a moment.";

/// Says the apology (text and speech) after a failure; returns what was said.
async fn apologise(ctx: &TurnContext, ended_at: Instant, timings: &mut Timings) -> String {
    let (sentence_tx, sentence_rx) = mpsc::channel::<String>(1);
    let speaker = fair::spawn(speak(SpeakContext::of(ctx), sentence_rx));
    let mut said = Said::new(ctx, &sentence_tx);
    said.say(APOLOGY).await;
    said.finish().await;
    let text = std::mem::take(&mut said.text);
    drop(said);
    drop(sentence_tx);
    if let Ok(Ok(Some(first_audio))) = speaker.await {
        timings.voice_to_voice_ms = Some((first_audio - ended_at).as_secs_f64() * 1000.0);
    }
    text
}

/// Speaks sentences in order; returns when the first audio frame was queued.
async fn speak(ctx: SpeakContext, mut sentences: mpsc::Receiver<String>) -> Result<Option<Instant>, StageError> {
    let mut first_audio = None;
    // One encoder for the whole answer, so its packets flow on from sentence to sentence.
    let mut opus: Option<OpusPackets> = None;
    let mut bytes = Vec::new();
    let mut ahead: FuturesOrdered<Synthesis> = FuturesOrdered::new();
    let mut writing = true;
    loop {
        // Sentences are queued for synthesis as soon as they are written, in order, while
        // the one before is still synthesizing: a turn's speech jobs then wait side by side
        // in its tenant's backlog, and another tenant's cannot slip in between them (see
        // `workers::fair`).
        let next = async {
            loop {
                tokio::select! {
                    biased;
                    more = sentences.recv(), if writing && ahead.len() < SYNTHESIS_AHEAD => match more {
                        Some(sentence) => {
                            let tts = ctx.tts.clone();
                            ahead.push_back(Box::pin(async move { tts.synthesize(sentence).await }));
                        }
                        None => writing = false,
                    },
                    speech = ahead.next(), if !ahead.is_empty() => return speech,
                    else => return None,
                }
            }
        };
        // Sentences still waiting for a speech worker are dropped unsynthesized on cancel.
        let Some(Some(speech)) = ctx.cancel.unless_cancelled(next).await else {
            break;
        };
        let speech = speech?;
        let samples = resample(&speech.samples, speech.sample_rate, ctx.output_rate);
        let frames = frames(ctx.output_format, ctx.output_rate, &mut opus, &samples, &mut bytes)?;
        if first_audio.is_none() {
            let started =
                ServerEvent::AudioStarted { response_id: ctx.response_id.clone(), sample_rate: ctx.output_rate };
            ctx.out.event(&started).await;
        }
        let mut sent_samples = 0;
        for (frame, frame_samples) in frames {
            if ctx.cancel.is_cancelled() {
                return Ok(first_audio);
            }
            if !ctx.out.audio(ctx.audio_seq, &ctx.response_id, &bytes[frame]).await {
                return Ok(first_audio);
            }
            let start = samples.len().min(sent_samples);
            let level = rms_dbfs(&samples[start..samples.len().min(start + frame_samples)]);
            sent_samples += frame_samples;
            ctx.playback.sent(frame_samples as u64 * 1_000_000 / ctx.output_rate as u64, level);
            first_audio.get_or_insert_with(Instant::now);
        }
    }
    Ok(first_audio)
}
