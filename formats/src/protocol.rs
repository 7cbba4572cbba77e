//! The realtime wire protocol: JSON control events both ways, binary frames for audio.
//! Event names follow the OpenAI Realtime API where one exists.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::code::ErrorCode;

/// Formats a client may declare for audio in or out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AudioFormat {
    /// 16-bit signed little-endian mono PCM.
    #[default]
    Pcm16,
    /// Opus, one packet per binary frame (mono; 20 ms packets out): a tenth of PCM16's
    /// bytes, for phones on cellular links.
    Opus,
}

impl AudioFormat {
    /// The name a client gives it.
    pub fn name(self) -> &'static str {
        match self {
            AudioFormat::Pcm16 => "pcm16",
            AudioFormat::Opus => "opus",
        }
    }

    /// Whether `rate` can carry this format: Opus codes at five rates only.
    pub fn takes_rate(self, rate: u32) -> bool {
        match self {
            AudioFormat::Pcm16 => (MIN_SAMPLE_RATE..=MAX_SAMPLE_RATE).contains(&rate),
            AudioFormat::Opus => OPUS_RATES.contains(&rate),
        }
    }
}

pub const MIN_SAMPLE_RATE: u32 = 8_000;
pub const MAX_SAMPLE_RATE: u32 = 48_000;
/// The rates Opus decodes and encodes at.
pub const OPUS_RATES: [u32; 5] = [8_000, 12_000, 16_000, 24_000, 48_000];

/// The `session` object of `session.update`, in fieldvox's flat shape
/// (`input_sample_rate`), OpenAI's earlier one (`input_audio_format`, `turn_detection`) or
/// its current one (`audio.input.format.rate`, `audio.input.turn_detection`); they may be
/// mixed. Every field is optional and only what is given changes; fields not modelled
/// here land in `other` and are reported back, never silently dropped.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct SessionUpdate {
    pub input_audio_format: Option<FormatSpec>,
    pub input_sample_rate: Option<u32>,
    pub output_audio_format: Option<FormatSpec>,
    pub output_sample_rate: Option<u32>,
    /// Limit retrieval to one piece of equipment (e.g. "RTU-40"); `null` or "*" for all.
    pub equipment: Option<String>,
    /// Pipeline profile name (`pipelines/<name>.toml`).
    pub pipeline: Option<String>,
    #[serde(default, deserialize_with = "present")]
    pub turn_detection: Option<Option<TurnDetectionSpec>>,
    pub audio: Option<AudioSpec>,
    /// Accepted as given: a session is always a realtime one, and its model is the pipeline.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub model: Option<String>,
    pub output_modalities: Option<Vec<String>>,
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

/// `audio` of OpenAI's current session shape.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct AudioSpec {
    pub input: Option<AudioDirection>,
    pub output: Option<AudioDirection>,
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct AudioDirection {
    pub format: Option<FormatSpec>,
    #[serde(default, deserialize_with = "present")]
    pub turn_detection: Option<Option<TurnDetectionSpec>>,
    /// Accepted: fieldvox always transcribes the question with the pipeline's recogniser.
    pub transcription: Option<Value>,
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

/// `"pcm16"` or `"opus"`, or `{"type": "audio/pcm", "rate": 24000}` (`audio/opus` too).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum FormatSpec {
    Name(String),
    Spec {
        #[serde(rename = "type")]
        kind: Option<String>,
        rate: Option<u32>,
    },
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct TurnDetectionSpec {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub create_response: Option<bool>,
    pub interrupt_response: Option<bool>,
    pub threshold: Option<f32>,
    pub prefix_padding_ms: Option<u64>,
    pub silence_duration_ms: Option<u64>,
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

/// Tells a field given as `null` (`Some(None)`) from one not given (`None`).
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// Who decides that the user has finished a question.
#[derive(Debug, Clone, PartialEq)]
pub enum TurnDetection {
    /// The server's VAD ends utterances (and may interrupt an answer).
    ServerVad(ServerVad),
    /// Turn detection off: the client commits the audio buffer itself.
    Manual,
}

impl TurnDetection {
    /// The server-VAD settings, unless turn detection is off.
    pub fn server_vad(&self) -> Option<&ServerVad> {
        match self {
            TurnDetection::ServerVad(vad) => Some(vad),
            TurnDetection::Manual => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename = "server_vad")]
pub struct ServerVad {
    /// Answer each committed utterance without waiting for `response.create`.
    pub create_response: bool,
    /// Speech over an answer cancels it (barge-in).
    pub interrupt_response: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix_padding_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub silence_duration_ms: Option<u64>,
}

impl Default for ServerVad {
    fn default() -> Self {
        Self {
            create_response: true,
            interrupt_response: true,
            threshold: None,
            prefix_padding_ms: None,
            silence_duration_ms: None,
        }
    }
}

/// What a `session.update` changes, whatever shape it came in.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SessionChanges {
    pub input_format: Option<AudioFormat>,
    pub input_rate: Option<u32>,
    pub output_format: Option<AudioFormat>,
    pub output_rate: Option<u32>,
    pub equipment: Option<String>,
    pub pipeline: Option<String>,
    pub turn_detection: Option<TurnDetection>,
    /// Paths of given fields fieldvox does not understand (e.g. `audio.output.voice`).
    pub ignored: Vec<String>,
}

/// A `session.update` that cannot be applied; nothing of it is.
#[derive(Debug, Clone, PartialEq)]
pub struct UpdateError {
    pub code: ErrorCode,
    pub message: String,
}

fn invalid(code: ErrorCode, message: String) -> UpdateError {
    UpdateError { code, message }
}

/// The format and rate a format field names (either may be left unsaid).
fn format_of(format: Option<&FormatSpec>) -> Result<(Option<AudioFormat>, Option<u32>), UpdateError> {
    let named = |name: &str| match name {
        "pcm16" | "audio/pcm" => Some(AudioFormat::Pcm16),
        "opus" | "audio/opus" => Some(AudioFormat::Opus),
        _ => None,
    };
    let (name, rate) = match format {
        None => return Ok((None, None)),
        Some(FormatSpec::Name(name)) => (Some(name.as_str()), None),
        Some(FormatSpec::Spec { kind, rate }) => (kind.as_deref(), *rate),
    };
    match name {
        None => Ok((None, rate)),
        Some(name) => match named(name) {
            Some(format) => Ok((Some(format), rate)),
            None => Err(invalid(
                ErrorCode::UnsupportedAudioFormat,
                format!(
                    "audio format {name:?} is not supported; use \"pcm16\", \"opus\", or {{\"type\": \"audio/pcm\"}} or \"audio/opus\""
                ),
            )),
        },
    }
}

fn checked_rate(rate: Option<u32>) -> Result<Option<u32>, UpdateError> {
    match rate {
        Some(r) if !(MIN_SAMPLE_RATE..=MAX_SAMPLE_RATE).contains(&r) => Err(invalid(
            ErrorCode::UnsupportedAudioFormat,
            format!("sample rate {r} Hz is outside {MIN_SAMPLE_RATE}..={MAX_SAMPLE_RATE}"),
        )),
        r => Ok(r),
    }
}

fn turn_detection(spec: Option<TurnDetectionSpec>, ignored: &mut Vec<String>) -> Result<TurnDetection, UpdateError> {
    let Some(spec) = spec else { return Ok(TurnDetection::Manual) };
    if let Some(kind) = spec.kind.as_deref().filter(|k| *k != "server_vad") {
        return Err(invalid(
            ErrorCode::InvalidEvent,
            format!("turn detection {kind:?} is not supported; use \"server_vad\" or null"),
        ));
    }
    if spec.threshold.is_some_and(|t| !(0.05..=0.95).contains(&t)) {
        return Err(invalid(ErrorCode::InvalidEvent, "turn_detection.threshold must be within 0.05..=0.95".into()));
    }
    if spec.silence_duration_ms.is_some_and(|ms| !(100..=5_000).contains(&ms)) {
        return Err(invalid(
            ErrorCode::InvalidEvent,
            "turn_detection.silence_duration_ms must be within 100..=5000".into(),
        ));
    }
    if spec.prefix_padding_ms.is_some_and(|ms| ms > 2_000) {
        return Err(invalid(ErrorCode::InvalidEvent, "turn_detection.prefix_padding_ms must be at most 2000".into()));
    }
    ignored.extend(spec.other.keys().map(|k| format!("turn_detection.{k}")));
    let defaults = ServerVad::default();
    Ok(TurnDetection::ServerVad(ServerVad {
        create_response: spec.create_response.unwrap_or(defaults.create_response),
        interrupt_response: spec.interrupt_response.unwrap_or(defaults.interrupt_response),
        threshold: spec.threshold,
        prefix_padding_ms: spec.prefix_padding_ms,
        silence_duration_ms: spec.silence_duration_ms,
    }))
}

impl SessionUpdate {
    /// The changes this update asks for, or why it cannot be applied.
    pub fn changes(self) -> Result<SessionChanges, UpdateError> {
        let mut ignored: Vec<String> = self.other.keys().cloned().collect();
        let audio = self.audio.unwrap_or_default();
        ignored.extend(audio.other.keys().map(|k| format!("audio.{k}")));
        let input = audio.input.unwrap_or_default();
        let output = audio.output.unwrap_or_default();
        ignored.extend(input.other.keys().map(|k| format!("audio.input.{k}")));
        ignored.extend(output.other.keys().map(|k| format!("audio.output.{k}")));
        if output.turn_detection.is_some() {
            ignored.push("audio.output.turn_detection".into());
        }
        if output.transcription.is_some() {
            ignored.push("audio.output.transcription".into());
        }
        if self.output_modalities.as_ref().is_some_and(|m| !m.iter().any(|m| m == "audio")) {
            ignored.push("output_modalities (answers always come as audio and text)".into());
        }
        let (input_now, input_then) = (format_of(input.format.as_ref())?, format_of(self.input_audio_format.as_ref())?);
        let (output_now, output_then) =
            (format_of(output.format.as_ref())?, format_of(self.output_audio_format.as_ref())?);
        let input_rate = checked_rate(self.input_sample_rate.or(input_now.1).or(input_then.1))?;
        let output_rate = checked_rate(self.output_sample_rate.or(output_now.1).or(output_then.1))?;
        let turn_detection = match input.turn_detection.or(self.turn_detection) {
            Some(spec) => Some(self::turn_detection(spec, &mut ignored)?),
            None => None,
        };
        Ok(SessionChanges {
            input_format: input_now.0.or(input_then.0),
            input_rate,
            output_format: output_now.0.or(output_then.0),
            output_rate,
            equipment: self.equipment,
            pipeline: self.pipeline,
            turn_detection,
            ignored,
        })
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct ItemCreate {
    pub item: Item,
}

/// A typed user message: `{"text": "..."}` or OpenAI's `{"content": [{"type": "input_text", "text": "..."}]}`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Item {
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub content: Vec<ContentPart>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ContentPart {
    #[serde(default)]
    pub text: Option<String>,
}

impl Item {
    pub fn text(&self) -> String {
        match &self.text {
            Some(t) => t.clone(),
            None => self.content.iter().filter_map(|c| c.text.as_deref()).collect::<Vec<_>>().join(" "),
        }
    }
}

#[derive(Debug, Clone)]
pub enum ClientEvent {
    SessionUpdate(Box<SessionUpdate>),
    AudioAppend {
        audio: String,
    },
    AudioCommit,
    AudioClear,
    ItemCreate(ItemCreate),
    /// Answer what was committed or created (needed when turn detection is off or
    /// `create_response` is false, and always in the OpenAI dialect for typed questions).
    ResponseCreate,
    ResponseCancel,
    ItemTruncate {
        item_id: String,
        audio_end_ms: u64,
    },
    /// What the conversation holds for an item (of an answer: the part that was heard).
    ItemRetrieve {
        item_id: String,
    },
    Ping,
}

/// Why a text frame is not a usable event; each maps to a stable error code.
#[derive(Debug, Clone, PartialEq)]
pub enum ParseError {
    InvalidJson(String),
    UnknownEvent(String),
    InvalidEvent(String),
}

impl ParseError {
    pub fn code(&self) -> ErrorCode {
        match self {
            ParseError::InvalidJson(_) => ErrorCode::InvalidJson,
            ParseError::UnknownEvent(_) => ErrorCode::UnknownEvent,
            ParseError::InvalidEvent(_) => ErrorCode::InvalidEvent,
        }
    }
    pub fn message(&self) -> String {
        match self {
            ParseError::InvalidJson(e) => format!("frame is not valid JSON: {e}"),
            ParseError::UnknownEvent(t) => format!("unknown event type {t:?}"),
            ParseError::InvalidEvent(e) => format!("event fields are invalid: {e}"),
        }
    }
}

#[derive(Deserialize)]
struct Truncate {
    item_id: String,
    audio_end_ms: u64,
}

#[derive(Deserialize)]
struct Retrieve {
    item_id: String,
}

#[derive(Deserialize)]
struct Append {
    audio: String,
}

#[derive(Deserialize)]
struct Update {
    #[serde(default)]
    session: SessionUpdate,
}

fn fields<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, ParseError> {
    serde_json::from_value(value).map_err(|e| ParseError::InvalidEvent(e.to_string()))
}

impl ClientEvent {
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let value: Value = serde_json::from_str(text).map_err(|e| ParseError::InvalidJson(e.to_string()))?;
        let Some(kind) = value.get("type").and_then(Value::as_str).map(str::to_owned) else {
            return Err(ParseError::InvalidEvent("missing string field \"type\"".into()));
        };
        Ok(match kind.as_str() {
            "session.update" => ClientEvent::SessionUpdate(Box::new(fields::<Update>(value)?.session)),
            "input_audio_buffer.append" => ClientEvent::AudioAppend { audio: fields::<Append>(value)?.audio },
            "input_audio_buffer.commit" => ClientEvent::AudioCommit,
            "input_audio_buffer.clear" => ClientEvent::AudioClear,
            "conversation.item.create" => ClientEvent::ItemCreate(fields(value)?),
            "response.create" => ClientEvent::ResponseCreate,
            "response.cancel" => ClientEvent::ResponseCancel,
            "conversation.item.truncate" => {
                let t: Truncate = fields(value)?;
                ClientEvent::ItemTruncate { item_id: t.item_id, audio_end_ms: t.audio_end_ms }
            }
            "conversation.item.retrieve" => ClientEvent::ItemRetrieve { item_id: fields::<Retrieve>(value)?.item_id },
            "ping" => ClientEvent::Ping,
            _ => return Err(ParseError::UnknownEvent(kind)),
        })
    }
}

/// What the session looks like now; sent in `session.created` and `session.updated`.
#[derive(Debug, Clone, Serialize)]
pub struct SessionInfo {
    pub id: String,
    pub tenant: String,
    pub input_audio_format: AudioFormat,
    pub input_sample_rate: u32,
    pub output_audio_format: AudioFormat,
    pub output_sample_rate: u32,
    pub equipment: Option<String>,
    pub pipeline: String,
    /// `null` when the client commits its own turns.
    pub turn_detection: Option<ServerVad>,
    pub limits: SessionLimits,
    /// In `session.created`: reconnect with `?resume=<token>` within the resume window to
    /// get this session back (history, settings) after a dropped socket.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resume_token: Option<String>,
    /// In `session.created`: this session was resumed, not opened fresh.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub resumed: bool,
}

/// Who said a conversation item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ItemRole {
    User,
    Assistant,
}

/// A conversation item as announced in `conversation.item.created`: user items are
/// questions (spoken or typed), assistant items are answers. Clients truncate by `id`.
#[derive(Debug, Clone, Serialize)]
pub struct ItemInfo {
    pub id: String,
    pub role: ItemRole,
    /// For an assistant item: the response that speaks it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_id: Option<String>,
}

/// An item's text as the conversation holds it (`conversation.item.retrieved`).
#[derive(Debug, Clone, Serialize)]
pub struct ItemText {
    pub id: String,
    pub role: ItemRole,
    pub text: String,
}

/// The id of the assistant item that carries a response's answer.
pub fn answer_item_id(response_id: &str) -> String {
    format!("item_{}", response_id.strip_prefix("resp_").unwrap_or(response_id))
}

#[derive(Debug, Clone, Serialize)]
pub struct SessionLimits {
    pub max_frame_bytes: usize,
    pub max_utterance_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Citation {
    pub manual_id: String,
    pub title: String,
    pub page: u32,
    pub score: f32,
}

/// Per-stage milliseconds of one turn; absent stages did not run.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Timings {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stt_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embed_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retrieval_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub llm_first_token_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tts_first_audio_ms: Option<f64>,
    /// End of speech (or question received) to the first answer audio frame sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub voice_to_voice_ms: Option<f64>,
    pub total_ms: f64,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ResponseStatus {
    Completed,
    Cancelled,
    Failed,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: String,
    pub retryable: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
    /// For `rate_limited` and `limiter_unavailable`: which limit (`turns`, `audio_seconds`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<String>,
}

/// What is left of one allowance, in `rate_limits.updated`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RateLimitInfo {
    /// The limit: `turns`, `audio_seconds`, ...
    pub name: String,
    /// Whose allowance: `user` or `tenant`.
    pub scope: String,
    /// The allowance per period (for `audio_seconds`, seconds).
    pub limit: u64,
    pub remaining: u64,
    /// Until the allowance is whole again.
    pub reset_seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type")]
pub enum ServerEvent {
    #[serde(rename = "session.created")]
    SessionCreated { session: SessionInfo },
    #[serde(rename = "session.updated")]
    SessionUpdated { session: SessionInfo },
    #[serde(rename = "input_audio_buffer.speech_started")]
    SpeechStarted { audio_start_ms: u64 },
    #[serde(rename = "input_audio_buffer.speech_stopped")]
    SpeechStopped { audio_end_ms: u64 },
    /// An utterance became the user item `item_id` (by the server's VAD or a commit).
    #[serde(rename = "input_audio_buffer.committed")]
    Committed { item_id: String },
    #[serde(rename = "input_audio_buffer.cleared")]
    AudioCleared,
    #[serde(rename = "conversation.item.created")]
    ItemCreated { item: ItemInfo },
    #[serde(rename = "conversation.item.retrieved")]
    ItemRetrieved { item: ItemText },
    /// What the user has said so far (from the transcription run in their pauses); the
    /// deltas append, and `completed` has the final transcript.
    #[serde(rename = "conversation.item.input_audio_transcription.delta")]
    TranscriptionDelta { item_id: String, delta: String },
    #[serde(rename = "conversation.item.input_audio_transcription.completed")]
    TranscriptionCompleted { item_id: String, transcript: String },
    #[serde(rename = "response.created")]
    ResponseCreated { response_id: String },
    #[serde(rename = "response.output_text.delta")]
    TextDelta { response_id: String, delta: String },
    #[serde(rename = "response.output_audio.started")]
    AudioStarted { response_id: String, sample_rate: u32 },
    #[serde(rename = "response.citations")]
    Citations { response_id: String, citations: Vec<Citation> },
    #[serde(rename = "response.done")]
    ResponseDone {
        response_id: String,
        status: ResponseStatus,
        text: String,
        timings: Timings,
        /// Why a `failed` response failed.
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<ErrorBody>,
    },
    #[serde(rename = "output_audio_buffer.clear")]
    OutputAudioClear { response_id: String },
    #[serde(rename = "session.going_away")]
    GoingAway { reason: String, drain_ms: u64 },
    #[serde(rename = "error")]
    Error { error: ErrorBody },
    /// What is left of the user's and the tenant's allowances, after each charge.
    #[serde(rename = "rate_limits.updated")]
    RateLimitsUpdated { rate_limits: Vec<RateLimitInfo> },
    #[serde(rename = "pong")]
    Pong,
}

impl ErrorBody {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorBody { code, message: message.into(), retryable: code.retryable(), retry_after_ms: None, limit: None }
    }

    /// With when to retry (whole milliseconds, rounded up).
    pub fn retry_after(mut self, after: Option<std::time::Duration>) -> Self {
        self.retry_after_ms = after.map(|d| d.as_micros().div_ceil(1000) as u64);
        self
    }
}

impl ServerEvent {
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        ServerEvent::Error { error: ErrorBody::new(code, message) }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| r#"{"type":"error"}"#.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_known_events() {
        let e = ClientEvent::parse(
            r#"{"type":"session.update","session":{"input_sample_rate":24000,"equipment":"RTU-40"}}"#,
        )
        .unwrap();
        let ClientEvent::SessionUpdate(u) = e else { panic!("wrong event") };
        assert_eq!(u.input_sample_rate, Some(24000));
        assert_eq!(u.equipment.as_deref(), Some("RTU-40"));
        let e = ClientEvent::parse(
            r#"{"type":"conversation.item.create","item":{"content":[{"type":"input_text","text":"hi there"}]}}"#,
        )
        .unwrap();
        let ClientEvent::ItemCreate(c) = e else { panic!("wrong event") };
        assert_eq!(c.item.text(), "hi there");
        assert!(matches!(ClientEvent::parse(r#"{"type":"ping","event_id":"x"}"#), Ok(ClientEvent::Ping)));
        assert!(matches!(
            ClientEvent::parse(r#"{"type":"response.create","response":{}}"#),
            Ok(ClientEvent::ResponseCreate)
        ));
    }

    #[test]
    fn classifies_bad_frames() {
        assert!(matches!(ClientEvent::parse("{not json"), Err(ParseError::InvalidJson(_))));
        assert!(matches!(ClientEvent::parse(r#"{"type":"dance"}"#), Err(ParseError::UnknownEvent(t)) if t == "dance"));
        assert!(matches!(ClientEvent::parse(r#"{"type":7}"#), Err(ParseError::InvalidEvent(_))));
        assert!(matches!(ClientEvent::parse("[1,2]"), Err(ParseError::InvalidEvent(_))));
        assert!(matches!(
            ClientEvent::parse(r#"{"type":"conversation.item.truncate","item_id":"a"}"#),
            Err(ParseError::InvalidEvent(_))
        ));
    }

    fn changes(session: &str) -> Result<SessionChanges, UpdateError> {
        let event = format!(r#"{{"type":"session.update","session":{session}}}"#);
        let Ok(ClientEvent::SessionUpdate(u)) = ClientEvent::parse(&event) else { panic!("not an update: {event}") };
        u.changes()
    }

    #[test]
    fn every_session_shape_sets_the_rates() {
        let flat = changes(r#"{"input_audio_format":"pcm16","input_sample_rate":24000,"output_sample_rate":22050}"#);
        assert_eq!(flat.map(|c| (c.input_rate, c.output_rate)), Ok((Some(24_000), Some(22_050))));
        let current = changes(
            r#"{"type":"realtime","audio":{"input":{"format":{"type":"audio/pcm","rate":24000}},
                "output":{"format":{"type":"audio/pcm","rate":24000}}}}"#,
        )
        .expect("current shape");
        assert_eq!((current.input_rate, current.output_rate), (Some(24_000), Some(24_000)));
        assert!(current.ignored.is_empty(), "{:?}", current.ignored);
        let e = changes(r#"{"audio":{"input":{"format":{"type":"audio/pcmu"}}}}"#).unwrap_err();
        assert_eq!(e.code, ErrorCode::UnsupportedAudioFormat);
        let e = changes(r#"{"audio":{"input":{"format":{"type":"audio/pcm","rate":96000}}}}"#).unwrap_err();
        assert_eq!(e.code, ErrorCode::UnsupportedAudioFormat);
    }

    #[test]
    fn opus_is_named_in_every_shape() {
        let flat = changes(r#"{"input_audio_format":"opus","output_audio_format":"opus","output_sample_rate":48000}"#)
            .expect("flat");
        assert_eq!((flat.input_format, flat.output_format), (Some(AudioFormat::Opus), Some(AudioFormat::Opus)));
        assert_eq!((flat.input_rate, flat.output_rate), (None, Some(48_000)));
        let current = changes(r#"{"audio":{"input":{"format":{"type":"audio/opus","rate":16000}}}}"#).expect("current");
        assert_eq!((current.input_format, current.input_rate), (Some(AudioFormat::Opus), Some(16_000)));
        assert_eq!(current.output_format, None, "output untouched");
        let pcm = changes(r#"{"input_audio_format":"pcm16"}"#).expect("pcm16");
        assert_eq!(pcm.input_format, Some(AudioFormat::Pcm16));
        assert!(AudioFormat::Opus.takes_rate(24_000) && !AudioFormat::Opus.takes_rate(22_050));
        assert!(AudioFormat::Pcm16.takes_rate(22_050));
    }

    #[test]
    fn turn_detection_null_is_manual_and_absent_is_no_change() {
        let manual = changes(r#"{"audio":{"input":{"turn_detection":null}}}"#).expect("manual");
        assert_eq!(manual.turn_detection, Some(TurnDetection::Manual));
        let beta = changes(r#"{"turn_detection":null}"#).expect("beta shape");
        assert_eq!(beta.turn_detection, Some(TurnDetection::Manual));
        assert_eq!(changes(r#"{"equipment":"RTU-40"}"#).expect("none").turn_detection, None);
        let vad = changes(
            r#"{"audio":{"input":{"turn_detection":{"type":"server_vad","create_response":false,"silence_duration_ms":700}}}}"#,
        )
        .expect("server vad");
        let Some(TurnDetection::ServerVad(v)) = vad.turn_detection else { panic!("{vad:?}") };
        assert!(!v.create_response && v.interrupt_response);
        assert_eq!(v.silence_duration_ms, Some(700));
        let e = changes(r#"{"turn_detection":{"type":"semantic_vad"}}"#).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidEvent);
        let e = changes(r#"{"turn_detection":{"type":"server_vad","silence_duration_ms":5}}"#).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidEvent);
    }

    #[test]
    fn fields_not_understood_are_reported() {
        let c = changes(
            r#"{"instructions":"be brief","audio":{"output":{"voice":"alloy"},"input":{"noise_reduction":null}},
                "output_modalities":["text"],"turn_detection":{"type":"server_vad","idle_timeout_ms":5}}"#,
        )
        .expect("applies the rest");
        let ignored = c.ignored.join(" ");
        for field in [
            "instructions",
            "audio.output.voice",
            "audio.input.noise_reduction",
            "output_modalities",
            "idle_timeout_ms",
        ] {
            assert!(ignored.contains(field), "{field} not reported in {ignored}");
        }
    }

    #[test]
    fn server_events_use_wire_names() {
        let j = ServerEvent::error(ErrorCode::InvalidJson, "bad").to_json();
        assert!(j.contains(r#""type":"error""#) && j.contains(r#""code":"invalid_json""#), "{j}");
        let j = ServerEvent::OutputAudioClear { response_id: "r".into() }.to_json();
        assert!(j.contains(r#""type":"output_audio_buffer.clear""#), "{j}");
    }
}
