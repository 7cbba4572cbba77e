//! Stable error codes: part of the protocol, sent to clients on the socket and over HTTP.

use serde::{Deserialize, Serialize};

/// Machine-readable error codes. Their strings are part of the protocol: never rename one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    InvalidJson,
    /// An HTTP request missing a field or carrying a malformed one.
    InvalidRequest,
    UnknownEvent,
    InvalidEvent,
    UnsupportedAudioFormat,
    /// Not fatal: the rest of the event was applied.
    UnsupportedField,
    AudioFormatNotSet,
    InvalidAudio,
    UnknownPipeline,
    EmptyQuestion,
    FrameTooLarge,
    SessionLimit,
    UserSessionLimit,
    Draining,
    Overloaded,
    /// Over one of the user's or the tenant's allowances (`limit` names it); retry after
    /// `retry_after_ms`.
    RateLimited,
    /// A limit that must be enforced (fail-closed) cannot be checked: its shared store is
    /// down. Retry shortly.
    LimiterUnavailable,
    Unauthorized,
    Forbidden,
    /// A manual that cannot be read (corrupt PDF, not text).
    InvalidDocument,
    /// A voice note that cannot be decoded (cut short, damaged) or holds no audio.
    InvalidRecording,
    /// A voice note longer than the server takes.
    RecordingTooLong,
    /// A voice note in which no words were heard.
    NoSpeech,
    /// A manual with no text at all (an empty file, a scan without a text layer).
    EmptyDocument,
    TooManyPages,
    /// A job the server stopped in the middle of (killed, crashed, restarted).
    Interrupted,
    UnsupportedMediaType,
    PayloadTooLarge,
    NotFound,
    ModelUnavailable,
    /// The identity provider's keys cannot be fetched.
    IdentityUnavailable,
    /// The knowledge base's metadata store or vector index does not answer.
    StoreUnavailable,
    /// A resume token that is forged, malformed, or belongs to another user.
    InvalidResumeToken,
    /// The session is past its resume window (or was already resumed).
    ResumeExpired,
    /// A WebRTC offer that is not SDP, or offers no Opus audio.
    InvalidSdp,
    /// A WebRTC peer that was answered but never connected (ICE found no path).
    PeerNeverConnected,
    /// A WebRTC peer whose ICE or DTLS failed, or that went silent.
    PeerConnectionFailed,
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidJson => "invalid_json",
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::UnknownEvent => "unknown_event",
            ErrorCode::InvalidEvent => "invalid_event",
            ErrorCode::UnsupportedAudioFormat => "unsupported_audio_format",
            ErrorCode::UnsupportedField => "unsupported_field",
            ErrorCode::AudioFormatNotSet => "audio_format_not_set",
            ErrorCode::InvalidAudio => "invalid_audio",
            ErrorCode::UnknownPipeline => "unknown_pipeline",
            ErrorCode::EmptyQuestion => "empty_question",
            ErrorCode::FrameTooLarge => "frame_too_large",
            ErrorCode::SessionLimit => "session_limit",
            ErrorCode::UserSessionLimit => "user_session_limit",
            ErrorCode::Draining => "draining",
            ErrorCode::Overloaded => "overloaded",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::LimiterUnavailable => "limiter_unavailable",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::InvalidDocument => "invalid_document",
            ErrorCode::InvalidRecording => "invalid_recording",
            ErrorCode::RecordingTooLong => "recording_too_long",
            ErrorCode::NoSpeech => "no_speech",
            ErrorCode::EmptyDocument => "empty_document",
            ErrorCode::TooManyPages => "too_many_pages",
            ErrorCode::Interrupted => "interrupted",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::NotFound => "not_found",
            ErrorCode::ModelUnavailable => "model_unavailable",
            ErrorCode::IdentityUnavailable => "identity_unavailable",
            ErrorCode::StoreUnavailable => "store_unavailable",
            ErrorCode::InvalidResumeToken => "invalid_resume_token",
            ErrorCode::ResumeExpired => "resume_expired",
            ErrorCode::InvalidSdp => "invalid_sdp",
            ErrorCode::PeerNeverConnected => "peer_never_connected",
            ErrorCode::PeerConnectionFailed => "peer_connection_failed",
            ErrorCode::Internal => "internal",
        }
    }

    /// Whether the same request may succeed if retried later.
    pub fn retryable(self) -> bool {
        matches!(
            self,
            ErrorCode::SessionLimit
                | ErrorCode::UserSessionLimit
                | ErrorCode::Draining
                | ErrorCode::Overloaded
                | ErrorCode::RateLimited
                | ErrorCode::LimiterUnavailable
                | ErrorCode::ModelUnavailable
                | ErrorCode::IdentityUnavailable
                | ErrorCode::StoreUnavailable
                | ErrorCode::PeerNeverConnected
                | ErrorCode::PeerConnectionFailed
                | ErrorCode::Internal
        )
    }
}
