//! The realtime wire protocol: JSON control events both ways, binary frames for audio.
//! Event names follow the OpenAI Realtime API where one exists.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::ErrorCode;

/// Formats a client may declare for audio in or out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AudioFormat {
    /// 16-bit signed little-endian mono PCM.
    Pcm16,
}

pub const MIN_SAMPLE_RATE: u32 = 8_000;
pub const MAX_SAMPLE_RATE: u32 = 48_000;

/// Fields of `session.update`; every field is optional and only what is given changes.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct SessionUpdate {
    pub input_audio_format: Option<String>,
    pub input_sample_rate: Option<u32>,
    pub output_audio_format: Option<String>,
    pub output_sample_rate: Option<u32>,
    /// Limit retrieval to one piece of equipment (e.g. "RTU-40"); `null` or "*" for all.
    pub equipment: Option<String>,
    /// Pipeline profile name (`pipelines/<name>.toml`).
    pub pipeline: Option<String>,
    pub language: Option<String>,
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
    SessionUpdate(SessionUpdate),
    AudioAppend { audio: String },
    AudioCommit,
    AudioClear,
    ItemCreate(ItemCreate),
    ResponseCancel,
    ItemTruncate { item_id: String, audio_end_ms: u64 },
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
            "session.update" => ClientEvent::SessionUpdate(fields::<Update>(value)?.session),
            "input_audio_buffer.append" => ClientEvent::AudioAppend { audio: fields::<Append>(value)?.audio },
            "input_audio_buffer.commit" => ClientEvent::AudioCommit,
            "input_audio_buffer.clear" => ClientEvent::AudioClear,
            "conversation.item.create" => ClientEvent::ItemCreate(fields(value)?),
            "response.cancel" => ClientEvent::ResponseCancel,
            "conversation.item.truncate" => {
                let t: Truncate = fields(value)?;
                ClientEvent::ItemTruncate { item_id: t.item_id, audio_end_ms: t.audio_end_ms }
            }
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
    pub limits: SessionLimits,
}

#[derive(Debug, Clone, Serialize)]
pub struct SessionLimits {
    pub max_frame_bytes: usize,
    pub max_utterance_ms: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Citation {
    pub manual_id: String,
    pub title: String,
    pub page: u32,
    pub score: f32,
}

/// Per-stage milliseconds of one turn; absent stages did not run.
#[derive(Debug, Clone, Default, Serialize)]
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

#[derive(Debug, Clone, Serialize)]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: String,
    pub retryable: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
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
    #[serde(rename = "input_audio_buffer.cleared")]
    AudioCleared,
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
    ResponseDone { response_id: String, status: ResponseStatus, text: String, timings: Timings },
    #[serde(rename = "output_audio_buffer.clear")]
    OutputAudioClear { response_id: String },
    #[serde(rename = "session.going_away")]
    GoingAway { reason: String, drain_ms: u64 },
    #[serde(rename = "error")]
    Error { error: ErrorBody },
    #[serde(rename = "pong")]
    Pong,
}

impl ServerEvent {
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        ServerEvent::Error {
            error: ErrorBody { code, message: message.into(), retryable: code.retryable(), retry_after_ms: None },
        }
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

    #[test]
    fn server_events_use_wire_names() {
        let j = ServerEvent::error(ErrorCode::InvalidJson, "bad").to_json();
        assert!(j.contains(r#""type":"error""#) && j.contains(r#""code":"invalid_json""#), "{j}");
        let j = ServerEvent::OutputAudioClear { response_id: "r".into() }.to_json();
        assert!(j.contains(r#""type":"output_audio_buffer.clear""#), "{j}");
    }
}
