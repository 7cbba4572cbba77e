//! `POST /v1/ask`: a voice note. A technician in a basement with no signal records the
//! question; the app sends it later as a file, and gets back what a live turn would have
//! said: transcript, answer, citations, timings and the answer's audio. The recording
//! runs through the same turn as a live question (the same transcription, retrieval,
//! grounding and voice), and is kept in the tenant's turn history like one.

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::extract::State;
use axum::extract::multipart::{Field, Multipart, MultipartRejection};
use axum::http::HeaderMap;
use base64::Engine as _;
use serde::Serialize;
use tokio::sync::mpsc;
use utoipa::ToSchema;

use super::Api;
use super::manuals::{caller, multipart_error, small_text};
use crate::app::App;
use crate::audio::decode::{Recording, decode};
use crate::audio::{opus, wav};
use crate::auth::{Action, Claims};
use crate::error::{AppError, ErrorResponse};
use crate::limits::Limit;
use crate::pipeline::Pipeline;
use crate::pipeline::cancel::Cancel;
use crate::pipeline::turn::{self, Question, TurnContext, TurnRecord, transcription_hint};
use crate::session::Outbound;
use crate::session::dialect::{Dialect, Outbox};
use crate::session::playback::Playback;
use crate::session::protocol::{AudioFormat, Citation, ErrorBody, Timings};
use crate::workers::fair;

/// The answer audio's rate: Piper's own, so WAV answers are not resampled.
const ANSWER_RATE: u32 = 22_050;

/// What a voice note may be.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AskConfig {
    /// Largest recording accepted, in bytes (413 `payload_too_large` beyond).
    pub max_bytes: u64,
    /// Longest recording accepted, in seconds (413 `recording_too_long` beyond).
    pub max_seconds: u32,
}

impl Default for AskConfig {
    /// A minute of question: about 1 MB as AAC, 2 MB as 16 kHz WAV, 10 MB as 44.1 kHz
    /// stereo WAV.
    fn default() -> Self {
        Self { max_bytes: 16 * 1024 * 1024, max_seconds: 60 }
    }
}

/// How the answer's audio comes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AnswerAudioFormat {
    /// PCM16 WAV.
    Wav,
    /// Opus in Ogg (RFC 7845): about a tenth of the bytes.
    OggOpus,
}

impl AnswerAudioFormat {
    fn parse(text: &str) -> Result<Self, AppError> {
        match text.trim() {
            "" | "wav" => Ok(Self::Wav),
            "ogg_opus" | "opus" => Ok(Self::OggOpus),
            other => Err(AppError::BadRequest(format!("answer_audio must be wav or ogg_opus, not {other:?}"))),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AnswerAudio {
    pub format: AnswerAudioFormat,
    pub sample_rate: u32,
    pub seconds: f64,
    /// The file, base64.
    pub data: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RecordingInfo {
    /// What the file turned out to be: wav, mp3, aac, flac, vorbis or opus.
    pub codec: &'static str,
    pub seconds: f64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VoiceNoteAnswer {
    pub transcript: String,
    /// `completed`, or `failed` (the answer is then an apology, spoken too).
    pub status: String,
    pub answer: String,
    #[schema(value_type = Vec<Object>)]
    pub citations: Vec<Citation>,
    /// Milliseconds per stage, from the request's arrival (decoding included).
    #[schema(value_type = Object)]
    pub timings: Timings,
    pub recording: RecordingInfo,
    pub audio: Option<AnswerAudio>,
}

/// The form's fields.
struct Note {
    audio: Vec<u8>,
    equipment: Option<String>,
    pipeline: Option<String>,
    format: AnswerAudioFormat,
}

#[utoipa::path(
    post,
    path = "/v1/ask",
    tag = "voice",
    request_body(content_type = "multipart/form-data", description = "`audio`: the recording (WAV, MP3, M4A/AAC, FLAC, Ogg Vorbis or Opus; the type is read from the bytes); optional `equipment`, `pipeline`, `answer_audio` (`wav`, the default, or `ogg_opus`)"),
    responses(
        (status = 200, description = "The answer", body = VoiceNoteAnswer),
        (status = 400, description = "No `audio` field, or an unknown pipeline or answer format", body = ErrorResponse),
        (status = 413, description = "Larger than `ask.max_bytes`, or longer than `ask.max_seconds`", body = ErrorResponse),
        (status = 415, description = "Not a recording in a supported format", body = ErrorResponse),
        (status = 422, description = "A recording that cannot be decoded (cut short, damaged), or with no speech", body = ErrorResponse),
        (status = 429, description = "Over the turns or audio_seconds limit", body = ErrorResponse),
        (status = 503, description = "The models are busy (`Retry-After` says when to retry)", body = ErrorResponse),
    ),
    security(("bearer" = []))
)]
pub async fn ask(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    multipart: Result<Multipart, MultipartRejection>,
) -> Api<Json<VoiceNoteAnswer>> {
    let arrived = Instant::now();
    let claims = caller(&app, &headers, Action::Talk).await?;
    app.limits.charge(Limit::Turns, &claims, 1).await?;
    let note = read_form(multipart.map_err(multipart_error)?, app.config.ask.max_bytes).await?;
    let pipeline = app
        .pipelines
        .get(note.pipeline.as_deref())
        .ok_or_else(|| AppError::BadRequest(format!("unknown pipeline {:?}", note.pipeline.unwrap_or_default())))?;
    let max_seconds = app.config.ask.max_seconds;
    let audio = note.audio;
    let recording = tokio::task::spawn_blocking(move || decode(audio, max_seconds))
        .await
        .map_err(|e| AppError::Io(std::io::Error::other(e)))?
        .inspect_err(
            |e| tracing::info!(tenant = %claims.tenant, user = %claims.sub, error = %e, "voice note refused"),
        )?;
    let heard_ms = (recording.seconds() * 1000.0).round() as u64;
    app.limits.charge(Limit::AudioSeconds, &claims, heard_ms).await?;
    tracing::info!(tenant = %claims.tenant, user = %claims.sub, codec = recording.codec,
        seconds = recording.seconds(), "voice note received");
    let tenant = claims.tenant.clone();
    let info = RecordingInfo { codec: recording.codec, seconds: recording.seconds() };
    let answered = answer(&app, claims, pipeline, recording, note.equipment, arrived);
    let heard = fair::on_behalf_of(&tenant, answered).await;
    Ok(Json(heard.into_answer(info, note.format)?))
}

async fn read_form(mut form: Multipart, max_bytes: u64) -> Api<Note> {
    let mut note = Note { audio: Vec::new(), equipment: None, pipeline: None, format: AnswerAudioFormat::Wav };
    let mut has_audio = false;
    while let Some(field) = form.next_field().await.map_err(multipart_error)? {
        match field.name() {
            Some("audio") => {
                note.audio = read_capped(field, max_bytes).await?;
                has_audio = true;
            }
            Some("equipment") => note.equipment = Some(small_text(field, "equipment", 64).await?),
            Some("pipeline") => note.pipeline = Some(small_text(field, "pipeline", 64).await?),
            Some("answer_audio") => {
                note.format = AnswerAudioFormat::parse(&small_text(field, "answer_audio", 16).await?)?
            }
            _ => {}
        }
    }
    if !has_audio {
        return Err(AppError::BadRequest("the form has no `audio` field".into()));
    }
    note.equipment = note.equipment.filter(|e| !e.trim().is_empty());
    Ok(note)
}

/// The field's bytes, refused as soon as they pass `max_bytes`.
async fn read_capped(mut field: Field<'_>, max_bytes: u64) -> Api<Vec<u8>> {
    let mut bytes = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
        bytes.extend_from_slice(&chunk);
        if bytes.len() as u64 > max_bytes {
            return Err(AppError::PayloadTooLarge(format!("the recording is larger than {max_bytes} bytes")));
        }
    }
    Ok(bytes)
}

/// Runs the turn with a writer of its own and gathers what it said.
async fn answer(
    app: &App,
    claims: Claims,
    pipeline: Arc<Pipeline>,
    recording: Recording,
    equipment: Option<String>,
    arrived: Instant,
) -> Heard {
    let hint = transcription_hint(&app.kb, &claims.tenant, &pipeline).await;
    let stt = pipeline.stt.clone();
    let audio_in_secs = recording.seconds();
    let samples = recording.samples;
    let transcribing = fair::spawn(async move { stt.transcribe(samples, hint).await });
    let (tx, mut rx) = mpsc::channel::<Outbound>(64);
    let response_id = format!("resp_{}", uuid::Uuid::new_v4().simple());
    let ctx = TurnContext {
        tenant: claims.tenant.clone(),
        user: claims.sub.clone(),
        session: uuid::Uuid::new_v4(),
        audio_in_secs,
        equipment,
        pipeline,
        kb: app.kb.clone(),
        metrics: app.metrics.clone(),
        out: Outbox::new(tx, Dialect::Native),
        item_id: format!("item_{}", uuid::Uuid::new_v4().simple()),
        output_rate: ANSWER_RATE,
        output_format: AudioFormat::Pcm16,
        cancel: Cancel::default(),
        audio_seq: 0,
        playback: Arc::new(Playback::default()),
        response_id,
        history: Vec::new(),
        record: Arc::new(TurnRecord::default()),
    };
    let turn = fair::spawn(turn::run(ctx, Question::Transcribing(transcribing), arrived));
    let mut heard = Heard::default();
    while let Some(out) = rx.recv().await {
        match out {
            Outbound::Event(json) => heard.event(&json),
            Outbound::Audio { bytes, .. } => heard.pcm.extend_from_slice(&bytes),
            Outbound::AudioEvent { .. } | Outbound::Close { .. } => {}
        }
    }
    let _ = turn.await;
    heard
}

/// What the turn sent, as it arrives.
#[derive(Default)]
struct Heard {
    transcript: Option<String>,
    citations: Vec<Citation>,
    done: Option<serde_json::Value>,
    error: Option<ErrorBody>,
    pcm: Vec<u8>,
}

impl Heard {
    fn event(&mut self, json: &str) {
        let Ok(event) = serde_json::from_str::<serde_json::Value>(json) else { return };
        match event["type"].as_str() {
            Some("conversation.item.input_audio_transcription.completed") => {
                self.transcript = event["transcript"].as_str().map(str::to_string);
            }
            Some("response.citations") => {
                self.citations = serde_json::from_value(event["citations"].clone()).unwrap_or_default();
            }
            Some("error") => self.error = serde_json::from_value(event["error"].clone()).ok(),
            Some("response.done") => self.done = Some(event),
            _ => {}
        }
    }

    fn into_answer(self, recording: RecordingInfo, format: AnswerAudioFormat) -> Api<VoiceNoteAnswer> {
        let Some(done) = self.done else {
            // No answer began: transcription failed, or heard no words.
            return Err(self.error.map_or(AppError::NoSpeech, AppError::Turn));
        };
        let timings: Timings = serde_json::from_value(done["timings"].clone()).unwrap_or_default();
        let mut pcm = Vec::with_capacity(self.pcm.len() / 2);
        crate::audio::pcm::decode_pcm16(&self.pcm, &mut pcm).map_err(|e| AppError::Io(std::io::Error::other(e)))?;
        let audio = (!pcm.is_empty()).then(|| encode(&pcm, format)).transpose()?;
        Ok(VoiceNoteAnswer {
            transcript: self.transcript.unwrap_or_default(),
            status: done["status"].as_str().unwrap_or("failed").to_string(),
            answer: done["text"].as_str().unwrap_or_default().to_string(),
            citations: self.citations,
            timings,
            recording,
            audio,
        })
    }
}

/// The answer's speech (mono at [`ANSWER_RATE`]) as a file of the asked format.
fn encode(pcm: &[f32], format: AnswerAudioFormat) -> Api<AnswerAudio> {
    let internal = |e: String| AppError::Io(std::io::Error::other(e));
    let (file, sample_rate) = match format {
        AnswerAudioFormat::Wav => {
            (wav::encode_mono(pcm, ANSWER_RATE).map_err(|e| internal(e.to_string()))?, ANSWER_RATE)
        }
        AnswerAudioFormat::OggOpus => {
            (opus::ogg_opus(pcm, ANSWER_RATE).map_err(|e| internal(e.to_string()))?, opus::OPUS_RATE)
        }
    };
    Ok(AnswerAudio {
        format,
        sample_rate,
        seconds: pcm.len() as f64 / f64::from(ANSWER_RATE),
        data: base64::engine::general_purpose::STANDARD.encode(file),
    })
}
