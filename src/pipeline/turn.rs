//! One turn: question (speech or text) → transcript → retrieval → streamed answer →
//! sentence-by-sentence speech, with per-stage timings. Speech for the first sentence
//! starts while the answerer is still writing the rest.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use tokio::sync::mpsc;

use super::Pipeline;
use super::providers::StageError;
use crate::audio::pcm::encode_pcm16;
use crate::audio::resample::resample;
use crate::error::ErrorCode;
use crate::llm::AnswerRequest;
use crate::metrics::{Metrics, Stage};
use crate::rag::KnowledgeBase;
use crate::rag::retrieve::Passage;
use crate::session::Outbound;
use crate::session::protocol::{Citation, ResponseStatus, ServerEvent, Timings};
use crate::voice::sentences::SentenceSplitter;
use crate::workers::PoolError;

/// Output audio is sent in frames of this many milliseconds.
const AUDIO_FRAME_MS: usize = 100;

pub enum Question {
    /// Mono 16 kHz speech from the endpointer.
    Audio(Vec<f32>),
    /// Speech whose transcription already started during the user's pause.
    Transcribing(SttTask),
    Text(String),
}

/// A transcription running on its own task.
pub type SttTask = tokio::task::JoinHandle<Result<String, StageError>>;

/// Everything a turn needs from its session.
pub struct TurnContext {
    pub tenant: String,
    pub equipment: Option<String>,
    pub pipeline: Arc<Pipeline>,
    pub kb: KnowledgeBase,
    pub metrics: Metrics,
    pub out: mpsc::Sender<Outbound>,
    pub output_rate: u32,
    /// Set by the session on barge-in or `response.cancel`.
    pub cancel: Arc<AtomicBool>,
    /// Tags this turn's audio so the writer can drop it once cancelled.
    pub audio_seq: u64,
    pub response_id: String,
}

fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

impl TurnContext {
    async fn send(&self, event: ServerEvent) {
        let _ = self.out.send(Outbound::event(&event)).await;
    }

    fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }
}

/// Runs one turn to its `response.done` (or to nothing, if the audio held no words).
/// `ended_at` is when the user stopped speaking (or the typed question arrived).
pub async fn run(ctx: TurnContext, question: Question, ended_at: Instant) {
    let mut timings = Timings::default();
    let question = match question {
        Question::Text(text) => text,
        Question::Audio(pcm) => {
            let stt = ctx.pipeline.stt.clone();
            match transcript(&ctx, &mut timings, async move { stt.transcribe(pcm).await }).await {
                Some(t) => t,
                None => return,
            }
        }
        Question::Transcribing(task) => {
            let done = async move { task.await.unwrap_or(Err(StageError::Pool(PoolError::Stopped("stt")))) };
            match transcript(&ctx, &mut timings, done).await {
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

    let profile = &ctx.pipeline.profile;
    let retrieved = ctx
        .kb
        .retrieve(
            &ctx.tenant,
            ctx.equipment.as_deref(),
            &question,
            profile.retrieval.top_k,
            profile.retrieval.min_score,
        )
        .await;
    let passages = match retrieved {
        Ok((passages, rt)) => {
            timings.embed_ms = Some(rt.embed_ms);
            timings.retrieval_ms = Some(rt.search_ms);
            ctx.metrics.stage(Stage::Embed, rt.embed_ms);
            ctx.metrics.stage(Stage::Retrieval, rt.search_ms);
            passages
        }
        Err(e) => {
            tracing::warn!(error = %e, "retrieval failed");
            fail(&ctx, e.code(), "searching the manuals failed").await;
            return;
        }
    };

    let (status, text) = answer(&ctx, &response_id, &question, &passages, ended_at, &mut timings).await;
    let citations = passages
        .iter()
        .map(|p| Citation { manual_id: p.manual_id.to_string(), title: p.title.clone(), page: p.page, score: p.score })
        .collect();
    ctx.send(ServerEvent::Citations { response_id: response_id.clone(), citations }).await;
    timings.total_ms = ms_since(ended_at);
    ctx.metrics.turn_finished(match status {
        ResponseStatus::Completed => "completed",
        ResponseStatus::Cancelled => "cancelled",
        ResponseStatus::Failed => "failed",
    });
    tracing::info!(
        %response_id, status = ?status, stt_ms = ?timings.stt_ms, retrieval_ms = ?timings.retrieval_ms,
        llm_first_token_ms = ?timings.llm_first_token_ms, tts_first_audio_ms = ?timings.tts_first_audio_ms,
        voice_to_voice_ms = ?timings.voice_to_voice_ms, "turn done"
    );
    ctx.send(ServerEvent::ResponseDone { response_id, status, text, timings }).await;
}

/// Waits for the transcription and reports it; `None` when there is nothing to answer.
/// For a speculative transcription the time measured is only what the pause did not hide.
async fn transcript(
    ctx: &TurnContext,
    timings: &mut Timings,
    transcription: impl Future<Output = Result<String, StageError>>,
) -> Option<String> {
    let started = Instant::now();
    let result = transcription.await;
    let stt_ms = ms_since(started);
    timings.stt_ms = Some(stt_ms);
    ctx.metrics.stage(Stage::Stt, stt_ms);
    let transcript = match result {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(error = %e, "transcription failed");
            fail(ctx, ErrorCode::ModelUnavailable, "speech recognition failed").await;
            return None;
        }
    };
    let item_id = format!("item_{}", uuid::Uuid::new_v4().simple());
    ctx.send(ServerEvent::TranscriptionCompleted { item_id, transcript: transcript.clone() }).await;
    if transcript.trim().is_empty() {
        tracing::debug!("utterance had no words; no response");
        ctx.metrics.turn_finished("no_speech");
        return None;
    }
    Some(transcript)
}

async fn fail(ctx: &TurnContext, code: ErrorCode, message: &str) {
    ctx.metrics.error(code.as_str());
    ctx.metrics.turn_finished("failed");
    ctx.send(ServerEvent::error(code, message)).await;
}

/// Streams the answer's text and speech; returns the status and the full text.
async fn answer(
    ctx: &TurnContext,
    response_id: &str,
    question: &str,
    passages: &[Passage],
    ended_at: Instant,
    timings: &mut Timings,
) -> (ResponseStatus, String) {
    let profile = &ctx.pipeline.profile;
    let (text_tx, mut text_rx) = mpsc::channel::<String>(64);
    let llm_started = Instant::now();
    let producer = {
        let llm = ctx.pipeline.llm.clone();
        let cancel = ctx.cancel.clone();
        let no_answer = profile.llm.no_answer.clone();
        let req = AnswerRequest {
            system_prompt: profile.llm.system_prompt.clone(),
            question: question.to_string(),
            passages: passages.to_vec(),
            max_tokens: profile.llm.max_tokens,
        };
        tokio::spawn(async move {
            if req.passages.is_empty() {
                // Nothing to ground an answer in: say so rather than let a model guess.
                let _ = text_tx.send(no_answer).await;
                return Ok(());
            }
            llm.stream(req, text_tx, cancel).await
        })
    };

    let (sentence_tx, sentence_rx) = mpsc::channel::<String>(16);
    let speaker = tokio::spawn(speak(
        SpeakContext {
            tts: ctx.pipeline.tts.clone(),
            out: ctx.out.clone(),
            cancel: ctx.cancel.clone(),
            audio_seq: ctx.audio_seq,
            output_rate: ctx.output_rate,
            response_id: response_id.to_string(),
        },
        sentence_rx,
    ));

    let mut splitter = SentenceSplitter::default();
    let mut text = String::new();
    while let Some(piece) = text_rx.recv().await {
        if ctx.cancelled() {
            break;
        }
        if text.is_empty() {
            let ms = ms_since(llm_started);
            timings.llm_first_token_ms = Some(ms);
            ctx.metrics.stage(Stage::LlmFirstToken, ms);
        }
        text.push_str(&piece);
        ctx.send(ServerEvent::TextDelta { response_id: response_id.to_string(), delta: piece.clone() }).await;
        for sentence in splitter.push(&piece) {
            let _ = sentence_tx.send(sentence).await;
        }
    }
    if let Some(rest) = splitter.finish() {
        let _ = sentence_tx.send(rest).await;
    }
    drop(sentence_tx);

    let llm_result = producer.await;
    let spoken = speaker.await;
    if ctx.cancelled() {
        return (ResponseStatus::Cancelled, text);
    }
    let llm_ok = match llm_result {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "answer generation failed");
            false
        }
        Err(e) => {
            tracing::error!(error = %e, "answer task stopped");
            false
        }
    };
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
            ctx.metrics.error(ErrorCode::ModelUnavailable.as_str());
            ctx.send(ServerEvent::error(ErrorCode::ModelUnavailable, "speech synthesis failed")).await;
            return (ResponseStatus::Failed, text);
        }
        Err(e) => {
            tracing::error!(error = %e, "speech task stopped");
            return (ResponseStatus::Failed, text);
        }
    }
    if !llm_ok {
        ctx.metrics.error(ErrorCode::ModelUnavailable.as_str());
        ctx.send(ServerEvent::error(ErrorCode::ModelUnavailable, "answer generation failed")).await;
        return (ResponseStatus::Failed, text);
    }
    (ResponseStatus::Completed, text)
}

struct SpeakContext {
    tts: Arc<super::providers::TtsProvider>,
    out: mpsc::Sender<Outbound>,
    cancel: Arc<AtomicBool>,
    audio_seq: u64,
    output_rate: u32,
    response_id: String,
}

/// Speaks sentences in order; returns when the first audio frame was queued.
async fn speak(
    ctx: SpeakContext,
    mut sentences: mpsc::Receiver<String>,
) -> Result<Option<Instant>, super::providers::StageError> {
    let mut first_audio = None;
    let mut pcm = Vec::new();
    while let Some(sentence) = sentences.recv().await {
        if ctx.cancel.load(Ordering::Relaxed) {
            break;
        }
        let speech = ctx.tts.synthesize(sentence).await?;
        let samples = resample(&speech.samples, speech.sample_rate, ctx.output_rate);
        pcm.clear();
        encode_pcm16(&samples, &mut pcm);
        if first_audio.is_none() {
            let started =
                ServerEvent::AudioStarted { response_id: ctx.response_id.clone(), sample_rate: ctx.output_rate };
            let _ = ctx.out.send(Outbound::event(&started)).await;
        }
        let frame_bytes = ctx.output_rate as usize * AUDIO_FRAME_MS / 1000 * 2;
        for frame in pcm.chunks(frame_bytes.max(2)) {
            if ctx.cancel.load(Ordering::Relaxed) {
                return Ok(first_audio);
            }
            let audio = Outbound::Audio { seq: ctx.audio_seq, bytes: bytes::Bytes::copy_from_slice(frame) };
            if ctx.out.send(audio).await.is_err() {
                return Ok(first_audio);
            }
            first_audio.get_or_insert_with(Instant::now);
        }
    }
    Ok(first_audio)
}
